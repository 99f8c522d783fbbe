//! What the control-plane scenarios share: a master in a temp dir, a fleet
//! of hollow nodes, waiting for nodes and pods, reading the master's CPU
//! and memory, and the TLS a REST client of the master uses.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use skiff_e2e::hollow::{HollowConfig, HollowFleet, HollowNode};
use skiff_e2e::master::MasterProcess;
use skiff_master::client::Client;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;
use skiff_security::{CertStore, Credentials};

use crate::proc_stats;

/// A master running in a temp dir that lives as long as this value.
pub struct BenchMaster {
    pub process: MasterProcess,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl BenchMaster {
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<BenchMaster> {
        let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
        let process = MasterProcess::start_with(&dir.path().join("master"), None, extra_args)?;
        process.wait_ready(Duration::from_secs(30)).await?;
        let client = process.client();
        Ok(BenchMaster {
            process,
            client,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    pub fn sample(&self) -> anyhow::Result<proc_stats::ProcSample> {
        Ok(proc_stats::sample(Path::new("/proc"), self.pid())?)
    }
}

/// The name [`start_fleet`] gives hollow node number `i`.
pub fn hollow_name(i: usize) -> String {
    format!("hollow-{i:05}")
}

/// Starts `count` hollow nodes named by [`hollow_name`], a few at a time.
pub async fn start_fleet(
    fleet: &HollowFleet,
    count: usize,
    config: HollowConfig,
) -> anyhow::Result<Vec<HollowNode>> {
    let mut nodes = Vec::with_capacity(count);
    let started = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut starting = tokio::task::JoinSet::new();
        for &i in chunk {
            let (fleet, config) = (fleet.clone(), config.clone());
            starting.spawn(async move { fleet.start(&hollow_name(i), i, config).await });
        }
        while let Some(done) = starting.join_next().await {
            nodes.push(done??);
        }
    }
    eprintln!(
        "{count} hollow nodes registered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(nodes)
}

/// Nodes whose Ready condition is True.
pub async fn ready_nodes(client: &Client) -> anyhow::Result<usize> {
    let nodes = client.list(Kind::Node, "").await?;
    Ok(nodes
        .items
        .iter()
        .filter(|o| match &o.kind {
            Some(Body::Node(n)) => n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            }),
            _ => false,
        })
        .count())
}

/// Waits until `want` nodes are Ready.
pub async fn wait_nodes_ready(
    client: &Client,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = ready_nodes(client).await.unwrap_or(0);
        if ready >= want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready}/{want} nodes Ready after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// All pods in `default`.
pub async fn pods(client: &Client) -> anyhow::Result<Vec<v1::Pod>> {
    Ok(client
        .list(Kind::Pod, "default")
        .await?
        .items
        .into_iter()
        .filter_map(|o| match skiff_objects::pods::in_model(o).kind {
            Some(Body::Pod(p)) => Some(p),
            _ => None,
        })
        .collect())
}

pub fn node_of(p: &v1::Pod) -> &str {
    p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("")
}

pub fn running(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

/// A container spec with small requests, so thousands fit.
pub fn small_container() -> v1::Container {
    v1::Container {
        name: "app".into(),
        image: "registry.local/app:1.0".into(),
        resources: Some(v1::ResourceRequirements {
            requests: [
                ("cpu".to_owned(), "10m".to_owned()),
                ("memory".to_owned(), "16Mi".to_owned()),
            ]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Deployment of `replicas` small pods.
pub fn deployment(name: &str, replicas: i32) -> v1::Deployment {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_owned(), name.to_owned())].into();
    v1::Deployment {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(v1::DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(v1::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(Box::new(v1::PodTemplateSpec {
                metadata: Some(v1::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(v1::PodSpec {
                    containers: vec![small_container()],
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until `want` pods are Running, returning them.
pub async fn wait_pods_running(
    client: &Client,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<v1::Pod>> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = pods(client).await.unwrap_or_default();
        let running_count = p.iter().filter(|p| running(p)).count();
        if p.len() == want && running_count == want {
            return Ok(p);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{running_count}/{want} pods running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The TLS the REST API is reached with as the cluster admin: the cluster
/// CA and the admin certificate of `api_addr`'s admin.conf, ALPN h2.
pub fn admin_rest_tls(api_addr: &str) -> anyhow::Result<Arc<ClientConfig>> {
    skiff_security::install_crypto_provider();
    let credentials = Credentials::load(&skiff_e2e::credentials::admin_conf(api_addr)?)?;
    let store = CertStore::new(&credentials.cert_pem, &credentials.key_pem)?;
    Ok(skiff_security::tls::client_config(
        &credentials.ca_pem,
        Some(store),
    )?)
}

/// The TLS a pod reaches the REST API with: the cluster CA of `api_addr`'s
/// admin.conf and no client certificate, ALPN h2. The caller is then who
/// its service account token says.
pub fn token_rest_tls(api_addr: &str) -> anyhow::Result<Arc<ClientConfig>> {
    skiff_security::install_crypto_provider();
    let credentials = Credentials::load(&skiff_e2e::credentials::admin_conf(api_addr)?)?;
    Ok(skiff_security::tls::client_config(
        &credentials.ca_pem,
        None,
    )?)
}

pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Four decimals, for figures that are small on purpose (idle CPU).
pub fn round_fine(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
