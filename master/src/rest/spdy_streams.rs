//! `pods/NAME/exec`, `pods/NAME/attach` and `pods/NAME/portforward` over
//! SPDY/3.1 ([`super::spdy`]), as kubectl 1.29 and older open them, and as
//! kubectl 1.31 and later still open port-forwards inside a WebSocket:
//!
//! - The upgrade: `Connection: Upgrade`, `Upgrade: SPDY/3.1`, and the
//!   stream protocols the client speaks in `X-Stream-Protocol-Version`
//!   (exec: `v4.channel.k8s.io` to `channel.k8s.io`; port-forward:
//!   `portforward.k8s.io`). As the kubelet does, the first one the client
//!   lists that is served is chosen and named in the `101` answer.
//! - exec: the client opens one stream per `streamType` header: `error`,
//!   and `stdin`, `stdout`, `stderr` as the query asks (`stderr` not with a
//!   TTY), and `resize` with a TTY (v3 and v4: a JSON `{"Width","Height"}`
//!   per terminal size). Once all are open the exec starts. Its output
//!   goes on `stdout`/`stderr`; at its end the error stream carries the
//!   exit status (v4: a `Status`, `NonZeroExitCode` with the code as a
//!   cause, as over WebSocket; v1 to v3: the failure's message, nothing on
//!   success), then every stream is ended and the connection said goodbye
//!   to. The client's end of `stdin` is the process's end of file.
//! - attach: the same streams, as the kubelet opens them for both, joined
//!   to the container's own process; its end is a success on the error
//!   stream (v4 a `Status`, older protocols nothing).
//! - port-forward: each forwarded connection is a pair of streams, `data`
//!   and `error`, with the same `port` and `requestID` headers; each pair
//!   is one connection into the pod ([`ApiService::open_port_forward`]).
//!   A failure is written on the pair's error stream; the data stream's
//!   end from either side half-closes that connection.
//! - The tunnel (kubectl 1.31+): a WebSocket upgrade with the subprotocol
//!   `SPDY/3.1+portforward.k8s.io`, whose binary messages carry the SPDY
//!   connection's bytes, split anywhere ([`websocket_tunnel`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use serde_json::Value;
use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::exec_output::Output as ExecOut;
use skiff_proto::api::port_forward_input::Input as ForwardIn;
use skiff_proto::api::{ExecInput, ExecStart, PortForwardInput, PortForwardStart, TerminalSize};
use skiff_security::Identity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::spdy::connection::{Connection, FrameSender, IncomingStream, Streams};
use super::spdy::frame::{HeaderBlock, CANCEL, REFUSED_STREAM};
use super::status::RestError;
use super::stream_session::{failure_status, write_frames, CommandSession};
use super::websocket::{header_words, MessageWriter, PayloadReader};
use crate::api::ApiService;

/// exec's stream protocols, newest first.
pub(super) const EXEC_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// port-forward's stream protocol.
pub(super) const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// The WebSocket subprotocol of port-forward's SPDY tunnel.
pub(super) const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token.
pub(super) const SPDY_31: &str = "SPDY/3.1";

/// How long a client may take to open the streams of an exec, or the
/// second stream of a port-forward pair (the kubelet's limit).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages queued into an exec session before its pumps wait.
const QUEUED_INPUT: usize = 32;
/// Messages queued for the client inside a WebSocket tunnel before the
/// SPDY side's writer waits.
const TUNNEL_QUEUE: usize = 32;
/// The largest WebSocket message a tunnel sends.
const TUNNEL_CHUNK: usize = 32 << 10;

/// Whether the request asks for a SPDY/3.1 upgrade.
pub(super) fn is_spdy_upgrade(headers: &HeaderMap) -> bool {
    header_words(headers, "upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case(SPDY_31))
}

/// The stream protocol for a SPDY upgrade: the first of the client's
/// `X-Stream-Protocol-Version` values that is `served`, as the kubelet's
/// handshake chooses it.
pub(super) fn negotiate(
    headers: &HeaderMap,
    served: &[&'static str],
) -> Result<&'static str, RestError> {
    let offered = header_words(headers, "x-stream-protocol-version");
    if offered.is_empty() {
        return Err(RestError::bad_request(
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    offered
        .iter()
        .find_map(|o| served.iter().find(|s| **s == o.as_str()).copied())
        .ok_or_else(|| {
            RestError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                    offered.join(" "),
                    served.join(" ")
                ),
            )
        })
}

/// exec's protocol generations over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ExecProtocol {
    /// `channel.k8s.io`
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: terminal resizes.
    V3,
    /// `v4.channel.k8s.io`: the exit status as a `Status`.
    V4,
}

impl ExecProtocol {
    pub(super) fn named(protocol: &str) -> ExecProtocol {
        match protocol {
            "v4.channel.k8s.io" => ExecProtocol::V4,
            "v3.channel.k8s.io" => ExecProtocol::V3,
            "v2.channel.k8s.io" => ExecProtocol::V2,
            _ => ExecProtocol::V1,
        }
    }
}

const STDIN: &str = "stdin";
const STDOUT: &str = "stdout";
const STDERR: &str = "stderr";
const ERROR: &str = "error";
const RESIZE: &str = "resize";
const DATA: &str = "data";

/// Takes the streams an exec may open; refuses others.
fn exec_stream_check(headers: &HeaderBlock) -> Result<(), String> {
    match headers.get("streamtype") {
        Some(STDIN | STDOUT | STDERR | ERROR | RESIZE) => Ok(()),
        Some(other) => Err(format!("unexpected stream type {other:?}")),
        None => Err("the \"streamType\" header is required".to_owned()),
    }
}

/// The streams of one exec, by type.
#[derive(Default)]
struct ExecStreams {
    error: Option<IncomingStream>,
    stdin: Option<IncomingStream>,
    stdout: Option<IncomingStream>,
    stderr: Option<IncomingStream>,
    resize: Option<IncomingStream>,
}

impl ExecStreams {
    /// Files `stream` by its type; a second stream of a type is refused.
    /// Whether it was taken.
    fn add(&mut self, stream: IncomingStream) -> Result<(), IncomingStream> {
        let slot = match stream.headers.get("streamtype") {
            Some(ERROR) => &mut self.error,
            Some(STDIN) => &mut self.stdin,
            Some(STDOUT) => &mut self.stdout,
            Some(STDERR) => &mut self.stderr,
            Some(RESIZE) => &mut self.resize,
            _ => return Err(stream),
        };
        if slot.is_some() {
            return Err(stream);
        }
        *slot = Some(stream);
        Ok(())
    }

    fn ids(&self) -> Vec<u32> {
        [
            &self.error,
            &self.stdin,
            &self.stdout,
            &self.stderr,
            &self.resize,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.id)
        .collect()
    }
}

/// How many streams the client opens for `start`, as the kubelet counts.
fn expected_streams(start: &ExecStart, protocol: ExecProtocol) -> usize {
    1 + usize::from(start.stdin)
        + usize::from(start.stdout)
        + usize::from(start.stderr && !start.tty)
        + usize::from(start.tty && protocol >= ExecProtocol::V3)
}

/// Waits for the exec's streams; `None` if the client went away first.
async fn exec_streams(
    streams: &mut Streams,
    sender: &FrameSender,
    expected: usize,
) -> Option<ExecStreams> {
    let mut found = ExecStreams::default();
    let mut taken = 0;
    while taken < expected {
        let stream = streams.recv().await?;
        match found.add(stream) {
            Ok(()) => taken += 1,
            Err(extra) => {
                sender.reset(extra.id, REFUSED_STREAM).await;
            }
        }
    }
    Some(found)
}

/// Terminal sizes from a resize stream: JSON objects one after another;
/// complete ones are taken from `pending`, a partial one is left.
fn take_terminal_sizes(pending: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(pending.as_slice()).into_iter::<Value>();
    let used = loop {
        match values.next() {
            Some(Ok(v)) => sizes.extend(terminal_size(&v)),
            Some(Err(e)) if e.is_eof() => break values.byte_offset(),
            // Not JSON: nothing more can be read from it.
            Some(Err(_)) | None => break pending.len(),
        }
    };
    drop(values);
    pending.drain(..used.min(pending.len()));
    sizes
}

/// A resize message's size, if it is one.
fn terminal_size(v: &Value) -> Option<TerminalSize> {
    Some(TerminalSize {
        width: u32::try_from(v.get("Width")?.as_u64()?).ok()?,
        height: u32::try_from(v.get("Height")?.as_u64()?).ok()?,
    })
}

/// Feeds a stdin stream into the exec; its end is the process's end of
/// file.
async fn pump_stdin(mut stdin: IncomingStream, input: mpsc::Sender<Result<ExecInput, Status>>) {
    while let Some(chunk) = stdin.data.recv().await {
        let message = ExecInput {
            input: Some(ExecIn::Stdin(chunk)),
        };
        if input.send(Ok(message)).await.is_err() {
            return;
        }
    }
    let close = ExecInput {
        input: Some(ExecIn::CloseStdin(true)),
    };
    let _ = input.send(Ok(close)).await;
}

/// Feeds a resize stream's sizes into the exec.
async fn pump_resizes(mut resize: IncomingStream, input: mpsc::Sender<Result<ExecInput, Status>>) {
    let mut pending = Vec::new();
    while let Some(chunk) = resize.data.recv().await {
        pending.extend_from_slice(&chunk);
        for size in take_terminal_sizes(&mut pending) {
            let message = ExecInput {
                input: Some(ExecIn::Resize(size)),
            };
            if input.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}

/// What the error stream carries for `status` (a `Status` as
/// [`CommandSession::final_status`] and [`failure_status`] make it): v4
/// the JSON, older protocols a failure's message and nothing on success.
fn error_stream_bytes(status: &Value, protocol: ExecProtocol) -> Vec<u8> {
    if protocol >= ExecProtocol::V4 {
        return status.to_string().into_bytes();
    }
    if status["status"] == "Success" {
        return Vec::new();
    }
    status["message"]
        .as_str()
        .unwrap_or("error")
        .as_bytes()
        .to_vec()
}

/// Resets streams the client opens once the exec runs; returns when the
/// connection's reading side ends (the client went away).
async fn refuse_further_streams(streams: &mut Streams, sender: &FrameSender) {
    while let Some(extra) = streams.recv().await {
        sender.reset(extra.id, REFUSED_STREAM).await;
    }
}

/// An exec or attach over SPDY streams.
pub(super) struct CommandStreams<'a> {
    pub api: &'a Arc<ApiService>,
    pub identity: &'a Identity,
    pub kind: CommandSession,
    pub start: ExecStart,
    pub protocol: ExecProtocol,
}

/// Serves an exec or attach on a SPDY connection over `read` and `write`.
pub(super) async fn run_exec<R, W>(
    session: CommandStreams<'_>,
    read: R,
    write: W,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let CommandStreams {
        api,
        identity,
        kind,
        start,
        protocol,
    } = session;
    let (connection, mut streams) = Connection::start(read, write, exec_stream_check);
    let sender = connection.sender().clone();
    let expected = expected_streams(&start, protocol);
    let opened = tokio::select! {
        found = tokio::time::timeout(STREAM_CREATION_TIMEOUT, exec_streams(&mut streams, &sender, expected)) => found,
        _ = shutdown.cancelled() => Ok(None),
    };
    let found = match opened {
        Ok(Some(found)) => found,
        Ok(None) => {
            drop(streams);
            drop(sender);
            connection.finish().await;
            return;
        }
        Err(_) => {
            tracing::debug!(
                "an {} client did not open its {expected} streams within {STREAM_CREATION_TIMEOUT:?}",
                kind.name()
            );
            drop(streams);
            drop(sender);
            connection.finish().await;
            return;
        }
    };
    let ids = found.ids();
    let ExecStreams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = found;
    let error_id = error.map(|s| s.id);
    let stdout_id = stdout.map(|s| s.id);
    let stderr_id = stderr.map(|s| s.id);

    let command = start.command.clone();
    let (input, input_rx) = mpsc::channel(QUEUED_INPUT);
    let mut pumps = JoinSet::new();
    if let Some(stdin) = stdin {
        pumps.spawn(pump_stdin(stdin, input.clone()));
    }
    if let Some(resize) = resize {
        pumps.spawn(pump_resizes(resize, input.clone()));
    }
    drop(input);
    let status = match kind
        .open(api, identity, start, ReceiverStream::new(input_rx))
        .await
    {
        Err(status) => Some(failure_status(&status)),
        Ok(mut output) => {
            let relaying = async {
                while let Some(next) = output.next().await {
                    let (stream, data) = match next {
                        Ok(out) => match out.output {
                            Some(ExecOut::Stdout(data)) => (stdout_id, data),
                            Some(ExecOut::Stderr(data)) => (stderr_id, data),
                            Some(ExecOut::ExitCode(code)) => {
                                return Some(kind.final_status(code, &command))
                            }
                            None => continue,
                        },
                        Err(status) => return Some(failure_status(&status)),
                    };
                    if let Some(id) = stream {
                        if !sender.data_owned(id, data).await {
                            return None;
                        }
                    }
                }
                Some(failure_status(&Status::unavailable(format!(
                    "the {} session ended without an exit status (the agent went away?)",
                    kind.name()
                ))))
            };
            tokio::select! {
                status = relaying => status,
                () = refuse_further_streams(&mut streams, &sender) => None,
                _ = shutdown.cancelled() => None,
            }
        }
    };
    // Dropping the pumps and the output ends the session at the agent, if
    // it still runs (the client went away).
    drop(pumps);
    if let (Some(status), Some(id)) = (status, error_id) {
        let bytes = error_stream_bytes(&status, protocol);
        if !bytes.is_empty() {
            sender.data(id, &bytes).await;
        }
    }
    for id in ids {
        sender.finish(id).await;
    }
    drop(streams);
    drop(sender);
    connection.finish().await;
}

/// Takes the streams a port-forward may open: a port and a type.
fn port_forward_stream_check(headers: &HeaderBlock) -> Result<(), String> {
    let port = headers
        .get("port")
        .ok_or_else(|| "the \"port\" header is required".to_owned())?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("unable to parse {port:?} as a port (1-65535)")),
    }
    match headers.get("streamtype") {
        Some(DATA | ERROR) => Ok(()),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("the \"streamType\" header is required".to_owned()),
    }
}

/// The pair a port-forward stream belongs to: its `requestID`, or for
/// clients too old to send one, the kubelet's guess from the stream ids
/// (an error stream, then its data stream two ids on).
fn request_id(stream: &IncomingStream) -> String {
    if let Some(id) = stream.headers.get("requestid") {
        return id.to_owned();
    }
    match stream.headers.get("streamtype") {
        Some(DATA) => stream.id.saturating_sub(2).to_string(),
        _ => stream.id.to_string(),
    }
}

/// The streams of one forwarded connection so far.
struct PendingPair {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
    since: Instant,
}

/// The pod a port-forward goes to, and who asks.
pub(super) struct ForwardTarget {
    pub api: Arc<ApiService>,
    pub identity: Identity,
    pub namespace: String,
    pub name: String,
}

/// Serves a port-forward on a SPDY connection over `read` and `write`,
/// until the client closes it or the server shuts down.
pub(super) async fn run_port_forward<R, W>(
    target: ForwardTarget,
    read: R,
    write: W,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let target = Arc::new(target);
    let (connection, mut streams) = Connection::start(read, write, port_forward_stream_check);
    let sender = connection.sender().clone();
    let mut pending: HashMap<String, PendingPair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = streams.recv() => {
                let Some(stream) = next else { break };
                let request = request_id(&stream);
                let pair = pending.entry(request.clone()).or_insert_with(|| PendingPair {
                    data: None,
                    error: None,
                    since: Instant::now(),
                });
                let slot = if stream.headers.get("streamtype") == Some(DATA) {
                    &mut pair.data
                } else {
                    &mut pair.error
                };
                if slot.is_some() {
                    tracing::debug!(request = %request, "a port-forward stream pair got a second stream of one type");
                    sender.reset(stream.id, REFUSED_STREAM).await;
                    continue;
                }
                *slot = Some(stream);
                if pair.data.is_some() && pair.error.is_some() {
                    if let Some(PendingPair { data: Some(data), error: Some(error), .. }) = pending.remove(&request) {
                        forwards.spawn(forward_pair(target.clone(), data, error, sender.clone()));
                    }
                }
            }
            _ = sweep.tick() => {
                let late: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.elapsed() >= STREAM_CREATION_TIMEOUT)
                    .map(|(request, _)| request.clone())
                    .collect();
                for request in late {
                    let Some(pair) = pending.remove(&request) else { continue };
                    if let Some(error) = pair.error {
                        let message = format!("timed out waiting for the data stream of request {request}");
                        sender.data(error.id, message.as_bytes()).await;
                        sender.finish(error.id).await;
                    }
                    if let Some(data) = pair.data {
                        sender.reset(data.id, CANCEL).await;
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Ends every forwarded connection still open.
    drop(forwards);
    drop(pending);
    drop(streams);
    drop(sender);
    connection.finish().await;
}

/// One forwarded connection: the data stream's bytes to the pod's port and
/// back; a failure in words on the error stream; both streams ended.
async fn forward_pair(
    target: Arc<ForwardTarget>,
    data: IncomingStream,
    error: IncomingStream,
    sender: FrameSender,
) {
    let (data_id, error_id) = (data.id, error.id);
    // The client writes nothing on the error stream.
    drop(error.data);
    // Checked by port_forward_stream_check.
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_default();
    let start = PortForwardStart {
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        port: u32::from(port),
    };
    let input = ReceiverStream::new(data.data).map(|chunk| {
        Ok::<_, Status>(PortForwardInput {
            input: Some(ForwardIn::Data(chunk)),
        })
    });
    let failure = match target
        .api
        .open_port_forward(&target.identity, start, input)
        .await
    {
        Err(status) => Some(status),
        Ok(mut output) => loop {
            match output.next().await {
                Some(Ok(chunk)) => {
                    if !sender.data_owned(data_id, chunk.data).await {
                        return;
                    }
                }
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        },
    };
    if let Some(status) = failure {
        let message = format!(
            "error forwarding port {port} to pod {}/{}: {}",
            target.namespace,
            target.name,
            status.message()
        );
        sender.data(error_id, message.as_bytes()).await;
    }
    sender.finish(data_id).await;
    sender.finish(error_id).await;
}

/// Carries a SPDY connection in WebSocket binary messages: returns the
/// SPDY connection's reading and writing halves, and the task writing to
/// the client. Client messages (masked, split anywhere in the SPDY byte
/// stream) are read as one stream, their payloads unmasked straight into
/// the SPDY reader's buffer ([`PayloadReader`]); what the SPDY side writes
/// goes back as binary messages of at most [`TUNNEL_CHUNK`] bytes
/// ([`MessageWriter`]). Pings are answered. The client's close is the
/// SPDY side's end of file; once the SPDY side has finished (its writer
/// shut down, its reader gone) the task sends a WebSocket close and ends.
pub(super) fn websocket_tunnel<R, W>(
    read: R,
    write: W,
) -> (PayloadReader<R>, MessageWriter, JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(TUNNEL_QUEUE);
    let writer = tokio::spawn(write_frames(write, frames_rx));
    (
        PayloadReader::new(read, frames.clone()),
        MessageWriter::new(frames, TUNNEL_CHUNK),
        writer,
    )
}

#[cfg(test)]
mod tests {
    use super::super::spdy::frame::{Frame, FrameEncoder, FrameReader, FLAG_FIN};
    use super::super::stream_session::exit_status;
    use super::super::websocket::{self, OPCODE_BINARY, OPCODE_PONG};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn block(pairs: &[(&str, &str)]) -> HeaderBlock {
        HeaderBlock(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_clients_first_served_protocol_is_chosen_as_the_kubelet_does() {
        // kubectl 1.20's exec, one header per protocol.
        let kubectl = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("connection", "Upgrade"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ("x-stream-protocol-version", "v2.channel.k8s.io"),
            ("x-stream-protocol-version", "channel.k8s.io"),
        ]);
        assert!(is_spdy_upgrade(&kubectl));
        assert_eq!(
            negotiate(&kubectl, EXEC_PROTOCOLS).unwrap(),
            "v4.channel.k8s.io"
        );
        let old = headers(&[(
            "x-stream-protocol-version",
            "v2.channel.k8s.io, channel.k8s.io",
        )]);
        assert_eq!(
            negotiate(&old, EXEC_PROTOCOLS).unwrap(),
            "v2.channel.k8s.io"
        );
        let e = negotiate(&old, PORT_FORWARD_PROTOCOLS).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(e.message.contains("portforward.k8s.io"), "{}", e.message);
        let e = negotiate(&headers(&[("upgrade", "SPDY/3.1")]), EXEC_PROTOCOLS).unwrap_err();
        assert!(
            e.message.contains("X-Stream-Protocol-Version is required"),
            "{}",
            e.message
        );
        assert!(!is_spdy_upgrade(&headers(&[("upgrade", "websocket")])));
    }

    #[test]
    fn exec_expects_the_streams_the_kubelet_counts() {
        let start = |stdin, stdout, stderr, tty| ExecStart {
            stdin,
            stdout,
            stderr,
            tty,
            ..Default::default()
        };
        // kubectl exec POD -- cmd: error, stdout, stderr.
        assert_eq!(
            expected_streams(&start(false, true, true, false), ExecProtocol::V4),
            3
        );
        // -it: error, stdin, stdout, resize (stderr goes with the TTY).
        assert_eq!(
            expected_streams(&start(true, true, true, true), ExecProtocol::V4),
            4
        );
        // v2 has no resize stream.
        assert_eq!(
            expected_streams(&start(true, true, false, true), ExecProtocol::V2),
            3
        );
        assert_eq!(ExecProtocol::named("v3.channel.k8s.io"), ExecProtocol::V3);
        assert_eq!(ExecProtocol::named("channel.k8s.io"), ExecProtocol::V1);
    }

    #[test]
    fn exec_and_port_forward_streams_are_checked_by_their_headers() {
        assert!(exec_stream_check(&block(&[("streamtype", "stdin")])).is_ok());
        assert!(exec_stream_check(&block(&[("streamtype", "data")])).is_err());
        assert!(exec_stream_check(&block(&[])).is_err());
        let ok = block(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        assert!(port_forward_stream_check(&ok).is_ok());
        let e = port_forward_stream_check(&block(&[("streamtype", "data")])).unwrap_err();
        assert!(e.contains("\"port\""), "{e}");
        let e = port_forward_stream_check(&block(&[("streamtype", "data"), ("port", "0")]))
            .unwrap_err();
        assert!(e.contains("\"0\""), "{e}");
        let e = port_forward_stream_check(&block(&[("streamtype", "stdin"), ("port", "80")]))
            .unwrap_err();
        assert!(e.contains("stdin"), "{e}");
    }

    #[test]
    fn pairs_are_found_by_request_id_or_by_stream_id_for_old_clients() {
        let stream = |id, pairs: &[(&str, &str)]| IncomingStream {
            id,
            headers: block(pairs),
            data: mpsc::channel(1).1,
        };
        assert_eq!(
            request_id(&stream(7, &[("streamtype", "data"), ("requestid", "3")])),
            "3"
        );
        assert_eq!(request_id(&stream(5, &[("streamtype", "error")])), "5");
        assert_eq!(request_id(&stream(7, &[("streamtype", "data")])), "5");
    }

    #[test]
    fn resize_streams_are_read_as_json_objects_split_anywhere() {
        let mut pending = br#"{"Width":80,"Height":24}{"Width":120,"#.to_vec();
        let sizes = take_terminal_sizes(&mut pending);
        assert_eq!(
            sizes,
            [TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(pending, br#"{"Width":120,"#);
        pending.extend_from_slice(b"\"Height\":40}\n");
        assert_eq!(
            take_terminal_sizes(&mut pending),
            [TerminalSize {
                width: 120,
                height: 40
            }]
        );
        assert!(pending.iter().all(u8::is_ascii_whitespace));
        let mut junk = b"not json".to_vec();
        assert!(take_terminal_sizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }

    #[test]
    fn the_error_stream_says_what_each_protocol_expects() {
        let failed = exit_status(2, &["false".into()]);
        let v4: Value =
            serde_json::from_slice(&error_stream_bytes(&failed, ExecProtocol::V4)).unwrap();
        assert_eq!(v4["reason"], "NonZeroExitCode");
        assert_eq!(v4["details"]["causes"][0]["message"], "2");
        let v3 = String::from_utf8(error_stream_bytes(&failed, ExecProtocol::V3)).unwrap();
        assert!(v3.contains("exit code 2"), "{v3}");
        let ok = exit_status(0, &["true".into()]);
        assert!(error_stream_bytes(&ok, ExecProtocol::V2).is_empty());
        assert!(!error_stream_bytes(&ok, ExecProtocol::V4).is_empty());
    }

    /// A masked client WebSocket frame.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x80 | opcode];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Reads one unmasked server frame: (opcode, payload).
    async fn server_frame<R: AsyncRead + Unpin>(r: &mut R) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.unwrap();
        let length = match head[1] & 0x7f {
            126 => usize::from(r.read_u16().await.unwrap()),
            127 => r.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0u8; length];
        r.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0f, payload)
    }

    #[tokio::test]
    async fn a_spdy_connection_split_across_websocket_messages_is_joined_and_answered() {
        let (server_end, mut client_end) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(server_end);
        let (spdy_read, mut spdy_write, writer) = websocket_tunnel(read, write);
        // A SPDY PING, cut in three messages as a Go client's separate
        // writes send it, with a WebSocket ping between.
        let ping = FrameEncoder::new()
            .unwrap()
            .encode(&Frame::Ping { id: 1 })
            .unwrap();
        let mut wire = client_frame(OPCODE_BINARY, &ping[..2]);
        wire.extend(client_frame(websocket::OPCODE_PING, b"hb"));
        wire.extend(client_frame(OPCODE_BINARY, &ping[2..8]));
        wire.extend(client_frame(OPCODE_BINARY, &ping[8..]));
        client_end.write_all(&wire).await.unwrap();
        let mut frames = FrameReader::new(spdy_read);
        assert_eq!(frames.next().await.unwrap(), Some(Frame::Ping { id: 1 }));
        assert_eq!(
            server_frame(&mut client_end).await,
            (OPCODE_PONG, b"hb".to_vec())
        );
        // What the SPDY side writes comes back as binary messages.
        let fin = FrameEncoder::new()
            .unwrap()
            .encode(&Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .unwrap();
        spdy_write.write_all(&fin).await.unwrap();
        assert_eq!(server_frame(&mut client_end).await, (OPCODE_BINARY, fin));
        // The client closes: the SPDY side reads its end; once that side is
        // done, the tunnel closes with a normal closure.
        client_end
            .write_all(&client_frame(
                websocket::OPCODE_CLOSE,
                &1000u16.to_be_bytes(),
            ))
            .await
            .unwrap();
        assert_eq!(frames.next().await.unwrap(), None);
        spdy_write.shutdown().await.unwrap();
        // The SPDY side's reader goes too, as when its connection ends.
        drop(frames);
        assert_eq!(
            server_frame(&mut client_end).await,
            (websocket::OPCODE_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the tunnel's writer ends")
            .unwrap();
    }
}
