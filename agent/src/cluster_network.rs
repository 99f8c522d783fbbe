//! The cluster's address ranges and DNS address as this agent uses them.
//! The masters own them (`--cluster-cidr`, `--service-cidr`,
//! `--cluster-dns` of `skiff server`/`skiff master`) and tell every node
//! when it registers (`RegisterResponse.network`), so nobody repeats them
//! on every node; this agent's own flags override them ([`Overrides`]).
//!
//! - The cluster CIDR is the pod network: what leaves it is masqueraded.
//! - The service CIDR: what no Service rule translates is refused here.
//! - The cluster DNS address is the nameserver pods are given; this node's
//!   own DNS server answers there (`crate::dns`). Masters that name none
//!   (from before they did) mean the service CIDR's tenth address, as
//!   theirs defaults to.
//!
//! What the masters said is kept in `<data-dir>/network/cluster.json`, so
//! an agent restarted while no master answers sets its pod network up as
//! before (static stability).

use std::fmt::Display;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use skiff_proto::node as wire;

use crate::network::subnet::{Subnet, DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR};

/// The cluster network the pod network is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterNetwork {
    pub cluster_cidr: Subnet,
    pub service_cidr: Subnet,
    /// `None` from masters that name none.
    pub cluster_dns: Option<Ipv4Addr>,
}

/// What this agent was told to use instead of the masters' values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub cluster_cidr: Option<Subnet>,
    pub service_cidr: Option<Subnet>,
    pub cluster_dns: Option<Ipv4Addr>,
}

/// Why the cluster network cannot be known.
#[derive(Debug, thiserror::Error)]
pub enum ClusterNetworkError {
    #[error("the masters sent {field} {value:?}, which this agent cannot use ({reason}); check the masters' --{field}")]
    FromMasters {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}; remove the file to learn the cluster network from the masters again", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("saving {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ClusterNetworkError>;

/// Where the masters' cluster network is kept.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("network").join("cluster.json")
}

impl ClusterNetwork {
    /// What the masters sent, as the pod network takes it.
    pub fn from_wire(network: &wire::ClusterNetwork) -> Result<ClusterNetwork> {
        fn parse<T>(field: &'static str, value: &str) -> Result<T>
        where
            T: FromStr,
            T::Err: Display,
        {
            value
                .parse()
                .map_err(|e: T::Err| ClusterNetworkError::FromMasters {
                    field,
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
        }
        let cluster_dns: Option<Ipv4Addr> = match network.cluster_dns.as_str() {
            "" => None,
            dns => Some(parse("cluster-dns", dns)?),
        };
        Ok(ClusterNetwork {
            cluster_cidr: parse("cluster-cidr", &network.cluster_cidr)?,
            service_cidr: parse("service-cidr", &network.service_cidr)?,
            cluster_dns,
        })
    }

    /// The masters' cluster network kept in `path`; `None` when there is
    /// none yet.
    pub fn load(path: &Path) -> Result<Option<ClusterNetwork>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ClusterNetworkError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ClusterNetworkError::Parse {
                path: path.to_owned(),
                source,
            })
    }

    /// Keeps this in `path`, replacing it whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |source| ClusterNetworkError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text.map_err(fail)?).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// Which address of the service CIDR the cluster DNS is when nobody says.
const DEFAULT_DNS_OFFSET: u64 = 10;

impl ClusterNetwork {
    /// The cluster DNS address: as told, else the service CIDR's tenth.
    pub fn dns_address(&self) -> Ipv4Addr {
        self.cluster_dns
            .unwrap_or_else(|| self.service_cidr.net().nth(DEFAULT_DNS_OFFSET))
    }
}

impl Overrides {
    /// The cluster network to use: each value given here, else the
    /// masters' (`None`: the masters said nothing, as masters from before
    /// they did, so the defaults). A value given here that differs from
    /// the masters' is logged: the node may not work with the others.
    pub fn apply(&self, masters: Option<ClusterNetwork>) -> ClusterNetwork {
        let theirs = masters.unwrap_or(ClusterNetwork {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            service_cidr: DEFAULT_SERVICE_CIDR,
            cluster_dns: None,
        });
        if let Some(mine) = self.cluster_cidr.filter(|c| *c != theirs.cluster_cidr) {
            warn_differs("--cluster-cidr", mine, theirs.cluster_cidr);
        }
        if let Some(mine) = self.service_cidr.filter(|c| *c != theirs.service_cidr) {
            warn_differs("--service-cidr", mine, theirs.service_cidr);
        }
        if let (Some(mine), Some(masters)) = (self.cluster_dns, theirs.cluster_dns) {
            if mine != masters {
                warn_differs("--cluster-dns", mine, masters);
            }
        }
        ClusterNetwork {
            cluster_cidr: self.cluster_cidr.unwrap_or(theirs.cluster_cidr),
            service_cidr: self.service_cidr.unwrap_or(theirs.service_cidr),
            cluster_dns: self.cluster_dns.or(theirs.cluster_dns),
        }
    }
}

/// Logs that this agent's `flag` says `mine` where the masters say
/// `masters`.
fn warn_differs(flag: &str, mine: impl Display, masters: impl Display) {
    tracing::warn!(
        flag,
        agent = %mine,
        masters = %masters,
        "this agent's flag differs from the masters' value; it wins here, but the node may \
         not reach pods or Services the way the other nodes do"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(cluster: &str, services: &str, dns: &str) -> wire::ClusterNetwork {
        wire::ClusterNetwork {
            cluster_cidr: cluster.into(),
            service_cidr: services.into(),
            cluster_dns: dns.into(),
        }
    }

    fn subnet(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    #[test]
    fn what_the_masters_send_is_checked() {
        let network = sent("10.150.0.0/16", "10.151.0.0/16", "10.151.0.10");
        let got = ClusterNetwork::from_wire(&network).unwrap();
        assert_eq!(got.cluster_cidr, subnet("10.150.0.0/16"));
        assert_eq!(got.service_cidr, subnet("10.151.0.0/16"));
        assert_eq!(got.cluster_dns, Some(Ipv4Addr::new(10, 151, 0, 10)));
        let no_dns = sent("10.150.0.0/16", "10.151.0.0/16", "");
        let got = ClusterNetwork::from_wire(&no_dns).unwrap();
        assert_eq!(got.cluster_dns, None);
        let bad = sent("10.150.0.1/16", "10.151.0.0/16", "");
        let err = ClusterNetwork::from_wire(&bad).unwrap_err().to_string();
        assert!(err.contains("cluster-cidr \"10.150.0.1/16\""), "{err}");
    }

    #[test]
    fn flags_override_the_masters_and_defaults_stand_in_for_silent_masters() {
        let masters = ClusterNetwork::from_wire(&sent("10.150.0.0/16", "10.151.0.0/16", ""));
        let masters = masters.unwrap();
        assert_eq!(Overrides::default().apply(Some(masters)), masters);
        let mine = Overrides {
            service_cidr: Some(subnet("10.99.0.0/16")),
            cluster_dns: Some(Ipv4Addr::new(10, 99, 0, 10)),
            ..Overrides::default()
        };
        let used = mine.apply(Some(masters));
        assert_eq!(used.cluster_cidr, masters.cluster_cidr);
        assert_eq!(used.service_cidr, subnet("10.99.0.0/16"));
        assert_eq!(used.cluster_dns, Some(Ipv4Addr::new(10, 99, 0, 10)));
        let silent = Overrides::default().apply(None);
        assert_eq!(silent.cluster_cidr, DEFAULT_CLUSTER_CIDR);
        assert_eq!(silent.service_cidr, DEFAULT_SERVICE_CIDR);
        assert_eq!(silent.dns_address(), Ipv4Addr::new(10, 43, 0, 10));
        assert_eq!(used.dns_address(), Ipv4Addr::new(10, 99, 0, 10));
        // Masters that name none: their service CIDR's tenth address.
        assert_eq!(masters.dns_address(), Ipv4Addr::new(10, 151, 0, 10));
    }

    #[test]
    fn the_masters_network_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path());
        assert_eq!(ClusterNetwork::load(&path).unwrap(), None);
        let network = sent("10.150.0.0/16", "10.151.0.0/16", "10.151.0.10");
        let network = ClusterNetwork::from_wire(&network).unwrap();
        network.save(&path).unwrap();
        assert_eq!(ClusterNetwork::load(&path).unwrap(), Some(network));
        std::fs::write(&path, "{").unwrap();
        let err = ClusterNetwork::load(&path).unwrap_err().to_string();
        assert!(err.contains("cluster.json"), "{err}");
        assert!(err.contains("remove the file"), "{err}");
    }
}
