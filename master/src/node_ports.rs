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
//!
//! A LoadBalancer with `externalTrafficPolicy: Local` also gets a
//! `healthCheckNodePort` from the same range (even with
//! `allocateLoadBalancerNodePorts: false`), as Kubernetes does: the port
//! every agent answers load balancers' health checks on. It is kept when an
//! update leaves it out, dropped when the Service stops needing it (a type
//! or policy change), and refused on a Service that does not need it.

use std::collections::HashSet;
use std::sync::Mutex;

use skiff_objects::services::{self, Service, ServicePort};

use crate::store::cache::{Key, ObjectCache};

/// Kubernetes' and k3s' default range.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

/// `spec.type` values whose ports get nodePorts.
const NODE_PORT: &str = "NodePort";
const LOAD_BALANCER: &str = "LoadBalancer";

/// Which field of a Service a nodePort is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortField {
    /// `spec.ports[N].nodePort`.
    Port(usize),
    /// `spec.healthCheckNodePort`.
    HealthCheck,
}

impl std::fmt::Display for NodePortField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodePortField::Port(index) => write!(f, "spec.ports[{index}].nodePort"),
            NodePortField::HealthCheck => f.write_str("spec.healthCheckNodePort"),
        }
    }
}

/// Why a Service cannot have the nodePorts it asked for (or any). Nothing
/// is stored when this is returned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodePortError {
    #[error("--service-node-port-range {given:?}: not FIRST-LAST with 1 <= FIRST <= LAST <= 65535 (e.g. 30000-32767)")]
    BadRange { given: String },
    #[error("{field}: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {range}")]
    OutOfRange {
        field: NodePortField,
        port: i32,
        range: NodePortRange,
    },
    #[error("{field}: Invalid value: {port}: provided port is already allocated (to Service {owner}); leave it out to be given a free one")]
    InUse {
        field: NodePortField,
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
    #[error("spec.healthCheckNodePort: Invalid value: {port}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")]
    HealthCheckForbidden { port: i32 },
    #[error("{field}: no free nodePort left in {range}")]
    Exhausted {
        field: NodePortField,
        range: NodePortRange,
    },
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

/// Whether the ports of `service` get nodePorts.
pub fn wants_node_ports(service: &Service) -> bool {
    let allocate = service
        .spec
        .as_ref()
        .and_then(|s| s.allocate_load_balancer_node_ports);
    match services::type_of(service) {
        NODE_PORT => true,
        LOAD_BALANCER => allocate != Some(false),
        _ => false,
    }
}

/// Whether `service` gets a `healthCheckNodePort`: a LoadBalancer with
/// `externalTrafficPolicy: Local` (Kubernetes' `NeedsHealthCheck`).
pub fn needs_health_check(service: &Service) -> bool {
    services::type_of(service) == LOAD_BALANCER && services::is_external_local(service)
}

/// Whether `service` lacks a nodePort or health check port it should
/// have: a Service stored before skiff gave them, which its next update
/// fills in.
pub fn lacks_node_ports(service: &Service) -> bool {
    (wants_node_ports(service)
        && services::ports(service)
            .iter()
            .any(|p| services::node_port(p) == 0))
        || (needs_health_check(service) && services::health_check_node_port(service) == 0)
}

/// `port`'s nodePort set to `number` (unset for 0).
fn set_node_port(port: &mut ServicePort, number: i32) {
    port.node_port = (number != 0).then_some(number);
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

    /// Fills in (or checks) the nodePorts and the health check port of
    /// `service`, being created (`old` is `None`) or updated from `old`,
    /// given the ports the cache says Services hold; keep the reservation
    /// until the write has been applied. On error `service` may be half
    /// filled in: the caller stores nothing then.
    pub fn assign(
        &self,
        cache: &ObjectCache,
        service: &mut Service,
        old: Option<&Service>,
    ) -> Result<NodePortReservation<'_>, NodePortError> {
        let (namespace, name) = services::key(service);
        let own: Key = (namespace.to_owned(), name.to_owned());
        let old = old.cloned().unwrap_or_default();
        let mut reservation = NodePortReservation {
            ports: self,
            held: Vec::new(),
        };
        self.assign_ports(cache, &own, service, &old, &mut reservation)?;
        self.assign_health_check(cache, &own, service, &old, &mut reservation)?;
        // A 0 written is unset, and is stored so (as Kubernetes stores it).
        if let Some(spec) = service.spec.as_mut() {
            for port in spec.ports.iter_mut().flatten() {
                if port.node_port == Some(0) {
                    port.node_port = None;
                }
            }
            if spec.health_check_node_port == Some(0) {
                spec.health_check_node_port = None;
            }
        }
        Ok(reservation)
    }

    /// The nodePorts of `spec.ports` (see [`NodePorts::assign`]).
    fn assign_ports(
        &self,
        cache: &ObjectCache,
        own: &Key,
        service: &mut Service,
        old: &Service,
        reservation: &mut NodePortReservation<'_>,
    ) -> Result<(), NodePortError> {
        let wanted = wants_node_ports(service);
        let service_type = services::type_of(service).to_owned();
        let old_ports = services::ports(old);
        let Some(ports) = service.spec.as_mut().and_then(|s| s.ports.as_mut()) else {
            return Ok(());
        };
        if !wanted {
            // A LoadBalancer that opted out of nodePorts still gets those
            // it names (as in Kubernetes); other types may not have any,
            // but a type change away from nodePorts drops those it had.
            let opted_out = service_type == LOAD_BALANCER;
            for (index, port) in ports.iter_mut().enumerate() {
                let asked = services::node_port(port);
                if asked == 0 {
                    continue;
                }
                let had = old_ports.iter().any(|o| services::node_port(o) == asked);
                match (opted_out, had) {
                    (true, true) => {}
                    (true, false) => self.check_and_reserve(
                        cache,
                        own,
                        NodePortField::Port(index),
                        asked,
                        reservation,
                    )?,
                    (false, true) => set_node_port(port, 0),
                    (false, false) => {
                        return Err(NodePortError::Forbidden {
                            index,
                            service_type,
                        })
                    }
                }
            }
            return Ok(());
        }
        // Same number twice: only for different protocols.
        for (index, port) in ports.iter().enumerate() {
            let number = services::node_port(port);
            if number == 0 {
                continue;
            }
            let protocol = services::protocol(port);
            if let Some(first) = ports[..index]
                .iter()
                .position(|p| services::node_port(p) == number && services::protocol(p) == protocol)
            {
                return Err(NodePortError::Duplicate {
                    index,
                    first,
                    port: u16::try_from(number).unwrap_or(0),
                    protocol: protocol.to_owned(),
                });
            }
        }
        // Left out: kept from the stored Service's port of the same number
        // and protocol.
        for port in ports.iter_mut() {
            if services::node_port(port) != 0 {
                continue;
            }
            let kept = old_ports.iter().find(|o| {
                o.port == port.port
                    && services::protocol(o) == services::protocol(port)
                    && services::node_port(o) != 0
            });
            if let Some(kept) = kept {
                set_node_port(port, services::node_port(kept));
            }
        }
        let old_held: HashSet<i32> = old_ports.iter().map(services::node_port).collect();
        let mut mine: Vec<u16> = Vec::new();
        for (index, port) in ports.iter().enumerate() {
            let asked = services::node_port(port);
            if asked == 0 {
                continue;
            }
            if old_held.contains(&asked) {
                // Held already; the range may have changed since, which
                // does not take it away.
                mine.extend(u16::try_from(asked).ok());
                continue;
            }
            let field = NodePortField::Port(index);
            self.check_and_reserve(cache, own, field, asked, reservation)?;
            mine.extend(u16::try_from(asked).ok());
        }
        // Then the ones left to choose: a port number used under the
        // other protocol of this Service shares its nodePort.
        for index in 0..ports.len() {
            if services::node_port(&ports[index]) != 0 {
                continue;
            }
            let number = ports[index].port;
            let protocol = services::protocol(&ports[index]).to_owned();
            let sibling = ports
                .iter()
                .find(|p| {
                    p.port == number
                        && services::protocol(p) != protocol
                        && services::node_port(p) != 0
                })
                .map(services::node_port);
            if let Some(shared) = sibling {
                set_node_port(&mut ports[index], shared);
                continue;
            }
            let port = self.choose(cache, own, &mine, NodePortField::Port(index), reservation)?;
            mine.push(port);
            set_node_port(&mut ports[index], i32::from(port));
        }
        Ok(())
    }

    /// The `healthCheckNodePort` of `service` (see [`NodePorts::assign`]),
    /// after its nodePorts: never one of them.
    fn assign_health_check(
        &self,
        cache: &ObjectCache,
        own: &Key,
        service: &mut Service,
        old: &Service,
        reservation: &mut NodePortReservation<'_>,
    ) -> Result<(), NodePortError> {
        let had = needs_health_check(old).then_some(services::health_check_node_port(old));
        let had = had.filter(|port| *port != 0);
        let field = NodePortField::HealthCheck;
        let needed = needs_health_check(service);
        let mine: Vec<u16> = services::ports(service)
            .iter()
            .filter_map(|p| u16::try_from(services::node_port(p)).ok())
            .filter(|p| *p != 0)
            .collect();
        let own_index = |asked: i32| {
            services::ports(service)
                .iter()
                .position(|p| services::node_port(p) == asked)
        };
        let mut asked = services::health_check_node_port(service);
        if !needed {
            if asked == 0 {
                return Ok(());
            }
            // Left as it was by a change that no longer needs it (a
            // manifest applied with another type or policy): dropped, as
            // Kubernetes drops it; named anew, refused.
            if had == Some(asked) {
                if let Some(spec) = service.spec.as_mut() {
                    spec.health_check_node_port = None;
                }
                return Ok(());
            }
            return Err(NodePortError::HealthCheckForbidden { port: asked });
        }
        // Left out: the one it had.
        if asked == 0 {
            asked = had.unwrap_or(0);
        }
        let chosen = if asked == 0 {
            i32::from(self.choose(cache, own, &mine, field, reservation)?)
        } else if let Some(index) = own_index(asked) {
            return Err(NodePortError::InUse {
                field,
                port: u16::try_from(asked).unwrap_or(0),
                owner: format!("{}/{}, its own spec.ports[{index}].nodePort", own.0, own.1),
            });
        } else {
            if had != Some(asked) {
                self.check_and_reserve(cache, own, field, asked, reservation)?;
            }
            // Held already when it had it: a narrower range since does
            // not take it away.
            asked
        };
        service
            .spec
            .get_or_insert_with(Default::default)
            .health_check_node_port = Some(chosen);
        Ok(())
    }

    /// A free port for `field` of the Service `own`, which holds `mine`
    /// already, reserved.
    fn choose(
        &self,
        cache: &ObjectCache,
        own: &Key,
        mine: &[u16],
        field: NodePortField,
        reservation: &mut NodePortReservation<'_>,
    ) -> Result<u16, NodePortError> {
        let mut pending = self.pending();
        let port = self
            .next_free(&mut pending, |port| {
                mine.contains(&port)
                    || reservation.held.contains(&port)
                    || cache.node_port_holder(port).is_some_and(|k| &k != own)
            })
            .ok_or(NodePortError::Exhausted {
                field,
                range: self.range,
            })?;
        pending.reserved.insert(port);
        drop(pending);
        reservation.held.push(port);
        Ok(port)
    }

    /// Checks that `asked`, for `field`, is in range and held by no
    /// other Service nor reserved for another write, and reserves it.
    fn check_and_reserve(
        &self,
        cache: &ObjectCache,
        own: &Key,
        field: NodePortField,
        asked: i32,
        reservation: &mut NodePortReservation<'_>,
    ) -> Result<(), NodePortError> {
        let port = match u16::try_from(asked) {
            Ok(port) if self.range.contains(asked) => port,
            _ => {
                return Err(NodePortError::OutOfRange {
                    field,
                    port: asked,
                    range: self.range,
                })
            }
        };
        if let Some((namespace, name)) = cache.node_port_holder(port) {
            if (&namespace, &name) != (&own.0, &own.1) {
                return Err(NodePortError::InUse {
                    field,
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
                field,
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

    use crate::store::cache::CachedChange;
    use skiff_objects::Kind;

    fn service(name: &str, kind: &str, ports: &[(i32, &str, i32)]) -> Service {
        Service {
            metadata: skiff_objects::typed::meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(services::ServiceSpec {
                type_: Some(kind.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port, protocol, node_port)| ServicePort {
                            name: Some(format!("p{port}-{protocol}").to_lowercase()),
                            port: *port,
                            protocol: Some((*protocol).into()),
                            node_port: (*node_port != 0).then_some(*node_port),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node_ports_of(service: &Service) -> Vec<i32> {
        services::ports(service)
            .iter()
            .map(services::node_port)
            .collect()
    }

    /// `service` stored: the cache (and its nodePort index) holds it, as
    /// the state machine stores it.
    fn store(cache: &ObjectCache, service: &Service, revision: u64) {
        let (namespace, name) = services::key(service);
        let meta = skiff_proto::v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        };
        let object = services::object(meta, service.spec.clone().unwrap(), None);
        cache.apply(
            &[CachedChange {
                kind: Kind::Service,
                event_type: EventType::Added,
                object: Arc::new(object),
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
        plain.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(0);
        plain.spec.as_mut().unwrap().health_check_node_port = Some(0);
        ports.assign(&cache, &mut plain, None).unwrap();
        assert_eq!(node_ports_of(&plain), [0]);
        // A 0 written is stored unset.
        let spec = plain.spec.as_ref().unwrap();
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
        assert_eq!(spec.health_check_node_port, None);
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

    fn local_lb(name: &str, ports: &[(i32, &str, i32)], health_check: i32) -> Service {
        let mut s = service(name, "LoadBalancer", ports);
        let spec = s.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = (health_check != 0).then_some(health_check);
        s
    }

    fn health_check_of(service: &Service) -> i32 {
        services::health_check_node_port(service)
    }

    #[test]
    fn a_local_load_balancer_gets_a_health_check_port_of_its_own() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let mut lb = local_lb("lb", &[(80, "TCP", 0)], 0);
        drop(ports.assign(&cache, &mut lb, None).unwrap());
        let (node_port, health) = (node_ports_of(&lb)[0], health_check_of(&lb));
        assert!(NodePortRange::default().contains(health), "{health}");
        assert_ne!(health, node_port);
        store(&cache, &lb, 1);
        // The index holds it: nobody else gets it.
        let held = u16::try_from(health).unwrap();
        assert_eq!(
            cache.node_port_holder(held),
            Some(("default".to_owned(), "lb".to_owned()))
        );
        let e = ports
            .assign(
                &cache,
                &mut service("x", "NodePort", &[(80, "TCP", health)]),
                None,
            )
            .unwrap_err();
        assert!(e.to_string().contains("already allocated"), "{e}");
        // Even without nodePorts, a Local load balancer has one; Cluster
        // policy or a NodePort Service none.
        let mut bare = local_lb("bare", &[(80, "TCP", 0)], 0);
        bare.spec
            .as_mut()
            .unwrap()
            .allocate_load_balancer_node_ports = Some(false);
        ports.assign(&cache, &mut bare, None).unwrap();
        assert_eq!(node_ports_of(&bare), [0]);
        assert_ne!(health_check_of(&bare), 0);
        let mut cluster = service("cluster", "LoadBalancer", &[(80, "TCP", 0)]);
        ports.assign(&cache, &mut cluster, None).unwrap();
        assert_eq!(health_check_of(&cluster), 0);
        let mut node_port = service("np", "NodePort", &[(80, "TCP", 0)]);
        node_port.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        ports.assign(&cache, &mut node_port, None).unwrap();
        assert_eq!(health_check_of(&node_port), 0);
    }

    #[test]
    fn the_health_check_port_is_kept_checked_and_dropped_as_kubernetes_does() {
        let ports = NodePorts::new(NodePortRange::default());
        let cache = ObjectCache::default();
        let mut stored = local_lb("lb", &[(80, "TCP", 0)], 31999);
        drop(ports.assign(&cache, &mut stored, None).unwrap());
        assert_eq!(health_check_of(&stored), 31999);
        store(&cache, &stored, 1);
        // Applied again without it: kept.
        let mut again = local_lb("lb", &[(80, "TCP", 0)], 0);
        drop(ports.assign(&cache, &mut again, Some(&stored)).unwrap());
        assert_eq!(health_check_of(&again), 31999);
        // To Cluster policy with the stored one left in: dropped.
        let mut cluster = local_lb("lb", &[(80, "TCP", 0)], 31999);
        cluster.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
        drop(ports.assign(&cache, &mut cluster, Some(&stored)).unwrap());
        assert_eq!(health_check_of(&cluster), 0);
        // Named on a Service that does not need one: refused.
        let mut named = service("other", "LoadBalancer", &[(80, "TCP", 0)]);
        named.spec.as_mut().unwrap().health_check_node_port = Some(31000);
        let e = ports.assign(&cache, &mut named, None).unwrap_err();
        assert_eq!(e, NodePortError::HealthCheckForbidden { port: 31000 });
        assert!(
            e.to_string().starts_with("spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is 'LoadBalancer'"),
            "{e}"
        );
        // Out of range, held by another Service, or one of its own
        // nodePorts: refused with the field named.
        let e = ports
            .assign(&cache, &mut local_lb("x", &[(80, "TCP", 0)], 8080), None)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("spec.healthCheckNodePort: Invalid value: 8080: provided port is not in the valid range"),
            "{e}"
        );
        let e = ports
            .assign(&cache, &mut local_lb("x", &[(80, "TCP", 0)], 31999), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.healthCheckNodePort: Invalid value: 31999: provided port is already allocated (to Service default/lb); leave it out to be given a free one"
        );
        let e = ports
            .assign(
                &cache,
                &mut local_lb("x", &[(80, "TCP", 31500)], 31500),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                NodePortError::InUse {
                    field: NodePortField::HealthCheck,
                    port: 31500,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn services_stored_without_their_ports_are_told_apart() {
        let mut lb = local_lb("lb", &[(80, "TCP", 30100)], 0);
        assert!(lacks_node_ports(&lb));
        lb.spec.as_mut().unwrap().health_check_node_port = Some(30101);
        assert!(!lacks_node_ports(&lb));
        let np = service("np", "NodePort", &[(80, "TCP", 30102), (81, "TCP", 0)]);
        assert!(lacks_node_ports(&np));
        let plain = service("plain", "ClusterIP", &[(80, "TCP", 0)]);
        assert!(!lacks_node_ports(&plain));
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
        assert_eq!(
            e,
            NodePortError::Exhausted {
                field: NodePortField::Port(0),
                range
            }
        );
    }
}
