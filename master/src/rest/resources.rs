//! The verbs on resource paths: get, list (label and field selectors,
//! `limit`/`continue`), watch (in [`super::watch`]), create (`dryRun`,
//! `generateName`), update, patch (three types, and server-side apply:
//! `objects::field_manager`, which also keeps every other write's
//! `metadata.managedFields`), delete (preconditions,
//! `propagationPolicy`, `gracePeriodSeconds`: the store's delete semantics,
//! `objects::deletion`), deletecollection, and the `status`, `scale` and
//! `eviction` subresources (an eviction deletes a pod unless a
//! PodDisruptionBudget forbids it: `objects::disruption_budget`). Each is
//! one or more calls of the gRPC API service with the caller's identity,
//! authorized call by call, except where kube-apiserver authorizes the
//! request as a whole and not the reads and writes it comes to: a GET of
//! `status` or `scale` as `get` of that part, a list as `list` and a watch
//! as `watch` alone (though it begins with a list of the objects), each of
//! the one object an exact `metadata.name` field selector names, a GET of
//! `log` as `get` of `pods/log`, a proxy request as its method's verb on
//! `proxy`, a POST as `create` (a
//! refusal naming no object), a PATCH
//! (server-side apply too) as `patch` of the part it names (and `create`
//! when an apply makes the object), a PUT as `update` (of `scale` for a
//! scale), a DELETE as `delete`, a collection's DELETE as
//! `deletecollection`, an eviction as `create` of `pods/eviction`. Those
//! are authorized first ([`Call::authorize`]); their reads, a list, a
//! watch's list and watch, a log's or proxy's reads, a
//! deletecollection's deletes and an eviction's write of the
//! PodDisruptionBudget's status and delete of the pod are then made as
//! this master ([`Acting::Master`], as kube-apiserver's storage makes them
//! itself), and a patch's write as the caller, authorized as the `patch`
//! it was asked as (`authz::RequestedAs`), so that what a write must keep
//! (roles and bindings granting only what the writer holds) is still
//! checked for the caller. A refusal is kube-apiserver's 403 (`pods "web"
//! is forbidden: User "..." cannot get resource "pods/status" in API
//! group "" in the namespace "ns"`, `super::status`).
//! The `log` and `proxy` subresources are handed to [`super::pod_logs`]
//! and [`super::proxy`], a ServiceAccount's `token` to
//! [`super::token_request`], the kinds never stored (the access reviews) to
//! [`super::access_review`]; the metrics API's kinds (`metrics.k8s.io`,
//! made from the leader's readings by `api::resource_metrics`) are only
//! read, with get and list.

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::{header, HeaderMap, Method, Response, StatusCode, Uri};
use serde_json::{json, Value};
use skiff_objects::now_rfc3339;
use skiff_proto::api::api_server::Api;
use skiff_proto::api::{
    CreateRequest, DeleteRequest, GetRequest, ListRequest, Object, UpdateRequest,
};
use skiff_proto::v1::ObjectMeta;
use skiff_security::{Identity, PeerInfo};
use tokio_util::sync::CancellationToken;

use super::access_review::ReviewRequest;
use super::custom_kinds;
use super::path::ResourcePath;
use super::pod_logs::{LogQuery, LogRequest};
use super::proxy::ProxyRequest;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::RestError;
use super::token_request::TokenRequestCall;
use super::watch::{self, WatchPlan, WatchTarget};
use super::watch_websocket::Upgrade;
use super::wire::{self, BodyOrigin, FieldValidation};
use super::{add_warnings, json_bytes_response, json_response, patch, table, Query};
use crate::api::authz::{Access, RequestedAs, Verb};
use crate::api::ApiService;
use crate::writer::namespace_for;
use skiff_objects::defaults::apply_defaults;
use skiff_objects::deletion::Propagation;
use skiff_objects::disruption_budget::{self, Budget, BudgetStatusExt, EvictionDecision};
use skiff_objects::field_manager::{self, Apply, ManagedFields, Scope, Update};
use skiff_objects::pods::StoredPod;
use skiff_objects::registry::{self, KindInfo, Model, Subresource};
use skiff_objects::{Kind, ObjectExt};

/// How many times a patch (or an apply, or a replace without a
/// resourceVersion) is retried after losing a race with another write.
const PATCH_ATTEMPTS: usize = 5;

/// The Content-Type of server-side apply (JSON is YAML too).
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// One request on a resource path.
pub(super) struct Call<'a> {
    pub api: &'a Arc<ApiService>,
    pub peer: &'a PeerInfo,
    pub method: &'a Method,
    /// The request's URI as sent (a proxy forwards its query as it is).
    pub uri: &'a Uri,
    pub path: &'a ResourcePath,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    /// The WebSocket upgrade the request asks for, if any (a watch takes
    /// it; other requests are answered as if it were not there, as
    /// kube-apiserver answers them).
    pub upgrade: Option<&'a Upgrade>,
    pub shutdown: &'a CancellationToken,
}

/// What a request on an object answers: the object, or the Scale of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Object,
    Status,
    Scale,
}

impl View {
    /// The subresource it is, as authorization names it (`""`: the object).
    fn part(self) -> &'static str {
        match self {
            View::Object => "",
            View::Status => "status",
            View::Scale => "scale",
        }
    }

    /// What a `GET` of this view of `kind`'s object `name` is authorized
    /// as before it reads, when that is not the API service's `get` of the
    /// object as the caller: `get` of the part it names (`pods/status`,
    /// `deployments/scale`), as kube-apiserver authorizes it; the read
    /// itself is then this master's.
    fn get_access<'a>(self, kind: Kind, namespace: &'a str, name: &'a str) -> Option<Access<'a>> {
        match self {
            View::Object => None,
            View::Status | View::Scale => Some(
                Access::new(Verb::Get, kind, namespace, Some(name)).with_subresource(self.part()),
            ),
        }
    }

    /// What the write of a `verb` request on this view (`patch`, or
    /// `update` for a PUT) is authorized as, when it is not the update of
    /// the part written that the API service would take it for: a patch,
    /// or any write through `scale` (which writes the whole object).
    fn requested_as(self, verb: Verb) -> Option<RequestedAs> {
        let scale = self == View::Scale;
        (verb != Verb::Update || scale).then_some(RequestedAs { verb, scale })
    }
}

/// Whom a call on the API service is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acting {
    /// The REST caller, the call authorized as what it is.
    Caller,
    /// The REST caller, a write authorized as the request was asked
    /// (`authz::RequestedAs`: a PATCH's write as `patch`).
    CallerAsRequested(RequestedAs),
    /// This master itself, for a request the caller was authorized for as
    /// a whole already ([`Call::authorize`]): the reads it comes to, a
    /// deletecollection's deletes, an eviction's writes.
    Master,
}

impl Acting {
    /// A write of a `verb` request on `view` by the caller.
    fn writing(view: View, verb: Verb) -> Acting {
        view.requested_as(verb)
            .map_or(Acting::Caller, Acting::CallerAsRequested)
    }
}

impl<'a> Call<'a> {
    pub async fn run(&self, body: bytes::Bytes) -> Result<Response<Body>, RestError> {
        let path = self.path;
        let info = registry::by_resource(&path.group, &path.version, &path.resource)
            .ok_or_else(|| not_found_resource(path))?;
        // A cluster-scoped kind has no namespace in its URLs; a namespaced
        // one has, except when listing or watching across namespaces.
        let across_namespaces = path.name.is_none() && *self.method == Method::GET;
        if (!info.namespaced && path.namespace.is_some())
            || (info.namespaced && path.namespace.is_none() && !across_namespaces)
        {
            return Err(not_found_resource(path));
        }
        // `/watch/` paths watch, nothing else (metrics-server serves no
        // watch).
        if path.watch {
            if path.subresource.is_some() || !info.is_stored() {
                return Err(not_found_resource(path));
            }
            if *self.method != Method::GET || info.model == Model::Metrics {
                return Err(RestError::method_not_allowed(
                    self.method,
                    &format!("{} (watch)", info.resource),
                ));
            }
            return self.watch(info).await;
        }
        // The metrics API's readings are read, nothing else: get and list
        // (metrics-server serves no watch).
        if info.model == Model::Metrics {
            return match (self.method.clone(), path.name.as_deref()) {
                (Method::GET, _) if path.subresource.is_some() => Err(not_found_resource(path)),
                (Method::GET, None) if is_true(self.query.get("watch")) => {
                    Err(RestError::method_not_allowed(
                        self.method,
                        &format!("{} (watch)", info.resource),
                    ))
                }
                (Method::GET, None) => self.list(info).await,
                (Method::GET, Some(name)) => self.get(info, name, View::Object).await,
                (method, _) => Err(RestError::method_not_allowed(&method, info.resource)),
            };
        }
        // The reviews are answered, never stored.
        if !info.is_stored() {
            let request = ReviewRequest {
                api: self.api,
                peer: self.peer,
                method: self.method,
                path,
                headers: self.headers,
            };
            return super::access_review::serve(info, request, &body);
        }
        // `log` and `proxy` answer something other than the object, and a
        // proxy's name may carry a port: they go their own way.
        match (path.subresource.as_deref(), path.name.as_deref()) {
            (Some("log"), Some(name)) if info.has(Subresource::Log) => {
                return self.log(name).await;
            }
            (Some("proxy"), Some(name)) if info.has(Subresource::Proxy) => {
                return self.proxy(info, name, body).await;
            }
            (Some("eviction"), Some(name)) if info.has(Subresource::Eviction) => {
                return self.evict(info, name, &body).await;
            }
            (Some("token"), Some(name)) if info.has(Subresource::Token) => {
                let request = TokenRequestCall {
                    api: self.api,
                    peer: self.peer,
                    method: self.method,
                    headers: self.headers,
                    namespace: self.namespace(),
                    name,
                };
                return request.serve(&body).await;
            }
            _ => {}
        }
        let view = match path.subresource.as_deref() {
            None => View::Object,
            Some("status") if info.has(Subresource::Status) => View::Status,
            Some("scale") if info.has(Subresource::Scale) => View::Scale,
            Some(_) => return Err(not_found_resource(path)),
        };
        match (self.method.clone(), path.name.as_deref()) {
            (Method::GET, None) if is_true(self.query.get("watch")) => self.watch(info).await,
            (Method::GET, None) => self.list(info).await,
            (Method::POST, None) => self.create(info, &body).await,
            (Method::DELETE, None) if !info.verbs().contains(&"deletecollection") => {
                Err(RestError::method_not_allowed(self.method, info.resource))
            }
            (Method::DELETE, None) => self.delete_collection(info, &body).await,
            (Method::GET, Some(name)) => self.get(info, name, view).await,
            (Method::PUT, Some(name)) => self.update(info, name, view, &body).await,
            (Method::PATCH, Some(name)) => self.patch(info, name, view, &body).await,
            (Method::DELETE, Some(name)) if view == View::Object => {
                self.delete(info, name, &body).await
            }
            (method, _) => Err(RestError::method_not_allowed(&method, info.resource)),
        }
    }

    /// `GET pods/NAME/log`: authorized as `get` of `pods/log` alone, as
    /// kube-apiserver authorizes it (not a `get` of the pod); the pod's
    /// read and the log's relay are then this master's.
    async fn log(&self, name: &str) -> Result<Response<Body>, RestError> {
        if *self.method != Method::GET {
            return Err(RestError::method_not_allowed(self.method, "pods/log"));
        }
        let pods = registry::info(Kind::Pod);
        let namespace = self.object_namespace(pods);
        self.authorize(pods, &super::pod_logs::log_access(&namespace, name))?;
        let query = LogQuery::parse(self.query)?;
        let master = self.master_peer();
        let request = LogRequest {
            api: self.api,
            peer: &master,
            namespace: self.namespace(),
            name,
            shutdown: self.shutdown.clone(),
        };
        super::pod_logs::serve(request, query).await
    }

    /// Any method on `pods/NAME[:PORT]/proxy/...` or
    /// `services/NAME[:PORT]/proxy/...`: authorized as the verb of its
    /// method on the `proxy` subresource of the name segment
    /// ([`super::proxy::proxy_verb`], [`super::proxy::requested_name`]), as
    /// kube-apiserver authorizes it (not a `get` of the pod or service);
    /// the reads of the pod, or the service and its endpoints, are then
    /// this master's.
    async fn proxy(
        &self,
        info: &'static KindInfo,
        name: &str,
        body: bytes::Bytes,
    ) -> Result<Response<Body>, RestError> {
        let Some(verb) = super::proxy::proxy_verb(self.method) else {
            let what = format!("{}/proxy", info.resource);
            return Err(RestError::method_not_allowed(self.method, &what));
        };
        let namespace = self.object_namespace(info);
        let requested = super::proxy::requested_name(name);
        let access = Access::new(verb, info.kind, &namespace, Some(requested.as_str()))
            .with_subresource("proxy");
        self.authorize(info, &access)?;
        let master = self.master_peer();
        let request = ProxyRequest {
            api: self.api,
            peer: &master,
            method: self.method,
            uri: self.uri,
            headers: self.headers,
            namespace: self.namespace(),
            name,
            tail: &self.path.tail,
            shutdown: self.shutdown.clone(),
        };
        super::proxy::serve(info, request, body).await
    }

    /// A watch, answered as a chunked stream of JSON lines, or over a
    /// WebSocket when the request asks for one (its handshake checked
    /// before the watch starts). Authorized first as `watch` alone
    /// ([`watch_access`]), however it begins: its list of the current
    /// objects and its watch are then this master's, as kube-apiserver's
    /// storage serves a watch it has authorized.
    async fn watch(&self, info: &'static KindInfo) -> Result<Response<Body>, RestError> {
        let selected = self.selectors(info);
        let path_name = self.path.name.as_deref().filter(|_| self.path.watch);
        // A `/watch/` path names its object or none; kube-apiserver reads
        // the name a field selector asks for only from `?watch=true`.
        let fields = if self.path.watch {
            None
        } else {
            selected.as_ref().ok().map(|(_, fields)| fields)
        };
        let access = watch_access(info.kind, self.namespace(), path_name, fields);
        self.authorize(info, &access)?;
        let (labels, mut fields) = selected?;
        // `/watch/.../NAME`: that object alone.
        if let Some(name) = path_name {
            fields = one_object_selector(info, fields, name)?;
        }
        let plan = WatchPlan::from_query(info, self.query, self.wants_table())?;
        let websocket = self
            .upgrade
            .map(|upgrade| upgrade.accept(self.headers))
            .transpose()?;
        let listed = if plan.starts_with_list() {
            let (items, revision) = self
                .list_objects(info, &labels, &fields, Acting::Master)
                .await?;
            let values = items
                .iter()
                .map(|o| watch::encode(info, o, self.wants_table()))
                .collect();
            Some((values, revision))
        } else {
            None
        };
        let master = self.master_peer();
        let target = WatchTarget {
            api: self.api,
            peer: &master,
            info,
            namespace: self.path.namespace.clone(),
            labels,
            fields,
            shutdown: self.shutdown.clone(),
        };
        let lines = watch::start(target, plan, listed).await?;
        match websocket {
            Some(websocket) => websocket.serve(lines),
            None => Ok(watch::chunked(lines)),
        }
    }

    fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        super::as_caller(self.peer, message)
    }

    /// A call on the API service for this request, made as `acting`.
    fn request_as<T>(&self, message: T, acting: Acting) -> tonic::Request<T> {
        match acting {
            Acting::Caller => self.request(message),
            Acting::CallerAsRequested(requested) => {
                let mut request = self.request(message);
                request.extensions_mut().insert(requested);
                request
            }
            Acting::Master => super::as_caller(&self.master_peer(), message),
        }
    }

    /// This master, as the peer of the calls a request it has authorized
    /// as a whole comes to ([`Acting::Master`]).
    fn master_peer(&self) -> PeerInfo {
        PeerInfo {
            remote: self.peer.remote,
            identity: Some(self.api.own_identity()),
        }
    }

    /// The caller, as authentication found it.
    fn caller(&self) -> Result<&Identity, RestError> {
        self.peer
            .identity
            .as_ref()
            .ok_or_else(RestError::unauthorized)
    }

    /// Authorizes the request as a whole as `access` for its caller, as
    /// kube-apiserver's authorization filter does, before anything is
    /// read; refused, it is a 403 (logged by `authz` with the caller and
    /// what it may not do).
    fn authorize(&self, info: &KindInfo, access: &Access<'_>) -> Result<(), RestError> {
        self.authorize_naming(info, access, access.name.unwrap_or(""))
    }

    /// [`Self::authorize`], a refusal naming the object `name` (an apply
    /// that makes its object is authorized as a `create` of the
    /// collection, but is a request on that object).
    fn authorize_naming(
        &self,
        info: &KindInfo,
        access: &Access<'_>,
        name: &str,
    ) -> Result<(), RestError> {
        let caller = self.caller()?;
        self.api
            .authorize(caller, access)
            .map_err(|s| RestError::from_grpc(&s, info, name))
    }

    /// The namespace of an object of `info`'s kind named in the path (`""`
    /// for a cluster-scoped kind), as the API service reads it from.
    fn object_namespace(&self, info: &KindInfo) -> String {
        namespace_for(info.kind, self.namespace())
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("as=Table"))
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    /// The object `name`, read on the leader as `acting`.
    async fn get_object(
        &self,
        info: &'static KindInfo,
        name: &str,
        acting: Acting,
    ) -> Result<Object, RestError> {
        let message = GetRequest {
            kind: info.kind.name().to_owned(),
            namespace: self.namespace().to_owned(),
            name: name.to_owned(),
            serializable: false,
        };
        let request = self.request_as(message, acting);
        self.api
            .get(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| RestError::from_grpc(&s, info, name))
    }

    /// Answers one object (or its Scale), as JSON or as a one-row Table.
    fn object_answer(
        &self,
        info: &'static KindInfo,
        object: &Object,
        view: View,
        code: StatusCode,
    ) -> Response<Body> {
        if self.wants_table() && view != View::Scale {
            let value = wire::encode_for_table(info, object);
            let rv = value["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let table = custom_kinds::table(info, &[&value], &rv, true, now());
            return json_response(code, &table);
        }
        match view {
            View::Scale => json_response(code, &scale_of(info, object)),
            // Written straight from the object, as a list's items are: a
            // document's content is not made a JSON tree first.
            View::Object | View::Status => {
                let mut body = Vec::new();
                wire::write_json(&mut body, info, object);
                json_bytes_response(code, body)
            }
        }
    }

    /// `GET` of an object, or of its `status` or `scale`: the object read
    /// as the caller, a part authorized as its `get` ([`View::get_access`])
    /// and then read as this master.
    async fn get(
        &self,
        info: &'static KindInfo,
        name: &str,
        view: View,
    ) -> Result<Response<Body>, RestError> {
        let namespace = self.object_namespace(info);
        let acting = match view.get_access(info.kind, &namespace, name) {
            Some(access) => {
                self.authorize(info, &access)?;
                Acting::Master
            }
            None => Acting::Caller,
        };
        let object = self.get_object(info, name, acting).await?;
        Ok(self.object_answer(info, &object, view, StatusCode::OK))
    }

    /// The objects of the collection that the selectors select, as the
    /// cache shares them, and the revision they were read at; listed as
    /// `acting`.
    async fn list_objects(
        &self,
        info: &'static KindInfo,
        labels: &LabelSelector,
        fields: &FieldSelector,
        acting: Acting,
    ) -> Result<(Vec<Arc<Object>>, u64), RestError> {
        self.list_objects_at(info, labels, fields, acting, 0).await
    }

    /// [`Self::list_objects`] exactly at revision `at` (0: the newest).
    async fn list_objects_at(
        &self,
        info: &'static KindInfo,
        labels: &LabelSelector,
        fields: &FieldSelector,
        acting: Acting,
        at: u64,
    ) -> Result<(Vec<Arc<Object>>, u64), RestError> {
        let serializable = self
            .query
            .get("resourceVersion")
            .is_some_and(|rv| !rv.is_empty());
        let message = ListRequest {
            kind: info.kind.name().to_owned(),
            namespace: self.namespace().to_owned(),
            serializable,
            selecting: None,
            exact_revision: at,
        };
        let request = self.request_as(message, acting);
        let list = self
            .api
            .list_shared(request)
            .await
            .map_err(|s| RestError::from_grpc(&s, info, ""))?;
        let mut items = list.items;
        items.retain(|o| {
            labels.matches(&o.meta().labels)
                && (fields.is_empty() || fields.matches_json(&wire::encode(info, o)))
        });
        Ok((items, list.revision))
    }

    /// [`Self::list_objects`], encoded.
    async fn list_values(
        &self,
        info: &'static KindInfo,
        labels: &LabelSelector,
        fields: &FieldSelector,
        acting: Acting,
    ) -> Result<(Vec<Value>, u64), RestError> {
        let (items, revision) = self.list_objects(info, labels, fields, acting).await?;
        let values = items.iter().map(|o| wire::encode(info, o)).collect();
        Ok((values, revision))
    }

    fn selectors(&self, info: &KindInfo) -> Result<(LabelSelector, FieldSelector), RestError> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").map_or("", |s| s))
            .map_err(|e| RestError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(
            super::selectors::selector_kind(info),
            self.query.get("fieldSelector").map_or("", |s| s),
        )
        .map_err(|e| RestError::bad_request(e.to_string()))?;
        Ok((labels, fields))
    }

    /// A list, authorized first as `list` ([`list_access`]: of the one
    /// object an exact `metadata.name` field selector names, else of the
    /// collection), as kube-apiserver's request info makes it; the list is
    /// then this master's.
    async fn list(&self, info: &'static KindInfo) -> Result<Response<Body>, RestError> {
        let selected = self.selectors(info);
        // A malformed selector names nothing: authorized as a list of the
        // collection, then refused as the 400 it is.
        let fields = selected.as_ref().ok().map(|(_, fields)| fields);
        let access = list_access(info.kind, self.namespace(), fields);
        self.authorize(info, &access)?;
        let (labels, fields) = selected?;
        let at = self.list_at(info)?;
        let (mut items, revision) = self
            .list_objects_at(info, &labels, &fields, Acting::Master, at.revision())
            .await
            .map_err(|e| at.explain(e))?;
        let rv = revision.to_string();
        // `continue` resumes after the last key of the previous page, at
        // the first page's revision.
        if let ListAt::Continue { after, .. } = &at {
            items.retain(|item| comes_after(info.kind, item, after));
        }
        let mut metadata = json!({"resourceVersion": rv});
        let limit = match self.query.get("limit").filter(|l| !l.is_empty()) {
            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                RestError::bad_request(format!("limit {l:?} is not a non-negative integer"))
            })?),
            None => None,
        };
        if let Some(limit) = limit.filter(|l| *l > 0 && *l < items.len()) {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().map(|o| item_key(o)).unwrap_or_default();
            metadata["continue"] = json!(encode_continue(&rv, &last));
            // As kube-apiserver: not counted for a selected list.
            if labels.is_empty() && fields.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let mut response = if self.wants_table() {
            let mut out = Vec::with_capacity(256 + items.len() * 384);
            let objects = items.iter().map(|o| wire::encode_for_table(info, o));
            custom_kinds::write_table(&mut out, info, objects, &metadata, now());
            json_bytes_response(StatusCode::OK, out)
        } else {
            list_response(info, &metadata, &items)
        };
        add_warnings(&mut response, &self.list_warnings(info));
        Ok(response)
    }

    /// Lists of Events and of the metrics API's readings are served at
    /// the newest revision: an exact one asked for is answered with a
    /// warning saying so.
    fn list_warnings(&self, info: &KindInfo) -> Vec<String> {
        let exact = self.query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
        if exact && !revisioned(info.kind) {
            vec![format!(
                "resourceVersionMatch=Exact is not served for {}: the list is at the newest revision (metadata.resourceVersion)",
                info.resource
            )]
        } else {
            Vec::new()
        }
    }

    /// The revision a list is read at, from its `resourceVersion`,
    /// `resourceVersionMatch` and `continue`, checked as kube-apiserver
    /// checks them (`ValidateListOptions`).
    fn list_at(&self, info: &KindInfo) -> Result<ListAt, RestError> {
        let given = |name: &str| self.query.get(name).filter(|v| !v.is_empty());
        let (rv, matching, token) = (
            given("resourceVersion"),
            given("resourceVersionMatch"),
            given("continue"),
        );
        let mut causes = Vec::new();
        if let Some(matching) = matching {
            let forbidden = |why: &str| {
                (
                    "resourceVersionMatch".to_owned(),
                    format!("Forbidden: {why}"),
                )
            };
            if rv.is_none() {
                causes.push(forbidden(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if token.is_some() {
                causes.push(forbidden(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                causes.push((
                    "resourceVersionMatch".to_owned(),
                    format!("Unsupported value: {matching:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""),
                ));
            }
            if matching == "Exact" && rv.is_some_and(|rv| rv == "0") {
                causes.push(forbidden(
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if !causes.is_empty() {
            return Err(RestError::invalid_list_options(causes));
        }
        if let Some(token) = token {
            // kube-apiserver takes "0" with a continue token (older pagers
            // send it); any other version is refused.
            if rv.is_some_and(|rv| rv != "0") {
                return Err(RestError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (token_rv, after) = decode_continue(token)?;
            let revision = parse_revision(&token_rv).ok_or_else(|| {
                RestError::bad_request(format!(
                    "continue token {token:?} is not one this server gave"
                ))
            })?;
            if !revisioned(info.kind) {
                // Events and readings have no history: the next page is
                // read from the newest list.
                return Ok(ListAt::Continue { revision: 0, after });
            }
            return Ok(ListAt::Continue { revision, after });
        }
        match (matching.map(String::as_str), rv) {
            (Some("Exact"), Some(rv)) if revisioned(info.kind) => {
                let revision = parse_revision(rv).ok_or_else(|| {
                    RestError::bad_request(format!(
                        "invalid resource version {rv:?}: not a revision"
                    ))
                })?;
                Ok(ListAt::Exact(revision))
            }
            _ => Ok(ListAt::Newest),
        }
    }

    /// The body as an object of `info`'s kind, checked against the URL.
    fn decode_body(
        &self,
        info: &'static KindInfo,
        body: &[u8],
    ) -> Result<(Object, Vec<String>), RestError> {
        let content_type = super::header_text(self.headers, header::CONTENT_TYPE);
        let mut value = wire::parse_body(body, &content_type)?;
        wire::check_against_url(&mut value, info, self.path.namespace.as_deref())?;
        let validation =
            FieldValidation::parse(self.query.get("fieldValidation").map(String::as_str))?;
        wire::decode(info, value, validation, BodyOrigin::of(&content_type))
    }

    async fn create(
        &self,
        info: &'static KindInfo,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        // A `create` of the collection, before the body is read, as
        // kube-apiserver authorizes a POST: its refusal names no object.
        // What the write itself must keep (roles granting only what their
        // writer holds) is the API service's to check, and to refuse
        // naming the object.
        let namespace = self.object_namespace(info);
        self.authorize(
            info,
            &Access::new(Verb::Create, info.kind, &namespace, None),
        )?;
        let manager = self.field_manager("CreateOptions")?;
        let (mut object, warnings) = self.decode_body(info, body)?;
        record_update(info, &manager, Scope::Object, None, &mut object);
        let name = object.meta().name.clone();
        if self.dry_run() {
            // Nothing reaches the API service.
            let meta = object
                .meta_mut()
                .map_err(|e| RestError::bad_request(e.to_string()))?;
            if meta.name.is_empty() && !meta.generate_name.is_empty() {
                meta.name = format!(
                    "{}{}",
                    meta.generate_name,
                    skiff_objects::metadata::random_suffix()
                );
            }
            skiff_objects::defaults::apply_defaults(&mut object);
            skiff_objects::validation::validate(&object).map_err(|e| {
                RestError::invalid(
                    info,
                    &e.name,
                    e.errors
                        .iter()
                        .map(|f| (f.path.clone(), f.reason.clone()))
                        .collect(),
                )
            })?;
            let mut response = self.object_answer(info, &object, View::Object, StatusCode::CREATED);
            add_warnings(&mut response, &warnings);
            return Ok(response);
        }
        let created = self
            .api
            .create(self.request(CreateRequest {
                object: Some(object),
            }))
            .await
            .map_err(|s| RestError::from_grpc(&s, info, &name))?
            .into_inner();
        let mut response = self.object_answer(info, &created, View::Object, StatusCode::CREATED);
        add_warnings(&mut response, &warnings);
        Ok(response)
    }

    /// Writes `object` (the whole object, or its status) as `acting`.
    async fn write(
        &self,
        info: &'static KindInfo,
        name: &str,
        object: Object,
        status_only: bool,
        acting: Acting,
    ) -> Result<Object, RestError> {
        let message = UpdateRequest {
            object: Some(object),
        };
        let request = self.request_as(message, acting);
        let answer = if status_only {
            self.api.update_status(request).await
        } else {
            self.api.update(request).await
        };
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| RestError::from_grpc(&s, info, name))
    }

    async fn update(
        &self,
        info: &'static KindInfo,
        name: &str,
        view: View,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        // An `update` (of the part), whatever it reads first.
        let namespace = self.object_namespace(info);
        let access = Access::new(Verb::Update, info.kind, &namespace, Some(name));
        self.authorize(info, &access.with_subresource(view.part()))?;
        let manager = self.field_manager("UpdateOptions")?;
        let writing = Acting::writing(view, Verb::Update);
        if view == View::Scale {
            let content_type = super::header_text(self.headers, header::CONTENT_TYPE);
            let scale = wire::parse_body(body, &content_type)?;
            let current = self.get_object(info, name, Acting::Master).await?;
            let live = (current.meta().clone(), wire::encode(info, &current));
            let mut object = with_replicas(info, current, &scale)?;
            let replaced = Some((&live.0, &live.1));
            record_update(info, &manager, Scope::Scale, replaced, &mut object);
            let written = if self.dry_run() {
                object
            } else {
                self.write(info, name, object, false, writing).await?
            };
            return Ok(self.object_answer(info, &written, View::Scale, StatusCode::OK));
        }
        let (object, warnings) = self.decode_body(info, body)?;
        if object.meta().name != name {
            return Err(RestError::bad_request(format!(
                "the name of the object ({:?}) does not match the name on the URL ({name:?})",
                object.meta().name
            )));
        }
        let status_only = view == View::Status;
        let written = if self.dry_run() {
            object
        } else if !keeps_managed_fields(info) {
            self.write(info, name, object, status_only, writing).await?
        } else {
            let scope = if status_only {
                Scope::Status
            } else {
                Scope::Object
            };
            self.replace(info, name, object, scope, &manager, writing)
                .await?
        };
        let mut response = self.object_answer(info, &written, view, StatusCode::OK);
        add_warnings(&mut response, &warnings);
        Ok(response)
    }

    /// Writes `object` over the stored one (a `PUT`, authorized as its
    /// `update` already; the write as `writing`), its managed fields
    /// recorded against what it replaces, read as this master. Without a
    /// resourceVersion the write is made conditional on the object read,
    /// and made again when another write came first; with one, it is the
    /// client's condition.
    async fn replace(
        &self,
        info: &'static KindInfo,
        name: &str,
        object: Object,
        scope: Scope,
        manager: &str,
        writing: Acting,
    ) -> Result<Object, RestError> {
        let conditional = !object.meta().resource_version.is_empty();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get_object(info, name, Acting::Master).await?;
            let live = wire::encode(info, &current);
            let mut written = object.clone();
            if !conditional {
                if let Ok(meta) = written.meta_mut() {
                    meta.resource_version = current.meta().resource_version.clone();
                }
            }
            let replaced = Some((current.meta(), &live));
            record_update(info, manager, scope, replaced, &mut written);
            let status_only = scope == Scope::Status;
            match self.write(info, name, written, status_only, writing).await {
                Err(e) if e.reason == "Conflict" && !conditional && attempt < PATCH_ATTEMPTS => {}
                answer => return answer,
            }
        }
    }

    async fn patch(
        &self,
        info: &'static KindInfo,
        name: &str,
        view: View,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        // A `patch` of the part it names, and nothing else: not a get and
        // an update (server-side apply too; `create` as well when it makes
        // the object).
        let namespace = self.object_namespace(info);
        let access = Access::new(Verb::Patch, info.kind, &namespace, Some(name));
        self.authorize(info, &access.with_subresource(view.part()))?;
        let content_type = super::header_text(self.headers, header::CONTENT_TYPE);
        if is_apply(&content_type) {
            return self.apply(info, name, view, body).await;
        }
        if self.query.contains_key("force") {
            return Err(options_invalid(
                "PatchOptions",
                "force",
                "FieldValueForbidden",
                "Forbidden: may not be specified for non-apply patch".to_owned(),
            ));
        }
        let patch_type = patch::PatchType::from_content_type(&content_type).ok_or_else(|| {
            RestError::unsupported_media_type(
                &content_type,
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml",
            )
        })?;
        // Custom kinds have no strategic merge keys: kube-apiserver refuses
        // that patch type for them.
        if info.model == Model::Custom && patch_type == patch::PatchType::StrategicMerge {
            return Err(RestError::unsupported_media_type(
                &content_type,
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let validation =
            FieldValidation::parse(self.query.get("fieldValidation").map(String::as_str))?;
        let manager = self.field_manager("PatchOptions")?;
        let writing = Acting::writing(view, Verb::Patch);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get_object(info, name, Acting::Master).await?;
            let current_rv = current.meta().resource_version.clone();
            let (object, warnings) = match view {
                View::Scale => {
                    let scale = scale_of(info, &current);
                    let patched = patch::apply("Scale", &scale, patch_type, body)
                        .map_err(|e| patch_error(info, name, e))?;
                    let live = (current.meta().clone(), wire::encode(info, &current));
                    let mut object = with_replicas(info, current, &patched)?;
                    let live = Some((&live.0, &live.1));
                    record_update(info, &manager, Scope::Scale, live, &mut object);
                    (object, Vec::new())
                }
                View::Object | View::Status => {
                    let value = wire::encode(info, &current);
                    let mut patched = patch::apply(info.name, &value, patch_type, body)
                        .map_err(|e| patch_error(info, name, e))?;
                    wire::check_against_url(&mut patched, info, self.path.namespace.as_deref())?;
                    if patched["metadata"]["name"].as_str() != Some(name) {
                        return Err(RestError::invalid(
                            info,
                            name,
                            vec![("metadata.name".into(), "field is immutable".into())],
                        ));
                    }
                    let pinned = patched["metadata"]["resourceVersion"].as_str()
                        != Some(current_rv.as_str());
                    let (mut object, warnings) =
                        wire::decode(info, patched, validation, BodyOrigin::Text)?;
                    if !pinned {
                        // Conditional on what was read: a concurrent write
                        // makes this attempt fail, and the patch is applied
                        // again to the newer object.
                        if let Ok(meta) = object.meta_mut() {
                            meta.resource_version = current_rv.clone();
                        }
                    }
                    let scope = if view == View::Status {
                        Scope::Status
                    } else {
                        Scope::Object
                    };
                    let live = Some((current.meta(), &value));
                    record_update(info, &manager, scope, live, &mut object);
                    (object, warnings)
                }
            };
            if self.dry_run() {
                let mut response = self.object_answer(info, &object, view, StatusCode::OK);
                add_warnings(&mut response, &warnings);
                return Ok(response);
            }
            match self
                .write(info, name, object, view == View::Status, writing)
                .await
            {
                Ok(written) => {
                    let mut response = self.object_answer(info, &written, view, StatusCode::OK);
                    add_warnings(&mut response, &warnings);
                    return Ok(response);
                }
                Err(e) if e.reason == "Conflict" && attempt < PATCH_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `PATCH` with `application/apply-patch+yaml`: server-side apply of
    /// the body, a partial object (YAML or JSON), by `fieldManager`
    /// (required) with `force`, `dryRun` and `fieldValidation`
    /// (`objects::field_manager`). Creates the object when there is none
    /// (201); refuses to change fields another manager owns unless forced
    /// (409 with each conflict). An apply that changes nothing writes
    /// nothing: the object keeps its resourceVersion. Retried, like any
    /// patch, when another write comes first. Authorized as a `patch`
    /// already ([`Call::patch`]); the object is read as this master, and
    /// one it makes is a `create` the caller must be allowed as well, as
    /// kube-apiserver asks (its patch handler's `withAuthorization` of the
    /// create).
    async fn apply(
        &self,
        info: &'static KindInfo,
        name: &str,
        view: View,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        let scope = match view {
            View::Object => Scope::Object,
            View::Status => Scope::Status,
            View::Scale => {
                return Err(RestError::unsupported_media_type(
                    APPLY_PATCH,
                    "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (server-side apply of scale is not served)",
                ))
            }
        };
        if !keeps_managed_fields(info) {
            return Err(RestError::unsupported_media_type(
                APPLY_PATCH,
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (Events are not server-side applied)",
            ));
        }
        let manager = self.query.get("fieldManager").map_or("", String::as_str);
        if manager.is_empty() {
            return Err(options_invalid(
                "PatchOptions",
                "fieldManager",
                "FieldValueRequired",
                "Required value: is required for apply patch".to_owned(),
            ));
        }
        check_field_manager("PatchOptions", manager)?;
        let force = match self.query.get("force").map(String::as_str) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(RestError::bad_request(format!(
                    "force {other:?} is neither true nor false"
                )))
            }
        };
        let validation =
            FieldValidation::parse(self.query.get("fieldValidation").map(String::as_str))?;
        let mut config = wire::parse_body(body, APPLY_PATCH)?;
        check_applied(&config, name)?;
        wire::check_against_url(&mut config, info, self.path.namespace.as_deref())?;
        let wanted_rv = config["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let now = now_rfc3339();
        let apply = Apply {
            info,
            manager,
            scope,
            force,
            now: &now,
        };
        let writing = Acting::writing(view, Verb::Patch);
        let namespace = self.object_namespace(info);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let live = match self.get_object(info, name, Acting::Master).await {
                Ok(object) => Some(object),
                Err(e) if e.code == StatusCode::NOT_FOUND && scope == Scope::Object => None,
                Err(e) => return Err(e),
            };
            if live.is_none() {
                // Checked here for a dry run too; the create itself is
                // authorized again, with what it writes.
                let create = Access::new(Verb::Create, info.kind, &namespace, None);
                self.authorize_naming(info, &create, name)?;
            }
            let live_rv = live.as_ref().map(|o| o.meta().resource_version.clone());
            if !wanted_rv.is_empty() && live_rv.as_deref() != Some(wanted_rv.as_str()) {
                return Err(modified(info, name));
            }
            let live_value = live.as_ref().map(|o| wire::encode(info, o));
            let managed = live
                .as_ref()
                .map(|o| ManagedFields::of(o.meta()))
                .unwrap_or_default();
            let merged = apply
                .merge(live_value.as_ref(), &managed, &config)
                .map_err(|e| apply_error(info, name, e))?;
            let (mut object, warnings) =
                wire::decode(info, merged.object, validation, BodyOrigin::Text)?;
            if let (Some(rv), Ok(meta)) = (&live_rv, object.meta_mut()) {
                // Conditional on what was read, as a patch is.
                meta.resource_version = rv.clone();
            }
            // Compared as it will be stored.
            apply_defaults(&mut object);
            let result = wire::encode(info, &object);
            let managed = apply
                .settle(live_value.as_ref(), &result, managed, merged.applied)
                .map_err(|e| apply_error(info, name, e))?;
            if let Ok(meta) = object.meta_mut() {
                meta.managed_fields = managed.to_proto();
            }
            let code = if live.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            if live.as_ref() == Some(&object) || self.dry_run() {
                let mut response = self.object_answer(info, &object, view, code);
                add_warnings(&mut response, &warnings);
                return Ok(response);
            }
            let written = match live {
                None => self
                    .api
                    .create(self.request(CreateRequest {
                        object: Some(object),
                    }))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| RestError::from_grpc(&s, info, name)),
                Some(_) => {
                    let status_only = scope == Scope::Status;
                    self.write(info, name, object, status_only, writing).await
                }
            };
            match written {
                Ok(written) => {
                    let mut response = self.object_answer(info, &written, view, code);
                    add_warnings(&mut response, &warnings);
                    return Ok(response);
                }
                // Another write came first (or created it meanwhile).
                Err(e)
                    if (e.reason == "Conflict" || e.reason == "AlreadyExists")
                        && wanted_rv.is_empty()
                        && attempt < PATCH_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Who makes this write, for its managed fields: `fieldManager`, else
    /// the first word of the client's user agent (`kubectl`, `Helm`,
    /// `OpenAPI-Generator`), as kube-apiserver names managers. `options`
    /// names the request's options in errors (`CreateOptions`, ...).
    fn field_manager(&self, options: &'static str) -> Result<String, RestError> {
        let given = self.query.get("fieldManager").map_or("", String::as_str);
        if !given.is_empty() {
            check_field_manager(options, given)?;
            return Ok(given.to_owned());
        }
        let agent = super::header_text(self.headers, header::USER_AGENT);
        Ok(agent_prefix(&agent))
    }

    async fn delete(
        &self,
        info: &'static KindInfo,
        name: &str,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        // A `delete`, whatever it reads first.
        let namespace = self.object_namespace(info);
        let access = Access::new(Verb::Delete, info.kind, &namespace, Some(name));
        self.authorize(info, &access)?;
        let params = DeleteParams::read(
            body,
            &super::header_text(self.headers, header::CONTENT_TYPE),
            self.query,
        )?;
        if self.dry_run() || params.dry_run {
            let object = self.get_object(info, name, Acting::Master).await?;
            return Ok(self.object_answer(info, &object, View::Object, StatusCode::OK));
        }
        if let Some(uid) = &params.uid {
            // The store checks it too, with the delete; this answers with
            // kube-apiserver's words.
            let object = self.get_object(info, name, Acting::Master).await?;
            check_uid(info, name, uid, &object)?;
        }
        let request = params.request(info, self.namespace(), name);
        let deleted = self
            .delete_object(info, name, request, Acting::Caller)
            .await?;
        // 200 with the object, whether it went or was only marked
        // (`metadata.deletionTimestamp`), as kube-apiserver answers.
        Ok(self.object_answer(info, &deleted, View::Object, StatusCode::OK))
    }

    /// Deletes as `acting`.
    async fn delete_object(
        &self,
        info: &'static KindInfo,
        name: &str,
        request: DeleteRequest,
        acting: Acting,
    ) -> Result<Object, RestError> {
        self.api
            .delete(self.request_as(request, acting))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| RestError::from_grpc(&s, info, name))
    }

    /// `DELETE` of a collection: authorized as `deletecollection` of the
    /// collection (the path's namespace) alone, not as a list and a delete
    /// of each object, as kube-apiserver authorizes it; the objects the
    /// selectors select are then listed and deleted by this master, as
    /// kube-apiserver's storage deletes them itself.
    async fn delete_collection(
        &self,
        info: &'static KindInfo,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        let access = Access::new(Verb::DeleteCollection, info.kind, self.namespace(), None);
        self.authorize(info, &access)?;
        let params = DeleteParams::read(
            body,
            &super::header_text(self.headers, header::CONTENT_TYPE),
            self.query,
        )?;
        let (labels, fields) = self.selectors(info)?;
        let (items, revision) = self
            .list_values(info, &labels, &fields, Acting::Master)
            .await?;
        let mut deleted = Vec::new();
        for item in &items {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let namespace = item["metadata"]["namespace"].as_str().unwrap_or_default();
            if self.dry_run() || params.dry_run {
                deleted.push(item.clone());
                continue;
            }
            let request = params.request(info, namespace, name);
            match self
                .api
                .delete(self.request_as(request, Acting::Master))
                .await
            {
                Ok(object) => deleted.push(wire::encode(info, object.get_ref())),
                // Gone already: someone else deleted it meanwhile.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(RestError::from_grpc(&s, info, name)),
            }
        }
        let list = json!({
            "kind": format!("{}List", info.name),
            "apiVersion": info.api_version,
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    /// `POST pods/NAME/eviction` with a `policy/v1` Eviction (what `kubectl
    /// drain` sends): the pod is deleted, with the Eviction's
    /// `deleteOptions` (gracefully by default), once it has taken one of the
    /// allowed disruptions of the PodDisruptionBudget that covers it
    /// ([`Call::take_disruption`]); when the budget allows none: 429
    /// TooManyRequests, with kube-apiserver's message, for the client to
    /// retry later. Answers 201 with a Success `Status`.
    ///
    /// The caller is authorized for `create` of `pods/eviction` alone, as
    /// kube-apiserver authorizes an eviction: the pod and its budgets are
    /// read, the budget's status written and the pod deleted by this
    /// master ([`Acting::Master`]), as kube-apiserver's eviction storage
    /// does them itself, so that a caller allowed to evict needs no right
    /// to write budgets or delete pods. A refusal is logged with the
    /// caller (by `authz`), an eviction with the caller and the budget it
    /// took a disruption from.
    async fn evict(
        &self,
        info: &'static KindInfo,
        name: &str,
        body: &[u8],
    ) -> Result<Response<Body>, RestError> {
        if *self.method != Method::POST {
            return Err(RestError::method_not_allowed(self.method, "pods/eviction"));
        }
        let namespace = self.object_namespace(info);
        let access = Access::new(Verb::Create, info.kind, &namespace, Some(name));
        self.authorize(info, &access.with_subresource("eviction"))?;
        let content_type = super::header_text(self.headers, header::CONTENT_TYPE);
        let eviction = wire::parse_body(body, &content_type)?;
        if !eviction.is_object() {
            return Err(RestError::bad_request(
                "the Eviction body must be an object",
            ));
        }
        let named = eviction["metadata"]["name"].as_str().unwrap_or("");
        if !named.is_empty() && named != name {
            return Err(RestError::bad_request(format!(
                "name in URL ({name:?}) does not match name in Eviction object ({named:?})"
            )));
        }
        let mut params = match eviction.get("deleteOptions") {
            Some(options) if options.is_object() => DeleteParams::from_json(options)?,
            _ => DeleteParams::default(),
        };
        let object = self.get_object(info, name, Acting::Master).await?;
        let Some(pod) = StoredPod::read(object.clone()) else {
            return Err(RestError::internal(format!("pod {name:?} is not a Pod")));
        };
        // A precondition naming another pod's uid fails before a disruption
        // is taken for this one (kube-apiserver's wording).
        if let Some(uid) = params.uid.as_deref().filter(|u| *u != object.meta().uid) {
            return Err(RestError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods {name:?}: Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object.meta().uid
                ),
            ));
        }
        let dry_run = self.dry_run() || params.dry_run;
        let budget = self.take_disruption(&pod, name, dry_run).await?;
        if !dry_run {
            // The pod the budgets were counted for, not a new one of its
            // name.
            if params.uid.is_none() {
                params.uid = Some(object.meta().uid.clone());
            }
            let request = params.request(info, self.namespace(), name);
            self.delete_object(info, name, request, Acting::Master)
                .await?;
            let caller = self.caller()?;
            tracing::info!(
                %caller,
                pod = %format!("{namespace}/{name}"),
                budget = budget.as_deref().unwrap_or(""),
                "evicted a pod"
            );
        }
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        });
        Ok(json_response(StatusCode::CREATED, &status))
    }

    /// Kubernetes' `checkAndDecrement`: the eviction of `pod` (named
    /// `name`) takes one of `disruptionsAllowed` from the
    /// PodDisruptionBudget that covers it, as the disruption controller
    /// counted it, and records the pod in its `disruptedPods`, with a
    /// write conditional on the budget's resourceVersion (a lost race is
    /// decided again on the budget as it is now, so two evictions cannot
    /// both take the last disruption). A dry run decides without writing.
    /// Refusals are 429 TooManyRequests with kube-apiserver's message and
    /// cause, for the client to retry later; a pod under two budgets is a
    /// 500, as in Kubernetes. Read and written as this master (the caller
    /// was authorized for the eviction); answers the budget a disruption
    /// was taken from, if any.
    async fn take_disruption(
        &self,
        pod: &StoredPod,
        name: &str,
        dry_run: bool,
    ) -> Result<Option<String>, RestError> {
        let too_many = |cause: String| {
            let mut error = RestError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                disruption_budget::VIOLATION_MESSAGE,
            );
            error.details.causes = vec![(String::new(), cause)];
            error.details.cause_reason = "DisruptionBudget";
            error
        };
        let budget_info = registry::info(Kind::PodDisruptionBudget);
        for _ in 0..PATCH_ATTEMPTS {
            let stored = self.budgets_covering(pod).await?;
            let budgets: Vec<Budget> = stored.iter().filter_map(|o| Budget::of(o)).collect();
            let budget = match disruption_budget::decide_eviction(pod, &budgets) {
                EvictionDecision::Allowed => return Ok(None),
                EvictionDecision::Disrupt { budget } => budget,
                EvictionDecision::Refused {
                    budget,
                    desired,
                    healthy,
                } => {
                    return Err(too_many(format!(
                        "The disruption budget {budget} needs {desired} healthy pods and has {healthy} currently"
                    )))
                }
                EvictionDecision::NotYetCounted { budget } => {
                    return Err(too_many(format!(
                        "the disruption budget {budget} is still being processed by the server"
                    )))
                }
                EvictionDecision::SeveralBudgets(_) => {
                    return Err(RestError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
            };
            if dry_run {
                return Ok(Some(budget));
            }
            let object = stored.iter().find(|o| o.meta().name == budget);
            let counted = budgets.iter().find(|b| b.name == budget);
            let (Some(object), Some(counted)) = (object, counted) else {
                continue;
            };
            let Some(skiff_proto::api::object::Kind::Generic(stored_budget)) = &object.kind else {
                continue;
            };
            let mut status = counted.status.clone();
            status.take_disruption(name, std::time::SystemTime::now());
            // Conditional: the budget carries the resourceVersion it was
            // counted at.
            let written = status.write_into(stored_budget);
            let written = skiff_proto::api::Object {
                kind: Some(skiff_proto::api::object::Kind::Generic(written)),
            };
            match self
                .write(budget_info, &budget, written, true, Acting::Master)
                .await
            {
                Ok(_) => return Ok(Some(budget)),
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(too_many(
            "the disruption budget changed while the eviction was counted; try again".to_owned(),
        ))
    }

    /// The PodDisruptionBudgets of the request's namespace whose selector
    /// selects `pod`, from the leader's index of budgets by the labels
    /// they select (a linearizable read); a leader that lists the whole
    /// namespace instead is fine, `decide_eviction` matches them again.
    /// Listed as this master.
    async fn budgets_covering(&self, pod: &StoredPod) -> Result<Vec<Arc<Object>>, RestError> {
        let labels = pod.meta().labels.clone();
        let message = ListRequest {
            kind: Kind::PodDisruptionBudget.name().to_owned(),
            namespace: self.namespace().to_owned(),
            serializable: false,
            selecting: Some(skiff_proto::api::Labels { labels }),
            exact_revision: 0,
        };
        let request = self.request_as(message, Acting::Master);
        let info = registry::info(Kind::PodDisruptionBudget);
        let list = self.api.list_shared(request).await;
        Ok(list.map_err(|s| RestError::from_grpc(&s, info, ""))?.items)
    }
}

fn not_found_resource(path: &ResourcePath) -> RestError {
    let group_version = registry::group_version(&path.group, &path.version);
    let mut what = format!("{group_version} {}", path.resource);
    if let Some(sub) = &path.subresource {
        what.push('/');
        what.push_str(sub);
    }
    RestError::not_found_path(&what)
}

/// The access a watch request is authorized as, however it begins (with
/// the current objects or not): `watch` alone, as kube-apiserver's request
/// info makes every watch, of `kind` in `namespace` (`""`: every
/// namespace, or a cluster-scoped kind); of one object when the request
/// names it, by a `/watch/` path's name (`path_name`) or by the name the
/// field selector of a `?watch=true` request (`fields`) asks for exactly
/// (one a path could hold, as kube-apiserver takes it), else of the
/// collection.
fn watch_access<'a>(
    kind: Kind,
    namespace: &'a str,
    path_name: Option<&'a str>,
    fields: Option<&'a FieldSelector>,
) -> Access<'a> {
    let name = path_name.or_else(|| name_selected(fields));
    Access::new(Verb::Watch, kind, namespace, name)
}

/// The access a list request is authorized as: `list` of `kind` in
/// `namespace` (`""`: every namespace, or a cluster-scoped kind), of the
/// one object the field selector (`fields`) asks for exactly, as
/// kube-apiserver's request info takes it ([`name_selected`]), else of the
/// collection.
fn list_access<'a>(
    kind: Kind,
    namespace: &'a str,
    fields: Option<&'a FieldSelector>,
) -> Access<'a> {
    Access::new(Verb::List, kind, namespace, name_selected(fields))
}

/// The name a list's or watch's field selector asks for exactly
/// (`metadata.name=X` or `==X`), when a path could hold it: what
/// kube-apiserver's request info takes as the request's name for a list
/// or a watch (`RequiresExactMatch("metadata.name")`, kept when
/// `IsValidPathSegmentName`), so that a rule limited to `resourceNames`
/// allows it.
fn name_selected(fields: Option<&FieldSelector>) -> Option<&str> {
    fields
        .and_then(|fields| fields.exact_match("metadata.name"))
        .filter(|name| {
            !name.is_empty() && !matches!(*name, "." | "..") && !name.contains(['/', '%'])
        })
}

/// The field selector of a watch of one object (`/watch/.../NAME`):
/// `metadata.name=NAME`, or the query's own when it asks for exactly that
/// name; any other is refused, as kube-apiserver's `ListResource` refuses
/// it.
fn one_object_selector(
    info: &KindInfo,
    fields: FieldSelector,
    name: &str,
) -> Result<FieldSelector, RestError> {
    if fields.is_empty() {
        let kind = super::selectors::selector_kind(info);
        return FieldSelector::parse(kind, &format!("metadata.name={name}"))
            .map_err(|e| RestError::bad_request(e.to_string()));
    }
    if fields.exact_match("metadata.name") == Some(name) {
        Ok(fields)
    } else {
        Err(RestError::bad_request(format!(
            "fieldSelector metadata.name doesn't match requested name {name:?}"
        )))
    }
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn patch_error(info: &'static KindInfo, name: &str, e: patch::PatchError) -> RestError {
    let mut error = RestError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{} {name:?} is invalid: the patch could not be applied: {e}",
            info.qualified_kind()
        ),
    );
    error.details.name = name.to_owned();
    error.details.kind = info.name.to_owned();
    error.details.group = info.group.to_owned();
    error
}

/// Whether a request's Content-Type is server-side apply's.
fn is_apply(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(APPLY_PATCH)
}

/// Whether writes of `info`'s kind keep managed fields: every stored kind
/// (Events, kept in the leader's memory, are left as they are).
fn keeps_managed_fields(info: &KindInfo) -> bool {
    !info.kind.is_ephemeral()
}

/// Records a write that is not an apply (create, replace, patch) by
/// `manager` through `scope` in `object`'s managed fields; `live` is the
/// object it replaces (its metadata and its JSON), `None` for a create.
fn record_update(
    info: &'static KindInfo,
    manager: &str,
    scope: Scope,
    live: Option<(&ObjectMeta, &Value)>,
    object: &mut Object,
) {
    if !keeps_managed_fields(info) {
        return;
    }
    let written = match live {
        // Compared as it will be stored, so that fields left to their
        // defaults do not count as removed.
        Some(_) => {
            let mut defaulted = object.clone();
            apply_defaults(&mut defaulted);
            wire::encode(info, &defaulted)
        }
        None => wire::encode(info, object),
    };
    let managed = ManagedFields::for_write(object.meta(), live.map(|(meta, _)| meta));
    let now = now_rfc3339();
    let update = Update {
        info,
        manager,
        scope,
        now: &now,
    };
    let recorded = update.record(live.map(|(_, value)| value), &written, managed);
    if let Ok(meta) = object.meta_mut() {
        meta.managed_fields = recorded.to_proto();
    }
}

/// kube-apiserver's check of `fieldManager`: at most 128 bytes, all
/// printable.
fn check_field_manager(options: &'static str, manager: &str) -> Result<(), RestError> {
    let max = field_manager::MAX_FIELD_MANAGER_LENGTH;
    if manager.len() > max {
        return Err(options_invalid(
            options,
            "fieldManager",
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some((at, c)) = manager.char_indices().find(|(_, c)| c.is_control()) {
        return Err(options_invalid(
            options,
            "fieldManager",
            "FieldValueInvalid",
            format!(
                "Invalid value: {manager:?}: invalid character U+{:04X} (at position {at})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// The first word of a user agent (`kubectl/v1.35.2 (linux/amd64) ...` is
/// `kubectl`), printable characters only, at most 128 bytes: the manager
/// of a write that names none.
fn agent_prefix(agent: &str) -> String {
    let first = agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in first.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > field_manager::MAX_FIELD_MANAGER_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// A 422 about a request's options (`PatchOptions`, ...), in
/// kube-apiserver's words: `PatchOptions.meta.k8s.io "" is invalid:
/// fieldManager: Required value: is required for apply patch`.
fn options_invalid(
    options: &'static str,
    field: &str,
    reason: &'static str,
    detail: String,
) -> RestError {
    let mut e = RestError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{options}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
    );
    e.details.group = "meta.k8s.io".to_owned();
    e.details.kind = options.to_owned();
    e.details.causes = vec![(field.to_owned(), detail)];
    e.details.cause_reason = reason;
    e
}

/// What kube-apiserver checks of an applied configuration before it
/// reads it: an object naming its `apiVersion`, `kind`, and the URL's
/// object.
fn check_applied(config: &Value, name: &str) -> Result<(), RestError> {
    if !config.is_object() {
        return Err(RestError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    for (field, called) in [("apiVersion", "apiVersion"), ("kind", "Kind")] {
        if config[field].as_str().is_none_or(str::is_empty) {
            return Err(RestError::bad_request(format!(
                "Object '{called}' is missing in the applied configuration"
            )));
        }
    }
    let given = config["metadata"]["name"].as_str().unwrap_or("");
    if given != name {
        return Err(RestError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// An apply refused by the field manager: conflicts as kube-apiserver
/// answers them (409, a `FieldManagerConflict` cause per field), anything
/// else a bad request.
fn apply_error(info: &KindInfo, name: &str, e: field_manager::Error) -> RestError {
    let message = e.to_string();
    match e {
        field_manager::Error::Conflicts(conflicts) => {
            let mut error = RestError::new(StatusCode::CONFLICT, "Conflict", message);
            error.details.causes = conflicts
                .iter()
                .map(|c| (c.field.clone(), c.message()))
                .collect();
            error.details.cause_reason = "FieldManagerConflict";
            error
        }
        _ => {
            let mut error = RestError::bad_request(format!(
                "{} {name:?}: the applied configuration cannot be read: {message}",
                info.qualified_kind()
            ));
            error.details.name = name.to_owned();
            error.details.kind = info.resource.to_owned();
            error.details.group = info.group.to_owned();
            error
        }
    }
}

/// A write conditional on a resourceVersion that is not the object's.
fn modified(info: &KindInfo, name: &str) -> RestError {
    RestError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            info.qualified_resource()
        ),
    )
}

/// Whether `item` comes after `after` (a continue token's last
/// `namespace/name`) in the order its list is in: stored kinds and the
/// metrics API's readings by (namespace, name), as the cache and the
/// readings keep them; Events by that text, as their store sorts them.
/// (As text, `team-a/x` would come before `team/y`.)
fn comes_after(kind: Kind, item: &Object, after: &str) -> bool {
    if kind.is_ephemeral() {
        return item_key(item).as_str() > after;
    }
    let meta = item.meta();
    let (namespace, name) = after.split_once('/').unwrap_or(("", after));
    (meta.namespace.as_str(), meta.name.as_str()) > (namespace, name)
}

/// `namespace/name` of an object: a continue token's last key.
fn item_key(object: &Object) -> String {
    let meta = object.meta();
    format!("{}/{}", meta.namespace, meta.name)
}

/// A `<Kind>List` of `items`, written straight into the answer's bytes
/// (no JSON tree of the items: see [`wire::write_json`]).
fn list_response(info: &KindInfo, metadata: &Value, items: &[Arc<Object>]) -> Response<Body> {
    let mut out = Vec::with_capacity(256 + items.len() * 640);
    out.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut out, &format!("{}List", info.name));
    out.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, info.api_version);
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut out, metadata);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::write_json(&mut out, info, item);
    }
    out.extend_from_slice(b"]}");
    json_bytes_response(StatusCode::OK, out)
}

/// Which revision a list is read at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListAt {
    /// The newest (or, with `resourceVersion`, one at least as new).
    Newest,
    /// `resourceVersionMatch=Exact`.
    Exact(u64),
    /// A page after the first: the first page's revision (0 for kinds
    /// without history), after the last key it gave.
    Continue { revision: u64, after: String },
}

impl ListAt {
    /// The exact revision asked for (0: the newest).
    fn revision(&self) -> u64 {
        match self {
            ListAt::Newest => 0,
            ListAt::Exact(revision) | ListAt::Continue { revision, .. } => *revision,
        }
    }

    /// A list's 410, in kube-apiserver's words for what was asked.
    fn explain(&self, mut e: RestError) -> RestError {
        if e.code == StatusCode::GONE {
            e.message = match self {
                ListAt::Newest => return e,
                ListAt::Exact(_) => "The resourceVersion for the provided list is too old.".to_owned(),
                ListAt::Continue { .. } => "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_owned(),
            };
        }
        e
    }
}

/// Whether lists of `kind` can be read at an earlier revision: stored
/// kinds can; Events and the metrics API's readings cannot.
fn revisioned(kind: Kind) -> bool {
    !kind.is_ephemeral() && !kind.is_metrics()
}

fn parse_revision(rv: &str) -> Option<u64> {
    rv.parse().ok().filter(|r| *r > 0)
}

fn encode_continue(rv: &str, after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "after": after}).to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), RestError> {
    let bad = || {
        RestError::bad_request(format!(
            "continue token {token:?} is not one this server gave"
        ))
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (value["rv"].as_str(), value["after"].as_str()) {
        (Some(rv), Some(after)) => Ok((rv.to_owned(), after.to_owned())),
        _ => Err(bad()),
    }
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet or StatefulSet,
/// or of a custom kind by its definition's paths.
fn scale_of(info: &'static KindInfo, object: &Object) -> Value {
    let value = wire::encode(info, object);
    if let Some(paths) = custom_kinds::scale_paths(info) {
        return custom_kinds::scale_of(&paths, &value);
    }
    let meta = &value["metadata"];
    let selector = table::label_selector(&value["spec"]["selector"]).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": value["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": value["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// `object` with `spec.replicas` from a Scale (conditional on the Scale's
/// resourceVersion when it carries one).
fn with_replicas(
    info: &'static KindInfo,
    mut object: Object,
    scale: &Value,
) -> Result<Object, RestError> {
    let name = object.meta().name.clone();
    let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| {
        RestError::invalid(
            info,
            &name,
            vec![("spec.replicas".into(), "Required value: an integer".into())],
        )
    })?;
    let replicas = i32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            RestError::invalid(
                info,
                &name,
                vec![(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            )
        })?;
    let rv = scale["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match custom_kinds::scale_paths(info) {
        Some(paths) => {
            if !custom_kinds::set_replicas(&paths, &mut object, replicas) {
                return Err(RestError::invalid(
                    info,
                    &name,
                    vec![(
                        paths.spec_replicas.join("."),
                        "Invalid value: the path to it holds something other than an object".into(),
                    )],
                ));
            }
        }
        None => skiff_objects::scale::set_replicas(&mut object, replicas)
            .map_err(|e| RestError::internal(format!("{}: {e}", info.resource)))?,
    }
    if let Ok(meta) = object.meta_mut() {
        if !rv.is_empty() {
            meta.resource_version = rv;
        }
    }
    Ok(object)
}

/// Refuses a delete whose UID precondition names another object than
/// `object`, in kube-apiserver's words.
fn check_uid(info: &KindInfo, name: &str, uid: &str, object: &Object) -> Result<(), RestError> {
    let current = &object.meta().uid;
    if current == uid {
        return Ok(());
    }
    Err(RestError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {name:?}: Precondition failed: UID in precondition: {uid}, UID in object meta: {current}",
            info.qualified_resource()
        ),
    ))
}

/// What a DELETE asks for, from its `DeleteOptions` body (what kubectl
/// sends: `{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":
/// "Background"}`) over its query parameters (`gracePeriodSeconds`,
/// `propagationPolicy`, `orphanDependents`, `dryRun`, which clients such
/// as the Python one send instead).
#[derive(Debug, Default, PartialEq)]
struct DeleteParams {
    resource_version: Option<String>,
    uid: Option<String>,
    propagation: Option<Propagation>,
    grace_period_seconds: Option<i64>,
    dry_run: bool,
}

impl DeleteParams {
    /// `content_type` says how the body is written: JSON (kubectl), YAML,
    /// or Kubernetes protobuf (helm 4 deletes with protobuf bodies).
    fn read(body: &[u8], content_type: &str, query: &Query) -> Result<DeleteParams, RestError> {
        let mut params = DeleteParams::from_query(query)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(params);
        }
        let value = wire::parse_body(body, content_type).map_err(|e| {
            RestError::bad_request(format!("the DeleteOptions body: {}", e.message))
        })?;
        if !value.is_object() {
            return Err(RestError::bad_request(
                "the DeleteOptions body must be an object",
            ));
        }
        let body = DeleteParams::from_json(&value)?;
        params.resource_version = body.resource_version.or(params.resource_version);
        params.uid = body.uid.or(params.uid);
        params.propagation = body.propagation.or(params.propagation);
        params.grace_period_seconds = body.grace_period_seconds.or(params.grace_period_seconds);
        params.dry_run |= body.dry_run;
        Ok(params)
    }

    fn from_query(query: &Query) -> Result<DeleteParams, RestError> {
        let text = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
        let grace = text("gracePeriodSeconds").map_or(Value::Null, Value::from);
        let grace_period_seconds = integer(&grace, "gracePeriodSeconds")?;
        let orphan = text("orphanDependents").map(|o| o == "true");
        Ok(DeleteParams {
            propagation: propagation(text("propagationPolicy"), orphan)?,
            grace_period_seconds,
            dry_run: text("dryRun") == Some("All"),
            ..DeleteParams::default()
        })
    }

    /// A `DeleteOptions` object (a DELETE's body, an Eviction's
    /// `deleteOptions`).
    fn from_json(value: &Value) -> Result<DeleteParams, RestError> {
        let preconditions = &value["preconditions"];
        let grace_period_seconds = integer(&value["gracePeriodSeconds"], "gracePeriodSeconds")?;
        let policy = value["propagationPolicy"]
            .as_str()
            .filter(|p| !p.is_empty());
        Ok(DeleteParams {
            resource_version: preconditions["resourceVersion"].as_str().map(str::to_owned),
            uid: preconditions["uid"].as_str().map(str::to_owned),
            propagation: propagation(policy, value["orphanDependents"].as_bool())?,
            grace_period_seconds,
            dry_run: value["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All")),
        })
    }

    /// The API's delete of `name` (in `namespace`) of `info`'s kind.
    fn request(&self, info: &KindInfo, namespace: &str, name: &str) -> DeleteRequest {
        DeleteRequest {
            kind: info.kind.name().to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: self.resource_version.clone().unwrap_or_default(),
            propagation_policy: self
                .propagation
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            grace_period_seconds: self.grace_period_seconds,
            uid: self.uid.clone().unwrap_or_default(),
        }
    }
}

/// An integer field of a JSON body (`None` when absent); int64s decoded
/// from protobuf bodies may come as strings.
fn integer(value: &Value, field: &str) -> Result<Option<i64>, RestError> {
    if value.is_null() {
        return Ok(None);
    }
    let parsed = value.as_i64().or_else(|| value.as_str()?.parse().ok());
    let refused = || RestError::bad_request(format!("{field} {value} is not an integer"));
    parsed.map(Some).ok_or_else(refused)
}

/// `propagationPolicy`, or the deprecated `orphanDependents` (true:
/// Orphan, false: Background); not both, as kube-apiserver says.
fn propagation(
    policy: Option<&str>,
    orphan: Option<bool>,
) -> Result<Option<Propagation>, RestError> {
    match (policy, orphan) {
        (Some(_), Some(_)) => Err(RestError::bad_request(
            "orphanDependents and propagationPolicy cannot both be set",
        )),
        (Some(policy), None) => {
            Propagation::parse(policy).map_err(|e| RestError::bad_request(e.to_string()))
        }
        (None, Some(true)) => Ok(Some(Propagation::Orphan)),
        (None, Some(false)) => Ok(Some(Propagation::Background)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_for_a_request_is_authorized_as_the_request_was_asked() {
        assert_eq!(
            [View::Object, View::Status, View::Scale].map(View::part),
            ["", "status", "scale"]
        );
        // A PUT of the object or its status is the update the API service
        // takes its write for.
        assert_eq!(Acting::writing(View::Object, Verb::Update), Acting::Caller);
        assert_eq!(Acting::writing(View::Status, Verb::Update), Acting::Caller);
        // A PUT of the scale writes the whole object: an update of `scale`.
        let put_scale = RequestedAs {
            verb: Verb::Update,
            scale: true,
        };
        assert_eq!(
            Acting::writing(View::Scale, Verb::Update),
            Acting::CallerAsRequested(put_scale)
        );
        // A PATCH is a patch of the part it names, whatever it writes.
        for (view, scale) in [
            (View::Object, false),
            (View::Status, false),
            (View::Scale, true),
        ] {
            let patch = RequestedAs {
                verb: Verb::Patch,
                scale,
            };
            assert_eq!(
                Acting::writing(view, Verb::Patch),
                Acting::CallerAsRequested(patch),
                "{view:?}"
            );
        }
    }

    #[test]
    fn a_get_of_a_subresource_is_authorized_as_a_get_of_it() {
        // The object itself: the API service's `get`, as the caller.
        assert_eq!(View::Object.get_access(Kind::Pod, "ns", "web"), None);
        // `status` and `scale`: their own `get`, not the object's.
        let get = |kind| Access::new(Verb::Get, kind, "ns", Some("web"));
        assert_eq!(
            View::Status.get_access(Kind::Pod, "ns", "web"),
            Some(get(Kind::Pod).with_subresource("status"))
        );
        assert_eq!(
            View::Scale.get_access(Kind::Deployment, "ns", "web"),
            Some(get(Kind::Deployment).with_subresource("scale"))
        );
    }

    #[test]
    fn a_watch_is_authorized_as_watch_alone_of_what_it_names() {
        let parse = |text: &str| FieldSelector::parse("ConfigMap", text).unwrap();
        let watch = |namespace, name| Access::new(Verb::Watch, Kind::ConfigMap, namespace, name);
        // Beginning with the current objects or not (the plan is not
        // asked): `watch` of the collection, never `list`.
        assert_eq!(
            watch_access(Kind::ConfigMap, "narrow", None, None),
            watch("narrow", None)
        );
        assert_eq!(
            watch_access(Kind::ConfigMap, "", None, None),
            watch("", None)
        );
        let labels_only = parse("metadata.namespace=narrow");
        assert_eq!(
            watch_access(Kind::ConfigMap, "narrow", None, Some(&labels_only)),
            watch("narrow", None)
        );
        // One object: a `/watch/` path's, or the one its field selector
        // asks for exactly.
        assert_eq!(
            watch_access(Kind::ConfigMap, "narrow", Some("web"), None),
            watch("narrow", Some("web"))
        );
        for selector in [
            "metadata.name=web",
            "metadata.name==web,metadata.namespace=narrow",
        ] {
            let fields = parse(selector);
            assert_eq!(
                watch_access(Kind::ConfigMap, "narrow", None, Some(&fields)),
                watch("narrow", Some("web")),
                "{selector}"
            );
        }
        // Not one it excludes, nor one no path could hold.
        for selector in [
            "metadata.name!=web",
            "metadata.name=a/b",
            "metadata.name=..",
            "metadata.name=",
        ] {
            let fields = parse(selector);
            assert_eq!(
                watch_access(Kind::ConfigMap, "narrow", None, Some(&fields)),
                watch("narrow", None),
                "{selector}"
            );
        }
    }

    #[test]
    fn a_list_is_authorized_as_a_list_of_what_its_field_selector_names() {
        let parse = |text: &str| FieldSelector::parse("ConfigMap", text).unwrap();
        let list = |namespace, name| Access::new(Verb::List, Kind::ConfigMap, namespace, name);
        // No selector, or one naming no object: the collection.
        assert_eq!(
            list_access(Kind::ConfigMap, "narrow", None),
            list("narrow", None)
        );
        assert_eq!(list_access(Kind::ConfigMap, "", None), list("", None));
        let namespace_only = parse("metadata.namespace=narrow");
        assert_eq!(
            list_access(Kind::ConfigMap, "narrow", Some(&namespace_only)),
            list("narrow", None)
        );
        // The one object its field selector asks for exactly, so that a
        // rule's `resourceNames` allow it, as kube-apiserver's request
        // info takes the name for a list.
        for selector in [
            "metadata.name=settings",
            "metadata.name==settings,metadata.namespace=narrow",
        ] {
            let fields = parse(selector);
            assert_eq!(
                list_access(Kind::ConfigMap, "narrow", Some(&fields)),
                list("narrow", Some("settings")),
                "{selector}"
            );
        }
        // Not one it excludes, nor one no path could hold (the same rule
        // as a watch's).
        for selector in [
            "metadata.name!=settings",
            "metadata.name=a/b",
            "metadata.name=.",
            "metadata.name=",
        ] {
            let fields = parse(selector);
            assert_eq!(
                list_access(Kind::ConfigMap, "narrow", Some(&fields)),
                list("narrow", None),
                "{selector}"
            );
            assert_eq!(
                watch_access(Kind::ConfigMap, "narrow", None, Some(&fields)).name,
                None,
                "{selector}"
            );
        }
    }

    #[test]
    fn a_watch_of_one_object_selects_it_by_name() {
        let maps = registry::info(Kind::ConfigMap);
        let parse = |text: &str| FieldSelector::parse("ConfigMap", text).unwrap();
        let named = |object: &str| json!({"metadata": {"name": object, "namespace": "ns"}});
        let alone = one_object_selector(maps, FieldSelector::default(), "web").unwrap();
        assert!(alone.matches_json(&named("web")));
        assert!(!alone.matches_json(&named("db")));
        // The query may name the same object, with more requirements.
        let same = parse("metadata.name=web,metadata.namespace=ns");
        assert_eq!(
            one_object_selector(maps, same.clone(), "web").unwrap(),
            same
        );
        let other = one_object_selector(maps, parse("metadata.name=db"), "web").unwrap_err();
        assert_eq!(other.code, StatusCode::BAD_REQUEST);
        assert!(other.message.contains("doesn't match"), "{}", other.message);
        let unnamed = parse("metadata.namespace=ns");
        assert!(one_object_selector(maps, unnamed, "web").is_err());
    }

    #[test]
    fn a_statefulsets_scale_reads_and_sets_its_replicas() {
        let content = json!({
            "spec": {"replicas": 3, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "db"}}},
            "status": {"replicas": 2},
        });
        let set = skiff_proto::v1::GenericObject {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            metadata: Some(ObjectMeta {
                name: "db".into(),
                namespace: "default".into(),
                resource_version: "5".into(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).unwrap(),
        };
        let object = Object {
            kind: Some(skiff_proto::api::object::Kind::Generic(set)),
        };
        let info = registry::info(Kind::StatefulSet);
        let scale = scale_of(info, &object);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=db");

        let wanted = json!({"spec": {"replicas": 5}, "metadata": {"resourceVersion": "5"}});
        let scaled = with_replicas(info, object.clone(), &wanted).unwrap();
        let Some(skiff_proto::api::object::Kind::Generic(g)) = &scaled.kind else {
            panic!("not generic: {scaled:?}");
        };
        let content = skiff_objects::generic::content(g);
        assert_eq!(content["spec"]["replicas"], 5);
        assert_eq!(content["spec"]["serviceName"], "db", "the rest kept");
        let negative = json!({"spec": {"replicas": -1}});
        assert!(with_replicas(info, object, &negative).is_err());
    }

    #[test]
    fn continue_tokens_round_trip_and_foreign_ones_are_refused() {
        let token = encode_continue("42", "ns/web-3");
        assert_eq!(
            decode_continue(&token).unwrap(),
            ("42".into(), "ns/web-3".into())
        );
        assert_eq!(
            decode_continue("nonsense!").unwrap_err().code,
            StatusCode::BAD_REQUEST
        );
    }

    fn read(body: &[u8], query: &[(&str, &str)]) -> Result<DeleteParams, RestError> {
        let query: Query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DeleteParams::read(body, "application/json", &query)
    }

    #[test]
    fn delete_options_read_preconditions_policies_and_grace_periods() {
        let body = br#"{"kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"resourceVersion": "7", "uid": "u"},
            "propagationPolicy": "Foreground", "gracePeriodSeconds": 0}"#;
        let p = read(body, &[]).unwrap();
        assert_eq!(p.resource_version.as_deref(), Some("7"));
        assert_eq!(p.uid.as_deref(), Some("u"));
        assert_eq!(p.propagation, Some(Propagation::Foreground));
        assert_eq!(p.grace_period_seconds, Some(0), "0 is a force delete");
        // What kubectl delete sends by default.
        let p = read(br#"{"propagationPolicy": "Background"}"#, &[]).unwrap();
        assert_eq!(p.propagation, Some(Propagation::Background));
        assert_eq!(p.grace_period_seconds, None);
        // No body (the Python client): the query says it; a body wins.
        let query = [("gracePeriodSeconds", "5"), ("propagationPolicy", "Orphan")];
        let p = read(b"", &query).unwrap();
        assert_eq!(p.grace_period_seconds, Some(5));
        assert_eq!(p.propagation, Some(Propagation::Orphan));
        let p = read(br#"{"gracePeriodSeconds": 1}"#, &query).unwrap();
        assert_eq!(p.grace_period_seconds, Some(1));
        assert_eq!(p.propagation, Some(Propagation::Orphan));
        // The deprecated orphanDependents.
        let p = read(br#"{"orphanDependents": true}"#, &[]).unwrap();
        assert_eq!(p.propagation, Some(Propagation::Orphan));
        let p = read(b"", &[("orphanDependents", "false")]).unwrap();
        assert_eq!(p.propagation, Some(Propagation::Background));
        assert_eq!(read(b"", &[]).unwrap(), DeleteParams::default());
    }

    #[test]
    fn bad_delete_options_are_refused() {
        let both = br#"{"propagationPolicy": "Orphan", "orphanDependents": true}"#;
        let refused = [
            read(br#"{"propagationPolicy": "Sideways"}"#, &[]),
            read(both, &[]),
            read(br#"{"gracePeriodSeconds": "soon"}"#, &[]),
            read(b"", &[("gracePeriodSeconds", "soon")]),
            read(b"[", &[]),
            read(b"[]", &[]),
        ];
        for answer in refused {
            assert_eq!(answer.unwrap_err().code, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_delete_request_carries_the_options_to_the_api() {
        let params = DeleteParams {
            uid: Some("u".into()),
            propagation: Some(Propagation::Orphan),
            grace_period_seconds: Some(3),
            ..DeleteParams::default()
        };
        let request = params.request(registry::info(Kind::Pod), "shop", "web");
        assert_eq!(request.kind, "Pod");
        assert_eq!(request.namespace, "shop");
        assert_eq!(request.name, "web");
        assert_eq!(request.propagation_policy, "Orphan");
        assert_eq!(request.grace_period_seconds, Some(3));
        assert_eq!(request.uid, "u");
        assert_eq!(request.resource_version, "");
        let plain = DeleteParams::default().request(registry::info(Kind::Pod), "shop", "web");
        assert_eq!(plain.propagation_policy, "");
        assert_eq!(plain.grace_period_seconds, None);
    }

    #[test]
    fn server_side_apply_is_told_by_its_content_type() {
        assert!(is_apply("application/apply-patch+yaml"));
        assert!(is_apply("application/apply-patch+yaml; charset=utf-8"));
        assert!(!is_apply("application/merge-patch+json"));
        assert!(!is_apply(""));
    }

    #[test]
    fn managers_are_named_as_kube_apiserver_names_them() {
        let kubectl = "kubectl/v1.35.2 (linux/amd64) kubernetes/abc";
        assert_eq!(agent_prefix(kubectl), "kubectl");
        assert_eq!(agent_prefix("Helm/4.1.4"), "Helm");
        assert_eq!(agent_prefix("python\u{7}client"), "pythonclient");
        assert_eq!(agent_prefix(&"x".repeat(200)).len(), 128);
        assert_eq!(agent_prefix(""), "");
        assert!(check_field_manager("PatchOptions", "helm").is_ok());
        let e = check_field_manager("PatchOptions", &"m".repeat(129)).unwrap_err();
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.contains("fieldManager: Too long"),
            "{}",
            e.message
        );
        let e = check_field_manager("CreateOptions", "a\tb").unwrap_err();
        assert!(
            e.message
                .starts_with("CreateOptions.meta.k8s.io \"\" is invalid"),
            "{}",
            e.message
        );
        assert!(e.message.contains("U+0009"), "{}", e.message);
    }

    #[test]
    fn an_apply_without_a_manager_is_refused_in_kube_apiservers_words() {
        let e = options_invalid(
            "PatchOptions",
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch".to_owned(),
        );
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        let status = e.to_json();
        let cause = &status["details"]["causes"][0];
        assert_eq!(cause["reason"], "FieldValueRequired");
        assert_eq!(cause["field"], "fieldManager");
    }

    #[test]
    fn applied_configurations_must_name_their_type_and_the_urls_object() {
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert!(check_applied(&ok, "c").is_ok());
        let refused = [
            (json!([1]), "must be an object"),
            (
                json!({"kind": "ConfigMap", "metadata": {"name": "c"}}),
                "'apiVersion'",
            ),
            (
                json!({"apiVersion": "v1", "metadata": {"name": "c"}}),
                "'Kind'",
            ),
            (ok.clone(), "does not match the name on the URL (d)"),
        ];
        for (config, says) in refused {
            let name = if says.ends_with("(d)") { "d" } else { "c" };
            let e = check_applied(&config, name).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn apply_conflicts_are_409s_with_a_cause_per_field() {
        let conflicts = vec![field_manager::Conflict {
            manager: "\"kubectl-scale\" with subresource \"scale\" using apps/v1".to_owned(),
            field: ".spec.replicas".to_owned(),
        }];
        let deployments = registry::info(Kind::Deployment);
        let refused = field_manager::Error::Conflicts(conflicts);
        let e = apply_error(deployments, "web", refused);
        assert_eq!(e.code, StatusCode::CONFLICT);
        assert_eq!(e.reason, "Conflict");
        assert!(
            e.message.starts_with("Apply failed with 1 conflict"),
            "{}",
            e.message
        );
        let cause = &e.to_json()["details"]["causes"][0];
        assert_eq!(cause["reason"], "FieldManagerConflict");
        assert_eq!(cause["field"], ".spec.replicas");
        assert_eq!(
            cause["message"],
            "conflict with \"kubectl-scale\" with subresource \"scale\" using apps/v1"
        );
        let e = apply_error(deployments, "web", field_manager::Error::ManagedFieldsGiven);
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("metadata.managedFields must be nil"),
            "{}",
            e.message
        );
    }
}
