//! The Raft log's file (`raft-log.wal`): an append-only run of
//! checksummed batches, written by the log store's writer thread
//! (`log_store`), one batch per `pwrite` and one `fdatasync` per batch.
//!
//! Layout (little-endian): the 8-byte magic `SKIFFLOG` and a 4-byte format
//! version, then batches. A batch is `[length u32][crc32 of the length
//! and of the batch's offset in the file u32][crc32 of the records u32]`
//! and its records, each `[length
//! u32][kind u8][body]` (the length counts kind and body). Kinds:
//!
//! - an entry: its index (u64), then the entry's bincode bytes;
//! - a truncation: the entries from an index on are gone;
//! - a purge: the entries up to a log id are gone, and it is the last
//!   purged one;
//! - the vote; the committed position.
//!
//! Reading applies the records in order, so the newest of each wins.
//!
//! A crash can tear only the last batch, and nobody was answered for it
//! (answers wait for its fsync): a batch that is cut short, or fails a
//! checksum with no whole batch after it, is cut off when the log is
//! opened. A batch that fails a checksum with a whole batch after it is
//! damage in the middle, which would lose answered writes if cut: the log
//! is refused, naming where. (The head's checksum covers the batch's
//! offset, so bytes that a client stored, copied into a torn batch, never
//! pass for a batch of their own.) A write or fsync that fails leaves the file
//! unusable until the master restarts: after a failed fsync the kernel may
//! have dropped the pages, so nothing written later could be trusted to
//! follow what is on disk.
//!
//! Purged and truncated entries stay in the file until it is compacted:
//! when the dead bytes outweigh the live ones (and pass [`COMPACT_FLOOR`]),
//! the vote, the committed and purged positions and the live entries are
//! written to a new file, fsynced, and renamed over the old one, after
//! the batch that made it due is answered (readers keep the old file
//! meanwhile). A failed compaction is tried again only once as much more
//! is dead.
//!
//! One process at a time: opening takes an exclusive `flock` on
//! `raft-log.wal.lock` beside it ([`lock`]), held while the log is open
//! (a second master on the same data dir, or a cluster reset of a running
//! one, is refused instead of cutting what the first writes).
//!
//! This replaced a redb database, whose every commit rewrote about five
//! pages (the table's, its parents', the allocator's) and read some back:
//! the writer thread's CPU fell by about a third (`BENCHMARKS.md`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use openraft::Vote;

use super::{LogId, NodeId};

const MAGIC: &[u8; 8] = b"SKIFFLOG";
/// The layout this skiff writes and reads. 1 was two builds of this
/// session's development (checksummed records; batches whose head's
/// checksum did not cover their offset), never released: their files are
/// refused as another format, not misread as torn.
const VERSION: u32 = 2;
const HEADER_LEN: u64 = 12;
/// A batch's length, the length's checksum and the records' checksum.
const BATCH_HEAD: usize = 12;
/// A record's length and kind.
const RECORD_HEAD: usize = 5;
/// What an entry record holds before the entry's bytes: its index.
const ENTRY_INDEX: usize = 8;

/// Dead bytes below which the file is not compacted, however few live
/// ones it holds: a rewrite of a small file for a few purged entries is
/// not worth its fsyncs.
pub const COMPACT_FLOOR: u64 = 64 * 1024;

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 4;
const COMMITTED: u8 = 5;

/// Why the log file cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("raft log {path}: {source}; check that the data directory is readable and writable by skiff")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raft log {path}: another process has it open (a skiff master using this data dir, or a cluster reset of it); stop that one first, or give this one a data dir of its own")]
    InUse { path: PathBuf },
    #[error("raft log {path}: it is not a skiff Raft log (its first bytes are not the log's header); give skiff a data dir of its own, or restore this one from a backup")]
    NotALog { path: PathBuf },
    #[error("raft log {path}: it is in log format {found}, and this skiff reads format {VERSION}: run the skiff that wrote it")]
    Version { path: PathBuf, found: u32 },
    #[error("raft log {path}: the batch at byte {offset} fails its checksum and more of the log follows it: the log is damaged in its middle, and cutting it there would lose writes that were answered; restore the data directory from a backup, or join this master to the cluster again with an empty one")]
    Damaged { path: PathBuf, offset: u64 },
    #[error("raft log {path}: the record at byte {offset} has a good checksum but cannot be read ({reason}); the log was written by another skiff version or damaged: restore the data directory from a backup, or join this master to the cluster again with an empty one")]
    Record {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("raft log {path}: a batch of {bytes} bytes is more than one batch can hold (4 GiB)")]
    TooLarge { path: PathBuf, bytes: usize },
}

/// Why a batch was not made durable. Every operation of the batch is
/// answered with it, hence `Clone`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogWriteError {
    #[error("raft log {path}: cannot write a batch of {ops} operations: {source}; check that the disk holding it is not full and reports no I/O errors, then restart this master")]
    Write {
        path: PathBuf,
        ops: usize,
        source: Arc<std::io::Error>,
    },
    #[error("raft log {path}: cannot fsync a batch of {ops} operations: {source}; check that the disk holding it reports no I/O errors, then restart this master")]
    Sync {
        path: PathBuf,
        ops: usize,
        source: Arc<std::io::Error>,
    },
    #[error("raft log {path}: an earlier write failed ({source}), so nothing more is written to it; restart this master once the disk is fixed")]
    Failed {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("raft log {path}: a batch of {ops} operations is {bytes} bytes, more than one batch can hold (4 GiB); nothing of it was written")]
    TooLarge {
        path: PathBuf,
        ops: usize,
        bytes: usize,
    },
}

/// Where an entry's bytes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: u64,
    len: u32,
}

impl Span {
    /// The bytes of the whole record holding the entry.
    fn record_bytes(self) -> u64 {
        u64::from(self.len) + (RECORD_HEAD + ENTRY_INDEX) as u64
    }
}

/// What readers share with the writer: the file and where each entry is.
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    file: Arc<File>,
    index: BTreeMap<u64, Span>,
}

fn lock_disk(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

/// The entries in `range` that the file holds, as (index, bincode bytes),
/// in order.
pub fn read_entries(
    disk: &Mutex<Disk>,
    range: impl RangeBounds<u64>,
) -> Result<Vec<(u64, Vec<u8>)>, LogFileError> {
    let (path, file, spans) = {
        let disk = lock_disk(disk);
        let spans: Vec<(u64, Span)> = disk.index.range(range).map(|(i, s)| (*i, *s)).collect();
        (disk.path.clone(), disk.file.clone(), spans)
    };
    spans
        .into_iter()
        .map(|(index, span)| {
            let mut bytes = vec![0; span.len as usize];
            file.read_exact_at(&mut bytes, span.offset)
                .map_err(|source| LogFileError::Io {
                    path: path.clone(),
                    source,
                })?;
            Ok((index, bytes))
        })
        .collect()
}

/// One operation of a batch, as the writer thread hands it over.
pub enum Op<'a> {
    /// Entries with their indexes and bincode bytes, in order.
    Entries(&'a [(u64, Vec<u8>)]),
    /// The entries from this index on are gone.
    Truncate(u64),
    /// The entries up to this one are gone.
    Purge(LogId),
    Vote(&'a Vote<NodeId>),
    Committed(&'a Option<LogId>),
}

/// What the file held when it was opened.
#[derive(Debug, Default)]
pub struct Contents {
    /// The entries, as (index, bincode bytes), in order.
    pub entries: Vec<(u64, Vec<u8>)>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

/// The writer's side of the log file.
pub struct LogFile {
    path: PathBuf,
    disk: Arc<Mutex<Disk>>,
    file: Arc<File>,
    /// Held while the log is open: one process at a time.
    lock: Flock<File>,
    /// Where the next batch is written: the end of the last good batch.
    end: u64,
    /// Bytes of the entry records still in the index.
    live: u64,
    /// Dead bytes that make a compaction due (besides outweighing the
    /// live ones): raised after a failed one.
    compact_at: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// The write or fsync that failed; nothing is written after it.
    failed: Option<Arc<std::io::Error>>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LogFileError + '_ {
    move |source| LogFileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    bincode::serialize(value).unwrap_or_default()
}

/// A batch being put together: its records after room for its head.
struct Batch {
    buf: Vec<u8>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: vec![0; BATCH_HEAD],
        }
    }

    /// Adds one record of `kind` with `body`.
    fn record(&mut self, kind: u8, body: &[&[u8]]) {
        let len: usize = 1 + body.iter().map(|b| b.len()).sum::<usize>();
        // Larger records make the batch too large, refused in `finish`.
        self.buf
            .extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        self.buf.push(kind);
        for part in body {
            self.buf.extend_from_slice(part);
        }
    }

    /// Adds an entry record; returns where its bytes start in the batch.
    fn entry(&mut self, index: u64, bytes: &[u8]) -> usize {
        self.record(ENTRY, &[&index.to_le_bytes(), bytes]);
        self.buf.len() - bytes.len()
    }

    /// The records that carry the vote and the committed and purged
    /// positions, for the head of a new file.
    fn state(
        &mut self,
        vote: Option<&Vote<NodeId>>,
        committed: Option<LogId>,
        purged: Option<LogId>,
    ) {
        if let Some(vote) = vote {
            self.record(VOTE, &[&encode(vote)]);
        }
        if committed.is_some() {
            self.record(COMMITTED, &[&encode(&committed)]);
        }
        if let Some(purged) = purged {
            self.record(PURGE, &[&encode(&purged)]);
        }
    }

    /// Whether it holds no record.
    fn is_empty(&self) -> bool {
        self.buf.len() == BATCH_HEAD
    }

    /// The batch, to be written at byte `offset` of the file, with its
    /// head filled in; `None` if it is too large.
    fn finish(mut self, offset: u64) -> Option<Vec<u8>> {
        let len = u32::try_from(self.buf.len() - BATCH_HEAD).ok()?;
        let len_bytes = len.to_le_bytes();
        let crc = crc32fast::hash(&self.buf[BATCH_HEAD..]);
        self.buf[0..4].copy_from_slice(&len_bytes);
        self.buf[4..8].copy_from_slice(&head_crc(&len_bytes, offset).to_le_bytes());
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        Some(self.buf)
    }
}

/// The head's own checksum: of the batch's length and where it starts.
fn head_crc(len: &[u8], offset: u64) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(len);
    crc.update(&offset.to_le_bytes());
    crc.finalize()
}

fn header() -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN as usize);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// Writes `parts` as the whole file at `path`, by way of a temporary file
/// that is fsynced and renamed over it: the file is whole or as it was.
/// Returns the new file, open for reading and writing; the rename is
/// durable once the caller has fsynced the directory ([`sync_parent`]).
fn replace_with(path: &Path, parts: &[&[u8]]) -> std::io::Result<File> {
    let tmp = temp_path(path);
    let written = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut at = 0;
        for part in parts {
            file.write_all_at(part, at)?;
            at += part.len() as u64;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A new file's one batch: the positions, then `entries`; and where each
/// entry's bytes start in it.
fn whole_batch<'a>(
    vote: Option<&Vote<NodeId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: impl Iterator<Item = (u64, &'a [u8])>,
) -> (Batch, Vec<(u64, usize, u32)>) {
    let mut batch = Batch::new();
    batch.state(vote, committed, purged);
    let mut at = Vec::new();
    for (index, bytes) in entries {
        let start = batch.entry(index, bytes);
        at.push((index, start, bytes.len() as u32));
    }
    (batch, at)
}

/// Writes a new log file at `path` holding `contents`, replacing any
/// there: whole or not at all.
pub fn write_new(path: &Path, contents: &Contents) -> Result<(), LogFileError> {
    let (batch, _) = whole_batch(
        contents.vote.as_ref(),
        contents.committed,
        contents.purged,
        contents.entries.iter().map(|(i, b)| (*i, b.as_slice())),
    );
    let bytes = batch.buf.len();
    let batch = batch
        .finish(HEADER_LEN)
        .ok_or_else(|| LogFileError::TooLarge {
            path: path.to_owned(),
            bytes,
        })?;
    replace_with(path, &[&header(), &batch])
        .and_then(|_| sync_parent(path))
        .map_err(io_error(path))
}

/// What reading a file found: its contents, where each entry is, and where
/// its good batches end.
struct Scanned {
    contents: Contents,
    index: BTreeMap<u64, Span>,
    end: u64,
    live: u64,
}

/// Whether a whole batch (its head's and its records' checksums good)
/// starts anywhere in `file` from byte `from` to `to`: after a batch that
/// fails a checksum, none does if that one is the torn last batch, and
/// one does if the log is damaged in its middle. Read only on that path,
/// a window at a time.
fn whole_batch_after(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    const WINDOW: u64 = 1024 * 1024;
    let mut window = Vec::new();
    let mut start = from;
    while start + BATCH_HEAD as u64 <= to {
        // Heads starting in this window, read whole.
        let end = (start + WINDOW + BATCH_HEAD as u64 - 1).min(to);
        window.resize((end - start) as usize, 0);
        file.read_exact_at(&mut window, start)?;
        for p in 0..window.len().saturating_sub(BATCH_HEAD - 1) {
            let head = &window[p..p + BATCH_HEAD];
            let at = start + p as u64;
            if head_crc(&head[0..4], at) != le_u32(&head[4..]) {
                continue;
            }
            let len = u64::from(le_u32(head));
            let body = at + BATCH_HEAD as u64;
            if len == 0 || body + len > to {
                continue;
            }
            let mut records = vec![0u8; len as usize];
            file.read_exact_at(&mut records, body)?;
            if crc32fast::hash(&records) == le_u32(&head[8..]) {
                return Ok(true);
            }
        }
        start += WINDOW;
    }
    Ok(false)
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

/// Reads every batch of `file` (at `path`, `length` bytes) in order, up to
/// a torn last one.
fn scan(path: &Path, file: &File, length: u64) -> Result<Scanned, LogFileError> {
    let io = io_error(path);
    let mut head = [0u8; HEADER_LEN as usize];
    if length < HEADER_LEN {
        return Err(LogFileError::NotALog {
            path: path.to_owned(),
        });
    }
    file.read_exact_at(&mut head, 0).map_err(&io)?;
    if &head[..8] != MAGIC {
        return Err(LogFileError::NotALog {
            path: path.to_owned(),
        });
    }
    let version = le_u32(&head[8..]);
    if version != VERSION {
        return Err(LogFileError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let mut offset = HEADER_LEN;
    let mut entries: BTreeMap<u64, (Span, Vec<u8>)> = BTreeMap::new();
    let mut contents = Contents::default();
    let mut payload = Vec::new();
    // A batch that fails a checksum is the torn last one only if no whole
    // batch follows it.
    let torn_or_damaged = |at: u64, after: u64| -> Result<(), LogFileError> {
        if whole_batch_after(file, after, length).map_err(&io)? {
            Err(LogFileError::Damaged {
                path: path.to_owned(),
                offset: at,
            })
        } else {
            Ok(())
        }
    };
    while offset < length {
        let head_end = offset + BATCH_HEAD as u64;
        if head_end > length {
            break; // Cut short: torn.
        }
        let mut head = [0u8; BATCH_HEAD];
        file.read_exact_at(&mut head, offset).map_err(&io)?;
        let len = le_u32(&head[0..]);
        if head == [0; BATCH_HEAD] || head_crc(&head[0..4], offset) != le_u32(&head[4..]) {
            // Its length is not to be trusted: look anywhere after it.
            torn_or_damaged(offset, offset + 1)?;
            break;
        }
        let end = head_end + u64::from(len);
        if end > length {
            break; // Cut short: torn.
        }
        payload.resize(len as usize, 0);
        file.read_exact_at(&mut payload, head_end).map_err(&io)?;
        if crc32fast::hash(&payload) != le_u32(&head[8..]) {
            // Its length is good: the next batch would start at its end.
            torn_or_damaged(offset, end)?;
            break;
        }
        read_records(path, &payload, head_end, &mut entries, &mut contents)?;
        offset = end;
    }
    let mut index = BTreeMap::new();
    let mut live = 0;
    for (i, (span, bytes)) in entries {
        live += span.record_bytes();
        index.insert(i, span);
        contents.entries.push((i, bytes));
    }
    Ok(Scanned {
        contents,
        index,
        end: offset,
        live,
    })
}

/// Applies the records of one batch (`payload`, at byte `base` of the
/// file) in order.
fn read_records(
    path: &Path,
    payload: &[u8],
    base: u64,
    entries: &mut BTreeMap<u64, (Span, Vec<u8>)>,
    contents: &mut Contents,
) -> Result<(), LogFileError> {
    let mut at = 0;
    while at < payload.len() {
        let bad = |reason: &str| LogFileError::Record {
            path: path.to_owned(),
            offset: base + at as u64,
            reason: reason.to_owned(),
        };
        let Some(head) = payload.get(at..at + RECORD_HEAD) else {
            return Err(bad("a record cut short"));
        };
        let len = le_u32(head) as usize;
        let Some(body) = len
            .checked_sub(1)
            .and_then(|n| payload.get(at + RECORD_HEAD..at + RECORD_HEAD + n))
        else {
            return Err(bad("a record longer than its batch"));
        };
        match head[4] {
            ENTRY => {
                let (index, bytes) = body
                    .split_first_chunk::<ENTRY_INDEX>()
                    .ok_or_else(|| bad("an entry without its index"))?;
                let span = Span {
                    offset: base + (at + RECORD_HEAD + ENTRY_INDEX) as u64,
                    len: u32::try_from(bytes.len()).map_err(|_| bad("an entry over 4 GiB"))?,
                };
                entries.insert(u64::from_le_bytes(*index), (span, bytes.to_vec()));
            }
            TRUNCATE => {
                let from = body
                    .first_chunk::<8>()
                    .ok_or_else(|| bad("a truncation without its index"))?;
                entries.split_off(&u64::from_le_bytes(*from));
            }
            PURGE => {
                let upto: LogId =
                    bincode::deserialize(body).map_err(|e| bad(&format!("a purge: {e}")))?;
                *entries = entries.split_off(&upto.index.saturating_add(1));
                contents.purged = Some(upto);
            }
            VOTE => {
                contents.vote =
                    Some(bincode::deserialize(body).map_err(|e| bad(&format!("a vote: {e}")))?);
            }
            COMMITTED => {
                contents.committed = bincode::deserialize(body)
                    .map_err(|e| bad(&format!("a committed position: {e}")))?;
            }
            kind => return Err(bad(&format!("unknown record kind {kind}"))),
        }
        at += RECORD_HEAD + body.len();
    }
    Ok(())
}

/// Takes the exclusive lock on the log at `path` (on `<path>.lock`), which
/// [`LogFile::open`] holds while the log is open: `InUse` if another open
/// file holds it, in this process or another.
pub fn lock(path: &Path) -> Result<Flock<File>, LogFileError> {
    let lock_path = with_suffix(path, ".lock");
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| LogFileError::Io {
            path: lock_path.clone(),
            source,
        })?;
    Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            LogFileError::InUse {
                path: path.to_owned(),
            }
        } else {
            LogFileError::Io {
                path: lock_path,
                source: errno.into(),
            }
        }
    })
}

impl LogFile {
    /// Opens the log at `path`, creating an empty one if there is none,
    /// and reads it whole. A torn last batch is cut off (and said so).
    pub fn open(path: &Path) -> Result<(LogFile, Contents), LogFileError> {
        LogFile::open_locked(path, lock(path)?)
    }

    /// [`LogFile::open`] with the log's lock already taken ([`lock`]), by
    /// a caller that keeps it across opens ([`LogFile::into_lock`]).
    pub fn open_locked(
        path: &Path,
        lock: Flock<File>,
    ) -> Result<(LogFile, Contents), LogFileError> {
        let io = io_error(path);
        // A compaction that did not finish left only its temporary file.
        let _ = std::fs::remove_file(temp_path(path));
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = replace_with(path, &[&header()]).map_err(&io)?;
                sync_parent(path).map_err(&io)?;
                file
            }
            Err(e) => return Err(io(e)),
        };
        let length = file.metadata().map_err(&io)?.len();
        let scanned = scan(path, &file, length)?;
        if length > scanned.end {
            // Whatever a torn batch left must go: records of it beyond the
            // next batch written must never be read.
            tracing::warn!(
                log = %path.display(),
                at = scanned.end,
                bytes = length - scanned.end,
                "cutting off the Raft log's torn last batch (a crash interrupted it: nobody had been answered for it)"
            );
            file.set_len(scanned.end).map_err(&io)?;
            file.sync_all().map_err(&io)?;
        }
        let file = Arc::new(file);
        let contents = scanned.contents;
        let log = LogFile {
            path: path.to_owned(),
            disk: Arc::new(Mutex::new(Disk {
                path: path.to_owned(),
                file: file.clone(),
                index: scanned.index,
            })),
            file,
            lock,
            end: scanned.end,
            live: scanned.live,
            compact_at: COMPACT_FLOOR,
            vote: contents.vote,
            committed: contents.committed,
            purged: contents.purged,
            failed: None,
        };
        Ok((log, contents))
    }

    /// Closes the file, keeping its lock.
    pub fn into_lock(self) -> Flock<File> {
        self.lock
    }

    /// The readers' side: the file and where each entry is.
    pub fn disk(&self) -> Arc<Mutex<Disk>> {
        self.disk.clone()
    }

    /// Where its batches end: the file's size.
    pub fn file_len(&self) -> u64 {
        self.end
    }

    /// Writes `ops` as one batch: one write and one fsync. Nothing of a
    /// failed batch counts as written.
    pub fn write(&mut self, ops: &[Op<'_>]) -> Result<(), LogWriteError> {
        if let Some(source) = &self.failed {
            return Err(LogWriteError::Failed {
                path: self.path.clone(),
                source: source.clone(),
            });
        }
        let mut batch = Batch::new();
        // Where each written entry's bytes start in the batch.
        let mut written: Vec<(u64, usize, usize)> = Vec::new();
        for op in ops {
            match op {
                Op::Entries(entries) => {
                    for (index, bytes) in entries.iter() {
                        let at = batch.entry(*index, bytes);
                        written.push((*index, at, bytes.len()));
                    }
                }
                Op::Truncate(from) => batch.record(TRUNCATE, &[&from.to_le_bytes()]),
                Op::Purge(upto) => batch.record(PURGE, &[&encode(upto)]),
                Op::Vote(vote) => batch.record(VOTE, &[&encode(vote)]),
                Op::Committed(committed) => batch.record(COMMITTED, &[&encode(committed)]),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.buf.len();
        let Some(buf) = batch.finish(self.end) else {
            return Err(LogWriteError::TooLarge {
                path: self.path.clone(),
                ops: ops.len(),
                bytes,
            });
        };
        let fail = |this: &mut LogFile, e: std::io::Error| {
            let e = Arc::new(e);
            this.failed = Some(e.clone());
            e
        };
        if let Err(e) = self.file.write_all_at(&buf, self.end) {
            let source = fail(self, e);
            return Err(LogWriteError::Write {
                path: self.path.clone(),
                ops: ops.len(),
                source,
            });
        }
        if let Err(e) = self.file.sync_data() {
            let source = fail(self, e);
            return Err(LogWriteError::Sync {
                path: self.path.clone(),
                ops: ops.len(),
                source,
            });
        }
        let base = self.end;
        self.end += buf.len() as u64;
        let mut disk = lock_disk(&self.disk);
        let mut written = written.into_iter();
        for op in ops {
            match op {
                Op::Entries(entries) => {
                    for (index, at, len) in written.by_ref().take(entries.len()) {
                        let span = Span {
                            offset: base + at as u64,
                            len: len as u32,
                        };
                        if let Some(old) = disk.index.insert(index, span) {
                            self.live -= old.record_bytes();
                        }
                        self.live += span.record_bytes();
                    }
                }
                Op::Truncate(from) => {
                    let gone = disk.index.split_off(from);
                    self.live -= gone.values().map(|s| s.record_bytes()).sum::<u64>();
                }
                Op::Purge(upto) => {
                    let keep = disk.index.split_off(&upto.index.saturating_add(1));
                    let gone = std::mem::replace(&mut disk.index, keep);
                    self.live -= gone.values().map(|s| s.record_bytes()).sum::<u64>();
                    self.purged = Some(*upto);
                }
                Op::Vote(vote) => self.vote = Some(**vote),
                Op::Committed(committed) => self.committed = **committed,
            }
        }
        Ok(())
    }

    /// Bytes of the file that hold nothing read any more.
    fn dead(&self) -> u64 {
        self.end - HEADER_LEN - self.live
    }

    /// Rewrites the file with only what is live, when the dead bytes
    /// outweigh the live ones: run by the writer after a batch is
    /// answered. A failure leaves the old file in use, whole, is logged,
    /// and is tried again only once as much more is dead.
    pub fn compact_if_due(&mut self) {
        let dead = self.dead();
        if self.failed.is_some() || dead < self.compact_at || dead < self.live {
            return;
        }
        if let Err(e) = self.compact() {
            tracing::warn!(log = %self.path.display(), error = %e, "cannot compact the Raft log; it is kept as it is");
            self.compact_at = dead + self.live.max(COMPACT_FLOOR);
        } else {
            self.compact_at = COMPACT_FLOOR;
        }
    }

    fn compact(&mut self) -> std::io::Result<()> {
        // Only this writer changes the index, so a copy stays true while
        // the new file is written without the readers' lock.
        let spans: Vec<(u64, Span)> = lock_disk(&self.disk)
            .index
            .iter()
            .map(|(i, s)| (*i, *s))
            .collect();
        let mut live = Vec::with_capacity(spans.len());
        for (i, span) in spans {
            let mut bytes = vec![0; span.len as usize];
            self.file.read_exact_at(&mut bytes, span.offset)?;
            live.push((i, bytes));
        }
        let (batch, at) = whole_batch(
            self.vote.as_ref(),
            self.committed,
            self.purged,
            live.iter().map(|(i, b)| (*i, b.as_slice())),
        );
        let bytes = batch.buf.len();
        let batch = batch
            .finish(HEADER_LEN)
            .ok_or_else(|| std::io::Error::other(format!("{bytes} bytes of live entries")))?;
        let file = Arc::new(replace_with(&self.path, &[&header(), &batch])?);
        {
            let mut disk = lock_disk(&self.disk);
            disk.file = file.clone();
            disk.index = at
                .into_iter()
                .map(|(i, start, len)| {
                    let span = Span {
                        offset: HEADER_LEN + start as u64,
                        len,
                    };
                    (i, span)
                })
                .collect();
        }
        self.file = file;
        self.end = HEADER_LEN + batch.len() as u64;
        if let Err(e) = sync_parent(&self.path) {
            // Until the rename is on disk a crash brings back the old
            // file, without what is appended to the new one: nothing more
            // may be written.
            tracing::error!(log = %self.path.display(), error = %e, "compacted the Raft log, but cannot fsync its directory; the log takes no more writes");
            self.failed = Some(Arc::new(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 0), index)
    }

    fn entries(range: std::ops::RangeInclusive<u64>, size: usize) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, vec![i as u8; size])).collect()
    }

    fn indexes(entries: &[(u64, Vec<u8>)]) -> Vec<u64> {
        entries.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn what_a_batch_wrote_is_read_back_after_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        {
            let (mut log, contents) = LogFile::open(&path).unwrap();
            assert!(contents.entries.is_empty() && contents.vote.is_none());
            let first = entries(1..=6, 100);
            let again = entries(5..=7, 50);
            log.write(&[Op::Vote(&Vote::new(2, 1)), Op::Entries(&first)])
                .unwrap();
            // A follower told to drop 5 and 6 for the leader's, then a
            // snapshot's purge, the commit and a new vote, in one batch.
            log.write(&[
                Op::Truncate(5),
                Op::Entries(&again),
                Op::Purge(log_id(2)),
                Op::Committed(&Some(log_id(6))),
                Op::Vote(&Vote::new(3, 2)),
            ])
            .unwrap();
            let read = read_entries(&log.disk(), 4..=6).unwrap();
            assert_eq!(
                read,
                vec![(4, vec![4; 100]), (5, vec![5; 50]), (6, vec![6; 50])]
            );
        }
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(indexes(&contents.entries), vec![3, 4, 5, 6, 7]);
        assert_eq!(contents.entries[0].1, vec![3; 100]);
        assert_eq!(contents.entries[4].1, vec![7; 50]);
        assert_eq!(contents.vote, Some(Vote::new(3, 2)));
        assert_eq!(contents.committed, Some(log_id(6)));
        assert_eq!(contents.purged, Some(log_id(2)));
    }

    /// A batch of entries `range`, `size` bytes each, as written at byte
    /// `offset`.
    fn batch_bytes(range: std::ops::RangeInclusive<u64>, size: usize, offset: u64) -> Vec<u8> {
        let mut batch = Batch::new();
        for (i, bytes) in entries(range, size) {
            batch.entry(i, &bytes);
        }
        batch.finish(offset).unwrap()
    }

    /// A new log at `path` holding entries 1 to 3, closed; where its
    /// batches end.
    fn three_entries_at(path: &Path) -> u64 {
        let (mut log, _) = LogFile::open(path).unwrap();
        log.write(&[Op::Entries(&entries(1..=3, 40))]).unwrap();
        log.file_len()
    }

    #[test]
    fn a_torn_last_batch_is_cut_off_and_the_log_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let good_end = three_entries_at(&path);
        let whole = batch_bytes(4..=4, 40, good_end);
        let cases = [
            // One whole batch, then a crash half way through the next.
            (
                [
                    whole.clone(),
                    batch_bytes(5..=6, 40, good_end + whole.len() as u64),
                ]
                .concat()[..whole.len() + 30]
                    .to_vec(),
                vec![1, 2, 3, 4],
            ),
            // The last batch's bytes not all written: its checksum fails.
            (
                {
                    let mut torn = whole.clone();
                    let n = torn.len();
                    torn[n - 1] ^= 0xff;
                    torn
                },
                vec![1, 2, 3],
            ),
            // Its head not written at all, the rest of it was.
            (
                {
                    let mut torn = whole.clone();
                    torn[..BATCH_HEAD].fill(0);
                    torn
                },
                vec![1, 2, 3],
            ),
            // Only its head was written.
            (whole[..BATCH_HEAD].to_vec(), vec![1, 2, 3]),
        ];
        for (torn, kept) in cases {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(good_end).unwrap();
            file.write_all_at(&torn, good_end).unwrap();
            drop(file);
            let (log, contents) = LogFile::open(&path).unwrap();
            assert_eq!(indexes(&contents.entries), kept);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), log.file_len());
            assert!(log.file_len() < good_end + torn.len() as u64);
        }
        {
            let (mut log, _) = LogFile::open(&path).unwrap();
            log.write(&[Op::Truncate(4), Op::Entries(&entries(4..=5, 10))])
                .unwrap();
        }
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(indexes(&contents.entries), vec![1, 2, 3, 4, 5]);
        assert_eq!(contents.entries[4].1, vec![5; 10]);
    }

    #[test]
    fn a_batch_a_client_stored_inside_a_torn_one_does_not_pass_for_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let good_end = three_entries_at(&path);
        let inner_at = good_end + (BATCH_HEAD + RECORD_HEAD + ENTRY_INDEX) as u64;
        // Entry 4's bytes are a whole batch. Torn twice over: its last byte
        // not written (its head is good, so only what follows its end is
        // looked at, and even a batch made for where it lands is not
        // seen); then its head not written either (a client cannot know
        // where in the log its bytes land, and a batch made for anywhere
        // else does not pass).
        for (tear, made_for) in [(None, inner_at), (Some(0), inner_at + 4096)] {
            let mut outer = Batch::new();
            outer.entry(4, &batch_bytes(9..=9, 16, made_for));
            let mut torn = outer.finish(good_end).unwrap();
            let at = tear.unwrap_or(torn.len() - 1);
            torn[at] ^= 0xff;
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(good_end).unwrap();
            file.write_all_at(&torn, good_end).unwrap();
            drop(file);
            let (log, contents) = LogFile::open(&path).unwrap();
            assert_eq!(indexes(&contents.entries), vec![1, 2, 3], "torn at {at}");
            assert_eq!(log.file_len(), good_end);
        }
    }

    #[test]
    fn damage_in_the_middle_is_refused_naming_where_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        {
            let (mut log, _) = LogFile::open(&path).unwrap();
            log.write(&[Op::Entries(&entries(1..=3, 40))]).unwrap();
            log.write(&[Op::Entries(&entries(4..=6, 40))]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // A bit of an entry of the first batch flips.
        bytes[HEADER_LEN as usize + BATCH_HEAD + 20] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::Damaged { offset: 12, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("would lose writes that were answered"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_second_process_cannot_open_a_log_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let (log, _) = LogFile::open(&path).unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("another process has it open"), "{e}");
        drop(log);
        LogFile::open(&path).unwrap();
    }

    #[test]
    fn purged_entries_are_compacted_away_and_what_is_left_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let (mut log, _) = LogFile::open(&path).unwrap();
        log.write(&[Op::Vote(&Vote::new(5, 1))]).unwrap();
        for i in 0..100 {
            let batch = entries(i * 10 + 1..=i * 10 + 10, 1000);
            log.write(&[
                Op::Entries(&batch),
                Op::Committed(&Some(log_id(i * 10 + 10))),
            ])
            .unwrap();
        }
        let full = log.file_len();
        assert!(full > 1_000_000, "{full}");
        // A snapshot at 900: once the purge is answered, the file keeps
        // only the last hundred entries.
        log.write(&[Op::Purge(log_id(900))]).unwrap();
        assert_eq!(log.file_len(), std::fs::metadata(&path).unwrap().len());
        log.compact_if_due();
        let compacted = log.file_len();
        assert!(compacted < full / 5, "{full} -> {compacted} bytes");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), compacted);
        assert!(!temp_path(&path).exists());
        // Readers use the new file, and appends follow on it.
        let read = read_entries(&log.disk(), 899..=902).unwrap();
        assert_eq!(indexes(&read), vec![901, 902]);
        assert_eq!(read[1].1, vec![902u64 as u8; 1000]);
        log.write(&[Op::Entries(&entries(1001..=1001, 10))])
            .unwrap();
        drop(log);
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(indexes(&contents.entries), (901..=1001).collect::<Vec<_>>());
        assert_eq!(contents.vote, Some(Vote::new(5, 1)));
        assert_eq!(contents.committed, Some(log_id(1000)));
        assert_eq!(contents.purged, Some(log_id(900)));
    }

    #[test]
    fn a_file_that_is_not_a_log_of_this_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        std::fs::write(&path, b"hello, world").unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::NotALog { .. }), "{e}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello, world");

        let mut newer = MAGIC.to_vec();
        newer.extend_from_slice(&7u32.to_le_bytes());
        std::fs::write(&path, &newer).unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::Version { found: 7, .. }), "{e}");

        // A log of the earlier layout is refused whole, not cut as torn.
        let mut earlier = MAGIC.to_vec();
        earlier.extend_from_slice(&1u32.to_le_bytes());
        earlier.extend_from_slice(&[7; 100]);
        std::fs::write(&path, &earlier).unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::Version { found: 1, .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), earlier);

        // A record with good checksums that this skiff cannot read.
        let mut batch = Batch::new();
        batch.record(99, &[b"?"]);
        std::fs::write(
            &path,
            [header(), batch.finish(HEADER_LEN).unwrap()].concat(),
        )
        .unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::Record { offset: 24, .. }), "{e}");
        assert!(e.to_string().contains("unknown record kind 99"), "{e}");
    }

    #[test]
    fn after_a_failed_write_nothing_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let (mut log, _) = LogFile::open(&path).unwrap();
        log.write(&[Op::Entries(&entries(1..=1, 10))]).unwrap();
        let before = std::fs::read(&path).unwrap();
        log.failed = Some(Arc::new(std::io::Error::other("EIO")));
        let e = log.write(&[Op::Entries(&entries(2..=2, 10))]).unwrap_err();
        assert!(matches!(e, LogWriteError::Failed { .. }), "{e}");
        assert!(e.to_string().contains("restart this master"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_new_log_is_written_whole_over_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        {
            let (mut log, _) = LogFile::open(&path).unwrap();
            log.write(&[Op::Entries(&entries(1..=9, 10))]).unwrap();
        }
        let contents = Contents {
            entries: entries(11..=12, 5),
            vote: Some(Vote::new(9, 1)),
            committed: Some(log_id(10)),
            purged: Some(log_id(10)),
        };
        write_new(&path, &contents).unwrap();
        let (_, read) = LogFile::open(&path).unwrap();
        assert_eq!(read.entries, contents.entries);
        assert_eq!(read.vote, contents.vote);
        assert_eq!(
            (read.committed, read.purged),
            (Some(log_id(10)), Some(log_id(10)))
        );
    }
}
