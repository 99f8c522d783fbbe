//! ClusterIPs for Services, from the service CIDR (10.43.0.0/16 unless
//! `--service-cidr` says otherwise), as Kubernetes' allocator gives them:
//! a Service of type ClusterIP (or NodePort, LoadBalancer) without
//! `spec.clusterIP` gets the lowest free address above the first ten
//! (kept for cluster services, as k3s keeps .1 and .10); one that names
//! an address gets it if it is in the range and free; `None` makes a
//! headless Service. Assignments happen on the leader, one at a time, so
//! two Services never get the same address. An address is free again
//! once its Service is deleted; `spec.clusterIP` cannot change.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

use crate::objects::{Kind, ObjectExt};
use crate::store::state_machine::{ObjectStore, StateMachineError};
use skiff_values::Ipv4Net;

/// The default service CIDR (k3s' default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// Addresses at the start of the range never handed out automatically.
const RESERVED: u32 = 10;
/// What `spec.clusterIP` says for a headless Service.
pub const HEADLESS: &str = "None";

/// Why a Service cannot have the clusterIP it asked for (or any). Nothing
/// is stored when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ServiceIpError {
    #[error("{range}: too small for Services (at least a /28)")]
    RangeTooSmall { range: Ipv4Net },
    #[error("spec.clusterIP: the service CIDR {range} has no free address left")]
    Exhausted { range: Ipv4Net },
    #[error("spec.clusterIP: {given:?} is not an IPv4 address or \"None\"")]
    NotAnAddress { given: String },
    #[error("spec.clusterIP: {ip} is not in the service CIDR {range}")]
    OutOfRange { ip: Ipv4Addr, range: Ipv4Net },
    #[error("spec.clusterIP: {ip} is already allocated to Service {owner}")]
    InUse { ip: Ipv4Addr, owner: String },
    #[error("spec.clusterIP: field is immutable (is {old:?}, asked {asked:?}); delete and recreate the Service to change it")]
    Immutable { old: String, asked: String },
    #[error(transparent)]
    Store(#[from] StateMachineError),
}

/// The allocator: the range, and a lock that makes assignments one at a
/// time.
#[derive(Debug)]
pub struct ServiceIps {
    range: Ipv4Net,
    assigning: tokio::sync::Mutex<()>,
}

impl ServiceIps {
    /// For `range`; at least a /28 (16 addresses).
    pub fn new(range: Ipv4Net) -> Result<ServiceIps, ServiceIpError> {
        if range.len > 28 {
            return Err(ServiceIpError::RangeTooSmall { range });
        }
        Ok(ServiceIps {
            range,
            assigning: tokio::sync::Mutex::new(()),
        })
    }

    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// Held across assigning and storing a new Service.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.assigning.lock().await
    }

    /// Fills in (or checks) the clusterIP of a Service being created, given
    /// the addresses Services already hold. Call with [`ServiceIps::lock`].
    pub fn assign(
        &self,
        store: &ObjectStore,
        service: &mut v1::Service,
    ) -> Result<(), ServiceIpError> {
        let spec = service.spec.get_or_insert_with(Default::default);
        if spec.cluster_ip == HEADLESS {
            spec.cluster_ips = vec![HEADLESS.to_owned()];
            return Ok(());
        }
        let (held, _) = store.list(Kind::Service, None)?;
        let held: Vec<(Ipv4Addr, String)> = held
            .into_iter()
            .filter_map(|o| {
                let name = format!("{}/{}", o.meta().namespace, o.meta().name);
                match o.kind {
                    Some(Body::Service(s)) => Some((s.spec?.cluster_ip.parse().ok()?, name)),
                    _ => None,
                }
            })
            .collect();
        let ip = if spec.cluster_ip.is_empty() {
            let taken: BTreeSet<Ipv4Addr> = held.iter().map(|(ip, _)| *ip).collect();
            self.first_free(&taken)
                .ok_or(ServiceIpError::Exhausted { range: self.range })?
        } else {
            let ip: Ipv4Addr =
                spec.cluster_ip
                    .parse()
                    .map_err(|_| ServiceIpError::NotAnAddress {
                        given: spec.cluster_ip.clone(),
                    })?;
            if !self.in_range(ip) {
                return Err(ServiceIpError::OutOfRange {
                    ip,
                    range: self.range,
                });
            }
            if let Some((_, owner)) = held.iter().find(|(held, _)| *held == ip) {
                return Err(ServiceIpError::InUse {
                    ip,
                    owner: owner.clone(),
                });
            }
            ip
        };
        spec.cluster_ip = ip.to_string();
        spec.cluster_ips = vec![spec.cluster_ip.clone()];
        Ok(())
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.bounds();
        (first..=last).contains(&u32::from(ip))
    }

    /// The first and last assignable addresses (network and broadcast
    /// addresses excluded).
    fn bounds(&self) -> (u32, u32) {
        let base = u32::from(self.range.addr);
        let size = 1u64 << (32 - self.range.len);
        (base + 1, base + (size - 2) as u32)
    }

    fn first_free(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (first, last) = self.bounds();
        (first + RESERVED..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
    }
}

/// Keeps an updated Service's clusterIP: empty means "unchanged", another
/// address is refused (the field is immutable, as in Kubernetes).
pub fn keep_on_update(old: &v1::Service, new: &mut v1::Service) -> Result<(), ServiceIpError> {
    let old_spec = old.spec.clone().unwrap_or_default();
    let spec = new.spec.get_or_insert_with(Default::default);
    if spec.cluster_ip.is_empty() {
        spec.cluster_ip = old_spec.cluster_ip;
        spec.cluster_ips = old_spec.cluster_ips;
        return Ok(());
    }
    if spec.cluster_ip != old_spec.cluster_ip {
        return Err(ServiceIpError::Immutable {
            old: old_spec.cluster_ip,
            asked: spec.cluster_ip.clone(),
        });
    }
    spec.cluster_ips = old_spec.cluster_ips;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_start_after_the_reserved_ones_and_skip_taken_ones() {
        let ips = ServiceIps::new("10.43.0.0/16".parse().unwrap()).unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(ips.first_free(&taken), Some(Ipv4Addr::new(10, 43, 0, 11)));
        taken.insert(Ipv4Addr::new(10, 43, 0, 11));
        taken.insert(Ipv4Addr::new(10, 43, 0, 12));
        assert_eq!(ips.first_free(&taken), Some(Ipv4Addr::new(10, 43, 0, 13)));
        assert!(ips.in_range(Ipv4Addr::new(10, 43, 255, 254)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 42, 0, 5)));
    }

    #[test]
    fn a_full_range_has_nothing_to_give() {
        let ips = ServiceIps::new("10.43.0.0/28".parse().unwrap()).unwrap();
        let taken: BTreeSet<Ipv4Addr> = (11..=14).map(|i| Ipv4Addr::new(10, 43, 0, i)).collect();
        assert_eq!(ips.first_free(&taken), None);
        assert!(ServiceIps::new("10.43.0.0/29".parse().unwrap()).is_err());
    }

    #[test]
    fn the_cluster_ip_is_immutable() {
        let old = v1::Service {
            spec: Some(v1::ServiceSpec {
                cluster_ip: "10.43.0.11".into(),
                cluster_ips: vec!["10.43.0.11".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut same = v1::Service::default();
        keep_on_update(&old, &mut same).unwrap();
        assert_eq!(same.spec.unwrap().cluster_ip, "10.43.0.11");
        let mut other = v1::Service {
            spec: Some(v1::ServiceSpec {
                cluster_ip: "10.43.0.99".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = keep_on_update(&old, &mut other).unwrap_err().to_string();
        assert!(e.contains("immutable"), "{e}");
    }
}
