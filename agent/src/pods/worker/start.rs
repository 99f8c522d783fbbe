//! Starting one container of a pod: its image (pulled as its pull policy
//! says), the pod's `/etc` files, the OCI runtime spec, then one runtime
//! call that creates the container and starts its task. A failed pull or
//! start is retried on the error back-off and shown as the kubelet shows
//! it (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`,
//! `RunContainerError`); a spec that cannot be built waits for the pod
//! spec to change (`CreateContainerConfigError`). The labels written here
//! are what a restarted agent adopts the container by. Each step is told
//! as the kubelet's Events: `Pulling` and `Pulled` (or already present),
//! `Failed` and `BackOff` for pulls, `Created` and `Started`, `Failed` for
//! a container that could not be made or started.

use std::collections::HashMap;
use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::master_link::EventKind;
use crate::pods::dns_policy::pod_hostname;
use crate::pods::sandbox::PodSandbox;
use crate::pods::service_env::service_env;
use crate::pods::status::CState;
use crate::runtime::containers::{
    LABEL_CONTAINER, LABEL_IMAGE_ID, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
    LABEL_RESTARTS, LABEL_STARTED_AT,
};
use crate::runtime::images::PullPolicy;
use crate::runtime::spec::{self, SpecInput};
use crate::runtime::{ContainerRuntime, StartRequest};

use super::sandbox_setup::PreparedSandbox;
use super::track::Track;
use super::WorkerContext;
use skiff_values::now_rfc3339;

/// How soon a container whose `/etc` files could not be written tries again.
const ETC_FILES_RETRY: Duration = Duration::from_secs(10);

/// The cgroup of a pod's container (the spec's `cgroupsPath`), read back
/// by `oom_killed` when the container exits with SIGKILL.
pub(super) fn cgroups_path(pod_uid: &str, container: &str) -> String {
    format!("/skiff/{pod_uid}/{container}")
}

/// Starts `container` of the sandboxed pod as run number `restarts`;
/// returns when to look at it again.
pub(super) async fn start<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    track: &mut Track,
    restarts: i32,
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
    if pulls {
        let message = format!("Pulling image {:?}", container.image);
        tell(EventKind::Normal, "Pulling", message);
    }
    let pull_started = Instant::now();
    let image = match ctx.runtime.ensure_image(&container.image, policy).await {
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
                    let message = format!("Failed to pull image {image:?}: {e}");
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
                    message: e.to_string(),
                };
            }
            return Some(track.retry_later(now));
        }
    };
    let (hostname, _) = pod_hostname(pod);
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
    let cgroup = cgroups_path(&meta.uid, &container.name);
    let netns_str = sandbox.netns.display().to_string();
    let service_variables = service_env(pod, &ctx.discovery.services.current());
    let runtime_spec = match spec::build(&SpecInput {
        container,
        image: &image.config,
        hostname: &hostname,
        netns_path: &netns_str,
        cgroups_path: &cgroup,
        etc_files: &etc_files,
        service_env: &service_variables,
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
            track.begin_run(restarts, started_at, image.id, container, now);
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
    use crate::pods::sandbox::recording::SandboxCall;
    use crate::pods::worker::harness::{container, pod, running, spawn_worker, waiting_reason};
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
}
