//! `scale`: whether any hot path grows with the number of objects (issue
//! 14). One master and `--nodes` hollow nodes are loaded in two stages of
//! the same run: first `--fraction` of the Deployments and Services, then
//! all of them. Once a stage has settled (every pod bound, Running and
//! Ready, every Service's Endpoints listing the pods it selects, the store
//! revision still), the same probes run: Service creates, scheduling a new
//! Deployment, scaling one up, and an Endpoints update; the master's memory
//! and CPU are read too. Work per operation that grows with the number of
//! objects, which is quadratic work overall, shows as a probe that is
//! slower at full load than at the fraction; a ratio above `--max-ratio`
//! fails the run once the figures are printed.
//!
//! Service `i` selects Deployment `i` while there is one, and otherwise a
//! label no pod carries: every Service has Endpoints (empty ones for those),
//! and the extra Services lengthen the Service list the Endpoints
//! controller reads on every pod change without adding pods per Service.
//! All nodes register before stage 1; their heartbeats cost the same in
//! both stages. Hollow nodes give each pod an IP when they report it
//! Running and Ready, so the Endpoints list real addresses. Probe objects
//! are deleted after their probe, so each stage holds its load and nothing
//! else.
//!
//! Unless `--follow-cluster false`, every hollow node also lists and
//! watches Nodes, Services and Endpoints as an agent does, so the master
//! sends every change of those to every node, as it would in a real
//! cluster; the Endpoints probe then also times how long until every node
//! has received the change (what kube-proxy's network programming latency
//! starts from).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::hollow::{Followed, FollowedKind, HollowConfig, HollowFleet};
use skiff_master::client::{Client, ClientError, Watch};
use skiff_objects::endpoints::{self, Endpoints};
use skiff_objects::services::{self, Service};
use skiff_objects::{IntoObject, Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object, WatchEvent};
use skiff_proto::v1;

use super::common::{
    deployment, node_of, round, running, start_fleet, wait_nodes_ready, BenchMaster,
};
use crate::latency::Latencies;

/// Where every object of the benchmark lives.
const NAMESPACE: &str = "default";
/// The `app` label no pod carries: Services beyond the Deployments select it.
const UNMATCHED: &str = "scale-unmatched";
/// Longest wait for one probe round.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// The store counts as still once its revision has not moved for this long.
const QUIET_FOR: Duration = Duration::from_millis(200);
/// How often the revision is read while waiting for stillness.
const QUIET_POLL: Duration = Duration::from_millis(20);
/// Longest wait for stillness before measuring anyway (and counting that).
const QUIET_WITHIN: Duration = Duration::from_secs(10);
/// How often a settling stage is checked.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// How often a settling stage says what it waits for.
const SETTLE_REPORT: Duration = Duration::from_secs(10);
/// Attempts at a create the master refuses as unavailable, or at a scale
/// that keeps conflicting.
const RETRIES: usize = 50;
const MIB: f64 = 1048576.0;

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Hollow nodes, all registered before stage 1.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Deployments at full load.
    #[arg(long, default_value_t = 1000)]
    pub deployments: usize,
    /// Pods of each Deployment.
    #[arg(long, default_value_t = 30)]
    pub replicas: usize,
    /// Services at full load: Service i selects Deployment i, the rest a
    /// label no pod carries (empty Endpoints).
    #[arg(long, default_value_t = 3000)]
    pub services: usize,
    /// Share of the Deployments and Services in stage 1.
    #[arg(long, default_value_t = 0.1)]
    pub fraction: f64,
    /// Largest allowed ratio of a probe at full load to the same probe in
    /// stage 1 (latencies: full ÷ stage 1; rates: stage 1 ÷ full).
    #[arg(long, default_value_t = 1.5)]
    pub max_ratio: f64,
    /// Concurrent creators, building the stages and in the create probe.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Services created in each round of the create probe.
    #[arg(long, default_value_t = 100)]
    pub probe_services: usize,
    /// Pods of the Deployment created in each round of the scheduling probe.
    #[arg(long, default_value_t = 50)]
    pub probe_replicas: usize,
    /// Pods the scale-up probe grows a one-pod Deployment to.
    #[arg(long, default_value_t = 10)]
    pub scale_to: usize,
    /// Rounds of the create, scheduling and scale-up probes in each stage.
    /// The latency probes compare medians: of 5 rounds, the 10% stage's
    /// fastest runs decided the scale-up ratio (1.77 once, 0.98-1.29
    /// otherwise), so 9.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Rounds of the Endpoints probe (one more pod each) in each stage
    /// (15: its median, like the other latency probes', needs more than a
    /// handful).
    #[arg(long, default_value_t = 15)]
    pub endpoint_rounds: usize,
    /// Longest wait, in seconds, for a stage to settle.
    #[arg(long, default_value_t = 1800)]
    pub stage_timeout: u64,
    /// Whether each hollow node lists and watches Nodes, Services and
    /// Endpoints, as every agent does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub follow_cluster: bool,
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<serde_json::Value> {
    check(&args)?;
    let [small, full] = stage_sizes(args.deployments, args.services, args.fraction);
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let config = HollowConfig {
        follow_cluster: args.follow_cluster,
        ..HollowConfig::default()
    };
    let _nodes = start_fleet(&fleet, args.nodes, config).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(300)).await?;
    let empty = count_objects(&master.client).await?;
    let followed = &fleet.followed;
    let small_figures = run_stage(
        &master,
        &args,
        followed,
        1,
        StageSize::default(),
        small,
        &empty,
    )
    .await?;
    let full_figures = run_stage(
        &master,
        &args,
        followed,
        2,
        small,
        full,
        &small_figures.objects,
    )
    .await?;
    Ok(report(&args, &small_figures, &full_figures))
}

/// Refuses flags that would make the comparison meaningless.
fn check(args: &ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.fraction > 0.0 && args.fraction < 1.0,
        "--fraction must be above 0 and below 1"
    );
    anyhow::ensure!(args.max_ratio >= 1.0, "--max-ratio must be at least 1");
    let counts = [
        ("--nodes", args.nodes),
        ("--deployments", args.deployments),
        ("--replicas", args.replicas),
        ("--clients", args.clients),
        ("--probe-services", args.probe_services),
        ("--probe-replicas", args.probe_replicas),
        ("--rounds", args.rounds),
        ("--endpoint-rounds", args.endpoint_rounds),
    ];
    for (flag, value) in counts {
        anyhow::ensure!(value >= 1, "{flag} must be at least 1");
    }
    anyhow::ensure!(args.scale_to >= 2, "--scale-to must be at least 2");
    let [small, full] = stage_sizes(args.deployments, args.services, args.fraction);
    anyhow::ensure!(
        small != full,
        "--fraction {} leaves nothing to grow: stage 1 would hold everything",
        args.fraction
    );
    Ok(())
}

/// Deployments and Services present in a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StageSize {
    deployments: usize,
    services: usize,
}

/// `fraction` of `total`, rounded: at least one (when there are any) and at
/// most all.
fn stage_count(total: usize, fraction: f64) -> usize {
    if total == 0 {
        return 0;
    }
    ((total as f64 * fraction).round() as usize).clamp(1, total)
}

/// The stage-1 size (`fraction` of each kind) and the full one. Nodes are
/// not staged: they all register first.
fn stage_sizes(deployments: usize, services: usize, fraction: f64) -> [StageSize; 2] {
    let small = StageSize {
        deployments: stage_count(deployments, fraction),
        services: stage_count(services, fraction),
    };
    let full = StageSize {
        deployments,
        services,
    };
    [small, full]
}

fn deployment_name(i: usize) -> String {
    format!("scale-dep-{i:05}")
}

fn service_name(i: usize) -> String {
    format!("scale-svc-{i:05}")
}

/// The `app` label Service `i` selects: Deployment `i`'s while there is
/// one, otherwise one no pod carries (its Endpoints exist and stay empty).
fn service_target(i: usize, deployments: usize) -> String {
    if i < deployments {
        deployment_name(i)
    } else {
        UNMATCHED.to_owned()
    }
}

/// The one-pod Deployment that round `round` of the scale-up probe grows.
fn scale_up_name(stage: usize, round: usize) -> String {
    format!("scale-up-s{stage}-r{round}")
}

/// The Deployment and the Service of the Endpoints probe.
fn endpoints_probe_name(stage: usize) -> String {
    format!("scale-ep-s{stage}")
}

/// A Service selecting the pods labelled `app`.
fn service(name: &str, app: &str) -> Object {
    let meta = v1::ObjectMeta {
        name: name.to_owned(),
        ..Default::default()
    };
    let spec = services::ServiceSpec {
        selector: Some([("app".to_owned(), app.to_owned())].into()),
        ports: Some(vec![services::ServicePort {
            name: Some("http".to_owned()),
            port: 80,
            target_port: Some(services::IntOrString::Int(8080)),
            ..Default::default()
        }]),
        ..Default::default()
    };
    services::object(meta, spec, None)
}

/// Deployment `i` of the load.
fn load_deployment(i: usize, replicas: i32) -> Object {
    deployment(&deployment_name(i), replicas).into_object()
}

/// Service `i` of the load (see [`service_target`]).
fn load_service(i: usize, deployments: usize) -> Object {
    service(&service_name(i), &service_target(i, deployments))
}

/// What the scale-up and Endpoints probes of `stage` start from: created
/// with the stage, so that its settling covers them.
fn fixtures(stage: usize, rounds: usize) -> Vec<Object> {
    let endpoints = endpoints_probe_name(stage);
    (0..rounds)
        .map(|round| deployment(&scale_up_name(stage, round), 1).into_object())
        .chain([
            deployment(&endpoints, 1).into_object(),
            service(&endpoints, &endpoints),
        ])
        .collect()
}

/// A pod count as a Deployment's `replicas`.
fn replicas_i32(count: usize) -> anyhow::Result<i32> {
    i32::try_from(count).with_context(|| format!("{count} pods: too many for a Deployment"))
}

/// Everything measured in one stage.
#[derive(Debug)]
struct StageFigures {
    size: StageSize,
    objects: ObjectCounts,
    /// From the first create to the stage settled.
    build_seconds: f64,
    build_cpu_seconds: f64,
    /// Objects the stage added, over which its build CPU is spread.
    added: usize,
    /// Master RSS once settled, before the probes.
    rss_bytes: u64,
    /// Master CPU time since it started, after the probes.
    cpu_seconds: f64,
    probe_seconds: f64,
    probe_cpu_seconds: f64,
    /// Waits for a still store that gave up (see [`wait_quiet`]).
    unsettled: usize,
    create: Throughput,
    schedule: Throughput,
    scale_up: Latencies,
    endpoints: Latencies,
    /// From the new pod's IP to the Endpoints listing it.
    endpoints_controller: Latencies,
    /// From the scale-up to every hollow node having received the
    /// Endpoints listing the new pod (none unless they follow).
    endpoints_everywhere: Latencies,
    /// Lists the nodes' followers asked for, and watch events they
    /// received, since the fleet started (at the end of the stage).
    follower_lists: u64,
    follower_events: u64,
}

impl StageFigures {
    /// One line of progress for stderr.
    fn summary(&self) -> String {
        let create = rate(&self.create);
        let schedule = rate(&self.schedule);
        let scale_up = p50(&self.scale_up);
        let endpoints = p50(&self.endpoints);
        let everywhere = if self.endpoints_everywhere.is_empty() {
            String::new()
        } else {
            let p50 = p50(&self.endpoints_everywhere);
            format!(" (at every node {p50:.1} ms)")
        };
        let rss = self.rss_bytes as f64 / MIB;
        format!(
            "{create:.0} creates/s, {schedule:.0} pods bound/s, scale-up p50 {scale_up:.1} ms, \
             Endpoints p50 {endpoints:.1} ms{everywhere}, master {rss:.1} MiB"
        )
    }
}

/// A throughput probe's figures: each operation's latency, and each
/// round's rate.
#[derive(Debug, Default)]
struct Throughput {
    latencies: Latencies,
    rates: Vec<f64>,
}

/// A throughput probe's rate: the median of its rounds.
fn rate(t: &Throughput) -> f64 {
    median(&t.rates)
}

fn p50(l: &Latencies) -> f64 {
    l.percentile_ms(50.0)
}

/// The median (the mean of the middle two for an even count); 0 when empty.
fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    sorted[(n - 1) / 2].midpoint(sorted[n / 2])
}

/// Grows the cluster from `from` to `to`, waits for it to settle, reads the
/// master and runs the probes.
async fn run_stage(
    master: &BenchMaster,
    args: &ScaleArgs,
    followed: &Followed,
    stage: usize,
    from: StageSize,
    to: StageSize,
    before: &ObjectCounts,
) -> anyhow::Result<StageFigures> {
    let client = &master.client;
    let replicas = replicas_i32(args.replicas)?;
    let objects: Vec<Object> = (from.deployments..to.deployments)
        .map(|i| load_deployment(i, replicas))
        .chain((from.services..to.services).map(|i| load_service(i, args.deployments)))
        .chain(fixtures(stage, args.rounds))
        .collect();
    let count = objects.len();
    eprintln!("stage {stage}: creating {count} objects (Deployments, Services, probe fixtures)");
    let cpu_before = master.sample()?.cpu_seconds;
    let started = Instant::now();
    create_all(client, objects, args.clients).await?;
    let created = started.elapsed().as_secs_f64();
    eprintln!("stage {stage}: created in {created:.1}s; waiting for pods and Endpoints");
    settle(client, stage, Duration::from_secs(args.stage_timeout)).await?;
    let mut run = StageRun {
        client,
        args,
        followed: args.follow_cluster.then_some(followed),
        stage,
        unsettled: 0,
    };
    run.quiet().await?;
    let build_seconds = started.elapsed().as_secs_f64();
    let built = master.sample()?;
    let objects = count_objects(client).await?;
    let total = objects.total();
    eprintln!("stage {stage}: settled in {build_seconds:.1}s with {total} objects; probing");

    let probe_cpu_before = master.sample()?.cpu_seconds;
    let probes_started = Instant::now();
    let create = run.create_probe().await?;
    let schedule = run.schedule_probe().await?;
    let scale_up = run.scale_up_probe().await?;
    let (endpoints, endpoints_controller, endpoints_everywhere) = run.endpoints_probe().await?;
    let probe_seconds = probes_started.elapsed().as_secs_f64();
    let probed = master.sample()?;
    run.remove_fixtures().await?;
    let figures = StageFigures {
        size: to,
        objects,
        build_seconds,
        build_cpu_seconds: built.cpu_seconds - cpu_before,
        added: total.saturating_sub(before.total()),
        rss_bytes: built.rss_bytes,
        cpu_seconds: probed.cpu_seconds,
        probe_seconds,
        probe_cpu_seconds: probed.cpu_seconds - probe_cpu_before,
        unsettled: run.unsettled,
        create,
        schedule,
        scale_up,
        endpoints,
        endpoints_controller,
        endpoints_everywhere,
        follower_lists: followed.lists.load(Ordering::Relaxed),
        follower_events: followed.events.load(Ordering::Relaxed),
    };
    eprintln!("stage {stage}: {}", figures.summary());
    Ok(figures)
}

/// One stage's probes and what they share.
struct StageRun<'a> {
    client: &'a Client,
    args: &'a ScaleArgs,
    /// What the hollow nodes received, when they follow the cluster.
    followed: Option<&'a Followed>,
    stage: usize,
    /// Waits for a still store that gave up (see [`wait_quiet`]).
    unsettled: usize,
}

impl StageRun<'_> {
    /// Lets the controllers finish reacting before the next measurement, so
    /// that a probe never pays for the one before it.
    async fn quiet(&mut self) -> anyhow::Result<()> {
        if !wait_quiet(self.client).await? {
            self.unsettled += 1;
            let stage = self.stage;
            eprintln!("stage {stage}: the store kept changing for {QUIET_WITHIN:?}; going on");
        }
        Ok(())
    }

    /// Probe 1: rounds of `--probe-services` Service creates by `--clients`
    /// creators at once. Each round's Services (and the Endpoints the
    /// controller makes for them) are deleted before the next round.
    async fn create_probe(&mut self) -> anyhow::Result<Throughput> {
        let (stage, count) = (self.stage, self.args.probe_services);
        let mut figures = Throughput::default();
        for round in 0..self.args.rounds {
            let names: Vec<String> = (0..count)
                .map(|i| format!("scale-create-s{stage}-r{round}-{i}"))
                .collect();
            let services: Vec<Object> = names.iter().map(|n| service(n, UNMATCHED)).collect();
            let started = Instant::now();
            let latencies = create_all(self.client, services, self.args.clients).await?;
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            figures.rates.push(count as f64 / seconds);
            figures.latencies.extend(latencies);
            self.quiet().await?;
            delete_all(self.client, Kind::Service, names, self.args.clients).await?;
            self.quiet().await?;
        }
        Ok(figures)
    }

    /// Probe 2: each round creates one Deployment of `--probe-replicas`
    /// pods, timed from the create to each pod's binding; the rate is pods
    /// over the time to the last binding. The Deployment (and with it its
    /// pods) is deleted before the next round.
    async fn schedule_probe(&mut self) -> anyhow::Result<Throughput> {
        let want = self.args.probe_replicas;
        let replicas = replicas_i32(want)?;
        let mut figures = Throughput::default();
        for round in 0..self.args.rounds {
            let name = format!("scale-sched-s{}-r{round}", self.stage);
            let mut watch = watch_from_now(self.client, Kind::Pod).await?;
            let started = Instant::now();
            create_one(self.client, deployment(&name, replicas).into_object()).await?;
            let bound = follow_new_pods(&mut watch, &name, want, Milestone::Bound, started).await?;
            // Ends the stream, or the master would queue the next steps'
            // events for nobody.
            drop(watch);
            let last = bound.iter().max().copied().unwrap_or_default();
            let seconds = last.as_secs_f64().max(1e-9);
            figures.rates.push(want as f64 / seconds);
            for latency in bound {
                figures.latencies.push(latency);
            }
            self.quiet().await?;
            delete_all(self.client, Kind::Deployment, vec![name], 1).await?;
            self.quiet().await?;
        }
        Ok(figures)
    }

    /// Probe 3: each round scales one of the stage's one-pod Deployments
    /// to `--scale-to` pods, timed until every new pod is bound and its
    /// node reports it Running.
    async fn scale_up_probe(&mut self) -> anyhow::Result<Latencies> {
        let target = self.args.scale_to;
        let replicas = replicas_i32(target)?;
        let mut samples = Latencies::default();
        for round in 0..self.args.rounds {
            let name = scale_up_name(self.stage, round);
            let mut watch = watch_from_now(self.client, Kind::Pod).await?;
            let started = Instant::now();
            scale_deployment(self.client, &name, replicas).await?;
            let new = target - 1;
            let up = follow_new_pods(&mut watch, &name, new, Milestone::Running, started).await?;
            drop(watch);
            samples.push(up.into_iter().max().unwrap_or_default());
            self.quiet().await?;
        }
        Ok(samples)
    }

    /// Probe 4: each round adds one pod to the stage's Endpoints-probe
    /// Deployment, timed until its Service's Endpoints list the new pod.
    /// Also timed from the moment the new pod had its IP (when the
    /// Endpoints controller could first list it): the controller's share;
    /// and, when the nodes follow the cluster, until every node has
    /// received that change.
    async fn endpoints_probe(&mut self) -> anyhow::Result<(Latencies, Latencies, Latencies)> {
        let name = endpoints_probe_name(self.stage);
        let (mut total, mut controller) = (Latencies::default(), Latencies::default());
        let mut everywhere = Latencies::default();
        for round in 0..self.args.endpoint_rounds {
            // The Deployment starts with one pod and gains one per round.
            let want = round + 2;
            let from = revision(self.client).await?;
            let mut pods = self.client.watch(Kind::Pod, NAMESPACE, from).await?;
            let mut endpoints = self.client.watch(Kind::Endpoints, NAMESPACE, from).await?;
            let started = Instant::now();
            scale_deployment(self.client, &name, replicas_i32(want)?).await?;
            let seen = follow_endpoints(&mut pods, &mut endpoints, &name, want).await?;
            drop(pods);
            drop(endpoints);
            total.push(seen.listed.saturating_duration_since(started));
            controller.push(seen.listed.saturating_duration_since(seen.pod_ip));
            if let Some(followed) = self.followed {
                let at = received_everywhere(followed, seen.revision, &name).await?;
                everywhere.push(at.saturating_duration_since(started));
            }
            self.quiet().await?;
        }
        Ok((total, controller, everywhere))
    }

    /// Deletes the stage's probe fixtures, so that the next stage holds
    /// only its own.
    async fn remove_fixtures(&mut self) -> anyhow::Result<()> {
        let endpoints = endpoints_probe_name(self.stage);
        let mut deployments: Vec<String> = (0..self.args.rounds)
            .map(|round| scale_up_name(self.stage, round))
            .collect();
        deployments.push(endpoints.clone());
        let clients = self.args.clients;
        delete_all(self.client, Kind::Deployment, deployments, clients).await?;
        delete_all(self.client, Kind::Service, vec![endpoints], 1).await?;
        self.quiet().await
    }
}

/// Creates `objects` with up to `clients` creators at once; each create's
/// latency, retries included.
async fn create_all(
    client: &Client,
    objects: Vec<Object>,
    clients: usize,
) -> anyhow::Result<Latencies> {
    let objects = Arc::new(objects);
    let mut creators = tokio::task::JoinSet::new();
    for first in 0..clients.min(objects.len()) {
        let (client, objects) = (client.clone(), objects.clone());
        creators.spawn(async move {
            let mut latencies = Latencies::default();
            for object in objects.iter().skip(first).step_by(clients) {
                let started = Instant::now();
                create_one(&client, object.clone()).await?;
                latencies.push(started.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Latencies::default();
    while let Some(done) = creators.join_next().await {
        latencies.extend(done??);
    }
    Ok(latencies)
}

/// Creates one object, retrying while the master is unavailable; one that
/// already exists counts as created.
async fn create_one(client: &Client, object: Object) -> anyhow::Result<()> {
    let mut pause = Duration::from_millis(10);
    for _ in 0..RETRIES {
        match client.create(object.clone()).await {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => return Ok(()),
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                let what = object.display_name();
                return Err(anyhow::Error::new(e).context(format!("creating {what}")));
            }
        }
    }
    let what = object.display_name();
    anyhow::bail!("creating {what}: the master stayed unavailable")
}

/// Deletes the named objects of `kind`, up to `clients` at once; one
/// already gone counts as deleted.
async fn delete_all(
    client: &Client,
    kind: Kind,
    names: Vec<String>,
    clients: usize,
) -> anyhow::Result<()> {
    let names = Arc::new(names);
    let mut deleters = tokio::task::JoinSet::new();
    for first in 0..clients.min(names.len()) {
        let (client, names) = (client.clone(), names.clone());
        deleters.spawn(async move {
            for name in names.iter().skip(first).step_by(clients) {
                match client.delete(kind, NAMESPACE, name, "").await {
                    Ok(_) | Err(ClientError::NotFound(_)) => {}
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!("deleting {name}")));
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = deleters.join_next().await {
        done??;
    }
    Ok(())
}

/// Sets a Deployment's replicas as `skiff ctl scale` does: read, change,
/// write back, and again when someone wrote in between.
async fn scale_deployment(client: &Client, name: &str, replicas: i32) -> anyhow::Result<()> {
    for _ in 0..RETRIES {
        let mut object = client.get(Kind::Deployment, NAMESPACE, name).await?;
        skiff_objects::scale::set_replicas(&mut object, replicas)?;
        match client.update(object).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("scaling {name}"))),
        }
    }
    anyhow::bail!("{name} kept changing while being scaled")
}

/// The master's store revision: it moves with every committed change.
async fn revision(client: &Client) -> anyhow::Result<u64> {
    Ok(client.cluster_status().await?.revision)
}

/// A watch on `kind` in the benchmark's namespace, from the current
/// revision on.
async fn watch_from_now(client: &Client, kind: Kind) -> anyhow::Result<Watch> {
    let from = revision(client).await?;
    Ok(client.watch(kind, NAMESPACE, from).await?)
}

/// Waits until the store revision has stood still for [`QUIET_FOR`], that
/// is until the controllers have finished reacting to the last change;
/// false when it still moved after [`QUIET_WITHIN`]. Polling the revision
/// is a cheap in-memory read on the master.
async fn wait_quiet(client: &Client) -> anyhow::Result<bool> {
    let deadline = Instant::now() + QUIET_WITHIN;
    let mut last = revision(client).await?;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(QUIET_POLL).await;
        let now = revision(client).await?;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET_FOR {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How far a pod has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Milestone {
    /// The scheduler's binding is committed.
    Bound,
    /// Bound, and its node reports it Running.
    Running,
    /// It has an IP (hollow nodes give one when they report it Running).
    HasIp,
}

impl Milestone {
    fn reached(self, pod: &v1::Pod) -> bool {
        let bound = !node_of(pod).is_empty();
        match self {
            Milestone::Bound => bound,
            Milestone::Running => bound && running(pod),
            Milestone::HasIp => pod.status.as_ref().is_some_and(|s| !s.pod_ip.is_empty()),
        }
    }
}

/// The pods of one app created after a watch began, and which of them have
/// reached a milestone: pods that existed before are never counted.
struct NewPods {
    app: String,
    milestone: Milestone,
    created: HashSet<String>,
    reached: HashSet<String>,
}

impl NewPods {
    fn new(app: &str, milestone: Milestone) -> NewPods {
        NewPods {
            app: app.to_owned(),
            milestone,
            created: HashSet::new(),
            reached: HashSet::new(),
        }
    }

    /// Takes one watch event; true when it shows a new pod reaching the
    /// milestone for the first time.
    fn observe(&mut self, event: WatchEvent) -> bool {
        let Some(Body::Pod(pod)) = event
            .object
            .map(skiff_objects::pods::in_model)
            .and_then(|o| o.kind)
        else {
            return false;
        };
        let Some(meta) = pod.metadata.as_ref() else {
            return false;
        };
        if meta.labels.get("app") != Some(&self.app) {
            return false;
        }
        if event.r#type == EventType::Added as i32 {
            self.created.insert(meta.name.clone());
        }
        self.created.contains(&meta.name)
            && self.milestone.reached(&pod)
            && self.reached.insert(meta.name.clone())
    }
}

/// Reads `watch` until `want` pods of app `app` created since it began have
/// reached `milestone`; for each, the time from `since`.
async fn follow_new_pods(
    watch: &mut Watch,
    app: &str,
    want: usize,
    milestone: Milestone,
    since: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    let mut pods = NewPods::new(app, milestone);
    let mut times = Vec::with_capacity(want);
    while times.len() < want {
        let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
            let done = times.len();
            anyhow::bail!("{done}/{want} new pods of {app} {milestone:?} in {PROBE_TIMEOUT:?}");
        };
        let Some(event) = next? else {
            anyhow::bail!("the pod watch ended");
        };
        if pods.observe(event) {
            times.push(since.elapsed());
        }
    }
    Ok(times)
}

/// How often [`received_everywhere`] looks.
const EVERYWHERE_POLL: Duration = Duration::from_millis(5);

/// Waits until every hollow node has received the Endpoints at
/// `revision` (or later): when the last of them did, as it noted the
/// arrival.
async fn received_everywhere(
    followed: &Followed,
    revision: u64,
    name: &str,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        if let Some(at) = followed.everywhere_at(FollowedKind::Endpoints, revision) {
            return Ok(at);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Endpoints {name} at revision {revision}: not at every node within \
             {PROBE_TIMEOUT:?} (every node has revision {:?})",
            followed.everywhere(FollowedKind::Endpoints)
        );
        tokio::time::sleep(EVERYWHERE_POLL).await;
    }
}

/// When the Endpoints probe saw what it waits for.
struct EndpointsSeen {
    /// The Endpoints listed the wanted number of addresses.
    listed: Instant,
    /// The store revision of that change.
    revision: u64,
    /// The new pod had its IP.
    pod_ip: Instant,
}

/// Reads both watches until the Endpoints `name` list `want` addresses and
/// the new pod of app `name` has its IP (its watch event may come second).
async fn follow_endpoints(
    pods: &mut Watch,
    endpoints: &mut Watch,
    name: &str,
    want: usize,
) -> anyhow::Result<EndpointsSeen> {
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    let mut new_pods = NewPods::new(name, Milestone::HasIp);
    let mut listed = None;
    let mut pod_ip = None;
    let mut revision = 0;
    while listed.is_none() || pod_ip.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("Endpoints {name}: not {want} addresses within {PROBE_TIMEOUT:?}");
            }
            event = pods.next(), if pod_ip.is_none() => {
                let Some(event) = event? else {
                    anyhow::bail!("the pod watch ended");
                };
                if new_pods.observe(event) {
                    pod_ip = Some(Instant::now());
                }
            }
            event = endpoints.next(), if listed.is_none() => {
                let Some(event) = event? else {
                    anyhow::bail!("the Endpoints watch ended");
                };
                if lists(&event, name, want) {
                    listed = Some(Instant::now());
                    revision = event.revision;
                }
            }
        }
    }
    let (Some(listed), Some(pod_ip)) = (listed, pod_ip) else {
        anyhow::bail!("Endpoints {name}: the watches stopped early");
    };
    Ok(EndpointsSeen {
        listed,
        revision,
        pod_ip,
    })
}

/// Whether a watch event shows the Endpoints `name` listing `want`
/// addresses.
fn lists(event: &WatchEvent, name: &str, want: usize) -> bool {
    let Some(e) = event.object.as_ref().and_then(endpoints::read) else {
        return false;
    };
    endpoints::key(&e).1 == name && address_count(&e) >= want
}

/// Pod addresses an Endpoints lists, ready or not.
fn address_count(e: &Endpoints) -> usize {
    endpoints::subsets(e)
        .iter()
        .map(|s| endpoints::ready(s).len() + endpoints::not_ready(s).len())
        .sum()
}

/// Waits until every Deployment is Ready and every Service's Endpoints
/// list the pods it selects.
async fn settle(client: &Client, stage: usize, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let left = backlog_of(client).await?;
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "stage {stage} not settled after {timeout:?}: {left}"
        );
        if reported.elapsed() >= SETTLE_REPORT {
            eprintln!("stage {stage}: waiting for {left}");
            reported = Instant::now();
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// What the cluster still has to do before a stage counts as settled. The
/// Services and Endpoints are listed only once every Deployment is Ready.
async fn backlog_of(client: &Client) -> anyhow::Result<Backlog> {
    let deployments = list_of(client, Kind::Deployment, as_deployment).await?;
    if !deployments.iter().all(deployment_ready) {
        return Ok(backlog(&deployments, &[], &[]));
    }
    let services = list_of(client, Kind::Service, as_service).await?;
    let endpoints = list_of(client, Kind::Endpoints, as_endpoints).await?;
    Ok(backlog(&deployments, &services, &endpoints))
}

/// What a stage still waits for; settled when all are zero.
#[derive(Debug, Default, PartialEq, Eq)]
struct Backlog {
    /// Deployments not yet at their replicas, all Ready.
    deployments: usize,
    /// Services with a selector but no Endpoints.
    endpoints_missing: usize,
    /// Endpoints not listing as many pods as their Service selects.
    endpoints_behind: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        *self == Backlog::default()
    }
}

impl fmt::Display for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.deployments, "Deployments not Ready"),
            (self.endpoints_missing, "Services without Endpoints"),
            (self.endpoints_behind, "Endpoints not listing their pods"),
        ];
        let listed: Vec<String> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        f.write_str(&listed.join(", "))
    }
}

/// What is left before a stage has settled, from the Deployments, Services
/// and Endpoints it holds. The benchmark's objects select by the `app`
/// label alone, so a Service expects the pods of the Deployments whose
/// template carries its `app`.
fn backlog(
    deployments: &[v1::Deployment],
    services: &[Service],
    endpoints: &[Endpoints],
) -> Backlog {
    let mut pods_of_app: HashMap<&str, usize> = HashMap::new();
    for d in deployments {
        if let Some(app) = app_of(d) {
            *pods_of_app.entry(app).or_default() += replicas_of(d).max(0) as usize;
        }
    }
    let addresses: HashMap<&str, usize> = endpoints
        .iter()
        .map(|e| (endpoints::key(e).1, address_count(e)))
        .collect();
    let not_ready = deployments.iter().filter(|&d| !deployment_ready(d));
    let mut left = Backlog {
        deployments: not_ready.count(),
        ..Default::default()
    };
    for s in services {
        let Some(app) = services::selector(s).get("app") else {
            continue;
        };
        let want = pods_of_app.get(app.as_str()).copied().unwrap_or(0);
        match addresses.get(services::key(s).1) {
            None => left.endpoints_missing += 1,
            Some(&have) if have != want => left.endpoints_behind += 1,
            Some(_) => {}
        }
    }
    left
}

/// The `app` label of a Deployment's pods.
fn app_of(d: &v1::Deployment) -> Option<&str> {
    let template = d.spec.as_ref()?.template.as_ref()?;
    let labels = &template.metadata.as_ref()?.labels;
    labels.get("app").map(String::as_str)
}

fn replicas_of(d: &v1::Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Whether a Deployment has seen its spec and has exactly its replicas, all
/// Ready (hollow nodes report a pod Ready when they report it Running).
fn deployment_ready(d: &v1::Deployment) -> bool {
    let generation = d.metadata.as_ref().map_or(0, |m| m.generation);
    let want = replicas_of(d);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation >= generation && s.replicas == want && s.ready_replicas == want
    })
}

/// The objects of `kind` in the benchmark's namespace, as `pick` unwraps
/// them.
async fn list_of<T>(
    client: &Client,
    kind: Kind,
    pick: fn(Body) -> Option<T>,
) -> anyhow::Result<Vec<T>> {
    let listed = client.list(kind, NAMESPACE).await?;
    let items = listed.items.into_iter();
    Ok(items.filter_map(|o| o.kind.and_then(pick)).collect())
}

/// A Deployment (a document) in its protobuf model, which holds every
/// field read here.
fn as_deployment(body: Body) -> Option<v1::Deployment> {
    let object = Object { kind: Some(body) };
    match skiff_objects::legacy_bodies::cut_to_model(object)
        .ok()?
        .kind
    {
        Some(Body::Deployment(d)) => Some(d),
        _ => None,
    }
}

/// A ReplicaSet (a document) in its protobuf model.
fn as_replica_set(body: Body) -> Option<v1::ReplicaSet> {
    let object = Object { kind: Some(body) };
    match skiff_objects::legacy_bodies::cut_to_model(object)
        .ok()?
        .kind
    {
        Some(Body::ReplicaSet(r)) => Some(r),
        _ => None,
    }
}

fn as_service(body: Body) -> Option<Service> {
    services::read(&Object { kind: Some(body) })
}

fn as_endpoints(body: Body) -> Option<Endpoints> {
    endpoints::read(&Object { kind: Some(body) })
}

/// Objects in the cluster, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct ObjectCounts {
    nodes: usize,
    deployments: usize,
    replica_sets: usize,
    pods: usize,
    services: usize,
    endpoints: usize,
}

impl ObjectCounts {
    fn total(&self) -> usize {
        self.nodes
            + self.deployments
            + self.replica_sets
            + self.pods
            + self.services
            + self.endpoints
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "deployments": self.deployments,
            "replica_sets": self.replica_sets,
            "pods": self.pods,
            "services": self.services,
            "endpoints": self.endpoints,
            "total": self.total(),
        })
    }
}

/// Counts the objects a stage holds. Pods are summed from the ReplicaSets'
/// status (a settled stage has no others) rather than listed: a list of
/// 30,000 pods would cost the master more than the probes measure.
async fn count_objects(client: &Client) -> anyhow::Result<ObjectCounts> {
    let replica_sets = list_of(client, Kind::ReplicaSet, as_replica_set).await?;
    let pods: usize = replica_sets.iter().map(pods_of_set).sum();
    Ok(ObjectCounts {
        nodes: count_kind(client, Kind::Node, "").await?,
        deployments: count_kind(client, Kind::Deployment, NAMESPACE).await?,
        replica_sets: replica_sets.len(),
        pods,
        services: count_kind(client, Kind::Service, NAMESPACE).await?,
        endpoints: count_kind(client, Kind::Endpoints, NAMESPACE).await?,
    })
}

/// How many objects of `kind` are in `namespace` (in all, when empty).
async fn count_kind(client: &Client, kind: Kind, namespace: &str) -> anyhow::Result<usize> {
    Ok(client.list(kind, namespace).await?.items.len())
}

fn pods_of_set(rs: &v1::ReplicaSet) -> usize {
    let replicas = rs.status.as_ref().map_or(0, |s| s.replicas);
    replicas.max(0) as usize
}

/// How many times slower full load was, from two latencies (1: the same).
fn latency_ratio(small_ms: f64, full_ms: f64) -> f64 {
    if small_ms > 0.0 {
        full_ms / small_ms
    } else if full_ms > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// How many times slower full load was, from two rates (1: the same).
fn rate_ratio(small_per_sec: f64, full_per_sec: f64) -> f64 {
    // A rate is an inverse latency.
    latency_ratio(full_per_sec, small_per_sec)
}

/// Each probe's ratio, full load against stage 1: p50 latencies for the
/// scale-up and Endpoints probes, median rates for the throughput ones.
fn probe_ratios(small: &StageFigures, full: &StageFigures) -> Vec<(&'static str, f64)> {
    let create = rate_ratio(rate(&small.create), rate(&full.create));
    let schedule = rate_ratio(rate(&small.schedule), rate(&full.schedule));
    let scale_up = latency_ratio(p50(&small.scale_up), p50(&full.scale_up));
    let endpoints = latency_ratio(p50(&small.endpoints), p50(&full.endpoints));
    let mut ratios = vec![
        ("create", create),
        ("schedule", schedule),
        ("scale_up", scale_up),
        ("endpoints", endpoints),
    ];
    if !full.endpoints_everywhere.is_empty() {
        let everywhere = latency_ratio(
            p50(&small.endpoints_everywhere),
            p50(&full.endpoints_everywhere),
        );
        ratios.push(("endpoints_at_every_node", everywhere));
    }
    ratios
}

/// The probes whose ratio is above `max_ratio`, or not a number at all.
fn over_limit(ratios: &[(&'static str, f64)], max_ratio: f64) -> Vec<(&'static str, f64)> {
    ratios
        .iter()
        .filter(|(_, r)| r.is_nan() || *r > max_ratio)
        .copied()
        .collect()
}

/// The line that says which probes failed the run, and by how much.
fn failure_message(over: &[(&'static str, f64)], max_ratio: f64) -> String {
    let named: Vec<String> = over
        .iter()
        .map(|(probe, r)| format!("{probe} {r:.2}×"))
        .collect();
    let named = named.join(", ");
    format!("scale: slower at full load than --max-ratio {max_ratio} allows: {named}")
}

/// Master memory per object added between the stages; none when the full
/// stage holds no more objects.
fn bytes_per_object(small_rss: u64, small: usize, full_rss: u64, full: usize) -> Option<f64> {
    let added = full.checked_sub(small).filter(|&n| n > 0)?;
    Some((full_rss as f64 - small_rss as f64) / added as f64)
}

/// p50, p99 and sample count of a probe's latencies.
fn latency_json(l: &Latencies) -> serde_json::Value {
    serde_json::json!({
        "p50_ms": round(l.percentile_ms(50.0)),
        "p99_ms": round(l.percentile_ms(99.0)),
        "samples": l.len(),
    })
}

/// A throughput probe's latencies and its rate (per second; pods for the
/// scheduling probe).
fn throughput_json(t: &Throughput) -> serde_json::Value {
    let mut figures = latency_json(&t.latencies);
    figures["per_sec"] = serde_json::json!(round(rate(t)));
    figures
}

fn stage_json(f: &StageFigures) -> serde_json::Value {
    let per_object_ms = f.build_cpu_seconds * 1000.0 / f.added.max(1) as f64;
    let build = serde_json::json!({
        "seconds": round(f.build_seconds),
        "master_cpu_seconds": round(f.build_cpu_seconds),
        "objects_added": f.added,
        "master_cpu_ms_per_object": round(per_object_ms),
    });
    let master = serde_json::json!({
        "rss_mib": round(f.rss_bytes as f64 / MIB),
        "cpu_seconds": round(f.cpu_seconds),
        "probe_seconds": round(f.probe_seconds),
        "cpu_cores_during_probes": round(f.probe_cpu_seconds / f.probe_seconds.max(1e-9)),
    });
    let mut endpoints = latency_json(&f.endpoints);
    let controller = &f.endpoints_controller;
    endpoints["controller_p50_ms"] = serde_json::json!(round(controller.percentile_ms(50.0)));
    endpoints["controller_p99_ms"] = serde_json::json!(round(controller.percentile_ms(99.0)));
    if !f.endpoints_everywhere.is_empty() {
        endpoints["at_every_node"] = latency_json(&f.endpoints_everywhere);
    }
    serde_json::json!({
        "deployments": f.size.deployments,
        "services": f.size.services,
        "objects": f.objects.json(),
        "build": build,
        "master": master,
        "unsettled_waits": f.unsettled,
        "create": throughput_json(&f.create),
        "schedule": throughput_json(&f.schedule),
        "scale_up": latency_json(&f.scale_up),
        "endpoints": endpoints,
        "followers": {
            "lists_since_start": f.follower_lists,
            "events_since_start": f.follower_events,
        },
    })
}

/// The JSON line: the load, both stages, each probe's ratio and the
/// verdict (`main` exits non-zero after printing it when `pass` is false).
fn report(args: &ScaleArgs, small: &StageFigures, full: &StageFigures) -> serde_json::Value {
    let ratios = probe_ratios(small, full);
    let over = over_limit(&ratios, args.max_ratio);
    let failure = (!over.is_empty()).then(|| failure_message(&over, args.max_ratio));
    let over_names: Vec<&str> = over.iter().map(|(probe, _)| *probe).collect();
    let ratio_json: serde_json::Map<String, serde_json::Value> = ratios
        .iter()
        .map(|(probe, r)| ((*probe).to_owned(), serde_json::json!(round(*r))))
        .collect();
    let (small_n, full_n) = (small.objects.total(), full.objects.total());
    let per_object = bytes_per_object(small.rss_bytes, small_n, full.rss_bytes, full_n);
    let load = serde_json::json!({
        "nodes": args.nodes,
        "deployments": args.deployments,
        "replicas": args.replicas,
        "services": args.services,
        "fraction": args.fraction,
        "clients": args.clients,
    });
    let probes = serde_json::json!({
        "create_services": args.probe_services,
        "schedule_replicas": args.probe_replicas,
        "scale_up_to": args.scale_to,
        "rounds": args.rounds,
        "endpoint_rounds": args.endpoint_rounds,
    });
    serde_json::json!({
        "scenario": "scale",
        "load": load,
        "probes": probes,
        "small": stage_json(small),
        "full": stage_json(full),
        "ratios": ratio_json,
        "bytes_per_object": per_object.map(round),
        "max_ratio": args.max_ratio,
        "over_limit": over_names,
        "pass": over.is_empty(),
        "failure": failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScaleArgs,
    }

    fn parse(flags: &str) -> ScaleArgs {
        let argv = std::iter::once("scale").chain(flags.split_whitespace());
        Cli::parse_from(argv).args
    }

    #[test]
    fn the_defaults_are_the_full_load_of_issue_14() {
        let args = parse("");
        assert_eq!((args.nodes, args.deployments), (1000, 1000));
        assert_eq!((args.replicas, args.services), (30, 3000));
        assert_eq!(args.clients, 32);
        assert_eq!((args.fraction, args.max_ratio), (0.1, 1.5));
        check(&args).unwrap();
        let [small, full] = stage_sizes(args.deployments, args.services, args.fraction);
        assert_eq!((small.deployments, small.services), (100, 300));
        assert_eq!((full.deployments, full.services), (1000, 3000));
    }

    #[test]
    fn the_ci_run_grows_tenfold() {
        let args = parse("--nodes 20 --deployments 20 --replicas 10 --services 2000");
        check(&args).unwrap();
        let [small, full] = stage_sizes(args.deployments, args.services, args.fraction);
        assert_eq!((small.deployments, small.services), (2, 200));
        assert_eq!((full.deployments, full.services), (20, 2000));
    }

    #[test]
    fn stage_counts_round_and_keep_at_least_one() {
        assert_eq!(stage_count(20, 0.1), 2);
        assert_eq!(stage_count(2000, 0.1), 200);
        assert_eq!(stage_count(15, 0.1), 2);
        assert_eq!(stage_count(3, 0.1), 1);
        assert_eq!(stage_count(10, 0.99), 10);
        assert_eq!(stage_count(0, 0.1), 0);
    }

    #[test]
    fn flags_that_leave_nothing_to_compare_are_refused() {
        assert!(check(&parse("--fraction 1")).is_err());
        assert!(check(&parse("--fraction 0")).is_err());
        assert!(check(&parse("--deployments 1 --services 1 --fraction 0.5")).is_err());
        assert!(check(&parse("--max-ratio 0.9")).is_err());
        assert!(check(&parse("--scale-to 1")).is_err());
        assert!(check(&parse("--rounds 0")).is_err());
        // One Deployment in both stages is fine while the Services grow.
        assert!(check(&parse("--deployments 1 --services 10")).is_ok());
    }

    #[test]
    fn services_select_their_deployment_then_nothing() {
        assert_eq!(service_target(0, 20), "scale-dep-00000");
        assert_eq!(service_target(19, 20), "scale-dep-00019");
        assert_eq!(service_target(20, 20), UNMATCHED);
    }

    #[test]
    fn ratios_say_how_many_times_worse_full_load_did() {
        assert_eq!(latency_ratio(10.0, 15.0), 1.5);
        assert_eq!(latency_ratio(10.0, 5.0), 0.5);
        assert_eq!(rate_ratio(1000.0, 500.0), 2.0);
        assert_eq!(rate_ratio(500.0, 1000.0), 0.5);
        assert_eq!(latency_ratio(0.0, 3.0), f64::INFINITY);
        assert_eq!(latency_ratio(0.0, 0.0), 1.0);
        assert_eq!(rate_ratio(100.0, 0.0), f64::INFINITY);
    }

    #[test]
    fn only_ratios_above_the_limit_fail_the_run() {
        let ratios = [
            ("create", 1.2),
            ("schedule", 1.5),
            ("scale_up", 1.51),
            ("endpoints", f64::NAN),
        ];
        let over = over_limit(&ratios, 1.5);
        let names: Vec<&str> = over.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["scale_up", "endpoints"]);
        assert!(over_limit(&ratios[..2], 1.5).is_empty());
        let message = failure_message(&over[..1], 1.5);
        assert!(message.contains("scale_up 1.51"), "{message}");
        assert!(message.contains("--max-ratio 1.5 "), "{message}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn bytes_per_object_between_the_stages() {
        let mib = 1024 * 1024;
        let grown = bytes_per_object(10 * mib, 1_000, 30 * mib, 11_000);
        assert_eq!(grown, Some(2097.152));
        assert_eq!(bytes_per_object(20, 5, 10, 6), Some(-10.0));
        assert_eq!(bytes_per_object(10, 5, 20, 5), None);
    }

    fn deployment_with(name: &str, replicas: i32, ready: i32) -> v1::Deployment {
        let mut d = deployment(name, replicas);
        d.status = Some(v1::DeploymentStatus {
            replicas,
            ready_replicas: ready,
            ..Default::default()
        });
        d
    }

    fn endpoints_with(name: &str, addresses: usize) -> Endpoints {
        let meta = v1::ObjectMeta {
            name: name.to_owned(),
            ..Default::default()
        };
        let subset = endpoints::EndpointSubset {
            addresses: Some(vec![endpoints::EndpointAddress::default(); addresses]),
            ..Default::default()
        };
        endpoints::read(&endpoints::object(meta, vec![subset])).unwrap()
    }

    #[test]
    fn a_stage_settles_when_every_service_lists_its_pods() {
        // "c" selects a label no Deployment carries: its Endpoints stay empty.
        let services = [service("a", "a"), service("b", "b"), service("c", "c")]
            .map(|s| services::read(&s).expect("a Service"));
        let deployments = [deployment_with("a", 3, 3), deployment_with("b", 2, 1)];
        let listed = [endpoints_with("a", 3), endpoints_with("b", 1)];
        let left = backlog(&deployments, &services, &listed);
        assert_eq!(left.deployments, 1);
        assert_eq!(left.endpoints_missing, 1);
        assert_eq!(left.endpoints_behind, 1);
        let text = left.to_string();
        assert!(text.starts_with("1 Deployments not Ready"), "{text}");

        let deployments = [deployment_with("a", 3, 3), deployment_with("b", 2, 2)];
        let listed = [
            endpoints_with("a", 3),
            endpoints_with("b", 2),
            endpoints_with("c", 0),
        ];
        let left = backlog(&deployments, &services, &listed);
        assert!(left.is_empty(), "{left}");
    }

    fn pod_event(kind: EventType, name: &str, app: &str, node: &str, phase: &str) -> WatchEvent {
        let pod = v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.to_owned(),
                labels: [("app".to_owned(), app.to_owned())].into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.to_owned(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        WatchEvent {
            r#type: kind as i32,
            object: Some(pod.into_object()),
            ..Default::default()
        }
    }

    #[test]
    fn only_pods_created_after_the_watch_began_count_and_only_once() {
        use skiff_proto::api::EventType::{Added, Modified};
        let mut pods = NewPods::new("web", Milestone::Running);
        // A pod from before the watch: none of its changes count.
        assert!(!pods.observe(pod_event(Modified, "web-old", "web", "n1", "Running")));
        assert!(!pods.observe(pod_event(Added, "web-1", "web", "", "Pending")));
        assert!(!pods.observe(pod_event(Modified, "web-1", "web", "n1", "Pending")));
        assert!(pods.observe(pod_event(Modified, "web-1", "web", "n1", "Running")));
        assert!(!pods.observe(pod_event(Modified, "web-1", "web", "n1", "Running")));
        assert!(!pods.observe(pod_event(Added, "db-1", "db", "n1", "Running")));

        let mut bound = NewPods::new("web", Milestone::Bound);
        assert!(!bound.observe(pod_event(Added, "web-2", "web", "", "Pending")));
        assert!(bound.observe(pod_event(Modified, "web-2", "web", "n2", "Pending")));
    }
}
