//! The server side of RFC 6455 WebSocket, as much as Kubernetes' stream
//! protocols need: the opening handshake (the client's version and key
//! checked, [`ClientHandshake`]; the `101 Switching Protocols` answer with
//! its accept key and the subprotocol each caller negotiates,
//! [`switching_protocols`]), and frames read (client
//! frames are masked; fragmented messages are joined; no extensions are
//! negotiated, so the reserved bits must be clear) and written (unmasked,
//! one frame per message). Text and binary messages are both handed up as
//! bytes: the `channel.k8s.io` protocols put a channel byte first either
//! way. Ping is answered by the caller with the pong [`Message::Ping`]
//! asks for.
//!
//! A protocol that is itself a byte stream split across messages anywhere
//! (SPDY in kubectl's port-forward tunnel) is read with [`PayloadReader`],
//! which unmasks each frame's payload straight into the reader's buffer
//! instead of gathering messages, and written with [`MessageWriter`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine;
use http::{header, HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest message accepted from a client (stdin chunks and resizes
/// are far smaller).
pub const MAX_MESSAGE: usize = 16 << 20;

pub const OPCODE_CONTINUATION: u8 = 0x0;
pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// A malformed or oversized frame, or the connection failing.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    #[error("WebSocket connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("a WebSocket client frame was not masked (RFC 6455 section 5.1)")]
    Unmasked,
    #[error("a WebSocket message of {0} bytes is over the {MAX_MESSAGE} allowed")]
    TooLarge(u64),
    #[error("WebSocket opcode {0:#x} is not defined")]
    UnknownOpcode(u8),
    #[error("a WebSocket control frame was fragmented or over 125 bytes")]
    BadControlFrame,
    #[error("a WebSocket continuation frame came with no message to continue, or a new message began inside one")]
    BadContinuation,
    #[error("WebSocket reserved bits set, but no extension was negotiated")]
    ReservedBits,
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text or binary message's payload.
    Data(Vec<u8>),
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client closes (with its status code, if it gave one).
    Close(Option<u16>),
}

/// Why a client's opening handshake cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "a WebSocket upgrade needs Sec-WebSocket-Version 13 (RFC 6455); the request has [{}]",
        .0.join(", ")
    )]
    Version(Vec<String>),
    #[error("the WebSocket upgrade has no Sec-WebSocket-Key")]
    NoKey,
}

/// Header values of `name`, split at commas, trimmed: the handshake's
/// lists (and the SPDY upgrade's).
pub fn header_words(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// A client's opening handshake (RFC 6455 section 4.2.1), checked:
/// version 13 and a key. Which of the offered subprotocols to answer with
/// is the caller's protocol's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// `Sec-WebSocket-Protocol`: the subprotocols offered, in the client's
    /// order.
    pub offered: Vec<String>,
}

impl ClientHandshake {
    /// Reads the handshake in `headers`, or says what it lacks.
    pub fn read(headers: &HeaderMap) -> Result<ClientHandshake, HandshakeError> {
        let version = header_words(headers, "sec-websocket-version");
        if !version.iter().any(|v| v == "13") {
            return Err(HandshakeError::Version(version));
        }
        let key = header_words(headers, "sec-websocket-key")
            .into_iter()
            .next()
            .ok_or(HandshakeError::NoKey)?;
        let offered = header_words(headers, "sec-websocket-protocol");
        Ok(ClientHandshake { key, offered })
    }
}

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let input = format!("{}{ACCEPT_GUID}", client_key.trim());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The `101 Switching Protocols` answer to a handshake with the client's
/// `key`, naming the subprotocol chosen (`protocol`), if any; the caller
/// gives it its (empty) body.
pub fn switching_protocols(key: &str, protocol: Option<&str>) -> http::response::Builder {
    let response = http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", accept_key(key));
    match protocol {
        Some(protocol) => response.header("Sec-WebSocket-Protocol", protocol),
        None => response,
    }
}

/// Reads client messages from a connection.
pub struct MessageReader<R> {
    inner: R,
    /// The opcode and payload so far of a fragmented message.
    partial: Option<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R) -> MessageReader<R> {
        MessageReader {
            inner,
            partial: None,
        }
    }

    /// The next whole message; `None` when the connection ends.
    pub async fn next(&mut self) -> Result<Option<Message>, WebSocketError> {
        loop {
            let mut head = [0u8; 2];
            match self.inner.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let fin = head[0] & 0x80 != 0;
            if head[0] & 0x70 != 0 {
                return Err(WebSocketError::ReservedBits);
            }
            let opcode = head[0] & 0x0F;
            if head[1] & 0x80 == 0 {
                return Err(WebSocketError::Unmasked);
            }
            let length = match head[1] & 0x7F {
                126 => u64::from(self.inner.read_u16().await?),
                127 => self.inner.read_u64().await?,
                n => u64::from(n),
            };
            let control = opcode & 0x08 != 0;
            if control && (!fin || length > 125) {
                return Err(WebSocketError::BadControlFrame);
            }
            let so_far = self.partial.as_ref().map_or(0, Vec::len) as u64;
            if length.saturating_add(so_far) > MAX_MESSAGE as u64 {
                return Err(WebSocketError::TooLarge(length.saturating_add(so_far)));
            }
            let mut mask = [0u8; 4];
            self.inner.read_exact(&mut mask).await?;
            // At most MAX_MESSAGE, checked above.
            let mut payload = vec![0u8; length as usize];
            self.inner.read_exact(&mut payload).await?;
            unmask(&mut payload, mask);
            match opcode {
                OPCODE_PING => return Ok(Some(Message::Ping(payload))),
                OPCODE_PONG => return Ok(Some(Message::Pong)),
                OPCODE_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                OPCODE_TEXT | OPCODE_BINARY => {
                    if self.partial.is_some() {
                        return Err(WebSocketError::BadContinuation);
                    }
                    if fin {
                        return Ok(Some(Message::Data(payload)));
                    }
                    self.partial = Some(payload);
                }
                OPCODE_CONTINUATION => {
                    let Some(mut joined) = self.partial.take() else {
                        return Err(WebSocketError::BadContinuation);
                    };
                    joined.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(Message::Data(joined)));
                    }
                    self.partial = Some(joined);
                }
                other => return Err(WebSocketError::UnknownOpcode(other)),
            }
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    unmask_at(payload, mask, 0);
}

/// Unmasks `payload`, whose first byte is `offset` bytes into its frame's
/// payload (where the mask's cycle stands). Eight bytes at a time: the
/// release build is optimized for size, which leaves a byte loop a byte
/// loop, and every byte a tunnel carries passes here.
fn unmask_at(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // Whole words keep the cycle where it was: the rest starts at key[0].
    for (byte, k) in words.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// One unmasked frame (a whole message) as the server sends it.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_parts(opcode, &[payload])
}

/// One unmasked frame whose payload is `parts` one after another (a
/// channel byte and its data, without joining them first).
pub fn frame_parts(opcode: u8, parts: &[&[u8]]) -> Vec<u8> {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(length + 10);
    out.push(0x80 | opcode);
    match length {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// A close frame with `code` (1000: normal closure).
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(OPCODE_CLOSE, &code.to_be_bytes())
}

/// Writes `frame` to `w` and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// A frame header's largest size: two bytes, a 64-bit length, the mask.
const MAX_HEAD: usize = 14;

/// How long the header beginning with `head` is (two bytes until those
/// are known; a client's header always has a mask).
fn head_length(head: &[u8]) -> usize {
    match head.get(1) {
        None => 2,
        Some(second) => {
            let extended = match second & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + extended + 4
        }
    }
}

/// A frame's first two bytes as a client must send them: no reserved bits
/// (no extension is negotiated), masked.
fn check_first_bytes(first: u8, second: u8) -> Result<(), WebSocketError> {
    if first & 0x70 != 0 {
        return Err(WebSocketError::ReservedBits);
    }
    if second & 0x80 == 0 {
        return Err(WebSocketError::Unmasked);
    }
    Ok(())
}

/// Where a [`PayloadReader`] is in the client's frames.
enum PayloadState {
    /// Reading a frame's header.
    Head,
    /// Reading a data frame's payload: the bytes still to come, its mask,
    /// and how far into the payload the next byte is.
    Data {
        left: u64,
        mask: [u8; 4],
        offset: usize,
    },
    /// Reading a control frame's payload (at most 125 bytes).
    Control {
        opcode: u8,
        mask: [u8; 4],
        payload: [u8; 125],
        length: usize,
        read: usize,
    },
    /// A pong to queue.
    Pong(Vec<u8>),
    /// The stream has ended.
    Ended,
}

/// The payloads of a client's data messages as one byte stream, for a
/// protocol carried in them that splits its bytes anywhere (SPDY in
/// kubectl's port-forward tunnel): message boundaries are dropped, and
/// each data frame's payload is unmasked straight into the caller's
/// buffer, so nothing is gathered, joined or copied on the way, and no
/// task or pipe stands between the client and the protocol's reader. A
/// ping is answered with a pong queued on the connection's frame queue
/// (reading waits while it is full); pongs are ignored. A close frame or
/// the connection's end is the stream's end; so is a malformed frame,
/// which is logged. Messages have no size limit: nothing is buffered.
pub struct PayloadReader<R> {
    inner: R,
    pongs: PollSender<Vec<u8>>,
    /// The current frame's header, as far as it has come.
    head: [u8; MAX_HEAD],
    head_len: usize,
    /// Inside a fragmented data message: continuation frames follow.
    continuing: bool,
    state: PayloadState,
}

impl<R> PayloadReader<R> {
    /// Reads client frames from `inner`; pongs go on `frames`, the queue
    /// of the connection's writer.
    pub fn new(inner: R, frames: mpsc::Sender<Vec<u8>>) -> PayloadReader<R> {
        PayloadReader {
            inner,
            pongs: PollSender::new(frames),
            head: [0; MAX_HEAD],
            head_len: 0,
            continuing: false,
            state: PayloadState::Head,
        }
    }
}

impl<R: AsyncRead + Unpin> PayloadReader<R> {
    /// One step through the frames: `Ready(Ok(true))` once `buf` got bytes
    /// or the stream ended, `Ready(Ok(false))` when it moved on without
    /// either.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<bool, WebSocketError>> {
        let PayloadReader {
            inner,
            pongs,
            head,
            head_len,
            continuing,
            state,
        } = self;
        match state {
            PayloadState::Ended => Poll::Ready(Ok(true)),
            PayloadState::Head => {
                if *head_len >= 2 {
                    check_first_bytes(head[0], head[1])?;
                }
                let need = head_length(&head[..*head_len]);
                if *head_len < need {
                    let n = {
                        let mut into = ReadBuf::new(&mut head[*head_len..need]);
                        ready!(Pin::new(&mut *inner).poll_read(cx, &mut into))?;
                        into.filled().len()
                    };
                    if n == 0 {
                        if *head_len == 0 {
                            // The connection ended between frames.
                            *state = PayloadState::Ended;
                            return Poll::Ready(Ok(true));
                        }
                        return Poll::Ready(Err(
                            io::Error::from(io::ErrorKind::UnexpectedEof).into()
                        ));
                    }
                    *head_len += n;
                    return Poll::Ready(Ok(false));
                }
                *head_len = 0;
                *state = next_state(head, need, continuing)?;
                Poll::Ready(Ok(false))
            }
            PayloadState::Data { left, mask, offset } => {
                if *left == 0 {
                    *state = PayloadState::Head;
                    return Poll::Ready(Ok(false));
                }
                let want = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                let into = buf.initialize_unfilled_to(want);
                let n = {
                    let mut part = ReadBuf::new(&mut *into);
                    ready!(Pin::new(&mut *inner).poll_read(cx, &mut part))?;
                    part.filled().len()
                };
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()));
                }
                unmask_at(&mut into[..n], *mask, *offset);
                buf.advance(n);
                *left -= n as u64;
                *offset = (*offset + n) % 4;
                Poll::Ready(Ok(true))
            }
            PayloadState::Control {
                opcode,
                mask,
                payload,
                length,
                read,
            } => {
                if *read < *length {
                    let n = {
                        let mut part = ReadBuf::new(&mut payload[*read..*length]);
                        ready!(Pin::new(&mut *inner).poll_read(cx, &mut part))?;
                        part.filled().len()
                    };
                    if n == 0 {
                        return Poll::Ready(Err(
                            io::Error::from(io::ErrorKind::UnexpectedEof).into()
                        ));
                    }
                    *read += n;
                    return Poll::Ready(Ok(false));
                }
                let body = &mut payload[..*length];
                unmask(body, *mask);
                let next = match *opcode {
                    OPCODE_PING => PayloadState::Pong(frame(OPCODE_PONG, body)),
                    OPCODE_CLOSE => PayloadState::Ended,
                    _ => PayloadState::Head,
                };
                let ended = matches!(next, PayloadState::Ended);
                *state = next;
                Poll::Ready(Ok(ended))
            }
            PayloadState::Pong(_) => {
                match ready!(pongs.poll_reserve(cx)) {
                    Ok(()) => {
                        if let PayloadState::Pong(pong) =
                            std::mem::replace(state, PayloadState::Head)
                        {
                            // A writer gone since drops it: no one to answer.
                            let _ = pongs.send_item(pong);
                        }
                    }
                    // The writer is gone: no one to answer.
                    Err(_) => *state = PayloadState::Head,
                }
                Poll::Ready(Ok(false))
            }
        }
    }
}

/// What follows a whole frame header (`head[..length]`, its first bytes
/// checked): its payload as data or as a control frame's, or why the
/// frame is refused. `continuing` says whether a fragmented data message
/// is open, and is kept up to date.
fn next_state(
    head: &[u8; MAX_HEAD],
    length: usize,
    continuing: &mut bool,
) -> Result<PayloadState, WebSocketError> {
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0F;
    let payload_length = match head[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => u64::from_be_bytes([
            head[2], head[3], head[4], head[5], head[6], head[7], head[8], head[9],
        ]),
        n => u64::from(n),
    };
    // The mask is the header's last four bytes (length is 6 to 14).
    let at = length.clamp(6, MAX_HEAD) - 4;
    let mask = [head[at], head[at + 1], head[at + 2], head[at + 3]];
    let control = opcode & 0x08 != 0;
    if control && (!fin || payload_length > 125) {
        return Err(WebSocketError::BadControlFrame);
    }
    match opcode {
        OPCODE_PING | OPCODE_PONG | OPCODE_CLOSE => Ok(PayloadState::Control {
            opcode,
            mask,
            payload: [0; 125],
            // At most 125, checked above.
            length: payload_length as usize,
            read: 0,
        }),
        OPCODE_TEXT | OPCODE_BINARY | OPCODE_CONTINUATION => {
            if (opcode == OPCODE_CONTINUATION) != *continuing {
                return Err(WebSocketError::BadContinuation);
            }
            *continuing = !fin;
            Ok(PayloadState::Data {
                left: payload_length,
                mask,
                offset: 0,
            })
        }
        other => Err(WebSocketError::UnknownOpcode(other)),
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for PayloadReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.step(cx, buf) {
                Poll::Ready(Ok(true)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(false)) => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket client stream");
                    this.state = PayloadState::Ended;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Writes a byte stream to the client as binary messages: each write of up
/// to `chunk` bytes becomes one message, queued for the connection's
/// writer task (which also sends the pongs, and closes the connection once
/// every sender to its queue is gone). Shutting it down is its last send.
pub struct MessageWriter {
    frames: PollSender<Vec<u8>>,
    chunk: usize,
}

impl MessageWriter {
    pub fn new(frames: mpsc::Sender<Vec<u8>>, chunk: usize) -> MessageWriter {
        MessageWriter {
            frames: PollSender::new(frames),
            chunk: chunk.max(1),
        }
    }
}

fn connection_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the WebSocket connection is closed",
    )
}

impl AsyncWrite for MessageWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.frames.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(connection_closed()));
        }
        let n = buf.len().min(this.chunk);
        match this.frames.send_item(frame(OPCODE_BINARY, &buf[..n])) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(connection_closed())),
        }
    }

    /// Queued messages are the writer task's to send.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().frames.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked as a client must.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut masked = payload.to_vec();
        unmask(&mut masked, mask);
        out.extend(masked);
        out
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_handshake_needs_version_13_and_a_key_and_is_answered_101() {
        let mut headers = HeaderMap::new();
        headers.append("sec-websocket-version", "8".parse().unwrap());
        assert_eq!(
            ClientHandshake::read(&headers),
            Err(HandshakeError::Version(vec!["8".into()]))
        );
        headers.append("sec-websocket-version", "13".parse().unwrap());
        assert_eq!(ClientHandshake::read(&headers), Err(HandshakeError::NoKey));
        headers.append(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        headers.append("sec-websocket-protocol", "a, b".parse().unwrap());
        headers.append("sec-websocket-protocol", "c".parse().unwrap());
        let client = ClientHandshake::read(&headers).unwrap();
        assert_eq!(client.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(client.offered, ["a", "b", "c"]);

        let answer = |protocol| {
            let response = switching_protocols(&client.key, protocol).body(()).unwrap();
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            response.headers().clone()
        };
        let chosen = answer(Some("b"));
        assert_eq!(chosen["connection"], "Upgrade");
        assert_eq!(chosen["upgrade"], "websocket");
        assert_eq!(
            chosen["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(chosen["sec-websocket-protocol"], "b");
        assert!(!answer(None).contains_key("sec-websocket-protocol"));
    }

    #[tokio::test]
    async fn masked_fragmented_and_control_frames_are_read() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut wire = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        wire.extend(client_frame(false, OPCODE_BINARY, b"\x00ab"));
        wire.extend(client_frame(true, OPCODE_PING, b"p"));
        wire.extend(client_frame(true, OPCODE_CONTINUATION, b"cd"));
        let long = vec![7u8; 300];
        wire.extend(client_frame(true, OPCODE_BINARY, &long));
        wire.extend(client_frame(true, OPCODE_CLOSE, &1000u16.to_be_bytes()));
        let mut reader = MessageReader::new(&wire[..]);
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Data(b"Hello".to_vec()))
        );
        // A control frame may come between fragments.
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Ping(b"p".to_vec()))
        );
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Data(b"\x00abcd".to_vec()))
        );
        assert_eq!(reader.next().await.unwrap(), Some(Message::Data(long)));
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Close(Some(1000)))
        );
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn unmasked_and_malformed_frames_are_refused() {
        let unmasked = [0x82u8, 0x01, 0x00];
        let e = MessageReader::new(&unmasked[..]).next().await.unwrap_err();
        assert!(matches!(e, WebSocketError::Unmasked), "{e}");
        let stray = client_frame(true, OPCODE_CONTINUATION, b"x");
        let e = MessageReader::new(&stray[..]).next().await.unwrap_err();
        assert!(matches!(e, WebSocketError::BadContinuation), "{e}");
        let mut reserved = client_frame(true, OPCODE_BINARY, b"x");
        reserved[0] |= 0x40;
        let e = MessageReader::new(&reserved[..]).next().await.unwrap_err();
        assert!(matches!(e, WebSocketError::ReservedBits), "{e}");
        let huge = [0x82u8, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0];
        let e = MessageReader::new(&huge[..]).next().await.unwrap_err();
        assert!(matches!(e, WebSocketError::TooLarge(_)), "{e}");
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        assert_eq!(frame(OPCODE_BINARY, b"\x01hi"), b"\x82\x03\x01hi");
        let medium = frame(OPCODE_BINARY, &[0u8; 200]);
        assert_eq!(&medium[..4], &[0x82, 126, 0, 200]);
        assert_eq!(medium.len(), 204);
        let large = frame(OPCODE_BINARY, &vec![0u8; 70_000]);
        assert_eq!(&large[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(large[2..10].try_into().unwrap()), 70_000);
        assert_eq!(close_frame(1000), vec![0x88, 0x02, 0x03, 0xE8]);
        assert_eq!(
            frame_parts(OPCODE_BINARY, &[b"\x01", b"hi"]),
            frame(OPCODE_BINARY, b"\x01hi")
        );
    }

    #[test]
    fn unmasking_by_words_matches_the_byte_rule_at_any_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let original: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..4 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 999] {
                let mut fast = original[..len].to_vec();
                unmask_at(&mut fast, mask, offset);
                let slow: Vec<u8> = original[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset}, {len} bytes");
            }
        }
    }

    #[tokio::test]
    async fn payloads_are_one_stream_across_frames_pings_and_small_reads() {
        let long: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut wire = client_frame(true, OPCODE_BINARY, b"ab");
        wire.extend(client_frame(false, OPCODE_BINARY, &long[..300]));
        // A control frame may come between fragments.
        wire.extend(client_frame(true, OPCODE_PING, b"p"));
        wire.extend(client_frame(false, OPCODE_CONTINUATION, &long[300..301]));
        wire.extend(client_frame(true, OPCODE_CONTINUATION, &long[301..]));
        wire.extend(client_frame(true, OPCODE_BINARY, b""));
        wire.extend(client_frame(true, OPCODE_PONG, b""));
        wire.extend(client_frame(true, OPCODE_TEXT, b"cd"));
        wire.extend(client_frame(true, OPCODE_CLOSE, &1000u16.to_be_bytes()));
        wire.extend(client_frame(true, OPCODE_BINARY, b"after the close"));
        let (frames, mut queued) = mpsc::channel(4);
        let mut reader = PayloadReader::new(&wire[..], frames);
        // Reads of 7 bytes cut through frames and the mask's cycle.
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&long);
        expected.extend_from_slice(b"cd");
        assert_eq!(got, expected);
        assert_eq!(queued.try_recv().unwrap(), frame(OPCODE_PONG, b"p"));
        assert!(queued.try_recv().is_err(), "one ping, one pong");
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_payload_stream_after_what_came_before() {
        let mut wire = client_frame(true, OPCODE_BINARY, b"ok");
        // Not masked.
        wire.extend([0x82u8, 0x01, 0x00]);
        wire.extend(client_frame(true, OPCODE_BINARY, b"never"));
        let (frames, _queued) = mpsc::channel(1);
        let mut got = Vec::new();
        PayloadReader::new(&wire[..], frames)
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(got, b"ok");
        let stray = client_frame(true, OPCODE_CONTINUATION, b"x");
        let (frames, _queued) = mpsc::channel(1);
        let mut got = Vec::new();
        PayloadReader::new(&stray[..], frames)
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert!(got.is_empty());
        // Cut inside a frame: the stream ends there too.
        let cut = client_frame(true, OPCODE_BINARY, b"whole");
        let (frames, _queued) = mpsc::channel(1);
        let mut got = Vec::new();
        PayloadReader::new(&cut[..cut.len() - 2], frames)
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(got, b"who");
    }
}
