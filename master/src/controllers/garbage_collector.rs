//! Garbage collection through ownerReferences and namespaces, with
//! Kubernetes' three propagation policies (`objects::deletion`):
//! - Background: once an owner is gone, its dependents whose every owner
//!   is gone are deleted; once a namespace is gone, everything in it is.
//! - Foreground: an owner marked with the `foregroundDeletion` finalizer
//!   has its dependents deleted (in the foreground too when they have
//!   dependents of their own; only freed when another owner still holds
//!   them); once no dependent that blocks it (`blockOwnerDeletion`) is
//!   left, the finalizer is removed and the owner goes.
//! - Orphan: an owner marked with the `orphan` finalizer is taken out of
//!   its dependents' ownerReferences, then the finalizer is removed.
//!
//! Objects of custom kinds are collected like the others (the store's
//! custom kinds, served or not, with their namespace; custom owners by
//! their `apiVersion` and kind).
//!
//! An owner is finalized when it is marked, and again when one of its
//! dependents goes. A full scan when the collector starts and once a
//! minute catches whatever a missed notification or a lost race left
//! behind.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::{EventType, Object};
use skiff_proto::v1::OwnerReference;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::store::state_machine::Notification;
use skiff_objects::deletion::{
    is_being_deleted, DeleteOptions, Propagation, FOREGROUND_DELETION, ORPHAN_DEPENDENTS,
};
use skiff_objects::{Kind, ObjectExt};

/// How many times the collector writes a dependent's ownerReferences,
/// reading it again after each lost race, before it leaves it to the next
/// scan.
const RELEASE_ATTEMPTS: usize = 3;

/// Runs the collector until `shutdown`.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let mut live = ctx.store.subscribe();
    let mut scan = tokio::time::interval(Duration::from_secs(60));
    tracing::info!(controller = "garbage-collector", "controller started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = scan.tick() => {
                if let Err(e) = full_scan(&ctx).await {
                    tracing::warn!(error = %e, "garbage collection scan failed");
                }
            }
            notification = live.recv() => match notification {
                Ok(Notification::Event(event, object)) => {
                    let deleted = event.event_type == EventType::Deleted as i32;
                    follow_logged(&ctx, &object, deleted).await;
                }
                Ok(Notification::Reset { .. }) => scan.reset_immediately(),
                Err(broadcast::error::RecvError::Lagged(_)) => scan.reset_immediately(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    tracing::info!(controller = "garbage-collector", "controller stopped");
}

/// [`follow`], logging a failure (the next scan retries).
async fn follow_logged(ctx: &Context, object: &Object, deleted: bool) {
    if let Err(e) = follow(ctx, object, deleted).await {
        tracing::warn!(error = %e, "garbage collection failed; the next scan retries");
    }
}

/// What one change means to the collector: a gone owner's dependents are
/// collected, and a gone dependent may be the last one an owner in
/// foreground deletion waited for; an owner marked for the collector is
/// finalized.
async fn follow(ctx: &Context, object: &Object, deleted: bool) -> Result<(), ReconcileError> {
    if deleted {
        collect_dependents_of(ctx, object).await?;
        for owner in owners_in_foreground(ctx, object)? {
            finalize(ctx, &owner).await?;
        }
    } else if waits_for_collector(object) {
        finalize(ctx, object).await?;
    }
    Ok(())
}

/// Stored kinds that live in namespaces (from the registry of kinds),
/// deleted with their namespace.
fn namespaced_kinds() -> impl Iterator<Item = Kind> {
    skiff_objects::registry::KINDS
        .iter()
        .filter(|i| i.namespaced && i.is_stored())
        .map(|i| i.kind)
}

async fn collect_dependents_of(ctx: &Context, owner: &Object) -> Result<(), ReconcileError> {
    let meta = owner.meta();
    if owner.kind().ok() == Some(Kind::Namespace) {
        // Custom kinds too: a cluster-scoped one has no object in any
        // namespace.
        for kind in namespaced_kinds().chain(ctx.store.custom_kinds()) {
            let (objects, _) = ctx.store.list(kind, Some(&meta.name))?;
            delete_all(ctx, background(objects)).await?;
        }
        return Ok(());
    }
    // Its dependents whose every owner is now gone, from the owner index.
    let gone: HashSet<&str> = [meta.uid.as_str()].into();
    let orphans: Vec<Arc<Object>> = ctx
        .store
        .dependents_of(&meta.uid)
        .into_iter()
        .filter(|o| {
            let refs = &o.meta().owner_references;
            !refs.is_empty() && refs.iter().all(|r| gone.contains(r.uid.as_str()))
        })
        .collect();
    delete_all(ctx, background(orphans)).await
}

/// Deletes every namespaced object whose namespace is gone, and every
/// object all of whose owners are gone; finalizes every object waiting
/// for the collector.
async fn full_scan(ctx: &Context) -> Result<(), ReconcileError> {
    let (namespaces, _) = ctx.store.list(Kind::Namespace, None)?;
    let namespaces: HashSet<String> = namespaces.iter().map(|n| n.meta().name.clone()).collect();
    let mut uids = HashSet::new();
    let mut all = Vec::new();
    let mut waiting = Vec::new();
    let stored = Kind::ALL.into_iter().filter(|k| k.is_stored());
    for kind in stored.chain(ctx.store.custom_kinds()) {
        let (objects, _) = ctx.store.list(kind, None)?;
        uids.extend(objects.iter().map(|o| o.meta().uid.clone()));
        waiting.extend(objects.iter().filter(|o| waits_for_collector(o)).cloned());
        if let Kind::Custom(_) = kind {
            // Whatever its definition says now: the objects in a namespace.
            all.extend(
                objects
                    .into_iter()
                    .filter(|o| !o.meta().namespace.is_empty()),
            );
        } else if kind.namespaced() {
            all.extend(objects);
        }
    }
    let doomed: Vec<Arc<Object>> = all
        .into_iter()
        .filter(|o| {
            let meta = o.meta();
            !is_being_deleted(meta)
                && (!namespaces.contains(&meta.namespace)
                    || (!meta.owner_references.is_empty()
                        && meta.owner_references.iter().all(|r| !uids.contains(&r.uid))))
        })
        .collect();
    delete_all(ctx, background(doomed)).await?;
    for owner in &waiting {
        finalize(ctx, owner).await?;
    }
    Ok(())
}

/// Whether an object is being deleted and waits for the collector (it has
/// the `orphan` or the `foregroundDeletion` finalizer).
fn waits_for_collector(object: &Object) -> bool {
    is_being_deleted(object.meta())
        && (has_finalizer(object, ORPHAN_DEPENDENTS) || has_finalizer(object, FOREGROUND_DELETION))
}

fn has_finalizer(object: &Object, finalizer: &str) -> bool {
    object.meta().finalizers.iter().any(|f| f == finalizer)
}

/// Whether `dependent` names `owner` (a uid) with `blockOwnerDeletion`.
fn blocks(dependent: &Object, owner: &str) -> bool {
    let refs = &dependent.meta().owner_references;
    refs.iter()
        .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
}

/// The owner `reference` of `dependent` names, if it still exists (the
/// same object: the same uid).
fn owner_of(
    ctx: &Context,
    dependent: &Object,
    reference: &OwnerReference,
) -> Result<Option<Arc<Object>>, ReconcileError> {
    // By apiVersion and kind (a custom owner's kind is its group's), else
    // by kind alone (an owner written at an apiVersion not served).
    let kind = Kind::from_type(&reference.api_version, &reference.kind)
        .or_else(|_| Kind::from_name(&reference.kind));
    let Ok(kind) = kind else {
        return Ok(None);
    };
    let namespace = if kind.namespaced() {
        dependent.meta().namespace.as_str()
    } else {
        ""
    };
    let owner = ctx.store.get(kind, namespace, &reference.name)?;
    Ok(owner.filter(|o| o.meta().uid == reference.uid))
}

/// The owners of `dependent` in foreground deletion.
fn owners_in_foreground(
    ctx: &Context,
    dependent: &Object,
) -> Result<Vec<Arc<Object>>, ReconcileError> {
    let mut owners = Vec::new();
    for reference in &dependent.meta().owner_references {
        if let Some(owner) = owner_of(ctx, dependent, reference)? {
            if is_being_deleted(owner.meta()) && has_finalizer(&owner, FOREGROUND_DELETION) {
                owners.push(owner);
            }
        }
    }
    Ok(owners)
}

/// Whether an owner other than `except` (a uid) still holds `dependent`:
/// it exists and is not being deleted.
fn held_by_another(
    ctx: &Context,
    dependent: &Object,
    except: &str,
) -> Result<bool, ReconcileError> {
    for reference in &dependent.meta().owner_references {
        if reference.uid == except {
            continue;
        }
        let owner = owner_of(ctx, dependent, reference)?;
        if owner.is_some_and(|o| !is_being_deleted(o.meta())) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Does what an owner being deleted waits for the collector to do, then
/// removes that finalizer: with `orphan`, frees its dependents; with
/// `foregroundDeletion`, deletes them, and waits until none that blocks it
/// is left.
async fn finalize(ctx: &Context, owner: &Object) -> Result<(), ReconcileError> {
    let meta = owner.meta();
    if !is_being_deleted(meta) {
        return Ok(());
    }
    let uid = meta.uid.as_str();
    let dependents = ctx.store.dependents_of(uid);
    if has_finalizer(owner, ORPHAN_DEPENDENTS) {
        for dependent in &dependents {
            release(ctx, dependent, uid).await?;
        }
        return remove_finalizer(ctx, owner, ORPHAN_DEPENDENTS).await;
    }
    if !has_finalizer(owner, FOREGROUND_DELETION) {
        return Ok(());
    }
    let mut doomed = Vec::new();
    for dependent in dependents {
        if is_being_deleted(dependent.meta()) {
            continue;
        }
        if held_by_another(ctx, &dependent, uid)? {
            release(ctx, &dependent, uid).await?;
            continue;
        }
        // One with dependents of its own waits for them in turn.
        let has_dependents = !ctx.store.dependents_of(&dependent.meta().uid).is_empty();
        let options = if has_dependents {
            DeleteOptions::propagating(Propagation::Foreground)
        } else {
            DeleteOptions::default()
        };
        doomed.push((dependent, options));
    }
    delete_all(ctx, doomed).await?;
    let left = ctx.store.dependents_of(uid);
    if left.iter().any(|d| blocks(d, uid)) {
        // Each one that goes brings the owner back here.
        return Ok(());
    }
    remove_finalizer(ctx, owner, FOREGROUND_DELETION).await
}

/// Takes the owner `owner` (a uid) out of `dependent`'s ownerReferences; a
/// lost race reads the dependent again.
async fn release(
    ctx: &Context,
    dependent: &Arc<Object>,
    owner: &str,
) -> Result<(), ReconcileError> {
    let Ok(kind) = dependent.kind() else {
        return Ok(());
    };
    let meta = dependent.meta();
    let (namespace, name) = (meta.namespace.clone(), meta.name.clone());
    let mut current = Some(dependent.clone());
    for attempt in 1..=RELEASE_ATTEMPTS {
        let Some(object) = current else {
            return Ok(());
        };
        let refs = &object.meta().owner_references;
        if !refs.iter().any(|r| r.uid == owner) {
            return Ok(());
        }
        let mut freed = Object::clone(&object);
        if let Ok(m) = freed.meta_mut() {
            m.owner_references.retain(|r| r.uid != owner);
        }
        // Conditional on the version read.
        match ctx.writer.update(freed).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_conflict() && attempt < RELEASE_ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
        current = ctx.store.get(kind, &namespace, &name)?;
    }
    Ok(())
}

/// Removes `finalizer` from `owner` (as read): the owner goes if it was
/// its last one.
async fn remove_finalizer(
    ctx: &Context,
    owner: &Object,
    finalizer: &str,
) -> Result<(), ReconcileError> {
    let mut done = owner.clone();
    if let Ok(meta) = done.meta_mut() {
        meta.finalizers.retain(|f| f != finalizer);
    }
    match ctx.writer.update(done).await {
        Ok(_) => Ok(()),
        // Gone, or changed meanwhile: its own event brings it back here.
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `objects` (those not being deleted already), each to be deleted with
/// the default options.
fn background(objects: Vec<Arc<Object>>) -> Vec<(Arc<Object>, DeleteOptions)> {
    objects
        .into_iter()
        .filter(|o| !is_being_deleted(o.meta()))
        .map(|o| (o, DeleteOptions::default()))
        .collect()
}

/// Deletes each object with its options, all at once.
async fn delete_all(
    ctx: &Context,
    doomed: Vec<(Arc<Object>, DeleteOptions)>,
) -> Result<(), ReconcileError> {
    let mut deletes = tokio::task::JoinSet::new();
    for (o, options) in doomed {
        let Ok(kind) = o.kind() else { continue };
        let meta = o.meta();
        let (writer, ns, name) = (
            ctx.writer.clone(),
            meta.namespace.clone(),
            meta.name.clone(),
        );
        deletes.spawn(async move { writer.delete_with(kind, &ns, &name, options).await });
    }
    let mut failure = None;
    while let Some(joined) = deletes.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_not_found() => {}
            Ok(Err(e)) => failure = Some(e.into()),
            Err(source) => {
                failure = Some(ReconcileError::Task {
                    what: "delete",
                    source,
                })
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::owners::controller_reference;
    use skiff_objects::IntoObject;
    use skiff_proto::v1;
    use std::sync::Arc;

    /// Seeds a pod in `namespace`, owned by `owner` when given.
    fn seed_pod(objects: &RecordingObjects, namespace: &str, name: &str, owner: Option<&Object>) {
        objects.seed(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: namespace.into(),
                    owner_references: owner.and_then(controller_reference).into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        );
    }

    fn names(objects: &RecordingObjects, kind: Kind) -> Vec<String> {
        objects
            .objects(kind)
            .iter()
            .map(|o| o.meta().name.clone())
            .collect()
    }

    /// Waits (at most 5 s) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the collector did not get there within 5 s");
    }

    fn start(objects: &Arc<RecordingObjects>) -> CancellationToken {
        let shutdown = CancellationToken::new();
        tokio::spawn(run(context(objects), shutdown.clone()));
        shutdown
    }

    #[tokio::test]
    async fn deleting_an_owner_deletes_its_dependents_and_nothing_else() {
        let objects = RecordingObjects::new();
        let seeded = objects.seed_yaml(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: busybox}]}}
"#,
        );
        let rs = &seeded[1];
        seed_pod(&objects, "default", "web-a", Some(rs));
        seed_pod(&objects, "default", "web-b", Some(rs));
        seed_pod(&objects, "default", "standalone", None);
        let shutdown = start(&objects);
        // Let the start-up scan pass: nothing is orphaned yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(names(&objects, Kind::Pod).len(), 3);
        objects
            .remove(Kind::ReplicaSet, "default", "web", "")
            .unwrap();
        until(|| names(&objects, Kind::Pod) == ["standalone"]).await;
        let deletes: Vec<String> = objects
            .writes()
            .into_iter()
            .filter(|w| w.op == WriteOp::Delete && w.kind == Kind::Pod)
            .map(|w| w.name)
            .collect();
        assert_eq!(deletes.len(), 2, "{deletes:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn deleting_a_namespace_deletes_everything_in_it_and_nothing_else() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team}
spec: {ports: [{port: 80}]}
"#,
        );
        seed_pod(&objects, "team", "worker", None);
        seed_pod(&objects, "default", "keeper", None);
        let shutdown = start(&objects);
        tokio::time::sleep(Duration::from_millis(50)).await;
        objects.remove(Kind::Namespace, "", "team", "").unwrap();
        until(|| {
            names(&objects, Kind::Pod) == ["keeper"] && objects.objects(Kind::Service).is_empty()
        })
        .await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_start_up_scan_deletes_what_lost_its_owner_while_no_collector_ran() {
        let objects = RecordingObjects::new();
        objects.seed_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
        let gone_owner = objects.seed_yaml(
            r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: old}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: busybox}]}}
"#,
        );
        seed_pod(&objects, "default", "orphan", Some(&gone_owner[0]));
        seed_pod(&objects, "nowhere", "homeless", None);
        seed_pod(&objects, "default", "fine", None);
        objects
            .remove(Kind::ReplicaSet, "default", "old", "")
            .unwrap();
        let shutdown = start(&objects);
        until(|| names(&objects, Kind::Pod) == ["fine"]).await;
        shutdown.cancel();
    }

    const DEPLOYMENT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: busybox}]}}
"#;

    /// Seeds ReplicaSet `name` in `default`, controlled by `owner`.
    fn seed_replicaset(objects: &RecordingObjects, name: &str, owner: &Object) -> Object {
        objects.seed(
            v1::ReplicaSet {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    owner_references: controller_reference(owner).into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    /// Binds pod `name` in `default` to node `node`.
    fn bind(objects: &RecordingObjects, name: &str, node: &str) {
        let stored = objects.get(Kind::Pod, "default", name).unwrap().unwrap();
        let mut pod = Arc::unwrap_or_clone(stored);
        if let Some(skiff_proto::api::object::Kind::Pod(p)) = &mut pod.kind {
            p.spec.get_or_insert_with(Default::default).node_name = node.into();
        }
        objects.write(WriteOp::Update, pod).unwrap();
    }

    fn being_deleted(objects: &RecordingObjects, kind: Kind, name: &str) -> bool {
        let object = objects.get(kind, "default", name).unwrap();
        object.is_some_and(|o| is_being_deleted(o.meta()))
    }

    #[tokio::test]
    async fn a_foreground_delete_removes_the_dependents_before_the_owner() {
        let objects = RecordingObjects::new();
        let deployment = objects.seed_yaml(DEPLOYMENT).remove(1);
        let rs = seed_replicaset(&objects, "web-1", &deployment);
        seed_pod(&objects, "default", "web-1-loose", Some(&rs));
        seed_pod(&objects, "default", "web-1-bound", Some(&rs));
        bind(&objects, "web-1-bound", "n1");
        objects.clear_writes();
        let shutdown = start(&objects);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(names(&objects, Kind::Pod).len(), 2, "nothing collected yet");

        let foreground = DeleteOptions::propagating(Propagation::Foreground);
        let marked = objects.delete_as_kubernetes(Kind::Deployment, "default", "web", &foreground);
        assert!(is_being_deleted(marked.unwrap().meta()));
        // The unbound pod goes at once; the bound one waits for its node,
        // and the ReplicaSet and the Deployment wait for it.
        until(|| {
            names(&objects, Kind::Pod) == ["web-1-bound"]
                && being_deleted(&objects, Kind::Pod, "web-1-bound")
                && being_deleted(&objects, Kind::ReplicaSet, "web-1")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(names(&objects, Kind::Deployment), ["web"], "still waiting");
        let replicasets = names(&objects, Kind::ReplicaSet);
        assert_eq!(replicasets, ["web-1"], "still waiting");

        // Its node confirms: then the ReplicaSet goes, then the Deployment.
        let confirm = DeleteOptions::force();
        let gone = objects.delete_as_kubernetes(Kind::Pod, "default", "web-1-bound", &confirm);
        gone.unwrap();
        until(|| {
            objects.objects(Kind::Deployment).is_empty()
                && objects.objects(Kind::ReplicaSet).is_empty()
        })
        .await;
        let order: Vec<(Kind, String)> = objects
            .writes()
            .into_iter()
            .filter(|w| w.op == WriteOp::Update && w.object.meta().finalizers.is_empty())
            .map(|w| (w.kind, w.name))
            .collect();
        let expected = [
            (Kind::ReplicaSet, "web-1".to_owned()),
            (Kind::Deployment, "web".to_owned()),
        ];
        assert_eq!(order, expected, "finalizers removed dependents first");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_orphan_delete_frees_the_dependents_and_deletes_none() {
        let objects = RecordingObjects::new();
        let deployment = objects.seed_yaml(DEPLOYMENT).remove(1);
        let rs = seed_replicaset(&objects, "web-1", &deployment);
        seed_pod(&objects, "default", "web-1-a", Some(&rs));
        let shutdown = start(&objects);
        tokio::time::sleep(Duration::from_millis(50)).await;

        let orphan = DeleteOptions::propagating(Propagation::Orphan);
        let marked = objects.delete_as_kubernetes(Kind::Deployment, "default", "web", &orphan);
        let marked = marked.unwrap();
        assert_eq!(marked.meta().finalizers, [ORPHAN_DEPENDENTS]);
        until(|| objects.objects(Kind::Deployment).is_empty()).await;
        // Later notifications would find nothing more to do either.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let replicasets = objects.objects(Kind::ReplicaSet);
        assert_eq!(replicasets.len(), 1, "the ReplicaSet stays");
        assert!(replicasets[0].meta().owner_references.is_empty());
        let pods = objects.objects(Kind::Pod);
        assert_eq!(pods.len(), 1, "its pod stays");
        assert_eq!(pods[0].meta().owner_references[0].uid, rs.meta().uid);
        let deleted: Vec<String> = objects
            .writes()
            .into_iter()
            .filter(|w| w.op == WriteOp::Delete)
            .map(|w| w.name)
            .collect();
        assert_eq!(deleted, ["web"], "only the owner was deleted");
        shutdown.cancel();
    }
}
