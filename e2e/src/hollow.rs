//! Hollow nodes: nodes with no containers that speak the real agent
//! protocol to real masters. Each registers, streams heartbeats to the
//! leader (following `x-skiff-leader` when a follower refuses), watches the
//! pods bound to it and reports them Running and Ready. Killing one stops
//! all of that at once, like pulling a Pi's plug.
//!
//! Used by the control-plane tests and by `skiff-bench`, where one process
//! runs thousands of them over a few shared connections. They speak with
//! the admin credential of the masters (admins may act for any node), so
//! thousands of them need no thousands of joins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::EventType;
use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::{Heartbeat, RegisterRequest, UpdatePodStatusRequest, WatchPodsRequest};
use skiff_proto::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Nodes sharing one connection (HTTP/2 servers limit concurrent streams).
const NODES_PER_CONNECTION: usize = 50;

/// What a hollow node reports and how it behaves.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub heartbeat: Duration,
    /// Probability that a heartbeat is dropped instead of sent.
    pub heartbeat_loss: f64,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            heartbeat: Duration::from_secs(1),
            heartbeat_loss: 0.0,
        }
    }
}

/// Connections to the masters, shared by many hollow nodes.
#[derive(Clone)]
pub struct HollowFleet {
    masters: Arc<Vec<String>>,
    transport: skiff_security::ClientTransport,
    channels: Arc<std::sync::Mutex<Vec<(String, usize, Channel)>>>,
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
            channels: Default::default(),
            heartbeats_sent: Default::default(),
            pods_reported: Default::default(),
        }
    }

    /// A connection to `addr` for node number `slot`.
    fn channel(&self, addr: &str, slot: usize) -> Channel {
        let group = slot / NODES_PER_CONNECTION;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, c)) = channels.iter().find(|(a, g, _)| a == addr && *g == group) {
            return c.clone();
        }
        let endpoint = self
            .transport
            .endpoint(addr)
            .expect("valid master address")
            .connect_timeout(Duration::from_secs(2));
        let channel = self.transport.channel_on(endpoint);
        channels.push((addr.to_owned(), group, channel.clone()));
        channel
    }

    fn master(&self, i: usize) -> String {
        self.masters[i % self.masters.len()].clone()
    }

    /// Starts hollow node `name` (number `slot` in the fleet).
    pub async fn start(
        &self,
        name: &str,
        slot: usize,
        config: HollowConfig,
    ) -> anyhow::Result<HollowNode> {
        let token = CancellationToken::new();
        register(self, name, slot, &config).await?;
        let tasks = vec![
            tokio::spawn(heartbeat_loop(
                self.clone(),
                name.to_owned(),
                slot,
                config.clone(),
                token.clone(),
            )),
            tokio::spawn(pod_loop(self.clone(), name.to_owned(), slot, token.clone())),
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

async fn register(
    fleet: &HollowFleet,
    name: &str,
    slot: usize,
    config: &HollowConfig,
) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..50 {
        let mut client = NodesClient::new(fleet.channel(&fleet.master(slot + attempt), slot));
        match client
            .register(RegisterRequest {
                node: Some(node_object(name, slot, config)),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("hollow node {name} could not register: {last:?}")
}

async fn heartbeat_loop(
    fleet: HollowFleet,
    name: String,
    slot: usize,
    config: HollowConfig,
    token: CancellationToken,
) {
    let mut target = fleet.master(slot);
    let mut attempt = slot;
    let mut tick = tokio::time::interval(config.heartbeat);
    loop {
        let (tx, rx) = mpsc::channel(4);
        let mut client = NodesClient::new(fleet.channel(&target, slot));
        let call = client.heartbeats(ReceiverStream::new(rx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                ended = &mut call => {
                    if let Err(status) = ended {
                        match status.metadata().get(skiff_proto::LEADER_METADATA).and_then(|v| v.to_str().ok()) {
                            Some(leader) => target = leader.to_owned(),
                            None => {
                                attempt += 1;
                                target = fleet.master(attempt);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                _ = tick.tick() => {
                    if rand::random::<f64>() < config.heartbeat_loss {
                        continue;
                    }
                    if tx.send(Heartbeat { node_name: name.clone() }).await.is_err() {
                        break;
                    }
                    fleet.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn running_status(pod: &v1::Pod, node: &str, pod_ip: String) -> v1::PodStatus {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
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

fn is_running_and_ready(pod: &v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

async fn pod_loop(fleet: HollowFleet, name: String, slot: usize, token: CancellationToken) {
    let mut attempt = slot;
    let mut next_ip = 0u32;
    loop {
        let mut client = NodesClient::new(fleet.channel(&fleet.master(attempt), slot));
        let stream = tokio::select! {
            _ = token.cancelled() => return,
            s = client.watch_pods(WatchPodsRequest { node_name: name.clone() }) => s,
        };
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::select! {
                    _ = token.cancelled() => return,
                    n = stream.message() => n,
                };
                let Ok(Some(event)) = next else { break };
                if event.r#type == EventType::Deleted as i32 {
                    continue;
                }
                let Some(skiff_proto::api::object::Kind::Pod(pod)) =
                    event.object.and_then(|o| o.kind)
                else {
                    continue;
                };
                if is_running_and_ready(&pod) {
                    continue;
                }
                let meta = pod.metadata.clone().unwrap_or_default();
                let request = UpdatePodStatusRequest {
                    uid: meta.uid.clone(),
                    namespace: meta.namespace,
                    name: meta.name,
                    status: Some(running_status(&pod, &name, {
                        next_ip += 1;
                        format!("10.42.{}.{}", slot % 256, next_ip % 254 + 1)
                    })),
                };
                tokio::spawn(report_status(
                    client.clone(),
                    request,
                    fleet.pods_reported.clone(),
                    token.clone(),
                ));
            }
        }
        attempt += 1;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Reports a pod's status as the agent does: a report that fails for want
/// of a leader (the master relaying it lost its leader, an election is on)
/// is sent again with backoff until it is taken or refused for good (the
/// pod is gone or not this node's). Nothing else would resend it: the
/// watch carrying the pod may well stay up through a leader's death.
async fn report_status(
    mut reporter: NodesClient<Channel>,
    request: UpdatePodStatusRequest,
    reported: Arc<AtomicU64>,
    token: CancellationToken,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        match reporter.update_pod_status(request.clone()).await {
            Ok(_) => {
                reported.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unknown
                        | tonic::Code::Aborted
                ) => {}
            Err(_) => return,
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
