//! What `skiff check-config` asks of the machine besides the kernel's
//! files: where programs are and their versions, whether a socket is
//! there, free disk space, the clock, and who we run as. A narrow trait,
//! so that the checks are tested against a fake machine; [`RealMachine`]
//! asks this one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use super::clock::{self, ClockFacts};
use super::disk::DiskSpace;

/// systemd's default `PATH` for services, where the units find programs.
const SYSTEMD_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
/// There when systemd-timesyncd has synchronized the clock since boot.
const TIMESYNCD_SYNCHRONIZED: &str = "/run/systemd/timesync/synchronized";

/// What the checks ask of the machine.
pub trait Machine {
    /// Where `program` is: the first executable of that name on `PATH`,
    /// else in systemd's default `PATH`.
    fn find_program(&self, program: &str) -> Option<PathBuf>;
    /// The first line of `program --version`, when it runs and says one.
    fn version(&self, program: &Path) -> Option<String>;
    /// Whether `path` is a Unix socket.
    fn socket_exists(&self, path: &Path) -> bool;
    /// Free space on the filesystem `dir` is on, or will be on once made.
    fn disk_space(&self, dir: &Path) -> nix::Result<DiskSpace>;
    /// The time, and whether the clock is kept synchronized.
    fn clock(&self) -> ClockFacts;
    /// Whether we run as root (effective uid 0).
    fn is_root(&self) -> bool;
}

/// This machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealMachine;

impl Machine for RealMachine {
    fn find_program(&self, program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let systemd = SYSTEMD_PATH.into_iter().map(PathBuf::from);
        let mut dirs = std::env::split_paths(&path).chain(systemd);
        dirs.find_map(|dir| {
            let candidate = dir.join(program);
            is_executable(&candidate).then_some(candidate)
        })
    }

    fn version(&self, program: &Path) -> Option<String> {
        let output = Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let first = stdout.lines().next()?.trim();
        (!first.is_empty()).then(|| first.to_owned())
    }

    fn socket_exists(&self, path: &Path) -> bool {
        use std::os::unix::fs::FileTypeExt;
        path.metadata().is_ok_and(|m| m.file_type().is_socket())
    }

    fn disk_space(&self, dir: &Path) -> nix::Result<DiskSpace> {
        let measured = dir
            .ancestors()
            .find(|candidate| candidate.exists())
            .unwrap_or(Path::new("."));
        let stat = nix::sys::statvfs::statvfs(measured)?;
        let fragment = widen(stat.fragment_size());
        Ok(DiskSpace {
            measured: measured.to_owned(),
            available: widen(stat.blocks_available()).saturating_mul(fragment),
            total: widen(stat.blocks()).saturating_mul(fragment),
        })
    }

    fn clock(&self) -> ClockFacts {
        let timesyncd = Path::new(TIMESYNCD_SYNCHRONIZED).exists();
        ClockFacts {
            now: SystemTime::now(),
            sync: clock::read_sync(timesyncd),
        }
    }

    fn is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// statvfs counts come as `c_ulong` and `fsblkcnt_t`: u64 here, u32 on
/// 32-bit ARM.
fn widen<N: Into<u64>>(count: N) -> u64 {
    count.into()
}
