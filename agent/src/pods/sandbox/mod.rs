//! The pod sandbox: what a pod needs from the kernel around its
//! containers, as CRI's sandbox is to the kubelet. That is its network
//! namespace ([`crate::network::netns`]; the node's own for a pod in the
//! host's network), its place in the pod network
//! ([`crate::network::PodNetwork`] attach and detach), its cgroups, read
//! for OOM kills, the tmpfs mounts of its memory-backed volumes
//! ([`tmpfs`]), and, for a pod that shares one PID namespace among its
//! containers (`shareProcessNamespace`), the pause process that is PID 1
//! there ([`pause`]). It sits with the pods rather than in
//! [`crate::runtime`] or [`crate::network`] because it joins those for one
//! pod's lifecycle: the runtime stays containerd's side only, and the
//! network knows nothing of when a pod starts or goes.
//!
//! The pod workers see it only through the narrow [`PodSandbox`] trait.
//! [`HostSandbox`] is the real one; [`recording::RecordingSandbox`] is a
//! recording fake that can fail any operation, passed in explicitly where
//! the real one would be, so the workers' failure paths are unit-tested.

pub mod host;
pub mod pause;
pub mod recording;
pub mod tmpfs;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use skiff_proto::v1;

use crate::network::netns::NetnsError;
use crate::network::NetworkError;

pub use host::HostSandbox;
pub use pause::PauseError;
pub use tmpfs::TmpfsError;

/// Errors setting up or tearing down a pod's sandbox. The messages are
/// the underlying ones: they end up in the pod's status, which names the
/// pod already.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The pod's network namespace could not be made or removed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The pod could not be wired into, or unwired from, the pod network.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A volume's tmpfs could not be mounted or unmounted.
    #[error(transparent)]
    Tmpfs(#[from] TmpfsError),
    /// The pod's pause process could not be started or stopped.
    #[error(transparent)]
    Pause(#[from] PauseError),
}

pub type Result<T> = std::result::Result<T, SandboxError>;

/// The kernel side of a pod, as its worker needs it.
pub trait PodSandbox: Send + Sync + 'static {
    /// Makes the pod's network namespace at `netns` (idempotent).
    fn ensure_netns(&self, netns: &Path) -> impl Future<Output = Result<()>> + Send;
    /// Removes the pod's network namespace; a missing one is fine.
    fn remove_netns(&self, netns: &Path) -> Result<()>;
    /// The node's own network namespace, which the containers of a pod in
    /// the host's network (`hostNetwork`) join, and its probes and hooks
    /// connect from.
    fn host_netns(&self) -> PathBuf;
    /// Wires the pod, whose namespace is at `netns`, into the pod network
    /// (idempotent). Its address, or `None` on a node that runs pods with
    /// loopback only.
    fn attach(
        &self,
        pod: &v1::Pod,
        netns: &Path,
    ) -> impl Future<Output = Result<Option<Ipv4Addr>>> + Send;
    /// Unwires a deleted pod and frees its address. An error means the pod
    /// was not fully unwired; every step has been tried anyway.
    fn detach(&self, uid: &str) -> impl Future<Output = Result<()>> + Send;
    /// Whether the kernel OOM-killed a process of the cgroup at
    /// `cgroups_path` (the spec's `cgroupsPath`), read while the stopped
    /// task still holds it. The OOM event can arrive after the exit.
    fn oom_killed(&self, cgroups_path: &str) -> bool;
    /// Mounts a tmpfs on the directory `path` for a pod volume, at most
    /// `size_bytes` big when given; one mounted there already is kept.
    fn mount_tmpfs(&self, path: &Path, size_bytes: Option<u64>) -> Result<()>;
    /// Unmounts a volume's tmpfs at `path`; nothing mounted there is fine.
    fn unmount(&self, path: &Path) -> Result<()>;
    /// Makes sure pod `uid` has a PID namespace its containers share
    /// (`shareProcessNamespace`): the one of its pause process, PID 1
    /// there, whose PID is kept in `pause_file`, started in the pod's
    /// network namespace `netns` when none runs (idempotent: a running one
    /// is kept, so a restarted agent's pods keep their namespace; one that
    /// ended is replaced). Returns the path the containers join it by.
    fn ensure_pid_namespace(
        &self,
        uid: &str,
        pause_file: &Path,
        netns: &Path,
    ) -> impl Future<Output = Result<PathBuf>> + Send;
    /// Stops pod `uid`'s pause process, which ends its PID namespace and
    /// whatever is left in it, and removes `pause_file`; none is fine.
    fn remove_pid_namespace(&self, uid: &str, pause_file: &Path) -> Result<()>;
}
