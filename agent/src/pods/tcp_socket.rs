//! The `tcpSocket` probe action as the kubelet runs it (`pkg/probe/tcp`):
//! a TCP connection to `<host>:<port>`, closed as soon as it is open. A
//! connection passes; a refusal, an unreachable address, a name that does
//! not resolve or the probe's timeout fails, told in the words of Go's
//! dialer (`dial tcp 10.42.0.7:8080: …`, `dial tcp: lookup db: …`).
//!
//! Where it goes, as for `httpGet` ([`super::http_get`], which dials
//! through this module's `dial` too): without `host`, the pod's own
//! address from inside the pod's network namespace (the node's for a pod
//! in the host's network), loopback there while the pod has no address;
//! with `host` (an address, or a name the node's resolver answers, as the
//! kubelet's Go dialer looks it up), from the node's namespace, the
//! agent's own, as the kubelet dials from the node. Each dial runs on a
//! thread of its own with a blocking socket: the connection is bounded by
//! the probe's timeout, a name's lookup by the resolver's own
//! (`resolv.conf`'s `timeout` and `attempts`). A thread in a pod's
//! namespace is one nothing else uses.
//!
//! (A `tcpSocket` lifecycle hook is another matter: deprecated, never run
//! by the kubelet, counted as failed: `super::lifecycle_hooks`.)

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use skiff_proto::v1;

use crate::network::netns::{self, NetnsError};

use super::pod_address::PodAddress;

/// Why a connection to `host:port` could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("dial tcp: lookup {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("dial tcp: lookup {host}: no such host")]
    NoAddress { host: String },
    #[error("dial tcp {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("dial tcp {addr}: i/o timeout")]
    Timeout { addr: String },
}

/// Why one run of a `tcpSocket` probe failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpSocketError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("dial tcp {addr}: the dial's thread ended without an answer")]
    ThreadLost { addr: String },
}

/// One `tcpSocket` action, ready to dial.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    /// The action's `host`; none: the pod's address.
    host: Option<String>,
    port: u16,
}

impl TcpSocket {
    /// `action`, to `port` (the caller resolves a named port).
    pub fn new(action: &v1::TcpSocketAction, port: u16) -> TcpSocket {
        let host = action
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        TcpSocket {
            host: (!host.is_empty()).then(|| host.to_owned()),
            port,
        }
    }

    /// Opens a connection (see the module's doc for where to and from
    /// where) within `timeout`, and closes it.
    pub async fn dial(&self, pod: &PodAddress, timeout: Duration) -> Result<(), TcpSocketError> {
        let port = self.port;
        match &self.host {
            Some(host) => {
                // The node's namespace: this process's own.
                let host = host.clone();
                let addr = host_port(&host, port);
                tokio::task::spawn_blocking(move || dial_once(&host, port, timeout))
                    .await
                    .map_err(|_| TcpSocketError::ThreadLost { addr })?
            }
            None => {
                let host = pod.host();
                netns::run_in(pod.netns.clone(), move || dial_once(&host, port, timeout)).await
            }
        }
    }
}

/// One connection to `host:port` within `timeout`, closed at once.
fn dial_once(host: &str, port: u16, timeout: Duration) -> Result<(), TcpSocketError> {
    let tcp = dial(host, port, Instant::now() + timeout)?;
    drop(tcp);
    Ok(())
}

/// A connection to the first of `host`'s addresses that answers before
/// `deadline`: `host` an address, or a name the resolver of this
/// thread's namespace answers (the node's `/etc/resolv.conf` and
/// `/etc/hosts`, as for the kubelet's dialer). Blocking.
pub(super) fn dial(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| DialError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut failed = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DialError::Timeout {
                addr: addr.to_string(),
            });
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) if is_timeout(&e) => {
                return Err(DialError::Timeout {
                    addr: addr.to_string(),
                })
            }
            Err(source) => failed = Some(DialError::Connect { addr, source }),
        }
    }
    Err(failed.unwrap_or_else(|| DialError::NoAddress {
        host: host.to_owned(),
    }))
}

/// Whether a blocking socket call gave up at its timeout.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// `host:port`, an IPv6 address in brackets.
pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn action(host: &str) -> v1::TcpSocketAction {
        v1::TcpSocketAction {
            port: "ignored: the caller resolves it".into(),
            host: host.into(),
        }
    }

    /// A pod address whose namespace is never entered: these dials name a
    /// host, reached from this process's namespace.
    fn elsewhere() -> PodAddress {
        PodAddress {
            netns: "/nonexistent/netns".into(),
            ip: Some(Ipv4Addr::new(10, 42, 0, 7)),
        }
    }

    #[tokio::test]
    async fn a_host_is_dialed_from_the_node_by_address_or_by_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in ["127.0.0.1", "localhost", " [127.0.0.1] "] {
            TcpSocket::new(&action(host), port)
                .dial(&elsewhere(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{host:?}: {e}"));
            // The connection reached this listener, and was closed.
            let (mut accepted, _) = listener.accept().unwrap();
            accepted
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut rest = Vec::new();
            io::Read::read_to_end(&mut accepted, &mut rest).unwrap();
            assert!(rest.is_empty(), "{host:?}: nothing sent: {rest:?}");
        }
    }

    #[tokio::test]
    async fn without_a_listener_the_dial_is_refused_in_gos_words() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let error = TcpSocket::new(&action("127.0.0.1"), port)
            .dial(&elsewhere(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                TcpSocketError::Dial(DialError::Connect { ref source, .. })
                    if source.kind() == io::ErrorKind::ConnectionRefused
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("dial tcp 127.0.0.1:{port}: ")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_fails_the_lookup() {
        // `.invalid` never resolves (RFC 2606).
        let error = TcpSocket::new(&action("no-such-host.invalid"), 80)
            .dial(&elsewhere(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                TcpSocketError::Dial(DialError::Resolve { .. } | DialError::NoAddress { .. })
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("dial tcp: lookup no-such-host.invalid: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn without_a_host_the_pods_namespace_is_entered() {
        // The pod's namespace does not exist: the dial must try to enter
        // it rather than dial from here, where a listener waits.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pod = PodAddress {
            netns: "/nonexistent/netns".into(),
            ip: None,
        };
        let error = TcpSocket::new(&action(""), port)
            .dial(&pod, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(error, TcpSocketError::Netns(_)), "{error:?}");
    }

    #[test]
    fn a_deadline_already_past_is_a_timeout() {
        let error = dial("127.0.0.1", 9, Instant::now()).unwrap_err();
        assert_eq!(error.to_string(), "dial tcp 127.0.0.1:9: i/o timeout");
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("db.local", 5432), "db.local:5432");
    }
}
