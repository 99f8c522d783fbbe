//! The cluster's two address ranges, which masters and agents must agree
//! on: the pod network (cluster CIDR), of which masters give every node a
//! subnet and out of which agents masquerade, and the service CIDR, from
//! which masters allocate clusterIPs and in which agents refuse what no
//! Service rule translates. One flag group, so that `skiff server`, which
//! is both, defines each flag once; the defaults are the master crate's.

use std::str::FromStr;

use skiff_master::controllers::node_ipam::PodCidrConfig;
use skiff_master::service_ips::{ServiceIps, DEFAULT_SERVICE_CIDR};
use skiff_values::Ipv4Net;

/// A cluster range flag that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterNetworkError {
    #[error("--cluster-cidr: {0}")]
    ClusterCidr(String),
    #[error("--service-cidr: {0}")]
    ServiceCidr(String),
}

/// `--cluster-cidr` and `--service-cidr`, of `skiff master`, `skiff agent`
/// and `skiff server`.
#[derive(Debug, clap::Args)]
pub struct ClusterNetworkFlags {
    /// The pod network: masters give every node a subnet of it; an agent
    /// needs it as the masters have it, for masquerading.
    #[arg(long, default_value_t = PodCidrConfig::default().cluster.to_string())]
    pub cluster_cidr: String,
    /// Where Services' clusterIPs come from; an agent needs it as the
    /// masters have it: traffic to it that no Service rule translates is
    /// refused on its node.
    #[arg(long, default_value = DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
}

impl ClusterNetworkFlags {
    /// `--cluster-cidr` as `T`: the master's `Ipv4Net` or the agent's
    /// `Subnet`.
    pub fn parse_cluster_cidr<T>(&self) -> Result<T, ClusterNetworkError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.cluster_cidr
            .parse()
            .map_err(|e: T::Err| ClusterNetworkError::ClusterCidr(e.to_string()))
    }

    /// `--service-cidr` as `T`: the master's `Ipv4Net` or the agent's
    /// `Subnet`.
    pub fn parse_service_cidr<T>(&self) -> Result<T, ClusterNetworkError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.service_cidr
            .parse()
            .map_err(|e: T::Err| ClusterNetworkError::ServiceCidr(e.to_string()))
    }

    /// `--service-cidr` as the masters allocate from it: big enough for
    /// Services.
    pub fn service_range(&self) -> Result<Ipv4Net, ClusterNetworkError> {
        let range: Ipv4Net = self.parse_service_cidr()?;
        // Only the check: the master builds its own allocator from the range.
        ServiceIps::new(range).map_err(|e| ClusterNetworkError::ServiceCidr(e.to_string()))?;
        Ok(range)
    }
}
