//! `store`: throughput and latency of fsynced writes to a Raft cluster of
//! real masters. Each client creates objects as fast as its previous create
//! is acknowledged; every acknowledgement means the entry was fsynced on a
//! quorum and applied.
//!
//! `--objects` picks what is created: Services, which also take a clusterIP
//! from the allocator on every create, or plain objects that only the store
//! handles. `--vs-etcd` then makes the same writes, from as many clients, to
//! an etcd cluster of as many members on the same machine in the same run,
//! each value as large as the skiff object it stands for, and reports the
//! ratio of the two throughputs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use skiff_e2e::master::MasterCluster;
use skiff_objects::Kind;
use skiff_proto::api::Object;
use skiff_proto::v1;
use tokio::task::JoinHandle;

use super::common::{round, round_fine};
use crate::etcd_api::kv_client::KvClient;
use crate::etcd_api::PutRequest;
use crate::etcd_cluster::{self, EtcdCluster};
use crate::latency::Latencies;
use crate::proc_stats::{self, ProcSample};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Masters in the cluster (1, 3 or 5); with `--vs-etcd`, also the
    /// number of etcd members.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Total writes across all clients.
    #[arg(long, default_value_t = 20_000)]
    pub writes: usize,
    /// What each write creates.
    #[arg(long, value_enum, default_value_t = Objects::Services)]
    pub objects: Objects,
    /// Then make the same writes to a loopback etcd cluster (Debian's etcd
    /// 3.4, `/usr/bin/etcd`) and report its figures and the ratio. Its
    /// client and peer connections are mutual TLS, as skiff's are.
    #[arg(long)]
    pub vs_etcd: bool,
    /// With `--vs-etcd`: run etcd over plain HTTP instead of mutual TLS.
    #[arg(long, requires = "vs_etcd")]
    pub etcd_plaintext: bool,
    /// Keep the temp dir (data and master logs) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// What the writes create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objects {
    /// Services without a selector: each create also takes a clusterIP from
    /// the allocator (on the leader, one at a time) and wakes the Endpoints
    /// controller.
    Services,
    /// Secrets without values (JSON documents): nothing but the store
    /// touches them.
    Plain,
}

impl Objects {
    /// The name the JSON line reports, as given to `--objects`.
    fn name(self) -> &'static str {
        match self {
            Objects::Services => "services",
            Objects::Plain => "plain",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Objects::Services => Kind::Service,
            Objects::Plain => Kind::Secret,
        }
    }

    /// What write `n` of client `client` creates.
    fn object(self, client: usize, n: usize) -> Object {
        let name = object_name(client, n);
        match self {
            Objects::Services => service(name),
            Objects::Plain => secret(name),
        }
    }

    /// Where etcd keeps that object, as kube-apiserver lays out its keys.
    fn etcd_key(self, client: usize, n: usize) -> String {
        let plural = self.kind().plural();
        let name = object_name(client, n);
        format!("/registry/{plural}/default/{name}")
    }
}

fn object_name(client: usize, n: usize) -> String {
    format!("bench-{client}-{n}")
}

/// The metadata both kinds of object carry: a name and one label.
fn bench_meta(name: String) -> Option<v1::ObjectMeta> {
    Some(v1::ObjectMeta {
        name,
        labels: [("app".to_owned(), "bench".to_owned())].into(),
        ..Default::default()
    })
}

/// A Service without a selector: a typical small object, but one that the
/// clusterIP allocator serves on every create.
fn service(name: String) -> Object {
    use skiff_objects::services::{self, IntOrString, ServicePort, ServiceSpec};
    let spec = ServiceSpec {
        ports: Some(vec![ServicePort {
            name: Some("http".to_owned()),
            port: 80,
            target_port: Some(IntOrString::Int(8080)),
            ..Default::default()
        }]),
        ..Default::default()
    };
    services::object(bench_meta(name).unwrap_or_default(), spec, None)
}

/// A Secret within a few bytes of [`service`]'s size, encoded. Secrets
/// rather than Endpoints: the Endpoints controller maps every Endpoints
/// event to the Service of the same name and deletes Endpoints whose
/// Service does not exist, so plain Endpoints would be deleted behind the
/// bench's back, adding writes of its own. Nothing in the master acts on a
/// Secret in `default` (join tokens are Secrets in `kube-system`, read by
/// name).
fn secret(name: String) -> Object {
    use skiff_objects::secrets::{self, ByteString, Secret};
    // One short value: as the client sends it, within a few bytes of the
    // Service with the same metadata (its port, name and target port).
    let meta = bench_meta(name).unwrap_or_default();
    let secret = Secret {
        string_data: None,
        data: Some([("port".to_owned(), ByteString(b"8080".to_vec()))].into()),
        ..Secret::default()
    };
    secrets::of(meta, &secret)
}

/// The etcd `Put` standing for write `n` of client `client`.
fn put_request(objects: Objects, client: usize, n: usize) -> PutRequest {
    PutRequest {
        key: objects.etcd_key(client, n).into_bytes(),
        value: etcd_value(&objects.object(client, n)),
        ..Default::default()
    }
}

/// The value etcd stores for `object`: its encoding as the skiff client
/// sends it (a moved kind in its protobuf model, which every master
/// reads), so exactly as many bytes (kube-apiserver too stores objects in
/// etcd as protobuf).
fn etcd_value(object: &Object) -> Vec<u8> {
    skiff_objects::legacy_bodies::for_any_reader(object.clone()).encode_to_vec()
}

/// Refuses settings that cannot make a run.
fn validate(args: &StoreArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.masters >= 1, "--masters must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        args.writes >= args.clients,
        "--writes must be at least --clients"
    );
    Ok(())
}

/// How many of `writes` client `client` of `clients` makes: an even share,
/// the first clients taking one more each for the remainder.
fn share(writes: usize, clients: usize, client: usize) -> usize {
    writes / clients + usize::from(client < writes % clients)
}

/// One client's acknowledged writes and errors, or all clients' summed.
#[derive(Debug, Default)]
struct ClientRun {
    latencies: Latencies,
    errors: usize,
}

impl ClientRun {
    /// Counts a failed write; the first few are shown.
    fn failed(&mut self, client: usize, error: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.errors <= 3 {
            eprintln!("client {client}: {error}");
        }
    }
}

/// Waits for every client and sums their runs.
async fn join_clients(tasks: Vec<JoinHandle<ClientRun>>) -> anyhow::Result<ClientRun> {
    let mut total = ClientRun::default();
    for task in tasks {
        let run = task.await?;
        total.latencies.extend(run.latencies);
        total.errors += run.errors;
    }
    Ok(total)
}

/// The writes against one cluster, with its servers' CPU and memory.
#[derive(Debug)]
struct Load {
    run: ClientRun,
    elapsed: Duration,
    cpu_seconds: f64,
    /// What this process (the clients) used meanwhile: on a small
    /// machine the load generator shares the cores with the servers.
    client_cpu_seconds: f64,
    max_rss_bytes: u64,
}

impl Load {
    fn acknowledged(&self) -> usize {
        self.run.latencies.len()
    }

    fn writes_per_sec(&self) -> f64 {
        self.acknowledged() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        self.run.latencies.percentile_ms(p)
    }

    fn cpu_cores(&self) -> f64 {
        self.cpu_seconds / self.elapsed.as_secs_f64()
    }

    fn client_cpu_cores(&self) -> f64 {
        self.client_cpu_seconds / self.elapsed.as_secs_f64()
    }

    /// The servers' CPU milliseconds per acknowledged write.
    fn cpu_ms_per_write(&self) -> Option<f64> {
        let writes = self.acknowledged();
        (writes > 0).then(|| self.cpu_seconds * 1000.0 / writes as f64)
    }
}

/// The CPU seconds this process (the bench's clients) has used.
fn own_cpu_seconds() -> std::io::Result<f64> {
    proc_stats::cpu_seconds(Path::new("/proc"), std::process::id())
}

/// A sample of each server process.
fn sample_all(pids: &[u32]) -> std::io::Result<Vec<ProcSample>> {
    pids.iter()
        .map(|p| proc_stats::sample(Path::new("/proc"), *p))
        .collect()
}

/// The CPU seconds the servers used between two samples, and the largest
/// resident memory among them at the second.
fn usage(before: &[ProcSample], after: &[ProcSample]) -> (f64, u64) {
    let cpu: f64 = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
        .sum();
    let max_rss = after.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    (cpu, max_rss)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// skiff's writes per second over etcd's; none if etcd acknowledged none.
fn ratio(skiff: f64, etcd: f64) -> Option<f64> {
    (etcd > 0.0).then_some(skiff / etcd)
}

/// The writes against a cluster of real masters, every client talking to
/// the leader.
async fn measure_skiff(args: &StoreArgs, dir: &Path) -> anyhow::Result<Load> {
    eprintln!(
        "starting {} skiff masters under {}",
        args.masters,
        dir.display()
    );
    let cluster = MasterCluster::start_in(dir, args.masters, &[]).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.masters[leader].api_addr.clone();
    let pids: Vec<u32> = cluster.masters.iter().filter_map(|m| m.pid()).collect();
    eprintln!(
        "leader is {leader_addr}; {} clients, {} writes",
        args.clients, args.writes
    );

    let before = sample_all(&pids).context("reading master CPU time")?;
    let client_before = own_cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = skiff_e2e::credentials::admin_client(&leader_addr)?;
        let count = share(args.writes, args.clients, c);
        let objects = args.objects;
        tasks.push(tokio::spawn(async move {
            let mut run = ClientRun::default();
            for i in 0..count {
                let t = Instant::now();
                match client.create(objects.object(c, i)).await {
                    Ok(_) => run.latencies.push(t.elapsed()),
                    Err(e) => run.failed(c, &e),
                }
            }
            run
        }));
    }
    let run = join_clients(tasks).await?;
    let elapsed = started.elapsed();
    let client_cpu_seconds = own_cpu_seconds()? - client_before;
    let after = sample_all(&pids).context("reading master CPU time")?;
    let (cpu_seconds, max_rss_bytes) = usage(&before, &after);
    drop(cluster);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(Load {
        run,
        elapsed,
        cpu_seconds,
        client_cpu_seconds,
        max_rss_bytes,
    })
}

/// The same writes, as etcd `Put`s, against an etcd cluster of as many
/// members, every client talking to its leader as skiff's clients talk to
/// theirs (a follower would forward each write to the leader).
async fn measure_etcd(args: &StoreArgs, dir: &Path) -> anyhow::Result<Load> {
    let dir = dir.join("etcd");
    eprintln!(
        "starting {} etcd members under {}",
        args.masters,
        dir.display()
    );
    let security = if args.etcd_plaintext {
        etcd_cluster::Security::Plaintext
    } else {
        etcd_cluster::Security::MutualTls
    };
    let mut cluster = EtcdCluster::start(&dir, args.masters, security)?;
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    let leader_url = cluster.client_url(leader);
    let pids = cluster.pids();
    eprintln!(
        "etcd leader is {leader_url}; {} clients, {} writes",
        args.clients, args.writes
    );

    let before = sample_all(&pids).context("reading etcd CPU time")?;
    let client_before = own_cpu_seconds()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        // A connection per client, as each skiff client has its own.
        let mut kv = KvClient::new(cluster.channel(&leader_url)?);
        let count = share(args.writes, args.clients, c);
        let objects = args.objects;
        tasks.push(tokio::spawn(async move {
            let mut run = ClientRun::default();
            for i in 0..count {
                let t = Instant::now();
                match kv.put(put_request(objects, c, i)).await {
                    Ok(_) => run.latencies.push(t.elapsed()),
                    Err(e) => run.failed(c, &e),
                }
            }
            run
        }));
    }
    let run = join_clients(tasks).await?;
    let elapsed = started.elapsed();
    let client_cpu_seconds = own_cpu_seconds()? - client_before;
    let after = sample_all(&pids).context("reading etcd CPU time")?;
    let (cpu_seconds, max_rss_bytes) = usage(&before, &after);
    drop(cluster);
    Ok(Load {
        run,
        elapsed,
        cpu_seconds,
        client_cpu_seconds,
        max_rss_bytes,
    })
}

/// The etcd side of the report, and skiff's throughput over etcd's.
fn etcd_figures(
    members: usize,
    etcd_plaintext: bool,
    skiff: &Load,
    etcd: &Load,
) -> serde_json::Value {
    serde_json::json!({
        "etcd_members": members,
        "etcd_mutual_tls": !etcd_plaintext,
        "etcd_acknowledged": etcd.acknowledged(),
        "etcd_errors": etcd.run.errors,
        "etcd_seconds": round(etcd.elapsed.as_secs_f64()),
        "etcd_writes_per_sec": round(etcd.writes_per_sec()),
        "etcd_p50_ms": round(etcd.percentile_ms(50.0)),
        "etcd_p99_ms": round(etcd.percentile_ms(99.0)),
        "etcd_max_ms": round(etcd.percentile_ms(100.0)),
        "etcd_cpu_cores": round(etcd.cpu_cores()),
        "etcd_cpu_ms_per_write": etcd.cpu_ms_per_write().map(round_fine),
        "etcd_client_cpu_cores": round(etcd.client_cpu_cores()),
        "max_etcd_rss_mib": round(mib(etcd.max_rss_bytes)),
        "ratio": ratio(skiff.writes_per_sec(), etcd.writes_per_sec()).map(round),
    })
}

pub async fn run(args: StoreArgs) -> anyhow::Result<serde_json::Value> {
    validate(&args)?;
    if args.vs_etcd {
        // Now rather than after minutes of skiff writes.
        etcd_cluster::check_installed()?;
    }
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    let skiff = measure_skiff(&args, dir.path()).await?;
    eprintln!(
        "skiff: {:.0} writes/s, p99 {:.1} ms",
        skiff.writes_per_sec(),
        skiff.percentile_ms(99.0)
    );
    let mut report = serde_json::json!({
        "scenario": "store",
        "objects": args.objects.name(),
        "object_bytes": args.objects.object(0, 0).encoded_len(),
        "masters": args.masters,
        "clients": args.clients,
        "writes": args.writes,
        "acknowledged": skiff.acknowledged(),
        "errors": skiff.run.errors,
        "seconds": round(skiff.elapsed.as_secs_f64()),
        "writes_per_sec": round(skiff.writes_per_sec()),
        "p50_ms": round(skiff.percentile_ms(50.0)),
        "p99_ms": round(skiff.percentile_ms(99.0)),
        "max_ms": round(skiff.percentile_ms(100.0)),
        "masters_cpu_cores": round(skiff.cpu_cores()),
        "masters_cpu_ms_per_write": skiff.cpu_ms_per_write().map(round_fine),
        "client_cpu_cores": round(skiff.client_cpu_cores()),
        "max_master_rss_mib": round(mib(skiff.max_rss_bytes)),
        "fsync_before_ack": true,
    });
    if args.vs_etcd {
        let etcd = measure_etcd(&args, dir.path()).await?;
        let figures = etcd_figures(args.masters, args.etcd_plaintext, &skiff, &etcd);
        if let (Some(report), Some(figures)) = (report.as_object_mut(), figures.as_object()) {
            report.extend(figures.clone());
        }
    }
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
        store: StoreArgs,
    }

    fn args(masters: usize, clients: usize, writes: usize) -> StoreArgs {
        StoreArgs {
            masters,
            clients,
            writes,
            objects: Objects::Services,
            vs_etcd: false,
            etcd_plaintext: false,
            keep: false,
        }
    }

    #[test]
    fn services_by_default_and_etcd_only_when_asked() {
        let cli = Cli::try_parse_from(["store"]).unwrap();
        assert_eq!(cli.store.objects, Objects::Services);
        assert!(!cli.store.vs_etcd);
        let cli = Cli::try_parse_from(["store", "--objects", "plain", "--vs-etcd"]).unwrap();
        assert_eq!(cli.store.objects, Objects::Plain);
        assert!(cli.store.vs_etcd);
        assert!(Cli::try_parse_from(["store", "--objects", "pods"]).is_err());
    }

    #[test]
    fn refuses_runs_that_cannot_be_made() {
        assert!(validate(&args(3, 64, 20_000)).is_ok());
        assert!(validate(&args(0, 8, 400)).is_err());
        assert!(validate(&args(3, 0, 400)).is_err());
        assert!(validate(&args(3, 8, 7)).is_err());
    }

    #[test]
    fn writes_are_shared_evenly_among_clients() {
        let shares: Vec<usize> = (0..3).map(|c| share(10, 3, c)).collect();
        assert_eq!(shares, [4, 3, 3]);
        let total: usize = (0..64).map(|c| share(20_000, 64, c)).sum();
        assert_eq!(total, 20_000);
    }

    #[test]
    fn etcd_values_are_as_large_as_the_skiff_objects() {
        use skiff_objects::legacy_bodies;
        for objects in [Objects::Services, Objects::Plain] {
            for (client, n) in [(0, 0), (7, 12), (63, 19_999)] {
                // As the skiff client sends it.
                let sent = legacy_bodies::for_any_reader(objects.object(client, n));
                let put = put_request(objects, client, n);
                assert_eq!(put.value.len(), sent.encoded_len());
                assert_eq!(put.value, sent.encode_to_vec());
            }
        }
    }

    #[test]
    fn etcd_keys_are_laid_out_as_kube_apiserver_does() {
        assert_eq!(
            Objects::Services.etcd_key(3, 17),
            "/registry/services/default/bench-3-17"
        );
        assert_eq!(
            Objects::Plain.etcd_key(3, 17),
            "/registry/secrets/default/bench-3-17"
        );
    }

    #[test]
    fn plain_objects_are_about_as_large_as_services() {
        use skiff_objects::legacy_bodies;
        // As the skiff client sends them.
        let sent = |objects: Objects| legacy_bodies::for_any_reader(objects.object(5, 5));
        let service = sent(Objects::Services).encoded_len();
        let secret = sent(Objects::Plain).encoded_len();
        assert!(
            secret.abs_diff(service) * 5 <= service,
            "{secret} vs {service} bytes"
        );
    }

    #[test]
    fn ratio_is_none_without_etcd_writes() {
        assert_eq!(ratio(6_000.0, 3_000.0), Some(2.0));
        assert_eq!(ratio(6_000.0, 0.0), None);
    }
}
