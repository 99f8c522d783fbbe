//! The Service environment variables every container gets, as the kubelet
//! makes them (`pkg/kubelet/envvars`), from the Services this node knows:
//! those of `default/kubernetes` always (so an in-cluster client finds the
//! API with no configuration), and those of every Service of the pod's
//! namespace that has a clusterIP, unless the pod says
//! `enableServiceLinks: false`. For a Service `redis-primary`:
//!
//! ```text
//! REDIS_PRIMARY_SERVICE_HOST=10.43.0.20
//! REDIS_PRIMARY_SERVICE_PORT=6379            (the first port)
//! REDIS_PRIMARY_SERVICE_PORT_<PORT_NAME>=6379  (each named port)
//! REDIS_PRIMARY_PORT=tcp://10.43.0.20:6379   (Docker links: the first port)
//! REDIS_PRIMARY_PORT_6379_TCP=tcp://10.43.0.20:6379
//! REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp
//! REDIS_PRIMARY_PORT_6379_TCP_PORT=6379
//! REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.43.0.20
//! ```
//!
//! The container's own `env` is laid over them (`crate::runtime::spec`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skiff_proto::v1;

use crate::dns::index::{ServiceAddress, ServiceEntry};
use crate::dns::ClusterIndex;

/// Where the API's Service lives, and its name.
const API_NAMESPACE: &str = "default";
const API_SERVICE: &str = "kubernetes";

/// `redis-primary` → `REDIS_PRIMARY`.
fn variable_name(name: &str) -> String {
    name.replace('-', "_").to_ascii_uppercase()
}

/// The variables of one Service at `ip`.
fn variables(name: &str, ip: Ipv4Addr, entry: &ServiceEntry, out: &mut Vec<(String, String)>) {
    let prefix = variable_name(name);
    out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    if let Some(first) = entry.ports.first() {
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    }
    for port in entry.ports.iter().filter(|p| !p.name.is_empty()) {
        let port_name = variable_name(&port.name);
        out.push((
            format!("{prefix}_SERVICE_PORT_{port_name}"),
            port.port.to_string(),
        ));
    }
    for (i, port) in entry.ports.iter().enumerate() {
        let protocol = port.protocol.to_ascii_lowercase();
        let url = format!("{protocol}://{ip}:{}", port.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!(
            "{prefix}_PORT_{}_{}",
            port.port,
            port.protocol.to_ascii_uppercase()
        );
        out.push((format!("{port_prefix}_PROTO"), protocol));
        out.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        out.push((port_prefix, url));
    }
}

/// The Service variables of `pod`'s containers, by Service name.
pub fn service_env(pod: &v1::Pod, index: &ClusterIndex) -> Vec<(String, String)> {
    let namespace = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.as_str())
        .unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<&str, &ServiceEntry> = BTreeMap::new();
    if links {
        chosen.extend(index.services_in(namespace));
    }
    if let Some(api) = index.service(API_NAMESPACE, API_SERVICE) {
        chosen.entry(API_SERVICE).or_insert(api);
    }
    let mut out = Vec::new();
    for (name, entry) in chosen {
        if let ServiceAddress::ClusterIp(ip) = &entry.address {
            variables(name, *ip, entry, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::index::tests::service;

    fn index() -> ClusterIndex {
        ClusterIndex::build(
            &[
                service(
                    "default",
                    "kubernetes",
                    "10.43.0.1",
                    &[("https", "TCP", 443)],
                ),
                service(
                    "shop",
                    "redis-primary",
                    "10.43.0.20",
                    &[("", "TCP", 6379), ("metrics", "TCP", 9121)],
                ),
                service("shop", "headless", "None", &[("", "TCP", 80)]),
                service("other", "elsewhere", "10.43.0.30", &[("", "UDP", 53)]),
            ],
            &[],
            1,
        )
    }

    fn pod(namespace: &str, links: Option<bool>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "p".into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                enable_service_links: links,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_kubernetes_service_and_the_namespaces_services_are_in_every_container() {
        let env = service_env(&pod("shop", None), &index());
        for (name, value) in [
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
            ("REDIS_PRIMARY_SERVICE_HOST", "10.43.0.20"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_METRICS", "9121"),
            ("REDIS_PRIMARY_PORT", "tcp://10.43.0.20:6379"),
            ("REDIS_PRIMARY_PORT_9121_TCP", "tcp://10.43.0.20:9121"),
            ("REDIS_PRIMARY_PORT_9121_TCP_ADDR", "10.43.0.20"),
        ] {
            assert_eq!(get(&env, name), Some(value), "{name} in {env:?}");
        }
        // Headless Services and other namespaces' Services have none.
        assert!(get(&env, "HEADLESS_SERVICE_HOST").is_none());
        assert!(get(&env, "ELSEWHERE_SERVICE_HOST").is_none());
        let hosts = env.iter().filter(|(n, _)| n.ends_with("_SERVICE_HOST"));
        assert_eq!(hosts.count(), 2);
    }

    #[test]
    fn without_service_links_only_the_kubernetes_service_is_there() {
        let env = service_env(&pod("shop", Some(false)), &index());
        let hosts: Vec<&str> = env
            .iter()
            .filter(|(n, _)| n.ends_with("_SERVICE_HOST"))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(hosts, ["KUBERNETES_SERVICE_HOST"]);
        // Before the masters' lists come, nothing at all.
        assert!(service_env(&pod("shop", None), &ClusterIndex::default()).is_empty());
    }
}
