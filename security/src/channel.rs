//! gRPC channels over TLS: a tonic channel whose connector dials TCP and
//! runs a rustls handshake with skiff's own configuration (CA pinning,
//! client certificate from a swappable store).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::tls::CertStore;
use crate::{Result, SecurityError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How a client reaches a TLS server: what it trusts, which name it
/// expects in the server's certificate, and which certificate it shows.
#[derive(Clone)]
pub struct ClientTransport {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTransport {
    /// Talks to masters: trusts the cluster CA, expects
    /// [`crate::MASTER_SERVER_NAME`], shows `store`'s certificate if any.
    pub fn to_masters(ca_pem: &str, store: Option<Arc<CertStore>>) -> Result<ClientTransport> {
        ClientTransport::new(
            crate::tls::client_config(ca_pem, store)?,
            crate::MASTER_SERVER_NAME,
        )
    }

    /// A transport with a given configuration and expected server name.
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<ClientTransport> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| SecurityError::Certificate(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTransport {
            config,
            server_name,
        })
    }

    /// The same trust and certificate, expecting another server name.
    pub fn with_server_name(&self, server_name: &str) -> Result<ClientTransport> {
        ClientTransport::new(self.config.clone(), server_name)
    }

    /// A lazily connecting channel to `addr` (`host:port`).
    pub fn channel(&self, addr: &str) -> std::result::Result<Channel, tonic::transport::Error> {
        self.endpoint(addr).map(|e| self.channel_on(e))
    }

    /// The endpoint for `addr` with skiff's defaults, for callers that
    /// want to tune it before [`ClientTransport::channel_on`].
    pub fn endpoint(&self, addr: &str) -> std::result::Result<Endpoint, tonic::transport::Error> {
        let addr = addr
            .strip_prefix("https://")
            .or_else(|| addr.strip_prefix("http://"))
            .unwrap_or(addr);
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true))
    }

    /// A lazily connecting channel over a tuned endpoint.
    pub fn channel_on(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(TlsConnect {
            connector: TlsConnector::from(self.config.clone()),
            server_name: self.server_name.clone(),
        })
    }
}

/// Channels by address, made on first use and shared after: a tonic
/// channel is one HTTP/2 connection that many calls multiplex over.
#[derive(Debug, Clone, Default)]
pub struct ChannelCache {
    channels: Arc<std::sync::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl ChannelCache {
    /// The channel to `addr`, made with `connect` if there is none yet.
    pub fn get_or_connect<E>(
        &self,
        addr: &str,
        connect: impl FnOnce() -> std::result::Result<Channel, E>,
    ) -> std::result::Result<Channel, E> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = connect()?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// The connector tonic calls for each new connection.
#[derive(Clone)]
struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connector = self.connector.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(tls))
        })
    }
}
