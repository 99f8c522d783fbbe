//! A pod's name service settings, as the kubelet makes them
//! (`pkg/kubelet/network/dns`): its `/etc/resolv.conf` by `dnsPolicy`, and
//! its host name and domain (`hostname`, `subdomain`).
//!
//! - `ClusterFirst` (the default): the cluster DNS address alone, searching
//!   `<ns>.svc.cluster.local svc.cluster.local cluster.local` then the
//!   node's search domains, with `options ndots:5`. A pod in the host's
//!   network gets the node's settings instead, and so does every pod of a
//!   node without cluster DNS (no pod network).
//! - `ClusterFirstWithHostNet`: the cluster settings, host network or not.
//! - `Default`: the node's resolv.conf. When it names only loopback
//!   resolvers (a systemd-resolved stub, which a pod cannot reach), the
//!   resolvers behind the stub (`/run/systemd/resolve/resolv.conf`), as k3s
//!   chooses.
//! - `None`: nothing but `dnsConfig`.
//!
//! `dnsConfig` is merged last: its nameservers and searches appended
//! without repeats, its options replacing same-named ones. Then the
//! kubelet's limits: 3 nameservers, 32 search domains of 2048 characters
//! in all (the rest dropped from the end).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use skiff_proto::v1;

use crate::dns::resolv_conf::{ResolvConf, DEFAULT_PATH};
use crate::dns::{SharedIndex, CLUSTER_DOMAIN};

/// The options of a ClusterFirst pod.
const CLUSTER_OPTIONS: [&str; 1] = ["ndots:5"];
/// The resolvers behind systemd-resolved's stub.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
/// The longest host name.
const MAX_HOSTNAME: usize = 63;

/// What pods find the cluster's Services by: the cluster DNS address for
/// their resolv.conf, the node's own resolver settings, and the Services
/// this node knows (for their environment variables).
#[derive(Debug, Clone)]
pub struct ServiceDiscovery {
    /// The nameserver of ClusterFirst pods; `None`: no cluster DNS answers
    /// on this node.
    pub cluster_dns: Option<Ipv4Addr>,
    /// The node's resolv.conf.
    pub resolv_conf: PathBuf,
    pub services: SharedIndex,
}

impl Default for ServiceDiscovery {
    fn default() -> ServiceDiscovery {
        ServiceDiscovery {
            cluster_dns: None,
            resolv_conf: PathBuf::from(DEFAULT_PATH),
            services: SharedIndex::default(),
        }
    }
}

impl ServiceDiscovery {
    /// The text of `pod`'s `/etc/resolv.conf`.
    pub fn resolv_conf_for(&self, pod: &v1::Pod) -> String {
        let host = node_settings(ResolvConf::read(&self.resolv_conf), || {
            ResolvConf::read(Path::new(SYSTEMD_RESOLV_CONF))
        });
        pod_resolv_conf(pod, self.cluster_dns, &host).render()
    }
}

/// The node's settings as pods may use them: `primary`, unless it names
/// only loopback resolvers and `behind_stub` names others.
pub fn node_settings(primary: ResolvConf, behind_stub: impl FnOnce() -> ResolvConf) -> ResolvConf {
    let only_loopback =
        !primary.nameservers.is_empty() && primary.nameservers.iter().all(IpAddr::is_loopback);
    if only_loopback {
        let behind = behind_stub();
        if !behind.nameservers.is_empty() {
            return behind;
        }
    }
    primary
}

/// Appends `more` to `list`, leaving out what is there already.
fn append_new(list: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// `options` with `given` merged in: a name already there gets the given
/// value, a new one is added at the end.
fn merge_options(options: &[String], given: &[v1::PodDnsConfigOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = options
        .iter()
        .map(|o| match o.split_once(':') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (o.clone(), String::new()),
        })
        .collect();
    for option in given {
        let value = option.value.clone().unwrap_or_default();
        match merged.iter_mut().find(|(name, _)| *name == option.name) {
            Some(slot) => slot.1 = value,
            None => merged.push((option.name.clone(), value)),
        }
    }
    merged
        .into_iter()
        .map(|(name, value)| {
            if value.is_empty() {
                name
            } else {
                format!("{name}:{value}")
            }
        })
        .collect()
}

/// `pod`'s resolver settings, given this node's cluster DNS address (if
/// it answers one) and the node's own settings `host`.
pub fn pod_resolv_conf(
    pod: &v1::Pod,
    cluster_dns: Option<Ipv4Addr>,
    host: &ResolvConf,
) -> ResolvConf {
    let default_spec = v1::PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let namespace = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.as_str())
        .unwrap_or_default();
    let cluster_first = match spec.dns_policy.as_str() {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst, the default.
        _ => Some(!spec.host_network),
    };
    let mut conf = match (cluster_first, cluster_dns) {
        (None, _) => ResolvConf::default(),
        (Some(true), Some(dns)) => {
            let mut searches = vec![
                format!("{namespace}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_owned(),
            ];
            append_new(&mut searches, host.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![IpAddr::V4(dns)],
                searches,
                options: CLUSTER_OPTIONS.iter().map(|o| (*o).to_owned()).collect(),
            }
        }
        (Some(_), _) => host.clone(),
    };
    if let Some(config) = &spec.dns_config {
        // Validated by the masters; anything else is left out.
        let servers: Vec<IpAddr> = config
            .nameservers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        for server in servers {
            if !conf.nameservers.contains(&server) {
                conf.nameservers.push(server);
            }
        }
        append_new(&mut conf.searches, config.searches.iter().cloned());
        conf.options = merge_options(&conf.options, &config.options);
    }
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    while conf.searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS + 1 {
        conf.searches.pop();
    }
    conf
}

/// `pod`'s host name (`spec.hostname`, else its name, cut to 63
/// characters) and, when it has a `subdomain`, its domain
/// (`<subdomain>.<ns>.svc.cluster.local`).
pub fn pod_hostname(pod: &v1::Pod) -> (String, Option<String>) {
    let meta = pod.metadata.as_ref();
    let name = meta.map(|m| m.name.as_str()).unwrap_or_default();
    let namespace = meta.map(|m| m.namespace.as_str()).unwrap_or_default();
    let spec = pod.spec.as_ref();
    let full = spec
        .map(|s| s.hostname.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    let hostname = if full.chars().count() > MAX_HOSTNAME {
        // As the kubelet cuts it: no trailing '-' or '.'.
        let cut: String = full.chars().take(MAX_HOSTNAME).collect();
        cut.trim_end_matches(['-', '.']).to_owned()
    } else {
        full.to_owned()
    };
    let domain = spec
        .map(|s| s.subdomain.as_str())
        .filter(|d| !d.is_empty())
        .map(|subdomain| format!("{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"));
    (hostname, domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, policy: &str, host_network: bool) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web-0".into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                dns_policy: policy.into(),
                host_network,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node() -> ResolvConf {
        ResolvConf::parse("nameserver 192.168.1.1\nsearch lan example.com\noptions edns0\n")
    }

    const DNS: Option<Ipv4Addr> = Some(Ipv4Addr::new(10, 43, 0, 10));

    fn text(pod: &v1::Pod, cluster_dns: Option<Ipv4Addr>) -> String {
        pod_resolv_conf(pod, cluster_dns, &node()).render()
    }

    #[test]
    fn cluster_first_pods_ask_the_cluster_dns_with_the_kubelets_search_path() {
        let want = "nameserver 10.43.0.10\n\
            search shop.svc.cluster.local svc.cluster.local cluster.local lan example.com\n\
            options ndots:5\n";
        assert_eq!(text(&pod("shop", "ClusterFirst", false), DNS), want);
        // Unset is ClusterFirst.
        assert_eq!(text(&pod("shop", "", false), DNS), want);
        assert_eq!(
            text(&pod("shop", "ClusterFirstWithHostNet", true), DNS),
            want
        );
    }

    #[test]
    fn host_network_default_and_nodes_without_cluster_dns_get_the_nodes_settings() {
        let node_text = node().render();
        assert_eq!(text(&pod("shop", "ClusterFirst", true), DNS), node_text);
        assert_eq!(text(&pod("shop", "Default", false), DNS), node_text);
        assert_eq!(text(&pod("shop", "ClusterFirst", false), None), node_text);
    }

    #[test]
    fn dns_config_is_merged_last_and_none_is_only_dns_config() {
        let mut p = pod("shop", "ClusterFirst", false);
        p.spec.as_mut().unwrap().dns_config = Some(Box::new(v1::PodDnsConfig {
            nameservers: vec!["1.1.1.1".into(), "10.43.0.10".into()],
            searches: vec!["lan".into(), "extra.example".into()],
            options: vec![
                v1::PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                v1::PodDnsConfigOption {
                    name: "edns0".into(),
                    value: None,
                },
            ],
        }));
        let conf = pod_resolv_conf(&p, DNS, &node());
        assert_eq!(
            conf.nameservers,
            [
                "10.43.0.10".parse::<IpAddr>().unwrap(),
                "1.1.1.1".parse().unwrap()
            ]
        );
        assert_eq!(
            conf.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan",
                "example.com",
                "extra.example"
            ]
        );
        assert_eq!(conf.options, ["ndots:2", "edns0"]);

        p.spec.as_mut().unwrap().dns_policy = "None".into();
        assert_eq!(
            pod_resolv_conf(&p, DNS, &node()).render(),
            "nameserver 1.1.1.1\nnameserver 10.43.0.10\nsearch lan extra.example\n\
             options ndots:2 edns0\n"
        );
    }

    #[test]
    fn the_kubelets_limits_hold() {
        let mut p = pod("shop", "None", false);
        let long = "a".repeat(60);
        p.spec.as_mut().unwrap().dns_config = Some(Box::new(v1::PodDnsConfig {
            nameservers: (1..=5).map(|i| format!("10.0.0.{i}")).collect(),
            searches: (0..40).map(|i| format!("{long}{i}.example")).collect(),
            options: vec![],
        }));
        let conf = pod_resolv_conf(&p, DNS, &node());
        assert_eq!(conf.nameservers.len(), 3);
        assert!(conf.searches.len() <= 32);
        let chars = conf.searches.join(" ").len();
        assert!(chars <= 2048, "{chars}");
        assert!(
            conf.searches.len() > 25,
            "only what does not fit is dropped"
        );
    }

    #[test]
    fn a_loopback_stub_is_replaced_by_the_resolvers_behind_it() {
        let stub = ResolvConf::parse("nameserver 127.0.0.53\nsearch lan\n");
        let behind = ResolvConf::parse("nameserver 192.168.1.1\nsearch lan\n");
        assert_eq!(node_settings(stub.clone(), || behind.clone()), behind);
        // Nothing behind it: the stub it is.
        assert_eq!(node_settings(stub.clone(), ResolvConf::default), stub);
        let plain = node();
        assert_eq!(node_settings(plain.clone(), || behind.clone()), plain);
    }

    #[test]
    fn host_names_follow_hostname_and_subdomain() {
        let mut p = pod("db", "", false);
        assert_eq!(pod_hostname(&p), ("web-0".to_owned(), None));
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = "pg-0".into();
        spec.subdomain = "pg".into();
        assert_eq!(
            pod_hostname(&p),
            (
                "pg-0".to_owned(),
                Some("pg.db.svc.cluster.local".to_owned())
            )
        );
        p.metadata.as_mut().unwrap().name = format!("{}-x", "a".repeat(62));
        p.spec.as_mut().unwrap().hostname.clear();
        let (cut, _) = pod_hostname(&p);
        assert_eq!(
            cut,
            "a".repeat(62),
            "63 characters, without the trailing '-'"
        );
    }
}
