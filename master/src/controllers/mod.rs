//! Controllers: level-triggered, idempotent reconcilers that run on the
//! leader only. Each one is started after the leader has confirmed it is
//! caught up, reads the leader's replica through the object cache (always
//! complete and current, so there is nothing to sync), is driven by the
//! store's change notifications plus its own requeues, and reconciles
//! different objects concurrently but one object at a time.
//! They stop when leadership is lost; the next leader starts its own.
//!
//! - [`replicaset`]: keeps `replicas` pods per ReplicaSet.
//! - [`deployment`]: rolls ReplicaSets for Deployments.
//! - [`daemonset`]: one pod per node that should run one, rolled by
//!   revision.
//! - [`statefulset`]: members with stable names, hostnames and claims,
//!   created and removed in order, rolled by revision.
//! - [`disruption`]: keeps PodDisruptionBudgets' status.
//! - [`job`]: runs Jobs' pods to completion, counting each exactly once.
//! - [`cron_job`]: creates Jobs on CronJobs' schedules.
//! - [`horizontal_autoscaler`]: scales Deployments, ReplicaSets and
//!   StatefulSets on their pods' CPU and memory usage
//!   (HorizontalPodAutoscalers).
//! - [`endpoints`]: lists the ready pods each Service selects.
//! - [`endpoint_slices`]: the same pods as EndpointSlices (with their
//!   conditions), at most 100 to a slice.
//! - [`garbage_collector`]: deletes what lost its owner or its namespace.
//! - [`pod_gc`]: deletes the pods of nodes that are gone, and finished pods
//!   beyond a threshold (Kubernetes' PodGC).
//! - [`custom_resources`]: CustomResourceDefinitions' status
//!   (Established, NamesAccepted), and their objects deleted with them.
//! - [`node_ipam`]: gives every node its pod subnet.
//! - [`service_lb`]: the built-in load balancer (k3s' ServiceLB, without
//!   pods): LoadBalancer Services' ingress is their eligible nodes.
//! - [`persistent_volumes`]: binds claims to volumes, provisions
//!   `local-path` volumes on the node of a claim's first pod, reclaims
//!   released ones, and protects claims and volumes in use.
//! - [`default_storage_class`]: the built-in `local-path` StorageClass, not
//!   a reconciler: a periodic loop.
//! - [`cluster_role_aggregation`]: the `rules` of ClusterRoles with an
//!   `aggregationRule` (`admin`, `edit`, `view`) from the ClusterRoles it
//!   selects.
//! - [`default_rbac_policy`]: kube-apiserver's default ClusterRoles and
//!   ClusterRoleBindings, created when missing and restored, not a
//!   reconciler: a periodic loop.
//! - [`kubernetes_service`]: `default/kubernetes` (its Endpoints are the
//!   masters) and `kube-system/kube-dns`, not a reconciler: a loop on the
//!   Raft membership.
//! - [`node_port_backfill`]: nodePorts and health check ports for Services
//!   stored before skiff gave them, once per leadership.
//! - [`service_accounts`]: every namespace's `default` ServiceAccount.
//! - [`root_ca_publisher`]: every namespace's `kube-root-ca.crt` ConfigMap.
//! - [`service_account_key`]: the cluster's service account signing key
//!   (one, sealed, in a Secret), not a reconciler: a periodic loop.
//!
//! What the workload controllers share: [`pod_claims`] (which pods a
//! ReplicaSet, DaemonSet or StatefulSet counts as its own: adoption and
//! release by ControllerRef), [`revisions`] (DaemonSets' and
//! StatefulSets' ControllerRevisions) and [`workload_spec`] (their specs
//! and statuses as generic objects).

pub mod cluster_role_aggregation;
pub mod context;
pub mod cron_job;
pub mod custom_resources;
pub mod daemonset;
pub mod default_rbac_policy;
pub mod default_storage_class;
pub mod deployment;
pub mod disruption;
pub mod endpoint_slices;
pub mod endpoints;
pub mod garbage_collector;
pub mod horizontal_autoscaler;
pub mod job;
pub mod kubernetes_service;
pub mod node_ipam;
pub mod node_port_backfill;
pub mod persistent_volumes;
pub mod pod_claims;
pub mod pod_gc;
pub mod queue;
pub mod recording;
pub mod replicaset;
pub mod revisions;
pub mod root_ca_publisher;
pub mod service_account_key;
pub mod service_accounts;
pub mod service_lb;
pub mod statefulset;
pub mod workload_spec;

pub use context::{Context, ObjectReads, ObjectWrites};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::Object;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::state_machine::{
    KindFilter, Notification, StateMachineError, StoredEvent, Subscription,
};
use crate::writer;
use queue::WorkQueue;
use skiff_objects::{Kind, ObjectExt};

/// Names one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn of(object: &Object) -> Option<ObjectKey> {
        let meta = object.meta();
        Some(ObjectKey::new(
            object.kind().ok()?,
            &meta.namespace,
            &meta.name,
        ))
    }
}

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    Done,
    /// Look again after this long even if nothing changes.
    RequeueAfter(Duration),
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StateMachineError),
    #[error(transparent)]
    Write(#[from] writer::Error),
    /// A spawned write task panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The store answered a write with an object of another kind.
    #[error("the store answered a {kind} write with another kind of object")]
    WrongKind { kind: &'static str },
    /// The service account signing key could not be made.
    #[error(transparent)]
    SigningKey(#[from] crate::security::service_account_key::SigningKeyError),
}

impl ReconcileError {
    /// A write lost an optimistic-concurrency race: normal, retried.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ReconcileError::Write(e) if e.is_conflict())
    }
}

/// What to do after a failed reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Again after a backoff that doubles with each failure of the object
    /// in a row (100 ms up to 30 s).
    Backoff,
    /// Again after exactly this long.
    After(Duration),
}

/// A controller in reconcile style.
pub trait Reconciler: Send + Sync + 'static {
    /// For logs.
    const NAME: &'static str;
    /// The kind of the objects it reconciles.
    const KIND: Kind;
    /// How many objects may reconcile at once. 1 for a controller whose
    /// reconciles share a decision across objects (node IPAM hands out
    /// subnets from one pool).
    const CONCURRENCY: usize = CONCURRENT_RECONCILES;
    /// The changes [`Reconciler::keys_for`] is given: those of the kinds
    /// it can map to keys. Every change unless the reconciler names them,
    /// so that a controller is not woken by writes it ignores.
    const WATCHES: KindFilter = KindFilter::ALL;
    /// The keys to look at after a change to `object`.
    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey>;
    /// Whether `object`, of [`Reconciler::KIND`] and as it is now, can need
    /// a reconcile; the periodic resync queues only those. True unless the
    /// reconciler knows that such an object reconciles to nothing (a
    /// Service without a selector, to the Endpoints controller).
    fn may_act_on(&self, _object: &Object) -> bool {
        true
    }
    /// Brings the world in line with one object. Idempotent.
    fn reconcile(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Action, ReconcileError>> + Send;
    /// The error policy: when to look at `key` again after `error`.
    fn error_policy(&self, _key: &ObjectKey, _error: &ReconcileError) -> Retry {
        Retry::Backoff
    }
}

/// How many objects one controller reconciles at the same time, unless it
/// says fewer ([`Reconciler::CONCURRENCY`]).
pub const CONCURRENT_RECONCILES: usize = 8;

/// Runs a reconciler until `shutdown`. Different objects reconcile
/// concurrently (up to [`Reconciler::CONCURRENCY`]), so one slow object does
/// not hold up the rest; one object never has two reconciles at once: a
/// change seen while it is being reconciled queues it again for after.
pub async fn run<R: Reconciler>(
    reconciler: R,
    store: Arc<dyn ObjectReads>,
    shutdown: CancellationToken,
) {
    let reconciler = Arc::new(reconciler);
    let mut live = store.subscribe_to(R::WATCHES);
    let mut queue = WorkQueue::default();
    resync(&*reconciler, &*store, &mut queue);
    tracing::info!(
        controller = R::NAME,
        queued = queue.len(),
        "controller started"
    );
    let mut periodic = tokio::time::interval(Duration::from_secs(60));
    periodic.tick().await;
    let mut running = tokio::task::JoinSet::new();
    let mut running_keys: HashMap<tokio::task::Id, ObjectKey> = HashMap::new();
    let mut busy: HashSet<ObjectKey> = HashSet::new();
    let mut changed_while_busy: HashSet<ObjectKey> = HashSet::new();
    'serving: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            notification = live.recv() => {
                // A write batch applies as a burst of notifications: take
                // what has already arrived in this wake-up rather than one
                // per pass through the select.
                let mut next = Some(notification);
                let mut taken = 0;
                while let Some(notification) = next.take() {
                    match notification {
                        Ok(Notification::Event(event, object)) => {
                            for key in reconciler.keys_for(&event, &object) {
                                queue.add(key);
                            }
                        }
                        Ok(Notification::Reset { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            resync(&*reconciler, &*store, &mut queue);
                        }
                        Err(broadcast::error::RecvError::Closed) => break 'serving,
                    }
                    taken += 1;
                    if taken < NOTIFICATIONS_PER_WAKE {
                        next = already_arrived(&mut live);
                    }
                }
            }
            _ = periodic.tick() => resync(&*reconciler, &*store, &mut queue),
            key = queue.next(), if running.len() < R::CONCURRENCY.max(1) => {
                if busy.contains(&key) {
                    changed_while_busy.insert(key);
                    continue;
                }
                busy.insert(key.clone());
                let task_key = key.clone();
                let task_reconciler = reconciler.clone();
                let handle = running.spawn(async move {
                    task_reconciler.reconcile(&task_key).await
                });
                running_keys.insert(handle.id(), key);
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, Some(outcome)),
                    Err(e) => (e.id(), None),
                };
                let Some(key) = running_keys.remove(&id) else { continue };
                busy.remove(&key);
                match outcome {
                    Some(Ok(Action::Done)) => queue.forget(&key),
                    Some(Ok(Action::RequeueAfter(delay))) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), delay);
                    }
                    Some(Err(e)) => {
                        if e.is_conflict() {
                            // Someone wrote first; the next look sees it.
                            tracing::debug!(controller = R::NAME, object = %key.name, error = %e, "conflict; retrying");
                        } else {
                            tracing::warn!(controller = R::NAME, object = %key.name, namespace = %key.namespace, error = %e, "reconcile failed; retrying");
                        }
                        match reconciler.error_policy(&key, &e) {
                            Retry::Backoff => queue.retry(key.clone()),
                            Retry::After(delay) => queue.add_after(key.clone(), delay),
                        }
                    }
                    None => {
                        tracing::error!(controller = R::NAME, object = %key.name, namespace = %key.namespace, "reconcile panicked; retrying");
                        queue.retry(key.clone());
                    }
                }
                if changed_while_busy.remove(&key) {
                    queue.add(key);
                }
            }
        }
    }
    running.shutdown().await;
    tracing::info!(controller = R::NAME, "controller stopped");
}

/// Most notifications one controller takes from the store in one wake-up
/// before it looks at its other work again.
const NOTIFICATIONS_PER_WAKE: usize = 256;

/// The next notification if it has already arrived, as `recv` would
/// answer it; `None` when there is none yet.
fn already_arrived(
    live: &mut Subscription,
) -> Option<Result<Notification, broadcast::error::RecvError>> {
    match live.try_recv() {
        Ok(notification) => Some(Ok(notification)),
        Err(broadcast::error::TryRecvError::Empty) => None,
        Err(broadcast::error::TryRecvError::Lagged(n)) => {
            Some(Err(broadcast::error::RecvError::Lagged(n)))
        }
        Err(broadcast::error::TryRecvError::Closed) => {
            Some(Err(broadcast::error::RecvError::Closed))
        }
    }
}

/// Queues every object of the reconciler's kind that it may act on: the
/// level-triggered safety net behind the change notifications.
fn resync<R: Reconciler>(reconciler: &R, store: &dyn ObjectReads, queue: &mut WorkQueue) {
    match store.list(R::KIND, None) {
        Ok((objects, _)) => {
            let keys = objects
                .iter()
                .filter(|o| reconciler.may_act_on(o))
                .filter_map(|o| ObjectKey::of(o));
            for key in keys {
                queue.add(key);
            }
        }
        Err(e) => tracing::error!(controller = R::NAME, error = %e, "cannot list for resync"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::RecordingObjects;
    use skiff_objects::IntoObject;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::sync::{mpsc, oneshot};

    /// Reports each reconcile's start and waits, for keys that have a gate,
    /// until the test opens it; fails `failing` keys once.
    struct Gated {
        started: mpsc::UnboundedSender<String>,
        gates: Mutex<HashMap<String, oneshot::Receiver<()>>>,
        failing: Mutex<HashMap<String, Retry>>,
    }

    impl Reconciler for Gated {
        const NAME: &'static str = "gated";
        const KIND: Kind = Kind::Pod;

        fn keys_for(&self, _event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
            ObjectKey::of(object).into_iter().collect()
        }

        async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
            let _ = self.started.send(key.name.clone());
            let gate = self.gates.lock().unwrap().remove(&key.name);
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            if self.failing.lock().unwrap().contains_key(&key.name) {
                return Err(ReconcileError::WrongKind { kind: "Pod" });
            }
            Ok(Action::Done)
        }

        fn error_policy(&self, key: &ObjectKey, _error: &ReconcileError) -> Retry {
            self.failing
                .lock()
                .unwrap()
                .remove(&key.name)
                .unwrap_or(Retry::Backoff)
        }
    }

    fn pod(name: &str, label: &str) -> Object {
        skiff_proto::v1::Pod {
            metadata: Some(skiff_proto::v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("v".to_owned(), label.to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    struct Harness {
        objects: Arc<RecordingObjects>,
        started: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    }

    fn start(
        names: &[&str],
        gated: Vec<(&str, oneshot::Receiver<()>)>,
        failing: Vec<(&str, Retry)>,
    ) -> Harness {
        let objects = RecordingObjects::new();
        for name in names {
            objects.seed(pod(name, "1"));
        }
        let (tx, started) = mpsc::unbounded_channel();
        let reconciler = Gated {
            started: tx,
            gates: Mutex::new(gated.into_iter().map(|(k, g)| (k.to_owned(), g)).collect()),
            failing: Mutex::new(
                failing
                    .into_iter()
                    .map(|(k, r)| (k.to_owned(), r))
                    .collect(),
            ),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(run(reconciler, objects.clone(), shutdown.clone()));
        Harness {
            objects,
            started,
            shutdown,
        }
    }

    async fn next_start(h: &mut Harness) -> String {
        tokio::time::timeout(Duration::from_secs(5), h.started.recv())
            .await
            .expect("a reconcile within 5 s")
            .expect("controller running")
    }

    async fn no_start_within(h: &mut Harness, wait: Duration) {
        if let Ok(Some(name)) = tokio::time::timeout(wait, h.started.recv()).await {
            panic!("unexpected reconcile of {name}");
        }
    }

    /// Acts only on pods whose names start with "keep".
    struct Picky;

    impl Reconciler for Picky {
        const NAME: &'static str = "picky";
        const KIND: Kind = Kind::Pod;

        fn keys_for(&self, _event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
            ObjectKey::of(object).into_iter().collect()
        }

        fn may_act_on(&self, object: &Object) -> bool {
            object.meta().name.starts_with("keep")
        }

        async fn reconcile(&self, _key: &ObjectKey) -> Result<Action, ReconcileError> {
            Ok(Action::Done)
        }
    }

    #[tokio::test]
    async fn resync_queues_only_the_objects_the_reconciler_may_act_on() {
        let objects = RecordingObjects::new();
        for name in ["keep-a", "skip-b", "keep-c", "skip-d"] {
            objects.seed_yaml(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
            ));
        }
        let mut queue = WorkQueue::default();
        resync(&Picky, &*objects, &mut queue);
        let mut queued = Vec::new();
        while !queue.is_empty() {
            queued.push(queue.next().await.name);
        }
        queued.sort();
        assert_eq!(queued, ["keep-a", "keep-c"]);
    }

    #[tokio::test]
    async fn a_slow_object_does_not_hold_up_the_others() {
        let (open_a, gate_a) = oneshot::channel();
        let mut h = start(&["a", "b", "c"], vec![("a", gate_a)], vec![]);
        let mut seen = vec![
            next_start(&mut h).await,
            next_start(&mut h).await,
            next_start(&mut h).await,
        ];
        seen.sort();
        // b and c ran although a has not finished.
        assert_eq!(seen, ["a", "b", "c"]);
        open_a.send(()).unwrap();
        h.shutdown.cancel();
    }

    #[tokio::test]
    async fn one_object_never_has_two_reconciles_at_once() {
        let (open_a, gate_a) = oneshot::channel();
        let mut h = start(&["a"], vec![("a", gate_a)], vec![]);
        assert_eq!(next_start(&mut h).await, "a");
        // a changes while its reconcile is still running.
        let mut changed = h.objects.objects(Kind::Pod).remove(0);
        changed
            .meta_mut()
            .unwrap()
            .labels
            .insert("v".into(), "2".into());
        h.objects
            .write(crate::controllers::recording::WriteOp::Update, changed)
            .unwrap();
        no_start_within(&mut h, Duration::from_millis(200)).await;
        // Once it finishes, the change is looked at.
        open_a.send(()).unwrap();
        assert_eq!(next_start(&mut h).await, "a");
        h.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_burst_of_changes_longer_than_one_wake_up_reconciles_every_object() {
        let mut h = start(&[], vec![], vec![]);
        // Written at once, without yielding: the controller finds them all
        // waiting, more than it takes in one wake-up.
        let count = NOTIFICATIONS_PER_WAKE * 3 + 7;
        for i in 0..count {
            h.objects
                .write(
                    crate::controllers::recording::WriteOp::Create,
                    pod(&format!("p{i}"), "1"),
                )
                .unwrap();
        }
        let mut seen = HashSet::new();
        while seen.len() < count {
            seen.insert(next_start(&mut h).await);
        }
        assert!((0..count).all(|i| seen.contains(&format!("p{i}"))));
        h.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_policy_decides_when_a_failed_object_is_tried_again() {
        let mut h = start(
            &["a"],
            vec![],
            vec![("a", Retry::After(Duration::from_secs(30)))],
        );
        assert_eq!(next_start(&mut h).await, "a");
        let failed_at = tokio::time::Instant::now();
        // The clock is paused, so the 30 s pass at once.
        let again = tokio::time::timeout(Duration::from_secs(60), h.started.recv()).await;
        assert_eq!(again.unwrap().as_deref(), Some("a"));
        assert!(
            failed_at.elapsed() >= Duration::from_secs(30),
            "retried after {:?}",
            failed_at.elapsed()
        );
        h.shutdown.cancel();
    }
}
