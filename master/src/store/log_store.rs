//! The Raft log, kept in redb with group commit.
//!
//! Appends return at once; a dedicated writer thread gathers every append
//! (and vote, truncate and purge) that is waiting, writes them in one redb
//! transaction, fsyncs once, and only then tells openraft the entries are
//! durable. Under load many client writes share one fsync, so durability
//! costs latency but not throughput.
//!
//! The newest entries are also kept in memory, so that applying them and
//! replicating them to followers that keep up never touches the disk: every
//! entry not yet both durable and committed, and the committed ones up to
//! [`LOG_MEMORY_BYTES`] in all. Older entries are read back from redb (a
//! follower catching up). openraft purges the log after each snapshot,
//! which keeps the file bounded too.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, Vote};
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{storage_io_error, Entry, LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

/// redb page cache for the log database. Entries are read from the
/// [`LogCache`] while they are new, so redb is read only for older ones (a
/// follower catching up, a restart); 4 MiB held 3.5 MiB more of a master's
/// memory after 30,000 writes, with no change in `skiff-bench store`.
const LOG_CACHE_BYTES: usize = 1024 * 1024;

/// Most operations gathered into one transaction.
const MAX_BATCH: usize = 8192;

/// Encoded bytes of durable, committed entries kept in memory besides the
/// newest one. Entries are batches of writes, so this is about a thousand
/// writes (150 ms at 7,000 writes/s): what apply and replication need
/// right after a commit. 4 MiB held 4.9 MiB more of a scheduling master's
/// memory with no change in `skiff-bench store`'s three-master rate or p99.
pub const LOG_MEMORY_BYTES: usize = 1024 * 1024;

/// Errors of the log store's own making (openraft gets them as StorageError).
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("raft log database: {0}; check that the data directory is writable and that no other skiff master uses it")]
    Db(Box<redb::Error>),
    #[error("raft log: cannot decode the stored {what}: {source}; the log is damaged or was written by another skiff version: restore the data directory from a backup, or join this master to the cluster again with an empty one")]
    Decode {
        what: &'static str,
        source: bincode::Error,
    },
    #[error(
        "raft log: cannot start its writer thread: {0}; the system is short of threads or memory"
    )]
    WriterThread(std::io::Error),
    #[error("the raft log writer thread has stopped, so nothing more can be written to the log; see the error logged before this one, then restart this master")]
    WriterGone,
    #[error(transparent)]
    Write(#[from] LogWriteError),
}

/// Why the writer thread could not make a batch of writes durable. A batch
/// is one redb transaction, so nothing in it was written; every operation in
/// it is answered with this same error, hence `Clone` (the redb error is
/// shared). Once the log cannot be written, this master cannot take part in
/// Raft until it is restarted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogWriteError {
    #[error("raft log {path}: cannot start a write transaction: {source}; check that the disk holding it is writable and reports no I/O errors, then restart this master")]
    Begin {
        path: PathBuf,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot write entry {index}, so its whole batch of writes was dropped: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    Append {
        path: PathBuf,
        index: u64,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot remove the entries from index {index} on, so its whole batch of writes was dropped: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    Truncate {
        path: PathBuf,
        index: u64,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot purge the entries up to index {index}, so its whole batch of writes was dropped: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    Purge {
        path: PathBuf,
        index: u64,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot save the vote, so its whole batch of writes was dropped: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    SaveVote {
        path: PathBuf,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot save the committed position, so its whole batch of writes was dropped: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    SaveCommitted {
        path: PathBuf,
        source: Arc<redb::Error>,
    },
    #[error("raft log {path}: cannot commit (fsync) a batch of {ops} writes: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    Commit {
        path: PathBuf,
        ops: usize,
        source: Arc<redb::Error>,
    },
}

impl From<redb::Error> for LogStoreError {
    fn from(e: redb::Error) -> Self {
        LogStoreError::Db(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, LogStoreError>;

#[derive(Default)]
struct LogCache {
    /// The newest entries (see [`LogCache::evict`]), with their encoded
    /// sizes; older ones are only on disk.
    entries: BTreeMap<u64, (Entry, usize)>,
    /// Sum of the encoded sizes in `entries`.
    bytes: usize,
    /// The highest index known to be written durably.
    flushed: Option<u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

impl LogCache {
    fn insert(&mut self, index: u64, entry: Entry, bytes: usize) {
        if let Some((_, old)) = self.entries.insert(index, (entry, bytes)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
    }

    /// Drops every entry from `index` on.
    fn split_off(&mut self, index: u64) {
        let gone = self.entries.split_off(&index);
        self.bytes -= gone.values().map(|(_, b)| b).sum::<usize>();
    }

    /// Drops every entry up to `index`.
    fn drop_through(&mut self, index: u64) {
        let keep = self.entries.split_off(&(index + 1));
        self.entries = keep;
        self.bytes = self.entries.values().map(|(_, b)| b).sum();
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|(e, _)| *e.get_log_id())
            .or(self.last_purged)
    }

    /// Forgets the oldest entries beyond [`LOG_MEMORY_BYTES`], but only
    /// ones that are durable (so a read finds them on disk) and older than
    /// the committed one, which stays: a truncation only ever removes
    /// entries after it, so what is kept is never emptied by one and always
    /// names the last log id.
    fn evict(&mut self) {
        let below = match (self.flushed, self.committed) {
            (Some(flushed), Some(committed)) => flushed.saturating_add(1).min(committed.index),
            _ => return,
        };
        while self.bytes > LOG_MEMORY_BYTES && self.entries.len() > 1 {
            let Some((&index, &(_, bytes))) = self.entries.iter().next() else {
                break;
            };
            if index >= below {
                break;
            }
            self.entries.remove(&index);
            self.bytes -= bytes;
        }
    }
}

/// What the writer thread answers for each batch.
type BatchResult = std::result::Result<(), LogWriteError>;

enum WriteOp {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    Truncate(u64, oneshot::Sender<BatchResult>),
    Purge(LogId),
    SaveVote(Vote<NodeId>, oneshot::Sender<BatchResult>),
    SaveCommitted(Option<LogId>),
}

/// The redb-backed Raft log.
pub struct LogStore {
    cache: Arc<Mutex<LogCache>>,
    db: Arc<Database>,
    writer: mpsc::Sender<WriteOp>,
}

/// A read handle on the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<Mutex<LogCache>>,
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log at `path` and loads it.
    pub fn open(path: &Path) -> Result<LogStore> {
        // The log is read from disk only at start; a small page cache will do.
        let db = redb::Builder::new()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(path)
            .map_err(redb::Error::from)?;
        let mut cache = LogCache::default();
        {
            let txn = db.begin_write().map_err(redb::Error::from)?;
            {
                // Creating the tables here means reads never see them missing.
                let log = txn.open_table(LOG).map_err(redb::Error::from)?;
                let meta = txn.open_table(META).map_err(redb::Error::from)?;
                for item in log.iter().map_err(redb::Error::from)? {
                    let (k, v) = item.map_err(redb::Error::from)?;
                    let entry: Entry = bincode::deserialize(v.value()).map_err(|source| {
                        LogStoreError::Decode {
                            what: "log entry",
                            source,
                        }
                    })?;
                    cache.insert(k.value(), entry, v.value().len());
                }
                let read_meta = |key: &str| -> Result<Option<Vec<u8>>> {
                    Ok(meta
                        .get(key)
                        .map_err(redb::Error::from)?
                        .map(|v| v.value().to_vec()))
                };
                if let Some(v) = read_meta(VOTE_KEY)? {
                    cache.vote =
                        Some(
                            bincode::deserialize(&v).map_err(|source| LogStoreError::Decode {
                                what: "vote",
                                source,
                            })?,
                        );
                }
                if let Some(v) = read_meta(COMMITTED_KEY)? {
                    cache.committed =
                        bincode::deserialize(&v).map_err(|source| LogStoreError::Decode {
                            what: "committed",
                            source,
                        })?;
                }
                if let Some(v) = read_meta(PURGED_KEY)? {
                    cache.last_purged =
                        bincode::deserialize(&v).map_err(|source| LogStoreError::Decode {
                            what: "last purged",
                            source,
                        })?;
                }
            }
            txn.commit().map_err(redb::Error::from)?;
        }
        // Everything read back is durable.
        cache.flushed = cache.entries.keys().next_back().copied();
        cache.evict();
        let db = Arc::new(db);
        let cache = Arc::new(Mutex::new(cache));
        let (tx, rx) = mpsc::channel();
        let log_path = path.to_owned();
        {
            let (db, cache) = (db.clone(), cache.clone());
            std::thread::Builder::new()
                .name("raft-log-writer".to_owned())
                .spawn(move || write_loop(&db, &cache, log_path, rx))
                .map_err(LogStoreError::WriterThread)?;
        }
        Ok(LogStore {
            cache,
            db,
            writer: tx,
        })
    }

    /// The vote this log holds, if any.
    pub fn vote(&self) -> Option<Vote<NodeId>> {
        self.lock().vote
    }

    /// The position of the last entry, or of the last one purged when
    /// none is kept.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().last_log_id()
    }

    /// Every entry kept after index `after` (every one for `None`), in
    /// order: what `--cluster-reset` replays onto a stopped master's last
    /// checkpoint.
    pub fn entries_after(&self, after: Option<u64>) -> Result<Vec<Entry>> {
        entries_in(
            &self.cache,
            &self.db,
            after.map_or(0, |i| i.saturating_add(1))..,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogCache> {
        lock_cache(&self.cache)
    }

    fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).map_err(|_| LogStoreError::WriterGone)
    }
}

/// Writes a new Raft log at `path`, where none is yet: `entries` (in
/// order, following `purged`), everything up to `purged` counted as
/// purged behind a snapshot, `vote` and `committed`, in one durable
/// transaction. `--cluster-reset` starts a one-member cluster's log this
/// way, with no entries.
pub fn write_new(
    path: &Path,
    purged: Option<LogId>,
    entries: &[Entry],
    vote: Vote<NodeId>,
    committed: Option<LogId>,
) -> Result<()> {
    let db = redb::Builder::new()
        .set_cache_size(LOG_CACHE_BYTES)
        .create(path)
        .map_err(redb::Error::from)?;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut log = txn.open_table(LOG).map_err(redb::Error::from)?;
        for entry in entries {
            log.insert(entry.get_log_id().index, encode(entry).as_slice())
                .map_err(redb::Error::from)?;
        }
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        meta.insert(PURGED_KEY, encode(&purged).as_slice())
            .map_err(redb::Error::from)?;
        meta.insert(VOTE_KEY, encode(&vote).as_slice())
            .map_err(redb::Error::from)?;
        meta.insert(COMMITTED_KEY, encode(&committed).as_slice())
            .map_err(redb::Error::from)?;
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}

fn lock_cache(cache: &Mutex<LogCache>) -> std::sync::MutexGuard<'_, LogCache> {
    // A panic while holding the lock cannot leave the map half-updated in a
    // way later readers care about, so a poisoned lock is still usable.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer thread: one redb transaction and one fsync per batch.
fn write_loop(db: &Database, cache: &Mutex<LogCache>, path: PathBuf, rx: mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let outcome = write_batch(db, &path, &ops);
        if outcome.is_ok() {
            // What is on disk now, in the order the batch wrote it: an
            // append makes everything up to its last entry durable, a
            // truncation takes back what it removed. Done before anyone is
            // answered, so an append after a truncation never meets a
            // durable mark above what is on disk.
            let mut cache = lock_cache(cache);
            for op in &ops {
                match op {
                    WriteOp::Append(entries, _) => {
                        if let Some((index, _)) = entries.last() {
                            cache.flushed = Some(*index);
                        }
                    }
                    WriteOp::Truncate(from, _) => {
                        cache.flushed = cache.flushed.map(|f| f.min(from.saturating_sub(1)));
                    }
                    _ => {}
                }
            }
            cache.evict();
        }
        for op in ops {
            match op {
                WriteOp::Append(_, callback) => {
                    callback.log_io_completed(outcome.clone().map_err(std::io::Error::other))
                }
                WriteOp::Truncate(_, done) | WriteOp::SaveVote(_, done) => {
                    let _ = done.send(outcome.clone());
                }
                WriteOp::Purge(_) | WriteOp::SaveCommitted(_) => {
                    if let Err(e) = &outcome {
                        tracing::error!(error = %e, "raft log write failed");
                    }
                }
            }
        }
    }
}

/// Writes `ops` in one transaction on the log at `path`.
fn write_batch(db: &Database, path: &Path, ops: &[WriteOp]) -> BatchResult {
    let begin = |e: redb::Error| LogWriteError::Begin {
        path: path.to_owned(),
        source: Arc::new(e),
    };
    let txn = db.begin_write().map_err(|e| begin(e.into()))?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| begin(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| begin(e.into()))?;
        for op in ops {
            match op {
                WriteOp::Append(entries, _) => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice()).map_err(|e| {
                            LogWriteError::Append {
                                path: path.to_owned(),
                                index: *index,
                                source: shared(e),
                            }
                        })?;
                    }
                }
                WriteOp::Truncate(from, _) => {
                    log.retain_in(*from.., |_, _| false)
                        .map_err(|e| LogWriteError::Truncate {
                            path: path.to_owned(),
                            index: *from,
                            source: shared(e),
                        })?;
                }
                WriteOp::Purge(upto) => {
                    let purge_failed = |e: redb::StorageError| LogWriteError::Purge {
                        path: path.to_owned(),
                        index: upto.index,
                        source: shared(e),
                    };
                    log.retain_in(..=upto.index, |_, _| false)
                        .map_err(purge_failed)?;
                    meta.insert(PURGED_KEY, encode(&Some(*upto)).as_slice())
                        .map_err(purge_failed)?;
                }
                WriteOp::SaveVote(vote, _) => {
                    meta.insert(VOTE_KEY, encode(vote).as_slice())
                        .map_err(|e| LogWriteError::SaveVote {
                            path: path.to_owned(),
                            source: shared(e),
                        })?;
                }
                WriteOp::SaveCommitted(committed) => {
                    meta.insert(COMMITTED_KEY, encode(committed).as_slice())
                        .map_err(|e| LogWriteError::SaveCommitted {
                            path: path.to_owned(),
                            source: shared(e),
                        })?;
                }
            }
        }
    }
    txn.commit().map_err(|e| LogWriteError::Commit {
        path: path.to_owned(),
        ops: ops.len(),
        source: shared(e),
    })
}

/// A redb error, shared by every operation of the batch it failed.
fn shared(e: impl Into<redb::Error>) -> Arc<redb::Error> {
    Arc::new(e.into())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    bincode::serialize(value).unwrap_or_default()
}

fn log_error(verb: ErrorVerb, e: LogStoreError) -> StorageError {
    storage_io_error(ErrorSubject::Logs, verb, e)
}

/// The entries in `range`: the ones still in memory from there, the older
/// ones read back from disk (they were evicted only once durable).
fn entries_in<RB: RangeBounds<u64> + Clone>(
    cache: &Mutex<LogCache>,
    db: &Database,
    range: RB,
) -> Result<Vec<Entry>> {
    let (first_cached, cached): (Option<u64>, Vec<Entry>) = {
        let cache = lock_cache(cache);
        let first = cache.entries.keys().next().copied();
        let cached = cache
            .entries
            .range(range.clone())
            .map(|(_, (e, _))| e.clone())
            .collect();
        (first, cached)
    };
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    // Ends before the first entry in memory, and before the range's end.
    let disk_end = match (first_cached, range.end_bound()) {
        (Some(first), Bound::Included(e)) => first.min(e.saturating_add(1)),
        (Some(first), Bound::Excluded(e)) => first.min(*e),
        (Some(first), Bound::Unbounded) => first,
        (None, _) => return Ok(cached),
    };
    if start >= disk_end {
        return Ok(cached);
    }
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let log = txn.open_table(LOG).map_err(redb::Error::from)?;
    let mut entries = Vec::new();
    for item in log.range(start..disk_end).map_err(redb::Error::from)? {
        let (_, v) = item.map_err(redb::Error::from)?;
        entries.push(
            bincode::deserialize(v.value()).map_err(|source| LogStoreError::Decode {
                what: "log entry",
                source,
            })?,
        );
    }
    entries.extend(cached);
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        entries_in(&self.cache, &self.db, range).map_err(|e| log_error(ErrorVerb::Read, e))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        entries_in(&self.cache, &self.db, range).map_err(|e| log_error(ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let cache = self.lock();
        let last_log_id = cache.last_log_id();
        Ok(LogState {
            last_purged_log_id: cache.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            cache: self.cache.clone(),
            db: self.db.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::SaveVote(*vote, tx))
            .map_err(|e| storage_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        rx.await
            .map_err(|_| LogStoreError::WriterGone)
            .and_then(|written| written.map_err(LogStoreError::from))
            .map_err(|e| storage_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> std::result::Result<(), StorageError> {
        {
            let mut cache = self.lock();
            cache.committed = committed;
            cache.evict();
        }
        self.send(WriteOp::SaveCommitted(committed))
            .map_err(|e| log_error(ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut cache = self.lock();
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes = encode(&entry);
                cache.insert(index, entry, bytes.len());
                encoded.push((index, bytes));
            }
        }
        self.send(WriteOp::Append(encoded, callback))
            .map_err(|e| log_error(ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        {
            let mut cache = self.lock();
            cache.split_off(log_id.index);
        }
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Truncate(log_id.index, tx))
            .map_err(|e| log_error(ErrorVerb::Delete, e))?;
        rx.await
            .map_err(|_| LogStoreError::WriterGone)
            .and_then(|written| written.map_err(LogStoreError::from))
            .map_err(|e| log_error(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        {
            let mut cache = self.lock();
            cache.drop_through(log_id.index);
            cache.last_purged = Some(log_id);
        }
        self.send(WriteOp::Purge(log_id))
            .map_err(|e| log_error(ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::store::{Command, Proposal};

    /// An entry carrying about `size` bytes of object.
    fn entry(index: u64, size: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proposal {
                commands: vec![Command::Create {
                    object: vec![index as u8; size],
                    uid: format!("uid-{index}"),
                    now: "2026-01-01T00:00:00Z".into(),
                }],
            }),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn memory_keeps_the_newest_entries_and_reads_older_ones_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        // Ten entries of a quarter of the memory bound after entry 2, all
        // committed.
        let entries: Vec<Entry> = (3..=12).map(|i| entry(i, LOG_MEMORY_BYTES / 4)).collect();
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 0), 2));
        let committed = Some(*entries[9].get_log_id());
        write_new(&path, purged, &entries, Vote::new(1, 0), committed).unwrap();

        let log = LogStore::open(&path).unwrap();
        {
            let cache = log.lock();
            assert!(
                cache.bytes <= LOG_MEMORY_BYTES,
                "{} bytes kept",
                cache.bytes
            );
            assert!(cache.entries.len() < 10, "nothing was left on disk only");
            assert_eq!(cache.entries.keys().next_back(), Some(&12));
        }
        assert_eq!(log.last_log_id().map(|l| l.index), Some(12));
        // Every range reads whole and in order, from memory and disk alike.
        assert_eq!(
            indexes(&log.entries_after(None).unwrap()),
            (3..=12).collect::<Vec<_>>()
        );
        assert_eq!(
            indexes(&log.entries_after(Some(4)).unwrap()),
            (5..=12).collect::<Vec<_>>()
        );
        let middle = entries_in(&log.cache, &log.db, 4..7).unwrap();
        assert_eq!(indexes(&middle), vec![4, 5, 6]);
        assert_eq!(middle[0].log_id, entries[1].log_id);
        let EntryPayload::Normal(p) = &middle[0].payload else {
            panic!("not a proposal");
        };
        assert!(matches!(&p.commands[0], Command::Create { uid, .. } if uid == "uid-4"));
    }

    #[test]
    fn only_durable_committed_entries_leave_memory_and_never_the_newest() {
        let mut cache = LogCache::default();
        for i in 1..=8 {
            cache.insert(i, entry(i, 16), LOG_MEMORY_BYTES / 2);
        }
        // Nothing durable or committed yet: all stay, however large.
        cache.evict();
        assert_eq!(cache.entries.len(), 8);
        // Durable through 6, committed through 3: only what is before the
        // committed entry may go (a truncation never reaches it).
        cache.flushed = Some(6);
        cache.committed = Some(LogId::new(CommittedLeaderId::new(1, 0), 3));
        cache.evict();
        assert_eq!(
            cache.entries.keys().copied().collect::<Vec<_>>(),
            (3..=8).collect::<Vec<_>>()
        );
        // Durable through 3 only: nothing after it goes, committed or not.
        cache.flushed = Some(3);
        cache.committed = Some(LogId::new(CommittedLeaderId::new(1, 0), 8));
        cache.evict();
        assert_eq!(cache.entries.len(), 5);
        assert_eq!(cache.entries.keys().next(), Some(&4));
        // Everything durable and committed: down to the limit, newest kept.
        cache.flushed = Some(8);
        cache.committed = Some(LogId::new(CommittedLeaderId::new(1, 0), 8));
        cache.evict();
        assert_eq!(
            cache.entries.keys().copied().collect::<Vec<_>>(),
            vec![7, 8]
        );
        assert_eq!(cache.bytes, LOG_MEMORY_BYTES);
        cache.insert(9, entry(9, 16), LOG_MEMORY_BYTES * 2);
        cache.flushed = Some(9);
        cache.committed = Some(LogId::new(CommittedLeaderId::new(1, 0), 9));
        cache.evict();
        assert_eq!(cache.entries.keys().copied().collect::<Vec<_>>(), vec![9]);
        assert_eq!(cache.last_log_id().map(|l| l.index), Some(9));
    }
}
