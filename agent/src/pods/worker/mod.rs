//! One pod worker per pod: it alone touches that pod's containers, one
//! pass at a time. A pass runs when the pod changes, when containerd
//! reports an exit or OOM kill of one of its containers, when a new image
//! arrives, when a back-off, retry or probe falls due, and at least every
//! 10 s; after each, the worker reports the pod's status if it changed.
//! The worker ends when the pod is to go, after tearing it down
//! (`teardown.rs`: for a pod the masters are deleting, within the grace
//! period its deletion gave, then telling them it is torn down, which
//! removes it), or when the agent shuts down, leaving the containers
//! running for the next agent to adopt (same process, same restart count).
//!
//! Each pass first makes sure of the pod's sandbox (`sandbox_setup.rs`):
//! while that fails, containers not yet started wait as
//! `CreatePodSandboxError` and the pass is retried after 5 s. Then of its
//! volumes, made once and their files refreshed every 30 s from the
//! ConfigMaps and Secrets they project: while they cannot be made,
//! containers not yet started wait as `ContainerCreating` (with a
//! `FailedMount` Event) and the pass is retried after 10 s. Then, for
//! each container, it observes containerd and runs the due probes, asks
//! the pure `decide.rs` what comes next under the restart policy
//! (restarting at once the first time, then after 10 s, 20 s, … up to 5
//! minutes, shown as CrashLoopBackOff), and does it, starting containers
//! through `start.rs` (each start reads the container's environment from
//! its ConfigMaps and Secrets again; one missing waits as
//! `CreateContainerConfigError` and is tried again every 10 s). What it
//! remembers of each container between passes is in `track.rs`; what it
//! remembers of the pod is [`PodState`]. What
//! happens to the containers is told as the kubelet's Events (pulling,
//! created and started, back-off, failed probes, kills for a failed
//! liveness probe) through `WorkerContext::events`.

mod decide;
#[cfg(test)]
mod harness;
mod sandbox_setup;
mod start;
mod teardown;
mod track;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::master_link::{ConfigSource, EventKind, EventSender, StatusReport};
use crate::runtime::{ContainerRuntime, RuntimeEvent, TaskState};

use super::dns_policy::ServiceDiscovery;
use super::layout::PodLayout;
use super::pod_config::PodConfig;
use super::sandbox::PodSandbox;
use super::status::{self, CState, ContainerView};

use self::decide::{Next, RestartPolicy, Run, Task};
use self::sandbox_setup::{PreparedSandbox, VolumeState};
use self::track::Track;
use skiff_values::now_rfc3339;

pub use self::decide::should_restart;
pub use self::teardown::stop_container;
pub use self::track::container_id;

/// What every worker shares.
pub struct WorkerContext<R, S> {
    pub runtime: Arc<R>,
    /// Network namespaces, the pod network and cgroup OOM counters.
    pub sandbox: Arc<S>,
    pub layout: Arc<PodLayout>,
    pub reports: mpsc::UnboundedSender<StatusReport>,
    pub host_ip: String,
    pub metrics: crate::metrics::AgentMetrics,
    /// The kubelet's Events about the pods, best effort.
    pub events: EventSender,
    /// Where the pods' ConfigMaps and Secrets are read from.
    pub config: Arc<dyn ConfigSource>,
    /// The node's allocatable resources: what a container without a limit
    /// may use, as the downward API and memory-backed volumes count it.
    pub node_allocatable: BTreeMap<String, String>,
    /// What containers find Services by: resolv.conf, Service variables.
    pub discovery: ServiceDiscovery,
}

impl<R, S> Clone for WorkerContext<R, S> {
    fn clone(&self) -> Self {
        WorkerContext {
            runtime: self.runtime.clone(),
            sandbox: self.sandbox.clone(),
            layout: self.layout.clone(),
            reports: self.reports.clone(),
            host_ip: self.host_ip.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
            config: self.config.clone(),
            node_allocatable: self.node_allocatable.clone(),
            discovery: self.discovery.clone(),
        }
    }
}

/// Longest a worker waits before looking at its containers again.
const RESYNC: Duration = Duration::from_secs(10);

/// How soon a pass is retried while the pod's sandbox cannot be made.
const SANDBOX_RETRY: Duration = Duration::from_secs(5);

/// How soon a pass is retried while the pod's volumes cannot be made.
const VOLUME_RETRY: Duration = Duration::from_secs(10);

/// Time between SIGTERM and SIGKILL when neither the pod nor the liveness
/// probe sets one (the Kubernetes default).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What the worker remembers of its pod between passes.
#[derive(Default)]
struct PodState {
    /// One per container of the spec, in the same order.
    tracks: Vec<Track>,
    /// The pod's address once it is wired into the pod network.
    pod_ip: String,
    /// `status.startTime`: as the master has it, else when first seen here.
    start_time: String,
    /// The status last sent; only changes are sent.
    last_report: Option<v1::PodStatus>,
    /// The last spec seen, to tear down once the pod is gone.
    last_pod: Option<v1::Pod>,
    /// The pod's volumes, once made.
    volumes: VolumeState,
    /// The ConfigMaps and Secrets the pod reads, as last read.
    config: PodConfig,
}

impl PodState {
    /// Sends the pod's status if it changed since the last report.
    fn report<R, S>(&mut self, ctx: &WorkerContext<R, S>, pod: &v1::Pod) {
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::from_spec(&spec.restart_policy);
        let views: Vec<ContainerView> = spec
            .containers
            .iter()
            .zip(&self.tracks)
            .map(|(c, t)| t.view(c, policy))
            .collect();
        let status = status::pod_status(
            pod,
            &views,
            &ctx.host_ip,
            &self.pod_ip,
            &self.start_time,
            self.last_report.as_ref(),
        );
        if self.last_report.as_ref() != Some(&status) {
            let _ = ctx.reports.send(StatusReport {
                uid: meta.uid,
                namespace: meta.namespace,
                name: meta.name,
                status: status.clone(),
                torn_down: false,
            });
            self.last_report = Some(status);
        }
    }
}

/// Runs the worker for one pod until the pod is deleted (its containers
/// are then removed) or the agent shuts down (they keep running).
pub async fn run<R: ContainerRuntime, S: PodSandbox>(
    ctx: WorkerContext<R, S>,
    mut desired: watch::Receiver<Option<v1::Pod>>,
    mut events: mpsc::Receiver<RuntimeEvent>,
    shutdown: CancellationToken,
) {
    let mut state = PodState::default();
    let mut images = ctx.runtime.images_changed();
    loop {
        let pod = desired.borrow_and_update().clone();
        if pod.is_some() {
            state.last_pod = pod.clone();
        }
        let Some(pod) = pod else {
            // Gone from the masters (removed at once, or missing from their
            // list): nothing to tell them.
            if let Some(last) = &state.last_pod {
                teardown::teardown(&ctx, last).await;
            }
            return;
        };
        if teardown::is_being_deleted(&pod) {
            teardown::teardown(&ctx, &pod).await;
            teardown::confirm(&ctx, &pod);
            return;
        }
        if state.start_time.is_empty() {
            state.start_time = pod
                .status
                .as_ref()
                .map(|s| s.start_time.clone())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(now_rfc3339);
        }
        let wake = reconcile(&ctx, &pod, &mut state).await;
        state.report(&ctx, &pod);
        let sleep = match wake {
            Some(at) => tokio::time::sleep_until(at.min(Instant::now() + RESYNC)),
            // Look again now and then even without events: an exit missed
            // while containerd restarted must not go unnoticed for long.
            None => tokio::time::sleep(RESYNC),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = events.recv() => match event {
                Some(RuntimeEvent::Oom { container_id }) => {
                    if let Some(t) = state.tracks.iter_mut().find(|t| t.id == container_id) {
                        t.run.oom = true;
                    }
                }
                Some(RuntimeEvent::Exit { .. }) => {}
                None => return,
            },
            _ = images.changed() => {
                // An image arrived: containers waiting for one try again now.
                for t in state.tracks.iter_mut() {
                    if matches!(&t.shown.state, CState::Waiting { reason, .. } if reason.contains("Image")) {
                        t.pacing.retry_at = None;
                    }
                }
            }
            _ = sleep => {}
        }
    }
}

/// One pass over the pod: its sandbox, then each container; returns when
/// to look again.
async fn reconcile<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    state: &mut PodState,
) -> Option<Instant> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if state.tracks.len() != spec.containers.len() {
        state.tracks = spec
            .containers
            .iter()
            .map(|c| Track::new(&meta.uid, &c.name))
            .collect();
    }
    let mut sandbox = match sandbox_setup::prepare(ctx, pod, &mut state.pod_ip).await {
        Ok(s) => s,
        Err(e) => {
            for t in state.tracks.iter_mut() {
                t.show_waiting_if_new("CreatePodSandboxError", e.to_string());
            }
            return Some(Instant::now() + SANDBOX_RETRY);
        }
    };
    let now = Instant::now();
    let volumes = sandbox_setup::volumes(ctx, &sandbox.pod, &mut state.volumes, &mut state.config);
    match volumes.await {
        Ok(volumes) => sandbox.volumes = volumes,
        Err(e) => {
            for t in state.tracks.iter_mut() {
                t.show_waiting_if_new("ContainerCreating", e.to_string());
            }
            return Some(now + VOLUME_RETRY);
        }
    }
    let mut wake: Option<Instant> = None;
    for (container, track) in spec.containers.iter().zip(state.tracks.iter_mut()) {
        let config = &mut state.config;
        if let Some(at) = reconcile_container(ctx, &sandbox, container, track, config).await {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    wake
}

/// One container: observe it (running probes that are due), decide what
/// comes next, do it; returns when to look again.
async fn reconcile_container<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    track: &mut Track,
    config: &mut PodConfig,
) -> Option<Instant> {
    let pod = &sandbox.pod;
    let spec = pod.spec.as_ref();
    let policy = RestartPolicy::from_spec(spec.map_or("", |s| s.restart_policy.as_str()));
    let now = Instant::now();
    let mut finished_at = String::new();
    let task = match ctx.runtime.inspect(&track.id).await {
        Ok(record) => {
            track.sync(record.as_ref(), container, now);
            match record.map(|r| r.state) {
                Some(TaskState::Running { .. }) => {
                    track.note_running(now);
                    let runtime = ctx.runtime.as_ref();
                    let liveness_failed =
                        track.probe(runtime, container, &sandbox.netns, now).await;
                    let failures = track.take_probe_failures();
                    if !failures.is_empty() {
                        let meta = pod.metadata.clone().unwrap_or_default();
                        for failure in failures {
                            let kind = EventKind::Warning;
                            ctx.events
                                .pod(&meta, &container.name, kind, "Unhealthy", failure);
                        }
                    }
                    Task::Running { liveness_failed }
                }
                Some(TaskState::Exited {
                    code,
                    finished_at: at,
                }) => {
                    finished_at = at;
                    Task::Exited { code }
                }
                Some(TaskState::NoTask) | None => Task::Absent,
            }
        }
        Err(e) => {
            tracing::warn!(container = %track.id, error = %e, "cannot inspect container");
            Task::Unknown
        }
    };
    let reported_exit = last_reported_code(pod, &track.name);
    loop {
        match decide::decide(&track.observed(task, policy, reported_exit, now)) {
            Next::LookAgain(after) => return Some(now + after),
            Next::KeepRunning => return track.next_probe(),
            Next::Kill => {
                let meta = pod.metadata.clone().unwrap_or_default();
                let message = format!(
                    "Container {} failed liveness probe, will be restarted",
                    container.name
                );
                ctx.events.pod(
                    &meta,
                    &container.name,
                    EventKind::Normal,
                    "Killing",
                    message,
                );
                let pod_grace = spec.and_then(|s| s.termination_grace_period_seconds);
                let grace = track.kill_grace(pod_grace);
                stop_container(ctx.runtime.as_ref(), &track.id, grace).await;
                track.disarm_probes();
                return Some(Instant::now());
            }
            // Once recorded, the exit is what the restart policy decides on.
            Next::RecordExit { code } => {
                if code == 137 && !track.run.oom {
                    let uid = pod.metadata.as_ref().map_or("", |m| m.uid.as_str());
                    let cgroup = start::cgroups_path(uid, &container.name);
                    track.run.oom = ctx.sandbox.oom_killed(&cgroup);
                }
                track.record_exit(code, std::mem::take(&mut finished_at), policy, now);
            }
            Next::Done => return None,
            Next::BackOff { until } => {
                track.archive_exit();
                track.show_back_off(pod.metadata.as_ref().map_or("", |m| m.name.as_str()));
                let meta = pod.metadata.clone().unwrap_or_default();
                let message = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    container.name, meta.name, meta.namespace, meta.uid
                );
                ctx.events.pod(
                    &meta,
                    &container.name,
                    EventKind::Warning,
                    "BackOff",
                    message,
                );
                return Some(until);
            }
            Next::RetryStart { run, at } => {
                if run == Run::Restart {
                    track.archive_exit();
                }
                return Some(at);
            }
            Next::Start { run } => {
                let restarts = match run {
                    Run::First => 0,
                    Run::Restart => {
                        track.archive_exit();
                        track.shown.restarts + 1
                    }
                };
                return start::start(ctx, sandbox, container, track, restarts, config).await;
            }
        }
    }
}

/// The exit code the master last heard for the container, if it had ended.
fn last_reported_code(pod: &v1::Pod, container: &str) -> Option<u32> {
    let status = pod.status.as_ref()?;
    let c = status
        .container_statuses
        .iter()
        .find(|c| c.name == container)?;
    let terminated = c.state.as_ref()?.terminated.as_ref()?;
    terminated.exit_code.map(|code| code as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::pods::sandbox::recording::RecordingSandbox;
    use crate::pods::worker::harness::{
        container, pod, running, spawn_worker, spawn_worker_with, waiting_reason,
    };
    use crate::runtime::containers::{LABEL_RESTARTS, LABEL_STARTED_AT};
    use crate::runtime::recording::RecordingRuntime;

    #[tokio::test(start_paused = true)]
    async fn crashes_restart_at_once_then_back_off() {
        let mut h = spawn_worker(pod("Always"), RecordingRuntime::default());
        h.until("Running", running).await;
        h.exit(1).await;
        // First crash: restarted at once.
        let s = h
            .until("restart 1", |s| {
                running(s) && container(s).restart_count == 1
            })
            .await;
        let last = container(&s)
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(last.exit_code, Some(1));
        assert_eq!(h.starts(), ["0", "1"]);
        // Second crash: CrashLoopBackOff for 10 s before restart 2.
        let before = tokio::time::Instant::now();
        h.exit(2).await;
        let s = h
            .until("CrashLoopBackOff", |s| {
                waiting_reason(s) == "CrashLoopBackOff"
            })
            .await;
        let reasons = h.event_reasons();
        assert!(reasons.contains(&"BackOff".to_owned()), "{reasons:?}");
        assert!(container(&s)
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .message
            .contains("back-off 10s"));
        assert_eq!(
            s.phase, "Running",
            "a pod waiting to restart is still Running"
        );
        h.until("restart 2", |s| {
            running(s) && container(s).restart_count == 2
        })
        .await;
        assert!(
            before.elapsed() >= Duration::from_secs(10),
            "{:?}",
            before.elapsed()
        );
        assert_eq!(h.starts(), ["0", "1", "2"]);
        // Third crash: 20 s.
        let before = tokio::time::Instant::now();
        h.exit(3).await;
        h.until("restart 3", |s| {
            running(s) && container(s).restart_count == 3
        })
        .await;
        assert!(
            before.elapsed() >= Duration::from_secs(20),
            "{:?}",
            before.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restart_policies_decide_the_phase() {
        let mut h = spawn_worker(pod("OnFailure"), RecordingRuntime::default());
        h.until("Running", running).await;
        h.exit(0).await;
        let s = h.until("Succeeded", |s| s.phase == "Succeeded").await;
        assert_eq!(
            container(&s)
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason,
            "Completed"
        );
        assert_eq!(h.starts(), ["0"]);

        let mut h = spawn_worker(pod("Never"), RecordingRuntime::default());
        h.until("Running", running).await;
        h.exit(7).await;
        let s = h.until("Failed", |s| s.phase == "Failed").await;
        assert_eq!(container(&s).restart_count, 0);
        assert_eq!(h.starts(), ["0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn running_containers_are_adopted_not_restarted() {
        let runtime = RecordingRuntime::default();
        let labels: BTreeMap<String, String> = [
            (LABEL_RESTARTS.to_string(), "2".to_string()),
            (
                LABEL_STARTED_AT.to_string(),
                "2026-01-01T00:00:00Z".to_string(),
            ),
        ]
        .into();
        runtime.add_running("uid1_main", labels);
        let mut h = spawn_worker(pod("Always"), runtime);
        let s = h.until("Running", running).await;
        assert_eq!(container(&s).restart_count, 2);
        assert_eq!(
            container(&s)
                .state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            "2026-01-01T00:00:00Z"
        );
        assert!(h.starts().is_empty(), "adopted, not started again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sigkill_in_an_oom_killed_cgroup_is_reported_as_oomkilled() {
        let sandbox = RecordingSandbox::default();
        sandbox.oom_kill("/skiff/uid1/main");
        let mut h = spawn_worker_with(pod("Never"), RecordingRuntime::default(), sandbox);
        h.until("Running", running).await;
        h.exit(137).await;
        let s = h.until("Failed", |s| s.phase == "Failed").await;
        let terminated = container(&s)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(terminated.reason, "OOMKilled");
        assert_eq!(terminated.exit_code, Some(137));
    }
}
