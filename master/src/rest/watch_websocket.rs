//! Watches over WebSocket, as Headlamp and other browser-side clients open
//! them: a watch request (`?watch=true`) with `Connection: Upgrade` and
//! `Upgrade: websocket` is answered `101 Switching Protocols`, and each
//! event then goes out as one text message holding the JSON line the
//! chunked answer would carry (`{"type":"ADDED","object":{...}}` and its
//! newline, as kube-apiserver's JSON encoder writes it); no channel byte
//! (that is the `channel.k8s.io` protocols' of exec, attach and
//! port-forward, [`super::pod_streams`]).
//!
//! The watch itself is the REST call's (authorized as `watch`, then
//! [`super::watch::start`]), so authorization,
//! selectors, the resourceVersion rules, bookmarks, 410 `Expired` as an
//! `ERROR` event, WatchList's initial-events-end bookmark and the timeout
//! are the chunked watch's; a refusal comes before the upgrade, as a plain
//! `Status` answer. Only the framing is this module's. As kube-apiserver's
//! `WatchServer.HandleWS`, the client's data messages are read and
//! ignored; its pings are answered with pongs; its close, its connection's
//! end or a malformed frame ends the watch, which frees its subscription.
//! The watch's own end (timeout, shutdown, after an `ERROR` event) closes
//! the socket with 1000.
//!
//! A subprotocol is answered only when the client offers one: the first
//! it offers that carries no credential (kube-apiserver's authenticator
//! takes `base64url.bearer.authorization.k8s.io.<token>` out of the header
//! before its handshake echoes what is left; skiff authenticates by client
//! certificate only, and never echoes a token). The messages are plain
//! JSON text whatever the subprotocol: `base64.binary.k8s.io`, which
//! Headlamp offers and then parses each message as JSON, base64-encodes
//! only `wsstream`'s byte streams (logs), never a watch.

use std::sync::Mutex;

use axum::body::Body;
use http::{HeaderMap, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::status::RestError;
use super::stream_session::write_frames;
use super::watch::EventLines;
use super::websocket::{
    self, header_words, ClientHandshake, Message, MessageReader, OPCODE_PONG, OPCODE_TEXT,
};

/// Frames queued for the client before the watch waits for it.
const QUEUED_FRAMES: usize = 32;

/// Whether `headers` ask for a WebSocket (apimachinery's
/// `wsstream.IsWebSocketRequest`: `Upgrade: websocket` and a `Connection`
/// naming `upgrade`).
pub(super) fn is_websocket_request(headers: &HeaderMap) -> bool {
    let upgrade = header_words(headers, "upgrade");
    let connection = header_words(headers, "connection");
    upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"))
        && connection.iter().any(|c| c.eq_ignore_ascii_case("upgrade"))
}

/// Whether a subprotocol carries a credential (a bearer token, or the
/// like of Headlamp's user), which is never echoed back.
fn carries_credential(protocol: &str) -> bool {
    protocol.starts_with("base64url.") && protocol.contains(".authorization.k8s.io.")
}

/// What the client's handshake asked, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handshake {
    /// `Sec-WebSocket-Key`.
    key: String,
    /// The subprotocol to answer with, if the client offered one.
    protocol: Option<String>,
}

/// Reads a WebSocket handshake (RFC 6455 section 4.2.1): version 13, a
/// key, the subprotocol chosen; or why it cannot be served.
fn handshake(headers: &HeaderMap) -> Result<Handshake, RestError> {
    let ClientHandshake { key, offered } =
        ClientHandshake::read(headers).map_err(|e| RestError::bad_request(e.to_string()))?;
    let protocol = offered.into_iter().find(|p| !carries_credential(p));
    Ok(Handshake { key, protocol })
}

/// A request's WebSocket upgrade, for its watch to accept. Held behind a
/// lock because the request is answered through shared references.
pub(super) struct Upgrade(Mutex<Option<OnUpgrade>>);

impl Upgrade {
    /// The upgrade `parts` asks for, if it asks for a WebSocket; its
    /// connection's upgrade taken from the extensions (none on HTTP/2).
    pub(super) fn of(parts: &mut http::request::Parts) -> Option<Upgrade> {
        if !is_websocket_request(&parts.headers) {
            return None;
        }
        Some(Upgrade(Mutex::new(parts.extensions.remove::<OnUpgrade>())))
    }

    /// Checks the handshake in `headers` and takes the connection, before
    /// the watch starts.
    pub(super) fn accept(&self, headers: &HeaderMap) -> Result<Accepted, RestError> {
        let handshake = handshake(headers)?;
        let connection = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| {
                RestError::bad_request(
                    "this connection cannot be upgraded to a WebSocket; watches over WebSocket need HTTP/1.1",
                )
            })?;
        Ok(Accepted {
            handshake,
            connection,
        })
    }
}

/// An accepted upgrade, waiting for its watch.
pub(super) struct Accepted {
    handshake: Handshake,
    connection: OnUpgrade,
}

impl Accepted {
    /// Answers `101 Switching Protocols` and carries `lines` over the
    /// upgraded connection (see [`relay`]).
    pub(super) fn serve(self, lines: EventLines) -> Result<Response<Body>, RestError> {
        let Accepted {
            handshake,
            connection,
        } = self;
        let response =
            websocket::switching_protocols(&handshake.key, handshake.protocol.as_deref())
                .body(Body::empty())
                .map_err(|e| {
                    RestError::internal(format!("building the WebSocket upgrade answer: {e}"))
                })?;
        tokio::spawn(async move {
            let upgraded = match connection.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "a WebSocket watch's connection was not upgraded");
                    return;
                }
            };
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            relay(lines, read, write).await;
        });
        Ok(response)
    }
}

/// One watch event as a WebSocket message: a text frame holding its line.
fn event_frame(line: &[u8]) -> Vec<u8> {
    websocket::frame(OPCODE_TEXT, line)
}

/// Carries a watch over a WebSocket: each of `lines` one text message to
/// `write`, the client's pings (read from `read`) answered, until the
/// watch ends or the client closes (or its connection ends, or it sends a
/// malformed frame); then drops `lines` (ending the watch), writes a close
/// frame (1000) and shuts `write` down.
async fn relay<R, W>(mut lines: EventLines, read: R, write: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (frames, queued) = mpsc::channel(QUEUED_FRAMES);
    let session = async move {
        let mut reader = MessageReader::new(read);
        let reading = async {
            loop {
                match reader.next().await {
                    Ok(Some(Message::Ping(payload))) => {
                        let pong = websocket::frame(OPCODE_PONG, &payload);
                        if frames.send(pong).await.is_err() {
                            return;
                        }
                    }
                    // A watch reads nothing from its client.
                    Ok(Some(Message::Data(_) | Message::Pong)) => {}
                    Ok(Some(Message::Close(_)) | None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "a WebSocket watch's client");
                        return;
                    }
                }
            }
        };
        let sending = async {
            while let Some(line) = lines.recv().await {
                if frames.send(event_frame(&line)).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = reading => {}
            () = sending => {}
        }
        // `lines` and `frames` go here: the watch ends, and the writer
        // closes once it has sent what is queued.
    };
    tokio::join!(session, write_frames(write, queued));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderValue, StatusCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::rest::websocket::{OPCODE_CLOSE, OPCODE_PING};

    /// How long a test waits for what must happen at once.
    const PROMPTLY: Duration = Duration::from_secs(5);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// A client frame, masked as a client must.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        assert!(payload.len() < 126, "short frames only");
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// One server frame from `r`: its opcode and payload (server frames
    /// are unmasked and, here, never fragmented).
    async fn server_frame<R: AsyncRead + Unpin>(r: &mut R) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0] & 0x80, 0x80, "one frame per message");
        assert_eq!(head[1] & 0x80, 0, "a server frame is not masked");
        let length = match head[1] & 0x7F {
            126 => usize::from(r.read_u16().await.unwrap()),
            127 => r.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0u8; length];
        r.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0F, payload)
    }

    #[test]
    fn only_an_upgrade_to_websocket_is_a_websocket_request() {
        let upgrade =
            |u: &str, c: &str| is_websocket_request(&headers(&[("upgrade", u), ("connection", c)]));
        assert!(upgrade("websocket", "Upgrade"));
        assert!(upgrade("WebSocket", "keep-alive, upgrade"));
        assert!(!upgrade("SPDY/3.1", "Upgrade"));
        assert!(!upgrade("websocket", "keep-alive"));
        assert!(!is_websocket_request(&headers(&[(
            "accept",
            "application/json"
        )])));
    }

    #[test]
    fn the_handshake_answers_a_subprotocol_only_when_one_without_a_credential_is_offered() {
        let base = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let with = |protocols: &str| {
            let mut offered = headers(&base);
            if !protocols.is_empty() {
                let value = HeaderValue::from_str(protocols).unwrap();
                offered.append("sec-websocket-protocol", value);
            }
            handshake(&offered).unwrap()
        };
        assert_eq!(
            with(""),
            Handshake {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
                protocol: None
            }
        );
        assert_eq!(
            with("base64.binary.k8s.io").protocol.as_deref(),
            Some("base64.binary.k8s.io")
        );
        // Headlamp's: a token first, then what it reads.
        assert_eq!(
            with("base64url.bearer.authorization.k8s.io.c2VjcmV0, base64.binary.k8s.io")
                .protocol
                .as_deref(),
            Some("base64.binary.k8s.io")
        );
        assert_eq!(
            with("base64url.bearer.authorization.k8s.io.c2VjcmV0").protocol,
            None
        );
    }

    #[test]
    fn a_handshake_without_version_13_or_a_key_is_refused_saying_so() {
        let old = handshake(&headers(&[
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "k"),
        ]))
        .unwrap_err();
        assert_eq!(old.code, StatusCode::BAD_REQUEST);
        assert!(
            old.message.contains("Sec-WebSocket-Version 13"),
            "{}",
            old.message
        );
        let keyless = handshake(&headers(&[("sec-websocket-version", "13")])).unwrap_err();
        assert!(
            keyless.message.contains("Sec-WebSocket-Key"),
            "{}",
            keyless.message
        );
    }

    #[test]
    fn an_event_is_one_text_frame_holding_its_line() {
        let line = b"{\"type\":\"ADDED\",\"object\":{}}\n";
        let frame = event_frame(line);
        assert_eq!(frame[0], 0x81, "FIN and the text opcode");
        assert_eq!(usize::from(frame[1]), line.len(), "unmasked, its length");
        assert_eq!(&frame[2..], line, "no channel byte before the line");
        let long = vec![b'x'; 70_000];
        let frame = event_frame(&long);
        assert_eq!(&frame[..2], &[0x81, 127]);
        assert_eq!(&frame[10..], &long[..]);
    }

    #[tokio::test]
    async fn events_go_out_as_text_frames_pings_are_answered_and_a_close_ends_the_watch() {
        let (watch, lines) = mpsc::channel::<bytes::Bytes>(8);
        let (server, client) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        let relaying = tokio::spawn(relay(lines, server_read, server_write));
        let (mut from_server, mut to_server) = tokio::io::split(client);

        let added = bytes::Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let modified = bytes::Bytes::from_static(b"{\"type\":\"MODIFIED\",\"object\":{\"a\":2}}\n");
        watch.send(added.clone()).await.unwrap();
        watch.send(modified.clone()).await.unwrap();
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_TEXT, added.to_vec())
        );
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_TEXT, modified.to_vec())
        );

        // Data from the client is ignored; a ping is answered.
        to_server
            .write_all(&client_frame(OPCODE_TEXT, b"hello"))
            .await
            .unwrap();
        to_server
            .write_all(&client_frame(OPCODE_PING, b"are you there"))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_PONG, b"are you there".to_vec())
        );

        // The client closes: the watch is freed, the server closes too.
        to_server
            .write_all(&client_frame(OPCODE_CLOSE, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        tokio::time::timeout(PROMPTLY, watch.closed())
            .await
            .expect("the client's close ends the watch");
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        let mut rest = Vec::new();
        from_server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the close: {rest:?}");
        tokio::time::timeout(PROMPTLY, relaying)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_watchs_end_closes_the_socket_after_its_last_event() {
        let (watch, lines) = mpsc::channel::<bytes::Bytes>(8);
        let (server, client) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        let relaying = tokio::spawn(relay(lines, server_read, server_write));
        let (mut from_server, _to_server) = tokio::io::split(client);

        // An expired resourceVersion: one ERROR event, then the end.
        let expired = bytes::Bytes::from_static(
            b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410}}\n",
        );
        watch.send(expired.clone()).await.unwrap();
        drop(watch);
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_TEXT, expired.to_vec())
        );
        assert_eq!(
            server_frame(&mut from_server).await,
            (OPCODE_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        tokio::time::timeout(PROMPTLY, relaying)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_goes_away_without_a_close_frees_the_watch() {
        let (watch, lines) = mpsc::channel::<bytes::Bytes>(8);
        let (server, client) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        let relaying = tokio::spawn(relay(lines, server_read, server_write));
        drop(client);
        tokio::time::timeout(PROMPTLY, watch.closed())
            .await
            .expect("the connection's end ends the watch");
        tokio::time::timeout(PROMPTLY, relaying)
            .await
            .unwrap()
            .unwrap();
    }
}
