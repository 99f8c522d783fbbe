//! The agent's nftables table (`ip skiff`): masquerade for pod traffic
//! leaving the cluster CIDR, DNAT for host ports, the cluster DNS address
//! (port 53, UDP and TCP) to this node's own DNS listener on the pods'
//! gateway address (`crate::dns`), and Services' clusterIPs
//! (kube-proxy's job): traffic to a clusterIP and port goes to one of the
//! Service's ready endpoints, picked at random per connection (and is
//! refused when it has none); with `internalTrafficPolicy: Local`, only to
//! this node's ready endpoints, and dropped when this node has none (as
//! kube-proxy does: the policy holds for pods and for the node itself,
//! each node deciding for the connections it starts); a pod that
//! reaches a pod of this node (itself, above all) through a clusterIP is
//! masqueraded, so the reply comes back through the host and is
//! translated back.
//!
//! NodePort, LoadBalancer and externalIPs traffic, as kube-proxy's nftables
//! mode does it ([`Exposure`]): a Service's nodePort on any local address
//! but loopback, and its port on its load balancer ingress and external
//! addresses, lead to its endpoints. With `externalTrafficPolicy: Cluster`
//! such traffic is marked ([`MASQUERADE_MARK`]) and masqueraded on the way
//! out, so replies from an endpoint on another node come back through this
//! one; with `Local` it goes only to this node's endpoints, unmasqueraded
//! (the client address is kept), and is dropped when there are none here,
//! except that traffic from pods and from the node itself still goes to
//! any endpoint. `loadBalancerSourceRanges` drops other sources on the
//! load balancer addresses. `sessionAffinity: ClientIP` keeps a client on
//! its endpoint through one timed set per endpoint ([`keep_endpoint_places`]).
//!
//! As in kube-proxy's nftables mode, each Service port has a chain of its
//! own, named after it ([`service_chain`]), and verdict maps lead a packet
//! there, from prerouting and output alike, by its destination address,
//! protocol and port (or, on a local address, by protocol and nodePort):
//! one lookup, however many Services. Unlike kube-proxy, endpoints have no
//! chains of their own unless the Service has affinity: a pick among a
//! few is rules that draw a random number, among more a map lookup
//! ([`EndpointChains::pick`]). `nft` lists every chain and set of the
//! table before each change, so their number is what a change costs.
//! The table is built whole ([`ruleset`]) when the agent starts or a host
//! port changes; a change of Services or endpoints touches only the
//! Service ports that changed ([`service_changes`]: their map elements,
//! their chains flushed and filled again; a replaced endpoint's affinity
//! chain and set, named after its place, taken over by its successor, the
//! set emptied), so that one change with 1,000 Services present is a
//! small transaction.
//! Either way it is one `nft -j -f -` transaction (atomic in the kernel),
//! so the rules are always exactly what the agent wants, and rules of
//! other tables on the host are never touched.

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
    /// "tcp" or "udp" (static: a thousand Services' rules are held
    /// twice, as wanted and as applied).
    pub protocol: &'static str,
    pub port: u16,
    /// Ready endpoints: pod address and port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// How the port is reached from outside the cluster, if it is.
    pub exposure: Exposure,
}

/// How a Service port is reached from outside the cluster, which
/// endpoints traffic from inside it goes to, and who stays on which
/// endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exposure {
    /// The nodePort, answered on every local address but loopback.
    pub node_port: Option<u16>,
    /// Load balancer ingress addresses, answered at the Service's port and
    /// filtered by `source_ranges`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.externalIPs`, answered at the Service's port.
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`.
    pub local_only: bool,
    /// `loadBalancerSourceRanges`; empty: any source.
    pub source_ranges: Vec<skiff_objects::Ipv4Net>,
    /// `sessionAffinity: ClientIP`: how long a client stays with its
    /// endpoint, in seconds.
    pub affinity_seconds: Option<u32>,
    /// `internalTrafficPolicy: Local`: clusterIP traffic started on this
    /// node (by its pods or itself) goes only to this node's endpoints.
    pub internal_local: bool,
}

impl Exposure {
    /// Whether the port is reached from outside at all.
    fn is_external(&self) -> bool {
        self.node_port.is_some()
            || !self.load_balancer_ips.is_empty()
            || !self.external_ips.is_empty()
    }
}

/// The packet mark bit that says "masquerade this connection on the way
/// out" (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The cluster DNS address, answered on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRedirect {
    /// What pods ask (`--cluster-dns`, the kube-dns Service's clusterIP).
    pub cluster_dns: Ipv4Addr,
    /// Where this node's DNS server listens (the pods' gateway address).
    pub listener: Ipv4Addr,
}

/// Port 53, where DNS is asked and answered.
const DNS_PORT: u16 = 53;

/// What the node's table holds besides the host ports.
#[derive(Debug, Clone, Copy)]
pub struct TableScope {
    pub cluster: Subnet,
    /// The service CIDR: what no Service rule translates is refused.
    pub services: Subnet,
    /// This node's pod subnet.
    pub local: Subnet,
    /// The cluster DNS address to send to this node's DNS server, if it
    /// runs.
    pub dns: Option<DnsRedirect>,
}

/// The table's full contents as an nft JSON batch.
pub fn ruleset(scope: TableScope, ports: &[HostPort], services: &[ServiceRule]) -> Value {
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
    // Pod → clusterIP → a pod on this node, above all the pod itself: the
    // reply from itself to itself would never leave it, untranslated;
    // masquerading sends it through the host. (Other pods of this node
    // would not need it now that each is routed; they are masqueraded as
    // when they shared a bridge.)
    batch.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": prefix(&scope.local)}}),
            json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": prefix(&scope.local)}}),
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
    // Marked (external, Cluster policy) traffic is masqueraded. The mark
    // is cleared first, as kube-proxy does, so that the VXLAN packet
    // carrying it to another node (which inherits the mark) is not
    // masqueraded in turn.
    batch.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, MASQUERADE_MARK]}, "right": MASQUERADE_MARK}}),
            json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"^": [{"meta": {"key": "mark"}}, MASQUERADE_MARK]}}}),
            json!({"masquerade": null}),
        ],
    ));
    // Service ports: the maps lead a packet to its port's own chain,
    // from prerouting and from output alike.
    for (map, key) in [
        (
            SERVICE_IPS,
            json!(["ipv4_addr", "inet_proto", "inet_service"]),
        ),
        (NODE_PORTS, json!(["inet_proto", "inet_service"])),
    ] {
        batch.push(json!({"add": {"map": {"family": "ip", "table": TABLE, "name": map, "type": key, "map": "verdict"}}}));
    }
    let address_key = json!({"concat": [field("ip", "daddr"), {"meta": {"key": "l4proto"}}, field("th", "dport")]});
    let port_key = json!({"concat": [{"meta": {"key": "l4proto"}}, field("th", "dport")]});
    // A nodePort is answered on every local address but loopback.
    let node_local = [
        json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}),
        json!({"match": {"op": "!=", "left": field("ip", "daddr"), "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}),
    ];
    for chain in ["prerouting", "output"] {
        batch.push(rule(
            chain,
            vec![json!({"vmap": {"key": address_key.clone(), "data": format!("@{SERVICE_IPS}")}})],
        ));
        let mut expr = node_local.to_vec();
        expr.push(json!({"vmap": {"key": port_key.clone(), "data": format!("@{NODE_PORTS}")}}));
        batch.push(rule(chain, expr));
    }
    let mut seen = std::collections::BTreeSet::new();
    for service in services {
        if seen.insert(service_chain(service)) {
            batch.extend(service_block(scope, service).commands);
        }
    }
    for (key, port) in map_elements(services) {
        batch.push(key.add(&port.chain()));
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

/// The maps from a packet to its Service port's chain: by destination
/// address, protocol and port (clusterIPs, load balancer and external
/// addresses), and by protocol and port on local addresses (nodePorts).
/// Prerouting (pods, other hosts) and output (the node itself) look up
/// the same ones.
const SERVICE_IPS: &str = "service-ips";
const NODE_PORTS: &str = "node-ports";

/// The name of a Service port's chain (its endpoint chains and sets start
/// with it): named after the port, not its place among the others, so
/// that a change of one Service touches its chains alone.
fn service_chain(service: &ServiceRule) -> String {
    PortKey::of(service).chain()
}

/// What a Service port is known by (and its chain named after): its
/// address, protocol and port. Borrowed, so that finding the Service
/// ports a change touches among 1,000 allocates nothing per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey<'a> {
    ip: Ipv4Addr,
    protocol: &'a str,
    port: u16,
}

impl<'a> PortKey<'a> {
    fn of(service: &'a ServiceRule) -> PortKey<'a> {
        PortKey {
            ip: service.cluster_ip,
            protocol: service.protocol,
            port: service.port,
        }
    }

    /// The port's chain ([`service_chain`]).
    fn chain(self) -> String {
        format!("svc-{}-{}-{}", self.ip, self.protocol, self.port)
    }
}

/// What leads a packet to a Service port's chains: an element of the
/// address maps or of the nodePort maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum MapKey<'a> {
    Address(Ipv4Addr, &'a str, u16),
    NodePort(&'a str, u16),
}

impl MapKey<'_> {
    /// The map the key is in and its element's key.
    fn map(&self) -> (&'static str, Value) {
        match self {
            MapKey::Address(ip, protocol, port) => (
                SERVICE_IPS,
                json!({"concat": [ip.to_string(), protocol, port]}),
            ),
            MapKey::NodePort(protocol, port) => (NODE_PORTS, json!({"concat": [protocol, port]})),
        }
    }

    /// Adds the key to its map, leading to `chain`.
    fn add(&self, chain: &str) -> Value {
        let (map, key) = self.map();
        json!({"add": {"element": {"family": "ip", "table": TABLE, "name": map, "elem": [[key, {"jump": {"target": chain}}]]}}})
    }

    fn delete(&self) -> Value {
        let (map, key) = self.map();
        json!({"delete": {"element": {"family": "ip", "table": TABLE, "name": map, "elem": [key]}}})
    }
}

/// Every map element for `services` (sorted) and the Service port it
/// leads to: a key two Service ports claim (two Services given one
/// external address and port) leads to the first.
fn map_elements(services: &[ServiceRule]) -> std::collections::BTreeMap<MapKey<'_>, PortKey<'_>> {
    let mut elements = std::collections::BTreeMap::new();
    for service in services {
        let to = PortKey::of(service);
        let protocol = service.protocol;
        let exposure = &service.exposure;
        elements
            .entry(MapKey::Address(service.cluster_ip, protocol, service.port))
            .or_insert(to);
        for ip in exposure
            .load_balancer_ips
            .iter()
            .chain(&exposure.external_ips)
        {
            elements
                .entry(MapKey::Address(*ip, protocol, service.port))
                .or_insert(to);
        }
        if let Some(node_port) = exposure.node_port {
            elements
                .entry(MapKey::NodePort(protocol, node_port))
                .or_insert(to);
        }
    }
    elements
}

/// A Service port's chains, sets and rules.
struct ServiceBlock {
    /// Its own chain first, then its endpoint chains.
    chains: Vec<String>,
    sets: Vec<String>,
    /// Each affinity set and the endpoint whose clients it holds.
    affinity_sets: Vec<(String, (Ipv4Addr, u16))>,
    /// The commands that add them.
    commands: Vec<Value>,
}

/// The chain a Service port's map elements lead to, from prerouting and
/// output alike (one chain per port: every chain in the table is one more
/// that `nft` lists before each change and the kernel walks when it checks
/// the table for loops), holding the clusterIP's rules, the load
/// balancer's source ranges and its external addresses' rules; each rule
/// still matches its own destination, and a packet no rule takes goes on
/// in the base chain.
fn service_block(scope: TableScope, service: &ServiceRule) -> ServiceBlock {
    let base = service_chain(service);
    let mut batch = vec![json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": base}}})];
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}});
    let exposure = &service.exposure;
    let mut chains = EndpointChains {
        batch: &mut batch,
        protocol: service.protocol,
        affinity_seconds: exposure.affinity_seconds,
        affinity_sets: Vec::new(),
    };
    // Any endpoint: for clusterIP traffic under Cluster policy and for
    // external traffic (Cluster policy, or pods and the node itself under
    // Local).
    let placed: Vec<(usize, (Ipv4Addr, u16))> =
        service.endpoints.iter().copied().enumerate().collect();
    let cluster_verdict = if !exposure.internal_local || exposure.is_external() {
        chains.pick(&base, &placed)
    } else {
        None
    };
    // This node's endpoints, for the policies that keep traffic here;
    // none here (but some elsewhere): dropped. No endpoint anywhere is
    // left to the refusal in the filter chains.
    let wants_local = exposure.internal_local || (exposure.local_only && exposure.is_external());
    let local_verdict = if wants_local && !service.endpoints.is_empty() {
        let local: Vec<(usize, (Ipv4Addr, u16))> = placed
            .iter()
            .filter(|(_, (ip, _))| scope.local.contains(*ip))
            .copied()
            .collect();
        Some(
            chains
                .pick(&format!("{base}-local"), &local)
                .unwrap_or_else(|| Pick::always(json!({"drop": null}))),
        )
    } else {
        None
    };
    let affinity_sets = std::mem::take(&mut chains.affinity_sets);
    let internal_verdict = if exposure.internal_local {
        &local_verdict
    } else {
        &cluster_verdict
    };
    if let Some(pick) = internal_verdict {
        let to_cluster_ip = [
            json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": service.cluster_ip.to_string()}}),
            json!({"match": {"op": "==", "left": field(service.protocol, "dport"), "right": service.port}}),
        ];
        for expr in pick.rules(&to_cluster_ip, None) {
            batch.push(rule(&base, expr));
        }
    }
    let external_local = local_verdict.filter(|_| exposure.local_only);
    external_rules(
        &mut batch,
        scope,
        service,
        &base,
        cluster_verdict,
        external_local,
    );
    let named = |what: &str| -> Vec<String> {
        batch
            .iter()
            .filter_map(|c| c["add"][what]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (chains, sets) = (named("chain"), named("set"));
    ServiceBlock {
        chains,
        sets,
        affinity_sets,
        commands: batch,
    }
}

/// Chains and sets a change emptied and no longer uses, for the next
/// change to delete: before Linux 6.2 a chain that a rule or element
/// removed in the same transaction pointed to cannot be deleted in it (as
/// kube-proxy's nftables mode found), so nothing is deleted in the
/// transaction that stops using it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }
}

/// One change of the Service ports in place ([`service_changes`]).
#[derive(Debug, Clone)]
pub struct ServiceChanges {
    /// The transaction.
    pub commands: Value,
    /// What it emptied, for the next change to delete.
    pub leftovers: Leftovers,
}

/// The commands that turn the Service ports of a table built from `old`
/// into those of `new` (both sorted), touching only the Service ports
/// that changed: their map elements, and their chains flushed and filled
/// again; chains and sets they no longer use (a port gone, an endpoint
/// gone) are emptied and left for the next change, which deletes them
/// first (`leftovers`, from the change before). `None` when the table
/// should rather be built whole (two Service ports with one name).
pub fn service_changes(
    scope: TableScope,
    old: &[ServiceRule],
    new: &[ServiceRule],
    leftovers: &Leftovers,
) -> Option<ServiceChanges> {
    fn by_name(
        rules: &[ServiceRule],
    ) -> Option<std::collections::BTreeMap<PortKey<'_>, &ServiceRule>> {
        let mut named = std::collections::BTreeMap::new();
        for rule in rules {
            if named.insert(PortKey::of(rule), rule).is_some() {
                return None;
            }
        }
        Some(named)
    }
    let (old_named, new_named) = (by_name(old)?, by_name(new)?);
    let (old_elements, new_elements) = (map_elements(old), map_elements(new));
    let object =
        |kind: &str, name: &str| json!({kind: {"family": "ip", "table": TABLE, "name": name}});
    let mut batch = Vec::new();
    // What the change before emptied: unused since it was committed.
    for chain in &leftovers.chains {
        batch.push(json!({"delete": object("chain", chain)}));
    }
    for set in &leftovers.sets {
        batch.push(json!({"delete": object("set", set)}));
    }
    // Elements that go or lead elsewhere.
    for (key, port) in &old_elements {
        if new_elements.get(key) != Some(port) {
            batch.push(key.delete());
        }
    }
    // The blocks of new Service ports and of changed ones, built once.
    let mut added: Vec<ServiceBlock> = Vec::new();
    let mut emptied = Leftovers::default();
    // The sets of changed Service ports, there already.
    let mut there = std::collections::BTreeSet::new();
    for (name, old_rule) in &old_named {
        let new_block = match new_named.get(name) {
            Some(new_rule) if new_rule == old_rule => continue,
            Some(new_rule) => {
                added.push(service_block(scope, new_rule));
                added.last()
            }
            None => None,
        };
        let old_block = service_block(scope, old_rule);
        for chain in &old_block.chains {
            batch.push(json!({"flush": object("chain", chain)}));
        }
        there.extend(old_block.sets.iter().cloned());
        // An affinity set kept for another endpoint (a pod replaced in
        // its place) forgets the clients of the one gone.
        for (set, endpoint) in new_block.iter().flat_map(|b| &b.affinity_sets) {
            let had = old_block.affinity_sets.iter().find(|(s, _)| s == set);
            if had.is_some_and(|(_, before)| before != endpoint) {
                batch.push(json!({"flush": object("set", set)}));
            }
        }
        let kept = |name: &String, of: fn(&ServiceBlock) -> &Vec<String>| {
            new_block.is_some_and(|b| of(b).contains(name))
        };
        emptied.chains.extend(
            old_block
                .chains
                .iter()
                .filter(|c| !kept(c, |b| &b.chains))
                .cloned(),
        );
        emptied.sets.extend(
            old_block
                .sets
                .iter()
                .filter(|s| !kept(s, |b| &b.sets))
                .cloned(),
        );
    }
    for (name, new_rule) in &new_named {
        if !old_named.contains_key(name) {
            added.push(service_block(scope, new_rule));
        }
    }
    // A leftover name used again (a port back, an endpoint back) is no
    // longer left over.
    let made: std::collections::BTreeSet<&String> = added
        .iter()
        .flat_map(|block| block.chains.iter().chain(&block.sets))
        .collect();
    emptied.chains.retain(|c| !made.contains(c));
    emptied.sets.retain(|s| !made.contains(s));
    // New Service ports, and changed ones filled again (adding a chain
    // that is there already leaves it). A set kept is not added again: the
    // kernel refuses that ("File exists"), since `nft` made it dynamic
    // when its update rule came and the set asked for now is not (nft
    // 1.0.6's JSON refuses the flag); its name holds everything it is
    // made with, so it is already what is wanted, with its clients.
    for block in added {
        batch.extend(block.commands.into_iter().filter(|command| {
            let set = command["add"]["set"]["name"].as_str();
            !set.is_some_and(|name| there.contains(name))
        }));
    }
    for (key, port) in &new_elements {
        if old_elements.get(key) != Some(port) {
            batch.push(key.add(&port.chain()));
        }
    }
    Some(ServiceChanges {
        commands: json!({"nftables": batch}),
        leftovers: emptied,
    })
}

/// Orders the endpoints of each Service port with affinity in `wanted` so
/// that those it had in `held` (the rules the table holds) keep their
/// places, and new ones take the places of those gone: an endpoint's
/// affinity chain and set are named after its place
/// ([`EndpointChains::pick`]), so a pod replaced reuses its predecessor's
/// instead of making new ones. When there are fewer endpoints than
/// before, those past the new count move into the places freed (their
/// clients pick again, as a gone endpoint's do). Ports without affinity
/// are left as they are. Call it on the rules wanted before comparing
/// them with those held or handing both to [`service_changes`].
pub fn keep_endpoint_places(held: &[ServiceRule], wanted: &mut [ServiceRule]) {
    if !wanted.iter().any(|r| r.exposure.affinity_seconds.is_some()) {
        return;
    }
    let held: std::collections::BTreeMap<PortKey<'_>, &ServiceRule> =
        held.iter().map(|rule| (PortKey::of(rule), rule)).collect();
    for rule in wanted.iter_mut() {
        if rule.exposure.affinity_seconds.is_none() {
            continue;
        }
        let Some(before) = held.get(&PortKey::of(rule)).copied() else {
            continue;
        };
        let count = rule.endpoints.len();
        let mut places: Vec<Option<(Ipv4Addr, u16)>> = vec![None; count];
        let mut others = Vec::new();
        for endpoint in std::mem::take(&mut rule.endpoints) {
            match before.endpoints.iter().position(|e| *e == endpoint) {
                Some(at) if at < count && places[at].is_none() => places[at] = Some(endpoint),
                _ => others.push(endpoint),
            }
        }
        let mut others = others.into_iter();
        rule.endpoints = places
            .into_iter()
            .filter_map(|place| place.or_else(|| others.next()))
            .collect();
    }
}

/// Adds the chains that pick one of a Service port's endpoints to a batch.
struct EndpointChains<'a> {
    batch: &'a mut Vec<Value>,
    protocol: &'a str,
    affinity_seconds: Option<u32>,
    /// The affinity sets made so far, each with the endpoint whose
    /// clients it holds.
    affinity_sets: Vec<(String, (Ipv4Addr, u16))>,
}

impl EndpointChains<'_> {
    fn add_rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.batch.push(json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}}));
    }

    fn add_chain(&mut self, chain: &str) {
        self.batch
            .push(json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": chain}}}));
    }

    /// How a new connection goes to one of `endpoints`, or `None` when
    /// there are none. Without affinity: DNAT straight away, to the one
    /// endpoint; among a few, through rules that each draw a random number
    /// (the first takes 1 in n, the next 1 in n - 1 of the rest, ..., as
    /// kube-proxy's iptables mode does); among more, from an anonymous map
    /// of address and port, which is one more set for `nft` to list before
    /// each change. No chain of their own either way. With affinity: a
    /// chain and a timed set per endpoint, named after `name` and the
    /// endpoint's place in the Service's list (`placed`), which record
    /// the client, and a random pick among them after the client's own
    /// endpoint.
    fn pick(&mut self, name: &str, placed: &[(usize, (Ipv4Addr, u16))]) -> Option<Pick> {
        let dnat =
            |(ip, port): &(Ipv4Addr, u16)| json!({"dnat": {"addr": ip.to_string(), "port": port}});
        if placed.is_empty() {
            return None;
        }
        let Some(timeout) = self.affinity_seconds else {
            let endpoints: Vec<(Ipv4Addr, u16)> = placed.iter().map(|(_, e)| *e).collect();
            if endpoints.len() > DRAWN_AT_MOST {
                let targets: Vec<Value> = endpoints
                    .iter()
                    .enumerate()
                    .map(|(j, (ip, port))| json!([j, {"concat": [ip.to_string(), port]}]))
                    .collect();
                return Some(Pick::always(
                    json!({"dnat": {"family": "ip", "addr": {"map": {
                        "key": {"numgen": {"mode": "random", "mod": endpoints.len(), "offset": 0}},
                        "data": {"set": targets},
                    }}}}),
                ));
            }
            let choices = endpoints
                .iter()
                .enumerate()
                .map(|(j, endpoint)| {
                    let left = endpoints.len() - j;
                    let draw = (left > 1).then(|| {
                        json!({"match": {"op": "==", "left": {"numgen": {"mode": "random", "mod": left, "offset": 0}}, "right": 0}})
                    });
                    (draw, dnat(endpoint))
                })
                .collect();
            return Some(Pick { choices });
        };
        let mut targets = Vec::new();
        let mut sticky = Vec::new();
        for (j, (place, endpoint)) in placed.iter().enumerate() {
            // Named after the endpoint's place, not its address: a pod
            // replaced takes its predecessor's chain and set (emptied of
            // the old clients, [`service_changes`]) rather than making
            // new ones and leaving the old to delete (each chain and set
            // is one more for `nft` to list before a change); the places
            // of the endpoints that stay are kept
            // ([`keep_endpoint_places`]).
            let chain = format!("{name}-ep{place}");
            self.add_chain(&chain);
            // A port mapping needs its protocol matched in the same rule.
            let l4 = json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": self.protocol}});
            // nft makes a set that rules update dynamic by itself (nft
            // 1.0.6's JSON parser refuses the "dynamic" flag). The timeout
            // in the name: a set changes only by being replaced.
            let set = format!("{chain}-affinity-{timeout}");
            self.affinity_sets.push((set.clone(), *endpoint));
            self.batch.push(json!({"add": {"set": {"family": "ip", "table": TABLE, "name": set, "type": "ipv4_addr", "flags": ["timeout"], "timeout": timeout}}}));
            self.add_rule(
                &chain,
                vec![json!({"set": {"op": "update", "elem": field("ip", "saddr"), "set": format!("@{set}")}})],
            );
            sticky.push(vec![
                json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": format!("@{set}")}}),
                json!({"goto": {"target": chain}}),
            ]);
            self.add_rule(&chain, vec![l4, dnat(endpoint)]);
            targets.push(json!([j, {"goto": {"target": chain}}]));
        }
        let random = json!({"vmap": {
            "key": {"numgen": {"mode": "random", "mod": placed.len(), "offset": 0}},
            "data": {"set": targets},
        }});
        // A chain that tries each endpoint's set first.
        let chain = format!("{name}-pick");
        self.add_chain(&chain);
        for expr in sticky {
            self.add_rule(&chain, expr);
        }
        self.add_rule(&chain, vec![random]);
        Some(Pick::always(json!({"goto": {"target": chain}})))
    }
}

/// Up to how many endpoints a pick is rules that each draw a random number
/// rather than a map: a new connection is checked against at most this
/// many rules per destination.
const DRAWN_AT_MOST: usize = 8;

/// Where new connections to a Service port go: the choices, tried in
/// order, each a draw that must come out (none: always) and the verdict.
#[derive(Debug, Clone)]
struct Pick {
    choices: Vec<(Option<Value>, Value)>,
}

impl Pick {
    fn always(verdict: Value) -> Pick {
        Pick {
            choices: vec![(None, verdict)],
        }
    }

    /// The rules that send packets matching `matches` to the pick: each
    /// draw after the matches, then `then` (the masquerade mark), then
    /// the verdict, so that a rule whose draw fails changes nothing.
    fn rules(&self, matches: &[Value], then: Option<&Value>) -> Vec<Vec<Value>> {
        self.choices
            .iter()
            .map(|(draw, verdict)| {
                let mut expr = matches.to_vec();
                expr.extend(draw.iter().cloned());
                expr.extend(then.cloned());
                expr.push(verdict.clone());
                expr
            })
            .collect()
    }
}

/// The rules for a Service port's nodePort, load balancer and external
/// addresses, given the verdict that picks any of its endpoints (`None`:
/// no endpoints) and, under `externalTrafficPolicy: Local`, the one that
/// picks this node's (or drops).
fn external_rules(
    batch: &mut Vec<Value>,
    scope: TableScope,
    service: &ServiceRule,
    chain: &str,
    cluster_verdict: Option<Pick>,
    local_verdict: Option<Pick>,
) {
    let exposure = &service.exposure;
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}});
    let dport = |port: u16| json!({"match": {"op": "==", "left": field(service.protocol, "dport"), "right": port}});
    let daddr = |ip: &Ipv4Addr| json!({"match": {"op": "==", "left": field("ip", "daddr"), "right": ip.to_string()}});
    // Which packets are "external traffic to this port": one match list
    // per destination.
    let mut destinations: Vec<Vec<Value>> = Vec::new();
    if let Some(node_port) = exposure.node_port {
        destinations.push(vec![
            json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}),
            json!({"match": {"op": "!=", "left": field("ip", "daddr"), "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}),
            dport(node_port),
        ]);
    }
    for ip in exposure
        .load_balancer_ips
        .iter()
        .chain(&exposure.external_ips)
    {
        destinations.push(vec![daddr(ip), dport(service.port)]);
    }
    if destinations.is_empty() {
        return;
    }
    // Sources outside loadBalancerSourceRanges never reach the load
    // balancer addresses (the node's own connections included, as with
    // kube-proxy's firewall check in output).
    if !exposure.source_ranges.is_empty() {
        let allowed: Vec<Value> = exposure
            .source_ranges
            .iter()
            .map(|r| json!({"prefix": {"addr": r.addr.to_string(), "len": r.len}}))
            .collect();
        for ip in &exposure.load_balancer_ips {
            batch.push(rule(
                chain,
                vec![
                    daddr(ip),
                    dport(service.port),
                    json!({"match": {"op": "!=", "left": field("ip", "saddr"), "right": {"set": allowed}}}),
                    json!({"drop": null}),
                ],
            ));
        }
    }
    let Some(cluster_verdict) = cluster_verdict else {
        // No endpoint anywhere: left to the host, which refuses it.
        return;
    };
    let mark = json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, MASQUERADE_MARK]}}});
    for destination in destinations {
        let to_cluster = |extra: Vec<Value>, batch: &mut Vec<Value>| {
            let mut matches = destination.clone();
            matches.extend(extra);
            for expr in cluster_verdict.rules(&matches, Some(&mark)) {
                batch.push(rule(chain, expr));
            }
        };
        match &local_verdict {
            None => to_cluster(Vec::new(), &mut *batch),
            Some(local_verdict) => {
                // Pods and the node itself still reach any endpoint, as
                // with kube-proxy (their own address is not lost).
                let from_pods = json!({"match": {"op": "==", "left": field("ip", "saddr"), "right": prefix(&scope.cluster)}});
                let from_node = json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}});
                to_cluster(vec![from_pods], &mut *batch);
                to_cluster(vec![from_node], &mut *batch);
                // Only traffic from elsewhere is left (in output, the
                // node's own matched above).
                for expr in local_verdict.rules(&destination, None) {
                    batch.push(rule(chain, expr));
                }
            }
        }
    }
}

/// Why a batch was not applied.
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
    #[error("the thread that applies nftables batches is gone")]
    Gone,
    #[error("libnftables: {0}")]
    Library(String),
}

/// A batch to apply and where its outcome goes.
type Job = (
    String,
    tokio::sync::oneshot::Sender<Result<(), NftablesError>>,
);

/// How long the agent keeps libnftables loaded after a change: changes
/// come in bursts (a rollout replaces its pods one after another), and an
/// idle agent should not carry the library's 4 MiB.
pub const LIBRARY_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the agent's batches go: a libnftables context
/// ([`super::libnftables`]) on a thread of its own, kept (and its netlink
/// socket open) from a change until the session has been idle for a
/// while, then closed and the library unloaded. So no change in a burst
/// waits for a socket to close (8–15 ms each after a change that flushed
/// a chain) or for a process to start. When the library cannot be
/// loaded, each batch goes to an `nft -j -f -` process, as before.
#[derive(Debug)]
pub struct Nftables {
    /// The context's thread; `None`: batches go to `nft` processes.
    library: Option<std::sync::mpsc::Sender<Job>>,
}

impl Nftables {
    /// A session in the calling thread's network namespace (its thread is
    /// started from the calling one, and a context's socket is bound to
    /// the namespace it is opened in), unloading the library after
    /// [`LIBRARY_IDLE`], then calling `trim_heap` (if any) to give back
    /// what the context held.
    pub fn open(trim_heap: Option<fn()>) -> Nftables {
        Nftables::open_unloading_after(LIBRARY_IDLE, trim_heap)
    }

    /// [`Nftables::open`], unloading the library once no batch has come
    /// for `idle`.
    pub fn open_unloading_after(idle: std::time::Duration, trim_heap: Option<fn()>) -> Nftables {
        if let Err(e) = super::libnftables::Library::open() {
            tracing::warn!(error = %e, "libnftables cannot be used; running nft for each change of the table");
            return Nftables::with_nft_command();
        }
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("nftables".into())
            .spawn(move || serve(&queue, idle, trim_heap));
        match thread {
            Ok(_) => Nftables {
                library: Some(jobs),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the nftables thread; running nft for each change of the table");
                Nftables::with_nft_command()
            }
        }
    }

    /// A session that hands every batch to an `nft` process.
    pub fn with_nft_command() -> Nftables {
        Nftables { library: None }
    }

    /// Whether batches go through the library (not `nft` processes).
    pub fn uses_library(&self) -> bool {
        self.library.is_some()
    }

    /// Applies `batch` in one transaction: all of it, or (refused)
    /// nothing.
    pub async fn apply(&self, batch: &Value) -> Result<(), NftablesError> {
        let Some(jobs) = &self.library else {
            return run_nft(batch).await;
        };
        let (outcome, answer) = tokio::sync::oneshot::channel();
        let outcome = match jobs.send((batch.to_string(), outcome)) {
            Ok(()) => answer.await.unwrap_or(Err(NftablesError::Gone)),
            Err(_) => Err(NftablesError::Gone),
        };
        match outcome {
            // The library could not be used this time (or its thread is
            // gone): `nft` then, rather than no table at all.
            Err(e @ (NftablesError::Library(_) | NftablesError::Gone)) => {
                tracing::warn!(error = %e, "applying this change with nft");
                run_nft(batch).await
            }
            outcome => outcome,
        }
    }
}

/// The session's thread: loads the library and opens a context for the
/// first batch, keeps them while batches come at least every `idle`,
/// then closes the context (which waits for the kernel, here and not in
/// a change), unloads the library and gives the heap back
/// (`trim_heap`: the context held the table's chains and sets, freed in
/// this thread's malloc arena); until the session is dropped.
fn serve(
    queue: &std::sync::mpsc::Receiver<Job>,
    idle: std::time::Duration,
    trim_heap: Option<fn()>,
) {
    while let Ok(first) = queue.recv() {
        let library = match super::libnftables::Library::open() {
            Ok(library) => library,
            Err(e) => {
                let _ = first.1.send(Err(NftablesError::Library(e.to_string())));
                continue;
            }
        };
        let mut context = match library.context() {
            Ok(context) => context,
            Err(e) => {
                let _ = first.1.send(Err(NftablesError::Library(e.to_string())));
                continue;
            }
        };
        let mut next = Some(first);
        while let Some((commands, outcome)) = next.take() {
            let done = context
                .run(&commands)
                .map_err(|stderr| NftablesError::Refused { stderr });
            let _ = outcome.send(done);
            next = queue.recv_timeout(idle).ok();
        }
        drop(context);
        drop(library);
        if let Some(trim) = trim_heap {
            trim();
        }
    }
}

/// Applies `batch` in one transaction through an `nft -j -f -` process.
async fn run_nft(batch: &Value) -> Result<(), NftablesError> {
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
        .write_all(batch.to_string().as_bytes())
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

    fn scope() -> TableScope {
        TableScope {
            cluster: "10.42.0.0/16".parse().unwrap(),
            services: "10.43.0.0/16".parse().unwrap(),
            local: "10.42.3.0/24".parse().unwrap(),
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
            protocol: "udp",
            port: 53,
            endpoints: vec![("10.42.9.9".parse().unwrap(), 53)],
            exposure: Exposure::default(),
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
            protocol: "tcp",
            port: 80,
            endpoints: vec![
                ("10.42.3.5".parse().unwrap(), 8080),
                ("10.42.4.7".parse().unwrap(), 8080),
                ("10.42.5.2".parse().unwrap(), 8080),
            ],
            exposure: Exposure::default(),
        };
        let many = ServiceRule {
            cluster_ip: "10.43.0.14".parse().unwrap(),
            protocol: "tcp",
            port: 80,
            endpoints: (1..=9)
                .map(|i| (Ipv4Addr::new(10, 42, 6, i), 8080))
                .collect(),
            exposure: Exposure::default(),
        };
        let single = ServiceRule {
            cluster_ip: "10.43.0.12".parse().unwrap(),
            protocol: "udp",
            port: 53,
            endpoints: vec![("10.42.4.9".parse().unwrap(), 5353)],
            exposure: Exposure::default(),
        };
        let empty = ServiceRule {
            cluster_ip: "10.43.0.13".parse().unwrap(),
            protocol: "tcp",
            port: 80,
            endpoints: vec![],
            exposure: Exposure::default(),
        };
        let rules = ruleset(scope(), &[], &[web, many, single, empty]);
        let text = rules.to_string();
        // Three endpoints: three rules in the Service port's one chain,
        // the first taking 1 in 3 new connections, the next 1 in 2 of the
        // rest, the last the others; no chain per endpoint.
        let web = rules_with(&rules, &[r#""right":"10.43.0.11""#]);
        let chains: Vec<&str> = web.iter().map(|(_, chain, _)| chain.as_str()).collect();
        assert_eq!(chains, ["svc-10.43.0.11-tcp-80"; 3], "{text}");
        let draw = |n: usize| {
            format!(
                r#"{{"match":{{"left":{{"numgen":{{"mod":{n},"mode":"random","offset":0}}}},"op":"==","right":0}}}}"#
            )
        };
        for ((_, _, rule), (endpoint, mod_n)) in web.iter().zip([
            ("10.42.3.5", Some(3)),
            ("10.42.4.7", Some(2)),
            ("10.42.5.2", None),
        ]) {
            let to = format!(r#"{{"dnat":{{"addr":"{endpoint}","port":8080}}}}"#);
            assert!(rule.contains(&to), "{endpoint}: {rule}");
            assert!(rule.contains(r#""field":"dport""#), "{rule}");
            match mod_n {
                Some(n) => assert!(rule.contains(&draw(n)), "{rule}"),
                None => assert!(!rule.contains("numgen"), "{rule}"),
            }
        }
        assert!(!text.contains("-ep"), "{text}");
        // Pods and other hosts (prerouting) and the node (output) look up
        // the same maps.
        for map in ["@service-ips", "@node-ports"] {
            let lookups = rules_with(&rules, &[&format!(r#""data":"{map}""#)]);
            let chains: Vec<&str> = lookups.iter().map(|(_, c, _)| c.as_str()).collect();
            assert_eq!(chains, ["prerouting", "output"], "{map}");
        }
        // Nine endpoints: one DNAT to a random pick from a map of address
        // and port.
        let many = rules_with(&rules, &[r#""right":"10.43.0.14""#]);
        assert_eq!(many.len(), 1, "{many:?}");
        assert!(
            many[0].2.contains(r#""dnat":{"addr":{"map""#),
            "{}",
            many[0].2
        );
        assert!(many[0].2.contains(r#""numgen":{"mod":9"#), "{}", many[0].2);
        for j in 0..9 {
            let target = format!(r#"[{j},{{"concat":["10.42.6.{}",8080]}}]"#, j + 1);
            assert!(many[0].2.contains(&target), "{target}: {}", many[0].2);
        }
        // One endpoint: DNAT straight away, in the one chain prerouting
        // and output both lead to.
        assert_eq!(
            text.matches(r#""dnat":{"addr":"10.42.4.9","port":5353}"#)
                .count(),
            1
        );
        assert!(
            text.contains(r#""protocol":"udp","field":"dport""#)
                || text.contains(r#""field":"dport","protocol":"udp""#)
        );
        // No endpoints: never translated; the whole service CIDR that
        // is not translated is refused (forwarded and local traffic).
        let untranslated = rules_with(&rules, &["10.43.0.13"]);
        assert!(untranslated.is_empty(), "{untranslated:?}");
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
        // Hairpin: from this node's pods to this node's pods, after DNAT.
        let hairpin = batch
            .iter()
            .map(|c| &c["add"]["rule"])
            .find(|r| r["chain"] == "postrouting" && r.to_string().contains(r#""right":"dnat""#))
            .expect("the hairpin masquerade rule");
        let local = json!({"prefix": {"addr": "10.42.3.0", "len": 24}});
        for field in ["saddr", "daddr"] {
            let matched = hairpin["expr"].as_array().unwrap().iter().any(|e| {
                e["match"]["left"]["payload"]["field"] == field && e["match"]["right"] == local
            });
            assert!(matched, "{field}: {hairpin}");
        }
    }

    fn exposed(exposure: Exposure, endpoints: &[&str]) -> ServiceRule {
        ServiceRule {
            cluster_ip: "10.43.0.20".parse().unwrap(),
            protocol: "tcp",
            port: 80,
            endpoints: endpoints
                .iter()
                .map(|ip| (ip.parse::<Ipv4Addr>().unwrap(), 8080))
                .collect(),
            exposure,
        }
    }

    /// The rules (chain, JSON text) whose text contains every one of `parts`.
    fn rules_with(rules: &Value, parts: &[&str]) -> Vec<(usize, String, String)> {
        rules["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, c)| !c["add"]["rule"].is_null())
            .map(|(i, c)| {
                let chain = c["add"]["rule"]["chain"].as_str().unwrap().to_owned();
                (i, chain, c.to_string())
            })
            .filter(|(_, _, text)| parts.iter().all(|p| text.contains(p)))
            .collect()
    }

    #[test]
    fn node_ports_and_load_balancer_addresses_lead_to_every_endpoint_masqueraded() {
        let exposure = Exposure {
            node_port: Some(30080),
            load_balancer_ips: vec!["192.168.5.1".parse().unwrap()],
            external_ips: vec!["198.51.100.7".parse().unwrap()],
            source_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let service = exposed(exposure, &["10.42.3.5", "10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[service]);
        let mark = r#""mangle":{"key":{"meta":{"key":"mark"}}"#;
        // The nodePort on any local address but loopback, marked, to the
        // same random pick as the clusterIP (the mark set only once the
        // draw has come out).
        let node_port = rules_with(&rules, &[r#""right":30080"#, mark]);
        let chains: Vec<&str> = node_port.iter().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(chains, ["svc-10.43.0.20-tcp-80"; 2], "{node_port:?}");
        assert!(node_port[0].2.contains(r#""flags":["daddr"]"#));
        assert!(node_port[0].2.contains(r#""addr":"127.0.0.0","len":8"#));
        let first = &node_port[0].2;
        assert!(first.contains("10.42.3.5") && node_port[1].2.contains("10.42.4.7"));
        assert!(
            first.find(r#""mod":2"#).unwrap() < first.find(mark).unwrap(),
            "{first}"
        );
        // The load balancer and external addresses at the Service's port,
        // to either endpoint.
        for ip in ["192.168.5.1", "198.51.100.7"] {
            let to = format!(r#""right":"{ip}""#);
            let rules = rules_with(&rules, &[&to, r#""right":80"#, mark]);
            assert_eq!(rules.len(), 2, "{ip}: {rules:?}");
        }
        // Other sources are dropped on the load balancer address first;
        // external IPs are not filtered.
        let firewall = rules_with(&rules, &[r#""drop":null"#, r#""addr":"10.0.0.0","len":8"#]);
        assert_eq!(firewall.len(), 1, "{firewall:?}");
        assert!(firewall[0].2.contains("192.168.5.1"));
        assert!(firewall[0].2.contains(r#""op":"!=""#));
        let lb = rules_with(&rules, &[r#""right":"192.168.5.1""#, mark]);
        assert!(firewall[0].0 < lb[0].0, "the drop comes before the DNAT");
        // Marked connections are masqueraded on the way out.
        let masquerade = rules_with(
            &rules,
            &[r#""&":[{"meta":{"key":"mark"}},16384]"#, "masquerade"],
        );
        assert_eq!(masquerade[0].1, "postrouting");
        // (clearing the mark first, so the VXLAN packet carrying the
        // connection to another node is not masqueraded too)
        assert!(
            masquerade[0]
                .2
                .contains(r#""^":[{"meta":{"key":"mark"}},16384]"#),
            "{}",
            masquerade[0].2
        );
    }

    #[test]
    fn local_policy_keeps_the_client_address_and_answers_only_with_local_endpoints() {
        let exposure = Exposure {
            node_port: Some(30081),
            local_only: true,
            ..Default::default()
        };
        // 10.42.3.0/24 is this node's subnet: 10.42.3.5 is local.
        let service = exposed(exposure.clone(), &["10.42.3.5", "10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[service]);
        // From pods and from the node, a rule per endpoint each; from
        // elsewhere, one.
        let all = rules_with(&rules, &[r#""right":30081"#]);
        assert_eq!(all.len(), 5, "{all:?}");
        // From outside: only the local endpoint, unmarked.
        let outside: Vec<_> = all
            .iter()
            .filter(|(_, _, t)| !t.contains("mangle"))
            .collect();
        assert_eq!(outside.len(), 1, "{outside:?}");
        assert_eq!(outside[0].1, "svc-10.43.0.20-tcp-80");
        assert!(outside[0]
            .2
            .contains(r#""dnat":{"addr":"10.42.3.5","port":8080}"#));
        // Pods and the node itself still reach either endpoint, marked.
        let from_pods = rules_with(
            &rules,
            &[
                r#""right":30081"#,
                r#""addr":"10.42.0.0","len":16"#,
                "mangle",
            ],
        );
        assert_eq!(from_pods.len(), 2);
        let from_node = rules_with(
            &rules,
            &[r#""right":30081"#, r#""flags":["saddr"]"#, "mangle"],
        );
        assert_eq!(from_node.len(), 2);
        // No endpoint on this node: outside traffic is dropped here.
        let remote_only = exposed(exposure, &["10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[remote_only]);
        let dropped = rules_with(&rules, &[r#""right":30081"#, r#""drop":null"#]);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(!dropped[0].2.contains("mangle"));
    }

    #[test]
    fn internal_local_policy_keeps_cluster_ip_traffic_on_this_nodes_endpoints() {
        let exposure = Exposure {
            internal_local: true,
            ..Default::default()
        };
        // 10.42.3.0/24 is this node's subnet: 10.42.3.5 is local.
        let both = exposed(exposure.clone(), &["10.42.3.5", "10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[both]);
        let to_vip = rules_with(&rules, &[r#""right":"10.43.0.20""#]);
        let chains: Vec<&str> = to_vip.iter().map(|(_, c, _)| c.as_str()).collect();
        // From this node's pods and from the node: one chain.
        assert_eq!(chains, ["svc-10.43.0.20-tcp-80"], "{to_vip:?}");
        for (_, _, text) in &to_vip {
            assert!(
                text.contains(r#""dnat":{"addr":"10.42.3.5","port":8080}"#),
                "{text}"
            );
        }
        // The other node's endpoint is not reachable through it at all.
        let text = rules.to_string();
        assert!(!text.contains("10.42.4.7"), "{text}");
        // Endpoints only on other nodes: dropped here, not refused (as
        // kube-proxy does).
        let remote = exposed(exposure.clone(), &["10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[remote]);
        let dropped = rules_with(&rules, &[r#""right":"10.43.0.20""#, r#""drop":null"#]);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(!rules.to_string().contains("10.42.4.7"));
        // No endpoint anywhere: no rule, so the service CIDR's refusal.
        let none = exposed(exposure.clone(), &[]);
        let rules = ruleset(scope(), &[], &[none]);
        assert!(rules_with(&rules, &[r#""right":"10.43.0.20""#]).is_empty());
        // A nodePort under Cluster external policy still reaches every
        // endpoint.
        let exposed_too = Exposure {
            node_port: Some(30082),
            ..exposure
        };
        let service = exposed(exposed_too, &["10.42.3.5", "10.42.4.7"]);
        let rules = ruleset(scope(), &[], &[service]);
        let node_port = rules_with(&rules, &[r#""right":30082"#]);
        assert_eq!(node_port.len(), 2, "{node_port:?}");
        assert!(node_port[0].2.contains(r#""mod":2"#) && node_port[0].2.contains("10.42.3.5"));
        assert!(node_port[1].2.contains("10.42.4.7"), "{node_port:?}");
        let to_vip = rules_with(&rules, &[r#""right":"10.43.0.20""#]);
        assert!(to_vip.iter().all(|(_, _, t)| t.contains("10.42.3.5")));
    }

    #[test]
    fn client_ip_affinity_tries_the_clients_endpoint_first() {
        let exposure = Exposure {
            affinity_seconds: Some(60),
            ..Default::default()
        };
        let service = exposed(exposure, &["10.42.3.5"]);
        let rules = ruleset(scope(), &[], &[service]);
        let text = rules.to_string();
        // One timed set per endpoint, named after its place, updated
        // before the DNAT.
        assert!(
            text.contains(r#""name":"svc-10.43.0.20-tcp-80-ep0-affinity-60""#),
            "{text}"
        );
        assert!(text.contains(r#""timeout":60"#), "{text}");
        let update = rules_with(
            &rules,
            &[r#""op":"update""#, "@svc-10.43.0.20-tcp-80-ep0-affinity-60"],
        );
        assert_eq!(update[0].1, "svc-10.43.0.20-tcp-80-ep0");
        // The clusterIP goes to a pick chain that looks the client up first.
        let sticky = rules_with(
            &rules,
            &[r#""right":"@svc-10.43.0.20-tcp-80-ep0-affinity-60""#],
        );
        assert_eq!(sticky[0].1, "svc-10.43.0.20-tcp-80-pick");
        let pick = rules_with(
            &rules,
            &[
                r#""right":"10.43.0.20""#,
                r#""goto":{"target":"svc-10.43.0.20-tcp-80-pick"}"#,
            ],
        );
        assert_eq!(pick.len(), 1);
        // Without exposure, nothing is marked for masquerade.
        assert!(!text.contains(r#""|":[{"meta":{"key":"mark"}}"#), "{text}");
    }

    fn named(rules: &Value, what: &str, verb: &str) -> Vec<String> {
        rules["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c[verb][what]["name"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn one_changed_service_touches_its_own_chains_and_elements_only() {
        let many: Vec<ServiceRule> = (1..=50u8)
            .map(|i| ServiceRule {
                cluster_ip: Ipv4Addr::new(10, 43, 1, i),
                protocol: "tcp",
                port: 80,
                endpoints: vec![
                    (Ipv4Addr::new(10, 42, 4, i), 8080),
                    (Ipv4Addr::new(10, 42, 5, i), 8080),
                ],
                exposure: Exposure {
                    node_port: (i % 5 == 0).then_some(30000 + u16::from(i)),
                    affinity_seconds: (i == 7).then_some(60),
                    ..Exposure::default()
                },
            })
            .collect();
        let mut moved = many.clone();
        moved[6].endpoints[1].0 = "10.42.6.7".parse().unwrap();
        let changes = service_changes(scope(), &many, &moved, &Leftovers::default()).unwrap();
        let left = changes.leftovers.clone();
        let changes = changes.commands;
        let text = changes.to_string();
        assert!(
            !text.contains(r#""table":{"#),
            "never the whole table: {text}"
        );
        // Service 7 (affinity): its chains flushed and filled again; the
        // new endpoint takes the chain and affinity set of the one it
        // replaced (in its place), the set emptied of the old one's
        // clients; the other endpoint's set keeps its clients; nothing
        // made, left over or deleted.
        let flushed = named(&changes, "chain", "flush");
        assert!(
            flushed
                .iter()
                .all(|c| c.starts_with("svc-10.43.1.7-tcp-80")),
            "{flushed:?}"
        );
        assert!(flushed.contains(&"svc-10.43.1.7-tcp-80".to_owned()));
        assert!(flushed.contains(&"svc-10.43.1.7-tcp-80-ep1".to_owned()));
        assert_eq!(
            named(&changes, "set", "flush"),
            ["svc-10.43.1.7-tcp-80-ep1-affinity-60"]
        );
        let before = ruleset(scope(), &[], &many);
        let made_before = |what: &str| named(&before, what, "add");
        let made = named(&changes, "chain", "add");
        assert!(
            made.iter().all(|m| made_before("chain").contains(m)),
            "a new chain: {made:?}"
        );
        // Its sets are there already: adding them again is refused.
        assert!(named(&changes, "set", "add").is_empty(), "{text}");
        assert!(!text.contains(r#""delete""#), "{text}");
        assert!(left.is_empty(), "{left:?}");
        assert!(text.contains("10.42.6.7"));
        assert!(!text.contains(r#""element""#), "{text}");
        assert!(
            !text.contains("10.43.1.8"),
            "another Service was touched: {text}"
        );
        // One endpoint fewer: the last place's chain and set are emptied
        // and left for the next change, which deletes them first.
        let mut shrunk = moved.clone();
        shrunk[6].endpoints.truncate(1);
        let changes = service_changes(scope(), &moved, &shrunk, &Leftovers::default()).unwrap();
        let left = changes.leftovers.clone();
        assert!(!changes.commands.to_string().contains(r#""delete""#));
        assert_eq!(left.chains, ["svc-10.43.1.7-tcp-80-ep1"]);
        assert_eq!(left.sets, ["svc-10.43.1.7-tcp-80-ep1-affinity-60"]);
        let next = service_changes(scope(), &shrunk, &shrunk, &left).unwrap();
        assert_eq!(named(&next.commands, "chain", "delete"), left.chains);
        assert_eq!(named(&next.commands, "set", "delete"), left.sets);
        assert!(next.leftovers.is_empty());

        // One goes (with its nodePort), one comes: their elements and chains.
        let mut replaced = moved.clone();
        replaced.remove(9);
        replaced.push(ServiceRule {
            cluster_ip: "10.43.2.1".parse().unwrap(),
            protocol: "udp",
            port: 53,
            endpoints: vec![("10.42.4.1".parse().unwrap(), 5353)],
            exposure: Exposure {
                load_balancer_ips: vec!["192.168.1.2".parse().unwrap()],
                ..Exposure::default()
            },
        });
        replaced.sort();
        let changes = service_changes(scope(), &moved, &replaced, &Leftovers::default()).unwrap();
        let left = changes.leftovers.clone();
        let changes = changes.commands;
        let text = changes.to_string();
        assert_eq!(left.chains, ["svc-10.43.1.10-tcp-80"]);
        let deletions: Vec<&Value> = changes["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !c["delete"]["element"].is_null())
            .collect();
        assert_eq!(deletions.len(), 2, "clusterIP and nodePort: {deletions:?}");
        assert!(text.contains(r#"{"concat":["tcp",30010]}"#), "{text}");
        let added = named(&changes, "chain", "add");
        assert_eq!(added, ["svc-10.43.2.1-udp-53"], "{added:?}");
        assert!(
            text.contains(r#"{"concat":["192.168.1.2","udp",53]}"#),
            "{text}"
        );
        assert!(named(&changes, "chain", "delete").is_empty());
        // Nothing changed: nothing to do.
        let none = service_changes(scope(), &replaced, &replaced, &Leftovers::default()).unwrap();
        assert_eq!(none.commands["nftables"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn endpoints_with_affinity_keep_their_places_and_new_ones_fill_those_freed() {
        let ep = |last: u8| (Ipv4Addr::new(10, 42, 4, last), 8080);
        let rule = |ip: u8, affinity: Option<u32>, endpoints: &[u8]| ServiceRule {
            cluster_ip: Ipv4Addr::new(10, 43, 1, ip),
            protocol: "tcp",
            port: 80,
            endpoints: endpoints.iter().map(|e| ep(*e)).collect(),
            exposure: Exposure {
                affinity_seconds: affinity,
                ..Exposure::default()
            },
        };
        let held = [
            rule(1, Some(60), &[1, 2, 3]),
            rule(2, None, &[3, 2, 1]),
            rule(3, Some(60), &[1, 2, 3]),
            rule(4, Some(60), &[1, 2, 3]),
        ];
        let mut wanted = [
            // 2 replaced by 4 (sorted, as the agent's rules come).
            rule(1, Some(60), &[1, 3, 4]),
            // No affinity: left as it comes.
            rule(2, None, &[1, 2, 4]),
            // One fewer: 3 moves into the place 1 left.
            rule(3, Some(60), &[2, 3]),
            // One more: after those it had.
            rule(4, Some(60), &[0, 1, 2, 3]),
            // New: as it comes.
            rule(5, Some(60), &[2, 1]),
        ];
        keep_endpoint_places(&held, &mut wanted);
        let places: Vec<Vec<u8>> = wanted
            .iter()
            .map(|r| r.endpoints.iter().map(|(ip, _)| ip.octets()[3]).collect())
            .collect();
        assert_eq!(
            places,
            [
                vec![1, 4, 3],
                vec![1, 2, 4],
                vec![3, 2],
                vec![1, 2, 3, 0],
                vec![2, 1]
            ]
        );
        // Already in place: unchanged.
        let again = wanted.clone();
        keep_endpoint_places(&again, &mut wanted);
        assert_eq!(wanted, again);
    }

    #[test]
    fn a_key_two_services_claim_leads_to_the_first_and_moves_when_it_goes() {
        let claim = |ip: [u8; 4], node_port: u16| ServiceRule {
            cluster_ip: Ipv4Addr::from(ip),
            protocol: "tcp",
            port: 80,
            endpoints: vec![("10.42.4.1".parse().unwrap(), 8080)],
            exposure: Exposure {
                external_ips: vec!["192.168.1.9".parse().unwrap()],
                node_port: Some(node_port),
                ..Exposure::default()
            },
        };
        let both = vec![claim([10, 43, 0, 30], 30001), claim([10, 43, 0, 31], 30002)];
        let whole = ruleset(scope(), &[], &both).to_string();
        assert_eq!(
            whole
                .matches(r#"{"concat":["192.168.1.9","tcp",80]}"#)
                .count(),
            1,
            "one element: {whole}"
        );
        assert!(whole.contains(r#""target":"svc-10.43.0.30-tcp-80""#));
        let second_only = vec![both[1].clone()];
        let changes = service_changes(scope(), &both, &second_only, &Leftovers::default())
            .unwrap()
            .commands
            .to_string();
        // The external address's elements now lead to the second Service.
        assert!(changes.contains(r#""elem":[[{"concat":["192.168.1.9","tcp",80]},{"jump":{"target":"svc-10.43.0.31-tcp-80"}}]]"#), "{changes}");
        // Two Service ports with one name: built whole instead.
        let twice = vec![both[0].clone(), both[0].clone()];
        assert!(service_changes(scope(), &both, &twice, &Leftovers::default()).is_none());
    }
}
