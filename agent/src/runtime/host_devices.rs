//! The host's device nodes, which a privileged container gets as
//! containerd gives them: every character and block device under `/dev`
//! (but for the console and the `pts`, `shm`, `fd` and `mqueue`
//! directories, which the container has its own of), with its numbers,
//! mode and owner, for the OCI spec's `linux.devices`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Directories of `/dev` whose contents a container does not take.
const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// How deep under `/dev` devices are looked for.
const MAX_DEPTH: usize = 8;

/// One device node of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Its path in the container, the same as on the host (`/dev/sda`).
    pub path: String,
    /// `c` (character) or `b` (block).
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The device nodes under `dev` (the host's `/dev`), named as under
/// `/dev`; what cannot be read is left out.
pub fn host_devices(dev: &Path) -> Vec<HostDevice> {
    let mut found = Vec::new();
    walk(dev, "/dev", 0, &mut found);
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

fn walk(dir: &Path, shown_as: &str, depth: usize, found: &mut Vec<HostDevice>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{shown_as}/{name}");
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            if depth < MAX_DEPTH && !SKIPPED_DIRS.contains(&name.as_str()) {
                walk(&entry.path(), &path, depth + 1, found);
            }
            continue;
        }
        let device = if kind.is_char_device() {
            'c'
        } else if kind.is_block_device() {
            'b'
        } else {
            continue;
        };
        if depth == 0 && name == "console" {
            continue;
        }
        found.push(HostDevice {
            path,
            kind: device,
            major: nix::sys::stat::major(meta.rdev()),
            minor: nix::sys::stat::minor(meta.rdev()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_devices_are_found_with_their_numbers() {
        let devices = host_devices(Path::new("/dev"));
        let null = devices.iter().find(|d| d.path == "/dev/null");
        let null = null.expect("/dev/null is a device on every Linux host");
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert!(devices.iter().all(|d| !d.path.starts_with("/dev/pts/")));
        assert!(devices.iter().all(|d| d.path != "/dev/console"));
    }

    #[test]
    fn files_and_links_are_not_devices() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("pts")).unwrap();
        assert!(host_devices(dir.path()).is_empty());
    }
}
