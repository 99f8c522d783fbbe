//! The state machine: a revisioned key-value map of objects, held decoded
//! in the [`ObjectCache`] and checkpointed to redb, the recent history of
//! changes for watchers, and snapshots.
//!
//! Only [`StateMachine::apply`] and snapshot installation change state; the
//! API reads through the shared [`ObjectStore`].
//!
//! Durability: the Raft log is the durable record of every write; applying
//! a batch changes memory only, and a background thread writes the changes
//! to redb about once a second (`checkpoint`). After a crash, openraft
//! re-applies the committed entries after the last checkpoint. A snapshot is
//! built from a fresh checkpoint, so the log is never purged past it.
//!
//! Watch history lives in memory: the last [`EVENT_RETENTION`] changes, or
//! fewer when they hold more than [`EVENT_RETENTION_BYTES`] of encoded
//! objects, counting the versions before changes kept for selected
//! watches ([`StoredEvent::previous`]) (never fewer than
//! [`EVENT_RETENTION_MIN`]). A restarted master starts its history at its current revision; a watcher
//! asking for anything older is told to re-list, as with etcd compaction.

mod checkpoint;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftLogId};
use skiff_proto::api::Object;
use tokio::sync::{broadcast, mpsc};

use super::cache::{CachedChange, ObjectCache};
use super::{
    storage_io_error, Entry, LogId, ProposalResult, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use skiff_objects::{legacy_bodies, Kind, ObjectExt};

pub use checkpoint::{CHECKPOINT_CHANGES, CHECKPOINT_EVERY};

/// How many recent changes are kept for watchers to resume from.
pub const EVENT_RETENTION: usize = 10_000;
/// The most encoded bytes of kept changes: 10,000 changes of pods with
/// their status held about 20 MiB of a 1,000-node master's memory
/// (`skiff-bench schedule`, heaptrack). Beyond it the oldest go, as with
/// kube-apiserver's bounded watch cache; a watcher from a change no longer
/// kept lists again.
pub const EVENT_RETENTION_BYTES: usize = 8 << 20;
/// Changes kept whatever their size.
pub const EVENT_RETENTION_MIN: usize = 1_000;

/// Errors reading or writing the state machine's database.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("state database: {0}")]
    Db(Box<redb::Error>),
    #[error("state database: cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the state checkpoint thread: {source}; the system is short of threads or memory")]
    CheckpointThread { source: std::io::Error },
}

type Result<T> = std::result::Result<T, StateMachineError>;

fn dberr<E: Into<redb::Error>>(e: E) -> StateMachineError {
    StateMachineError::Db(Box::new(e.into()))
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub revision: u64,
    pub kind: Kind,
    pub namespace: String,
    /// `EventType` as its protobuf number.
    pub event_type: i32,
    /// For pods: the node they are bound to (empty when unbound), so node
    /// watches can route events without decoding them.
    pub node: String,
    /// The prost-encoded `Object`, shared (reference-counted) with every
    /// watch that sends it.
    pub object: Bytes,
    /// The prost-encoded object before the change, kept only when the
    /// change altered what label or field selectors read of it
    /// (`objects::selectable::selected_alike`): a MODIFIED event, or a
    /// DELETED one made by an update. Watches with a selector read it to
    /// send DELETED when an object stops matching and ADDED when it starts
    /// to. Empty otherwise, as it is for most changes (status updates).
    /// Always kept for a DELETED event made by an update (its last
    /// finalizer removed), whose object differs from the version before.
    pub previous: Bytes,
    /// The revision of the version this change replaced (0 for a create):
    /// what [`ObjectStore::list_at`] rebuilds an earlier list from.
    pub previous_revision: u64,
}

/// What the apply path tells live watchers.
#[derive(Debug, Clone)]
pub enum Notification {
    /// A committed change, and the object it leaves (for a delete: the
    /// object as it was), decoded once and shared with the cache, so that
    /// no subscriber decodes it again.
    Event(Arc<StoredEvent>, Arc<Object>),
    /// The state was replaced by a snapshot: history before `revision` is
    /// gone, and watchers must re-list.
    Reset { revision: u64 },
}

/// Which changes a subscriber hears ([`ObjectStore::subscribe_to`]): those
/// of the kinds it names, and of every custom kind if it says so. Resets
/// reach every subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindFilter {
    /// The kinds heard, or every kind if `None`.
    pub kinds: Option<&'static [Kind]>,
    /// Also every custom kind.
    pub custom: bool,
}

impl KindFilter {
    /// Every change.
    pub const ALL: KindFilter = KindFilter {
        kinds: None,
        custom: true,
    };

    /// The changes to objects of `kinds` only.
    pub const fn only(kinds: &'static [Kind]) -> KindFilter {
        KindFilter {
            kinds: Some(kinds),
            custom: false,
        }
    }

    /// Whether a change to an object of `kind` is heard.
    pub fn hears(&self, kind: Kind) -> bool {
        match self.kinds {
            None => true,
            Some(kinds) => {
                kinds.contains(&kind) || (self.custom && matches!(kind, Kind::Custom(_)))
            }
        }
    }
}

/// A live subscription to the changes a [`KindFilter`] hears
/// ([`ObjectStore::subscribe_to`]). It answers as a broadcast receiver
/// does, lagging once [`NOTIFY_CAPACITY`] notifications wait unread, but
/// holds only what waits in it: a broadcast channel keeps a slot for each
/// of its capacity from the start (256 KB each), which a channel for each
/// controller's filter made 4 MiB of a scheduling master's memory.
pub struct Subscription(Subscribed);

enum Subscribed {
    /// Everything, from the store's one broadcast channel.
    Broadcast(broadcast::Receiver<Notification>),
    /// What the filter hears, with how many were dropped since the last
    /// receive because the queue was full.
    Queue {
        rx: mpsc::Receiver<Notification>,
        missed: Arc<AtomicU64>,
    },
}

impl Subscription {
    /// Every notification of a broadcast channel.
    pub fn broadcast(rx: broadcast::Receiver<Notification>) -> Subscription {
        Subscription(Subscribed::Broadcast(rx))
    }

    /// The next notification; `Lagged` once some were missed (the
    /// subscriber then reads the state again), `Closed` once the store is
    /// gone.
    pub async fn recv(&mut self) -> std::result::Result<Notification, broadcast::error::RecvError> {
        match &mut self.0 {
            Subscribed::Broadcast(rx) => rx.recv().await,
            Subscribed::Queue { rx, missed } => {
                let lost = missed.swap(0, Ordering::AcqRel);
                if lost > 0 {
                    return Err(broadcast::error::RecvError::Lagged(lost));
                }
                rx.recv().await.ok_or(broadcast::error::RecvError::Closed)
            }
        }
    }

    /// The next notification if one waits.
    pub fn try_recv(
        &mut self,
    ) -> std::result::Result<Notification, broadcast::error::TryRecvError> {
        match &mut self.0 {
            Subscribed::Broadcast(rx) => rx.try_recv(),
            Subscribed::Queue { rx, missed } => {
                let lost = missed.swap(0, Ordering::AcqRel);
                if lost > 0 {
                    return Err(broadcast::error::TryRecvError::Lagged(lost));
                }
                rx.try_recv().map_err(|e| match e {
                    mpsc::error::TryRecvError::Empty => broadcast::error::TryRecvError::Empty,
                    mpsc::error::TryRecvError::Disconnected => {
                        broadcast::error::TryRecvError::Closed
                    }
                })
            }
        }
    }
}

/// The store's end of a [`Subscription`] with a filter.
struct FilteredSender {
    filter: KindFilter,
    tx: mpsc::Sender<Notification>,
    missed: Arc<AtomicU64>,
}

impl FilteredSender {
    /// Queues `notification`, or counts it missed when the queue is full;
    /// false once the subscriber is gone.
    fn send(&self, notification: Notification) -> bool {
        match self.tx.try_send(notification) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.missed.fetch_add(1, Ordering::AcqRel);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Why a list at an exact revision ([`ObjectStore::list_at`]) cannot be
/// answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListAtError {
    /// The history no longer holds what the list at that revision needs.
    #[error(transparent)]
    Compacted(#[from] Compacted),
    /// The revision is newer than this master has applied.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooNew { requested: u64, current: u64 },
}

/// A watch asked for history that is no longer kept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("revision {requested} has been compacted; the oldest revision that can be watched from is {oldest}; list again and watch from the list's revision")]
pub struct Compacted {
    pub requested: u64,
    pub oldest: u64,
}

#[derive(Debug, Clone, Default)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: u64,
}

/// Recent changes, oldest first. Revisions are contiguous: every revision
/// is exactly one change, so `events[i].revision == compacted + 1 + i`.
#[derive(Debug, Default)]
struct History {
    /// The newest revision no longer kept.
    compacted: u64,
    /// The revision the history began at (this master's start, or the
    /// last snapshot installed): nothing before it was ever kept.
    began: u64,
    /// Per kind, the newest of its changes dropped from the history: a
    /// reader of one kind has missed nothing of it after that
    /// ([`ObjectStore::kind_events_after`]).
    dropped: HashMap<Kind, u64>,
    events: std::collections::VecDeque<Arc<StoredEvent>>,
    /// What the kept events hold ([`StoredEvent::held_bytes`]).
    bytes: usize,
}

impl StoredEvent {
    /// Memory this event holds beyond its `Arc`: the encoded object (and
    /// the one before, when kept) and the names.
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<StoredEvent>()
            + self.object.len()
            + self.previous.len()
            + self.namespace.capacity()
            + self.node.capacity()
    }
}

impl History {
    /// Adds `events` and drops the oldest beyond `max_changes` changes or
    /// `max_bytes` bytes (keeping at least [`EVENT_RETENTION_MIN`]).
    fn extend(&mut self, events: &[Arc<StoredEvent>], max_changes: usize, max_bytes: usize) {
        for event in events {
            self.bytes += event.held_bytes();
            self.events.push_back(event.clone());
        }
        while self.events.len() > max_changes
            || (self.bytes > max_bytes && self.events.len() > EVENT_RETENTION_MIN)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.held_bytes());
            self.compacted = old.revision;
            self.dropped.insert(old.kind, old.revision);
        }
    }

    /// Begins again at `revision`, keeping nothing.
    fn begin_at(&mut self, revision: u64) {
        self.events.clear();
        self.bytes = 0;
        self.dropped.clear();
        self.compacted = revision;
        self.began = revision;
    }
}

/// `items`, a list at `current`, as it was at the earlier `revision`,
/// from `changes`: the kept changes of the list's kind (and namespace)
/// up to `current`, the history holding everything after `oldest`.
fn rewind(
    items: Vec<Arc<Object>>,
    changes: &[Arc<StoredEvent>],
    oldest: u64,
    revision: u64,
    current: u64,
) -> std::result::Result<Vec<Arc<Object>>, ListAtError> {
    use skiff_proto::api::EventType;
    let compacted = Compacted {
        requested: revision,
        oldest,
    };
    if revision < oldest {
        return Err(compacted.into());
    }
    let key_of = |object: &Object| (object.meta().namespace.clone(), object.meta().name.clone());
    // Read for a list and dropped: not shrunk as the cache's objects are.
    let decode = |bytes: &[u8]| legacy_bodies::decode(bytes).map_err(|_| compacted.clone());
    // Per object changed after `revision`: its first change after it, and
    // its last change up to it (if still kept).
    let mut first_after: BTreeMap<(String, String), &StoredEvent> = BTreeMap::new();
    let mut last_upto: HashMap<(String, String), &StoredEvent> = HashMap::new();
    for event in changes
        .iter()
        .map(Arc::as_ref)
        .filter(|e| e.revision <= current)
    {
        let key = key_of(&decode(&event.object)?);
        if event.revision > revision {
            first_after.entry(key).or_insert(event);
        } else {
            last_upto.insert(key, event);
        }
    }
    let mut listed: BTreeMap<(String, String), Arc<Object>> =
        items.into_iter().map(|o| (key_of(&o), o)).collect();
    for (key, first) in first_after {
        listed.remove(&key);
        if first.event_type == EventType::Added as i32 {
            // Made after `revision`: not in the list then.
            continue;
        }
        let then = if let Some(last) = last_upto.get(&key) {
            // Its version at `revision` is a change still kept. (A delete
            // there would make the first change after it an ADDED.)
            if last.event_type == EventType::Deleted as i32 {
                continue;
            }
            decode(&last.object)?
        } else if !first.previous.is_empty() {
            decode(&first.previous)?
        } else if first.event_type == EventType::Deleted as i32 && first.previous_revision > 0 {
            // A plain delete records the object as it was, at the delete's
            // revision: as it was stored, at its own.
            let mut object = decode(&first.object)?;
            if let Ok(meta) = object.meta_mut() {
                meta.resource_version = first.previous_revision.to_string();
            }
            object
        } else {
            return Err(compacted.into());
        };
        listed.insert(key, Arc::new(then));
    }
    Ok(listed.into_values().collect())
}

/// The snapshot's contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotData {
    revision: u64,
    #[serde(with = "keyed_bytes")]
    objects: Vec<(String, Vec<u8>)>,
}

/// (key, encoded object) pairs with each object's bytes written as one
/// run (`serde_bytes`) rather than as a sequence of single bytes: the same
/// bincode bytes, without a call per byte.
mod keyed_bytes {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(
        pairs: &[(String, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(pairs.len()))?;
        for (key, bytes) in pairs {
            seq.serialize_element(&(key, Bytes::new(bytes)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let pairs: Vec<(String, ByteBuf)> = Vec::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .map(|(key, bytes)| (key, bytes.into_vec()))
            .collect())
    }
}

/// A consistent copy of the state machine: everything applied when it was
/// taken, as openraft carries a snapshot (`meta` and `data`), with what
/// the data holds.
#[derive(Debug, Clone)]
pub struct StoreSnapshot {
    pub meta: SnapshotMeta,
    /// The revision of the last change in it.
    pub revision: u64,
    /// How many objects it holds.
    pub objects: u64,
    /// The encoded objects and revision, as `ObjectStore::install` and
    /// openraft's snapshot transfer take them.
    pub data: Vec<u8>,
}

/// One committed change: what watchers are told, what the cache takes, and
/// where the next checkpoint writes it.
pub(super) struct Committed {
    key: String,
    event: Arc<StoredEvent>,
    cached: CachedChange,
}

/// The object store's read side, shared by the API and the state machine.
/// Reads come from the decoded [`ObjectCache`]; redb, written by
/// checkpoints, and the Raft log are what survive a restart.
pub struct ObjectStore {
    checkpoints: checkpoint::Checkpoints,
    cache: ObjectCache,
    state: Mutex<AppliedState>,
    history: Mutex<History>,
    retention: usize,
    retention_bytes: usize,
    notify: broadcast::Sender<Notification>,
    /// The same notifications, a channel for each kind somebody follows
    /// ([`ObjectStore::subscribe_kind`]), so that a watch of one kind is not
    /// woken by every change of every other.
    kind_notify: Mutex<HashMap<Kind, broadcast::Sender<Notification>>>,
    /// The same notifications, a queue for each subscriber with a filter
    /// ([`ObjectStore::subscribe_to`]): a controller is woken only by the
    /// kinds it reconciles on, not by every write.
    filtered_notify: Mutex<Vec<FilteredSender>>,
    snapshot_path: PathBuf,
    /// The data format every member reads, as the leader's writer last
    /// saw it (`Cluster::members_data_format`): snapshots carry each kind
    /// held as a document as a document only from the format it moved at
    /// on. Until then (and on every follower: `0`) snapshots carry its
    /// protobuf model, which a master of an older release that falls
    /// behind the log can install.
    snapshot_reader_format: AtomicU32,
}

/// Notifications a subscriber may fall behind by before it is told it
/// lagged (and reads the history instead), on each channel.
const NOTIFY_CAPACITY: usize = 4096;

/// openraft's handle on the state machine.
pub struct StateMachine {
    store: Arc<ObjectStore>,
}

/// Builds snapshots from a consistent read of the state machine.
pub struct SnapshotBuilder {
    store: Arc<ObjectStore>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| StateMachineError::Decode {
        what,
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).unwrap_or_default()
}

/// Snapshot objects with those of the kinds held as documents that a
/// reader of data format `format` reads only in their protobuf models
/// (keyed `Secret/...`) encoded so; an object that cannot be is kept as it
/// is.
fn for_snapshot_reader(objects: Vec<(String, Vec<u8>)>, format: u32) -> Vec<(String, Vec<u8>)> {
    if format >= legacy_bodies::LATEST_FORMAT {
        return objects;
    }
    let moved = |key: &str| {
        key.split_once('/')
            .is_some_and(|(kind, _)| legacy_bodies::reads_differently(kind, format))
    };
    objects
        .into_iter()
        .map(|(key, bytes)| {
            if !moved(&key) {
                return (key, bytes);
            }
            match legacy_bodies::encoded_for_member(&bytes, format) {
                Some(converted) => (key, converted),
                None => (key, bytes),
            }
        })
        .collect()
}

/// An object for the cache, decoded with no spare room in its lists; one
/// of a kind now held as a document, written in its protobuf model by an
/// older release, made its document (`legacy_bodies`).
fn decode_object(bytes: &[u8]) -> Result<Object> {
    let mut object = legacy_bodies::decode(bytes).map_err(|e| StateMachineError::Decode {
        what: "object",
        reason: e.to_string(),
    })?;
    object.shrink_to_fit();
    Ok(object)
}

impl ObjectStore {
    /// Opens (or creates) the state database in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<ObjectStore>> {
        ObjectStore::open_with_retention(dir, EVENT_RETENTION)
    }

    /// Like [`ObjectStore::open`], keeping `retention` changes for watchers.
    pub fn open_with_retention(dir: &Path, retention: usize) -> Result<Arc<ObjectStore>> {
        ObjectStore::open_with(dir, retention, CHECKPOINT_EVERY)
    }

    fn open_with(
        dir: &Path,
        retention: usize,
        checkpoint_every: std::time::Duration,
    ) -> Result<Arc<ObjectStore>> {
        let (checkpoints, loaded) = checkpoint::Checkpoints::open(dir, checkpoint_every)?;
        let state = loaded.state;
        let (notify, _) = broadcast::channel(NOTIFY_CAPACITY);
        let mut history = History::default();
        history.begin_at(state.revision);
        let cache = ObjectCache::default();
        cache.reset(loaded.objects, state.revision);
        Ok(Arc::new(ObjectStore {
            checkpoints,
            cache,
            state: Mutex::new(state),
            history: Mutex::new(history),
            retention: retention.max(1),
            retention_bytes: EVENT_RETENTION_BYTES,
            notify,
            kind_notify: Mutex::new(HashMap::new()),
            filtered_notify: Mutex::new(Vec::new()),
            snapshot_path: dir.join(super::RAFT_SNAPSHOT_FILE),
            snapshot_reader_format: AtomicU32::new(0),
        }))
    }

    fn kind_notify(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Kind, broadcast::Sender<Notification>>> {
        self.kind_notify.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn filtered_notify(&self) -> std::sync::MutexGuard<'_, Vec<FilteredSender>> {
        self.filtered_notify
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AppliedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision of the last change applied here.
    pub fn revision(&self) -> u64 {
        self.state().revision
    }

    /// The log position applied here.
    pub fn last_applied(&self) -> Option<LogId> {
        self.state().last_applied
    }

    /// The cluster membership as of the last applied entry.
    pub fn membership(&self) -> StoredMembership {
        self.state().membership.clone()
    }

    /// One object, if it exists.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Object>> {
        Ok(self
            .cache
            .get(kind, namespace, name)
            .map(|o| Object::clone(&o)))
    }

    /// Every object of a kind (in one namespace, or all), with the revision
    /// the list reflects.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<(Vec<Object>, u64)> {
        let (objects, revision) = self.cache.list(kind, namespace);
        Ok((objects.iter().map(|o| Object::clone(o)).collect(), revision))
    }

    /// The decoded, indexed cache behind reads: objects shared, not copied.
    pub fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    /// Live notifications of changes. Subscribe before reading history so
    /// that nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.notify.subscribe()
    }

    /// Live notifications of the changes to objects of `kind` only (and of
    /// every reset): what a watch of one kind needs, without waking for
    /// the rest. Revisions come with gaps (the other kinds' changes).
    /// Subscribe before reading history, as with [`Self::subscribe`].
    pub fn subscribe_kind(&self, kind: Kind) -> broadcast::Receiver<Notification> {
        let mut kinds = self.kind_notify();
        // Kinds nobody follows any more (a custom kind's last watch gone).
        kinds.retain(|_, sender| sender.receiver_count() > 0);
        kinds
            .entry(kind)
            .or_insert_with(|| broadcast::channel(NOTIFY_CAPACITY).0)
            .subscribe()
    }

    /// Live notifications of the changes that `filter` hears (and of every
    /// reset): what a controller needs, without waking for the writes of
    /// kinds it never looks at. [`KindFilter::ALL`] is [`Self::subscribe`].
    pub fn subscribe_to(&self, filter: KindFilter) -> Subscription {
        if filter.kinds.is_none() {
            return Subscription::broadcast(self.subscribe());
        }
        let (tx, rx) = mpsc::channel(NOTIFY_CAPACITY);
        let missed = Arc::new(AtomicU64::new(0));
        let mut filtered = self.filtered_notify();
        // Subscribers that are gone.
        filtered.retain(|sender| !sender.tx.is_closed());
        filtered.push(FilteredSender {
            filter,
            tx,
            missed: missed.clone(),
        });
        Subscription(Subscribed::Queue { rx, missed })
    }

    /// Kept changes with a revision greater than `after`, oldest first, at
    /// most `limit` of them: the whole history, as tests read it (watches
    /// read their kind's: [`Self::kind_events_after`]).
    #[cfg(test)]
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<std::result::Result<Vec<Arc<StoredEvent>>, Compacted>> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if after < history.compacted {
            return Ok(Err(Compacted {
                requested: after,
                oldest: history.compacted,
            }));
        }
        let skip = (after - history.compacted) as usize;
        Ok(Ok(history
            .events
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()))
    }

    /// Kept changes of `kind` with a revision greater than `after`, oldest
    /// first, at most `limit`. Compacted only when a change of `kind` after
    /// `after` is no longer kept (or the history began after `after`): a
    /// watch of a kind that fell behind its live channel
    /// ([`Self::subscribe_kind`]) catches up from its last change of that
    /// kind, which may be older than the history while other kinds'
    /// changes went by.
    pub fn kind_events_after(
        &self,
        kind: Kind,
        after: u64,
        limit: usize,
    ) -> std::result::Result<Vec<Arc<StoredEvent>>, Compacted> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = history.dropped.get(&kind).copied().unwrap_or(0);
        if after < history.began || dropped > after {
            return Err(Compacted {
                requested: after,
                oldest: history.compacted,
            });
        }
        let skip = after.saturating_sub(history.compacted) as usize;
        Ok(history
            .events
            .iter()
            .skip(skip)
            .filter(|e| e.kind == kind)
            .take(limit)
            .cloned()
            .collect())
    }

    /// Every object of `kind` (in one namespace, or all) as it was at
    /// `revision`, in key order: the cache's list, with each object
    /// changed since put back as it was then, from the history. Refused
    /// when `revision` is newer than this master's, and as compacted when
    /// a version it needs is no longer kept (its change, or the one that
    /// replaced it, older than the history).
    pub fn list_at(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        revision: u64,
    ) -> std::result::Result<Vec<Arc<Object>>, ListAtError> {
        // Under the history's lock the cache and the history are at the
        // same revision (`apply_entries` changes both under it). Only the
        // list and the changes it needs are taken under it; they are read
        // after it is released, so that applying is not held up.
        let (items, current, compacted, changes) = {
            let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let (items, current) = self.cache.list(kind, namespace);
            if revision >= current {
                drop(history);
                return if revision == current {
                    Ok(items)
                } else {
                    Err(ListAtError::TooNew {
                        requested: revision,
                        current,
                    })
                };
            }
            let ours = |e: &&Arc<StoredEvent>| {
                e.revision <= current
                    && e.kind == kind
                    && namespace.is_none_or(|ns| e.namespace == ns)
            };
            let changes: Vec<Arc<StoredEvent>> =
                history.events.iter().filter(ours).cloned().collect();
            (items, current, history.compacted, changes)
        };
        rewind(items, &changes, compacted, revision, current)
    }

    /// Applies committed log entries: what openraft does through
    /// `StateMachine::apply`, and `--cluster-reset` with the entries of a
    /// stopped master's log.
    pub(crate) fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<ProposalResult>> {
        let mut state = self.state().clone();
        let mut results = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        {
            let mut objects = writes::Objects::new(&self.cache);
            for entry in entries {
                state.last_applied = Some(*entry.get_log_id());
                match entry.payload {
                    EntryPayload::Blank => results.push(Vec::new()),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(state.last_applied, m);
                        results.push(Vec::new());
                    }
                    EntryPayload::Normal(proposal) => {
                        let mut outcomes = Vec::with_capacity(proposal.commands.len());
                        for command in proposal.commands {
                            outcomes.push(writes::execute(
                                command,
                                &mut objects,
                                &mut state.revision,
                                &mut events,
                            ));
                        }
                        results.push(outcomes);
                    }
                }
            }
        }
        self.checkpoints
            .record(events.iter().map(|c| (c.key.as_str(), &c.event)), &state);
        let (events, cached): (Vec<Arc<StoredEvent>>, Vec<CachedChange>) =
            events.into_iter().map(|c| (c.event, c.cached)).unzip();
        let objects: Vec<Arc<Object>> = cached.iter().map(|c| c.object.clone()).collect();
        // The cache first: whoever is notified of a change can read it.
        // The history's lock is held across both, so that a list at an
        // earlier revision (`list_at`) sees them at the same revision.
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            self.cache.apply(&cached, state.revision);
            if !events.is_empty() {
                history.extend(&events, self.retention, self.retention_bytes);
            }
        }
        *self.state() = state;
        // Held while sending, so that a kind subscribed meanwhile either
        // gets an event or finds it in the history.
        let kinds = self.kind_notify();
        let mut filtered = self.filtered_notify();
        for (event, object) in events.into_iter().zip(objects) {
            // No receivers is fine: nobody is watching.
            if let Some(sender) = kinds.get(&event.kind) {
                let _ = sender.send(Notification::Event(event.clone(), object.clone()));
            }
            // Subscribers that are gone (a leadership's controllers) are let
            // go as they are found.
            filtered.retain(|sender| {
                !sender.filter.hears(event.kind)
                    || sender.send(Notification::Event(event.clone(), object.clone()))
            });
            let _ = self.notify.send(Notification::Event(event, object));
        }
        Ok(results)
    }

    /// A consistent snapshot of everything applied so far: a checkpoint
    /// (everything applied onto disk), then one read of it, so the
    /// snapshot never covers log entries the checkpoint lacks. Writes no
    /// snapshot file; blocking (disk I/O).
    pub fn snapshot(&self) -> Result<StoreSnapshot> {
        self.checkpoints.checkpoint()?;
        let (
            AppliedState {
                last_applied,
                membership,
                revision,
            },
            objects,
        ) = self.checkpoints.read()?;
        let count = objects.len() as u64;
        let format = self.snapshot_reader_format.load(Ordering::Relaxed);
        let objects = for_snapshot_reader(objects, format);
        let data = encode(&SnapshotData { revision, objects });
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, revision),
            None => format!("empty-{revision}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        Ok(StoreSnapshot {
            meta,
            revision,
            objects: count,
            data,
        })
    }

    /// Snapshots are to carry what a master of data format `format`
    /// reads (every member's, as the leader's writer last saw it).
    pub fn set_snapshot_reader_format(&self, format: u32) {
        self.snapshot_reader_format.store(format, Ordering::Relaxed);
    }

    /// openraft's snapshot: [`ObjectStore::snapshot`], kept as the
    /// current Raft snapshot file.
    fn build_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>)> {
        let StoreSnapshot { meta, data, .. } = self.snapshot()?;
        self.save_snapshot_file(&meta, &data)?;
        Ok((meta, data))
    }

    fn save_snapshot_file(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let file_error = |source| StateMachineError::SnapshotFile {
            path: self.snapshot_path.clone(),
            source,
        };
        let tmp = self.snapshot_path.with_extension("tmp");
        let bytes = encode(&(meta, data));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(file_error)?;
            f.write_all(&bytes).map_err(file_error)?;
            f.sync_all().map_err(file_error)?;
        }
        std::fs::rename(&tmp, &self.snapshot_path).map_err(file_error)?;
        Ok(())
    }

    fn load_snapshot_file(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => Ok(Some(decode("snapshot file", &bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateMachineError::SnapshotFile {
                path: self.snapshot_path.clone(),
                source,
            }),
        }
    }

    /// Replaces the whole state with a snapshot's (`data` as in
    /// [`StoreSnapshot::data`], at `meta`'s position and membership),
    /// durably, and keeps it as the current Raft snapshot file: what a
    /// member far behind receives, and what `--cluster-reset` builds a new
    /// data dir from. Watchers are told to re-list.
    pub(crate) fn install(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        let snapshot: SnapshotData = decode("snapshot", data)?;
        let state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            revision: snapshot.revision,
        };
        self.checkpoints.replace_all(&snapshot.objects, &state)?;
        let objects = decode_all(&snapshot.objects)?;
        {
            // As in `apply_entries`: cache and history change together.
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            self.cache.reset(objects, snapshot.revision);
            history.begin_at(snapshot.revision);
        }
        *self.state() = state;
        self.save_snapshot_file(meta, data)?;
        let reset = Notification::Reset {
            revision: snapshot.revision,
        };
        for sender in self.kind_notify().values() {
            let _ = sender.send(reset.clone());
        }
        self.filtered_notify()
            .retain(|sender| sender.send(reset.clone()));
        let _ = self.notify.send(reset);
        Ok(())
    }
}

#[cfg(test)]
impl ObjectStore {
    /// Applies `commands` as the next log entry, as openraft would: how tests
    /// anywhere in the crate put objects into a store.
    pub(crate) fn apply_commands(&self, commands: Vec<super::Command>) -> ProposalResult {
        let index = self.last_applied().map_or(1, |log_id| log_id.index + 1);
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(super::Proposal { commands }),
        };
        let mut results = self.apply_entries(vec![entry]).expect("applied");
        results.pop().unwrap_or_default()
    }
}

/// A snapshot's objects, decoded, with their encoded sizes.
fn decode_all(objects: &[(String, Vec<u8>)]) -> Result<Vec<(Arc<Object>, usize)>> {
    objects
        .iter()
        .map(|(_, v)| Ok((Arc::new(decode_object(v)?), v.len())))
        .collect()
}

impl StateMachine {
    pub fn new(store: Arc<ObjectStore>) -> StateMachine {
        StateMachine { store }
    }
}

fn sm_error(verb: ErrorVerb, e: StateMachineError) -> StorageError {
    storage_io_error(ErrorSubject::StateMachine, verb, e)
}

fn snapshot_error(verb: ErrorVerb, e: StateMachineError) -> StorageError {
    storage_io_error(ErrorSubject::Snapshot(None), verb, e)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || store.build_snapshot())
            .await
            .map_err(|e| {
                snapshot_error(
                    ErrorVerb::Write,
                    StateMachineError::Decode {
                        what: "snapshot task",
                        reason: e.to_string(),
                    },
                )
            })?
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.store.state();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.store
            .apply_entries(entries)
            .map_err(|e| sm_error(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        self.store
            .install(meta, snapshot.get_ref())
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let loaded = self
            .store
            .load_snapshot_file()
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};
    use prost::Message;
    use skiff_proto::v1;

    use super::*;
    use crate::store::{ApplyResult, Command, Proposal, WriteError};
    use skiff_objects::{IntoObject, ObjectExt};

    /// The snapshot's contents as earlier builds declared them.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct LegacySnapshotData {
        revision: u64,
        objects: Vec<(String, Vec<u8>)>,
    }

    #[test]
    fn snapshot_data_is_the_same_bytes_as_earlier_builds_wrote_and_reads_back() {
        let objects: Vec<(String, Vec<u8>)> = vec![
            ("Pod/default/a".into(), (0..=255u8).collect()),
            ("Pod/default/b".into(), Vec::new()),
            ("Service/kube-system/dns".into(), vec![1, 2, 3]),
        ];
        let legacy = encode(&LegacySnapshotData {
            revision: 9,
            objects: objects.clone(),
        });
        let current = encode(&SnapshotData {
            revision: 9,
            objects: objects.clone(),
        });
        assert_eq!(current, legacy);
        let read: SnapshotData = decode("snapshot", &legacy).unwrap();
        assert_eq!((read.revision, read.objects), (9, objects));
        assert!(decode::<SnapshotData>("snapshot", &legacy[..legacy.len() - 1]).is_err());
    }

    #[test]
    fn snapshots_carry_each_moved_kind_in_its_protobuf_model_until_every_member_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let meta = v1::ObjectMeta {
            name: "s".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let values = [("k".to_owned(), b"v".to_vec())].into();
        let secret = skiff_objects::secrets::object(meta, "Opaque", values);
        for result in store.apply_commands(vec![create(namespace("default")), create(secret)]) {
            result.unwrap();
        }
        let snapshot_objects = |store: &ObjectStore| {
            let data = store.snapshot().unwrap().data;
            let read: SnapshotData = decode("snapshot", &data).unwrap();
            let find = |wanted: &str| {
                let (_, bytes) = read
                    .objects
                    .iter()
                    .find(|(key, _)| key.starts_with(wanted))
                    .unwrap_or_else(|| panic!("no {wanted}"));
                Object::decode(&bytes[..]).unwrap()
            };
            (find("Secret/default/s"), find("Namespace/"))
        };
        // What a master of a release before the formats installs: the
        // protobuf models.
        let (legacy_secret, legacy_namespace) = snapshot_objects(&store);
        assert!(
            matches!(legacy_secret.kind, Some(skiff_objects::Body::Secret(_))),
            "{legacy_secret:?}"
        );
        assert!(
            matches!(
                legacy_namespace.kind,
                Some(skiff_objects::Body::Namespace(_))
            ),
            "{legacy_namespace:?}"
        );
        assert!(skiff_objects::secrets::read(&legacy_secret).is_some());
        // Data format 3 read Secrets as documents, not Namespaces yet.
        store.set_snapshot_reader_format(3);
        let (secret, namespace) = snapshot_objects(&store);
        assert!(legacy_bodies::is_moved_document(&secret), "{secret:?}");
        assert_eq!(namespace, legacy_namespace);
        store.set_snapshot_reader_format(legacy_bodies::LATEST_FORMAT);
        let (secret, namespace) = snapshot_objects(&store);
        assert!(legacy_bodies::is_moved_document(&secret), "{secret:?}");
        assert!(
            legacy_bodies::is_moved_document(&namespace),
            "{namespace:?}"
        );
        // Either way the same objects.
        assert_eq!(legacy_bodies::to_document(legacy_secret), secret);
        assert_eq!(legacy_bodies::to_document(legacy_namespace), namespace);
    }

    #[test]
    fn a_snapshot_keeps_whole_a_document_its_members_model_cannot_hold() {
        use skiff_objects::services::{self, ServicePort, ServiceSpec};
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let meta = v1::ObjectMeta {
            name: "peers".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let spec = ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        };
        let service = services::object(meta, spec, None);
        for result in store.apply_commands(vec![create(namespace("default")), create(service)]) {
            result.unwrap();
        }
        // A member naming format 5 stores what it installs: never a copy
        // cut down to the protobuf model, as a client of that format reads.
        store.set_snapshot_reader_format(5);
        let data = store.snapshot().unwrap().data;
        let read: SnapshotData = decode("snapshot", &data).unwrap();
        let (_, bytes) = read
            .objects
            .iter()
            .find(|(key, _)| key.starts_with("Service/default/peers"))
            .expect("the Service");
        let installed = Object::decode(&bytes[..]).unwrap();
        assert!(
            legacy_bodies::is_moved_document(&installed),
            "{installed:?}"
        );
        assert_eq!(legacy_bodies::cut_from(&installed), None);
        let installed = services::read(&installed).unwrap();
        assert!(services::publishes_not_ready(&installed));
    }

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proposal { commands }),
        }
    }

    fn create(kind_object: Object) -> Command {
        Command::Create {
            object: kind_object.encode_to_vec(),
            uid: "uid-1".into(),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn namespace(name: &str) -> Object {
        skiff_objects::namespaces::named(name, "Active")
    }

    fn pod(name: &str, image: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn applied(result: &ApplyResult) -> Object {
        Object::decode(result.as_ref().expect("applied").object.as_slice()).unwrap()
    }

    #[test]
    fn writes_get_consecutive_revisions_and_store_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let results = store
            .apply_entries(vec![entry(
                1,
                vec![create(namespace("default")), create(pod("a", "img:1"))],
            )])
            .unwrap();
        let a = applied(&results[0][1]);
        assert_eq!(a.meta().resource_version, "2");
        assert_eq!(a.meta().uid, "uid-1");
        assert_eq!(a.meta().creation_timestamp, "2026-01-01T00:00:00Z");
        assert_eq!(a.meta().generation, 1);

        // A metadata-only change bumps the revision, not the generation.
        let mut labelled = a.clone();
        labelled
            .meta_mut()
            .unwrap()
            .labels
            .insert("x".into(), "y".into());
        // A spec change bumps both.
        let mut reimaged = pod("a", "img:2");
        reimaged.meta_mut().unwrap().resource_version = "3".into();
        let results = store
            .apply_entries(vec![entry(
                2,
                vec![
                    Command::Update {
                        object: labelled.encode_to_vec(),
                        status_only: false,
                    },
                    Command::Update {
                        object: reimaged.encode_to_vec(),
                        status_only: false,
                    },
                ],
            )])
            .unwrap();
        let l = applied(&results[0][0]);
        assert_eq!(
            (l.meta().resource_version.as_str(), l.meta().generation),
            ("3", 1)
        );
        let r = applied(&results[0][1]);
        assert_eq!(
            (r.meta().resource_version.as_str(), r.meta().generation),
            ("4", 2)
        );
        assert_eq!(r.meta().uid, "uid-1", "uid survives updates");
        assert_eq!(store.revision(), 4);
    }

    #[test]
    fn refused_writes_change_nothing_and_use_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let results = store
            .apply_entries(vec![entry(
                1,
                vec![
                    // No namespace yet.
                    create(pod("a", "img")),
                    create(namespace("default")),
                    create(pod("a", "img")),
                    create(pod("a", "img")),
                    Command::Delete {
                        kind: Kind::Pod,
                        namespace: "default".into(),
                        name: "a".into(),
                        resource_version: "1".into(),
                    },
                    Command::Delete {
                        kind: Kind::Pod,
                        namespace: "default".into(),
                        name: "missing".into(),
                        resource_version: String::new(),
                    },
                ],
            )])
            .unwrap();
        let r = &results[0];
        assert_eq!(r[0], Err(WriteError::NamespaceNotFound("default".into())));
        assert!(r[1].is_ok() && r[2].is_ok());
        assert!(matches!(r[3], Err(WriteError::AlreadyExists { .. })));
        assert!(matches!(
            &r[4],
            Err(WriteError::Conflict { expected, current, .. }) if expected == "1" && current == "2"
        ));
        assert!(matches!(r[5], Err(WriteError::NotFound { .. })));
        assert_eq!(store.revision(), 2);
        assert!(store.get(Kind::Pod, "default", "a").unwrap().is_some());
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let results = store
            .apply_entries(vec![entry(
                1,
                vec![create(namespace("default")), create(pod("a", "img"))],
            )])
            .unwrap();
        let a = applied(&results[0][1]);
        let results = store
            .apply_entries(vec![entry(
                2,
                vec![Command::Update {
                    object: a.encode_to_vec(),
                    status_only: false,
                }],
            )])
            .unwrap();
        assert_eq!(applied(&results[0][0]), a);
        assert_eq!(store.revision(), 2);
        assert!(store.events_after(2, 10).unwrap().unwrap().is_empty());
    }

    #[test]
    fn history_beyond_its_byte_bound_drops_the_oldest_but_keeps_the_minimum() {
        let event = |revision: u64, size: usize| {
            Arc::new(StoredEvent {
                revision,
                kind: Kind::Pod,
                namespace: "default".into(),
                event_type: skiff_proto::api::EventType::Added as i32,
                node: String::new(),
                object: vec![0; size].into(),
                previous: bytes::Bytes::new(),
                previous_revision: 0,
            })
        };
        let each = event(1, 1000).held_bytes();
        let mut history = History::default();
        let events: Vec<_> = (1..=3 * EVENT_RETENTION_MIN as u64)
            .map(|r| event(r, 1000))
            .collect();
        // Room for twice the minimum: the oldest third goes.
        history.extend(&events, usize::MAX, 2 * EVENT_RETENTION_MIN * each);
        assert_eq!(history.events.len(), 2 * EVENT_RETENTION_MIN);
        assert_eq!(history.compacted, EVENT_RETENTION_MIN as u64);
        assert_eq!(history.bytes, 2 * EVENT_RETENTION_MIN * each);
        assert_eq!(history.events[0].revision, EVENT_RETENTION_MIN as u64 + 1);
        // A bound below the minimum still keeps the minimum.
        let more = vec![event(3 * EVENT_RETENTION_MIN as u64 + 1, 1000)];
        history.extend(&more, usize::MAX, 0);
        assert_eq!(history.events.len(), EVENT_RETENTION_MIN);
        assert_eq!(history.bytes, EVENT_RETENTION_MIN * each);
        assert_eq!(
            history.compacted,
            2 * EVENT_RETENTION_MIN as u64 + 1,
            "revisions stay contiguous after the compaction point"
        );
    }

    #[test]
    fn history_beyond_retention_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open_with_retention(dir.path(), 5).unwrap();
        let mut commands = vec![create(namespace("default"))];
        for i in 0..9 {
            commands.push(create(pod(&format!("p{i}"), "img")));
        }
        store.apply_entries(vec![entry(1, commands)]).unwrap();
        assert_eq!(store.revision(), 10);
        let kept = store.events_after(5, 100).unwrap().unwrap();
        let revisions: Vec<u64> = kept.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![6, 7, 8, 9, 10]);
        let gone = store.events_after(4, 100).unwrap().unwrap_err();
        assert_eq!((gone.requested, gone.oldest), (4, 5));
        assert!(gone.to_string().contains("list again"), "{gone}");
    }

    #[test]
    fn a_kinds_history_is_compacted_only_when_a_change_of_that_kind_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open_with_retention(dir.path(), 5).unwrap();
        // Namespaces at 1 and 2, then pods at 3..=10: history keeps 6..=10.
        let mut commands = vec![create(namespace("default")), create(namespace("other"))];
        for i in 0..8 {
            commands.push(create(pod(&format!("p{i}"), "img")));
        }
        store.apply_entries(vec![entry(1, commands)]).unwrap();
        let revisions = |events: Vec<Arc<StoredEvent>>| -> Vec<u64> {
            events.iter().map(|e| e.revision).collect()
        };
        // Nothing of Namespaces after 2 was dropped: an empty catch-up,
        // where the history as a whole is compacted past 2.
        assert!(store.events_after(2, 100).unwrap().is_err());
        assert_eq!(
            revisions(store.kind_events_after(Kind::Namespace, 2, 100).unwrap()),
            Vec::<u64>::new()
        );
        // Namespace 2 itself was dropped: from 1, it is missed.
        let gone = store
            .kind_events_after(Kind::Namespace, 1, 100)
            .unwrap_err();
        assert_eq!((gone.requested, gone.oldest), (1, 5));
        // Pods 3..=5 were dropped: only from 5 on is nothing missed.
        assert!(store.kind_events_after(Kind::Pod, 4, 100).is_err());
        assert_eq!(
            revisions(store.kind_events_after(Kind::Pod, 5, 2).unwrap()),
            [6, 7]
        );
        // Before the history began (a restart), nothing is known.
        drop(store);
        let store = ObjectStore::open_with_retention(dir.path(), 5).unwrap();
        assert!(store.kind_events_after(Kind::Namespace, 2, 100).is_err());
        assert_eq!(
            revisions(store.kind_events_after(Kind::Pod, 10, 100).unwrap()),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_watch_from_an_old_revision_replays_exactly_the_missed_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store
            .apply_entries(vec![entry(
                1,
                vec![create(namespace("default")), create(pod("a", "img:1"))],
            )])
            .unwrap();
        let seen = store.revision();
        // What a watcher at `seen` misses: a create, an update, a delete.
        let results = store
            .apply_entries(vec![
                entry(2, vec![create(pod("b", "img:1"))]),
                entry(
                    3,
                    vec![Command::Update {
                        object: pod("a", "img:2").encode_to_vec(),
                        status_only: false,
                    }],
                ),
                entry(
                    4,
                    vec![Command::Delete {
                        kind: Kind::Pod,
                        namespace: "default".into(),
                        name: "b".into(),
                        resource_version: String::new(),
                    }],
                ),
            ])
            .unwrap();
        assert_eq!(results.len(), 3);
        let missed = store.events_after(seen, 100).unwrap().unwrap();
        let replay: Vec<(u64, i32, String)> = missed
            .iter()
            .map(|e| {
                let o = Object::decode(&e.object[..]).unwrap();
                (e.revision, e.event_type, o.meta().name.clone())
            })
            .collect();
        use skiff_proto::api::EventType;
        assert_eq!(
            replay,
            vec![
                (seen + 1, EventType::Added as i32, "b".to_owned()),
                (seen + 2, EventType::Modified as i32, "a".to_owned()),
                (seen + 3, EventType::Deleted as i32, "b".to_owned()),
            ]
        );
        // The update as stored; nothing after the newest revision.
        let updated = Object::decode(&missed[1].object[..]).unwrap();
        let model = skiff_objects::legacy_bodies::to_legacy(updated.clone()).unwrap();
        let Some(skiff_proto::api::object::Kind::Pod(p)) = &model.kind else {
            panic!("not a pod");
        };
        assert_eq!(p.spec.as_ref().unwrap().containers[0].image, "img:2");
        assert_eq!(updated.meta().resource_version, (seen + 2).to_string());
        assert!(store
            .events_after(store.revision(), 100)
            .unwrap()
            .unwrap()
            .is_empty());
        // At most `limit`, oldest first, so a watcher can page through.
        let first = store.events_after(seen, 2).unwrap().unwrap();
        assert_eq!(
            first.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![seen + 1, seen + 2]
        );
    }

    #[test]
    fn a_list_is_consistent_at_the_revision_it_reports_while_writes_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store
            .apply_entries(vec![entry(1, vec![create(namespace("default"))])])
            .unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    // Each entry: two pods, so a torn batch would show.
                    let pods = vec![
                        create(pod(&format!("p{i}-x"), "img")),
                        create(pod(&format!("p{i}-y"), "img")),
                    ];
                    store.apply_entries(vec![entry(i + 2, pods)]).unwrap();
                }
            })
        };
        let mut lists = 0;
        while !writer.is_finished() || lists == 0 {
            let (pods, revision) = store.list(Kind::Pod, Some("default")).unwrap();
            // Revision 1 is the namespace; every later one is one pod.
            assert_eq!(pods.len() as u64, revision - 1, "a list at {revision}");
            assert_eq!(pods.len() % 2, 0, "half a batch at {revision}");
            for p in &pods {
                let version: u64 = p.meta().resource_version.parse().unwrap();
                assert!(version <= revision, "{} newer than the list", p.meta().name);
            }
            lists += 1;
        }
        writer.join().unwrap();
        let (pods, revision) = store.list(Kind::Pod, Some("default")).unwrap();
        assert_eq!((pods.len(), revision), (800, 801));
    }

    #[test]
    fn applying_writes_nothing_to_disk_until_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let first = entry(1, vec![create(namespace("default"))]);
        let second = entry(2, vec![create(pod("a", "img")), create(pod("b", "img"))]);
        {
            let store = ObjectStore::open_with(dir.path(), 100, hour).unwrap();
            store.apply_entries(vec![first]).unwrap();
            store.checkpoints.checkpoint().unwrap();
            store.apply_entries(vec![second.clone()]).unwrap();
            assert_eq!(store.revision(), 3);
            store.checkpoints.discard_on_drop();
        }
        // As after a crash: the last checkpoint, not the last apply.
        let store = ObjectStore::open_with(dir.path(), 100, hour).unwrap();
        assert_eq!(store.last_applied().map(|l| l.index), Some(1));
        assert_eq!(store.revision(), 1);
        assert!(store.get(Kind::Pod, "default", "a").unwrap().is_none());
        // openraft re-applies the committed entries after it: the same
        // objects come back at the same revisions.
        let results = store.apply_entries(vec![second]).unwrap();
        assert_eq!(applied(&results[0][1]).meta().resource_version, "3");
        assert_eq!(store.revision(), 3);
        let a = store
            .get(Kind::Pod, "default", "a")
            .unwrap()
            .expect("a again");
        assert_eq!(a.meta().resource_version, "2");
        // A clean stop writes what waits: nothing to re-apply.
        drop(store);
        let store = ObjectStore::open_with(dir.path(), 100, hour).unwrap();
        assert_eq!(store.last_applied().map(|l| l.index), Some(2));
        assert!(store.get(Kind::Pod, "default", "b").unwrap().is_some());
    }

    #[test]
    fn the_checkpoint_thread_writes_changes_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let every = std::time::Duration::from_millis(50);
        {
            let store = ObjectStore::open_with(dir.path(), 100, every).unwrap();
            store
                .apply_entries(vec![entry(1, vec![create(namespace("default"))])])
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.checkpoints.read().unwrap().0.last_applied.is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no checkpoint in 10 s"
                );
                std::thread::sleep(every);
            }
            store.checkpoints.discard_on_drop();
        }
        let store = ObjectStore::open_with(dir.path(), 100, every).unwrap();
        assert_eq!(store.last_applied().map(|l| l.index), Some(1));
        assert!(store.get(Kind::Namespace, "", "default").unwrap().is_some());
    }

    #[test]
    fn a_restarted_store_has_its_objects_and_starts_history_at_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ObjectStore::open(dir.path()).unwrap();
            store
                .apply_entries(vec![entry(
                    1,
                    vec![create(namespace("default")), create(pod("a", "img"))],
                )])
                .unwrap();
        }
        let store = ObjectStore::open(dir.path()).unwrap();
        assert_eq!(store.revision(), 2);
        assert_eq!(store.last_applied().map(|l| l.index), Some(1));
        assert!(store.get(Kind::Pod, "default", "a").unwrap().is_some());
        assert!(store.events_after(2, 10).unwrap().unwrap().is_empty());
        assert!(store.events_after(1, 10).unwrap().is_err());
    }

    #[test]
    fn installing_a_snapshot_replaces_state_and_resets_watchers() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = ObjectStore::open(source_dir.path()).unwrap();
        source
            .apply_entries(vec![entry(
                1,
                vec![
                    create(namespace("default")),
                    create(pod("from-snapshot", "img")),
                ],
            )])
            .unwrap();
        let (meta, data) = source.build_snapshot().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let target = ObjectStore::open(dir.path()).unwrap();
        target
            .apply_entries(vec![entry(1, vec![create(namespace("old"))])])
            .unwrap();
        let mut live = target.subscribe();
        target.install(&meta, &data).unwrap();
        assert!(matches!(
            live.try_recv(),
            Ok(Notification::Reset { revision: 2 })
        ));
        assert_eq!(target.revision(), 2);
        assert!(target.get(Kind::Namespace, "", "old").unwrap().is_none());
        assert!(target
            .get(Kind::Pod, "default", "from-snapshot")
            .unwrap()
            .is_some());
        assert!(target.events_after(1, 10).unwrap().is_err());
    }

    /// Installs a snapshot of another store holding one namespace, at
    /// revision 1: what resets every subscriber of `store`.
    fn install_one_namespace(store: &ObjectStore) {
        let source_dir = tempfile::tempdir().unwrap();
        let source = ObjectStore::open(source_dir.path()).unwrap();
        source
            .apply_entries(vec![entry(1, vec![create(namespace("default"))])])
            .unwrap();
        let (meta, data) = source.build_snapshot().unwrap();
        store.install(&meta, &data).unwrap();
    }

    #[test]
    fn a_kinds_subscriber_hears_of_that_kind_and_of_resets_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let mut pods = store.subscribe_kind(Kind::Pod);
        let mut everything = store.subscribe();
        store
            .apply_entries(vec![entry(
                1,
                vec![
                    create(namespace("default")),
                    create(pod("a", "img")),
                    create(namespace("other")),
                    create(pod("b", "img")),
                ],
            )])
            .unwrap();
        let heard = |live: &mut broadcast::Receiver<Notification>| {
            let mut heard = Vec::new();
            while let Ok(n) = live.try_recv() {
                match n {
                    Notification::Event(e, _) => heard.push((e.kind, e.revision)),
                    Notification::Reset { revision } => heard.push((Kind::Node, revision)),
                }
            }
            heard
        };
        assert_eq!(heard(&mut pods), [(Kind::Pod, 2), (Kind::Pod, 4)]);
        assert_eq!(heard(&mut everything).len(), 4);
        // A kind nobody follows any more is let go; one followed is kept.
        let mut namespaces = store.subscribe_kind(Kind::Namespace);
        drop(namespaces);
        namespaces = store.subscribe_kind(Kind::Namespace);
        assert_eq!(store.kind_notify().len(), 2);
        drop(namespaces);
        let _services = store.subscribe_kind(Kind::Service);
        assert_eq!(store.kind_notify().len(), 2, "Pod and Service");

        install_one_namespace(&store);
        assert_eq!(heard(&mut pods), [(Kind::Node, 1)], "the reset");
    }

    #[test]
    fn a_filtered_subscriber_hears_its_kinds_and_resets_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        const PODS_AND_NAMESPACES: KindFilter = KindFilter::only(&[Kind::Pod, Kind::Namespace]);
        let mut filtered = store.subscribe_to(PODS_AND_NAMESPACES);
        let mut same = store.subscribe_to(PODS_AND_NAMESPACES);
        let mut secrets = store.subscribe_to(KindFilter::only(&[Kind::Secret]));
        assert_eq!(store.filtered_notify().len(), 3);
        // Every kind: the plain subscription, no queue of its own.
        let mut everything = store.subscribe_to(KindFilter::ALL);
        assert_eq!(store.filtered_notify().len(), 3);
        store
            .apply_entries(vec![entry(
                1,
                vec![
                    create(namespace("default")),
                    create(pod("a", "img")),
                    create(
                        v1::Secret {
                            metadata: Some(v1::ObjectMeta {
                                name: "web".into(),
                                namespace: "default".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                        .into_object(),
                    ),
                    create(pod("b", "img")),
                ],
            )])
            .unwrap();
        let heard = |live: &mut Subscription| {
            let mut heard = Vec::new();
            while let Ok(n) = live.try_recv() {
                match n {
                    Notification::Event(e, _) => heard.push((Some(e.kind), e.revision)),
                    Notification::Reset { revision } => heard.push((None, revision)),
                }
            }
            heard
        };
        let pods_and_namespaces = [
            (Some(Kind::Namespace), 1),
            (Some(Kind::Pod), 2),
            (Some(Kind::Pod), 4),
        ];
        assert_eq!(heard(&mut filtered), pods_and_namespaces);
        assert_eq!(heard(&mut same), pods_and_namespaces);
        assert_eq!(heard(&mut secrets), [(Some(Kind::Secret), 3)]);
        assert_eq!(heard(&mut everything).len(), 4);
        // The queues of subscribers that are gone are let go.
        drop(same);
        drop(secrets);
        let _jobs = store.subscribe_to(KindFilter::only(&[Kind::Job]));
        assert_eq!(
            store.filtered_notify().len(),
            2,
            "pods and namespaces, jobs"
        );

        install_one_namespace(&store);
        assert_eq!(heard(&mut filtered), [(None, 1)], "the reset");
    }

    #[test]
    fn a_filtered_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let mut namespaces = store.subscribe_to(KindFilter::only(&[Kind::Namespace]));
        let commands: Vec<Command> = (0..NOTIFY_CAPACITY + 3)
            .map(|i| create(namespace(&format!("ns-{i}"))))
            .collect();
        store.apply_entries(vec![entry(1, commands)]).unwrap();
        assert!(matches!(
            namespaces.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
        // Then what the queue held, oldest first.
        let mut first = None;
        let mut count = 0;
        while let Ok(Notification::Event(e, _)) = namespaces.try_recv() {
            first.get_or_insert(e.revision);
            count += 1;
        }
        assert_eq!((first, count), (Some(1), NOTIFY_CAPACITY));
        // Caught up: the next change arrives as it is applied.
        store
            .apply_entries(vec![entry(2, vec![create(namespace("late"))])])
            .unwrap();
        assert!(matches!(
            namespaces.try_recv(),
            Ok(Notification::Event(e, _)) if e.revision == NOTIFY_CAPACITY as u64 + 4
        ));
    }

    #[test]
    fn a_kind_filter_hears_its_kinds_and_custom_kinds_if_it_says_so() {
        let custom = Kind::Custom(skiff_objects::CustomKind::intern("example.com", "Widget"));
        let pods = KindFilter::only(&[Kind::Pod]);
        assert!(pods.hears(Kind::Pod));
        assert!(!pods.hears(Kind::Service));
        assert!(!pods.hears(custom));
        let definitions = KindFilter {
            kinds: Some(&[Kind::CustomResourceDefinition]),
            custom: true,
        };
        assert!(definitions.hears(Kind::CustomResourceDefinition));
        assert!(definitions.hears(custom));
        assert!(!definitions.hears(Kind::Pod));
        assert!(KindFilter::ALL.hears(Kind::Secret));
        assert!(KindFilter::ALL.hears(custom));
    }
}

#[cfg(test)]
mod cache_tests {
    use std::collections::BTreeMap;

    use prost::Message;
    use skiff_proto::api::EventType;
    use skiff_proto::v1;

    use super::*;
    use crate::store::Command;
    use skiff_objects::{IntoObject, ObjectExt};

    fn create(object: Object) -> Command {
        Command::Create {
            object: object.encode_to_vec(),
            uid: format!("uid-{}", object.meta().name),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn pod(name: &str, node: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn namespace() -> Object {
        skiff_objects::namespaces::named("default", "")
    }

    /// name -> resourceVersion, for comparing lists.
    fn versions(objects: &[Object]) -> BTreeMap<String, String> {
        objects
            .iter()
            .map(|o| (o.meta().name.clone(), o.meta().resource_version.clone()))
            .collect()
    }

    #[test]
    fn a_list_plus_the_events_after_its_revision_is_the_current_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.apply_commands(vec![
            create(namespace()),
            create(pod("a", "n1")),
            create(pod("b", "")),
        ]);
        let (listed, at) = store.list(Kind::Pod, None).unwrap();
        assert_eq!(at, store.revision());
        assert_eq!(versions(&listed).len(), 2);

        // Missed changes: b bound, c created, a deleted.
        let stored = store.get(Kind::Pod, "default", "b").unwrap().unwrap();
        let bound = skiff_objects::pods::with_node(&stored, "n2");
        store.apply_commands(vec![
            Command::Update {
                object: bound.encode_to_vec(),
                status_only: false,
            },
            create(pod("c", "n1")),
            Command::Delete {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "a".into(),
                resource_version: String::new(),
            },
        ]);

        // Replaying exactly the events after the list's revision onto the
        // list gives what a list now gives.
        let missed = store.events_after(at, 100).unwrap().unwrap();
        assert_eq!(missed.len(), 3);
        assert!(missed.iter().all(|e| e.revision > at));
        let mut replayed = versions(&listed);
        for event in &missed {
            let object = Object::decode(&event.object[..]).unwrap();
            let name = object.meta().name.clone();
            if event.event_type == EventType::Deleted as i32 {
                replayed.remove(&name);
            } else {
                replayed.insert(name, object.meta().resource_version.clone());
            }
        }
        let (now, _) = store.list(Kind::Pod, None).unwrap();
        assert_eq!(replayed, versions(&now));

        // And the indexes agree with the objects.
        let names = |objects: Vec<Arc<Object>>| -> Vec<String> {
            objects.iter().map(|o| o.meta().name.clone()).collect()
        };
        assert_eq!(names(store.cache().pods_on_node("n1")), ["c"]);
        assert_eq!(names(store.cache().pods_on_node("n2")), ["b"]);
        let web: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        assert_eq!(
            names(store.cache().select(Kind::Pod, "default", &web)),
            ["b", "c"]
        );
    }

    /// Applies `command` alone; answers the pods' list and its revision.
    fn step(store: &ObjectStore, command: Command) -> (u64, Vec<Vec<u8>>) {
        let results = store.apply_commands(vec![command]);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        let (listed, at) = store.list(Kind::Pod, None).unwrap();
        (at, listed.iter().map(|o| o.encode_to_vec()).collect())
    }

    fn pod_now(store: &ObjectStore, name: &str) -> Object {
        store.get(Kind::Pod, "default", name).unwrap().unwrap()
    }

    fn update(object: &Object) -> Command {
        Command::Update {
            object: object.encode_to_vec(),
            status_only: false,
        }
    }

    fn delete(name: &str) -> Command {
        Command::Delete {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: name.into(),
            resource_version: String::new(),
        }
    }

    fn encoded_at(store: &ObjectStore, namespace: Option<&str>, revision: u64) -> Vec<Vec<u8>> {
        let listed = store.list_at(Kind::Pod, namespace, revision).unwrap();
        listed.iter().map(|o| o.encode_to_vec()).collect()
    }

    #[test]
    fn a_list_at_any_kept_revision_is_the_list_as_it_was_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        store.apply_commands(vec![create(namespace())]);
        let mut lists = vec![step(&store, create(pod("a", "")))];
        lists.push(step(&store, create(pod("b", "n1"))));
        // A change selectors read alike (an annotation), one they do not
        // (the node), a plain delete and a create of the same name.
        let mut a = pod_now(&store, "a");
        a.meta_mut()
            .unwrap()
            .annotations
            .insert("note".into(), "1".into());
        lists.push(step(&store, update(&a)));
        let mut b = pod_now(&store, "b");
        if let Some(skiff_proto::api::object::Kind::Pod(p)) = &mut b.kind {
            p.spec.as_mut().unwrap().node_name = "n2".into();
        }
        lists.push(step(&store, update(&b)));
        lists.push(step(&store, delete("a")));
        lists.push(step(&store, create(pod("a", "n1"))));
        lists.push(step(&store, create(pod("c", ""))));
        // A finalizer: the delete marks it, the update that removes the
        // finalizer deletes it.
        let mut c = pod_now(&store, "c");
        c.meta_mut().unwrap().finalizers = vec!["example.com/keep".into()];
        lists.push(step(&store, update(&c)));
        lists.push(step(
            &store,
            Command::DeleteWithOptions {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "c".into(),
                options: Default::default(),
                now: "2026-01-01T00:00:01Z".into(),
            },
        ));
        let mut c = pod_now(&store, "c");
        assert!(!c.meta().deletion_timestamp.is_empty());
        c.meta_mut().unwrap().finalizers.clear();
        lists.push(step(&store, update(&c)));
        assert_eq!(store.get(Kind::Pod, "default", "c").unwrap(), None);
        lists.push(step(&store, create(pod("d", "n1"))));

        for (revision, list) in &lists {
            assert_eq!(&encoded_at(&store, None, *revision), list, "at {revision}");
            assert_eq!(
                &encoded_at(&store, Some("default"), *revision),
                list,
                "at {revision} in default"
            );
            assert!(encoded_at(&store, Some("other"), *revision).is_empty());
        }
        let newest = store.revision();
        let too_new = store.list_at(Kind::Pod, None, newest + 1).unwrap_err();
        assert!(
            matches!(too_new, ListAtError::TooNew { requested, current } if requested == newest + 1 && current == newest),
            "{too_new}"
        );
    }

    #[test]
    fn a_list_at_a_revision_the_history_no_longer_covers_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open_with_retention(dir.path(), 3).unwrap();
        store.apply_commands(vec![create(namespace()), create(pod("a", ""))]);
        for i in 0..5 {
            store.apply_commands(vec![create(pod(&format!("p{i}"), ""))]);
        }
        // a's version before this update (revision 2) is no longer kept.
        let mut a = pod_now(&store, "a");
        a.meta_mut()
            .unwrap()
            .annotations
            .insert("note".into(), "1".into());
        store.apply_commands(vec![update(&a)]);
        assert_eq!(store.revision(), 8);
        let needs_a = store.list_at(Kind::Pod, None, 7).unwrap_err();
        assert!(
            matches!(&needs_a, ListAtError::Compacted(c) if c.requested == 7 && c.oldest == 5),
            "{needs_a}"
        );
        let too_old = store.list_at(Kind::Pod, None, 4).unwrap_err();
        assert!(matches!(too_old, ListAtError::Compacted(_)), "{too_old}");
        // At 6 a's version is needed as well; at 8 nothing is rebuilt.
        assert!(store.list_at(Kind::Pod, None, 6).is_err());
        assert_eq!(store.list_at(Kind::Pod, None, 8).unwrap().len(), 6);
    }

    #[test]
    fn a_reopened_store_rebuilds_its_cache_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ObjectStore::open(dir.path()).unwrap();
            store.apply_commands(vec![create(namespace()), create(pod("a", "n1"))]);
        }
        let store = ObjectStore::open(dir.path()).unwrap();
        assert_eq!(store.cache().revision(), store.revision());
        assert_eq!(store.cache().pods_on_node("n1").len(), 1);
        assert_eq!(store.cache().size().objects, 2);
        assert!(store.cache().size().encoded_bytes > 0);
    }
}
