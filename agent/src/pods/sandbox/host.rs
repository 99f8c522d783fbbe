//! The real pod sandbox on this host: network namespace files under the
//! data dir, the node's pod network (when it has one), the cgroup files
//! under `/sys/fs/cgroup` that count a container's OOM kills, the
//! volumes' tmpfs mounts, and the pods' pause processes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_proto::v1;

use super::{pause, tmpfs, PodSandbox, Result, SandboxError};
use crate::network::{netns, PodNetwork};

/// Where the cgroup filesystem (v2, or the v1 hierarchies) is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The real sandbox.
#[derive(Debug, Clone)]
pub struct HostSandbox {
    /// The pod network; `None` leaves pods with loopback only.
    network: Option<Arc<PodNetwork>>,
}

impl HostSandbox {
    pub fn new(network: Option<Arc<PodNetwork>>) -> HostSandbox {
        HostSandbox { network }
    }
}

impl PodSandbox for HostSandbox {
    async fn ensure_netns(&self, path: &Path) -> Result<()> {
        netns::ensure(path.to_path_buf())
            .await
            .map_err(SandboxError::Netns)
    }

    fn remove_netns(&self, path: &Path) -> Result<()> {
        netns::remove(path).map_err(SandboxError::Netns)
    }

    /// The agent's own: the node's network, also when the containers'
    /// runtime runs elsewhere (runc joins it by this path).
    fn host_netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
    }

    async fn attach(&self, pod: &v1::Pod, path: &Path) -> Result<Option<Ipv4Addr>> {
        let Some(network) = &self.network else {
            return Ok(None);
        };
        let ip = network
            .attach(pod, path)
            .await
            .map_err(SandboxError::Network)?;
        Ok(Some(ip))
    }

    async fn detach(&self, uid: &str) -> Result<()> {
        let Some(network) = &self.network else {
            return Ok(());
        };
        network.detach(uid).await.map_err(SandboxError::Network)
    }

    fn oom_killed(&self, cgroups_path: &str) -> bool {
        oom_kills(Path::new(CGROUP_ROOT), cgroups_path) > 0
    }

    fn mount_tmpfs(&self, path: &Path, size_bytes: Option<u64>) -> Result<()> {
        tmpfs::mount_at(path, size_bytes).map_err(SandboxError::Tmpfs)
    }

    fn unmount(&self, path: &Path) -> Result<()> {
        tmpfs::unmount_at(path).map_err(SandboxError::Tmpfs)
    }

    async fn ensure_pid_namespace(
        &self,
        uid: &str,
        pause_file: &Path,
        netns: &Path,
    ) -> Result<PathBuf> {
        pause::ensure(uid, pause_file, netns)
            .await
            .map_err(SandboxError::Pause)
    }

    fn remove_pid_namespace(&self, uid: &str, pause_file: &Path) -> Result<()> {
        pause::stop(uid, pause_file).map_err(SandboxError::Pause)
    }
}

/// OOM kills recorded for a cgroup: v2 `memory.events`, else v1
/// `memory.oom_control`, both with an `oom_kill N` line.
pub fn oom_kills(cgroup_root: &Path, cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    [
        cgroup_root.join(rel).join("memory.events"),
        cgroup_root
            .join("memory")
            .join(rel)
            .join("memory.oom_control"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|text| {
        text.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn oom_kills_are_read_from_v1_and_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let v1 = tmp.path().join("memory/skiff/u/c");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(super::oom_kills(tmp.path(), "/skiff/u/c"), 1);
        let v2 = tmp.path().join("skiff/u/d");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(super::oom_kills(tmp.path(), "/skiff/u/d"), 2);
        assert_eq!(super::oom_kills(tmp.path(), "/skiff/u/none"), 0);
    }
}
