//! Who may do what. Identity comes only from the client certificate the
//! TLS handshake verified ([`PeerInfo`]); no request field can claim one.
//!
//! - Admins may do everything; so may masters, which relay requests they
//!   have already authorized.
//! - A node may read Nodes (for the overlay), Services and Endpoints, and
//!   its own pods; it may write only its own Node (not its spec: podCIDR,
//!   taints and unschedulable are the cluster's), its heartbeats, and the
//!   status of pods bound to it.
//!
//! Anything else is refused with PermissionDenied and logged.

use skiff_proto::api::object::Kind as Body;
use skiff_security::{Identity, PeerInfo};
use tonic::{Request, Status};

use crate::objects::Kind;
use crate::store::state_machine::ObjectStore;

/// The verified identity behind a request.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    PeerInfo::of(request)
        .and_then(|p| p.identity.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate signed by the cluster CA is required")
        })
}

/// Refuses `identity` doing `action`, and logs it.
pub fn denied(identity: &Identity, action: &str) -> Status {
    tracing::warn!(%identity, action, "permission denied");
    Status::permission_denied(format!("{identity} may not {action}"))
}

/// Whether `pod` in `namespace` is bound to `node` (in this replica).
pub fn pod_bound_to(store: &ObjectStore, namespace: &str, pod: &str, node: &str) -> bool {
    let namespace = if namespace.is_empty() {
        crate::writer::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    matches!(
        store.get(Kind::Pod, namespace, pod).ok().flatten().and_then(|o| o.kind),
        Some(Body::Pod(p)) if p.spec.as_ref().is_some_and(|s| s.node_name == node)
    )
}

/// Get, List or Watch of `kind` (`name` for a Get).
pub fn may_read(
    store: &ObjectStore,
    identity: &Identity,
    kind: Kind,
    namespace: &str,
    name: Option<&str>,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "read")),
    };
    let allowed = match kind {
        Kind::Node | Kind::Service | Kind::Endpoints => true,
        Kind::Pod => name.is_some_and(|p| pod_bound_to(store, namespace, p, node)),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let what = match name {
            Some(n) => format!("read {kind} {n:?}"),
            None => format!("list or watch {}", kind.plural()),
        };
        Err(denied(identity, &what))
    }
}

/// Update or UpdateStatus of `object` (of `kind`, named `name`).
pub fn may_update(
    store: &ObjectStore,
    identity: &Identity,
    object: &skiff_proto::api::Object,
    kind: Kind,
    namespace: &str,
    name: &str,
    status_only: bool,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "write")),
    };
    let allowed = match kind {
        Kind::Node if name == node && !status_only => {
            if !same_node_spec(store, object, name) {
                return Err(denied(
                    identity,
                    "change its own Node's spec (podCIDR, taints, unschedulable are the cluster's)",
                ));
            }
            true
        }
        Kind::Node => name == node,
        Kind::Pod => status_only && pod_bound_to(store, namespace, name, node),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(denied(identity, &format!("update {kind} {name:?}")))
    }
}

/// Calls only admins and masters may make (create, delete, logs, cluster
/// membership).
pub fn privileged(identity: &Identity, action: &str) -> Result<(), Status> {
    if identity.is_privileged() {
        Ok(())
    } else {
        Err(denied(identity, action))
    }
}

/// Calls a node makes about itself.
pub fn is_self(identity: &Identity, node: &str, action: &str) -> Result<(), Status> {
    match identity {
        i if i.is_privileged() => Ok(()),
        Identity::Node(n) if n == node => Ok(()),
        _ => Err(denied(identity, &format!("{action} for node {node:?}"))),
    }
}

/// Whether `object` (a Node) keeps the spec the stored Node `name` has.
/// An update based on an older version passes here: the store refuses it
/// as a conflict.
fn same_node_spec(store: &ObjectStore, object: &skiff_proto::api::Object, name: &str) -> bool {
    let stored = store.get(Kind::Node, "", name).ok().flatten();
    match (stored.and_then(|o| o.kind), &object.kind) {
        (Some(Body::Node(have)), Some(Body::Node(want))) => {
            let version = |n: &skiff_proto::v1::Node| {
                n.metadata
                    .as_ref()
                    .map(|m| m.resource_version.clone())
                    .unwrap_or_default()
            };
            let stale = !version(want).is_empty() && version(want) != version(&have);
            stale || have.spec.unwrap_or_default() == want.spec.clone().unwrap_or_default()
        }
        _ => false,
    }
}
