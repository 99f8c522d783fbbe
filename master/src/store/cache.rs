//! The decoded, indexed object cache every master keeps beside its redb
//! state, as client-go's informers and kube-apiserver's watch cache do: each
//! object decoded once and shared (`Arc`) by every reader, with indexes for
//! the questions the leader's loops ask on every event: by namespace (key
//! order), by `spec.nodeName` (pods), finished pods oldest first (pod
//! garbage collection), by owner UID, by label, by the
//! claims a pod's volumes use, by what binds claims to volumes
//! (PersistentVolumes by `spec.claimRef`, free ones by class; unbound
//! claims by class), by the labels PodDisruptionBudgets select, RBAC's
//! bindings by the subjects they name with every role's rules read, and
//! aggregated ClusterRoles by the labels they select ([`RbacIndex`], what
//! each request's authorization and the aggregation controller look up),
//! and by the
//! addresses the cluster gives to one object at a time ([`HeldAddress`]):
//! a Service's clusterIP and nodePorts, and a Node's pod subnet
//! (`spec.podCIDR`, ordered so that the subnets overlapping one are found
//! without a scan). The allocators and the state machine's duplicate check
//! ask those.
//!
//! It holds no second copy of the truth: the state machine feeds it the
//! changes it has just committed ([`ObjectCache::apply`]) before anyone is
//! notified of them, and replaces it wholesale from redb when the replica
//! starts or installs a snapshot ([`ObjectCache::reset`]). A list is
//! consistent at the revision it reports, because applies and reads take the
//! same lock. When its CustomResourceDefinitions change, it publishes them
//! to the registry of kinds (`objects::registry::custom`), before anyone is
//! notified: discovery and the REST router serve a new CRD's kind as soon
//! as its write is applied.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use skiff_objects::services;
use skiff_objects::Ipv4Net;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object};

use super::edit_set;
use super::rbac_index::{Grant, RbacIndex, RoleRefError};
use skiff_objects::disruption_budget::Budget;
use skiff_objects::rbac::{RoleRef, RoleView, SubjectKey};
use skiff_objects::registry::custom::DefinitionSource;
use skiff_objects::storage::{self, ClaimView, VolumeView};
use skiff_objects::{selector, stored_kind, Kind, ObjectExt};

/// An object's place within its kind: (namespace, name).
pub type Key = (String, String);

/// A [`Key`] as a lookup sees it: borrowed parts, so that finding one
/// object copies neither its namespace nor its name. Ordered and compared
/// exactly as the tuple is (namespace, then name).
trait KeyView {
    fn parts(&self) -> (&str, &str);
}

impl KeyView for Key {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl KeyView for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// A finished pod's place in [`ObjectCache::oldest_finished_pods`]: not
/// evicted (evicted ones first), creation timestamp, key.
type FinishedPod = (bool, String, Key);

/// One committed change, as the state machine hands it over.
#[derive(Debug, Clone)]
pub struct CachedChange {
    pub kind: Kind,
    pub event_type: EventType,
    /// The object as stored (for a delete: as it was, at the new revision).
    pub object: Arc<Object>,
    /// Its protobuf size, for the memory accounting.
    pub encoded_len: usize,
}

#[derive(Default)]
struct Cached {
    revision: u64,
    objects: HashMap<Kind, BTreeMap<Key, Entry>>,
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    /// The finished (Succeeded or Failed) pods in the order pod garbage
    /// collection deletes them: evicted ones first, then by
    /// `creationTimestamp` (RFC 3339 in UTC, so text order is time order).
    finished_pods: BTreeSet<FinishedPod>,
    by_owner: HashMap<String, BTreeSet<(Kind, Key)>>,
    /// (kind, label key, label value) → the objects carrying it. Hashed,
    /// not ordered: a label on most objects of a kind (`app: web` on
    /// every pod of a big Deployment) made each write a search of a tree of
    /// them all; [`ObjectCache::select`] sorts what it picks instead.
    by_label: HashMap<(Kind, String, String), HashSet<Key>>,
    addresses: AddressIndex,
    /// (namespace, selector key, selector value) → Services selecting it.
    service_selectors: HashMap<(String, String, String), BTreeSet<String>>,
    /// What the indexes took from each Service (read once, as it was
    /// stored): its selector and the addresses it holds, so that taking
    /// it out reads nothing and a pod's Services are counted from the
    /// index alone.
    indexed_services: HashMap<Key, IndexedService>,
    /// (namespace, claim name) → the pods whose volumes use that claim.
    pods_by_claim: HashMap<(String, String), BTreeSet<String>>,
    /// (namespace, name) a PersistentVolume's `spec.claimRef` names → the
    /// volumes bound or reserved to that claim.
    volumes_by_claim: HashMap<(String, String), BTreeSet<String>>,
    /// `spec.storageClassName` → the PersistentVolumes without a claimRef
    /// of that class: the only ones an unbound claim may take.
    free_volumes_by_class: HashMap<String, BTreeSet<String>>,
    /// The class a claim asks for (`""`: none) → the PersistentVolumeClaims
    /// without `spec.volumeName`.
    unbound_claims_by_class: HashMap<String, BTreeSet<Key>>,
    /// (namespace, matchLabels key, value) → PodDisruptionBudgets whose
    /// selector has that pair.
    budget_selectors: HashMap<(String, String, String), BTreeSet<String>>,
    /// namespace → PodDisruptionBudgets whose selector has no matchLabels
    /// (expressions only, or empty: every pod), checked against each pod.
    budgets_without_labels: HashMap<String, BTreeSet<String>>,
    /// RoleBindings and ClusterRoleBindings by subject; roles' rules.
    rbac: RbacIndex,
    encoded_bytes: usize,
}

/// A Service as the indexes took it (`Cached::indexed_services`).
#[derive(Debug, Clone, Default)]
struct IndexedService {
    selector: BTreeMap<String, String>,
    held: Vec<HeldAddress>,
}

struct Entry {
    object: Arc<Object>,
    encoded_len: usize,
}

/// An address the cluster gives to one object at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldAddress {
    /// A Service's `spec.clusterIP` (not a headless Service's `None`).
    ClusterIp(Ipv4Addr),
    /// A Node's `spec.podCIDR`.
    PodCidr(Ipv4Net),
    /// A port on every node, a Service's `spec.ports[].nodePort` or its
    /// `spec.healthCheckNodePort`. One Service at a time holds a number,
    /// whatever the protocol (as in Kubernetes' allocator); the same
    /// Service may use it for TCP and UDP.
    NodePort(u16),
}

impl HeldAddress {
    /// The addresses `object` holds, each once: the clusterIP, the
    /// nodePorts and the health check port of a Service that has them, the
    /// pod subnet of a Node that
    /// has one. A value that does not parse (or a nodePort out of 1..=65535)
    /// holds nothing.
    pub fn of(object: &Object) -> Vec<HeldAddress> {
        if services::is_service(object) {
            return services::claims(object)
                .map(|claims| HeldAddress::of_claims(&claims))
                .unwrap_or_default();
        }
        let mut held = Vec::new();
        if let Some(Body::Node(node)) = &object.kind {
            if let Some(Ok(subnet)) = node.spec.as_ref().map(|s| s.pod_cidr.parse::<Ipv4Net>()) {
                held.push(HeldAddress::PodCidr(subnet));
            }
        }
        held
    }

    /// The addresses a Service holds, from what it claims (see
    /// [`HeldAddress::of`]).
    pub fn of_claims(claims: &services::Claims) -> Vec<HeldAddress> {
        let mut held = Vec::new();
        if let Ok(ip) = claims.cluster_ip.parse::<Ipv4Addr>() {
            held.push(HeldAddress::ClusterIp(ip));
        }
        let node_ports = claims.node_ports.iter().copied();
        for port in node_ports.chain([claims.health_check_node_port]) {
            if let Ok(number) = u16::try_from(port) {
                let address = HeldAddress::NodePort(number);
                if number != 0 && !held.contains(&address) {
                    held.push(address);
                }
            }
        }
        held
    }

    /// The kind of object that holds this sort of address.
    pub fn holder_kind(&self) -> Kind {
        match self {
            HeldAddress::ClusterIp(_) | HeldAddress::NodePort(_) => Kind::Service,
            HeldAddress::PodCidr(_) => Kind::Node,
        }
    }
}

impl std::fmt::Display for HeldAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeldAddress::ClusterIp(ip) => write!(f, "{ip}"),
            HeldAddress::PodCidr(subnet) => write!(f, "{subnet}"),
            HeldAddress::NodePort(port) => write!(f, "{port}"),
        }
    }
}

/// Which object holds each [`HeldAddress`]. Pod subnets are ordered by
/// network address: CIDR blocks are either nested or disjoint, so the
/// subnets overlapping one either start inside it (a range of the map) or
/// are among the at most 32 wider blocks around its first address (one
/// lookup each), and no question scans the Nodes.
///
/// One holder per address: when two objects claim the same one (which the
/// state machine refuses), the later put is what the index keeps.
#[derive(Debug, Default)]
pub struct AddressIndex {
    cluster_ips: HashMap<Ipv4Addr, Key>,
    pod_cidrs: BTreeMap<Ipv4Net, Key>,
    node_ports: HashMap<u16, Key>,
}

impl AddressIndex {
    /// Records that the object at `key` holds `address`.
    pub fn add(&mut self, address: HeldAddress, key: Key) {
        match address {
            HeldAddress::ClusterIp(ip) => {
                self.cluster_ips.insert(ip, key);
            }
            HeldAddress::PodCidr(subnet) => {
                self.pod_cidrs.insert(subnet, key);
            }
            HeldAddress::NodePort(port) => {
                self.node_ports.insert(port, key);
            }
        }
    }

    /// Forgets `address` if the object at `key` is what holds it.
    pub fn remove(&mut self, address: HeldAddress, key: &Key) {
        match address {
            HeldAddress::ClusterIp(ip) => {
                if self.cluster_ips.get(&ip) == Some(key) {
                    self.cluster_ips.remove(&ip);
                }
            }
            HeldAddress::PodCidr(subnet) => {
                if self.pod_cidrs.get(&subnet) == Some(key) {
                    self.pod_cidrs.remove(&subnet);
                }
            }
            HeldAddress::NodePort(port) => {
                if self.node_ports.get(&port) == Some(key) {
                    self.node_ports.remove(&port);
                }
            }
        }
    }

    /// Who holds `address` and, for a pod subnet, every subnet overlapping
    /// it (inside it or around it), each with what it holds.
    pub fn holders(&self, address: HeldAddress) -> Vec<(HeldAddress, Key)> {
        match address {
            HeldAddress::ClusterIp(ip) => self
                .cluster_ips
                .get(&ip)
                .map(|key| (address, key.clone()))
                .into_iter()
                .collect(),
            HeldAddress::NodePort(port) => self
                .node_ports
                .get(&port)
                .map(|key| (address, key.clone()))
                .into_iter()
                .collect(),
            HeldAddress::PodCidr(subnet) => {
                let first = Ipv4Net {
                    addr: subnet.addr,
                    len: 0,
                };
                let last = Ipv4Net {
                    addr: subnet.nth(subnet.size() - 1),
                    len: 32,
                };
                let inside = self.pod_cidrs.range(first..=last);
                let around = (0..subnet.len)
                    .map(|len| Ipv4Net::new(subnet.addr, len))
                    // Those starting at the same address are inside's.
                    .filter(|wider| wider.addr != subnet.addr)
                    .filter_map(|wider| self.pod_cidrs.get_key_value(&wider));
                inside
                    .chain(around)
                    .map(|(held, key)| (HeldAddress::PodCidr(*held), key.clone()))
                    .collect()
            }
        }
    }

    /// How many clusterIPs are held.
    pub fn cluster_ips_held(&self) -> usize {
        self.cluster_ips.len()
    }

    /// How many pod subnets are held.
    pub fn pod_cidrs_held(&self) -> usize {
        self.pod_cidrs.len()
    }

    /// How many nodePorts are held.
    pub fn node_ports_held(&self) -> usize {
        self.node_ports.len()
    }
}

/// The cache. Cheap to read concurrently; written only by the state machine.
#[derive(Default)]
pub struct ObjectCache {
    state: RwLock<Cached>,
    /// Where its CustomResourceDefinitions are published to the registry.
    definitions: DefinitionSource,
}

/// What the cache holds, for `/metrics` and the scale benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheSize {
    pub objects: usize,
    /// Sum of the objects' protobuf sizes (the decoded form takes more).
    pub encoded_bytes: usize,
}

impl ObjectCache {
    fn read(&self) -> RwLockReadGuard<'_, Cached> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cached> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything with `objects` at `revision`.
    pub fn reset(&self, objects: Vec<(Arc<Object>, usize)>, revision: u64) {
        let mut fresh = Cached {
            revision,
            ..Cached::default()
        };
        for (object, encoded_len) in objects {
            if let Ok(kind) = stored_kind(&object) {
                fresh.put(kind, object, encoded_len);
            }
        }
        *self.write() = fresh;
        self.publish_definitions();
    }

    /// Serves the CustomResourceDefinitions held now.
    fn publish_definitions(&self) {
        let (crds, _) = self.list(Kind::CustomResourceDefinition, None);
        self.definitions.publish(&crds);
    }

    /// The custom kinds that objects are held of (served or not).
    pub fn custom_kinds(&self) -> Vec<Kind> {
        let cached = self.read();
        cached
            .objects
            .iter()
            .filter(|(kind, table)| matches!(kind, Kind::Custom(_)) && !table.is_empty())
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// Applies committed changes; `revision` is the store's revision after
    /// them.
    pub fn apply(&self, changes: &[CachedChange], revision: u64) {
        let mut cached = self.write();
        for change in changes {
            if change.event_type == EventType::Deleted {
                let meta = change.object.meta();
                cached.remove(change.kind, &(meta.namespace.clone(), meta.name.clone()));
            } else {
                cached.put(change.kind, change.object.clone(), change.encoded_len);
            }
        }
        cached.revision = revision;
        drop(cached);
        if changes
            .iter()
            .any(|c| c.kind == Kind::CustomResourceDefinition)
        {
            self.publish_definitions();
        }
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let cached = self.read();
        cached
            .objects
            .get(&kind)?
            .get(&(namespace, name) as &dyn KeyView)
            .map(|e| e.object.clone())
    }

    /// Every object of `kind` (in one namespace, or all) in key order, and
    /// the revision the list is consistent at.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> (Vec<Arc<Object>>, u64) {
        let cached = self.read();
        let Some(table) = cached.objects.get(&kind) else {
            return (Vec::new(), cached.revision);
        };
        let objects = match namespace {
            None => table.values().map(|e| e.object.clone()).collect(),
            Some(ns) => table
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, e)| e.object.clone())
                .collect(),
        };
        (objects, cached.revision)
    }

    /// The pods bound to `node` (`""`: the unbound ones).
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<Object>> {
        self.pods_on_node_at(node).0
    }

    /// The pods bound to `node`, and the revision that list is consistent at.
    pub fn pods_on_node_at(&self, node: &str) -> (Vec<Arc<Object>>, u64) {
        let cached = self.read();
        let keys = cached.pods_by_node.get(node);
        (
            cached.resolve(Kind::Pod, keys.into_iter().flatten()),
            cached.revision,
        )
    }

    /// The names of the nodes pods are bound to, each once (Nodes that do
    /// not exist included), in no particular order.
    pub fn pod_nodes(&self) -> Vec<String> {
        let cached = self.read();
        let nodes = cached.pods_by_node.keys().filter(|n| !n.is_empty());
        nodes.cloned().collect()
    }

    /// How many pods have finished (Succeeded or Failed).
    pub fn finished_pod_count(&self) -> usize {
        self.read().finished_pods.len()
    }

    /// The first `count` finished pods in the order pod garbage collection
    /// deletes them: evicted ones first, then the oldest.
    pub fn oldest_finished_pods(&self, count: usize) -> Vec<Arc<Object>> {
        let cached = self.read();
        let keys = cached.finished_pods.iter().take(count).map(|(_, _, k)| k);
        cached.resolve(Kind::Pod, keys)
    }

    /// Every object with an owner reference to `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<Arc<Object>> {
        let cached = self.read();
        let Some(keys) = cached.by_owner.get(uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(kind, key)| cached.objects.get(kind)?.get(key))
            .map(|e| e.object.clone())
            .collect()
    }

    /// The objects of `kind` in `namespace` whose labels include every pair
    /// of `labels`; an empty `labels` selects nothing (as an empty Service
    /// selector does).
    pub fn select(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        let cached = self.read();
        // Start from the rarest pair and check the rest on each object.
        let Some(smallest) = labels
            .iter()
            .map(|(k, v)| {
                cached
                    .by_label
                    .get(&(kind, k.clone(), v.clone()))
                    .map_or(0, HashSet::len)
            })
            .min()
        else {
            return Vec::new();
        };
        if smallest == 0 {
            return Vec::new();
        }
        let rarest = labels.iter().find_map(|(k, v)| {
            let keys = cached.by_label.get(&(kind, k.clone(), v.clone()))?;
            (keys.len() == smallest).then_some(keys)
        });
        // In key order, as a list gives them.
        let mut candidates: Vec<&Key> = rarest
            .into_iter()
            .flatten()
            .filter(|(ns, _)| ns == namespace)
            .collect();
        candidates.sort_unstable();
        cached
            .resolve(kind, candidates.into_iter())
            .into_iter()
            .filter(|o| {
                let have = &o.meta().labels;
                labels.iter().all(|(k, v)| have.get(k) == Some(v))
            })
            .collect()
    }

    /// The Services in `namespace` whose (non-empty) selector matches
    /// `labels`: the Services a pod with those labels belongs to.
    pub fn services_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        let cached = self.read();
        // How many of its selector's pairs each Service has in `labels`:
        // all of them, it selects them.
        let mut matched: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, v) in labels {
            let at = (namespace.to_owned(), k.clone(), v.clone());
            for name in cached.service_selectors.get(&at).into_iter().flatten() {
                *matched.entry(name).or_default() += 1;
            }
        }
        let keys: Vec<Key> = matched
            .into_iter()
            .map(|(name, count)| (namespace.to_owned(), name.to_owned(), count))
            .filter(|(namespace, name, count)| {
                let key = (namespace.clone(), name.clone());
                cached
                    .indexed_services
                    .get(&key)
                    .is_some_and(|s| s.selector.len() == *count)
            })
            .map(|(namespace, name, _)| (namespace, name))
            .collect();
        cached.resolve(Kind::Service, keys.iter())
    }

    /// The pods of `namespace` whose volumes use the PersistentVolumeClaim
    /// `claim`, in name order.
    pub fn pods_using_claim(&self, namespace: &str, claim: &str) -> Vec<Arc<Object>> {
        let cached = self.read();
        let at = (namespace.to_owned(), claim.to_owned());
        let keys = cached
            .pods_by_claim
            .get(&at)
            .into_iter()
            .flatten()
            .map(|name| (namespace.to_owned(), name.clone()));
        let keys: Vec<Key> = keys.collect();
        cached.resolve(Kind::Pod, keys.iter())
    }

    /// The PersistentVolumes whose `spec.claimRef` names the claim
    /// `namespace`/`name` (whatever its uid): bound or reserved to it.
    pub fn volumes_for_claim(&self, namespace: &str, name: &str) -> Vec<Arc<Object>> {
        let cached = self.read();
        let at = (namespace.to_owned(), name.to_owned());
        let keys: Vec<Key> = cached
            .volumes_by_claim
            .get(&at)
            .into_iter()
            .flatten()
            .map(|volume| (String::new(), volume.clone()))
            .collect();
        cached.resolve(Kind::PersistentVolume, keys.iter())
    }

    /// The PersistentVolumes of storage class `class` (`""`: none) without
    /// a claimRef, in name order.
    pub fn free_volumes(&self, class: &str) -> Vec<Arc<Object>> {
        let cached = self.read();
        let keys: Vec<Key> = cached
            .free_volumes_by_class
            .get(class)
            .into_iter()
            .flatten()
            .map(|volume| (String::new(), volume.clone()))
            .collect();
        cached.resolve(Kind::PersistentVolume, keys.iter())
    }

    /// The PersistentVolumeClaims asking for storage class `class` (`""`:
    /// none) that name no volume yet, in key order.
    pub fn unbound_claims(&self, class: &str) -> Vec<Arc<Object>> {
        let cached = self.read();
        let keys = cached.unbound_claims_by_class.get(class);
        cached.resolve(Kind::PersistentVolumeClaim, keys.into_iter().flatten())
    }

    /// The PodDisruptionBudgets of `namespace` whose selector selects a pod
    /// with `labels`, in name order.
    pub fn budgets_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        let cached = self.read();
        let mut names = BTreeSet::new();
        for (k, v) in labels {
            let at = (namespace.to_owned(), k.clone(), v.clone());
            if let Some(found) = cached.budget_selectors.get(&at) {
                names.extend(found.iter().cloned());
            }
        }
        if let Some(found) = cached.budgets_without_labels.get(namespace) {
            names.extend(found.iter().cloned());
        }
        let keys: Vec<Key> = names
            .into_iter()
            .map(|name| (namespace.to_owned(), name))
            .collect();
        cached
            .resolve(Kind::PodDisruptionBudget, keys.iter())
            .into_iter()
            .filter(|o| {
                Budget::of(o)
                    .and_then(|b| b.selector)
                    .is_some_and(|s| selector::matches(&s, labels))
            })
            .collect()
    }

    /// The RoleBindings and ClusterRoleBindings that name any of
    /// `subjects` and apply in `namespace` (`""`: cluster-wide, the
    /// ClusterRoleBindings only), each with its role's rules: what RBAC
    /// authorizes a request with (`api::rbac`).
    pub fn rbac_grants(&self, subjects: &[SubjectKey], namespace: &str) -> Vec<Grant> {
        self.read().rbac.grants(subjects, namespace)
    }

    /// The role `role_ref` names, for a binding in `namespace` (`""` for a
    /// ClusterRoleBinding), read when it was stored; or why there is none.
    pub fn rbac_role_of(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<Arc<RoleView>, RoleRefError> {
        self.read().rbac.role_of(role_ref, namespace)
    }

    /// The ClusterRole `name`'s rules and `aggregationRule`, read when it
    /// was stored.
    pub fn cluster_role_view(&self, name: &str) -> Option<Arc<RoleView>> {
        self.read().rbac.cluster_role(name)
    }

    /// The names of the ClusterRoles with an `aggregationRule` one of whose
    /// selectors selects a ClusterRole labelled `labels`, in name order.
    pub fn aggregating_cluster_roles(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.read().rbac.aggregating_cluster_roles(labels)
    }

    /// The Service holding `ip` as its clusterIP, if any.
    pub fn cluster_ip_holder(&self, ip: Ipv4Addr) -> Option<Key> {
        let holders = self.address_holders(HeldAddress::ClusterIp(ip));
        holders.into_iter().next().map(|(_, key)| key)
    }

    /// How many clusterIPs are held.
    pub fn cluster_ips_held(&self) -> usize {
        self.read().addresses.cluster_ips_held()
    }

    /// The Service holding `port` as a nodePort, if any.
    pub fn node_port_holder(&self, port: u16) -> Option<Key> {
        let holders = self.address_holders(HeldAddress::NodePort(port));
        holders.into_iter().next().map(|(_, key)| key)
    }

    /// How many nodePorts are held.
    pub fn node_ports_held(&self) -> usize {
        self.read().addresses.node_ports_held()
    }

    /// The Nodes whose pod subnet overlaps `subnet` (is it, lies inside it
    /// or contains it): each one's name and the subnet it holds.
    pub fn pod_cidr_holders(&self, subnet: Ipv4Net) -> Vec<(String, Ipv4Net)> {
        self.address_holders(HeldAddress::PodCidr(subnet))
            .into_iter()
            .filter_map(|(held, (_, name))| match held {
                HeldAddress::PodCidr(held) => Some((name, held)),
                HeldAddress::ClusterIp(_) | HeldAddress::NodePort(_) => None,
            })
            .collect()
    }

    /// How many pod subnets Nodes hold.
    pub fn pod_cidrs_held(&self) -> usize {
        self.read().addresses.pod_cidrs_held()
    }

    /// Who holds `address` (for a pod subnet: any subnet overlapping it),
    /// as of the last applied batch; see [`AddressIndex::holders`].
    pub fn address_holders(&self, address: HeldAddress) -> Vec<(HeldAddress, Key)> {
        self.read().addresses.holders(address)
    }

    /// How much the cache holds.
    pub fn size(&self) -> CacheSize {
        let cached = self.read();
        CacheSize {
            objects: cached.objects.values().map(BTreeMap::len).sum(),
            encoded_bytes: cached.encoded_bytes,
        }
    }
}

impl Cached {
    fn resolve<'a>(&self, kind: Kind, keys: impl Iterator<Item = &'a Key>) -> Vec<Arc<Object>> {
        let Some(table) = self.objects.get(&kind) else {
            return Vec::new();
        };
        keys.filter_map(|key| table.get(key))
            .map(|e| e.object.clone())
            .collect()
    }

    fn put(&mut self, kind: Kind, object: Arc<Object>, encoded_len: usize) {
        let key = {
            let meta = object.meta();
            (meta.namespace.clone(), meta.name.clone())
        };
        self.remove(kind, &key);
        self.index(kind, &key, &object, true);
        self.encoded_bytes += encoded_len;
        self.objects.entry(kind).or_default().insert(
            key,
            Entry {
                object,
                encoded_len,
            },
        );
    }

    fn remove(&mut self, kind: Kind, key: &Key) {
        let Some(old) = self.objects.get_mut(&kind).and_then(|t| t.remove(key)) else {
            return;
        };
        self.encoded_bytes = self.encoded_bytes.saturating_sub(old.encoded_len);
        self.index(kind, key, &old.object, false);
    }

    /// Adds (`add`) or removes `object`'s index entries.
    fn index(&mut self, kind: Kind, key: &Key, object: &Object, add: bool) {
        let meta = object.meta();
        for owner in &meta.owner_references {
            edit_set(
                &mut self.by_owner,
                owner.uid.clone(),
                (kind, key.clone()),
                add,
            );
        }
        for (k, v) in &meta.labels {
            let at = (kind, k.clone(), v.clone());
            if add {
                self.by_label.entry(at).or_default().insert(key.clone());
            } else if let Some(set) = self.by_label.get_mut(&at) {
                set.remove(key);
                if set.is_empty() {
                    self.by_label.remove(&at);
                }
            }
        }
        match &object.kind {
            _ if kind == Kind::Pod => {
                // What the indexes need of a pod, read without the rest.
                let facts = skiff_objects::pods::facts(object).unwrap_or_default();
                edit_set(
                    &mut self.pods_by_node,
                    facts.node_name.clone(),
                    key.clone(),
                    add,
                );
                if facts.is_finished() {
                    let evicted = facts.reason == "Evicted";
                    let at = (!evicted, meta.creation_timestamp.clone(), key.clone());
                    if add {
                        self.finished_pods.insert(at);
                    } else {
                        self.finished_pods.remove(&at);
                    }
                }
                for claim in facts.claims {
                    edit_set(
                        &mut self.pods_by_claim,
                        (key.0.clone(), claim),
                        key.1.clone(),
                        add,
                    );
                }
            }
            _ if kind == Kind::Service => {}
            Some(Body::Generic(_)) => self.index_generic(kind, key, object, add),
            _ => {}
        }
        let held = if kind == Kind::Service {
            self.index_service(key, object, add)
        } else {
            HeldAddress::of(object)
        };
        for address in held {
            if add {
                self.addresses.add(address, key.clone());
            } else {
                self.addresses.remove(address, key);
            }
        }
    }

    /// Adds (`add`) or removes a Service's selector entries; the
    /// addresses it holds, to add or remove.
    fn index_service(&mut self, key: &Key, object: &Object, add: bool) -> Vec<HeldAddress> {
        let indexed = if add {
            let claims = services::claims(object).unwrap_or_default();
            let indexed = IndexedService {
                held: HeldAddress::of_claims(&claims),
                selector: claims.selector,
            };
            self.indexed_services.insert(key.clone(), indexed.clone());
            indexed
        } else {
            // As it was indexed (the object is the one stored then).
            self.indexed_services.remove(key).unwrap_or_default()
        };
        for (k, v) in indexed.selector {
            edit_set(
                &mut self.service_selectors,
                (key.0.clone(), k, v),
                key.1.clone(),
                add,
            );
        }
        indexed.held
    }

    /// The index entries of the generic kinds indexed by their content:
    /// volumes, claims and disruption budgets, read as their controllers
    /// read them (`objects::storage`, `objects::disruption_budget`), so an
    /// index holds exactly the objects those would pick.
    fn index_generic(&mut self, kind: Kind, key: &Key, object: &Object, add: bool) {
        match kind {
            Kind::PersistentVolume => {
                let Some(volume) = VolumeView::read(object) else {
                    return;
                };
                match volume.claim_ref() {
                    Some(r) => edit_set(
                        &mut self.volumes_by_claim,
                        {
                            let (namespace, name, _) = storage::claim_ref_parts(r);
                            (namespace.to_owned(), name.to_owned())
                        },
                        key.1.clone(),
                        add,
                    ),
                    None => edit_set(
                        &mut self.free_volumes_by_class,
                        volume.class().to_owned(),
                        key.1.clone(),
                        add,
                    ),
                }
            }
            Kind::PersistentVolumeClaim => {
                let Some(claim) = ClaimView::read(object) else {
                    return;
                };
                if claim.volume_name().is_empty() {
                    let class = claim.class().to_owned();
                    edit_set(&mut self.unbound_claims_by_class, class, key.clone(), add);
                }
            }
            Kind::Role | Kind::ClusterRole | Kind::RoleBinding | Kind::ClusterRoleBinding => {
                self.rbac.edit(kind, key, object, add);
            }
            Kind::PodDisruptionBudget => {
                // A budget without a selector selects no pod: not indexed.
                let Some(selector) = Budget::of(object).and_then(|b| b.selector) else {
                    return;
                };
                if selector.match_labels.is_empty() {
                    let at = key.0.clone();
                    edit_set(&mut self.budgets_without_labels, at, key.1.clone(), add);
                }
                for (k, v) in &selector.match_labels {
                    let at = (key.0.clone(), k.clone(), v.clone());
                    edit_set(&mut self.budget_selectors, at, key.1.clone(), add);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::IntoObject;
    use skiff_proto::v1;

    fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)], owner: &str) -> Arc<Object> {
        Arc::new(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: ns.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    owner_references: (!owner.is_empty())
                        .then(|| v1::OwnerReference {
                            uid: owner.into(),
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                spec: Some(v1::PodSpec {
                    node_name: node.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    fn service_with(name: &str, spec: services::ServiceSpec) -> Arc<Object> {
        let meta = v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        Arc::new(services::object(meta, spec, None))
    }

    fn service(name: &str, ip: &str) -> Arc<Object> {
        let spec = services::ServiceSpec {
            cluster_ip: Some(ip.into()),
            ..Default::default()
        };
        service_with(name, spec)
    }

    fn change(kind: Kind, event_type: EventType, object: Arc<Object>) -> CachedChange {
        CachedChange {
            kind,
            event_type,
            object,
            encoded_len: 100,
        }
    }

    fn names(objects: &[Arc<Object>]) -> Vec<String> {
        objects.iter().map(|o| o.meta().name.clone()).collect()
    }

    #[test]
    fn borrowed_keys_order_as_the_tuples_do() {
        let mut keys: Vec<Key> = [("a", "z"), ("ab", "a"), ("", "b"), ("a", ""), ("b", "a")]
            .iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect();
        keys.sort();
        for pair in keys.windows(2) {
            let (x, y) = (&pair[0] as &dyn KeyView, &pair[1] as &dyn KeyView);
            assert_eq!(x.cmp(y), std::cmp::Ordering::Less, "{pair:?}");
            let borrowed = (pair[0].0.as_str(), pair[0].1.as_str());
            assert!(&borrowed as &dyn KeyView == x, "{pair:?}");
            assert_eq!(
                (&borrowed as &dyn KeyView).cmp(y),
                std::cmp::Ordering::Less,
                "{pair:?}"
            );
        }
    }

    #[test]
    fn get_finds_each_object_among_namespaces_and_names_sharing_prefixes() {
        let cache = ObjectCache::default();
        let placed = [
            ("a", "web"),
            ("ab", "web"),
            ("a", "web-1"),
            ("a", "we"),
            ("b", "a"),
            ("", "web"),
        ];
        let changes: Vec<CachedChange> = placed
            .iter()
            .map(|(ns, name)| change(Kind::Pod, EventType::Added, pod(ns, name, "", &[], "")))
            .collect();
        cache.apply(&changes, 1);
        for (ns, name) in placed {
            let found = cache.get(Kind::Pod, ns, name).expect("cached");
            assert_eq!(
                (found.meta().namespace.as_str(), found.meta().name.as_str()),
                (ns, name)
            );
        }
        for (ns, name) in [("a", "w"), ("ab", "web-1"), ("c", "web"), ("a", "web-2")] {
            assert!(cache.get(Kind::Pod, ns, name).is_none(), "{ns}/{name}");
        }
        assert!(cache.get(Kind::Service, "a", "web").is_none());
    }

    #[test]
    fn indexes_follow_puts_updates_and_deletes() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod("a", "p1", "n1", &[("app", "web")], "rs-1"),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod("a", "p2", "", &[("app", "web"), ("tier", "x")], "rs-1"),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod("b", "p3", "n1", &[("app", "web")], ""),
                ),
            ],
            3,
        );
        assert_eq!(names(&cache.pods_on_node("n1")), ["p1", "p3"]);
        assert_eq!(names(&cache.pods_on_node("")), ["p2"]);
        assert_eq!(names(&cache.dependents_of("rs-1")), ["p1", "p2"]);
        let web: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        assert_eq!(names(&cache.select(Kind::Pod, "a", &web)), ["p1", "p2"]);
        let both: BTreeMap<String, String> = [
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "x".to_owned()),
        ]
        .into();
        assert_eq!(names(&cache.select(Kind::Pod, "a", &both)), ["p2"]);
        assert!(cache.select(Kind::Pod, "a", &BTreeMap::new()).is_empty());
        // A selection comes in key order, however the label's index holds
        // its objects.
        let many: Vec<CachedChange> = (0..64)
            .rev()
            .map(|i| {
                let name = format!("m{i:02}");
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod("c", &name, "", &[("app", "web")], ""),
                )
            })
            .collect();
        let ordered = ObjectCache::default();
        ordered.apply(&many, 64);
        let expected: Vec<String> = (0..64).map(|i| format!("m{i:02}")).collect();
        assert_eq!(names(&ordered.select(Kind::Pod, "c", &web)), expected);

        // p2 gets bound, relabelled and released by its owner.
        cache.apply(
            &[change(
                Kind::Pod,
                EventType::Modified,
                pod("a", "p2", "n2", &[("app", "db")], ""),
            )],
            4,
        );
        assert_eq!(names(&cache.pods_on_node("")), Vec::<String>::new());
        assert_eq!(names(&cache.pods_on_node("n2")), ["p2"]);
        assert_eq!(names(&cache.dependents_of("rs-1")), ["p1"]);
        assert_eq!(names(&cache.select(Kind::Pod, "a", &web)), ["p1"]);
        assert!(cache.select(Kind::Pod, "a", &both).is_empty());

        cache.apply(
            &[change(
                Kind::Pod,
                EventType::Deleted,
                pod("a", "p1", "n1", &[("app", "web")], "rs-1"),
            )],
            5,
        );
        assert_eq!(names(&cache.pods_on_node("n1")), ["p3"]);
        assert!(cache.dependents_of("rs-1").is_empty());
        assert_eq!(
            cache.size(),
            CacheSize {
                objects: 2,
                encoded_bytes: 200
            }
        );
        assert_eq!(cache.revision(), 5);
    }

    /// A pod on `node`, created at `created`, in `phase` (with `reason`).
    fn pod_in_phase(
        name: &str,
        node: &str,
        created: &str,
        phase: &str,
        reason: &str,
    ) -> Arc<Object> {
        Arc::new(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    creation_timestamp: created.into(),
                    ..Default::default()
                }),
                spec: Some(v1::PodSpec {
                    node_name: node.into(),
                    ..Default::default()
                }),
                status: Some(v1::PodStatus {
                    phase: phase.into(),
                    reason: reason.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    #[test]
    fn finished_pods_come_evicted_first_then_oldest_and_pods_name_their_nodes() {
        let cache = ObjectCache::default();
        let at = |minute: u32| format!("2026-01-01T00:{minute:02}:00Z");
        cache.apply(
            &[
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_in_phase("new", "n1", &at(5), "Succeeded", ""),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_in_phase("old", "n2", &at(1), "Failed", ""),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_in_phase("evicted", "n1", &at(9), "Failed", "Evicted"),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_in_phase("running", "gone", &at(0), "Running", ""),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_in_phase("pending", "", &at(0), "", ""),
                ),
            ],
            5,
        );
        assert_eq!(cache.finished_pod_count(), 3);
        assert_eq!(names(&cache.oldest_finished_pods(2)), ["evicted", "old"]);
        assert_eq!(
            names(&cache.oldest_finished_pods(10)),
            ["evicted", "old", "new"]
        );
        let mut nodes = cache.pod_nodes();
        nodes.sort();
        assert_eq!(nodes, ["gone", "n1", "n2"]);

        // The running pod finishes, the old one goes.
        cache.apply(
            &[
                change(
                    Kind::Pod,
                    EventType::Modified,
                    pod_in_phase("running", "gone", &at(0), "Succeeded", ""),
                ),
                change(
                    Kind::Pod,
                    EventType::Deleted,
                    pod_in_phase("old", "n2", &at(1), "Failed", ""),
                ),
            ],
            7,
        );
        assert_eq!(cache.finished_pod_count(), 3);
        assert_eq!(
            names(&cache.oldest_finished_pods(2)),
            ["evicted", "running"]
        );
        let mut nodes = cache.pod_nodes();
        nodes.sort();
        assert_eq!(nodes, ["gone", "n1"]);
    }

    #[test]
    fn lists_are_per_namespace_in_key_order_at_one_revision() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(Kind::Pod, EventType::Added, pod("b", "z", "", &[], "")),
                change(Kind::Pod, EventType::Added, pod("a", "y", "", &[], "")),
                change(Kind::Pod, EventType::Added, pod("ab", "x", "", &[], "")),
                change(Kind::Pod, EventType::Added, pod("a", "w", "", &[], "")),
            ],
            7,
        );
        let (all, revision) = cache.list(Kind::Pod, None);
        assert_eq!(revision, 7);
        assert_eq!(names(&all), ["w", "y", "x", "z"]);
        assert_eq!(names(&cache.list(Kind::Pod, Some("a")).0), ["w", "y"]);
        assert!(cache.list(Kind::Service, None).0.is_empty());
        // The same Arc, not a copy, for every reader.
        let first = cache.get(Kind::Pod, "a", "w").unwrap();
        assert!(Arc::ptr_eq(&first, &cache.list(Kind::Pod, Some("a")).0[0]));
    }

    #[test]
    fn cluster_ips_are_held_until_their_service_goes() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(Kind::Service, EventType::Added, service("a", "10.43.0.11")),
                change(Kind::Service, EventType::Added, service("h", "None")),
            ],
            2,
        );
        let ip = Ipv4Addr::new(10, 43, 0, 11);
        assert_eq!(
            cache.cluster_ip_holder(ip),
            Some(("default".into(), "a".into()))
        );
        assert_eq!(cache.cluster_ips_held(), 1);
        cache.apply(
            &[change(
                Kind::Service,
                EventType::Deleted,
                service("a", "10.43.0.11"),
            )],
            3,
        );
        assert_eq!(cache.cluster_ip_holder(ip), None);
        // Rebuilt from redb or a snapshot: the index is the objects'.
        cache.reset(vec![(service("b", "10.43.0.12"), 10)], 9);
        let b = Ipv4Addr::new(10, 43, 0, 12);
        assert_eq!(
            cache.cluster_ip_holder(b),
            Some(("default".into(), "b".into()))
        );
        assert_eq!(cache.cluster_ips_held(), 1);
    }

    #[test]
    fn node_ports_are_held_until_their_service_drops_them() {
        let with_ports = |name: &str, ports: &[(i32, &str, i32)]| {
            let ports = ports
                .iter()
                .map(|(port, protocol, node_port)| services::ServicePort {
                    port: *port,
                    protocol: Some((*protocol).into()),
                    node_port: (*node_port != 0).then_some(*node_port),
                    ..Default::default()
                })
                .collect();
            let spec = services::ServiceSpec {
                cluster_ip: Some("10.43.0.20".into()),
                ports: Some(ports),
                ..Default::default()
            };
            service_with(name, spec)
        };
        let cache = ObjectCache::default();
        // TCP and UDP of one port share a nodePort: held once.
        let dns = with_ports(
            "dns",
            &[(53, "TCP", 30053), (53, "UDP", 30053), (80, "TCP", 30080)],
        );
        assert_eq!(
            HeldAddress::of(&dns),
            [
                HeldAddress::ClusterIp(Ipv4Addr::new(10, 43, 0, 20)),
                HeldAddress::NodePort(30053),
                HeldAddress::NodePort(30080)
            ]
        );
        cache.apply(&[change(Kind::Service, EventType::Added, dns)], 1);
        assert_eq!(
            cache.node_port_holder(30053),
            Some(("default".into(), "dns".into()))
        );
        assert_eq!(cache.node_ports_held(), 2);
        // An update that drops a port frees its number.
        let fewer = with_ports("dns", &[(53, "TCP", 30053)]);
        cache.apply(
            &[change(Kind::Service, EventType::Modified, fewer.clone())],
            2,
        );
        assert_eq!(cache.node_port_holder(30080), None);
        cache.apply(&[change(Kind::Service, EventType::Deleted, fewer)], 3);
        assert_eq!(cache.node_ports_held(), 0);
        // A health check port is held like a nodePort.
        let mut object = Arc::unwrap_or_clone(with_ports("lb", &[(80, "TCP", 30090)]));
        let mut spec = services::read(&object).unwrap().spec.unwrap();
        spec.health_check_node_port = Some(30091);
        services::set_spec(&mut object, spec);
        assert_eq!(
            HeldAddress::of(&object)[1..],
            [HeldAddress::NodePort(30090), HeldAddress::NodePort(30091)]
        );
    }

    fn node(name: &str, pod_cidr: &str) -> Arc<Object> {
        Arc::new(
            v1::Node {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    ..Default::default()
                }),
                spec: Some(v1::NodeSpec {
                    pod_cidr: pod_cidr.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Who holds pod subnets overlapping `subnet`, sorted.
    fn holders(cache: &ObjectCache, subnet: &str) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = cache
            .pod_cidr_holders(net(subnet))
            .into_iter()
            .map(|(name, held)| (name, held.to_string()))
            .collect();
        found.sort();
        found
    }

    fn held_by(name: &str, subnet: &str) -> (String, String) {
        (name.to_owned(), subnet.to_owned())
    }

    #[test]
    fn pod_subnets_are_held_until_their_node_goes_or_changes() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(Kind::Node, EventType::Added, node("n1", "10.42.1.0/24")),
                change(Kind::Node, EventType::Added, node("n2", "10.42.2.0/24")),
                change(Kind::Node, EventType::Added, node("joining", "")),
            ],
            3,
        );
        assert_eq!(
            holders(&cache, "10.42.1.0/24"),
            [held_by("n1", "10.42.1.0/24")]
        );
        assert!(holders(&cache, "10.42.3.0/24").is_empty());
        assert_eq!(cache.pod_cidrs_held(), 2);

        // The joining node is given a subnet; n2's is changed.
        cache.apply(
            &[
                change(
                    Kind::Node,
                    EventType::Modified,
                    node("joining", "10.42.3.0/24"),
                ),
                change(Kind::Node, EventType::Modified, node("n2", "10.42.4.0/24")),
            ],
            5,
        );
        assert_eq!(
            holders(&cache, "10.42.3.0/24"),
            [held_by("joining", "10.42.3.0/24")]
        );
        assert!(holders(&cache, "10.42.2.0/24").is_empty(), "n2 let it go");
        assert_eq!(
            holders(&cache, "10.42.4.0/24"),
            [held_by("n2", "10.42.4.0/24")]
        );

        let gone = change(Kind::Node, EventType::Deleted, node("n1", "10.42.1.0/24"));
        cache.apply(&[gone], 6);
        assert!(holders(&cache, "10.42.1.0/24").is_empty());
        assert_eq!(cache.pod_cidrs_held(), 2);

        // Rebuilt from redb or a snapshot: the index is the objects'.
        cache.reset(vec![(node("n9", "10.42.9.0/24"), 10)], 20);
        assert_eq!(
            holders(&cache, "10.42.9.0/24"),
            [held_by("n9", "10.42.9.0/24")]
        );
        assert!(holders(&cache, "10.42.3.0/24").is_empty());
        assert_eq!(cache.pod_cidrs_held(), 1);
    }

    #[test]
    fn pod_subnets_of_other_sizes_are_found_by_overlap() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(Kind::Node, EventType::Added, node("wide", "10.42.0.0/23")),
                change(Kind::Node, EventType::Added, node("n5", "10.42.5.128/25")),
                change(Kind::Node, EventType::Added, node("far", "10.43.0.0/24")),
            ],
            3,
        );
        // Around: the /23 that contains each of its /24s.
        assert_eq!(
            holders(&cache, "10.42.1.0/24"),
            [held_by("wide", "10.42.0.0/23")]
        );
        assert_eq!(
            holders(&cache, "10.42.0.0/24"),
            [held_by("wide", "10.42.0.0/23")]
        );
        // Inside: the /25 within a /24, and everything within a /16.
        assert_eq!(
            holders(&cache, "10.42.5.0/24"),
            [held_by("n5", "10.42.5.128/25")]
        );
        assert_eq!(
            holders(&cache, "10.42.0.0/16"),
            [
                held_by("n5", "10.42.5.128/25"),
                held_by("wide", "10.42.0.0/23"),
            ]
        );
        assert!(holders(&cache, "10.42.2.0/24").is_empty());
        assert!(holders(&cache, "10.42.5.0/25").is_empty());
    }

    #[test]
    fn a_pod_finds_the_services_that_select_it() {
        let selecting = |name: &str, ns: &str, selector: &[(&str, &str)]| {
            Arc::new(
                v1::Service {
                    metadata: Some(v1::ObjectMeta {
                        name: name.into(),
                        namespace: ns.into(),
                        ..Default::default()
                    }),
                    spec: Some(v1::ServiceSpec {
                        selector: selector
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
                .into_object(),
            )
        };
        // The same as this release stores it, a document.
        let selecting_document = |name: &str, ns: &str, selector: &[(&str, &str)]| {
            let meta = v1::ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            };
            let spec = services::ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            };
            Arc::new(services::object(meta, spec, None))
        };
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(
                    Kind::Service,
                    EventType::Added,
                    selecting("web", "a", &[("app", "web")]),
                ),
                change(
                    Kind::Service,
                    EventType::Added,
                    selecting_document("web-v2", "a", &[("app", "web"), ("v", "2")]),
                ),
                change(
                    Kind::Service,
                    EventType::Added,
                    selecting("other-ns", "b", &[("app", "web")]),
                ),
                change(
                    Kind::Service,
                    EventType::Added,
                    selecting("manual", "a", &[]),
                ),
            ],
            4,
        );
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            names(&cache.services_selecting("a", &labels(&[("app", "web")]))),
            ["web"]
        );
        assert_eq!(
            names(&cache.services_selecting("a", &labels(&[("app", "web"), ("v", "2")]))),
            ["web", "web-v2"]
        );
        assert!(cache
            .services_selecting("a", &labels(&[("app", "db")]))
            .is_empty());
        cache.apply(
            &[change(
                Kind::Service,
                EventType::Modified,
                selecting_document("web", "a", &[("app", "api")]),
            )],
            5,
        );
        assert!(cache
            .services_selecting("a", &labels(&[("app", "web")]))
            .is_empty());
        assert_eq!(
            names(&cache.services_selecting("a", &labels(&[("app", "api"), ("v", "2")]))),
            ["web"]
        );
        // Deleted, it selects nothing.
        cache.apply(
            &[change(
                Kind::Service,
                EventType::Deleted,
                selecting_document("web-v2", "a", &[("app", "web"), ("v", "2")]),
            )],
            6,
        );
        assert!(cache
            .services_selecting("a", &labels(&[("app", "web"), ("v", "2")]))
            .is_empty());
    }

    #[test]
    fn reset_replaces_everything() {
        let cache = ObjectCache::default();
        cache.apply(
            &[change(
                Kind::Pod,
                EventType::Added,
                pod("a", "old", "n1", &[], ""),
            )],
            1,
        );
        cache.reset(vec![(pod("a", "new", "n2", &[], ""), 10)], 9);
        assert!(cache.pods_on_node("n1").is_empty());
        assert_eq!(names(&cache.pods_on_node("n2")), ["new"]);
        assert_eq!(cache.revision(), 9);
        assert_eq!(
            cache.size(),
            CacheSize {
                objects: 1,
                encoded_bytes: 10
            }
        );
    }

    fn generic(kind: &str, ns: &str, name: &str, content: serde_json::Value) -> Arc<Object> {
        let mut object = v1::GenericObject {
            api_version: "v1".into(),
            kind: kind.into(),
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        if let serde_json::Value::Object(map) = content {
            skiff_objects::generic::set_content(&mut object, &map);
        }
        Arc::new(object.into_object())
    }

    /// A PersistentVolume of `class`, reserved or bound to the claim
    /// `ns/name` when one is given.
    fn volume(name: &str, class: &str, claim: Option<(&str, &str)>) -> Arc<Object> {
        let mut spec =
            serde_json::json!({"storageClassName": class, "capacity": {"storage": "1Gi"}});
        if let Some((ns, claim)) = claim {
            spec["claimRef"] = serde_json::json!({"namespace": ns, "name": claim, "uid": "u"});
        }
        generic(
            "PersistentVolume",
            "",
            name,
            serde_json::json!({"spec": spec}),
        )
    }

    /// A PersistentVolumeClaim of `class` (`None`: unset), bound to
    /// `volume` when it is not empty.
    fn claim(ns: &str, name: &str, class: Option<&str>, volume: &str) -> Arc<Object> {
        let mut spec = serde_json::json!({"volumeName": volume});
        if let Some(class) = class {
            spec["storageClassName"] = serde_json::json!(class);
        }
        generic(
            "PersistentVolumeClaim",
            ns,
            name,
            serde_json::json!({"spec": spec}),
        )
    }

    #[test]
    fn volumes_and_claims_are_found_by_binding_and_class() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(
                    Kind::PersistentVolume,
                    EventType::Added,
                    volume("pv-a", "fast", None),
                ),
                change(
                    Kind::PersistentVolume,
                    EventType::Added,
                    volume("pv-b", "fast", Some(("shop", "data"))),
                ),
                change(
                    Kind::PersistentVolume,
                    EventType::Added,
                    volume("pv-c", "", None),
                ),
                change(
                    Kind::PersistentVolumeClaim,
                    EventType::Added,
                    claim("shop", "data", Some("fast"), ""),
                ),
                change(
                    Kind::PersistentVolumeClaim,
                    EventType::Added,
                    claim("shop", "logs", None, ""),
                ),
                change(
                    Kind::PersistentVolumeClaim,
                    EventType::Added,
                    claim("shop", "done", Some("fast"), "pv-z"),
                ),
            ],
            6,
        );
        assert_eq!(cache.revision(), 6);
        assert_eq!(names(&cache.free_volumes("fast")), ["pv-a"]);
        assert_eq!(names(&cache.free_volumes("")), ["pv-c"]);
        assert!(cache.free_volumes("slow").is_empty());
        assert_eq!(names(&cache.volumes_for_claim("shop", "data")), ["pv-b"]);
        assert!(cache.volumes_for_claim("other", "data").is_empty());
        // A bound claim is in no unbound list; no class is the class "".
        assert_eq!(names(&cache.unbound_claims("fast")), ["data"]);
        assert_eq!(names(&cache.unbound_claims("")), ["logs"]);

        // pv-a is reserved for logs, pv-b moves to another claim, data
        // binds.
        cache.apply(
            &[
                change(
                    Kind::PersistentVolume,
                    EventType::Modified,
                    volume("pv-a", "fast", Some(("shop", "logs"))),
                ),
                change(
                    Kind::PersistentVolume,
                    EventType::Modified,
                    volume("pv-b", "fast", Some(("shop", "new"))),
                ),
                change(
                    Kind::PersistentVolumeClaim,
                    EventType::Modified,
                    claim("shop", "data", Some("fast"), "pv-b"),
                ),
            ],
            7,
        );
        assert!(cache.free_volumes("fast").is_empty());
        assert_eq!(names(&cache.volumes_for_claim("shop", "logs")), ["pv-a"]);
        assert!(cache.volumes_for_claim("shop", "data").is_empty());
        assert_eq!(names(&cache.volumes_for_claim("shop", "new")), ["pv-b"]);
        assert!(cache.unbound_claims("fast").is_empty());

        // Deleted: gone from every index.
        cache.apply(
            &[
                change(
                    Kind::PersistentVolume,
                    EventType::Deleted,
                    volume("pv-a", "fast", Some(("shop", "logs"))),
                ),
                change(
                    Kind::PersistentVolumeClaim,
                    EventType::Deleted,
                    claim("shop", "logs", None, ""),
                ),
            ],
            8,
        );
        assert!(cache.volumes_for_claim("shop", "logs").is_empty());
        assert!(cache.unbound_claims("").is_empty());
        assert_eq!(cache.revision(), 8);

        // Rebuilt from redb or a snapshot: the indexes are the objects'.
        cache.reset(
            vec![
                (volume("pv-s", "slow", None), 10),
                (claim("shop", "wait", Some("slow"), ""), 10),
            ],
            20,
        );
        assert_eq!(names(&cache.free_volumes("slow")), ["pv-s"]);
        assert!(cache.free_volumes("").is_empty());
        assert!(cache.volumes_for_claim("shop", "new").is_empty());
        assert_eq!(names(&cache.unbound_claims("slow")), ["wait"]);
        assert!(cache.unbound_claims("fast").is_empty());
        assert_eq!(cache.revision(), 20);
    }

    fn pod_with_claims(ns: &str, name: &str, claims: &[&str]) -> Arc<Object> {
        let volumes = claims
            .iter()
            .map(|claim| v1::Volume {
                name: format!("v-{claim}"),
                persistent_volume_claim: Some(Box::new(v1::PersistentVolumeClaimVolumeSource {
                    claim_name: (*claim).into(),
                    read_only: false,
                })),
                ..Default::default()
            })
            .collect();
        Arc::new(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: ns.into(),
                    ..Default::default()
                }),
                spec: Some(v1::PodSpec {
                    volumes,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    #[test]
    fn pods_are_found_by_the_claims_they_use() {
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_with_claims("a", "p1", &["data", "logs"]),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_with_claims("a", "p2", &["data"]),
                ),
                change(
                    Kind::Pod,
                    EventType::Added,
                    pod_with_claims("b", "p3", &["data"]),
                ),
                change(Kind::Pod, EventType::Added, pod("a", "plain", "", &[], "")),
            ],
            4,
        );
        assert_eq!(names(&cache.pods_using_claim("a", "data")), ["p1", "p2"]);
        assert_eq!(names(&cache.pods_using_claim("a", "logs")), ["p1"]);
        assert_eq!(names(&cache.pods_using_claim("b", "data")), ["p3"]);
        assert!(cache.pods_using_claim("a", "other").is_empty());

        // p1 stops using data (a pod's volumes do not change in Kubernetes,
        // but the index follows whatever is stored).
        cache.apply(
            &[change(
                Kind::Pod,
                EventType::Modified,
                pod_with_claims("a", "p1", &["logs"]),
            )],
            5,
        );
        assert_eq!(names(&cache.pods_using_claim("a", "data")), ["p2"]);
        cache.apply(
            &[change(
                Kind::Pod,
                EventType::Deleted,
                pod_with_claims("a", "p2", &["data"]),
            )],
            6,
        );
        assert!(cache.pods_using_claim("a", "data").is_empty());
        assert_eq!(cache.revision(), 6);

        cache.reset(vec![(pod_with_claims("a", "p9", &["data"]), 10)], 9);
        assert_eq!(names(&cache.pods_using_claim("a", "data")), ["p9"]);
        assert!(cache.pods_using_claim("a", "logs").is_empty());
        assert!(cache.pods_using_claim("b", "data").is_empty());
    }

    fn budget(ns: &str, name: &str, selector: Option<serde_json::Value>) -> Arc<Object> {
        let mut spec = serde_json::json!({"maxUnavailable": 1});
        if let Some(selector) = selector {
            spec["selector"] = selector;
        }
        generic(
            "PodDisruptionBudget",
            ns,
            name,
            serde_json::json!({"spec": spec}),
        )
    }

    #[test]
    fn budgets_are_found_by_the_pod_labels_they_select() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let web = serde_json::json!({"matchLabels": {"app": "web"}});
        let front = serde_json::json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front"]}
        ]});
        let cache = ObjectCache::default();
        cache.apply(
            &[
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Added,
                    budget("a", "web", Some(web.clone())),
                ),
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Added,
                    budget("a", "all", Some(serde_json::json!({}))),
                ),
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Added,
                    budget("a", "front", Some(front)),
                ),
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Added,
                    budget("a", "none", None),
                ),
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Added,
                    budget("b", "web", Some(web)),
                ),
            ],
            5,
        );
        let web_front = labels(&[("app", "web"), ("tier", "front")]);
        assert_eq!(
            names(&cache.budgets_selecting("a", &web_front)),
            ["all", "front", "web"]
        );
        assert_eq!(
            names(&cache.budgets_selecting("a", &labels(&[("app", "db")]))),
            ["all"]
        );
        assert_eq!(names(&cache.budgets_selecting("b", &web_front)), ["web"]);
        assert!(cache.budgets_selecting("c", &web_front).is_empty());

        // web now selects app=api; all is deleted.
        cache.apply(
            &[
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Modified,
                    budget(
                        "a",
                        "web",
                        Some(serde_json::json!({"matchLabels": {"app": "api"}})),
                    ),
                ),
                change(
                    Kind::PodDisruptionBudget,
                    EventType::Deleted,
                    budget("a", "all", Some(serde_json::json!({}))),
                ),
            ],
            6,
        );
        assert_eq!(names(&cache.budgets_selecting("a", &web_front)), ["front"]);
        assert_eq!(
            names(&cache.budgets_selecting("a", &labels(&[("app", "api")]))),
            ["web"]
        );
        assert_eq!(cache.revision(), 6);

        cache.reset(
            vec![(budget("a", "all", Some(serde_json::json!({}))), 10)],
            9,
        );
        assert_eq!(
            names(&cache.budgets_selecting("a", &labels(&[("app", "api")]))),
            ["all"]
        );
        assert_eq!(cache.revision(), 9);
    }

    #[test]
    fn rbac_bindings_are_found_by_subject_through_updates_deletes_and_resets() {
        use skiff_objects::rbac::user_keys;
        let binding = |subject: &str| {
            let content = serde_json::json!({
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": subject}],
            });
            Arc::new(
                v1::GenericObject {
                    api_version: "rbac.authorization.k8s.io/v1".into(),
                    kind: "RoleBinding".into(),
                    metadata: Some(v1::ObjectMeta {
                        name: "b".into(),
                        namespace: "team".into(),
                        ..Default::default()
                    }),
                    content: serde_json::to_vec(&content).unwrap(),
                }
                .into_object(),
            )
        };
        let found = |cache: &ObjectCache, user: &str| -> Vec<String> {
            let grants = cache.rbac_grants(&user_keys(user, &[]), "team");
            grants.into_iter().map(|g| g.binding_name).collect()
        };
        let cache = ObjectCache::default();
        let added = change(Kind::RoleBinding, EventType::Added, binding("jane"));
        cache.apply(&[added], 1);
        assert_eq!(found(&cache, "jane"), ["b"]);
        assert!(found(&cache, "john").is_empty());
        // Its subject changed: found by the new one only.
        let modified = change(Kind::RoleBinding, EventType::Modified, binding("john"));
        cache.apply(&[modified], 2);
        assert!(found(&cache, "jane").is_empty());
        assert_eq!(found(&cache, "john"), ["b"]);
        let deleted = change(Kind::RoleBinding, EventType::Deleted, binding("john"));
        cache.apply(&[deleted], 3);
        assert!(found(&cache, "john").is_empty());
        cache.reset(vec![(binding("jane"), 100)], 4);
        assert_eq!(found(&cache, "jane"), ["b"]);
    }

    #[test]
    fn aggregated_cluster_roles_and_their_rules_follow_role_updates() {
        use crate::store::rbac_index::tests::object;
        let role = |name: &str, labels: &[(&str, &str)], content: serde_json::Value| {
            let mut role = object("ClusterRole", "", name, content);
            role.meta_mut().unwrap().labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Arc::new(role)
        };
        let selecting = |(key, value): (&str, &str)| {
            let selector = serde_json::json!({"matchLabels": {key: value}});
            serde_json::json!({"aggregationRule": {"clusterRoleSelectors": [selector]}})
        };
        let rules = |verbs: &[&str]| {
            let rule =
                serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": verbs});
            serde_json::json!({"rules": [rule]})
        };
        let to_monitoring = ("aggregate-to-monitoring", "true");
        let cache = ObjectCache::default();
        let changes = [
            role("monitoring", &[], selecting(to_monitoring)),
            role("pods", &[to_monitoring], rules(&["get"])),
        ];
        let added = changes.map(|r| change(Kind::ClusterRole, EventType::Added, r));
        cache.apply(&added, 1);
        let labels_of = |name: &str| {
            let stored = cache.get(Kind::ClusterRole, "", name).unwrap();
            stored.meta().labels.clone()
        };
        assert_eq!(
            cache.aggregating_cluster_roles(&labels_of("pods")),
            ["monitoring"]
        );
        assert_eq!(cache.cluster_role_view("pods").unwrap().rules.len(), 1);
        // The selected role's labels and rules change: its new labels
        // select nothing, its new rules are what is read.
        let relabelled = role("pods", &[("team", "ops")], rules(&["get", "list"]));
        cache.apply(
            &[change(Kind::ClusterRole, EventType::Modified, relabelled)],
            2,
        );
        assert!(cache
            .aggregating_cluster_roles(&labels_of("pods"))
            .is_empty());
        let view = cache.cluster_role_view("pods").unwrap();
        assert_eq!(view.rules[0].verbs, ["get", "list"]);
        // The aggregator's selector follows the role: found again.
        let following = role("monitoring", &[], selecting(("team", "ops")));
        cache.apply(
            &[change(Kind::ClusterRole, EventType::Modified, following)],
            3,
        );
        assert_eq!(
            cache.aggregating_cluster_roles(&labels_of("pods")),
            ["monitoring"]
        );
    }
}
