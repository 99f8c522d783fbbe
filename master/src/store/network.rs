//! The client side of Raft traffic: openraft's RPCs to a peer master, sent
//! over gRPC (`skiff.raft.v1.RaftPeer`) with bincode payloads, and when
//! each peer last answered them and which release it runs
//! ([`PeerContacts`], [`PeerRelease`]: every answer carries the peer's
//! skiff version and data format in its headers, which masters of a build
//! before them do not send).

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

/// The header of a Raft answer that names the answering master's skiff
/// version (`0.1.0`).
pub const VERSION_HEADER: &str = "skiff-version";
/// The header of a Raft answer that names the data format the answering
/// master reads and writes (`datastore::data_format::CURRENT`); the API's
/// clients name theirs in the same one.
pub const DATA_FORMAT_HEADER: &str = skiff_objects::legacy_bodies::FORMAT_HEADER;

/// Which release a master runs: what a rolling upgrade must know of each
/// before the cluster may write what only a newer release reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRelease {
    /// skiff's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The data format it reads and writes.
    pub data_format: u32,
}

impl PeerRelease {
    /// This build, reading and writing `data_format`.
    pub fn this(data_format: u32) -> PeerRelease {
        PeerRelease {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_format,
        }
    }

    /// Puts the release in `headers` (a Raft answer's).
    pub fn write_to(&self, headers: &mut tonic::metadata::MetadataMap) {
        for (name, value) in [
            (VERSION_HEADER, self.version.clone()),
            (DATA_FORMAT_HEADER, self.data_format.to_string()),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
    }

    /// The release `headers` name; `None` when they name none, or not
    /// readably (a master of a build before these headers).
    pub fn read_from(headers: &tonic::metadata::MetadataMap) -> Option<PeerRelease> {
        let text = |name: &str| headers.get(name)?.to_str().ok().map(str::to_owned);
        Some(PeerRelease {
            version: text(VERSION_HEADER).filter(|v| !v.is_empty())?,
            data_format: text(DATA_FORMAT_HEADER)?.parse().ok()?,
        })
    }
}

/// When each peer last answered a Raft RPC of this master's (a leader's
/// heartbeats included): how `skiff cluster members` tells a live member
/// from a dead one, which openraft 0.9's metrics (the replicated position
/// only) cannot in an idle cluster; and the release each named in its
/// last answer.
#[derive(Clone)]
pub struct PeerContacts {
    own: PeerRelease,
    last: Arc<Mutex<HashMap<NodeId, Contact>>>,
}

/// A peer's last answer.
#[derive(Debug, Clone)]
struct Contact {
    at: Instant,
    release: Option<PeerRelease>,
}

impl PeerContacts {
    /// Contacts of a master running `own`.
    pub fn new(own: PeerRelease) -> PeerContacts {
        PeerContacts {
            own,
            last: Arc::default(),
        }
    }

    pub(crate) fn record(&self, node: NodeId, release: Option<PeerRelease>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let contact = Contact {
            at: Instant::now(),
            release,
        };
        last.insert(node, contact);
    }

    /// How long ago `node` last answered, if it has since this master
    /// started.
    pub fn since(&self, node: NodeId) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&node).map(|c| c.at.elapsed())
    }

    /// The release this master runs.
    pub fn own(&self) -> &PeerRelease {
        &self.own
    }

    /// The release `node` named in its last answer: `None` before it
    /// answered, or when it named none (a build before the headers).
    pub fn release_of(&self, node: NodeId) -> Option<PeerRelease> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&node).and_then(|c| c.release.clone())
    }
}

impl PeerNetwork {
    /// The network of a master running `own`.
    pub fn new(transport: skiff_security::ClientTransport, own: PeerRelease) -> PeerNetwork {
        PeerNetwork {
            transport,
            channels: Default::default(),
            contacts: PeerContacts::new(own),
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
                let release = PeerRelease::read_from(r.metadata());
                self.contacts.record(self.target, release);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_goes_through_headers_and_an_older_builds_answer_names_none() {
        let release = PeerRelease::this(7);
        let mut headers = tonic::metadata::MetadataMap::new();
        release.write_to(&mut headers);
        assert_eq!(headers.get(DATA_FORMAT_HEADER).unwrap(), "7");
        assert_eq!(PeerRelease::read_from(&headers), Some(release.clone()));
        assert_eq!(
            PeerRelease::read_from(&tonic::metadata::MetadataMap::new()),
            None
        );
        let mut unreadable = headers.clone();
        unreadable.insert(DATA_FORMAT_HEADER, "two".parse().unwrap());
        assert_eq!(PeerRelease::read_from(&unreadable), None);

        let contacts = PeerContacts::new(release.clone());
        assert_eq!(contacts.own(), &release);
        assert_eq!((contacts.since(2), contacts.release_of(2)), (None, None));
        contacts.record(2, None);
        assert!(contacts.since(2).is_some());
        assert_eq!(contacts.release_of(2), None, "an older build");
        contacts.record(2, Some(release.clone()));
        assert_eq!(contacts.release_of(2), Some(release));
    }
}
