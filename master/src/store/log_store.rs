//! The Raft log, in an append-only file with group commit.
//!
//! Appends return at once; a dedicated writer thread gathers every append
//! (and vote, truncate and purge) that is waiting, writes them to the log
//! file ([`super::log_file`]) in one write, fsyncs once, and only then
//! tells openraft the entries are durable. Under load many client writes
//! share one fsync, so durability costs latency but not throughput.
//!
//! The newest entries are also kept in memory, so that applying them and
//! replicating them to followers that keep up never touches the disk: every
//! entry not yet both durable and committed, and the committed ones up to
//! [`LOG_MEMORY_BYTES`] in all. Older entries are read back from the file
//! (a follower catching up). openraft purges the log after each snapshot,
//! and the file is compacted once purged bytes outweigh live ones, which
//! keeps it bounded too.
//!
//! Data dirs of data format 1 kept the log in redb ([`LEGACY_LOG_FILE`]);
//! [`convert_legacy`] rewrites one as a log file when the data dir is
//! upgraded (`datastore::data_format`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::Flock;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, Vote};
use redb::{ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::log_file::{self, Contents, Disk, LogFile, LogFileError, Op};
use super::{storage_io_error, Entry, LogId, NodeId, StorageError, TypeConfig};

pub use super::log_file::LogWriteError;

/// The Raft log's file name in data dirs of data format 1: a redb
/// database.
pub const LEGACY_LOG_FILE: &str = "raft-log.redb";
const LEGACY_LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const LEGACY_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// Most operations gathered into one batch.
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
    #[error(transparent)]
    File(#[from] LogFileError),
    #[error("raft log (data format 1, redb): {0}; the data dir cannot be upgraded until it can be read: restore it from a backup, or join this master to the cluster again with an empty one")]
    Legacy(Box<redb::Error>),
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

impl From<redb::Error> for LogStoreError {
    fn from(e: redb::Error) -> Self {
        LogStoreError::Legacy(Box::new(e))
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

/// The Raft log.
pub struct LogStore {
    cache: Arc<Mutex<LogCache>>,
    disk: Arc<Mutex<Disk>>,
    writer: mpsc::Sender<WriteOp>,
    /// The writer thread, which holds the file (and its lock) until it
    /// ends: joined on drop, so the log can be opened again at once.
    thread: Option<std::thread::JoinHandle<LogFile>>,
}

impl LogStore {
    /// Stops the writer once what waits is written; its file, if it ended
    /// well.
    fn stop_writer(&mut self) -> Option<LogFile> {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.writer, closed));
        self.thread.take().and_then(|thread| thread.join().ok())
    }

    /// Closes the log, keeping its lock: for a caller that goes on using
    /// the data dir as no master may meanwhile (a cluster reset).
    pub fn close(mut self) -> Option<Flock<File>> {
        self.stop_writer().map(LogFile::into_lock)
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // The writer ends once its channel is closed and what waits in it
        // is written.
        self.stop_writer();
    }
}

/// A read handle on the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<Mutex<LogCache>>,
    disk: Arc<Mutex<Disk>>,
}

fn decode_entry(bytes: &[u8]) -> Result<Entry> {
    decode("log entry", bytes)
}

impl LogStore {
    /// Opens (or creates) the log at `path` and loads it.
    pub fn open(path: &Path) -> Result<LogStore> {
        LogStore::start(LogFile::open(path)?)
    }

    /// [`LogStore::open`] with the log's lock already taken
    /// ([`log_file::lock`]).
    pub fn open_locked(path: &Path, lock: Flock<File>) -> Result<LogStore> {
        LogStore::start(LogFile::open_locked(path, lock)?)
    }

    fn start((file, contents): (LogFile, Contents)) -> Result<LogStore> {
        let mut cache = LogCache::default();
        for (index, bytes) in contents.entries {
            cache.insert(index, decode_entry(&bytes)?, bytes.len());
        }
        cache.vote = contents.vote;
        cache.committed = contents.committed;
        cache.last_purged = contents.purged;
        // Everything read back is durable.
        cache.flushed = cache.entries.keys().next_back().copied();
        cache.evict();
        let disk = file.disk();
        let cache = Arc::new(Mutex::new(cache));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let cache = cache.clone();
            std::thread::Builder::new()
                .name("raft-log-writer".to_owned())
                .spawn(move || write_loop(file, &cache, rx))
                .map_err(LogStoreError::WriterThread)?
        };
        Ok(LogStore {
            cache,
            disk,
            writer: tx,
            thread: Some(thread),
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
            &self.disk,
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

/// Writes a new Raft log at `path`, replacing any there: `entries` (in
/// order, following `purged`), everything up to `purged` counted as
/// purged behind a snapshot, `vote` and `committed`, whole or not at all.
/// `--cluster-reset` starts a one-member cluster's log this way, with no
/// entries.
pub fn write_new(
    path: &Path,
    purged: Option<LogId>,
    entries: &[Entry],
    vote: Vote<NodeId>,
    committed: Option<LogId>,
) -> Result<()> {
    let contents = Contents {
        entries: entries
            .iter()
            .map(|e| (e.get_log_id().index, encode(e)))
            .collect(),
        vote: Some(vote),
        committed,
        purged,
    };
    Ok(log_file::write_new(path, &contents)?)
}

/// Rewrites the redb log of data format 1 at `legacy` as a log file at
/// `path` (replacing any there), entry bytes as they are. `legacy` is left
/// in place: the caller removes it once the data dir is marked upgraded.
pub fn convert_legacy(legacy: &Path, path: &Path) -> Result<()> {
    let db = redb::Database::open(legacy).map_err(redb::Error::from)?;
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let mut contents = Contents::default();
    match txn.open_table(LEGACY_LOG) {
        Ok(log) => {
            for item in log.iter().map_err(redb::Error::from)? {
                let (k, v) = item.map_err(redb::Error::from)?;
                contents.entries.push((k.value(), v.value().to_vec()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(redb::Error::from(e).into()),
    }
    match txn.open_table(LEGACY_META) {
        Ok(meta) => {
            let read = |key: &str| -> Result<Option<Vec<u8>>> {
                Ok(meta
                    .get(key)
                    .map_err(redb::Error::from)?
                    .map(|v| v.value().to_vec()))
            };
            if let Some(v) = read("vote")? {
                contents.vote = Some(decode("vote", &v)?);
            }
            if let Some(v) = read("committed")? {
                contents.committed = decode("committed", &v)?;
            }
            if let Some(v) = read("last_purged")? {
                contents.purged = decode("last purged", &v)?;
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(redb::Error::from(e).into()),
    }
    Ok(log_file::write_new(path, &contents)?)
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|source| LogStoreError::Decode { what, source })
}

fn lock_cache(cache: &Mutex<LogCache>) -> std::sync::MutexGuard<'_, LogCache> {
    // A panic while holding the lock cannot leave the map half-updated in a
    // way later readers care about, so a poisoned lock is still usable.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longest a commit position waits for a batch that has to be made
/// durable anyway before it is written on its own.
const COMMITTED_IDLE: Duration = Duration::from_millis(200);

/// The writer thread: one write and one fsync per batch.
///
/// A commit position alone makes no batch. openraft does not need it
/// durable (on start it takes the larger of it and what the state machine
/// has applied, and a leader tells its members what is committed); its
/// record only spares a restarted master from waiting for that to re-apply
/// its newest entries. So it rides with the next append, vote, truncation
/// or purge, whose fsync is in the way of Raft anyway, and is written on
/// its own only when none came within [`COMMITTED_IDLE`] (or when the log
/// closes). Written alone, each commit cost every member an
/// extra fsync per proposal, in front of the next append's.
fn write_loop(mut file: LogFile, cache: &Mutex<LogCache>, rx: mpsc::Receiver<WriteOp>) -> LogFile {
    // The newest commit position not yet written, and when it must be.
    let mut unwritten_commit: Option<Option<LogId>> = None;
    let mut commit_due = Instant::now();
    loop {
        let first = match unwritten_commit {
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
            Some(committed) => {
                match rx.recv_timeout(commit_due.saturating_duration_since(Instant::now())) {
                    Ok(op) => op,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        unwritten_commit = None;
                        write_commit(&mut file, &committed);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut ops = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::SaveCommitted(committed) => {
                    if unwritten_commit.is_none() {
                        commit_due = Instant::now() + COMMITTED_IDLE;
                    }
                    unwritten_commit = Some(committed);
                }
                op => ops.push(op),
            }
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if ops.is_empty() {
            continue;
        }
        // Last in the batch: it came after everything else in it, and no
        // truncation reaches a committed entry.
        let committed = unwritten_commit.take();
        let file_ops: Vec<Op<'_>> = ops
            .iter()
            .map(|op| match op {
                WriteOp::Append(entries, _) => Op::Entries(entries),
                WriteOp::Truncate(from, _) => Op::Truncate(*from),
                WriteOp::Purge(upto) => Op::Purge(*upto),
                WriteOp::SaveVote(vote, _) => Op::Vote(vote),
                // Never queued: taken out above.
                WriteOp::SaveCommitted(committed) => Op::Committed(committed),
            })
            .chain(committed.as_ref().map(Op::Committed))
            .collect();
        let outcome = file.write(&file_ops);
        drop(file_ops);
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
        // After the answers, so that no batch waits for it.
        file.compact_if_due();
    }
    if let Some(committed) = unwritten_commit {
        write_commit(&mut file, &committed);
    }
    file
}

/// Writes a commit position on its own.
fn write_commit(file: &mut LogFile, committed: &Option<LogId>) {
    if let Err(e) = file.write(&[Op::Committed(committed)]) {
        tracing::error!(error = %e, "raft log write failed");
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    bincode::serialize(value).unwrap_or_default()
}

fn log_error(verb: ErrorVerb, e: LogStoreError) -> StorageError {
    storage_io_error(ErrorSubject::Logs, verb, e)
}

/// The entries in `range`: the ones still in memory from there, the older
/// ones read back from the file (they were evicted only once durable).
fn entries_in<RB: RangeBounds<u64> + Clone>(
    cache: &Mutex<LogCache>,
    disk: &Mutex<Disk>,
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
    let mut entries = Vec::new();
    for (_, bytes) in log_file::read_entries(disk, start..disk_end)? {
        entries.push(decode_entry(&bytes)?);
    }
    entries.extend(cached);
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        entries_in(&self.cache, &self.disk, range).map_err(|e| log_error(ErrorVerb::Read, e))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        entries_in(&self.cache, &self.disk, range).map_err(|e| log_error(ErrorVerb::Read, e))
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
            disk: self.disk.clone(),
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

    /// The vote, read by openraft once, when the master starts, as one
    /// that is not committed: "this master voted for that one in that
    /// term", which is all Raft's safety needs remembered (never two votes
    /// in a term).
    ///
    /// openraft 0.9 resumes a master whose committed vote names itself as
    /// the leader of that term at once, without an election (its issue
    /// 1511). Such a master's commit position may be behind what it
    /// acknowledged and answered before it stopped: the position is
    /// written with the next batch ([`write_loop`]), the state checkpoint
    /// is up to a second old, and a power cut loses what was not fsynced.
    /// Leading its old term, its read index is the larger of that position
    /// and its first entry of the term, so a read could miss writes it had
    /// acknowledged (the HA test's linearizability check caught one). Read
    /// as not committed, every master starts as a follower and leads again
    /// only by winning a new term, whose first entry it commits before any
    /// read is answered (Raft thesis §6.4), as etcd's members do.
    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self
            .lock()
            .vote
            .map(|vote| Vote::new(vote.leader_id.term, vote.leader_id.node_id)))
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

/// Writes a Raft log as data format 1 did (redb), for the upgrade's tests.
#[cfg(test)]
pub(crate) fn write_legacy(
    path: &Path,
    purged: Option<LogId>,
    entries: &[Entry],
    vote: Vote<NodeId>,
    committed: Option<LogId>,
) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(LEGACY_LOG).unwrap();
        for entry in entries {
            log.insert(entry.get_log_id().index, encode(entry).as_slice())
                .unwrap();
        }
        let mut meta = txn.open_table(LEGACY_META).unwrap();
        meta.insert("last_purged", encode(&purged).as_slice())
            .unwrap();
        meta.insert("vote", encode(&vote).as_slice()).unwrap();
        meta.insert("committed", encode(&committed).as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
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
        let path = dir.path().join(crate::store::LOG_FILE);
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
        let middle = entries_in(&log.cache, &log.disk, 4..7).unwrap();
        assert_eq!(indexes(&middle), vec![4, 5, 6]);
        assert_eq!(middle[0].log_id, entries[1].log_id);
        let EntryPayload::Normal(p) = &middle[0].payload else {
            panic!("not a proposal");
        };
        assert!(matches!(&p.commands[0], Command::Create { uid, .. } if uid == "uid-4"));
    }

    #[tokio::test]
    async fn a_commit_position_rides_with_the_next_write_or_goes_alone_once_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::store::LOG_FILE);
        let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 64)).collect();
        let at = |i: usize| Some(*entries[i - 1].get_log_id());
        write_new(&path, None, &entries, Vote::new(1, 0), at(1)).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let reopened_commit = |log: LogStore| {
            drop(log);
            let log = LogStore::open(&path).unwrap();
            let committed = log.lock().committed;
            (log, committed)
        };

        // Alone, it waits: no write, no fsync.
        let mut log = LogStore::open(&path).unwrap();
        let before = size();
        log.save_committed(at(2)).await.unwrap();
        assert_eq!(log.lock().committed, at(2), "known at once in memory");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(size(), before, "a commit position was written on its own");
        // The next write that must be durable carries it.
        log.save_vote(&Vote::new(2, 0)).await.unwrap();
        assert!(size() > before);
        let (mut log, committed) = reopened_commit(log);
        assert_eq!(committed, at(2));
        assert_eq!(log.lock().vote, Some(Vote::new(2, 0)));

        // With nothing to carry it, it is written on its own.
        let before = size();
        log.save_committed(at(3)).await.unwrap();
        let waited = std::time::Instant::now();
        while size() == before {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "an idle log never wrote its commit position"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(waited.elapsed() >= COMMITTED_IDLE / 2);
        let (mut log, committed) = reopened_commit(log);
        assert_eq!(committed, at(3));

        // A log closed before it is idle writes it as it closes.
        log.save_committed(at(4)).await.unwrap();
        let (_log, committed) = reopened_commit(log);
        assert_eq!(committed, at(4));
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

    #[tokio::test]
    async fn a_committed_vote_reads_back_as_a_vote_only_so_no_master_resumes_leading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::store::LOG_FILE);
        write_new(&path, None, &[], Vote::new(1, 0), None).unwrap();
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.vote(), Some(Vote::new_committed(3, 2)), "as stored");
        let read = log.read_vote().await.unwrap().unwrap();
        assert_eq!(read, Vote::new(3, 2), "the same term and choice");
        assert!(!read.is_committed());
    }

    #[test]
    fn a_format_1_log_converts_with_its_entries_vote_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_LOG_FILE);
        let path = dir.path().join(crate::store::LOG_FILE);
        let entries: Vec<Entry> = (4..=9).map(|i| entry(i, 300)).collect();
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 0), 3));
        let committed = Some(*entries[4].get_log_id());
        write_legacy(&legacy, purged, &entries, Vote::new(2, 1), committed);

        convert_legacy(&legacy, &path).unwrap();
        let log = LogStore::open(&path).unwrap();
        assert_eq!(log.vote(), Some(Vote::new(2, 1)));
        assert_eq!(log.lock().committed, committed);
        assert_eq!(log.lock().last_purged, purged);
        let read = log.entries_after(None).unwrap();
        assert_eq!(indexes(&read), (4..=9).collect::<Vec<_>>());
        let EntryPayload::Normal(p) = &read[2].payload else {
            panic!("not a proposal");
        };
        assert!(
            matches!(&p.commands[0], Command::Create { uid, object, .. } if uid == "uid-6" && object.len() == 300)
        );
    }

    #[test]
    fn a_damaged_format_1_log_is_refused_and_no_log_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_LOG_FILE);
        let path = dir.path().join(crate::store::LOG_FILE);
        std::fs::write(&legacy, b"not a redb database at all").unwrap();
        let e = convert_legacy(&legacy, &path).unwrap_err();
        assert!(matches!(e, LogStoreError::Legacy(_)), "{e}");
        assert!(e.to_string().contains("data format 1"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn a_closed_log_keeps_its_lock_until_the_caller_lets_it_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::store::LOG_FILE);
        write_new(&path, None, &[entry(1, 10)], Vote::new(1, 0), None).unwrap();
        let log = LogStore::open(&path).unwrap();
        let held = log.close().expect("the writer ended well");
        // As a master starting meanwhile would find it.
        let e = LogStore::open(&path).err().unwrap();
        assert!(
            matches!(e, LogStoreError::File(LogFileError::InUse { .. })),
            "{e}"
        );
        // Opened again under the same lock, it reads as it was.
        let log = LogStore::open_locked(&path, held).unwrap();
        assert_eq!(log.last_log_id().map(|l| l.index), Some(1));
        drop(log);
        LogStore::open(&path).unwrap();
    }
}
