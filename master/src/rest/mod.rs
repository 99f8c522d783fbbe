//! The Kubernetes REST API, served on the same port and over the same
//! mutual TLS as the gRPC API: a request with `content-type:
//! application/grpc` goes to gRPC ([`grpc_or_rest`]), anything else here.
//!
//! Every object request becomes a call of the gRPC API service itself
//! ([`ApiService`]), made with the caller's verified identity, so that the
//! same authorization, validation and leader routing apply to both. This
//! module turns URLs, query parameters and bodies into those calls, and
//! their answers into Kubernetes JSON, Tables, watch streams and `Status`
//! errors; two subresources answer something else: a pod's log as text
//! ([`pod_logs`]) and HTTP relayed to a pod or a service ([`proxy`]);
//! `exec`, `attach` and `portforward` upgrade the connection to a WebSocket
//! ([`pod_streams`], [`websocket`]) or to SPDY/3.1 ([`spdy_streams`],
//! [`spdy`]), and so may a watch ([`watch_websocket`]). The
//! access reviews, never stored, are answered from the same authorization
//! rules ([`access_review`]); the
//! OpenAPI documents `kubectl explain` and kubectl's validation read
//! are made from the generated API schema ([`openapi`]). Custom kinds
//! (CustomResourceDefinitions') are served like the others, with their
//! own Tables and Scale ([`custom_kinds`]). A TokenRequest
//! (`serviceaccounts/token`) is answered with a service account token
//! ([`token_request`]), and the issuer's OIDC discovery documents are
//! served ([`issuer_discovery`]).
//! `/version` and the health checks are open, as kube-apiserver keeps them
//! for anonymous callers; everything else needs a client certificate
//! signed by the cluster CA or a service account token
//! ([`authentication`]); a caller may then act as another user, if it is
//! allowed to impersonate it (`kubectl --as`, [`impersonation`]).

mod access_review;
mod authentication;
mod custom_kinds;
pub mod discovery;
mod impersonation;
mod issuer_discovery;
mod openapi;
pub mod patch;
pub mod path;
mod pod_logs;
mod pod_streams;
pub mod protobuf;
mod proxy;
mod resources;
pub mod selectors;
pub mod spdy;
mod spdy_streams;
pub mod status;
mod stream_session;
pub mod table;
mod token_request;
mod watch;
mod watch_websocket;
pub mod websocket;
pub mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::Value;
use skiff_security::PeerInfo;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{ApiService, MAX_API_REQUEST};
use path::Target;
use status::RestError;

/// Serves the REST API of one master.
pub struct RestApi {
    api: Arc<ApiService>,
    /// `host:port` this master's API is reached at (for `/api`).
    server_address: String,
    /// Built on their first request.
    openapi: openapi::OpenApi,
    shutdown: CancellationToken,
}

/// The parsed query string; a parameter given twice keeps its last value.
pub(crate) type Query = HashMap<String, String>;

impl RestApi {
    pub fn new(
        api: Arc<ApiService>,
        server_address: String,
        shutdown: CancellationToken,
    ) -> RestApi {
        RestApi {
            api,
            server_address,
            openapi: openapi::OpenApi::default(),
            shutdown,
        }
    }

    /// The REST API as an axum router (every path goes to [`RestApi::serve`]).
    pub fn into_router(self) -> axum::Router {
        let this = Arc::new(self);
        axum::Router::new().fallback(move |request: Request<Body>| {
            let this = this.clone();
            async move { this.serve(request).await }
        })
    }

    async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let uri_path = request.uri().path().to_owned();
        let answer = self.answer(request).await;
        match answer {
            Ok(response) => response,
            Err(e) => {
                if e.code.is_server_error() {
                    tracing::warn!(%method, path = %uri_path, code = e.code.as_u16(), message = %e.message, "REST request failed");
                } else {
                    tracing::debug!(%method, path = %uri_path, code = e.code.as_u16(), message = %e.message, "REST request refused");
                }
                error_response(&e)
            }
        }
    }

    async fn answer(&self, request: Request<Body>) -> Result<Response<Body>, RestError> {
        let (mut parts, body) = request.into_parts();
        let target = path::parse(parts.uri.path());
        let peer = parts.extensions.get::<PeerInfo>().cloned();
        match target {
            Target::Version => return Ok(json_response(StatusCode::OK, &discovery::version())),
            Target::Health => {
                return Ok(text_response(StatusCode::OK, "ok"));
            }
            _ => {}
        }
        let tokens = self.api.service_account_tokens();
        let peer =
            authentication::authenticate(tokens, peer, &mut parts.headers, SystemTime::now())?;
        let peer = impersonation::impersonate(&self.api, peer, &mut parts.headers)?;
        let Some(identity) = peer.identity.clone() else {
            return Err(RestError::unauthorized());
        };
        let accept = header_text(&parts.headers, header::ACCEPT);
        let query = parse_query(parts.uri.query());
        let only_get = |method: &Method| {
            if *method == Method::GET {
                Ok(())
            } else {
                Err(RestError::method_not_allowed(method, parts.uri.path()))
            }
        };
        match target {
            Target::CoreVersions => {
                only_get(&parts.method)?;
                Ok(if discovery::wants_aggregated(&accept) {
                    aggregated_response(&discovery::aggregated(true))
                } else {
                    json_response(
                        StatusCode::OK,
                        &discovery::core_versions(&self.server_address),
                    )
                })
            }
            Target::Groups => {
                only_get(&parts.method)?;
                Ok(if discovery::wants_aggregated(&accept) {
                    aggregated_response(&discovery::aggregated(false))
                } else {
                    json_response(StatusCode::OK, &discovery::groups())
                })
            }
            Target::Group(group) => {
                only_get(&parts.method)?;
                discovery::group(&group)
                    .map(|d| json_response(StatusCode::OK, &d))
                    .ok_or_else(|| RestError::not_found_path(parts.uri.path()))
            }
            Target::GroupVersion { group, version } => {
                only_get(&parts.method)?;
                discovery::resources(&group, &version)
                    .map(|d| json_response(StatusCode::OK, &d))
                    .ok_or_else(|| RestError::not_found_path(parts.uri.path()))
            }
            Target::OpenApiV2 => {
                only_get(&parts.method)?;
                let legacy = parts.uri.path().trim_end_matches('/') == "/swagger-2.0.0.pb-v1";
                Ok(self.openapi.v2(legacy, &accept, &parts.headers))
            }
            Target::OpenApiV3(path) => {
                only_get(&parts.method)?;
                self.openapi.v3(&path, &query, &accept, &parts.headers)
            }
            Target::OpenIdConfiguration => {
                only_get(&parts.method)?;
                let document = issuer_discovery::Document::OpenIdConfiguration;
                let authorized = self.api.authorize_path(&identity, "get", parts.uri.path());
                issuer_discovery::serve(document, tokens, authorized, &self.server_address)
            }
            Target::Jwks => {
                only_get(&parts.method)?;
                let document = issuer_discovery::Document::Jwks;
                let authorized = self.api.authorize_path(&identity, "get", parts.uri.path());
                issuer_discovery::serve(document, tokens, authorized, &self.server_address)
            }
            Target::Unknown => Err(RestError::not_found_path(parts.uri.path())),
            Target::Version | Target::Health => Err(RestError::internal("unreachable route")),
            Target::Resource(resource) if pod_streams::is_pod_stream(&resource) => {
                let (Some(namespace), Some(name), Some(subresource)) = (
                    resource.namespace.as_deref(),
                    resource.name.as_deref(),
                    resource.subresource.as_deref(),
                ) else {
                    return Err(RestError::not_found_path(parts.uri.path()));
                };
                let request = pod_streams::StreamRequest {
                    api: &self.api,
                    peer: &peer,
                    namespace,
                    name,
                    subresource,
                    shutdown: self.shutdown.clone(),
                };
                pod_streams::serve(request, &mut parts).await
            }
            Target::Resource(resource) => {
                let body = read_body(body).await?;
                let upgrade = watch_websocket::Upgrade::of(&mut parts);
                let call = resources::Call {
                    api: &self.api,
                    peer: &peer,
                    method: &parts.method,
                    uri: &parts.uri,
                    path: &resource,
                    query: &query,
                    headers: &parts.headers,
                    upgrade: upgrade.as_ref(),
                    shutdown: &self.shutdown,
                };
                call.run(body).await
            }
        }
    }
}

/// Reads a request body of at most [`MAX_API_REQUEST`] bytes.
async fn read_body(body: Body) -> Result<bytes::Bytes, RestError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, MAX_API_REQUEST)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RestError::too_large(MAX_API_REQUEST))
        }
        Err(e) => Err(RestError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// A gRPC request of the API service, made as the REST caller `peer`,
/// reading the kinds held as documents as documents (as REST serves them).
pub(crate) fn as_caller<T>(peer: &PeerInfo, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(peer.clone());
    let format = skiff_objects::legacy_bodies::LATEST_FORMAT.to_string();
    if let Ok(value) = format.parse() {
        request
            .metadata_mut()
            .insert(skiff_objects::legacy_bodies::FORMAT_HEADER, value);
    }
    request
}

pub(crate) fn parse_query(query: Option<&str>) -> Query {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON answer.
pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    json_bytes_response(code, serde_json::to_vec(value).unwrap_or_default())
}

/// A JSON answer already written.
pub(crate) fn json_bytes_response(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn aggregated_response(value: &Value) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, value);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    response
}

fn text_response(code: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .unwrap_or_default()
}

/// A `Status` answer for `e`.
pub(crate) fn error_response(e: &RestError) -> Response<Body> {
    json_response(e.code, &e.to_json())
}

/// Adds a `Warning` header (`299 - "text"`, as kube-apiserver writes them;
/// kubectl prints each as `Warning: text`) per warning.
pub(crate) fn add_warnings(response: &mut Response<Body>, warnings: &[String]) {
    for warning in warnings {
        let text = warning
            .replace(['"', '\\'], "'")
            .replace(|c: char| c.is_control(), " ");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
}

/// Sends gRPC requests (`content-type: application/grpc...`) to `grpc` and
/// every other request to `rest`.
pub fn grpc_or_rest(grpc: axum::Router, rest: axum::Router) -> axum::Router {
    axum::Router::new().fallback_service(ByContentType { grpc, rest })
}

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[derive(Clone)]
struct ByContentType {
    grpc: axum::Router,
    rest: axum::Router,
}

impl tower::Service<Request<Body>> for ByContentType {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let router = if is_grpc(&request) {
            self.grpc.clone()
        } else {
            self.rest.clone()
        };
        Box::pin(router.oneshot(request))
    }
}
