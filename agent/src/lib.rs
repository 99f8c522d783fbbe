//! The skiff agent: runs the pods bound to its node through containerd and
//! keeps them running. It registers the node, heartbeats to the leader,
//! watches its pods, and reports their status ([`master_link`]); a pod
//! manager runs one worker per pod ([`pods`]) over the containerd runtime
//! ([`runtime`]); image archives dropped into `<data-dir>/images/` are
//! imported ([`runtime::import`]); masters read container logs from the
//! agent's log endpoint ([`log_server`]), and open exec and port-forward
//! sessions on the same mutual-TLS endpoint ([`pod_sessions`]); and the
//! node's pods get cluster DNS from the agent itself ([`dns`]), with their
//! `resolv.conf` and Service variables made from what it knows; load
//! balancers' health checks of `externalTrafficPolicy: Local` Services are
//! answered on their `healthCheckNodePort`s ([`service_health`]). `local-path`
//! persistent volumes live under `<data-dir>/storage/`, which the Node's
//! annotations tell the masters; the directories of deleted ones are removed
//! ([`local_volumes`]). The node's and its pods' resource usage is read
//! from cgroups every ten seconds and rides on the heartbeats to the
//! leader, for the metrics API ([`resource_usage`]).
//!
//! The modules are layered: [`runtime`], [`network`], [`dns`] and
//! [`service_health`] at the bottom (containerd, the kernel, the DNS
//! server, the health check server), [`master_link`] beside
//! them (the agent protocol, owning what crosses to the pods), [`pods`] on
//! top using all of them, [`resource_usage`] above (the runtime's
//! containers, the pods' cgroups). What joins them, such as following the cluster's
//! Nodes and Services from the masters into the pod network and the DNS
//! index, is wired here.
//!
//! Static stability: containers belong to their runc shims, so they keep
//! running while the agent restarts or no master answers; a restarted agent
//! adopts them, and the pod specs it last saw are cached on disk, as are
//! its pod subnet, the cluster network the masters told it
//! ([`cluster_network`]) and the last Services and Endpoints (its Service
//! rules and cluster DNS answers: [`network::services::KnownServices`]).
//!
//! A first start needs the masters (to join, to register and learn the
//! cluster network, to get a pod subnet): it is bounded by `--join-timeout`
//! and reported to systemd as it goes ([`startup`]).
//!
//! Disk hygiene, since SD cards fill and wear: unused images are collected
//! at the kubelet's thresholds ([`runtime::image_gc`]), what is left of
//! past pods and runs is removed ([`pods::leftovers`]), and container logs
//! and the private containerd's log are size-capped ([`log_rotation`]).

pub mod cluster_network;
pub mod credentials;
pub mod dns;
pub mod local_volumes;
pub mod log_rotation;
pub mod log_server;
pub mod master_link;
pub mod metrics;
pub mod network;
pub mod node_info;
pub mod pod_sessions;
pub mod pods;
pub mod resource_usage;
pub mod runtime;
pub mod service_health;
pub mod startup;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster_network::ClusterNetwork;
use crate::dns::{ClusterIndex, DnsConfig, SharedIndex};
use crate::master_link::Masters;
use crate::network::services::{self, reconcile_services, KnownServices};
use crate::network::{reconcile_overlay, PodNetwork};
use crate::pods::dns_policy::ServiceDiscovery;
use crate::pods::layout::PodLayout;
use crate::pods::sandbox::HostSandbox;
use crate::pods::WorkerContext;
use crate::runtime::image_gc::{self, ImageGc, Statvfs};
use crate::runtime::images::ImageStore;
use crate::runtime::registry::Registries;
use crate::runtime::supervisor::{self, ContainerdLayout};
use crate::runtime::{containers::Runtime, Containerd};
use crate::service_health::HealthServers;
use crate::startup::{Stage, Startup};

pub use startup::DEFAULT_JOIN_TIMEOUT;

/// How often an agent heartbeats unless told otherwise
/// (`--heartbeat-interval`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: at least one --server is required")]
    NoServers,
    #[error("invalid configuration: --node-name must not be empty")]
    NoNodeName,
    #[error("invalid configuration: --node-ip {node_ip}: the pod network needs an IPv4 node address; give one with --node-ip or run with --pod-network none")]
    NodeIpNotIpv4 { node_ip: String },
    #[error("pod subnet in {file}: {source}; remove the file to get one from the masters again")]
    PodSubnet {
        file: PathBuf,
        #[source]
        source: network::subnet::SubnetError,
    },
    #[error("setting up the pod network: {0}")]
    PodNetwork(#[source] network::NetworkError),
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialError),
    #[error(transparent)]
    Security(#[from] skiff_security::SecurityError),
    #[error(transparent)]
    StartTimeout(#[from] startup::StartTimeout),
    #[error("cluster network: {0}")]
    ClusterNetwork(#[from] cluster_network::ClusterNetworkError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How the agent is set up; the CLI fills this from flags.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Masters' API addresses (`host:port`); any of them will do.
    pub servers: Vec<String>,
    pub node_name: String,
    pub data_dir: PathBuf,
    /// The address other nodes and masters reach this node at.
    pub node_ip: Option<String>,
    /// Use this containerd instead of starting a private one.
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace holding this agent's containers.
    pub containerd_namespace: String,
    /// Join token: needed until the node has a certificate.
    pub token: Option<String>,
    /// Where the agent's log endpoint listens.
    pub listen: SocketAddr,
    /// `registries.yaml`: credentials and plain-HTTP hosts.
    pub registry_config: PathBuf,
    pub heartbeat_interval: Duration,
    pub image_poll_interval: Duration,
    pub labels: BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// The pod network (bridge, routes or VXLAN to other nodes, nftables
    /// on this host) and how it reaches other nodes; `None`: pods get
    /// loopback only.
    pub pod_network: Option<network::overlay::Mode>,
    /// Whether pods' traffic may skip the host's stack where the kernel
    /// allows it (`network::fast_path`).
    pub pod_fast_path: bool,
    /// The cluster ranges and DNS address to use instead of the masters'.
    pub network_overrides: cluster_network::Overrides,
    /// How long a start that needs the masters waits for them; `None`: as
    /// long as it takes.
    pub join_timeout: Option<Duration>,
    /// When unused images are removed.
    pub image_gc: image_gc::ImageGcConfig,
    /// The node's resolver settings: where cluster DNS forwards what is
    /// not the cluster's, and what pods with `dnsPolicy: Default` get.
    pub resolv_conf: PathBuf,
    /// Gives the allocator's free memory back to the kernel; called after
    /// each burst of work on the Service lists. The binary sets it (glibc's
    /// `malloc_trim`); `None`: nothing is given back.
    pub trim_heap: Option<fn()>,
}

impl AgentConfig {
    pub fn new(servers: Vec<String>, node_name: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            servers,
            node_name: node_name.to_string(),
            data_dir,
            node_ip: None,
            containerd_socket: None,
            containerd_namespace: "skiff".into(),
            token: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 10250)),
            registry_config: PathBuf::from("/etc/skiff/registries.yaml"),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            image_poll_interval: Duration::from_secs(2),
            labels: BTreeMap::new(),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 10248))),
            pod_network: Some(network::overlay::Mode::Vxlan),
            pod_fast_path: true,
            network_overrides: cluster_network::Overrides::default(),
            join_timeout: Some(DEFAULT_JOIN_TIMEOUT),
            image_gc: image_gc::ImageGcConfig::default(),
            resolv_conf: PathBuf::from(dns::resolv_conf::DEFAULT_PATH),
            trim_heap: None,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Runs the agent until `shutdown` is cancelled. Pods keep running after.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    if config.servers.is_empty() {
        return Err(Error::NoServers);
    }
    if config.node_name.is_empty() {
        return Err(Error::NoNodeName);
    }
    let mut startup = Startup::new(&config.servers, config.join_timeout);
    let default_route = || node_info::default_route_ipv4(std::path::Path::new("/"));
    let given_ip = config.node_ip.as_deref();
    let (node_ip, node_ip_source) = node_info::choose_node_ip(given_ip, default_route);
    if let Some(warning) = node_info::node_ip_warning(&node_ip, node_ip_source) {
        startup.warn(warning);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
        "creating data dir {}",
        config.data_dir.display()
    )))?;
    // Credentials first: nothing else is worth starting without them. The
    // node password claims the node's name (see skiff_security::node_password).
    let node_password = skiff_security::node_password::load_or_create(
        &credentials::node_password_file(&config.data_dir),
    )?;
    let tls_dir = credentials::tls_dir(&config.data_dir);
    if credentials::load(&tls_dir, &config.node_name).is_none() {
        startup.joining();
    }
    let join = credentials::load_or_join(
        &config.data_dir,
        &config.node_name,
        &config.servers,
        config.token.as_deref(),
        &node_password,
        &shutdown,
    );
    let node_credentials = startup.within(Stage::Joining, join).await??;
    let socket = match &config.containerd_socket {
        Some(s) => s.clone(),
        None => {
            let layout = ContainerdLayout::new(&config.data_dir);
            supervisor::start(layout.clone(), shutdown.clone()).await?;
            layout.socket()
        }
    };
    let containerd = Containerd::connect(
        &socket,
        &config.containerd_namespace,
        Duration::from_secs(30),
    )
    .await?;
    let runtime_version = format!("containerd://{}", containerd.version().await?);
    tracing::info!(socket = %socket.display(), version = %runtime_version, namespace = %config.containerd_namespace, "connected to containerd");

    let metrics = metrics::AgentMetrics::default();
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io(format!("listening on {addr} for metrics")))?;
            let ready_containerd = containerd.clone();
            let containerd_ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let flag = containerd_ok.clone();
            let watch_shutdown = shutdown.clone();
            // containerd's health, checked every few seconds for /readyz.
            tokio::spawn(async move {
                loop {
                    let ok = ready_containerd.version().await.is_ok();
                    flag.store(ok, std::sync::atomic::Ordering::Relaxed);
                    tokio::select! {
                        _ = watch_shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            });
            let probes = Arc::new(skiff_telemetry::Probes {
                registry: metrics.registry.clone(),
                ready: Box::new(move || {
                    if containerd_ok.load(std::sync::atomic::Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err("containerd does not answer".into())
                    }
                }),
            });
            Some(tokio::spawn(skiff_telemetry::serve(
                listener,
                probes,
                shutdown.clone(),
            )))
        }
    };
    let registries = Registries::load(&config.registry_config)?;
    let images = Arc::new(ImageStore::new(containerd.clone(), registries));
    let layout = Arc::new(PodLayout::new(&config.data_dir));
    let runtime = Arc::new(Runtime::new(
        containerd.clone(),
        images.clone(),
        layout.container_io_dir(),
    ));
    // Containers started with stdin or a terminal kept running while the
    // agent was away: their output is copied on from here.
    if let Err(e) = runtime.recover_container_io().await {
        tracing::warn!(error = %e, "reopening containers' own stdio: their output is not copied to their logs until the agent starts again");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listening on {}", config.listen)))?;
    let agent_port = listener
        .local_addr()
        .map_err(io("reading local address"))?
        .port();
    let log_service = log_server::LogService::new(layout.clone(), shutdown.clone());
    let session_service =
        pod_sessions::SessionService::new(runtime.clone(), layout.clone(), shutdown.clone());
    let serve_shutdown = shutdown.clone();
    let incoming = skiff_security::listener::incoming(
        listener,
        node_credentials.server_config()?,
        shutdown.clone(),
    );
    let server = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(skiff_proto::node::agent_logs_server::AgentLogsServer::new(
                log_service,
            ))
            .add_service(
                skiff_proto::node::agent_sessions_server::AgentSessionsServer::new(session_service),
            )
            .serve_with_incoming_shutdown(incoming, serve_shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "agent log and session endpoint stopped");
        }
    });

    let mut node = node_info::node_object(
        std::path::Path::new("/"),
        &node_info::NodeFacts {
            name: &config.node_name,
            node_ip: &node_ip,
            runtime_version: &runtime_version,
            agent_port,
            labels: config.labels.clone(),
        },
    );
    node.metadata
        .get_or_insert_with(Default::default)
        .annotations
        .insert(
            skiff_security::node_password::ANNOTATION.into(),
            skiff_security::node_password::hash(&node_password),
        );
    let storage_dir = local_volumes::storage_dir(&config.data_dir);
    node.metadata
        .get_or_insert_with(Default::default)
        .annotations
        .insert(
            local_volumes::STORAGE_DIR_ANNOTATION.into(),
            storage_dir.display().to_string(),
        );
    let masters = Masters::new(config.servers.clone(), node_credentials.transport()?);
    let renewal = tokio::spawn(credentials::renewal_loop(
        node_credentials.clone(),
        masters.clone(),
        shutdown.clone(),
    ));

    // The cluster network as the masters told it (kept from an earlier
    // start, or learned now by registering), under this agent's overrides.
    let network_file = cluster_network::file(&config.data_dir);
    let subnet_file = network::subnet_file(&config.data_dir);
    let mut masters_network = ClusterNetwork::load(&network_file)?;
    let needs_subnet = config.pod_network.is_some() && !subnet_file.exists();
    if masters_network.is_none() || needs_subnet {
        let name = &config.node_name;
        startup.status(&format!("waiting for the master to register {name}"));
        let register = master_link::register(&masters, &node, &shutdown);
        let Some(registered) = startup.within(Stage::Registering, register).await? else {
            return Ok(());
        };
        startup.status(&format!("registered as {name}"));
        match &registered.network {
            Some(theirs) => {
                let theirs = ClusterNetwork::from_wire(theirs)?;
                theirs.save(&network_file)?;
                masters_network = Some(theirs);
            }
            None => tracing::warn!(
                "the masters did not say the cluster network (they predate it): using this \
                 agent's flags, else the defaults"
            ),
        }
    }
    let cluster = config.network_overrides.apply(masters_network);
    let cluster_dns = cluster.dns_address();
    tracing::info!(
        cluster_cidr = %cluster.cluster_cidr,
        service_cidr = %cluster.service_cidr,
        cluster_dns = %cluster_dns,
        "cluster network"
    );

    let mut overlay = None;
    let mut service_rules = None;
    let mut dns_server = None;
    // What DNS answers from and pods' Service variables are made of.
    let services_index = SharedIndex::default();
    let pod_network = if let Some(mode) = config.pod_network {
        let Ok(node_ipv4) = node_ip.parse::<Ipv4Addr>() else {
            return Err(Error::NodeIpNotIpv4 { node_ip });
        };
        let subnet = match std::fs::read_to_string(&subnet_file) {
            Ok(s) => s.trim().to_string(),
            Err(_) => {
                startup.status("waiting for the masters to give this node a pod subnet");
                let wait = master_link::wait_pod_cidr(&masters, &config.node_name, &shutdown);
                let Some(cidr) = startup.within(Stage::PodSubnet, wait).await? else {
                    return Ok(());
                };
                if let Some(dir) = subnet_file.parent() {
                    std::fs::create_dir_all(dir).map_err(io("creating the network dir"))?;
                }
                std::fs::write(&subnet_file, &cidr).map_err(io("saving the pod subnet"))?;
                cidr
            }
        };
        let subnet = match subnet.parse::<network::subnet::Subnet>() {
            Ok(subnet) => subnet,
            Err(source) => {
                return Err(Error::PodSubnet {
                    file: subnet_file,
                    source,
                });
            }
        };
        let mut network_config =
            network::NetworkConfig::new(cluster.cluster_cidr, cluster.service_cidr, node_ipv4);
        network_config.cluster_dns = Some(cluster_dns);
        network_config.mode = mode;
        network_config.fast_path = config.pod_fast_path;
        network_config.trim_heap = config.trim_heap;
        let net = network::PodNetwork::setup(network_config, subnet, &config.data_dir)
            .await
            .map_err(Error::PodNetwork)?;
        let meta = node.metadata.get_or_insert_with(Default::default);
        meta.annotations
            .insert(network::overlay::ANNOTATION_VTEP_MAC.into(), net.vtep_mac());
        meta.annotations.insert(
            network::overlay::ANNOTATION_PUBLIC_IP.into(),
            node_ipv4.to_string(),
        );
        meta.annotations.insert(
            network::overlay::ANNOTATION_MODE.into(),
            mode.as_str().into(),
        );
        let net = Arc::new(net);
        overlay = Some(tokio::spawn(overlay_loop(
            masters.clone(),
            net.clone(),
            config.node_name.clone(),
            shutdown.clone(),
        )));
        service_rules = Some(tokio::spawn(service_loop(
            masters.clone(),
            net.clone(),
            services_index.clone(),
            KnownServices::new(&config.data_dir),
            config.trim_heap,
            shutdown.clone(),
        )));
        let dns_config = DnsConfig {
            listen: SocketAddr::from((net.gateway(), 53)),
            cluster_dns,
            service_cidr: cluster.service_cidr.net(),
            cluster_cidr: cluster.cluster_cidr.net(),
            node_ip: node_ipv4,
            resolv_conf: config.resolv_conf.clone(),
        };
        dns_server = Some(tokio::spawn(dns::run(
            dns_config,
            services_index.clone(),
            shutdown.clone(),
        )));
        Some(net)
    } else {
        None
    };
    // What a container without a limit may use (the downward API's
    // resources, memory-backed emptyDirs), and where pods read their
    // ConfigMaps and Secrets from.
    let node_allocatable = node
        .status
        .as_ref()
        .map(|s| s.allocatable.clone())
        .unwrap_or_default();
    let config_source = Arc::new(master_link::MasterConfigSource::new(masters.clone()));
    let volume_cleaner = tokio::spawn(local_volumes::clean_loop(
        config_source.clone(),
        storage_dir.clone(),
        shutdown.clone(),
    ));
    let (desired_tx, desired_rx) = mpsc::channel(256);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = master_link::event_channel(metrics.events_dropped.clone());
    // The node's resource usage, read every ten seconds, for the
    // heartbeats to carry, with how full its storage dir's filesystem is.
    let (usage_tx, usage_rx) = tokio::sync::watch::channel(None);
    let usage_sampler = tokio::spawn(resource_usage::run(
        runtime.clone(),
        resource_usage::host::HostUsage::default().with_storage_dir(storage_dir),
        resource_usage::SAMPLE_EVERY,
        usage_tx,
        shutdown.clone(),
    ));
    let links = [
        tokio::spawn(master_link::heartbeat_loop(
            masters.clone(),
            node,
            config.heartbeat_interval,
            usage_rx,
            shutdown.clone(),
        )),
        tokio::spawn(master_link::watch_loop(
            masters.clone(),
            config.node_name.clone(),
            desired_tx,
            shutdown.clone(),
        )),
        tokio::spawn(master_link::status_loop(
            masters.clone(),
            reports_rx,
            shutdown.clone(),
        )),
        tokio::spawn(master_link::event_loop(
            masters,
            config.node_name.clone(),
            events_rx,
            metrics.events_dropped.clone(),
            shutdown.clone(),
        )),
    ];
    tracing::info!(node = %config.node_name, node_ip = %node_ip, port = agent_port, "agent running");
    let name = &config.node_name;
    startup.status(&format!("running as {name}, node IP {node_ip}"));
    skiff_telemetry::sd_notify::ready();

    let images_dir = config.data_dir.join("images");
    let scratch = config.data_dir.join("tmp");
    std::fs::create_dir_all(&images_dir)
        .map_err(io(format!("creating {}", images_dir.display())))?;
    std::fs::create_dir_all(&scratch).map_err(io(format!("creating {}", scratch.display())))?;
    let _ = std::fs::remove_dir_all(&scratch).and_then(|_| std::fs::create_dir_all(&scratch));
    // Archives present at start are imported before any pod starts (and
    // after the start is reported: a big archive on a slow disk can take
    // longer than systemd waits for one).
    let import_state = runtime::import::import_image_dir(&images, &images_dir, &scratch).await;
    let importer = tokio::spawn(runtime::import::watch_image_dir(
        images.clone(),
        images_dir,
        scratch,
        config.image_poll_interval,
        import_state,
        shutdown.clone(),
    ));
    let image_fs = match (&config.image_gc.path, &config.containerd_socket) {
        (Some(path), _) => path.clone(),
        (None, Some(_)) => PathBuf::from(image_gc::SYSTEM_CONTAINERD_ROOT),
        (None, None) => ContainerdLayout::new(&config.data_dir).root(),
    };
    let collector = ImageGc::new(
        runtime.clone(),
        Statvfs,
        image_fs,
        config.image_gc.thresholds,
        config.image_gc.minimum_age,
    );
    let pods_layout = layout.clone();
    let image_collector = tokio::spawn(image_gc::run(
        collector,
        config.image_gc.interval,
        move || pods::wanted_images(&pods_layout),
        shutdown.clone(),
    ));
    let discovery = ServiceDiscovery {
        // Without the pod network no DNS server runs here: pods get the
        // node's resolvers.
        cluster_dns: pod_network.is_some().then_some(cluster_dns),
        resolv_conf: config.resolv_conf.clone(),
        services: services_index,
    };
    let ctx = WorkerContext {
        runtime: runtime.clone(),
        sandbox: Arc::new(HostSandbox::new(pod_network)),
        layout,
        reports: reports_tx,
        host_ip: node_ip,
        metrics,
        events: events_tx,
        config: config_source,
        node_allocatable,
        discovery,
    };
    pods::run(ctx, desired_rx, runtime.events(), shutdown.clone()).await;
    shutdown.cancelled().await;
    let _ = usage_sampler.await;
    let _ = image_collector.await;
    let _ = volume_cleaner.await;
    for l in links {
        let _ = l.await;
    }
    let _ = importer.await;
    let _ = renewal.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    if let Some(o) = overlay {
        let _ = o.await;
    }
    if let Some(s) = service_rules {
        let _ = s.await;
    }
    if let Some(d) = dns_server {
        let _ = d.await;
    }
    let _ = server.await;
    Ok(())
}

/// Follows the Nodes through the masters and keeps the overlay in line:
/// after every change to a Node, and every minute in any case, until
/// `shutdown`.
async fn overlay_loop(
    masters: Masters,
    net: Arc<PodNetwork>,
    me: String,
    shutdown: CancellationToken,
) {
    let (mut nodes, follower) = master_link::follow_kinds(masters, &["Node"], shutdown);
    // Ends when the follower does (on shutdown).
    while let Some(mut snapshot) = nodes.next().await {
        reconcile_overlay(&net, snapshot.take("Node"), &me).await;
    }
    let _ = follower.await;
}

/// The DNS zone's SOA serial for an index made now: the time, in seconds.
fn index_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or_default()
}

/// Keeps the node's Service rules, the DNS index and the health check
/// ports up to date until `shutdown`, following Services and Endpoints
/// through the masters and keeping the last lists in `known`. Until the
/// masters' first lists come, all are made from the kept ones (a restart
/// while no master answers); while no master answers, all stay as they
/// were last made.
async fn service_loop(
    masters: Masters,
    net: Arc<PodNetwork>,
    index: SharedIndex,
    mut known: KnownServices,
    trim_heap: Option<fn()>,
    shutdown: CancellationToken,
) {
    let local = net.subnet().net();
    let mut health = HealthServers::new(Ipv4Addr::UNSPECIFIED, shutdown.clone());
    if let Some((services, endpoints)) = known.load() {
        index.replace(ClusterIndex::build(&services, &endpoints, index_serial()));
        reconcile_services(&net, &services, &endpoints).await;
        health
            .update(service_health::wanted(&services, &endpoints, local))
            .await;
    }
    let kinds = ["Service", "Endpoints"];
    let (mut cluster, follower) = master_link::follow_kinds(masters, &kinds, shutdown);
    while let Some(mut snapshot) = cluster.next().await {
        let (services, endpoints) =
            services::typed(snapshot.take("Service"), snapshot.take("Endpoints"));
        index.replace(ClusterIndex::build(&services, &endpoints, index_serial()));
        reconcile_services(&net, &services, &endpoints).await;
        health
            .update(service_health::wanted(&services, &endpoints, local))
            .await;
        known.save(&services, &endpoints);
        // The lists, their copies and the rules' commands are freed now,
        // mostly below what stays.
        drop((services, endpoints, snapshot));
        if let Some(trim) = trim_heap {
            trim();
        }
    }
    drop(health);
    let _ = follower.await;
}
