//! One pod worker per pod: it alone touches that pod's containers, one
//! pass at a time. A pass runs when the pod changes, when containerd
//! reports an exit or OOM kill of one of its containers, when a new image
//! arrives, when a postStart hook ends, when a back-off, retry or probe
//! falls due, and at least every 10 s; after each, the worker reports the
//! pod's status if it changed.
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
//! `FailedMount` Event) and the pass is retried after 10 s. Then come the
//! init containers, in order (`init_order.rs`: each once those before it
//! succeeded, a sidecar once those before it did and then kept running),
//! and once they are done the app containers; until then those wait as
//! `PodInitializing`. Once the pod has finished, its sidecars are stopped,
//! the last one first. For each container it observes containerd and runs
//! the due probes (a startup probe first, until it passes), asks
//! the pure `decide.rs` what comes next under the restart policy
//! (restarting at once the first time, then after 10 s, 20 s, … up to 5
//! minutes, shown as CrashLoopBackOff), and does it, starting containers
//! through `start.rs` (each start reads the container's environment from
//! its ConfigMaps and Secrets again; one missing waits as
//! `CreateContainerConfigError` and is tried again every 10 s), and reads
//! what an ended run left as its termination message (`termination.rs`).
//! A container's postStart hook runs beside the worker (`start.rs`); one
//! that fails gets the container killed (`FailedPostStartHook`). Every
//! stop of a running container, for a failed probe or hook or the pod's
//! end, runs its preStop hook first (`teardown.rs` `stop_with_hook`).
//! What it
//! remembers of each container between passes is in `track.rs`; what it
//! remembers of the pod is [`PodState`]. What
//! happens to the containers is told as the kubelet's Events (pulling,
//! created and started, back-off, failed probes, kills for a failed
//! liveness probe) through `WorkerContext::events`.

mod decide;
#[cfg(test)]
mod harness;
mod init_order;
mod sandbox_setup;
mod start;
mod teardown;
mod termination;
mod track;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::master_link::{ConfigSource, EventKind, EventSender, StatusReport};
use crate::runtime::{ContainerRuntime, RuntimeEvent, TaskState};

use super::dns_policy::ServiceDiscovery;
use super::layout::PodLayout;
use super::pod_address::PodAddress;
use super::pod_config::PodConfig;
use super::sandbox::PodSandbox;
use super::status::{self, CState, ContainerView, Role};

use self::decide::{Next, RestartPolicy, Run, Task};
use self::init_order::{InitProgress, InitStep};
use self::sandbox_setup::{PreparedSandbox, VolumeState};
use self::teardown::{hook_target, stop_with_hook};
use self::track::{ProbeKind, Track};
use skiff_objects::deletion::DEFAULT_POD_GRACE_SECONDS as DEFAULT_GRACE_SECONDS;
use skiff_objects::{now_rfc3339, pods};

pub use self::decide::should_restart;
pub use self::start::cgroups_path;
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

/// How soon a sidecar sent SIGKILL is looked at again.
const SIDECAR_KILL_RECHECK: Duration = Duration::from_secs(1);

/// What the worker remembers of its pod between passes.
#[derive(Default)]
struct PodState {
    /// One per init container of the spec, in the same order.
    init_tracks: Vec<Track>,
    /// One per app container of the spec, in the same order.
    tracks: Vec<Track>,
    /// Initialization is over: every init container did its part, or an
    /// app container was found to exist. It is not done again.
    initialized: bool,
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
    /// Notified when a postStart hook of the pod ends.
    hooks: Arc<Notify>,
}

impl PodState {
    /// Tracks for the spec's containers, unless they are there already.
    fn track(&mut self, pod: &v1::Pod) {
        let spec = pod.spec.clone().unwrap_or_default();
        let uid = pod.metadata.as_ref().map_or("", |m| m.uid.as_str());
        if self.init_tracks.len() == spec.init_containers.len()
            && self.tracks.len() == spec.containers.len()
        {
            return;
        }
        let waiting = if spec.init_containers.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        self.init_tracks = spec
            .init_containers
            .iter()
            .map(|c| Track::new(uid, &c.name, Role::of_init(c), waiting))
            .collect();
        self.tracks = spec
            .containers
            .iter()
            .map(|c| Track::new(uid, &c.name, Role::App, waiting))
            .collect();
    }

    /// Every container as the status shows it, init containers first;
    /// sidecars no longer restarted once the pod has `finished`.
    fn views(&self, spec: &v1::PodSpec, finished: bool) -> Vec<ContainerView> {
        let policy = RestartPolicy::from_spec(&spec.restart_policy);
        let inits = spec.init_containers.iter().zip(&self.init_tracks);
        let apps = spec.containers.iter().zip(&self.tracks);
        inits
            .chain(apps)
            .map(|(c, t)| t.view(c, policy.for_container(t.role, finished)))
            .collect()
    }

    /// Whether the pod has finished (Succeeded or Failed).
    fn finished(&self, spec: &v1::PodSpec) -> bool {
        status::finished(&self.views(spec, false))
    }

    /// Sends the pod's status if it changed since the last report.
    fn report<R, S>(&mut self, ctx: &WorkerContext<R, S>, pod: &v1::Pod) {
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let views = self.views(&spec, self.finished(&spec));
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
        let Some(pod) = desired.borrow_and_update().clone() else {
            // Gone from the masters (removed at once, or missing from their
            // list): nothing to tell them.
            if let Some(last) = &state.last_pod {
                Box::pin(teardown::teardown(&ctx, last)).await;
            }
            return;
        };
        // One copy of the spec is kept between passes (`last_pod`), not
        // two: this one goes there once the pass is over.
        state.last_pod = None;
        if pods::pod_is_terminating(&pod) {
            Box::pin(teardown::teardown(&ctx, &pod)).await;
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
        // Boxed, as the teardowns are: what a pass holds is allocated while
        // it runs, not kept in every idle worker (a pass's state was most
        // of a worker's 13.8 KB).
        let wake = Box::pin(reconcile(&ctx, &pod, &mut state)).await;
        state.report(&ctx, &pod);
        state.last_pod = Some(pod);
        let sleep = match wake {
            Some(at) => tokio::time::sleep_until(at.min(Instant::now() + RESYNC)),
            // Look again now and then even without events: an exit missed
            // while containerd restarted must not go unnoticed for long.
            None => tokio::time::sleep(RESYNC),
        };
        let hooks = state.hooks.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hooks.notified() => {}
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = events.recv() => match event {
                Some(RuntimeEvent::Oom { container_id }) => {
                    let mut tracks = state.init_tracks.iter_mut().chain(state.tracks.iter_mut());
                    if let Some(t) = tracks.find(|t| t.id == container_id) {
                        t.run.oom = true;
                    }
                }
                Some(RuntimeEvent::Exit { .. }) => {}
                None => return,
            },
            _ = images.changed() => {
                // An image arrived: containers waiting for one try again now.
                for t in state.init_tracks.iter_mut().chain(state.tracks.iter_mut()) {
                    if matches!(&t.shown.state, CState::Waiting { reason, .. } if reason.contains("Image")) {
                        t.pacing.retry_at = None;
                    }
                }
            }
            _ = sleep => {}
        }
    }
}

/// One pass over the pod: its sandbox, then its init containers in order,
/// then its app containers; returns when to look again.
async fn reconcile<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    state: &mut PodState,
) -> Option<Instant> {
    let spec = pod.spec.clone().unwrap_or_default();
    state.track(pod);
    let mut sandbox = match sandbox_setup::prepare(ctx, pod, &mut state.pod_ip).await {
        Ok(s) => s,
        Err(e) => {
            for t in state.init_tracks.iter_mut().chain(state.tracks.iter_mut()) {
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
            for t in state.init_tracks.iter_mut().chain(state.tracks.iter_mut()) {
                t.show_waiting_if_new("ContainerCreating", e.to_string());
            }
            return Some(now + VOLUME_RETRY);
        }
    }
    let policy = RestartPolicy::from_spec(&spec.restart_policy);
    let finished = state.finished(&spec);
    if !state.initialized && !spec.init_containers.is_empty() {
        // An app container that exists (an earlier agent started it) means
        // the pod was initialized: its init containers are not run again.
        adopt(ctx, &spec, &mut state.tracks).await;
        state.initialized = state.tracks.iter().any(|t| t.shown.ever_started);
    }
    let mut wake: Option<Instant> = None;
    let mut earlier_done = true;
    let config = &mut state.config;
    let hooks = &state.hooks;
    for (container, track) in spec
        .init_containers
        .iter()
        .zip(state.init_tracks.iter_mut())
    {
        let step = init_order::step(track.role, state.initialized, earlier_done);
        let own_policy = policy.for_container(track.role, finished);
        if step != InitStep::Wait {
            // A finished pod's sidecars are stopped, not started.
            let may_start = step == InitStep::Run && !(finished && track.role == Role::Sidecar);
            let next = reconcile_container(
                ctx, &sandbox, container, track, own_policy, may_start, config, hooks,
            );
            if let Some(at) = next.await {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        let view = track.view(container, own_policy);
        let progress =
            init_order::progress(track.role, &view.state, view.started_up, view.will_restart);
        if progress != InitProgress::Done {
            earlier_done = false;
        }
    }
    if earlier_done {
        state.initialized = true;
    }
    if state.initialized {
        for (container, track) in spec.containers.iter().zip(state.tracks.iter_mut()) {
            let next =
                reconcile_container(ctx, &sandbox, container, track, policy, true, config, hooks);
            if let Some(at) = next.await {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
    }
    if state.finished(&spec) {
        if let Some(at) = stop_sidecars(ctx, pod, &spec, &mut state.init_tracks).await {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    wake
}

/// Reads back, once, the app containers an earlier agent left, so that a
/// pod it had initialized is not initialized again.
async fn adopt<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    spec: &v1::PodSpec,
    tracks: &mut [Track],
) {
    let now = Instant::now();
    for (container, track) in spec.containers.iter().zip(tracks.iter_mut()) {
        if track.synced {
            continue;
        }
        if let Ok(record) = ctx.runtime.inspect(&track.id).await {
            track.sync(record.as_ref(), container, now);
        }
    }
}

/// Stops the running sidecars of a pod that has finished, the last one
/// first, each with its preStop hook and SIGTERM, then SIGKILL once the
/// pod's grace period is over; returns when to look again.
async fn stop_sidecars<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    spec: &v1::PodSpec,
    tracks: &mut [Track],
) -> Option<Instant> {
    let grace = spec
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    let now = Instant::now();
    let running = |t: &&mut Track| {
        t.role == Role::Sidecar
            && (matches!(t.shown.state, CState::Running { .. }) || t.post_start_pending())
    };
    // The last one started goes first; the one before it once it is gone.
    let track = tracks.iter_mut().rev().find(running)?;
    match track.run.kill_at {
        None => {
            let meta = pod.metadata.clone().unwrap_or_default();
            let message = format!("Stopping container {}", track.name);
            ctx.events
                .pod(&meta, &track.name, EventKind::Normal, "Killing", message);
            let mut left = grace;
            if let Some(c) = spec.init_containers.iter().find(|c| c.name == track.name) {
                let target = hook_target(sandbox_setup::netns_of(ctx, pod), pod, c);
                let runtime = ctx.runtime.as_ref();
                left = teardown::run_pre_stop(runtime, &ctx.events, &meta, &target, grace).await;
            }
            if let Err(e) = ctx.runtime.signal(&track.id, 15).await {
                tracing::warn!(container = %track.id, error = %e, "cannot stop sidecar");
            }
            let at = Instant::now() + left;
            track.run.kill_at = Some(at);
            Some(at)
        }
        Some(at) if now >= at => {
            if let Err(e) = ctx.runtime.signal(&track.id, 9).await {
                tracing::warn!(container = %track.id, error = %e, "cannot kill sidecar");
            }
            Some(now + SIDECAR_KILL_RECHECK)
        }
        Some(at) => Some(at),
    }
}

/// One container: observe it (the outcome of its postStart hook, the
/// probes that are due), decide what comes next under `policy`, do it
/// (starting nothing unless `may_start`); returns when to look again.
#[allow(clippy::too_many_arguments)]
async fn reconcile_container<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    track: &mut Track,
    policy: RestartPolicy,
    may_start: bool,
    config: &mut PodConfig,
    hooks: &Arc<Notify>,
) -> Option<Instant> {
    let pod = &sandbox.pod;
    let spec = pod.spec.as_ref();
    let now = Instant::now();
    let mut finished_at = String::new();
    let task = match ctx.runtime.inspect(&track.id).await {
        Ok(record) => {
            track.sync(record.as_ref(), container, now);
            match record.map(|r| r.state) {
                Some(TaskState::Running { .. }) => {
                    if let Some(Err(message)) = track.post_start_outcome() {
                        fail_post_start(ctx, sandbox, container, track, message).await;
                        return Some(Instant::now());
                    }
                    track.note_running(now);
                    let runtime = ctx.runtime.as_ref();
                    let address = PodAddress::of(sandbox.netns.clone(), pod);
                    let probe = track.probe(runtime, container, &address, now);
                    let probe_failed = probe.await.is_some();
                    let failures = track.take_probe_failures();
                    if !failures.is_empty() {
                        let meta = pod.metadata.clone().unwrap_or_default();
                        for failure in failures {
                            let kind = EventKind::Warning;
                            ctx.events
                                .pod(&meta, &container.name, kind, "Unhealthy", failure);
                        }
                    }
                    Task::Running { probe_failed }
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
            Next::Start { .. } | Next::RetryStart { .. } | Next::BackOff { .. } if !may_start => {
                return None
            }
            Next::LookAgain(after) => return Some(now + after),
            Next::KeepRunning => return track.next_probe(),
            Next::Kill => {
                let meta = pod.metadata.clone().unwrap_or_default();
                let probe = track.run.failed_probe.unwrap_or(ProbeKind::Liveness);
                let message = format!(
                    "Container {} failed {} probe, will be restarted",
                    container.name,
                    probe.name()
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
                let target = hook_target(sandbox.netns.clone(), pod, container);
                stop_with_hook(ctx.runtime.as_ref(), &ctx.events, &meta, &target, grace).await;
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
                let run = track.shown.restarts;
                let message = termination::message(&ctx.layout, pod, container, run, code);
                let finished_at = std::mem::take(&mut finished_at);
                track.record_exit(code, message, finished_at, policy, now);
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
                return start::start(ctx, sandbox, container, track, restarts, config, hooks).await;
            }
        }
    }
}

/// A postStart hook failed: told as the kubelet tells it
/// (`FailedPostStartHook`), and the container stopped as the kubelet's
/// killContainer does (its preStop hook, then the pod's grace period);
/// its exit is then handled like any other.
async fn fail_post_start<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    sandbox: &PreparedSandbox,
    container: &v1::Container,
    track: &mut Track,
    message: String,
) {
    let pod = &sandbox.pod;
    let meta = pod.metadata.clone().unwrap_or_default();
    tracing::info!(container = %track.id, %message, "postStart hook failed; stopping container");
    let name = &container.name;
    ctx.events.pod(
        &meta,
        name,
        EventKind::Warning,
        "FailedPostStartHook",
        message,
    );
    let stopping = format!("Stopping container {name}: its postStart hook failed");
    ctx.events
        .pod(&meta, name, EventKind::Normal, "Killing", stopping);
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    let target = hook_target(sandbox.netns.clone(), pod, container);
    stop_with_hook(ctx.runtime.as_ref(), &ctx.events, &meta, &target, grace).await;
    track.disarm_probes();
}

/// The exit code the master last heard for the container, if it had ended.
fn last_reported_code(pod: &v1::Pod, container: &str) -> Option<u32> {
    let status = pod.status.as_ref()?;
    let c = status
        .container_statuses
        .iter()
        .chain(&status.init_container_statuses)
        .find(|c| c.name == container)?;
    let terminated = c.state.as_ref()?.terminated.as_ref()?;
    terminated.exit_code.map(|code| code as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use skiff_proto::v1;

    use crate::pods::sandbox::recording::RecordingSandbox;
    use crate::pods::worker::harness::{
        container, init_container, init_running, init_terminated, init_waiting, pod, running,
        spawn_worker, spawn_worker_with, waiting_message, waiting_reason,
    };
    use crate::runtime::containers::{LABEL_RESTARTS, LABEL_STARTED_AT};
    use crate::runtime::recording::{Call, RecordingRuntime};

    /// The test pod with these init containers before `main`.
    fn pod_with_inits(policy: &str, inits: Vec<v1::Container>) -> v1::Pod {
        let mut pod = pod(policy);
        pod.spec.as_mut().unwrap().init_containers = inits;
        pod
    }

    /// The status of the pod's `condition`.
    fn condition(s: &v1::PodStatus, condition: &str) -> String {
        let found = s.conditions.iter().find(|c| c.r#type == condition);
        found.map(|c| c.status.clone()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn init_containers_run_one_after_the_other_before_the_app() {
        let inits = vec![
            init_container("migrate", false),
            init_container("seed", false),
        ];
        let mut h = spawn_worker(pod_with_inits("Always", inits), RecordingRuntime::default());
        let s = h
            .until("migrate running", |s| init_running(s, "migrate"))
            .await;
        assert_eq!(s.phase, "Pending");
        assert_eq!(condition(&s, "Initialized"), "False");
        assert_eq!(init_waiting(&s, "seed"), "PodInitializing");
        assert_eq!(waiting_reason(&s), "PodInitializing");
        assert_eq!(h.started(), ["migrate"], "one at a time");
        h.exit_of("migrate", 0).await;
        let s = h.until("seed running", |s| init_running(s, "seed")).await;
        let migrated = init_terminated(&s, "migrate").expect("migrate ended");
        assert_eq!(
            (migrated.exit_code, migrated.reason.as_str()),
            (Some(0), "Completed")
        );
        assert_eq!(h.started(), ["migrate", "seed"]);
        h.exit_of("seed", 0).await;
        let s = h.until("Running", running).await;
        assert_eq!(condition(&s, "Initialized"), "True");
        assert_eq!(h.started(), ["migrate", "seed", "main"]);
        // The app's crash restarts the app alone.
        h.exit(1).await;
        h.until("restart 1", |s| {
            running(s) && container(s).restart_count == 1
        })
        .await;
        assert_eq!(h.started(), ["migrate", "seed", "main", "main"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_init_container_crash_loops_and_holds_the_app() {
        let inits = vec![init_container("migrate", false)];
        let mut h = spawn_worker(pod_with_inits("Always", inits), RecordingRuntime::default());
        h.until("migrate running", |s| init_running(s, "migrate"))
            .await;
        h.exit_of("migrate", 1).await;
        let run = |n: i32| {
            move |s: &v1::PodStatus| {
                init_running(s, "migrate") && s.init_container_statuses[0].restart_count == n
            }
        };
        h.until("migrate again at once", run(1)).await;
        h.exit_of("migrate", 1).await;
        let s = h
            .until("Init:CrashLoopBackOff", |s| {
                init_waiting(s, "migrate") == "CrashLoopBackOff"
            })
            .await;
        assert_eq!(s.phase, "Pending");
        assert_eq!(condition(&s, "Initialized"), "False");
        assert_eq!(waiting_reason(&s), "PodInitializing");
        assert_eq!(h.started(), ["migrate", "migrate"], "the app never starts");
        // Once it succeeds, the app starts.
        h.until("migrate after its back-off", run(2)).await;
        h.exit_of("migrate", 0).await;
        h.until("Running", running).await;
        assert_eq!(h.started(), ["migrate", "migrate", "migrate", "main"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_init_container_fails_a_pod_that_never_restarts() {
        let inits = vec![init_container("migrate", false)];
        let mut h = spawn_worker(pod_with_inits("Never", inits), RecordingRuntime::default());
        h.until("migrate running", |s| init_running(s, "migrate"))
            .await;
        h.exit_of("migrate", 3).await;
        let s = h.until("Failed", |s| s.phase == "Failed").await;
        let failed = init_terminated(&s, "migrate").expect("migrate ended");
        assert_eq!(
            (failed.exit_code, failed.reason.as_str()),
            (Some(3), "Error")
        );
        assert_eq!(waiting_reason(&s), "PodInitializing");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            h.started(),
            ["migrate"],
            "neither run again nor the app started"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sidecars_start_in_order_run_beside_the_app_and_stop_after_it() {
        let inits = vec![
            init_container("proxy", true),
            init_container("migrate", false),
        ];
        let mut h = spawn_worker(pod_with_inits("Never", inits), RecordingRuntime::default());
        // The sidecar is not waited for to end: the next one starts.
        h.until("migrate running", |s| init_running(s, "migrate"))
            .await;
        assert_eq!(h.started(), ["proxy", "migrate"]);
        h.exit_of("migrate", 0).await;
        let s = h.until("Running", running).await;
        assert!(init_running(&s, "proxy"), "kept running beside the app");
        // A crashing sidecar is restarted, even in a Never pod.
        h.exit_of("proxy", 1).await;
        h.until("proxy again", |s| {
            init_running(s, "proxy") && s.init_container_statuses[0].restart_count == 1
        })
        .await;
        // The app ends: the pod is done, and its sidecar is stopped.
        h.exit(0).await;
        let s = h
            .until("Succeeded, proxy stopped", |s| {
                s.phase == "Succeeded" && init_terminated(s, "proxy").is_some()
            })
            .await;
        assert_eq!(init_terminated(&s, "proxy").unwrap().exit_code, Some(143));
        let calls = h.runtime.calls();
        let stop = Call::Signal {
            id: "uid1_proxy".into(),
            signal: 15,
        };
        assert!(calls.contains(&stop), "{calls:?}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let proxies = h.started().iter().filter(|c| *c == "proxy").count();
        assert_eq!(proxies, 2, "a finished pod's sidecar is not restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_pod_does_not_run_its_init_containers_again() {
        let runtime = RecordingRuntime::default();
        runtime.add_running("uid1_main", BTreeMap::new());
        let inits = vec![
            init_container("migrate", false),
            init_container("proxy", true),
        ];
        let mut h = spawn_worker(pod_with_inits("Always", inits), runtime);
        let s = h.until("Running", running).await;
        assert_eq!(condition(&s, "Initialized"), "True");
        // The sidecar is kept running; the init container is not run.
        assert!(init_running(&s, "proxy"), "{s:?}");
        assert_eq!(h.started(), ["proxy"]);
    }

    #[tokio::test(start_paused = true)]
    async fn run_as_non_root_keeps_a_root_image_from_starting() {
        let mut pod = pod("Always");
        pod.spec.as_mut().unwrap().security_context = Some(Box::new(v1::PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        }));
        let mut h = spawn_worker(pod, RecordingRuntime::default());
        let s = h
            .until("CreateContainerConfigError", |s| {
                waiting_reason(s) == "CreateContainerConfigError"
            })
            .await;
        assert_eq!(
            waiting_message(&s),
            r#"container has runAsNonRoot and image will run as root (pod: "web_default(uid1)", container: main)"#
        );
        assert!(h.started().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_images_user_name_and_the_pods_groups_reach_the_process() {
        let runtime = RecordingRuntime::default();
        runtime.set_image_user("app");
        runtime.set_image_accounts(
            "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
            "app:x:1000:\nstaff:x:50:app\n",
        );
        let mut pod = pod("Always");
        let spec = pod.spec.as_mut().unwrap();
        spec.security_context = Some(Box::new(v1::PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(2000),
            supplemental_groups: vec![4000],
            ..Default::default()
        }));
        spec.containers[0].security_context = Some(Box::new(v1::SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(v1::Capabilities {
                add: vec![],
                drop: vec!["ALL".into()],
            }),
            ..Default::default()
        }));
        let mut h = spawn_worker(pod, runtime);
        h.until("Running", running).await;
        let spec = h.runtime.started_spec("uid1_main").expect("a spec");
        let process = &spec["process"];
        assert_eq!(
            process["user"],
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 50, 4000, 2000]})
        );
        assert_eq!(process["capabilities"]["bounding"], serde_json::json!([]));
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(spec["root"]["readonly"], true);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_run_shows_its_termination_message() {
        let mut pod = pod("Never");
        let main = &mut pod.spec.as_mut().unwrap().containers[0];
        main.termination_message_path = "/dev/termination-log".into();
        let mut h = spawn_worker(pod, RecordingRuntime::default());
        h.until("Running", running).await;
        let spec = h.runtime.started_spec("uid1_main").expect("a spec");
        let mounts = spec["mounts"].as_array().unwrap();
        let file = h.pod_dir().join("main").join("termination-log");
        let mount = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/termination-log")
            .expect("the message file is mounted");
        assert_eq!(mount["source"], file.display().to_string());
        std::fs::write(&file, "migration 7 failed").unwrap();
        h.exit(1).await;
        let s = h.until("Failed", |s| s.phase == "Failed").await;
        let terminated = container(&s)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(terminated.message, "migration 7 failed");
    }

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

    /// An exec probe running `command` every second, failing after
    /// `failures` failures in a row.
    fn exec_probe(command: &str, failures: i32) -> Option<Box<v1::Probe>> {
        Some(Box::new(v1::Probe {
            exec: Some(v1::ExecAction {
                command: vec![command.into()],
            }),
            period_seconds: 1,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: failures,
            ..Default::default()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_startup_probe_holds_the_other_probes_and_restarts_a_container_that_never_starts() {
        let runtime = RecordingRuntime::default();
        runtime.script_exec("started?", 1, Duration::ZERO);
        let mut pod = pod("Always");
        let main = &mut pod.spec.as_mut().unwrap().containers[0];
        main.startup_probe = exec_probe("started?", 3);
        main.liveness_probe = exec_probe("alive?", 1);
        main.readiness_probe = exec_probe("ready?", 1);
        let mut h = spawn_worker(pod, runtime);
        let s = h.until("Running", running).await;
        assert_eq!(container(&s).started, Some(false));
        assert!(!container(&s).ready);
        // Three failures in a row: killed and restarted, as a failed
        // liveness probe does it.
        h.until("restart 1", |s| container(s).restart_count == 1)
            .await;
        let probed: Vec<Vec<String>> = h
            .runtime
            .exec_commands()
            .into_iter()
            .map(|(_, command)| command)
            .collect();
        assert!(probed.len() >= 3, "{probed:?}");
        assert!(
            probed.iter().all(|c| c == &["started?"]),
            "neither liveness nor readiness before startup: {probed:?}"
        );
        let events = h.events_sent();
        let unhealthy = events.iter().filter(|(r, _)| r == "Unhealthy").count();
        assert!(unhealthy >= 3, "{events:?}");
        let killing = events
            .iter()
            .find(|(r, _)| r == "Killing")
            .expect("Killing");
        assert_eq!(
            killing.1,
            "Container main failed startup probe, will be restarted"
        );
        // It starts: started, then probed for readiness and liveness.
        h.runtime.script_exec("started?", 0, Duration::ZERO);
        let s = h
            .until("started and ready", |s| {
                container(s).started == Some(true) && container(s).ready
            })
            .await;
        assert_eq!(container(&s).restart_count, 1);
        let probed: Vec<Vec<String>> = h
            .runtime
            .exec_commands()
            .into_iter()
            .map(|(_, command)| command)
            .collect();
        assert!(probed.iter().any(|c| c == &["ready?"]), "{probed:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let probed = h.runtime.exec_commands();
        assert!(probed.iter().any(|(_, c)| c == &["alive?"]), "{probed:?}");
        let started = probed.iter().filter(|(_, c)| c == &["started?"]).count();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = h.runtime.exec_commands();
        let started_again = again.iter().filter(|(_, c)| c == &["started?"]).count();
        assert_eq!(started, started_again, "no startup probe once started");
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
