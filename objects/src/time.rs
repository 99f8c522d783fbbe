//! Timestamps as Kubernetes writes them in objects: RFC 3339 in UTC with
//! whole seconds (`2026-01-02T03:04:05Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::typed::meta::Time;

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_WRITABLE: Duration = Duration::from_secs(253_402_300_799);

/// `at`, as Kubernetes writes timestamps; a time before the epoch (which
/// a `Time` read from an object may hold) as the epoch, one past the
/// year 9999 as its last second.
pub fn rfc3339(at: SystemTime) -> String {
    let at = at.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST_WRITABLE);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Now, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `at` as Kubernetes' `Time`, in whole seconds as it is written (the
/// epoch for a time before it).
pub fn kube_time(at: SystemTime) -> Time {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    Time(jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_in_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_322_445_900);
        assert_eq!(rfc3339(at), "2026-01-02T02:54:05Z");
        let time = serde_json::to_value(kube_time(at)).unwrap();
        assert_eq!(time, "2026-01-02T02:54:05Z");
    }

    #[test]
    fn times_rfc3339_cannot_write_are_written_at_its_ends() {
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(after), "9999-12-31T23:59:59Z");
    }
}
