//! The sandbox part of starting a pod, done before any of its containers
//! on every pass: its network namespace, then its place in the pod network,
//! which gives it its address; and the `/etc` files its containers
//! bind-mount, which carry that address. Both kernel steps are idempotent,
//! so repeating them each pass puts back what was lost; while either
//! fails, no container of the pod is started.

use std::path::PathBuf;

use skiff_proto::v1;

use crate::pods::dns_policy::ServiceDiscovery;
use crate::pods::layout::PodLayout;
use crate::pods::sandbox::{PodSandbox, SandboxError};
use crate::runtime::ContainerRuntime;

use super::WorkerContext;

/// A pod whose sandbox is in place, as its containers see it.
pub(super) struct PreparedSandbox {
    /// The pod's network namespace, which each of its containers joins.
    pub(super) netns: PathBuf,
    /// The pod with its address in `status.podIP`, for its `/etc/hosts`.
    pub(super) pod: v1::Pod,
}

impl PreparedSandbox {
    /// Writes the pod's `/etc/hosts`, `/etc/hostname` and
    /// `/etc/resolv.conf` (by its `dnsPolicy`) for a container about to
    /// start, so each run sees the pod's current address and the node's
    /// current resolvers; returns them as (path in the container, file on
    /// the host).
    pub(super) async fn etc_files(
        &self,
        layout: &PodLayout,
        discovery: &ServiceDiscovery,
    ) -> std::io::Result<Vec<(String, String)>> {
        let resolv_conf = discovery.resolv_conf_for(&self.pod);
        layout.write_etc_files(&self.pod, &resolv_conf).await
    }
}

/// Makes sure of the pod's network namespace and its place in the pod
/// network. `pod_ip` keeps the pod's address from pass to pass; a node
/// without a pod network gives none (loopback only).
pub(super) async fn prepare<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    pod_ip: &mut String,
) -> Result<PreparedSandbox, SandboxError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let netns = ctx.layout.netns(&meta.uid);
    ctx.sandbox.ensure_netns(&netns).await?;
    match ctx.sandbox.attach(pod, &netns).await {
        Ok(Some(ip)) => *pod_ip = ip.to_string(),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(pod = %meta.name, error = %e, "cannot wire the pod into the network");
            return Err(e);
        }
    }
    let mut pod = pod.clone();
    if !pod_ip.is_empty() {
        pod.status.get_or_insert_with(Default::default).pod_ip = pod_ip.clone();
    }
    Ok(PreparedSandbox { netns, pod })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall, SandboxOp};
    use crate::pods::worker::harness::{
        pod, running, spawn_worker_with, waiting_message, waiting_reason,
    };
    use crate::runtime::recording::RecordingRuntime;

    #[tokio::test(start_paused = true)]
    async fn a_netns_that_cannot_be_made_holds_the_pod_and_is_retried() {
        let sandbox = RecordingSandbox::default();
        sandbox.fail(SandboxOp::EnsureNetns, 1);
        let begun = tokio::time::Instant::now();
        let mut h = spawn_worker_with(pod("Always"), RecordingRuntime::default(), sandbox);
        let s = h
            .until("CreatePodSandboxError", |s| {
                waiting_reason(s) == "CreatePodSandboxError"
            })
            .await;
        assert!(waiting_message(&s).contains("unshare"), "{s:?}");
        assert_eq!(s.phase, "Pending");
        assert!(
            h.runtime.calls().is_empty(),
            "no image pulled, no container made without a netns"
        );
        assert_eq!(
            h.sandbox.calls().len(),
            1,
            "not wired into the network without a netns"
        );
        h.until("Running", running).await;
        assert!(
            begun.elapsed() >= Duration::from_secs(5),
            "retried after 5 s, not at once: {:?}",
            begun.elapsed()
        );
        let netns = h.dir.path().join("netns").join("uid1");
        assert_eq!(
            h.sandbox.calls()[..3],
            [
                SandboxCall::EnsureNetns(netns.clone()),
                SandboxCall::EnsureNetns(netns.clone()),
                SandboxCall::Attach {
                    uid: "uid1".into(),
                    netns,
                },
            ]
        );
        assert_eq!(h.starts(), ["0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_network_attach_holds_the_pod_and_is_retried() {
        let sandbox = RecordingSandbox::with_pod_ip(std::net::Ipv4Addr::new(10, 42, 0, 5));
        sandbox.fail(SandboxOp::Attach, 2);
        let begun = tokio::time::Instant::now();
        let mut h = spawn_worker_with(pod("Always"), RecordingRuntime::default(), sandbox);
        let s = h
            .until("CreatePodSandboxError", |s| {
                waiting_reason(s) == "CreatePodSandboxError"
            })
            .await;
        assert!(waiting_message(&s).contains("creating veth"), "{s:?}");
        assert_eq!(s.phase, "Pending");
        assert!(s.pod_ip.is_empty(), "no address before the pod is wired");
        assert!(
            h.runtime.calls().is_empty(),
            "no image pulled, no container made before the pod is wired"
        );
        let s = h.until("Running", running).await;
        assert!(
            begun.elapsed() >= Duration::from_secs(10),
            "two failures, each retried after 5 s: {:?}",
            begun.elapsed()
        );
        assert_eq!(s.pod_ip, "10.42.0.5");
        let attaches = h
            .sandbox
            .calls()
            .into_iter()
            .filter(|c| matches!(c, SandboxCall::Attach { .. }))
            .count();
        assert_eq!(attaches, 3);
        let hosts_file = h.pod_dir().join("etc").join("hosts");
        let hosts = std::fs::read_to_string(hosts_file).unwrap();
        assert!(
            hosts.contains("10.42.0.5"),
            "the container sees its address: {hosts}"
        );
        assert_eq!(h.starts(), ["0"]);
    }
}
