//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1.5G`, `1e3`).
//!
//! A quantity is kept as an integer count of thousandths, as Kubernetes
//! rounds to milli-units: CPU in millicores, memory in thousandths of a
//! byte. Fractions below a thousandth round up.

use std::fmt;

/// A parsed quantity, in thousandths of the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    milli: i128,
}

/// Why a quantity string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a quantity ({reason}); use forms like 500m, 2, 128Mi or 1.5G")]
pub struct QuantityError {
    pub given: String,
    pub reason: &'static str,
}

/// Largest quantity accepted (Kubernetes' limit is about 2^63 units).
const MAX_MILLI: i128 = (i64::MAX as i128) * 1000;

impl Quantity {
    /// Thousandths of the unit: millicores for CPU.
    pub fn milli(&self) -> i64 {
        self.milli.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whole units, rounded up: bytes for memory.
    pub fn units_ceil(&self) -> i64 {
        let units = (self.milli + 999).div_euclid(1000);
        units.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// `milli` thousandths of the unit.
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity {
            milli: i128::from(milli),
        }
    }

    /// The quantity as Kubernetes writes a DecimalSI one (what a number
    /// given for a quantity becomes): thousandths as `130m`, else whole
    /// units with the largest SI suffix that keeps them whole (`2`,
    /// `1500`, `1k`, `100M`).
    pub fn decimal_si(&self) -> String {
        let sign = if self.milli < 0 { "-" } else { "" };
        let milli = self.milli.unsigned_abs();
        if milli % 1000 != 0 {
            return format!("{sign}{milli}m");
        }
        let mut units = milli / 1000;
        if units == 0 {
            return "0".to_owned();
        }
        let mut suffix = "";
        for next in ["k", "M", "G", "T", "P", "E"] {
            if units % 1000 != 0 {
                break;
            }
            units /= 1000;
            suffix = next;
        }
        format!("{sign}{units}{suffix}")
    }

    /// Parses a Kubernetes quantity string.
    pub fn parse(given: &str) -> Result<Quantity, QuantityError> {
        let fail = |reason| QuantityError {
            given: given.to_owned(),
            reason,
        };
        let s = given.trim();
        if s.is_empty() {
            return Err(fail("empty"));
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        // Mantissa: digits with at most one decimal point.
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(fail("no number"));
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{whole}{fraction}");
        if digits.len() > 30 {
            return Err(fail("too many digits"));
        }
        let mantissa: i128 = digits.parse().map_err(|_| fail("no number"))?;
        let mut exponent10 = -(fraction.len() as i32);
        let mut binary_shift = 0u32;
        match suffix {
            "" => {}
            "m" => exponent10 -= 3,
            "k" => exponent10 += 3,
            "M" => exponent10 += 6,
            "G" => exponent10 += 9,
            "T" => exponent10 += 12,
            "P" => exponent10 += 15,
            "E" => exponent10 += 18,
            "Ki" => binary_shift = 10,
            "Mi" => binary_shift = 20,
            "Gi" => binary_shift = 30,
            "Ti" => binary_shift = 40,
            "Pi" => binary_shift = 50,
            "Ei" => binary_shift = 60,
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(|| fail("unknown suffix"))?;
                let e: i32 = exp.parse().map_err(|_| fail("bad exponent"))?;
                if !(-30..=30).contains(&e) {
                    return Err(fail("exponent out of range"));
                }
                exponent10 += e;
            }
        }
        // Value in thousandths: mantissa * 2^shift * 10^(exponent10 + 3).
        let mut value = mantissa
            .checked_mul(1i128 << binary_shift)
            .ok_or_else(|| fail("too large"))?;
        let scale = exponent10 + 3;
        if scale >= 0 {
            let factor = 10i128
                .checked_pow(scale as u32)
                .ok_or_else(|| fail("too large"))?;
            value = value.checked_mul(factor).ok_or_else(|| fail("too large"))?;
        } else {
            let divisor = 10i128
                .checked_pow((-scale) as u32)
                .ok_or_else(|| fail("too small"))?;
            // Kubernetes rounds up to the next thousandth.
            value = (value + divisor - 1) / divisor;
        }
        if value > MAX_MILLI {
            return Err(fail("too large"));
        }
        Ok(Quantity {
            milli: if negative { -value } else { value },
        })
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_add(other.milli),
        }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_sub(other.milli),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli()
    }

    #[test]
    fn decimal_si_text_is_kubernetes_canonical_form() {
        let text = |milli: i64| Quantity::from_milli(milli).decimal_si();
        assert_eq!(text(130), "130m");
        assert_eq!(text(2000), "2");
        assert_eq!(text(1_500_000), "1500");
        assert_eq!(text(1_000_000), "1k");
        assert_eq!(text(52_428_800_000), "52428800");
        assert_eq!(text(100_000_000_000), "100M");
        assert_eq!(text(5_000_000_000_000), "5G");
        assert_eq!(text(0), "0");
        assert_eq!(text(-1_000_000), "-1k");
        assert_eq!(Quantity::parse("0.5").unwrap().decimal_si(), "500m");
    }

    #[test]
    fn kubernetes_forms_parse() {
        assert_eq!(milli("500m"), 500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("0.25"), 250);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(Quantity::parse("128Mi").unwrap().units_ceil(), 128 << 20);
        assert_eq!(Quantity::parse("1Gi").unwrap().units_ceil(), 1 << 30);
        assert_eq!(Quantity::parse("1.5Gi").unwrap().units_ceil(), 3 << 29);
        assert_eq!(Quantity::parse("64M").unwrap().units_ceil(), 64_000_000);
        assert_eq!(Quantity::parse("1k").unwrap().units_ceil(), 1000);
        assert_eq!(Quantity::parse("1e3").unwrap().units_ceil(), 1000);
        assert_eq!(Quantity::parse("129e6").unwrap().units_ceil(), 129_000_000);
        assert_eq!(milli("0.0001"), 1, "rounds up to a thousandth");
        assert_eq!(milli("-1"), -1000);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in ["", "abc", "1.2.3", "12Qi", "1e", "m", "--1", "1 Gi", "1e99"] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(err.to_string().contains("not a quantity"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(Quantity::parse("1000m").unwrap().to_string(), "1");
        assert_eq!(Quantity::parse("0.5").unwrap().to_string(), "500m");
        assert_eq!(
            (Quantity::parse("250m").unwrap() + Quantity::parse("1").unwrap()).to_string(),
            "1250m"
        );
    }
}
