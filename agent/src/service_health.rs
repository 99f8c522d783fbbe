//! Services' `healthCheckNodePort`s, answered as kube-proxy's service
//! health server answers them: for every LoadBalancer Service with
//! `externalTrafficPolicy: Local` and a health check port, this agent
//! serves HTTP on that port on every address of the node. Any method and
//! path gets `200` with
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N}` while N > 0
//! of the Service's ready endpoints run on this node, else `503` with
//! N = 0, so that a load balancer in front of the nodes sends the
//! Service's traffic only to nodes that keep it (the Local policy drops it
//! on the others). `X-Load-Balancing-Endpoint-Weight` carries N too.
//!
//! What to answer comes from the same Service and Endpoints lists as the
//! node's Service rules ([`wanted`]); the listeners follow them
//! ([`HealthServers::update`]): opened for new ports, closed (with their
//! connections) for gone ones. A port that cannot be bound is logged once
//! and tried again with the next lists. Each connection answers one
//! request and closes; a client gets [`HEAD_TIMEOUT`] to send its request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use skiff_objects::endpoints::{self, Endpoints};
use skiff_objects::services::{self, Service};
use skiff_objects::Ipv4Net;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request's head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What one health check port answers about its Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// Its ready endpoints (distinct addresses) on this node.
    pub local_endpoints: usize,
}

/// The health check ports this node answers, given the cluster's
/// `services` and `endpoints` and this node's pod subnet `local`: one per
/// LoadBalancer Service with `externalTrafficPolicy: Local` and a
/// `healthCheckNodePort`.
pub fn wanted(
    services: &[Service],
    endpoints: &[Endpoints],
    local: Ipv4Net,
) -> BTreeMap<u16, HealthCheck> {
    let by_name: HashMap<(&str, &str), &Endpoints> =
        endpoints.iter().map(|e| (endpoints::key(e), e)).collect();
    let mut out = BTreeMap::new();
    for service in services {
        if services::type_of(service) != "LoadBalancer" || !services::is_external_local(service) {
            continue;
        }
        let Some(port) = u16::try_from(services::health_check_node_port(service))
            .ok()
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let (namespace, name) = services::key(service);
        let local_ips: BTreeSet<Ipv4Addr> = by_name
            .get(&(namespace, name))
            .into_iter()
            .flat_map(|e| endpoints::subsets(e))
            .flat_map(endpoints::ready)
            .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| local.contains_addr(*ip))
            .collect();
        out.insert(
            port,
            HealthCheck {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                local_endpoints: local_ips.len(),
            },
        );
    }
    out
}

/// The status and JSON body a health check port answers (`None`: a port
/// no Service has any more, answered until its listener closes).
pub fn answer(check: Option<&HealthCheck>) -> (StatusCode, String) {
    let (namespace, name, count) = match check {
        Some(c) => (c.namespace.as_str(), c.name.as_str(), c.local_endpoints),
        None => ("", "", 0),
    };
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    // kube-proxy's field order.
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{count}}}"#,
        quoted(namespace),
        quoted(name)
    );
    let status = if count > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

fn respond(check: Option<&HealthCheck>) -> Response<String> {
    let (status, body) = answer(check);
    let weight = check.map_or(0, |c| c.local_endpoints);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-content-type-options", "nosniff")
        .header("x-load-balancing-endpoint-weight", weight.to_string())
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

/// What each open port answers now.
type Answers = Arc<RwLock<BTreeMap<u16, HealthCheck>>>;

/// The node's health check listeners.
pub struct HealthServers {
    /// Where they listen: every address of the node (`0.0.0.0`), as
    /// kube-proxy does by default; loopback in tests.
    address: Ipv4Addr,
    answers: Answers,
    /// Each open port's stop token (a child of `shutdown`).
    listeners: HashMap<u16, CancellationToken>,
    /// Ports that could not be bound: logged once until they are.
    failing: BTreeSet<u16>,
    shutdown: CancellationToken,
}

impl HealthServers {
    /// No listener yet; all of them close on `shutdown` (or when this is
    /// dropped).
    pub fn new(address: Ipv4Addr, shutdown: CancellationToken) -> HealthServers {
        HealthServers {
            address,
            answers: Arc::default(),
            listeners: HashMap::new(),
            failing: BTreeSet::new(),
            shutdown,
        }
    }

    /// The ports being answered, in order.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.listeners.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Answers `wanted` from now on: new ports opened, gone ones closed,
    /// the rest answering the new counts.
    pub async fn update(&mut self, wanted: BTreeMap<u16, HealthCheck>) {
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(stop) = self.listeners.remove(&port) {
                stop.cancel();
                tracing::info!(port, "health check port closed");
            }
        }
        self.failing.retain(|p| wanted.contains_key(p));
        let new: Vec<u16> = wanted
            .keys()
            .filter(|p| !self.listeners.contains_key(p))
            .copied()
            .collect();
        *self.answers.write().unwrap_or_else(|p| p.into_inner()) = wanted;
        for port in new {
            let address = SocketAddr::from((self.address, port));
            match TcpListener::bind(address).await {
                Ok(listener) => {
                    self.failing.remove(&port);
                    let stop = self.shutdown.child_token();
                    tokio::spawn(serve(listener, port, self.answers.clone(), stop.clone()));
                    self.listeners.insert(port, stop);
                    tracing::info!(%address, "answering a Service's health checks");
                }
                Err(e) => {
                    if self.failing.insert(port) {
                        tracing::warn!(%address, error = %e, "cannot listen for a Service's health checks; trying again with the next lists");
                    }
                }
            }
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for stop in self.listeners.values() {
            stop.cancel();
        }
    }
}

/// Accepts on one health check port until `stop`; every connection is one
/// request answered from `answers`, cut short by `stop` too.
async fn serve(listener: TcpListener, port: u16, answers: Answers, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(port, error = %e, "health check accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let answers = answers.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                let check = answers
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&port)
                    .cloned();
                async move { Ok::<_, Infallible>(respond(check.as_ref())) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::v1;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn load_balancer(name: &str, policy: &str, health_check: i32) -> Service {
        let meta = v1::ObjectMeta {
            name: name.into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let spec = services::ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some(policy.into()),
            health_check_node_port: (health_check != 0).then_some(health_check),
            ..Default::default()
        };
        services::read(&services::object(meta, spec, None)).unwrap()
    }

    fn endpoints(name: &str, ready: &[&str], not_ready: &[&str]) -> Endpoints {
        let addresses = |ips: &[&str]| {
            ips.iter()
                .map(|ip| v1::EndpointAddress {
                    ip: (*ip).into(),
                    ..Default::default()
                })
                .collect()
        };
        let legacy = v1::Endpoints {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            subsets: vec![
                v1::EndpointSubset {
                    addresses: addresses(ready),
                    not_ready_addresses: addresses(not_ready),
                    ..Default::default()
                },
                // The same pod again under other ports: counted once.
                v1::EndpointSubset {
                    addresses: addresses(&ready[..1.min(ready.len())]),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        // Read as the agent reads what a master sends.
        let document = skiff_objects::legacy_bodies::to_document(
            skiff_objects::IntoObject::into_object(legacy),
        );
        skiff_objects::endpoints::read(&document).unwrap()
    }

    fn local() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 42, 3, 0), 24)
    }

    #[test]
    fn local_load_balancers_get_their_ready_endpoints_on_this_node_counted() {
        let services = [
            load_balancer("web", "Local", 31001),
            load_balancer("idle", "Local", 31002),
            // Cluster policy, or no port: nothing to answer.
            load_balancer("cluster", "Cluster", 31003),
            load_balancer("unset", "Local", 0),
        ];
        let eps = [
            endpoints(
                "web",
                &["10.42.3.5", "10.42.3.6", "10.42.4.7"],
                &["10.42.3.9"],
            ),
            endpoints("idle", &["10.42.4.8"], &[]),
            endpoints("cluster", &["10.42.3.5"], &[]),
        ];
        let wanted = wanted(&services, &eps, local());
        assert_eq!(wanted.keys().copied().collect::<Vec<_>>(), [31001, 31002]);
        assert_eq!(
            wanted[&31001],
            HealthCheck {
                namespace: "shop".into(),
                name: "web".into(),
                local_endpoints: 2,
            }
        );
        assert_eq!(wanted[&31002].local_endpoints, 0);
    }

    #[test]
    fn the_answer_is_kube_proxys() {
        let web = HealthCheck {
            namespace: "shop".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let (status, body) = answer(Some(&web));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"service":{"namespace":"shop","name":"web"},"localEndpoints":2}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["localEndpoints"], 2);
        let none_here = HealthCheck {
            local_endpoints: 0,
            ..web
        };
        assert_eq!(answer(Some(&none_here)).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer(None).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// `GET /healthz` on loopback `port`: the status line and the body, or
    /// `None` when nothing listens.
    async fn get(port: u16) -> Option<(String, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .ok()?;
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
            .await
            .ok()?
            .ok()?;
        let (head, body) = reply.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.to_owned();
        Some((status, body.to_owned()))
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    #[tokio::test]
    async fn listeners_follow_the_lists() {
        let shutdown = CancellationToken::new();
        let mut servers = HealthServers::new(Ipv4Addr::LOCALHOST, shutdown.clone());
        let port = free_port();
        let check = |n| HealthCheck {
            namespace: "shop".into(),
            name: "web".into(),
            local_endpoints: n,
        };
        servers.update(BTreeMap::from([(port, check(1))])).await;
        assert_eq!(servers.ports(), [port]);
        let (status, body) = get(port).await.expect("answered");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains(r#""localEndpoints":1"#), "{body}");
        // The count changes: the same listener answers the new one.
        servers.update(BTreeMap::from([(port, check(0))])).await;
        let (status, body) = get(port).await.expect("answered");
        assert!(status.contains("503"), "{status}");
        assert!(body.contains(r#""localEndpoints":0"#), "{body}");
        // Gone from the lists: closed.
        servers.update(BTreeMap::new()).await;
        assert!(servers.ports().is_empty());
        let mut closed = false;
        for _ in 0..50 {
            if get(port).await.is_none() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "port {port} still answers");
        // A port held by someone else: not answered, tried again later.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        servers
            .update(BTreeMap::from([(taken_port, check(1))]))
            .await;
        assert!(servers.ports().is_empty());
        drop(taken);
        servers
            .update(BTreeMap::from([(taken_port, check(1))]))
            .await;
        assert_eq!(servers.ports(), [taken_port]);
        shutdown.cancel();
    }
}
