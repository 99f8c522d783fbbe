//! The DaemonSet controller: one pod of the DaemonSet's template on every
//! node that should run one ([`eligibility`]: `nodeName`, `nodeSelector`,
//! required node affinity, taints against tolerations), created as soon as
//! a node appears (a Node event looks at every DaemonSet), removed from a
//! node that no longer fits, never moved: a node that goes silent keeps
//! its pod and gets no other (node lifecycle does not evict DaemonSets'
//! pods), and a node that is deleted takes its pods with it.
//!
//! Pods are bound to their node when they are created (`spec.nodeName`),
//! as Kubernetes did before its scheduler placed DaemonSet pods: skiff's
//! pods carry no node affinity to pin them with, and no scheduler pass is
//! needed for a pod whose node is known. So no resource or host-port check
//! holds a DaemonSet pod back.
//!
//! Templates are tracked as Kubernetes tracks them ([`revisions`]):
//! ControllerRevisions `<daemonset>-<hash>`, pods labelled
//! `controller-revision-hash`, `kubectl rollout undo daemonset` possible.
//! A new template reaches the pods by `updateStrategy`: RollingUpdate
//! (`maxUnavailable`, `maxSurge`) or OnDelete ([`plan`]). The status has
//! Kubernetes' counts and `observedGeneration`, so `kubectl rollout status
//! daemonset` follows a rollout. Failed pods are replaced, with
//! Kubernetes' back-off per node (1 s doubling to 15 min). Each pod created
//! or deleted, and each failure to, is an Event on the DaemonSet
//! (`SuccessfulCreate`, `FailedCreate`, `SuccessfulDelete`, `FailedDelete`,
//! `FailedDaemonPod`). A DaemonSet being deleted is left to the garbage
//! collector.

pub mod eligibility;
pub mod plan;
pub mod spec;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use tokio::time::Instant;

use super::pod_claims::{self, ClaimRules};
use super::replicaset::available_pods;
use super::revisions::{self, History, Revision, REVISION_HASH_LABEL};
use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::controllers::workload_spec::unless_zero;
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use plan::{DaemonPod, NodeFit, Plan, Why};
use skiff_objects::deletion::{is_being_deleted, DeleteOptions};
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::{IntoObject, Kind, ObjectExt};
use spec::{DaemonSetSpec, DaemonSetStatus, StoredStatus, UpdateStrategy};

/// The component its Events are recorded as.
const COMPONENT: &str = "daemonset-controller";
/// Most pods created, and most deleted, in one reconcile; the rest follow
/// in the next round.
const MAX_CHANGES_PER_ROUND: usize = 500;
/// How soon a reconcile that left work for the next round looks again.
const NEXT_ROUND: Duration = Duration::from_millis(200);
/// Kubernetes' back-off between replacements of a node's failed pods.
const FIRST_FAILED_BACKOFF: Duration = Duration::from_secs(1);
const MAX_FAILED_BACKOFF: Duration = Duration::from_secs(15 * 60);

pub struct DaemonSetController {
    ctx: Context,
    /// When a failed pod of a DaemonSet (namespace, name) on a node was
    /// last deleted, and how long the next one waits.
    failed: Mutex<HashMap<(String, String, String), Backoff>>,
}

struct Backoff {
    last: Instant,
    delay: Duration,
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
struct Outcome {
    /// A pod was created or deleted.
    wrote: bool,
    /// A failed pod waits for its back-off.
    retry_after: Option<Duration>,
    /// More than one round's worth, or a name that collided.
    unfinished: bool,
}

impl DaemonSetController {
    pub fn new(ctx: Context) -> DaemonSetController {
        DaemonSetController {
            ctx,
            failed: Mutex::new(HashMap::new()),
        }
    }
}

impl Reconciler for DaemonSetController {
    const NAME: &'static str = "daemonset";
    const KIND: Kind = Kind::DaemonSet;
    const WATCHES: KindFilter = KindFilter::only(&[
        Kind::DaemonSet,
        Kind::Pod,
        Kind::ControllerRevision,
        Kind::Node,
    ]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::DaemonSet => ObjectKey::of(object).into_iter().collect(),
            Kind::Pod | Kind::ControllerRevision => controller_of(object, Kind::DaemonSet)
                .map(|owner| ObjectKey::new(Kind::DaemonSet, &event.namespace, &owner.name))
                .into_iter()
                .collect(),
            // A node came, went or changed (labels, taints): every
            // DaemonSet looks at it.
            Kind::Node => match self.ctx.store.list(Kind::DaemonSet, None) {
                Ok((all, _)) => all.iter().filter_map(|o| ObjectKey::of(o)).collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let found = self
            .ctx
            .store
            .get(Kind::DaemonSet, &key.namespace, &key.name)?;
        let Some(object) = found else {
            // Deleted: the garbage collector removes its pods.
            self.forget_failures(key);
            return Ok(Action::Done);
        };
        let Some(Body::Generic(daemon_set)) = &object.kind else {
            return Ok(Action::Done);
        };
        if is_being_deleted(object.meta()) {
            return Ok(Action::Done);
        }
        let spec = match DaemonSetSpec::read(daemon_set) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(daemonset = %key.name, namespace = %key.namespace, error = %e, "cannot act on DaemonSet");
                return Ok(Action::Done);
            }
        };
        let status = DaemonSetStatus::read(daemon_set);
        let Some((hash, history)) = self.sync_history(&object, &spec, &status).await? else {
            // Its revision's name was taken: the status counts the
            // collision, and the next look uses another name.
            return Ok(Action::RequeueAfter(NEXT_ROUND));
        };
        let nodes = self.nodes(&spec)?;
        let now = SystemTime::now();
        let pods = self.claim_pods(&object, &spec).await?;
        let (facts, _) = pod_facts(&pods, spec.min_ready_seconds, now);
        let surge = spec.strategy.allows_surge();
        let managed = plan::manage(&nodes, &facts, &hash, surge);
        let mut outcome = self.carry_out(&object, &spec, &hash, &managed).await?;
        if !outcome.wrote && matches!(spec.strategy, UpdateStrategy::RollingUpdate { .. }) {
            let desired = nodes.iter().filter(|n| n.placement.should_run).count();
            let desired = i32::try_from(desired).unwrap_or(i32::MAX);
            let (max_surge, max_unavailable) = spec.strategy.limits(desired);
            let step = plan::roll(&nodes, &facts, &hash, max_surge, max_unavailable);
            let rolled = self.carry_out(&object, &spec, &hash, &step).await?;
            outcome.unfinished |= rolled.unfinished;
            outcome.retry_after = sooner(outcome.retry_after, rolled.retry_after);
        }

        // The pods as they are now (the writes above are in the store).
        let pods = pod_claims::owned_pods(&self.ctx, &object, Kind::DaemonSet);
        let live: BTreeSet<String> = pods.iter().filter_map(hash_label).collect();
        for name in history.to_prune(spec.revision_history_limit, &live) {
            self.delete_revision(&key.namespace, &name).await?;
        }
        let (facts, next_available) = pod_facts(&pods, spec.min_ready_seconds, now);
        let counts = plan::count(&nodes, &facts, &hash);
        // Kubernetes' field names and omissions (`omitempty` counts left
        // out when zero).
        let current = DaemonSetStatus {
            current_number_scheduled: counts.current,
            number_misscheduled: counts.misscheduled,
            desired_number_scheduled: counts.desired,
            number_ready: counts.ready,
            observed_generation: unless_zero(object.meta().generation),
            updated_number_scheduled: unless_zero(counts.updated),
            number_available: unless_zero(counts.available),
            number_unavailable: unless_zero(counts.unavailable()),
            collision_count: status.collision_count,
            conditions: status.conditions.clone(),
        };
        if current != status {
            self.write_status(&object, &current).await?;
        }

        let mut after = outcome.retry_after;
        if outcome.unfinished {
            after = sooner(after, Some(NEXT_ROUND));
        }
        // A Ready pod becomes available once minReadySeconds have passed.
        after = sooner(after, next_available);
        Ok(after.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl DaemonSetController {
    /// Finds (or makes) the revision of the current template and numbers
    /// it above the others; its hash and the history, or `None` when its
    /// name is taken by another template (the status counts the
    /// collision).
    async fn sync_history(
        &self,
        object: &Object,
        spec: &DaemonSetSpec,
        status: &DaemonSetStatus,
    ) -> Result<Option<(String, History)>, ReconcileError> {
        let meta = object.meta();
        let stored = revisions::owned_revisions(&self.ctx, object, Kind::DaemonSet);
        let read = stored.values().map(Revision::read).collect();
        let data = revisions::revision_data(&spec.template);
        let history = History::sort(read, &data);
        for duplicate in &history.duplicates {
            self.delete_revision(&meta.namespace, &duplicate.name)
                .await?;
        }
        let next = history.next_revision();
        if let Some(current) = &history.current {
            if current.revision < next {
                // Back to an older template: it is the newest revision now.
                if let Some(g) = stored.get(&current.name) {
                    let renumbered = revisions::renumbered(g, next);
                    self.ctx.writer.update(renumbered).await?;
                }
            }
            let hash = current.hash.clone();
            return Ok(Some((hash, history)));
        }
        let hash = revisions::template_hash(&spec.template, status.collision_count);
        let labels = spec
            .pod
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        let revision = revisions::new_revision(object, &labels, &hash, next, data);
        match self.ctx.writer.create(revision).await {
            Ok(_) => Ok(Some((hash, history))),
            Err(e) if e.is_already_exists() => {
                let mut bumped = status.clone();
                let count = status.collision_count.unwrap_or(0).saturating_add(1);
                bumped.collision_count = Some(count);
                self.write_status(object, &bumped).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every node and where it stands for the DaemonSet, in name order.
    fn nodes(&self, spec: &DaemonSetSpec) -> Result<Vec<NodeFit>, ReconcileError> {
        let (objects, _) = self.ctx.store.list(Kind::Node, None)?;
        let mut nodes: Vec<NodeFit> = objects
            .iter()
            .filter_map(|o| match &o.kind {
                Some(Body::Node(node)) => Some(NodeFit {
                    name: o.meta().name.clone(),
                    placement: spec.requirements.placement(node),
                }),
                _ => None,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(nodes)
    }

    /// The DaemonSet's pods, as Kubernetes claims them
    /// ([`pod_claims`](super::pod_claims)): those it controls and still
    /// selects, and orphans it selects, adopted (bound ones, not being
    /// deleted); those it controls but no longer selects are let go (they
    /// keep running, unowned).
    async fn claim_pods(
        &self,
        object: &Object,
        spec: &DaemonSetSpec,
    ) -> Result<Vec<StoredPod>, ReconcileError> {
        let bound = |pod: &StoredPod| !pods::node_name(&pod.pod).is_empty();
        let rules = ClaimRules {
            adoptable: &bound,
            ..ClaimRules::selector_only()
        };
        pod_claims::claim_pods(&self.ctx, object, &spec.selector, &rules).await
    }

    /// Creates and deletes what `plan` says, recording an Event for each.
    async fn carry_out(
        &self,
        object: &Object,
        spec: &DaemonSetSpec,
        hash: &str,
        plan: &Plan,
    ) -> Result<Outcome, ReconcileError> {
        let meta = object.meta();
        let events = self.ctx.events.for_component(COMPONENT);
        let mut outcome = Outcome {
            unfinished: plan.create_on.len().max(plan.delete.len()) > MAX_CHANGES_PER_ROUND,
            ..Outcome::default()
        };
        let mut failure = None;

        // Concurrent creates share Raft entries.
        let owner = controller_reference(object);
        let mut creates = tokio::task::JoinSet::new();
        for node in plan.create_on.iter().take(MAX_CHANGES_PER_ROUND) {
            let pod = spec.pod_for(&meta.name, &meta.namespace, hash, node, owner.clone());
            let writer = self.ctx.writer.clone();
            creates.spawn(async move { writer.create_from_template(pod).await });
        }
        while let Some(joined) = creates.join_next().await {
            match joined {
                Ok(Ok(created)) => {
                    outcome.wrote = true;
                    let message = format!("Created pod: {}", created.meta().name);
                    events.normal(object, "SuccessfulCreate", message);
                }
                // A random name collided; the next round tries another.
                Ok(Err(e)) if e.is_already_exists() => outcome.unfinished = true,
                Ok(Err(e)) => {
                    events.warning(object, "FailedCreate", format!("Error creating: {e}"));
                    failure = Some(e.into());
                }
                Err(source) => {
                    failure = Some(ReconcileError::Task {
                        what: "pod create",
                        source,
                    })
                }
            }
        }

        let mut deletes = tokio::task::JoinSet::new();
        for removal in plan.delete.iter().take(MAX_CHANGES_PER_ROUND) {
            if removal.why == Why::Failed {
                match self.may_replace_failed(&meta.namespace, &meta.name, &removal.node) {
                    Ok(()) => {
                        let message = format!(
                            "Found failed daemon pod {}/{} on node {}, will try to kill it",
                            meta.namespace, removal.pod, removal.node
                        );
                        events.warning(object, "FailedDaemonPod", message);
                    }
                    Err(wait) => {
                        outcome.retry_after = sooner(outcome.retry_after, Some(wait));
                        continue;
                    }
                }
            }
            // A pod whose node is gone is removed at once: nothing will
            // ever confirm it stopped.
            let options = match removal.why {
                Why::NodeGone => DeleteOptions::force(),
                _ => DeleteOptions::default(),
            };
            let writer = self.ctx.writer.clone();
            let (namespace, name) = (meta.namespace.clone(), removal.pod.clone());
            deletes.spawn(async move {
                let deleted = writer
                    .delete_with(Kind::Pod, &namespace, &name, options)
                    .await;
                (name, deleted)
            });
        }
        while let Some(joined) = deletes.join_next().await {
            match joined {
                Ok((name, Ok(_))) => {
                    outcome.wrote = true;
                    events.normal(object, "SuccessfulDelete", format!("Deleted pod: {name}"));
                }
                Ok((_, Err(e))) if e.is_not_found() => {}
                Ok((_, Err(e))) => {
                    events.warning(object, "FailedDelete", format!("Error deleting: {e}"));
                    failure = Some(e.into());
                }
                Err(source) => {
                    failure = Some(ReconcileError::Task {
                        what: "pod delete",
                        source,
                    })
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Kubernetes' back-off for a node's failed pods: the first is replaced
    /// at once, each next one after twice the wait of the one before (1 s
    /// up to 15 min, starting over after a quiet 30 min); how long until
    /// the next may go, if it must wait.
    fn may_replace_failed(&self, namespace: &str, name: &str, node: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_owned(), name.to_owned(), node.to_owned());
        let first = Backoff {
            last: now,
            delay: FIRST_FAILED_BACKOFF,
        };
        match failed.get_mut(&key) {
            Some(backoff) if now < backoff.last + backoff.delay => {
                Err(backoff.last + backoff.delay - now)
            }
            Some(backoff) if now.duration_since(backoff.last) > 2 * MAX_FAILED_BACKOFF => {
                *backoff = first;
                Ok(())
            }
            Some(backoff) => {
                backoff.delay = (backoff.delay * 2).min(MAX_FAILED_BACKOFF);
                backoff.last = now;
                Ok(())
            }
            None => {
                failed.insert(key, first);
                Ok(())
            }
        }
    }

    /// Drops the back-offs of a DaemonSet that is gone.
    fn forget_failures(&self, key: &ObjectKey) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.retain(|(namespace, name, _), _| *namespace != key.namespace || *name != key.name);
    }

    async fn delete_revision(&self, namespace: &str, name: &str) -> Result<(), ReconcileError> {
        let kind = Kind::ControllerRevision;
        match self.ctx.writer.delete(kind, namespace, name, "").await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `status` into the DaemonSet, conditional on the version read.
    async fn write_status(
        &self,
        object: &Object,
        status: &DaemonSetStatus,
    ) -> Result<(), ReconcileError> {
        if let Some(Body::Generic(daemon_set)) = &object.kind {
            let updated = status.write_into(daemon_set);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        Ok(())
    }
}

/// A pod's `controller-revision-hash` label.
fn hash_label(pod: &StoredPod) -> Option<String> {
    pod.meta().labels.get(REVISION_HASH_LABEL).cloned()
}

/// The earlier of two waits.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the plans need of each pod, and how long until the next Ready pod
/// has been Ready for `min_ready_seconds`.
fn pod_facts(
    pods: &[StoredPod],
    min_ready_seconds: i32,
    now: SystemTime,
) -> (Vec<DaemonPod>, Option<Duration>) {
    let mut next = None;
    let mut facts = Vec::with_capacity(pods.len());
    for pod in pods {
        let (available, wait) = available_pods([&*pod.pod], min_ready_seconds, now);
        next = sooner(next, wait);
        let meta = pod.meta();
        facts.push(DaemonPod {
            name: meta.name.clone(),
            node: pods::node_name(&pod.pod).to_owned(),
            hash: hash_label(pod).unwrap_or_default(),
            created: meta.creation_timestamp.clone(),
            terminating: is_being_deleted(meta),
            phase: pods::phase(&pod.pod).to_owned(),
            ready: pods::is_ready(&pod.pod),
            available: available > 0,
        });
    }
    (facts, next)
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use serde_json::Value;
    use skiff_objects::deletion::Propagation;
    use skiff_objects::generic;
    use skiff_objects::placement::TAINT_UNREACHABLE;
    use skiff_proto::v1;
    use std::sync::Arc;

    /// n1 fits; n2's taint, n3's labels and n4's silence keep pods off.
    const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: edge}}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {role: edge}}
spec:
  taints: [{key: dedicated, value: db, effect: NoSchedule}]
---
apiVersion: v1
kind: Node
metadata: {name: n3, labels: {role: core}}
---
apiVersion: v1
kind: Node
metadata: {name: n4, labels: {role: edge}}
spec:
  taints:
  - {key: node.kubernetes.io/unreachable, effect: NoSchedule}
  - {key: node.kubernetes.io/unreachable, effect: NoExecute}
"#;

    const ROLLING: &str = "{type: RollingUpdate}";
    const ON_DELETE: &str = "{type: OnDelete}";

    fn daemon_set(image: &str, strategy: &str) -> String {
        format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {strategy}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      nodeSelector: {{role: edge}}
      terminationGracePeriodSeconds: 1
      containers: [{{name: a, image: "{image}"}}]
"#
        )
    }

    fn setup(daemon_set: &str) -> (Arc<RecordingObjects>, DaemonSetController) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(NODES);
        objects.seed_yaml(daemon_set);
        let controller = DaemonSetController::new(context(&objects));
        (objects, controller)
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::DaemonSet, "default", "agent")
    }

    fn add_edge_node(objects: &RecordingObjects, name: &str) -> Object {
        let yaml = format!("kind: Node\napiVersion: v1\nmetadata: {{name: {name}}}\n");
        let mut node = objects.seed_yaml(&yaml).remove(0);
        if let Ok(meta) = node.meta_mut() {
            meta.labels.insert("role".into(), "edge".into());
        }
        objects.write(WriteOp::Update, node).unwrap()
    }

    fn relabel(objects: &RecordingObjects, node: &str, role: &str) {
        let stored = objects.get(Kind::Node, "", node).unwrap();
        let mut node = stored.map(Arc::unwrap_or_clone).expect("the node");
        if let Ok(meta) = node.meta_mut() {
            meta.labels.insert("role".into(), role.into());
        }
        objects.write(WriteOp::Update, node).unwrap();
    }

    fn pods(objects: &RecordingObjects) -> Vec<StoredPod> {
        let all = objects.objects(Kind::Pod).into_iter();
        all.map(|o| StoredPod::read(o).expect("a pod")).collect()
    }

    /// Plays a node: writes `status` as `pod`'s.
    fn write_status(objects: &RecordingObjects, pod: &StoredPod, status: v1::PodStatus) {
        // Changed in the protobuf model, written as the writer stores a
        // pod: a document.
        let mut object = skiff_objects::legacy_bodies::for_reader(Object::clone(&pod.object), 6);
        let Some(Body::Pod(p)) = &mut object.kind else {
            panic!("not a pod: {object:?}");
        };
        p.status = Some(status);
        let written = skiff_objects::legacy_bodies::to_document(object);
        objects.write(WriteOp::UpdateStatus, written).unwrap();
    }

    /// The pods not being deleted: (node, revision hash), in node order.
    fn placed(objects: &RecordingObjects) -> Vec<(String, String)> {
        let mut placed: Vec<(String, String)> = pods(objects)
            .iter()
            .filter(|p| !is_being_deleted(p.meta()))
            .map(|p| {
                (
                    pods::node_name(&p.pod).to_owned(),
                    hash_label(p).unwrap_or_default(),
                )
            })
            .collect();
        placed.sort();
        placed
    }

    fn terminating(objects: &RecordingObjects) -> Vec<StoredPod> {
        let all = pods(objects).into_iter();
        all.filter(|p| is_being_deleted(p.meta())).collect()
    }

    /// The revisions, lowest number first.
    fn revisions(objects: &RecordingObjects) -> Vec<Revision> {
        let mut all: Vec<Revision> = objects
            .objects(Kind::ControllerRevision)
            .iter()
            .filter_map(|o| match &o.kind {
                Some(Body::Generic(g)) => Some(Revision::read(g)),
                _ => None,
            })
            .collect();
        all.sort_by_key(|r| r.revision);
        all
    }

    fn stored_daemon_set(objects: &RecordingObjects) -> v1::GenericObject {
        let stored = objects.get(Kind::DaemonSet, "default", "agent").unwrap();
        match stored.map(Arc::unwrap_or_clone) {
            Some(Object {
                kind: Some(Body::Generic(g)),
            }) => g,
            other => panic!("no DaemonSet: {other:?}"),
        }
    }

    fn status(objects: &RecordingObjects) -> DaemonSetStatus {
        DaemonSetStatus::read(&stored_daemon_set(objects))
    }

    /// `kubectl set image`: the template's container runs `image`.
    fn set_image(objects: &RecordingObjects, image: &str) {
        let mut daemon_set = stored_daemon_set(objects);
        let mut content = generic::content(&daemon_set);
        content["spec"]["template"]["spec"]["containers"][0]["image"] = Value::from(image);
        generic::set_content(&mut daemon_set, &content);
        let written = objects.write(WriteOp::Update, daemon_set.into_object());
        written.unwrap();
    }

    /// Plays the nodes: every pod not yet Ready is Running and Ready.
    fn report_ready(objects: &RecordingObjects) {
        for pod in pods(objects) {
            if pods::is_ready(&pod.pod) || is_being_deleted(pod.meta()) {
                continue;
            }
            let status = v1::PodStatus {
                phase: "Running".into(),
                conditions: vec![v1::PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            write_status(objects, &pod, status);
        }
    }

    /// Plays the nodes: every pod has failed.
    fn fail_pods(objects: &RecordingObjects) {
        for pod in pods(objects) {
            let status = v1::PodStatus {
                phase: "Failed".into(),
                ..Default::default()
            };
            write_status(objects, &pod, status);
        }
    }

    /// Plays the nodes: the pods being deleted have stopped and are gone.
    fn confirm_gone(objects: &RecordingObjects) {
        for pod in terminating(objects) {
            let name = pod.meta().name.clone();
            let options = DeleteOptions::force();
            let gone = objects.delete_as_kubernetes(Kind::Pod, "default", &name, &options);
            gone.unwrap();
        }
    }

    fn node_event() -> StoredEvent {
        StoredEvent {
            revision: 1,
            kind: Kind::Node,
            namespace: String::new(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        }
    }

    #[tokio::test]
    async fn pods_go_to_every_node_that_fits_bound_there_with_the_revision_hash() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        controller.reconcile(&key()).await.unwrap();
        let revisions = revisions(&objects);
        assert_eq!(revisions.len(), 1);
        assert_eq!(revisions[0].revision, 1);
        let hash = revisions[0].hash.clone();
        assert_eq!(revisions[0].name, format!("agent-{hash}"));
        assert_eq!(placed(&objects), [("n1".to_owned(), hash.clone())]);

        let pod = pods(&objects).remove(0);
        let meta = pod.meta();
        assert!(meta.name.starts_with("agent-"), "{}", meta.name);
        assert_eq!(meta.owner_references[0].kind, "DaemonSet");
        assert_eq!(meta.owner_references[0].controller, Some(true));
        let spec = pod.pod.spec.clone().unwrap_or_default();
        let tolerations = spec.tolerations.unwrap_or_default();
        let unreachable = tolerations
            .iter()
            .find(|t| t.key.as_deref() == Some(TAINT_UNREACHABLE));
        let unreachable = unreachable.expect("the unreachable toleration");
        assert_eq!(unreachable.effect.as_deref(), Some("NoExecute"));
        assert_eq!(unreachable.toleration_seconds, None);

        let events = objects.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "SuccessfulCreate");
        assert_eq!(events[0].message, format!("Created pod: {}", meta.name));
        assert_eq!(events[0].source.component, "daemonset-controller");
        assert_eq!(events[0].involved.kind, "DaemonSet");

        let status = status(&objects);
        let counts = (
            status.desired_number_scheduled,
            status.current_number_scheduled,
            status.updated_number_scheduled,
            status.number_ready,
            status.number_unavailable,
        );
        assert_eq!(counts, (1, 1, Some(1), 0, Some(1)));
        assert_eq!(status.observed_generation, Some(1));

        // Level-triggered: a second look writes nothing.
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn a_node_that_joins_gets_a_pod_and_one_that_no_longer_fits_or_goes_loses_it() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        controller.reconcile(&key()).await.unwrap();
        let joined = add_edge_node(&objects, "n5");
        // A Node event looks at every DaemonSet.
        assert_eq!(controller.keys_for(&node_event(), &joined), [key()]);
        controller.reconcile(&key()).await.unwrap();
        let hash = revisions(&objects)[0].hash.clone();
        let on = |node: &str| (node.to_owned(), hash.clone());
        assert_eq!(placed(&objects), [on("n1"), on("n5")]);

        // n1 is relabelled out of the node selector: its pod stops there.
        relabel(&objects, "n1", "core");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(placed(&objects), [on("n5")]);
        assert_eq!(terminating(&objects).len(), 1);
        let reasons = objects.event_reasons();
        assert_eq!(reasons.last().map(String::as_str), Some("SuccessfulDelete"));
        let status = status(&objects);
        let counts = (status.desired_number_scheduled, status.number_misscheduled);
        assert_eq!(counts, (1, 1), "n1's pod counts until it is gone");

        // n5 is deleted: its pod goes at once, as no node will stop it.
        objects.remove(Kind::Node, "", "n5", "").unwrap();
        controller.reconcile(&key()).await.unwrap();
        let left: Vec<String> = pods(&objects)
            .iter()
            .map(|p| pods::node_name(&p.pod).to_owned())
            .collect();
        assert_eq!(left, ["n1"], "only n1's terminating pod is left");
    }

    #[tokio::test]
    async fn a_rolling_update_replaces_one_node_at_a_time_and_undo_renumbers_the_old_revision() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        add_edge_node(&objects, "n5");
        controller.reconcile(&key()).await.unwrap();
        report_ready(&objects);
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(status(&objects).number_available, Some(2));
        let first = revisions(&objects)[0].hash.clone();

        set_image(&objects, "agent:2");
        controller.reconcile(&key()).await.unwrap();
        let numbered: Vec<i64> = revisions(&objects).iter().map(|r| r.revision).collect();
        assert_eq!(numbered, [1, 2]);
        let second = revisions(&objects)[1].hash.clone();
        assert_ne!(first, second);
        // maxUnavailable 1: n1's old pod stops first; n1 waits for it.
        assert_eq!(placed(&objects), [("n5".to_owned(), first.clone())]);
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(terminating(&objects).len(), 1, "one node at a time");

        confirm_gone(&objects);
        controller.reconcile(&key()).await.unwrap();
        let expected = [("n1".to_owned(), second.clone()), ("n5".to_owned(), first)];
        assert_eq!(placed(&objects), expected);
        controller.reconcile(&key()).await.unwrap();
        // n1's new pod is not Ready: n5 keeps its old one.
        assert!(terminating(&objects).is_empty());

        report_ready(&objects);
        controller.reconcile(&key()).await.unwrap();
        confirm_gone(&objects);
        controller.reconcile(&key()).await.unwrap();
        report_ready(&objects);
        controller.reconcile(&key()).await.unwrap();
        let on = |node: &str| (node.to_owned(), second.clone());
        assert_eq!(placed(&objects), [on("n1"), on("n5")]);
        let status = status(&objects);
        let counts = (status.updated_number_scheduled, status.number_available);
        assert_eq!(counts, (Some(2), Some(2)));
        assert_eq!(status.observed_generation, Some(2));

        // Undo: the first template again, whose revision is number 3 now;
        // no new revision, and the pods roll back to it.
        set_image(&objects, "agent:1");
        controller.reconcile(&key()).await.unwrap();
        let numbered: Vec<(i64, bool)> = revisions(&objects)
            .iter()
            .map(|r| (r.revision, r.hash == second))
            .collect();
        assert_eq!(numbered, [(2, true), (3, false)]);
        assert_eq!(terminating(&objects).len(), 1);
    }

    #[tokio::test]
    async fn on_delete_replaces_only_the_pods_someone_deletes() {
        let (objects, controller) = setup(&daemon_set("agent:1", ON_DELETE));
        add_edge_node(&objects, "n5");
        controller.reconcile(&key()).await.unwrap();
        report_ready(&objects);
        let first = revisions(&objects)[0].hash.clone();
        set_image(&objects, "agent:2");
        controller.reconcile(&key()).await.unwrap();
        let second = revisions(&objects)[1].hash.clone();
        assert!(terminating(&objects).is_empty(), "nothing is deleted");
        assert_eq!(
            status(&objects).updated_number_scheduled,
            None,
            "zero: left out"
        );

        let on_n5 = pods(&objects)
            .into_iter()
            .find(|p| pods::node_name(&p.pod) == "n5");
        let name = on_n5.map(|p| p.meta().name.clone()).unwrap_or_default();
        let options = DeleteOptions::force();
        let deleted = objects.delete_as_kubernetes(Kind::Pod, "default", &name, &options);
        deleted.unwrap();
        controller.reconcile(&key()).await.unwrap();
        let expected = [("n1".to_owned(), first), ("n5".to_owned(), second)];
        assert_eq!(placed(&objects), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pods_are_replaced_with_a_back_off_per_node() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        controller.reconcile(&key()).await.unwrap();
        fail_pods(&objects);
        controller.reconcile(&key()).await.unwrap();
        let reasons = ["SuccessfulCreate", "FailedDaemonPod", "SuccessfulDelete"];
        assert_eq!(objects.event_reasons(), reasons);
        assert!(pods(&objects).is_empty(), "a failed pod goes at once");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(placed(&objects).len(), 1, "replaced");

        // Failing again at once: held back for the back-off.
        fail_pods(&objects);
        let action = controller.reconcile(&key()).await.unwrap();
        assert_eq!(pods(&objects).len(), 1, "held back");
        let Action::RequeueAfter(wait) = action else {
            panic!("no requeue: {action:?}");
        };
        assert!(wait <= FIRST_FAILED_BACKOFF, "{wait:?}");
        tokio::time::advance(wait).await;
        controller.reconcile(&key()).await.unwrap();
        assert!(pods(&objects).is_empty(), "deleted after the back-off");
    }

    #[tokio::test]
    async fn a_name_taken_by_another_template_bumps_the_collision_count() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        let spec = DaemonSetSpec::read(&stored_daemon_set(&objects)).unwrap();
        let taken = revisions::template_hash(&spec.template, None);
        let squatter = format!("agent-{taken}");
        let yaml = format!(
            "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {{name: {squatter}}}\n"
        );
        objects.seed_yaml(&yaml);
        let action = controller.reconcile(&key()).await.unwrap();
        assert_eq!(action, Action::RequeueAfter(NEXT_ROUND));
        assert_eq!(status(&objects).collision_count, Some(1));
        assert!(pods(&objects).is_empty());

        controller.reconcile(&key()).await.unwrap();
        let ours: Vec<Revision> = revisions(&objects)
            .into_iter()
            .filter(|r| r.name != squatter)
            .collect();
        assert_eq!(ours.len(), 1);
        let expected = revisions::template_hash(&spec.template, Some(1));
        assert_eq!(ours[0].hash, expected);
        assert_eq!(placed(&objects), [("n1".to_owned(), expected)]);
    }

    #[tokio::test]
    async fn a_daemonset_being_deleted_creates_nothing() {
        let (objects, controller) = setup(&daemon_set("agent:1", ROLLING));
        let foreground = DeleteOptions::propagating(Propagation::Foreground);
        let kind = Kind::DaemonSet;
        let marked = objects.delete_as_kubernetes(kind, "default", "agent", &foreground);
        assert!(is_being_deleted(marked.unwrap().meta()));
        controller.reconcile(&key()).await.unwrap();
        assert!(pods(&objects).is_empty());
        assert!(revisions(&objects).is_empty());
    }
}
