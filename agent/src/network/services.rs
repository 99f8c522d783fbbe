//! Services' clusterIPs on this node (kube-proxy's job, in nftables): the
//! agent follows Services and Endpoints through the masters and keeps one
//! rule per Service port leading to the port's ready endpoints
//! ([`super::nftables`]; only this node's under `internalTrafficPolicy:
//! Local`). The last lists are kept on disk
//! ([`KnownServices`]), so an agent restarted while no master answers
//! routes (and names) Services as before.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::Digest;
use skiff_objects::endpoints::{self, Endpoints};
use skiff_objects::services::{self, Service};
use skiff_objects::Ipv4Net;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::nftables::{Exposure, ServiceRule};
use super::PodNetwork;

/// The rules for `services`, given the cluster's Endpoints, with how each
/// port is reached from outside (nodePort, load balancer ingress,
/// externalIPs). Headless Services and ports with no ready endpoint get
/// none.
pub fn rules(services: &[Service], endpoints: &[Endpoints]) -> Vec<ServiceRule> {
    let by_name: BTreeMap<(&str, &str), &Endpoints> =
        endpoints.iter().map(|e| (endpoints::key(e), e)).collect();
    let mut out = Vec::new();
    for service in services {
        let Ok(cluster_ip) = services::cluster_ip(service).parse::<Ipv4Addr>() else {
            continue;
        };
        let subsets = by_name
            .get(&services::key(service))
            .map(|e| endpoints::subsets(e))
            .unwrap_or_default();
        let exposed = services::is_exposed(service);
        let load_balancer_ips: Vec<Ipv4Addr> = if services::type_of(service) == "LoadBalancer" {
            services::ingress_ips(service)
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
                .collect()
        } else {
            Vec::new()
        };
        let external_ips: Vec<Ipv4Addr> = services::external_ips(service)
            .iter()
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
            .collect();
        let source_ranges: Vec<Ipv4Net> = services::source_ranges(service)
            .iter()
            .filter_map(|r| Ipv4Net::parse_lenient(r).ok())
            .collect();
        let affinity_seconds = services::affinity_seconds(service);
        for port in services::ports(service) {
            // Unset is TCP, as Kubernetes defaults it.
            let protocol = match services::protocol(port) {
                p if p.eq_ignore_ascii_case("tcp") => "tcp",
                p if p.eq_ignore_ascii_case("udp") => "udp",
                _ => continue,
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let mut targets = Vec::new();
            for subset in subsets {
                let Some(target) = endpoints::ports(subset).iter().find(|p| {
                    p.name.as_deref().unwrap_or_default() == services::port_name(port)
                        && endpoints::protocol(p).eq_ignore_ascii_case(protocol)
                }) else {
                    continue;
                };
                let Ok(target_port) = u16::try_from(target.port) else {
                    continue;
                };
                targets.extend(
                    endpoints::ready(subset)
                        .iter()
                        .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok())
                        .map(|ip| (ip, target_port)),
                );
            }
            targets.sort();
            targets.dedup();
            // Exactly as long as it is: held twice, for every port.
            let targets = targets.into_boxed_slice().into_vec();
            let node_port = u16::try_from(services::node_port(port))
                .ok()
                .filter(|p| exposed && *p != 0);
            out.push(ServiceRule {
                cluster_ip,
                protocol,
                port: number,
                endpoints: targets,
                exposure: Exposure {
                    node_port,
                    load_balancer_ips: load_balancer_ips.clone(),
                    external_ips: external_ips.clone(),
                    local_only: services::is_external_local(service),
                    source_ranges: source_ranges.clone(),
                    affinity_seconds,
                    internal_local: services::is_internal_local(service),
                },
            });
        }
    }
    out
}

/// The Services of `services` and the Endpoints of `endpoints` (lists
/// from a master, in either encoding; objects of other kinds are
/// skipped).
pub fn typed(services: Vec<Object>, endpoints: Vec<Object>) -> (Vec<Service>, Vec<Endpoints>) {
    let services = services.iter().filter_map(services::read).collect();
    let endpoints = endpoints.iter().filter_map(endpoints::read).collect();
    (services, endpoints)
}

/// Brings the node's Service rules in line with the cluster's `services`
/// and `endpoints`. A failure is logged and left to the next call.
pub async fn reconcile_services(
    network: &PodNetwork,
    services: &[Service],
    endpoints: &[Endpoints],
) {
    let wanted = rules(services, endpoints);
    let count = wanted.len();
    match network.set_services(wanted).await {
        Ok(true) => tracing::info!(ports = count, "service rules updated"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "service rules not applied; retrying"),
    }
}

/// The Services and Endpoints last known, kept in
/// `<data-dir>/network/services.bin` (each object length-delimited after
/// a tag byte: an encoded object holding its document, with only its
/// name and namespace; an earlier release's file holds Services, and
/// before data format 5 Endpoints, in their protobuf model, which reads
/// the same) and written only when they change, since the follower hands
/// them over again every minute and flash wears.
#[derive(Debug)]
pub struct KnownServices {
    path: PathBuf,
    /// What the file holds, hashed.
    written: Option<Vec<u8>>,
}

/// A Service in its protobuf model (what earlier releases wrote).
const LEGACY_SERVICE_TAG: u8 = b'S';
/// Endpoints in their protobuf model (what releases before data format 5
/// wrote).
const LEGACY_ENDPOINTS_TAG: u8 = b'E';
/// A Service or Endpoints as an encoded object holding its document.
const DOCUMENT_TAG: u8 = b'D';

/// The lists as the file holds them.
pub fn encode_known(services: &[Service], endpoints: &[Endpoints]) -> Vec<u8> {
    let meta = |(namespace, name): (&str, &str)| v1::ObjectMeta {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for service in services {
        let object = services::object(
            meta(services::key(service)),
            service.spec.clone().unwrap_or_default(),
            service.status.clone(),
        );
        out.push(DOCUMENT_TAG);
        out.extend_from_slice(&object.encode_length_delimited_to_vec());
    }
    for e in endpoints {
        let object = endpoints::object(meta(endpoints::key(e)), endpoints::subsets(e).to_vec());
        out.push(DOCUMENT_TAG);
        out.extend_from_slice(&object.encode_length_delimited_to_vec());
    }
    out
}

/// The lists in `bytes`; `None` when they are not what
/// [`encode_known`] (or an earlier release) writes.
pub fn decode_known(mut bytes: &[u8]) -> Option<(Vec<Service>, Vec<Endpoints>)> {
    let (mut kept_services, mut kept_endpoints) = (Vec::new(), Vec::new());
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let object = match tag {
            LEGACY_SERVICE_TAG => Object {
                kind: Some(Body::Service(
                    v1::Service::decode_length_delimited(&mut bytes).ok()?,
                )),
            },
            LEGACY_ENDPOINTS_TAG => Object {
                kind: Some(Body::Endpoints(
                    v1::Endpoints::decode_length_delimited(&mut bytes).ok()?,
                )),
            },
            DOCUMENT_TAG => Object::decode_length_delimited(&mut bytes).ok()?,
            _ => return None,
        };
        if services::is_service(&object) {
            kept_services.push(services::read(&object)?);
        } else {
            kept_endpoints.push(endpoints::read(&object)?);
        }
    }
    Some((kept_services, kept_endpoints))
}

impl KnownServices {
    /// The lists kept under `data_dir`.
    pub fn new(data_dir: &Path) -> KnownServices {
        KnownServices {
            path: data_dir.join("network").join("services.bin"),
            written: None,
        }
    }

    /// The lists last kept; none when there are none (or they cannot be
    /// read, which is logged).
    pub fn load(&mut self) -> Option<(Vec<Service>, Vec<Endpoints>)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let digest = sha2::Sha256::digest(&bytes).to_vec();
        let Some(lists) = decode_known(&bytes) else {
            tracing::warn!(file = %self.path.display(), "unreadable kept Services; ignored");
            return None;
        };
        self.written = Some(digest);
        Some(lists)
    }

    /// Keeps `services` and `endpoints` if they differ from what is kept.
    /// A failure is logged; the next lists try again.
    pub fn save(&mut self, services: &[Service], endpoints: &[Endpoints]) {
        let bytes = encode_known(services, endpoints);
        let digest = sha2::Sha256::digest(&bytes).to_vec();
        if self.written.as_ref() == Some(&digest) {
            return;
        }
        let tmp = self.path.with_extension("bin.tmp");
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match written {
            Ok(()) => self.written = Some(digest),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot keep the Services")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Service in its protobuf model, as an earlier release kept it.
    fn legacy_service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> v1::Service {
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

    /// The same Service as this release reads it.
    fn service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        let legacy = Object {
            kind: Some(Body::Service(legacy_service(name, ip, ports))),
        };
        services::read(&legacy).unwrap()
    }

    /// Endpoints in their protobuf model, as an earlier release kept them.
    fn legacy_endpoints(name: &str, ips: &[&str], ports: &[(&str, i32, &str)]) -> v1::Endpoints {
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

    /// The same Endpoints as this release reads them from a master.
    fn endpoints(name: &str, ips: &[&str], ports: &[(&str, i32, &str)]) -> Endpoints {
        let legacy = Object {
            kind: Some(Body::Endpoints(legacy_endpoints(name, ips, ports))),
        };
        let document = skiff_objects::legacy_bodies::to_document(legacy);
        assert!(skiff_objects::legacy_bodies::is_moved_document(&document));
        endpoints::read(&document).unwrap()
    }

    #[test]
    fn the_last_lists_are_kept_and_rewritten_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let services = [service("web", "10.43.0.11", &[("http", 80, "TCP")])];
        let eps = [endpoints("web", &["10.42.1.5"], &[("http", 8080, "TCP")])];
        let mut known = KnownServices::new(dir.path());
        assert!(known.load().is_none(), "nothing kept yet");
        known.save(&services, &eps);
        let path = dir.path().join("network/services.bin");
        let (kept_services, kept_endpoints) = KnownServices::new(dir.path()).load().unwrap();
        assert_eq!(kept_services, services);
        assert_eq!(kept_endpoints, eps);
        // The same lists again: not written (the file's time stays).
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        known.save(&services, &eps);
        let after = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(after, before);
        known.save(&services, &[]);
        let (_, kept_endpoints) = KnownServices::new(dir.path()).load().unwrap();
        assert!(kept_endpoints.is_empty());
        // What an earlier release kept (Endpoints in their protobuf model)
        // reads the same.
        let mut earlier = Vec::new();
        earlier.push(LEGACY_SERVICE_TAG);
        let legacy = legacy_service("web", "10.43.0.11", &[("http", 80, "TCP")]);
        earlier.extend_from_slice(&legacy.encode_length_delimited_to_vec());
        let legacy = legacy_endpoints("web", &["10.42.1.5"], &[("http", 8080, "TCP")]);
        earlier.push(LEGACY_ENDPOINTS_TAG);
        earlier.extend_from_slice(&legacy.encode_length_delimited_to_vec());
        assert_eq!(
            decode_known(&earlier),
            Some((services.to_vec(), eps.to_vec()))
        );
        // A damaged file is ignored.
        std::fs::write(&path, b"Sgarbage").unwrap();
        assert!(KnownServices::new(dir.path()).load().is_none());
        assert_eq!(decode_known(&[]), Some((vec![], vec![])));
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
        assert_eq!((http.protocol, http.port), ("tcp", 80));
        assert_eq!(
            http.endpoints,
            vec![
                ("10.42.0.7".parse().unwrap(), 8080),
                ("10.42.1.5".parse().unwrap(), 8080)
            ],
            "ready addresses only, sorted"
        );
        assert_eq!((rules[1].protocol, rules[1].port), ("udp", 53));
        assert_eq!(rules[1].endpoints[0].1, 5353);
        // A Service without Endpoints gets a rule with nowhere to go (and
        // so no nftables rule); a headless one gets none.
        assert_eq!(
            rules[2].cluster_ip,
            "10.43.0.12".parse::<Ipv4Addr>().unwrap()
        );
        assert!(rules[2].endpoints.is_empty());
    }

    #[test]
    fn a_port_without_a_protocol_is_tcp_and_one_nftables_cannot_match_has_no_rule() {
        let services = [service(
            "web",
            "10.43.0.11",
            &[("a", 80, ""), ("b", 81, "sctp"), ("c", 82, "udp")],
        )];
        let eps = [endpoints(
            "web",
            &["10.42.1.5"],
            &[("a", 8080, ""), ("b", 8081, "SCTP"), ("c", 8082, "UDP")],
        )];
        let rules = rules(&services, &eps);
        let ports: Vec<(&str, u16)> = rules.iter().map(|r| (r.protocol, r.port)).collect();
        assert_eq!(ports, [("tcp", 80), ("udp", 82)]);
        assert_eq!(rules[0].endpoints, [("10.42.1.5".parse().unwrap(), 8080)]);
    }

    #[test]
    fn node_ports_ingress_and_policies_come_from_the_service() {
        let mut lb = service("lb", "10.43.0.21", &[("http", 80, "TCP")]);
        let spec = lb.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        spec.external_traffic_policy = Some("Local".into());
        spec.internal_traffic_policy = Some("Local".into());
        spec.session_affinity = Some("ClientIP".into());
        spec.load_balancer_source_ranges = Some(vec!["192.168.7.9/24".into()]);
        spec.external_ips = Some(vec!["198.51.100.7".into(), "not-an-ip".into()]);
        lb.status = Some(services::ServiceStatus {
            load_balancer: Some(services::LoadBalancerStatus {
                ingress: Some(vec![services::LoadBalancerIngress {
                    ip: Some("192.168.5.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        // A ClusterIP Service's stray nodePort (or ingress) is not exposed.
        let mut plain = service("plain", "10.43.0.22", &[("", 80, "TCP")]);
        plain.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30081);
        let eps = [endpoints("lb", &["10.42.1.5"], &[("http", 8080, "TCP")])];
        let rules = rules(&[lb, plain], &eps);
        let exposure = &rules[0].exposure;
        assert_eq!(exposure.node_port, Some(30080));
        assert_eq!(
            exposure.load_balancer_ips,
            ["192.168.5.1".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            exposure.external_ips,
            ["198.51.100.7".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(exposure.local_only);
        assert!(exposure.internal_local);
        assert_eq!(exposure.source_ranges[0].to_string(), "192.168.7.0/24");
        assert_eq!(
            exposure.affinity_seconds,
            Some(services::DEFAULT_AFFINITY_SECONDS)
        );
        assert_eq!(rules[1].exposure, Exposure::default());
    }
}
