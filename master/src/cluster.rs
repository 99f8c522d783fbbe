//! One master's view of the Raft cluster: proposing writes, confirming
//! leadership for linearizable reads, membership changes (joining,
//! removing a member, re-addressing one, this master's own recorded
//! addresses), each member's state as the leader sees it, and who leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::store::network::{PeerContacts, PeerRelease};
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
    /// Raft could not take the proposal (it is shutting down or failed),
    /// or took it and lost its leadership before the outcome was known
    /// (`ProposeError::Indeterminate`: the write may have been stored).
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
    /// An operator's membership change that would do harm; nothing was
    /// changed.
    #[error(transparent)]
    MembershipRefused(#[from] MembershipRefused),
    /// This master was to lead (as a sole voter does by itself) but did
    /// not within the caller's deadline.
    #[error("this master did not become the leader within {waited:?} ({reason})")]
    NotLeading { waited: Duration, reason: String },
    /// This master leads as far as it knows, but a quorum did not confirm
    /// it within the caller's deadline (a slow or unreachable follower).
    #[error("this master could not confirm with a quorum that it still leads within {waited:?} ({reason}); retry shortly")]
    LeadershipUnconfirmed { waited: Duration, reason: String },
}

/// Why an operator's membership change was refused, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipRefused {
    #[error("there is no member {0}; `skiff cluster members` lists them")]
    NotAMember(NodeId),
    #[error("member {0} is the cluster's last voter: without it nothing can be decided; to make a new cluster from its data, stop it and start it once with --cluster-reset")]
    LastVoter(NodeId),
    #[error("member {0} leads the cluster and is answering this call; removing the leader leaves the cluster without one until the others elect another, so it is refused: stop that master (the others elect a new leader within seconds) and remove it then")]
    Leader(NodeId),
    /// Re-addressing: the master answering at the new addresses could not
    /// be confirmed to be this member. Recording another master's address
    /// could let two quorums form.
    #[error("member {id} was not re-addressed to {node}: {reason}")]
    Unverified {
        id: NodeId,
        node: MemberNode,
        reason: String,
    },
}

/// One member as this master sees it; on the leader, with its
/// replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub node: MemberNode,
    pub voter: bool,
    pub leader: bool,
    /// The last log index it holds: for this master its own, for others
    /// what the leader's replication knows (`None` elsewhere, or before
    /// it has replicated anything).
    pub matched: Option<u64>,
    /// How long ago it last answered this master's Raft traffic (zero for
    /// this master itself; `None` if it has not since this master started).
    pub last_contact: Option<Duration>,
    /// The release it named in its last answer (this master's own for
    /// itself; `None` before it answered, or for a build before
    /// releases were named).
    pub release: Option<PeerRelease>,
}

/// How many times a membership change is tried again while another one
/// is still being committed, 200 ms apart.
const MEMBERSHIP_BUSY_RETRIES: u32 = 50;

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

/// What [`Cluster::readdress`] found about this master's recorded
/// addresses, and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readdress {
    /// The membership records this master at the addresses it advertises.
    Unchanged,
    /// This master is the cluster's only member and was recorded at `old`;
    /// the membership now holds the advertised addresses.
    Updated { old: MemberNode },
    /// The membership records this master at `recorded`, but it shares the
    /// cluster with `members - 1` others, so nothing was changed.
    Shared {
        recorded: MemberNode,
        members: usize,
    },
    /// This master is not in the membership it knows (it has not joined
    /// yet).
    NotAMember,
}

/// What [`Cluster::readdress`] should do for master `id` advertising `me`,
/// given the membership's `(id, node, is_voter)` members: `Updated` means
/// "update".
fn readdress_plan(
    id: NodeId,
    me: &MemberNode,
    members: &[(NodeId, MemberNode, bool)],
) -> Readdress {
    let Some((_, recorded, _)) = members.iter().find(|(m, _, _)| *m == id) else {
        return Readdress::NotAMember;
    };
    if recorded == me {
        Readdress::Unchanged
    } else if members.len() == 1 {
        Readdress::Updated {
            old: recorded.clone(),
        }
    } else {
        Readdress::Shared {
            recorded: recorded.clone(),
            members: members.len(),
        }
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
    /// When each peer last answered this master's Raft traffic.
    pub contacts: PeerContacts,
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
        // What is left of the deadline, but never less than a moment.
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100))
        };
        let mut pause = CONFIRM_RETRY_FIRST;
        let read_log_id = loop {
            // The Raft core answers within a heartbeat round; the deadline
            // bounds it too, so a stalled core fails the read, not hangs it.
            let Ok(answer) = tokio::time::timeout(left(), self.raft.get_read_log_id()).await else {
                self.read_index.inc(&["failed"]);
                return Err(ClusterError::LeadershipUnconfirmed {
                    waited: started.elapsed(),
                    reason: "the Raft core did not answer the read-index request".to_owned(),
                });
            };
            match answer {
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
        // Applying is local work; give it what is left of the deadline.
        self.raft
            .wait(Some(left()))
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
        crate::store::known_leader(&self.raft)
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

    /// Every member with what this master knows of it: on the leader, how
    /// far each has replicated (openraft's replication metrics) and when
    /// it last answered ([`PeerContacts`]).
    pub fn member_statuses(&self) -> Vec<MemberStatus> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.as_ref();
        membership
            .nodes()
            .map(|(id, node)| {
                let me = *id == self.id;
                let matched = if me {
                    m.last_log_index
                } else {
                    replication
                        .and_then(|r| r.get(id))
                        .and_then(|l| l.as_ref())
                        .map(|l| l.index)
                };
                MemberStatus {
                    id: *id,
                    node: node.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    matched,
                    last_contact: if me {
                        Some(Duration::ZERO)
                    } else {
                        self.contacts.since(*id)
                    },
                    release: if me {
                        Some(self.contacts.own().clone())
                    } else {
                        self.contacts.release_of(*id)
                    },
                }
            })
            .collect()
    }

    /// The lowest data format every member (voters and learners: all
    /// apply the log) reads: the leader writes each moved kind as a
    /// document only from the format it moved at
    /// (`skiff_objects::legacy_bodies`), in the protobuf model older
    /// releases read before. The lowest of what each member named in its
    /// last Raft answer, with what every member named before, as recorded
    /// in the store (`crate::recorded_format`), standing in for a member
    /// that has not answered since this master started, so that a member
    /// that is down does not turn the cluster back.
    pub fn members_data_format(&self) -> u32 {
        // The record stands in for a member that has not answered, never
        // for one that named an earlier format.
        let recorded = self.recorded_data_format();
        self.member_statuses()
            .into_iter()
            .map(|m| m.release.map_or(recorded, |r| r.data_format))
            .min()
            .unwrap_or(0)
    }

    /// The data format recorded in the store as every member's
    /// ([`DATA_FORMAT_RECORD`], written by `crate::recorded_format`); `0`
    /// for none, or a record that does not read.
    pub fn recorded_data_format(&self) -> u32 {
        let (namespace, name) = DATA_FORMAT_RECORD;
        let stored = self
            .store
            .cache()
            .get(skiff_objects::Kind::ConfigMap, namespace, name);
        stored.as_deref().and_then(recorded_format_of).unwrap_or(0)
    }

    /// The lowest data format the members named in their last Raft
    /// answers. `0` while a member runs a release before the formats were
    /// named, or has not answered since this master started.
    pub fn members_named_format(&self) -> u32 {
        lowest_format(self.member_statuses().into_iter().map(|m| m.release))
    }

    /// `NotLeader` (with a hint) unless this master leads.
    fn require_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ClusterError::NotLeader {
                leader: self.leader().map(|(_, n)| n),
            })
        }
    }

    /// Removes member `id`: a voter stops voting and leaves (openraft's
    /// joint consensus: the remaining voters, and those of the old
    /// membership, must each have a quorum, so one dead member of three
    /// can be removed), a learner just leaves. Refused, changing nothing,
    /// when `id` is no member, the last voter, or this master while it
    /// leads. Must run on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<()> {
        self.require_leader()?;
        let members = self.members();
        let Some((_, _, voter)) = members.iter().find(|(m, _, _)| *m == id) else {
            return Err(MembershipRefused::NotAMember(id).into());
        };
        let voters = members.iter().filter(|(_, _, v)| *v).count();
        if *voter && voters == 1 {
            return Err(MembershipRefused::LastVoter(id).into());
        }
        if id == self.id {
            return Err(MembershipRefused::Leader(id).into());
        }
        let change = if *voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_membership(change, false).await
    }

    /// Records member `id` at `node` (openraft's `SetNodes`; voters stay
    /// the same). The caller has confirmed that the master answering at
    /// `node` is member `id` and advertises exactly these addresses:
    /// recording another master's address could let two quorums form
    /// (openraft's "Update Node" docs). Must run on the leader.
    pub async fn readdress_member(&self, id: NodeId, node: MemberNode) -> Result<()> {
        self.require_leader()?;
        let members = self.members();
        let Some((_, recorded, _)) = members.iter().find(|(m, _, _)| *m == id) else {
            return Err(MembershipRefused::NotAMember(id).into());
        };
        if *recorded == node {
            return Ok(());
        }
        let change = ChangeMembers::SetNodes(BTreeMap::from([(id, node)]));
        self.change_membership(change, true).await
    }

    /// One membership change, tried again while an earlier one is still
    /// being committed (they are serialised).
    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, MemberNode>,
        retain: bool,
    ) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            match self.raft.change_membership(change.clone(), retain).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(ClusterError::NotLeader {
                        leader: f.leader_node,
                    })
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(e),
                ))) if attempt < MEMBERSHIP_BUSY_RETRIES => {
                    tracing::debug!(error = %e, "membership change busy, retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ClusterError::Membership(Box::new(e))),
            }
        }
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

    /// Makes the membership record this master at `me`, the addresses it
    /// advertises now, when it records others (the machine's address
    /// changed, or the master advertised loopback before) and this master
    /// is the cluster's only member: it waits, up to `within`, to lead (a
    /// sole voter elects itself), then replaces its own node in the
    /// membership with openraft's `SetNodes`, the voters staying the same.
    ///
    /// With other members nothing is changed. openraft can replace a
    /// member's address only wholesale (`SetNodes`; `add_learner` keeps the
    /// address of a node it already has), and were the new address another
    /// master's, two quorums could form (openraft's "Update Node" docs):
    /// peer connections check the cluster CA, not which master answers.
    /// Such a member is re-addressed by an operator instead
    /// ([`Cluster::readdress_member`], once the master at the new address
    /// has confirmed who it is), or removed and joined again.
    pub async fn readdress(&self, me: &MemberNode, within: Duration) -> Result<Readdress> {
        // Raft publishes the membership it starts with shortly after it
        // starts; until then the metrics show none.
        let _ = self
            .raft
            .wait(Some(within))
            .metrics(
                |m| m.membership_config.membership().nodes().next().is_some(),
                "the membership is known",
            )
            .await;
        let plan = readdress_plan(self.id, me, &self.members());
        if !matches!(plan, Readdress::Updated { .. }) {
            return Ok(plan);
        }
        self.raft
            .wait(Some(within))
            .state(ServerState::Leader, "the sole member leads")
            .await
            .map_err(|e| ClusterError::NotLeading {
                waited: within,
                reason: e.to_string(),
            })?;
        // Again, now that this master leads: the membership it leads with.
        let plan = readdress_plan(self.id, me, &self.members());
        if !matches!(plan, Readdress::Updated { .. }) {
            return Ok(plan);
        }
        let change = ChangeMembers::SetNodes(BTreeMap::from([(self.id, me.clone())]));
        // Retried while the previous membership is not committed yet.
        self.change_membership(change, true).await?;
        Ok(plan)
    }
}

/// The lowest data format among `releases` (`None`: one that named none,
/// read as `0`).
/// The ConfigMap (namespace, name) that records the data format every
/// member has named ([`Cluster::recorded_data_format`]).
pub const DATA_FORMAT_RECORD: (&str, &str) = ("kube-system", "skiff-data-format");
/// The key of its data holding the format.
pub const DATA_FORMAT_KEY: &str = "format";

/// The format a record ([`DATA_FORMAT_RECORD`]) holds, if it reads.
pub fn recorded_format_of(object: &skiff_proto::api::Object) -> Option<u32> {
    let Some(skiff_proto::api::object::Kind::Generic(document)) = &object.kind else {
        return None;
    };
    let content = skiff_objects::generic::content(document);
    let format = content.get("data")?.get(DATA_FORMAT_KEY)?.as_str()?;
    format.trim().parse().ok()
}

fn lowest_format(releases: impl Iterator<Item = Option<PeerRelease>>) -> u32 {
    releases
        .map(|release| release.map_or(0, |r| r.data_format))
        .min()
        .unwrap_or(0)
}

#[cfg(test)]
impl Cluster {
    /// A real one-member Raft cluster (member 1) in a temp dir, recorded at
    /// `me`, for tests.
    pub(crate) async fn one_member(me: MemberNode) -> (tempfile::TempDir, Cluster) {
        use crate::store::log_store::LogStore;

        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join(crate::store::LOG_FILE)).unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let raft = crate::store::test_raft(log, store.clone()).await;
        raft.initialize(BTreeMap::from([(1, me)])).await.unwrap();
        let registry = skiff_telemetry::Registry::new();
        let cluster = Cluster {
            id: 1,
            raft: raft.clone(),
            store,
            proposer: Proposer::spawn(raft),
            commit_latency: registry.histogram("commit_seconds", "test", &[]),
            read_index: registry.counter("read_index_total", "test", &["result"]),
            contacts: PeerContacts::new(crate::store::network::PeerRelease::this(
                skiff_objects::legacy_bodies::LATEST_FORMAT,
            )),
        };
        (dir, cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_format_is_the_lowest_one_named() {
        let release = |format: u32| Some(PeerRelease::this(format));
        assert_eq!(lowest_format([release(4), release(5)].into_iter()), 4);
        assert_eq!(lowest_format([release(4), release(3)].into_iter()), 3);
        assert_eq!(
            lowest_format([release(4), None].into_iter()),
            0,
            "one that named no release: an older build, or not answered yet"
        );
    }

    fn node(raft: &str, api: &str) -> MemberNode {
        MemberNode {
            raft_addr: raft.into(),
            api_addr: api.into(),
        }
    }

    #[test]
    fn only_a_sole_member_at_another_address_is_readdressed() {
        let old = node("127.0.0.1:6444", "127.0.0.1:6443");
        let new = node("192.168.1.10:6444", "192.168.1.10:6443");
        let other = node("192.168.1.11:6444", "192.168.1.11:6443");
        assert_eq!(
            readdress_plan(1, &new, &[(1, old.clone(), true)]),
            Readdress::Updated { old: old.clone() }
        );
        assert_eq!(
            readdress_plan(1, &new, &[(1, new.clone(), true)]),
            Readdress::Unchanged
        );
        assert_eq!(
            readdress_plan(1, &new, &[(1, old.clone(), true), (2, other.clone(), true)]),
            Readdress::Shared {
                recorded: old,
                members: 2,
            }
        );
        assert_eq!(
            readdress_plan(3, &new, &[(2, other, true)]),
            Readdress::NotAMember
        );
    }

    #[tokio::test]
    async fn a_sole_member_takes_its_new_address_and_keeps_its_id() {
        let old = node("127.0.0.1:6444", "127.0.0.1:6443");
        let new = node("192.168.1.10:6444", "192.168.1.10:6443");
        let (_dir, cluster) = Cluster::one_member(old.clone()).await;
        let within = Duration::from_secs(10);
        assert_eq!(
            cluster.readdress(&new, within).await.unwrap(),
            Readdress::Updated { old }
        );
        assert_eq!(cluster.members(), vec![(1, new.clone(), true)]);
        assert_eq!(
            cluster.readdress(&new, within).await.unwrap(),
            Readdress::Unchanged
        );
        // Still a working one-member cluster.
        assert_eq!(cluster.wait_for_leader(within).await, Some((1, new)));
    }

    #[tokio::test]
    async fn the_last_voter_stays_and_an_operator_readdresses_a_member() {
        let old = node("127.0.0.1:6444", "127.0.0.1:6443");
        let new = node("192.168.1.10:6444", "192.168.1.10:6443");
        let (_dir, cluster) = Cluster::one_member(old).await;
        cluster
            .raft
            .wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "the sole member leads")
            .await
            .unwrap();
        let last = cluster.remove_member(1).await;
        let refused = matches!(
            last,
            Err(ClusterError::MembershipRefused(
                MembershipRefused::LastVoter(1)
            ))
        );
        assert!(refused, "{last:?}");
        let unknown = cluster.remove_member(9).await;
        let refused = matches!(
            unknown,
            Err(ClusterError::MembershipRefused(
                MembershipRefused::NotAMember(9)
            ))
        );
        assert!(refused, "{unknown:?}");

        cluster.readdress_member(1, new.clone()).await.unwrap();
        assert_eq!(cluster.members(), vec![(1, new.clone(), true)]);
        let statuses = cluster.member_statuses();
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        let me = &statuses[0];
        assert!(me.leader && me.voter, "{me:?}");
        assert_eq!((&me.node, me.last_contact), (&new, Some(Duration::ZERO)));
        assert!(me.matched.is_some(), "{me:?}");
    }
}
