//! What cluster DNS answers from: the agent's own index of the cluster's
//! Services and their ready endpoints, built from the lists the agent
//! follows from the masters (the same ones its Service rules come from).
//! Only what DNS names need is kept (addresses, port names, endpoint host
//! names), nothing is turned into records ahead of time: answers are made
//! per query ([`super::cluster_zone`]), so a thousand Services cost a
//! few hundred kilobytes, not a zone.
//!
//! The index is laid out for an agent's memory: Services and reverse
//! names are each one sorted `Vec` (binary search, no hash table's empty
//! buckets), every list is allocated at its exact length, and a
//! namespace's, a Service's and an endpoint's names are shared (`Arc<str>`)
//! by every entry that names them, instead of a `String` each.
//!
//! The index is replaced whole on every list ([`SharedIndex`]); while no
//! master answers, the last one stays, and DNS keeps answering from it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use skiff_objects::endpoints::{self, EndpointSubset, Endpoints};
use skiff_objects::services::{self, Service};

/// One port of a Service or of an endpoint subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// `""` for an unnamed port.
    pub name: String,
    /// As Kubernetes writes it: `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    pub port: u16,
}

/// How a Service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAddress {
    /// At its clusterIP.
    ClusterIp(Ipv4Addr),
    /// `clusterIP: None`: at its ready endpoints.
    Headless,
    /// `type: ExternalName`: an alias of this DNS name.
    ExternalName(String),
}

/// A ready address of a Service's Endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddress {
    pub ip: Ipv4Addr,
    /// The pod's `hostname` (a StatefulSet member's), else `""`.
    pub hostname: String,
}

impl EndpointAddress {
    /// Its DNS label under the Service's name, as CoreDNS makes it: the
    /// host name, else the address with dashes (`10-42-1-5`).
    pub fn label(&self) -> String {
        if self.hostname.is_empty() {
            dashed(self.ip)
        } else {
            self.hostname.clone()
        }
    }
}

/// `10.42.1.5` as a DNS label: `10-42-1-5`.
pub fn dashed(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{a}-{b}-{c}-{d}")
}

/// Ready addresses sharing their ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub addresses: Vec<EndpointAddress>,
    pub ports: Vec<NamedPort>,
}

/// One Service as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub address: ServiceAddress,
    /// The Service's ports, in its order.
    pub ports: Vec<NamedPort>,
    /// Its Endpoints' ready addresses.
    pub subsets: Vec<Subset>,
}

/// What a reverse (PTR) lookup of an address finds: a Service's clusterIP,
/// or an endpoint of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReverseEntry {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// The endpoint's label under the Service ([`EndpointAddress::label`]);
    /// `None` for the Service's own address.
    pub endpoint: Option<Arc<str>>,
}

/// Every Service by namespace and name, and the names of the addresses.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    /// Sorted by (namespace, name), each once.
    services: Vec<(Arc<str>, Arc<str>, ServiceEntry)>,
    /// Sorted by address, then entry; each entry's address is at the same
    /// place in `reverse_ips`.
    reverse_ips: Vec<Ipv4Addr>,
    reverse_entries: Vec<ReverseEntry>,
    serial: u32,
}

fn named_port(name: &str, protocol: &str, port: i32) -> Option<NamedPort> {
    let protocol = match protocol {
        "" => "TCP",
        p if p.eq_ignore_ascii_case("TCP") => "TCP",
        p if p.eq_ignore_ascii_case("UDP") => "UDP",
        p if p.eq_ignore_ascii_case("SCTP") => "SCTP",
        // Not one Kubernetes allows (the API refuses it on a Service's
        // ports): no record to give it.
        _ => return None,
    };
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol,
        port: u16::try_from(port).ok().filter(|p| *p > 0)?,
    })
}

/// `items` through `f`, into a `Vec` of exactly the kept ones' length.
fn exact<T, U>(items: &[T], f: impl FnMut(&T) -> Option<U>) -> Vec<U> {
    fitted(items.iter().filter_map(f).collect())
}

/// `v` in an allocation of exactly its length (`collect` from a filter
/// starts at four places and doubles), moved rather than shrunk in place,
/// which would leave the rest of the old block as a hole in the heap.
fn fitted<T>(mut v: Vec<T>) -> Vec<T> {
    if v.capacity() == v.len() {
        return v;
    }
    let mut out = Vec::with_capacity(v.len());
    out.append(&mut v);
    out
}

/// One `Arc<str>` per distinct string, shared by whatever names it.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, name: String) -> Arc<str> {
        if let Some(shared) = self.0.get(&name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name.as_str());
        self.0.insert(name, shared.clone());
        shared
    }
}

impl ClusterIndex {
    /// The index of `services` with the ready addresses of `endpoints`;
    /// `serial` is what the zone's SOA says (it grows with each index).
    /// Of two Services with the same namespace and name, the later counts.
    pub fn build(services: &[Service], endpoints: &[Endpoints], serial: u32) -> ClusterIndex {
        let mut subsets_by_name: HashMap<(&str, &str), &[EndpointSubset]> = HashMap::new();
        for e in endpoints {
            subsets_by_name.insert(endpoints::key(e), endpoints::subsets(e));
        }
        let mut namespaces = Names::default();
        let mut entries = Vec::with_capacity(services.len());
        for service in services {
            let (namespace, name) = services::key(service);
            let address = if services::type_of(service) == "ExternalName" {
                let target = services::external_name(service).trim_end_matches('.');
                if target.is_empty() {
                    continue;
                }
                ServiceAddress::ExternalName(target.to_ascii_lowercase())
            } else if services::cluster_ip(service) == "None" {
                ServiceAddress::Headless
            } else {
                match services::cluster_ip(service).parse() {
                    Ok(ip) => ServiceAddress::ClusterIp(ip),
                    // Not given an address yet (or an IPv6 one): nothing
                    // to answer with.
                    Err(_) => continue,
                }
            };
            let ports = exact(services::ports(service), |p| {
                named_port(services::port_name(p), services::protocol(p), p.port)
            });
            let subsets = exact(
                subsets_by_name
                    .get(&(namespace, name))
                    .copied()
                    .unwrap_or_default(),
                |s| {
                    let addresses = exact(endpoints::ready(s), |a| {
                        Some(EndpointAddress {
                            ip: a.ip.parse().ok()?,
                            hostname: a.hostname.as_deref().unwrap_or("").to_ascii_lowercase(),
                        })
                    });
                    let ports = exact(endpoints::ports(s), |p| {
                        let name = p.name.as_deref().unwrap_or("");
                        named_port(name, endpoints::protocol(p), p.port)
                    });
                    (!addresses.is_empty()).then_some(Subset { addresses, ports })
                },
            );
            let namespace = namespaces.get(namespace.to_ascii_lowercase());
            let name: Arc<str> = Arc::from(name.to_ascii_lowercase());
            let entry = ServiceEntry {
                address,
                ports,
                subsets,
            };
            entries.push((namespace, name, entry));
        }
        // Reversed, then a stable sort: a name's Services come latest
        // first, and the first of each is the one kept.
        entries.reverse();
        entries.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        entries.dedup_by(|later, kept| (&later.0, &later.1) == (&kept.0, &kept.1));
        let services = fitted(entries);
        let mut labels: HashMap<(Ipv4Addr, &str), Arc<str>> = HashMap::new();
        let mut reverse: Vec<(Ipv4Addr, ReverseEntry)> = Vec::new();
        for (namespace, name, entry) in &services {
            let names = |endpoint| ReverseEntry {
                namespace: namespace.clone(),
                service: name.clone(),
                endpoint,
            };
            if let ServiceAddress::ClusterIp(ip) = &entry.address {
                reverse.push((*ip, names(None)));
            }
            for endpoint in entry.subsets.iter().flat_map(|s| &s.addresses) {
                let label = labels
                    .entry((endpoint.ip, endpoint.hostname.as_str()))
                    .or_insert_with(|| Arc::from(endpoint.label()))
                    .clone();
                reverse.push((endpoint.ip, names(Some(label))));
            }
        }
        drop(labels);
        reverse.sort();
        reverse.dedup();
        let (reverse_ips, reverse_entries): (Vec<_>, Vec<_>) = reverse.into_iter().unzip();
        ClusterIndex {
            services,
            reverse_ips: fitted(reverse_ips),
            reverse_entries: fitted(reverse_entries),
            serial,
        }
    }

    /// Where the Services of `namespace` are in `services`.
    fn namespace_range(&self, namespace: &str) -> std::ops::Range<usize> {
        let start = self.services.partition_point(|s| &*s.0 < namespace);
        let end = self.services.partition_point(|s| &*s.0 <= namespace);
        start..end
    }

    /// The Service `namespace/name` (both lowercase).
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        let at = self
            .services
            .binary_search_by(|s| (&*s.0, &*s.1).cmp(&(namespace, name)))
            .ok()?;
        Some(&self.services[at].2)
    }

    /// Whether any Service lives in `namespace`.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        !self.namespace_range(namespace).is_empty()
    }

    /// The Services of `namespace`, by name.
    pub fn services_in(&self, namespace: &str) -> Vec<(&str, &ServiceEntry)> {
        self.services[self.namespace_range(namespace)]
            .iter()
            .map(|(_, name, entry)| (&**name, entry))
            .collect()
    }

    /// What points at `ip`.
    pub fn reverse(&self, ip: Ipv4Addr) -> &[ReverseEntry] {
        let start = self.reverse_ips.partition_point(|x| *x < ip);
        let end = self.reverse_ips.partition_point(|x| *x <= ip);
        &self.reverse_entries[start..end]
    }

    /// The zone's SOA serial for this index.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many Services it holds.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// The current index, shared by the DNS server, the pod workers (for the
/// Service variables) and the loop that replaces it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SharedIndex(Arc<RwLock<Current>>);

/// The index in place, and how many have been put in place before it.
#[derive(Debug, Default)]
struct Current {
    generation: u64,
    index: Arc<ClusterIndex>,
}

impl SharedIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The index as it is now; it stays whole while it is being used.
    pub fn current(&self) -> Arc<ClusterIndex> {
        self.read().index.clone()
    }

    /// Which index is in place: it grows with each [`SharedIndex::replace`]
    /// (what was answered from one index is not kept for the next).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Puts `index` in place of the current one.
    pub fn replace(&self, index: ClusterIndex) {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        current.generation += 1;
        current.index = Arc::new(index);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use skiff_proto::v1;

    /// A Service `namespace/name` at `cluster_ip` ("None": headless;
    /// "ext:NAME": ExternalName) with `(name, protocol, port)` ports.
    pub(crate) fn service(
        namespace: &str,
        name: &str,
        cluster_ip: &str,
        ports: &[(&str, &str, i32)],
    ) -> Service {
        let (r#type, cluster_ip, external_name) = match cluster_ip.strip_prefix("ext:") {
            Some(target) => ("ExternalName", None, Some(target.into())),
            None => ("ClusterIP", Some(cluster_ip.into()), None),
        };
        Service {
            metadata: skiff_objects::typed::meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(services::ServiceSpec {
                type_: Some(r#type.into()),
                cluster_ip,
                external_name,
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, p)| services::ServicePort {
                            name: Some((*n).into()),
                            protocol: Some((*proto).into()),
                            port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Endpoints `namespace/name` with ready `(ip, hostname)` addresses, an
    /// unready one, and `(name, protocol, port)` ports.
    pub(crate) fn endpoints(
        namespace: &str,
        name: &str,
        addresses: &[(&str, &str)],
        ports: &[(&str, &str, i32)],
    ) -> skiff_objects::endpoints::Endpoints {
        let legacy = v1::Endpoints {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            subsets: vec![v1::EndpointSubset {
                addresses: addresses
                    .iter()
                    .map(|(ip, hostname)| v1::EndpointAddress {
                        ip: (*ip).into(),
                        hostname: (*hostname).into(),
                        ..Default::default()
                    })
                    .collect(),
                not_ready_addresses: vec![v1::EndpointAddress {
                    ip: "10.42.9.9".into(),
                    ..Default::default()
                }],
                ports: ports
                    .iter()
                    .map(|(n, proto, p)| v1::EndpointPort {
                        name: (*n).into(),
                        protocol: (*proto).into(),
                        port: *p,
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        };
        // Read as the agent reads what a master sends.
        let document = skiff_objects::legacy_bodies::to_document(
            skiff_objects::IntoObject::into_object(legacy),
        );
        skiff_objects::endpoints::read(&document).unwrap()
    }

    #[test]
    fn services_are_indexed_with_their_ready_endpoints_and_reverse_names() {
        let services = [
            service("default", "web", "10.43.0.11", &[("http", "TCP", 80)]),
            service("db", "pg", "None", &[("", "TCP", 5432)]),
            service("db", "ext", "ext:db.example.com.", &[]),
            service("db", "pending", "", &[]),
        ];
        let eps = [
            endpoints(
                "default",
                "web",
                &[("10.42.1.5", "")],
                &[("http", "TCP", 8080)],
            ),
            endpoints("db", "pg", &[("10.42.2.6", "pg-0")], &[("", "", 5432)]),
        ];
        let index = ClusterIndex::build(&services, &eps, 7);
        assert_eq!(index.len(), 3, "the Service without an address is left out");
        assert_eq!(index.serial(), 7);
        let web = index.service("default", "web").unwrap();
        assert_eq!(
            web.address,
            ServiceAddress::ClusterIp(Ipv4Addr::new(10, 43, 0, 11))
        );
        assert_eq!(web.subsets[0].addresses.len(), 1, "not ready ones left out");
        assert_eq!(web.subsets[0].ports[0].port, 8080);
        let pg = index.service("db", "pg").unwrap();
        assert_eq!(pg.address, ServiceAddress::Headless);
        // A port without a protocol is TCP.
        assert_eq!(pg.subsets[0].ports[0].protocol, "TCP");
        assert_eq!(
            index.service("db", "ext").unwrap().address,
            ServiceAddress::ExternalName("db.example.com".into())
        );
        assert_eq!(
            index.reverse(Ipv4Addr::new(10, 43, 0, 11)),
            [ReverseEntry {
                namespace: "default".into(),
                service: "web".into(),
                endpoint: None,
            }]
        );
        assert_eq!(
            index.reverse(Ipv4Addr::new(10, 42, 2, 6))[0]
                .endpoint
                .as_deref(),
            Some("pg-0")
        );
        assert_eq!(
            index.reverse(Ipv4Addr::new(10, 42, 1, 5))[0]
                .endpoint
                .as_deref(),
            Some("10-42-1-5")
        );
        assert!(index.reverse(Ipv4Addr::new(10, 42, 9, 9)).is_empty());
        let names: Vec<&str> = index.services_in("db").iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["ext", "pg"]);
        assert!(index.has_namespace("db"));
        assert!(!index.has_namespace("nowhere"));
    }

    #[test]
    fn names_are_shared_lists_are_exact_and_the_later_of_two_services_counts() {
        let services = [
            service("default", "web", "10.43.0.11", &[("http", "tcp", 80)]),
            service("default", "api", "10.43.0.12", &[("grpc", "quic", 81)]),
            service("default", "web", "10.43.0.13", &[("http", "UDP", 80)]),
        ];
        let eps = [
            endpoints("default", "web", &[("10.42.1.5", "")], &[]),
            endpoints("default", "api", &[("10.42.1.5", "")], &[]),
        ];
        let index = ClusterIndex::build(&services, &eps, 1);
        assert_eq!(index.len(), 2);
        let web = index.service("default", "web").unwrap();
        assert_eq!(
            web.address,
            ServiceAddress::ClusterIp(Ipv4Addr::new(10, 43, 0, 13)),
            "the later of two Services with one name counts"
        );
        assert_eq!(web.ports[0].protocol, "UDP");
        assert_eq!(web.ports.capacity(), 1, "a list is allocated at its length");
        assert_eq!(web.subsets.capacity(), 1);
        assert_eq!(web.subsets[0].addresses.capacity(), 1);
        let api = index.service("default", "api").unwrap();
        assert!(
            api.ports.is_empty(),
            "a protocol the API refuses has no name"
        );
        // Both Services name the one pod: one label, one namespace, shared.
        let [first, second] = index.reverse(Ipv4Addr::new(10, 42, 1, 5)) else {
            panic!("two names for the pod");
        };
        assert_eq!((&*first.service, &*second.service), ("api", "web"));
        assert!(Arc::ptr_eq(&first.namespace, &second.namespace));
        let (a, b) = (first.endpoint.as_ref(), second.endpoint.as_ref());
        assert!(Arc::ptr_eq(a.unwrap(), b.unwrap()));
        assert_eq!(a.map(|l| &**l), Some("10-42-1-5"));
        // The replaced address names nothing.
        assert!(index.reverse(Ipv4Addr::new(10, 43, 0, 11)).is_empty());
        assert_eq!(index.reverse(Ipv4Addr::new(10, 43, 0, 13)).len(), 1);
    }

    #[test]
    fn a_replaced_index_leaves_earlier_readers_theirs() {
        let shared = SharedIndex::default();
        let before = shared.current();
        shared.replace(ClusterIndex::build(
            &[service("default", "web", "10.43.0.11", &[])],
            &[],
            1,
        ));
        assert!(before.is_empty());
        assert_eq!(shared.current().len(), 1);
    }
}
