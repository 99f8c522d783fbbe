//! Persistent volumes, as Kubernetes' PV controller, the local-path
//! provisioner k3s ships, and the protection controllers keep them: two
//! reconcilers over the claims and the volumes.
//!
//! [`ClaimController`] (one claim at a time, since two claims must never
//! take one volume):
//! - binds a claim to the smallest matching volume (class, access modes,
//!   size, selector, volume mode; a volume reserved for it by `claimRef`
//!   first): the volume's `claimRef`, then the claim's `spec.volumeName`
//!   with `pv.kubernetes.io/bind-completed`, both `Bound`;
//! - for a class that waits for the first consumer, binds only once the
//!   scheduler has placed a pod using the claim (the claim's
//!   `volume.kubernetes.io/selected-node`), among volumes that node may
//!   use, and else provisions a `local-path` volume there
//!   ([`provisioning`]), warning when the claim asks for more than the
//!   node has free; a selected node that is gone or long not Ready is
//!   removed from the claim for the scheduler to choose again (a
//!   `ProvisioningFailed` Event says why), one briefly not Ready waited
//!   for;
//! - gives such a claim the node of a pod using it that skipped the
//!   scheduler (its `spec.nodeName` set when made: a DaemonSet's pods, or
//!   a pod written so), for its volume to be made where the pod already
//!   is. Kubernetes leaves such a claim Pending (kubernetes#89953, and its
//!   docs warn against `nodeName` with WaitForFirstConsumer); skiff's
//!   DaemonSet controller binds its pods itself, so their claims would
//!   never bind;
//! - says why a claim stays `Pending` (Events as Kubernetes words them),
//!   and marks it `Lost` when its volume is gone or bound elsewhere;
//! - keeps `kubernetes.io/pvc-protection` on claims and removes it from a
//!   claim being deleted once no pod that has not finished uses it.
//!
//! [`VolumeController`]:
//! - keeps each volume's phase: `Available` (free or reserved), `Bound`,
//!   `Released` (its claim is gone);
//! - reclaims released volumes: `Delete` deletes the volume (its node's
//!   agent then removes the directory of a `local-path` one), `Retain`
//!   keeps it `Released`;
//! - keeps `kubernetes.io/pv-protection` on volumes and removes it from a
//!   volume being deleted once no claim is bound to it.

pub mod provisioning;

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{self, GenericObject};

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use provisioning::NodeVerdict;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::generic;
use skiff_objects::pods;
use skiff_objects::storage::{
    best_volume, claim_ref_parts, refers_to, volume_fits_claim, ClaimView, ClassView, VolumeView,
    BIND_COMPLETED_ANNOTATION, BOUND_BY_CONTROLLER_ANNOTATION, LOCAL_PATH_PROVISIONER,
    PVC_PROTECTION_FINALIZER, PV_PROTECTION_FINALIZER, SELECTED_NODE_ANNOTATION,
    STORAGE_PROVISIONER_ANNOTATION,
};
use skiff_objects::{IntoObject, Kind, ObjectExt};

/// The component its Events are recorded as (Kubernetes' name).
const COMPONENT: &str = "persistentvolume-controller";

/// The stored generic object inside `object`.
fn generic_of(object: &Object) -> Option<GenericObject> {
    match &object.kind {
        Some(Body::Generic(g)) => Some(g.clone()),
        _ => None,
    }
}

/// `object` with these fields of its `status` set (the rest kept).
fn with_status_fields(object: &GenericObject, fields: &[(&str, Value)]) -> GenericObject {
    let mut updated = object.clone();
    let mut content = generic::content(&updated);
    let status = content
        .entry("status")
        .or_insert_with(|| Value::Object(Map::new()));
    if !status.is_object() {
        *status = Value::Object(Map::new());
    }
    if let Some(status) = status.as_object_mut() {
        for (key, value) in fields {
            if value.is_null() {
                status.remove(*key);
            } else {
                status.insert((*key).to_owned(), value.clone());
            }
        }
    }
    generic::set_content(&mut updated, &content);
    updated
}

/// Whether `object`'s status already has these fields.
fn status_has(object: &GenericObject, fields: &[(&str, Value)]) -> bool {
    let content = generic::content(object);
    let status = content.get("status").cloned().unwrap_or(Value::Null);
    fields.iter().all(|(key, value)| match value {
        Value::Null => status.get(*key).is_none(),
        value => status.get(*key) == Some(value),
    })
}

/// `object` with the annotation `key` set to `value`, or removed (`None`).
fn with_annotation(object: &GenericObject, key: &str, value: Option<&str>) -> GenericObject {
    let mut updated = object.clone();
    let annotations = &mut updated
        .metadata
        .get_or_insert_with(Default::default)
        .annotations;
    match value {
        Some(value) => {
            annotations.insert(key.to_owned(), value.to_owned());
        }
        None => {
            annotations.remove(key);
        }
    }
    updated
}

fn has_finalizer(meta: &v1::ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().any(|f| f == finalizer)
}

/// `object` with `finalizer` added (`add`) or removed.
fn with_finalizer(object: &GenericObject, finalizer: &str, add: bool) -> GenericObject {
    let mut updated = object.clone();
    let meta = updated.metadata.get_or_insert_with(Default::default);
    meta.finalizers.retain(|f| f != finalizer);
    if add {
        meta.finalizers.push(finalizer.to_owned());
    }
    updated
}

/// The generic object a write answered with.
fn written(object: Object, kind: &'static str) -> Result<GenericObject, ReconcileError> {
    generic_of(&object).ok_or(ReconcileError::WrongKind { kind })
}

/// Whether a pod that has not finished uses the claim `name` in
/// `namespace`: what holds a claim being deleted. The pods come from the
/// cache's index of the claims pods use.
pub fn claim_in_use(ctx: &Context, namespace: &str, name: &str) -> Result<bool, ReconcileError> {
    let pods = ctx.store.pods_using_claim(namespace, name);
    Ok(pods.iter().any(|object| {
        pods::facts(object)
            .is_some_and(|pod| !pod.is_finished() && pod.claims.iter().any(|c| c == name))
    }))
}

/// Binds claims to volumes and provisions `local-path` volumes.
pub struct ClaimController {
    pub ctx: Context,
}

impl Reconciler for ClaimController {
    const NAME: &'static str = "persistentvolume-binder";
    const KIND: Kind = Kind::PersistentVolumeClaim;
    const WATCHES: KindFilter = KindFilter::only(&[
        Kind::PersistentVolumeClaim,
        Kind::PersistentVolume,
        Kind::Pod,
        Kind::StorageClass,
        Kind::Node,
    ]);
    // Two claims must never take one volume.
    const CONCURRENCY: usize = 1;

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::PersistentVolumeClaim => ObjectKey::of(object).into_iter().collect(),
            Kind::PersistentVolume => match VolumeView::read(object) {
                Some(volume) => match volume.claim_ref() {
                    Some(r) => {
                        let (namespace, name, _) = claim_ref_parts(r);
                        vec![ObjectKey::new(Kind::PersistentVolumeClaim, namespace, name)]
                    }
                    // A free volume: every claim of its class still
                    // waiting may take it.
                    None => self.unbound_claims(volume.class()),
                },
                None => Vec::new(),
            },
            Kind::Pod => match pods::facts(object) {
                Some(pod) => (pod.claims.iter())
                    .map(|c| ObjectKey::new(Kind::PersistentVolumeClaim, &event.namespace, c))
                    .collect(),
                None => Vec::new(),
            },
            // Only the claims asking for the class read it.
            Kind::StorageClass => self.unbound_claims(&object.meta().name),
            // A selected node that went, or whose readiness changed.
            Kind::Node => self.claims_selecting(&object.meta().name),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(object) =
            self.ctx
                .store
                .get(Kind::PersistentVolumeClaim, &key.namespace, &key.name)?
        else {
            return Ok(Action::Done);
        };
        let (Some(claim), Some(stored)) = (ClaimView::read(&object), generic_of(&object)) else {
            return Ok(Action::Done);
        };
        let protected = has_finalizer(&claim.meta, PVC_PROTECTION_FINALIZER);
        if claim.being_deleted() {
            if protected && !claim_in_use(&self.ctx, &key.namespace, &key.name)? {
                let released = with_finalizer(&stored, PVC_PROTECTION_FINALIZER, false);
                self.ctx.writer.update(released.into_object()).await?;
            }
            return Ok(Action::Done);
        }
        if !protected {
            let guarded = with_finalizer(&stored, PVC_PROTECTION_FINALIZER, true);
            self.ctx.writer.update(guarded.into_object()).await?;
            // The update is a change: the claim is looked at again.
            return Ok(Action::Done);
        }
        if claim.volume_name().is_empty() {
            self.sync_unbound(&object, stored, &claim).await
        } else {
            self.sync_bound(&object, stored, &claim).await
        }
    }
}

impl ClaimController {
    fn events(&self) -> crate::events::EventRecorder {
        self.ctx.events.for_component(COMPONENT)
    }

    /// The claims of storage class `class` not bound to a volume yet, from
    /// the cache's index (a claim of another class could not take a
    /// volume of this one, nor reads this class).
    fn unbound_claims(&self, class: &str) -> Vec<ObjectKey> {
        self.ctx
            .store
            .unbound_claims(class)
            .iter()
            .filter_map(|o| ClaimView::read(o))
            .filter(|c| c.volume_name().is_empty())
            .map(|c| ObjectKey::new(Kind::PersistentVolumeClaim, &c.meta.namespace, &c.meta.name))
            .collect()
    }

    /// The unbound claims that a `local-path` class would provision on
    /// `node` (their selected node): what waits on that node.
    fn claims_selecting(&self, node: &str) -> Vec<ObjectKey> {
        let Ok((classes, _)) = self.ctx.store.list(Kind::StorageClass, None) else {
            return Vec::new();
        };
        classes
            .iter()
            .filter_map(|o| ClassView::read(o))
            .filter(|c| c.provisioner == LOCAL_PATH_PROVISIONER)
            .flat_map(|c| self.ctx.store.unbound_claims(&c.name))
            .filter_map(|o| ClaimView::read(&o))
            .filter(|c| c.volume_name().is_empty() && c.selected_node() == Some(node))
            .map(|c| ObjectKey::new(Kind::PersistentVolumeClaim, &c.meta.namespace, &c.meta.name))
            .collect()
    }

    /// The node of a pod using `claim` that is bound without the
    /// scheduler having given the claim a node (it skipped the scheduler:
    /// `spec.nodeName` set when made), the oldest such pod's, if that node
    /// may have the volume (not gone, not long unready).
    fn node_of_unscheduled_consumer(
        &self,
        claim: &ClaimView,
    ) -> Result<Option<String>, ReconcileError> {
        let meta = &claim.meta;
        let objects = self.ctx.store.pods_using_claim(&meta.namespace, &meta.name);
        let mut consumers: Vec<(&str, &str, String)> = objects
            .iter()
            .filter(|o| !is_being_deleted(o.meta()))
            .filter_map(|o| Some((o, pods::facts(o)?)))
            .filter(|(_, pod)| !pod.is_finished())
            .filter_map(|(o, pod)| {
                let uses = pod.claims.contains(&meta.name);
                let pod_meta = o.meta();
                (uses && !pod.node_name.is_empty()).then_some((
                    pod_meta.creation_timestamp.as_str(),
                    pod_meta.name.as_str(),
                    pod.node_name,
                ))
            })
            .collect();
        // Oldest first (RFC 3339 sorts as text), then by name.
        consumers.sort();
        let now = SystemTime::now();
        for (_, _, node) in consumers {
            let node = node.as_str();
            let stored = self
                .ctx
                .store
                .get(Kind::Node, "", node)?
                .and_then(|o| match &o.kind {
                    Some(Body::Node(n)) => Some(n.clone()),
                    _ => None,
                });
            if !matches!(
                provisioning::node_verdict(node, stored.as_ref(), now),
                NodeVerdict::Reschedule(_)
            ) {
                return Ok(Some(node.to_owned()));
            }
        }
        Ok(None)
    }

    /// Writes the claim's phase (and, once bound, the volume's size and
    /// access modes) when they differ.
    async fn set_phase(
        &self,
        stored: &GenericObject,
        phase: &str,
        volume: Option<&VolumeView>,
    ) -> Result<(), ReconcileError> {
        let (capacity, modes) = match volume {
            Some(v) => (
                serde_json::to_value(&v.spec.capacity).unwrap_or(Value::Null),
                serde_json::to_value(&v.spec.access_modes).unwrap_or(Value::Null),
            ),
            None => (Value::Null, Value::Null),
        };
        let fields = [
            ("phase", Value::from(phase)),
            ("capacity", capacity),
            ("accessModes", modes),
        ];
        if !status_has(stored, &fields) {
            let updated = with_status_fields(stored, &fields);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        Ok(())
    }

    /// A claim that names its volume: completes the binding, or says it
    /// is lost.
    async fn sync_bound(
        &self,
        object: &Object,
        stored: GenericObject,
        claim: &ClaimView,
    ) -> Result<Action, ReconcileError> {
        let name = claim.volume_name();
        let volume = self
            .ctx
            .store
            .get(Kind::PersistentVolume, "", name)?
            .and_then(|o| VolumeView::read(&o).map(|v| (v, o)));
        let Some((volume, volume_object)) = volume else {
            if claim.phase != "Lost" {
                self.events().warning(
                    object,
                    "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                );
            }
            self.set_phase(&stored, "Lost", None).await?;
            return Ok(Action::Done);
        };
        // Whether the volume points at this claim, and whether without its
        // uid yet (reserved by name).
        let reference = volume
            .claim_ref()
            .map(|r| (refers_to(r, claim), claim_ref_parts(r).2.is_empty()));
        match reference {
            Some((true, by_name)) => {
                let volume = if by_name {
                    self.reserve(&volume_object, claim).await?
                } else {
                    volume
                };
                self.complete(stored, claim, &volume).await?;
            }
            Some((false, _)) => {
                if claim.phase != "Lost" {
                    let message = format!(
                        "Two claims are bound to the same volume, this one is bound incorrectly (volume {name:?} is bound to another claim)"
                    );
                    self.events().warning(object, "ClaimMisbound", message);
                }
                self.set_phase(&stored, "Lost", None).await?;
            }
            // Named by the user: the volume is taken if it fits.
            None => match volume_fits_claim(&volume, claim) {
                Ok(()) => {
                    let volume = self.reserve(&volume_object, claim).await?;
                    self.complete(stored, claim, &volume).await?;
                }
                Err(mismatch) => {
                    let message = format!("volume {name:?} does not fit the claim ({mismatch:?})");
                    self.events().warning(object, "FailedBinding", message);
                    self.set_phase(&stored, "Pending", None).await?;
                }
            },
        }
        Ok(Action::Done)
    }

    /// A claim without a volume: binds it to one that fits, provisions
    /// one, or says why it waits.
    async fn sync_unbound(
        &self,
        object: &Object,
        stored: GenericObject,
        claim: &ClaimView,
    ) -> Result<Action, ReconcileError> {
        // A class named but missing still lets static volumes of that name
        // bind, as in Kubernetes; it only cannot provision.
        let class = if claim.class().is_empty() {
            None
        } else {
            self.ctx
                .store
                .get(Kind::StorageClass, "", claim.class())?
                .and_then(|o| ClassView::read(&o))
        };
        let waits = class
            .as_ref()
            .is_some_and(ClassView::waits_for_first_consumer);
        let node = claim.selected_node();
        if waits && node.is_none() {
            if let Some(consumer_node) = self.node_of_unscheduled_consumer(claim)? {
                tracing::info!(
                    claim = %format!("{}/{}", claim.meta.namespace, claim.meta.name),
                    node = %consumer_node,
                    "a pod using the claim is bound to a node without the scheduler: that node is its selected node"
                );
                let selected = with_annotation(
                    &stored,
                    SELECTED_NODE_ANNOTATION,
                    Some(consumer_node.as_str()),
                );
                // The update is a change: the claim is looked at again.
                self.ctx.writer.update(selected.into_object()).await?;
                return Ok(Action::Done);
            }
            self.events().normal(
                object,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            );
            self.set_phase(&stored, "Pending", None).await?;
            return Ok(Action::Done);
        }
        let node_object = match node {
            Some(n) => self
                .ctx
                .store
                .get(Kind::Node, "", n)?
                .and_then(|o| match &o.kind {
                    Some(Body::Node(node)) => Some(node.clone()),
                    _ => None,
                }),
            None => None,
        };
        let labels = node_object
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        // Only a volume reserved for this claim or a free one of its class
        // can fit it (`volume_fits_claim`): both from the cache's indexes.
        let meta = &claim.meta;
        let mut volume_objects = self
            .ctx
            .store
            .volumes_for_claim(&meta.namespace, &meta.name);
        volume_objects.extend(self.ctx.store.free_volumes(claim.class()));
        let volumes: Vec<VolumeView> = volume_objects
            .iter()
            .filter_map(|o| VolumeView::read(o))
            .collect();
        let usable = |v: &VolumeView| node.is_none_or(|n| v.admits_node(n, &labels));
        if let Some(chosen) = best_volume(&volumes, claim, usable) {
            let Some(chosen_object) = volume_objects
                .iter()
                .find(|o| o.meta().name == chosen.meta.name)
            else {
                return Ok(Action::Done);
            };
            let volume = self.reserve(chosen_object, claim).await?;
            self.complete(stored, claim, &volume).await?;
            return Ok(Action::Done);
        }
        if class.is_none() && !claim.class().is_empty() {
            let message = format!("storageclass.storage.k8s.io {:?} not found", claim.class());
            self.events().warning(object, "ProvisioningFailed", message);
            self.set_phase(&stored, "Pending", None).await?;
            return Ok(Action::Done);
        }
        match (&class, node) {
            (Some(class), Some(node)) if class.provisioner == LOCAL_PATH_PROVISIONER => {
                let verdict =
                    provisioning::node_verdict(node, node_object.as_ref(), SystemTime::now());
                match verdict {
                    NodeVerdict::Provision => {
                        self.provision(object, stored, claim, class, node, node_object.as_ref())
                            .await?;
                    }
                    NodeVerdict::Wait { node, after } => {
                        let message = format!(
                            "node {node:?} is not Ready: waiting for it (for up to {}s, then the claim's node is chosen again)",
                            provisioning::NOT_READY_RESCHEDULE_AFTER.as_secs()
                        );
                        self.events().warning(object, "ProvisioningFailed", message);
                        self.set_phase(&stored, "Pending", None).await?;
                        return Ok(Action::RequeueAfter(after));
                    }
                    NodeVerdict::Reschedule(why) => {
                        self.reschedule(object, stored, &why).await?;
                    }
                }
            }
            (Some(class), None) if class.provisioner == LOCAL_PATH_PROVISIONER => {
                let message = format!(
                    "the {LOCAL_PATH_PROVISIONER} provisioner makes a volume on the node of the claim's first pod: storage class {:?} needs volumeBindingMode WaitForFirstConsumer",
                    class.name
                );
                self.events().warning(object, "ProvisioningFailed", message);
                self.set_phase(&stored, "Pending", None).await?;
            }
            (Some(class), _) => {
                let message = format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                );
                self.events()
                    .normal(object, "ExternalProvisioning", message);
                self.set_phase(&stored, "Pending", None).await?;
            }
            (None, _) => {
                self.events().normal(
                    object,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                );
                self.set_phase(&stored, "Pending", None).await?;
            }
        }
        Ok(Action::Done)
    }

    /// Gives the claim back to the scheduler, as external-provisioner does
    /// after a final error on the selected node: removes
    /// `volume.kubernetes.io/selected-node`, so that the next pod using
    /// the claim is placed afresh (and gives it a node again), saying why.
    async fn reschedule(
        &self,
        object: &Object,
        stored: GenericObject,
        why: &str,
    ) -> Result<(), ReconcileError> {
        tracing::info!(
            claim = %format!("{}/{}", object.meta().namespace, object.meta().name),
            reason = %why,
            "cannot provision on the claim's selected node: clearing it for the scheduler"
        );
        let message = format!(
            "{why}: removed the claim's {SELECTED_NODE_ANNOTATION} annotation for the scheduler to choose a node again"
        );
        self.events().warning(object, "ProvisioningFailed", message);
        let cleared = with_annotation(&stored, SELECTED_NODE_ANNOTATION, None);
        let cleared = written(
            self.ctx.writer.update(cleared.into_object()).await?,
            "PersistentVolumeClaim",
        )?;
        self.set_phase(&cleared, "Pending", None).await
    }

    /// Makes a `local-path` volume for `claim` on `node`, then binds it.
    async fn provision(
        &self,
        object: &Object,
        stored: GenericObject,
        claim: &ClaimView,
        class: &ClassView,
        node: &str,
        node_object: Option<&v1::Node>,
    ) -> Result<(), ReconcileError> {
        let stored = if stored
            .metadata
            .as_ref()
            .is_some_and(|m| m.annotations.contains_key(STORAGE_PROVISIONER_ANNOTATION))
        {
            stored
        } else {
            let mut annotated = stored.clone();
            annotated
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .insert(
                    STORAGE_PROVISIONER_ANNOTATION.to_owned(),
                    class.provisioner.clone(),
                );
            written(
                self.ctx.writer.update(annotated.into_object()).await?,
                "PersistentVolumeClaim",
            )?
        };
        let dir = provisioning::storage_dir(node_object);
        let volume = provisioning::local_path_volume(claim, class, node, &dir);
        let name = provisioning::volume_name(&claim.meta.uid);
        let created = match self.ctx.writer.create(volume.into_object()).await {
            Ok(created) => {
                // Said once, when the volume is made.
                if let Some(warning) = self.capacity_warning(claim, node, &dir) {
                    self.events()
                        .warning(object, provisioning::CAPACITY_WARNING_REASON, warning);
                }
                created
            }
            // Made by an earlier try that failed later on.
            Err(e) if e.is_already_exists() => {
                match self.ctx.store.get(Kind::PersistentVolume, "", &name)? {
                    Some(o) => Arc::unwrap_or_clone(o),
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let Some(volume) = VolumeView::read(&created) else {
            return Err(ReconcileError::WrongKind {
                kind: "PersistentVolume",
            });
        };
        self.events().normal(
            object,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {name} on node {node}"),
        );
        self.complete(stored, claim, &volume).await
    }

    /// The warning for `claim`, provisioned on `node` under `dir`, if it
    /// asks for more than the node's newest reading has free there.
    fn capacity_warning(&self, claim: &ClaimView, node: &str, dir: &str) -> Option<String> {
        let readings: Vec<_> = self
            .ctx
            .resource_metrics
            .nodes()
            .into_iter()
            .filter_map(|(name, usage)| usage.storage.map(|s| (name, s)))
            .collect();
        provisioning::capacity_warning(claim, node, dir, &readings)
    }

    /// Points the volume at the claim (`claimRef` with its uid) and marks
    /// it `Bound`; the volume as written.
    async fn reserve(
        &self,
        volume_object: &Object,
        claim: &ClaimView,
    ) -> Result<VolumeView, ReconcileError> {
        let Some(stored) = generic_of(volume_object) else {
            return Err(ReconcileError::WrongKind {
                kind: "PersistentVolume",
            });
        };
        let mut content = generic::content(&stored);
        let reference = serde_json::to_value(provisioning::claim_ref(claim)).unwrap_or(Value::Null);
        let already = content
            .get("spec")
            .and_then(|s| s.get("claimRef"))
            .and_then(|r| r.get("uid"))
            .and_then(Value::as_str)
            == Some(claim.meta.uid.as_str());
        let mut current = stored;
        if !already {
            if let Some(spec) = content.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("claimRef".to_owned(), reference);
            }
            let mut updated = current.clone();
            generic::set_content(&mut updated, &content);
            updated
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .insert(BOUND_BY_CONTROLLER_ANNOTATION.to_owned(), "yes".to_owned());
            current = written(
                self.ctx.writer.update(updated.into_object()).await?,
                "PersistentVolume",
            )?;
        }
        let bound = [("phase", Value::from("Bound"))];
        if !status_has(&current, &bound) {
            let updated = with_status_fields(&current, &bound);
            current = written(
                self.ctx.writer.update_status(updated.into_object()).await?,
                "PersistentVolume",
            )?;
        }
        VolumeView::read(&current.into_object()).ok_or(ReconcileError::WrongKind {
            kind: "PersistentVolume",
        })
    }

    /// Names the volume in the claim, marks the binding complete and the
    /// claim `Bound`.
    async fn complete(
        &self,
        stored: GenericObject,
        claim: &ClaimView,
        volume: &VolumeView,
    ) -> Result<(), ReconcileError> {
        let mut current = stored;
        let annotated = claim
            .meta
            .annotations
            .get(BIND_COMPLETED_ANNOTATION)
            .is_some_and(|v| v == "yes");
        if claim.volume_name() != volume.meta.name || !annotated {
            let mut content = generic::content(&current);
            if let Some(spec) = content.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert(
                    "volumeName".to_owned(),
                    Value::from(volume.meta.name.clone()),
                );
            }
            let mut updated = current.clone();
            generic::set_content(&mut updated, &content);
            let annotations = &mut updated
                .metadata
                .get_or_insert_with(Default::default)
                .annotations;
            annotations.insert(BIND_COMPLETED_ANNOTATION.to_owned(), "yes".to_owned());
            if claim.volume_name().is_empty() {
                annotations.insert(BOUND_BY_CONTROLLER_ANNOTATION.to_owned(), "yes".to_owned());
            }
            current = written(
                self.ctx.writer.update(updated.into_object()).await?,
                "PersistentVolumeClaim",
            )?;
        }
        self.set_phase(&current, "Bound", Some(volume)).await
    }
}

/// Keeps volumes' phases, reclaims released ones and protects bound ones.
pub struct VolumeController {
    pub ctx: Context,
}

impl Reconciler for VolumeController {
    const NAME: &'static str = "persistentvolume";
    const KIND: Kind = Kind::PersistentVolume;
    const WATCHES: KindFilter =
        KindFilter::only(&[Kind::PersistentVolume, Kind::PersistentVolumeClaim]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::PersistentVolume => ObjectKey::of(object).into_iter().collect(),
            Kind::PersistentVolumeClaim => {
                let mut keys = Vec::new();
                if let Some(claim) = ClaimView::read(object) {
                    if !claim.volume_name().is_empty() {
                        keys.push(ObjectKey::new(
                            Kind::PersistentVolume,
                            "",
                            claim.volume_name(),
                        ));
                    }
                }
                // A volume reserved for a claim that went before binding,
                // from the cache's claimRef index.
                let name = &object.meta().name;
                let held = self.ctx.store.volumes_for_claim(&event.namespace, name);
                for volume in held.iter().filter_map(|o| VolumeView::read(o)) {
                    let reserved = volume.claim_ref().map(claim_ref_parts).is_some_and(
                        |(namespace, claim, _)| namespace == event.namespace && claim == name,
                    );
                    if reserved && !keys.iter().any(|k| k.name == volume.meta.name) {
                        keys.push(ObjectKey::new(
                            Kind::PersistentVolume,
                            "",
                            &volume.meta.name,
                        ));
                    }
                }
                keys
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(object) = self.ctx.store.get(Kind::PersistentVolume, "", &key.name)? else {
            return Ok(Action::Done);
        };
        let (Some(volume), Some(stored)) = (VolumeView::read(&object), generic_of(&object)) else {
            return Ok(Action::Done);
        };
        let claim = match volume.claim_ref() {
            Some(r) => {
                let (namespace, name, uid) = claim_ref_parts(r);
                self.ctx
                    .store
                    .get(Kind::PersistentVolumeClaim, namespace, name)?
                    .and_then(|o| ClaimView::read(&o))
                    .filter(|c| uid.is_empty() || uid == c.meta.uid)
            }
            None => None,
        };
        let bound_to_claim = claim
            .as_ref()
            .is_some_and(|c| c.volume_name() == volume.meta.name);
        let protected = has_finalizer(&volume.meta, PV_PROTECTION_FINALIZER);
        if volume.being_deleted() {
            if protected && !bound_to_claim {
                let released = with_finalizer(&stored, PV_PROTECTION_FINALIZER, false);
                self.ctx.writer.update(released.into_object()).await?;
            }
            return Ok(Action::Done);
        }
        if !protected {
            let guarded = with_finalizer(&stored, PV_PROTECTION_FINALIZER, true);
            self.ctx.writer.update(guarded.into_object()).await?;
            return Ok(Action::Done);
        }
        let phase = match (volume.claim_ref(), &claim) {
            (None, _) => "Available",
            (Some(_), Some(_)) if bound_to_claim => "Bound",
            // Reserved for a claim that has not taken it yet.
            (Some(_), Some(_)) => "Available",
            (Some(r), None) => {
                if volume.reclaim_policy() == "Delete" {
                    tracing::info!(
                        volume = %volume.meta.name,
                        claim = %format!("{}/{}", claim_ref_parts(r).0, claim_ref_parts(r).1),
                        "deleting a released volume (reclaim policy Delete)"
                    );
                    match self
                        .ctx
                        .writer
                        .delete(Kind::PersistentVolume, "", &volume.meta.name, "")
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                    return Ok(Action::Done);
                }
                "Released"
            }
        };
        let fields = [("phase", Value::from(phase))];
        if !status_has(&stored, &fields) {
            let updated = with_status_fields(&stored, &fields);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests;
