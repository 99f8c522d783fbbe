//! `daemonset`: a DaemonSet created on a cluster of hollow nodes. Times
//! come from a pod watch in this process: from the create to a pod bound on
//! every node (the target: all 500 within 5 s), and to every one of them
//! reported Running.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_objects::manifest::parse_manifest;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;

use super::common::{round, start_fleet, wait_nodes_ready, BenchMaster};

/// What the scenario aims for: every node's pod bound within this long.
const TARGET: Duration = Duration::from_secs(5);

const DAEMON_SET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: bench-agent, namespace: default}
spec:
  selector: {matchLabels: {app: bench-agent}}
  template:
    metadata: {labels: {app: bench-agent}}
    spec:
      containers:
      - name: agent
        image: registry.local/agent:1.0
        resources: {requests: {cpu: 10m, memory: 16Mi}}
"#;

#[derive(Debug, clap::Args)]
pub struct DaemonsetArgs {
    /// Hollow nodes, each to get one pod.
    #[arg(long, default_value_t = 500)]
    pub nodes: usize,
}

pub async fn run(args: DaemonsetArgs) -> anyhow::Result<serde_json::Value> {
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let _nodes = start_fleet(&fleet, args.nodes, HollowConfig::default()).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;
    eprintln!("{} nodes Ready; creating the DaemonSet", args.nodes);

    let mut manifest = parse_manifest("daemonset.yaml", DAEMON_SET, true)?;
    let daemon_set = manifest.objects.pop().context("the DaemonSet manifest")?;
    let from = master.client.list(Kind::Pod, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Pod, "default", from).await?;
    let created = Instant::now();
    master.client.create(daemon_set).await?;
    let want = args.nodes;
    let followed = tokio::time::timeout(Duration::from_secs(300), async move {
        let mut bound: HashSet<String> = HashSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut all_bound = None;
        while running.len() < want {
            let event = watch.next().await?.context("the pod watch ended")?;
            let Some(Body::Pod(pod)) = event
                .object
                .map(skiff_objects::pods::in_model)
                .and_then(|o| o.kind)
            else {
                continue;
            };
            let node = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
            if !node.is_empty() && bound.insert(node.to_owned()) && bound.len() == want {
                all_bound = Some(created.elapsed());
            }
            let name = pod.metadata.map(|m| m.name).unwrap_or_default();
            if pod.status.is_some_and(|s| s.phase == "Running") {
                running.insert(name);
            }
        }
        anyhow::Ok((bound.len(), all_bound, created.elapsed()))
    })
    .await;
    let (bound, all_bound, all_running) = followed.context("not all pods ran within 300 s")??;
    let bound_in = all_bound.unwrap_or(all_running);
    eprintln!(
        "{bound} pods bound {:.2}s after the create, all Running after {:.2}s",
        bound_in.as_secs_f64(),
        all_running.as_secs_f64()
    );
    Ok(serde_json::json!({
        "scenario": "daemonset",
        "nodes": args.nodes,
        "bound": bound,
        "seconds_to_all_bound": round(bound_in.as_secs_f64()),
        "seconds_to_all_running": round(all_running.as_secs_f64()),
        "target_seconds": TARGET.as_secs_f64(),
        "within_target": bound_in <= TARGET,
        "master_rss_mib": round(master.sample()?.rss_bytes as f64 / 1048576.0),
    }))
}
