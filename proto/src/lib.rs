//! Wire types for skiff, generated from `proto/` by prost and tonic.
//!
//! - [`v1`]: the Kubernetes-shaped objects (Namespace, Node, Pod, Service,
//!   Endpoints, Deployment, ReplicaSet) with their YAML/JSON mapping.
//! - [`api`]: the public gRPC API (CRUD + Watch) and cluster membership.
//! - [`node`]: the agent protocol (register, heartbeats, pods, status).
//! - [`raft`]: master-to-master Raft traffic.
//! - [`join`]: the join exchange (CA, node certificates, joining masters).
//!
//! Conversions and behaviour live in the crates that use these types.

pub mod grpc_codec;
pub mod json_mapping;

/// The generated modules, nested as the proto packages are (`skiff.v1`,
/// `skiff.api.v1`, `skiff.raft.v1`) so cross-package paths resolve.
#[allow(clippy::all, rust_2018_idioms, missing_docs)]
mod skiff {
    pub mod v1 {
        tonic::include_proto!("skiff.v1");
    }
    pub mod api {
        pub mod v1 {
            tonic::include_proto!("skiff.api.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("skiff.raft.v1");
        }
    }
    pub mod node {
        pub mod v1 {
            tonic::include_proto!("skiff.node.v1");
        }
    }
    pub mod join {
        pub mod v1 {
            tonic::include_proto!("skiff.join.v1");
        }
    }
}

/// Kubernetes-shaped objects (`skiff.v1`).
pub use skiff::v1;

/// The public API (`skiff.api.v1`).
pub use skiff::api::v1 as api;

/// The agent protocol (`skiff.node.v1`).
pub use skiff::node::v1 as node;

/// gRPC metadata key on a heartbeat stream a follower refuses: the
/// leader's API address, for agents (and hollow nodes) to follow.
pub const LEADER_METADATA: &str = "x-skiff-leader";

/// Master-to-master Raft transport (`skiff.raft.v1`).
pub use skiff::raft::v1 as raft;

/// The join exchange (`skiff.join.v1`).
pub use skiff::join::v1 as join;
