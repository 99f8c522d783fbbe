//! The real kernel side of the pod network, over rtnetlink: the bridge
//! holding the pods' gateway address, the VXLAN device, pods' routed veth
//! pairs, and the [`NetOps`] entries of the
//! overlay and of direct routing. Nothing here shells out to `ip`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};
use skiff_objects::Ipv4Net;
use tokio_stream::StreamExt;

use super::netns::NetnsError;
use super::overlay::{Devices, Entry, NetError, NetOps, ROUTE_PROTOCOL};
use super::subnet::Subnet;

/// Errors setting up links.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct LinkError {
    pub what: String,
    pub message: String,
}

fn link_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError {
        what,
        message: e.to_string(),
    }
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc_eexist())
}

fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -2 || m.raw_code() == -19 || m.raw_code() == -3)
}

/// The kernel's main routing table.
const RT_TABLE_MAIN: u32 = 254;

const fn libc_eexist() -> i32 {
    17
}

/// A netlink connection in the agent's network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

/// What a link looks like.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub mtu: u32,
    pub mac: Vec<u8>,
    /// The bridge (or other controller) it is a port of.
    pub controller: Option<u32>,
}

fn link_info(msg: netlink_packet_route::link::LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        mtu: 0,
        mac: Vec::new(),
        controller: None,
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::Mtu(m) => info.mtu = m,
            LinkAttribute::Address(mac) => info.mac = mac,
            LinkAttribute::Controller(c) if c != 0 => info.controller = Some(c),
            _ => {}
        }
    }
    info
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace.
    pub fn connect() -> std::io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.next().await {
            Some(Ok(msg)) => Ok(Some(link_info(msg))),
            Some(Err(e)) if is_missing(&e) => Ok(None),
            Some(Err(e)) => Err(link_err(format!("reading link {name}"))(e)),
            None => Ok(None),
        }
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkInfo, LinkError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.next().await {
            Some(Ok(msg)) => Ok(link_info(msg)),
            Some(Err(e)) => Err(link_err(format!("reading link {index}"))(e)),
            None => Err(LinkError {
                what: format!("link {index}"),
                message: "not found".into(),
            }),
        }
    }

    /// The link that holds `ip`: the uplink the overlay runs over.
    pub async fn link_with_address(&self, ip: Ipv4Addr) -> Result<LinkInfo, LinkError> {
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.next().await {
            let msg = msg.map_err(link_err("listing addresses"))?;
            let has = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(IpAddr::V4(a)) | AddressAttribute::Local(IpAddr::V4(a)) if *a == ip)
            });
            if has {
                return self.link_by_index(msg.header.index).await;
            }
        }
        Err(LinkError {
            what: format!("node IP {ip}"),
            message: "no interface of this host has that address; pass --node-ip with one it has"
                .into(),
        })
    }

    /// The IPv4 prefixes link `index`'s addresses are on: the segment
    /// whose hosts are reached without a router.
    pub async fn connected_prefixes(&self, index: u32) -> Result<Vec<Ipv4Net>, LinkError> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = addrs.next().await {
            let msg = msg.map_err(link_err(format!("listing the addresses of link {index}")))?;
            if msg.header.index != index {
                continue;
            }
            let len = msg.header.prefix_len;
            for a in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if len < 32 {
                        out.push(Ipv4Net::new(*ip, len));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn add_address(&self, index: u32, ip: Ipv4Addr, len: u8) -> Result<(), LinkError> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), len)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(link_err(format!("adding {ip}/{len}"))(e)),
        }
    }

    async fn set(
        &self,
        message: netlink_packet_route::link::LinkMessage,
        what: &str,
    ) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(link_err(what.to_string()))
    }

    /// The bridge holding the subnet's gateway address: the pods' gateway
    /// and this node's DNS listener. Pods are routed to, not its ports
    /// (pods an older agent wired may still be).
    pub async fn ensure_bridge(
        &self,
        name: &str,
        subnet: Subnet,
        mtu: u32,
    ) -> Result<LinkInfo, LinkError> {
        if self.link(name).await?.is_none() {
            match self
                .handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if is_exists(&e) => {}
                Err(e) => return Err(link_err(format!("creating bridge {name}"))(e)),
            }
        }
        let link = self.link(name).await?.ok_or_else(|| LinkError {
            what: name.into(),
            message: "bridge vanished after creation".into(),
        })?;
        self.add_address(link.index, subnet.gateway(), subnet.prefix_len())
            .await?;
        self.set(
            LinkUnspec::new_with_index(link.index).mtu(mtu).up().build(),
            &format!("bringing {name} up"),
        )
        .await?;
        Ok(link)
    }

    /// The VXLAN device: VNI `vni`, UDP `port`, learning off, over the
    /// uplink, with the subnet's VTEP address. Recreated if its settings
    /// are not these.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        local: Ipv4Addr,
        uplink: &LinkInfo,
        subnet: Subnet,
    ) -> Result<LinkInfo, LinkError> {
        let mtu = uplink.mtu.saturating_sub(50).max(576);
        let wanted = LinkVxlan::new(name, vni)
            .dev(uplink.index)
            .port(port)
            .local(local)
            .learning(false)
            // No outer UDP checksum (the inner packets carry their own),
            // as flannel and the kernel's own default for IPv4 VXLAN.
            .udp_csum(false)
            .mtu(mtu)
            .build();
        if let Some(existing) = self.link(name).await? {
            // Settings of an existing device are compared through its
            // MTU and addresses only; a changed uplink or local IP needs a
            // fresh device, so it is replaced whenever the uplink differs.
            let same_uplink =
                self.vxlan_uplink(existing.index).await == Some((uplink.index, local));
            if !same_uplink {
                self.handle
                    .link()
                    .del(existing.index)
                    .execute()
                    .await
                    .map_err(link_err(format!("deleting stale {name}")))?;
            }
        }
        if self.link(name).await?.is_none() {
            self.handle
                .link()
                .add(wanted)
                .execute()
                .await
                .map_err(link_err(format!("creating VXLAN device {name}")))?;
        }
        let link = self.link(name).await?.ok_or_else(|| LinkError {
            what: name.into(),
            message: "VXLAN device vanished after creation".into(),
        })?;
        self.add_address(link.index, subnet.vtep(), 32).await?;
        self.set(
            LinkUnspec::new_with_index(link.index).mtu(mtu).up().build(),
            &format!("bringing {name} up"),
        )
        .await?;
        self.link(name).await?.ok_or_else(|| LinkError {
            what: name.into(),
            message: "VXLAN device vanished".into(),
        })
    }

    /// The uplink index and local address of a VXLAN device.
    async fn vxlan_uplink(&self, index: u32) -> Option<(u32, Ipv4Addr)> {
        use netlink_packet_route::link::{InfoData, InfoVxlan, LinkInfo as Info};
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links.next().await?.ok()?;
        let mut link = None;
        let mut local = None;
        for a in msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    if let Info::Data(InfoData::Vxlan(data)) = i {
                        for d in data {
                            match d {
                                InfoVxlan::Link(l) => link = Some(l),
                                InfoVxlan::Local(ip) => local = Some(ip),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        Some((link?, local?))
    }

    /// A veth pair into the pod's namespace, routed: the host's end is in
    /// no bridge, and a /32 route to `ip` goes through it (as Calico's
    /// pods are wired). The pod's `eth0` gets `ip` in `subnet`, a default
    /// route via the gateway and a permanent neighbour entry for the
    /// gateway (the host end's MAC), so it never needs an ARP answer for
    /// it. The caller turns proxy ARP on for the host end
    /// ([`super::PodNetwork::attach`]), which answers the pod's ARP for
    /// its neighbours in `subnet`. A pod's packet is received once on the
    /// host, not twice (veth, then bridge). Idempotent; a veth left in the
    /// bridge by an older agent is taken out of it, and its pod forgets
    /// the neighbours' MACs it learned there.
    pub async fn attach_pod(
        &self,
        host_name: &str,
        netns: &Path,
        ip: Ipv4Addr,
        subnet: Subnet,
        mtu: u32,
    ) -> Result<(), LinkError> {
        let peer_name = format!("{}p", &host_name[..host_name.len().min(14)]);
        // A pair whose peer never reached the pod (an agent killed halfway)
        // is made again.
        if self.link(host_name).await?.is_some() && self.link(&peer_name).await?.is_some() {
            self.delete_link(host_name).await?;
        }
        if self.link(host_name).await?.is_none() {
            self.handle
                .link()
                .add(LinkVeth::new(host_name, &peer_name).mtu(mtu).build())
                .execute()
                .await
                .map_err(link_err(format!("creating veth {host_name}")))?;
            let ns = std::fs::File::open(netns).map_err(|e| LinkError {
                what: netns.display().to_string(),
                message: e.to_string(),
            })?;
            let peer = self.link(&peer_name).await?.ok_or_else(|| LinkError {
                what: peer_name.clone(),
                message: "veth peer missing".into(),
            })?;
            self.set(
                LinkUnspec::new_with_index(peer.index)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
                "moving veth into the pod",
            )
            .await?;
        }
        let host = self.link(host_name).await?.ok_or_else(|| LinkError {
            what: host_name.into(),
            message: "veth missing".into(),
        })?;
        self.set(
            LinkUnspec::new_with_index(host.index).up().build(),
            &format!("bringing {host_name} up"),
        )
        .await?;
        // A pod an older agent put on the bridge: out of it, and the pod
        // forgets the MACs it learned there (its neighbours' own, which
        // the routed veth would now drop).
        let was_bridged = host.controller.is_some();
        if was_bridged {
            self.set(
                LinkUnspec::new_with_index(host.index)
                    .nocontroller()
                    .build(),
                &format!("taking {host_name} out of the bridge"),
            )
            .await?;
        }
        // From the gateway address, as the host spoke to bridged pods.
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .output_interface(host.index)
            .scope(RouteScope::Link)
            .pref_source(subnet.gateway())
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(link_err(format!("routing {ip} to {host_name}")))?;
        let netns = netns.to_path_buf();
        let gateway = subnet.gateway();
        let len = subnet.prefix_len();
        let gateway_mac = host.mac.clone();
        // Netlink requests act on the namespace of the thread that opens the
        // socket, so `eth0` is configured from a thread inside the pod's.
        super::netns::run_in(netns, move || -> Result<(), PodInterfaceError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(PodInterfaceError::Runtime)?;
            runtime.block_on(configure_pod_interface(
                peer_name,
                ip,
                len,
                gateway,
                gateway_mac,
                was_bridged,
            ))
        })
        .await
        .map_err(|e| LinkError {
            what: format!("pod interface {ip}"),
            message: e.to_string(),
        })
    }

    /// Deletes a link by name; a missing one is fine.
    pub async fn delete_link(&self, name: &str) -> Result<(), LinkError> {
        if let Some(l) = self.link(name).await? {
            match self.handle.link().del(l.index).execute().await {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(link_err(format!("deleting {name}"))(e)),
            }
        }
        Ok(())
    }

    /// Whether a link exists and is a veth of ours (for tests and cleanup).
    pub async fn link_flags(&self, name: &str) -> Option<LinkFlags> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        links.next().await?.ok().map(|m| m.header.flags)
    }
}

/// Why the pod's end of its veth pair could not be set up inside the pod's
/// network namespace.
#[derive(Debug, thiserror::Error)]
pub enum PodInterfaceError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("starting a netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("veth peer {0} not in the pod namespace")]
    PeerMissing(String),
    #[error("eth0 missing after the rename")]
    Eth0MissingAfterRename,
    #[error("forgetting the neighbours learned on the bridge: {0}")]
    Neighbours(#[source] rtnetlink::Error),
    #[error("the gateway {gateway}'s neighbour entry: {source}")]
    GatewayNeighbour {
        gateway: Ipv4Addr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("default route via {gateway}: {source}")]
    DefaultRoute {
        gateway: Ipv4Addr,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Names the pod's end of the pair `eth0` (unless an earlier attempt did),
/// gives it `ip/len`, brings it up, knows `gateway` at `gateway_mac` and
/// routes everything via `gateway`; with `forget_neighbours`, first drops
/// every neighbour entry on `eth0` it learned. Runs in the calling
/// thread's network namespace: the pod's.
async fn configure_pod_interface(
    peer_name: String,
    ip: Ipv4Addr,
    len: u8,
    gateway: Ipv4Addr,
    gateway_mac: Vec<u8>,
    forget_neighbours: bool,
) -> Result<(), PodInterfaceError> {
    let nl = Netlink::connect().map_err(PodInterfaceError::Socket)?;
    let eth0 = match nl.link("eth0").await? {
        Some(l) => l,
        None => {
            let peer = nl
                .link(&peer_name)
                .await?
                .ok_or_else(|| PodInterfaceError::PeerMissing(peer_name.clone()))?;
            nl.set(
                LinkUnspec::new_with_index(peer.index)
                    .name("eth0".to_string())
                    .build(),
                "renaming to eth0",
            )
            .await?;
            nl.link("eth0")
                .await?
                .ok_or(PodInterfaceError::Eth0MissingAfterRename)?
        }
    };
    nl.add_address(eth0.index, ip, len).await?;
    nl.set(
        LinkUnspec::new_with_index(eth0.index).up().build(),
        "eth0 up",
    )
    .await?;
    if forget_neighbours {
        let mut learned = Vec::new();
        let mut entries = nl
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(entry) = entries.next().await {
            let entry = entry.map_err(PodInterfaceError::Neighbours)?;
            if entry.header.ifindex == eth0.index && entry.header.state != NeighbourState::Permanent
            {
                learned.push(entry);
            }
        }
        for entry in learned {
            match nl.handle.neighbours().del(entry).execute().await {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(PodInterfaceError::Neighbours(e)),
            }
        }
    }
    nl.handle
        .neighbours()
        .add(eth0.index, IpAddr::V4(gateway))
        .link_layer_address(&gateway_mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|source| PodInterfaceError::GatewayNeighbour { gateway, source })?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(eth0.index)
        .build();
    nl.handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|source| PodInterfaceError::DefaultRoute { gateway, source })
}

fn net_err(op: &'static str, entry: &Entry) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let entry = entry.to_string();
    move |e| NetError {
        op,
        entry,
        message: e.to_string(),
    }
}

fn neighbour_message(dev: u32, entry: &Entry) -> Option<NeighbourMessage> {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = dev;
    m.header.state = NeighbourState::Permanent;
    match entry {
        Entry::Neighbour { ip, mac } => {
            m.header.family = AddressFamily::Inet;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(*ip)));
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        Entry::Fdb { mac, dst } => {
            m.header.family = AddressFamily::Bridge;
            m.header.flags = NeighbourFlags::Own;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    *dst,
                )));
        }
        Entry::Route { .. } | Entry::Direct { .. } => return None,
    }
    Some(m)
}

/// A VXLAN onlink route (`Entry::Route`) or a direct route on the uplink
/// (`Entry::Direct`, with skiff's protocol); `None` for other entries or
/// a VXLAN route without a VXLAN device.
fn route_message(devices: Devices, entry: &Entry) -> Option<RouteMessage> {
    match *entry {
        Entry::Route { subnet, via } => Some(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(subnet.addr, subnet.len)
                .gateway(via)
                .output_interface(devices.vxlan?)
                .onlink()
                .build(),
        ),
        Entry::Direct { subnet, via } => Some(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(subnet.addr, subnet.len)
                .gateway(via)
                .output_interface(devices.uplink)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                .build(),
        ),
        _ => None,
    }
}

/// An entry that needs the VXLAN device, asked for without one.
fn no_vxlan(op: &'static str, entry: &Entry) -> NetError {
    NetError {
        op,
        entry: entry.to_string(),
        message: "this node has no VXLAN device (host-gw mode)".into(),
    }
}

impl NetOps for Netlink {
    async fn list(&self, devices: Devices) -> Result<Vec<Entry>, NetError> {
        let list_err = |e: rtnetlink::Error| NetError {
            op: "list",
            entry: format!("{devices:?}"),
            message: e.to_string(),
        };
        let mut out = Vec::new();
        let families = match devices.vxlan {
            Some(_) => &[AddressFamily::Inet, AddressFamily::Bridge][..],
            None => &[],
        };
        let dev = devices.vxlan.unwrap_or(0);
        for &family in families {
            let mut neighbours = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            while let Some(n) = neighbours.next().await {
                let n = n.map_err(list_err)?;
                if n.header.ifindex != dev || n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let mut dst = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            dst = Some(*ip)
                        }
                        // FDB entries (bridge family) carry the IPv4 address raw.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b))
                            if b.len() == 4 =>
                        {
                            dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                        }
                        _ => {}
                    }
                }
                match (n.header.family, dst, mac) {
                    (AddressFamily::Inet, Some(ip), Some(mac)) => {
                        out.push(Entry::Neighbour { ip, mac })
                    }
                    // The all-zero MAC is the device's default destination list.
                    (AddressFamily::Bridge, Some(dst), Some(mac)) if mac != [0; 6] => {
                        out.push(Entry::Fdb { mac, dst })
                    }
                    _ => {}
                }
            }
        }
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes.next().await {
            let r = r.map_err(list_err)?;
            let mut oif = None;
            let mut dst = None;
            let mut gateway = None;
            // The kernel dumps every table; only the main one is ours.
            let mut table = u32::from(r.header.table);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            let (Some(addr), Some(via), Some(oif)) = (dst, gateway, oif) else {
                continue;
            };
            if table != RT_TABLE_MAIN {
                continue;
            }
            // As the kernel has it, so that deleting it matches.
            let subnet = Ipv4Net {
                addr,
                len: r.header.destination_prefix_length,
            };
            if devices.vxlan == Some(oif) && r.header.flags.contains(RouteFlags::Onlink) {
                out.push(Entry::Route { subnet, via });
            } else if oif == devices.uplink
                && r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
            {
                out.push(Entry::Direct { subnet, via });
            }
        }
        Ok(out)
    }

    async fn add(&self, devices: Devices, entry: &Entry) -> Result<(), NetError> {
        match entry {
            Entry::Route { .. } | Entry::Direct { .. } => self
                .handle
                .route()
                .add(route_message(devices, entry).ok_or_else(|| no_vxlan("add", entry))?)
                .replace()
                .execute()
                .await
                .map_err(net_err("add", entry)),
            _ => {
                let dev = devices.vxlan.ok_or_else(|| no_vxlan("add", entry))?;
                let message = neighbour_message(dev, entry).expect("a neighbour entry");
                let mut request = self
                    .handle
                    .neighbours()
                    .add(dev, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                    .replace();
                *request.message_mut() = message;
                request.execute().await.map_err(net_err("add", entry))
            }
        }
    }

    async fn del(&self, devices: Devices, entry: &Entry) -> Result<(), NetError> {
        let result = match entry {
            Entry::Route { .. } | Entry::Direct { .. } => {
                // Without a VXLAN device its routes went with it.
                let Some(message) = route_message(devices, entry) else {
                    return Ok(());
                };
                self.handle.route().del(message).execute().await
            }
            _ => {
                let Some(dev) = devices.vxlan else {
                    return Ok(());
                };
                let message = neighbour_message(dev, entry).expect("a neighbour entry");
                self.handle.neighbours().del(message).execute().await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(net_err("del", entry)(e)),
        }
    }
}
