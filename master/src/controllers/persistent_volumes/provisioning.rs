//! What the built-in `rancher.io/local-path` provisioner makes for a
//! claim, as k3s's local-path-provisioner makes it: a PersistentVolume
//! named `pvc-<claim uid>`, a `hostPath` directory under the storage
//! directory of the node the claim's first pod was placed on
//! (`<storage dir>/pvc-<uid>`, made by that node's agent when it mounts
//! it), pinned to that node by required node affinity on
//! `kubernetes.io/hostname`, reserved for the claim (`claimRef`), with the
//! class's reclaim policy and the claim's size and access modes. The size
//! is recorded, not enforced (k3s does not either), and the volume's
//! status says so.

use serde_json::{json, Map, Value};
use skiff_proto::v1::{self, GenericObject};

use crate::objects::generic;
use crate::objects::storage::{
    ClaimRef, ClaimView, ClassView, DEFAULT_STORAGE_DIR, HOSTNAME_LABEL, LOCAL_PATH_PROVISIONER,
    PROVISIONED_BY_ANNOTATION, PV_PROTECTION_FINALIZER, STORAGE_DIR_ANNOTATION,
};

/// The annotation on provisioned volumes naming their node, as
/// local-path-provisioner sets it.
pub const LOCAL_PATH_NODE_ANNOTATION: &str = "local.path.provisioner/selected-node";
/// What a provisioned volume's status says of its size.
pub const CAPACITY_NOT_ENFORCED: &str =
    "capacity is recorded, not enforced: the directory may grow past it (as with k3s's local-path)";

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
    ClaimRef {
        api_version: "v1".to_owned(),
        kind: "PersistentVolumeClaim".to_owned(),
        namespace: claim.meta.namespace.clone(),
        name: claim.meta.name.clone(),
        uid: claim.meta.uid.clone(),
        resource_version: claim.meta.resource_version.clone(),
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
    let size = claim
        .spec
        .resources
        .requests
        .get("storage")
        .cloned()
        .unwrap_or_else(|| "0".to_owned());
    let fields = json!({
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim.spec.access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy(),
            "storageClassName": class.name,
            "volumeMode": "Filesystem",
            "hostPath": {"path": format!("{storage_dir}/{name}"), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
            ]}]}},
            "claimRef": serde_json::to_value(claim_ref(claim)).unwrap_or(Value::Null),
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
    use crate::objects::storage::VolumeView;
    use crate::objects::IntoObject;

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
            ClassView::read(&crate::objects::storage::local_path_class().into_object()).unwrap();
        let pv = local_path_volume(&claim(), &class, "pi-2", "/data/pi-2/storage");
        let view = VolumeView::read(&pv.into_object()).unwrap();
        assert_eq!(view.meta.name, "pvc-1234");
        assert_eq!(
            view.spec.host_path.as_ref().unwrap().path,
            "/data/pi-2/storage/pvc-1234"
        );
        assert!(view.pinned_to("pi-2"));
        assert!(!view.pinned_to("pi-1"));
        let r = view.claim_ref().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str(), r.uid.as_str()),
            ("shop", "data", "1234")
        );
        assert_eq!(view.reclaim_policy(), "Delete");
        assert_eq!(view.spec.storage_class_name, "local-path");
        assert_eq!(
            view.capacity(),
            skiff_values::Quantity::parse("2Gi").unwrap()
        );
        assert_eq!(
            view.meta.annotations[PROVISIONED_BY_ANNOTATION],
            LOCAL_PATH_PROVISIONER
        );
        assert_eq!(view.meta.finalizers, [PV_PROTECTION_FINALIZER]);
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
