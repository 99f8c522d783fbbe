//! The replicated object store: openraft for consensus, redb for the Raft
//! log and for the state machine.
//!
//! The state machine is a revisioned key-value map of objects. Every
//! committed write that changes something gets the next cluster-wide
//! revision, which objects carry as `metadata.resourceVersion`; updates and
//! deletes may be conditional on it. Every change is also kept, for a while,
//! as a watch event, so watchers can resume from any recent revision.
//!
//! - [`log_store`]: the Raft log, with group commit.
//! - [`state_machine`]: objects, revisions, watch history, snapshots.
//! - [`network`] / [`peer_service`]: Raft RPCs between masters over gRPC.
//! - [`command`]: what a log entry asks the state machine to do.

pub mod command;
pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod proposer;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;

pub use command::{Applied, ApplyResult, Command, Proposal, ProposalResult, WriteError};

/// A Raft member: where its peers reach it and where its API is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberNode {
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the skiff object store.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = u64,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;

/// A storage failure as openraft wants it reported.
pub(crate) fn storage_io_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}

/// Log entries between snapshots, by default. Each entry is a batch of
/// writes, so this is at least as many writes.
pub const DEFAULT_SNAPSHOT_AFTER_ENTRIES: u64 = 5000;

/// Raft timing and snapshot settings tuned for small machines on LANs:
/// heartbeats every 150 ms, elections after 0.75–1.5 s of silence, a
/// snapshot every `snapshot_after_entries` entries, after which the log is
/// purged except for the last fifth of that (for followers slightly behind).
pub fn raft_config(snapshot_after_entries: u64) -> openraft::Config {
    openraft::Config {
        cluster_name: "skiff".to_owned(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 1000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_after_entries),
        max_in_snapshot_log_to_keep: snapshot_after_entries / 5,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::log_store::LogStore;
    use super::state_machine::{ObjectStore, StateMachine};
    use super::{StorageError, TypeConfig};

    /// Builds a fresh redb log and state machine in a temp dir per test.
    struct RedbStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbStoreBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = LogStore::open(&dir.path().join("raft-log.redb")).expect("open log");
            let sm = StateMachine::new(ObjectStore::open(dir.path()).expect("open state"));
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(RedbStoreBuilder).expect("openraft storage suite");
    }
}
