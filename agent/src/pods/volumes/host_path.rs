//! `hostPath` volumes' `type` checks, made before a pod's containers start,
//! as the kubelet makes them: `Directory`, `File`, `Socket`, `CharDevice`
//! and `BlockDevice` must find what they name (symlinks followed);
//! `DirectoryOrCreate` and `FileOrCreate` make a missing one (0755 and an
//! empty 0644 file, with missing parents); `""` checks nothing.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a hostPath volume cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("hostPath type {0:?} is not one skiff knows")]
    UnknownType(String),
    #[error("hostPath type check failed: {} is not a {wanted}", path.display())]
    WrongType { path: PathBuf, wanted: &'static str },
    #[error("hostPath type check failed: {} does not exist and type {kind} does not create it", path.display())]
    Missing { path: PathBuf, kind: String },
    #[error("hostPath {}: creating it: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("hostPath {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a `type` wants to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Anything,
    Directory { create: bool },
    File { create: bool },
    Socket,
    CharDevice,
    BlockDevice,
}

impl Wanted {
    fn parse(kind: &str) -> Result<Wanted, HostPathError> {
        Ok(match kind {
            "" => Wanted::Anything,
            "Directory" => Wanted::Directory { create: false },
            "DirectoryOrCreate" => Wanted::Directory { create: true },
            "File" => Wanted::File { create: false },
            "FileOrCreate" => Wanted::File { create: true },
            "Socket" => Wanted::Socket,
            "CharDevice" => Wanted::CharDevice,
            "BlockDevice" => Wanted::BlockDevice,
            other => return Err(HostPathError::UnknownType(other.to_owned())),
        })
    }

    fn noun(self) -> &'static str {
        match self {
            Wanted::Anything => "thing",
            Wanted::Directory { .. } => "directory",
            Wanted::File { .. } => "file",
            Wanted::Socket => "socket",
            Wanted::CharDevice => "character device",
            Wanted::BlockDevice => "block device",
        }
    }
}

/// Checks `path` against the volume's `kind`, making it when the kind says
/// so.
pub fn check(path: &Path, kind: &str) -> Result<(), HostPathError> {
    let wanted = Wanted::parse(kind)?;
    if wanted == Wanted::Anything {
        return Ok(());
    }
    let found = match fs::metadata(path) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return create(path, kind, wanted);
        }
        Err(source) => {
            return Err(HostPathError::Stat {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let kind_of = found.file_type();
    let fits = match wanted {
        Wanted::Anything => true,
        Wanted::Directory { .. } => kind_of.is_dir(),
        Wanted::File { .. } => kind_of.is_file(),
        Wanted::Socket => kind_of.is_socket(),
        Wanted::CharDevice => kind_of.is_char_device(),
        Wanted::BlockDevice => kind_of.is_block_device(),
    };
    if fits {
        Ok(())
    } else {
        Err(HostPathError::WrongType {
            path: path.to_path_buf(),
            wanted: wanted.noun(),
        })
    }
}

/// Makes the missing `path`, when `wanted` says to.
fn create(path: &Path, kind: &str, wanted: Wanted) -> Result<(), HostPathError> {
    let failed = |source| HostPathError::Create {
        path: path.to_path_buf(),
        source,
    };
    match wanted {
        Wanted::Directory { create: true } => {
            fs::create_dir_all(path).map_err(failed)?;
            let mode = fs::Permissions::from_mode(0o755);
            fs::set_permissions(path, mode).map_err(failed)
        }
        Wanted::File { create: true } => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(failed)?;
            }
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path);
            file.map_err(failed)?;
            let mode = fs::Permissions::from_mode(0o644);
            fs::set_permissions(path, mode).map_err(failed)
        }
        _ => Err(HostPathError::Missing {
            path: path.to_path_buf(),
            kind: kind.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_checks_what_it_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let file = tmp.path().join("file");
        let socket = tmp.path().join("socket");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, "x").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let link = tmp.path().join("link-to-dir");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let null = Path::new("/dev/null");
        let fine = [
            (&dir, "Directory"),
            (&link, "Directory"),
            (&dir, "DirectoryOrCreate"),
            (&file, "File"),
            (&file, "FileOrCreate"),
            (&socket, "Socket"),
            (&file, ""),
        ];
        for (path, kind) in fine {
            check(path, kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        check(null, "CharDevice").unwrap();
        let wrong = [
            (&file, "Directory", "directory"),
            (&dir, "File", "file"),
            (&dir, "FileOrCreate", "file"),
            (&file, "DirectoryOrCreate", "directory"),
            (&file, "Socket", "socket"),
            (&file, "CharDevice", "character device"),
            (&dir, "BlockDevice", "block device"),
        ];
        for (path, kind, noun) in wrong {
            let error = check(path, kind).expect_err(kind);
            let expected = format!("{} is not a {noun}", path.display());
            assert!(error.to_string().ends_with(&expected), "{kind}: {error}");
        }
        assert!(check(null, "BlockDevice").is_err());
        let odd = check(&dir, "Folder").expect_err("an unknown type");
        assert!(matches!(odd, HostPathError::UnknownType(_)), "{odd}");
    }

    #[test]
    fn or_create_types_make_what_is_missing_and_the_others_refuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/dir");
        check(&dir, "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let file = tmp.path().join("c/file.sock");
        check(&file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert_eq!(fs::read(&file).unwrap(), b"");
        // Making it again keeps what is there.
        fs::write(&file, "kept").unwrap();
        check(&file, "FileOrCreate").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "kept");
        for kind in ["Directory", "File", "Socket", "CharDevice", "BlockDevice"] {
            let missing = tmp.path().join(format!("missing-{kind}"));
            let error = check(&missing, kind).expect_err(kind);
            assert!(matches!(error, HostPathError::Missing { .. }), "{error}");
            assert!(!missing.exists(), "{kind} makes nothing");
        }
        // No type: nothing is checked or made.
        let untyped = tmp.path().join("untyped");
        check(&untyped, "").unwrap();
        assert!(!untyped.exists());
    }
}
