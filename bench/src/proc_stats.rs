//! CPU time and memory of processes, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`; what they write (`/proc/<pid>/io`), which
//! processes descend from one or run with a given argument, and what a
//! block device has written (`/proc/diskstats`).

use std::path::Path;

/// Bytes a process caused to be written to storage (`write_bytes` in
/// `/proc/<pid>/io`).
pub fn write_bytes(proc_root: &Path, pid: u32) -> std::io::Result<u64> {
    let io = std::fs::read_to_string(proc_root.join(pid.to_string()).join("io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "io: no write_bytes"))
}

/// CPU seconds (user + system) and resident memory of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// The part of `rss_bytes` that is anonymous memory (heap, stacks,
    /// pages written after mapping, relocations included): `RssAnon`.
    pub rss_anon_bytes: u64,
    /// The part mapped from files (the binary's code and read-only
    /// data, shared with other processes running it): `RssFile`.
    pub rss_file_bytes: u64,
}

/// CPU seconds (user + system) `pid` has used, from `/proc/<pid>/stat`
/// alone: also for a process that has ended and not yet been waited for
/// (a zombie keeps its times but has no memory to report).
pub fn cpu_seconds(proc_root: &Path, pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))?;
    cpu_seconds_of(&stat)
}

fn cpu_seconds_of(stat: &str) -> std::io::Result<f64> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    // The command name may contain spaces; fields start after the last ')'.
    let after = stat.rsplit_once(')').ok_or_else(|| bad("stat: no ')'"))?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of stat, so utime (14) and stime (15) are
    // at offsets 11 and 12 here.
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("stat: missing utime/stime"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

/// Reads a sample of `pid` from the proc filesystem rooted at `proc_root`.
pub fn sample(proc_root: &Path, pid: u32) -> std::io::Result<ProcSample> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    let status = std::fs::read_to_string(dir.join("status"))?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let cpu_seconds = cpu_seconds_of(&stat)?;
    let kib = |field: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rss_kib = kib("VmRSS:").ok_or_else(|| bad("status: no VmRSS"))?;
    Ok(ProcSample {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
        // Linux 4.5 and later; 0 before.
        rss_anon_bytes: kib("RssAnon:").unwrap_or(0) * 1024,
        rss_file_bytes: kib("RssFile:").unwrap_or(0) * 1024,
    })
}

/// The processes with an argument containing `needle`
/// (`/proc/<pid>/cmdline`).
pub fn pids_with_argument(proc_root: &Path, needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(proc_root.join(pid.to_string()).join("cmdline"));
            cmdline
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|arg| String::from_utf8_lossy(arg).contains(needle))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Bytes written to the block device `major:minor` since boot: its
/// sectors written (always 512 bytes in `/proc/diskstats`); `None` if it
/// is not listed (not a block device: tmpfs, overlay, ...).
pub fn device_write_bytes(proc_root: &Path, major: u64, minor: u64) -> Option<u64> {
    let stats = std::fs::read_to_string(proc_root.join("diskstats")).ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev_major, dev_minor) = (fields.first()?, fields.get(1)?);
        if dev_major.parse::<u64>().ok()? != major || dev_minor.parse::<u64>().ok()? != minor {
            return None;
        }
        let sectors: u64 = fields.get(9)?.parse().ok()?;
        Some(sectors * 512)
    })
}

/// The major and minor numbers of a Linux `dev_t` (glibc's encoding).
pub fn device_numbers(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_and_rss_from_proc_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("4242");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            "4242 (skiff master) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 9 0 100 123456 2000 18446744073709551615\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("status"),
            "Name:\tskiff\nVmPeak:\t  50000 kB\nVmRSS:\t   12288 kB\nRssAnon:\t    2048 kB\nRssFile:\t   10240 kB\nThreads:\t9\n",
        )
        .unwrap();
        let s = sample(root.path(), 4242).unwrap();
        let clock = clock_ticks_per_second();
        assert!((s.cpu_seconds - 400.0 / clock).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 12288 * 1024);
        assert_eq!(
            (s.rss_anon_bytes, s.rss_file_bytes),
            (2048 * 1024, 10240 * 1024)
        );
        assert!(sample(root.path(), 1).is_err());
        std::fs::write(
            dir.join("io"),
            "rchar: 100\nwchar: 200\nread_bytes: 0\nwrite_bytes: 40960\ncancelled_write_bytes: 0\n",
        )
        .unwrap();
        assert_eq!(write_bytes(root.path(), 4242).unwrap(), 40960);
    }

    #[test]
    fn finds_arguments_and_device_writes() {
        let root = tempfile::tempdir().unwrap();
        let proc_file = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let socket = "/var/tmp/x/agent/containerd/containerd.sock";
        let shim = format!("containerd-shim-runc-v2\0-namespace\0skiff\0-address\0{socket}\0");
        proc_file("200/cmdline", &shim);
        proc_file(
            "201/cmdline",
            "containerd\0--config\0/var/tmp/x/config.toml\0",
        );
        proc_file("self/cmdline", &shim);
        assert_eq!(pids_with_argument(root.path(), socket), [200]);

        proc_file(
            "diskstats",
            "   8       0 sda 10 0 20 1 40 0 8000 2 0 3 3 0 0 0 0\n   8       1 sda1 5 0 10 1 20 0 4096 2 0 3 3 0 0 0 0\n",
        );
        assert_eq!(device_write_bytes(root.path(), 8, 1), Some(4096 * 512));
        assert_eq!(device_write_bytes(root.path(), 0, 42), None);
        // 259:3 (an NVMe partition) and 8:17 as glibc encodes them.
        assert_eq!(device_numbers((259 << 8) | 3), (259, 3));
        assert_eq!(device_numbers((8 << 8) | 17), (8, 17));
    }
}
