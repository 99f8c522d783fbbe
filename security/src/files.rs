//! Writing key material: atomically (a temp file renamed into place, so a
//! crash never leaves half a key) and with the right mode from the first
//! byte (0600 for private keys, 0644 for certificates).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Result, SecurityError};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecurityError + '_ {
    move |source| SecurityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` with `mode`, replacing it atomically.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}

/// A private key or secret: mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// A certificate: mode 0644.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o644)
}

/// Reads a text file, naming it on failure.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/node.key");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        write_public(&dir.path().join("ca.crt"), b"c").unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.crt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
