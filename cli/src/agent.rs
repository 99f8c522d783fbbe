//! `skiff agent`: its flags, checked and turned into an [`AgentConfig`],
//! and running it. [`AgentFlags`] are the node flags `skiff server`
//! shares. The rest is set per command: a lone agent is told its masters,
//! join token, containerd namespace, heartbeat interval and, if it must
//! differ from the masters', the cluster network, while a server's agent
//! talks to its own master with that master's token and the defaults; the
//! agent's two listen addresses are `--listen` and `--metrics-listen` here
//! and `--agent-listen` and `--agent-metrics-listen` on a server, beside
//! the master's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use skiff_agent::runtime::image_gc::{self, ImageGcConfig, ThresholdError, Thresholds};
use skiff_agent::AgentConfig;

use crate::cluster_network::{AgentNetworkFlags, ClusterNetworkError};
use crate::daemon::{self, AddressError, DaemonFlags};
use crate::{malloc_arenas, server, DEFAULT_DATA_DIR};

/// Default listen address of the agent's own endpoint (container logs):
/// masters of other machines call it.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10250";
/// Default address of the agent's `/metrics`, `/healthz` and `/readyz`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:10248";
/// Default registry settings file.
pub const DEFAULT_REGISTRY_CONFIG: &str = "/etc/skiff/registries.yaml";
/// Default containerd namespace of the agent's containers.
pub const DEFAULT_CONTAINERD_NAMESPACE: &str = "skiff";
/// Default interval between heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = skiff_agent::DEFAULT_HEARTBEAT_INTERVAL;
/// `--pod-network vxlan`: routed veths + VXLAN overlay + nftables (the default).
pub const POD_NETWORK_VXLAN: &str = "vxlan";
/// `--pod-network none`: pods get loopback only.
pub const POD_NETWORK_NONE: &str = "none";
/// The longest DNS subdomain, and so the longest node name.
const NODE_NAME_MAX_LEN: usize = 253;

/// Why an agent's flags (of `skiff agent` or `skiff server`) cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AgentFlagsError {
    #[error("--server {0:?}: expected host:port of a master")]
    Server(String),
    #[error("cannot read the hostname ({0}); pass --node-name")]
    Hostname(#[source] nix::Error),
    #[error("--node-name {0:?}: must be a DNS subdomain (lowercase letters, digits, '-' and '.')")]
    NodeName(String),
    #[error("--data-dir {}: {source}", .path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("--pod-network {0:?}: use vxlan, host-gw, auto or none")]
    PodNetwork(String),
    #[error(transparent)]
    ClusterNetwork(#[from] ClusterNetworkError),
    #[error("--node-label {0:?}: expected key=value")]
    NodeLabel(String),
    #[error(transparent)]
    ImageGcThresholds(#[from] ThresholdError),
    #[error("--image-gc-interval must be longer than 0s")]
    ImageGcInterval,
}

/// The node flags `skiff agent` and `skiff server` share.
#[derive(Debug, clap::Args)]
pub struct AgentFlags {
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address masters and other nodes reach this node at
    /// (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Use this containerd socket instead of starting a private containerd.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// Registry settings: credentials and plain-HTTP hosts.
    #[arg(long, default_value = DEFAULT_REGISTRY_CONFIG)]
    pub registry_config: PathBuf,
    /// Pod network: vxlan (routed veths + VXLAN overlay + nftables), host-gw
    /// (plain routes via other nodes' IPs; every node on one L2 segment),
    /// auto (host-gw for nodes on this node's segment, VXLAN for the
    /// rest), or none (pods get loopback only).
    #[arg(long, default_value = POD_NETWORK_VXLAN)]
    pub pod_network: String,
    /// Let pods' TCP and UDP to other pods skip the host's IP stack
    /// (tc-BPF, where the kernel allows it); false keeps every packet on
    /// the stack's path, for host firewalls that filter forwarded pod
    /// traffic.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_fast_path: bool,
    /// Extra node labels, key=value; repeat or comma-separate.
    #[arg(long = "node-label", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// How long to try joining the cluster and registering before giving
    /// up with an error, when the node needs the masters to start ("0": no
    /// limit).
    #[arg(long, default_value_t = skiff_agent::DEFAULT_JOIN_TIMEOUT.into())]
    pub join_timeout: humantime::Duration,
    /// The node's resolver settings: where cluster DNS forwards names that
    /// are not the cluster's, and what pods with dnsPolicy Default get.
    #[arg(long, default_value = skiff_agent::dns::resolv_conf::DEFAULT_PATH)]
    pub resolv_conf: PathBuf,
    #[command(flatten)]
    pub image_gc: ImageGcFlags,
}

/// When unused images are removed, as the kubelet's image garbage
/// collection does it.
#[derive(Debug, clap::Args)]
pub struct ImageGcFlags {
    /// Percent of the image filesystem used at which unused images are
    /// removed, least recently used first.
    #[arg(long, default_value_t = image_gc::DEFAULT_HIGH_THRESHOLD)]
    pub image_gc_high_threshold: u8,
    /// Percent of the image filesystem used that removing unused images
    /// brings it down to; below the high threshold.
    #[arg(long, default_value_t = image_gc::DEFAULT_LOW_THRESHOLD)]
    pub image_gc_low_threshold: u8,
    /// How long an image is kept after it was first seen, used or not.
    #[arg(long, default_value_t = image_gc::DEFAULT_MINIMUM_AGE.into())]
    pub image_minimum_gc_age: humantime::Duration,
    /// How often the image filesystem's usage is checked.
    #[arg(long, default_value_t = image_gc::DEFAULT_INTERVAL.into())]
    pub image_gc_interval: humantime::Duration,
    /// A directory on the filesystem holding containerd's images (default:
    /// the private containerd's root, or /var/lib/containerd with
    /// --containerd-socket).
    #[arg(long)]
    pub image_gc_path: Option<PathBuf>,
}

impl ImageGcFlags {
    /// Checks the thresholds (percentages, low below high) and the interval.
    pub fn to_config(&self) -> Result<ImageGcConfig, AgentFlagsError> {
        let (high, low) = (self.image_gc_high_threshold, self.image_gc_low_threshold);
        let thresholds = Thresholds::new(high, low)?;
        let interval: Duration = self.image_gc_interval.into();
        if interval.is_zero() {
            return Err(AgentFlagsError::ImageGcInterval);
        }
        Ok(ImageGcConfig {
            thresholds,
            minimum_age: self.image_minimum_gc_age.into(),
            interval,
            path: self.image_gc_path.clone(),
        })
    }
}

impl AgentFlags {
    /// Checks the flags and turns them into the config of an agent talking
    /// to `servers` and keeping its state in `data_dir`, with the masters'
    /// cluster network. Listen addresses, token, containerd namespace,
    /// heartbeat interval and network overrides are left for the command to
    /// set.
    pub fn to_config(
        &self,
        servers: Vec<String>,
        data_dir: &Path,
    ) -> Result<AgentConfig, AgentFlagsError> {
        let node_name = match &self.node_name {
            Some(name) => name.clone(),
            None => nix::unistd::gethostname()
                .map_err(AgentFlagsError::Hostname)?
                .to_string_lossy()
                .to_lowercase(),
        };
        if !is_dns_subdomain(&node_name) {
            return Err(AgentFlagsError::NodeName(node_name));
        }
        // Absolute, so paths in mount tables and containerd specs match.
        let data_dir =
            std::path::absolute(data_dir).map_err(|source| AgentFlagsError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let mut config = AgentConfig::new(servers, &node_name, data_dir);
        config.node_ip = self.node_ip.map(|ip| ip.to_string());
        config.containerd_socket = self.containerd_socket.clone();
        config.registry_config = self.registry_config.clone();
        config.pod_network = match self.pod_network.as_str() {
            POD_NETWORK_NONE => None,
            other => Some(
                other
                    .parse()
                    .map_err(|_| AgentFlagsError::PodNetwork(other.to_owned()))?,
            ),
        };
        config.pod_fast_path = self.pod_fast_path;
        let join_timeout: Duration = self.join_timeout.into();
        config.join_timeout = (!join_timeout.is_zero()).then_some(join_timeout);
        config.image_gc = self.image_gc.to_config()?;
        config.resolv_conf = self.resolv_conf.clone();
        for label in &self.node_labels {
            let (key, value) = label
                .split_once('=')
                .ok_or_else(|| AgentFlagsError::NodeLabel(label.clone()))?;
            config.labels.insert(key.to_owned(), value.to_owned());
        }
        Ok(config)
    }
}

/// Whether `name` is a DNS subdomain, as Kubernetes wants node names.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NODE_NAME_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Flags of `skiff agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub daemon: DaemonFlags,
    /// API address of a master (host:port); repeat or comma-separate for several.
    #[arg(long, required = true, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Where pod state, logs, images and a private containerd live.
    #[arg(long, default_value_os_t = Path::new(DEFAULT_DATA_DIR).join(server::AGENT_DIR))]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub agent: AgentFlags,
    /// containerd namespace for this agent's containers.
    #[arg(long, default_value = DEFAULT_CONTAINERD_NAMESPACE)]
    pub containerd_namespace: String,
    /// Join token (`skiff token create`, or a master's <data-dir>/token);
    /// needed until the node has its certificate.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen address of the agent's own endpoint (container logs).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Interval between heartbeats.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: humantime::Duration,
    /// Where /metrics, /healthz and /readyz are served ("none": off).
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,
    // Overrides of what the masters say; a server's agent takes theirs.
    #[command(flatten)]
    pub network: AgentNetworkFlags,
}

impl AgentArgs {
    /// Checks the flags and turns them into an agent config.
    pub fn to_config(&self) -> Result<AgentConfig, AgentFlagsError> {
        if let Some(bad) = self
            .server
            .iter()
            .find(|s| s.trim().is_empty() || !s.contains(':'))
        {
            return Err(AgentFlagsError::Server(bad.clone()));
        }
        let mut config = self.agent.to_config(self.server.clone(), &self.data_dir)?;
        config.network_overrides = self.network.overrides()?;
        config.listen = daemon::listen_address("--listen", &self.listen)?;
        config.metrics_listen = daemon::metrics_address("--metrics-listen", &self.metrics_listen)?;
        config.containerd_namespace = self.containerd_namespace.clone();
        config.token = self.token.clone();
        config.heartbeat_interval = self.heartbeat_interval.into();
        // The agent's heap alone (one arena): under `skiff server` the
        // master's arenas would be walked and locked each time too.
        config.trim_heap = Some(malloc_arenas::trim);
        Ok(config)
    }
}

/// Runs `skiff agent` until a signal; a bad flag exits with 2.
pub fn run(args: AgentArgs) -> ExitCode {
    let config = args.to_config();
    // Before the runtime starts any thread; see malloc_arenas.
    malloc_arenas::for_agent();
    daemon::serve(config, &args.daemon.log_format, skiff_agent::run)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::AgentFlagsError;
    use crate::{Cli, Command};

    fn agent(args: &[&str]) -> super::AgentArgs {
        let mut argv = vec!["skiff", "agent", "--server", "127.0.0.1:6443"];
        argv.extend_from_slice(&["--node-name", "pi-1"]);
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Agent(args) => args,
            other => panic!("not an agent: {other:?}"),
        }
    }

    fn gc(high: &str, low: &str) -> super::AgentArgs {
        let high = ["--image-gc-high-threshold", high];
        let low = ["--image-gc-low-threshold", low];
        agent(&[high, low].concat())
    }

    #[test]
    fn image_gc_thresholds_default_to_the_kubelets_and_are_checked() {
        let config = agent(&[]).to_config().unwrap();
        let thresholds = config.image_gc.thresholds;
        assert_eq!((thresholds.high(), thresholds.low()), (85, 80));
        assert_eq!(config.image_gc.path, None);
        let lowest = gc("1", "0").to_config().unwrap();
        assert_eq!(lowest.image_gc.thresholds.high(), 1);
        let err = gc("70", "75").to_config().unwrap_err();
        assert!(err.to_string().contains("must be below"), "{err}");
        assert!(gc("101", "80").to_config().is_err());
        let never = agent(&["--image-gc-interval", "0s"]);
        let err = never.to_config().unwrap_err();
        assert!(matches!(err, AgentFlagsError::ImageGcInterval), "{err}");
    }

    #[test]
    fn the_pod_fast_path_is_on_unless_turned_off() {
        let fast_path = |args: &[&str]| agent(args).to_config().unwrap().pod_fast_path;
        assert!(fast_path(&[]));
        assert!(!fast_path(&["--pod-fast-path=false"]));
        assert!(fast_path(&["--pod-fast-path", "true"]));
        let argv = [
            "skiff",
            "agent",
            "--server",
            "127.0.0.1:6443",
            "--pod-fast-path=maybe",
        ];
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("--pod-fast-path"), "{err}");
    }

    #[test]
    fn the_pod_network_flag_takes_each_mode_and_names_them_when_wrong() {
        use skiff_agent::network::overlay::Mode;
        let mode = |flag: &str| {
            agent(&["--pod-network", flag])
                .to_config()
                .map(|c| c.pod_network)
        };
        assert_eq!(
            agent(&[]).to_config().unwrap().pod_network,
            Some(Mode::Vxlan)
        );
        assert_eq!(mode("host-gw").unwrap(), Some(Mode::HostGw));
        assert_eq!(mode("auto").unwrap(), Some(Mode::Auto));
        assert_eq!(mode("vxlan").unwrap(), Some(Mode::Vxlan));
        assert_eq!(mode("none").unwrap(), None);
        let err = mode("host_gw").unwrap_err().to_string();
        assert_eq!(
            err,
            "--pod-network \"host_gw\": use vxlan, host-gw, auto or none"
        );
    }
}
