//! Pod garbage collection on the leader, as Kubernetes' PodGC controller
//! (`pkg/controller/podgc`) does it:
//! - Orphans: the pods bound to a node that does not exist (its Node was
//!   deleted, `kubectl delete node`, or never registered) once it has been
//!   missing for [`ORPHAN_QUARANTINE`] (Kubernetes' 40 s: a node about to
//!   register may have pods bound to it ahead of time). Each is marked
//!   Failed with the `DisruptionTarget` condition (`DeletionByPodGC`,
//!   "PodGC: node no longer exists") unless it has finished, then
//!   force-deleted, so its owner makes it again elsewhere. A StatefulSet's
//!   member goes too: deleting a Node is how an operator says its machine
//!   is gone, Kubernetes' way out of at-most-one pod per identity.
//! - Terminated pods: beyond `terminated_threshold` finished (Succeeded or
//!   Failed) pods (`--terminated-pod-gc-threshold`, Kubernetes' 12,500; 0:
//!   never), the excess is force-deleted, evicted pods first, then the
//!   oldest; pods being deleted already count as going.
//!
//! Unscheduled pods being deleted, which Kubernetes' PodGC also forces,
//! need nothing here: the store removes an unbound pod at once.
//!
//! No pass lists the pods: the nodes pods are bound to and the finished
//! pods oldest first come from the cache's indexes (`pod_nodes`,
//! `finished_pod_count`, `oldest_finished_pods`), each bound node is one
//! lookup, and one node's pods come from the pods-by-node index. A pass
//! runs every [`CHECK_EVERY`] (Kubernetes' 20 s) and when a missing node's
//! quarantine ends; a deleted Node, or a pod bound to a node that does not
//! exist, starts the quarantine at once. What a pass fails to delete, the
//! next one tries again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use skiff_proto::api::{EventType, Object};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::store::state_machine::{KindFilter, Notification, StoredEvent};
use skiff_objects::deletion::{is_being_deleted, DeleteOptions};
use skiff_objects::kube_time;
use skiff_objects::pods::{self, bound_node, PodCondition, StoredPod};
use skiff_objects::{Kind, ObjectExt};

/// How long a node must be missing before the pods bound to it go
/// (Kubernetes' `quarantineTime`).
pub const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);
/// Finished pods kept before the oldest go (Kubernetes'
/// `--terminated-pod-gc-threshold` default).
pub const DEFAULT_TERMINATED_THRESHOLD: usize = 12_500;
/// How often a pass runs without being asked (Kubernetes' `gcCheckPeriod`).
pub const CHECK_EVERY: Duration = Duration::from_secs(20);

/// The condition an orphaned pod is failed with, as Kubernetes writes it.
const DISRUPTION_TARGET: &str = "DisruptionTarget";
const DELETION_BY_POD_GC: &str = "DeletionByPodGC";
const NODE_GONE: &str = "PodGC: node no longer exists";

/// What pod garbage collection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodGcConfig {
    /// Finished pods kept before the oldest are deleted; 0: never.
    pub terminated_threshold: usize,
    /// How long a node is missing before its pods are deleted.
    pub orphan_quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_threshold: DEFAULT_TERMINATED_THRESHOLD,
            orphan_quarantine: ORPHAN_QUARANTINE,
        }
    }
}

/// Runs pod garbage collection until `shutdown`.
pub async fn run(ctx: Context, config: PodGcConfig, shutdown: CancellationToken) {
    let mut live = ctx
        .store
        .subscribe_to(KindFilter::only(&[Kind::Pod, Kind::Node]));
    let mut collector = PodGc::new(ctx, config);
    let mut check = tokio::time::interval(CHECK_EVERY);
    tracing::info!(controller = "pod-gc", ?config, "controller started");
    loop {
        let wake = collector.next_wake(Instant::now());
        let wake_at = wake.unwrap_or_else(|| Instant::now() + CHECK_EVERY);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = check.tick() => collector.pass_logged(Instant::now()).await,
            _ = tokio::time::sleep_until(wake_at), if wake.is_some() => {
                collector.pass_logged(Instant::now()).await;
            }
            notification = live.recv() => match notification {
                Ok(Notification::Event(event, object)) => {
                    collector.notice(&event, &object, Instant::now());
                }
                // The next pass looks at everything again.
                Ok(Notification::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    tracing::info!(controller = "pod-gc", "controller stopped");
}

/// The collector: its config, and since when each node that pods are
/// bound to has been seen missing.
pub struct PodGc {
    ctx: Context,
    config: PodGcConfig,
    missing: HashMap<String, Instant>,
}

impl PodGc {
    pub fn new(ctx: Context, config: PodGcConfig) -> PodGc {
        PodGc {
            ctx,
            config,
            missing: HashMap::new(),
        }
    }

    /// When the next missing node's quarantine ends, if one is still
    /// running at `now`.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.missing
            .values()
            .map(|since| *since + self.config.orphan_quarantine)
            .filter(|end| *end > now)
            .min()
    }

    /// What one change means: a deleted Node with pods, or a pod bound to
    /// a node that does not exist, starts that node's quarantine; a Node
    /// that appears ends it.
    pub fn notice(&mut self, event: &StoredEvent, object: &Object, now: Instant) {
        let deleted = event.event_type == EventType::Deleted as i32;
        match event.kind {
            Kind::Node => {
                let name = &object.meta().name;
                if !deleted {
                    self.missing.remove(name);
                } else if !self.ctx.store.pods_on_node(name).is_empty() {
                    self.missing.entry(name.clone()).or_insert(now);
                }
            }
            Kind::Pod if !deleted => {
                let node = bound_node(object);
                if node.is_empty() || self.missing.contains_key(&node) || self.node_exists(&node) {
                    return;
                }
                self.missing.insert(node, now);
            }
            _ => {}
        }
    }

    fn node_exists(&self, node: &str) -> bool {
        // A failed read counts as there: nothing is deleted on a guess.
        !matches!(self.ctx.store.get(Kind::Node, "", node), Ok(None))
    }

    /// [`PodGc::pass`], logging a failure (the next pass tries again).
    pub async fn pass_logged(&mut self, now: Instant) {
        if let Err(e) = self.pass(now).await {
            tracing::warn!(error = %e, "pod garbage collection failed; the next pass tries again");
        }
    }

    /// Deletes the pods of nodes missing for the quarantine, then the
    /// finished pods beyond the threshold. Goes on past a failed delete
    /// and answers the first failure.
    pub async fn pass(&mut self, now: Instant) -> Result<(), ReconcileError> {
        let mut first_error = None;
        let bound: HashSet<String> = self.ctx.store.pod_nodes().into_iter().collect();
        // Nodes with no pod left need no watching.
        self.missing.retain(|node, _| bound.contains(node));
        for node in &bound {
            if self.node_exists(node) {
                self.missing.remove(node);
            } else {
                self.missing.entry(node.clone()).or_insert(now);
            }
        }
        let quarantine = self.config.orphan_quarantine;
        let mut due: Vec<String> = self
            .missing
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= quarantine)
            .map(|(node, _)| node.clone())
            .collect();
        due.sort();
        for node in due {
            for object in self.ctx.store.pods_on_node(&node) {
                let Some(pod) = StoredPod::read(object) else {
                    continue;
                };
                tracing::info!(node = %node, pod = %pod.meta().name, namespace = %pod.meta().namespace, "deleting a pod whose node no longer exists");
                if let Err(e) = self.fail_and_delete(&pod, Some(node_gone())).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.collect_terminated().await {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes the finished pods beyond the threshold, evicted and oldest
    /// first.
    async fn collect_terminated(&self) -> Result<(), ReconcileError> {
        let threshold = self.config.terminated_threshold;
        if threshold == 0 {
            return Ok(());
        }
        let finished = self.ctx.store.finished_pod_count();
        if finished <= threshold {
            return Ok(());
        }
        let excess = finished - threshold;
        tracing::info!(
            finished,
            threshold,
            excess,
            "deleting finished pods beyond the threshold"
        );
        let mut first_error = None;
        for object in self.ctx.store.oldest_finished_pods(excess) {
            if is_being_deleted(object.meta()) {
                continue;
            }
            let Some(pod) = StoredPod::read(object) else {
                continue;
            };
            if let Err(e) = self.fail_and_delete(&pod, None).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Kubernetes' `markFailedAndDeletePod`: a pod that has not finished is
    /// made Failed first (with `condition`), as no node will say how it
    /// ended; then it is deleted with no grace period, if it is still the
    /// same pod (uid).
    async fn fail_and_delete(
        &self,
        pod: &StoredPod,
        condition: Option<PodCondition>,
    ) -> Result<(), ReconcileError> {
        let meta = pod.meta();
        if !pods::is_finished(&pod.pod) {
            let mut status = pod.pod.status.clone().unwrap_or_default();
            status.phase = Some("Failed".into());
            if let Some(condition) = condition {
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                conditions.retain(|c| c.type_ != condition.type_);
                conditions.push(condition);
            }
            let failed = pods::with_status(&pod.object, &status);
            match self.ctx.writer.update_status(failed).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let options = DeleteOptions {
            uid: meta.uid.clone(),
            ..DeleteOptions::force()
        };
        let deleted = self
            .ctx
            .writer
            .delete_with(Kind::Pod, &meta.namespace, &meta.name, options)
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `DisruptionTarget`: the node is gone, as Kubernetes' PodGC says it.
fn node_gone() -> PodCondition {
    PodCondition {
        type_: DISRUPTION_TARGET.into(),
        status: "True".into(),
        last_transition_time: Some(kube_time(SystemTime::now())),
        reason: Some(DELETION_BY_POD_GC.into()),
        message: Some(NODE_GONE.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;

    const QUARANTINE: Duration = Duration::from_secs(40);

    /// Nodes n1 and n2; on n1 a running pod, a finished one and a Job's
    /// running pod held by its tracking finalizer; on n2 a running pod.
    const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec: {nodeName: n1, restartPolicy: Never, containers: [{name: c, image: busybox}]}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: job-1, finalizers: [batch.kubernetes.io/job-tracking]}
spec: {nodeName: n1, restartPolicy: Never, containers: [{name: c, image: busybox}]}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2}
spec: {nodeName: n2, containers: [{name: c, image: busybox}]}
status: {phase: Running}
"#;

    fn collector(objects: &Arc<RecordingObjects>, terminated_threshold: usize) -> PodGc {
        let config = PodGcConfig {
            terminated_threshold,
            orphan_quarantine: QUARANTINE,
        };
        PodGc::new(context(objects), config)
    }

    fn pod(objects: &RecordingObjects, name: &str) -> Option<StoredPod> {
        let found = objects.get(Kind::Pod, "default", name).unwrap();
        found.and_then(StoredPod::read)
    }

    fn pod_names(objects: &RecordingObjects) -> Vec<String> {
        let pods = objects.objects(Kind::Pod);
        pods.iter().map(|p| p.meta().name.clone()).collect()
    }

    fn stored_event(kind: Kind, event_type: EventType) -> StoredEvent {
        crate::controllers::recording::stored_event(kind, "", event_type)
    }

    #[tokio::test]
    async fn the_pods_of_a_deleted_node_go_after_the_quarantine_failed_first() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let mut gc = collector(&objects, 0);
        let start = Instant::now();
        gc.pass(start).await.unwrap();
        assert!(objects.writes().is_empty(), "every node exists");

        let n1 = objects.remove(Kind::Node, "", "n1", "").unwrap();
        gc.notice(&stored_event(Kind::Node, EventType::Deleted), &n1, start);
        assert_eq!(gc.next_wake(start), Some(start + QUARANTINE));
        objects.clear_writes();
        gc.pass(start + Duration::from_secs(39)).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        gc.pass(start + QUARANTINE).await.unwrap();
        assert_eq!(gc.next_wake(start + QUARANTINE), None);
        // The running pod was made Failed (DisruptionTarget), then removed.
        let writes = objects.writes();
        let web_1: Vec<WriteOp> = writes
            .iter()
            .filter(|w| w.name == "web-1")
            .map(|w| w.op)
            .collect();
        assert_eq!(web_1, [WriteOp::UpdateStatus, WriteOp::Delete]);
        let status_write = writes
            .iter()
            .find(|w| w.name == "web-1" && w.op == WriteOp::UpdateStatus)
            .expect("web-1's status written");
        let Some(failed) = pods::read(&status_write.object) else {
            panic!("not a pod: {status_write:?}");
        };
        assert_eq!(pods::phase(&failed), "Failed");
        let conditions = failed.status.unwrap().conditions.unwrap();
        let condition = conditions.last().unwrap();
        assert_eq!(
            (condition.type_.as_str(), condition.status.as_str()),
            ("DisruptionTarget", "True")
        );
        assert_eq!(condition.reason.as_deref(), Some("DeletionByPodGC"));
        assert_eq!(
            condition.message.as_deref(),
            Some("PodGC: node no longer exists")
        );
        assert!(condition.last_transition_time.is_some());
        // The finished pod was only deleted.
        let done: Vec<WriteOp> = writes
            .iter()
            .filter(|w| w.name == "done")
            .map(|w| w.op)
            .collect();
        assert_eq!(done, [WriteOp::Delete]);
        // The Job's pod waits for its Job controller to count it.
        let job_1 = pod(&objects, "job-1").expect("held by its finalizer");
        assert_eq!(pods::phase(&job_1.pod), "Failed");
        assert!(is_being_deleted(job_1.meta()));
        assert_eq!(pod_names(&objects), ["job-1", "web-2"]);

        // Again: nothing more to do for the pod still held.
        objects.clear_writes();
        gc.pass(start + QUARANTINE + CHECK_EVERY).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn a_node_that_appears_within_the_quarantine_keeps_its_pods() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: early}
spec: {nodeName: joining, containers: [{name: c, image: busybox}]}
"#,
        );
        let mut gc = collector(&objects, 0);
        let start = Instant::now();
        let early = objects.get(Kind::Pod, "default", "early").unwrap().unwrap();
        gc.notice(&stored_event(Kind::Pod, EventType::Added), &early, start);
        assert_eq!(gc.next_wake(start), Some(start + QUARANTINE));

        let joined = objects.seed_yaml("apiVersion: v1\nkind: Node\nmetadata: {name: joining}\n");
        gc.notice(
            &stored_event(Kind::Node, EventType::Added),
            &joined[0],
            start,
        );
        assert_eq!(gc.next_wake(start), None);
        objects.clear_writes();
        gc.pass(start + QUARANTINE * 2).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
        assert_eq!(pod_names(&objects), ["early"]);
    }

    #[tokio::test]
    async fn a_pod_bound_to_a_node_that_never_registers_goes_after_the_quarantine() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: lost}
spec: {nodeName: ghost, containers: [{name: c, image: busybox}]}
"#,
        );
        // A new leader's first pass finds it with no event.
        let mut gc = collector(&objects, 0);
        let start = Instant::now();
        gc.pass(start).await.unwrap();
        assert_eq!(pod_names(&objects), ["lost"]);
        gc.pass(start + QUARANTINE).await.unwrap();
        assert!(pod_names(&objects).is_empty());
    }

    const FINISHED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: oldest, creationTimestamp: "2026-01-01T00:01:00Z"}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: older, creationTimestamp: "2026-01-01T00:02:00Z"}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Failed}
---
apiVersion: v1
kind: Pod
metadata: {name: evicted, creationTimestamp: "2026-01-01T00:09:00Z"}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Failed, reason: Evicted}
---
apiVersion: v1
kind: Pod
metadata: {name: newest, creationTimestamp: "2026-01-01T00:08:00Z"}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: running, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Running}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
"#;

    #[tokio::test]
    async fn finished_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(FINISHED);
        let mut gc = collector(&objects, 2);
        gc.pass(Instant::now()).await.unwrap();
        assert_eq!(pod_names(&objects), ["newest", "older", "running"]);
        let ops: Vec<WriteOp> = objects.writes().iter().map(|w| w.op).collect();
        assert_eq!(ops, [WriteOp::Delete, WriteOp::Delete], "no status write");
        assert_eq!(objects.finished_pod_count(), 2);

        objects.clear_writes();
        gc.pass(Instant::now()).await.unwrap();
        assert!(objects.writes().is_empty(), "at the threshold");
    }

    #[tokio::test]
    async fn a_threshold_of_zero_keeps_every_finished_pod() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(FINISHED);
        let mut gc = collector(&objects, 0);
        gc.pass(Instant::now()).await.unwrap();
        assert!(objects.writes().is_empty());
        assert_eq!(pod_names(&objects).len(), 5);
    }
}
