//! The agent's side of the agent protocol. Three loops share one list of
//! masters and each reconnects with backoff on its own:
//!
//! - registration and heartbeats: the node registers, then streams a
//!   heartbeat every second to the leader (following `x-skiff-leader` when
//!   a follower refuses);
//! - the pod watch: every pod bound to this node, turned into [`Desired`]
//!   changes for the pod manager, with a complete list after each connect;
//! - status reports: the newest status of each pod, retried until a master
//!   takes it.
//!
//! With no master reachable the loops keep retrying and the pods keep
//! running; nothing here blocks the pod manager.
//!
//! The types crossing to the pod manager ([`Desired`] in, [`StatusReport`]
//! out) are defined here, so this module needs nothing of the pods; it also
//! offers [`follow_kinds`], with which the agent keeps the pod network in
//! line with the cluster's Nodes, Services and Endpoints.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skiff_proto::api::EventType;
use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::{Heartbeat, RegisterRequest, UpdatePodStatusRequest, WatchPodsRequest};
use skiff_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A change in what should run on this node.
#[derive(Debug, Clone)]
pub enum Desired {
    /// This pod should run (new or changed).
    Upsert(Box<v1::Pod>),
    /// The pod with this UID was deleted.
    Delete(String),
    /// The master's complete list: these UIDs, and no others.
    Synced(HashSet<String>),
}

/// A pod status to send to the master.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: v1::PodStatus,
}

/// Backoff between reconnects: 200 ms doubling to 5 s.
#[derive(Debug)]
struct Reconnect {
    delay: Duration,
}

impl Reconnect {
    fn new() -> Reconnect {
        Reconnect {
            delay: Duration::from_millis(200),
        }
    }
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(self.delay) => {}
        }
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        true
    }
    fn reset(&mut self) {
        self.delay = Duration::from_millis(200);
    }
}

/// The masters this agent knows: those it was given, and the other
/// members they report. Connections are mutual TLS with the node's
/// certificate, one kept per master.
#[derive(Clone, Debug)]
pub struct Masters {
    addrs: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
    transport: skiff_security::ClientTransport,
    channels: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl Masters {
    pub fn new(addrs: Vec<String>, transport: skiff_security::ClientTransport) -> Masters {
        Masters {
            addrs: std::sync::Arc::new(std::sync::RwLock::new(addrs)),
            transport,
            channels: Default::default(),
        }
    }

    /// Every master known so far.
    pub fn known(&self) -> Vec<String> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the master at `i` for the cluster's members and remembers them.
    async fn learn(&self, i: usize) {
        let Some(channel) = self.channel(&self.nth(i)) else {
            return;
        };
        let mut api = skiff_proto::api::api_client::ApiClient::new(channel);
        let Ok(status) = api
            .cluster_status(skiff_proto::api::ClusterStatusRequest {})
            .await
        else {
            return;
        };
        let mut addrs = self.addrs.write().unwrap_or_else(|p| p.into_inner());
        for m in status.into_inner().members {
            if !m.api_addr.is_empty() && !addrs.contains(&m.api_addr) {
                tracing::info!(master = %m.api_addr, "learned another master");
                addrs.push(m.api_addr);
            }
        }
    }

    fn channel(&self, addr: &str) -> Option<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Some(c.clone());
        }
        let endpoint = self
            .transport
            .endpoint(addr)
            .ok()?
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = self.transport.channel_on(endpoint);
        channels.insert(addr.to_owned(), channel.clone());
        Some(channel)
    }

    fn nth(&self, i: usize) -> String {
        let addrs = self.addrs.read().unwrap_or_else(|p| p.into_inner());
        addrs[i % addrs.len()].clone()
    }

    /// A client of the public API of master `i`.
    pub fn api(&self, i: usize) -> Option<skiff_proto::api::api_client::ApiClient<Channel>> {
        self.channel(&self.nth(i))
            .map(skiff_proto::api::api_client::ApiClient::new)
    }

    pub(crate) fn client(&self, i: usize) -> Option<NodesClient<Channel>> {
        self.channel(&self.nth(i)).map(NodesClient::new)
    }
}

/// Registers `node`, retrying across masters until one takes it.
async fn register(masters: &Masters, node: &v1::Node, shutdown: &CancellationToken) -> bool {
    let mut backoff = Reconnect::new();
    let mut i = 0;
    loop {
        if let Some(mut client) = masters.client(i) {
            match client
                .register(RegisterRequest {
                    node: Some(node.clone()),
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(master = %masters.nth(i), "node registered");
                    return true;
                }
                Err(e) => tracing::debug!(master = %masters.nth(i), error = %e, "register failed"),
            }
        }
        i += 1;
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
}

/// Registers the node and waits until the master has given it a pod
/// subnet; `None` on shutdown.
pub async fn wait_pod_cidr(
    masters: &Masters,
    node: &v1::Node,
    shutdown: &CancellationToken,
) -> Option<String> {
    if !register(masters, node, shutdown).await {
        return None;
    }
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut i = 0;
    loop {
        if let Some(mut api) = masters.api(i) {
            let got = api
                .get(skiff_proto::api::GetRequest {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: name.clone(),
                    serializable: false,
                })
                .await;
            if let Ok(o) = got {
                if let Some(skiff_proto::api::object::Kind::Node(n)) = o.into_inner().kind {
                    if let Some(cidr) = n.spec.map(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                        return Some(cidr);
                    }
                }
            } else {
                i += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

/// Registers, then heartbeats forever.
pub async fn heartbeat_loop(
    masters: Masters,
    node: v1::Node,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if !register(&masters, &node, &shutdown).await {
        return;
    }
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut target = masters.nth(0);
    let mut i = 0;
    let mut backoff = Reconnect::new();
    loop {
        let Some(channel) = masters.channel(&target) else {
            return;
        };
        let (tx, rx) = mpsc::channel(4);
        let mut client = NodesClient::new(channel);
        let call = client.heartbeats(ReceiverStream::new(rx));
        tokio::pin!(call);
        let mut tick = tokio::time::interval(interval);
        let mut sent = 0u64;
        let ended = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = &mut call => break ended,
                _ = tick.tick() => {
                    if tx.send(Heartbeat { node_name: name.clone() }).await.is_err() {
                        break Ok(tonic::Response::new(Default::default()));
                    }
                    sent += 1;
                    if sent == 3 {
                        backoff.reset();
                    }
                }
            }
        };
        match ended {
            Err(status) => {
                if let Some(leader) = status
                    .metadata()
                    .get(skiff_proto::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                {
                    target = leader.to_string();
                    continue;
                }
                if status.code() == tonic::Code::NotFound {
                    // The master forgot this node (a new cluster): register again.
                    if !register(&masters, &node, &shutdown).await {
                        return;
                    }
                }
                tracing::debug!(master = %target, error = %status, "heartbeat stream ended");
            }
            Ok(_) => tracing::debug!(master = %target, "heartbeat stream closed"),
        }
        i += 1;
        target = masters.nth(i);
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Watches the pods bound to `node_name` and feeds the pod manager.
pub async fn watch_loop(
    masters: Masters,
    node_name: String,
    desired: mpsc::Sender<Desired>,
    shutdown: CancellationToken,
) {
    let mut i = 0;
    let mut backoff = Reconnect::new();
    // The newest revision seen: a list from a master that is behind it
    // (a partitioned follower) must not tear down newer pods.
    let mut newest = 0u64;
    loop {
        if let Some(mut client) = masters.client(i) {
            let call = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = client.watch_pods(WatchPodsRequest { node_name: node_name.clone() }) => c,
            };
            match call {
                Ok(stream) => {
                    masters.learn(i).await;
                    let mut stream = stream.into_inner();
                    let mut listed: Option<HashSet<String>> = Some(HashSet::new());
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            n = stream.message() => n,
                        };
                        let event = match next {
                            Ok(Some(e)) => e,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(master = %masters.nth(i), error = %e, "pod watch ended");
                                break;
                            }
                        };
                        if event.r#type == EventType::Bookmark as i32 {
                            if event.revision < newest {
                                tracing::warn!(
                                    master = %masters.nth(i),
                                    revision = event.revision,
                                    newest,
                                    "this master is behind; not removing pods on its word"
                                );
                                listed = None;
                                continue;
                            }
                            newest = newest.max(event.revision);
                            if let Some(uids) = listed.take() {
                                backoff.reset();
                                if desired.send(Desired::Synced(uids)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        newest = newest.max(event.revision);
                        let Some(skiff_proto::api::object::Kind::Pod(pod)) =
                            event.object.and_then(|o| o.kind)
                        else {
                            continue;
                        };
                        let uid = pod
                            .metadata
                            .as_ref()
                            .map(|m| m.uid.clone())
                            .unwrap_or_default();
                        let change = if event.r#type == EventType::Deleted as i32 {
                            if let Some(l) = listed.as_mut() {
                                l.remove(&uid);
                            }
                            Desired::Delete(uid)
                        } else {
                            if let Some(l) = listed.as_mut() {
                                l.insert(uid);
                            }
                            Desired::Upsert(Box::new(pod))
                        };
                        if desired.send(change).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(master = %masters.nth(i), error = %e, "cannot watch pods")
                }
            }
        }
        i += 1;
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Sends the newest status of each pod; older ones are overwritten.
pub async fn status_loop(
    masters: Masters,
    mut reports: mpsc::UnboundedReceiver<StatusReport>,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<String, StatusReport> = HashMap::new();
    let mut i = 0;
    let mut client = masters.client(i);
    let mut backoff = Reconnect::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = reports.recv() => match r {
                    Some(r) => { pending.insert(r.uid.clone(), r); }
                    None => return,
                },
            }
        }
        while let Ok(r) = reports.try_recv() {
            pending.insert(r.uid.clone(), r);
        }
        let uids: Vec<String> = pending.keys().cloned().collect();
        let mut failed = false;
        for uid in uids {
            let Some(report) = pending.get(&uid).cloned() else {
                continue;
            };
            let Some(c) = client.as_mut() else { break };
            let result = c
                .update_pod_status(UpdatePodStatusRequest {
                    namespace: report.namespace.clone(),
                    name: report.name.clone(),
                    status: Some(report.status.clone()),
                    uid: report.uid.clone(),
                })
                .await;
            match result {
                Ok(_) => {
                    pending.remove(&uid);
                }
                // The pod is gone (or replaced); its status no longer matters.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::NotFound | tonic::Code::InvalidArgument
                    ) =>
                {
                    tracing::debug!(pod = %report.name, error = %s, "dropping status report");
                    pending.remove(&uid);
                }
                // No longer this node's pod (bound elsewhere): retrying
                // would only hold up the reports behind it.
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    tracing::warn!(pod = %report.name, error = %s, "status report refused; dropping it");
                    pending.remove(&uid);
                }
                Err(s) => {
                    tracing::debug!(error = %s, "status report failed");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            i += 1;
            client = masters.client(i);
            if !backoff.wait(&shutdown).await {
                return;
            }
        } else {
            backoff.reset();
        }
    }
}

/// Runs `reconcile` with every object of each of `kinds` (all namespaces,
/// from a master's local replica, in the order of `kinds`) at start, after
/// any change to one of them (a burst of changes settles for 100 ms into
/// one call) and at least every minute; moves to the next master when one
/// fails; returns on `shutdown`. The overlay and the Service rules follow
/// the cluster this way.
pub async fn follow_kinds<F, Fut>(
    masters: &Masters,
    kinds: &[&str],
    shutdown: &CancellationToken,
    mut reconcile: F,
) where
    F: FnMut(Vec<Vec<skiff_proto::api::Object>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use skiff_proto::api::{ListRequest, WatchRequest};
    let mut i = 0usize;
    loop {
        let Some(mut api) = masters.api(i) else {
            return;
        };
        let mut lists = Vec::new();
        let mut revisions = Vec::new();
        for kind in kinds {
            let listed = api
                .list(ListRequest {
                    kind: (*kind).into(),
                    namespace: String::new(),
                    serializable: true,
                })
                .await;
            match listed {
                Ok(list) => {
                    let list = list.into_inner();
                    revisions.push(list.revision);
                    lists.push(list.items);
                }
                Err(e) => {
                    tracing::debug!(master = %masters.nth(i), kind, error = %e, "cannot list");
                    break;
                }
            }
        }
        let listed = lists.len() == kinds.len();
        if listed {
            reconcile(lists).await;
        }
        // The first change to any of the kinds after what was listed.
        let changed = async {
            if !listed {
                return false;
            }
            let mut watches = tokio::task::JoinSet::new();
            for (kind, revision) in kinds.iter().zip(revisions) {
                let mut api = api.clone();
                let request = WatchRequest {
                    kind: (*kind).into(),
                    namespace: String::new(),
                    from_revision: revision,
                };
                watches.spawn(async move {
                    let Ok(stream) = api.watch(request).await else {
                        return false;
                    };
                    matches!(stream.into_inner().message().await, Ok(Some(_)))
                });
            }
            // Dropping the set stops the other watches.
            matches!(watches.join_next().await, Some(Ok(true)))
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ok = changed => if !ok {
                i += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
