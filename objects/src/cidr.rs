//! IPv4 networks in CIDR notation (`10.42.0.0/16`): the cluster's pod and
//! service ranges and each node's `spec.podCIDR`. Host bits must be zero,
//! as kube-controller-manager and kube-apiserver require, so a typo such as
//! `10.42.0.1/16` is refused instead of quietly meaning `10.42.0.0/16`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its first address and prefix length.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Ipv4Net {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub len: u8,
}

/// Why a string is not an IPv4 CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{given:?} is not a CIDR (want a.b.c.d/len, for example 10.42.0.0/16)")]
    NoPrefix { given: String },
    #[error("{given:?}: {addr:?} is not an IPv4 address")]
    BadAddress { given: String, addr: String },
    #[error("{given:?}: prefix length must be 0..=32")]
    BadPrefix { given: String },
    #[error("{given:?}: host bits are set; the network is {network}")]
    HostBits { given: String, network: Ipv4Net },
}

impl Ipv4Net {
    /// The network `addr/len`, with host bits cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        let len = len.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    /// The netmask as an integer.
    pub fn mask(&self) -> u32 {
        mask(self.len)
    }

    /// How many addresses the network spans, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The `i`-th address from the network address (0 is the network
    /// address itself); wraps within the address space, so callers keep
    /// `i` below [`Ipv4Net::size`].
    pub fn nth(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(i as u32))
    }

    /// Whether `other` lies wholly inside this network.
    pub fn contains(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && u32::from(other.addr) & self.mask() == u32::from(self.addr)
    }

    /// Whether `ip` is one of this network's addresses.
    pub fn contains_addr(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// `s` as a network where host bits may be set and are cleared
    /// (`192.168.1.7/24` is `192.168.1.0/24`), as Kubernetes reads
    /// `loadBalancerSourceRanges`; a bare address is a /32.
    pub fn parse_lenient(s: &str) -> Result<Ipv4Net, CidrError> {
        let s = s.trim();
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let address: Ipv4Addr = addr.parse().map_err(|_| CidrError::BadAddress {
            given: s.to_owned(),
            addr: addr.to_owned(),
        })?;
        let len: u8 =
            len.parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| CidrError::BadPrefix {
                    given: s.to_owned(),
                })?;
        Ok(Ipv4Net::new(address, len))
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Ipv4Net, CidrError> {
        let (addr, len) = s.split_once('/').ok_or_else(|| CidrError::NoPrefix {
            given: s.to_owned(),
        })?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::BadAddress {
            given: s.to_owned(),
            addr: addr.to_owned(),
        })?;
        let len: u8 =
            len.parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| CidrError::BadPrefix {
                    given: s.to_owned(),
                })?;
        let network = Ipv4Net::new(addr, len);
        if network.addr != addr {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parsing_clears_host_bits_and_takes_bare_addresses() {
        let net = Ipv4Net::parse_lenient(" 192.168.1.7/24 ").unwrap();
        assert_eq!(net.to_string(), "192.168.1.0/24");
        assert_eq!(Ipv4Net::parse_lenient("10.0.0.9").unwrap().len, 32);
        assert!(Ipv4Net::parse_lenient("10.0.0.0/33").is_err());
        assert!(Ipv4Net::parse_lenient("example.com/8").is_err());
    }

    #[test]
    fn parses_networks_and_refuses_what_is_not_one() {
        let net: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        assert_eq!(net, Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16));
        assert_eq!(net.to_string(), "10.42.0.0/16");
        assert_eq!("0.0.0.0/0".parse::<Ipv4Net>().unwrap().size(), 1 << 32);
        assert!(matches!(
            "10.42.0.1/16".parse::<Ipv4Net>(),
            Err(CidrError::HostBits { .. })
        ));
        let e = "10.42.0.1/16".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(e.contains("the network is 10.42.0.0/16"), "{e}");
        assert!(matches!(
            "10.42.0.0".parse::<Ipv4Net>(),
            Err(CidrError::NoPrefix { .. })
        ));
        assert!(matches!(
            "10.42.0.0/33".parse::<Ipv4Net>(),
            Err(CidrError::BadPrefix { .. })
        ));
        assert!(matches!(
            "10.42.0/16".parse::<Ipv4Net>(),
            Err(CidrError::BadAddress { .. })
        ));
    }

    #[test]
    fn containment_of_networks_and_addresses() {
        let cluster: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        let node: Ipv4Net = "10.42.3.0/24".parse().unwrap();
        assert!(cluster.contains(&node));
        assert!(!node.contains(&cluster));
        assert!(cluster.contains(&cluster));
        assert!(node.contains_addr(Ipv4Addr::new(10, 42, 3, 77)));
        assert!(!node.contains_addr(Ipv4Addr::new(10, 42, 4, 1)));
        assert_eq!(node.nth(1), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(node.size(), 256);
    }
}
