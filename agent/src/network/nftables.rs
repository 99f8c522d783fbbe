//! The agent's nftables table (`ip skiff`): masquerade for pod traffic
//! leaving the cluster CIDR, and DNAT for host ports. The whole table is
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
    json!({"prefix": {"addr": s.net.to_string(), "len": s.len}})
}

fn field(protocol: &str, name: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": name}})
}

/// The table's full contents as an nft JSON batch.
pub fn ruleset(cluster: Subnet, ports: &[HostPort]) -> Value {
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
        rule(
            "postrouting",
            vec![
                json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": prefix(&cluster)}}),
                json!({"match": {"op": "!=", "left": field("ip", "daddr"), "right": prefix(&cluster)}}),
                json!({"masquerade": null}),
            ],
        ),
    ];
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

/// Replaces the table with `ruleset` in one transaction.
pub async fn apply(ruleset: &Value) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e} (install nftables)"))?;
    let mut stdin = child.stdin.take().ok_or("nft stdin")?;
    stdin
        .write_all(ruleset.to_string().as_bytes())
        .await
        .map_err(|e| format!("writing to nft: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the table (agent uninstall, tests).
pub async fn remove() -> Result<(), String> {
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
        let cluster: Subnet = "10.42.0.0/16".parse().unwrap();
        let rules = ruleset(
            cluster,
            &[HostPort {
                protocol: "TCP".into(),
                host_ip: None,
                host_port: 8080,
                pod_ip: "10.42.1.5".parse().unwrap(),
                container_port: 80,
            }],
        );
        let text = rules.to_string();
        assert!(text.contains(r#"{"masquerade":null}"#));
        assert!(text.contains(r#""dnat":{"addr":"10.42.1.5","port":80}"#));
        assert!(text.contains(r#""right":8080"#));
        let batch = rules["nftables"].as_array().unwrap();
        // Replaced as a whole: add (so delete cannot fail), delete, add.
        assert!(batch[1]["delete"]["table"]["name"] == TABLE);
        // Prerouting and output both forward the port.
        assert_eq!(text.matches("dnat").count(), 2);
    }
}
