//! Starts the controllers when this master becomes leader and stops them
//! when it stops being leader. Before starting, the new leader confirms its
//! leadership with a quorum and waits until everything committed is
//! applied locally, so controllers never act on a stale view.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use skiff_proto::v1;
use tokio_util::sync::CancellationToken;

use super::deployment::DeploymentController;
use super::endpoints::EndpointsController;
use super::node_ipam::{NodeIpamController, PodCidrConfig};
use super::replicaset::ReplicaSetController;
use super::{garbage_collector, Context};
use crate::cluster::{Cluster, ClusterError};
use crate::node_lifecycle::{self, HeartbeatTable, LifecycleConfig};
use crate::objects::{IntoObject, Kind};
use crate::scheduler;
use crate::store::{Command, WriteError};
use crate::writer::{new_uid, now_rfc3339, ObjectWriter, DEFAULT_NAMESPACE};

/// Runs until `shutdown`, keeping controllers running exactly while this
/// master leads.
pub async fn run(
    cluster: Cluster,
    heartbeats: Arc<HeartbeatTable>,
    lifecycle: LifecycleConfig,
    pod_cidrs: PodCidrConfig,
    master_metrics: crate::metrics::MasterMetrics,
    manifests_dir: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let mut metrics = cluster.raft.metrics();
    loop {
        while !cluster.is_leader() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
        if let Err(e) = prepare(&cluster).await {
            tracing::warn!(error = %e, "not ready to lead yet");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
            }
        }
        let term = shutdown.child_token();
        let ctx = Context {
            store: cluster.store.clone(),
            writer: ObjectWriter::new(cluster.clone()),
            binding_latency: master_metrics.scheduler_binding.clone(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(super::run(
            ReplicaSetController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(super::run(
            DeploymentController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(super::run(
            EndpointsController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(super::run(
            NodeIpamController::new(ctx.clone(), pod_cidrs),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(garbage_collector::run(ctx.clone(), term.clone()));
        tasks.spawn(crate::auto_deploy::run(
            ctx.clone(),
            manifests_dir.clone(),
            term.clone(),
        ));
        tasks.spawn(scheduler::run(ctx.clone(), term.clone()));
        tasks.spawn(node_lifecycle::run(
            ctx.clone(),
            heartbeats.clone(),
            lifecycle,
            term.clone(),
        ));
        tracing::info!(id = cluster.id, "leading: controllers started");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => {
                    if changed.is_err() || !cluster.is_leader() {
                        break;
                    }
                }
            }
        }
        term.cancel();
        while tasks.join_next().await.is_some() {}
        tracing::info!(id = cluster.id, "controllers stopped");
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// The namespaces every cluster has: `default`, and `kube-system` (where
/// join tokens are kept, as Kubernetes keeps its bootstrap tokens).
const BUILT_IN_NAMESPACES: [&str; 2] = [DEFAULT_NAMESPACE, "kube-system"];

/// Catches up with everything committed and makes sure the built-in
/// namespaces exist.
async fn prepare(cluster: &Cluster) -> Result<(), ClusterError> {
    cluster.linearize().await?;
    for name in BUILT_IN_NAMESPACES {
        ensure_namespace(cluster, name).await?;
    }
    Ok(())
}

async fn ensure_namespace(cluster: &Cluster, name: &str) -> Result<(), ClusterError> {
    if cluster.store.get(Kind::Namespace, "", name)?.is_some() {
        return Ok(());
    }
    let namespace = v1::Namespace {
        metadata: Some(v1::ObjectMeta {
            name: name.to_owned(),
            ..Default::default()
        }),
        status: Some(v1::NamespaceStatus {
            phase: "Active".to_owned(),
        }),
        ..Default::default()
    };
    let command = Command::Create {
        object: namespace.into_object().encode_to_vec(),
        uid: new_uid(),
        now: now_rfc3339(),
    };
    match cluster.propose(command).await {
        Ok(_) | Err(ClusterError::Refused(WriteError::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}
