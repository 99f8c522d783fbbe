//! Node lifecycle on the leader: heartbeats are kept in memory only (never
//! written to Raft); a node silent for longer than the grace period is
//! marked NotReady (Ready=Unknown) and tainted unreachable; if it stays
//! silent for the eviction delay, its pods are deleted so their owners
//! recreate them elsewhere, but for DaemonSets' pods, which belong to
//! their node, and pods that tolerate the unreachable taint for ever.
//! Those deletes are forced (no grace period): a silent node can neither
//! stop its pods nor confirm that it has, and failover must not wait for
//! it; a pod that starts terminating there later is forced out too. But a
//! StatefulSet's pod is only marked for deletion (its grace period, as
//! Kubernetes' taint eviction deletes): its replacement takes its name, so
//! it comes only once the node confirms the pod stopped or someone
//! force-deletes it, Kubernetes' at-most-one pod per identity (a silent
//! node may still be running it, on its disk or its network). A
//! node that speaks again is marked Ready and untainted. A new leader
//! starts every node with a fresh grace period.
//! Each step is an Event, as Kubernetes' node lifecycle and taint eviction
//! controllers record them: `NodeNotReady` on the node and on each of its
//! pods, `NodeReady` on the node, `TaintManagerEviction` on each pod
//! evicted.
//!
//! Defaults: 1 s heartbeats, 4.5 s grace (five heartbeats in a row must be
//! lost), eviction 5 s later. A lossy link that drops 20% of heartbeats
//! may rarely flip a node to NotReady; evicting needs ten seconds of
//! silence, which such a link practically never produces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controllers::{Context, ReconcileError};
use crate::events::{EventType, InvolvedObject};
use crate::writer;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::now_rfc3339;
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::{owners, IntoObject, Kind};

/// The taint a silent node gets, as in Kubernetes.
pub const UNREACHABLE_TAINT: &str = skiff_objects::placement::TAINT_UNREACHABLE;
/// The components its Events are recorded as (Kubernetes' names).
const NODE_CONTROLLER: &str = "node-controller";
const EVICTION_CONTROLLER: &str = "taint-eviction-controller";

/// When nodes were last heard from. Lives in the memory of whichever
/// master receives the heartbeats (the leader).
#[derive(Default)]
pub struct HeartbeatTable {
    last: Mutex<HashMap<String, Instant>>,
}

impl HeartbeatTable {
    pub fn record(&self, node: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(node) {
            Some(t) => *t = Instant::now(),
            None => {
                last.insert(node.to_owned(), Instant::now());
            }
        }
    }

    /// Every node's last heartbeat.
    pub fn snapshot(&self) -> Vec<(String, Instant)> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, t)| (n.clone(), *t))
            .collect()
    }

    pub fn last(&self, node: &str) -> Option<Instant> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
    }
}

/// Timing of failure detection.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    /// Silence after which a node is NotReady.
    pub grace: Duration,
    /// Further silence after which its pods are evicted.
    pub eviction_delay: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            grace: Duration::from_millis(4500),
            eviction_delay: Duration::from_secs(5),
        }
    }
}

/// Runs the lifecycle loop until `shutdown`.
pub async fn run(
    ctx: Context,
    heartbeats: Arc<HeartbeatTable>,
    config: LifecycleConfig,
    shutdown: CancellationToken,
) {
    // Heartbeats received before this master led were not seen here.
    let started = Instant::now();
    let mut silent: HashMap<String, Silence> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tracing::info!(controller = "node-lifecycle", ?config, "controller started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&ctx, &heartbeats, config, started, &mut silent).await {
            tracing::warn!(error = %e, "node lifecycle pass failed");
        }
    }
    tracing::info!(controller = "node-lifecycle", "controller stopped");
}

async fn pass(
    ctx: &Context,
    heartbeats: &HeartbeatTable,
    config: LifecycleConfig,
    started: Instant,
    silent: &mut HashMap<String, Silence>,
) -> Result<(), ReconcileError> {
    let now = Instant::now();
    let (nodes, _) = ctx.store.list(Kind::Node, None)?;
    for object in nodes {
        let Some(Body::Node(node)) = &object.kind else {
            continue;
        };
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let last = heartbeats.last(&name).unwrap_or(started).max(started);
        let alive = now.duration_since(last) <= config.grace;
        let ready = ready_status(node);
        let tainted = node
            .spec
            .as_ref()
            .is_some_and(|s| s.taints.iter().any(|t| t.key == UNREACHABLE_TAINT));
        if alive {
            silent.remove(&name);
            // Marked by us earlier: Ready=Unknown, or tainted even though the
            // agent has since re-registered as Ready.
            if ready == "Unknown" || tainted {
                tracing::info!(node = %name, "node is heard from again: Ready");
                set_ready(ctx, node.clone(), true).await?;
                node_status_event(ctx, &object, &name, "NodeReady");
            }
            continue;
        }
        let silence = silent.entry(name.clone()).or_insert(Silence {
            since: now,
            evicted: false,
        });
        if ready == "True" {
            tracing::warn!(node = %name, silent_ms = now.duration_since(last).as_millis() as u64, "node stopped heartbeating: NotReady");
            set_ready(ctx, node.clone(), false).await?;
            node_status_event(ctx, &object, &name, "NodeNotReady");
            mark_pods_not_ready(ctx, &name);
            continue;
        }
        // Once is enough: a NotReady, tainted node is given no new pods.
        // But a pod deleted there later would wait for the node forever.
        if silence.evicted {
            evict_pods(ctx, &name, Eviction::TerminatingOnly).await?;
        } else if now.duration_since(silence.since) >= config.eviction_delay {
            evict_pods(ctx, &name, Eviction::Everything).await?;
            silence.evicted = true;
        }
    }
    Ok(())
}

/// `Node <name> status is now: <status>` on the node.
fn node_status_event(ctx: &Context, node: &skiff_proto::api::Object, name: &str, status: &str) {
    let message = format!("Node {name} status is now: {status}");
    ctx.events
        .for_component(NODE_CONTROLLER)
        .normal(node, status, message);
}

/// A `NodeNotReady` Event on each active pod of the node, as Kubernetes'
/// `MarkPodsNotReady` records (skiff's agents report the pods' readiness
/// themselves).
fn mark_pods_not_ready(ctx: &Context, node: &str) {
    let events = ctx.events.for_component(NODE_CONTROLLER);
    for object in ctx.store.pods_on_node(node) {
        let Some(pod) = StoredPod::read(object) else {
            continue;
        };
        if !pods::is_active(pod.meta(), &pod.pod) {
            continue;
        }
        let involved = InvolvedObject::of_meta(Kind::Pod, pod.meta());
        events.record(
            involved,
            EventType::Warning,
            "NodeNotReady",
            "Node is not ready",
        );
    }
}

/// A node this leader has not heard from.
struct Silence {
    since: Instant,
    evicted: bool,
}

fn ready_status(node: &v1::Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown")
}

/// Sets the Ready condition and the unreachable taints.
async fn set_ready(ctx: &Context, mut node: v1::Node, ready: bool) -> writer::Result<()> {
    let now = now_rfc3339();
    let status = node.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.r#type != "Ready");
    status.conditions.push(if ready {
        v1::NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time: now.clone(),
            last_transition_time: now.clone(),
            reason: "KubeletReady".into(),
            message: "skiff agent is posting ready status".into(),
        }
    } else {
        v1::NodeCondition {
            r#type: "Ready".into(),
            status: "Unknown".into(),
            last_heartbeat_time: String::new(),
            last_transition_time: now.clone(),
            reason: "NodeStatusUnknown".into(),
            message: "Kubelet stopped posting node status.".into(),
        }
    });
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
    if !ready {
        for effect in ["NoSchedule", "NoExecute"] {
            spec.taints.push(v1::Taint {
                key: UNREACHABLE_TAINT.into(),
                value: String::new(),
                effect: effect.into(),
                time_added: now.clone(),
            });
        }
    }
    // Unconditional: the lifecycle owns these fields.
    if let Some(m) = node.metadata.as_mut() {
        m.resource_version.clear();
    }
    let written = ctx.writer.update(node.clone().into_object()).await?;
    let mut with_status = match written.kind {
        Some(Body::Node(n)) => n,
        _ => node.clone(),
    };
    with_status.status = node.status;
    ctx.writer.update_status(with_status.into_object()).await?;
    Ok(())
}

/// Whether a pod stays on a node gone too long: a DaemonSet's pod belongs
/// to its node and has nowhere else to go (its controller gives every
/// pod an unlimited toleration of the unreachable taint too; this holds
/// even for one that lost it).
fn stays_on_its_node(pod: &StoredPod) -> bool {
    let daemon = owners::controlled_by(pod.meta(), Kind::DaemonSet).is_some();
    daemon || tolerates_unreachable(&pod.pod)
}

/// Whether a pod is a StatefulSet's member: one identity, never two pods
/// of it, so a silent node's copy is never forced out.
fn has_an_identity(pod: &StoredPod) -> bool {
    owners::controlled_by(pod.meta(), Kind::StatefulSet).is_some()
}

/// Whether a pod tolerates being on an unreachable node forever.
fn tolerates_unreachable(pod: &pods::Pod) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.into_iter().flatten().any(|t| {
        let (key, operator) = (t.key.as_deref(), t.operator.as_deref());
        let key_ok = (key.unwrap_or("").is_empty() && operator == Some("Exists"))
            || key == Some(UNREACHABLE_TAINT);
        let effect_ok = matches!(t.effect.as_deref(), None | Some("" | "NoExecute"));
        key_ok && effect_ok && t.toleration_seconds.is_none()
    })
}

/// Which pods of a node gone too long are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eviction {
    /// Every pod that has not finished, but DaemonSets' pods and those that
    /// tolerate the unreachable taint forever.
    Everything,
    /// Only pods being deleted already (terminating).
    TerminatingOnly,
}

/// Force-deletes the pods bound to a node that has been gone too long;
/// StatefulSets' pods are marked for deletion instead, and left marked.
async fn evict_pods(ctx: &Context, node: &str, which: Eviction) -> Result<(), ReconcileError> {
    let mut deletes = tokio::task::JoinSet::new();
    for object in ctx.store.pods_on_node(node) {
        let Some(pod) = StoredPod::read(object) else {
            continue;
        };
        let terminating = is_being_deleted(pod.meta());
        let identity = has_an_identity(&pod);
        let evicted = match which {
            Eviction::Everything if identity => !terminating && !stays_on_its_node(&pod),
            Eviction::Everything => terminating || !stays_on_its_node(&pod),
            Eviction::TerminatingOnly => terminating && !identity,
        };
        if !evicted || pods::is_finished(&pod.pod) {
            continue;
        }
        let options = if identity {
            DeleteOptions::default()
        } else {
            DeleteOptions::force()
        };
        let meta = pod.meta().clone();
        tracing::info!(node, pod = %meta.name, namespace = %meta.namespace, "evicting pod from unreachable node");
        let message = format!("Marking for deletion Pod {}/{}", meta.namespace, meta.name);
        ctx.events.for_component(EVICTION_CONTROLLER).record(
            InvolvedObject::of_meta(Kind::Pod, &meta),
            EventType::Normal,
            "TaintManagerEviction",
            message,
        );
        let writer = ctx.writer.clone();
        deletes.spawn(async move {
            let (namespace, name) = (&meta.namespace, &meta.name);
            writer
                .delete_with(Kind::Pod, namespace, name, options)
                .await
        });
    }
    while let Some(joined) = deletes.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_not_found() => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(source) => {
                return Err(ReconcileError::Task {
                    what: "eviction",
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects};
    use crate::controllers::ObjectReads;
    use skiff_objects::ObjectExt;
    use skiff_proto::api::Object;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n1}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tolerant-on-n1}
spec:
  nodeName: n1
  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-n2}
spec: {nodeName: n2, containers: [{name: c, image: busybox}]}
"#;

    fn node(objects: &RecordingObjects, name: &str) -> (String, bool) {
        match objects
            .get(Kind::Node, "", name)
            .unwrap()
            .map(std::sync::Arc::unwrap_or_clone)
        {
            Some(Object {
                kind: Some(Body::Node(n)),
            }) => {
                let tainted = n
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.taints.iter().any(|t| t.key == UNREACHABLE_TAINT));
                (ready_status(&n).to_owned(), tainted)
            }
            _ => panic!("no node {name}"),
        }
    }

    fn pods(objects: &RecordingObjects) -> Vec<String> {
        objects
            .objects(Kind::Pod)
            .iter()
            .map(|o| o.meta().name.clone())
            .collect()
    }

    /// `CLUSTER` seeded, and node lifecycle running on it with the default
    /// timings until the token is cancelled.
    fn start_lifecycle() -> (
        Arc<RecordingObjects>,
        Arc<HeartbeatTable>,
        CancellationToken,
    ) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let heartbeats = Arc::new(HeartbeatTable::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            context(&objects),
            heartbeats.clone(),
            LifecycleConfig::default(),
            shutdown.clone(),
        ));
        (objects, heartbeats, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_goes_not_ready_then_loses_its_pods_and_comes_back_when_heard() {
        let (objects, heartbeats, shutdown) = start_lifecycle();
        // n2 heartbeats every second; n1 is silent from the start.
        let beating = heartbeats.clone();
        let beats = tokio::spawn(async move {
            loop {
                beating.record("n2");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let wait = |ms| tokio::time::sleep(Duration::from_millis(ms));

        wait(4_000).await;
        assert_eq!(
            node(&objects, "n1"),
            ("True".into(), false),
            "within the grace"
        );
        wait(1_000).await;
        assert_eq!(
            node(&objects, "n1"),
            ("Unknown".into(), true),
            "after 4.5 s"
        );
        assert_eq!(node(&objects, "n2"), ("True".into(), false));
        assert_eq!(pods(&objects).len(), 3, "no eviction before the delay");

        let recorded = || -> Vec<(String, String, String)> {
            let events = objects.events().into_iter();
            events
                .map(|e| (e.reason, e.involved.kind, e.involved.name))
                .collect()
        };
        let event = |reason: &str, kind: &str, name: &str| {
            (reason.to_owned(), kind.to_owned(), name.to_owned())
        };
        assert_eq!(
            recorded(),
            [
                event("NodeNotReady", "Node", "n1"),
                event("NodeNotReady", "Pod", "on-n1"),
                event("NodeNotReady", "Pod", "tolerant-on-n1"),
            ]
        );
        assert_eq!(
            objects.events()[0].message,
            "Node n1 status is now: NodeNotReady"
        );

        wait(5_000).await;
        assert_eq!(
            pods(&objects),
            ["on-n2", "tolerant-on-n1"],
            "evicted 5 s after NotReady, except what tolerates it"
        );
        let eviction = objects.events().pop().expect("an eviction Event");
        assert_eq!(eviction.reason, "TaintManagerEviction");
        assert_eq!(eviction.message, "Marking for deletion Pod default/on-n1");

        heartbeats.record("n1");
        wait(500).await;
        assert_eq!(node(&objects, "n1"), ("True".into(), false), "heard again");
        assert_eq!(recorded().last(), Some(&event("NodeReady", "Node", "n1")));
        beats.abort();
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_deleted_on_a_silent_node_is_forced_out() {
        let (objects, _heartbeats, shutdown) = start_lifecycle();
        // n1 silent from the start: its pods are evicted after 9.5 s, but
        // the one that tolerates it.
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert!(pods(&objects).contains(&"tolerant-on-n1".to_owned()));
        // Deleted meanwhile, it would wait for n1's agent for ever.
        let deleted = objects.remove(Kind::Pod, "default", "tolerant-on-n1", "");
        assert!(!deleted.unwrap().meta().deletion_timestamp.is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !pods(&objects).contains(&"tolerant-on-n1".to_owned()),
            "forced out: {:?}",
            pods(&objects)
        );
        shutdown.cancel();
    }

    /// A node with a DaemonSet's pod, which has no toleration of its own,
    /// and another pod.
    const DAEMON_POD: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: agent-x
  ownerReferences:
  - {apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: u1, controller: true}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-x}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
"#;

    /// A node with a StatefulSet's member and a Deployment-like pod.
    const MEMBER_POD: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  ownerReferences:
  - {apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u1, controller: true}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-x}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
"#;

    #[tokio::test(start_paused = true)]
    async fn a_statefulsets_pod_on_a_silent_node_is_marked_never_forced() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(MEMBER_POD);
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            context(&objects),
            Arc::new(HeartbeatTable::default()),
            LifecycleConfig::default(),
            shutdown.clone(),
        ));
        // n1 is silent from the start: evicted after 9.5 s. web-x goes at
        // once; db-0 is marked and stays, however long n1 is silent, so
        // that no second db-0 starts while n1 may still run this one.
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(pods(&objects), ["db-0"]);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let stored = objects.get(Kind::Pod, "default", "db-0").unwrap();
        let member = stored.expect("db-0 is kept until n1 confirms");
        assert!(!member.meta().deletion_timestamp.is_empty(), "marked");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemonsets_pod_stays_on_a_silent_node() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(DAEMON_POD);
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            context(&objects),
            Arc::new(HeartbeatTable::default()),
            LifecycleConfig::default(),
            shutdown.clone(),
        ));
        // n1 is silent from the start: NotReady after 4.5 s, evicted 5 s
        // later, but for the pod that belongs to it.
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(node(&objects, "n1"), ("Unknown".into(), true));
        assert_eq!(pods(&objects), ["agent-x"]);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_on_the_next_pass() {
        use crate::controllers::recording::{Failure, WriteOp};
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        objects.fail_next(
            WriteOp::UpdateStatus,
            Kind::Node,
            Some("n1"),
            Failure::Unavailable,
        );
        let heartbeats = Arc::new(HeartbeatTable::default());
        heartbeats.record("n2");
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            context(&objects),
            heartbeats.clone(),
            LifecycleConfig {
                grace: Duration::from_secs(1),
                eviction_delay: Duration::from_secs(60),
            },
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(node(&objects, "n1").0, "True", "the first write failed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(node(&objects, "n1").0, "Unknown", "the next pass wrote it");
        shutdown.cancel();
    }
}
