//! The public gRPC API (`skiff.api.v1.Api`): Create, Get, List, Update,
//! UpdateStatus, Delete and Watch for every kind, plus cluster membership;
//! and the operator's `skiff.api.v1.Datastore` ([`datastore`]); exec and
//! port-forward sessions relayed to agents (`skiff.api.v1.PodSessions`,
//! [`pod_sessions`]).
//!
//! Writes and linearizable reads are served by the leader. A follower
//! forwards them to the leader once (marking the request so it is never
//! forwarded twice) and relays the answer. Watches and `serializable` reads
//! are served from the local replica. Events are not in the replicated
//! store: every call on them, watches included, is served by the leader
//! from its memory ([`events`]). Nor is the metrics API
//! (`metrics.k8s.io` NodeMetrics and PodMetrics, get and list only): the
//! leader answers it from the readings its heartbeats bring
//! ([`resource_metrics`]). Nor are TokenRequests: a service account token
//! is signed here and answered, never stored ([`token_requests`]).

pub mod authz;
pub mod datastore;
pub mod error;
pub mod event_stream;
mod events;
pub mod logs;
pub mod node_pods;
pub mod nodes;
pub mod pod_sessions;
pub mod rbac;
mod resource_metrics;
pub mod routing;
pub mod token_requests;
pub mod transport;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::api_server::{Api, ApiServer};
use skiff_proto::api::{
    ClusterStatusRequest, ClusterStatusResponse, CreateRequest, DeleteRequest, GetRequest,
    JoinRequest, JoinResponse, ListRequest, ListResponse, LogChunk, Member, Object, PodLogsRequest,
    RequestTokenRequest, RequestTokenResponse, UpdateRequest, WatchRequest,
};
use skiff_security::Identity;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use authz::{Access, Verb};
pub use error::ApiError;
use transport::ClientTransport;

use crate::cluster::{Cluster, ClusterError};
use crate::events::EventStore;
use crate::resource_metrics::ResourceMetrics;
use crate::security::service_account_tokens::TokenAuthority;
use crate::store::MemberNode;
use crate::writer::{namespace_for, ObjectWriter};
use routing::LeaderRouter;
use skiff_objects::deletion::{DeleteOptions, Propagation};
use skiff_objects::{legacy_bodies, Kind, ObjectExt};

/// Largest API request a master accepts.
pub const MAX_API_REQUEST: usize = 4 * 1024 * 1024;
/// Largest API response (a List of many objects is the big one).
pub const MAX_API_RESPONSE: usize = 64 * 1024 * 1024;

/// How long a linearizable read may wait for the leader to confirm its
/// leadership when the client gave no deadline (or a longer one).
pub const READ_CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// How long a list at an exact revision waits for this master to apply
/// it, as kube-apiserver's watch cache waits (3 s) before answering "Too
/// large resource version".
const TOO_NEW_WAIT: Duration = Duration::from_secs(3);

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

/// Whether a List's `selecting` (the objects whose selector selects given
/// labels) is served for `kind`: PodDisruptionBudgets and Services, in one
/// namespace.
fn selecting_kind(kind: Kind, namespace: &str) -> Result<(), ApiError> {
    if !matches!(kind, Kind::PodDisruptionBudget | Kind::Service) {
        return Err(ApiError::Invalid(format!(
            "`selecting` lists PodDisruptionBudgets or Services, not {}",
            kind.name()
        )));
    }
    if namespace.is_empty() {
        return Err(ApiError::Invalid(
            "`selecting` needs a namespace".to_owned(),
        ));
    }
    Ok(())
}

/// A list's objects as the cache shares them, and the revision they were
/// read at.
pub struct SharedList {
    pub items: Vec<std::sync::Arc<Object>>,
    pub revision: u64,
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
    /// The Events, in use while this master leads.
    events: Arc<EventStore>,
    /// The nodes' resource usage readings, in use while this master leads
    /// (heartbeats bring them to the leader).
    resource_metrics: ResourceMetrics,
    /// Signs service account tokens and checks those shown.
    tokens: Arc<TokenAuthority>,
    shutdown: CancellationToken,
}

impl ApiService {
    pub fn new(
        writer: ObjectWriter,
        transport: ClientTransport,
        advertised: MemberNode,
        events: Arc<EventStore>,
        resource_metrics: ResourceMetrics,
        tokens: Arc<TokenAuthority>,
        shutdown: CancellationToken,
    ) -> ApiService {
        let cluster = writer.cluster().clone();
        ApiService {
            writer,
            router: LeaderRouter::new(cluster.clone(), transport.clone()),
            transport,
            cluster,
            advertised,
            events,
            resource_metrics,
            tokens,
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
        if let Some(kind) = object.kind().ok().filter(|k| k.is_metrics()) {
            return Err(read_only(kind));
        }
        if object.kind().is_ok_and(Kind::is_ephemeral) {
            return Ok(self.events.create(object)?);
        }
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
        if let Some(kind) = object.kind().ok().filter(|k| k.is_metrics()) {
            return Err(read_only(kind));
        }
        if object.kind().is_ok_and(Kind::is_ephemeral) {
            if status_only {
                return Err(ApiError::Invalid(
                    "Events have no status; update the Event itself".to_owned(),
                ));
            }
            return Ok(self.events.update(object)?);
        }
        Ok(if status_only {
            self.writer.update_status(object).await?
        } else {
            self.writer.update(object).await?
        })
    }

    async fn delete_local(&self, request: DeleteRequest) -> Result<Object, ApiError> {
        let kind = Kind::from_name(&request.kind)?;
        if kind.is_metrics() {
            return Err(read_only(kind));
        }
        if kind.is_ephemeral() {
            let namespace = namespace_for(kind, &request.namespace);
            let deleted =
                self.events
                    .delete(&namespace, &request.name, &request.resource_version)?;
            return Ok(deleted);
        }
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
        if kind.is_metrics() {
            let namespace = namespace_for(kind, &request.namespace);
            let cache = self.cluster.store.cache();
            let lookup = |k: Kind, ns: &str, n: &str| cache.get(k, ns, n);
            let now = (Instant::now(), SystemTime::now());
            let found = resource_metrics::get(
                &self.resource_metrics,
                &lookup,
                kind,
                &namespace,
                &request.name,
                now,
            );
            return found.ok_or_else(|| {
                ClusterError::Refused(crate::store::WriteError::NotFound {
                    kind,
                    namespace,
                    name: request.name,
                })
                .into()
            });
        }
        if kind.is_ephemeral() {
            let namespace = namespace_for(kind, &request.namespace);
            return Ok(self.events.get(&namespace, &request.name)?);
        }
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

    /// A list served here: the cache's objects as it shares them, not
    /// copied (or the leader's Events).
    async fn list_shared_local(
        &self,
        request: ListRequest,
        within: Duration,
    ) -> Result<SharedList, ApiError> {
        let kind = Kind::from_name(&request.kind)?;
        if kind.is_metrics() {
            let cache = self.cluster.store.cache();
            let lookup = |k: Kind, ns: &str, n: &str| cache.get(k, ns, n);
            let now = (Instant::now(), SystemTime::now());
            let items = resource_metrics::list(
                &self.resource_metrics,
                &lookup,
                kind,
                &request.namespace,
                now,
            );
            return Ok(SharedList {
                items: items.into_iter().map(Arc::new).collect(),
                revision: self.cluster.store.revision(),
            });
        }
        if kind.is_ephemeral() {
            let list = events::list(&self.events, &request.namespace);
            return Ok(SharedList {
                items: list.items.into_iter().map(std::sync::Arc::new).collect(),
                revision: list.revision,
            });
        }
        if request.selecting.is_some() {
            selecting_kind(kind, &request.namespace)?;
        }
        if !request.serializable {
            self.cluster.linearize(within).await?;
        }
        let cache = self.cluster.store.cache();
        if let Some(selecting) = &request.selecting {
            // The revision first: the answer is at least as new as it.
            let revision = cache.revision();
            let (namespace, labels) = (&request.namespace, &selecting.labels);
            let items = match kind {
                Kind::PodDisruptionBudget => cache.budgets_selecting(namespace, labels),
                _ => cache.services_selecting(namespace, labels),
            };
            return Ok(SharedList { items, revision });
        }
        let namespace = (kind.namespaced() && !request.namespace.is_empty())
            .then_some(request.namespace.as_str());
        if request.exact_revision > 0 {
            let revision = request.exact_revision;
            self.caught_up_to(revision, within).await;
            let items = self.cluster.store.list_at(kind, namespace, revision)?;
            return Ok(SharedList { items, revision });
        }
        let (items, revision) = cache.list(kind, namespace);
        Ok(SharedList { items, revision })
    }

    /// Waits until this master has applied `revision`, for at most
    /// [`TOO_NEW_WAIT`] (and `within`), as kube-apiserver's watch cache
    /// waits for a revision it has not seen yet; answers either way.
    async fn caught_up_to(&self, revision: u64, within: Duration) {
        let deadline = Instant::now() + within.min(TOO_NEW_WAIT);
        let store = &self.cluster.store;
        while store.revision() < revision && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// List, as the gRPC call does it (the caller's authorization, the
    /// leader for a linearizable read), answered with the cache's shared
    /// objects when this master serves it: the REST API's lists encode
    /// them without a copy.
    pub async fn list_shared(&self, request: Request<ListRequest>) -> Result<SharedList, Status> {
        let r = request.get_ref();
        self.authorize_call(&request, Verb::List, &r.kind, &r.namespace, None)?;
        let within = read_deadline(request.metadata());
        // Events and the metrics API's readings live on the leader alone.
        let here = r.serializable && !on_leader_alone(&r.kind);
        self.router
            .here_or_on_leader(
                here,
                request,
                |r| self.list_shared_local(r, within),
                |ch, r| async move {
                    let list = api_client(ch).list(r).await?.into_inner();
                    Ok(Response::new(SharedList {
                        items: list.items.into_iter().map(std::sync::Arc::new).collect(),
                        revision: list.revision,
                    }))
                },
            )
            .await
            .map(Response::into_inner)
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

    /// `verb` on objects of `kind` (by name) by the caller of `request`.
    fn authorize_call<T>(
        &self,
        request: &Request<T>,
        verb: Verb,
        kind: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let identity = authz::identity(request)?;
        // An unknown kind is refused by the call itself, naming the kind.
        match Kind::from_name(kind) {
            Ok(kind) => {
                // One object is in the namespace the call reads it from
                // (`default` when none is named); a collection in the one
                // named, or in all.
                let namespace = match name {
                    Some(_) => namespace_for(kind, namespace),
                    None => namespace.to_owned(),
                };
                let access = Access::new(verb, kind, &namespace, name);
                authz::authorize(&self.cluster.store, &identity, &access)
            }
            Err(_) => Ok(()),
        }
    }

    /// Create by the caller of `request`.
    fn authorize_create(&self, request: &Request<CreateRequest>) -> Result<(), Status> {
        use skiff_objects::ObjectExt;
        let identity = authz::identity(request)?;
        // An object without a kind skiff serves is refused by the call.
        let Some(object) = request.get_ref().object.as_ref() else {
            return Ok(());
        };
        let Ok(kind) = object.kind() else {
            return Ok(());
        };
        // Where the writer will put it.
        let namespace = namespace_for(kind, &object.meta().namespace);
        let access = Access::new(Verb::Create, kind, &namespace, None);
        let store = &self.cluster.store;
        authz::authorize(store, &identity, &access)?;
        authz::may_write_rbac(store, &identity, Verb::Create, kind, &namespace, object)
    }

    /// `access` by `identity`, refused with PermissionDenied (and logged)
    /// as every call here is: for the REST API, which authorizes some
    /// requests as a whole, as kube-apiserver does (a PATCH as `patch`, a
    /// collection's DELETE as `deletecollection`, an eviction as `create`
    /// of `pods/eviction`), before the calls they come to.
    pub fn authorize(&self, identity: &Identity, access: &Access<'_>) -> Result<(), Status> {
        authz::authorize(&self.cluster.store, identity, access)
    }

    /// `verb` on `path`, which names no object, by `identity`: refused
    /// with PermissionDenied in kube-apiserver's words (and logged).
    pub fn authorize_path(
        &self,
        identity: &Identity,
        verb: &str,
        path: &str,
    ) -> Result<(), Status> {
        authz::authorize_path(&self.cluster.store, identity, verb, path)
    }

    /// `request`, on a resource skiff has no kind for, by `identity`
    /// (what the REST API's impersonation asks: `impersonate` on `users`,
    /// `groups`, ...): refused with PermissionDenied in kube-apiserver's
    /// words (and logged).
    pub fn authorize_request(
        &self,
        identity: &Identity,
        request: &rbac::ResourceRequest<'_>,
    ) -> Result<(), Status> {
        authz::authorize_request(&self.cluster.store, identity, request)
    }

    /// This master's own identity, as its certificate names it: what it
    /// makes the calls of a REST request it has authorized as a whole as
    /// (an eviction's read of the pod and its PodDisruptionBudgets, the
    /// write of the budget's status and the pod's delete, as
    /// kube-apiserver's eviction storage makes them itself; a
    /// deletecollection's list and deletes). Relayed to the leader, such a
    /// call arrives as this master's there too.
    pub fn own_identity(&self) -> Identity {
        Identity::Master(self.cluster.id.to_string())
    }

    /// May `identity` make `access`? What the REST API's access reviews
    /// answer: the rules every call here is authorized with.
    pub fn review_access(&self, identity: &Identity, access: &Access<'_>) -> authz::Decision {
        authz::decide(&self.cluster.store, identity, access)
    }

    /// May `identity` use `verb` on `path`, which names no object? What a
    /// SelfSubjectAccessReview's `nonResourceAttributes` ask.
    pub fn review_path(&self, identity: &Identity, verb: &str, path: &str) -> authz::Decision {
        authz::decide_path(&self.cluster.store, identity, verb, path)
    }

    /// May the user `user` make `access`? What a SubjectAccessReview
    /// answers, by the same rules.
    pub fn review_access_of(
        &self,
        user: &authz::KubernetesUser,
        access: &Access<'_>,
    ) -> authz::Decision {
        authz::decide_for_user(&self.cluster.store, user, access)
    }

    /// May the user `user` use `verb` on `path`?
    pub fn review_path_of(
        &self,
        user: &authz::KubernetesUser,
        verb: &str,
        path: &str,
    ) -> authz::Decision {
        authz::decide_path_for_user(&self.cluster.store, user, verb, path)
    }

    /// Everything `identity` may do in `namespace`, for the REST API's
    /// rules reviews: the same rules.
    pub fn review_rules(
        &self,
        identity: &Identity,
        namespace: &str,
    ) -> (Vec<authz::ResourceRule>, Vec<authz::NonResourceRule>) {
        authz::rules_for(&self.cluster.store, identity, namespace)
    }

    /// Update or UpdateStatus by the caller of `request`: an `update` of
    /// the part written, or what the REST request it comes from was asked
    /// as (the extension [`authz::RequestedAs`]: a PATCH is a `patch`).
    fn authorize_update(
        &self,
        request: &Request<UpdateRequest>,
        status_only: bool,
    ) -> Result<(), Status> {
        let identity = authz::identity(request)?;
        let requested = request.extensions().get::<authz::RequestedAs>().copied();
        let Some(object) = request.get_ref().object.as_ref() else {
            return Ok(()); // refused as invalid by the call itself
        };
        let Ok(kind) = object.kind() else {
            return Ok(());
        };
        let meta = object.meta();
        let namespace = namespace_for(kind, &meta.namespace);
        let store = &self.cluster.store;
        authz::may_update(
            store,
            &identity,
            object,
            kind,
            &namespace,
            &meta.name,
            status_only,
            requested,
        )?;
        if status_only {
            return Ok(());
        }
        let verb = requested.map_or(Verb::Update, |r| r.verb);
        authz::may_write_rbac(store, &identity, verb, kind, &namespace, object)
    }

    /// A watch of Events: on the leader's store, relayed from a follower
    /// (a stream, so without the deadline of relayed calls).
    async fn watch_events(
        &self,
        request: WatchRequest,
        namespace: Option<String>,
        forwarded: bool,
    ) -> Result<Response<WatchStream>, Status> {
        match self.router.leader_channel(forwarded).await? {
            None => {
                let stream = events::watch(
                    self.events.clone(),
                    namespace,
                    request.from_revision,
                    self.shutdown.clone(),
                )?;
                Ok(Response::new(stream))
            }
            Some(channel) => {
                let mut relayed = Request::new(request);
                relayed.metadata_mut().insert(
                    routing::FORWARDED,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                let stream = api_client(channel).watch(relayed).await?.into_inner();
                Ok(Response::new(Box::pin(stream) as WatchStream))
            }
        }
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

/// Whether `kind` names a kind kept in the leader's memory (Events), or
/// answered from it (the metrics API's).
fn on_leader_alone(kind: &str) -> bool {
    Kind::from_name(kind).is_ok_and(|k| k.is_ephemeral() || k.is_metrics())
}

/// The refusal of a write (or a watch) of the metrics API's kinds.
fn read_only(kind: Kind) -> ApiError {
    ApiError::Invalid(format!(
        "{} ({}) are read-only readings of the nodes' resource usage: only get and list are served",
        kind.plural(),
        kind.api_version()
    ))
}

/// The data format the caller names in its request's headers
/// (`skiff_objects::legacy_bodies`): it reads each kind that moved at
/// that format or before as documents, the later ones in their protobuf
/// models; an agent or `skiff ctl` of a release before the header names
/// none (`0`) and reads every protobuf model only.
fn reader_format(metadata: &tonic::metadata::MetadataMap) -> u32 {
    let format = metadata.get(legacy_bodies::FORMAT_HEADER);
    legacy_bodies::reader_format(format.and_then(|v| v.to_str().ok()))
}

/// `object` as a caller naming `format` reads it: a moved kind's document
/// in its protobuf model for a caller that reads only that (cut down to
/// what the model holds, and marked so, when it has a field the model
/// lacks; as it is when a value does not read in the model); for one
/// that reads documents, a document even when the leader that answered a
/// relayed request is of an older release.
fn for_caller(object: Object, format: u32) -> Object {
    legacy_bodies::for_reader(object, format)
}

/// A response's object as the caller reads it ([`for_caller`]).
fn answer_for_caller(
    answer: Result<Response<Object>, Status>,
    format: u32,
) -> Result<Response<Object>, Status> {
    Ok(Response::new(for_caller(answer?.into_inner(), format)))
}

fn api_client(channel: Channel) -> ApiClient<Channel> {
    ApiClient::new(channel)
        .max_decoding_message_size(MAX_API_RESPONSE)
        .max_encoding_message_size(MAX_API_REQUEST)
}

#[tonic::async_trait]
impl Api for ApiService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<Object>, Status> {
        self.authorize_create(&request)?;
        let format = reader_format(request.metadata());
        let answer = self
            .router
            .on_leader(
                request,
                |r| self.create_local(r),
                |ch, mut r| async move {
                    let object = &mut r.get_mut().object;
                    *object = object.take().map(legacy_bodies::for_any_reader);
                    api_client(ch).create(r).await
                },
            )
            .await;
        answer_for_caller(answer, format)
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let r = request.get_ref();
        self.authorize_call(&request, Verb::Get, &r.kind, &r.namespace, Some(&r.name))?;
        let within = read_deadline(request.metadata());
        let format = reader_format(request.metadata());
        let here = r.serializable && !on_leader_alone(&r.kind);
        let answer = self
            .router
            .here_or_on_leader(
                here,
                request,
                |r| self.get_local(r, within),
                |ch, r| async move { api_client(ch).get(r).await },
            )
            .await;
        answer_for_caller(answer, format)
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let format = reader_format(request.metadata());
        let list = self.list_shared(request).await?;
        let items = list
            .items
            .into_iter()
            .map(|o| for_caller(std::sync::Arc::unwrap_or_clone(o), format));
        Ok(Response::new(ListResponse {
            items: items.collect(),
            revision: list.revision,
        }))
    }

    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        self.authorize_update(&request, false)?;
        let format = reader_format(request.metadata());
        let answer = self
            .router
            .on_leader(
                request,
                |r| self.update_local(r, false),
                |ch, mut r| async move {
                    let object = &mut r.get_mut().object;
                    *object = object.take().map(legacy_bodies::for_any_reader);
                    api_client(ch).update(r).await
                },
            )
            .await;
        answer_for_caller(answer, format)
    }

    async fn update_status(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<Object>, Status> {
        self.authorize_update(&request, true)?;
        let format = reader_format(request.metadata());
        let answer = self
            .router
            .on_leader(
                request,
                |r| self.update_local(r, true),
                |ch, mut r| async move {
                    let object = &mut r.get_mut().object;
                    *object = object.take().map(legacy_bodies::for_any_reader);
                    api_client(ch).update_status(r).await
                },
            )
            .await;
        answer_for_caller(answer, format)
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<Object>, Status> {
        let r = request.get_ref();
        self.authorize_call(&request, Verb::Delete, &r.kind, &r.namespace, Some(&r.name))?;
        let format = reader_format(request.metadata());
        let answer = self
            .router
            .on_leader(
                request,
                |r| self.delete_local(r),
                |ch, r| async move { api_client(ch).delete(r).await },
            )
            .await;
        answer_for_caller(answer, format)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.get_ref();
        self.authorize_call(&request, Verb::Watch, &r.kind, &r.namespace, None)?;
        let forwarded = request.metadata().contains_key(routing::FORWARDED);
        let format = reader_format(request.metadata());
        let request = request.into_inner();
        let kind = Kind::from_name(&request.kind).map_err(ApiError::from)?;
        if kind.is_metrics() {
            return Err(read_only(kind).into());
        }
        let namespace =
            (kind.namespaced() && !request.namespace.is_empty()).then(|| request.namespace.clone());
        if kind.is_ephemeral() {
            return self.watch_events(request, namespace, forwarded).await;
        }
        let scope = watch::WatchScope {
            kind,
            namespace,
            from_revision: request.from_revision,
            with_previous: request.with_previous,
            reader_format: format,
        };
        let stream = watch::start(self.cluster.store.clone(), scope, self.shutdown.clone())?;
        Ok(Response::new(stream))
    }

    type PodLogsStream = tokio_stream::wrappers::ReceiverStream<Result<LogChunk, Status>>;

    async fn pod_logs(
        &self,
        request: Request<PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        let identity = authz::identity(&request)?;
        let r = request.get_ref();
        let namespace = namespace_for(Kind::Pod, &r.namespace);
        let pod = Access::new(Verb::Get, Kind::Pod, &namespace, Some(&r.name));
        authz::authorize(&self.cluster.store, &identity, &pod.with_subresource("log"))?;
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

    async fn request_token(
        &self,
        request: Request<RequestTokenRequest>,
    ) -> Result<Response<RequestTokenResponse>, Status> {
        let identity = authz::identity(&request)?;
        self.token_over_grpc(&identity, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_each_moved_kind_as_the_data_format_it_names_reads_it() {
        let mut headers = tonic::metadata::MetadataMap::new();
        assert_eq!(
            reader_format(&headers),
            0,
            "an agent or ctl of an older release"
        );
        headers.insert(legacy_bodies::FORMAT_HEADER, "3".parse().unwrap());
        assert_eq!(reader_format(&headers), 3);
        let namespace = skiff_objects::namespaces::named("team", "Active");
        let at_three = for_caller(namespace.clone(), 3);
        assert!(
            matches!(
                at_three.kind,
                Some(skiff_proto::api::object::Kind::Namespace(_))
            ),
            "format 3 read Namespaces in their protobuf model: {at_three:?}"
        );
        assert_eq!(for_caller(at_three, 4), namespace);
        let meta = skiff_proto::v1::ObjectMeta {
            name: "s".into(),
            ..Default::default()
        };
        let values = [("k".to_owned(), b"v".to_vec())].into();
        let secret = skiff_objects::secrets::object(meta, "Opaque", values);
        let old = for_caller(secret.clone(), 0);
        assert!(matches!(
            old.kind,
            Some(skiff_proto::api::object::Kind::Secret(_))
        ));
        // A document reader gets a document, even from an older leader.
        assert_eq!(for_caller(old, 3), secret);
        assert_eq!(for_caller(secret.clone(), 3), secret);
    }

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

    #[test]
    fn selecting_lists_budgets_or_services_of_one_namespace() {
        assert!(selecting_kind(Kind::PodDisruptionBudget, "shop").is_ok());
        assert!(selecting_kind(Kind::Service, "shop").is_ok());
        assert!(selecting_kind(Kind::Pod, "shop").is_err());
        assert!(selecting_kind(Kind::Service, "").is_err());
    }
}
