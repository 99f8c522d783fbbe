//! What a DaemonSet controller does on one look, decided without I/O as
//! Kubernetes' DaemonSet controller decides it, from each node's
//! [`Placement`] and the DaemonSet's pods ([`DaemonPod`]):
//! - [`manage`]: a pod for every node that should run one and has none;
//!   finished pods deleted; one pod per node (the oldest), or during a
//!   surge an old and a new one until the new one is available; pods
//!   deleted from nodes that may not keep them and from nodes that are
//!   gone. A node whose pod is still terminating gets its new pod once
//!   the old one is gone.
//! - [`roll`]: a rolling update's next step, once `manage` has nothing to
//!   do. Without surge, old pods are deleted (the unavailable ones at
//!   once, others while fewer than `maxUnavailable` nodes are
//!   unavailable) and `manage` puts new ones in their place; with surge, a
//!   new pod starts beside an old one on up to `maxSurge` nodes (on every
//!   node whose old pod is unavailable), and the old one goes once the new
//!   one is available.
//! - [`count`]: the status counts.
//!
//! Nodes are taken in name order, so the same world gives the same plan.

use std::collections::BTreeMap;

use super::eligibility::Placement;

/// What the controller knows of one of its pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonPod {
    pub name: String,
    /// The node it is bound to (`""`: none).
    pub node: String,
    /// Its `controller-revision-hash` label.
    pub hash: String,
    /// Its `creationTimestamp` (RFC 3339, so that text order is time order).
    pub created: String,
    /// Being deleted.
    pub terminating: bool,
    /// Succeeded or Failed.
    pub phase: String,
    pub ready: bool,
    /// Ready for `minReadySeconds`.
    pub available: bool,
}

impl DaemonPod {
    fn finished(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// A node and where it stands for the DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFit {
    pub name: String,
    pub placement: Placement,
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It failed: replaced (after a back-off per node).
    Failed,
    /// It succeeded: a DaemonSet's pods are meant to run.
    Succeeded,
    /// A second pod on its node.
    Excess,
    /// Its node may not keep it (selector, affinity, a NoExecute taint).
    NotWanted,
    /// Its node is gone: deleted without a grace period, as nothing is
    /// left to stop it.
    NodeGone,
    /// It runs an old template (a rolling update's step).
    Outdated,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub pod: String,
    pub node: String,
    pub why: Why,
}

/// Pods to create and delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes that get a new pod.
    pub create_on: Vec<String>,
    pub delete: Vec<Removal>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty()
    }

    fn remove(&mut self, pod: &DaemonPod, why: Why) {
        self.delete.push(Removal {
            pod: pod.name.clone(),
            node: pod.node.clone(),
            why,
        });
    }
}

/// The pods on each node, oldest first (by creation, then name).
fn by_node(pods: &[DaemonPod]) -> BTreeMap<&str, Vec<&DaemonPod>> {
    let mut nodes: BTreeMap<&str, Vec<&DaemonPod>> = BTreeMap::new();
    for pod in pods {
        nodes.entry(pod.node.as_str()).or_default().push(pod);
    }
    for here in nodes.values_mut() {
        here.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    }
    nodes
}

/// Kubernetes' `manage`: what keeps one pod (of the template whose revision
/// is `hash`) on each node that should run one. `surge`: the update
/// strategy allows an old and a new pod on one node.
pub fn manage(nodes: &[NodeFit], pods: &[DaemonPod], hash: &str, surge: bool) -> Plan {
    let on = by_node(pods);
    let mut plan = Plan::default();
    for node in nodes {
        let here = on.get(node.name.as_str()).map_or(&[][..], Vec::as_slice);
        let Placement {
            should_run,
            should_continue_running,
        } = node.placement;
        if should_run && here.is_empty() {
            plan.create_on.push(node.name.clone());
        } else if should_continue_running {
            keep_one(&mut plan, node, here, hash, surge);
        } else {
            for pod in here.iter().filter(|p| !p.terminating) {
                plan.remove(pod, Why::NotWanted);
            }
        }
    }
    let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    for (node, here) in &on {
        if !known.contains(node) {
            // Terminating ones too: no node will ever confirm them gone.
            for pod in here {
                plan.remove(pod, Why::NodeGone);
            }
        }
    }
    plan
}

/// The pods of a node that may keep them: finished ones go; of the rest
/// the oldest stays, or with `surge` the oldest of the current template
/// and the oldest of an old one, until the new one is available (or the
/// old one is no longer Ready).
fn keep_one(plan: &mut Plan, node: &NodeFit, here: &[&DaemonPod], hash: &str, surge: bool) {
    let mut running = Vec::new();
    for &pod in here.iter().filter(|p| !p.terminating) {
        if pod.finished() {
            let why = if pod.phase == "Failed" {
                Why::Failed
            } else {
                Why::Succeeded
            };
            plan.remove(pod, why);
        } else {
            running.push(pod);
        }
    }
    if !surge {
        for pod in running.iter().skip(1) {
            plan.remove(pod, Why::Excess);
        }
        return;
    }
    if running.is_empty() {
        // Only terminating or finished pods: a new one, unless the node
        // merely keeps what it has.
        if node.placement.should_run {
            plan.create_on.push(node.name.clone());
        }
        return;
    }
    let (mut newest, mut oldest): (Option<&DaemonPod>, Option<&DaemonPod>) = (None, None);
    for pod in running {
        let slot = if pod.hash == hash {
            &mut newest
        } else {
            &mut oldest
        };
        if slot.is_none() {
            *slot = Some(pod);
        } else {
            plan.remove(pod, Why::Excess);
        }
    }
    if let (Some(new), Some(old)) = (newest, oldest) {
        if !old.ready || new.available {
            plan.remove(old, Why::Outdated);
        }
    }
}

/// A node's live pod of the current template and its old one.
type Pair<'a> = (Option<&'a DaemonPod>, Option<&'a DaemonPod>);

/// A node's live pods as a rolling update sees them; `None` when it has
/// more than one of the current template or of old ones (`manage` prunes
/// those first).
fn new_and_old<'a>(here: &[&'a DaemonPod], hash: &str) -> Option<Pair<'a>> {
    let (mut new, mut old) = (None, None);
    for &pod in here.iter().filter(|p| !p.terminating) {
        let slot = if pod.hash == hash { &mut new } else { &mut old };
        if slot.replace(pod).is_some() {
            return None;
        }
    }
    Some((new, old))
}

/// Kubernetes' `rollingUpdate`: the next step towards every node running
/// the template of `hash`, within `max_surge` extra pods and
/// `max_unavailable` nodes without an available pod.
pub fn roll(
    nodes: &[NodeFit],
    pods: &[DaemonPod],
    hash: &str,
    max_surge: i32,
    max_unavailable: i32,
) -> Plan {
    let on = by_node(pods);
    // The nodes that should run a pod and those that run one; those of
    // finished pods being deleted do not count.
    let mut considered: Vec<(&NodeFit, Vec<&DaemonPod>)> = Vec::new();
    for node in nodes {
        let here: Vec<&DaemonPod> = on
            .get(node.name.as_str())
            .map(|listed| {
                let counted = listed.iter().filter(|p| !(p.finished() && p.terminating));
                counted.copied().collect()
            })
            .unwrap_or_default();
        if node.placement.should_run || !here.is_empty() {
            considered.push((node, here));
        }
    }
    if max_surge == 0 {
        replace_in_place(&considered, hash, max_unavailable)
    } else {
        surge_then_replace(&considered, hash, max_surge, max_unavailable)
    }
}

/// Without surge: old pods deleted so that at most `max_unavailable` nodes
/// are without an available pod (an unavailable old pod always may go).
fn replace_in_place(
    considered: &[(&NodeFit, Vec<&DaemonPod>)],
    hash: &str,
    max_unavailable: i32,
) -> Plan {
    let max_unavailable = usize::try_from(max_unavailable).unwrap_or(0);
    let mut unavailable = 0;
    let mut plan = Plan::default();
    let mut candidates = Vec::new();
    for (_, here) in considered {
        match new_and_old(here, hash) {
            None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
            Some((Some(new), None)) => {
                if !new.available {
                    unavailable += 1;
                }
            }
            Some((None, Some(old))) => {
                if !old.available {
                    plan.remove(old, Why::Outdated);
                } else if unavailable < max_unavailable {
                    candidates.push(old);
                }
            }
        }
    }
    let room = max_unavailable.saturating_sub(unavailable);
    for old in candidates.into_iter().take(room) {
        plan.remove(old, Why::Outdated);
    }
    plan
}

/// With surge: a new pod beside an old one on up to `max_surge` nodes at a
/// time (at once where the old one is unavailable); an old pod deleted
/// once the new one beside it is available; an old pod on a node that
/// should no longer run one deleted within `max_unavailable`.
fn surge_then_replace(
    considered: &[(&NodeFit, Vec<&DaemonPod>)],
    hash: &str,
    max_surge: i32,
    max_unavailable: i32,
) -> Plan {
    let mut plan = Plan::default();
    let mut surging = 0;
    let mut available = 0;
    let mut candidates: Vec<&str> = Vec::new();
    let mut unwanted: Vec<&DaemonPod> = Vec::new();
    let desired = considered
        .iter()
        .filter(|(node, _)| node.placement.should_run)
        .count();
    for (node, here) in considered {
        let Some((new, old)) = new_and_old(here, hash) else {
            surging += 1;
            continue;
        };
        let counted = old.or(new);
        if counted.is_some_and(|p| p.available) {
            available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                let should_run = node.placement.should_run;
                if !old.available {
                    if should_run {
                        plan.create_on.push(node.name.clone());
                    } else {
                        plan.remove(old, Why::NotWanted);
                    }
                } else if !should_run {
                    unwanted.push(old);
                } else if surging < max_surge {
                    candidates.push(node.name.as_str());
                }
            }
            (Some(new), Some(old)) => {
                if new.available {
                    plan.remove(old, Why::Outdated);
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = usize::try_from(max_surge - surging).unwrap_or(0);
    for node in candidates.into_iter().take(room) {
        plan.create_on.push(node.to_owned());
    }
    let missing = desired.saturating_sub(available);
    let may_go = usize::try_from(max_unavailable)
        .unwrap_or(0)
        .saturating_sub(missing);
    for old in unwanted.into_iter().take(may_go) {
        plan.remove(old, Why::NotWanted);
    }
    plan
}

/// The status counts, as Kubernetes counts them: per node that should run
/// a pod, its oldest pod (finished ones being deleted left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
}

impl Counts {
    /// Nodes that should run a pod and have no available one.
    pub fn unavailable(&self) -> i32 {
        self.desired - self.available
    }
}

/// Counts nodes and pods for the status.
pub fn count(nodes: &[NodeFit], pods: &[DaemonPod], hash: &str) -> Counts {
    let on = by_node(pods);
    let mut counts = Counts::default();
    for node in nodes {
        let oldest = on
            .get(node.name.as_str())
            .and_then(|here| here.iter().find(|p| !(p.finished() && p.terminating)));
        match (node.placement.should_run, oldest) {
            (true, None) => counts.desired += 1,
            (true, Some(pod)) => {
                counts.desired += 1;
                counts.current += 1;
                counts.ready += i32::from(pod.ready);
                counts.available += i32::from(pod.ready && pod.available);
                counts.updated += i32::from(pod.hash == hash);
            }
            (false, Some(_)) => counts.misscheduled += 1,
            (false, None) => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "new";
    const OLD: &str = "old";

    fn node(name: &str, should_run: bool, should_continue_running: bool) -> NodeFit {
        NodeFit {
            name: name.to_owned(),
            placement: Placement {
                should_run,
                should_continue_running,
            },
        }
    }

    fn here(name: &str) -> NodeFit {
        node(name, true, true)
    }

    /// An available pod of `hash` on `node`, created at second `second`.
    fn pod(name: &str, node: &str, hash: &str, second: u32) -> DaemonPod {
        DaemonPod {
            name: name.to_owned(),
            node: node.to_owned(),
            hash: hash.to_owned(),
            created: format!("2026-01-01T00:00:{second:02}Z"),
            terminating: false,
            phase: "Running".to_owned(),
            ready: true,
            available: true,
        }
    }

    fn unavailable(mut pod: DaemonPod) -> DaemonPod {
        pod.ready = false;
        pod.available = false;
        pod
    }

    fn terminating(mut pod: DaemonPod) -> DaemonPod {
        pod.terminating = true;
        pod
    }

    fn deleted(plan: &Plan) -> Vec<(&str, Why)> {
        let removals = plan.delete.iter();
        removals.map(|r| (r.pod.as_str(), r.why)).collect()
    }

    #[test]
    fn every_node_that_should_run_a_pod_gets_one_and_only_one() {
        let nodes = [here("a"), here("b"), here("c")];
        let pods = [
            pod("b-1", "b", NEW, 1),
            pod("c-2", "c", NEW, 2),
            pod("c-1", "c", NEW, 1),
        ];
        let plan = manage(&nodes, &pods, NEW, false);
        assert_eq!(plan.create_on, ["a"]);
        assert_eq!(deleted(&plan), [("c-2", Why::Excess)], "the oldest stays");
        let settled = [pod("a-1", "a", NEW, 1), pods[0].clone(), pods[2].clone()];
        assert!(manage(&nodes, &settled, NEW, false).is_empty());
    }

    #[test]
    fn pods_leave_nodes_that_may_not_keep_them_and_nodes_that_are_gone() {
        let nodes = [
            node("relabelled", false, false),
            node("silent", false, true),
        ];
        let pods = [
            pod("r-1", "relabelled", NEW, 1),
            terminating(pod("r-0", "relabelled", NEW, 0)),
            pod("s-1", "silent", NEW, 1),
            pod("g-1", "gone", NEW, 1),
            terminating(pod("g-0", "gone", NEW, 0)),
        ];
        let plan = manage(&nodes, &pods, NEW, false);
        assert!(plan.create_on.is_empty(), "{plan:?}");
        assert_eq!(
            deleted(&plan),
            [
                ("r-1", Why::NotWanted),
                ("g-0", Why::NodeGone),
                ("g-1", Why::NodeGone)
            ]
        );
        // The silent node keeps its pod and gets no other.
        assert!(!plan.delete.iter().any(|r| r.node == "silent"));
    }

    #[test]
    fn finished_pods_are_replaced_and_a_terminating_one_first_goes() {
        let nodes = [here("a"), here("b"), here("c")];
        let mut failed = pod("a-1", "a", NEW, 1);
        failed.phase = "Failed".to_owned();
        let mut done = pod("b-1", "b", NEW, 1);
        done.phase = "Succeeded".to_owned();
        let pods = [failed, done, terminating(pod("c-1", "c", OLD, 1))];
        let plan = manage(&nodes, &pods, NEW, false);
        assert_eq!(
            deleted(&plan),
            [("a-1", Why::Failed), ("b-1", Why::Succeeded)]
        );
        // Nothing new yet: the nodes still have pods (finished or
        // terminating); the next look, once they are gone, creates.
        assert!(plan.create_on.is_empty(), "{plan:?}");
    }

    #[test]
    fn without_surge_old_pods_go_within_max_unavailable_and_unavailable_ones_at_once() {
        let nodes = [here("a"), here("b"), here("c"), here("d")];
        let pods = [
            pod("a-1", "a", OLD, 1),
            pod("b-1", "b", OLD, 1),
            unavailable(pod("c-1", "c", OLD, 1)),
            pod("d-1", "d", OLD, 1),
        ];
        let plan = roll(&nodes, &pods, NEW, 0, 1);
        assert!(plan.create_on.is_empty(), "manage creates the new ones");
        assert_eq!(
            deleted(&plan),
            [("c-1", Why::Outdated), ("a-1", Why::Outdated)]
        );
        let plan = roll(&nodes, &pods, NEW, 0, 2);
        assert_eq!(plan.delete.len(), 3);

        // One node is being replaced (its new pod is not available yet):
        // with maxUnavailable 1, nothing more goes.
        let pods = [
            unavailable(pod("a-2", "a", NEW, 2)),
            pod("b-1", "b", OLD, 1),
            pod("c-1", "c", OLD, 1),
            pod("d-1", "d", OLD, 1),
        ];
        assert!(roll(&nodes, &pods, NEW, 0, 1).is_empty());
        // A node without any pod counts as unavailable too.
        let pods = [pod("b-1", "b", OLD, 1), pod("c-1", "c", OLD, 1)];
        let nodes = [here("a"), here("b"), here("c")];
        assert!(roll(&nodes, &pods, NEW, 0, 1).is_empty());
        // Done: every node runs the new template.
        let pods = [pod("a-2", "a", NEW, 2), pod("b-2", "b", NEW, 2)];
        assert!(roll(&nodes[..2], &pods, NEW, 0, 1).is_empty());
    }

    #[test]
    fn with_surge_new_pods_start_beside_old_ones_which_go_once_they_are_available() {
        let nodes = [here("a"), here("b"), here("c")];
        let pods = [
            pod("a-1", "a", OLD, 1),
            pod("b-1", "b", OLD, 1),
            unavailable(pod("c-1", "c", OLD, 1)),
        ];
        // c's old pod is unavailable: it gets its new pod at once, beyond
        // maxSurge; of a and b, only one within maxSurge 1.
        let plan = roll(&nodes, &pods, NEW, 1, 0);
        assert_eq!(plan.create_on, ["c", "a"]);
        assert!(plan.delete.is_empty());

        let starting = [
            pod("a-1", "a", OLD, 1),
            unavailable(pod("a-2", "a", NEW, 2)),
            pod("b-1", "b", OLD, 1),
            pod("c-1", "c", OLD, 1),
        ];
        // a is surging: nothing more.
        assert!(roll(&nodes, &starting, NEW, 1, 0).is_empty());
        let started = [
            pod("a-1", "a", OLD, 1),
            pod("a-2", "a", NEW, 2),
            pod("b-1", "b", OLD, 1),
            pod("c-1", "c", OLD, 1),
        ];
        let plan = roll(&nodes, &started, NEW, 1, 0);
        assert_eq!(deleted(&plan), [("a-1", Why::Outdated)]);
        assert_eq!(plan.create_on, ["b"]);

        // manage keeps both while the new one starts, then the new one.
        assert!(manage(&nodes, &starting, NEW, true).is_empty());
        let plan = manage(&nodes, &started, NEW, true);
        assert_eq!(deleted(&plan), [("a-1", Why::Outdated)]);
    }

    #[test]
    fn the_status_counts_the_oldest_pod_of_each_node() {
        let nodes = [
            here("a"),
            here("b"),
            here("c"),
            here("d"),
            node("e", false, true),
        ];
        let mut waiting = pod("c-1", "c", NEW, 1);
        waiting.available = false;
        let pods = [
            pod("a-1", "a", NEW, 1),
            pod("a-2", "a", OLD, 2),
            pod("b-1", "b", OLD, 1),
            waiting,
            pod("e-1", "e", NEW, 1),
            pod("x-1", "gone", NEW, 1),
        ];
        let counts = count(&nodes, &pods, NEW);
        let expected = Counts {
            desired: 4,
            current: 3,
            misscheduled: 1,
            ready: 3,
            available: 2,
            updated: 2,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.unavailable(), 2);
    }
}
