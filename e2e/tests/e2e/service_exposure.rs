//! Services reached from outside the cluster, as k3s users reach them: two
//! netns test hosts with a real `skiff agent` and a private containerd
//! each, a real master on the underlay, and a third test host with no
//! agent as "the LAN". One web pod runs on node A only, its busybox httpd
//! logging every client's address (`-vv`).
//!
//! - A NodePort Service answers on both nodes' addresses (node B forwards
//!   over the overlay), masqueraded (Cluster policy); `skiff ctl get svc`
//!   shows `80:30080/TCP`; `kubectl get endpointslices -l
//!   kubernetes.io/service-name=web-np` lists the pod's address.
//! - With `internalTrafficPolicy: Local`, the clusterIP answers on node A
//!   (the endpoint's) and not on node B.
//! - A nodePort already taken, or out of range, is refused with the field
//!   named.
//! - With `externalTrafficPolicy: Local` only node A answers, and the pod
//!   sees the LAN host's own address.
//! - A LoadBalancer Service gets both nodes' addresses as its ingress and
//!   answers on them at its port; one with Local policy only node A's,
//!   and its `healthCheckNodePort` answers 200 with one local endpoint on
//!   node A and 503 on node B; a
//!   second LoadBalancer on a port already taken stays Pending;
//!   `loadBalancerSourceRanges` keeps out a source it does not name until
//!   it names it.
//! - `spec.externalIPs` answer at the Service's port; with
//!   `sessionAffinity: ClientIP` the LAN host stays on one of two pods.
//! - With the master killed, both nodes still answer the nodePort, node
//!   A the load balancer, and cluster DNS still answers the web pod.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::start_host_nodes;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_objects::{services, Kind};
use skiff_proto::api::object::Kind as Body;

const IMAGE: &str = "expose/busybox:1";
/// How long anything asynchronous (a pod Running, rules in place) may take.
const SETTLE: Duration = Duration::from_secs(60);

fn web_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /w && echo page-web > /w/index.html && exec httpd -f -vv -p 8080 -h /w"]
"#
    )
}

/// A Service selecting the web pod; `extra` goes under `spec`.
fn service(name: &str, kind: &str, port: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: {kind}\n  selector: {{app: web}}\n  ports: [{port}]\n{extra}"
    )
}

/// `http://<address>/` fetched from `host`, within 4 s; its body, or
/// `None` when it did not answer.
fn fetch_from(host: &TestHost, address: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.netns,
            "timeout",
            "4",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
        ])
        .arg(format!("http://{address}/"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What busybox wget prints (both streams, progress included) fetching
/// `http://<address>/` from `host` within 4 s: the page, or the error
/// (`server returned error: HTTP/1.1 503 Service Unavailable`).
fn wget_from(host: &TestHost, address: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.netns,
            "timeout",
            "4",
            "busybox",
            "wget",
            "-O",
            "-",
        ])
        .arg(format!("http://{address}/"))
        .output();
    match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("cannot run wget: {e}"),
    }
}

async fn pod_ip(master: &MasterProcess, name: &str) -> Option<String> {
    match master
        .client()
        .get(Kind::Pod, "default", name)
        .await
        .ok()
        .map(skiff_objects::pods::in_model)?
        .kind
    {
        Some(Body::Pod(p)) => p.status.map(|s| s.pod_ip).filter(|ip| !ip.is_empty()),
        _ => None,
    }
}

async fn get_service(master: &MasterProcess, name: &str) -> Option<services::Service> {
    let object = master
        .client()
        .get(Kind::Service, "default", name)
        .await
        .ok()?;
    services::read(&object)
}

fn ingress_of(service: &services::Service) -> Vec<String> {
    let mut ips: Vec<String> = services::ingress_ips(service).map(str::to_owned).collect();
    ips.sort();
    ips
}

async fn ready_endpoints(master: &MasterProcess, name: &str) -> usize {
    match master.client().get(Kind::Endpoints, "default", name).await {
        Ok(o) => skiff_objects::endpoints::read(&o)
            .map_or(0, |e| skiff_objects::endpoints::ready_count(&e)),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_and_load_balancers_answer_on_node_addresses() -> anyhow::Result<()> {
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
    let lan = underlay.add_host(100)?;
    let dir = tempfile::Builder::new().prefix("skiff-expose-").tempdir()?;
    let mut master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let nodes = start_host_nodes(&master.api_addr, &hosts, IMAGE).await?;
    let (node_a, node_b) = (&hosts[0].ip, &hosts[1].ip);
    let api = master.api_addr.clone();
    // On failure: the agents' logs and what their tables hold.
    let logs = || {
        let tables: Vec<String> = hosts
            .iter()
            .map(|h| {
                let out = std::process::Command::new("ip")
                    .args([
                        "netns", "exec", &h.netns, "nft", "list", "table", "ip", "skiff",
                    ])
                    .output();
                out.map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default()
            })
            .collect();
        format!(
            "{}\n{}\n{}\n{}",
            master.log_tail(),
            nodes[0].log_tail(),
            nodes[1].log_tail(),
            tables.join("\n")
        )
    };
    let web_log = || String::from_utf8_lossy(&ctl(&api, &["logs", "web"]).stdout).into_owned();
    // The pod's httpd -vv prefixes each request with the client's address,
    // an IPv4 one written as IPv4-mapped IPv6: `[::ffff:10.0.0.1]:43690`.
    let lan_seen = || web_log().contains(&format!("[::ffff:{}]:", lan.ip));

    apply_yaml(&api, dir.path(), "web", &web_pod(&nodes[0].agent.node_name))?;
    apply_yaml(
        &api,
        dir.path(),
        "web-np",
        &service(
            "web-np",
            "NodePort",
            "{port: 80, targetPort: 8080, nodePort: 30080}",
            "",
        ),
    )?;
    wait_for("web's endpoint", SETTLE, || async {
        (ready_endpoints(&master, "web-np").await == 1).then_some(())
    })
    .await
    .with_context(logs)?;

    // NodePort, Cluster policy: both nodes answer; node B sends the
    // connection over the overlay to node A's pod.
    for node in [node_a, node_b] {
        let address = format!("{node}:30080");
        wait_for(&format!("the nodePort on {address}"), SETTLE, || async {
            fetch_from(&lan, &address).filter(|page| page.contains("page-web"))
        })
        .await
        .with_context(logs)?;
    }
    assert!(!lan_seen(), "Cluster policy masquerades:\n{}", web_log());
    let table = String::from_utf8_lossy(&ctl(&api, &["get", "svc", "web-np"]).stdout).into_owned();
    assert!(table.contains("80:30080/TCP"), "{table}");

    // EndpointSlices beside the Endpoints, as kubectl reads them.
    let web_ip = pod_ip(&master, "web").await.context("web's address")?;
    if let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) {
        let kubectl = Kubectl::new(binary, &api)?;
        let args = [
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web-np",
        ];
        let listed = wait_for("web-np's EndpointSlice", SETTLE, || async {
            let out = kubectl.run(&args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains(&web_ip) {
                return Some(text);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        })
        .await
        .with_context(logs)?;
        assert!(listed.contains("IPv4"), "{listed}");
        assert!(
            listed.contains("8080"),
            "the resolved target port: {listed}"
        );
    }

    // internalTrafficPolicy: Local: clients on node A (here the node
    // itself) reach the endpoint there; node B has none, so its clients'
    // connections are dropped rather than sent to node A.
    apply_yaml(
        &api,
        dir.path(),
        "web-internal",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-internal}\nspec:\n  selector: {app: web}\n  internalTrafficPolicy: Local\n  ports: [{port: 80, targetPort: 8080}]\n",
    )?;
    let internal_ip = get_service(&master, "web-internal")
        .await
        .map(|s| services::cluster_ip(&s).to_owned())
        .context("web-internal")?;
    wait_for("web-internal from node A", SETTLE, || async {
        fetch_from(&hosts[0], &internal_ip).filter(|page| page.contains("page-web"))
    })
    .await
    .with_context(logs)?;
    // Node B has had the same lists as long.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fetch_from(&hosts[1], &internal_ip),
        None,
        "node B has no endpoint of an internalTrafficPolicy: Local Service"
    );

    // A nodePort another Service holds, or out of the range: refused, the
    // field named, nothing stored.
    for (name, port, words) in [
        ("taken", "30080", "already allocated"),
        ("outside", "8080", "not in the valid range"),
    ] {
        let yaml = service(
            name,
            "NodePort",
            &format!("{{port: 80, targetPort: 8080, nodePort: {port}}}"),
            "",
        );
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let out = ctl(&api, &["apply", "-f", &path.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            stderr.contains("spec.ports[0].nodePort") && stderr.contains(words),
            "{name}: {stderr}"
        );
        assert!(get_service(&master, name).await.is_none(), "{name} stored");
    }

    // NodePort, Local policy: only the node with the endpoint answers, and
    // the pod sees the LAN host's own address.
    apply_yaml(
        &api,
        dir.path(),
        "web-local",
        &service(
            "web-local",
            "NodePort",
            "{port: 80, targetPort: 8080}",
            "  externalTrafficPolicy: Local\n",
        ),
    )?;
    let local_port = get_service(&master, "web-local")
        .await
        .and_then(|s| services::ports(&s).first().map(services::node_port))
        .context("web-local")?;
    assert!((30000..=32767).contains(&local_port), "{local_port}");
    let address = format!("{node_a}:{local_port}");
    wait_for("the Local nodePort on node A", SETTLE, || async {
        fetch_from(&lan, &address).filter(|page| page.contains("page-web"))
    })
    .await
    .with_context(logs)?;
    assert!(
        lan_seen(),
        "Local policy keeps the client address:\n{}",
        web_log()
    );
    assert_eq!(
        fetch_from(&lan, &format!("{node_b}:{local_port}")),
        None,
        "node B has no endpoint and must not answer"
    );

    // LoadBalancer: both nodes' addresses as ingress, answering at the
    // Service's own port.
    apply_yaml(
        &api,
        dir.path(),
        "web-lb",
        &service(
            "web-lb",
            "LoadBalancer",
            "{port: 8088, targetPort: 8080}",
            "",
        ),
    )?;
    let mut both = vec![node_a.clone(), node_b.clone()];
    both.sort();
    wait_for("web-lb's ingress", SETTLE, || async {
        let s = get_service(&master, "web-lb").await?;
        (ingress_of(&s) == both).then_some(())
    })
    .await
    .with_context(logs)?;
    for node in [node_a, node_b] {
        let address = format!("{node}:8088");
        wait_for(
            &format!("the load balancer on {address}"),
            SETTLE,
            || async { fetch_from(&lan, &address).filter(|page| page.contains("page-web")) },
        )
        .await
        .with_context(logs)?;
    }
    let table = String::from_utf8_lossy(&ctl(&api, &["get", "svc", "web-lb"]).stdout).into_owned();
    assert!(table.contains(&both.join(",")), "{table}");
    assert!(
        table.contains("8088:3"),
        "the LoadBalancer has a nodePort: {table}"
    );

    // Local policy: only the node with the endpoint is an ingress.
    apply_yaml(
        &api,
        dir.path(),
        "web-lb-local",
        &service(
            "web-lb-local",
            "LoadBalancer",
            "{port: 8091, targetPort: 8080}",
            "  externalTrafficPolicy: Local\n",
        ),
    )?;
    wait_for("web-lb-local's ingress", SETTLE, || async {
        let s = get_service(&master, "web-lb-local").await?;
        (ingress_of(&s) == [node_a.clone()]).then_some(())
    })
    .await
    .with_context(logs)?;
    // Its health check port, for load balancers in front of the nodes:
    // 200 and one local endpoint on node A, 503 on node B.
    let health = get_service(&master, "web-lb-local")
        .await
        .map(|s| services::health_check_node_port(&s))
        .context("web-lb-local")?;
    assert!((30000..=32767).contains(&health), "{health}");
    let on_a = format!("{node_a}:{health}");
    let answer = wait_for("node A's health check answer", SETTLE, || async {
        fetch_from(&lan, &on_a).filter(|body| body.contains(r#""localEndpoints":1"#))
    })
    .await
    .with_context(logs)?;
    assert!(
        answer.contains(r#""service":{"namespace":"default","name":"web-lb-local"}"#),
        "{answer}"
    );
    let on_b = format!("{node_b}:{health}");
    wait_for("node B's health check answer", SETTLE, || async {
        let answer = wget_from(&lan, &on_b);
        answer.contains("503").then_some(answer)
    })
    .await
    .with_context(logs)?;

    // A second LoadBalancer on the taken port stays Pending.
    apply_yaml(
        &api,
        dir.path(),
        "clash",
        &service(
            "clash",
            "LoadBalancer",
            "{port: 8088, targetPort: 8080}",
            "",
        ),
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clash = get_service(&master, "clash").await.context("clash")?;
    let web_lb = get_service(&master, "web-lb").await.context("web-lb")?;
    assert!(
        ingress_of(&clash).is_empty(),
        "a second LoadBalancer on web-lb's port got an ingress: {:?} {:?}; web-lb: {:?} {:?}\n{}",
        clash.metadata,
        clash.status,
        web_lb.metadata,
        web_lb.status,
        master.log_tail()
    );
    let table = String::from_utf8_lossy(&ctl(&api, &["get", "svc", "clash"]).stdout).into_owned();
    assert!(table.contains("<pending>"), "{table}");

    // loadBalancerSourceRanges: a range without the LAN host keeps it out;
    // naming it lets it in.
    let firewalled = |range: &str| {
        service(
            "web-fw",
            "LoadBalancer",
            "{port: 8090, targetPort: 8080}",
            &format!("  loadBalancerSourceRanges: [\"{range}\"]\n"),
        )
    };
    apply_yaml(&api, dir.path(), "web-fw", &firewalled("192.0.2.0/24"))?;
    wait_for("web-fw's ingress", SETTLE, || async {
        let s = get_service(&master, "web-fw").await?;
        (!ingress_of(&s).is_empty()).then_some(())
    })
    .await
    .with_context(logs)?;
    // Long enough for the agents to have the rules (the open ports above
    // came within a second or two).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fetch_from(&lan, &format!("{node_a}:8090")),
        None,
        "a source outside loadBalancerSourceRanges got in"
    );
    apply_yaml(
        &api,
        dir.path(),
        "web-fw",
        &firewalled(&format!("{}/32", lan.ip)),
    )?;
    let address = format!("{node_a}:8090");
    wait_for("web-fw open to the LAN host", SETTLE, || async {
        fetch_from(&lan, &address).filter(|page| page.contains("page-web"))
    })
    .await
    .with_context(logs)?;

    // spec.externalIPs: node A's address, at the Service's own port.
    apply_yaml(
        &api,
        dir.path(),
        "web-ext",
        &service(
            "web-ext",
            "ClusterIP",
            "{port: 8091, targetPort: 8080}",
            &format!("  externalIPs: [\"{node_a}\"]\n"),
        ),
    )?;
    let address = format!("{node_a}:8091");
    wait_for("web-ext on its external address", SETTLE, || async {
        fetch_from(&lan, &address).filter(|page| page.contains("page-web"))
    })
    .await
    .with_context(logs)?;

    // sessionAffinity: ClientIP: two pods, one per node, each answering its
    // own name; every fetch of the LAN host lands on the same one (without
    // affinity, ten in a row on one of two would happen once in 500).
    for (name, node) in [("sticky-a", 0), ("sticky-b", 1)] {
        let pod = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: sticky}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node_name}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /w && echo page-{name} > /w/index.html && exec httpd -f -p 8080 -h /w"]
"#,
            node_name = nodes[node].agent.node_name
        );
        apply_yaml(&api, dir.path(), name, &pod)?;
    }
    apply_yaml(
        &api,
        dir.path(),
        "sticky",
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  type: NodePort\n  selector: {app: sticky}\n  sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]\n",
    )?;
    wait_for("sticky's two endpoints", SETTLE, || async {
        (ready_endpoints(&master, "sticky").await == 2).then_some(())
    })
    .await
    .with_context(logs)?;
    let address = format!("{node_a}:30081");
    let first = wait_for("sticky's nodePort", SETTLE, || async {
        fetch_from(&lan, &address).filter(|page| page.contains("page-sticky-"))
    })
    .await
    .with_context(logs)?;
    for _ in 0..10 {
        let page = fetch_from(&lan, &address);
        assert_eq!(
            page.as_deref(),
            Some(first.as_str()),
            "ClientIP affinity moved the LAN host to another pod"
        );
    }

    // A master outage: the nodes keep answering the nodePort, the load
    // balancer and cluster DNS from what they last knew.
    let web_np = get_service(&master, "web-np").await.context("web-np")?;
    let cluster_ip = services::cluster_ip(&web_np).to_owned();
    let web_uid = match skiff_objects::pods::in_model(
        master.client().get(Kind::Pod, "default", "web").await?,
    )
    .kind
    {
        Some(Body::Pod(p)) => p.metadata.map(|m| m.uid).unwrap_or_default(),
        _ => String::new(),
    };
    anyhow::ensure!(!cluster_ip.is_empty() && !web_uid.is_empty());
    let web_netns = nodes[0].data_dir().join("netns").join(&web_uid);
    let master_log = master.log_tail();
    master.kill();
    // Long enough for the agents to have seen their watches end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for address in [
        format!("{node_a}:30080"),
        format!("{node_b}:30080"),
        format!("{node_a}:8090"),
    ] {
        let page = fetch_from(&lan, &address);
        assert!(
            page.as_deref().is_some_and(|p| p.contains("page-web")),
            "{address} stopped answering with the master down: {page:?}\n{master_log}\n{}",
            nodes[0].log_tail()
        );
    }
    // From the web pod's own network, at the cluster DNS address, as its
    // resolv.conf says.
    let lookup = std::process::Command::new("nsenter")
        .arg(format!("--net={}", web_netns.display()))
        .args([
            "timeout",
            "4",
            "busybox",
            "nslookup",
            "web-np.default.svc.cluster.local",
            "10.43.0.10",
        ])
        .output()?;
    let answer = String::from_utf8_lossy(&lookup.stdout).into_owned();
    assert!(
        lookup.status.success() && answer.contains(&cluster_ip),
        "cluster DNS with the master down: {answer}{}\n{}",
        String::from_utf8_lossy(&lookup.stderr),
        nodes[0].log_tail()
    );
    Ok(())
}
