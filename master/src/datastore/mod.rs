//! What an operator does to the datastore, in the manner of k3s's
//! `etcd-snapshot` and `--cluster-reset`: consistent snapshots kept as
//! files, taken on demand and on a schedule; making a new one-member
//! cluster from a master's own data or from a snapshot; and the data dir's
//! format marker, so that a skiff never reads (or rewrites) data a newer
//! one wrote.
//!
//! - [`snapshot_file`]: one `.skiffsnap` file: a header (format, revision,
//!   last log id, membership, SHA-256) and the data.
//! - [`snapshots`]: `<data-dir>/snapshots/`: save (consistent, never half
//!   written), list, delete, prune the scheduled ones.
//! - [`schedule`]: the leader's scheduled snapshots.
//! - [`cluster_reset`]: `--cluster-reset [--restore FILE]`, built aside and
//!   swapped in.
//! - [`data_format`]: `<data-dir>/format`; newer or garbled data is refused.

pub mod cluster_reset;
pub mod data_format;
pub mod schedule;
pub mod snapshot_file;
pub mod snapshots;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where a cluster reset builds its new store, in the data dir
/// (`cluster_reset`); the data format upgrade upgrades it too.
pub const ASIDE: &str = "cluster-reset.tmp";
/// Written last into [`ASIDE`]: the new store there is whole. It names the
/// directory the old store files go to.
pub const READY: &str = "READY";

/// Makes the entries of `dir` (files created, renamed or removed in it)
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to a new file at `path` (mode `mode`) and fsyncs it.
/// Fails if `path` exists.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Seconds since the Unix epoch at `time` (0 before it).
pub(crate) fn unix_seconds(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `skiff <version>`: how snapshots and data dirs name the skiff that
/// wrote them.
pub fn this_skiff() -> String {
    format!("skiff {}", env!("CARGO_PKG_VERSION"))
}
