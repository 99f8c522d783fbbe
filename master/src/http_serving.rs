//! Serves the API port's connections: HTTP/2 (gRPC, and REST for clients
//! that speak it) and HTTP/1.1 (REST), with HTTP upgrades, which kubectl's
//! `exec` needs (a WebSocket, RFC 6455, is an HTTP/1.1 `101 Switching
//! Protocols`). tonic's own server serves connections without upgrades
//! (hyper's `Connection`, not its `UpgradeableConnection`), so an upgraded
//! request never gets its connection; this is that server's accept loop
//! with hyper-util's `serve_connection_with_upgrades` in its place.
//!
//! As tonic does, every request carries the connection's `ConnectInfo` (the
//! TLS peer, [`skiff_security::PeerInfo`]) in its extensions, which is
//! where identity comes from (on the REST API, a service account token
//! too: `rest::authentication`). A client may connect without a
//! certificate: gRPC then answers only the join exchange, REST only a
//! token. On shutdown no new connection is accepted,
//! open ones are asked to finish (HTTP/2 GOAWAY, HTTP/1 close after the
//! current answer), and those still open after [`DRAIN`] are dropped.

use std::convert::Infallible;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tower::ServiceExt;

/// How long open connections may take to finish after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Accepts `incoming` connections until `shutdown`, serving each with
/// `service`.
pub async fn serve<I, IO, E, S, B>(incoming: I, service: S, shutdown: CancellationToken)
where
    I: Stream<Item = Result<IO, E>>,
    E: std::fmt::Display,
    IO: Connected + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // As tonic sets them: hyper enforces its HTTP/1 header read timeout
    // (30 s) and HTTP/2 timeouts only with a timer.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let io = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = incoming.next() => match next {
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accepting an API connection");
                    continue;
                }
                None => break,
            },
        };
        let info = io.connect_info();
        let service = service.clone();
        let per_request =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(info.clone());
                service.clone().oneshot(request)
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), per_request)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "serving an API connection");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("API connections still open after {DRAIN:?}; dropping them");
    }
}
