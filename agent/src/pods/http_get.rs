//! The `httpGet` action that probes and lifecycle hooks share, sent as the
//! kubelet sends it (`pkg/probe/http`): `GET <scheme>://<host>:<port><path>`
//! to the action's `host`, else to the pod's address. `scheme: HTTPS` is
//! TLS without verifying the server's certificate, as the kubelet's
//! `InsecureSkipVerify` (the handshake's signatures are still checked, by
//! [`skiff_security::tls::AcceptAnyServer`]); `httpHeaders` go as given, a
//! `Host` among them naming the request's host; `User-Agent`
//! (`kube-probe/1.34`, `kube-lifecycle/1.34`) and `Accept: */*` unless
//! given (an empty `Accept` leaves it out); one request per connection.
//! Only the answer's status is read: probes pass on 2xx and 3xx, hooks on
//! any answer. A plain HTTP answer to the TLS handshake (its first bytes
//! `HTTP/`) is told apart, in the words of the kubelet's Go client
//! (`http: server gave HTTP response to HTTPS client`): a hook retries
//! such a request as HTTP ([`HttpGet::plain_http`]), a probe fails.
//!
//! Where it is sent from: the pod's own address from inside the pod's
//! network namespace (the node's for a pod in the host's network), loopback
//! there while the pod has no address; an action's `host` (an address, or a
//! name the node's resolver answers) from the node's namespace, the
//! agent's own, as the kubelet sends it from the node; either is dialed as
//! a `tcpSocket` probe is (`super::tcp_socket::dial`). Each request runs
//! on a thread of its own with blocking sockets, bounded by its timeout: a
//! thread in a pod's namespace is one nothing else uses.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use skiff_proto::v1;

use crate::network::netns::{self, NetnsError};

use super::pod_address::PodAddress;
use super::tcp_socket::{dial, host_port, DialError};

/// The Kubernetes version skiff's API reports (`master/src/rest/discovery.rs`
/// `KUBERNETES_MINOR`), in the User-Agent as the kubelet puts its own.
const KUBERNETES_VERSION: &str = "1.34";

/// How much of an answer is read looking for its status line.
const STATUS_LINE_LIMIT: usize = 1024;

/// Why an httpGet action got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpGetError {
    #[error("scheme {0:?} is neither HTTP nor HTTPS")]
    Scheme(String),
    #[error("header {name:?} has a line break or NUL in its name or value; it cannot be sent")]
    Header { name: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("Get {url:?}: {source}")]
    Dial {
        url: String,
        #[source]
        source: DialError,
    },
    #[error("Get {url:?}: {host:?} is not a TLS server name")]
    ServerName { url: String, host: String },
    #[error("Get {url:?}: TLS: {source}")]
    Tls {
        url: String,
        #[source]
        source: rustls::Error,
    },
    #[error("Get {url:?}: http: server gave HTTP response to HTTPS client")]
    HttpAnswerToHttps { url: String },
    #[error("Get {url:?}: sending the request: {source}")]
    Write {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("Get {url:?}: reading the answer: {source}")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("Get {url:?}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("Get {url:?}: the answer is not HTTP/1.x")]
    NotHttp { url: String },
    #[error("Get {url:?}: the request's thread ended without an answer")]
    ThreadLost { url: String },
}

/// Who sends the request, as its `User-Agent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Probe,
    Lifecycle,
}

impl Purpose {
    fn user_agent(self) -> String {
        match self {
            Purpose::Probe => format!("kube-probe/{KUBERNETES_VERSION}"),
            Purpose::Lifecycle => format!("kube-lifecycle/{KUBERNETES_VERSION}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// One `httpGet` action, ready to send.
#[derive(Debug, Clone)]
pub struct HttpGet {
    scheme: Scheme,
    /// The action's `host`; none: the pod's address.
    host: Option<String>,
    port: u16,
    /// The request target: `/` at least, spaces and bytes outside
    /// printable ASCII percent-encoded.
    target: String,
    headers: Vec<(String, String)>,
}

impl HttpGet {
    /// `action`, to `port` (the caller resolves a named port).
    pub fn new(action: &v1::HttpGetAction, port: u16) -> Result<HttpGet, HttpGetError> {
        let scheme = match action.scheme.to_ascii_uppercase().as_str() {
            "" | "HTTP" => Scheme::Http,
            "HTTPS" => Scheme::Https,
            _ => return Err(HttpGetError::Scheme(action.scheme.clone())),
        };
        let unsendable = |text: &str| text.contains(['\r', '\n', '\0']);
        let mut headers = Vec::with_capacity(action.http_headers.len());
        for header in &action.http_headers {
            if unsendable(&header.name) || unsendable(&header.value) || header.name.is_empty() {
                return Err(HttpGetError::Header {
                    name: header.name.clone(),
                });
            }
            headers.push((header.name.clone(), header.value.clone()));
        }
        let host = action
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(HttpGet {
            scheme,
            host: (!host.is_empty()).then(|| host.to_owned()),
            port,
            target: request_target(&action.path),
            headers,
        })
    }

    /// Sends the request for `purpose` (see the module's doc for where it
    /// goes and from where), waiting at most `timeout` in all; the
    /// answer's status code.
    pub async fn send(
        &self,
        pod: &PodAddress,
        purpose: Purpose,
        timeout: Duration,
    ) -> Result<u16, HttpGetError> {
        let host = self.host_for(pod);
        let exchange = Exchange {
            url: self.url(&host),
            text: self.request_text(&host, purpose),
            tls: self.scheme == Scheme::Https,
            host,
            port: self.port,
            timeout,
        };
        if self.host.is_some() {
            // The node's namespace: this process's own.
            let url = exchange.url.clone();
            return tokio::task::spawn_blocking(move || exchange.run())
                .await
                .map_err(|_| HttpGetError::ThreadLost { url })?;
        }
        netns::run_in(pod.netns.clone(), move || exchange.run()).await
    }

    /// The same request as plain HTTP, its `Authorization` headers left
    /// out: the kubelet's retry of an HTTPS hook answered in plain HTTP,
    /// which does not send credentials meant for TLS in the clear.
    pub fn plain_http(&self) -> HttpGet {
        HttpGet {
            scheme: Scheme::Http,
            headers: self
                .headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("Authorization"))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// `host:port` the request is sent to (`10.42.0.7:8080`, `[fd00::1]:80`;
    /// the URL's host, not a `Host` header's), for messages.
    pub fn authority(&self, pod: &PodAddress) -> String {
        host_port(&self.host_for(pod), self.port)
    }

    /// The action's `host`, else the pod's address (loopback while it
    /// has none).
    fn host_for(&self, pod: &PodAddress) -> String {
        match &self.host {
            Some(host) => host.clone(),
            None => pod.host(),
        }
    }

    /// `http://10.42.0.7:8080/healthz`, for messages.
    fn url(&self, host: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", host_port(host, self.port), self.target)
    }

    /// The request's head, as the kubelet's Go client writes it.
    fn request_text(&self, host: &str, purpose: Purpose) -> String {
        let given = |name| first_header(&self.headers, name);
        let host_header = match given("Host") {
            Some(value) if !value.is_empty() => value.to_owned(),
            _ => host_port(host, self.port),
        };
        let mut text = format!("GET {} HTTP/1.1\r\nHost: {host_header}\r\n", self.target);
        // Go sends the first User-Agent given, none when it is empty.
        match given("User-Agent") {
            None => text.push_str(&format!("User-Agent: {}\r\n", purpose.user_agent())),
            Some("") => {}
            Some(agent) => text.push_str(&format!("User-Agent: {agent}\r\n")),
        }
        let accept = given("Accept");
        if accept.is_none() {
            text.push_str("Accept: */*\r\n");
        }
        for (name, value) in &self.headers {
            let skipped = name.eq_ignore_ascii_case("Host")
                || name.eq_ignore_ascii_case("User-Agent")
                || (name.eq_ignore_ascii_case("Accept") && accept == Some(""));
            if !skipped {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        text.push_str("Connection: close\r\n\r\n");
        text
    }
}

/// The first value of header `name` (in any case) in `headers`.
fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An action's path as a request target: `/` when empty, a leading `/`
/// added, spaces, controls and non-ASCII bytes percent-encoded.
fn request_target(path: &str) -> String {
    let mut target = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        target.push('/');
    }
    for byte in path.bytes() {
        if byte.is_ascii_graphic() {
            target.push(char::from(byte));
        } else {
            target.push_str(&format!("%{byte:02X}"));
        }
    }
    target
}

/// One request on its thread: resolve, connect, TLS if asked, send the
/// head, read the status line.
struct Exchange {
    url: String,
    /// Where to connect: an address or a name.
    host: String,
    port: u16,
    tls: bool,
    text: String,
    timeout: Duration,
}

impl Exchange {
    fn run(self) -> Result<u16, HttpGetError> {
        let deadline = Instant::now() + self.timeout;
        let tcp = self.connect(deadline)?;
        // A second handle on the socket, to shorten its timeouts as the
        // deadline nears while TLS owns the first.
        let control = tcp.try_clone().map_err(|source| self.write_error(source))?;
        let _ = tcp.set_nodelay(true);
        if self.tls {
            let connection = ClientConnection::new(tls_config(&self.url)?, self.server_name()?)
                .map_err(|source| HttpGetError::Tls {
                    url: self.url.clone(),
                    source,
                })?;
            let mut stream = StreamOwned::new(connection, FirstBytes::new(tcp));
            let talked = self.talk(&mut stream, &control, deadline);
            match talked {
                // Whatever failed first, TLS cannot have got through.
                Err(_) if stream.sock.are_http() => Err(HttpGetError::HttpAnswerToHttps {
                    url: self.url.clone(),
                }),
                result => result,
            }
        } else {
            self.talk(tcp, &control, deadline)
        }
    }

    /// A connection to the first of the host's addresses that answers.
    fn connect(&self, deadline: Instant) -> Result<TcpStream, HttpGetError> {
        dial(&self.host, self.port, deadline).map_err(|source| match source {
            DialError::Timeout { .. } => self.timed_out(),
            source => HttpGetError::Dial {
                url: self.url.clone(),
                source,
            },
        })
    }

    /// The name TLS is spoken to: no SNI for an address.
    fn server_name(&self) -> Result<ServerName<'static>, HttpGetError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(ServerName::from(ip));
        }
        ServerName::try_from(self.host.clone()).map_err(|_| HttpGetError::ServerName {
            url: self.url.clone(),
            host: self.host.clone(),
        })
    }

    /// Sends the head on `stream` and reads the status line.
    fn talk(
        &self,
        mut stream: impl Read + Write,
        control: &TcpStream,
        deadline: Instant,
    ) -> Result<u16, HttpGetError> {
        let remaining = self.remaining(deadline)?;
        control
            .set_write_timeout(Some(remaining))
            .and_then(|()| control.set_read_timeout(Some(remaining)))
            .map_err(|source| self.write_error(source))?;
        stream
            .write_all(self.text.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|source| {
                if is_timeout(&source) {
                    self.timed_out()
                } else {
                    self.write_error(source)
                }
            })?;
        let mut head = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < STATUS_LINE_LIMIT {
            control
                .set_read_timeout(Some(self.remaining(deadline)?))
                .map_err(|source| self.read_error(source))?;
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(self.timed_out()),
                Err(source) => return Err(self.read_error(source)),
            }
        }
        parse_status(&head).ok_or_else(|| HttpGetError::NotHttp {
            url: self.url.clone(),
        })
    }

    /// What is left until `deadline`; a timeout once it has passed.
    fn remaining(&self, deadline: Instant) -> Result<Duration, HttpGetError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(left)
    }

    fn timed_out(&self) -> HttpGetError {
        HttpGetError::Timeout {
            url: self.url.clone(),
            after: self.timeout,
        }
    }

    fn write_error(&self, source: io::Error) -> HttpGetError {
        HttpGetError::Write {
            url: self.url.clone(),
            source,
        }
    }

    fn read_error(&self, source: io::Error) -> HttpGetError {
        HttpGetError::Read {
            url: self.url.clone(),
            source,
        }
    }
}

/// The connection under TLS, keeping the first bytes the server sends:
/// the kubelet's Go client tells a plain HTTP answer to its handshake by
/// them (a record header reading `HTTP/`).
struct FirstBytes {
    tcp: TcpStream,
    first: [u8; 5],
    kept: usize,
}

impl FirstBytes {
    fn new(tcp: TcpStream) -> FirstBytes {
        FirstBytes {
            tcp,
            first: [0; 5],
            kept: 0,
        }
    }

    /// Whether the server's first five bytes were `HTTP/`.
    fn are_http(&self) -> bool {
        self.kept == self.first.len() && &self.first == b"HTTP/"
    }
}

impl Read for FirstBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        let take = n.min(self.first.len() - self.kept);
        self.first[self.kept..self.kept + take].copy_from_slice(&buf[..take]);
        self.kept += take;
        Ok(n)
    }
}

impl Write for FirstBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// TLS 1.2 and 1.3 accepting any server certificate, as the kubelet's
/// probe and hook clients (`InsecureSkipVerify`); no ALPN, HTTP/1.1 only.
/// Built once and shared by every HTTPS probe and hook.
fn tls_config(url: &str) -> Result<Arc<ClientConfig>, HttpGetError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(skiff_security::tls::AcceptAnyServer::default());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|source| HttpGetError::Tls {
            url: url.to_owned(),
            source,
        })
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pods::test_http_server::TestHttpServer;

    fn action(host: &str, scheme: &str, path: &str, headers: &[(&str, &str)]) -> v1::HttpGetAction {
        v1::HttpGetAction {
            host: host.into(),
            port: "ignored: the caller resolves it".into(),
            scheme: scheme.into(),
            path: path.into(),
            http_headers: headers
                .iter()
                .map(|(name, value)| v1::HttpHeader {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
        }
    }

    /// A pod address whose namespace is never entered: the requests of
    /// these tests name a host, reached from this process's namespace.
    fn elsewhere() -> PodAddress {
        PodAddress {
            netns: "/nonexistent/netns".into(),
            ip: Some(Ipv4Addr::new(10, 42, 0, 7)),
        }
    }

    /// The header lines of `head`, after its request line.
    fn header_lines(head: &str) -> Vec<&str> {
        head.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[tokio::test]
    async fn a_host_header_names_the_host_and_custom_headers_go_as_given() {
        let server = TestHttpServer::http(204).await;
        let headers = [
            ("Host", "app.example"),
            ("X-Token", "abc"),
            ("X-Token", "def"),
            ("Accept", ""),
        ];
        let request = HttpGet::new(
            &action("127.0.0.1", "HTTP", "/healthz?full=1", &headers),
            server.port,
        )
        .unwrap();
        let status = request
            .send(&elsewhere(), Purpose::Probe, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 204);
        let heads = server.heads();
        assert!(
            heads[0].starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert_eq!(
            header_lines(&heads[0]),
            [
                "Host: app.example",
                "User-Agent: kube-probe/1.34",
                "X-Token: abc",
                "X-Token: def",
                "Connection: close"
            ]
        );

        // Without: the host and port asked for, the kubelet's Accept, a
        // User-Agent of the caller's own.
        let request = HttpGet::new(
            &action("127.0.0.1", "", "", &[("User-Agent", "checker/2")]),
            server.port,
        )
        .unwrap();
        request
            .send(&elsewhere(), Purpose::Lifecycle, Duration::from_secs(5))
            .await
            .unwrap();
        let heads = server.heads();
        assert_eq!(
            header_lines(&heads[1]),
            [
                format!("Host: 127.0.0.1:{}", server.port).as_str(),
                "User-Agent: checker/2",
                "Accept: */*",
                "Connection: close"
            ]
        );
        assert!(heads[1].starts_with("GET / HTTP/1.1\r\n"), "{heads:?}");
    }

    #[tokio::test]
    async fn https_is_spoken_without_verifying_the_certificate_and_names_resolve() {
        let server = TestHttpServer::https(200).await;
        for host in ["127.0.0.1", "localhost"] {
            let request = HttpGet::new(&action(host, "HTTPS", "/ready", &[]), server.port).unwrap();
            let status = request
                .send(&elsewhere(), Purpose::Probe, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(status, 200, "{host}");
        }
        let heads = server.heads();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(
            heads[1].contains(&format!("\r\nHost: localhost:{}\r\n", server.port)),
            "{heads:?}"
        );
    }

    #[tokio::test]
    async fn no_answer_is_a_timeout_and_no_listener_a_refused_dial() {
        // Connected (the kernel's backlog) but never answered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let request = HttpGet::new(&action("127.0.0.1", "HTTP", "/", &[]), port).unwrap();
        let begun = std::time::Instant::now();
        let error = request
            .send(&elsewhere(), Purpose::Probe, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            begun.elapsed() < Duration::from_secs(3),
            "{:?}",
            begun.elapsed()
        );
        assert_eq!(
            error.to_string(),
            format!(r#"Get "http://127.0.0.1:{port}/": no answer within 300ms"#)
        );
        drop(silent);

        let error = request
            .send(&elsewhere(), Purpose::Probe, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                HttpGetError::Dial {
                    source: DialError::Connect { .. },
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                r#"Get "http://127.0.0.1:{port}/": dial tcp 127.0.0.1:{port}: "#
            )),
            "{error}"
        );
    }

    #[test]
    fn actions_that_cannot_be_sent_are_refused_before_sending() {
        let error = HttpGet::new(&action("", "FTP", "/", &[]), 80).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"scheme "FTP" is neither HTTP nor HTTPS"#
        );
        let error =
            HttpGet::new(&action("", "HTTP", "/", &[("X-Evil", "a\r\nHost: b")]), 80).unwrap_err();
        assert!(matches!(error, HttpGetError::Header { .. }), "{error}");
        let https = HttpGet::new(&action("[::1]", "https", "/", &[]), 8443).unwrap();
        assert_eq!(https.url("::1"), "https://[::1]:8443/");
    }

    #[test]
    fn paths_become_request_targets_and_status_lines_parse() {
        assert_eq!(request_target(""), "/");
        assert_eq!(request_target("healthz"), "/healthz");
        assert_eq!(request_target("/a b?c=d"), "/a%20b?c=d");
        assert_eq!(request_target("/é"), "/%C3%A9");
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.1 204\r\nX: y\r\n"), Some(204));
        assert_eq!(parse_status(b"SSH-2.0"), None);
    }
}
