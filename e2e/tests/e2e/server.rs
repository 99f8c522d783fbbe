//! `skiff server`: a master and an agent in one process, inside a netns
//! test host, with the agent's own supervised containerd and the pod
//! network, serving a Deployment.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{wait_app_ready, wait_node_ready};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::credentials::served_certificate;
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::{ctl, e2e_prerequisites, skiff_bin, wait_for};
use skiff_security::Identity;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_server_is_a_one_node_cluster() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-srv-").tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?
        .write_docker_archive(&data.join("agent/images/busybox.tar"), "srv/busybox:1")?;
    let NodeServer {
        process: server,
        api,
        client,
    } = ServerProcess::start_node_in_host(&host, &data, "solo", &[], Duration::from_secs(60))
        .await?;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: main, image: "srv/busybox:1", imagePullPolicy: Never, command: [httpd, -f, -p, "8080", -h, /www]}
"#,
    )?;
    let out = ctl(&api, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = wait_app_ready(&client, "web", 2, Duration::from_secs(60))
        .await
        .with_context(|| server.log_tail())?;
    // Pod IPs from the node's subnet, reachable from the host.
    let ip = pods[0].status.as_ref().unwrap().pod_ip.clone();
    assert!(ip.starts_with("10.42."), "{ip}");
    let page = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host.netns,
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
        ])
        .arg(format!("http://{ip}:8080/"))
        .output()?;
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("hello from skiff"),
        "{page:?}"
    );
    // The agent runs its own containerd under the data dir.
    assert!(data.join("agent/containerd/containerd.sock").exists());

    // Certificate rotation: new certificates are served at once, with no
    // restart, and the pods keep running untouched.
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(data.join("agent/tls/node.key"))?
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // Task IDs with their PIDs, in a stable order (ctr lists in any order).
    let tasks = || {
        let mut lines: Vec<String> = server
            .ctr(&["tasks", "list"])
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let tasks_before = tasks();
    assert_eq!(tasks_before.len(), 2, "{tasks_before:?}");
    let agent_addr = format!("{}:10250", host.ip);
    let master_before = served_certificate(&api)
        .await
        .context("master certificate")?;
    let agent_before = served_certificate(&agent_addr)
        .await
        .with_context(|| format!("agent certificate\n{}", server.log_tail()))?;
    assert_eq!(agent_before.identity, Some(Identity::Node("solo".into())));
    let rotated = Command::new(skiff_bin())
        .args(["certificate", "rotate", "--timeout", "30s", "--data-dir"])
        .arg(&data)
        .output()?;
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{said}{}\n{}",
        String::from_utf8_lossy(&rotated.stderr),
        server.log_tail()
    );
    assert!(said.contains("master.crt: renewed"), "{said}");
    assert!(said.contains("node.crt: renewed"), "{said}");
    let master_after = served_certificate(&api)
        .await
        .context("new master certificate")?;
    let agent_after = served_certificate(&agent_addr)
        .await
        .with_context(|| format!("new agent certificate\n{}", server.log_tail()))?;
    assert_ne!(master_after.serial, master_before.serial);
    assert_ne!(agent_after.serial, agent_before.serial);
    assert_eq!(agent_after.identity, agent_before.identity);
    assert_eq!(
        tasks(),
        tasks_before,
        "pods untouched: same tasks, same PIDs"
    );
    // Everything still talks over the new certificates: a reissued
    // admin.conf, the master relaying logs from the agent, heartbeats.
    let fresh = skiff_e2e::credentials::admin_client(&api).context("new admin.conf")?;
    let name = pods[0].metadata.as_ref().unwrap().name.clone();
    let logs = ctl(&api, &["logs", &name]);
    assert!(logs.status.success(), "{logs:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_node_ready(&fresh, "solo", Duration::from_secs(10))
        .await
        .with_context(|| server.log_tail())?;
    let after = wait_app_ready(&fresh, "web", 2, Duration::from_secs(10))
        .await
        .with_context(|| server.log_tail())?;
    for p in &after {
        let restarts: i32 = p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0);
    }
    let out = ctl(&api, &["delete", "deployment", "web"]);
    assert!(out.status.success());
    wait_for("containers removed", Duration::from_secs(30), || async {
        server
            .ctr(&["containers", "list", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    })
    .await
    .with_context(|| server.log_tail())?;
    Ok(())
}
