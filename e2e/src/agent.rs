//! Real `skiff agent` processes for the runtime tests, each against a
//! private containerd ([`crate::containerd`]) in its own containerd
//! namespace, with its data dir in a temp dir. [`RuntimeNode`] bundles the
//! three so a test gets a working node in one call; dropping it kills the
//! agent (by its PID) and the pods' pause processes it left (by their pid
//! files), removes the containers through containerd, and unmounts the pod
//! network namespaces under the data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;
use skiff_master::client::Client;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;

use crate::containerd::{unmount_all_under, PrivateContainerd};
use crate::{free_port, terminate, wait_for};

/// One `skiff agent` process.
pub struct AgentProcess {
    child: Option<Child>,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub namespace: String,
    pub listen: String,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (loopback of the
    /// agent's network namespace).
    pub metrics_addr: String,
    args: Vec<String>,
    /// Runs the agent inside this network namespace (a test host).
    netns: Option<String>,
}

impl AgentProcess {
    /// Starts `skiff agent` for `node_name` against `master`, without the
    /// pod network (use `--pod-network vxlan` in `extra_args` inside a test
    /// host's network namespace).
    pub fn start(
        master: &str,
        node_name: &str,
        data_dir: &Path,
        containerd_socket: Option<&Path>,
        extra_args: &[&str],
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(data_dir)?;
        let namespace = format!("skiff-e2e-{:08x}", rand::random::<u32>());
        let listen = format!("127.0.0.1:{}", free_port());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--metrics-listen".into(),
            metrics_addr.clone(),
            "--server".into(),
            master.into(),
            "--node-name".into(),
            node_name.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--listen".into(),
            listen.clone(),
            "--containerd-namespace".into(),
            namespace.clone(),
            "--registry-config".into(),
            data_dir.join("registries.yaml").display().to_string(),
        ];
        if let Some(socket) = containerd_socket {
            args.push("--containerd-socket".into());
            args.push(socket.display().to_string());
        }
        if !extra_args.iter().any(|a| a.starts_with("--pod-network")) {
            args.push("--pod-network".into());
            args.push("none".into());
        }
        if !extra_args.iter().any(|a| a.starts_with("--token")) {
            args.extend(token_args(master));
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut agent = AgentProcess {
            child: None,
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            log_path: data_dir.with_extension("log"),
            namespace,
            listen,
            metrics_addr,
            args,
            netns: None,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// Starts an agent inside a test host's network namespace only (its
    /// mounts stay shared with containerd), with the VXLAN pod network.
    pub fn start_in_host(
        master: &str,
        host: &crate::test_hosts::TestHost,
        data_dir: &Path,
        containerd_socket: &Path,
    ) -> anyhow::Result<AgentProcess> {
        Self::start_in_host_with(master, host, data_dir, containerd_socket, "vxlan")
    }

    /// As [`AgentProcess::start_in_host`], with `--pod-network
    /// <pod_network>` (`vxlan`, `host-gw` or `auto`).
    pub fn start_in_host_with(
        master: &str,
        host: &crate::test_hosts::TestHost,
        data_dir: &Path,
        containerd_socket: &Path,
        pod_network: &str,
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(data_dir)?;
        let name = format!("node-{}", host.ip.rsplit('.').next().unwrap_or("x"));
        let mut agent = AgentProcess {
            child: None,
            node_name: name.clone(),
            data_dir: data_dir.into(),
            log_path: data_dir.with_extension("log"),
            namespace: format!("skiff-e2e-{:08x}", rand::random::<u32>()),
            listen: format!("{}:10250", host.ip),
            metrics_addr: "127.0.0.1:10248".into(),
            args: Vec::new(),
            netns: Some(host.netns.clone()),
        };
        agent.args = vec![
            "agent".into(),
            "--server".into(),
            master.into(),
            "--node-name".into(),
            name,
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node-ip".into(),
            host.ip.clone(),
            "--listen".into(),
            agent.listen.clone(),
            "--containerd-socket".into(),
            containerd_socket.display().to_string(),
            "--containerd-namespace".into(),
            agent.namespace.clone(),
            "--registry-config".into(),
            data_dir.join("registries.yaml").display().to_string(),
            "--pod-network".into(),
            pod_network.into(),
        ];
        agent.args.extend(token_args(master));
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = crate::append_log(&self.log_path)?;
        let child = crate::skiff_command(self.netns.as_deref())
            .args(&self.args)
            .env("SKIFF_LOG", "info,skiff_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn skiff agent")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(20));
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "still running");
        self.spawn()
    }

    /// Starts the stopped agent again with `--pod-network <pod_network>`.
    pub fn restart_with_pod_network(&mut self, pod_network: &str) -> anyhow::Result<()> {
        let flag = self
            .args
            .iter()
            .position(|a| a == "--pod-network")
            .context("the agent was started without --pod-network")?;
        self.args[flag + 1] = pod_network.into();
        self.restart()
    }

    /// Starts the stopped agent again with `args` added to its flags.
    pub fn restart_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self.restart()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log_path, 40)
    }

    /// Writes `registries.yaml` (read at agent start).
    pub fn write_registry_config(&self, text: &str) -> anyhow::Result<()> {
        std::fs::write(self.data_dir.join("registries.yaml"), text)?;
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes runc's per-namespace state dir (`/run/containerd/runc/<ns>`),
/// which outlives the private containerd; only when it is empty.
pub fn remove_runc_state(namespace: &str) {
    let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(namespace));
}

/// A node for runtime tests: a private containerd and an agent using it.
pub struct RuntimeNode {
    // Field order is drop order: the agent goes first, then containerd
    // (which force-deletes the tasks), then the mounts and the dir.
    pub agent: AgentProcess,
    pub containerd: PrivateContainerd,
    dir: tempfile::TempDir,
    _cleanup: PrivateContainerdCleanup,
}

impl RuntimeNode {
    /// Starts containerd and an agent named `node_name` against `master`.
    /// `before_start` runs after the data dir exists and before the agent
    /// starts (to drop image archives or a registry config in place).
    pub fn start(
        master: &str,
        node_name: &str,
        before_start: impl FnOnce(&Path) -> anyhow::Result<()>,
        extra_args: &[&str],
    ) -> anyhow::Result<RuntimeNode> {
        let containerd = PrivateContainerd::start()?;
        let dir = tempfile::Builder::new().prefix("skiff-agent-").tempdir()?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(data_dir.join("images"))?;
        before_start(&data_dir)?;
        let agent = AgentProcess::start(
            master,
            node_name,
            &data_dir,
            Some(&containerd.socket()),
            extra_args,
        )?;
        let namespace = agent.namespace.clone();
        Ok(RuntimeNode {
            agent,
            containerd,
            dir,
            _cleanup: PrivateContainerdCleanup { namespace },
        })
    }

    /// A node whose agent runs inside test host `host`, VXLAN pod network
    /// on.
    pub fn start_in_host(
        master: &str,
        host: &crate::test_hosts::TestHost,
        before_start: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<RuntimeNode> {
        Self::start_in_host_with(master, host, before_start, "vxlan")
    }

    /// As [`RuntimeNode::start_in_host`], with `--pod-network
    /// <pod_network>`.
    pub fn start_in_host_with(
        master: &str,
        host: &crate::test_hosts::TestHost,
        before_start: impl FnOnce(&Path) -> anyhow::Result<()>,
        pod_network: &str,
    ) -> anyhow::Result<RuntimeNode> {
        let containerd = PrivateContainerd::start()?;
        let dir = tempfile::Builder::new().prefix("skiff-agent-").tempdir()?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(data_dir.join("images"))?;
        before_start(&data_dir)?;
        let agent = AgentProcess::start_in_host_with(
            master,
            host,
            &data_dir,
            &containerd.socket(),
            pod_network,
        )?;
        let namespace = agent.namespace.clone();
        Ok(RuntimeNode {
            agent,
            containerd,
            dir,
            _cleanup: PrivateContainerdCleanup { namespace },
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.agent.data_dir.clone()
    }

    /// `ctr` in this agent's namespace, with no stdin, for the arguments
    /// to be added.
    pub fn ctr_command(&self) -> std::process::Command {
        let mut cmd = self.containerd.ctr_command();
        cmd.arg("-n").arg(&self.agent.namespace);
        cmd
    }

    /// `ctr` in this agent's namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctr_command().args(args).output().context("run ctr")?;
        anyhow::ensure!(
            out.status.success(),
            "ctr {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Container IDs in this agent's namespace.
    pub fn containers(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["containers", "list", "-q"])?
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Running tasks: container ID → PID.
    pub fn task_pids(&self) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
        let text = self.ctr(&["tasks", "list"])?;
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() >= 3 && f[2] == "RUNNING" {
                    Some((f[0].to_string(), f[1].parse().ok()?))
                } else {
                    None
                }
            })
            .collect())
    }

    /// Snapshots (keys) in this agent's namespace.
    pub fn snapshots(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["snapshots", "list"])?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }

    pub fn log_tail(&self) -> String {
        format!("{}\n{}", self.agent.log_tail(), self.containerd.log_tail())
    }
}

/// Kills the pause processes of the pods (`shareProcessNamespace`) that
/// the agent with data dir `data_dir` left running: like containers, they
/// outlive the agent.
pub fn kill_pause_processes(data_dir: &Path) {
    let layout = skiff_agent::pods::layout::PodLayout::new(data_dir);
    let Ok(entries) = std::fs::read_dir(layout.pause_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if let Err(e) = skiff_agent::pods::sandbox::pause::stop(&uid, &entry.path()) {
            eprintln!("cannot stop the pause process of pod {uid}: {e}");
        }
    }
}

impl Drop for RuntimeNode {
    fn drop(&mut self) {
        self.agent.kill();
        kill_pause_processes(&self.agent.data_dir);
        // containerd's own Drop runs after this: it force-deletes tasks.
        // The pod network namespaces are ours to unmount.
        unmount_all_under(self.dir.path());
    }
}

impl Drop for PrivateContainerdCleanup {
    fn drop(&mut self) {
        remove_runc_state(&self.namespace);
    }
}

/// Runs last in [`RuntimeNode`]'s drop order, after containerd has stopped.
struct PrivateContainerdCleanup {
    namespace: String,
}

/// One node per test host, the busybox image imported as `image_name`,
/// started and waited for until every one is Ready; VXLAN pod network.
pub async fn start_host_nodes(
    master: &str,
    hosts: &[crate::test_hosts::TestHost],
    image_name: &str,
) -> anyhow::Result<Vec<RuntimeNode>> {
    start_host_nodes_with(master, hosts, image_name, "vxlan").await
}

/// As [`start_host_nodes`], with `--pod-network <pod_network>`.
pub async fn start_host_nodes_with(
    master: &str,
    hosts: &[crate::test_hosts::TestHost],
    image_name: &str,
    pod_network: &str,
) -> anyhow::Result<Vec<RuntimeNode>> {
    let image = crate::busybox_image::BusyboxImage::build()?;
    let mut nodes = Vec::new();
    for h in hosts {
        nodes.push(RuntimeNode::start_in_host_with(
            master,
            h,
            |data| image.write_docker_archive(&data.join("images/busybox.tar"), image_name),
            pod_network,
        )?);
    }
    let client = crate::credentials::admin_client(master)?;
    for n in &nodes {
        wait_node_ready(&client, &n.agent.node_name, Duration::from_secs(60))
            .await
            .with_context(|| n.log_tail())?;
    }
    Ok(nodes)
}

/// Waits until the node is registered and Ready.
pub async fn wait_node_ready(client: &Client, node: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_for(&format!("node {node} Ready"), timeout, || async {
        let o = client.get(Kind::Node, "", node).await.ok()?;
        match o.kind {
            Some(Body::Node(n)) => n
                .status?
                .conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
                .then_some(()),
            _ => None,
        }
    })
    .await
}

/// The pods of `namespace` whose labels include `app=<app>`.
pub async fn pods_with_app(
    client: &Client,
    namespace: &str,
    app: &str,
) -> anyhow::Result<Vec<skiff_proto::v1::Pod>> {
    let list = client.list(Kind::Pod, namespace).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| match skiff_objects::pods::in_model(o).kind {
            Some(Body::Pod(p)) => Some(p),
            _ => None,
        })
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| m.labels.get("app").map(String::as_str) == Some(app))
        })
        .collect())
}

/// Waits until exactly `count` pods labelled `app=<app>` in `default` are
/// Running and Ready; returns them.
pub async fn wait_app_ready(
    client: &Client,
    app: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<skiff_proto::v1::Pod>> {
    wait_for(
        &format!("{count} {app} pods Running and Ready"),
        timeout,
        || async {
            let pods = pods_with_app(client, "default", app).await.ok()?;
            (pods.len() == count && pods.iter().all(is_running_ready)).then_some(pods)
        },
    )
    .await
}

/// Whether the pod is Running with every container ready.
pub fn is_running_ready(pod: &skiff_proto::v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// `--token <the master's server token>`, when this test started that
/// master (the agent of `skiff server` needs none).
fn token_args(master: &str) -> Vec<String> {
    match crate::credentials::join_token(master) {
        Ok(token) => vec!["--token".into(), token],
        Err(_) => Vec::new(),
    }
}
