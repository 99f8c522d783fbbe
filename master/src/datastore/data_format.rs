//! The data dir's format marker, `<data-dir>/format`:
//!
//! ```text
//! skiff-data-format: 8
//! written-by: skiff 0.1.0
//! ```
//!
//! A master reads it before it opens anything in its data dir (also for
//! `--cluster-reset`). The current format is used as it is. An older one
//! is upgraded in place, then marked current:
//!
//! - format 1 kept the Raft log in redb (`raft-log.redb`); format 2 keeps
//!   it in an append-only file (`raft-log.wal`). The upgrade rewrites the
//!   log (entries, vote, committed and purged positions, entry bytes as
//!   they were) into the new file, writes the marker, and only then
//!   removes the old log, so an upgrade that a crash interrupts is done
//!   again from the start. A cluster reset's new store waiting aside is
//!   upgraded with it.
//! - format 3 holds Secrets as JSON documents, not in their protobuf model
//!   (`skiff_objects::legacy_bodies`). What format 2 wrote is read as
//!   documents as it is loaded and rewritten only when written again, so
//!   the upgrade from 2 only marks the data dir. The leader writes
//!   documents only once every master names format 3 or later in its Raft
//!   answers (`Cluster::members_data_format`); until then, during a
//!   rolling upgrade, it writes the protobuf model that format 2 reads.
//! - format 4 holds Namespaces as JSON documents too, the same way: the
//!   upgrade from 2 or 3 only marks the data dir, and the leader writes
//!   Namespaces as documents once every master names format 4.
//! - format 5 holds Endpoints as JSON documents, the same way again (from
//!   2, 3 or 4 only marked; written as documents once every master names
//!   format 5).
//! - format 6 holds Services as JSON documents, the same way (from 2 to 5
//!   only marked; written as documents once every master names format 6).
//! - format 7 holds Pods as JSON documents, the same way (from 2 to 6 only
//!   marked; written as documents once every master names format 7).
//! - format 8 holds Deployments and ReplicaSets as JSON documents, the same
//!   way (from 2 to 7 only marked; written as documents once every master
//!   names format 8).
//!
//! No marker means format 1, since the first builds wrote the same files
//! without one (or a new, empty data dir). A newer format was written by
//! a newer skiff, whose data this one cannot read and must not rewrite: it
//! is refused ("downgrade refused"), naming the skiff that wrote it and
//! what to do. Anything else is refused as unreadable.

use std::path::{Path, PathBuf};

use super::{sync_dir, this_skiff, write_new_file, ASIDE, READY};
use crate::store::log_store::{self, LogStoreError, LEGACY_LOG_FILE};
use crate::store::LOG_FILE;

/// The format this skiff reads and writes.
pub const CURRENT: u32 = skiff_objects::legacy_bodies::LATEST_FORMAT;
/// The format before Secrets were documents.
const RAFT_LOG_FILE_FORMAT: u32 = 2;
/// The format before Namespaces were documents.
const SECRET_DOCUMENTS_FORMAT: u32 = 3;
/// The format before Endpoints were documents.
const NAMESPACE_DOCUMENTS_FORMAT: u32 = 4;
/// The format before Services were documents.
const ENDPOINTS_DOCUMENTS_FORMAT: u32 = 5;
/// The format before Pods were documents.
const SERVICE_DOCUMENTS_FORMAT: u32 = 6;
/// The format before Deployments and ReplicaSets were documents.
const POD_DOCUMENTS_FORMAT: u32 = 7;
/// The format of data dirs without a marker.
const FIRST: u32 = 1;
/// The format of the state a snapshot carries (its objects and their
/// encoding). Data format 2 changed only the Raft log's file, so its
/// snapshots carried format 1 state; data format 3's may hold Secrets as
/// documents, which a skiff of data format 2 cannot read: state format 2.
/// Data format 4's may hold Namespaces as documents too: state format 3;
/// data format 5's Endpoints: state format 4; data format 6's Services:
/// state format 5; data format 7's Pods: state format 6; data format 8's
/// Deployments and ReplicaSets: state format 7. A snapshot of an earlier
/// state format restores here (its Secrets, Namespaces, Endpoints,
/// Services, Pods, Deployments and ReplicaSets are read as documents).
pub const SNAPSHOT_STATE: u32 = 7;
/// The marker's file name in a data dir.
pub const FILE: &str = "format";

const FORMAT_KEY: &str = "skiff-data-format";
const WRITER_KEY: &str = "written-by";

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The marker names the current format.
    Current,
    /// There was no marker and nothing to upgrade (a new data dir); one
    /// naming the current format was written.
    Marked,
    /// The data dir was in format `from`; it was upgraded and marked.
    Upgraded { from: u32 },
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
    #[error("data dir {dir}: cannot upgrade it from data format {from} to {CURRENT} (its Raft log {legacy} into {LOG_FILE}): {source}; its marker still says format {from}, so the next start tries again")]
    Upgrade {
        dir: PathBuf,
        from: u32,
        legacy: PathBuf,
        source: LogStoreError,
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
            return Ok(if upgrade(dir, FIRST)? {
                Checked::Upgraded { from: FIRST }
            } else {
                Checked::Marked
            });
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
        CURRENT => {
            // An upgrade that stopped after its marker left the old log.
            remove_legacy_logs(dir);
            Ok(Checked::Current)
        }
        FIRST => {
            upgrade(dir, FIRST)?;
            Ok(Checked::Upgraded { from: FIRST })
        }
        from @ (RAFT_LOG_FILE_FORMAT
        | SECRET_DOCUMENTS_FORMAT
        | NAMESPACE_DOCUMENTS_FORMAT
        | ENDPOINTS_DOCUMENTS_FORMAT
        | SERVICE_DOCUMENTS_FORMAT
        | POD_DOCUMENTS_FORMAT) => {
            // Nothing to rewrite: the objects are read as they are.
            write_marker(dir).map_err(io)?;
            Ok(Checked::Upgraded { from })
        }
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

/// The directories that hold a store: the data dir, and a cluster reset's
/// new store waiting aside once it is whole (one that is not is removed
/// when the master starts, unread).
fn store_dirs(dir: &Path) -> Vec<PathBuf> {
    let aside = dir.join(ASIDE);
    let mut dirs = vec![dir.to_owned()];
    if aside.join(READY).exists() {
        dirs.push(aside);
    }
    dirs
}

/// Upgrades `dir` from format `from` (1) and marks it current; `false` if
/// there was nothing to rewrite (no Raft log of format 1 in it).
fn upgrade(dir: &Path, from: u32) -> Result<bool, DataFormatError> {
    let mut rewrote = false;
    for store in store_dirs(dir) {
        let legacy = store.join(LEGACY_LOG_FILE);
        if !legacy.exists() {
            continue;
        }
        log_store::convert_legacy(&legacy, &store.join(LOG_FILE)).map_err(|source| {
            DataFormatError::Upgrade {
                dir: dir.to_owned(),
                from,
                legacy: legacy.clone(),
                source,
            }
        })?;
        rewrote = true;
    }
    write_marker(dir).map_err(|source| DataFormatError::Io {
        dir: dir.to_owned(),
        source,
    })?;
    remove_legacy_logs(dir);
    Ok(rewrote)
}

/// Removes the Raft logs of format 1 left in a data dir marked current:
/// their contents are in the log files already.
fn remove_legacy_logs(dir: &Path) {
    for store in store_dirs(dir) {
        let legacy = store.join(LEGACY_LOG_FILE);
        match std::fs::remove_file(&legacy) {
            Ok(()) => {
                let _ = sync_dir(&store);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %legacy.display(), error = %e, "cannot remove the Raft log of data format 1; it is no longer read");
            }
        }
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
    fn a_new_data_dir_gets_the_current_marker() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Marked);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text, current_marker());
        assert!(text.starts_with("skiff-data-format: 8\n"), "{text}");
        assert_eq!(check(dir.path()).unwrap(), Checked::Current);
    }

    #[test]
    fn the_current_format_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("skiff-data-format: {CURRENT}\nwritten-by: skiff 0.0.9\n");
        std::fs::write(dir.path().join(FILE), &marker).unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Current);
        let kept = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(kept, marker);
    }

    #[test]
    fn formats_two_to_the_last_are_only_marked_current_their_logs_kept_as_they_are() {
        for from in 2..CURRENT {
            let dir = tempfile::tempdir().unwrap();
            let marker = format!("skiff-data-format: {from}\nwritten-by: skiff 0.1.0\n");
            std::fs::write(dir.path().join(FILE), marker).unwrap();
            let log = dir.path().join(LOG_FILE);
            std::fs::write(&log, b"the log's bytes").unwrap();
            assert_eq!(check(dir.path()).unwrap(), Checked::Upgraded { from });
            let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
            assert_eq!(text, current_marker());
            assert_eq!(std::fs::read(&log).unwrap(), b"the log's bytes");
            assert_eq!(check(dir.path()).unwrap(), Checked::Current);
        }
    }

    fn entry(index: u64) -> crate::store::Entry {
        use crate::store::{Command, Proposal};
        crate::store::Entry {
            log_id: crate::store::LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Normal(Proposal {
                commands: vec![Command::Create {
                    object: vec![index as u8; 20],
                    uid: format!("uid-{index}"),
                    now: "2026-01-01T00:00:00Z".into(),
                }],
            }),
        }
    }

    /// A store of data format 1 in `dir`: a redb Raft log with entries 3-5
    /// after a purge at 2, voted in term 4.
    fn format_1_log(dir: &Path) {
        let entries: Vec<_> = (3..=5).map(entry).collect();
        log_store::write_legacy(
            &dir.join(LEGACY_LOG_FILE),
            Some(entries[0].log_id).map(|mut l| {
                l.index = 2;
                l
            }),
            &entries,
            openraft::Vote::new(4, 1),
            Some(entries[2].log_id),
        );
    }

    fn assert_upgraded_log(dir: &Path) {
        assert!(!dir.join(LEGACY_LOG_FILE).exists(), "the redb log is left");
        let log = crate::store::log_store::LogStore::open(&dir.join(LOG_FILE)).unwrap();
        assert_eq!(log.vote(), Some(openraft::Vote::new(4, 1)));
        let indexes: Vec<u64> = log
            .entries_after(None)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(indexes, vec![3, 4, 5]);
    }

    #[test]
    fn format_1_is_upgraded_its_raft_log_rewritten_and_the_redb_one_removed() {
        for marker in [
            Some("skiff-data-format: 1\nwritten-by: skiff 0.1.0\n"),
            None,
        ] {
            let dir = tempfile::tempdir().unwrap();
            format_1_log(dir.path());
            // A cluster reset's new store, complete and waiting aside.
            let aside = dir.path().join(ASIDE);
            std::fs::create_dir(&aside).unwrap();
            format_1_log(&aside);
            std::fs::write(aside.join(READY), "previous-1\n").unwrap();
            if let Some(marker) = marker {
                std::fs::write(dir.path().join(FILE), marker).unwrap();
            }
            assert_eq!(
                check(dir.path()).unwrap(),
                Checked::Upgraded { from: 1 },
                "{marker:?}"
            );
            let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
            assert_eq!(text, current_marker());
            assert_upgraded_log(dir.path());
            assert_upgraded_log(&aside);
            assert_eq!(check(dir.path()).unwrap(), Checked::Current);
        }
    }

    #[test]
    fn an_unfinished_cluster_reset_aside_does_not_hold_up_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        format_1_log(dir.path());
        // A reset of format 1 that crashed while writing its log: no READY,
        // and a log redb cannot read. The master removes it once started.
        let aside = dir.path().join(ASIDE);
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join(LEGACY_LOG_FILE), b"half").unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Upgraded { from: 1 });
        assert_upgraded_log(dir.path());
        assert!(!aside.join(LOG_FILE).exists());
    }

    #[test]
    fn an_upgrade_cut_short_after_its_marker_is_finished_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        format_1_log(dir.path());
        log_store::convert_legacy(
            &dir.path().join(LEGACY_LOG_FILE),
            &dir.path().join(LOG_FILE),
        )
        .unwrap();
        write_marker(dir.path()).unwrap();
        assert_eq!(check(dir.path()).unwrap(), Checked::Current);
        assert_upgraded_log(dir.path());
    }

    #[test]
    fn a_format_1_log_that_cannot_be_read_is_not_upgraded_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let marker = "skiff-data-format: 1\n";
        std::fs::write(dir.path().join(FILE), marker).unwrap();
        std::fs::write(dir.path().join(LEGACY_LOG_FILE), b"garbage").unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(matches!(e, DataFormatError::Upgrade { from: 1, .. }), "{e}");
        let message = e.to_string();
        for part in [
            &format!("cannot upgrade it from data format 1 to {CURRENT}"),
            "raft-log.redb",
            "next start tries again",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            marker
        );
        assert_eq!(
            std::fs::read(dir.path().join(LEGACY_LOG_FILE)).unwrap(),
            b"garbage"
        );
        assert!(!dir.path().join(LOG_FILE).exists());
    }

    #[test]
    fn a_newer_format_is_refused_naming_its_skiff_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let newer_format = CURRENT + 1;
        let marker = format!("skiff-data-format: {newer_format}\nwritten-by: skiff 0.3.0\n");
        std::fs::write(dir.path().join(FILE), &marker).unwrap();
        let e = check(dir.path()).unwrap_err();
        let newer = matches!(e, DataFormatError::Newer { found, .. } if found == newer_format);
        assert!(newer, "{e}");
        let message = e.to_string();
        for part in [
            &format!("this data dir was written by a newer skiff (skiff 0.3.0, data format {newer_format})"),
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
