//! Timestamps as Kubernetes writes them in objects: RFC 3339 in UTC with
//! whole seconds (`2026-01-02T03:04:05Z`).

use std::time::SystemTime;

/// `at`, as Kubernetes writes timestamps.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Now, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn whole_seconds_in_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_322_445_900);
        assert_eq!(rfc3339(at), "2026-01-02T02:54:05Z");
    }
}
