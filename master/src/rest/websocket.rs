//! The server side of RFC 6455 WebSocket, as much as Kubernetes' stream
//! protocols need: the handshake's accept key, and frames read (client
//! frames are masked; fragmented messages are joined; no extensions are
//! negotiated, so the reserved bits must be clear) and written (unmasked,
//! one frame per message). Text and binary messages are both handed up as
//! bytes: the `channel.k8s.io` protocols put a channel byte first either
//! way. Ping is answered by the caller with the pong [`Message::Ping`]
//! asks for.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let input = format!("{}{ACCEPT_GUID}", client_key.trim());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
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
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// One unmasked frame (a whole message) as the server sends it.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
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
    out.extend_from_slice(payload);
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
    }
}
