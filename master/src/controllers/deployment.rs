//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<template hash>`), rolled with `RollingUpdate`
//! (`maxSurge` / `maxUnavailable`) or `Recreate`, revision numbers in the
//! `deployment.kubernetes.io/revision` annotation of each ReplicaSet and of
//! the Deployment (the newest; a rollback to an older template makes its
//! ReplicaSet the newest revision), the Deployment's other annotations
//! (`kubernetes.io/change-cause`) copied to its newest ReplicaSet for
//! `kubectl rollout history`, old ReplicaSets kept up to
//! `revisionHistoryLimit` for `kubectl rollout undo`, and status that sums
//! them up with Kubernetes' conditions (`Available`, `Progressing`).
//! Each scaling of a ReplicaSet is an Event on the Deployment
//! (`ScalingReplicaSet`), as Kubernetes' controller records it.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use serde_json::{Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::replicaset::count;
use super::workload_spec::{self, SpecError};
use super::{revisions, Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::owners::{controller as owners_controller, controller_of, controller_reference};
use skiff_objects::{generic, legacy_bodies, now_rfc3339, selector, typed};
use skiff_objects::{IntoObject, Kind, ObjectExt};

/// The label that ties a ReplicaSet and its pods to one template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The annotation that numbers a Deployment's templates.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The component its Events are recorded as.
const COMPONENT: &str = "deployment-controller";

/// Annotations a Deployment does not pass on to its ReplicaSets
/// (Kubernetes' `skipCopyAnnotation`): kubectl's record of what it applied,
/// and those the controller writes per object.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

pub struct DeploymentController {
    pub ctx: Context,
}

/// What the controller reads of a Deployment's spec: every field but the
/// template in skiff's protobuf model (which has them all), the template
/// as stored, so that its ReplicaSets' pods carry every field of it.
struct DeploymentSpec {
    fields: v1::DeploymentSpec,
    /// `spec.template`, without `null`s (an empty object when unset).
    template: Value,
}

impl DeploymentSpec {
    fn read(object: &v1::GenericObject) -> Result<DeploymentSpec, SpecError> {
        let mut spec = workload_spec::spec_of(object);
        let template = match spec.as_object_mut().and_then(|s| s.remove("template")) {
            Some(template @ Value::Object(_)) => template,
            _ => Value::Object(Map::new()),
        };
        if !spec.is_object() {
            spec = Value::Object(Map::new());
        }
        let fields =
            serde_json::from_value(spec).map_err(|e| SpecError::new("spec", e.to_string()))?;
        Ok(DeploymentSpec { fields, template })
    }
}

/// One of a Deployment's ReplicaSets, as the controller reads it.
#[derive(Debug, Clone, Default)]
pub struct OwnedSet {
    /// The ReplicaSet as stored (its document).
    pub object: v1::GenericObject,
    /// `spec.replicas` (0 when unset).
    pub replicas: i32,
    pub status: v1::ReplicaSetStatus,
    /// `spec.template`, without `null`s.
    pub template: Value,
    /// `template` as compared ([`comparable_template`]).
    comparable: Value,
}

impl OwnedSet {
    /// `object` read, when it is a ReplicaSet (a document, or an older
    /// release's protobuf model).
    pub fn read(object: &Object) -> Option<OwnedSet> {
        let document = match &object.kind {
            Some(Body::Generic(g)) => g.clone(),
            _ => match legacy_bodies::to_document(object.clone()).kind {
                Some(Body::Generic(g)) => g,
                _ => return None,
            },
        };
        if document.kind != "ReplicaSet" {
            return None;
        }
        // Its content parsed once.
        let mut content = generic::content(&document);
        let status = typed::decode_or_default(content.get("status"));
        let mut spec = content.remove("spec").unwrap_or(Value::Null);
        workload_spec::strip_nulls(&mut spec);
        let template = workload_spec::template_of(&spec);
        Some(OwnedSet {
            replicas: count(&spec["replicas"]).unwrap_or(0),
            status,
            comparable: comparable_template(&template),
            template,
            object: document,
        })
    }

    pub fn name(&self) -> &str {
        self.object
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
    }

    /// The revision number in its annotation (0 when missing).
    pub fn revision(&self) -> u64 {
        self.object
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.get(REVISION_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Its template as `kubectl rollout undo` puts it back: without the
    /// pod-template-hash label.
    pub fn template_without_hash(&self) -> Value {
        let mut template = self.template.clone();
        let labels = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut);
        if let Some(labels) = labels {
            labels.remove(TEMPLATE_HASH_LABEL);
        }
        template
    }

    fn annotations_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self
            .object
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
    }
}

/// `set` with `replicas` as its `spec.replicas`, set as the scale
/// subresource sets it (`scale::set_replicas`).
fn with_replicas(
    set: &v1::GenericObject,
    replicas: i32,
) -> Result<v1::GenericObject, ReconcileError> {
    let mut object = set.clone().into_object();
    let wrong = |_| ReconcileError::WrongKind { kind: "ReplicaSet" };
    skiff_objects::scale::set_replicas(&mut object, replicas).map_err(wrong)?;
    match object.kind {
        Some(Body::Generic(set)) => Ok(set),
        _ => Err(ReconcileError::WrongKind { kind: "ReplicaSet" }),
    }
}

/// Whether `deployment` (with `spec`) may count `set` as its own: `set` is
/// not being deleted, and controlled by it, or by nothing and labelled as
/// its selector selects.
fn claimable(deployment: &Object, set: &OwnedSet, spec: &v1::DeploymentSpec) -> bool {
    let meta = set.object.metadata.clone().unwrap_or_default();
    if is_being_deleted(&meta) {
        // Going: never taken as the template's.
        return false;
    }
    match owners_controller(&meta) {
        Some(owner) => owner.uid == deployment.meta().uid,
        None => spec
            .selector
            .as_ref()
            .is_some_and(|s| !selector::is_empty(s) && selector::matches(s, &meta.labels)),
    }
}

/// A pod template as compared for sameness, as Kubernetes'
/// `EqualIgnoreHash` compares a ReplicaSet's with its Deployment's: without
/// the pod-template-hash label, `null`s and empty lists and maps taken as
/// unset (so the `securityContext: {}` and `resources: {}` a template is
/// written with since Deployments are documents change nothing); `""`,
/// `false` and `0` are values.
pub fn comparable_template(template: &Value) -> Value {
    let mut template = template.clone();
    let labels = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut);
    if let Some(labels) = labels {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    generic::strip_empty(&mut template);
    template
}

/// A comparable template (`comparable_template`) in skiff's protobuf model,
/// when the model holds all of it: how a template an earlier release
/// stored (its model's JSON, which leaves out `false` and `0`, and writes
/// a port or a quantity its own way) is the same as one written since.
fn template_in_model(comparable: &Value) -> Option<v1::PodTemplateSpec> {
    legacy_bodies::whole_in_model(comparable)
}

/// Whether the ReplicaSet `set` has the template whose comparable form is
/// `wanted` (`wanted_model`: that in the protobuf model, made once when
/// first asked for).
fn has_template(
    set: &OwnedSet,
    wanted: &Value,
    wanted_model: &mut Option<Option<v1::PodTemplateSpec>>,
) -> bool {
    if set.comparable == *wanted {
        return true;
    }
    let wanted_model = wanted_model.get_or_insert_with(|| template_in_model(wanted));
    wanted_model
        .as_ref()
        .is_some_and(|w| template_in_model(&set.comparable).as_ref() == Some(w))
}

/// The hash a new ReplicaSet of `template` (a Deployment's, as stored) is
/// named and labelled by: the one earlier releases gave, of the template
/// in skiff's protobuf model, when the model holds it (an older master
/// leading during a rolling upgrade finds the ReplicaSet by it); else
/// Kubernetes' kind of hash (`revisions::template_hash`) of its comparable
/// form. A collision count makes another.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    match legacy_bodies::whole_in_model::<v1::PodTemplateSpec>(template) {
        // As an older master holds it (`without_empty_defaults`).
        Some(mut model) => {
            legacy_bodies::without_empty_defaults(&mut model);
            model_hash(&model, collision_count)
        }
        None => revisions::template_hash(&comparable_template(template), collision_count),
    }
}

/// FNV-1a (64 bits) of the protobuf encoding of `template` (and of the
/// collision count, when there is one), in Kubernetes' safe alphabet:
/// what releases before Deployments were documents named ReplicaSets by.
fn model_hash(template: &v1::PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&template.encode_to_vec());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    out
}

impl Reconciler for DeploymentController {
    const NAME: &'static str = "deployment";
    const KIND: Kind = Kind::Deployment;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Deployment, Kind::ReplicaSet]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Deployment => ObjectKey::of(object).into_iter().collect(),
            Kind::ReplicaSet => controller_of(object, Kind::Deployment)
                .map(|o| ObjectKey::new(Kind::Deployment, &event.namespace, &o.name))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(object) = self
            .ctx
            .store
            .get(Kind::Deployment, &key.namespace, &key.name)?
        else {
            return Ok(Action::Done);
        };
        let Some(Body::Generic(deployment)) = &object.kind else {
            return Ok(Action::Done);
        };
        let full_spec = match DeploymentSpec::read(deployment) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(deployment = %key.name, namespace = %key.namespace, error = %e, "cannot act on Deployment");
                return Ok(Action::Done);
            }
        };
        let spec = &full_spec.fields;
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let uid = object.meta().uid.clone();
        // Its ReplicaSets from the owner index: a reconcile costs what this
        // Deployment has, not every ReplicaSet of the namespace.
        let dependents = self.ctx.store.dependents_of(&uid);
        let mut owned = owned_replicasets(dependents.iter().map(|o| &**o), &uid);
        let wanted = comparable_template(&full_spec.template);
        let max_revision = owned.iter().map(OwnedSet::revision).max().unwrap_or(0);
        let mut wanted_model = None;
        let new_index = owned
            .iter()
            .position(|rs| has_template(rs, &wanted, &mut wanted_model));
        let status: v1::DeploymentStatus = workload_spec::read_status(deployment);

        // Paused, or being deleted (its ReplicaSets are then the garbage
        // collector's): status only.
        if spec.paused || is_being_deleted(object.meta()) {
            self.sync_status(&object, (deployment, &status), spec, &owned, new_index)
                .await?;
            return Ok(Action::Done);
        }

        let annotations = object.meta().annotations.clone();
        let new_rs = match new_index {
            Some(i) => {
                let mut rs = owned[i].clone();
                // Rolling back to an older template makes it the newest.
                let rolled_back = rs.revision() < max_revision;
                if rolled_back {
                    set_revision(&mut rs, max_revision + 1);
                }
                let copied = copy_annotations(&annotations, &mut rs);
                if rolled_back || copied {
                    owned[i] = self.write_replicaset(rs.object).await?;
                }
                owned[i].clone()
            }
            None => {
                let hash = template_hash(&full_spec.template, status.collision_count);
                let mut rs = new_replicaset(&object, &full_spec, &hash, max_revision + 1);
                copy_annotations(&annotations, &mut rs);
                let name = rs.name().to_owned();
                let made = self
                    .ctx
                    .writer
                    .create_from_template(rs.object.into_object())
                    .await;
                let rs = match made {
                    Ok(created) => OwnedSet::read(&created)
                        .ok_or(ReconcileError::WrongKind { kind: "ReplicaSet" })?,
                    Err(e) if e.is_already_exists() => {
                        let found = self
                            .ctx
                            .store
                            .get(Kind::ReplicaSet, &key.namespace, &name)?;
                        match found.as_deref().and_then(OwnedSet::read) {
                            // Its own (an index not caught up yet), or an
                            // orphan of its template that its selector
                            // selects (the Deployment deleted with
                            // `--cascade=orphan` and made again): adopted,
                            // as Kubernetes' controller claims it.
                            Some(found)
                                if has_template(&found, &wanted, &mut wanted_model)
                                    && claimable(&object, &found, spec) =>
                            {
                                self.adopt(&object, found).await?
                            }
                            // Another template's ReplicaSet has the name:
                            // the status counts the collision, and the
                            // next look uses another name, as Kubernetes'
                            // collisionCount does.
                            _ => {
                                let mut bumped = status.clone();
                                bumped.collision_count =
                                    Some(bumped.collision_count.unwrap_or(0) + 1);
                                let written = workload_spec::with_status(deployment, &bumped);
                                self.ctx.writer.update_status(written.into_object()).await?;
                                return Ok(Action::RequeueAfter(std::time::Duration::from_millis(
                                    100,
                                )));
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                owned.push(rs.clone());
                rs
            }
        };
        let new_name = new_rs.name().to_owned();
        let (new_rs, olds): (Vec<_>, Vec<_>) =
            owned.into_iter().partition(|rs| rs.name() == new_name);
        let mut new_rs = new_rs.into_iter().next().unwrap_or_default();
        let mut olds = olds;

        let strategy = spec.strategy.clone().unwrap_or_default();
        if strategy.r#type == "Recreate" {
            let mut waiting = false;
            for old in &mut olds {
                if old.replicas > 0 {
                    *old = self.scale(&object, old, 0).await?;
                    waiting = true;
                } else if old.status.replicas > 0 {
                    waiting = true;
                }
            }
            if !waiting && new_rs.replicas != replicas {
                new_rs = self.scale(&object, &new_rs, replicas).await?;
            }
        } else {
            let rolling = strategy.rolling_update.unwrap_or_default();
            let mut surge = resolve(&rolling.max_surge, replicas, true);
            let mut unavailable = resolve(&rolling.max_unavailable, replicas, false);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            surge = surge.max(0);
            // Scale the new ReplicaSet up, within the surge.
            let total: i32 = new_rs.replicas + olds.iter().map(|o| o.replicas).sum::<i32>();
            let current = new_rs.replicas;
            let target = if current > replicas {
                replicas
            } else if current < replicas {
                let room = replicas + surge - total;
                if room > 0 {
                    (current + room).min(replicas)
                } else {
                    current
                }
            } else {
                current
            };
            if target != current {
                new_rs = self.scale(&object, &new_rs, target).await?;
            }
            // Scale old ReplicaSets down, never below replicas - maxUnavailable
            // available pods. Unhealthy old pods go first.
            let min_available = replicas - unavailable;
            let all_pods = new_rs.replicas + olds.iter().map(|o| o.replicas).sum::<i32>();
            let new_unavailable = (new_rs.replicas - available(&new_rs)).max(0);
            let mut budget = all_pods - min_available - new_unavailable;
            let mut reduce = vec![0i32; olds.len()];
            for (i, old) in olds.iter().enumerate() {
                if budget <= 0 {
                    break;
                }
                let unhealthy = (old.replicas - available(old)).max(0);
                let take = unhealthy.min(budget);
                reduce[i] += take;
                budget -= take;
            }
            let available_now: i32 = available(&new_rs) + olds.iter().map(available).sum::<i32>();
            let mut removable = available_now - min_available;
            for (i, old) in olds.iter().enumerate() {
                if removable <= 0 {
                    break;
                }
                let left = old.replicas - reduce[i];
                let take = left.min(removable).max(0);
                reduce[i] += take;
                removable -= take;
            }
            tracing::debug!(
                deployment = %key.name,
                new_spec = new_rs.replicas,
                new_available = available(&new_rs),
                olds = ?olds.iter().map(|o| (o.replicas, available(o))).collect::<Vec<_>>(),
                ?reduce,
                "rolling update step"
            );
            for (i, old) in olds.iter_mut().enumerate() {
                if reduce[i] > 0 {
                    let target = (old.replicas - reduce[i]).max(0);
                    *old = self.scale(&object, old, target).await?;
                }
            }
        }

        // Keep at most revisionHistoryLimit empty old ReplicaSets.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&OwnedSet> = olds
            .iter()
            .filter(|rs| rs.replicas == 0 && rs.status.replicas == 0)
            .collect();
        if empty.len() > limit {
            for rs in &empty[..empty.len() - limit] {
                match self
                    .ctx
                    .writer
                    .delete(Kind::ReplicaSet, &key.namespace, rs.name(), "")
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let object = self.record_revision(object, new_rs.revision()).await?;
        let Some(Body::Generic(deployment)) = &object.kind else {
            return Ok(Action::Done);
        };
        let mut everything = olds;
        everything.push(new_rs);
        let new_index = everything.len() - 1;
        let requeue = self
            .sync_status(
                &object,
                (deployment, &status),
                spec,
                &everything,
                Some(new_index),
            )
            .await?;
        Ok(match requeue {
            Some(after) => Action::RequeueAfter(after + std::time::Duration::from_millis(100)),
            None => Action::Done,
        })
    }
}

impl DeploymentController {
    /// Puts the newest ReplicaSet's revision on the Deployment, as
    /// Kubernetes does (`kubectl rollout undo` keeps it when it restores an
    /// older revision's annotations); the Deployment as stored after.
    async fn record_revision(
        &self,
        object: Arc<Object>,
        revision: u64,
    ) -> Result<Arc<Object>, ReconcileError> {
        let revision = revision.to_string();
        if object.meta().annotations.get(REVISION_ANNOTATION) == Some(&revision) {
            return Ok(object);
        }
        let mut updated = Object::clone(&object);
        if let Ok(meta) = updated.meta_mut() {
            meta.annotations
                .insert(REVISION_ANNOTATION.to_owned(), revision);
        }
        let written = self.ctx.writer.update(updated).await?;
        Ok(Arc::new(written))
    }

    /// `set` as `deployment`'s: controlled by it already, or made so.
    async fn adopt(
        &self,
        deployment: &Object,
        mut set: OwnedSet,
    ) -> Result<OwnedSet, ReconcileError> {
        let meta = set.object.metadata.get_or_insert_with(Default::default);
        if owners_controller(meta).is_some() {
            return Ok(set);
        }
        meta.owner_references
            .extend(controller_reference(deployment));
        self.write_replicaset(set.object).await
    }

    async fn write_replicaset(&self, rs: v1::GenericObject) -> Result<OwnedSet, ReconcileError> {
        let written = self.ctx.writer.update(rs.into_object()).await?;
        OwnedSet::read(&written).ok_or(ReconcileError::WrongKind { kind: "ReplicaSet" })
    }

    /// Sets the replicas of `rs`, a ReplicaSet of `deployment`, and says
    /// so in an Event on the Deployment.
    async fn scale(
        &self,
        deployment: &Object,
        rs: &OwnedSet,
        replicas: i32,
    ) -> Result<OwnedSet, ReconcileError> {
        let from = rs.replicas;
        let scaled = self
            .write_replicaset(with_replicas(&rs.object, replicas)?)
            .await?;
        if from != replicas {
            let direction = if replicas > from { "up" } else { "down" };
            let message = format!(
                "Scaled {direction} replica set {} from {from} to {replicas}",
                scaled.name()
            );
            self.ctx.events.for_component(COMPONENT).normal(
                deployment,
                "ScalingReplicaSet",
                message,
            );
        }
        Ok(scaled)
    }

    /// Writes the Deployment's status (`old`, as read, is what it has);
    /// returns when to look again for the progress deadline, while a
    /// rollout is under way.
    async fn sync_status(
        &self,
        object: &Object,
        (deployment, old): (&v1::GenericObject, &v1::DeploymentStatus),
        spec: &v1::DeploymentSpec,
        sets: &[OwnedSet],
        new_index: Option<usize>,
    ) -> Result<Option<std::time::Duration>, ReconcileError> {
        let desired = spec.replicas.unwrap_or(1).max(0);
        let replicas: i32 = sets.iter().map(|rs| rs.status.replicas).sum();
        let ready: i32 = sets.iter().map(|rs| rs.status.ready_replicas).sum();
        let available_total: i32 = sets.iter().map(available).sum();
        let updated = new_index
            .and_then(|i| sets.get(i))
            .map(|rs| rs.status.replicas)
            .unwrap_or(0);
        let unavailable_allowed = {
            let rolling = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.clone())
                .unwrap_or_default();
            resolve(&rolling.max_unavailable, desired, false)
        };
        let complete = updated == desired && replicas == desired && available_total == desired;
        let progressed = old.observed_generation != object.meta().generation
            || old.updated_replicas != updated
            || old.available_replicas != available_total
            || old.replicas != replicas;
        let deadline = std::time::Duration::from_secs(
            spec.progress_deadline_seconds.unwrap_or(600).max(0) as u64,
        );
        let rs_name = new_index
            .and_then(|i| sets.get(i))
            .map(|rs| rs.name().to_owned())
            .unwrap_or_default();
        let (progressing, requeue) = progress(old, complete, progressed, deadline, &rs_name);
        let conditions = vec![
            condition(
                old,
                "Available",
                available_total >= desired - unavailable_allowed,
                if available_total >= desired - unavailable_allowed {
                    (
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    )
                } else {
                    (
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                },
            ),
            progressing,
        ];
        let status = v1::DeploymentStatus {
            observed_generation: object.meta().generation,
            replicas,
            updated_replicas: updated,
            ready_replicas: ready,
            available_replicas: available_total,
            unavailable_replicas: (desired - available_total).max(0),
            conditions,
            collision_count: old.collision_count,
        };
        if *old != status {
            let written = workload_spec::with_status(deployment, &status);
            self.ctx.writer.update_status(written.into_object()).await?;
        }
        Ok(requeue)
    }
}

/// The Progressing condition: True while the rollout moves (its update time
/// refreshed on every step), False with ProgressDeadlineExceeded once it has
/// not moved for `deadline`; and how long until that deadline.
fn progress(
    old: &v1::DeploymentStatus,
    complete: bool,
    progressed: bool,
    deadline: std::time::Duration,
    rs_name: &str,
) -> (v1::DeploymentCondition, Option<std::time::Duration>) {
    let previous = old.conditions.iter().find(|c| c.r#type == "Progressing");
    let now = std::time::SystemTime::now();
    let fresh = |status: &str, reason: &str, message: String| {
        let stamp = now_rfc3339();
        v1::DeploymentCondition {
            r#type: "Progressing".into(),
            status: status.into(),
            last_update_time: stamp.clone(),
            last_transition_time: match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => stamp,
            },
            reason: reason.into(),
            message,
        }
    };
    if complete {
        let message = format!("ReplicaSet \"{rs_name}\" has successfully progressed.");
        let done = condition(
            old,
            "Progressing",
            true,
            ("NewReplicaSetAvailable", &message),
        );
        return (done, None);
    }
    let message = format!("ReplicaSet \"{rs_name}\" is progressing.");
    let Some(previous) = previous.filter(|_| !progressed) else {
        return (fresh("True", "ReplicaSetUpdated", message), Some(deadline));
    };
    if previous.reason == "ProgressDeadlineExceeded" {
        return (previous.clone(), None);
    }
    let since = humantime::parse_rfc3339_weak(&previous.last_update_time).unwrap_or(now);
    let stalled = now.duration_since(since).unwrap_or_default();
    if stalled >= deadline {
        let message = format!("ReplicaSet \"{rs_name}\" has timed out progressing.");
        return (fresh("False", "ProgressDeadlineExceeded", message), None);
    }
    (previous.clone(), Some(deadline - stalled))
}

fn condition(
    old: &v1::DeploymentStatus,
    kind: &str,
    ok: bool,
    (reason, message): (&str, &str),
) -> v1::DeploymentCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old.conditions.iter().find(|c| c.r#type == kind);
    let unchanged = previous.is_some_and(|c| c.status == status && c.reason == reason);
    match previous {
        Some(c) if unchanged => c.clone(),
        _ => {
            let now = now_rfc3339();
            let transitioned = previous.is_none_or(|c| c.status != status);
            v1::DeploymentCondition {
                r#type: kind.to_owned(),
                status: status.to_owned(),
                last_update_time: now.clone(),
                last_transition_time: if transitioned {
                    now
                } else {
                    previous
                        .map(|c| c.last_transition_time.clone())
                        .unwrap_or(now)
                },
                reason: reason.to_owned(),
                message: message.to_owned(),
            }
        }
    }
}

/// Available pods of a ReplicaSet, counting none beyond its spec: a status
/// written before the last scale-down still counts pods that are being
/// deleted, and trusting it would let a rollout dip below its minimum.
fn available(rs: &OwnedSet) -> i32 {
    rs.status.available_replicas.min(rs.replicas)
}

/// The ReplicaSets a Deployment (by uid) controls, oldest revision first.
pub fn owned_replicasets<O: std::borrow::Borrow<Object>>(
    objects: impl IntoIterator<Item = O>,
    deployment_uid: &str,
) -> Vec<OwnedSet> {
    let mut owned: Vec<OwnedSet> = objects
        .into_iter()
        .filter_map(|o| {
            let o = o.borrow();
            let ours = controller_of(o, Kind::Deployment).is_some_and(|r| r.uid == deployment_uid);
            if ours {
                OwnedSet::read(o)
            } else {
                None
            }
        })
        .collect();
    owned.sort_by_key(OwnedSet::revision);
    owned
}

/// Copies `annotations` of a Deployment, but for those [`NOT_COPIED`], to
/// its ReplicaSet `rs`, keeping the ones `rs` has of its own; whether any
/// changed.
fn copy_annotations(annotations: &BTreeMap<String, String>, rs: &mut OwnedSet) -> bool {
    let held = rs.annotations_mut();
    let mut changed = false;
    for (key, value) in annotations {
        if NOT_COPIED.contains(&key.as_str()) || held.get(key) == Some(value) {
            continue;
        }
        held.insert(key.clone(), value.clone());
        changed = true;
    }
    changed
}

fn set_revision(rs: &mut OwnedSet, revision: u64) {
    rs.annotations_mut()
        .insert(REVISION_ANNOTATION.to_owned(), revision.to_string());
}

/// A count or percentage of `replicas`; percentages round up for surge and
/// down for unavailability, as in Kubernetes.
pub fn resolve(value: &str, replicas: i32, round_up: bool) -> i32 {
    if let Some(percent) = value.strip_suffix('%') {
        let p: i64 = percent.parse().unwrap_or(0);
        let scaled = p * replicas as i64;
        let v = if round_up {
            (scaled + 99) / 100
        } else {
            scaled / 100
        };
        v as i32
    } else {
        value.parse().unwrap_or(0)
    }
}

/// The ReplicaSet of `deployment`'s template (`spec`) named by `hash`, at
/// revision `revision` and no replicas (the rollout scales it): the
/// template as stored, every field of it, with the pod-template-hash label
/// in its labels and selector.
fn new_replicaset(
    deployment: &Object,
    spec: &DeploymentSpec,
    hash: &str,
    revision: u64,
) -> OwnedSet {
    let meta = deployment.meta();
    let mut template = spec.template.clone();
    let template_meta = template.as_object_mut().map(|t| {
        t.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
    });
    let mut labels = BTreeMap::new();
    if let Some(template_meta) = template_meta {
        if !template_meta.is_object() {
            *template_meta = Value::Object(Map::new());
        }
        let held = &mut template_meta["labels"];
        if !held.is_object() {
            *held = Value::Object(Map::new());
        }
        held[TEMPLATE_HASH_LABEL] = Value::from(hash);
        labels = serde_json::from_value(held.clone()).unwrap_or_default();
    }
    let mut selector = spec.fields.selector.clone().unwrap_or_default();
    selector
        .match_labels
        .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut content = serde_json::json!({
        "spec": {
            // Starts empty; the rollout scales it.
            "replicas": 0,
            "selector": selector,
            "template": &template,
        }
    });
    if spec.fields.min_ready_seconds != 0 {
        content["spec"]["minReadySeconds"] = Value::from(spec.fields.min_ready_seconds);
    }
    let metadata = v1::ObjectMeta {
        name: format!("{}-{hash}", meta.name),
        namespace: meta.namespace.clone(),
        labels,
        annotations: [(REVISION_ANNOTATION.to_owned(), revision.to_string())].into(),
        owner_references: controller_reference(deployment).into_iter().collect(),
        ..Default::default()
    };
    let object = generic::document("apps/v1", "ReplicaSet", Some(metadata), content);
    OwnedSet {
        object,
        replicas: 0,
        status: Default::default(),
        comparable: comparable_template(&template),
        template,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_kubernetes() {
        assert_eq!(resolve("25%", 3, true), 1);
        assert_eq!(resolve("25%", 3, false), 0);
        assert_eq!(resolve("25%", 10, true), 3);
        assert_eq!(resolve("25%", 10, false), 2);
        assert_eq!(resolve("2", 10, false), 2);
        assert_eq!(resolve("", 10, false), 0);
    }

    #[test]
    fn a_template_is_the_same_without_its_hash_label_and_with_empty_defaults() {
        // As an earlier release stored it (its protobuf model's JSON).
        let earlier = serde_json::json!({
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "img:1"}], "volumes": []},
        });
        // As this release stores it, and as its ReplicaSet holds it.
        let now = serde_json::json!({
            "metadata": {"labels": {"app": "web", TEMPLATE_HASH_LABEL: "abc"}},
            "spec": {"containers": [{"name": "c", "image": "img:1", "resources": {}}],
                     "securityContext": {}},
        });
        assert_eq!(comparable_template(&earlier), comparable_template(&now));
        let mut other = now.clone();
        other["spec"]["containers"][0]["image"] = "img:2".into();
        assert_ne!(comparable_template(&earlier), comparable_template(&other));
        // false, 0 and "" are values.
        let mut unmounted = now.clone();
        unmounted["spec"]["automountServiceAccountToken"] = false.into();
        assert_ne!(comparable_template(&now), comparable_template(&unmounted));
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use serde_json::json;
    use std::sync::Arc;

    fn deployment(image: &str, strategy: &str) -> String {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  strategy: {{type: {strategy}}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, image: "{image}"}}]}}
"#
        )
    }

    fn setup(strategy: &str) -> (Arc<RecordingObjects>, DeploymentController, Object) {
        let objects = RecordingObjects::new();
        let d = objects
            .seed_yaml(&deployment("busybox:1", strategy))
            .remove(0);
        let controller = DeploymentController {
            ctx: context(&objects),
        };
        (objects, controller, d)
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Deployment, "default", "web")
    }

    /// The owned ReplicaSets as (image, spec.replicas, revision), oldest first.
    fn replicasets(objects: &RecordingObjects) -> Vec<(String, i32, u64)> {
        replicaset_objects(objects)
            .iter()
            .map(|rs| (image_of(rs), rs.replicas, rs.revision()))
            .collect()
    }

    /// The image of the first container of a ReplicaSet's template.
    fn image_of(rs: &OwnedSet) -> String {
        let image = rs.template.pointer("/spec/containers/0/image");
        image.and_then(Value::as_str).unwrap_or_default().to_owned()
    }

    /// Makes every pod of a ReplicaSet ready and available, as the
    /// ReplicaSet controller would report it.
    fn report_available(objects: &RecordingObjects, image: &str) {
        for rs in replicaset_objects(objects) {
            if image_of(&rs) != image {
                continue;
            }
            let n = rs.replicas;
            let status = v1::ReplicaSetStatus {
                replicas: n,
                ready_replicas: n,
                available_replicas: n,
                ..Default::default()
            };
            let written = workload_spec::with_status(&rs.object, &status);
            objects
                .write(WriteOp::UpdateStatus, written.into_object())
                .unwrap();
        }
    }

    /// Writes `d` (the Deployment in its protobuf model) as its document,
    /// defaulted as the writer defaults every write.
    fn write_deployment(objects: &RecordingObjects, d: v1::Deployment) {
        let mut document = legacy_bodies::to_document(d.into_object());
        skiff_objects::defaults::apply_defaults(&mut document);
        objects.write(WriteOp::Update, document).unwrap();
    }

    fn change_image(objects: &RecordingObjects, image: &str) {
        let mut d = stored_deployment(objects);
        let spec = d.spec.as_mut().unwrap();
        spec.template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = image.into();
        write_deployment(objects, d);
    }

    #[tokio::test]
    async fn a_new_deployment_gets_one_owned_replicaset_at_full_scale() {
        let (objects, controller, d) = setup("RollingUpdate");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(replicasets(&objects), [("busybox:1".to_owned(), 3, 1)]);
        let rs = objects.objects(Kind::ReplicaSet).remove(0);
        assert_eq!(
            controller_of(&rs, Kind::Deployment).map(|o| o.uid.clone()),
            Some(d.meta().uid.clone())
        );
        let events = objects.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "ScalingReplicaSet");
        let scaled = format!("Scaled up replica set {} from 0 to 3", rs.meta().name);
        assert_eq!(events[0].message, scaled);
        assert_eq!(events[0].involved.kind, "Deployment");
        assert_eq!(events[0].involved.uid, d.meta().uid);
        assert_eq!(events[0].source.component, "deployment-controller");
        // Nothing new on a second look.
        objects.clear_writes();
        controller.reconcile(&key()).await.unwrap();
        assert!(objects.writes().iter().all(|w| w.op != WriteOp::Create));
        assert_eq!(objects.events().len(), 1, "no scaling, no Event");
    }

    #[tokio::test]
    async fn its_replicaset_and_pods_template_keep_fields_the_model_lacks() {
        let objects = RecordingObjects::new();
        let yaml = deployment("busybox:1", "RollingUpdate").replace(
            "    spec: {containers: [{name: c, image: \"busybox:1\"}]}",
            "    spec:\n      containers: [{name: c, image: \"busybox:1\"}]\n      topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]",
        );
        objects.seed_yaml(&yaml);
        let controller = DeploymentController {
            ctx: context(&objects),
        };
        controller.reconcile(&key()).await.unwrap();
        let sets = replicaset_objects(&objects);
        assert_eq!(sets.len(), 1);
        let spread = sets[0]
            .template
            .pointer("/spec/topologySpreadConstraints/0/topologyKey");
        assert_eq!(spread, Some(&Value::from("zone")));
        let hash = sets[0]
            .template
            .pointer("/metadata/labels/pod-template-hash");
        let name = format!("web-{}", hash.and_then(Value::as_str).unwrap());
        assert_eq!(sets[0].name(), name);
        // Level-triggered: the same template, no other ReplicaSet.
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(replicaset_objects(&objects).len(), 1);
    }

    #[tokio::test]
    async fn a_replicaset_an_earlier_release_stored_stays_the_templates_after_a_reapply() {
        // Applied again since: with what the model's JSON leaves out
        // (hostNetwork: false), and this release's defaults.
        let objects = RecordingObjects::new();
        let yaml = deployment("busybox:1", "RollingUpdate").replace(
            "    spec: {containers: [{name: c, image: \"busybox:1\"}]}",
            "    spec:\n      hostNetwork: false\n      containers:\n      - name: c\n        image: \"busybox:1\"",
        );
        let d = objects.seed_yaml(&yaml).remove(0);
        let controller = DeploymentController {
            ctx: context(&objects),
        };
        // The ReplicaSet as an earlier release made it: its protobuf
        // model's template (no securityContext: {}, no resources: {}),
        // named by that release's hash, fully rolled out.
        let mut template = stored_deployment(&objects).spec.unwrap().template.unwrap();
        let pod = template.spec.as_mut().unwrap();
        pod.security_context = None;
        pod.containers[0].resources = None;
        let labels = &mut template
            .metadata
            .get_or_insert_with(Default::default)
            .labels;
        labels.insert(TEMPLATE_HASH_LABEL.to_owned(), "525wg85h82".to_owned());
        let earlier = v1::ReplicaSet {
            metadata: Some(v1::ObjectMeta {
                name: "web-525wg85h82".into(),
                namespace: "default".into(),
                annotations: [(REVISION_ANNOTATION.to_owned(), "1".to_owned())].into(),
                owner_references: controller_reference(&d).into_iter().collect(),
                ..Default::default()
            }),
            spec: Some(v1::ReplicaSetSpec {
                replicas: Some(3),
                template: Some(template),
                ..Default::default()
            }),
            ..Default::default()
        };
        let earlier = legacy_bodies::to_document(earlier.into_object());
        let Some(Body::Generic(document)) = &earlier.kind else {
            panic!("a document");
        };
        let held = generic::content(document)["spec"]["template"]["spec"].clone();
        assert!(held.get("hostNetwork").is_none(), "{held}");
        objects.seed(earlier);
        report_available(&objects, "busybox:1");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            replicasets(&objects),
            [("busybox:1".to_owned(), 3, 1)],
            "no new ReplicaSet, nothing rolled"
        );
        assert_eq!(replicaset_objects(&objects)[0].name(), "web-525wg85h82");
    }

    /// Sets the Deployment's template's pod spec field at `pointer` to
    /// `value`.
    fn change_template(objects: &RecordingObjects, pointer: &str, value: Value) {
        let stored = objects.get(Kind::Deployment, "default", "web").unwrap();
        let mut d = stored.map(Arc::unwrap_or_clone).expect("no Deployment");
        let Some(Body::Generic(document)) = &mut d.kind else {
            panic!("a document");
        };
        let mut content = Value::Object(generic::content(document));
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        content.pointer_mut(parent).unwrap()[field] = value;
        let Value::Object(content) = content else {
            unreachable!()
        };
        generic::set_content(document, &content);
        objects.write(WriteOp::Update, d).unwrap();
    }

    #[tokio::test]
    async fn false_zero_and_empty_valued_template_fields_are_changes_that_roll() {
        let (objects, controller, _) = setup("RollingUpdate");
        controller.reconcile(&key()).await.unwrap();
        let changes = [
            (
                "/spec/template/spec/automountServiceAccountToken",
                json!(false),
            ),
            (
                "/spec/template/spec/nodeSelector",
                json!({"node-role.kubernetes.io/worker": ""}),
            ),
            (
                "/spec/template/spec/securityContext",
                json!({"runAsUser": 0}),
            ),
            // A field the protobuf model has no place for.
            ("/spec/template/spec/hostUsers", json!(false)),
        ];
        for (i, (pointer, value)) in changes.into_iter().enumerate() {
            change_template(&objects, pointer, value);
            controller.reconcile(&key()).await.unwrap();
            assert_eq!(
                replicaset_objects(&objects).len(),
                i + 2,
                "{pointer}: a new ReplicaSet"
            );
        }
        let names: std::collections::BTreeSet<String> = replicaset_objects(&objects)
            .iter()
            .map(|rs| rs.name().to_owned())
            .collect();
        assert_eq!(names.len(), 5, "each named apart: {names:?}");
        // A quantity written another way is the same value: no rollout.
        let limits = "/spec/template/spec/containers/0/resources";
        change_template(&objects, limits, json!({"limits": {"cpu": "1"}}));
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(replicaset_objects(&objects).len(), 6);
        change_template(&objects, limits, json!({"limits": {"cpu": "1000m"}}));
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(replicaset_objects(&objects).len(), 6, "1 and 1000m alike");
    }

    #[test]
    fn a_template_the_model_holds_is_named_as_earlier_releases_named_it() {
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
        });
        let model: v1::PodTemplateSpec = serde_json::from_value(template.clone()).unwrap();
        // Earlier releases' hash of this template, pinned; the same with
        // the empty securityContext and resources this release's defaults
        // write (which an older master's copy goes without).
        assert_eq!(model_hash(&model, None), template_hash(&template, None));
        let mut defaulted = template.clone();
        defaulted["spec"]["securityContext"] = json!({});
        defaulted["spec"]["containers"][0]["resources"] = json!({});
        assert_eq!(
            template_hash(&defaulted, None),
            template_hash(&template, None)
        );
        let older_copy = json!({"spec": {"template": defaulted}});
        let deployment = generic::document("apps/v1", "Deployment", None, older_copy);
        let held = legacy_bodies::for_member(deployment.into_object(), 7);
        let Some(Body::Deployment(held)) = held.kind else {
            panic!("the model for a member of format 7");
        };
        let held = held.spec.unwrap().template.unwrap();
        assert_eq!(model_hash(&held, None), template_hash(&template, None));
        assert_eq!(template_hash(&template, None), "6j577cg8ms");
        assert_ne!(
            template_hash(&template, Some(1)),
            template_hash(&template, None)
        );
        // A template the model cannot hold gets Kubernetes' kind of hash.
        let mut spread = template.clone();
        spread["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1}]);
        let expected = revisions::template_hash(&comparable_template(&spread), None);
        assert_eq!(template_hash(&spread, None), expected);
    }

    #[tokio::test]
    async fn an_orphaned_replicaset_of_the_template_is_adopted_not_duplicated() {
        let (objects, controller, d) = setup("RollingUpdate");
        controller.reconcile(&key()).await.unwrap();
        let first = replicaset_objects(&objects).remove(0);
        // `kubectl delete deploy web --cascade=orphan`, then applied again.
        objects
            .remove(Kind::Deployment, "default", "web", "")
            .unwrap();
        let mut orphan = first.object.clone();
        orphan.metadata.as_mut().unwrap().owner_references.clear();
        objects
            .write(WriteOp::Update, orphan.into_object())
            .unwrap();
        let again = objects
            .seed_yaml(&deployment("busybox:1", "RollingUpdate"))
            .remove(0);
        assert_ne!(again.meta().uid, d.meta().uid);
        controller.reconcile(&key()).await.unwrap();
        let all = objects.objects(Kind::ReplicaSet);
        assert_eq!(all.len(), 1, "adopted, not duplicated");
        let owned = owned_replicasets(all, &again.meta().uid);
        assert_eq!(owned.len(), 1);
        assert_eq!(owned[0].name(), first.name());
        let status = stored_deployment(&objects).status.unwrap_or_default();
        assert_eq!(status.collision_count, None);
    }

    #[tokio::test]
    async fn a_name_taken_by_another_template_counts_a_collision_and_takes_another() {
        let (objects, controller, deployment) = setup("RollingUpdate");
        let stored = objects.get(Kind::Deployment, "default", "web").unwrap();
        let Some(Body::Generic(d)) = stored.as_deref().and_then(|o| o.kind.clone()) else {
            panic!("no Deployment");
        };
        let spec = workload_spec::spec_of(&d);
        let template = workload_spec::template_of(&spec);
        let taken = format!("web-{}", template_hash(&template, None));
        // Someone else's ReplicaSet has the name this template would get.
        objects.seed_yaml(&format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {taken}}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: other}}}}\n  template:\n    metadata: {{labels: {{app: other}}}}\n    spec: {{containers: [{{name: c, image: other}}]}}\n"
        ));
        let action = controller.reconcile(&key()).await.unwrap();
        assert!(matches!(action, Action::RequeueAfter(_)), "{action:?}");
        let status = stored_deployment(&objects).status.unwrap_or_default();
        assert_eq!(status.collision_count, Some(1));
        controller.reconcile(&key()).await.unwrap();
        let all = objects.objects(Kind::ReplicaSet);
        assert_eq!(all.len(), 2);
        let sets = owned_replicasets(all, &deployment.meta().uid);
        assert_eq!(sets.len(), 1, "the other one is not owned");
        let renamed = format!("web-{}", template_hash(&template, Some(1)));
        assert_eq!(sets[0].name(), renamed);
        assert_ne!(renamed, taken);
    }

    #[tokio::test]
    async fn a_rolling_update_surges_one_pod_and_never_drops_below_the_replicas() {
        let (objects, controller, _) = setup("RollingUpdate");
        controller.reconcile(&key()).await.unwrap();
        report_available(&objects, "busybox:1");
        change_image(&objects, "busybox:2");
        // maxSurge 25% of 3 rounds up to 1; maxUnavailable 25% rounds down
        // to 0: one new pod first, no old pod removed yet.
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            replicasets(&objects),
            [
                ("busybox:1".to_owned(), 3, 1),
                ("busybox:2".to_owned(), 1, 2)
            ]
        );
        // Once the new pod is available, one old one may go.
        report_available(&objects, "busybox:2");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            replicasets(&objects),
            [
                ("busybox:1".to_owned(), 2, 1),
                ("busybox:2".to_owned(), 1, 2)
            ]
        );
        let messages: Vec<String> = objects.events().into_iter().map(|e| e.message).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        let (up, down) = (&messages[1], &messages[2]);
        assert!(up.starts_with("Scaled up replica set web-"), "{up}");
        assert!(up.ends_with(" from 0 to 1"), "{up}");
        assert!(down.starts_with("Scaled down replica set web-"), "{down}");
        assert!(down.ends_with(" from 3 to 2"), "{down}");
    }

    #[tokio::test]
    async fn recreate_empties_the_old_replicaset_before_the_new_one_grows() {
        let (objects, controller, _) = setup("Recreate");
        controller.reconcile(&key()).await.unwrap();
        report_available(&objects, "busybox:1");
        change_image(&objects, "busybox:2");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            replicasets(&objects),
            [
                ("busybox:1".to_owned(), 0, 1),
                ("busybox:2".to_owned(), 0, 2)
            ]
        );
        // The old pods are still there: the new ReplicaSet waits.
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(replicasets(&objects)[1].1, 0);
        report_available(&objects, "busybox:1");
        controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            replicasets(&objects),
            [
                ("busybox:1".to_owned(), 0, 1),
                ("busybox:2".to_owned(), 3, 2)
            ]
        );
    }

    /// The Deployment as stored, in its protobuf model (which holds
    /// every field these tests write).
    fn stored_deployment(objects: &RecordingObjects) -> v1::Deployment {
        let stored = objects.get(Kind::Deployment, "default", "web").unwrap();
        let stored = stored.map(Arc::unwrap_or_clone).expect("no Deployment");
        match legacy_bodies::to_legacy(stored).unwrap().kind {
            Some(Body::Deployment(d)) => d,
            other => panic!("no Deployment: {other:?}"),
        }
    }

    /// The owned ReplicaSets, oldest revision first.
    fn replicaset_objects(objects: &RecordingObjects) -> Vec<OwnedSet> {
        let mut all: Vec<OwnedSet> = objects
            .objects(Kind::ReplicaSet)
            .iter()
            .filter_map(OwnedSet::read)
            .collect();
        all.sort_by_key(OwnedSet::revision);
        all
    }

    fn annotations_of(metadata: &Option<v1::ObjectMeta>) -> BTreeMap<String, String> {
        metadata.clone().unwrap_or_default().annotations
    }

    /// `kubectl set image` followed by `kubectl annotate ...
    /// kubernetes.io/change-cause=<cause>`, in one write.
    fn change_image_because(objects: &RecordingObjects, image: &str, cause: &str) {
        let mut d = stored_deployment(objects);
        let spec = d.spec.as_mut().unwrap();
        let template = spec.template.as_mut().unwrap();
        template.spec.as_mut().unwrap().containers[0].image = image.into();
        let meta = d.metadata.get_or_insert_with(Default::default);
        meta.annotations
            .insert(CHANGE_CAUSE.to_owned(), cause.to_owned());
        write_deployment(objects, d);
    }

    /// What `kubectl rollout undo --to-revision=<revision>` writes: that
    /// revision's template without its hash label, and its ReplicaSet's
    /// annotations but for the Deployment's own revision.
    fn roll_back_to(objects: &RecordingObjects, revision: u64) {
        let rs = replicaset_objects(objects)
            .into_iter()
            .find(|rs| rs.revision() == revision)
            .expect("the revision's ReplicaSet");
        let template = serde_json::from_value(rs.template_without_hash()).unwrap();
        let mut d = stored_deployment(objects);
        let mut annotations = annotations_of(&rs.object.metadata);
        annotations.remove(REVISION_ANNOTATION);
        if let Some(current) = annotations_of(&d.metadata).get(REVISION_ANNOTATION) {
            annotations.insert(REVISION_ANNOTATION.to_owned(), current.clone());
        }
        d.metadata.get_or_insert_with(Default::default).annotations = annotations;
        d.spec.as_mut().unwrap().template = Some(template);
        write_deployment(objects, d);
    }

    const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

    #[tokio::test]
    async fn replicasets_carry_the_deployments_annotations_and_it_their_revision() {
        let (objects, controller, _) = setup("RollingUpdate");
        let mut d = stored_deployment(&objects);
        let meta = d.metadata.get_or_insert_with(Default::default);
        meta.annotations
            .insert(CHANGE_CAUSE.to_owned(), "first".to_owned());
        meta.annotations
            .insert(LAST_APPLIED.to_owned(), "{}".to_owned());
        write_deployment(&objects, d);
        controller.reconcile(&key()).await.unwrap();

        let sets = replicaset_objects(&objects);
        assert_eq!(sets.len(), 1);
        let held = annotations_of(&sets[0].object.metadata);
        assert_eq!(held.get(CHANGE_CAUSE).map(String::as_str), Some("first"));
        assert_eq!(held.get(REVISION_ANNOTATION).map(String::as_str), Some("1"));
        assert!(!held.contains_key(LAST_APPLIED), "{held:?}");
        let d = stored_deployment(&objects);
        let own = annotations_of(&d.metadata);
        assert_eq!(own.get(REVISION_ANNOTATION).map(String::as_str), Some("1"));
        // The status was written after the revision, on the newer object.
        let status = d.status.unwrap_or_default();
        assert_eq!(status.observed_generation, 1);

        // A later annotation reaches the newest ReplicaSet too.
        change_image_because(&objects, "busybox:1", "second");
        controller.reconcile(&key()).await.unwrap();
        let sets = replicaset_objects(&objects);
        assert_eq!(sets.len(), 1, "the template did not change");
        let held = annotations_of(&sets[0].object.metadata);
        assert_eq!(held.get(CHANGE_CAUSE).map(String::as_str), Some("second"));
    }

    #[tokio::test]
    async fn a_rollback_makes_the_old_replicaset_the_newest_revision_with_its_change_cause() {
        let (objects, controller, _) = setup("RollingUpdate");
        change_image_because(&objects, "busybox:1", "v1");
        controller.reconcile(&key()).await.unwrap();
        report_available(&objects, "busybox:1");
        change_image_because(&objects, "busybox:2", "v2");
        controller.reconcile(&key()).await.unwrap();
        let causes = |objects: &RecordingObjects| -> Vec<(String, u64, String)> {
            replicaset_objects(objects)
                .iter()
                .map(|rs| {
                    let cause = annotations_of(&rs.object.metadata).remove(CHANGE_CAUSE);
                    (image_of(rs), rs.revision(), cause.unwrap_or_default())
                })
                .collect()
        };
        assert_eq!(
            causes(&objects),
            [
                ("busybox:1".to_owned(), 1, "v1".to_owned()),
                ("busybox:2".to_owned(), 2, "v2".to_owned())
            ]
        );
        let revision = |objects: &RecordingObjects| {
            annotations_of(&stored_deployment(objects).metadata).remove(REVISION_ANNOTATION)
        };
        assert_eq!(revision(&objects).as_deref(), Some("2"));

        roll_back_to(&objects, 1);
        controller.reconcile(&key()).await.unwrap();
        // No new ReplicaSet: the first one is revision 3 now.
        assert_eq!(
            causes(&objects),
            [
                ("busybox:2".to_owned(), 2, "v2".to_owned()),
                ("busybox:1".to_owned(), 3, "v1".to_owned())
            ]
        );
        assert_eq!(revision(&objects).as_deref(), Some("3"));
        let d = stored_deployment(&objects);
        let cause = annotations_of(&d.metadata).remove(CHANGE_CAUSE);
        assert_eq!(cause.as_deref(), Some("v1"));
        let template = d.spec.unwrap_or_default().template.unwrap_or_default();
        let containers = template.spec.unwrap_or_default().containers;
        assert_eq!(containers[0].image, "busybox:1");
    }

    #[tokio::test]
    async fn a_finished_rollout_reports_what_kubectl_rollout_status_and_wait_read() {
        let (objects, controller, _) = setup("RollingUpdate");
        controller.reconcile(&key()).await.unwrap();
        report_available(&objects, "busybox:1");
        controller.reconcile(&key()).await.unwrap();
        let d = stored_deployment(&objects);
        let generation = d.metadata.clone().unwrap_or_default().generation;
        let status = d.status.unwrap_or_default();
        assert_eq!(status.observed_generation, generation);
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.available_replicas
            ),
            (3, 3, 3)
        );
        let rs_name = replicaset_objects(&objects)[0].name().to_owned();
        let conditions: Vec<[&str; 4]> = status
            .conditions
            .iter()
            .map(|c| [&c.r#type, &c.status, &c.reason, &c.message].map(String::as_str))
            .collect();
        let progressed = format!("ReplicaSet \"{rs_name}\" has successfully progressed.");
        assert_eq!(
            conditions,
            [
                [
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                ],
                [
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    progressed.as_str(),
                ],
            ]
        );
    }
}
