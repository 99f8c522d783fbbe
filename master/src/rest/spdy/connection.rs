//! The server end of a SPDY/3.1 connection, as Kubernetes' streams use it:
//! only the client opens streams (odd ids, increasing). Each stream it
//! opens is checked by the caller's [`StreamCheck`], answered with a
//! SYN_REPLY (or a RST_STREAM saying it is refused) and handed up as an
//! [`IncomingStream`]: its headers and a channel of the bytes the client
//! sends on it, which ends at the client's FIN or RST_STREAM or when the
//! connection ends. Pings from the client are echoed, as spdystream
//! does. A client's GOAWAY, end of file or malformed frame ends the
//! connection's reading side; the streams channel then ends.
//!
//! Two tasks own the connection: a reader (the receiving direction's
//! header decompressor is in its [`FrameReader`]) and a writer (the
//! sending direction's compressor is in its [`FrameEncoder`]), which
//! takes frames from every [`FrameSender`] in the order sent. Reading
//! waits while a stream's consumer is behind, as spdystream does; flow
//! control windows are not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{
    Frame, FrameEncoder, FrameReader, HeaderBlock, FLAG_FIN, GOAWAY_OK, PROTOCOL_ERROR,
    REFUSED_STREAM,
};

/// Frames queued for the writer before senders wait.
const QUEUED_FRAMES: usize = 64;
/// Chunks of a stream's data queued for its consumer before reading waits.
const QUEUED_CHUNKS: usize = 16;
/// New streams queued for the session before reading waits.
const QUEUED_STREAMS: usize = 16;
/// Streams a client may have open at once; more are refused.
pub const MAX_OPEN_STREAMS: usize = 1024;
/// The largest DATA frame written; longer writes are split.
const MAX_DATA_FRAME: usize = 64 << 10;
/// Bytes of queued frames the writer gathers into one write.
const WRITE_BATCH: usize = 128 << 10;
/// When this end is done: how long the client gets to close the
/// connection, and the writer to send what is queued.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A stream the client opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: HeaderBlock,
    /// What the client sends on the stream, until its FIN or RST_STREAM or
    /// the connection's end.
    pub data: mpsc::Receiver<Vec<u8>>,
}

/// Whether a stream the client opens is taken; `Err` says why not (the
/// stream is then refused with a RST_STREAM).
pub type StreamCheck = fn(&HeaderBlock) -> Result<(), String>;

/// Queues frames for the connection's writer; cheap to clone. Each method
/// answers `false` once the connection can no longer be written.
#[derive(Clone)]
pub struct FrameSender {
    frames: mpsc::Sender<Frame>,
}

impl FrameSender {
    async fn send(&self, frame: Frame) -> bool {
        self.frames.send(frame).await.is_ok()
    }

    /// `data` on stream `stream_id`, in frames of at most 64 KiB.
    pub async fn data(&self, stream_id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA_FRAME) {
            let frame = Frame::Data {
                stream_id,
                flags: 0,
                data: chunk.to_vec(),
            };
            if !self.send(frame).await {
                return false;
            }
        }
        true
    }

    /// [`FrameSender::data`] for data the caller owns: up to 64 KiB it
    /// becomes the frame as it is, without a copy.
    pub async fn data_owned(&self, stream_id: u32, data: Vec<u8>) -> bool {
        // Nothing to send is no frame, as with `data`.
        if data.is_empty() {
            return true;
        }
        if data.len() > MAX_DATA_FRAME {
            return self.data(stream_id, &data).await;
        }
        self.send(Frame::Data {
            stream_id,
            flags: 0,
            data,
        })
        .await
    }

    /// Ends this end's half of stream `stream_id` (an empty DATA frame with
    /// FIN), which the client reads as end of file.
    pub async fn finish(&self, stream_id: u32) -> bool {
        self.send(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Vec::new(),
        })
        .await
    }

    /// Ends stream `stream_id` both ways.
    pub async fn reset(&self, stream_id: u32, status: u32) -> bool {
        self.send(Frame::RstStream { stream_id, status }).await
    }
}

/// The streams the client opens, in order; ends with the connection's
/// reading side.
pub type Streams = mpsc::Receiver<IncomingStream>;

/// A server connection's tasks and its sending side.
pub struct Connection {
    sender: FrameSender,
    last_stream: Arc<AtomicU32>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Serves a SPDY connection on `read` and `write` (the two halves of
    /// an upgraded connection, or of a tunnel); `check` decides which
    /// streams are taken.
    pub fn start<R, W>(read: R, write: W, check: StreamCheck) -> (Connection, Streams)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, frames_rx) = mpsc::channel(QUEUED_FRAMES);
        let sender = FrameSender { frames };
        let writer = tokio::spawn(write_frames(write, frames_rx));
        let (streams_tx, streams) = mpsc::channel(QUEUED_STREAMS);
        let last_stream = Arc::new(AtomicU32::new(0));
        let reading = ReadLoop {
            sender: sender.clone(),
            new_streams: streams_tx,
            check,
            last_stream: last_stream.clone(),
        };
        let reader = tokio::spawn(reading.run(FrameReader::new(read)));
        let connection = Connection {
            sender,
            last_stream,
            reader,
            writer,
        };
        (connection, streams)
    }

    /// Where to queue frames.
    pub fn sender(&self) -> &FrameSender {
        &self.sender
    }

    /// Ends the connection from this end, once every stream is finished:
    /// a GOAWAY, then up to [`CLOSE_GRACE`] for the client to close
    /// (closing first could reset the connection under data the client has
    /// not read yet), then the writer sends what is queued and shuts the
    /// connection. Every other [`FrameSender`] clone should be gone by now;
    /// the writer is stopped after the grace either way.
    pub async fn finish(self) {
        let Connection {
            sender,
            last_stream,
            mut reader,
            mut writer,
        } = self;
        let _ = sender
            .send(Frame::GoAway {
                last_good_stream_id: last_stream.load(Ordering::Relaxed),
                status: GOAWAY_OK,
            })
            .await;
        drop(sender);
        if tokio::time::timeout(CLOSE_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// The reading side's state.
struct ReadLoop {
    sender: FrameSender,
    new_streams: mpsc::Sender<IncomingStream>,
    check: StreamCheck,
    last_stream: Arc<AtomicU32>,
}

impl ReadLoop {
    async fn run<R: AsyncRead + Unpin>(self, mut reader: FrameReader<R>) {
        // Where each open stream's data goes.
        let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut last_id = 0u32;
        loop {
            let frame = match reader.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY client connection");
                    let _ = self
                        .sender
                        .send(Frame::GoAway {
                            last_good_stream_id: last_id,
                            status: PROTOCOL_ERROR,
                        })
                        .await;
                    return;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    if stream_id % 2 == 0 || stream_id <= last_id {
                        // Not a client's id, or not a new one.
                        self.sender.reset(stream_id, PROTOCOL_ERROR).await;
                        continue;
                    }
                    last_id = stream_id;
                    self.last_stream.store(stream_id, Ordering::Relaxed);
                    open.retain(|_, tx| !tx.is_closed());
                    if open.len() >= MAX_OPEN_STREAMS {
                        self.sender.reset(stream_id, REFUSED_STREAM).await;
                        continue;
                    }
                    if let Err(why) = (self.check)(&headers) {
                        tracing::debug!(stream = stream_id, %why, "SPDY stream refused");
                        self.sender.reset(stream_id, REFUSED_STREAM).await;
                        continue;
                    }
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: HeaderBlock::default(),
                    };
                    if !self.sender.send(reply).await {
                        return;
                    }
                    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
                    // A stream opened with FIN carries nothing from the client.
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream_id, tx);
                    }
                    let stream = IncomingStream {
                        id: stream_id,
                        headers,
                        data: rx,
                    };
                    if self.new_streams.send(stream).await.is_err() {
                        // The session takes no more streams: it is ending.
                        open.remove(&stream_id);
                        self.sender.reset(stream_id, REFUSED_STREAM).await;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = open.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            // Its consumer is gone; the rest is dropped.
                            open.remove(&stream_id);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::Headers {
                    stream_id, flags, ..
                } => {
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    // Odd ids are the client's own pings; even ones would
                    // answer this end's, which sends none.
                    if id % 2 == 1 && !self.sender.send(Frame::Ping { id }).await {
                        return;
                    }
                }
                Frame::GoAway { .. } => return,
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
}

/// Encodes and writes queued frames until every sender is gone or the
/// connection fails; then shuts the connection's writing side. Frames
/// queued together are encoded into one reused buffer, up to
/// [`WRITE_BATCH`] bytes, and written with one call: one system call and
/// full TLS records for a burst of frames rather than one each.
async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut frames: mpsc::Receiver<Frame>) {
    let mut encoder = match FrameEncoder::new() {
        Ok(encoder) => encoder,
        Err(e) => {
            tracing::warn!(error = %e, "SPDY header compression could not start");
            return;
        }
    };
    let mut out = Vec::new();
    while let Some(frame) = frames.recv().await {
        out.clear();
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Err(e) = encoder.encode_into(&frame, &mut out) {
                tracing::warn!(error = %e, "encoding a SPDY frame");
                // The frames before it still go out.
                let _ = w.write_all(&out).await;
                let _ = w.flush().await;
                return;
            }
            if out.len() < WRITE_BATCH {
                next = frames.try_recv().ok();
            }
        }
        if w.write_all(&out).await.is_err() {
            return;
        }
        // What is queued goes out together.
        if frames.is_empty() && w.flush().await.is_err() {
            return;
        }
        // A batch of large frames leaves a large buffer: give it back.
        if out.capacity() > 2 * WRITE_BATCH {
            out = Vec::new();
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::super::frame::CANCEL;
    use super::*;

    /// The client's end of a connection: frames written with its own
    /// encoder, frames read with its own decoder, as spdystream does.
    struct Client {
        encoder: FrameEncoder,
        reader: FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let bytes = self.encoder.encode(&frame).unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut self.writer, &bytes)
                .await
                .unwrap();
        }

        async fn next(&mut self) -> Option<Frame> {
            tokio::time::timeout(Duration::from_secs(5), self.reader.next())
                .await
                .expect("a frame within 5 s")
                .unwrap()
        }

        async fn open(&mut self, id: u32, pairs: &[(&str, &str)], flags: u8) {
            let headers = HeaderBlock(
                pairs
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags,
                headers,
            })
            .await;
        }
    }

    fn only_known_types(headers: &HeaderBlock) -> Result<(), String> {
        match headers.get("streamtype") {
            Some("stdin" | "stdout") => Ok(()),
            other => Err(format!("stream type {other:?}")),
        }
    }

    fn pair() -> (Connection, Streams, Client) {
        let (server_end, client_end) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(server_end);
        let (connection, streams) = Connection::start(read, write, only_known_types);
        let (client_read, client_write) = tokio::io::split(client_end);
        let client = Client {
            encoder: FrameEncoder::new().unwrap(),
            reader: FrameReader::new(client_read),
            writer: client_write,
        };
        (connection, streams, client)
    }

    #[tokio::test]
    async fn streams_are_answered_and_handed_up_with_their_data_until_fin() {
        let (connection, mut streams, mut client) = pair();
        client.open(1, &[("streamtype", "stdin")], 0).await;
        assert_eq!(
            client.next().await,
            Some(Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: HeaderBlock::default()
            })
        );
        let mut stdin = streams.recv().await.unwrap();
        assert_eq!(stdin.id, 1);
        assert_eq!(stdin.headers.get("streamtype"), Some("stdin"));
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: b"abc".to_vec(),
            })
            .await;
        client.send(Frame::Ping { id: 1 }).await;
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
        assert_eq!(stdin.data.recv().await.unwrap(), b"abc");
        assert_eq!(stdin.data.recv().await, None, "FIN ends the stream's data");
        assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));

        // Refused: an unknown type, and an id that does not increase.
        client.open(3, &[("streamtype", "bogus")], 0).await;
        assert_eq!(
            client.next().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: REFUSED_STREAM
            })
        );
        client.open(3, &[("streamtype", "stdout")], 0).await;
        assert_eq!(
            client.next().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: PROTOCOL_ERROR
            })
        );

        // This end writes, ends its half, and says goodbye.
        client.open(5, &[("streamtype", "stdout")], FLAG_FIN).await;
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 5, .. })
        ));
        let mut stdout = streams.recv().await.unwrap();
        assert_eq!(stdout.data.recv().await, None, "opened with FIN");
        let big = vec![9u8; MAX_DATA_FRAME + 10];
        assert!(connection.sender().data(5, &big).await);
        assert!(connection.sender().finish(5).await);
        let mut got = Vec::new();
        loop {
            match client.next().await {
                Some(Frame::Data {
                    stream_id: 5,
                    flags,
                    data,
                }) => {
                    got.extend(data);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, big);
        drop(streams);
        let finishing = tokio::spawn(connection.finish());
        assert!(matches!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 5,
                status: GOAWAY_OK
            })
        ));
        // The client closes; the server's side then ends promptly.
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: GOAWAY_OK,
            })
            .await;
        tokio::time::timeout(Duration::from_secs(2), finishing)
            .await
            .expect("finish returns once the client is gone")
            .unwrap();
        assert_eq!(
            client.next().await,
            None,
            "the connection is shut after GOAWAY"
        );
    }

    #[tokio::test]
    async fn a_reset_or_a_vanished_client_ends_stream_data() {
        let (_connection, mut streams, mut client) = pair();
        client.open(1, &[("streamtype", "stdin")], 0).await;
        client.open(3, &[("streamtype", "stdin")], 0).await;
        let mut first = streams.recv().await.unwrap();
        let mut second = streams.recv().await.unwrap();
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: CANCEL,
            })
            .await;
        assert_eq!(first.data.recv().await, None);
        drop(client);
        assert_eq!(second.data.recv().await, None);
        assert!(streams.recv().await.is_none(), "the connection ended");
    }
}
