//! `disk-idle`: what an idle node writes to its disk (flash wear). One
//! `skiff server` (master and agent in one process) with its private
//! containerd, on loopback with the pod network off, runs one pod of the
//! static-busybox image, pulled from a loopback registry. Once it has
//! settled, the bytes written by the processes this scenario started are
//! counted for `--seconds`: `write_bytes` of `/proc/<pid>/io` for the
//! server, its descendants (containerd) and the runc shims of that
//! containerd (found by its socket in their command line; they leave their
//! parent), not the pod's own processes. As a cross-check, the sectors
//! written to the block device holding the data dir (`/proc/diskstats`),
//! which count everything on that device. The target is at most 64 KiB a
//! minute in all.
//!
//! The data dir goes under `--dir` (default `/var/tmp`), which must be on
//! a disk: on tmpfs nothing reaches a block device and the figures say
//! nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_app_ready, wait_node_ready};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::free_port;
use skiff_e2e::registry::LoopbackRegistry;
use skiff_e2e::server::ServerProcess;
use skiff_objects::IntoObject;
use skiff_proto::v1;

use super::common::round;
use crate::proc_stats;

#[derive(Debug, clap::Args)]
pub struct DiskIdleArgs {
    /// Seconds of measuring.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seconds to let the node settle after its pod runs, before measuring.
    #[arg(long, default_value_t = 20)]
    pub settle: u64,
    /// Where the node's data dir is made; must be on a disk, not tmpfs.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
}

/// Bytes a minute an idle node may write, everything included.
const TARGET_BYTES_PER_MIN: u64 = 64 * 1024;

const NODE: &str = "disk-idle";

/// Which of the measured processes a PID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Skiff,
    Containerd,
    Shim,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Skiff => "skiff",
            Role::Containerd => "containerd",
            Role::Shim => "shims",
        }
    }
}

/// The processes to measure, by PID: the server, its descendants, and the
/// shims of its containerd.
fn measured(server_pid: u32, containerd_socket: &Path) -> BTreeMap<u32, Role> {
    let proc_root = Path::new("/proc");
    let mut pids = BTreeMap::from([(server_pid, Role::Skiff)]);
    for pid in skiff_e2e::descendants(proc_root, server_pid) {
        let comm = proc_root.join(pid.to_string()).join("comm");
        let role = match std::fs::read_to_string(comm).unwrap_or_default().trim() {
            "containerd" => Role::Containerd,
            _ => Role::Skiff,
        };
        pids.insert(pid, role);
    }
    let socket = containerd_socket.display().to_string();
    for pid in proc_stats::pids_with_argument(proc_root, &socket) {
        pids.entry(pid).or_insert(Role::Shim);
    }
    pids
}

/// `write_bytes` of each process that is still there.
fn written(pids: &BTreeMap<u32, Role>) -> BTreeMap<u32, u64> {
    let proc_root = Path::new("/proc");
    let mut out = BTreeMap::new();
    for &pid in pids.keys() {
        if let Ok(bytes) = proc_stats::write_bytes(proc_root, pid) {
            out.insert(pid, bytes);
        }
    }
    out
}

fn pod(image: &str) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: NODE.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), NODE.to_string())].into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            termination_grace_period_seconds: Some(1),
            containers: vec![v1::Container {
                name: "main".into(),
                image: image.into(),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run(args: DiskIdleArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "disk-idle runs a node with containers: run it as root with containerd, runc, \
         docker-registry and skopeo installed"
    );
    let what = format!("--dir {}", args.dir.display());
    let stat = nix::sys::statfs::statfs(&args.dir).context(what)?;
    let on_tmpfs = stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC;
    if on_tmpfs {
        eprintln!(
            "warning: {} is tmpfs: nothing written there reaches a disk, so the figures \
             undercount; give --dir on a disk",
            args.dir.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("skiff-disk-idle-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("making a temp dir in {}", args.dir.display()))?;

    let registry = LoopbackRegistry::start()?;
    let archive = dir.path().join("busybox.oci.tar");
    let busybox = BusyboxImage::build()?;
    busybox.write_oci_archive(&archive, "docker.io/library/busybox:bench")?;
    registry.push_oci_archive(&archive, "bench/busybox:1")?;
    let image = registry.image_ref("bench/busybox:1");

    let data = dir.path().join("d");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("registries.yaml"),
        format!(
            "configs:\n  \"{}\":\n    plainHTTP: true\n",
            registry.addr()
        ),
    )?;
    let addr = || format!("127.0.0.1:{}", free_port());
    let (api, raft, metrics) = (addr(), addr(), addr());
    let (agent_listen, agent_metrics) = (addr(), addr());
    let server = ServerProcess::start(
        &data,
        &[
            "--listen",
            &api,
            "--raft-listen",
            &raft,
            "--metrics-listen",
            &metrics,
            "--agent-listen",
            &agent_listen,
            "--agent-metrics-listen",
            &agent_metrics,
            "--node-name",
            NODE,
            "--node-ip",
            "127.0.0.1",
            "--pod-network",
            "none",
        ],
    )?;
    skiff_e2e::credentials::register_master(&api, &server.master_dir());
    let client = skiff_e2e::credentials::admin_client(&api)?;
    wait_node_ready(&client, NODE, Duration::from_secs(60))
        .await
        .with_context(|| server.log_tail())?;
    client.create(pod(&image).into_object()).await?;
    wait_app_ready(&client, NODE, 1, Duration::from_secs(60))
        .await
        .with_context(|| server.log_tail())?;
    eprintln!("pod running; settling {}s", args.settle);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;

    let server_pid = server.pid().context("the server is not running")?;
    let socket = server.containerd_socket();
    let (major, minor) = proc_stats::device_numbers(std::fs::metadata(&data)?.dev());
    let device_before = proc_stats::device_write_bytes(Path::new("/proc"), major, minor);
    let pids = measured(server_pid, &socket);
    let before = written(&pids);
    eprintln!("measuring {} processes for {}s", pids.len(), args.seconds);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // Processes that started meanwhile count from zero.
    let pids_after = measured(server_pid, &socket);
    let after = written(&pids_after);
    let device_after = proc_stats::device_write_bytes(Path::new("/proc"), major, minor);

    let mut by_role: BTreeMap<Role, u64> = BTreeMap::new();
    for (pid, bytes) in &after {
        let since = bytes.saturating_sub(before.get(pid).copied().unwrap_or(0));
        *by_role.entry(pids_after[pid]).or_default() += since;
    }
    let exited = before.keys().filter(|p| !after.contains_key(*p)).count();
    let total: u64 = by_role.values().sum();
    let per_min = |bytes: u64| round(bytes as f64 * 60.0 / elapsed);
    let device_bytes = device_before
        .zip(device_after)
        .map(|(b, a)| a.saturating_sub(b));
    let mut report = serde_json::json!({
        "scenario": "disk-idle",
        "seconds": args.seconds,
        "settle_seconds": args.settle,
        "pods": 1,
        "processes": pids_after.len(),
        "processes_exited": exited,
        "write_bytes": total,
        "write_bytes_per_min": per_min(total),
        "target_bytes_per_min": TARGET_BYTES_PER_MIN,
        "within_target": per_min(total) <= TARGET_BYTES_PER_MIN as f64,
        "device": format!("{major}:{minor}"),
        "device_write_bytes_per_min": device_bytes.map(per_min),
        "data_on_tmpfs": on_tmpfs,
    });
    for role in [Role::Skiff, Role::Containerd, Role::Shim] {
        let bytes = by_role.get(&role).copied().unwrap_or(0);
        report[format!("{}_write_bytes_per_min", role.name())] = per_min(bytes).into();
    }
    Ok(report)
}
