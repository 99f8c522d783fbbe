//! The state machine's copy on disk: redb, written by checkpoints, not by
//! every apply.
//!
//! Every committed write is already durable in the Raft log (fsynced on a
//! quorum before anyone is answered), and the decoded cache holds the
//! current state in memory. So applying a batch only records which objects
//! it changed ([`Checkpoints::record`]); a background thread writes those,
//! with the applied position, revision and membership, in one durable redb
//! transaction about once a second under load ([`CHECKPOINT_EVERY`]), and
//! sooner when many changes wait ([`CHECKPOINT_CHANGES`]). An idle master
//! writes nothing.
//!
//! After a crash the master opens the last checkpoint, and openraft
//! re-applies the committed log entries after it (commands are
//! deterministic: the proposer chose uids and times). The log is purged
//! only up to a snapshot, and building a snapshot first takes a checkpoint
//! and then reads it, so the entries a restart needs are never purged.
//!
//! This is what keeps the apply path off the disk: one fsync per batch on
//! every member cost a quarter of the masters' CPU at 5,000 writes/s, and
//! doubled what an SD card is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use skiff_proto::api::{EventType, Object};

use super::{dberr, decode, decode_object, encode, AppliedState, Result, StoredEvent};

const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const LAST_APPLIED_KEY: &str = "last_applied";
const MEMBERSHIP_KEY: &str = "membership";
const REVISION_KEY: &str = "revision";

/// redb page cache for the state database. Reads are served by the object
/// cache, so this only has to hold the pages a checkpoint rewrites: the
/// tree's upper levels. At 4 MiB it held 2.4 MiB more of a scheduling
/// master's memory (`skiff-bench schedule`, 10,000 pods) with no change in
/// `skiff-bench store`.
const STATE_CACHE_BYTES: usize = 1024 * 1024;

/// How often waiting changes are written.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Changed objects that make the writer go before [`CHECKPOINT_EVERY`].
pub const CHECKPOINT_CHANGES: usize = 20_000;

/// Objects as stored: (key, prost-encoded object), in key order.
pub(super) type StoredObjects = Vec<(String, Vec<u8>)>;

/// What has been applied and not yet written.
#[derive(Default)]
struct Pending {
    /// Object key → its latest change (a delete removes the key).
    changes: HashMap<String, Arc<StoredEvent>>,
    /// The applied state after the latest change.
    state: AppliedState,
    /// Anything applied since the last checkpoint (membership and blank
    /// entries move the applied position without changing objects).
    dirty: bool,
}

struct Shared {
    db: Database,
    path: PathBuf,
    pending: Mutex<Pending>,
    /// Woken when many changes wait, or to stop.
    wake: Condvar,
    /// One checkpoint (or snapshot installation) at a time, in order.
    writing: Mutex<()>,
    stop: AtomicBool,
    /// How often the writer goes on its own.
    every: Duration,
    /// Tests: drop what waits instead of writing it, as a crash would.
    discard: AtomicBool,
}

/// The redb copy of the state and the thread that keeps it current.
pub(super) struct Checkpoints {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What a restart starts from: the state of the last checkpoint.
pub(super) struct Loaded {
    pub state: AppliedState,
    /// Every stored object, decoded, with its encoded size.
    pub objects: Vec<(Arc<Object>, usize)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checkpoints {
    /// Opens (or creates) `state.redb` in `dir`, reads the last checkpoint
    /// and starts the writer thread.
    pub fn open(dir: &Path, every: Duration) -> Result<(Checkpoints, Loaded)> {
        let path = dir.join(crate::store::STATE_FILE);
        let db = redb::Builder::new()
            .set_cache_size(STATE_CACHE_BYTES)
            .create(&path)
            .map_err(dberr)?;
        {
            let txn = db.begin_write().map_err(dberr)?;
            txn.open_table(OBJECTS).map_err(dberr)?;
            txn.open_table(META).map_err(dberr)?;
            txn.commit().map_err(dberr)?;
        }
        let loaded = read_all(&db)?;
        let shared = Arc::new(Shared {
            db,
            path,
            pending: Mutex::new(Pending {
                state: loaded.state.clone(),
                ..Pending::default()
            }),
            wake: Condvar::new(),
            writing: Mutex::new(()),
            stop: AtomicBool::new(false),
            every,
            discard: AtomicBool::new(false),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("state-checkpoint".into())
                .spawn(move || write_loop(&shared))
                .map_err(|source| super::StateMachineError::CheckpointThread { source })?
        };
        Ok((
            Checkpoints {
                shared,
                writer: Some(writer),
            },
            loaded,
        ))
    }

    /// Notes what one applied batch changed, and the state it leaves.
    pub fn record<'a>(
        &self,
        changes: impl Iterator<Item = (&'a str, &'a Arc<StoredEvent>)>,
        state: &AppliedState,
    ) {
        let mut pending = lock(&self.shared.pending);
        for (key, event) in changes {
            pending.changes.insert(key.to_owned(), event.clone());
        }
        pending.state = state.clone();
        pending.dirty = true;
        if pending.changes.len() >= CHECKPOINT_CHANGES {
            self.shared.wake.notify_one();
        }
    }

    /// Writes everything applied so far, durably, now.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.checkpoint()
    }

    /// A consistent copy of the last checkpoint: take one first to have
    /// everything applied so far.
    pub fn read(&self) -> Result<(AppliedState, StoredObjects)> {
        let txn = self.shared.db.begin_read().map_err(dberr)?;
        let state = read_state(&txn.open_table(META).map_err(dberr)?)?;
        let table = txn.open_table(OBJECTS).map_err(dberr)?;
        let mut objects = Vec::new();
        for item in table.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            objects.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok((state, objects))
    }

    /// Replaces everything with a snapshot's objects and `state`, durably;
    /// whatever was waiting is dropped, as the snapshot replaces it.
    pub fn replace_all(&self, objects: &[(String, Vec<u8>)], state: &AppliedState) -> Result<()> {
        let _writing = lock(&self.shared.writing);
        let txn = self.shared.db.begin_write().map_err(dberr)?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(dberr)?;
            table.retain(|_, _| false).map_err(dberr)?;
            for (k, v) in objects {
                table.insert(k.as_str(), v.as_slice()).map_err(dberr)?;
            }
            write_state(&mut txn.open_table(META).map_err(dberr)?, state)?;
        }
        txn.commit().map_err(dberr)?;
        let mut pending = lock(&self.shared.pending);
        pending.changes.clear();
        pending.state = state.clone();
        pending.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
impl Checkpoints {
    /// Makes dropping these lose what was not written, as a crash would.
    pub fn discard_on_drop(&self) {
        self.shared.discard.store(true, Ordering::SeqCst);
    }
}

impl Drop for Checkpoints {
    /// Stops the writer and writes what is left, so that a clean stop needs
    /// no replay.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _pending = lock(&self.shared.pending);
            self.shared.wake.notify_all();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if self.shared.discard.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.shared.checkpoint() {
            tracing::error!(error = %e, "final state checkpoint failed; the next start re-applies the log from the previous one");
        }
    }
}

impl Shared {
    fn checkpoint(&self) -> Result<()> {
        let _writing = lock(&self.writing);
        let (changes, state) = {
            let mut pending = lock(&self.pending);
            if !pending.dirty {
                return Ok(());
            }
            pending.dirty = false;
            (std::mem::take(&mut pending.changes), pending.state.clone())
        };
        let written = self.write(&changes, &state);
        if written.is_err() {
            // Keep them for the next try, behind anything newer.
            let mut pending = lock(&self.pending);
            for (key, event) in changes {
                pending.changes.entry(key).or_insert(event);
            }
            pending.dirty = true;
        }
        written
    }

    fn write(
        &self,
        changes: &HashMap<String, Arc<StoredEvent>>,
        state: &AppliedState,
    ) -> Result<()> {
        // In key order: each leaf page is then changed by one run of
        // writes and leaves redb's small write buffer once. In the map's
        // order, every write landed on another page, and pages pushed out
        // of the buffer were read back and written again, many times over
        // (16,000 page reads and writes a second at 7,000 writes/s).
        let mut ordered: Vec<(&String, &Arc<StoredEvent>)> = changes.iter().collect();
        ordered.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let txn = self.db.begin_write().map_err(dberr)?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(dberr)?;
            for (key, event) in ordered {
                if event.event_type == EventType::Deleted as i32 {
                    table.remove(key.as_str()).map_err(dberr)?;
                } else {
                    table
                        .insert(key.as_str(), &event.object[..])
                        .map_err(dberr)?;
                }
            }
            write_state(&mut txn.open_table(META).map_err(dberr)?, state)?;
        }
        txn.commit().map_err(dberr)
    }
}

fn write_loop(shared: &Shared) {
    loop {
        {
            let pending = lock(&shared.pending);
            let _ = shared.wake.wait_timeout_while(pending, shared.every, |p| {
                !shared.stop.load(Ordering::SeqCst) && p.changes.len() < CHECKPOINT_CHANGES
            });
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = shared.checkpoint() {
            tracing::error!(path = %shared.path.display(), error = %e, "state checkpoint failed; retrying in a second (the Raft log still holds every change)");
            // However many changes wait: a failing disk is not retried in
            // a tight loop.
            let pending = lock(&shared.pending);
            let _ = shared.wake.wait_timeout_while(pending, shared.every, |_| {
                !shared.stop.load(Ordering::SeqCst)
            });
        }
    }
}

fn read_all(db: &Database) -> Result<Loaded> {
    let txn = db.begin_read().map_err(dberr)?;
    let state = read_state(&txn.open_table(META).map_err(dberr)?)?;
    let table = txn.open_table(OBJECTS).map_err(dberr)?;
    let mut objects = Vec::new();
    for item in table.iter().map_err(dberr)? {
        let (_, v) = item.map_err(dberr)?;
        objects.push((Arc::new(decode_object(v.value())?), v.value().len()));
    }
    Ok(Loaded { state, objects })
}

fn read_state(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<AppliedState> {
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        Ok(meta.get(key).map_err(dberr)?.map(|v| v.value().to_vec()))
    };
    let mut state = AppliedState::default();
    if let Some(v) = get(LAST_APPLIED_KEY)? {
        state.last_applied = decode("last applied", &v)?;
    }
    if let Some(v) = get(MEMBERSHIP_KEY)? {
        state.membership = decode("membership", &v)?;
    }
    if let Some(v) = get(REVISION_KEY)? {
        state.revision = decode("revision", &v)?;
    }
    Ok(state)
}

fn write_state(meta: &mut redb::Table<'_, &str, &[u8]>, state: &AppliedState) -> Result<()> {
    meta.insert(LAST_APPLIED_KEY, encode(&state.last_applied).as_slice())
        .map_err(dberr)?;
    meta.insert(MEMBERSHIP_KEY, encode(&state.membership).as_slice())
        .map_err(dberr)?;
    meta.insert(REVISION_KEY, encode(&state.revision).as_slice())
        .map_err(dberr)?;
    Ok(())
}
