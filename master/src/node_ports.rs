//! NodePorts for Services, from `--service-node-port-range` (30000-32767
//! unless told otherwise), as Kubernetes' allocator gives them: every port
//! of a Service of type NodePort, or LoadBalancer (unless
//! `allocateLoadBalancerNodePorts: false`), without a `nodePort` gets a free
//! one; one that names a port gets it if it is in the range and free. The
//! same Service may use one number for TCP and UDP of the same port, as in
//! Kubernetes; two Services never share one, whatever the protocol.
//!
//! An update keeps the nodePorts a port had (matched by port number and
//! protocol) when the new spec leaves them out, as `kubectl apply` of a
//! manifest without them expects; a change to a type without nodePorts
//! (ClusterIP) drops the ones it had, and a Service that drops a port or is
//! deleted frees its numbers, since which numbers are held comes from the
//! object cache's nodePort index (no scan of the Services), kept by every
//! replica from the applied log. Dynamic choices start in the upper part
//! of the range and wrap round from a cursor (O(1) amortised), leaving the
//! lower band for ports people pick (Kubernetes' KEP-3668). Between
//! choosing a port and the write being applied, it is reserved on the
//! leader ([`NodePortReservation`]); the state machine refuses a nodePort
//! another Service holds whatever the allocator thought
//! (`WriteError::AddressTaken`).

use std::collections::HashSet;
use std::sync::Mutex;

use skiff_proto::v1;

use crate::store::cache::{Key, ObjectCache};

/// Kubernetes' and k3s' default range.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

/// `spec.type` values whose ports get nodePorts.
const NODE_PORT: &str = "NodePort";
const LOAD_BALANCER: &str = "LoadBalancer";

/// Why a Service cannot have the nodePorts it asked for (or any). Nothing
/// is stored when this is returned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodePortError {
    #[error("--service-node-port-range {given:?}: not FIRST-LAST with 1 <= FIRST <= LAST <= 65535 (e.g. 30000-32767)")]
    BadRange { given: String },
    #[error("spec.ports[{index}].nodePort: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {range}")]
    OutOfRange {
        index: usize,
        port: i32,
        range: NodePortRange,
    },
    #[error("spec.ports[{index}].nodePort: Invalid value: {port}: provided port is already allocated (to Service {owner}); leave it out to be given a free one")]
    InUse {
        index: usize,
        port: u16,
        owner: String,
    },
    #[error("spec.ports[{index}].nodePort: Duplicate value: {port}/{protocol} is used by spec.ports[{first}] too")]
    Duplicate {
        index: usize,
        first: usize,
        port: u16,
        protocol: String,
    },
    #[error(
        "spec.ports[{index}].nodePort: Forbidden: may not be used when `type` is {service_type:?}"
    )]
    Forbidden { index: usize, service_type: String },
    #[error("spec.ports: no free nodePort left in {range}")]
    Exhausted { range: NodePortRange },
}

/// The ports nodePorts come from, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for NodePortRange {
    fn default() -> Self {
        NodePortRange {
            first: 30000,
            last: 32767,
        }
    }
}

impl std::fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for NodePortRange {
    type Err = NodePortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NodePortError::BadRange {
            given: s.to_owned(),
        };
        let (first, last) = s.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(NodePortRange { first, last })
    }
}

impl NodePortRange {
    fn contains(&self, port: i32) -> bool {
        (i32::from(self.first)..=i32::from(self.last)).contains(&port)
    }

    fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// How many ports at the bottom of the range dynamic choices avoid
    /// while others are free: min(max(16, size/32), 128), as Kubernetes.
    fn static_band(&self) -> u32 {
        (self.size() / 32).clamp(16, 128).min(self.size() - 1)
    }
}

/// Whether the ports of a Service with `spec` get nodePorts.
pub fn wants_node_ports(spec: &v1::ServiceSpec) -> bool {
    spec.r#type == NODE_PORT
        || (spec.r#type == LOAD_BALANCER && spec.allocate_load_balancer_node_ports != Some(false))
}

/// The allocator: the range, the ports chosen for writes not yet applied,
/// and where the next search starts.
#[derive(Debug)]
pub struct NodePorts {
    range: NodePortRange,
    pending: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    reserved: HashSet<u16>,
    /// The next port to try, as an offset into the range.
    cursor: u32,
}

/// Ports held for a Service being written; released when dropped, which
/// the writer does once the write is applied (the cache then holds them)
/// or has failed (they are free again).
#[derive(Debug)]
pub struct NodePortReservation<'a> {
    ports: &'a NodePorts,
    held: Vec<u16>,
}

impl Drop for NodePortReservation<'_> {
    fn drop(&mut self) {
        let mut pending = self.ports.pending();
        for port in &self.held {
            pending.reserved.remove(port);
        }
    }
}

impl NodePorts {
    pub fn new(range: NodePortRange) -> NodePorts {
        NodePorts {
            range,
            pending: Mutex::new(Pending {
                reserved: HashSet::new(),
                cursor: range.static_band(),
            }),
        }
    }

    pub fn range(&self) -> NodePortRange {
        self.range
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills in (or checks) the nodePorts of `service`, being created
    /// (`old` is `None`) or updated from `old`, given the ports the cache
    /// says Services hold; keep the reservation until the write has been
    /// applied. On error `service` may be half filled in: the caller
    /// stores nothing then.
    pub fn assign(
        &self,
        cache: &ObjectCache,
        service: &mut v1::Service,
        old: Option<&v1::Service>,
    ) -> Result<NodePortReservation<'_>, NodePortError> {
        let meta = service.metadata.clone().unwrap_or_default();
        let own: Key = (meta.namespace, meta.name);
        let old_spec = old.and_then(|o| o.spec.clone()).unwrap_or_default();
        let spec = service.spec.get_or_insert_with(Default::default);
        let mut reservation = NodePortReservation {
            ports: self,
            held: Vec::new(),
        };
        if !wants_node_ports(spec) {
            // A LoadBalancer that opted out of nodePorts still gets those
            // it names (as in Kubernetes); other types may not have any,
            // but a type change away from nodePorts drops those it had.
            let opted_out = spec.r#type == LOAD_BALANCER;
            for index in 0..spec.ports.len() {
                let asked = spec.ports[index].node_port;
                if asked == 0 {
                    continue;
                }
                let had = old_spec.ports.iter().any(|o| o.node_port == asked);
                match (opted_out, had) {
                    (true, true) => {}
                    (true, false) => {
                        self.check_and_reserve(cache, &own, index, asked, &mut reservation)?
                    }
                    (false, true) => spec.ports[index].node_port = 0,
                    (false, false) => {
                        return Err(NodePortError::Forbidden {
                            index,
                            service_type: spec.r#type.clone(),
                        })
                    }
                }
            }
            return Ok(reservation);
        }
        // Same number twice: only for different protocols.
        for (index, port) in spec.ports.iter().enumerate() {
            if port.node_port == 0 {
                continue;
            }
            if let Some(first) = spec.ports[..index]
                .iter()
                .position(|p| p.node_port == port.node_port && p.protocol == port.protocol)
            {
                return Err(NodePortError::Duplicate {
                    index,
                    first,
                    port: u16::try_from(port.node_port).unwrap_or(0),
                    protocol: port.protocol.clone(),
                });
            }
        }
        // Left out: kept from the stored Service's port of the same number
        // and protocol.
        for port in spec.ports.iter_mut() {
            if port.node_port != 0 {
                continue;
            }
            let kept = old_spec
                .ports
                .iter()
                .find(|o| o.port == port.port && o.protocol == port.protocol && o.node_port != 0);
            if let Some(kept) = kept {
                port.node_port = kept.node_port;
            }
        }
        let old_held: HashSet<i32> = old_spec.ports.iter().map(|p| p.node_port).collect();
        let mut mine: Vec<u16> = Vec::new();
        for index in 0..spec.ports.len() {
            let asked = spec.ports[index].node_port;
            if asked == 0 {
                continue;
            }
            if old_held.contains(&asked) {
                // Held already; the range may have changed since, which
                // does not take it away.
                mine.extend(u16::try_from(asked).ok());
                continue;
            }
            self.check_and_reserve(cache, &own, index, asked, &mut reservation)?;
            mine.extend(u16::try_from(asked).ok());
        }
        // Then the ones left to choose: a port number used under the
        // other protocol of this Service shares its nodePort.
        for index in 0..spec.ports.len() {
            if spec.ports[index].node_port != 0 {
                continue;
            }
            let (number, protocol) = (spec.ports[index].port, spec.ports[index].protocol.clone());
            let sibling = spec
                .ports
                .iter()
                .find(|p| p.port == number && p.protocol != protocol && p.node_port != 0)
                .map(|p| p.node_port);
            if let Some(shared) = sibling {
                spec.ports[index].node_port = shared;
                continue;
            }
            let mut pending = self.pending();
            let port = self
                .next_free(&mut pending, |port| {
                    mine.contains(&port) || cache.node_port_holder(port).is_some_and(|k| k != own)
                })
                .ok_or(NodePortError::Exhausted { range: self.range })?;
            pending.reserved.insert(port);
            drop(pending);
            reservation.held.push(port);
            mine.push(port);
            spec.ports[index].node_port = i32::from(port);
        }
        Ok(reservation)
    }

    /// Checks that `asked`, for port `index`, is in range and held by no
    /// other Service nor reserved for another write, and reserves it.
    fn check_and_reserve(
        &self,
        cache: &ObjectCache,
        own: &Key,
        index: usize,
        asked: i32,
        reservation: &mut NodePortReservation<'_>,
    ) -> Result<(), NodePortError> {
        let port = match u16::try_from(asked) {
            Ok(port) if self.range.contains(asked) => port,
            _ => {
                return Err(NodePortError::OutOfRange {
                    index,
                    port: asked,
                    range: self.range,
                })
            }
        };
        if let Some((namespace, name)) = cache.node_port_holder(port) {
            if (&namespace, &name) != (&own.0, &own.1) {
                return Err(NodePortError::InUse {
                    index,
                    port,
                    owner: format!("{namespace}/{name}"),
                });
            }
            return Ok(());
        }
        if reservation.held.contains(&port) {
            return Ok(());
        }
        let mut pending = self.pending();
        if !pending.reserved.insert(port) {
            return Err(NodePortError::InUse {
                index,
                port,
                owner: "being created at this moment".to_owned(),
            });
        }
        drop(pending);
        reservation.held.push(port);
        Ok(())
    }

    /// The next port from the cursor on, wrapping once round the whole
    /// range, that is neither `held` nor reserved.
    fn next_free(&self, pending: &mut Pending, held: impl Fn(u16) -> bool) -> Option<u16> {
        let size = self.range.size();
        for step in 0..size {
            let offset = (pending.cursor % size + step) % size;
            let port = u16::try_from(u32::from(self.range.first) + offset).ok()?;
            if !pending.reserved.contains(&port) && !held(port) {
                pending.cursor = (offset + 1) % size;
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use skiff_proto::api::EventType;

    use crate::objects::{IntoObject, Kind};
    use crate::store::cache::CachedChange;

    fn service(name: &str, kind: &str, ports: &[(i32, &str, i32)]) -> v1::Service {
        v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                r#type: kind.into(),
                ports: ports
                    .iter()
                    .map(|(port, protocol, node_port)| v1::ServicePort {
                        name: format!("p{port}-{protocol}").to_lowercase(),
                        port: *port,
                        protocol: (*protocol).into(),
                        node_port: *node_port,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node_ports_of(service: &v1::Service) -> Vec<i32> {
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(|p| p.node_port)
            .collect()
    }

    fn store(cache: &ObjectCache, service: &v1::Service, revision: u64) {
        cache.apply(
            &[CachedChange {
                kind: Kind::Service,
                event_type: EventType::Added,
                object: Arc::new(service.clone().into_object()),
                encoded_len: 10,
            }],
            revision,
        );
    }

    #[test]
    fn the_range_parses_and_refuses_nonsense() {
        let range: NodePortRange = DEFAULT_NODE_PORT_RANGE.parse().unwrap();
        assert_eq!(range, NodePortRange::default());
        assert_eq!(range.static_band(), 86);
        for bad in ["", "30000", "a-b", "0-10", "32767-30000", "30000-70000"] {
            assert!(bad.parse::<NodePortRange>().is_err(), "{bad}");
        }
        assert_eq!(
            "30000-30001"
                .parse::<NodePortRange>()
                .unwrap()
                .static_band(),
            1
        );
    }

    #[test]
    fn dynamic_ports_come_from_the_upper_band_and_are_unique() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let mut a = service("a", "NodePort", &[(80, "TCP", 0), (443, "TCP", 0)]);
        let mut b = service("b", "LoadBalancer", &[(80, "TCP", 0)]);
        let _ra = ports.assign(&cache, &mut a, None).unwrap();
        let _rb = ports.assign(&cache, &mut b, None).unwrap();
        let mut all = node_ports_of(&a);
        all.extend(node_ports_of(&b));
        assert_eq!(all, [30086, 30087, 30088]);
        // No nodePorts for a ClusterIP Service, nor for an LB that opts out.
        let mut plain = service("c", "ClusterIP", &[(80, "TCP", 0)]);
        ports.assign(&cache, &mut plain, None).unwrap();
        assert_eq!(node_ports_of(&plain), [0]);
        let mut lb = service("d", "LoadBalancer", &[(80, "TCP", 0)]);
        lb.spec.as_mut().unwrap().allocate_load_balancer_node_ports = Some(false);
        ports.assign(&cache, &mut lb, None).unwrap();
        assert_eq!(node_ports_of(&lb), [0]);
    }

    #[test]
    fn asked_ports_must_be_in_range_free_and_not_repeated() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let mut held = service("held", "NodePort", &[(80, "TCP", 30080)]);
        ports.assign(&cache, &mut held, None).unwrap();
        store(&cache, &held, 1);
        let e = ports
            .assign(
                &cache,
                &mut service("x", "NodePort", &[(80, "TCP", 30080)]),
                None,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated (to Service default/held); leave it out to be given a free one"
        );
        let e = ports
            .assign(
                &cache,
                &mut service("x", "NodePort", &[(80, "TCP", 8080)]),
                None,
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"), "{e}");
        let twice = &[(80, "TCP", 30100), (81, "TCP", 30100)];
        let e = ports
            .assign(&cache, &mut service("x", "NodePort", twice), None)
            .unwrap_err();
        assert!(
            matches!(
                e,
                NodePortError::Duplicate {
                    index: 1,
                    first: 0,
                    ..
                }
            ),
            "{e}"
        );
        // TCP and UDP of one port may share one.
        let dns = &[(53, "TCP", 30053), (53, "UDP", 30053)];
        ports
            .assign(&cache, &mut service("dns", "NodePort", dns), None)
            .unwrap();
        let mut dns_auto = service("dns2", "NodePort", &[(53, "TCP", 0), (53, "UDP", 0)]);
        ports.assign(&cache, &mut dns_auto, None).unwrap();
        let got = node_ports_of(&dns_auto);
        assert_eq!(got[0], got[1]);
        // A ClusterIP Service may not name one.
        let e = ports
            .assign(
                &cache,
                &mut service("x", "ClusterIP", &[(80, "TCP", 30200)]),
                None,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Forbidden: may not be used when `type` is \"ClusterIP\""),
            "{e}"
        );
    }

    #[test]
    fn concurrent_writes_never_share_a_port_and_failed_ones_free_it() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let first = ports
            .assign(
                &cache,
                &mut service("a", "NodePort", &[(80, "TCP", 30500)]),
                None,
            )
            .unwrap();
        let e = ports
            .assign(
                &cache,
                &mut service("b", "NodePort", &[(80, "TCP", 30500)]),
                None,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("being created at this moment"),
            "{e}"
        );
        drop(first);
        ports
            .assign(
                &cache,
                &mut service("b", "NodePort", &[(80, "TCP", 30500)]),
                None,
            )
            .unwrap();
    }

    #[test]
    fn updates_keep_ports_and_a_change_to_cluster_ip_drops_them() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let mut stored = service("web", "NodePort", &[(80, "TCP", 0)]);
        drop(ports.assign(&cache, &mut stored, None).unwrap());
        store(&cache, &stored, 1);
        let had = node_ports_of(&stored)[0];
        // Applied again without nodePort: the same one.
        let mut again = service("web", "NodePort", &[(80, "TCP", 0), (81, "TCP", 0)]);
        drop(ports.assign(&cache, &mut again, Some(&stored)).unwrap());
        assert_eq!(node_ports_of(&again)[0], had);
        assert_ne!(node_ports_of(&again)[1], had);
        // The Service's own port, named again: not "in use".
        let mut same = service("web", "LoadBalancer", &[(80, "TCP", had)]);
        ports.assign(&cache, &mut same, Some(&stored)).unwrap();
        // To ClusterIP: the nodePorts go (and are free in the index once
        // the update is applied).
        let mut cluster_ip = service("web", "ClusterIP", &[(80, "TCP", had)]);
        ports
            .assign(&cache, &mut cluster_ip, Some(&stored))
            .unwrap();
        assert_eq!(node_ports_of(&cluster_ip), [0]);
        store(&cache, &cluster_ip, 2);
        assert_eq!(cache.node_port_holder(u16::try_from(had).unwrap()), None);
    }

    #[test]
    fn the_cursor_wraps_and_a_full_range_is_exhausted() {
        let range: NodePortRange = "30000-30003".parse().unwrap();
        let ports = NodePorts::new(range);
        let cache = ObjectCache::default();
        let mut got = Vec::new();
        for name in ["a", "b", "c", "d"] {
            let mut s = service(name, "NodePort", &[(80, "TCP", 0)]);
            drop(ports.assign(&cache, &mut s, None).unwrap());
            store(&cache, &s, 1);
            got.extend(node_ports_of(&s));
        }
        got.sort();
        assert_eq!(got, [30000, 30001, 30002, 30003]);
        let e = ports
            .assign(
                &cache,
                &mut service("e", "NodePort", &[(80, "TCP", 0)]),
                None,
            )
            .unwrap_err();
        assert_eq!(e, NodePortError::Exhausted { range });
    }
}
