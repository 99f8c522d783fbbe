//! `/metrics`, `/healthz` and `/readyz` on a real master and a real agent,
//! the metrics parsed by Prometheus' own text-format parser (the Python
//! `prometheus_client` package), not by skiff's code.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::{ctl, e2e_prerequisites, http_get as get, wait_for};

/// Parses the text with prometheus_client; returns "name{labels} value" lines.
fn parse_with_prometheus(text: &str) -> anyhow::Result<Vec<String>> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {s.value}")
"#;
    // Debian's python3 with Debian's python3-prometheus-client (scripts/setup).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "prometheus_client refused the text: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn sample(samples: &[String], prefix: &str) -> Option<f64> {
    samples
        .iter()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_and_agent_metrics_parse_and_count_what_happened() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "/usr/bin/python3"]) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-m",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), "m/busybox:1"),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-m", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    let manifest = dir.path().join("crash.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: crash}
spec:
  replicas: 1
  selector: {matchLabels: {app: crash}}
  template:
    metadata: {labels: {app: crash}}
    spec:
      containers:
      - {name: main, image: "m/busybox:1", imagePullPolicy: Never, command: [sh, -c, "sleep 1; exit 1"]}
"#,
    )?;
    let out = ctl(
        &master.api_addr,
        &["apply", "-f", manifest.to_str().unwrap()],
    );
    assert!(out.status.success());
    wait_for("a restart", Duration::from_secs(30), || async {
        let pods = pods_with_app(&client, "default", "crash").await.ok()?;
        let restarts = pods
            .first()?
            .status
            .clone()?
            .container_statuses
            .first()?
            .restart_count;
        (restarts >= 1).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;

    // Health endpoints.
    assert_eq!(get(&master.metrics_addr, "/healthz")?.0, 200);
    assert_eq!(get(&master.metrics_addr, "/readyz")?.0, 200);
    assert_eq!(get(&master.metrics_addr, "/nope")?.0, 404);
    assert_eq!(get(&node.agent.metrics_addr, "/healthz")?.0, 200);
    assert_eq!(get(&node.agent.metrics_addr, "/readyz")?.0, 200);

    // The master's metrics, parsed by Prometheus' parser.
    let (status, text) = get(&master.metrics_addr, "/metrics")?;
    assert_eq!(status, 200);
    let samples = parse_with_prometheus(&text)?;
    let creates = sample(
        &samples,
        "skiff_api_requests_total{code=\"Ok\",method=\"Create\"}",
    )
    .unwrap_or(0.0);
    assert!(
        creates >= 1.0,
        "the apply's Create is counted: {samples:#?}"
    );
    assert!(
        sample(
            &samples,
            "skiff_api_request_duration_seconds_count{method=\"Create\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(sample(&samples, "skiff_raft_commit_duration_seconds_count{}").unwrap_or(0.0) >= 1.0);
    assert!(
        sample(&samples, "skiff_scheduler_binding_duration_seconds_count{}").unwrap_or(0.0) >= 1.0
    );
    assert_eq!(sample(&samples, "skiff_nodes{ready=\"true\"}"), Some(1.0));
    assert!(sample(&samples, "skiff_pods{phase=\"Running\"}").is_some());
    assert_eq!(sample(&samples, "skiff_raft_is_leader{}"), Some(1.0));
    assert!(sample(&samples, "skiff_raft_leader_changes_total{}").unwrap_or(0.0) >= 1.0);
    assert_eq!(sample(&samples, "skiff_controllers_running{}"), Some(1.0));
    assert_eq!(
        sample(&samples, "skiff_controller_start_failures_total{}"),
        None,
        "a counter with no failures has no sample yet"
    );
    assert!(
        sample(
            &samples,
            "skiff_raft_read_index_total{result=\"confirmed\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "the test's linearizable reads confirmed leadership: {samples:#?}"
    );
    assert!(sample(&samples, "skiff_raft_leaderless_seconds_total{}").is_some());
    let age = sample(
        &samples,
        "skiff_node_heartbeat_age_seconds{node=\"node-m\"}",
    )
    .context("heartbeat age")?;
    assert!(age < 5.0, "a live node's heartbeat is fresh: {age}");

    // The agent's.
    let (status, text) = get(&node.agent.metrics_addr, "/metrics")?;
    assert_eq!(status, 200);
    let samples = parse_with_prometheus(&text)?;
    let pod = pods_with_app(&client, "default", "crash").await?[0]
        .metadata
        .clone()
        .unwrap()
        .name;
    let restarts = sample(
        &samples,
        &format!("skiff_container_restarts_total{{container=\"main\",namespace=\"default\",pod=\"{pod}\"}}"),
    )
    .context("container restarts")?;
    assert!(restarts >= 1.0, "{samples:#?}");
    assert!(sample(&samples, "skiff_image_pulls_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let master = skiff_e2e::master::MasterProcess::start_with(
        &dir.path().join("m"),
        None,
        &["--log-format", "json"],
    )?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let text = std::fs::read_to_string(&master.log_path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    let bad = std::process::Command::new(skiff_e2e::skiff_bin())
        .args(["master", "--log-format", "xml", "--data-dir"])
        .arg(dir.path().join("x"))
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--log-format \"xml\""));
    Ok(())
}

/// A master whose log reader has gone (a closed pipe: a log shipper or a
/// terminal that died) keeps serving and still stops cleanly on SIGTERM.
/// Writes to its stderr fail with EPIPE from the first line on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_log_reader_is_gone_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::process::{Child, Command, Stdio};

    /// Kills the master by its PID if the test ends before it exited.
    struct Running(Child);
    impl Drop for Running {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    let dir = tempfile::tempdir()?;
    let (read_end, write_end) = nix::unistd::pipe()?;
    drop(read_end);
    let metrics = format!("127.0.0.1:{}", skiff_e2e::free_port());
    let mut master = Running(
        Command::new(skiff_e2e::skiff_bin())
            .arg("master")
            .arg("--data-dir")
            .arg(dir.path().join("m"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", skiff_e2e::free_port()))
            .arg("--raft-listen")
            .arg(format!("127.0.0.1:{}", skiff_e2e::free_port()))
            .arg("--metrics-listen")
            .arg(&metrics)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end.try_clone()?))
            .stderr(Stdio::from(write_end))
            .spawn()
            .context("spawn skiff master")?,
    );
    wait_for("/readyz 200", Duration::from_secs(30), || async {
        let (status, _) = get(&metrics, "/readyz").ok()?;
        (status == 200).then_some(())
    })
    .await?;
    // Serving for a while means logging for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        master.0.try_wait()?.is_none(),
        "the master exited with its log pipe closed"
    );

    kill(Pid::from_raw(master.0.id() as i32), Signal::SIGTERM)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exited = loop {
        if let Some(status) = master.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the master with a closed log pipe did not stop within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "exit status after SIGTERM: {exited}");
    Ok(())
}
