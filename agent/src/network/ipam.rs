//! Pod addresses from the node's subnet, persisted under the data dir
//! (`network/ipam.json`, replaced atomically), so no address is handed out
//! twice and a pod keeps its address across agent restarts. A different
//! subnet (the node was re-registered elsewhere) starts a fresh table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::subnet::Subnet;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Table {
    subnet: Option<Subnet>,
    /// Pod UID → address.
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// The allocation table of one node.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    subnet: Subnet,
    table: Table,
}

impl Ipam {
    pub fn load(path: &Path, subnet: Subnet) -> std::io::Result<Ipam> {
        let mut table: Table = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "unreadable IPAM table; starting a new one");
                Table::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::default(),
            Err(e) => return Err(e),
        };
        if table.subnet != Some(subnet) {
            table = Table {
                subnet: Some(subnet),
                allocations: BTreeMap::new(),
            };
        }
        Ok(Ipam {
            path: path.to_path_buf(),
            subnet,
            table,
        })
    }

    fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&self.table).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.path)
    }

    /// The pod's address: the one it has, else the lowest free one.
    pub fn allocate(&mut self, uid: &str) -> std::io::Result<Ipv4Addr> {
        if let Some(ip) = self.table.allocations.get(uid) {
            return Ok(*ip);
        }
        let used: std::collections::BTreeSet<Ipv4Addr> =
            self.table.allocations.values().copied().collect();
        let ip = self
            .subnet
            .pod_addresses()
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                std::io::Error::other(format!("no free address left in {}", self.subnet))
            })?;
        self.table.allocations.insert(uid.to_string(), ip);
        if let Err(e) = self.save() {
            self.table.allocations.remove(uid);
            return Err(e);
        }
        Ok(ip)
    }

    pub fn release(&mut self, uid: &str) -> std::io::Result<()> {
        if self.table.allocations.remove(uid).is_some() {
            self.save()?;
        }
        Ok(())
    }

    pub fn allocated(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.table.allocations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_kept_and_reused_after_release() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ipam.json");
        let subnet: Subnet = "10.42.1.0/24".parse().unwrap();
        let mut ipam = Ipam::load(&path, subnet).unwrap();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 1, 2));
        assert_eq!(b, Ipv4Addr::new(10, 42, 1, 3));
        assert_eq!(ipam.allocate("a").unwrap(), a, "same pod, same address");
        // A restarted agent sees the same table.
        let mut again = Ipam::load(&path, subnet).unwrap();
        assert_eq!(again.allocate("b").unwrap(), b);
        again.release("a").unwrap();
        assert_eq!(
            again.allocate("c").unwrap(),
            a,
            "freed addresses are reused"
        );
        // Another subnet starts over.
        let other = Ipam::load(&path, "10.42.9.0/24".parse().unwrap()).unwrap();
        assert!(other.allocated().is_empty());
    }
}
