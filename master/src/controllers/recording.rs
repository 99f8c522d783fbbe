//! A recording, in-memory stand-in for the store and the write path, for
//! unit tests of the leader's loops. It keeps objects as the state machine
//! does (resourceVersions from one revision counter, conditional updates,
//! status kept apart from spec, Kubernetes' delete semantics from
//! `objects::deletion`, change notifications), records every successful
//! write in order, and fails chosen writes on request, so that a
//! test can ask "what did the controller write" and "what does it do when
//! a write fails"; it records the Events the loops record too, as they
//! were recorded (no correlation). It does not default or validate what controllers write,
//! nor require namespaces to exist; the writer's own tests cover those.
//! [`ManualClock`] is the time of the loops that read one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prost::Message;
use skiff_objects::Ipv4Net;
use skiff_proto::api::{EventType, Object};
use tokio::sync::broadcast;

use super::context::{ObjectReads, ObjectWrites, WriteFuture};
use crate::cluster::ClusterError;
use crate::events::{Clock, EventRecorder, EventSink, NewEvent};
use crate::store::state_machine::{Notification, StateMachineError, StoredEvent};
use crate::store::WriteError;
use crate::writer;
use skiff_objects::deletion::{self, DeleteOptions, DeleteOutcome};
use skiff_objects::disruption_budget::Budget;
use skiff_objects::metadata::new_uid;
use skiff_objects::rbac::RoleView;
use skiff_objects::{merge_update, selector, storage, Kind, ObjectExt};

/// Which write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Create,
    Update,
    UpdateStatus,
    Delete,
}

/// One write that happened, with the object as stored after it (for a
/// delete: as it was removed, or as marked when it was kept).
#[derive(Debug, Clone)]
pub struct RecordedWrite {
    pub op: WriteOp,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub object: Object,
}

/// How an injected failure fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Someone else wrote first (`Conflict`).
    Conflict,
    /// The object is gone (`NotFound`).
    NotFound,
    /// No leader: the write did not reach the store.
    Unavailable,
}

struct Injected {
    op: WriteOp,
    kind: Kind,
    /// Fails the write of this name only; `None` fails the next of the kind.
    name: Option<String>,
    failure: Failure,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<(Kind, String, String), Object>,
    revision: u64,
    writes: Vec<RecordedWrite>,
    failures: VecDeque<Injected>,
    events: Vec<NewEvent>,
}

/// The fake: implements [`ObjectReads`] and [`ObjectWrites`].
pub struct RecordingObjects {
    state: Mutex<State>,
    notify: broadcast::Sender<Notification>,
}

impl Default for RecordingObjects {
    fn default() -> Self {
        RecordingObjects {
            state: Mutex::new(State::default()),
            notify: broadcast::channel(1024).0,
        }
    }
}

impl RecordingObjects {
    pub fn new() -> Arc<RecordingObjects> {
        Arc::new(RecordingObjects::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts an object in place as if created earlier (not recorded as a
    /// write, but notified like one); returns it as stored.
    pub fn seed(&self, object: Object) -> Object {
        let stored = self.store_new(object);
        self.state().writes.pop();
        stored
    }

    /// Seeds every object of a YAML manifest, defaulted as the writer
    /// would (namespace `default` when none is named); returns them as
    /// stored. Panics on a manifest that does not parse: test input.
    pub fn seed_yaml(&self, yaml: &str) -> Vec<Object> {
        let manifest = skiff_objects::manifest::parse_manifest("test.yaml", yaml, true)
            .unwrap_or_else(|e| panic!("test manifest: {e}"));
        manifest
            .objects
            .into_iter()
            .map(|mut object| {
                if let Ok(kind) = object.kind() {
                    if let Ok(meta) = object.meta_mut() {
                        meta.namespace = crate::writer::namespace_for(kind, &meta.namespace);
                    }
                }
                skiff_objects::defaults::apply_defaults(&mut object);
                self.seed(object)
            })
            .collect()
    }

    /// Fails the next `op` on an object of `kind` (named `name`, or any).
    pub fn fail_next(&self, op: WriteOp, kind: Kind, name: Option<&str>, failure: Failure) {
        self.state().failures.push_back(Injected {
            op,
            kind,
            name: name.map(str::to_owned),
            failure,
        });
    }

    /// Every successful write so far, oldest first.
    pub fn writes(&self) -> Vec<RecordedWrite> {
        self.state().writes.clone()
    }

    /// Forgets the recorded writes (the objects stay).
    pub fn clear_writes(&self) {
        self.state().writes.clear();
    }

    /// Every Event recorded so far, oldest first.
    pub fn events(&self) -> Vec<NewEvent> {
        self.state().events.clone()
    }

    /// The reasons of the Events recorded so far, oldest first.
    pub fn event_reasons(&self) -> Vec<String> {
        self.state()
            .events
            .iter()
            .map(|e| e.reason.clone())
            .collect()
    }

    /// The stored objects of `kind`, in name order.
    pub fn objects(&self, kind: Kind) -> Vec<Object> {
        self.state()
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn injected(&self, op: WriteOp, kind: Kind, name: &str) -> Option<Failure> {
        let mut state = self.state();
        let at = state.failures.iter().position(|f| {
            f.op == op && f.kind == kind && f.name.as_deref().is_none_or(|n| n == name)
        })?;
        state.failures.remove(at).map(|f| f.failure)
    }

    fn fail(failure: Failure, kind: Kind, namespace: &str, name: &str) -> writer::Error {
        let refused = match failure {
            Failure::Conflict => WriteError::Conflict {
                kind,
                name: name.to_owned(),
                expected: "1".to_owned(),
                current: "2".to_owned(),
            },
            Failure::NotFound => WriteError::NotFound {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            Failure::Unavailable => {
                return writer::Error::Cluster(ClusterError::NotLeader { leader: None })
            }
        };
        writer::Error::Cluster(ClusterError::Refused(refused))
    }

    /// Records `op` on the object at `key`: `object` stored, or, when
    /// `removed`, gone (as `object`); answers it with its new
    /// resourceVersion.
    fn record(
        &self,
        state: &mut State,
        op: WriteOp,
        key: &(Kind, String, String),
        object: Object,
        removed: bool,
    ) -> Object {
        state.revision += 1;
        let revision = state.revision;
        let event_type = match op {
            _ if removed => EventType::Deleted,
            WriteOp::Create => EventType::Added,
            WriteOp::Update | WriteOp::UpdateStatus | WriteOp::Delete => EventType::Modified,
        };
        let mut object = object;
        if let Ok(meta) = object.meta_mut() {
            meta.resource_version = revision.to_string();
        }
        if removed {
            state.objects.remove(key);
        } else {
            state.objects.insert(key.clone(), object.clone());
        }
        let node = skiff_objects::pods::bound_node(&object);
        state.writes.push(RecordedWrite {
            op,
            kind: key.0,
            namespace: key.1.clone(),
            name: key.2.clone(),
            object: object.clone(),
        });
        let event = Arc::new(StoredEvent {
            revision,
            kind: key.0,
            namespace: key.1.clone(),
            event_type: event_type as i32,
            node,
            object: object.encode_to_vec().into(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        });
        let _ = self
            .notify
            .send(Notification::Event(event, Arc::new(object.clone())));
        object
    }

    fn store_new(&self, mut object: Object) -> Object {
        let mut state = self.state();
        if let Ok(meta) = object.meta_mut() {
            if meta.name.is_empty() {
                meta.name = format!(
                    "{}{}",
                    meta.generate_name,
                    skiff_objects::metadata::random_suffix()
                );
            }
            meta.uid = new_uid();
            meta.generation = 1;
        }
        object.set_type_meta();
        let key = key_of(&object);
        self.record(&mut state, WriteOp::Create, &key, object, false)
    }

    pub(crate) fn write(&self, op: WriteOp, object: Object) -> writer::Result<Object> {
        let kind = object.kind()?;
        let key = key_of(&object);
        if let Some(failure) = self.injected(op, kind, &key.2) {
            return Err(Self::fail(failure, kind, &key.1, &key.2));
        }
        if op == WriteOp::Create {
            if self.state().objects.contains_key(&key) {
                return Err(writer::Error::Cluster(ClusterError::Refused(
                    WriteError::AlreadyExists {
                        kind,
                        namespace: key.1,
                        name: key.2,
                    },
                )));
            }
            return Ok(self.store_new(object));
        }
        let mut state = self.state();
        let Some(existing) = state.objects.get(&key).cloned() else {
            return Err(Self::fail(Failure::NotFound, kind, &key.1, &key.2));
        };
        let expected = object.meta().resource_version.clone();
        let current = existing.meta().resource_version.clone();
        if !expected.is_empty() && expected != current {
            return Err(writer::Error::Cluster(ClusterError::Refused(
                WriteError::Conflict {
                    kind,
                    name: key.2,
                    expected,
                    current,
                },
            )));
        }
        let mut merged = merge_update(&existing, object, op == WriteOp::UpdateStatus);
        if let Ok(meta) = merged.meta_mut() {
            meta.resource_version = current;
        }
        if merged == existing {
            return Ok(existing);
        }
        let added = deletion::added_finalizers(existing.meta(), merged.meta());
        if !added.is_empty() {
            let refused = WriteError::Invalid(format!("finalizers cannot be added: {added:?}"));
            return Err(writer::Error::Cluster(ClusterError::Refused(refused)));
        }
        let removed = deletion::removed_by_update(existing.meta(), merged.meta());
        Ok(self.record(&mut state, op, &key, merged, removed))
    }

    /// Deletes with the default options (with a non-empty
    /// `resource_version`, only at it), as a controller's delete would.
    #[cfg(test)]
    pub(crate) fn remove(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> writer::Result<Object> {
        let options = DeleteOptions::at_version(resource_version);
        self.delete_as_kubernetes(kind, namespace, name, &options)
    }

    /// Deletes as the state machine does: removed, or kept marked (a
    /// MODIFIED event), per `objects::deletion`; recorded as a
    /// [`WriteOp::Delete`] either way.
    pub(crate) fn delete_as_kubernetes(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> writer::Result<Object> {
        if let Some(failure) = self.injected(WriteOp::Delete, kind, name) {
            return Err(Self::fail(failure, kind, namespace, name));
        }
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut state = self.state();
        let Some(existing) = state.objects.get(&key).cloned() else {
            return Err(Self::fail(Failure::NotFound, kind, namespace, name));
        };
        let meta = existing.meta();
        let (current, uid) = (meta.resource_version.clone(), meta.uid.clone());
        let expected = &options.resource_version;
        if !expected.is_empty() && *expected != current {
            return Err(writer::Error::Cluster(ClusterError::Refused(
                WriteError::Conflict {
                    kind,
                    name: name.to_owned(),
                    expected: expected.clone(),
                    current,
                },
            )));
        }
        if !options.uid.is_empty() && options.uid != uid {
            return Err(writer::Error::Cluster(ClusterError::Refused(
                WriteError::UidMismatch {
                    kind,
                    name: name.to_owned(),
                    expected: options.uid.clone(),
                    current: uid,
                },
            )));
        }
        let now = std::time::SystemTime::now();
        let op = WriteOp::Delete;
        Ok(match deletion::decide_delete(&existing, options, now) {
            DeleteOutcome::Remove => self.record(&mut state, op, &key, existing, true),
            DeleteOutcome::Mark(marked) => self.record(&mut state, op, &key, *marked, false),
            DeleteOutcome::Unchanged => existing,
        })
    }
}

impl RecordingObjects {
    fn filtered(&self, kind: Kind, keep: impl Fn(&Object) -> bool) -> Vec<Arc<Object>> {
        self.state()
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == kind && keep(o))
            .map(|(_, o)| Arc::new(o.clone()))
            .collect()
    }
}

fn key_of(object: &Object) -> (Kind, String, String) {
    let meta = object.meta();
    (
        object.kind().unwrap_or(Kind::Pod),
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

impl ObjectReads for RecordingObjects {
    fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Object>>, StateMachineError> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        Ok(self.state().objects.get(&key).cloned().map(Arc::new))
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Object>>, u64), StateMachineError> {
        let state = self.state();
        let objects = state
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| Arc::new(o.clone()))
            .collect();
        Ok((objects, state.revision))
    }

    // The indexed queries filter everything: the fake is for correctness,
    // the cache's own tests cover the indexes.
    fn pods_on_node(&self, node: &str) -> Vec<Arc<Object>> {
        self.filtered(Kind::Pod, |o| skiff_objects::pods::bound_node(o) == node)
    }

    fn pod_nodes(&self) -> Vec<String> {
        let pods = self.filtered(Kind::Pod, |_| true);
        let nodes: std::collections::BTreeSet<String> = pods
            .iter()
            .map(|o| skiff_objects::pods::bound_node(o))
            .filter(|n| !n.is_empty())
            .collect();
        nodes.into_iter().collect()
    }

    fn finished_pod_count(&self) -> usize {
        self.oldest_finished_pods(usize::MAX).len()
    }

    fn oldest_finished_pods(&self, count: usize) -> Vec<Arc<Object>> {
        let mut finished: Vec<(bool, String, Arc<Object>)> = self
            .filtered(Kind::Pod, |_| true)
            .into_iter()
            .filter_map(|o| {
                let pod = skiff_objects::pods::facts(&o)?;
                if !pod.is_finished() {
                    return None;
                }
                let evicted = pod.reason == "Evicted";
                let created = o.meta().creation_timestamp.clone();
                Some((!evicted, created, o))
            })
            .collect();
        finished.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        finished
            .into_iter()
            .take(count)
            .map(|(_, _, o)| o)
            .collect()
    }

    fn dependents_of(&self, uid: &str) -> Vec<Arc<Object>> {
        let state = self.state();
        state
            .objects
            .values()
            .filter(|o| o.meta().owner_references.iter().any(|r| r.uid == uid))
            .map(|o| Arc::new(o.clone()))
            .collect()
    }

    fn select(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        if labels.is_empty() {
            return Vec::new();
        }
        self.filtered(kind, |o| {
            let meta = o.meta();
            meta.namespace == namespace && labels.iter().all(|(k, v)| meta.labels.get(k) == Some(v))
        })
    }

    fn services_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        use skiff_objects::services;
        self.filtered(Kind::Service, |o| {
            o.meta().namespace == namespace
                && services::read(o).is_some_and(|s| {
                    let selector = services::selector(&s);
                    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
    }

    fn pod_cidr_holders(&self, subnet: Ipv4Net) -> Vec<(String, Ipv4Net)> {
        self.filtered(Kind::Node, |_| true)
            .iter()
            .filter_map(|o| match &o.kind {
                Some(skiff_proto::api::object::Kind::Node(n)) => {
                    let held: Ipv4Net = n.spec.as_ref()?.pod_cidr.parse().ok()?;
                    let overlaps = held.contains(&subnet) || subnet.contains(&held);
                    overlaps.then(|| (o.meta().name.clone(), held))
                }
                _ => None,
            })
            .collect()
    }

    fn pods_using_claim(&self, namespace: &str, claim: &str) -> Vec<Arc<Object>> {
        self.filtered(Kind::Pod, |o| {
            o.meta().namespace == namespace
                && skiff_objects::pods::facts(o)
                    .is_some_and(|p| p.claims.iter().any(|c| c == claim))
        })
    }

    fn volumes_for_claim(&self, namespace: &str, name: &str) -> Vec<Arc<Object>> {
        self.filtered(Kind::PersistentVolume, |o| {
            storage::VolumeView::read(o).is_some_and(|v| {
                v.claim_ref()
                    .map(storage::claim_ref_parts)
                    .is_some_and(|(ns, claim, _)| ns == namespace && claim == name)
            })
        })
    }

    fn free_volumes(&self, class: &str) -> Vec<Arc<Object>> {
        self.filtered(Kind::PersistentVolume, |o| {
            storage::VolumeView::read(o)
                .is_some_and(|v| v.claim_ref().is_none() && v.class() == class)
        })
    }

    fn unbound_claims(&self, class: &str) -> Vec<Arc<Object>> {
        self.filtered(Kind::PersistentVolumeClaim, |o| {
            storage::ClaimView::read(o)
                .is_some_and(|c| c.volume_name().is_empty() && c.class() == class)
        })
    }

    fn budgets_selecting(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<Object>> {
        self.filtered(Kind::PodDisruptionBudget, |o| {
            o.meta().namespace == namespace
                && Budget::of(o)
                    .and_then(|b| b.selector)
                    .is_some_and(|s| selector::matches(&s, labels))
        })
    }

    fn cluster_role_view(&self, name: &str) -> Result<Option<Arc<RoleView>>, StateMachineError> {
        let role = self.get(Kind::ClusterRole, "", name)?;
        Ok(role.and_then(|o| RoleView::read(&o)).map(Arc::new))
    }

    fn aggregating_cluster_roles(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let aggregators = self.filtered(Kind::ClusterRole, |o| {
            RoleView::read(o).is_some_and(|r| r.aggregates_labels(labels))
        });
        aggregators.iter().map(|o| o.meta().name.clone()).collect()
    }

    fn revision(&self) -> u64 {
        self.state().revision
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.notify.subscribe()
    }
}

impl ObjectWrites for RecordingObjects {
    fn create(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(std::future::ready(self.write(WriteOp::Create, object)))
    }

    fn update(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(std::future::ready(self.write(WriteOp::Update, object)))
    }

    fn update_status(&self, object: Object) -> WriteFuture<'_> {
        Box::pin(std::future::ready(
            self.write(WriteOp::UpdateStatus, object),
        ))
    }

    fn delete_with<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        options: DeleteOptions,
    ) -> WriteFuture<'a> {
        let deleted = self.delete_as_kubernetes(kind, namespace, name, &options);
        Box::pin(std::future::ready(deleted))
    }
}

impl EventSink for RecordingObjects {
    fn record(&self, event: NewEvent) {
        self.state().events.push(event);
    }
}

/// A clock that stands still until a test moves it.
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn at(time: SystemTime) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(time)))
    }

    pub fn set(&self, time: SystemTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = time;
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The notification of a `kind` change of `event_type` in `namespace`, as
/// a controller's `keys_for` reads it beside the object (no bytes of the
/// object, no previous state).
pub fn stored_event(kind: Kind, namespace: &str, event_type: EventType) -> StoredEvent {
    StoredEvent {
        revision: 1,
        kind,
        namespace: namespace.to_owned(),
        event_type: event_type as i32,
        node: String::new(),
        object: bytes::Bytes::new(),
        previous: bytes::Bytes::new(),
        previous_revision: 0,
    }
}

/// A context whose reads, writes and Events all go to `objects`.
pub fn context(objects: &Arc<RecordingObjects>) -> super::Context {
    let registry = skiff_telemetry::Registry::new();
    super::Context::new(
        objects.clone(),
        objects.clone(),
        registry.histogram("test_binding_seconds", "Binding latency in tests.", &[]),
    )
    .with_events(EventRecorder::new(objects.clone(), "test"))
}
