//! The client side of Raft traffic: openraft's RPCs to a peer master, sent
//! over gRPC (`skiff.raft.v1.RaftPeer`) with bincode payloads.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::raft::raft_peer_client::RaftPeerClient;
use skiff_proto::raft::RaftPayload;
use tonic::transport::Channel;

use super::{MemberNode, NodeId, TypeConfig};

/// Largest Raft message accepted or sent (snapshot chunks are smaller).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// Makes one gRPC client per peer, over mutual TLS with this master's
/// certificate.
#[derive(Clone)]
pub struct PeerNetwork {
    pub transport: skiff_security::ClientTransport,
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: skiff_security::ClientTransport,
    client: Option<RaftPeerClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("raft peer {addr}: {message}")]
struct PeerError {
    addr: String,
    message: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            transport: self.transport.clone(),
            client: None,
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, E>>;

impl PeerClient {
    fn client(&mut self) -> Result<RaftPeerClient<Channel>, PeerError> {
        if self.client.is_none() {
            let endpoint = self
                .transport
                .endpoint(&self.addr)
                .map_err(|e| PeerError {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })?
                .connect_timeout(std::time::Duration::from_secs(1));
            let client = RaftPeerClient::new(self.transport.channel_on(endpoint))
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE);
            self.client = Some(client);
        }
        // A tonic client is a cheap handle onto one shared connection.
        Ok(self.client.clone().unwrap_or_else(|| unreachable!()))
    }

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
        let mut client = self
            .client()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let response = match method {
            PeerMethod::AppendEntries => client.append_entries(request).await,
            PeerMethod::Vote => client.vote(request).await,
            PeerMethod::InstallSnapshot => client.install_snapshot(request).await,
        };
        let payload = match response {
            Ok(r) => r.into_inner(),
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
