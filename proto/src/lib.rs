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
pub mod watch_event;

/// The generated modules, nested as the proto packages are (`skiff.v1`,
/// `skiff.api.v1`, `skiff.raft.v1`) so cross-package paths resolve.
#[allow(clippy::all, rust_2018_idioms, missing_docs)]
mod skiff {
    pub mod v1 {
        tonic::include_proto!("skiff.v1");
        include!(concat!(env!("OUT_DIR"), "/skiff.v1.shrink.rs"));
    }
    pub mod api {
        pub mod v1 {
            tonic::include_proto!("skiff.api.v1");
            /// Written by hand: see [`crate::watch_event`].
            pub use crate::watch_event::WatchEvent;
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

impl api::Object {
    /// Gives back the spare capacity of the object's lists (see
    /// `v1::Pod::shrink_to_fit`): what a long-lived decoded copy, such as
    /// the master's object cache holds, should do after decoding.
    pub fn shrink_to_fit(&mut self) {
        use api::object::Kind;
        match &mut self.kind {
            Some(Kind::Namespace(o)) => o.shrink_to_fit(),
            Some(Kind::Node(o)) => o.shrink_to_fit(),
            Some(Kind::Pod(o)) => o.shrink_to_fit(),
            Some(Kind::Service(o)) => o.shrink_to_fit(),
            Some(Kind::Endpoints(o)) => o.shrink_to_fit(),
            Some(Kind::Deployment(o)) => o.shrink_to_fit(),
            Some(Kind::ReplicaSet(o)) => o.shrink_to_fit(),
            Some(Kind::Secret(o)) => o.shrink_to_fit(),
            Some(Kind::Generic(o)) => {
                o.shrink_to_fit();
                // A document's fields: one list of bytes.
                o.content.shrink_to_fit();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::{api, v1};

    /// A decoded pod's lists hold only their items, however prost grew them.
    #[test]
    fn shrink_to_fit_leaves_no_spare_room_in_a_decoded_pod() {
        let pod = v1::Pod {
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "app".into(),
                    volume_mounts: vec![v1::VolumeMount::default()],
                    ..Default::default()
                }],
                volumes: vec![v1::Volume {
                    projected: Some(Box::new(v1::ProjectedVolumeSource {
                        sources: vec![v1::VolumeProjection::default(); 3],
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                conditions: vec![v1::PodCondition::default()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let object = api::Object {
            kind: Some(api::object::Kind::Pod(pod)),
        };
        let mut decoded = api::Object::decode(object.encode_to_vec().as_slice()).unwrap();
        let spare = |o: &api::Object| {
            let Some(api::object::Kind::Pod(pod)) = &o.kind else {
                panic!("not a pod");
            };
            let spec = pod.spec.as_ref().unwrap();
            let sources = &spec.volumes[0].projected.as_ref().unwrap().sources;
            let status = pod.status.as_ref().unwrap();
            [
                spec.containers.capacity() - spec.containers.len(),
                spec.containers[0].volume_mounts.capacity() - 1,
                spec.volumes.capacity() - 1,
                sources.capacity() - sources.len(),
                status.conditions.capacity() - 1,
            ]
        };
        // prost pushes each item; a Vec grows to room for four at once.
        assert_ne!(
            spare(&decoded),
            [0; 5],
            "decoding left no spare room to give back"
        );
        decoded.shrink_to_fit();
        assert_eq!(spare(&decoded), [0; 5]);
        assert_eq!(decoded, object);
    }
}
