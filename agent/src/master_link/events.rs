//! Kubernetes Events about this node and its pods, as the kubelet records
//! them (`Pulling`, `Pulled`, `Created`, `Started`, `Killing`, `BackOff`,
//! `Unhealthy`, `Failed`), sent with `Nodes.RecordEvents`; the leader keeps
//! them in its memory, as the kubelet's, counting repeats on one Event.
//!
//! Best effort, and never in a pod worker's way: [`EventSender::send`]
//! never waits. Events wait in a bounded queue ([`QUEUE`]), where the same
//! event again counts on the one waiting; one task ([`event_loop`]) sends
//! them in batches of at most [`BATCH`], to the next master after a
//! failure, with backoff. What finds the queue full, what no master has
//! taken after [`ATTEMPTS`] tries in a row, and what the masters refuse
//! is dropped and counted (`skiff_agent_events_dropped_total{reason}`).

use std::sync::Arc;

use skiff_proto::node::{NodeEvent, RecordEventsRequest};
use skiff_proto::v1;
use skiff_telemetry::CounterVec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::masters::Masters;
use super::reconnect::Reconnect;

/// Most events waiting to be sent (distinct ones: repeats count on one).
pub const QUEUE: usize = 256;
/// Most events in one `RecordEvents` call.
pub const BATCH: usize = 64;
/// Failed sends in a row after which what waits is dropped.
pub const ATTEMPTS: u32 = 12;

/// The `reason` labels of dropped events.
pub const DROPPED_QUEUE_FULL: &str = "queue_full";
pub const DROPPED_UNREACHABLE: &str = "unreachable";
pub const DROPPED_REFUSED: &str = "refused";

/// Hands events to the event loop; cheap to clone.
#[derive(Clone)]
pub struct EventSender {
    queue: mpsc::Sender<NodeEvent>,
    dropped: Arc<CounterVec>,
}

/// An event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        }
    }
}

/// A sender, and the queue [`event_loop`] reads; `dropped` counts what
/// is dropped, by reason.
pub fn event_channel(dropped: Arc<CounterVec>) -> (EventSender, mpsc::Receiver<NodeEvent>) {
    let (queue, events) = mpsc::channel(QUEUE);
    (EventSender { queue, dropped }, events)
}

impl EventSender {
    /// Queues `event`, or drops it (counted) when the queue is full.
    pub fn send(&self, event: NodeEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.inc(&[DROPPED_QUEUE_FULL]);
        }
    }

    /// An event about container `container` of the pod with metadata
    /// `pod` (about the pod itself when `container` is empty).
    pub fn pod(
        &self,
        pod: &v1::ObjectMeta,
        container: &str,
        kind: EventKind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let field_path = if container.is_empty() {
            String::new()
        } else {
            format!("spec.containers{{{container}}}")
        };
        self.send(NodeEvent {
            kind: "Pod".to_owned(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            field_path,
            r#type: kind.as_str().to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            count: 1,
        });
    }
}

/// Sends the queued events of node `node_name` until `shutdown` or until
/// every [`EventSender`] is dropped.
pub async fn event_loop(
    masters: Masters,
    node_name: String,
    mut events: mpsc::Receiver<NodeEvent>,
    dropped: Arc<CounterVec>,
    shutdown: CancellationToken,
) {
    let mut pending: Vec<NodeEvent> = Vec::new();
    let mut i = 0;
    let mut backoff = Reconnect::new();
    let mut failures = 0;
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => add(&mut pending, event, &dropped),
                    None => return,
                },
            }
        }
        while let Ok(event) = events.try_recv() {
            add(&mut pending, event, &dropped);
        }
        let batch = pending.len().min(BATCH);
        let request = RecordEventsRequest {
            node_name: node_name.clone(),
            events: pending[..batch].to_vec(),
        };
        let answer = match masters.client(i) {
            Some(mut client) => client.record_events(request).await,
            None => Err(tonic::Status::unavailable("not a usable master address")),
        };
        match answer {
            Ok(answer) => {
                pending.drain(..batch);
                let refused = answer.into_inner().refused;
                if refused > 0 {
                    tracing::debug!(refused, "events about objects not this node's refused");
                    dropped.add(&[DROPPED_REFUSED], u64::from(refused));
                }
                failures = 0;
                backoff.reset();
            }
            // Refused as a whole, for good (or a master without the call):
            // sending it again would change nothing.
            Err(status)
                if matches!(
                    status.code(),
                    Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented
                ) =>
            {
                tracing::debug!(error = %status, "events refused; dropping them");
                pending.drain(..batch);
                dropped.add(&[DROPPED_REFUSED], batch as u64);
            }
            Err(status) => {
                failures += 1;
                tracing::debug!(error = %status, failures, "sending events failed");
                if failures >= ATTEMPTS {
                    tracing::warn!(
                        events = pending.len(),
                        "no master took the node's events; dropping them"
                    );
                    dropped.add(&[DROPPED_UNREACHABLE], pending.len() as u64);
                    pending.clear();
                    failures = 0;
                }
                i += 1;
                if !backoff.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Adds `event` to what waits: counted on an equal one waiting, else
/// queued when there is room, else dropped (counted).
fn add(pending: &mut Vec<NodeEvent>, event: NodeEvent, dropped: &CounterVec) {
    if let Some(same) = pending.iter_mut().find(|p| same_event(p, &event)) {
        same.count = same.count.saturating_add(event.count.max(1));
        return;
    }
    if pending.len() >= QUEUE {
        dropped.inc(&[DROPPED_QUEUE_FULL]);
        return;
    }
    pending.push(event);
}

/// Whether two events are the same but for their count.
fn same_event(a: &NodeEvent, b: &NodeEvent) -> bool {
    (
        &a.kind,
        &a.namespace,
        &a.name,
        &a.uid,
        &a.field_path,
        &a.r#type,
        &a.reason,
        &a.message,
    ) == (
        &b.kind,
        &b.namespace,
        &b.name,
        &b.uid,
        &b.field_path,
        &b.r#type,
        &b.reason,
        &b.message,
    )
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;
    use crate::master_link::fake_master::{within, TestPki};

    fn counter() -> Arc<CounterVec> {
        skiff_telemetry::Registry::new().counter("dropped", "Dropped events.", &["reason"])
    }

    fn pod() -> v1::ObjectMeta {
        v1::ObjectMeta {
            name: "web".into(),
            namespace: "shop".into(),
            uid: "u-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = counter();
        let (sender, _queue) = event_channel(dropped.clone());
        for _ in 0..QUEUE + 3 {
            sender.pod(&pod(), "web", EventKind::Normal, "Pulled", "pulled");
        }
        assert_eq!(dropped.get(&[DROPPED_QUEUE_FULL]), 3);
    }

    #[test]
    fn repeats_waiting_to_be_sent_count_on_one_event() {
        let dropped = counter();
        let (sender, mut queue) = event_channel(dropped.clone());
        sender.pod(&pod(), "web", EventKind::Warning, "BackOff", "Back-off");
        sender.pod(&pod(), "web", EventKind::Warning, "BackOff", "Back-off");
        sender.pod(&pod(), "", EventKind::Normal, "Pulled", "pulled");
        let mut pending = Vec::new();
        while let Ok(event) = queue.try_recv() {
            add(&mut pending, event, &dropped);
        }
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].count, 2);
        assert_eq!(pending[0].field_path, "spec.containers{web}");
        assert_eq!(pending[0].r#type, "Warning");
        assert_eq!(pending[1].field_path, "");
        assert_eq!(
            (pending[1].kind.as_str(), pending[1].uid.as_str()),
            ("Pod", "u-1")
        );
    }

    #[tokio::test]
    async fn events_reach_a_master_in_a_batch_after_a_failure() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.with(|s| {
            s.event_refusals
                .push_back(Status::unavailable("electing a leader"))
        });
        let dropped = counter();
        let (sender, queue) = event_channel(dropped.clone());
        sender.pod(&pod(), "web", EventKind::Normal, "Pulling", "Pulling image");
        sender.pod(
            &pod(),
            "web",
            EventKind::Normal,
            "Started",
            "Started container web",
        );
        let shutdown = CancellationToken::new();
        let link = tokio::spawn(event_loop(
            pki.masters(&[&master]),
            "pi-1".into(),
            queue,
            dropped.clone(),
            shutdown.clone(),
        ));
        let taken = master
            .until("events taken", |s| s.events_taken.first().cloned())
            .await;
        assert_eq!(taken.node_name, "pi-1");
        let reasons: Vec<&str> = taken.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Pulling", "Started"]);
        assert_eq!(
            master.with(|s| s.event_attempts),
            2,
            "refused once, then taken"
        );
        assert_eq!(dropped.get(&[DROPPED_UNREACHABLE]), 0);
        shutdown.cancel();
        within("the event loop to stop", link).await.unwrap();
    }
}
