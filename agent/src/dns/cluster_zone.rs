//! The `cluster.local` zone, and the reverse zones of the service and
//! cluster CIDRs, answered as CoreDNS's kubernetes plugin answers them
//! (`pods insecure`), from the [`ClusterIndex`] at each query:
//!
//! | name | answer |
//! |---|---|
//! | `svc.ns.svc.cluster.local` | A: the clusterIP; headless: the ready endpoints' IPs; ExternalName: a CNAME |
//! | `_port._proto.svc.ns.svc.cluster.local` | SRV (and A) for the named port; a plain Service name gets SRV for every port |
//! | `endpoint.svc.ns.svc.cluster.local` | A of the endpoint named by its hostname or dashed IP |
//! | `a-b-c-d.ns.pod.cluster.local` | A `a.b.c.d` |
//! | `d.c.b.a.in-addr.arpa` in the service or cluster CIDR | PTR to the Service's or endpoint's name |
//! | `ns.dns.cluster.local`, `dns-version.cluster.local`, the apex | A of the DNS address, TXT `1.1.0`, SOA and NS |
//!
//! A name the zone does not have is NXDOMAIN, a name it has without a
//! record of the type asked is NODATA (NOERROR, no answer); both carry the
//! zone's SOA, and every record lives 5 s. Names are matched without
//! regard to case. Whatever is outside these zones is not answered here
//! ([`Outcome::Forward`]); whatever is inside never leaves the node, so a
//! pod's search-path tries (`example.com.default.svc.cluster.local`) are
//! answered at once.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use skiff_objects::Ipv4Net;

use super::index::{ClusterIndex, ServiceAddress, ServiceEntry};

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long every answer may be kept, as CoreDNS's kubernetes plugin says.
pub const TTL: u32 = 5;
/// The Kubernetes DNS schema version `dns-version.cluster.local` gives.
const SCHEMA_VERSION: &str = "1.1.0";

/// What the zones are made of besides the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterZone {
    /// The cluster DNS address (`ns.dns.cluster.local`).
    pub cluster_dns: Ipv4Addr,
    /// Reverse lookups in these ranges are answered here, found or not.
    pub service_cidr: Ipv4Net,
    pub cluster_cidr: Ipv4Net,
}

/// Whether a name is the zone's to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outside the zones: for the upstream resolvers.
    Forward,
    /// Answered here.
    Answer(ZoneAnswer),
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneAnswer {
    /// NOERROR (with or without answers) or NXDOMAIN.
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    /// The zone's SOA, for NXDOMAIN and NODATA.
    pub authorities: Vec<Record>,
    /// A records of SRV targets.
    pub additionals: Vec<Record>,
    /// An ExternalName Service's target, when the answer is its CNAME and
    /// the question was for another type: what to look up next.
    pub alias_of: Option<Name>,
}

/// One address a Service name leads to.
struct Target {
    ip: Ipv4Addr,
    /// None for a Service or subset without ports (A records only).
    port: Option<u16>,
    /// The endpoint's label, for endpoints.
    endpoint: Option<String>,
}

/// A Service name taken apart.
struct ServiceQuery<'a> {
    namespace: &'a str,
    service: &'a str,
    endpoint: Option<&'a str>,
    port: &'a str,
    protocol: &'a str,
}

/// CoreDNS's wildcards for a port or protocol.
fn wildcard(value: &str) -> bool {
    value == "*" || value == "any"
}

fn port_matches(asked: &str, have: &str) -> bool {
    wildcard(asked) || wildcard(have) || asked.eq_ignore_ascii_case(have)
}

/// `_http` → `http` (a label without the underscore is taken as it is).
fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// `10-42-1-5` → `10.42.1.5`.
fn undashed(label: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = label.split('-');
    for octet in &mut octets {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// The labels of `name`, lowercase.
fn lower_labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect()
}

/// `name.` as a DNS name; `None` for what is not one.
fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

fn record(name: &Name, data: RData) -> Record {
    Record::from_rdata(name.clone(), TTL, data)
}

/// The reverse zone `range` lies in, on whole octets: `43.10.in-addr.arpa`
/// for 10.43.0.0/16.
fn reverse_zone_name(range: Ipv4Net) -> String {
    let octets = usize::from((range.len / 8).max(1));
    let mut labels: Vec<String> = range.addr.octets()[..octets]
        .iter()
        .map(u8::to_string)
        .collect();
    labels.reverse();
    format!("{}.in-addr.arpa", labels.join("."))
}

impl ClusterZone {
    /// The answer to `qtype` questions about `name`, or that it is not the
    /// zone's.
    pub fn answer(&self, index: &ClusterIndex, name: &Name, qtype: RecordType) -> Outcome {
        let labels = lower_labels(name);
        let domain: Vec<&str> = CLUSTER_DOMAIN.split('.').collect();
        if let Some(rest) = labels.len().checked_sub(domain.len()) {
            if labels[rest..].iter().zip(&domain).all(|(a, b)| a == b) {
                let rest: Vec<&str> = labels[..rest].iter().map(String::as_str).collect();
                return Outcome::Answer(self.cluster(index, name, &rest, qtype));
            }
        }
        if let [d, c, b, a, in_addr, arpa] = labels.as_slice() {
            if in_addr == "in-addr" && arpa == "arpa" {
                let ip = format!("{a}.{b}.{c}.{d}").parse::<Ipv4Addr>().ok();
                let zone = ip.and_then(|ip| self.reverse_range(ip).map(|range| (ip, range)));
                if let Some((ip, range)) = zone {
                    return Outcome::Answer(self.reverse(index, name, ip, range, qtype));
                }
            }
        }
        Outcome::Forward
    }

    /// The service or cluster CIDR `ip` is in.
    fn reverse_range(&self, ip: Ipv4Addr) -> Option<Ipv4Net> {
        [self.service_cidr, self.cluster_cidr]
            .into_iter()
            .find(|range| range.contains_addr(ip))
    }

    fn soa(&self, index: &ClusterIndex, zone: &str) -> Vec<Record> {
        let names = (
            fqdn(zone),
            fqdn(&format!("ns.dns.{CLUSTER_DOMAIN}")),
            fqdn(&format!("hostmaster.{CLUSTER_DOMAIN}")),
        );
        let (Some(owner), Some(mname), Some(rname)) = names else {
            return Vec::new();
        };
        let soa = SOA::new(mname, rname, index.serial(), 7200, 1800, 86400, TTL);
        vec![record(&owner, RData::SOA(soa))]
    }

    /// NXDOMAIN, or NODATA for `code` NOERROR, with the SOA of `zone`.
    fn negative(&self, index: &ClusterIndex, code: ResponseCode, zone: &str) -> ZoneAnswer {
        ZoneAnswer {
            code,
            authorities: self.soa(index, zone),
            ..ZoneAnswer::default()
        }
    }

    fn nxdomain(&self, index: &ClusterIndex) -> ZoneAnswer {
        self.negative(index, ResponseCode::NXDomain, CLUSTER_DOMAIN)
    }

    fn nodata(&self, index: &ClusterIndex) -> ZoneAnswer {
        self.negative(index, ResponseCode::NoError, CLUSTER_DOMAIN)
    }

    /// A name that exists with `answers` of type `has`: them, or NODATA
    /// for any other type.
    fn only(
        &self,
        index: &ClusterIndex,
        qtype: RecordType,
        has: RecordType,
        answers: Vec<Record>,
    ) -> ZoneAnswer {
        if qtype == has || qtype == RecordType::ANY {
            ZoneAnswer {
                answers,
                ..ZoneAnswer::default()
            }
        } else {
            self.nodata(index)
        }
    }

    fn cluster(
        &self,
        index: &ClusterIndex,
        name: &Name,
        rest: &[&str],
        qtype: RecordType,
    ) -> ZoneAnswer {
        match rest {
            [] => match qtype {
                RecordType::SOA => ZoneAnswer {
                    answers: self.soa(index, CLUSTER_DOMAIN),
                    ..ZoneAnswer::default()
                },
                RecordType::NS => {
                    let ns = fqdn(&format!("ns.dns.{CLUSTER_DOMAIN}"))
                        .map(|ns| record(name, RData::NS(NS(ns))));
                    self.only(index, qtype, RecordType::NS, ns.into_iter().collect())
                }
                _ => self.nodata(index),
            },
            ["dns-version"] => {
                let txt = record(name, RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])));
                self.only(index, qtype, RecordType::TXT, vec![txt])
            }
            ["ns", "dns"] => {
                let a = record(name, RData::A(A(self.cluster_dns)));
                self.only(index, qtype, RecordType::A, vec![a])
            }
            ["dns"] | ["svc"] | ["pod"] | [_, "pod"] => self.nodata(index),
            [namespace, "svc"] if index.has_namespace(namespace) => self.nodata(index),
            [ip, _, "pod"] => match undashed(ip) {
                Some(ip) => {
                    let a = record(name, RData::A(A(ip)));
                    self.only(index, qtype, RecordType::A, vec![a])
                }
                None => self.nxdomain(index),
            },
            [service, namespace, "svc"] => {
                let query = ServiceQuery {
                    namespace,
                    service,
                    endpoint: None,
                    port: "*",
                    protocol: "*",
                };
                self.service(index, name, &query, qtype)
            }
            [endpoint, service, namespace, "svc"] => {
                let query = ServiceQuery {
                    namespace,
                    service,
                    endpoint: Some(*endpoint),
                    port: "*",
                    protocol: "*",
                };
                self.service(index, name, &query, qtype)
            }
            [port, protocol, service, namespace, "svc"] => {
                let query = ServiceQuery {
                    namespace,
                    service,
                    endpoint: None,
                    port: strip_underscore(port),
                    protocol: strip_underscore(protocol),
                };
                self.service(index, name, &query, qtype)
            }
            _ => self.nxdomain(index),
        }
    }

    fn service(
        &self,
        index: &ClusterIndex,
        name: &Name,
        query: &ServiceQuery<'_>,
        qtype: RecordType,
    ) -> ZoneAnswer {
        let Some(entry) = index.service(query.namespace, query.service) else {
            return self.nxdomain(index);
        };
        if let ServiceAddress::ExternalName(target) = &entry.address {
            // An alias has no endpoints.
            let Some(target) = fqdn(target).filter(|_| query.endpoint.is_none()) else {
                return self.nxdomain(index);
            };
            let cname = record(name, RData::CNAME(CNAME(target.clone())));
            return ZoneAnswer {
                answers: vec![cname],
                alias_of: (qtype != RecordType::CNAME).then_some(target),
                ..ZoneAnswer::default()
            };
        }
        let targets = targets(entry, query);
        if targets.is_empty() {
            // CoreDNS: a headless Service without ready endpoints, or a
            // port it does not have, is no name at all.
            return self.nxdomain(index);
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match qtype {
            RecordType::A | RecordType::ANY => {
                let mut ips: Vec<Ipv4Addr> = Vec::new();
                for t in &targets {
                    if !ips.contains(&t.ip) {
                        ips.push(t.ip);
                    }
                }
                answers.extend(ips.into_iter().map(|ip| record(name, RData::A(A(ip)))));
            }
            RecordType::SRV => {
                let with_port: Vec<(&Target, u16)> = targets
                    .iter()
                    .filter_map(|t| t.port.map(|p| (t, p)))
                    .collect();
                let weight = u16::try_from(100 / with_port.len().max(1))
                    .unwrap_or(1)
                    .max(1);
                for (t, port) in with_port {
                    let host = match &t.endpoint {
                        Some(label) => format!(
                            "{label}.{}.{}.svc.{CLUSTER_DOMAIN}",
                            query.service, query.namespace
                        ),
                        None => {
                            format!("{}.{}.svc.{CLUSTER_DOMAIN}", query.service, query.namespace)
                        }
                    };
                    let Some(host) = fqdn(&host) else {
                        continue;
                    };
                    let srv = record(name, RData::SRV(SRV::new(0, weight, port, host.clone())));
                    if !answers.contains(&srv) {
                        answers.push(srv);
                    }
                    let a = record(&host, RData::A(A(t.ip)));
                    if !additionals.contains(&a) {
                        additionals.push(a);
                    }
                }
                if answers.is_empty() {
                    return self.nodata(index);
                }
            }
            _ => return self.nodata(index),
        }
        ZoneAnswer {
            answers,
            additionals,
            ..ZoneAnswer::default()
        }
    }

    fn reverse(
        &self,
        index: &ClusterIndex,
        name: &Name,
        ip: Ipv4Addr,
        range: Ipv4Net,
        qtype: RecordType,
    ) -> ZoneAnswer {
        let zone = reverse_zone_name(range);
        let found = index.reverse(ip);
        if found.is_empty() {
            return self.negative(index, ResponseCode::NXDomain, &zone);
        }
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return self.negative(index, ResponseCode::NoError, &zone);
        }
        let answers = found
            .iter()
            .filter_map(|entry| {
                let service = format!("{}.{}.svc.{CLUSTER_DOMAIN}", entry.service, entry.namespace);
                let target = match &entry.endpoint {
                    Some(label) => fqdn(&format!("{label}.{service}")),
                    None => fqdn(&service),
                }?;
                Some(record(name, RData::PTR(PTR(target))))
            })
            .collect();
        ZoneAnswer {
            answers,
            ..ZoneAnswer::default()
        }
    }
}

/// What a Service name leads to, as CoreDNS finds it: a headless
/// Service's (or a named endpoint's) ready addresses with their subsets'
/// matching ports, else the clusterIP with each matching Service port.
fn targets(entry: &ServiceEntry, query: &ServiceQuery<'_>) -> Vec<Target> {
    let mut out = Vec::new();
    let any_port = wildcard(query.port) && wildcard(query.protocol);
    if entry.address == ServiceAddress::Headless || query.endpoint.is_some() {
        for subset in &entry.subsets {
            for address in &subset.addresses {
                let label = address.label();
                if query.endpoint.is_some_and(|wanted| wanted != label) {
                    continue;
                }
                if subset.ports.is_empty() && any_port {
                    out.push(Target {
                        ip: address.ip,
                        port: None,
                        endpoint: Some(label.clone()),
                    });
                }
                for port in &subset.ports {
                    if port_matches(query.port, &port.name)
                        && port_matches(query.protocol, port.protocol)
                    {
                        out.push(Target {
                            ip: address.ip,
                            port: Some(port.port),
                            endpoint: Some(label.clone()),
                        });
                    }
                }
            }
        }
        return out;
    }
    let ServiceAddress::ClusterIp(ip) = &entry.address else {
        return out;
    };
    if entry.ports.is_empty() && any_port {
        out.push(Target {
            ip: *ip,
            port: None,
            endpoint: None,
        });
    }
    for port in &entry.ports {
        if port_matches(query.port, &port.name) && port_matches(query.protocol, port.protocol) {
            out.push(Target {
                ip: *ip,
                port: Some(port.port),
                endpoint: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::index::tests::{endpoints, service};

    fn zone() -> ClusterZone {
        ClusterZone {
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    fn index() -> ClusterIndex {
        let services = [
            service(
                "default",
                "web",
                "10.43.0.11",
                &[("http", "TCP", 80), ("dns", "UDP", 53)],
            ),
            service("db", "pg", "None", &[("postgres", "TCP", 5432)]),
            service("db", "empty", "None", &[("postgres", "TCP", 5432)]),
            service("db", "ext", "ext:db.example.com", &[]),
        ];
        let eps = [
            endpoints(
                "default",
                "web",
                &[("10.42.1.5", "")],
                &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
            ),
            endpoints(
                "db",
                "pg",
                &[("10.42.2.6", "pg-0"), ("10.42.3.7", "pg-1")],
                &[("postgres", "TCP", 5432)],
            ),
        ];
        ClusterIndex::build(&services, &eps, 42)
    }

    fn ask(name: &str, qtype: RecordType) -> ZoneAnswer {
        let name = Name::from_ascii(name).unwrap();
        match zone().answer(&index(), &name, qtype) {
            Outcome::Answer(a) => a,
            Outcome::Forward => panic!("{name} was not answered here"),
        }
    }

    fn data(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    fn is_negative(answer: &ZoneAnswer, code: ResponseCode) -> bool {
        answer.code == code
            && answer.answers.is_empty()
            && answer.authorities.len() == 1
            && answer.authorities[0].record_type() == RecordType::SOA
    }

    #[test]
    fn a_service_name_is_its_cluster_ip_in_any_case() {
        let a = ask("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(data(&a.answers), ["10.43.0.11"]);
        assert_eq!(a.answers[0].ttl, TTL);
        let shouted = ask("WEB.Default.SVC.Cluster.Local.", RecordType::A);
        assert_eq!(data(&shouted.answers), ["10.43.0.11"]);
        // The owner is the name as asked.
        assert_eq!(
            shouted.answers[0].name.to_ascii(),
            "WEB.Default.SVC.Cluster.Local."
        );
    }

    #[test]
    fn a_headless_service_is_its_ready_endpoints_and_each_has_a_name() {
        let a = ask("pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), ["10.42.2.6", "10.42.3.7"]);
        let one = ask("pg-1.pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&one.answers), ["10.42.3.7"]);
        // An endpoint of a Service with a clusterIP, by its dashed address.
        let dashed = ask("10-42-1-5.web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&dashed.answers), ["10.42.1.5"]);
        // No ready endpoint: no name (as CoreDNS answers).
        let empty = ask("empty.db.svc.cluster.local.", RecordType::A);
        assert!(is_negative(&empty, ResponseCode::NXDomain), "{empty:?}");
        let nobody = ask("pg-9.pg.db.svc.cluster.local.", RecordType::A);
        assert!(is_negative(&nobody, ResponseCode::NXDomain), "{nobody:?}");
    }

    #[test]
    fn named_ports_have_srv_records_with_their_targets_addresses() {
        let srv = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&srv.answers),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(data(&srv.additionals), ["10.43.0.11"]);
        assert_eq!(
            srv.additionals[0].name.to_ascii(),
            "web.default.svc.cluster.local."
        );
        let udp = ask("_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&udp.answers),
            ["0 100 53 web.default.svc.cluster.local."]
        );
        // The wrong protocol for the port: no such name.
        let wrong = ask("_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert!(is_negative(&wrong, ResponseCode::NXDomain), "{wrong:?}");
        // A plain Service name: one SRV per port.
        let all = ask("web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(all.answers.len(), 2, "{all:?}");
        // Headless: one per endpoint, to the endpoint's own name.
        let pg = ask("_postgres._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&pg.answers),
            [
                "0 50 5432 pg-0.pg.db.svc.cluster.local.",
                "0 50 5432 pg-1.pg.db.svc.cluster.local."
            ]
        );
        assert_eq!(data(&pg.additionals), ["10.42.2.6", "10.42.3.7"]);
    }

    #[test]
    fn an_external_name_is_a_cname_to_look_up_further() {
        let a = ask("ext.db.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(data(&a.answers), ["db.example.com."]);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a.alias_of.unwrap().to_ascii(), "db.example.com.");
        let cname = ask("ext.db.svc.cluster.local.", RecordType::CNAME);
        assert_eq!(cname.alias_of, None, "the CNAME is the answer");
    }

    #[test]
    fn pods_have_a_names_made_of_their_addresses() {
        let a = ask("10-42-1-9.default.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), ["10.42.1.9"]);
        let bad = ask("10-42-1.default.pod.cluster.local.", RecordType::A);
        assert!(is_negative(&bad, ResponseCode::NXDomain), "{bad:?}");
        let aaaa = ask("10-42-1-9.default.pod.cluster.local.", RecordType::AAAA);
        assert!(is_negative(&aaaa, ResponseCode::NoError), "{aaaa:?}");
    }

    #[test]
    fn service_and_endpoint_addresses_have_ptr_records() {
        let svc = ask("11.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&svc.answers), ["web.default.svc.cluster.local."]);
        let ep = ask("6.2.42.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&ep.answers), ["pg-0.pg.db.svc.cluster.local."]);
        let dashed = ask("5.1.42.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            data(&dashed.answers),
            ["10-42-1-5.web.default.svc.cluster.local."]
        );
        // An address of the cluster's ranges nobody has: NXDOMAIN with the
        // reverse zone's SOA, never asked upstream.
        let unknown = ask("99.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert!(is_negative(&unknown, ResponseCode::NXDomain), "{unknown:?}");
        assert_eq!(
            unknown.authorities[0].name.to_ascii(),
            "43.10.in-addr.arpa."
        );
        // Outside them: for the upstream resolvers.
        let outside = Name::from_ascii("1.1.168.192.in-addr.arpa.").unwrap();
        assert_eq!(
            zone().answer(&index(), &outside, RecordType::PTR),
            Outcome::Forward
        );
    }

    #[test]
    fn a_missing_name_is_nxdomain_and_a_name_without_the_type_nodata() {
        for missing in [
            "nope.default.svc.cluster.local.",
            "www.example.com.default.svc.cluster.local.",
            "web.nowhere.svc.cluster.local.",
            "a.b.c.d.e.f.svc.cluster.local.",
            "nowhere.svc.cluster.local.",
            "foo.cluster.local.",
        ] {
            let a = ask(missing, RecordType::A);
            assert!(is_negative(&a, ResponseCode::NXDomain), "{missing}: {a:?}");
            assert_eq!(a.authorities[0].name.to_ascii(), "cluster.local.");
        }
        for existing in [
            "web.default.svc.cluster.local.",
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ] {
            let aaaa = ask(existing, RecordType::AAAA);
            assert!(
                is_negative(&aaaa, ResponseCode::NoError),
                "{existing}: {aaaa:?}"
            );
        }
        let soa = ask("cluster.local.", RecordType::SOA);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let serial = soa.answers[0].data.to_string();
        assert!(serial.contains(" 42 "), "the index's serial: {serial}");
    }

    #[test]
    fn the_dns_service_names_itself() {
        let ns = ask("ns.dns.cluster.local.", RecordType::A);
        assert_eq!(data(&ns.answers), ["10.43.0.10"]);
        let version = ask("dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(data(&version.answers), ["1.1.0"]);
    }

    #[test]
    fn names_outside_the_cluster_domain_are_not_answered_here() {
        for name in ["example.com.", "local.", "cluster.local.example.com."] {
            let name = Name::from_ascii(name).unwrap();
            assert_eq!(
                zone().answer(&index(), &name, RecordType::A),
                Outcome::Forward
            );
        }
    }
}
