//! `skiff master`: its flags, checked and turned into a [`MasterConfig`],
//! and running it. [`MasterFlags`] are the master flags `skiff server`
//! shares, the failover timings among them (a server's agents on other
//! machines fail over by them); [`MasterTuningFlags`] (Raft's clock and
//! snapshots) are `skiff master`'s alone, so a server runs with the master
//! crate's defaults for them.
//!
//! A master listens on all addresses by default and announces the node's
//! address ([`advertise_host`]): `--advertise-address`, else the address
//! it listens on when that is a specific one, else the node IP
//! (`--node-ip` of a server, or the address of the interface holding the
//! default route), else loopback, which the master warns about when it
//! starts. `--advertise-api`/`--advertise-raft` override it per listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skiff_master::controllers::node_ipam::{NodePrefixError, PodCidrConfig};
use skiff_master::controllers::pod_gc::{PodGcConfig, DEFAULT_TERMINATED_THRESHOLD};
use skiff_master::datastore::schedule::{self as snapshot_schedule, SnapshotSchedule};
use skiff_master::node_lifecycle::LifecycleConfig;
use skiff_master::server::MasterConfig;
use skiff_master::store::{
    RaftTimings, RaftTimingsError, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_SNAPSHOT_AFTER_ENTRIES,
};

use crate::cluster_network::{ClusterNetworkError, ClusterNetworkFlags};
use crate::cluster_reset::{self, ClusterResetFlags};
use crate::daemon::{self, AddressError, DaemonFlags};
use crate::malloc_arenas;
use crate::{ctl, server, DEFAULT_DATA_DIR};

/// Default `--listen`: the API, on every address, so agents of other
/// machines get in.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6443";
/// Default `--raft-listen`: on every address, so other masters get in.
pub const DEFAULT_RAFT_LISTEN: &str = "0.0.0.0:6444";
/// Default `--metrics-listen` of a master.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:6445";

/// Why a master's flags (of `skiff master` or `skiff server`) cannot work.
#[derive(Debug, thiserror::Error)]
pub enum MasterFlagsError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("--listen and --raft-listen are both {0}; they need different ports")]
    SameAddress(SocketAddr),
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
    /// API listen address.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Raft peer listen address.
    #[arg(long, default_value = DEFAULT_RAFT_LISTEN)]
    pub raft_listen: String,
    /// The address announced to agents, other masters and in admin.conf,
    /// for the API and Raft (default: the listen address if it is a
    /// specific one, else the node IP: --node-ip, or the address of the
    /// interface holding the default route).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// API address (host:port) announced instead of --advertise-address
    /// with the --listen port; the agent of `skiff server` uses it too.
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// Raft address (host:port) announced instead of --advertise-address
    /// with the --raft-listen port.
    #[arg(long)]
    pub advertise_raft: Option<String>,
    /// API address of any existing member, to join its cluster on first start.
    #[arg(long)]
    pub join: Option<String>,
    /// Server token for --join (the first master's <data-dir>/token).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Extra names and IPs for the master's certificate (the addresses it
    /// advertises and listens on are in it already); repeat or
    /// comma-separate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    // What every node learns from the masters when it registers.
    #[command(flatten)]
    pub network: ClusterNetworkFlags,
    /// Prefix length of each node's pod subnet.
    #[arg(long, default_value_t = PodCidrConfig::default().node_prefix)]
    pub node_cidr_mask_size: u8,
    /// Where the master's /metrics, /healthz and /readyz are served
    /// ("none": off).
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,
    /// Heartbeat silence after which a node is NotReady.
    #[arg(long, default_value_t = LifecycleConfig::default().grace.into())]
    pub node_monitor_grace_period: humantime::Duration,
    /// Further silence after which a NotReady node's pods are evicted.
    #[arg(long, default_value_t = LifecycleConfig::default().eviction_delay.into())]
    pub pod_eviction_timeout: humantime::Duration,
    /// Finished (Succeeded or Failed) pods kept before the oldest are
    /// deleted (0: never).
    #[arg(long, default_value_t = DEFAULT_TERMINATED_THRESHOLD)]
    pub terminated_pod_gc_threshold: usize,
    /// How often the leader saves a snapshot of the datastore into its
    /// <data-dir>/snapshots (0: never).
    #[arg(long, default_value_t = snapshot_schedule::DEFAULT_EVERY.into())]
    pub snapshot_schedule: humantime::Duration,
    /// How many scheduled snapshots are kept; older ones are deleted
    /// (snapshots saved by hand never are).
    #[arg(long, default_value_t = snapshot_schedule::DEFAULT_RETENTION as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_retention: u64,
    // A one-time action, flags only.
    #[command(flatten)]
    pub reset: ClusterResetFlags,
}

impl MasterFlags {
    /// Checks the flags and turns them into the config of a master keeping
    /// its state in `data_dir`, with the master crate's default Raft
    /// tuning; `node_ip` is the `--node-ip` of a server.
    pub fn to_config(
        &self,
        data_dir: PathBuf,
        node_ip: Option<IpAddr>,
    ) -> Result<MasterConfig, MasterFlagsError> {
        let listen = daemon::listen_address("--listen", &self.listen)?;
        let raft_listen = daemon::listen_address("--raft-listen", &self.raft_listen)?;
        if listen == raft_listen {
            return Err(MasterFlagsError::SameAddress(listen));
        }
        let default_route = || skiff_agent::node_info::default_route_ipv4(Path::new("/"));
        let advertise = |flag: &str, given: Option<&str>, bound: SocketAddr| match given {
            Some(addr) => daemon::listen_address(flag, addr).map(|_| addr.to_owned()),
            None => {
                let host = advertise_host(self.advertise_address, node_ip, bound, default_route);
                Ok(SocketAddr::new(host, bound.port()).to_string())
            }
        };
        let advertise_api = advertise("--advertise-api", self.advertise_api.as_deref(), listen)?;
        let advertise_raft = advertise(
            "--advertise-raft",
            self.advertise_raft.as_deref(),
            raft_listen,
        )?;
        let metrics_listen = daemon::metrics_address("--metrics-listen", &self.metrics_listen)?;
        let cluster_cidr = self.network.cluster_range()?;
        let pod_cidrs = PodCidrConfig::new(cluster_cidr, self.node_cidr_mask_size)
            .map_err(MasterFlagsError::NodeCidrMaskSize)?;
        let service_cidr = self.network.service_range()?;
        let service_node_ports = self.network.node_port_range()?;
        let cluster_dns = self.network.cluster_dns()?;
        let every: std::time::Duration = self.snapshot_schedule.into();
        let snapshot_schedule = SnapshotSchedule {
            every: (!every.is_zero()).then_some(every),
            retention: usize::try_from(self.snapshot_retention).unwrap_or(usize::MAX),
        };
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
            snapshot_schedule,
            raft_timings: RaftTimings::default(),
            notify_ready: true,
            metrics_listen,
            pod_cidrs,
            service_cidr,
            service_node_ports,
            cluster_dns,
            lifecycle: LifecycleConfig {
                grace: self.node_monitor_grace_period.into(),
                eviction_delay: self.pod_eviction_timeout.into(),
            },
            pod_gc: PodGcConfig {
                terminated_threshold: self.terminated_pod_gc_threshold,
                ..PodGcConfig::default()
            },
        })
    }
}

/// The host a master announces for a listener bound to `bound`: the
/// `--advertise-address` given, else `bound` when it is a specific address,
/// else the node IP given, else the default route's interface address
/// (`default_route`, asked only then), else 127.0.0.1, which only this
/// machine reaches (the master warns about it when it starts).
pub fn advertise_host(
    advertise_address: Option<IpAddr>,
    node_ip: Option<IpAddr>,
    bound: SocketAddr,
    default_route: impl FnOnce() -> Option<Ipv4Addr>,
) -> IpAddr {
    if let Some(ip) = advertise_address {
        return ip;
    }
    if !bound.ip().is_unspecified() {
        return bound.ip();
    }
    if let Some(ip) = node_ip {
        return ip;
    }
    default_route().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4)
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

/// Raft's clock and snapshots: `skiff master` only.
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
        // A lone master is no node: no --node-ip.
        let mut config = self.master.to_config(self.data_dir.clone(), None)?;
        config.snapshot_after_entries = tuning.snapshot_after_entries;
        config.raft_timings = RaftTimings {
            heartbeat_interval: tuning.raft_heartbeat_interval.into(),
            election_timeout: tuning.raft_election_timeout.into(),
        }
        .check()?;
        Ok(config)
    }
}

/// Runs `skiff master` until a signal; a bad flag exits with 2. With
/// `--cluster-reset`, resets its data dir instead and exits.
pub fn run(args: MasterArgs) -> ExitCode {
    let reset = &args.master.reset;
    if reset.cluster_reset {
        let restore = reset.restore.as_deref();
        return cluster_reset::run(args.to_config(), &args.daemon.log_format, restore);
    }
    // Before the runtime starts any thread; see malloc_arenas.
    malloc_arenas::for_master();
    daemon::serve(
        args.to_config(),
        &args.daemon.log_format,
        skiff_master::server::run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

    fn everywhere() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 6443))
    }

    #[test]
    fn a_master_advertises_the_node_address_unless_told_otherwise() {
        let route = || Some(LAN);
        let unasked = || -> Option<Ipv4Addr> { panic!("the default route is not looked up") };
        let given: IpAddr = "10.0.0.5".parse().unwrap();
        let node_ip: IpAddr = "192.168.1.21".parse().unwrap();
        let specific: SocketAddr = "192.168.1.30:6443".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        // Listening everywhere: the default route's interface, or the node IP.
        let host = advertise_host(None, None, everywhere(), route);
        assert_eq!(host, IpAddr::V4(LAN));
        let host = advertise_host(None, Some(node_ip), everywhere(), unasked);
        assert_eq!(host, node_ip);
        // --advertise-address wins over everything.
        let host = advertise_host(Some(given), Some(node_ip), everywhere(), unasked);
        assert_eq!(host, given);
        let host = advertise_host(Some(given), None, specific, unasked);
        assert_eq!(host, given);
        // A specific listen address is the one others can reach.
        let host = advertise_host(None, Some(node_ip), specific, unasked);
        assert_eq!(host, specific.ip());
        let host = advertise_host(None, None, loopback, unasked);
        assert_eq!(host, loopback.ip());
        // No default route and nothing given: loopback, which the master
        // warns about when it starts.
        let host = advertise_host(None, None, everywhere(), || None);
        assert_eq!(host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
