//! The data dir's format marker, `<data-dir>/format`:
//!
//! ```text
//! skiff-data-format: 1
//! written-by: skiff 0.1.0
//! ```
//!
//! A master reads it before it opens anything in its data dir (also for
//! `--cluster-reset`). No marker means the current format, since earlier
//! builds wrote the same files without one: the marker is written (the
//! upgrade) and the master goes on. The current format is used as it is.
//! A newer format was written by a newer skiff, whose data this one cannot
//! read and must not rewrite: it is refused ("downgrade refused"), naming
//! the skiff that wrote it and what to do. Anything else is refused as
//! unreadable.

use std::path::{Path, PathBuf};

use super::{sync_dir, this_skiff, write_new_file};

/// The format this skiff reads and writes.
pub const CURRENT: u32 = 1;
/// The marker's file name in a data dir.
pub const FILE: &str = "format";

const FORMAT_KEY: &str = "skiff-data-format";
const WRITER_KEY: &str = "written-by";

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The marker names the current format.
    Current,
    /// There was no marker (a new data dir, or an earlier build's); one
    /// naming the current format was written.
    Marked,
}

/// Why a data dir is not used; nothing in it was changed.
#[derive(Debug, thiserror::Error)]
pub enum DataFormatError {
    #[error("data dir {dir}: this data dir was written by a newer skiff ({written_by}, data format {found}); this skiff ({this}) reads data format {reads}: downgrade refused (an older skiff cannot read data a newer one wrote, and must not rewrite it): run {written_by} or newer on it, or restore a snapshot this skiff can read (skiff master --cluster-reset --restore FILE) into an empty data dir")]
    Newer {
        dir: PathBuf,
        found: u32,
        reads: u32,
        written_by: String,
        this: String,
    },
    #[error("data dir {dir}: its format marker {file} cannot be read ({reason}); it should say `{FORMAT_KEY}: N`. If this directory belongs to something else, give skiff another --data-dir; if only the marker was damaged and this skiff wrote the data, write `{FORMAT_KEY}: {current}` into it")]
    Garbled {
        dir: PathBuf,
        file: PathBuf,
        reason: String,
        current: u32,
    },
    #[error("data dir {dir}: format marker: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    format: u32,
    written_by: Option<String>,
}

/// The marker's text for the current format, written by this skiff.
fn current_marker() -> String {
    format!("{FORMAT_KEY}: {CURRENT}\n{WRITER_KEY}: {}\n", this_skiff())
}

/// Reads a marker's text; `Err` says what is wrong with it.
fn parse(text: &str) -> Result<Marker, String> {
    let mut format = None;
    let mut written_by = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("the line {line:?} is not `key: value`"));
        };
        match key.trim() {
            FORMAT_KEY => {
                let value = value.trim();
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("{FORMAT_KEY} {value:?} is not a number"))?;
                format = Some(n);
            }
            WRITER_KEY => written_by = Some(value.trim().to_owned()),
            // Later formats may say more; the format number says whether
            // this skiff can read them.
            _ => {}
        }
    }
    match format {
        Some(format) => Ok(Marker { format, written_by }),
        None => Err(format!("it has no `{FORMAT_KEY}:` line")),
    }
}

/// Checks the data dir `dir` (which exists) before anything in it is
/// opened, writing the marker when there is none.
pub fn check(dir: &Path) -> Result<Checked, DataFormatError> {
    let file = dir.join(FILE);
    let io = |source| DataFormatError::Io {
        dir: dir.to_owned(),
        source,
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_marker(dir).map_err(io)?;
            return Ok(Checked::Marked);
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(DataFormatError::Garbled {
                dir: dir.to_owned(),
                file,
                reason: "it is not text".to_owned(),
                current: CURRENT,
            })
        }
        Err(e) => return Err(io(e)),
    };
    let garbled = |reason: String| DataFormatError::Garbled {
        dir: dir.to_owned(),
        file: file.clone(),
        reason,
        current: CURRENT,
    };
    let marker = parse(&text).map_err(garbled)?;
    match marker.format {
        CURRENT => Ok(Checked::Current),
        found if found > CURRENT => Err(DataFormatError::Newer {
            dir: dir.to_owned(),
            found,
            reads: CURRENT,
            written_by: marker
                .written_by
                .unwrap_or_else(|| format!("a skiff writing data format {found}")),
            this: this_skiff(),
        }),
        found => Err(garbled(format!(
            "{FORMAT_KEY} {found} is older than any format skiff wrote"
        ))),
    }
}

/// Writes the current format's marker into `dir`: whole or not at all.
fn write_marker(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = write_new_file(&tmp, current_marker().as_bytes(), 0o644)
        .and_then(|()| std::fs::rename(&tmp, dir.join(FILE)))
        .and_then(|()| sync_dir(dir));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_without_a_marker_is_the_current_format_and_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        // As an earlier build left it: store files, no marker.
        let state = dir.path().join(crate::store::STATE_FILE);
        std::fs::write(state, b"").unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Marked);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text, current_marker());
        assert!(text.starts_with("skiff-data-format: 1\n"), "{text}");
        assert_eq!(check(dir.path()).unwrap(), Checked::Current);
    }

    #[test]
    fn the_current_format_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let marker = "skiff-data-format: 1\nwritten-by: skiff 0.0.9\n";
        std::fs::write(dir.path().join(FILE), marker).unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Current);
        let kept = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(kept, marker);
    }

    #[test]
    fn a_newer_format_is_refused_naming_its_skiff_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let marker = "skiff-data-format: 2\nwritten-by: skiff 0.3.0\n";
        std::fs::write(dir.path().join(FILE), marker).unwrap();
        let e = check(dir.path()).unwrap_err();
        let newer = matches!(e, DataFormatError::Newer { found: 2, .. });
        assert!(newer, "{e}");
        let message = e.to_string();
        for part in [
            "this data dir was written by a newer skiff (skiff 0.3.0, data format 2)",
            "downgrade refused",
            "cannot read data a newer one wrote",
            "run skiff 0.3.0 or newer",
            "restore a snapshot",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        // And it is left as it was.
        let kept = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(kept, marker);
    }

    #[test]
    fn a_garbled_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "skiff-data-format: one\n",
            "written-by: skiff 0.1.0\n",
            "hello\n",
            "skiff-data-format: 0\n",
        ] {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let e = check(dir.path()).unwrap_err();
            let garbled = matches!(e, DataFormatError::Garbled { .. });
            assert!(garbled, "{text:?}: {e}");
            assert!(e.to_string().contains("cannot be read"), "{e}");
        }
        let not_text: [u8; 3] = [0xff, 0xfe, 0x00];
        std::fs::write(dir.path().join(FILE), not_text).unwrap();
        let e = check(dir.path()).unwrap_err();
        let garbled = matches!(e, DataFormatError::Garbled { .. });
        assert!(garbled, "{e}");
    }
}
