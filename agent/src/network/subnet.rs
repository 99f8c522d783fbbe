//! A node's pod subnet (`spec.podCIDR`, a `/24` by default) and the
//! addresses inside it: `.0` is the node's VTEP address on the VXLAN device
//! (as flannel does), `.1` the local bridge's gateway, and `.2` up to the
//! last address before broadcast go to pods.

use std::net::Ipv4Addr;

/// An IPv4 network.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + i)
    }

    /// The address on the VXLAN device that peers route this subnet via.
    pub fn vtep(&self) -> Ipv4Addr {
        self.nth(0)
    }

    /// The bridge's address: pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Addresses pods may get.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = 1u64 << (32 - self.len);
        (2..size.saturating_sub(1)).map(|i| self.nth(i as u32))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.net)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (net, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let net: Ipv4Addr = net
            .parse()
            .map_err(|_| format!("{s:?}: not an IPv4 network"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("{s:?}: prefix length must be 8..=30"))?;
        let subnet = Subnet { net, len };
        if u32::from(net) & !subnet.mask() != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(subnet)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
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
        assert!("10.42.3.1/24".parse::<Subnet>().is_err());
    }
}
