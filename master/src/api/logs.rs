//! `PodLogs`: container logs, which live on the pod's node. The master
//! finds the pod's node, dials that node's agent at its InternalIP and the
//! port the node publishes (`status.daemonEndpoints.kubeletEndpoint.Port`)
//! and relays the agent's stream, as the Kubernetes API server proxies to
//! the kubelet.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{LogChunk, PodLogsRequest};
use skiff_proto::node::agent_logs_client::AgentLogsClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::transport::ClientTransport;
use crate::store::state_machine::ObjectStore;
use skiff_objects::{pods, Kind};

/// The node of `request`'s pod and its agent's address.
pub fn agent_address(
    store: &ObjectStore,
    request: &PodLogsRequest,
) -> Result<(String, String), Status> {
    pod_agent_address(store, &request.namespace, &request.name)
}

/// The node of pod `namespace/name` (the default namespace when empty) and
/// its agent's address; also what exec and port-forward dial.
pub fn pod_agent_address(
    store: &ObjectStore,
    namespace: &str,
    name: &str,
) -> Result<(String, String), Status> {
    let namespace = if namespace.is_empty() {
        crate::writer::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    let pod = store
        .get(Kind::Pod, namespace, name)
        .map_err(|e| Status::internal(e.to_string()))?
        .filter(pods::is_pod);
    let Some(pod) = pod else {
        return Err(Status::not_found(format!(
            "pod {namespace}/{} not found",
            name
        )));
    };
    let node_name = pods::bound_node(&pod);
    if node_name.is_empty() {
        return Err(Status::failed_precondition(format!(
            "pod {namespace}/{} is not scheduled to a node yet",
            name
        )));
    }
    let node = match store
        .get(Kind::Node, "", &node_name)
        .map_err(|e| Status::internal(e.to_string()))?
        .and_then(|o| o.kind)
    {
        Some(Body::Node(n)) => n,
        _ => {
            return Err(Status::unavailable(format!(
                "node {node_name} is not registered"
            )))
        }
    };
    let status = node.status.unwrap_or_default();
    let ip = status
        .addresses
        .iter()
        .find(|a| a.r#type == "InternalIP")
        .map(|a| a.address.clone())
        .ok_or_else(|| Status::unavailable(format!("node {node_name} publishes no InternalIP")))?;
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::unavailable(format!("node {node_name} publishes no agent port")))?;
    let address = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Ok((node_name, address))
}

/// Opens the agent's log stream and relays it.
/// The agent is dialled over mutual TLS: this master shows its own
/// certificate and expects the node's (`<node>.node.skiff`).
pub async fn relay(
    transport: &ClientTransport,
    node: &str,
    address: String,
    mut request: PodLogsRequest,
) -> Result<ReceiverStream<Result<LogChunk, Status>>, Status> {
    if request.namespace.is_empty() {
        request.namespace = crate::writer::DEFAULT_NAMESPACE.to_string();
    }
    let channel = transport
        .with_server_name(&skiff_security::node_server_name(node))
        .map_err(|e| Status::internal(e.to_string()))?
        .channel(&address)
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut stream = AgentLogsClient::new(channel)
        .logs(request)
        .await
        .map_err(|e| match e.code() {
            tonic::Code::Unavailable => Status::unavailable(format!(
                "cannot reach the agent of node {node} at {address}: {}",
                e.message()
            )),
            _ => e,
        })?
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                next = stream.message() => match next {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
