//! What the built-in `rancher.io/local-path` provisioner makes for a
//! claim, as k3s's local-path-provisioner makes it: a PersistentVolume
//! named `pvc-<claim uid>`, a `hostPath` directory under the storage
//! directory of the node the claim's first pod was placed on
//! (`<storage dir>/pvc-<uid>`, made by that node's agent when it mounts
//! it), pinned to that node by required node affinity on
//! `kubernetes.io/hostname`, reserved for the claim (`claimRef`), with the
//! class's reclaim policy and the claim's size and access modes. The size
//! is recorded, not enforced (k3s does not either), and the volume's
//! status says so; a claim asking for more than the node's storage
//! filesystem has free (by the node's newest resource usage reading) is
//! still provisioned, with a warning naming the sizes
//! ([`capacity_warning`]), and with none while the node's free space is
//! not known.
//!
//! Before making a volume, the provisioner looks at the selected node
//! ([`node_verdict`]), as external-provisioner's "reschedule" does: a node
//! that no longer exists, or that has not been Ready for
//! [`NOT_READY_RESCHEDULE_AFTER`], is given back to the scheduler (the
//! claim's `volume.kubernetes.io/selected-node` removed, so that the next
//! pod using it is placed afresh); one not Ready for less is waited for.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use skiff_proto::v1::{self, GenericObject};

use crate::resource_metrics::StorageUsage;
use skiff_objects::storage::{
    ClaimRef, ClaimView, ClassView, DEFAULT_STORAGE_DIR, HOSTNAME_LABEL, LOCAL_PATH_PROVISIONER,
    PROVISIONED_BY_ANNOTATION, PV_PROTECTION_FINALIZER, STORAGE_DIR_ANNOTATION,
};
use skiff_objects::{generic, typed};

/// The annotation on provisioned volumes naming their node, as
/// local-path-provisioner sets it.
pub const LOCAL_PATH_NODE_ANNOTATION: &str = "local.path.provisioner/selected-node";
/// What a provisioned volume's status says of its size.
pub const CAPACITY_NOT_ENFORCED: &str =
    "capacity is recorded, not enforced: the directory may grow past it (as with k3s's local-path)";
/// The reason of the Warning recorded on a claim provisioned although its
/// node's storage filesystem has less free than it asks.
pub const CAPACITY_WARNING_REASON: &str = "ProvisioningWarning";
/// How long the selected node may go without being Ready before its claim
/// is given back to the scheduler. Nothing is lost by choosing again:
/// the volume is not made yet. Long enough for a small board to reboot.
pub const NOT_READY_RESCHEDULE_AFTER: Duration = Duration::from_secs(60);

/// What the provisioner does about a claim's selected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    /// Make the volume there: the node exists and is Ready (or says
    /// nothing of its readiness yet, as a node just registered).
    Provision,
    /// Not Ready for a while: look again after this long.
    Wait { node: String, after: Duration },
    /// The node cannot host it (this says why): the claim's selected node
    /// is removed for the scheduler to choose again.
    Reschedule(String),
}

/// What to do about `name`, the claim's selected node, stored as `node`
/// (`None`: no such Node), at `now`.
pub fn node_verdict(name: &str, node: Option<&v1::Node>, now: SystemTime) -> NodeVerdict {
    let Some(node) = node else {
        // As external-provisioner words a node not found.
        return NodeVerdict::Reschedule(format!("node {name:?} not found"));
    };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"));
    let Some(ready) = ready.filter(|c| c.status != "True") else {
        return NodeVerdict::Provision;
    };
    // A time that cannot be read: not Ready for as long as can be told.
    let not_ready_for = humantime::parse_rfc3339_weak(&ready.last_transition_time)
        .ok()
        .map_or(Duration::MAX, |since| {
            now.duration_since(since).unwrap_or(Duration::ZERO)
        });
    if not_ready_for >= NOT_READY_RESCHEDULE_AFTER {
        return NodeVerdict::Reschedule(format!(
            "node {name:?} has not been Ready for {}s or more (Ready is {:?} since {})",
            NOT_READY_RESCHEDULE_AFTER.as_secs(),
            ready.status,
            ready.last_transition_time
        ));
    }
    NodeVerdict::Wait {
        node: name.to_owned(),
        after: NOT_READY_RESCHEDULE_AFTER - not_ready_for,
    }
}

/// `bytes` as a binary quantity for people: exact when whole (`100Ti`),
/// else to one decimal (`37.2Gi`).
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let Some((power, unit)) = UNITS
        .iter()
        .enumerate()
        .rev()
        .map(|(i, unit)| (1u64 << (10 * (i + 1)), *unit))
        .find(|(power, _)| bytes >= *power)
    else {
        return bytes.to_string();
    };
    if bytes % power == 0 {
        format!("{}{unit}", bytes / power)
    } else {
        format!("{:.1}{unit}", bytes as f64 / power as f64)
    }
}

/// The Warning to record on `claim`, provisioned on `node` under
/// `storage_dir`, when it asks for more than that node's storage
/// filesystem has free; `None` when it fits, or when no reading of the
/// node's free space is known (no false warnings). `readings` are the
/// storage filesystems of the nodes that reported one lately.
pub fn capacity_warning(
    claim: &ClaimView,
    node: &str,
    storage_dir: &str,
    readings: &[(String, StorageUsage)],
) -> Option<String> {
    let (_, storage) = readings.iter().find(|(n, _)| n == node)?;
    let requested = u64::try_from(claim.request().units_ceil()).unwrap_or(0);
    if requested <= storage.available_bytes {
        return None;
    }
    let asked = claim
        .request_text()
        .map_or_else(|| binary_size(requested), str::to_owned);
    let mut message = format!(
        "requested {asked} of storage, more than the {} free on node {node:?} ({storage_dir}, a filesystem of {}); provisioned anyway: local-path does not enforce capacity",
        binary_size(storage.available_bytes),
        binary_size(storage.capacity_bytes),
    );
    let roomiest = readings
        .iter()
        .filter(|(n, _)| n != node)
        .max_by_key(|(n, s)| (s.available_bytes, std::cmp::Reverse(n.clone())));
    match roomiest {
        Some((other, s)) if s.available_bytes >= requested => message.push_str(&format!(
            "; node {other:?} has {} free",
            binary_size(s.available_bytes)
        )),
        _ => message.push_str("; no node reporting its free storage has that much"),
    }
    Some(message)
}

/// The name of the volume provisioned for the claim with `uid`.
pub fn volume_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// The directory under which `node` keeps `local-path` volumes: what its
/// agent reports, else the default.
pub fn storage_dir(node: Option<&v1::Node>) -> String {
    node.and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.annotations.get(STORAGE_DIR_ANNOTATION))
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| dir.trim_end_matches('/').to_owned())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| DEFAULT_STORAGE_DIR.to_owned())
}

/// A reference to `claim`, as a volume's `claimRef` holds it.
pub fn claim_ref(claim: &ClaimView) -> ClaimRef {
    let set = |field: &str| Some(field.to_owned()).filter(|f| !f.is_empty());
    ClaimRef {
        api_version: set("v1"),
        kind: set("PersistentVolumeClaim"),
        namespace: Some(claim.meta.namespace.clone()),
        name: Some(claim.meta.name.clone()),
        uid: set(&claim.meta.uid),
        resource_version: set(&claim.meta.resource_version),
        field_path: None,
    }
}

/// The volume to provision for `claim` of `class` on `node`, whose
/// `local-path` volumes live under `storage_dir`.
pub fn local_path_volume(
    claim: &ClaimView,
    class: &ClassView,
    node: &str,
    storage_dir: &str,
) -> GenericObject {
    let name = volume_name(&claim.meta.uid);
    let size = claim.request_text().unwrap_or("0");
    let fields = json!({
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim.access_modes(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy(),
            "storageClassName": class.name,
            "volumeMode": "Filesystem",
            "hostPath": {"path": format!("{storage_dir}/{name}"), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
            ]}]}},
            "claimRef": typed::encode(&claim_ref(claim)),
        },
        "status": {"phase": "Pending", "message": CAPACITY_NOT_ENFORCED},
    });
    let mut object = GenericObject {
        api_version: "v1".to_owned(),
        kind: "PersistentVolume".to_owned(),
        metadata: Some(v1::ObjectMeta {
            name,
            annotations: [
                (
                    PROVISIONED_BY_ANNOTATION.to_owned(),
                    LOCAL_PATH_PROVISIONER.to_owned(),
                ),
                (LOCAL_PATH_NODE_ANNOTATION.to_owned(), node.to_owned()),
            ]
            .into(),
            finalizers: vec![PV_PROTECTION_FINALIZER.to_owned()],
            ..Default::default()
        }),
        content: Vec::new(),
    };
    let map: Map<String, Value> = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    generic::set_content(&mut object, &map);
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use skiff_objects::storage::{claim_ref_parts, VolumeView};
    use skiff_objects::IntoObject;

    fn claim() -> ClaimView {
        let mut object = GenericObject {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            metadata: Some(v1::ObjectMeta {
                name: "data".into(),
                namespace: "shop".into(),
                uid: "1234".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        let fields = json!({"spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}},
            "storageClassName": "local-path",
        }});
        if let Value::Object(map) = fields {
            generic::set_content(&mut object, &map);
        }
        ClaimView::read(&object.into_object()).unwrap()
    }

    #[test]
    fn a_provisioned_volume_is_pinned_to_its_node_and_reserved_for_its_claim() {
        let class =
            ClassView::read(&skiff_objects::storage::local_path_class().into_object()).unwrap();
        let pv = local_path_volume(&claim(), &class, "pi-2", "/data/pi-2/storage");
        let view = VolumeView::read(&pv.into_object()).unwrap();
        assert_eq!(view.meta.name, "pvc-1234");
        assert_eq!(view.node_path().unwrap(), "/data/pi-2/storage/pvc-1234");
        assert!(view.pinned_to("pi-2"));
        assert!(!view.pinned_to("pi-1"));
        let r = view.claim_ref().unwrap();
        assert_eq!(claim_ref_parts(r), ("shop", "data", "1234"));
        assert_eq!(view.reclaim_policy(), "Delete");
        assert_eq!(view.class(), "local-path");
        assert_eq!(
            view.capacity(),
            skiff_objects::Quantity::parse("2Gi").unwrap()
        );
        assert_eq!(
            view.meta.annotations[PROVISIONED_BY_ANNOTATION],
            LOCAL_PATH_PROVISIONER
        );
        assert_eq!(view.meta.finalizers, [PV_PROTECTION_FINALIZER]);
    }

    fn claim_of(size: &str) -> ClaimView {
        let mut claim = claim();
        claim
            .spec
            .resources
            .get_or_insert_with(Default::default)
            .requests
            .get_or_insert_with(Default::default)
            .insert("storage".into(), Quantity(size.into()));
        claim
    }

    fn storage(available_bytes: u64) -> StorageUsage {
        StorageUsage {
            capacity_bytes: 64 << 30,
            available_bytes,
        }
    }

    #[test]
    fn a_claim_larger_than_its_nodes_free_storage_is_warned_of_with_the_sizes() {
        let dir = "/data/pi-1/storage";
        let readings = vec![
            ("pi-1".to_owned(), storage(10 << 30)),
            ("pi-2".to_owned(), storage(40 << 30)),
        ];
        // Fits: nothing to say.
        assert_eq!(
            capacity_warning(&claim_of("10Gi"), "pi-1", dir, &readings),
            None
        );
        // Another node has room.
        let warning = capacity_warning(&claim_of("20Gi"), "pi-1", dir, &readings).unwrap();
        assert_eq!(
            warning,
            "requested 20Gi of storage, more than the 10Gi free on node \"pi-1\" \
             (/data/pi-1/storage, a filesystem of 64Gi); provisioned anyway: local-path \
             does not enforce capacity; node \"pi-2\" has 40Gi free"
        );
        // No node has that much.
        let warning = capacity_warning(&claim_of("100Ti"), "pi-1", dir, &readings).unwrap();
        assert!(
            warning.starts_with(
                "requested 100Ti of storage, more than the 10Gi free on node \"pi-1\""
            ),
            "{warning}"
        );
        assert!(
            warning.ends_with("; no node reporting its free storage has that much"),
            "{warning}"
        );
    }

    #[test]
    fn without_a_reading_of_the_nodes_free_storage_nothing_is_said() {
        let readings = vec![("pi-2".to_owned(), storage(0))];
        let huge = claim_of("100Ti");
        assert_eq!(capacity_warning(&huge, "pi-1", "/d", &readings), None);
        assert_eq!(capacity_warning(&huge, "pi-1", "/d", &[]), None);
    }

    #[test]
    fn sizes_read_as_binary_quantities() {
        assert_eq!(binary_size(0), "0");
        assert_eq!(binary_size(1000), "1000");
        assert_eq!(binary_size(1024), "1Ki");
        assert_eq!(binary_size(100 << 40), "100Ti");
        assert_eq!(binary_size((37 << 30) + 214_748_365), "37.2Gi");
        assert_eq!(binary_size(u64::MAX), "16.0Ei");
    }

    fn node_ready(status: &str, since: &str) -> v1::Node {
        v1::Node {
            status: Some(v1::NodeStatus {
                conditions: vec![v1::NodeCondition {
                    r#type: "Ready".into(),
                    status: status.into(),
                    last_transition_time: since.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_gone_or_long_unready_node_is_given_back_to_the_scheduler() {
        let now = humantime::parse_rfc3339("2026-03-01T12:00:00Z").unwrap();
        assert_eq!(
            node_verdict("pi-3", None, now),
            NodeVerdict::Reschedule("node \"pi-3\" not found".into())
        );
        let ready = node_ready("True", "2026-03-01T00:00:00Z");
        assert_eq!(
            node_verdict("pi-1", Some(&ready), now),
            NodeVerdict::Provision
        );
        assert_eq!(
            node_verdict("pi-1", Some(&v1::Node::default()), now),
            NodeVerdict::Provision,
            "a node that says nothing of its readiness yet"
        );
        let lately = node_ready("Unknown", "2026-03-01T11:59:40Z");
        assert_eq!(
            node_verdict("pi-1", Some(&lately), now),
            NodeVerdict::Wait {
                node: "pi-1".into(),
                after: NOT_READY_RESCHEDULE_AFTER - Duration::from_secs(20)
            }
        );
        let long = node_ready("Unknown", "2026-03-01T11:59:00Z");
        let NodeVerdict::Reschedule(why) = node_verdict("pi-1", Some(&long), now) else {
            panic!("a minute not Ready");
        };
        assert!(why.contains("has not been Ready for 60s"), "{why}");
        let unreadable = node_ready("False", "yesterday");
        assert!(matches!(
            node_verdict("pi-1", Some(&unreadable), now),
            NodeVerdict::Reschedule(_)
        ));
    }

    #[test]
    fn the_storage_dir_is_what_the_node_reports_or_the_default() {
        let node = |annotation: Option<&str>| v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: "pi-1".into(),
                annotations: annotation
                    .map(|a| (STORAGE_DIR_ANNOTATION.to_owned(), a.to_owned()))
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(storage_dir(None), DEFAULT_STORAGE_DIR);
        assert_eq!(storage_dir(Some(&node(None))), DEFAULT_STORAGE_DIR);
        assert_eq!(
            storage_dir(Some(&node(Some("/srv/skiff/storage/")))),
            "/srv/skiff/storage"
        );
        assert_eq!(
            storage_dir(Some(&node(Some("relative")))),
            DEFAULT_STORAGE_DIR,
            "only an absolute path"
        );
    }
}
