//! CPU time and memory of processes, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`.

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
}

/// Reads a sample of `pid` from the proc filesystem rooted at `proc_root`.
pub fn sample(proc_root: &Path, pid: u32) -> std::io::Result<ProcSample> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    let status = std::fs::read_to_string(dir.join("status"))?;
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
    let clock = clock_ticks_per_second();
    let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / clock;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("status: no VmRSS"))?;
    Ok(ProcSample {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
    })
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
            "Name:\tskiff\nVmPeak:\t  50000 kB\nVmRSS:\t   12288 kB\nThreads:\t9\n",
        )
        .unwrap();
        let s = sample(root.path(), 4242).unwrap();
        let clock = clock_ticks_per_second();
        assert!((s.cpu_seconds - 400.0 / clock).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 12288 * 1024);
        assert!(sample(root.path(), 1).is_err());
        std::fs::write(
            dir.join("io"),
            "rchar: 100\nwchar: 200\nread_bytes: 0\nwrite_bytes: 40960\ncancelled_write_bytes: 0\n",
        )
        .unwrap();
        assert_eq!(write_bytes(root.path(), 4242).unwrap(), 40960);
    }
}
