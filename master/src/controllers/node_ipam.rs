//! Pod subnets: every node gets its own `/24` (by default) of the cluster
//! CIDR as `spec.podCIDR`, written through Raft like any other change. The
//! lowest free subnet is taken; a subnet is free when no Node holds it, so
//! deleting a node frees its subnet, and running one reconcile at a time
//! (`CONCURRENCY = 1`, unlike the other controllers) plus conditional
//! writes mean no subnet is ever held by two nodes.
//!
//! The subnets in use are read once per store revision, so a cluster with
//! more nodes than subnets (the rest wait for one to be freed) does not
//! re-read every Node for every waiting node.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_values::Ipv4Net;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::objects::{IntoObject, Kind};
use crate::store::state_machine::StoredEvent;

/// The cluster CIDR and the size of each node's share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrConfig {
    pub cluster: Ipv4Net,
    pub node_prefix: u8,
}

impl Default for PodCidrConfig {
    fn default() -> Self {
        PodCidrConfig {
            cluster: Ipv4Net {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                len: 16,
            },
            node_prefix: 24,
        }
    }
}

/// Node subnets of a size that cannot be cut from the cluster CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NodePrefixError {
    pub cluster: Ipv4Net,
    pub node_prefix: u8,
}

impl fmt::Display for NodePrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (node_prefix, cluster, min) = (self.node_prefix, self.cluster, self.cluster.len);
        write!(f, "node subnets of /{node_prefix} do not fit ")?;
        write!(f, "the cluster CIDR {cluster} (need /{min}..=/30)")
    }
}

impl PodCidrConfig {
    pub fn new(cluster: Ipv4Net, node_prefix: u8) -> Result<PodCidrConfig, NodePrefixError> {
        if node_prefix < cluster.len || node_prefix > 30 {
            return Err(NodePrefixError {
                cluster,
                node_prefix,
            });
        }
        Ok(PodCidrConfig {
            cluster,
            node_prefix,
        })
    }

    /// The lowest subnet not in `used` (and overlapping none of it).
    pub fn allocate(&self, used: &[Ipv4Net]) -> Option<Ipv4Net> {
        let count = 1u64 << (self.node_prefix - self.cluster.len);
        let step = 1u64 << (32 - self.node_prefix);
        // Subnets of the node size are looked up by address; odd sizes
        // (a changed --node-cidr-mask-size) are checked for overlap.
        let exact: std::collections::HashSet<u32> = used
            .iter()
            .filter(|u| u.len == self.node_prefix)
            .map(|u| u32::from(u.addr))
            .collect();
        let odd: Vec<&Ipv4Net> = used.iter().filter(|u| u.len != self.node_prefix).collect();
        (0..count)
            .map(|i| Ipv4Net {
                addr: Ipv4Addr::from((u32::from(self.cluster.addr) as u64 + i * step) as u32),
                len: self.node_prefix,
            })
            .find(|candidate| {
                !exact.contains(&u32::from(candidate.addr))
                    && !odd
                        .iter()
                        .any(|u| u.contains(candidate) || candidate.contains(u))
            })
    }
}

pub struct NodeIpamController {
    ctx: Context,
    config: PodCidrConfig,
    /// The subnets in use, as of a store revision.
    used: std::sync::Mutex<(u64, Vec<Ipv4Net>)>,
    /// Nodes already told that no subnet is left (warned once each).
    waiting: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl NodeIpamController {
    pub fn new(ctx: Context, config: PodCidrConfig) -> NodeIpamController {
        NodeIpamController {
            ctx,
            config,
            used: std::sync::Mutex::new((u64::MAX, Vec::new())),
            waiting: Default::default(),
        }
    }

    /// The subnets Nodes hold, re-read only when the store has changed.
    fn used(&self) -> Result<Vec<Ipv4Net>, ReconcileError> {
        let revision = self.ctx.store.revision();
        let mut cached = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != revision {
            let (nodes, at) = self.ctx.store.list(Kind::Node, None)?;
            let used = nodes
                .iter()
                .filter_map(|o| match &o.kind {
                    Some(Body::Node(n)) => n.spec.as_ref().and_then(|s| s.pod_cidr.parse().ok()),
                    _ => None,
                })
                .collect();
            *cached = (at, used);
        }
        Ok(cached.1.clone())
    }
}

impl Reconciler for NodeIpamController {
    const NAME: &'static str = "node-ipam";
    const KIND: Kind = Kind::Node;
    // Two nodes reconciled at once could be handed the same free subnet
    // (the writes are to different Nodes, so neither conflicts).
    const CONCURRENCY: usize = 1;

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Node => ObjectKey::of(object).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(Object {
            kind: Some(Body::Node(mut node)),
        }) = self
            .ctx
            .store
            .get(Kind::Node, "", &key.name)?
            .map(Arc::unwrap_or_clone)
        else {
            return Ok(Action::Done);
        };
        if node.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()) {
            return Ok(Action::Done);
        }
        let used = self.used()?;
        let Some(subnet) = self.config.allocate(&used) else {
            let first = self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.name.clone());
            if first {
                tracing::warn!(node = %key.name, cluster = %self.config.cluster, "no free pod subnet left for the node; it waits for one to be freed");
            }
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(60)));
        };
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.name);
        let spec = node.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = subnet.to_string();
        spec.pod_cidrs = vec![subnet.to_string()];
        // Conditional on the version read: a concurrent change retries.
        self.ctx.writer.update(node.into_object()).await?;
        tracing::info!(node = %key.name, pod_cidr = %subnet, "assigned pod subnet");
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_subnet_is_taken_and_freed_ones_reused() {
        let config = PodCidrConfig::default();
        let used: Vec<Ipv4Net> = vec![
            "10.42.0.0/24".parse().unwrap(),
            "10.42.2.0/24".parse().unwrap(),
        ];
        assert_eq!(config.allocate(&used).unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(config.allocate(&[]).unwrap().to_string(), "10.42.0.0/24");
        let small = PodCidrConfig::new("10.42.0.0/23".parse().unwrap(), 24).unwrap();
        let full: Vec<Ipv4Net> = vec![
            "10.42.0.0/24".parse().unwrap(),
            "10.42.1.0/24".parse().unwrap(),
        ];
        assert_eq!(small.allocate(&full), None);
        let err = PodCidrConfig::new("10.42.0.0/16".parse().unwrap(), 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node subnets of /8 do not fit the cluster CIDR 10.42.0.0/16 (need /16..=/30)"
        );
    }

    #[test]
    fn subnets_of_another_size_still_block_what_they_overlap() {
        let config = PodCidrConfig::default();
        // A /23 from an earlier --node-cidr-mask-size covers .0 and .1.
        let used: Vec<Ipv4Net> = vec![
            "10.42.0.0/23".parse().unwrap(),
            "10.42.3.0/24".parse().unwrap(),
        ];
        assert_eq!(config.allocate(&used).unwrap().to_string(), "10.42.2.0/24");
        // A whole /16 of /24s: the 256th is the last, then none.
        let all: Vec<Ipv4Net> = (0..255)
            .map(|i| format!("10.42.{i}.0/24").parse().unwrap())
            .collect();
        assert_eq!(config.allocate(&all).unwrap().to_string(), "10.42.255.0/24");
        let mut full = all;
        full.push("10.42.255.0/24".parse().unwrap());
        assert_eq!(config.allocate(&full), None);
    }
}

#[cfg(test)]
mod loop_tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects};
    use crate::controllers::ObjectReads;
    use std::collections::HashSet;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_joining_together_get_different_subnets() {
        let objects = RecordingObjects::new();
        for i in 0..40 {
            objects.seed_yaml(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}\n"
            ));
        }
        let shutdown = CancellationToken::new();
        let controller = NodeIpamController::new(context(&objects), PodCidrConfig::default());
        tokio::spawn(crate::controllers::run(
            controller,
            objects.clone(),
            shutdown.clone(),
        ));
        let cidrs = |objects: &RecordingObjects| -> Vec<String> {
            objects
                .list(Kind::Node, None)
                .unwrap()
                .0
                .iter()
                .filter_map(|o| match &o.kind {
                    Some(Body::Node(n)) => n.spec.as_ref().map(|s| s.pod_cidr.clone()),
                    _ => None,
                })
                .filter(|c| !c.is_empty())
                .collect()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while cidrs(&objects).len() < 40 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every node got a subnet within 10 s");
        let all = cidrs(&objects);
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), 40, "{all:?}");
        shutdown.cancel();
    }
}
