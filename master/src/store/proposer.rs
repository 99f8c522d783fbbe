//! Batches concurrent writes into one Raft entry.
//!
//! openraft 0.9 appends one client request per log write and waits for its
//! fsync before taking the next, so without batching every write would
//! cost a full fsync round on each member. The proposer collects whatever
//! commands are waiting, proposes them as one [`Proposal`], and hands each
//! caller its own result. A few proposals may be in flight at once, so the
//! next batch gathers while the previous one is being replicated.

use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{ApplyResult, Command, MemberNode, Proposal, Raft};

/// Most commands in one proposal.
const MAX_BATCH: usize = 1024;
/// Proposals submitted and not yet answered.
const IN_FLIGHT: usize = 2;

/// Why a proposal was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader")]
    NotLeader { leader: Option<MemberNode> },
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
        // Submitted here, in order; answered in the background.
        let submitted = raft.client_write_ff(Proposal { commands }).await;
        tokio::spawn(async move {
            let _slot = slot;
            let outcome = match submitted {
                Ok(response) => response
                    .await
                    .map_err(|_| ProposeError::Raft("raft dropped the proposal".to_owned())),
                Err(fatal) => Err(ProposeError::Raft(fatal.to_string())),
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
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => fail_all(
                    replies,
                    ProposeError::NotLeader {
                        leader: f.leader_node,
                    },
                ),
                Ok(Err(e)) => fail_all(replies, ProposeError::Raft(e.to_string())),
                Err(e) => fail_all(replies, e),
            }
        });
    }
}

fn fail_all(replies: Vec<Reply>, error: ProposeError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}
