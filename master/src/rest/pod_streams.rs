//! `pods/NAME/exec`, `pods/NAME/attach` and `pods/NAME/portforward` over
//! WebSocket, as kubectl 1.30 and later, the Python client and k9s open
//! them: a `GET` (or `POST`) with `Upgrade: websocket`, answered `101
//! Switching Protocols` with one of the `channel.k8s.io` subprotocols.
//! Every WebSocket message then starts with a channel byte:
//!
//! - exec: 0 stdin, 1 stdout, 2 stderr, 3 the error channel (a `Status`:
//!   `Success`, or `Failure` with reason `NonZeroExitCode` and the exit code
//!   as a cause, which kubectl exits with), 4 terminal resizes (JSON
//!   `{"Width":..,"Height":..}`); `v5.channel.k8s.io` adds 255, "close
//!   channel N" (stdin's end of file).
//! - attach: the same channels, joined to the container's own process
//!   (`container`, `stdin`, `stdout`, `stderr`, `tty` in the query, no
//!   `command`); its end is `Success` on the error channel, as the
//!   kubelet writes it.
//! - port-forward: for the i-th port of `ports=`, channel 2i carries its
//!   data and 2i+1 its errors; the first message on each is the port
//!   (16 bits, little-endian), as the kubelet sends it.
//!
//! Authorization (`create` on the subresource) and the pod's existence
//! are checked before the upgrade, so a refusal is a plain HTTP `Status`
//! answer; what fails later (an unknown container, a command that does not
//! exist, a port nothing listens on) arrives on the error channel. The
//! sessions themselves are the API service's ([`ApiService::open_exec`],
//! [`ApiService::open_attach`], [`ApiService::open_port_forward`]), relayed
//! to the pod's agent.
//!
//! The same endpoints also answer SPDY/3.1 (`Upgrade: SPDY/3.1` with
//! `X-Stream-Protocol-Version`: kubectl 1.29 and older), and port-forward
//! answers the WebSocket subprotocol `SPDY/3.1+portforward.k8s.io`, SPDY
//! tunnelled in binary messages (kubectl 1.31 and later); those sessions
//! are [`super::spdy_streams`]'s.

use std::sync::Arc;

use axum::body::Body;
use http::{header, HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::exec_output::Output as ExecOut;
use skiff_proto::api::port_forward_input::Input as ForwardIn;
use skiff_proto::api::{ExecInput, ExecStart, PortForwardInput, PortForwardStart, TerminalSize};
use skiff_security::{Identity, PeerInfo};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::path::ResourcePath;
use super::spdy_streams;
use super::status::RestError;
use super::stream_session::{failure_status, write_frames, CommandSession};
use super::websocket::{
    self, header_words, ClientHandshake, Message, MessageReader, OPCODE_BINARY, OPCODE_PONG,
};
use crate::api::ApiService;
use skiff_objects::registry::info;
use skiff_objects::Kind;

/// The channel protocols served, most preferred first.
const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", spdy_streams::PORT_FORWARD_TUNNEL];
const V5: &str = "v5.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Frames queued for the client before senders wait.
const QUEUED_FRAMES: usize = 32;
/// Ports one port-forward may carry (two channels each, in one byte).
const MAX_PORTS: usize = 127;

/// Whether `path` is one of the streaming subresources of a pod.
pub(super) fn is_pod_stream(path: &ResourcePath) -> bool {
    path.group.is_empty()
        && path.resource == "pods"
        && path.name.is_some()
        && matches!(
            path.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

/// Who asks for which pod's stream.
pub(super) struct StreamRequest<'a> {
    pub api: &'a Arc<ApiService>,
    pub peer: &'a PeerInfo,
    pub namespace: &'a str,
    pub name: &'a str,
    pub subresource: &'a str,
    pub shutdown: CancellationToken,
}

/// What the upgraded connection will carry.
enum Session {
    /// exec or attach, and where.
    Command(CommandSession, ExecStart),
    PortForward(Vec<u16>),
}

/// Every query parameter, in order, repeated ones kept (`command` is one
/// per word).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A boolean parameter, as Go's `strconv.ParseBool` reads it.
fn flag(pairs: &[(String, String)], name: &str) -> Result<bool, RestError> {
    match pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
    {
        None | Some("" | "0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some(other) => Err(RestError::bad_request(format!(
            "{name} {other:?} is neither true nor false"
        ))),
    }
}

/// The exec the query asks for (the container still to be chosen).
fn exec_start(pairs: &[(String, String)]) -> Result<ExecStart, RestError> {
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(RestError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    command_start(pairs, command)
}

/// The attach the query asks for (the container still to be chosen).
fn attach_start(pairs: &[(String, String)]) -> Result<ExecStart, RestError> {
    command_start(pairs, Vec::new())
}

/// The container and streams of an exec or attach, from the query.
fn command_start(pairs: &[(String, String)], command: Vec<String>) -> Result<ExecStart, RestError> {
    let start = ExecStart {
        namespace: String::new(),
        name: String::new(),
        container: pairs
            .iter()
            .rev()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        command,
        stdin: flag(pairs, "stdin")?,
        stdout: flag(pairs, "stdout")?,
        stderr: flag(pairs, "stderr")?,
        tty: flag(pairs, "tty")?,
    };
    if !start.stdin && !start.stdout && !start.stderr {
        return Err(RestError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    Ok(start)
}

/// The ports of `ports=` (repeated, or comma-separated).
fn forwarded_ports(pairs: &[(String, String)]) -> Result<Vec<u16>, RestError> {
    let mut ports = Vec::new();
    for value in pairs.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v) {
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let port = word.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                RestError::bad_request(format!("invalid port {word:?}: not a TCP port (1-65535)"))
            })?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(RestError::bad_request(
            "at least one port must be given (ports=PORT)",
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(RestError::bad_request(format!(
            "at most {MAX_PORTS} ports may be forwarded at once"
        )));
    }
    Ok(ports)
}

/// The subprotocol to answer with: the first of `served` the client offers.
fn choose_protocol(offered: &[String], served: &[&'static str]) -> Option<&'static str> {
    served
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
}

/// Refuses what is not a WebSocket upgrade this server can take, saying
/// what would work; the subprotocol and the client's key otherwise.
fn websocket_handshake(
    headers: &HeaderMap,
    served: &[&'static str],
) -> Result<(&'static str, String), RestError> {
    let upgrade = header_words(headers, "upgrade");
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(RestError::bad_request(
            "Upgrade request required: this is a streaming endpoint (WebSocket with one of the channel.k8s.io protocols, or SPDY/3.1)",
        ));
    }
    let ClientHandshake { key, offered } =
        ClientHandshake::read(headers).map_err(|e| RestError::bad_request(e.to_string()))?;
    let protocol = choose_protocol(&offered, served).ok_or_else(|| {
        RestError::bad_request(format!(
            "none of the offered stream protocols [{}] is served; skiff serves {}",
            offered.join(", "),
            served.join(", ")
        ))
    })?;
    Ok((protocol, key))
}

/// How the upgraded connection carries the session.
enum Transport {
    /// A WebSocket with a `channel.k8s.io` subprotocol, and the client's
    /// key.
    Channels { protocol: &'static str, key: String },
    /// SPDY/3.1 after an HTTP upgrade, with the negotiated
    /// `X-Stream-Protocol-Version`.
    Spdy { protocol: &'static str },
    /// SPDY/3.1 in a WebSocket's binary messages (port-forward only), and
    /// the client's key.
    SpdyInWebSocket { key: String },
}

/// What the upgrade asks for, or why it cannot be served.
fn transport(headers: &HeaderMap, subresource: &str) -> Result<Transport, RestError> {
    // exec and attach speak the same stream protocols.
    let exec = subresource != "portforward";
    if spdy_streams::is_spdy_upgrade(headers) {
        let served = if exec {
            spdy_streams::EXEC_PROTOCOLS
        } else {
            spdy_streams::PORT_FORWARD_PROTOCOLS
        };
        let protocol = spdy_streams::negotiate(headers, served)?;
        return Ok(Transport::Spdy { protocol });
    }
    let served = if exec {
        EXEC_PROTOCOLS
    } else {
        PORT_FORWARD_PROTOCOLS
    };
    let (protocol, key) = websocket_handshake(headers, served)?;
    if protocol == spdy_streams::PORT_FORWARD_TUNNEL {
        return Ok(Transport::SpdyInWebSocket { key });
    }
    Ok(Transport::Channels { protocol, key })
}

/// Answers the stream request: `101 Switching Protocols`, with the session
/// run on the upgraded connection; or why not.
pub(super) async fn serve(
    request: StreamRequest<'_>,
    parts: &mut http::request::Parts,
) -> Result<Response<Body>, RestError> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(RestError::method_not_allowed(
            &parts.method,
            &format!("pods/{}", request.subresource),
        ));
    }
    let Some(identity) = request.peer.identity.clone() else {
        return Err(RestError::unauthorized());
    };
    let pairs = query_pairs(parts.uri.query());
    let pods = info(Kind::Pod);
    let mut command = match request.subresource {
        "exec" => Some((CommandSession::Exec, exec_start(&pairs)?)),
        "attach" => Some((CommandSession::Attach, attach_start(&pairs)?)),
        _ => None,
    };
    let pod = request
        .api
        .check_pod_session(
            &identity,
            request.namespace,
            request.name,
            request.subresource,
        )
        .map_err(|s| RestError::from_grpc(&s, pods, request.name))?;
    if let Some((kind, start)) = &mut command {
        let phase = skiff_objects::pods::phase(&pod);
        if matches!(phase, "Succeeded" | "Failed") {
            let doing = match kind {
                CommandSession::Exec => "exec into",
                CommandSession::Attach => "attach to",
            };
            return Err(RestError::bad_request(format!(
                "cannot {doing} a container in a completed pod; current phase is {phase}"
            )));
        }
        start.container = super::pod_logs::choose_container(&pod, request.name, &start.container)?;
        start.namespace = request.namespace.to_owned();
        start.name = request.name.to_owned();
    }
    let transport = transport(&parts.headers, request.subresource)?;
    let session = match command {
        Some((kind, start)) => Session::Command(kind, start),
        // Over SPDY the client names each connection's port in its
        // streams; `ports=` is the WebSocket channels' list.
        None => match transport {
            Transport::Channels { .. } => Session::PortForward(forwarded_ports(&pairs)?),
            _ => Session::PortForward(Vec::new()),
        },
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(RestError::bad_request(
            "this connection cannot be upgraded; streams need HTTP/1.1",
        ));
    };
    let response = match &transport {
        Transport::Spdy { protocol } => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, spdy_streams::SPDY_31)
            .header("X-Stream-Protocol-Version", *protocol),
        Transport::Channels { protocol, key } => {
            websocket::switching_protocols(key, Some(*protocol))
        }
        Transport::SpdyInWebSocket { key } => {
            websocket::switching_protocols(key, Some(spdy_streams::PORT_FORWARD_TUNNEL))
        }
    }
    .body(Body::empty())
    .map_err(|e| RestError::internal(format!("building the upgrade answer: {e}")))?;
    let api = request.api.clone();
    let namespace = request.namespace.to_owned();
    let name = request.name.to_owned();
    let shutdown = request.shutdown.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "a stream's connection was not upgraded");
                return;
            }
        };
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        let forward_target = spdy_streams::ForwardTarget {
            api: api.clone(),
            identity: identity.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        match (transport, session) {
            (Transport::Spdy { protocol }, Session::Command(kind, start)) => {
                let protocol = spdy_streams::ExecProtocol::named(protocol);
                let session = spdy_streams::CommandStreams {
                    api: &api,
                    identity: &identity,
                    kind,
                    start,
                    protocol,
                };
                spdy_streams::run_exec(session, read, write, shutdown).await
            }
            (Transport::Spdy { .. }, Session::PortForward(_)) => {
                spdy_streams::run_port_forward(forward_target, read, write, shutdown).await
            }
            (Transport::SpdyInWebSocket { .. }, _) => {
                let (read, write, writer) = spdy_streams::websocket_tunnel(read, write);
                spdy_streams::run_port_forward(forward_target, read, write, shutdown).await;
                let _ = writer.await;
            }
            (Transport::Channels { protocol, .. }, session) => {
                let (frames, frames_rx) = mpsc::channel(QUEUED_FRAMES);
                let writer = tokio::spawn(write_frames(write, frames_rx));
                match session {
                    Session::Command(kind, start) => {
                        let v5 = protocol == V5;
                        let command = CommandChannels {
                            api: &api,
                            identity: &identity,
                            kind,
                            start,
                            v5,
                        };
                        run_exec(command, read, frames, shutdown).await
                    }
                    Session::PortForward(ports) => {
                        let target = ForwardTarget {
                            api: &api,
                            identity: &identity,
                            namespace: &namespace,
                            name: &name,
                        };
                        run_port_forward(target, ports, read, frames, shutdown).await
                    }
                }
                let _ = writer.await;
            }
        }
    });
    Ok(response)
}

/// A binary message on `channel`.
fn on_channel(channel: u8, data: &[u8]) -> Vec<u8> {
    websocket::frame_parts(OPCODE_BINARY, &[&[channel], data])
}

/// A resize message's size, if it is one.
fn terminal_size(json: &[u8]) -> Option<TerminalSize> {
    let v: Value = serde_json::from_slice(json).ok()?;
    Some(TerminalSize {
        width: u32::try_from(v.get("Width")?.as_u64()?).ok()?,
        height: u32::try_from(v.get("Height")?.as_u64()?).ok()?,
    })
}

/// What one client message means for an exec.
fn exec_input(message: &[u8], v5: bool) -> Option<ExecInput> {
    let input = match message.split_first()? {
        (&STDIN, data) => ExecIn::Stdin(data.to_vec()),
        (&RESIZE, json) => ExecIn::Resize(terminal_size(json)?),
        (&CLOSE, [STDIN]) if v5 => ExecIn::CloseStdin(true),
        _ => return None,
    };
    Some(ExecInput { input: Some(input) })
}

/// An exec or attach over WebSocket channels.
struct CommandChannels<'a> {
    api: &'a Arc<ApiService>,
    identity: &'a Identity,
    kind: CommandSession,
    start: ExecStart,
    /// `v5.channel.k8s.io`: the client can close stdin.
    v5: bool,
}

/// Runs an exec or attach on the upgraded connection: client messages
/// become the session's input; its output, then its final status, go
/// back. A client that closes ends the session (and an exec's process).
async fn run_exec<R: AsyncRead + Unpin>(
    session: CommandChannels<'_>,
    read: R,
    frames: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let CommandChannels {
        api,
        identity,
        kind,
        start,
        v5,
    } = session;
    let command = start.command.clone();
    let (input, input_rx) = mpsc::channel(QUEUED_FRAMES);
    let mut output = match kind
        .open(api, identity, start, ReceiverStream::new(input_rx))
        .await
    {
        Ok(output) => output,
        Err(status) => {
            let json = failure_status(&status).to_string();
            let _ = frames.send(on_channel(ERROR, json.as_bytes())).await;
            return;
        }
    };
    let mut reader = MessageReader::new(read);
    let reading = async {
        loop {
            match reader.next().await {
                Ok(Some(Message::Data(data))) => {
                    if let Some(message) = exec_input(&data, v5) {
                        if input.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Some(Message::Ping(payload))) => {
                    let _ = frames.send(websocket::frame(OPCODE_PONG, &payload)).await;
                }
                Ok(Some(Message::Pong)) => {}
                Ok(Some(Message::Close(_)) | None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "exec client stream");
                    return;
                }
            }
        }
    };
    let relaying = async {
        while let Some(next) = output.next().await {
            let frame = match next {
                Ok(out) => match out.output {
                    Some(ExecOut::Stdout(data)) => on_channel(STDOUT, &data),
                    Some(ExecOut::Stderr(data)) => on_channel(STDERR, &data),
                    Some(ExecOut::ExitCode(code)) => return kind.final_status(code, &command),
                    None => continue,
                },
                Err(status) => return failure_status(&status),
            };
            if frames.send(frame).await.is_err() {
                return Value::Null;
            }
        }
        failure_status(&Status::unavailable(format!(
            "the {} session ended without an exit status (the agent went away?)",
            kind.name()
        )))
    };
    tokio::select! {
        () = reading => {}
        status = relaying => {
            if !status.is_null() {
                let _ = frames.send(on_channel(ERROR, status.to_string().as_bytes())).await;
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// The pod a port-forward goes to, and who asks.
struct ForwardTarget<'a> {
    api: &'a Arc<ApiService>,
    identity: &'a Identity,
    namespace: &'a str,
    name: &'a str,
}

/// The first message of a port's channel: its number, little-endian.
fn port_announcement(channel: u8, port: u16) -> Vec<u8> {
    on_channel(channel, &port.to_le_bytes())
}

/// Runs a port-forward on the upgraded connection: one connection into the
/// pod per port, relayed on that port's channels, until the client closes
/// or every connection has ended.
async fn run_port_forward<R: AsyncRead + Unpin>(
    target: ForwardTarget<'_>,
    ports: Vec<u16>,
    read: R,
    frames: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let mut inputs = Vec::with_capacity(ports.len());
    let mut relays = tokio::task::JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        // MAX_PORTS keeps both channels within a byte.
        let data_channel = (2 * i) as u8;
        let error_channel = data_channel + 1;
        let _ = frames.send(port_announcement(data_channel, port)).await;
        let _ = frames.send(port_announcement(error_channel, port)).await;
        let (input, input_rx) = mpsc::channel(QUEUED_FRAMES);
        inputs.push(input);
        let api = target.api.clone();
        let identity = target.identity.clone();
        let start = PortForwardStart {
            namespace: target.namespace.to_owned(),
            name: target.name.to_owned(),
            port: u32::from(port),
        };
        let frames = frames.clone();
        relays.spawn(async move {
            let mut output = match api
                .open_port_forward(&identity, start, ReceiverStream::new(input_rx))
                .await
            {
                Ok(output) => output,
                Err(status) => {
                    let message = status.message().as_bytes().to_vec();
                    let _ = frames.send(on_channel(error_channel, &message)).await;
                    return;
                }
            };
            while let Some(next) = output.next().await {
                let frame = match next {
                    Ok(chunk) => on_channel(data_channel, &chunk.data),
                    Err(status) => {
                        let message = status.message().as_bytes().to_vec();
                        let _ = frames.send(on_channel(error_channel, &message)).await;
                        return;
                    }
                };
                if frames.send(frame).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut reader = MessageReader::new(read);
    let reading = async {
        loop {
            match reader.next().await {
                Ok(Some(Message::Data(data))) => {
                    let Some((&channel, bytes)) = data.split_first() else {
                        continue;
                    };
                    // Client writes on error channels carry nothing.
                    if channel % 2 != 0 || bytes.is_empty() {
                        continue;
                    }
                    if let Some(input) = inputs.get(usize::from(channel / 2)) {
                        let message = PortForwardInput {
                            input: Some(ForwardIn::Data(bytes.to_vec())),
                        };
                        // A port whose connection ended takes no more.
                        let _ = input.send(Ok(message)).await;
                    }
                }
                Ok(Some(Message::Ping(payload))) => {
                    let _ = frames.send(websocket::frame(OPCODE_PONG, &payload)).await;
                }
                Ok(Some(Message::Pong)) => {}
                Ok(Some(Message::Close(_)) | None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward client stream");
                    return;
                }
            }
        }
    };
    let all_ended = async { while relays.join_next().await.is_some() {} };
    tokio::select! {
        () = reading => {}
        () = all_ended => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream_session::exit_status;
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query_pairs(Some(query))
    }

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn kubectls_exec_query_is_read_with_every_command_word() {
        let start = exec_start(&pairs(
            "command=sh&command=-c&command=echo%20hi%3B%20exit%203&container=main&stdin=true&stdout=true&stderr=true&tty=false",
        ))
        .unwrap();
        assert_eq!(start.command, ["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(start.container, "main");
        assert!(start.stdin && start.stdout && start.stderr && !start.tty);
        let e = exec_start(&pairs("stdout=true")).unwrap_err();
        assert_eq!(e.message, "you must specify at least 1 command");
        let e = exec_start(&pairs("command=ls")).unwrap_err();
        assert_eq!(
            e.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let e = exec_start(&pairs("command=ls&stdout=maybe")).unwrap_err();
        assert!(e.message.contains("stdout"), "{}", e.message);
    }

    #[test]
    fn kubectls_attach_query_names_the_container_and_streams_and_no_command() {
        let start = attach_start(&pairs(
            "container=main&stdin=true&stdout=true&stderr=false&tty=true",
        ))
        .unwrap();
        assert!(start.command.is_empty());
        assert_eq!(start.container, "main");
        assert!(start.stdin && start.stdout && !start.stderr && start.tty);
        let e = attach_start(&pairs("container=main")).unwrap_err();
        assert_eq!(
            e.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn attach_speaks_execs_stream_protocols() {
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert!(matches!(
            transport(&spdy, "attach").unwrap(),
            Transport::Spdy {
                protocol: "v4.channel.k8s.io"
            }
        ));
        let ws = headers(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]);
        assert!(matches!(
            transport(&ws, "attach").unwrap(),
            Transport::Channels {
                protocol: "v5.channel.k8s.io",
                ..
            }
        ));
        // An attach that ends is a success whatever the process's code.
        let end = CommandSession::Attach.final_status(3, &[]);
        assert_eq!(end["status"], "Success");
        let exec = CommandSession::Exec.final_status(3, &["false".into()]);
        assert_eq!(exec["reason"], "NonZeroExitCode");
    }

    #[test]
    fn ports_are_read_repeated_or_comma_separated_and_checked() {
        assert_eq!(
            forwarded_ports(&pairs("ports=8080,9090&ports=53")).unwrap(),
            [8080, 9090, 53]
        );
        assert!(forwarded_ports(&pairs("")).is_err());
        let e = forwarded_ports(&pairs("ports=http")).unwrap_err();
        assert!(e.message.contains("\"http\""), "{}", e.message);
        assert!(forwarded_ports(&pairs("ports=0")).is_err());
    }

    #[test]
    fn the_newest_offered_channel_protocol_is_chosen() {
        let ws = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut offered = headers(&ws);
        offered.append(
            "sec-websocket-protocol",
            http::HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        let (protocol, key) = websocket_handshake(&offered, EXEC_PROTOCOLS).unwrap();
        assert_eq!(protocol, "v5.channel.k8s.io");
        assert_eq!(key, "dGhlIHNhbXBsZSBub25jZQ==");
        let mut old = headers(&ws);
        old.append(
            "sec-websocket-protocol",
            http::HeaderValue::from_static("base64.channel.k8s.io"),
        );
        let e = websocket_handshake(&old, EXEC_PROTOCOLS).unwrap_err();
        assert!(e.message.contains("v5.channel.k8s.io"), "{}", e.message);
        let plain = headers(&[]);
        let e = websocket_handshake(&plain, EXEC_PROTOCOLS).unwrap_err();
        assert!(
            e.message.starts_with("Upgrade request required"),
            "{}",
            e.message
        );
    }

    #[test]
    fn spdy_upgrades_and_the_port_forward_tunnel_are_told_apart() {
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "channel.k8s.io"),
        ]);
        assert!(matches!(
            transport(&spdy, "exec").unwrap(),
            Transport::Spdy {
                protocol: "v4.channel.k8s.io"
            }
        ));
        // SPDY port-forward speaks its own protocol only.
        let e = transport(&spdy, "portforward").err().unwrap();
        assert!(e.message.contains("portforward.k8s.io"), "{}", e.message);
        let tunnel = headers(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        assert!(matches!(
            transport(&tunnel, "portforward").unwrap(),
            Transport::SpdyInWebSocket { .. }
        ));
        // exec has no tunnel: kubectl execs over v5.channel.k8s.io.
        let e = transport(&tunnel, "exec").err().unwrap();
        assert!(e.message.contains("v5.channel.k8s.io"), "{}", e.message);
    }

    #[test]
    fn client_messages_become_stdin_resizes_and_end_of_stdin() {
        let stdin = exec_input(b"\x00ls\n", true).unwrap();
        assert_eq!(stdin.input, Some(ExecIn::Stdin(b"ls\n".to_vec())));
        let resize = exec_input(b"\x04{\"Width\":120,\"Height\":40}", true).unwrap();
        assert_eq!(
            resize.input,
            Some(ExecIn::Resize(TerminalSize {
                width: 120,
                height: 40
            }))
        );
        assert_eq!(
            exec_input(&[CLOSE, STDIN], true).unwrap().input,
            Some(ExecIn::CloseStdin(true))
        );
        // v4 has no close channel.
        assert!(exec_input(&[CLOSE, STDIN], false).is_none());
        assert!(exec_input(b"\x04not json", true).is_none());
        assert!(exec_input(b"", true).is_none());
    }

    #[test]
    fn exit_codes_are_reported_as_kubectl_reads_them() {
        let ok = exit_status(0, &["true".into()]);
        assert_eq!(ok["status"], "Success");
        let failed = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let missing = failure_status(&Status::not_found(
            "container nope not found in pod default/web",
        ));
        assert_eq!(missing["status"], "Failure");
        assert_eq!(missing["code"], 404);
        assert_eq!(
            missing["message"],
            "container nope not found in pod default/web"
        );
    }

    #[test]
    fn channel_frames_carry_the_channel_first_and_ports_little_endian() {
        assert_eq!(on_channel(STDOUT, b"hi"), b"\x82\x03\x01hi");
        assert_eq!(port_announcement(2, 8080), vec![0x82, 0x03, 2, 0x90, 0x1f]);
    }
}
