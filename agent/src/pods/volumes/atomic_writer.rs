//! The kubelet's atomic writer: the files of a configMap, secret,
//! downwardAPI or projected volume, replaced all at once, so a container
//! reading them sees the old set or the new one, never a mix.
//!
//! ```text
//! <volume>/..2026_01_02_03_04_05.123456789/<path>   the files, with their modes
//! <volume>/..data -> ..2026_01_02_03_04_05.123456789
//! <volume>/<first part of each path> -> ..data/<first part>
//! ```
//!
//! A change writes a new timestamped directory beside the old one, points
//! a fresh `..data_tmp` symlink at it and renames that over `..data` (one
//! atomic rename), adds the symlinks new paths need, removes those of
//! paths gone, then the old directory. Content that has not changed writes
//! nothing. The symlinks are relative, so they resolve inside a container
//! that mounts the volume's directory anywhere; a `subPath` mount of one
//! file binds the file itself and so keeps the content it had.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// The symlink naming the current timestamped directory.
pub const DATA_LINK: &str = "..data";
/// The symlink made before it is renamed over [`DATA_LINK`].
const DATA_LINK_TMP: &str = "..data_tmp";
/// Longest path and path element, as the kubelet allows.
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// One file of a volume: its content and mode (`0o644`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A volume's files, by path relative to the volume.
pub type Payload = BTreeMap<String, FileEntry>;

/// Why a volume's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("file path {path:?} is not allowed: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `result`, its error told as `what` was being done to `path`.
fn done<T>(result: io::Result<T>, what: &'static str, path: &Path) -> Result<T, WriteError> {
    result.map_err(|source| WriteError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Whether `dir` holds files written here (a volume set up before).
pub fn has_data(dir: &Path) -> bool {
    fs::read_link(dir.join(DATA_LINK)).is_ok()
}

/// Makes `dir` hold exactly `payload`; true when anything changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    for path in payload.keys() {
        check_path(path)?;
    }
    let old = fs::read_link(dir.join(DATA_LINK))
        .ok()
        .map(|target| dir.join(target));
    // A dangling ..data (its directory removed by hand) counts as empty.
    let old = old.filter(|old| old.is_dir());
    let old_files = match &old {
        Some(old) => done(files_in(old), "reading", old)?,
        None => BTreeMap::new(),
    };
    if old.is_some() && same_files(&old_files, payload) {
        visible_links(dir, payload)?;
        return Ok(false);
    }
    let new = new_timestamp_dir(dir)?;
    for (path, entry) in payload {
        let file = new.join(path);
        if let Some(parent) = file.parent() {
            make_dirs(&new, parent)?;
        }
        done(fs::write(&file, &entry.data), "writing", &file)?;
        let mode = fs::Permissions::from_mode(entry.mode & 0o7777);
        done(
            fs::set_permissions(&file, mode),
            "setting the mode of",
            &file,
        )?;
    }
    let name = new
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| new.clone());
    let tmp = dir.join(DATA_LINK_TMP);
    remove_if_there(&tmp)?;
    done(std::os::unix::fs::symlink(&name, &tmp), "linking", &tmp)?;
    let data = dir.join(DATA_LINK);
    done(fs::rename(&tmp, &data), "renaming over", &data)?;
    visible_links(dir, payload)?;
    let wanted = top_names(payload.keys().map(String::as_str));
    for gone in top_names(old_files.keys().map(String::as_str)).difference(&wanted) {
        remove_if_there(&dir.join(gone))?;
    }
    if let Some(old) = old.filter(|old| *old != new) {
        done(fs::remove_dir_all(&old), "removing", &old)?;
    }
    Ok(true)
}

/// Refuses paths that would leave the volume or clash with its own
/// entries, as the kubelet does.
fn check_path(path: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::BadPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH {
        return bad("it is longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return bad("it must be relative");
    }
    if path.starts_with("..") {
        return bad("it must not start with '..'");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("it has an empty element"),
            ".." => return bad("it must not contain '..'"),
            part if part.len() > MAX_NAME => return bad("an element is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// The first element of each path.
fn top_names<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    paths
        .filter_map(|p| p.split('/').next())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds the `<top> -> ..data/<top>` symlinks the payload needs.
fn visible_links(dir: &Path, payload: &Payload) -> Result<(), WriteError> {
    for top in top_names(payload.keys().map(String::as_str)) {
        let link = dir.join(&top);
        if fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        let target = Path::new(DATA_LINK).join(&top);
        done(std::os::unix::fs::symlink(&target, &link), "linking", &link)?;
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), WriteError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => done(Err(e), "removing", path),
        _ => Ok(()),
    }
}

/// Makes `dir` and the directories between `root` and it (0755).
fn make_dirs(root: &Path, dir: &Path) -> Result<(), WriteError> {
    let mut at = root.to_path_buf();
    let Ok(inside) = dir.strip_prefix(root) else {
        return Ok(());
    };
    for part in inside.components() {
        if let Component::Normal(name) = part {
            at.push(name);
            if !at.is_dir() {
                done(fs::create_dir(&at), "creating", &at)?;
                let mode = fs::Permissions::from_mode(0o755);
                done(fs::set_permissions(&at, mode), "setting the mode of", &at)?;
            }
        }
    }
    Ok(())
}

/// A new `..<timestamp>` directory in `dir`, 0755.
fn new_timestamp_dir(dir: &Path) -> Result<PathBuf, WriteError> {
    let now = SystemTime::now();
    let stamp: String = skiff_objects::rfc3339(now)
        .trim_end_matches('Z')
        .chars()
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0u32.. {
        let name = match attempt {
            0 => format!("..{stamp}.{nanos:09}"),
            n => format!("..{stamp}.{nanos:09}_{n}"),
        };
        let path = dir.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {
                let mode = fs::Permissions::from_mode(0o755);
                done(
                    fs::set_permissions(&path, mode),
                    "setting the mode of",
                    &path,
                )?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => continue,
            Err(e) => return done(Err(e), "creating", &path),
        }
    }
    Err(WriteError::Io {
        what: "creating a timestamped directory in",
        path: dir.to_path_buf(),
        source: io::Error::other("no free name"),
    })
}

/// Every file under `root` (following no symlinks): relative path →
/// content and mode.
fn files_in(root: &Path) -> io::Result<BTreeMap<String, FileEntry>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                let mode = entry.metadata()?.permissions().mode() & 0o7777;
                let data = fs::read(&path)?;
                out.insert(relative, FileEntry { data, mode });
            }
        }
    }
    Ok(out)
}

fn same_files(old: &BTreeMap<String, FileEntry>, new: &Payload) -> bool {
    old.len() == new.len()
        && new.iter().all(|(path, entry)| {
            old.get(path)
                .is_some_and(|o| o.data == entry.data && o.mode == entry.mode & 0o7777)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(path, data, mode)| {
                let entry = FileEntry {
                    data: data.as_bytes().to_vec(),
                    mode: *mode,
                };
                ((*path).to_owned(), entry)
            })
            .collect()
    }

    fn read(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn mode(dir: &Path, path: &str) -> u32 {
        fs::metadata(dir.join(path)).unwrap().permissions().mode() & 0o7777
    }

    /// The entries of `dir` itself, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_are_written_with_their_modes_behind_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = payload(&[
            ("app.conf", "port=80\n", 0o644),
            ("secret/key", "k3y", 0o400),
            ("secret/cert", "c3rt", 0o600),
        ]);
        assert!(write(dir, &files).unwrap(), "a first write changes things");
        assert!(has_data(dir));
        assert_eq!(read(dir, "app.conf"), "port=80\n");
        assert_eq!(read(dir, "secret/key"), "k3y");
        assert_eq!(mode(dir, "app.conf"), 0o644);
        assert_eq!(mode(dir, "secret/key"), 0o400);
        assert_eq!(mode(dir, "secret/cert"), 0o600);
        // The kubelet's layout: user-visible names are symlinks into ..data.
        let link = fs::read_link(dir.join("app.conf")).unwrap();
        assert_eq!(link, Path::new("..data/app.conf"));
        assert_eq!(
            fs::read_link(dir.join("secret")).unwrap(),
            Path::new("..data/secret")
        );
        let data = fs::read_link(dir.join(DATA_LINK)).unwrap();
        let stamp = data.to_string_lossy().into_owned();
        assert!(stamp.starts_with("..20"), "{stamp}");
        let names = entries(dir);
        assert_eq!(names, [stamp.as_str(), "..data", "app.conf", "secret"]);
    }

    #[test]
    fn a_change_swaps_everything_at_once_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = payload(&[("a", "1", 0o644), ("gone/x", "x", 0o644)]);
        write(dir, &first).unwrap();
        let old = fs::read_link(dir.join(DATA_LINK)).unwrap();

        // The same content again: nothing is written.
        assert!(!write(dir, &first).unwrap());
        assert_eq!(fs::read_link(dir.join(DATA_LINK)).unwrap(), old);

        // A new value, a path gone, a path new.
        let second = payload(&[("a", "2", 0o644), ("b", "new", 0o640)]);
        assert!(write(dir, &second).unwrap());
        let new = fs::read_link(dir.join(DATA_LINK)).unwrap();
        assert_ne!(new, old);
        assert_eq!(read(dir, "a"), "2");
        assert_eq!(read(dir, "b"), "new");
        assert_eq!(mode(dir, "b"), 0o640);
        assert!(
            fs::symlink_metadata(dir.join("gone")).is_err(),
            "gone/ removed"
        );
        assert!(!dir.join(&old).exists(), "the old directory is removed");
        let new = new.to_string_lossy().into_owned();
        assert_eq!(entries(dir), [new.as_str(), "..data", "a", "b"]);

        // A mode change alone is a change.
        let third = payload(&[("a", "2", 0o600), ("b", "new", 0o640)]);
        assert!(write(dir, &third).unwrap());
        assert_eq!(mode(dir, "a"), 0o600);
    }

    #[test]
    fn an_open_file_keeps_its_content_across_a_swap() {
        // What a subPath mount of one file sees: the file it bound, not
        // the new one.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, &payload(&[("conf", "old", 0o644)])).unwrap();
        let bound = fs::canonicalize(dir.join("conf")).unwrap();
        let held = fs::File::open(&bound).unwrap();
        write(dir, &payload(&[("conf", "new", 0o644)])).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut &held, &mut text).unwrap();
        assert_eq!(text, "old");
        assert_eq!(read(dir, "conf"), "new");
    }

    #[test]
    fn paths_that_leave_the_volume_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for path in ["/etc/passwd", "../x", "a/../../x", "..data", "a//b", ""] {
            let bad = payload(&[("fine", "1", 0o644), (path, "x", 0o644)]);
            let error = write(dir, &bad).unwrap_err();
            assert!(
                matches!(error, WriteError::BadPath { .. }),
                "{path}: {error}"
            );
            assert!(entries(dir).is_empty(), "{path}: nothing written");
        }
    }
}
