//! Kubernetes' name formats, a leaf of the crate that validation and the
//! selector parser both read: DNS-1123 labels and subdomains (most objects'
//! names), and label keys and values.

/// Why a value is not a DNS name; the field path is the caller's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameError {
    #[error("is required")]
    Empty,
    #[error("{value:?} is longer than {max} characters")]
    TooLong { value: String, max: usize },
    #[error("{value:?} is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit")]
    NotLabel { value: String },
    #[error("{value:?} is not a DNS subdomain: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit")]
    NotSubdomain { value: String },
}

/// A DNS-1123 label: lowercase letters, digits and '-', at most 63.
pub fn check_dns_label(value: &str) -> Result<(), DnsNameError> {
    if value.is_empty() {
        return Err(DnsNameError::Empty);
    }
    if value.len() > 63 {
        return Err(DnsNameError::TooLong {
            value: value.to_owned(),
            max: 63,
        });
    }
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(DnsNameError::NotLabel {
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123), as Kubernetes requires of most names.
pub fn check_dns_subdomain(value: &str) -> Result<(), DnsNameError> {
    if value.is_empty() {
        return Err(DnsNameError::Empty);
    }
    if value.len() > 253 {
        return Err(DnsNameError::TooLong {
            value: value.to_owned(),
            max: 253,
        });
    }
    if value.split('.').any(|part| check_dns_label(part).is_err()) {
        return Err(DnsNameError::NotSubdomain {
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A label value, or the name part of a label key: up to 63 letters,
/// digits, '-', '_' or '.', starting and ending with a letter or digit.
/// (A label value may also be empty; callers allow that themselves.)
pub fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label (or annotation) key: an optional DNS-subdomain prefix and '/',
/// then a [name](is_label_name).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(|l| check_dns_label(l).is_ok())
    });
    prefix_ok && is_label_name(name)
}
