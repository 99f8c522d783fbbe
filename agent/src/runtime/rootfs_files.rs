//! Reading a file out of an image's root filesystem without mounting it:
//! the mounts containerd gives for a read-only view of a snapshot name its
//! layer directories (a `bind` of the one layer, or an `overlay` whose
//! `upperdir` and `lowerdir`s are the layers, topmost first), and a path
//! is what the topmost layer that has it holds, as overlayfs shows it. A
//! whiteout (a 0/0 character device) there means the file was deleted; a
//! symlink is followed inside the root filesystem. Directories made opaque
//! by a layer (an overlayfs xattr) are not looked at: a file of a lower
//! layer under one would still be found, which for the files read here
//! (`/etc/passwd`, `/etc/group`) images do not do.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use containerd_client::types::Mount;

/// How many symlinks a lookup follows before it gives up.
const MAX_LINKS: usize = 8;

/// The layer directories of a root filesystem, topmost first, from the
/// mounts that would mount it.
pub fn layer_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "bind" | "rbind" => dirs.push(PathBuf::from(&m.source)),
            "overlay" => {
                let option = |key: &str| {
                    m.options
                        .iter()
                        .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                };
                if let Some(upper) = option("upperdir") {
                    dirs.push(PathBuf::from(upper));
                }
                if let Some(lower) = option("lowerdir") {
                    dirs.extend(
                        lower
                            .split(':')
                            .filter(|d| !d.is_empty())
                            .map(PathBuf::from),
                    );
                }
            }
            _ => {}
        }
    }
    dirs
}

/// What the topmost layer that has `path` (relative to the root) holds.
enum Found {
    File(PathBuf),
    Link(PathBuf),
    Missing,
}

fn find(layers: &[PathBuf], path: &Path) -> io::Result<Found> {
    for layer in layers {
        let at = layer.join(path);
        match fs::symlink_metadata(&at) {
            Ok(meta) => {
                let kind = meta.file_type();
                if kind.is_char_device() && meta.rdev() == 0 {
                    return Ok(Found::Missing);
                }
                if kind.is_symlink() {
                    return Ok(Found::Link(fs::read_link(&at)?));
                }
                if kind.is_file() {
                    return Ok(Found::File(at));
                }
                return Ok(Found::Missing);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A parent that is not a directory in this layer (a whiteout
            // or a file) hides the path in the layers below it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
                return Ok(Found::Missing);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Found::Missing)
}

/// `path` (absolute inside the root filesystem) from `layers`, at most
/// `max` bytes of it; `None` when the root filesystem does not have it.
pub fn read_file(layers: &[PathBuf], path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut at = relative(Path::new(path));
    for _ in 0..=MAX_LINKS {
        match find(layers, &at)? {
            Found::Missing => return Ok(None),
            Found::File(file) => {
                let mut data = Vec::new();
                fs::File::open(file)?.take(max).read_to_end(&mut data)?;
                return Ok(Some(data));
            }
            Found::Link(target) => {
                at = if target.is_absolute() {
                    relative(&target)
                } else {
                    let dir = at.parent().unwrap_or(Path::new(""));
                    relative(&dir.join(target))
                };
            }
        }
    }
    Ok(None)
}

/// `path` made relative to the root, `..` resolved without leaving it.
fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn layers_come_from_bind_and_overlay_mounts_topmost_first() {
        let one = [mount("bind", "/snap/1/fs", &["ro", "rbind"])];
        assert_eq!(layer_dirs(&one), [PathBuf::from("/snap/1/fs")]);
        let many = [mount(
            "overlay",
            "overlay",
            &["index=off", "lowerdir=/snap/3/fs:/snap/2/fs:/snap/1/fs"],
        )];
        let dirs = ["/snap/3/fs", "/snap/2/fs", "/snap/1/fs"].map(PathBuf::from);
        assert_eq!(layer_dirs(&many), dirs);
        let writable = [mount(
            "overlay",
            "overlay",
            &[
                "workdir=/snap/9/work",
                "upperdir=/snap/9/fs",
                "lowerdir=/snap/1/fs",
            ],
        )];
        let dirs = ["/snap/9/fs", "/snap/1/fs"].map(PathBuf::from);
        assert_eq!(layer_dirs(&writable), dirs);
        assert!(layer_dirs(&[mount("tmpfs", "tmpfs", &[])]).is_empty());
    }

    #[test]
    fn the_topmost_layer_with_a_file_decides_and_symlinks_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let layer = |n: &str| {
            let path = dir.path().join(n);
            fs::create_dir_all(path.join("etc")).unwrap();
            path
        };
        let (bottom, middle, top) = (layer("1"), layer("2"), layer("3"));
        fs::write(bottom.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        fs::write(bottom.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(middle.join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        fs::write(bottom.join("etc/hosts"), "old").unwrap();
        // The top layer points /etc/group at a file of a lower layer and
        // has a file where the bottom has a directory.
        std::os::unix::fs::symlink("../usr/group", top.join("etc/group")).unwrap();
        fs::create_dir_all(middle.join("usr")).unwrap();
        fs::write(middle.join("usr/group"), "staff:x:50:\n").unwrap();
        fs::write(top.join("data"), "a file").unwrap();
        fs::create_dir_all(bottom.join("data")).unwrap();
        fs::write(bottom.join("data/x"), "hidden").unwrap();
        let layers = [top, middle, bottom];
        let read = |path: &str| {
            read_file(&layers, path, 1 << 20)
                .unwrap()
                .map(|d| String::from_utf8(d).unwrap())
        };
        assert_eq!(
            read("/etc/passwd").as_deref(),
            Some("app:x:1000:1000::/:/bin/sh\n")
        );
        assert_eq!(read("/etc/group").as_deref(), Some("staff:x:50:\n"));
        assert_eq!(read("/etc/hosts").as_deref(), Some("old"));
        assert_eq!(read("/etc/shadow"), None);
        assert_eq!(read("/data/x"), None, "a file above hides the directory");
        // At most `max` bytes.
        let head = read_file(&layers, "/etc/hosts", 2).unwrap();
        assert_eq!(head.as_deref(), Some(&b"ol"[..]));
    }

    #[test]
    fn symlink_loops_end_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("1");
        fs::create_dir_all(layer.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/b", layer.join("etc/a")).unwrap();
        std::os::unix::fs::symlink("/etc/a", layer.join("etc/b")).unwrap();
        assert_eq!(read_file(&[layer], "/etc/a", 10).unwrap(), None);
    }
}
