//! HTTP and HTTPS servers on loopback for the tests of the `httpGet`
//! action, its probes and its hooks: each answers every request with one
//! status and keeps the request heads it read, so a test can assert what
//! was sent (the Host header, custom headers, the User-Agent). The HTTPS
//! one presents a fresh self-signed certificate (rcgen), which no trust
//! store knows. The plain one answers what is not an HTTP request (a TLS
//! handshake) with `400 Bad Request`, as nginx and Go's server do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A server on `127.0.0.1:port`, serving until the test's runtime ends.
pub(crate) struct TestHttpServer {
    pub(crate) port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TestHttpServer {
    /// Plain HTTP, answering `status`.
    pub(crate) async fn http(status: u16) -> TestHttpServer {
        TestHttpServer::start(status, None).await
    }

    /// HTTPS with a self-signed certificate for `localhost`, answering
    /// `status`.
    pub(crate) async fn https(status: u16) -> TestHttpServer {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certified.cert.der().clone()],
                PrivateKeyDer::Pkcs8(key),
            )
            .unwrap();
        TestHttpServer::start(status, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(status: u16, tls: Option<TlsAcceptor>) -> TestHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = heads.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, tls) = (log.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, status, &log).await;
                            }
                        }
                        None => answer(tcp, status, &log).await,
                    }
                });
            }
        });
        TestHttpServer { port, heads }
    }

    /// The head of every request so far, as it came.
    pub(crate) fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Reads one request's head, keeps it, answers `status` and closes;
/// answers `400` at once to what does not start as a request line does
/// (an HTTP method is upper-case letters).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    status: u16,
    log: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if !head[0].is_ascii_uppercase() {
            let reply =
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
            // Closed once the client is done, lest unread bytes turn the
            // close into a reset that loses the answer.
            let drain = async { while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            return;
        }
    }
    log.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    let reply = format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}
