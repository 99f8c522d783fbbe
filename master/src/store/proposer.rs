//! Batches concurrent writes into one Raft entry.
//!
//! openraft 0.9 appends one client request per log write and waits for its
//! fsync before taking the next, so without batching every write would
//! cost a full fsync round on each member. The proposer collects whatever
//! commands are waiting, proposes them as one [`Proposal`], and hands each
//! caller its own result. A few proposals may be in flight at once, so the
//! next batch gathers while the previous one is being replicated.
//!
//! A batch refused before it is proposed (this master does not lead) is
//! answered `NotLeader`, which is safe to send elsewhere. Once proposed,
//! its outcome is known only when openraft answers: a proposal that lost
//! its leadership on the way (openraft's `ForwardToLeader` after its entry
//! was cut from this log) may still be committed by another member, so it
//! is answered `Indeterminate`, never `NotLeader`, and nobody re-sends it.
//! A proposal whose master stops leading gives its slot back at once, and
//! its callers wait at most [`OUTCOME_AFTER_LEADERSHIP`] more: openraft
//! never answers a proposal whose entry a snapshot from the new leader
//! replaced, which would otherwise hold a slot, and stop this master's
//! writes, for good.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::{ServerState, Vote};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ApplyResult, Command, MemberNode, NodeId, Proposal, Raft, TypeConfig};

/// Most commands in one proposal.
const MAX_BATCH: usize = 1024;
/// Proposals submitted and not yet answered.
const IN_FLIGHT: usize = 2;
/// How long the callers of a proposal still wait for openraft's answer
/// once this master no longer leads: a truncation or the new leader's
/// commit answers within a few heartbeats.
pub const OUTCOME_AFTER_LEADERSHIP: Duration = Duration::from_secs(10);

/// Why a proposal was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// Nothing was proposed: this master does not lead.
    #[error("not the leader")]
    NotLeader { leader: Option<MemberNode> },
    /// Proposed, but this master stopped leading before it learnt the
    /// outcome: the write may or may not be stored, and must not be sent
    /// again as if it were not.
    #[error("the write was proposed, but leadership moved before its outcome was known ({0}); it may or may not have been stored: read the object before writing it again")]
    Indeterminate(String),
    #[error("raft: {0}")]
    Raft(String),
}

type Reply = oneshot::Sender<Result<ApplyResult, ProposeError>>;

/// Submits commands to Raft in batches.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl Proposer {
    /// Starts the batching task; it ends when every `Proposer` is dropped.
    pub fn spawn(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(batch_loop(raft, rx));
        Proposer { tx }
    }

    /// Proposes one command and waits for it to be committed and applied.
    pub async fn propose(&self, command: Command) -> Result<ApplyResult, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((command, reply))
            .await
            .map_err(|_| ProposeError::Raft("proposer stopped".to_owned()))?;
        rx.await
            .map_err(|_| ProposeError::Raft("proposal dropped".to_owned()))?
    }
}

async fn batch_loop(raft: Raft, mut rx: mpsc::Receiver<(Command, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let server = raft.server_metrics();
    loop {
        // Wait for a free slot first: everything that arrives meanwhile
        // joins the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut commands = vec![first.0];
        let mut replies = vec![first.1];
        while commands.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((c, r)) => {
                    commands.push(c);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        // Refused here, before anything is proposed, when this master
        // knows it does not lead: the one answer that is safe to retry.
        let leading = {
            let m = server.borrow();
            (m.state == ServerState::Leader && m.current_leader == Some(m.id)).then_some(m.vote)
        };
        let Some(vote) = leading else {
            let leader = super::known_leader(&raft).map(|(_, node)| node);
            fail_all(replies, ProposeError::NotLeader { leader });
            continue;
        };
        // Submitted here, in order; answered in the background.
        let submitted = raft.client_write_ff(Proposal { commands }).await;
        let server = server.clone();
        tokio::spawn(async move {
            let outcome = match submitted {
                Ok(response) => outcome_of(response, server, vote, slot).await,
                Err(fatal) => Err(ProposeError::Indeterminate(fatal.to_string())),
            };
            match outcome {
                Ok(Ok(written)) if written.data.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(written.data) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Ok(Ok(written)) => fail_all(
                    replies,
                    ProposeError::Raft(format!(
                        "log entry {} answered {} results for a different number of commands",
                        written.log_id.index,
                        written.data.len(),
                    )),
                ),
                // Its entry was cut from this log by a newer leader; with
                // five or more members another may still hold and commit it.
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => fail_all(
                    replies,
                    ProposeError::Indeterminate(
                        "a newer leader replaced its entry here".to_owned(),
                    ),
                ),
                Ok(Err(e)) => fail_all(replies, ProposeError::Raft(e.to_string())),
                Err(e) => fail_all(replies, e),
            }
        });
    }
}

/// What openraft says of this master's role (changes only with it).
type ServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, MemberNode>;

type Written =
    Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, MemberNode>>;

/// openraft's answer to a proposal made while leading with `vote`. The
/// slot is held while this master leads with that vote; once it does not,
/// the slot is given back and the answer waited for at most
/// [`OUTCOME_AFTER_LEADERSHIP`] more.
async fn outcome_of<E>(
    response: impl std::future::Future<Output = Result<Written, E>>,
    mut server: watch::Receiver<ServerMetrics>,
    vote: Vote<NodeId>,
    slot: OwnedSemaphorePermit,
) -> Result<Written, ProposeError> {
    tokio::pin!(response);
    let mut slot = Some(slot);
    let mut give_up: Option<Instant> = None;
    loop {
        let deadline = async {
            match give_up {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            answer = &mut response => {
                return answer.map_err(|_| {
                    ProposeError::Indeterminate("raft dropped the proposal".to_owned())
                });
            }
            changed = server.changed(), if slot.is_some() => {
                let leads = changed.is_ok() && {
                    let m = server.borrow();
                    m.state == ServerState::Leader && m.vote == vote
                };
                if !leads {
                    slot = None;
                    give_up = Some(Instant::now() + OUTCOME_AFTER_LEADERSHIP);
                }
            }
            () = deadline => {
                return Err(ProposeError::Indeterminate(format!(
                    "no answer {OUTCOME_AFTER_LEADERSHIP:?} after this master stopped leading"
                )));
            }
        }
    }
}

fn fail_all(replies: Vec<Reply>, error: ProposeError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(state: ServerState, vote: Vote<NodeId>) -> ServerMetrics {
        ServerMetrics {
            id: 1,
            vote,
            state,
            current_leader: (state == ServerState::Leader).then_some(1),
            membership_config: Default::default(),
        }
    }

    /// This master leading with `vote`, as its metrics say, and one slot
    /// of one taken.
    async fn leading_with_a_slot(
        vote: Vote<NodeId>,
    ) -> (
        watch::Sender<ServerMetrics>,
        watch::Receiver<ServerMetrics>,
        Arc<Semaphore>,
        OwnedSemaphorePermit,
    ) {
        let (tx, rx) = watch::channel(server(ServerState::Leader, vote));
        let slots = Arc::new(Semaphore::new(1));
        let slot = slots.clone().acquire_owned().await.unwrap();
        (tx, rx, slots, slot)
    }

    /// A proposal whose answer never comes (openraft drops it when a
    /// snapshot replaces its entry) gives its slot back as soon as this
    /// master stops leading, and is answered as of unknown outcome in the
    /// end, not as "not the leader", which would invite a second copy.
    #[tokio::test(start_paused = true)]
    async fn a_proposal_that_outlives_its_leadership_frees_its_slot_and_ends_indeterminate() {
        let vote = Vote::new_committed(3, 1);
        let (tx, rx, slots, slot) = leading_with_a_slot(vote).await;
        let never = std::future::pending::<Result<Written, ()>>();
        let started = Instant::now();
        let outcome = tokio::spawn(outcome_of(never, rx, vote, slot));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(slots.available_permits(), 0, "held while it leads");
        tx.send(server(ServerState::Follower, Vote::new(4, 2)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(slots.available_permits(), 1, "given back once it does not");
        let outcome = outcome.await.unwrap();
        assert!(
            matches!(&outcome, Err(ProposeError::Indeterminate(_))),
            "{outcome:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(60) + OUTCOME_AFTER_LEADERSHIP
                && waited < Duration::from_secs(61) + OUTCOME_AFTER_LEADERSHIP,
            "answered after {waited:?}"
        );
    }

    /// A new term, even led by this master again, is not the leadership
    /// the proposal was made under; an answer that comes in time is used.
    #[tokio::test(start_paused = true)]
    async fn an_answer_after_a_new_term_is_still_taken_while_it_comes_in_time() {
        let vote = Vote::new_committed(3, 1);
        let (tx, rx, slots, slot) = leading_with_a_slot(vote).await;
        let (answer, response) = oneshot::channel::<Written>();
        let outcome = tokio::spawn(outcome_of(response, rx, vote, slot));
        tx.send(server(ServerState::Leader, Vote::new_committed(5, 1)))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(slots.available_permits(), 1);
        let forward = ClientWriteError::ForwardToLeader(openraft::error::ForwardToLeader::empty());
        answer.send(Err(forward)).unwrap();
        let outcome = outcome.await.unwrap();
        assert!(
            matches!(outcome, Ok(Err(ClientWriteError::ForwardToLeader(_)))),
            "{outcome:?}"
        );
    }
}
