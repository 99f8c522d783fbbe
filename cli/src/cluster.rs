//! `skiff cluster members|remove|readdress`: the masters of the Raft
//! cluster, as the leader sees them, and the operator's changes to them
//! (openraft membership changes, run on the leader). Admin calls, with
//! `--server`/`--config` as for `ctl`.
//!
//! Replacing a dead master: `skiff cluster remove ID`, then start the new
//! one with an empty data dir and `--join`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use skiff_master::client::Client;
use skiff_proto::api::{MemberStatus, MembersResponse};

use crate::ctl::table::format_rows;
use crate::ctl::{self, CtlError};

/// Flags of `skiff cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Master API address (HOST:PORT or https://HOST:PORT); overrides the
    /// config file.
    #[arg(long, global = true, env = "SKIFF_SERVER")]
    pub server: Option<String>,
    /// Credential file (a master's admin.conf, or any kubeconfig): its
    /// current context is used. Default: $SKIFF_CONFIG, then the first
    /// existing file in $KUBECONFIG, then ~/.skiff/config, then
    /// /etc/skiff/admin.conf.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// List the masters: id, role (leader, voter or learner), addresses,
    /// and as the leader sees them, the last log index each holds and when
    /// each last answered it.
    Members,
    /// Remove a master from the cluster (a dead one, before its
    /// replacement joins with an empty data dir and --join). The last
    /// voter and the leader itself are not removed.
    Remove {
        /// The master's id, as `members` shows it.
        id: u64,
    },
    /// Record new addresses for a master that moved. It must already
    /// answer at them as that master, advertising exactly them.
    Readdress {
        /// The master's id, as `members` shows it.
        id: u64,
        /// Its Raft address (HOST:PORT), as it advertises it.
        #[arg(long)]
        raft_addr: String,
        /// Its API address (HOST:PORT), as it advertises it.
        #[arg(long)]
        api_addr: String,
    },
}

/// Runs a `cluster` command.
pub async fn run(args: ClusterArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    skiff_security::install_crypto_provider();
    let client = ctl::connect(args.server.as_deref(), args.config.as_deref())?;
    match args.command {
        ClusterCommand::Members => members(&client, out).await,
        ClusterCommand::Remove { id } => {
            let members = client
                .remove_member(id)
                .await
                .map_err(api(format!("removing member {id}")))?;
            writeln!(out, "member {id} removed; the cluster's members now:")?;
            write_members(&members, out)
        }
        ClusterCommand::Readdress {
            id,
            raft_addr,
            api_addr,
        } => {
            let members = client
                .readdress_member(id, &raft_addr, &api_addr)
                .await
                .map_err(api(format!("re-addressing member {id}")))?;
            writeln!(out, "member {id} re-addressed; the cluster's members now:")?;
            write_members(&members, out)
        }
    }
}

fn api(context: String) -> impl FnOnce(skiff_master::client::ClientError) -> CtlError {
    move |source| CtlError::Api { context, source }
}

async fn members(client: &Client, out: &mut dyn Write) -> Result<(), CtlError> {
    let members = client
        .members()
        .await
        .map_err(api("listing members".to_owned()))?;
    write_members(&members, out)
}

/// How long ago, from milliseconds: `0.2s`, `12.0s`, `3m 12s`.
fn ago(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        let whole = Duration::from_secs(ms / 1000);
        format!("{} ago", humantime::format_duration(whole))
    }
}

fn member_row(m: &MemberStatus, leader_id: u64) -> Vec<String> {
    let contact = match m.last_contact_ms {
        _ if m.node_id == leader_id => "-".to_owned(),
        Some(ms) => ago(ms),
        None => "never".to_owned(),
    };
    let role = match (m.leader, m.voter) {
        (true, _) => "leader",
        (false, true) => "voter",
        (false, false) => "learner",
    };
    // A master that named no release answered before this column existed
    // (an older build), or has not answered yet.
    let unnamed = if m.last_contact_ms.is_some() {
        "older"
    } else {
        "-"
    };
    vec![
        m.node_id.to_string(),
        role.to_owned(),
        m.raft_addr.clone(),
        m.api_addr.clone(),
        m.matched_index.map_or("-".to_owned(), |i| i.to_string()),
        contact,
        m.version.clone().unwrap_or_else(|| unnamed.to_owned()),
        m.data_format
            .map_or_else(|| unnamed.to_owned(), |f| f.to_string()),
    ]
}

fn write_members(members: &MembersResponse, out: &mut dyn Write) -> Result<(), CtlError> {
    let header = [
        "ID",
        "ROLE",
        "RAFT ADDRESS",
        "API ADDRESS",
        "MATCHED",
        "LAST CONTACT",
        "VERSION",
        "DATA FORMAT",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for m in &members.members {
        rows.push(member_row(m, members.leader_id));
    }
    out.write_all(format_rows(&rows).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table line's cells (none of them empty here).
    fn cells(line: &str) -> Vec<&str> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn members_show_role_leader_progress_last_contact_and_release() {
        let member = |id: u64, voter: bool, contact: Option<u64>| MemberStatus {
            node_id: id,
            raft_addr: format!("10.0.0.{id}:6444"),
            api_addr: format!("10.0.0.{id}:6443"),
            voter,
            leader: id == 1,
            matched_index: contact.map(|_| 40 + id),
            last_contact_ms: contact,
            // Member 4 runs an older build, which names no release.
            version: (id != 4 && contact.is_some()).then(|| "0.1.0".to_owned()),
            data_format: (id != 4 && contact.is_some()).then_some(2),
        };
        let response = MembersResponse {
            members: vec![
                member(1, true, Some(0)),
                member(2, true, Some(120)),
                member(3, true, None),
                member(4, false, Some(200_000)),
            ],
            leader_id: 1,
            last_log_index: 42,
        };
        let mut out = Vec::new();
        write_members(&response, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(cells).collect();
        assert_eq!(lines[0][0], "ID");
        assert_eq!(
            lines[1],
            [
                "1",
                "leader",
                "10.0.0.1:6444",
                "10.0.0.1:6443",
                "41",
                "-",
                "0.1.0",
                "2"
            ]
        );
        assert_eq!(lines[2][1..2], ["voter"]);
        assert_eq!(lines[2][5..], ["0.1s ago", "0.1.0", "2"]);
        assert_eq!(lines[3][4..], ["-", "never", "-", "-"]);
        assert_eq!(lines[4][1], "learner");
        assert_eq!(lines[4][5..], ["3m 20s ago", "older", "older"]);
    }
}
