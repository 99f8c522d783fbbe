//! The StatefulSet controller: members with stable identities, as
//! Kubernetes' StatefulSet controller keeps them. Member `n` is the pod
//! `<set>-<n>` (ordinals from `spec.ordinals.start`), with hostname
//! `<set>-<n>` and subdomain `serviceName`, so that the headless Service
//! gives it the DNS name `<set>-<n>.<service>.<namespace>.svc.cluster.local`,
//! and with one PersistentVolumeClaim `<claim>-<set>-<n>` per
//! `volumeClaimTemplates` entry, created before its pod and kept when the
//! pod is replaced: a replaced member has its name and its claims back.
//! What to do next is decided in [`plan`] over the typed [`spec`]:
//! OrderedReady or Parallel pod management, scale down highest ordinal
//! first, RollingUpdate (`partition`, `maxUnavailable`) or OnDelete.
//!
//! Templates are tracked as Kubernetes tracks them, as DaemonSets' are
//! ([`revisions`](crate::controllers::revisions)): ControllerRevisions
//! `<set>-<hash>`, each member labelled `controller-revision-hash:
//! <revision name>`, `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index`; `kubectl rollout undo statefulset`
//! possible. The status has Kubernetes' counts, `currentRevision`,
//! `updateRevision` and `observedGeneration`, so `kubectl rollout status
//! statefulset` follows a rollout, partitioned or not.
//!
//! `persistentVolumeClaimRetentionPolicy`: with `whenDeleted: Delete` the
//! claims are owned by the StatefulSet and go with it (the garbage
//! collector); with `whenScaled: Delete` the claims of a member removed by
//! a scale down are deleted once its pod is gone. `Retain` keeps them.
//!
//! At most one pod per identity: the name is the identity, and the store
//! holds one object per name, so a member whose pod is being deleted (its
//! node stopping it, or a node that went silent whose pods node lifecycle
//! evicted) is created again only once the old pod object is gone: its
//! node confirmed it stopped, or someone force-deleted it.
//!
//! Each pod and claim created or deleted, and each failure to, is an Event
//! on the StatefulSet (`SuccessfulCreate`, `FailedCreate`,
//! `SuccessfulDelete`, `FailedDelete`), worded as Kubernetes words them. A
//! StatefulSet being deleted is left to the garbage collector.

pub mod plan;
pub mod spec;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::pod_claims::{self, ClaimRules};
use super::replicaset::available_pods;
use super::revisions::{self, History, Revision, REVISION_HASH_LABEL};
use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::controllers::workload_spec::{unless_zero, PodTemplate};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use plan::{Member, Shape, Step, Why};
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::{IntoObject, Kind, ObjectExt};
use spec::{ordinal_of, StatefulSetSpec, StatefulSetStatus, StoredStatus};

/// The component its Events are recorded as.
const COMPONENT: &str = "statefulset-controller";
/// How soon a reconcile that left work for the next round looks again.
const NEXT_ROUND: Duration = Duration::from_millis(200);

pub struct StatefulSetController {
    ctx: Context,
}

/// The two revisions a reconcile works with.
struct Revisions {
    /// The revision the members had before the update began: its name and
    /// its template.
    current: (String, PodTemplate),
    /// The revision of the current template.
    update: (String, PodTemplate),
    history: History,
}

impl StatefulSetController {
    pub fn new(ctx: Context) -> StatefulSetController {
        StatefulSetController { ctx }
    }
}

impl Reconciler for StatefulSetController {
    const NAME: &'static str = "statefulset";
    const KIND: Kind = Kind::StatefulSet;
    const WATCHES: KindFilter = KindFilter::only(&[
        Kind::StatefulSet,
        Kind::Pod,
        Kind::ControllerRevision,
        Kind::PersistentVolumeClaim,
    ]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::StatefulSet => ObjectKey::of(object).into_iter().collect(),
            Kind::Pod | Kind::ControllerRevision | Kind::PersistentVolumeClaim => {
                controller_of(object, Kind::StatefulSet)
                    .map(|owner| ObjectKey::new(Kind::StatefulSet, &event.namespace, &owner.name))
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let found = self
            .ctx
            .store
            .get(Kind::StatefulSet, &key.namespace, &key.name)?;
        let Some(object) = found else {
            // Deleted: the garbage collector removes its pods (and its
            // claims, when they were to go with it).
            return Ok(Action::Done);
        };
        let Some(Body::Generic(set)) = &object.kind else {
            return Ok(Action::Done);
        };
        if is_being_deleted(object.meta()) {
            return Ok(Action::Done);
        }
        let spec = match StatefulSetSpec::read(set) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(statefulset = %key.name, namespace = %key.namespace, error = %e, "cannot act on StatefulSet");
                return Ok(Action::Done);
            }
        };
        let status = StatefulSetStatus::read(set);
        let Some(revisions) = self.sync_history(&object, &spec, &status).await? else {
            // Its revision's name was taken: the status counts the
            // collision, and the next look uses another name.
            return Ok(Action::RequeueAfter(NEXT_ROUND));
        };
        let now = SystemTime::now();
        let pods = self.claim_pods(&object, &spec).await?;
        let (members, _) = member_facts(&key.name, &pods, spec.min_ready_seconds, now);
        let shape = Shape {
            replicas: spec.replicas,
            start: spec.start,
            management: spec.management,
            strategy: spec.strategy.clone(),
            current_revision: revisions.current.0.clone(),
            update_revision: revisions.update.0.clone(),
        };
        let planned = plan::plan(&shape, &members);
        let mut unfinished = self
            .carry_out(&object, &spec, &revisions, &planned.steps)
            .await?;
        unfinished |= self.sync_claims(&object, &spec, &members).await?;

        // The pods as they are now (the writes above are in the store).
        let pods = pod_claims::owned_pods(&self.ctx, &object, Kind::StatefulSet);
        let (members, next_available) = member_facts(&key.name, &pods, spec.min_ready_seconds, now);
        let (current_name, update_name) = (&revisions.current.0, &revisions.update.0);
        let (counts, complete) = plan::count(&members, current_name, update_name);
        let rolling = matches!(spec.strategy, spec::UpdateStrategy::RollingUpdate { .. });
        // Kubernetes' field names and omissions (`omitempty` counts and
        // revisions left out when zero or empty; `availableReplicas` is
        // not `omitempty`).
        let (current_count, current_revision) = if rolling && complete {
            (counts.updated, update_name)
        } else {
            (counts.current, current_name)
        };
        let current = StatefulSetStatus {
            observed_generation: unless_zero(object.meta().generation),
            replicas: counts.replicas,
            ready_replicas: unless_zero(counts.ready),
            current_replicas: unless_zero(current_count),
            updated_replicas: unless_zero(counts.updated),
            available_replicas: Some(counts.available),
            current_revision: unless_zero(current_revision.clone()),
            update_revision: unless_zero(update_name.clone()),
            collision_count: status.collision_count,
            conditions: status.conditions.clone(),
        };
        if current != status {
            self.write_status(&object, &current).await?;
        }

        // Old revisions beyond the limit go, but never one a member runs
        // or the current one.
        let mut live: BTreeSet<String> = members.iter().map(|m| m.revision.clone()).collect();
        live.insert(current.current_revision.clone().unwrap_or_default());
        let live_hashes: BTreeSet<String> = revisions
            .history
            .old
            .iter()
            .filter(|r| live.contains(&r.name))
            .map(|r| r.hash.clone())
            .collect();
        for name in revisions
            .history
            .to_prune(spec.revision_history_limit, &live_hashes)
        {
            self.delete_revision(&key.namespace, &name).await?;
        }

        let mut after = next_available;
        if unfinished {
            after = Some(after.map_or(NEXT_ROUND, |a| a.min(NEXT_ROUND)));
        }
        Ok(after.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl StatefulSetController {
    /// Finds (or makes) the revision of the current template and numbers
    /// it above the others; the current and update revisions with their
    /// templates, or `None` when the new revision's name is taken by
    /// another template (the status counts the collision).
    async fn sync_history(
        &self,
        object: &Object,
        spec: &StatefulSetSpec,
        status: &StatefulSetStatus,
    ) -> Result<Option<Revisions>, ReconcileError> {
        let meta = object.meta();
        let stored = revisions::owned_revisions(&self.ctx, object, Kind::StatefulSet);
        let read = stored.values().map(Revision::read).collect();
        let data = revisions::revision_data(&spec.template);
        let history = History::sort(read, &data);
        for duplicate in &history.duplicates {
            self.delete_revision(&meta.namespace, &duplicate.name)
                .await?;
        }
        let next = history.next_revision();
        let update_name = match &history.current {
            Some(current) => {
                if current.revision < next {
                    // Back to an older template: it is the newest revision now.
                    if let Some(g) = stored.get(&current.name) {
                        let renumbered = revisions::renumbered(g, next);
                        self.ctx.writer.update(renumbered).await?;
                    }
                }
                current.name.clone()
            }
            None => {
                let hash = revisions::template_hash(&spec.template, status.collision_count);
                let labels = spec.pod.metadata.labels.clone();
                let revision = revisions::new_revision(object, &labels, &hash, next, data);
                let name = revision.meta().name.clone();
                match self.ctx.writer.create(revision).await {
                    Ok(_) => name,
                    Err(e) if e.is_already_exists() => {
                        let mut bumped = status.clone();
                        let count = status.collision_count.unwrap_or(0).saturating_add(1);
                        bumped.collision_count = Some(count);
                        self.write_status(object, &bumped).await?;
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let update = (update_name.clone(), spec.pod.clone());
        // The members' revision before this update: the status's, while
        // that revision is still kept; else there is no older one.
        let older = history.old.iter().find(|r| {
            status
                .current_revision
                .as_ref()
                .is_some_and(|c| r.name == *c)
        });
        let current = match older.map(|r| spec::revision_template(&r.data)) {
            Some(Ok(template)) => (
                status.current_revision.clone().unwrap_or_default(),
                template,
            ),
            Some(Err(e)) => {
                tracing::warn!(statefulset = %meta.name, namespace = %meta.namespace, revision = %status.current_revision.as_deref().unwrap_or(""), error = %e, "cannot read the current revision; members come back at the update revision");
                update.clone()
            }
            None => update.clone(),
        };
        Ok(Some(Revisions {
            current,
            update,
            history,
        }))
    }

    /// The StatefulSet's pods, as Kubernetes claims them
    /// ([`pod_claims`](super::pod_claims)): those it controls and still
    /// selects, and orphans it selects that are named as its members,
    /// adopted (not being deleted); those it controls but no longer selects
    /// are let go (they keep running, unowned).
    async fn claim_pods(
        &self,
        object: &Object,
        spec: &StatefulSetSpec,
    ) -> Result<Vec<StoredPod>, ReconcileError> {
        let set = &object.meta().name;
        let named = |pod: &v1::ObjectMeta| ordinal_of(set, &pod.name).is_some();
        let rules = ClaimRules {
            matches: &named,
            ..ClaimRules::selector_only()
        };
        pod_claims::claim_pods(&self.ctx, object, &spec.selector, &rules).await
    }

    /// Carries out `steps` in order, recording an Event for each; whether
    /// something is left for the next round (a pod name still taken).
    async fn carry_out(
        &self,
        object: &Object,
        spec: &StatefulSetSpec,
        revisions: &Revisions,
        steps: &[Step],
    ) -> Result<bool, ReconcileError> {
        let meta = object.meta();
        let events = self.ctx.events.for_component(COMPONENT);
        let owner = controller_reference(object);
        let mut unfinished = false;
        for step in steps {
            match step {
                Step::Create { ordinal, revision } => {
                    let pod_name = spec::pod_name(&meta.name, *ordinal);
                    self.create_claims(object, spec, *ordinal).await?;
                    let (_, template) = if *revision == revisions.update.0 {
                        &revisions.update
                    } else {
                        &revisions.current
                    };
                    let pod = spec.pod_for(
                        &meta.name,
                        &meta.namespace,
                        *ordinal,
                        template,
                        revision,
                        owner.clone(),
                    );
                    match self.ctx.writer.create_from_template(pod).await {
                        Ok(_) => {
                            let message = format!(
                                "create Pod {pod_name} in StatefulSet {} successful",
                                meta.name
                            );
                            events.normal(object, "SuccessfulCreate", message);
                        }
                        // The old pod of this name is still there (going,
                        // or someone else's): the next round sees it.
                        Err(e) if e.is_already_exists() => unfinished = true,
                        Err(e) => {
                            let message = format!(
                                "create Pod {pod_name} in StatefulSet {} failed error: {e}",
                                meta.name
                            );
                            events.warning(object, "FailedCreate", message);
                            return Err(e.into());
                        }
                    }
                }
                Step::Delete { pod, why } => {
                    let deleted = self
                        .ctx
                        .writer
                        .delete(Kind::Pod, &meta.namespace, pod, "")
                        .await;
                    match deleted {
                        Ok(_) => {
                            let message =
                                format!("delete Pod {pod} in StatefulSet {} successful", meta.name);
                            events.normal(object, "SuccessfulDelete", message);
                            if *why == Why::Finished {
                                unfinished = true;
                            }
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            let message = format!(
                                "delete Pod {pod} in StatefulSet {} failed error: {e}",
                                meta.name
                            );
                            events.warning(object, "FailedDelete", message);
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        Ok(unfinished)
    }

    /// Creates the claims member `ordinal` lacks, before its pod.
    async fn create_claims(
        &self,
        object: &Object,
        spec: &StatefulSetSpec,
        ordinal: i32,
    ) -> Result<(), ReconcileError> {
        let meta = object.meta();
        let events = self.ctx.events.for_component(COMPONENT);
        let owner = if spec.retention.delete_when_deleted {
            controller_reference(object)
        } else {
            None
        };
        let pod_name = spec::pod_name(&meta.name, ordinal);
        for template in &spec.claims {
            let name = spec::claim_name(&template.name, &meta.name, ordinal);
            let kind = Kind::PersistentVolumeClaim;
            if self.ctx.store.get(kind, &meta.namespace, &name)?.is_some() {
                continue;
            }
            let claim = spec.claim_for(
                template,
                &meta.name,
                &meta.namespace,
                ordinal,
                owner.clone(),
            );
            match self.ctx.writer.create(claim.into_object()).await {
                Ok(_) => {
                    let message = format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                        meta.name
                    );
                    events.normal(object, "SuccessfulCreate", message);
                }
                Err(e) if e.is_already_exists() => {}
                Err(e) => {
                    let message = format!(
                        "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                        meta.name
                    );
                    events.warning(object, "FailedCreate", message);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Gives every member that has a pod the claims it lacks (a claim
    /// someone deleted comes back), and, with `whenScaled: Delete`, deletes
    /// the claims of ordinals beyond the replicas whose pod is gone.
    /// Whether something is left for the next round.
    async fn sync_claims(
        &self,
        object: &Object,
        spec: &StatefulSetSpec,
        members: &[Member],
    ) -> Result<bool, ReconcileError> {
        if spec.claims.is_empty() {
            return Ok(false);
        }
        let meta = object.meta();
        let end = spec.start.saturating_add(spec.replicas);
        let in_range = |o: i32| o >= spec.start && o < end;
        for member in members.iter().filter(|m| in_range(m.ordinal)) {
            self.create_claims(object, spec, member.ordinal).await?;
        }
        if !spec.retention.delete_when_scaled {
            return Ok(false);
        }
        let with_pods: HashSet<i32> = members.iter().map(|m| m.ordinal).collect();
        let kind = Kind::PersistentVolumeClaim;
        let candidates = if spec.selector.match_labels.is_empty() {
            self.ctx.store.list(kind, Some(&meta.namespace))?.0
        } else {
            let labels = &spec.selector.match_labels;
            self.ctx.store.select(kind, &meta.namespace, labels)
        };
        let events = self.ctx.events.for_component(COMPONENT);
        for claim in candidates {
            let claim_meta = claim.meta();
            if is_being_deleted(claim_meta) {
                continue;
            }
            let ordinal = spec
                .claims
                .iter()
                .find_map(|t| spec::claim_ordinal(&t.name, &meta.name, &claim_meta.name));
            let Some(ordinal) = ordinal else { continue };
            if in_range(ordinal) || with_pods.contains(&ordinal) {
                continue;
            }
            let name = claim_meta.name.clone();
            match self
                .ctx
                .writer
                .delete(kind, &meta.namespace, &name, "")
                .await
            {
                Ok(_) => {
                    let pod_name = spec::pod_name(&meta.name, ordinal);
                    let message = format!(
                        "delete Claim {name} Pod {pod_name} in StatefulSet {} success",
                        meta.name
                    );
                    events.normal(object, "SuccessfulDelete", message);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let message = format!(
                        "delete Claim {name} in StatefulSet {} failed error: {e}",
                        meta.name
                    );
                    events.warning(object, "FailedDelete", message);
                    return Err(e.into());
                }
            }
        }
        Ok(false)
    }

    async fn delete_revision(&self, namespace: &str, name: &str) -> Result<(), ReconcileError> {
        let kind = Kind::ControllerRevision;
        match self.ctx.writer.delete(kind, namespace, name, "").await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `status` into the StatefulSet, conditional on the version
    /// read.
    async fn write_status(
        &self,
        object: &Object,
        status: &StatefulSetStatus,
    ) -> Result<(), ReconcileError> {
        if let Some(Body::Generic(set)) = &object.kind {
            let updated = status.write_into(set);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        Ok(())
    }
}

/// What the plan needs of each pod named as a member of `set` (others are
/// left out), and how long until the next Ready pod has been Ready for
/// `min_ready_seconds`.
fn member_facts(
    set: &str,
    pods: &[StoredPod],
    min_ready_seconds: i32,
    now: SystemTime,
) -> (Vec<Member>, Option<Duration>) {
    let mut next: Option<Duration> = None;
    let mut members = Vec::with_capacity(pods.len());
    for stored in pods {
        let (meta, pod) = (stored.meta(), &*stored.pod);
        let Some(ordinal) = ordinal_of(set, &meta.name) else {
            continue;
        };
        let (available, wait) = available_pods([pod], min_ready_seconds, now);
        next = match (next, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ready = pods::phase(pod) == "Running" && pods::is_ready(pod);
        members.push(Member {
            name: meta.name.clone(),
            ordinal,
            revision: meta
                .labels
                .get(REVISION_HASH_LABEL)
                .cloned()
                .unwrap_or_default(),
            terminating: is_being_deleted(meta),
            finished: pods::is_finished(pod),
            ready,
            available: ready && available > 0,
        });
    }
    (members, next)
}

#[cfg(test)]
mod reconcile_tests;
