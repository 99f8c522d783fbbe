//! Services' clusterIPs on this node (kube-proxy's job, in nftables): the
//! agent follows Services and Endpoints through the masters and keeps one
//! rule per Service port leading to the port's ready endpoints
//! ([`super::nftables`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::nftables::ServiceRule;
use super::PodNetwork;

/// The rules for `services`, given the cluster's Endpoints. Headless
/// Services and ports with no ready endpoint get none.
pub fn rules(services: &[v1::Service], endpoints: &[v1::Endpoints]) -> Vec<ServiceRule> {
    let by_name: BTreeMap<(String, String), &v1::Endpoints> = endpoints
        .iter()
        .filter_map(|e| {
            let m = e.metadata.as_ref()?;
            Some(((m.namespace.clone(), m.name.clone()), e))
        })
        .collect();
    let mut out = Vec::new();
    for service in services {
        let (Some(meta), Some(spec)) = (&service.metadata, &service.spec) else {
            continue;
        };
        let Ok(cluster_ip) = spec.cluster_ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let subsets = by_name
            .get(&(meta.namespace.clone(), meta.name.clone()))
            .map(|e| e.subsets.as_slice())
            .unwrap_or_default();
        for port in &spec.ports {
            let protocol = port.protocol.to_lowercase();
            let (Ok(number), true) = (
                u16::try_from(port.port),
                protocol == "tcp" || protocol == "udp",
            ) else {
                continue;
            };
            let mut targets = Vec::new();
            for subset in subsets {
                let Some(target) = subset.ports.iter().find(|p| {
                    p.name == port.name && p.protocol.eq_ignore_ascii_case(&port.protocol)
                }) else {
                    continue;
                };
                let Ok(target_port) = u16::try_from(target.port) else {
                    continue;
                };
                targets.extend(
                    subset
                        .addresses
                        .iter()
                        .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok())
                        .map(|ip| (ip, target_port)),
                );
            }
            targets.sort();
            targets.dedup();
            out.push(ServiceRule {
                cluster_ip,
                protocol,
                port: number,
                endpoints: targets,
            });
        }
    }
    out
}

/// Brings the node's Service rules in line with the cluster's `services`
/// and `endpoints` (lists from a master; other kinds are skipped). A
/// failure is logged and left to the next call.
pub async fn reconcile_services(
    network: &PodNetwork,
    services: Vec<Object>,
    endpoints: Vec<Object>,
) {
    let endpoints: Vec<v1::Endpoints> = bodies(endpoints, |b| match b {
        Body::Endpoints(e) => Some(e),
        _ => None,
    });
    let services: Vec<v1::Service> = bodies(services, |b| match b {
        Body::Service(s) => Some(s),
        _ => None,
    });
    let wanted = rules(&services, &endpoints);
    let count = wanted.len();
    match network.set_services(wanted).await {
        Ok(true) => tracing::info!(ports = count, "service rules updated"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "service rules not applied; retrying"),
    }
}

fn bodies<T>(items: Vec<Object>, pick: impl Fn(Body) -> Option<T>) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|o| o.kind.and_then(&pick))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> v1::Service {
        v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                cluster_ip: ip.into(),
                ports: ports
                    .iter()
                    .map(|(n, p, proto)| v1::ServicePort {
                        name: (*n).into(),
                        port: *p,
                        protocol: (*proto).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoints(name: &str, ips: &[&str], ports: &[(&str, i32, &str)]) -> v1::Endpoints {
        v1::Endpoints {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            subsets: vec![v1::EndpointSubset {
                addresses: ips
                    .iter()
                    .map(|ip| v1::EndpointAddress {
                        ip: (*ip).into(),
                        ..Default::default()
                    })
                    .collect(),
                not_ready_addresses: vec![v1::EndpointAddress {
                    ip: "10.42.9.9".into(),
                    ..Default::default()
                }],
                ports: ports
                    .iter()
                    .map(|(n, p, proto)| v1::EndpointPort {
                        name: (*n).into(),
                        port: *p,
                        protocol: (*proto).into(),
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_service_port_leads_to_the_ready_addresses_of_its_endpoint_port() {
        let services = [
            service(
                "web",
                "10.43.0.11",
                &[("http", 80, "TCP"), ("dns", 53, "UDP")],
            ),
            service("headless", "None", &[("", 80, "TCP")]),
            service("lonely", "10.43.0.12", &[("", 80, "TCP")]),
        ];
        let eps = [
            endpoints(
                "web",
                &["10.42.1.5", "10.42.0.7"],
                &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
            ),
            endpoints("headless", &["10.42.1.6"], &[("", 80, "TCP")]),
        ];
        let rules = rules(&services, &eps);
        assert_eq!(rules.len(), 3, "{rules:?}");
        let http = &rules[0];
        assert_eq!((http.protocol.as_str(), http.port), ("tcp", 80));
        assert_eq!(
            http.endpoints,
            vec![
                ("10.42.0.7".parse().unwrap(), 8080),
                ("10.42.1.5".parse().unwrap(), 8080)
            ],
            "ready addresses only, sorted"
        );
        assert_eq!((rules[1].protocol.as_str(), rules[1].port), ("udp", 53));
        assert_eq!(rules[1].endpoints[0].1, 5353);
        // A Service without Endpoints gets a rule with nowhere to go (and
        // so no nftables rule); a headless one gets none.
        assert_eq!(
            rules[2].cluster_ip,
            "10.43.0.12".parse::<Ipv4Addr>().unwrap()
        );
        assert!(rules[2].endpoints.is_empty());
    }
}
