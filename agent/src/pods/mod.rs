//! The pod manager: the agent's view of which pods should run here, and
//! one [`worker`] per pod that makes it so. Desired pods come from the
//! master's watch (and, at start, from the specs cached on disk, so restart
//! policies keep applying while no master answers). containerd's task
//! events are routed to the worker owning the container. After each
//! complete list from the master, pods the master no longer has are torn
//! down, and containers no pod claims are removed. Workers reach containerd
//! through [`crate::runtime::ContainerRuntime`] and the kernel side of a pod
//! through [`sandbox::PodSandbox`]. The images the pods name are what image
//! garbage collection must keep ([`wanted_images`]).

pub mod backoff;
pub mod layout;
pub mod probes;
pub mod sandbox;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::master_link::Desired;
use crate::runtime::containers::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use crate::runtime::images::normalize;
use crate::runtime::{ContainerRuntime, RuntimeEvent};

use self::layout::PodLayout;
use self::sandbox::PodSandbox;

pub use worker::WorkerContext;

struct WorkerHandle {
    desired: watch::Sender<Option<v1::Pod>>,
    events: mpsc::Sender<RuntimeEvent>,
    task: JoinHandle<()>,
}

fn uid_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// Runs the manager until `shutdown`; pods keep running after it.
pub async fn run<R: ContainerRuntime, S: PodSandbox>(
    ctx: WorkerContext<R, S>,
    mut desired: mpsc::Receiver<Desired>,
    mut runtime_events: mpsc::Receiver<RuntimeEvent>,
    shutdown: CancellationToken,
) {
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    for pod in ctx.layout.cached_pods() {
        upsert(&ctx, &mut workers, pod, &shutdown).await;
    }
    let mut housekeeping = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = desired.recv() => match change {
                None => return,
                Some(Desired::Upsert(pod)) => upsert(&ctx, &mut workers, *pod, &shutdown).await,
                Some(Desired::Delete(uid)) => {
                    if let Some(w) = workers.get(&uid) {
                        w.desired.send_replace(None);
                    }
                    ctx.layout.forget_pod(&uid).await;
                }
                Some(Desired::Synced(uids)) => {
                    for (uid, w) in &workers {
                        if !uids.contains(uid) {
                            w.desired.send_replace(None);
                            ctx.layout.forget_pod(uid).await;
                        }
                    }
                    // Pods handed to their workers are theirs to tear down.
                    let mut keep = uids;
                    keep.extend(workers.keys().cloned());
                    tokio::spawn(remove_orphans(ctx.clone(), keep));
                }
            },
            event = runtime_events.recv() => {
                let Some(event) = event else { continue };
                let id = match &event {
                    RuntimeEvent::Exit { container_id } | RuntimeEvent::Oom { container_id } => container_id,
                };
                let uid = id.split_once('_').map(|(u, _)| u).unwrap_or(id);
                if let Some(w) = workers.get(uid) {
                    let _ = w.events.try_send(event);
                }
            }
            _ = housekeeping.tick() => {
                workers.retain(|_, w| !w.task.is_finished());
                let layout = ctx.layout.clone();
                let _ = tokio::task::spawn_blocking(move || layout.rotate_logs(layout::LOG_MAX_BYTES)).await;
            }
        }
    }
}

async fn upsert<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    workers: &mut HashMap<String, WorkerHandle>,
    pod: v1::Pod,
    shutdown: &CancellationToken,
) {
    let uid = uid_of(&pod);
    if uid.is_empty() {
        return;
    }
    if let Err(e) = ctx.layout.cache_pod(&pod).await {
        tracing::warn!(error = %e, "cannot cache pod spec");
    }
    if let Some(w) = workers.get(&uid).filter(|w| !w.task.is_finished()) {
        w.desired.send_replace(Some(pod));
        return;
    }
    let (desired_tx, desired_rx) = watch::channel(Some(pod));
    let (events_tx, events_rx) = mpsc::channel(16);
    let task = tokio::spawn(worker::run(
        ctx.clone(),
        desired_rx,
        events_rx,
        shutdown.clone(),
    ));
    workers.insert(
        uid,
        WorkerHandle {
            desired: desired_tx,
            events: events_tx,
            task,
        },
    );
}

/// Removes containers whose pod is neither wanted nor owned by a worker.
async fn remove_orphans<R: ContainerRuntime, S: PodSandbox>(
    ctx: WorkerContext<R, S>,
    wanted: HashSet<String>,
) {
    let containers = match ctx.runtime.list().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers");
            return;
        }
    };
    let mut pods_removed = HashSet::new();
    for c in containers {
        let Some(uid) = c.labels.get(LABEL_POD_UID) else {
            continue;
        };
        if wanted.contains(uid) {
            continue;
        }
        tracing::info!(container = %c.id, "removing container of a pod that no longer exists");
        worker::stop_container(ctx.runtime.as_ref(), &c.id, Duration::from_secs(10)).await;
        if let Err(e) = ctx.runtime.remove(&c.id).await {
            tracing::warn!(container = %c.id, error = %e, "cannot remove container");
        }
        if pods_removed.insert(uid.clone()) {
            let pod = v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    uid: uid.clone(),
                    name: c.labels.get(LABEL_POD_NAME).cloned().unwrap_or_default(),
                    namespace: c
                        .labels
                        .get(LABEL_POD_NAMESPACE)
                        .cloned()
                        .unwrap_or_default(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if let Err(e) = ctx.sandbox.detach(uid).await {
                // Each failed step was logged where it failed.
                tracing::debug!(error = %e, "pod not fully unwired from the network");
            }
            if let Err(e) = ctx.sandbox.remove_netns(&ctx.layout.netns(uid)) {
                tracing::warn!(error = %e, "cannot remove pod network namespace");
            }
            ctx.layout.remove_pod(&pod).await;
        }
    }
}

/// The images the pods this node should run name (as containerd names
/// them), from their cached specs: image garbage collection keeps them
/// even before a container uses them.
pub fn wanted_images(layout: &PodLayout) -> HashSet<String> {
    layout
        .cached_pods()
        .iter()
        .filter_map(|pod| pod.spec.as_ref())
        .flat_map(|spec| spec.containers.iter().chain(&spec.init_containers))
        .filter_map(|c| normalize(&c.image).ok())
        .collect()
}
