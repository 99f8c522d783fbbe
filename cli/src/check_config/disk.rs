//! Free space where skiff keeps its state. The data dir holds the Raft
//! store and, in the agent's part of it, containerd's content store and
//! snapshots (every image and every container's filesystem) and the pods'
//! logs. Measured with statvfs on the data dir, or on its nearest existing
//! parent before it is made; a warning below 2 GiB or 15 % free (where the
//! kubelet would start removing images).

use std::path::{Path, PathBuf};

use super::{Finding, Machine};

/// The check's name in the report.
pub const CHECK: &str = "disk space";
/// Less free space than this is a warning.
const LOW_BYTES: u64 = 2 << 30;
/// A smaller free share than this, in percent, is a warning.
const LOW_PERCENT: u64 = 15;
const GIB: f64 = 1_073_741_824.0;

/// The size and free space of the filesystem a directory is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpace {
    /// The directory measured: the data dir, or its nearest existing parent.
    pub measured: PathBuf,
    /// Bytes that may still be written (by anyone, not only root).
    pub available: u64,
    /// The filesystem's size in bytes.
    pub total: u64,
}

/// The finding on the filesystem `data_dir` is, or will be, on.
pub fn check(machine: &dyn Machine, data_dir: &Path) -> Finding {
    match machine.disk_space(data_dir) {
        Ok(space) => judge(data_dir, &space),
        Err(errno) => {
            let shown = data_dir.display();
            let detail = format!("cannot measure the free space at {shown}: {errno}");
            Finding::warning(CHECK, detail)
        }
    }
}

/// Ok with room to spare; a warning below [`LOW_BYTES`] or [`LOW_PERCENT`].
pub fn judge(data_dir: &Path, space: &DiskSpace) -> Finding {
    let percent = match space.total {
        0 => 0,
        total => space.available.saturating_mul(100) / total,
    };
    let dir = data_dir.display();
    let measured = space.measured.display();
    let at = if space.measured.as_path() == data_dir {
        format!("at {dir}")
    } else {
        format!("at {dir} (not made yet: measured at {measured})")
    };
    let free = gib(space.available);
    let size = gib(space.total);
    let detail = format!("{free} free of {size} ({percent}%) {at}");
    if space.available < LOW_BYTES || percent < LOW_PERCENT {
        let detail = format!("{detail}: low, and images, containers and logs fill it");
        let fix = "free space there, or put the data dir on a bigger disk (--data-dir)";
        return Finding::warning(CHECK, detail).with_fix(fix);
    }
    Finding::ok(CHECK, detail)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_config::Level;

    fn space(available: u64, total: u64) -> DiskSpace {
        DiskSpace {
            measured: PathBuf::from("/var/lib"),
            available,
            total,
        }
    }

    #[test]
    fn little_room_is_a_warning() {
        let data_dir = Path::new("/var/lib/skiff");
        let roomy = judge(data_dir, &space(40 << 30, 100 << 30));
        assert_eq!(roomy.level, Level::Ok, "{roomy}");
        assert!(roomy.detail.starts_with("40.0 GiB free of 100.0 GiB (40%)"));
        assert!(roomy.detail.contains("measured at /var/lib"), "{roomy}");
        for (available, total) in [(1 << 30, 4 << 30), (10 << 30, 100 << 30)] {
            let low = judge(data_dir, &space(available, total));
            assert_eq!(low.level, Level::Warning, "{low}");
            assert!(low.fix.is_some(), "{low}");
        }
    }
}
