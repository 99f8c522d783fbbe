//! Starting up within a bounded time, telling systemd how far it got. An
//! agent that needs the masters to start (to join the cluster, to register
//! and learn the cluster network, to get its pod subnet) gives up after
//! `--join-timeout` with an error that says what it was waiting for and
//! what to check, and exits non-zero, instead of waiting silently forever
//! (a master listening on loopback, a firewall, a wrong address). On the
//! way, `STATUS=` lines ("joining 192.168.1.10:6443", "waiting for the
//! master", "registered as pi-1") say what it is doing, for `systemctl
//! status skiff-agent`; a standing warning, such as a node IP no other
//! machine can reach, is appended to each.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// `--join-timeout` unless told otherwise.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What the agent was waiting for when its start timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Trading the join token for a certificate.
    Joining,
    /// Registering the node, and learning the cluster network.
    Registering,
    /// Waiting for the masters to give the node a pod subnet.
    PodSubnet,
}

/// The agent did not get what it needed from the masters in time.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {}s: {}; --join-timeout sets how long to try", .waited.as_secs(), advice(*.stage, .servers))]
pub struct StartTimeout {
    pub stage: Stage,
    pub servers: String,
    pub waited: Duration,
}

/// What the agent was waiting for, and what to check.
fn advice(stage: Stage, servers: &str) -> String {
    match stage {
        Stage::Joining => format!(
            "could not join the cluster through {servers}, as the warnings above say; check \
             that the master listens on an address this machine reaches (`skiff server` \
             listens on 0.0.0.0:6443 unless told otherwise), that no firewall drops the port \
             between the machines, and that the join token is valid (`skiff token list` on \
             the server)"
        ),
        Stage::Registering => format!(
            "joined, but no master at {servers} registered this node; check that the masters \
             have a leader (`skiff ctl get nodes` on the server) and can reach each other"
        ),
        Stage::PodSubnet => format!(
            "registered, but the masters at {servers} gave this node no pod subnet; check \
             that a master leads and that the cluster CIDR has subnets left (`skiff ctl get \
             nodes -o wide` on the server)"
        ),
    }
}

/// One agent start: its deadline, and what it tells systemd.
#[derive(Debug)]
pub struct Startup {
    started: Instant,
    limit: Option<Duration>,
    servers: String,
    warning: Option<String>,
}

impl Startup {
    /// Starts the clock for an agent joining through `servers`, giving up
    /// after `limit` (`None`: never).
    pub fn new(servers: &[String], limit: Option<Duration>) -> Startup {
        Startup {
            started: Instant::now(),
            limit,
            servers: servers.join(", "),
            warning: None,
        }
    }

    /// Logs `warning` and repeats it in every status from now on.
    pub fn warn(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.warning = Some(warning);
        skiff_telemetry::sd_notify::status(&self.line(""));
    }

    /// Tells systemd what the agent is doing now (and logs it).
    pub fn status(&self, doing: &str) {
        tracing::info!("{doing}");
        skiff_telemetry::sd_notify::status(&self.line(doing));
    }

    /// "joining ..." with the masters' addresses.
    pub fn joining(&self) {
        self.status(&format!("joining {}", self.servers));
    }

    /// A status line: what the agent is doing, then any standing warning.
    fn line(&self, doing: &str) -> String {
        match (&self.warning, doing) {
            (None, doing) => doing.to_owned(),
            (Some(warning), "") => format!("WARNING: {warning}"),
            (Some(warning), doing) => format!("{doing}; WARNING: {warning}"),
        }
    }

    /// Awaits `step` of `stage` until the start deadline.
    pub async fn within<T>(
        &self,
        stage: Stage,
        step: impl Future<Output = T>,
    ) -> Result<T, StartTimeout> {
        let Some(limit) = self.limit else {
            return Ok(step.await);
        };
        tokio::time::timeout_at(self.started + limit, step)
            .await
            .map_err(|_| StartTimeout {
                stage,
                servers: self.servers.clone(),
                waited: self.started.elapsed(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_start_gives_up_at_its_deadline_saying_what_it_waited_for() {
        let servers = vec!["192.168.1.10:6443".to_owned()];
        let startup = Startup::new(&servers, Some(Duration::from_secs(300)));
        let quick = startup.within(Stage::Joining, async { 7 }).await;
        assert_eq!(quick.unwrap(), 7);
        let never = std::future::pending::<()>();
        let err = startup.within(Stage::Joining, never).await.unwrap_err();
        assert_eq!(err.stage, Stage::Joining);
        assert_eq!(err.waited, Duration::from_secs(300));
        let message = err.to_string();
        assert!(message.starts_with("gave up after 300s"), "{message}");
        assert!(message.contains("192.168.1.10:6443"), "{message}");
        assert!(message.contains("--join-timeout"), "{message}");
        // The deadline is the whole start's: a later stage gets what is
        // left, here nothing.
        let later = startup.within(Stage::Registering, std::future::pending::<()>());
        let err = later.await.unwrap_err();
        assert_eq!(err.stage, Stage::Registering);
        assert_eq!(err.waited, Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_a_start_waits_as_long_as_it_takes() {
        let startup = Startup::new(&["m:6443".to_owned()], None);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            9
        };
        assert_eq!(startup.within(Stage::PodSubnet, slow).await.unwrap(), 9);
    }

    #[test]
    fn statuses_carry_the_standing_warning() {
        let mut startup = Startup::new(&["m:6443".to_owned()], None);
        assert_eq!(startup.line("joining m:6443"), "joining m:6443");
        startup.warning = Some("the node IP 127.0.0.1 is a loopback address".to_owned());
        assert_eq!(
            startup.line("registered as pi-1"),
            "registered as pi-1; WARNING: the node IP 127.0.0.1 is a loopback address"
        );
        assert!(startup.line("").starts_with("WARNING: "));
    }
}
