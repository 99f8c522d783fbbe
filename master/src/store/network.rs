//! The client side of Raft traffic: openraft's RPCs to a peer master, sent
//! over gRPC (`skiff.raft.v1.RaftPeer`) with bincode payloads, and when
//! each peer last answered them ([`PeerContacts`]).

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::raft::raft_peer_client::RaftPeerClient;
use skiff_proto::raft::RaftPayload;
use tonic::transport::Channel;

use super::{MemberNode, NodeId, TypeConfig};

/// Largest Raft message accepted or sent (snapshot chunks are smaller).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// How long a connection attempt to a peer may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on an idle peer connection, so a peer that vanished
/// without closing it (unplugged, partitioned) is noticed and the next
/// call reconnects.
const PEER_KEEPALIVE: Duration = Duration::from_secs(5);

/// Makes gRPC clients for peers, over mutual TLS with this master's
/// certificate. Every client for one peer address shares one HTTP/2
/// connection: openraft asks for a new client for each replication stream
/// and for every leadership confirmation of a linearizable read, and a
/// fresh TCP + TLS handshake per confirmation could not finish within the
/// heartbeat-long deadline openraft gives it on a loaded machine.
#[derive(Clone)]
pub struct PeerNetwork {
    transport: skiff_security::ClientTransport,
    channels: skiff_security::ChannelCache,
    contacts: PeerContacts,
}

/// When each peer last answered a Raft RPC of this master's (a leader's
/// heartbeats included): how `skiff cluster members` tells a live member
/// from a dead one, which openraft 0.9's metrics (the replicated position
/// only) cannot in an idle cluster.
#[derive(Clone, Default)]
pub struct PeerContacts {
    last: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerContacts {
    fn record(&self, node: NodeId) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(node, Instant::now());
    }

    /// How long ago `node` last answered, if it has since this master
    /// started.
    pub fn since(&self, node: NodeId) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&node).map(Instant::elapsed)
    }
}

impl PeerNetwork {
    pub fn new(transport: skiff_security::ClientTransport) -> PeerNetwork {
        PeerNetwork {
            transport,
            channels: Default::default(),
            contacts: PeerContacts::default(),
        }
    }

    /// Where this network records when each peer last answered.
    pub fn contacts(&self) -> PeerContacts {
        self.contacts.clone()
    }

    /// The shared connection to `addr`, made (lazily) on first use.
    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        self.channels.get_or_connect(addr, || {
            let endpoint = self
                .transport
                .endpoint(addr)
                .map_err(|e| PeerError {
                    addr: addr.to_owned(),
                    message: e.to_string(),
                })?
                .connect_timeout(PEER_CONNECT_TIMEOUT)
                .http2_keep_alive_interval(PEER_KEEPALIVE)
                .keep_alive_timeout(PEER_KEEPALIVE)
                .keep_alive_while_idle(true);
            Ok(self.transport.channel_on(endpoint))
        })
    }
}

/// A client for one peer, over the connection shared by all its clients.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Result<RaftPeerClient<Channel>, PeerError>,
    contacts: PeerContacts,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("raft peer {addr}: {message}")]
struct PeerError {
    addr: String,
    message: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        let client = self.channel(&node.raft_addr).map(|channel| {
            RaftPeerClient::new(channel)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE)
        });
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            client,
            contacts: self.contacts.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Req,
        option: &RPCOption,
        method: PeerMethod,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.addr.clone();
        let fail = |message: String| PeerError {
            addr: addr.clone(),
            message,
        };
        let data = bincode::serialize(&rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&fail(e.to_string()))))?;
        // A tonic client is a cheap handle onto the shared connection.
        let mut client = self
            .client
            .clone()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let response = match method {
            PeerMethod::AppendEntries => client.append_entries(request).await,
            PeerMethod::Vote => client.vote(request).await,
            PeerMethod::InstallSnapshot => client.install_snapshot(request).await,
        };
        let payload = match response {
            Ok(r) => {
                self.contacts.record(self.target);
                r.into_inner()
            }
            Err(status) => {
                let err = fail(format!("{:?}: {}", status.code(), status.message()));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
        };
        let result: Result<Resp, E> = bincode::deserialize(&payload.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&fail(e.to_string()))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Which Raft RPC a payload is for.
#[derive(Clone, Copy)]
enum PeerMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(rpc, &option, PeerMethod::AppendEntries).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(rpc, &option, PeerMethod::InstallSnapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(rpc, &option, PeerMethod::Vote).await
    }
}
