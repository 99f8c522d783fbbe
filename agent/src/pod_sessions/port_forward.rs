//! One port-forward connection: a TCP connection to `127.0.0.1:PORT` made
//! inside the pod's network namespace (as kubelet dials `localhost:PORT`
//! there), relayed both ways. The socket is opened by a short-lived thread
//! that enters the namespace ([`crate::network::netns::run_in`]); once
//! made it stays in that namespace and the relay runs on the ordinary
//! runtime. A client's half-close becomes a TCP half-close, the pod's end
//! of file ends the stream, and a client that goes away or an agent that
//! shuts down closes the connection.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use skiff_proto::api::port_forward_input::Input;
use skiff_proto::api::{PortForwardInput, PortForwardOutput, PortForwardStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::network::netns::{self, PortCheckError};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest chunk of data per message.
const CHUNK: usize = 32 << 10;
/// Messages buffered for a slow client.
const OUTPUT_MESSAGES: usize = 16;

/// Reads the connection's first message, which must say where to connect.
pub async fn read_start<S>(input: &mut S) -> Result<PortForwardStart, Status>
where
    S: Stream<Item = Result<PortForwardInput, Status>> + Unpin,
{
    match input.next().await {
        Some(Ok(PortForwardInput {
            input: Some(Input::Start(start)),
        })) if !start.name.is_empty() => Ok(start),
        Some(Ok(PortForwardInput {
            input: Some(Input::Start(_)),
        })) => Err(Status::invalid_argument("port-forward needs a pod name")),
        Some(Ok(_)) => Err(Status::invalid_argument(
            "a port-forward connection must begin with where to connect (PortForwardStart)",
        )),
        Some(Err(status)) => Err(status),
        None => Err(Status::invalid_argument(
            "the port-forward connection ended before it began",
        )),
    }
}

/// The TCP port asked for, if it is one.
pub fn port_of(start: &PortForwardStart) -> Result<u16, Status> {
    u16::try_from(start.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("port {} is not a TCP port (1-65535)", start.port))
        })
}

/// Connects to `127.0.0.1:port` inside the network namespace at
/// `netns_path`.
pub async fn connect(
    netns_path: PathBuf,
    port: u16,
    namespace: &str,
    name: &str,
) -> Result<tokio::net::TcpStream, Status> {
    let socket = netns::run_in(netns_path, move || -> Result<TcpStream, PortCheckError> {
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), CONNECT_TIMEOUT)
            .map_err(|source| PortCheckError::TcpConnect { port, source })
    })
    .await
    .map_err(|e| {
        Status::unavailable(format!(
            "failed to connect to localhost:{port} inside pod {namespace}/{name}: {e}"
        ))
    })?;
    socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(socket))
        .map_err(|e| Status::internal(format!("relaying port {port}: {e}")))
}

/// Relays between `socket` and the client's messages; the returned stream
/// carries what the pod sends.
pub fn relay<S>(
    socket: tokio::net::TcpStream,
    mut input: S,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<PortForwardOutput, Status>>
where
    S: Stream<Item = Result<PortForwardInput, Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(OUTPUT_MESSAGES);
    tokio::spawn(async move {
        let (mut from_pod, mut to_pod) = socket.into_split();
        let upstream = async {
            loop {
                match input.next().await {
                    Some(Ok(PortForwardInput {
                        input: Some(Input::Data(data)),
                    })) => {
                        if to_pod.write_all(&data).await.is_err() {
                            return false;
                        }
                    }
                    Some(Ok(PortForwardInput {
                        input: Some(Input::CloseWrite(_)),
                    }))
                    | None => {
                        let _ = to_pod.shutdown().await;
                        // Keep reading the pod's answer.
                        return true;
                    }
                    Some(Ok(_)) => {}
                    // The client's stream broke: it is gone.
                    Some(Err(_)) => return false,
                }
            }
        };
        let downstream = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match from_pod.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        let message = PortForwardOutput {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::aborted(format!(
                                "the pod's connection broke: {e}"
                            ))))
                            .await;
                        return;
                    }
                }
            }
        };
        tokio::pin!(upstream);
        tokio::pin!(downstream);
        let mut upstream_done = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable(
                        "the agent is shutting down; the forwarded connection was closed",
                    ))).await;
                    return;
                }
                _ = tx.closed() => return,
                keep_reading = &mut upstream, if !upstream_done => {
                    if !keep_reading {
                        return;
                    }
                    upstream_done = true;
                }
                () = &mut downstream => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_outside_tcps_range_are_refused() {
        let start = |port| PortForwardStart {
            name: "web".into(),
            port,
            ..Default::default()
        };
        assert_eq!(port_of(&start(8080)).unwrap(), 8080);
        assert!(port_of(&start(0)).is_err());
        let e = port_of(&start(70000)).unwrap_err();
        assert_eq!(e.message(), "port 70000 is not a TCP port (1-65535)");
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_half_close_keeps_the_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut asked = Vec::new();
            conn.read_to_end(&mut asked).await.unwrap();
            conn.write_all(b"answer to ").await.unwrap();
            conn.write_all(&asked).await.unwrap();
        });
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (in_tx, in_rx) = mpsc::channel(4);
        let mut output = relay(socket, ReceiverStream::new(in_rx), CancellationToken::new());
        in_tx
            .send(Ok(PortForwardInput {
                input: Some(Input::Data(b"ping".to_vec())),
            }))
            .await
            .unwrap();
        in_tx
            .send(Ok(PortForwardInput {
                input: Some(Input::CloseWrite(true)),
            }))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(m) = tokio::time::timeout(Duration::from_secs(5), output.next())
            .await
            .unwrap()
        {
            got.extend(m.unwrap().data);
        }
        assert_eq!(got, b"answer to ping");
        server.await.unwrap();
    }
}
