//! The ReplicaSet controller: keeps `spec.replicas` active pods that the
//! ReplicaSet controls, named `<replicaset>-<random5>`, and reports how
//! many exist, are ready and are available in its status. Each pod it
//! creates or deletes, and each failure to, is an Event on the ReplicaSet
//! (`SuccessfulCreate`, `FailedCreate`, `SuccessfulDelete`,
//! `FailedDelete`), as Kubernetes' controller records them. Pods being deleted
//! (terminating) do not count, so their replacements start at once; a
//! ReplicaSet being deleted is left to the garbage collector. ReplicaSets
//! are documents (`workload_spec`): a pod carries every field of the
//! template, not only those of skiff's protobuf model.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use serde_json::Value;

use super::pod_claims::{self, ClaimRules};
use super::workload_spec::{self, PodTemplate};
use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::metadata::random_suffix;
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::pods::{self, Pod, StoredPod};
use skiff_objects::{selector, IntoObject, Kind, ObjectExt};

/// What the controller reads of a ReplicaSet's spec.
pub struct ReplicaSetSpec {
    /// `spec.replicas` (1 when unset).
    pub replicas: i32,
    /// `spec.selector` (empty, selecting nothing, when unset).
    pub selector: v1::LabelSelector,
    pub min_ready_seconds: i32,
    pub template: PodTemplate,
}

impl ReplicaSetSpec {
    /// The spec of the ReplicaSet `object` (a document); refused, naming
    /// the field, when its selector or template does not read.
    pub fn read(object: &v1::GenericObject) -> Result<ReplicaSetSpec, workload_spec::SpecError> {
        let spec = workload_spec::spec_of(object);
        let selector = match spec.get("selector") {
            Some(s) => serde_json::from_value(s.clone())
                .map_err(|e| workload_spec::SpecError::new("spec.selector", e.to_string()))?,
            None => v1::LabelSelector::default(),
        };
        Ok(ReplicaSetSpec {
            replicas: count(&spec["replicas"]).unwrap_or(1),
            selector,
            min_ready_seconds: count(&spec["minReadySeconds"]).unwrap_or(0),
            template: PodTemplate::read(&workload_spec::template_of(&spec))?,
        })
    }
}

/// A count field of a document (`None` when unset or not an `int32`).
pub fn count(value: &Value) -> Option<i32> {
    value.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// Most pods created or deleted in one reconcile; the rest follow in the
/// next round, so one huge scale-up cannot monopolise the leader.
const MAX_CHANGES_PER_ROUND: usize = 500;
/// The component its Events are recorded as.
const COMPONENT: &str = "replicaset-controller";

pub struct ReplicaSetController {
    pub ctx: Context,
}

impl Reconciler for ReplicaSetController {
    const NAME: &'static str = "replicaset";
    const KIND: Kind = Kind::ReplicaSet;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::ReplicaSet, Kind::Pod]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::ReplicaSet => ObjectKey::of(object).into_iter().collect(),
            Kind::Pod => controller_of(object, Kind::ReplicaSet)
                .map(|owner| ObjectKey::new(Kind::ReplicaSet, &event.namespace, &owner.name))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(object) = self
            .ctx
            .store
            .get(Kind::ReplicaSet, &key.namespace, &key.name)?
        else {
            // Deleted: the garbage collector removes its pods.
            return Ok(Action::Done);
        };
        let Some(Body::Generic(rs)) = &object.kind else {
            return Ok(Action::Done);
        };
        if is_being_deleted(object.meta()) {
            // Its pods are the garbage collector's now: no replacements.
            return Ok(Action::Done);
        }
        let spec = match ReplicaSetSpec::read(rs) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(replicaset = %key.name, namespace = %key.namespace, error = %e, "cannot act on ReplicaSet");
                return Ok(Action::Done);
            }
        };
        let desired = spec.replicas.max(0) as usize;

        let selector = spec.selector.clone();
        // The active pods it owns, and orphans it adopts, from the indexes
        // ([`pod_claims`](super::pod_claims)), so a reconcile costs what
        // this ReplicaSet has, not the namespace. An empty selector selects
        // nothing.
        let selects = |_: &v1::ObjectMeta| !selector::is_empty(&selector);
        let active = |p: &StoredPod| pods::is_active(p.meta(), &p.pod);
        let rules = ClaimRules {
            considers: &active,
            matches: &selects,
            ..ClaimRules::selector_only()
        };
        let mut owned = pod_claims::claim_pods(&self.ctx, &object, &selector, &rules).await?;

        let events = self.ctx.events.for_component(COMPONENT);
        if owned.len() < desired {
            let missing = (desired - owned.len()).min(MAX_CHANGES_PER_ROUND);
            let owner = controller_reference(&object);
            // Concurrent creates share Raft entries.
            let mut creates = tokio::task::JoinSet::new();
            for _ in 0..missing {
                let pod =
                    pod_from_template(&key.name, &key.namespace, &spec.template, owner.clone());
                let writer = self.ctx.writer.clone();
                creates.spawn(async move { writer.create_from_template(pod).await });
            }
            let mut failure = None;
            while let Some(joined) = creates.join_next().await {
                match joined {
                    Ok(Ok(created)) => {
                        let message = format!("Created pod: {}", created.meta().name);
                        events.normal(&object, "SuccessfulCreate", message);
                        owned.extend(StoredPod::read(created));
                    }
                    // A random name collided; the next round tries another.
                    Ok(Err(e)) if e.is_already_exists() => {}
                    Ok(Err(e)) => {
                        events.warning(&object, "FailedCreate", format!("Error creating: {e}"));
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
            if let Some(e) = failure {
                return Err(e);
            }
        } else if owned.len() > desired {
            let excess = (owned.len() - desired).min(MAX_CHANGES_PER_ROUND);
            // Delete the least useful first: unscheduled, then not ready,
            // then the newest.
            owned.sort_by_key(deletion_rank);
            for pod in owned.drain(..excess) {
                let meta = pod.meta();
                match self
                    .ctx
                    .writer
                    .delete(Kind::Pod, &meta.namespace, &meta.name, "")
                    .await
                {
                    Ok(_) => {
                        let message = format!("Deleted pod: {}", meta.name);
                        events.normal(&object, "SuccessfulDelete", message);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        events.warning(&object, "FailedDelete", format!("Error deleting: {e}"));
                        return Err(e.into());
                    }
                }
            }
        }

        let ready = owned.iter().filter(|p| pods::is_ready(&p.pod)).count() as i32;
        let (available, next_available) = available_pods(
            owned.iter().map(|p| &*p.pod),
            spec.min_ready_seconds,
            std::time::SystemTime::now(),
        );
        let template_labels = &spec.template.metadata.labels;
        let labelled = owned
            .iter()
            .filter(|p| {
                let labels = &p.meta().labels;
                template_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .count() as i32;
        let status = v1::ReplicaSetStatus {
            replicas: owned.len() as i32,
            fully_labeled_replicas: labelled,
            ready_replicas: ready,
            available_replicas: available,
            observed_generation: object.meta().generation,
            conditions: Vec::new(),
        };
        if workload_spec::read_status::<v1::ReplicaSetStatus>(rs) != status {
            let updated = workload_spec::with_status(rs, &status);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        if owned.len() != desired {
            // More to do than one round allows, or creates that collided.
            return Ok(Action::RequeueAfter(std::time::Duration::from_millis(200)));
        }
        if let Some(wait) = next_available {
            // A ready pod becomes available once minReadySeconds have passed.
            return Ok(Action::RequeueAfter(wait));
        }
        Ok(Action::Done)
    }
}

/// Pods that have been Ready for at least `min_ready_seconds`, and how long
/// until the next ready pod gets there (if one is still waiting).
pub fn available_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: std::time::SystemTime,
) -> (i32, Option<std::time::Duration>) {
    let min_ready = std::time::Duration::from_secs(min_ready_seconds.max(0) as u64);
    let mut available = 0;
    let mut next: Option<std::time::Duration> = None;
    for pod in pods.into_iter().filter(|p| pods::is_ready(p)) {
        let since = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| std::time::SystemTime::from(t.0));
        let ready_for = since
            .and_then(|t| now.duration_since(t).ok())
            // Without a transition time, count it as ready long enough.
            .unwrap_or(min_ready);
        if ready_for >= min_ready {
            available += 1;
        } else {
            let wait = min_ready - ready_for;
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
    }
    (available, next)
}

/// A pod of the ReplicaSet `rs_name`: its template's labels,
/// annotations and spec (every field of it).
fn pod_from_template(
    rs_name: &str,
    namespace: &str,
    template: &PodTemplate,
    owner: Option<v1::OwnerReference>,
) -> Object {
    let meta = v1::ObjectMeta {
        name: format!("{rs_name}-{}", random_suffix()),
        namespace: namespace.to_owned(),
        labels: template.metadata.labels.clone(),
        annotations: template.metadata.annotations.clone(),
        owner_references: owner.into_iter().collect(),
        ..Default::default()
    };
    PodTemplate::pod(meta, template.spec.clone())
}

/// Lower ranks are deleted first.
fn deletion_rank(pod: &StoredPod) -> (u8, u8, std::cmp::Reverse<String>) {
    let scheduled = !pods::node_name(&pod.pod).is_empty();
    (
        u8::from(scheduled),
        u8::from(pods::is_ready(&pod.pod)),
        std::cmp::Reverse(pod.meta().creation_timestamp.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn ready_since(at: &str) -> Pod {
        let conditions = [json!({"type": "Ready", "status": "True", "lastTransitionTime": at})];
        serde_json::from_value(json!({"status": {"conditions": conditions}})).unwrap()
    }

    #[test]
    fn pods_become_available_after_min_ready_seconds() {
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let pods = vec![
            ready_since("2026-01-01T00:00:00Z"),
            ready_since("2026-01-01T00:00:55Z"),
            Pod::default(),
        ];
        assert_eq!(available_pods(&pods, 0, now), (2, None));
        assert_eq!(
            available_pods(&pods, 10, now),
            (1, Some(Duration::from_secs(5)))
        );
        assert_eq!(
            available_pods(&pods, 120, now),
            (0, Some(Duration::from_secs(60)))
        );
        assert_eq!(available_pods(&[], 10, SystemTime::now()), (0, None));
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::controllers::recording::{context, Failure, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::deletion::{DeleteOptions, Propagation};
    use std::sync::Arc;

    fn replicaset(replicas: i32) -> String {
        format!(
            r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, image: busybox}}]}}
"#
        )
    }

    fn setup(replicas: i32) -> (Arc<RecordingObjects>, ReplicaSetController, Object) {
        let objects = RecordingObjects::new();
        let rs = objects.seed_yaml(&replicaset(replicas)).remove(0);
        let controller = ReplicaSetController {
            ctx: context(&objects),
        };
        (objects, controller, rs)
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::ReplicaSet, "default", "web")
    }

    fn pods(objects: &RecordingObjects) -> Vec<v1::Pod> {
        objects
            .objects(Kind::Pod)
            .into_iter()
            // Pods of a format before documents: their protobuf model.
            .filter_map(
                |o| match skiff_objects::legacy_bodies::for_reader(o, 6).kind {
                    Some(Body::Pod(p)) => Some(p),
                    _ => None,
                },
            )
            .collect()
    }

    fn status(objects: &RecordingObjects) -> v1::ReplicaSetStatus {
        let stored = objects.get(Kind::ReplicaSet, "default", "web").unwrap();
        match stored.as_deref().and_then(|o| o.kind.as_ref()) {
            Some(Body::Generic(rs)) => workload_spec::read_status(rs),
            _ => panic!("ReplicaSet gone"),
        }
    }

    /// Seeds a pod owned by (`owner`) or merely labelled for the ReplicaSet.
    fn seed_pod(
        objects: &RecordingObjects,
        name: &str,
        node: &str,
        ready: bool,
        owner: Option<&Object>,
    ) {
        let mut pod = v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                owner_references: owner.and_then(controller_reference).into_iter().collect(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        if ready {
            pod.status = Some(v1::PodStatus {
                conditions: vec![v1::PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        objects.seed(pod.into_object());
    }

    #[tokio::test]
    async fn missing_pods_are_created_from_the_template_and_owned() {
        let (objects, controller, rs) = setup(3);
        controller.reconcile(&key()).await.unwrap();
        let pods = pods(&objects);
        assert_eq!(pods.len(), 3);
        // One Event on the ReplicaSet per pod, naming it.
        let events = objects.events();
        assert_eq!(events.len(), 3, "{events:?}");
        for event in &events {
            assert_eq!(event.reason, "SuccessfulCreate");
            assert_eq!(event.event_type, crate::events::EventType::Normal);
            assert_eq!(event.source.component, "replicaset-controller");
            assert_eq!(event.involved.kind, "ReplicaSet");
            assert_eq!(event.involved.name, "web");
            assert_eq!(event.involved.uid, rs.meta().uid);
            let created = event.message.strip_prefix("Created pod: ").unwrap();
            assert!(
                pods.iter()
                    .any(|p| p.metadata.as_ref().is_some_and(|m| m.name == created)),
                "{created} is not one of the pods"
            );
        }
        for pod in &pods {
            let meta = pod.metadata.as_ref().unwrap();
            assert!(meta.name.starts_with("web-"), "{}", meta.name);
            assert_eq!(meta.labels.get("app").unwrap(), "web");
            let owner = controller_of(&pod.clone().into_object(), Kind::ReplicaSet)
                .cloned()
                .expect("owned");
            assert_eq!(owner.uid, rs.meta().uid);
            assert_eq!(pod.spec.as_ref().unwrap().containers[0].image, "busybox");
        }
        assert_eq!(status(&objects).replicas, 3);
        // Level-triggered: a second look creates nothing more.
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        assert!(objects.writes().iter().all(|w| w.op != WriteOp::Create));
        assert_eq!(pods_len(&objects), 3);
    }

    #[tokio::test]
    async fn a_pod_carries_every_field_of_the_template_not_only_the_models() {
        let objects = RecordingObjects::new();
        // Affinity and readiness gates: fields skiff's protobuf model of a
        // pod has no place for.
        let yaml = replicaset(1).replace(
            "    spec: {containers: [{name: c, image: busybox}]}",
            "    spec:\n      containers: [{name: c, image: busybox}]\n      readinessGates: [{conditionType: example.com/ready}]\n      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}",
        );
        objects.seed_yaml(&yaml);
        let controller = ReplicaSetController {
            ctx: context(&objects),
        };
        controller.reconcile(&key()).await.unwrap();
        let made = objects.objects(Kind::Pod);
        assert_eq!(made.len(), 1);
        let Some(Body::Generic(pod)) = &made[0].kind else {
            panic!("not a document: {:?}", made[0]);
        };
        let content = skiff_objects::generic::content(pod);
        let spec = &content["spec"];
        assert_eq!(
            spec["readinessGates"][0]["conditionType"],
            "example.com/ready"
        );
        let terms = spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms");
        assert_eq!(terms.unwrap()[0]["matchExpressions"][0]["key"], "zone");
        assert_eq!(pod.metadata.as_ref().unwrap().labels["app"], "web");
    }

    fn pods_len(objects: &RecordingObjects) -> usize {
        pods(objects).len()
    }

    #[tokio::test]
    async fn excess_pods_go_unscheduled_first_then_unready_and_ready_ones_stay() {
        let (objects, controller, rs) = setup(1);
        seed_pod(&objects, "web-ready", "n1", true, Some(&rs));
        seed_pod(&objects, "web-unready", "n1", false, Some(&rs));
        seed_pod(&objects, "web-pending", "", false, Some(&rs));
        controller.reconcile(&key()).await.unwrap();
        let deleted: Vec<String> = objects
            .writes()
            .into_iter()
            .filter(|w| w.op == WriteOp::Delete)
            .map(|w| w.name)
            .collect();
        assert_eq!(deleted, ["web-pending", "web-unready"]);
        let events: Vec<String> = objects.events().into_iter().map(|e| e.message).collect();
        assert_eq!(
            events,
            ["Deleted pod: web-pending", "Deleted pod: web-unready"]
        );
        // The unscheduled one is gone; the one on a node terminates there.
        let left: Vec<String> = pods(&objects)
            .iter()
            .filter(|p| skiff_objects::pods::pod_is_active(p))
            .map(|p| p.metadata.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(left, ["web-ready"]);
        assert_eq!(pods_len(&objects), 2, "web-unready is terminating");
    }

    #[tokio::test]
    async fn a_terminating_pod_is_replaced_at_once_and_not_counted() {
        let (objects, controller, rs) = setup(2);
        seed_pod(&objects, "web-a", "n1", true, Some(&rs));
        seed_pod(&objects, "web-b", "n1", true, Some(&rs));
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(pods_len(&objects), 2);
        // Deleted on its node: it stays until the node has stopped it.
        let terminating = objects.remove(Kind::Pod, "default", "web-b", "").unwrap();
        assert!(!terminating.meta().deletion_timestamp.is_empty());
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        let writes = objects.writes();
        let created = writes.iter().filter(|w| w.op == WriteOp::Create);
        assert_eq!(created.count(), 1, "a replacement at once");
        assert_eq!(pods_len(&objects), 3);
        let status = status(&objects);
        assert_eq!(status.replicas, 2, "the terminating pod is not counted");
        assert_eq!(status.ready_replicas, 1);
    }

    #[tokio::test]
    async fn a_replicaset_being_deleted_replaces_nothing() {
        let (objects, controller, _) = setup(2);
        let foreground = DeleteOptions::propagating(Propagation::Foreground);
        let rs = objects.delete_as_kubernetes(Kind::ReplicaSet, "default", "web", &foreground);
        assert!(is_being_deleted(rs.unwrap().meta()));
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(pods_len(&objects), 0, "its pods are the collector's");
    }

    #[tokio::test]
    async fn an_orphan_the_selector_matches_is_adopted_instead_of_a_new_pod() {
        let (objects, controller, rs) = setup(1);
        seed_pod(&objects, "stray", "n1", true, None);
        controller.reconcile(&key()).await.unwrap();
        let pods = pods(&objects);
        assert_eq!(pods.len(), 1, "adopted, not created");
        let adopted = pods[0].clone().into_object();
        assert_eq!(adopted.meta().name, "stray");
        assert_eq!(
            controller_of(&adopted, Kind::ReplicaSet).map(|o| o.uid.clone()),
            Some(rs.meta().uid.clone())
        );
        assert_eq!(status(&objects).ready_replicas, 1);
    }

    #[tokio::test]
    async fn a_failed_create_fails_the_round_and_the_next_round_makes_up_for_it() {
        let (objects, controller, _) = setup(3);
        objects.fail_next(WriteOp::Create, Kind::Pod, None, Failure::Unavailable);
        let e = controller.reconcile(&key()).await.unwrap_err();
        assert!(matches!(e, ReconcileError::Write(_)), "{e}");
        assert_eq!(pods_len(&objects), 2);
        let mut reasons = objects.event_reasons();
        reasons.sort();
        assert_eq!(
            reasons,
            ["FailedCreate", "SuccessfulCreate", "SuccessfulCreate"]
        );
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(pods_len(&objects), 3);
    }

    #[tokio::test]
    async fn a_conflicting_status_write_is_a_conflict_to_retry() {
        let (objects, controller, _) = setup(1);
        objects.fail_next(
            WriteOp::UpdateStatus,
            Kind::ReplicaSet,
            Some("web"),
            Failure::Conflict,
        );
        let e = controller.reconcile(&key()).await.unwrap_err();
        assert!(e.is_conflict(), "{e}");
    }
}
