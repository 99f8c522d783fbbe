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
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::now_rfc3339;
use skiff_objects::owners::{controller_of, controller_reference};
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
        let Some(Body::Deployment(deployment)) = &object.kind else {
            return Ok(Action::Done);
        };
        let spec = deployment.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let uid = object.meta().uid.clone();
        // Its ReplicaSets from the owner index: a reconcile costs what this
        // Deployment has, not every ReplicaSet of the namespace.
        let dependents = self.ctx.store.dependents_of(&uid);
        let mut owned = owned_replicasets(dependents.iter().map(|o| &**o), &uid);
        let hash = template_hash(spec.template.as_deref());
        let max_revision = owned.iter().map(revision_of).max().unwrap_or(0);
        let new_index = owned
            .iter()
            .position(|rs| hash_of(rs) == Some(hash.as_str()));

        // Paused, or being deleted (its ReplicaSets are then the garbage
        // collector's): status only.
        if spec.paused || is_being_deleted(object.meta()) {
            self.sync_status(&object, deployment, &owned, new_index)
                .await?;
            return Ok(Action::Done);
        }

        let annotations = object.meta().annotations.clone();
        let new_rs = match new_index {
            Some(i) => {
                let mut rs = owned[i].clone();
                // Rolling back to an older template makes it the newest.
                let rolled_back = revision_of(&rs) < max_revision;
                if rolled_back {
                    set_revision(&mut rs, max_revision + 1);
                }
                let copied = copy_annotations(&annotations, &mut rs);
                if rolled_back || copied {
                    owned[i] = self.write_replicaset(rs).await?;
                }
                owned[i].clone()
            }
            None => {
                let mut rs = new_replicaset(&object, &spec, &hash, max_revision + 1);
                copy_annotations(&annotations, &mut rs);
                let created = self.ctx.writer.create(rs.into_object()).await?;
                let Some(Body::ReplicaSet(rs)) = created.kind else {
                    return Ok(Action::Done);
                };
                owned.push(rs.clone());
                rs
            }
        };
        let new_name = name_of(&new_rs);
        let (new_rs, olds): (Vec<_>, Vec<_>) =
            owned.into_iter().partition(|rs| name_of(rs) == new_name);
        let mut new_rs = new_rs.into_iter().next().unwrap_or_default();
        let mut olds = olds;

        let strategy = spec.strategy.clone().unwrap_or_default();
        if strategy.r#type == "Recreate" {
            let mut waiting = false;
            for old in &mut olds {
                if spec_replicas(old) > 0 {
                    *old = self.scale(&object, old.clone(), 0).await?;
                    waiting = true;
                } else if old.status.as_ref().is_some_and(|s| s.replicas > 0) {
                    waiting = true;
                }
            }
            if !waiting && spec_replicas(&new_rs) != replicas {
                new_rs = self.scale(&object, new_rs, replicas).await?;
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
            let total: i32 = spec_replicas(&new_rs) + olds.iter().map(spec_replicas).sum::<i32>();
            let current = spec_replicas(&new_rs);
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
                new_rs = self.scale(&object, new_rs, target).await?;
            }
            // Scale old ReplicaSets down, never below replicas - maxUnavailable
            // available pods. Unhealthy old pods go first.
            let min_available = replicas - unavailable;
            let all_pods = spec_replicas(&new_rs) + olds.iter().map(spec_replicas).sum::<i32>();
            let new_unavailable = (spec_replicas(&new_rs) - available(&new_rs)).max(0);
            let mut budget = all_pods - min_available - new_unavailable;
            let mut reduce = vec![0i32; olds.len()];
            for (i, old) in olds.iter().enumerate() {
                if budget <= 0 {
                    break;
                }
                let unhealthy = (spec_replicas(old) - available(old)).max(0);
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
                let left = spec_replicas(old) - reduce[i];
                let take = left.min(removable).max(0);
                reduce[i] += take;
                removable -= take;
            }
            tracing::debug!(
                deployment = %key.name,
                new_spec = spec_replicas(&new_rs),
                new_available = available(&new_rs),
                olds = ?olds.iter().map(|o| (spec_replicas(o), available(o))).collect::<Vec<_>>(),
                ?reduce,
                "rolling update step"
            );
            for (i, old) in olds.iter_mut().enumerate() {
                if reduce[i] > 0 {
                    let target = (spec_replicas(old) - reduce[i]).max(0);
                    *old = self.scale(&object, old.clone(), target).await?;
                }
            }
        }

        // Keep at most revisionHistoryLimit empty old ReplicaSets.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&v1::ReplicaSet> = olds
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .collect();
        if empty.len() > limit {
            for rs in &empty[..empty.len() - limit] {
                let name = name_of(rs);
                match self
                    .ctx
                    .writer
                    .delete(Kind::ReplicaSet, &key.namespace, &name, "")
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let object = self.record_revision(object, revision_of(&new_rs)).await?;
        let Some(Body::Deployment(deployment)) = &object.kind else {
            return Ok(Action::Done);
        };
        let mut everything = olds;
        everything.push(new_rs);
        let new_index = everything.len() - 1;
        let requeue = self
            .sync_status(&object, deployment, &everything, Some(new_index))
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
        if let Some(Body::Deployment(d)) = updated.kind.as_mut() {
            let meta = d.metadata.get_or_insert_with(Default::default);
            meta.annotations
                .insert(REVISION_ANNOTATION.to_owned(), revision);
        }
        let written = self.ctx.writer.update(updated).await?;
        Ok(Arc::new(written))
    }

    async fn write_replicaset(&self, rs: v1::ReplicaSet) -> Result<v1::ReplicaSet, ReconcileError> {
        let written = self.ctx.writer.update(rs.into_object()).await?;
        match written.kind {
            Some(Body::ReplicaSet(rs)) => Ok(rs),
            _ => Err(ReconcileError::WrongKind { kind: "ReplicaSet" }),
        }
    }

    /// Sets the replicas of `rs`, a ReplicaSet of `deployment`, and says
    /// so in an Event on the Deployment.
    async fn scale(
        &self,
        deployment: &Object,
        mut rs: v1::ReplicaSet,
        replicas: i32,
    ) -> Result<v1::ReplicaSet, ReconcileError> {
        let from = spec_replicas(&rs);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        let scaled = self.write_replicaset(rs).await?;
        if from != replicas {
            let direction = if replicas > from { "up" } else { "down" };
            let message = format!(
                "Scaled {direction} replica set {} from {from} to {replicas}",
                name_of(&scaled)
            );
            self.ctx.events.for_component(COMPONENT).normal(
                deployment,
                "ScalingReplicaSet",
                message,
            );
        }
        Ok(scaled)
    }

    /// Writes the Deployment's status; returns when to look again for the
    /// progress deadline, while a rollout is under way.
    async fn sync_status(
        &self,
        object: &Object,
        deployment: &v1::Deployment,
        sets: &[v1::ReplicaSet],
        new_index: Option<usize>,
    ) -> Result<Option<std::time::Duration>, ReconcileError> {
        let spec = deployment.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1).max(0);
        let status_of = |rs: &v1::ReplicaSet| rs.status.clone().unwrap_or_default();
        let replicas: i32 = sets.iter().map(|rs| status_of(rs).replicas).sum();
        let ready: i32 = sets.iter().map(|rs| status_of(rs).ready_replicas).sum();
        let available_total: i32 = sets.iter().map(available).sum();
        let updated = new_index
            .and_then(|i| sets.get(i))
            .map(|rs| status_of(rs).replicas)
            .unwrap_or(0);
        let unavailable_allowed = {
            let rolling = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.clone())
                .unwrap_or_default();
            resolve(&rolling.max_unavailable, desired, false)
        };
        let old = deployment.status.clone().unwrap_or_default();
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
            .map(name_of)
            .unwrap_or_default();
        let (progressing, requeue) = progress(&old, complete, progressed, deadline, &rs_name);
        let conditions = vec![
            condition(
                &old,
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
            collision_count: None,
        };
        if deployment.status.as_ref() != Some(&status) {
            let mut d = deployment.clone();
            d.status = Some(status);
            self.ctx.writer.update_status(d.into_object()).await?;
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

fn name_of(rs: &v1::ReplicaSet) -> String {
    rs.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

fn spec_replicas(rs: &v1::ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Available pods of a ReplicaSet, counting none beyond its spec: a status
/// written before the last scale-down still counts pods that are being
/// deleted, and trusting it would let a rollout dip below its minimum.
fn available(rs: &v1::ReplicaSet) -> i32 {
    let reported = rs
        .status
        .as_ref()
        .map(|s| s.available_replicas)
        .unwrap_or(0);
    reported.min(spec_replicas(rs))
}

fn hash_of(rs: &v1::ReplicaSet) -> Option<&str> {
    rs.metadata
        .as_ref()?
        .labels
        .get(TEMPLATE_HASH_LABEL)
        .map(String::as_str)
}

/// The ReplicaSets a Deployment (by uid) controls, oldest revision first.
pub fn owned_replicasets<O: std::borrow::Borrow<Object>>(
    objects: impl IntoIterator<Item = O>,
    deployment_uid: &str,
) -> Vec<v1::ReplicaSet> {
    let mut owned: Vec<v1::ReplicaSet> = objects
        .into_iter()
        .filter_map(|o| {
            let o = o.borrow();
            let ours = controller_of(o, Kind::Deployment).is_some_and(|r| r.uid == deployment_uid);
            match &o.kind {
                Some(Body::ReplicaSet(rs)) if ours => Some(rs.clone()),
                _ => None,
            }
        })
        .collect();
    owned.sort_by_key(revision_of);
    owned
}

/// The revision number in a ReplicaSet's annotation (0 when missing).
pub fn revision_of(rs: &v1::ReplicaSet) -> u64 {
    rs.metadata
        .as_ref()
        .and_then(|m| m.annotations.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Copies `annotations` of a Deployment, but for those [`NOT_COPIED`], to
/// its ReplicaSet `rs`, keeping the ones `rs` has of its own; whether any
/// changed.
fn copy_annotations(annotations: &BTreeMap<String, String>, rs: &mut v1::ReplicaSet) -> bool {
    let held = &mut rs.metadata.get_or_insert_with(Default::default).annotations;
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

fn set_revision(rs: &mut v1::ReplicaSet, revision: u64) {
    rs.metadata
        .get_or_insert_with(Default::default)
        .annotations
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

/// A short, stable hash of a pod template, in Kubernetes' safe alphabet.
pub fn template_hash(template: Option<&v1::PodTemplateSpec>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = template.map(|t| t.encode_to_vec()).unwrap_or_default();
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    out
}

fn new_replicaset(
    deployment: &Object,
    spec: &v1::DeploymentSpec,
    hash: &str,
    revision: u64,
) -> v1::ReplicaSet {
    let meta = deployment.meta();
    let mut template = spec.template.clone().unwrap_or_default();
    let template_meta = template.metadata.get_or_insert_with(Default::default);
    template_meta
        .labels
        .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector
        .match_labels
        .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    v1::ReplicaSet {
        metadata: Some(v1::ObjectMeta {
            name: format!("{}-{hash}", meta.name),
            namespace: meta.namespace.clone(),
            labels: template_meta.labels.clone(),
            annotations: [(REVISION_ANNOTATION.to_owned(), revision.to_string())].into(),
            owner_references: controller_reference(deployment).into_iter().collect(),
            ..Default::default()
        }),
        spec: Some(v1::ReplicaSetSpec {
            // Starts empty; the rollout scales it.
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector: Some(selector),
            template: Some(template),
        }),
        ..Default::default()
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
    fn template_hash_is_stable_and_sensitive() {
        let t = v1::PodTemplateSpec {
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "a".into(),
                    image: "img:1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let h = template_hash(Some(&t));
        assert_eq!(h.len(), 10);
        assert_eq!(h, template_hash(Some(&t.clone())));
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = "img:2".into();
        assert_ne!(h, template_hash(Some(&t2)));
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
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
            .map(|rs| (image_of(rs), spec_replicas(rs), revision_of(rs)))
            .collect()
    }

    /// The image of the first container of a ReplicaSet's template.
    fn image_of(rs: &v1::ReplicaSet) -> String {
        let spec = rs.spec.clone().unwrap_or_default();
        let template = spec.template.unwrap_or_default().spec.unwrap_or_default();
        template.containers[0].image.clone()
    }

    /// Makes every pod of a ReplicaSet ready and available, as the
    /// ReplicaSet controller would report it.
    fn report_available(objects: &RecordingObjects, image: &str) {
        for o in objects.objects(Kind::ReplicaSet) {
            let Some(Body::ReplicaSet(mut rs)) = o.kind else {
                continue;
            };
            if image_of(&rs) != image {
                continue;
            }
            let n = spec_replicas(&rs);
            rs.status = Some(v1::ReplicaSetStatus {
                replicas: n,
                ready_replicas: n,
                available_replicas: n,
                ..Default::default()
            });
            objects
                .write(WriteOp::UpdateStatus, rs.into_object())
                .unwrap();
        }
    }

    fn change_image(objects: &RecordingObjects, image: &str) {
        let Some(Object {
            kind: Some(Body::Deployment(mut d)),
        }) = objects
            .get(Kind::Deployment, "default", "web")
            .unwrap()
            .map(std::sync::Arc::unwrap_or_clone)
        else {
            panic!("no Deployment")
        };
        let spec = d.spec.as_mut().unwrap();
        spec.template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = image.into();
        objects.write(WriteOp::Update, d.into_object()).unwrap();
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

    /// The Deployment as stored.
    fn stored_deployment(objects: &RecordingObjects) -> v1::Deployment {
        let stored = objects.get(Kind::Deployment, "default", "web").unwrap();
        match stored.map(Arc::unwrap_or_clone) {
            Some(Object {
                kind: Some(Body::Deployment(d)),
            }) => d,
            other => panic!("no Deployment: {other:?}"),
        }
    }

    /// The owned ReplicaSets, oldest revision first.
    fn replicaset_objects(objects: &RecordingObjects) -> Vec<v1::ReplicaSet> {
        let mut all: Vec<v1::ReplicaSet> = objects
            .objects(Kind::ReplicaSet)
            .into_iter()
            .filter_map(|o| match o.kind {
                Some(Body::ReplicaSet(rs)) => Some(rs),
                _ => None,
            })
            .collect();
        all.sort_by_key(revision_of);
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
        objects.write(WriteOp::Update, d.into_object()).unwrap();
    }

    /// What `kubectl rollout undo --to-revision=<revision>` writes: that
    /// revision's template without its hash label, and its ReplicaSet's
    /// annotations but for the Deployment's own revision.
    fn roll_back_to(objects: &RecordingObjects, revision: u64) {
        let rs = replicaset_objects(objects)
            .into_iter()
            .find(|rs| revision_of(rs) == revision)
            .expect("the revision's ReplicaSet");
        let mut template = rs.spec.unwrap_or_default().template.unwrap_or_default();
        let template_meta = template.metadata.get_or_insert_with(Default::default);
        template_meta.labels.remove(TEMPLATE_HASH_LABEL);
        let mut d = stored_deployment(objects);
        let mut annotations = annotations_of(&rs.metadata);
        annotations.remove(REVISION_ANNOTATION);
        if let Some(current) = annotations_of(&d.metadata).get(REVISION_ANNOTATION) {
            annotations.insert(REVISION_ANNOTATION.to_owned(), current.clone());
        }
        d.metadata.get_or_insert_with(Default::default).annotations = annotations;
        d.spec.as_mut().unwrap().template = Some(template);
        objects.write(WriteOp::Update, d.into_object()).unwrap();
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
        objects.write(WriteOp::Update, d.into_object()).unwrap();
        controller.reconcile(&key()).await.unwrap();

        let sets = replicaset_objects(&objects);
        assert_eq!(sets.len(), 1);
        let held = annotations_of(&sets[0].metadata);
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
        let held = annotations_of(&sets[0].metadata);
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
                    let cause = annotations_of(&rs.metadata).remove(CHANGE_CAUSE);
                    (image_of(rs), revision_of(rs), cause.unwrap_or_default())
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
        let rs_name = name_of(&replicaset_objects(&objects)[0]);
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
