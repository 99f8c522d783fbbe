//! skiff's client for the OCI distribution API (the registry HTTP API
//! behind `docker pull`): `GET /v2/<repository>/manifests/<tag|digest>`
//! and `GET /v2/<repository>/blobs/<digest>`, on hyper-util's pooled
//! HTTP/1.1 client over TCP, or rustls (ring) with the system's trust
//! store (`rustls-native-certs`, loaded at the first HTTPS connection).
//!
//! What a registry expects of a client is here: Docker Hub's API host
//! (`docker.io` → `registry-1.docker.io`); the `401` challenge answered
//! with Basic credentials or a token (`registry_auth`), one retry;
//! redirects followed (blobs usually live on a storage host), the
//! `Authorization` header dropped once a redirect leaves the registry's
//! origin; a connect timeout, and a read timeout on the answer's head and
//! between body chunks; manifests and token answers bounded in size, a
//! blob no larger than its descriptor says. Blobs are streamed as a
//! [`BlobStream`]; containerd's content store verifies their digests.
//! Errors name the registry, what was asked for and the HTTP status with
//! an excerpt of the registry's answer ([`RegistryError`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, USER_AGENT,
    WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_stream::{Stream, StreamExt};

use super::content::BlobStream;
use super::registry_auth::{self, AuthCache, Credentials, Requested};

/// The largest manifest (or index) accepted.
pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// The largest token service answer accepted.
const TOKEN_LIMIT: u64 = 1 << 20;
/// How much of an error answer is read for its excerpt.
const ERROR_BODY_LIMIT: usize = 16 << 10;
/// How much of an error answer an error message shows.
const EXCERPT_CHARS: usize = 300;
/// Redirects followed for one request (as reqwest did for oci-client).
const MAX_REDIRECTS: usize = 10;
/// Idle connections are closed after this (pulls are rare).
const POOL_IDLE: Duration = Duration::from_secs(30);
const AGENT: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A request to a registry that failed: which registry, what was asked
/// for (`manifest 1.36`, `blob sha256:…`), and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry}: {what}: {problem}")]
pub struct RegistryError {
    pub registry: String,
    pub what: String,
    #[source]
    pub problem: Problem,
}

/// What went wrong with a registry request.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{url:?} is not an http:// or https:// URL")]
    BadUrl { url: String },
    #[error("cannot connect to {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("request to {url} failed: {cause}")]
    Request { url: String, cause: String },
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{status}{hint}{}", excerpt_suffix(.body))]
    Status {
        status: StatusCode,
        hint: String,
        /// The start of the registry's answer, on one line.
        body: String,
    },
    #[error("the answer is larger than {limit} bytes; refused")]
    TooLarge { limit: u64 },
    #[error("reading the answer: {cause}")]
    Body { cause: String },
    #[error("{0}")]
    Redirect(String),
    #[error("token service {realm}: {message}")]
    Token { realm: String, message: String },
    #[error("answered 401 asking for authentication skiff does not speak ({0})")]
    Challenge(String),
}

fn excerpt_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// How long connecting and waiting for data may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect, and the TLS handshake after it.
    pub connect: Duration,
    /// An answer's head, and each gap between body chunks.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

/// The host a registry's API is served from: Docker Hub's is not
/// `docker.io` itself.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// One repository on one registry, as requests address it.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The registry as image references name it (`docker.io`).
    registry: String,
    /// `https://registry-1.docker.io`, or `http://` for plain-HTTP hosts.
    base: String,
    /// `library/busybox`.
    name: String,
    credentials: Option<Credentials>,
}

impl Repository {
    pub fn new(
        registry: &str,
        name: &str,
        plain_http: bool,
        credentials: Option<Credentials>,
    ) -> Repository {
        let scheme = if plain_http { "http" } else { "https" };
        Repository {
            registry: registry.to_owned(),
            base: format!("{scheme}://{}", api_host(registry)),
            name: name.to_owned(),
            credentials,
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The credentials requests to it are made with, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// `<base>/v2/<name>/manifests/<tag or digest>`.
    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{}/manifests/{reference}", self.base, self.name)
    }

    /// `<base>/v2/<name>/blobs/<digest>`.
    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.name)
    }

    fn error(&self, what: &str, problem: Problem) -> RegistryError {
        RegistryError {
            registry: self.registry.clone(),
            what: what.to_owned(),
            problem,
        }
    }
}

/// A manifest's bytes as the registry sent them, and its `Content-Type`.
#[derive(Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// The HTTP client all pulls share, and what it learned about
/// registries' authentication.
pub struct RegistryClient {
    http: Client<Connector, String>,
    auth: Mutex<AuthCache>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryClient {
    fn default() -> RegistryClient {
        RegistryClient::new(Timeouts::default())
    }
}

impl RegistryClient {
    /// A client; nothing is connected or loaded until the first request.
    pub fn new(timeouts: Timeouts) -> RegistryClient {
        let connector = Connector {
            tls: Arc::new(tokio::sync::OnceCell::new()),
            timeout: timeouts.connect,
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(2)
            .pool_timer(TokioTimer::new())
            .build(connector);
        RegistryClient {
            http,
            auth: Mutex::new(AuthCache::default()),
            timeouts,
        }
    }

    /// The manifest (or index) `reference` (a tag or digest) of
    /// `repository`, asking for the media types in `accept`; at most
    /// [`MANIFEST_LIMIT`] bytes.
    pub async fn manifest(
        &self,
        repository: &Repository,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("manifest {reference}");
        let url = repository.manifest_url(reference);
        let response = self.get(repository, &url, accept, &what).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let bytes = self
            .read_all(response, MANIFEST_LIMIT)
            .await
            .map_err(|problem| repository.error(&what, problem))?;
        Ok(FetchedManifest {
            bytes,
            content_type,
        })
    }

    /// The blob `digest` of `repository` as a stream, refused once it
    /// grows past `size` (the descriptor's) when that is known.
    pub async fn blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: Option<u64>,
    ) -> Result<BlobStream, RegistryError> {
        let what = format!("blob {digest}");
        let url = repository.blob_url(digest);
        let response = self.get(repository, &url, &[], &what).await?;
        if let (Some(length), Some(size)) = (content_length(&response), size) {
            if length > size {
                return Err(repository.error(&what, Problem::TooLarge { limit: size }));
            }
        }
        let registry = repository.registry.clone();
        let body = BodyStream::new(response.into_body(), self.timeouts.read, size);
        Ok(Box::pin(body.map(move |chunk| {
            chunk.map_err(|e| {
                io::Error::other(format!("registry {registry}: {what}: {}", e.problem()))
            })
        })))
    }

    fn lock_auth(&self) -> MutexGuard<'_, AuthCache> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `GET url` on `repository`'s registry with whatever authorization
    /// is known; a 401 from the registry is answered once, as its
    /// challenge asks. Any other answer than 2xx is an error.
    async fn get(
        &self,
        repository: &Repository,
        url: &str,
        accept: &[&str],
        what: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        let has_credentials = repository.credentials.is_some();
        let mut challenged = false;
        loop {
            let authorization = self.lock_auth().authorization(
                &repository.base,
                &repository.name,
                repository.credentials.as_ref(),
                Instant::now(),
            );
            let (response, same_origin) = self
                .follow(url, accept, authorization)
                .await
                .map_err(|p| repository.error(what, p))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status != StatusCode::UNAUTHORIZED || !same_origin || challenged {
                return Err(self.refused(repository, what, response, same_origin).await);
            }
            challenged = true;
            let asked = registry_auth::requested(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            match asked {
                Requested::Bearer {
                    realm,
                    service,
                    scope,
                } => {
                    let scope =
                        scope.unwrap_or_else(|| registry_auth::pull_scope(&repository.name));
                    self.fetch_token(repository, &realm, service.as_deref(), &scope, what)
                        .await?;
                }
                Requested::Basic if has_credentials => {
                    self.lock_auth().use_basic(&repository.base);
                }
                Requested::Basic | Requested::Nothing => {
                    return Err(self.refused(repository, what, response, same_origin).await)
                }
                Requested::Unsupported(schemes) => {
                    return Err(repository.error(what, Problem::Challenge(schemes)))
                }
            }
        }
    }

    /// The error for a failed answer, with a hint and its body's start.
    async fn refused(
        &self,
        repository: &Repository,
        what: &str,
        response: Response<Incoming>,
        same_origin: bool,
    ) -> RegistryError {
        let hint = status_hint(
            response.status(),
            same_origin,
            repository.credentials.as_ref(),
        );
        repository.error(
            what,
            status_problem(response, hint, self.timeouts.read).await,
        )
    }

    /// Gets a token from `realm` (with the repository's credentials if
    /// any) and keeps it for the repository.
    async fn fetch_token(
        &self,
        repository: &Repository,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<(), RegistryError> {
        let failed = |message: String| {
            repository.error(
                what,
                Problem::Token {
                    realm: realm.to_owned(),
                    message,
                },
            )
        };
        let url = registry_auth::token_url(realm, service, scope);
        let basic = repository
            .credentials
            .as_ref()
            .and_then(Credentials::basic_header);
        let (response, _) = self
            .follow(&url, &["application/json"], basic)
            .await
            .map_err(|p| failed(p.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let hint = status_hint(status, true, repository.credentials.as_ref());
            let problem = status_problem(response, hint, self.timeouts.read).await;
            return Err(failed(problem.to_string()));
        }
        let body = self
            .read_all(response, TOKEN_LIMIT)
            .await
            .map_err(|p| failed(p.to_string()))?;
        let token = registry_auth::parse_token_response(&body).map_err(failed)?;
        self.lock_auth().store_token(
            &repository.base,
            &repository.name,
            repository.credentials.as_ref(),
            &token,
            Instant::now(),
        );
        Ok(())
    }

    /// `GET url`, following redirects; `authorization` is dropped once a
    /// redirect leaves `url`'s origin. Also says whether the answer came
    /// from that origin.
    async fn follow(
        &self,
        url: &str,
        accept: &[&str],
        mut authorization: Option<HeaderValue>,
    ) -> Result<(Response<Incoming>, bool), Problem> {
        let mut current = parse_url(url).ok_or_else(|| Problem::BadUrl {
            url: url.to_owned(),
        })?;
        let origin = Origin::of(&current);
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(&current, accept, authorization.clone()).await?;
            let status = response.status();
            if !is_redirect(status) {
                return Ok((response, Origin::of(&current) == origin));
            }
            let Some(location) = response.headers().get(LOCATION) else {
                return Err(Problem::Redirect(format!(
                    "{} answered {status} without a Location",
                    shown(&current)
                )));
            };
            let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
            let Some(next) = resolve_location(&current, &location) else {
                return Err(Problem::Redirect(format!(
                    "{} redirected to {location:?}, which is not an http:// or https:// URL",
                    shown(&current)
                )));
            };
            if Origin::of(&next) != origin {
                authorization = None;
            }
            current = next;
        }
        Err(Problem::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            shown_str(url)
        )))
    }

    /// One `GET`, waiting at most the read timeout for the answer's head.
    async fn send(
        &self,
        url: &Uri,
        accept: &[&str],
        authorization: Option<HeaderValue>,
    ) -> Result<Response<Incoming>, Problem> {
        let mut request = Request::get(url.clone()).header(USER_AGENT, AGENT);
        if !accept.is_empty() {
            request = request.header(ACCEPT, accept.join(", "));
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request.body(String::new()).map_err(|e| Problem::Request {
            url: shown(url),
            cause: e.to_string(),
        })?;
        match tokio::time::timeout(self.timeouts.read, self.http.request(request)).await {
            Err(_) => Err(Problem::Timeout {
                url: shown(url),
                after: self.timeouts.read,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(Problem::Connect {
                url: shown(url),
                cause: causes(&e),
            }),
            Ok(Err(e)) => Err(Problem::Request {
                url: shown(url),
                cause: causes(&e),
            }),
        }
    }

    /// The whole body, refused beyond `limit` bytes.
    async fn read_all(&self, response: Response<Incoming>, limit: u64) -> Result<Vec<u8>, Problem> {
        if content_length(&response).is_some_and(|n| n > limit) {
            return Err(Problem::TooLarge { limit });
        }
        let mut body = BodyStream::new(response.into_body(), self.timeouts.read, Some(limit));
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(BodyError::problem)?);
        }
        Ok(out)
    }
}

/// What a failed status most likely means, for the error message.
fn status_hint(status: StatusCode, same_origin: bool, credentials: Option<&Credentials>) -> String {
    match (status, credentials) {
        (StatusCode::UNAUTHORIZED, _) if !same_origin => String::new(),
        (StatusCode::UNAUTHORIZED, Some(credentials)) => {
            format!(
                " (refused with the credentials from {})",
                credentials.origin
            )
        }
        (StatusCode::UNAUTHORIZED, None) => {
            " (no credentials for this registry in registries.yaml or the pod's imagePullSecrets)"
                .to_owned()
        }
        (StatusCode::NOT_FOUND, _) => " (no such repository, tag or digest)".to_owned(),
        _ => String::new(),
    }
}

/// [`Problem::Status`] with the start of the answer's body.
async fn status_problem(response: Response<Incoming>, hint: String, read: Duration) -> Problem {
    let status = response.status();
    let mut body = BodyStream::new(response.into_body(), read, None);
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_LIMIT {
        match body.next().await {
            Some(Ok(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Problem::Status {
        status,
        hint,
        body: excerpt(&bytes),
    }
}

/// The start of `bytes` as text on one line.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn content_length(response: &Response<Incoming>) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An error and its causes on one line; hyper-util's own message
/// (`client error (Connect)`) is left out when it has causes.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    match error.source() {
        Some(source) => error_chain(source),
        None => error.to_string(),
    }
}

/// `error: cause: cause…`, a cause left out when the text before
/// already says it.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// An absolute `http://` or `https://` URL with a host.
fn parse_url(url: &str) -> Option<Uri> {
    let uri: Uri = url.parse().ok()?;
    (matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()).then_some(uri)
}

/// A redirect's `Location` (absolute, scheme-relative, absolute-path or
/// relative) against the URL that answered it.
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    // A ':' before any '/', '?' or '#' ends a scheme (RFC 3986); other
    // schemes than http and https are refused by `parse_url`.
    let has_scheme = location
        .find([':', '/', '?', '#'])
        .is_some_and(|i| i > 0 && location.as_bytes()[i] == b':');
    let absolute = if has_scheme {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        format!("{scheme}://{authority}{dir}{location}")
    };
    parse_url(&absolute)
}

/// A URL for messages: without its query, which for a storage redirect
/// carries a signature.
fn shown(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_owned(),
    }
}

fn shown_str(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// Scheme, host and port: where credentials may go.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Origin {
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let default_port = if scheme == "https" { 443 } else { 80 };
        Origin {
            host: uri.host().unwrap_or_default().to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        }
    }
}

/// Why reading a body stopped.
#[derive(Debug)]
enum BodyError {
    Idle(Duration),
    TooLarge(u64),
    Transport(String),
}

impl BodyError {
    fn problem(self) -> Problem {
        match self {
            BodyError::Idle(after) => Problem::Body {
                cause: format!("no data for {after:?}"),
            },
            BodyError::TooLarge(limit) => Problem::TooLarge { limit },
            BodyError::Transport(cause) => Problem::Body { cause },
        }
    }
}

/// A response body as a stream of chunks: an error when no data comes
/// for the read timeout, or when more than `limit` bytes come.
struct BodyStream {
    body: Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
    read_timeout: Duration,
    limit: Option<u64>,
    received: u64,
    done: bool,
}

impl BodyStream {
    fn new(body: Incoming, read_timeout: Duration, limit: Option<u64>) -> BodyStream {
        BodyStream {
            body,
            idle: Box::pin(tokio::time::sleep(read_timeout)),
            read_timeout,
            limit,
            received: 0,
            done: false,
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry no data.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let deadline = tokio::time::Instant::now() + this.read_timeout;
                    this.idle.as_mut().reset(deadline);
                    this.received += data.len() as u64;
                    if let Some(limit) = this.limit.filter(|l| this.received > *l) {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
                    }
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyError::Transport(error_chain(&e)))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::Idle(this.read_timeout))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The trust store and TLS settings for registries: the system's roots
/// (as reqwest's platform verifier read them for oci-client), TLS 1.2
/// and 1.3, HTTP/1.1.
async fn system_tls_config() -> io::Result<Arc<ClientConfig>> {
    let loaded = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
        .await
        .map_err(io::Error::other)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let why = loaded
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no CA certificates in the system trust store{why}; install ca-certificates or set SSL_CERT_FILE"
            ),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Dials registries for hyper-util's client: TCP, then TLS for `https`.
#[derive(Clone)]
struct Connector {
    /// Loaded at the first HTTPS connection, then shared.
    tls: Arc<tokio::sync::OnceCell<Arc<ClientConfig>>>,
    timeout: Duration,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<Transport>>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Transport>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let tls = self.tls.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{uri} is not an http:// or https:// URL"),
                    ))
                }
            };
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TCP connection to {host}:{port} within {timeout:?}"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(TokioIo::new(Transport::Plain(tcp)));
            }
            let config = tls.get_or_try_init(system_tls_config).await?.clone();
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a TLS server name: {e}"),
                )
            })?;
            let stream =
                tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "TLS handshake with {host}:{port} took longer than {timeout:?}"
                            ),
                        )
                    })??;
            Ok(TokioIo::new(Transport::Tls(Box::new(stream))))
        })
    }
}

/// A connection to a registry: plain TCP or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Transport {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::runtime::test_registry::{answer, TestServer};

    /// Repository `app` on `registry`, over plain HTTP.
    fn repository_on(registry: &TestServer, credentials: Option<Credentials>) -> Repository {
        Repository::new(&registry.addr.to_string(), "app", true, credentials)
    }

    const MANIFEST: &str =
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_become_urls_on_the_api_host() {
        let hub = Repository::new("docker.io", "library/busybox", false, None);
        assert_eq!(
            hub.manifest_url("1.36"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/1.36"
        );
        assert_eq!(
            hub.blob_url(DIGEST),
            format!("https://registry-1.docker.io/v2/library/busybox/blobs/{DIGEST}")
        );
        let local = Repository::new("127.0.0.1:5000", "e2e/busybox", true, None);
        assert_eq!(
            local.manifest_url(DIGEST),
            format!("http://127.0.0.1:5000/v2/e2e/busybox/manifests/{DIGEST}")
        );
        let lan = Repository::new("registry.lan:5000", "a/b", false, None);
        assert_eq!(
            lan.manifest_url("v1"),
            "https://registry.lan:5000/v2/a/b/manifests/v1"
        );
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn redirect_locations_resolve_against_the_answering_url() {
        let base: Uri = "https://reg.example:5000/v2/app/blobs/sha256:ab?x=1"
            .parse()
            .unwrap();
        for (location, want) in [
            (
                "https://s3.example/bucket/blob?X-Amz-Signature=abc",
                "https://s3.example/bucket/blob?X-Amz-Signature=abc",
            ),
            ("HTTP://Other.example/x", "http://other.example/x"),
            ("//cdn.example/blob", "https://cdn.example/blob"),
            (
                "/storage/blob?sig=1",
                "https://reg.example:5000/storage/blob?sig=1",
            ),
            ("other", "https://reg.example:5000/v2/app/blobs/other"),
            ("  /trimmed ", "https://reg.example:5000/trimmed"),
        ] {
            let got = resolve_location(&base, location).unwrap();
            assert_eq!(
                got.to_string().to_ascii_lowercase(),
                want.to_ascii_lowercase(),
                "{location}"
            );
        }
        for bad in ["ftp://x/y", "http://", "http://bad host/x"] {
            assert!(resolve_location(&base, bad).is_none(), "{bad}");
        }
        let origin = |u: &str| Origin::of(&u.parse::<Uri>().unwrap());
        assert_eq!(
            origin("https://a.example/x"),
            origin("https://A.example:443/y")
        );
        assert_eq!(
            origin("http://a.example/x"),
            origin("http://a.example:80/x")
        );
        assert_ne!(origin("https://a.example/x"), origin("http://a.example/x"));
        assert_ne!(
            origin("http://a.example:5000/x"),
            origin("http://a.example:5001/x")
        );
        assert_ne!(origin("https://a.example/x"), origin("https://b.example/x"));
        // Messages never show a signed query.
        assert_eq!(
            shown(
                &"https://s3.example/b/blob?X-Amz-Signature=secret"
                    .parse()
                    .unwrap()
            ),
            "https://s3.example/b/blob"
        );
    }

    #[test]
    fn error_excerpts_are_one_short_line() {
        assert_eq!(excerpt(b"{\"errors\":\n  [ 1 ]}\n"), "{\"errors\": [ 1 ]}");
        let long = "é".repeat(EXCERPT_CHARS + 5);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
    }

    fn credentials(username: &str, password: &str) -> Option<Credentials> {
        Some(Credentials {
            username: username.into(),
            password: password.into(),
            origin: super::registry_auth::CredentialOrigin::RegistriesFile,
        })
    }

    async fn collect(mut stream: BlobStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn bearer_challenge_token_manifest_and_redirected_blob() {
        // The storage host a blob is redirected to: another origin, which
        // must never see the registry's token.
        let storage = TestServer::start(Arc::new(
            |_: SocketAddr, path: &str, auth: Option<&str>| match (path, auth) {
                ("/storage/layer?sig=1", None) => answer(200, &[], "layer-bytes"),
                _ => answer(400, &[], "unexpected request"),
            },
        ))
        .await;
        let storage_addr = storage.addr;
        let registry = TestServer::start(Arc::new(move |me: SocketAddr, path: &str, auth: Option<&str>| {
            let challenge = (
                "www-authenticate",
                format!(
                    r#"Bearer realm="http://{me}/token",service="test-registry",scope="repository:app:pull""#
                ),
            );
            let authorized = auth == Some("Bearer tok-1");
            match path {
                "/token?service=test-registry&scope=repository%3Aapp%3Apull" => {
                    if auth == Some("Basic dTpw") {
                        answer(200, &[], r#"{"access_token":"tok-1","expires_in":300}"#)
                    } else {
                        answer(401, &[], r#"{"details":"bad credentials"}"#)
                    }
                }
                "/v2/app/manifests/1" if authorized => {
                    answer(200, &[("content-type", OCI_MANIFEST.into())], MANIFEST)
                }
                p if p == format!("/v2/app/blobs/{DIGEST}") && authorized => answer(
                    307,
                    &[("location", format!("http://{storage_addr}/storage/layer?sig=1"))],
                    "",
                ),
                _ => answer(401, &[challenge], r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#),
            }
        }))
        .await;
        let client = RegistryClient::default();
        let repository = repository_on(&registry, credentials("u", "p"));
        let manifest = client
            .manifest(&repository, "1", &[OCI_MANIFEST])
            .await
            .unwrap();
        assert_eq!(manifest.bytes, MANIFEST.as_bytes());
        assert_eq!(manifest.content_type.as_deref(), Some(OCI_MANIFEST));
        let blob = client.blob(&repository, DIGEST, Some(11)).await.unwrap();
        assert_eq!(collect(blob).await.unwrap(), b"layer-bytes");
        // The token is kept: a second pull asks the token service nothing.
        client
            .manifest(&repository, "1", &[OCI_MANIFEST])
            .await
            .unwrap();
        let seen = registry.seen();
        let tokens = seen.iter().filter(|(p, _)| p.starts_with("/token")).count();
        assert_eq!(tokens, 1, "{seen:?}");
        assert_eq!(seen[0], ("/v2/app/manifests/1".to_owned(), None));
        assert_eq!(seen[1].1.as_deref(), Some("Basic dTpw"));
        assert_eq!(seen[2].1.as_deref(), Some("Bearer tok-1"));
        assert_eq!(
            storage.seen(),
            vec![("/storage/layer?sig=1".to_owned(), None)]
        );

        // Wrong credentials: the token service's refusal, named.
        let wrong = repository_on(&registry, credentials("u", "nope"));
        let err = RegistryClient::default()
            .manifest(&wrong, "1", &[OCI_MANIFEST])
            .await
            .unwrap_err()
            .to_string();
        for part in [
            registry.addr.to_string().as_str(),
            "manifest 1",
            "token service",
            "401 Unauthorized",
            "refused with the credentials",
            "bad credentials",
        ] {
            assert!(err.contains(part), "{part:?} in {err}");
        }
    }

    #[tokio::test]
    async fn basic_challenge_uses_configured_credentials_or_says_there_are_none() {
        let registry = TestServer::start(Arc::new(
            |_: SocketAddr, path: &str, auth: Option<&str>| match (path, auth) {
                ("/v2/app/manifests/1", Some("Basic dTpw")) => answer(200, &[], MANIFEST),
                _ => answer(
                    401,
                    &[("www-authenticate", r#"Basic realm="skiff-e2e""#.into())],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                ),
            },
        ))
        .await;
        let client = RegistryClient::default();
        let repository = repository_on(&registry, credentials("u", "p"));
        for _ in 0..2 {
            let manifest = client.manifest(&repository, "1", &[]).await.unwrap();
            assert_eq!(manifest.bytes, MANIFEST.as_bytes());
        }
        // Challenged once; then Basic is sent straight away.
        let auths: Vec<Option<String>> = registry.seen().into_iter().map(|(_, a)| a).collect();
        assert_eq!(
            auths,
            vec![None, Some("Basic dTpw".into()), Some("Basic dTpw".into())]
        );

        let anonymous = repository_on(&registry, None);
        let err = client
            .manifest(&anonymous, "1", &[])
            .await
            .unwrap_err()
            .to_string();
        for part in [
            format!("registry {}", registry.addr),
            "manifest 1".into(),
            "401 Unauthorized".into(),
            "no credentials for this registry in registries.yaml".into(),
            "authentication required".into(),
        ] {
            assert!(err.contains(&part), "{part:?} in {err}");
        }
        let wrong = repository_on(&registry, credentials("u", "x"));
        let err = RegistryClient::default()
            .manifest(&wrong, "1", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused with the credentials"), "{err}");
    }

    #[tokio::test]
    async fn failures_name_status_body_and_limits() {
        let registry = TestServer::start(Arc::new(
            |me: SocketAddr, path: &str, _: Option<&str>| match path {
                "/v2/app/manifests/missing" => answer(
                    404,
                    &[],
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                ),
                "/v2/app/manifests/huge" => {
                    answer(200, &[], &"x".repeat(MANIFEST_LIMIT as usize + 1))
                }
                "/v2/app/manifests/loop" => answer(
                    302,
                    &[("location", format!("http://{me}/v2/app/manifests/loop"))],
                    "",
                ),
                "/v2/app/manifests/nowhere" => answer(302, &[], ""),
                "/v2/app/manifests/negotiate" => {
                    answer(401, &[("www-authenticate", "Negotiate".into())], "")
                }
                p if p == format!("/v2/app/blobs/{DIGEST}") => answer(200, &[], "0123456789"),
                _ => answer(500, &[], "boom"),
            },
        ))
        .await;
        let client = RegistryClient::default();
        let repository = repository_on(&registry, None);
        let err = manifest_error(&client, &repository, "missing").await;
        assert!(
            err.contains("404 Not Found (no such repository, tag or digest)"),
            "{err}"
        );
        assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
        let err = manifest_error(&client, &repository, "huge").await;
        assert!(err.contains("larger than 4194304 bytes"), "{err}");
        let err = manifest_error(&client, &repository, "loop").await;
        assert!(err.contains("more than 10 redirects"), "{err}");
        let err = manifest_error(&client, &repository, "nowhere").await;
        assert!(err.contains("without a Location"), "{err}");
        let err = manifest_error(&client, &repository, "negotiate").await;
        assert!(err.contains("does not speak (negotiate)"), "{err}");
        let err = manifest_error(&client, &repository, "other").await;
        assert!(err.contains("500 Internal Server Error: boom"), "{err}");
        // A blob larger than its descriptor says is refused.
        let err = match client.blob(&repository, DIGEST, Some(4)).await {
            Ok(_) => panic!("a 10-byte blob passed for 4"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("blob {DIGEST}")), "{err}");
        assert!(err.contains("larger than 4 bytes"), "{err}");

        // Nobody listening.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let gone = Repository::new(&format!("127.0.0.1:{port}"), "app", true, None);
        let err = client
            .manifest(&gone, "1", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "cannot connect to http://127.0.0.1:{port}/v2/app/manifests/1"
            )),
            "{err}"
        );
    }

    async fn manifest_error(
        client: &RegistryClient,
        repository: &Repository,
        reference: &str,
    ) -> String {
        client
            .manifest(repository, reference, &[])
            .await
            .unwrap_err()
            .to_string()
    }

    /// A server that answers every connection with `reply`, then holds it
    /// open without a word.
    async fn stalling_server(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(reply).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn silent_registries_time_out() {
        let client = RegistryClient::new(Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_millis(300),
        });
        let mute = stalling_server(b"").await;
        let repository = Repository::new(&mute.to_string(), "app", true, None);
        let err = client
            .manifest(&repository, "1", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not answer within 300ms"), "{err}");

        let slow = stalling_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc").await;
        let repository = Repository::new(&slow.to_string(), "app", true, None);
        let mut blob = client.blob(&repository, DIGEST, None).await.unwrap();
        assert_eq!(&blob.next().await.unwrap().unwrap()[..], b"abc");
        let err = blob.next().await.unwrap().unwrap_err().to_string();
        assert!(err.contains("no data for 300ms"), "{err}");
        assert!(err.contains(&format!("registry {slow}")), "{err}");
    }
}
