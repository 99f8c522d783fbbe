//! `overlay`: TCP throughput pod-to-pod across two network-namespace test
//! hosts on one segment, next to host-to-host on the same underlay, both
//! measured with iperf3 in the same run. `--mode vxlan` (veth → routed →
//! VXLAN → underlay → VXLAN → routed → veth) or `--mode host-gw` (veth →
//! routed to the peer's node IP → routed → veth); the agents run
//! with that `--pod-network`. iperf3 runs inside the pods' network
//! namespaces (the path under test), so the pods need no iperf3 in their
//! image. In host-gw (and auto) mode the same run also measures the
//! kernel's own routed pod path with no skiff on it, laid out as flannel's
//! host-gw is (and skiff's was): a stand-in pod behind a plain bridge on
//! each host,
//! routed via the other host's address ([`Underlay::add_bare_pod`]).

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{start_host_nodes_with, RuntimeNode};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::wait_for;
use skiff_objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

use super::common::round;

#[derive(Debug, clap::Args)]
pub struct OverlayArgs {
    /// Seconds per iperf3 measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Measurements of each path, alternating host and pod.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// The agents' `--pod-network`: vxlan, host-gw or auto (on one
    /// segment auto routes as host-gw does).
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw", "auto"])]
    pub mode: String,
}

const IMAGE: &str = "bench/busybox:1";

/// A pod that only sleeps (its network namespace is what is measured),
/// pinned to `node`.
pub(super) fn sleeper(name: &str, node: &str) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            node_selector: [("kubernetes.io/hostname".to_string(), node.to_string())].into(),
            termination_grace_period_seconds: Some(1),
            containers: vec![v1::Container {
                name: "main".into(),
                image: IMAGE.into(),
                image_pull_policy: "Never".into(),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Gbit/s from `iperf3 -c` run in `client_ns` against a server in
/// `server_ns` listening on `server_ip`.
fn iperf(server_ns: &str, client_ns: &str, server_ip: &str, seconds: u32) -> anyhow::Result<f64> {
    let port = skiff_e2e::free_port();
    iperf_through(
        server_ns,
        port,
        client_ns,
        server_ip,
        port,
        seconds,
        Flow::ClientToServer,
    )
}

/// Which way iperf3's data flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// The client sends (iperf3's default).
    ClientToServer,
    /// The server sends (`-R`). At a test's end iperf3's server closes its
    /// data socket at once; when it is the receiver and a relay still holds
    /// data for it, that close is a reset, which a relay must report (as
    /// `kubectl port-forward` does, ending the whole forward). As the
    /// sender its close is an orderly end of file.
    ServerToClient,
}

/// Gbit/s from `iperf3 -c` run in `client_ns` against
/// `target_ip:target_port`, which leads (directly or translated) to a
/// server started in `server_ns` on `listen_port`.
pub(super) fn iperf_through(
    server_ns: &str,
    listen_port: u16,
    client_ns: &str,
    target_ip: &str,
    target_port: u16,
    seconds: u32,
    flow: Flow,
) -> anyhow::Result<f64> {
    let (listen, port) = (listen_port.to_string(), target_port.to_string());
    let seconds = seconds.to_string();
    let mut client_args = vec!["iperf3", "-J", "-c", target_ip, "-p", &port, "-t", &seconds];
    if flow == Flow::ServerToClient {
        client_args.push("-R");
    }
    let mut server = Command::new("nsenter")
        .arg(format!("--net={server_ns}"))
        .args(["iperf3", "-s", "-1", "-p", &listen])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start iperf3 server")?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("nsenter")
        .arg(format!("--net={client_ns}"))
        .args(&client_args)
        .output()
        .context("run iperf3 client");
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    anyhow::ensure!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report without end.sum_received")?;
    Ok(bps / 1e9)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let middle = match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    round(middle)
}

pub async fn run(args: OverlayArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "overlay builds network namespaces: run it as root with iproute2, iperf3, nftables and containerd installed"
    );
    let mut underlay = Underlay::new()?;
    let hosts = [underlay.add_host(2)?, underlay.add_host(3)?];
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let nodes = start_host_nodes_with(&master.api_addr, &hosts, IMAGE, &args.mode).await?;
    let client = master.client();
    client
        .create(sleeper("iperf-server", &nodes[0].agent.node_name).into_object())
        .await?;
    client
        .create(sleeper("iperf-client", &nodes[1].agent.node_name).into_object())
        .await?;
    let mut pods = Vec::new();
    for name in ["iperf-server", "iperf-client"] {
        let pod = wait_for(
            &format!("{name} running"),
            Duration::from_secs(60),
            || async {
                match skiff_objects::pods::in_model(
                    client.get(Kind::Pod, "default", name).await.ok()?,
                )
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
            },
        )
        .await?;
        pods.push(pod);
    }
    let netns_of = |pod: &v1::Pod, node: &RuntimeNode| {
        node.data_dir()
            .join("netns")
            .join(&pod.metadata.as_ref().unwrap().uid)
            .display()
            .to_string()
    };
    let server_pod_ns = netns_of(&pods[0], &nodes[0]);
    let client_pod_ns = netns_of(&pods[1], &nodes[1]);
    let server_pod_ip = pods[0].status.as_ref().unwrap().pod_ip.clone();
    let host_ns = |i: usize| format!("/run/netns/{}", hosts[i].netns);
    // The path is the one named: in host-gw mode the server's subnet is
    // routed via its node IP, with no VXLAN device on the client's host.
    if args.mode != "vxlan" {
        let route = Command::new("ip")
            .args(["-n", &hosts[1].netns, "route", "get", &server_pod_ip])
            .output()?;
        let route = String::from_utf8_lossy(&route.stdout);
        anyhow::ensure!(
            route.contains(&format!("via {} dev eth0", hosts[0].ip)),
            "pod traffic is not routed directly: {route}"
        );
    }

    // The kernel's own routed pod path beside skiff's, in host-gw mode.
    let bare = if args.mode == "vxlan" {
        None
    } else {
        let pods = [
            underlay.add_bare_pod(&hosts[0], 1)?,
            underlay.add_bare_pod(&hosts[1], 2)?,
        ];
        Underlay::add_route(&hosts[0], "10.99.2.0/24", &hosts[1].ip)?;
        Underlay::add_route(&hosts[1], "10.99.1.0/24", &hosts[0].ip)?;
        Some(pods)
    };

    let (mut underlay_runs, mut overlay_runs, mut bare_runs) = (Vec::new(), Vec::new(), Vec::new());
    let host_path = || iperf(&host_ns(0), &host_ns(1), &hosts[0].ip, args.seconds);
    let pod_path = || iperf(&server_pod_ns, &client_pod_ns, &server_pod_ip, args.seconds);
    let bare_path = |bare: &[TestHost; 2]| {
        let [server, client] = bare;
        iperf(
            &format!("/run/netns/{}", server.netns),
            &format!("/run/netns/{}", client.netns),
            &server.ip,
            args.seconds,
        )
    };
    for round_no in 0..args.rounds {
        // Every other round runs the paths in the opposite order, so that
        // whatever favours the first (or last) measurement of a round
        // favours each path alike.
        let (u, o, b) = if round_no % 2 == 0 {
            let (u, o) = (host_path()?, pod_path()?);
            (u, o, bare.as_ref().map(bare_path).transpose()?)
        } else {
            let b = bare.as_ref().map(bare_path).transpose()?;
            let o = pod_path()?;
            (host_path()?, o, b)
        };
        eprintln!(
            "round {}: host-to-host {u:.2} Gbit/s, pod-to-pod {o:.2} Gbit/s{}",
            round_no + 1,
            b.map(|b| format!(", bare routed pod-to-pod {b:.2} Gbit/s"))
                .unwrap_or_default()
        );
        underlay_runs.push(u);
        overlay_runs.push(o);
        bare_runs.extend(b);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let unrounded_ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let ratio = |a: f64, b: f64| round(unrounded_ratio(a, b));
    let round_ratios: Vec<f64> = underlay_runs
        .iter()
        .zip(&overlay_runs)
        .map(|(u, o)| unrounded_ratio(*o, *u))
        .collect();
    let (u, o) = (mean(&underlay_runs), mean(&overlay_runs));
    let target = if args.mode == "vxlan" { 0.8 } else { 0.95 };
    let mut report = serde_json::json!({
        "scenario": "overlay",
        "mode": args.mode,
        "underlay_gbps": round(u),
        "overlay_gbps": round(o),
        "ratio": ratio(o, u),
        // Each round's own pod/host ratio (the two measured seconds
        // apart) and their median: on a shared machine whose rate drifts
        // from minute to minute, these show how much of a gap is noise.
        "round_ratios": round_ratios.iter().map(|r| round(*r)).collect::<Vec<_>>(),
        "median_round_ratio": median(round_ratios),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "target_ratio": target,
    });
    if !bare_runs.is_empty() {
        let b = mean(&bare_runs);
        report["bare_routed_gbps"] = serde_json::json!(round(b));
        report["bare_ratio"] = serde_json::json!(ratio(b, u));
        report["ratio_to_bare"] = serde_json::json!(ratio(o, b));
    }
    Ok(report)
}
