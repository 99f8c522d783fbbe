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
//! With [`HollowConfig::usage`], a hollow node also reports resource usage
//! as the agent does: every [`SAMPLE_EVERY`] (the agent's sampling) a
//! `NodeResourceUsage` of the pods it runs (each reported Running and not
//! yet gone, with each of its containers) is published on the heartbeats'
//! [`UsageFeed`], and `master_link::send_heartbeats` carries it to the
//! leader as it carries the agent's. The figures are made up (there are no
//! cgroups to read): the message, its size and its cadence are the agent's.
//! The [`UsageSwitch`] turns the readings on and off while the nodes run
//! (off, the heartbeats go without, as before a first reading).
//!
//! With [`HollowConfig::follow_cluster`], each node also asks the masters
//! what an agent's followers of whole kinds ask (`master_link`'s
//! `follow_kinds`: Nodes for the overlay; Services and Endpoints for the
//! Service rules and cluster DNS): a serializable List of each kind, then
//! a Watch of each from the listed revision, listed again from the next
//! master when a watch fails or ends. Each event is received (its object
//! left encoded: an agent decodes on its own CPU, while a benchmark's
//! thousands of hollow nodes would decode on the master's cores and fall
//! behind it) and its revision noted in the fleet's [`Followed`], so a
//! benchmark can tell when every node has seen a change; the agent's copy
//! of the objects is not kept, so the benchmark's process stays small
//! while the masters serve every node's watches as they would serve real
//! agents'.
//!
//! Used by the control-plane tests and by `skiff-bench`, where one process
//! runs thousands of them over a few shared connections, so the benchmarks
//! measure the real client. They speak with the admin credential of the
//! masters (admins may act for any node), so thousands of them need no
//! thousands of joins.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_agent::master_link::{
    self, Desired, HeartbeatTap, Masters, StatusReport, UsageFeed, UsageReading,
};
use skiff_agent::resource_usage::SAMPLE_EVERY;
use skiff_proto::api::{ListRequest, WatchRequest};
use skiff_proto::node::{
    ContainerResourceUsage, FilesystemUsage, NodeResourceUsage, PodResourceUsage,
};
use skiff_proto::v1;
use skiff_security::ChannelCache;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_stream::{StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;

/// Nodes sharing one connection (HTTP/2 servers limit concurrent streams:
/// hyper's to 200): each holds two long-lived streams (heartbeats, its
/// pods' watch) and a report now and then.
const NODES_PER_CONNECTION: usize = 50;
/// The same for nodes that also follow the cluster (three watches more).
const FOLLOWING_NODES_PER_CONNECTION: usize = 25;
/// How long a hollow node may take to register before `start` gives up.
const REGISTER_WITHIN: Duration = Duration::from_secs(30);
/// The kinds an agent follows whole, each group over watches of its own
/// (`skiff_agent`'s overlay loop, and its Service loop).
const FOLLOWED_GROUPS: [&[FollowedKind]; 2] = [
    &[FollowedKind::Node],
    &[FollowedKind::Service, FollowedKind::Endpoints],
];
/// How long a follower waits before listing again after a failed list or
/// watch.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);

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
    /// Resource usage readings of the pods each node runs, every
    /// `SAMPLE_EVERY` on its heartbeats, while the switch is on. `None`:
    /// heartbeats carry no readings.
    pub usage: Option<UsageSwitch>,
    /// Follow Nodes, Services and Endpoints as an agent does (see the
    /// module's doc), noting what arrives in [`HollowFleet::followed`].
    pub follow_cluster: bool,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            heartbeat: skiff_agent::DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_loss: 0.0,
            complete_after: None,
            usage: None,
            follow_cluster: false,
        }
    }
}

/// A kind every agent follows whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowedKind {
    Node = 0,
    Service = 1,
    Endpoints = 2,
}

impl FollowedKind {
    fn name(self) -> &'static str {
        match self {
            FollowedKind::Node => "Node",
            FollowedKind::Service => "Service",
            FollowedKind::Endpoints => "Endpoints",
        }
    }
}

/// Arrivals a following node remembers of each kind.
const ARRIVALS_KEPT: usize = 16;

/// What a following node has received of each [`FollowedKind`] (by its
/// number): the store revisions of its latest lists and watch events, and
/// when each arrived.
#[derive(Default)]
struct Received {
    arrivals: [Mutex<std::collections::VecDeque<(u64, Instant)>>; 3],
}

impl Received {
    fn arrivals(
        &self,
        kind: usize,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Instant)>> {
        self.arrivals[kind]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, kind: usize, revision: u64) {
        let mut arrivals = self.arrivals(kind);
        if arrivals.len() == ARRIVALS_KEPT {
            arrivals.pop_front();
        }
        arrivals.push_back((revision, Instant::now()));
    }

    /// The newest revision of `kind` this node has received (0: none).
    fn revision(&self, kind: usize) -> u64 {
        self.arrivals(kind)
            .iter()
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0)
    }

    /// When this node first had `revision` of `kind` or later, as far as
    /// it remembers (the oldest arrival it keeps, if all are later).
    fn reached(&self, kind: usize, revision: u64) -> Option<Instant> {
        self.arrivals(kind)
            .iter()
            .find(|(r, _)| *r >= revision)
            .map(|(_, at)| *at)
    }
}

/// What the fleet's following nodes have received (nodes that stopped
/// are left out).
#[derive(Clone, Default)]
pub struct Followed {
    nodes: Arc<Mutex<Vec<std::sync::Weak<Received>>>>,
    /// Lists the followers asked for, across the fleet.
    pub lists: Arc<AtomicU64>,
    /// Watch events they received, across the fleet.
    pub events: Arc<AtomicU64>,
}

impl Followed {
    fn add_node(&self) -> Arc<Received> {
        let received = Arc::new(Received::default());
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|n| n.strong_count() > 0);
        nodes.push(Arc::downgrade(&received));
        received
    }

    fn running(&self) -> Vec<Arc<Received>> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// The revision of `kind` that every running following node has
    /// received; `None` when none follows.
    pub fn everywhere(&self, kind: FollowedKind) -> Option<u64> {
        self.running()
            .iter()
            .map(|r| r.revision(kind as usize))
            .min()
    }

    /// When the last of the running following nodes received `revision`
    /// of `kind` (or a later one); `None` while one has not, or when none
    /// follows.
    pub fn everywhere_at(&self, kind: FollowedKind, revision: u64) -> Option<Instant> {
        let running = self.running();
        let mut last: Option<Instant> = None;
        for node in &running {
            let at = node.reached(kind as usize, revision)?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last
    }
}

/// Whether the hollow nodes started with it publish resource usage
/// readings; shared, flipped while they run. Starts off.
#[derive(Debug, Clone, Default)]
pub struct UsageSwitch(Arc<AtomicBool>);

impl UsageSwitch {
    pub fn turn_on(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn turn_off(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connections to the masters, shared by many hollow nodes.
#[derive(Clone)]
pub struct HollowFleet {
    masters: Arc<Vec<String>>,
    transport: skiff_security::ClientTransport,
    /// One set of connections (one per master) for each group of
    /// [`NODES_PER_CONNECTION`] nodes (by group size and number).
    connections: Arc<std::sync::Mutex<HashMap<(usize, usize), ChannelCache>>>,
    /// Heartbeats actually sent, across the fleet.
    pub heartbeats_sent: Arc<AtomicU64>,
    /// Pod status reports sent, across the fleet.
    pub pods_reported: Arc<AtomicU64>,
    /// Resource usage readings published for the heartbeats to carry,
    /// across the fleet.
    pub readings_published: Arc<AtomicU64>,
    /// What the nodes that follow the cluster have received.
    pub followed: Followed,
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
            readings_published: Default::default(),
            followed: Followed::default(),
        }
    }

    /// The masters as node number `slot` sees them: starting at its own
    /// (so the fleet's pod watches spread over the masters), over the
    /// connections of its group (of `per_connection` nodes).
    fn masters_for(&self, slot: usize, per_connection: usize) -> Masters {
        let group = (per_connection, slot / per_connection);
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
        let per_connection = if config.follow_cluster {
            FOLLOWING_NODES_PER_CONNECTION
        } else {
            NODES_PER_CONNECTION
        };
        let masters = self.masters_for(slot, per_connection);
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
        let running = RunningPods::default();
        let mut tasks = Vec::new();
        let usage_feed: Option<UsageFeed> = match &config.usage {
            Some(switch) => {
                let (readings_tx, readings_rx) = watch::channel(None);
                tasks.push(tokio::spawn(sample_usage(
                    running.clone(),
                    switch.clone(),
                    readings_tx,
                    self.readings_published.clone(),
                    token.clone(),
                )));
                Some(readings_rx)
            }
            None => None,
        };
        if config.follow_cluster {
            let received = self.followed.add_node();
            for kinds in FOLLOWED_GROUPS {
                tasks.push(tokio::spawn(follow_cluster(
                    masters.clone(),
                    kinds,
                    received.clone(),
                    self.followed.clone(),
                    token.clone(),
                )));
            }
        }
        tasks.extend([
            tokio::spawn(master_link::send_heartbeats(
                masters.clone(),
                node,
                config.heartbeat,
                beats,
                usage_feed,
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
                running,
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
        ]);
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

/// Follows `kinds` as an agent's follower does (see the module's doc)
/// until `shutdown`, starting with the first master and going on to the
/// next whenever a list or watch fails or a watch ends.
async fn follow_cluster(
    masters: Masters,
    kinds: &'static [FollowedKind],
    received: Arc<Received>,
    followed: Followed,
    shutdown: CancellationToken,
) {
    for i in 0.. {
        // One connection for the lists and the watches: one master.
        let Some(channel) = masters.api_channel(i) else {
            return;
        };
        let api = skiff_proto::api::api_client::ApiClient::new(channel.clone());
        // Why it ended shows in the fleet's count of lists.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = follow_from(api, channel, kinds, &received, &followed) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_RETRY) => {}
        }
    }
}

/// A watch event with its objects left as sent: only the revision is
/// read. An agent decodes the objects on its own CPU; the thousands of
/// hollow nodes of one benchmark process would decode them all on the
/// cores the master runs on, and fall behind it.
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedWatchEvent {
    #[prost(uint64, tag = "3")]
    revision: u64,
}

/// `message` as a request naming the data format this build reads, as a
/// real agent's do (`agent::master_link::cluster_objects`): the master
/// sends the kinds held as documents as they are.
fn naming_format<T>(message: T) -> tonic::Request<T> {
    use skiff_objects::legacy_bodies;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        legacy_bodies::FORMAT_HEADER,
        tonic::metadata::MetadataValue::from(legacy_bodies::LATEST_FORMAT),
    );
    request
}

/// `Api.Watch` with the objects of its events left encoded.
async fn watch_encoded(
    channel: tonic::transport::Channel,
    request: WatchRequest,
) -> Result<tonic::Streaming<EncodedWatchEvent>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<WatchRequest, EncodedWatchEvent>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/skiff.api.v1.Api/Watch");
    grpc.server_streaming(naming_format(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// One kind's watch events, ended by `None`.
type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Option<Result<EncodedWatchEvent, tonic::Status>>> + Send>,
>;

/// One list of each of `kinds`, then their watches until one fails or
/// ends: why.
async fn follow_from(
    mut api: skiff_proto::api::api_client::ApiClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
    kinds: &[FollowedKind],
    received: &Received,
    followed: &Followed,
) -> tonic::Status {
    let mut from = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let request = ListRequest {
            kind: kind.name().to_owned(),
            namespace: String::new(),
            serializable: true,
            selecting: None,
            exact_revision: 0,
        };
        let list = match api.list(naming_format(request)).await {
            Ok(list) => list.into_inner(),
            Err(status) => return status,
        };
        followed.lists.fetch_add(1, Ordering::Relaxed);
        received.note(kind as usize, list.revision);
        from.push(list.revision);
    }
    let mut events: StreamMap<usize, EventStream> = StreamMap::new();
    for (k, &kind) in kinds.iter().enumerate() {
        let request = WatchRequest {
            kind: kind.name().to_owned(),
            namespace: String::new(),
            from_revision: from[k],
            with_previous: false,
        };
        match watch_encoded(channel.clone(), request).await {
            // Ended by `None`, so that a clean end of one is seen.
            Ok(stream) => {
                let stream = stream.map(Some).chain(tokio_stream::once(None));
                events.insert(kind as usize, Box::pin(stream));
            }
            Err(status) => return status,
        }
    }
    while let Some((k, event)) = events.next().await {
        match event {
            Some(Ok(event)) => {
                followed.events.fetch_add(1, Ordering::Relaxed);
                received.note(k, event.revision);
            }
            Some(Err(status)) => return status,
            None => break,
        }
    }
    tonic::Status::unavailable("the master ended a watch")
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
    let now = skiff_objects::now_rfc3339();
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
    let now = skiff_objects::now_rfc3339();
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
            terminated: Some(Box::new(v1::ContainerStateTerminated {
                exit_code: Some(0),
                reason: "Completed".into(),
                started_at: started.to_owned(),
                finished_at: now.clone(),
                ..Default::default()
            })),
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
/// runs to stop. `running` follows which pods run here (from the first
/// Upsert of a pod that is not finished to its end, deletion or absence
/// from a resync), for the usage readings. Ends when the pod watch does;
/// the completions still waiting end with it.
async fn run_pods(
    node: String,
    slot: usize,
    complete_after: Option<Duration>,
    running: RunningPods,
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
                    running.remove(&report.uid);
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
                running.remove(&uid);
                if let Some(run) = completing.remove(&uid) {
                    run.abort();
                }
                continue;
            }
            Desired::Synced(uids) => {
                running.retain(|uid| uids.contains(uid));
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
            running.remove(&meta.uid);
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
        if is_finished(&pod) {
            running.remove(&meta.uid);
            continue;
        }
        if completing.contains_key(&meta.uid) {
            continue;
        }
        running.insert(&meta.uid, RunningPod::of(&pod));
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
            let started = skiff_objects::now_rfc3339();
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

/// One pod a hollow node runs, as its usage readings name it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunningPod {
    namespace: String,
    name: String,
    uid: String,
    containers: Vec<String>,
}

impl RunningPod {
    fn of(pod: &v1::Pod) -> RunningPod {
        let meta = pod.metadata.clone().unwrap_or_default();
        RunningPod {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            containers: pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default(),
        }
    }
}

/// The pods a hollow node runs, by UID: written by its pod manager, read
/// by its usage sampler.
#[derive(Debug, Clone, Default)]
struct RunningPods(Arc<Mutex<BTreeMap<String, RunningPod>>>);

impl RunningPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningPod>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, uid: &str, pod: RunningPod) {
        self.lock().insert(uid.to_owned(), pod);
    }

    fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid.as_str()));
    }

    fn snapshot(&self) -> Vec<RunningPod> {
        self.lock().values().cloned().collect()
    }
}

/// The hollow node's usage sampler: a pass every [`SAMPLE_EVERY`], as the
/// agent's (`skiff_agent::resource_usage::run`), the first at a random
/// point of the first period (agents do not start in step); while
/// `switch` is on, each pass publishes a reading of the pods running now
/// over the time since the previous pass. Turned off, the last reading is
/// withdrawn, so a new heartbeat stream does not send it again. Ends with
/// `shutdown`.
async fn sample_usage(
    running: RunningPods,
    switch: UsageSwitch,
    readings: watch::Sender<Option<UsageReading>>,
    published: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let offset = SAMPLE_EVERY.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The previous pass, by tokio's clock (which tests can pause).
    let mut previous: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let window = previous.map_or(SAMPLE_EVERY, |p| now.duration_since(p));
        previous = Some(now);
        if !switch.is_on() {
            if readings.borrow().is_some() {
                readings.send_replace(None);
            }
            continue;
        }
        let usage = usage_reading(&running.snapshot(), window);
        let taken = Instant::now();
        readings.send_replace(Some(UsageReading { taken, usage }));
        published.fetch_add(1, Ordering::Relaxed);
    }
}

/// Made-up CPU of one container, in nanocores: 1 to 20 millicores.
fn container_cpu() -> u64 {
    rand::random_range(1_000_000..=20_000_000)
}

/// Made-up working set of one container: 8 to 64 MiB.
fn container_memory() -> u64 {
    rand::random_range(8 << 20..=64 << 20)
}

/// What the machine itself uses besides its pods: 150 millicores, 600 MiB.
const SYSTEM_CPU_NANOCORES: u64 = 150_000_000;
const SYSTEM_MEMORY_BYTES: u64 = 600 << 20;
/// The hollow storage filesystem: 64 GiB, 40 GiB free.
const STORAGE_CAPACITY_BYTES: u64 = 64 << 30;
const STORAGE_AVAILABLE_BYTES: u64 = 40 << 30;

/// A reading of `pods` over `window` in the shape the agent's sampler
/// makes: every pod with each of its containers, the machine's totals
/// (its pods' and the system's), the storage filesystem; `age_millis` is
/// filled in by the heartbeat that carries it.
fn usage_reading(pods: &[RunningPod], window: Duration) -> NodeResourceUsage {
    let pods: Vec<PodResourceUsage> = pods
        .iter()
        .map(|pod| PodResourceUsage {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            containers: pod
                .containers
                .iter()
                .map(|name| ContainerResourceUsage {
                    name: name.clone(),
                    cpu_nanocores: container_cpu(),
                    memory_working_set_bytes: container_memory(),
                })
                .collect(),
        })
        .collect();
    let containers = || pods.iter().flat_map(|p| p.containers.iter());
    let cpu_nanocores: u64 = containers().map(|c| c.cpu_nanocores).sum();
    let memory_bytes: u64 = containers().map(|c| c.memory_working_set_bytes).sum();
    NodeResourceUsage {
        window_millis: millis(window),
        age_millis: 0,
        cpu_nanocores: SYSTEM_CPU_NANOCORES + cpu_nanocores,
        memory_working_set_bytes: SYSTEM_MEMORY_BYTES + memory_bytes,
        pods,
        storage: Some(FilesystemUsage {
            capacity_bytes: STORAGE_CAPACITY_BYTES,
            available_bytes: STORAGE_AVAILABLE_BYTES,
        }),
    }
}

/// A window in milliseconds, as the message carries it.
fn millis(window: Duration) -> u32 {
    u32::try_from(window.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_everywhere_once_the_slowest_node_has_it() {
        let endpoints = FollowedKind::Endpoints as usize;
        let followed = Followed::default();
        assert_eq!(followed.everywhere(FollowedKind::Endpoints), None);
        let (a, b) = (followed.add_node(), followed.add_node());
        a.note(endpoints, 12);
        let a_at = Instant::now();
        b.note(endpoints, 9);
        b.note(FollowedKind::Service as usize, 30);
        assert_eq!(followed.everywhere(FollowedKind::Endpoints), Some(9));
        assert_eq!(followed.everywhere(FollowedKind::Service), Some(0));
        assert_eq!(followed.everywhere_at(FollowedKind::Endpoints, 12), None);
        std::thread::sleep(Duration::from_millis(2));
        b.note(endpoints, 14);
        let b_at = Instant::now();
        assert_eq!(followed.everywhere(FollowedKind::Endpoints), Some(12));
        // When the later of the two had it: b, after a.
        let at = followed.everywhere_at(FollowedKind::Endpoints, 12).unwrap();
        assert!(at > a_at && at <= b_at, "{at:?} not b's arrival");
        // A node that stopped no longer holds the others back.
        let c = followed.add_node();
        assert_eq!(followed.everywhere(FollowedKind::Endpoints), Some(0));
        drop(c);
        assert_eq!(followed.everywhere(FollowedKind::Endpoints), Some(12));
    }

    fn pod(name: &str, uid: &str, containers: &[&str]) -> RunningPod {
        RunningPod {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_reading_names_every_pod_and_container_and_adds_them_up_for_the_node() {
        let pods = [
            pod("web", "u1", &["app", "sidecar"]),
            pod("db", "u2", &["db"]),
        ];
        let reading = usage_reading(&pods, Duration::from_millis(10_012));
        assert_eq!(reading.window_millis, 10_012);
        assert_eq!(reading.age_millis, 0);
        let named: Vec<(&str, &str, Vec<&str>)> = reading
            .pods
            .iter()
            .map(|p| {
                assert_eq!(p.namespace, "default");
                let containers = p.containers.iter().map(|c| c.name.as_str()).collect();
                (p.name.as_str(), p.uid.as_str(), containers)
            })
            .collect();
        assert_eq!(
            named,
            [
                ("web", "u1", vec!["app", "sidecar"]),
                ("db", "u2", vec!["db"])
            ]
        );
        let containers: Vec<&ContainerResourceUsage> =
            reading.pods.iter().flat_map(|p| &p.containers).collect();
        for c in &containers {
            assert!((1_000_000..=20_000_000).contains(&c.cpu_nanocores), "{c:?}");
            assert!(
                (8 << 20..=64 << 20).contains(&c.memory_working_set_bytes),
                "{c:?}"
            );
        }
        let cpu: u64 = containers.iter().map(|c| c.cpu_nanocores).sum();
        let memory: u64 = containers.iter().map(|c| c.memory_working_set_bytes).sum();
        assert_eq!(reading.cpu_nanocores, SYSTEM_CPU_NANOCORES + cpu);
        assert_eq!(
            reading.memory_working_set_bytes,
            SYSTEM_MEMORY_BYTES + memory
        );
        let storage = reading.storage.expect("the storage filesystem");
        assert!(storage.available_bytes < storage.capacity_bytes);
    }

    #[test]
    fn a_node_running_nothing_reports_the_machine_alone() {
        let reading = usage_reading(&[], SAMPLE_EVERY);
        assert!(reading.pods.is_empty());
        assert_eq!(reading.window_millis, millis(SAMPLE_EVERY));
        assert_eq!(reading.cpu_nanocores, SYSTEM_CPU_NANOCORES);
        assert_eq!(reading.memory_working_set_bytes, SYSTEM_MEMORY_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn readings_are_published_every_sample_period_only_while_switched_on() {
        let running = RunningPods::default();
        running.insert("u1", pod("web", "u1", &["app"]));
        let switch = UsageSwitch::default();
        let (readings_tx, mut readings) = watch::channel(None);
        let published = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let sampler = tokio::spawn(sample_usage(
            running.clone(),
            switch.clone(),
            readings_tx,
            published.clone(),
            shutdown.clone(),
        ));
        // Off: whole periods pass and nothing is published.
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        assert_eq!(published.load(Ordering::Relaxed), 0);
        assert!(readings.borrow_and_update().is_none());

        switch.turn_on();
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        assert_eq!(published.load(Ordering::Relaxed), 3);
        let reading = readings.borrow_and_update().clone().expect("a reading");
        assert_eq!(reading.usage.pods.len(), 1);
        assert_eq!(reading.usage.pods[0].uid, "u1");
        // The time since the previous pass (the timer's millisecond steps
        // aside).
        let period = millis(SAMPLE_EVERY);
        let window = reading.usage.window_millis;
        assert!((period - 1..=period + 1).contains(&window), "{window} ms");

        // A pod that is gone is no longer reported.
        running.remove("u1");
        tokio::time::sleep(SAMPLE_EVERY).await;
        let reading = readings.borrow_and_update().clone().expect("a reading");
        assert!(reading.usage.pods.is_empty());

        // Off again: the last reading is withdrawn, no new one comes.
        switch.turn_off();
        tokio::time::sleep(SAMPLE_EVERY).await;
        assert!(readings.borrow_and_update().is_none());
        let count = published.load(Ordering::Relaxed);
        tokio::time::sleep(SAMPLE_EVERY * 2).await;
        assert_eq!(published.load(Ordering::Relaxed), count);

        shutdown.cancel();
        sampler.await.unwrap();
    }
}
