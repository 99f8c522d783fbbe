//! The VXLAN overlay's kernel state, reconciled. For every other node with
//! a pod subnet and a published VTEP MAC, the VXLAN device carries exactly
//! three entries, as flannel's vxlan backend programs them:
//!
//! - a permanent neighbour entry: the peer's VTEP address (`.0` of its
//!   subnet) → the peer's VTEP MAC;
//! - an FDB entry: the peer's VTEP MAC → the peer's node IP (where VXLAN
//!   packets for that MAC are sent);
//! - an onlink route: the peer's subnet via its VTEP address.
//!
//! [`reconcile`] reads what the device has through [`NetOps`], adds what is
//! missing and deletes what should not be there, so a restart or a resync
//! leaves exactly the wanted entries: none twice, none left over.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use skiff_proto::v1;
use skiff_values::Ipv4Net;

use super::subnet::Subnet;

/// Annotation carrying a node's VTEP MAC.
pub const ANNOTATION_VTEP_MAC: &str = "skiff.io/vtep-mac";
/// Annotation carrying the node IP its VXLAN traffic uses.
pub const ANNOTATION_PUBLIC_IP: &str = "skiff.io/public-ip";

/// Another node of the overlay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub subnet: Subnet,
    pub vtep_mac: [u8; 6],
    pub node_ip: Ipv4Addr,
}

/// One kernel entry on the VXLAN device.
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
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Neighbour { ip, mac } => write!(f, "neigh {ip} lladdr {}", format_mac(mac)),
            Entry::Fdb { mac, dst } => write!(f, "fdb {} dst {dst}", format_mac(mac)),
            Entry::Route { subnet, via } => write!(f, "route {subnet} via {via} onlink"),
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

/// The kernel operations the overlay needs, on one device.
pub trait NetOps: Send + Sync {
    /// The overlay entries the device has now.
    fn list(
        &self,
        dev: u32,
    ) -> impl std::future::Future<Output = Result<Vec<Entry>, NetError>> + Send;
    fn add(
        &self,
        dev: u32,
        entry: &Entry,
    ) -> impl std::future::Future<Output = Result<(), NetError>> + Send;
    fn del(
        &self,
        dev: u32,
        entry: &Entry,
    ) -> impl std::future::Future<Output = Result<(), NetError>> + Send;
}

/// The entries the device should have for `peers`.
pub fn desired(peers: &[Peer]) -> BTreeSet<Entry> {
    peers
        .iter()
        .flat_map(|p| {
            [
                Entry::Neighbour {
                    ip: p.subnet.vtep(),
                    mac: p.vtep_mac,
                },
                Entry::Fdb {
                    mac: p.vtep_mac,
                    dst: p.node_ip,
                },
                Entry::Route {
                    subnet: p.subnet.net(),
                    via: p.subnet.vtep(),
                },
            ]
        })
        .collect()
}

/// What a reconcile changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Entry>,
    pub removed: Vec<Entry>,
}

/// Brings the device in line with `peers`. Stale entries go first, so a
/// node that moved never has two FDB destinations at once.
pub async fn reconcile<N: NetOps>(ops: &N, dev: u32, peers: &[Peer]) -> Result<Changes, NetError> {
    let want = desired(peers);
    let have: BTreeSet<Entry> = ops.list(dev).await?.into_iter().collect();
    let mut changes = Changes::default();
    // Routes before neighbours before FDB entries when removing, the
    // reverse when adding: a route never points at a missing neighbour.
    let order = |e: &Entry| match e {
        Entry::Route { .. } => 0,
        Entry::Neighbour { .. } => 1,
        Entry::Fdb { .. } => 2,
    };
    let mut stale: Vec<&Entry> = have.difference(&want).collect();
    stale.sort_by_key(|e| order(e));
    for e in stale {
        ops.del(dev, e).await?;
        changes.removed.push(e.clone());
    }
    let mut missing: Vec<&Entry> = want.difference(&have).collect();
    missing.sort_by_key(|e| std::cmp::Reverse(order(e)));
    for e in missing {
        ops.add(dev, e).await?;
        changes.added.push(e.clone());
    }
    Ok(changes)
}

/// The overlay peers among `nodes`: every node but `me` with a pod subnet,
/// a VTEP MAC and a node IP.
pub fn peers_from_nodes(nodes: &[v1::Node], me: &str) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes
        .iter()
        .filter_map(|n| {
            let meta = n.metadata.as_ref()?;
            if meta.name == me {
                return None;
            }
            let subnet: Subnet = n.spec.as_ref()?.pod_cidr.parse().ok()?;
            let vtep_mac = parse_mac(meta.annotations.get(ANNOTATION_VTEP_MAC)?)?;
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
            Some(Peer {
                subnet,
                vtep_mac,
                node_ip,
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
    async fn list(&self, _dev: u32) -> Result<Vec<Entry>, NetError> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    async fn add(&self, _dev: u32, entry: &Entry) -> Result<(), NetError> {
        self.check("add", entry)?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.clone());
        Ok(())
    }

    async fn del(&self, _dev: u32, entry: &Entry) -> Result<(), NetError> {
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

    fn peer(n: u8, ip: &str) -> Peer {
        Peer {
            subnet: format!("10.42.{n}.0/24").parse().unwrap(),
            vtep_mac: [0x02, 0, 0, 0, 0, n],
            node_ip: ip.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn a_new_node_gets_three_entries_and_a_resync_changes_nothing() {
        let ops = RecordingNetOps::default();
        let peers = vec![peer(1, "192.168.0.11"), peer(2, "192.168.0.12")];
        let changes = reconcile(&ops, 7, &peers).await.unwrap();
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
        let again = reconcile(&ops, 7, &peers).await.unwrap();
        assert_eq!(again, Changes::default(), "idempotent");
    }

    #[tokio::test]
    async fn a_moved_node_is_changed_and_a_removed_node_leaves_nothing() {
        let ops = RecordingNetOps::default();
        reconcile(&ops, 7, &[peer(1, "192.168.0.11"), peer(2, "192.168.0.12")])
            .await
            .unwrap();
        let changes = reconcile(&ops, 7, &[peer(1, "192.168.0.99"), peer(2, "192.168.0.12")])
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
        let changes = reconcile(&ops, 7, &[peer(2, "192.168.0.12")])
            .await
            .unwrap();
        assert_eq!(changes.removed.len(), 3);
        assert_eq!(
            *ops.entries.lock().unwrap(),
            desired(&[peer(2, "192.168.0.12")])
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
        let err = reconcile(&ops, 7, &[peer(3, "192.168.0.13")])
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
        reconcile(&ops, 7, &[peer(3, "192.168.0.13")])
            .await
            .unwrap();
        assert_eq!(
            *ops.entries.lock().unwrap(),
            desired(&[peer(3, "192.168.0.13")])
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
            node("no-mac-yet", "10.42.2.0/24", None),
            node("no-subnet-yet", "", Some("02:00:00:00:00:03")),
        ];
        let peers = peers_from_nodes(&nodes, "me");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].vtep_mac, [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(peers[0].node_ip, "192.168.0.5".parse::<Ipv4Addr>().unwrap());
    }
}
