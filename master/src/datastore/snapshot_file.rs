//! One snapshot file (`.skiffsnap`): a consistent copy of the object store
//! that an operator keeps, copies elsewhere and restores with
//! `--cluster-reset --restore FILE`. Its layout:
//!
//! ```text
//! "SKIFSNAP"       8 bytes   magic
//! format version   u32 LE    FORMAT_VERSION
//! info length N    u32 LE
//! info             N bytes   bincode of SnapshotInfo: data format, skiff version, master,
//!                            time, revision, objects, last log id, membership
//! SHA-256          32 bytes  of the info bytes and the data
//! data length D    u64 LE
//! data             D bytes   the state machine's snapshot, as Raft sends it to a member
//! ```
//!
//! Reading checks the whole file before any of it is used: the magic, a
//! format this skiff reads, the exact length (a truncated or padded file is
//! refused), the checksum, then the data format the info names.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{data_format, this_skiff};
use crate::store::{LogId, NodeId, StoredMembership};

/// What every snapshot file begins with.
pub const MAGIC: &[u8; 8] = b"SKIFSNAP";
/// The layout above.
pub const FORMAT_VERSION: u32 = 1;
/// Snapshot files' extension.
pub const EXTENSION: &str = "skiffsnap";
/// The same, as a file name ends with it.
pub const DOT_EXTENSION: &str = ".skiffsnap";

/// Magic, format version, info length.
const PREFIX_LEN: usize = 8 + 4 + 4;
/// SHA-256, data length.
const SUFFIX_LEN: usize = 32 + 8;
/// More info than this is no header skiff wrote.
const MAX_INFO_LEN: u32 = 1 << 20;

/// What a snapshot holds, beside its data: enough to list it and to make
/// a cluster from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// The format of the state it carries (`data_format::SNAPSHOT_STATE`
    /// when taken).
    pub data_format: u32,
    /// The skiff that took it (`skiff 0.1.0`).
    pub written_by: String,
    /// The master that took it.
    pub node_id: NodeId,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// The store revision it holds.
    pub revision: u64,
    /// How many objects it holds.
    pub objects: u64,
    /// The last Raft log entry it covers.
    pub last_log_id: Option<LogId>,
    /// The membership as of that entry.
    pub membership: StoredMembership,
}

/// A snapshot file, read and checked.
#[derive(Debug, Clone)]
pub struct SnapshotContents {
    pub info: SnapshotInfo,
    /// The state machine's snapshot data.
    pub data: Vec<u8>,
    /// Its SHA-256, in hex.
    pub checksum: String,
}

/// Why a snapshot file cannot be used; nothing was taken from it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a skiff snapshot: it does not begin with SKIFSNAP")]
    NotASnapshot { path: PathBuf },
    #[error("snapshot {path} has file format {found}, and this skiff ({this}) reads format {reads}: downgrade refused (an older skiff cannot read a snapshot a newer one wrote); restore it with a skiff at least as new as the one that took it")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        reads: u32,
        this: String,
    },
    #[error("snapshot {path} is truncated: {what}; it was not written completely or was cut short when copied: use another copy or another snapshot")]
    Truncated { path: PathBuf, what: String },
    #[error("snapshot {path} has {extra} bytes after its data; it is damaged: use another copy or another snapshot")]
    TrailingBytes { path: PathBuf, extra: u64 },
    #[error("snapshot {path} fails its checksum (its header records SHA-256 {recorded}, its contents have {found}): it is damaged, and nothing was taken from it: use another copy or another snapshot")]
    ChecksumMismatch {
        path: PathBuf,
        recorded: String,
        found: String,
    },
    #[error("snapshot {path}: its header cannot be decoded ({reason}); it is damaged: use another copy or another snapshot")]
    BadHeader { path: PathBuf, reason: String },
    #[error("snapshot {path} was taken by {written_by} and holds data format {found}, and this skiff ({this}) reads data format {reads}: downgrade refused (an older skiff cannot read data a newer one wrote); restore it with {written_by} or newer")]
    NewerData {
        path: PathBuf,
        found: u32,
        reads: u32,
        written_by: String,
        this: String,
    },
}

type Result<T> = std::result::Result<T, SnapshotFileError>;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn checksum(info: &[u8], data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(info);
    hasher.update(data);
    hasher.finalize().into()
}

/// A snapshot file's bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The SHA-256 its header records, in hex.
    pub checksum: String,
}

/// The file's bytes for `info` and `data`, with the checksum of both.
pub fn encode(info: &SnapshotInfo, data: &[u8]) -> Encoded {
    // Serializing plain structs into a Vec cannot fail.
    let info_bytes = bincode::serialize(info).unwrap_or_default();
    let sum = checksum(&info_bytes, data);
    let mut out = Vec::with_capacity(PREFIX_LEN + info_bytes.len() + SUFFIX_LEN + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(info_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&info_bytes);
    out.extend_from_slice(&sum);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    Encoded {
        bytes: out,
        checksum: hex(&sum),
    }
}

/// Reads and checks the snapshot file at `path`.
pub fn read(path: &Path) -> Result<SnapshotContents> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode(path, &bytes)
}

/// The little-endian number in `bytes` (of its exact length).
fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Checks the prefix (magic, format version) and returns the info length.
fn check_prefix(path: &Path, prefix: &[u8]) -> Result<usize> {
    if !prefix.starts_with(MAGIC) {
        if MAGIC.starts_with(prefix) {
            return Err(SnapshotFileError::Truncated {
                path: path.to_owned(),
                what: format!("it has only {} bytes", prefix.len()),
            });
        }
        return Err(SnapshotFileError::NotASnapshot {
            path: path.to_owned(),
        });
    }
    if prefix.len() < PREFIX_LEN {
        return Err(SnapshotFileError::Truncated {
            path: path.to_owned(),
            what: format!("it has only {} bytes", prefix.len()),
        });
    }
    let version = le_u32(&prefix[8..12]);
    if version != FORMAT_VERSION {
        if version > FORMAT_VERSION {
            return Err(SnapshotFileError::NewerFormat {
                path: path.to_owned(),
                found: version,
                reads: FORMAT_VERSION,
                this: this_skiff(),
            });
        }
        return Err(SnapshotFileError::BadHeader {
            path: path.to_owned(),
            reason: format!("file format {version} is none skiff ever wrote"),
        });
    }
    let info_len = le_u32(&prefix[12..16]);
    if info_len > MAX_INFO_LEN {
        return Err(SnapshotFileError::BadHeader {
            path: path.to_owned(),
            reason: format!("a {info_len}-byte header is beyond any skiff wrote"),
        });
    }
    Ok(info_len as usize)
}

/// Decodes the info as `bincode::serialize` wrote it, reading no length
/// beyond the info's own (a damaged header is not checked against the
/// checksum when it is only listed, and must not ask for gigabytes).
fn decode_info(path: &Path, info: &[u8]) -> Result<SnapshotInfo> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(info.len() as u64)
        .deserialize(info)
        .map_err(|e| SnapshotFileError::BadHeader {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Checks `bytes`, the contents of the snapshot file at `path`.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<SnapshotContents> {
    let info_len = check_prefix(path, &bytes[..bytes.len().min(PREFIX_LEN)])?;
    let data_at = PREFIX_LEN + info_len + SUFFIX_LEN;
    if bytes.len() < data_at {
        return Err(SnapshotFileError::Truncated {
            path: path.to_owned(),
            what: format!(
                "its header needs {data_at} bytes and the file has {}",
                bytes.len()
            ),
        });
    }
    let info_bytes = &bytes[PREFIX_LEN..PREFIX_LEN + info_len];
    let recorded = &bytes[PREFIX_LEN + info_len..PREFIX_LEN + info_len + 32];
    let data_len = le_u64(&bytes[data_at - 8..data_at]);
    let present = (bytes.len() - data_at) as u64;
    if present < data_len {
        return Err(SnapshotFileError::Truncated {
            path: path.to_owned(),
            what: format!("its header says {data_len} bytes of data follow, and {present} do"),
        });
    }
    if present > data_len {
        return Err(SnapshotFileError::TrailingBytes {
            path: path.to_owned(),
            extra: present - data_len,
        });
    }
    let data = &bytes[data_at..];
    let found = checksum(info_bytes, data);
    if found.as_slice() != recorded {
        return Err(SnapshotFileError::ChecksumMismatch {
            path: path.to_owned(),
            recorded: hex(recorded),
            found: hex(&found),
        });
    }
    let info = decode_info(path, info_bytes)?;
    if info.data_format > data_format::SNAPSHOT_STATE {
        return Err(SnapshotFileError::NewerData {
            path: path.to_owned(),
            found: info.data_format,
            reads: data_format::SNAPSHOT_STATE,
            written_by: info.written_by,
            this: this_skiff(),
        });
    }
    Ok(SnapshotContents {
        info,
        data: data.to_vec(),
        checksum: hex(&found),
    })
}

/// The header of the snapshot file at `path` and its recorded checksum,
/// read without the data and not checked against it (for listing).
pub fn read_info(path: &Path) -> Result<(SnapshotInfo, String)> {
    let io = |source| SnapshotFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut prefix = Vec::with_capacity(PREFIX_LEN);
    (&mut file)
        .take(PREFIX_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(io)?;
    let info_len = check_prefix(path, &prefix)?;
    let mut rest = Vec::with_capacity(info_len + 32);
    (&mut file)
        .take((info_len + 32) as u64)
        .read_to_end(&mut rest)
        .map_err(io)?;
    if rest.len() < info_len + 32 {
        return Err(SnapshotFileError::Truncated {
            path: path.to_owned(),
            what: "it ends inside its header".to_owned(),
        });
    }
    let info = decode_info(path, &rest[..info_len])?;
    Ok((info, hex(&rest[info_len..])))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::store::MemberNode;

    fn info() -> SnapshotInfo {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        let node = MemberNode {
            raft_addr: "10.0.0.1:6444".into(),
            api_addr: "10.0.0.1:6443".into(),
        };
        let membership = Membership::new(vec![BTreeSet::from([7])], BTreeMap::from([(7, node)]));
        SnapshotInfo {
            data_format: data_format::SNAPSHOT_STATE,
            written_by: this_skiff(),
            node_id: 7,
            created_unix: 1_700_000_000,
            revision: 99,
            objects: 5,
            last_log_id: Some(log_id),
            membership: StoredMembership::new(Some(log_id), membership),
        }
    }

    fn path() -> PathBuf {
        PathBuf::from("/snapshots/test-1700000000.skiffsnap")
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let data = b"the state machine's snapshot".to_vec();
        let encoded = encode(&info(), &data);
        let bytes = encoded.bytes;
        let read = decode(&path(), &bytes).unwrap();
        assert_eq!(read.info, info());
        assert_eq!(read.data, data);
        assert_eq!(read.checksum, encoded.checksum);
        assert_eq!(read.checksum.len(), 64);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.skiffsnap");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(read_info(&file).unwrap(), (info(), read.checksum.clone()));
        assert_eq!(super::read(&file).unwrap().data, data);
    }

    #[test]
    fn a_changed_byte_anywhere_fails_the_checksum() {
        let bytes = encode(&info(), b"some data").bytes;
        let data_at = bytes.len() - b"some data".len();
        let info_at = PREFIX_LEN + 1;
        for at in [data_at, bytes.len() - 1, info_at] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let e = decode(&path(), &damaged).unwrap_err();
            let mismatch = matches!(e, SnapshotFileError::ChecksumMismatch { .. });
            assert!(mismatch, "byte {at}: {e}");
            let message = e.to_string();
            assert!(
                message.contains("fails its checksum") && message.contains("nothing was taken"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_truncated_or_padded_file_is_refused() {
        let bytes = encode(&info(), b"some data").bytes;
        for len in [
            0,
            4,
            8,
            12,
            PREFIX_LEN + 3,
            bytes.len() - 40,
            bytes.len() - 1,
        ] {
            let e = decode(&path(), &bytes[..len]).unwrap_err();
            let truncated = matches!(e, SnapshotFileError::Truncated { .. });
            assert!(truncated, "{len} bytes: {e}");
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        let e = decode(&path(), &padded).unwrap_err();
        let trailing = matches!(e, SnapshotFileError::TrailingBytes { extra: 1, .. });
        assert!(trailing, "{e}");
    }

    #[test]
    fn other_files_and_newer_formats_are_refused_with_what_to_do() {
        let e = decode(&path(), b"{\"not\": \"a snapshot\"}").unwrap_err();
        let other = matches!(e, SnapshotFileError::NotASnapshot { .. });
        assert!(other, "{e}");

        let mut newer = encode(&info(), b"x").bytes;
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = decode(&path(), &newer).unwrap_err().to_string();
        assert!(e.contains("downgrade refused"), "{e}");

        let newer_data = SnapshotInfo {
            data_format: data_format::SNAPSHOT_STATE + 1,
            written_by: "skiff 9.0.0".into(),
            ..info()
        };
        let newer_data = encode(&newer_data, b"x").bytes;
        let e = decode(&path(), &newer_data).unwrap_err().to_string();
        assert!(
            e.contains("skiff 9.0.0") && e.contains("downgrade refused"),
            "{e}"
        );
    }
}
