//! The nodes' and pods' resource usage, as the agents measure it from
//! cgroups (what metrics-server scrapes from kubelets in k3s): kept in the
//! memory of the master that receives the readings, never written to Raft
//! or to disk, so that a reading every ten seconds per node costs no
//! flash. Agents put a reading on their heartbeat stream now and then,
//! and heartbeats go to the leader, so the leader's [`ResourceMetrics`]
//! is the one in use: the `metrics.k8s.io` API is served by the leader
//! (`api::resource_metrics`), and the leader's controllers read it through
//! `controllers::Context`.
//!
//! Each node's newest reading replaces its previous one whole (the node,
//! and every pod it reports). A reading is dated by this master's clock
//! (its age when the agent sent it is subtracted from the time it came),
//! so the nodes' clocks do not matter; one older than [`MAX_AGE`] is
//! never answered, and nodes that stop reporting are dropped.
//!
//! CPU arrives in nanocores (the agent's rate over its window) and is
//! answered in millicores rounded up, as `Quantity::MilliValue` rounds
//! what metrics-server serves: any use at all shows as at least `1m`.
//!
//! A reading also says how big the filesystem holding the node's
//! `local-path` volumes is and how much of it is free
//! ([`StorageUsage`]), when the agent could measure it: the provisioner
//! warns of a claim larger than that (`controllers::persistent_volumes`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use skiff_proto::node::NodeResourceUsage;

/// The oldest reading answered: twice and a half the agents' ten-second
/// sampling, so one lost reading leaves no gap (metrics-server keeps
/// points for about twice its resolution).
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// One container's usage over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    /// CPU, in thousandths of a CPU, averaged over the window.
    pub cpu_millis: u64,
    /// Memory working set (in use, less the inactive page cache), in bytes.
    pub memory_bytes: u64,
}

/// One pod's usage: each of its running containers'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    /// When the window ended, by this master's clock.
    pub timestamp: SystemTime,
    /// How long the window was.
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
}

/// The filesystem holding a node's `local-path` volumes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageUsage {
    pub capacity_bytes: u64,
    /// Free to unprivileged users (statvfs' `f_bavail`).
    pub available_bytes: u64,
}

/// One node's usage, the whole machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    pub timestamp: SystemTime,
    pub window: Duration,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Its storage filesystem, when the agent measured it.
    pub storage: Option<StorageUsage>,
}

/// A pod's usage with the pod it is of: what the metrics API joins with
/// the stored pod (same UID, bound to the node that reported it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReading {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The node that reported it.
    pub node: String,
    pub usage: PodUsage,
}

/// What a node reports: its own usage and its pods', over one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub window: Duration,
    /// How long before it came the window ended.
    pub age: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    pub pods: Vec<PodReport>,
    pub storage: Option<StorageUsage>,
}

/// One pod of a [`NodeReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<ContainerReport>,
}

/// One container of a [`PodReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerReport {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

impl From<&NodeResourceUsage> for NodeReport {
    fn from(usage: &NodeResourceUsage) -> NodeReport {
        NodeReport {
            window: Duration::from_millis(u64::from(usage.window_millis)),
            age: Duration::from_millis(u64::from(usage.age_millis)),
            cpu_nanocores: usage.cpu_nanocores,
            memory_bytes: usage.memory_working_set_bytes,
            pods: usage
                .pods
                .iter()
                .map(|p| PodReport {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                    containers: p
                        .containers
                        .iter()
                        .map(|c| ContainerReport {
                            name: c.name.clone(),
                            cpu_nanocores: c.cpu_nanocores,
                            memory_bytes: c.memory_working_set_bytes,
                        })
                        .collect(),
                })
                .collect(),
            storage: usage.storage.as_ref().map(|s| StorageUsage {
                capacity_bytes: s.capacity_bytes,
                available_bytes: s.available_bytes,
            }),
        }
    }
}

/// Nanocores as millicores, rounded up.
pub fn millicores(nanocores: u64) -> u64 {
    nanocores.div_ceil(1_000_000)
}

/// The newest readings of every node that reports, in memory. Cheap to
/// clone (one shared table).
#[derive(Clone)]
pub struct ResourceMetrics {
    table: Arc<Mutex<Table>>,
    max_age: Duration,
}

impl Default for ResourceMetrics {
    fn default() -> Self {
        ResourceMetrics::with_max_age(MAX_AGE)
    }
}

impl std::fmt::Debug for ResourceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.lock();
        f.debug_struct("ResourceMetrics")
            .field("nodes", &table.nodes.len())
            .field("pods", &table.pods.len())
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// When a reading's window ended, by both clocks.
#[derive(Debug, Clone, Copy)]
struct Taken {
    /// For its age.
    at: Instant,
    /// For what is answered.
    timestamp: SystemTime,
    window: Duration,
}

#[derive(Debug)]
struct NodeEntry {
    taken: Taken,
    cpu_millis: u64,
    memory_bytes: u64,
    storage: Option<StorageUsage>,
    /// The pods this reading reported, as keys of [`Table::pods`].
    pods: Vec<(String, String)>,
}

#[derive(Debug)]
struct PodEntry {
    node: String,
    uid: String,
    taken: Taken,
    containers: Vec<ContainerUsage>,
}

#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<String, NodeEntry>,
    /// By namespace and name; normally one entry, two while a pod of the
    /// name moves from one node to another.
    pods: HashMap<(String, String), Vec<PodEntry>>,
    /// When nodes that stopped reporting were last looked for.
    pruned: Option<Instant>,
}

impl Table {
    /// Forgets `node`'s reading and the pods it reported.
    fn remove_node(&mut self, node: &str) {
        let Some(entry) = self.nodes.remove(node) else {
            return;
        };
        for key in entry.pods {
            if let Some(entries) = self.pods.get_mut(&key) {
                entries.retain(|p| p.node != node);
                if entries.is_empty() {
                    self.pods.remove(&key);
                }
            }
        }
    }
}

impl ResourceMetrics {
    /// An empty table answering readings up to `max_age` old.
    pub fn with_max_age(max_age: Duration) -> ResourceMetrics {
        ResourceMetrics {
            table: Arc::new(Mutex::new(Table::default())),
            max_age,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node`'s newest reading, which replaces its previous one.
    pub fn record(&self, node: &str, report: NodeReport) {
        self.record_at(node, report, Instant::now(), SystemTime::now());
    }

    pub(crate) fn record_at(
        &self,
        node: &str,
        report: NodeReport,
        now: Instant,
        wall_now: SystemTime,
    ) {
        let taken = Taken {
            at: now.checked_sub(report.age).unwrap_or(now),
            timestamp: wall_now.checked_sub(report.age).unwrap_or(wall_now),
            window: report.window,
        };
        let mut table = self.lock();
        table.remove_node(node);
        let mut keys = Vec::with_capacity(report.pods.len());
        for pod in report.pods {
            if pod.containers.is_empty() {
                continue;
            }
            let key = (pod.namespace, pod.name);
            let containers = pod
                .containers
                .into_iter()
                .map(|c| ContainerUsage {
                    name: c.name,
                    cpu_millis: millicores(c.cpu_nanocores),
                    memory_bytes: c.memory_bytes,
                })
                .collect();
            table.pods.entry(key.clone()).or_default().push(PodEntry {
                node: node.to_owned(),
                uid: pod.uid,
                taken,
                containers,
            });
            keys.push(key);
        }
        table.nodes.insert(
            node.to_owned(),
            NodeEntry {
                taken,
                cpu_millis: millicores(report.cpu_nanocores),
                memory_bytes: report.memory_bytes,
                storage: report.storage,
                pods: keys,
            },
        );
        // Nodes that stopped reporting (deleted, or reporting to another
        // leader) are dropped, looked for once per `max_age`.
        if table
            .pruned
            .is_none_or(|p| now.saturating_duration_since(p) >= self.max_age)
        {
            table.pruned = Some(now);
            let stale: Vec<String> = table
                .nodes
                .iter()
                .filter(|(_, e)| !self.fresh(&e.taken, now))
                .map(|(n, _)| n.clone())
                .collect();
            for node in stale {
                table.remove_node(&node);
            }
        }
    }

    fn fresh(&self, taken: &Taken, now: Instant) -> bool {
        now.saturating_duration_since(taken.at) <= self.max_age
    }

    /// The pod's newest reading, if one is fresh (of whichever pod of the
    /// name a node reported last, when two did).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodUsage> {
        self.pod_at(namespace, name, Instant::now())
    }

    pub(crate) fn pod_at(&self, namespace: &str, name: &str, now: Instant) -> Option<PodUsage> {
        let table = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        table
            .pods
            .get(&key)?
            .iter()
            .filter(|p| self.fresh(&p.taken, now))
            .max_by_key(|p| p.taken.at)
            .map(pod_usage)
    }

    /// Every fresh pod reading, of one namespace or of all.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<PodReading> {
        self.pods_at(namespace, Instant::now())
    }

    pub(crate) fn pods_at(&self, namespace: Option<&str>, now: Instant) -> Vec<PodReading> {
        let table = self.lock();
        let mut readings: Vec<PodReading> = table
            .pods
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .flat_map(|((ns, name), entries)| {
                entries
                    .iter()
                    .filter(move |p| self.fresh(&p.taken, now))
                    .map(move |p| PodReading {
                        namespace: ns.clone(),
                        name: name.clone(),
                        uid: p.uid.clone(),
                        node: p.node.clone(),
                        usage: pod_usage(p),
                    })
            })
            .collect();
        readings.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        readings
    }

    /// The fresh readings of the pod of this name, one per node that
    /// reported one (normally one).
    pub fn pod_readings(&self, namespace: &str, name: &str) -> Vec<PodReading> {
        self.pod_readings_at(namespace, name, Instant::now())
    }

    pub(crate) fn pod_readings_at(
        &self,
        namespace: &str,
        name: &str,
        now: Instant,
    ) -> Vec<PodReading> {
        let table = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(entries) = table.pods.get(&key) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|p| self.fresh(&p.taken, now))
            .map(|p| PodReading {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: p.uid.clone(),
                node: p.node.clone(),
                usage: pod_usage(p),
            })
            .collect()
    }

    /// The node's reading, if fresh.
    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        self.node_at(name, Instant::now())
    }

    pub(crate) fn node_at(&self, name: &str, now: Instant) -> Option<NodeUsage> {
        let table = self.lock();
        table
            .nodes
            .get(name)
            .filter(|e| self.fresh(&e.taken, now))
            .map(node_usage)
    }

    /// Every fresh node reading, by node name.
    pub fn nodes(&self) -> Vec<(String, NodeUsage)> {
        self.nodes_at(Instant::now())
    }

    pub(crate) fn nodes_at(&self, now: Instant) -> Vec<(String, NodeUsage)> {
        let table = self.lock();
        let mut nodes: Vec<(String, NodeUsage)> = table
            .nodes
            .iter()
            .filter(|(_, e)| self.fresh(&e.taken, now))
            .map(|(n, e)| (n.clone(), node_usage(e)))
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }
}

fn pod_usage(entry: &PodEntry) -> PodUsage {
    PodUsage {
        timestamp: entry.taken.timestamp,
        window: entry.taken.window,
        containers: entry.containers.clone(),
    }
}

fn node_usage(entry: &NodeEntry) -> NodeUsage {
    NodeUsage {
        timestamp: entry.taken.timestamp,
        window: entry.taken.window,
        cpu_millis: entry.cpu_millis,
        memory_bytes: entry.memory_bytes,
        storage: entry.storage,
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use skiff_proto::node::{ContainerResourceUsage, FilesystemUsage, PodResourceUsage};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn container(name: &str, cpu_nanocores: u64, memory_bytes: u64) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            cpu_nanocores,
            memory_bytes,
        }
    }

    fn pod(namespace: &str, name: &str, uid: &str, containers: Vec<ContainerReport>) -> PodReport {
        PodReport {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            containers,
        }
    }

    fn report(pods: Vec<PodReport>) -> NodeReport {
        NodeReport {
            window: 10 * SECOND,
            age: 2 * SECOND,
            cpu_nanocores: 1_500_000_001,
            memory_bytes: 512 << 20,
            pods,
            storage: None,
        }
    }

    fn wall(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn cpu_is_answered_in_millicores_rounded_up() {
        assert_eq!(millicores(0), 0);
        assert_eq!(millicores(1), 1);
        assert_eq!(millicores(999_999), 1);
        assert_eq!(millicores(1_000_000), 1);
        assert_eq!(millicores(1_000_001), 2);
        assert_eq!(millicores(987_654_321), 988);
    }

    #[test]
    fn a_reading_is_dated_by_the_masters_clock_less_its_age() {
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        let web = pod(
            "shop",
            "web",
            "u1",
            vec![container("app", 250_000_000, 4096)],
        );
        metrics.record_at("n1", report(vec![web]), now, wall(100));
        let usage = metrics.pod_at("shop", "web", now).unwrap();
        assert_eq!(usage.timestamp, wall(98), "two seconds old when it came");
        assert_eq!(usage.window, 10 * SECOND);
        assert_eq!(
            usage.containers,
            [ContainerUsage {
                name: "app".into(),
                cpu_millis: 250,
                memory_bytes: 4096
            }]
        );
        let node = metrics.node_at("n1", now).unwrap();
        assert_eq!((node.cpu_millis, node.memory_bytes), (1501, 512 << 20));
        assert_eq!(node.timestamp, wall(98));
        assert_eq!(metrics.pod_at("shop", "db", now), None);
        assert_eq!(metrics.pod_at("other", "web", now), None);
    }

    #[test]
    fn readings_older_than_the_limit_are_not_answered() {
        let metrics = ResourceMetrics::with_max_age(30 * SECOND);
        let now = Instant::now();
        let web = pod("shop", "web", "u1", vec![container("app", 1, 1)]);
        metrics.record_at("n1", report(vec![web]), now, wall(0));
        // Two seconds old on arrival: fresh for 28 seconds more.
        let later = now + 28 * SECOND;
        assert!(metrics.pod_at("shop", "web", later).is_some());
        assert!(metrics.node_at("n1", later).is_some());
        assert_eq!(metrics.pods_at(None, later).len(), 1);
        assert_eq!(metrics.nodes_at(later).len(), 1);
        let stale = now + 28 * SECOND + Duration::from_millis(1);
        assert_eq!(metrics.pod_at("shop", "web", stale), None);
        assert_eq!(metrics.node_at("n1", stale), None);
        assert!(metrics.pods_at(None, stale).is_empty());
        assert!(metrics.nodes_at(stale).is_empty());
        assert!(metrics.pod_readings_at("shop", "web", stale).is_empty());
    }

    #[test]
    fn a_reading_arriving_already_too_old_is_never_answered() {
        let metrics = ResourceMetrics::with_max_age(30 * SECOND);
        let now = Instant::now();
        let old = NodeReport {
            age: 31 * SECOND,
            ..report(vec![pod("shop", "web", "u1", vec![container("app", 1, 1)])])
        };
        metrics.record_at("n1", old, now, wall(0));
        assert_eq!(metrics.pod_at("shop", "web", now), None);
        assert_eq!(metrics.node_at("n1", now), None);
    }

    #[test]
    fn a_nodes_new_reading_replaces_its_pods_whole() {
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        let first = vec![
            pod("shop", "web", "u1", vec![container("app", 1, 1)]),
            pod("shop", "db", "u2", vec![container("db", 1, 1)]),
        ];
        metrics.record_at("n1", report(first), now, wall(0));
        let second = vec![pod(
            "shop",
            "web",
            "u1",
            vec![container("app", 7_000_000, 2)],
        )];
        metrics.record_at("n1", report(second), now + SECOND, wall(1));
        let later = now + SECOND;
        assert_eq!(
            metrics.pod_at("shop", "db", later),
            None,
            "gone from the node"
        );
        let web = metrics.pod_at("shop", "web", later).unwrap();
        assert_eq!(web.containers[0].cpu_millis, 7);
        let all = metrics.pods_at(None, later);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!((all[0].uid.as_str(), all[0].node.as_str()), ("u1", "n1"));
    }

    #[test]
    fn pods_without_containers_are_left_out() {
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        let empty = pod("shop", "web", "u1", Vec::new());
        metrics.record_at("n1", report(vec![empty]), now, wall(0));
        assert_eq!(metrics.pod_at("shop", "web", now), None);
        assert!(metrics.pods_at(None, now).is_empty());
    }

    #[test]
    fn a_pod_moving_between_nodes_answers_the_newest_and_lists_both_until_one_goes() {
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        let old = pod("shop", "web-0", "old", vec![container("app", 1_000_000, 1)]);
        metrics.record_at("n1", report(vec![old]), now, wall(0));
        let new = pod("shop", "web-0", "new", vec![container("app", 9_000_000, 1)]);
        metrics.record_at("n2", report(vec![new]), now + SECOND, wall(1));
        let later = now + SECOND;
        let newest = metrics.pod_at("shop", "web-0", later).unwrap();
        assert_eq!(newest.containers[0].cpu_millis, 9);
        let both = metrics.pod_readings_at("shop", "web-0", later);
        let mut uids: Vec<&str> = both.iter().map(|r| r.uid.as_str()).collect();
        uids.sort();
        assert_eq!(uids, ["new", "old"]);
        // n1 reports again without it.
        metrics.record_at("n1", report(Vec::new()), later, wall(1));
        let left = metrics.pod_readings_at("shop", "web-0", later);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].uid.as_str(), left[0].node.as_str()), ("new", "n2"));
    }

    #[test]
    fn lists_are_by_namespace_and_in_order() {
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        let pods = vec![
            pod("shop", "web", "u1", vec![container("app", 1, 1)]),
            pod("kube-system", "dns", "u2", vec![container("dns", 1, 1)]),
            pod("shop", "api", "u3", vec![container("api", 1, 1)]),
        ];
        metrics.record_at("n1", report(pods), now, wall(0));
        metrics.record_at("n0", report(Vec::new()), now, wall(0));
        let names = |readings: Vec<PodReading>| -> Vec<String> {
            readings
                .into_iter()
                .map(|r| format!("{}/{}", r.namespace, r.name))
                .collect()
        };
        assert_eq!(
            names(metrics.pods_at(Some("shop"), now)),
            ["shop/api", "shop/web"]
        );
        assert_eq!(
            names(metrics.pods_at(None, now)),
            ["kube-system/dns", "shop/api", "shop/web"]
        );
        let nodes: Vec<String> = metrics.nodes_at(now).into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, ["n0", "n1"]);
    }

    #[test]
    fn nodes_that_stop_reporting_are_dropped() {
        let metrics = ResourceMetrics::with_max_age(30 * SECOND);
        let now = Instant::now();
        let gone = pod("shop", "web", "u1", vec![container("app", 1, 1)]);
        metrics.record_at("gone", report(vec![gone]), now, wall(0));
        let much_later = now + 60 * SECOND;
        metrics.record_at("alive", report(Vec::new()), much_later, wall(60));
        let table = metrics.lock();
        assert!(!table.nodes.contains_key("gone"));
        assert!(table.nodes.contains_key("alive"));
        assert!(table.pods.is_empty(), "the silent node's pods went with it");
    }

    #[test]
    fn a_wire_reading_becomes_a_report() {
        let wire = NodeResourceUsage {
            window_millis: 10_250,
            age_millis: 1_500,
            cpu_nanocores: 42,
            memory_working_set_bytes: 7,
            pods: vec![PodResourceUsage {
                namespace: "shop".into(),
                name: "web".into(),
                uid: "u1".into(),
                containers: vec![ContainerResourceUsage {
                    name: "app".into(),
                    cpu_nanocores: 3,
                    memory_working_set_bytes: 4,
                }],
            }],
            storage: Some(FilesystemUsage {
                capacity_bytes: 64 << 30,
                available_bytes: 5 << 30,
            }),
        };
        let report = NodeReport::from(&wire);
        assert_eq!(report.window, Duration::from_millis(10_250));
        assert_eq!(report.age, Duration::from_millis(1_500));
        assert_eq!((report.cpu_nanocores, report.memory_bytes), (42, 7));
        assert_eq!(
            report.pods,
            [pod("shop", "web", "u1", vec![container("app", 3, 4)])]
        );
        let storage = StorageUsage {
            capacity_bytes: 64 << 30,
            available_bytes: 5 << 30,
        };
        assert_eq!(report.storage, Some(storage));
        // What the node answers with.
        let metrics = ResourceMetrics::default();
        let now = Instant::now();
        metrics.record_at("n1", report, now, wall(0));
        assert_eq!(metrics.node_at("n1", now).unwrap().storage, Some(storage));
        let without = NodeReport::from(&NodeResourceUsage::default());
        assert_eq!(without.storage, None, "not measured: nothing to say");
    }
}
