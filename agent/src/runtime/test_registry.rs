//! A registry on loopback for tests of the distribution client and of
//! pulls: hyper's HTTP/1.1 server answering every request through a
//! handler (`own address, path and query, Authorization` → answer) and
//! recording each request's path and query and `Authorization` header, so a
//! test can assert which credentials were sent, in which order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers `(own address, path and query, Authorization)`.
pub(crate) type Handler = dyn Fn(SocketAddr, &str, Option<&str>) -> Response<String> + Send + Sync;

/// Each request's path and query, and its `Authorization`.
type SeenRequests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A registry on loopback, serving until the test's runtime ends.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    seen: SeenRequests,
}

impl TestServer {
    pub(crate) async fn start(handler: Arc<Handler>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: SeenRequests = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let path = request
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let auth = request
                            .headers()
                            .get(AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        log.lock().unwrap().push((path.clone(), auth.clone()));
                        let response = handler(addr, &path, auth.as_deref());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, seen }
    }

    /// Every request so far: its path and query, and its `Authorization`.
    pub(crate) fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

/// An answer with `status`, `headers` and `body`.
pub(crate) fn answer(status: u16, headers: &[(&str, String)], body: &str) -> Response<String> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response.body(body.to_owned()).unwrap()
}
