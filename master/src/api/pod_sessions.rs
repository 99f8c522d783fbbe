//! `PodSessions`: exec, attach and port-forward into pods, which run on
//! the pod's node. As with logs ([`super::logs`]), the master authorizes
//! the caller (`create` on `pods/exec`, `pods/attach` or `pods/portforward`,
//! as Kubernetes names them: admins yes, node identities no), logs the
//! session with who asked, the pod, the container and the command, then
//! dials the agent of the pod's node over mutual TLS and relays both
//! directions of the stream.
//!
//! The REST API (kubectl's WebSocket and SPDY streams) opens the same
//! sessions through [`ApiService::open_exec`], [`ApiService::open_attach`]
//! and [`ApiService::open_port_forward`], so both paths share
//! authorization, logging and relaying.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::pod_sessions_server::{PodSessions, PodSessionsServer};
use skiff_proto::api::port_forward_input::Input as ForwardIn;
use skiff_proto::api::{
    ExecInput, ExecOutput, ExecStart, PortForwardInput, PortForwardOutput, PortForwardStart,
};
use skiff_proto::node::agent_sessions_client::AgentSessionsClient;
use skiff_security::Identity;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::authz::{self, Access, Verb};
use super::logs::pod_agent_address;
use super::transport::ClientTransport;
use super::ApiService;
use skiff_objects::Kind;

impl ApiService {
    /// The gRPC service, sharing this API service.
    pub fn pod_sessions_server(api: std::sync::Arc<ApiService>) -> PodSessionsServer<ApiService> {
        PodSessionsServer::from_arc(api)
    }

    fn namespace_of(namespace: &str) -> String {
        if namespace.is_empty() {
            crate::writer::DEFAULT_NAMESPACE.to_owned()
        } else {
            namespace.to_owned()
        }
    }

    /// Whether `identity` may `create` on pod `namespace/name`'s
    /// `subresource` (`exec`, `attach`, `portforward`): every session's
    /// authorization, before the REST upgrade and again when it opens.
    fn authorize_session(
        &self,
        identity: &Identity,
        namespace: &str,
        name: &str,
        subresource: &str,
    ) -> Result<(), Status> {
        let access = Access::new(Verb::Create, Kind::Pod, namespace, Some(name))
            .with_subresource(subresource);
        authz::authorize(&self.cluster.store, identity, &access)?;
        Ok(())
    }

    /// Whether `identity` may open a `subresource` (`exec`, `attach`,
    /// `portforward`) session into pod `namespace/name`, and the pod as
    /// this master's replica has it; what the REST API checks before it
    /// upgrades the connection, so that refusals are plain HTTP answers.
    pub fn check_pod_session(
        &self,
        identity: &Identity,
        namespace: &str,
        name: &str,
        subresource: &str,
    ) -> Result<skiff_objects::pods::Pod, Status> {
        let namespace = Self::namespace_of(namespace);
        self.authorize_session(identity, &namespace, name, subresource)?;
        match self
            .cluster
            .store
            .get(Kind::Pod, &namespace, name)
            .map_err(|e| Status::internal(e.to_string()))?
            .and_then(|o| skiff_objects::pods::read(&o))
        {
            Some(pod) => Ok(pod),
            _ => Err(Status::not_found(format!(
                "pod {namespace}/{name} not found"
            ))),
        }
    }

    /// Opens an exec session for `identity`: `start` says what to run,
    /// `input` carries what follows it (stdin, resizes, end of stdin).
    pub async fn open_exec<S>(
        &self,
        identity: &Identity,
        mut start: ExecStart,
        input: S,
    ) -> Result<SessionOutput<ExecOutput>, Status>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        start.namespace = Self::namespace_of(&start.namespace);
        self.authorize_session(identity, &start.namespace, &start.name, "exec")?;
        if start.command.is_empty() {
            return Err(Status::invalid_argument(
                "exec needs a command to run (after --)",
            ));
        }
        let (node, address) =
            pod_agent_address(&self.cluster.store, &start.namespace, &start.name)?;
        tracing::info!(
            %identity,
            pod = %format!("{}/{}", start.namespace, start.name),
            container = %start.container,
            command = ?start.command,
            tty = start.tty,
            stdin = start.stdin,
            node = %node,
            "exec session"
        );
        let first = ExecInput {
            input: Some(ExecIn::Start(start)),
        };
        let agent = AgentSession {
            transport: &self.transport,
            node: &node,
            address: &address,
        };
        agent
            .relay(first, input, |mut client, messages| async move {
                client.exec(messages).await
            })
            .await
    }

    /// Opens an attach session for `identity` to the container's own
    /// process: `start` says which container and which of its streams
    /// (its `command` is ignored), `input` carries stdin and resizes.
    pub async fn open_attach<S>(
        &self,
        identity: &Identity,
        mut start: ExecStart,
        input: S,
    ) -> Result<SessionOutput<ExecOutput>, Status>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        start.namespace = Self::namespace_of(&start.namespace);
        self.authorize_session(identity, &start.namespace, &start.name, "attach")?;
        start.command.clear();
        if !start.stdin && !start.stdout && !start.stderr {
            return Err(Status::invalid_argument(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        let (node, address) =
            pod_agent_address(&self.cluster.store, &start.namespace, &start.name)?;
        tracing::info!(
            %identity,
            pod = %format!("{}/{}", start.namespace, start.name),
            container = %start.container,
            tty = start.tty,
            stdin = start.stdin,
            node = %node,
            "attach session"
        );
        let first = ExecInput {
            input: Some(ExecIn::Start(start)),
        };
        let agent = AgentSession {
            transport: &self.transport,
            node: &node,
            address: &address,
        };
        agent
            .relay(first, input, |mut client, messages| async move {
                client.attach(messages).await
            })
            .await
    }

    /// Opens one port-forward connection for `identity` to `start.port` in
    /// the pod; `input` carries the bytes to send.
    pub async fn open_port_forward<S>(
        &self,
        identity: &Identity,
        mut start: PortForwardStart,
        input: S,
    ) -> Result<SessionOutput<PortForwardOutput>, Status>
    where
        S: Stream<Item = Result<PortForwardInput, Status>> + Send + Unpin + 'static,
    {
        start.namespace = Self::namespace_of(&start.namespace);
        self.authorize_session(identity, &start.namespace, &start.name, "portforward")?;
        if start.port == 0 || start.port > u32::from(u16::MAX) {
            return Err(Status::invalid_argument(format!(
                "port {} is not a TCP port (1-65535)",
                start.port
            )));
        }
        let (node, address) =
            pod_agent_address(&self.cluster.store, &start.namespace, &start.name)?;
        tracing::info!(
            %identity,
            pod = %format!("{}/{}", start.namespace, start.name),
            port = start.port,
            node = %node,
            "port-forward connection"
        );
        let first = PortForwardInput {
            input: Some(ForwardIn::Start(start)),
        };
        let agent = AgentSession {
            transport: &self.transport,
            node: &node,
            address: &address,
        };
        agent
            .relay(first, input, |mut client, messages| async move {
                client.port_forward(messages).await
            })
            .await
    }
}

/// The agent a session goes to: the node's name (whose certificate it
/// must show) and its address.
struct AgentSession<'a> {
    transport: &'a ClientTransport,
    node: &'a str,
    address: &'a str,
}

impl AgentSession<'_> {
    /// Opens a session on the agent with `call` (its `Exec` or
    /// `PortForward`) and relays both ways, exec and port-forward alike:
    /// `first`, then the client's `input`, go to the agent; its answers
    /// are the returned stream. There is no relaying task of its own:
    /// the HTTP/2 connection's body task pulls the client's messages
    /// straight from `input`, and the caller reads the agent's answers
    /// straight from the call, so each chunk crosses no extra channel.
    /// The client's input ends when its stream ends or breaks, or when
    /// the agent's answers end or the returned stream is dropped (the
    /// client went away; dropping the call ends the session at the agent).
    async fn relay<I, O, S, C, F>(
        &self,
        first: I,
        input: S,
        call: C,
    ) -> Result<SessionOutput<O>, Status>
    where
        I: Send + Unpin + 'static,
        S: Stream<Item = Result<I, Status>> + Send + Unpin + 'static,
        C: FnOnce(AgentSessionsClient<Channel>, ClientInput<I, S>) -> F,
        F: Future<Output = Result<Response<Streaming<O>>, Status>>,
    {
        let channel = self
            .transport
            .with_server_name(&skiff_security::node_server_name(self.node))
            .map_err(|e| Status::internal(e.to_string()))?
            .channel(self.address)
            .map_err(|e| Status::internal(e.to_string()))?;
        let input_ends = CancellationToken::new();
        let messages = ClientInput {
            // Sent as soon as the call is made, so the agent can answer
            // its headers.
            first: Some(first),
            rest: input,
            ended: Box::pin(input_ends.clone().cancelled_owned()),
            done: false,
        };
        match call(AgentSessionsClient::new(channel), messages).await {
            Ok(response) => Ok(SessionOutput {
                output: response.into_inner(),
                input_ends,
            }),
            // The client's input went with the failed call.
            Err(e) => Err(agent_error(e, self.node, self.address)),
        }
    }
}

/// The agent's refusal, with an unreachable agent named.
fn agent_error(e: Status, node: &str, address: &str) -> Status {
    match e.code() {
        tonic::Code::Unavailable if e.message().contains("transport") => {
            Status::unavailable(format!(
                "cannot reach the agent of node {node} at {address}: {}",
                e.message()
            ))
        }
        _ => e,
    }
}

/// What goes to the agent: the session's first message, then the
/// client's, until the client's stream ends or breaks (the agent then
/// sees the end of its input) or the session's answers end.
pub struct ClientInput<I, S> {
    first: Option<I>,
    rest: S,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl<I, S> Stream for ClientInput<I, S>
where
    I: Unpin,
    S: Stream<Item = Result<I, Status>> + Unpin,
{
    type Item = I;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        if this.done || this.ended.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.rest).poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Some(message)),
            Poll::Ready(Some(Err(_)) | None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A session's answers from the agent, read by whoever serves the client
/// (the gRPC stream of `skiff ctl`, kubectl's WebSocket or SPDY streams).
/// Once they end or fail, or this stream is dropped, the client's input
/// stops going to the agent; dropping it also ends the call there.
pub struct SessionOutput<T> {
    output: Streaming<T>,
    input_ends: CancellationToken,
}

impl<T> Stream for SessionOutput<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.output).poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            this.input_ends.cancel();
        }
        next
    }
}

impl<T> Drop for SessionOutput<T> {
    fn drop(&mut self) {
        self.input_ends.cancel();
    }
}

/// Reads the first message of a client's stream.
async fn first<T>(input: &mut Streaming<T>, what: &str) -> Result<T, Status> {
    match input.message().await? {
        Some(m) => Ok(m),
        None => Err(Status::invalid_argument(format!(
            "the {what} stream ended before it began"
        ))),
    }
}

#[tonic::async_trait]
impl PodSessions for ApiService {
    type ExecStream = SessionOutput<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let identity = authz::identity(&request)?;
        let mut input = request.into_inner();
        let start = match first(&mut input, "exec").await?.input {
            Some(ExecIn::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "an exec session must begin with what to run (ExecStart)",
                ))
            }
        };
        Ok(Response::new(
            self.open_exec(&identity, start, input).await?,
        ))
    }

    type AttachStream = SessionOutput<ExecOutput>;

    async fn attach(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let identity = authz::identity(&request)?;
        let mut input = request.into_inner();
        let start = match first(&mut input, "attach").await?.input {
            Some(ExecIn::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "an attach session must begin with where to attach (ExecStart)",
                ))
            }
        };
        Ok(Response::new(
            self.open_attach(&identity, start, input).await?,
        ))
    }

    type PortForwardStream = SessionOutput<PortForwardOutput>;

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let identity = authz::identity(&request)?;
        let mut input = request.into_inner();
        let start =
            match first(&mut input, "port-forward").await?.input {
                Some(ForwardIn::Start(start)) => start,
                _ => return Err(Status::invalid_argument(
                    "a port-forward connection must begin with where to connect (PortForwardStart)",
                )),
            };
        Ok(Response::new(
            self.open_port_forward(&identity, start, input).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_stream::StreamExt;

    use super::*;

    fn input<S>(first: i32, rest: S, ended: &CancellationToken) -> ClientInput<i32, S> {
        ClientInput {
            first: Some(first),
            rest,
            ended: Box::pin(ended.clone().cancelled_owned()),
            done: false,
        }
    }

    #[tokio::test]
    async fn the_agent_gets_the_start_then_the_clients_messages_until_they_break() {
        let rest = tokio_stream::iter(vec![
            Ok(2),
            Ok(3),
            Err(Status::cancelled("the client went away")),
            Ok(4),
        ]);
        let got: Vec<i32> = input(1, rest, &CancellationToken::new()).collect().await;
        assert_eq!(got, [1, 2, 3]);
    }

    #[tokio::test]
    async fn the_end_of_the_agents_answers_ends_the_clients_input() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<i32, Status>>(4);
        tx.send(Ok(7)).await.unwrap();
        let ended = CancellationToken::new();
        let mut messages = input(6, ReceiverStream::new(rx), &ended);
        assert_eq!(messages.next().await, Some(6));
        assert_eq!(messages.next().await, Some(7));
        ended.cancel();
        // The client's stream is still open.
        assert_eq!(messages.next().await, None);
        assert_eq!(messages.next().await, None);
        drop(tx);
    }
}
