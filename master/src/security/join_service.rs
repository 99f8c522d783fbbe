//! The join exchange, master side (`skiff.join.v1.Join`): the only calls
//! served without a client certificate. Rate-limited per source address and
//! overall, with small message limits, so a hostile client cannot exhaust
//! the master; every refusal is logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::join::join_server::{Join, JoinServer};
use skiff_proto::join::{
    CaCertificateRequest, CaCertificateResponse, JoinMasterRequest, JoinMasterResponse,
    JoinNodeRequest, JoinNodeResponse,
};
use skiff_security::{node_password, ClusterCa, Identity, JoinToken, PeerInfo, TokenUsage};
use tonic::{Request, Response, Status};

use super::tokens;
use crate::store::state_machine::ObjectStore;
use skiff_objects::Kind;
use skiff_security::join_client::MAX_JOIN_MESSAGE;

/// The gRPC path prefix of the join exchange (left open by the gate).
pub const JOIN_PATH: &str = "/skiff.join.v1.Join/";

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Limits of the join exchange.
#[derive(Debug, Clone, Copy)]
pub struct JoinLimits {
    /// Calls a second from one address, sustained, and the burst allowed.
    pub per_source: (f64, f64),
    /// Calls a second from everyone together, and the burst.
    pub overall: (f64, f64),
}

impl Default for JoinLimits {
    fn default() -> Self {
        JoinLimits {
            per_source: (5.0, 20.0),
            overall: (20.0, 50.0),
        }
    }
}

/// Per-source and overall token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    limits: JoinLimits,
    overall: Mutex<Bucket>,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Addresses tracked at most; older ones are forgotten beyond this.
const MAX_SOURCES: usize = 4096;

fn take(bucket: &mut Bucket, (rate, burst): (f64, f64), now: Instant) -> bool {
    let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
    bucket.tokens = (bucket.tokens + refill).min(burst);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        true
    } else {
        false
    }
}

impl RateLimiter {
    pub fn new(limits: JoinLimits) -> RateLimiter {
        let now = Instant::now();
        RateLimiter {
            limits,
            overall: Mutex::new(Bucket {
                tokens: limits.overall.1,
                at: now,
            }),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call from `source` may go ahead now.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        {
            let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
                let full = self.limits.per_source.1;
                sources.retain(|_, b| b.tokens < full);
                if sources.len() >= MAX_SOURCES {
                    sources.clear();
                }
            }
            let bucket = sources.entry(source).or_insert(Bucket {
                tokens: self.limits.per_source.1,
                at: now,
            });
            if !take(bucket, self.limits.per_source, now) {
                return false;
            }
        }
        let mut overall = self.overall.lock().unwrap_or_else(|p| p.into_inner());
        take(&mut overall, self.limits.overall, now)
    }
}

/// Serves the join exchange for one master.
pub struct JoinService {
    ca: Arc<ClusterCa>,
    server_token: JoinToken,
    store: std::sync::Arc<ObjectStore>,
    limiter: RateLimiter,
}

impl JoinService {
    pub fn new(
        ca: Arc<ClusterCa>,
        server_token: JoinToken,
        store: std::sync::Arc<ObjectStore>,
        limits: JoinLimits,
    ) -> JoinService {
        JoinService {
            ca,
            server_token,
            store,
            limiter: RateLimiter::new(limits),
        }
    }

    pub fn into_server(self) -> JoinServer<JoinService> {
        JoinServer::new(self)
            .max_decoding_message_size(MAX_JOIN_MESSAGE)
            .max_encoding_message_size(MAX_JOIN_MESSAGE)
    }

    fn admit<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let remote = PeerInfo::of(request).map(|p| p.remote);
        let ip = remote.map(|r| r.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !self.limiter.allow(ip, Instant::now()) {
            tracing::warn!(%ip, "join exchange: rate limit exceeded");
            return Err(Status::resource_exhausted(
                "too many join attempts; wait a few seconds and retry",
            ));
        }
        Ok(remote.map(|r| r.to_string()).unwrap_or_default())
    }

    fn check_token(
        &self,
        remote: &str,
        id: &str,
        secret: &str,
        wanted: TokenUsage,
    ) -> Result<(), Status> {
        tokens::check(
            &self.store,
            &self.server_token,
            id,
            secret,
            wanted,
            SystemTime::now(),
        )
        .map_err(|refusal| {
            tracing::warn!(%remote, token = %id, reason = %refusal, "join refused");
            Status::permission_denied(refusal.to_string())
        })
    }
}

impl JoinService {
    /// A name whose Node carries a node password hash joins again only with
    /// that password: the name belongs to the machine that first joined.
    fn check_node_password(&self, remote: &str, node: &str, password: &str) -> Result<(), Status> {
        if password.len() < node_password::MIN_LENGTH {
            return Err(Status::invalid_argument(format!(
                "node password: at least {} characters are required (the agent makes one in <data-dir>/node-password)",
                node_password::MIN_LENGTH
            )));
        }
        let stored = self
            .store
            .get(Kind::Node, "", node)
            .map_err(|e| Status::unavailable(e.to_string()))?
            .and_then(|o| match o.kind {
                Some(Body::Node(n)) => n.metadata,
                _ => None,
            })
            .and_then(|m| m.annotations.get(node_password::ANNOTATION).cloned());
        match stored {
            Some(hash) if !node_password::matches(&hash, password) => {
                tracing::warn!(%remote, %node, "join refused: the node name belongs to another machine (node password differs)");
                Err(Status::permission_denied(format!(
                    "node {node:?} already joined from another machine (its node password differs): \
                     pick another --node-name, or delete the Node (skiff ctl delete node {node}) to hand the name to this machine"
                )))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Join for JoinService {
    async fn ca_certificate(
        &self,
        request: Request<CaCertificateRequest>,
    ) -> Result<Response<CaCertificateResponse>, Status> {
        self.admit(&request)?;
        Ok(Response::new(CaCertificateResponse {
            ca_pem: self.ca.cert_pem().to_owned(),
        }))
    }

    async fn join_node(
        &self,
        request: Request<JoinNodeRequest>,
    ) -> Result<Response<JoinNodeResponse>, Status> {
        let remote = self.admit(&request)?;
        let r = request.into_inner();
        skiff_objects::validation::check_dns_subdomain(&r.node_name)
            .map_err(|e| Status::invalid_argument(format!("node name {:?}: {e}", r.node_name)))?;
        self.check_token(&remote, &r.token_id, &r.token_secret, TokenUsage::Agent)?;
        self.check_node_password(&remote, &r.node_name, &r.node_password)?;
        let identity = Identity::Node(r.node_name.clone());
        let issued = self
            .ca
            .sign_request(
                &r.signing_request,
                &identity,
                &[skiff_security::node_server_name(&r.node_name)],
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%remote, node = %r.node_name, token = %r.token_id, "node joined");
        Ok(Response::new(JoinNodeResponse {
            cert_pem: issued.cert_pem,
        }))
    }

    async fn join_master(
        &self,
        request: Request<JoinMasterRequest>,
    ) -> Result<Response<JoinMasterResponse>, Status> {
        let remote = self.admit(&request)?;
        let r = request.into_inner();
        self.check_token(&remote, &r.token_id, &r.token_secret, TokenUsage::Server)?;
        tracing::info!(%remote, token = %r.token_id, "handing the cluster CA to a joining master");
        Ok(Response::new(JoinMasterResponse {
            ca_pem: self.ca.cert_pem().to_owned(),
            ca_key_pem: self.ca.key_pem().to_owned(),
            server_token: self.server_token.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_is_limited_before_the_rest() {
        let limiter = RateLimiter::new(JoinLimits {
            per_source: (1.0, 3.0),
            overall: (100.0, 100.0),
        });
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(a, t0), "burst of 3 spent");
        assert!(limiter.allow(b, t0), "another source is not affected");
        assert!(
            limiter.allow(a, t0 + Duration::from_millis(1100)),
            "refilled"
        );
    }

    #[test]
    fn everyone_together_is_limited_too() {
        let limiter = RateLimiter::new(JoinLimits {
            per_source: (100.0, 100.0),
            overall: (1.0, 5.0),
        });
        let t0 = Instant::now();
        let allowed = (0..50u8)
            .filter(|i| limiter.allow(IpAddr::from([10, 0, 1, *i]), t0))
            .count();
        assert_eq!(allowed, 5);
    }
}
