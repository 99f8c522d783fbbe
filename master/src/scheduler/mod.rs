//! The scheduler, on the leader: binds every unbound pod to a node.
//!
//! The bound pods' charges (`NodeUsage`) and the unbound pods
//! (`PendingReads`) are followed from pod and node events, as
//! kube-scheduler's cache and queue follow them. Each pass takes a view of
//! the nodes, then places the pending pods one after another, charging
//! each placement to its node so later pods in the same pass see it.
//! Filters: node Ready and schedulable, requested CPU/memory/pod count
//! within allocatable, `nodeSelector`, required node affinity, taints vs
//! tolerations, free host ports. Scores: least allocated, plus spreading
//! the replicas of one owner across nodes. Bindings are
//! conditional writes (a pod changed meanwhile is simply retried), issued
//! concurrently so they share Raft entries. A pod that fits nowhere stays
//! Pending with `PodScheduled=False` saying why, and is set aside until
//! it changes or nodes may take more (a node changed, a bound pod's charge
//! was freed, or a second passed). Both outcomes are Events on the pod, as
//! kube-scheduler records them: `Scheduled` ("Successfully assigned
//! ns/pod to node"), and `FailedScheduling` with the reason, which each
//! retry of a pod that still fits nowhere counts up rather than repeats.
//!
//! A pod's `persistentVolumeClaim` volumes ([`volumes`]) filter too: a
//! missing claim keeps it unscheduled, a bound claim's volume node
//! affinity pins it (a `local-path` volume to its node), and an unbound
//! WaitForFirstConsumer claim is given the chosen node
//! (`volume.kubernetes.io/selected-node`) before the pod is bound, for the
//! volume controller to bind or provision its volume there.

pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use crate::controllers::{Context, ReconcileError};
use crate::events::{EventRecorder, EventType, InvolvedObject};
use crate::store::state_machine::{KindFilter, Notification};
use crate::writer;
use skiff_objects::placement::{self, node_selector_matches, untolerated};
use skiff_objects::pods::{self, PodSpec};
use skiff_objects::storage::SELECTED_NODE_ANNOTATION;
use skiff_objects::Quantity;
use skiff_objects::{owners, ObjectExt};
use skiff_objects::{IntoObject, Kind};
use volumes::{volume_demand, VolumeDemand};

/// Pods a node takes when it does not say (Kubernetes' default).
const DEFAULT_MAX_PODS: i64 = 110;
/// Bindings in flight at once.
const MAX_CONCURRENT_BINDS: usize = 512;
/// The component its Events are recorded as (kube-scheduler's name).
const COMPONENT: &str = "default-scheduler";

/// Runs scheduling passes until `shutdown`.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    // Pods and nodes: what the node usage follows and what a pass acts on.
    let mut live = ctx
        .store
        .subscribe_to(KindFilter::only(&[Kind::Pod, Kind::Node]));
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let mut rebuild = tokio::time::interval(FULL_REBUILD_EVERY);
    let mut usage = NodeUsage::default();
    let mut pending = PendingReads::default();
    let mut stale = true;
    let mut dirty = true;
    tracing::info!(controller = "scheduler", "controller started");
    loop {
        // Every change already applied is in `live` by now (the store
        // notifies before a write returns), so the usage is current. What
        // was missed (the queue was full) makes both stale: the pending
        // pods are known from events alone.
        loop {
            match live.try_recv() {
                Ok(Notification::Event(e, object)) => {
                    let changed = follow(&mut usage, &mut pending, stale, &e, &object);
                    dirty = dirty || changed;
                }
                Ok(Notification::Reset { .. }) | Err(TryRecvError::Lagged(_)) => stale = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    tracing::info!(controller = "scheduler", "controller stopped");
                    return;
                }
            }
        }
        if stale {
            usage = NodeUsage::from_store(&*ctx.store);
            pending.refresh(&*ctx.store);
            stale = false;
            dirty = true;
        }
        if dirty {
            dirty = false;
            match pass(&ctx, &usage, &mut pending).await {
                Ok(outcome) if outcome.conflicts > 0 => dirty = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling pass failed");
                    dirty = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = retry.tick() => {
                // Claims and volumes are not followed: what fit nowhere
                // is tried again each second.
                pending.capacity_changed();
                dirty = true;
            }
            _ = rebuild.tick() => stale = true,
            n = live.recv() => match n {
                Ok(Notification::Event(e, object)) => {
                    let changed = follow(&mut usage, &mut pending, stale, &e, &object);
                    dirty = dirty || changed;
                }
                Ok(Notification::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    tracing::info!(controller = "scheduler", "controller stopped");
}

/// Follows one stored event of a pod or node in the node usage and the
/// pending pods (unless both are `stale`, to be rebuilt); whether a pass
/// may now place a pod: a pod is pending anew, changed while pending or
/// was bound, or nodes may take more (a node changed, a bound pod's charge
/// was freed).
fn follow(
    usage: &mut NodeUsage,
    pending: &mut PendingReads,
    stale: bool,
    event: &crate::store::state_machine::StoredEvent,
    object: &Arc<Object>,
) -> bool {
    if stale {
        return false;
    }
    match event.kind {
        Kind::Node => {
            pending.capacity_changed();
            true
        }
        Kind::Pod if pods::is_pod(object) => {
            let deleted = event.event_type == skiff_proto::api::EventType::Deleted as i32;
            let seen = usage.observe(object, deleted);
            if seen.freed {
                pending.capacity_changed();
            }
            pending.observe(object, seen.unbound) || seen.freed
        }
        _ => false,
    }
}

/// How often the node usage is rebuilt from the store, as a safety net
/// behind the events.
const FULL_REBUILD_EVERY: Duration = Duration::from_secs(60);

/// What the bound, active pods on one node take.
#[derive(Debug, Clone, Default)]
struct NodeLoad {
    cpu: i64,
    memory: i64,
    pods: i64,
    host_ports: HashMap<(i32, String), i64>,
    /// Shared with each pass's view of the node ([`NodeInfo::by_owner`]),
    /// which copies it only for a node it binds a pod to. Its keys are
    /// shared with the charges of the pods they count.
    by_owner: Arc<HashMap<Arc<str>, i64>>,
}

impl NodeLoad {
    /// Nothing charged: the node's entry can go.
    fn is_empty(&self) -> bool {
        self.cpu == 0
            && self.memory == 0
            && self.pods == 0
            && self.host_ports.is_empty()
            && self.by_owner.is_empty()
    }
}

/// One pod's charge on the node it is bound to: one of these is kept for
/// every bound pod (30,000 in `skiff-bench scale`), so the node's name and
/// the owner's uid are the [`NodeUsage`] maps' own keys, shared, not
/// copies (80 bytes a pod in the map instead of 136, and no copied node
/// or owner strings).
#[derive(Debug, Clone, PartialEq)]
struct Charge {
    node: Arc<str>,
    requests: Requests,
    host_ports: Box<[(i32, String)]>,
    owner: Option<Arc<str>>,
}

/// What [`NodeUsage::observe`] saw of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Not gone, bound to a node, or finished: maybe for the scheduler to
    /// place.
    pub unbound: bool,
    /// What it charged a node was taken back and not charged again as it
    /// was (it went, finished, moved, or asks less): a node may take more.
    pub freed: bool,
}

/// Requested resources, host ports and replicas per owner on each node,
/// kept from pod events as kube-scheduler's cache keeps them, so that a
/// pass costs the nodes and the pending pods, not every pod in the cluster.
#[derive(Debug, Default)]
pub struct NodeUsage {
    by_node: HashMap<Arc<str>, NodeLoad>,
    /// Each counted pod's charge by `namespace/name` (neither may hold a
    /// `/`), to take back when it changes or goes.
    charged: HashMap<Box<str>, Charge>,
}

impl NodeUsage {
    /// Counts every pod in `store`.
    pub fn from_store(store: &dyn crate::controllers::ObjectReads) -> NodeUsage {
        let mut usage = NodeUsage::default();
        if let Ok((pods, _)) = store.list(Kind::Pod, None) {
            for object in &pods {
                usage.observe(object, false);
            }
        }
        usage
    }

    /// Takes back the pod's old charge and, unless it is gone, unbound or
    /// finished, charges it again as it is now. A terminating pod is still
    /// charged: its containers run on its node until they have stopped.
    pub fn observe(&mut self, object: &Object, deleted: bool) -> Observed {
        let meta = object.meta();
        let key = format!("{}/{}", meta.namespace, meta.name);
        let old = self.charged.remove(key.as_str());
        if let Some(old) = &old {
            self.take_back(old);
        }
        let usage = if deleted { None } else { PodUsage::of(object) };
        let unbound = !deleted
            && usage
                .as_ref()
                .is_none_or(|u| !u.finished && u.node.is_empty());
        let charge = match usage {
            Some(usage) if !usage.finished && !usage.node.is_empty() => Some(self.charge_pod(
                &usage.node,
                usage.requests,
                usage.host_ports.into_boxed_slice(),
                owner_uid(meta),
            )),
            _ => None,
        };
        let freed = old.is_some() && old != charge;
        if let Some(charge) = charge {
            self.charged.insert(key.into_boxed_str(), charge);
        }
        Observed { unbound, freed }
    }

    /// Adds a pod's requests, host ports and owner to its node's load, and
    /// returns its charge, which holds the maps' own keys.
    fn charge_pod(
        &mut self,
        node: &str,
        requests: Requests,
        host_ports: Box<[(i32, String)]>,
        owner: Option<&str>,
    ) -> Charge {
        let node = match self.by_node.get_key_value(node) {
            Some((name, _)) => name.clone(),
            None => Arc::from(node),
        };
        let load = self.by_node.entry(node.clone()).or_default();
        load.cpu += requests.cpu;
        load.memory += requests.memory;
        load.pods += 1;
        for port in host_ports.iter() {
            *load.host_ports.entry(port.clone()).or_insert(0) += 1;
        }
        let owner = owner.map(|uid| {
            let counts = Arc::make_mut(&mut load.by_owner);
            let uid = match counts.get_key_value(uid) {
                Some((key, _)) => key.clone(),
                None => Arc::from(uid),
            };
            *counts.entry(uid.clone()).or_insert(0) += 1;
            uid
        });
        Charge {
            node,
            requests,
            host_ports,
            owner,
        }
    }

    /// Takes a pod's charge back from its node's load.
    fn take_back(&mut self, charge: &Charge) {
        fn uncount<
            K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        >(
            map: &mut HashMap<K, i64>,
            key: &Q,
        ) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n <= 0 {
                    map.remove(key);
                }
            }
        }
        let Some(load) = self.by_node.get_mut(&*charge.node) else {
            return;
        };
        load.cpu -= charge.requests.cpu;
        load.memory -= charge.requests.memory;
        load.pods -= 1;
        for port in charge.host_ports.iter() {
            uncount(&mut load.host_ports, port);
        }
        if let Some(owner) = &charge.owner {
            uncount(Arc::make_mut(&mut load.by_owner), &**owner);
        }
        if load.is_empty() {
            self.by_node.remove(&*charge.node);
        }
    }

    /// Puts what `node` already carries into its scheduling view.
    fn charge(&self, node: &mut NodeInfo) {
        if let Some(load) = self.by_node.get(node.name.as_str()) {
            node.cpu_requested = load.cpu;
            node.memory_requested = load.memory;
            node.pods = load.pods;
            node.host_ports = load.host_ports.keys().cloned().collect();
            node.by_owner = load.by_owner.clone();
        }
    }
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub bound: usize,
    pub unschedulable: usize,
    pub conflicts: usize,
}

/// A node as the scheduler sees it during one pass.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<v1::Taint>,
    pub cpu_allocatable: i64,
    pub memory_allocatable: i64,
    pub pods_allocatable: i64,
    pub cpu_requested: i64,
    pub memory_requested: i64,
    pub pods: i64,
    pub host_ports: HashSet<(i32, String)>,
    /// Pods per owner uid on this node.
    pub by_owner: Arc<HashMap<Arc<str>, i64>>,
}

/// What a bound pod charges its node, read from the stored pod's bytes
/// alone: the node usage follows every pod, and a whole read of each
/// (`StoredPod`) would be kept, beside the cache's copy, for as long as
/// the pod lives.
#[derive(Debug, Default)]
struct PodUsage {
    node: String,
    finished: bool,
    requests: Requests,
    host_ports: Vec<(i32, String)>,
}

/// The fields of a stored pod that [`PodUsage`] reads, as JSON names them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageContent {
    spec: Option<UsageSpec>,
    status: Option<UsageStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageSpec {
    node_name: Option<String>,
    containers: Option<Vec<UsageContainer>>,
}

#[derive(serde::Deserialize)]
struct UsageContainer {
    resources: Option<UsageResources>,
    ports: Option<Vec<UsagePort>>,
}

#[derive(serde::Deserialize)]
struct UsageResources {
    requests: Option<BTreeMap<String, serde_json::Value>>,
    limits: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsagePort {
    host_port: Option<i32>,
    protocol: Option<String>,
}

#[derive(serde::Deserialize)]
struct UsageStatus {
    phase: Option<String>,
}

impl PodUsage {
    /// A pod object's usage, in either encoding; `None` for another kind.
    /// A pod whose fields do not read as they should (the store checks
    /// them on write) is read through Kubernetes' Pod, which leaves out
    /// what does not read.
    fn of(object: &Object) -> Option<PodUsage> {
        if !pods::is_pod(object) {
            return None;
        }
        let document = skiff_objects::legacy_bodies::to_document(object.clone());
        let Some(Body::Generic(document)) = &document.kind else {
            return None;
        };
        let content = if document.content.is_empty() {
            Ok(UsageContent {
                spec: None,
                status: None,
            })
        } else {
            serde_json::from_slice::<UsageContent>(&document.content)
        };
        let Ok(content) = content else {
            let pod = pods::read(object)?;
            let spec = pod.spec.as_ref();
            return Some(PodUsage {
                node: pods::bound_node(object),
                finished: pods::is_finished(&pod),
                requests: spec.map(pod_requests).unwrap_or_default(),
                host_ports: spec.map(host_ports).unwrap_or_default(),
            });
        };
        let phase = content.status.and_then(|s| s.phase).unwrap_or_default();
        let spec = content.spec;
        let node = spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let mut usage = PodUsage {
            node,
            finished: matches!(phase.as_str(), "Succeeded" | "Failed"),
            ..PodUsage::default()
        };
        let containers = spec.and_then(|s| s.containers).unwrap_or_default();
        for c in containers {
            if let Some(r) = &c.resources {
                let get = |name: &str| {
                    let requested = r.requests.as_ref().and_then(|q| q.get(name));
                    let value =
                        requested.or_else(|| r.limits.as_ref().and_then(|q| q.get(name)))?;
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Quantity::parse(&text).ok()
                };
                usage.requests.cpu += get("cpu").map(|q| q.milli()).unwrap_or(0);
                usage.requests.memory += get("memory").map(|q| q.units_ceil()).unwrap_or(0);
            }
            for p in c.ports.into_iter().flatten() {
                let Some(port) = p.host_port.filter(|p| *p != 0) else {
                    continue;
                };
                let protocol = p.protocol.filter(|p| !p.is_empty());
                usage
                    .host_ports
                    .push((port, protocol.unwrap_or_else(|| "TCP".to_owned())));
            }
        }
        Some(usage)
    }
}

/// A pod's resource requests: CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu: i64,
    pub memory: i64,
}

/// Sums the requests of a pod's containers (a limit without a request
/// counts as the request, as Kubernetes defaults it).
pub fn pod_requests(spec: &PodSpec) -> Requests {
    let mut total = Requests::default();
    for c in &spec.containers {
        let Some(r) = c.resources.as_ref() else {
            continue;
        };
        let get = |name: &str| {
            let requested = r.requests.as_ref().and_then(|q| q.get(name));
            requested
                .or_else(|| r.limits.as_ref().and_then(|q| q.get(name)))
                .and_then(|v| Quantity::parse(&v.0).ok())
        };
        total.cpu += get("cpu").map(|q| q.milli()).unwrap_or(0);
        total.memory += get("memory").map(|q| q.units_ceil()).unwrap_or(0);
    }
    total
}

impl NodeInfo {
    /// The node's view, copying only what a pass reads of it (not its
    /// status's images and addresses).
    pub fn from_node(node: &v1::Node) -> NodeInfo {
        let meta = node.metadata.as_ref();
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let alloc = |name: &str| {
            let status = status?;
            status
                .allocatable
                .get(name)
                .or_else(|| status.capacity.get(name))
                .and_then(|v| Quantity::parse(v).ok())
        };
        NodeInfo {
            name: meta.map(|m| m.name.clone()).unwrap_or_default(),
            labels: meta.map(|m| m.labels.clone()).unwrap_or_default(),
            ready: status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            }),
            unschedulable: spec.is_some_and(|s| s.unschedulable),
            taints: spec.map(|s| s.taints.clone()).unwrap_or_default(),
            cpu_allocatable: alloc("cpu").map(|q| q.milli()).unwrap_or(0),
            memory_allocatable: alloc("memory").map(|q| q.units_ceil()).unwrap_or(0),
            pods_allocatable: alloc("pods")
                .map(|q| q.units_ceil())
                .unwrap_or(DEFAULT_MAX_PODS),
            cpu_requested: 0,
            memory_requested: 0,
            pods: 0,
            host_ports: HashSet::new(),
            by_owner: Arc::default(),
        }
    }

    /// Charges a pod to this node.
    pub fn add(&mut self, spec: &PodSpec, owner: Option<&str>) {
        self.add_demand(&Demand::of(spec), owner);
    }

    /// Charges a pod that asks `demand` to this node.
    fn add_demand(&mut self, demand: &Demand, owner: Option<&str>) {
        let r = &demand.requests;
        self.cpu_requested += r.cpu;
        self.memory_requested += r.memory;
        self.pods += 1;
        self.host_ports.extend(demand.host_ports.iter().cloned());
        if let Some(uid) = owner {
            *Arc::make_mut(&mut self.by_owner)
                .entry(Arc::from(uid))
                .or_insert(0) += 1;
        }
    }
}

/// Why a node cannot take a pod, worded as Kubernetes words it (the
/// pod's `PodScheduled` message counts nodes per reason).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Unschedulable {
    #[error("node(s) were not ready")]
    NotReady,
    #[error("node(s) were unschedulable")]
    Cordoned,
    #[error("node(s) had untolerated taint {{{key}: {value}}}")]
    UntoleratedTaint { key: String, value: String },
    #[error("node(s) didn't match Pod's node affinity/selector")]
    NodeSelector,
    #[error("Too many pods")]
    TooManyPods,
    #[error("Insufficient cpu")]
    InsufficientCpu,
    #[error("Insufficient memory")]
    InsufficientMemory,
    #[error("node(s) didn't have free ports for the requested pod ports")]
    HostPortsTaken,
    #[error("node(s) had volume node affinity conflict")]
    VolumeNodeAffinity,
}

/// Why no node can take a pod: each reason with the number of nodes it
/// ruled out, as Kubernetes says it (`0/3 nodes are available: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoNodeFits {
    /// Nodes considered.
    pub nodes: usize,
    pub reasons: BTreeMap<Unschedulable, usize>,
}

impl fmt::Display for NoNodeFits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("0/0 nodes are available: no nodes are registered.");
        }
        // Ordered by their text, as Kubernetes lists them.
        let mut reasons: Vec<(String, usize)> = self
            .reasons
            .iter()
            .map(|(reason, n)| (reason.to_string(), *n))
            .collect();
        reasons.sort();
        write!(f, "0/{} nodes are available: ", self.nodes)?;
        for (i, (reason, n)) in reasons.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} {reason}")?;
        }
        f.write_str(".")
    }
}

/// What a pod asks of a node, worked out once per pod version rather than
/// once per node considered (and kept by [`PendingReads`] while the pod
/// waits).
#[derive(Debug)]
struct Demand {
    requests: Requests,
    host_ports: Vec<(i32, String)>,
    tolerations: Vec<v1::Toleration>,
    node_selector: BTreeMap<String, String>,
    /// The required node affinity's terms, if it has one.
    affinity: Option<Vec<placement::NodeSelectorTerm>>,
}

impl Demand {
    fn of(spec: &PodSpec) -> Demand {
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|required| required.node_selector_terms.clone());
        Demand {
            requests: pod_requests(spec),
            host_ports: host_ports(spec),
            tolerations: (spec.tolerations.iter().flatten())
                .map(|t| v1::Toleration {
                    key: t.key.clone().unwrap_or_default(),
                    operator: t.operator.clone().unwrap_or_default(),
                    value: t.value.clone().unwrap_or_default(),
                    effect: t.effect.clone().unwrap_or_default(),
                    toleration_seconds: t.toleration_seconds,
                })
                .collect(),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            affinity,
        }
    }
}

/// The host ports a pod's containers ask for, with their protocols.
fn host_ports(spec: &PodSpec) -> Vec<(i32, String)> {
    (spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|port| port != 0))
        .map(|p| {
            let protocol = p.protocol.as_deref().filter(|p| !p.is_empty());
            (
                p.host_port.unwrap_or_default(),
                protocol.unwrap_or("TCP").to_owned(),
            )
        })
        .collect()
}

/// Why `node` cannot take a pod with `demand`, if it cannot.
fn filter(node: &NodeInfo, demand: &Demand, volumes: &VolumeDemand) -> Result<(), Unschedulable> {
    if !node.ready {
        return Err(Unschedulable::NotReady);
    }
    if node.unschedulable {
        return Err(Unschedulable::Cordoned);
    }
    let hard = |effect: &str| effect != "PreferNoSchedule";
    if let Some(taint) = untolerated(&node.taints, &demand.tolerations, hard) {
        return Err(Unschedulable::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone(),
        });
    }
    if !node_selector_matches(&demand.node_selector, &node.labels) {
        return Err(Unschedulable::NodeSelector);
    }
    if let Some(terms) = &demand.affinity {
        if !placement::node_matches_terms(terms, &node.name, &node.labels) {
            return Err(Unschedulable::NodeSelector);
        }
    }
    if node.pods + 1 > node.pods_allocatable {
        return Err(Unschedulable::TooManyPods);
    }
    let r = &demand.requests;
    if r.cpu > 0 && node.cpu_requested + r.cpu > node.cpu_allocatable {
        return Err(Unschedulable::InsufficientCpu);
    }
    if r.memory > 0 && node.memory_requested + r.memory > node.memory_allocatable {
        return Err(Unschedulable::InsufficientMemory);
    }
    if demand
        .host_ports
        .iter()
        .any(|p| node.host_ports.contains(p))
    {
        return Err(Unschedulable::HostPortsTaken);
    }
    if !volumes.admits(&node.name, &node.labels) {
        return Err(Unschedulable::VolumeNodeAffinity);
    }
    Ok(())
}

/// Higher is better: free share of CPU and memory after placing the pod,
/// minus a penalty for each replica of the same owner already there.
fn score(node: &NodeInfo, demand: &Demand, owner: Option<&str>) -> i64 {
    let r = &demand.requests;
    let free = |allocatable: i64, requested: i64| {
        if allocatable <= 0 {
            return 0;
        }
        ((allocatable - requested).max(0) * 100) / allocatable
    };
    let least_allocated = (free(node.cpu_allocatable, node.cpu_requested + r.cpu)
        + free(node.memory_allocatable, node.memory_requested + r.memory))
        / 2;
    let same_owner = owner
        .and_then(|uid| node.by_owner.get(uid))
        .copied()
        .unwrap_or(0);
    least_allocated - 100 * same_owner
}

/// Picks a node for a pod, or explains why none fits.
pub fn choose(
    nodes: &[NodeInfo],
    spec: &PodSpec,
    owner: Option<&str>,
) -> Result<usize, NoNodeFits> {
    choose_with_volumes(nodes, spec, owner, &VolumeDemand::default())
}

/// Picks a node for a pod whose claims ask `volumes`, or explains why
/// none fits.
pub fn choose_with_volumes(
    nodes: &[NodeInfo],
    spec: &PodSpec,
    owner: Option<&str>,
    volumes: &VolumeDemand,
) -> Result<usize, NoNodeFits> {
    choose_for(nodes, &Demand::of(spec), owner, volumes)
}

/// Picks a node for a pod that asks `demand` and whose claims ask
/// `volumes`, or explains why none fits.
fn choose_for(
    nodes: &[NodeInfo],
    demand: &Demand,
    owner: Option<&str>,
    volumes: &VolumeDemand,
) -> Result<usize, NoNodeFits> {
    let mut reasons: BTreeMap<Unschedulable, usize> = BTreeMap::new();
    let mut best: Option<(i64, usize)> = None;
    for (i, node) in nodes.iter().enumerate() {
        match filter(node, demand, volumes) {
            Ok(()) => {
                let s = score(node, demand, owner);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
            Err(reason) => *reasons.entry(reason).or_insert(0) += 1,
        }
    }
    match best {
        Some((_, i)) => Ok(i),
        None => Err(NoNodeFits {
            nodes: nodes.len(),
            reasons,
        }),
    }
}

fn owner_uid(meta: &v1::ObjectMeta) -> Option<&str> {
    owners::controller(meta).map(|r| r.uid.as_str())
}

/// What a pass needs of one pending pod, read from one version of it.
#[derive(Debug)]
struct PendingPod {
    demand: Demand,
    /// The PersistentVolumeClaims its volumes name.
    claims: Vec<String>,
    /// The message of its `PodScheduled=False` condition, if it has one.
    unschedulable_message: Option<String>,
}

/// The unbound pods, by uid, followed from pod events as [`NodeUsage`]
/// follows the bound ones, so that a pass does not walk the store's index
/// of them (under its lock) on every pod event. Each is read once per
/// version, for what placing it asks (a read of a whole pod, about 12 KB
/// as Kubernetes' Pod, is not kept). A pass tries only the pods in
/// `to_try`: a new or changed version, or one tried before and not set
/// aside (its bind may have lost to another write). A pod that fit
/// nowhere is set aside until nodes may take more (a node changed, a bound
/// pod's charge was freed, or a second passed) or it changes itself, as
/// kube-scheduler keeps such pods aside until a cluster event that may
/// make them schedulable. Pods that are not this scheduler's, or are being
/// deleted, are tried once per version: a pass never walks them again.
#[derive(Debug, Default)]
pub struct PendingReads {
    by_uid: HashMap<Box<str>, PendingRead>,
    /// What the next pass tries.
    to_try: HashSet<Box<str>>,
    /// What fit nowhere, until nodes may take more.
    set_aside: HashSet<Box<str>>,
}

#[derive(Debug)]
struct PendingRead {
    object: Arc<Object>,
    /// What placing it asks, once read (`Some(None)`: not for this
    /// scheduler to place, or a spec that does not read).
    read: Option<Option<Arc<PendingPod>>>,
}

impl PendingReads {
    /// The unbound pods in `store`, keeping what was read of any version
    /// still there; every one is tried again.
    pub fn refresh(&mut self, store: &dyn crate::controllers::ObjectReads) {
        let mut by_uid = HashMap::new();
        for object in store.pods_on_node("") {
            let uid: Box<str> = object.meta().uid.as_str().into();
            let kept = self
                .by_uid
                .remove(&uid)
                .filter(|k| k.object.meta().resource_version == object.meta().resource_version);
            let read = kept.unwrap_or_else(|| PendingRead::of(object.clone()));
            by_uid.insert(uid, read);
        }
        self.to_try = by_uid.keys().cloned().collect();
        self.set_aside.clear();
        self.by_uid = by_uid;
    }

    /// Follows one version of a pod (`unbound`: not bound, finished or
    /// deleted); whether the pods to place changed.
    fn observe(&mut self, object: &Arc<Object>, unbound: bool) -> bool {
        let uid = object.meta().uid.as_str();
        if !unbound {
            self.to_try.remove(uid);
            self.set_aside.remove(uid);
            return self.by_uid.remove(uid).is_some();
        }
        let version = &object.meta().resource_version;
        match self.by_uid.get(uid) {
            Some(kept) if kept.object.meta().resource_version == *version => false,
            _ => {
                self.by_uid
                    .insert(uid.into(), PendingRead::of(object.clone()));
                self.set_aside.remove(uid);
                self.to_try.insert(uid.into());
                true
            }
        }
    }

    /// What nodes can take may have changed: every pod set aside is tried
    /// again.
    pub fn capacity_changed(&mut self) {
        self.to_try.extend(self.set_aside.drain());
    }

    /// `uid`, tried in a pass, fit nowhere.
    fn set_aside(&mut self, uid: Box<str>) {
        self.to_try.remove(&uid);
        if self.by_uid.contains_key(&uid) {
            self.set_aside.insert(uid);
        }
    }
}

impl PendingRead {
    fn of(object: Arc<Object>) -> PendingRead {
        PendingRead { object, read: None }
    }
}

/// What placing a pending pod asks; `None` when it is not this
/// scheduler's, is finished, or its spec does not read (`pods::read`
/// warned): such a pod is not placed as if it asked for nothing.
fn read_pending(object: &Object) -> Option<PendingPod> {
    let pod = pods::read(object)?;
    let spec = pod.spec.as_ref()?;
    let scheduler = spec.scheduler_name.as_deref().unwrap_or("");
    let ours = scheduler.is_empty() || scheduler == "default-scheduler";
    if !ours || pods::is_finished(&pod) {
        return None;
    }
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let unschedulable_message = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_default());
    Some(PendingPod {
        demand: Demand::of(spec),
        claims: pods::claim_names(spec),
        unschedulable_message,
    })
}

/// One scheduling pass over the pending pods `reads` has to try (those
/// set aside left out), with what each node already carries from `usage`.
pub async fn pass(
    ctx: &Context,
    usage: &NodeUsage,
    reads: &mut PendingReads,
) -> Result<PassOutcome, ReconcileError> {
    // The pods to try. Every pod change wakes the scheduler, and nearly
    // all of them (status reports) leave nothing to place: such a pass
    // ends here, before it builds a view of every node.
    let mut pending = Vec::new();
    for uid in std::mem::take(&mut reads.to_try) {
        let Some(kept) = reads.by_uid.get_mut(&uid) else {
            continue;
        };
        // Being deleted (terminating): not placed.
        if !kept.object.meta().deletion_timestamp.is_empty() {
            continue;
        }
        let object = &kept.object;
        let read = kept
            .read
            .get_or_insert_with(|| read_pending(object).map(Arc::new));
        if let Some(read) = read {
            pending.push((uid, kept.object.clone(), read.clone()));
        }
    }
    // Tried again next time unless set aside below (a bound pod's new
    // version lets it go before then).
    reads
        .to_try
        .extend(pending.iter().map(|(uid, _, _)| uid.clone()));
    let mut outcome = PassOutcome::default();
    if pending.is_empty() {
        return Ok(outcome);
    }
    let (node_objects, _) = ctx.store.list(Kind::Node, None)?;
    let mut nodes: Vec<NodeInfo> = node_objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(Body::Node(n)) => {
                let mut info = NodeInfo::from_node(n);
                usage.charge(&mut info);
                Some(info)
            }
            _ => None,
        })
        .collect();
    pending.sort_by(|(_, a, _), (_, b, _)| {
        a.meta()
            .creation_timestamp
            .cmp(&b.meta().creation_timestamp)
    });
    let events = ctx.events.for_component(COMPONENT);
    let mut binds = tokio::task::JoinSet::new();
    let mut failure = None;
    for (uid, object, read) in pending {
        let owner = owner_uid(object.meta()).map(str::to_owned);
        let namespace = object.meta().namespace.clone();
        let claims = match volume_demand(&*ctx.store, &namespace, &read.claims) {
            Ok(claims) => claims,
            Err(problem) => {
                outcome.unschedulable += 1;
                reads.set_aside(uid);
                let why = format!("0/{} nodes are available: {problem}.", nodes.len());
                if let Some(e) = unschedulable(ctx, &events, &object, &read, &why).await {
                    failure = Some(e);
                }
                continue;
            }
        };
        match choose_for(&nodes, &read.demand, owner.as_deref(), &claims) {
            Ok(i) => {
                // The claims waiting for their first consumer learn the
                // node first, so that a pod is never bound to a node its
                // claims were not given.
                match select_node(ctx, &namespace, &claims.to_select, &nodes[i].name).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() || e.is_not_found() => {
                        outcome.conflicts += 1;
                        continue;
                    }
                    Err(e) => {
                        failure = Some(e.into());
                        continue;
                    }
                }
                nodes[i].add_demand(&read.demand, owner.as_deref());
                // Only `spec.nodeName` changes; every other field stays as
                // stored (the update is refused if the pod changed since).
                let bound = pods::with_node(&object, &nodes[i].name);
                let writer = ctx.writer.clone();
                let latency = ctx.binding_latency.clone();
                binds.spawn(async move {
                    let started = std::time::Instant::now();
                    let bound = writer.update(bound).await;
                    latency.observe(&[], started.elapsed().as_secs_f64());
                    bound
                });
                if binds.len() >= MAX_CONCURRENT_BINDS {
                    let done = binds.join_next().await;
                    collect(done, &mut outcome, &mut failure, &events);
                }
            }
            Err(no_fit) => {
                outcome.unschedulable += 1;
                reads.set_aside(uid);
                let why = no_fit.to_string();
                if let Some(e) = unschedulable(ctx, &events, &object, &read, &why).await {
                    failure = Some(e);
                }
            }
        }
    }
    while let Some(done) = binds.join_next().await {
        collect(Some(done), &mut outcome, &mut failure, &events);
    }
    // A bind that failed left its node's charge in this pass's view only:
    // what fit nowhere after it is tried again at once.
    if outcome.conflicts > 0 || failure.is_some() {
        reads.capacity_changed();
    }
    if outcome.bound > 0 {
        tracing::debug!(
            bound = outcome.bound,
            unschedulable = outcome.unschedulable,
            "scheduling pass"
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

/// Says why `object` (a pending pod read as `read`) fits nowhere: a
/// `FailedScheduling` Event and its `PodScheduled` condition. A write that
/// failed for another reason than a conflict is the error.
async fn unschedulable(
    ctx: &Context,
    events: &EventRecorder,
    object: &Object,
    read: &PendingPod,
    why: &str,
) -> Option<ReconcileError> {
    let involved = InvolvedObject::of_meta(Kind::Pod, object.meta());
    events.record(involved, EventType::Warning, "FailedScheduling", why);
    if read.unschedulable_message.as_deref() == Some(why) {
        return None;
    }
    match mark_unschedulable(ctx, object, why).await {
        Err(e) if !e.is_conflict() => Some(e.into()),
        _ => None,
    }
}

/// Gives each of the claims `names` in `namespace` the node `node`
/// (`volume.kubernetes.io/selected-node`), unless it has it.
async fn select_node(
    ctx: &Context,
    namespace: &str,
    names: &[String],
    node: &str,
) -> writer::Result<()> {
    for name in names {
        let stored = ctx
            .store
            .get(Kind::PersistentVolumeClaim, namespace, name)
            .ok()
            .flatten()
            .map(std::sync::Arc::unwrap_or_clone);
        let Some(Object {
            kind: Some(Body::Generic(mut claim)),
        }) = stored
        else {
            continue;
        };
        let annotations = &mut claim
            .metadata
            .get_or_insert_with(Default::default)
            .annotations;
        if annotations
            .get(SELECTED_NODE_ANNOTATION)
            .is_some_and(|n| n == node)
        {
            continue;
        }
        annotations.insert(SELECTED_NODE_ANNOTATION.to_owned(), node.to_owned());
        ctx.writer.update(claim.into_object()).await?;
    }
    Ok(())
}

type BindResult = Result<writer::Result<Object>, tokio::task::JoinError>;

/// Counts one binding's outcome; a pod bound is an Event on it.
fn collect(
    done: Option<BindResult>,
    outcome: &mut PassOutcome,
    failure: &mut Option<ReconcileError>,
    events: &EventRecorder,
) {
    match done {
        Some(Ok(Ok(bound))) => {
            outcome.bound += 1;
            if pods::is_pod(&bound) {
                let meta = bound.meta();
                let node = pods::bound_node(&bound);
                let message = format!(
                    "Successfully assigned {}/{} to {node}",
                    meta.namespace, meta.name
                );
                events.normal(&bound, "Scheduled", message);
            }
        }
        Some(Ok(Err(e))) if e.is_conflict() || e.is_not_found() => outcome.conflicts += 1,
        Some(Ok(Err(e))) => *failure = Some(e.into()),
        Some(Err(source)) => {
            *failure = Some(ReconcileError::Task {
                what: "bind",
                source,
            })
        }
        None => {}
    }
}

/// Records `PodScheduled=False` with the reason, unless it already says so.
async fn mark_unschedulable(ctx: &Context, object: &Object, message: &str) -> writer::Result<()> {
    let Some(pod) = pods::read(object) else {
        return Ok(());
    };
    let mut status = pod.status.unwrap_or_default();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
        return Ok(());
    }
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(pods::PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        last_transition_time: Some(skiff_objects::kube_time(std::time::SystemTime::now())),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_owned()),
        ..Default::default()
    });
    if status.phase.as_deref().unwrap_or_default().is_empty() {
        status.phase = Some("Pending".into());
    }
    ctx.writer
        .update_status(pods::with_status(object, &status))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
        NodeInfo::from_node(&v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                labels: [("disk".to_owned(), "ssd".to_owned())].into(),
                ..Default::default()
            }),
            status: Some(v1::NodeStatus {
                allocatable: [
                    ("cpu".to_owned(), cpu.to_owned()),
                    ("memory".to_owned(), memory.to_owned()),
                    ("pods".to_owned(), "10".to_owned()),
                ]
                .into(),
                conditions: vec![v1::NodeCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn pod(cpu: &str, memory: &str) -> PodSpec {
        serde_json::from_value(serde_json::json!({"containers": [{
            "name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu, "memory": memory}},
        }]}))
        .unwrap()
    }

    #[test]
    fn replicas_of_one_owner_spread_over_nodes() {
        let mut nodes = vec![
            node("a", "4", "8Gi"),
            node("b", "4", "8Gi"),
            node("c", "4", "8Gi"),
        ];
        let spec = pod("100m", "64Mi");
        let mut chosen = Vec::new();
        for _ in 0..3 {
            let i = choose(&nodes, &spec, Some("rs-1")).unwrap();
            nodes[i].add(&spec, Some("rs-1"));
            chosen.push(nodes[i].name.clone());
        }
        chosen.sort();
        assert_eq!(chosen, ["a", "b", "c"]);
    }

    #[test]
    fn least_allocated_node_wins() {
        let mut nodes = vec![node("busy", "4", "8Gi"), node("idle", "4", "8Gi")];
        nodes[0].add(&pod("3", "6Gi"), None);
        let i = choose(&nodes, &pod("100m", "64Mi"), None).unwrap();
        assert_eq!(nodes[i].name, "idle");
    }

    #[test]
    fn a_pod_goes_to_the_node_of_its_claims_volume_even_when_another_has_more_room() {
        let mut nodes = vec![node("roomy", "8", "16Gi"), node("pinned", "4", "8Gi")];
        for n in &mut nodes {
            let name = n.name.clone();
            n.labels.insert("kubernetes.io/hostname".into(), name);
        }
        nodes[1].add(&pod("3", "6Gi"), None);
        let volume = skiff_objects::storage::VolumeView {
            spec: serde_json::from_value(serde_json::json!({
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["pinned"]}
                ]}]}}
            }))
            .unwrap(),
            ..Default::default()
        };
        let claims = VolumeDemand {
            bound: vec![volume],
            ..Default::default()
        };
        let spec = pod("100m", "64Mi");
        assert_eq!(nodes[choose(&nodes, &spec, None).unwrap()].name, "roomy");
        let i = choose_with_volumes(&nodes, &spec, None, &claims).unwrap();
        assert_eq!(nodes[i].name, "pinned");
        // The pinned node is full: the pod waits rather than go elsewhere.
        let err = choose_with_volumes(&nodes, &pod("2", "1Gi"), None, &claims).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had volume node affinity conflict."
        );
        // A claim given a node sends its pods there too.
        let placed = VolumeDemand {
            selected_nodes: vec!["roomy".into()],
            ..Default::default()
        };
        let i = choose_with_volumes(&nodes, &spec, None, &placed).unwrap();
        assert_eq!(nodes[i].name, "roomy");
    }

    #[test]
    fn an_unschedulable_pod_gets_kubernetes_style_reasons() {
        let mut nodes = vec![
            node("a", "1", "1Gi"),
            node("b", "1", "1Gi"),
            node("c", "8", "16Gi"),
        ];
        nodes[2].taints.push(v1::Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        let err = choose(&nodes, &pod("500m", "2Gi"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}."
        );
        assert_eq!(err.reasons[&Unschedulable::InsufficientMemory], 2);
        let mut tolerant = pod("500m", "2Gi");
        let toleration = serde_json::json!(
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        );
        tolerant.tolerations = Some(vec![serde_json::from_value(toleration).unwrap()]);
        assert_eq!(nodes[choose(&nodes, &tolerant, None).unwrap()].name, "c");
    }

    #[test]
    fn a_required_node_affinity_keeps_a_pod_to_the_nodes_it_names() {
        let nodes = vec![node("a", "8", "16Gi"), node("b", "4", "8Gi")];
        let mut spec = pod("100m", "64Mi");
        let affinity = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}});
        spec.affinity = Some(serde_json::from_value(affinity).unwrap());
        assert_eq!(nodes[choose(&nodes, &spec, None).unwrap()].name, "b");
        let mut nowhere = spec.clone();
        let affinity = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}});
        nowhere.affinity = Some(serde_json::from_value(affinity).unwrap());
        let err = choose(&nodes, &nowhere, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn node_selector_ports_readiness_and_cordon_filter() {
        let mut nodes = vec![
            node("a", "4", "8Gi"),
            node("b", "4", "8Gi"),
            node("c", "4", "8Gi"),
        ];
        nodes[0].ready = false;
        nodes[1].unschedulable = true;
        let mut spec = pod("100m", "64Mi");
        spec.node_selector = Some([("disk".into(), "hdd".into())].into());
        let err = choose(&nodes, &spec, None).unwrap_err().to_string();
        assert!(err.contains("1 node(s) were not ready"), "{err}");
        assert!(err.contains("1 node(s) were unschedulable"), "{err}");
        assert!(
            err.contains("1 node(s) didn't match Pod's node affinity/selector"),
            "{err}"
        );
        let mut web = pod("100m", "64Mi");
        let port = serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "TCP"});
        web.containers[0].ports = Some(vec![serde_json::from_value(port).unwrap()]);
        let mut two = vec![node("x", "4", "8Gi")];
        two[0].add(&web, None);
        let err = choose(&two, &web, None).unwrap_err();
        assert_eq!(err.reasons[&Unschedulable::HostPortsTaken], 1);
        assert!(err.to_string().contains("free ports"), "{err}");
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  allocatable: {cpu: "1", memory: 1Gi, pods: "10"}
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  nodeName: n1
  containers:
  - {name: c, image: i, resources: {requests: {cpu: 800m}}, ports: [{containerPort: 80, hostPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pending}
spec:
  containers: [{name: c, image: i, resources: {requests: {cpu: 500m}}}]
"#;

    /// The stored pod `name`, in the protobuf model (to change in tests).
    fn pod_named(objects: &RecordingObjects, name: &str) -> v1::Pod {
        let stored = objects.get(Kind::Pod, "default", name).unwrap();
        let model = stored.map(|o| skiff_objects::legacy_bodies::for_reader(Object::clone(&o), 6));
        match model {
            Some(Object {
                kind: Some(Body::Pod(p)),
            }) => p,
            _ => panic!("no pod {name}"),
        }
    }

    /// `pod` as stored.
    fn stored(pod: &v1::Pod) -> Object {
        pod.clone().into_object()
    }

    fn load(usage: &NodeUsage, node: &str) -> (i64, i64, usize) {
        usage
            .by_node
            .get(node)
            .map_or((0, 0, 0), |l| (l.cpu, l.pods, l.host_ports.len()))
    }

    #[test]
    fn charges_follow_binding_rebinding_finishing_and_deletion() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let mut usage = NodeUsage::from_store(&*objects);
        assert_eq!(load(&usage, "n1"), (800, 1, 1));
        let freed = |freed| Observed {
            unbound: false,
            freed,
        };
        let mut big = pod_named(&objects, "big");
        big.spec.as_mut().unwrap().node_name = "n2".into();
        assert_eq!(usage.observe(&stored(&big), false), freed(true), "moved");
        assert_eq!(load(&usage, "n1"), (0, 0, 0));
        assert_eq!(load(&usage, "n2"), (800, 1, 1));
        // Seen twice, charged once; nothing freed.
        assert_eq!(usage.observe(&stored(&big), false), freed(false));
        assert_eq!(load(&usage, "n2"), (800, 1, 1));
        big.status = Some(v1::PodStatus {
            phase: "Succeeded".into(),
            ..Default::default()
        });
        assert_eq!(usage.observe(&stored(&big), false), freed(true), "finished");
        assert_eq!(load(&usage, "n2"), (0, 0, 0));
        big.status = None;
        // Charged again: nothing freed.
        assert_eq!(usage.observe(&stored(&big), false), freed(false));
        // Terminating: still charged until it is gone.
        let meta = big.metadata.get_or_insert_with(Default::default);
        meta.deletion_timestamp = "2026-01-01T00:00:30Z".into();
        assert_eq!(usage.observe(&stored(&big), false), freed(false));
        assert_eq!(load(&usage, "n2"), (800, 1, 1));
        assert_eq!(usage.observe(&stored(&big), true), freed(true), "gone");
        assert!(usage.by_node.is_empty() && usage.charged.is_empty());
        // An unbound pod is for the scheduler to place.
        let pending = pod_named(&objects, "pending");
        let seen = usage.observe(&stored(&pending), false);
        assert_eq!(
            seen,
            Observed {
                unbound: true,
                freed: false
            }
        );
    }

    /// A pod `default/<name>` bound to `n1`, with no containers.
    fn bound_to_n1(name: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn charges_hold_the_load_maps_own_node_name_and_owner_uid() {
        let pod = |name: &str| {
            let mut pod = bound_to_n1(name);
            pod.metadata.as_mut().unwrap().owner_references = vec![v1::OwnerReference {
                uid: "rs-1".into(),
                controller: Some(true),
                ..Default::default()
            }];
            pod
        };
        let mut usage = NodeUsage::default();
        usage.observe(&stored(&pod("a")), false);
        usage.observe(&stored(&pod("b")), false);
        let (a, b) = (&usage.charged["default/a"], &usage.charged["default/b"]);
        let (node, load) = usage.by_node.get_key_value("n1").unwrap();
        assert!(Arc::ptr_eq(node, &a.node) && Arc::ptr_eq(node, &b.node));
        let (owner, count) = load.by_owner.get_key_value("rs-1").unwrap();
        assert_eq!(*count, 2);
        assert!(Arc::ptr_eq(owner, a.owner.as_ref().unwrap()));
        assert!(Arc::ptr_eq(owner, b.owner.as_ref().unwrap()));
        // What each bound pod keeps in the map, besides its key's text.
        let entry = std::mem::size_of::<(Box<str>, Charge)>();
        assert!(entry <= 80, "{entry} B");
        // Charged again as it is: counted once.
        usage.observe(&stored(&pod("a")), false);
        assert_eq!(usage.by_node["n1"].by_owner["rs-1"], 2);
        usage.observe(&stored(&pod("a")), true);
        assert_eq!(usage.by_node["n1"].by_owner["rs-1"], 1);
        usage.observe(&stored(&pod("b")), true);
        assert!(usage.by_node.is_empty() && usage.charged.is_empty());
    }

    #[test]
    fn two_pods_on_one_host_port_hold_it_until_both_are_gone() {
        let pod = |name: &str| {
            let mut pod = bound_to_n1(name);
            pod.spec.as_mut().unwrap().containers = vec![v1::Container {
                name: "app".into(),
                ports: vec![v1::ContainerPort {
                    container_port: 80,
                    host_port: 8080,
                    protocol: "TCP".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }];
            pod
        };
        let port = (8080, "TCP".to_owned());
        let mut usage = NodeUsage::default();
        usage.observe(&stored(&pod("a")), false);
        usage.observe(&stored(&pod("b")), false);
        assert_eq!(usage.by_node["n1"].host_ports[&port], 2);
        usage.observe(&stored(&pod("a")), true);
        assert_eq!(usage.by_node["n1"].host_ports[&port], 1);
        assert_eq!(load(&usage, "n1"), (0, 1, 1));
        usage.observe(&stored(&pod("b")), true);
        assert!(usage.by_node.is_empty() && usage.charged.is_empty());
    }

    #[test]
    fn a_passs_view_shares_the_owner_counts_until_it_binds_a_pod_there() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let mut usage = NodeUsage::from_store(&*objects);
        let mut owned = pod_named(&objects, "big");
        owned
            .metadata
            .get_or_insert_with(Default::default)
            .owner_references = vec![v1::OwnerReference {
            uid: "rs-1".into(),
            controller: Some(true),
            ..Default::default()
        }];
        usage.observe(&stored(&owned), false);
        let node = match objects.get(Kind::Node, "", "n1").unwrap().as_deref() {
            Some(Object {
                kind: Some(Body::Node(n)),
            }) => n.clone(),
            _ => panic!("no node n1"),
        };
        let mut view = NodeInfo::from_node(&node);
        usage.charge(&mut view);
        assert_eq!(view.by_owner.get("rs-1"), Some(&1));
        // Not copied for the view: the same map.
        assert!(Arc::ptr_eq(&view.by_owner, &usage.by_node["n1"].by_owner));
        // Binding another replica there counts it in the view only.
        let read = pods::StoredPod::read(stored(&owned)).unwrap();
        let spec = read.pod.spec.clone().unwrap();
        view.add(&spec, Some("rs-1"));
        assert_eq!(view.by_owner.get("rs-1"), Some(&2));
        assert_eq!(usage.by_node["n1"].by_owner.get("rs-1"), Some(&1));
        // Its only pod gone, the node carries nothing and is let go.
        usage.observe(&stored(&owned), true);
        assert!(!usage.by_node.contains_key("n1"), "{:?}", usage.by_node);
    }

    /// The unbound pods in `objects`, as a pass takes them.
    fn pending_in(objects: &RecordingObjects) -> PendingReads {
        let mut pending = PendingReads::default();
        pending.refresh(objects);
        pending
    }

    #[tokio::test]
    async fn a_pod_that_fits_nowhere_is_tried_again_when_it_or_the_capacity_changes() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let ctx = context(&objects);
        let mut usage = NodeUsage::from_store(&*objects);
        let mut reads = pending_in(&objects);
        let stored_pod = |name: &str| objects.get(Kind::Pod, "default", name).unwrap().unwrap();
        let pending_uid = stored_pod("pending").meta().uid.clone();
        assert!(!pending_uid.is_empty());
        assert!(
            !reads
                .by_uid
                .contains_key(stored_pod("big").meta().uid.as_str()),
            "bound"
        );
        let outcome = pass(&ctx, &usage, &mut reads).await.unwrap();
        assert_eq!(outcome.unschedulable, 1);
        let entry = |reads: &PendingReads| {
            let kept = &reads.by_uid[pending_uid.as_str()];
            let read = kept.read.clone().expect("read");
            read.expect("the pending pod's demand")
        };
        let first = entry(&reads);
        assert_eq!(first.demand.requests.cpu, 500);
        assert_eq!(first.unschedulable_message, None);

        // Nothing changed: not tried again.
        objects.clear_writes();
        let outcome = pass(&ctx, &usage, &mut reads).await.unwrap();
        assert_eq!(outcome.unschedulable, 0);
        assert_eq!(objects.events().len(), 1);

        // Its status written, the new version is read, and the message it
        // already has is not written again (only the Event counts up).
        assert!(reads.observe(&stored_pod("pending"), true), "a new version");
        assert!(!reads.observe(&stored_pod("pending"), true), "the same one");
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            1
        );
        let second = entry(&reads);
        assert!(!Arc::ptr_eq(&first, &second), "a new version is read again");
        let message = second.unschedulable_message.clone().expect("its message");
        assert!(message.contains("Insufficient cpu"), "{message}");
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
        assert_eq!(objects.events().len(), 2);

        // Once nodes may take more, it is tried again, read as it was.
        reads.capacity_changed();
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            1
        );
        assert!(
            Arc::ptr_eq(&second, &entry(&reads)),
            "the same version is not"
        );
        assert_eq!(objects.events().len(), 3);

        // The big pod gone, it fits; bound, it is no longer kept.
        let big = stored_pod("big");
        objects.remove(Kind::Pod, "default", "big", "").unwrap();
        let seen = usage.observe(&big, true);
        assert!(seen.freed);
        reads.capacity_changed();
        assert_eq!(pass(&ctx, &usage, &mut reads).await.unwrap().bound, 1);
        assert!(reads.observe(&stored_pod("pending"), false), "bound");
        assert!(reads.by_uid.is_empty(), "{:?}", reads.by_uid);
    }

    #[tokio::test]
    async fn a_pod_of_another_scheduler_is_read_once_a_version_and_not_walked_again() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: theirs}
spec:
  schedulerName: other
  containers: [{name: c, image: i}]
"#,
        );
        let ctx = context(&objects);
        let usage = NodeUsage::from_store(&*objects);
        let mut reads = pending_in(&objects);
        let stored_pod = |name: &str| objects.get(Kind::Pod, "default", name).unwrap().unwrap();
        let theirs = stored_pod("theirs");
        let theirs_uid = theirs.meta().uid.as_str();
        let pending_uid = stored_pod("pending").meta().uid.clone();
        assert_eq!(reads.to_try.len(), 2, "{:?}", reads.to_try);

        let outcome = pass(&ctx, &usage, &mut reads).await.unwrap();
        assert_eq!((outcome.bound, outcome.unschedulable), (0, 1));
        // Read once: not this scheduler's, so neither tried again nor set
        // aside; the one that fit nowhere is set aside.
        assert!(matches!(reads.by_uid[theirs_uid].read, Some(None)));
        assert!(reads.to_try.is_empty(), "{:?}", reads.to_try);
        assert_eq!(
            reads.set_aside.iter().map(|u| &**u).collect::<Vec<_>>(),
            [pending_uid.as_str()]
        );
        // Nodes may take more: only what was set aside is tried again.
        reads.capacity_changed();
        assert_eq!(
            reads.to_try.iter().map(|u| &**u).collect::<Vec<_>>(),
            [pending_uid.as_str()]
        );
        pass(&ctx, &usage, &mut reads).await.unwrap();
        // A new version of it is read again.
        let mut changed = pod_named(&objects, "theirs");
        changed.metadata.as_mut().unwrap().resource_version = "99".into();
        assert!(reads.observe(&Arc::new(stored(&changed)), true));
        assert!(reads.to_try.contains(theirs_uid));
        assert!(reads.by_uid[theirs_uid].read.is_none());
        // Bound (by its own scheduler), it is let go from every set.
        changed.spec.as_mut().unwrap().node_name = "n1".into();
        assert!(reads.observe(&Arc::new(stored(&changed)), false));
        assert!(!reads.to_try.contains(theirs_uid));
        assert!(!reads.by_uid.contains_key(theirs_uid));
    }

    /// A stored event of `kind` (its object is not read: `follow` is given
    /// the decoded one).
    fn stored_event(kind: Kind, deleted: bool) -> crate::store::state_machine::StoredEvent {
        let event_type = match deleted {
            true => skiff_proto::api::EventType::Deleted,
            false => skiff_proto::api::EventType::Modified,
        };
        crate::store::state_machine::StoredEvent {
            revision: 1,
            kind,
            namespace: String::new(),
            event_type: event_type as i32,
            node: String::new(),
            object: Default::default(),
            previous: Default::default(),
            previous_revision: 0,
        }
    }

    #[tokio::test]
    async fn events_followed_set_a_pod_aside_until_a_node_changes_or_capacity_is_freed() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let ctx = context(&objects);
        let mut usage = NodeUsage::from_store(&*objects);
        let mut reads = pending_in(&objects);
        let stored_pod = |name: &str| objects.get(Kind::Pod, "default", name).unwrap().unwrap();
        let pod_event = stored_event(Kind::Pod, false);
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            1
        );
        // Its own status write: a new version, tried once more, then aside.
        let pending = stored_pod("pending");
        assert!(follow(&mut usage, &mut reads, false, &pod_event, &pending));
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            1
        );
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            0
        );
        // A bound pod's status report frees nothing: no pass is needed.
        let big = stored_pod("big");
        assert!(!follow(&mut usage, &mut reads, false, &pod_event, &big));
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            0
        );
        // A Node event: tried again (and still fits nowhere).
        let node = objects.get(Kind::Node, "", "n1").unwrap().unwrap();
        let node_event = stored_event(Kind::Node, false);
        assert!(follow(&mut usage, &mut reads, false, &node_event, &node));
        assert_eq!(
            pass(&ctx, &usage, &mut reads).await.unwrap().unschedulable,
            1
        );
        // While stale, nothing is followed (the rebuild reads the store).
        assert!(!follow(&mut usage, &mut reads, true, &node_event, &node));
        // The big pod deleted frees its charge: the pending pod is bound.
        objects.remove(Kind::Pod, "default", "big", "").unwrap();
        let deleted = stored_event(Kind::Pod, true);
        assert!(follow(&mut usage, &mut reads, false, &deleted, &big));
        assert_eq!(pass(&ctx, &usage, &mut reads).await.unwrap().bound, 1);
        // Its bound version lets it go.
        let bound = stored_pod("pending");
        assert!(follow(&mut usage, &mut reads, false, &pod_event, &bound));
        assert!(reads.by_uid.is_empty(), "{:?}", reads.by_uid);
        assert_eq!(load(&usage, "n1"), (500, 1, 0));
    }

    #[tokio::test]
    async fn a_pass_counts_what_nodes_already_carry_and_frees_it_when_a_pod_goes() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        let ctx = context(&objects);
        let mut usage = NodeUsage::from_store(&*objects);
        let outcome = pass(&ctx, &usage, &mut pending_in(&objects)).await.unwrap();
        assert_eq!(
            (outcome.bound, outcome.unschedulable),
            (0, 1),
            "800m + 500m > 1 cpu"
        );
        let why = pod_named(&objects, "pending").status.unwrap().conditions;
        assert_eq!(why[0].r#type, "PodScheduled");
        assert!(why[0].message.contains("Insufficient cpu"), "{:?}", why[0]);
        let events = objects.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].reason.as_str(), events[0].event_type),
            ("FailedScheduling", EventType::Warning)
        );
        assert_eq!(events[0].message, why[0].message);
        assert_eq!(events[0].involved.name, "pending");
        assert_eq!(events[0].source.component, "default-scheduler");

        let big = pod_named(&objects, "big");
        objects.remove(Kind::Pod, "default", "big", "").unwrap();
        usage.observe(&stored(&big), true);
        objects.clear_writes();
        let outcome = pass(&ctx, &usage, &mut pending_in(&objects)).await.unwrap();
        assert_eq!(outcome.bound, 1);
        let writes = objects.writes();
        assert_eq!(
            (writes[0].op, writes[0].name.as_str()),
            (WriteOp::Update, "pending")
        );
        assert_eq!(pod_named(&objects, "pending").spec.unwrap().node_name, "n1");
        let scheduled = objects.events().pop().expect("an Event");
        assert_eq!(scheduled.reason, "Scheduled");
        assert_eq!(
            scheduled.message,
            "Successfully assigned default/pending to n1"
        );
        assert_eq!(scheduled.involved.kind, "Pod");
    }
}
