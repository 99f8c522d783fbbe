//! What cluster DNS answers from: the agent's own index of the cluster's
//! Services and their ready endpoints, built from the lists the agent
//! follows from the masters (the same ones its Service rules come from).
//! Only what DNS names need is kept (addresses, port names, endpoint host
//! names), nothing is turned into records ahead of time: answers are made
//! per query ([`super::cluster_zone`]), so a thousand Services cost a
//! few hundred kilobytes, not a zone.
//!
//! The index is replaced whole on every list ([`SharedIndex`]); while no
//! master answers, the last one stays, and DNS keeps answering from it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use skiff_proto::v1;

/// One port of a Service or of an endpoint subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// `""` for an unnamed port.
    pub name: String,
    /// As Kubernetes writes it: `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
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
    pub namespace: String,
    pub service: String,
    /// The endpoint's label under the Service ([`EndpointAddress::label`]);
    /// `None` for the Service's own address.
    pub endpoint: Option<String>,
}

/// Every Service by namespace and name, and the names of the addresses.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    namespaces: HashMap<String, HashMap<String, ServiceEntry>>,
    reverse: HashMap<Ipv4Addr, Vec<ReverseEntry>>,
    serial: u32,
}

fn named_port(name: &str, protocol: &str, port: i32) -> Option<NamedPort> {
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: if protocol.is_empty() {
            "TCP".to_owned()
        } else {
            protocol.to_ascii_uppercase()
        },
        port: u16::try_from(port).ok().filter(|p| *p > 0)?,
    })
}

impl ClusterIndex {
    /// The index of `services` with the ready addresses of `endpoints`;
    /// `serial` is what the zone's SOA says (it grows with each index).
    pub fn build(
        services: &[v1::Service],
        endpoints: &[v1::Endpoints],
        serial: u32,
    ) -> ClusterIndex {
        let mut subsets_by_name: HashMap<(&str, &str), &[v1::EndpointSubset]> = HashMap::new();
        for e in endpoints {
            if let Some(meta) = &e.metadata {
                let key = (meta.namespace.as_str(), meta.name.as_str());
                subsets_by_name.insert(key, e.subsets.as_slice());
            }
        }
        let mut index = ClusterIndex {
            serial,
            ..ClusterIndex::default()
        };
        for service in services {
            let (Some(meta), Some(spec)) = (&service.metadata, &service.spec) else {
                continue;
            };
            let address = if spec.r#type == "ExternalName" {
                let target = spec.external_name.trim_end_matches('.');
                if target.is_empty() {
                    continue;
                }
                ServiceAddress::ExternalName(target.to_ascii_lowercase())
            } else if spec.cluster_ip == "None" {
                ServiceAddress::Headless
            } else {
                match spec.cluster_ip.parse() {
                    Ok(ip) => ServiceAddress::ClusterIp(ip),
                    // Not given an address yet (or an IPv6 one): nothing
                    // to answer with.
                    Err(_) => continue,
                }
            };
            let ports = spec
                .ports
                .iter()
                .filter_map(|p| named_port(&p.name, &p.protocol, p.port))
                .collect();
            let subsets: Vec<Subset> = subsets_by_name
                .get(&(meta.namespace.as_str(), meta.name.as_str()))
                .copied()
                .unwrap_or_default()
                .iter()
                .map(|s| Subset {
                    addresses: s
                        .addresses
                        .iter()
                        .filter_map(|a| {
                            Some(EndpointAddress {
                                ip: a.ip.parse().ok()?,
                                hostname: a.hostname.to_ascii_lowercase(),
                            })
                        })
                        .collect(),
                    ports: s
                        .ports
                        .iter()
                        .filter_map(|p| named_port(&p.name, &p.protocol, p.port))
                        .collect(),
                })
                .filter(|s| !s.addresses.is_empty())
                .collect();
            let namespace = meta.namespace.to_ascii_lowercase();
            let name = meta.name.to_ascii_lowercase();
            let names = |endpoint| ReverseEntry {
                namespace: namespace.clone(),
                service: name.clone(),
                endpoint,
            };
            if let ServiceAddress::ClusterIp(ip) = &address {
                index.reverse.entry(*ip).or_default().push(names(None));
            }
            for endpoint in subsets.iter().flat_map(|s| &s.addresses) {
                let reverse = names(Some(endpoint.label()));
                index.reverse.entry(endpoint.ip).or_default().push(reverse);
            }
            let entry = ServiceEntry {
                address,
                ports,
                subsets,
            };
            let in_namespace = index.namespaces.entry(namespace).or_default();
            in_namespace.insert(name, entry);
        }
        for names in index.reverse.values_mut() {
            names.sort();
            names.dedup();
        }
        index
    }

    /// The Service `namespace/name` (both lowercase).
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Whether any Service lives in `namespace`.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// The Services of `namespace`, by name.
    pub fn services_in(&self, namespace: &str) -> Vec<(&str, &ServiceEntry)> {
        let mut out: Vec<(&str, &ServiceEntry)> = self
            .namespaces
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|(name, entry)| (name.as_str(), entry))
            .collect();
        out.sort_by_key(|(name, _)| *name);
        out
    }

    /// What points at `ip`.
    pub fn reverse(&self, ip: Ipv4Addr) -> &[ReverseEntry] {
        self.reverse.get(&ip).map(Vec::as_slice).unwrap_or_default()
    }

    /// The zone's SOA serial for this index.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many Services it holds.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
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

    /// A Service `namespace/name` at `cluster_ip` ("None": headless;
    /// "ext:NAME": ExternalName) with `(name, protocol, port)` ports.
    pub(crate) fn service(
        namespace: &str,
        name: &str,
        cluster_ip: &str,
        ports: &[(&str, &str, i32)],
    ) -> v1::Service {
        let (r#type, cluster_ip, external_name) = match cluster_ip.strip_prefix("ext:") {
            Some(target) => ("ExternalName", "", target),
            None => ("ClusterIP", cluster_ip, ""),
        };
        v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                r#type: r#type.into(),
                cluster_ip: cluster_ip.into(),
                external_name: external_name.into(),
                ports: ports
                    .iter()
                    .map(|(n, proto, p)| v1::ServicePort {
                        name: (*n).into(),
                        protocol: (*proto).into(),
                        port: *p,
                        ..Default::default()
                    })
                    .collect(),
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
    ) -> v1::Endpoints {
        v1::Endpoints {
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
        }
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
