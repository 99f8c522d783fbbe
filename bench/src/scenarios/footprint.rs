//! `footprint`: what skiff costs on a small machine. The master's time from
//! start to serving (API answering with a leader), the master's and the
//! agent's memory once a one-node cluster with a few pods has settled
//! (containerd and the containers are not counted), and the size of the
//! binary under test. With `--pod-network` the node runs in a network
//! namespace test host with its VXLAN pod network, as a real node does;
//! with `--services N` as well, N Services selecting the idle pods exist
//! before memory is read, and the agent has programmed them (its rules
//! and its cluster DNS index). With `--volumes`, each pod mounts the one
//! ConfigMap and Secret, an emptyDir and a PersistentVolumeClaim of its
//! own (`podstart --volumes`' pods), so the agent keeps their volumes
//! current while idle.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_app_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::Underlay;
use skiff_objects::manifest::parse_manifest;
use skiff_objects::{IntoObject, Kind};

use super::common::{deployment, round};
use super::podstart::{claim_yaml, one_object, pod_with_volumes, SHARED_CONFIG};
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// Pods running on the node while idle.
    #[arg(long, default_value_t = 3)]
    pub pods: usize,
    /// Seconds of idling before memory is read.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Run the node in a network namespace test host with its VXLAN pod
    /// network (as a real node runs) instead of with the pod network off.
    #[arg(long)]
    pub pod_network: bool,
    /// Services selecting the idle pods, made before idling (needs
    /// `--pod-network`).
    #[arg(long, default_value_t = 0)]
    pub services: usize,
    /// Watches of the Services and of the Endpoints (each a pair, as an
    /// agent keeps) opened before the Services are made, so that the
    /// setup's master CPU includes sending each change to as many nodes
    /// (needs `--services`).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Give each pod a ConfigMap, a Secret, an emptyDir and a claim of its
    /// own instead of no volumes.
    #[arg(long)]
    pub volumes: bool,
}

const IMAGE: &str = "bench/busybox:1";

fn mib(bytes: u64) -> f64 {
    round(bytes as f64 / 1048576.0)
}

pub async fn run(args: FootprintArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "footprint runs an agent with containers: run it as root with containerd installed"
    );
    anyhow::ensure!(
        args.services == 0 || args.pod_network,
        "--services needs --pod-network: Services are programmed by the pod network"
    );
    anyhow::ensure!(
        args.watchers == 0 || args.services > 0,
        "--watchers needs --services: they watch the Services being made"
    );
    let binary = skiff_e2e::skiff_bin();
    let binary_bytes = std::fs::metadata(&binary)?.len();
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;

    // With the pod network, one test host on a bridge; the master listens
    // on the bridge's address so the host can reach it.
    let mut underlay = match args.pod_network {
        true => Some(Underlay::new()?),
        false => None,
    };
    let host = match underlay.as_mut() {
        Some(u) => Some(u.add_host(2)?),
        None => None,
    };

    // Start to serving: the API answers and knows a leader.
    let started = Instant::now();
    let master = match &underlay {
        Some(u) => MasterProcess::start_on(&dir.path().join("master"), &u.gateway(), &[])?,
        None => MasterProcess::start_with(&dir.path().join("master"), None, &[])?,
    };
    let client = master.client();
    loop {
        if let Ok(s) = client.cluster_status().await {
            if s.has_leader && client.get(Kind::Namespace, "", "default").await.is_ok() {
                break;
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "master not serving after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let master_ready_ms = started.elapsed().as_secs_f64() * 1000.0;

    let image = BusyboxImage::build()?;
    let write_image =
        |data: &Path| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE);
    let node = match &host {
        Some(h) => RuntimeNode::start_in_host(&master.api_addr, h, write_image)?,
        None => RuntimeNode::start(&master.api_addr, "footprint", write_image, &[])?,
    };
    wait_node_ready(&client, &node.agent.node_name, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;
    match args.volumes {
        true => create_pods_with_volumes(&client, args.pods).await?,
        false => create_plain_pods(&client, args.pods).await?,
    }
    wait_app_ready(&client, "idle", args.pods, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;
    let mut services_setup = None;
    if args.services > 0 {
        // The Service ports the agent programs: the built-in Services'
        // (the API's, DNS's) before, each new one's besides after.
        let ports = |log: &str| {
            log.lines()
                .filter_map(|l| l.split("service rules updated ports=").nth(1))
                .filter_map(|n| n.split_whitespace().next()?.parse::<usize>().ok())
                .collect::<Vec<_>>()
        };
        let before = ports(&node.agent.log()).last().copied().unwrap_or(0);
        let watchers = Watchers::open(&master, args.watchers).await?;
        let setup = SetupCost::start(&master, &node)?;
        for i in 0..args.services {
            client.create(idle_service(i)).await?;
        }
        let programmed = |log: &str| ports(log).iter().any(|&n| n >= before + args.services);
        skiff_e2e::wait_for(
            &format!("the agent programming {} Services", args.services),
            Duration::from_secs(120),
            || async { programmed(&node.agent.log()).then_some(()) },
        )
        .await
        .with_context(|| node.log_tail())?;
        watchers.settled(Duration::from_secs(60)).await;
        let mut cost = setup.finish(&master, &node)?;
        cost["watchers"] = args.watchers.into();
        cost["watch_events"] = watchers.events().into();
        drop(watchers);
        cost["master_cpu_ms_per_relist"] = relist_cost(&client, &master).await?.into();
        services_setup = Some(cost);
    }
    eprintln!("{} pods running; idling {}s", args.pods, args.seconds);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;

    let proc_root = Path::new("/proc");
    let master_sample = proc_stats::sample(proc_root, master.pid().context("master pid")?)?;
    let agent_sample = proc_stats::sample(proc_root, node.agent.pid().context("agent pid")?)?;
    let containerd_sample = proc_stats::sample(proc_root, node.containerd.pid())?;
    Ok(serde_json::json!({
        "scenario": "footprint",
        "binary": binary.display().to_string(),
        "binary_bytes": binary_bytes,
        "master_ready_ms": round(master_ready_ms),
        "master_rss_mib": mib(master_sample.rss_bytes),
        "agent_rss_mib": mib(agent_sample.rss_bytes),
        // What the RSS is made of: anonymous memory (the process's own)
        // and pages of files (mostly the binary, shared with the master
        // when both run on one machine).
        "master_rss_anon_mib": mib(master_sample.rss_anon_bytes),
        "master_rss_file_mib": mib(master_sample.rss_file_bytes),
        "agent_rss_anon_mib": mib(agent_sample.rss_anon_bytes),
        "agent_rss_file_mib": mib(agent_sample.rss_file_bytes),
        "containerd_rss_mib": mib(containerd_sample.rss_bytes),
        "pods": args.pods,
        "services": args.services,
        // From the first Service's create to the agent's rules having
        // them all: the CPU the master and the agent spent, and the List
        // calls the master answered (the agent's among them); with
        // `--watchers`, until every watcher has had every change, and the
        // events they had. Then the
        // master's CPU for one list of every Service and Endpoints from
        // its replica: what each agent cost it after every change, and
        // every minute, when agents listed instead of following watches.
        "services_setup": services_setup,
        "volumes": args.volumes,
        "pod_network": if args.pod_network { "vxlan" } else { "none" },
        "targets": {"master_rss_mib": 30, "agent_rss_mib": 15, "master_ready_ms": 1000, "binary_bytes": 25_000_000},
    }))
}

/// The master's CPU, in milliseconds, for one list of every Service and
/// every Endpoints from its local replica (as agents list them), over
/// [`RELISTS`] of them.
async fn relist_cost(
    client: &skiff_master::client::Client,
    master: &MasterProcess,
) -> anyhow::Result<f64> {
    let pid = master.pid().context("master pid")?;
    let proc_root = Path::new("/proc");
    let before = proc_stats::cpu_seconds(proc_root, pid)?;
    for _ in 0..RELISTS {
        client.list_local(Kind::Service, "").await?;
        client.list_local(Kind::Endpoints, "").await?;
    }
    let spent = proc_stats::cpu_seconds(proc_root, pid)? - before;
    Ok(round(spent * 1000.0 / RELISTS as f64))
}

/// Watches of the Services and the Endpoints opened on a master, each
/// pair as an agent keeps them, counting the events they receive; closed
/// when dropped.
struct Watchers {
    events: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Watchers {
    /// Watches per connection (HTTP/2 servers limit concurrent streams).
    const PER_CONNECTION: usize = 50;

    async fn open(master: &MasterProcess, pairs: usize) -> anyhow::Result<Watchers> {
        let events = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let mut client = master.client();
        let revision = client.list_local(Kind::Service, "").await?.revision;
        for i in 0..pairs * 2 {
            if i % Self::PER_CONNECTION == 0 {
                client = master.client();
            }
            let kind = if i % 2 == 0 {
                Kind::Service
            } else {
                Kind::Endpoints
            };
            let mut watch = client.watch(kind, "", revision).await?;
            let events = events.clone();
            tasks.spawn(async move {
                while let Ok(Some(_)) = watch.next().await {
                    events.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Ok(Watchers { events, tasks })
    }

    fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Waits until no event has come for half a second (at most `limit`):
    /// the changes have reached every watcher.
    async fn settled(&self, limit: Duration) {
        if self.tasks.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut seen = self.events();
        while started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.events();
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Lists timed by [`relist_cost`].
const RELISTS: usize = 50;

/// What the master and the agent spend while the Services are made and
/// programmed: readings at the start, then the differences.
struct SetupCost {
    started: Instant,
    master_cpu_s: f64,
    agent_cpu_s: f64,
    lists: f64,
}

impl SetupCost {
    fn start(master: &MasterProcess, node: &RuntimeNode) -> anyhow::Result<SetupCost> {
        let proc_root = Path::new("/proc");
        Ok(SetupCost {
            started: Instant::now(),
            master_cpu_s: proc_stats::cpu_seconds(proc_root, master.pid().context("master pid")?)?,
            agent_cpu_s: proc_stats::cpu_seconds(
                proc_root,
                node.agent.pid().context("agent pid")?,
            )?,
            lists: master.lists_answered(),
        })
    }

    fn finish(
        self,
        master: &MasterProcess,
        node: &RuntimeNode,
    ) -> anyhow::Result<serde_json::Value> {
        let proc_root = Path::new("/proc");
        let master_cpu = proc_stats::cpu_seconds(proc_root, master.pid().context("master pid")?)?;
        let agent_cpu = proc_stats::cpu_seconds(proc_root, node.agent.pid().context("agent pid")?)?;
        Ok(serde_json::json!({
            "seconds": round(self.started.elapsed().as_secs_f64()),
            "master_cpu_s": round(master_cpu - self.master_cpu_s),
            "agent_cpu_s": round(agent_cpu - self.agent_cpu_s),
            "master_lists": master.lists_answered() - self.lists,
        }))
    }
}

/// The idle Deployment's `pods` pods, with no volumes.
async fn create_plain_pods(
    client: &skiff_master::client::Client,
    pods: usize,
) -> anyhow::Result<()> {
    let mut d = deployment("idle", pods as i32);
    if let Some(c) = d
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .and_then(|t| t.spec.as_mut())
        .and_then(|s| s.containers.first_mut())
    {
        c.image = IMAGE.into();
        c.image_pull_policy = "Never".into();
        c.command = vec!["sleep".into(), "3600".into()];
    }
    client.create(d.into_object()).await?;
    Ok(())
}

/// `pods` pods labelled `app: idle`, each with the shared ConfigMap and
/// Secret, an emptyDir and its own claim (made just before it).
async fn create_pods_with_volumes(
    client: &skiff_master::client::Client,
    pods: usize,
) -> anyhow::Result<()> {
    for shared in parse_manifest("footprint-config.yaml", SHARED_CONFIG, true)?.objects {
        client.create(shared).await?;
    }
    for i in 0..pods {
        let name = format!("idle-{i:03}");
        let claim_name = format!("{name}-data");
        client
            .create(one_object("claim.yaml", &claim_yaml(&claim_name))?)
            .await?;
        let mut pod = pod_with_volumes(&name, &claim_name);
        if let Some(meta) = pod.metadata.as_mut() {
            meta.labels = [("app".to_owned(), "idle".to_owned())].into();
        }
        client.create(pod.into_object()).await?;
    }
    Ok(())
}

/// Service `idle-<i>`, port 80 to the idle pods' 8080.
fn idle_service(i: usize) -> skiff_proto::api::Object {
    use skiff_objects::services::{self, IntOrString, ServicePort, ServiceSpec};
    let meta = skiff_proto::v1::ObjectMeta {
        name: format!("idle-{i}"),
        namespace: "default".into(),
        ..Default::default()
    };
    let spec = ServiceSpec {
        selector: Some([("app".to_owned(), "idle".to_owned())].into()),
        ports: Some(vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(IntOrString::Int(8080)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    services::object(meta, spec, None)
}
