//! Persistent storage as the master reads it: typed views of the parts of
//! PersistentVolumes, PersistentVolumeClaims and StorageClasses (stored as
//! generic objects) that binding, provisioning, scheduling and node
//! authorization act on, the names Kubernetes gives their annotations and
//! finalizers, the built-in `local-path` StorageClass (k3s's, provisioned
//! by skiff itself), and the two questions everything else asks:
//!
//! - [`volume_fits_claim`]: may this PersistentVolume be bound to this
//!   claim (class, access modes, size, selector, volume mode)? As
//!   Kubernetes' PV controller matches them; the smallest that fits wins
//!   ([`best_volume`]);
//! - [`default_class_name`]: the class a claim without
//!   `storageClassName` gets when it is created, as Kubernetes'
//!   DefaultStorageClass admission gives it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::typed;
use crate::typed::api::storage::v1::StorageClass;
use crate::Quantity;
use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{self, GenericObject};

use super::generic;
use super::placement::{node_matches_terms, NodeSelectorTerm};
use super::ObjectExt;

/// The StorageClass every cluster has, as k3s names it.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The provisioner of [`LOCAL_PATH_CLASS`], as k3s's local-path-provisioner
/// names itself; skiff's volume controller is it.
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// Marks the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// On a claim: the node the scheduler placed its first pod on, where a
/// WaitForFirstConsumer volume is to be provisioned.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// On a claim: the provisioner asked to make its volume.
pub const STORAGE_PROVISIONER_ANNOTATION: &str = "volume.kubernetes.io/storage-provisioner";
/// On a claim: binding is complete.
pub const BIND_COMPLETED_ANNOTATION: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the controller bound it (not the user).
pub const BOUND_BY_CONTROLLER_ANNOTATION: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: who provisioned it.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// Holds a claim while a pod uses it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Holds a volume while a claim is bound to it.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// The node label provisioned volumes are pinned with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The Node annotation where an agent says under which directory
/// `local-path` volumes of its node live (`<data dir>/storage`).
pub const STORAGE_DIR_ANNOTATION: &str = "skiff.io/storage-dir";
/// Where `local-path` volumes live on a node that does not say.
pub const DEFAULT_STORAGE_DIR: &str = "/var/lib/skiff/storage";

/// A volume's `spec.claimRef`: Kubernetes' `ObjectReference`.
pub use crate::typed::api::core::v1::ObjectReference as ClaimRef;
/// A claim's `spec`: Kubernetes' type.
pub use crate::typed::api::core::v1::PersistentVolumeClaimSpec as ClaimSpec;
/// A volume's `spec`: Kubernetes' type.
pub use crate::typed::api::core::v1::PersistentVolumeSpec as VolumeSpec;

/// A claim reference's namespace, name and uid (`""` for those unset).
pub fn claim_ref_parts(r: &ClaimRef) -> (&str, &str, &str) {
    fn part(field: &Option<String>) -> &str {
        field.as_deref().unwrap_or("")
    }
    (part(&r.namespace), part(&r.name), part(&r.uid))
}

/// Whether `r` names `claim`: its namespace and name, and its uid unless
/// the reference has none yet (a volume reserved for a claim by name).
pub fn refers_to(r: &ClaimRef, claim: &ClaimView) -> bool {
    let (namespace, name, uid) = claim_ref_parts(r);
    namespace == claim.meta.namespace
        && name == claim.meta.name
        && (uid.is_empty() || uid == claim.meta.uid)
}

/// A PersistentVolumeClaim as read from its stored object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimView {
    pub meta: v1::ObjectMeta,
    pub spec: ClaimSpec,
    /// `status.phase`.
    pub phase: String,
}

impl ClaimView {
    /// Reads a claim; `None` for another kind of object.
    pub fn read(object: &Object) -> Option<ClaimView> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.kind != "PersistentVolumeClaim" {
            return None;
        }
        let content = generic::content(g);
        Some(ClaimView {
            meta: g.metadata.clone().unwrap_or_default(),
            spec: typed::decode_or_default(content.get("spec")),
            phase: content
                .get("status")
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    /// The class it asks for (`""`: none).
    pub fn class(&self) -> &str {
        self.spec.storage_class_name.as_deref().unwrap_or("")
    }

    /// The storage it requests (zero when unset or unreadable).
    pub fn request(&self) -> Quantity {
        let requests = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref());
        typed::quantity_of(requests, "storage")
    }

    /// The storage it requests as written (`2Gi`), if it does.
    pub fn request_text(&self) -> Option<&str> {
        let requests = self.spec.resources.as_ref()?.requests.as_ref()?;
        requests.get("storage").map(|q| q.0.as_str())
    }

    /// The volume it is bound to (`""`: none yet).
    pub fn volume_name(&self) -> &str {
        self.spec.volume_name.as_deref().unwrap_or("")
    }

    /// The access modes it asks for.
    pub fn access_modes(&self) -> &[String] {
        self.spec.access_modes.as_deref().unwrap_or_default()
    }

    /// The node its first pod was placed on, for WaitForFirstConsumer.
    pub fn selected_node(&self) -> Option<&str> {
        self.meta
            .annotations
            .get(SELECTED_NODE_ANNOTATION)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    pub fn being_deleted(&self) -> bool {
        !self.meta.deletion_timestamp.is_empty()
    }
}

/// A PersistentVolume as read from its stored object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeView {
    pub meta: v1::ObjectMeta,
    pub spec: VolumeSpec,
    /// `status.phase`.
    pub phase: String,
}

impl VolumeView {
    /// Reads a volume; `None` for another kind of object.
    pub fn read(object: &Object) -> Option<VolumeView> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.kind != "PersistentVolume" {
            return None;
        }
        let content = generic::content(g);
        Some(VolumeView {
            meta: g.metadata.clone().unwrap_or_default(),
            spec: typed::decode_or_default(content.get("spec")),
            phase: content
                .get("status")
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    /// Its size (zero when unset or unreadable).
    pub fn capacity(&self) -> Quantity {
        typed::quantity_of(self.spec.capacity.as_ref(), "storage")
    }

    /// The claim it is bound (or reserved) to, if any.
    pub fn claim_ref(&self) -> Option<&ClaimRef> {
        self.spec
            .claim_ref
            .as_ref()
            .filter(|r| r.name.as_deref().is_some_and(|n| !n.is_empty()))
    }

    /// Its class (`""`: none).
    pub fn class(&self) -> &str {
        self.spec.storage_class_name.as_deref().unwrap_or("")
    }

    /// Its access modes.
    pub fn access_modes(&self) -> &[String] {
        self.spec.access_modes.as_deref().unwrap_or_default()
    }

    /// The directory on the node that holds it: its `hostPath` or `local`
    /// path.
    pub fn node_path(&self) -> Option<&str> {
        let host_path = self.spec.host_path.as_ref().map(|p| p.path.as_str());
        host_path.or(self.spec.local.as_ref().map(|p| p.path.as_str()))
    }

    /// The terms a node must match to use it (`None`: any node).
    pub fn node_terms(&self) -> Option<&[NodeSelectorTerm]> {
        self.spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .map(|r| r.node_selector_terms.as_slice())
    }

    /// Whether the node `name` with `labels` may use it.
    pub fn admits_node(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.node_terms()
            .is_none_or(|terms| node_matches_terms(terms, name, labels))
    }

    /// Whether its affinity pins it to the node named `node` by hostname,
    /// as provisioned volumes are.
    pub fn pinned_to(&self, node: &str) -> bool {
        let labels: BTreeMap<String, String> =
            [(HOSTNAME_LABEL.to_owned(), node.to_owned())].into();
        self.node_terms()
            .is_some_and(|terms| node_matches_terms(terms, node, &labels))
    }

    /// The reclaim policy (`Retain` when unset, as Kubernetes defaults a
    /// volume made by hand).
    pub fn reclaim_policy(&self) -> &str {
        match self.spec.persistent_volume_reclaim_policy.as_deref() {
            None | Some("") => "Retain",
            Some(policy) => policy,
        }
    }

    pub fn being_deleted(&self) -> bool {
        !self.meta.deletion_timestamp.is_empty()
    }
}

/// A StorageClass as read from its stored object: its name, whether it is
/// the default, and the fields binding and provisioning read (a
/// StorageClass has no `spec`; they are top-level).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassView {
    pub name: String,
    pub default: bool,
    pub provisioner: String,
    pub reclaim_policy: Option<String>,
    pub volume_binding_mode: Option<String>,
}

impl ClassView {
    /// Reads a StorageClass; `None` for another kind of object.
    pub fn read(object: &Object) -> Option<ClassView> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.kind != "StorageClass" {
            return None;
        }
        let meta = g.metadata.clone().unwrap_or_default();
        let mut content = Value::Object(generic::content(g));
        // Kubernetes' type checks them; the stored content has neither.
        content["apiVersion"] = Value::from("storage.k8s.io/v1");
        content["kind"] = Value::from("StorageClass");
        let class: StorageClass = typed::decode_or_default(Some(&content));
        Some(ClassView {
            default: meta
                .annotations
                .get(DEFAULT_CLASS_ANNOTATION)
                .is_some_and(|v| v == "true"),
            name: meta.name,
            provisioner: class.provisioner,
            reclaim_policy: class.reclaim_policy,
            volume_binding_mode: class.volume_binding_mode,
        })
    }

    /// Volumes are bound (and provisioned) only once a pod using the claim
    /// is scheduled.
    pub fn waits_for_first_consumer(&self) -> bool {
        self.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
    }

    /// The reclaim policy of volumes it provisions (`Delete` when unset).
    pub fn reclaim_policy(&self) -> &str {
        self.reclaim_policy.as_deref().unwrap_or("Delete")
    }
}

/// The built-in `local-path` StorageClass, as k3s ships it: the default
/// class, volumes made on the node of the claim's first pod, deleted
/// with their claim.
pub fn local_path_class() -> GenericObject {
    let mut object = GenericObject {
        api_version: "storage.k8s.io/v1".to_owned(),
        kind: "StorageClass".to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: LOCAL_PATH_CLASS.to_owned(),
            annotations: [(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    let fields = serde_json::json!({
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    if let Value::Object(map) = fields {
        generic::set_content(&mut object, &map);
    }
    object
}

/// The default class among `classes`: of those marked default, the
/// newest (then the first by name), as Kubernetes picks it.
pub fn default_class_name(classes: &[Arc<Object>]) -> Option<String> {
    let mut defaults: Vec<(String, String)> = classes
        .iter()
        .filter_map(|o| {
            let class = ClassView::read(o)?;
            let created = o.meta().creation_timestamp.clone();
            class.default.then_some((created, class.name))
        })
        .collect();
    // Newest first (RFC 3339 sorts as text); names break ties.
    defaults.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    defaults.into_iter().next().map(|(_, name)| name)
}

/// Gives a claim created without `spec.storageClassName` the default
/// class (`default`), as Kubernetes' DefaultStorageClass admission does;
/// a claim that names one, even `""`, keeps it. Adds the
/// `kubernetes.io/pvc-protection` finalizer, as Kubernetes'
/// StorageObjectInUseProtection admission does.
pub fn admit_claim(claim: &mut GenericObject, default: Option<&str>) {
    let mut content = generic::content(claim);
    if let (Some(default), Some(spec)) = (
        default,
        content.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        let unset = spec.get("storageClassName").is_none_or(Value::is_null);
        if unset {
            spec.insert("storageClassName".to_owned(), Value::from(default));
        }
    }
    generic::set_content(claim, &content);
    add_finalizer(claim, PVC_PROTECTION_FINALIZER);
}

/// Adds the `kubernetes.io/pv-protection` finalizer to a volume being
/// created.
pub fn admit_volume(volume: &mut GenericObject) {
    add_finalizer(volume, PV_PROTECTION_FINALIZER);
}

fn add_finalizer(object: &mut GenericObject, finalizer: &str) {
    let meta = object.metadata.get_or_insert_with(Default::default);
    if !meta.finalizers.iter().any(|f| f == finalizer) {
        meta.finalizers.push(finalizer.to_owned());
    }
}

/// Why a volume does not fit a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Class,
    AccessModes,
    TooSmall,
    Selector,
    VolumeMode,
    /// Bound, or reserved for another claim.
    Taken,
    BeingDeleted,
}

/// Whether `volume` may be bound to `claim`, as Kubernetes' PV controller
/// decides it: not taken (or reserved for this very claim), the same
/// class, every access mode the claim asks for, at least its size, its
/// selector matching the volume's labels, the same volume mode.
pub fn volume_fits_claim(volume: &VolumeView, claim: &ClaimView) -> Result<(), Mismatch> {
    if volume.being_deleted() {
        return Err(Mismatch::BeingDeleted);
    }
    if let Some(r) = volume.claim_ref() {
        if !refers_to(r, claim) {
            return Err(Mismatch::Taken);
        }
    } else if volume.phase == "Released" || volume.phase == "Failed" {
        return Err(Mismatch::Taken);
    }
    if volume.class() != claim.class() {
        return Err(Mismatch::Class);
    }
    let modes = volume.access_modes();
    if !claim.access_modes().iter().all(|m| modes.contains(m)) {
        return Err(Mismatch::AccessModes);
    }
    if volume.capacity() < claim.request() {
        return Err(Mismatch::TooSmall);
    }
    if let Some(selector) = &claim.spec.selector {
        if !super::selector::matches_typed(selector, &volume.meta.labels) {
            return Err(Mismatch::Selector);
        }
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".to_owned());
    if mode(&volume.spec.volume_mode) != mode(&claim.spec.volume_mode) {
        return Err(Mismatch::VolumeMode);
    }
    Ok(())
}

/// The volume to bind `claim` to among `volumes`: one reserved for it
/// first, else the smallest that fits (then the first by name), of those
/// `usable` admits (the node a WaitForFirstConsumer claim was placed on).
pub fn best_volume<'a>(
    volumes: &'a [VolumeView],
    claim: &ClaimView,
    usable: impl Fn(&VolumeView) -> bool,
) -> Option<&'a VolumeView> {
    let mut fitting: Vec<&VolumeView> = volumes
        .iter()
        .filter(|v| volume_fits_claim(v, claim).is_ok() && usable(v))
        .collect();
    fitting.sort_by(|a, b| {
        // Reserved for this claim (a claimRef) sorts before free.
        let free = |v: &VolumeView| v.claim_ref().is_none();
        (free(a), a.capacity(), &a.meta.name).cmp(&(free(b), b.capacity(), &b.meta.name))
    });
    fitting.into_iter().next()
}

/// The claim names a pod spec's volumes use, each once, in order.
pub fn claim_names(spec: &v1::PodSpec) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for v in &spec.volumes {
        if let Some(claim) = &v.persistent_volume_claim {
            if !names.contains(&claim.claim_name) {
                names.push(claim.claim_name.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoObject;

    fn generic(kind: &str, name: &str, namespace: &str, fields: Value) -> Object {
        let mut object = GenericObject {
            api_version: "v1".into(),
            kind: kind.into(),
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                uid: format!("uid-{name}"),
                labels: [("tier".to_owned(), "fast".to_owned())].into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        if let Value::Object(map) = fields {
            generic::set_content(&mut object, &map);
        }
        object.into_object()
    }

    fn claim(fields: Value) -> ClaimView {
        ClaimView::read(&generic("PersistentVolumeClaim", "data", "shop", fields)).unwrap()
    }

    fn volume(name: &str, fields: Value) -> VolumeView {
        VolumeView::read(&generic("PersistentVolume", name, "", fields)).unwrap()
    }

    fn plain_claim() -> ClaimView {
        claim(serde_json::json!({"spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "manual",
        }}))
    }

    fn plain_volume(name: &str, size: &str) -> VolumeView {
        volume(
            name,
            serde_json::json!({"spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "storageClassName": "manual",
                "hostPath": {"path": "/srv/data"},
            }, "status": {"phase": "Available"}}),
        )
    }

    #[test]
    fn a_volume_fits_a_claim_by_class_modes_size_selector_and_mode() {
        let claim = plain_claim();
        assert_eq!(volume_fits_claim(&plain_volume("a", "1Gi"), &claim), Ok(()));
        assert_eq!(
            volume_fits_claim(&plain_volume("a", "1024Mi"), &claim),
            Ok(()),
            "the same size in other units"
        );
        assert_eq!(
            volume_fits_claim(&plain_volume("a", "512Mi"), &claim),
            Err(Mismatch::TooSmall)
        );
        let mut other_class = plain_volume("a", "1Gi");
        other_class.spec.storage_class_name = Some("fast".into());
        assert_eq!(
            volume_fits_claim(&other_class, &claim),
            Err(Mismatch::Class)
        );
        let mut many = plain_claim();
        many.spec.access_modes = Some(vec!["ReadWriteMany".into()]);
        assert_eq!(
            volume_fits_claim(&plain_volume("a", "1Gi"), &many),
            Err(Mismatch::AccessModes)
        );
        let mut selective = plain_claim();
        selective.spec.selector = Some(typed::meta::LabelSelector {
            match_labels: Some([("tier".to_owned(), "slow".to_owned())].into()),
            ..Default::default()
        });
        assert_eq!(
            volume_fits_claim(&plain_volume("a", "1Gi"), &selective),
            Err(Mismatch::Selector)
        );
        let mut block = plain_claim();
        block.spec.volume_mode = Some("Block".into());
        assert_eq!(
            volume_fits_claim(&plain_volume("a", "1Gi"), &block),
            Err(Mismatch::VolumeMode)
        );
    }

    #[test]
    fn a_taken_or_released_volume_fits_only_the_claim_it_is_reserved_for() {
        let claim = plain_claim();
        let mut taken = plain_volume("a", "1Gi");
        taken.spec.claim_ref = Some(ClaimRef {
            namespace: Some("shop".into()),
            name: Some("other".into()),
            ..Default::default()
        });
        assert_eq!(volume_fits_claim(&taken, &claim), Err(Mismatch::Taken));
        let mut reserved = plain_volume("a", "1Gi");
        reserved.spec.claim_ref = Some(ClaimRef {
            namespace: Some("shop".into()),
            name: Some("data".into()),
            ..Default::default()
        });
        assert_eq!(volume_fits_claim(&reserved, &claim), Ok(()));
        let mut earlier = reserved.clone();
        earlier.spec.claim_ref.as_mut().unwrap().uid = Some("an older claim".into());
        assert_eq!(volume_fits_claim(&earlier, &claim), Err(Mismatch::Taken));
        let mut released = plain_volume("a", "1Gi");
        released.phase = "Released".into();
        assert_eq!(volume_fits_claim(&released, &claim), Err(Mismatch::Taken));
    }

    #[test]
    fn the_smallest_fitting_volume_is_chosen_and_a_reserved_one_first() {
        let claim = plain_claim();
        let volumes = vec![
            plain_volume("big", "10Gi"),
            plain_volume("small", "2Gi"),
            plain_volume("tiny", "100Mi"),
        ];
        let best = best_volume(&volumes, &claim, |_| true).unwrap();
        assert_eq!(best.meta.name, "small");
        let best = best_volume(&volumes, &claim, |v| v.meta.name != "small").unwrap();
        assert_eq!(best.meta.name, "big", "what usable rules out is skipped");
        let mut with_reserved = volumes.clone();
        with_reserved[0].spec.claim_ref = Some(ClaimRef {
            namespace: Some("shop".into()),
            name: Some("data".into()),
            ..Default::default()
        });
        let best = best_volume(&with_reserved, &claim, |_| true).unwrap();
        assert_eq!(best.meta.name, "big");
        assert!(best_volume(&volumes[2..], &claim, |_| true).is_none());
    }

    #[test]
    fn node_affinity_pins_a_volume_to_its_node() {
        let pinned = volume(
            "pvc-1",
            serde_json::json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["pi-1"]}]}
            ]}}}}),
        );
        let labels = |n: &str| [(HOSTNAME_LABEL.to_owned(), n.to_owned())].into();
        assert!(pinned.admits_node("pi-1", &labels("pi-1")));
        assert!(!pinned.admits_node("pi-2", &labels("pi-2")));
        assert!(pinned.pinned_to("pi-1"));
        assert!(!pinned.pinned_to("pi-2"));
        let free = plain_volume("a", "1Gi");
        assert!(free.admits_node("pi-2", &labels("pi-2")));
        assert!(!free.pinned_to("pi-2"));
    }

    #[test]
    fn a_claim_without_a_class_gets_the_default_and_every_claim_its_finalizer() {
        let class = |name: &str, default: bool, created: &str| {
            let mut o = local_path_class();
            let meta = o.metadata.as_mut().unwrap();
            meta.name = name.into();
            meta.creation_timestamp = created.into();
            if !default {
                meta.annotations.clear();
            }
            Arc::new(o.into_object())
        };
        let classes = vec![
            class("old", true, "2026-01-01T00:00:00Z"),
            class("new", true, "2026-02-01T00:00:00Z"),
            class("plain", false, "2026-03-01T00:00:00Z"),
        ];
        assert_eq!(default_class_name(&classes).as_deref(), Some("new"));
        assert_eq!(default_class_name(&classes[2..]), None);

        let claim_object = |spec: Value| match generic(
            "PersistentVolumeClaim",
            "data",
            "shop",
            serde_json::json!({ "spec": spec }),
        )
        .kind
        {
            Some(Body::Generic(g)) => g,
            _ => unreachable!(),
        };
        let mut unset = claim_object(serde_json::json!({"accessModes": ["ReadWriteOnce"]}));
        admit_claim(&mut unset, Some("new"));
        let read = ClaimView::read(&unset.clone().into_object()).unwrap();
        assert_eq!(read.class(), "new");
        assert_eq!(read.meta.finalizers, [PVC_PROTECTION_FINALIZER]);
        admit_claim(&mut unset, Some("new"));
        let read = ClaimView::read(&unset.into_object()).unwrap();
        assert_eq!(read.meta.finalizers.len(), 1, "added once");
        let mut none = claim_object(serde_json::json!({"storageClassName": ""}));
        admit_claim(&mut none, Some("new"));
        let read = ClaimView::read(&none.into_object()).unwrap();
        assert_eq!(read.spec.storage_class_name.as_deref(), Some(""));
    }

    #[test]
    fn the_built_in_class_is_k3s_local_path() {
        let class = ClassView::read(&local_path_class().into_object()).unwrap();
        assert_eq!(class.name, LOCAL_PATH_CLASS);
        assert!(class.default);
        assert_eq!(class.provisioner, LOCAL_PATH_PROVISIONER);
        assert!(class.waits_for_first_consumer());
        assert_eq!(class.reclaim_policy(), "Delete");
    }
}
