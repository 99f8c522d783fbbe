//! The masters an agent talks to: the addresses it was given, the other
//! members they report, and one HTTP/2 connection (a tonic channel, mutual
//! TLS with the node's certificate) per master that every call multiplexes
//! over. Any master serves reads and the pod watch; writes and heartbeats
//! end up at the leader.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::ClusterStatusRequest;
use skiff_proto::node::nodes_client::NodesClient;
use skiff_security::{ChannelCache, ClientTransport};
use tonic::transport::Channel;

/// HTTP/2 pings on an idle connection, so a master that vanished without
/// closing it (power cut, partition) is noticed within seconds.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The masters this agent knows: those it was given, and the other
/// members they report. Clones share the list and the connections.
#[derive(Clone, Debug)]
pub struct Masters {
    addrs: Arc<RwLock<Vec<String>>>,
    transport: ClientTransport,
    channels: ChannelCache,
}

impl Masters {
    /// `addrs` must not be empty; the first is tried first.
    pub fn new(addrs: Vec<String>, transport: ClientTransport) -> Masters {
        Masters::sharing(addrs, transport, ChannelCache::default())
    }

    /// Like [`Masters::new`], over connections shared with other `Masters`
    /// holding the same `channels`: hollow nodes run many nodes over a few
    /// connections, each node with its own order of masters.
    pub fn sharing(
        addrs: Vec<String>,
        transport: ClientTransport,
        channels: ChannelCache,
    ) -> Masters {
        Masters {
            addrs: Arc::new(RwLock::new(addrs)),
            transport,
            channels,
        }
    }

    /// Every master known so far.
    pub fn known(&self) -> Vec<String> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks master `i` for the cluster's members and remembers them, so
    /// the agent can fail over to masters it was not told about.
    pub(super) async fn learn(&self, i: usize) {
        let Some(mut api) = self.api(i) else {
            return;
        };
        let Ok(status) = api.cluster_status(ClusterStatusRequest {}).await else {
            return;
        };
        let mut addrs = self.addrs.write().unwrap_or_else(|p| p.into_inner());
        for m in status.into_inner().members {
            if !m.api_addr.is_empty() && !addrs.contains(&m.api_addr) {
                tracing::info!(master = %m.api_addr, "learned another master");
                addrs.push(m.api_addr);
            }
        }
    }

    /// The connection to `addr`, made on first use; `None` when `addr` is
    /// not a usable address.
    pub(super) fn channel(&self, addr: &str) -> Option<Channel> {
        self.channels
            .get_or_connect(addr, || {
                self.transport.endpoint(addr).map(|endpoint| {
                    self.transport.channel_on(
                        endpoint
                            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT),
                    )
                })
            })
            .ok()
    }

    /// The address of master `i`, counting round the known ones.
    pub(super) fn nth(&self, i: usize) -> String {
        let addrs = self.addrs.read().unwrap_or_else(|p| p.into_inner());
        addrs[i % addrs.len()].clone()
    }

    /// A client of the public API of master `i`.
    pub fn api(&self, i: usize) -> Option<ApiClient<Channel>> {
        self.api_channel(i).map(ApiClient::new)
    }

    /// The connection to master `i`, for calls made with a codec of the
    /// caller's own (a hollow node's watch that leaves objects encoded).
    pub fn api_channel(&self, i: usize) -> Option<Channel> {
        self.channel(&self.nth(i))
    }

    /// A client of the agent protocol of master `i`.
    pub fn client(&self, i: usize) -> Option<NodesClient<Channel>> {
        self.channel(&self.nth(i)).map(NodesClient::new)
    }
}
