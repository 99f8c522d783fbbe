//! The restart policy as one pure decision per container. From what
//! containerd reports of the container's task (running, with its liveness
//! and startup verdicts; exited with a code; absent; or containerd did not answer) and
//! what the worker remembers (whether it ever ran, whether its exit is
//! recorded, when the crash back-off and the start-retry pacing allow the
//! next attempt), [`decide`] says what comes next: keep it running, kill
//! it, record its exit, leave it finished, wait out CrashLoopBackOff, or
//! start it. The worker does what it says; nothing here touches containerd,
//! the kernel or the clock, so every case is a row of one table test.
//!
//! There is no separate "create": the runtime creates a container and
//! starts its task in one call, so both are [`Next::Start`]. Pod deletion
//! is not a per-container decision either: the worker tears the whole pod
//! down instead of reconciling it.

use std::time::Duration;

use tokio::time::Instant;

use crate::pods::status::Role;

/// How soon to ask containerd again when it did not answer.
const INSPECT_RETRY: Duration = Duration::from_secs(2);

/// Exit code assumed for a task that vanished before its exit was ever
/// reported: a failure, so OnFailure restarts it.
const VANISHED_EXIT_CODE: u32 = 255;

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The policy the spec names; anything else is `Always`, the
    /// Kubernetes default.
    pub fn from_spec(policy: &str) -> RestartPolicy {
        match policy {
            "Never" => RestartPolicy::Never,
            "OnFailure" => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// The policy a container of `role` lives by in a pod whose policy is
    /// this one: an init container runs again only after a failure (not
    /// at all in a Never pod); a sidecar always, until the pod has
    /// `finished`.
    pub fn for_container(self, role: Role, finished: bool) -> RestartPolicy {
        match role {
            Role::App => self,
            Role::Init if self == RestartPolicy::Never => RestartPolicy::Never,
            Role::Init => RestartPolicy::OnFailure,
            Role::Sidecar if finished => RestartPolicy::Never,
            Role::Sidecar => RestartPolicy::Always,
        }
    }

    /// Whether an exit with `code` is followed by a restart.
    pub fn restarts_after(self, code: u32) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Always => true,
        }
    }
}

/// Whether an exit with `code` is followed by a restart under `policy`,
/// the spec's `restartPolicy` string.
pub fn should_restart(policy: &str, code: u32) -> bool {
    RestartPolicy::from_spec(policy).restarts_after(code)
}

/// What containerd reports of the container's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// containerd did not answer.
    Unknown,
    /// The task runs; its due probes have just run, and `probe_failed`
    /// says whether its liveness or startup probe has failed for good.
    Running { probe_failed: bool },
    /// The task ended with `code`.
    Exited { code: u32 },
    /// No task: never created, or lost (a host reboot, containerd lost it).
    Absent,
}

/// Everything the decision depends on, for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub task: Task,
    pub policy: RestartPolicy,
    /// Whether the container ever ran here (started, or adopted).
    pub ever_started: bool,
    /// The code of the last exit, once it is recorded; `None` while the
    /// current run has not ended as far as the worker knows.
    pub recorded_exit: Option<u32>,
    /// The exit code the master last heard, if it heard of an exit.
    pub reported_exit: Option<u32>,
    /// When the crash back-off lets the container restart.
    pub restart_at: Option<Instant>,
    /// When a failed image pull or start may be tried again.
    pub retry_at: Option<Instant>,
    pub now: Instant,
}

/// Which run a start begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The container's first run (restart count 0).
    First,
    /// A run after an exit: the restart count goes up by one.
    Restart,
}

/// What to do next with the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// containerd did not answer: look again after this long.
    LookAgain(Duration),
    /// It runs and is alive: nothing to do before its next probe.
    KeepRunning,
    /// The liveness (or startup) probe failed: stop it; its exit is then
    /// handled like any other.
    Kill,
    /// It ended (or vanished) and that is not recorded yet: record the
    /// exit with `code`, then decide again.
    RecordExit { code: u32 },
    /// The exit is final under the restart policy.
    Done,
    /// CrashLoopBackOff: wait until `until`, then restart.
    BackOff { until: Instant },
    /// Create and start the container now.
    Start { run: Run },
    /// The last attempt at `run` failed (image pull or start); try again
    /// at `at`.
    RetryStart { run: Run, at: Instant },
}

/// What to do next with one container.
pub fn decide(o: &Observed) -> Next {
    match o.task {
        Task::Unknown => Next::LookAgain(INSPECT_RETRY),
        Task::Running { probe_failed: true } => Next::Kill,
        Task::Running {
            probe_failed: false,
        } => Next::KeepRunning,
        Task::Exited { code } => after_exit(o, code),
        // A vanished task is an exit with the code already recorded, else
        // the one last reported, so a finished Never/OnFailure pod stays
        // done after a host reboot.
        Task::Absent if o.ever_started => {
            let code = o
                .recorded_exit
                .or(o.reported_exit)
                .unwrap_or(VANISHED_EXIT_CODE);
            after_exit(o, code)
        }
        Task::Absent => match retry_due(o) {
            Some(at) => Next::RetryStart {
                run: Run::First,
                at,
            },
            None => Next::Start { run: Run::First },
        },
    }
}

fn after_exit(o: &Observed, code: u32) -> Next {
    if o.recorded_exit.is_none() {
        return Next::RecordExit { code };
    }
    if !o.policy.restarts_after(code) {
        return Next::Done;
    }
    let restart_at = o.restart_at.unwrap_or(o.now);
    if restart_at > o.now {
        return Next::BackOff { until: restart_at };
    }
    // A restart whose start failed keeps the failed start's retry pace.
    match retry_due(o) {
        Some(at) => Next::RetryStart {
            run: Run::Restart,
            at,
        },
        None => Next::Start { run: Run::Restart },
    }
}

/// The retry time of a failed attempt, if it is still to come.
fn retry_due(o: &Observed) -> Option<Instant> {
    o.retry_at.filter(|at| *at > o.now)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::RestartPolicy::{Always, Never, OnFailure};

    /// A container that ran and whose task is `task`, nothing pending.
    fn ran(task: Task, policy: RestartPolicy, now: Instant) -> Observed {
        Observed {
            task,
            policy,
            ever_started: true,
            recorded_exit: None,
            reported_exit: None,
            restart_at: None,
            retry_at: None,
            now,
        }
    }

    /// A container whose exit with `code` is recorded and whose crash
    /// back-off allows the restart now.
    fn exited(code: u32, policy: RestartPolicy, now: Instant) -> Observed {
        Observed {
            recorded_exit: Some(code),
            restart_at: Some(now),
            ..ran(Task::Exited { code }, policy, now)
        }
    }

    /// A container that never ran: no task, nothing recorded.
    fn never_ran(policy: RestartPolicy, now: Instant) -> Observed {
        Observed {
            ever_started: false,
            ..ran(Task::Absent, policy, now)
        }
    }

    #[test]
    fn each_observation_decides_one_next_step() {
        let earlier = Instant::now();
        let now = earlier + Duration::from_secs(1);
        let later = now + Duration::from_secs(10);
        let live = Task::Running {
            probe_failed: false,
        };
        let dead = Task::Running { probe_failed: true };
        let restart = Next::Start { run: Run::Restart };
        let first = Next::Start { run: Run::First };
        let rows: Vec<(&str, Observed, Next)> = vec![
            // containerd did not answer.
            (
                "inspect failed: look again in 2 s",
                ran(Task::Unknown, Always, now),
                Next::LookAgain(Duration::from_secs(2)),
            ),
            (
                "inspect failed, never started: look again in 2 s",
                never_ran(Never, now).with_task(Task::Unknown),
                Next::LookAgain(Duration::from_secs(2)),
            ),
            // Running: the liveness verdict decides, whatever the policy.
            ("running, alive", ran(live, Always, now), Next::KeepRunning),
            ("Never, alive", ran(live, Never, now), Next::KeepRunning),
            (
                "Always, liveness failed",
                ran(dead, Always, now),
                Next::Kill,
            ),
            ("Never, liveness failed", ran(dead, Never, now), Next::Kill),
            (
                "OnFailure, liveness failed",
                ran(dead, OnFailure, now),
                Next::Kill,
            ),
            // A new exit is recorded first, whatever the policy.
            (
                "exit 1 not recorded",
                ran(Task::Exited { code: 1 }, Always, now),
                Next::RecordExit { code: 1 },
            ),
            (
                "exit 0 not recorded, Never",
                ran(Task::Exited { code: 0 }, Never, now),
                Next::RecordExit { code: 0 },
            ),
            (
                "exit 137 not recorded, OnFailure",
                ran(Task::Exited { code: 137 }, OnFailure, now),
                Next::RecordExit { code: 137 },
            ),
            (
                "exit not recorded, back-off and retry pending: still recorded first",
                Observed {
                    restart_at: Some(later),
                    retry_at: Some(later),
                    ..ran(Task::Exited { code: 2 }, Always, now)
                },
                Next::RecordExit { code: 2 },
            ),
            (
                "exited without ever starting here",
                Observed {
                    ever_started: false,
                    ..ran(Task::Exited { code: 1 }, Always, now)
                },
                Next::RecordExit { code: 1 },
            ),
            // Recorded exits: restartPolicy x exit code, back-off over.
            ("Always, exit 0", exited(0, Always, now), restart),
            ("Always, exit 1", exited(1, Always, now), restart),
            ("Always, exit 137", exited(137, Always, now), restart),
            ("OnFailure, exit 0", exited(0, OnFailure, now), Next::Done),
            ("OnFailure, exit 1", exited(1, OnFailure, now), restart),
            ("OnFailure, exit 137", exited(137, OnFailure, now), restart),
            ("Never, exit 0", exited(0, Never, now), Next::Done),
            ("Never, exit 1", exited(1, Never, now), Next::Done),
            ("Never, exit 137", exited(137, Never, now), Next::Done),
            (
                "no restartPolicy is Always",
                exited(0, RestartPolicy::from_spec(""), now),
                restart,
            ),
            // The crash back-off.
            (
                "Always, back-off until later",
                Observed {
                    restart_at: Some(later),
                    ..exited(1, Always, now)
                },
                Next::BackOff { until: later },
            ),
            (
                "OnFailure, exit 1, back-off until later",
                Observed {
                    restart_at: Some(later),
                    ..exited(1, OnFailure, now)
                },
                Next::BackOff { until: later },
            ),
            (
                "OnFailure, exit 0, back-off until later: done",
                Observed {
                    restart_at: Some(later),
                    ..exited(0, OnFailure, now)
                },
                Next::Done,
            ),
            (
                "Never, back-off until later: done",
                Observed {
                    restart_at: Some(later),
                    ..exited(1, Never, now)
                },
                Next::Done,
            ),
            (
                "back-off passed",
                Observed {
                    restart_at: Some(earlier),
                    ..exited(1, Always, now)
                },
                restart,
            ),
            (
                "no back-off set: restart at once",
                Observed {
                    restart_at: None,
                    ..exited(1, Always, now)
                },
                restart,
            ),
            // A restart whose start failed.
            (
                "restart due, failed start retried later",
                Observed {
                    retry_at: Some(later),
                    ..exited(1, Always, now)
                },
                Next::RetryStart {
                    run: Run::Restart,
                    at: later,
                },
            ),
            (
                "restart due, failed start's retry passed",
                Observed {
                    retry_at: Some(earlier),
                    ..exited(1, Always, now)
                },
                restart,
            ),
            (
                "back-off and retry pending: back-off shown",
                Observed {
                    restart_at: Some(later),
                    retry_at: Some(later + Duration::from_secs(5)),
                    ..exited(1, Always, now)
                },
                Next::BackOff { until: later },
            ),
            (
                "Never, retry pending: done",
                Observed {
                    retry_at: Some(later),
                    ..exited(1, Never, now)
                },
                Next::Done,
            ),
            // Never started: the first run.
            ("new, Always", never_ran(Always, now), first),
            ("new, Never", never_ran(Never, now), first),
            (
                "new container, failed start retried later",
                Observed {
                    retry_at: Some(later),
                    ..never_ran(Always, now)
                },
                Next::RetryStart {
                    run: Run::First,
                    at: later,
                },
            ),
            (
                "new container, retry passed",
                Observed {
                    retry_at: Some(earlier),
                    ..never_ran(OnFailure, now)
                },
                first,
            ),
            (
                "new container, exit reported by the master: ignored",
                Observed {
                    reported_exit: Some(0),
                    ..never_ran(Never, now)
                },
                first,
            ),
            // The task vanished after running.
            (
                "vanished, exit reported 0",
                Observed {
                    reported_exit: Some(0),
                    ..ran(Task::Absent, OnFailure, now)
                },
                Next::RecordExit { code: 0 },
            ),
            (
                "vanished, no exit reported: 255",
                ran(Task::Absent, Never, now),
                Next::RecordExit { code: 255 },
            ),
            (
                "vanished, recorded 0 under OnFailure: done",
                Observed {
                    reported_exit: Some(0),
                    ..exited(0, OnFailure, now).with_task(Task::Absent)
                },
                Next::Done,
            ),
            (
                "vanished, recorded 0 under Never: done",
                exited(0, Never, now).with_task(Task::Absent),
                Next::Done,
            ),
            (
                "vanished, recorded code wins over the reported one",
                Observed {
                    reported_exit: Some(0),
                    ..exited(3, OnFailure, now).with_task(Task::Absent)
                },
                restart,
            ),
            (
                "vanished, recorded 255 under OnFailure",
                exited(255, OnFailure, now).with_task(Task::Absent),
                restart,
            ),
            (
                "vanished, recorded, back-off until later",
                Observed {
                    restart_at: Some(later),
                    ..exited(1, Always, now).with_task(Task::Absent)
                },
                Next::BackOff { until: later },
            ),
            (
                "vanished, recorded, failed restart retried later",
                Observed {
                    retry_at: Some(later),
                    ..exited(1, Always, now).with_task(Task::Absent)
                },
                Next::RetryStart {
                    run: Run::Restart,
                    at: later,
                },
            ),
        ];
        for (case, observed, expected) in rows {
            assert_eq!(decide(&observed), expected, "case: {case}");
        }
    }

    #[test]
    fn init_containers_and_sidecars_have_their_own_policies() {
        let rows = [
            (Always, Role::App, false, Always),
            (OnFailure, Role::App, false, OnFailure),
            (Never, Role::App, true, Never),
            // An init container is run again after a failure only.
            (Always, Role::Init, false, OnFailure),
            (OnFailure, Role::Init, false, OnFailure),
            (Never, Role::Init, false, Never),
            // A sidecar always, whatever the pod's policy, until the pod
            // has finished.
            (Never, Role::Sidecar, false, Always),
            (OnFailure, Role::Sidecar, false, Always),
            (Always, Role::Sidecar, true, Never),
            (Never, Role::Sidecar, true, Never),
        ];
        for (pod, role, finished, expected) in rows {
            let got = pod.for_container(role, finished);
            assert_eq!(got, expected, "{pod:?} pod, {role:?}, finished {finished}");
        }
    }

    #[test]
    fn restart_policies_read_from_the_spec() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }

    impl Observed {
        fn with_task(self, task: Task) -> Observed {
            Observed { task, ..self }
        }
    }
}
