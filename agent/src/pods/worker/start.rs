//! Starting one container of a pod: its image (pulled as its pull policy
//! says, with the credentials of the pod's image pull Secrets:
//! `pods/pull_secrets.rs`; one missing is told as the kubelet's
//! `FailedToRetrieveImagePullSecret` and named in a failed pull's status),
//! the pod's `/etc` files, its environment (`env`, `envFrom`, read
//! from its ConfigMaps and Secrets as they are now) and volume mounts, its
//! termination message file (`termination.rs`), who it runs as and what it
//! may do (`pods/security_context.rs`, user names looked up in the image's
//! `/etc/passwd`), the OCI runtime spec, then one runtime call that
//! creates the container and starts its task. A container that
//! `runAsNonRoot` keeps from running as root, or whose user the image does
//! not know, waits as `CreateContainerConfigError` saying so, tried again
//! on the error back-off. A failed pull or start is retried on the error
//! back-off and shown as the kubelet shows it (`ErrImagePull`,
//! `ImagePullBackOff`, `ErrImageNeverPull`, `RunContainerError`); an
//! environment or mount that cannot be made (a ConfigMap or Secret
//! missing, no master to read it from) is `CreateContainerConfigError`,
//! tried again every 10 s, so the container starts by itself once what it
//! needs appears; a spec that cannot be built waits for the pod spec to
//! change (`CreateContainerConfigError` too). The labels written here
//! are what a restarted agent adopts the container by. Each step is told
//! as the kubelet's Events: `Pulling` and `Pulled` (or already present),
//! `Failed` and `BackOff` for pulls, `Created` and `Started`, `Failed` for
//! a container that could not be made or started. A container with a
//! postStart hook gets it run right after it started, on a task of its own
//! (`pods/lifecycle_hooks.rs`) whose end wakes the worker; until then the
//! container shows waiting (`ContainerCreating`). The spec puts the
//! container in the pod's namespaces, or the node's where the pod shares
//! them (`hostNetwork`, `hostPID`, `hostIPC`); its PID namespace is its
//! own unless the pod shares the node's or its own
//! (`shareProcessNamespace`: its pause process's, from the sandbox).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::master_link::{EventKind, FetchError};
use crate::pods::downward_api::PodFacts;
use crate::pods::env::{self, EnvError};
use crate::pods::lifecycle_hooks;
use crate::pods::pod_config::PodConfig;
use crate::pods::pull_secrets::{self, PullSecrets};
use crate::pods::sandbox::PodSandbox;
use crate::pods::security_context;
use crate::pods::service_env::service_env;
use crate::pods::status::CState;
use crate::pods::volumes::MountError;
use crate::runtime::container_io::StdioMode;
use crate::runtime::containers::{
    LABEL_CONTAINER, LABEL_IMAGE_ID, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
    LABEL_RESTARTS, LABEL_STARTED_AT,
};
use crate::runtime::host_devices::host_devices;
use crate::runtime::images::PullPolicy;
use crate::runtime::spec::{self, ContainerMount, HostNamespaces, SpecInput};
use crate::runtime::{ContainerRuntime, StartRequest};

use super::sandbox_setup::PreparedSandbox;
use super::teardown::hook_target;
use super::termination;
use super::track::{HookRun, Track};
use super::WorkerContext;
use skiff_objects::now_rfc3339;

/// How soon a container whose `/etc` files could not be written tries again.
const ETC_FILES_RETRY: Duration = Duration::from_secs(10);

/// How soon a container whose environment or mounts could not be made
/// (`CreateContainerConfigError`) tries again.
const CONFIG_RETRY: Duration = Duration::from_secs(10);

/// Why a container's environment or mounts could not be made; the
/// messages are the kubelet's (`configmap "x" not found`).
#[derive(Debug, thiserror::Error)]
enum ContainerConfigError {
    #[error(transparent)]
    Read(#[from] FetchError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// What a container runs with besides its image: its environment (the
/// pod spec's part, resolved) and its volume mounts.
async fn container_config<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    config: &mut PodConfig,
) -> Result<(Vec<(String, String)>, Vec<ContainerMount>), ContainerConfigError> {
    let pod = &sandbox.pod;
    let namespace = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
    let wanted = env::references(container);
    let objects = config.read(ctx.config.as_ref(), namespace, &wanted).await?;
    let facts = PodFacts {
        pod,
        host_ip: &ctx.host_ip,
        pod_ip: pod.status.as_ref().map_or("", |s| s.pod_ip.as_str()),
        node_allocatable: &ctx.node_allocatable,
    };
    let env_vars = env::container_env(container, &facts, &objects)?;
    let mounts = sandbox.volumes.mounts(container)?;
    Ok((env_vars, mounts))
}

/// Runs `container`'s postStart hook, if it has one, on a task of its own
/// that notifies `hook_done` when it ends, with the kubelet's message on
/// failure. It has no time limit (Kubernetes sets none); the task is
/// aborted when the worker drops it (the container ended or is stopped).
fn post_start<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    hook_done: &Arc<Notify>,
) -> Option<HookRun> {
    let hook = container.lifecycle.as_ref()?.post_start.clone()?;
    let pod = &sandbox.pod;
    let target = hook_target(sandbox.netns.clone(), pod, container);
    let runtime = ctx.runtime.clone();
    let events = ctx.events.clone();
    let meta = pod.metadata.clone().unwrap_or_default();
    let done = hook_done.clone();
    let (send, outcome) = oneshot::channel();
    let task = tokio::spawn(async move {
        let ran = lifecycle_hooks::run(
            runtime.as_ref(),
            &events,
            &meta,
            &target,
            &hook,
            Duration::MAX,
        )
        .await;
        let name = &target.container.name;
        let _ =
            send.send(ran.map_err(|e| lifecycle_hooks::failure_message(&hook, name, &meta, &e)));
        done.notify_one();
    });
    Some(HookRun {
        _task: AbortOnDropHandle::new(task),
        outcome,
    })
}

/// The cgroup of a pod's container (the spec's `cgroupsPath`), read back
/// by `oom_killed` when the container exits with SIGKILL, and by the
/// resource usage sampler (`crate::resource_usage`).
pub fn cgroups_path(pod_uid: &str, container: &str) -> String {
    format!("/skiff/{pod_uid}/{container}")
}

/// Starts `container` of the sandboxed pod as run number `restarts`;
/// returns when to look at it again. Its postStart hook, if any, runs on
/// a task that notifies `hook_done` when it ends.
pub(super) async fn start<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    track: &mut Track,
    restarts: i32,
    config: &mut PodConfig,
    hook_done: &Arc<Notify>,
) -> Option<Instant> {
    let pod = &sandbox.pod;
    let meta = pod.metadata.clone().unwrap_or_default();
    let now = Instant::now();
    let policy = PullPolicy::for_container(&container.image_pull_policy, &container.image);
    let name = container.name.as_str();
    let tell = |kind: EventKind, reason: &str, message: String| {
        ctx.events.pod(&meta, name, kind, reason, message);
    };
    let pulls = match policy {
        PullPolicy::Always => true,
        PullPolicy::Never => false,
        PullPolicy::IfNotPresent => !ctx
            .runtime
            .image_present(&container.image)
            .await
            .unwrap_or(false),
    };
    // The pod's registry credentials, read only for a pull.
    let secrets = if pulls {
        let read = pull_secrets::read(config, ctx.config.as_ref(), pod).await;
        if !read.problems.is_empty() {
            let message = read.event_message();
            tell(
                EventKind::Warning,
                "FailedToRetrieveImagePullSecret",
                message,
            );
        }
        read
    } else {
        PullSecrets::default()
    };
    if pulls {
        let message = format!("Pulling image {:?}", container.image);
        tell(EventKind::Normal, "Pulling", message);
    }
    let pull_started = Instant::now();
    let ensured = ctx
        .runtime
        .ensure_image(&container.image, policy, &secrets.keyring)
        .await;
    let image = match ensured {
        Ok(i) => {
            ctx.metrics.image_pulls.inc(&["ok"]);
            let message = if pulls {
                let took = pull_started.elapsed().as_secs_f64();
                format!(
                    "Successfully pulled image {:?} in {took:.3}s",
                    container.image
                )
            } else {
                format!(
                    "Container image {:?} already present on machine",
                    container.image
                )
            };
            tell(EventKind::Normal, "Pulled", message);
            i
        }
        Err(e) => {
            ctx.metrics.image_pulls.inc(&["error"]);
            tracing::warn!(container = %track.id, image = %container.image, error = %e, "image not available");
            let reason = if !track.pacing.errors.started() {
                "ErrImagePull"
            } else {
                "ImagePullBackOff"
            };
            let image = &container.image;
            match (policy, reason) {
                (PullPolicy::Never, _) => {
                    let message = format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    );
                    tell(EventKind::Warning, "ErrImageNeverPull", message);
                }
                (_, "ErrImagePull") => {
                    let why = secrets.explain(&e.to_string());
                    let message = format!("Failed to pull image {image:?}: {why}");
                    tell(EventKind::Warning, "Failed", message);
                }
                _ => {
                    let message = format!("Back-off pulling image {image:?}");
                    tell(EventKind::Normal, "BackOff", message);
                }
            }
            if !track.shown.ever_started || !matches!(track.shown.state, CState::Waiting { .. }) {
                track.shown.state = CState::Waiting {
                    reason: if policy == PullPolicy::Never {
                        "ErrImageNeverPull".into()
                    } else {
                        reason.into()
                    },
                    message: secrets.explain(&e.to_string()),
                };
            }
            return Some(track.retry_later(now));
        }
    };
    let hostname = sandbox.hostname();
    let etc_files = match sandbox.etc_files(&ctx.layout, &ctx.discovery).await {
        Ok(f) => f,
        Err(e) => {
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e.to_string(),
            };
            return Some(now + ETC_FILES_RETRY);
        }
    };
    let accounts = match ctx.runtime.image_accounts(&image).await {
        Ok(accounts) => accounts,
        Err(e) => {
            tracing::warn!(container = %track.id, error = %e, "cannot read the image's users");
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerError".into(),
                message: e.to_string(),
            };
            return Some(track.retry_later(now));
        }
    };
    let image_user = image.config.user.as_deref();
    let security = match security_context::resolve(pod, container, image_user, &accounts) {
        Ok(security) => security,
        Err(e) => {
            tracing::info!(container = %track.id, error = %e, "container may not run as asked");
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e.to_string(),
            };
            return Some(track.retry_later(now));
        }
    };
    let (env_vars, mut mounts) = match container_config(ctx, sandbox, container, config).await {
        Ok(found) => found,
        Err(e) => {
            tracing::info!(container = %track.id, error = %e, "container config not ready");
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e.to_string(),
            };
            let retry = now + CONFIG_RETRY;
            track.pacing.retry_at = Some(retry);
            return Some(retry);
        }
    };
    match termination::prepare(&ctx.layout, pod, container) {
        Ok(Some(mount)) => mounts.push(mount),
        Ok(None) => {}
        Err(e) => {
            let e = format!("preparing the termination message file: {e}");
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e,
            };
            return Some(now + ETC_FILES_RETRY);
        }
    }
    let devices = if security.privileged {
        host_devices(Path::new("/dev"))
    } else {
        Vec::new()
    };
    // `$(VAR)` in command and args, from the finished environment.
    let expanded = env::with_expanded_command(container, &env_vars);
    let cgroup = cgroups_path(&meta.uid, &container.name);
    let netns_str = sandbox.netns.display().to_string();
    let service_variables = service_env(pod, &ctx.discovery.services.current());
    let runtime_spec = match spec::build(&SpecInput {
        container: &expanded,
        image: &image.config,
        hostname: &hostname,
        netns_path: &netns_str,
        host: HostNamespaces::of(pod.spec.as_ref().unwrap_or(&v1::PodSpec::default())),
        pid_namespace: &sandbox.pid,
        cgroups_path: &cgroup,
        etc_files: &etc_files,
        env: &env_vars,
        mounts: &mounts,
        service_env: &service_variables,
        security: &security,
        host_devices: &devices,
    }) {
        Ok(s) => s,
        Err(e) => {
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e.to_string(),
            };
            // Pod specs do not change; nothing to retry until they do.
            return None;
        }
    };
    let started_at = now_rfc3339();
    let labels: HashMap<String, String> = [
        (LABEL_POD_UID, meta.uid.clone()),
        (LABEL_POD_NAME, meta.name.clone()),
        (LABEL_POD_NAMESPACE, meta.namespace.clone()),
        (LABEL_CONTAINER, container.name.clone()),
        (LABEL_RESTARTS, restarts.to_string()),
        (LABEL_STARTED_AT, started_at.clone()),
        (LABEL_IMAGE_ID, image.id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let log_path = ctx.layout.log_file(pod, &container.name, restarts);
    let request = StartRequest {
        id: track.id.clone(),
        labels,
        image: image.clone(),
        spec: runtime_spec,
        log_path,
        stdio: StdioMode {
            stdin: container.stdin,
            stdin_once: container.stdin_once,
            tty: container.tty,
        },
    };
    match ctx.runtime.start(request).await {
        Ok(pid) => {
            tracing::info!(container = %track.id, pid, restarts, "container started");
            tell(
                EventKind::Normal,
                "Created",
                format!("Created container: {name}"),
            );
            tell(
                EventKind::Normal,
                "Started",
                format!("Started container {name}"),
            );
            let labels = [
                meta.namespace.as_str(),
                meta.name.as_str(),
                container.name.as_str(),
            ];
            ctx.metrics.container_starts.inc(&labels);
            if restarts > track.shown.restarts || (restarts > 0 && !track.shown.ever_started) {
                ctx.metrics.container_restarts.inc(&labels);
            }
            let post_start = post_start(ctx, sandbox, container, hook_done);
            track.begin_run(restarts, started_at, image.id, container, post_start, now);
            ctx.layout.prune_logs(pod, &container.name).await;
            track.next_probe()
        }
        Err(e) => {
            tracing::warn!(container = %track.id, error = %e, "container failed to start");
            tell(EventKind::Warning, "Failed", format!("Error: {e}"));
            track.shown.state = CState::Waiting {
                reason: "RunContainerError".into(),
                message: e.to_string(),
            };
            Some(track.retry_later(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};
    use skiff_proto::v1;

    use crate::master_link::{ConfigData, ConfigKind, StaticConfigSource};
    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall, HOST_NETNS};
    use crate::pods::worker::harness::{
        container, pod, running, spawn_worker, spawn_worker_reading, spawn_worker_with,
        waiting_message, waiting_reason,
    };
    use crate::runtime::recording::{Call, RecordingRuntime};

    #[tokio::test(start_paused = true)]
    async fn a_new_pod_gets_a_netns_an_image_and_a_running_container() {
        let mut h = spawn_worker(pod("Always"), RecordingRuntime::default());
        let s = h.until("Running", running).await;
        assert_eq!(s.host_ip, "10.0.0.1");
        assert_eq!(container(&s).restart_count, 0);
        assert!(
            container(&s).ready,
            "no readiness probe: ready once running"
        );
        let sandbox = h.sandbox.calls();
        assert!(
            matches!(&sandbox[0], SandboxCall::EnsureNetns(p) if p.ends_with("netns/uid1")),
            "{sandbox:?}"
        );
        assert!(
            matches!(&sandbox[1], SandboxCall::Attach { uid, .. } if uid == "uid1"),
            "{sandbox:?}"
        );
        let calls = h.runtime.calls();
        assert_eq!(calls[0], Call::EnsureImage("busybox:1".into()));
        assert_eq!(h.starts(), ["0"]);
        // As the kubelet tells it: the image was there (busybox:1 is pulled
        // if not present), the container created and started.
        assert_eq!(h.event_reasons(), ["Pulled", "Created", "Started"]);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_images_and_failed_starts_are_retried() {
        let runtime = RecordingRuntime::default();
        runtime.hide_image("busybox:1");
        runtime.fail_starts(1);
        let mut h = spawn_worker(pod("Always"), runtime);
        h.until("ErrImagePull", |s| waiting_reason(s) == "ErrImagePull")
            .await;
        assert_eq!(h.event_reasons(), ["Pulling", "Failed"]);
        // The image arrives (an archive import): the pod retries at once.
        h.runtime.provide_image("busybox:1");
        h.until("RunContainerError", |s| {
            waiting_reason(s) == "RunContainerError"
        })
        .await;
        h.until("Running", running).await;
        assert_eq!(
            h.starts(),
            ["0", "0"],
            "the failed start is retried as the same run"
        );
        let reasons = h.event_reasons();
        assert!(reasons.contains(&"Failed".to_owned()), "{reasons:?}");
        assert_eq!(reasons.last().map(String::as_str), Some("Started"));
    }

    /// The test pod, its container reading `MODE` from ConfigMap `app` and
    /// running `echo $(MODE)`.
    fn pod_reading_its_mode() -> v1::Pod {
        let mut pod = pod("Always");
        let container = &mut pod.spec.as_mut().unwrap().containers[0];
        container.command = vec!["echo".into(), "$(MODE)".into()];
        container.env.push(v1::EnvVar {
            name: "MODE".into(),
            value: String::new(),
            value_from: Some(v1::EnvVarSource {
                config_map_key_ref: Some(v1::ConfigMapKeySelector {
                    name: "app".into(),
                    key: "mode".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        });
        pod
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_config_map_holds_the_container_until_it_appears() {
        let mut h = spawn_worker_reading(
            pod_reading_its_mode(),
            RecordingRuntime::default(),
            RecordingSandbox::default(),
            StaticConfigSource::default(),
        );
        let config_error = |s: &v1::PodStatus| waiting_reason(s) == "CreateContainerConfigError";
        let s = h.until("CreateContainerConfigError", config_error).await;
        assert_eq!(waiting_message(&s), r#"configmap "app" not found"#);
        assert_eq!(s.phase, "Pending");
        assert!(h.starts().is_empty(), "nothing starts without its config");
        let reasons = h.event_reasons();
        assert!(reasons.contains(&"Failed".to_owned()), "{reasons:?}");
        // Read again every 10 s, not at once and not only once.
        let read = h.config.fetches_of("app");
        tokio::time::sleep(Duration::from_secs(25)).await;
        let again = h.config.fetches_of("app") - read;
        assert!((2..=3).contains(&again), "{again} reads in 25 s");
        assert!(h.starts().is_empty());

        // It appears: the container starts with it, within one retry.
        let mode = ConfigData::text(&[("mode", "fast")]);
        h.config.put(ConfigKind::ConfigMap, "default", "app", mode);
        let appeared = tokio::time::Instant::now();
        h.until("Running", running).await;
        assert!(appeared.elapsed() <= Duration::from_secs(10));
        let spec = h.runtime.started_spec("uid1_main").expect("spec");
        let env: Vec<&str> = spec["process"]["env"]
            .as_array()
            .expect("an environment")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"MODE=fast"), "{env:?}");
        assert_eq!(spec["process"]["args"], json!(["echo", "fast"]));
    }

    /// The bind mount of the container's `destination` in `spec`.
    fn bind_at<'a>(spec: &'a Value, destination: &str) -> &'a Value {
        let mounts = spec["mounts"].as_array().expect("mounts");
        mounts
            .iter()
            .find(|m| m["destination"] == destination)
            .unwrap_or_else(|| panic!("no mount at {destination}: {mounts:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn volumes_wait_for_their_config_map_follow_it_and_go_with_the_pod() {
        let mut pod = pod("Always");
        let spec = pod.spec.as_mut().unwrap();
        let config = v1::Volume {
            name: "config".into(),
            config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                name: "app".into(),
                default_mode: Some(0o644),
                ..Default::default()
            })),
            ..Default::default()
        };
        let creds = v1::Volume {
            name: "creds".into(),
            secret: Some(Box::new(v1::SecretVolumeSource {
                secret_name: "creds".into(),
                optional: Some(true),
                ..Default::default()
            })),
            ..Default::default()
        };
        spec.volumes = vec![config, creds];
        let mount = |name: &str, path: &str| v1::VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        };
        spec.containers[0].volume_mounts =
            vec![mount("config", "/etc/app"), mount("creds", "/creds")];
        let mut h = spawn_worker_reading(
            pod,
            RecordingRuntime::default(),
            RecordingSandbox::default(),
            StaticConfigSource::default(),
        );
        let not_made = |s: &v1::PodStatus| waiting_message(s).contains("not found");
        let s = h.until("a volume not made", not_made).await;
        assert_eq!(waiting_reason(&s), "ContainerCreating");
        let failed = r#"MountVolume.SetUp failed for volume "config" : configmap "app" not found"#;
        assert_eq!(waiting_message(&s), failed);
        let reasons = h.event_reasons();
        assert!(reasons.contains(&"FailedMount".to_owned()), "{reasons:?}");
        assert!(h.starts().is_empty(), "nothing starts half-mounted");

        let conf = ConfigData::text(&[("app.conf", "port=80")]);
        h.config.put(ConfigKind::ConfigMap, "default", "app", conf);
        h.until("Running", running).await;
        let volumes = h.pod_dir().join("volumes");
        let config_dir = volumes.join("kubernetes.io~configmap/config");
        let secret_dir = volumes.join("kubernetes.io~secret/creds");
        let conf_file = config_dir.join("app.conf");
        assert_eq!(std::fs::read_to_string(&conf_file).unwrap(), "port=80");
        // Mounted read-only, the secret's on a tmpfs.
        let spec = h.runtime.started_spec("uid1_main").expect("spec");
        let bind = bind_at(&spec, "/etc/app");
        assert_eq!(bind["source"], config_dir.display().to_string());
        assert_eq!(bind["options"], json!(["rbind", "rprivate", "ro"]));
        let bind = bind_at(&spec, "/creds");
        assert_eq!(bind["source"], secret_dir.display().to_string());
        assert_eq!(h.sandbox.mounted(), std::slice::from_ref(&secret_dir));

        // A change to the ConfigMap reaches the file within 40 s.
        let conf = ConfigData::text(&[("app.conf", "port=81")]);
        h.config.put(ConfigKind::ConfigMap, "default", "app", conf);
        let changed = tokio::time::Instant::now();
        while std::fs::read_to_string(&conf_file).unwrap() != "port=81" {
            assert!(changed.elapsed() <= Duration::from_secs(40), "not updated");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(h.starts(), ["0"], "the container runs on");

        // The pod goes: the tmpfs is unmounted, the files removed.
        h.desired.send_replace(None);
        h.ended().await;
        let calls = h.sandbox.calls();
        assert!(
            calls.contains(&SandboxCall::Unmount(secret_dir)),
            "{calls:?}"
        );
        assert!(h.sandbox.mounted().is_empty());
        assert!(!h.pod_dir().exists());
    }

    /// The test pod, its container `main` with this postStart hook.
    fn pod_with_post_start(policy: &str, command: &str) -> v1::Pod {
        let mut pod = pod(policy);
        pod.spec.as_mut().unwrap().containers[0].lifecycle = Some(Box::new(v1::Lifecycle {
            post_start: Some(v1::LifecycleHandler {
                exec: Some(v1::ExecAction {
                    command: vec![command.into()],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }));
        pod
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_start_hook_holds_the_container_until_it_has_run() {
        let runtime = RecordingRuntime::default();
        runtime.script_exec("warm-up", 0, Duration::from_secs(30));
        let mut h = spawn_worker(pod_with_post_start("Always", "warm-up"), runtime);
        let s = h
            .until("started, its hook running", |s| {
                waiting_reason(s) == "ContainerCreating" && !container(s).container_id.is_empty()
            })
            .await;
        let begun = tokio::time::Instant::now();
        assert!(!container(&s).ready);
        assert_eq!(container(&s).started, Some(false));
        assert_eq!(h.starts(), ["0"], "the container runs while its hook does");
        let s = h.until("Running", running).await;
        assert_eq!(
            h.runtime.exec_commands(),
            [("uid1_main".to_owned(), vec!["warm-up".to_owned()])]
        );
        assert!(
            begun.elapsed() >= Duration::from_secs(30),
            "{:?}",
            begun.elapsed()
        );
        assert!(container(&s).ready);
        assert_eq!(container(&s).started, Some(true));
        let reasons = h.event_reasons();
        assert!(
            !reasons.contains(&"FailedPostStartHook".to_owned()),
            "{reasons:?}"
        );
        assert_eq!(h.starts(), ["0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_post_start_hook_kills_the_container_saying_why() {
        let runtime = RecordingRuntime::default();
        runtime.script_exec("warm-up", 2, Duration::ZERO);
        let mut h = spawn_worker(pod_with_post_start("Never", "warm-up"), runtime);
        let s = h.until("Failed", |s| s.phase == "Failed").await;
        let terminated = container(&s)
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .expect("ended");
        assert_eq!(terminated.exit_code, Some(143), "stopped with SIGTERM");
        let stop = Call::Signal {
            id: "uid1_main".into(),
            signal: 15,
        };
        assert!(h.runtime.calls().contains(&stop));
        let events = h.events_sent();
        let failed = events
            .iter()
            .find(|(reason, _)| reason == "FailedPostStartHook")
            .expect("FailedPostStartHook");
        assert_eq!(
            failed.1,
            r#"Exec lifecycle hook ([warm-up]) for Container "main" in Pod "web_default(uid1)" failed - error: command ["warm-up"] exited with 2"#
        );
        assert!(
            events.iter().any(|(reason, _)| reason == "Killing"),
            "{events:?}"
        );
        assert_eq!(h.starts(), ["0"], "Never: not started again");
    }

    /// A `.dockerconfigjson` Secret for `registry` with `user`/`password`.
    fn docker_config(registry: &str, user: &str, password: &str) -> ConfigData {
        let json = format!(
            r#"{{"auths": {{"{registry}": {{"username": "{user}", "password": "{password}"}}}}}}"#
        );
        ConfigData {
            data: [(".dockerconfigjson".to_owned(), json.into_bytes())].into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn image_pull_secrets_give_the_pull_its_credentials_and_a_missing_one_is_named() {
        const IMAGE: &str = "127.0.0.1:5000/team/app:1";
        let runtime = RecordingRuntime::default();
        runtime.require_credentials(IMAGE, "skiff", "s3cret");
        let mut pod = pod("Always");
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[0].image = IMAGE.into();
        spec.containers[0].image_pull_policy = "Always".into();
        spec.image_pull_secrets = vec![v1::LocalObjectReference {
            name: "regcred".into(),
        }];
        let config = StaticConfigSource::default();
        let mut h = spawn_worker_reading(pod, runtime, RecordingSandbox::default(), config);
        // The Secret is not there: pulled without it, refused, and the
        // status names the Secret.
        let s = h
            .until("ErrImagePull", |s| waiting_reason(s) == "ErrImagePull")
            .await;
        let message = waiting_message(&s);
        assert!(message.contains("401 Unauthorized"), "{message}");
        assert!(
            message.ends_with(r#"(imagePullSecrets: secret "regcred" not found)"#),
            "{message}"
        );
        let events = h.events_sent();
        let missing = events
            .iter()
            .find(|(reason, _)| reason == "FailedToRetrieveImagePullSecret")
            .expect("the kubelet's Event");
        assert!(
            missing.1.contains(r#"secret "regcred" not found"#),
            "{missing:?}"
        );
        // Wrong credentials: the registry's refusal, naming the Secret.
        let wrong = docker_config("127.0.0.1:5000", "skiff", "nope");
        h.config
            .put(ConfigKind::Secret, "default", "regcred", wrong);
        let s = h
            .until("refused with the Secret's credentials", |s| {
                waiting_message(s).contains("refused with the credentials")
            })
            .await;
        assert_eq!(waiting_reason(&s), "ImagePullBackOff");
        let message = waiting_message(&s);
        assert!(
            message.contains(r#"imagePullSecret "regcred""#),
            "{message}"
        );
        // The right ones: pulled with them.
        let right = docker_config("127.0.0.1:5000", "skiff", "s3cret");
        h.config
            .put(ConfigKind::Secret, "default", "regcred", right);
        h.until("Running", running).await;
        let pulls = h.runtime.pulls();
        assert_eq!(
            pulls.last(),
            Some(&(IMAGE.to_owned(), Some("skiff".to_owned())))
        );
        assert_eq!(pulls.first(), Some(&(IMAGE.to_owned(), None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_in_the_hosts_namespaces_gets_the_nodes_network_address_and_names() {
        let mut pod = pod("Always");
        let spec = pod.spec.as_mut().unwrap();
        spec.host_network = true;
        spec.host_pid = true;
        let sandbox = RecordingSandbox::with_pod_ip(std::net::Ipv4Addr::new(10, 42, 0, 5));
        let mut h = spawn_worker_with(pod, RecordingRuntime::default(), sandbox);
        let s = h.until("Running", running).await;
        // The node's address; no namespace or pod network of its own.
        assert_eq!(s.pod_ip, "10.0.0.1");
        assert_eq!(s.host_ip, "10.0.0.1");
        let calls = h.sandbox.calls();
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, SandboxCall::EnsureNetns(_) | SandboxCall::Attach { .. })),
            "{calls:?}"
        );
        let spec = h.runtime.started_spec("uid1_main").expect("a spec");
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        let kinds: Vec<&str> = namespaces
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(kinds, ["ipc", "mount", "network"]);
        assert_eq!(namespaces[2]["path"], HOST_NETNS);
        assert!(
            spec.get("hostname").is_none(),
            "the node's hostname: {spec}"
        );
        // The node's names in its /etc files.
        let hostname = nix::unistd::gethostname().unwrap();
        let file = h.pod_dir().join("etc").join("hostname");
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            format!("{}\n", hostname.to_string_lossy())
        );
        let env: Vec<&str> = spec["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let hostname_var = format!("HOSTNAME={}", hostname.to_string_lossy());
        assert!(env.contains(&hostname_var.as_str()), "{env:?}");
    }
}
