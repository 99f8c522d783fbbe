//! The pod network: the master gives the node a pod subnet (as flannel
//! does); each local pod has a veth pair into its own namespace with an
//! address from a persisted IPAM table, routed (a /32 route to the host's
//! end, proxy ARP on it, as Calico wires pods), with the subnet's gateway
//! address on a bridge that carries no pod; other nodes' subnets are reached by plain routes
//! via their node IPs on the uplink's segment (host-gw) or through a VXLAN
//! device (VNI 1, UDP 8472, learning off, MTU = uplink − 50), as the
//! node's [`overlay::Mode`] says, programmed from the Node objects
//! ([`overlay`]); traffic leaving the cluster CIDR is
//! masqueraded, host ports are forwarded, the cluster DNS address leads to
//! this node's own DNS server on the gateway address, and Services'
//! clusterIPs lead to their endpoints ([`nftables`], [`services`]).
//! Everything goes through netlink ([`netlink`]; the nftables table
//! through libnftables, [`libnftables`]); nothing shells out to `ip`. Each pod's network namespace is made here too ([`netns`]).
//! Pod-to-pod TCP and UDP that the host's stack would pass unchanged
//! skips it, through a tc-BPF program on the uplink and every pod's veth
//! ([`fast_path`]), where the kernel can run it.
//!
//! Nothing here talks to the masters: the agent's root follows Nodes,
//! Services and Endpoints through them and hands the lists to
//! [`reconcile_overlay`] and [`services::reconcile_services`].

pub mod fast_path;
pub mod ipam;
pub mod libnftables;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod overlay;
pub mod services;
pub mod subnet;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use skiff_proto::api::Object;
use skiff_proto::v1;

use self::ipam::Ipam;
use self::netlink::{LinkInfo, Netlink};
use self::nftables::{HostPort, ServiceRule};
use self::subnet::Subnet;

/// Settings of the pod network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub cluster_cidr: Subnet,
    pub service_cidr: Subnet,
    /// The cluster DNS address, answered by this node's DNS server on the
    /// gateway address; `None`: no DNS server runs here.
    pub cluster_dns: Option<Ipv4Addr>,
    pub node_ip: Ipv4Addr,
    /// How other nodes' subnets are reached.
    pub mode: overlay::Mode,
    pub bridge: String,
    pub vxlan: String,
    pub vni: u32,
    pub port: u16,
    /// Whether pods' traffic may skip the host's stack ([`fast_path`]).
    pub fast_path: bool,
    /// Gives the allocator's free memory back to the kernel
    /// (`AgentConfig::trim_heap`); called once libnftables is unloaded,
    /// whose context held the table's chains and sets.
    pub trim_heap: Option<fn()>,
}

impl NetworkConfig {
    pub fn new(cluster_cidr: Subnet, service_cidr: Subnet, node_ip: Ipv4Addr) -> NetworkConfig {
        NetworkConfig {
            cluster_cidr,
            service_cidr,
            cluster_dns: None,
            node_ip,
            mode: overlay::Mode::Vxlan,
            bridge: "skiff0".into(),
            vxlan: "skiff.1".into(),
            vni: 1,
            port: 8472,
            fast_path: true,
            trim_heap: None,
        }
    }
}

/// Errors setting up the pod network and wiring pods into it.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Link(#[from] netlink::LinkError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nftables(#[from] nftables::NftablesError),
}

/// The Services the node's table was last written with, and the chains
/// and sets that write emptied (deleted by the next).
#[derive(Debug)]
struct AppliedServices {
    services: Vec<ServiceRule>,
    leftovers: nftables::Leftovers,
}

/// The node's pod network, set up.
#[derive(Debug)]
pub struct PodNetwork {
    config: NetworkConfig,
    netlink: Netlink,
    subnet: Subnet,
    /// The link holding the node IP; direct routes go on it.
    uplink: LinkInfo,
    /// `None` in host-gw mode.
    vxlan: Option<LinkInfo>,
    /// The MTU of pods' interfaces: the VXLAN device's when there is one
    /// (any peer may be behind it), the uplink's otherwise.
    pod_mtu: u32,
    /// The peers last found unreachable, logged when they change.
    unreachable: std::sync::Mutex<Vec<(overlay::Peer, overlay::Unreachable)>>,
    ipam: tokio::sync::Mutex<Ipam>,
    host_ports: tokio::sync::Mutex<BTreeMap<String, Vec<HostPort>>>,
    services: tokio::sync::Mutex<Vec<ServiceRule>>,
    /// What the table in the kernel was last written with; `None` when not
    /// known (not yet written, or a write failed). Its lock is held across
    /// every write of the table.
    applied_services: tokio::sync::Mutex<Option<AppliedServices>>,
    /// Where the table's batches go.
    nftables: nftables::Nftables,
    /// `None` where the kernel cannot run it (said once at setup).
    fast_path: Option<fast_path::FastPath>,
}

/// The host-side veth name of a pod (at most 15 bytes with its peer's `p`).
pub fn veth_name(uid: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(uid.as_bytes());
    format!(
        "skv{:02x}{:02x}{:02x}{:02x}{:02x}",
        hash[0], hash[1], hash[2], hash[3], hash[4]
    )
}

impl PodNetwork {
    /// Creates (or finds) the bridge and, unless in host-gw mode, the VXLAN
    /// device for `subnet` (in host-gw mode one left by an earlier run is
    /// deleted, and its entries with it).
    pub async fn setup(
        config: NetworkConfig,
        subnet: Subnet,
        data_dir: &Path,
    ) -> Result<PodNetwork, NetworkError> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| {
            NetworkError::Io {
                context: "enabling IPv4 forwarding".into(),
                source,
            }
        })?;
        let netlink = Netlink::connect().map_err(|source| NetworkError::Io {
            context: "opening a netlink socket".into(),
            source,
        })?;
        let uplink = netlink.link_with_address(config.node_ip).await?;
        let vxlan = if config.mode.has_vxlan() {
            let vxlan = netlink
                .ensure_vxlan(
                    &config.vxlan,
                    config.vni,
                    config.port,
                    config.node_ip,
                    &uplink,
                    subnet,
                )
                .await?;
            Some(vxlan)
        } else {
            netlink.delete_link(&config.vxlan).await?;
            None
        };
        let pod_mtu = vxlan.as_ref().map_or(uplink.mtu, |v| v.mtu);
        let bridge = netlink
            .ensure_bridge(&config.bridge, subnet, pod_mtu)
            .await?;
        // Pods an older agent made are the bridge's ports until `attach`
        // routes them (its next pass over each pod): meanwhile they ARP
        // there for the routed ones.
        answer_arp_for_routed_pods(&config.bridge)?;
        let ipam =
            Ipam::load(&data_dir.join("network").join("ipam.json"), subnet).map_err(|source| {
                NetworkError::Io {
                    context: "reading the IPAM table".into(),
                    source,
                }
            })?;
        let nftables = nftables::Nftables::open(config.trim_heap);
        let mut network = PodNetwork {
            config,
            netlink,
            subnet,
            uplink,
            vxlan,
            pod_mtu,
            unreachable: Default::default(),
            ipam: tokio::sync::Mutex::new(ipam),
            host_ports: Default::default(),
            services: Default::default(),
            applied_services: Default::default(),
            nftables,
            fast_path: None,
        };
        network.apply_rules().await?;
        // After the table: with conntrack a module, that loads it, and
        // with it the kfuncs the program calls.
        let fast_path = network.config.fast_path.then(|| {
            fast_path::FastPath::load(fast_path::Layout {
                cluster: network.config.cluster_cidr,
                local: subnet,
                uplink: network.uplink.index,
                routes_directly: network.config.mode.routes_directly(),
                bridge: bridge.index,
            })
            .and_then(|f| {
                f.attach_index("the uplink", network.uplink.index)
                    .map(|()| f)
            })
        });
        network.fast_path = match fast_path {
            None => None, // --pod-fast-path=false
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pods' traffic goes through the host's stack");
                None
            }
        };
        tracing::info!(
            subnet = %subnet,
            mode = %network.config.mode,
            vtep_mac = %network.vtep_mac(),
            mtu = network.pod_mtu,
            fast_path = network.fast_path.is_some(),
            "pod network ready"
        );
        Ok(network)
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The bridge's address: the pods' gateway, where this node's DNS
    /// server listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// The VXLAN device's MAC, as published on the Node; empty in host-gw
    /// mode (peers then route to this node directly or not at all).
    pub fn vtep_mac(&self) -> String {
        self.vxlan
            .as_ref()
            .and_then(|v| <[u8; 6]>::try_from(v.mac.as_slice()).ok())
            .map(|m| overlay::format_mac(&m))
            .unwrap_or_default()
    }

    /// What the node's table holds besides host ports and Services.
    fn table_scope(&self) -> nftables::TableScope {
        let listener = self.subnet.gateway();
        let dns = self
            .config
            .cluster_dns
            .map(|cluster_dns| nftables::DnsRedirect {
                cluster_dns,
                listener,
            });
        nftables::TableScope {
            cluster: self.config.cluster_cidr,
            services: self.config.service_cidr,
            local: self.subnet,
            dns,
        }
    }

    /// Builds the whole table from the host ports and Services wanted now.
    async fn apply_rules(&self) -> Result<(), NetworkError> {
        let mut applied = self.applied_services.lock().await;
        self.apply_whole(&mut applied).await
    }

    async fn apply_whole(&self, applied: &mut Option<AppliedServices>) -> Result<(), NetworkError> {
        let ports: Vec<HostPort> = self
            .host_ports
            .lock()
            .await
            .values()
            .flatten()
            .cloned()
            .collect();
        let services = self.services.lock().await.clone();
        let result = self
            .nftables
            .apply(&nftables::ruleset(self.table_scope(), &ports, &services))
            .await
            .map_err(NetworkError::Nftables);
        *applied = result.is_ok().then(|| AppliedServices {
            services,
            leftovers: nftables::Leftovers::default(),
        });
        result
    }

    /// Routes Services' clusterIPs to `rules`; true if the table was
    /// written. Only the Service ports that changed are rewritten
    /// ([`nftables::service_changes`]); the whole table when what it
    /// holds is not known (not yet written, or a write failed: the same
    /// rules asked again are then written, not taken as done) or the
    /// change cannot be made alone.
    pub async fn set_services(&self, mut rules: Vec<ServiceRule>) -> Result<bool, NetworkError> {
        rules.sort();
        // One writer at a time (this lock is held across every write),
        // going from what the table holds to what is wanted now (a later
        // call's rules, if one came meanwhile).
        let mut applied = self.applied_services.lock().await;
        if let Some(held) = applied.as_ref() {
            nftables::keep_endpoint_places(&held.services, &mut rules);
        }
        let unchanged = *self.services.lock().await == rules;
        let done = |a: &AppliedServices| a.services == rules && a.leftovers.is_empty();
        if unchanged && applied.as_ref().is_some_and(done) {
            return Ok(false);
        }
        *self.services.lock().await = rules;
        let wanted = self.services.lock().await.clone();
        if let Some(held) = applied.as_ref() {
            if held.services == wanted && held.leftovers.is_empty() {
                return Ok(true);
            }
            let changes = nftables::service_changes(
                self.table_scope(),
                &held.services,
                &wanted,
                &held.leftovers,
            );
            if let Some(changes) = changes {
                match self.nftables.apply(&changes.commands).await {
                    Ok(()) => {
                        *applied = Some(AppliedServices {
                            services: wanted,
                            leftovers: changes.leftovers,
                        });
                        return Ok(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the Service rules' change was refused; rewriting the whole table");
                    }
                }
            }
        }
        self.apply_whole(&mut applied).await?;
        Ok(true)
    }

    /// Wires the pod into the network; returns its address.
    pub async fn attach(&self, pod: &v1::Pod, netns: &Path) -> Result<Ipv4Addr, NetworkError> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let ip = self
            .ipam
            .lock()
            .await
            .allocate(&uid)
            .map_err(|source| NetworkError::Io {
                context: format!("allocating an address for pod {uid}"),
                source,
            })?;
        let veth = veth_name(&uid);
        self.netlink
            .attach_pod(&veth, netns, ip, self.subnet, self.pod_mtu)
            .await?;
        answer_arp_for_routed_pods(&veth)?;
        if let Some(fast_path) = &self.fast_path {
            // Without it the pod is still reached, through the stack.
            if let Err(e) = fast_path.attach(&veth) {
                tracing::warn!(error = %e, "pod {uid} has no fast path");
            }
        }
        let ports: Vec<HostPort> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| &c.ports)
            .filter(|p| p.host_port > 0)
            .map(|p| HostPort {
                protocol: if p.protocol.is_empty() {
                    "TCP".into()
                } else {
                    p.protocol.clone()
                },
                host_ip: p.host_ip.parse().ok(),
                host_port: p.host_port as u16,
                pod_ip: ip,
                container_port: p.container_port as u16,
            })
            .collect();
        let changed = {
            let mut all = self.host_ports.lock().await;
            if ports.is_empty() {
                all.remove(&uid).is_some()
            } else {
                all.insert(uid.clone(), ports.clone()) != Some(ports)
            }
        };
        if changed {
            self.apply_rules().await?;
        }
        Ok(ip)
    }

    /// Unwires a deleted pod and frees its address. Every step is tried
    /// even after one fails, and each failure is logged here; the first is
    /// returned so the caller knows the pod was not fully unwired.
    pub async fn detach(&self, uid: &str) -> Result<(), NetworkError> {
        let mut first = None;
        if let Some(fast_path) = &self.fast_path {
            fast_path.detach(&veth_name(uid));
        }
        if let Err(e) = self.netlink.delete_link(&veth_name(uid)).await {
            tracing::warn!(error = %e, "cannot delete pod veth");
            first = Some(NetworkError::Link(e));
        }
        if let Err(source) = self.ipam.lock().await.release(uid) {
            tracing::warn!(error = %source, "cannot release pod address");
            first = first.or(Some(NetworkError::Io {
                context: format!("releasing the address of pod {uid}"),
                source,
            }));
        }
        if self.host_ports.lock().await.remove(uid).is_some() {
            if let Err(e) = self.apply_rules().await {
                tracing::warn!(error = %e, "cannot update host port rules");
                first = first.or(Some(e));
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Programs the routes and overlay entries for `nodes`. Peers that
    /// cannot be reached in this mode are logged whenever they change.
    pub async fn sync_overlay(
        &self,
        nodes: &[v1::Node],
        me: &str,
    ) -> Result<overlay::Changes, overlay::NetError> {
        let peers = overlay::peers_from_nodes(nodes, me);
        let connected = self
            .netlink
            .connected_prefixes(self.uplink.index)
            .await
            .map_err(|e| overlay::NetError {
                op: "list",
                entry: "the uplink's prefixes".into(),
                message: e.to_string(),
            })?;
        let devices = overlay::Devices {
            vxlan: self.vxlan.as_ref().map(|v| v.index),
            uplink: self.uplink.index,
        };
        let changes =
            overlay::reconcile(&self.netlink, devices, self.config.mode, &connected, &peers)
                .await?;
        let mut last = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        if *last != changes.unreachable {
            let segment = if connected.is_empty() {
                "none".to_owned()
            } else {
                connected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (p, why) in &changes.unreachable {
                tracing::warn!(
                    node = %p.name,
                    node_ip = %p.node_ip,
                    subnet = %p.subnet.net(),
                    mode = %self.config.mode,
                    segment = %segment,
                    "a node's pods cannot be reached: {why}"
                );
            }
            last.clone_from(&changes.unreachable);
        }
        Ok(changes)
    }
}

/// Turns proxy ARP on for `interface`, answering at once: a pod asking
/// there for a neighbour in its subnet gets this host's MAC, since the
/// neighbour is routed through another interface (its own veth). The
/// kernel's default delays a proxy answer to a broadcast request by up
/// to 0.8 s (`proxy_delay`): a pod's first packet to a neighbour would
/// wait for it.
fn answer_arp_for_routed_pods(interface: &str) -> Result<(), NetworkError> {
    for (path, value) in [
        (
            format!("/proc/sys/net/ipv4/conf/{interface}/proxy_arp"),
            "1",
        ),
        (
            format!("/proc/sys/net/ipv4/neigh/{interface}/proxy_delay"),
            "0",
        ),
    ] {
        std::fs::write(&path, value).map_err(|source| NetworkError::Io {
            context: format!("writing {value} to {path}"),
            source,
        })?;
    }
    Ok(())
}

/// Where the node's subnet is remembered between runs, so a restarted
/// agent can wire pods before any master answers.
pub fn subnet_file(data_dir: &Path) -> PathBuf {
    data_dir.join("network").join("subnet")
}

/// Brings the overlay in line with the cluster's Node `objects` (a list
/// from a master; other kinds are skipped). What changed is logged; a
/// failure is logged and left to the next call.
pub async fn reconcile_overlay(network: &PodNetwork, objects: Vec<Object>, me: &str) {
    let nodes: Vec<v1::Node> = objects
        .into_iter()
        .filter_map(|o| match o.kind {
            Some(skiff_proto::api::object::Kind::Node(n)) => Some(n),
            _ => None,
        })
        .collect();
    match network.sync_overlay(&nodes, me).await {
        Ok(c) if c.added.is_empty() && c.removed.is_empty() => {}
        Ok(c) => tracing::info!(
            added = c.added.len(),
            removed = c.removed.len(),
            "overlay updated"
        ),
        Err(e) => tracing::warn!(error = %e, "overlay update failed; retrying"),
    }
}
