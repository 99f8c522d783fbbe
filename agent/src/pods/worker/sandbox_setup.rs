//! The sandbox part of starting a pod, done before any of its containers
//! on every pass: its network namespace, then its place in the pod network,
//! which gives it its address (a pod in the host's network, `hostNetwork`,
//! gets neither: its containers join the node's namespace, its address is
//! the node's, and its `/etc` files carry the node's names); then the PID
//! namespace its containers are in, as the kubelet picks it (`hostPID`:
//! the node's; `shareProcessNamespace`: the pod's, that of its pause
//! process, started in its network namespace if none runs, so a restarted
//! agent's pods keep theirs; else each container's own); the `/etc`
//! files its containers bind-mount, which carry that address; and its
//! volumes
//! ([`crate::pods::volumes`]), made the first time and, every
//! [`VOLUME_REFRESH`] after, their files brought in line with the
//! ConfigMaps and Secrets they project. The kernel steps are idempotent,
//! so repeating them each pass puts back what was lost; while any fails,
//! no container of the pod is started (volumes once made stay in use when
//! a refresh fails).

use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::master_link::EventKind;
use crate::pods::dns_policy::pod_hostname;
use crate::pods::dns_policy::ServiceDiscovery;
use crate::pods::downward_api::PodFacts;
use crate::pods::layout::{NodeNames, PodLayout};
use crate::pods::pod_config::PodConfig;
use crate::pods::sandbox::{PodSandbox, SandboxError};
use crate::pods::volumes::{PreparedVolumes, VolumeError, VolumeSetup};
use crate::runtime::spec::PidNamespace;
use crate::runtime::ContainerRuntime;

use super::WorkerContext;

/// How often the files of a pod's configMap, secret, downwardAPI and
/// projected volumes are brought in line with their sources: a change
/// reaches them within this and one worker pass (10 s).
pub(super) const VOLUME_REFRESH: Duration = Duration::from_secs(30);

/// A pod whose sandbox is in place, as its containers see it.
pub(super) struct PreparedSandbox {
    /// The pod's network namespace, which each of its containers joins.
    pub(super) netns: PathBuf,
    /// The PID namespace its containers are in.
    pub(super) pid: PidNamespace,
    /// The pod with its address in `status.podIP`, for its `/etc/hosts`.
    pub(super) pod: v1::Pod,
    /// The pod's volumes, ready to mount.
    pub(super) volumes: PreparedVolumes,
    /// For a pod in the host's network, the node's names, which it shares.
    pub(super) node: Option<NodeNames>,
}

/// What a worker remembers of its pod's volumes between passes.
#[derive(Debug, Default)]
pub(super) struct VolumeState {
    /// The volumes, once made.
    prepared: Option<PreparedVolumes>,
    /// When their sources were last read.
    checked_at: Option<Instant>,
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
        let node = self.node.as_ref();
        layout.write_etc_files(&self.pod, &resolv_conf, node).await
    }

    /// The containers' hostname: the pod's, or the node's for a pod in the
    /// host's network.
    pub(super) fn hostname(&self) -> String {
        match &self.node {
            Some(node) => node.hostname.clone(),
            None => pod_hostname(&self.pod).0,
        }
    }
}

/// The network namespace `pod`'s containers are in: its own, or the
/// node's for a pod in the host's network.
pub(super) fn netns_of<R, S: PodSandbox>(ctx: &WorkerContext<R, S>, pod: &v1::Pod) -> PathBuf {
    if pod.spec.as_ref().is_some_and(|s| s.host_network) {
        return ctx.sandbox.host_netns();
    }
    let uid = pod.metadata.as_ref().map_or("", |m| m.uid.as_str());
    ctx.layout.netns(uid)
}

/// Makes sure of the pod's network namespace and its place in the pod
/// network ([`prepare_network`]), then of the PID namespace its
/// containers are in ([`pid_namespace`]).
pub(super) async fn prepare<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    pod_ip: &mut String,
) -> Result<PreparedSandbox, SandboxError> {
    let mut prepared = prepare_network(ctx, pod, pod_ip).await?;
    prepared.pid = pid_namespace(ctx, pod, &prepared.netns).await?;
    Ok(prepared)
}

/// The network part of [`prepare`] (the PID namespace left each
/// container's own). `pod_ip` keeps the pod's address from pass to pass; a
/// node without a pod network gives none (loopback only). A pod in the
/// host's network has the node's namespace and address (its host ports
/// are the node's ports themselves: nothing forwards them).
async fn prepare_network<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    pod_ip: &mut String,
) -> Result<PreparedSandbox, SandboxError> {
    if pod.spec.as_ref().is_some_and(|s| s.host_network) {
        pod_ip.clone_from(&ctx.host_ip);
        let mut pod = pod.clone();
        pod.status.get_or_insert_with(Default::default).pod_ip = pod_ip.clone();
        return Ok(PreparedSandbox {
            netns: ctx.sandbox.host_netns(),
            pid: PidNamespace::Container,
            pod,
            volumes: PreparedVolumes::default(),
            node: Some(NodeNames::read()),
        });
    }
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
    Ok(PreparedSandbox {
        netns,
        pid: PidNamespace::Container,
        pod,
        volumes: PreparedVolumes::default(),
        node: None,
    })
}

/// The PID namespace `pod`'s containers are in, as the kubelet picks it:
/// the node's with `hostPID`; else, with `shareProcessNamespace`, the
/// pod's, its pause process made sure of (started in the pod's network
/// namespace `netns` when none runs); else each container's own.
async fn pid_namespace<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    netns: &Path,
) -> Result<PidNamespace, SandboxError> {
    let spec = pod.spec.as_ref();
    if spec.is_some_and(|s| s.host_pid) {
        return Ok(PidNamespace::Node);
    }
    let shares = spec.is_some_and(|s| s.share_process_namespace == Some(true));
    if !shares {
        return Ok(PidNamespace::Container);
    }
    let meta = pod.metadata.clone().unwrap_or_default();
    let pause_file = ctx.layout.pause_file(&meta.uid);
    match ctx
        .sandbox
        .ensure_pid_namespace(&meta.uid, &pause_file, netns)
        .await
    {
        Ok(path) => Ok(PidNamespace::Pod(path.display().to_string())),
        Err(e) => {
            tracing::warn!(pod = %meta.name, error = %e, "cannot start the pod's pause process");
            Err(e)
        }
    }
}

/// The pod's volumes: made on the first pass (and each pass after until
/// they are), their sources read again once [`VOLUME_REFRESH`] has passed,
/// else as they were. An error only while they were never made; a failed
/// refresh keeps them. Failures are told as the kubelet's `FailedMount`.
pub(super) async fn volumes<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    pod: &v1::Pod,
    state: &mut VolumeState,
    config: &mut PodConfig,
) -> Result<PreparedVolumes, VolumeError> {
    let now = Instant::now();
    if let (Some(prepared), Some(at)) = (&state.prepared, state.checked_at) {
        if now < at + VOLUME_REFRESH {
            return Ok(prepared.clone());
        }
    }
    let pod_ip = pod.status.as_ref().map_or("", |s| s.pod_ip.as_str());
    let setup = VolumeSetup {
        sandbox: ctx.sandbox.as_ref(),
        source: ctx.config.as_ref(),
        layout: ctx.layout.as_ref(),
        facts: PodFacts {
            pod,
            host_ip: &ctx.host_ip,
            pod_ip,
            node_allocatable: &ctx.node_allocatable,
        },
    };
    let made = setup.prepare(config).await;
    state.checked_at = Some(now);
    match made {
        Ok(prepared) => {
            state.prepared = Some(prepared.clone());
            Ok(prepared)
        }
        Err(e) => {
            let meta = pod.metadata.clone().unwrap_or_default();
            tracing::warn!(pod = %meta.name, error = %e, "cannot make the pod's volumes");
            ctx.events
                .pod(&meta, "", EventKind::Warning, "FailedMount", e.to_string());
            state.prepared.clone().ok_or(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::{json, Value};
    use skiff_proto::v1;

    use crate::pods::sandbox::recording::{
        RecordingSandbox, SandboxCall, SandboxOp, FIRST_PAUSE_PID,
    };
    use crate::pods::sandbox::PodSandbox;
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

    /// The test pod with a second container, `side`, its PID namespace
    /// shared or not.
    fn pod_of_two(share: Option<bool>) -> v1::Pod {
        let mut pod = pod("Always");
        let spec = pod.spec.as_mut().unwrap();
        spec.share_process_namespace = share;
        let mut side = spec.containers[0].clone();
        side.name = "side".into();
        spec.containers.push(side);
        pod
    }

    /// The `pid` entries of the namespaces container `id` was started in.
    fn pid_namespaces(runtime: &RecordingRuntime, id: &str) -> Vec<Value> {
        let spec = runtime.started_spec(id).expect("started");
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap().clone();
        namespaces
            .into_iter()
            .filter(|n| n["type"] == "pid")
            .collect()
    }

    /// Whether container `name` shows running, `restarts` restarts in.
    fn runs(s: &v1::PodStatus, name: &str, restarts: i32) -> bool {
        s.container_statuses.iter().any(|c| {
            c.name == name
                && c.restart_count == restarts
                && c.state.as_ref().is_some_and(|st| st.running.is_some())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_pid_namespace_is_each_containers_own_the_pods_or_the_nodes() {
        // Each container its own (shareProcessNamespace false or unset).
        for share in [None, Some(false)] {
            let mut h = spawn_worker_with(
                pod_of_two(share),
                RecordingRuntime::default(),
                RecordingSandbox::default(),
            );
            h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
                .await;
            for id in ["uid1_main", "uid1_side"] {
                assert_eq!(pid_namespaces(&h.runtime, id), [json!({"type": "pid"})]);
            }
            let ensured = h
                .sandbox
                .calls()
                .into_iter()
                .filter(|c| matches!(c, SandboxCall::EnsurePidNamespace { .. }))
                .count();
            assert_eq!(ensured, 0, "no pause process for {share:?}");
            assert!(h.sandbox.pauses().is_empty());
        }

        // The pod's: both join its pause process's, started in the pod's
        // network namespace after the pod was wired.
        let mut h = spawn_worker_with(
            pod_of_two(Some(true)),
            RecordingRuntime::default(),
            RecordingSandbox::default(),
        );
        h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
            .await;
        let pause = format!("/proc/{FIRST_PAUSE_PID}/ns/pid");
        for id in ["uid1_main", "uid1_side"] {
            assert_eq!(
                pid_namespaces(&h.runtime, id),
                [json!({"type": "pid", "path": pause})],
                "{id}"
            );
        }
        let netns = h.dir.path().join("netns").join("uid1");
        assert_eq!(
            h.sandbox.calls()[..3],
            [
                SandboxCall::EnsureNetns(netns.clone()),
                SandboxCall::Attach {
                    uid: "uid1".into(),
                    netns: netns.clone(),
                },
                SandboxCall::EnsurePidNamespace {
                    uid: "uid1".into(),
                    pause_file: h.dir.path().join("pause").join("uid1"),
                    netns,
                },
            ]
        );
        assert_eq!(
            h.sandbox.pauses(),
            BTreeMap::from([("uid1".to_owned(), FIRST_PAUSE_PID)])
        );

        // The node's, with hostPID (which wins, as with the kubelet): no
        // namespace of their own and no pause process.
        let mut host = pod_of_two(Some(true));
        host.spec.as_mut().unwrap().host_pid = true;
        let mut h = spawn_worker_with(
            host,
            RecordingRuntime::default(),
            RecordingSandbox::default(),
        );
        h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
            .await;
        for id in ["uid1_main", "uid1_side"] {
            assert!(pid_namespaces(&h.runtime, id).is_empty(), "{id}");
        }
        assert!(h.sandbox.pauses().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_process_lasts_the_pods_life_and_one_that_ended_is_replaced() {
        let mut h = spawn_worker_with(
            pod_of_two(Some(true)),
            RecordingRuntime::default(),
            RecordingSandbox::default(),
        );
        h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
            .await;
        // Pass after pass, the same pause process.
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(
            h.sandbox.pauses(),
            BTreeMap::from([("uid1".to_owned(), FIRST_PAUSE_PID)])
        );
        assert_eq!(h.starts(), ["0", "0"]);

        // It ends (its namespace, and the containers in it, with it): the
        // next pass starts another, and the restarted container joins that.
        h.sandbox.end_pause("uid1");
        h.exit_of("main", 137).await;
        h.until("main restarted", |s| runs(s, "main", 1)).await;
        let replaced = FIRST_PAUSE_PID + 1;
        assert_eq!(
            h.sandbox.pauses(),
            BTreeMap::from([("uid1".to_owned(), replaced)])
        );
        assert_eq!(
            pid_namespaces(&h.runtime, "uid1_main"),
            [json!({"type": "pid", "path": format!("/proc/{replaced}/ns/pid")})]
        );

        // The pod goes: its pause process goes after its containers, before
        // the network.
        h.desired.send_replace(None);
        h.ended().await;
        assert!(h.runtime.state("uid1_main").is_none());
        assert!(h.sandbox.pauses().is_empty());
        let calls = h.sandbox.calls();
        let n = calls.len();
        assert_eq!(
            calls[n - 3..n - 1],
            [
                SandboxCall::RemovePidNamespace {
                    uid: "uid1".into(),
                    pause_file: h.dir.path().join("pause").join("uid1"),
                },
                SandboxCall::Detach("uid1".into()),
            ],
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_process_that_cannot_start_holds_the_pod_and_is_retried() {
        let sandbox = RecordingSandbox::default();
        sandbox.fail(SandboxOp::EnsurePidNamespace, 1);
        let mut h = spawn_worker_with(pod_of_two(Some(true)), RecordingRuntime::default(), sandbox);
        let s = h
            .until("CreatePodSandboxError", |s| {
                waiting_reason(s) == "CreatePodSandboxError"
            })
            .await;
        assert!(
            waiting_message(&s).starts_with("pause process: did not start: unshare"),
            "{s:?}"
        );
        assert!(h.starts().is_empty(), "no container outside its namespace");
        h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
            .await;
        assert_eq!(
            h.sandbox.pauses(),
            BTreeMap::from([("uid1".to_owned(), FIRST_PAUSE_PID)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_pod_keeps_its_running_pause_process() {
        // What an earlier agent left: the pause process and the containers.
        let sandbox = RecordingSandbox::default();
        let dir = tempfile::tempdir().unwrap();
        let netns = dir.path().join("netns");
        let earlier = sandbox
            .ensure_pid_namespace("uid1", &dir.path().join("pause"), &netns)
            .await
            .unwrap();
        let runtime = RecordingRuntime::default();
        runtime.add_running("uid1_main", BTreeMap::new());
        runtime.add_running("uid1_side", BTreeMap::new());
        let mut h = spawn_worker_with(pod_of_two(Some(true)), runtime, sandbox);
        h.until("both running", |s| runs(s, "main", 0) && runs(s, "side", 0))
            .await;
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(h.starts().is_empty(), "adopted, not started again");
        assert_eq!(
            earlier,
            std::path::Path::new(&format!("/proc/{FIRST_PAUSE_PID}/ns/pid"))
        );
        assert_eq!(
            h.sandbox.pauses(),
            BTreeMap::from([("uid1".to_owned(), FIRST_PAUSE_PID)]),
            "the same pause process, none started"
        );
    }
}
