//! `store`: throughput and latency of fsynced writes to a Raft cluster of
//! real masters. Each client creates Services as fast as its previous create is
//! acknowledged; every acknowledgement means the entry was fsynced on a
//! quorum and applied.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::master::MasterCluster;
use skiff_master::objects::IntoObject;
use skiff_proto::v1;

use crate::latency::Latencies;
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Masters in the cluster (1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Total writes across all clients.
    #[arg(long, default_value_t = 20_000)]
    pub writes: usize,
    /// Keep the temp dir (data and master logs) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// A Service without a selector: a typical small object that no
/// controller reacts to, so the figures are the store's alone.
fn service(name: String) -> skiff_proto::api::Object {
    v1::Service {
        metadata: Some(v1::ObjectMeta {
            name,
            labels: [("app".to_owned(), "bench".to_owned())].into(),
            ..Default::default()
        }),
        spec: Some(v1::ServiceSpec {
            ports: vec![v1::ServicePort {
                name: "http".to_owned(),
                port: 80,
                target_port: "8080".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_object()
}

pub async fn run(args: StoreArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.masters >= 1, "--masters must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        args.writes >= args.clients,
        "--writes must be at least --clients"
    );
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    eprintln!(
        "starting {} masters under {}",
        args.masters,
        dir.path().display()
    );
    let cluster = MasterCluster::start_in(dir.path(), args.masters, &[]).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.masters[leader].api_addr.clone();
    let pids: Vec<u32> = cluster.masters.iter().filter_map(|m| m.pid()).collect();
    eprintln!(
        "leader is {leader_addr}; {} clients, {} writes",
        args.clients, args.writes
    );

    let before: Vec<_> = pids
        .iter()
        .map(|p| proc_stats::sample(Path::new("/proc"), *p))
        .collect::<Result<_, _>>()
        .context("reading master CPU time")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = skiff_e2e::credentials::admin_client(&leader_addr)?;
        let count = args.writes / args.clients + usize::from(c < args.writes % args.clients);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut errors = 0usize;
            for i in 0..count {
                let t = Instant::now();
                match client.create(service(format!("bench-{c}-{i}"))).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("client {c}: {e}");
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    let after: Vec<_> = pids
        .iter()
        .map(|p| proc_stats::sample(Path::new("/proc"), *p))
        .collect::<Result<_, _>>()
        .context("reading master CPU time")?;
    let cpu: f64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
        .sum();
    let max_rss = after.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    let acked = latencies.len();
    let report = serde_json::json!({
        "scenario": "store",
        "masters": args.masters,
        "clients": args.clients,
        "writes": args.writes,
        "acknowledged": acked,
        "errors": errors,
        "seconds": round(elapsed.as_secs_f64()),
        "writes_per_sec": round(acked as f64 / elapsed.as_secs_f64()),
        "p50_ms": round(latencies.percentile_ms(50.0)),
        "p99_ms": round(latencies.percentile_ms(99.0)),
        "max_ms": round(latencies.percentile_ms(100.0)),
        "masters_cpu_cores": round(cpu / elapsed.as_secs_f64()),
        "max_master_rss_mib": round(max_rss as f64 / (1024.0 * 1024.0)),
        "fsync_before_ack": true,
    });
    drop(cluster);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if args.keep {
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(report)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
