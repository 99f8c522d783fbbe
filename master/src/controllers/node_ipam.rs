//! Pod subnets: every node gets its own `/24` (by default) of the cluster
//! CIDR as `spec.podCIDR`, written through Raft like any other change. A
//! subnet is free when no Node holds it or a subnet overlapping it (one of
//! another size, from an earlier `--node-cidr-mask-size`), so deleting a
//! node frees its subnet.
//!
//! No allocation scans the Nodes: whether a subnet is held is one lookup in
//! the object cache's pod-subnet index, and a cursor, as in Kubernetes'
//! `cidrset`, remembers where the last free subnet was found; the next
//! search starts just past it and wraps round the cluster CIDR once, so
//! handing out subnets in a row is O(1) each, and subnets freed behind the
//! cursor are handed out again once it wraps. Running one reconcile at a
//! time (`CONCURRENCY = 1`, unlike the other controllers), each waiting for
//! its write to be applied, means the index already holds the previous
//! node's subnet; and the state machine refuses a subnet another Node
//! holds (`WriteError::AddressTaken`), so no subnet is ever held by two
//! nodes whatever a leader's allocator thought.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use skiff_objects::Ipv4Net;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::{IntoObject, Kind};

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

    /// How many node subnets the cluster CIDR holds.
    fn subnet_count(&self) -> u64 {
        let bits = self.node_prefix.saturating_sub(self.cluster.len).min(32);
        1u64 << bits
    }

    /// The `index`-th node subnet of the cluster CIDR.
    fn subnet(&self, index: u64) -> Ipv4Net {
        let step = 1u64 << (32 - u32::from(self.node_prefix.min(32)));
        let first = u64::from(u32::from(self.cluster.addr));
        Ipv4Net::new(
            Ipv4Addr::from((first + index * step) as u32),
            self.node_prefix,
        )
    }

    /// The first subnet from `cursor` on (an index into the cluster CIDR's
    /// node subnets), wrapping round the cluster CIDR once, that `taken`
    /// does not call taken; moves the cursor just past it. `None` when
    /// every subnet is taken. Subnets are asked about in order, and one at
    /// a time: after a run of taken ones, the search stops at the first
    /// free one.
    pub fn next_free(
        &self,
        cursor: &mut u64,
        mut taken: impl FnMut(Ipv4Net) -> bool,
    ) -> Option<Ipv4Net> {
        let count = self.subnet_count();
        let start = *cursor % count;
        for step in 0..count {
            let index = (start + step) % count;
            let candidate = self.subnet(index);
            if !taken(candidate) {
                *cursor = (index + 1) % count;
                return Some(candidate);
            }
        }
        None
    }
}

pub struct NodeIpamController {
    ctx: Context,
    config: PodCidrConfig,
    /// Where the next search for a free subnet starts: just past the last
    /// one handed out (a new leader starts from the first).
    cursor: Mutex<u64>,
    /// Nodes already told that no subnet is left (warned once each).
    waiting: Mutex<std::collections::HashSet<String>>,
}

impl NodeIpamController {
    pub fn new(ctx: Context, config: PodCidrConfig) -> NodeIpamController {
        NodeIpamController {
            ctx,
            config,
            cursor: Mutex::new(0),
            waiting: Default::default(),
        }
    }

    /// A free subnet, from the cursor on; each candidate is one lookup in
    /// the cache's pod-subnet index.
    fn next_free(&self) -> Option<Ipv4Net> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let store = &self.ctx.store;
        let taken = |subnet: Ipv4Net| !store.pod_cidr_holders(subnet).is_empty();
        self.config.next_free(&mut cursor, taken)
    }
}

impl Reconciler for NodeIpamController {
    const NAME: &'static str = "node-ipam";
    const KIND: Kind = Kind::Node;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Node]);
    // Two nodes reconciled at once could be handed the same free subnet
    // (the writes are to different Nodes, so neither conflicts; the state
    // machine would refuse the second, but it would have to retry).
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
        let Some(subnet) = self.next_free() else {
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

    use std::collections::BTreeSet;

    use skiff_proto::api::EventType;
    use skiff_proto::v1;

    use crate::store::cache::{CachedChange, ObjectCache};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// The next free subnet when exactly `held` are held.
    fn next(config: &PodCidrConfig, cursor: &mut u64, held: &BTreeSet<Ipv4Net>) -> Option<String> {
        let subnet = config.next_free(cursor, |s| held.contains(&s));
        subnet.map(|s| s.to_string())
    }

    #[test]
    fn a_free_subnet_is_taken_from_the_cursor_on_and_freed_ones_reused_once_it_wraps() {
        let config = PodCidrConfig::default();
        let mut cursor = 0;
        let mut held: BTreeSet<Ipv4Net> = [net("10.42.0.0/24"), net("10.42.2.0/24")].into();
        assert_eq!(next(&config, &mut cursor, &held).unwrap(), "10.42.1.0/24");
        held.insert(net("10.42.1.0/24"));
        // The search goes on past the last one handed out, skipping held
        // ones; a subnet freed behind the cursor waits for the wrap.
        held.remove(&net("10.42.0.0/24"));
        assert_eq!(next(&config, &mut cursor, &held).unwrap(), "10.42.3.0/24");
        assert_eq!(cursor, 4);

        let small = PodCidrConfig::new(net("10.42.0.0/23"), 24).unwrap();
        let mut cursor = 0;
        let mut held = BTreeSet::new();
        assert_eq!(next(&small, &mut cursor, &held).unwrap(), "10.42.0.0/24");
        held.insert(net("10.42.0.0/24"));
        assert_eq!(next(&small, &mut cursor, &held).unwrap(), "10.42.1.0/24");
        held.insert(net("10.42.1.0/24"));
        assert_eq!(next(&small, &mut cursor, &held), None);
        // Freed: found again once the search wraps round.
        held.remove(&net("10.42.0.0/24"));
        assert_eq!(next(&small, &mut cursor, &held).unwrap(), "10.42.0.0/24");

        let err = PodCidrConfig::new(net("10.42.0.0/16"), 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node subnets of /8 do not fit the cluster CIDR 10.42.0.0/16 (need /16..=/30)"
        );
    }

    fn node(name: &str, pod_cidr: &str) -> CachedChange {
        let object = v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                pod_cidr: pod_cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        CachedChange {
            kind: Kind::Node,
            event_type: EventType::Added,
            object: Arc::new(object.into_object()),
            encoded_len: 10,
        }
    }

    /// The next free subnet by the cache's index, and how many subnets the
    /// search asked the index about.
    fn next_by_index(
        config: &PodCidrConfig,
        cursor: &mut u64,
        cache: &ObjectCache,
    ) -> (Option<String>, usize) {
        let mut asked = 0;
        let subnet = config.next_free(cursor, |s| {
            asked += 1;
            !cache.pod_cidr_holders(s).is_empty()
        });
        (subnet.map(|s| s.to_string()), asked)
    }

    #[test]
    fn subnets_of_another_size_still_block_what_they_overlap() {
        let config = PodCidrConfig::default();
        let cache = ObjectCache::default();
        // A /23 from an earlier --node-cidr-mask-size covers .0 and .1.
        cache.apply(
            &[node("old", "10.42.0.0/23"), node("n3", "10.42.3.0/24")],
            2,
        );
        let mut cursor = 0;
        let (found, _) = next_by_index(&config, &mut cursor, &cache);
        assert_eq!(found.unwrap(), "10.42.2.0/24");
        // A whole /16 of /24s: once .255 is held too, none is left.
        let rest: Vec<CachedChange> = (2..=254)
            .filter(|i| *i != 3)
            .map(|i| node(&format!("n{i}"), &format!("10.42.{i}.0/24")))
            .collect();
        cache.apply(&rest, 3);
        let (found, _) = next_by_index(&config, &mut cursor, &cache);
        assert_eq!(found.unwrap(), "10.42.255.0/24");
        cache.apply(&[node("n255", "10.42.255.0/24")], 4);
        let (found, asked) = next_by_index(&config, &mut cursor, &cache);
        assert_eq!((found, asked), (None, 256), "one full round, no more");
    }

    #[test]
    fn allocating_for_nodes_in_a_row_asks_about_one_subnet_each() {
        // 65,536 node subnets; the first 10,000 held by 10,000 Nodes.
        let config = PodCidrConfig::new(net("10.0.0.0/8"), 24).unwrap();
        let cache = ObjectCache::default();
        let held: Vec<CachedChange> = (0..10_000u64)
            .map(|i| node(&format!("n{i}"), &config.subnet(i).to_string()))
            .collect();
        cache.apply(&held, 1);
        assert_eq!(cache.pod_cidrs_held(), 10_000);
        // A new leader's cursor starts at the first subnet: one pass over
        // the held ones, once.
        let mut cursor = 0;
        let (found, asked) = next_by_index(&config, &mut cursor, &cache);
        assert_eq!(found.as_deref(), Some("10.39.16.0/24"));
        assert_eq!(asked, 10_001);
        // From then on, each node joining costs one lookup, however many
        // Nodes hold subnets; freeing one behind the cursor does not send
        // the search back.
        cache.apply(&[node("new-0", "10.39.16.0/24")], 2);
        let mut freed = node("n5", &config.subnet(5).to_string());
        freed.event_type = EventType::Deleted;
        cache.apply(&[freed], 3);
        for i in 1..=100u64 {
            let (found, asked) = next_by_index(&config, &mut cursor, &cache);
            let expected = config.subnet(10_000 + i).to_string();
            assert_eq!((found.as_deref(), asked), (Some(expected.as_str()), 1));
            let name = format!("new-{i}");
            cache.apply(&[node(&name, &expected)], 3 + i);
        }
        assert_eq!(cache.pod_cidrs_held(), 10_000 + 101 - 1);
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
