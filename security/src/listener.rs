//! The server side of TLS: accepts TCP connections, runs handshakes (each
//! bounded in time, a bounded number at once, so a flood of half-open
//! connections cannot exhaust the master), and hands tonic connections that
//! carry the peer's verified identity.
//!
//! Every accepted connection is checked for a dead peer by the kernel's
//! TCP keepalive: once it has been silent for [`KEEPALIVE_IDLE`], probes
//! go out, and it is closed when none is answered ([`DEAD_PEER_AFTER`]).
//! A node whose plug is pulled never closes its connections; without the
//! probes, its watches (which send nothing while nothing changes) stayed
//! open on the masters for ever, each holding its buffers and its place in
//! every fan-out, one more with every power cut of every node. The probes
//! cost the process nothing: the kernel sends and answers them. A
//! connection with data in flight to a dead peer is not probed; the
//! kernel's retransmissions end it (about 15 minutes at Linux's
//! defaults). `TCP_USER_TIMEOUT` would bound that too, but it also resets
//! a live peer that reads nothing for that long (a paused
//! `kubectl exec ... | less`), so it is not set, as kube-apiserver does not.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::identity::{CertInfo, Identity};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;
/// How long a connection may be silent before the kernel probes its peer.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
/// Between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the connection is closed.
pub const KEEPALIVE_PROBES: u32 = 4;
/// How long after the last packet from a dead peer an idle connection is
/// closed: the silence, then every probe unanswered. kube-apiserver's
/// listener (Go's defaults) probes after 15 s of silence, 9 times 15 s
/// apart: 150 s.
pub const DEAD_PEER_AFTER: Duration = Duration::from_secs(
    KEEPALIVE_IDLE.as_secs() + KEEPALIVE_INTERVAL.as_secs() * KEEPALIVE_PROBES as u64,
);

/// Who is on the other end of a connection. Tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// From a client certificate the CA signed; `None` without one.
    pub identity: Option<Identity>,
}

impl PeerInfo {
    /// The peer of a tonic request, if it came through a TLS listener.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }

    /// Lets `request` through when its caller's identity passes `allowed`;
    /// otherwise logs and refuses it with PermissionDenied, saying that the
    /// caller may not `action`.
    pub fn require<T>(
        request: &tonic::Request<T>,
        allowed: impl Fn(&Identity) -> bool,
        action: &str,
    ) -> Result<(), tonic::Status> {
        match PeerInfo::of(request).and_then(|p| p.identity.as_ref()) {
            Some(identity) if allowed(identity) => Ok(()),
            other => {
                let who = other
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "anonymous".into());
                tracing::warn!(caller = %who, action, "refused");
                Err(tonic::Status::permission_denied(format!(
                    "{who} may not {action}"
                )))
            }
        }
    }
}

/// One accepted, handshaken connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Has the kernel probe `tcp`'s peer once the connection has been silent,
/// and close it after [`DEAD_PEER_AFTER`] without an answer.
fn detect_dead_peer(tcp: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(tcp).set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )
}

/// Accepts TLS connections on `listener` until `shutdown`, as a stream for
/// tonic's `serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            if let Err(e) = detect_dead_peer(&tcp) {
                tracing::debug!(%remote, error = %e, "setting TCP keepalive");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| CertInfo::from_der(c.as_ref()).ok())
                            .and_then(|info| info.identity);
                        let peer = PeerInfo { remote, identity };
                        let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "TLS handshake refused")
                    }
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_are_probed_and_let_go_when_the_peer_is_dead() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&server);
        assert!(!socket.keepalive().unwrap(), "off until it is set");
        detect_dead_peer(&server).unwrap();
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        // Not set: it would reset a live peer that stops reading.
        assert_eq!(socket.tcp_user_timeout().unwrap(), None);
        assert_eq!(DEAD_PEER_AFTER, Duration::from_secs(40));
    }
}
