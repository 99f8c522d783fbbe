//! `pods/NAME[:PORT]/proxy[/PATH]` and `services/NAME[:PORT]/proxy[/PATH]`:
//! any HTTP method relayed to a pod, what `kubectl proxy` users open in a
//! browser.
//!
//! - The name segment is `name`, `name:port` or `scheme:name:port`
//!   (kube-apiserver's forms); the scheme is `http` or none (`https` is
//!   refused as not supported yet).
//! - A pod: `http://<status.podIP>:<port>/<PATH>?<query>`. The port by
//!   default is the first declared containerPort, else 80 (kube-apiserver's
//!   ResourceLocation); a containerPort's name may be given instead of a
//!   number. A pod that is not Running, or has no IP, is a 503.
//! - A service: a ready address of the Service's Endpoints, at the endpoint
//!   port of the service port asked for (by number or name; none means the
//!   service's only port, or its unnamed one), picked at random as
//!   kube-apiserver does; none there is a 503.
//! - The method, the body (read already, within the REST API's limit) and
//!   the end-to-end headers go to the pod (not the hop-by-hop ones, nor the
//!   caller's `Authorization` for this API; `X-Forwarded-For` names the
//!   caller), over HTTP/1.1 (hyper's client, connecting within
//!   [`CONNECT_TIMEOUT`]); the answer's status, end-to-end headers and body
//!   are streamed back.
//!
//! A proxy request is authorized as kube-apiserver authorizes it, before
//! anything is read (by `super::resources`): the verb of its method
//! ([`proxy_verb`]: `get` for GET, HEAD and OPTIONS, `create` for POST,
//! `update`, `patch`, `delete`) on the `proxy` subresource of the name
//! segment as the path holds it ([`requested_name`]: `web:8080` for
//! `pods/web:8080/proxy`), not a `get` of the pod or service. The reads of
//! the Pod, Service and Endpoints are then this master's. The master dials
//! the pod IP itself: it reaches the pod network over the overlay when it
//! runs beside an agent (`skiff server`); a master without a route to the
//! pod network answers 503 (`error trying to reach service`).

use std::fmt::Display;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use skiff_proto::api::api_server::Api;
use skiff_proto::api::{GetRequest, Object};
use skiff_security::PeerInfo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::as_caller;
use super::status::RestError;
use crate::api::authz::Verb;
use crate::api::ApiService;
use skiff_objects::pods::{self, Pod};
use skiff_objects::registry::{self, KindInfo};
use skiff_objects::Kind;

/// How long the master waits for a pod to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks of an answer buffered for a slow client before the relay waits.
const RELAYED_CHUNKS: usize = 16;
/// The port a pod is proxied to when it declares none (HTTP's own).
const DEFAULT_POD_PORT: u16 = 80;
/// Headers about one connection rather than the message (RFC 9110 section
/// 7.6.1, and the non-standard `Proxy-Connection`); never relayed.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The port a proxy URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PortChoice {
    /// None given.
    Default,
    Number(u16),
    /// A port's name (a containerPort's, a service port's).
    Name(String),
}

/// What the name segment of a proxy URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProxyTarget {
    pub name: String,
    pub port: PortChoice,
}

impl ProxyTarget {
    /// Reads `name`, `name:port` or `scheme:name:port` (`:` may come as
    /// `%3A`); `what` (`pod`, `service`) words the refusals.
    pub(super) fn parse(segment: &str, what: &str) -> Result<ProxyTarget, RestError> {
        let decoded = percent_decoded(segment);
        let parts: Vec<&str> = decoded.split(':').collect();
        let (scheme, name, port) = match parts.as_slice() {
            [name] => ("", *name, ""),
            [name, port] => ("", *name, *port),
            [scheme, name, port] => (*scheme, *name, *port),
            _ => {
                return Err(invalid(
                    what,
                    segment,
                    "it must be NAME, NAME:PORT or SCHEME:NAME:PORT",
                ))
            }
        };
        match scheme {
            "" | "http" => {}
            "https" => {
                return Err(RestError::bad_request(format!(
                    "proxying to a {what} over https is not supported yet: use http, or leave the scheme out"
                )))
            }
            other => {
                return Err(invalid(
                    what,
                    segment,
                    &format!("the scheme {other:?} is not http"),
                ))
            }
        }
        if name.is_empty() {
            return Err(invalid(what, segment, "the name is empty"));
        }
        let port = if port.is_empty() {
            PortChoice::Default
        } else if port.bytes().all(|b| b.is_ascii_digit()) {
            match port.parse::<u16>() {
                Ok(n) if n > 0 => PortChoice::Number(n),
                _ => {
                    return Err(invalid(
                        what,
                        segment,
                        &format!("port {port} is not a port number (1-65535)"),
                    ))
                }
            }
        } else if is_port_name(port) {
            PortChoice::Name(port.to_owned())
        } else {
            return Err(invalid(
                what,
                segment,
                &format!("port {port:?} is neither a number nor a port name"),
            ));
        };
        Ok(ProxyTarget {
            name: name.to_owned(),
            port,
        })
    }
}

fn invalid(what: &str, segment: &str, why: &str) -> RestError {
    RestError::bad_request(format!("invalid {what} request {segment:?}: {why}"))
}

/// Whether `name` is a valid port name (Kubernetes' IANA_SVC_NAME): at
/// most 15 lowercase letters, digits and single inner `-`, with a letter.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// `segment` with its `%XX` escapes decoded; a malformed escape is kept as
/// it is.
fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' {
            segment
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        } else {
            None
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The verb a proxy request of `method` is authorized as on the `proxy`
/// subresource: kube-apiserver's request info (`create` for POST, `get`
/// for GET and HEAD, `update` for PUT, `patch`, `delete`); OPTIONS as
/// `get`, a read. Any other method is not relayed (`None`).
pub(super) fn proxy_verb(method: &Method) -> Option<Verb> {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Some(Verb::Get),
        Method::POST => Some(Verb::Create),
        Method::PUT => Some(Verb::Update),
        Method::PATCH => Some(Verb::Patch),
        Method::DELETE => Some(Verb::Delete),
        _ => None,
    }
}

/// The name a proxy request is authorized on: its name segment as
/// kube-apiserver's request info takes it from the (decoded) path, port
/// and scheme included (`web:8080`), so that a rule's `resourceNames`
/// match it as they would there.
pub(super) fn requested_name(segment: &str) -> String {
    percent_decoded(segment)
}

/// A proxy request, authorized already: for which object, and what to
/// relay.
pub(super) struct ProxyRequest<'a> {
    pub api: &'a ApiService,
    /// Whom the reads are made as (this master, the request authorized as
    /// a whole), with the caller's address (`X-Forwarded-For`).
    pub peer: &'a PeerInfo,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub namespace: &'a str,
    /// The name segment: `name`, `name:port` or `scheme:name:port`.
    pub name: &'a str,
    /// The path after `proxy/`, without its leading `/`.
    pub tail: &'a str,
    /// Ends a relayed answer when the master shuts down.
    pub shutdown: CancellationToken,
}

/// Relays `request` (with `body`) to the pod or service `info` names, and
/// its answer back.
pub(super) async fn serve(
    info: &'static KindInfo,
    request: ProxyRequest<'_>,
    body: Bytes,
) -> Result<Response<Body>, RestError> {
    let target = ProxyTarget::parse(request.name, info.singular)?;
    let (ip, port) = match info.kind {
        Kind::Pod => {
            let object = read(&request, Kind::Pod, &target.name).await?;
            let Some(pod) = pods::read(&object) else {
                return Err(wrong_kind(Kind::Pod, &target.name));
            };
            pod_destination(&pod, &target.name, &target.port)?
        }
        Kind::Service => {
            let object = read(&request, Kind::Service, &target.name).await?;
            let Some(service) = skiff_objects::services::read(&object) else {
                return Err(wrong_kind(Kind::Service, &target.name));
            };
            let endpoints = match read(&request, Kind::Endpoints, &target.name).await {
                Ok(object) => match skiff_objects::endpoints::read(&object) {
                    Some(endpoints) => Some(endpoints),
                    None => return Err(wrong_kind(Kind::Endpoints, &target.name)),
                },
                Err(e) if e.code == StatusCode::NOT_FOUND => None,
                Err(e) => return Err(e),
            };
            service_destination(&service, endpoints.as_ref(), &target.name, &target.port)?
        }
        _ => {
            return Err(RestError::not_found_path(&format!(
                "{}/proxy",
                info.resource
            )))
        }
    };
    let ip = ip.parse::<IpAddr>().map_err(|_| {
        unavailable(format!(
            "error trying to reach service: {ip:?} is not an IP address"
        ))
    })?;
    let address = SocketAddr::new(ip, port);
    let path = upstream_path(
        request.tail,
        request.uri.path().ends_with('/'),
        request.uri.query(),
    );
    let headers = upstream_headers(request.headers, address, request.peer.remote.ip());
    tracing::debug!(method = %request.method, %address, %path, "proxying a REST request");
    forward(
        request.method,
        &path,
        headers,
        address,
        body,
        &request.shutdown,
    )
    .await
}

/// One object, read through the API service as the request's peer (this
/// master).
async fn read(request: &ProxyRequest<'_>, kind: Kind, name: &str) -> Result<Object, RestError> {
    let get = GetRequest {
        kind: kind.name().to_owned(),
        namespace: request.namespace.to_owned(),
        name: name.to_owned(),
        serializable: false,
    };
    request
        .api
        .get(as_caller(request.peer, get))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| RestError::from_grpc(&s, registry::info(kind), name))
}

fn wrong_kind(kind: Kind, name: &str) -> RestError {
    RestError::internal(format!(
        "the API answered a read of {kind} {name} with another kind"
    ))
}

fn unavailable(message: String) -> RestError {
    RestError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

fn unreachable_at(address: SocketAddr, error: &dyn Display) -> RestError {
    unavailable(format!("error trying to reach service: {address}: {error}"))
}

/// A port number from the API's `int32`, if it is one.
fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p > 0)
}

/// The pod's IP and the port its proxy goes to; a 503 while it cannot be
/// reached.
fn pod_destination(pod: &Pod, name: &str, port: &PortChoice) -> Result<(String, u16), RestError> {
    let phase = pods::phase(pod);
    let ip = pods::ip(pod);
    if phase != "Running" {
        let phase = if phase.is_empty() { "none yet" } else { phase };
        return Err(unavailable(format!(
            "pod {name} is not running (phase {phase}): there is nothing to proxy to"
        )));
    }
    if ip.is_empty() {
        return Err(unavailable(format!(
            "pod {name} has no IP: its node runs it without a pod network"
        )));
    }
    Ok((ip.to_owned(), pod_port(pod, name, port)?))
}

/// The pod port a proxy goes to: the number asked for, or the
/// containerPort of the name asked for; by default the first declared
/// containerPort, else 80 (kube-apiserver's ResourceLocation).
fn pod_port(pod: &Pod, name: &str, port: &PortChoice) -> Result<u16, RestError> {
    let mut declared = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten());
    match port {
        PortChoice::Number(n) => Ok(*n),
        PortChoice::Name(wanted) => declared
            .filter(|p| p.name.as_deref() == Some(wanted.as_str()))
            .find_map(|p| port_number(p.container_port))
            .ok_or_else(|| {
                RestError::bad_request(format!(
                    "pod {name} declares no container port named {wanted}"
                ))
            }),
        PortChoice::Default => Ok(declared
            .find_map(|p| port_number(p.container_port))
            .unwrap_or(DEFAULT_POD_PORT)),
    }
}

/// A ready address of the service's endpoints and the endpoint port of the
/// service port asked for: by number (its name then picks the endpoint
/// port), by name, or by default the service's only port (or the unnamed
/// one); picked at random among the ready addresses, as kube-apiserver
/// does. A 503 when there is none.
fn service_destination(
    service: &skiff_objects::services::Service,
    endpoints: Option<&skiff_objects::endpoints::Endpoints>,
    name: &str,
    port: &PortChoice,
) -> Result<(String, u16), RestError> {
    use skiff_objects::endpoints::{ports, ready, subsets};
    use skiff_objects::services;
    let port_name = match port {
        PortChoice::Number(n) => services::ports(service)
            .iter()
            .find(|p| p.port == i32::from(*n))
            .map(services::port_name)
            .ok_or_else(|| {
                unavailable(format!("no service port {n} found for service {name:?}"))
            })?,
        PortChoice::Name(wanted) => wanted.as_str(),
        PortChoice::Default => match services::ports(service) {
            [only] => services::port_name(only),
            _ => "",
        },
    };
    let candidates: Vec<(&str, u16)> = endpoints
        .into_iter()
        .flat_map(subsets)
        .flat_map(|subset| {
            let port = ports(subset)
                .iter()
                .filter(|p| p.name.as_deref().unwrap_or_default() == port_name)
                .find_map(|p| port_number(p.port));
            ready(subset)
                .iter()
                .filter_map(move |a| port.map(|port| (a.ip.as_str(), port)))
        })
        .filter(|(ip, _)| !ip.is_empty())
        .collect();
    if candidates.is_empty() {
        return Err(unavailable(format!(
            "no endpoints available for service {name:?}"
        )));
    }
    let (ip, port) = candidates[rand::random_range(0..candidates.len())];
    Ok((ip.to_owned(), port))
}

/// The path and query the pod is asked for: `/` and the path after
/// `proxy/`, with the trailing `/` the caller wrote, then the query as
/// sent.
fn upstream_path(tail: &str, trailing_slash: bool, query: Option<&str>) -> String {
    let mut path = format!("/{tail}");
    if trailing_slash && !path.ends_with('/') {
        path.push('/');
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// `headers` without the hop-by-hop ones: those of [`HOP_BY_HOP`] and any
/// that `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text) || named.iter().any(|n| n == name_text) {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

/// The caller's headers as the pod gets them: end-to-end ones only, not
/// the caller's credentials for this API (`Authorization`), `Host` naming
/// the pod, the length of the body as read (set by the client), and the
/// caller added to `X-Forwarded-For`.
fn upstream_headers(incoming: &HeaderMap, address: SocketAddr, caller: IpAddr) -> HeaderMap {
    let mut headers = end_to_end(incoming);
    for name in [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    if let Ok(host) = HeaderValue::from_str(&address.to_string()) {
        headers.insert(header::HOST, host);
    }
    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {caller}"),
        None => caller.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers
}

/// Sends the request to `address` over a new HTTP/1.1 connection and
/// answers with the pod's answer, its body streamed.
async fn forward(
    method: &Method,
    path: &str,
    headers: HeaderMap,
    address: SocketAddr,
    body: Bytes,
    shutdown: &CancellationToken,
) -> Result<Response<Body>, RestError> {
    let uri = path.parse::<Uri>().map_err(|e| {
        RestError::bad_request(format!(
            "the path to proxy to, {path:?}, is not a valid URI: {e}"
        ))
    })?;
    let mut upstream = http::Request::new(Full::new(body));
    *upstream.method_mut() = method.clone();
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;

    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable_at(address, &e)),
        Err(_) => {
            let waited = format!("no connection within {} s", CONNECT_TIMEOUT.as_secs());
            return Err(unreachable_at(address, &waited));
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable_at(address, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%address, error = %e, "a proxied connection ended with an error");
        }
    });
    let answer = tokio::select! {
        _ = shutdown.cancelled() => {
            return Err(unavailable("the master is shutting down".to_owned()));
        }
        answer = sender.send_request(upstream) => {
            answer.map_err(|e| unreachable_at(address, &e))?
        }
    };
    let (parts, incoming) = answer.into_parts();
    let mut response = Response::new(relay(incoming, sender, shutdown.clone()));
    *response.status_mut() = parts.status;
    *response.headers_mut() = end_to_end(&parts.headers);
    Ok(response)
}

/// The pod's answer body as a body of this answer. The connection stays
/// open (its sender is held) until the body ends, the client goes or the
/// master shuts down.
fn relay(
    mut incoming: Incoming,
    sender: SendRequest<Full<Bytes>>,
    shutdown: CancellationToken,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(RELAYED_CHUNKS);
    tokio::spawn(async move {
        let _connection = sender;
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                frame = incoming.frame() => frame,
            };
            match frame {
                None => return,
                // Trailers are not relayed.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::typed::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn target(segment: &str) -> Result<ProxyTarget, RestError> {
        ProxyTarget::parse(segment, "pod")
    }

    fn port_of(segment: &str) -> PortChoice {
        target(segment).unwrap().port
    }

    #[test]
    fn a_proxy_is_authorized_as_the_verb_of_its_method() {
        for (method, verb) in [
            (Method::GET, Verb::Get),
            (Method::HEAD, Verb::Get),
            (Method::OPTIONS, Verb::Get),
            (Method::POST, Verb::Create),
            (Method::PUT, Verb::Update),
            (Method::PATCH, Verb::Patch),
            (Method::DELETE, Verb::Delete),
        ] {
            assert_eq!(proxy_verb(&method), Some(verb), "{method}");
        }
        for method in [Method::CONNECT, Method::TRACE] {
            assert_eq!(proxy_verb(&method), None, "{method}");
        }
    }

    #[test]
    fn a_proxy_is_authorized_on_its_name_segment_as_the_path_holds_it() {
        assert_eq!(requested_name("web"), "web");
        // The port and scheme are part of the name kube-apiserver
        // authorizes, decoded as Go decodes the path.
        assert_eq!(requested_name("web:8080"), "web:8080");
        assert_eq!(requested_name("web%3A8080"), "web:8080");
        assert_eq!(requested_name("http:web:http"), "http:web:http");
    }

    fn container(name: &str, ports: &[(&str, i32)]) -> Container {
        let ports: Vec<ContainerPort> = ports
            .iter()
            .map(|(name, port)| ContainerPort {
                name: Some((*name).to_owned()),
                container_port: *port,
                ..Default::default()
            })
            .collect();
        Container {
            name: name.to_owned(),
            ports: Some(ports).filter(|p| !p.is_empty()),
            ..Default::default()
        }
    }

    fn pod(phase: &str, ip: &str, containers: Vec<Container>) -> Pod {
        let set = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        Pod {
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: set(phase),
                pod_ip: set(ip),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(ports: &[(&str, i32)]) -> skiff_objects::services::Service {
        use skiff_objects::services::{Service, ServicePort, ServiceSpec};
        Service {
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port)| ServicePort {
                            name: Some((*name).to_owned()).filter(|n| !n.is_empty()),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoints(
        ready: &[&str],
        not_ready: &[&str],
        ports: &[(&str, i32)],
    ) -> skiff_objects::endpoints::Endpoints {
        use skiff_objects::endpoints::{EndpointAddress, EndpointPort, EndpointSubset};
        let addresses = |ips: &[&str]| -> Vec<EndpointAddress> {
            ips.iter()
                .map(|ip| EndpointAddress {
                    ip: (*ip).to_owned(),
                    ..Default::default()
                })
                .collect()
        };
        let subset = EndpointSubset {
            addresses: Some(addresses(ready)),
            not_ready_addresses: Some(addresses(not_ready)),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: (!name.is_empty()).then(|| (*name).to_owned()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
        };
        // Read from the store, as the proxy reads them.
        let meta = skiff_proto::v1::ObjectMeta::default();
        let stored = skiff_objects::endpoints::object(meta, vec![subset]);
        skiff_objects::endpoints::read(&stored).unwrap()
    }

    #[test]
    fn proxy_names_carry_an_optional_scheme_and_port() {
        assert_eq!(
            target("web").unwrap(),
            ProxyTarget {
                name: "web".into(),
                port: PortChoice::Default
            }
        );
        assert_eq!(port_of("web:8080"), PortChoice::Number(8080));
        assert_eq!(port_of("http:web:8080"), PortChoice::Number(8080));
        assert_eq!(target("http:web:8080").unwrap().name, "web");
        assert_eq!(port_of("http:web:"), PortChoice::Default);
        assert_eq!(port_of("web:metrics"), PortChoice::Name("metrics".into()));
        assert_eq!(port_of("web%3A8080"), PortChoice::Number(8080));
        assert_eq!(port_of("http%3aweb%3a81"), PortChoice::Number(81));
    }

    #[test]
    fn https_unknown_schemes_and_bad_ports_are_refused() {
        let e = target("https:web:8443").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("https is not supported yet"),
            "{}",
            e.message
        );
        for bad in [
            "ftp:web:21",
            "a:b:c:d",
            ":8080",
            "http::8080",
            "web:0",
            "web:65536",
            "web:99999999999",
            "web:Web_Port",
            "web:-http",
            "web:a--b",
            "web:averyveryverylongname",
        ] {
            let e = target(bad).expect_err(bad);
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                e.message.starts_with("invalid pod request"),
                "{bad}: {}",
                e.message
            );
        }
        let e = ProxyTarget::parse("a:b:c:d", "service").unwrap_err();
        assert!(e.message.starts_with("invalid service request \"a:b:c:d\""));
    }

    #[test]
    fn escapes_are_decoded_and_malformed_ones_kept() {
        assert_eq!(percent_decoded("web%3A80"), "web:80");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
        assert_eq!(percent_decoded("%+1"), "%+1");
    }

    #[test]
    fn a_pod_is_proxied_to_its_first_declared_port_by_default_else_80() {
        let p = pod(
            "Running",
            "10.42.0.5",
            vec![
                container("sidecar", &[]),
                container("web", &[("http", 8080), ("metrics", 9090)]),
            ],
        );
        assert_eq!(pod_port(&p, "p", &PortChoice::Default).unwrap(), 8080);
        assert_eq!(
            pod_port(&p, "p", &PortChoice::Name("metrics".into())).unwrap(),
            9090
        );
        assert_eq!(pod_port(&p, "p", &PortChoice::Number(1234)).unwrap(), 1234);
        let e = pod_port(&p, "p", &PortChoice::Name("admin".into())).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("admin"), "{}", e.message);

        let bare = pod("Running", "10.42.0.6", vec![container("web", &[])]);
        assert_eq!(pod_port(&bare, "p", &PortChoice::Default).unwrap(), 80);
        assert_eq!(
            pod_destination(&p, "p", &PortChoice::Default).unwrap(),
            ("10.42.0.5".to_owned(), 8080)
        );
    }

    #[test]
    fn a_pod_not_running_or_without_an_ip_is_unavailable() {
        let web = || vec![container("web", &[("http", 8080)])];
        for p in [
            pod("Pending", "", web()),
            pod("", "", web()),
            pod("Succeeded", "10.42.0.5", web()),
            pod("Running", "", web()),
        ] {
            let e = pod_destination(&p, "web", &PortChoice::Default).unwrap_err();
            assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE, "{}", e.message);
            assert_eq!(e.reason, "ServiceUnavailable");
            assert!(e.message.starts_with("pod web "), "{}", e.message);
        }
    }

    #[test]
    fn a_service_is_proxied_to_a_ready_endpoint_at_the_mapped_port() {
        let svc = service(&[("http", 80), ("metrics", 9100)]);
        let eps = endpoints(
            &["10.42.0.5"],
            &["10.42.0.6"],
            &[("http", 8080), ("metrics", 9101)],
        );
        let to = |port: PortChoice| service_destination(&svc, Some(&eps), "web", &port);
        assert_eq!(
            to(PortChoice::Number(80)).unwrap(),
            ("10.42.0.5".to_owned(), 8080)
        );
        assert_eq!(
            to(PortChoice::Name("metrics".into())).unwrap(),
            ("10.42.0.5".to_owned(), 9101)
        );
        let e = to(PortChoice::Number(81)).unwrap_err();
        assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.message, "no service port 81 found for service \"web\"");
        // Two named ports and none asked for: no unnamed port to go to.
        let e = to(PortChoice::Default).unwrap_err();
        assert_eq!(e.message, "no endpoints available for service \"web\"");

        let single = service(&[("http", 80)]);
        let eps = endpoints(&["10.42.0.7", "10.42.0.8"], &[], &[("http", 8080)]);
        let (ip, port) =
            service_destination(&single, Some(&eps), "web", &PortChoice::Default).unwrap();
        assert!(ip == "10.42.0.7" || ip == "10.42.0.8", "{ip}");
        assert_eq!(port, 8080);

        let unnamed = service(&[("", 80)]);
        let eps = endpoints(&["10.42.0.9"], &[], &[("", 8080)]);
        assert_eq!(
            service_destination(&unnamed, Some(&eps), "web", &PortChoice::Number(80)).unwrap(),
            ("10.42.0.9".to_owned(), 8080)
        );
    }

    #[test]
    fn a_service_without_ready_endpoints_is_unavailable() {
        let svc = service(&[("", 80)]);
        let only_unready = endpoints(&[], &["10.42.0.6"], &[("", 8080)]);
        for eps in [None, Some(&only_unready)] {
            let e = service_destination(&svc, eps, "web", &PortChoice::Default).unwrap_err();
            assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(e.message, "no endpoints available for service \"web\"");
        }
    }

    #[test]
    fn the_upstream_path_keeps_the_trailing_slash_and_the_query() {
        assert_eq!(upstream_path("", false, None), "/");
        assert_eq!(upstream_path("", true, None), "/");
        assert_eq!(upstream_path("a/b", false, Some("x=1&y=2")), "/a/b?x=1&y=2");
        assert_eq!(upstream_path("dir", true, None), "/dir/");
        assert_eq!(upstream_path("index.html", false, Some("")), "/index.html");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Trace".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("x-trace", "1".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        h.append(header::SET_COOKIE, "a=1".parse().unwrap());
        h.append(header::SET_COOKIE, "b=2".parse().unwrap());
        let kept = end_to_end(&h);
        let mut names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "set-cookie"]);
        assert_eq!(kept.get_all(header::SET_COOKIE).iter().count(), 2);
    }

    #[test]
    fn the_pod_gets_its_own_host_no_api_credentials_and_the_caller_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8001".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "4".parse().unwrap());
        h.insert(header::CONNECTION, "close".parse().unwrap());
        h.insert(header::ACCEPT, "text/html".parse().unwrap());
        h.insert(X_FORWARDED_FOR, "198.51.100.1".parse().unwrap());
        let address: SocketAddr = "10.42.0.5:8080".parse().unwrap();
        let caller: IpAddr = "192.0.2.7".parse().unwrap();
        let up = upstream_headers(&h, address, caller);
        assert_eq!(up[header::HOST], "10.42.0.5:8080");
        assert!(up.get(header::AUTHORIZATION).is_none());
        assert!(up.get(header::CONTENT_LENGTH).is_none());
        assert!(up.get(header::CONNECTION).is_none());
        assert_eq!(up[header::ACCEPT], "text/html");
        assert_eq!(up[X_FORWARDED_FOR], "198.51.100.1, 192.0.2.7");
        let fresh = upstream_headers(&HeaderMap::new(), address, caller);
        assert_eq!(fresh[X_FORWARDED_FOR], "192.0.2.7");
    }

    #[tokio::test]
    async fn a_request_is_relayed_to_the_pod_and_its_answer_streamed_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let fake_pod = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.ends_with(b"\r\n\r\nping") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Pod: yes\r\n\
                 Connection: close\r\n\r\nhello";
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let mut caller_headers = HeaderMap::new();
        caller_headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        caller_headers.insert("x-caller", "1".parse().unwrap());
        let headers = upstream_headers(&caller_headers, address, "192.0.2.7".parse().unwrap());
        let response = forward(
            &Method::POST,
            "/submit?x=1",
            headers,
            address,
            Bytes::from_static(b"ping"),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-pod"], "yes");
        assert!(response.headers().get(header::CONNECTION).is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");

        let seen = fake_pod.await.unwrap();
        assert!(seen.starts_with("POST /submit?x=1 HTTP/1.1\r\n"), "{seen}");
        let lower = seen.to_ascii_lowercase();
        assert!(lower.contains(&format!("host: {address}\r\n")), "{seen}");
        assert!(lower.contains("x-caller: 1\r\n"), "{seen}");
        assert!(lower.contains("x-forwarded-for: 192.0.2.7\r\n"), "{seen}");
        assert!(lower.contains("content-length: 4\r\n"), "{seen}");
        assert!(!lower.contains("authorization"), "{seen}");
    }

    #[tokio::test]
    async fn a_pod_that_refuses_the_connection_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let e = forward(
            &Method::GET,
            "/",
            HeaderMap::new(),
            address,
            Bytes::new(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.message.starts_with("error trying to reach service"),
            "{}",
            e.message
        );
    }
}
