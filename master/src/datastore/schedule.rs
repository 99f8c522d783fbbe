//! Scheduled snapshots, one of the leader's duties: every
//! `--snapshot-schedule` (12 h by default; 0: none) the leader saves a
//! snapshot named `scheduled-<unix-time>` into its own
//! `<data-dir>/snapshots/`, then deletes the oldest scheduled ones beyond
//! `--snapshot-retention` (5). Snapshots an operator saved are never
//! deleted.
//!
//! The period counts from the newest scheduled snapshot this master holds,
//! or, when it holds none, from when it began to lead: a master that
//! becomes leader often does not take one each time, and one whose newest
//! is older than the period takes one at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::snapshots::{Origin, SnapshotDir, SnapshotsError, SCHEDULED};
use crate::store::state_machine::ObjectStore;
use crate::store::NodeId;

/// How often a snapshot is taken, by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How many scheduled snapshots are kept, by default.
pub const DEFAULT_RETENTION: usize = 5;
/// The longest wait before trying again after a failed snapshot.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// When and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSchedule {
    /// The period; `None`: no scheduled snapshots.
    pub every: Option<Duration>,
    /// Scheduled snapshots kept (at least one).
    pub retention: usize,
}

impl Default for SnapshotSchedule {
    fn default() -> Self {
        SnapshotSchedule {
            every: Some(DEFAULT_EVERY),
            retention: DEFAULT_RETENTION,
        }
    }
}

/// A leader's scheduled snapshots: where and when.
#[derive(Debug, Clone)]
pub struct ScheduledSnapshots {
    pub dir: SnapshotDir,
    pub schedule: SnapshotSchedule,
}

/// When the next scheduled snapshot is due: a period after the newest one
/// (`newest`), or after `leading_since` when there is none.
pub fn next_due(
    newest: Option<SystemTime>,
    leading_since: SystemTime,
    every: Duration,
) -> SystemTime {
    newest.unwrap_or(leading_since) + every
}

/// Takes scheduled snapshots of `store` (as master `node_id`) until `term`
/// (this master's time as leader) ends.
pub async fn run(
    store: Arc<ObjectStore>,
    node_id: NodeId,
    snapshots: ScheduledSnapshots,
    term: CancellationToken,
) {
    let ScheduledSnapshots { dir, schedule } = snapshots;
    let Some(every) = schedule.every.filter(|e| !e.is_zero()) else {
        return;
    };
    let retention = schedule.retention.max(1);
    let leading_since = SystemTime::now();
    loop {
        let newest = match dir.newest_scheduled() {
            Ok(newest) => newest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the scheduled snapshots; counting from now");
                None
            }
        };
        let due = next_due(newest, leading_since, every);
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let (task_dir, task_store) = (dir.clone(), store.clone());
        let taken = tokio::task::spawn_blocking(move || {
            let saved = task_dir.save(
                &task_store,
                node_id,
                SCHEDULED,
                Origin::Scheduled,
                SystemTime::now(),
            )?;
            let pruned = task_dir.prune_scheduled(retention)?;
            Ok::<_, SnapshotsError>((saved, pruned))
        })
        .await;
        let error = match taken {
            Ok(Ok((saved, pruned))) => {
                tracing::info!(
                    snapshot = %saved.path.display(),
                    revision = saved.info.revision,
                    bytes = saved.size,
                    pruned = ?pruned,
                    "scheduled snapshot saved"
                );
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the snapshot task failed: {e}"),
        };
        let retry = every.min(RETRY_AFTER);
        tracing::error!(
            dir = %dir.path().display(),
            error = %error,
            retry_in = ?retry,
            "scheduled snapshot failed"
        );
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn the_period_counts_from_the_newest_scheduled_snapshot_or_from_leading() {
        let hour = Duration::from_secs(3600);
        // None yet: a period after this master began to lead.
        assert_eq!(next_due(None, at(1_000), hour), at(4_600));
        // One an hour old is due now; one older was due already.
        assert_eq!(next_due(Some(at(1_000)), at(4_600), hour), at(4_600));
        assert!(next_due(Some(at(0)), at(9_000), hour) < at(9_000));
        // A fresh one puts the next a period off, whenever leading began.
        assert_eq!(next_due(Some(at(8_000)), at(1_000), hour), at(11_600));
    }

    #[test]
    fn twelve_hours_and_five_kept_by_default() {
        let schedule = SnapshotSchedule::default();
        assert_eq!(schedule.every, Some(Duration::from_secs(43_200)));
        assert_eq!(schedule.retention, 5);
    }
}
