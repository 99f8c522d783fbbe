//! `failover`: hollow nodes running a Deployment.
//!
//! - `--kill node` (the default): optionally a soak with lossy heartbeats
//!   (counting evictions that should not happen), then one node dies and we
//!   time its NotReady and the rescheduling of its pods.
//! - `--kill master`: three masters; optionally a soak (with `--busy`, both
//!   cores kept working) counting elections that should not happen, then
//!   the leader is killed `--kills` times (restarted in between) and we
//!   time, from each death, the first write a surviving master accepts and
//!   the controllers running again on the new leader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use skiff_e2e::cpu_load::CpuLoad;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_e2e::master::MasterCluster;
use skiff_objects::{IntoObject, Kind};
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
    /// What dies: a node, or the leading master.
    #[arg(long, value_enum, default_value_t = Victim::Node)]
    pub kill: Victim,
    /// With `--kill master`: how many times the leader is killed (10).
    #[arg(long)]
    pub kills: Option<usize>,
    /// Keep every core busy for the whole run (a loaded machine).
    #[arg(long)]
    pub busy: bool,
    /// With `--kill master`: a flag for every master, e.g.
    /// `--master-flag=--raft-election-timeout=500ms`; repeatable.
    #[arg(long = "master-flag", allow_hyphen_values = true)]
    pub master_flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Victim {
    Node,
    Master,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.heartbeat_loss),
        "--heartbeat-loss must be in [0, 1)"
    );
    if args.kill == Victim::Master {
        return master_kills(args).await;
    }
    anyhow::ensure!(
        args.kills.is_none() && args.master_flags.is_empty(),
        "--kills and --master-flag are for --kill master; a node is killed once"
    );
    let _load = args.busy.then(CpuLoad::all_cores);
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

/// Kills the leading master `--kills` times; see the module's header.
async fn master_kills(args: FailoverArgs) -> anyhow::Result<serde_json::Value> {
    let kills = args.kills.unwrap_or(10);
    anyhow::ensure!(kills >= 1, "--kills must be at least 1");
    let _load = args.busy.then(CpuLoad::all_cores);
    let flags: Vec<&str> = args.master_flags.iter().map(String::as_str).collect();
    let mut cluster = MasterCluster::start_with(3, &flags).await?;
    let addrs: Vec<String> = cluster.masters.iter().map(|m| m.api_addr.clone()).collect();
    let fleet = HollowFleet::new(addrs);
    let config = HollowConfig {
        heartbeat_loss: args.heartbeat_loss,
        ..Default::default()
    };
    let _nodes = start_fleet(&fleet, args.nodes, config).await?;
    let client = cluster.masters[0].client();
    wait_nodes_ready(&client, args.nodes, Duration::from_secs(60)).await?;
    client
        .create(deployment("failover", args.pods as i32).into_object())
        .await?;
    wait_pods_running(&client, args.pods, Duration::from_secs(120)).await?;
    eprintln!(
        "{} pods running on {} nodes, 3 masters",
        args.pods, args.nodes
    );

    let elections_before = elections(&cluster).await;
    if args.seconds > 0 {
        eprintln!("soaking for {}s", args.seconds);
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    }
    let false_elections = elections(&cluster).await - elections_before;

    let mut write_ms = Vec::new();
    let mut controllers_ms = Vec::new();
    for k in 0..kills {
        let leader = cluster.leader().await?;
        let survivors: Vec<_> = (0..cluster.masters.len())
            .filter(|&i| i != leader)
            .map(|i| {
                (
                    cluster.masters[i].client(),
                    cluster.masters[i].metrics_addr.clone(),
                )
            })
            .collect();
        let killed = Instant::now();
        cluster.masters[leader].kill();
        let (written, controllers) = tokio::join!(
            first_write(&survivors, k, killed),
            controllers_back(&survivors, killed)
        );
        let (written, controllers) = (written?, controllers?);
        eprintln!(
            "kill {}: first write after {} ms, controllers after {} ms",
            k + 1,
            written.as_millis(),
            controllers.as_millis()
        );
        write_ms.push(written.as_secs_f64() * 1000.0);
        controllers_ms.push(controllers.as_secs_f64() * 1000.0);
        cluster.masters[leader].restart()?;
        cluster.masters[leader]
            .wait_ready(Duration::from_secs(30))
            .await?;
        // Let the restarted master catch up before the next kill.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (round(v[v.len() / 2]), round(v[v.len() - 1]))
    };
    let (write_p50, write_max) = stats(&mut write_ms);
    let (controllers_p50, controllers_max) = stats(&mut controllers_ms);
    Ok(serde_json::json!({
        "scenario": "failover",
        "kill": "master",
        "busy": args.busy,
        "nodes": args.nodes,
        "pods": args.pods,
        "kills": kills,
        "master_flags": args.master_flags,
        "soak_seconds": args.seconds,
        "false_elections": false_elections,
        "first_write_ms_p50": write_p50,
        "first_write_ms_max": write_max,
        "controllers_ms_p50": controllers_p50,
        "controllers_ms_max": controllers_max,
    }))
}

/// Time from `killed` to the first write a surviving master accepts.
async fn first_write(
    survivors: &[(skiff_master::client::Client, String)],
    kill: usize,
    killed: Instant,
) -> anyhow::Result<Duration> {
    let deadline = killed + Duration::from_secs(60);
    for attempt in 0usize.. {
        let (client, _) = &survivors[attempt % survivors.len()];
        let meta = skiff_proto::v1::ObjectMeta {
            name: format!("failover-probe-{kill}-{attempt}"),
            namespace: "default".into(),
            ..Default::default()
        };
        let probe = skiff_objects::secrets::object(meta, "Opaque", Default::default());
        if client.create(probe).await.is_ok() {
            return Ok(killed.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "no write accepted within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unreachable!("the loop above returns")
}

/// Time from `killed` to a surviving master reporting its controllers
/// running (`skiff_controllers_running 1` on its /metrics).
async fn controllers_back(
    survivors: &[(skiff_master::client::Client, String)],
    killed: Instant,
) -> anyhow::Result<Duration> {
    let deadline = killed + Duration::from_secs(60);
    loop {
        for (_, metrics) in survivors {
            if metric(metrics, "skiff_controllers_running").await == Some(1.0) {
                return Ok(killed.elapsed());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "controllers not running within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Elections started, summed over the running masters.
async fn elections(cluster: &MasterCluster) -> f64 {
    let mut total = 0.0;
    for m in cluster.masters.iter().filter(|m| m.pid().is_some()) {
        total += metric(&m.metrics_addr, "skiff_raft_elections_total")
            .await
            .unwrap_or(0.0);
    }
    total
}

/// One unlabelled sample from a master's /metrics, off the runtime's
/// threads (the scrape is a blocking HTTP/1.1 GET).
async fn metric(addr: &str, name: &str) -> Option<f64> {
    let (addr, name) = (addr.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || skiff_e2e::metric_sample(&addr, &name))
        .await
        .ok()?
}
