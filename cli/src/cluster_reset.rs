//! `--cluster-reset [--restore FILE]` of `skiff master` and `skiff server`,
//! as k3s's: instead of running the master, makes its data dir a new
//! one-member cluster's (keeping the objects and their revisions, or
//! taking a snapshot's), says so and what to do next, and exits. As in
//! k3s, the master is then started again without the flag, and the other
//! masters join it with empty data dirs.
//!
//! These two flags are a one-time action, so they are read from the
//! command line only: never from `SKIFF_*` variables or config.yaml, where
//! they would reset the cluster at every start (`settings`).

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skiff_master::datastore::cluster_reset::ResetOutcome;
use skiff_master::server::MasterConfig;

use crate::{daemon, print_error};

/// The flags, on `skiff master` and `skiff server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterResetFlags {
    /// Make this master the only member of a new cluster, keeping its
    /// objects and revision (or --restore's), then exit: start it again
    /// without the flag, and join the other masters to it with empty data
    /// dirs. The master must be stopped.
    #[arg(long)]
    pub cluster_reset: bool,
    /// With --cluster-reset: make the cluster from this snapshot file
    /// (`skiff snapshot save`); it is checked whole first, and a damaged
    /// one changes nothing.
    #[arg(long, value_name = "FILE", requires = "cluster_reset")]
    pub restore: Option<PathBuf>,
}

/// The flags read from the command line only.
pub const FLAGS: [&str; 2] = ["cluster-reset", "restore"];

/// What was done and what to do next, for the operator.
pub fn report(config: &MasterConfig, restore: Option<&Path>, outcome: &ResetOutcome) -> String {
    let node = outcome.log_id.leader_id.node_id;
    let from = match restore {
        Some(file) => format!("the snapshot {}", file.display()),
        None => format!(
            "its own data ({} log entries applied past its last checkpoint)",
            outcome.replayed
        ),
    };
    let mut text = format!(
        "The cluster membership has been reset: this master (id {node}, raft {}, api {}) is \
         the only member of a new cluster, with {} objects at revision {}, from {from}.\n",
        config.advertise_raft, config.advertise_api, outcome.objects, outcome.revision
    );
    if let Some(previous) = &outcome.previous {
        text.push_str(&format!(
            "The store files it replaced are kept in {}.\n",
            previous.display()
        ));
    }
    let token = skiff_master::security::pki::token_path(&config.data_dir);
    text.push_str(&format!(
        "Restart without --cluster-reset now. Then, on every other master: stop it, move its \
         data dir away, and start it with an empty one and --join {} --token <the server \
         token in {}>.\n",
        config.advertise_api,
        token.display()
    ));
    text
}

/// Runs the reset for the master `config` (exit 2 on a bad flag, 1 on a
/// failure, which leaves the data dir as it was).
pub fn run<E: Display>(
    config: Result<MasterConfig, E>,
    log_format: &str,
    restore: Option<&Path>,
) -> ExitCode {
    let config = match daemon::configured(config, log_format) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match skiff_master::server::reset_cluster(&config, restore) {
        Ok(outcome) => {
            use std::io::Write;
            let text = report(&config, restore, &outcome);
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}
