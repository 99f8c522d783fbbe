//! Direct routing between nodes (`--pod-network host-gw|auto`): two test
//! hosts on one segment and a third a router away, real agents, a real
//! master and real busybox pods. With `auto`, the two on one segment route
//! each other's pod subnets via their node IPs and reach the third over
//! VXLAN; a restart in `host-gw` drops the VXLAN device and what only it
//! could reach; a restart in `vxlan` removes every direct route.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{start_host_nodes_with, RuntimeNode};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_objects::{services, Kind};
use skiff_proto::api::object::Kind as Body;

use crate::pod_network::{logs_contain, pod_yaml, running_ip, IMAGE};

/// skiff's route protocol (`skiff_agent::network::overlay::ROUTE_PROTOCOL`).
const PROTO: &str = "115";

/// `<dst> via <gateway> dev <dev>` of each route `ip route show <args>`
/// lists in `host`, sorted.
fn routes(host: &TestHost, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut cmd = vec!["route", "show"];
    cmd.extend_from_slice(args);
    let json = Underlay::ip_json(host, &cmd)?;
    let mut out: Vec<String> = json
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap_or(""),
                r["gateway"].as_str().unwrap_or(""),
                r["dev"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The direct routes skiff made in `host`.
fn direct_routes(host: &TestHost) -> Vec<String> {
    routes(host, &["proto", PROTO]).unwrap_or_else(|e| vec![format!("error: {e}")])
}

/// The routes on `host`'s VXLAN device; `None` when it has none.
fn vxlan_routes(host: &TestHost) -> Option<Vec<String>> {
    let has_device = std::process::Command::new("ip")
        .args(["-n", &host.netns, "link", "show", "skiff.1"])
        .output()
        .is_ok_and(|o| o.status.success());
    // `ip route show dev X` leaves `dev` out of what it prints: list all.
    has_device.then(|| {
        routes(host, &[])
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.ends_with(" dev skiff.1"))
            .collect()
    })
}

/// The FDB destinations (node IPs) on `host`'s VXLAN device.
fn fdb_destinations(host: &TestHost) -> Vec<String> {
    let fdb = Underlay::bridge_json(host, &["fdb", "show", "dev", "skiff.1"]).unwrap_or_default();
    let mut out: Vec<String> = fdb
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["mac"].as_str() != Some("00:00:00:00:00:00"))
        .filter_map(|e| e["dst"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// How many times `text` is in pod `name`'s log.
fn log_count(master: &MasterProcess, name: &str, text: &str) -> usize {
    let out = ctl(&master.api_addr, &["logs", name]);
    String::from_utf8_lossy(&out.stdout).matches(text).count()
}

/// Waits until `text` is in `name`'s log `more` times beyond `since`.
async fn logs_grow(
    master: &MasterProcess,
    name: &str,
    text: &str,
    since: usize,
    more: usize,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{more} more {text:?} in the log of {name}"),
        Duration::from_secs(40),
        || async { (log_count(master, name, text) >= since + more).then_some(()) },
    )
    .await
}

/// Waits until `now()` is `want`, or fails saying what it was.
async fn settles<T: std::fmt::Debug + PartialEq>(
    what: &str,
    want: T,
    now: impl Fn() -> T,
    node: &RuntimeNode,
) -> anyhow::Result<()> {
    let wanted = &want;
    let now = &now;
    wait_for(what, Duration::from_secs(30), || async move {
        (now() == *wanted).then_some(())
    })
    .await
    .with_context(|| format!("{what}: {:?}, want {want:?}\n{}", now(), node.log_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_routes_directly_on_the_segment_and_over_vxlan_beyond_a_router() -> anyhow::Result<()>
{
    if !e2e_prerequisites(&[
        "containerd",
        "runc",
        "ctr",
        "ip",
        "bridge",
        "nsenter",
        "nft",
    ]) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let hosts = [
        underlay.add_host(2)?,
        underlay.add_host(3)?,
        underlay.add_host_beyond_router(4)?,
    ];
    // Strict reverse-path filtering, as RHEL-family hosts have it: a
    // packet that comes in on another link than its answer would leave
    // by is dropped, so one-way routes (a direct route one way, VXLAN the
    // other) fail here.
    for h in &hosts {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &h.netns, "sh", "-c"])
            .arg("echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter")
            .output()?;
        anyhow::ensure!(out.status.success(), "rp_filter in {}", h.netns);
    }
    let dir = tempfile::Builder::new().prefix("skiff-hostgw-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let mut nodes = start_host_nodes_with(&master.api_addr, &hosts, IMAGE, "auto").await?;
    let client = master.client();
    let mut cidrs = Vec::new();
    for n in &nodes {
        let Some(Body::Node(node)) = client.get(Kind::Node, "", &n.agent.node_name).await?.kind
        else {
            anyhow::bail!("not a node")
        };
        cidrs.push(node.spec.unwrap().pod_cidr);
    }
    let vtep = |i: usize| cidrs[i].split('/').next().unwrap_or("").to_string();
    let (ha, hb, hc) = (&hosts[0], &hosts[1], &hosts[2]);
    let direct = |i: usize| format!("{} via {} dev eth0", cidrs[i], hosts[i].ip);
    let over_vxlan = |i: usize| format!("{} via {} dev skiff.1", cidrs[i], vtep(i));

    // A web server on every node; a client on A fetching from B and C, one
    // on C fetching from A.
    let names: Vec<String> = nodes.iter().map(|n| n.agent.node_name.clone()).collect();
    let mut web = Vec::new();
    for (i, node) in names.iter().enumerate() {
        let name = format!("web-{i}");
        apply_yaml(
            &master.api_addr,
            dir.path(),
            &name,
            &pod_yaml(&name, node, "exec httpd -f -p 8080 -h /www", ""),
        )?;
        web.push(
            running_ip(&master, &name)
                .await
                .with_context(|| nodes[i].log_tail())?,
        );
    }
    let fetch =
        |ip: &str, tag: &str| format!("wget -q -O - http://{ip}:8080/ >/dev/null && echo {tag}");
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "client-a",
        &pod_yaml(
            "client-a",
            &names[0],
            // Two loops, so a fetch from C hanging (unreachable) never
            // holds up the one from B.
            &format!(
                "(while true; do {}; sleep 1; done) & while true; do {}; sleep 1; done",
                fetch(&web[1], "reached-b"),
                fetch(&web[2], "reached-c")
            ),
            "",
        ),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "client-c",
        &pod_yaml(
            "client-c",
            &names[2],
            &format!(
                "while true; do {}; sleep 1; done",
                fetch(&web[0], "reached-a")
            ),
            "",
        ),
    )?;

    // A and B route each other directly; both reach C over VXLAN.
    settles(
        "A's direct routes",
        vec![direct(1)],
        || direct_routes(ha),
        &nodes[0],
    )
    .await?;
    settles(
        "B's direct routes",
        vec![direct(0)],
        || direct_routes(hb),
        &nodes[1],
    )
    .await?;
    settles(
        "A's VXLAN routes",
        Some(vec![over_vxlan(2)]),
        || vxlan_routes(ha),
        &nodes[0],
    )
    .await?;
    assert_eq!(fdb_destinations(ha), vec![hc.ip.clone()], "A's FDB: C only");
    // C is on no one's segment: VXLAN to both, no direct route.
    settles(
        "C's VXLAN routes",
        Some(vec![over_vxlan(0), over_vxlan(1)]),
        || vxlan_routes(hc),
        &nodes[2],
    )
    .await?;
    assert_eq!(
        direct_routes(hc),
        Vec::<String>::new(),
        "C routes nothing directly"
    );
    let get = std::process::Command::new("ip")
        .args(["-n", &ha.netns, "route", "get", &web[1]])
        .output()?;
    assert!(
        String::from_utf8_lossy(&get.stdout).contains(&format!("via {} dev eth0", hb.ip)),
        "A sends to B's pod unencapsulated: {}",
        String::from_utf8_lossy(&get.stdout)
    );
    for (pod, text) in [
        ("client-a", "reached-b"),
        ("client-a", "reached-c"),
        ("client-c", "reached-a"),
    ] {
        logs_contain(&master, pod, text, Duration::from_secs(40))
            .await
            .with_context(|| {
                format!(
                    "{}\n{}\n{}",
                    nodes[0].log_tail(),
                    nodes[1].log_tail(),
                    nodes[2].log_tail()
                )
            })?;
    }

    // A in host-gw mode: no VXLAN device, B still routed directly, C
    // unreachable (and said so); C drops its VXLAN entries for A.
    nodes[0].agent.kill();
    // What auto made goes, so that host-gw is seen making its own.
    let flush = std::process::Command::new("ip")
        .args(["-n", &ha.netns, "route", "flush", "proto", PROTO])
        .output()?;
    anyhow::ensure!(flush.status.success(), "flushing A's direct routes");
    assert_eq!(direct_routes(ha), Vec::<String>::new());
    nodes[0].agent.restart_with_pod_network("host-gw")?;
    settles(
        "A's VXLAN device gone",
        None,
        || vxlan_routes(ha),
        &nodes[0],
    )
    .await?;
    settles(
        "A's direct routes in host-gw mode",
        vec![direct(1)],
        || direct_routes(ha),
        &nodes[0],
    )
    .await?;
    wait_for(
        "A reporting C unreachable",
        Duration::from_secs(30),
        || async {
            let log = nodes[0].agent.log();
            (log.contains("cannot be reached") && log.contains(&hc.ip)).then_some(())
        },
    )
    .await
    .with_context(|| nodes[0].log_tail())?;
    settles(
        "C's VXLAN routes without A",
        Some(vec![over_vxlan(1)]),
        || vxlan_routes(hc),
        &nodes[2],
    )
    .await?;
    let b_before = log_count(&master, "client-a", "reached-b");
    logs_grow(&master, "client-a", "reached-b", b_before, 3)
        .await
        .with_context(|| nodes[0].log_tail())?;

    // A in vxlan mode: every direct route of A's gone, B and C over VXLAN;
    // B, still auto, reaches A over VXLAN too (A publishes its mode), so
    // both directions take one path; C routes to A again.
    nodes[0].agent.kill();
    nodes[0].agent.restart_with_pod_network("vxlan")?;
    settles(
        "A's VXLAN routes in vxlan mode",
        Some(vec![over_vxlan(1), over_vxlan(2)]),
        || vxlan_routes(ha),
        &nodes[0],
    )
    .await?;
    assert_eq!(
        direct_routes(ha),
        Vec::<String>::new(),
        "A's direct routes removed"
    );
    let mut both = vec![hb.ip.clone(), hc.ip.clone()];
    both.sort();
    assert_eq!(fdb_destinations(ha), both);
    settles(
        "B's VXLAN routes with A in vxlan mode",
        Some(vec![over_vxlan(0), over_vxlan(2)]),
        || vxlan_routes(hb),
        &nodes[1],
    )
    .await?;
    assert_eq!(
        direct_routes(hb),
        Vec::<String>::new(),
        "B routes nothing directly to a vxlan node"
    );
    settles(
        "C's VXLAN routes with A back",
        Some(vec![over_vxlan(0), over_vxlan(1)]),
        || vxlan_routes(hc),
        &nodes[2],
    )
    .await?;
    for (pod, text) in [
        ("client-a", "reached-b"),
        ("client-a", "reached-c"),
        ("client-c", "reached-a"),
    ] {
        let before = log_count(&master, pod, text);
        logs_grow(&master, pod, text, before, 2)
            .await
            .with_context(|| format!("{}\n{}", nodes[0].log_tail(), nodes[2].log_tail()))?;
    }
    Ok(())
}

/// `Ip: ForwDatagrams` of `host`: the packets its IP stack forwarded.
fn forwarded(host: &TestHost) -> anyhow::Result<u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.netns, "cat", "/proc/net/snmp"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("Ip: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("no Ip lines in {}'s /proc/net/snmp: {text}", host.netns);
    };
    let at = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .context("no ForwDatagrams")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("no ForwDatagrams value")?
        .parse()?)
}

/// In host-gw mode, pod-to-pod TCP between the two nodes skips both
/// hosts' IP stacks (the agents' tc-BPF fast path), while a connection
/// to a clusterIP, translated by the client's host, still has its replies
/// translated back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_traffic_skips_the_hosts_stacks_and_cluster_ip_replies_are_translated(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let hosts = [underlay.add_host(2)?, underlay.add_host(3)?];
    let dir = tempfile::Builder::new()
        .prefix("skiff-fastpath-")
        .tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let mut nodes = start_host_nodes_with(&master.api_addr, &hosts, IMAGE, "host-gw").await?;
    let logs = || format!("{}\n{}", nodes[0].log_tail(), nodes[1].log_tail());
    for node in &nodes {
        let ready = wait_for("the pod network", Duration::from_secs(30), || async {
            let log = node.agent.log();
            let line = log.lines().find(|l| l.contains("pod network ready"))?;
            Some(line.to_owned())
        })
        .await
        .with_context(|| node.log_tail())?;
        assert!(
            ready.contains("fast_path=true"),
            "the agent runs the fast path: {}",
            node.log_tail()
        );
    }
    let names: Vec<String> = nodes.iter().map(|n| n.agent.node_name.clone()).collect();
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "web",
        &pod_yaml("web", &names[1], "exec httpd -f -p 8080 -h /www", "")
            .replace("  name: web\n", "  name: web\n  labels: {app: web}\n"),
    )?;
    let web = running_ip(&master, "web").await.with_context(logs)?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "svc",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
    )?;
    let object = master.client().get(Kind::Service, "default", "web").await?;
    let cluster_ip = match services::read(&object) {
        Some(s) => services::cluster_ip(&s).to_owned(),
        None => anyhow::bail!("web is not a Service: {object:?}"),
    };
    let fetch = |url: &str, tag: &str| format!("wget -q -O - {url} >/dev/null && echo {tag}");
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "client",
        &pod_yaml(
            "client",
            &names[0],
            &format!(
                "while true; do {}; {}; sleep 0.5; done",
                fetch(&format!("http://{web}:8080/"), "reached-pod"),
                fetch(&format!("http://{cluster_ip}/"), "reached-svc"),
            ),
            "",
        ),
    )?;
    for text in ["reached-pod", "reached-svc"] {
        logs_contain(&master, "client", text, Duration::from_secs(40))
            .await
            .with_context(logs)?;
    }
    // A node reaching another node's pod: the answer leaves the cluster
    // CIDR, so it goes through B's stack, and so must the request (else
    // B would take the answer for a new connection and masquerade it).
    let from_node = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts[0].netns,
            "curl",
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}", &format!("http://{web}:8080/")])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&from_node.stdout),
        "200",
        "node A fetches from B's pod: {}",
        String::from_utf8_lossy(&from_node.stderr)
    );

    // While both keep succeeding: B's stack forwards nothing (the web
    // pod's packets in and out go by the fast path, the translation was
    // A's), A's forwards the clusterIP's connections (translated there,
    // so kept in its stack) and nothing else needs it.
    let (a_before, b_before) = (forwarded(&hosts[0])?, forwarded(&hosts[1])?);
    let pod_before = log_count(&master, "client", "reached-pod");
    let svc_before = log_count(&master, "client", "reached-svc");
    logs_grow(&master, "client", "reached-pod", pod_before, 4)
        .await
        .with_context(logs)?;
    logs_grow(&master, "client", "reached-svc", svc_before, 4)
        .await
        .with_context(logs)?;
    let (a_after, b_after) = (forwarded(&hosts[0])?, forwarded(&hosts[1])?);
    assert_eq!(
        b_after, b_before,
        "B's IP stack forwarded packets between the pods"
    );
    assert!(
        a_after >= a_before + 4 * 4,
        "A's stack forwards the clusterIP's connections (at least a SYN, a request and ACKs each): {a_before} -> {a_after}"
    );

    // The program goes with the agent: with B's stopped, B's stack
    // carries the pods' traffic, which goes on; so it does with B's
    // agent back with the fast path turned off.
    for restart in [false, true] {
        if restart {
            nodes[1].agent.restart_with(&["--pod-fast-path=false"])?;
            let agent = &nodes[1].agent;
            wait_for("B's pod network again", Duration::from_secs(30), || async {
                (agent.log().matches("pod network ready").count() >= 2).then_some(())
            })
            .await
            .with_context(|| nodes[1].log_tail())?;
            let log = nodes[1].agent.log();
            let ready = log.lines().rfind(|l| l.contains("pod network ready"));
            assert!(
                ready.is_some_and(|l| l.contains("fast_path=false")),
                "{}",
                nodes[1].log_tail()
            );
        } else {
            nodes[1].agent.kill();
        }
        let b_before = forwarded(&hosts[1])?;
        let pod_before = log_count(&master, "client", "reached-pod");
        logs_grow(&master, "client", "reached-pod", pod_before, 3)
            .await
            .with_context(|| nodes[1].log_tail())?;
        let b_after = forwarded(&hosts[1])?;
        assert!(
            b_after >= b_before + 3 * 4,
            "B's stack forwards the pods' traffic (restarted: {restart}): {b_before} -> {b_after}"
        );
    }
    Ok(())
}
