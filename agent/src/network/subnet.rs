//! A node's pod subnet (`spec.podCIDR`, a `/24` by default) and the
//! addresses inside it: `.0` is the node's VTEP address on the VXLAN device
//! (as flannel does), `.1` the local bridge's gateway, and `.2` up to the
//! last address before broadcast go to pods. The CIDR itself (parsing, host
//! bits, containment) is `skiff_objects::Ipv4Net`, the one the masters use;
//! a subnet adds the prefix lengths the pod network can work with.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use skiff_objects::{CidrError, Ipv4Net};

/// Prefix lengths the pod network takes: a `/30` still leaves one address
/// for a pod; wider than a `/8` is not a pod network anyone means.
pub const PREFIX_LENGTHS: RangeInclusive<u8> = 8..=30;

/// `10.42.0.0/16`: the cluster CIDR the masters give subnets from unless
/// told otherwise.
pub const DEFAULT_CLUSTER_CIDR: Subnet = Subnet(Ipv4Net {
    addr: Ipv4Addr::new(10, 42, 0, 0),
    len: 16,
});

/// `10.43.0.0/16`: the service CIDR the masters give clusterIPs from
/// unless told otherwise.
pub const DEFAULT_SERVICE_CIDR: Subnet = Subnet(Ipv4Net {
    addr: Ipv4Addr::new(10, 43, 0, 0),
    len: 16,
});

/// An IPv4 network of the pod network: a node's subnet, or the cluster and
/// service CIDRs it sits in. Kept in `network/ipam.json` as
/// `{"net": "10.42.1.0", "len": 24}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "SubnetRecord", into = "SubnetRecord")]
pub struct Subnet(Ipv4Net);

/// Why a network cannot be a pod-network subnet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("{net}: the pod network needs a prefix length of 8..=30; give a /8 to /30 network")]
    PrefixLength { net: Ipv4Net },
}

/// How a subnet is written to disk (the shape older agents wrote).
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct SubnetRecord {
    net: Ipv4Addr,
    len: u8,
}

impl From<Subnet> for SubnetRecord {
    fn from(subnet: Subnet) -> SubnetRecord {
        SubnetRecord {
            net: subnet.0.addr,
            len: subnet.0.len,
        }
    }
}

impl TryFrom<SubnetRecord> for Subnet {
    type Error = SubnetError;
    fn try_from(record: SubnetRecord) -> Result<Subnet, SubnetError> {
        format!("{}/{}", record.net, record.len).parse()
    }
}

impl Subnet {
    /// `net` as a subnet, if its prefix length is one the pod network takes.
    pub fn new(net: Ipv4Net) -> Result<Subnet, SubnetError> {
        if !PREFIX_LENGTHS.contains(&net.len) {
            return Err(SubnetError::PrefixLength { net });
        }
        Ok(Subnet(net))
    }

    /// The network as a CIDR.
    pub fn net(&self) -> Ipv4Net {
        self.0
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.len
    }

    /// The address on the VXLAN device that peers route this subnet via.
    pub fn vtep(&self) -> Ipv4Addr {
        self.0.nth(0)
    }

    /// The bridge's address: pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.0.nth(1)
    }

    /// Addresses pods may get.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let net = self.0;
        (2..net.size().saturating_sub(1)).map(move |i| net.nth(i))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains_addr(ip)
    }
}

impl std::str::FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        Subnet::new(s.parse()?)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_a_node_subnet() {
        let s: Subnet = "10.42.3.0/24".parse().unwrap();
        assert_eq!(s.vtep(), Ipv4Addr::new(10, 42, 3, 0));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let pods: Vec<_> = s.pod_addresses().collect();
        assert_eq!(pods.first(), Some(&Ipv4Addr::new(10, 42, 3, 2)));
        assert_eq!(pods.last(), Some(&Ipv4Addr::new(10, 42, 3, 254)));
        assert!(s.contains(Ipv4Addr::new(10, 42, 3, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 42, 4, 1)));
        assert!(matches!(
            "10.42.3.1/24".parse::<Subnet>(),
            Err(SubnetError::Cidr(CidrError::HostBits { .. }))
        ));
        assert_eq!(s.to_string(), "10.42.3.0/24");
    }

    #[test]
    fn prefix_lengths_outside_8_to_30_are_refused() {
        for bad in ["10.42.3.0/31", "10.0.0.0/7", "0.0.0.0/0"] {
            let err = bad.parse::<Subnet>().unwrap_err();
            assert!(
                matches!(err, SubnetError::PrefixLength { .. }),
                "{bad}: {err}"
            );
        }
        let tiny: Subnet = "10.42.3.0/30".parse().unwrap();
        assert_eq!(
            tiny.pod_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 42, 3, 2)]
        );
    }

    #[test]
    fn defaults_are_what_they_say() {
        let cluster: Subnet = "10.42.0.0/16".parse().unwrap();
        let services: Subnet = "10.43.0.0/16".parse().unwrap();
        assert_eq!(DEFAULT_CLUSTER_CIDR, cluster);
        assert_eq!(DEFAULT_SERVICE_CIDR, services);
    }

    #[test]
    fn stored_form_is_unchanged() {
        let s: Subnet = "10.42.1.0/24".parse().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"net":"10.42.1.0","len":24}"#);
        assert_eq!(serde_json::from_str::<Subnet>(&json).unwrap(), s);
        let host_bits = serde_json::from_str::<Subnet>(r#"{"net":"10.42.1.1","len":24}"#);
        assert!(host_bits.is_err(), "{host_bits:?}");
    }
}
