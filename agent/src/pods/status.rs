//! A pod's status as Kubernetes shows it, computed from what the worker
//! knows of each container: `phase`, the `PodScheduled`/`Initialized`/
//! `ContainersReady`/`Ready` conditions (transition times kept while a
//! condition holds), `containerStatuses` with state, last state, restart
//! count and readiness, and the QoS class.

use skiff_proto::v1;

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
        started_at: String,
        finished_at: String,
    },
}

/// What the status needs to know about one container.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub state: CState,
    pub last: Option<CState>,
    pub ready: bool,
    pub restarts: i32,
    /// Terminated now but restarting under the restart policy.
    pub will_restart: bool,
    pub ever_started: bool,
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
            started_at,
            finished_at,
        } => v1::ContainerState {
            terminated: Some(v1::ContainerStateTerminated {
                exit_code: Some(*code as i32),
                signal: 0,
                reason: reason.clone(),
                message: String::new(),
                started_at: started_at.clone(),
                finished_at: finished_at.clone(),
                container_id: format!("containerd://{container_id}"),
            }),
            ..Default::default()
        },
    }
}

/// The pod phase from its containers.
pub fn phase(views: &[ContainerView]) -> &'static str {
    if views.is_empty() {
        return "Pending";
    }
    let finished: Vec<_> = views
        .iter()
        .filter_map(|v| match &v.state {
            CState::Terminated { code, .. } if !v.will_restart => Some(*code),
            _ => None,
        })
        .collect();
    if finished.len() == views.len() {
        return if finished.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if views.iter().any(|v| v.ever_started) {
        "Running"
    } else {
        "Pending"
    }
}

/// Kubernetes' QoS class from requests and limits.
pub fn qos_class(pod: &v1::Pod) -> &'static str {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
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

/// The full status; transition times carry over from `previous`.
pub fn pod_status(
    pod: &v1::Pod,
    views: &[ContainerView],
    host_ip: &str,
    pod_ip: &str,
    start_time: &str,
    previous: Option<&v1::PodStatus>,
) -> v1::PodStatus {
    let all_ready = !views.is_empty() && views.iter().all(|v| v.ready);
    let now = skiff_values::now_rfc3339();
    let condition = |kind: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.r#type == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        v1::PodCondition {
            r#type: kind.into(),
            status: status.into(),
            last_transition_time: since,
            reason: if ok || kind == "PodScheduled" || kind == "Initialized" {
                String::new()
            } else {
                "ContainersNotReady".into()
            },
            ..Default::default()
        }
    };
    let pod_ip = pod_ip.to_string();
    v1::PodStatus {
        phase: phase(views).into(),
        conditions: vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ],
        host_ip: host_ip.to_string(),
        pod_ip: pod_ip.clone(),
        pod_ips: if pod_ip.is_empty() {
            vec![]
        } else {
            vec![v1::PodIp { ip: pod_ip }]
        },
        start_time: start_time.to_string(),
        container_statuses: views
            .iter()
            .map(|v| v1::ContainerStatus {
                name: v.name.clone(),
                state: Some(to_state(&v.state, &v.id)),
                last_state: v.last.as_ref().map(|l| to_state(l, &v.id)),
                ready: v.ready,
                restart_count: v.restarts,
                image: v.image.clone(),
                image_id: v.image_id.clone(),
                container_id: if v.ever_started {
                    format!("containerd://{}", v.id)
                } else {
                    String::new()
                },
                started: Some(matches!(v.state, CState::Running { .. })),
            })
            .collect(),
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
            image: "busybox".into(),
            image_id: String::new(),
            state,
            last: None,
            ready: false,
            restarts: 0,
            will_restart,
            ever_started: true,
        }
    }

    fn terminated(code: u32) -> CState {
        CState::Terminated {
            code,
            reason: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        }
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
