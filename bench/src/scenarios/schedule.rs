//! `schedule`: pods created as fast as 64 clients can, bound by the
//! scheduler onto hollow nodes. Times come from a watch in this process:
//! when each pod appeared and when its binding was committed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;
use skiff_proto::v1;

use super::common::{round, small_container, start_fleet, wait_nodes_ready, BenchMaster};
use crate::latency::Latencies;

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Concurrent pod creators.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
}

pub async fn run(args: ScheduleArgs) -> anyhow::Result<serde_json::Value> {
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let _nodes = start_fleet(&fleet, args.nodes, HollowConfig::default()).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;
    eprintln!("{} nodes Ready; creating {} pods", args.nodes, args.pods);

    let from = master.client.list(Kind::Pod, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Pod, "default", from).await?;
    let want = args.pods;
    let watcher = tokio::spawn(async move {
        let mut created: HashMap<String, Instant> = HashMap::new();
        let mut bind = Latencies::default();
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while bind.len() < want {
            let Ok(Some(event)) = watch.next().await else {
                break;
            };
            let Some(Body::Pod(pod)) = event
                .object
                .map(skiff_objects::pods::in_model)
                .and_then(|o| o.kind)
            else {
                continue;
            };
            let name = pod
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
            let now = Instant::now();
            if event.r#type == EventType::Added as i32 {
                first.get_or_insert(now);
                created.insert(name.clone(), now);
            }
            if bound {
                if let Some(t) = created.remove(&name) {
                    bind.push(now - t);
                    last = now;
                }
            }
        }
        (bind, first, last)
    });

    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let client = master.client.clone();
        let count = args.pods / args.clients + usize::from(c < args.pods % args.clients);
        creators.spawn(async move {
            let mut errors = 0;
            for i in 0..count {
                let pod = v1::Pod {
                    metadata: Some(v1::ObjectMeta {
                        name: format!("sched-{c}-{i}"),
                        ..Default::default()
                    }),
                    spec: Some(v1::PodSpec {
                        containers: vec![small_container()],
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                if client.create(pod.into_object()).await.is_err() {
                    errors += 1;
                }
            }
            errors
        });
    }
    let mut errors = 0;
    while let Some(done) = creators.join_next().await {
        errors += done?;
    }
    let created_in = started.elapsed();
    eprintln!(
        "{} pods created in {:.1}s; waiting for bindings",
        args.pods,
        created_in.as_secs_f64()
    );
    let (bind, first, last) = tokio::time::timeout(Duration::from_secs(600), watcher).await??;
    let span = first.map(|f| last.duration_since(f)).unwrap_or_default();
    let bound = bind.len();
    Ok(serde_json::json!({
        "scenario": "schedule",
        "nodes": args.nodes,
        "pods": args.pods,
        "create_errors": errors,
        "bound": bound,
        "seconds": round(span.as_secs_f64()),
        "pods_per_sec": round(bound as f64 / span.as_secs_f64().max(1e-9)),
        "create_seconds": round(created_in.as_secs_f64()),
        "p50_bind_ms": round(bind.percentile_ms(50.0)),
        "p99_bind_ms": round(bind.percentile_ms(99.0)),
        "master_rss_mib": round(master.sample()?.rss_bytes as f64 / 1048576.0),
    }))
}
