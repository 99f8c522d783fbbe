//! `nodeport`: TCP throughput through a NodePort and a LoadBalancer next
//! to straight to the pod, all measured with iperf3 in the same run (issue
//! 18 asks for ≥ 0.9 ×). Two network-namespace test hosts run real agents;
//! the iperf3 server runs in a pod's network namespace on node A, behind
//! one Service of type LoadBalancer (which has a nodePort too); the client
//! runs on a third test host with no agent (the LAN), in each round to the
//! pod's address (through a route to node A's pod subnet via node A), to
//! node A's address at the nodePort, and to node A's address at the
//! Service's own port once node A is in its `status.loadBalancer.ingress`
//! (the built-in ServiceLB). All go over the same wire and bridge; the
//! last two also through the Service rules (DNAT, the masquerade mark and
//! masquerade of Cluster policy).

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::start_host_nodes;
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::wait_for;
use skiff_objects::{services, IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::common::round;
use super::overlay::{iperf_through, sleeper, Flow};

#[derive(Debug, clap::Args)]
pub struct NodeportArgs {
    /// Seconds per iperf3 measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Measurements of each path, alternating direct and NodePort.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
}

const IMAGE: &str = "bench/busybox:1";
/// Where iperf3 listens in the pod, and the Service's port.
const IPERF_PORT: u16 = 5201;
/// The Service's own port, where the load balancer answers (another
/// than the pod's, so that the measured path is the Service's mapping).
const SERVICE_PORT: u16 = 7201;
/// The server pod's label, which the Service selects.
const APP: &str = "iperf-nodeport";

fn node_port_service() -> Object {
    let meta = v1::ObjectMeta {
        name: APP.into(),
        namespace: "default".into(),
        ..Default::default()
    };
    let spec = services::ServiceSpec {
        type_: Some("LoadBalancer".into()),
        selector: Some([("app".to_owned(), APP.to_owned())].into()),
        ports: Some(vec![services::ServicePort {
            port: i32::from(SERVICE_PORT),
            target_port: Some(services::IntOrString::Int(i32::from(IPERF_PORT))),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    services::object(meta, spec, None)
}

pub async fn run(args: NodeportArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "nodeport builds network namespaces: run it as root with iproute2, iperf3, nftables and containerd installed"
    );
    let mut underlay = Underlay::new()?;
    let hosts = [underlay.add_host(2)?, underlay.add_host(3)?];
    let lan = underlay.add_host(100)?;
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let nodes = start_host_nodes(&master.api_addr, &hosts, IMAGE).await?;
    let client = master.client();
    let node_a = nodes[0].agent.node_name.clone();
    let mut server = sleeper("iperf-server", &node_a);
    if let Some(meta) = server.metadata.as_mut() {
        meta.labels = [("app".to_owned(), APP.to_owned())].into();
    }
    client.create(server.into_object()).await?;
    let created = client.create(node_port_service()).await?;
    let node_port = services::read(&created)
        .and_then(|s| services::ports(&s).first().map(services::node_port))
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .context("the Service was given no nodePort")?;
    let pod = wait_for("iperf-server running", Duration::from_secs(60), || async {
        match client
            .get(Kind::Pod, "default", "iperf-server")
            .await
            .ok()
            .map(skiff_objects::pods::in_model)?
            .kind
        {
            Some(Body::Pod(p))
                if p.status
                    .as_ref()
                    .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty()) =>
            {
                Some(p)
            }
            _ => None,
        }
    })
    .await?;
    let pod_ip = pod
        .status
        .as_ref()
        .map(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let uid = pod
        .metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default();
    let server_ns = nodes[0]
        .data_dir()
        .join("netns")
        .join(uid)
        .display()
        .to_string();
    // The LAN host reaches node A's pods through node A, as a LAN router
    // with a static route would.
    let pod_cidr = match client.get(Kind::Node, "", &node_a).await?.kind {
        Some(Body::Node(n)) => n.spec.map(|s| s.pod_cidr).unwrap_or_default(),
        _ => String::new(),
    };
    anyhow::ensure!(!pod_cidr.is_empty(), "node {node_a} has no pod subnet");
    let route = std::process::Command::new("ip")
        .args([
            "netns", "exec", &lan.netns, "ip", "route", "replace", &pod_cidr, "via",
        ])
        .arg(&hosts[0].ip)
        .status()?;
    anyhow::ensure!(
        route.success(),
        "cannot route {pod_cidr} via node A from the LAN host"
    );
    let lan_ns = format!("/run/netns/{}", lan.netns);
    // The agent writes the rules once it sees the Endpoints: wait until
    // the nodePort carries a (short) measurement.
    let mut last_error = None;
    for _ in 0..20 {
        match iperf_through(
            &server_ns,
            IPERF_PORT,
            &lan_ns,
            &hosts[0].ip,
            node_port,
            1,
            Flow::ClientToServer,
        ) {
            Ok(_) => {
                last_error = None;
                break;
            }
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(e) = last_error {
        return Err(e.context(format!("the nodePort {node_port} never answered")));
    }
    let node_a_ip = hosts[0].ip.clone();
    wait_for(
        "node A in the load balancer's ingress",
        Duration::from_secs(30),
        || async {
            let object = client.get(Kind::Service, "default", APP).await.ok()?;
            let s = services::read(&object)?;
            let mut ingress = services::ingress_ips(&s);
            ingress.any(|ip| ip == node_a_ip).then_some(())
        },
    )
    .await?;

    let (mut direct_runs, mut node_port_runs, mut lb_runs) = (Vec::new(), Vec::new(), Vec::new());
    for round_no in 0..args.rounds {
        let through = |address: &str, port: u16| {
            iperf_through(
                &server_ns,
                IPERF_PORT,
                &lan_ns,
                address,
                port,
                args.seconds,
                Flow::ClientToServer,
            )
        };
        let d = through(&pod_ip, IPERF_PORT)?;
        let n = through(&node_a_ip, node_port)?;
        let l = through(&node_a_ip, SERVICE_PORT)?;
        eprintln!(
            "round {}: straight to the pod {d:.2} Gbit/s, through the nodePort {n:.2} Gbit/s, through the load balancer {l:.2} Gbit/s",
            round_no + 1
        );
        direct_runs.push(d);
        node_port_runs.push(n);
        lb_runs.push(l);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (d, n, l) = (mean(&direct_runs), mean(&node_port_runs), mean(&lb_runs));
    let ratio = |x: f64| round(if d > 0.0 { x / d } else { 0.0 });
    Ok(serde_json::json!({
        "scenario": "nodeport",
        "direct_gbps": round(d),
        "nodeport_gbps": round(n),
        "load_balancer_gbps": round(l),
        "ratio": ratio(n),
        "load_balancer_ratio": ratio(l),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "target_ratio": 0.9,
    }))
}
