//! How pods reach other nodes' pod subnets, reconciled. There are two
//! ways, chosen per peer by the node's [`Mode`]:
//!
//! - **Direct routing** (flannel's host-gw): a peer whose node IP is on a
//!   prefix the uplink is connected to gets a plain route, its subnet via
//!   its node IP on the uplink, marked with skiff's route protocol
//!   ([`ROUTE_PROTOCOL`]) so that a resync finds exactly its own routes
//!   among the host's.
//! - **VXLAN**: for every other peer with a published VTEP MAC, the VXLAN
//!   device carries exactly three entries, as flannel's vxlan backend
//!   programs them:
//!   - a permanent neighbour entry: the peer's VTEP address (`.0` of its
//!     subnet) → the peer's VTEP MAC;
//!   - an FDB entry: the peer's VTEP MAC → the peer's node IP (where VXLAN
//!     packets for that MAC are sent);
//!   - an onlink route: the peer's subnet via its VTEP address.
//!
//! `vxlan` uses only the overlay, `host-gw` only direct routes (a peer off
//! the segment is reported unreachable), and `auto` direct routes where it
//! can and VXLAN elsewhere. [`reconcile`] reads what the devices have
//! through [`NetOps`], adds what is missing and deletes what should not be
//! there, so a restart, a resync or a change of mode leaves exactly the
//! wanted entries: none twice, none left over.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use skiff_objects::Ipv4Net;
use skiff_proto::v1;

use super::subnet::Subnet;

/// Annotation carrying a node's VTEP MAC.
pub const ANNOTATION_VTEP_MAC: &str = "skiff.io/vtep-mac";
/// Annotation carrying the node IP its VXLAN traffic uses.
pub const ANNOTATION_PUBLIC_IP: &str = "skiff.io/public-ip";
/// Annotation carrying the node's [`Mode`]; a node without it (an older
/// agent) runs VXLAN only.
pub const ANNOTATION_MODE: &str = "skiff.io/pod-network";

/// The route protocol number skiff's direct routes carry (`proto 115` in
/// `ip route`; unassigned in iproute2's `rt_protos`).
pub const ROUTE_PROTOCOL: u8 = 115;

/// How this node reaches other nodes' pod subnets (`--pod-network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every peer over the VXLAN overlay.
    Vxlan,
    /// Every peer by a plain route via its node IP; no VXLAN device.
    HostGw,
    /// Peers on the uplink's segment by plain routes, others over VXLAN.
    Auto,
}

impl Mode {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vxlan => "vxlan",
            Mode::HostGw => "host-gw",
            Mode::Auto => "auto",
        }
    }

    /// Whether this mode has a VXLAN device.
    pub fn has_vxlan(self) -> bool {
        self != Mode::HostGw
    }

    /// Whether this mode routes to peers on the uplink's segment.
    pub fn routes_directly(self) -> bool {
        self != Mode::Vxlan
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "vxlan" => Ok(Mode::Vxlan),
            "host-gw" => Ok(Mode::HostGw),
            "auto" => Ok(Mode::Auto),
            other => Err(format!(
                "unknown pod network mode {other:?}: use vxlan, host-gw or auto"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Another node of the pod network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub subnet: Subnet,
    /// `None` for a node without a VXLAN device (host-gw).
    pub vtep_mac: Option<[u8; 6]>,
    pub node_ip: Ipv4Addr,
    /// Whether the peer routes to its segment's nodes directly (host-gw
    /// or auto). A direct route to a peer that answers over VXLAN would
    /// make each direction take another path, which strict reverse-path
    /// filtering drops.
    pub routes_directly: bool,
    pub name: String,
}

/// The devices entries live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// The VXLAN device; `None` in host-gw mode.
    pub vxlan: Option<u32>,
    /// The link holding the node IP, where direct routes go.
    pub uplink: u32,
}

/// One kernel entry: on the VXLAN device, or a direct route on the uplink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Neighbour {
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    Fdb {
        mac: [u8; 6],
        dst: Ipv4Addr,
    },
    /// The peer's subnet, or whatever network the kernel has routed there.
    Route {
        subnet: Ipv4Net,
        via: Ipv4Addr,
    },
    /// A peer's subnet via its node IP on the uplink.
    Direct {
        subnet: Ipv4Net,
        via: Ipv4Addr,
    },
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Neighbour { ip, mac } => write!(f, "neigh {ip} lladdr {}", format_mac(mac)),
            Entry::Fdb { mac, dst } => write!(f, "fdb {} dst {dst}", format_mac(mac)),
            Entry::Route { subnet, via } => write!(f, "route {subnet} via {via} onlink"),
            Entry::Direct { subnet, via } => write!(f, "route {subnet} via {via} on the uplink"),
        }
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// Errors from the kernel.
#[derive(Debug, thiserror::Error)]
#[error("{op} {entry}: {message}")]
pub struct NetError {
    pub op: &'static str,
    pub entry: String,
    pub message: String,
}

/// The kernel operations the pod network's routing needs.
pub trait NetOps: Send + Sync {
    /// The entries the devices have now: the VXLAN device's permanent
    /// neighbours, FDB entries and onlink routes, and the uplink's routes
    /// of [`ROUTE_PROTOCOL`].
    fn list(
        &self,
        devices: Devices,
    ) -> impl std::future::Future<Output = Result<Vec<Entry>, NetError>> + Send;
    fn add(
        &self,
        devices: Devices,
        entry: &Entry,
    ) -> impl std::future::Future<Output = Result<(), NetError>> + Send;
    fn del(
        &self,
        devices: Devices,
        entry: &Entry,
    ) -> impl std::future::Future<Output = Result<(), NetError>> + Send;
}

/// What the devices should hold for some peers, and the peers that
/// cannot be reached in this mode.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub entries: BTreeSet<Entry>,
    /// Peers this mode has no way to: with their reason.
    pub unreachable: Vec<(Peer, Unreachable)>,
}

/// Why a peer cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// This node runs host-gw; the peer is off its segment, or on it but
    /// reaching this node over VXLAN (it runs vxlan).
    HostGwOnly,
    /// The peer has no VXLAN device (it runs host-gw) and this node does
    /// not route to it directly (vxlan mode, or the peer off the segment).
    NoVxlanThere,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unreachable::HostGwOnly => {
                "this node runs host-gw, which reaches only nodes on its segment that route directly too (host-gw or auto); run this node with --pod-network auto"
            }
            Unreachable::NoVxlanThere => {
                "that node runs host-gw (no VXLAN device) and this node cannot route to it directly (it runs vxlan, or that node is off its segment); run both with --pod-network auto"
            }
        })
    }
}

/// The entries wanted for `peers` in `mode`, where `connected` are the
/// prefixes the uplink's addresses are on.
pub fn desired(peers: &[Peer], mode: Mode, connected: &[Ipv4Net]) -> Plan {
    let mut plan = Plan::default();
    for p in peers {
        let on_segment = connected.iter().any(|n| n.contains_addr(p.node_ip));
        if mode.routes_directly() && on_segment && p.routes_directly {
            plan.entries.insert(Entry::Direct {
                subnet: p.subnet.net(),
                via: p.node_ip,
            });
            continue;
        }
        match p.vtep_mac {
            Some(mac) if mode.has_vxlan() => plan.entries.extend([
                Entry::Neighbour {
                    ip: p.subnet.vtep(),
                    mac,
                },
                Entry::Fdb {
                    mac,
                    dst: p.node_ip,
                },
                Entry::Route {
                    subnet: p.subnet.net(),
                    via: p.subnet.vtep(),
                },
            ]),
            _ if !mode.has_vxlan() => plan.unreachable.push((p.clone(), Unreachable::HostGwOnly)),
            _ => plan
                .unreachable
                .push((p.clone(), Unreachable::NoVxlanThere)),
        }
    }
    plan
}

/// What a reconcile changed, and the peers it could not reach.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Entry>,
    pub removed: Vec<Entry>,
    pub unreachable: Vec<(Peer, Unreachable)>,
}

/// Brings the devices in line with `peers`. Stale entries go first, so a
/// node that moved never has two FDB destinations at once, and a subnet
/// that changes from VXLAN to a direct route (or back) is never routed
/// twice.
pub async fn reconcile<N: NetOps>(
    ops: &N,
    devices: Devices,
    mode: Mode,
    connected: &[Ipv4Net],
    peers: &[Peer],
) -> Result<Changes, NetError> {
    let plan = desired(peers, mode, connected);
    let want = plan.entries;
    let have: BTreeSet<Entry> = ops.list(devices).await?.into_iter().collect();
    let mut changes = Changes {
        unreachable: plan.unreachable,
        ..Changes::default()
    };
    // Routes before neighbours before FDB entries when removing, the
    // reverse when adding: a route never points at a missing neighbour.
    let order = |e: &Entry| match e {
        Entry::Route { .. } | Entry::Direct { .. } => 0,
        Entry::Neighbour { .. } => 1,
        Entry::Fdb { .. } => 2,
    };
    let mut stale: Vec<&Entry> = have.difference(&want).collect();
    stale.sort_by_key(|e| order(e));
    for e in stale {
        ops.del(devices, e).await?;
        changes.removed.push(e.clone());
    }
    let mut missing: Vec<&Entry> = want.difference(&have).collect();
    missing.sort_by_key(|e| std::cmp::Reverse(order(e)));
    for e in missing {
        ops.add(devices, e).await?;
        changes.added.push(e.clone());
    }
    Ok(changes)
}

/// The peers among `nodes`: every node but `me` with a pod subnet, a node
/// IP and the VTEP MAC annotation, which a host-gw node publishes empty.
pub fn peers_from_nodes(nodes: &[v1::Node], me: &str) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes
        .iter()
        .filter_map(|n| {
            let meta = n.metadata.as_ref()?;
            if meta.name == me {
                return None;
            }
            let subnet: Subnet = n.spec.as_ref()?.pod_cidr.parse().ok()?;
            // Published (empty in host-gw mode) once the node's pod
            // network is up; a node without one runs no pod network.
            let vtep_mac = parse_mac(meta.annotations.get(ANNOTATION_VTEP_MAC)?);
            let node_ip = meta
                .annotations
                .get(ANNOTATION_PUBLIC_IP)
                .and_then(|ip| ip.parse().ok())
                .or_else(|| {
                    n.status.as_ref()?.addresses.iter().find_map(|a| {
                        (a.r#type == "InternalIP")
                            .then(|| a.address.parse().ok())
                            .flatten()
                    })
                })?;
            let routes_directly = matches!(
                meta.annotations.get(ANNOTATION_MODE).map(String::as_str),
                Some("host-gw" | "auto")
            );
            Some(Peer {
                subnet,
                vtep_mac,
                node_ip,
                routes_directly,
                name: meta.name.clone(),
            })
        })
        .collect();
    peers.sort();
    peers
}

/// A recording fake of [`NetOps`] holding entries in memory, for tests.
#[derive(Debug, Default)]
pub struct RecordingNetOps {
    pub entries: std::sync::Mutex<BTreeSet<Entry>>,
    pub calls: std::sync::Mutex<Vec<String>>,
    /// Fail any operation on an entry whose text contains this.
    pub fail_on: std::sync::Mutex<Option<String>>,
}

impl RecordingNetOps {
    fn check(&self, op: &'static str, entry: &Entry) -> Result<(), NetError> {
        let fail = self
            .fail_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{op} {entry}"));
        match fail {
            Some(f) if entry.to_string().contains(&f) => Err(NetError {
                op,
                entry: entry.to_string(),
                message: "injected failure".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl NetOps for RecordingNetOps {
    async fn list(&self, _devices: Devices) -> Result<Vec<Entry>, NetError> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    async fn add(&self, _devices: Devices, entry: &Entry) -> Result<(), NetError> {
        self.check("add", entry)?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.clone());
        Ok(())
    }

    async fn del(&self, _devices: Devices, entry: &Entry) -> Result<(), NetError> {
        self.check("del", entry)?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peer `n`, in auto mode.
    fn peer(n: u8, ip: &str) -> Peer {
        Peer {
            subnet: format!("10.42.{n}.0/24").parse().unwrap(),
            vtep_mac: Some([0x02, 0, 0, 0, 0, n]),
            node_ip: ip.parse().unwrap(),
            routes_directly: true,
            name: format!("node-{n}"),
        }
    }

    const DEVICES: Devices = Devices {
        vxlan: Some(7),
        uplink: 2,
    };

    /// The uplink's prefix in these tests.
    fn lan() -> Vec<Ipv4Net> {
        vec!["192.168.0.0/24".parse().unwrap()]
    }

    /// Reconciles over VXLAN only.
    async fn reconcile_vxlan(ops: &RecordingNetOps, peers: &[Peer]) -> Result<Changes, NetError> {
        reconcile(ops, DEVICES, Mode::Vxlan, &lan(), peers).await
    }

    fn entries_of(peers: &[Peer]) -> BTreeSet<Entry> {
        desired(peers, Mode::Vxlan, &lan()).entries
    }

    #[tokio::test]
    async fn a_new_node_gets_three_entries_and_a_resync_changes_nothing() {
        let ops = RecordingNetOps::default();
        let peers = vec![peer(1, "192.168.0.11"), peer(2, "192.168.0.12")];
        let changes = reconcile_vxlan(&ops, &peers).await.unwrap();
        assert_eq!(changes.added.len(), 6);
        assert!(changes.removed.is_empty());
        let calls = ops.calls.lock().unwrap().clone();
        assert!(
            calls.contains(&"add neigh 10.42.1.0 lladdr 02:00:00:00:00:01".to_string()),
            "{calls:?}"
        );
        assert!(calls.contains(&"add fdb 02:00:00:00:00:01 dst 192.168.0.11".to_string()));
        assert!(calls.contains(&"add route 10.42.1.0/24 via 10.42.1.0 onlink".to_string()));
        // Each peer's FDB and neighbour go in before its route.
        let pos = |s: &str| calls.iter().position(|c| c == s).unwrap();
        assert!(
            pos("add fdb 02:00:00:00:00:01 dst 192.168.0.11")
                < pos("add route 10.42.1.0/24 via 10.42.1.0 onlink")
        );
        let again = reconcile_vxlan(&ops, &peers).await.unwrap();
        assert_eq!(again, Changes::default(), "idempotent");
    }

    #[tokio::test]
    async fn a_moved_node_is_changed_and_a_removed_node_leaves_nothing() {
        let ops = RecordingNetOps::default();
        reconcile_vxlan(&ops, &[peer(1, "192.168.0.11"), peer(2, "192.168.0.12")])
            .await
            .unwrap();
        let changes = reconcile_vxlan(&ops, &[peer(1, "192.168.0.99"), peer(2, "192.168.0.12")])
            .await
            .unwrap();
        assert_eq!(
            changes.removed,
            [Entry::Fdb {
                mac: [2, 0, 0, 0, 0, 1],
                dst: "192.168.0.11".parse().unwrap()
            }]
        );
        assert_eq!(
            changes.added,
            [Entry::Fdb {
                mac: [2, 0, 0, 0, 0, 1],
                dst: "192.168.0.99".parse().unwrap()
            }]
        );
        let changes = reconcile_vxlan(&ops, &[peer(2, "192.168.0.12")])
            .await
            .unwrap();
        assert_eq!(changes.removed.len(), 3);
        assert_eq!(
            *ops.entries.lock().unwrap(),
            entries_of(&[peer(2, "192.168.0.12")])
        );
    }

    #[tokio::test]
    async fn leftovers_are_removed_and_failures_reported() {
        let ops = RecordingNetOps::default();
        ops.entries.lock().unwrap().insert(Entry::Route {
            subnet: "10.42.50.0/24".parse().unwrap(),
            via: "10.42.50.0".parse().unwrap(),
        });
        *ops.fail_on.lock().unwrap() = Some("10.42.3.0/24".into());
        let err = reconcile_vxlan(&ops, &[peer(3, "192.168.0.13")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("route 10.42.3.0/24"), "{err}");
        assert!(!ops
            .entries
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.to_string().contains("10.42.50.0")));
        // Once the kernel takes it, a retry finishes the job.
        *ops.fail_on.lock().unwrap() = None;
        reconcile_vxlan(&ops, &[peer(3, "192.168.0.13")])
            .await
            .unwrap();
        assert_eq!(
            *ops.entries.lock().unwrap(),
            entries_of(&[peer(3, "192.168.0.13")])
        );
    }

    #[test]
    fn modes_choose_direct_routes_on_the_segment_and_vxlan_beyond_it() {
        let near = peer(1, "192.168.0.11");
        let far = peer(2, "172.16.5.9");
        let far_host_gw = Peer {
            vtep_mac: None,
            ..peer(3, "172.16.5.10")
        };
        let peers = [near.clone(), far.clone(), far_host_gw.clone()];
        let direct = Entry::Direct {
            subnet: "10.42.1.0/24".parse().unwrap(),
            via: "192.168.0.11".parse().unwrap(),
        };

        let auto = desired(&peers, Mode::Auto, &lan());
        assert!(auto.entries.contains(&direct), "{:?}", auto.entries);
        assert_eq!(
            auto.entries.len(),
            4,
            "one route for the near peer, three VXLAN entries for the far one: {:?}",
            auto.entries
        );
        assert!(auto
            .entries
            .is_superset(&entries_of(std::slice::from_ref(&far))));
        assert_eq!(
            auto.unreachable,
            [(far_host_gw.clone(), Unreachable::NoVxlanThere)]
        );

        let host_gw = desired(&peers, Mode::HostGw, &lan());
        assert_eq!(host_gw.entries, [direct.clone()].into());
        assert_eq!(
            host_gw.unreachable,
            [
                (far.clone(), Unreachable::HostGwOnly),
                (far_host_gw.clone(), Unreachable::HostGwOnly)
            ]
        );

        let vxlan = desired(&peers, Mode::Vxlan, &lan());
        assert!(!vxlan.entries.contains(&direct));
        assert_eq!(vxlan.entries.len(), 6);
        assert_eq!(
            vxlan.unreachable,
            [(far_host_gw, Unreachable::NoVxlanThere)]
        );

        // A peer on the segment running vxlan answers over VXLAN, so it is
        // reached over VXLAN too (in auto), or not at all (in host-gw).
        let near_vxlan = Peer {
            routes_directly: false,
            ..near.clone()
        };
        let auto = desired(std::slice::from_ref(&near_vxlan), Mode::Auto, &lan());
        assert!(!auto.entries.contains(&direct));
        assert_eq!(auto.entries, entries_of(std::slice::from_ref(&near_vxlan)));
        let host_gw = desired(std::slice::from_ref(&near_vxlan), Mode::HostGw, &lan());
        assert!(host_gw.entries.is_empty());
        assert_eq!(host_gw.unreachable, [(near_vxlan, Unreachable::HostGwOnly)]);

        // A prefix the uplink is on decides, not the address's class.
        let none = desired(&[near], Mode::HostGw, &["192.168.1.0/24".parse().unwrap()]);
        assert!(none.entries.is_empty());
        assert_eq!(none.unreachable.len(), 1);
    }

    #[tokio::test]
    async fn a_change_of_mode_moves_a_subnet_between_vxlan_and_a_direct_route() {
        let ops = RecordingNetOps::default();
        let peers = [peer(1, "192.168.0.11"), peer(2, "172.16.5.9")];
        reconcile_vxlan(&ops, &peers).await.unwrap();
        ops.calls.lock().unwrap().clear();
        let changes = reconcile(&ops, DEVICES, Mode::Auto, &lan(), &peers)
            .await
            .unwrap();
        assert_eq!(changes.removed.len(), 3, "{changes:?}");
        assert_eq!(
            changes.added,
            [Entry::Direct {
                subnet: "10.42.1.0/24".parse().unwrap(),
                via: "192.168.0.11".parse().unwrap()
            }]
        );
        let calls = ops.calls.lock().unwrap().clone();
        assert_eq!(
            calls.first().map(String::as_str),
            Some("del route 10.42.1.0/24 via 10.42.1.0 onlink"),
            "the VXLAN route goes before the direct one comes: {calls:?}"
        );
        assert_eq!(
            calls.last().map(String::as_str),
            Some("add route 10.42.1.0/24 via 192.168.0.11 on the uplink")
        );
        assert_eq!(
            reconcile(&ops, DEVICES, Mode::Auto, &lan(), &peers)
                .await
                .unwrap(),
            Changes::default(),
            "idempotent"
        );
        // Back to VXLAN only: the direct route goes, the overlay comes back.
        let back = reconcile_vxlan(&ops, &peers).await.unwrap();
        assert_eq!(back.removed.len(), 1);
        assert_eq!(back.added.len(), 3);
        assert_eq!(*ops.entries.lock().unwrap(), entries_of(&peers));
    }

    #[test]
    fn modes_parse_from_their_flag_spelling() {
        for mode in [Mode::Vxlan, Mode::HostGw, Mode::Auto] {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        }
        let err = "hostgw".parse::<Mode>().unwrap_err();
        assert!(
            err.contains("\"hostgw\"") && err.contains("host-gw"),
            "{err}"
        );
    }

    #[test]
    fn peers_come_from_node_annotations() {
        let node = |name: &str, cidr: &str, mac: Option<&str>| v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                annotations: mac
                    .map(|m| {
                        [
                            (ANNOTATION_VTEP_MAC.to_string(), m.to_string()),
                            (ANNOTATION_PUBLIC_IP.to_string(), "192.168.0.5".to_string()),
                        ]
                        .into()
                    })
                    .unwrap_or_default(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = vec![
            node("me", "10.42.0.0/24", Some("02:00:00:00:00:00")),
            node("b", "10.42.1.0/24", Some("02:aa:bb:cc:dd:ee")),
            node("no-pod-network-yet", "10.42.2.0/24", None),
            node("no-subnet-yet", "", Some("02:00:00:00:00:03")),
            node("host-gw", "10.42.4.0/24", Some("")),
        ];
        let mut nodes = nodes;
        if let Some(meta) = nodes[4].metadata.as_mut() {
            meta.annotations
                .insert(ANNOTATION_MODE.into(), "host-gw".into());
        }
        let peers = peers_from_nodes(&nodes, "me");
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert_eq!(peers[1].subnet.net().to_string(), "10.42.4.0/24");
        assert_eq!(peers[1].vtep_mac, None, "a host-gw node has no VTEP");
        assert!(
            !peers[0].routes_directly,
            "no mode published: an older agent, VXLAN only"
        );
        assert!(peers[1].routes_directly);
        assert_eq!(peers[1].name, "host-gw");
        assert_eq!(
            peers[0].vtep_mac,
            Some([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        );
        assert_eq!(peers[0].node_ip, "192.168.0.5".parse::<Ipv4Addr>().unwrap());
    }
}
