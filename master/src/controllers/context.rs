//! What the leader's loops (controllers, scheduler, node lifecycle,
//! auto-deploy) see of the cluster: reads of objects and their change
//! notifications ([`ObjectReads`]), validated writes ([`ObjectWrites`]),
//! the Events they record ([`EventRecorder`]), and the nodes' and pods'
//! resource usage ([`ResourceMetrics`], what autoscaling reads). Narrow
//! traits, so that the same reconcile code runs against the leader's replica,
//! `ObjectWriter` and `EventStore` in production and against
//! [`super::recording::RecordingObjects`] in unit tests (or with Events
//! not recorded at all).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use skiff_objects::Ipv4Net;
use skiff_proto::api::Object;
use skiff_proto::v1::LabelSelector;
use tokio::sync::broadcast;

use crate::events::EventRecorder;
use crate::resource_metrics::ResourceMetrics;
use crate::store::state_machine::{
    KindFilter, Notification, ObjectStore, StateMachineError, Subscription,
};
use crate::writer::{self, ObjectWriter};
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::rbac::RoleView;
use skiff_objects::{Kind, ObjectExt};

/// Reads of the (complete, local) object store. Objects are shared, not
/// copied: clone one only to change it.
pub trait ObjectReads: Send + Sync {
    /// One object, if it exists.
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Object>>, StateMachineError>;
    /// Every object of a kind (in one namespace, or all), with the revision
    /// the list reflects.
    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Object>>, u64), StateMachineError>;
    /// The pods bound to `node` (`""`: the unbound ones).
    fn pods_on_node(&self, node: &str) -> Vec<Arc<Object>>;
    /// The names of the nodes pods are bound to, each once (Nodes that do
    /// not exist included), in no particular order.
    fn pod_nodes(&self) -> Vec<String>;
    /// How many pods have finished (Succeeded or Failed).
    fn finished_pod_count(&self) -> usize;
    /// The first `count` finished pods in the order pod garbage collection
    /// deletes them: evicted ones first, then the oldest.
    fn oldest_finished_pods(&self, count: usize) -> Vec<Arc<Object>>;
    /// Every object with an owner reference to `uid`.
    fn dependents_of(&self, uid: &str) -> Vec<Arc<Object>>;
    /// The Services in `namespace` whose selector matches `labels`.
    fn services_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>>;
    /// The objects of `kind` in `namespace` carrying every label of
    /// `labels` (none for an empty `labels`).
    fn select(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>>;
    /// The objects of `kind` in `namespace` that `selector` may select,
    /// from the label index where the selector allows it: those carrying
    /// its `matchLabels`, else those carrying a value of one of its `In`
    /// expressions (the one with the fewest values), else (nothing to look
    /// up) every one in the namespace, in name order. A superset: the
    /// caller matches the whole selector.
    fn selector_candidates(
        &self,
        kind: Kind,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Result<Vec<Arc<Object>>, StateMachineError> {
        if !selector.match_labels.is_empty() {
            return Ok(self.select(kind, namespace, &selector.match_labels));
        }
        let lookup = selector
            .match_expressions
            .iter()
            .filter(|e| e.operator == "In")
            .min_by_key(|e| e.values.len());
        let Some(lookup) = lookup else {
            return Ok(self.list(kind, Some(namespace))?.0);
        };
        let mut found: BTreeMap<String, Arc<Object>> = BTreeMap::new();
        for value in &lookup.values {
            let labels = BTreeMap::from([(lookup.key.clone(), value.clone())]);
            for object in self.select(kind, namespace, &labels) {
                found.insert(object.meta().name.clone(), object);
            }
        }
        Ok(found.into_values().collect())
    }
    /// The Nodes whose `spec.podCIDR` overlaps `subnet` (is it, lies inside
    /// it or contains it): each one's name and the subnet it holds.
    fn pod_cidr_holders(&self, subnet: Ipv4Net) -> Vec<(String, Ipv4Net)>;
    /// The pods of `namespace` whose volumes use the PersistentVolumeClaim
    /// `claim`.
    fn pods_using_claim(&self, namespace: &str, claim: &str) -> Vec<Arc<Object>>;
    /// The PersistentVolumes whose `spec.claimRef` names the claim
    /// `namespace`/`name` (whatever its uid): bound or reserved to it.
    fn volumes_for_claim(&self, namespace: &str, name: &str) -> Vec<Arc<Object>>;
    /// The PersistentVolumes of storage class `class` (`""`: none) without a
    /// claimRef: the only ones an unbound claim of that class may take.
    fn free_volumes(&self, class: &str) -> Vec<Arc<Object>>;
    /// The PersistentVolumeClaims asking for storage class `class` (`""`:
    /// none) that name no volume yet.
    fn unbound_claims(&self, class: &str) -> Vec<Arc<Object>>;
    /// The PodDisruptionBudgets of `namespace` whose selector selects a pod
    /// with `labels`.
    fn budgets_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>>;
    /// The ClusterRole `name`'s rules and `aggregationRule`, as read when
    /// it was stored (none if it does not exist).
    fn cluster_role_view(&self, name: &str) -> Result<Option<Arc<RoleView>>, StateMachineError>;
    /// The names of the ClusterRoles with an `aggregationRule` one of whose
    /// selectors selects a ClusterRole labelled `labels`, in name order.
    fn aggregating_cluster_roles(&self, labels: &BTreeMap<String, String>) -> Vec<String>;
    /// The store's current revision.
    fn revision(&self) -> u64;
    /// The custom kinds the store holds objects of, served or not (none
    /// unless the store says).
    fn custom_kinds(&self) -> Vec<Kind> {
        Vec::new()
    }
    /// Live change notifications.
    fn subscribe(&self) -> broadcast::Receiver<Notification>;
    /// Live notifications of the changes `filter` hears (and of resets);
    /// every change unless the store says otherwise.
    fn subscribe_to(&self, _filter: KindFilter) -> Subscription {
        Subscription::broadcast(self.subscribe())
    }
}

/// A write's outcome, boxed so that the trait can be used as an object.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = writer::Result<Object>> + Send + 'a>>;

/// Writes through the one write path.
pub trait ObjectWrites: Send + Sync {
    /// Creates an object (named, or named from `generateName`).
    fn create(&self, object: Object) -> WriteFuture<'_>;
    /// Creates an object a controller made from a template
    /// (`ObjectWriter::create_from_template`: while a master of an older
    /// release is in the cluster, without the fields its protobuf model
    /// has no place for); elsewhere, as `create`.
    fn create_from_template(&self, object: Object) -> WriteFuture<'_> {
        self.create(object)
    }
    /// Replaces metadata and spec; conditional on a set resourceVersion.
    fn update(&self, object: Object) -> WriteFuture<'_>;
    /// Replaces status only; conditional on a set resourceVersion.
    fn update_status(&self, object: Object) -> WriteFuture<'_>;
    /// Deletes an object as Kubernetes does: removed, or kept marked while
    /// finalizers, dependents or a pod's grace period hold it.
    fn delete_with<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        options: DeleteOptions,
    ) -> WriteFuture<'a>;
    /// Deletes an object with the default options; with a non-empty
    /// `resource_version`, only at it.
    fn delete<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        resource_version: &'a str,
    ) -> WriteFuture<'a> {
        let options = DeleteOptions::at_version(resource_version);
        self.delete_with(kind, namespace, name, options)
    }
}

impl ObjectReads for ObjectStore {
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Object>>, StateMachineError> {
        Ok(self.cache().get(kind, namespace, name))
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Object>>, u64), StateMachineError> {
        Ok(self.cache().list(kind, namespace))
    }

    fn pods_on_node(&self, node: &str) -> Vec<Arc<Object>> {
        self.cache().pods_on_node(node)
    }

    fn pod_nodes(&self) -> Vec<String> {
        self.cache().pod_nodes()
    }

    fn finished_pod_count(&self) -> usize {
        self.cache().finished_pod_count()
    }

    fn oldest_finished_pods(&self, count: usize) -> Vec<Arc<Object>> {
        self.cache().oldest_finished_pods(count)
    }

    fn dependents_of(&self, uid: &str) -> Vec<Arc<Object>> {
        self.cache().dependents_of(uid)
    }

    fn select(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        self.cache().select(kind, namespace, labels)
    }

    fn services_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        self.cache().services_selecting(namespace, labels)
    }

    fn pod_cidr_holders(&self, subnet: Ipv4Net) -> Vec<(String, Ipv4Net)> {
        self.cache().pod_cidr_holders(subnet)
    }

    fn pods_using_claim(&self, namespace: &str, claim: &str) -> Vec<Arc<Object>> {
        self.cache().pods_using_claim(namespace, claim)
    }

    fn volumes_for_claim(&self, namespace: &str, name: &str) -> Vec<Arc<Object>> {
        self.cache().volumes_for_claim(namespace, name)
    }

    fn free_volumes(&self, class: &str) -> Vec<Arc<Object>> {
        self.cache().free_volumes(class)
    }

    fn unbound_claims(&self, class: &str) -> Vec<Arc<Object>> {
        self.cache().unbound_claims(class)
    }

    fn budgets_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        self.cache().budgets_selecting(namespace, labels)
    }

    fn cluster_role_view(&self, name: &str) -> Result<Option<Arc<RoleView>>, StateMachineError> {
        Ok(self.cache().cluster_role_view(name))
    }

    fn aggregating_cluster_roles(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.cache().aggregating_cluster_roles(labels)
    }

    fn custom_kinds(&self) -> Vec<Kind> {
        self.cache().custom_kinds()
    }

    fn revision(&self) -> u64 {
        ObjectStore::revision(self)
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        ObjectStore::subscribe(self)
    }

    fn subscribe_to(&self, filter: KindFilter) -> Subscription {
        ObjectStore::subscribe_to(self, filter)
    }
}

impl ObjectWrites for ObjectWriter {
    fn create(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(ObjectWriter::create(self, object))
    }

    fn create_from_template(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(ObjectWriter::create_from_template(self, object))
    }

    fn update(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(ObjectWriter::update(self, object))
    }

    fn update_status(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(ObjectWriter::update_status(self, object))
    }

    fn delete_with<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        options: DeleteOptions,
    ) -> WriteFuture<'a> {
        Box::pin(ObjectWriter::delete_with(
            self, kind, namespace, name, options,
        ))
    }
}

/// What every controller can use.
#[derive(Clone)]
pub struct Context {
    /// The leader's replica of the store.
    pub store: Arc<dyn ObjectReads>,
    /// Validated writes through Raft.
    pub writer: Arc<dyn ObjectWrites>,
    /// Observes the time of each scheduler binding.
    pub binding_latency: Arc<skiff_telemetry::HistogramVec>,
    /// Records Events (each loop names itself with
    /// [`EventRecorder::for_component`]); records nothing unless given
    /// one with [`Context::with_events`].
    pub events: EventRecorder,
    /// The nodes' and pods' resource usage readings (the leader's, which
    /// the heartbeats bring); an empty table unless given one with
    /// [`Context::with_resource_metrics`] (tests record their own).
    pub resource_metrics: ResourceMetrics,
}

impl Context {
    /// Reads from `store`, writes through `writer`; records no Events.
    pub fn new(
        store: Arc<dyn ObjectReads>,
        writer: Arc<dyn ObjectWrites>,
        binding_latency: Arc<skiff_telemetry::HistogramVec>,
    ) -> Context {
        Context {
            store,
            writer,
            binding_latency,
            events: EventRecorder::disabled(),
            resource_metrics: ResourceMetrics::default(),
        }
    }

    /// The same context, recording Events with `events`.
    pub fn with_events(self, events: EventRecorder) -> Context {
        Context { events, ..self }
    }

    /// The same context, reading resource usage from `resource_metrics`.
    pub fn with_resource_metrics(self, resource_metrics: ResourceMetrics) -> Context {
        Context {
            resource_metrics,
            ..self
        }
    }
}
