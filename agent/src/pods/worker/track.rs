//! What a pod worker remembers of one container between passes, split by
//! purpose: its role (init container, sidecar or app container), what the
//! pod's status shows of it ([`Shown`]), its current run ([`CurrentRun`]:
//! since when, whether its exit is recorded, OOM, probes, its postStart
//! hook, a sidecar's stop) and when the next attempt may come ([`Pacing`]:
//! the crash back-off and the retry pace of failed pulls and starts). The
//! methods here change that state as the worker observes and acts; what to
//! do next is [`super::decide`]'s alone.
//!
//! Probes keep the kubelet's order: while a startup probe has not passed,
//! neither liveness nor readiness runs and the container has not
//! `started`; `failureThreshold` startup failures in a row restart it as a
//! failed liveness probe does. While its postStart hook runs, a container
//! shows waiting (`ContainerCreating`), is neither started nor ready, and
//! is not probed.

use std::time::Duration;

use skiff_objects::now_rfc3339;
use skiff_proto::v1;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::pods::backoff::Backoff;
use crate::pods::pod_address::PodAddress;
use crate::pods::probes::{self, ProbeState};
use crate::pods::status::{CState, ContainerView, Role};
use crate::runtime::containers::{LABEL_IMAGE_ID, LABEL_RESTARTS, LABEL_STARTED_AT};
use crate::runtime::{ContainerRecord, ContainerRuntime, TaskState};

use super::decide::{Observed, RestartPolicy, Task};
use super::DEFAULT_GRACE_SECONDS;

/// How long a container must run before its crash backoff starts over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// containerd's ID for a pod's container.
pub fn container_id(pod_uid: &str, container: &str) -> String {
    format!("{pod_uid}_{container}")
}

/// One container of the pod, as the worker tracks it.
#[derive(Debug)]
pub(super) struct Track {
    pub(super) name: String,
    pub(super) id: String,
    pub(super) role: Role,
    /// Labels read back once: adoption after an agent restart.
    pub(super) synced: bool,
    pub(super) shown: Shown,
    pub(super) run: CurrentRun,
    pub(super) pacing: Pacing,
    /// Probe attempts that failed since the worker last took them, as the
    /// kubelet's `Unhealthy` Events say them.
    probe_failures: Vec<String>,
}

/// What the pod's status shows of the container.
#[derive(Debug)]
pub(super) struct Shown {
    pub(super) state: CState,
    pub(super) last: Option<CState>,
    pub(super) restarts: i32,
    pub(super) ever_started: bool,
    /// The kubelet's `started`: this run's postStart hook is done and its
    /// startup probe has passed.
    pub(super) started: bool,
    /// Some run was ever `started`: a sidecar has done its part.
    pub(super) ever_started_up: bool,
    pub(super) image_id: String,
}

/// A probe whose failure restarts the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeKind {
    Liveness,
    Startup,
}

impl ProbeKind {
    /// As the kubelet's messages name it (`failed liveness probe`).
    pub(super) fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Startup => "startup",
        }
    }
}

/// A lifecycle hook running on a task of its own (aborted when this is
/// dropped), and where its outcome arrives: success, or the kubelet's
/// failure message. The outcome is sent before the worker is woken, so a
/// woken worker finds it.
#[derive(Debug)]
pub(super) struct HookRun {
    /// Held, never read: dropping it aborts the hook.
    pub(super) _task: AbortOnDropHandle<()>,
    pub(super) outcome: oneshot::Receiver<Result<(), String>>,
}

/// A postStart hook that has not finished, and the start time the
/// container shows once it has succeeded.
#[derive(Debug)]
pub(super) struct PostStart {
    pub(super) hook: HookRun,
    pub(super) started_at: String,
}

/// The container's current run, or the one that just ended.
#[derive(Debug)]
pub(super) struct CurrentRun {
    /// When this worker saw it start; a long run forgives past crashes.
    pub(super) started: Option<Instant>,
    pub(super) exit_recorded: bool,
    /// containerd reported an OOM kill, or the cgroup showed one.
    pub(super) oom: bool,
    pub(super) liveness: Option<ProbeState>,
    pub(super) readiness: Option<ProbeState>,
    pub(super) startup: Option<ProbeState>,
    /// The probe whose failure is killing the container.
    pub(super) failed_probe: Option<ProbeKind>,
    pub(super) ready: bool,
    /// The postStart hook, while it runs.
    pub(super) post_start: Option<PostStart>,
    /// When a finished pod's worker, having sent this sidecar its SIGTERM,
    /// sends it SIGKILL.
    pub(super) kill_at: Option<Instant>,
}

/// When the next attempt may come.
#[derive(Debug)]
pub(super) struct Pacing {
    /// CrashLoopBackOff, advanced by each exit that is restarted.
    pub(super) crash: Backoff,
    pub(super) restart_at: Option<Instant>,
    /// Retry pacing for image pulls and start failures.
    pub(super) errors: Backoff,
    pub(super) retry_at: Option<Instant>,
}

impl Track {
    /// A container not seen yet, shown waiting for `reason`
    /// (`ContainerCreating`, or `PodInitializing` in a pod with init
    /// containers).
    pub(super) fn new(pod_uid: &str, name: &str, role: Role, reason: &str) -> Track {
        Track {
            name: name.to_string(),
            id: container_id(pod_uid, name),
            role,
            synced: false,
            shown: Shown {
                state: CState::Waiting {
                    reason: reason.into(),
                    message: String::new(),
                },
                last: None,
                restarts: 0,
                ever_started: false,
                started: false,
                ever_started_up: false,
                image_id: String::new(),
            },
            run: CurrentRun {
                started: None,
                exit_recorded: false,
                oom: false,
                liveness: None,
                readiness: None,
                startup: None,
                failed_probe: None,
                ready: false,
                post_start: None,
                kill_at: None,
            },
            pacing: Pacing {
                crash: Backoff::crash_loop(),
                restart_at: None,
                errors: Backoff::errors(),
                retry_at: None,
            },
            probe_failures: Vec::new(),
        }
    }

    /// What the pod status needs of this container.
    pub(super) fn view(&self, container: &v1::Container, policy: RestartPolicy) -> ContainerView {
        let state = &self.shown.state;
        ContainerView {
            name: self.name.clone(),
            id: self.id.clone(),
            role: self.role,
            image: container.image.clone(),
            image_id: self.shown.image_id.clone(),
            state: state.clone(),
            last: self.shown.last.clone(),
            ready: self.run.ready,
            restarts: self.shown.restarts,
            will_restart: matches!(state, CState::Terminated { code, .. } if policy.restarts_after(*code))
                || matches!(state, CState::Waiting { reason, .. } if reason == "CrashLoopBackOff"),
            ever_started: self.shown.ever_started,
            started: self.shown.started,
            started_up: self.shown.ever_started_up,
        }
    }

    /// What [`super::decide::decide`] needs, with `task` as containerd
    /// reports it and `reported_exit` as the master last heard it.
    pub(super) fn observed(
        &self,
        task: Task,
        policy: RestartPolicy,
        reported_exit: Option<u32>,
        now: Instant,
    ) -> Observed {
        Observed {
            task,
            policy,
            ever_started: self.shown.ever_started,
            recorded_exit: self.run.exit_recorded.then(|| self.last_code()),
            reported_exit,
            restart_at: self.pacing.restart_at,
            retry_at: self.pacing.retry_at,
            now,
        }
    }

    /// The code of the exit shown now or just before.
    fn last_code(&self) -> u32 {
        match (&self.shown.state, &self.shown.last) {
            (CState::Terminated { code, .. }, _) | (_, Some(CState::Terminated { code, .. })) => {
                *code
            }
            _ => 0,
        }
    }

    /// Reads back, once, what an earlier agent left on the container: its
    /// restart count and image, and, if it still runs, its start time, so
    /// it is adopted as it is rather than restarted.
    pub(super) fn sync(
        &mut self,
        record: Option<&ContainerRecord>,
        container: &v1::Container,
        now: Instant,
    ) {
        if let Some(r) = record.filter(|_| !self.synced) {
            self.shown.restarts = r
                .labels
                .get(LABEL_RESTARTS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            self.shown.image_id = r.labels.get(LABEL_IMAGE_ID).cloned().unwrap_or_default();
            self.shown.ever_started = true;
            if let TaskState::Running { pid } = &r.state {
                tracing::info!(container = %self.id, pid, restarts = self.shown.restarts, "adopted running container");
                self.shown.state = CState::Running {
                    started_at: r.labels.get(LABEL_STARTED_AT).cloned().unwrap_or_default(),
                };
                self.run.started = Some(now);
                // It had started as far as a sidecar's successors go; its
                // startup probe, if any, is asked again.
                self.shown.ever_started_up = true;
                self.arm_probes(container, now);
            }
        }
        self.synced = true;
    }

    /// The task runs: shown as running (since now, unless it already shows
    /// its start time), and a long enough run forgives past crashes.
    pub(super) fn note_running(&mut self, now: Instant) {
        // A postStart hook still running: it shows waiting until it ends.
        if self.run.post_start.is_some() {
            return;
        }
        if !matches!(self.shown.state, CState::Running { .. }) {
            self.shown.state = CState::Running {
                started_at: now_rfc3339(),
            };
        }
        self.forgive_crashes(now);
    }

    fn forgive_crashes(&mut self, now: Instant) {
        if self
            .run
            .started
            .is_some_and(|s| now.duration_since(s) >= BACKOFF_RESET_AFTER)
        {
            self.pacing.crash.reset();
        }
    }

    /// Probes for a new run: none due before their initial delays. The
    /// run has started at once when there is no startup probe and no
    /// postStart hook running, and is ready then when there is no
    /// readiness probe.
    pub(super) fn arm_probes(&mut self, container: &v1::Container, now: Instant) {
        let arm =
            |probe: &Option<Box<v1::Probe>>| probe.as_deref().map(|p| ProbeState::new(p, now));
        self.run.liveness = arm(&container.liveness_probe);
        self.run.readiness = arm(&container.readiness_probe);
        self.run.startup = arm(&container.startup_probe);
        self.run.failed_probe = None;
        self.run.ready = false;
        self.shown.started = false;
        if self.run.startup.is_none() && self.run.post_start.is_none() {
            self.mark_started();
        }
    }

    /// The run has started (postStart done, startup probe passed): ready
    /// now unless a readiness probe is to say so.
    fn mark_started(&mut self) {
        self.shown.started = true;
        self.shown.ever_started_up = true;
        if self.run.readiness.is_none() {
            self.run.ready = true;
        }
    }

    /// A run that ended or is being killed: not started, not ready, no
    /// probes until the next run, and its postStart hook, if it still
    /// runs, stopped.
    pub(super) fn disarm_probes(&mut self) {
        self.run.liveness = None;
        self.run.readiness = None;
        self.run.startup = None;
        self.run.ready = false;
        self.run.post_start = None;
        self.shown.started = false;
    }

    /// Whether the run's postStart hook is still running.
    pub(super) fn post_start_pending(&self) -> bool {
        self.run.post_start.is_some()
    }

    /// The postStart hook's outcome once it has ended (`None` while it
    /// runs, or when there is none): on success the container shows
    /// running from its start, and has started unless a startup probe is
    /// to say so; on failure, the kubelet's message.
    pub(super) fn post_start_outcome(&mut self) -> Option<Result<(), String>> {
        let outcome = match self.run.post_start.as_mut()?.hook.outcome.try_recv() {
            Ok(outcome) => outcome,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => {
                Err("the postStart hook's task ended without an outcome".to_owned())
            }
        };
        let post_start = self.run.post_start.take()?;
        if outcome.is_ok() {
            tracing::info!(container = %self.id, "postStart hook done");
            self.shown.state = CState::Running {
                started_at: post_start.started_at,
            };
            if self.run.startup.is_none() {
                self.mark_started();
            }
        }
        Some(outcome)
    }

    /// Runs the probes that are due: the startup probe until it passes,
    /// then readiness and liveness; the probe whose failure is to restart
    /// the container, when one just failed for good. Nothing is probed
    /// while the postStart hook runs.
    pub(super) async fn probe<R: ContainerRuntime>(
        &mut self,
        runtime: &R,
        container: &v1::Container,
        pod: &PodAddress,
        now: Instant,
    ) -> Option<ProbeKind> {
        if self.run.post_start.is_some() {
            return None;
        }
        let id = self.id.clone();
        if let Some(probe) = self
            .run
            .startup
            .as_mut()
            .filter(|p| p.passing != Some(true))
        {
            let due = probe.next_at <= now;
            let verdict = probes::run_if_due(runtime, &id, container, pod, probe, now).await;
            if due && probe.failed_last() {
                let failure = format!("Startup probe failed: {}", probe.last_error);
                self.probe_failures.push(failure);
            }
            match verdict {
                Some(true) => {
                    tracing::info!(container = %id, "startup probe passed");
                    self.mark_started();
                }
                Some(false) => {
                    let reason = probe.last_error.clone();
                    tracing::info!(container = %id, %reason, "startup probe failed; restarting container");
                    self.run.failed_probe = Some(ProbeKind::Startup);
                    return Some(ProbeKind::Startup);
                }
                // Liveness and readiness wait for it.
                None => return None,
            }
        }
        if let Some(probe) = self.run.readiness.as_mut() {
            let due = probe.next_at <= now;
            if let Some(verdict) =
                probes::run_if_due(runtime, &id, container, pod, probe, now).await
            {
                tracing::info!(container = %id, ready = verdict, "readiness changed");
                self.run.ready = verdict;
            }
            if due && probe.failed_last() {
                let failure = format!("Readiness probe failed: {}", probe.last_error);
                self.probe_failures.push(failure);
            }
        }
        if let Some(probe) = self.run.liveness.as_mut() {
            let due = probe.next_at <= now;
            let verdict = probes::run_if_due(runtime, &id, container, pod, probe, now).await;
            if due && probe.failed_last() {
                let failure = format!("Liveness probe failed: {}", probe.last_error);
                self.probe_failures.push(failure);
            }
            if verdict == Some(false) {
                tracing::info!(container = %id, reason = %probe.last_error, "liveness probe failed; restarting container");
                self.run.failed_probe = Some(ProbeKind::Liveness);
                return Some(ProbeKind::Liveness);
            }
        }
        None
    }

    /// The probe attempts that failed since the last call, oldest first.
    pub(super) fn take_probe_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.probe_failures)
    }

    /// When the next probe is due, if any: the startup probe's until it
    /// has passed; none while the postStart hook runs (its end wakes the
    /// worker).
    pub(super) fn next_probe(&self) -> Option<Instant> {
        if self.run.post_start.is_some() {
            return None;
        }
        if let Some(startup) = self
            .run
            .startup
            .as_ref()
            .filter(|p| p.passing != Some(true))
        {
            return Some(startup.next_at);
        }
        self.run
            .liveness
            .as_ref()
            .map(|p| p.next_at)
            .into_iter()
            .chain(self.run.readiness.as_ref().map(|p| p.next_at))
            .min()
    }

    /// How long a kill for a failed probe waits between SIGTERM and
    /// SIGKILL: the failed probe's own grace period, else the pod's.
    pub(super) fn kill_grace(&self, pod_grace: Option<i64>) -> Duration {
        let probe = match self.run.failed_probe {
            Some(ProbeKind::Startup) => self.run.startup.as_ref(),
            _ => self.run.liveness.as_ref(),
        };
        let grace = probe
            .and_then(|p| p.probe.termination_grace_period_seconds)
            .or(pod_grace)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Duration::from_secs(grace.max(0) as u64)
    }

    /// Records the end of the current run: the state shows the exit
    /// (`finished_at` empty: now) and the container's termination
    /// `message`, and if the policy restarts the container, the crash
    /// back-off says when.
    pub(super) fn record_exit(
        &mut self,
        code: u32,
        message: String,
        finished_at: String,
        policy: RestartPolicy,
        now: Instant,
    ) {
        let started_at = match &self.shown.state {
            CState::Running { started_at } => started_at.clone(),
            _ => String::new(),
        };
        let reason = if self.run.oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        tracing::info!(container = %self.id, code, reason, "container exited");
        self.shown.state = CState::Terminated {
            code,
            reason: reason.into(),
            message,
            started_at,
            finished_at: if finished_at.is_empty() {
                now_rfc3339()
            } else {
                finished_at
            },
        };
        self.run.exit_recorded = true;
        self.disarm_probes();
        self.forgive_crashes(now);
        if policy.restarts_after(code) {
            self.pacing.restart_at = Some(now + self.pacing.crash.next_delay());
        }
    }

    /// A restart is decided: the exit becomes the last state.
    pub(super) fn archive_exit(&mut self) {
        if let CState::Terminated { .. } = &self.shown.state {
            self.shown.last = Some(self.shown.state.clone());
        }
    }

    /// Shows the crash back-off the container waits out.
    pub(super) fn show_back_off(&mut self, pod_name: &str) {
        self.shown.state = CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={} pod={}",
                self.pacing.crash.last_delay().as_secs(),
                self.name,
                pod_name
            ),
        };
    }

    /// Shows why the container waits, for one that never ran (one that ran
    /// keeps showing its own state).
    pub(super) fn show_waiting_if_new(&mut self, reason: &str, message: String) {
        if !self.shown.ever_started {
            self.shown.state = CState::Waiting {
                reason: reason.into(),
                message,
            };
        }
    }

    /// Paces the next try after a failed pull or start; returns when.
    pub(super) fn retry_later(&mut self, now: Instant) -> Instant {
        let retry = now + self.pacing.errors.next_delay().max(Duration::from_secs(1));
        self.pacing.retry_at = Some(retry);
        retry
    }

    /// A new run began: restart count, state and image as started (still
    /// waiting while its postStart hook, `post_start`, runs), and every
    /// trace of the last run and its pacing cleared.
    pub(super) fn begin_run(
        &mut self,
        restarts: i32,
        started_at: String,
        image_id: String,
        container: &v1::Container,
        post_start: Option<HookRun>,
        now: Instant,
    ) {
        self.shown.ever_started = true;
        self.shown.restarts = restarts;
        self.run.post_start = post_start.map(|hook| PostStart {
            hook,
            started_at: started_at.clone(),
        });
        self.shown.state = if self.run.post_start.is_some() {
            CState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            }
        } else {
            CState::Running { started_at }
        };
        self.shown.image_id = image_id;
        self.run.exit_recorded = false;
        self.run.oom = false;
        self.run.kill_at = None;
        self.run.started = Some(now);
        self.pacing.restart_at = None;
        self.pacing.retry_at = None;
        self.pacing.errors.reset();
        self.arm_probes(container, now);
    }
}
