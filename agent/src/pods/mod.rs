//! The pod manager: the agent's view of which pods should run here, and
//! one [`worker`] per pod that makes it so. Desired pods come from the
//! master's watch (and, at start, from the specs cached on disk, so restart
//! policies keep applying while no master answers). containerd's task
//! events are routed to the worker owning the container. After each
//! complete list from the master, pods the master no longer has are torn
//! down; then, and every 30 s from then on, what is left of pods and runs
//! that are over is removed ([`leftovers`]). Container logs are rotated
//! every 30 s. Workers reach containerd through
//! [`crate::runtime::ContainerRuntime`], the kernel side of a pod through
//! [`sandbox::PodSandbox`], and the ConfigMaps and Secrets of its
//! environment ([`env`]), volumes ([`volumes`]) and image pulls
//! ([`pull_secrets`]) through [`crate::master_link::ConfigSource`]. The images the pods name are what
//! image garbage collection must keep ([`wanted_images`]). What a pod's
//! containers find Services by, its resolv.conf ([`dns_policy`]) and its
//! Service variables ([`service_env`]), comes from this node's cluster DNS
//! and its index of Services ([`crate::dns`]).

pub mod backoff;
pub mod dns_policy;
pub mod downward_api;
pub mod env;
pub mod http_get;
pub mod layout;
pub mod leftovers;
pub mod lifecycle_hooks;
pub mod pod_address;
pub mod pod_config;
pub mod probes;
pub mod pull_secrets;
pub mod sandbox;
pub mod security_context;
pub mod service_env;
pub mod status;
pub mod tcp_socket;
#[cfg(test)]
pub(crate) mod test_http_server;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skiff_proto::v1;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::master_link::Desired;
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
    // The pods the masters (or, until they answer, the cached specs) want.
    let mut wanted: HashSet<String> = HashSet::new();
    for pod in ctx.layout.cached_pods() {
        wanted.insert(uid_of(&pod));
        upsert(&ctx, &mut workers, pod, &shutdown).await;
    }
    let mut housekeeping = tokio::time::interval(Duration::from_secs(30));
    // Leftovers are looked for once the masters' list is known.
    let mut synced = false;
    let mut sweeping: Option<JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = desired.recv() => match change {
                None => return,
                Some(Desired::Upsert(pod)) => {
                    wanted.insert(uid_of(&pod));
                    upsert(&ctx, &mut workers, *pod, &shutdown).await;
                }
                Some(Desired::Delete(uid)) => {
                    if let Some(w) = workers.get(&uid) {
                        w.desired.send_replace(None);
                    }
                    ctx.layout.forget_pod(&uid).await;
                    wanted.remove(&uid);
                }
                Some(Desired::Synced(uids)) => {
                    for (uid, w) in &workers {
                        if !uids.contains(uid) {
                            w.desired.send_replace(None);
                            ctx.layout.forget_pod(uid).await;
                        }
                    }
                    wanted = uids;
                    synced = true;
                    // Pods handed to their workers are theirs to tear down.
                    sweep(&ctx, &wanted, &workers, &mut sweeping).await;
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
                if synced {
                    sweep(&ctx, &wanted, &workers, &mut sweeping).await;
                }
            }
        }
    }
}

/// Looks for leftovers and starts removing them, unless the last sweep is
/// still at it. What is on the node is looked at first, so a pod that
/// arrives meanwhile is never taken for one; pods that are `wanted` or
/// still have a worker (tearing down, say) are left alone.
async fn sweep<R: ContainerRuntime, S: PodSandbox>(
    ctx: &WorkerContext<R, S>,
    wanted: &HashSet<String>,
    workers: &HashMap<String, WorkerHandle>,
    sweeping: &mut Option<JoinHandle<()>>,
) {
    if sweeping.as_ref().is_some_and(|s| !s.is_finished()) {
        return;
    }
    let found = match leftovers::find(ctx.runtime.as_ref(), &ctx.layout).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers to look for leftovers");
            return;
        }
    };
    let mut keep = wanted.clone();
    keep.extend(workers.keys().cloned());
    let plan = leftovers::plan(&keep, &found);
    if !plan.is_empty() {
        *sweeping = Some(tokio::spawn(leftovers::remove(ctx.clone(), plan)));
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
