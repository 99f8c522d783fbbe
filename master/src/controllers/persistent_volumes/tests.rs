//! The claim and volume controllers driven together over a recording
//! store until nothing more is written.

use std::sync::Arc;

use super::*;
use crate::controllers::recording::{context, RecordingObjects};
use crate::controllers::{ObjectReads, Reconciler};
use crate::resource_metrics::{NodeReport, ResourceMetrics, StorageUsage};
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::storage::{
    claim_ref_parts, LOCAL_PATH_CLASS, SELECTED_NODE_ANNOTATION, STORAGE_DIR_ANNOTATION,
};

/// Reconciles every claim and volume until a round writes nothing.
async fn settle(objects: &Arc<RecordingObjects>) {
    settle_with(objects, context(objects)).await;
}

/// [`settle`], the controllers reading through `ctx`.
async fn settle_with(objects: &Arc<RecordingObjects>, ctx: Context) {
    let claims = ClaimController { ctx: ctx.clone() };
    let volumes = VolumeController { ctx };
    for _ in 0..20 {
        let before = objects.writes().len();
        for o in objects.objects(Kind::PersistentVolumeClaim) {
            let key = ObjectKey::of(&o).unwrap();
            claims.reconcile(&key).await.expect("claim reconcile");
        }
        for o in objects.objects(Kind::PersistentVolume) {
            let key = ObjectKey::of(&o).unwrap();
            volumes.reconcile(&key).await.expect("volume reconcile");
        }
        if objects.writes().len() == before {
            return;
        }
    }
    panic!("the controllers kept writing");
}

fn claim(objects: &RecordingObjects, name: &str) -> Option<ClaimView> {
    let object = objects
        .get(Kind::PersistentVolumeClaim, "shop", name)
        .unwrap()?;
    ClaimView::read(&object)
}

fn volume(objects: &RecordingObjects, name: &str) -> Option<VolumeView> {
    let object = objects.get(Kind::PersistentVolume, "", name).unwrap()?;
    VolumeView::read(&object)
}

const STATIC: &str = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: big}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /srv/big}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: small}
spec:
  capacity: {storage: 3Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  persistentVolumeReclaimPolicy: Retain
  local: {path: /srv/small}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [pi-1]}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: tiny}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /srv/tiny}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 2Gi}}
"#;

#[tokio::test]
async fn a_claim_binds_to_the_smallest_static_volume_that_fits() {
    let objects = RecordingObjects::new();
    objects.seed_yaml(STATIC);
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    assert_eq!(data.phase, "Bound");
    assert_eq!(data.volume_name(), "small");
    assert_eq!(data.meta.annotations[BIND_COMPLETED_ANNOTATION], "yes");
    assert_eq!(data.meta.finalizers, [PVC_PROTECTION_FINALIZER]);
    let small = volume(&objects, "small").unwrap();
    assert_eq!(small.phase, "Bound");
    let r = small.claim_ref().unwrap();
    assert_eq!(
        (claim_ref_parts(r).1, claim_ref_parts(r).2),
        ("data", data.meta.uid.as_str())
    );
    for free in ["big", "tiny"] {
        let v = volume(&objects, free).unwrap();
        assert_eq!(v.phase, "Available", "{free}");
        assert_eq!(v.meta.finalizers, [PV_PROTECTION_FINALIZER], "{free}");
    }
    // The claim's status has the volume's size and modes.
    let object = objects
        .get(Kind::PersistentVolumeClaim, "shop", "data")
        .unwrap()
        .unwrap();
    let status = generic::content(&generic_of(&object).unwrap())["status"].clone();
    assert_eq!(status["capacity"]["storage"], "3Gi");
    assert_eq!(status["accessModes"][0], "ReadWriteOnce");
}

#[tokio::test]
async fn a_claim_that_nothing_fits_stays_pending_and_says_why() {
    let objects = RecordingObjects::new();
    objects.seed_yaml(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {requests: {storage: 2Gi}}
"#,
    );
    settle(&objects).await;
    assert_eq!(claim(&objects, "data").unwrap().phase, "Pending");
    assert!(
        objects.event_reasons().iter().any(|r| r == "FailedBinding"),
        "{:?}",
        objects.event_reasons()
    );
}

fn local_path_setup(objects: &Arc<RecordingObjects>) {
    objects.seed(skiff_objects::storage::local_path_class().into_object());
    for node in ["pi-1", "pi-2"] {
        objects.seed(
            v1::Node {
                metadata: Some(v1::ObjectMeta {
                    name: node.into(),
                    labels: [("kubernetes.io/hostname".to_owned(), node.to_owned())].into(),
                    annotations: [(
                        STORAGE_DIR_ANNOTATION.to_owned(),
                        format!("/data/{node}/storage"),
                    )]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        );
    }
    objects.seed_yaml(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {requests: {storage: 1Gi}}
"#,
    );
}

/// Gives the claim the node its first pod was placed on, as the
/// scheduler does.
fn select_node(objects: &RecordingObjects, node: &str) {
    select_node_of(objects, "data", node);
}

/// Gives the claim `name` the node its first pod was placed on.
fn select_node_of(objects: &RecordingObjects, name: &str, node: &str) {
    let object = objects
        .get(Kind::PersistentVolumeClaim, "shop", name)
        .unwrap()
        .unwrap();
    let mut g = generic_of(&object).unwrap();
    g.metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert(SELECTED_NODE_ANNOTATION.into(), node.into());
    objects
        .write(
            crate::controllers::recording::WriteOp::Update,
            g.into_object(),
        )
        .unwrap();
}

#[tokio::test]
async fn a_local_path_claim_waits_for_its_first_pod_then_gets_a_volume_on_its_node() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    settle(&objects).await;
    assert_eq!(claim(&objects, "data").unwrap().phase, "Pending");
    assert!(objects.objects(Kind::PersistentVolume).is_empty());
    assert!(objects
        .event_reasons()
        .iter()
        .any(|r| r == "WaitForFirstConsumer"));

    select_node(&objects, "pi-2");
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    let name = format!("pvc-{}", data.meta.uid);
    assert_eq!(data.phase, "Bound");
    assert_eq!(data.volume_name(), name);
    assert_eq!(
        data.meta.annotations[STORAGE_PROVISIONER_ANNOTATION],
        LOCAL_PATH_PROVISIONER
    );
    let pv = volume(&objects, &name).unwrap();
    assert_eq!(pv.phase, "Bound");
    assert!(pv.pinned_to("pi-2"));
    assert_eq!(
        pv.node_path().unwrap(),
        format!("/data/pi-2/storage/{name}")
    );
    assert_eq!(pv.class(), LOCAL_PATH_CLASS);
    assert!(objects
        .event_reasons()
        .iter()
        .any(|r| r == "ProvisioningSucceeded"));
}

fn pod_using(name: &str, claim: &str) -> Object {
    pod_on(name, claim, "pi-2")
}

/// A pod using `claim`, bound to `node` (`""`: not yet).
fn pod_on(name: &str, claim: &str, node: &str) -> Object {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "shop".into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            node_name: node.into(),
            volumes: vec![v1::Volume {
                name: "data".into(),
                persistent_volume_claim: Some(Box::new(v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: false,
                })),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_object()
}

#[tokio::test]
async fn a_claim_in_use_is_held_and_its_volume_deleted_with_it() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    select_node(&objects, "pi-2");
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    let name = data.volume_name().to_owned();
    objects.seed(pod_using("web", "data"));

    objects
        .remove(Kind::PersistentVolumeClaim, "shop", "data", "")
        .unwrap();
    settle(&objects).await;
    let held = claim(&objects, "data").expect("held while the pod uses it");
    assert!(held.being_deleted());
    assert_eq!(volume(&objects, &name).unwrap().phase, "Bound");
    // The volume cannot go from under its claim either.
    objects
        .remove(Kind::PersistentVolume, "", &name, "")
        .unwrap();
    settle(&objects).await;
    assert!(volume(&objects, &name).is_some(), "pv-protection holds it");

    objects
        .delete_as_kubernetes(Kind::Pod, "shop", "web", &DeleteOptions::force())
        .unwrap();
    settle(&objects).await;
    assert!(
        claim(&objects, "data").is_none(),
        "released once the pod went"
    );
    assert!(volume(&objects, &name).is_none(), "reclaim Delete");
}

#[tokio::test]
async fn a_retained_volume_is_released_and_a_claim_whose_volume_went_is_lost() {
    let objects = RecordingObjects::new();
    objects.seed_yaml(STATIC);
    settle(&objects).await;
    objects
        .remove(Kind::PersistentVolumeClaim, "shop", "data", "")
        .unwrap();
    settle(&objects).await;
    let small = volume(&objects, "small").expect("Retain keeps it");
    assert_eq!(small.phase, "Released");
    // A released volume is not bound again.
    objects.seed_yaml(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: again, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 2Gi}}
"#,
    );
    settle(&objects).await;
    assert_eq!(claim(&objects, "again").unwrap().volume_name(), "big");

    // The bound volume disappears from under the claim (finalizer and
    // all): the claim is Lost.
    let big = objects
        .get(Kind::PersistentVolume, "", "big")
        .unwrap()
        .unwrap();
    let bare = with_finalizer(&generic_of(&big).unwrap(), PV_PROTECTION_FINALIZER, false);
    objects
        .write(
            crate::controllers::recording::WriteOp::Update,
            bare.into_object(),
        )
        .unwrap();
    objects
        .remove(Kind::PersistentVolume, "", "big", "")
        .unwrap();
    let ctx = context(&objects);
    let claims = ClaimController { ctx };
    let key = ObjectKey::new(Kind::PersistentVolumeClaim, "shop", "again");
    claims.reconcile(&key).await.unwrap();
    assert_eq!(claim(&objects, "again").unwrap().phase, "Lost");
    assert!(objects.event_reasons().iter().any(|r| r == "ClaimLost"));
}

fn event(kind: Kind, namespace: &str) -> StoredEvent {
    StoredEvent {
        revision: 1,
        kind,
        namespace: namespace.into(),
        event_type: 0,
        node: String::new(),
        object: bytes::Bytes::new(),
        previous: bytes::Bytes::new(),
        previous_revision: 0,
    }
}

#[tokio::test]
async fn volume_and_class_changes_wake_only_the_claims_they_concern() {
    let objects = RecordingObjects::new();
    objects.seed_yaml(STATIC);
    objects.seed_yaml(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: fast-data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: fast
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: held}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: fast
  claimRef: {namespace: shop, name: fast-data}
  hostPath: {path: /srv/held}
"#,
    );
    let ctx = context(&objects);
    let claims = ClaimController { ctx: ctx.clone() };
    let volumes = VolumeController { ctx };
    let pv = |name: &str| {
        objects
            .get(Kind::PersistentVolume, "", name)
            .unwrap()
            .unwrap()
    };
    let claim_key = |name: &str| ObjectKey::new(Kind::PersistentVolumeClaim, "shop", name);

    // A free volume of class manual: the waiting claims of that class.
    let volume_event = event(Kind::PersistentVolume, "");
    assert_eq!(
        claims.keys_for(&volume_event, &pv("tiny")),
        [claim_key("data")]
    );
    // A reserved one: its claim.
    assert_eq!(
        claims.keys_for(&volume_event, &pv("held")),
        [claim_key("fast-data")]
    );
    // A StorageClass: the waiting claims that ask for it.
    let class = objects.seed_yaml(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: example.com/none\n",
    );
    let class_event = event(Kind::StorageClass, "");
    assert_eq!(
        claims.keys_for(&class_event, &class[0]),
        [claim_key("fast-data")]
    );

    // A claim's change: the volume reserved for it.
    let fast_data = objects
        .get(Kind::PersistentVolumeClaim, "shop", "fast-data")
        .unwrap()
        .unwrap();
    let claim_event = event(Kind::PersistentVolumeClaim, "shop");
    assert_eq!(
        volumes.keys_for(&claim_event, &fast_data),
        [ObjectKey::new(Kind::PersistentVolume, "", "held")]
    );

    // Binding reads the reserved volume and the free ones of the class.
    settle(&objects).await;
    assert_eq!(claim(&objects, "fast-data").unwrap().volume_name(), "held");
    assert_eq!(claim(&objects, "data").unwrap().volume_name(), "small");
}

/// A claim of `local-path` asking for `size`.
fn seed_claim(objects: &RecordingObjects, name: &str, size: &str) {
    objects.seed_yaml(&format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: shop}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {{requests: {{storage: {size}}}}}
"#
    ));
}

/// A node's reading with its storage filesystem (`None`: not measured).
fn reading(available_gib: Option<u64>) -> NodeReport {
    NodeReport {
        storage: available_gib.map(|gib| StorageUsage {
            capacity_bytes: 64 << 30,
            available_bytes: gib << 30,
        }),
        ..Default::default()
    }
}

/// The Events recorded about the claim `name` with `reason`: their messages.
fn messages(objects: &RecordingObjects, name: &str, reason: &str) -> Vec<String> {
    objects
        .events()
        .into_iter()
        .filter(|e| e.involved.name == name && e.reason == reason)
        .map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn a_claim_larger_than_its_nodes_free_storage_is_provisioned_with_a_warning() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    seed_claim(&objects, "big", "100Ti");
    select_node_of(&objects, "big", "pi-2");
    select_node(&objects, "pi-2");
    let metrics = ResourceMetrics::default();
    metrics.record("pi-1", reading(Some(30)));
    metrics.record("pi-2", reading(Some(20)));
    settle_with(&objects, context(&objects).with_resource_metrics(metrics)).await;

    // Provisioned all the same: k3s does not enforce the size.
    let big = claim(&objects, "big").unwrap();
    assert_eq!(big.phase, "Bound");
    assert!(volume(&objects, big.volume_name())
        .unwrap()
        .pinned_to("pi-2"));
    let warnings = messages(&objects, "big", provisioning::CAPACITY_WARNING_REASON);
    assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
    let warning = &warnings[0];
    assert!(
        warning.starts_with(
            "requested 100Ti of storage, more than the 20Gi free on node \"pi-2\" (/data/pi-2/storage, a filesystem of 64Gi)"
        ),
        "{warning}"
    );
    assert!(
        warning.ends_with("no node reporting its free storage has that much"),
        "{warning}"
    );
    let warned = objects
        .events()
        .into_iter()
        .find(|e| e.involved.name == "big" && e.reason == provisioning::CAPACITY_WARNING_REASON)
        .unwrap();
    assert_eq!(warned.event_type, crate::events::EventType::Warning);
    // A claim that fits is not warned of.
    assert_eq!(claim(&objects, "data").unwrap().phase, "Bound");
    assert!(messages(&objects, "data", provisioning::CAPACITY_WARNING_REASON).is_empty());
}

#[tokio::test]
async fn without_a_reading_of_the_nodes_free_storage_nothing_is_said() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    seed_claim(&objects, "big", "100Ti");
    select_node_of(&objects, "big", "pi-2");
    // pi-2 reports, but could not measure its storage; pi-1 is roomy but
    // is not where the claim goes.
    let metrics = ResourceMetrics::default();
    metrics.record("pi-1", reading(Some(1)));
    metrics.record("pi-2", reading(None));
    settle_with(&objects, context(&objects).with_resource_metrics(metrics)).await;
    let big = claim(&objects, "big").unwrap();
    assert_eq!(big.phase, "Bound");
    assert!(
        messages(&objects, "big", provisioning::CAPACITY_WARNING_REASON).is_empty(),
        "{:?}",
        objects.events()
    );
    assert!(objects
        .event_reasons()
        .iter()
        .any(|r| r == "ProvisioningSucceeded"));
}

/// Sets the node's Ready condition to `status`, since `since`.
fn set_ready(objects: &RecordingObjects, node: &str, status: &str, since: &str) {
    let object = objects.get(Kind::Node, "", node).unwrap().unwrap();
    let Some(Body::Node(mut stored)) = Arc::unwrap_or_clone(object).kind else {
        panic!("a Node");
    };
    stored.status = Some(v1::NodeStatus {
        conditions: vec![v1::NodeCondition {
            r#type: "Ready".into(),
            status: status.into(),
            last_transition_time: since.into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    objects
        .write(
            crate::controllers::recording::WriteOp::UpdateStatus,
            stored.into_object(),
        )
        .unwrap();
}

#[tokio::test]
async fn a_selected_node_that_is_gone_is_cleared_for_the_scheduler_to_choose_again() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    select_node(&objects, "pi-3");
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    assert_eq!(data.selected_node(), None, "{:?}", data.meta.annotations);
    assert_eq!(data.phase, "Pending");
    assert!(objects.objects(Kind::PersistentVolume).is_empty());
    let failed = messages(&objects, "data", "ProvisioningFailed");
    assert_eq!(
        failed,
        [format!(
            "node \"pi-3\" not found: removed the claim's {SELECTED_NODE_ANNOTATION} annotation for the scheduler to choose a node again"
        )]
    );
    let warned = objects
        .events()
        .into_iter()
        .find(|e| e.reason == "ProvisioningFailed")
        .unwrap();
    assert_eq!(warned.event_type, crate::events::EventType::Warning);

    // Chosen again (a Ready node): provisioned there.
    select_node(&objects, "pi-1");
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    assert_eq!(data.phase, "Bound");
    assert!(volume(&objects, data.volume_name())
        .unwrap()
        .pinned_to("pi-1"));
}

#[tokio::test]
async fn a_selected_node_long_unready_is_cleared_and_one_briefly_unready_waited_for() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    let claims = ClaimController {
        ctx: context(&objects),
    };
    let key = ObjectKey::new(Kind::PersistentVolumeClaim, "shop", "data");
    // Protected first (a reconcile of its own).
    claims.reconcile(&key).await.unwrap();

    // Not Ready since just now: waited for, no volume, the node kept.
    set_ready(&objects, "pi-2", "Unknown", &skiff_objects::now_rfc3339());
    select_node(&objects, "pi-2");
    let action = claims.reconcile(&key).await.unwrap();
    let Action::RequeueAfter(after) = action else {
        panic!("waits for the node: {action:?}");
    };
    assert!(
        after <= provisioning::NOT_READY_RESCHEDULE_AFTER && after > std::time::Duration::ZERO,
        "{after:?}"
    );
    assert_eq!(
        claim(&objects, "data").unwrap().selected_node(),
        Some("pi-2")
    );
    assert!(objects.objects(Kind::PersistentVolume).is_empty());
    assert!(objects
        .event_reasons()
        .iter()
        .any(|r| r == "ProvisioningFailed"));

    // A change to the node wakes the claims waiting on it.
    let node = objects.get(Kind::Node, "", "pi-2").unwrap().unwrap();
    assert_eq!(
        claims.keys_for(&event(Kind::Node, ""), &node),
        std::slice::from_ref(&key)
    );
    let other = objects.get(Kind::Node, "", "pi-1").unwrap().unwrap();
    assert!(claims.keys_for(&event(Kind::Node, ""), &other).is_empty());

    // Not Ready for long: given back to the scheduler.
    set_ready(&objects, "pi-2", "Unknown", "2020-01-01T00:00:00Z");
    claims.reconcile(&key).await.unwrap();
    assert_eq!(claim(&objects, "data").unwrap().selected_node(), None);
    let cleared = messages(&objects, "data", "ProvisioningFailed");
    assert!(
        cleared
            .last()
            .is_some_and(|m| m.starts_with("node \"pi-2\" has not been Ready for 60s or more")),
        "{cleared:?}"
    );
    assert!(objects.objects(Kind::PersistentVolume).is_empty());
}

#[tokio::test]
async fn a_claim_of_a_pod_bound_without_the_scheduler_gets_the_pods_node() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    // As a DaemonSet's pod: bound when made.
    objects.seed(pod_on("agent-x7k2p", "data", "pi-1"));
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    assert_eq!(data.selected_node(), Some("pi-1"));
    assert_eq!(data.phase, "Bound");
    let pv = volume(&objects, data.volume_name()).unwrap();
    assert!(pv.pinned_to("pi-1"));
    assert_eq!(
        pv.node_path().unwrap(),
        format!("/data/pi-1/storage/{}", data.volume_name())
    );
}

#[tokio::test]
async fn a_pod_on_a_node_that_is_gone_or_not_bound_gives_its_claim_no_node() {
    let objects = RecordingObjects::new();
    local_path_setup(&objects);
    objects.seed(pod_on("unscheduled", "data", ""));
    objects.seed(pod_on("orphan", "data", "pi-9"));
    set_ready(&objects, "pi-2", "Unknown", "2020-01-01T00:00:00Z");
    objects.seed(pod_on("stranded", "data", "pi-2"));
    settle(&objects).await;
    let data = claim(&objects, "data").unwrap();
    assert_eq!(data.selected_node(), None);
    assert_eq!(data.phase, "Pending");
    assert!(objects.objects(Kind::PersistentVolume).is_empty());
    assert!(objects
        .event_reasons()
        .iter()
        .any(|r| r == "WaitForFirstConsumer"));
}
