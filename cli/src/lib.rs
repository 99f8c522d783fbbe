//! Command-line front end of skiff. `main` stays thin; parsing, config and
//! the commands live here where tests can reach them. This file is the
//! clap top level and the dispatch; each command has its module:
//!
//! - `skiff server` (`server`): a master and an agent in one process (one machine).
//! - `skiff master` (`master`): run a master (Raft store + API).
//! - `skiff agent` (`agent`): run a node's agent (pods through containerd).
//! - `skiff ctl` (`ctl`): kubectl-style client.
//! - `skiff token` (`token`): join tokens; `skiff certificate rotate` (`certificate`).
//! - `skiff snapshot` (`snapshot`) and `skiff cluster` (`cluster`): the
//!   datastore's snapshots and membership; `--cluster-reset` of `server`
//!   and `master` (`cluster_reset`).
//! - `skiff completion bash|zsh|fish|...`: a shell's completion script, from
//!   the clap tree itself.
//! - `skiff check-config` (`check_config`): is this machine ready for skiff.
//! - `skiff version`.
//!
//! The three long-running commands share `daemon` (settings file, log
//! format, `serve`), `logging`, `cluster_network`, `settings` and
//! `shutdown`.

pub mod agent;
pub mod allocator;
pub mod certificate;
pub mod check_config;
pub mod cluster;
pub mod cluster_network;
pub mod cluster_reset;
pub mod ctl;
pub mod daemon;
pub mod logging;
mod malloc_arenas;
pub mod master;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod snapshot;
pub mod token;

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub use agent::AgentArgs;
pub use master::MasterArgs;
pub use server::ServerArgs;

/// Where skiff keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/skiff";

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
    Server(Box<ServerArgs>),
    /// Run a master: the Raft-replicated store and the API.
    Master(MasterArgs),
    /// Run a node agent: pods through containerd, heartbeats to the masters.
    Agent(AgentArgs),
    /// Talk to the cluster, kubectl-style.
    Ctl(ctl::CtlArgs),
    /// Create, list and delete join tokens.
    Token(token::TokenArgs),
    /// Save, list and delete snapshots of the datastore (restore one with
    /// `skiff server --cluster-reset --restore FILE`).
    Snapshot(snapshot::SnapshotArgs),
    /// List the masters, remove one, or record one's new addresses.
    Cluster(cluster::ClusterArgs),
    /// Renew certificates now.
    Certificate(certificate::CertificateArgs),
    /// Print a shell completion script, e.g. `skiff completion bash >
    /// /etc/bash_completion.d/skiff`.
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Check this machine for what skiff needs, as `k3s check-config` does:
    /// kernel features, the memory cgroup, containerd and runc, free disk,
    /// the clock. Exits 1 when something fails.
    CheckConfig(check_config::CheckConfigArgs),
    /// Print the version.
    Version,
}

/// Runs the parsed command; the exit code says whether it worked.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("skiff {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Server(args) => server::run(*args),
        Command::Master(args) => master::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Token(args) => run_client(token::run(args, &mut std::io::stdout())),
        Command::Snapshot(args) => run_client(snapshot::run(args, &mut std::io::stdout())),
        Command::Cluster(args) => run_client(cluster::run(args, &mut std::io::stdout())),
        Command::Certificate(args) => report(certificate::run(args, &mut std::io::stdout())),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Ctl(args) => run_ctl(args),
        Command::Completion { shell } => report(completion(shell, &mut std::io::stdout())),
    }
}

/// Writes `shell`'s completion script for `skiff`. Made in memory first:
/// clap_complete panics on a failed write, and a closed pipe
/// (`skiff completion bash | head`) is an error, not a crash.
fn completion(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// The tokio runtime every command that talks to the network runs on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// "error: …" on stderr; nothing (and no panic, unlike eprintln!) if
/// stderr is gone.
fn print_error(message: impl Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Runs a short-lived client command to its end: 0 on success, 1 with the
/// error on stderr otherwise.
fn run_client<E: Display>(command: impl Future<Output = Result<(), E>>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    report(rt.block_on(command))
}

/// Runs a `ctl` command; `exec` exits with its command's exit code (and
/// says so on stderr, as kubectl does).
fn run_ctl(args: ctl::CtlArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(ctl::run(args, &mut std::io::stdout())) {
        Err(ctl::CtlError::CommandExited(code)) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "command terminated with exit code {code}"
            );
            // Exit statuses are 8 bits; what does not fit still fails.
            match u8::try_from(code) {
                Ok(c) if c != 0 => ExitCode::from(c),
                _ => ExitCode::FAILURE,
            }
        }
        other => report(other),
    }
}

fn report<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The long flags of `skiff <sub>` and their defaults.
    fn flags(sub: &str) -> BTreeMap<String, Vec<String>> {
        let cli = Cli::command();
        let command = cli.find_subcommand(sub).expect("a subcommand");
        command
            .get_arguments()
            .filter_map(|arg| {
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                Some((arg.get_long()?.to_owned(), defaults))
            })
            .collect()
    }

    /// Every command and flag under `command`, depth first, with the path
    /// that leads to it.
    fn without_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            let sub_path = format!("{path} {name}");
            if sub
                .get_about()
                .is_none_or(|a| a.to_string().trim().is_empty())
            {
                missing.push(sub_path.clone());
            }
            without_help(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_command_and_flag_has_help() {
        let mut command = Cli::command();
        // As the user sees it: global flags copied down, help added.
        command.build();
        let mut missing = Vec::new();
        without_help(&command, "skiff", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn completion_scripts_complete_skiff() {
        let mut out = Vec::new();
        completion(clap_complete::Shell::Bash, &mut out).unwrap();
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("_skiff()"), "{script}");
        assert!(script.contains("ctl") && script.contains("--selector"));
    }

    #[test]
    fn the_commands_are_well_formed() {
        // Panics on a flag defined twice in one command, among others.
        Cli::command().debug_assert();
    }

    #[test]
    fn server_takes_the_master_and_agent_flags_with_their_defaults() {
        let server = flags("server");
        let master = flags("master");
        let agent = flags("agent");
        for (flag, default) in &server {
            let expected = match flag.as_str() {
                // <data-dir>/server and <data-dir>/agent.
                "data-dir" => continue,
                "agent-listen" => &agent["listen"],
                "agent-metrics-listen" => &agent["metrics-listen"],
                _ => master
                    .get(flag)
                    .or_else(|| agent.get(flag))
                    .unwrap_or_else(|| panic!("--{flag} is neither a master's nor an agent's")),
            };
            assert_eq!(default, expected, "--{flag}");
        }
        for shared in ["config", "log-format"] {
            assert_eq!(master[shared], agent[shared], "--{shared}");
        }
        // Agents learn these from the masters; their flags only override.
        for learned in ["cluster-cidr", "service-cidr", "cluster-dns"] {
            assert!(agent[learned].is_empty(), "--{learned} of an agent");
            assert!(server.contains_key(learned), "--{learned} of a server");
        }
        for timing in ["node-monitor-grace-period", "pod-eviction-timeout"] {
            assert_eq!(server[timing], master[timing], "--{timing}");
        }
        for own in [
            "snapshot-after-entries",
            "raft-heartbeat-interval",
            "raft-election-timeout",
            "server",
            "containerd-namespace",
            "heartbeat-interval",
        ] {
            assert!(!server.contains_key(own), "--{own} is not a server flag");
        }
        assert_eq!(agent["data-dir"], vec!["/var/lib/skiff/agent".to_owned()]);
    }
}
