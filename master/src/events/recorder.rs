//! Recording Events, as client-go's `EventRecorder` does for Kubernetes'
//! components: what happened ([`NewEvent`]: the object it is about, Normal
//! or Warning, a reason and a message, who reports it), handed to an
//! [`EventSink`] (the leader's `EventStore`, or a test's recording fake).
//! The sink correlates repeats by [`CorrelationKey`], the fields
//! client-go's `EventCorrelator` compares, so that one thing happening
//! again and again counts up one Event instead of adding new ones.
//!
//! An [`EventRecorder`] is what the leader's components hold: a sink and
//! the component's name, cheap to clone. One without a sink records
//! nothing, for code under test that does not look at Events.

use std::sync::Arc;

use serde_json::{Map, Value};
use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

use skiff_objects::{Kind, ObjectExt};

/// What an Event is about: core v1's `involvedObject`, events.k8s.io's
/// `regarding` (an `ObjectReference`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub resource_version: String,
    /// The part of the object it is about (`spec.containers{web}`).
    pub field_path: String,
}

impl InvolvedObject {
    /// A reference to `object`, at its current resourceVersion; `None`
    /// for an object of no kind skiff serves.
    pub fn of(object: &Object) -> Option<InvolvedObject> {
        Some(InvolvedObject::of_meta(object.kind().ok()?, object.meta()))
    }

    /// A reference to the object of `kind` with metadata `meta`.
    pub fn of_meta(kind: Kind, meta: &ObjectMeta) -> InvolvedObject {
        InvolvedObject {
            kind: kind.name().to_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            api_version: kind.api_version().to_owned(),
            resource_version: meta.resource_version.clone(),
            field_path: String::new(),
        }
    }

    /// The same reference, to a part of the object.
    pub fn with_field_path(mut self, field_path: impl Into<String>) -> InvolvedObject {
        self.field_path = field_path.into();
        self
    }

    /// As Kubernetes JSON, the empty fields left out.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (field, value) in [
            ("kind", &self.kind),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("uid", &self.uid),
            ("apiVersion", &self.api_version),
            ("resourceVersion", &self.resource_version),
            ("fieldPath", &self.field_path),
        ] {
            if !value.is_empty() {
                map.insert(field.to_owned(), Value::from(value.as_str()));
            }
        }
        Value::Object(map)
    }
}

/// An Event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }

    /// `Normal` or `Warning`, as written in Events.
    pub fn parse(text: &str) -> Option<EventType> {
        match text {
            "Normal" => Some(EventType::Normal),
            "Warning" => Some(EventType::Warning),
            _ => None,
        }
    }
}

/// Who reports an Event: core v1's `source` (and `reportingComponent`,
/// `reportingInstance`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EventSource {
    /// `kubelet`, `default-scheduler`, `replicaset-controller`, ...
    pub component: String,
    /// The node, for a kubelet's (an agent's) Events; empty for the
    /// control plane's.
    pub host: String,
}

/// Something that happened, to be recorded as an Event (or counted on the
/// Event of the same thing happening before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub involved: InvolvedObject,
    pub event_type: EventType,
    /// A short, CamelCase reason (`Scheduled`, `BackOff`).
    pub reason: String,
    pub message: String,
    pub source: EventSource,
    /// How many times it happened (at least 1: agents send repeats that
    /// happened between two of their batches as one).
    pub count: u32,
}

/// What makes two Events the same, as client-go's `EventCorrelator`
/// compares them (`getEventKey`): the reporter, the object (not its
/// resourceVersion, which moves on), the type, the reason and the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationKey {
    component: String,
    host: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    api_version: String,
    field_path: String,
    event_type: EventType,
    reason: String,
    message: String,
}

impl NewEvent {
    pub fn correlation_key(&self) -> CorrelationKey {
        let i = &self.involved;
        CorrelationKey {
            component: self.source.component.clone(),
            host: self.source.host.clone(),
            kind: i.kind.clone(),
            namespace: i.namespace.clone(),
            name: i.name.clone(),
            uid: i.uid.clone(),
            api_version: i.api_version.clone(),
            field_path: i.field_path.clone(),
            event_type: self.event_type,
            reason: self.reason.clone(),
            message: self.message.clone(),
        }
    }
}

/// Where recorded Events go.
pub trait EventSink: Send + Sync {
    /// Records `event`, or counts it on the Event of its earlier
    /// occurrences. Best effort: nothing to answer.
    fn record(&self, event: NewEvent);
}

/// Records Events for one component of the leader. Cheap to clone; one
/// made by [`EventRecorder::disabled`] records nothing.
#[derive(Clone)]
pub struct EventRecorder {
    sink: Option<Arc<dyn EventSink>>,
    component: &'static str,
}

impl EventRecorder {
    /// Records into `sink` as `component` (the control plane's Events
    /// have no host).
    pub fn new(sink: Arc<dyn EventSink>, component: &'static str) -> EventRecorder {
        EventRecorder {
            sink: Some(sink),
            component,
        }
    }

    /// A recorder that records nothing.
    pub fn disabled() -> EventRecorder {
        EventRecorder {
            sink: None,
            component: "",
        }
    }

    /// The same sink, for another component.
    pub fn for_component(&self, component: &'static str) -> EventRecorder {
        EventRecorder {
            sink: self.sink.clone(),
            component,
        }
    }

    /// A `Normal` Event about `object`.
    pub fn normal(&self, object: &Object, reason: &str, message: impl Into<String>) {
        self.about(object, EventType::Normal, reason, message.into());
    }

    /// A `Warning` Event about `object`.
    pub fn warning(&self, object: &Object, reason: &str, message: impl Into<String>) {
        self.about(object, EventType::Warning, reason, message.into());
    }

    fn about(&self, object: &Object, event_type: EventType, reason: &str, message: String) {
        if self.sink.is_none() {
            return;
        }
        if let Some(involved) = InvolvedObject::of(object) {
            self.record(involved, event_type, reason, message);
        }
    }

    /// An Event about the object `involved` refers to.
    pub fn record(
        &self,
        involved: InvolvedObject,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let Some(sink) = &self.sink else {
            return;
        };
        sink.record(NewEvent {
            involved,
            event_type,
            reason: reason.to_owned(),
            message: message.into(),
            source: EventSource {
                component: self.component.to_owned(),
                host: String::new(),
            },
            count: 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use skiff_objects::IntoObject;

    #[derive(Default)]
    struct Collected(Mutex<Vec<NewEvent>>);

    impl EventSink for Collected {
        fn record(&self, event: NewEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn pod() -> Object {
        skiff_proto::v1::Pod {
            metadata: Some(skiff_proto::v1::ObjectMeta {
                name: "web-1".into(),
                namespace: "shop".into(),
                uid: "u-1".into(),
                resource_version: "7".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn a_recorder_names_the_object_and_the_component() {
        let sink = Arc::new(Collected::default());
        let recorder = EventRecorder::new(sink.clone(), "replicaset-controller");
        recorder.normal(&pod(), "Started", "Started container web");
        recorder.for_component("default-scheduler").warning(
            &pod(),
            "FailedScheduling",
            "0/1 nodes are available",
        );
        let events = sink.0.lock().unwrap().clone();
        assert_eq!(events.len(), 2);
        let involved = &events[0].involved;
        assert_eq!(
            (involved.kind.as_str(), involved.namespace.as_str()),
            ("Pod", "shop")
        );
        assert_eq!(
            (involved.name.as_str(), involved.uid.as_str()),
            ("web-1", "u-1")
        );
        assert_eq!(involved.api_version, "v1");
        assert_eq!(events[0].source.component, "replicaset-controller");
        assert_eq!(events[0].event_type, EventType::Normal);
        assert_eq!(events[1].source.component, "default-scheduler");
        assert_eq!(events[1].event_type, EventType::Warning);
        assert_eq!(events[1].count, 1);
    }

    #[test]
    fn the_correlation_key_ignores_resource_versions_but_not_messages() {
        let event = |resource_version: &str, message: &str| NewEvent {
            involved: InvolvedObject {
                resource_version: resource_version.into(),
                ..InvolvedObject::of(&pod()).unwrap()
            },
            event_type: EventType::Normal,
            reason: "Pulled".into(),
            message: message.into(),
            source: EventSource::default(),
            count: 1,
        };
        assert_eq!(
            event("7", "a").correlation_key(),
            event("8", "a").correlation_key()
        );
        assert_ne!(
            event("7", "a").correlation_key(),
            event("7", "b").correlation_key()
        );
        let json = InvolvedObject::of(&pod())
            .unwrap()
            .with_field_path("spec.containers{web}")
            .to_json();
        assert_eq!(json["fieldPath"], "spec.containers{web}");
        assert_eq!(json["kind"], "Pod");
        assert!(json.get("host").is_none());
        assert_eq!(EventType::parse("Warning"), Some(EventType::Warning));
        assert_eq!(EventType::parse("Bad"), None);
    }
}
