//! Sending a request to the leader: served here when this master leads,
//! relayed once to the leader otherwise (marked so it is never relayed
//! twice), with a short wait while an election is in progress.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::transport::ClientTransport;
use super::ApiError;
use crate::cluster::{Cluster, ClusterError};

/// Metadata key marking a request a follower already forwarded.
pub const FORWARDED: &str = "x-skiff-forwarded";
/// How long a request waits for a leader to be elected.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Routes requests to the leader, keeping one connection per leader.
pub struct LeaderRouter {
    cluster: Cluster,
    transport: ClientTransport,
    channels: skiff_security::ChannelCache,
}

enum Route {
    Local,
    Leader(Channel),
}

impl LeaderRouter {
    pub fn new(cluster: Cluster, transport: ClientTransport) -> LeaderRouter {
        LeaderRouter {
            cluster,
            transport,
            channels: Default::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        self.channels.get_or_connect(addr, || {
            self.transport
                .channel(addr)
                .map_err(|e| ApiError::LeaderUnreachable {
                    addr: addr.to_owned(),
                    message: e.to_string(),
                })
        })
    }

    async fn route(&self, forwarded: bool) -> Result<Route, ApiError> {
        if self.cluster.is_leader() {
            return Ok(Route::Local);
        }
        if forwarded {
            // The forwarding master thought we lead; let the client retry
            // rather than bounce the request around.
            return Err(ApiError::NoLeader);
        }
        match self.cluster.wait_for_leader(LEADER_WAIT).await {
            None => Err(ApiError::NoLeader),
            Some((id, _)) if id == self.cluster.id => Ok(Route::Local),
            Some((_, node)) => Ok(Route::Leader(self.channel(&node.api_addr)?)),
        }
    }

    /// Where a request that must run on the leader goes: `None` to serve
    /// it here (this master leads), or the connection to the leader, for
    /// a caller relaying a stream itself (without [`LeaderRouter::on_leader`]'s
    /// deadline). `forwarded`: the request came from another master.
    pub async fn leader_channel(&self, forwarded: bool) -> Result<Option<Channel>, ApiError> {
        match self.route(forwarded).await? {
            Route::Local => Ok(None),
            Route::Leader(channel) => Ok(Some(channel)),
        }
    }

    /// Runs `local` here when this master leads, or relays the request to
    /// the leader with `remote`.
    pub async fn on_leader<Req, Resp, L, LF, R, RF>(
        &self,
        request: Request<Req>,
        local: L,
        remote: R,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        L: Fn(Req) -> LF,
        LF: Future<Output = Result<Resp, ApiError>>,
        R: Fn(Channel, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let message = request.into_inner();
        for _ in 0..2 {
            match self.route(forwarded).await? {
                Route::Leader(channel) => {
                    let mut relayed = Request::new(message.clone());
                    let headers = relayed.metadata_mut();
                    headers.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                    // This master answers its caller in the encoding the
                    // caller reads (`api::for_caller`), whatever the
                    // leader answers in.
                    headers.insert(
                        skiff_objects::legacy_bodies::FORMAT_HEADER,
                        tonic::metadata::MetadataValue::from(
                            skiff_objects::legacy_bodies::LATEST_FORMAT,
                        ),
                    );
                    relayed.set_timeout(Duration::from_secs(30));
                    return remote(channel, relayed).await;
                }
                Route::Local => match local(message.clone()).await {
                    // Leadership moved between routing and proposing.
                    Err(ApiError::Cluster(ClusterError::NotLeader { .. })) if !forwarded => {
                        continue
                    }
                    other => return answer(other),
                },
            }
        }
        Err(ApiError::NoLeader.into())
    }

    /// Runs `local` here, whoever leads, when `here` is set (a
    /// `serializable` read, or a call about this master alone); otherwise
    /// as [`LeaderRouter::on_leader`].
    pub async fn here_or_on_leader<Req, Resp, L, LF, R, RF>(
        &self,
        here: bool,
        request: Request<Req>,
        local: L,
        remote: R,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        L: Fn(Req) -> LF,
        LF: Future<Output = Result<Resp, ApiError>>,
        R: Fn(Channel, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        if here {
            return answer(local(request.into_inner()).await);
        }
        self.on_leader(request, local, remote).await
    }
}

/// The gRPC answer for a call served on this master.
fn answer<Resp>(served: Result<Resp, ApiError>) -> Result<Response<Resp>, Status> {
    served.map(Response::new).map_err(Status::from)
}
