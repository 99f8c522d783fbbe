//! Following whole kinds of cluster objects (Nodes for the overlay;
//! Services and Endpoints for the Service rules) into a [`KindsReceiver`],
//! as client-go's informers do: list once, then apply each watch event to
//! a local copy. The receiver hands each snapshot over once: the latest
//! when several came while its consumer was busy, moved out so that no
//! decoded copy of thousands of objects stays behind it.
//!
//! A background task lists every object of the kinds from a master's local
//! replica (`Api.List`, serializable), publishes them as one
//! [`KindsSnapshot`], and keeps each object encoded ([`KindsCache`]: a few
//! hundred bytes each, in one buffer per kind, not its decoded form). It
//! then watches the kinds from the listed revisions (`Api.Watch`) and
//! applies every event to that copy; a burst of changes settles for 100 ms into one snapshot, decoded
//! from the copy. So a change costs the masters one event per agent, not a
//! list of every object of the kinds. At least every minute the copy is
//! published again, changes or not, so consumers that reconcile on each
//! snapshot repair drift too. Only when a list or watch fails (a master
//! going away, or a watch too far behind: `OUT_OF_RANGE`) does it list
//! again, from the next master after a backoff; what was applied before
//! the failure is published first. A list older than the copy (a replica
//! behind the one watched before) is passed over for the next master,
//! until every master has been asked. A connection gone silent fails the
//! watches through the channel's HTTP/2 keepalive ([`Masters`]: a ping
//! every 10 s, answered within 5). It ends on shutdown or once every
//! receiver is dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::{EventType, ListRequest, Object, WatchEvent, WatchRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;

use super::encoded_objects::EncodedObjects;
use super::masters::Masters;
use super::reconnect::Reconnect;

/// How often the follower publishes, and how long it gathers changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowTiming {
    /// The copy is published again at least this often, changes or not.
    pub resync: Duration,
    /// A burst of changes settles this long into one snapshot.
    pub settle: Duration,
}

impl Default for FollowTiming {
    fn default() -> FollowTiming {
        FollowTiming {
            resync: Duration::from_secs(60),
            settle: Duration::from_millis(100),
        }
    }
}

/// Every object of the followed kinds (all namespaces), as one master's
/// local replica had them.
#[derive(Debug, Clone, Default)]
pub struct KindsSnapshot {
    /// The followed kinds, in the order given.
    pub kinds: Vec<String>,
    /// Each kind's objects, in the order of `kinds`.
    pub lists: Vec<Vec<Object>>,
    /// The store revision each list reflects, in the order of `kinds`.
    pub revisions: Vec<u64>,
}

impl KindsSnapshot {
    /// The objects of `kind`; none when `kind` is not followed.
    pub fn objects(&self, kind: &str) -> &[Object] {
        self.kinds
            .iter()
            .position(|k| k == kind)
            .and_then(|i| self.lists.get(i))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Moves the objects of `kind` out, leaving none there; none when
    /// `kind` is not followed.
    pub fn take(&mut self, kind: &str) -> Vec<Object> {
        match self.kinds.iter().position(|k| k == kind) {
            Some(i) if i < self.lists.len() => std::mem::take(&mut self.lists[i]),
            _ => Vec::new(),
        }
    }
}

/// The follower's own copy of the followed kinds: each kind's objects
/// encoded again from what the master sent (prost keeps no field it does
/// not know) in one buffer, by namespace and name
/// ([`EncodedObjects`]), and the revision each kind's copy reflects.
#[derive(Debug)]
pub struct KindsCache {
    kinds: Vec<String>,
    objects: Vec<EncodedObjects>,
    revisions: Vec<u64>,
}

impl KindsCache {
    /// An empty copy of `kinds`, at revision 0.
    pub fn new(kinds: &[String]) -> KindsCache {
        KindsCache {
            kinds: kinds.to_vec(),
            objects: kinds.iter().map(|_| EncodedObjects::default()).collect(),
            revisions: vec![0; kinds.len()],
        }
    }

    /// Replaces the copy with a complete `snapshot` of the same kinds.
    pub fn replace(&mut self, snapshot: &KindsSnapshot) {
        for (i, copy) in self.objects.iter_mut().enumerate() {
            copy.replace(snapshot.lists.get(i).map(Vec::as_slice).unwrap_or_default());
            self.revisions[i] = snapshot.revisions.get(i).copied().unwrap_or_default();
        }
    }

    /// Applies one watch event of the `k`th kind: ADDED and MODIFIED put
    /// the object in (replacing the one of its namespace and name), DELETED
    /// takes it out; an event with no object (a bookmark) only moves the
    /// revision.
    pub fn apply(&mut self, k: usize, event: WatchEvent) {
        let (Some(copy), Some(revision)) = (self.objects.get_mut(k), self.revisions.get_mut(k))
        else {
            return;
        };
        *revision = (*revision).max(event.revision);
        let Some(object) = event.object else {
            return;
        };
        match EventType::try_from(event.r#type) {
            Ok(EventType::Added | EventType::Modified) => copy.put(&object),
            Ok(EventType::Deleted) => copy.remove(&object),
            Ok(EventType::Bookmark | EventType::Unspecified) | Err(_) => {}
        }
    }

    /// The copy, decoded: each kind's objects by namespace and name.
    pub fn snapshot(&self) -> KindsSnapshot {
        KindsSnapshot {
            kinds: self.kinds.clone(),
            lists: self
                .objects
                .iter()
                .map(EncodedObjects::decode_all)
                .collect(),
            revisions: self.revisions.clone(),
        }
    }

    /// Whether the copy of some kind reflects a later revision than
    /// `snapshot`'s list of it.
    pub fn is_newer_than(&self, snapshot: &KindsSnapshot) -> bool {
        let listed = |k: usize| snapshot.revisions.get(k).copied().unwrap_or_default();
        (0..self.revisions.len()).any(|k| self.revisions[k] > listed(k))
    }

    /// The revision the `k`th kind's copy reflects.
    pub fn revision(&self, k: usize) -> u64 {
        self.revisions.get(k).copied().unwrap_or_default()
    }
}

/// The latest snapshot, held until a receiver takes it.
type Slot = Arc<Mutex<Option<KindsSnapshot>>>;

/// The consuming end of [`follow_kinds`]. A clone competes for the same
/// snapshots: each goes to whichever takes it first.
#[derive(Debug, Clone)]
pub struct KindsReceiver(watch::Receiver<Slot>);

impl KindsReceiver {
    /// The next snapshot, moved out; the latest when several came since
    /// the last call. `None` once the follower has ended.
    pub async fn next(&mut self) -> Option<KindsSnapshot> {
        loop {
            self.0.changed().await.ok()?;
            let slot = self.0.borrow_and_update().clone();
            let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if taken.is_some() {
                return taken;
            }
        }
    }
}

/// Starts following `kinds` through `masters`, with the default timing.
/// The receiver's first snapshot is the first complete list; later ones
/// come after each (settled) burst of changes, after a relist, and every
/// minute, even when nothing differs. The task behind it ends on
/// `shutdown` (the receiver then gets `None`) or once every receiver is
/// dropped; its handle is returned for the caller to await.
pub fn follow_kinds(
    masters: Masters,
    kinds: &[&str],
    shutdown: CancellationToken,
) -> (KindsReceiver, JoinHandle<()>) {
    follow_kinds_timed(masters, kinds, FollowTiming::default(), shutdown)
}

/// [`follow_kinds`] with the given timing.
pub fn follow_kinds_timed(
    masters: Masters,
    kinds: &[&str],
    timing: FollowTiming,
    shutdown: CancellationToken,
) -> (KindsReceiver, JoinHandle<()>) {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let (snapshots, receiver) = watch::channel(Slot::default());
    let task = tokio::spawn(follow(masters, kinds, timing, snapshots, shutdown));
    (KindsReceiver(receiver), task)
}

/// Hands `snapshot` to the receivers, replacing (dropping) one not taken
/// yet; `false` once every receiver is gone.
fn publish(snapshots: &watch::Sender<Slot>, snapshot: KindsSnapshot) -> bool {
    snapshots.send(Arc::new(Mutex::new(Some(snapshot)))).is_ok()
}

async fn follow(
    masters: Masters,
    kinds: Vec<String>,
    timing: FollowTiming,
    snapshots: watch::Sender<Slot>,
    shutdown: CancellationToken,
) {
    let mut cache = KindsCache::new(&kinds);
    let mut i = 0usize;
    let mut backoff = Reconnect::new();
    // Lists refused in a row for being older than the copy.
    let mut behind = 0usize;
    loop {
        let Some(api) = masters.api(i) else {
            tracing::warn!(master = %masters.nth(i), "not a usable master address");
            return;
        };
        let listed = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = snapshots.closed() => return,
            listed = list_all(api.clone(), &kinds) => listed,
        };
        match listed {
            // A replica behind the copy would take the consumers back in
            // time: try the others first. Once every master has been asked
            // (a cluster restored to an older revision), take it.
            Ok(snapshot) if cache.is_newer_than(&snapshot) && behind < masters.known().len() => {
                behind += 1;
                tracing::debug!(master = %masters.nth(i), "its replica is behind what this node has");
            }
            Ok(snapshot) => {
                behind = 0;
                cache.replace(&snapshot);
                if !publish(&snapshots, snapshot) {
                    return;
                }
                let ended = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = snapshots.closed() => return,
                    ended = keep_up(&api, &mut cache, &snapshots, timing) => ended,
                };
                let Some(ended) = ended else {
                    return;
                };
                if ended.proven {
                    backoff.reset();
                }
                tracing::debug!(master = %masters.nth(i), error = %ended.status, "watch ended");
            }
            Err(status) => {
                tracing::debug!(master = %masters.nth(i), error = %status, "cannot list");
            }
        }
        i += 1;
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// `message` as a request naming the data format this agent reads
/// (`skiff_objects::legacy_bodies`): a master sends the kinds held as
/// documents (Endpoints) as they are, not converted for an older agent.
pub(crate) fn naming_format<T>(message: T) -> tonic::Request<T> {
    use skiff_objects::legacy_bodies;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        legacy_bodies::FORMAT_HEADER,
        tonic::metadata::MetadataValue::from(legacy_bodies::LATEST_FORMAT),
    );
    request
}

/// Every object of each of `kinds`, in order; the first failure ends it.
async fn list_all(mut api: ApiClient<Channel>, kinds: &[String]) -> Result<KindsSnapshot, Status> {
    let mut snapshot = KindsSnapshot {
        kinds: kinds.to_vec(),
        ..KindsSnapshot::default()
    };
    for kind in kinds {
        let list = api
            .list(naming_format(ListRequest {
                kind: kind.clone(),
                namespace: String::new(),
                serializable: true,
                selecting: None,
                exact_revision: 0,
            }))
            .await?
            .into_inner();
        snapshot.revisions.push(list.revision);
        snapshot.lists.push(list.items);
    }
    Ok(snapshot)
}

/// Watches that stayed open this long have proved the master: the pause
/// before the next list starts short again (not on the first event, so a
/// master whose watches keep failing soon after opening is not listed
/// from every 200 ms).
const PROVEN: Duration = Duration::from_secs(10);

/// Why the watches of [`keep_up`] ended, and whether they had proved
/// themselves ([`PROVEN`]).
struct WatchEnded {
    status: Status,
    proven: bool,
}

/// One kind's watch events, ended by `None` when the master ends the
/// stream (so that the end of one of several is seen).
type KindEvents = Pin<Box<dyn Stream<Item = Option<Result<WatchEvent, Status>>> + Send>>;

/// Watches every kind of `cache` from the revision its copy reflects and
/// applies each event to it, publishing the copy once a burst of changes
/// has settled and at least every `timing.resync`. Ends with why when a
/// watch fails or ends (what was applied is published first), or with
/// `None` once every receiver is gone.
async fn keep_up(
    api: &ApiClient<Channel>,
    cache: &mut KindsCache,
    snapshots: &watch::Sender<Slot>,
    timing: FollowTiming,
) -> Option<WatchEnded> {
    let opened = Instant::now();
    let ended = |status| WatchEnded {
        status,
        proven: opened.elapsed() >= PROVEN,
    };
    let mut events: StreamMap<usize, KindEvents> = StreamMap::new();
    for (k, kind) in cache.kinds.iter().enumerate() {
        let request = WatchRequest {
            kind: kind.clone(),
            namespace: String::new(),
            from_revision: cache.revision(k),
            with_previous: false,
        };
        let stream = match api.clone().watch(naming_format(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Some(ended(status)),
        };
        events.insert(
            k,
            Box::pin(stream.map(Some).chain(tokio_stream::once(None))),
        );
    }
    // When the changes applied so far are to be published.
    let mut due: Option<Instant> = None;
    let mut resync_at = Instant::now() + timing.resync;
    loop {
        let deadline = due.map_or(resync_at, |d| d.min(resync_at));
        let failed = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !publish(snapshots, cache.snapshot()) {
                    return None;
                }
                due = None;
                resync_at = Instant::now() + timing.resync;
                continue;
            }
            event = events.next() => match event {
                Some((k, Some(Ok(event)))) => {
                    cache.apply(k, event);
                    due.get_or_insert_with(|| Instant::now() + timing.settle);
                    continue;
                }
                Some((_, Some(Err(status)))) => status,
                Some((k, None)) => Status::unavailable(format!(
                    "the master ended the watch of {}",
                    cache.kinds.get(k).map(String::as_str).unwrap_or_default()
                )),
                None => Status::unavailable("no kind to watch"),
            },
        };
        if due.is_some() && !publish(snapshots, cache.snapshot()) {
            return None;
        }
        return Some(ended(failed));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use prost::Message;
    use skiff_objects::ObjectExt;
    use skiff_proto::api::object::Kind as Body;
    use skiff_proto::api::{EventType, Object, WatchEvent};
    use tokio_util::sync::CancellationToken;
    use tonic::Status;

    use super::{
        follow_kinds, follow_kinds_timed, FollowTiming, KindsCache, KindsReceiver, KindsSnapshot,
    };
    use crate::master_link::fake_master::{name_of, node, service_object, within, TestPki};

    fn node_object(name: &str) -> Object {
        Object {
            kind: Some(Body::Node(node(name))),
        }
    }

    fn cluster_ips(snapshot: &KindsSnapshot) -> Vec<(String, String)> {
        let ip = |o: &Object| {
            skiff_objects::services::read(o)
                .map(|s| skiff_objects::services::cluster_ip(&s).to_owned())
        };
        snapshot
            .objects("Service")
            .iter()
            .map(|o| (name_of(o), ip(o).unwrap_or_default()))
            .collect()
    }

    fn names(snapshot: &KindsSnapshot, kind: &str) -> Vec<String> {
        snapshot.objects(kind).iter().map(name_of).collect()
    }

    fn event(kind: EventType, object: Option<Object>, revision: u64) -> WatchEvent {
        WatchEvent {
            r#type: kind as i32,
            object,
            revision,
            previous: None,
            ..Default::default()
        }
    }

    async fn next(receiver: &mut KindsReceiver) -> KindsSnapshot {
        within("a snapshot", receiver.next())
            .await
            .expect("the follower is running")
    }

    /// Timing that keeps the default resync out of a test's way and gives
    /// a burst plenty of time to settle on a busy machine.
    fn slow_resync() -> FollowTiming {
        FollowTiming {
            resync: Duration::from_secs(600),
            settle: Duration::from_millis(300),
        }
    }

    #[test]
    fn the_cache_applies_added_modified_and_deleted_by_namespace_and_name() {
        let kinds = ["Service".to_owned(), "Node".to_owned()];
        let mut cache = KindsCache::new(&kinds);
        let listed = KindsSnapshot {
            kinds: kinds.to_vec(),
            lists: vec![
                vec![service_object("b", "web", "10.43.0.5")],
                vec![node_object("pi-1")],
            ],
            revisions: vec![7, 8],
        };
        cache.replace(&listed);
        assert_eq!(cache.snapshot().revisions, [7, 8]);

        // A Service of the same name in another namespace is another one;
        // one of the same namespace and name replaces it.
        let added = service_object("a", "web", "10.43.0.9");
        cache.apply(0, event(EventType::Added, Some(added), 9));
        let modified = service_object("b", "web", "10.43.0.6");
        cache.apply(0, event(EventType::Modified, Some(modified), 10));
        let snapshot = cache.snapshot();
        let expected = [("web", "10.43.0.9"), ("web", "10.43.0.6")]
            .map(|(n, ip)| (n.to_owned(), ip.to_owned()));
        assert_eq!(cluster_ips(&snapshot), expected);
        let namespaces: Vec<String> = snapshot
            .objects("Service")
            .iter()
            .map(|o| o.meta().namespace.clone())
            .collect();
        assert_eq!(namespaces, ["a", "b"]);
        assert_eq!(snapshot.revisions, [10, 8]);

        // DELETED carries the object as it was; a bookmark moves only the
        // revision; a deletion of something unknown changes nothing.
        let deleted = service_object("b", "web", "10.43.0.6");
        cache.apply(0, event(EventType::Deleted, Some(deleted), 11));
        cache.apply(1, event(EventType::Bookmark, None, 12));
        let unknown = node_object("pi-9");
        cache.apply(1, event(EventType::Deleted, Some(unknown), 13));
        // An event of a kind not followed is dropped.
        cache.apply(2, event(EventType::Added, Some(node_object("x")), 14));
        let snapshot = cache.snapshot();
        let left = [("web".to_owned(), "10.43.0.9".to_owned())];
        assert_eq!(cluster_ips(&snapshot), left);
        assert_eq!(names(&snapshot, "Node"), ["pi-1"]);
        assert_eq!(snapshot.revisions, [11, 13]);

        // A new list replaces everything, revisions included.
        cache.replace(&listed);
        let snapshot = cache.snapshot();
        let relisted = [("web".to_owned(), "10.43.0.5".to_owned())];
        assert_eq!(cluster_ips(&snapshot), relisted);
        assert_eq!(snapshot.revisions, [7, 8]);
    }

    #[test]
    fn the_cache_keeps_each_object_encoded_again_as_it_decoded() {
        let kinds = ["Node".to_owned()];
        let mut cache = KindsCache::new(&kinds);
        let object = node_object("pi-1");
        cache.apply(0, event(EventType::Added, Some(object.clone()), 3));
        let snapshot = cache.snapshot();
        assert_eq!(snapshot.objects("Node"), std::slice::from_ref(&object));
        let kept: Vec<&[u8]> = cache.objects[0].encoded().collect();
        assert_eq!(kept, [object.encode_to_vec().as_slice()]);
    }

    #[tokio::test]
    async fn each_change_is_applied_from_its_watch_event_without_listing_again() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects(
            "Service",
            vec![service_object("default", "web", "10.43.0.5")],
        );
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let kinds = ["Service", "Node"];
        let masters = pki.masters(&[&master]);
        let timing = slow_resync();
        let (mut receiver, task) = follow_kinds_timed(masters, &kinds, timing, shutdown.clone());
        let first = next(&mut receiver).await;
        assert_eq!(first.kinds, kinds);
        assert_eq!(names(&first, "Service"), ["web"]);
        assert_eq!(names(&first, "Node"), ["pi-1"]);
        assert_eq!(first.revisions, [2, 2]);
        assert!(names(&first, "Endpoints").is_empty());

        // Each kind is watched from the revision its list reflects.
        let requests = master.until_watches(2).await;
        let mut watched: Vec<(String, u64)> = requests
            .iter()
            .map(|w| (w.kind.clone(), w.from_revision))
            .collect();
        watched.sort();
        let expected = [("Node".to_owned(), 2), ("Service".to_owned(), 2)];
        assert_eq!(watched, expected);

        master.watch_event("Node", EventType::Added, node_object("pi-2"));
        let added = next(&mut receiver).await;
        assert_eq!(names(&added, "Node"), ["pi-1", "pi-2"]);
        assert_eq!(names(&added, "Service"), ["web"]);
        assert_eq!(added.revisions, [2, 3]);

        let moved = service_object("default", "web", "10.43.0.6");
        master.watch_event("Service", EventType::Modified, moved);
        let modified = next(&mut receiver).await;
        let expected = [("web".to_owned(), "10.43.0.6".to_owned())];
        assert_eq!(cluster_ips(&modified), expected);
        assert_eq!(names(&modified, "Node"), ["pi-1", "pi-2"]);

        master.watch_event("Node", EventType::Deleted, node_object("pi-1"));
        let deleted = next(&mut receiver).await;
        assert_eq!(names(&deleted, "Node"), ["pi-2"]);
        assert_eq!(deleted.revisions, [4, 5]);

        // The one list of each kind was all: the rest came as events.
        let lists = master.with(|s| s.list_calls.len());
        assert_eq!(lists, kinds.len());
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
        let closed = within("the receiver to see the end", receiver.next()).await;
        assert!(closed.is_none());
    }

    #[tokio::test]
    async fn a_burst_of_changes_settles_into_one_snapshot() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let timing = FollowTiming {
            resync: Duration::from_secs(600),
            settle: Duration::from_secs(1),
        };
        let (mut receiver, task) = follow_kinds_timed(masters, &["Node"], timing, shutdown.clone());
        assert!(names(&next(&mut receiver).await, "Node").is_empty());
        master.until_watches(1).await;

        // A receiver already waiting takes the first snapshot published
        // after the burst begins: one per event would give it `pi-0` alone.
        let waiting = tokio::spawn(async move {
            let first = next(&mut receiver).await;
            (first, receiver)
        });
        for n in 0..5 {
            master.watch_event("Node", EventType::Added, node_object(&format!("pi-{n}")));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let (settled, mut receiver) = within("the settled snapshot", waiting).await.unwrap();
        assert_eq!(
            names(&settled, "Node"),
            ["pi-0", "pi-1", "pi-2", "pi-3", "pi-4"]
        );
        // Nothing more comes after it: no change, and the resync is far.
        let more = tokio::time::timeout(Duration::from_millis(500), receiver.next()).await;
        assert!(more.is_err(), "a snapshot after the burst's: {more:?}");
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn a_list_older_than_the_copy_is_passed_over_for_another_master() {
        let pki = TestPki::new("pi-1");
        let ahead = pki.serve().await;
        let behind = pki.serve().await;
        ahead.set_objects("Node", vec![node_object("pi-1")]);
        ahead.set_objects("Node", vec![node_object("pi-1")]);
        behind.set_objects("Node", vec![]);
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&ahead, &behind]);
        let (mut receiver, task) = follow_kinds(masters, &["Node"], shutdown.clone());
        assert_eq!(names(&next(&mut receiver).await, "Node"), ["pi-1"]);
        ahead.until_watches(1).await;

        // The watched master goes away; the other's replica is behind it
        // (revision 1 against 3 after the event), so its list is not
        // taken, and the first master's, when it answers again, is.
        ahead.watch_event("Node", EventType::Added, node_object("pi-2"));
        ahead.break_watches(Status::unavailable("master going away"));
        assert_eq!(names(&next(&mut receiver).await, "Node"), ["pi-1", "pi-2"]);
        let relisted = next(&mut receiver).await;
        assert_eq!(names(&relisted, "Node"), ["pi-1", "pi-2"]);
        assert_eq!(relisted.revisions, [3]);
        assert_eq!(behind.with(|s| s.list_calls.len()), 1);
        assert_eq!(behind.with(|s| s.watch_requests.len()), 0);
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn when_every_master_is_behind_the_copy_the_list_is_taken() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects("Node", vec![node_object("pi-1")]);
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let (mut receiver, task) = follow_kinds(masters, &["Node"], shutdown.clone());
        assert_eq!(next(&mut receiver).await.revisions, [2]);
        master.until_watches(1).await;

        // The cluster is restored to an older state at a lower revision.
        master.with(|s| {
            s.objects
                .insert("Node".to_owned(), vec![node_object("pi-0")]);
            s.revision = 1;
        });
        master.break_watches(Status::out_of_range("restored"));
        let restored = next(&mut receiver).await;
        assert_eq!(names(&restored, "Node"), ["pi-0"]);
        assert_eq!(restored.revisions, [1]);
        assert_eq!(
            master.with(|s| s.list_calls.len()),
            3,
            "one refused, one taken"
        );
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn the_copy_is_published_again_at_each_resync_without_a_list() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let timing = FollowTiming {
            resync: Duration::from_millis(300),
            settle: Duration::from_millis(50),
        };
        let (mut receiver, task) = follow_kinds_timed(masters, &["Node"], timing, shutdown.clone());
        let first = next(&mut receiver).await;
        master.until_watches(1).await;
        let started = Instant::now();
        for _ in 0..2 {
            let again = next(&mut receiver).await;
            assert_eq!(names(&again, "Node"), ["pi-1"]);
            assert_eq!(again.revisions, first.revisions);
        }
        assert!(
            started.elapsed() >= timing.resync,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(master.with(|s| s.list_calls.len()), 1);
        assert_eq!(master.with(|s| s.watch_requests.len()), 1);
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn a_broken_watch_relists_with_backoff_and_the_receiver_sees_the_new_state() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let (mut receiver, task) = follow_kinds(masters, &["Node"], shutdown.clone());
        let first = next(&mut receiver).await;
        assert_eq!(names(&first, "Node"), ["pi-1"]);
        master.until_watches(1).await;

        // While the stream is down a node joins (no event tells of it), and
        // the master cannot list for the next two tries.
        master.set_objects("Node", vec![node_object("pi-1"), node_object("pi-2")]);
        master.with(|s| s.failing_lists = 2);
        let broken = Instant::now();
        master.break_watches(Status::unavailable("master going away"));
        let after = next(&mut receiver).await;
        assert_eq!(names(&after, "Node"), ["pi-1", "pi-2"]);

        // The pauses before each list since the break: they grow.
        let lists = master.with(|s| s.list_calls.clone());
        let mut times = vec![broken];
        times.extend(lists[1..].iter().map(|(_, at)| *at));
        let pauses: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(pauses.len(), 3, "two failed lists, then one that worked");
        let floors = [150, 300, 600].map(Duration::from_millis);
        for (pause, floor) in pauses.iter().zip(floors) {
            assert!(*pause >= floor, "pauses before each list: {pauses:?}");
        }

        // The new watch starts from the new list's revision, and its
        // events apply on top of that list.
        let requests = master.until_watches(2).await;
        assert_eq!(requests[1].from_revision, after.revisions[0]);
        master.watch_event("Node", EventType::Deleted, node_object("pi-1"));
        assert_eq!(names(&next(&mut receiver).await, "Node"), ["pi-2"]);
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn changes_applied_before_a_watch_fails_are_published_before_the_relist() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let timing = slow_resync();
        let (mut receiver, task) = follow_kinds_timed(masters, &["Node"], timing, shutdown.clone());
        next(&mut receiver).await;
        master.until_watches(1).await;

        // The event arrives, then the master goes away before the burst
        // settles, and no list works from then on: what the receiver gets
        // is the follower's copy.
        master.with(|s| s.failing_lists = 1000);
        master.watch_event("Node", EventType::Added, node_object("pi-2"));
        master.break_watches(Status::unavailable("master going away"));
        let published = next(&mut receiver).await;
        assert_eq!(names(&published, "Node"), ["pi-1", "pi-2"]);
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn a_watch_the_master_ends_is_noticed_among_several() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let timing = slow_resync();
        let kinds = ["Service", "Node"];
        let (mut receiver, task) = follow_kinds_timed(masters, &kinds, timing, shutdown.clone());
        next(&mut receiver).await;
        master.until_watches(2).await;

        // The Node watch ends cleanly, the Service one stays open: the
        // follower lists again rather than miss the Nodes' changes.
        master.set_objects("Node", vec![node_object("pi-3")]);
        master.end_watches("Node");
        let relisted = next(&mut receiver).await;
        assert_eq!(names(&relisted, "Node"), ["pi-3"]);
        assert_eq!(master.with(|s| s.list_calls.len()), 2 * kinds.len());
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_every_receiver_ends_the_follower() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let masters = pki.masters(&[&master]);
        let (mut receiver, task) = follow_kinds(masters, &["Node"], shutdown.clone());
        next(&mut receiver).await;
        master.until_watches(1).await;
        let other = receiver.clone();
        drop(receiver);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!task.is_finished(), "ended while a receiver was left");
        drop(other);
        within("the follower to end", task).await.unwrap();
        assert!(!shutdown.is_cancelled());
    }
}
