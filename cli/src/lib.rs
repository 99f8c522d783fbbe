//! Command-line front end of skiff. `main` stays thin; parsing, config and
//! the `ctl` commands live here where tests can reach them.
//!
//! - `skiff server`: a master and an agent in one process (one machine).
//! - `skiff master`: run a master (Raft store + API).
//! - `skiff agent`: run a node's agent (pods through containerd).
//! - `skiff ctl`: kubectl-style client.
//! - `skiff token`: join tokens; `skiff certificate rotate`.
//! - `skiff version`.

pub mod certificate;
pub mod ctl;
mod malloc_arenas;
pub mod settings;
pub mod shutdown;
pub mod token;

use std::path::{Path, PathBuf};

/// Where skiff keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff";
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff_master::api::transport::parse_listen;
use skiff_master::server::MasterConfig;

/// skiff: a small, fast container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master and an agent in one process: a whole one-node cluster,
    /// which more agents (and masters) can join.
    Server(ServerArgs),
    /// Run a master: the Raft-replicated store and the API.
    Master(MasterArgs),
    /// Run a node agent: pods through containerd, heartbeats to the masters.
    Agent(AgentArgs),
    /// Talk to the cluster, kubectl-style.
    Ctl(ctl::CtlArgs),
    /// Create, list and delete join tokens.
    Token(token::TokenArgs),
    /// Renew certificates now.
    Certificate(certificate::CertificateArgs),
    /// Print the version.
    Version,
}

/// Flags of `skiff master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Settings file: flag names as keys (flags and SKIFF_* variables win).
    #[arg(long = "config", env = "SKIFF_CONFIG_FILE", default_value = settings::DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Where the store and identity live.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// API listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: String,
    /// Raft peer listen address.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub raft_listen: String,
    /// API address announced to other masters (default: --listen).
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// Raft address announced to other masters (default: --raft-listen).
    #[arg(long)]
    pub advertise_raft: Option<String>,
    /// API address of any existing member, to join its cluster on first start.
    #[arg(long)]
    pub join: Option<String>,
    /// Server token for --join (the first master's <data-dir>/token).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra names and IPs for the API certificate; repeat or comma-separate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Raft log entries between snapshots; the log is purged behind each.
    #[arg(long, default_value_t = skiff_master::store::DEFAULT_SNAPSHOT_AFTER_ENTRIES,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_after_entries: u64,
    /// How often the Raft leader sends heartbeats to the other masters.
    #[arg(long, default_value = "100ms")]
    pub raft_heartbeat_interval: humantime::Duration,
    /// Silence after which a master may call an election (it waits between
    /// one and two of these, plus two as the old leader's lease).
    #[arg(long, default_value = "500ms")]
    pub raft_election_timeout: humantime::Duration,
    /// Heartbeat silence after which a node is NotReady.
    #[arg(long, default_value = "4500ms")]
    pub node_monitor_grace_period: humantime::Duration,
    /// Further silence after which a NotReady node's pods are evicted.
    #[arg(long, default_value = "5s")]
    pub pod_eviction_timeout: humantime::Duration,
    /// The pod network: every node gets a subnet of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Where Services' clusterIPs come from.
    #[arg(long, default_value = skiff_master::service_ips::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// Where /metrics, /healthz and /readyz are served ("none": off).
    #[arg(long, default_value = "127.0.0.1:6445")]
    pub metrics_listen: String,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

impl MasterArgs {
    /// Checks the flags and turns them into a master config.
    pub fn to_config(&self) -> Result<MasterConfig, String> {
        let listen = parse_listen("--listen", &self.listen)?;
        let raft_listen = parse_listen("--raft-listen", &self.raft_listen)?;
        if listen == raft_listen {
            return Err(format!(
                "--listen and --raft-listen are both {listen}; they need different ports"
            ));
        }
        let advertise = |flag: &str, given: &Option<String>, bound: std::net::SocketAddr| {
            let addr = given.clone().unwrap_or_else(|| bound.to_string());
            if bound.ip().is_unspecified() && given.is_none() {
                return Err(format!(
                    "{flag} is required when listening on {bound}: other masters need a reachable address"
                ));
            }
            parse_listen(flag, &addr).map(|_| addr)
        };
        Ok(MasterConfig {
            data_dir: self.data_dir.clone(),
            listen,
            raft_listen,
            advertise_api: advertise("--advertise-api", &self.advertise_api, listen)?,
            advertise_raft: advertise("--advertise-raft", &self.advertise_raft, raft_listen)?,
            join: self.join.clone(),
            token: self.token.clone(),
            tls_sans: self.tls_san.clone(),
            // With the default data dir, `skiff ctl` finds admin.conf in /etc.
            admin_conf_copies: if self.data_dir == Path::new(DEFAULT_DATA_DIR)
                || self.data_dir == Path::new(DEFAULT_DATA_DIR).join("server")
            {
                vec![PathBuf::from(ctl::ADMIN_CONF)]
            } else {
                Vec::new()
            },
            join_limits: Default::default(),
            snapshot_after_entries: self.snapshot_after_entries,
            raft_timings: skiff_master::store::RaftTimings {
                heartbeat_interval: self.raft_heartbeat_interval.into(),
                election_timeout: self.raft_election_timeout.into(),
            }
            .check()
            .map_err(|e| format!("--raft-heartbeat-interval/--raft-election-timeout: {e}"))?,
            notify_ready: true,
            metrics_listen: match self.metrics_listen.as_str() {
                "none" => None,
                addr => Some(parse_listen("--metrics-listen", addr)?),
            },
            pod_cidrs: skiff_master::controllers::node_ipam::PodCidrConfig::new(
                self.cluster_cidr
                    .parse()
                    .map_err(|e| format!("--cluster-cidr: {e}"))?,
                self.node_cidr_mask_size,
            )
            .map_err(|e| format!("--node-cidr-mask-size: {e}"))?,
            service_cidr: parse_service_cidr(&self.service_cidr)?,
            lifecycle: skiff_master::node_lifecycle::LifecycleConfig {
                grace: self.node_monitor_grace_period.into(),
                eviction_delay: self.pod_eviction_timeout.into(),
            },
        })
    }
}

/// `--service-cidr`: a CIDR big enough for Services.
fn parse_service_cidr(text: &str) -> Result<skiff_master::controllers::node_ipam::Ipv4Net, String> {
    let cidr = text.parse().map_err(|e| format!("--service-cidr: {e}"))?;
    skiff_master::service_ips::ServiceIps::new(cidr).map_err(|e| format!("--service-cidr: {e}"))?;
    Ok(cidr)
}

/// Flags of `skiff agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Settings file: flag names as keys (flags and SKIFF_* variables win).
    #[arg(long = "config", env = "SKIFF_CONFIG_FILE", default_value = settings::DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// API address of a master (host:port); repeat or comma-separate for several.
    #[arg(long, required = true, value_delimiter = ',')]
    pub server: Vec<String>,
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where pod state, logs, images and a private containerd live.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    pub data_dir: PathBuf,
    /// The address masters and other nodes reach this node at
    /// (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Use this containerd socket instead of starting a private containerd.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// containerd namespace for this agent's containers.
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
    /// Join token (`skiff token create`, or a master's <data-dir>/token);
    /// needed until the node has its certificate.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen address of the agent's own endpoint (container logs).
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub listen: String,
    /// Registry settings: credentials and plain-HTTP hosts.
    #[arg(long, default_value = "/etc/skiff/registries.yaml")]
    pub registry_config: PathBuf,
    /// Interval between heartbeats.
    #[arg(long, default_value = "1s")]
    pub heartbeat_interval: humantime::Duration,
    /// Where /metrics, /healthz and /readyz are served ("none": off).
    #[arg(long, default_value = "127.0.0.1:10248")]
    pub metrics_listen: String,
    /// Pod network: vxlan (bridge + VXLAN overlay + nftables) or none
    /// (pods get loopback only).
    #[arg(long, default_value = "vxlan")]
    pub pod_network: String,
    /// The cluster CIDR (as the masters have it), for masquerading.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The service CIDR (as the masters have it): traffic to it that no
    /// Service rule translates is refused on this node.
    #[arg(long, default_value = skiff_master::service_ips::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// Extra node labels, key=value; repeat or comma-separate.
    #[arg(long = "node-label", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

impl AgentArgs {
    /// Checks the flags and turns them into an agent config.
    pub fn to_config(&self) -> Result<skiff_agent::AgentConfig, String> {
        for s in &self.server {
            if s.trim().is_empty() || !s.contains(':') {
                return Err(format!("--server {s:?}: expected host:port of a master"));
            }
        }
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .map_err(|e| format!("cannot read the hostname ({e}); pass --node-name"))?
                .to_string_lossy()
                .to_lowercase(),
        };
        if node_name.is_empty()
            || node_name.len() > 253
            || !node_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "--node-name {node_name:?}: must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
        let listen = parse_listen("--listen", &self.listen)?;
        // Absolute, so paths in mount tables and containerd specs match.
        let data_dir = std::path::absolute(&self.data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", self.data_dir.display()))?;
        let mut config = skiff_agent::AgentConfig::new(self.server.clone(), &node_name, data_dir);
        config.node_ip = self.node_ip.map(|ip| ip.to_string());
        config.containerd_socket = self.containerd_socket.clone();
        config.containerd_namespace = self.containerd_namespace.clone();
        config.token = self.token.clone();
        config.listen = listen;
        config.registry_config = self.registry_config.clone();
        config.heartbeat_interval = self.heartbeat_interval.into();
        config.metrics_listen = match self.metrics_listen.as_str() {
            "none" => None,
            addr => Some(parse_listen("--metrics-listen", addr)?),
        };
        config.pod_network = match self.pod_network.as_str() {
            "none" => None,
            "vxlan" => Some(
                self.cluster_cidr
                    .parse()
                    .map_err(|e| format!("--cluster-cidr: {e}"))?,
            ),
            other => return Err(format!("--pod-network {other:?}: use vxlan or none")),
        };
        config.service_cidr = self
            .service_cidr
            .parse()
            .map_err(|e| format!("--service-cidr: {e}"))?;
        for label in &self.node_labels {
            let (k, v) = label
                .split_once('=')
                .ok_or_else(|| format!("--node-label {label:?}: expected key=value"))?;
            config.labels.insert(k.to_string(), v.to_string());
        }
        Ok(config)
    }
}

/// Flags of `skiff server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Settings file: flag names as keys (flags and SKIFF_* variables win).
    #[arg(long = "config", env = "SKIFF_CONFIG_FILE", default_value = settings::DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// Master state goes to <data-dir>/server, the agent's to <data-dir>/agent.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// API listen address (0.0.0.0:6443 to let agents of other machines in).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: String,
    /// Raft peer listen address.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub raft_listen: String,
    /// API address announced to other masters and used by the local agent.
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// Raft address announced to other masters.
    #[arg(long)]
    pub advertise_raft: Option<String>,
    /// API address of an existing master, to join its cluster on first start.
    #[arg(long)]
    pub join: Option<String>,
    /// Server token for --join (the first master's <data-dir>/token).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra names and IPs for the API certificate; repeat or comma-separate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// The pod network: every node gets a subnet of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Where Services' clusterIPs come from.
    #[arg(long, default_value = skiff_master::service_ips::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// The master's /metrics, /healthz and /readyz ("none": off).
    #[arg(long, default_value = "127.0.0.1:6445")]
    pub metrics_listen: String,
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address other nodes reach this one at (default: the default route's).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Use this containerd socket instead of starting a private containerd.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// Pod network: vxlan or none.
    #[arg(long, default_value = "vxlan")]
    pub pod_network: String,
    /// Registry settings: credentials and plain-HTTP hosts.
    #[arg(long, default_value = "/etc/skiff/registries.yaml")]
    pub registry_config: PathBuf,
    /// The agent's own endpoint (container logs).
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub agent_listen: String,
    /// The agent's /metrics, /healthz and /readyz ("none": off).
    #[arg(long, default_value = "127.0.0.1:10248")]
    pub agent_metrics_listen: String,
    /// Extra node labels, key=value.
    #[arg(long = "node-label", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

impl ServerArgs {
    /// The master's and the agent's configs, checked as their own commands check them.
    pub fn to_configs(&self) -> Result<(MasterConfig, skiff_agent::AgentConfig), String> {
        let master = MasterArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.join("server"),
            listen: self.listen.clone(),
            raft_listen: self.raft_listen.clone(),
            advertise_api: self.advertise_api.clone(),
            advertise_raft: self.advertise_raft.clone(),
            join: self.join.clone(),
            token: self.token.clone(),
            tls_san: self.tls_san.clone(),
            snapshot_after_entries: skiff_master::store::DEFAULT_SNAPSHOT_AFTER_ENTRIES,
            raft_heartbeat_interval: skiff_master::store::DEFAULT_HEARTBEAT_INTERVAL.into(),
            raft_election_timeout: skiff_master::store::DEFAULT_ELECTION_TIMEOUT.into(),
            node_monitor_grace_period: "4500ms".parse().map_err(|e| format!("{e}"))?,
            pod_eviction_timeout: "5s".parse().map_err(|e| format!("{e}"))?,
            cluster_cidr: self.cluster_cidr.clone(),
            service_cidr: self.service_cidr.clone(),
            node_cidr_mask_size: self.node_cidr_mask_size,
            metrics_listen: self.metrics_listen.clone(),
            log_format: self.log_format.clone(),
        }
        .to_config()?;
        // The agent says when the node is ready.
        let master = MasterConfig {
            notify_ready: false,
            ..master
        };
        // The local agent talks to the local master.
        let server = match &self.advertise_api {
            Some(a) => a.clone(),
            None if master.listen.ip().is_unspecified() => {
                format!("127.0.0.1:{}", master.listen.port())
            }
            None => master.listen.to_string(),
        };
        let agent = AgentArgs {
            config: self.config.clone(),
            server: vec![server],
            node_name: self.node_name.clone(),
            data_dir: self.data_dir.join("agent"),
            node_ip: self.node_ip,
            containerd_socket: self.containerd_socket.clone(),
            containerd_namespace: "skiff".into(),
            token: None,
            listen: self.agent_listen.clone(),
            registry_config: self.registry_config.clone(),
            heartbeat_interval: "1s".parse().map_err(|e| format!("{e}"))?,
            metrics_listen: self.agent_metrics_listen.clone(),
            pod_network: self.pod_network.clone(),
            cluster_cidr: self.cluster_cidr.clone(),
            service_cidr: self.service_cidr.clone(),
            node_labels: self.node_labels.clone(),
            log_format: self.log_format.clone(),
        }
        .to_config()?;
        Ok((master, agent))
    }
}

/// Waits for the master of `skiff server` to write its server token.
async fn wait_for_token(
    path: &Path,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_owned());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the master wrote no token to {} within 60 s",
                path.display()
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err("shut down".to_owned()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
}

fn init_logging(format: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // With stderr gone (a closed pipe), tracing would report each
        // failed write with eprintln!, which panics in whichever task
        // logged: events are dropped instead.
        .log_internal_errors(false);
    match format {
        "text" => builder.init(),
        // One JSON object per line: timestamp, level, target, fields.
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        other => {
            return Err(format!(
                "--log-format {other:?}: unknown format; use \"text\" or \"json\""
            ))
        }
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Runs a long-lived command: checks its config (exit 2 on a bad flag),
/// sets up logging and the runtime, and runs `body` until a signal.
fn serve<C, F, Fut>(config: Result<C, String>, log_format: &str, body: F) -> ExitCode
where
    F: FnOnce(C, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(log_format) {
        print_error(&e);
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match body(config, shutdown::on_signals()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                print_error(&e);
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs the parsed command; the exit code says whether it worked.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("skiff {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Master(args) => {
            let config = args.to_config();
            serve(config, &args.log_format, |config, token| async move {
                skiff_master::server::run(config, token)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Command::Server(args) => {
            let configs = args.to_configs();
            serve(
                configs,
                &args.log_format,
                |(master, mut agent), token| async move {
                    let token_file = skiff_master::security::pki::token_path(&master.data_dir);
                    let mt = token.clone();
                    let mut master = tokio::spawn(async move {
                        skiff_master::server::run(master, mt)
                            .await
                            .map_err(|e| e.to_string())
                    });
                    let at = token.clone();
                    let mut agent = tokio::spawn(async move {
                        // The local agent joins with the server token, once
                        // the master has written it.
                        if agent.token.is_none() {
                            agent.token = Some(wait_for_token(&token_file, &at).await?);
                        }
                        skiff_agent::run(agent, at).await.map_err(|e| e.to_string())
                    });
                    // Either half ending stops the other.
                    let (first, other) = tokio::select! {
                        m = &mut master => (m, agent),
                        a = &mut agent => (a, master),
                    };
                    token.cancel();
                    let _ = other.await;
                    first.map_err(|e| e.to_string())?
                },
            )
        }
        Command::Agent(args) => {
            let config = args.to_config();
            malloc_arenas::limit(1);
            serve(config, &args.log_format, |config, token| async move {
                skiff_agent::run(config, token)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        Command::Token(args) => run_client(token::run(args, &mut std::io::stdout())),
        Command::Certificate(args) => report(certificate::run(args, &mut std::io::stdout())),
        Command::Ctl(args) => run_client(ctl::run(args, &mut std::io::stdout())),
    }
}

/// "error: …" on stderr; nothing (and no panic, unlike eprintln!) if
/// stderr is gone.
fn print_error(message: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Runs a short-lived client command to its end: 0 on success, 1 with the
/// error on stderr otherwise.
fn run_client<E: std::fmt::Display>(
    command: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    report(rt.block_on(command))
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}
