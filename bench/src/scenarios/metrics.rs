//! `metrics`: what the resource metrics (`metrics.k8s.io`, `kubectl top`)
//! cost the master (issue 19's target: ≤ 0.05 core for 100 nodes and 3,000
//! pods). A real master, hollow nodes speaking the agent's protocol through
//! its own client (`skiff_e2e::hollow`), and pods created through the API,
//! bound to them at creation (`spec.nodeName`, an even share each) and
//! reported Running by them. The master's CPU (`/proc/<pid>/stat`) is
//! measured over two windows of the same length in the same run:
//!
//! 1. baseline: the nodes heartbeat at the agent's interval, carrying no
//!    usage readings;
//! 2. with metrics: each node publishes a `NodeResourceUsage` of its pods
//!    every `SAMPLE_EVERY` (the agent sampler's period), which its next
//!    heartbeat carries, as the agent's do; and a reader polls
//!    `GET /apis/metrics.k8s.io/v1beta1/pods` and `.../nodes` over the REST
//!    API every 15 s (the autoscaler's sync period, a consumer's cadence).
//!
//! The difference is the metrics' cost, failed against
//! `--max-metrics-cores`. Every poll must answer every pod and node (the
//! readings are at most 30 s old). Readings are kept in memory only: the
//! window with them must move the store's revision no more than the
//! baseline does and change no file of the data dir the baseline does not;
//! `write_bytes` (`/proc/<pid>/io`) of both windows is reported beside (it
//! also counts the master's log, which lives outside its data dir, and is
//! zero on tmpfs).
//!
//! The figures in the readings are made up (hollow pods have no cgroups);
//! the messages, their size and their cadence are the agent's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use hyper::{Method, StatusCode};
use skiff_agent::resource_usage::SAMPLE_EVERY;
use skiff_e2e::hollow::{HollowConfig, HollowFleet, UsageSwitch};
use skiff_master::client::Client;
use skiff_master::controllers::horizontal_autoscaler::SYNC_PERIOD;
use skiff_master::resource_metrics::MAX_AGE;
use skiff_objects::{IntoObject, Kind};
use skiff_proto::v1;

use super::common::{
    admin_rest_tls, hollow_name, round, round_fine, small_container, start_fleet, wait_nodes_ready,
    wait_pods_running, BenchMaster,
};
use crate::proc_stats;
use crate::rest_client::RestConnection;

/// How often the reader polls the metrics API: the autoscaler's sync
/// period (metrics-server's resolution is the same 15 s).
const READ_EVERY: Duration = SYNC_PERIOD;
const POD_METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";
const NODE_METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/nodes";
const JSON_ACCEPT: &str = "application/json";
/// Concurrent pod creators.
const CREATORS: usize = 16;
/// Quiet time once every pod runs, before the baseline window.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Pods, shared evenly among the nodes.
    #[arg(long, default_value_t = 3000)]
    pub pods: usize,
    /// Length of each window (baseline, then with metrics).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The most the metrics may cost the master, in cores (with metrics
    /// less baseline); over it the run fails.
    #[arg(long, default_value_t = 0.05)]
    pub max_metrics_cores: f64,
}

fn validate(args: &MetricsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        args.max_metrics_cores.is_finite() && args.max_metrics_cores >= 0.0,
        "--max-metrics-cores must be a number of cores, 0 or more (got {})",
        args.max_metrics_cores
    );
    Ok(())
}

/// One poll of the metrics API: how many PodMetrics and NodeMetrics it
/// answered, and how long both requests took.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Poll {
    pods: usize,
    nodes: usize,
    millis: f64,
}

/// A file of the data dir as it was: size and last modification.
type FileState = (u64, SystemTime);

/// What one window saw of the master and of the fleet.
#[derive(Debug, Clone, Default)]
struct Window {
    seconds: f64,
    cpu_seconds: f64,
    rss_bytes: u64,
    write_bytes: u64,
    /// How far the store's revision moved.
    revisions: u64,
    /// Files of the data dir created, removed or modified, relative to it.
    changed_files: Vec<String>,
    heartbeats: u64,
    readings: u64,
    polls: Vec<Poll>,
}

impl Window {
    fn cores(&self) -> f64 {
        self.cpu_seconds / self.seconds.max(1e-9)
    }

    fn per_sec(&self, count: u64) -> f64 {
        count as f64 / self.seconds.max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        let mut figures = serde_json::json!({
            "seconds": round(self.seconds),
            "master_cpu_cores": round_fine(self.cores()),
            "master_rss_mib": round(self.rss_bytes as f64 / 1048576.0),
            "master_write_bytes": self.write_bytes,
            "store_revisions": self.revisions,
            "data_dir_files_changed": self.changed_files,
            "heartbeats_per_sec": round(self.per_sec(self.heartbeats)),
            "readings_per_sec": round(self.per_sec(self.readings)),
        });
        if !self.polls.is_empty() {
            let max_ms = self.polls.iter().map(|p| p.millis).fold(0.0, f64::max);
            figures["polls"] = self.polls.len().into();
            figures["poll_max_ms"] = round(max_ms).into();
            figures["min_pods_seen"] = self.polls.iter().map(|p| p.pods).min().into();
            figures["min_nodes_seen"] = self.polls.iter().map(|p| p.nodes).min().into();
        }
        figures
    }
}

pub async fn run(args: MetricsArgs) -> anyhow::Result<serde_json::Value> {
    validate(&args)?;
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let switch = UsageSwitch::default();
    let per_node = args.pods.div_ceil(args.nodes);
    let defaults = HollowConfig::default();
    let config = HollowConfig {
        max_pods: u32::try_from(per_node)
            .unwrap_or(u32::MAX)
            .max(defaults.max_pods),
        usage: Some(switch.clone()),
        ..defaults
    };
    let heartbeat = config.heartbeat;
    let _nodes = start_fleet(&fleet, args.nodes, config).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;
    eprintln!(
        "{} nodes Ready; creating {} pods bound to them",
        args.nodes, args.pods
    );
    create_bound_pods(&master.client, args.nodes, args.pods).await?;
    wait_pods_running(&master.client, args.pods, Duration::from_secs(300)).await?;
    tokio::time::sleep(SETTLE).await;

    let rest = RestConnection::connect(
        &master.process.api_addr,
        admin_rest_tls(&master.process.api_addr)?,
    )
    .await?;
    let before_readings = poll_metrics(&rest).await?;
    anyhow::ensure!(
        before_readings.pods == 0 && before_readings.nodes == 0,
        "the metrics API answered {} pods and {} nodes before any reading was sent",
        before_readings.pods,
        before_readings.nodes
    );
    let data_dir = master.process.data_dir.clone();
    eprintln!(
        "{} pods Running; baseline: heartbeats without readings for {}s",
        args.pods, args.seconds
    );
    let baseline = measure(&master, &fleet, &data_dir, args.seconds, None).await?;

    switch.turn_on();
    let first_all = wait_for_readings(&rest, args.nodes, args.pods).await?;
    eprintln!(
        "every node's reading served {:.1}s after they were turned on; with metrics for {}s",
        first_all.as_secs_f64(),
        args.seconds
    );
    let with_metrics = measure(&master, &fleet, &data_dir, args.seconds, Some(&rest)).await?;

    let failures = verdict(&args, &baseline, &with_metrics);
    let metrics_cores = with_metrics.cores() - baseline.cores();
    eprintln!(
        "master {:.4} core without readings, {:.4} with: metrics {:.4} core",
        baseline.cores(),
        with_metrics.cores(),
        metrics_cores
    );
    let on_tmpfs = nix::sys::statfs::statfs(&data_dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .ok();
    Ok(serde_json::json!({
        "scenario": "metrics",
        "nodes": args.nodes,
        "pods": args.pods,
        "seconds": args.seconds,
        "heartbeat_ms": heartbeat.as_millis() as u64,
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
        "read_every_ms": READ_EVERY.as_millis() as u64,
        "seconds_to_all_readings": round(first_all.as_secs_f64()),
        "baseline": baseline.json(),
        "with_metrics": with_metrics.json(),
        "metrics_cores": round_fine(metrics_cores),
        "max_metrics_cores": args.max_metrics_cores,
        "metrics_rss_mib": round(
            (with_metrics.rss_bytes as f64 - baseline.rss_bytes as f64) / 1048576.0
        ),
        "data_on_tmpfs": on_tmpfs,
        "pass": failures.is_empty(),
        "failure": (!failures.is_empty()).then(|| format!("metrics: {}", failures.join("; "))),
    }))
}

/// Creates `pods` pods, pod `i` bound to hollow node `i % nodes`, as the
/// DaemonSet controller binds its pods (`spec.nodeName` at creation).
async fn create_bound_pods(client: &Client, nodes: usize, pods: usize) -> anyhow::Result<()> {
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..CREATORS {
        let client = client.clone();
        creators.spawn(async move {
            for i in (c..pods).step_by(CREATORS) {
                let pod = bound_pod(i, hollow_name(i % nodes));
                client
                    .create(pod.into_object())
                    .await
                    .with_context(|| format!("creating pod metrics-{i:05}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creators.join_next().await {
        done??;
    }
    Ok(())
}

fn bound_pod(i: usize, node: String) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: format!("metrics-{i:05}"),
            labels: [("app".to_owned(), "metrics-bench".to_owned())].into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            node_name: node,
            containers: vec![small_container()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Measures the master for `seconds`; with `reader`, polls the metrics
/// API every [`READ_EVERY`] from the window's start to its end.
async fn measure(
    master: &BenchMaster,
    fleet: &HollowFleet,
    data_dir: &Path,
    seconds: u64,
    reader: Option<&RestConnection>,
) -> anyhow::Result<Window> {
    let proc_root = Path::new("/proc");
    let pid = master.pid();
    let files_before = data_files(data_dir)?;
    let revision_before = store_revision(&master.client).await?;
    let io_before = proc_stats::write_bytes(proc_root, pid)?;
    let beats_before = fleet.heartbeats_sent.load(Ordering::Relaxed);
    let readings_before = fleet.readings_published.load(Ordering::Relaxed);
    let polls = Arc::new(Mutex::new(Vec::new()));
    let before = master.sample()?;
    let started = Instant::now();
    let reading = reader.map(|rest| tokio::spawn(read_metrics(rest.clone(), polls.clone())));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = master.sample()?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(task) = reading {
        if task.is_finished() {
            task.await?.context("polling the metrics API")?;
        } else {
            task.abort();
        }
    }
    let heartbeats = fleet.heartbeats_sent.load(Ordering::Relaxed) - beats_before;
    let readings = fleet.readings_published.load(Ordering::Relaxed) - readings_before;
    let io_after = proc_stats::write_bytes(proc_root, pid)?;
    let revision_after = store_revision(&master.client).await?;
    let files_after = data_files(data_dir)?;
    let polls = polls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Window {
        seconds: elapsed,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        rss_bytes: after.rss_bytes,
        write_bytes: io_after.saturating_sub(io_before),
        revisions: revision_after.saturating_sub(revision_before),
        changed_files: changed_files(data_dir, &files_before, &files_after),
        heartbeats,
        readings,
        polls,
    })
}

/// The store's revision: moves with every write through Raft.
async fn store_revision(client: &Client) -> anyhow::Result<u64> {
    Ok(client.list(Kind::Namespace, "").await?.revision)
}

/// Polls the metrics API every [`READ_EVERY`], the first at once, until
/// aborted or a poll fails.
async fn read_metrics(rest: RestConnection, polls: Arc<Mutex<Vec<Poll>>>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let poll = poll_metrics(&rest).await?;
        polls.lock().unwrap_or_else(|p| p.into_inner()).push(poll);
    }
}

/// What `kubectl top pods -A` and `kubectl top nodes` ask the metrics API.
async fn poll_metrics(rest: &RestConnection) -> anyhow::Result<Poll> {
    let started = Instant::now();
    let pods = rest
        .call(
            Method::GET,
            POD_METRICS_PATH,
            JSON_ACCEPT,
            None,
            StatusCode::OK,
        )
        .await?;
    let nodes = rest
        .call(
            Method::GET,
            NODE_METRICS_PATH,
            JSON_ACCEPT,
            None,
            StatusCode::OK,
        )
        .await?;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Poll {
        pods: count_items(&pods, POD_METRICS_PATH)?,
        nodes: count_items(&nodes, NODE_METRICS_PATH)?,
        millis,
    })
}

/// The length of a list's `items`.
fn count_items(body: &[u8], path: &str) -> anyhow::Result<usize> {
    let list: serde_json::Value =
        serde_json::from_slice(body).with_context(|| format!("GET {path}: not JSON"))?;
    let items = list.get("items").and_then(serde_json::Value::as_array);
    let items = items.with_context(|| format!("GET {path}: a list without items"))?;
    Ok(items.len())
}

/// Polls the metrics API every second until it answers every node and
/// pod, and says how long that took: a sampling period, a heartbeat and
/// the readings' way in; fails after [`MAX_AGE`] more.
async fn wait_for_readings(
    rest: &RestConnection,
    nodes: usize,
    pods: usize,
) -> anyhow::Result<Duration> {
    let within = SAMPLE_EVERY + MAX_AGE;
    let started = Instant::now();
    loop {
        let poll = poll_metrics(rest).await?;
        if poll.pods >= pods && poll.nodes >= nodes {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "the metrics API answered {}/{pods} pods and {}/{nodes} nodes {within:?} after the readings were turned on",
            poll.pods,
            poll.nodes
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why the run fails, if it does: the metrics over budget, a poll that
/// missed readings, or readings that reached the store or the data dir.
fn verdict(args: &MetricsArgs, baseline: &Window, with_metrics: &Window) -> Vec<String> {
    let mut failures = Vec::new();
    let cost = with_metrics.cores() - baseline.cores();
    if cost > args.max_metrics_cores {
        failures.push(format!(
            "the readings and the metrics API cost the master {cost:.4} core \
             ({:.4} with, {:.4} without), over --max-metrics-cores {}",
            with_metrics.cores(),
            baseline.cores(),
            args.max_metrics_cores
        ));
    }
    if with_metrics.polls.is_empty() {
        failures.push("no poll of the metrics API finished in the window".to_owned());
    }
    let short = |poll: &&Poll| poll.pods < args.pods || poll.nodes < args.nodes;
    if let Some(poll) = with_metrics.polls.iter().find(short) {
        failures.push(format!(
            "a poll of the metrics API answered {}/{} pods and {}/{} nodes \
             (readings missing or older than {MAX_AGE:?})",
            poll.pods, args.pods, poll.nodes, args.nodes
        ));
    }
    if with_metrics.revisions > baseline.revisions {
        failures.push(format!(
            "the store's revision moved by {} with readings against {} without: \
             readings reached Raft",
            with_metrics.revisions, baseline.revisions
        ));
    }
    let written: Vec<&str> = with_metrics
        .changed_files
        .iter()
        .filter(|f| !baseline.changed_files.contains(f))
        .map(String::as_str)
        .collect();
    if !written.is_empty() {
        failures.push(format!(
            "with readings the master changed files of its data dir it did not change without: {}",
            written.join(", ")
        ));
    }
    failures
}

/// Every file under `dir` (not directories), by path, with its size and
/// last modification; a file removed while the tree is walked is left
/// out.
fn data_files(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, FileState>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(current) = dirs.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("listing {}", current.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", current.display()))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let modified = meta
                .modified()
                .with_context(|| format!("reading the modification time of {}", path.display()))?;
            files.insert(path, (meta.len(), modified));
        }
    }
    Ok(files)
}

/// The files created, removed or modified (size or modification time)
/// from `before` to `after`, relative to `dir`.
fn changed_files(
    dir: &Path,
    before: &BTreeMap<PathBuf, FileState>,
    after: &BTreeMap<PathBuf, FileState>,
) -> Vec<String> {
    let mut paths: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| {
            let relative = path.strip_prefix(dir).unwrap_or(path.as_path());
            relative.display().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MetricsArgs,
    }

    fn args(extra: &[&str]) -> MetricsArgs {
        let argv = std::iter::once("metrics").chain(extra.iter().copied());
        Cli::parse_from(argv).args
    }

    fn window(cores: f64, revisions: u64, changed: &[&str], polls: &[(usize, usize)]) -> Window {
        Window {
            seconds: 60.0,
            cpu_seconds: cores * 60.0,
            revisions,
            changed_files: changed.iter().map(|f| f.to_string()).collect(),
            polls: polls
                .iter()
                .map(|&(pods, nodes)| Poll {
                    pods,
                    nodes,
                    millis: 5.0,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_the_issue_target() {
        let a = args(&[]);
        assert_eq!((a.nodes, a.pods, a.seconds), (100, 3000, 60));
        assert_eq!(a.max_metrics_cores, 0.05);
        assert!(validate(&a).is_ok());
        assert!(validate(&args(&["--nodes", "0"])).is_err());
        assert!(validate(&args(&["--seconds", "0"])).is_err());
        let negative = MetricsArgs {
            max_metrics_cores: -0.1,
            ..args(&[])
        };
        assert!(validate(&negative).is_err());
        let not_a_number = MetricsArgs {
            max_metrics_cores: f64::NAN,
            ..args(&[])
        };
        assert!(validate(&not_a_number).is_err());
    }

    #[test]
    fn a_run_within_budget_that_saw_every_reading_and_wrote_nothing_passes() {
        let a = args(&["--nodes", "100", "--pods", "3000"]);
        let baseline = window(0.020, 0, &[], &[]);
        let with = window(0.060, 0, &[], &[(3000, 100), (3000, 100)]);
        assert_eq!(verdict(&a, &baseline, &with), Vec::<String>::new());
    }

    #[test]
    fn metrics_over_budget_fail_the_run() {
        let a = args(&["--max-metrics-cores", "0.05"]);
        let baseline = window(0.020, 0, &[], &[]);
        let with = window(0.080, 0, &[], &[(3000, 100)]);
        let failures = verdict(&a, &baseline, &with);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("0.0600 core"), "{failures:?}");
        assert!(
            failures[0].contains("--max-metrics-cores 0.05"),
            "{failures:?}"
        );
    }

    #[test]
    fn a_poll_missing_readings_or_no_poll_at_all_fails_the_run() {
        let a = args(&[]);
        let baseline = window(0.02, 0, &[], &[]);
        let missing = window(0.03, 0, &[], &[(3000, 100), (2970, 99)]);
        let failures = verdict(&a, &baseline, &missing);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("2970/3000 pods and 99/100 nodes"),
            "{failures:?}"
        );
        let none = window(0.03, 0, &[], &[]);
        let failures = verdict(&a, &baseline, &none);
        assert_eq!(
            failures,
            ["no poll of the metrics API finished in the window"]
        );
    }

    #[test]
    fn readings_that_reach_the_store_or_the_data_dir_fail_the_run() {
        let a = args(&[]);
        let baseline = window(0.02, 1, &["db/raft.redb"], &[]);
        let same = window(0.03, 1, &["db/raft.redb"], &[(3000, 100)]);
        assert!(verdict(&a, &baseline, &same).is_empty());
        let raft = window(0.03, 4, &["db/raft.redb"], &[(3000, 100)]);
        let failures = verdict(&a, &baseline, &raft);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("moved by 4 with readings against 1"),
            "{failures:?}"
        );
        let disk = window(0.03, 1, &["db/raft.redb", "metrics.db"], &[(3000, 100)]);
        let failures = verdict(&a, &baseline, &disk);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].ends_with(": metrics.db"), "{failures:?}");
    }

    #[test]
    fn data_files_and_their_changes_are_found_in_nested_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db/snapshots")).unwrap();
        std::fs::write(dir.path().join("db/raft.redb"), b"abc").unwrap();
        std::fs::write(dir.path().join("db/snapshots/1.snap"), b"s").unwrap();
        std::fs::write(dir.path().join("token"), b"t").unwrap();
        let before = data_files(dir.path()).unwrap();
        assert_eq!(before.len(), 3, "{before:?}");
        assert!(changed_files(dir.path(), &before, &before).is_empty());

        std::fs::write(dir.path().join("db/raft.redb"), b"abcd").unwrap();
        std::fs::remove_file(dir.path().join("token")).unwrap();
        std::fs::write(dir.path().join("db/snapshots/2.snap"), b"s").unwrap();
        let after = data_files(dir.path()).unwrap();
        assert_eq!(
            changed_files(dir.path(), &before, &after),
            ["db/raft.redb", "db/snapshots/2.snap", "token"]
        );
    }

    #[test]
    fn a_file_rewritten_at_the_same_size_counts_as_changed() {
        let dir = Path::new("/data");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let before = BTreeMap::from([(dir.join("a"), (4, t0))]);
        let after = BTreeMap::from([(dir.join("a"), (4, t0 + Duration::from_millis(1)))]);
        assert_eq!(changed_files(dir, &before, &after), ["a"]);
    }

    #[test]
    fn a_metrics_list_is_counted_by_its_items() {
        let body = br#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#;
        assert_eq!(count_items(body, POD_METRICS_PATH).unwrap(), 2);
        let empty = br#"{"kind":"NodeMetricsList","items":[]}"#;
        assert_eq!(count_items(empty, NODE_METRICS_PATH).unwrap(), 0);
        let status = br#"{"kind":"Status","code":404}"#;
        let error = count_items(status, NODE_METRICS_PATH)
            .unwrap_err()
            .to_string();
        assert!(error.contains("without items"), "{error}");
        assert!(count_items(b"<html>", POD_METRICS_PATH).is_err());
    }

    #[test]
    fn pods_are_spread_evenly_and_bound_at_creation() {
        let pod = bound_pod(7, hollow_name(7 % 5));
        let meta = pod.metadata.unwrap();
        assert_eq!(meta.name, "metrics-00007");
        assert_eq!(pod.spec.unwrap().node_name, "hollow-00002");
    }
}
