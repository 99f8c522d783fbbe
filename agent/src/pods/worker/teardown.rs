//! What a worker does once its pod is gone, as one step apart from
//! reconciling: every container is stopped at once (SIGTERM, the pod's
//! grace period, SIGKILL) and removed with its snapshot, then the pod is
//! unwired from the network and its network namespace and files are
//! removed. A step that fails is logged and the rest still done, so a pod
//! that cannot come down cleanly leaves as little behind as possible.

use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::pods::sandbox::PodSandbox;
use crate::runtime::{ContainerRuntime, TaskState};

use super::track::container_id;
use super::{WorkerContext, DEFAULT_GRACE_SECONDS};

/// How often a stopping container is checked for its exit.
const STOP_POLL: Duration = Duration::from_millis(100);

/// SIGTERM, up to `grace` for the container to exit, then SIGKILL.
pub async fn stop_container<R: ContainerRuntime>(runtime: &R, id: &str, grace: Duration) {
    if runtime.signal(id, 15).await.is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match runtime.inspect(id).await {
            Ok(Some(r)) if matches!(r.state, TaskState::Running { .. }) => {
                tokio::time::sleep(STOP_POLL).await
            }
            _ => return,
        }
    }
    let _ = runtime.signal(id, 9).await;
}

/// Stops and removes everything of a deleted pod.
pub(super) async fn teardown<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let grace = spec
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0) as u64;
    let mut stops = tokio::task::JoinSet::new();
    for c in &spec.containers {
        let runtime = ctx.runtime.clone();
        let id = container_id(&meta.uid, &c.name);
        stops.spawn(async move {
            stop_container(runtime.as_ref(), &id, Duration::from_secs(grace)).await;
            if let Err(e) = runtime.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "cannot remove container");
            }
        });
    }
    while stops.join_next().await.is_some() {}
    if let Err(e) = ctx.sandbox.detach(&meta.uid).await {
        // Each failed step was logged where it failed.
        tracing::debug!(pod = %meta.name, error = %e, "pod not fully unwired from the network");
    }
    if let Err(e) = ctx.sandbox.remove_netns(&ctx.layout.netns(&meta.uid)) {
        tracing::warn!(error = %e, "cannot remove pod network namespace");
    }
    ctx.layout.remove_pod(pod).await;
    tracing::info!(pod = %meta.name, namespace = %meta.namespace, "pod removed");
}

#[cfg(test)]
mod tests {
    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall, SandboxOp};
    use crate::pods::worker::harness::{pod, running, spawn_worker, spawn_worker_with};
    use crate::runtime::recording::{Call, RecordingRuntime};

    #[tokio::test(start_paused = true)]
    async fn deletion_stops_and_removes_everything() {
        let mut h = spawn_worker(pod("Always"), RecordingRuntime::default());
        h.until("Running", running).await;
        h.desired.send_replace(None);
        (&mut h.task).await.unwrap();
        let calls = h.runtime.calls();
        let tail: Vec<&Call> = calls.iter().rev().take(2).rev().collect();
        assert_eq!(
            tail[..2],
            [
                &Call::Signal {
                    id: "uid1_main".into(),
                    signal: 15
                },
                &Call::Remove("uid1_main".into()),
            ]
        );
        let netns = h.dir.path().join("netns").join("uid1");
        assert_eq!(
            h.sandbox.calls().last(),
            Some(&SandboxCall::RemoveNetns(netns))
        );
        assert!(h.runtime.state("uid1_main").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn removal_goes_on_when_the_network_detach_and_netns_removal_fail() {
        let sandbox = RecordingSandbox::default();
        sandbox.fail(SandboxOp::Detach, 1);
        sandbox.fail(SandboxOp::RemoveNetns, 1);
        let mut h = spawn_worker_with(pod("Always"), RecordingRuntime::default(), sandbox);
        h.until("Running", running).await;
        assert!(h.pod_dir().exists(), "a started pod has files to remove");
        h.desired.send_replace(None);
        h.ended().await;
        let calls = h.runtime.calls();
        assert!(
            calls.contains(&Call::Remove("uid1_main".into())),
            "{calls:?}"
        );
        let sandbox = h.sandbox.calls();
        let n = sandbox.len();
        assert_eq!(
            sandbox[n - 2],
            SandboxCall::Detach("uid1".into()),
            "{sandbox:?}"
        );
        assert!(
            matches!(&sandbox[n - 1], SandboxCall::RemoveNetns(p) if p.ends_with("netns/uid1")),
            "the netns is removed after a failed detach: {sandbox:?}"
        );
        assert!(
            !h.pod_dir().exists(),
            "the pod's files go even though its sandbox did not come down cleanly"
        );
    }
}
