//! `exec`: what `kubectl exec` and `kubectl port-forward` cost on top of
//! containerd and the network beneath them (issue 21). One real master and
//! one node (a `skiff agent` with its private containerd in a network
//! namespace test host, pod network on) run a busybox pod that sleeps. In
//! one run:
//!
//! - `kubectl exec POD -- true` with kubectl 1.35 (WebSocket,
//!   `v5.channel.k8s.io`) and, when it is installed, kubectl 1.20
//!   (SPDY/3.1), each timed from start to exit `--runs` times, every run
//!   beside a local `ctr task exec` of the same command in the same
//!   container (containerd's own path: no master, no agent). Both are Go
//!   programs started afresh, so process start-up weighs on both sides.
//!   Target: kubectl's p50 ≤ 2 × ctr's.
//! - TCP throughput of one iperf3 stream out of the pod (`iperf3 -R`: the
//!   server in the pod sends): straight from the pod's address to its
//!   node's network namespace, and to this host through `kubectl
//!   port-forward` (1.35: SPDY tunnelled in a WebSocket; 1.20: SPDY/3.1),
//!   which relays the pod's `localhost` → agent (mutual TLS) → master →
//!   local port. As in `overlay`, iperf3's server runs in the pod's network
//!   namespace, so the image needs no iperf3. The pod sends because iperf3's
//!   server closes its data socket the moment a test ends: as the receiver,
//!   with data still on the way through the relay, that close is a reset,
//!   which the agent reports on the error stream (as containerd's CRI does)
//!   and which ends kubectl 1.28+'s whole port-forward, the control
//!   connection and its results with it; as the sender its close is an
//!   orderly end of file. Each round still runs its own `kubectl
//!   port-forward`, stopped after it, so rounds are independent.
//!   Target: port-forward ≥ 0.5 × direct.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{start_host_nodes, RuntimeNode};
use skiff_e2e::kube_clients::{Kubectl, KubectlProcess, KubectlVersion};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::wait_for;
use skiff_objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

use super::common::round;
use super::overlay::{iperf_through, sleeper, Flow};
use crate::latency::Latencies;
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Timed `kubectl exec POD -- true` runs of each kubectl, each beside a
    /// `ctr task exec` of the same command.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Seconds per iperf3 throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Throughput measurements of each path, alternating direct and
    /// through each kubectl's port-forward (a new one each round).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
}

const IMAGE: &str = "bench/busybox:1";
/// The pod exec'd into and forwarded to.
const POD: &str = "exec-target";
/// Its container, as `overlay`'s `sleeper` names it.
const CONTAINER: &str = "main";
/// Where iperf3 listens in the pod's network namespace.
const IPERF_PORT: u16 = 5201;
/// How long one timed command may run before it is killed and the run
/// fails (an exec that hangs).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `kubectl port-forward` may take to listen.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// What client-go's tunnelling dialer logs at `-v=4` when the WebSocket
/// upgrade agreed on port-forward; without it, kubectl 1.35 fell back to
/// plain SPDY and its figure would not be the WebSocket's.
const TUNNEL_NEGOTIATED: &str = "negotiated protocol: portforward.k8s.io";

/// The CPU the processes relaying a port-forward spent, and the bytes they
/// carried, over one kubectl's forwarded runs: what a forwarded gigabyte
/// costs each of them, to tell where the throughput goes on this machine.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct RelayCpu {
    master_seconds: f64,
    agent_seconds: f64,
    kubectl_seconds: f64,
    gigabytes: f64,
}

impl RelayCpu {
    /// CPU seconds per gigabyte forwarded (0 before anything was).
    fn per_gigabyte(&self, seconds: f64) -> f64 {
        ratio(seconds, self.gigabytes)
    }
}

/// A relay's CPU seconds (user and system) so far; also once it has
/// ended (kubectl port-forward may exit as its last stream closes,
/// before it is stopped).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    proc_stats::cpu_seconds(Path::new("/proc"), pid)
        .with_context(|| format!("read the CPU time of process {pid}"))
}

/// One kubectl under test and what it measured.
struct KubectlUnderTest {
    version: KubectlVersion,
    kubectl: Kubectl,
    exec: Latencies,
    forwarded_gbps: Vec<f64>,
    relay_cpu: RelayCpu,
}

impl KubectlUnderTest {
    fn new(version: KubectlVersion, binary: PathBuf, api_addr: &str) -> anyhow::Result<Self> {
        Ok(KubectlUnderTest {
            version,
            kubectl: Kubectl::new(binary, api_addr)?,
            exec: Latencies::default(),
            forwarded_gbps: Vec::new(),
            relay_cpu: RelayCpu::default(),
        })
    }

    /// `kubectl 1.35 (WebSocket)`, `kubectl 1.20 (SPDY)`.
    fn label(&self) -> String {
        let protocol = match self.version {
            KubectlVersion::V1_20 => "SPDY",
            KubectlVersion::V1_32 | KubectlVersion::V1_35 => "WebSocket",
        };
        format!("kubectl {} ({protocol})", self.version.release())
    }

    /// `kubectl exec POD -- true`.
    fn exec_true(&self) -> Command {
        let mut cmd = self.kubectl.command();
        cmd.args(["exec", POD, "--", "true"]);
        cmd
    }

    /// `kubectl port-forward pod/POD <local>:<IPERF_PORT>`, once it
    /// listens; kubectl 1.35's must have negotiated the WebSocket tunnel.
    fn forward(&self, local: u16) -> anyhow::Result<KubectlProcess> {
        let tunnelled = self.version == KubectlVersion::V1_35;
        let mut ports = vec![format!("{local}:{IPERF_PORT}")];
        if tunnelled {
            ports.push("-v=4".to_owned());
        }
        let forward = self
            .kubectl
            .port_forward(&format!("pod/{POD}"), &ports, FORWARD_TIMEOUT)?;
        anyhow::ensure!(
            !tunnelled || forward.output().contains(TUNNEL_NEGOTIATED),
            "{} did not negotiate the WebSocket tunnel for port-forward (it fell back to SPDY); it printed:\n{}",
            self.label(),
            forward.output()
        );
        Ok(forward)
    }

    fn exec_p50_ms(&self) -> f64 {
        self.exec.percentile_ms(50.0)
    }

    fn exec_p99_ms(&self) -> f64 {
        self.exec.percentile_ms(99.0)
    }

    fn forwarded_mean_gbps(&self) -> f64 {
        mean(&self.forwarded_gbps)
    }
}

/// `ctr task exec --exec-id <exec_id> <container> true` in the agent's
/// containerd namespace.
fn ctr_exec_true(node: &RuntimeNode, container: &str, exec_id: &str) -> Command {
    let mut cmd = node.ctr_command();
    cmd.args(["tasks", "exec", "--exec-id", exec_id, container, "true"]);
    cmd
}

/// Runs `command` to its end and answers how long it took, from its start
/// to its exit with its output read. Fails if it fails, or if it runs past
/// [`COMMAND_TIMEOUT`] (it is then killed, by the PID it was started with).
async fn timed(command: Command, what: &str) -> anyhow::Result<Duration> {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("{what} still ran after {COMMAND_TIMEOUT:?}; it was killed"))?
        .with_context(|| format!("run {what}"))?;
    let took = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `part ÷ whole`, 0 when there is no whole.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

/// The pod once it runs with an address and a container ID.
async fn wait_running(client: &skiff_master::client::Client) -> anyhow::Result<v1::Pod> {
    wait_for(
        &format!("{POD} running"),
        Duration::from_secs(60),
        || async {
            match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", POD).await.ok()?)
                .kind
            {
                Some(Body::Pod(p))
                    if p.status.as_ref().is_some_and(|s| {
                        s.phase == "Running"
                            && !s.pod_ip.is_empty()
                            && s.container_statuses
                                .iter()
                                .any(|c| c.name == CONTAINER && !c.container_id.is_empty())
                    }) =>
                {
                    Some(p)
                }
                _ => None,
            }
        },
    )
    .await
}

pub async fn run(args: ExecArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "exec builds a network namespace and runs containers: run it as root with iproute2, iperf3, nftables, containerd and ctr installed"
    );
    let installed =
        |version: KubectlVersion| skiff_e2e::find_in_path(&version.path().to_string_lossy());
    let websocket_binary = installed(KubectlVersion::V1_35).with_context(|| {
        format!(
            "kubectl 1.35 is not at {} (install it with `sudo scripts/test-clients`)",
            KubectlVersion::V1_35.path().display()
        )
    })?;
    let spdy_binary = installed(KubectlVersion::V1_20);
    if spdy_binary.is_none() {
        eprintln!(
            "kubectl 1.20 is not at {}: no SPDY figures (install it with `sudo scripts/test-clients`)",
            KubectlVersion::V1_20.path().display()
        );
    }

    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let nodes = start_host_nodes(&master.api_addr, std::slice::from_ref(&host), IMAGE).await?;
    let node = nodes.first().context("the node did not start")?;
    let master_pid = master.pid().context("the master is not running")?;
    let agent_pid = node.agent.pid().context("the agent is not running")?;
    let client = master.client();
    client
        .create(sleeper(POD, &node.agent.node_name).into_object())
        .await?;
    let pod = wait_running(&client)
        .await
        .with_context(|| node.log_tail())?;
    let status = pod.status.as_ref().context("the pod has no status")?;
    let pod_ip = status.pod_ip.clone();
    let container_id = status
        .container_statuses
        .iter()
        .find(|c| c.name == CONTAINER)
        .map(|c| {
            let id = c.container_id.as_str();
            id.strip_prefix("containerd://").unwrap_or(id).to_owned()
        })
        .context("the pod's status names no container ID")?;
    let uid = pod
        .metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .filter(|uid| !uid.is_empty())
        .context("the pod has no UID")?;
    let pod_ns = node
        .data_dir()
        .join("netns")
        .join(uid)
        .display()
        .to_string();
    let host_ns = format!("/run/netns/{}", host.netns);
    // iperf3's client for the port-forwards runs where kubectl listens:
    // this process's own network namespace.
    let own_ns = format!("/proc/{}/ns/net", std::process::id());

    let mut websocket =
        KubectlUnderTest::new(KubectlVersion::V1_35, websocket_binary, &master.api_addr)?;
    let mut spdy = spdy_binary
        .map(|binary| KubectlUnderTest::new(KubectlVersion::V1_20, binary, &master.api_addr))
        .transpose()?;

    // One untimed run of each first: kubectl fills its discovery cache,
    // and the first exec into the container pays for what is cold.
    timed(
        ctr_exec_true(node, &container_id, "bench-exec-warm-up"),
        "ctr task exec",
    )
    .await?;
    for k in std::iter::once(&websocket).chain(spdy.as_ref()) {
        timed(k.exec_true(), &format!("{} exec", k.label())).await?;
    }
    eprintln!(
        "exec: {} runs of `true` in {POD}, ctr task exec beside each kubectl exec",
        args.runs
    );
    let mut ctr = Latencies::default();
    for run in 0..args.runs {
        let exec_id = format!("bench-exec-{run}");
        let took = timed(
            ctr_exec_true(node, &container_id, &exec_id),
            "ctr task exec",
        )
        .await?;
        ctr.push(took);
        let mut line = format!("run {}: ctr task exec {:.1} ms", run + 1, ms(took));
        for k in std::iter::once(&mut websocket).chain(spdy.as_mut()) {
            let label = k.label();
            let took = timed(k.exec_true(), &format!("{label} exec")).await?;
            k.exec.push(took);
            line.push_str(&format!(", {label} exec {:.1} ms", ms(took)));
        }
        eprintln!("{line}");
    }

    // Each round starts its own `kubectl port-forward` on a new local port
    // and stops it after its iperf3 run, so rounds are independent (see the
    // module's header for why the pod is the sender).
    eprintln!(
        "port-forward: {} rounds of {} s of one iperf3 stream out of the pod, direct and through each kubectl (a new port-forward each round)",
        args.rounds, args.seconds
    );
    let mut direct = Vec::new();
    for round_no in 0..args.rounds {
        let d = iperf_through(
            &pod_ns,
            IPERF_PORT,
            &host_ns,
            &pod_ip,
            IPERF_PORT,
            args.seconds,
            Flow::ServerToClient,
        )
        .context("iperf3 straight from the pod")?;
        direct.push(d);
        let mut line = format!("round {}: direct from the pod {d:.2} Gbit/s", round_no + 1);
        for k in std::iter::once(&mut websocket).chain(spdy.as_mut()) {
            let label = k.label();
            let local = skiff_e2e::free_port();
            let forward = k
                .forward(local)
                .with_context(|| format!("{label} port-forward, round {}", round_no + 1))?;
            let relays = [master_pid, agent_pid, forward.pid()];
            let before = relays.map(cpu_seconds);
            let f = iperf_through(
                &pod_ns,
                IPERF_PORT,
                &own_ns,
                "127.0.0.1",
                local,
                args.seconds,
                Flow::ServerToClient,
            )
            .with_context(|| {
                format!(
                    "iperf3 through {label} port-forward; kubectl printed:\n{}",
                    forward.output()
                )
            })?;
            let after = relays.map(cpu_seconds);
            let spent = |i: usize| -> anyhow::Result<f64> {
                let (b, a) = (&before[i], &after[i]);
                match (b, a) {
                    (Ok(b), Ok(a)) => Ok(a - b),
                    (Err(e), _) | (_, Err(e)) => anyhow::bail!("{e:#}"),
                }
            };
            k.relay_cpu.master_seconds += spent(0)?;
            k.relay_cpu.agent_seconds += spent(1)?;
            k.relay_cpu.kubectl_seconds += spent(2)?;
            k.relay_cpu.gigabytes += f * f64::from(args.seconds) / 8.0;
            // Stopped by the PID it was started with, and waited for.
            drop(forward);
            k.forwarded_gbps.push(f);
            line.push_str(&format!(", through {label} port-forward {f:.2} Gbit/s"));
        }
        eprintln!("{line}");
    }

    let ctr_p50 = ctr.percentile_ms(50.0);
    let ctr_p99 = ctr.percentile_ms(99.0);
    let direct_gbps = mean(&direct);
    eprintln!(
        "ctr task exec p50 {ctr_p50:.1} ms, p99 {ctr_p99:.1} ms; direct {direct_gbps:.2} Gbit/s"
    );
    for k in std::iter::once(&websocket).chain(spdy.as_ref()) {
        eprintln!(
            "{}: exec p50 {:.1} ms ({:.2} × ctr), p99 {:.1} ms; port-forward {:.2} Gbit/s ({:.2} × direct)",
            k.label(),
            k.exec_p50_ms(),
            ratio(k.exec_p50_ms(), ctr_p50),
            k.exec_p99_ms(),
            k.forwarded_mean_gbps(),
            ratio(k.forwarded_mean_gbps(), direct_gbps)
        );
        let cpu = &k.relay_cpu;
        eprintln!(
            "{}: CPU per forwarded GB: master {:.2} s, agent {:.2} s, kubectl {:.2} s",
            k.label(),
            cpu.per_gigabyte(cpu.master_seconds),
            cpu.per_gigabyte(cpu.agent_seconds),
            cpu.per_gigabyte(cpu.kubectl_seconds),
        );
    }
    let spdy = spdy.as_ref();
    Ok(serde_json::json!({
        "scenario": "exec",
        "runs": args.runs,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "ctr_exec_p50_ms": round(ctr_p50),
        "ctr_exec_p99_ms": round(ctr_p99),
        "exec_p50_ms": round(websocket.exec_p50_ms()),
        "exec_p99_ms": round(websocket.exec_p99_ms()),
        "exec_ratio": round(ratio(websocket.exec_p50_ms(), ctr_p50)),
        "exec_p99_ratio": round(ratio(websocket.exec_p99_ms(), ctr_p99)),
        "spdy_exec_p50_ms": spdy.map(|k| round(k.exec_p50_ms())),
        "spdy_exec_p99_ms": spdy.map(|k| round(k.exec_p99_ms())),
        "spdy_exec_ratio": spdy.map(|k| round(ratio(k.exec_p50_ms(), ctr_p50))),
        "spdy_exec_p99_ratio": spdy.map(|k| round(ratio(k.exec_p99_ms(), ctr_p99))),
        "direct_gbps": round(direct_gbps),
        "pf_gbps": round(websocket.forwarded_mean_gbps()),
        "pf_ratio": round(ratio(websocket.forwarded_mean_gbps(), direct_gbps)),
        "spdy_pf_gbps": spdy.map(|k| round(k.forwarded_mean_gbps())),
        "spdy_pf_ratio": spdy.map(|k| round(ratio(k.forwarded_mean_gbps(), direct_gbps))),
        "pf_cpu_s_per_gb": relay_cpu_json(&websocket.relay_cpu),
        "spdy_pf_cpu_s_per_gb": spdy.map(|k| relay_cpu_json(&k.relay_cpu)),
        "target_exec_ratio": 2.0,
        "target_pf_ratio": 0.5,
    }))
}

/// CPU seconds per forwarded gigabyte of each relaying process.
fn relay_cpu_json(cpu: &RelayCpu) -> serde_json::Value {
    serde_json::json!({
        "master": round(cpu.per_gigabyte(cpu.master_seconds)),
        "agent": round(cpu.per_gigabyte(cpu.agent_seconds)),
        "kubectl": round(cpu.per_gigabyte(cpu.kubectl_seconds)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_cpu_is_per_forwarded_gigabyte() {
        let cpu = RelayCpu {
            master_seconds: 3.0,
            agent_seconds: 1.5,
            kubectl_seconds: 6.0,
            gigabytes: 6.0,
        };
        assert_eq!(cpu.per_gigabyte(cpu.master_seconds), 0.5);
        assert_eq!(cpu.per_gigabyte(cpu.kubectl_seconds), 1.0);
        assert_eq!(RelayCpu::default().per_gigabyte(2.0), 0.0);
        let json = relay_cpu_json(&cpu);
        assert_eq!(json["agent"], 0.25);
    }

    #[test]
    fn ratios_and_means_of_nothing_are_zero() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(mean(&[]), 0.0);
    }
}
