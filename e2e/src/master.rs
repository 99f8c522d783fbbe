//! Real `skiff master` processes: one, or a cluster of several on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_master::client::Client;
use skiff_objects::Kind;
use skiff_proto::api::Object;
use skiff_proto::v1;

use crate::{free_port, skiff_bin, wait_for};

/// One `skiff master` process and its data dir.
pub struct MasterProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub api_addr: String,
    pub raft_addr: String,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (loopback).
    pub metrics_addr: String,
    pub log_path: PathBuf,
    join: Option<String>,
    extra_args: Vec<String>,
}

impl MasterProcess {
    /// Starts a master with fresh ports, logging to `<data_dir>.log`.
    pub fn start(data_dir: &Path, join: Option<&str>) -> anyhow::Result<MasterProcess> {
        MasterProcess::start_with(data_dir, join, &[])
    }

    /// A master listening on `ip` (a test host's underlay address) instead
    /// of loopback.
    pub fn start_on(
        data_dir: &Path,
        ip: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<MasterProcess> {
        let mut m = MasterProcess {
            child: None,
            data_dir: data_dir.to_owned(),
            api_addr: format!("{ip}:{}", free_port()),
            raft_addr: format!("{ip}:{}", free_port()),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            log_path: data_dir.with_extension("log"),
            join: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        m.spawn()?;
        Ok(m)
    }

    /// A master at the given API and Raft addresses, for a data dir made
    /// elsewhere whose Raft membership records them (an earlier build's,
    /// unpacked from a fixture).
    pub fn start_at(
        data_dir: &Path,
        api_addr: &str,
        raft_addr: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<MasterProcess> {
        let mut m = MasterProcess {
            child: None,
            data_dir: data_dir.to_owned(),
            api_addr: api_addr.to_owned(),
            raft_addr: raft_addr.to_owned(),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            log_path: data_dir.with_extension("log"),
            join: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        m.spawn()?;
        Ok(m)
    }

    /// Like [`MasterProcess::start`], with extra `skiff master` flags.
    pub fn start_with(
        data_dir: &Path,
        join: Option<&str>,
        extra_args: &[&str],
    ) -> anyhow::Result<MasterProcess> {
        let mut m = MasterProcess {
            child: None,
            data_dir: data_dir.to_owned(),
            api_addr: format!("127.0.0.1:{}", free_port()),
            raft_addr: format!("127.0.0.1:{}", free_port()),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            log_path: data_dir.with_extension("log"),
            join: join.map(str::to_owned),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = crate::append_log(&self.log_path)?;
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(j) = &self.join {
            cmd.arg("--join").arg(j);
            if !self.data_dir.join("tls/ca.key").exists() {
                cmd.arg("--token").arg(crate::credentials::join_token(j)?);
            }
        }
        cmd.args(&self.extra_args);
        self.child = Some(cmd.spawn().context("spawn skiff master")?);
        crate::credentials::register_master(&self.api_addr, &self.data_dir);
        Ok(())
    }

    /// `skiff master` on this master's data dir and addresses.
    fn command(&self) -> Command {
        let mut cmd = Command::new(skiff_bin());
        cmd.arg("master")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.api_addr)
            .arg("--raft-listen")
            .arg(&self.raft_addr)
            .arg("--metrics-listen")
            .arg(&self.metrics_addr);
        cmd
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client for this master's API.
    pub fn client(&self) -> Client {
        crate::credentials::admin_client(&self.api_addr).unwrap_or_else(|e| {
            panic!(
                "admin client of {}: {e:#}\n{}",
                self.api_addr,
                self.log_tail()
            )
        })
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).context("SIGTERM")?;
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("master did not exit within {grace:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `skiff master --cluster-reset` once, on this master's data dir
    /// and addresses (stop it first), with `extra_args` (`--restore
    /// FILE`); returns what it printed and how it exited.
    pub fn cluster_reset(&self, extra_args: &[&str]) -> anyhow::Result<std::process::Output> {
        anyhow::ensure!(
            self.child.is_none(),
            "stop master {} before resetting its cluster",
            self.api_addr
        );
        self.command()
            .arg("--cluster-reset")
            .args(extra_args)
            .stdin(Stdio::null())
            .output()
            .context("run skiff master --cluster-reset")
    }

    /// Starts the process again on the same data dir and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "still running");
        self.spawn()
    }

    /// Waits until this master knows a leader and the default namespace is
    /// readable through it.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client();
        wait_for(&format!("master {} ready", self.api_addr), timeout, || {
            let client = client.clone();
            async move {
                let status = client.cluster_status().await.ok()?;
                if !status.has_leader {
                    return None;
                }
                client
                    .get(Kind::Namespace, "", "default")
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await
        .with_context(|| self.log_tail())
    }

    /// The List calls this master has answered (gRPC, OK), from its
    /// /metrics; 0 when it has answered none.
    pub fn lists_answered(&self) -> f64 {
        let name = "skiff_api_requests_total{method=\"List\",code=\"Ok\"}";
        crate::metric_sample(&self.metrics_addr, name).unwrap_or(0.0)
    }

    /// The end of this master's log, for failure messages.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log_path, 30)
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One master in a fresh temp dir, ready to serve. Keep the dir alive as
/// long as the master.
pub async fn ready_master() -> anyhow::Result<(tempfile::TempDir, MasterProcess)> {
    let dir = tempfile::tempdir()?;
    let master = MasterProcess::start(&dir.path().join("m"), None)?;
    master.wait_ready(Duration::from_secs(20)).await?;
    Ok((dir, master))
}

/// A Service named `name` with port 80 and no selector: an object no
/// controller changes, so what the store does is all a test sees.
pub fn selectorless_service(name: &str) -> Object {
    use skiff_objects::services::{self, ServicePort, ServiceSpec};
    let meta = v1::ObjectMeta {
        name: name.to_owned(),
        ..Default::default()
    };
    let spec = ServiceSpec {
        ports: Some(vec![ServicePort {
            port: 80,
            ..Default::default()
        }]),
        ..Default::default()
    };
    services::object(meta, spec, None)
}

/// Several masters forming one Raft cluster.
pub struct MasterCluster {
    pub masters: Vec<MasterProcess>,
    _dir: Option<tempfile::TempDir>,
}

impl MasterCluster {
    /// Starts `n` masters in a fresh temp dir: the first bootstraps, the
    /// others join through it. Returns once all are voters and ready.
    pub async fn start(n: usize) -> anyhow::Result<MasterCluster> {
        MasterCluster::start_with(n, &[]).await
    }

    /// Like [`MasterCluster::start`], with extra `skiff master` flags.
    pub async fn start_with(n: usize, extra_args: &[&str]) -> anyhow::Result<MasterCluster> {
        let dir = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
        let mut cluster = MasterCluster::start_in(dir.path(), n, extra_args).await?;
        cluster._dir = Some(dir);
        Ok(cluster)
    }

    /// Like [`MasterCluster::start_with`], in a directory the caller owns.
    pub async fn start_in(
        dir: &Path,
        n: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<MasterCluster> {
        let first = MasterProcess::start_with(&dir.join("master-0"), None, extra_args)?;
        first.wait_ready(Duration::from_secs(20)).await?;
        let join = first.api_addr.clone();
        let mut masters = vec![first];
        for i in 1..n {
            masters.push(MasterProcess::start_with(
                &dir.join(format!("master-{i}")),
                Some(&join),
                extra_args,
            )?);
        }
        let cluster = MasterCluster {
            masters,
            _dir: None,
        };
        let client = cluster.masters[0].client();
        wait_for(
            &format!("{n} voting members"),
            Duration::from_secs(60),
            || {
                let client = client.clone();
                async move {
                    let status = client.cluster_status().await.ok()?;
                    (status.members.iter().filter(|m| m.voter).count() == n).then_some(())
                }
            },
        )
        .await
        .with_context(|| cluster.logs())?;
        for m in &cluster.masters {
            m.wait_ready(Duration::from_secs(20)).await?;
        }
        Ok(cluster)
    }

    /// The index of the current leader, as the running masters see it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        wait_for("a leader", Duration::from_secs(20), || async {
            for m in self.masters.iter().filter(|m| m.pid().is_some()) {
                if let Ok(s) = m.client().cluster_status().await {
                    if s.has_leader {
                        return self
                            .masters
                            .iter()
                            .position(|x| x.api_addr == s.leader_api_addr);
                    }
                }
            }
            None
        })
        .await
    }

    /// Every master's log tail.
    pub fn logs(&self) -> String {
        self.masters
            .iter()
            .map(MasterProcess::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}
