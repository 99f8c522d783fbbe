//! The agent's side of the agent protocol (`skiff.node.v1.Nodes`, plus the
//! List/Watch calls of `skiff.api.v1.Api`). Every streaming call to the
//! masters is a background task that reconnects with backoff on its own,
//! over one shared list of masters ([`Masters`]):
//!
//! - [`heartbeat`]: the node registers, then streams a heartbeat every
//!   interval to the leader, following `x-skiff-leader` when a follower
//!   refuses; the node's resource usage readings ride on it
//!   ([`UsageReading`]);
//! - [`pod_watch`]: every pod bound to this node, turned into [`Desired`]
//!   changes on an mpsc receiver for the pod manager, with a complete list
//!   after each connect;
//! - [`status_report`]: the newest status of each pod, retried until a
//!   master takes it, and the confirmation that a pod being deleted is
//!   torn down;
//! - [`events`]: Kubernetes Events about the node and its pods, batched,
//!   best effort (dropped and counted when no master takes them);
//! - [`cluster_objects`]: every object of some kinds (Nodes; Services and
//!   Endpoints) as a `tokio::sync::watch` receiver, which the agent follows
//!   into the overlay and the Service rules, kept current from watch
//!   events in a copy of its own ([`encoded_objects`]);
//! - [`config_objects`]: the ConfigMaps, Secrets, PersistentVolumeClaims
//!   and PersistentVolumes the pods use, read one by one when a pod worker
//!   (or the local volume clean-up) asks ([`ConfigSource`]), not a stream.
//!
//! A task whose receivers are all dropped ends, as does every task on the
//! shutdown token. With no master reachable the tasks keep retrying and the
//! pods keep running; nothing here blocks the pod manager.
//!
//! The types crossing to the pod manager ([`Desired`] in, [`StatusReport`]
//! out) and from the resource usage sampler ([`UsageReading`]) are defined
//! here, so this module needs nothing of the pods. Hollow
//! nodes (`skiff-e2e`) use the same code, so benchmarks measure this client.

pub mod cluster_objects;
pub mod config_objects;
pub mod encoded_objects;
pub mod events;
pub mod heartbeat;
pub mod masters;
pub mod pod_watch;
mod reconnect;
pub mod registration;
pub mod status_report;

#[cfg(test)]
mod fake_master;

use std::collections::HashSet;
use std::time::Instant;

use skiff_proto::node::NodeResourceUsage;
use skiff_proto::v1;

pub use cluster_objects::{follow_kinds, KindsReceiver, KindsSnapshot};
pub use config_objects::{
    ConfigData, ConfigKind, ConfigSource, FetchError, MasterConfigSource, ServiceAccountToken,
    StaticConfigSource, StorageObject, TokenFor, TokenWanted,
};
pub use events::{event_channel, event_loop, EventKind, EventSender};
pub use heartbeat::{heartbeat_loop, send_heartbeats, EveryBeat, HeartbeatTap};
pub use masters::Masters;
pub use pod_watch::watch_loop;
pub use registration::{register, wait_pod_cidr};
pub use status_report::{report_statuses, status_loop};

/// A change in what should run on this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    /// This pod should run (new or changed).
    Upsert(Box<v1::Pod>),
    /// The pod with this UID was deleted.
    Delete(String),
    /// The master's complete list: these UIDs, and no others.
    Synced(HashSet<String>),
}

/// What a node tells the masters about one of its pods: its status or,
/// once the pod is being deleted and torn down here, that it may go.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub status: v1::PodStatus,
    /// The pod is being deleted (`deletionTimestamp`) and nothing of it is
    /// left on the node: sent as `ConfirmPodDeletion` (the kubelet's final
    /// delete), which removes it, instead of the status.
    pub torn_down: bool,
}

/// The node's newest resource usage reading, waiting for a heartbeat to
/// carry it to the leader.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReading {
    /// When its window ended: its age goes with it (`age_millis`, filled
    /// in as it is sent).
    pub taken: Instant,
    pub usage: NodeResourceUsage,
}

/// Where the heartbeats find the newest reading (`None` before the
/// first): the sampler's `watch` receiver.
pub type UsageFeed = tokio::sync::watch::Receiver<Option<UsageReading>>;
