//! Real `skiff server` processes (a master and an agent in one process)
//! inside a netns test host ([`crate::test_hosts`]), or on this host's
//! loopback with the pod network off, each with the agent's own supervised
//! containerd under its data dir, as a machine running `skiff server` has.
//! Dropping one removes what is left of its containers (the server frozen
//! meanwhile, so that it does not restart them), stops it (SIGTERM,
//! so it stops its containerd too; SIGKILL after a grace) and unmounts
//! what it left mounted under the data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_master::client::Client;

use crate::terminate;
use crate::test_hosts::TestHost;

/// How long a server may take to stop on SIGTERM (its own grace is 20 s).
const STOP_GRACE: Duration = Duration::from_secs(25);

/// One `skiff server` process, in a test host or on loopback.
pub struct ServerProcess {
    child: Option<Child>,
    /// The test host's network namespace it runs in, if any.
    netns: Option<String>,
    /// `--data-dir`: the master's state is under `server/`, the agent's
    /// under `agent/`.
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
}

/// A `skiff server` started by [`ServerProcess::start_node_in_host`]: its
/// node Ready, its admin credentials registered.
pub struct NodeServer {
    pub process: ServerProcess,
    /// Where its API listens: the test host's address and a free port.
    pub api: String,
    /// The admin's client of that API.
    pub client: Client,
}

impl ServerProcess {
    /// Starts `skiff server --data-dir <data_dir> <args>` inside `host`'s
    /// network namespace (its mounts stay the machine's), logging to
    /// `<data_dir>.log`. Registries come from `<data_dir>/registries.yaml`
    /// unless `args` say otherwise.
    pub fn start_in_host(
        host: &TestHost,
        data_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(Some(host.netns.clone()), data_dir, args)
    }

    /// Starts `skiff server` in `host` as node `node`: its API and Raft on
    /// free ports of the host's address, `--node-ip` that address, then
    /// `extra`. Registers its admin credentials and waits up to
    /// `ready_within` for the node to be Ready (the server's log tail in the
    /// error if it is not).
    pub async fn start_node_in_host(
        host: &TestHost,
        data_dir: &Path,
        node: &str,
        extra: &[&str],
        ready_within: Duration,
    ) -> anyhow::Result<NodeServer> {
        let api = format!("{}:{}", host.ip, crate::free_port());
        let raft = format!("{}:{}", host.ip, crate::free_port());
        let mut args = vec![
            "--listen",
            &api,
            "--raft-listen",
            &raft,
            "--node-name",
            node,
            "--node-ip",
            &host.ip,
        ];
        args.extend_from_slice(extra);
        let process = ServerProcess::start_in_host(host, data_dir, &args)?;
        crate::credentials::register_master(&api, &process.master_dir());
        let client = crate::credentials::admin_client(&api)?;
        crate::agent::wait_node_ready(&client, node, ready_within)
            .await
            .with_context(|| process.log_tail())?;
        Ok(NodeServer {
            process,
            api,
            client,
        })
    }

    /// Starts `skiff server --data-dir <data_dir> <args>` in this host's
    /// network namespace; `args` should keep it on loopback
    /// (`--listen 127.0.0.1:PORT`, ..., `--pod-network none`).
    pub fn start(data_dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(None, data_dir, args)
    }

    fn start_with(
        netns: Option<String>,
        data_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        std::fs::create_dir_all(data_dir)?;
        let mut all: Vec<String> = vec!["server".into(), "--data-dir".into()];
        all.push(data_dir.display().to_string());
        if !args.iter().any(|a| a.starts_with("--registry-config")) {
            all.push("--registry-config".into());
            all.push(data_dir.join("registries.yaml").display().to_string());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = ServerProcess {
            child: None,
            netns,
            data_dir: data_dir.to_owned(),
            log_path: data_dir.with_extension("log"),
            args: all,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = crate::append_log(&self.log_path)?;
        let child = crate::skiff_command(self.netns.as_deref())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn skiff server")?;
        self.child = Some(child);
        Ok(())
    }

    /// The master's data dir, where its admin.conf and token are.
    pub fn master_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    /// The agent's private containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.data_dir.join("agent/containerd/containerd.sock")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then wait for the exit (SIGKILL after a grace).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }

    /// Starts the process again with the same flags and data dir (in the
    /// same test host, if any, whatever its address is now).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "still running");
        self.spawn()
    }

    /// `ctr` against the server's own containerd, in the `skiff`
    /// namespace; its stdout (empty if it failed).
    pub fn ctr(&self, args: &[&str]) -> String {
        Command::new("ctr")
            .arg("--address")
            .arg(self.containerd_socket())
            .args(["-n", "skiff"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log_path, 40)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // The server is frozen while its containers go, so that its
            // agent does not start them again (restartPolicy Always) before
            // it stops; containerd, a process of its own, still answers.
            let pid = Pid::from_raw(child.id() as i32);
            let frozen = kill(pid, Signal::SIGSTOP).is_ok();
            for task in self.ctr(&["tasks", "list", "-q"]).lines() {
                self.ctr(&["tasks", "delete", "--force", task]);
            }
            if frozen {
                let _ = kill(pid, Signal::SIGCONT);
            }
        }
        self.stop();
        // The server's agent keeps its files under `agent/`.
        crate::agent::kill_pause_processes(&self.data_dir.join("agent"));
        crate::containerd::unmount_all_under(&self.data_dir);
        crate::agent::remove_runc_state("skiff");
    }
}
