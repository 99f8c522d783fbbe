//! The clock. Certificates are made and checked against it (a clock far
//! behind makes every new peer certificate "not yet valid"), and
//! heartbeats age by it. Two findings: whether the time is plausible (not
//! before [`EARLIEST_PLAUSIBLE`], 2025-01-01, which is older than this
//! code: a Raspberry Pi has no battery-backed clock and starts from the
//! time it last saved until NTP sets it), and whether something keeps it
//! synchronized: systemd-timesyncd's `/run/systemd/timesync/synchronized`,
//! else the kernel's own state, read with `adjtimex` (`STA_UNSYNC`, which
//! chrony, ntpd and timesyncd all clear once they have set the time).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use super::Finding;

/// 2025-01-01T00:00:00Z, after the Unix epoch: a clock before it is wrong.
pub const EARLIEST_PLAUSIBLE: Duration = Duration::from_secs(1_735_689_600);
/// The time's check name in the report.
pub const TIME_CHECK: &str = "clock";
/// The synchronization's check name in the report.
pub const SYNC_CHECK: &str = "time sync";
const SYNC_FIX: &str = "keep the clock synchronized: timedatectl set-ntp true, or install chrony";

/// Whether the clock is kept synchronized, and who says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSync {
    /// systemd-timesyncd has synchronized it since boot.
    Timesyncd,
    /// The kernel's `STA_UNSYNC` is clear.
    Kernel,
    /// The kernel says it is not synchronized.
    Unsynchronized,
    /// `adjtimex` failed.
    Unknown(Errno),
}

/// What the clock checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFacts {
    pub now: SystemTime,
    pub sync: TimeSync,
}

/// The finding on the time, then the one on keeping it right.
pub fn check(facts: &ClockFacts) -> Vec<Finding> {
    vec![time(facts.now), sync(facts.sync)]
}

fn time(now: SystemTime) -> Finding {
    let earliest = UNIX_EPOCH + EARLIEST_PLAUSIBLE;
    if now >= earliest {
        return Finding::ok(TIME_CHECK, shown(now));
    }
    let now = shown(now);
    let earliest = shown(earliest);
    let detail = format!(
        "{now}, before {earliest}, so surely wrong; certificates made now would be wrong too"
    );
    let fix = "set the clock, then keep it synchronized: timedatectl set-ntp true";
    Finding::warning(TIME_CHECK, detail).with_fix(fix)
}

fn sync(state: TimeSync) -> Finding {
    match state {
        TimeSync::Timesyncd => Finding::ok(SYNC_CHECK, "synchronized by systemd-timesyncd"),
        TimeSync::Kernel => Finding::ok(SYNC_CHECK, "synchronized (the kernel's NTP state)"),
        TimeSync::Unsynchronized => {
            let detail = "the kernel says the clock is not synchronized (no NTP, or not yet)";
            Finding::warning(SYNC_CHECK, detail).with_fix(SYNC_FIX)
        }
        TimeSync::Unknown(errno) => {
            let detail = format!("cannot tell: adjtimex failed ({errno})");
            Finding::warning(SYNC_CHECK, detail).with_fix(SYNC_FIX)
        }
    }
}

/// `at` in RFC 3339, UTC.
fn shown(at: SystemTime) -> String {
    if at < UNIX_EPOCH {
        return "a time before 1970".to_owned();
    }
    humantime::format_rfc3339_seconds(at).to_string()
}

/// How this machine's clock is kept: systemd-timesyncd's word first
/// (`timesyncd_synchronized`: its flag file is there), then the kernel's.
pub fn read_sync(timesyncd_synchronized: bool) -> TimeSync {
    if timesyncd_synchronized {
        return TimeSync::Timesyncd;
    }
    match kernel_synchronized() {
        Ok(true) => TimeSync::Kernel,
        Ok(false) => TimeSync::Unsynchronized,
        Err(errno) => TimeSync::Unknown(errno),
    }
}

/// The kernel's NTP state, from `adjtimex` with no mode bits set: a read
/// that changes nothing and needs no privilege.
#[allow(unsafe_code)]
fn kernel_synchronized() -> Result<bool, Errno> {
    // SAFETY: `timex` is a C struct of integers, for which all zeroes is a
    // valid value; `modes` 0 asks adjtimex to change nothing.
    let mut timex: nix::libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: adjtimex reads and writes only the struct it is given, which
    // lives on this stack frame for the whole call.
    let state = unsafe { nix::libc::adjtimex(&mut timex) };
    if state == -1 {
        return Err(Errno::last());
    }
    let unsynchronized = (timex.status & nix::libc::STA_UNSYNC) != 0;
    Ok(state != nix::libc::TIME_ERROR && !unsynchronized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_config::Level;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_time_before_2025_is_a_warning() {
        // 2026-01-02T02:54:05Z, then 2001-09-09T01:46:40Z.
        let right = time(at(1_767_322_445));
        assert_eq!(right.level, Level::Ok, "{right}");
        assert_eq!(right.detail, "2026-01-02T02:54:05Z");
        let wrong = time(at(1_000_000_000));
        assert_eq!(wrong.level, Level::Warning, "{wrong}");
        assert!(wrong
            .detail
            .starts_with("2001-09-09T01:46:40Z, before 2025-01-01"));
    }

    #[test]
    fn an_unsynchronized_clock_is_a_warning() {
        assert_eq!(sync(TimeSync::Timesyncd).level, Level::Ok);
        assert_eq!(sync(TimeSync::Kernel).level, Level::Ok);
        let unsynchronized = sync(TimeSync::Unsynchronized);
        assert_eq!(unsynchronized.level, Level::Warning);
        assert_eq!(unsynchronized.fix.as_deref(), Some(SYNC_FIX));
        assert_eq!(sync(TimeSync::Unknown(Errno::EPERM)).level, Level::Warning);
    }
}
