//! `jobs`: Jobs run to completion on hollow nodes that report each pod
//! Succeeded (exit code 0) a short run after they report it Running
//! (`HollowConfig::complete_after`), so the figures are the master's: the
//! Job controller creating pods and counting their completions through the
//! tracking finalizer, the scheduler binding them, the store taking every
//! write. `--jobs` Jobs of `--completions` completions each are created by
//! `--clients` clients at once; a Job watch in this process times each Job
//! from its ADDED event to its `Complete` condition. Reported: Jobs and pod
//! completions per second over the run (the first create to the last
//! `Complete`), Job latency p50/p99, the master's CPU over the run (seconds,
//! and cores: seconds per second of the run) and its RSS at the end. Then
//! every Job is checked to have counted exactly its completions, each with
//! a pod of its own and no finalizer left; a Job that did not fails the run
//! (`"pass": false`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_master::controllers::job::model::{
    conditions, counter, holds as condition_holds, JobView, TRACKING_FINALIZER,
};
use skiff_objects::generic::JOB_NAME_LABEL;
use skiff_objects::manifest::parse_manifest;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;

use super::common::{pods, round, start_fleet, wait_nodes_ready, BenchMaster};
use crate::latency::Latencies;

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Jobs created.
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Completions of each Job.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub completions: u32,
    /// Pods of a Job running at once (default: all its completions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: Option<u32>,
    /// Hollow nodes the pods run on.
    #[arg(long, default_value_t = 50)]
    pub nodes: usize,
    /// How long each pod runs, in milliseconds, from Running to Succeeded.
    #[arg(long, default_value_t = 100)]
    pub run_ms: u64,
    /// Concurrent Job creators.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// How long every Job may take to complete, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
}

/// Job number `i` of the run.
fn job_name(i: usize) -> String {
    format!("bench-job-{i:05}")
}

fn job_yaml(name: &str, completions: u32, parallelism: u32) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
  completions: {completions}
  parallelism: {parallelism}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: registry.local/work:1.0
        resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#
    )
}

/// How the watch saw one Job end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Failed,
}

/// Whether `job` holds the condition `kind`.
fn holds(job: &JobView, kind: &str) -> bool {
    conditions(&job.status)
        .iter()
        .any(|c| c.type_ == kind && condition_holds(c))
}

pub async fn run(args: JobsArgs) -> anyhow::Result<serde_json::Value> {
    let parallelism = args.parallelism.unwrap_or(args.completions);
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let config = HollowConfig {
        complete_after: Some(Duration::from_millis(args.run_ms)),
        ..Default::default()
    };
    let _nodes = start_fleet(&fleet, args.nodes, config).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;
    eprintln!(
        "{} nodes Ready; creating {} Jobs of {} completions ({} at a time)",
        args.nodes, args.jobs, args.completions, parallelism
    );

    let mut objects = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        let name = job_name(i);
        let yaml = job_yaml(&name, args.completions, parallelism);
        let mut manifest = parse_manifest(&format!("{name}.yaml"), &yaml, true)?;
        objects.push(manifest.objects.pop().context("a Job manifest")?);
    }

    let from = master.client.list(Kind::Job, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Job, "default", from).await?;
    let want = args.jobs;
    let watcher = tokio::spawn(async move {
        let mut added: HashMap<String, Instant> = HashMap::new();
        let mut ended: BTreeMap<String, Ending> = BTreeMap::new();
        let mut latency = Latencies::default();
        let mut last = None;
        while ended.len() < want {
            let event = watch.next().await?.context("the Job watch ended")?;
            let Some(Body::Generic(object)) = event.object.and_then(|o| o.kind) else {
                continue;
            };
            let Ok(job) = JobView::read(&object) else {
                continue;
            };
            let now = Instant::now();
            if event.r#type == EventType::Added as i32 {
                added.entry(job.name.clone()).or_insert(now);
            }
            if ended.contains_key(&job.name) {
                continue;
            }
            let ending = if holds(&job, "Complete") {
                Ending::Complete
            } else if holds(&job, "Failed") {
                Ending::Failed
            } else {
                continue;
            };
            ended.insert(job.name.clone(), ending);
            if let Some(at) = added.get(&job.name) {
                latency.push(now - *at);
            }
            last = Some(now);
        }
        anyhow::Ok((ended, latency, last))
    });

    let before = master.sample()?;
    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    let clients = args.clients as usize;
    let mut shares: Vec<Vec<_>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, object) in objects.into_iter().enumerate() {
        shares[i % clients].push(object);
    }
    for share in shares {
        let client = master.client.clone();
        creators.spawn(async move {
            for object in share {
                client.create(object).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creators.join_next().await {
        done??;
    }
    let created_in = started.elapsed();
    eprintln!(
        "{} Jobs created in {:.1}s; waiting for them to finish",
        args.jobs,
        created_in.as_secs_f64()
    );
    let limit = Duration::from_secs(args.timeout_seconds);
    let (ended, latency, last) = tokio::time::timeout(limit, watcher)
        .await
        .with_context(|| format!("not every Job finished within {limit:?}"))???;
    let after = master.sample()?;
    let span = last.map_or(started.elapsed(), |l| l.duration_since(started));
    let seconds = span.as_secs_f64().max(1e-9);
    let cpu_seconds = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    let complete = ended.values().filter(|e| **e == Ending::Complete).count();
    let completions = complete * args.completions as usize;
    eprintln!(
        "{complete}/{} Jobs Complete after {seconds:.2}s: {:.1} Jobs/s, {:.1} pod completions/s; master CPU {cpu_seconds:.1}s",
        args.jobs,
        complete as f64 / seconds,
        completions as f64 / seconds,
    );

    let miscounted = check_counts(&master, args.completions).await?;
    let failure = (!miscounted.is_empty()).then(|| {
        format!(
            "jobs: {} Jobs did not count exactly {} completions, one pod each: {}",
            miscounted.len(),
            args.completions,
            miscounted.join("; ")
        )
    });
    Ok(serde_json::json!({
        "scenario": "jobs",
        "nodes": args.nodes,
        "jobs": args.jobs,
        "completions_per_job": args.completions,
        "parallelism": parallelism,
        "pod_run_ms": args.run_ms,
        "complete": complete,
        "failed": ended.len() - complete,
        "pod_completions": completions,
        "create_seconds": round(created_in.as_secs_f64()),
        "seconds": round(seconds),
        "jobs_per_sec": round(complete as f64 / seconds),
        "pod_completions_per_sec": round(completions as f64 / seconds),
        "p50_job_ms": round(latency.percentile_ms(50.0)),
        "p99_job_ms": round(latency.percentile_ms(99.0)),
        "master_cpu_seconds": round(cpu_seconds),
        "master_cpu_cores": round(cpu_seconds / seconds),
        "master_rss_mib": round(after.rss_bytes as f64 / 1048576.0),
        "pass": failure.is_none(),
        "failure": failure,
    }))
}

/// The Jobs that did not count exactly `completions` successes and no
/// failure, or whose pods are not exactly that many, all Succeeded and
/// none still holding the tracking finalizer: each with what is wrong.
async fn check_counts(master: &BenchMaster, completions: u32) -> anyhow::Result<Vec<String>> {
    let want = i32::try_from(completions).unwrap_or(i32::MAX);
    let mut pods_of: BTreeMap<String, (i32, i32, i32)> = BTreeMap::new();
    for pod in pods(&master.client).await? {
        let meta = pod.metadata.unwrap_or_default();
        let Some(job) = meta.labels.get(JOB_NAME_LABEL) else {
            continue;
        };
        let succeeded = pod.status.is_some_and(|s| s.phase == "Succeeded");
        let tracked = meta.finalizers.iter().any(|f| f == TRACKING_FINALIZER);
        let counts = pods_of.entry(job.clone()).or_default();
        counts.0 += 1;
        counts.1 += i32::from(succeeded);
        counts.2 += i32::from(tracked);
    }
    let mut wrong = Vec::new();
    for object in master.client.list(Kind::Job, "default").await?.items {
        let Some(Body::Generic(object)) = object.kind else {
            continue;
        };
        let job = JobView::read(&object)?;
        let (pods, succeeded_pods, tracked) = pods_of.get(&job.name).copied().unwrap_or_default();
        let (succeeded, failed) = (counter(job.status.succeeded), counter(job.status.failed));
        if succeeded != want
            || failed != 0
            || pods != want
            || succeeded_pods != want
            || tracked != 0
        {
            wrong.push(format!(
                "{}: succeeded {}, failed {}, {pods} pods ({succeeded_pods} Succeeded, {tracked} tracked)",
                job.name, succeeded, failed
            ));
        }
    }
    Ok(wrong)
}
