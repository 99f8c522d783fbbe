//! `--cluster-reset [--restore FILE]`, as k3s's: makes this master the only
//! member of a new one-member cluster, keeping the objects and their
//! revisions, from its own data or from a snapshot file. It runs while the
//! master is stopped; the master then exits and is started again without
//! the flag. Other masters rejoin with empty data dirs (`--join`).
//!
//! Its own data is the last checkpoint plus every entry of its Raft log
//! after it, committed or not as far as this master knew: a follower
//! learns of a commit a heartbeat late, so the entries past its commit
//! index were most likely acknowledged to clients; one that was not is a
//! write whose client saw it fail or time out, and so may or may not have
//! happened. A snapshot is checked whole (format, length, checksum)
//! before anything is touched.
//!
//! Either way the new store is built aside, in `<data-dir>/cluster-reset.tmp/`:
//! the state database and Raft snapshot at one new log position, whose
//! term is above any this master saw (nothing of the old cluster's log can
//! pass for the new one's), recording the one-member membership; and a
//! Raft log that starts there, empty. Only when all of it is written and
//! fsynced does a `READY` marker appear; then the old store files move to
//! `<data-dir>/pre-reset-<unix-time>/` (kept for the operator) and the new
//! ones into place, one rename each. A failure before `READY` leaves the
//! data dir as it was (a leftover is removed at the next start); a crash
//! after it is finished by the next start ([`finish_pending`]), before
//! anything is opened. The rest of the data dir (identity, certificates,
//! tokens, snapshots) stays.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::Flock;
use openraft::{CommittedLeaderId, Membership, Vote};

use super::snapshot_file::{self, SnapshotFileError};
use super::{sync_dir, unix_seconds, write_new_file, ASIDE, READY};
use crate::store::log_file;
use crate::store::log_store::{self, LogStore, LogStoreError};
use crate::store::state_machine::{ObjectStore, StateMachineError};
use crate::store::{
    LogId, MemberNode, NodeId, SnapshotMeta, StoredMembership, LOG_FILE, RAFT_SNAPSHOT_FILE,
    STATE_FILE,
};

/// The old store files go to `<data-dir>/pre-reset-<unix-time>/`.
const PREVIOUS_PREFIX: &str = "pre-reset-";
/// The files of a master's store; everything else in the data dir stays.
const STORE_FILES: [&str; 3] = [STATE_FILE, LOG_FILE, RAFT_SNAPSHOT_FILE];

/// What to reset, and to what.
#[derive(Debug, Clone)]
pub struct ResetRequest<'a> {
    pub data_dir: &'a Path,
    /// This master's id (kept).
    pub node_id: NodeId,
    /// The addresses this master advertises: the new membership's only
    /// member.
    pub me: MemberNode,
    /// A snapshot file to make the cluster from, instead of this master's
    /// own data.
    pub restore: Option<&'a Path>,
}

/// What a reset made.
#[derive(Debug, Clone)]
pub struct ResetOutcome {
    /// The revision kept.
    pub revision: u64,
    /// How many objects were kept.
    pub objects: u64,
    /// The new cluster's first log position.
    pub log_id: LogId,
    /// Where the replaced store files went, when there were any.
    pub previous: Option<PathBuf>,
    /// Entries of this master's log applied past its last checkpoint (0
    /// for a restore).
    pub replayed: usize,
}

/// Why a reset did not happen; the data dir was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} holds no store to reset (no {LOG_FILE} or {STATE_FILE}); to make a cluster from a snapshot, give --restore FILE")]
    NothingToReset { dir: PathBuf },
    #[error("the Raft log in {dir}: {source}; the reset runs while this master is stopped: stop it first")]
    Log {
        dir: PathBuf,
        #[source]
        source: LogStoreError,
    },
    #[error("the state database in {dir}: {source}; the reset runs while this master is stopped: stop it first")]
    State {
        dir: PathBuf,
        #[source]
        source: StateMachineError,
    },
    #[error("the Raft log in {dir} does not continue from its state database (the state ends at entry {applied}, the log goes on from entry {log_from}): this data dir is damaged; restore a snapshot instead (--restore FILE)")]
    Gap {
        dir: PathBuf,
        applied: String,
        log_from: u64,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    #[error("{path} marks an unfinished cluster reset but cannot be used ({reason}); move {aside} out of the data dir and run the reset again")]
    BadMarker {
        path: PathBuf,
        aside: PathBuf,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, ResetError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResetError {
    let path = path.to_owned();
    move |source| ResetError::Io { path, source }
}

/// What the new cluster is made from.
struct Source {
    /// The state machine's snapshot data.
    data: Vec<u8>,
    revision: u64,
    objects: u64,
    /// The last log index the data covers (or the old log held).
    last_index: u64,
    /// The highest term seen.
    term: u64,
}

/// Makes the data dir of `request` a one-member cluster's: see the module
/// docs. Blocking (disk I/O); the master must be stopped.
pub fn reset(request: &ResetRequest<'_>) -> Result<ResetOutcome> {
    let dir = request.data_dir;
    // A master running on this data dir holds its log's lock: refused
    // before anything is read or moved. Held to the end, so that no master
    // starts on the data dir meanwhile.
    let held = lock_log(dir)?;
    finish_pending(dir)?;
    let (source, replayed, held) = match request.restore {
        Some(file) => {
            let mut source = from_snapshot(file)?;
            let (term, held) = old_term(dir, held)?;
            source.term = source.term.max(term);
            (source, 0, held)
        }
        None => from_own_data(dir, held)?,
    };
    let term = source.term + 1;
    let log_id = LogId::new(
        CommittedLeaderId::new(term, request.node_id),
        source.last_index + 1,
    );
    let previous_name = format!("{PREVIOUS_PREFIX}{}", unix_seconds(SystemTime::now()));
    let aside = dir.join(ASIDE);
    if let Err(e) = build(&aside, request, log_id, &source, &previous_name) {
        let _ = std::fs::remove_dir_all(&aside);
        return Err(e);
    }
    let previous = swap(dir, &previous_name)?;
    drop(held);
    Ok(ResetOutcome {
        revision: source.revision,
        objects: source.objects,
        log_id,
        previous,
        replayed,
    })
}

/// The highest term in the log (its vote, its last entry).
fn highest_term(log: &LogStore) -> u64 {
    let vote = log.vote().map_or(0, |v| v.leader_id.term);
    let last = log.last_log_id().map_or(0, |l| l.leader_id.term);
    vote.max(last)
}

/// The data dir's log lock ([`log_file::lock`]): refused while a master
/// runs on it.
fn lock_log(dir: &Path) -> Result<Flock<File>> {
    log_file::lock(&dir.join(LOG_FILE)).map_err(|source| ResetError::Log {
        dir: dir.to_owned(),
        source: source.into(),
    })
}

/// Closes `log`, keeping the lock it was opened with (or taking it again,
/// if its writer did not end well).
fn close_keeping_lock(dir: &Path, log: LogStore) -> Result<Flock<File>> {
    match log.close() {
        Some(held) => Ok(held),
        None => lock_log(dir),
    }
}

/// The highest term of the data dir's old log, when it has one that can
/// be read (a restore does not need it to be); and the lock, still held.
fn old_term(dir: &Path, held: Flock<File>) -> Result<(u64, Flock<File>)> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        return Ok((0, held));
    }
    match LogStore::open_locked(&path, held) {
        Ok(log) => {
            let term = highest_term(&log);
            Ok((term, close_keeping_lock(dir, log)?))
        }
        Err(e) => {
            tracing::warn!(log = %path.display(), error = %e, "the old Raft log cannot be read; it is replaced anyway");
            Ok((0, lock_log(dir)?))
        }
    }
}

fn from_snapshot(file: &Path) -> Result<Source> {
    let contents = snapshot_file::read(file)?;
    let info = contents.info;
    Ok(Source {
        data: contents.data,
        revision: info.revision,
        objects: info.objects,
        last_index: info.last_log_id.map_or(0, |l| l.index),
        term: info.last_log_id.map_or(0, |l| l.leader_id.term),
    })
}

/// The last checkpoint with the log after it applied; how many entries
/// that was; and the log's lock, still held.
fn from_own_data(dir: &Path, held: Flock<File>) -> Result<(Source, usize, Flock<File>)> {
    let log_path = dir.join(LOG_FILE);
    if !log_path.exists() && !dir.join(STATE_FILE).exists() {
        return Err(ResetError::NothingToReset {
            dir: dir.to_owned(),
        });
    }
    let state_error = |source| ResetError::State {
        dir: dir.to_owned(),
        source,
    };
    let log = LogStore::open_locked(&log_path, held).map_err(|source| ResetError::Log {
        dir: dir.to_owned(),
        source,
    })?;
    let store = ObjectStore::open(dir).map_err(state_error)?;
    let applied = store.last_applied().map(|l| l.index);
    let log_last = log.last_log_id().map(|l| l.index);
    let entries = log
        .entries_after(applied)
        .map_err(|source| ResetError::Log {
            dir: dir.to_owned(),
            source,
        })?;
    let continues = match entries.first() {
        Some(first) => first.log_id.index == applied.map_or(0, |i| i + 1),
        None => log_last <= applied,
    };
    if !continues {
        let log_from = entries
            .first()
            .map_or(log_last.map_or(0, |i| i + 1), |e| e.log_id.index);
        return Err(ResetError::Gap {
            dir: dir.to_owned(),
            applied: applied.map_or("none".to_owned(), |i| i.to_string()),
            log_from,
        });
    }
    let replayed = entries.len();
    let log_term = highest_term(&log);
    let held = close_keeping_lock(dir, log)?;
    if replayed > 0 {
        store.apply_entries(entries).map_err(state_error)?;
    }
    let snapshot = store.snapshot().map_err(state_error)?;
    drop(store);
    let last = snapshot.meta.last_log_id;
    let source = Source {
        data: snapshot.data,
        revision: snapshot.revision,
        objects: snapshot.objects,
        last_index: last.map_or(0, |l| l.index).max(log_last.unwrap_or(0)),
        term: log_term.max(last.map_or(0, |l| l.leader_id.term)),
    };
    Ok((source, replayed, held))
}

/// Writes the new store into `aside` (which must not exist), `READY` last.
fn build(
    aside: &Path,
    request: &ResetRequest<'_>,
    log_id: LogId,
    source: &Source,
    previous_name: &str,
) -> Result<()> {
    std::fs::create_dir(aside).map_err(io(aside))?;
    let id = request.node_id;
    let membership: Membership<NodeId, MemberNode> = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, request.me.clone())]),
    );
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!(
            "cluster-reset-{}-{}-{}",
            log_id.leader_id, log_id.index, source.revision
        ),
    };
    let state_error = |source| ResetError::State {
        dir: aside.to_owned(),
        source,
    };
    {
        let store = ObjectStore::open(aside).map_err(state_error)?;
        store.install(&meta, &source.data).map_err(state_error)?;
    }
    let vote = Vote::new(log_id.leader_id.term, id);
    let log_path = aside.join(LOG_FILE);
    log_store::write_new(&log_path, Some(log_id), &[], vote, Some(log_id)).map_err(|source| {
        ResetError::Log {
            dir: aside.to_owned(),
            source,
        }
    })?;
    sync_dir(aside).map_err(io(aside))?;
    let ready = aside.join(READY);
    let marker = format!("{previous_name}\n");
    write_new_file(&ready, marker.as_bytes(), 0o644).map_err(io(&ready))?;
    sync_dir(aside).map_err(io(aside))
}

/// Moves the old store files to `<dir>/<previous_name>/` and the new ones
/// from [`ASIDE`] into place, then removes [`ASIDE`]. Each move is one
/// rename and a file moved already is skipped, so running this again
/// finishes an interrupted swap.
fn swap(dir: &Path, previous_name: &str) -> Result<Option<PathBuf>> {
    let aside = dir.join(ASIDE);
    let previous = dir.join(previous_name);
    for file in STORE_FILES {
        let new = aside.join(file);
        if !new.exists() {
            continue;
        }
        let current = dir.join(file);
        if current.exists() {
            std::fs::create_dir_all(&previous).map_err(io(&previous))?;
            std::fs::rename(&current, previous.join(file)).map_err(io(&current))?;
        }
        std::fs::rename(new.as_path(), current.as_path()).map_err(io(&new))?;
    }
    sync_dir(dir).map_err(io(dir))?;
    if previous.exists() {
        sync_dir(&previous).map_err(io(&previous))?;
    }
    std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
    sync_dir(dir).map_err(io(dir))?;
    Ok(previous.exists().then_some(previous))
}

/// Finishes a cluster reset that a crash interrupted after its new store
/// was complete, or removes one that never was (nothing had changed
/// then). Run before anything in the data dir is opened; returns where the
/// old store files went when it finished one.
pub fn finish_pending(dir: &Path) -> Result<Option<PathBuf>> {
    let aside = dir.join(ASIDE);
    if !aside.exists() {
        return Ok(None);
    }
    let ready = aside.join(READY);
    let text = match std::fs::read_to_string(&ready) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                dir = %aside.display(),
                "removing an unfinished cluster reset; it had changed nothing"
            );
            std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
            return Ok(None);
        }
        Err(e) => return Err(io(&ready)(e)),
    };
    let previous_name = text.trim();
    let named = previous_name
        .strip_prefix(PREVIOUS_PREFIX)
        .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()));
    if !named {
        return Err(ResetError::BadMarker {
            path: ready,
            aside,
            reason: format!("it names {previous_name:?}, not {PREVIOUS_PREFIX}<unix-time>"),
        });
    }
    tracing::warn!(
        dir = %dir.display(),
        previous = previous_name,
        "finishing a cluster reset that was interrupted"
    );
    swap(dir, previous_name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{EntryPayload, ServerState};
    use prost::Message;
    use skiff_proto::v1;

    use super::*;
    use crate::datastore::snapshots::{Origin, SnapshotDir};
    use crate::store::{Command, Entry, Proposal};
    use skiff_objects::{IntoObject, Kind, ObjectExt};

    fn node(host: &str) -> MemberNode {
        MemberNode {
            raft_addr: format!("{host}:6444"),
            api_addr: format!("{host}:6443"),
        }
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn create(object: skiff_proto::api::Object) -> Command {
        Command::Create {
            uid: format!("uid-{}", object.meta().name),
            object: object.encode_to_vec(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn namespace(name: &str) -> Command {
        create(skiff_objects::namespaces::named(name, ""))
    }

    fn pod(name: &str) -> Command {
        create(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    fn normal(at: LogId, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: at,
            payload: EntryPayload::Normal(Proposal { commands }),
        }
    }

    fn has_pod(store: &ObjectStore, name: &str) -> bool {
        store.get(Kind::Pod, "default", name).unwrap().is_some()
    }

    /// The members a store records: id → node.
    fn members(store: &ObjectStore) -> Vec<(NodeId, MemberNode)> {
        let membership = store.membership();
        let nodes = membership.nodes().map(|(id, n)| (*id, n.clone()));
        nodes.collect()
    }

    /// A stopped master's data dir, as a crash leaves it: member 1 of a
    /// two-member cluster, its checkpoint at entry 1, its log at entry 2
    /// (committed as far as it knows: entry 1).
    fn crashed_master(dir: &Path) {
        let two: Membership<NodeId, MemberNode> = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([(1, node("10.0.0.1")), (2, node("10.0.0.2"))]),
        );
        let entries = vec![
            Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Membership(two),
            },
            normal(log_id(1, 1), vec![namespace("default"), pod("a")]),
            normal(log_id(1, 2), vec![pod("b")]),
        ];
        {
            let store = ObjectStore::open(dir).unwrap();
            store.apply_entries(entries[..2].to_vec()).unwrap();
        }
        let vote = Vote::new_committed(1, 1);
        let log = dir.join(LOG_FILE);
        log_store::write_new(&log, None, &entries, vote, Some(log_id(1, 1))).unwrap();
    }

    #[test]
    fn a_reset_of_a_data_dir_whose_log_is_open_is_refused_and_moves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        crashed_master(dir);
        // A master running on it holds its log open.
        let running = LogStore::open(&dir.join(LOG_FILE)).unwrap();
        let snapshot = dir.join("some.skiffsnap");
        for restore in [None, Some(snapshot.as_path())] {
            let request = ResetRequest {
                data_dir: dir,
                node_id: 1,
                me: node("192.168.1.10"),
                restore,
            };
            let e = reset(&request).err().unwrap();
            assert!(e.to_string().contains("another process has it open"), "{e}");
            assert!(!dir.join(ASIDE).exists());
            assert!(dir.join(LOG_FILE).exists() && dir.join(STATE_FILE).exists());
        }
        drop(running);
    }

    #[tokio::test]
    async fn a_reset_keeps_every_object_and_revision_and_the_master_leads_alone() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        crashed_master(dir);
        let me = node("192.168.1.10");
        let request = ResetRequest {
            data_dir: dir,
            node_id: 1,
            me: me.clone(),
            restore: None,
        };
        let outcome = reset(&request).unwrap();
        assert_eq!((outcome.revision, outcome.objects), (3, 3));
        assert_eq!(outcome.replayed, 1, "entry 2, past the checkpoint");
        assert_eq!(outcome.log_id, LogId::new(CommittedLeaderId::new(2, 1), 3));
        assert!(!dir.join(ASIDE).exists());
        let previous = outcome.previous.expect("the old files kept");
        assert!(previous.join(LOG_FILE).exists() && previous.join(STATE_FILE).exists());

        let store = ObjectStore::open(dir).unwrap();
        assert_eq!(store.revision(), 3);
        assert!(has_pod(&store, "a") && has_pod(&store, "b"));
        assert_eq!(members(&store), [(1, me.clone())]);
        assert_eq!(store.last_applied(), Some(outcome.log_id));
        let log = LogStore::open(&dir.join(LOG_FILE)).unwrap();
        assert_eq!(log.vote(), Some(Vote::new(2, 1)));
        assert_eq!(log.last_log_id(), Some(outcome.log_id));

        // openraft takes it: the one member elects itself and takes writes.
        let raft = crate::store::test_raft(log, store.clone()).await;
        assert!(raft.is_initialized().await.unwrap());
        raft.wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "the only member leads")
            .await
            .unwrap();
        let written = raft
            .client_write(Proposal {
                commands: vec![pod("c")],
            })
            .await
            .unwrap();
        let applied = written.data[0].clone().unwrap();
        assert_eq!(applied.revision, 4);
        assert!(has_pod(&store, "c"));
        let _ = raft.shutdown().await;
    }

    #[test]
    fn a_data_dir_without_a_store_has_nothing_to_reset() {
        let data = tempfile::tempdir().unwrap();
        let request = ResetRequest {
            data_dir: data.path(),
            node_id: 1,
            me: node("10.0.0.1"),
            restore: None,
        };
        let e = reset(&request).unwrap_err();
        assert!(matches!(e, ResetError::NothingToReset { .. }), "{e}");
        assert!(e.to_string().contains("--restore"), "{e}");
    }

    #[test]
    fn a_restore_makes_the_cluster_from_the_snapshot_and_a_damaged_one_changes_nothing() {
        // The snapshot, from another store.
        let source_dir = tempfile::tempdir().unwrap();
        let saved = {
            let store = ObjectStore::open(source_dir.path()).unwrap();
            store.apply_commands(vec![namespace("default"), pod("kept")]);
            let snapshots = SnapshotDir::new(source_dir.path());
            let now = SystemTime::now();
            snapshots
                .save(&store, 9, "backup", Origin::OnDemand, now)
                .unwrap()
        };
        // The data dir it is restored into, with a store of its own.
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        {
            let store = ObjectStore::open(dir).unwrap();
            store.apply_commands(vec![namespace("replaced")]);
        }
        let log = dir.join(LOG_FILE);
        log_store::write_new(&log, None, &[], Vote::new(5, 1), None).unwrap();

        let mut damaged = std::fs::read(&saved.path).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x01;
        let damaged_path = source_dir.path().join("damaged.skiffsnap");
        std::fs::write(&damaged_path, damaged).unwrap();
        let me = node("10.0.0.1");
        let mut request = ResetRequest {
            data_dir: dir,
            node_id: 1,
            me: me.clone(),
            restore: Some(&damaged_path),
        };
        let e = reset(&request).unwrap_err();
        assert!(e.to_string().contains("fails its checksum"), "{e}");
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let changed = left
            .iter()
            .any(|f| f == ASIDE || f.starts_with(PREVIOUS_PREFIX));
        assert!(!changed, "{left:?}");
        {
            let store = ObjectStore::open(dir).unwrap();
            let kept = store.get(Kind::Namespace, "", "replaced").unwrap();
            assert!(kept.is_some(), "the data dir changed");
        }

        request.restore = Some(&saved.path);
        let outcome = reset(&request).unwrap();
        assert_eq!(outcome.revision, saved.info.revision);
        assert_eq!(outcome.log_id.leader_id.term, 6, "above the old log's vote");
        let store = ObjectStore::open(dir).unwrap();
        assert!(has_pod(&store, "kept"));
        assert!(store
            .get(Kind::Namespace, "", "replaced")
            .unwrap()
            .is_none());
        assert_eq!(store.revision(), saved.info.revision);
        assert_eq!(members(&store), [(1, me)]);
    }

    #[test]
    fn an_interrupted_swap_is_finished_and_an_unfinished_build_discarded() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        let aside = dir.join(ASIDE);
        std::fs::create_dir(&aside).unwrap();
        for file in STORE_FILES {
            std::fs::write(dir.join(file), "old").unwrap();
            std::fs::write(aside.join(file), "new").unwrap();
        }
        std::fs::write(aside.join(READY), "pre-reset-123\n").unwrap();
        // The crash: the state database swapped, the log half-way (moved
        // out, not yet in).
        let previous = dir.join("pre-reset-123");
        std::fs::create_dir(&previous).unwrap();
        for (from, to) in [
            (dir.join(STATE_FILE), previous.join(STATE_FILE)),
            (aside.join(STATE_FILE), dir.join(STATE_FILE)),
            (dir.join(LOG_FILE), previous.join(LOG_FILE)),
        ] {
            std::fs::rename(from, to).unwrap();
        }
        assert_eq!(finish_pending(dir).unwrap(), Some(previous.clone()));
        for file in STORE_FILES {
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), "new");
            let old = std::fs::read_to_string(previous.join(file)).unwrap();
            assert_eq!(old, "old");
        }
        assert!(!aside.exists());
        assert_eq!(finish_pending(dir).unwrap(), None);

        // Never finished building: dropped, and nothing else touched.
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join(STATE_FILE), "half").unwrap();
        assert_eq!(finish_pending(dir).unwrap(), None);
        assert!(!aside.exists());
        let state = std::fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        assert_eq!(state, "new");
    }
}
