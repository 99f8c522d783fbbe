//! The order of a pod's init containers, as pure decisions the worker asks
//! on each pass. Init containers run one at a time, in the spec's order:
//! each starts once every one before it has done its part, which for an
//! init container is to exit 0 and for a sidecar (`restartPolicy: Always`)
//! to have started (its postStart hook done, its startup probe passed);
//! the app containers start once all have. A failing init container is
//! restarted under its own policy ([`super::decide`]) and
//! holds everything after it meanwhile; one that failed for good (a pod
//! with `restartPolicy: Never`) fails the pod.
//!
//! Initialization happens once: once it is complete, or once an app
//! container is found to exist (a restarted agent adopting a running pod),
//! the init containers are only looked at, never started again, while the
//! sidecars are kept running beside the app containers.

use crate::pods::status::{CState, Role};

/// What a pass does with one init container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// Observe it and do what its restart policy says: start it, restart
    /// it, keep it running.
    Run,
    /// Observe it, but start nothing: initialization is over.
    Observe,
    /// Leave it alone: one before it has not done its part yet.
    Wait,
}

/// Where an init container stands, for those after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProgress {
    /// Not started, running, or to run again.
    Pending,
    /// Exited 0, or (a sidecar) started: the next one may start.
    Done,
    /// Failed and will not run again: the pod fails.
    Failed,
}

/// What this pass does with an init container of `role`, whether the pod
/// is `initialized` and every init container before it is done.
pub fn step(role: Role, initialized: bool, earlier_done: bool) -> InitStep {
    match (role, initialized, earlier_done) {
        (Role::Sidecar, true, _) => InitStep::Run,
        (_, true, _) => InitStep::Observe,
        (_, false, true) => InitStep::Run,
        (_, false, false) => InitStep::Wait,
    }
}

/// Where an init container of `role` stands, its state shown as `state`:
/// `started_up` whether it ever started (ran, its postStart hook done, its
/// startup probe passed: what a sidecar must have done), `will_restart`
/// whether a failure shown is to be run again.
pub fn progress(role: Role, state: &CState, started_up: bool, will_restart: bool) -> InitProgress {
    match (role, state) {
        (Role::Sidecar, _) if started_up => InitProgress::Done,
        (Role::Sidecar, _) => InitProgress::Pending,
        (_, CState::Terminated { code: 0, .. }) => InitProgress::Done,
        (_, CState::Terminated { .. }) if !will_restart => InitProgress::Failed,
        _ => InitProgress::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_init_container_runs_once_those_before_it_are_done() {
        use InitStep::{Observe, Run, Wait};
        let rows = [
            // Initializing: in order.
            (Role::Init, false, true, Run),
            (Role::Init, false, false, Wait),
            (Role::Sidecar, false, true, Run),
            (Role::Sidecar, false, false, Wait),
            // Initialized: init containers are not run again; sidecars
            // are kept running.
            (Role::Init, true, true, Observe),
            (Role::Init, true, false, Observe),
            (Role::Sidecar, true, true, Run),
            (Role::Sidecar, true, false, Run),
        ];
        for (role, initialized, earlier_done, expected) in rows {
            assert_eq!(
                step(role, initialized, earlier_done),
                expected,
                "{role:?}, initialized {initialized}, earlier done {earlier_done}"
            );
        }
    }

    #[test]
    fn an_init_container_is_done_when_it_succeeded_and_a_sidecar_once_started() {
        use InitProgress::{Done, Failed, Pending};
        let waiting = CState::Waiting {
            reason: "PodInitializing".into(),
            message: String::new(),
        };
        let running = CState::Running {
            started_at: String::new(),
        };
        let exited = |code| CState::Terminated {
            code,
            reason: String::new(),
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        };
        let back_off = CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        let rows = [
            (Role::Init, waiting.clone(), false, false, Pending),
            (Role::Init, running.clone(), true, false, Pending),
            (Role::Init, exited(0), true, false, Done),
            (Role::Init, exited(1), true, true, Pending),
            (Role::Init, back_off.clone(), true, true, Pending),
            (Role::Init, exited(1), true, false, Failed),
            (Role::Sidecar, waiting, false, false, Pending),
            (Role::Sidecar, running, true, false, Done),
            // A sidecar that crashed after starting does not hold the
            // ones after it again.
            (Role::Sidecar, back_off, true, true, Done),
            (Role::Sidecar, exited(1), true, true, Done),
        ];
        for (role, state, ever_started, will_restart, expected) in rows {
            assert_eq!(
                progress(role, &state, ever_started, will_restart),
                expected,
                "{role:?} {state:?}"
            );
        }
    }
}
