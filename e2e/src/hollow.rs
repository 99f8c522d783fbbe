//! Hollow nodes: nodes with no containers that speak the agent protocol to
//! real masters through the agent's own client, `skiff_agent::master_link`:
//! each registers, streams heartbeats to the leader (following
//! `x-skiff-leader` when a follower refuses), watches the pods bound to it,
//! reports them Running and Ready, and confirms at once the deletion of
//! those being deleted (nothing runs to stop), so they go as they would
//! from a real node, with the agent's reconnects and backoffs. Only the
//! containers are missing. With [`HollowConfig::complete_after`], pods
//! that run to completion (restartPolicy Never or OnFailure: Jobs' pods)
//! are reported Succeeded, every container exited 0, that long after they
//! were reported Running; a finished pod is never reported Running again.
//! Killing one stops all of that at once, like pulling a Pi's plug.
//!
//! Used by the control-plane tests and by `skiff-bench`, where one process
//! runs thousands of them over a few shared connections, so the benchmarks
//! measure the real client. They speak with the admin credential of the
//! masters (admins may act for any node), so thousands of them need no
//! thousands of joins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_agent::master_link::{self, Desired, HeartbeatTap, Masters, StatusReport};
use skiff_proto::v1;
use skiff_security::ChannelCache;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Nodes sharing one connection (HTTP/2 servers limit concurrent streams).
const NODES_PER_CONNECTION: usize = 50;
/// How long a hollow node may take to register before `start` gives up.
const REGISTER_WITHIN: Duration = Duration::from_secs(30);

/// What a hollow node reports and how it behaves.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub heartbeat: Duration,
    /// Probability that a heartbeat is dropped instead of sent.
    pub heartbeat_loss: f64,
    /// How long pods that run to completion (restartPolicy Never or
    /// OnFailure) run: reported Succeeded (exit code 0) this long after
    /// they are reported Running. `None`: every pod runs for ever.
    pub complete_after: Option<Duration>,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            heartbeat: Duration::from_secs(1),
            heartbeat_loss: 0.0,
            complete_after: None,
        }
    }
}

/// Connections to the masters, shared by many hollow nodes.
#[derive(Clone)]
pub struct HollowFleet {
    masters: Arc<Vec<String>>,
    transport: skiff_security::ClientTransport,
    /// One set of connections (one per master) for each group of
    /// [`NODES_PER_CONNECTION`] nodes.
    connections: Arc<std::sync::Mutex<HashMap<usize, ChannelCache>>>,
    /// Heartbeats actually sent, across the fleet.
    pub heartbeats_sent: Arc<AtomicU64>,
    /// Pod status reports sent, across the fleet.
    pub pods_reported: Arc<AtomicU64>,
}

impl HollowFleet {
    pub fn new(masters: Vec<String>) -> HollowFleet {
        skiff_security::install_crypto_provider();
        let conf = crate::credentials::admin_conf(&masters[0]).expect("an admin.conf");
        let transport = skiff_security::Credentials::load(&conf)
            .and_then(|c| c.transport())
            .expect("admin credentials");
        HollowFleet {
            masters: Arc::new(masters),
            transport,
            connections: Default::default(),
            heartbeats_sent: Default::default(),
            pods_reported: Default::default(),
        }
    }

    /// The masters as node number `slot` sees them: starting at its own
    /// (so the fleet's pod watches spread over the masters), over the
    /// connections of its group.
    fn masters_for(&self, slot: usize) -> Masters {
        let group = slot / NODES_PER_CONNECTION;
        let channels = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group)
            .or_default()
            .clone();
        let count = self.masters.len();
        let addrs = (0..count)
            .map(|k| self.masters[(slot + k) % count].clone())
            .collect();
        Masters::sharing(addrs, self.transport.clone(), channels)
    }

    /// Starts hollow node `name` (number `slot` in the fleet).
    pub async fn start(
        &self,
        name: &str,
        slot: usize,
        config: HollowConfig,
    ) -> anyhow::Result<HollowNode> {
        let token = CancellationToken::new();
        let masters = self.masters_for(slot);
        let node = node_object(name, slot, &config);
        let registered = tokio::time::timeout(
            REGISTER_WITHIN,
            master_link::register(&masters, &node, &token),
        )
        .await;
        if registered.ok().flatten().is_none() {
            anyhow::bail!(
                "hollow node {name} could not register with {:?} within {REGISTER_WITHIN:?}",
                masters.known()
            );
        }
        let beats = LossyBeats {
            loss: config.heartbeat_loss,
            sent: self.heartbeats_sent.clone(),
        };
        let (desired_tx, desired_rx) = mpsc::channel(64);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let reported = self.pods_reported.clone();
        let tasks = vec![
            tokio::spawn(master_link::send_heartbeats(
                masters.clone(),
                node,
                config.heartbeat,
                beats,
                // Hollow nodes run nothing: no resource usage to report.
                None,
                token.clone(),
            )),
            tokio::spawn(master_link::watch_loop(
                masters.clone(),
                name.to_owned(),
                desired_tx,
                token.clone(),
            )),
            tokio::spawn(run_pods(
                name.to_owned(),
                slot,
                config.complete_after,
                desired_rx,
                reports_tx,
            )),
            tokio::spawn(master_link::report_statuses(
                masters,
                reports_rx,
                move |_: &StatusReport| {
                    reported.fetch_add(1, Ordering::Relaxed);
                },
                token.clone(),
            )),
        ];
        Ok(HollowNode {
            name: name.to_owned(),
            token,
            tasks,
        })
    }
}

/// One running hollow node.
pub struct HollowNode {
    pub name: String,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl HollowNode {
    /// Stops heartbeats and pod reports at once: the node is dead.
    pub fn kill(&mut self) {
        self.token.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for HollowNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Drops each heartbeat with probability `loss` (a flaky network, for the
/// failover benchmark) and counts those sent.
struct LossyBeats {
    loss: f64,
    sent: Arc<AtomicU64>,
}

impl HeartbeatTap for LossyBeats {
    fn admit(&mut self) -> bool {
        self.loss <= 0.0 || rand::random::<f64>() >= self.loss
    }

    fn sent(&mut self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

fn node_object(name: &str, slot: usize, config: &HollowConfig) -> v1::Node {
    let resources = [
        ("cpu".to_owned(), config.cpu.clone()),
        ("memory".to_owned(), config.memory.clone()),
        ("pods".to_owned(), config.max_pods.to_string()),
    ];
    v1::Node {
        metadata: Some(v1::ObjectMeta {
            name: name.to_owned(),
            labels: [
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
                ("skiff.dev/hollow".to_owned(), "true".to_owned()),
            ]
            .into(),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus {
            capacity: resources.clone().into(),
            allocatable: resources.into(),
            addresses: vec![v1::NodeAddress {
                r#type: "InternalIP".into(),
                // Documentation range: never contacted, only displayed.
                address: format!("198.18.{}.{}", slot / 250, slot % 250 + 1),
            }],
            node_info: Some(v1::NodeSystemInfo {
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                kubelet_version: "skiff-hollow".into(),
                container_runtime_version: "hollow://0".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running_status(pod: &v1::Pod, node: &str, pod_ip: String) -> v1::PodStatus {
    let now = skiff_values::now_rfc3339();
    let condition = |kind: &str| v1::PodCondition {
        r#type: kind.into(),
        status: "True".into(),
        last_transition_time: now.clone(),
        ..Default::default()
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    v1::PodStatus {
        phase: "Running".into(),
        conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .into_iter()
            .map(condition)
            .collect(),
        host_ip: format!("hollow:{node}"),
        // Never contacted: hollow pods exist only as API objects.
        pod_ip: pod_ip.clone(),
        pod_ips: vec![v1::PodIp { ip: pod_ip }],
        start_time: now.clone(),
        container_statuses: containers
            .iter()
            .map(|c| v1::ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                ready: true,
                started: Some(true),
                state: Some(v1::ContainerState {
                    running: Some(v1::ContainerStateRunning {
                        started_at: now.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A pod that ran to completion on a hollow node, started at `started`:
/// Succeeded, every container terminated with exit code 0 (`Completed`)
/// now, not Ready (`PodCompleted`), as the kubelet reports one.
fn succeeded_status(pod: &v1::Pod, node: &str, pod_ip: String, started: &str) -> v1::PodStatus {
    let mut status = running_status(pod, node, pod_ip);
    let now = skiff_values::now_rfc3339();
    status.phase = "Succeeded".into();
    status.start_time = started.to_owned();
    for condition in &mut status.conditions {
        if condition.r#type == "Ready" || condition.r#type == "ContainersReady" {
            condition.status = "False".into();
            condition.reason = "PodCompleted".into();
        }
    }
    for container in &mut status.container_statuses {
        container.ready = false;
        container.started = Some(false);
        container.state = Some(v1::ContainerState {
            terminated: Some(v1::ContainerStateTerminated {
                exit_code: Some(0),
                reason: "Completed".into(),
                started_at: started.to_owned(),
                finished_at: now.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    status
}

fn is_running_and_ready(pod: &v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Whether a pod has finished (Succeeded or Failed): a node never runs it
/// again.
fn is_finished(pod: &v1::Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// Whether a pod's containers stop for good once they exit 0
/// (restartPolicy Never or OnFailure: a Job's pods).
fn runs_to_completion(pod: &v1::Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| matches!(s.restart_policy.as_str(), "Never" | "OnFailure"))
}

/// The hollow pod manager: every pod the master wants here that is not yet
/// Running and Ready is reported so, at once; with `complete_after`, one
/// that runs to completion is reported Succeeded that long later (once:
/// its uid is remembered until the pod goes); a finished pod is left
/// alone; a pod being deleted is confirmed torn down at once, as nothing
/// runs to stop. Ends when the pod watch does; the completions still
/// waiting end with it.
async fn run_pods(
    node: String,
    slot: usize,
    complete_after: Option<Duration>,
    mut desired: mpsc::Receiver<Desired>,
    reports: mpsc::UnboundedSender<StatusReport>,
) {
    let mut next_ip = 0u32;
    // Each pod's Succeeded report, sent when its run ends.
    let mut finishing: JoinSet<StatusReport> = JoinSet::new();
    // The pods whose completion is due or reported, by uid: a pod's that is
    // deleted first is called off, so that it cannot take the place of the
    // confirmation of the deletion (only a pod's newest report is sent).
    let mut completing: HashMap<String, AbortHandle> = HashMap::new();
    loop {
        let change = tokio::select! {
            change = desired.recv() => match change {
                Some(change) => change,
                None => return,
            },
            Some(done) = finishing.join_next(), if !finishing.is_empty() => {
                if let Ok(report) = done {
                    if reports.send(report).is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let pod = match change {
            Desired::Upsert(pod) => pod,
            Desired::Delete(uid) => {
                if let Some(run) = completing.remove(&uid) {
                    run.abort();
                }
                continue;
            }
            Desired::Synced(uids) => {
                completing.retain(|uid, run| {
                    let wanted = uids.contains(uid);
                    if !wanted {
                        run.abort();
                    }
                    wanted
                });
                continue;
            }
        };
        let meta = pod.metadata.clone().unwrap_or_default();
        let being_deleted = !meta.deletion_timestamp.is_empty();
        if being_deleted {
            if let Some(run) = completing.remove(&meta.uid) {
                run.abort();
            }
            let report = StatusReport {
                uid: meta.uid,
                namespace: meta.namespace,
                name: meta.name,
                status: v1::PodStatus::default(),
                torn_down: true,
            };
            if reports.send(report).is_err() {
                return;
            }
            continue;
        }
        if is_finished(&pod) || completing.contains_key(&meta.uid) {
            continue;
        }
        let completes_after = complete_after.filter(|_| runs_to_completion(&pod));
        if is_running_and_ready(&pod) && completes_after.is_none() {
            continue;
        }
        let pod_ip = match pod.status.as_ref().map(|s| s.pod_ip.clone()) {
            Some(ip) if is_running_and_ready(&pod) && !ip.is_empty() => ip,
            _ => {
                next_ip += 1;
                format!("10.42.{}.{}", slot % 256, next_ip % 254 + 1)
            }
        };
        if !is_running_and_ready(&pod) {
            let report = StatusReport {
                uid: meta.uid.clone(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                status: running_status(&pod, &node, pod_ip.clone()),
                torn_down: false,
            };
            if reports.send(report).is_err() {
                return;
            }
        }
        if let Some(after) = completes_after {
            let uid = meta.uid.clone();
            let started = skiff_values::now_rfc3339();
            let node = node.clone();
            let run = finishing.spawn(async move {
                tokio::time::sleep(after).await;
                StatusReport {
                    uid: meta.uid,
                    namespace: meta.namespace,
                    name: meta.name,
                    status: succeeded_status(&pod, &node, pod_ip, &started),
                    torn_down: false,
                }
            });
            completing.insert(uid, run);
        }
    }
}
