//! `skiff ctl`: the kubectl-style client. Commands read manifests, call the
//! API through [`skiff_master::client::Client`] and print what kubectl would.

pub mod describe;
pub mod rollout;
pub mod table;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use skiff_master::client::{Client, ClientError};
use skiff_master::objects::manifest::{
    list_to_json_value, parse_manifest, to_json_value, to_yaml, ManifestError,
};
use skiff_master::objects::{Kind, ObjectExt, UnknownKind};
use skiff_proto::api::Object;
use skiff_security::Credentials;

/// Flags shared by every `ctl` command.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Master API address (HOST:PORT); overrides the config file.
    #[arg(long, global = true, env = "SKIFF_SERVER")]
    pub server: Option<String>,
    /// Credential file (a master's admin.conf). Default: $SKIFF_CONFIG,
    /// then ~/.skiff/config, then /etc/skiff/admin.conf.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Create or update objects from manifests.
    Apply {
        /// A file, a directory of .yaml/.yml/.json files, or - for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Namespace for objects that name none.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Refuse unknown fields (default); --strict=false only warns.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        strict: bool,
    },
    /// Show objects.
    Get {
        /// Kind: name, plural or short name (po, deploy, rs, svc, ns, no, ep).
        kind: String,
        /// One object's name; all when omitted.
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output: json, yaml, wide or name (default: a table).
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// After listing, keep printing changes.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show an object in detail, with its conditions.
    Describe {
        kind: String,
        name: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Mark a node unschedulable.
    Cordon { node: String },
    /// Mark a node schedulable again.
    Uncordon { node: String },
    /// Cordon a node and evict its pods so their controllers move them.
    Drain {
        node: String,
        /// Also delete pods no controller will recreate.
        #[arg(long)]
        force: bool,
    },
    /// Set the replica count of a Deployment or ReplicaSet.
    Scale {
        /// KIND/NAME, or KIND NAME.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        replicas: i32,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Manage a Deployment's rollout.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Print a container's log.
    Logs {
        /// The pod's name (or pod/NAME).
        pod: String,
        /// The container; needed when the pod has several.
        #[arg(short = 'c', long)]
        container: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Keep printing what the container writes.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        tail: Option<i64>,
        /// The previous run of the container (after a restart).
        #[arg(short = 'p', long)]
        previous: bool,
    },
    /// Delete objects by name.
    Delete {
        kind: String,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Succeed when an object is already gone.
        #[arg(long)]
        ignore_not_found: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout finishes, showing progress.
    Status {
        /// deploy/NAME, or deploy NAME.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Give up after this long (e.g. 90s, 5m).
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
    /// Go back to the previous template (or to --to-revision).
    Undo {
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    #[error("{context}: {source}")]
    Api {
        context: String,
        source: ClientError,
    },
    #[error("--output {0:?} is not supported; use json, yaml, wide or name")]
    Output(String),
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, CtlError>;

/// Where the credential file comes from when `--config` is not given, in
/// order: `$SKIFF_CONFIG`, `~/.skiff/config`, `/etc/skiff/admin.conf`.
pub fn credential_candidates(env: Option<&str>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        candidates.push(PathBuf::from(e));
        return candidates;
    }
    if let Some(h) = home {
        candidates.push(h.join(".skiff/config"));
    }
    candidates.push(PathBuf::from(ADMIN_CONF));
    candidates
}

/// The admin credential a master writes with the default data dir.
pub const ADMIN_CONF: &str = "/etc/skiff/admin.conf";

/// The credential file to use: `--config`, else the first candidate that
/// exists (`$SKIFF_CONFIG` is used even when missing, to say so).
pub fn credential_file(config: Option<&Path>) -> Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c.to_owned());
    }
    let env = std::env::var("SKIFF_CONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = credential_candidates(env.as_deref(), home.as_deref());
    if env.as_deref().is_some_and(|e| !e.is_empty()) {
        return Ok(candidates[0].clone());
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "no credentials: pass --config, set SKIFF_CONFIG, or copy a master's admin.conf to {} (looked in {})",
                candidates[0].display(),
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// A client from the credential file, talking to `--server` if given,
/// else to the file's server.
pub fn connect(server: Option<&str>, config: Option<&Path>) -> Result<Client> {
    let path = credential_file(config)?;
    let fail = |message: String| CtlError::Config {
        path: path.clone(),
        message,
    };
    let credentials = Credentials::load(&path).map_err(|e| fail(e.to_string()))?;
    let transport = credentials.transport().map_err(|e| fail(e.to_string()))?;
    let server = server.unwrap_or(&credentials.server);
    Client::new(server, &transport).map_err(|source| CtlError::Api {
        context: "connecting".to_owned(),
        source,
    })
}

/// Runs one `ctl` command, printing to `out`.
pub async fn run(args: CtlArgs, out: &mut dyn Write) -> Result<()> {
    skiff_security::install_crypto_provider();
    let client = connect(args.server.as_deref(), args.config.as_deref())?;
    match args.command {
        CtlCommand::Apply {
            files,
            namespace,
            strict,
        } => apply(&client, &files, namespace.as_deref(), strict, out).await,
        CtlCommand::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            watch,
        } => {
            let kind = Kind::parse_cli(&kind)?;
            let namespace = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".to_owned()))
            };
            let (name, namespace, output) =
                (name.as_deref(), namespace.as_deref(), output.as_deref());
            let revision = get(&client, kind, name, namespace, output, out).await?;
            if watch {
                watch_changes(&client, kind, name, namespace, output, revision, out).await?;
            }
            Ok(())
        }
        CtlCommand::Describe {
            kind,
            name,
            namespace,
        } => {
            let kind = Kind::parse_cli(&kind)?;
            let ns = if kind.namespaced() {
                namespace.unwrap_or_else(|| "default".to_owned())
            } else {
                String::new()
            };
            let object = client
                .get(kind, &ns, &name)
                .await
                .map_err(|source| CtlError::Api {
                    context: format!("getting {}", resource_ref(kind, &name)),
                    source,
                })?;
            write!(out, "{}", describe::describe(&object))?;
            Ok(())
        }
        CtlCommand::Cordon { node } => {
            rollout::set_unschedulable(&client, &node, true).await?;
            writeln!(out, "node/{node} cordoned")?;
            Ok(())
        }
        CtlCommand::Uncordon { node } => {
            rollout::set_unschedulable(&client, &node, false).await?;
            writeln!(out, "node/{node} uncordoned")?;
            Ok(())
        }
        CtlCommand::Logs {
            pod,
            container,
            namespace,
            follow,
            tail,
            previous,
        } => {
            let name = pod
                .strip_prefix("pod/")
                .or_else(|| pod.strip_prefix("pods/"))
                .unwrap_or(&pod);
            let request = skiff_proto::api::PodLogsRequest {
                namespace: namespace.unwrap_or_else(|| "default".to_owned()),
                name: name.to_owned(),
                container: container.unwrap_or_default(),
                follow,
                tail_lines: tail,
                previous,
            };
            let context = format!("reading the log of pod/{name}");
            let mut stream = client
                .pod_logs(request)
                .await
                .map_err(|source| CtlError::Api {
                    context: context.clone(),
                    source,
                })?;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        out.write_all(&chunk.data)?;
                        out.flush()?;
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        return Err(CtlError::Api {
                            context,
                            source: skiff_master::client::ClientError::from_status(
                                client.addr(),
                                status,
                            ),
                        })
                    }
                }
            }
        }
        CtlCommand::Drain { node, force } => rollout::drain(&client, &node, force, out).await,
        CtlCommand::Scale {
            target,
            replicas,
            namespace,
        } => {
            let (kind, name) = parse_target(&target)?;
            let namespace = namespace.unwrap_or_else(|| "default".to_owned());
            rollout::scale(&client, kind, &namespace, &name, replicas).await?;
            writeln!(out, "{} scaled", resource_ref(kind, &name))?;
            Ok(())
        }
        CtlCommand::Rollout { command } => match command {
            RolloutCommand::Status {
                target,
                namespace,
                timeout,
            } => {
                let (_, name) = parse_deployment(&target)?;
                let namespace = namespace.unwrap_or_else(|| "default".to_owned());
                rollout::status(&client, &namespace, &name, timeout.into(), out).await
            }
            RolloutCommand::Undo {
                target,
                namespace,
                to_revision,
            } => {
                let (_, name) = parse_deployment(&target)?;
                let namespace = namespace.unwrap_or_else(|| "default".to_owned());
                rollout::undo(&client, &namespace, &name, to_revision).await?;
                writeln!(out, "deployment.apps/{name} rolled back")?;
                Ok(())
            }
        },
        CtlCommand::Delete {
            kind,
            names,
            namespace,
            ignore_not_found,
        } => {
            let kind = Kind::parse_cli(&kind)?;
            let namespace = namespace.unwrap_or_else(|| "default".to_owned());
            for name in names {
                match client.delete(kind, &namespace, &name, "").await {
                    Ok(_) => writeln!(out, "{} deleted", resource_ref(kind, &name))?,
                    Err(ClientError::NotFound(_)) if ignore_not_found => {}
                    Err(source) => {
                        return Err(CtlError::Api {
                            context: format!("deleting {}", resource_ref(kind, &name)),
                            source,
                        })
                    }
                }
            }
            Ok(())
        }
    }
}

/// `deploy/web` or `deploy web`.
pub fn parse_target(target: &[String]) -> Result<(Kind, String)> {
    match target {
        [one] => match one.split_once('/') {
            Some((kind, name)) if !name.is_empty() => Ok((Kind::parse_cli(kind)?, name.to_owned())),
            _ => Err(CtlError::Usage(format!(
                "{one:?}: name the object as KIND/NAME or KIND NAME"
            ))),
        },
        [kind, name] => Ok((Kind::parse_cli(kind)?, name.clone())),
        _ => Err(CtlError::Usage(
            "name the object as KIND/NAME or KIND NAME".to_owned(),
        )),
    }
}

fn parse_deployment(target: &[String]) -> Result<(Kind, String)> {
    let (kind, name) = parse_target(target)?;
    if kind != Kind::Deployment {
        return Err(CtlError::Usage(format!(
            "rollout works on deployments, not {}",
            kind.plural()
        )));
    }
    Ok((kind, name))
}

/// `deployment.apps/web`, `pod/web-x7k2p`: how kubectl names an object.
pub fn resource_ref(kind: Kind, name: &str) -> String {
    let lower = kind.name().to_ascii_lowercase();
    match kind.api_version().split_once('/') {
        Some((group, _)) => format!("{lower}.{group}/{name}"),
        None => format!("{lower}/{name}"),
    }
}

/// Reads `-f` arguments: files, directories (their .yaml/.yml/.json files in
/// name order) and `-` for standard input.
pub fn read_manifests(files: &[String], strict: bool) -> Result<Vec<Object>> {
    let mut sources = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CtlError::Read {
                    path: "<stdin>".to_owned(),
                    source,
                })?;
            sources.push(("<stdin>".to_owned(), text));
            continue;
        }
        let path = Path::new(f);
        let read_err = |source| CtlError::Read {
            path: f.clone(),
            source,
        };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for p in entries {
                let text = std::fs::read_to_string(&p).map_err(|source| CtlError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                sources.push((p.display().to_string(), text));
            }
        } else {
            sources.push((f.clone(), std::fs::read_to_string(path).map_err(read_err)?));
        }
    }
    // Everything is parsed before anything is sent: a bad document anywhere
    // means nothing is applied.
    let mut objects = Vec::new();
    for (name, text) in sources {
        let manifest = parse_manifest(&name, &text, strict)?;
        for w in manifest.warnings {
            eprintln!("warning: {w}");
        }
        objects.extend(manifest.objects);
    }
    Ok(objects)
}

async fn apply(
    client: &Client,
    files: &[String],
    namespace: Option<&str>,
    strict: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut objects = read_manifests(files, strict)?;
    // Namespaces first, so objects in them can be created in the same run.
    objects.sort_by_key(|o| o.kind().ok() != Some(Kind::Namespace));
    for mut object in objects {
        let kind = object.kind().map_err(|e| CtlError::Usage(e.to_string()))?;
        if let (Some(ns), true) = (namespace, kind.namespaced()) {
            let meta = object
                .meta_mut()
                .map_err(|e| CtlError::Usage(e.to_string()))?;
            if meta.namespace.is_empty() {
                meta.namespace = ns.to_owned();
            } else if meta.namespace != ns {
                return Err(CtlError::Usage(format!(
                    "{} is in namespace {:?}, which does not match -n {ns:?}",
                    resource_ref(kind, &meta.name),
                    meta.namespace
                )));
            }
        }
        let name = object.meta().name.clone();
        let what = resource_ref(kind, &name);
        let verb = apply_one(client, object)
            .await
            .map_err(|source| CtlError::Api {
                context: format!("applying {what}"),
                source,
            })?;
        writeln!(out, "{what} {verb}")?;
    }
    Ok(())
}

/// Creates the object, or updates it when it exists. Returns kubectl's verb.
async fn apply_one(
    client: &Client,
    object: Object,
) -> std::result::Result<&'static str, ClientError> {
    match client.create(object.clone()).await {
        Ok(_) => return Ok("created"),
        Err(ClientError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    let kind = object
        .kind()
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
    let meta = object.meta();
    for _ in 0..5 {
        let current = client.get(kind, &meta.namespace, &meta.name).await?;
        let before = current.meta().resource_version.clone();
        let mut desired = object.clone();
        if let Ok(m) = desired.meta_mut() {
            m.resource_version = before.clone();
        }
        match client.update(desired).await {
            Ok(updated) if updated.meta().resource_version == before => return Ok("unchanged"),
            Ok(_) => return Ok("configured"),
            // Someone changed it between our read and write: read again.
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Conflict(
        "the object kept changing; try again".to_owned(),
    ))
}

async fn get(
    client: &Client,
    kind: Kind,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64> {
    if let Some(o) = output.filter(|o| !matches!(*o, "json" | "yaml" | "wide" | "name")) {
        return Err(CtlError::Output(o.to_owned()));
    }
    let ns_for_call = if kind.namespaced() {
        namespace.unwrap_or("")
    } else {
        ""
    };
    let (objects, single, revision) = match name {
        Some(name) => {
            let ns = if kind.namespaced() {
                namespace.unwrap_or("default")
            } else {
                ""
            };
            let object = client
                .get(kind, ns, name)
                .await
                .map_err(|source| CtlError::Api {
                    context: format!("getting {}", resource_ref(kind, name)),
                    source,
                })?;
            let revision = object.meta().resource_version.parse().unwrap_or(0);
            (vec![object], true, revision)
        }
        None => {
            let list = client
                .list(kind, ns_for_call)
                .await
                .map_err(|source| CtlError::Api {
                    context: format!("listing {}", kind.plural()),
                    source,
                })?;
            (list.items, false, list.revision)
        }
    };
    match output {
        Some("json") => {
            let value = if single {
                to_json_value(&objects[0])
            } else {
                list_to_json_value(&objects)
            };
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            )?;
        }
        Some("yaml") => {
            let value = if single {
                to_json_value(&objects[0])
            } else {
                list_to_json_value(&objects)
            };
            write!(out, "{}", to_yaml(&value))?;
        }
        Some("name") => {
            for o in &objects {
                writeln!(out, "{}", resource_ref(kind, &o.meta().name))?;
            }
        }
        None | Some("wide") => {
            if objects.is_empty() {
                match namespace.filter(|_| kind.namespaced()) {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
                return Ok(revision);
            }
            let wide = output == Some("wide");
            let with_namespace = kind.namespaced() && namespace.is_none();
            let now = std::time::SystemTime::now();
            write!(
                out,
                "{}",
                table::render(kind, &objects, wide, with_namespace, now)
            )?;
        }
        Some(other) => return Err(CtlError::Output(other.to_owned())),
    }
    Ok(revision)
}

/// `get -w`: prints each change after `revision` as a row (or document).
async fn watch_changes(
    client: &Client,
    kind: Kind,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Option<&str>,
    revision: u64,
    out: &mut dyn Write,
) -> Result<()> {
    let ns = namespace.filter(|_| kind.namespaced()).unwrap_or("");
    let mut watch = client
        .watch(kind, ns, revision)
        .await
        .map_err(|source| CtlError::Api {
            context: format!("watching {}", kind.plural()),
            source,
        })?;
    loop {
        let event = watch.next().await.map_err(|source| CtlError::Api {
            context: format!("watching {}", kind.plural()),
            source,
        })?;
        let Some(event) = event else { return Ok(()) };
        let Some(object) = event.object else { continue };
        if name.is_some_and(|n| n != object.meta().name) {
            continue;
        }
        match output {
            Some("json") => writeln!(
                out,
                "{}",
                serde_json::to_string(&to_json_value(&object)).unwrap_or_default()
            )?,
            Some("yaml") => write!(out, "---\n{}", to_yaml(&to_json_value(&object)))?,
            Some("name") => writeln!(out, "{}", resource_ref(kind, &object.meta().name))?,
            _ => {
                let wide = output == Some("wide");
                let table = table::render(
                    kind,
                    &[object],
                    wide,
                    namespace.is_none() && kind.namespaced(),
                    std::time::SystemTime::now(),
                );
                // Rows only: the header was printed with the list.
                for row in table.lines().skip(1) {
                    writeln!(out, "{row}")?;
                }
            }
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[test]
    fn credentials_come_from_skiff_config_then_home_then_etc() {
        assert_eq!(
            credential_candidates(Some("/tmp/mine.conf"), Some(Path::new("/root"))),
            vec![PathBuf::from("/tmp/mine.conf")]
        );
        assert_eq!(
            credential_candidates(None, Some(Path::new("/home/pi"))),
            vec![
                PathBuf::from("/home/pi/.skiff/config"),
                PathBuf::from("/etc/skiff/admin.conf")
            ]
        );
        assert_eq!(
            credential_candidates(Some(""), None),
            vec![PathBuf::from("/etc/skiff/admin.conf")]
        );
    }

    #[test]
    fn an_explicit_config_wins_and_a_bad_one_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        assert_eq!(credential_file(Some(&path)).unwrap(), path);
        std::fs::write(&path, "server: [not, a, string]\n").unwrap();
        let e = connect(None, Some(&path)).err().unwrap().to_string();
        assert!(e.contains("admin.conf"), "{e}");
    }
}
