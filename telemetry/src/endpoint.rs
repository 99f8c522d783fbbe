//! The HTTP endpoint: `GET /metrics` (text format 0.0.4), `GET /healthz`
//! and `GET /readyz`. HTTP/1.1 over plain TCP, meant for loopback by
//! default; anything else is 404.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Why a process is not ready; `/readyz` answers 503 with its message.
/// The process's own error type, or a plain `"reason".into()`.
pub type NotReady = Box<dyn std::error::Error + Send + Sync>;

/// What `/readyz` asks.
pub struct Probes {
    pub registry: Arc<Registry>,
    /// `Ok(())` when ready, else why not.
    pub ready: Box<dyn Fn() -> Result<(), NotReady> + Send + Sync>,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn answer(probes: &Probes, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            probes.registry.render(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match (probes.ready)() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, probes: Arc<Probes>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = answer(&probes, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
