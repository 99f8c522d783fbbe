//! `idle`: a small cluster where nothing changes. What the master writes to
//! disk (flash wear) and the CPU it uses.

use std::path::Path;
use std::time::{Duration, Instant};

use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_objects::IntoObject;

use super::common::{
    deployment, round, round_fine, start_fleet, wait_nodes_ready, wait_pods_running, BenchMaster,
};
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Pods running while idle.
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<serde_json::Value> {
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let _nodes = start_fleet(&fleet, args.nodes, HollowConfig::default()).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(60)).await?;
    master
        .client
        .create(deployment("idle", args.pods as i32).into_object())
        .await?;
    wait_pods_running(&master.client, args.pods, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("cluster settled; measuring for {}s", args.seconds);
    let pid = master.pid();
    let before_io = proc_stats::write_bytes(Path::new("/proc"), pid)?;
    let before = master.sample()?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after_io = proc_stats::write_bytes(Path::new("/proc"), pid)?;
    let after = master.sample()?;
    Ok(serde_json::json!({
        "scenario": "idle",
        "nodes": args.nodes,
        "pods": args.pods,
        "seconds": args.seconds,
        "master_write_bytes": after_io - before_io,
        "master_write_bytes_per_min": round((after_io - before_io) as f64 * 60.0 / elapsed),
        "master_cpu_cores": round_fine((after.cpu_seconds - before.cpu_seconds) / elapsed),
        "master_rss_mib": round(after.rss_bytes as f64 / 1048576.0),
    }))
}
