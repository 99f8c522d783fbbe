//! Timestamps as Kubernetes writes them in objects: RFC 3339 in UTC with
//! whole seconds (`2026-01-02T03:04:05Z`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::typed::meta::Time;

/// `at`, as Kubernetes writes timestamps.
pub fn rfc3339(at: SystemTime) -> String {
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
    use std::time::Duration;

    #[test]
    fn whole_seconds_in_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_322_445_900);
        assert_eq!(rfc3339(at), "2026-01-02T02:54:05Z");
        let time = serde_json::to_value(kube_time(at)).unwrap();
        assert_eq!(time, "2026-01-02T02:54:05Z");
    }
}
