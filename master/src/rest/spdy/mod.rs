//! SPDY/3.1 (draft-mbelshe-httpbis-spdy-00), the multiplexing protocol that
//! kubectl 1.29 and older speak for `exec` and `port-forward` after an
//! HTTP/1.1 upgrade (`Upgrade: SPDY/3.1`), and that kubectl 1.31 and later
//! still speak for `port-forward`, tunnelled in WebSocket binary messages.
//! No maintained Rust crate implements it (the protocol was retired in
//! favour of HTTP/2), so this module does, as much as Kubernetes' streams
//! use, and in the same way as the Go implementation kubectl uses
//! (moby/spdystream):
//!
//! - [`frame`]: the frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS,
//!   PING, GOAWAY, HEADERS, WINDOW_UPDATE, DATA), read and written;
//! - [`compression`]: header blocks in zlib with the protocol's
//!   [`dictionary`], one stateful stream per direction;
//! - [`connection`]: the server end of a connection: the client opens the
//!   streams, each is answered with a SYN_REPLY and handed up with its
//!   headers and a channel of its data; pings are answered. Flow control
//!   (WINDOW_UPDATE) is ignored on both sides, as spdystream does: its
//!   windows are never enforced by either end.

pub mod compression;
pub mod connection;
pub mod dictionary;
pub mod frame;

/// What can go wrong reading or writing SPDY.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY version {0} is not served (only SPDY/3.1)")]
    UnsupportedVersion(u16),
    #[error("a SPDY {frame} frame of {length} bytes is malformed")]
    BadLength { frame: &'static str, length: usize },
    #[error("a SPDY header block is malformed: {0}")]
    BadHeaderBlock(String),
    #[error("a SPDY header block decompresses to more than {0} bytes")]
    HeaderBlockTooLarge(usize),
    #[error("SPDY header compression: {0}")]
    Compression(String),
    #[error("a SPDY frame for stream 0, which no stream has")]
    ZeroStreamId,
    #[error("a SPDY data frame of {0} bytes is over the 16 MiB a frame can carry")]
    DataTooLarge(usize),
}
