//! The StatefulSet controller's reconcile against the recording store:
//! members created in order with their claims, scaled down in reverse,
//! rolled with a partition, replaced under their names.

use std::sync::Arc;

use serde_json::Value;

use super::spec::{POD_INDEX_LABEL, POD_NAME_LABEL};
use super::*;
use crate::controllers::recording::{context, RecordingObjects, WriteOp};
use crate::controllers::ObjectReads;
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::generic;
use skiff_objects::pods::{self, pod_is_terminating};
use skiff_objects::IntoObject;

const WEB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: "web:1"
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

fn setup(yaml: &str) -> (Arc<RecordingObjects>, StatefulSetController) {
    let objects = RecordingObjects::new();
    objects.seed_yaml(yaml);
    let controller = StatefulSetController::new(context(&objects));
    (objects, controller)
}

fn key() -> ObjectKey {
    ObjectKey::new(Kind::StatefulSet, "default", "web")
}

/// The pods stored (documents), in the protobuf model (to change in
/// tests).
fn pods(objects: &RecordingObjects) -> Vec<v1::Pod> {
    let mut pods = Vec::new();
    for object in objects.objects(Kind::Pod) {
        if let Some(Body::Pod(pod)) = as_model(object).kind {
            pods.push(pod);
        }
    }
    pods
}

fn as_model(object: Object) -> Object {
    skiff_objects::legacy_bodies::for_reader(object, 6)
}

/// `pod` as the writer stores it: a document.
fn stored(pod: v1::Pod) -> Object {
    skiff_objects::legacy_bodies::to_document(pod.into_object())
}

fn name(pod: &v1::Pod) -> String {
    pod.metadata.clone().unwrap_or_default().name
}

/// The pods not being deleted, by name.
fn live(objects: &RecordingObjects) -> Vec<String> {
    let pods = pods(objects).into_iter().filter(|p| !pod_is_terminating(p));
    pods.map(|p| name(&p)).collect()
}

fn terminating(objects: &RecordingObjects) -> Vec<String> {
    let pods = pods(objects).into_iter().filter(pod_is_terminating);
    pods.map(|p| name(&p)).collect()
}

fn pod(objects: &RecordingObjects, pod: &str) -> v1::Pod {
    pods(objects)
        .into_iter()
        .find(|p| name(p) == pod)
        .unwrap_or_else(|| panic!("no pod {pod}"))
}

fn revision_of(pod: &v1::Pod) -> String {
    let labels = pod.metadata.clone().unwrap_or_default().labels;
    labels.get(REVISION_HASH_LABEL).cloned().unwrap_or_default()
}

/// The claims, by name, with their uids.
fn claims(objects: &RecordingObjects) -> Vec<(String, String)> {
    let claims = objects.objects(Kind::PersistentVolumeClaim);
    let meta = claims.iter().map(|c| c.meta());
    meta.map(|m| (m.name.clone(), m.uid.clone())).collect()
}

fn claim_names(objects: &RecordingObjects) -> Vec<String> {
    claims(objects).into_iter().map(|(n, _)| n).collect()
}

fn stored_set(objects: &RecordingObjects) -> v1::GenericObject {
    let stored = objects.get(Kind::StatefulSet, "default", "web").unwrap();
    match stored.map(Arc::unwrap_or_clone) {
        Some(Object {
            kind: Some(Body::Generic(g)),
        }) => g,
        other => panic!("no StatefulSet: {other:?}"),
    }
}

fn status(objects: &RecordingObjects) -> StatefulSetStatus {
    StatefulSetStatus::read(&stored_set(objects))
}

/// Changes the StatefulSet's spec as `kubectl edit` would.
fn edit(objects: &RecordingObjects, change: impl FnOnce(&mut Value)) {
    let mut set = stored_set(objects);
    let mut content = generic::content(&set);
    if let Some(spec) = content.get_mut("spec") {
        change(spec);
    }
    generic::set_content(&mut set, &content);
    objects.write(WriteOp::Update, set.into_object()).unwrap();
}

fn set_image(objects: &RecordingObjects, image: &str) {
    edit(objects, |spec| {
        spec["template"]["spec"]["containers"][0]["image"] = Value::from(image);
    });
}

/// Whether a pod's Ready condition holds, read as the controllers read it.
fn ready(pod: &v1::Pod) -> bool {
    let object = pod.clone().into_object();
    pods::read(&object).is_some_and(|p| pods::is_ready(&p))
}

/// Plays the scheduler and the nodes: every pod not yet Ready is bound
/// (so that deleting it gives it a grace period) and Running and Ready.
fn report_ready(objects: &RecordingObjects) {
    for mut pod in pods(objects) {
        if ready(&pod) || pod_is_terminating(&pod) {
            continue;
        }
        if pod.spec.as_ref().is_none_or(|s| s.node_name.is_empty()) {
            pod.spec.get_or_insert_with(Default::default).node_name = "n1".into();
            let bound = objects.write(WriteOp::Update, stored(pod)).unwrap();
            let Some(Body::Pod(bound)) = as_model(bound).kind else {
                panic!("the store answered a pod write with another kind");
            };
            pod = bound;
        }
        pod.status = Some(v1::PodStatus {
            phase: "Running".into(),
            conditions: vec![v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        objects.write(WriteOp::UpdateStatus, stored(pod)).unwrap();
    }
}

/// Plays the nodes: the pods being deleted have stopped and are gone.
fn confirm_gone(objects: &RecordingObjects) {
    for pod in terminating(objects) {
        let options = DeleteOptions::force();
        let gone = objects.delete_as_kubernetes(Kind::Pod, "default", &pod, &options);
        gone.unwrap();
    }
}

/// Reconciles, plays the nodes, until nothing changes (at most 30 rounds).
async fn settle(objects: &RecordingObjects, controller: &StatefulSetController) {
    for _ in 0..30 {
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        report_ready(objects);
        confirm_gone(objects);
        if objects.writes().is_empty() {
            return;
        }
    }
    panic!("no steady state after 30 rounds");
}

#[tokio::test]
async fn members_are_created_one_at_a_time_in_order_each_after_its_claim() {
    let (objects, controller) = setup(WEB);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(live(&objects), ["web-0"]);
    assert_eq!(claim_names(&objects), ["data-web-0"]);
    let writes = objects.writes();
    let order: Vec<(Kind, &str)> = writes
        .iter()
        .filter(|w| w.op == WriteOp::Create)
        .map(|w| (w.kind, w.name.as_str()))
        .collect();
    assert_eq!(
        order[1..],
        [
            (Kind::PersistentVolumeClaim, "data-web-0"),
            (Kind::Pod, "web-0")
        ],
        "the revision, then the claim before the pod"
    );

    let web_0 = pod(&objects, "web-0");
    let meta = web_0.metadata.clone().unwrap();
    assert_eq!(meta.labels[POD_NAME_LABEL], "web-0");
    assert_eq!(meta.labels[POD_INDEX_LABEL], "0");
    assert_eq!(meta.owner_references[0].kind, "StatefulSet");
    let spec = web_0.spec.clone().unwrap();
    assert_eq!(
        (spec.hostname.as_str(), spec.subdomain.as_str()),
        ("web-0", "web")
    );
    let first = status(&objects);
    assert_eq!(Some(revision_of(&web_0)), first.update_revision);
    assert_eq!(first.current_revision, first.update_revision);
    assert!(first.update_revision.unwrap().starts_with("web-"));
    assert_eq!((first.replicas, first.ready_replicas), (1, None));

    // Not Ready yet: nothing more, and a second look writes nothing.
    objects.clear_writes();
    controller.reconcile(&key()).await.unwrap();
    assert!(objects.writes().is_empty(), "{:?}", objects.writes());

    report_ready(&objects);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(live(&objects), ["web-0", "web-1"]);
    settle(&objects, &controller).await;
    assert_eq!(live(&objects), ["web-0", "web-1", "web-2"]);
    let claims: Vec<String> = claim_names(&objects);
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"]);
    let status = status(&objects);
    let counts = (
        status.replicas,
        status.ready_replicas,
        status.available_replicas,
        status.updated_replicas,
        status.current_replicas,
    );
    assert_eq!(counts, (3, Some(3), Some(3), Some(3), Some(3)));
    let reasons = objects.event_reasons();
    let creates = reasons.iter().filter(|r| *r == "SuccessfulCreate").count();
    assert_eq!(creates, 6, "three claims and three pods: {reasons:?}");
    // The claims are retained by default: not owned by the StatefulSet.
    let claim = objects.objects(Kind::PersistentVolumeClaim).remove(0);
    assert!(claim.meta().owner_references.is_empty());
}

#[tokio::test]
async fn a_scale_down_removes_the_highest_member_first_and_keeps_its_claim() {
    let (objects, controller) = setup(WEB);
    settle(&objects, &controller).await;
    edit(&objects, |spec| spec["replicas"] = Value::from(1));
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-2"]);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-2"], "one at a time");
    confirm_gone(&objects);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-1"]);
    settle(&objects, &controller).await;
    assert_eq!(live(&objects), ["web-0"]);
    let claims = claim_names(&objects);
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"], "Retain");

    // Back up: the members come back to their old claims.
    let before = self::claims(&objects);
    edit(&objects, |spec| spec["replicas"] = Value::from(3));
    settle(&objects, &controller).await;
    assert_eq!(live(&objects), ["web-0", "web-1", "web-2"]);
    assert_eq!(self::claims(&objects), before, "the same claims");
}

#[tokio::test]
async fn when_scaled_delete_removes_the_claims_of_removed_members() {
    let policy = WEB.replace(
        "serviceName: web",
        "serviceName: web\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}",
    );
    let (objects, controller) = setup(&policy);
    settle(&objects, &controller).await;
    let claim = objects.objects(Kind::PersistentVolumeClaim).remove(0);
    let owner = &claim.meta().owner_references[0];
    assert_eq!(owner.kind, "StatefulSet", "whenDeleted: Delete: owned");
    edit(&objects, |spec| spec["replicas"] = Value::from(2));
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(claim_names(&objects).len(), 3, "kept while web-2 is going");
    settle(&objects, &controller).await;
    assert_eq!(claim_names(&objects), ["data-web-0", "data-web-1"]);
}

#[tokio::test]
async fn a_deleted_member_comes_back_with_its_name_and_its_claim() {
    let (objects, controller) = setup(WEB);
    settle(&objects, &controller).await;
    let before = claims(&objects);
    let old_uid = pod(&objects, "web-1").metadata.unwrap().uid;
    let options = DeleteOptions::default();
    objects
        .delete_as_kubernetes(Kind::Pod, "default", "web-1", &options)
        .unwrap();
    // Still being deleted: no second web-1.
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-1"]);
    settle(&objects, &controller).await;
    let web_1 = pod(&objects, "web-1");
    assert_ne!(web_1.metadata.unwrap().uid, old_uid, "a new pod");
    assert_eq!(claims(&objects), before, "the same claim");
}

#[tokio::test]
async fn a_rolling_update_with_a_partition_updates_only_the_members_above_it() {
    let (objects, controller) = setup(WEB);
    settle(&objects, &controller).await;
    let first = status(&objects).update_revision.unwrap();
    edit(&objects, |spec| {
        spec["updateStrategy"] =
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
    });
    set_image(&objects, "web:2");
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-2"]);
    settle(&objects, &controller).await;
    let second = status(&objects).update_revision.unwrap();
    assert_ne!(first, second);
    let revisions: Vec<String> = ["web-0", "web-1", "web-2"]
        .iter()
        .map(|p| revision_of(&pod(&objects, p)))
        .collect();
    assert_eq!(revisions, [first.clone(), first.clone(), second.clone()]);
    let status_now = status(&objects);
    assert_eq!(
        status_now.current_revision,
        Some(first.clone()),
        "not complete"
    );
    assert_eq!(
        (status_now.updated_replicas, status_now.current_replicas),
        (Some(1), Some(2))
    );
    let image = pod(&objects, "web-2").spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image, "web:2");

    // A member below the partition that is deleted comes back at the
    // current revision.
    objects
        .delete_as_kubernetes(Kind::Pod, "default", "web-0", &DeleteOptions::force())
        .unwrap();
    settle(&objects, &controller).await;
    let web_0 = pod(&objects, "web-0");
    assert_eq!(revision_of(&web_0), first);
    assert_eq!(web_0.spec.unwrap().containers[0].image, "web:1");

    // Partition 0: the rest roll, highest first, and the rollout completes.
    edit(&objects, |spec| {
        spec["updateStrategy"]["rollingUpdate"]["partition"] = Value::from(0);
    });
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(terminating(&objects), ["web-1"]);
    settle(&objects, &controller).await;
    let status_now = status(&objects);
    assert_eq!(status_now.current_revision.as_ref(), Some(&second));
    assert_eq!(status_now.update_revision.as_ref(), Some(&second));
    assert_eq!(
        (status_now.updated_replicas, status_now.current_replicas),
        (Some(3), Some(3))
    );
    let revisions = objects.objects(Kind::ControllerRevision);
    assert_eq!(revisions.len(), 2, "the old one is kept for undo");
}

#[tokio::test]
async fn parallel_members_are_created_at_once() {
    let parallel = WEB.replace(
        "serviceName: web",
        "serviceName: web\n  podManagementPolicy: Parallel\n  ordinals: {start: 1}",
    );
    let (objects, controller) = setup(&parallel);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(live(&objects), ["web-1", "web-2", "web-3"]);
    assert_eq!(
        claim_names(&objects),
        ["data-web-1", "data-web-2", "data-web-3"]
    );
}

/// Marks every member's Ready condition as holding since `at`.
fn ready_since(objects: &RecordingObjects, at: SystemTime) {
    for mut pod in pods(objects) {
        let Some(status) = pod.status.as_mut() else {
            continue;
        };
        for condition in &mut status.conditions {
            if condition.r#type == "Ready" {
                condition.last_transition_time = skiff_objects::rfc3339(at);
            }
        }
        objects.write(WriteOp::UpdateStatus, stored(pod)).unwrap();
    }
}

#[tokio::test]
async fn available_replicas_count_members_ready_for_min_ready_seconds() {
    let slow = WEB.replace(
        "serviceName: web",
        "serviceName: web\n  podManagementPolicy: Parallel\n  minReadySeconds: 30",
    );
    let (objects, controller) = setup(&slow);
    controller.reconcile(&key()).await.unwrap();
    assert_eq!(live(&objects), ["web-0", "web-1", "web-2"]);
    report_ready(&objects);
    ready_since(&objects, SystemTime::now());
    let action = controller.reconcile(&key()).await.unwrap();
    let young = status(&objects);
    assert_eq!(
        (young.ready_replicas, young.available_replicas),
        (Some(3), Some(0))
    );
    // Looked at again when the first of them has been Ready long enough.
    let Action::RequeueAfter(after) = action else {
        panic!("no look again: {action:?}");
    };
    let window = Duration::from_secs(25)..=Duration::from_secs(30);
    assert!(window.contains(&after), "{after:?}");

    ready_since(&objects, SystemTime::now() - Duration::from_secs(31));
    let action = controller.reconcile(&key()).await.unwrap();
    assert_eq!(action, Action::Done);
    let grown = status(&objects);
    assert_eq!(
        (grown.ready_replicas, grown.available_replicas),
        (Some(3), Some(3))
    );
}

#[tokio::test]
async fn pods_and_revisions_map_to_their_statefulset() {
    let (objects, controller) = setup(WEB);
    controller.reconcile(&key()).await.unwrap();
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
}
