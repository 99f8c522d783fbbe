//! An HTTP/2 client of a master's Kubernetes REST API, for the `api` and
//! `rbac` scenarios. One [`RestConnection`] is one TCP connection with the
//! same mutual TLS as the gRPC API (the cluster CA pinned, the admin
//! certificate from admin.conf, ALPN `h2`), on which many requests
//! multiplex as gRPC calls do on a channel; or, as a pod calls the API,
//! TLS with the CA alone and a service account token sent as
//! `Authorization: Bearer` on every request
//! ([`RestConnection::with_bearer`]). Requests carry no gRPC content type,
//! so the master hands them to its REST API. A watch answers one JSON
//! event per line, in frames that need not end at a line's end:
//! [`LineSplitter`] cuts the lines out.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::{self, SendRequest};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How much of a refusal's body an error quotes when it is no `Status`.
const QUOTED_BODY_CHARS: usize = 300;
/// The Content-Type of a body given as JSON.
const JSON_CONTENT_TYPE: &str = "application/json";

/// Why a REST request could not be made, or what the master answered
/// instead of what the caller expected.
#[derive(Debug, thiserror::Error)]
pub enum RestClientError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("the TLS server name {0:?} is not a DNS name")]
    ServerName(&'static str),
    #[error("{address} agreed on ALPN {chosen:?}, not h2: is it a skiff master?")]
    NotHttp2 {
        address: String,
        chosen: Option<String>,
    },
    #[error("HTTP/2 handshake with {address}: {source}")]
    Handshake {
        address: String,
        source: hyper::Error,
    },
    #[error("{method} {path}: cannot make the request: {source}")]
    Build {
        method: Method,
        path: String,
        source: hyper::http::Error,
    },
    #[error("{method} {path}: {source}")]
    Exchange {
        method: Method,
        path: String,
        source: hyper::Error,
    },
    #[error("{method} {path}: answered {status}, not {expected}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        expected: StatusCode,
        message: String,
    },
}

/// One HTTP/2 connection to a master's REST API. Clones share it; it
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct RestConnection {
    sender: SendRequest<Full<Bytes>>,
    address: String,
    /// The service account token every request carries, if any.
    bearer: Option<Arc<str>>,
}

impl RestConnection {
    /// Dials `address` (`host:port`), then the TLS handshake with `tls`
    /// (which must offer ALPN `h2`: `skiff_security::tls::client_config`
    /// does) expecting the masters' server name, then HTTP/2's.
    pub async fn connect(
        address: &str,
        tls: Arc<ClientConfig>,
    ) -> Result<RestConnection, RestClientError> {
        let connect_error = |source| RestClientError::Connect {
            address: address.to_owned(),
            source,
        };
        let tcp = TcpStream::connect(address).await.map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        let name = ServerName::try_from(skiff_security::MASTER_SERVER_NAME)
            .map_err(|_| RestClientError::ServerName(skiff_security::MASTER_SERVER_NAME))?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(connect_error)?;
        let chosen = stream.get_ref().1.alpn_protocol();
        if chosen != Some(&b"h2"[..]) {
            return Err(RestClientError::NotHttp2 {
                address: address.to_owned(),
                chosen: chosen.map(|p| String::from_utf8_lossy(p).into_owned()),
            });
        }
        let executor = TokioExecutor::new();
        let io = TokioIo::new(stream);
        let (sender, connection) = http2::handshake::<_, _, Full<Bytes>>(executor, io)
            .await
            .map_err(|source| RestClientError::Handshake {
                address: address.to_owned(),
                source,
            })?;
        // The connection ends with an error when the master goes away; the
        // requests on it then fail, and say so.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(RestConnection {
            sender,
            address: address.to_owned(),
            bearer: None,
        })
    }

    /// The same connection, every request on it carrying `token` as
    /// `Authorization: Bearer`: a service account's calls, made without a
    /// client certificate (connect with TLS that presents none, or the
    /// master takes the certificate's identity and ignores the token).
    pub fn with_bearer(self, token: &str) -> RestConnection {
        RestConnection {
            bearer: Some(Arc::from(token)),
            ..self
        }
    }

    /// Sends a request (`body`, when given, as JSON) and answers once the
    /// status and headers are in, the body still streaming; fails unless
    /// the status is `expected`.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Vec<u8>>,
        expected: StatusCode,
    ) -> Result<Response<Incoming>, RestClientError> {
        let body = body.map(|json| (JSON_CONTENT_TYPE, json));
        self.open_typed(method, path, accept, body, expected).await
    }

    /// Like [`RestConnection::open`], with the body's Content-Type given
    /// (a server-side apply's `application/apply-patch+yaml`).
    pub async fn open_typed(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
        expected: StatusCode,
    ) -> Result<Response<Incoming>, RestClientError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("https://{}{path}", self.address))
            .header(header::ACCEPT, accept);
        if let Some(token) = &self.bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let built = builder.body(body);
        let request = built.map_err(|source| RestClientError::Build {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
        let mut sender = self.sender.clone();
        let response =
            sender
                .send_request(request)
                .await
                .map_err(|source| RestClientError::Exchange {
                    method: method.clone(),
                    path: path.to_owned(),
                    source,
                })?;
        let status = response.status();
        if status == expected {
            return Ok(response);
        }
        let message = match response.into_body().collect().await {
            Ok(collected) => refusal_message(&collected.to_bytes()),
            Err(e) => format!("(the answer's body could not be read: {e})"),
        };
        Err(RestClientError::Refused {
            method,
            path: path.to_owned(),
            status,
            expected,
            message,
        })
    }

    /// Like [`RestConnection::open`], and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<Vec<u8>>,
        expected: StatusCode,
    ) -> Result<Bytes, RestClientError> {
        let body = body.map(|json| (JSON_CONTENT_TYPE, json));
        self.call_typed(method, path, accept, body, expected).await
    }

    /// Like [`RestConnection::open_typed`], and reads the whole answer.
    pub async fn call_typed(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
        expected: StatusCode,
    ) -> Result<Bytes, RestClientError> {
        let response = self
            .open_typed(method.clone(), path, accept, body, expected)
            .await?;
        let collected =
            response
                .into_body()
                .collect()
                .await
                .map_err(|source| RestClientError::Exchange {
                    method,
                    path: path.to_owned(),
                    source,
                })?;
        Ok(collected.to_bytes())
    }
}

/// What a refusal says: the message of the Kubernetes `Status` it carries,
/// else the start of its body.
pub fn refusal_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Status {
        message: String,
    }
    if let Ok(status) = serde_json::from_slice::<Status>(body) {
        return status.message;
    }
    String::from_utf8_lossy(body)
        .chars()
        .take(QUOTED_BODY_CHARS)
        .collect()
}

/// Cuts a stream of bytes into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The start of a line whose end has not come yet.
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The lines `chunk` completes, without their `\n`; blank ones skipped.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let Some(last_end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last_end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        complete
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_across_frames_and_a_partial_line_waits() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"on").is_empty());
        assert_eq!(lines.push(b"e\ntw"), [b"one".to_vec()]);
        let two_lines = lines.push(b"o\n\nthree\n");
        assert_eq!(two_lines, [b"two".to_vec(), b"three".to_vec()]);
        assert!(lines.push(b"").is_empty());
        assert_eq!(lines.push(b"four\n"), [b"four".to_vec()]);
    }

    #[test]
    fn a_refusal_says_its_status_message_or_the_start_of_its_body() {
        let status = br#"{"kind":"Status","status":"Failure","message":"pods \"a\" already exists","code":409}"#;
        assert_eq!(refusal_message(status), "pods \"a\" already exists");
        assert_eq!(refusal_message(b"upstream gone"), "upstream gone");
        let long = vec![b'x'; 1000];
        assert_eq!(refusal_message(&long).len(), QUOTED_BODY_CHARS);
    }
}
