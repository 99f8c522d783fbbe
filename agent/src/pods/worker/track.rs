//! What a pod worker remembers of one container between passes, split by
//! purpose: its role (init container, sidecar or app container), what the
//! pod's status shows of it ([`Shown`]), its current run ([`CurrentRun`]:
//! since when, whether its exit is recorded, OOM, probes, a sidecar's
//! stop) and when the next attempt may come ([`Pacing`]: the crash back-off and
//! the retry pace of failed pulls and starts). The methods here change
//! that state as the worker observes and acts; what to do next is
//! [`super::decide`]'s alone.

use std::path::Path;
use std::time::Duration;

use skiff_proto::v1;
use skiff_values::now_rfc3339;
use tokio::time::Instant;

use crate::pods::backoff::Backoff;
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
    pub(super) image_id: String,
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
    pub(super) ready: bool,
    /// When a finished pod's worker sent this sidecar its SIGTERM.
    pub(super) stop_sent: Option<Instant>,
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
                image_id: String::new(),
            },
            run: CurrentRun {
                started: None,
                exit_recorded: false,
                oom: false,
                liveness: None,
                readiness: None,
                ready: false,
                stop_sent: None,
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
                self.arm_probes(container, now);
            }
        }
        self.synced = true;
    }

    /// The task runs: shown as running (since now, unless it already shows
    /// its start time), and a long enough run forgives past crashes.
    pub(super) fn note_running(&mut self, now: Instant) {
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

    /// Probes for a new run: none due before their initial delays, and
    /// ready at once when there is no readiness probe.
    pub(super) fn arm_probes(&mut self, container: &v1::Container, now: Instant) {
        self.run.liveness = container
            .liveness_probe
            .as_ref()
            .map(|p| ProbeState::new(p, now));
        self.run.readiness = container
            .readiness_probe
            .as_ref()
            .map(|p| ProbeState::new(p, now));
        self.run.ready = self.run.readiness.is_none();
    }

    /// A run that ended or is being killed: not ready, and no probes until
    /// the next run.
    pub(super) fn disarm_probes(&mut self) {
        self.run.liveness = None;
        self.run.readiness = None;
        self.run.ready = false;
    }

    /// Runs the probes that are due (readiness first); true when the
    /// liveness probe has just failed.
    pub(super) async fn probe<R: ContainerRuntime>(
        &mut self,
        runtime: &R,
        container: &v1::Container,
        netns: &Path,
        now: Instant,
    ) -> bool {
        let id = self.id.clone();
        if let Some(probe) = self.run.readiness.as_mut() {
            let due = probe.next_at <= now;
            if let Some(verdict) =
                probes::run_if_due(runtime, &id, container, netns, probe, now).await
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
            let verdict = probes::run_if_due(runtime, &id, container, netns, probe, now).await;
            if due && probe.failed_last() {
                let failure = format!("Liveness probe failed: {}", probe.last_error);
                self.probe_failures.push(failure);
            }
            if verdict == Some(false) {
                tracing::info!(container = %id, reason = %probe.last_error, "liveness probe failed; restarting container");
                return true;
            }
        }
        false
    }

    /// The probe attempts that failed since the last call, oldest first.
    pub(super) fn take_probe_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.probe_failures)
    }

    /// When the next probe is due, if any.
    pub(super) fn next_probe(&self) -> Option<Instant> {
        self.run
            .liveness
            .as_ref()
            .map(|p| p.next_at)
            .into_iter()
            .chain(self.run.readiness.as_ref().map(|p| p.next_at))
            .min()
    }

    /// How long a liveness kill waits between SIGTERM and SIGKILL: the
    /// probe's own grace period, else the pod's.
    pub(super) fn kill_grace(&self, pod_grace: Option<i64>) -> Duration {
        let grace = self
            .run
            .liveness
            .as_ref()
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

    /// A new run began: restart count, state and image as started, and
    /// every trace of the last run and its pacing cleared.
    pub(super) fn begin_run(
        &mut self,
        restarts: i32,
        started_at: String,
        image_id: String,
        container: &v1::Container,
        now: Instant,
    ) {
        self.shown.ever_started = true;
        self.shown.restarts = restarts;
        self.shown.state = CState::Running { started_at };
        self.shown.image_id = image_id;
        self.run.exit_recorded = false;
        self.run.oom = false;
        self.run.stop_sent = None;
        self.run.started = Some(now);
        self.pacing.restart_at = None;
        self.pacing.retry_at = None;
        self.pacing.errors.reset();
        self.arm_probes(container, now);
    }
}
