//! What runs while this master leads: the controllers, the scheduler, node
//! lifecycle, pod garbage collection, auto-deploy, scheduled snapshots, one
//! pass giving nodePorts to Services stored without them, the built-in
//! `kubernetes` and `kube-dns` Services, the built-in `local-path`
//! StorageClass, every namespace's `default` ServiceAccount, the
//! cluster's service account signing key and the default RBAC roles and
//! bindings, recording Events into
//! this master's `EventStore`, which starts over (empty, new
//! resourceVersions) each time leadership is taken up or given up. They
//! start when this master becomes leader and stop when it stops being
//! leader. Before
//! starting, the new leader confirms its leadership with a quorum and waits
//! until everything committed is applied locally, so controllers never act
//! on a stale view. A leader that cannot confirm its leadership retries
//! with backoff (logged, and counted in
//! `skiff_controller_start_failures_total`); after
//! [`STEP_DOWN_AFTER`] of that, or as long without a quorum acknowledging
//! it while leading, it steps down rather than hold the cluster.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError};
use crate::controllers::cluster_role_aggregation::ClusterRoleAggregationController;
use crate::controllers::cron_job::CronJobController;
use crate::controllers::custom_resources::CustomResourceDefinitionController;
use crate::controllers::daemonset::DaemonSetController;
use crate::controllers::deployment::DeploymentController;
use crate::controllers::disruption::DisruptionController;
use crate::controllers::endpoint_slices::EndpointSliceController;
use crate::controllers::endpoints::EndpointsController;
use crate::controllers::horizontal_autoscaler::HorizontalAutoscalerController;
use crate::controllers::job::JobController;
use crate::controllers::kubernetes_service::{self, BuiltInServices};
use crate::controllers::node_ipam::{NodeIpamController, PodCidrConfig};
use crate::controllers::persistent_volumes::{ClaimController, VolumeController};
use crate::controllers::pod_gc::{self, PodGcConfig};
use crate::controllers::replicaset::ReplicaSetController;
use crate::controllers::root_ca_publisher::RootCaPublisher;
use crate::controllers::service_accounts::DefaultServiceAccountController;
use crate::controllers::service_lb::ServiceLbController;
use crate::controllers::statefulset::StatefulSetController;
use crate::controllers::{
    self, default_rbac_policy, default_storage_class, garbage_collector, node_port_backfill,
    service_account_key, Context,
};
use crate::datastore::schedule::{self as snapshot_schedule, ScheduledSnapshots};
use crate::events::{self, EventRecorder, EventStore};
use crate::node_lifecycle::{self, HeartbeatTable, LifecycleConfig};
use crate::resource_metrics::ResourceMetrics;
use crate::scheduler;
use crate::security::service_account_key::SealingKey;
use crate::store::Command;
use crate::writer::{ObjectWriter, DEFAULT_NAMESPACE};
use skiff_objects::metadata::new_uid;
use skiff_objects::now_rfc3339;
use skiff_objects::Kind;

/// How long the new leader's controllers' start may wait for a quorum to
/// confirm its leadership, per attempt.
const PREPARE_CONFIRM_WITHIN: Duration = Duration::from_secs(5);
/// The first and the longest pause before trying again to start the
/// controllers.
const PREPARE_RETRY_FIRST: Duration = Duration::from_millis(200);
const PREPARE_RETRY_MAX: Duration = Duration::from_secs(3);
/// A leader that cannot confirm its leadership for this long (its
/// controllers cannot start, or no quorum acknowledged it) steps down
/// rather than hold the cluster.
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(10);
/// How often a running leader checks that a quorum still acknowledges it.
const LEADERSHIP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How the leader's duties are set up.
#[derive(Debug, Clone)]
pub struct DutiesConfig {
    /// Failure detection timing.
    pub lifecycle: LifecycleConfig,
    /// What pod garbage collection keeps.
    pub pod_gc: PodGcConfig,
    /// The cluster CIDR nodes get their pod subnets from.
    pub pod_cidrs: PodCidrConfig,
    /// `<data-dir>/manifests`, applied by auto-deploy.
    pub manifests_dir: std::path::PathBuf,
    /// Scheduled snapshots into `<data-dir>/snapshots`.
    pub snapshots: ScheduledSnapshots,
    /// The addresses of `default/kubernetes` and `kube-system/kube-dns`.
    pub built_in_services: BuiltInServices,
    /// What the service account signing key is sealed under in the store
    /// (derived from the cluster CA's key).
    pub service_account_key: Arc<SealingKey>,
    /// The cluster CA's certificate (PEM), published in every namespace
    /// as the `kube-root-ca.crt` ConfigMap.
    pub cluster_ca_pem: String,
}

/// Runs until `shutdown`, keeping controllers running exactly while this
/// master leads, with `events` in use for exactly that time; the
/// controllers read the nodes' resource usage from `resource_metrics`.
pub async fn run(
    writer: ObjectWriter,
    heartbeats: Arc<HeartbeatTable>,
    duties: DutiesConfig,
    master_metrics: crate::metrics::MasterMetrics,
    events: Arc<EventStore>,
    resource_metrics: ResourceMetrics,
    shutdown: CancellationToken,
) {
    let DutiesConfig {
        lifecycle,
        pod_gc: pod_gc_config,
        pod_cidrs,
        manifests_dir,
        snapshots,
        built_in_services,
        service_account_key: sealing,
        cluster_ca_pem,
    } = duties;
    let cluster = writer.cluster().clone();
    let mut metrics = cluster.raft.metrics();
    loop {
        while !cluster.is_leader() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
        match prepare_with_retries(&cluster, &master_metrics, &shutdown).await {
            Prepared::Ready => {}
            Prepared::NotLeading => continue,
            Prepared::Unconfirmed => {
                step_down(&cluster, &shutdown).await;
                continue;
            }
            Prepared::ShuttingDown => return,
        }
        let term = shutdown.child_token();
        // A new leadership: Events start over, above every resourceVersion
        // issued before.
        events.restart();
        let ctx = Context::new(
            cluster.store.clone(),
            Arc::new(writer.clone()),
            master_metrics.scheduler_binding.clone(),
        )
        .with_events(EventRecorder::new(events.clone(), "skiff-master"))
        .with_resource_metrics(resource_metrics.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(events::expire_periodically(events.clone(), term.clone()));
        tasks.spawn(controllers::run(
            ReplicaSetController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            DeploymentController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            DaemonSetController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            StatefulSetController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            DisruptionController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            JobController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            CronJobController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            EndpointsController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            EndpointSliceController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            ServiceLbController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            NodeIpamController::new(ctx.clone(), pod_cidrs),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            ClaimController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            VolumeController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            HorizontalAutoscalerController::new(
                ctx.clone(),
                Arc::new(ctx.resource_metrics.clone()),
            ),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            CustomResourceDefinitionController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        // The signing key TokenRequests need, made once per cluster.
        tasks.spawn(service_account_key::run(
            ctx.clone(),
            sealing.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            DefaultServiceAccountController { ctx: ctx.clone() },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            RootCaPublisher {
                ctx: ctx.clone(),
                ca_pem: cluster_ca_pem.clone(),
            },
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(controllers::run(
            ClusterRoleAggregationController::new(ctx.clone()),
            ctx.store.clone(),
            term.clone(),
        ));
        tasks.spawn(default_storage_class::run(ctx.clone(), term.clone()));
        tasks.spawn(default_rbac_policy::run(ctx.clone(), term.clone()));
        tasks.spawn(node_port_backfill::run(ctx.clone(), term.clone()));
        tasks.spawn(garbage_collector::run(ctx.clone(), term.clone()));
        tasks.spawn(pod_gc::run(ctx.clone(), pod_gc_config, term.clone()));
        tasks.spawn(kubernetes_service::run(
            ctx.clone(),
            built_in_services,
            cluster.clone(),
            term.clone(),
        ));
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
        tasks.spawn(crate::recorded_format::run(writer.clone(), term.clone()));
        tasks.spawn(snapshot_schedule::run(
            cluster.store.clone(),
            cluster.id,
            snapshots.clone(),
            term.clone(),
        ));
        master_metrics
            .controllers_running
            .store(true, Ordering::Relaxed);
        tracing::info!(id = cluster.id, "leading: controllers started");
        let mut check = tokio::time::interval(LEADERSHIP_CHECK_EVERY);
        let mut isolated = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => {
                    if changed.is_err() || !cluster.is_leader() {
                        break;
                    }
                }
                _ = check.tick() => {
                    let unacknowledged = quorum_ack_age(&cluster);
                    if unacknowledged.is_some_and(|age| age >= STEP_DOWN_AFTER) {
                        tracing::warn!(
                            id = cluster.id,
                            unacknowledged = ?unacknowledged,
                            "no quorum has acknowledged this leader for too long; stopping the controllers and stepping down",
                        );
                        isolated = true;
                        break;
                    }
                }
            }
        }
        term.cancel();
        while tasks.join_next().await.is_some() {}
        // Not leading any more: the next leader keeps the Events.
        events.restart();
        master_metrics
            .controllers_running
            .store(false, Ordering::Relaxed);
        tracing::info!(id = cluster.id, "controllers stopped");
        if shutdown.is_cancelled() {
            return;
        }
        if isolated {
            step_down(&cluster, &shutdown).await;
        }
    }
}

/// How a new leader's preparation ended.
enum Prepared {
    Ready,
    NotLeading,
    /// Leading, but unconfirmed for [`STEP_DOWN_AFTER`].
    Unconfirmed,
    ShuttingDown,
}

/// Prepares to lead, retrying with backoff while this master leads but
/// cannot confirm it; each failure is logged and counted.
async fn prepare_with_retries(
    cluster: &Cluster,
    metrics: &crate::metrics::MasterMetrics,
    shutdown: &CancellationToken,
) -> Prepared {
    let since = tokio::time::Instant::now();
    let mut pause = PREPARE_RETRY_FIRST;
    loop {
        let error = match prepare(cluster).await {
            Ok(()) => return Prepared::Ready,
            Err(e) => e,
        };
        metrics.controller_start_failures.inc(&[]);
        if !cluster.is_leader() {
            tracing::info!(id = cluster.id, error = %error, "lost leadership before the controllers started");
            return Prepared::NotLeading;
        }
        if since.elapsed() >= STEP_DOWN_AFTER {
            tracing::warn!(
                id = cluster.id,
                error = %error,
                after = ?since.elapsed(),
                "leading, but the controllers could not start for too long; stepping down",
            );
            return Prepared::Unconfirmed;
        }
        tracing::warn!(
            id = cluster.id,
            error = %error,
            retry_in = ?pause,
            "leading, but the controllers could not start yet; retrying",
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Prepared::ShuttingDown,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(PREPARE_RETRY_MAX);
    }
}

/// Since a quorum last acknowledged this master, while it leads.
fn quorum_ack_age(cluster: &Cluster) -> Option<Duration> {
    let metrics = cluster.raft.metrics();
    let m = metrics.borrow();
    (m.state == openraft::ServerState::Leader)
        .then_some(m.millis_since_quorum_ack)
        .flatten()
        .map(Duration::from_millis)
}

/// Gives up leadership. openraft 0.9 has no call for it, so the leader
/// falls silent: with its heartbeats off, the followers' election timers
/// run out, one of them is elected in a higher term, and this master
/// follows it as soon as it hears of that term. Heartbeats come back on
/// once that happened, or after twice the longest election timeout (no
/// one else could be elected, so this master may as well lead again).
/// Safety does not depend on any of this: a silent leader can still not
/// commit or confirm anything without a quorum.
async fn step_down(cluster: &Cluster, shutdown: &CancellationToken) {
    let quiet = Duration::from_millis(2 * cluster.raft.config().election_timeout_max);
    cluster.raft.runtime_config().heartbeat(false);
    let mut metrics = cluster.raft.metrics();
    let _ = tokio::time::timeout(quiet, async {
        while cluster.is_leader() && !shutdown.is_cancelled() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                changed = metrics.changed() => if changed.is_err() { break },
            }
        }
    })
    .await;
    cluster.raft.runtime_config().heartbeat(true);
    tracing::info!(
        id = cluster.id,
        still_leader = cluster.is_leader(),
        "step-down over; heartbeats on again"
    );
}

/// The namespaces every cluster has: `default`, and `kube-system` (where
/// join tokens are kept, as Kubernetes keeps its bootstrap tokens).
const BUILT_IN_NAMESPACES: [&str; 2] = [DEFAULT_NAMESPACE, "kube-system"];

/// Catches up with everything committed and makes sure the built-in
/// namespaces exist.
async fn prepare(cluster: &Cluster) -> Result<(), ClusterError> {
    cluster.linearize(PREPARE_CONFIRM_WITHIN).await?;
    for name in BUILT_IN_NAMESPACES {
        ensure_namespace(cluster, name).await?;
    }
    Ok(())
}

async fn ensure_namespace(cluster: &Cluster, name: &str) -> Result<(), ClusterError> {
    if cluster.store.get(Kind::Namespace, "", name)?.is_some() {
        return Ok(());
    }
    // In the protobuf model while a member may read only that, as the
    // writer stores moved kinds (`ObjectWriter::encode_for_store`).
    let namespace = skiff_objects::legacy_bodies::for_member(
        skiff_objects::namespaces::named(name, "Active"),
        cluster.members_data_format(),
    );
    let command = Command::Create {
        object: namespace.encode_to_vec(),
        uid: new_uid(),
        now: now_rfc3339(),
    };
    match cluster.propose(command).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e),
    }
}
