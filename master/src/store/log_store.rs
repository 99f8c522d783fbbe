//! The Raft log, kept in redb with group commit.
//!
//! Appends return at once; a dedicated writer thread gathers every append
//! (and vote, truncate and purge) that is waiting, writes them in one redb
//! transaction, fsyncs once, and only then tells openraft the entries are
//! durable. Under load many client writes share one fsync, so durability
//! costs latency but not throughput.
//!
//! Entries not yet purged are also kept in memory, so replication reads
//! never touch the disk. openraft purges the log after each snapshot, which
//! keeps both bounded.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
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

/// redb page cache for the log database.
const LOG_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Most operations gathered into one transaction.
const MAX_BATCH: usize = 8192;

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
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
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
    writer: mpsc::Sender<WriteOp>,
}

/// A read handle on the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<Mutex<LogCache>>,
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
                    cache.entries.insert(k.value(), entry);
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
        let (tx, rx) = mpsc::channel();
        let log_path = path.to_owned();
        std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || write_loop(db, log_path, rx))
            .map_err(LogStoreError::WriterThread)?;
        Ok(LogStore {
            cache: Arc::new(Mutex::new(cache)),
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
        let cache = self.lock();
        cache
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(cache.last_purged)
    }

    /// Every entry kept after index `after` (every one for `None`), in
    /// order: what `--cluster-reset` replays onto a stopped master's last
    /// checkpoint.
    pub fn entries_after(&self, after: Option<u64>) -> Vec<Entry> {
        match after {
            Some(index) => entries_in(&self.cache, index.saturating_add(1)..),
            None => entries_in(&self.cache, ..),
        }
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
fn write_loop(db: Database, path: PathBuf, rx: mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&db, &path, &ops);
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

fn entries_in<RB: RangeBounds<u64>>(cache: &Mutex<LogCache>, range: RB) -> Vec<Entry> {
    lock_cache(cache)
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.cache, range))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.cache, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let cache = self.lock();
        let last_log_id = cache
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(cache.last_purged);
        Ok(LogState {
            last_purged_log_id: cache.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            cache: self.cache.clone(),
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
        self.lock().committed = committed;
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
                encoded.push((index, encode(&entry)));
                cache.entries.insert(index, entry);
            }
        }
        self.send(WriteOp::Append(encoded, callback))
            .map_err(|e| log_error(ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        {
            let mut cache = self.lock();
            let _ = cache.entries.split_off(&log_id.index);
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
            let keep = cache.entries.split_off(&(log_id.index + 1));
            cache.entries = keep;
            cache.last_purged = Some(log_id);
        }
        self.send(WriteOp::Purge(log_id))
            .map_err(|e| log_error(ErrorVerb::Delete, e))
    }
}
