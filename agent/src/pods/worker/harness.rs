//! The harness every worker test drives: one worker spawned on the
//! recording runtime, the recording sandbox and a static source of
//! ConfigMaps and Secrets, its files in a temp dir,
//! with the channels the pod manager would hold; helpers wait for a status
//! report, make a container exit and read what was called. The tests
//! run on tokio's paused clock, so back-offs and grace periods take no
//! real time.

use std::sync::Arc;
use std::time::Duration;

use skiff_proto::node::NodeEvent;
use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::master_link::{event_channel, ConfigSource, StaticConfigSource, StatusReport};
use crate::pods::dns_policy::ServiceDiscovery;
use crate::pods::layout::PodLayout;
use crate::pods::sandbox::recording::RecordingSandbox;
use crate::runtime::recording::{Call, RecordingRuntime};
use crate::runtime::RuntimeEvent;

use super::{run, WorkerContext};

pub(super) struct Harness {
    pub(super) runtime: Arc<RecordingRuntime>,
    pub(super) sandbox: Arc<RecordingSandbox>,
    /// The ConfigMaps and Secrets the worker reads.
    pub(super) config: Arc<StaticConfigSource>,
    pub(super) desired: watch::Sender<Option<v1::Pod>>,
    pub(super) events: mpsc::Sender<RuntimeEvent>,
    pub(super) reports: mpsc::UnboundedReceiver<StatusReport>,
    /// The kubelet Events the worker sent.
    pub(super) node_events: mpsc::Receiver<NodeEvent>,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) dir: tempfile::TempDir,
}

/// Pod `default/web` (uid `uid1`) with one busybox container `main`.
pub(super) fn pod(policy: &str) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid1".into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            restart_policy: policy.into(),
            termination_grace_period_seconds: Some(1),
            containers: vec![v1::Container {
                name: "main".into(),
                image: "busybox:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn spawn_worker(pod: v1::Pod, runtime: RecordingRuntime) -> Harness {
    spawn_worker_with(pod, runtime, RecordingSandbox::default())
}

pub(super) fn spawn_worker_with(
    pod: v1::Pod,
    runtime: RecordingRuntime,
    sandbox: RecordingSandbox,
) -> Harness {
    spawn_worker_reading(pod, runtime, sandbox, StaticConfigSource::default())
}

/// A worker whose pod reads its ConfigMaps and Secrets from `config`.
pub(super) fn spawn_worker_reading(
    pod: v1::Pod,
    runtime: RecordingRuntime,
    sandbox: RecordingSandbox,
    config: StaticConfigSource,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(runtime);
    let sandbox = Arc::new(sandbox);
    let config = Arc::new(config);
    let source: Arc<dyn ConfigSource> = config.clone();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let metrics = crate::metrics::AgentMetrics::default();
    let (events, node_events) = event_channel(metrics.events_dropped.clone());
    let ctx = WorkerContext {
        runtime: runtime.clone(),
        sandbox: sandbox.clone(),
        layout: Arc::new(PodLayout::new(dir.path())),
        reports: reports_tx,
        host_ip: "10.0.0.1".into(),
        metrics,
        events,
        config: source,
        node_allocatable: [("memory".to_owned(), "1Gi".to_owned())].into(),
        discovery: ServiceDiscovery {
            // Not this machine's.
            resolv_conf: dir.path().join("resolv.conf"),
            ..ServiceDiscovery::default()
        },
    };
    let (desired, desired_rx) = watch::channel(Some(pod));
    let (events, events_rx) = mpsc::channel(8);
    let task = tokio::spawn(run(ctx, desired_rx, events_rx, CancellationToken::new()));
    Harness {
        runtime,
        sandbox,
        config,
        desired,
        events,
        reports,
        node_events,
        task,
        dir,
    }
}

impl Harness {
    /// Reports until one satisfies `check`.
    pub(super) async fn until(
        &mut self,
        what: &str,
        check: impl Fn(&v1::PodStatus) -> bool,
    ) -> v1::PodStatus {
        let wait = async {
            loop {
                let r = self.reports.recv().await.expect("worker ended");
                if check(&r.status) {
                    return r.status;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(600), wait)
            .await
            .unwrap_or_else(|_| panic!("no report with {what}"))
    }

    /// Waits for the worker to end, as it does once its pod is gone.
    pub(super) async fn ended(&mut self) {
        tokio::time::timeout(Duration::from_secs(600), &mut self.task)
            .await
            .expect("the worker did not end")
            .unwrap();
    }

    /// Where the worker keeps the test pod's files.
    pub(super) fn pod_dir(&self) -> std::path::PathBuf {
        PodLayout::new(self.dir.path()).pod_dir(&pod("Always"))
    }

    pub(super) async fn exit(&self, code: u32) {
        self.exit_of("main", code).await;
    }

    /// Container `name` of the test pod exits with `code`.
    pub(super) async fn exit_of(&self, name: &str, code: u32) {
        let id = format!("uid1_{name}");
        self.runtime.exit(&id, code);
        self.events
            .send(RuntimeEvent::Exit { container_id: id })
            .await
            .unwrap();
    }

    /// The containers started so far, by name, in order.
    pub(super) fn started(&self) -> Vec<String> {
        self.runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start { id, .. } => Some(id.trim_start_matches("uid1_").to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The Events the worker sent so far, oldest first, as (reason,
    /// message).
    pub(super) fn events_sent(&mut self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let Ok(event) = self.node_events.try_recv() {
            events.push((event.reason, event.message));
        }
        events
    }

    /// The reasons of the Events the worker sent so far, oldest first.
    pub(super) fn event_reasons(&mut self) -> Vec<String> {
        let mut reasons = Vec::new();
        while let Ok(event) = self.node_events.try_recv() {
            reasons.push(event.reason);
        }
        reasons
    }

    pub(super) fn starts(&self) -> Vec<String> {
        self.runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start { restarts, .. } => Some(restarts),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn container(s: &v1::PodStatus) -> &v1::ContainerStatus {
    &s.container_statuses[0]
}

/// The status of init container `name`, if the report has it.
pub(super) fn init_status<'a>(s: &'a v1::PodStatus, name: &str) -> Option<&'a v1::ContainerStatus> {
    s.init_container_statuses.iter().find(|c| c.name == name)
}

/// Whether init container `name` shows as running.
pub(super) fn init_running(s: &v1::PodStatus, name: &str) -> bool {
    init_status(s, name)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|st| st.running.is_some())
}

/// The waiting reason init container `name` shows, if it waits.
pub(super) fn init_waiting(s: &v1::PodStatus, name: &str) -> String {
    init_status(s, name)
        .and_then(|c| c.state.as_ref())
        .and_then(|st| st.waiting.as_ref())
        .map(|w| w.reason.clone())
        .unwrap_or_default()
}

/// The terminated state init container `name` shows, if it ended.
pub(super) fn init_terminated(
    s: &v1::PodStatus,
    name: &str,
) -> Option<v1::ContainerStateTerminated> {
    init_status(s, name)
        .and_then(|c| c.state.as_ref())
        .and_then(|st| st.terminated.as_deref().cloned())
}

/// A busybox container `name`; a sidecar when `sidecar`.
pub(super) fn init_container(name: &str, sidecar: bool) -> v1::Container {
    v1::Container {
        name: name.into(),
        image: "busybox:1".into(),
        restart_policy: if sidecar {
            "Always".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

pub(super) fn running(s: &v1::PodStatus) -> bool {
    s.phase == "Running"
        && container(s)
            .state
            .as_ref()
            .is_some_and(|st| st.running.is_some())
}

pub(super) fn waiting_reason(s: &v1::PodStatus) -> String {
    container(s)
        .state
        .as_ref()
        .and_then(|st| st.waiting.as_ref())
        .map(|w| w.reason.clone())
        .unwrap_or_default()
}

pub(super) fn waiting_message(s: &v1::PodStatus) -> String {
    container(s)
        .state
        .as_ref()
        .and_then(|st| st.waiting.as_ref())
        .map(|w| w.message.clone())
        .unwrap_or_default()
}
