//! The cluster's address ranges and DNS address, which masters and agents
//! must agree on: the pod network (cluster CIDR), of which masters give
//! every node a subnet and out of which agents masquerade; the service
//! CIDR, from which masters allocate clusterIPs and in which agents refuse
//! what no Service rule translates; and the cluster DNS Service's address.
//!
//! The masters' flags define them ([`ClusterNetworkFlags`], of `skiff
//! master` and `skiff server`; one group, so that a server, which is both,
//! defines each flag once; the defaults are the master crate's). Masters
//! tell every agent when it registers, so nobody repeats them on every
//! node: an agent's own flags ([`AgentNetworkFlags`]) are overrides, unset
//! by default.

use std::fmt::Display;
use std::net::Ipv4Addr;
use std::str::FromStr;

use skiff_agent::cluster_network::Overrides;
use skiff_agent::network::subnet::Subnet;
use skiff_master::controllers::node_ipam::PodCidrConfig;
use skiff_master::node_ports::{NodePortRange, DEFAULT_NODE_PORT_RANGE};
use skiff_master::service_ips::{default_cluster_dns, ServiceIps, DEFAULT_SERVICE_CIDR};
use skiff_objects::Ipv4Net;

/// A cluster range flag that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterNetworkError {
    #[error("--cluster-cidr: {0}")]
    ClusterCidr(String),
    #[error("--service-cidr: {0}")]
    ServiceCidr(String),
    #[error("--cluster-dns {dns}: not in the service CIDR {range}; give one of its addresses")]
    ClusterDns { dns: Ipv4Addr, range: Ipv4Net },
    #[error("{0}")]
    NodePortRange(String),
}

/// `value` as a `T`, or why not.
fn parse<T>(value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|e: T::Err| e.to_string())
}

/// `--cluster-cidr`, `--service-cidr` and `--cluster-dns` of `skiff
/// master` and `skiff server`.
#[derive(Debug, clap::Args)]
pub struct ClusterNetworkFlags {
    /// The pod network: masters give every node a subnet of it; agents
    /// learn it when they register.
    #[arg(long, default_value_t = PodCidrConfig::default().cluster.to_string())]
    pub cluster_cidr: String,
    /// Where Services' clusterIPs come from; agents learn it when they
    /// register, and refuse traffic to it that no Service rule translates.
    #[arg(long, default_value = DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The cluster DNS Service's address, told to every node (default: the
    /// tenth address of --service-cidr, 10.43.0.10). Not used by pods yet:
    /// no cluster DNS server runs, so they get their node's resolv.conf.
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// Where Services' nodePorts come from (FIRST-LAST); masters only.
    #[arg(long, default_value = DEFAULT_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
}

impl ClusterNetworkFlags {
    /// `--service-node-port-range`.
    pub fn node_port_range(&self) -> Result<NodePortRange, ClusterNetworkError> {
        parse(&self.service_node_port_range).map_err(ClusterNetworkError::NodePortRange)
    }

    /// `--cluster-cidr`.
    pub fn cluster_range(&self) -> Result<Ipv4Net, ClusterNetworkError> {
        parse(&self.cluster_cidr).map_err(ClusterNetworkError::ClusterCidr)
    }

    /// `--service-cidr` as the masters allocate from it: big enough for
    /// Services.
    pub fn service_range(&self) -> Result<Ipv4Net, ClusterNetworkError> {
        let range: Ipv4Net = parse(&self.service_cidr).map_err(ClusterNetworkError::ServiceCidr)?;
        // Only the check: the master builds its own allocator from the range.
        ServiceIps::new(range).map_err(|e| ClusterNetworkError::ServiceCidr(e.to_string()))?;
        Ok(range)
    }

    /// `--cluster-dns`, or the service CIDR's tenth address; inside the
    /// service CIDR either way.
    pub fn cluster_dns(&self) -> Result<Ipv4Addr, ClusterNetworkError> {
        let range = self.service_range()?;
        match self.cluster_dns {
            None => Ok(default_cluster_dns(range)),
            Some(dns) if range.contains_addr(dns) => Ok(dns),
            Some(dns) => Err(ClusterNetworkError::ClusterDns { dns, range }),
        }
    }
}

/// `--cluster-cidr`, `--service-cidr` and `--cluster-dns` of `skiff
/// agent`: what to use instead of what the masters say.
#[derive(Debug, clap::Args)]
pub struct AgentNetworkFlags {
    /// The pod network, when not the masters' (default: theirs, learned
    /// when the node registers).
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The service CIDR, when not the masters' (default: theirs, learned
    /// when the node registers).
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// The cluster DNS address, when not the masters' (default: theirs,
    /// learned when the node registers). Not used by pods yet (a warning
    /// says so): they get the node's resolv.conf.
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
}

impl AgentNetworkFlags {
    /// The values given, checked as the pod network takes them.
    pub fn overrides(&self) -> Result<Overrides, ClusterNetworkError> {
        let cluster_cidr = self.cluster_cidr.as_deref().map(parse::<Subnet>);
        let service_cidr = self.service_cidr.as_deref().map(parse::<Subnet>);
        Ok(Overrides {
            cluster_cidr: cluster_cidr
                .transpose()
                .map_err(ClusterNetworkError::ClusterCidr)?,
            service_cidr: service_cidr
                .transpose()
                .map_err(ClusterNetworkError::ServiceCidr)?,
            cluster_dns: self.cluster_dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masters(cluster_dns: Option<Ipv4Addr>, service_cidr: &str) -> ClusterNetworkFlags {
        ClusterNetworkFlags {
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: service_cidr.into(),
            cluster_dns,
            service_node_port_range: DEFAULT_NODE_PORT_RANGE.into(),
        }
    }

    #[test]
    fn the_cluster_dns_address_defaults_into_the_service_cidr() {
        let dns = |given, range| masters(given, range).cluster_dns();
        assert_eq!(
            dns(None, "10.43.0.0/16").unwrap(),
            Ipv4Addr::new(10, 43, 0, 10)
        );
        assert_eq!(
            dns(None, "172.20.0.0/16").unwrap(),
            Ipv4Addr::new(172, 20, 0, 10)
        );
        let given = Ipv4Addr::new(10, 43, 0, 53);
        assert_eq!(dns(Some(given), "10.43.0.0/16").unwrap(), given);
        let outside = dns(Some(Ipv4Addr::new(10, 44, 0, 10)), "10.43.0.0/16");
        let err = outside.unwrap_err().to_string();
        assert!(err.contains("--cluster-dns 10.44.0.10"), "{err}");
    }

    #[test]
    fn an_agent_overrides_only_what_it_is_given() {
        let none = AgentNetworkFlags {
            cluster_cidr: None,
            service_cidr: None,
            cluster_dns: None,
        };
        assert_eq!(none.overrides().unwrap(), Overrides::default());
        let some = AgentNetworkFlags {
            cluster_cidr: Some("10.50.0.0/16".into()),
            ..none
        };
        let overrides = some.overrides().unwrap();
        let expected: Subnet = "10.50.0.0/16".parse().unwrap();
        assert_eq!(overrides.cluster_cidr, Some(expected));
        assert_eq!(overrides.service_cidr, None);
        let bad = AgentNetworkFlags {
            service_cidr: Some("10.43.0.1/16".into()),
            ..some
        };
        let err = bad.overrides().unwrap_err().to_string();
        assert!(err.starts_with("--service-cidr"), "{err}");
    }
}
