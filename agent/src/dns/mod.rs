//! Cluster DNS, answered by every agent for the pods of its own node (no
//! DNS pods, nothing to schedule, and a node cut off from the masters
//! keeps answering from what it last knew).
//!
//! - The server is hickory-server's, listening on the pods' gateway
//!   address (on the `skiff0` bridge), port 53, UDP and TCP (never on 0.0.0.0, where the host's own
//!   resolver may be); the node's nftables table sends the cluster DNS
//!   address (`10.43.0.10:53`, `--cluster-dns`) there
//!   ([`crate::network::nftables`]), so every pod asks its own node.
//! - `cluster.local` and the reverse zones of the cluster's ranges are
//!   answered as CoreDNS's kubernetes plugin answers them
//!   ([`cluster_zone`]), per query, from the agent's own index of Services
//!   and Endpoints ([`index`]), replaced whenever the masters' lists come.
//! - Everything else goes to the node's resolvers ([`forwarder`], from
//!   its resolv.conf: [`resolv_conf`]), through a cache bounded in entries
//!   and bytes ([`cache`]).
//! - Queries from anywhere but the pod network, loopback and the node's
//!   own address are refused ([`handler`]): never an open resolver.
//!
//! - The zones' encoded answers are kept by the bytes that asked
//!   ([`answer_cache`]), so a name asked again is answered by a copy.
//!
//! Memory: the server is two sockets, a thread for UDP and a task for
//! TCP; the caches start empty and are bounded; the index holds only
//! what names need.

pub mod answer_cache;
pub mod cache;
pub mod cluster_zone;
pub mod forwarder;
pub mod handler;
pub mod index;
pub mod resolv_conf;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use skiff_objects::Ipv4Net;
use tokio_util::sync::CancellationToken;

pub use self::cluster_zone::{ClusterZone, CLUSTER_DOMAIN};
pub use self::index::{ClusterIndex, SharedIndex};

use self::cache::ResponseCache;
use self::forwarder::Forwarder;
use self::handler::ClusterDnsHandler;

/// How long a server that could not start or stopped waits to try again.
const RETRY: Duration = Duration::from_secs(10);

/// Why cluster DNS is not answering.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {address} for cluster DNS: {source} (is another DNS server bound to it, or to 0.0.0.0:53 without SO_REUSEADDR?)")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster DNS server stopped: {0}")]
    Stopped(String),
}

/// How this node's cluster DNS is set up.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where it listens: the pods' gateway address, port 53.
    pub listen: SocketAddr,
    /// The cluster DNS Service address pods are given, which the node's
    /// nftables rules send to `listen`.
    pub cluster_dns: Ipv4Addr,
    pub service_cidr: Ipv4Net,
    /// The pod network: where queries may come from, with loopback and
    /// `node_ip`.
    pub cluster_cidr: Ipv4Net,
    /// The node's own address: processes in the host's network (asking
    /// the cluster DNS address) come from it.
    pub node_ip: Ipv4Addr,
    /// The node's resolv.conf: where everything else goes.
    pub resolv_conf: PathBuf,
}

impl DnsConfig {
    fn handler(&self, index: SharedIndex) -> ClusterDnsHandler {
        let zone = ClusterZone {
            cluster_dns: self.cluster_dns,
            service_cidr: self.service_cidr,
            cluster_cidr: self.cluster_cidr,
        };
        // Forwarding to either would come straight back here.
        let refused = vec![self.listen.ip(), IpAddr::V4(self.cluster_dns)];
        let forwarder = Forwarder::new(self.resolv_conf.clone(), refused, ResponseCache::default());
        let loopback = Ipv4Net::new(Ipv4Addr::LOCALHOST, 8);
        let allowed = vec![self.cluster_cidr, loopback, Ipv4Net::new(self.node_ip, 32)];
        ClusterDnsHandler::new(zone, index, forwarder, allowed)
    }
}

/// Answers cluster DNS from `index` until `shutdown`; a listener that
/// cannot be bound (or a server that stops) is logged and tried again
/// every [`RETRY`].
///
/// The server runs on a thread of its own with a single-threaded runtime,
/// as dnsmasq is one process with one thread: a query is read, answered
/// and sent on one thread, never handed between the agent's workers. On
/// two cores, `skiff-bench dns` measured 0.54-0.65 x dnsmasq's queries per
/// second on the agent's workers and 0.98-1.13 x on a thread of its own,
/// at 0.13 and 0.08 CPU seconds per 10,000 queries. If the thread cannot
/// be started, the server runs here instead.
pub async fn run(config: DnsConfig, index: SharedIndex, shutdown: CancellationToken) {
    let (ended, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let (thread_config, thread_index, thread_shutdown) =
        (config.clone(), index.clone(), shutdown.clone());
    let started = std::thread::Builder::new()
        .name("cluster-dns".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(serve_until_shutdown(
                        thread_config,
                        thread_index,
                        thread_shutdown,
                    ));
                }
                Err(e) => tracing::error!(error = %e, "cluster DNS: no runtime for its thread"),
            }
            drop(ended);
        });
    match started {
        Ok(_thread) => {
            // Sent (as a drop) when the thread's server has stopped.
            let _ = ended_rx.await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster DNS: no thread of its own; answering on the agent's runtime");
            serve_until_shutdown(config, index, shutdown).await;
        }
    }
}

/// [`run`]'s server, on whatever runtime runs it.
async fn serve_until_shutdown(config: DnsConfig, index: SharedIndex, shutdown: CancellationToken) {
    loop {
        match handler::serve(config.listen, config.handler(index.clone()), &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, retry_in = ?RETRY, "cluster DNS is not answering"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
