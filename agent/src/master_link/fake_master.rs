//! A scripted fake master for the tests of the master link: it serves the
//! real gRPC services the agent calls (`skiff.node.v1.Nodes` and
//! `skiff.api.v1.Api`) from tonic on a loopback port, behind the same TLS
//! listener and mutual-TLS configuration as a real master, with
//! certificates from a CA made for the test. It records every call and
//! answers as the test scripts it: refusals queued in its [`State`], and
//! watch streams the test writes to (or breaks) by hand. Like linkerd2's
//! controller fake, it holds no cluster logic of its own.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use skiff_proto::api::api_server::{Api, ApiServer};
use skiff_proto::api::{
    ClusterStatusRequest, ClusterStatusResponse, CreateRequest, DeleteRequest, EventType,
    GetRequest, JoinRequest, JoinResponse, ListRequest, ListResponse, LogChunk, Member, Object,
    PodLogsRequest, RequestTokenRequest, RequestTokenResponse, UpdateRequest, WatchEvent,
    WatchRequest,
};
use skiff_proto::node::nodes_server::{Nodes, NodesServer};
use skiff_proto::node::{
    ClusterNetwork, ConfirmPodDeletionRequest, Heartbeat, HeartbeatSummary, NodeResourceUsage,
    RecordEventsRequest, RecordEventsResponse, RegisterRequest, RegisterResponse,
    RenewCertificateRequest, RenewCertificateResponse, UpdatePodStatusRequest, WatchPodsRequest,
};
use skiff_proto::v1;
use skiff_security::tls::{self, ClientAuth};
use skiff_security::{CertStore, ClientTransport, ClusterCa, Identity, PeerInfo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::masters::Masters;

/// How long a test waits for anything before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How often [`FakeMaster::until`] looks at the recorded calls.
const POLL: Duration = Duration::from_millis(10);

/// A sender the fake answers a watch call with; the test writes the
/// stream's events (or an error, which breaks it) into it.
pub(crate) type ScriptedStream = mpsc::Sender<Result<WatchEvent, Status>>;

/// Awaits `future`, failing the test after [`WAIT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// A test cluster's PKI: the CA, the masters' TLS, and the node's client
/// transport, as `skiff_security` makes them for real clusters.
pub(crate) struct TestPki {
    server: Arc<rustls::ServerConfig>,
    transport: ClientTransport,
}

impl TestPki {
    /// A new CA, a master certificate for [`skiff_security::MASTER_SERVER_NAME`]
    /// and a certificate for node `node`.
    pub(crate) fn new(node: &str) -> TestPki {
        skiff_security::install_crypto_provider();
        let ca = ClusterCa::generate().expect("a test CA");
        let master = ca
            .issue(
                &Identity::Master("1".to_owned()),
                &[skiff_security::MASTER_SERVER_NAME.to_owned()],
            )
            .expect("a master certificate");
        let master = CertStore::new(&master.cert_pem, &master.key_pem).expect("master cert store");
        // As a master's peer port does: no handshake without a certificate
        // the CA signed, so the agent must show its own.
        let server = tls::server_config(ca.cert_pem(), master, ClientAuth::Required)
            .expect("a server TLS configuration");
        let issued = ca
            .issue(&Identity::Node(node.to_owned()), &[])
            .expect("a node certificate");
        let node_cert = CertStore::new(&issued.cert_pem, &issued.key_pem).expect("node cert store");
        let transport =
            ClientTransport::to_masters(ca.cert_pem(), Some(node_cert)).expect("a transport");
        TestPki { server, transport }
    }

    /// The agent's view of `fakes`, in this order.
    pub(crate) fn masters(&self, fakes: &[&FakeMaster]) -> Masters {
        let addrs = fakes.iter().map(|f| f.addr.clone()).collect();
        Masters::new(addrs, self.transport.clone())
    }

    /// Starts a fake master on a loopback port.
    pub(crate) async fn serve(&self) -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        let service = FakeService {
            state: state.clone(),
        };
        let incoming =
            skiff_security::listener::incoming(listener, self.server.clone(), stop.clone());
        let server = tonic::transport::Server::builder()
            .add_service(NodesServer::new(service.clone()))
            .add_service(ApiServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        tokio::spawn(server);
        FakeMaster { addr, state, stop }
    }
}

/// What a fake master was asked, and how it is to answer.
#[derive(Default)]
pub(crate) struct State {
    /// Each registered Node, with the identity of the certificate it came
    /// with.
    pub(crate) registered: Vec<(v1::Node, Option<Identity>)>,
    /// The cluster network registration answers with.
    pub(crate) network: Option<ClusterNetwork>,
    /// Heartbeat streams opened, refused ones included.
    pub(crate) heartbeat_calls: usize,
    /// Each heartbeat received: the node it names, and when.
    pub(crate) heartbeats: Vec<(String, Instant)>,
    /// The resource usage readings heartbeats carried, in order.
    pub(crate) usages: Vec<NodeResourceUsage>,
    /// When set, every heartbeat stream is refused with this.
    pub(crate) refuse_heartbeats: Option<Status>,
    /// The next this many heartbeat streams are answered NOT_FOUND, as by
    /// a master that does not know the node.
    pub(crate) forget_node: usize,
    /// Each pod watch opened: the node it was for, and when.
    pub(crate) pod_watch_requests: Vec<(String, Instant)>,
    /// The pod watches opened, in order.
    pub(crate) pod_watches: Vec<ScriptedStream>,
    /// Every status report received, refused ones included.
    pub(crate) status_attempts: Vec<UpdatePodStatusRequest>,
    /// Refusals for the next status reports, in order.
    pub(crate) status_refusals: VecDeque<Status>,
    /// The status reports taken.
    pub(crate) statuses_taken: Vec<UpdatePodStatusRequest>,
    /// `RecordEvents` calls received, refused ones included.
    pub(crate) event_attempts: usize,
    /// Refusals for the next `RecordEvents` calls, in order.
    pub(crate) event_refusals: VecDeque<Status>,
    /// The `RecordEvents` calls taken.
    pub(crate) events_taken: Vec<RecordEventsRequest>,
    /// Every pod deletion confirmed (all are taken).
    pub(crate) deletions_confirmed: Vec<ConfirmPodDeletionRequest>,
    /// The members `ClusterStatus` reports (their API addresses).
    pub(crate) members: Vec<String>,
    /// The objects `List` returns, by kind.
    pub(crate) objects: BTreeMap<String, Vec<Object>>,
    /// The store revision `List` reports.
    pub(crate) revision: u64,
    /// Each `List` call: the kind, and when.
    pub(crate) list_calls: Vec<(String, Instant)>,
    /// The next this many `List` calls fail with UNAVAILABLE.
    pub(crate) failing_lists: usize,
    /// Each `Get` call's request.
    pub(crate) get_requests: Vec<GetRequest>,
    /// The next this many `Get` calls fail with UNAVAILABLE.
    pub(crate) failing_gets: usize,
    /// Each `Watch` call's request.
    pub(crate) watch_requests: Vec<WatchRequest>,
    /// The `Watch` streams still open, with the kind each watches.
    pub(crate) watches: Vec<(String, ScriptedStream)>,
    /// Each `RequestToken` call's request; each is answered
    /// `token-<n>`, issued at 1000 for the lifetime asked.
    pub(crate) token_requests: Vec<RequestTokenRequest>,
    /// Refusals for the next `RequestToken` calls, in order.
    pub(crate) token_refusals: VecDeque<Status>,
}

/// A running fake master; dropping it stops it.
pub(crate) struct FakeMaster {
    pub(crate) addr: String,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeMaster {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads or scripts the fake's state.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    /// Waits until `check` finds what it looks for in the state, failing
    /// the test after [`WAIT`].
    pub(crate) async fn until<R>(
        &self,
        what: &str,
        mut check: impl FnMut(&mut State) -> Option<R>,
    ) -> R {
        within(what, async {
            loop {
                let found = check(&mut self.lock());
                if let Some(found) = found {
                    return found;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
    }

    /// The heartbeats received, once there are at least `n`.
    pub(crate) async fn until_heartbeats(&self, n: usize) -> Vec<(String, Instant)> {
        let enough = |s: &mut State| (s.heartbeats.len() >= n).then(|| s.heartbeats.clone());
        self.until("heartbeats", enough).await
    }

    /// The `Watch` requests received, once there are at least `n`.
    pub(crate) async fn until_watches(&self, n: usize) -> Vec<WatchRequest> {
        let enough = |s: &mut State| {
            let requests = &s.watch_requests;
            (requests.len() >= n).then(|| requests.clone())
        };
        self.until("watches", enough).await
    }

    /// The `n`th pod watch the agent opened (counting from 0), once open.
    pub(crate) async fn pod_watch(&self, n: usize) -> ScriptedStream {
        let opened = self.until("a pod watch", |s| s.pod_watches.get(n).cloned());
        opened.await
    }

    /// The `n`th status report received (counting from 0), taken or not.
    pub(crate) async fn status_attempt(&self, n: usize) -> UpdatePodStatusRequest {
        let received = self.until("a status report", |s| s.status_attempts.get(n).cloned());
        received.await
    }

    /// The `n`th status report taken (counting from 0).
    pub(crate) async fn status_taken(&self, n: usize) -> UpdatePodStatusRequest {
        let taken = self.until("a report taken", |s| s.statuses_taken.get(n).cloned());
        taken.await
    }

    /// The `n`th pod deletion confirmed (counting from 0).
    pub(crate) async fn deletion_confirmed(&self, n: usize) -> ConfirmPodDeletionRequest {
        let confirmed = |s: &mut State| s.deletions_confirmed.get(n).cloned();
        self.until("a pod deletion confirmed", confirmed).await
    }

    /// Replaces the objects of `kind` and moves the revision on.
    pub(crate) fn set_objects(&self, kind: &str, objects: Vec<Object>) {
        let mut state = self.lock();
        state.objects.insert(kind.to_owned(), objects);
        state.revision += 1;
    }

    /// Makes one change to the objects of `kind`, as the store would (an
    /// ADDED or MODIFIED object put in place of the one of its namespace
    /// and name, a DELETED one taken out), moves the revision on, and
    /// sends the event to every open `Watch` of `kind`.
    pub(crate) fn watch_event(&self, kind: &str, change: EventType, object: Object) {
        use skiff_objects::ObjectExt;
        let mut state = self.lock();
        let objects = state.objects.entry(kind.to_owned()).or_default();
        let same = |o: &Object| {
            o.meta().namespace == object.meta().namespace && o.meta().name == object.meta().name
        };
        objects.retain(|o| !same(o));
        if change != EventType::Deleted {
            objects.push(object.clone());
        }
        state.revision += 1;
        let event = WatchEvent {
            r#type: change as i32,
            object: Some(object),
            revision: state.revision,
            previous: None,
            ..Default::default()
        };
        for (watched, watch) in &state.watches {
            if watched == kind {
                // A watch the agent has left is simply closed.
                let _ = watch.try_send(Ok(event.clone()));
            }
        }
    }

    /// Ends every open `Watch` of `kind` cleanly, as a master may.
    pub(crate) fn end_watches(&self, kind: &str) {
        self.lock().watches.retain(|(watched, _)| watched != kind);
    }

    /// Ends every open `Watch` with `status`, as a master going away does.
    pub(crate) fn break_watches(&self, status: Status) {
        let watches = std::mem::take(&mut self.lock().watches);
        for (_, watch) in watches {
            let _ = watch.try_send(Err(status.clone()));
        }
    }
}

/// The services of a fake master, over its shared state.
#[derive(Clone)]
struct FakeService {
    state: Arc<Mutex<State>>,
}

impl FakeService {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_scripted(call: &str) -> Status {
    Status::unimplemented(format!("the fake master does not script {call}"))
}

#[tonic::async_trait]
impl Nodes for FakeService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let identity = PeerInfo::of(&request).and_then(|p| p.identity.clone());
        let node = request.into_inner().node.unwrap_or_default();
        let mut state = self.lock();
        state.registered.push((node.clone(), identity));
        Ok(Response::new(RegisterResponse {
            node: Some(node),
            network: state.network.clone(),
        }))
    }

    async fn heartbeats(
        &self,
        request: Request<Streaming<Heartbeat>>,
    ) -> Result<Response<HeartbeatSummary>, Status> {
        let refusal = {
            let mut state = self.lock();
            state.heartbeat_calls += 1;
            if state.forget_node > 0 {
                state.forget_node -= 1;
                Some(Status::not_found("no such node"))
            } else {
                state.refuse_heartbeats.clone()
            }
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let mut stream = request.into_inner();
        let mut received = 0;
        while let Some(beat) = stream.message().await? {
            let at = Instant::now();
            let mut state = self.lock();
            state.heartbeats.push((beat.node_name, at));
            state.usages.extend(beat.usage);
            drop(state);
            received += 1;
        }
        Ok(Response::new(HeartbeatSummary { received }))
    }

    type WatchPodsStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch_pods(
        &self,
        request: Request<WatchPodsRequest>,
    ) -> Result<Response<Self::WatchPodsStream>, Status> {
        let node = request.into_inner().node_name;
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.lock();
        state.pod_watch_requests.push((node, Instant::now()));
        state.pod_watches.push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_pod_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<Object>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        state.status_attempts.push(request.clone());
        if let Some(refusal) = state.status_refusals.pop_front() {
            return Err(refusal);
        }
        state.statuses_taken.push(request);
        Ok(Response::new(Object::default()))
    }

    async fn confirm_pod_deletion(
        &self,
        request: Request<ConfirmPodDeletionRequest>,
    ) -> Result<Response<Object>, Status> {
        let request = request.into_inner();
        self.lock().deletions_confirmed.push(request);
        Ok(Response::new(Object::default()))
    }

    async fn renew_certificate(
        &self,
        _request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        Err(not_scripted("RenewCertificate"))
    }

    async fn record_events(
        &self,
        request: Request<RecordEventsRequest>,
    ) -> Result<Response<RecordEventsResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        state.event_attempts += 1;
        if let Some(refusal) = state.event_refusals.pop_front() {
            return Err(refusal);
        }
        let recorded = u32::try_from(request.events.len()).unwrap_or(u32::MAX);
        state.events_taken.push(request);
        Ok(Response::new(RecordEventsResponse {
            recorded,
            refused: 0,
        }))
    }
}

#[tonic::async_trait]
impl Api for FakeService {
    async fn create(&self, _request: Request<CreateRequest>) -> Result<Response<Object>, Status> {
        Err(not_scripted("Create"))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        state.get_requests.push(request.clone());
        if state.failing_gets > 0 {
            state.failing_gets -= 1;
            return Err(Status::unavailable("scripted: this master cannot read now"));
        }
        let wanted = (request.namespace.as_str(), request.name.as_str());
        let found = state
            .objects
            .get(&request.kind)
            .and_then(|objects| objects.iter().find(|o| namespace_and_name(o) == wanted));
        match found {
            Some(object) => Ok(Response::new(object.clone())),
            None => {
                let message = format!("{} {:?} not found", request.kind, request.name);
                Err(Status::not_found(message))
            }
        }
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let kind = request.into_inner().kind;
        let mut state = self.lock();
        state.list_calls.push((kind.clone(), Instant::now()));
        if state.failing_lists > 0 {
            state.failing_lists -= 1;
            return Err(Status::unavailable("scripted: this master cannot list now"));
        }
        Ok(Response::new(ListResponse {
            items: state.objects.get(&kind).cloned().unwrap_or_default(),
            revision: state.revision,
        }))
    }

    async fn update(&self, _request: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        Err(not_scripted("Update"))
    }

    async fn update_status(
        &self,
        _request: Request<UpdateRequest>,
    ) -> Result<Response<Object>, Status> {
        Err(not_scripted("UpdateStatus"))
    }

    async fn delete(&self, _request: Request<DeleteRequest>) -> Result<Response<Object>, Status> {
        Err(not_scripted("Delete"))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.lock();
        let request = request.into_inner();
        state.watches.push((request.kind.clone(), tx));
        state.watch_requests.push(request);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PodLogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn pod_logs(
        &self,
        _request: Request<PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        Err(not_scripted("PodLogs"))
    }

    async fn join_cluster(
        &self,
        _request: Request<JoinRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        Err(not_scripted("JoinCluster"))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let members = self
            .lock()
            .members
            .iter()
            .map(|addr| Member {
                api_addr: addr.clone(),
                ..Member::default()
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            members,
            ..ClusterStatusResponse::default()
        }))
    }

    async fn request_token(
        &self,
        request: Request<RequestTokenRequest>,
    ) -> Result<Response<RequestTokenResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        state.token_requests.push(request.clone());
        if let Some(refusal) = state.token_refusals.pop_front() {
            return Err(refusal);
        }
        let lifetime = request.expiration_seconds.unwrap_or(3600);
        Ok(Response::new(RequestTokenResponse {
            token: format!("token-{}", state.token_requests.len()),
            audiences: request.audiences,
            expiration_seconds: lifetime,
            issued_at_unix: 1000,
            expires_at_unix: 1000 + lifetime,
        }))
    }
}

/// A Node named `name`, as an agent registers it.
pub(crate) fn node(name: &str) -> v1::Node {
    v1::Node {
        metadata: Some(v1::ObjectMeta {
            name: name.to_owned(),
            ..v1::ObjectMeta::default()
        }),
        ..v1::Node::default()
    }
}

/// The namespace and name of a Pod, Secret or generic object (a Service
/// among them).
fn namespace_and_name(object: &Object) -> (&str, &str) {
    use skiff_proto::api::object::Kind as Body;
    let meta = match &object.kind {
        Some(Body::Pod(p)) => p.metadata.as_ref(),
        Some(Body::Secret(s)) => s.metadata.as_ref(),
        Some(Body::Generic(g)) => g.metadata.as_ref(),
        _ => None,
    };
    meta.map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()))
}

/// A Service object named `namespace`/`name` with `cluster_ip`, and
/// nothing else, as a master stores it (a document).
pub(crate) fn service_object(namespace: &str, name: &str, cluster_ip: &str) -> Object {
    let meta = v1::ObjectMeta {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        ..v1::ObjectMeta::default()
    };
    let spec = skiff_objects::services::ServiceSpec {
        cluster_ip: Some(cluster_ip.to_owned()),
        ..Default::default()
    };
    skiff_objects::services::object(meta, spec, None)
}

pub(crate) fn name_of(object: &Object) -> String {
    use skiff_objects::ObjectExt;
    object.meta().name.clone()
}
