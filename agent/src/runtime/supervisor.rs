//! A private containerd, as k3s runs one: when the agent is given no
//! socket, it starts `containerd` from `PATH` with its own config, root,
//! state and socket under the data dir, restarts it if it dies, and stops
//! it on shutdown. The containers themselves belong to their runc shims
//! and outlive both. After an agent crash, the containerd it left running
//! is found by its pid file and socket and adopted instead of started twice.
//!
//! containerd's stdout and stderr go to `containerd.log` beside its config;
//! the supervisor keeps that log under [`CONTAINERD_LOG_MAX_BYTES`], with
//! one rotated copy ([`crate::log_rotation`]), so it cannot fill the disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::{Error, Result};
use crate::log_rotation;

/// Largest the private containerd's log grows before it is rotated; with
/// the one rotated copy, its logs take at most twice this.
pub const CONTAINERD_LOG_MAX_BYTES: u64 = 10 << 20;

/// How often the log's size is looked at.
const LOG_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Where the private containerd keeps its files.
#[derive(Debug, Clone)]
pub struct ContainerdLayout {
    pub dir: PathBuf,
}

impl ContainerdLayout {
    pub fn new(data_dir: &Path) -> ContainerdLayout {
        ContainerdLayout {
            dir: data_dir.join("containerd"),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    /// containerd's `root`: its content store, snapshots and metadata.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn config_text(&self) -> String {
        let d = self.dir.display();
        format!(
            "# Written by the skiff agent at every start.\nversion = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = \"{d}/containerd.sock\"\n\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\n[debug]\n  address = \"\"\n\n[metrics]\n  address = \"\"\n"
        )
    }
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim() == "containerd")
            .unwrap_or(false)
}

/// Runs the private containerd until `shutdown`, restarting it if it dies.
/// Returns once the socket exists (or an earlier instance was adopted).
pub async fn start(layout: ContainerdLayout, shutdown: CancellationToken) -> Result<()> {
    let binary = find_in_path("containerd").ok_or(Error::ContainerdNotInstalled)?;
    std::fs::create_dir_all(&layout.dir)
        .map_err(super::io(format!("creating {}", layout.dir.display())))?;
    std::fs::write(layout.config(), layout.config_text())
        .map_err(super::io(format!("writing {}", layout.config().display())))?;
    let adopted = std::fs::read_to_string(layout.pid_file())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|pid| alive(*pid));
    if let Some(pid) = adopted {
        tracing::info!(pid, "adopting the containerd an earlier agent started");
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(supervise(
        layout.clone(),
        binary,
        adopted,
        shutdown,
        ready_tx,
    ));
    let _ = ready_rx.await;
    Ok(())
}

async fn supervise(
    layout: ContainerdLayout,
    binary: PathBuf,
    mut adopted: Option<i32>,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(500);
    loop {
        rotate_log(&layout);
        let pid = match adopted.take() {
            Some(pid) => pid,
            None => match spawn(&layout, &binary) {
                Ok(pid) => pid,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start containerd");
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            },
        };
        let _ = std::fs::write(layout.pid_file(), pid.to_string());
        // Wait for the socket before saying it is up.
        for _ in 0..200 {
            if layout.socket().exists() || !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let started = tokio::time::Instant::now();
        let mut next_log_check = started + LOG_CHECK_EVERY;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    stop(pid).await;
                    let _ = std::fs::remove_file(layout.pid_file());
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            reap(pid);
            if !alive(pid) {
                break;
            }
            if tokio::time::Instant::now() >= next_log_check {
                rotate_log(&layout);
                next_log_check = tokio::time::Instant::now() + LOG_CHECK_EVERY;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tracing::warn!(pid, log = %layout.log().display(), "containerd exited; restarting it");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Rotates containerd's log once it is past [`CONTAINERD_LOG_MAX_BYTES`].
fn rotate_log(layout: &ContainerdLayout) {
    let log = layout.log();
    match log_rotation::rotate_if_larger(&log, CONTAINERD_LOG_MAX_BYTES) {
        Ok(true) => tracing::info!(log = %log.display(), "rotated containerd's log"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(log = %log.display(), error = %e, "cannot rotate containerd's log")
        }
    }
}

fn spawn(layout: &ContainerdLayout, binary: &Path) -> Result<i32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())
        .map_err(super::io(format!("opening {}", layout.log().display())))?;
    let err = log.try_clone().map_err(super::io("cloning log handle"))?;
    let _ = std::fs::remove_file(layout.socket());
    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(layout.config())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(super::io(format!("starting {}", binary.display())))?;
    let pid = child.id() as i32;
    // The child is reaped by `reap`; dropping the handle does not kill it.
    drop(child);
    tracing::info!(pid, socket = %layout.socket().display(), "started containerd");
    Ok(pid)
}

/// Collects the exit status of our child so it does not linger as a zombie.
fn reap(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

async fn stop(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for _ in 0..100 {
        reap(pid);
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    reap(pid);
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
