//! What a worker does once its pod is to go, as one step apart from
//! reconciling: every container but the sidecars is stopped at once
//! (its preStop hook, SIGTERM, what is left of the grace period,
//! SIGKILL: [`stop_with_hook`], as the kubelet's killContainer does it),
//! then the sidecars, the last one first, within what is left of the grace
//! period (as Kubernetes stops them), each removed with its snapshot; then
//! its pause process, if it has one (`shareProcessNamespace`), is killed,
//! the pod is unwired from the network, its network namespace is
//! removed, its tmpfs volumes are unmounted and its files (volumes among
//! them) removed. A
//! step that fails is logged and the rest still done, so a pod that cannot
//! come down cleanly leaves as little behind as possible.
//!
//! A pod the masters are deleting (`deletionTimestamp`) gets the grace
//! period its deletion gave (`deletionGracePeriodSeconds`), and once it is
//! torn down the masters are told so ([`confirm`]: the kubelet's final
//! delete), which removes it. A pod already gone from the masters
//! (removed at once, or missing from their list) gets its spec's grace
//! period, and needs no word.

use std::path::PathBuf;
use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::master_link::{EventKind, EventSender, StatusReport};
use crate::pods::lifecycle_hooks::{self, HookTarget};
use crate::pods::pod_address::PodAddress;
use crate::pods::sandbox::PodSandbox;
use crate::pods::status::Role;
use crate::pods::volumes;
use crate::runtime::{ContainerRuntime, TaskState};

use super::sandbox_setup;
use super::track::container_id;
use super::{WorkerContext, DEFAULT_GRACE_SECONDS};

/// How often a stopping container is checked for its exit.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The least a container gets between SIGTERM and SIGKILL after its
/// preStop hook took its grace period (the kubelet's minimum).
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// How a lifecycle hook reaches `container` of `pod`, whose containers
/// are in the network namespace `netns`.
pub(super) fn hook_target(netns: PathBuf, pod: &v1::Pod, container: &v1::Container) -> HookTarget {
    let uid = pod.metadata.as_ref().map_or("", |m| m.uid.as_str());
    HookTarget {
        container_id: container_id(uid, &container.name),
        container: container.clone(),
        pod: PodAddress::of(netns, pod),
    }
}

/// Stops the container as the kubelet's killContainer does: its preStop
/// hook first ([`run_pre_stop`]), then SIGTERM, what is left of `grace`,
/// SIGKILL.
pub(super) async fn stop_with_hook<R: ContainerRuntime>(
    runtime: &R,
    events: &EventSender,
    pod: &v1::ObjectMeta,
    target: &HookTarget,
    grace: Duration,
) {
    let grace = run_pre_stop(runtime, events, pod, target, grace).await;
    stop_container(runtime, &target.container_id, grace).await;
}

/// Runs the container's preStop hook, when it has one and runs, within
/// `grace` (a failure told as `FailedPreStopHook`; the stop goes on);
/// returns what is left of `grace` for its stop signal (at least 2 s
/// after a hook).
pub(super) async fn run_pre_stop<R: ContainerRuntime>(
    runtime: &R,
    events: &EventSender,
    pod: &v1::ObjectMeta,
    target: &HookTarget,
    grace: Duration,
) -> Duration {
    let hook = target
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    let mut grace = grace;
    if let Some(hook) = hook.filter(|_| !grace.is_zero()) {
        let running = matches!(
            runtime.inspect(&target.container_id).await,
            Ok(Some(r)) if matches!(r.state, TaskState::Running { .. })
        );
        if running {
            let begun = Instant::now();
            let name = &target.container.name;
            let hooked = lifecycle_hooks::run(runtime, events, pod, target, hook, grace);
            let ran = tokio::time::timeout(grace, hooked);
            let failure = match ran.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(lifecycle_hooks::failure_message(hook, name, pod, &e)),
                Err(_) => Some(format!(
                    "PreStop hook for Container {name:?} in Pod \"{}_{}({})\" did not finish within the grace period ({}s)",
                    pod.name,
                    pod.namespace,
                    pod.uid,
                    grace.as_secs()
                )),
            };
            if let Some(message) = failure {
                tracing::info!(container = %target.container_id, %message, "preStop hook failed");
                events.pod(pod, name, EventKind::Warning, "FailedPreStopHook", message);
            }
            grace = grace
                .saturating_sub(begun.elapsed())
                .max(MIN_GRACE_AFTER_HOOK);
        }
    }
    grace
}

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

/// Stops the container within `grace` (its preStop hook first) and
/// removes it.
async fn stop_and_remove<R: ContainerRuntime>(
    runtime: &R,
    events: &EventSender,
    pod: &v1::ObjectMeta,
    target: &HookTarget,
    grace: Duration,
) {
    stop_with_hook(runtime, events, pod, target, grace).await;
    let id = &target.container_id;
    if let Err(e) = runtime.remove(id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove container");
    }
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
    let netns = sandbox_setup::netns_of(ctx, pod);
    let mut stops = tokio::task::JoinSet::new();
    for c in spec.containers.iter().chain(others) {
        let runtime = ctx.runtime.clone();
        let events = ctx.events.clone();
        let pod_meta = meta.clone();
        let target = hook_target(netns.clone(), pod, c);
        stops.spawn(async move {
            stop_and_remove(runtime.as_ref(), &events, &pod_meta, &target, grace).await
        });
    }
    while stops.join_next().await.is_some() {}
    for c in sidecars.iter().rev() {
        let left = deadline.map_or(grace, |d| d.saturating_duration_since(Instant::now()));
        let target = hook_target(netns.clone(), pod, c);
        stop_and_remove(ctx.runtime.as_ref(), &ctx.events, &meta, &target, left).await;
    }
    // Its containers are gone: its pause process (and PID namespace), if
    // it has one, goes with nothing left in it to kill.
    let pause_file = ctx.layout.pause_file(&meta.uid);
    if let Err(e) = ctx.sandbox.remove_pid_namespace(&meta.uid, &pause_file) {
        tracing::warn!(pod = %meta.name, error = %e, "cannot stop the pod's pause process");
    }
    // Also for a pod in the host's network: both steps are idempotent,
    // and an earlier agent may have given it a namespace of its own.
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

    use skiff_proto::v1;

    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall, SandboxOp};
    use crate::pods::worker::harness::{pod, running, spawn_worker, spawn_worker_with, Harness};
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

    /// The test pod, deleted with `grace` seconds, its container with
    /// preStop hook `hook`.
    fn deleting_with_pre_stop(hook: v1::LifecycleHandler, grace: i64) -> v1::Pod {
        let mut pod = pod("Always");
        pod.spec.as_mut().unwrap().containers[0].lifecycle = Some(Box::new(v1::Lifecycle {
            pre_stop: Some(hook),
            ..Default::default()
        }));
        let meta = pod.metadata.as_mut().unwrap();
        meta.deletion_timestamp = "2026-01-01T00:00:30Z".into();
        meta.deletion_grace_period_seconds = grace;
        pod
    }

    /// Deletes the running test pod as `deleting` says; how long until the
    /// masters are told it is torn down.
    async fn delete(h: &mut Harness, deleting: v1::Pod) -> Duration {
        let asked = tokio::time::Instant::now();
        h.desired.send_replace(Some(deleting));
        loop {
            let report = h.reports.recv().await.expect("a confirmation");
            if report.torn_down {
                return asked.elapsed();
            }
        }
    }

    fn exec_hook(command: &str) -> v1::LifecycleHandler {
        v1::LifecycleHandler {
            exec: Some(v1::ExecAction {
                command: vec![command.into()],
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pre_stop_hook_runs_before_the_stop_signal_within_the_grace_period() {
        let runtime = RecordingRuntime::default();
        runtime.script_exec("drain", 0, Duration::from_secs(3));
        let hook = exec_hook("drain");
        let mut pod_with_hook = pod("Always");
        pod_with_hook.spec.as_mut().unwrap().containers[0].lifecycle =
            Some(Box::new(v1::Lifecycle {
                pre_stop: Some(hook.clone()),
                ..Default::default()
            }));
        let mut h = spawn_worker(pod_with_hook, runtime);
        h.until("Running", running).await;
        let took = delete(&mut h, deleting_with_pre_stop(hook, 10)).await;
        assert!(
            took >= Duration::from_secs(3),
            "the hook ran first: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        let calls = h.runtime.calls();
        let exec = calls
            .iter()
            .position(|c| *c == Call::Exec("uid1_main".into()))
            .expect("the hook ran");
        let term = calls
            .iter()
            .position(|c| {
                *c == Call::Signal {
                    id: "uid1_main".into(),
                    signal: 15,
                }
            })
            .expect("SIGTERM");
        assert!(exec < term, "{calls:?}");
        assert!(!h.event_reasons().contains(&"FailedPreStopHook".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_or_overlong_pre_stop_hook_is_told_and_the_stop_goes_on() {
        let runtime = RecordingRuntime::default();
        runtime.script_exec("drain", 1, Duration::ZERO);
        let mut h = spawn_worker(pod("Always"), runtime);
        h.until("Running", running).await;
        delete(&mut h, deleting_with_pre_stop(exec_hook("drain"), 10)).await;
        let events = h.events_sent();
        let failed = events
            .iter()
            .find(|(reason, _)| reason == "FailedPreStopHook")
            .expect("FailedPreStopHook");
        assert!(
            failed.1.starts_with("Exec lifecycle hook ([drain])"),
            "{failed:?}"
        );
        assert!(
            h.runtime.state("uid1_main").is_none(),
            "stopped and removed"
        );

        // A hook that outlasts the grace period is cut at its end; the
        // container still gets its 2 s between SIGTERM and SIGKILL.
        let runtime = RecordingRuntime::default();
        runtime.ignore_sigterm();
        let mut h = spawn_worker(pod("Always"), runtime);
        h.until("Running", running).await;
        let sleep = v1::LifecycleHandler {
            sleep: Some(v1::SleepAction { seconds: 60 }),
            ..Default::default()
        };
        let took = delete(&mut h, deleting_with_pre_stop(sleep, 5)).await;
        assert!(
            took >= Duration::from_secs(7) && took < Duration::from_secs(9),
            "5 s of hook, 2 s of SIGTERM: {took:?}"
        );
        let reasons = h.event_reasons();
        assert!(
            reasons.contains(&"FailedPreStopHook".to_owned()),
            "{reasons:?}"
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
    }
}
