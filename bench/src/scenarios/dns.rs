//! `dns`: skiff's cluster DNS server against dnsmasq serving the same
//! records, in the same run, on loopback (issue 18: ≥ 1 × dnsmasq's
//! queries per second, p99 latency ≤ dnsmasq's). Both answer `--services`
//! names, `svc-N.bench.svc.cluster.local` → the same address each:
//!
//! - skiff's server is the agent's own (`skiff_agent::dns::run`, answering
//!   from a `ClusterIndex` of that many Services, as an agent does), run in
//!   a child process of this binary (`skiff-bench dns-server`, hidden) so
//!   that it has a process to itself as dnsmasq does;
//! - dnsmasq (Debian's `dnsmasq-base`) answers from a hosts file of the
//!   same names and addresses, authoritative for `cluster.local`, with the
//!   same 5 s TTL, no upstream.
//!
//! Before measuring, one name from each end of the list is asked of both
//! and must get the same address. Then, per round (the order of the two
//! servers alternates between rounds), `dnsperf` (Debian's) runs against
//! each: for `--seconds` at full speed (`--clients`, at most
//! `--outstanding` queries in flight: queries per second, and each
//! server's CPU time for them), then for `--latency-seconds` at a fixed
//! `--latency-qps` below both servers' capacity with each answer's latency
//! reported (`-v`: p50, p99, p99.9 over all rounds). Every query is for a
//! name the servers have; any answer but NOERROR fails the run. Both
//! servers are this run's children, stopped (by their own PIDs) when it
//! ends.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use skiff_agent::dns::{ClusterIndex, DnsConfig, SharedIndex};
use skiff_objects::services::{Service, ServicePort, ServiceSpec};
use skiff_objects::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::common::round;
use crate::latency::Latencies;
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct DnsArgs {
    /// Services (one name each) both servers answer.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Seconds of each full-speed measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Rounds, each measuring both servers.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// dnsperf's simulated clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// dnsperf's queries in flight at most.
    #[arg(long, default_value_t = 100)]
    pub outstanding: u32,
    /// The fixed rate of the latency measurement, queries per second.
    #[arg(long, default_value_t = 2000)]
    pub latency_qps: u32,
    /// Seconds of each latency measurement.
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u32,
}

/// The hidden `dns-server` command: skiff's DNS server alone.
#[derive(Debug, clap::Args)]
pub struct DnsServerArgs {
    /// Where it answers (UDP and TCP).
    #[arg(long)]
    pub listen: SocketAddr,
    /// How many Services it knows.
    #[arg(long)]
    pub services: usize,
    /// Its resolv.conf (for names it does not know; the benchmark asks
    /// none).
    #[arg(long)]
    pub resolv_conf: PathBuf,
}

/// The namespace of the benchmark's Services.
const NAMESPACE: &str = "bench";
const DNSPERF: &str = "dnsperf";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long a server may take to answer its first query.
const START_WITHIN: Duration = Duration::from_secs(15);

/// The name of Service `i`.
fn name(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.cluster.local")
}

/// The address of Service `i`: inside the service CIDR, past its first
/// addresses (the API's, the cluster DNS's).
fn address(i: usize) -> Ipv4Addr {
    let (high, low) = (1 + i / 250, 1 + i % 250);
    let octet = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 43, octet(high), octet(low))
}

/// The benchmark's Services, as an agent gets them from the masters.
fn services(count: usize) -> Vec<Service> {
    (0..count)
        .map(|i| Service {
            metadata: skiff_objects::typed::meta::ObjectMeta {
                name: Some(format!("svc-{i}")),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(address(i).to_string()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// Serves skiff's cluster DNS for `args.services` Services until stdin
/// closes (the parent ends or drops it).
pub async fn serve(args: DnsServerArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.services <= 250 * 250, "--services: at most 62500");
    let index = SharedIndex::default();
    index.replace(ClusterIndex::build(&services(args.services), &[], 1));
    let config = DnsConfig {
        listen: args.listen,
        cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
        service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 43, 0, 0), 16),
        cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16),
        node_ip: Ipv4Addr::LOCALHOST,
        resolv_conf: args.resolv_conf,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(skiff_agent::dns::run(config, index, shutdown.clone()));
    // No io-std in this build: a blocking thread waits for end of input.
    let _ = tokio::task::spawn_blocking(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    })
    .await;
    shutdown.cancel();
    let _ = server.await;
    Ok(serde_json::json!({"scenario": "dns-server", "services": args.services}))
}

/// A child process of this run, killed (by its PID) and reaped when
/// dropped.
struct Started {
    what: &'static str,
    child: Child,
}

impl Started {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if it has exited already.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited early: {status}", self.what),
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both UDP and TCP at the moment.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no loopback port free for UDP and TCP")
}

/// A DNS query (recursion desired) for the A record of `name`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(12 + name.len() + 6);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(u8::try_from(label.len()).unwrap_or(63));
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Skips a (possibly compressed) name at `at`; where what follows starts.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The first A record of an answer to query `id`, with the answer's
/// RCODE; `None` when `packet` is not such an answer.
fn answer_address(packet: &[u8], id: u16) -> Option<(u8, Option<Ipv4Addr>)> {
    let header = packet.get(..12)?;
    if u16::from_be_bytes([header[0], header[1]]) != id || header[2] & 0x80 == 0 {
        return None;
    }
    let rcode = header[3] & 0x0f;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4;
    }
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let fixed = packet.get(at..at + 10)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = packet.get(at + 10..at + 10 + length)?;
        if kind == 1 && length == 4 {
            return Some((
                rcode,
                Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            ));
        }
        at += 10 + length;
    }
    Some((rcode, None))
}

/// Asks `server` for `name` over UDP until it answers (within `within`):
/// the address it answers with, or the error why not.
async fn resolve(server: SocketAddr, name: &str, within: Duration) -> anyhow::Result<Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let deadline = tokio::time::Instant::now() + within;
    let mut id: u16 = 0x5151;
    let mut buf = vec![0u8; 4096];
    loop {
        id = id.wrapping_add(1);
        socket.send_to(&query(id, name), server).await?;
        let reply = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await;
        if let Ok(Ok(n)) = reply {
            match answer_address(&buf[..n], id) {
                Some((0, Some(ip))) => return Ok(ip),
                Some((rcode, _)) => {
                    anyhow::bail!("{server} answered {name} with RCODE {rcode} and no address")
                }
                None => {}
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{server} did not answer {name} within {within:?}"
        );
    }
}

/// What a dnsperf run printed at its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub average_latency_s: f64,
    /// Answers by RCODE name (`NOERROR`, `NXDOMAIN`, ...).
    pub rcodes: BTreeMap<String, u64>,
}

/// The first number in `text`.
fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.split_whitespace().next()?.parse().ok()
}

/// dnsperf's statistics block.
pub fn parse_summary(output: &str) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut seen_qps = false;
    for line in output.lines().map(str::trim) {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match label {
            "Queries completed" => summary.completed = number(value).unwrap_or(0),
            "Queries lost" => summary.lost = number(value).unwrap_or(0),
            "Queries per second" => {
                summary.qps = number(value).context("dnsperf's queries per second")?;
                seen_qps = true;
            }
            "Average Latency (s)" => summary.average_latency_s = number(value).unwrap_or(0.0),
            "Response codes" => {
                for part in value.split(',') {
                    let mut words = part.split_whitespace();
                    if let (Some(code), Some(count)) = (words.next(), words.next()) {
                        summary
                            .rcodes
                            .insert(code.to_owned(), count.parse().unwrap_or(0));
                    }
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(seen_qps, "no statistics in dnsperf's output:\n{output}");
    Ok(summary)
}

/// dnsperf `-v`'s answer lines (`> NOERROR name A 0.000190`): each
/// answer's RCODE and latency.
pub fn parse_answers(output: &str) -> Vec<(String, Duration)> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("> ")?;
            let mut words = rest.split_whitespace();
            let rcode = words.next()?.to_owned();
            let seconds: f64 = words.last()?.parse().ok()?;
            Some((rcode, Duration::from_secs_f64(seconds.max(0.0))))
        })
        .collect()
}

/// Runs dnsperf against `port` with `extra` arguments; its stdout.
fn dnsperf(port: u16, queries: &Path, extra: &[String]) -> anyhow::Result<String> {
    let out = Command::new(DNSPERF)
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("running dnsperf")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "dnsperf failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// One server's figures over the rounds.
#[derive(Debug, Default)]
struct Figures {
    qps: Vec<f64>,
    average_latency_ms: Vec<f64>,
    completed: u64,
    lost: u64,
    cpu_seconds: f64,
    latencies: Latencies,
}

impl Figures {
    fn mean_qps(&self) -> f64 {
        if self.qps.is_empty() {
            return 0.0;
        }
        self.qps.iter().sum::<f64>() / self.qps.len() as f64
    }

    fn report(&self, rss_bytes: Option<u64>) -> serde_json::Value {
        let per_10k = if self.completed == 0 {
            0.0
        } else {
            self.cpu_seconds / self.completed as f64 * 10_000.0
        };
        serde_json::json!({
            "qps": round(self.mean_qps()),
            "qps_rounds": self.qps.iter().map(|q| round(*q)).collect::<Vec<_>>(),
            "average_latency_ms_full_speed": self.average_latency_ms.iter().map(|l| (l * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "completed": self.completed,
            "lost": self.lost,
            "cpu_seconds_per_10k_queries": (per_10k * 10_000.0).round() / 10_000.0,
            "latency_samples": self.latencies.len(),
            "p50_ms": (self.latencies.percentile_ms(50.0) * 1000.0).round() / 1000.0,
            "p99_ms": (self.latencies.percentile_ms(99.0) * 1000.0).round() / 1000.0,
            "p999_ms": (self.latencies.percentile_ms(99.9) * 1000.0).round() / 1000.0,
            "rss_mib": rss_bytes.map(|b| round(b as f64 / (1024.0 * 1024.0))),
        })
    }
}

/// Fails on any answer but NOERROR: every name asked exists.
fn all_answered(server: &str, rcodes: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let wrong: Vec<String> = rcodes
        .iter()
        .filter(|(code, count)| code.as_str() != "NOERROR" && **count > 0)
        .map(|(code, count)| format!("{count} {code}"))
        .collect();
    anyhow::ensure!(
        wrong.is_empty(),
        "{server} answered names it serves with {}",
        wrong.join(", ")
    );
    Ok(())
}

/// One server under measurement.
struct Server {
    label: &'static str,
    port: u16,
    process: Started,
    figures: Figures,
}

impl Server {
    fn cpu_seconds(&self) -> f64 {
        proc_stats::sample(Path::new("/proc"), self.process.pid())
            .map(|s| s.cpu_seconds)
            .unwrap_or(0.0)
    }

    fn measure(&mut self, args: &DnsArgs, queries: &Path) -> anyhow::Result<()> {
        self.process.check_running()?;
        let before = self.cpu_seconds();
        let full_speed = [
            "-l".to_owned(),
            args.seconds.to_string(),
            "-c".to_owned(),
            args.clients.to_string(),
            "-q".to_owned(),
            args.outstanding.to_string(),
        ];
        let summary = parse_summary(&dnsperf(self.port, queries, &full_speed)?)?;
        self.figures.cpu_seconds += self.cpu_seconds() - before;
        all_answered(self.label, &summary.rcodes)?;
        eprintln!(
            "dns: {}: {:.0} queries/s ({} lost)",
            self.label, summary.qps, summary.lost
        );
        self.figures.qps.push(summary.qps);
        self.figures
            .average_latency_ms
            .push(summary.average_latency_s * 1000.0);
        self.figures.completed += summary.completed;
        self.figures.lost += summary.lost;
        let paced = [
            "-l".to_owned(),
            args.latency_seconds.to_string(),
            "-Q".to_owned(),
            args.latency_qps.to_string(),
            "-v".to_owned(),
        ];
        let answers = parse_answers(&dnsperf(self.port, queries, &paced)?);
        anyhow::ensure!(
            !answers.is_empty(),
            "{}: dnsperf -v reported no answers",
            self.label
        );
        let mut rcodes: BTreeMap<String, u64> = BTreeMap::new();
        for (rcode, latency) in answers {
            *rcodes.entry(rcode).or_default() += 1;
            self.figures.latencies.push(latency);
        }
        all_answered(self.label, &rcodes)
    }
}

/// Makes `path` readable by everyone (dnsmasq reads its hosts file after
/// giving up root).
fn world_readable(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

pub async fn run(args: DnsArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        (1..=250 * 250).contains(&args.services),
        "--services: between 1 and 62500"
    );
    anyhow::ensure!(
        args.rounds >= 1 && args.seconds >= 1,
        "--rounds and --seconds: at least 1"
    );
    let missing: Vec<&str> = [DNSPERF, DNSMASQ]
        .into_iter()
        .filter(|tool| skiff_e2e::find_in_path(tool).is_none())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "dns needs {} (Debian packages dnsperf and dnsmasq-base; scripts/setup installs them)",
        missing.join(" and ")
    );
    let dir = tempfile::Builder::new()
        .prefix("skiff-bench-dns-")
        .tempdir()?;
    world_readable(dir.path(), 0o755)?;
    let hosts = dir.path().join("hosts");
    let queries = dir.path().join("queries");
    let resolv_conf = dir.path().join("resolv.conf");
    let mut hosts_text = String::new();
    let mut queries_text = String::new();
    for i in 0..args.services {
        hosts_text.push_str(&format!("{} {}\n", address(i), name(i)));
        queries_text.push_str(&format!("{} A\n", name(i)));
    }
    std::fs::write(&hosts, hosts_text)?;
    std::fs::write(&queries, queries_text)?;
    std::fs::write(
        &resolv_conf,
        "# no upstream: the benchmark asks only cluster names\n",
    )?;
    world_readable(&hosts, 0o644)?;

    let skiff_port = free_port()?;
    let skiff_process = Command::new(std::env::current_exe().context("this binary's path")?)
        .args([
            "dns-server",
            "--listen",
            &format!("127.0.0.1:{skiff_port}"),
            "--services",
            &args.services.to_string(),
            "--resolv-conf",
        ])
        .arg(&resolv_conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting skiff-bench dns-server")?;
    let skiff = Started {
        what: "skiff's DNS server",
        child: skiff_process,
    };
    let dnsmasq_port = free_port()?;
    let dnsmasq_process = Command::new(DNSMASQ)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            &format!("--port={dnsmasq_port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/cluster.local/",
            "--local-ttl=5",
            "--pid-file=",
            "--log-facility=-",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    let dnsmasq = Started {
        what: "dnsmasq",
        child: dnsmasq_process,
    };
    let mut servers = [
        Server {
            label: "skiff",
            port: skiff_port,
            process: skiff,
            figures: Figures::default(),
        },
        Server {
            label: "dnsmasq",
            port: dnsmasq_port,
            process: dnsmasq,
            figures: Figures::default(),
        },
    ];
    // Both up, and answering the same.
    for i in [0, args.services - 1] {
        let mut answers = Vec::new();
        for server in &mut servers {
            let at = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
            let ip = resolve(at, &name(i), START_WITHIN)
                .await
                .with_context(|| format!("{} is not answering", server.label))?;
            server.process.check_running()?;
            answers.push(ip);
        }
        anyhow::ensure!(
            answers.iter().all(|ip| *ip == address(i)),
            "{} resolved to {answers:?} (skiff, dnsmasq), not {}",
            name(i),
            address(i)
        );
    }
    for round_index in 0..args.rounds {
        let order: [usize; 2] = if round_index % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let server = &mut servers[which];
            // dnsperf blocks: off the runtime's threads.
            let measured = tokio::task::block_in_place(|| server.measure(&args, &queries));
            measured.with_context(|| format!("round {}: {}", round_index + 1, server.label))?;
        }
    }
    let rss = |server: &Server| {
        proc_stats::sample(Path::new("/proc"), server.process.pid())
            .ok()
            .map(|s| s.rss_bytes)
    };
    let [skiff, dnsmasq] = &servers;
    let qps_ratio = skiff.figures.mean_qps() / dnsmasq.figures.mean_qps().max(f64::MIN_POSITIVE);
    let p99 = |s: &Server| s.figures.latencies.percentile_ms(99.0);
    let p99_ratio = p99(skiff) / p99(dnsmasq).max(f64::MIN_POSITIVE);
    Ok(serde_json::json!({
        "scenario": "dns",
        "services": args.services,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "clients": args.clients,
        "outstanding": args.outstanding,
        "latency_qps": args.latency_qps,
        "latency_seconds": args.latency_seconds,
        "skiff": skiff.figures.report(rss(skiff)),
        "dnsmasq": dnsmasq.figures.report(rss(dnsmasq)),
        "qps_ratio": round(qps_ratio),
        "p99_ratio": round(p99_ratio),
        "targets": "qps_ratio >= 1, p99_ratio <= 1 (issue 18)",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What dnsperf 2.10 printed against dnsmasq on this machine.
    const OUTPUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q -n 2 -v
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Tue Dec  1 05:51:49 2026
[Status] Stopping after 2 runs through file
> NOERROR web.default.svc.cluster.local A 0.000190
> REFUSED nope.default.svc.cluster.local A 0.000114
> NOERROR web.default.svc.cluster.local A 0.000161
> REFUSED nope.default.svc.cluster.local A 0.000065
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         4
  Queries completed:    4 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 2 (50.00%), REFUSED 2 (50.00%)
  Average packet size:  request 47, response 55
  Run time (s):         0.001415
  Queries per second:   2826.855124

  Average Latency (s):  0.000132 (min 0.000065, max 0.000190)
  Latency StdDev (s):   0.000055
";

    #[test]
    fn dnsperfs_statistics_and_answers_are_read() {
        let summary = parse_summary(OUTPUT).unwrap();
        assert_eq!((summary.completed, summary.lost), (4, 0));
        assert!((summary.qps - 2826.855124).abs() < 1e-6);
        assert!((summary.average_latency_s - 0.000132).abs() < 1e-9);
        assert_eq!(
            summary.rcodes,
            BTreeMap::from([("NOERROR".to_owned(), 2), ("REFUSED".to_owned(), 2)])
        );
        assert!(all_answered("x", &summary.rcodes).is_err());
        let answers = parse_answers(OUTPUT);
        assert_eq!(answers.len(), 4);
        assert_eq!(answers[0].0, "NOERROR");
        assert!((answers[0].1.as_secs_f64() - 0.000190).abs() < 1e-9);
        assert!(parse_summary("no statistics").is_err());
    }

    #[test]
    fn queries_are_built_and_answers_read() {
        let packet = query(7, "svc-0.bench.svc.cluster.local");
        assert_eq!(&packet[..2], &[0, 7]);
        assert_eq!(packet[12], 5);
        assert_eq!(&packet[13..18], b"svc-0");
        // An answer: the question, then one A record by a pointer to it.
        let mut answer = packet.clone();
        answer[2] |= 0x80;
        answer[7] = 1;
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 43, 1, 1]);
        assert_eq!(
            answer_address(&answer, 7),
            Some((0, Some(Ipv4Addr::new(10, 43, 1, 1))))
        );
        // Another query's answer, or the query itself: not an answer.
        assert_eq!(answer_address(&answer, 8), None);
        assert_eq!(answer_address(&packet, 7), None);
        assert_eq!(answer_address(&answer[..20], 7), None);
    }

    #[test]
    fn every_service_has_its_own_address_inside_the_service_range() {
        let all: std::collections::BTreeSet<Ipv4Addr> = (0..1000).map(address).collect();
        assert_eq!(all.len(), 1000);
        assert!(!all.contains(&Ipv4Addr::new(10, 43, 0, 10)));
        assert_eq!(address(0), Ipv4Addr::new(10, 43, 1, 1));
        assert_eq!(address(999), Ipv4Addr::new(10, 43, 4, 250));
        let index = ClusterIndex::build(&services(3), &[], 1);
        assert_eq!(index.len(), 3);
    }
}
