//! The server side of Raft traffic: hands peers' RPCs to the local openraft
//! instance and returns its answer, `Result` and all, bincode-encoded.
//! Only masters (identity `master:<id>` in their client certificate) may
//! call it.

use skiff_proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use skiff_proto::raft::RaftPayload;
use tonic::{Request, Response, Status};

use super::network::MAX_PEER_MESSAGE;
use super::Raft;

/// Serves `skiff.raft.v1.RaftPeer` for one Raft node.
pub struct PeerService {
    raft: Raft,
}

impl PeerService {
    pub fn new(raft: Raft) -> PeerService {
        PeerService { raft }
    }

    /// The tonic service, with message limits sized for Raft batches.
    pub fn into_server(self) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }
}

fn decode<T: serde::de::DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    skiff_security::PeerInfo::require(
        &request,
        |i| matches!(i, skiff_security::Identity::Master(_)),
        "send Raft traffic; only masters may",
    )?;
    bincode::deserialize(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    bincode::serialize(value)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
