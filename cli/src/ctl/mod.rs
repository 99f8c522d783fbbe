//! `skiff ctl`: the kubectl-style client. Commands read manifests, call the
//! API through [`skiff_master::client::Client`] and print what kubectl would.
//! The credential file, a kubeconfig, is found here for every admin command
//! ([`credential_file`]): `--config`, `$SKIFF_CONFIG`, `$KUBECONFIG`, then
//! the default paths.

pub mod describe;
pub mod pod_sessions;
pub mod rollout;
pub mod selector;
pub mod table;
pub mod targets;
pub mod terminal;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use skiff_master::client::{Client, ClientError};
use skiff_objects::manifest::{
    list_to_json_value, parse_manifest, to_json_value, to_yaml, ManifestError,
};
use skiff_objects::pods;
use skiff_objects::selector as object_selector;
use skiff_objects::{Kind, ObjectExt, UnknownKind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{ListResponse, Object};
use skiff_security::Credentials;

use self::selector::{Selector, SelectorError};
use self::targets::{KindTargets, TargetError};

/// Flags shared by every `ctl` command.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
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
        /// KIND[,KIND...] [NAME...], or KIND/NAME...; a kind is its name,
        /// plural or short name (po, deploy, rs, svc, ns, no, ep).
        #[arg(required = true)]
        targets: Vec<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only objects whose labels match: app=web, app!=web,
        /// 'tier in (a,b)', 'tier notin (a)', key, !key (all must hold).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Output: json, yaml, wide or name (default: a table).
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// After listing, keep printing changes (one kind only).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show objects in detail, with their conditions.
    Describe {
        /// KIND [NAME...], or KIND/NAME...; every object of the kind when
        /// no name is given.
        #[arg(required = true)]
        targets: Vec<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Mark a node unschedulable.
    Cordon {
        /// The node's name.
        node: String,
    },
    /// Mark a node schedulable again.
    Uncordon {
        /// The node's name.
        node: String,
    },
    /// Cordon a node and evict its pods so their controllers move them,
    /// waiting while a PodDisruptionBudget allows no disruption.
    Drain {
        /// The node's name.
        node: String,
        /// Also delete pods no controller will recreate.
        #[arg(long)]
        force: bool,
        /// Give up after this long waiting for PodDisruptionBudgets (0:
        /// wait for ever, as kubectl).
        #[arg(long, default_value = "0s")]
        timeout: humantime::Duration,
    },
    /// Set the replica count of a Deployment, ReplicaSet or StatefulSet.
    Scale {
        /// KIND/NAME, or KIND NAME.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// The number of replicas wanted.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        replicas: i32,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Manage the rollout of a Deployment, a DaemonSet or a StatefulSet.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Run a command in a running container: skiff ctl exec POD [-c
    /// CONTAINER] [-i] [-t] -- COMMAND [ARGS...]. Exits with the command's
    /// exit code.
    Exec {
        /// The pod: NAME or pod/NAME.
        pod: String,
        /// The container; needed when the pod has several.
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Pass stdin to the command.
        #[arg(short = 'i', long)]
        stdin: bool,
        /// Give the command a terminal (this one, in raw mode).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments, after --.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Forward local ports to a pod's ports: skiff ctl port-forward POD
    /// [LOCAL:]REMOTE..., until interrupted.
    PortForward {
        /// The pod: NAME or pod/NAME.
        pod: String,
        /// PORT, or LOCAL:REMOTE.
        #[arg(required = true)]
        ports: Vec<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
    },
    /// Print a container's log.
    Logs {
        /// The pod: NAME or pod/NAME; deploy/NAME or rs/NAME reads one of
        /// its pods.
        pod: String,
        /// The container; needed when the pod has several.
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// The namespace (default: default).
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
    /// Delete objects: by name, by label selector, or those in manifests.
    Delete {
        /// KIND[,KIND...] NAME..., KIND/NAME..., or KIND[,KIND...] with -l.
        #[arg(required_unless_present = "files")]
        targets: Vec<String>,
        /// Delete the objects in these manifests: a file, a directory of
        /// .yaml/.yml/.json files, or - for stdin.
        #[arg(short = 'f', long = "filename", conflicts_with = "targets")]
        files: Vec<String>,
        /// Only objects whose labels match: app=web, app!=web,
        /// 'tier in (a,b)', 'tier notin (a)', key, !key (all must hold).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// The namespace (default: default; with -f, for objects that name
        /// none).
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
        /// deploy/NAME or ds/NAME (or KIND NAME).
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Give up after this long (e.g. 90s, 5m).
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
    /// Go back to the previous template (or to --to-revision).
    Undo {
        /// deploy/NAME or ds/NAME (or KIND NAME).
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// The namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The revision to go back to (default: the one before the current).
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
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
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
    /// `exec`'s command ended with this non-zero exit code, which `skiff`
    /// exits with.
    #[error("command terminated with exit code {0}")]
    CommandExited(i32),
    /// Some of the objects a command went through failed; each failure
    /// was printed as it was met.
    #[error("{failed} of {total} objects were not {verb} (the errors are above)")]
    Incomplete {
        failed: usize,
        total: usize,
        verb: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, CtlError>;

/// What the choice of a credential file reads from the environment, passed
/// in so that the choice can be tested without setting variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialEnv<'a> {
    /// `$SKIFF_CONFIG`: skiff's own, used even when the file is missing.
    pub skiff_config: Option<&'a str>,
    /// `$KUBECONFIG`: a `:`-separated list; its first existing file.
    pub kubeconfig: Option<&'a str>,
    /// `$HOME`, for `~/.skiff/config`.
    pub home: Option<&'a Path>,
}

/// Where the credential file comes from when `--config` is not given, in
/// order: `$SKIFF_CONFIG` (alone when set), each path in `$KUBECONFIG`,
/// `~/.skiff/config`, `/etc/skiff/admin.conf`.
pub fn credential_candidates(env: CredentialEnv<'_>) -> Vec<PathBuf> {
    if let Some(e) = env.skiff_config.filter(|e| !e.is_empty()) {
        return vec![PathBuf::from(e)];
    }
    let mut candidates: Vec<PathBuf> = env
        .kubeconfig
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    candidates.extend(home_config(env.home));
    candidates.push(PathBuf::from(ADMIN_CONF));
    candidates
}

/// The admin credential a master writes with the default data dir.
pub const ADMIN_CONF: &str = "/etc/skiff/admin.conf";

/// The credential file to use: `--config`, else `$SKIFF_CONFIG` (even
/// when missing, to say so), else the first of the other
/// [`credential_candidates`] that `exists`.
pub fn choose_credential_file(
    config: Option<&Path>,
    env: CredentialEnv<'_>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c.to_owned());
    }
    let candidates = credential_candidates(env);
    if env.skiff_config.is_some_and(|e| !e.is_empty()) {
        return Ok(candidates[0].clone());
    }
    let default = home_config(env.home).unwrap_or_else(|| PathBuf::from(ADMIN_CONF));
    candidates
        .iter()
        .find(|p| exists(p))
        .cloned()
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "no credentials: pass --config, set SKIFF_CONFIG or KUBECONFIG, or copy a master's admin.conf to {} (looked in {})",
                default.display(),
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn home_config(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".skiff/config"))
}

/// The credential file to use, from `--config` and the environment (see
/// [`choose_credential_file`]).
pub fn credential_file(config: Option<&Path>) -> Result<PathBuf> {
    let skiff_config = std::env::var("SKIFF_CONFIG").ok();
    let kubeconfig = std::env::var("KUBECONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let env = CredentialEnv {
        skiff_config: skiff_config.as_deref(),
        kubeconfig: kubeconfig.as_deref(),
        home: home.as_deref(),
    };
    choose_credential_file(config, env, Path::exists)
}

/// A client from the credential file, talking to `--server` if given,
/// else to the file's server (either as `HOST:PORT` or `https://HOST:PORT`).
pub fn connect(server: Option<&str>, config: Option<&Path>) -> Result<Client> {
    let path = credential_file(config)?;
    let fail = |message: String| CtlError::Config {
        path: path.clone(),
        message,
    };
    let credentials = Credentials::load(&path).map_err(|e| fail(e.to_string()))?;
    let transport = credentials.transport().map_err(|e| fail(e.to_string()))?;
    let address = match server {
        Some(server) => skiff_security::credentials::api_address(server)
            .map_err(|e| CtlError::Usage(format!("--server {e}")))?,
        None => credentials.api_address().map_err(|e| fail(e.to_string()))?,
    };
    Client::new(&address, &transport).map_err(|source| CtlError::Api {
        context: "connecting".to_owned(),
        source,
    })
}

/// The namespace when `-n` is not given.
const DEFAULT_NAMESPACE: &str = "default";

fn namespace_or_default(namespace: Option<String>) -> String {
    namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// A line on stderr for the person at the terminal; nothing (and no
/// panic) if stderr is gone.
fn note(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Ends a command that went on past failures: one failure is the
/// command's error; several are each printed, then counted.
fn finish(mut failures: Vec<CtlError>, total: usize, verb: &'static str) -> Result<()> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        failed => {
            for e in &failures {
                note(format_args!("error: {e}"));
            }
            Err(CtlError::Incomplete {
                failed,
                total,
                verb,
            })
        }
    }
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
            targets,
            namespace,
            all_namespaces,
            selector,
            output,
            watch,
        } => {
            let targets = targets::parse_targets(&targets)?;
            let selector = selector.as_deref().map(Selector::parse).transpose()?;
            let namespace = (!all_namespaces).then(|| namespace_or_default(namespace));
            let view = View {
                namespace: namespace.as_deref(),
                selector: selector.as_ref(),
                output: output.as_deref(),
            };
            if watch && targets.len() > 1 {
                return Err(CtlError::Usage("-w watches one kind at a time".to_owned()));
            }
            let revision = get(&client, &targets, view, out).await?;
            if watch {
                watch_changes(&client, &targets[0], view, revision, out).await?;
            }
            Ok(())
        }
        CtlCommand::Describe { targets, namespace } => {
            let targets = targets::parse_targets(&targets)?;
            let namespace = namespace_or_default(namespace);
            describe_objects(&client, &targets, &namespace, out).await
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
        CtlCommand::Exec {
            pod,
            container,
            namespace,
            stdin,
            tty,
            command,
        } => {
            let (kind, name) = targets::parse_pod(&pod)?;
            let options = pod_sessions::ExecOptions {
                namespace: namespace_or_default(namespace),
                pod: pod_only(kind, name, "exec")?,
                container,
                command,
                stdin,
                tty,
            };
            pod_sessions::exec(&client, options, out).await
        }
        CtlCommand::PortForward {
            pod,
            ports,
            namespace,
            address,
        } => {
            let (kind, name) = targets::parse_pod(&pod)?;
            let name = pod_only(kind, name, "port-forward")?;
            let ports = ports
                .iter()
                .map(|p| pod_sessions::parse_port_pair(p))
                .collect::<Result<Vec<_>>>()?;
            let namespace = namespace_or_default(namespace);
            pod_sessions::port_forward(&client, &namespace, &name, &ports, address, out).await
        }
        CtlCommand::Logs {
            pod,
            container,
            namespace,
            follow,
            tail,
            previous,
        } => {
            let namespace = namespace_or_default(namespace);
            let (kind, name) = targets::parse_pod(&pod)?;
            let name = pod_for_logs(&client, kind, &namespace, &name).await?;
            let request = skiff_proto::api::PodLogsRequest {
                namespace,
                name: name.clone(),
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
                            source: ClientError::from_status(client.addr(), status),
                        })
                    }
                }
            }
        }
        CtlCommand::Drain {
            node,
            force,
            timeout,
        } => rollout::drain(&client, &node, force, timeout.into(), out).await,
        CtlCommand::Scale {
            target,
            replicas,
            namespace,
        } => {
            let (kind, name) = targets::parse_one(&target)?;
            let namespace = namespace_or_default(namespace);
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
                let (kind, name) = rollout_target(&target)?;
                let namespace = namespace_or_default(namespace);
                let timeout = timeout.into();
                rollout::status(&client, kind, &namespace, &name, timeout, out).await
            }
            RolloutCommand::Undo {
                target,
                namespace,
                to_revision,
            } => {
                let (kind, name) = rollout_target(&target)?;
                let namespace = namespace_or_default(namespace);
                rollout::undo(&client, kind, &namespace, &name, to_revision).await?;
                writeln!(out, "{} rolled back", resource_ref(kind, &name))?;
                Ok(())
            }
        },
        CtlCommand::Delete {
            targets,
            files,
            selector,
            namespace,
            ignore_not_found,
        } => {
            let selector = selector.as_deref().map(Selector::parse).transpose()?;
            let doomed = if files.is_empty() {
                let targets = targets::parse_targets(&targets)?;
                let namespace = namespace_or_default(namespace);
                select_for_delete(&client, &targets, &namespace, selector.as_ref()).await?
            } else {
                objects_in_manifests(&files, namespace.as_deref(), selector.as_ref())?
            };
            delete(&client, &doomed, ignore_not_found, out).await
        }
    }
}

/// The kind and name in `deploy/NAME`, `ds/NAME` or `KIND NAME`: what
/// `rollout` works on.
fn rollout_target(target: &[String]) -> Result<(Kind, String)> {
    let (kind, name) = targets::parse_one(target)?;
    if !matches!(kind, Kind::Deployment | Kind::DaemonSet | Kind::StatefulSet) {
        return Err(CtlError::Usage(format!(
            "rollout works on deployments, daemonsets and statefulsets, not {}",
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
/// name order) and `-` for standard input. Returns each source's name (for
/// errors) and text.
fn read_sources(files: &[String]) -> Result<Vec<(String, String)>> {
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
    Ok(sources)
}

/// Reads the objects of `-f` arguments (see [`read_sources`]).
pub fn read_manifests(files: &[String], strict: bool) -> Result<Vec<Object>> {
    // Everything is parsed before anything is sent: a bad document anywhere
    // means nothing is applied.
    let mut objects = Vec::new();
    for (name, text) in read_sources(files)? {
        let manifest = parse_manifest(&name, &text, strict)?;
        for w in manifest.warnings {
            eprintln!("warning: {w}");
        }
        objects.extend(manifest.objects);
    }
    Ok(objects)
}

fn object_kind(object: &Object) -> Result<Kind> {
    object.kind().map_err(|e| CtlError::Usage(e.to_string()))
}

/// Puts a namespaced object that names no namespace into `-n`'s, and
/// refuses one that names another.
fn place_in_namespace(object: &mut Object, kind: Kind, namespace: Option<&str>) -> Result<()> {
    let (Some(ns), true) = (namespace, kind.namespaced()) else {
        return Ok(());
    };
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
    Ok(())
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
        let kind = object_kind(&object)?;
        place_in_namespace(&mut object, kind, namespace)?;
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
            keep_system_annotations(&mut m.annotations, &current.meta().annotations);
        }
        if let (Some(Body::Generic(stored)), Some(Body::Generic(sent))) =
            (&current.kind, &mut desired.kind)
        {
            skiff_objects::generic::keep_generated(kind, stored, sent);
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

/// Annotations in Kubernetes' own namespaces (`kubernetes.io/...`,
/// `*.kubernetes.io/...`) that the object has and the manifest does not set
/// are kept: controllers and kubectl write them (a Deployment's
/// `deployment.kubernetes.io/revision`), and a manifest applied again must
/// not take them away.
fn keep_system_annotations(
    desired: &mut std::collections::BTreeMap<String, String>,
    current: &std::collections::BTreeMap<String, String>,
) {
    for (key, value) in current {
        let prefix = key.split_once('/').map_or("", |(p, _)| p);
        let system = prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io");
        if system && !desired.contains_key(key) {
            desired.insert(key.clone(), value.clone());
        }
    }
}

/// How `get` shows objects: from where, which ones, in what form.
#[derive(Clone, Copy)]
struct View<'a> {
    /// `None`: every namespace (`-A`).
    namespace: Option<&'a str>,
    selector: Option<&'a Selector>,
    output: Option<&'a str>,
}

impl<'a> View<'a> {
    /// Where to list or watch `kind`: "" for every namespace, and for kinds
    /// that have none.
    fn list_namespace(&self, kind: Kind) -> &'a str {
        match self.namespace {
            Some(ns) if kind.namespaced() => ns,
            _ => "",
        }
    }

    /// The namespace of a named object of `kind` (with `-A`: default).
    fn object_namespace(&self, kind: Kind) -> &'a str {
        if kind.namespaced() {
            self.namespace.unwrap_or(DEFAULT_NAMESPACE)
        } else {
            ""
        }
    }
}

/// The objects of `kind` in `namespace`, and the store revision they are
/// listed at.
async fn list_objects(client: &Client, kind: Kind, namespace: &str) -> Result<ListResponse> {
    client
        .list(kind, namespace)
        .await
        .map_err(|source| CtlError::Api {
            context: format!("listing {}", kind.plural()),
            source,
        })
}

/// `get`: prints the objects, each kind's table in turn, and returns the
/// store revision to watch from. Named objects that are missing are
/// reported after the others are printed.
async fn get(
    client: &Client,
    targets: &[KindTargets],
    view: View<'_>,
    out: &mut dyn Write,
) -> Result<u64> {
    if let Some(o) = view
        .output
        .filter(|o| !matches!(*o, "json" | "yaml" | "wide" | "name"))
    {
        return Err(CtlError::Output(o.to_owned()));
    }
    let named: usize = targets.iter().map(|t| t.names.len()).sum();
    if named > 0 && view.selector.is_some() {
        return Err(CtlError::Usage(
            "name objects or select them with -l, not both".to_owned(),
        ));
    }
    let mut found: Vec<(Kind, Vec<Object>)> = Vec::new();
    let mut missing = Vec::new();
    let mut revision = 0;
    for target in targets {
        let kind = target.kind;
        let mut objects = Vec::new();
        if target.names.is_empty() {
            let list = list_objects(client, kind, view.list_namespace(kind)).await?;
            revision = revision.max(list.revision);
            objects.extend(
                list.items
                    .into_iter()
                    .filter(|o| view.selector.is_none_or(|s| s.matches(o))),
            );
        }
        for name in &target.names {
            let context = format!("getting {}", resource_ref(kind, name));
            match client.get(kind, view.object_namespace(kind), name).await {
                Ok(object) => {
                    let at = object.meta().resource_version.parse::<u64>();
                    revision = revision.max(at.unwrap_or(0));
                    objects.push(object);
                }
                Err(source @ ClientError::NotFound(_)) => {
                    missing.push(CtlError::Api { context, source })
                }
                Err(source) => return Err(CtlError::Api { context, source }),
            }
        }
        found.push((kind, objects));
    }
    let single = named == 1 && targets.len() == 1;
    print_objects(&found, single, named == 0, view, out)?;
    finish(missing, named, "found")?;
    Ok(revision)
}

/// Prints what `get` found: one named object as itself and anything else
/// as a List (json, yaml), `KIND/NAME` lines (name), or each kind's table
/// in turn, names prefixed with their kind when there are several kinds.
fn print_objects(
    found: &[(Kind, Vec<Object>)],
    single: bool,
    listing: bool,
    view: View<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    match view.output {
        Some(format @ ("json" | "yaml")) => {
            let objects: Vec<Object> = found
                .iter()
                .flat_map(|(_, objects)| objects.iter().cloned())
                .collect();
            let value = match (single, objects.as_slice()) {
                (true, [one]) => to_json_value(one),
                // The one object asked for is missing: only the error says so.
                (true, _) => return Ok(()),
                (false, _) => list_to_json_value(&objects),
            };
            if format == "json" {
                let text = serde_json::to_string_pretty(&value).unwrap_or_default();
                writeln!(out, "{text}")?;
            } else {
                write!(out, "{}", to_yaml(&value))?;
            }
        }
        Some("name") => {
            for (kind, objects) in found {
                for o in objects {
                    writeln!(out, "{}", resource_ref(*kind, &o.meta().name))?;
                }
            }
        }
        _ => {
            let shown: Vec<&(Kind, Vec<Object>)> =
                found.iter().filter(|(_, o)| !o.is_empty()).collect();
            if shown.is_empty() {
                if listing {
                    let namespaced = found.iter().any(|(kind, _)| kind.namespaced());
                    match view.namespace.filter(|_| namespaced) {
                        Some(ns) => note(format_args!("No resources found in {ns} namespace.")),
                        None => note("No resources found"),
                    }
                }
                return Ok(());
            }
            let wide = view.output == Some("wide");
            let now = std::time::SystemTime::now();
            for (i, (kind, objects)) in shown.into_iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                let with_namespace = kind.namespaced() && view.namespace.is_none();
                let table = if found.len() > 1 {
                    table::render_with_kind(*kind, objects, wide, with_namespace, now)
                } else {
                    table::render(*kind, objects, wide, with_namespace, now)
                };
                write!(out, "{table}")?;
            }
        }
    }
    Ok(())
}

/// `get -w`: prints each change after `revision` as a row (or document).
async fn watch_changes(
    client: &Client,
    target: &KindTargets,
    view: View<'_>,
    revision: u64,
    out: &mut dyn Write,
) -> Result<()> {
    let kind = target.kind;
    let context = format!("watching {}", kind.plural());
    let mut watch = client
        .watch(kind, view.list_namespace(kind), revision)
        .await
        .map_err(|source| CtlError::Api {
            context: context.clone(),
            source,
        })?;
    loop {
        let event = watch.next().await.map_err(|source| CtlError::Api {
            context: context.clone(),
            source,
        })?;
        let Some(event) = event else { return Ok(()) };
        let Some(object) = event.object else { continue };
        if !target.names.is_empty() && !target.names.contains(&object.meta().name) {
            continue;
        }
        if view.selector.is_some_and(|s| !s.matches(&object)) {
            continue;
        }
        match view.output {
            Some("json") => writeln!(
                out,
                "{}",
                serde_json::to_string(&to_json_value(&object)).unwrap_or_default()
            )?,
            Some("yaml") => write!(out, "---\n{}", to_yaml(&to_json_value(&object)))?,
            Some("name") => writeln!(out, "{}", resource_ref(kind, &object.meta().name))?,
            _ => {
                let wide = view.output == Some("wide");
                let table = table::render(
                    kind,
                    &[object],
                    wide,
                    view.namespace.is_none() && kind.namespaced(),
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

/// `describe`: each object named, or every object of a kind named alone.
async fn describe_objects(
    client: &Client,
    targets: &[KindTargets],
    namespace: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let mut first = true;
    for target in targets {
        let kind = target.kind;
        let ns = if kind.namespaced() { namespace } else { "" };
        let mut objects = if target.names.is_empty() {
            list_objects(client, kind, ns).await?.items
        } else {
            Vec::new()
        };
        for name in &target.names {
            let object = client
                .get(kind, ns, name)
                .await
                .map_err(|source| CtlError::Api {
                    context: format!("getting {}", resource_ref(kind, name)),
                    source,
                })?;
            objects.push(object);
        }
        for object in &objects {
            if !first {
                writeln!(out)?;
            }
            first = false;
            write!(out, "{}", describe::describe(object))?;
        }
    }
    Ok(())
}

/// The pod named, for commands that take only pods.
fn pod_only(kind: Kind, name: String, command: &str) -> Result<String> {
    if kind == Kind::Pod {
        Ok(name)
    } else {
        Err(CtlError::Usage(format!(
            "{command} works on pods: name one (NAME or pod/NAME), not {}",
            resource_ref(kind, &name)
        )))
    }
}

/// The pod `logs` reads: the one named, or for `deploy/NAME` and `rs/NAME`
/// one of the pods their selector picks, a ready one first, as kubectl
/// does.
async fn pod_for_logs(client: &Client, kind: Kind, namespace: &str, name: &str) -> Result<String> {
    if kind == Kind::Pod {
        return Ok(name.to_owned());
    }
    let what = resource_ref(kind, name);
    if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
        return Err(CtlError::Usage(format!(
            "logs reads pods: name a pod, deploy/NAME or rs/NAME, not {what}"
        )));
    }
    let owner = client
        .get(kind, namespace, name)
        .await
        .map_err(|source| CtlError::Api {
            context: format!("getting {what}"),
            source,
        })?;
    // The selector as the scale subresource reads it (either encoding).
    let label_selector = skiff_objects::scale::read(&owner)
        .map(|scale| scale.selector)
        .unwrap_or_default();
    if object_selector::is_empty(&label_selector) {
        return Err(CtlError::Usage(format!(
            "{what} has no selector to find its pods by"
        )));
    }
    let pods = client
        .list(Kind::Pod, namespace)
        .await
        .map_err(|source| CtlError::Api {
            context: "listing pods".to_owned(),
            source,
        })?;
    // Ready pods first (false < true), then by name.
    let candidates: Vec<(bool, String)> = pods
        .items
        .iter()
        .filter(|o| object_selector::matches(&label_selector, &o.meta().labels))
        .filter_map(|o| Some((!pods::is_ready(&pods::read(o)?), o.meta().name.clone())))
        .collect();
    let count = candidates.len();
    match candidates.into_iter().min() {
        None => Err(CtlError::Usage(format!("{what} has no pods"))),
        Some((_, pod)) => {
            if count > 1 {
                note(format_args!("Found {count} pods, using pod/{pod}"));
            }
            Ok(pod)
        }
    }
}

/// One object `delete` is to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doomed {
    kind: Kind,
    namespace: String,
    name: String,
}

/// What `delete KIND NAME...`, `delete KIND/NAME...` or `delete KIND -l
/// SELECTOR` names.
async fn select_for_delete(
    client: &Client,
    targets: &[KindTargets],
    namespace: &str,
    label_selector: Option<&Selector>,
) -> Result<Vec<Doomed>> {
    let mut doomed = Vec::new();
    for target in targets {
        let kind = target.kind;
        let ns = if kind.namespaced() { namespace } else { "" };
        match (target.names.is_empty(), label_selector) {
            (false, Some(_)) => {
                return Err(CtlError::Usage(
                    "name objects or select them with -l, not both".to_owned(),
                ))
            }
            (false, None) => doomed.extend(target.names.iter().map(|name| Doomed {
                kind,
                namespace: ns.to_owned(),
                name: name.clone(),
            })),
            (true, Some(label_selector)) => {
                let list = list_objects(client, kind, ns).await?;
                doomed.extend(
                    list.items
                        .iter()
                        .filter(|o| label_selector.matches(o))
                        .map(|o| Doomed {
                            kind,
                            namespace: o.meta().namespace.clone(),
                            name: o.meta().name.clone(),
                        }),
                );
            }
            (true, None) => {
                return Err(CtlError::Usage(format!(
                    "delete {}: name the objects, or select them with -l",
                    kind.plural()
                )))
            }
        }
    }
    Ok(doomed)
}

/// What `delete -f` names: every object in the manifests (those the
/// selector matches, with `-l`), namespaces last, since deleting one
/// takes the objects in it along.
fn objects_in_manifests(
    files: &[String],
    namespace: Option<&str>,
    label_selector: Option<&Selector>,
) -> Result<Vec<Doomed>> {
    let mut doomed = Vec::new();
    for (source, text) in read_sources(files)? {
        // Unknown fields do not matter for deleting: no warnings either.
        for mut object in parse_manifest(&source, &text, false)?.objects {
            if label_selector.is_some_and(|s| !s.matches(&object)) {
                continue;
            }
            let kind = object_kind(&object)?;
            place_in_namespace(&mut object, kind, namespace)?;
            let meta = object.meta();
            let ns = match (kind.namespaced(), meta.namespace.as_str()) {
                (false, _) => "",
                (true, "") => DEFAULT_NAMESPACE,
                (true, ns) => ns,
            };
            doomed.push(Doomed {
                kind,
                namespace: ns.to_owned(),
                name: meta.name.clone(),
            });
        }
    }
    doomed.sort_by_key(|d| d.kind == Kind::Namespace);
    Ok(doomed)
}

/// Deletes each object, going on past failures; a missing object is a
/// failure unless `ignore_not_found`.
async fn delete(
    client: &Client,
    doomed: &[Doomed],
    ignore_not_found: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if doomed.is_empty() {
        note("No resources found");
        return Ok(());
    }
    let mut failures = Vec::new();
    for d in doomed {
        let what = resource_ref(d.kind, &d.name);
        match client.delete(d.kind, &d.namespace, &d.name, "").await {
            Ok(_) => writeln!(out, "{what} deleted")?,
            Err(ClientError::NotFound(_)) if ignore_not_found => {}
            Err(source) => failures.push(CtlError::Api {
                context: format!("deleting {what}"),
                source,
            }),
        }
    }
    finish(failures, doomed.len(), "deleted")
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    fn env<'a>(
        skiff_config: Option<&'a str>,
        kubeconfig: Option<&'a str>,
        home: Option<&'a str>,
    ) -> CredentialEnv<'a> {
        CredentialEnv {
            skiff_config,
            kubeconfig,
            home: home.map(Path::new),
        }
    }

    #[test]
    fn credentials_come_from_skiff_config_then_kubeconfig_then_home_then_etc() {
        assert_eq!(
            credential_candidates(env(Some("/tmp/mine.conf"), Some("/k"), Some("/root"))),
            vec![PathBuf::from("/tmp/mine.conf")]
        );
        assert_eq!(
            credential_candidates(env(None, Some("/a.conf::/b.conf"), Some("/home/pi"))),
            vec![
                PathBuf::from("/a.conf"),
                PathBuf::from("/b.conf"),
                PathBuf::from("/home/pi/.skiff/config"),
                PathBuf::from("/etc/skiff/admin.conf")
            ]
        );
        assert_eq!(
            credential_candidates(env(Some(""), Some(""), None)),
            vec![PathBuf::from("/etc/skiff/admin.conf")]
        );
    }

    #[test]
    fn the_flag_wins_then_skiff_config_then_the_first_existing_kubeconfig() {
        let existing = ["/b.conf", "/c.conf", "/home/pi/.skiff/config", ADMIN_CONF];
        let exists = |p: &Path| existing.iter().any(|e| Path::new(e) == p);
        let kube = Some("/a.conf:/b.conf:/c.conf");
        let choose = |config: Option<&str>, e| {
            choose_credential_file(config.map(Path::new), e, exists).unwrap()
        };
        let home = Some("/home/pi");
        assert_eq!(
            choose(Some("/flag.conf"), env(Some("/s.conf"), kube, home)),
            PathBuf::from("/flag.conf")
        );
        // SKIFF_CONFIG is skiff's own: used even when missing, to say so.
        assert_eq!(
            choose(None, env(Some("/s.conf"), kube, home)),
            PathBuf::from("/s.conf")
        );
        // /a.conf does not exist: the first that does.
        assert_eq!(
            choose(None, env(None, kube, home)),
            PathBuf::from("/b.conf")
        );
        // None in KUBECONFIG exists: the defaults of before.
        assert_eq!(
            choose(None, env(None, Some("/a.conf:/x.conf"), home)),
            PathBuf::from("/home/pi/.skiff/config")
        );
        assert_eq!(
            choose(None, env(None, None, None)),
            PathBuf::from(ADMIN_CONF)
        );

        let none = choose_credential_file(None, env(None, Some("/a.conf"), home), |_| false)
            .unwrap_err()
            .to_string();
        assert!(none.contains("/a.conf"), "{none}");
        assert!(none.contains("/home/pi/.skiff/config"), "{none}");
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

#[cfg(test)]
mod delete_tests {
    use super::*;

    const YAML: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  ports: [{port: 80}]
";

    fn doomed(kind: Kind, namespace: &str, name: &str) -> Doomed {
        Doomed {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn delete_f_names_every_object_of_every_document_namespaces_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.yaml");
        std::fs::write(&path, YAML).unwrap();
        let files = vec![path.display().to_string()];
        assert_eq!(
            objects_in_manifests(&files, None, None).unwrap(),
            vec![
                doomed(Kind::Service, "default", "web"),
                doomed(Kind::Namespace, "", "shop"),
            ]
        );
        assert_eq!(
            objects_in_manifests(&files, Some("shop"), None).unwrap(),
            vec![
                doomed(Kind::Service, "shop", "web"),
                doomed(Kind::Namespace, "", "shop"),
            ]
        );
        let selector = Selector::parse("app=web").unwrap();
        assert_eq!(
            objects_in_manifests(&files, None, Some(&selector)).unwrap(),
            vec![doomed(Kind::Service, "default", "web")]
        );

        let other = YAML.replace("name: web", "name: web\n  namespace: other");
        std::fs::write(&path, other).unwrap();
        let e = objects_in_manifests(&files, Some("shop"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match -n \"shop\""), "{e}");

        let broken = YAML.replace("kind: Service", "kind: Widget");
        std::fs::write(&path, broken).unwrap();
        let e = objects_in_manifests(&files, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yaml") && e.contains("document 2") && e.contains("Widget"),
            "{e}"
        );
    }

    #[test]
    fn one_failure_is_the_error_and_several_are_counted() {
        assert!(finish(Vec::new(), 3, "deleted").is_ok());
        let one = finish(vec![CtlError::Usage("x".to_owned())], 3, "deleted");
        assert_eq!(one.unwrap_err().to_string(), "x");
        let failures = vec![
            CtlError::Usage("the first failure".to_owned()),
            CtlError::Usage("the second failure".to_owned()),
        ];
        let several = finish(failures, 3, "deleted").unwrap_err().to_string();
        assert_eq!(
            several,
            "2 of 3 objects were not deleted (the errors are above)"
        );
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_applied_manifest_keeps_what_controllers_annotated_and_drops_the_rest() {
        let current = map(&[
            ("deployment.kubernetes.io/revision", "3"),
            ("kubernetes.io/change-cause", "set image"),
            ("example.com/owner", "old"),
            ("team", "a"),
        ]);
        let mut desired = map(&[("team", "b"), ("kubernetes.io/change-cause", "mine")]);
        keep_system_annotations(&mut desired, &current);
        assert_eq!(
            desired,
            map(&[
                ("deployment.kubernetes.io/revision", "3"),
                ("kubernetes.io/change-cause", "mine"),
                ("team", "b"),
            ])
        );
    }
}
