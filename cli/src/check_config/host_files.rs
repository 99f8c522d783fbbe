//! Where `skiff check-config` reads the kernel's files: `/proc`, `/sys`,
//! `/lib/modules` and `/boot`, each under a root of its own so that tests
//! point them at fixture trees. A file that is not there is an answer
//! (`None`: this kernel has no such thing, or does not say so); one that is
//! there but cannot be read is a [`ReadError`] naming it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The roots the kernel's files are read under.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// `/proc`.
    pub proc_root: PathBuf,
    /// `/sys`.
    pub sys_root: PathBuf,
    /// `/lib/modules`.
    pub modules_root: PathBuf,
    /// `/boot`.
    pub boot_root: PathBuf,
}

impl HostFiles {
    /// `<proc>/<path>`.
    pub fn proc(&self, path: &str) -> PathBuf {
        self.proc_root.join(path)
    }

    /// `<sys>/<path>`.
    pub fn sys(&self, path: &str) -> PathBuf {
        self.sys_root.join(path)
    }

    /// `<lib/modules>/<path>`.
    pub fn modules(&self, path: &str) -> PathBuf {
        self.modules_root.join(path)
    }

    /// `<boot>/<path>`.
    pub fn boot(&self, path: &str) -> PathBuf {
        self.boot_root.join(path)
    }
}

/// A file that is there but cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", .path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, ReadError>;

/// The text of `path`; `None` when there is no such file.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(read_error(path, source)),
    }
}

/// The text of the gzipped file `path` (`/proc/config.gz`); `None` when
/// there is no such file.
pub fn read_gzip_optional(path: &Path) -> Result<Option<String>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(path, source)),
    };
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|source| read_error(path, source))?;
    Ok(Some(text))
}

fn read_error(path: &Path, source: std::io::Error) -> ReadError {
    ReadError {
        path: path.to_owned(),
        source,
    }
}
