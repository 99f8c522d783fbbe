//! `PodSessions`: exec and port-forward into pods, which run on the pod's
//! node. As with logs ([`super::logs`]), the master authorizes the caller
//! (`create` on `pods/exec` or `pods/portforward`, as Kubernetes names
//! them: admins yes, node identities no), logs the session with who asked,
//! the pod, the container and the command, then dials the agent of the
//! pod's node over mutual TLS and relays both directions of the stream.
//!
//! The REST API (kubectl's WebSocket and SPDY streams) opens the same
//! sessions through [`ApiService::open_exec`] and
//! [`ApiService::open_port_forward`], so both paths share authorization,
//! logging and relaying.

use skiff_proto::api::exec_input::Input as ExecIn;
use skiff_proto::api::pod_sessions_server::{PodSessions, PodSessionsServer};
use skiff_proto::api::port_forward_input::Input as ForwardIn;
use skiff_proto::api::{
    ExecInput, ExecOutput, ExecStart, PortForwardInput, PortForwardOutput, PortForwardStart,
};
use skiff_proto::node::agent_sessions_client::AgentSessionsClient;
use skiff_security::Identity;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::authz::{self, Access, Verb};
use super::logs::pod_agent_address;
use super::transport::ClientTransport;
use super::ApiService;
use crate::objects::Kind;

/// Messages buffered each way before a relay waits for the slower side.
const RELAYED_MESSAGES: usize = 16;

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
    ) -> Result<skiff_proto::v1::Pod, Status> {
        let namespace = Self::namespace_of(namespace);
        let access = Access::new(Verb::Create, Kind::Pod, &namespace, Some(name))
            .with_subresource(subresource);
        authz::authorize(&self.cluster.store, identity, &access)?;
        match self
            .cluster
            .store
            .get(Kind::Pod, &namespace, name)
            .map_err(|e| Status::internal(e.to_string()))?
            .and_then(|o| o.kind)
        {
            Some(skiff_proto::api::object::Kind::Pod(pod)) => Ok(pod),
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
    ) -> Result<ReceiverStream<Result<ExecOutput, Status>>, Status>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        start.namespace = Self::namespace_of(&start.namespace);
        let access = Access::new(
            Verb::Create,
            Kind::Pod,
            &start.namespace,
            Some(start.name.as_str()),
        )
        .with_subresource("exec");
        authz::authorize(&self.cluster.store, identity, &access)?;
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
        let channel = agent_channel(&self.transport, &node, &address)?;
        let (to_agent, from_client) = mpsc::channel(RELAYED_MESSAGES);
        // The first message is in the channel before the call is made, so
        // the agent can answer its headers.
        let _ = to_agent
            .send(ExecInput {
                input: Some(ExecIn::Start(start)),
            })
            .await;
        let forward = tokio::spawn(forward_input(input, to_agent));
        let answer = AgentSessionsClient::new(channel)
            .exec(ReceiverStream::new(from_client))
            .await;
        let output = match answer {
            Ok(r) => r.into_inner(),
            Err(e) => {
                forward.abort();
                return Err(agent_error(e, &node, &address));
            }
        };
        Ok(relay_output(output, forward))
    }

    /// Opens one port-forward connection for `identity` to `start.port` in
    /// the pod; `input` carries the bytes to send.
    pub async fn open_port_forward<S>(
        &self,
        identity: &Identity,
        mut start: PortForwardStart,
        input: S,
    ) -> Result<ReceiverStream<Result<PortForwardOutput, Status>>, Status>
    where
        S: Stream<Item = Result<PortForwardInput, Status>> + Send + Unpin + 'static,
    {
        start.namespace = Self::namespace_of(&start.namespace);
        let access = Access::new(
            Verb::Create,
            Kind::Pod,
            &start.namespace,
            Some(start.name.as_str()),
        )
        .with_subresource("portforward");
        authz::authorize(&self.cluster.store, identity, &access)?;
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
        let channel = agent_channel(&self.transport, &node, &address)?;
        let (to_agent, from_client) = mpsc::channel(RELAYED_MESSAGES);
        let _ = to_agent
            .send(PortForwardInput {
                input: Some(ForwardIn::Start(start)),
            })
            .await;
        let forward = tokio::spawn(forward_input(input, to_agent));
        let answer = AgentSessionsClient::new(channel)
            .port_forward(ReceiverStream::new(from_client))
            .await;
        let output = match answer {
            Ok(r) => r.into_inner(),
            Err(e) => {
                forward.abort();
                return Err(agent_error(e, &node, &address));
            }
        };
        Ok(relay_output(output, forward))
    }
}

/// A channel to the agent of `node`, which must show that node's
/// certificate.
fn agent_channel(
    transport: &ClientTransport,
    node: &str,
    address: &str,
) -> Result<Channel, Status> {
    transport
        .with_server_name(&skiff_security::node_server_name(node))
        .map_err(|e| Status::internal(e.to_string()))?
        .channel(address)
        .map_err(|e| Status::internal(e.to_string()))
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

/// Passes the client's messages to the agent until the client's stream
/// ends (the agent then sees its end) or breaks (ending the call).
async fn forward_input<T, S>(mut input: S, to_agent: mpsc::Sender<T>)
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    while let Some(Ok(message)) = input.next().await {
        if to_agent.send(message).await.is_err() {
            return;
        }
    }
}

/// Relays the agent's answers to the client; when the client stops
/// reading, the call to the agent is dropped, which ends the session there.
fn relay_output<T: Send + 'static>(
    mut output: Streaming<T>,
    forward: tokio::task::JoinHandle<()>,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(RELAYED_MESSAGES);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                next = output.message() => match next {
                    Ok(Some(message)) => {
                        if tx.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        }
        forward.abort();
    });
    ReceiverStream::new(rx)
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
    type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

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

    type PortForwardStream = ReceiverStream<Result<PortForwardOutput, Status>>;

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
