//! The agent protocol, master side (`skiff.node.v1.Nodes`): registration
//! (which also tells the node the cluster's ranges and DNS address, so
//! they are set once, on the masters), heartbeats kept in the leader's
//! memory, the watch of a node's pods, pod status reports, Events about
//! the node and its pods (recorded in the leader's memory as the
//! kubelet's), the node's confirmation that a pod being deleted is torn
//! down (the kubelet's final `DELETE` with `gracePeriodSeconds=0` and a UID
//! precondition, which removes it), and certificate renewal. A node may act only for itself
//! (see `authz`). Now and then a heartbeat carries the node's resource
//! usage reading, kept in the leader's memory for the metrics API
//! ([`ResourceMetrics`]).

use std::sync::Arc;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object, WatchEvent};
use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::nodes_server::{Nodes, NodesServer};
use skiff_proto::node::{
    ClusterNetwork, ConfirmPodDeletionRequest, Heartbeat, HeartbeatSummary, NodeEvent,
    RecordEventsRequest, RecordEventsResponse, RegisterRequest, RegisterResponse,
    RenewCertificateRequest, RenewCertificateResponse, UpdatePodStatusRequest, WatchPodsRequest,
};
use skiff_proto::v1;
use skiff_security::{ClusterCa, Identity};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::authz::{self, Access, Verb};
use super::node_pods::NodePodHub;
use super::routing::LeaderRouter;
use super::transport::ClientTransport;
use super::{ApiError, MAX_API_REQUEST, MAX_API_RESPONSE};
use crate::cluster::{Cluster, ClusterError};
use crate::events::{
    EventSource, EventStore, EventType as KubeEventType, InvolvedObject, NewEvent,
};
use crate::node_lifecycle::HeartbeatTable;
use crate::resource_metrics::{NodeReport, ResourceMetrics};
use crate::store::WriteError;
use crate::writer::ObjectWriter;
use skiff_objects::deletion::{is_being_deleted, DeleteOptions};
use skiff_objects::legacy_bodies;
use skiff_objects::now_rfc3339;
use skiff_objects::{IntoObject, Kind, ObjectExt};

pub use skiff_proto::LEADER_METADATA;

/// Most Events one `RecordEvents` call may carry; the rest are refused.
pub const MAX_EVENTS_PER_CALL: usize = 256;
/// The component agents' Events are recorded as.
const KUBELET: &str = "kubelet";

/// Serves the agent protocol for one master.
pub struct NodeService {
    cluster: Cluster,
    writer: ObjectWriter,
    router: LeaderRouter,
    heartbeats: Arc<HeartbeatTable>,
    hub: Arc<NodePodHub>,
    /// Signs renewed node certificates.
    ca: Arc<ClusterCa>,
    /// The cluster's ranges and DNS address, told to every node that
    /// registers.
    network: ClusterNetwork,
    /// The Events, in use while this master leads.
    events: Arc<EventStore>,
    /// Where the readings heartbeats carry go (a table nobody reads
    /// unless one is given with [`NodeService::with_resource_metrics`]).
    resource_metrics: ResourceMetrics,
    shutdown: CancellationToken,
}

impl NodeService {
    pub fn new(
        writer: ObjectWriter,
        transport: ClientTransport,
        heartbeats: Arc<HeartbeatTable>,
        ca: Arc<ClusterCa>,
        network: ClusterNetwork,
        events: Arc<EventStore>,
        shutdown: CancellationToken,
    ) -> NodeService {
        let cluster = writer.cluster().clone();
        NodeService {
            writer,
            router: LeaderRouter::new(cluster.clone(), transport),
            hub: NodePodHub::spawn(cluster.store.clone(), shutdown.clone()),
            cluster,
            heartbeats,
            ca,
            network,
            events,
            resource_metrics: ResourceMetrics::default(),
            shutdown,
        }
    }

    /// The same service, keeping the resource usage readings heartbeats
    /// carry in `resource_metrics`.
    pub fn with_resource_metrics(self, resource_metrics: ResourceMetrics) -> NodeService {
        NodeService {
            resource_metrics,
            ..self
        }
    }

    pub fn into_server(self) -> NodesServer<NodeService> {
        NodesServer::new(self)
            .max_decoding_message_size(MAX_API_REQUEST)
            .max_encoding_message_size(MAX_API_RESPONSE)
    }

    fn not_leader(&self) -> Status {
        let mut status =
            Status::unavailable("this master is not the leader; send heartbeats to the leader");
        if let Some((_, leader)) = self.cluster.leader() {
            if let Ok(v) = leader.api_addr.parse() {
                status.metadata_mut().insert(LEADER_METADATA, v);
            }
        }
        status
    }

    /// Decides with `check` on this master's replica; when it refuses, the
    /// replica may lag behind what the node saw (this master just
    /// restarted, or the pod was bound a moment ago and the node heard of
    /// it from another master), so it catches up with the leader (a read
    /// index) and decides again. Nothing a node is refused for good is
    /// refused because of a lagging replica.
    async fn authorize_caught_up(
        &self,
        check: impl Fn() -> Result<(), Status>,
    ) -> Result<(), Status> {
        if check().is_ok() {
            return Ok(());
        }
        self.cluster
            .linearize(super::READ_CONFIRM_WITHIN)
            .await
            .map_err(ApiError::from)?;
        check()
    }

    async fn register_local(&self, request: RegisterRequest) -> Result<RegisterResponse, ApiError> {
        let mut node = request
            .node
            .ok_or_else(|| ApiError::Invalid("`node` is required".to_owned()))?;
        let meta = node.metadata.get_or_insert_with(Default::default);
        let name = meta.name.clone();
        let existing = self.cluster.store.get(Kind::Node, "", &name)?;
        let now = now_rfc3339();
        let status = node.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.r#type != "Ready");
        status.conditions.push(v1::NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time: now.clone(),
            last_transition_time: now,
            reason: "KubeletReady".into(),
            message: "skiff agent is posting ready status".into(),
        });
        let stored = match existing.and_then(|o| match o.kind {
            Some(Body::Node(n)) => Some(n),
            _ => None,
        }) {
            None => self.writer.create(node.into_object()).await?,
            Some(old) => {
                // The cluster owns the spec; the agent owns labels and status.
                let mut merged = old.clone();
                let merged_meta = merged.metadata.get_or_insert_with(Default::default);
                merged_meta.resource_version.clear();
                let incoming = node.metadata.clone().unwrap_or_default();
                merged_meta.labels.extend(incoming.labels);
                merged_meta.annotations.extend(incoming.annotations);
                let updated = self.writer.update(merged.into_object()).await?;
                let mut with_status = match updated.kind {
                    Some(Body::Node(n)) => n,
                    _ => old,
                };
                with_status.status = node.status;
                if let Some(m) = with_status.metadata.as_mut() {
                    m.resource_version.clear();
                }
                self.writer.update_status(with_status.into_object()).await?
            }
        };
        self.heartbeats.record(&name);
        match stored.kind {
            Some(Body::Node(n)) => Ok(RegisterResponse {
                node: Some(n),
                network: Some(self.network.clone()),
            }),
            _ => Err(ApiError::Invalid("stored object is not a Node".to_owned())),
        }
    }

    async fn update_pod_status_local(
        &self,
        request: UpdatePodStatusRequest,
    ) -> Result<Object, ApiError> {
        let current = self
            .cluster
            .store
            .get(Kind::Pod, &request.namespace, &request.name)?
            .ok_or_else(|| {
                ApiError::Cluster(ClusterError::Refused(WriteError::NotFound {
                    kind: Kind::Pod,
                    namespace: request.namespace.clone(),
                    name: request.name.clone(),
                }))
            })?;
        if !skiff_objects::pods::is_pod(&current) {
            return Err(ApiError::Invalid("not a pod".to_owned()));
        }
        if !request.uid.is_empty() && request.uid != current.meta().uid {
            return Err(ApiError::Cluster(ClusterError::Refused(
                WriteError::NotFound {
                    kind: Kind::Pod,
                    namespace: request.namespace.clone(),
                    name: request.name.clone(),
                },
            )));
        }
        // The agent reports the status in the protobuf model (whose JSON
        // is Kubernetes'); the rest of the pod stays as stored.
        let mut pod = skiff_objects::pods::with_reported_status(&current, request.status);
        if let Ok(meta) = pod.meta_mut() {
            meta.resource_version.clear();
        }
        Ok(self.writer.update_status(pod).await?)
    }

    /// Removes a pod being deleted, once its node has torn it down: a delete
    /// with no grace period, only of the pod with the node's uid. Refused
    /// (FAILED_PRECONDITION) for a pod that is not being deleted: a node
    /// finishes deletions, it does not start them.
    async fn confirm_pod_deletion_local(
        &self,
        request: ConfirmPodDeletionRequest,
    ) -> Result<Object, ApiError> {
        if request.uid.is_empty() {
            return Err(ApiError::Invalid(
                "uid is required: a confirmation names the pod it tore down".to_owned(),
            ));
        }
        let namespace = &crate::writer::namespace_for(Kind::Pod, &request.namespace);
        let name = &request.name;
        let not_found = || {
            ApiError::Cluster(ClusterError::Refused(WriteError::NotFound {
                kind: Kind::Pod,
                namespace: namespace.clone(),
                name: name.clone(),
            }))
        };
        let mut current = self.cluster.store.get(Kind::Pod, namespace, name)?;
        let marked = |pod: &Option<Object>| {
            pod.as_ref()
                .is_some_and(|p| p.meta().uid != request.uid || is_being_deleted(p.meta()))
        };
        if !marked(&current) {
            // The node saw the mark on some replica: this one (a leader
            // that has not applied all its predecessor's entries yet) may
            // lag behind it.
            self.cluster.linearize(super::READ_CONFIRM_WITHIN).await?;
            current = self.cluster.store.get(Kind::Pod, namespace, name)?;
        }
        let current = current.ok_or_else(not_found)?;
        let meta = current.meta();
        if meta.uid == request.uid && !is_being_deleted(meta) {
            return Err(ApiError::NotBeingDeleted {
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
        // The store checks the uid again, with the delete itself.
        let options = DeleteOptions {
            uid: request.uid.clone(),
            ..DeleteOptions::force()
        };
        let deleted = self.writer.delete_with(Kind::Pod, namespace, name, options);
        Ok(deleted.await?)
    }
}

impl NodeService {
    /// Records the Events of `request` (already authorized) as the
    /// kubelet of its node.
    async fn record_events_local(
        &self,
        request: RecordEventsRequest,
    ) -> Result<RecordEventsResponse, ApiError> {
        let mut recorded = 0;
        for event in request.events {
            self.events
                .record_event(kubelet_event(&request.node_name, event));
            recorded += 1;
        }
        Ok(RecordEventsResponse {
            recorded,
            refused: 0,
        })
    }
}

/// An agent's Event as the kubelet of `node` reports it.
fn kubelet_event(node: &str, event: NodeEvent) -> NewEvent {
    let is_pod = event.kind == "Pod";
    NewEvent {
        involved: InvolvedObject {
            api_version: "v1".to_owned(),
            kind: event.kind,
            // A Node has no namespace, and the kubelet names it by name.
            namespace: if is_pod {
                event.namespace
            } else {
                String::new()
            },
            uid: if is_pod || !event.uid.is_empty() {
                event.uid
            } else {
                event.name.clone()
            },
            name: event.name,
            resource_version: String::new(),
            field_path: event.field_path,
        },
        event_type: KubeEventType::parse(&event.r#type).unwrap_or(KubeEventType::Normal),
        reason: event.reason,
        message: event.message,
        source: EventSource {
            component: KUBELET.to_owned(),
            host: node.to_owned(),
        },
        count: event.count.max(1),
    }
}

fn nodes_client(channel: tonic::transport::Channel) -> NodesClient<tonic::transport::Channel> {
    NodesClient::new(channel)
        .max_decoding_message_size(MAX_API_RESPONSE)
        .max_encoding_message_size(MAX_API_REQUEST)
}

type PodStream = super::event_stream::EventStream;

#[tonic::async_trait]
impl Nodes for NodeService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let name = request
            .get_ref()
            .node
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        authz::is_self(&authz::identity(&request)?, &name, "register")?;
        self.router
            .on_leader(
                request,
                |r| self.register_local(r),
                |ch, r| async move { nodes_client(ch).register(r).await },
            )
            .await
    }

    async fn heartbeats(
        &self,
        request: Request<Streaming<Heartbeat>>,
    ) -> Result<Response<HeartbeatSummary>, Status> {
        let identity = authz::identity(&request)?;
        if !self.cluster.is_leader() {
            return Err(self.not_leader());
        }
        let mut stream = request.into_inner();
        let mut received = 0;
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(beat)) => {
                    if !self.cluster.is_leader() {
                        return Err(self.not_leader());
                    }
                    authz::is_self(&identity, &beat.node_name, "send heartbeats")?;
                    self.heartbeats.record(&beat.node_name);
                    if let Some(usage) = &beat.usage {
                        self.resource_metrics
                            .record(&beat.node_name, NodeReport::from(usage));
                    }
                    received += 1;
                }
                Some(Err(status)) => return Err(status),
                None => break,
            }
        }
        Ok(Response::new(HeartbeatSummary { received }))
    }

    type WatchPodsStream = PodStream;

    async fn watch_pods(
        &self,
        request: Request<WatchPodsRequest>,
    ) -> Result<Response<PodStream>, Status> {
        authz::is_self(
            &authz::identity(&request)?,
            &request.get_ref().node_name,
            "watch pods",
        )?;
        // An agent of a release before pods were documents names an
        // earlier data format (or none): it gets them in the protobuf model.
        let format = super::reader_format(request.metadata());
        let converts = legacy_bodies::reads_differently("Pod", format);
        let node = request.into_inner().node_name;
        if node.is_empty() {
            return Err(Status::invalid_argument("node_name is required"));
        }
        // Subscribe first, then list: nothing falls in between, and events
        // the list already reflects are skipped by revision.
        let mut changes = self.hub.subscribe(&node);
        let (pods, revision) = self.cluster.store.cache().pods_on_node_at(&node);
        let (tx, rx) = super::event_stream::channel(256);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Each event is boxed as it is queued, in a statement of its
            // own: this task (one per node) keeps no event across a wait.
            for pod in pods {
                let sent = tx.send(Ok(WatchEvent {
                    r#type: EventType::Added as i32,
                    revision,
                    object: Some(legacy_bodies::for_reader(Object::clone(&pod), format)),
                    previous: None,
                    ..Default::default()
                }));
                if sent.await.is_err() {
                    return;
                }
            }
            let sent = tx.send(Ok(WatchEvent {
                r#type: EventType::Bookmark as i32,
                revision,
                object: None,
                previous: None,
                ..Default::default()
            }));
            if sent.await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    next = changes.recv() => next,
                };
                let Some(event) = next else {
                    let _ = tx
                        .send(Err(Status::aborted(
                            "this watch fell behind; list the node's pods again",
                        )))
                        .await;
                    return;
                };
                if event.revision <= revision {
                    continue;
                }
                // The store's bytes (its own encoding of the pod), shared:
                // not decoded and encoded again, unless the agent reads
                // pods in the protobuf model.
                let object = if converts {
                    legacy_bodies::encoded_for_reader(&event.object, format)
                        .map_or_else(|| event.object.clone(), Into::into)
                } else {
                    event.object.clone()
                };
                let message = super::event_stream::Encoded {
                    event_type: event.event_type,
                    revision: event.revision,
                    object,
                    previous: None,
                };
                if tx.send_encoded(message).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(rx))
    }

    async fn update_pod_status(
        &self,
        request: Request<UpdatePodStatusRequest>,
    ) -> Result<Response<Object>, Status> {
        let identity = authz::identity(&request)?;
        let r = request.get_ref();
        let pod = Access::new(Verb::Update, Kind::Pod, &r.namespace, Some(&r.name));
        let status = pod.with_subresource("status");
        let store = &self.cluster.store;
        self.authorize_caught_up(|| authz::authorize(store, &identity, &status))
            .await?;
        self.router
            .on_leader(
                request,
                |r| self.update_pod_status_local(r),
                |ch, r| async move { nodes_client(ch).update_pod_status(r).await },
            )
            .await
    }

    async fn record_events(
        &self,
        mut request: Request<RecordEventsRequest>,
    ) -> Result<Response<RecordEventsResponse>, Status> {
        let identity = authz::identity(&request)?;
        let node = request.get_ref().node_name.clone();
        authz::is_self(&identity, &node, "record events")?;
        let sent = request.get_ref().events.len();
        let events = &mut request.get_mut().events;
        events.truncate(MAX_EVENTS_PER_CALL);
        if let Identity::Node(me) = &identity {
            // Checked against this master's replica; a master relaying the
            // call to the leader is trusted with what it checked.
            events.retain(|e| {
                let store = &self.cluster.store;
                authz::may_record_event(store, me, &e.kind, &e.namespace, &e.name)
            });
        }
        let refused = u32::try_from(sent - events.len()).unwrap_or(u32::MAX);
        if refused > 0 {
            tracing::debug!(%node, refused, "refused Events about objects that are not the node's");
        }
        let mut response = self
            .router
            .on_leader(
                request,
                |r| self.record_events_local(r),
                |ch, r| async move { nodes_client(ch).record_events(r).await },
            )
            .await?;
        response.get_mut().refused += refused;
        Ok(response)
    }

    async fn confirm_pod_deletion(
        &self,
        request: Request<ConfirmPodDeletionRequest>,
    ) -> Result<Response<Object>, Status> {
        let identity = authz::identity(&request)?;
        let r = request.get_ref();
        let store = &self.cluster.store;
        let (namespace, name) = (&r.namespace, &r.name);
        self.authorize_caught_up(|| {
            authz::may_confirm_pod_deletion(store, &identity, namespace, name)
        })
        .await?;
        self.router
            .on_leader(
                request,
                |r| self.confirm_pod_deletion_local(r),
                |ch, r| async move { nodes_client(ch).confirm_pod_deletion(r).await },
            )
            .await
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let identity = authz::identity(&request)?;
        let Identity::Node(node) = &identity else {
            return Err(authz::denied(&identity, "renew a node certificate"));
        };
        let issued = self
            .ca
            .sign_request(
                &request.get_ref().signing_request,
                &identity,
                &[skiff_security::node_server_name(node)],
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%node, "renewed a node certificate");
        Ok(Response::new(RenewCertificateResponse {
            cert_pem: issued.cert_pem,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(kind: &str, namespace: &str, name: &str, uid: &str) -> NodeEvent {
        NodeEvent {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            field_path: "spec.containers{web}".into(),
            r#type: "Warning".into(),
            reason: "BackOff".into(),
            message: "Back-off restarting failed container".into(),
            count: 0,
        }
    }

    #[test]
    fn an_agents_event_is_recorded_as_its_nodes_kubelet() {
        let pod = kubelet_event("pi-1", sent("Pod", "shop", "web", "u-1"));
        assert_eq!(pod.source.component, "kubelet");
        assert_eq!(pod.source.host, "pi-1");
        assert_eq!(pod.involved.namespace, "shop");
        assert_eq!(pod.involved.uid, "u-1");
        assert_eq!(pod.involved.api_version, "v1");
        assert_eq!(pod.involved.field_path, "spec.containers{web}");
        assert_eq!(pod.event_type, KubeEventType::Warning);
        assert_eq!(pod.count, 1, "at least once");
        // The kubelet names its Node by name, in no namespace.
        let node = kubelet_event("pi-1", sent("Node", "shop", "pi-1", ""));
        assert_eq!(node.involved.namespace, "");
        assert_eq!(node.involved.uid, "pi-1");
        let mut odd = sent("Pod", "shop", "web", "u-1");
        odd.r#type = "Strange".into();
        assert_eq!(kubelet_event("pi-1", odd).event_type, KubeEventType::Normal);
    }
}
