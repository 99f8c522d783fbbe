//! Liveness and readiness probes, with Kubernetes' semantics: a probe runs
//! every `periodSeconds` after `initialDelaySeconds`; `failureThreshold`
//! failures in a row flip it to failed and `successThreshold` successes in a
//! row flip it back. Exec probes run in the container through containerd;
//! TCP probes open a connection ([`super::tcp_socket`]: to the pod's
//! address from inside its network namespace, or to the probe's `host`
//! from the node's, as the kubelet dials); HTTP probes are the `httpGet`
//! action hooks send too ([`super::http_get`]: the pod's address or the
//! probe's `host`, HTTP or HTTPS unverified, its headers), passing on 2xx
//! and 3xx.

use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::runtime::ContainerRuntime;

use super::http_get::{HttpGet, HttpGetError, Purpose};
use super::pod_address::PodAddress;
use super::tcp_socket::{TcpSocket, TcpSocketError};

/// Why one run of a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Exec(#[from] crate::runtime::Error),
    #[error("exec {command:?} exited with {code}")]
    ExecExit { command: Vec<String>, code: u32 },
    #[error("{kind} probe port {port:?} is not a port of the container")]
    UnknownPort { kind: &'static str, port: String },
    #[error(transparent)]
    Tcp(#[from] TcpSocketError),
    #[error(transparent)]
    Http(#[from] HttpGetError),
    #[error("HTTP probe failed with statuscode: {0}")]
    HttpStatus(u16),
    #[error("probe has no handler")]
    NoHandler,
}

/// The counters of one probe on one container run.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub probe: v1::Probe,
    pub next_at: Instant,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far; `None` until it first flips.
    pub passing: Option<bool>,
    pub last_error: String,
}

impl ProbeState {
    pub fn new(probe: &v1::Probe, started: Instant) -> ProbeState {
        ProbeState {
            probe: probe.clone(),
            next_at: started + Duration::from_secs(probe.initial_delay_seconds.max(0) as u64),
            successes: 0,
            failures: 0,
            passing: None,
            last_error: String::new(),
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.max(1) as u64)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.probe.timeout_seconds.max(1) as u64)
    }

    /// Whether the last attempt failed.
    pub fn failed_last(&self) -> bool {
        self.failures > 0
    }

    /// Records one result; returns the verdict if it flipped.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.next_at = now + self.period();
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.passing != Some(true) && self.successes >= self.probe.success_threshold.max(1) {
                self.passing = Some(true);
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.passing != Some(false) && self.failures >= self.probe.failure_threshold.max(1) {
                self.passing = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// Resolves a probe port: a number, or the name of a container port.
pub fn resolve_port(port: &str, container: &v1::Container) -> Option<u16> {
    if let Ok(n) = port.parse::<u16>() {
        return Some(n);
    }
    container
        .ports
        .iter()
        .find(|p| p.name == port)
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// Runs the probe if it is due and records the result; returns the
/// verdict when it flipped.
pub async fn run_if_due<R: ContainerRuntime>(
    runtime: &R,
    container_id: &str,
    container: &v1::Container,
    pod: &PodAddress,
    state: &mut ProbeState,
    now: Instant,
) -> Option<bool> {
    if state.next_at > now {
        return None;
    }
    let result = run(runtime, container_id, container, pod, state).await;
    if let Err(e) = &result {
        state.last_error = e.to_string();
    }
    state.record(result.is_ok(), Instant::now())
}

/// Runs the probe once; `Err` says why it failed.
pub async fn run<R: ContainerRuntime>(
    runtime: &R,
    container_id: &str,
    container: &v1::Container,
    pod: &PodAddress,
    state: &ProbeState,
) -> Result<(), ProbeError> {
    let probe = &state.probe;
    let timeout = state.timeout();
    if let Some(exec) = &probe.exec {
        let code = runtime
            .exec(container_id, exec.command.clone(), timeout)
            .await?;
        return if code == 0 {
            Ok(())
        } else {
            Err(ProbeError::ExecExit {
                command: exec.command.clone(),
                code,
            })
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, container) else {
            return Err(ProbeError::UnknownPort {
                kind: "tcp",
                port: tcp.port.clone(),
            });
        };
        return TcpSocket::new(tcp, port)
            .dial(pod, timeout)
            .await
            .map_err(ProbeError::Tcp);
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, container) else {
            return Err(ProbeError::UnknownPort {
                kind: "http",
                port: http.port.clone(),
            });
        };
        let code = HttpGet::new(http, port)?
            .send(pod, Purpose::Probe, timeout)
            .await?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(ProbeError::HttpStatus(code))
        };
    }
    Err(ProbeError::NoHandler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::test_http_server::TestHttpServer;

    #[test]
    fn thresholds_flip_the_verdict() {
        let probe = v1::Probe {
            failure_threshold: 3,
            success_threshold: 1,
            period_seconds: 1,
            ..Default::default()
        };
        let now = Instant::now();
        let mut s = ProbeState::new(&probe, now);
        assert_eq!(s.record(true, now), Some(true));
        assert_eq!(s.record(false, now), None);
        assert_eq!(s.record(false, now), None);
        assert_eq!(s.record(false, now), Some(false));
        assert_eq!(s.record(false, now), None);
        assert_eq!(s.record(true, now), Some(true));
        assert_eq!(s.next_at, now + Duration::from_secs(1));
    }

    /// Runs an httpGet probe of `scheme` to the server on `port`.
    async fn probe_http(scheme: &str, port: u16) -> Result<(), ProbeError> {
        let probe = v1::Probe {
            http_get: Some(v1::HttpGetAction {
                host: "127.0.0.1".into(),
                port: "web".into(),
                scheme: scheme.into(),
                path: "/healthz".into(),
                http_headers: vec![v1::HttpHeader {
                    name: "X-Probe".into(),
                    value: "yes".into(),
                }],
            }),
            timeout_seconds: 2,
            ..Default::default()
        };
        let container = v1::Container {
            ports: vec![v1::ContainerPort {
                name: "web".into(),
                container_port: i32::from(port),
                ..Default::default()
            }],
            ..Default::default()
        };
        // A probe with a host goes from the node's namespace: this one.
        let pod = PodAddress {
            netns: "/nonexistent/netns".into(),
            ip: None,
        };
        let state = ProbeState::new(&probe, Instant::now());
        let runtime = crate::runtime::recording::RecordingRuntime::default();
        run(&runtime, "uid1_main", &container, &pod, &state).await
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_over_http_and_unverified_https() {
        let redirect = TestHttpServer::http(302).await;
        probe_http("HTTP", redirect.port).await.expect("302 passes");
        let head = &redirect.heads()[0];
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nX-Probe: yes\r\n"), "{head}");
        assert!(
            head.contains("\r\nUser-Agent: kube-probe/1.34\r\n"),
            "{head}"
        );
        let failing = TestHttpServer::http(500).await;
        let error = probe_http("HTTP", failing.port).await.unwrap_err();
        assert_eq!(error.to_string(), "HTTP probe failed with statuscode: 500");
        let https = TestHttpServer::https(204).await;
        probe_http("HTTPS", https.port)
            .await
            .expect("a self-signed certificate passes, as for the kubelet");
        assert_eq!(https.heads().len(), 1);
    }

    #[tokio::test]
    async fn an_https_probe_answered_in_plain_http_fails_without_falling_back() {
        let plain = TestHttpServer::http(200).await;
        let error = probe_http("HTTPS", plain.port).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                r#"Get "https://127.0.0.1:{}/healthz": http: server gave HTTP response to HTTPS client"#,
                plain.port
            )
        );
        assert!(plain.heads().is_empty(), "no retry: {:?}", plain.heads());
    }

    /// Runs a tcpSocket probe to `host` (none: the pod's address) on
    /// the container's port `web`, `port`, for a pod in `netns`.
    async fn probe_tcp(host: &str, port: u16, netns: &str) -> Result<(), ProbeError> {
        let probe = v1::Probe {
            tcp_socket: Some(v1::TcpSocketAction {
                port: "web".into(),
                host: host.into(),
            }),
            timeout_seconds: 2,
            ..Default::default()
        };
        let container = v1::Container {
            ports: vec![v1::ContainerPort {
                name: "web".into(),
                container_port: i32::from(port),
                ..Default::default()
            }],
            ..Default::default()
        };
        let pod = PodAddress {
            netns: netns.into(),
            ip: Some(std::net::Ipv4Addr::new(10, 42, 0, 7)),
        };
        let state = ProbeState::new(&probe, Instant::now());
        let runtime = crate::runtime::recording::RecordingRuntime::default();
        run(&runtime, "uid1_main", &container, &pod, &state).await
    }

    #[tokio::test]
    async fn tcp_probes_dial_their_host_from_the_node_else_the_pod_from_its_namespace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The host, from this process's namespace: the pod's is never
        // entered (it does not exist).
        for host in ["127.0.0.1", "localhost"] {
            probe_tcp(host, port, "/nonexistent/netns")
                .await
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        // Without a host, the pod's namespace is entered to reach it.
        let error = probe_tcp("", port, "/nonexistent/netns").await.unwrap_err();
        assert!(
            matches!(error, ProbeError::Tcp(TcpSocketError::Netns(_))),
            "{error:?}"
        );
        // Nothing listening: the dial is refused, in Go's words.
        drop(listener);
        let error = probe_tcp("127.0.0.1", port, "/nonexistent/netns")
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("dial tcp 127.0.0.1:{port}: ")),
            "{error}"
        );
    }

    #[test]
    fn named_ports_resolve() {
        let c = v1::Container {
            ports: vec![v1::ContainerPort {
                name: "http".into(),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resolve_port("http", &c), Some(8080));
        assert_eq!(resolve_port("81", &c), Some(81));
        assert_eq!(resolve_port("nope", &c), None);
    }
}
