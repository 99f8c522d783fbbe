//! Running one master: prepare its PKI (create the cluster CA, or fetch it
//! with a server token; the key that seals the service account signing key
//! in the store is derived from the CA's), open the stores, start Raft and the two gRPC
//! servers over mutual TLS (public API with the open join exchange, peer
//! Raft traffic), bootstrap or join the cluster, and stop cleanly when the
//! shutdown token fires.
//!
//! A master restarted at another address (a new DHCP lease, a moved
//! machine) announces the new one: admin.conf is rewritten to it when the
//! PKI is prepared, and a one-member cluster's membership takes it too
//! ([`Cluster::readdress`]).
//!
//! Before it opens anything, a master checks its data dir's format marker
//! and finishes a cluster reset a crash interrupted; [`reset_cluster`] is
//! `--cluster-reset` itself, run instead of the master.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::datastore::DatastoreService;
use crate::api::nodes::NodeService;
use crate::api::transport::ClientTransport;
use crate::api::ApiService;
use crate::client::Client;
use crate::cluster::{Cluster, Readdress};
use crate::controllers::kubernetes_service::BuiltInServices;
use crate::datastore::cluster_reset::{self, ResetError, ResetOutcome, ResetRequest};
use crate::datastore::data_format::{self, DataFormatError};
use crate::datastore::schedule::{ScheduledSnapshots, SnapshotSchedule};
use crate::datastore::snapshots::SnapshotDir;
use crate::events::{EventStore, SystemClock};
use crate::leader::DutiesConfig;
use crate::node_lifecycle::{HeartbeatTable, LifecycleConfig};
use crate::resource_metrics::ResourceMetrics;
use crate::security::join_service::{JoinService, JOIN_PATH};
use crate::security::service_account_key::{SealingKey, ServiceAccountKeys, SigningKeyError};
use crate::security::service_account_tokens::TokenAuthority;
use crate::security::{MasterPki, PkiConfig};
use crate::store::log_store::{LogStore, LogStoreError};
use crate::store::network::{PeerNetwork, PeerRelease};
use crate::store::peer_service::PeerService;
use crate::store::proposer::Proposer;
use crate::store::state_machine::{ObjectStore, StateMachine, StateMachineError};
use crate::store::{raft_config, MemberNode, NodeId, Raft};
use crate::writer::ObjectWriter;

/// How a master is run.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub data_dir: PathBuf,
    /// Where the public API listens.
    pub listen: SocketAddr,
    /// Where peer masters send Raft traffic.
    pub raft_listen: SocketAddr,
    /// The API address other masters and clients should use.
    pub advertise_api: String,
    /// The Raft address other masters should use.
    pub advertise_raft: String,
    /// The API address of any member, to join its cluster on first start.
    pub join: Option<String>,
    /// The server token used with `join` (needed until this master has the
    /// cluster CA).
    pub token: Option<String>,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Other places admin.conf is kept up to date (`/etc/skiff/admin.conf`).
    pub admin_conf_copies: Vec<PathBuf>,
    /// Rate limits of the join exchange.
    pub join_limits: crate::security::join_service::JoinLimits,
    /// Log entries between snapshots.
    pub snapshot_after_entries: u64,
    /// Scheduled snapshots of the store, taken by the leader into
    /// `<data-dir>/snapshots`.
    pub snapshot_schedule: SnapshotSchedule,
    /// Raft's heartbeat interval and election timeout.
    pub raft_timings: crate::store::RaftTimings,
    /// Failure detection timing.
    pub lifecycle: LifecycleConfig,
    /// What pod garbage collection keeps (`--terminated-pod-gc-threshold`).
    pub pod_gc: crate::controllers::pod_gc::PodGcConfig,
    /// The cluster CIDR nodes get their pod subnets from.
    pub pod_cidrs: crate::controllers::node_ipam::PodCidrConfig,
    /// Where Services' clusterIPs come from.
    pub service_cidr: skiff_objects::Ipv4Net,
    /// Where Services' nodePorts come from (`--service-node-port-range`).
    pub service_node_ports: crate::node_ports::NodePortRange,
    /// The cluster DNS Service's address, told to every node.
    pub cluster_dns: Ipv4Addr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Tell systemd `READY=1` once serving (off when an agent in the same
    /// process reports readiness instead).
    pub notify_ready: bool,
}

/// Why a master could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("service CIDR {0}")]
    ServiceCidr(crate::service_ips::ServiceIpError),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node id file {path}: {message}")]
    NodeId { path: PathBuf, message: String },
    #[error(transparent)]
    Log(#[from] LogStoreError),
    #[error(transparent)]
    State(#[from] StateMachineError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("joining the cluster through {addr}: {message}")]
    Join { addr: String, message: String },
    #[error("certificates: {0}")]
    Pki(#[from] crate::security::PkiError),
    #[error(transparent)]
    ServiceAccountKey(#[from] SigningKeyError),
    #[error(transparent)]
    DataFormat(#[from] DataFormatError),
    #[error("cluster reset: {0}")]
    Reset(#[from] ResetError),
}

pub type Result<T> = std::result::Result<T, MasterError>;

/// Runs a master until `shutdown` is cancelled.
pub async fn run(config: MasterConfig, shutdown: CancellationToken) -> Result<()> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| MasterError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    match data_format::check(&data_dir)? {
        data_format::Checked::Marked => {
            tracing::info!(dir = %data_dir.display(), format = data_format::CURRENT, "the data dir had no format marker (a new one); marked");
        }
        data_format::Checked::Upgraded { from } => {
            tracing::info!(dir = %data_dir.display(), from, to = data_format::CURRENT, "upgraded the data dir's format");
        }
        data_format::Checked::Current => {}
    }
    // Another master on this data dir holds its log's lock: refused before
    // anything in the data dir changes (an interrupted cluster reset
    // finished, below).
    let log_lock = crate::store::log_file::lock(&data_dir.join(crate::store::LOG_FILE))
        .map_err(LogStoreError::from)?;
    if let Some(previous) = cluster_reset::finish_pending(&data_dir)? {
        tracing::warn!(previous = %previous.display(), "finished an interrupted cluster reset");
    }
    // Where auto-deployed manifests go.
    let manifests = data_dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|source| MasterError::DataDir {
        path: manifests.clone(),
        source,
    })?;
    let id = load_or_create_node_id(&data_dir)?;
    let pki = Arc::new(prepare_pki(&config, id, &shutdown).await?);
    let transport = pki.client()?;
    let log = LogStore::open_locked(&data_dir.join(crate::store::LOG_FILE), log_lock)?;
    let store = ObjectStore::open(&data_dir)?;
    let raft_settings = raft_config(config.raft_timings, config.snapshot_after_entries)
        .validate()
        .map_err(|e| MasterError::Raft(e.to_string()))?;
    let release = PeerRelease::this(data_format::CURRENT);
    let peers = PeerNetwork::new(transport.clone(), release.clone());
    let contacts = peers.contacts();
    let raft = Raft::new(
        id,
        Arc::new(raft_settings),
        peers,
        log,
        StateMachine::new(store.clone()),
    )
    .await
    .map_err(|e| MasterError::Raft(e.to_string()))?;
    let metrics = crate::metrics::MasterMetrics::default();
    let cluster = Cluster {
        id,
        raft: raft.clone(),
        store: store.clone(),
        proposer: Proposer::spawn(raft.clone()),
        commit_latency: metrics.raft_commit.clone(),
        read_index: metrics.read_index.clone(),
        contacts,
    };
    let service_ips = crate::service_ips::ServiceIps::new(config.service_cidr)
        .map_err(MasterError::ServiceCidr)?;
    let node_ports = crate::node_ports::NodePorts::new(config.service_node_ports);
    let writer = ObjectWriter::new(cluster.clone(), Arc::new(service_ips), Arc::new(node_ports));

    let api_listener = bind("API", config.listen).await?;
    let raft_listener = bind("Raft", config.raft_listen).await?;
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerService::new(raft.clone(), release).into_server())
            .serve_with_incoming_shutdown(
                skiff_security::listener::incoming(
                    raft_listener,
                    pki.peer_server_config()?,
                    shutdown.clone(),
                ),
                shutdown.clone().cancelled_owned(),
            ),
    );
    let heartbeats = Arc::new(HeartbeatTable::default());
    metrics.add_gauges(store.clone(), raft.clone(), heartbeats.clone());
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = bind("metrics", addr).await?;
            let ready_raft = raft.clone();
            let probes = Arc::new(skiff_telemetry::Probes {
                registry: metrics.registry.clone(),
                ready: Box::new(move || match ready_raft.metrics().borrow().current_leader {
                    Some(_) => Ok(()),
                    None => Err("no Raft leader known".into()),
                }),
            });
            Some(tokio::spawn(skiff_telemetry::serve(
                listener,
                probes,
                shutdown.clone(),
            )))
        }
    };
    let me = MemberNode {
        raft_addr: config.advertise_raft.clone(),
        api_addr: config.advertise_api.clone(),
    };
    // Events live in the leader's memory only (crate::events), as do the
    // nodes' resource usage readings (crate::resource_metrics).
    let events = Arc::new(EventStore::new(Arc::new(SystemClock)));
    let resource_metrics = ResourceMetrics::default();
    // Service account tokens: the signing key is the store's, sealed under
    // a key every master derives from the CA's (security::service_account_key).
    let sealing = Arc::new(SealingKey::from_ca_key(pki.ca.key_pem())?);
    let tokens = Arc::new(TokenAuthority::new(
        store.clone(),
        ServiceAccountKeys::new(sealing.clone()),
    ));
    let api = Arc::new(ApiService::new(
        writer.clone(),
        transport.clone(),
        me.clone(),
        events.clone(),
        resource_metrics.clone(),
        tokens,
        shutdown.clone(),
    ));
    let rest =
        crate::rest::RestApi::new(api.clone(), config.advertise_api.clone(), shutdown.clone());
    let datastore = DatastoreService::new(
        cluster.clone(),
        transport.clone(),
        SnapshotDir::new(&data_dir),
        config.advertise_api.clone(),
    );
    let network = skiff_proto::node::ClusterNetwork {
        cluster_cidr: config.pod_cidrs.cluster.to_string(),
        service_cidr: config.service_cidr.to_string(),
        cluster_dns: config.cluster_dns.to_string(),
    };
    let nodes = NodeService::new(
        writer.clone(),
        transport.clone(),
        heartbeats.clone(),
        pki.ca.clone(),
        network,
        events.clone(),
        shutdown.clone(),
    )
    .with_resource_metrics(resource_metrics.clone());
    let join_service = JoinService::new(
        pki.ca.clone(),
        pki.server_token.clone(),
        store.clone(),
        config.join_limits,
    );
    // gRPC and the Kubernetes REST API share the port, by content type.
    let grpc = tonic::service::Routes::new(ApiService::shared_server(api.clone()))
        .add_service(ApiService::pod_sessions_server(api))
        .add_service(datastore.into_server())
        .add_service(nodes.into_server())
        .add_service(join_service.into_server());
    let routes = tonic::service::Routes::from(crate::rest::grpc_or_rest(
        grpc.into_axum_router(),
        rest.into_router(),
    ));
    // Served by our own accept loop rather than tonic's, whose connections
    // cannot be upgraded (kubectl exec's WebSocket): see crate::http_serving.
    let api_service = tower::ServiceBuilder::new()
        .layer(crate::metrics::ApiMetricsLayer {
            metrics: metrics.clone(),
        })
        .layer(skiff_security::gate::RequireIdentity { open: &[JOIN_PATH] })
        .service(routes);
    let api_server = tokio::spawn(crate::http_serving::serve(
        skiff_security::listener::incoming(
            api_listener,
            pki.api_server_config()?,
            shutdown.clone(),
        ),
        api_service,
        shutdown.clone(),
    ));

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| MasterError::Raft(e.to_string()))?;
    if !initialized {
        match &config.join {
            Some(addr) => join(addr, id, &me, &transport, &shutdown).await?,
            None => {
                tracing::info!(id, "bootstrapping a new one-member cluster");
                raft.initialize(BTreeMap::from([(id, me.clone())]))
                    .await
                    .map_err(|e| MasterError::Raft(e.to_string()))?;
            }
        }
    } else {
        if config.join.is_some() {
            tracing::info!(id, "already a cluster member; --join ignored");
        }
        tokio::spawn(readdress(cluster.clone(), me.clone(), shutdown.clone()));
    }

    let rotation = tokio::spawn(crate::security::rotation::run(
        pki.clone(),
        shutdown.clone(),
    ));
    let duties = DutiesConfig {
        lifecycle: config.lifecycle,
        pod_gc: config.pod_gc,
        pod_cidrs: config.pod_cidrs,
        manifests_dir: manifests,
        snapshots: ScheduledSnapshots {
            dir: SnapshotDir::new(&data_dir),
            schedule: config.snapshot_schedule,
        },
        built_in_services: BuiltInServices {
            api_service_ip: crate::service_ips::api_service_ip(config.service_cidr),
            cluster_dns: config.cluster_dns,
        },
        service_account_key: sealing,
        cluster_ca_pem: pki.ca.cert_pem().to_owned(),
    };
    let duties = tokio::spawn(crate::leader::run(
        writer,
        heartbeats,
        duties,
        metrics.clone(),
        events,
        resource_metrics,
        shutdown.clone(),
    ));
    tracing::info!(
        id,
        api = %config.listen,
        raft = %config.raft_listen,
        advertise_api = %config.advertise_api,
        advertise_raft = %config.advertise_raft,
        "skiff master serving"
    );
    if let Some(warning) = loopback_warning(&config.advertise_api) {
        tracing::warn!("{warning}");
    }
    if config.notify_ready {
        skiff_telemetry::sd_notify::ready();
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let _ = raft.shutdown().await;
    let _ = duties.await;
    let _ = rotation.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    if tokio::time::timeout(
        crate::http_serving::DRAIN + Duration::from_secs(1),
        api_server,
    )
    .await
    .is_err()
    {
        tracing::warn!("API server did not stop in time");
    }
    match tokio::time::timeout(Duration::from_secs(5), peer_server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "Raft peer server ended with an error"),
        Err(_) => tracing::warn!("Raft peer server did not stop within 5 s"),
        _ => {}
    }
    Ok(())
}

/// `--cluster-reset [--restore FILE]`: makes this master's data dir (which
/// no running master uses) a one-member cluster's, with this master at the
/// addresses it advertises, from its own data or from the snapshot
/// `restore`. See [`cluster_reset`]. Blocking (disk I/O).
pub fn reset_cluster(config: &MasterConfig, restore: Option<&Path>) -> Result<ResetOutcome> {
    let data_dir: &Path = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| MasterError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    data_format::check(data_dir)?;
    let node_id = load_or_create_node_id(data_dir)?;
    let request = ResetRequest {
        data_dir,
        node_id,
        me: MemberNode {
            raft_addr: config.advertise_raft.clone(),
            api_addr: config.advertise_api.clone(),
        },
        restore,
    };
    Ok(cluster_reset::reset(&request)?)
}

/// Loads or creates the PKI; a master joining without the CA fetches it
/// with its server token, retrying while the member is unreachable.
async fn prepare_pki(
    config: &MasterConfig,
    id: NodeId,
    shutdown: &CancellationToken,
) -> Result<MasterPki> {
    let has_ca = crate::security::pki::tls_dir(&config.data_dir)
        .join("ca.key")
        .exists();
    let join = match (&config.join, &config.token) {
        (Some(addr), Some(token)) => Some((addr.clone(), token.clone())),
        (Some(addr), None) if !has_ca => {
            return Err(MasterError::Join {
                addr: addr.clone(),
                message: "a server token (--token) is needed to join: use the first master's <data-dir>/token or `skiff token create --usage server`".to_owned(),
            })
        }
        _ => None,
    };
    let pki_config = PkiConfig {
        data_dir: config.data_dir.clone(),
        node_id: id,
        sans: config.tls_sans.clone(),
        advertise_api: config.advertise_api.clone(),
        advertise_raft: config.advertise_raft.clone(),
        listen: vec![config.listen, config.raft_listen],
        join,
        admin_conf_copies: config.admin_conf_copies.clone(),
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match MasterPki::prepare(pki_config.clone()).await {
            Err(crate::security::PkiError::Join(e)) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot fetch the cluster CA yet; retrying");
            }
            other => return Ok(other?),
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(MasterError::Join {
                    addr: config.join.clone().unwrap_or_default(),
                    message: "shut down before joining".to_owned(),
                })
            }
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How long a restarted one-member master waits to lead before it gives
/// up recording its new address (it leads within a few election timeouts).
const READDRESS_WITHIN: Duration = Duration::from_secs(30);

/// Records this master's advertised addresses in the membership when it
/// is the only member and the membership records others; logs what it
/// did.
async fn readdress(cluster: Cluster, me: MemberNode, shutdown: CancellationToken) {
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => return,
        outcome = cluster.readdress(&me, READDRESS_WITHIN) => outcome,
    };
    match outcome {
        Ok(Readdress::Unchanged) | Ok(Readdress::NotAMember) => {}
        Ok(Readdress::Updated { old }) => tracing::info!(
            %old,
            new = %me,
            "this master's address changed; the one-member cluster now records the new one"
        ),
        Ok(Readdress::Shared { recorded, members }) => tracing::warn!(
            %recorded,
            advertised = %me,
            members,
            "this master advertises other addresses than the membership records, and other \
             members share the cluster, so the record stays: they reach this master at the \
             recorded addresses; to move it, run `skiff cluster readdress {} --raft-addr {} \
             --api-addr {}` against any master",
            cluster.id,
            me.raft_addr,
            me.api_addr
        ),
        Err(e) => tracing::warn!(
            error = %e,
            advertised = %me,
            "could not record this master's new address in the membership; restart to retry"
        ),
    }
}

/// What to warn about an advertised API address no other machine can
/// reach (a loopback one), or `None`.
fn loopback_warning(advertise_api: &str) -> Option<String> {
    let addr: SocketAddr = advertise_api.parse().ok()?;
    addr.ip().is_loopback().then(|| {
        format!(
            "this master advertises {advertise_api}, a loopback address: agents and masters on \
             other machines cannot reach it; listen on 0.0.0.0 (the default) with a default \
             route, or give --advertise-address (or --node-ip) with this machine's LAN address"
        )
    })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MasterError::Bind { what, addr, source })
}

/// The node id is random, chosen on first start and kept in the data dir.
fn load_or_create_node_id(dir: &Path) -> Result<NodeId> {
    let path = dir.join("node-id");
    let fail = |message: String| MasterError::NodeId {
        path: path.clone(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| fail(format!("not a node id: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = loop {
                let id: u64 = rand::random::<u64>() >> 1;
                if id != 0 {
                    break id;
                }
            };
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
                writeln!(f, "{id}").map_err(|e| fail(e.to_string()))?;
                f.sync_all().map_err(|e| fail(e.to_string()))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
            Ok(id)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Asks an existing member to add this master, retrying until it works.
async fn join(
    addr: &str,
    id: NodeId,
    me: &MemberNode,
    transport: &ClientTransport,
    shutdown: &CancellationToken,
) -> Result<()> {
    let fail = |message: String| MasterError::Join {
        addr: addr.to_owned(),
        message,
    };
    let client = Client::new(addr, transport).map_err(|e| fail(e.to_string()))?;
    let mut delay = Duration::from_millis(200);
    loop {
        tracing::info!(id, through = addr, "joining cluster");
        match client.join(id, &me.raft_addr, &me.api_addr).await {
            Ok(response) => {
                tracing::info!(members = response.members.len(), "joined cluster");
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "join failed; retrying");
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(fail("shut down before joining".to_owned())),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_warning;

    #[test]
    fn advertising_loopback_is_warned_about() {
        let warning = loopback_warning("127.0.0.1:6443").expect("a warning");
        assert!(
            warning.contains("127.0.0.1:6443") && warning.contains("--advertise-address"),
            "{warning}"
        );
        assert!(loopback_warning("[::1]:6443").is_some());
        assert_eq!(loopback_warning("192.168.1.10:6443"), None);
        assert_eq!(loopback_warning("master.lan:6443"), None);
    }
}
