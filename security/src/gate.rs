//! The authentication gate in front of a gRPC server: a call without a
//! verified client certificate is refused with `Unauthenticated`, except
//! the methods listed as open (the join exchange). What an authenticated
//! identity may do is decided by each service. Requests that are not gRPC
//! (the master's Kubernetes REST API on the same port) pass: that API
//! answers them itself, with a Kubernetes `Status`.

use std::task::{Context, Poll};

use tonic::codegen::http;

use crate::listener::PeerInfo;

/// Layer requiring an identity on every call outside `open` (gRPC path
/// prefixes such as `/skiff.join.v1.Join/`).
#[derive(Debug, Clone)]
pub struct RequireIdentity {
    pub open: &'static [&'static str],
}

impl<S> tower::Layer<S> for RequireIdentity {
    type Service = RequireIdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireIdentityService {
            inner,
            open: self.open,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequireIdentityService<S> {
    inner: S,
    open: &'static [&'static str],
}

impl<S, B, R> tower::Service<http::Request<B>> for RequireIdentityService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let open = !grpc || self.open.iter().any(|p| path.starts_with(p));
        let peer = request.extensions().get::<PeerInfo>();
        if !open && peer.and_then(|p| p.identity.as_ref()).is_none() {
            let remote = peer.map(|p| p.remote.to_string()).unwrap_or_default();
            tracing::warn!(%remote, method = %path, "refused a call without a client certificate");
            let status = tonic::Status::unauthenticated(format!(
                "{path} needs a client certificate signed by the cluster CA (admin.conf, or a node's certificate); only the join exchange is open"
            ));
            return Box::pin(async move { Ok(status.into_http::<R>()) });
        }
        Box::pin(self.inner.call(request))
    }
}
