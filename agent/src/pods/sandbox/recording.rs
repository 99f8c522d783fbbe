//! A recording fake of [`PodSandbox`] for unit-testing the pod workers:
//! every call is recorded, each operation can be made to fail a number of
//! times with the error the real sandbox would give, attached pods get an
//! address when one is set, cgroups can be marked OOM-killed, tmpfs
//! mounts are remembered (the directory stays a plain one), and so are
//! the pods' pause processes (PIDs from [`FIRST_PAUSE_PID`] on; one can be
//! ended, so the next ensure starts another). Passed in explicitly where
//! the real sandbox would be.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use skiff_proto::v1;

use super::{PauseError, PodSandbox, Result, SandboxError, TmpfsError};
use crate::network::netlink::LinkError;
use crate::network::netns::NetnsError;
use crate::network::{veth_name, NetworkError};

/// The node's network namespace as the fake gives it.
pub const HOST_NETNS: &str = "/proc/1/ns/net";

/// The PID of the first pause process the fake starts; each one after
/// gets the next.
pub const FIRST_PAUSE_PID: u32 = 4000;

/// One call made to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxCall {
    EnsureNetns(PathBuf),
    RemoveNetns(PathBuf),
    Attach {
        uid: String,
        netns: PathBuf,
    },
    Detach(String),
    MountTmpfs {
        path: PathBuf,
        size_bytes: Option<u64>,
    },
    Unmount(PathBuf),
    EnsurePidNamespace {
        uid: String,
        pause_file: PathBuf,
        netns: PathBuf,
    },
    RemovePidNamespace {
        uid: String,
        pause_file: PathBuf,
    },
}

/// The operations a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SandboxOp {
    EnsureNetns,
    RemoveNetns,
    Attach,
    Detach,
    MountTmpfs,
    Unmount,
    EnsurePidNamespace,
    RemovePidNamespace,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<SandboxCall>,
    /// How many of the next calls of each operation fail.
    failures: BTreeMap<SandboxOp, u32>,
    pod_ip: Option<Ipv4Addr>,
    oom_killed: BTreeSet<String>,
    /// Where a tmpfs is mounted now.
    mounted: BTreeSet<PathBuf>,
    /// The running pause processes: pod UID → PID.
    pauses: BTreeMap<String, u32>,
    /// How many pause processes were started.
    pauses_started: u32,
}

/// The fake sandbox. By default pods get no address, as on a node that
/// runs pods with loopback only.
#[derive(Debug, Default)]
pub struct RecordingSandbox {
    inner: Mutex<Inner>,
}

impl RecordingSandbox {
    /// A sandbox that gives every attached pod `ip`, as a pod network would.
    pub fn with_pod_ip(ip: Ipv4Addr) -> RecordingSandbox {
        let sandbox = RecordingSandbox::default();
        sandbox.lock().pod_ip = Some(ip);
        sandbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<SandboxCall> {
        self.lock().calls.clone()
    }

    /// The next `n` calls of `op` fail.
    pub fn fail(&self, op: SandboxOp, n: u32) {
        self.lock().failures.insert(op, n);
    }

    /// Where a tmpfs is mounted now.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.lock().mounted.iter().cloned().collect()
    }

    /// The running pause processes: pod UID → PID.
    pub fn pauses(&self) -> BTreeMap<String, u32> {
        self.lock().pauses.clone()
    }

    /// Pod `uid`'s pause process ends (killed from inside the pod, say).
    pub fn end_pause(&self, uid: &str) {
        self.lock().pauses.remove(uid);
    }

    /// The cgroup at `cgroups_path` has had a process OOM-killed.
    pub fn oom_kill(&self, cgroups_path: &str) {
        self.lock().oom_killed.insert(cgroups_path.to_string());
    }

    /// Records `call`; whether it is to fail.
    fn record(&self, op: SandboxOp, call: SandboxCall) -> bool {
        let mut inner = self.lock();
        inner.calls.push(call);
        match inner.failures.get_mut(&op) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The error the real sandbox gives when the pod's veth cannot be handled
/// (`doing` is what it was doing to the veth).
fn link_failure(doing: &str, uid: &str) -> SandboxError {
    SandboxError::Network(NetworkError::Link(LinkError {
        what: format!("{doing} veth {}", veth_name(uid)),
        message: "injected failure".into(),
    }))
}

impl PodSandbox for RecordingSandbox {
    async fn ensure_netns(&self, netns: &Path) -> Result<()> {
        let call = SandboxCall::EnsureNetns(netns.into());
        if self.record(SandboxOp::EnsureNetns, call) {
            return Err(SandboxError::Netns(NetnsError::Unshare {
                path: netns.into(),
                source: Errno::EPERM,
            }));
        }
        Ok(())
    }

    fn remove_netns(&self, netns: &Path) -> Result<()> {
        let call = SandboxCall::RemoveNetns(netns.into());
        if self.record(SandboxOp::RemoveNetns, call) {
            return Err(SandboxError::Netns(NetnsError::Unmount {
                path: netns.into(),
                source: Errno::EBUSY,
            }));
        }
        Ok(())
    }

    fn host_netns(&self) -> PathBuf {
        PathBuf::from(HOST_NETNS)
    }

    async fn attach(&self, pod: &v1::Pod, netns: &Path) -> Result<Option<Ipv4Addr>> {
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let call = SandboxCall::Attach {
            uid: uid.clone(),
            netns: netns.into(),
        };
        if self.record(SandboxOp::Attach, call) {
            return Err(link_failure("creating", &uid));
        }
        Ok(self.lock().pod_ip)
    }

    async fn detach(&self, uid: &str) -> Result<()> {
        if self.record(SandboxOp::Detach, SandboxCall::Detach(uid.to_string())) {
            return Err(link_failure("deleting", uid));
        }
        Ok(())
    }

    fn oom_killed(&self, cgroups_path: &str) -> bool {
        self.lock().oom_killed.contains(cgroups_path)
    }

    fn mount_tmpfs(&self, path: &Path, size_bytes: Option<u64>) -> Result<()> {
        let call = SandboxCall::MountTmpfs {
            path: path.into(),
            size_bytes,
        };
        if self.record(SandboxOp::MountTmpfs, call) {
            return Err(SandboxError::Tmpfs(TmpfsError::Mount {
                path: path.into(),
                source: Errno::EPERM,
            }));
        }
        self.lock().mounted.insert(path.into());
        Ok(())
    }

    fn unmount(&self, path: &Path) -> Result<()> {
        if self.record(SandboxOp::Unmount, SandboxCall::Unmount(path.into())) {
            return Err(SandboxError::Tmpfs(TmpfsError::Unmount {
                path: path.into(),
                source: Errno::EBUSY,
            }));
        }
        self.lock().mounted.remove(path);
        Ok(())
    }

    async fn ensure_pid_namespace(
        &self,
        uid: &str,
        pause_file: &Path,
        netns: &Path,
    ) -> Result<PathBuf> {
        let call = SandboxCall::EnsurePidNamespace {
            uid: uid.to_string(),
            pause_file: pause_file.into(),
            netns: netns.into(),
        };
        if self.record(SandboxOp::EnsurePidNamespace, call) {
            return Err(SandboxError::Pause(PauseError::Start {
                message: "unshare of a PID namespace: EPERM: Operation not permitted; the agent needs CAP_SYS_ADMIN".into(),
            }));
        }
        let mut inner = self.lock();
        let running = inner.pauses.get(uid).copied();
        let pid = match running {
            Some(pid) => pid,
            None => {
                let pid = FIRST_PAUSE_PID + inner.pauses_started;
                inner.pauses_started += 1;
                inner.pauses.insert(uid.to_string(), pid);
                pid
            }
        };
        Ok(PathBuf::from(format!("/proc/{pid}/ns/pid")))
    }

    fn remove_pid_namespace(&self, uid: &str, pause_file: &Path) -> Result<()> {
        let call = SandboxCall::RemovePidNamespace {
            uid: uid.to_string(),
            pause_file: pause_file.into(),
        };
        if self.record(SandboxOp::RemovePidNamespace, call) {
            let pid = self
                .lock()
                .pauses
                .get(uid)
                .copied()
                .unwrap_or(FIRST_PAUSE_PID);
            return Err(SandboxError::Pause(PauseError::Kill {
                pid: i32::try_from(pid).unwrap_or(i32::MAX),
                source: Errno::EPERM,
            }));
        }
        self.lock().pauses.remove(uid);
        Ok(())
    }
}
