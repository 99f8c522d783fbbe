//! The disruption controller: keeps each PodDisruptionBudget's status as
//! Kubernetes' disruption controller does (`expectedPods`,
//! `desiredHealthy`, `currentHealthy`, `disruptionsAllowed`,
//! `observedGeneration`, `disruptedPods` and the `DisruptionAllowed`
//! condition; the arithmetic is `objects::disruption_budget`), which the
//! eviction subresource takes its disruptions from. The expected count
//! comes, where Kubernetes takes it from there, from the scale of the
//! selected pods' controllers: a ReplicaSet (its Deployment's, when a
//! Deployment controls it) or a StatefulSet. A budget is looked at again
//! when a pod of its namespace it selects changes, when a scaled
//! controller of its namespace changes, and when an evicted pod's entry in
//! `disruptedPods` runs out. A budget it cannot count (a selected pod
//! without a scaled controller) gets Kubernetes' fail-safe status (no
//! disruptions, `SyncFailed`) and a `CalculateExpectedPodCountFailed`
//! Event; one that selects no pods a `NoPods` Event.

use std::time::SystemTime;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::disruption_budget::{
    compute_status, Budget, BudgetStatusExt, DISRUPTION_ALLOWED,
};
use skiff_objects::owners::{self, controller_of};
use skiff_objects::pods::StoredPod;
use skiff_objects::{generic, IntoObject, Kind, ObjectExt};

/// The component its Events are recorded as.
const COMPONENT: &str = "controllermanager";

pub struct DisruptionController {
    ctx: Context,
}

impl DisruptionController {
    pub fn new(ctx: Context) -> DisruptionController {
        DisruptionController { ctx }
    }

    /// The budgets of `namespace`, each with its key.
    fn budgets_in(&self, namespace: &str) -> Vec<(ObjectKey, Budget)> {
        let Ok((objects, _)) = self
            .ctx
            .store
            .list(Kind::PodDisruptionBudget, Some(namespace))
        else {
            return Vec::new();
        };
        objects
            .iter()
            .filter_map(|o| Some((ObjectKey::of(o)?, Budget::of(o)?)))
            .collect()
    }

    /// The scaled controller of `pod` (its uid) and its `spec.replicas`:
    /// Kubernetes' finders for ReplicaSets (or their Deployment) and
    /// StatefulSets.
    fn scale_of(&self, namespace: &str, pod: &v1::ObjectMeta) -> Result<(String, i64), String> {
        let name = pod.name.as_str();
        let owner = owners::controller(pod);
        let Some(owner) = owner else {
            return Err(format!("found no controller ref for pod {name:?}"));
        };
        let no_controller = || format!("found no controllers for pod {name:?}");
        let get = |kind: Kind, name: &str| -> Result<Option<Object>, String> {
            let found = self.ctx.store.get(kind, namespace, name);
            let found = found.map_err(|e| e.to_string())?;
            Ok(found.map(|o| (*o).clone()))
        };
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let Some(replica_set) = get(Kind::ReplicaSet, &owner.name)? else {
                    return Err(no_controller());
                };
                if replica_set.meta().uid != owner.uid {
                    return Err(no_controller());
                }
                // `spec.replicas`, as the scale subresource reads it.
                let replicas_of = |o: &Object| {
                    skiff_objects::scale::read(o)
                        .map(|scale| i64::from(scale.replicas))
                        .map_err(|_| no_controller())
                };
                if let Some(deployment) = controller_of(&replica_set, Kind::Deployment) {
                    let found = get(Kind::Deployment, &deployment.name)?;
                    let uid = deployment.uid.clone();
                    return match found {
                        Some(d) if d.meta().uid == uid => replicas_of(&d).map(|r| (uid, r)),
                        _ => Err(no_controller()),
                    };
                }
                replicas_of(&replica_set).map(|r| (owner.uid.clone(), r))
            }
            "StatefulSet" => match get(Kind::StatefulSet, &owner.name)? {
                Some(Object {
                    kind: Some(Body::Generic(set)),
                }) if set.metadata.as_ref().is_some_and(|m| m.uid == owner.uid) => {
                    let spec = generic::content(&set).remove("spec");
                    let replicas = spec.and_then(|s| s["replicas"].as_i64()).unwrap_or(1);
                    Ok((owner.uid.clone(), replicas))
                }
                _ => Err(no_controller()),
            },
            _ => Err(no_controller()),
        }
    }
}

impl Reconciler for DisruptionController {
    const NAME: &'static str = "disruption";
    const KIND: Kind = Kind::PodDisruptionBudget;
    const WATCHES: KindFilter = KindFilter::only(&[
        Kind::PodDisruptionBudget,
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::StatefulSet,
    ]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::PodDisruptionBudget => ObjectKey::of(object).into_iter().collect(),
            // The budgets that select the pod, from the cache's index of
            // budgets by the labels they select.
            Kind::Pod => {
                let meta = object.meta();
                let budgets = self
                    .ctx
                    .store
                    .budgets_selecting(&event.namespace, &meta.labels);
                budgets
                    .iter()
                    .filter_map(|o| Some((ObjectKey::of(o)?, Budget::of(o)?)))
                    .filter(|(_, budget)| budget.selects(meta))
                    .map(|(key, _)| key)
                    .collect()
            }
            // A scale changed: the namespace's budgets count again.
            Kind::ReplicaSet | Kind::Deployment | Kind::StatefulSet => self
                .budgets_in(&event.namespace)
                .into_iter()
                .map(|(key, _)| key)
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let found = self
            .ctx
            .store
            .get(Kind::PodDisruptionBudget, &key.namespace, &key.name)?;
        let Some(object) = found else {
            return Ok(Action::Done);
        };
        let (Some(Body::Generic(stored)), Some(budget)) = (&object.kind, Budget::of(&object))
        else {
            return Ok(Action::Done);
        };
        if is_being_deleted(object.meta()) {
            return Ok(Action::Done);
        }
        // The pods the selector may select, from the label index
        // (`compute_status` keeps those it selects); none without one.
        let candidates = match &budget.selector {
            Some(selector) => {
                let store = &self.ctx.store;
                store.selector_candidates(Kind::Pod, &key.namespace, selector)?
            }
            None => Vec::new(),
        };
        // Only the pods it selects are read.
        let pods: Vec<StoredPod> = candidates
            .into_iter()
            .filter(|o| budget.selects(o.meta()))
            .filter_map(StoredPod::read)
            .collect();
        let scale = |pod: &v1::ObjectMeta| self.scale_of(&key.namespace, pod);
        let (status, recheck) = compute_status(&budget, &pods, scale, SystemTime::now());
        if status != budget.status {
            let events = self.ctx.events.for_component(COMPONENT);
            match status.allowed_condition() {
                Some((_, "SyncFailed")) => {
                    let conditions = status.conditions.as_deref().unwrap_or_default();
                    let message = conditions
                        .iter()
                        .find(|c| c.type_ == DISRUPTION_ALLOWED)
                        .map(|c| c.message.as_str());
                    let message = format!(
                        "Failed to calculate the number of expected pods: {}",
                        message.unwrap_or("")
                    );
                    events.warning(&object, "CalculateExpectedPodCountFailed", message);
                }
                _ if !pods.iter().any(|p| budget.selects(p.meta())) => {
                    events.normal(&object, "NoPods", "No matching pods found");
                }
                _ => {}
            }
            // Conditional on the version read: an eviction that took a
            // disruption meanwhile is counted again.
            let written = status.write_into(stored);
            self.ctx.writer.update_status(written.into_object()).await?;
        }
        Ok(recheck.map_or(Action::Done, Action::RequeueAfter))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::disruption_budget::BudgetStatus;

    /// A Deployment of 3 whose ReplicaSet runs `web-0..2`, and a budget
    /// that lets one of them go.
    const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "web:1"}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
"#;

    fn setup() -> (Arc<RecordingObjects>, DisruptionController) {
        let objects = RecordingObjects::new();
        let deployment = objects.seed_yaml(WEB).remove(0);
        let replica_set = format!(
            r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-abc
  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: "{}", controller: true}}]
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: "web:1"}}]}}
"#,
            deployment.meta().uid
        );
        let replica_set = objects.seed_yaml(&replica_set).remove(0);
        for i in 0..3 {
            let pod = format!(
                r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  labels: {{app: web}}
  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc, uid: "{}", controller: true}}]
spec: {{containers: [{{name: web, image: "web:1"}}]}}
"#,
                replica_set.meta().uid
            );
            let pod = objects.seed_yaml(&pod).remove(0);
            let pod = skiff_objects::pods::with_reported_status(
                &pod,
                Some(v1::PodStatus {
                    phase: "Running".into(),
                    conditions: vec![v1::PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            );
            objects.write(WriteOp::UpdateStatus, pod).unwrap();
        }
        let controller = DisruptionController::new(context(&objects));
        (objects, controller)
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::PodDisruptionBudget, "default", "web-pdb")
    }

    fn budget(objects: &RecordingObjects) -> Budget {
        let stored = objects.get(Kind::PodDisruptionBudget, "default", "web-pdb");
        let stored = stored.unwrap().expect("the budget");
        Budget::of(&stored).expect("a budget")
    }

    fn counts(status: &BudgetStatus) -> (i32, i32, i32, i32) {
        (
            status.expected_pods,
            status.desired_healthy,
            status.current_healthy,
            status.disruptions_allowed,
        )
    }

    #[tokio::test]
    async fn the_status_counts_the_deployments_scale_and_the_ready_pods() {
        let (objects, controller) = setup();
        controller.reconcile(&key()).await.unwrap();
        let status = budget(&objects).status;
        assert_eq!(counts(&status), (3, 2, 3, 1));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.allowed_condition(), Some(("True", "SufficientPods")));

        // Level-triggered: a second look writes nothing.
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        // The Deployment wants 4: one is missing, none may go.
        let stored = objects.get(Kind::Deployment, "default", "web").unwrap();
        let mut deployment = stored.map(Arc::unwrap_or_clone).expect("the deployment");
        skiff_objects::scale::set_replicas(&mut deployment, 4).unwrap();
        let changed = objects.write(WriteOp::Update, deployment).unwrap();
        let event = StoredEvent {
            revision: 1,
            kind: Kind::Deployment,
            namespace: "default".into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        assert_eq!(controller.keys_for(&event, &changed), [key()]);
        controller.reconcile(&key()).await.unwrap();
        let status = budget(&objects).status;
        assert_eq!(counts(&status), (4, 3, 3, 0));
        assert_eq!(
            status.allowed_condition(),
            Some(("False", "InsufficientPods"))
        );
    }

    #[tokio::test]
    async fn a_selected_pod_without_a_controller_fails_the_budget_safe() {
        let (objects, controller) = setup();
        let stored = objects.get(Kind::Pod, "default", "web-2").unwrap();
        let mut orphan = stored.map(Arc::unwrap_or_clone).expect("web-2");
        if let Ok(meta) = orphan.meta_mut() {
            meta.owner_references.clear();
        }
        objects.write(WriteOp::Update, orphan).unwrap();
        controller.reconcile(&key()).await.unwrap();
        let status = budget(&objects).status;
        assert_eq!(status.disruptions_allowed, 0);
        assert_eq!(status.allowed_condition(), Some(("False", "SyncFailed")));
        let reasons = objects.event_reasons();
        assert_eq!(reasons, ["CalculateExpectedPodCountFailed"]);
    }

    #[tokio::test]
    async fn a_budget_selecting_by_expressions_counts_the_same_pods() {
        let (objects, controller) = setup();
        objects.seed_yaml(
            r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-expr}
spec:
  maxUnavailable: 1
  selector:
    matchExpressions: [{key: app, operator: In, values: [web, api]}]
"#,
        );
        let expr = ObjectKey::new(Kind::PodDisruptionBudget, "default", "web-expr");
        controller.reconcile(&expr).await.unwrap();
        let stored = objects.get(Kind::PodDisruptionBudget, "default", "web-expr");
        let status = Budget::of(&stored.unwrap().unwrap()).unwrap().status;
        assert_eq!(counts(&status), (3, 2, 3, 1));

        // A pod change reaches both budgets that select it, in name order.
        let web_0 = objects.get(Kind::Pod, "default", "web-0").unwrap().unwrap();
        let event = StoredEvent {
            revision: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        assert_eq!(controller.keys_for(&event, &web_0), [expr, key()]);
    }

    #[tokio::test]
    async fn pod_changes_reach_the_budgets_that_select_them() {
        let (objects, controller) = setup();
        let web_0 = objects.get(Kind::Pod, "default", "web-0").unwrap().unwrap();
        let event = StoredEvent {
            revision: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        assert_eq!(controller.keys_for(&event, &web_0), [key()]);
        let other = objects.seed_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: db, labels: {app: db}}\nspec: {containers: [{name: db, image: db}]}\n",
        );
        assert!(controller.keys_for(&event, &other[0]).is_empty());
    }
}
