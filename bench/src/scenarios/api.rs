//! `api`: the Kubernetes REST API against the gRPC API, on the same
//! master(s) in the same run. Objects are Pods in a namespace of their own
//! per phase, for a scheduler that does not exist (`schedulerName`), so
//! they stay Pending and nothing but the API and the store touches them.
//!
//! 1. Creates: `--creates` pods through each API from `--clients`
//!    clients, eight sharing a connection (an HTTP/2 connection for REST,
//!    a gRPC channel for gRPC), in the rounds gRPC, REST, REST, gRPC so
//!    that a store growing through the run weighs on both alike. Writes a
//!    second, latency percentiles, and REST's throughput over gRPC's.
//! 2. Lists: `--list-pods` pods, then `--lists` REST lists of them as JSON
//!    and as many as a Table, one at a time: latency percentiles and sizes.
//! 3. Watches: `--watchers` REST watches (`watch=true&resourceVersion=` the
//!    list's), spread over the masters, then `--changes` pods each updated
//!    once through gRPC, stamped with when the update was sent. Every
//!    watcher must see every acknowledged change; the delay from sending to
//!    a watcher reading the event is the lag. The masters' memory is read
//!    before, while watching and after.
//! 4. Server-side apply: a manifest of `--apply-objects` objects (three
//!    ConfigMaps to a Service and a Deployment of no replicas, as a chart
//!    has them; 0 skips the phase) created by server-side apply (`PATCH`
//!    with `application/apply-patch+yaml`, `fieldManager=skiff-bench`),
//!    then, once the store has settled (the controllers' own writes:
//!    ReplicaSets, Endpoints, statuses), `--apply-rounds` rounds of
//!    re-applying every object unchanged, then GETting every object, one
//!    request at a time. Each round's time (and each request's) as p50 and
//!    p99, and re-applying's over GETting's (the target: at most 2 ×). An
//!    unchanged re-apply stores nothing: every object's resourceVersion,
//!    as the applies and GETs answer it, and the store's revision (a
//!    list's `metadata.resourceVersion`) must be what they were before the
//!    rounds.
//!
//! A watcher missing a change, a write failing, an unchanged re-apply
//! storing something, or (with `--min-rest-ratio`, `--max-apply-ratio`)
//! REST creating too slowly or re-applying too slowly fails the run after
//! its figures are printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use rustls::ClientConfig;
use skiff_e2e::master::MasterCluster;
use skiff_master::client::{Client, ClientError};
use skiff_objects::manifest::to_json_value;
use skiff_objects::{IntoObject, Kind};
use skiff_proto::api::Object;
use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::common::{admin_rest_tls, round, small_container};
use crate::latency::Latencies;
use crate::proc_stats;
use crate::rest_client::{LineSplitter, RestConnection};

/// Clients sharing one connection in the create phase, for both APIs.
const CLIENTS_PER_CONNECTION: usize = 8;
/// REST watches sharing one HTTP/2 connection.
const WATCHERS_PER_CONNECTION: usize = 50;
/// Concurrent writers of the watched changes.
const CHANGE_WRITERS: usize = 8;
/// How long every watch may take to start.
const WATCHES_START_WITHIN: Duration = Duration::from_secs(60);
/// How long watchers may take, after the last change was written, to see
/// every change before they are stopped and counted as missing some.
const WATCH_DRAIN: Duration = Duration::from_secs(30);

/// The phases' namespaces.
const CREATE_NAMESPACE: &str = "bench-create";
const LIST_NAMESPACE: &str = "bench-list";
const WATCH_NAMESPACE: &str = "bench-watch";
/// A scheduler nobody runs: skiff's leaves the pods alone, so their only
/// writes are the benchmark's.
const NO_SCHEDULER: &str = "skiff-bench-unscheduled";
/// Which change an update is (0..`--changes`).
const CHANGE_ANNOTATION: &str = "bench.skiff.io/change";
/// When it was sent: nanoseconds since the watch phase began.
const SENT_ANNOTATION: &str = "bench.skiff.io/sent-ns";

/// Phase 4's namespace, and who applies there (`fieldManager`).
const APPLY_NAMESPACE: &str = "bench-apply";
const APPLY_MANAGER: &str = "skiff-bench";
/// Server-side apply's Content-Type (a JSON body is YAML too).
const APPLY_CONTENT_TYPE: &str = "application/apply-patch+yaml";
/// How long the store may take to settle after the manifest is created
/// (its controllers' writes), and how often its revision is read
/// meanwhile; it has settled when two reads in a row find it unchanged.
const APPLY_SETTLE_WITHIN: Duration = Duration::from_secs(30);
const APPLY_SETTLE_POLL: Duration = Duration::from_millis(500);

const JSON_ACCEPT: &str = "application/json";
/// What `kubectl get` asks for.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Masters in the cluster (1 or 3); creates and lists go to the leader,
    /// watches are spread over all.
    #[arg(long, default_value_t = 1)]
    pub masters: usize,
    /// Concurrent creating clients per API, eight to a connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Pods each API creates.
    #[arg(long, default_value_t = 10_000)]
    pub creates: usize,
    /// Pods in the namespace that is listed.
    #[arg(long, default_value_t = 10_000)]
    pub list_pods: usize,
    /// List requests per format (JSON and Table).
    #[arg(long, default_value_t = 50)]
    pub lists: usize,
    /// REST watches of the changing pods.
    #[arg(long, default_value_t = 500)]
    pub watchers: usize,
    /// Pods that change, each updated once while they are watched.
    #[arg(long, default_value_t = 1000)]
    pub changes: usize,
    /// Changes written a second; 0: as fast as the writers go.
    #[arg(long, default_value_t = 100)]
    pub change_rate: u32,
    /// Fail when REST creates a second over gRPC's is below this; 0 only
    /// reports the ratio.
    #[arg(long, default_value_t = 0.0)]
    pub min_rest_ratio: f64,
    /// Objects in the server-side applied manifest (ConfigMaps, Services
    /// and Deployments, three to one to one); 0 skips the apply phase.
    #[arg(long, default_value_t = 50)]
    pub apply_objects: usize,
    /// Rounds of re-applying the unchanged manifest, each followed by a
    /// GET of every object in it.
    #[arg(long, default_value_t = 20)]
    pub apply_rounds: usize,
    /// Fail when a round of re-applying takes more than this many times a
    /// round of GETs (p50 over p50); 0 only reports the ratio.
    #[arg(long, default_value_t = 0.0)]
    pub max_apply_ratio: f64,
    /// Keep the temp dir (data and master logs) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// Refuses settings that cannot make a run.
fn validate(args: &ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.masters >= 1, "--masters must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.creates >= 1, "--creates must be at least 1");
    anyhow::ensure!(args.list_pods >= 1, "--list-pods must be at least 1");
    anyhow::ensure!(args.lists >= 1, "--lists must be at least 1");
    anyhow::ensure!(args.watchers >= 1, "--watchers must be at least 1");
    anyhow::ensure!(args.changes >= 1, "--changes must be at least 1");
    anyhow::ensure!(
        args.min_rest_ratio.is_finite() && args.min_rest_ratio >= 0.0,
        "--min-rest-ratio must be a number, 0 or more"
    );
    anyhow::ensure!(
        args.apply_objects == 0 || args.apply_rounds >= 1,
        "--apply-rounds must be at least 1 when --apply-objects is not 0"
    );
    anyhow::ensure!(
        args.max_apply_ratio.is_finite() && args.max_apply_ratio >= 0.0,
        "--max-apply-ratio must be a number, 0 or more"
    );
    anyhow::ensure!(
        args.max_apply_ratio <= 0.0 || args.apply_objects > 0,
        "--max-apply-ratio needs the apply phase (--apply-objects above 0)"
    );
    Ok(())
}

/// The two APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Rest,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Rest => "rest",
        }
    }
}

/// The create rounds, each with its count: gRPC, REST, REST, gRPC, each
/// half of an API's creates, so that both meet the store at the same sizes
/// on average.
fn create_rounds(creates: usize) -> [(Protocol, usize); 4] {
    let first = creates / 2;
    let second = creates - first;
    [
        (Protocol::Grpc, first),
        (Protocol::Rest, first),
        (Protocol::Rest, second),
        (Protocol::Grpc, second),
    ]
}

/// Connections for `users` users, `per` to a connection.
fn connections_for(users: usize, per: usize) -> usize {
    users.div_ceil(per.max(1))
}

/// The indexes client `client` of `clients` takes of `0..count`: every
/// `clients`-th, from its own number.
fn strided(count: usize, clients: usize, client: usize) -> impl Iterator<Item = usize> {
    (client..count).step_by(clients.max(1))
}

/// The `i`-th of `items`, wrapping around.
fn nth<T: Clone>(items: &[T], i: usize) -> anyhow::Result<T> {
    items
        .get(i % items.len().max(1))
        .cloned()
        .context("no connection to use")
}

fn pods_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

fn watched_pod(change: usize) -> String {
    format!("watch-{change}")
}

/// A small Pending pod, the same for both APIs.
fn bench_pod(namespace: &str, name: &str, annotations: BTreeMap<String, String>) -> Object {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels: [("app".to_owned(), "bench".to_owned())].into(),
            annotations,
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            containers: vec![small_container()],
            scheduler_name: NO_SCHEDULER.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_object()
}

/// `pod` as a REST client sends it: Kubernetes JSON with its type.
fn rest_body(pod: &Object) -> Vec<u8> {
    let mut value = to_json_value(pod);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".to_owned(), "v1".into());
        map.insert("kind".to_owned(), "Pod".into());
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The annotations that stamp change `change`, sent `sent` into the phase.
fn stamp(change: usize, sent: Duration) -> BTreeMap<String, String> {
    [
        (CHANGE_ANNOTATION.to_owned(), change.to_string()),
        (SENT_ANNOTATION.to_owned(), sent.as_nanos().to_string()),
    ]
    .into()
}

/// When change `change` is due at `rate` a second from `start`; `None`
/// when unpaced.
fn due_at(start: Instant, change: usize, rate: u32) -> Option<Instant> {
    if rate == 0 {
        return None;
    }
    let (change, rate) = (change as u64, u64::from(rate));
    let offset = Duration::from_secs(change / rate)
        + Duration::from_nanos((change % rate) * 1_000_000_000 / rate);
    start.checked_add(offset)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Per second, 0 over no time.
fn rate(count: usize, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The masters' CPU seconds, summed, and the largest resident memory.
fn sample_masters(pids: &[u32]) -> anyhow::Result<(f64, u64)> {
    let mut cpu_seconds = 0.0;
    let mut max_rss = 0;
    for pid in pids {
        let sample = proc_stats::sample(Path::new("/proc"), *pid)
            .with_context(|| format!("reading master {pid} in /proc"))?;
        cpu_seconds += sample.cpu_seconds;
        max_rss = max_rss.max(sample.rss_bytes);
    }
    Ok((cpu_seconds, max_rss))
}

fn max_rss_mib(pids: &[u32]) -> anyhow::Result<f64> {
    Ok(mib(sample_masters(pids)?.1))
}

/// Acknowledged writes' latencies and failed writes.
#[derive(Debug, Default)]
struct Tally {
    latencies: Latencies,
    errors: usize,
}

impl Tally {
    /// Counts a failed write; the first few are shown.
    fn failed(&mut self, client: usize, error: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.errors <= 3 {
            eprintln!("client {client}: {error}");
        }
    }

    fn add(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }
}

/// Connections to the leader, both APIs, as many of each.
struct Connections {
    grpc: Vec<Client>,
    rest: Vec<RestConnection>,
}

/// Creates `{prefix}-{k}` for every `k` in `0..count` in `namespace`
/// through `protocol`, from `clients` concurrent clients.
async fn create_pods(
    connections: &Connections,
    protocol: Protocol,
    namespace: &'static str,
    prefix: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<Tally> {
    let mut tasks = JoinSet::new();
    for c in 0..clients.min(count) {
        let names: Vec<String> = strided(count, clients, c)
            .map(|k| format!("{prefix}-{k}"))
            .collect();
        let connection = c / CLIENTS_PER_CONNECTION;
        match protocol {
            Protocol::Grpc => {
                let client = nth(&connections.grpc, connection)?;
                tasks.spawn(async move {
                    let mut tally = Tally::default();
                    for name in names {
                        let pod = bench_pod(namespace, &name, BTreeMap::new());
                        let t = Instant::now();
                        match client.create(pod).await {
                            Ok(_) => tally.latencies.push(t.elapsed()),
                            Err(e) => tally.failed(c, &e),
                        }
                    }
                    tally
                });
            }
            Protocol::Rest => {
                let rest = nth(&connections.rest, connection)?;
                let path = pods_path(namespace);
                tasks.spawn(async move {
                    let mut tally = Tally::default();
                    for name in names {
                        let pod = bench_pod(namespace, &name, BTreeMap::new());
                        let t = Instant::now();
                        let body = Some(rest_body(&pod));
                        let created = rest
                            .call(Method::POST, &path, JSON_ACCEPT, body, StatusCode::CREATED)
                            .await;
                        match created {
                            Ok(_) => tally.latencies.push(t.elapsed()),
                            Err(e) => tally.failed(c, &e),
                        }
                    }
                    tally
                });
            }
        }
    }
    let mut total = Tally::default();
    while let Some(done) = tasks.join_next().await {
        total.add(done?);
    }
    Ok(total)
}

/// One API's creates over its rounds, with the masters' CPU meanwhile.
#[derive(Debug, Default)]
struct CreateFigures {
    tally: Tally,
    elapsed: Duration,
    master_cpu_seconds: f64,
}

impl CreateFigures {
    fn per_sec(&self) -> f64 {
        rate(self.tally.latencies.len(), self.elapsed)
    }

    fn cpu_cores(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.master_cpu_seconds / seconds
        } else {
            0.0
        }
    }
}

/// REST creates a second over gRPC's; none if gRPC acknowledged none.
fn ratio(rest: f64, grpc: f64) -> Option<f64> {
    (grpc > 0.0).then_some(rest / grpc)
}

/// Phase 1: the create rounds. Returns gRPC's figures, then REST's.
async fn measure_creates(
    connections: &Connections,
    pids: &[u32],
    args: &ApiArgs,
) -> anyhow::Result<(CreateFigures, CreateFigures)> {
    let mut grpc = CreateFigures::default();
    let mut rest = CreateFigures::default();
    for (number, (protocol, count)) in create_rounds(args.creates).into_iter().enumerate() {
        if count == 0 {
            continue;
        }
        let prefix = format!("{}-r{number}", protocol.name());
        let (cpu_before, _) = sample_masters(pids)?;
        let started = Instant::now();
        let tally = create_pods(
            connections,
            protocol,
            CREATE_NAMESPACE,
            &prefix,
            count,
            args.clients,
        )
        .await?;
        let elapsed = started.elapsed();
        let (cpu_after, _) = sample_masters(pids)?;
        eprintln!(
            "round {number}: {count} {} creates in {:.1}s ({:.0}/s, {} failed)",
            protocol.name(),
            elapsed.as_secs_f64(),
            rate(tally.latencies.len(), elapsed),
            tally.errors
        );
        let figures = match protocol {
            Protocol::Grpc => &mut grpc,
            Protocol::Rest => &mut rest,
        };
        figures.tally.add(tally);
        figures.elapsed += elapsed;
        figures.master_cpu_seconds += cpu_after - cpu_before;
    }
    Ok((grpc, rest))
}

/// How a list is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListFormat {
    Json,
    Table,
}

impl ListFormat {
    fn accept(self) -> &'static str {
        match self {
            ListFormat::Json => JSON_ACCEPT,
            ListFormat::Table => TABLE_ACCEPT,
        }
    }

    /// The pods in a list answer, after checking it is of this format.
    fn pods_in(self, body: &[u8]) -> anyhow::Result<usize> {
        let list: ListHead = serde_json::from_slice(body).context("the list is not JSON")?;
        match self {
            ListFormat::Json => {
                anyhow::ensure!(list.kind == "PodList", "a JSON list is a {:?}", list.kind);
                Ok(list.items.len())
            }
            ListFormat::Table => {
                anyhow::ensure!(list.kind == "Table", "a Table list is a {:?}", list.kind);
                Ok(list.rows.len())
            }
        }
    }
}

/// What the scenario reads of a `PodList` or a `Table`.
#[derive(Debug, serde::Deserialize)]
struct ListHead {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    rows: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
}

/// Phase 2's figures.
#[derive(Debug, Default)]
struct ListFigures {
    json: Latencies,
    table: Latencies,
    json_bytes: usize,
    table_bytes: usize,
}

/// Phase 2: `--list-pods` pods, then lists of them in both formats, one
/// request at a time, alternating.
async fn measure_lists(connections: &Connections, args: &ApiArgs) -> anyhow::Result<ListFigures> {
    let created = create_pods(
        connections,
        Protocol::Grpc,
        LIST_NAMESPACE,
        "list",
        args.list_pods,
        args.clients,
    )
    .await?;
    anyhow::ensure!(
        created.errors == 0,
        "{} of the {} pods to list could not be created",
        created.errors,
        args.list_pods
    );
    eprintln!("{} pods to list created; listing", args.list_pods);
    let rest = nth(&connections.rest, 0)?;
    let path = pods_path(LIST_NAMESPACE);
    let mut figures = ListFigures::default();
    for _ in 0..args.lists {
        for format in [ListFormat::Json, ListFormat::Table] {
            let t = Instant::now();
            let body = rest
                .call(Method::GET, &path, format.accept(), None, StatusCode::OK)
                .await?;
            let took = t.elapsed();
            let pods = format.pods_in(&body)?;
            anyhow::ensure!(
                pods == args.list_pods,
                "a {format:?} list answered {pods} pods, not {}",
                args.list_pods
            );
            match format {
                ListFormat::Json => {
                    figures.json.push(took);
                    figures.json_bytes = body.len();
                }
                ListFormat::Table => {
                    figures.table.push(took);
                    figures.table_bytes = body.len();
                }
            }
        }
    }
    Ok(figures)
}

/// A change as a watcher read it from an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StampedChange {
    index: usize,
    /// When it was sent, from the start of the phase.
    sent: Duration,
}

/// One line of a watch, as far as the scenario reads it.
#[derive(Debug, serde::Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    object: LineObject,
}

/// A pod (its annotations), or the `Status` of an `ERROR` event.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct LineObject {
    metadata: LineMeta,
    message: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct LineMeta {
    annotations: BTreeMap<String, String>,
}

/// Why a watch line ends a watcher.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum WatchLineError {
    #[error("a watch line is not an event: {0}")]
    NotAnEvent(String),
    #[error("the watch ended in an ERROR event: {0}")]
    Error(String),
    #[error("change {index:?} carries a bad stamp {sent:?}")]
    BadStamp { index: String, sent: String },
}

/// The change a watch line reports: `None` for events that carry none
/// (bookmarks, pods no change touched).
fn stamped_change(line: &[u8]) -> Result<Option<StampedChange>, WatchLineError> {
    let event: WatchLine =
        serde_json::from_slice(line).map_err(|e| WatchLineError::NotAnEvent(e.to_string()))?;
    match event.event_type.as_str() {
        "ERROR" => Err(WatchLineError::Error(event.object.message)),
        "ADDED" | "MODIFIED" => {
            let annotations = &event.object.metadata.annotations;
            let index = annotations.get(CHANGE_ANNOTATION);
            let sent = annotations.get(SENT_ANNOTATION);
            let (Some(index), Some(sent)) = (index, sent) else {
                return Ok(None);
            };
            match (index.parse::<usize>(), sent.parse::<u64>()) {
                (Ok(i), Ok(nanos)) => Ok(Some(StampedChange {
                    index: i,
                    sent: Duration::from_nanos(nanos),
                })),
                _ => Err(WatchLineError::BadStamp {
                    index: index.clone(),
                    sent: sent.clone(),
                }),
            }
        }
        _ => Ok(None),
    }
}

/// What one watcher saw.
#[derive(Debug)]
struct WatcherRun {
    /// Whether change `i` was seen.
    seen: Vec<bool>,
    distinct: usize,
    duplicates: usize,
    /// Changes with an index beyond `--changes`.
    unexpected: usize,
    lags: Latencies,
    error: Option<String>,
}

impl WatcherRun {
    fn new(changes: usize) -> WatcherRun {
        WatcherRun {
            seen: vec![false; changes],
            distinct: 0,
            duplicates: 0,
            unexpected: 0,
            lags: Latencies::default(),
            error: None,
        }
    }

    /// Counts `change`, read `received` into the phase.
    fn record(&mut self, change: StampedChange, received: Duration) {
        let Some(seen) = self.seen.get_mut(change.index) else {
            self.unexpected += 1;
            return;
        };
        if *seen {
            self.duplicates += 1;
            return;
        }
        *seen = true;
        self.distinct += 1;
        self.lags.push(received.saturating_sub(change.sent));
    }

    fn saw_all(&self) -> bool {
        self.distinct == self.seen.len()
    }

    /// The acknowledged changes it did not see.
    fn missed(&self, acknowledged: &[usize]) -> usize {
        acknowledged
            .iter()
            .filter(|i| !self.seen.get(**i).copied().unwrap_or(false))
            .count()
    }
}

/// What a watcher needs.
struct Watcher {
    connection: RestConnection,
    path: String,
    changes: usize,
    /// The start of the phase, which the stamps count from.
    clock: Instant,
    /// Told once the watch has started (or could not).
    started: mpsc::Sender<Result<(), String>>,
    stop: watch::Receiver<bool>,
}

/// Watches until every change is seen, the watch fails, or it is stopped.
async fn watch_changes(watcher: Watcher) -> WatcherRun {
    let Watcher {
        connection,
        path,
        changes,
        clock,
        started,
        mut stop,
    } = watcher;
    let mut run = WatcherRun::new(changes);
    let opened = connection
        .open(Method::GET, &path, JSON_ACCEPT, None, StatusCode::OK)
        .await;
    let response = match opened {
        Ok(response) => {
            let _ = started.send(Ok(())).await;
            response
        }
        Err(e) => {
            let message = e.to_string();
            let _ = started.send(Err(message.clone())).await;
            run.error = Some(message);
            return run;
        }
    };
    drop(started);
    let mut body = response.into_body();
    let mut lines = LineSplitter::default();
    while !run.saw_all() {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            frame = body.frame() => frame,
        };
        let data = match frame {
            None => {
                run.error = Some("the master ended the watch".to_owned());
                break;
            }
            Some(Err(e)) => {
                run.error = Some(format!("reading the watch: {e}"));
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let received = clock.elapsed();
        for line in lines.push(&data) {
            match stamped_change(&line) {
                Ok(Some(change)) => run.record(change, received),
                Ok(None) => {}
                Err(e) => {
                    run.error = Some(e.to_string());
                    return run;
                }
            }
        }
    }
    run
}

/// Waits until `watchers` watches have started.
async fn wait_started(
    started: &mut mpsc::Receiver<Result<(), String>>,
    watchers: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WATCHES_START_WITHIN;
    for count in 0..watchers {
        match tokio::time::timeout_at(deadline, started.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => anyhow::bail!("a watch could not start: {e}"),
            Ok(None) => anyhow::bail!("only {count} of {watchers} watches started"),
            Err(_) => anyhow::bail!(
                "only {count} of {watchers} watches started within {WATCHES_START_WITHIN:?}"
            ),
        }
    }
    Ok(())
}

/// The watched changes as written.
#[derive(Debug, Default)]
struct ChangeWrites {
    acknowledged: Vec<usize>,
    errors: usize,
    latencies: Latencies,
}

/// Updates `watch-{k}` once for every `k` in `0..--changes`, stamped, at
/// `--change-rate` a second, from [`CHANGE_WRITERS`] writers.
async fn write_changes(
    clients: &[Client],
    args: &ApiArgs,
    clock: Instant,
) -> anyhow::Result<ChangeWrites> {
    let (changes, rate) = (args.changes, args.change_rate);
    let writers = CHANGE_WRITERS.min(changes).max(1);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let client = nth(clients, w)?;
        tasks.spawn(async move {
            let mut written = ChangeWrites::default();
            for k in strided(changes, writers, w) {
                if let Some(due) = due_at(start, k, rate) {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                let sent = clock.elapsed();
                let pod = bench_pod(WATCH_NAMESPACE, &watched_pod(k), stamp(k, sent));
                let t = Instant::now();
                match client.update(pod).await {
                    Ok(_) => {
                        written.latencies.push(t.elapsed());
                        written.acknowledged.push(k);
                    }
                    Err(e) => {
                        written.errors += 1;
                        if written.errors <= 3 {
                            eprintln!("change {k}: {e}");
                        }
                    }
                }
            }
            written
        });
    }
    let mut total = ChangeWrites::default();
    while let Some(done) = tasks.join_next().await {
        let written = done?;
        total.acknowledged.extend(written.acknowledged);
        total.errors += written.errors;
        total.latencies.extend(written.latencies);
    }
    Ok(total)
}

/// Waits for every watcher to end, stopping those still waiting
/// [`WATCH_DRAIN`] after the changes were written.
async fn drain(
    watchers: &mut JoinSet<WatcherRun>,
    stop: &watch::Sender<bool>,
) -> anyhow::Result<Vec<WatcherRun>> {
    let mut runs = Vec::new();
    let deadline = tokio::time::sleep(WATCH_DRAIN);
    tokio::pin!(deadline);
    let mut stopped = false;
    loop {
        tokio::select! {
            done = watchers.join_next() => match done {
                Some(run) => runs.push(run?),
                None => return Ok(runs),
            },
            _ = &mut deadline, if !stopped => {
                stopped = true;
                eprintln!("stopping the watchers {WATCH_DRAIN:?} after the last change");
                let _ = stop.send(true);
            }
        }
    }
}

/// Phase 3's figures.
#[derive(Debug, Default)]
struct WatchFigures {
    change_errors: usize,
    change_writes: Latencies,
    change_seconds: f64,
    complete: usize,
    missed: usize,
    duplicates: usize,
    unexpected: usize,
    failed_watchers: usize,
    lags: Latencies,
    rss_before_mib: f64,
    rss_watching_mib: f64,
    rss_after_mib: f64,
}

/// Phase 3: pods, watches of them from the list's revision, then one
/// stamped update of each.
async fn measure_watches(
    connections: &Connections,
    masters: &[String],
    pids: &[u32],
    tls: &Arc<ClientConfig>,
    args: &ApiArgs,
) -> anyhow::Result<WatchFigures> {
    let created = create_pods(
        connections,
        Protocol::Grpc,
        WATCH_NAMESPACE,
        "watch",
        args.changes,
        args.clients,
    )
    .await?;
    anyhow::ensure!(
        created.errors == 0,
        "{} of the {} pods to watch could not be created",
        created.errors,
        args.changes
    );
    let rest = nth(&connections.rest, 0)?;
    let listed = rest
        .call(
            Method::GET,
            &pods_path(WATCH_NAMESPACE),
            JSON_ACCEPT,
            None,
            StatusCode::OK,
        )
        .await?;
    let list: ListHead =
        serde_json::from_slice(&listed).context("the list of watched pods is not JSON")?;
    anyhow::ensure!(
        list.items.len() == args.changes,
        "{} pods to watch listed, not {}",
        list.items.len(),
        args.changes
    );
    let revision = list.metadata.resource_version;
    anyhow::ensure!(
        !revision.is_empty() && revision.bytes().all(|b| b.is_ascii_digit()),
        "the list's resourceVersion {revision:?} is not a revision"
    );
    let mut figures = WatchFigures {
        rss_before_mib: max_rss_mib(pids)?,
        ..Default::default()
    };

    let path = format!(
        "{}?watch=true&resourceVersion={revision}",
        pods_path(WATCH_NAMESPACE)
    );
    let mut watch_connections = Vec::new();
    for j in 0..connections_for(args.watchers, WATCHERS_PER_CONNECTION) {
        let address = nth(masters, j)?;
        watch_connections.push(RestConnection::connect(&address, tls.clone()).await?);
    }
    let clock = Instant::now();
    let (started_tx, mut started_rx) = mpsc::channel(args.watchers);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watchers = JoinSet::new();
    for w in 0..args.watchers {
        watchers.spawn(watch_changes(Watcher {
            connection: nth(&watch_connections, w / WATCHERS_PER_CONNECTION)?,
            path: path.clone(),
            changes: args.changes,
            clock,
            started: started_tx.clone(),
            stop: stop_rx.clone(),
        }));
    }
    drop(started_tx);
    wait_started(&mut started_rx, args.watchers).await?;
    figures.rss_watching_mib = max_rss_mib(pids)?;
    eprintln!(
        "{} watches from revision {revision} on {} connections; {} changes at {}",
        args.watchers,
        watch_connections.len(),
        args.changes,
        match args.change_rate {
            0 => "full speed".to_owned(),
            r => format!("{r}/s"),
        }
    );

    let writing = Instant::now();
    let written = write_changes(&connections.grpc, args, clock).await?;
    figures.change_seconds = writing.elapsed().as_secs_f64();
    let rss_written = max_rss_mib(pids)?;
    let runs = drain(&mut watchers, &stop_tx).await?;
    figures.rss_after_mib = rss_written.max(max_rss_mib(pids)?);

    figures.change_errors = written.errors;
    figures.change_writes = written.latencies;
    for run in runs {
        let missed = run.missed(&written.acknowledged);
        figures.missed += missed;
        if missed == 0 {
            figures.complete += 1;
        }
        if let Some(error) = &run.error {
            figures.failed_watchers += 1;
            if figures.failed_watchers <= 3 {
                eprintln!("watcher: {error}");
            }
        }
        figures.duplicates += run.duplicates;
        figures.unexpected += run.unexpected;
        figures.lags.extend(run.lags);
    }
    Ok(figures)
}

/// What an object of the applied manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestKind {
    ConfigMap,
    Service,
    Deployment,
}

impl ManifestKind {
    /// The `i`-th object's: three ConfigMaps to a Service and a Deployment.
    fn of(i: usize) -> ManifestKind {
        match i % 5 {
            3 => ManifestKind::Service,
            4 => ManifestKind::Deployment,
            _ => ManifestKind::ConfigMap,
        }
    }

    /// The URL of its kind in the phase's namespace.
    fn collection(self) -> String {
        match self {
            ManifestKind::ConfigMap => format!("/api/v1/namespaces/{APPLY_NAMESPACE}/configmaps"),
            ManifestKind::Service => format!("/api/v1/namespaces/{APPLY_NAMESPACE}/services"),
            ManifestKind::Deployment => {
                format!("/apis/apps/v1/namespaces/{APPLY_NAMESPACE}/deployments")
            }
        }
    }
}

/// One object of the applied manifest.
#[derive(Debug, Clone)]
struct ManifestObject {
    kind: ManifestKind,
    name: String,
    /// Its URL.
    path: String,
    /// What is applied: the object as Kubernetes JSON.
    body: Vec<u8>,
}

impl ManifestObject {
    /// The `i`-th object of the manifest, as a chart writes it: labels,
    /// a Service selecting a Deployment's pods, a Deployment of no
    /// replicas (nothing to schedule) whose fields the server defaults.
    fn numbered(i: usize) -> ManifestObject {
        let kind = ManifestKind::of(i);
        let name = format!("bench-{i}");
        let selector = serde_json::json!({"app.kubernetes.io/name": name});
        let metadata = serde_json::json!({
            "name": name,
            "namespace": APPLY_NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/managed-by": APPLY_MANAGER,
            },
        });
        let value = match kind {
            ManifestKind::ConfigMap => serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": {
                    "index": i.to_string(),
                    "settings.yaml": format!(
                        "instance: {i}\nlogLevel: info\nfeatures:\n  - metrics\n  - tracing\n"
                    ),
                },
            }),
            ManifestKind::Service => serde_json::json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "selector": selector,
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            }),
            ManifestKind::Deployment => serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": selector},
                        "spec": {
                            "schedulerName": NO_SCHEDULER,
                            "containers": [{
                                "name": "app",
                                "image": "registry.invalid/bench:1",
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            }],
                        },
                    },
                },
            }),
        };
        ManifestObject {
            kind,
            path: format!("{}/{name}", kind.collection()),
            name,
            body: serde_json::to_vec(&value).unwrap_or_default(),
        }
    }

    /// Where it is applied.
    fn apply_path(&self) -> String {
        format!("{}?fieldManager={APPLY_MANAGER}", self.path)
    }

    /// The resourceVersion of `answer`, which must be this object.
    fn resource_version_in(&self, answer: &[u8]) -> anyhow::Result<String> {
        let head: ObjectHead = serde_json::from_slice(answer)
            .with_context(|| format!("the answer for {:?} {} is not JSON", self.kind, self.name))?;
        anyhow::ensure!(
            head.metadata.name == self.name && !head.metadata.resource_version.is_empty(),
            "the answer for {:?} {} is not that object with a resourceVersion: {head:?}",
            self.kind,
            self.name
        );
        Ok(head.metadata.resource_version)
    }
}

/// What the phase reads of an object answer.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ObjectHead {
    metadata: ObjectHeadMeta,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ObjectHeadMeta {
    name: String,
    resource_version: String,
}

/// Server-side applies every object of `manifest`, one at a time, each
/// answered `expected`: their resourceVersions as answered. Each
/// request's time goes to `latencies`.
async fn apply_all(
    rest: &RestConnection,
    manifest: &[ManifestObject],
    expected: StatusCode,
    latencies: &mut Latencies,
) -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::with_capacity(manifest.len());
    for object in manifest {
        let (path, body) = (object.apply_path(), object.body.clone());
        let t = Instant::now();
        let answer = rest
            .call_typed(
                Method::PATCH,
                &path,
                JSON_ACCEPT,
                Some((APPLY_CONTENT_TYPE, body)),
                expected,
            )
            .await?;
        latencies.push(t.elapsed());
        versions.push(object.resource_version_in(&answer)?);
    }
    Ok(versions)
}

/// GETs every object of `manifest`, one at a time: their resourceVersions.
/// Each request's time goes to `latencies`.
async fn get_all(
    rest: &RestConnection,
    manifest: &[ManifestObject],
    latencies: &mut Latencies,
) -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::with_capacity(manifest.len());
    for object in manifest {
        let t = Instant::now();
        let answer = rest
            .call(Method::GET, &object.path, JSON_ACCEPT, None, StatusCode::OK)
            .await?;
        latencies.push(t.elapsed());
        versions.push(object.resource_version_in(&answer)?);
    }
    Ok(versions)
}

/// The store's revision: a list's resourceVersion (the phase's
/// ConfigMaps', a short list).
async fn store_revision(rest: &RestConnection) -> anyhow::Result<u64> {
    let path = ManifestKind::ConfigMap.collection();
    let listed = rest
        .call(Method::GET, &path, JSON_ACCEPT, None, StatusCode::OK)
        .await?;
    let list: ListHead = serde_json::from_slice(&listed).context("a ConfigMap list is not JSON")?;
    let revision = list.metadata.resource_version;
    revision
        .parse::<u64>()
        .with_context(|| format!("the list's resourceVersion {revision:?} is not a revision"))
}

/// Waits until the store's revision holds still (two reads in a row
/// [`APPLY_SETTLE_POLL`] apart find it unchanged): the revision, and how
/// long that took.
async fn settled_revision(rest: &RestConnection) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut revision = store_revision(rest).await?;
    let mut unchanged = 0;
    while unchanged < 2 {
        anyhow::ensure!(
            started.elapsed() < APPLY_SETTLE_WITHIN,
            "the store was still changing {APPLY_SETTLE_WITHIN:?} after the manifest was \
             applied (revision {revision}): something writes on its own, so whether a \
             re-apply stores nothing cannot be told"
        );
        tokio::time::sleep(APPLY_SETTLE_POLL).await;
        let now = store_revision(rest).await?;
        if now == revision {
            unchanged += 1;
        } else {
            (revision, unchanged) = (now, 0);
        }
    }
    Ok((revision, started.elapsed()))
}

/// The indexes of the objects whose answered resourceVersion is not the
/// one kept.
fn moved(kept: &[String], answered: &[String]) -> Vec<usize> {
    kept.iter()
        .zip(answered)
        .enumerate()
        .filter(|(_, (was, is))| was != is)
        .map(|(i, _)| i)
        .collect()
}

/// Phase 4's figures.
#[derive(Debug, Default)]
struct ApplyFigures {
    /// One sample a round: every object re-applied, then every one read.
    apply_rounds: Latencies,
    get_rounds: Latencies,
    /// One sample a request.
    apply_requests: Latencies,
    get_requests: Latencies,
    /// The objects whose resourceVersion a re-apply moved, by name.
    changed: Vec<String>,
    revision_before: u64,
    revision_after: u64,
    settle: Duration,
}

impl ApplyFigures {
    /// A round of re-applies over a round of GETs, at the `p`-th
    /// percentile of each; none without GET rounds.
    fn ratio(&self, p: f64) -> Option<f64> {
        let get = self.get_rounds.percentile_ms(p);
        (get > 0.0).then(|| self.apply_rounds.percentile_ms(p) / get)
    }

    fn stored_nothing(&self) -> bool {
        self.changed.is_empty() && self.revision_before == self.revision_after
    }
}

/// Phase 4: the manifest created by server-side apply, then rounds of
/// re-applying it unchanged and GETting it.
async fn measure_applies(
    connections: &Connections,
    args: &ApiArgs,
) -> anyhow::Result<ApplyFigures> {
    let rest = nth(&connections.rest, 0)?;
    let manifest: Vec<ManifestObject> = (0..args.apply_objects)
        .map(ManifestObject::numbered)
        .collect();
    apply_all(
        &rest,
        &manifest,
        StatusCode::CREATED,
        &mut Latencies::default(),
    )
    .await
    .context("creating the manifest by server-side apply")?;
    let (revision_before, settle) = settled_revision(&rest).await?;
    let kept = get_all(&rest, &manifest, &mut Latencies::default()).await?;
    eprintln!(
        "{} objects applied; the store settled at revision {revision_before} in {:.1}s; \
         {} rounds of re-applying and GETting them",
        manifest.len(),
        settle.as_secs_f64(),
        args.apply_rounds
    );
    let mut figures = ApplyFigures {
        revision_before,
        settle,
        ..Default::default()
    };
    let mut changed = vec![false; manifest.len()];
    for _ in 0..args.apply_rounds {
        let started = Instant::now();
        let applied = apply_all(
            &rest,
            &manifest,
            StatusCode::OK,
            &mut figures.apply_requests,
        )
        .await
        .context("re-applying the unchanged manifest")?;
        figures.apply_rounds.push(started.elapsed());
        let started = Instant::now();
        let read = get_all(&rest, &manifest, &mut figures.get_requests).await?;
        figures.get_rounds.push(started.elapsed());
        for i in moved(&kept, &applied)
            .into_iter()
            .chain(moved(&kept, &read))
        {
            changed[i] = true;
        }
    }
    figures.revision_after = store_revision(&rest).await?;
    figures.changed = manifest
        .iter()
        .zip(&changed)
        .filter(|(_, changed)| **changed)
        .map(|(object, _)| format!("{:?} {}", object.kind, object.name))
        .collect();
    Ok(figures)
}

/// What decides whether the run passes.
#[derive(Debug)]
struct Gates {
    ratio: Option<f64>,
    min_rest_ratio: f64,
    create_errors: usize,
    change_errors: usize,
    watchers: usize,
    complete_watchers: usize,
    /// The objects an unchanged re-apply changed, and the store's
    /// revision before and after the re-applies (equal when the phase is
    /// skipped).
    apply_changed: Vec<String>,
    apply_revisions: (u64, u64),
    apply_ratio: Option<f64>,
    max_apply_ratio: f64,
}

/// Why the run fails; empty when it passes.
fn failures(gates: &Gates) -> Vec<String> {
    let mut failures = Vec::new();
    if gates.min_rest_ratio > 0.0 {
        match gates.ratio {
            Some(r) if r >= gates.min_rest_ratio => {}
            Some(r) => failures.push(format!(
                "REST creates {r:.2} x gRPC's, below --min-rest-ratio {}",
                gates.min_rest_ratio
            )),
            None => failures.push("no gRPC create succeeded, so there is no ratio".to_owned()),
        }
    }
    if gates.create_errors > 0 {
        failures.push(format!("{} creates failed", gates.create_errors));
    }
    if gates.change_errors > 0 {
        failures.push(format!("{} watched changes failed", gates.change_errors));
    }
    if gates.complete_watchers < gates.watchers {
        failures.push(format!(
            "{} of {} watchers missed changes",
            gates.watchers - gates.complete_watchers,
            gates.watchers
        ));
    }
    if !gates.apply_changed.is_empty() {
        let shown: Vec<&str> = gates
            .apply_changed
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        failures.push(format!(
            "re-applying the unchanged manifest changed {} objects ({}{})",
            gates.apply_changed.len(),
            shown.join(", "),
            if gates.apply_changed.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    let (before, after) = gates.apply_revisions;
    if before != after {
        failures.push(format!(
            "re-applying the unchanged manifest moved the store from revision {before} to {after}"
        ));
    }
    if gates.max_apply_ratio > 0.0 {
        match gates.apply_ratio {
            Some(r) if r <= gates.max_apply_ratio => {}
            Some(r) => failures.push(format!(
                "re-applying takes {r:.2} x GETting the same objects, over --max-apply-ratio {}",
                gates.max_apply_ratio
            )),
            None => failures.push("no GET round was timed, so there is no apply ratio".to_owned()),
        }
    }
    failures
}

/// Makes a namespace, unless it exists.
async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespace = skiff_objects::namespaces::named(name, "");
    match client.create(namespace).await {
        Ok(_) | Err(ClientError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// `connections_for(clients)` connections of each API to `leader`, each
/// used once so that none is made during a timed round.
async fn connect_both(
    leader: &str,
    tls: &Arc<ClientConfig>,
    clients: usize,
) -> anyhow::Result<Connections> {
    let mut connections = Connections {
        grpc: Vec::new(),
        rest: Vec::new(),
    };
    let namespace_path = format!("/api/v1/namespaces/{CREATE_NAMESPACE}");
    for _ in 0..connections_for(clients, CLIENTS_PER_CONNECTION) {
        let client = skiff_e2e::credentials::admin_client(leader)?;
        client.get(Kind::Namespace, "", CREATE_NAMESPACE).await?;
        connections.grpc.push(client);
        let rest = RestConnection::connect(leader, tls.clone()).await?;
        rest.call(
            Method::GET,
            &namespace_path,
            JSON_ACCEPT,
            None,
            StatusCode::OK,
        )
        .await?;
        connections.rest.push(rest);
    }
    Ok(connections)
}

pub async fn run(args: ApiArgs) -> anyhow::Result<serde_json::Value> {
    validate(&args)?;
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    eprintln!(
        "starting {} skiff masters under {}",
        args.masters,
        dir.path().display()
    );
    let cluster = MasterCluster::start_in(dir.path(), args.masters, &[]).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.masters[leader].api_addr.clone();
    let masters: Vec<String> = cluster
        .masters
        .iter()
        .map(|master| master.api_addr.clone())
        .collect();
    let pids: Vec<u32> = cluster.masters.iter().filter_map(|m| m.pid()).collect();
    let tls = admin_rest_tls(&leader_addr)?;
    let admin = skiff_e2e::credentials::admin_client(&leader_addr)?;
    for namespace in [
        CREATE_NAMESPACE,
        LIST_NAMESPACE,
        WATCH_NAMESPACE,
        APPLY_NAMESPACE,
    ] {
        create_namespace(&admin, namespace).await?;
    }
    let connections = connect_both(&leader_addr, &tls, args.clients).await?;
    eprintln!(
        "leader is {leader_addr}; {} clients per API on {} connections each, {} creates each",
        args.clients,
        connections.grpc.len(),
        args.creates
    );

    let (grpc, rest) = measure_creates(&connections, &pids, &args).await?;
    let create_ratio = ratio(rest.per_sec(), grpc.per_sec());
    eprintln!(
        "creates: gRPC {:.0}/s (p99 {:.1} ms), REST {:.0}/s (p99 {:.1} ms)",
        grpc.per_sec(),
        grpc.tally.latencies.percentile_ms(99.0),
        rest.per_sec(),
        rest.tally.latencies.percentile_ms(99.0)
    );
    let lists = measure_lists(&connections, &args).await?;
    eprintln!(
        "lists of {} pods: JSON p99 {:.1} ms ({} bytes), Table p99 {:.1} ms ({} bytes)",
        args.list_pods,
        lists.json.percentile_ms(99.0),
        lists.json_bytes,
        lists.table.percentile_ms(99.0),
        lists.table_bytes
    );
    let watches = measure_watches(&connections, &masters, &pids, &tls, &args).await?;
    let applies = if args.apply_objects > 0 {
        let applies = measure_applies(&connections, &args).await?;
        eprintln!(
            "re-applying {} unchanged objects: round p50 {:.1} ms, p99 {:.1} ms; GETting them: \
             p50 {:.1} ms, p99 {:.1} ms; ratio {}; {}",
            args.apply_objects,
            applies.apply_rounds.percentile_ms(50.0),
            applies.apply_rounds.percentile_ms(99.0),
            applies.get_rounds.percentile_ms(50.0),
            applies.get_rounds.percentile_ms(99.0),
            applies
                .ratio(50.0)
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            if applies.stored_nothing() {
                "nothing stored".to_owned()
            } else {
                format!(
                    "{} objects changed, store revision {} -> {}",
                    applies.changed.len(),
                    applies.revision_before,
                    applies.revision_after
                )
            }
        );
        applies
    } else {
        ApplyFigures::default()
    };

    let verdict = failures(&Gates {
        ratio: create_ratio,
        min_rest_ratio: args.min_rest_ratio,
        create_errors: grpc.tally.errors + rest.tally.errors,
        change_errors: watches.change_errors,
        watchers: args.watchers,
        complete_watchers: watches.complete,
        apply_changed: applies.changed.clone(),
        apply_revisions: (applies.revision_before, applies.revision_after),
        apply_ratio: applies.ratio(50.0),
        max_apply_ratio: args.max_apply_ratio,
    });
    let failure = (!verdict.is_empty()).then(|| format!("api: {}", verdict.join("; ")));
    let apply_rounds = if args.apply_objects > 0 {
        args.apply_rounds
    } else {
        0
    };
    eprintln!(
        "api: rest/grpc create {:.0}/{:.0} per s, ratio {}, list json p99 {:.1} ms, \
         table p99 {:.1} ms, watch lag p99 {:.1} ms ({}/{} watchers saw every change), \
         rss {:.1} MiB, re-apply/get {}",
        rest.per_sec(),
        grpc.per_sec(),
        create_ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
        lists.json.percentile_ms(99.0),
        lists.table.percentile_ms(99.0),
        watches.lags.percentile_ms(99.0),
        watches.complete,
        args.watchers,
        watches.rss_after_mib,
        applies
            .ratio(50.0)
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
    );
    let report = serde_json::json!({
        "scenario": "api",
        "objects": "pods",
        "masters": args.masters,
        "clients": args.clients,
        "connections_per_api": connections.grpc.len(),
        "creates": args.creates,
        "grpc_acknowledged": grpc.tally.latencies.len(),
        "grpc_errors": grpc.tally.errors,
        "grpc_creates_per_sec": round(grpc.per_sec()),
        "grpc_p50_ms": round(grpc.tally.latencies.percentile_ms(50.0)),
        "grpc_p99_ms": round(grpc.tally.latencies.percentile_ms(99.0)),
        "grpc_master_cpu_cores": round(grpc.cpu_cores()),
        "rest_acknowledged": rest.tally.latencies.len(),
        "rest_errors": rest.tally.errors,
        "rest_creates_per_sec": round(rest.per_sec()),
        "rest_p50_ms": round(rest.tally.latencies.percentile_ms(50.0)),
        "rest_p99_ms": round(rest.tally.latencies.percentile_ms(99.0)),
        "rest_master_cpu_cores": round(rest.cpu_cores()),
        "ratio": create_ratio.map(round),
        "min_rest_ratio": args.min_rest_ratio,
        "list_pods": args.list_pods,
        "lists": args.lists,
        "list_10k_p50_ms": round(lists.json.percentile_ms(50.0)),
        "list_10k_p99_ms": round(lists.json.percentile_ms(99.0)),
        "list_json_bytes": lists.json_bytes,
        "list_10k_table_p50_ms": round(lists.table.percentile_ms(50.0)),
        "list_10k_table_p99_ms": round(lists.table.percentile_ms(99.0)),
        "list_table_bytes": lists.table_bytes,
        "watchers": args.watchers,
        "changes": args.changes,
        "change_rate": args.change_rate,
        "change_seconds": round(watches.change_seconds),
        "change_errors": watches.change_errors,
        "change_write_p99_ms": round(watches.change_writes.percentile_ms(99.0)),
        "watchers_complete": watches.complete,
        "watchers_failed": watches.failed_watchers,
        "missed_events": watches.missed,
        "duplicate_events": watches.duplicates,
        "unexpected_events": watches.unexpected,
        "watch_events": watches.lags.len(),
        "watch_lag_p50_ms": round(watches.lags.percentile_ms(50.0)),
        "watch_lag_p99_ms": round(watches.lags.percentile_ms(99.0)),
        "watch_lag_max_ms": round(watches.lags.percentile_ms(100.0)),
        "master_rss_mib_before_watchers": round(watches.rss_before_mib),
        "master_rss_mib_watching": round(watches.rss_watching_mib),
        "master_rss_mib": round(watches.rss_after_mib),
        "apply_objects": args.apply_objects,
        "apply_rounds": apply_rounds,
        "apply_round_p50_ms": round(applies.apply_rounds.percentile_ms(50.0)),
        "apply_round_p99_ms": round(applies.apply_rounds.percentile_ms(99.0)),
        "get_round_p50_ms": round(applies.get_rounds.percentile_ms(50.0)),
        "get_round_p99_ms": round(applies.get_rounds.percentile_ms(99.0)),
        "apply_request_p50_ms": round(applies.apply_requests.percentile_ms(50.0)),
        "apply_request_p99_ms": round(applies.apply_requests.percentile_ms(99.0)),
        "get_request_p50_ms": round(applies.get_requests.percentile_ms(50.0)),
        "get_request_p99_ms": round(applies.get_requests.percentile_ms(99.0)),
        "apply_get_ratio_p50": applies.ratio(50.0).map(round),
        "apply_get_ratio_p99": applies.ratio(99.0).map(round),
        "max_apply_ratio": args.max_apply_ratio,
        "apply_settle_seconds": round(applies.settle.as_secs_f64()),
        "apply_changed_objects": applies.changed.len(),
        "apply_revision_before": applies.revision_before,
        "apply_revision_after": applies.revision_after,
        "apply_stored_nothing": applies.stored_nothing(),
        "pass": failure.is_none(),
        "failure": failure,
    });
    drop(connections);
    drop(cluster);
    if args.keep {
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    /// `skiff-bench api` with the flags in `line`.
    fn parse(line: &str) -> ApiArgs {
        let argv = std::iter::once("api").chain(line.split_whitespace());
        Cli::try_parse_from(argv).unwrap().api
    }

    #[test]
    fn defaults_are_the_issues_load_and_only_report_the_ratio() {
        let args = parse("");
        assert_eq!(args.masters, 1);
        assert_eq!(args.clients, 64);
        assert_eq!(args.creates, 10_000);
        assert_eq!(args.list_pods, 10_000);
        assert_eq!(args.lists, 50);
        assert_eq!(args.watchers, 500);
        assert_eq!(args.changes, 1000);
        assert_eq!(args.change_rate, 100);
        assert!(args.min_rest_ratio.abs() < f64::EPSILON);
        assert_eq!((args.apply_objects, args.apply_rounds), (50, 20));
        assert!(args.max_apply_ratio.abs() < f64::EPSILON);
        let smoke = parse(
            "--creates 200 --clients 8 --list-pods 300 --lists 5 --watchers 20 --changes 50 \
             --apply-rounds 3 --min-rest-ratio 0.5",
        );
        assert_eq!(smoke.creates, 200);
        assert_eq!(smoke.list_pods, 300);
        assert_eq!(smoke.watchers, 20);
        assert!((smoke.min_rest_ratio - 0.5).abs() < f64::EPSILON);
        assert_eq!((smoke.apply_objects, smoke.apply_rounds), (50, 3));
        assert!(validate(&smoke).is_ok());
    }

    #[test]
    fn refuses_runs_that_cannot_be_made() {
        assert!(validate(&parse("")).is_ok());
        assert!(validate(&parse("--masters 0")).is_err());
        assert!(validate(&parse("--clients 0")).is_err());
        assert!(validate(&parse("--watchers 0")).is_err());
        assert!(validate(&parse("--changes 0")).is_err());
        assert!(validate(&parse("--lists 0")).is_err());
        assert!(validate(&parse("--min-rest-ratio=-1")).is_err());
        assert!(validate(&parse("--min-rest-ratio NaN")).is_err());
        assert!(validate(&parse("--apply-rounds 0")).is_err());
        assert!(validate(&parse("--apply-objects 0 --apply-rounds 0")).is_ok());
        assert!(validate(&parse("--max-apply-ratio 2")).is_ok());
        assert!(validate(&parse("--max-apply-ratio=-1")).is_err());
        assert!(validate(&parse("--max-apply-ratio 2 --apply-objects 0")).is_err());
    }

    #[test]
    fn both_apis_create_as_many_in_mirrored_rounds() {
        use Protocol::{Grpc, Rest};
        for creates in [1, 2, 201, 10_000] {
            let mut per_protocol = [0, 0];
            for (protocol, count) in create_rounds(creates) {
                per_protocol[usize::from(protocol == Rest)] += count;
            }
            assert_eq!(per_protocol, [creates, creates]);
        }
        let order: Vec<Protocol> = create_rounds(10).iter().map(|(p, _)| *p).collect();
        assert_eq!(order, [Grpc, Rest, Rest, Grpc]);
    }

    #[test]
    fn clients_take_every_index_once_and_share_connections_by_eight() {
        let mut taken: Vec<usize> = (0..7).flat_map(|c| strided(100, 7, c)).collect();
        taken.sort_unstable();
        assert_eq!(taken, (0..100).collect::<Vec<_>>());
        assert_eq!(strided(3, 8, 5).count(), 0);
        assert_eq!(connections_for(64, CLIENTS_PER_CONNECTION), 8);
        assert_eq!(connections_for(65, CLIENTS_PER_CONNECTION), 9);
        assert_eq!(connections_for(500, WATCHERS_PER_CONNECTION), 10);
        assert_eq!(connections_for(1, WATCHERS_PER_CONNECTION), 1);
        assert_eq!(nth(&[1, 2, 3], 4).unwrap(), 2);
        assert!(nth::<u8>(&[], 0).is_err());
    }

    #[test]
    fn changes_are_paced_at_the_rate_or_not_at_all() {
        let start = Instant::now();
        assert_eq!(due_at(start, 150, 0), None);
        assert_eq!(due_at(start, 0, 100), Some(start));
        assert_eq!(
            due_at(start, 150, 100),
            Some(start + Duration::from_millis(1500))
        );
        assert_eq!(
            due_at(start, 1, 3),
            Some(start + Duration::from_nanos(333_333_333))
        );
    }

    #[test]
    fn the_rest_body_is_the_grpc_pod_in_kubernetes_json() {
        let annotations = stamp(3, Duration::from_nanos(42));
        let pod = bench_pod("bench-create", "rest-r1-7", annotations);
        let body: serde_json::Value = serde_json::from_slice(&rest_body(&pod)).unwrap();
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["kind"], "Pod");
        assert_eq!(body["metadata"]["name"], "rest-r1-7");
        assert_eq!(body["metadata"]["namespace"], "bench-create");
        assert_eq!(body["metadata"]["labels"]["app"], "bench");
        assert_eq!(body["metadata"]["annotations"][CHANGE_ANNOTATION], "3");
        assert_eq!(body["metadata"]["annotations"][SENT_ANNOTATION], "42");
        assert_eq!(body["spec"]["schedulerName"], NO_SCHEDULER);
        assert_eq!(body["spec"]["containers"][0]["name"], "app");
        let requests = &body["spec"]["containers"][0]["resources"]["requests"];
        assert_eq!(requests["cpu"], "10m");
    }

    #[test]
    fn watch_lines_give_the_changes_they_carry() {
        let modified = serde_json::json!({
            "type": "MODIFIED",
            "object": {
                "kind": "Pod",
                "metadata": {
                    "name": "watch-7",
                    "annotations": {CHANGE_ANNOTATION: "7", SENT_ANNOTATION: "1500000000"},
                },
                "spec": {"containers": [{"name": "app"}]},
            },
        })
        .to_string();
        assert_eq!(
            stamped_change(modified.as_bytes()),
            Ok(Some(StampedChange {
                index: 7,
                sent: Duration::from_millis(1500),
            }))
        );
        let unstamped = br#"{"type":"MODIFIED","object":{"metadata":{"name":"watch-1"}}}"#;
        assert_eq!(stamped_change(unstamped), Ok(None));
        let bookmark = br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#;
        assert_eq!(stamped_change(bookmark), Ok(None));
        let error = br#"{"type":"ERROR","object":{"kind":"Status","message":"too old resource version: 3","code":410}}"#;
        let expired = WatchLineError::Error("too old resource version: 3".to_owned());
        assert_eq!(stamped_change(error), Err(expired));
        let bad = serde_json::json!({
            "type": "ADDED",
            "object": {
                "metadata": {"annotations": {CHANGE_ANNOTATION: "x", SENT_ANNOTATION: "1"}},
            },
        })
        .to_string();
        let bad_stamp = WatchLineError::BadStamp {
            index: "x".to_owned(),
            sent: "1".to_owned(),
        };
        assert_eq!(stamped_change(bad.as_bytes()), Err(bad_stamp));
        let not_json = stamped_change(b"not json");
        assert!(matches!(not_json, Err(WatchLineError::NotAnEvent(_))));
    }

    #[test]
    fn a_watcher_counts_each_change_once_with_its_lag() {
        let mut run = WatcherRun::new(3);
        let change = |index, sent_ms| StampedChange {
            index,
            sent: Duration::from_millis(sent_ms),
        };
        run.record(change(0, 10), Duration::from_millis(25));
        run.record(change(0, 10), Duration::from_millis(30));
        run.record(change(5, 10), Duration::from_millis(30));
        // A clock read before the stamp (another thread) is no lag.
        run.record(change(2, 40), Duration::from_millis(39));
        assert_eq!((run.distinct, run.duplicates, run.unexpected), (2, 1, 1));
        assert!(!run.saw_all());
        assert_eq!(run.lags.percentile_ms(100.0), 15.0);
        assert_eq!(run.lags.percentile_ms(1.0), 0.0);
        assert_eq!(run.missed(&[0, 1, 2]), 1);
        // Only acknowledged changes count as missed.
        assert_eq!(run.missed(&[0, 2]), 0);
        run.record(change(1, 50), Duration::from_millis(60));
        assert!(run.saw_all());
    }

    #[test]
    fn list_answers_are_counted_in_their_own_format() {
        let list = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"12"},"items":[{"metadata":{"name":"a"}},{}]}"#;
        let table = br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[],"rows":[{"cells":["a"]}]}"#;
        assert_eq!(ListFormat::Json.pods_in(list).unwrap(), 2);
        assert_eq!(ListFormat::Table.pods_in(table).unwrap(), 1);
        assert!(ListFormat::Json.pods_in(table).is_err());
        assert!(ListFormat::Table.pods_in(list).is_err());
        let head: ListHead = serde_json::from_slice(list).unwrap();
        assert_eq!(head.metadata.resource_version, "12");
    }

    fn gates() -> Gates {
        Gates {
            ratio: Some(0.9),
            min_rest_ratio: 0.0,
            create_errors: 0,
            change_errors: 0,
            watchers: 500,
            complete_watchers: 500,
            apply_changed: Vec::new(),
            apply_revisions: (70, 70),
            apply_ratio: Some(1.4),
            max_apply_ratio: 0.0,
        }
    }

    #[test]
    fn the_run_fails_when_an_unchanged_re_apply_stores_something_or_is_too_slow_when_asked() {
        let changed = Gates {
            apply_changed: vec!["ConfigMap bench-0".to_owned()],
            ..gates()
        };
        assert_eq!(
            failures(&changed),
            ["re-applying the unchanged manifest changed 1 objects (ConfigMap bench-0)"]
        );
        let many = Gates {
            apply_changed: (0..5).map(|i| format!("ConfigMap bench-{i}")).collect(),
            ..gates()
        };
        assert!(
            failures(&many)[0].ends_with("bench-2, ...)"),
            "{:?}",
            failures(&many)
        );
        let moved = Gates {
            apply_revisions: (70, 71),
            ..gates()
        };
        assert_eq!(
            failures(&moved),
            ["re-applying the unchanged manifest moved the store from revision 70 to 71"]
        );
        let slow = Gates {
            apply_ratio: Some(2.5),
            ..gates()
        };
        assert!(failures(&slow).is_empty(), "0 only reports the ratio");
        let bounded = Gates {
            max_apply_ratio: 2.0,
            ..slow
        };
        assert_eq!(failures(&bounded).len(), 1);
        let within = Gates {
            max_apply_ratio: 2.0,
            ..gates()
        };
        assert!(failures(&within).is_empty());
    }

    #[test]
    fn the_manifest_mixes_kinds_as_a_chart_does_and_applies_as_skiff_bench() {
        let manifest: Vec<ManifestObject> = (0..50).map(ManifestObject::numbered).collect();
        let count = |kind: ManifestKind| manifest.iter().filter(|o| o.kind == kind).count();
        assert_eq!(
            (
                count(ManifestKind::ConfigMap),
                count(ManifestKind::Service),
                count(ManifestKind::Deployment)
            ),
            (30, 10, 10)
        );
        let deployment = &manifest[4];
        assert_eq!(
            deployment.apply_path(),
            "/apis/apps/v1/namespaces/bench-apply/deployments/bench-4?fieldManager=skiff-bench"
        );
        let body: serde_json::Value = serde_json::from_slice(&deployment.body).unwrap();
        assert_eq!(body["apiVersion"], "apps/v1");
        assert_eq!(body["kind"], "Deployment");
        assert_eq!(body["metadata"]["namespace"], APPLY_NAMESPACE);
        assert_eq!(body["spec"]["replicas"], 0);
        let selector = &body["spec"]["selector"]["matchLabels"];
        assert_eq!(&body["spec"]["template"]["metadata"]["labels"], selector);
        let service: serde_json::Value = serde_json::from_slice(&manifest[3].body).unwrap();
        assert_eq!(
            manifest[3].path,
            "/api/v1/namespaces/bench-apply/services/bench-3"
        );
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/name"],
            "bench-3"
        );
        let config: serde_json::Value = serde_json::from_slice(&manifest[0].body).unwrap();
        assert_eq!(config["kind"], "ConfigMap");
        assert_eq!(config["data"]["index"], "0");
    }

    #[test]
    fn answers_give_their_objects_resource_version_and_moves_are_found() {
        let object = ManifestObject::numbered(0);
        let answer =
            br#"{"kind":"ConfigMap","metadata":{"name":"bench-0","resourceVersion":"41"}}"#;
        assert_eq!(object.resource_version_in(answer).unwrap(), "41");
        let other = br#"{"kind":"ConfigMap","metadata":{"name":"bench-1","resourceVersion":"41"}}"#;
        assert!(object.resource_version_in(other).is_err());
        assert!(object
            .resource_version_in(b"{\"metadata\":{\"name\":\"bench-0\"}}")
            .is_err());
        assert!(object.resource_version_in(b"not json").is_err());
        let kept = ["5", "6", "7"].map(String::from);
        assert!(moved(&kept, &kept).is_empty());
        assert_eq!(moved(&kept, &["5", "9", "8"].map(String::from)), [1, 2]);
    }

    #[test]
    fn the_apply_ratio_is_a_re_apply_round_over_a_get_round() {
        let mut figures = ApplyFigures::default();
        assert_eq!(figures.ratio(50.0), None);
        assert!(figures.stored_nothing());
        figures.apply_rounds.push(Duration::from_millis(30));
        figures.get_rounds.push(Duration::from_millis(20));
        let ratio = figures.ratio(50.0).unwrap();
        assert!((ratio - 1.5).abs() < 1e-9, "{ratio}");
        figures.revision_after = 1;
        assert!(!figures.stored_nothing());
    }

    #[test]
    fn the_run_fails_on_a_missed_change_a_failed_write_or_a_low_ratio_when_asked() {
        assert!(failures(&gates()).is_empty());
        let slow = Gates {
            ratio: Some(0.5),
            ..gates()
        };
        assert!(failures(&slow).is_empty(), "0 only reports the ratio");
        let bounded = Gates {
            min_rest_ratio: 0.8,
            ..slow
        };
        assert_eq!(failures(&bounded).len(), 1);
        let fast_enough = Gates {
            min_rest_ratio: 0.8,
            ..gates()
        };
        assert!(failures(&fast_enough).is_empty());
        let no_ratio = Gates {
            ratio: None,
            min_rest_ratio: 0.8,
            ..gates()
        };
        assert_eq!(failures(&no_ratio).len(), 1);
        let missed = Gates {
            complete_watchers: 499,
            ..gates()
        };
        assert_eq!(failures(&missed), ["1 of 500 watchers missed changes"]);
        let errors = Gates {
            create_errors: 2,
            change_errors: 1,
            ..gates()
        };
        assert_eq!(failures(&errors).len(), 2);
        assert_eq!(ratio(4_000.0, 5_000.0), Some(0.8));
        assert_eq!(ratio(4_000.0, 0.0), None);
    }
}
