//! The public gRPC API (`skiff.api.v1.Api`): Create, Get, List, Update,
//! UpdateStatus, Delete and Watch for every kind, plus cluster membership;
//! and the operator's `skiff.api.v1.Datastore` ([`datastore`]).
//!
//! Writes and linearizable reads are served by the leader. A follower
//! forwards them to the leader once (marking the request so it is never
//! forwarded twice) and relays the answer. Watches and `serializable` reads
//! are served from the local replica.

pub mod authz;
pub mod datastore;
pub mod error;
pub mod event_stream;
pub mod logs;
pub mod node_pods;
pub mod nodes;
pub mod routing;
pub mod transport;
mod watch;

use std::time::Duration;

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::api_server::{Api, ApiServer};
use skiff_proto::api::{
    ClusterStatusRequest, ClusterStatusResponse, CreateRequest, DeleteRequest, GetRequest,
    JoinRequest, JoinResponse, ListRequest, ListResponse, LogChunk, Member, Object, PodLogsRequest,
    UpdateRequest, WatchRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use error::ApiError;
use transport::ClientTransport;

use crate::cluster::{Cluster, ClusterError};
use crate::objects::deletion::{DeleteOptions, Propagation};
use crate::objects::Kind;
use crate::store::MemberNode;
use crate::writer::{namespace_for, ObjectWriter};
use routing::LeaderRouter;

/// Largest API request a master accepts.
pub const MAX_API_REQUEST: usize = 4 * 1024 * 1024;
/// Largest API response (a List of many objects is the big one).
pub const MAX_API_RESPONSE: usize = 64 * 1024 * 1024;

/// How long a linearizable read may wait for the leader to confirm its
/// leadership when the client gave no deadline (or a longer one).
pub const READ_CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// How long a linearizable read may spend confirming leadership: nine
/// tenths of the client's `grpc-timeout` (leaving time for the answer),
/// at most [`READ_CONFIRM_WITHIN`].
fn read_deadline(metadata: &tonic::metadata::MetadataMap) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| (t * 9 / 10).min(READ_CONFIRM_WITHIN))
        .unwrap_or(READ_CONFIRM_WITHIN)
}

/// gRPC's `grpc-timeout` header: up to eight digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Serves the API for one master.
pub struct ApiService {
    cluster: Cluster,
    writer: ObjectWriter,
    router: LeaderRouter,
    /// How this master dials other masters and agents.
    transport: ClientTransport,
    /// The addresses this master advertises.
    advertised: MemberNode,
    shutdown: CancellationToken,
}

impl ApiService {
    pub fn new(
        writer: ObjectWriter,
        transport: ClientTransport,
        advertised: MemberNode,
        shutdown: CancellationToken,
    ) -> ApiService {
        let cluster = writer.cluster().clone();
        ApiService {
            writer,
            router: LeaderRouter::new(cluster.clone(), transport.clone()),
            transport,
            cluster,
            advertised,
            shutdown,
        }
    }

    /// The tonic service with message limits applied.
    pub fn into_server(self) -> ApiServer<ApiService> {
        ApiService::shared_server(std::sync::Arc::new(self))
    }

    /// The tonic service of a service the REST API shares.
    pub fn shared_server(api: std::sync::Arc<ApiService>) -> ApiServer<ApiService> {
        ApiServer::from_arc(api)
            .max_decoding_message_size(MAX_API_REQUEST)
            .max_encoding_message_size(MAX_API_RESPONSE)
    }

    async fn create_local(&self, request: CreateRequest) -> Result<Object, ApiError> {
        let object = request
            .object
            .ok_or_else(|| ApiError::Invalid("`object` is required".to_owned()))?;
        Ok(self.writer.create(object).await?)
    }

    async fn update_local(
        &self,
        request: UpdateRequest,
        status_only: bool,
    ) -> Result<Object, ApiError> {
        let object = request
            .object
            .ok_or_else(|| ApiError::Invalid("`object` is required".to_owned()))?;
        Ok(if status_only {
            self.writer.update_status(object).await?
        } else {
            self.writer.update(object).await?
        })
    }

    async fn delete_local(&self, request: DeleteRequest) -> Result<Object, ApiError> {
        let kind = Kind::from_name(&request.kind)?;
        let propagation = Propagation::parse(&request.propagation_policy)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let options = DeleteOptions {
            resource_version: request.resource_version,
            uid: request.uid,
            propagation,
            grace_period_seconds: request.grace_period_seconds,
        };
        let (namespace, name) = (&request.namespace, &request.name);
        let deleted = self.writer.delete_with(kind, namespace, name, options);
        Ok(deleted.await?)
    }

    async fn get_local(&self, request: GetRequest, within: Duration) -> Result<Object, ApiError> {
        let kind = Kind::from_name(&request.kind)?;
        if !request.serializable {
            self.cluster.linearize(within).await?;
        }
        let namespace = namespace_for(kind, &request.namespace);
        self.cluster
            .store
            .get(kind, &namespace, &request.name)?
            .ok_or_else(|| {
                ClusterError::Refused(crate::store::WriteError::NotFound {
                    kind,
                    namespace,
                    name: request.name,
                })
                .into()
            })
    }

    async fn list_local(
        &self,
        request: ListRequest,
        within: Duration,
    ) -> Result<ListResponse, ApiError> {
        let kind = Kind::from_name(&request.kind)?;
        if !request.serializable {
            self.cluster.linearize(within).await?;
        }
        let namespace = (kind.namespaced() && !request.namespace.is_empty())
            .then_some(request.namespace.as_str());
        let (items, revision) = self.cluster.store.list(kind, namespace)?;
        Ok(ListResponse { items, revision })
    }

    async fn join_local(&self, request: JoinRequest) -> Result<JoinResponse, ApiError> {
        if request.node_id == 0 || request.raft_addr.is_empty() || request.api_addr.is_empty() {
            return Err(ApiError::Invalid(
                "join needs node_id, raft_addr and api_addr".to_owned(),
            ));
        }
        let node = MemberNode {
            raft_addr: request.raft_addr,
            api_addr: request.api_addr,
        };
        self.cluster.add_member(request.node_id, node).await?;
        Ok(JoinResponse {
            members: self.members(),
        })
    }

    /// Get, List or Watch by the caller of `request`.
    fn authorize_read<T>(
        &self,
        request: &Request<T>,
        kind: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let identity = authz::identity(request)?;
        // An unknown kind is refused by the call itself, naming the kind.
        match Kind::from_name(kind) {
            Ok(kind) => authz::may_read(&self.cluster.store, &identity, kind, namespace, name),
            Err(_) => Ok(()),
        }
    }

    /// Update or UpdateStatus by the caller of `request`.
    fn authorize_update(
        &self,
        request: &Request<UpdateRequest>,
        status_only: bool,
    ) -> Result<(), Status> {
        use crate::objects::ObjectExt;
        let identity = authz::identity(request)?;
        if identity.is_privileged() {
            return Ok(());
        }
        let Some(object) = request.get_ref().object.as_ref() else {
            return Ok(()); // refused as invalid by the call itself
        };
        let Ok(kind) = object.kind() else {
            return Ok(());
        };
        let meta = object.meta();
        authz::may_update(
            &self.cluster.store,
            &identity,
            object,
            kind,
            &meta.namespace,
            &meta.name,
            status_only,
        )
    }

    fn members(&self) -> Vec<Member> {
        self.cluster
            .members()
            .into_iter()
            .map(|(id, node, voter)| Member {
                node_id: id,
                raft_addr: node.raft_addr,
                api_addr: node.api_addr,
                voter,
            })
            .collect()
    }
}

type WatchStream = event_stream::EventStream;

fn api_client(channel: Channel) -> ApiClient<Channel> {
    ApiClient::new(channel)
        .max_decoding_message_size(MAX_API_RESPONSE)
        .max_encoding_message_size(MAX_API_REQUEST)
}

#[tonic::async_trait]
impl Api for ApiService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<Object>, Status> {
        authz::privileged(&authz::identity(&request)?, "create objects")?;
        self.router
            .on_leader(
                request,
                |r| self.create_local(r),
                |ch, r| async move { api_client(ch).create(r).await },
            )
            .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let r = request.get_ref();
        self.authorize_read(&request, &r.kind, &r.namespace, Some(&r.name))?;
        let within = read_deadline(request.metadata());
        self.router
            .here_or_on_leader(
                request.get_ref().serializable,
                request,
                |r| self.get_local(r, within),
                |ch, r| async move { api_client(ch).get(r).await },
            )
            .await
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = request.get_ref();
        self.authorize_read(&request, &r.kind, &r.namespace, None)?;
        let within = read_deadline(request.metadata());
        self.router
            .here_or_on_leader(
                request.get_ref().serializable,
                request,
                |r| self.list_local(r, within),
                |ch, r| async move { api_client(ch).list(r).await },
            )
            .await
    }

    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        self.authorize_update(&request, false)?;
        self.router
            .on_leader(
                request,
                |r| self.update_local(r, false),
                |ch, r| async move { api_client(ch).update(r).await },
            )
            .await
    }

    async fn update_status(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<Object>, Status> {
        self.authorize_update(&request, true)?;
        self.router
            .on_leader(
                request,
                |r| self.update_local(r, true),
                |ch, r| async move { api_client(ch).update_status(r).await },
            )
            .await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<Object>, Status> {
        authz::privileged(&authz::identity(&request)?, "delete objects")?;
        self.router
            .on_leader(
                request,
                |r| self.delete_local(r),
                |ch, r| async move { api_client(ch).delete(r).await },
            )
            .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.get_ref();
        self.authorize_read(&request, &r.kind, &r.namespace, None)?;
        let request = request.into_inner();
        let kind = Kind::from_name(&request.kind).map_err(ApiError::from)?;
        let namespace =
            (kind.namespaced() && !request.namespace.is_empty()).then(|| request.namespace.clone());
        let stream = watch::start(
            self.cluster.store.clone(),
            kind,
            namespace,
            request.from_revision,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }

    type PodLogsStream = tokio_stream::wrappers::ReceiverStream<Result<LogChunk, Status>>;

    async fn pod_logs(
        &self,
        request: Request<PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        authz::privileged(&authz::identity(&request)?, "read container logs")?;
        let request = request.into_inner();
        let (node, address) = logs::agent_address(&self.cluster.store, &request)?;
        let stream = logs::relay(&self.transport, &node, address, request).await?;
        Ok(Response::new(stream))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "add cluster members")?;
        self.router
            .on_leader(
                request,
                |r| self.join_local(r),
                |ch, r| async move { api_client(ch).join_cluster(r).await },
            )
            .await
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let metrics = self.cluster.raft.metrics().borrow().clone();
        let leader = self.cluster.leader();
        Ok(Response::new(ClusterStatusResponse {
            node_id: self.cluster.id,
            leader_id: leader.as_ref().map(|(id, _)| *id).unwrap_or_default(),
            has_leader: leader.is_some(),
            leader_api_addr: leader.map(|(_, n)| n.api_addr).unwrap_or_default(),
            term: metrics.current_term,
            last_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or_default(),
            revision: self.cluster.store.revision(),
            members: self.members(),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or_default(),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or_default(),
            advertise_api: self.advertised.api_addr.clone(),
            advertise_raft: self.advertised.raft_addr.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn a_read_confirms_within_nine_tenths_of_the_clients_deadline_and_at_most_ten_seconds() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(read_deadline(&metadata), READ_CONFIRM_WITHIN);
        metadata.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(read_deadline(&metadata), Duration::from_millis(1800));
        metadata.insert("grpc-timeout", "30S".parse().unwrap());
        assert_eq!(read_deadline(&metadata), READ_CONFIRM_WITHIN);
        metadata.insert("grpc-timeout", "junk".parse().unwrap());
        assert_eq!(read_deadline(&metadata), READ_CONFIRM_WITHIN);
    }
}
