//! `skiff snapshot save|list|delete`, as `k3s etcd-snapshot`: consistent
//! snapshots of the datastore, kept as files in `<data-dir>/snapshots/` of
//! the master that takes them (the leader), and restored with
//! `skiff server --cluster-reset --restore FILE`. Admin calls, with
//! `--server`/`--config` as for `ctl`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use skiff_master::client::Client;
use skiff_master::datastore::snapshots::DEFAULT_NAME;
use skiff_proto::api::StoredSnapshot;

use crate::ctl::table::format_rows;
use crate::ctl::{self, CtlError};

/// Flags of `skiff snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
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
    pub command: SnapshotCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the datastore now, on the leader: every write
    /// acknowledged before the call is in it. It becomes
    /// NAME-<unix-time>.skiffsnap in the leader's <data-dir>/snapshots.
    Save {
        /// The snapshot's name, before -<unix-time>: letters, digits, '.',
        /// '_' and '-' ("scheduled..." is the schedule's).
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// List the leader's snapshots, oldest first: name, size, revision,
    /// objects, when taken.
    List {
        /// The snapshots of the master --server names, not the leader's.
        #[arg(long)]
        local: bool,
    },
    /// Delete a snapshot.
    Delete {
        /// Its name, as `list` shows it (NAME-<unix-time>).
        name: String,
        /// Delete it on the master --server names, not on the leader.
        #[arg(long)]
        local: bool,
    },
}

/// Runs a `snapshot` command.
pub async fn run(args: SnapshotArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    skiff_security::install_crypto_provider();
    let client = ctl::connect(args.server.as_deref(), args.config.as_deref())?;
    match args.command {
        SnapshotCommand::Save { name } => save(&client, &name, out).await,
        SnapshotCommand::List { local } => list(&client, local, out).await,
        SnapshotCommand::Delete { name, local } => delete(&client, &name, local, out).await,
    }
}

fn api(context: &str) -> impl FnOnce(skiff_master::client::ClientError) -> CtlError + '_ {
    move |source| CtlError::Api {
        context: context.to_owned(),
        source,
    }
}

/// When a snapshot was taken, as RFC 3339.
fn taken_at(snapshot: &StoredSnapshot) -> String {
    skiff_objects::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(snapshot.created_unix))
}

async fn save(client: &Client, name: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    let saved = client
        .save_snapshot(name)
        .await
        .map_err(api("saving a snapshot"))?;
    let snapshot = saved.snapshot.unwrap_or_default();
    writeln!(
        out,
        "snapshot {} saved on master {} ({})",
        snapshot.name, saved.node_id, saved.api_addr
    )?;
    let rows = [
        ("path", snapshot.path.clone()),
        ("revision", snapshot.revision.to_string()),
        ("objects", snapshot.objects.to_string()),
        ("size", format!("{} bytes", snapshot.size_bytes)),
        ("taken", taken_at(&snapshot)),
        ("sha256", snapshot.checksum.clone()),
    ];
    for (what, value) in rows {
        writeln!(out, "  {what:<9}{value}")?;
    }
    Ok(())
}

async fn list(client: &Client, local: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let listed = client
        .list_snapshots(local)
        .await
        .map_err(api("listing snapshots"))?;
    let header = ["NAME", "SIZE", "REVISION", "OBJECTS", "CREATED"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for s in &listed.snapshots {
        if !s.error.is_empty() {
            let unreadable = format!("unreadable: {}", s.error);
            let _ = writeln!(
                std::io::stderr(),
                "warning: snapshot {}: {}",
                s.name,
                s.error
            );
            rows.push(vec![
                s.name.clone(),
                s.size_bytes.to_string(),
                "-".to_owned(),
                "-".to_owned(),
                unreadable,
            ]);
            continue;
        }
        rows.push(vec![
            s.name.clone(),
            s.size_bytes.to_string(),
            s.revision.to_string(),
            s.objects.to_string(),
            taken_at(s),
        ]);
    }
    out.write_all(format_rows(&rows).as_bytes())?;
    Ok(())
}

async fn delete(
    client: &Client,
    name: &str,
    local: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let deleted = client
        .delete_snapshot(name, local)
        .await
        .map_err(api("deleting the snapshot"))?;
    writeln!(
        out,
        "snapshot {name} deleted on master {} ({})",
        deleted.node_id, deleted.api_addr
    )?;
    Ok(())
}
