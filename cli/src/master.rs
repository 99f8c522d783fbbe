//! `skiff master`: its flags, checked and turned into a [`MasterConfig`],
//! and running it. [`MasterFlags`] are the master flags `skiff server`
//! shares; [`MasterTuningFlags`] (Raft and failure-detection timing) are
//! `skiff master`'s alone, so a server runs with the master crate's
//! defaults for them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skiff_master::controllers::node_ipam::{NodePrefixError, PodCidrConfig};
use skiff_master::node_lifecycle::LifecycleConfig;
use skiff_master::server::MasterConfig;
use skiff_master::store::{
    RaftTimings, RaftTimingsError, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_SNAPSHOT_AFTER_ENTRIES,
};
use skiff_values::Ipv4Net;

use crate::cluster_network::{ClusterNetworkError, ClusterNetworkFlags};
use crate::daemon::{self, AddressError, DaemonFlags};
use crate::{ctl, server, DEFAULT_DATA_DIR};

/// Default `--listen`: the API, on loopback until told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6443";
/// Default `--raft-listen`.
pub const DEFAULT_RAFT_LISTEN: &str = "127.0.0.1:6444";
/// Default `--metrics-listen` of a master.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:6445";

/// Why a master's flags (of `skiff master` or `skiff server`) cannot work.
#[derive(Debug, thiserror::Error)]
pub enum MasterFlagsError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("--listen and --raft-listen are both {0}; they need different ports")]
    SameAddress(SocketAddr),
    #[error(
        "{flag} is required when listening on {bound}: other masters need a reachable address"
    )]
    AdvertiseRequired {
        flag: &'static str,
        bound: SocketAddr,
    },
    #[error("--raft-heartbeat-interval/--raft-election-timeout: {0}")]
    RaftTimings(#[from] RaftTimingsError),
    #[error(transparent)]
    ClusterNetwork(#[from] ClusterNetworkError),
    #[error("--node-cidr-mask-size: {0}")]
    NodeCidrMaskSize(#[source] NodePrefixError),
}

/// The master flags `skiff master` and `skiff server` share.
#[derive(Debug, clap::Args)]
pub struct MasterFlags {
    /// API listen address (listen on 0.0.0.0 to let agents of other
    /// machines in).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Raft peer listen address.
    #[arg(long, default_value = DEFAULT_RAFT_LISTEN)]
    pub raft_listen: String,
    /// API address announced to other masters (default: --listen); the
    /// agent of `skiff server` uses it too.
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
    // The agent of `skiff server` takes these from here too: one flag each.
    #[command(flatten)]
    pub network: ClusterNetworkFlags,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = PodCidrConfig::default().node_prefix)]
    pub node_cidr_mask_size: u8,
    /// Where the master's /metrics, /healthz and /readyz are served
    /// ("none": off).
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,
}

impl MasterFlags {
    /// Checks the flags and turns them into the config of a master keeping
    /// its state in `data_dir`, with the master crate's default tuning.
    pub fn to_config(&self, data_dir: PathBuf) -> Result<MasterConfig, MasterFlagsError> {
        let listen = daemon::listen_address("--listen", &self.listen)?;
        let raft_listen = daemon::listen_address("--raft-listen", &self.raft_listen)?;
        if listen == raft_listen {
            return Err(MasterFlagsError::SameAddress(listen));
        }
        let advertise_api = advertise("--advertise-api", self.advertise_api.as_deref(), listen)?;
        let advertise_raft = advertise(
            "--advertise-raft",
            self.advertise_raft.as_deref(),
            raft_listen,
        )?;
        let metrics_listen = daemon::metrics_address("--metrics-listen", &self.metrics_listen)?;
        let cluster_cidr: Ipv4Net = self.network.parse_cluster_cidr()?;
        let pod_cidrs = PodCidrConfig::new(cluster_cidr, self.node_cidr_mask_size)
            .map_err(MasterFlagsError::NodeCidrMaskSize)?;
        let service_cidr = self.network.service_range()?;
        Ok(MasterConfig {
            admin_conf_copies: admin_conf_copies(&data_dir),
            data_dir,
            listen,
            raft_listen,
            advertise_api,
            advertise_raft,
            join: self.join.clone(),
            token: self.token.clone(),
            tls_sans: self.tls_san.clone(),
            join_limits: Default::default(),
            snapshot_after_entries: DEFAULT_SNAPSHOT_AFTER_ENTRIES,
            raft_timings: RaftTimings::default(),
            notify_ready: true,
            metrics_listen,
            pod_cidrs,
            service_cidr,
            lifecycle: LifecycleConfig::default(),
        })
    }
}

/// The address announced for a listener: the one given, else the bound
/// one, which then must be one other masters can reach (not 0.0.0.0).
fn advertise(
    flag: &'static str,
    given: Option<&str>,
    bound: SocketAddr,
) -> Result<String, MasterFlagsError> {
    match given {
        Some(addr) => {
            daemon::listen_address(flag, addr)?;
            Ok(addr.to_owned())
        }
        None if bound.ip().is_unspecified() => {
            Err(MasterFlagsError::AdvertiseRequired { flag, bound })
        }
        None => Ok(bound.to_string()),
    }
}

/// Where admin.conf is copied besides the data dir: with the default data
/// dir (of a master, or of a server's master), to where `skiff ctl` looks
/// without being told.
fn admin_conf_copies(data_dir: &Path) -> Vec<PathBuf> {
    let default = Path::new(DEFAULT_DATA_DIR);
    if data_dir == default || data_dir == default.join(server::MASTER_DIR).as_path() {
        vec![PathBuf::from(ctl::ADMIN_CONF)]
    } else {
        Vec::new()
    }
}

/// Raft and failure-detection timing: `skiff master` only.
#[derive(Debug, clap::Args)]
pub struct MasterTuningFlags {
    /// Raft log entries between snapshots; the log is purged behind each.
    #[arg(long, default_value_t = DEFAULT_SNAPSHOT_AFTER_ENTRIES,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_after_entries: u64,
    /// How often the Raft leader sends heartbeats to the other masters.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub raft_heartbeat_interval: humantime::Duration,
    /// Silence after which a master may call an election (it waits between
    /// one and two of these, plus two as the old leader's lease).
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT.into())]
    pub raft_election_timeout: humantime::Duration,
    /// Heartbeat silence after which a node is NotReady.
    #[arg(long, default_value_t = LifecycleConfig::default().grace.into())]
    pub node_monitor_grace_period: humantime::Duration,
    /// Further silence after which a NotReady node's pods are evicted.
    #[arg(long, default_value_t = LifecycleConfig::default().eviction_delay.into())]
    pub pod_eviction_timeout: humantime::Duration,
}

/// Flags of `skiff master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    #[command(flatten)]
    pub daemon: DaemonFlags,
    /// Where the store and identity live.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub master: MasterFlags,
    #[command(flatten)]
    pub tuning: MasterTuningFlags,
}

impl MasterArgs {
    /// Checks the flags and turns them into a master config.
    pub fn to_config(&self) -> Result<MasterConfig, MasterFlagsError> {
        let tuning = &self.tuning;
        let mut config = self.master.to_config(self.data_dir.clone())?;
        config.snapshot_after_entries = tuning.snapshot_after_entries;
        config.raft_timings = RaftTimings {
            heartbeat_interval: tuning.raft_heartbeat_interval.into(),
            election_timeout: tuning.raft_election_timeout.into(),
        }
        .check()?;
        config.lifecycle = LifecycleConfig {
            grace: tuning.node_monitor_grace_period.into(),
            eviction_delay: tuning.pod_eviction_timeout.into(),
        };
        Ok(config)
    }
}

/// Runs `skiff master` until a signal; a bad flag exits with 2.
pub fn run(args: MasterArgs) -> ExitCode {
    daemon::serve(
        args.to_config(),
        &args.daemon.log_format,
        skiff_master::server::run,
    )
}
