//! SPDY/3 frames (draft-mbelshe-httpbis-spdy-00, section 2.2): every frame
//! starts with 8 bytes. A control frame has the high bit set, then the
//! version (15 bits, 3), the type (16 bits), flags (8) and the payload's
//! length (24); a data frame has the stream id (31 bits), then flags and
//! length. Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a count and
//! length-prefixed name/value pairs, 32 bits each, compressed
//! ([`super::compression`]); a value holding several values separates
//! them with NUL. Control frames of unknown types are skipped, as the
//! draft asks; CREDENTIAL (SPDY/3's client certificates) is one of them.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::compression::{HeaderCompressor, HeaderDecompressor};
use super::SpdyError;

pub const VERSION: u16 = 3;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

/// The sender's last frame on the stream (control and data frames).
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the receiver may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes (section 2.6.3).
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
pub const INTERNAL_ERROR: u32 = 6;

/// GOAWAY status: a normal end of the session.
pub const GOAWAY_OK: u32 = 0;

/// The most a frame's 24-bit length can say.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest header block accepted once decompressed (kubectl's are a
/// few dozen bytes).
pub const MAX_HEADER_BLOCK: usize = 256 << 10;

/// A stream's headers: lowercase names, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock(pub Vec<(String, String)>);

impl HeaderBlock {
    /// The first value of `name` (lowercase), if it is there.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.split('\0').next())
    }

    /// The uncompressed block.
    fn encode(&self) -> Vec<u8> {
        let mut out = (self.0.len() as u32).to_be_bytes().to_vec();
        for (name, value) in &self.0 {
            let name = name.to_ascii_lowercase();
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Reads an uncompressed block, which must be all of `bytes`.
    fn decode(bytes: &[u8]) -> Result<HeaderBlock, SpdyError> {
        let mut cursor = Cursor { bytes, at: 0 };
        let count = cursor.u32()?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for _ in 0..count {
            let name = cursor.string()?.to_ascii_lowercase();
            if name.is_empty() {
                return Err(SpdyError::BadHeaderBlock(
                    "a header has an empty name".into(),
                ));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(SpdyError::BadHeaderBlock(format!(
                    "header {name:?} appears twice"
                )));
            }
            let value = cursor.string()?;
            pairs.push((name, value));
        }
        if cursor.at != bytes.len() {
            return Err(SpdyError::BadHeaderBlock(format!(
                "{} bytes follow the last header",
                bytes.len() - cursor.at
            )));
        }
        Ok(HeaderBlock(pairs))
    }
}

/// Reads a header block's fields, refusing to run past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SpdyError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(SpdyError::BadHeaderBlock(
                "a length runs past the end of the block".into(),
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, SpdyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, SpdyError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SpdyError::BadHeaderBlock("a header is not UTF-8".into()))
    }
}

/// One frame, its header block decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        flags: u8,
        headers: HeaderBlock,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: HeaderBlock,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) of each setting.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: HeaderBlock,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type not listed above, skipped.
    Unknown {
        frame_type: u16,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A control frame's 8 bytes and payload.
fn control(frame_type: u16, flags: u8, payload: &[u8]) -> Result<Vec<u8>, SpdyError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SpdyError::DataTooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Turns frames into bytes; holds the sending direction's compressor, so
/// one encoder serves one connection, frames encoded in the order sent.
pub struct FrameEncoder {
    headers: HeaderCompressor,
}

impl FrameEncoder {
    pub fn new() -> Result<FrameEncoder, SpdyError> {
        Ok(FrameEncoder {
            headers: HeaderCompressor::new()?,
        })
    }

    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::new();
        self.encode_into(frame, &mut out)?;
        Ok(out)
    }

    /// Appends `frame`'s bytes to `out` (a DATA frame's payload is copied
    /// once, into `out`; nothing is appended on failure).
    pub fn encode_into(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        if let Frame::Data {
            stream_id,
            flags,
            data,
        } = frame
        {
            if *stream_id == 0 {
                return Err(SpdyError::ZeroStreamId);
            }
            if data.len() > MAX_PAYLOAD {
                return Err(SpdyError::DataTooLarge(data.len()));
            }
            out.reserve(8 + data.len());
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&((u32::from(*flags) << 24) | data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
            return Ok(());
        }
        out.extend(self.encode_control(frame)?);
        Ok(())
    }

    /// A control frame's bytes (DATA frames are [`FrameEncoder::encode_into`]'s).
    fn encode_control(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                payload.push((priority & 0x07) << 5);
                payload.push(0);
                payload.extend(self.headers.compress(&headers.encode())?);
                control(TYPE_SYN_STREAM, *flags, &payload)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend(self.headers.compress(&headers.encode())?);
                control(TYPE_SYN_REPLY, *flags, &payload)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend(self.headers.compress(&headers.encode())?);
                control(TYPE_HEADERS, *flags, &payload)
            }
            Frame::RstStream { stream_id, status } => {
                let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                control(TYPE_RST_STREAM, 0, &payload)
            }
            Frame::Settings { entries } => {
                let mut payload = (entries.len() as u32).to_be_bytes().to_vec();
                for (flags, id, value) in entries {
                    payload.extend_from_slice(
                        &((u32::from(*flags) << 24) | (id & 0x00ff_ffff)).to_be_bytes(),
                    );
                    payload.extend_from_slice(&value.to_be_bytes());
                }
                control(TYPE_SETTINGS, 0, &payload)
            }
            Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend_from_slice(&status.to_be_bytes());
                control(TYPE_GOAWAY, 0, &payload)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                payload.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(TYPE_WINDOW_UPDATE, 0, &payload)
            }
            Frame::Data { .. } => {
                let mut out = Vec::new();
                self.encode_into(frame, &mut out)?;
                Ok(out)
            }
            Frame::Unknown { frame_type } => control(*frame_type, 0, &[]),
        }
    }
}

/// Turns bytes into frames; holds the receiving direction's decompressor,
/// so every frame of a connection must pass through one decoder in order.
#[derive(Default)]
pub struct FrameDecoder {
    headers: HeaderDecompressor,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder {
            headers: HeaderDecompressor::new(),
        }
    }

    /// The frame with these first 8 bytes and this payload (as long as the
    /// 8 bytes say).
    pub fn decode(&mut self, head: [u8; 8], payload: Vec<u8>) -> Result<Frame, SpdyError> {
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = be32(&head[..4]) & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(SpdyError::ZeroStreamId);
            }
            return Ok(Frame::Data {
                stream_id,
                flags,
                data: payload,
            });
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let frame_type = u16::from_be_bytes([head[2], head[3]]);
        let bad = |frame: &'static str| SpdyError::BadLength {
            frame,
            length: payload.len(),
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(bad("SYN_STREAM"));
                }
                let stream_id = be32(&payload[..4]) & 0x7fff_ffff;
                if stream_id == 0 {
                    return Err(SpdyError::ZeroStreamId);
                }
                Frame::SynStream {
                    stream_id,
                    associated_to: be32(&payload[4..8]) & 0x7fff_ffff,
                    priority: payload[8] >> 5,
                    flags,
                    headers: self.header_block(&payload[10..])?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                if payload.len() < 4 {
                    return Err(bad(if frame_type == TYPE_HEADERS {
                        "HEADERS"
                    } else {
                        "SYN_REPLY"
                    }));
                }
                let stream_id = be32(&payload[..4]) & 0x7fff_ffff;
                let headers = self.header_block(&payload[4..])?;
                if frame_type == TYPE_HEADERS {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                if payload.len() != 8 {
                    return Err(bad("RST_STREAM"));
                }
                Frame::RstStream {
                    stream_id: be32(&payload[..4]) & 0x7fff_ffff,
                    status: be32(&payload[4..8]),
                }
            }
            TYPE_SETTINGS => {
                if payload.len() < 4 {
                    return Err(bad("SETTINGS"));
                }
                let count = be32(&payload[..4]) as usize;
                if count.checked_mul(8).and_then(|n| n.checked_add(4)) != Some(payload.len()) {
                    return Err(bad("SETTINGS"));
                }
                let entries = payload[4..]
                    .chunks_exact(8)
                    .map(|e| (e[0], be32(&e[..4]) & 0x00ff_ffff, be32(&e[4..8])))
                    .collect();
                Frame::Settings { entries }
            }
            TYPE_PING => {
                if payload.len() != 4 {
                    return Err(bad("PING"));
                }
                Frame::Ping {
                    id: be32(&payload[..4]),
                }
            }
            TYPE_GOAWAY => {
                if payload.len() != 8 {
                    return Err(bad("GOAWAY"));
                }
                Frame::GoAway {
                    last_good_stream_id: be32(&payload[..4]) & 0x7fff_ffff,
                    status: be32(&payload[4..8]),
                }
            }
            TYPE_WINDOW_UPDATE => {
                if payload.len() != 8 {
                    return Err(bad("WINDOW_UPDATE"));
                }
                Frame::WindowUpdate {
                    stream_id: be32(&payload[..4]) & 0x7fff_ffff,
                    delta: be32(&payload[4..8]) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(frame)
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<HeaderBlock, SpdyError> {
        let block = self.headers.decompress(compressed, MAX_HEADER_BLOCK)?;
        HeaderBlock::decode(&block)
    }
}

/// Reads frames from a connection.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            decoder: FrameDecoder::new(),
        }
    }

    /// The next frame; `None` when the connection ends between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // 24 bits: at most MAX_PAYLOAD.
        let length = (be32(&head[4..8]) & 0x00ff_ffff) as usize;
        let mut payload = vec![0u8; length];
        self.inner.read_exact(&mut payload).await?;
        self.decoder.decode(head, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compressed block of `{streamtype: error}` from a real zlib (see
    /// the compression tests): the first block of a connection.
    const ERROR_STREAM_BLOCK: [u8; 30] = [
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    async fn read_all(wire: &[u8]) -> Vec<Frame> {
        let mut reader = FrameReader::new(wire);
        let mut frames = Vec::new();
        while let Some(frame) = reader.next().await.unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[tokio::test]
    async fn frames_laid_out_as_the_draft_says_are_read() {
        let mut wire = vec![
            // SYN_STREAM, version 3, flags 0, length 40: stream 1,
            // associated 0, priority 0, slot 0, then the header block.
            0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ];
        wire.extend_from_slice(&ERROR_STREAM_BLOCK);
        wire.extend_from_slice(&[
            // PING 1.
            0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
            // SETTINGS, one entry: persist (flag 1), INITIAL_WINDOW_SIZE (7), 65536.
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00,
            0x00, 0x07, 0x00, 0x01, 0x00, 0x00, // WINDOW_UPDATE stream 1, +4096.
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x10, 0x00, // DATA stream 1, FIN, "hi".
            0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x02, b'h', b'i',
            // An unknown control type (10, CREDENTIAL) with 2 bytes, skipped.
            0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb,
            // RST_STREAM stream 1, CANCEL.
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x05, // GOAWAY, last good stream 1, OK.
            0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00,
        ]);
        let frames = read_all(&wire).await;
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    stream_id: 1,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: HeaderBlock(vec![("streamtype".into(), "error".into())]),
                },
                Frame::Ping { id: 1 },
                Frame::Settings {
                    entries: vec![(1, 7, 65536)]
                },
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 4096
                },
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: b"hi".to_vec()
                },
                Frame::Unknown { frame_type: 10 },
                Frame::RstStream {
                    stream_id: 1,
                    status: CANCEL
                },
                Frame::GoAway {
                    last_good_stream_id: 1,
                    status: GOAWAY_OK
                },
            ]
        );
    }

    #[tokio::test]
    async fn malformed_frames_are_refused_in_words() {
        // PING with 3 bytes.
        let wire = [0x80u8, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1];
        let e = FrameReader::new(&wire[..]).next().await.unwrap_err();
        assert!(
            matches!(
                e,
                SpdyError::BadLength {
                    frame: "PING",
                    length: 3
                }
            ),
            "{e}"
        );
        // SPDY/2.
        let wire = [0x80u8, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        let e = FrameReader::new(&wire[..]).next().await.unwrap_err();
        assert!(matches!(e, SpdyError::UnsupportedVersion(2)), "{e}");
        // DATA on stream 0.
        let wire = [0u8, 0, 0, 0, 0, 0, 0, 1, b'x'];
        let e = FrameReader::new(&wire[..]).next().await.unwrap_err();
        assert!(matches!(e, SpdyError::ZeroStreamId), "{e}");
        // Cut short inside a frame.
        let wire = [0u8, 0, 0, 1, 0, 0, 0, 5, b'x'];
        let e = FrameReader::new(&wire[..]).next().await.unwrap_err();
        assert!(matches!(e, SpdyError::Io(_)), "{e}");
        // A header block whose length runs past its end.
        let e = HeaderBlock::decode(&[0u8, 0, 0, 1, 0, 0, 0, 9, b'a']).unwrap_err();
        assert!(matches!(e, SpdyError::BadHeaderBlock(_)), "{e}");
        let twice = HeaderBlock(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).encode();
        let e = HeaderBlock::decode(&twice).unwrap_err();
        assert!(e.to_string().contains("\"a\" appears twice"), "{e}");
    }

    #[tokio::test]
    async fn every_frame_round_trips_and_headers_share_one_compression_stream() {
        let headers = |pairs: &[(&str, &str)]| {
            HeaderBlock(
                pairs
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let frames = vec![
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: HeaderBlock::default(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: headers(&[("multi", "a\0b")]),
            },
            Frame::SynReply {
                stream_id: 5,
                flags: 0,
                headers: HeaderBlock::default(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: REFUSED_STREAM,
            },
            Frame::Settings {
                entries: vec![(0, 4, 100), (1, 7, 1 << 20)],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: GOAWAY_OK,
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1,
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: vec![7; 70_000],
            },
        ];
        let mut encoder = FrameEncoder::new().unwrap();
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend(encoder.encode(frame).unwrap());
        }
        assert_eq!(read_all(&wire).await, frames);
        let Frame::Headers { headers: h, .. } = &frames[2] else {
            unreachable!()
        };
        assert_eq!(h.get("multi"), Some("a"));
        assert_eq!(h.get("other"), None);
    }

    #[test]
    fn written_frames_have_the_drafts_layout() {
        let mut encoder = FrameEncoder::new().unwrap();
        let reply = encoder
            .encode(&Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: HeaderBlock::default(),
            })
            .unwrap();
        assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
        assert_eq!(reply[4], 0, "no flags");
        let length = u32::from_be_bytes([0, reply[5], reply[6], reply[7]]) as usize;
        assert_eq!(length, reply.len() - 8);
        assert_eq!(&reply[8..12], &[0, 0, 0, 1]);
        // The first block names the dictionary: zlib's FDICT and its id.
        assert_eq!(reply[12] & 0x0f, 8, "deflate");
        assert_ne!(reply[13] & 0x20, 0, "FDICT");
        assert_eq!(&reply[14..18], &[0xe3, 0xc6, 0xa7, 0xc2]);
        let data = encoder
            .encode(&Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: b"ok".to_vec(),
            })
            .unwrap();
        assert_eq!(data, [0, 0, 0, 5, 1, 0, 0, 2, b'o', b'k']);
        let ping = encoder.encode(&Frame::Ping { id: 1 }).unwrap();
        assert_eq!(ping, [0x80u8, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        let rst = encoder
            .encode(&Frame::RstStream {
                stream_id: 7,
                status: CANCEL,
            })
            .unwrap();
        assert_eq!(rst, [0x80u8, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 5]);
    }
}
