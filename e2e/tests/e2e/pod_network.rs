//! The pod network across hosts: three network namespaces as test hosts on
//! a veth underlay, a real master on the underlay, a real `skiff agent`
//! and a private containerd per host, real busybox containers.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{start_host_nodes, wait_node_ready};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_objects::{services, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

pub(crate) const IMAGE: &str = "net/busybox:1";

pub(crate) fn pod_yaml(name: &str, node: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
{extra}"#
    )
}

async fn pod(master: &MasterProcess, name: &str) -> Option<v1::Pod> {
    match master
        .client()
        .get(Kind::Pod, "default", name)
        .await
        .ok()
        .map(skiff_objects::pods::in_model)?
        .kind
    {
        Some(Body::Pod(p)) => Some(p),
        _ => None,
    }
}

pub(crate) async fn running_ip(master: &MasterProcess, name: &str) -> anyhow::Result<String> {
    wait_for(
        &format!("{name} Running with an IP"),
        Duration::from_secs(60),
        || async {
            let p = pod(master, name).await?;
            let s = p.status?;
            (s.phase == "Running" && !s.pod_ip.is_empty()).then_some(s.pod_ip)
        },
    )
    .await
}

pub(crate) async fn logs_contain(
    master: &MasterProcess,
    name: &str,
    text: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{text:?} in the log of {name}"),
        timeout,
        || async {
            let out = ctl(&master.api_addr, &["logs", name]);
            String::from_utf8_lossy(&out.stdout)
                .contains(text)
                .then_some(())
        },
    )
    .await
}

/// The overlay entries a host's VXLAN device has: (neighbours, fdb, routes).
fn overlay_entries(host: &TestHost) -> anyhow::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let neigh = Underlay::ip_json(
        host,
        &["neigh", "show", "dev", "skiff.1", "nud", "permanent"],
    )?;
    let fdb = Underlay::bridge_json(host, &["fdb", "show", "dev", "skiff.1"])?;
    let routes = Underlay::ip_json(host, &["route", "show", "dev", "skiff.1"])?;
    let mut n: Vec<String> = neigh
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}",
                e["dst"].as_str().unwrap_or(""),
                e["lladdr"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut f: Vec<String> = fdb
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["mac"].as_str() != Some("00:00:00:00:00:00"))
        .map(|e| {
            format!(
                "{} {}",
                e["mac"].as_str().unwrap_or(""),
                e["dst"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut r: Vec<String> = routes
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} via {}",
                e["dst"].as_str().unwrap_or(""),
                e["gateway"].as_str().unwrap_or("")
            )
        })
        .collect();
    n.sort();
    f.sort();
    r.sort();
    Ok((n, f, r))
}

/// What a host's overlay should hold for the other nodes.
async fn expected_entries(
    master: &MasterProcess,
    me: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let nodes = master.client().list(Kind::Node, "").await?;
    let (mut n, mut f, mut r) = (vec![], vec![], vec![]);
    for o in nodes.items {
        let Some(Body::Node(node)) = o.kind else {
            continue;
        };
        let meta = node.metadata.unwrap();
        if meta.name == me {
            continue;
        }
        let cidr = node.spec.unwrap().pod_cidr;
        let vtep = cidr.split('/').next().unwrap().to_string();
        let mac = meta.annotations["skiff.io/vtep-mac"].clone();
        let ip = meta.annotations["skiff.io/public-ip"].clone();
        n.push(format!("{vtep} {mac}"));
        f.push(format!("{mac} {ip}"));
        r.push(format!("{cidr} via {vtep}"));
    }
    n.sort();
    f.sort();
    r.sort();
    Ok((n, f, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_across_hosts_and_the_outside_through_masquerade(
) -> anyhow::Result<()> {
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
        underlay.add_host(4)?,
    ];
    let outside = underlay.add_host(100)?;
    let dir = tempfile::Builder::new().prefix("skiff-net-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let mut nodes = start_host_nodes(&master.api_addr, &hosts, IMAGE).await?;
    let client = master.client();
    // Each node has its own /24 of 10.42.0.0/16.
    let mut cidrs = Vec::new();
    for n in &nodes {
        let Some(Body::Node(node)) = client.get(Kind::Node, "", &n.agent.node_name).await?.kind
        else {
            anyhow::bail!("not a node")
        };
        cidrs.push(node.spec.unwrap().pod_cidr);
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "distinct subnets: {cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.42.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );

    // A web server on host A (with a host port), a client on host B.
    let (a, b) = (
        nodes[0].agent.node_name.clone(),
        nodes[1].agent.node_name.clone(),
    );
    let (a, b) = (a.as_str(), b.as_str());
    let ports = "    ports: [{containerPort: 8080, hostPort: 18080}]\n";
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "web",
        &pod_yaml("web", a, "exec httpd -f -p 8080 -h /www", ports),
    )?;
    let web_ip = running_ip(&master, "web")
        .await
        .with_context(|| nodes[0].log_tail())?;
    apply_yaml(&master.api_addr,
        dir.path(),
        "client",
        &pod_yaml(
            "client",
            b,
            &format!("while true; do wget -q -O - http://{web_ip}:8080/ && echo fetched-ok; sleep 1; done"),
            "",
        ),
    )?;
    let client_ip = running_ip(&master, "client")
        .await
        .with_context(|| nodes[1].log_tail())?;
    assert_ne!(web_ip, client_ip);
    logs_contain(
        &master,
        "client",
        "hello from skiff",
        Duration::from_secs(30),
    )
    .await
    .with_context(|| format!("{}\n{}", nodes[0].log_tail(), nodes[1].log_tail()))?;
    // The web pod is routed, not bridged: a /32 route through its veth,
    // which is in no bridge and answers ARP for the pod's neighbours at
    // once; and a pod beside it on host A reaches it through the host.
    let web_uid = pod(&master, "web")
        .await
        .and_then(|p| p.metadata)
        .map(|m| m.uid)
        .context("the web pod's uid")?;
    assert_routed(
        &hosts[0],
        &web_ip,
        &skiff_agent::network::veth_name(&web_uid),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "beside",
        &pod_yaml(
            "beside",
            a,
            &format!("while true; do wget -q -O - http://{web_ip}:8080/ && echo beside-ok; sleep 1; done"),
            "",
        ),
    )?;
    logs_contain(
        &master,
        "beside",
        "hello from skiff",
        Duration::from_secs(30),
    )
    .await
    .with_context(|| nodes[0].log_tail())?;
    let wide = ctl(&master.api_addr, &["get", "pods", "-o", "wide"]);
    assert!(
        String::from_utf8_lossy(&wide.stdout).contains(&web_ip),
        "get pods -o wide shows pod IPs"
    );

    // The outside: a server on an underlay address outside the cluster.
    let www = dir.path().join("outside-www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello from outside\n")?;
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &outside.netns,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "8081",
            "-h",
        ])
        .arg(&www)
        .spawn()?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "egress",
        &pod_yaml(
            "egress",
            a,
            &format!(
                "while true; do wget -q -O - http://{}:8081/ && echo egress-ok; sleep 1; done",
                outside.ip
            ),
            "",
        ),
    )?;
    let egress = logs_contain(
        &master,
        "egress",
        "hello from outside",
        Duration::from_secs(30),
    )
    .await;
    // The host port, from the outside host.
    let host_port = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &outside.netns,
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
        ])
        .arg(format!("http://{}:18080/", hosts[0].ip))
        .output()?;
    let _ = server.kill();
    let _ = server.wait();
    egress.with_context(|| nodes[0].log_tail())?;
    assert!(
        String::from_utf8_lossy(&host_port.stdout).contains("hello from skiff"),
        "hostPort 18080 reaches the web pod: {}",
        String::from_utf8_lossy(&host_port.stderr)
    );

    // Every host has exactly one neighbour, FDB entry and route per peer.
    for (h, n) in hosts.iter().zip(&nodes) {
        let want = expected_entries(&master, &n.agent.node_name).await?;
        assert_eq!(want.0.len(), 2);
        wait_for("overlay entries", Duration::from_secs(10), || async {
            (overlay_entries(h).ok()? == want).then_some(())
        })
        .await
        .with_context(|| format!("host {}: {:?} want {:?}", h.netns, overlay_entries(h), want))?;
    }

    // Host A as an older agent left it: the web and beside pods ports of
    // the bridge, with no /32 routes, and beside knowing web by web's own
    // MAC (learned over the bridge).
    let beside_uid = pod(&master, "beside")
        .await
        .and_then(|p| p.metadata)
        .map(|m| m.uid)
        .context("the beside pod's uid")?;
    let netns_dir = nodes[0].agent.data_dir.join("netns");
    let pod_netns = |uid: &str| netns_dir.join(uid);
    let in_pod = |uid: &str, args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", pod_netns(uid).display()))
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?} in pod {uid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let web_mac = serde_json::from_str::<serde_json::Value>(&in_pod(
        &web_uid,
        &["ip", "-j", "link", "show", "eth0"],
    )?)?[0]["address"]
        .as_str()
        .context("web's MAC")?
        .to_owned();
    let beside_ip = running_ip(&master, "beside").await?;
    let (web_veth, beside_veth) = (
        skiff_agent::network::veth_name(&web_uid),
        skiff_agent::network::veth_name(&beside_uid),
    );
    kill_agent_and_bridge(
        &mut nodes[0].agent,
        &hosts[0],
        &[(&web_veth, &web_ip), (&beside_veth, &beside_ip)],
    )?;
    in_pod(
        &beside_uid,
        &[
            "ip",
            "neigh",
            "replace",
            &web_ip,
            "lladdr",
            &web_mac,
            "dev",
            "eth0",
            "nud",
            "reachable",
        ],
    )?;
    // An agent restart keeps pod IPs and leaves the tables exactly right;
    // it routes the bridged pods, and beside forgets web's MAC at once (it
    // would keep it, unanswered, for 15 s or more).
    nodes[0].agent.restart()?;
    let forgotten = wait_for(
        "the bridged pods routed again",
        Duration::from_secs(10),
        || async {
            let routed = assert_routed(&hosts[0], &web_ip, &web_veth).is_ok()
                && assert_routed(&hosts[0], &beside_ip, &beside_veth).is_ok();
            let neighbour = in_pod(
                &beside_uid,
                &["ip", "neigh", "show", &web_ip, "dev", "eth0"],
            )
            .ok()?;
            (routed && !neighbour.contains(&web_mac)).then_some(())
        },
    )
    .await;
    forgotten.with_context(|| {
        format!(
            "beside's neighbours: {:?}\n{}",
            in_pod(&beside_uid, &["ip", "neigh", "show", "dev", "eth0"]),
            nodes[0].agent.log_tail()
        )
    })?;
    wait_for(
        "beside fetching web through the host",
        Duration::from_secs(10),
        || async {
            let page = in_pod(
                &beside_uid,
                &[
                    "timeout",
                    "3",
                    "busybox",
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    &format!("http://{web_ip}:8080/"),
                ],
            )
            .ok()?;
            page.contains("hello from skiff").then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_node_ready(&client, a, Duration::from_secs(30)).await?;
    assert_eq!(
        running_ip(&master, "web").await?,
        web_ip,
        "same IP after an agent restart"
    );
    logs_contain(&master, "client", "fetched-ok", Duration::from_secs(10)).await?;
    for (h, n) in hosts.iter().zip(&nodes) {
        let want = expected_entries(&master, &n.agent.node_name).await?;
        assert_eq!(
            overlay_entries(h)?,
            want,
            "host {} after the restart",
            h.netns
        );
    }

    // Removing node C removes its entries everywhere.
    let c_name = nodes[2].agent.node_name.clone();
    nodes[2].agent.kill();
    let out = ctl(&master.api_addr, &["delete", "node", &c_name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (h, n) in hosts.iter().zip(&nodes).take(2) {
        wait_for(
            "entries of the removed node gone",
            Duration::from_secs(15),
            || async {
                let (neigh, fdb, routes) = overlay_entries(h).ok()?;
                (neigh.len() == 1 && fdb.len() == 1 && routes.len() == 1).then_some(())
            },
        )
        .await
        .with_context(|| {
            format!(
                "host {}: {:?}\n{}",
                h.netns,
                overlay_entries(h),
                n.agent.log_tail()
            )
        })?;
        let want = expected_entries(&master, &n.agent.node_name).await?;
        assert_eq!(overlay_entries(h)?, want);
    }
    Ok(())
}

/// Kills `agent` and puts each of `pods` (host veth, pod IP) on `host`'s
/// bridge with no /32 route: the layout an agent before routed veths made.
fn kill_agent_and_bridge(
    agent: &mut skiff_e2e::agent::AgentProcess,
    host: &TestHost,
    pods: &[(&str, &str)],
) -> anyhow::Result<()> {
    agent.kill();
    for &(veth, ip) in pods {
        let route = format!("{ip}/32");
        Underlay::ip_json(host, &["link", "set", veth, "master", "skiff0"])?;
        Underlay::ip_json(host, &["route", "del", &route])?;
    }
    Ok(())
}

/// The pod at `ip` is wired to `host` as a routed veth `veth`.
fn assert_routed(host: &TestHost, ip: &str, veth: &str) -> anyhow::Result<()> {
    let ip_json = |args: &[&str]| Underlay::ip_json(host, args);
    let routes = ip_json(&["route", "show", "exact", &format!("{ip}/32")])?;
    anyhow::ensure!(
        routes
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["dev"] == veth),
        "one /32 route to {ip} through {veth}: {routes}"
    );
    let link = ip_json(&["link", "show", "dev", veth])?;
    anyhow::ensure!(
        link[0].get("master").is_none(),
        "{veth} is in a bridge: {link}"
    );
    for (path, want) in [
        (format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp"), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{veth}/proxy_delay"), "0"),
    ] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &host.netns, "cat", &path])
            .output()?;
        let got = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(got.trim() == want, "{path} is {got:?}, not {want}");
    }
    Ok(())
}

fn labelled_pod_yaml(name: &str, app: &str, node: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
    ports: [{{containerPort: 8080, name: http}}]
"#
    )
}

async fn cluster_ip_of(master: &MasterProcess, name: &str) -> anyhow::Result<String> {
    let object = master.client().get(Kind::Service, "default", name).await?;
    match services::read(&object) {
        Some(s) => Ok(services::cluster_ip(&s).to_owned()),
        None => anyhow::bail!("{name} is not a Service: {object:?}"),
    }
}

/// The `ip skiff` table as `host`'s kernel holds it.
fn skiff_table(host: &TestHost) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.netns,
            "nft",
            "list",
            "table",
            "ip",
            "skiff",
        ])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

async fn endpoint_count(master: &MasterProcess, name: &str) -> usize {
    match master.client().get(Kind::Endpoints, "default", name).await {
        Ok(o) => skiff_objects::endpoints::read(&o)
            .map_or(0, |e| skiff_objects::endpoints::ready_count(&e)),
        Err(_) => 0,
    }
}

/// Services, as kube-proxy makes them work: a clusterIP leads to the
/// Service's ready pods on every node, from pods on either node (one of
/// them reaching a pod on its own node) and from a host, and follows the
/// Endpoints when a pod goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ip_leads_to_the_services_pods_on_every_node() -> anyhow::Result<()> {
    if !e2e_prerequisites(&[
        "containerd",
        "runc",
        "ctr",
        "ip",
        "bridge",
        "nsenter",
        "nft",
        "busybox",
    ]) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let hosts = [underlay.add_host(2)?, underlay.add_host(3)?];
    let dir = tempfile::Builder::new().prefix("skiff-svc-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let nodes = start_host_nodes(&master.api_addr, &hosts, IMAGE).await?;
    // On failure: the agents' logs and what their tables hold.
    let logs = || {
        let tables: Vec<String> = hosts.iter().map(skiff_table).collect();
        format!(
            "{}\n{}\n{}",
            nodes[0].log_tail(),
            nodes[1].log_tail(),
            tables.join("\n")
        )
    };
    let (a, b) = (
        nodes[0].agent.node_name.clone(),
        nodes[1].agent.node_name.clone(),
    );
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "svc",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http}\n",
    )?;
    let cluster_ip = cluster_ip_of(&master, "web").await?;
    assert!(cluster_ip.starts_with("10.43."), "{cluster_ip}");
    // One web pod per node, each serving its own name, and each fetching
    // the Service itself: when the pick is the pod itself, the packet must
    // go back out of the veth it came in by, masqueraded (hairpin).
    let serve = format!(
        "(while true; do timeout 2 wget -q -O - http://{cluster_ip}/ | sed s/^/via-service-/; sleep 0.3; done) & \
         mkdir -p /w && echo page-$(hostname) > /w/index.html && exec httpd -f -p 8080 -h /w"
    );
    for (name, node) in [("web-a", &a), ("web-b", &b)] {
        apply_yaml(
            &master.api_addr,
            dir.path(),
            name,
            &labelled_pod_yaml(name, "web", node, &serve),
        )?;
    }
    wait_for("2 endpoints", Duration::from_secs(60), || async {
        (endpoint_count(&master, "web").await == 2).then_some(())
    })
    .await
    .with_context(logs)?;

    // (Debian's static busybox wget crashes with -T: `timeout` it is.)
    // A client on node A reaches both pods: the remote one over the
    // overlay, the local one through the hairpin.
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "client",
        &pod_yaml(
            "client",
            &a,
            &format!("while true; do timeout 2 wget -q -O - http://{cluster_ip}/; sleep 0.2; done"),
            "",
        ),
    )?;
    for page in ["page-web-a", "page-web-b"] {
        logs_contain(&master, "client", page, Duration::from_secs(45))
            .await
            .with_context(|| {
                let client = ctl(&master.api_addr, &["logs", "client"]);
                format!(
                    "client's log:\n{}\n{}",
                    String::from_utf8_lossy(&client.stdout),
                    logs()
                )
            })?;
    }
    // Each web pod reached itself through the Service.
    logs_contain(
        &master,
        "web-a",
        "via-service-page-web-a",
        Duration::from_secs(30),
    )
    .await
    .with_context(logs)?;
    // A host (node B's test host) reaches it too.
    let from_host = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts[1].netns,
            "timeout",
            "10",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
        ])
        .arg(format!("http://{cluster_ip}/"))
        .output()?;
    let page = String::from_utf8_lossy(&from_host.stdout);
    assert!(
        page.contains("page-web-"),
        "from the host: {page:?} {:?}",
        from_host.status
    );

    // web-b goes; once the Endpoints say so, only web-a answers, also to
    // a client on node B.
    let deleted = ctl(&master.api_addr, &["delete", "pod", "web-b"]);
    assert!(deleted.status.success(), "{deleted:?}");
    wait_for("1 endpoint", Duration::from_secs(30), || async {
        (endpoint_count(&master, "web").await == 1).then_some(())
    })
    .await
    .with_context(logs)?;
    // And a Service nothing backs: refused at once, not left to time out.
    // The agents learn of it (and of its Endpoints) from their watches:
    // the master answers no List from its making to both nodes' rules
    // having it (nothing else here lists while that goes on).
    let lists = master.lists_answered();
    // (Each agent listed its kinds once when it started.)
    assert!(lists >= 4.0, "the agents' first lists not counted: {lists}");
    let nobody = skiff_objects::manifest::parse_manifest(
        "nobody.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: nobody, namespace: default}\nspec:\n  selector: {app: nobody}\n  ports:\n  - {port: 80}\n",
        true,
    )?
    .objects;
    for object in nobody {
        master.client().create(object).await?;
    }
    let nobody_ip = cluster_ip_of(&master, "nobody").await?;
    // Its element in the verdict map of Service ports.
    let element = format!("{nobody_ip} . tcp . 80 ");
    for host in &hosts {
        wait_for(
            "the new Service in both nodes' rules",
            Duration::from_secs(20),
            || async { skiff_table(host).contains(&element).then_some(()) },
        )
        .await
        .with_context(logs)?;
    }
    assert_eq!(
        master.lists_answered(),
        lists,
        "Lists answered while the agents took in a new Service"
    );
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "late",
        &pod_yaml(
            "late",
            &b,
            &format!("for i in 1 2 3 4 5 6 7 8; do timeout 2 wget -q -O - http://{cluster_ip}/; done; \
                      timeout 5 wget -q -O - http://{nobody_ip}/; echo nobody-exit=$?; echo fetched-all; sleep 3600"),
            "",
        ),
    )?;
    let started = std::time::Instant::now();
    let refused = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &hosts[0].netns,
            "timeout",
            "5",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
        ])
        .arg(format!("http://{nobody_ip}/"))
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refused") && started.elapsed() < Duration::from_secs(3),
        "a Service without endpoints, from the host: {stderr:?} after {:?}",
        started.elapsed()
    );
    logs_contain(&master, "late", "fetched-all", Duration::from_secs(60))
        .await
        .with_context(logs)?;
    let late =
        String::from_utf8_lossy(&ctl(&master.api_addr, &["logs", "late"]).stdout).to_string();
    assert_eq!(late.matches("page-web-a").count(), 8, "{late}");
    assert!(!late.contains("page-web-b"), "{late}");
    // wget's "connection refused" is exit 1; a timeout would be 143.
    assert!(late.contains("nobody-exit=1"), "{late}");
    Ok(())
}
