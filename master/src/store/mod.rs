//! The replicated object store: openraft for consensus, an append-only
//! file for the Raft log and redb for the state machine's checkpoints.
//!
//! The state machine is a revisioned key-value map of objects. Every
//! committed write that changes something gets the next cluster-wide
//! revision, which objects carry as `metadata.resourceVersion`; updates and
//! deletes may be conditional on it. Every change is also kept, for a while,
//! as a watch event, so watchers can resume from any recent revision.
//!
//! - [`log_store`]: the Raft log, with group commit, kept in its file by
//!   [`log_file`].
//! - [`state_machine`]: objects, revisions, watch history, snapshots.
//! - [`network`] / [`peer_service`]: Raft RPCs between masters over gRPC.
//! - [`command`]: what a log entry asks the state machine to do.
//! - [`cache`]: the decoded, indexed objects every replica keeps, with
//!   RBAC's bindings by subject ([`rbac_index`]).

pub mod cache;
pub mod command;
pub mod log_file;
pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod proposer;
pub mod rbac_index;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;
use std::time::Duration;

pub use command::{
    AddressField, Applied, ApplyResult, Command, Proposal, ProposalResult, WriteError,
};

/// The Raft log's file, in a master's data dir.
pub const LOG_FILE: &str = "raft-log.wal";
/// The state machine's database (its checkpoints), in a master's data dir.
pub const STATE_FILE: &str = "state.redb";
/// The latest Raft snapshot, which openraft sends to members that are far
/// behind, in a master's data dir.
pub const RAFT_SNAPSHOT_FILE: &str = "snapshot.bin";

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

/// The leader `raft` knows of, with its addresses, if any.
pub fn known_leader(raft: &Raft) -> Option<(NodeId, MemberNode)> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?.clone();
    Some((id, node))
}
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;

/// Adds `value` to the set at `at` in one of the object cache's indexes
/// (`add`), or removes it, dropping a set left empty.
fn edit_set<K: std::hash::Hash + Eq, V: Ord>(
    map: &mut std::collections::HashMap<K, std::collections::BTreeSet<V>>,
    at: K,
    value: V,
    add: bool,
) {
    if add {
        map.entry(at).or_default().insert(value);
    } else if let Some(set) = map.get_mut(&at) {
        set.remove(&value);
        if set.is_empty() {
            map.remove(&at);
        }
    }
}

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

/// How often a leader sends heartbeats, by default (etcd's default too).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// The election timeout `T`, by default; see [`RaftTimings`]. With 500 ms
/// a follower calls an election after 1.5–2 s of silence, about what
/// etcd's defaults allow, and a surviving master takes writes 1.7–1.9 s
/// after the leader died even with both cores busy (750 ms: 2.6–2.9 s),
/// with no false elections in the same runs (BENCHMARKS.md). Links that
/// lose a second or more at a time (Wi-Fi) want a longer one.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// Raft's clock: how often the leader sends heartbeats, and the election
/// timeout `T`. A follower that has heard nothing for a random time
/// between `T` and `2T` (openraft adds its leader lease, `2T`, after a
/// leader was known, so `3T`–`4T` in practice) calls an election. openraft
/// also gives a heartbeat confirming a linearizable read one heartbeat
/// interval to be answered; the read is retried within its own deadline
/// when it is not (see `Cluster::linearize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimings {
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
        }
    }
}

/// Raft timings that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RaftTimingsError {
    #[error("the Raft heartbeat interval must be at least 10ms, not {0:?}")]
    HeartbeatTooShort(Duration),
    #[error("the Raft election timeout ({election:?}) must be at least three heartbeat intervals ({heartbeat:?} each), or followers call elections between heartbeats")]
    ElectionTooShort {
        election: Duration,
        heartbeat: Duration,
    },
}

impl RaftTimings {
    /// Checks that the timings can work together.
    pub fn check(self) -> Result<RaftTimings, RaftTimingsError> {
        if self.heartbeat_interval < Duration::from_millis(10) {
            return Err(RaftTimingsError::HeartbeatTooShort(self.heartbeat_interval));
        }
        if self.election_timeout < self.heartbeat_interval * 3 {
            return Err(RaftTimingsError::ElectionTooShort {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        Ok(self)
    }
}

/// Raft settings for small machines on LANs: the given timings, a
/// snapshot every `snapshot_after_entries` entries, after which the log is
/// purged except for the last fifth of that (for followers slightly behind).
pub fn raft_config(timings: RaftTimings, snapshot_after_entries: u64) -> openraft::Config {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    openraft::Config {
        cluster_name: "skiff".to_owned(),
        heartbeat_interval: millis(timings.heartbeat_interval),
        election_timeout_min: millis(timings.election_timeout),
        election_timeout_max: millis(timings.election_timeout) * 2,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 1000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_after_entries),
        max_in_snapshot_log_to_keep: snapshot_after_entries / 5,
        ..Default::default()
    }
}

/// Member 1's Raft over `log` and `store`, with the default timings and a
/// throwaway cluster CA: what a one-member cluster in a test runs on.
#[cfg(test)]
pub(crate) async fn test_raft(
    log: log_store::LogStore,
    store: std::sync::Arc<state_machine::ObjectStore>,
) -> Raft {
    let ca = skiff_security::ClusterCa::generate().unwrap();
    let transport = skiff_security::ClientTransport::to_masters(ca.cert_pem(), None).unwrap();
    let config = raft_config(RaftTimings::default(), 10_000)
        .validate()
        .unwrap();
    Raft::new(
        1,
        std::sync::Arc::new(config),
        network::PeerNetwork::new(transport, network::PeerRelease::this(0)),
        log,
        state_machine::StateMachine::new(store),
    )
    .await
    .unwrap()
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
            let log = LogStore::open(&dir.path().join(super::LOG_FILE)).expect("open log");
            let sm = StateMachine::new(ObjectStore::open(dir.path()).expect("open state"));
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn raft_timings_that_cannot_work_are_refused() {
        use super::{RaftTimings, RaftTimingsError};
        use std::time::Duration;
        let ms = Duration::from_millis;
        assert!(RaftTimings::default().check().is_ok());
        let config = super::raft_config(RaftTimings::default(), 100);
        assert!(config.clone().validate().is_ok());
        assert_eq!(
            (
                config.heartbeat_interval,
                config.election_timeout_min,
                config.election_timeout_max
            ),
            (100, 500, 1000)
        );
        assert_eq!(
            RaftTimings {
                heartbeat_interval: ms(5),
                election_timeout: ms(750)
            }
            .check(),
            Err(RaftTimingsError::HeartbeatTooShort(ms(5)))
        );
        assert_eq!(
            RaftTimings {
                heartbeat_interval: ms(300),
                election_timeout: ms(600)
            }
            .check(),
            Err(RaftTimingsError::ElectionTooShort {
                election: ms(600),
                heartbeat: ms(300)
            })
        );
    }

    /// A leader that stops and starts again leads only after winning a new
    /// term (see `LogStore::read_vote`), never its old one at once.
    #[tokio::test]
    async fn a_restarted_leader_leads_again_only_in_a_new_term() {
        use openraft::ServerState;
        use std::collections::BTreeMap;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let start = || async {
            let log = LogStore::open(&dir.path().join(super::LOG_FILE)).unwrap();
            let store = ObjectStore::open(dir.path()).unwrap();
            super::test_raft(log, store).await
        };
        let leads = |raft: super::Raft| async move {
            raft.wait(Some(Duration::from_secs(10)))
                .state(ServerState::Leader, "this member leads")
                .await
                .unwrap();
            let term = raft.metrics().borrow().current_term;
            raft.shutdown().await.unwrap();
            term
        };
        let raft = start().await;
        let me = super::MemberNode {
            raft_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
        };
        raft.initialize(BTreeMap::from([(1, me)])).await.unwrap();
        let first = leads(raft).await;
        let second = leads(start().await).await;
        assert!(
            second > first,
            "led term {first}, then term {second} after a restart"
        );
        let third = leads(start().await).await;
        assert!(third > second, "term {second}, then {third}");
    }

    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(RedbStoreBuilder).expect("openraft storage suite");
    }
}
