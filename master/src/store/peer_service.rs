//! The server side of Raft traffic: hands peers' RPCs to the local openraft
//! instance and returns its answer, `Result` and all, bincode-encoded.
//! Only masters (identity `master:<id>` in their client certificate) may
//! call it. Every answer names this master's release in its headers
//! ([`PeerRelease`]).

use skiff_proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use skiff_proto::raft::RaftPayload;
use tonic::{Request, Response, Status};

use super::network::{PeerRelease, MAX_PEER_MESSAGE};
use super::Raft;

/// Serves `skiff.raft.v1.RaftPeer` for one Raft node.
pub struct PeerService {
    raft: Raft,
    release: PeerRelease,
}

impl PeerService {
    /// The service of a master running `release`.
    pub fn new(raft: Raft, release: PeerRelease) -> PeerService {
        PeerService { raft, release }
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

fn encode<T: serde::Serialize>(
    value: &T,
    release: &PeerRelease,
) -> Result<Response<RaftPayload>, Status> {
    let data = bincode::serialize(value)
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))?;
    let mut response = Response::new(RaftPayload { data });
    release.write_to(response.metadata_mut());
    Ok(response)
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.append_entries(rpc).await, &self.release)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.vote(rpc).await, &self.release)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await, &self.release)
    }
}
