//! A pod's status as Kubernetes shows it, computed from what the worker
//! knows of each container: `phase`, the `PodScheduled`/`Initialized`/
//! `ContainersReady`/`Ready` conditions (transition times kept while a
//! condition holds), `initContainerStatuses` and `containerStatuses` with
//! state (an ended one's termination message too), last state, restart
//! count and readiness, and the QoS class.
//!
//! Init containers count as the kubelet counts them: the pod is Pending
//! until each has succeeded (a sidecar, until it has started) or an app
//! container has started, and Failed once one has failed for good; a
//! sidecar's readiness counts for the pod's, its exit not for the phase.

use skiff_proto::v1;

/// What part a container plays in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An init container: runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: started in order,
    /// then kept running beside the app containers.
    Sidecar,
    /// One of the pod's `containers`.
    App,
}

impl Role {
    /// The role of one of the pod's `initContainers`.
    pub fn of_init(container: &v1::Container) -> Role {
        if container.restart_policy == "Always" {
            Role::Sidecar
        } else {
            Role::Init
        }
    }
}

/// A container's state in the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        code: u32,
        reason: String,
        /// What the container left at its `terminationMessagePath` (or the
        /// end of its log, as its policy allows).
        message: String,
        started_at: String,
        finished_at: String,
    },
}

/// What the status needs to know about one container.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub role: Role,
    pub image: String,
    pub image_id: String,
    pub state: CState,
    pub last: Option<CState>,
    pub ready: bool,
    pub restarts: i32,
    /// Terminated now but restarting under the restart policy.
    pub will_restart: bool,
    pub ever_started: bool,
    /// The kubelet's `started`: running, its postStart hook done and its
    /// startup probe passed.
    pub started: bool,
    /// Some run of it has `started`: what a sidecar must have done before
    /// the next init container runs.
    pub started_up: bool,
}

fn to_state(s: &CState, container_id: &str) -> v1::ContainerState {
    match s {
        CState::Waiting { reason, message } => v1::ContainerState {
            waiting: Some(v1::ContainerStateWaiting {
                reason: reason.clone(),
                message: message.clone(),
            }),
            ..Default::default()
        },
        CState::Running { started_at } => v1::ContainerState {
            running: Some(v1::ContainerStateRunning {
                started_at: started_at.clone(),
            }),
            ..Default::default()
        },
        CState::Terminated {
            code,
            reason,
            message,
            started_at,
            finished_at,
        } => v1::ContainerState {
            terminated: Some(Box::new(v1::ContainerStateTerminated {
                exit_code: Some(*code as i32),
                signal: 0,
                reason: reason.clone(),
                message: message.clone(),
                started_at: started_at.clone(),
                finished_at: finished_at.clone(),
                container_id: format!("containerd://{container_id}"),
            })),
            ..Default::default()
        },
    }
}

/// Whether an init container has done its part: succeeded, or (a sidecar)
/// started (its postStart hook done, its startup probe passed).
fn init_done(v: &ContainerView) -> bool {
    match v.role {
        Role::Init => matches!(v.state, CState::Terminated { code: 0, .. }),
        Role::Sidecar => v.started_up,
        Role::App => true,
    }
}

/// Whether an init container failed and will not run again.
fn init_failed(v: &ContainerView) -> bool {
    v.role == Role::Init
        && !v.will_restart
        && matches!(v.state, CState::Terminated { code, .. } if code != 0)
}

/// The init containers that keep the pod from being initialized, by name;
/// none once an app container has started.
pub fn incomplete_inits(views: &[ContainerView]) -> Vec<&str> {
    if views.iter().any(|v| v.role == Role::App && v.ever_started) {
        return Vec::new();
    }
    views
        .iter()
        .filter(|v| !init_done(v))
        .map(|v| v.name.as_str())
        .collect()
}

/// The pod phase from its containers.
pub fn phase(views: &[ContainerView]) -> &'static str {
    if views.iter().any(init_failed) {
        return "Failed";
    }
    if !incomplete_inits(views).is_empty() {
        return "Pending";
    }
    // Sidecars do not decide the phase.
    let apps: Vec<&ContainerView> = views.iter().filter(|v| v.role == Role::App).collect();
    if apps.is_empty() {
        return "Pending";
    }
    let finished: Vec<_> = apps
        .iter()
        .filter_map(|v| match &v.state {
            CState::Terminated { code, .. } if !v.will_restart => Some(*code),
            _ => None,
        })
        .collect();
    if finished.len() == apps.len() {
        return if finished.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if apps.iter().any(|v| v.ever_started) {
        "Running"
    } else {
        "Pending"
    }
}

/// Whether the pod has finished (Succeeded or Failed): its sidecars are
/// then stopped and not restarted.
pub fn finished(views: &[ContainerView]) -> bool {
    matches!(phase(views), "Succeeded" | "Failed")
}

/// Kubernetes' QoS class from requests and limits.
pub fn qos_class(pod: &v1::Pod) -> &'static str {
    let containers: Vec<&v1::Container> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(&s.init_containers))
        .collect();
    let any_set = containers.iter().any(|c| {
        c.resources
            .as_ref()
            .is_some_and(|r| !r.limits.is_empty() || !r.requests.is_empty())
    });
    if !any_set {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let Some(r) = &c.resources else { return false };
        ["cpu", "memory"].iter().all(|k| {
            r.limits
                .get(*k)
                .is_some_and(|l| r.requests.get(*k).is_none_or(|q| q == l))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Container names as the kubelet lists them in a condition: `[a b]`.
fn bracketed(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// The full status; transition times carry over from `previous`.
pub fn pod_status(
    pod: &v1::Pod,
    views: &[ContainerView],
    host_ip: &str,
    pod_ip: &str,
    start_time: &str,
    previous: Option<&v1::PodStatus>,
) -> v1::PodStatus {
    // Sidecars count for readiness; init containers that ran to their end
    // do not.
    let counted = |v: &&ContainerView| v.role != Role::Init;
    let unready: Vec<&str> = views
        .iter()
        .filter(counted)
        .filter(|v| !v.ready)
        .map(|v| v.name.as_str())
        .collect();
    let all_ready = views.iter().any(|v| v.role == Role::App) && unready.is_empty();
    let incomplete = incomplete_inits(views);
    let now = skiff_objects::now_rfc3339();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.r#type == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        let (reason, message) = if ok {
            (String::new(), String::new())
        } else {
            (reason.to_owned(), message)
        };
        v1::PodCondition {
            r#type: kind.into(),
            status: status.into(),
            last_transition_time: since,
            reason,
            message,
            ..Default::default()
        }
    };
    let unready_message = format!("containers with unready status: {}", bracketed(&unready));
    let pod_ip = pod_ip.to_string();
    let statuses = |role: fn(&ContainerView) -> bool| -> Vec<v1::ContainerStatus> {
        views
            .iter()
            .filter(|v| role(v))
            .map(|v| v1::ContainerStatus {
                name: v.name.clone(),
                state: Some(to_state(&v.state, &v.id)),
                last_state: v.last.as_ref().map(|l| Box::new(to_state(l, &v.id))),
                ready: v.ready,
                restart_count: v.restarts,
                image: v.image.clone(),
                image_id: v.image_id.clone(),
                container_id: if v.ever_started {
                    format!("containerd://{}", v.id)
                } else {
                    String::new()
                },
                started: Some(v.started && matches!(v.state, CState::Running { .. })),
            })
            .collect()
    };
    v1::PodStatus {
        phase: phase(views).into(),
        conditions: vec![
            condition("PodScheduled", true, "", String::new()),
            condition(
                "Initialized",
                incomplete.is_empty(),
                "ContainersNotInitialized",
                format!(
                    "containers with incomplete status: {}",
                    bracketed(&incomplete)
                ),
            ),
            condition(
                "ContainersReady",
                all_ready,
                "ContainersNotReady",
                unready_message.clone(),
            ),
            condition("Ready", all_ready, "ContainersNotReady", unready_message),
        ],
        host_ip: host_ip.to_string(),
        pod_ip: pod_ip.clone(),
        pod_ips: if pod_ip.is_empty() {
            vec![]
        } else {
            vec![v1::PodIp { ip: pod_ip }]
        },
        start_time: start_time.to_string(),
        container_statuses: statuses(|v| v.role == Role::App),
        init_container_statuses: statuses(|v| v.role != Role::App),
        qos_class: qos_class(pod).into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: CState, will_restart: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            id: "u_c".into(),
            role: Role::App,
            image: "busybox".into(),
            image_id: String::new(),
            state,
            last: None,
            ready: false,
            restarts: 0,
            will_restart,
            ever_started: true,
            started: false,
            started_up: true,
        }
    }

    fn terminated(code: u32) -> CState {
        CState::Terminated {
            code,
            reason: String::new(),
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    fn running() -> CState {
        CState::Running {
            started_at: String::new(),
        }
    }

    fn waiting(reason: &str) -> CState {
        CState::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    /// A container `name` of `role` in `state`, ever started unless it waits.
    fn of(name: &str, role: Role, state: CState, will_restart: bool) -> ContainerView {
        let ever_started = !matches!(state, CState::Waiting { .. }) || will_restart;
        let running = matches!(state, CState::Running { .. });
        ContainerView {
            name: name.into(),
            role,
            ever_started,
            started: running,
            started_up: ever_started,
            ready: running,
            ..view(state, will_restart)
        }
    }

    #[test]
    fn init_containers_keep_the_pod_pending_until_done_and_fail_it_for_good() {
        let app = || of("app", Role::App, waiting("PodInitializing"), false);
        let init = |state, will_restart| of("init", Role::Init, state, will_restart);
        let side = |state| of("side", Role::Sidecar, state, false);
        let cases = [
            (
                "first init running",
                vec![init(running(), false), app()],
                "Pending",
            ),
            (
                "init crash-looping",
                vec![init(waiting("CrashLoopBackOff"), true), app()],
                "Pending",
            ),
            (
                "init failed, to run again (OnFailure)",
                vec![init(terminated(1), true), app()],
                "Pending",
            ),
            (
                "init failed for good (Never)",
                vec![init(terminated(1), false), app()],
                "Failed",
            ),
            (
                "sidecar not started yet",
                vec![
                    init(terminated(0), false),
                    side(waiting("PodInitializing")),
                    app(),
                ],
                "Pending",
            ),
            (
                "init done, sidecar started, app starting",
                vec![init(terminated(0), false), side(running()), app()],
                "Pending",
            ),
            (
                "app running beside its sidecar",
                vec![side(running()), of("app", Role::App, running(), false)],
                "Running",
            ),
            (
                "app done, sidecar still running: the sidecar does not count",
                vec![side(running()), of("app", Role::App, terminated(0), false)],
                "Succeeded",
            ),
            (
                "app done, sidecar stopped with 143",
                vec![
                    side(terminated(143)),
                    of("app", Role::App, terminated(0), false),
                ],
                "Succeeded",
            ),
        ];
        for (case, views, expected) in cases {
            assert_eq!(phase(&views), expected, "{case}");
        }
        // An app container that started means initialized, whatever the
        // init containers show (their records may be gone).
        let adopted = [
            init(waiting("PodInitializing"), false),
            of("app", Role::App, running(), false),
        ];
        assert!(incomplete_inits(&adopted).is_empty());
        assert_eq!(phase(&adopted), "Running");
    }

    #[test]
    fn init_containers_have_their_own_statuses_and_conditions() {
        let pod = v1::Pod::default();
        let views = [
            of("migrate", Role::Init, terminated(0), false),
            of("proxy", Role::Sidecar, running(), false),
            of("seed", Role::Init, running(), false),
            of("app", Role::App, waiting("PodInitializing"), false),
        ];
        let s = pod_status(&pod, &views, "10.0.0.1", "", "t0", None);
        let names =
            |list: &[v1::ContainerStatus]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&s.init_container_statuses[..]),
            ["migrate", "proxy", "seed"]
        );
        assert_eq!(names(&s.container_statuses[..]), ["app"]);
        assert_eq!(s.phase, "Pending");
        let initialized = &s.conditions[1];
        assert_eq!(
            (initialized.r#type.as_str(), initialized.status.as_str()),
            ("Initialized", "False")
        );
        assert_eq!(initialized.reason, "ContainersNotInitialized");
        assert_eq!(
            initialized.message,
            "containers with incomplete status: [seed]"
        );
        let ready = &s.conditions[3];
        assert_eq!(ready.message, "containers with unready status: [app]");

        // Done: initialized; the sidecar's readiness counts for the pod's.
        let mut views = views;
        views[2] = of("seed", Role::Init, terminated(0), false);
        views[3] = of("app", Role::App, running(), false);
        let s = pod_status(&pod, &views, "10.0.0.1", "", "t0", Some(&s));
        assert_eq!(
            (s.phase.as_str(), s.conditions[1].status.as_str()),
            ("Running", "True")
        );
        assert_eq!(s.conditions[3].status, "True");
        views[1].ready = false;
        let s = pod_status(&pod, &views, "10.0.0.1", "", "t0", Some(&s));
        assert_eq!(s.conditions[3].status, "False");
        assert_eq!(
            s.conditions[3].message,
            "containers with unready status: [proxy]"
        );
    }

    #[test]
    fn a_sidecar_counts_once_started_and_started_is_shown() {
        let pod = v1::Pod::default();
        // Running, its startup probe not passed yet: not started.
        let mut proxy = of("proxy", Role::Sidecar, running(), false);
        proxy.started = false;
        proxy.started_up = false;
        proxy.ready = false;
        let app = of("app", Role::App, waiting("PodInitializing"), false);
        let views = [proxy.clone(), app.clone()];
        assert_eq!(incomplete_inits(&views), ["proxy"]);
        let s = pod_status(&pod, &views, "10.0.0.1", "", "t0", None);
        assert_eq!(s.init_container_statuses[0].started, Some(false));
        assert_eq!(s.phase, "Pending");
        // Started: the init step is done, and shown.
        proxy.started = true;
        proxy.started_up = true;
        let views = [proxy.clone(), app];
        assert!(incomplete_inits(&views).is_empty());
        let s = pod_status(&pod, &views, "10.0.0.1", "", "t0", None);
        assert_eq!(s.init_container_statuses[0].started, Some(true));
        // Restarted since, and not started again yet: still done.
        proxy.started = false;
        assert!(incomplete_inits(&[proxy]).is_empty());
    }

    #[test]
    fn a_termination_message_shows_in_the_terminated_state() {
        let state = CState::Terminated {
            code: 1,
            reason: "Error".into(),
            message: "migration 42 failed".into(),
            started_at: String::new(),
            finished_at: String::new(),
        };
        let shown = to_state(&state, "u_c").terminated.unwrap();
        assert_eq!(shown.message, "migration 42 failed");
        assert_eq!(shown.container_id, "containerd://u_c");
    }

    #[test]
    fn phases_follow_container_states() {
        assert_eq!(phase(&[view(terminated(0), false)]), "Succeeded");
        assert_eq!(phase(&[view(terminated(1), false)]), "Failed");
        assert_eq!(phase(&[view(terminated(1), true)]), "Running");
        let running = CState::Running {
            started_at: String::new(),
        };
        assert_eq!(
            phase(&[view(running, false), view(terminated(0), false)]),
            "Running"
        );
        let mut creating = view(
            CState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            false,
        );
        creating.ever_started = false;
        assert_eq!(phase(&[creating]), "Pending");
    }

    #[test]
    fn transition_times_hold_while_a_condition_holds() {
        let pod = v1::Pod::default();
        let mut v = view(
            CState::Running {
                started_at: String::new(),
            },
            false,
        );
        v.ready = true;
        let mut first = pod_status(&pod, &[v.clone()], "10.0.0.1", "", "t0", None);
        first.conditions[3].last_transition_time = "earlier".into();
        let second = pod_status(&pod, &[v.clone()], "10.0.0.1", "", "t0", Some(&first));
        assert_eq!(second.conditions[3].last_transition_time, "earlier");
        v.ready = false;
        let third = pod_status(&pod, &[v], "10.0.0.1", "", "t0", Some(&first));
        assert_ne!(third.conditions[3].last_transition_time, "earlier");
        assert_eq!(third.conditions[3].status, "False");
    }

    #[test]
    fn qos_classes() {
        let mut pod = v1::Pod {
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container::default()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(qos_class(&pod), "BestEffort");
        let limits: std::collections::BTreeMap<String, String> = [
            ("cpu".to_string(), "1".to_string()),
            ("memory".to_string(), "1Gi".to_string()),
        ]
        .into();
        pod.spec.as_mut().unwrap().containers[0].resources = Some(v1::ResourceRequirements {
            limits: limits.clone(),
            requests: Default::default(),
        });
        assert_eq!(qos_class(&pod), "Guaranteed");
        pod.spec.as_mut().unwrap().containers[0].resources = Some(v1::ResourceRequirements {
            limits: Default::default(),
            requests: limits,
        });
        assert_eq!(qos_class(&pod), "Burstable");
    }
}
