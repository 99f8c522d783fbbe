//! What the node tells the master about itself: capacity read from `/proc`
//! (CPUs, memory) and narrowed by the cgroup the agent runs in (cgroup v2
//! `cpu.max`/`memory.max` or v1 `cpu.cfs_quota_us`/`memory.limit_in_bytes`),
//! allocatable (capacity less the kubelet's default 100Mi eviction
//! reserve), labels, addresses and OS/kernel/runtime versions.
//!
//! The node's address (its InternalIP, the VXLAN underlay address) is the
//! one given with `--node-ip`, else the address of the interface the
//! default route leaves through (`/proc/net/route`), else 127.0.0.1, which
//! no other machine reaches and is warned about.
//!
//! Every reader takes the filesystem root it reads under (or the text it
//! parses), so tests run on fixtures.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use skiff_objects::storage;
use skiff_proto::v1;

/// Memory held back from pods (the kubelet's default hard eviction threshold).
const MEMORY_RESERVE: u64 = 100 << 20;
/// Pods per node, as the kubelet's default.
pub const MAX_PODS: u32 = 110;

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
}

/// Memory in bytes: MemTotal, or less if the agent's cgroup is limited.
pub fn memory_bytes(root: &Path) -> u64 {
    let total = read(root, "/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let limit = cgroup_file(root, "memory.max", "memory", "memory.limit_in_bytes")
        .and_then(|v| v.trim().parse::<u64>().ok());
    match limit {
        Some(l) if l > 0 && l < total => l,
        _ => total,
    }
}

/// CPUs in millicores: online CPUs, or less if the cgroup has a quota.
pub fn cpu_millicores(root: &Path) -> u64 {
    let cpus = read(root, "/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count() as u64)
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let mut millis = cpus * 1000;
    // v2: "max 100000" or "50000 100000".
    if let Some(max) = cgroup_file(root, "cpu.max", "", "") {
        let mut parts = max.split_whitespace();
        if let (Some(q), Some(p)) = (parts.next(), parts.next()) {
            if let (Ok(q), Ok(p)) = (q.parse::<u64>(), p.parse::<u64>()) {
                millis = millis.min(q * 1000 / p.max(1));
            }
        }
    } else if let (Some(q), Some(p)) = (
        cgroup_file(root, "", "cpu", "cpu.cfs_quota_us").and_then(|v| v.trim().parse::<i64>().ok()),
        cgroup_file(root, "", "cpu", "cpu.cfs_period_us")
            .and_then(|v| v.trim().parse::<u64>().ok()),
    ) {
        if q > 0 {
            millis = millis.min(q as u64 * 1000 / p.max(1));
        }
    }
    millis.max(1)
}

/// A file of the agent's own cgroup: `v2_file` on the unified hierarchy,
/// else `v1_file` of `v1_controller`.
fn cgroup_file(root: &Path, v2_file: &str, v1_controller: &str, v1_file: &str) -> Option<String> {
    let cgroups = read(root, "/proc/self/cgroup")?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() && !v2_file.is_empty() {
            if let Some(v) = read(root, &format!("/sys/fs/cgroup{path}/{v2_file}"))
                .or_else(|| read(root, &format!("/sys/fs/cgroup/unified{path}/{v2_file}")))
            {
                return Some(v);
            }
        }
        if !v1_controller.is_empty() && controllers.split(',').any(|c| c == v1_controller) {
            let dir = if v1_controller == "cpu" {
                "cpu,cpuacct"
            } else {
                v1_controller
            };
            if let Some(v) = read(
                root,
                &format!("/sys/fs/cgroup/{v1_controller}{path}/{v1_file}"),
            )
            .or_else(|| read(root, &format!("/sys/fs/cgroup/{dir}{path}/{v1_file}")))
            {
                return Some(v);
            }
        }
    }
    None
}

/// RTF_UP in the Flags column of `/proc/net/route`: the route is usable.
const ROUTE_UP: u32 = 0x1;

/// The interface the IPv4 default route leaves through, from the text of
/// `/proc/net/route`: a header line, then a route a line (`Iface
/// Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses and
/// flags in hex, the metric in decimal). Of the default routes
/// (destination and mask 0) that are up, the one with the lowest metric,
/// which is the one the kernel uses.
pub fn default_route_interface(routes: &str) -> Option<String> {
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric: u32 = f[6].parse().ok()?;
            (flags & ROUTE_UP != 0).then_some((metric, f[0]))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface.to_owned())
}

/// The first IPv4 address on interface `name`.
pub fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != name {
            return None;
        }
        a.address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|sin| sin.ip())
    })
}

/// The IPv4 address of the interface the default route leaves through
/// (`/proc/net/route` under `root`; the addresses are this network
/// namespace's).
pub fn default_route_ipv4(root: &Path) -> Option<Ipv4Addr> {
    let iface = default_route_interface(&read(root, "/proc/net/route")?)?;
    interface_ipv4(&iface)
}

/// Where a node IP came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIpSource {
    /// `--node-ip`.
    Given,
    /// The address of the interface holding the default route.
    DefaultRoute,
    /// There was no default route: loopback, which no other machine
    /// reaches.
    Fallback,
}

/// This node's IP: the one given, else the address of the default route's
/// interface (`default_route`, asked only then), else 127.0.0.1.
pub fn choose_node_ip(
    given: Option<&str>,
    default_route: impl FnOnce() -> Option<Ipv4Addr>,
) -> (String, NodeIpSource) {
    if let Some(ip) = given {
        return (ip.to_owned(), NodeIpSource::Given);
    }
    match default_route() {
        Some(ip) => (ip.to_string(), NodeIpSource::DefaultRoute),
        None => (Ipv4Addr::LOCALHOST.to_string(), NodeIpSource::Fallback),
    }
}

/// What to warn about a node IP that no other machine can reach (a
/// loopback address), or `None` when there is nothing to say.
pub fn node_ip_warning(ip: &str, source: NodeIpSource) -> Option<String> {
    let loopback = ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback());
    match source {
        NodeIpSource::Fallback => Some(format!(
            "no default route, so the node IP fell back to {ip}: masters and nodes on other \
             machines cannot reach this node; give --node-ip with its LAN address"
        )),
        _ if loopback => Some(format!(
            "the node IP {ip} is a loopback address: masters and nodes on other machines cannot \
             reach this node; give --node-ip with its LAN address"
        )),
        _ => None,
    }
}

fn os_image(root: &Path) -> String {
    read(root, "/etc/os-release")
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Kubernetes' name for this machine's architecture.
pub fn arch() -> &'static str {
    crate::runtime::oci::platform_arch()
}

/// Everything about the node, ready for Register.
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub node_ip: &'a str,
    pub runtime_version: &'a str,
    pub agent_port: u16,
    pub labels: BTreeMap<String, String>,
}

pub fn node_object(root: &Path, facts: &NodeFacts<'_>) -> v1::Node {
    let memory = memory_bytes(root);
    let cpu = cpu_millicores(root);
    let cpu_text = |m: u64| {
        if m % 1000 == 0 {
            (m / 1000).to_string()
        } else {
            format!("{m}m")
        }
    };
    let capacity: BTreeMap<String, String> = [
        ("cpu".to_string(), cpu_text(cpu)),
        ("memory".to_string(), format!("{}Ki", memory / 1024)),
        ("pods".to_string(), MAX_PODS.to_string()),
    ]
    .into();
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".into(),
        format!("{}Ki", memory.saturating_sub(MEMORY_RESERVE) / 1024),
    );
    let mut labels: BTreeMap<String, String> = [
        (storage::HOSTNAME_LABEL.to_string(), facts.name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
    ]
    .into();
    labels.extend(facts.labels.clone());
    let trim = |s: Option<String>| s.map(|v| v.trim().to_string()).unwrap_or_default();
    v1::Node {
        api_version: "v1".into(),
        kind: "Node".into(),
        metadata: Some(v1::ObjectMeta {
            name: facts.name.to_string(),
            labels,
            ..Default::default()
        }),
        spec: None,
        status: Some(v1::NodeStatus {
            capacity,
            allocatable,
            addresses: vec![
                v1::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: facts.node_ip.to_string(),
                },
                v1::NodeAddress {
                    r#type: "Hostname".into(),
                    address: facts.name.to_string(),
                },
            ],
            node_info: Some(v1::NodeSystemInfo {
                machine_id: trim(read(root, "/etc/machine-id")),
                boot_id: trim(read(root, "/proc/sys/kernel/random/boot_id")),
                kernel_version: trim(read(root, "/proc/sys/kernel/osrelease")),
                os_image: os_image(root),
                container_runtime_version: facts.runtime_version.to_string(),
                kubelet_version: format!("skiff-v{}", env!("CARGO_PKG_VERSION")),
                operating_system: "linux".into(),
                architecture: arch().into(),
                ..Default::default()
            }),
            daemon_endpoints: Some(v1::NodeDaemonEndpoints {
                kubelet_endpoint: Some(v1::DaemonEndpoint {
                    port: facts.agent_port as i32,
                }),
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn capacity_comes_from_proc_and_cgroup_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(
            r,
            "/proc/meminfo",
            "MemTotal:        8000000 kB\nMemFree: 1 kB\n",
        );
        write(
            r,
            "/proc/cpuinfo",
            "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n",
        );
        write(r, "/proc/self/cgroup", "0::/skiff.slice\n");
        write(r, "/sys/fs/cgroup/skiff.slice/memory.max", "1073741824\n");
        write(r, "/sys/fs/cgroup/skiff.slice/cpu.max", "150000 100000\n");
        assert_eq!(memory_bytes(r), 1 << 30);
        assert_eq!(cpu_millicores(r), 1500);
        let node = node_object(
            r,
            &NodeFacts {
                name: "pi1",
                node_ip: "10.0.0.5",
                runtime_version: "containerd://1.6.20",
                agent_port: 10250,
                labels: BTreeMap::new(),
            },
        );
        let status = node.status.unwrap();
        assert_eq!(status.capacity["cpu"], "1500m");
        assert_eq!(status.capacity["memory"], "1048576Ki");
        assert_eq!(
            status.allocatable["memory"],
            format!("{}Ki", (1048576 - 102400))
        );
        assert_eq!(status.addresses[0].address, "10.0.0.5");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
    }

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
skiff0\t00002A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn the_default_route_with_the_lowest_metric_names_the_interface() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
        // A default route that is down does not count; a subnet route
        // (mask /24) is no default route.
        let down = ROUTES.replace(
            "eth0\t00000000\t0101A8C0\t0003",
            "eth0\t00000000\t0101A8C0\t0002",
        );
        assert_eq!(default_route_interface(&down).as_deref(), Some("wlan0"));
        let no_default: String = ROUTES
            .lines()
            .filter(|l| !l.contains("\t00000000\t0101A8C0"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(default_route_interface(&no_default), None);
        let header = ROUTES.lines().next().unwrap();
        assert_eq!(default_route_interface(header), None);
        assert_eq!(default_route_interface(""), None);
        // The header is no route, even when it looks like one.
        assert_eq!(
            default_route_interface("eth9 00000000 0 0003 0 0 0 00000000\n"),
            None
        );
    }

    #[test]
    fn the_node_ip_is_given_else_the_default_route_else_loopback_with_a_warning() {
        let unasked = || -> Option<Ipv4Addr> { panic!("the default route is not looked up") };
        let (ip, source) = choose_node_ip(Some("192.168.1.21"), unasked);
        assert_eq!(ip, "192.168.1.21");
        assert_eq!(source, NodeIpSource::Given);
        assert_eq!(node_ip_warning(&ip, source), None);

        let lan = Ipv4Addr::new(192, 168, 1, 22);
        let (ip, source) = choose_node_ip(None, || Some(lan));
        assert_eq!(ip, "192.168.1.22");
        assert_eq!(source, NodeIpSource::DefaultRoute);
        assert_eq!(node_ip_warning(&ip, source), None);

        let (ip, source) = choose_node_ip(None, || None);
        assert_eq!(ip, "127.0.0.1");
        assert_eq!(source, NodeIpSource::Fallback);
        let warning = node_ip_warning(&ip, source).expect("a warning");
        assert!(
            warning.contains("fell back to 127.0.0.1") && warning.contains("--node-ip"),
            "{warning}"
        );

        for given in ["127.0.0.1", "::1"] {
            let warning = node_ip_warning(given, NodeIpSource::Given).expect("a warning");
            assert!(warning.contains("loopback"), "{warning}");
        }
    }

    #[test]
    fn unlimited_cgroup_v1_leaves_the_machine_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(r, "/proc/meminfo", "MemTotal:        2000000 kB\n");
        write(r, "/proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
        write(
            r,
            "/proc/self/cgroup",
            "4:memory:/agent\n3:cpu,cpuacct:/agent\n0::/agent\n",
        );
        write(
            r,
            "/sys/fs/cgroup/memory/agent/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            r,
            "/sys/fs/cgroup/cpu,cpuacct/agent/cpu.cfs_quota_us",
            "-1\n",
        );
        write(
            r,
            "/sys/fs/cgroup/cpu,cpuacct/agent/cpu.cfs_period_us",
            "100000\n",
        );
        assert_eq!(memory_bytes(r), 2000000 * 1024);
        assert_eq!(cpu_millicores(r), 2000);
        write(
            r,
            "/sys/fs/cgroup/cpu,cpuacct/agent/cpu.cfs_quota_us",
            "50000\n",
        );
        assert_eq!(cpu_millicores(r), 500);
    }
}
