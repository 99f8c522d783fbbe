//! A pod's `fsGroup` on its volumes, as the kubelet's
//! `SetVolumeOwnership` applies it to emptyDir, configMap, secret,
//! downwardAPI and projected volumes: every file and directory gets the
//! group; files the group's read (and, in a writable volume, write)
//! permission; directories also its search permission and the set-group-ID
//! bit, so what the pod's containers create inside inherits the group.
//! Symlinks get the group and keep their (meaningless) mode.
//!
//! The walk is skipped while the volume's own directory already shows the
//! group and the bit (the kubelet's `OnRootMismatch`): a volume is walked
//! when it is made or its files are rewritten, not on every refresh.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Group read and write, for files of writable volumes.
const GROUP_READ_WRITE: u32 = 0o660;
/// Group read, for files of read-only (projected) volumes.
const GROUP_READ: u32 = 0o440;
/// Search permission for owner and group.
const SEARCH: u32 = 0o110;
/// The set-group-ID bit.
const SET_GID: u32 = 0o2000;

/// A volume whose group could not be set.
#[derive(Debug, thiserror::Error)]
#[error("setting the group of {} to {gid} (fsGroup): {source}", path.display())]
pub struct OwnershipError {
    pub path: PathBuf,
    pub gid: u32,
    #[source]
    pub source: io::Error,
}

/// Whether the volume at `dir` still needs `gid` applied: its directory
/// does not have the group, or not the set-group-ID bit.
pub fn needs(dir: &Path, gid: u32) -> bool {
    match fs::metadata(dir) {
        Ok(meta) => meta.gid() != gid || meta.mode() & SET_GID == 0,
        Err(_) => true,
    }
}

/// Gives everything under `dir` (itself included) group `gid` and the
/// group's permissions; `writable` volumes get group write on files.
pub fn apply(dir: &Path, gid: u32, writable: bool) -> Result<(), OwnershipError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OwnershipError { path, gid, source }
    };
    let file_mask = if writable {
        GROUP_READ_WRITE
    } else {
        GROUP_READ
    };
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).map_err(failed(&path))?;
        std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(failed(&path))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        let wanted = if kind.is_dir() {
            for entry in fs::read_dir(&path).map_err(failed(&path))? {
                todo.push(entry.map_err(failed(&path))?.path());
            }
            mode | file_mask | SEARCH | SET_GID
        } else {
            mode | file_mask
        };
        // chown clears the set-ID bits of files; the wanted mode is set
        // again even where it looked right before.
        let permissions = fs::Permissions::from_mode(wanted);
        fs::set_permissions(&path, permissions).map_err(failed(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode bits of `path`.
    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn every_file_and_directory_gets_the_group_and_its_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("volume");
        fs::create_dir_all(volume.join("sub")).unwrap();
        fs::set_permissions(&volume, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(volume.join("a"), "a").unwrap();
        fs::set_permissions(volume.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(volume.join("sub/b"), "b").unwrap();
        fs::set_permissions(volume.join("sub/b"), fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::symlink("a", volume.join("link")).unwrap();
        // A group this process may give: its own.
        let gid = fs::metadata(tmp.path()).unwrap().gid();
        assert!(needs(&volume, gid), "no set-group-ID bit yet");
        apply(&volume, gid, true).unwrap();
        assert_eq!(mode(&volume), 0o2770);
        assert_eq!(mode(&volume.join("a")), 0o660);
        assert_eq!(mode(&volume.join("sub/b")), 0o660);
        assert_eq!(mode(&volume.join("sub")) & 0o2070, 0o2070);
        for path in ["", "a", "sub", "sub/b", "link"] {
            let meta = fs::symlink_metadata(volume.join(path)).unwrap();
            assert_eq!(meta.gid(), gid, "{path:?}");
        }
        assert!(!needs(&volume, gid), "done: the next check skips the walk");
        assert!(needs(&volume, gid + 1), "another group: walked again");
    }

    #[test]
    fn read_only_volumes_give_the_group_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("volume");
        fs::create_dir_all(&volume).unwrap();
        fs::write(volume.join("key"), "v").unwrap();
        fs::set_permissions(volume.join("key"), fs::Permissions::from_mode(0o600)).unwrap();
        let gid = fs::metadata(tmp.path()).unwrap().gid();
        apply(&volume, gid, false).unwrap();
        assert_eq!(mode(&volume.join("key")), 0o640);
    }
}
