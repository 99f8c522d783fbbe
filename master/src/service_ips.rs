//! ClusterIPs for Services, from the service CIDR (10.43.0.0/16 unless
//! `--service-cidr` says otherwise), as Kubernetes' allocator gives them:
//! a Service of type ClusterIP (or NodePort, LoadBalancer) without
//! `spec.clusterIP` gets a free address above the first ten (kept for
//! cluster services, as k3s keeps .1 and .10); one that names an address
//! gets it if it is in the range and free; `None` makes a headless Service;
//! an ExternalName Service (a DNS alias) gets none (and loses its own when
//! turned into one; one turned back gets one as a create does).
//! An address is free again once its Service is deleted; `spec.clusterIP`
//! cannot change.
//!
//! No allocation scans the Services: which addresses are held comes from
//! the object cache's clusterIP index, kept by every replica from the
//! applied log (so it is consistent through Raft, as Kubernetes' range
//! allocation is through etcd), and a cursor makes finding a free one
//! O(1) amortised. Between choosing an address and the create being
//! applied, the address is reserved on the leader ([`Reservation`]), so
//! concurrent creates never get the same one and none of them waits for
//! another's Raft round. Whatever an allocator thought (a deposed or
//! lagging leader's), the state machine refuses a clusterIP another
//! Service holds (`WriteError::AddressTaken`), on every replica alike.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::store::cache::ObjectCache;
use skiff_objects::services::{self, Service};
use skiff_objects::Ipv4Net;

/// The default service CIDR (k3s' default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// Addresses at the start of the range never handed out automatically.
const RESERVED: u32 = 10;
/// What `spec.clusterIP` says for a headless Service.
pub const HEADLESS: &str = "None";
/// Which address of the range the cluster DNS Service has unless told
/// otherwise (k3s' 10.43.0.10): the last reserved one, so no Service gets
/// it by chance.
const CLUSTER_DNS_OFFSET: u64 = RESERVED as u64;

/// The cluster DNS address in service CIDR `range` unless told otherwise:
/// its tenth address.
pub fn default_cluster_dns(range: Ipv4Net) -> Ipv4Addr {
    range.nth(CLUSTER_DNS_OFFSET)
}

/// The `default/kubernetes` Service's address in service CIDR `range`: its
/// first, as Kubernetes gives it.
pub fn api_service_ip(range: Ipv4Net) -> Ipv4Addr {
    range.nth(1)
}

/// `spec.type` of a Service that is only a DNS alias.
const EXTERNAL_NAME: &str = "ExternalName";

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
}

/// The allocator: the range, the addresses chosen for creates not yet
/// applied, and where the next search starts.
#[derive(Debug)]
pub struct ServiceIps {
    range: Ipv4Net,
    pending: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    reserved: HashSet<Ipv4Addr>,
    /// The next address to try, as an offset into the range.
    cursor: u32,
}

/// An address held for a Service being created; released when dropped,
/// which the writer does once the create is applied (the cache then holds
/// it) or has failed (it is free again).
#[derive(Debug)]
pub struct Reservation<'a> {
    ips: &'a ServiceIps,
    ip: Option<Ipv4Addr>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.ips.pending().reserved.remove(&ip);
        }
    }
}

impl ServiceIps {
    /// For `range`; at least a /28 (16 addresses).
    pub fn new(range: Ipv4Net) -> Result<ServiceIps, ServiceIpError> {
        if range.len > 28 {
            return Err(ServiceIpError::RangeTooSmall { range });
        }
        Ok(ServiceIps {
            range,
            pending: Mutex::new(Pending {
                reserved: HashSet::new(),
                cursor: 1 + RESERVED,
            }),
        })
    }

    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills in (or checks) the clusterIP of a Service being created, given
    /// the addresses the cache says Services hold; keep the reservation
    /// until the create has been applied.
    pub fn assign(
        &self,
        cache: &ObjectCache,
        service: &mut Service,
    ) -> Result<Reservation<'_>, ServiceIpError> {
        if services::type_of(service) == EXTERNAL_NAME {
            return Ok(Reservation {
                ips: self,
                ip: None,
            });
        }
        let asked = services::cluster_ip(service).to_owned();
        let spec = service.spec.get_or_insert_with(Default::default);
        if asked == HEADLESS {
            spec.cluster_ips = Some(vec![HEADLESS.to_owned()]);
            return Ok(Reservation {
                ips: self,
                ip: None,
            });
        }
        let mut pending = self.pending();
        let ip = if asked.is_empty() {
            self.next_free(&mut pending, |ip| cache.cluster_ip_holder(ip).is_some())
                .ok_or(ServiceIpError::Exhausted { range: self.range })?
        } else {
            let ip: Ipv4Addr = asked.parse().map_err(|_| ServiceIpError::NotAnAddress {
                given: asked.clone(),
            })?;
            if !self.in_range(ip) {
                return Err(ServiceIpError::OutOfRange {
                    ip,
                    range: self.range,
                });
            }
            if let Some((namespace, name)) = cache.cluster_ip_holder(ip) {
                return Err(ServiceIpError::InUse {
                    ip,
                    owner: format!("{namespace}/{name}"),
                });
            }
            if pending.reserved.contains(&ip) {
                return Err(ServiceIpError::InUse {
                    ip,
                    owner: "being created at this moment".to_owned(),
                });
            }
            ip
        };
        pending.reserved.insert(ip);
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
        Ok(Reservation {
            ips: self,
            ip: Some(ip),
        })
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.bounds();
        (first..=last).contains(&u32::from(ip))
    }

    /// The first and last assignable addresses (network and broadcast
    /// addresses excluded).
    fn bounds(&self) -> (u32, u32) {
        let base = u32::from(self.range.addr);
        (base + 1, base + (self.range.size() - 2) as u32)
    }

    /// The next address from the cursor on, wrapping once round the
    /// automatic part of the range, that is neither `held` nor reserved.
    fn next_free(
        &self,
        pending: &mut Pending,
        held: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let base = u32::from(self.range.addr);
        let (first, last) = self.bounds();
        let (low, high) = (first - base + RESERVED, last - base);
        let span = high - low + 1;
        for step in 0..span {
            let offset = low + (pending.cursor.clamp(low, high) - low + step) % span;
            let ip = Ipv4Addr::from(base + offset);
            if !pending.reserved.contains(&ip) && !held(ip) {
                pending.cursor = if offset == high { low } else { offset + 1 };
                return Some(ip);
            }
        }
        None
    }
}

/// What kube-apiserver drops from an updated Service whose type no longer
/// has it, when the update sent it back unchanged (a GET-modify-PUT, or
/// `kubectl apply` of a manifest without it): a Service turned
/// ExternalName loses its clusterIP (and its address is free once the
/// update is applied). A clusterIP asked anew stays, for validation to
/// refuse.
pub fn drop_type_dependent_fields(old: &Service, new: &mut Service) {
    if services::type_of(new) != EXTERNAL_NAME || services::type_of(old) == EXTERNAL_NAME {
        return;
    }
    let (Some(old_spec), Some(spec)) = (old.spec.as_ref(), new.spec.as_mut()) else {
        return;
    };
    if spec.cluster_ip == old_spec.cluster_ip {
        spec.cluster_ip = None;
    }
    if spec.cluster_ips == old_spec.cluster_ips {
        spec.cluster_ips = None;
    }
}

/// Keeps an updated Service's clusterIP: empty means "unchanged", another
/// address is refused (the field is immutable, as in Kubernetes). A
/// Service turned ExternalName has none; one that was ExternalName gets
/// one as a new Service does ([`needs_address`], then [`ServiceIps::assign`]).
pub fn keep_on_update(old: &Service, new: &mut Service) -> Result<(), ServiceIpError> {
    if services::type_of(new) == EXTERNAL_NAME || services::type_of(old) == EXTERNAL_NAME {
        return Ok(());
    }
    let (had, asked) = (
        services::cluster_ip(old),
        services::cluster_ip(new).to_owned(),
    );
    if !asked.is_empty() && asked != had {
        return Err(ServiceIpError::Immutable {
            old: had.to_owned(),
            asked,
        });
    }
    let old_spec = old.spec.clone().unwrap_or_default();
    let spec = new.spec.get_or_insert_with(Default::default);
    spec.cluster_ip = old_spec.cluster_ip;
    spec.cluster_ips = old_spec.cluster_ips;
    Ok(())
}

/// Whether an update from `old` to `new` needs a clusterIP chosen, as a
/// create does: an ExternalName Service turned into another type.
pub fn needs_address(old: &Service, new: &Service) -> bool {
    services::type_of(old) == EXTERNAL_NAME && services::type_of(new) != EXTERNAL_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use skiff_proto::api::EventType;

    use crate::store::cache::CachedChange;
    use skiff_objects::Kind;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 43, 0, last)
    }

    #[test]
    fn the_cluster_dns_address_is_the_tenth_and_never_handed_out() {
        let range: Ipv4Net = DEFAULT_SERVICE_CIDR.parse().unwrap();
        assert_eq!(default_cluster_dns(range), ip(10));
        let ips = ServiceIps::new(range).unwrap();
        assert_eq!(next(&ips, &BTreeSet::new()), Some(ip(11)));
    }

    fn next(ips: &ServiceIps, held: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        ips.next_free(&mut ips.pending(), |ip| held.contains(&ip))
    }

    #[test]
    fn addresses_start_after_the_reserved_ones_and_skip_taken_ones() {
        let ips = ServiceIps::new("10.43.0.0/16".parse().unwrap()).unwrap();
        let mut held = BTreeSet::new();
        assert_eq!(next(&ips, &held), Some(ip(11)));
        held.insert(ip(12));
        held.insert(ip(13));
        // The cursor moved past .11; .12 and .13 are held.
        assert_eq!(next(&ips, &held), Some(ip(14)));
        assert!(ips.in_range(Ipv4Addr::new(10, 43, 255, 254)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!ips.in_range(Ipv4Addr::new(10, 42, 0, 5)));
    }

    #[test]
    fn the_cursor_wraps_round_to_addresses_freed_behind_it() {
        let ips = ServiceIps::new("10.43.0.0/28".parse().unwrap()).unwrap();
        // .11 to .14 are the automatic part of a /28.
        let got: Vec<_> = (0..4).map(|_| next(&ips, &BTreeSet::new())).collect();
        assert_eq!(
            got,
            [Some(ip(11)), Some(ip(12)), Some(ip(13)), Some(ip(14))]
        );
        let held: BTreeSet<_> = [ip(11), ip(13), ip(14)].into();
        assert_eq!(next(&ips, &held), Some(ip(12)));
        let full: BTreeSet<_> = (11..=14).map(ip).collect();
        assert_eq!(next(&ips, &full), None);
        assert!(ServiceIps::new("10.43.0.0/29".parse().unwrap()).is_err());
    }

    fn spec(service_type: &str, cluster_ip: &str) -> services::ServiceSpec {
        let set = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        services::ServiceSpec {
            type_: set(service_type),
            cluster_ip: set(cluster_ip),
            ..Default::default()
        }
    }

    fn service(cluster_ip: &str) -> Service {
        Service {
            metadata: skiff_objects::typed::meta::ObjectMeta {
                name: Some("s".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec("", cluster_ip)),
            ..Default::default()
        }
    }

    fn with_spec(spec: services::ServiceSpec) -> Service {
        Service {
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn concurrent_creates_never_share_an_address_and_held_ones_are_refused() {
        let ips = ServiceIps::new("10.43.0.0/16".parse().unwrap()).unwrap();
        let cache = ObjectCache::default();
        let mut a = service("");
        let mut b = service("");
        let first = ips.assign(&cache, &mut a).unwrap();
        let second = ips.assign(&cache, &mut b).unwrap();
        let (a_ip, b_ip) = (
            services::cluster_ip(&a).to_owned(),
            services::cluster_ip(&b).to_owned(),
        );
        assert_ne!(a_ip, b_ip);
        assert_eq!(
            a.spec.as_ref().unwrap().cluster_ips,
            Some(vec![a_ip.clone()])
        );
        // Asking for an address another create has reserved is refused.
        let e = ips.assign(&cache, &mut service(&a_ip)).unwrap_err();
        assert!(matches!(e, ServiceIpError::InUse { .. }), "{e}");
        // Once applied, the cache holds it; the reservation can go.
        let meta = skiff_proto::v1::ObjectMeta {
            name: "a".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let stored = services::object(meta, spec("", &a_ip), None);
        cache.apply(
            &[CachedChange {
                kind: Kind::Service,
                event_type: EventType::Added,
                object: Arc::new(stored),
                encoded_len: 10,
            }],
            1,
        );
        drop(first);
        let e = ips.assign(&cache, &mut service(&a_ip)).unwrap_err();
        assert!(
            e.to_string().contains("allocated to Service default/a"),
            "{e}"
        );
        // A failed create's reservation frees the address.
        drop(second);
        ips.assign(&cache, &mut service(&b_ip)).unwrap();
        let mut headless = service(HEADLESS);
        ips.assign(&cache, &mut headless).unwrap();
        assert_eq!(
            headless.spec.unwrap().cluster_ips,
            Some(vec![HEADLESS.to_owned()])
        );
    }

    #[test]
    fn the_cluster_ip_is_immutable() {
        let mut old = with_spec(spec("", "10.43.0.11"));
        old.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.43.0.11".into()]);
        let mut same = Service::default();
        keep_on_update(&old, &mut same).unwrap();
        assert_eq!(services::cluster_ip(&same), "10.43.0.11");
        let mut other = with_spec(spec("", "10.43.0.99"));
        let e = keep_on_update(&old, &mut other).unwrap_err().to_string();
        assert!(e.contains("immutable"), "{e}");
        let mut alias = with_spec(spec(EXTERNAL_NAME, ""));
        alias.spec.as_mut().unwrap().external_name = Some("db.example.com".into());
        // Turned ExternalName with its old address sent back (as kubectl
        // apply sends it): the address is dropped, as kube-apiserver does.
        alias.spec.as_mut().unwrap().cluster_ip = Some("10.43.0.11".into());
        alias.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.43.0.11".into()]);
        drop_type_dependent_fields(&old, &mut alias);
        keep_on_update(&old, &mut alias).unwrap();
        assert_eq!(services::cluster_ip(&alias), "");
        assert_eq!(alias.spec.as_ref().unwrap().cluster_ips, None);
        assert!(!needs_address(&old, &alias));
        // A new address asked with the change is left for validation.
        let mut asked = alias.clone();
        asked.spec.as_mut().unwrap().cluster_ip = Some("10.43.0.12".into());
        drop_type_dependent_fields(&old, &mut asked);
        assert_eq!(services::cluster_ip(&asked), "10.43.0.12");
        // Back from ExternalName: an address is chosen as for a create.
        let mut back = with_spec(spec("ClusterIP", ""));
        keep_on_update(&alias, &mut back).unwrap();
        assert!(needs_address(&alias, &back));
        assert_eq!(services::cluster_ip(&back), "");
    }

    #[test]
    fn an_external_name_service_gets_no_address_and_the_api_service_the_first() {
        let range: Ipv4Net = DEFAULT_SERVICE_CIDR.parse().unwrap();
        let ips = ServiceIps::new(range).unwrap();
        let mut alias = service("");
        alias.spec.as_mut().unwrap().type_ = Some(EXTERNAL_NAME.into());
        let reservation = ips.assign(&ObjectCache::default(), &mut alias).unwrap();
        assert_eq!(reservation.ip, None);
        assert_eq!(services::cluster_ip(&alias), "");
        assert_eq!(alias.spec.unwrap().cluster_ips, None);
        assert_eq!(api_service_ip(range), ip(1));
    }
}
