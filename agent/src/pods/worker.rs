//! One pod worker per pod: it alone touches that pod's containers, one
//! reconcile at a time. Each pass compares the pod spec with what
//! containerd has, starts what is missing, applies the restart policy to
//! what exited (restarting at once the first time, then after 10 s, 20 s, …
//! up to 5 minutes, shown as CrashLoopBackOff), runs due probes and
//! reports the pod's status when it changed. A worker that finds a
//! container already running adopts it: same process, same restart count.
//!
//! Before any container, each pass makes sure of the pod's sandbox: its
//! network namespace and its place in the pod network. While either
//! fails, containers not yet started wait as `CreatePodSandboxError` and
//! the pass is retried after 5 s.
//!
//! When the pod goes away the worker stops its containers (SIGTERM, the
//! grace period, SIGKILL) and removes them with their snapshots, unwires
//! the pod from the network, and removes its network namespace and its log
//! files; a step that fails is logged and the rest still done.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::master_link::StatusReport;
use crate::runtime::containers::{
    LABEL_CONTAINER, LABEL_IMAGE_ID, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
    LABEL_RESTARTS, LABEL_STARTED_AT,
};
use crate::runtime::images::PullPolicy;
use crate::runtime::spec::{self, SpecInput};
use crate::runtime::{ContainerRuntime, RuntimeEvent, StartRequest, TaskState};

use super::backoff::Backoff;
use super::layout::PodLayout;
use super::probes::{self, ProbeState};
use super::sandbox::PodSandbox;
use super::status::{self, CState, ContainerView};

/// What every worker shares.
pub struct WorkerContext<R, S> {
    pub runtime: Arc<R>,
    /// Network namespaces, the pod network and cgroup OOM counters.
    pub sandbox: Arc<S>,
    pub layout: Arc<PodLayout>,
    pub reports: mpsc::UnboundedSender<StatusReport>,
    pub host_ip: String,
    pub metrics: crate::metrics::AgentMetrics,
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
        }
    }
}

/// Longest a worker waits before looking at its containers again.
const RESYNC: Duration = Duration::from_secs(10);

/// How long a container must run before its crash backoff starts over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// One container of the pod, as the worker tracks it.
#[derive(Debug)]
struct Track {
    name: String,
    id: String,
    /// Labels read back once: adoption after an agent restart.
    synced: bool,
    ever_started: bool,
    restarts: i32,
    state: CState,
    last: Option<CState>,
    exit_recorded: bool,
    oom: bool,
    run_started: Option<Instant>,
    restart_at: Option<Instant>,
    crash_backoff: Backoff,
    /// Retry pacing for image pulls and start failures.
    error_backoff: Backoff,
    retry_at: Option<Instant>,
    image_id: String,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    ready: bool,
}

impl Track {
    fn new(pod_uid: &str, name: &str) -> Track {
        Track {
            name: name.to_string(),
            id: container_id(pod_uid, name),
            synced: false,
            ever_started: false,
            restarts: 0,
            state: CState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            exit_recorded: false,
            oom: false,
            run_started: None,
            restart_at: None,
            crash_backoff: Backoff::crash_loop(),
            error_backoff: Backoff::errors(),
            retry_at: None,
            image_id: String::new(),
            liveness: None,
            readiness: None,
            ready: false,
        }
    }

    fn view(&self, container: &v1::Container, policy: &str) -> ContainerView {
        ContainerView {
            name: self.name.clone(),
            id: self.id.clone(),
            image: container.image.clone(),
            image_id: self.image_id.clone(),
            state: self.state.clone(),
            last: self.last.clone(),
            ready: self.ready,
            restarts: self.restarts,
            will_restart: matches!(&self.state, CState::Terminated { code, .. } if should_restart(policy, *code))
                || matches!(&self.state, CState::Waiting { reason, .. } if reason == "CrashLoopBackOff"),
            ever_started: self.ever_started,
        }
    }
}

/// containerd's ID for a pod's container.
pub fn container_id(pod_uid: &str, container: &str) -> String {
    format!("{pod_uid}_{container}")
}

/// Whether an exit with `code` is followed by a restart.
pub fn should_restart(policy: &str, code: u32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Runs the worker for one pod until the pod is deleted (its containers
/// are then removed) or the agent shuts down (they keep running).
pub async fn run<R: ContainerRuntime, S: PodSandbox>(
    ctx: WorkerContext<R, S>,
    mut desired: watch::Receiver<Option<v1::Pod>>,
    mut events: mpsc::Receiver<RuntimeEvent>,
    shutdown: CancellationToken,
) {
    let mut tracks: Vec<Track> = Vec::new();
    let mut last_report: Option<v1::PodStatus> = None;
    let mut start_time = String::new();
    let mut last_pod: Option<v1::Pod> = None;
    let mut images = ctx.runtime.images_changed();
    let mut pod_ip = String::new();
    loop {
        let pod = desired.borrow_and_update().clone();
        if pod.is_some() {
            last_pod = pod.clone();
        }
        let deleting = pod.as_ref().is_none_or(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| !m.deletion_timestamp.is_empty())
        });
        if deleting {
            if let Some(pod) = last_pod {
                teardown(&ctx, &pod).await;
            }
            return;
        }
        let Some(pod) = pod else { return };
        let meta = pod.metadata.clone().unwrap_or_default();
        if start_time.is_empty() {
            start_time = pod
                .status
                .as_ref()
                .map(|s| s.start_time.clone())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(now_rfc3339);
        }
        let wake = reconcile(&ctx, &pod, &mut tracks, &mut pod_ip).await;
        let spec = pod.spec.clone().unwrap_or_default();
        let views: Vec<ContainerView> = spec
            .containers
            .iter()
            .zip(&tracks)
            .map(|(c, t)| t.view(c, &spec.restart_policy))
            .collect();
        let status = status::pod_status(
            &pod,
            &views,
            &ctx.host_ip,
            &pod_ip,
            &start_time,
            last_report.as_ref(),
        );
        if last_report.as_ref() != Some(&status) {
            let _ = ctx.reports.send(StatusReport {
                uid: meta.uid.clone(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                status: status.clone(),
            });
            last_report = Some(status);
        }
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
                    if let Some(t) = tracks.iter_mut().find(|t| t.id == container_id) {
                        t.oom = true;
                    }
                }
                Some(RuntimeEvent::Exit { .. }) => {}
                None => return,
            },
            _ = images.changed() => {
                // An image arrived: containers waiting for one try again now.
                for t in tracks.iter_mut() {
                    if matches!(&t.state, CState::Waiting { reason, .. } if reason.contains("Image")) {
                        t.retry_at = None;
                    }
                }
            }
            _ = sleep => {}
        }
    }
}

/// One pass over the pod's containers; returns when to look again.
async fn reconcile<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    tracks: &mut Vec<Track>,
    pod_ip: &mut String,
) -> Option<Instant> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if tracks.len() != spec.containers.len() {
        *tracks = spec
            .containers
            .iter()
            .map(|c| Track::new(&meta.uid, &c.name))
            .collect();
    }
    let netns = ctx.layout.netns(&meta.uid);
    if let Err(e) = ctx.sandbox.ensure_netns(&netns).await {
        for t in tracks.iter_mut().filter(|t| !t.ever_started) {
            t.state = CState::Waiting {
                reason: "CreatePodSandboxError".into(),
                message: e.to_string(),
            };
        }
        return Some(Instant::now() + Duration::from_secs(5));
    }
    match ctx.sandbox.attach(pod, &netns).await {
        Ok(Some(ip)) => *pod_ip = ip.to_string(),
        // No pod network on this node: loopback only, no address.
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(pod = %meta.name, error = %e, "cannot wire the pod into the network");
            for t in tracks.iter_mut().filter(|t| !t.ever_started) {
                t.state = CState::Waiting {
                    reason: "CreatePodSandboxError".into(),
                    message: e.to_string(),
                };
            }
            return Some(Instant::now() + Duration::from_secs(5));
        }
    }
    // Containers see the pod's address in /etc/hosts.
    let mut pod = pod.clone();
    if !pod_ip.is_empty() {
        pod.status.get_or_insert_with(Default::default).pod_ip = pod_ip.clone();
    }
    let pod = &pod;
    let mut wake: Option<Instant> = None;
    let mut at = |t: Instant| {
        wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
    };
    for (container, track) in spec.containers.iter().zip(tracks.iter_mut()) {
        if let Some(t) = reconcile_container(ctx, pod, container, track, &netns).await {
            at(t);
        }
    }
    wake
}

async fn reconcile_container<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    container: &v1::Container,
    track: &mut Track,
    netns: &Path,
) -> Option<Instant> {
    let policy = pod
        .spec
        .as_ref()
        .map(|s| s.restart_policy.clone())
        .unwrap_or_default();
    let now = Instant::now();
    let record = match ctx.runtime.inspect(&track.id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(container = %track.id, error = %e, "cannot inspect container");
            return Some(now + Duration::from_secs(2));
        }
    };
    if let Some(r) = &record {
        if !track.synced {
            // Adopting what an earlier agent left: its count and start time.
            track.restarts = r
                .labels
                .get(LABEL_RESTARTS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            track.image_id = r.labels.get(LABEL_IMAGE_ID).cloned().unwrap_or_default();
            track.ever_started = true;
            if let TaskState::Running { pid } = &r.state {
                tracing::info!(container = %track.id, pid, restarts = track.restarts, "adopted running container");
                track.state = CState::Running {
                    started_at: r.labels.get(LABEL_STARTED_AT).cloned().unwrap_or_default(),
                };
                track.run_started = Some(now);
                arm_probes(track, container, now);
            }
        }
    }
    track.synced = true;
    match record.map(|r| r.state) {
        Some(TaskState::Running { .. }) => {
            if !matches!(track.state, CState::Running { .. }) {
                track.state = CState::Running {
                    started_at: now_rfc3339(),
                };
            }
            if track
                .run_started
                .is_some_and(|s| now.duration_since(s) >= BACKOFF_RESET_AFTER)
            {
                track.crash_backoff.reset();
            }
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds);
            run_probes(ctx, grace, container, track, netns, now).await
        }
        Some(TaskState::Exited { code, finished_at }) => {
            handle_exit(
                ctx,
                pod,
                container,
                track,
                &policy,
                code,
                finished_at,
                netns,
                now,
            )
            .await
        }
        Some(TaskState::NoTask) | None if track.ever_started && !track.exit_recorded => {
            // The task vanished (a host reboot, or containerd lost it): an
            // exit with the code last reported, if any, and the restart
            // policy decides, so a finished Never/OnFailure pod stays done.
            let code = last_reported_code(pod, &track.name).unwrap_or(255);
            handle_exit(
                ctx,
                pod,
                container,
                track,
                &policy,
                code,
                String::new(),
                netns,
                now,
            )
            .await
        }
        Some(TaskState::NoTask) | None if track.ever_started && track.exit_recorded => {
            // Restart already decided; the container is being recreated.
            handle_exit(
                ctx,
                pod,
                container,
                track,
                &policy,
                last_code(track),
                String::new(),
                netns,
                now,
            )
            .await
        }
        Some(TaskState::NoTask) | None => {
            if let Some(retry) = track.retry_at.filter(|r| *r > now) {
                return Some(retry);
            }
            let restarts = if track.ever_started {
                track.restarts + 1
            } else {
                0
            };
            start(ctx, pod, container, track, restarts, netns).await
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

fn last_code(track: &Track) -> u32 {
    match (&track.state, &track.last) {
        (CState::Terminated { code, .. }, _) | (_, Some(CState::Terminated { code, .. })) => *code,
        _ => 0,
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle_exit<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    container: &v1::Container,
    track: &mut Track,
    policy: &str,
    code: u32,
    finished_at: String,
    netns: &Path,
    now: Instant,
) -> Option<Instant> {
    if !track.exit_recorded {
        let started_at = match &track.state {
            CState::Running { started_at } => started_at.clone(),
            _ => String::new(),
        };
        if code == 137 && !track.oom {
            let uid = pod.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or("");
            track.oom = ctx
                .sandbox
                .oom_killed(&format!("/skiff/{uid}/{}", container.name));
        }
        let reason = if track.oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        tracing::info!(container = %track.id, code, reason, "container exited");
        track.state = CState::Terminated {
            code,
            reason: reason.into(),
            started_at,
            finished_at: if finished_at.is_empty() {
                now_rfc3339()
            } else {
                finished_at
            },
        };
        track.exit_recorded = true;
        track.ready = false;
        track.liveness = None;
        track.readiness = None;
        if track
            .run_started
            .is_some_and(|s| now.duration_since(s) >= BACKOFF_RESET_AFTER)
        {
            track.crash_backoff.reset();
        }
        if should_restart(policy, code) {
            track.restart_at = Some(now + track.crash_backoff.next_delay());
        }
    }
    if !should_restart(policy, code) {
        return None;
    }
    let restart_at = track.restart_at.unwrap_or(now);
    if restart_at > now {
        if let CState::Terminated { .. } = &track.state {
            track.last = Some(track.state.clone());
        }
        let wait = restart_at.duration_since(now);
        track.state = CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={} pod={}",
                track.crash_backoff.last_delay().as_secs(),
                track.name,
                pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
            ),
        };
        return Some(now + wait);
    }
    if let CState::Terminated { .. } = &track.state {
        track.last = Some(track.state.clone());
    }
    // A restart whose start failed waits for its retry time.
    if let Some(retry) = track.retry_at.filter(|r| *r > now) {
        return Some(retry);
    }
    let restarts = track.restarts + 1;
    start(ctx, pod, container, track, restarts, netns).await
}

fn arm_probes(track: &mut Track, container: &v1::Container, now: Instant) {
    track.liveness = container
        .liveness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now));
    track.readiness = container
        .readiness_probe
        .as_ref()
        .map(|p| ProbeState::new(p, now));
    track.ready = track.readiness.is_none();
}

async fn start<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    container: &v1::Container,
    track: &mut Track,
    restarts: i32,
    netns: &Path,
) -> Option<Instant> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let now = Instant::now();
    let policy = PullPolicy::for_container(&container.image_pull_policy, &container.image);
    let image = match ctx.runtime.ensure_image(&container.image, policy).await {
        Ok(i) => {
            ctx.metrics.image_pulls.inc(&["ok"]);
            i
        }
        Err(e) => {
            ctx.metrics.image_pulls.inc(&["error"]);
            tracing::warn!(container = %track.id, image = %container.image, error = %e, "image not available");
            let reason = if !track.error_backoff.started() {
                "ErrImagePull"
            } else {
                "ImagePullBackOff"
            };
            if !track.ever_started || !matches!(track.state, CState::Waiting { .. }) {
                track.state = CState::Waiting {
                    reason: if policy == PullPolicy::Never {
                        "ErrImageNeverPull".into()
                    } else {
                        reason.into()
                    },
                    message: e.to_string(),
                };
            }
            let retry = now + track.error_backoff.next_delay().max(Duration::from_secs(1));
            track.retry_at = Some(retry);
            return Some(retry);
        }
    };
    let hostname = if meta.name.len() > 63 {
        &meta.name[..63]
    } else {
        &meta.name
    };
    let etc_files = match ctx.layout.write_etc_files(pod).await {
        Ok(f) => f,
        Err(e) => {
            track.state = CState::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: e.to_string(),
            };
            return Some(now + Duration::from_secs(10));
        }
    };
    // Read back by `oom_killed` when the container exits with SIGKILL.
    let cgroups_path = format!("/skiff/{}/{}", meta.uid, container.name);
    let netns_str = netns.display().to_string();
    let runtime_spec = match spec::build(&SpecInput {
        container,
        image: &image.config,
        hostname,
        netns_path: &netns_str,
        cgroups_path: &cgroups_path,
        etc_files: &etc_files,
    }) {
        Ok(s) => s,
        Err(e) => {
            track.state = CState::Waiting {
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
            let labels = [
                meta.namespace.as_str(),
                meta.name.as_str(),
                container.name.as_str(),
            ];
            ctx.metrics.container_starts.inc(&labels);
            if restarts > track.restarts || (restarts > 0 && !track.ever_started) {
                ctx.metrics.container_restarts.inc(&labels);
            }
            track.ever_started = true;
            track.restarts = restarts;
            track.state = CState::Running { started_at };
            track.exit_recorded = false;
            track.oom = false;
            track.run_started = Some(now);
            track.restart_at = None;
            track.retry_at = None;
            track.error_backoff.reset();
            track.image_id = image.id;
            arm_probes(track, container, now);
            ctx.layout.prune_logs(pod, &container.name, restarts).await;
            track
                .liveness
                .as_ref()
                .map(|p| p.next_at)
                .into_iter()
                .chain(track.readiness.as_ref().map(|p| p.next_at))
                .min()
        }
        Err(e) => {
            tracing::warn!(container = %track.id, error = %e, "container failed to start");
            track.state = CState::Waiting {
                reason: "RunContainerError".into(),
                message: e.to_string(),
            };
            let retry = now + track.error_backoff.next_delay().max(Duration::from_secs(1));
            track.retry_at = Some(retry);
            Some(retry)
        }
    }
}

async fn run_probes<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod_grace: Option<i64>,
    container: &v1::Container,
    track: &mut Track,
    netns: &Path,
    now: Instant,
) -> Option<Instant> {
    let id = track.id.clone();
    let runtime = ctx.runtime.as_ref();
    if let Some(probe) = track.readiness.as_mut() {
        if let Some(verdict) = probes::run_if_due(runtime, &id, container, netns, probe, now).await
        {
            tracing::info!(container = %id, ready = verdict, "readiness changed");
            track.ready = verdict;
        }
    }
    let mut kill = false;
    if let Some(probe) = track.liveness.as_mut() {
        if probes::run_if_due(runtime, &id, container, netns, probe, now).await == Some(false) {
            tracing::info!(container = %id, reason = %probe.last_error, "liveness probe failed; restarting container");
            kill = true;
        }
    }
    if kill {
        // The probe's own grace period, else the pod's.
        let grace = track
            .liveness
            .as_ref()
            .and_then(|p| p.probe.termination_grace_period_seconds)
            .or(pod_grace)
            .unwrap_or(30);
        stop_container(
            ctx.runtime.as_ref(),
            &track.id,
            Duration::from_secs(grace.max(0) as u64),
        )
        .await;
        track.liveness = None;
        track.readiness = None;
        track.ready = false;
        return Some(Instant::now());
    }
    track
        .liveness
        .as_ref()
        .map(|p| p.next_at)
        .into_iter()
        .chain(track.readiness.as_ref().map(|p| p.next_at))
        .min()
}

/// SIGTERM, up to `grace` for the container to exit, then SIGKILL.
pub async fn stop_container<R: ContainerRuntime>(runtime: &R, id: &str, grace: Duration) {
    if runtime.signal(id, 15).await.is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match runtime.inspect(id).await {
            Ok(Some(r)) if matches!(r.state, TaskState::Running { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => return,
        }
    }
    let _ = runtime.signal(id, 9).await;
}

/// Stops and removes everything of a deleted pod.
async fn teardown<R: ContainerRuntime, S: PodSandbox>(ctx: &WorkerContext<R, S>, pod: &v1::Pod) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall, SandboxOp};
    use crate::runtime::recording::{Call, RecordingRuntime};

    struct Harness {
        runtime: Arc<RecordingRuntime>,
        sandbox: Arc<RecordingSandbox>,
        desired: watch::Sender<Option<v1::Pod>>,
        events: mpsc::Sender<RuntimeEvent>,
        reports: mpsc::UnboundedReceiver<StatusReport>,
        task: tokio::task::JoinHandle<()>,
        dir: tempfile::TempDir,
    }

    fn pod(policy: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "uid1".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                restart_policy: policy.into(),
                termination_grace_period_seconds: Some(1),
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: "busybox:1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn start(pod: v1::Pod, runtime: RecordingRuntime) -> Harness {
        start_with(pod, runtime, RecordingSandbox::default())
    }

    fn start_with(pod: v1::Pod, runtime: RecordingRuntime, sandbox: RecordingSandbox) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(runtime);
        let sandbox = Arc::new(sandbox);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let ctx = WorkerContext {
            runtime: runtime.clone(),
            sandbox: sandbox.clone(),
            layout: Arc::new(PodLayout::new(dir.path())),
            reports: reports_tx,
            host_ip: "10.0.0.1".into(),
            metrics: Default::default(),
        };
        let (desired, desired_rx) = watch::channel(Some(pod));
        let (events, events_rx) = mpsc::channel(8);
        let task = tokio::spawn(run(ctx, desired_rx, events_rx, CancellationToken::new()));
        Harness {
            runtime,
            sandbox,
            desired,
            events,
            reports,
            task,
            dir,
        }
    }

    impl Harness {
        /// Reports until one satisfies `check`.
        async fn until(
            &mut self,
            what: &str,
            check: impl Fn(&v1::PodStatus) -> bool,
        ) -> v1::PodStatus {
            let wait = async {
                loop {
                    let r = self.reports.recv().await.expect("worker ended");
                    if check(&r.status) {
                        return r.status;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(600), wait)
                .await
                .unwrap_or_else(|_| panic!("no report with {what}"))
        }

        /// Waits for the worker to end, as it does once its pod is gone.
        async fn ended(&mut self) {
            tokio::time::timeout(Duration::from_secs(600), &mut self.task)
                .await
                .expect("the worker did not end")
                .unwrap();
        }

        /// Where the worker keeps the test pod's files.
        fn pod_dir(&self) -> std::path::PathBuf {
            PodLayout::new(self.dir.path()).pod_dir(&pod("Always"))
        }

        async fn exit(&self, code: u32) {
            self.runtime.exit("uid1_main", code);
            self.events
                .send(RuntimeEvent::Exit {
                    container_id: "uid1_main".into(),
                })
                .await
                .unwrap();
        }

        fn starts(&self) -> Vec<String> {
            self.runtime
                .calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::Start { restarts, .. } => Some(restarts),
                    _ => None,
                })
                .collect()
        }
    }

    fn container(s: &v1::PodStatus) -> &v1::ContainerStatus {
        &s.container_statuses[0]
    }

    fn running(s: &v1::PodStatus) -> bool {
        s.phase == "Running"
            && container(s)
                .state
                .as_ref()
                .is_some_and(|st| st.running.is_some())
    }

    fn waiting_reason(s: &v1::PodStatus) -> String {
        container(s)
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .map(|w| w.reason.clone())
            .unwrap_or_default()
    }

    fn waiting_message(s: &v1::PodStatus) -> String {
        container(s)
            .state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .map(|w| w.message.clone())
            .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_pod_gets_a_netns_an_image_and_a_running_container() {
        let mut h = start(pod("Always"), RecordingRuntime::default());
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
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_restart_at_once_then_back_off() {
        let mut h = start(pod("Always"), RecordingRuntime::default());
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
        let mut h = start(pod("OnFailure"), RecordingRuntime::default());
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

        let mut h = start(pod("Never"), RecordingRuntime::default());
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
        let mut h = start(pod("Always"), runtime);
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
    async fn missing_images_and_failed_starts_are_retried() {
        let runtime = RecordingRuntime::default();
        runtime.hide_image("busybox:1");
        runtime.fail_starts(1);
        let mut h = start(pod("Always"), runtime);
        h.until("ErrImagePull", |s| waiting_reason(s) == "ErrImagePull")
            .await;
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
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_stops_and_removes_everything() {
        let mut h = start(pod("Always"), RecordingRuntime::default());
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
    async fn a_netns_that_cannot_be_made_holds_the_pod_and_is_retried() {
        let sandbox = RecordingSandbox::default();
        sandbox.fail(SandboxOp::EnsureNetns, 1);
        let begun = tokio::time::Instant::now();
        let mut h = start_with(pod("Always"), RecordingRuntime::default(), sandbox);
        let s = h
            .until("CreatePodSandboxError", |s| {
                waiting_reason(s) == "CreatePodSandboxError"
            })
            .await;
        assert!(waiting_message(&s).contains("unshare"), "{s:?}");
        assert_eq!(s.phase, "Pending");
        assert!(
            h.runtime.calls().is_empty(),
            "no image pulled, no container made without a netns"
        );
        assert_eq!(
            h.sandbox.calls().len(),
            1,
            "not wired into the network without a netns"
        );
        h.until("Running", running).await;
        assert!(
            begun.elapsed() >= Duration::from_secs(5),
            "retried after 5 s, not at once: {:?}",
            begun.elapsed()
        );
        let netns = h.dir.path().join("netns").join("uid1");
        assert_eq!(
            h.sandbox.calls()[..3],
            [
                SandboxCall::EnsureNetns(netns.clone()),
                SandboxCall::EnsureNetns(netns.clone()),
                SandboxCall::Attach {
                    uid: "uid1".into(),
                    netns,
                },
            ]
        );
        assert_eq!(h.starts(), ["0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_network_attach_holds_the_pod_and_is_retried() {
        let sandbox = RecordingSandbox::with_pod_ip(std::net::Ipv4Addr::new(10, 42, 0, 5));
        sandbox.fail(SandboxOp::Attach, 2);
        let begun = tokio::time::Instant::now();
        let mut h = start_with(pod("Always"), RecordingRuntime::default(), sandbox);
        let s = h
            .until("CreatePodSandboxError", |s| {
                waiting_reason(s) == "CreatePodSandboxError"
            })
            .await;
        assert!(waiting_message(&s).contains("creating veth"), "{s:?}");
        assert_eq!(s.phase, "Pending");
        assert!(s.pod_ip.is_empty(), "no address before the pod is wired");
        assert!(
            h.runtime.calls().is_empty(),
            "no image pulled, no container made before the pod is wired"
        );
        let s = h.until("Running", running).await;
        assert!(
            begun.elapsed() >= Duration::from_secs(10),
            "two failures, each retried after 5 s: {:?}",
            begun.elapsed()
        );
        assert_eq!(s.pod_ip, "10.42.0.5");
        let attaches = h
            .sandbox
            .calls()
            .into_iter()
            .filter(|c| matches!(c, SandboxCall::Attach { .. }))
            .count();
        assert_eq!(attaches, 3);
        let hosts_file = h.pod_dir().join("etc").join("hosts");
        let hosts = std::fs::read_to_string(hosts_file).unwrap();
        assert!(
            hosts.contains("10.42.0.5"),
            "the container sees its address: {hosts}"
        );
        assert_eq!(h.starts(), ["0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn removal_goes_on_when_the_network_detach_and_netns_removal_fail() {
        let sandbox = RecordingSandbox::default();
        sandbox.fail(SandboxOp::Detach, 1);
        sandbox.fail(SandboxOp::RemoveNetns, 1);
        let mut h = start_with(pod("Always"), RecordingRuntime::default(), sandbox);
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

    #[tokio::test(start_paused = true)]
    async fn a_sigkill_in_an_oom_killed_cgroup_is_reported_as_oomkilled() {
        let sandbox = RecordingSandbox::default();
        sandbox.oom_kill("/skiff/uid1/main");
        let mut h = start_with(pod("Never"), RecordingRuntime::default(), sandbox);
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
