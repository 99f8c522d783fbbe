//! The agent's nftables table (`ip skiff`): masquerade for pod traffic
//! leaving the cluster CIDR, DNAT for host ports, the cluster DNS address
//! (port 53, UDP and TCP) to this node's own DNS listener on its bridge
//! address (`crate::dns`), and Services' clusterIPs
//! (kube-proxy's job): traffic to a clusterIP and port goes to one of the
//! Service's ready endpoints, picked at random per connection (and is
//! refused when it has none); a pod that
//! reaches a pod on the same bridge through a clusterIP is masqueraded, so
//! the reply comes back through the host and is translated back. The whole table is
//! replaced in one `nft -j -f -` transaction (atomic in the kernel), so
//! the rules are always exactly what the agent wants, and rules of other
//! tables on the host are never touched.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::subnet::Subnet;

pub const TABLE: &str = "skiff";

/// One `hostPort` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

fn prefix(s: &Subnet) -> Value {
    json!({"prefix": {"addr": s.addr().to_string(), "len": s.prefix_len()}})
}

fn field(protocol: &str, name: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": name}})
}

/// One port of a Service with a clusterIP, and where it leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRule {
    pub cluster_ip: Ipv4Addr,
    /// "tcp" or "udp".
    pub protocol: String,
    pub port: u16,
    /// Ready endpoints: pod address and port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// The cluster DNS address, answered on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRedirect {
    /// What pods ask (`--cluster-dns`, the kube-dns Service's clusterIP).
    pub cluster_dns: Ipv4Addr,
    /// Where this node's DNS server listens (its bridge address).
    pub listener: Ipv4Addr,
}

/// Port 53, where DNS is asked and answered.
const DNS_PORT: u16 = 53;

/// What the node's table holds besides the host ports.
#[derive(Debug, Clone, Copy)]
pub struct TableScope<'a> {
    pub cluster: Subnet,
    /// The service CIDR: what no Service rule translates is refused.
    pub services: Subnet,
    /// This node's pod subnet and the bridge its pods hang off.
    pub local: Subnet,
    pub bridge: &'a str,
    /// The cluster DNS address to send to this node's DNS server, if it
    /// runs.
    pub dns: Option<DnsRedirect>,
}

/// The table's full contents as an nft JSON batch.
pub fn ruleset(scope: TableScope<'_>, ports: &[HostPort], services: &[ServiceRule]) -> Value {
    let cluster = scope.cluster;
    let table = json!({"family": "ip", "name": TABLE});
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}});
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}});
    let mut batch = vec![
        json!({"add": {"table": table}}),
        json!({"delete": {"table": table}}),
        json!({"add": {"table": table}}),
        chain("postrouting", "nat", "postrouting", 100),
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        // Service addresses no rule translated (no endpoints, a port the
        // Service lacks, no Service): refused at once, as kube-proxy
        // does, rather than left to time out or routed off the node.
        chain("forward-filter", "filter", "forward", 0),
        chain("output-filter", "filter", "output", 0),
        rule(
            "postrouting",
            vec![
                json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": prefix(&cluster)}}),
                json!({"match": {"op": "!=", "left": field("ip", "daddr"), "right": prefix(&cluster)}}),
                json!({"masquerade": null}),
            ],
        ),
    ];
    // Pod → clusterIP → a pod on this same bridge: the reply would go
    // straight back over the bridge, untranslated; masquerading sends it
    // through the host.
    batch.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": prefix(&scope.local)}}),
            json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": scope.bridge}}),
            json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
            json!({"masquerade": null}),
        ],
    ));
    // Cluster DNS before any Service: it is answered on this node, whatever
    // Endpoints the kube-dns Service may have.
    if let Some(dns) = scope.dns {
        for protocol in ["udp", "tcp"] {
            let expr = vec![
                json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": dns.cluster_dns.to_string()}}),
                json!({"match": {"op": "==", "left": field(protocol, "dport"), "right": DNS_PORT}}),
                json!({"dnat": {"addr": dns.listener.to_string(), "port": DNS_PORT}}),
            ];
            batch.push(rule("prerouting", expr.clone()));
            batch.push(rule("output", expr));
        }
    }
    for (i, service) in services.iter().enumerate() {
        if service.endpoints.is_empty() {
            continue;
        }
        let dnat =
            |(ip, port): &(Ipv4Addr, u16)| json!({"dnat": {"addr": ip.to_string(), "port": port}});
        let verdict = if service.endpoints.len() == 1 {
            dnat(&service.endpoints[0])
        } else {
            let mut targets = Vec::new();
            for (j, endpoint) in service.endpoints.iter().enumerate() {
                let name = format!("svc{i}-ep{j}");
                batch.push(
                    json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": name}}}),
                );
                // A port mapping needs its protocol matched in the same rule.
                let l4 = json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": service.protocol}});
                batch.push(rule(&name, vec![l4, dnat(endpoint)]));
                targets.push(json!([j, {"goto": {"target": name}}]));
            }
            json!({"vmap": {
                "key": {"numgen": {"mode": "random", "mod": service.endpoints.len(), "offset": 0}},
                "data": {"set": targets},
            }})
        };
        let expr = vec![
            json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": service.cluster_ip.to_string()}}),
            json!({"match": {"op": "==", "left": field(&service.protocol, "dport"), "right": service.port}}),
            verdict,
        ];
        batch.push(rule("prerouting", expr.clone()));
        batch.push(rule("output", expr));
    }
    let refuse = vec![
        json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": prefix(&scope.services)}}),
        json!({"reject": null}),
    ];
    batch.push(rule("forward-filter", refuse.clone()));
    batch.push(rule("output-filter", refuse));
    for p in ports {
        let target = match p.host_ip {
            Some(ip) => {
                json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": ip.to_string()}})
            }
            None => {
                json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
            }
        };
        let protocol = p.protocol.to_lowercase();
        let expr = vec![
            target,
            json!({"match": {"op": "==", "left": field(&protocol, "dport"), "right": p.host_port}}),
            json!({"dnat": {"addr": p.pod_ip.to_string(), "port": p.container_port}}),
        ];
        batch.push(rule("prerouting", expr.clone()));
        batch.push(rule("output", expr));
    }
    json!({"nftables": batch})
}

/// Why the table could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum NftablesError {
    #[error("running nft: {0} (install nftables)")]
    Start(#[source] std::io::Error),
    #[error("nft stdin was not captured")]
    NoStdin,
    #[error("writing to nft: {0}")]
    WriteRuleset(#[source] std::io::Error),
    #[error("waiting for nft: {0}")]
    WaitForExit(#[source] std::io::Error),
    #[error("nft refused the ruleset: {stderr}")]
    Refused { stderr: String },
}

/// Replaces the table with `ruleset` in one transaction.
pub async fn apply(ruleset: &Value) -> Result<(), NftablesError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(NftablesError::Start)?;
    let mut stdin = child.stdin.take().ok_or(NftablesError::NoStdin)?;
    stdin
        .write_all(ruleset.to_string().as_bytes())
        .await
        .map_err(NftablesError::WriteRuleset)?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(NftablesError::WaitForExit)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftablesError::Refused {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Removes the table (agent uninstall, tests).
pub async fn remove() -> Result<(), NftablesError> {
    let batch = json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": TABLE}}},
        {"delete": {"table": {"family": "ip", "name": TABLE}}},
    ]});
    apply(&batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_and_forwards_host_ports() {
        let rules = ruleset(
            scope(),
            &[HostPort {
                protocol: "TCP".into(),
                host_ip: None,
                host_port: 8080,
                pod_ip: "10.42.1.5".parse().unwrap(),
                container_port: 80,
            }],
            &[],
        );
        let text = rules.to_string();
        assert!(text.contains(r#"{"masquerade":null}"#));
        assert!(text.contains(r#""dnat":{"addr":"10.42.1.5","port":80}"#));
        assert!(text.contains(r#""right":8080"#));
        let batch = rules["nftables"].as_array().unwrap();
        // Replaced as a whole: add (so delete cannot fail), delete, add.
        assert!(batch[1]["delete"]["table"]["name"] == TABLE);
        // Prerouting and output both forward the port (the third "dnat" is
        // the hairpin masquerade's ct status).
        assert_eq!(text.matches(r#""dnat":{"#).count(), 2);
    }

    fn scope() -> TableScope<'static> {
        TableScope {
            cluster: "10.42.0.0/16".parse().unwrap(),
            services: "10.43.0.0/16".parse().unwrap(),
            local: "10.42.3.0/24".parse().unwrap(),
            bridge: "skiff0",
            dns: None,
        }
    }

    #[test]
    fn the_cluster_dns_address_goes_to_this_nodes_listener_before_any_service() {
        let dns = DnsRedirect {
            cluster_dns: "10.43.0.10".parse().unwrap(),
            listener: "10.42.3.1".parse().unwrap(),
        };
        // A kube-dns Service with an endpoint somewhere must not win.
        let kube_dns = ServiceRule {
            cluster_ip: "10.43.0.10".parse().unwrap(),
            protocol: "udp".into(),
            port: 53,
            endpoints: vec![("10.42.9.9".parse().unwrap(), 53)],
        };
        let with_dns = TableScope {
            dns: Some(dns),
            ..scope()
        };
        let rules = ruleset(with_dns, &[], &[kube_dns]);
        let batch = rules["nftables"].as_array().unwrap();
        let to_listener = r#"{"dnat":{"addr":"10.42.3.1","port":53}}"#;
        let dns_rules: Vec<(usize, &Value)> = batch
            .iter()
            .enumerate()
            .filter(|(_, c)| c.to_string().contains(to_listener))
            .collect();
        // UDP and TCP, each from pods (prerouting) and from the host
        // (output).
        assert_eq!(dns_rules.len(), 4, "{dns_rules:?}");
        let mut seen = Vec::new();
        for (_, c) in &dns_rules {
            let text = c.to_string();
            assert!(text.contains(r#""right":"10.43.0.10""#), "{text}");
            assert!(text.contains(r#""right":53"#), "{text}");
            let chain = c["add"]["rule"]["chain"].as_str().unwrap().to_owned();
            let protocol = if text.contains(r#""protocol":"udp""#) {
                "udp"
            } else {
                "tcp"
            };
            seen.push(format!("{chain}/{protocol}"));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "output/tcp",
                "output/udp",
                "prerouting/tcp",
                "prerouting/udp"
            ]
        );
        let service_rule = batch
            .iter()
            .position(|c| c.to_string().contains(r#""addr":"10.42.9.9""#))
            .unwrap();
        assert!(
            dns_rules.iter().all(|(i, _)| *i < service_rule),
            "DNS first"
        );
        // Without a DNS server on the node, nothing is redirected.
        let without = ruleset(scope(), &[], &[]).to_string();
        assert!(!without.contains(r#""port":53"#), "{without}");
    }

    #[test]
    fn a_service_spreads_over_its_endpoints_and_one_without_any_is_refused() {
        let web = ServiceRule {
            cluster_ip: "10.43.0.11".parse().unwrap(),
            protocol: "tcp".into(),
            port: 80,
            endpoints: vec![
                ("10.42.3.5".parse().unwrap(), 8080),
                ("10.42.4.7".parse().unwrap(), 8080),
            ],
        };
        let single = ServiceRule {
            cluster_ip: "10.43.0.12".parse().unwrap(),
            protocol: "udp".into(),
            port: 53,
            endpoints: vec![("10.42.4.9".parse().unwrap(), 5353)],
        };
        let empty = ServiceRule {
            cluster_ip: "10.43.0.13".parse().unwrap(),
            protocol: "tcp".into(),
            port: 80,
            endpoints: vec![],
        };
        let rules = ruleset(scope(), &[], &[web, single, empty]);
        let text = rules.to_string();
        // Two endpoints: a random pick between two chains, each a DNAT.
        assert!(
            text.contains(r#""numgen":{"mod":2,"mode":"random","offset":0}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"goto":{"target":"svc0-ep1"}}"#), "{text}");
        assert!(text.contains(r#""dnat":{"addr":"10.42.4.7","port":8080}"#));
        // One endpoint: DNAT straight away, in prerouting and output.
        assert_eq!(
            text.matches(r#""dnat":{"addr":"10.42.4.9","port":5353}"#)
                .count(),
            2
        );
        assert!(
            text.contains(r#""protocol":"udp","field":"dport""#)
                || text.contains(r#""field":"dport","protocol":"udp""#)
        );
        // No endpoints: never translated; the whole service CIDR that
        // is not translated is refused (forwarded and local traffic).
        assert!(!text.contains("10.43.0.13"));
        let batch = rules["nftables"].as_array().unwrap();
        let refusals: Vec<&Value> = batch
            .iter()
            .filter(|c| c.to_string().contains(r#"{"reject":null}"#))
            .collect();
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        for c in refusals {
            assert!(c["add"]["rule"]["chain"]
                .as_str()
                .unwrap()
                .ends_with("-filter"));
            assert!(
                c.to_string().contains(r#""addr":"10.43.0.0","len":16"#),
                "{c}"
            );
        }
        // Hairpin: from this node's pods, out of its bridge, after DNAT.
        assert!(text.contains(r#""right":"skiff0""#));
        assert!(text.contains(r#""addr":"10.42.3.0","len":24"#));
    }
}
