//! `scale`, `rollout status` and `rollout undo`, as kubectl does them: the
//! client changes the Deployment, the controller does the rest.

use std::io::Write;
use std::time::Duration;

use skiff_master::client::{Client, ClientError};
use skiff_master::controllers::deployment::{owned_replicasets, revision_of, TEMPLATE_HASH_LABEL};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{resource_ref, CtlError, Result};
use skiff_master::objects::{Kind, ObjectExt};

fn api(context: String) -> impl FnOnce(ClientError) -> CtlError {
    move |source| CtlError::Api { context, source }
}

/// Sets `spec.replicas`, retrying when someone else wrote in between.
pub async fn scale(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<()> {
    if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
        return Err(CtlError::Usage(format!(
            "{} cannot be scaled",
            kind.plural()
        )));
    }
    let what = resource_ref(kind, name);
    for _ in 0..5 {
        let mut object = client
            .get(kind, namespace, name)
            .await
            .map_err(api(format!("getting {what}")))?;
        match object.kind.as_mut() {
            Some(Body::Deployment(d)) => {
                d.spec.get_or_insert_with(Default::default).replicas = Some(replicas)
            }
            Some(Body::ReplicaSet(r)) => {
                r.spec.get_or_insert_with(Default::default).replicas = Some(replicas)
            }
            _ => {}
        }
        match client.update(object).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(api(format!("scaling {what}"))(e)),
        }
    }
    Err(CtlError::Usage(format!("{what} kept changing; try again")))
}

/// Waits for a Deployment's rollout to finish, printing progress.
pub async fn status(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let object = client
            .get(Kind::Deployment, namespace, name)
            .await
            .map_err(api(format!("getting deployment {name:?}")))?;
        let (message, done) = progress(&object, name);
        if message != last {
            writeln!(out, "{message}")?;
            out.flush()?;
            last = message;
        }
        if done {
            if last.starts_with("error: ") {
                return Err(CtlError::Usage(
                    last.trim_start_matches("error: ").to_owned(),
                ));
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CtlError::Usage(format!(
                "timed out after {} waiting for the rollout of deployment {name:?}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// kubectl's rollout progress message, and whether the rollout is done.
pub fn progress(object: &Object, name: &str) -> (String, bool) {
    let Some(Body::Deployment(d)) = &object.kind else {
        return (format!("{name} is not a deployment"), true);
    };
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let generation = object.meta().generation;
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded");
    if stalled && status.observed_generation >= generation {
        return (
            format!("error: deployment {name:?} exceeded its progress deadline"),
            true,
        );
    }
    if status.observed_generation < generation {
        return (
            "Waiting for deployment spec update to be observed...".to_owned(),
            false,
        );
    }
    if status.updated_replicas < want {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                status.updated_replicas
            ),
            false,
        );
    }
    if status.replicas > status.updated_replicas {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                status.replicas - status.updated_replicas
            ),
            false,
        );
    }
    if status.available_replicas < status.updated_replicas {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                status.available_replicas, status.updated_replicas
            ),
            false,
        );
    }
    (format!("deployment {name:?} successfully rolled out"), true)
}

/// Puts the template of an earlier revision back into the Deployment.
pub async fn undo(
    client: &Client,
    namespace: &str,
    name: &str,
    to_revision: Option<u64>,
) -> Result<()> {
    let deployment = client
        .get(Kind::Deployment, namespace, name)
        .await
        .map_err(api(format!("getting deployment {name:?}")))?;
    let uid = deployment.meta().uid.clone();
    let sets = client
        .list(Kind::ReplicaSet, namespace)
        .await
        .map_err(api("listing replicasets".to_owned()))?;
    let owned = owned_replicasets(sets.items, &uid);
    let target = match to_revision {
        Some(n) => owned
            .iter()
            .find(|rs| revision_of(rs) == n)
            .ok_or_else(|| CtlError::Usage(format!("deployment {name:?} has no revision {n}")))?,
        None => owned.iter().rev().nth(1).ok_or_else(|| {
            CtlError::Usage(format!("deployment {name:?} has no previous revision"))
        })?,
    };
    let mut template = target
        .spec
        .clone()
        .unwrap_or_default()
        .template
        .unwrap_or_default();
    if let Some(meta) = template.metadata.as_mut() {
        meta.labels.remove(TEMPLATE_HASH_LABEL);
    }
    let mut updated = deployment;
    if let Some(Body::Deployment(d)) = updated.kind.as_mut() {
        d.spec.get_or_insert_with(Default::default).template = Some(template);
    }
    client
        .update(updated)
        .await
        .map_err(api(format!("rolling back deployment {name:?}")))?;
    Ok(())
}

/// Sets or clears `spec.unschedulable` on a node.
pub async fn set_unschedulable(client: &Client, node: &str, unschedulable: bool) -> Result<()> {
    for _ in 0..5 {
        let mut object = client
            .get(Kind::Node, "", node)
            .await
            .map_err(api(format!("getting node {node:?}")))?;
        if let Some(Body::Node(n)) = object.kind.as_mut() {
            n.spec.get_or_insert_with(Default::default).unschedulable = unschedulable;
        }
        match client.update(object).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(api(format!("updating node {node:?}"))(e)),
        }
    }
    Err(CtlError::Usage(format!(
        "node {node:?} kept changing; try again"
    )))
}

/// Cordons a node and deletes its pods; controllers recreate them on other
/// nodes. Pods no controller owns are only deleted with `force`.
pub async fn drain(client: &Client, node: &str, force: bool, out: &mut dyn Write) -> Result<()> {
    set_unschedulable(client, node, true).await?;
    writeln!(out, "node/{node} cordoned")?;
    let list = client
        .list(Kind::Pod, "")
        .await
        .map_err(api("listing pods".to_owned()))?;
    let on_node: Vec<Object> = list
        .items
        .into_iter()
        .filter(|o| match &o.kind {
            Some(Body::Pod(p)) => p.spec.as_ref().is_some_and(|s| s.node_name == node),
            _ => false,
        })
        .collect();
    let unmanaged: Vec<String> = on_node
        .iter()
        .filter(|o| {
            !o.meta()
                .owner_references
                .iter()
                .any(|r| r.controller == Some(true))
        })
        .map(|o| o.display_name())
        .collect();
    if !unmanaged.is_empty() && !force {
        return Err(CtlError::Usage(format!(
            "cannot drain node {node:?}: these pods have no controller and would be lost: {}; use --force to delete them",
            unmanaged.join(", ")
        )));
    }
    for o in on_node {
        let meta = o.meta();
        match client
            .delete(Kind::Pod, &meta.namespace, &meta.name, "")
            .await
        {
            Ok(_) | Err(ClientError::NotFound(_)) => writeln!(out, "pod/{} evicted", meta.name)?,
            Err(e) => return Err(api(format!("evicting pod {:?}", meta.name))(e)),
        }
    }
    writeln!(out, "node/{node} drained")?;
    Ok(())
}
