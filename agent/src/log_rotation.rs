//! Size-capped rotation of log files that another process keeps open and
//! appends to: the container logs the runc shims write and the private
//! containerd's own log. Such a file cannot be renamed away, since its
//! writer would go on writing to the renamed file, so it is copied to
//! `<file>.1` and truncated in place ("copytruncate", as logrotate calls
//! it); the writer opened it with `O_APPEND` and carries on at the start.
//! At most two files of about the cap each are kept, the current one and
//! `.1`. A line written between the copy and the truncation is lost: the
//! price of not owning the writer.

use std::path::{Path, PathBuf};

/// Where `path` goes when it is rotated: `<path>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    PathBuf::from(rotated)
}

/// Rotates `path` if it has grown past `max` bytes, replacing an earlier
/// `<path>.1`; whether it did. A missing file has nothing to rotate.
pub fn rotate_if_larger(path: &Path, max: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    std::fs::copy(path, rotated_path(path))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_cap_is_copied_aside_and_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("containerd.log");
        assert!(!rotate_if_larger(&log, 50).unwrap(), "no file, no rotation");
        std::fs::write(&log, vec![b'a'; 40]).unwrap();
        assert!(!rotate_if_larger(&log, 50).unwrap(), "under the cap");
        std::fs::write(&log, vec![b'b'; 100]).unwrap();
        assert!(rotate_if_larger(&log, 50).unwrap());
        let rotated = tmp.path().join("containerd.log.1");
        assert_eq!(rotated, rotated_path(&log));
        assert_eq!(std::fs::read(&rotated).unwrap(), vec![b'b'; 100]);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        // The next rotation replaces the old `.1`: two files at most.
        std::fs::write(&log, vec![b'c'; 60]).unwrap();
        assert!(rotate_if_larger(&log, 50).unwrap());
        assert_eq!(std::fs::read(&rotated).unwrap(), vec![b'c'; 60]);
        let files = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(files, 2);
    }
}
