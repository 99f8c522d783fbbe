//! One master's view of the Raft cluster: proposing writes, confirming
//! leadership for linearizable reads, membership changes, and who leads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::store::proposer::{ProposeError, Proposer};
use crate::store::state_machine::{ObjectStore, StateMachineError};
use crate::store::{Applied, Command, MemberNode, NodeId, Raft, WriteError};

/// Why openraft could not confirm leadership for a read.
pub type ReadIndexError = RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>;
/// Why openraft could not change the membership.
pub type MembershipError = RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>;

/// Why a cluster operation did not happen here.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This master is not the leader; the caller should ask `leader`.
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<MemberNode> },
    /// The state machine refused the write; nothing was stored.
    #[error(transparent)]
    Refused(#[from] WriteError),
    /// Raft could not take the proposal (it is shutting down or failed);
    /// the write may be retried on this or another master.
    #[error(transparent)]
    Proposal(ProposeError),
    /// Raft failed while confirming leadership (it stopped or its storage
    /// failed).
    #[error("raft: {0}")]
    ReadIndex(#[source] Box<ReadIndexError>),
    /// Raft shut down while a read waited for its entries to be applied.
    #[error("raft: shutting down")]
    ShuttingDown,
    /// The local replica could not be read or decoded.
    #[error("raft: {0}")]
    State(#[from] StateMachineError),
    #[error("membership change: {0}")]
    Membership(#[source] Box<MembershipError>),
    /// This master leads as far as it knows, but a quorum did not confirm
    /// it within the caller's deadline (a slow or unreachable follower).
    #[error("this master could not confirm with a quorum that it still leads within {waited:?} ({reason}); retry shortly")]
    LeadershipUnconfirmed { waited: Duration, reason: String },
}

/// The first pause before asking a quorum again to confirm leadership.
const CONFIRM_RETRY_FIRST: Duration = Duration::from_millis(20);
/// The longest pause between confirmation attempts.
const CONFIRM_RETRY_MAX: Duration = Duration::from_millis(400);

fn leader_hint(leader: &Option<MemberNode>) -> String {
    match leader {
        Some(n) => format!(" (the leader serves its API at {})", n.api_addr),
        None => " and no leader is known yet".to_owned(),
    }
}

pub type Result<T> = std::result::Result<T, ClusterError>;

impl ClusterError {
    /// The state machine's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&WriteError> {
        match self {
            ClusterError::Refused(refused) => Some(refused),
            _ => None,
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.refusal(), Some(WriteError::NotFound { .. }))
    }

    /// An object of that name exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self.refusal(), Some(WriteError::AlreadyExists { .. }))
    }

    /// A conditional write lost to a newer resourceVersion.
    pub fn is_conflict(&self) -> bool {
        matches!(self.refusal(), Some(WriteError::Conflict { .. }))
    }
}

/// A master's handle on Raft and on its replica of the object store.
#[derive(Clone)]
pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub store: Arc<ObjectStore>,
    pub proposer: Proposer,
    /// Observes each write's propose-to-applied time.
    pub commit_latency: Arc<skiff_telemetry::HistogramVec>,
    /// Leadership confirmations for linearizable reads, by result
    /// (`confirmed`, `retried`, `failed`, `not_leader`).
    pub read_index: Arc<skiff_telemetry::CounterVec>,
}

impl Cluster {
    /// Proposes a command and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> Result<Applied> {
        let started = std::time::Instant::now();
        let outcome = self.proposer.propose(command).await;
        self.commit_latency
            .observe(&[], started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(refused)) => Err(ClusterError::Refused(refused)),
            Err(ProposeError::NotLeader { leader }) => Err(ClusterError::NotLeader { leader }),
            Err(e) => Err(ClusterError::Proposal(e)),
        }
    }

    /// Confirms with a quorum that this master still leads and waits until
    /// everything committed before now is applied here; a read after this is
    /// linearizable. Gives up after `within` (the caller's deadline).
    ///
    /// Why retrying keeps reads linearizable: each attempt is a whole
    /// read-index round (Raft thesis §6.4). openraft takes the read index,
    /// `max(committed, this leader's first entry)`, when the attempt starts,
    /// which is after the caller's request arrived, and then sends a fresh
    /// heartbeat to every voter; the attempt succeeds only if a quorum
    /// accepts this leader's term in answer to that heartbeat. Any leader
    /// elected later must win a vote from that same quorum, so nothing
    /// committed before the attempt started is missing from the read index,
    /// and the read waits until the state machine has applied it. A failed
    /// attempt (a voter slower than openraft's heartbeat-long timeout) says
    /// nothing either way and nothing from it is used, so trying again with
    /// a new read index changes only the latency, never the guarantee. There
    /// is no lease and no clock assumption here.
    pub async fn linearize(&self, within: Duration) -> Result<()> {
        let started = Instant::now();
        let deadline = started + within;
        let mut pause = CONFIRM_RETRY_FIRST;
        let read_log_id = loop {
            match self.raft.get_read_log_id().await {
                Ok((read_log_id, _)) => {
                    self.read_index.inc(&["confirmed"]);
                    break read_log_id;
                }
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    self.read_index.inc(&["not_leader"]);
                    return Err(ClusterError::NotLeader {
                        leader: f.leader_node,
                    });
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                    if Instant::now() + pause >= deadline {
                        self.read_index.inc(&["failed"]);
                        return Err(ClusterError::LeadershipUnconfirmed {
                            waited: started.elapsed(),
                            reason: q.to_string(),
                        });
                    }
                    self.read_index.inc(&["retried"]);
                    tracing::debug!(reason = %q, retry_in = ?pause, "leadership not confirmed yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(CONFIRM_RETRY_MAX);
                }
                Err(e) => return Err(ClusterError::ReadIndex(Box::new(e))),
            }
        };
        let Some(read_log_id) = read_log_id else {
            return Ok(());
        };
        // Applying is local work; give it what is left of the deadline, but
        // never less than a moment.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(read_log_id.index), "linearizable read")
            .await
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => ClusterError::LeadershipUnconfirmed {
                    waited: started.elapsed(),
                    reason: format!(
                        "confirmed, but entry {} was not applied here in time",
                        read_log_id.index
                    ),
                },
                openraft::metrics::WaitError::ShuttingDown => ClusterError::ShuttingDown,
            })?;
        Ok(())
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<(NodeId, MemberNode)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Whether this master is the leader right now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Waits up to `timeout` for any leader to be known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, MemberNode)> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.leader(),
            }
        }
    }

    /// Members: `(id, node, is_voter)`.
    pub fn members(&self) -> Vec<(NodeId, MemberNode, bool)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), voters.contains(id)))
            .collect()
    }

    /// Adds a master: first as a learner that catches up, then as a voter.
    /// Idempotent, so a master that restarts mid-join can simply ask again.
    /// Must run on the leader.
    pub async fn add_member(&self, id: NodeId, node: MemberNode) -> Result<()> {
        if !self.is_leader() {
            return Err(ClusterError::NotLeader {
                leader: self.leader().map(|(_, n)| n),
            });
        }
        let already_voter = self
            .members()
            .iter()
            .any(|(m, n, voter)| *m == id && *voter && *n == node);
        if already_voter {
            return Ok(());
        }
        let mut attempt = 0u32;
        loop {
            let result = async {
                self.raft.add_learner(id, node.clone(), true).await?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
            }
            .await;
            match result {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(ClusterError::NotLeader {
                        leader: f.leader_node,
                    })
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))
                    if attempt < 50 =>
                {
                    // Another change is in flight; they are serialised.
                    tracing::debug!(error = %e, "membership change busy, retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ClusterError::Membership(Box::new(e))),
            }
        }
    }
}
