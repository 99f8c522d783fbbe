//! `skiff server`: a master and an agent in one process, a whole one-node
//! cluster that more agents and masters can join. Its flags are the
//! master's shared ones ([`MasterFlags`], with the cluster ranges and the
//! failover timings), the agent's node ones ([`AgentFlags`]) and the
//! agent's two listen addresses under names of their own; the master's
//! state goes to `<data-dir>/server`, the agent's to `<data-dir>/agent`.
//! The master listens on every address and advertises the node IP
//! (`--node-ip` is both halves'). The local agent joins with the master's
//! server token, talks to the local master and learns the cluster network
//! from it as any agent does; either half ending stops the other.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use skiff_agent::AgentConfig;
use skiff_master::server::{MasterConfig, MasterError};
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentFlags, AgentFlagsError};
use crate::cluster_reset;
use crate::daemon::{self, AddressError, DaemonFlags};
use crate::master::{MasterFlags, MasterFlagsError};
use crate::{malloc_arenas, DEFAULT_DATA_DIR};

/// The master's state, under a server's data dir.
pub const MASTER_DIR: &str = "server";
/// The agent's state, under a server's data dir (and a lone agent's,
/// under the default data dir).
pub const AGENT_DIR: &str = "agent";
/// How long the local agent waits for the master to write its token: the
/// master writes it while starting, before it can take any write.
const TOKEN_WAIT: Duration = Duration::from_secs(60);
/// How often the local agent looks for the token meanwhile.
const TOKEN_POLL: Duration = Duration::from_millis(50);

/// Why `skiff server` could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    MasterFlags(#[from] MasterFlagsError),
    #[error(transparent)]
    AgentFlags(#[from] AgentFlagsError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Master(#[from] MasterError),
    #[error(transparent)]
    Agent(#[from] skiff_agent::Error),
    #[error("the master wrote no token to {} within {secs} s; its log says why", .path.display())]
    NoToken { path: PathBuf, secs: u64 },
    #[error("shut down before the master wrote its token")]
    ShutDown,
    #[error("the master or agent task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Flags of `skiff server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub daemon: DaemonFlags,
    /// Master state goes to <data-dir>/server, the agent's to <data-dir>/agent.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub master: MasterFlags,
    #[command(flatten)]
    pub agent: AgentFlags,
    /// The agent's own endpoint (container logs).
    #[arg(long, default_value = agent::DEFAULT_LISTEN)]
    pub agent_listen: String,
    /// The agent's /metrics, /healthz and /readyz ("none": off).
    #[arg(long, default_value = agent::DEFAULT_METRICS_LISTEN)]
    pub agent_metrics_listen: String,
}

impl ServerArgs {
    /// The master's and the agent's configs, checked as their own commands
    /// check them.
    pub fn to_configs(&self) -> Result<(MasterConfig, AgentConfig), ServerError> {
        let node_ip = self.agent.node_ip;
        let master_config = MasterConfig {
            // The agent says when the node is ready.
            notify_ready: false,
            ..self
                .master
                .to_config(self.data_dir.join(MASTER_DIR), node_ip)?
        };
        // The local agent talks to the local master.
        let server = match &self.master.advertise_api {
            Some(addr) => addr.clone(),
            None if master_config.listen.ip().is_unspecified() => {
                format!("127.0.0.1:{}", master_config.listen.port())
            }
            None => master_config.listen.to_string(),
        };
        let agent_dir = self.data_dir.join(AGENT_DIR);
        let mut agent_config = self.agent.to_config(vec![server], &agent_dir)?;
        agent_config.listen = daemon::listen_address("--agent-listen", &self.agent_listen)?;
        agent_config.metrics_listen =
            daemon::metrics_address("--agent-metrics-listen", &self.agent_metrics_listen)?;
        agent_config.containerd_namespace = agent::DEFAULT_CONTAINERD_NAMESPACE.to_owned();
        agent_config.heartbeat_interval = agent::DEFAULT_HEARTBEAT_INTERVAL;
        Ok((master_config, agent_config))
    }
}

/// Runs `skiff server` until a signal or until either half ends; a bad
/// flag exits with 2. With `--cluster-reset`, resets the master's data dir
/// instead (the agent does not start) and exits.
pub fn run(args: ServerArgs) -> ExitCode {
    let reset = &args.master.reset;
    if reset.cluster_reset {
        let master = args.to_configs().map(|(master, _)| master);
        let restore = reset.restore.as_deref();
        return cluster_reset::run(master, &args.daemon.log_format, restore);
    }
    // Before the runtime starts any thread; see malloc_arenas.
    malloc_arenas::for_master();
    daemon::serve(
        args.to_configs(),
        &args.daemon.log_format,
        |(master, agent), shutdown| run_both(master, agent, shutdown),
    )
}

/// The master and the agent side by side: the first to end stops the
/// other, and its result is the server's.
async fn run_both(
    master: MasterConfig,
    agent: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let token_file = skiff_master::security::pki::token_path(&master.data_dir);
    let mut master = tokio::spawn(run_master(master, shutdown.clone()));
    let mut agent = tokio::spawn(run_agent(agent, token_file, shutdown.clone()));
    let (first, other) = tokio::select! {
        m = &mut master => (m, agent),
        a = &mut agent => (a, master),
    };
    shutdown.cancel();
    let _ = other.await;
    first?
}

async fn run_master(config: MasterConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    skiff_master::server::run(config, shutdown)
        .await
        .map_err(ServerError::Master)
}

/// The local agent joins with the server token, once the master has
/// written it.
async fn run_agent(
    mut config: AgentConfig,
    token_file: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if config.token.is_none() {
        config.token = Some(wait_for_token(&token_file, &shutdown).await?);
    }
    skiff_agent::run(config, shutdown)
        .await
        .map_err(ServerError::Agent)
}

/// Waits for the master of `skiff server` to write its server token.
async fn wait_for_token(path: &Path, shutdown: &CancellationToken) -> Result<String, ServerError> {
    let deadline = tokio::time::Instant::now() + TOKEN_WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_owned());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ServerError::NoToken {
                path: path.to_owned(),
                secs: TOKEN_WAIT.as_secs(),
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(ServerError::ShutDown),
            _ = tokio::time::sleep(TOKEN_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use clap::Parser;

    use crate::{Cli, Command};

    fn server(args: &[&str]) -> super::ServerArgs {
        let mut argv = vec!["skiff", "server", "--node-name", "pi-1"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Server(args) => *args,
            other => panic!("not a server: {other:?}"),
        }
    }

    #[test]
    fn a_server_listens_everywhere_and_advertises_its_node_ip() {
        let (master, agent) = server(&["--node-ip", "192.168.1.21"]).to_configs().unwrap();
        let everywhere = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        assert_eq!(master.listen, everywhere(6443));
        assert_eq!(master.raft_listen, everywhere(6444));
        assert_eq!(master.advertise_api, "192.168.1.21:6443");
        assert_eq!(master.advertise_raft, "192.168.1.21:6444");
        // The local agent reaches its master on loopback, whatever the LAN does.
        assert_eq!(agent.servers, ["127.0.0.1:6443"]);
        assert_eq!(agent.node_ip.as_deref(), Some("192.168.1.21"));

        let (master, _) = server(&["--advertise-address", "10.1.2.3"])
            .to_configs()
            .unwrap();
        assert_eq!(master.advertise_api, "10.1.2.3:6443");
        assert_eq!(master.advertise_raft, "10.1.2.3:6444");
    }

    #[test]
    fn a_server_takes_the_failover_timings() {
        let args = [
            "--node-monitor-grace-period",
            "20s",
            "--pod-eviction-timeout",
            "1m",
        ];
        let (master, _) = server(&args).to_configs().unwrap();
        assert_eq!(master.lifecycle.grace, Duration::from_secs(20));
        assert_eq!(master.lifecycle.eviction_delay, Duration::from_secs(60));
    }

    #[test]
    fn a_server_takes_the_terminated_pod_gc_threshold() {
        let (master, _) = server(&[]).to_configs().unwrap();
        assert_eq!(master.pod_gc.terminated_threshold, 12_500);
        let args = ["--terminated-pod-gc-threshold", "0"];
        let (master, _) = server(&args).to_configs().unwrap();
        assert_eq!(master.pod_gc.terminated_threshold, 0);
    }
}
