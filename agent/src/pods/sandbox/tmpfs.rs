//! tmpfs mounts for pod volumes: `emptyDir` with `medium: Memory`, and
//! the secret and projected volumes, whose files never touch the node's
//! disk. Each is mounted on the host under the pod's directory, so every
//! container of the pod binds the same one, and found again after an agent
//! restart in `/proc/self/mountinfo`. The pages are charged to the memory
//! cgroup of the container that writes them, so they count against its
//! limit.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Errors mounting or unmounting a volume's tmpfs.
#[derive(Debug, thiserror::Error)]
pub enum TmpfsError {
    #[error("tmpfs at {}: mount: {source}; the agent needs CAP_SYS_ADMIN", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("tmpfs at {}: unmount: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Mounts a tmpfs (mode 0777, at most `size_bytes` when given) on the
/// directory `path`, unless one is mounted there already.
pub fn mount_at(path: &Path, size_bytes: Option<u64>) -> Result<(), TmpfsError> {
    if is_mount_point(path) {
        return Ok(());
    }
    // tmpfs takes size=0 for "no limit": a zero size is left out.
    let options = match size_bytes.filter(|size| *size > 0) {
        Some(size) => format!("mode=0777,size={size}"),
        None => "mode=0777".to_owned(),
    };
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        flags,
        Some(options.as_str()),
    )
    .map_err(|source| TmpfsError::Mount {
        path: path.to_path_buf(),
        source,
    })
}

/// Unmounts what is mounted at `path` (lazily: it goes once the last
/// container holding it has); nothing mounted there is fine.
pub fn unmount_at(path: &Path) -> Result<(), TmpfsError> {
    if !is_mount_point(path) {
        return Ok(());
    }
    umount2(path, MntFlags::MNT_DETACH).map_err(|source| TmpfsError::Unmount {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether something is mounted at `path` in the agent's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo shows absolute paths with symlinks resolved.
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mountinfo_has(&mountinfo, &wanted)
}

/// Whether `mountinfo` (the text of `/proc/<pid>/mountinfo`) lists a mount
/// at `path`.
fn mountinfo_has(mountinfo: &str, path: &Path) -> bool {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(&unescape(point)) == path)
}

/// Undoes the kernel's octal escapes in mountinfo (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_from_mountinfo_with_escapes_undone() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:51 / /var/lib/skiff/pods/a_b_u/volumes/kubernetes.io~secret/creds rw - tmpfs tmpfs rw
99 22 0:52 / /var/lib/skiff/pods/with\\040space rw - tmpfs tmpfs rw
";
        let secret = "/var/lib/skiff/pods/a_b_u/volumes/kubernetes.io~secret/creds";
        assert!(mountinfo_has(mountinfo, Path::new(secret)));
        let spaced = "/var/lib/skiff/pods/with space";
        assert!(mountinfo_has(mountinfo, Path::new(spaced)));
        assert!(!mountinfo_has(mountinfo, Path::new("/var/lib/skiff/pods")));
        assert_eq!(unescape("a\\040b\\011c\\"), "a b\tc\\");
    }
}
