//! Garbage collection through ownerReferences and namespaces: when an owner
//! is deleted its dependents are deleted (background propagation), and
//! when a namespace is deleted everything in it is. A full scan when the
//! collector starts and once a minute catches whatever a missed
//! notification left behind.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;
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
                Ok(Notification::Event(event)) if event.event_type == EventType::Deleted as i32 => {
                    if let Ok(owner) = Object::decode(event.object.as_slice()) {
                        if let Err(e) = collect_dependents_of(&ctx, &owner).await {
                            tracing::warn!(error = %e, "garbage collection failed; the next scan retries");
                        }
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

/// Kinds that live in namespaces, dependents before owners.
const NAMESPACED: [Kind; 5] = [
    Kind::Pod,
    Kind::ReplicaSet,
    Kind::Deployment,
    Kind::Endpoints,
    Kind::Service,
];

async fn collect_dependents_of(ctx: &Context, owner: &Object) -> Result<(), ReconcileError> {
    let meta = owner.meta();
    if owner.kind().ok() == Some(Kind::Namespace) {
        for kind in NAMESPACED {
            let (objects, _) = ctx.store.list(kind, Some(&meta.name))?;
            delete_all(ctx, &objects).await?;
        }
        return Ok(());
    }
    let gone: HashSet<&str> = [meta.uid.as_str()].into();
    for kind in [Kind::ReplicaSet, Kind::Pod] {
        let (objects, _) = ctx.store.list(kind, Some(&meta.namespace))?;
        let orphans: Vec<Object> = objects
            .into_iter()
            .filter(|o| {
                let refs = &o.meta().owner_references;
                !refs.is_empty() && refs.iter().all(|r| gone.contains(r.uid.as_str()))
            })
            .collect();
        delete_all(ctx, &orphans).await?;
    }
    Ok(())
}

/// Deletes every namespaced object whose namespace is gone, and every
/// object all of whose owners are gone.
async fn full_scan(ctx: &Context) -> Result<(), ReconcileError> {
    let (namespaces, _) = ctx.store.list(Kind::Namespace, None)?;
    let namespaces: HashSet<String> = namespaces.iter().map(|n| n.meta().name.clone()).collect();
    let mut uids = HashSet::new();
    let mut all = Vec::new();
    for kind in NAMESPACED {
        let (objects, _) = ctx.store.list(kind, None)?;
        uids.extend(objects.iter().map(|o| o.meta().uid.clone()));
        all.extend(objects);
    }
    let doomed: Vec<Object> = all
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

async fn delete_all(ctx: &Context, objects: &[Object]) -> Result<(), ReconcileError> {
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
