//! Kubernetes Events, kept bounded in the leader's memory and never written
//! to the Raft log or to disk, so that a busy cluster does not wear flash
//! (like heartbeats; DESIGN.md, "Events never touch the Raft log").
//!
//! [`EventStore`] holds core v1 Events; `events.k8s.io/v1` serves the same
//! Events under its own field names ([`convert`]). It is:
//! - bounded: an Event last seen more than [`EVENT_TTL`] ago (its
//!   `lastTimestamp`, else its series', event or first time; never later
//!   than when it was written) is dropped, and beyond [`MAX_EVENTS`] the
//!   least recently seen ones go first; a recorded message is cut at
//!   [`MAX_MESSAGE_BYTES`] and no Event may be larger than
//!   [`MAX_EVENT_BYTES`];
//! - deduplicated: what the leader's components and the agents record
//!   ([`recorder`]) counts up the Event of the same thing (client-go's
//!   correlation key), its `count`, `lastTimestamp` and `series`, for as
//!   long as that Event is kept, instead of adding one (Events written
//!   through the API are stored as sent, as kube-apiserver stores them);
//! - compact: each Event and each kept change is held encoded (protobuf,
//!   shared between the two), and decoded when read; a recorded Event's
//!   correlation key is held once;
//! - watchable: each change takes the next resourceVersion, and the last
//!   [`MAX_HISTORY`] changes are kept for watches from a resourceVersion;
//!   one older than those, or one this store did not issue, is
//!   [`EventStoreError::Expired`] (410 Expired: the client lists again).
//!
//! Leader changes: only the leader's store is used (every master relays
//! Event requests to the leader, `api::events`). A master that becomes
//! leader, or stops being one, starts over ([`EventStore::restart`]):
//! empty, its watches ended as expired, its resourceVersions continuing
//! from the current Unix time in microseconds (or just above its own last
//! one, if that is higher). A new leader's resourceVersions are thus above
//! any its predecessor issued (while the masters' clocks agree within the
//! time between the two leaderships), and a watch from one of those, or
//! from any this store never issued, is expired. The old leader's Events
//! are gone, as kube-apiserver's go when etcd expires them.

pub mod convert;
pub mod recorder;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::{json, Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{GenericObject, ObjectMeta};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use skiff_objects::metadata::{new_uid, random_suffix};
use skiff_objects::validation::{validate, ValidationError};
use skiff_objects::{generic, IntoObject, Kind, ObjectExt};

pub use recorder::{
    CorrelationKey, EventRecorder, EventSink, EventSource, EventType, InvolvedObject, NewEvent,
};

/// Most Events kept; the least recently seen go first. Held decoded, each
/// cost the master about 4.5 KB (`skiff-bench schedule --nodes 1000
/// --pods 10000`, one `Scheduled` Event per pod: 173 MiB at the end with
/// 10,000 kept, against 128 MiB before Events); held encoded, with their
/// changes, about 2 KB (BENCHMARKS.md, ninth session).
pub const MAX_EVENTS: usize = 2_000;
/// How many changes are kept for watches from a resourceVersion.
pub const MAX_HISTORY: usize = 2_048;
/// How long an Event is kept after it was last seen (kube-apiserver's
/// default `--event-ttl`).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
/// Largest Event the store takes (encoded), so that the bound on their
/// number bounds memory too.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// Longest message a recorded Event keeps (events.k8s.io's limit on
/// `note`); the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// How often the leader drops expired Events when nothing else asks.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Notices buffered for each watcher before it must catch up from the
/// history.
const LIVE_NOTICES: usize = 1024;
/// Where Events about cluster-scoped objects (Nodes) go, as in Kubernetes.
const DEFAULT_NAMESPACE: &str = "default";

/// The bounds of one store (tests use small ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub ttl: Duration,
    pub max_history: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: MAX_EVENTS,
            ttl: EVENT_TTL,
            max_history: MAX_HISTORY,
        }
    }
}

/// The time, for expiry and timestamps: the system's, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Why an Event request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventStoreError {
    #[error("Event {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Event {namespace}/{name} already exists")]
    AlreadyExists { namespace: String, name: String },
    #[error("Event {namespace}/{name} is at resourceVersion {current}, not {expected}; read it again and retry")]
    Conflict {
        namespace: String,
        name: String,
        expected: String,
        current: String,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("Events' resourceVersion {requested} is too old, or was not issued by this leader (it keeps {oldest} to {newest}); list again and watch from the list's resourceVersion")]
    Expired {
        requested: u64,
        oldest: u64,
        newest: u64,
    },
}

pub type Result<T, E = EventStoreError> = std::result::Result<T, E>;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change, at its resourceVersion.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub change_type: ChangeType,
    pub namespace: String,
    /// The Event after the change; for a deletion, as it was (its
    /// resourceVersion the deletion's).
    encoded: Encoded,
}

impl Change {
    /// The Event after the change (for a deletion, as it was).
    pub fn object(&self) -> Object {
        self.encoded.decode()
    }
}

/// An Event as the store holds it: its protobuf encoding, shared by the
/// Event and the change that made it.
#[derive(Debug, Clone)]
struct Encoded(Arc<[u8]>);

impl Encoded {
    fn new(object: &Object) -> Encoded {
        Encoded(object.encode_to_vec().into())
    }

    /// The Event. Only bytes this store encoded are decoded, so this
    /// cannot fail unless memory is corrupt; then the error is logged and
    /// an empty object stands in.
    fn decode(&self) -> Object {
        Object::decode(&*self.0).unwrap_or_else(|e| {
            tracing::error!(error = %e, "an Event the store encoded does not decode");
            Object::default()
        })
    }
}

/// What live watchers are told.
#[derive(Debug, Clone)]
pub enum Notice {
    Changed(Arc<Change>),
    /// The store started over (see [`EventStore::restart`]): every watch
    /// is expired.
    Restarted,
}

/// An Event's namespace and name.
type EventName = (String, String);

struct Stored {
    encoded: Encoded,
    /// When it was last seen, in microseconds since the Unix epoch.
    seen: u64,
    /// Its resourceVersion.
    revision: u64,
    /// The correlation key of a recorded Event (the one `correlated` has).
    key: Option<Arc<CorrelationKey>>,
}

struct Inner {
    events: HashMap<EventName, Stored>,
    correlated: HashMap<Arc<CorrelationKey>, EventName>,
    /// Every Event by (last seen, resourceVersion): the next to expire
    /// first.
    by_age: BTreeMap<(u64, u64), EventName>,
    /// The last changes, one per resourceVersion up to `revision`.
    history: VecDeque<Arc<Change>>,
    /// The newest resourceVersion issued.
    revision: u64,
}

impl Inner {
    fn starting_at(revision: u64) -> Inner {
        Inner {
            events: HashMap::new(),
            correlated: HashMap::new(),
            by_age: BTreeMap::new(),
            history: VecDeque::new(),
            revision,
        }
    }

    /// The oldest resourceVersion a watch can start from.
    fn oldest(&self) -> u64 {
        self.revision.saturating_sub(self.history.len() as u64)
    }
}

/// The leader's Events (see the module's documentation).
pub struct EventStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    notices: broadcast::Sender<Notice>,
}

impl EventStore {
    /// An empty store with the default bounds, its resourceVersions
    /// starting at the current Unix time in microseconds.
    pub fn new(clock: Arc<dyn Clock>) -> EventStore {
        EventStore::with_limits(clock, Limits::default())
    }

    pub fn with_limits(clock: Arc<dyn Clock>, limits: Limits) -> EventStore {
        let start = unix_micros(clock.now());
        EventStore {
            inner: Mutex::new(Inner::starting_at(start)),
            clock,
            limits,
            notices: broadcast::channel(LIVE_NOTICES).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest resourceVersion issued.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// How many Events are kept.
    pub fn event_count(&self) -> usize {
        self.lock().events.len()
    }

    /// Forgets every Event and change and ends every watch: called when
    /// this master becomes leader and when it stops being leader. New
    /// resourceVersions start above the current time in microseconds and
    /// above every one issued before.
    pub fn restart(&self) {
        let now = unix_micros(self.clock.now());
        let mut inner = self.lock();
        let start = now.max(inner.revision.saturating_add(1));
        *inner = Inner::starting_at(start);
        let _ = self.notices.send(Notice::Restarted);
    }

    /// Live notices of every change from now on (subscribe, then read
    /// [`EventStore::changes_after`], then skip what that returned).
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Every change after `revision`, oldest first.
    pub fn changes_after(&self, revision: u64) -> Result<Vec<Arc<Change>>> {
        let inner = self.lock();
        let oldest = inner.oldest();
        if revision < oldest || revision > inner.revision {
            return Err(EventStoreError::Expired {
                requested: revision,
                oldest,
                newest: inner.revision,
            });
        }
        let skip = usize::try_from(revision - oldest).unwrap_or(usize::MAX);
        Ok(inner.history.iter().skip(skip).cloned().collect())
    }

    /// One Event.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Object> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let key = event_name(namespace, name);
        match inner.events.get(&key) {
            Some(stored) => Ok(stored.encoded.decode()),
            None => Err(not_found(key)),
        }
    }

    /// The Events of `namespace` (or all), in the order of their
    /// `namespace/name` (the order REST lists page in), and the
    /// resourceVersion to watch from after them.
    pub fn list(&self, namespace: Option<&str>) -> (Vec<Object>, u64) {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let mut items: Vec<(&EventName, &Stored)> = inner
            .events
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns.as_str()))
            .collect();
        items.sort_by_cached_key(|((namespace, name), _)| format!("{namespace}/{name}"));
        let encoded: Vec<Encoded> = items.into_iter().map(|(_, s)| s.encoded.clone()).collect();
        let revision = inner.revision;
        // Decoded after the lock is let go: recording waits for none of it.
        drop(inner);
        (encoded.iter().map(Encoded::decode).collect(), revision)
    }

    /// Creates an Event as sent (core v1 or events.k8s.io/v1), named, or
    /// named from `generateName`, in `default` when it names no namespace.
    pub fn create(&self, object: Object) -> Result<Object> {
        let now = self.clock.now();
        let mut event = core_event(object)?;
        let meta = event.metadata.get_or_insert_with(ObjectMeta::default);
        if meta.namespace.is_empty() {
            meta.namespace = DEFAULT_NAMESPACE.to_owned();
        }
        if meta.name.is_empty() {
            if meta.generate_name.is_empty() {
                return Err(EventStoreError::Invalid(
                    "metadata.name (or metadata.generateName) is required".to_owned(),
                ));
            }
            meta.name = format!("{}{}", meta.generate_name, random_suffix());
        }
        meta.uid = new_uid();
        meta.creation_timestamp = seconds_time(now).unwrap_or_default();
        meta.deletion_timestamp.clear();
        meta.resource_version.clear();
        let name = event_name(&meta.namespace, &meta.name);
        let seen = seen_micros(&generic::content(&event), now);
        let object = event.into_object();
        check(&object)?;
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        if inner.events.contains_key(&name) {
            let (namespace, name) = name;
            return Err(EventStoreError::AlreadyExists { namespace, name });
        }
        let stored = self.put(&mut inner, ChangeType::Added, object, seen, None);
        self.trim(&mut inner, now);
        Ok(stored)
    }

    /// Replaces an Event (conditional on `metadata.resourceVersion` when
    /// set); its uid and creation time stay.
    pub fn update(&self, object: Object) -> Result<Object> {
        let now = self.clock.now();
        let mut event = core_event(object)?;
        let meta = event.metadata.get_or_insert_with(ObjectMeta::default);
        if meta.namespace.is_empty() {
            meta.namespace = DEFAULT_NAMESPACE.to_owned();
        }
        if meta.name.is_empty() {
            return Err(EventStoreError::Invalid(
                "metadata.name is required".to_owned(),
            ));
        }
        let name = event_name(&meta.namespace, &meta.name);
        let seen = seen_micros(&generic::content(&event), now);
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let Some(stored) = inner.events.get(&name) else {
            return Err(not_found(name));
        };
        let current = stored.encoded.decode();
        let current = current.meta();
        let meta = event.metadata.get_or_insert_with(ObjectMeta::default);
        if !meta.resource_version.is_empty() && meta.resource_version != current.resource_version {
            let (namespace, name) = name;
            return Err(EventStoreError::Conflict {
                namespace,
                name,
                expected: meta.resource_version.clone(),
                current: current.resource_version.clone(),
            });
        }
        meta.uid = current.uid.clone();
        meta.creation_timestamp = current.creation_timestamp.clone();
        meta.generate_name = current.generate_name.clone();
        meta.deletion_timestamp.clear();
        let object = event.into_object();
        check(&object)?;
        let stored = self.put(&mut inner, ChangeType::Modified, object, seen, None);
        self.trim(&mut inner, now);
        Ok(stored)
    }

    /// Deletes an Event; with a non-empty `resource_version`, only at it.
    pub fn delete(&self, namespace: &str, name: &str, resource_version: &str) -> Result<Object> {
        let now = self.clock.now();
        let key = event_name(namespace, name);
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let current = match inner.events.get(&key) {
            Some(stored) => stored.revision.to_string(),
            None => return Err(not_found(key)),
        };
        if !resource_version.is_empty() && resource_version != current {
            let (namespace, name) = key;
            return Err(EventStoreError::Conflict {
                namespace,
                name,
                expected: resource_version.to_owned(),
                current,
            });
        }
        match self.remove(&mut inner, &key) {
            Some(deleted) => Ok(deleted),
            None => Err(not_found(key)),
        }
    }

    /// Drops the Events that expired.
    pub fn expire(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.trim(&mut inner, now);
    }

    /// Records that something happened: a new Event, or one more
    /// occurrence counted on the Event of the same thing (its `count`,
    /// `lastTimestamp` and `series`). Returns the Event as kept.
    pub fn record_event(&self, mut event: NewEvent) -> Object {
        let now = self.clock.now();
        cut(&mut event.message, MAX_MESSAGE_BYTES);
        let count = event.count.max(1);
        let key = event.correlation_key();
        let seen = unix_micros(now);
        let mut inner = self.lock();
        self.trim(&mut inner, now);
        let earlier = inner
            .correlated
            .get_key_value(&key)
            .and_then(|(key, name)| Some((key.clone(), inner.events.get(name)?.encoded.decode())));
        if let Some((key, mut object)) = earlier {
            repeat(&mut object, count, now);
            return self.put(&mut inner, ChangeType::Modified, object, seen, Some(key));
        }
        let namespace = if event.involved.namespace.is_empty() {
            DEFAULT_NAMESPACE.to_owned()
        } else {
            event.involved.namespace.clone()
        };
        let base = name_base(&event.involved);
        let mut nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut name = format!("{base}.{nanos:x}");
        while inner.events.contains_key(&event_name(&namespace, &name)) {
            nanos += 1;
            name = format!("{base}.{nanos:x}");
        }
        let object = new_event(&event, &namespace, &name, count, now);
        let stored = self.put(
            &mut inner,
            ChangeType::Added,
            object,
            seen,
            Some(Arc::new(key)),
        );
        self.trim(&mut inner, now);
        stored
    }

    /// Stores `object` (replacing the Event of its name) at the next
    /// resourceVersion; returns it as stored.
    fn put(
        &self,
        inner: &mut Inner,
        change_type: ChangeType,
        object: Object,
        seen: u64,
        key: Option<Arc<CorrelationKey>>,
    ) -> Object {
        let name = name_of(&object);
        if let Some(old) = inner.events.remove(&name) {
            forget(inner, &name, &old);
        }
        let (object, encoded) = self.change(inner, change_type, object);
        let revision = inner.revision;
        inner.by_age.insert((seen, revision), name.clone());
        if let Some(key) = &key {
            inner.correlated.insert(key.clone(), name.clone());
        }
        let stored = Stored {
            encoded,
            seen,
            revision,
            key,
        };
        inner.events.insert(name, stored);
        object
    }

    /// Removes the Event `name` at the next resourceVersion; returns it as
    /// it was, with the deletion's resourceVersion.
    fn remove(&self, inner: &mut Inner, name: &EventName) -> Option<Object> {
        let old = inner.events.remove(name)?;
        forget(inner, name, &old);
        let (object, _) = self.change(inner, ChangeType::Deleted, old.encoded.decode());
        Some(object)
    }

    /// Gives `object` the next resourceVersion, keeps the change and tells
    /// the watchers. Returns the object and its encoding.
    fn change(
        &self,
        inner: &mut Inner,
        change_type: ChangeType,
        mut object: Object,
    ) -> (Object, Encoded) {
        inner.revision += 1;
        let revision = inner.revision;
        if let Ok(meta) = object.meta_mut() {
            meta.resource_version = revision.to_string();
        }
        let namespace = object.meta().namespace.clone();
        let encoded = Encoded::new(&object);
        let change = Arc::new(Change {
            revision,
            change_type,
            namespace,
            encoded: encoded.clone(),
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > self.limits.max_history {
            inner.history.pop_front();
        }
        // No receivers is fine: nobody watches.
        let _ = self.notices.send(Notice::Changed(change));
        (object, encoded)
    }

    /// Drops the Events last seen [`Limits::ttl`] or longer before `now`,
    /// and the least recently seen beyond [`Limits::max_events`].
    fn trim(&self, inner: &mut Inner, now: SystemTime) {
        let ttl = u64::try_from(self.limits.ttl.as_micros()).unwrap_or(u64::MAX);
        let cutoff = unix_micros(now).saturating_sub(ttl);
        while let Some(((seen, revision), name)) = inner.by_age.pop_first() {
            if seen > cutoff && inner.events.len() <= self.limits.max_events {
                inner.by_age.insert((seen, revision), name);
                break;
            }
            self.remove(inner, &name);
        }
    }
}

impl EventSink for EventStore {
    fn record(&self, event: NewEvent) {
        self.record_event(event);
    }
}

/// Drops expired Events every [`EXPIRE_EVERY`] until `shutdown`, so that
/// watchers hear of them even when nothing else touches the store.
pub async fn expire_periodically(store: Arc<EventStore>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => store.expire(),
        }
    }
}

/// Forgets the indexes of an Event taken out of `inner.events`.
fn forget(inner: &mut Inner, name: &EventName, old: &Stored) {
    inner.by_age.remove(&(old.seen, old.revision));
    if let Some(key) = &old.key {
        if inner.correlated.get(&**key) == Some(name) {
            inner.correlated.remove(&**key);
        }
    }
}

fn event_name(namespace: &str, name: &str) -> EventName {
    let namespace = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    (namespace.to_owned(), name.to_owned())
}

fn name_of(object: &Object) -> EventName {
    let meta = object.meta();
    event_name(&meta.namespace, &meta.name)
}

fn not_found((namespace, name): EventName) -> EventStoreError {
    EventStoreError::NotFound { namespace, name }
}

/// `object` as the store holds it: a core v1 Event (an events.k8s.io/v1
/// one converted).
fn core_event(object: Object) -> Result<GenericObject> {
    let kind = object
        .kind()
        .map_err(|e| EventStoreError::Invalid(e.to_string()))?;
    let Some(Body::Generic(mut event)) = object.kind else {
        return Err(EventStoreError::Invalid(format!("{kind} is not an Event")));
    };
    match kind {
        Kind::Event => {}
        Kind::EventsK8sIoEvent => {
            let mut content = generic::content(&event);
            convert::to_core(&mut content);
            generic::set_content(&mut event, &content);
        }
        other => return Err(EventStoreError::Invalid(format!("{other} is not an Event"))),
    }
    event.api_version = Kind::Event.api_version().to_owned();
    event.kind = Kind::Event.name().to_owned();
    Ok(event)
}

/// What every Event written must be: valid as Kubernetes validates
/// object metadata, and small.
fn check(object: &Object) -> Result<()> {
    validate(object)?;
    let size = object.encoded_len();
    if size > MAX_EVENT_BYTES {
        return Err(EventStoreError::Invalid(format!(
            "the Event {} is {size} bytes; Events are limited to {MAX_EVENT_BYTES} bytes",
            object.display_name()
        )));
    }
    Ok(())
}

/// When an Event's fields say it was last seen, never after `now`.
fn seen_micros(fields: &Map<String, Value>, now: SystemTime) -> u64 {
    let series = fields.get("series").and_then(|s| s.get("lastObservedTime"));
    let last = [
        series,
        fields.get("lastTimestamp"),
        fields.get("eventTime"),
        fields.get("firstTimestamp"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .find_map(|text| humantime::parse_rfc3339_weak(text).ok());
    let now = unix_micros(now);
    last.map_or(now, |at| unix_micros(at).min(now))
}

/// One more `count` occurrences of a recorded Event, seen `now`.
fn repeat(object: &mut Object, count: u32, now: SystemTime) {
    let Some(Body::Generic(event)) = object.kind.as_mut() else {
        return;
    };
    let mut fields = generic::content(event);
    let total = fields
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .saturating_add(u64::from(count))
        .min(i32::MAX as u64);
    let last = seconds_time(now).unwrap_or_default();
    let observed = micro_time(now).unwrap_or_default();
    fields.insert("count".to_owned(), json!(total));
    fields.insert("lastTimestamp".to_owned(), json!(last));
    fields.insert(
        "series".to_owned(),
        json!({"count": total, "lastObservedTime": observed}),
    );
    generic::set_content(event, &fields);
}

/// The name a recorded Event's is made from (`<name>.<hex nanoseconds>`,
/// as client-go names them): the object's name, at most 200 characters.
fn name_base(involved: &InvolvedObject) -> String {
    let base = if involved.name.is_empty() {
        involved.kind.to_ascii_lowercase()
    } else {
        involved.name.clone()
    };
    let base: String = base.chars().take(200).collect();
    if base.is_empty() {
        "event".to_owned()
    } else {
        base
    }
}

/// A recorded Event, first seen `now`.
fn new_event(event: &NewEvent, namespace: &str, name: &str, count: u32, now: SystemTime) -> Object {
    let first = seconds_time(now).unwrap_or_default();
    let micro = micro_time(now).unwrap_or_default();
    let mut source = Map::new();
    if !event.source.component.is_empty() {
        source.insert("component".to_owned(), json!(event.source.component));
    }
    if !event.source.host.is_empty() {
        source.insert("host".to_owned(), json!(event.source.host));
    }
    let instance = if event.source.host.is_empty() {
        &event.source.component
    } else {
        &event.source.host
    };
    let mut fields = Map::new();
    fields.insert("involvedObject".to_owned(), event.involved.to_json());
    fields.insert("reason".to_owned(), json!(event.reason));
    fields.insert("message".to_owned(), json!(event.message));
    fields.insert("type".to_owned(), json!(event.event_type.as_str()));
    fields.insert("source".to_owned(), Value::Object(source));
    fields.insert("firstTimestamp".to_owned(), json!(first));
    fields.insert("lastTimestamp".to_owned(), json!(first));
    fields.insert("eventTime".to_owned(), json!(micro));
    fields.insert("count".to_owned(), json!(count));
    if count > 1 {
        fields.insert(
            "series".to_owned(),
            json!({"count": count, "lastObservedTime": micro}),
        );
    }
    fields.insert(
        "reportingComponent".to_owned(),
        json!(event.source.component),
    );
    fields.insert("reportingInstance".to_owned(), json!(instance));
    let mut object = GenericObject {
        api_version: Kind::Event.api_version().to_owned(),
        kind: Kind::Event.name().to_owned(),
        metadata: Some(ObjectMeta {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: new_uid(),
            creation_timestamp: first,
            ..Default::default()
        }),
        content: Vec::new(),
    };
    generic::set_content(&mut object, &fields);
    object.into_object()
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Microseconds since the Unix epoch (0 before it).
fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `at` as Kubernetes writes a `Time` (`2026-01-02T03:04:05Z`); `None`
/// for a time it cannot write.
fn seconds_time(at: SystemTime) -> Option<String> {
    formatted(at, humantime::format_rfc3339_seconds)
}

/// `at` as Kubernetes writes a `MicroTime` (`2026-01-02T03:04:05.000000Z`).
fn micro_time(at: SystemTime) -> Option<String> {
    formatted(at, humantime::format_rfc3339_micros)
}

fn formatted(
    at: SystemTime,
    format: fn(SystemTime) -> humantime::Rfc3339Timestamp,
) -> Option<String> {
    use std::fmt::Write;
    // humantime writes years 1970 to 9999 only (and panics before 1970).
    at.duration_since(UNIX_EPOCH).ok()?;
    let mut out = String::new();
    write!(out, "{}", format(at)).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T12:00:00Z.
    const T0: u64 = 1_796_040_000;

    /// A clock the test moves.
    struct TestClock(Mutex<SystemTime>);

    impl TestClock {
        fn at(seconds: u64) -> Arc<TestClock> {
            Arc::new(TestClock(Mutex::new(
                UNIX_EPOCH + Duration::from_secs(seconds),
            )))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn store(clock: &Arc<TestClock>, limits: Limits) -> EventStore {
        EventStore::with_limits(clock.clone(), limits)
    }

    fn pod_event(pod: &str, reason: &str, message: &str) -> NewEvent {
        NewEvent {
            involved: InvolvedObject {
                kind: "Pod".into(),
                namespace: "shop".into(),
                name: pod.into(),
                uid: format!("uid-{pod}"),
                api_version: "v1".into(),
                ..Default::default()
            },
            event_type: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
            source: EventSource {
                component: "kubelet".into(),
                host: "node-a".into(),
            },
            count: 1,
        }
    }

    fn fields(object: &Object) -> Map<String, Value> {
        match &object.kind {
            Some(Body::Generic(g)) => generic::content(g),
            other => panic!("not an Event: {other:?}"),
        }
    }

    fn names(store: &EventStore, namespace: Option<&str>) -> Vec<String> {
        store
            .list(namespace)
            .0
            .iter()
            .map(|o| o.meta().name.clone())
            .collect()
    }

    fn core_json(name: &str, last: &str) -> Object {
        let mut event = GenericObject {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        let fields = json!({"involvedObject": {"kind": "Pod", "name": "web"},
                            "reason": "Created", "lastTimestamp": last});
        if let Value::Object(fields) = fields {
            generic::set_content(&mut event, &fields);
        }
        event.into_object()
    }

    #[test]
    fn repeats_count_up_one_event_named_after_the_object() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        let first = store.record_event(pod_event("web", "BackOff", "Back-off"));
        let name = first.meta().name.clone();
        let (base, hex) = name.split_once('.').unwrap();
        assert_eq!(base, "web");
        assert_eq!(
            u128::from_str_radix(hex, 16).unwrap(),
            u128::from(T0) * 1_000_000_000
        );
        assert_eq!(first.meta().namespace, "shop");
        let f = fields(&first);
        assert_eq!(f["count"], 1);
        assert_eq!(f["firstTimestamp"], "2026-11-30T12:00:00Z");
        assert_eq!(
            f["source"],
            json!({"component": "kubelet", "host": "node-a"})
        );
        assert_eq!(f["involvedObject"]["uid"], "uid-web");
        assert!(f.get("series").is_none());

        clock.advance(Duration::from_secs(30));
        store.record_event(pod_event("web", "BackOff", "Back-off"));
        clock.advance(Duration::from_secs(30));
        let third = store.record_event(pod_event("web", "BackOff", "Back-off"));
        assert_eq!(third.meta().name, name, "counted on the same Event");
        assert_eq!(third.meta().uid, first.meta().uid);
        let f = fields(&third);
        assert_eq!(f["count"], 3);
        assert_eq!(f["firstTimestamp"], "2026-11-30T12:00:00Z");
        assert_eq!(f["lastTimestamp"], "2026-11-30T12:01:00Z");
        assert_eq!(f["series"]["count"], 3);
        assert_eq!(
            f["series"]["lastObservedTime"],
            "2026-11-30T12:01:00.000000Z"
        );
        // Another message, reason or object is another Event.
        store.record_event(pod_event("web", "BackOff", "Back-off again"));
        store.record_event(pod_event("web", "Pulled", "Back-off"));
        store.record_event(pod_event("db", "BackOff", "Back-off"));
        assert_eq!(store.event_count(), 4);
        // An agent's batch of repeats counts as many.
        let mut batch = pod_event("web", "BackOff", "Back-off");
        batch.count = 5;
        assert_eq!(fields(&store.record_event(batch))["count"], 8);
    }

    #[test]
    fn events_last_seen_an_hour_ago_are_dropped() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        store.record_event(pod_event("old", "Pulled", "x"));
        clock.advance(Duration::from_secs(30 * 60));
        store.record_event(pod_event("recent", "Pulled", "x"));
        clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(store.event_count(), 2);
        let revision = store.revision();
        clock.advance(Duration::from_secs(60));
        let listed = names(&store, None);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(listed[0].starts_with("recent."), "{listed:?}");
        let changes = store.changes_after(revision).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].change_type, ChangeType::Deleted);
        assert!(changes[0].object().meta().name.starts_with("old."));
        // A repeat keeps an Event: it was seen again.
        clock.advance(Duration::from_secs(20 * 60));
        store.record_event(pod_event("recent", "Pulled", "x"));
        clock.advance(Duration::from_secs(50 * 60));
        store.expire();
        assert_eq!(store.event_count(), 1);
        clock.advance(Duration::from_secs(10 * 60));
        store.expire();
        assert_eq!(store.event_count(), 0);
    }

    #[test]
    fn beyond_the_bound_the_least_recently_seen_go_first() {
        let clock = TestClock::at(T0);
        let limits = Limits {
            max_events: 3,
            ..Limits::default()
        };
        let store = store(&clock, limits);
        for pod in ["a", "b", "c"] {
            store.record_event(pod_event(pod, "Pulled", "x"));
            clock.advance(Duration::from_secs(1));
        }
        // Seen again: now the most recent.
        store.record_event(pod_event("a", "Pulled", "x"));
        clock.advance(Duration::from_secs(1));
        store.record_event(pod_event("d", "Pulled", "x"));
        clock.advance(Duration::from_secs(1));
        store.record_event(pod_event("e", "Pulled", "x"));
        let mut left: Vec<String> = names(&store, None)
            .iter()
            .map(|n| n.split('.').next().unwrap_or("").to_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "d", "e"]);
    }

    #[test]
    fn lists_are_by_namespace_and_name() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        store
            .create(core_json("b", "2026-11-30T12:00:00Z"))
            .unwrap();
        store
            .create(core_json("a", "2026-11-30T12:00:00Z"))
            .unwrap();
        let mut node = pod_event("n1", "NodeNotReady", "Node n1 status is now: NodeNotReady");
        node.involved.kind = "Node".into();
        node.involved.namespace = String::new();
        store.record_event(node);
        assert_eq!(names(&store, Some("shop")), ["a", "b"]);
        let all = store.list(None).0;
        let namespaces: Vec<&str> = all.iter().map(|o| o.meta().namespace.as_str()).collect();
        assert_eq!(
            namespaces,
            ["default", "shop", "shop"],
            "Node Events go to default"
        );
        assert!(names(&store, Some("other")).is_empty());
        assert_eq!(store.list(None).1, store.revision());
    }

    #[test]
    fn a_watch_from_a_resource_version_gets_exactly_the_changes_after_it() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        let start = store.revision();
        assert_eq!(start, T0 * 1_000_000, "resourceVersions start at the time");
        let a = store.record_event(pod_event("a", "Pulled", "x"));
        let from: u64 = a.meta().resource_version.parse().unwrap();
        assert_eq!(from, start + 1);
        let b = store.record_event(pod_event("b", "Pulled", "x"));
        store.record_event(pod_event("b", "Pulled", "x"));
        let gone = b.meta().name.clone();
        store.delete("shop", &gone, "").unwrap();
        let changes = store.changes_after(from).unwrap();
        let seen: Vec<(u64, ChangeType)> = changes
            .iter()
            .map(|c| (c.revision, c.change_type))
            .collect();
        assert_eq!(
            seen,
            [
                (from + 1, ChangeType::Added),
                (from + 2, ChangeType::Modified),
                (from + 3, ChangeType::Deleted)
            ]
        );
        for change in &changes {
            assert_eq!(change.object().meta().name, gone);
            assert_eq!(
                change.object().meta().resource_version,
                change.revision.to_string()
            );
        }
        assert_eq!(store.changes_after(start).unwrap().len(), 4);
        assert!(store.changes_after(store.revision()).unwrap().is_empty());
    }

    #[test]
    fn versions_below_the_start_above_the_newest_or_past_the_history_are_expired() {
        let clock = TestClock::at(T0);
        let limits = Limits {
            max_history: 2,
            ..Limits::default()
        };
        let store = store(&clock, limits);
        let start = store.revision();
        let expired =
            |r: Result<Vec<Arc<Change>>>| matches!(r, Err(EventStoreError::Expired { .. }));
        assert!(
            expired(store.changes_after(start - 1)),
            "an earlier leader's"
        );
        assert!(expired(store.changes_after(start + 1)), "not issued yet");
        for pod in ["a", "b", "c"] {
            store.record_event(pod_event(pod, "Pulled", "x"));
        }
        assert!(expired(store.changes_after(start)), "past the history");
        assert_eq!(store.changes_after(start + 1).unwrap().len(), 2);

        // A new leadership: empty, every watch ended, versions above all.
        let mut live = store.subscribe();
        let before = store.revision();
        store.restart();
        assert!(matches!(live.try_recv(), Ok(Notice::Restarted)));
        assert_eq!(store.event_count(), 0);
        assert!(store.revision() > before);
        assert!(expired(store.changes_after(before)));
        clock.advance(Duration::from_secs(5));
        store.restart();
        assert_eq!(store.revision(), (T0 + 5) * 1_000_000);
    }

    #[test]
    fn written_events_are_conditional_and_events_k8s_io_ones_are_held_as_core() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        let created = store
            .create(core_json("e1", "2026-11-30T11:59:00Z"))
            .unwrap();
        assert!(!created.meta().uid.is_empty());
        assert_eq!(created.meta().creation_timestamp, "2026-11-30T12:00:00Z");
        assert!(matches!(
            store.create(core_json("e1", "2026-11-30T11:59:00Z")),
            Err(EventStoreError::AlreadyExists { .. })
        ));
        let mut stale = core_json("e1", "2026-11-30T12:00:00Z");
        stale.meta_mut().unwrap().resource_version = "1".into();
        assert!(matches!(
            store.update(stale),
            Err(EventStoreError::Conflict { .. })
        ));
        let mut fresh = core_json("e1", "2026-11-30T12:00:00Z");
        fresh.meta_mut().unwrap().resource_version = created.meta().resource_version.clone();
        let updated = store.update(fresh).unwrap();
        assert_eq!(updated.meta().uid, created.meta().uid);
        assert_ne!(
            updated.meta().resource_version,
            created.meta().resource_version
        );
        assert!(matches!(
            store.delete("shop", "e1", "1"),
            Err(EventStoreError::Conflict { .. })
        ));
        store.delete("shop", "e1", "").unwrap();
        assert!(matches!(
            store.get("shop", "e1"),
            Err(EventStoreError::NotFound { .. })
        ));

        let mut v1 = GenericObject {
            api_version: "events.k8s.io/v1".into(),
            kind: "Event".into(),
            metadata: Some(ObjectMeta {
                generate_name: "web-".into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        let sent = json!({
            "regarding": {"kind": "Pod", "name": "web"},
            "note": "hello",
            "reportingController": "me",
            "eventTime": "2026-11-30T12:00:00.000000Z"
        });
        if let Value::Object(sent) = sent {
            generic::set_content(&mut v1, &sent);
        }
        let held = store.create(v1.into_object()).unwrap();
        assert!(held.meta().name.starts_with("web-"));
        assert_eq!(held.kind().unwrap(), Kind::Event);
        let f = fields(&held);
        assert_eq!(f["involvedObject"]["name"], "web");
        assert_eq!(f["message"], "hello");
        assert_eq!(f["reportingComponent"], "me");
        assert!(f.get("regarding").is_none());
        let not_an_event = skiff_proto::v1::Pod::default().into_object();
        assert!(matches!(
            store.create(not_an_event),
            Err(EventStoreError::Invalid(_))
        ));
    }

    #[test]
    fn long_messages_are_cut_and_huge_events_refused() {
        let clock = TestClock::at(T0);
        let store = store(&clock, Limits::default());
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let kept = store.record_event(pod_event("web", "Failed", &long));
        let message = fields(&kept)["message"].as_str().unwrap().to_owned();
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        let mut huge = core_json("big", "2026-11-30T12:00:00Z");
        if let Some(Body::Generic(g)) = huge.kind.as_mut() {
            let mut f = generic::content(g);
            f.insert("message".into(), json!("x".repeat(MAX_EVENT_BYTES)));
            generic::set_content(g, &f);
        }
        assert!(matches!(
            store.create(huge),
            Err(EventStoreError::Invalid(_))
        ));
    }
}
