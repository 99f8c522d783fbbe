//! Registering the node: the agent sends the Node as it sees it (capacity,
//! labels, addresses) and the leader stores it; then the agent waits for
//! the pod subnet the masters give every node (`spec.podCIDR`), without
//! which it cannot set up the pod network.

use std::time::Duration;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::GetRequest;
use skiff_proto::node::RegisterRequest;
use skiff_proto::v1;
use tokio_util::sync::CancellationToken;

use super::masters::Masters;
use super::reconnect::Reconnect;

/// How often to look for the pod subnet while the masters have not given
/// one yet.
const POD_CIDR_POLL: Duration = Duration::from_millis(300);

/// Registers `node`, trying one master after another with backoff until
/// one takes it; `false` on shutdown.
pub async fn register(masters: &Masters, node: &v1::Node, shutdown: &CancellationToken) -> bool {
    let mut backoff = Reconnect::new();
    let mut i = 0;
    loop {
        if let Some(mut client) = masters.client(i) {
            let request = RegisterRequest {
                node: Some(node.clone()),
            };
            let registered = tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = client.register(request) => r,
            };
            match registered {
                Ok(_) => {
                    tracing::info!(master = %masters.nth(i), "node registered");
                    return true;
                }
                Err(e) => tracing::debug!(master = %masters.nth(i), error = %e, "register failed"),
            }
        }
        i += 1;
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
}

/// Registers the node and waits until the master has given it a pod
/// subnet; `None` on shutdown.
pub async fn wait_pod_cidr(
    masters: &Masters,
    node: &v1::Node,
    shutdown: &CancellationToken,
) -> Option<String> {
    if !register(masters, node, shutdown).await {
        return None;
    }
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut i = 0;
    loop {
        if let Some(mut api) = masters.api(i) {
            let got = api
                .get(GetRequest {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: name.clone(),
                    serializable: false,
                })
                .await;
            if let Ok(o) = got {
                if let Some(Body::Node(n)) = o.into_inner().kind {
                    if let Some(cidr) = n.spec.map(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                        return Some(cidr);
                    }
                }
            } else {
                i += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(POD_CIDR_POLL) => {}
        }
    }
}
