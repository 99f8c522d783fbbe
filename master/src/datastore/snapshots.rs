//! `<data-dir>/snapshots/`: the snapshots a master keeps, one `.skiffsnap`
//! file each, named `NAME-<unix-time>`: those an operator asks for
//! (`skiff snapshot save`, `on-demand-…` unless named) and those the leader
//! takes on schedule (`scheduled-…`).
//!
//! A snapshot is consistent: [`ObjectStore::snapshot`] takes a checkpoint
//! of everything applied and reads it in one transaction. Its file is
//! written under a hidden temporary name, fsynced, and then linked into
//! place, never over another snapshot, so a listed snapshot is always
//! whole; a crash leaves at most a hidden `.tmp` file, which the next save
//! removes once it is an hour old. Snapshots hold every Secret, so the
//! directory is 0700 and the files 0600.
//!
//! Pruning keeps the newest `retention` scheduled snapshots and never
//! touches any other.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::snapshot_file::{self, SnapshotFileError, SnapshotInfo, DOT_EXTENSION};
use super::{data_format, sync_dir, unix_seconds, write_new_file};
use crate::store::state_machine::{ObjectStore, StateMachineError};
use crate::store::NodeId;

/// The snapshots' directory in a master's data dir.
pub const DIR: &str = "snapshots";
/// The name of a snapshot saved without `--name`.
pub const DEFAULT_NAME: &str = "on-demand";
/// The name of scheduled snapshots (before `-<unix-time>`), which no
/// operator's snapshot may take.
pub const SCHEDULED: &str = "scheduled";
/// The longest name an operator may give.
const MAX_NAME: usize = 100;
/// A leftover temporary file older than this is a crashed save's.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Numbers this process's temporary files, so that saves at the same time
/// never share one.
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Who asked for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An operator, with a name of their own.
    OnDemand,
    /// The leader's schedule; named [`SCHEDULED`].
    Scheduled,
}

/// Why a snapshot was not saved, listed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotsError {
    #[error("snapshot name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("a snapshot named {name} exists already on this master; wait a second or give another --name")]
    Exists { name: String },
    #[error("there is no snapshot named {name} in {dir} on this master; `skiff snapshot list` shows them")]
    NotFound { name: String, dir: PathBuf },
    #[error("snapshots directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("taking the snapshot: {0}")]
    Store(#[from] StateMachineError),
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error("the snapshot task failed: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, SnapshotsError>;

/// One snapshot file, as `list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `NAME-<unix-time>`, what `delete` takes.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Its header and recorded checksum, or why they cannot be read.
    pub info: std::result::Result<(SnapshotInfo, String), String>,
}

/// A snapshot just written.
#[derive(Debug, Clone)]
pub struct Saved {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub info: SnapshotInfo,
    /// Its SHA-256, in hex.
    pub checksum: String,
}

/// A master's snapshots directory.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

/// Whether `name` is a scheduled snapshot's (`scheduled-<unix-time>`).
fn is_scheduled(name: &str) -> bool {
    name.strip_prefix(SCHEDULED)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|time| time.parse::<u64>().is_ok())
}

/// The `<unix-time>` a snapshot's name ends with.
fn unix_time_of(name: &str) -> Option<u64> {
    name.rsplit_once('-').and_then(|(_, t)| t.parse().ok())
}

/// Checks a name an operator gives (`--name`) or a file name (`delete`):
/// letters, digits, `.`, `_`, `-`, starting with a letter or digit.
fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(SnapshotsError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 100 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return bad("use only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl SnapshotDir {
    /// The snapshots directory of the data dir `data_dir`.
    pub fn new(data_dir: &Path) -> SnapshotDir {
        SnapshotDir {
            path: data_dir.join(DIR),
        }
    }

    /// Where the snapshots are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl Fn(std::io::Error) -> SnapshotsError + '_ {
        move |source| SnapshotsError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{DOT_EXTENSION}"))
    }

    /// Saves a consistent snapshot of `store` as `NAME-<unix-time>`
    /// (`name` for an operator's, [`SCHEDULED`] for the schedule's), taken
    /// by master `node_id` at `now`. Blocking (disk I/O).
    pub fn save(
        &self,
        store: &ObjectStore,
        node_id: NodeId,
        name: &str,
        origin: Origin,
        now: SystemTime,
    ) -> Result<Saved> {
        let name = match origin {
            Origin::Scheduled => SCHEDULED,
            Origin::OnDemand => {
                check_name(name)?;
                if name.starts_with(SCHEDULED) {
                    return Err(SnapshotsError::BadName {
                        name: name.to_owned(),
                        reason: "names beginning with \"scheduled\" are kept for scheduled snapshots, which are pruned",
                    });
                }
                name
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(self.io())?;
        self.remove_stale_temporaries(now);
        let taken_at = unix_seconds(now);
        let full = format!("{name}-{taken_at}");
        let path = self.file(&full);
        if path.exists() {
            return Err(SnapshotsError::Exists { name: full });
        }
        let snapshot = store.snapshot()?;
        let info = SnapshotInfo {
            data_format: data_format::SNAPSHOT_STATE,
            written_by: super::this_skiff(),
            node_id,
            created_unix: taken_at,
            revision: snapshot.revision,
            objects: snapshot.objects,
            last_log_id: snapshot.meta.last_log_id,
            membership: snapshot.meta.last_membership.clone(),
        };
        let encoded = snapshot_file::encode(&info, &snapshot.data);
        drop(snapshot);
        let tmp = self.path.join(format!(
            ".{full}{DOT_EXTENSION}.{}.{}.tmp",
            std::process::id(),
            TEMPORARIES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_new_file(&tmp, &encoded.bytes, 0o600);
        // A link, unlike a rename, never replaces another snapshot.
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SnapshotsError::Exists { name: full });
            }
            Err(e) => return Err(self.io()(e)),
        }
        sync_dir(&self.path).map_err(self.io())?;
        Ok(Saved {
            name: full,
            path,
            size: encoded.bytes.len() as u64,
            info,
            checksum: encoded.checksum,
        })
    }

    /// Removes temporary files a crashed save left (an hour old or more).
    fn remove_stale_temporaries(&self, now: SystemTime) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if now.duration_since(modified).unwrap_or_default() >= STALE_TMP {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The snapshot files' names, without reading them.
    fn names(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io()(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(self.io())?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(DOT_EXTENSION) else {
                continue;
            };
            if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Every snapshot, oldest first, with its header (not checked against
    /// its data: restoring does that). Blocking (disk I/O).
    pub fn list(&self) -> Result<Vec<Listed>> {
        let mut listed = Vec::new();
        for name in self.names()? {
            let path = self.file(&name);
            let size = std::fs::metadata(&path).map_err(self.io())?.len();
            let info = snapshot_file::read_info(&path).map_err(|e| e.to_string());
            listed.push(Listed {
                name,
                path,
                size,
                info,
            });
        }
        let taken = |l: &Listed| match &l.info {
            Ok((info, _)) => info.created_unix,
            Err(_) => unix_time_of(&l.name).unwrap_or(0),
        };
        listed.sort_by(|a, b| taken(a).cmp(&taken(b)).then_with(|| a.name.cmp(&b.name)));
        Ok(listed)
    }

    /// Deletes the snapshot `name` (as `list` shows it; `.skiffsnap` may
    /// follow). Blocking.
    pub fn delete(&self, name: &str) -> Result<()> {
        let name = name.strip_suffix(DOT_EXTENSION).unwrap_or(name);
        check_name(name)?;
        match std::fs::remove_file(self.file(name)) {
            Ok(()) => sync_dir(&self.path).map_err(self.io()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SnapshotsError::NotFound {
                name: name.to_owned(),
                dir: self.path.clone(),
            }),
            Err(e) => Err(self.io()(e)),
        }
    }

    /// When the newest scheduled snapshot was taken, if there is one.
    pub fn newest_scheduled(&self) -> Result<Option<SystemTime>> {
        let newest = self
            .names()?
            .iter()
            .filter(|n| is_scheduled(n))
            .filter_map(|n| unix_time_of(n))
            .max();
        Ok(newest.map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t)))
    }

    /// Deletes the oldest scheduled snapshots beyond the newest
    /// `retention`; returns their names. Others are never touched.
    pub fn prune_scheduled(&self, retention: usize) -> Result<Vec<String>> {
        let mut scheduled: Vec<(u64, String)> = self
            .names()?
            .into_iter()
            .filter(|n| is_scheduled(n))
            .filter_map(|n| Some((unix_time_of(&n)?, n)))
            .collect();
        scheduled.sort();
        let excess = scheduled.len().saturating_sub(retention);
        let mut removed = Vec::new();
        for (_, name) in scheduled.into_iter().take(excess) {
            match std::fs::remove_file(self.file(&name)) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io()(e)),
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.path).map_err(self.io())?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::store::Command;
    use skiff_objects::Kind;

    fn at(unix: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
    }

    fn create_namespace(name: &str) -> Command {
        let namespace = skiff_objects::namespaces::named(name, "");
        Command::Create {
            object: namespace.encode_to_vec(),
            uid: format!("uid-{name}"),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn names(dir: &SnapshotDir) -> Vec<String> {
        dir.list().unwrap().into_iter().map(|l| l.name).collect()
    }

    #[test]
    fn a_saved_snapshot_is_listed_restorable_and_deleted() {
        let data = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(data.path()).unwrap();
        store.apply_commands(vec![create_namespace("a"), create_namespace("b")]);
        let dir = SnapshotDir::new(data.path());
        assert!(dir.list().unwrap().is_empty(), "no directory yet");

        let saved = dir
            .save(&store, 7, "before-upgrade", Origin::OnDemand, at(1_000))
            .unwrap();
        assert_eq!(saved.name, "before-upgrade-1000");
        assert_eq!((saved.info.revision, saved.info.objects), (2, 2));
        assert_eq!(saved.info.node_id, 7);
        let file = snapshot_file::read(&saved.path).unwrap();
        assert_eq!(
            (file.info, file.checksum),
            (saved.info.clone(), saved.checksum)
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(&saved.path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }

        // The same name in the same second would replace it: refused.
        let again = dir.save(&store, 7, "before-upgrade", Origin::OnDemand, at(1_000));
        assert!(matches!(again, Err(SnapshotsError::Exists { .. })));

        store.apply_commands(vec![create_namespace("c")]);
        let later = dir
            .save(&store, 7, DEFAULT_NAME, Origin::OnDemand, at(2_000))
            .unwrap();
        assert_eq!(later.info.revision, 3);
        let listed = dir.list().unwrap();
        let shown: Vec<(&str, u64)> = listed
            .iter()
            .map(|l| (l.name.as_str(), l.info.as_ref().unwrap().0.revision))
            .collect();
        assert_eq!(shown, [("before-upgrade-1000", 2), ("on-demand-2000", 3)]);
        assert_eq!(listed[0].size, saved.size);

        // Only complete snapshot files are listed.
        let half = dir.path().join(".on-demand-3000.skiffsnap.1.tmp");
        std::fs::write(half, b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert_eq!(names(&dir), ["before-upgrade-1000", "on-demand-2000"]);

        dir.delete("before-upgrade-1000").unwrap();
        dir.delete("on-demand-2000.skiffsnap").unwrap();
        assert!(names(&dir).is_empty());
        let gone = dir.delete("on-demand-2000").unwrap_err();
        assert!(matches!(gone, SnapshotsError::NotFound { .. }), "{gone}");
        assert!(gone.to_string().contains("skiff snapshot list"), "{gone}");
        assert!(store.get(Kind::Namespace, "", "c").unwrap().is_some());
    }

    #[test]
    fn names_are_checked() {
        let data = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(data.path()).unwrap();
        let dir = SnapshotDir::new(data.path());
        for name in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "white space",
            "scheduled",
        ] {
            let refused = dir.save(&store, 1, name, Origin::OnDemand, at(5));
            let bad = matches!(refused, Err(SnapshotsError::BadName { .. }));
            assert!(bad, "{name:?}: {refused:?}");
        }
        for name in ["../on-demand-5", "/etc/passwd"] {
            let refused = dir.delete(name);
            let bad = matches!(refused, Err(SnapshotsError::BadName { .. }));
            assert!(bad, "{name:?}: {refused:?}");
        }
        let scheduled = dir.save(&store, 1, "ignored", Origin::Scheduled, at(5));
        assert_eq!(scheduled.unwrap().name, "scheduled-5");
    }

    #[test]
    fn pruning_keeps_the_newest_scheduled_snapshots_and_nothing_else_is_touched() {
        let data = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::new(data.path());
        std::fs::create_dir_all(dir.path()).unwrap();
        let files = [
            "scheduled-100",
            "scheduled-700",
            "scheduled-300",
            "scheduled-200",
            "scheduled-600",
            "scheduled-500",
            "scheduled-400",
            "on-demand-50",
            "scheduled-by-hand-10",
            "scheduledx-20",
        ];
        for name in files {
            let file = dir.path().join(format!("{name}.skiffsnap"));
            std::fs::write(file, b"x").unwrap();
        }
        assert_eq!(dir.newest_scheduled().unwrap(), Some(at(700)));
        let mut removed = dir.prune_scheduled(5).unwrap();
        removed.sort();
        assert_eq!(removed, ["scheduled-100", "scheduled-200"]);
        let mut left = names(&dir);
        left.sort();
        assert_eq!(
            left,
            [
                "on-demand-50",
                "scheduled-300",
                "scheduled-400",
                "scheduled-500",
                "scheduled-600",
                "scheduled-700",
                "scheduled-by-hand-10",
                "scheduledx-20",
            ]
        );
        assert!(dir.prune_scheduled(5).unwrap().is_empty());
        assert_eq!(dir.prune_scheduled(1).unwrap().len(), 4);
        assert_eq!(dir.newest_scheduled().unwrap(), Some(at(700)));
    }
}
