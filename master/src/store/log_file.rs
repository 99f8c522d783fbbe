//! The Raft log's file (`raft-log.wal`): an append-only run of checksummed
//! records, written by the log store's writer thread (`log_store`) one
//! batch at a time, with one `pwrite` and one `fdatasync` per batch.
//!
//! Layout: the 8-byte magic `SKIFFLOG` and a 4-byte format version, then
//! records, each `[length u32][crc32 u32][kind u8][body]` (little-endian;
//! the length counts kind and body, the checksum covers them). Kinds:
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
//! (answers wait for its fsync): reading stops at the first record that is
//! incomplete or fails its checksum, and the file is cut there. A write or
//! fsync that fails leaves the file unusable until the master restarts:
//! after a failed fsync the kernel may have dropped the pages, so nothing
//! written later could be trusted to follow what is on disk.
//!
//! Purged and truncated entries stay in the file until it is compacted:
//! when the dead bytes outweigh the live ones (and pass [`COMPACT_FLOOR`]),
//! the vote, the committed and purged positions and the live entries are
//! written to a new file, fsynced, and renamed over the old one.
//!
//! This replaced a redb database, whose every commit rewrote about five
//! pages (the table's, its parents', the allocator's) and read some back:
//! a plain append halved the writer thread's CPU (`BENCHMARKS.md`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::Vote;

use super::{LogId, NodeId};

const MAGIC: &[u8; 8] = b"SKIFFLOG";
/// The record layout this skiff writes and reads.
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
/// A record's length and checksum.
const RECORD_HEAD: usize = 8;
/// The longest record accepted on reading; a longer length is damage.
const MAX_RECORD: usize = 1 << 30;

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
    #[error("raft log {path}: it is not a skiff Raft log (its first bytes are not the log's header); give skiff a data dir of its own, or restore this one from a backup")]
    NotALog { path: PathBuf },
    #[error("raft log {path}: it is in log format {found}, and this skiff reads format {VERSION}: run the skiff that wrote it")]
    Version { path: PathBuf, found: u32 },
    #[error("raft log {path}: the record at byte {offset} has a good checksum but cannot be read ({reason}); the log was written by another skiff version or damaged: restore the data directory from a backup, or join this master to the cluster again with an empty one")]
    Record {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
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
        u64::from(self.len) + (RECORD_HEAD + 1 + 8) as u64
    }
}

/// What readers share with the writer: the file and where each entry is.
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    file: Arc<File>,
    index: BTreeMap<u64, Span>,
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

/// The entries in `range` that the file holds, as (index, bincode bytes),
/// in order.
pub fn read_entries(
    disk: &Mutex<Disk>,
    range: impl RangeBounds<u64>,
) -> Result<Vec<(u64, Vec<u8>)>, LogFileError> {
    let (path, file, spans) = {
        let disk = lock(disk);
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
    /// Where the next batch is written: the end of the last good record.
    end: u64,
    /// Bytes of the entry records still in the index.
    live: u64,
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

/// Appends one record of `kind` with `body` to `buf`.
fn put_record(buf: &mut Vec<u8>, kind: u8, body: &[&[u8]]) {
    let len: usize = 1 + body.iter().map(|b| b.len()).sum::<usize>();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    for part in body {
        crc.update(part);
    }
    // A record is at most an entry, far below 4 GiB.
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.push(kind);
    for part in body {
        buf.extend_from_slice(part);
    }
}

/// Appends an entry record to `buf`; returns where its bytes start in it.
fn put_entry(buf: &mut Vec<u8>, index: u64, bytes: &[u8]) -> usize {
    put_record(buf, ENTRY, &[&index.to_le_bytes(), bytes]);
    buf.len() - bytes.len()
}

/// The records that carry the vote and the committed and purged
/// positions, for the head of a new file.
fn put_state(
    buf: &mut Vec<u8>,
    vote: Option<&Vote<NodeId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
) {
    if let Some(vote) = vote {
        put_record(buf, VOTE, &[&encode(vote)]);
    }
    if committed.is_some() {
        put_record(buf, COMMITTED, &[&encode(&committed)]);
    }
    if let Some(purged) = purged {
        put_record(buf, PURGE, &[&encode(&purged)]);
    }
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

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` as the whole file at `path`, by way of a temporary file
/// that is fsynced and renamed over it: the file is whole or as it was.
/// Returns the new file, open for reading and writing; the rename is
/// durable once the caller has fsynced the directory ([`sync_parent`]).
fn replace_with(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let tmp = temp_path(path);
    let written = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all_at(bytes, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes a new log file at `path` holding `entries` (index, bincode
/// bytes) and the given positions, replacing any there: whole or not at
/// all.
pub fn write_new(path: &Path, contents: &Contents) -> Result<(), LogFileError> {
    let mut buf = header();
    put_state(
        &mut buf,
        contents.vote.as_ref(),
        contents.committed,
        contents.purged,
    );
    for (index, bytes) in &contents.entries {
        put_entry(&mut buf, *index, bytes);
    }
    replace_with(path, &buf)
        .and_then(|_| sync_parent(path))
        .map_err(io_error(path))
}

/// What reading a file found: its contents, where each entry is, and where
/// its good records end.
struct Scanned {
    contents: Contents,
    index: BTreeMap<u64, Span>,
    end: u64,
    live: u64,
}

/// Reads every record of `file` (at `path`) in order, stopping at the
/// first torn or damaged one.
fn scan(path: &Path, file: &File) -> Result<Scanned, LogFileError> {
    let io = io_error(path);
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut head = [0u8; HEADER_LEN as usize];
    reader
        .read_exact(&mut head)
        .map_err(|_| LogFileError::NotALog {
            path: path.to_owned(),
        })?;
    if &head[..8] != MAGIC {
        return Err(LogFileError::NotALog {
            path: path.to_owned(),
        });
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(LogFileError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let mut offset = HEADER_LEN;
    let mut entries: BTreeMap<u64, (Span, Vec<u8>)> = BTreeMap::new();
    let mut contents = Contents::default();
    let mut record = Vec::new();
    loop {
        let mut rhead = [0u8; RECORD_HEAD];
        if !read_all_or_eof(&mut reader, &mut rhead).map_err(&io)? {
            break;
        }
        let len = u32::from_le_bytes([rhead[0], rhead[1], rhead[2], rhead[3]]) as usize;
        let crc = u32::from_le_bytes([rhead[4], rhead[5], rhead[6], rhead[7]]);
        if len == 0 || len > MAX_RECORD {
            break;
        }
        record.resize(len, 0);
        if !read_all_or_eof(&mut reader, &mut record).map_err(&io)? {
            break;
        }
        if crc32fast::hash(&record) != crc {
            break;
        }
        let bad = |reason: &str| LogFileError::Record {
            path: path.to_owned(),
            offset,
            reason: reason.to_owned(),
        };
        let body = &record[1..];
        match record[0] {
            ENTRY => {
                let (index, bytes) = body
                    .split_first_chunk::<8>()
                    .ok_or_else(|| bad("an entry without its index"))?;
                let index = u64::from_le_bytes(*index);
                let span = Span {
                    offset: offset + (RECORD_HEAD + 1 + 8) as u64,
                    len: u32::try_from(bytes.len()).map_err(|_| bad("an entry over 4 GiB"))?,
                };
                entries.insert(index, (span, bytes.to_vec()));
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
                entries = entries.split_off(&upto.index.saturating_add(1));
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
        offset += (RECORD_HEAD + len) as u64;
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

/// Fills `buf` from `reader`; `false` if the reader ended first (at once or
/// part way: a torn record).
fn read_all_or_eof(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl LogFile {
    /// Opens the log at `path`, creating an empty one if there is none,
    /// and reads it whole. A torn last batch is cut off (and said so).
    pub fn open(path: &Path) -> Result<(LogFile, Contents), LogFileError> {
        let io = io_error(path);
        // A compaction that did not finish left only its temporary file.
        let _ = std::fs::remove_file(temp_path(path));
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = replace_with(path, &header()).map_err(&io)?;
                sync_parent(path).map_err(&io)?;
                file
            }
            Err(e) => return Err(io(e)),
        };
        let scanned = scan(path, &file)?;
        let length = file.metadata().map_err(&io)?.len();
        if length > scanned.end {
            tracing::warn!(
                log = %path.display(),
                at = scanned.end,
                bytes = length - scanned.end,
                "cutting off the Raft log's torn or damaged tail (a batch a crash interrupted: nobody had been answered for it)"
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
            end: scanned.end,
            live: scanned.live,
            vote: contents.vote,
            committed: contents.committed,
            purged: contents.purged,
            failed: None,
        };
        Ok((log, contents))
    }

    /// The readers' side: the file and where each entry is.
    pub fn disk(&self) -> Arc<Mutex<Disk>> {
        self.disk.clone()
    }

    /// The file's size as last written.
    pub fn file_len(&self) -> u64 {
        self.end
    }

    /// Writes `ops` in one write and one fsync, then compacts the file if
    /// that is due. Nothing of a failed batch counts as written.
    pub fn write(&mut self, ops: &[Op<'_>]) -> Result<(), LogWriteError> {
        if let Some(source) = &self.failed {
            return Err(LogWriteError::Failed {
                path: self.path.clone(),
                source: source.clone(),
            });
        }
        let mut buf = Vec::new();
        // Where each written entry's bytes start in `buf`.
        let mut written: Vec<(u64, usize, usize)> = Vec::new();
        for op in ops {
            match op {
                Op::Entries(entries) => {
                    for (index, bytes) in entries.iter() {
                        let at = put_entry(&mut buf, *index, bytes);
                        written.push((*index, at, bytes.len()));
                    }
                }
                Op::Truncate(from) => put_record(&mut buf, TRUNCATE, &[&from.to_le_bytes()]),
                Op::Purge(upto) => put_record(&mut buf, PURGE, &[&encode(upto)]),
                Op::Vote(vote) => put_record(&mut buf, VOTE, &[&encode(vote)]),
                Op::Committed(committed) => put_record(&mut buf, COMMITTED, &[&encode(committed)]),
            }
        }
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
        {
            let mut disk = lock(&self.disk);
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
        }
        let dead = self.end - HEADER_LEN - self.live;
        if dead >= COMPACT_FLOOR && dead >= self.live {
            self.compact();
        }
        Ok(())
    }

    /// Rewrites the file with only what is live. A failure leaves the old
    /// file in use, whole, and is only logged.
    fn compact(&mut self) {
        let mut disk = lock(&self.disk);
        let mut buf = header();
        put_state(&mut buf, self.vote.as_ref(), self.committed, self.purged);
        let mut index = BTreeMap::new();
        let mut bytes = Vec::new();
        for (i, span) in &disk.index {
            bytes.resize(span.len as usize, 0);
            if let Err(e) = self.file.read_exact_at(&mut bytes, span.offset) {
                tracing::warn!(log = %self.path.display(), error = %e, "cannot compact the Raft log (reading it); it is kept as it is");
                return;
            }
            let at = put_entry(&mut buf, *i, &bytes);
            index.insert(
                *i,
                Span {
                    offset: at as u64,
                    len: span.len,
                },
            );
        }
        match replace_with(&self.path, &buf) {
            Ok(file) => {
                let file = Arc::new(file);
                disk.file = file.clone();
                disk.index = index;
                self.file = file;
                self.end = buf.len() as u64;
                if let Err(e) = sync_parent(&self.path) {
                    // Until the rename is on disk a crash brings back the
                    // old file, without what is appended to the new one:
                    // nothing more may be written.
                    tracing::error!(log = %self.path.display(), error = %e, "compacted the Raft log, but cannot fsync its directory; the log takes no more writes");
                    self.failed = Some(Arc::new(e));
                }
            }
            Err(e) => {
                tracing::warn!(log = %self.path.display(), error = %e, "cannot compact the Raft log; it is kept as it is");
            }
        }
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

    #[test]
    fn a_torn_last_batch_is_cut_off_and_the_log_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.wal");
        let good_end = {
            let (mut log, _) = LogFile::open(&path).unwrap();
            log.write(&[Op::Entries(&entries(1..=3, 40))]).unwrap();
            log.file_len()
        };
        // A crash in the middle of the next batch: one whole record, then
        // half of another; and, separately, a record whose bytes were not
        // all written (its checksum fails).
        for (torn, kept) in [
            (
                {
                    let mut buf = Vec::new();
                    put_entry(&mut buf, 4, &[4; 40]);
                    let whole = buf.len();
                    put_entry(&mut buf, 5, &[5; 40]);
                    buf.truncate(whole + 20);
                    buf
                },
                vec![1, 2, 3, 4],
            ),
            (
                {
                    let mut buf = Vec::new();
                    put_entry(&mut buf, 4, &[4; 40]);
                    let n = buf.len();
                    buf[n - 1] ^= 0xff;
                    buf
                },
                vec![1, 2, 3],
            ),
        ] {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(good_end).unwrap();
            file.write_all_at(&torn, good_end).unwrap();
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
        // A snapshot at 900: the file keeps only the last hundred entries.
        log.write(&[Op::Purge(log_id(900))]).unwrap();
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

        // A record with a good checksum that this skiff cannot read.
        let mut unknown = header();
        put_record(&mut unknown, 99, &[b"?"]);
        std::fs::write(&path, &unknown).unwrap();
        let e = LogFile::open(&path).err().unwrap();
        assert!(matches!(e, LogFileError::Record { offset: 12, .. }), "{e}");
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
