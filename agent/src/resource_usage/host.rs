//! The real [`UsageSource`]: the kernel's counters under a filesystem root
//! (`/` on a node, a fixture tree in tests).
//!
//! - A container's cgroup (its runtime spec's `cgroupsPath` under
//!   `/sys/fs/cgroup`): on cgroup v2 CPU time from `cpu.stat`'s
//!   `usage_usec` and memory from `memory.current` less `memory.stat`'s
//!   `inactive_file`, the working set as the kubelet (cAdvisor) counts it;
//!   on v1 `cpuacct.usage` and `memory.usage_in_bytes` less
//!   `total_inactive_file`.
//! - The machine: CPU time from `/proc/stat`'s first `cpu` line (every
//!   state but idle and iowait; in `USER_HZ` ticks, 100 a second on every
//!   Linux architecture skiff runs on), memory from `/proc/meminfo` as
//!   runc reads the root cgroup on v2: `MemTotal - MemFree -
//!   Inactive(file)`.
//! - The filesystem holding the node's `local-path` volumes (when given
//!   its storage dir): statvfs(2) on the dir, or on its nearest existing
//!   parent before the first volume makes it, as image collection
//!   measures containerd's root.

use std::io;
use std::path::{Path, PathBuf};

use super::{Sample, UsageError, UsageSource};
use crate::runtime::image_gc::{FilesystemUsage, FsUsage, Statvfs};

/// The kernel's clock ticks a second in `/proc/stat` (`USER_HZ`).
const TICKS_PER_SECOND: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / TICKS_PER_SECOND;

/// The kernel's counters under `root`.
#[derive(Debug, Clone)]
pub struct HostUsage {
    root: PathBuf,
    /// The node's storage dir (an absolute path on the node), if measured.
    storage_dir: Option<PathBuf>,
}

impl Default for HostUsage {
    fn default() -> Self {
        HostUsage::at("/")
    }
}

impl HostUsage {
    /// The counters of the machine whose filesystem root is `root`.
    pub fn at(root: impl Into<PathBuf>) -> HostUsage {
        HostUsage {
            root: root.into(),
            storage_dir: None,
        }
    }

    /// The same counters, and the filesystem holding `dir` (the node's
    /// storage dir, an absolute path under the root).
    pub fn with_storage_dir(self, dir: impl Into<PathBuf>) -> HostUsage {
        HostUsage {
            storage_dir: Some(dir.into()),
            ..self
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl UsageSource for HostUsage {
    fn machine(&self) -> Result<Sample, UsageError> {
        let stat = self.path("/proc/stat");
        let text = read(&stat)?;
        let ticks = busy_ticks(&text).ok_or_else(|| UsageError::parse(&stat, "no `cpu` line"))?;
        let meminfo = self.path("/proc/meminfo");
        let text = read(&meminfo)?;
        let memory = machine_working_set(&text).ok_or_else(|| {
            UsageError::parse(&meminfo, "no MemTotal, MemFree and Inactive(file)")
        })?;
        Ok(Sample {
            cpu_nanos: ticks.saturating_mul(NANOS_PER_TICK),
            memory_bytes: memory,
        })
    }

    fn cgroup(&self, cgroups_path: &str) -> Result<Option<Sample>, UsageError> {
        let rel = cgroups_path.trim_start_matches('/');
        let cgroups = self.path("/sys/fs/cgroup");
        let v2 = cgroups.join(rel);
        if let Some(cpu) = read_if_there(&v2.join("cpu.stat"))? {
            let cpu_usec = stat_field(&cpu, "usage_usec")
                .ok_or_else(|| UsageError::parse(&v2.join("cpu.stat"), "no usage_usec"))?;
            let Some(current) = read_if_there(&v2.join("memory.current"))? else {
                return Err(UsageError::parse(
                    &v2,
                    "no memory.current: the memory controller is not enabled for this cgroup \
                     (see `skiff check-config`)",
                ));
            };
            let memory_stat = read_if_there(&v2.join("memory.stat"))?.unwrap_or_default();
            let memory = working_set(
                number(&current, &v2.join("memory.current"))?,
                stat_field(&memory_stat, "inactive_file"),
            );
            return Ok(Some(Sample {
                cpu_nanos: cpu_usec.saturating_mul(1000),
                memory_bytes: memory,
            }));
        }
        // cgroup v1: each controller its own hierarchy.
        let cpuacct = ["cpu,cpuacct", "cpuacct"]
            .iter()
            .map(|h| cgroups.join(h).join(rel).join("cpuacct.usage"))
            .find(|p| p.exists());
        let Some(cpuacct) = cpuacct else {
            return Ok(None);
        };
        let Some(usage) = read_if_there(&cpuacct)? else {
            return Ok(None);
        };
        let memory_dir = cgroups.join("memory").join(rel);
        let Some(in_use) = read_if_there(&memory_dir.join("memory.usage_in_bytes"))? else {
            return Err(UsageError::parse(
                &memory_dir,
                "no memory.usage_in_bytes: the memory cgroup is not mounted or enabled \
                 (see `skiff check-config`)",
            ));
        };
        let memory_stat = read_if_there(&memory_dir.join("memory.stat"))?.unwrap_or_default();
        Ok(Some(Sample {
            cpu_nanos: number(&usage, &cpuacct)?,
            memory_bytes: working_set(
                number(&in_use, &memory_dir.join("memory.usage_in_bytes"))?,
                stat_field(&memory_stat, "total_inactive_file"),
            ),
        }))
    }

    fn storage(&self) -> Result<Option<FsUsage>, UsageError> {
        let Some(dir) = &self.storage_dir else {
            return Ok(None);
        };
        let path = self.root.join(dir.strip_prefix("/").unwrap_or(dir));
        Statvfs
            .usage(&path)
            .map(Some)
            .map_err(|source| UsageError::Read { path, source })
    }
}

fn read(path: &Path) -> Result<String, UsageError> {
    std::fs::read_to_string(path).map_err(|source| UsageError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The file's text, or `None` when it (or its cgroup: a container that
/// just stopped) is not there.
fn read_if_there(path: &Path) -> Result<Option<String>, UsageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // A cgroup removed while it is read.
        Err(e) if e.raw_os_error() == Some(19) => Ok(None), // ENODEV
        Err(source) => Err(UsageError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn number(text: &str, path: &Path) -> Result<u64, UsageError> {
    text.trim()
        .parse()
        .map_err(|_| UsageError::parse(path, format!("{:?} is not a number", text.trim())))
}

/// A `key value` line's value in a flat-keyed file (`cpu.stat`,
/// `memory.stat`).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// The kubelet's working set: usage less the inactive page cache (never
/// below zero).
pub fn working_set(usage: u64, inactive_file: Option<u64>) -> u64 {
    usage.saturating_sub(inactive_file.unwrap_or(0))
}

/// The ticks every CPU spent busy, from `/proc/stat`'s `cpu` line: user,
/// nice, system, irq, softirq and steal (guest time is counted in user
/// and nice already; idle and iowait are not busy).
pub fn busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The machine's working set from `/proc/meminfo`: `MemTotal - MemFree -
/// Inactive(file)`, in bytes.
pub fn machine_working_set(meminfo: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
    };
    let used = field("MemTotal")?.saturating_sub(field("MemFree")?);
    Some(working_set(used, Some(field("Inactive(file)")?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/stat` of a four-CPU machine, cut short.
    const PROC_STAT: &str = "\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335075 29893 497906 11198226 3514 0 2360 0 50811 0
intr 1462898 140 9 0 0
ctxt 1990473
btime 1062191376
";

    const MEMINFO: &str = "\
MemTotal:        8039012 kB
MemFree:         1918544 kB
MemAvailable:    5617580 kB
Buffers:          214536 kB
Cached:          3496156 kB
Active(file):    1839396 kB
Inactive(file):  1536768 kB
";

    /// A cgroup v2 `cpu.stat`.
    const CPU_STAT: &str = "\
usage_usec 123456789
user_usec 100000000
system_usec 23456789
nr_periods 0
nr_throttled 0
throttled_usec 0
";

    /// A cgroup v2 `memory.stat`, cut short.
    const MEMORY_STAT: &str = "\
anon 8192000
file 6291456
kernel 393216
active_anon 8183808
inactive_anon 0
active_file 2097152
inactive_file 4194304
";

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn busy_cpu_time_is_every_state_but_idle_and_iowait() {
        assert_eq!(
            busy_ticks(PROC_STAT),
            Some(10132153 + 290696 + 3084719 + 25195)
        );
        assert_eq!(busy_ticks("cpu0 1 2 3 4\n"), None, "no total line");
        assert_eq!(busy_ticks("cpu 1 2 x 4\n"), None);
        assert_eq!(busy_ticks("cpu 1 2\n"), None);
        // Old kernels end after softirq.
        assert_eq!(busy_ticks("cpu 1 2 3 4 5 6 7\n"), Some(1 + 2 + 3 + 6 + 7));
    }

    #[test]
    fn the_machines_working_set_leaves_out_free_memory_and_inactive_page_cache() {
        let expected = (8039012 - 1918544 - 1536768) * 1024;
        assert_eq!(machine_working_set(MEMINFO), Some(expected));
        assert_eq!(machine_working_set("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn flat_keyed_fields_are_found_by_their_whole_key() {
        assert_eq!(stat_field(CPU_STAT, "usage_usec"), Some(123456789));
        assert_eq!(stat_field(MEMORY_STAT, "inactive_file"), Some(4194304));
        assert_eq!(stat_field(MEMORY_STAT, "file"), Some(6291456));
        assert_eq!(stat_field(MEMORY_STAT, "missing"), None);
        assert_eq!(working_set(100, Some(30)), 70);
        assert_eq!(working_set(10, Some(30)), 0, "never below zero");
        assert_eq!(working_set(10, None), 10);
    }

    #[test]
    fn the_machine_is_read_from_proc() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "/proc/stat", PROC_STAT);
        write(tmp.path(), "/proc/meminfo", MEMINFO);
        let sample = HostUsage::at(tmp.path()).machine().unwrap();
        let ticks = 10132153 + 290696 + 3084719 + 25195;
        assert_eq!(sample.cpu_nanos, ticks * 10_000_000);
        assert_eq!(sample.memory_bytes, (8039012 - 1918544 - 1536768) * 1024);
        let empty = tempfile::tempdir().unwrap();
        let e = HostUsage::at(empty.path()).machine().unwrap_err();
        assert!(e.to_string().contains("proc/stat"), "{e}");
    }

    #[test]
    fn a_v2_cgroup_gives_cpu_time_and_working_set() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = "/sys/fs/cgroup/skiff/u1/app";
        write(tmp.path(), &format!("{dir}/cpu.stat"), CPU_STAT);
        write(tmp.path(), &format!("{dir}/memory.current"), "10485760\n");
        write(tmp.path(), &format!("{dir}/memory.stat"), MEMORY_STAT);
        let host = HostUsage::at(tmp.path());
        let sample = host.cgroup("/skiff/u1/app").unwrap().unwrap();
        assert_eq!(sample.cpu_nanos, 123_456_789_000);
        assert_eq!(sample.memory_bytes, 10485760 - 4194304);
        assert_eq!(host.cgroup("/skiff/u1/gone").unwrap(), None);
        // Without the memory controller, nothing half-measured.
        let bare = "/sys/fs/cgroup/skiff/u2/app";
        write(tmp.path(), &format!("{bare}/cpu.stat"), CPU_STAT);
        let e = host.cgroup("/skiff/u2/app").unwrap_err();
        assert!(e.to_string().contains("memory controller"), "{e}");
    }

    #[test]
    fn a_v1_cgroup_gives_cpu_time_and_working_set() {
        let tmp = tempfile::tempdir().unwrap();
        let root = "/sys/fs/cgroup";
        write(
            tmp.path(),
            &format!("{root}/cpu,cpuacct/skiff/u1/app/cpuacct.usage"),
            "5000000000\n",
        );
        write(
            tmp.path(),
            &format!("{root}/memory/skiff/u1/app/memory.usage_in_bytes"),
            "8388608\n",
        );
        write(
            tmp.path(),
            &format!("{root}/memory/skiff/u1/app/memory.stat"),
            "cache 4194304\ninactive_file 1\ntotal_inactive_file 2097152\n",
        );
        let sample = HostUsage::at(tmp.path())
            .cgroup("/skiff/u1/app")
            .unwrap()
            .unwrap();
        assert_eq!(sample.cpu_nanos, 5_000_000_000);
        assert_eq!(sample.memory_bytes, 8388608 - 2097152);
    }

    #[test]
    fn the_storage_filesystem_is_measured_even_before_its_dir_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(HostUsage::at(tmp.path()).storage().unwrap(), None);
        // `<root>/var/lib/skiff/storage` does not exist: its nearest
        // existing parent, the root, is on the same filesystem.
        let host = HostUsage::at(tmp.path()).with_storage_dir("/var/lib/skiff/storage");
        let measured = host.storage().unwrap().expect("measured");
        let root = Statvfs.usage(tmp.path()).unwrap();
        assert!(measured.capacity > 0, "{measured:?}");
        assert_eq!(measured.capacity, root.capacity);
        assert!(measured.available <= measured.capacity, "{measured:?}");
    }

    #[test]
    fn garbled_counters_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = "/sys/fs/cgroup/skiff/u1/app";
        write(tmp.path(), &format!("{dir}/cpu.stat"), CPU_STAT);
        write(tmp.path(), &format!("{dir}/memory.current"), "lots\n");
        let e = HostUsage::at(tmp.path())
            .cgroup("/skiff/u1/app")
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("memory.current") && text.contains("lots"),
            "{text}"
        );
    }
}
