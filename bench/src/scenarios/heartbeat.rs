//! `heartbeat`: many hollow nodes heartbeating once a second to one
//! master; its CPU and memory while nothing else happens.

use std::time::{Duration, Instant};

use skiff_e2e::hollow::{HollowConfig, HollowFleet};

use super::common::{ready_nodes, round, round_fine, start_fleet, wait_nodes_ready, BenchMaster};

#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    #[arg(long, default_value_t = 2000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<serde_json::Value> {
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let _nodes = start_fleet(&fleet, args.nodes, HollowConfig::default()).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;
    // Let registration settle before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "{} nodes Ready; measuring for {}s",
        args.nodes, args.seconds
    );
    let before = master.sample()?;
    let beats_before = fleet
        .heartbeats_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = master.sample()?;
    let beats = fleet
        .heartbeats_sent
        .load(std::sync::atomic::Ordering::Relaxed)
        - beats_before;
    let ready = ready_nodes(&master.client).await?;
    Ok(serde_json::json!({
        "scenario": "heartbeat",
        "nodes": args.nodes,
        "seconds": args.seconds,
        "ready_nodes": ready,
        "heartbeats_per_sec": round(beats as f64 / elapsed),
        "master_cpu_cores": round_fine((after.cpu_seconds - before.cpu_seconds) / elapsed),
        "master_rss_mib": round(after.rss_bytes as f64 / 1048576.0),
    }))
}
