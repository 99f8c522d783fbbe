//! Registering the node: the agent sends the Node as it sees it (capacity,
//! labels, addresses) and the leader stores it and answers with the
//! cluster's ranges and DNS address; then the agent waits for the pod
//! subnet the masters give every node (`spec.podCIDR`), without which it
//! cannot set up the pod network.

use std::time::Duration;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::GetRequest;
use skiff_proto::node::{RegisterRequest, RegisterResponse};
use skiff_proto::v1;
use tokio_util::sync::CancellationToken;

use super::masters::Masters;
use super::reconnect::Reconnect;

/// How often to look for the pod subnet while the masters have not given
/// one yet.
const POD_CIDR_POLL: Duration = Duration::from_millis(300);

/// Registers `node`, trying one master after another with backoff until
/// one takes it; its answer, or `None` on shutdown.
pub async fn register(
    masters: &Masters,
    node: &v1::Node,
    shutdown: &CancellationToken,
) -> Option<RegisterResponse> {
    let mut backoff = Reconnect::new();
    let mut i = 0;
    loop {
        if let Some(mut client) = masters.client(i) {
            let request = RegisterRequest {
                node: Some(node.clone()),
            };
            let registered = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = client.register(request) => r,
            };
            match registered {
                Ok(response) => {
                    tracing::info!(master = %masters.nth(i), "node registered");
                    return Some(response.into_inner());
                }
                Err(e) => tracing::debug!(master = %masters.nth(i), error = %e, "register failed"),
            }
        }
        i += 1;
        if !backoff.wait(shutdown).await {
            return None;
        }
    }
}

/// Waits until the masters have given registered node `name` a pod
/// subnet; `None` on shutdown.
pub async fn wait_pod_cidr(
    masters: &Masters,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<String> {
    let mut i = 0;
    loop {
        if let Some(mut api) = masters.api(i) {
            let got = api
                .get(GetRequest {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: name.to_owned(),
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

#[cfg(test)]
mod tests {
    use skiff_proto::node::ClusterNetwork;
    use tokio_util::sync::CancellationToken;

    use super::register;
    use crate::master_link::fake_master::{node, within, TestPki};

    #[tokio::test]
    async fn registering_hands_back_the_masters_cluster_network() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let network = ClusterNetwork {
            cluster_cidr: "10.150.0.0/16".into(),
            service_cidr: "10.151.0.0/16".into(),
            cluster_dns: "10.151.0.10".into(),
        };
        master.with(|s| s.network = Some(network.clone()));
        let masters = pki.masters(&[&master]);
        let shutdown = CancellationToken::new();
        let pi = node("pi-1");
        let registered = within("registration", register(&masters, &pi, &shutdown));
        let response = registered.await.expect("registered");
        assert_eq!(response.network, Some(network));
        master.with(|s| assert_eq!(s.registered.len(), 1));
        shutdown.cancel();
        assert!(register(&masters, &pi, &shutdown).await.is_none());
    }
}
