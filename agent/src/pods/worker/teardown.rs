//! What a worker does once its pod is to go, as one step apart from
//! reconciling: every container but the sidecars is stopped at once
//! (SIGTERM, the grace period, SIGKILL), then the sidecars, the last one
//! first, within what is left of the grace period (as Kubernetes stops
//! them), each removed with its snapshot; then the pod is unwired
//! from the network, its network namespace is removed, its tmpfs volumes
//! are unmounted and its files (volumes among them) removed. A
//! step that fails is logged and the rest still done, so a pod that cannot
//! come down cleanly leaves as little behind as possible.
//!
//! A pod the masters are deleting (`deletionTimestamp`) gets the grace
//! period its deletion gave (`deletionGracePeriodSeconds`), and once it is
//! torn down the masters are told so ([`confirm`]: the kubelet's final
//! delete), which removes it. A pod already gone from the masters
//! (removed at once, or missing from their list) gets its spec's grace
//! period, and needs no word.

use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::master_link::StatusReport;
use crate::pods::sandbox::PodSandbox;
use crate::pods::status::Role;
use crate::pods::volumes;
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
    // None: a grace period beyond any clock, waited out for good.
    let deadline = Instant::now().checked_add(grace);
    while deadline.is_none_or(|d| Instant::now() < d) {
        match runtime.inspect(id).await {
            Ok(Some(r)) if matches!(r.state, TaskState::Running { .. }) => {
                tokio::time::sleep(STOP_POLL).await
            }
            _ => return,
        }
    }
    let _ = runtime.signal(id, 9).await;
}

/// Stops container `id` within `grace` and removes it.
async fn stop_and_remove<R: ContainerRuntime>(runtime: &R, id: &str, grace: Duration) {
    stop_container(runtime, id, grace).await;
    if let Err(e) = runtime.remove(id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove container");
    }
}

/// Whether the masters are deleting `pod` (it has a `deletionTimestamp`).
pub(super) fn is_being_deleted(pod: &v1::Pod) -> bool {
    pod.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// How long `pod`'s containers get between SIGTERM and SIGKILL: what its
/// deletion gave, when it is being deleted; else its spec's grace period,
/// or Kubernetes' default.
fn stop_grace(pod: &v1::Pod) -> Duration {
    let seconds = match pod.metadata.as_ref() {
        Some(m) if !m.deletion_timestamp.is_empty() => m.deletion_grace_period_seconds,
        _ => pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS),
    };
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Stops and removes everything of a pod that is to go.
pub(super) async fn teardown<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let grace = stop_grace(pod);
    // None: a grace period beyond any clock.
    let deadline = Instant::now().checked_add(grace);
    let (sidecars, others): (Vec<&v1::Container>, Vec<&v1::Container>) = spec
        .init_containers
        .iter()
        .partition(|c| Role::of_init(c) == Role::Sidecar);
    let mut stops = tokio::task::JoinSet::new();
    for c in spec.containers.iter().chain(others) {
        let runtime = ctx.runtime.clone();
        let id = container_id(&meta.uid, &c.name);
        stops.spawn(async move { stop_and_remove(runtime.as_ref(), &id, grace).await });
    }
    while stops.join_next().await.is_some() {}
    for c in sidecars.iter().rev() {
        let left = deadline.map_or(grace, |d| d.saturating_duration_since(Instant::now()));
        let id = container_id(&meta.uid, &c.name);
        stop_and_remove(ctx.runtime.as_ref(), &id, left).await;
    }
    if let Err(e) = ctx.sandbox.detach(&meta.uid).await {
        // Each failed step was logged where it failed.
        tracing::debug!(pod = %meta.name, error = %e, "pod not fully unwired from the network");
    }
    if let Err(e) = ctx.sandbox.remove_netns(&ctx.layout.netns(&meta.uid)) {
        tracing::warn!(error = %e, "cannot remove pod network namespace");
    }
    // Unmounted first, so that removing the files cannot stop at a tmpfs.
    volumes::unmount_all(ctx.sandbox.as_ref(), &ctx.layout.pod_dir(pod));
    ctx.layout.remove_pod(pod).await;
    tracing::info!(pod = %meta.name, namespace = %meta.namespace, "pod removed");
}

/// Tells the masters that `pod`, which they are deleting, is torn down
/// here, so that they remove it.
pub(super) fn confirm<R, S>(ctx: &WorkerContext<R, S>, pod: &v1::Pod) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let _ = ctx.reports.send(StatusReport {
        uid: meta.uid,
        namespace: meta.namespace,
        name: meta.name,
        status: pod.status.clone().unwrap_or_default(),
        torn_down: true,
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    async fn a_pod_being_deleted_stops_within_its_deletion_grace_then_is_confirmed() {
        let runtime = RecordingRuntime::default();
        // As a shell as PID 1: only SIGKILL stops it.
        runtime.ignore_sigterm();
        let mut h = spawn_worker(pod("Always"), runtime);
        h.until("Running", running).await;
        // Deleted with 7 s of grace; the spec says 1 s.
        let mut deleting = pod("Always");
        let meta = deleting.metadata.as_mut().unwrap();
        meta.deletion_timestamp = "2026-01-01T00:00:07Z".into();
        meta.deletion_grace_period_seconds = 7;
        let asked = tokio::time::Instant::now();
        h.desired.send_replace(Some(deleting));
        let confirmed = loop {
            let report = h.reports.recv().await.expect("a confirmation");
            if report.torn_down {
                break report;
            }
        };
        assert_eq!(
            (confirmed.uid.as_str(), confirmed.name.as_str()),
            ("uid1", "web")
        );
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_secs(9),
            "SIGKILL after the deletion's grace, not the spec's: {waited:?}"
        );
        let signals: Vec<u32> = h
            .runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Signal { signal, .. } => Some(signal),
                _ => None,
            })
            .collect();
        assert_eq!(signals, [15, 9]);
        h.ended().await;
        assert!(h.runtime.state("uid1_main").is_none(), "removed");
        let netns = h.dir.path().join("netns").join("uid1");
        assert_eq!(
            h.sandbox.calls().last(),
            Some(&SandboxCall::RemoveNetns(netns)),
            "the sandbox is torn down before the confirmation"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_gone_from_the_masters_is_torn_down_without_a_confirmation() {
        let mut h = spawn_worker(pod("Always"), RecordingRuntime::default());
        h.until("Running", running).await;
        h.desired.send_replace(None);
        h.ended().await;
        assert!(h.runtime.state("uid1_main").is_none());
        while let Ok(report) = h.reports.try_recv() {
            assert!(!report.torn_down, "nothing left to confirm: {report:?}");
        }
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
