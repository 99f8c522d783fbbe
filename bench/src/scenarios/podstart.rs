//! `podstart`: pods on a real node (private containerd + `skiff agent`),
//! timed from the Create call to the moment a watch sees the pod Running
//! with its container started. The busybox image is imported from an
//! archive first, so the figure is pod start, not image pull. Pods are
//! created at `--rate` per second (0: all at once), as Kubernetes' density
//! tests pace them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_master::objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

use super::common::{round, BenchMaster};
use crate::latency::Latencies;

#[derive(Debug, clap::Args)]
pub struct PodstartArgs {
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// Pods created per second; 0 creates them all at once.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
}

const IMAGE: &str = "bench/busybox:1";

fn pod(name: &str) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "podstart".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            termination_grace_period_seconds: Some(1),
            containers: vec![v1::Container {
                name: "main".into(),
                image: IMAGE.into(),
                image_pull_policy: "IfNotPresent".into(),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.container_statuses
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
    })
}

pub async fn run(args: PodstartArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.pods > 0, "--pods must be at least 1");
    anyhow::ensure!(args.rate >= 0.0, "--rate must not be negative");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "podstart runs containers: run it as root with containerd and runc installed"
    );
    let master = BenchMaster::start(&[]).await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.process.api_addr,
        "bench-node",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    wait_node_ready(&master.client, "bench-node", Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;

    let from = master.client.list(Kind::Pod, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Pod, "default", from).await?;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = watch.next().await {
            if let Some(Body::Pod(p)) = event.object.and_then(|o| o.kind) {
                if running(&p) {
                    let name = p.metadata.map(|m| m.name).unwrap_or_default();
                    if seen_tx.send((name, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    });

    eprintln!("creating {} pods at {} per second", args.pods, args.rate);
    let started = Instant::now();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..args.pods {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let name = format!("podstart-{i:04}");
        let client = master.client.clone();
        let object = pod(&name).into_object();
        creating.spawn(async move {
            let at = Instant::now();
            client.create(object).await.map(|_| (name, at))
        });
    }
    while let Some(done) = creating.join_next().await {
        let (name, at) = done??;
        created.insert(name, at);
    }

    let mut latencies = Latencies::default();
    let mut done: HashMap<String, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while done.len() < args.pods {
        let next = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {} pods running after 120 s\n{}",
                    done.len(),
                    args.pods,
                    node.log_tail()
                )
            })?;
        let Some((name, at)) = next else { break };
        if done.contains_key(&name) {
            continue;
        }
        if let Some(created_at) = created.get(&name) {
            let latency = at.saturating_duration_since(*created_at);
            done.insert(name, latency);
            latencies.push(latency);
        }
    }
    let total = started.elapsed();
    watcher.abort();
    let running_tasks = node.task_pids()?.len();
    // A slow pod explains itself: its name, and what the agent warned of.
    let mut slow: Vec<_> = done
        .iter()
        .filter(|(_, l)| **l > Duration::from_millis(500))
        .collect();
    slow.sort();
    if !slow.is_empty() {
        for (name, latency) in &slow {
            eprintln!("slow: {name} took {} ms", latency.as_millis());
        }
        for line in node.agent.log().lines().filter(|l| l.contains("WARN")) {
            eprintln!("agent: {line}");
        }
    }
    eprintln!(
        "{} pods running in {:.1}s; containerd runs {running_tasks} tasks",
        done.len(),
        total.as_secs_f64()
    );
    Ok(serde_json::json!({
        "scenario": "podstart",
        "pods": args.pods,
        "rate_per_sec": args.rate,
        "running": done.len(),
        "p50_ms": round(latencies.percentile_ms(50.0)),
        "p99_ms": round(latencies.percentile_ms(99.0)),
        "max_ms": round(latencies.percentile_ms(100.0)),
        "total_s": round(total.as_secs_f64()),
        "target_p99_ms": 1000,
    }))
}
