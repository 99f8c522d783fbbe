//! Network namespaces as test hosts: a bridge in the root namespace is
//! the underlay switch (with the first address of a test subnet, where a
//! master can listen), and each host is a namespace joined to it by a veth
//! pair, with its own address, loopback and default route via the switch.
//! A host can also be put on a second subnet behind a router (a namespace
//! of its own that forwards between the two), for what differs between
//! nodes on one segment and nodes a router away.
//! Names carry a random tag so parallel tests never collide; dropping
//! [`Underlay`] deletes the namespaces and the bridge, also when a test
//! fails. Commands here are the test's own (`ip` from iproute2); the agent
//! under test uses netlink.

use std::process::Command;

use anyhow::Context;

/// The test underlay: a bridge plus namespaces.
pub struct Underlay {
    pub tag: String,
    pub bridge: String,
    /// The first three octets of the underlay subnet, e.g. `10.201.7`.
    pub prefix: String,
    hosts: Vec<String>,
    /// The second subnet's first three octets, once a router made it.
    beyond: Option<String>,
}

/// One test host.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub netns: String,
    pub ip: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Underlay {
    /// A bridge named after a random tag with `<prefix>.1/24` on it.
    pub fn new() -> anyhow::Result<Underlay> {
        let r: u32 = rand::random();
        let tag = format!("{:06x}", r & 0xff_ffff);
        let prefix = format!("10.{}.{}", 200 + (r >> 24) % 50, (r >> 16) & 0xff);
        let bridge = format!("skbr{tag}");
        let underlay = Underlay {
            tag,
            bridge: bridge.clone(),
            prefix,
            hosts: Vec::new(),
            beyond: None,
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", underlay.prefix),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(underlay)
    }

    /// The root namespace's address on the underlay.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Adds host number `n` (2..=250) as namespace `sk<tag><n>`.
    pub fn add_host(&mut self, n: u8) -> anyhow::Result<TestHost> {
        let (address, gateway) = (format!("{}.{n}", self.prefix), self.gateway());
        self.join_host(n, address, &gateway)
    }

    /// Namespace `sk<tag><n>` joined to the switch by a veth pair, with
    /// `address`/24 on its `eth0` and a default route via `gateway`.
    fn join_host(&mut self, n: u8, address: String, gateway: &str) -> anyhow::Result<TestHost> {
        let netns = format!("sk{}h{n}", self.tag);
        let veth = format!("sk{}v{n}", self.tag);
        ip(&["netns", "add", &netns])?;
        self.hosts.push(netns.clone());
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", gateway])?;
        Ok(TestHost { netns, ip: address })
    }

    /// The router's address on the first subnet.
    fn router_ip(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// Adds host number `n` (2..=250) as namespace `sk<tag><n>` on a second
    /// /24, one router away from the first: a namespace `sk<tag>r` on the
    /// same switch with `.254` of both subnets, forwarding between them
    /// (made with the first such host). Hosts of the first subnet added
    /// before it, and the root namespace, route the second subnet via the
    /// router; add those hosts first.
    pub fn add_host_beyond_router(&mut self, n: u8) -> anyhow::Result<TestHost> {
        let beyond = match &self.beyond {
            Some(b) => b.clone(),
            None => self.add_router()?,
        };
        self.join_host(n, format!("{beyond}.{n}"), &format!("{beyond}.254"))
    }

    /// The router between the two subnets; returns the second's prefix.
    fn add_router(&mut self) -> anyhow::Result<String> {
        let octets: Vec<u8> = self
            .prefix
            .split('.')
            .map(|o| o.parse().unwrap_or(0))
            .collect();
        // 10.250–254.x: apart from every first subnet (10.200–249.x).
        let beyond = format!("10.{}.{}", 250 + octets[1] % 5, octets[2]);
        let netns = format!("sk{}r", self.tag);
        let veth = format!("sk{}vr", self.tag);
        ip(&["netns", "add", &netns])?;
        self.hosts.push(netns.clone());
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        for addr in [
            format!("{}/24", self.router_ip()),
            format!("{beyond}.254/24"),
        ] {
            ip(&["-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
        }
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        // A router on one port: it forwards, and sends no redirects (the
        // hosts of each subnet must keep going through it).
        for (key, value) in [
            ("ipv4/ip_forward", "1"),
            ("ipv4/conf/all/send_redirects", "0"),
            ("ipv4/conf/eth0/send_redirects", "0"),
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", &netns, "sh", "-c"])
                .arg(format!("echo {value} > /proc/sys/net/{key}"))
                .output()
                .context("run sh")?;
            anyhow::ensure!(
                out.status.success(),
                "setting net/{key} in {netns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let second = format!("{beyond}.0/24");
        let router = self.router_ip();
        ip(&["route", "add", &second, "via", &router, "dev", &self.bridge])?;
        for h in self.hosts.iter().filter(|h| **h != netns) {
            ip(&["-n", h, "route", "add", &second, "via", &router])?;
        }
        self.beyond = Some(beyond.clone());
        Ok(beyond)
    }

    /// A stand-in pod on `host` wired with plain `ip` commands, no skiff:
    /// a bridge `ref0` with `10.99.<n>.1/24` in the host, a namespace
    /// `sk<tag>p<n>` joined to it by a veth pair with `10.99.<n>.2/24` and a
    /// default route via the bridge, and forwarding on in the host. It is
    /// the kernel's own routed pod path, next to which skiff's is measured.
    /// Returns the stand-in pod as a host (its namespace and address).
    pub fn add_bare_pod(&mut self, host: &TestHost, n: u8) -> anyhow::Result<TestHost> {
        let netns = format!("sk{}p{n}", self.tag);
        let veth = format!("skp{n}");
        let gateway = format!("10.99.{n}.1");
        ip(&["netns", "add", &netns])?;
        self.hosts.push(netns.clone());
        let h = host.netns.as_str();
        ip(&["-n", h, "link", "add", "ref0", "type", "bridge"])?;
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "ref0",
        ])?;
        ip(&["-n", h, "link", "set", "ref0", "up"])?;
        ip(&[
            "-n", h, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["-n", h, "link", "set", &veth, "master", "ref0", "up"])?;
        let pod_ip = format!("10.99.{n}.2");
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{pod_ip}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", &gateway])?;
        let out = Command::new("ip")
            .args(["netns", "exec", h, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/ip_forward")
            .output()
            .context("run sh")?;
        anyhow::ensure!(out.status.success(), "enabling forwarding in {h}");
        Ok(TestHost { netns, ip: pod_ip })
    }

    /// Routes `dst` (a CIDR) via `via` in `host`.
    pub fn add_route(host: &TestHost, dst: &str, via: &str) -> anyhow::Result<()> {
        ip(&["-n", &host.netns, "route", "add", dst, "via", via])
    }

    /// Gives `host` address number `n` (2..=250) instead of its own, as a
    /// new DHCP lease would: the old address goes, the new one and the
    /// default route come. Returns the host as it is now.
    pub fn readdress_host(&self, host: &TestHost, n: u8) -> anyhow::Result<TestHost> {
        let netns = host.netns.as_str();
        let ip_now = format!("{}.{n}", self.prefix);
        let old = format!("{}/24", host.ip);
        let new = format!("{ip_now}/24");
        let gw = self.gateway();
        ip(&["-n", netns, "addr", "del", &old, "dev", "eth0"])?;
        ip(&["-n", netns, "addr", "add", &new, "dev", "eth0"])?;
        ip(&["-n", netns, "route", "replace", "default", "via", &gw])?;
        Ok(TestHost {
            netns: host.netns.clone(),
            ip: ip_now,
        })
    }

    /// Runs `ip -j <args>` inside a host and parses its JSON.
    pub fn ip_json(host: &TestHost, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        json_of(
            Command::new("ip")
                .args(["-n", &host.netns, "-j"])
                .args(args),
            args,
        )
    }

    /// Runs `bridge -j <args>` inside a host and parses its JSON.
    pub fn bridge_json(host: &TestHost, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        json_of(
            Command::new("ip")
                .args(["netns", "exec", &host.netns, "bridge", "-j"])
                .args(args),
            args,
        )
    }
}

/// Runs an iproute2 command and parses its JSON (empty output is `[]`).
fn json_of(command: &mut Command, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(if text.trim().is_empty() {
        "[]"
    } else {
        &text
    })?)
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", h]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
