//! `failover`: hollow nodes running a Deployment; optionally a soak with
//! lossy heartbeats (counting evictions that should not happen), then one
//! node dies and we time its NotReady and the rescheduling of its pods.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_master::objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;

use super::common::{
    deployment, node_of, pods, round, start_fleet, wait_nodes_ready, wait_pods_running, BenchMaster,
};

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    #[arg(long, default_value_t = 50)]
    pub nodes: usize,
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// Share of heartbeats dropped, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub heartbeat_loss: f64,
    /// Seconds of lossy running, counting false evictions, before a node
    /// is killed.
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.heartbeat_loss),
        "--heartbeat-loss must be in [0, 1)"
    );
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let config = HollowConfig {
        heartbeat_loss: args.heartbeat_loss,
        ..Default::default()
    };
    let mut nodes = start_fleet(&fleet, args.nodes, config).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(60)).await?;
    master
        .client
        .create(deployment("failover", args.pods as i32).into_object())
        .await?;
    wait_pods_running(&master.client, args.pods, Duration::from_secs(120)).await?;
    eprintln!("{} pods running on {} nodes", args.pods, args.nodes);

    // Count evictions and NotReady flips while nothing has failed.
    let from = master.client.list(Kind::Pod, "default").await?.revision;
    let mut pod_watch = master.client.watch(Kind::Pod, "default", from).await?;
    let node_from = master.client.list(Kind::Node, "").await?.revision;
    let mut node_watch = master.client.watch(Kind::Node, "", node_from).await?;
    let mut false_evictions = 0u64;
    let mut not_ready_flips = 0u64;
    if args.seconds > 0 {
        eprintln!(
            "soaking for {}s with {:.0}% heartbeat loss",
            args.seconds,
            args.heartbeat_loss * 100.0
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                e = pod_watch.next() => if let Ok(Some(e)) = e {
                    if e.r#type == EventType::Deleted as i32 { false_evictions += 1; }
                },
                e = node_watch.next() => if let Ok(Some(e)) = e {
                    if let Some(Body::Node(n)) = e.object.and_then(|o| o.kind) {
                        let unknown = n.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "Unknown"));
                        if unknown { not_ready_flips += 1; }
                    }
                },
            }
        }
    }

    // Kill the node running the most pods.
    let before = pods(&master.client).await?;
    let victim = {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for p in &before {
            *counts.entry(node_of(p).to_owned()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(n, _)| n)
            .unwrap_or_default()
    };
    let victims: BTreeSet<String> = before
        .iter()
        .filter(|p| node_of(p) == victim)
        .filter_map(|p| p.metadata.as_ref().map(|m| m.name.clone()))
        .collect();
    let index = nodes.iter().position(|n| n.name == victim).unwrap_or(0);
    eprintln!("killing {victim} with {} pods", victims.len());
    let killed = Instant::now();
    nodes[index].kill();
    let mut detect_ms = None;
    let mut rescheduled_ms = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while (detect_ms.is_none() || rescheduled_ms.is_none()) && Instant::now() < deadline {
        if detect_ms.is_none() {
            let n = master.client.get(Kind::Node, "", &victim).await?;
            if let Some(Body::Node(n)) = n.kind {
                let unknown = n.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.r#type == "Ready" && c.status == "Unknown")
                });
                if unknown {
                    detect_ms = Some(killed.elapsed().as_millis() as u64);
                }
            }
        }
        if rescheduled_ms.is_none() {
            let now = pods(&master.client).await?;
            let bound_alive = now
                .iter()
                .filter(|p| !node_of(p).is_empty() && node_of(p) != victim)
                .count();
            let victims_left = now.iter().any(|p| {
                p.metadata
                    .as_ref()
                    .is_some_and(|m| victims.contains(&m.name))
            });
            if bound_alive == args.pods && !victims_left {
                rescheduled_ms = Some(killed.elapsed().as_millis() as u64);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(serde_json::json!({
        "scenario": "failover",
        "nodes": args.nodes,
        "pods": args.pods,
        "heartbeat_loss": args.heartbeat_loss,
        "soak_seconds": args.seconds,
        "false_evictions": false_evictions,
        "not_ready_flips": not_ready_flips,
        "killed_node_pods": victims.len(),
        "detect_ms": detect_ms,
        "rescheduled_ms": rescheduled_ms,
        "seconds_measured": round(killed.elapsed().as_secs_f64()),
    }))
}
