//! `skiff ctl exec` and `skiff ctl port-forward`, for users without
//! kubectl: the API's `PodSessions` calls, which the master authorizes and
//! relays to the agent of the pod's node (the same path kubectl's streams
//! take).
//!
//! - exec: the local stdin (with `-i`) goes to the process; its stdout and
//!   stderr come back to ours; the command's exit code becomes
//!   [`CtlError::CommandExited`], which `skiff` exits with, as kubectl does.
//!   With `-t` the local terminal is put in raw mode for the session, and
//!   its size goes to the remote terminal at the start and on every
//!   `SIGWINCH` ([`super::terminal`]).
//! - port-forward: listens on `127.0.0.1:LOCAL` (or `--address`) and opens
//!   one forwarded connection per accepted one, until interrupted.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use skiff_master::client::{Client, ClientError};
use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::exec_output::Output as ExecOut;
use skiff_proto::api::port_forward_input::Input as ForwardIn;
use skiff_proto::api::{ExecInput, ExecStart, PortForwardInput, PortForwardStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::terminal::{RawTerminal, ResizeWatch};
use super::{CtlError, Result};

/// Messages buffered toward the master.
const QUEUED: usize = 16;
/// Largest chunk read from stdin or a forwarded connection.
const CHUNK: usize = 32 << 10;

/// What `exec` runs, where.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

/// Reads the local stdin on a thread of its own (a blocking read cannot
/// be cancelled) and queues it as exec input, then the end of stdin.
fn feed_stdin(to_master: mpsc::Sender<ExecInput>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let input = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => ExecIn::CloseStdin(true),
                Ok(n) => ExecIn::Stdin(buf[..n].to_vec()),
            };
            let end = matches!(input, ExecIn::CloseStdin(_));
            let message = ExecInput { input: Some(input) };
            if to_master.blocking_send(message).is_err() || end {
                return;
            }
        }
    });
}

/// Runs the command in the pod; its output goes to `out` (stdout) and
/// our stderr. A non-zero exit is [`CtlError::CommandExited`].
pub async fn exec(client: &Client, options: ExecOptions, out: &mut dyn Write) -> Result<()> {
    let context = format!("exec in pod/{}", options.pod);
    let (to_master, from_us) = mpsc::channel(QUEUED);
    let start = ExecStart {
        namespace: options.namespace.clone(),
        name: options.pod.clone(),
        container: options.container.clone().unwrap_or_default(),
        command: options.command.clone(),
        stdin: options.stdin,
        stdout: true,
        stderr: !options.tty,
        tty: options.tty,
    };
    let _ = to_master
        .send(ExecInput {
            input: Some(ExecIn::Start(start)),
        })
        .await;
    let mut output = client
        .exec(ReceiverStream::new(from_us))
        .await
        .map_err(|source| CtlError::Api {
            context: context.clone(),
            source,
        })?;
    let _raw = options.tty.then(RawTerminal::enter);
    let _resizes = options.tty.then(|| ResizeWatch::start(to_master.clone()));
    if options.stdin {
        feed_stdin(to_master);
    } else {
        // No stdin: the process reads end of file at once.
        drop(to_master);
    }
    loop {
        match output.message().await {
            Ok(Some(message)) => match message.output {
                Some(ExecOut::Stdout(data)) => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(ExecOut::Stderr(data)) => {
                    let mut stderr = std::io::stderr();
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                Some(ExecOut::ExitCode(0)) => return Ok(()),
                Some(ExecOut::ExitCode(code)) => return Err(CtlError::CommandExited(code)),
                None => {}
            },
            Ok(None) => {
                return Err(CtlError::Usage(format!(
                    "{context}: the session ended without an exit code"
                )))
            }
            Err(status) => {
                return Err(CtlError::Api {
                    context,
                    source: ClientError::from_status(client.addr(), status),
                })
            }
        }
    }
}

/// A `LOCAL:REMOTE` or `PORT` argument.
pub fn parse_port_pair(text: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            CtlError::Usage(format!(
                "{text:?} is not a port forward: give PORT or LOCAL:REMOTE, ports 1-65535"
            ))
        })
    };
    match text.split_once(':') {
        Some((local, remote)) => Ok((port(local)?, port(remote)?)),
        None => {
            let p = port(text)?;
            Ok((p, p))
        }
    }
}

/// Relays one accepted local connection through the master to `port` in
/// the pod.
async fn forward_connection(
    client: Client,
    namespace: String,
    pod: String,
    port: u16,
    socket: tokio::net::TcpStream,
) {
    let (to_master, from_us) = mpsc::channel(QUEUED);
    let start = PortForwardStart {
        namespace,
        name: pod.clone(),
        port: u32::from(port),
    };
    let _ = to_master
        .send(PortForwardInput {
            input: Some(ForwardIn::Start(start)),
        })
        .await;
    let mut output = match client.port_forward(ReceiverStream::new(from_us)).await {
        Ok(output) => output,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error forwarding port {port} to pod {pod}: {e}"
            );
            return;
        }
    };
    let (mut from_local, mut to_local) = socket.into_split();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let input = match from_local.read(&mut buf).await {
                Ok(0) | Err(_) => ForwardIn::CloseWrite(true),
                Ok(n) => ForwardIn::Data(buf[..n].to_vec()),
            };
            let end = matches!(input, ForwardIn::CloseWrite(_));
            if to_master
                .send(PortForwardInput { input: Some(input) })
                .await
                .is_err()
                || end
            {
                // Keep the call open until the answer is read: dropping
                // the sender is only a half-close.
                return;
            }
        }
    });
    loop {
        match output.message().await {
            Ok(Some(chunk)) => {
                if to_local.write_all(&chunk.data).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(status) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "error forwarding port {port} to pod {pod}: {}",
                    status.message()
                );
                break;
            }
        }
    }
    let _ = to_local.shutdown().await;
    upstream.abort();
}

/// Forwards each `(local, remote)` port until interrupted.
pub async fn port_forward(
    client: &Client,
    namespace: &str,
    pod: &str,
    ports: &[(u16, u16)],
    address: IpAddr,
    out: &mut dyn Write,
) -> Result<()> {
    let mut accepting = tokio::task::JoinSet::new();
    for &(local, remote) in ports {
        let listen = SocketAddr::new(address, local);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| CtlError::Read {
                path: format!("listening on {listen}"),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| CtlError::Read {
            path: format!("listening on {listen}"),
            source,
        })?;
        writeln!(out, "Forwarding from {bound} -> {remote}")?;
        let client = client.clone();
        let namespace = namespace.to_owned();
        let pod = pod.to_owned();
        accepting.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(forward_connection(
                    client.clone(),
                    namespace.clone(),
                    pod.clone(),
                    remote,
                    socket,
                ));
            }
        });
    }
    out.flush()?;
    let _ = tokio::signal::ctrl_c().await;
    accepting.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_arguments_are_local_remote_or_one_port() {
        assert_eq!(parse_port_pair("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_port_pair("18080:80").unwrap(), (18080, 80));
        for bad in ["http", "0", "1:70000", ":80", "8080:"] {
            let e = parse_port_pair(bad).unwrap_err();
            assert!(e.to_string().contains("not a port forward"), "{bad}: {e}");
        }
    }
}
