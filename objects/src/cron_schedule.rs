//! Cron schedules as CronJobs write them (`spec.schedule`), read the way
//! Kubernetes reads them (robfig/cron's standard parser): five fields,
//! `minute hour day-of-month month day-of-week`, each a comma list of `*`
//! (or `?`), values, ranges `a-b` and steps `/n` (`a/n` runs from `a` to
//! the field's end), months and weekdays also by their three-letter names;
//! or one of the descriptors `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`), `@hourly`. A `CRON_TZ=<zone>` or
//! `TZ=<zone>` prefix names the schedule's time zone. When both the day of
//! the month and the day of the week are restricted (neither starts with
//! `*`), a day matching either one counts, as in cron.
//!
//! The times a schedule names are wall-clock times in a time zone (the
//! IANA database on the machine, through `jiff`): a time that does not
//! exist there (skipped when clocks go forward) is not run, and one that
//! exists twice (when clocks go back) runs once, at its first occurrence.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// How many days [`CronSchedule::next_after`] and
/// [`CronSchedule::latest_at_or_before`] look through: more than eight
/// years, so that a schedule for the 29th of February on a given weekday
/// is found; one that names no day at all (`0 0 31 2 *`) gives up there.
const SEARCH_DAYS: u32 = 3_300;

/// Hours a time-zone transition can move a wall-clock time by, at most:
/// on the first day searched, hours further away than this from the
/// starting time cannot be the answer.
const TRANSITION_HOURS: i8 = 3;

/// Why a schedule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {found}"
    )]
    FieldCount { found: usize },
    #[error("unknown descriptor {given:?}: expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly")]
    Descriptor { given: String },
    #[error("{field} {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("a {prefix} prefix must be followed by a time zone and the schedule")]
    ZonePrefix { prefix: &'static str },
}

/// A time zone name the machine's time zone database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {name:?}: {reason}")]
pub struct UnknownTimeZone {
    pub name: String,
    pub reason: String,
}

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// The day-of-month field started with `*` or `?` (without a step
    /// above 1): days then match on both fields, else on either.
    day_of_month_any: bool,
    day_of_week_any: bool,
    /// The zone of a `CRON_TZ=`/`TZ=` prefix.
    time_zone: Option<String>,
}

/// One field's range and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on.
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSchedule {
    /// Parses `schedule` (leading and trailing blanks ignored).
    pub fn parse(schedule: &str) -> Result<CronSchedule, CronError> {
        let schedule = schedule.trim();
        let (time_zone, rest) = split_zone_prefix(schedule)?;
        let rest = rest.trim();
        let fields_text = match rest.strip_prefix('@') {
            Some(descriptor) => expand_descriptor(descriptor)?,
            None => rest,
        };
        let fields: Vec<&str> = fields_text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount {
                found: fields.len(),
            });
        }
        let (minutes, _) = parse_field(fields[0], &MINUTE)?;
        let (hours, _) = parse_field(fields[1], &HOUR)?;
        let (days_of_month, day_of_month_any) = parse_field(fields[2], &DAY_OF_MONTH)?;
        let (months, _) = parse_field(fields[3], &MONTH)?;
        let (days_of_week, day_of_week_any) = parse_field(fields[4], &DAY_OF_WEEK)?;
        Ok(CronSchedule {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_of_month_any,
            day_of_week_any,
            time_zone: time_zone.map(str::to_owned),
        })
    }

    /// The time zone named by a `CRON_TZ=`/`TZ=` prefix, if any.
    pub fn time_zone(&self) -> Option<&str> {
        self.time_zone.as_deref()
    }

    /// The first time the schedule names strictly after `after` (Unix
    /// seconds), in `zone`; `None` when it names none in the next eight
    /// years or so.
    pub fn next_after(&self, after: i64, zone: &TimeZone) -> Option<i64> {
        let start = Timestamp::from_second(after).ok()?;
        let local = zone.to_datetime(start);
        let mut date = local.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                let first_day = date == local.date();
                for hour in values(self.hours, &HOUR) {
                    if first_day && hour < local.hour().saturating_sub(TRANSITION_HOURS) {
                        continue;
                    }
                    for minute in values(self.minutes, &MINUTE) {
                        match instant(date, hour, minute, zone) {
                            Some(at) if at > after => return Some(at),
                            _ => {}
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The last time the schedule names at or before `at` (Unix seconds),
    /// in `zone`; `None` when it named none in the eight years or so
    /// before.
    pub fn latest_at_or_before(&self, at: i64, zone: &TimeZone) -> Option<i64> {
        let end = Timestamp::from_second(at).ok()?;
        let local = zone.to_datetime(end);
        let hours: Vec<i8> = values(self.hours, &HOUR).collect();
        let minutes: Vec<i8> = values(self.minutes, &MINUTE).collect();
        let mut date = local.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                let first_day = date == local.date();
                for &hour in hours.iter().rev() {
                    if first_day && hour > local.hour().saturating_add(TRANSITION_HOURS) {
                        continue;
                    }
                    for &minute in minutes.iter().rev() {
                        match instant(date, hour, minute, zone) {
                            Some(t) if t <= at => return Some(t),
                            _ => {}
                        }
                    }
                }
            }
            date = date.yesterday().ok()?;
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = has(self.months, date.month());
        let day_of_month = has(self.days_of_month, date.day());
        let day_of_week = has(self.days_of_week, date.weekday().to_sunday_zero_offset());
        let day = if self.day_of_month_any || self.day_of_week_any {
            day_of_month && day_of_week
        } else {
            day_of_month || day_of_week
        };
        month && day
    }
}

/// Looks up an IANA time zone (`Europe/Berlin`, `UTC`) in the machine's
/// time zone database. `Local` is refused, as Kubernetes refuses it: a
/// schedule's zone must not depend on which master runs it.
pub fn time_zone(name: &str) -> Result<TimeZone, UnknownTimeZone> {
    let unknown = |reason: &str| UnknownTimeZone {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    // UTC needs no database (edge machines may have none installed).
    if name.eq_ignore_ascii_case("UTC") || name.eq_ignore_ascii_case("Etc/UTC") {
        return Ok(TimeZone::UTC);
    }
    if name.eq_ignore_ascii_case("local") {
        return Err(unknown(
            "name an explicit zone from the IANA time zone database",
        ));
    }
    let plausible = !name.is_empty()
        && !name.starts_with('/')
        && !name.split('/').any(|part| part.is_empty() || part == "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if !plausible {
        return Err(unknown("not a time zone name"));
    }
    TimeZone::get(name).map_err(|e| unknown(&e.to_string()))
}

/// `at` (Unix seconds) as RFC 3339 in `zone` (`Z` for UTC), as Kubernetes
/// writes a Job's scheduled time.
pub fn rfc3339_in(at: i64, zone: &TimeZone) -> String {
    let Ok(timestamp) = Timestamp::from_second(at) else {
        return String::new();
    };
    let local = zone.to_datetime(timestamp);
    let offset = zone.to_offset(timestamp).seconds();
    let suffix = if offset == 0 {
        "Z".to_owned()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let minutes = offset.unsigned_abs() / 60;
        format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{suffix}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    )
}

/// The instant (Unix seconds) a wall-clock time on `date` is in `zone`:
/// `None` when it does not exist there; the first when it exists twice.
fn instant(date: Date, hour: i8, minute: i8, zone: &TimeZone) -> Option<i64> {
    let time = Time::new(hour, minute, 0, 0).ok()?;
    let ambiguous = zone.to_ambiguous_timestamp(DateTime::from_parts(date, time));
    if matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. }) {
        return None;
    }
    ambiguous.earlier().ok().map(Timestamp::as_second)
}

fn has(bits: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 64 && bits & (1 << v) != 0)
}

/// The values of `field` set in `bits`, ascending.
fn values(bits: u64, field: &Field) -> impl Iterator<Item = i8> {
    (field.min..=field.max)
        .filter(move |v| bits & (1 << v) != 0)
        .filter_map(|v| i8::try_from(v).ok())
}

/// Splits off a `CRON_TZ=<zone> ` or `TZ=<zone> ` prefix.
fn split_zone_prefix(schedule: &str) -> Result<(Option<&str>, &str), CronError> {
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = schedule.strip_prefix(prefix) {
            let Some((zone, rest)) = rest.split_once(char::is_whitespace) else {
                return Err(CronError::ZonePrefix { prefix });
            };
            if zone.is_empty() {
                return Err(CronError::ZonePrefix { prefix });
            }
            return Ok((Some(zone), rest));
        }
    }
    Ok((None, schedule))
}

fn expand_descriptor(descriptor: &str) -> Result<&'static str, CronError> {
    Ok(match descriptor.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => {
            return Err(CronError::Descriptor {
                given: format!("@{descriptor}"),
            })
        }
    })
}

/// One field: its bits, and whether it allows any value (starts with `*`
/// or `?` and has no step above 1).
fn parse_field(text: &str, field: &Field) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut any = false;
    for part in text.split(',') {
        let (part_bits, part_any) =
            parse_range(part, field).map_err(|reason| CronError::Field {
                field: field.name,
                value: text.to_owned(),
                reason,
            })?;
        bits |= part_bits;
        any |= part_any;
    }
    Ok((bits, any))
}

fn parse_range(part: &str, field: &Field) -> Result<(u64, bool), String> {
    let (range, step) = match part.split_once('/') {
        Some((range, step)) => {
            if step.contains('/') {
                return Err("too many slashes".to_owned());
            }
            let step: u32 = step
                .parse()
                .map_err(|_| format!("step {step:?} is not a number"))?;
            (range, Some(step))
        }
        None => (part, None),
    };
    let (mut start, mut end, mut any) = if range == "*" || range == "?" {
        (field.min, field.max, true)
    } else {
        let (low, high) = match range.split_once('-') {
            Some((low, high)) => {
                if high.contains('-') {
                    return Err("too many hyphens".to_owned());
                }
                (low, Some(high))
            }
            None => (range, None),
        };
        let start = value_of(low, field)?;
        let end = match high {
            Some(high) => value_of(high, field)?,
            None => start,
        };
        (start, end, false)
    };
    if let Some(step) = step {
        if step == 0 {
            return Err("the step must be a positive number".to_owned());
        }
        // `a/n` runs from `a` to the end of the field.
        if !any && !range.contains('-') {
            end = field.max;
        }
        if step > 1 {
            any = false;
        }
    }
    if start < field.min {
        return Err(format!("below the minimum {}", field.min));
    }
    if end > field.max {
        return Err(format!("above the maximum {}", field.max));
    }
    if start > end {
        return Err(format!("the range starts at {start}, after its end {end}"));
    }
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    while start <= end {
        bits |= 1 << start;
        match start.checked_add(step) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok((bits, any))
}

fn value_of(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|n| *n == lower) {
        return Ok(field.min + index as u32);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number{}", named(field)))
}

fn named(field: &Field) -> String {
    match (field.names.first(), field.names.last()) {
        (Some(first), Some(last)) => format!(" or a name ({first}-{last})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CronSchedule {
        CronSchedule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    /// The bits of `values`.
    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |b, v| b | (1 << v))
    }

    fn show(seconds: i64) -> String {
        Timestamp::from_second(seconds).unwrap().to_string()
    }

    fn next(schedule: &str, after: &str, zone: &TimeZone) -> String {
        show(parse(schedule).next_after(at(after), zone).unwrap())
    }

    fn latest(schedule: &str, at_or_before: &str, zone: &TimeZone) -> String {
        show(
            parse(schedule)
                .latest_at_or_before(at(at_or_before), zone)
                .unwrap(),
        )
    }

    /// New York's rules since 2007, without the tz database.
    fn new_york() -> TimeZone {
        TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()
    }

    #[test]
    fn fields_ranges_steps_and_names_parse_as_robfig_cron_reads_them() {
        let s = parse("*/15 9-17 1,15 jan-MAR mon-fri");
        assert_eq!(s.minutes, bits(&[0, 15, 30, 45]));
        assert_eq!(s.hours, bits(&[9, 10, 11, 12, 13, 14, 15, 16, 17]));
        assert_eq!(s.days_of_month, bits(&[1, 15]));
        assert_eq!(s.months, bits(&[1, 2, 3]));
        assert_eq!(s.days_of_week, bits(&[1, 2, 3, 4, 5]));
        assert!(!s.day_of_month_any && !s.day_of_week_any);
        // `a/n` runs to the end of the field.
        assert_eq!(parse("50/5 * * * *").minutes, bits(&[50, 55]));
        assert_eq!(parse("10-20/5 * * * *").minutes, bits(&[10, 15, 20]));
        // `*` and `*/1` allow any day; a larger step does not.
        assert!(parse("* * * * *").day_of_month_any);
        assert!(parse("* * */1 * *").day_of_month_any);
        assert!(!parse("* * */2 * *").day_of_month_any);
        assert!(parse("0 0 ? * *").day_of_month_any);
        for descriptor in [
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
        ] {
            parse(descriptor);
        }
        assert_eq!(parse("@annually"), parse("0 0 1 1 *"));
        assert_eq!(parse("@weekly"), parse("0 0 * * 0"));
        let zoned = parse("CRON_TZ=Europe/Berlin 0 3 * * *");
        assert_eq!(zoned.time_zone(), Some("Europe/Berlin"));
        assert_eq!(parse("TZ=UTC @daily").time_zone(), Some("UTC"));
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_field() {
        let field_of = |s: &str| match CronSchedule::parse(s) {
            Err(CronError::Field { field, .. }) => field,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(field_of("60 * * * *"), "minute");
        assert_eq!(field_of("* 24 * * *"), "hour");
        assert_eq!(field_of("* * 0 * *"), "day-of-month");
        assert_eq!(field_of("* * * 13 *"), "month");
        assert_eq!(field_of("* * * * 7"), "day-of-week");
        assert_eq!(field_of("* * * * mon-xyz"), "day-of-week");
        assert_eq!(field_of("5-1 * * * *"), "minute");
        assert_eq!(field_of("*/0 * * * *"), "minute");
        assert_eq!(field_of("1-2-3 * * * *"), "minute");
        assert_eq!(field_of("*/2/3 * * * *"), "minute");
        assert_eq!(field_of("a * * * *"), "minute");
        assert_eq!(
            CronSchedule::parse("* * *"),
            Err(CronError::FieldCount { found: 3 })
        );
        assert_eq!(
            CronSchedule::parse("every day"),
            Err(CronError::FieldCount { found: 2 })
        );
        assert!(matches!(
            CronSchedule::parse("@fortnightly"),
            Err(CronError::Descriptor { .. })
        ));
        assert!(matches!(
            CronSchedule::parse("CRON_TZ=UTC"),
            Err(CronError::ZonePrefix { .. })
        ));
    }

    #[test]
    fn next_times_follow_the_fields() {
        let utc = TimeZone::UTC;
        assert_eq!(
            next("*/1 * * * *", "2026-03-01T10:00:00Z", &utc),
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            next("*/1 * * * *", "2026-03-01T10:00:30Z", &utc),
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-03-01T10:00:00Z", &utc),
            "2026-03-01T11:00:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2026-03-01T10:00:00Z", &utc),
            "2026-03-02T02:30:00Z"
        );
        // The last day of the year rolls over.
        assert_eq!(
            next("@yearly", "2026-12-31T23:59:59Z", &utc),
            "2027-01-01T00:00:00Z"
        );
        // 2026-03-02 is a Monday.
        assert_eq!(
            next("0 9 * * mon", "2026-03-02T09:00:00Z", &utc),
            "2026-03-09T09:00:00Z"
        );
        // A leap day: the next 29th of February is in 2028.
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", &utc),
            "2028-02-29T00:00:00Z"
        );
        // A day that never comes.
        assert_eq!(
            parse("0 0 31 2 *").next_after(at("2026-01-01T00:00:00Z"), &utc),
            None
        );
    }

    #[test]
    fn a_restricted_day_of_month_and_day_of_week_match_either() {
        let utc = TimeZone::UTC;
        // The 13th, or any Friday: 2026-03-06 is a Friday, before the 13th.
        assert_eq!(
            next("0 0 13 * fri", "2026-03-01T00:00:00Z", &utc),
            "2026-03-06T00:00:00Z"
        );
        // With `*` for the day of the month, only Fridays.
        assert_eq!(
            next("0 0 * * fri", "2026-03-06T00:00:00Z", &utc),
            "2026-03-13T00:00:00Z"
        );
        // `*/2` days of the month restrict it: odd days or Sundays.
        assert_eq!(
            next("0 0 */2 * sun", "2026-03-01T00:00:00Z", &utc),
            "2026-03-03T00:00:00Z"
        );
    }

    #[test]
    fn times_are_wall_clock_times_in_the_zone() {
        let ny = new_york();
        // 03:00 in New York in winter is 08:00 UTC.
        assert_eq!(
            next("0 3 * * *", "2026-01-10T00:00:00Z", &ny),
            "2026-01-10T08:00:00Z"
        );
        // Clocks go forward at 02:00 on 2026-03-08: 02:30 does not exist
        // that day and is not run; the next is the day after.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T05:00:00Z", &ny),
            "2026-03-09T06:30:00Z"
        );
        // Clocks go back at 02:00 on 2026-11-01: 01:30 happens twice and
        // runs once, at its first occurrence (EDT, 05:30 UTC).
        assert_eq!(
            next("30 1 * * *", "2026-11-01T04:00:00Z", &ny),
            "2026-11-01T05:30:00Z"
        );
        assert_eq!(
            next("30 1 * * *", "2026-11-01T05:30:00Z", &ny),
            "2026-11-02T06:30:00Z"
        );
        // Hourly: 01:00 runs once (at its first occurrence), then 02:00.
        assert_eq!(
            next("0 * * * *", "2026-11-01T05:00:00Z", &ny),
            "2026-11-01T07:00:00Z"
        );
    }

    #[test]
    fn the_latest_time_at_or_before_is_found_backwards() {
        let utc = TimeZone::UTC;
        assert_eq!(
            latest("*/5 * * * *", "2026-03-01T10:07:00Z", &utc),
            "2026-03-01T10:05:00Z"
        );
        assert_eq!(
            latest("*/5 * * * *", "2026-03-01T10:05:00Z", &utc),
            "2026-03-01T10:05:00Z"
        );
        assert_eq!(
            latest("0 9 * * mon", "2026-03-06T12:00:00Z", &utc),
            "2026-03-02T09:00:00Z"
        );
        assert_eq!(
            latest("0 3 * * *", "2026-01-10T07:59:00Z", &new_york()),
            "2026-01-09T08:00:00Z"
        );
        assert_eq!(
            parse("0 0 31 2 *").latest_at_or_before(at("2026-01-01T00:00:00Z"), &utc),
            None
        );
    }

    #[test]
    fn zones_are_looked_up_by_name_and_local_or_paths_refused() {
        assert!(time_zone("UTC").is_ok());
        for bad in [
            "Local",
            "local",
            "",
            "/etc/localtime",
            "../../etc/passwd",
            "Europe//Berlin",
        ] {
            assert!(time_zone(bad).is_err(), "{bad:?}");
        }
        assert!(time_zone("Mars/Olympus_Mons").is_err());
    }

    #[test]
    fn scheduled_times_are_written_with_the_zone_offset() {
        let at_utc = at("2026-01-10T08:00:00Z");
        assert_eq!(rfc3339_in(at_utc, &TimeZone::UTC), "2026-01-10T08:00:00Z");
        assert_eq!(rfc3339_in(at_utc, &new_york()), "2026-01-10T03:00:00-05:00");
        let india = TimeZone::fixed(jiff::tz::offset(5));
        assert_eq!(rfc3339_in(at_utc, &india), "2026-01-10T13:00:00+05:00");
    }
}
