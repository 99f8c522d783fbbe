//! Leftovers: what stays on the node once pods and container runs are
//! over, removed by one idempotent step apart from the workers, as a
//! controller's cleanup is apart from its reconcile. A worker tears its pod
//! down when the pod is deleted, but an agent that dies halfway through,
//! or a pod deleted while no worker ran, leaves things behind; so after
//! each complete list of pods from the masters, and every 30 s after the
//! first, the pod manager looks for them ([`find`]) and removes them
//! ([`remove`]):
//!
//! - every container of a pod the node no longer runs, and that pod's
//!   pause process, address, network namespace, tmpfs volumes
//!   (unmounted), files, logs and cached spec, whichever of these are
//!   left;
//! - exited containers of a pod beyond the last one per container name,
//!   which the kubelet keeps for `logs -p`. skiff reuses one containerd
//!   container per pod container (`<pod-uid>_<name>`), so only leftovers of
//!   a crash or of another naming match, and a worker's own container is
//!   never touched;
//! - container logs of runs before the previous one
//!   ([`super::layout::stale_logs`]).
//!
//! What goes is decided by the pure [`plan`] from what was found and which
//! pods are wanted; what is found is looked at before the wanted pods are,
//! so a pod that arrives meanwhile is never taken for a leftover.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::runtime::containers::{LABEL_CONTAINER, LABEL_POD_UID, LABEL_RESTARTS};
use crate::runtime::{ContainerRecord, ContainerRuntime, TaskState};

use super::layout::{stale_logs, PodLayout};
use super::sandbox::PodSandbox;
use super::volumes;
use super::worker::{container_id, stop_container, WorkerContext};

/// How long a leftover container that still runs gets between SIGTERM and
/// SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What is on the node: containers in this agent's containerd namespace,
/// pod directories, network namespace files and pause process files.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub containers: Vec<ContainerRecord>,
    pub pod_dirs: Vec<PodDir>,
    /// UIDs of the pods with a network namespace file.
    pub netns: Vec<String>,
    /// UIDs of the pods with a pause process file.
    pub pauses: Vec<String>,
}

/// A pod's directory under `pods/`, with its containers' log dirs.
#[derive(Debug, Clone)]
pub struct PodDir {
    pub uid: String,
    pub path: PathBuf,
    pub logs: Vec<LogDir>,
}

/// One container's log dir and the names of the files in it.
#[derive(Debug, Clone)]
pub struct LogDir {
    pub path: PathBuf,
    pub files: Vec<String>,
}

/// A pod the node no longer runs, with its directory if it has one left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GonePod {
    pub uid: String,
    pub dir: Option<PathBuf>,
}

/// What to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Containers to stop, if they run, and remove with their snapshots.
    pub containers: Vec<String>,
    /// Pods to unwire, with their pause processes, network namespaces,
    /// files and cached specs.
    pub pods: Vec<GonePod>,
    /// Log files of past runs.
    pub logs: Vec<PathBuf>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.pods.is_empty() && self.logs.is_empty()
    }
}

/// Names and paths of the entries of `dir`; none if it cannot be read.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .collect()
}

/// Looks at what is on the node.
pub async fn find<R: ContainerRuntime>(
    runtime: &R,
    layout: &PodLayout,
) -> crate::runtime::Result<Found> {
    let containers = runtime.list().await?;
    let mut pod_dirs = Vec::new();
    for (name, path) in entries(&layout.pods_dir()) {
        let Some(uid) = PodLayout::uid_of_pod_dir(&name) else {
            continue;
        };
        let logs = entries(&path)
            .into_iter()
            .filter(|(entry, dir)| entry != "etc" && dir.is_dir())
            .map(|(_, path)| LogDir {
                files: entries(&path).into_iter().map(|(file, _)| file).collect(),
                path,
            })
            .collect();
        pod_dirs.push(PodDir {
            uid: uid.to_string(),
            path,
            logs,
        });
    }
    let uids_in =
        |dir: PathBuf| -> Vec<String> { entries(&dir).into_iter().map(|(uid, _)| uid).collect() };
    Ok(Found {
        containers,
        pod_dirs,
        netns: uids_in(layout.netns_dir()),
        pauses: uids_in(layout.pause_dir()),
    })
}

/// What to remove of what was found, given the UIDs of the pods the node
/// runs (wanted by the masters, or still with a worker).
pub fn plan(wanted: &HashSet<String>, found: &Found) -> Plan {
    let mut plan = Plan::default();
    let mut gone: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    let mut runs: BTreeMap<(&str, &str), Vec<&ContainerRecord>> = BTreeMap::new();
    for c in &found.containers {
        let Some(uid) = c.labels.get(LABEL_POD_UID) else {
            // Not a pod's: not this agent's to judge.
            continue;
        };
        if !wanted.contains(uid) {
            plan.containers.push(c.id.clone());
            gone.entry(uid.clone()).or_default();
            continue;
        }
        let name = c.labels.get(LABEL_CONTAINER).map_or("", String::as_str);
        runs.entry((uid.as_str(), name)).or_default().push(c);
    }
    for ((uid, name), records) in runs {
        plan.containers.extend(past_runs(uid, name, records));
    }
    for dir in &found.pod_dirs {
        if !wanted.contains(&dir.uid) {
            gone.insert(dir.uid.clone(), Some(dir.path.clone()));
            continue;
        }
        for logs in &dir.logs {
            let stale = stale_logs(&logs.files);
            plan.logs
                .extend(stale.into_iter().map(|f| logs.path.join(f)));
        }
    }
    for uid in found.netns.iter().chain(&found.pauses) {
        if !wanted.contains(uid) {
            gone.entry(uid.clone()).or_default();
        }
    }
    plan.pods = gone
        .into_iter()
        .map(|(uid, dir)| GonePod { uid, dir })
        .collect();
    plan
}

/// The run a container was, by its restart count label.
fn run_number(c: &ContainerRecord) -> i64 {
    c.labels
        .get(LABEL_RESTARTS)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Of the containers of one container name of a wanted pod, the exited
/// ones that go: all but the newest, and never the worker's own.
fn past_runs(uid: &str, name: &str, mut records: Vec<&ContainerRecord>) -> Vec<String> {
    let own = container_id(uid, name);
    records.retain(|c| !matches!(c.state, TaskState::Running { .. }));
    // Newest first; at the same run, the worker's own first.
    let key = |c: &ContainerRecord| (run_number(c), c.id == own);
    records.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id)));
    records
        .into_iter()
        .skip(1)
        .filter(|c| c.id != own)
        .map(|c| c.id.clone())
        .collect()
}

/// Removes what `plan` names; a step that fails is logged and the rest
/// still done.
pub async fn remove<R: ContainerRuntime, S: PodSandbox>(ctx: WorkerContext<R, S>, plan: Plan) {
    for id in &plan.containers {
        tracing::info!(container = %id, "removing a leftover container");
        stop_container(ctx.runtime.as_ref(), id, STOP_GRACE).await;
        if let Err(e) = ctx.runtime.remove(id).await {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
        }
    }
    for pod in &plan.pods {
        tracing::info!(pod_uid = %pod.uid, "removing what is left of a pod gone from this node");
        let pause_file = ctx.layout.pause_file(&pod.uid);
        if let Err(e) = ctx.sandbox.remove_pid_namespace(&pod.uid, &pause_file) {
            tracing::warn!(error = %e, "cannot stop the pod's pause process");
        }
        if let Err(e) = ctx.sandbox.detach(&pod.uid).await {
            // Each failed step was logged where it failed.
            tracing::debug!(error = %e, "pod not fully unwired from the network");
        }
        if let Err(e) = ctx.sandbox.remove_netns(&ctx.layout.netns(&pod.uid)) {
            tracing::warn!(error = %e, "cannot remove pod network namespace");
        }
        if let Some(dir) = &pod.dir {
            volumes::unmount_all(ctx.sandbox.as_ref(), dir);
            if let Err(e) = tokio::fs::remove_dir_all(dir).await {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove pod files");
            }
        }
        ctx.layout.forget_pod(&pod.uid).await;
    }
    for log in &plan.logs {
        if let Err(e) = tokio::fs::remove_file(log).await {
            tracing::debug!(log = %log.display(), error = %e, "cannot remove old log");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall};
    use crate::runtime::recording::{Call, RecordingRuntime};

    fn record(id: &str, uid: &str, name: &str, run: u32, state: TaskState) -> ContainerRecord {
        let labels: HashMap<String, String> = [
            (LABEL_POD_UID, uid.to_string()),
            (LABEL_CONTAINER, name.to_string()),
            (LABEL_RESTARTS, run.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ContainerRecord {
            id: id.into(),
            labels,
            image: "busybox:1".into(),
            state,
        }
    }

    fn exited() -> TaskState {
        TaskState::Exited {
            code: 1,
            finished_at: String::new(),
        }
    }

    fn running() -> TaskState {
        TaskState::Running { pid: 42 }
    }

    fn wanted(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn everything_of_a_pod_that_is_gone_goes() {
        let found = Found {
            containers: vec![
                record("u1_main", "u1", "main", 0, running()),
                record("u2_main", "u2", "main", 0, running()),
                record("u2_side", "u2", "side", 3, exited()),
            ],
            pod_dirs: vec![
                PodDir {
                    uid: "u1".into(),
                    path: "/d/pods/default_a_u1".into(),
                    logs: vec![],
                },
                PodDir {
                    uid: "u2".into(),
                    path: "/d/pods/default_b_u2".into(),
                    logs: vec![],
                },
            ],
            netns: vec!["u1".into(), "u2".into(), "u3".into()],
            pauses: vec!["u1".into(), "u4".into()],
        };
        let plan = plan(&wanted(&["u1"]), &found);
        assert_eq!(plan.containers, ["u2_main", "u2_side"]);
        assert_eq!(
            plan.pods,
            [
                GonePod {
                    uid: "u2".into(),
                    dir: Some("/d/pods/default_b_u2".into())
                },
                GonePod {
                    uid: "u3".into(),
                    dir: None
                },
                // Nothing left of it but its pause process.
                GonePod {
                    uid: "u4".into(),
                    dir: None
                },
            ]
        );
        assert!(plan.logs.is_empty());
    }

    #[test]
    fn the_last_exited_container_per_name_is_kept() {
        let found = Found {
            containers: vec![
                // The worker's own, newest: kept.
                record("u1_main", "u1", "main", 3, exited()),
                record("u1_main-r1", "u1", "main", 1, exited()),
                record("u1_main-r2", "u1", "main", 2, exited()),
                // A running one and the last exited one: both kept.
                record("u1_side", "u1", "side", 1, running()),
                record("u1_side-r0", "u1", "side", 0, exited()),
                // A leftover newer than the worker's own: the newest is
                // kept, and the worker's own is never removed.
                record("u1_init", "u1", "init", 0, exited()),
                record("u1_init-r5", "u1", "init", 5, exited()),
                record("u1_init-r4", "u1", "init", 4, exited()),
            ],
            ..Default::default()
        };
        let plan = plan(&wanted(&["u1"]), &found);
        assert_eq!(plan.containers, ["u1_init-r4", "u1_main-r2", "u1_main-r1"]);
        assert!(plan.pods.is_empty());
    }

    #[test]
    fn logs_of_runs_before_the_previous_go() {
        let logs = |dir: &str, files: &[&str]| LogDir {
            path: PathBuf::from(dir),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        let found = Found {
            pod_dirs: vec![PodDir {
                uid: "u1".into(),
                path: "/d/pods/default_a_u1".into(),
                logs: vec![
                    logs("/d/pods/default_a_u1/main", &["0.log", "1.log", "2.log"]),
                    logs("/d/pods/default_a_u1/side", &["4.log"]),
                ],
            }],
            ..Default::default()
        };
        let plan = plan(&wanted(&["u1"]), &found);
        let expected = PathBuf::from("/d/pods/default_a_u1/main/0.log");
        assert_eq!(plan.logs, [expected]);
        assert!(plan.pods.is_empty() && plan.containers.is_empty());
    }

    #[tokio::test]
    async fn a_sweep_finds_and_removes_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Arc::new(PodLayout::new(dir.path()));
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_container(record("gone_main", "gone", "main", 0, running()));
        runtime.add_container(record("kept_main", "kept", "main", 2, running()));
        let gone_dir = layout.pod_dir_for("default", "old", "gone");
        std::fs::create_dir_all(gone_dir.join("main")).unwrap();
        std::fs::write(gone_dir.join("main/0.log"), "bye\n").unwrap();
        let kept_logs = layout.pod_dir_for("default", "web", "kept").join("main");
        std::fs::create_dir_all(&kept_logs).unwrap();
        for run in ["0.log", "1.log", "2.log"] {
            std::fs::write(kept_logs.join(run), "hi\n").unwrap();
        }
        std::fs::create_dir_all(layout.netns_dir()).unwrap();
        std::fs::write(layout.netns("gone"), "").unwrap();
        std::fs::create_dir_all(layout.pause_dir()).unwrap();
        std::fs::write(layout.pause_file("gone"), "4000\n").unwrap();

        let found = find(runtime.as_ref(), &layout).await.unwrap();
        let to_remove = plan(&wanted(&["kept"]), &found);
        let sandbox = Arc::new(RecordingSandbox::default());
        let (reports, _reports_rx) = mpsc::unbounded_channel();
        let metrics = crate::metrics::AgentMetrics::default();
        let dropped = metrics.events_dropped.clone();
        let (events, _events_rx) = crate::master_link::event_channel(dropped);
        let ctx = WorkerContext {
            runtime: runtime.clone(),
            sandbox: sandbox.clone(),
            layout: layout.clone(),
            reports,
            host_ip: "10.0.0.1".into(),
            metrics,
            events,
            config: Arc::new(crate::master_link::StaticConfigSource::default()),
            node_allocatable: Default::default(),
            discovery: crate::pods::dns_policy::ServiceDiscovery::default(),
        };
        remove(ctx, to_remove).await;

        let calls = runtime.calls();
        assert_eq!(
            calls,
            [
                Call::Signal {
                    id: "gone_main".into(),
                    signal: 15
                },
                Call::Remove("gone_main".into()),
            ]
        );
        assert_eq!(
            sandbox.calls(),
            [
                SandboxCall::RemovePidNamespace {
                    uid: "gone".into(),
                    pause_file: layout.pause_file("gone"),
                },
                SandboxCall::Detach("gone".into()),
                SandboxCall::RemoveNetns(layout.netns("gone")),
            ]
        );
        assert!(!gone_dir.exists());
        assert!(!kept_logs.join("0.log").exists());
        assert!(kept_logs.join("1.log").exists());
        assert!(kept_logs.join("2.log").exists());
        // Nothing else is left to do.
        let found = find(runtime.as_ref(), &layout).await.unwrap();
        let again = plan(&wanted(&["kept"]), &found);
        assert_eq!(
            again.pods.len(),
            1,
            "the fake leaves the netns and pause files"
        );
        assert!(again.containers.is_empty() && again.logs.is_empty());
    }
}
