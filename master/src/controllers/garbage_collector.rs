//! Garbage collection through ownerReferences and namespaces: when an owner
//! is deleted its dependents are deleted (background propagation), and
//! when a namespace is deleted everything in it is. A full scan when the
//! collector starts and once a minute catches whatever a missed
//! notification left behind.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::{EventType, Object};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::objects::{Kind, ObjectExt};
use crate::store::state_machine::Notification;

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
                Ok(Notification::Event(event, owner)) if event.event_type == EventType::Deleted as i32 => {
                    if let Err(e) = collect_dependents_of(&ctx, &owner).await {
                        tracing::warn!(error = %e, "garbage collection failed; the next scan retries");
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => scan.reset_immediately(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    tracing::info!(controller = "garbage-collector", "controller stopped");
}

/// Stored kinds that live in namespaces (from the registry of kinds),
/// deleted with their namespace.
fn namespaced_kinds() -> impl Iterator<Item = Kind> {
    crate::objects::registry::KINDS
        .iter()
        .filter(|i| i.namespaced && i.is_stored())
        .map(|i| i.kind)
}

async fn collect_dependents_of(ctx: &Context, owner: &Object) -> Result<(), ReconcileError> {
    let meta = owner.meta();
    if owner.kind().ok() == Some(Kind::Namespace) {
        for kind in namespaced_kinds() {
            let (objects, _) = ctx.store.list(kind, Some(&meta.name))?;
            delete_all(ctx, &objects).await?;
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
    delete_all(ctx, &orphans).await
}

/// Deletes every namespaced object whose namespace is gone, and every
/// object all of whose owners are gone.
async fn full_scan(ctx: &Context) -> Result<(), ReconcileError> {
    let (namespaces, _) = ctx.store.list(Kind::Namespace, None)?;
    let namespaces: HashSet<String> = namespaces.iter().map(|n| n.meta().name.clone()).collect();
    let mut uids = HashSet::new();
    let mut all = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.is_stored()) {
        let (objects, _) = ctx.store.list(kind, None)?;
        uids.extend(objects.iter().map(|o| o.meta().uid.clone()));
        if kind.namespaced() {
            all.extend(objects);
        }
    }
    let doomed: Vec<Arc<Object>> = all
        .into_iter()
        .filter(|o| {
            let meta = o.meta();
            !namespaces.contains(&meta.namespace)
                || (!meta.owner_references.is_empty()
                    && meta.owner_references.iter().all(|r| !uids.contains(&r.uid)))
        })
        .collect();
    delete_all(ctx, &doomed).await
}

async fn delete_all(ctx: &Context, objects: &[Arc<Object>]) -> Result<(), ReconcileError> {
    let mut deletes = tokio::task::JoinSet::new();
    for o in objects {
        let Ok(kind) = o.kind() else { continue };
        let meta = o.meta();
        let (writer, ns, name) = (
            ctx.writer.clone(),
            meta.namespace.clone(),
            meta.name.clone(),
        );
        deletes.spawn(async move { writer.delete(kind, &ns, &name, "").await });
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
    use crate::objects::owners::controller_reference;
    use crate::objects::IntoObject;
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
}
