//! Where a DaemonSet's pods belong, decided as Kubernetes'
//! `NodeShouldRunDaemonPod` decides it: the template's `nodeName` (when
//! set), its `nodeSelector`, its required node affinity, and the node's
//! taints against the pod's tolerations, among them those every DaemonSet
//! pod gets ([`add_daemon_tolerations`]). A taint the pod does not tolerate
//! with effect NoSchedule or NoExecute keeps a new pod off the node; only a
//! NoExecute one removes a pod already there. So a silent node (tainted
//! unreachable, NoSchedule and NoExecute) gets no new pod and keeps the
//! one it has. Readiness and `spec.unschedulable` are no reasons of their
//! own (DaemonSet pods tolerate Kubernetes' `not-ready` and
//! `unschedulable` taints), nor are free resources and host ports: the
//! controller binds its pods to their nodes itself, as the kubelet would
//! admit them.

use std::collections::BTreeMap;

use skiff_proto::v1;

use skiff_objects::placement::{
    self, node_matches_terms, node_selector_matches, untolerated, NodeSelectorTerm,
};

/// Whether a node should get a DaemonSet's pod, and whether a pod already
/// there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub should_run: bool,
    pub should_continue_running: bool,
}

impl Placement {
    /// Nowhere near: neither a new pod nor the one there.
    pub const NEVER: Placement = Placement {
        should_run: false,
        should_continue_running: false,
    };
    /// A pod belongs here.
    pub const HERE: Placement = Placement {
        should_run: true,
        should_continue_running: true,
    };
}

/// What a DaemonSet's pods ask of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    node_name: String,
    node_selector: BTreeMap<String, String>,
    affinity: Option<Vec<NodeSelectorTerm>>,
    tolerations: Vec<v1::Toleration>,
}

impl Requirements {
    /// What the pods with `spec` (the tolerations of
    /// [`add_daemon_tolerations`] included) and the required node affinity
    /// `affinity` ask.
    pub fn new(spec: &v1::PodSpec, affinity: Option<Vec<NodeSelectorTerm>>) -> Requirements {
        Requirements {
            node_name: spec.node_name.clone(),
            node_selector: spec.node_selector.clone(),
            affinity,
            tolerations: spec.tolerations.clone(),
        }
    }

    /// Where `node` stands.
    pub fn placement(&self, node: &v1::Node) -> Placement {
        let (name, labels) = match &node.metadata {
            Some(meta) => (meta.name.as_str(), &meta.labels),
            None => return Placement::NEVER,
        };
        if !self.node_name.is_empty() && self.node_name != name {
            return Placement::NEVER;
        }
        if !node_selector_matches(&self.node_selector, labels) {
            return Placement::NEVER;
        }
        if let Some(terms) = &self.affinity {
            if !node_matches_terms(terms, name, labels) {
                return Placement::NEVER;
            }
        }
        let taints = node.spec.as_ref().map_or(&[][..], |s| s.taints.as_slice());
        let keeps_off = |effect: &str| effect == "NoSchedule" || effect == "NoExecute";
        if untolerated(taints, &self.tolerations, keeps_off).is_none() {
            return Placement::HERE;
        }
        let evicts = |effect: &str| effect == "NoExecute";
        Placement {
            should_run: false,
            should_continue_running: untolerated(taints, &self.tolerations, evicts).is_none(),
        }
    }
}

/// Adds the tolerations Kubernetes gives every DaemonSet pod (its
/// `AddOrUpdateDaemonPodTolerations`), each `Exists` without a time limit:
/// `not-ready` and `unreachable` NoExecute (node problems never evict
/// them), `disk-pressure`, `memory-pressure`, `pid-pressure` and
/// `unschedulable` NoSchedule, and `network-unavailable` NoSchedule for
/// a pod in the host's network. One the template has for the same key and
/// effect is replaced in place; running it again changes nothing.
pub fn add_daemon_tolerations(spec: &mut v1::PodSpec) {
    let mut wanted = vec![
        (placement::TAINT_NOT_READY, "NoExecute"),
        (placement::TAINT_UNREACHABLE, "NoExecute"),
        (placement::TAINT_DISK_PRESSURE, "NoSchedule"),
        (placement::TAINT_MEMORY_PRESSURE, "NoSchedule"),
        (placement::TAINT_PID_PRESSURE, "NoSchedule"),
        (placement::TAINT_UNSCHEDULABLE, "NoSchedule"),
    ];
    if spec.host_network {
        wanted.push((placement::TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    for (key, effect) in wanted {
        let toleration = v1::Toleration {
            key: key.to_owned(),
            operator: "Exists".to_owned(),
            value: String::new(),
            effect: effect.to_owned(),
            toleration_seconds: None,
        };
        let same = spec.tolerations.iter().position(|t| {
            t.key == key && t.effect == effect && t.operator == "Exists" && t.value.is_empty()
        });
        match same {
            Some(i) => spec.tolerations[i] = toleration,
            None => spec.tolerations.push(toleration),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::placement::NodeSelectorRequirement;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> v1::Node {
        v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                taints: taints
                    .iter()
                    .map(|(key, effect)| v1::Taint {
                        key: key.to_string(),
                        effect: effect.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn daemon_spec() -> v1::PodSpec {
        let mut spec = v1::PodSpec::default();
        add_daemon_tolerations(&mut spec);
        spec
    }

    #[test]
    fn every_daemon_pod_tolerates_node_problems_and_cordons_once() {
        let mut spec = v1::PodSpec {
            tolerations: vec![v1::Toleration {
                key: placement::TAINT_UNREACHABLE.into(),
                operator: "Exists".into(),
                effect: "NoExecute".into(),
                toleration_seconds: Some(300),
                ..Default::default()
            }],
            ..Default::default()
        };
        add_daemon_tolerations(&mut spec);
        let keys: Vec<(&str, &str)> = spec
            .tolerations
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (placement::TAINT_UNREACHABLE, "NoExecute"),
                (placement::TAINT_NOT_READY, "NoExecute"),
                (placement::TAINT_DISK_PRESSURE, "NoSchedule"),
                (placement::TAINT_MEMORY_PRESSURE, "NoSchedule"),
                (placement::TAINT_PID_PRESSURE, "NoSchedule"),
                (placement::TAINT_UNSCHEDULABLE, "NoSchedule"),
            ]
        );
        // The template's 300 s limit is gone.
        assert_eq!(spec.tolerations[0].toleration_seconds, None);
        let once = spec.clone();
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec, once);

        spec.host_network = true;
        add_daemon_tolerations(&mut spec);
        let last = spec.tolerations.last().unwrap();
        assert_eq!(
            (last.key.as_str(), last.effect.as_str()),
            (placement::TAINT_NETWORK_UNAVAILABLE, "NoSchedule")
        );
    }

    #[test]
    fn taints_decide_whether_a_pod_comes_and_whether_it_stays() {
        let wants = Requirements::new(&daemon_spec(), None);
        // (should run, should continue running)
        let stand = |taints: &[(&str, &str)]| {
            let placement = wants.placement(&node("n1", &[], taints));
            (placement.should_run, placement.should_continue_running)
        };
        assert_eq!(stand(&[]), (true, true));
        // Tolerated: node problems and a cordon.
        let troubled = [
            (placement::TAINT_NOT_READY, "NoExecute"),
            (placement::TAINT_UNSCHEDULABLE, "NoSchedule"),
        ];
        assert_eq!(stand(&troubled), (true, true));
        // A silent node: no new pod, the one there stays.
        let silent = [
            (placement::TAINT_UNREACHABLE, "NoSchedule"),
            (placement::TAINT_UNREACHABLE, "NoExecute"),
        ];
        assert_eq!(stand(&silent), (false, true));
        // Someone else's taints: NoSchedule keeps new pods off, NoExecute
        // removes the one there, PreferNoSchedule does neither.
        assert_eq!(stand(&[("dedicated", "NoSchedule")]), (false, true));
        assert_eq!(stand(&[("dedicated", "NoExecute")]), (false, false));
        assert_eq!(stand(&[("dedicated", "PreferNoSchedule")]), (true, true));

        let mut tolerant = daemon_spec();
        tolerant.tolerations.push(v1::Toleration {
            key: "dedicated".into(),
            operator: "Exists".into(),
            ..Default::default()
        });
        let tolerant = Requirements::new(&tolerant, None);
        let edge = node("n1", &[], &[("dedicated", "NoExecute")]);
        assert_eq!(tolerant.placement(&edge), Placement::HERE);
    }

    #[test]
    fn node_name_selector_and_affinity_choose_the_nodes() {
        let mut spec = daemon_spec();
        spec.node_selector.insert("role".into(), "edge".into());
        let affinity = vec![NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(vec!["a".into()]),
            }]),
            ..Default::default()
        }];
        let wants = Requirements::new(&spec, Some(affinity));
        let edge_a = node("n1", &[("role", "edge"), ("zone", "a")], &[]);
        let edge_b = node("n2", &[("role", "edge"), ("zone", "b")], &[]);
        let core_a = node("n3", &[("role", "core"), ("zone", "a")], &[]);
        assert_eq!(wants.placement(&edge_a), Placement::HERE);
        assert_eq!(wants.placement(&edge_b), Placement::NEVER);
        assert_eq!(wants.placement(&core_a), Placement::NEVER);

        let mut pinned = daemon_spec();
        pinned.node_name = "n2".into();
        let pinned = Requirements::new(&pinned, None);
        assert_eq!(pinned.placement(&edge_a), Placement::NEVER);
        assert_eq!(pinned.placement(&edge_b), Placement::HERE);
    }
}
