//! Following whole kinds of cluster objects (Nodes for the overlay;
//! Services and Endpoints for the Service rules) into a [`KindsReceiver`],
//! which hands each snapshot over once: the latest when several came while
//! its consumer was busy, moved out so that no copy of thousands of objects
//! stays behind it. A background task lists every object of
//! the kinds from a master's local replica (`Api.List`, serializable),
//! publishes them as one [`KindsSnapshot`], then watches the kinds from the
//! listed revisions (`Api.Watch`) and lists again after the first change
//! (a burst of changes settles for 100 ms into one list), and at least
//! every minute, so consumers that reconcile on each snapshot repair drift
//! too. When a list or watch fails it moves to the next master after a
//! backoff. It ends on shutdown or once every receiver is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::{ListRequest, Object, WatchRequest};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::masters::Masters;
use super::reconnect::Reconnect;

/// Lists again at least this often, changes or not.
const RESYNC: Duration = Duration::from_secs(60);
/// A burst of changes settles this long into one list.
const SETTLE: Duration = Duration::from_millis(100);

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

/// Starts following `kinds` through `masters`. The receiver's first
/// snapshot is the first complete list; every later list (after a change,
/// a reconnect, or a minute) is a snapshot again, even when nothing
/// differs. The task behind it ends on `shutdown` (the receiver then gets
/// `None`) or once every receiver is dropped; its handle is returned for
/// the caller to await.
pub fn follow_kinds(
    masters: Masters,
    kinds: &[&str],
    shutdown: CancellationToken,
) -> (KindsReceiver, JoinHandle<()>) {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let (snapshots, receiver) = watch::channel(Slot::default());
    let task = tokio::spawn(follow(masters, kinds, snapshots, shutdown));
    (KindsReceiver(receiver), task)
}

async fn follow(
    masters: Masters,
    kinds: Vec<String>,
    snapshots: watch::Sender<Slot>,
    shutdown: CancellationToken,
) {
    let mut i = 0usize;
    let mut backoff = Reconnect::new();
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
        let changed = match listed {
            Ok(snapshot) => {
                let revisions = snapshot.revisions.clone();
                // A snapshot not taken yet is replaced (dropped) here.
                if snapshots
                    .send(Arc::new(Mutex::new(Some(snapshot))))
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = snapshots.closed() => return,
                    changed = first_change(&api, &kinds, &revisions) => changed,
                    _ = tokio::time::sleep(RESYNC) => true,
                }
            }
            Err(status) => {
                tracing::debug!(master = %masters.nth(i), error = %status, "cannot list");
                false
            }
        };
        if changed {
            // The watches work: the next failure starts from a short pause.
            backoff.reset();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
        } else {
            i += 1;
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}

/// Every object of each of `kinds`, in order; the first failure ends it.
async fn list_all(
    mut api: ApiClient<Channel>,
    kinds: &[String],
) -> Result<KindsSnapshot, tonic::Status> {
    let mut snapshot = KindsSnapshot {
        kinds: kinds.to_vec(),
        ..KindsSnapshot::default()
    };
    for kind in kinds {
        let list = api
            .list(ListRequest {
                kind: kind.clone(),
                namespace: String::new(),
                serializable: true,
                selecting: None,
                exact_revision: 0,
            })
            .await?
            .into_inner();
        snapshot.revisions.push(list.revision);
        snapshot.lists.push(list.items);
    }
    Ok(snapshot)
}

/// Whether any of `kinds` changed after its listed revision: `true` on the
/// first event of any watch, `false` when a watch fails or ends first.
async fn first_change(api: &ApiClient<Channel>, kinds: &[String], revisions: &[u64]) -> bool {
    let mut watches = JoinSet::new();
    for (kind, revision) in kinds.iter().zip(revisions) {
        let mut api = api.clone();
        let request = WatchRequest {
            kind: kind.clone(),
            namespace: String::new(),
            from_revision: *revision,
            with_previous: false,
        };
        watches.spawn(async move {
            let Ok(stream) = api.watch(request).await else {
                return false;
            };
            matches!(stream.into_inner().message().await, Ok(Some(_)))
        });
    }
    // Dropping the set stops the other watches.
    matches!(watches.join_next().await, Some(Ok(true)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use skiff_proto::api::object::Kind as Body;
    use skiff_proto::api::Object;
    use skiff_proto::v1;
    use tokio_util::sync::CancellationToken;
    use tonic::Status;

    use super::{follow_kinds, KindsReceiver, KindsSnapshot};
    use crate::master_link::fake_master::{name_of, node, within, TestPki};

    fn node_object(name: &str) -> Object {
        Object {
            kind: Some(Body::Node(node(name))),
        }
    }

    fn service_object(name: &str) -> Object {
        let service = v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.to_owned(),
                namespace: "default".to_owned(),
                ..v1::ObjectMeta::default()
            }),
            ..v1::Service::default()
        };
        Object {
            kind: Some(Body::Service(service)),
        }
    }

    fn names(snapshot: &KindsSnapshot, kind: &str) -> Vec<String> {
        snapshot.objects(kind).iter().map(name_of).collect()
    }

    async fn next(receiver: &mut KindsReceiver) -> KindsSnapshot {
        within("a snapshot", receiver.next())
            .await
            .expect("the follower is running")
    }

    #[tokio::test]
    async fn the_receiver_sees_every_object_of_the_kinds_then_each_change() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.set_objects("Service", vec![service_object("web")]);
        master.set_objects("Node", vec![node_object("pi-1")]);
        let shutdown = CancellationToken::new();
        let kinds = ["Service", "Node"];
        let masters = pki.masters(&[&master]);
        let (mut receiver, task) = follow_kinds(masters, &kinds, shutdown.clone());
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

        master.set_objects("Node", vec![node_object("pi-1"), node_object("pi-2")]);
        master.notify_watches();
        let changed = next(&mut receiver).await;
        assert_eq!(names(&changed, "Node"), ["pi-1", "pi-2"]);
        assert_eq!(names(&changed, "Service"), ["web"]);
        assert_eq!(changed.revisions, [3, 3]);
        shutdown.cancel();
        within("the follower to stop", task).await.unwrap();
        let closed = within("the receiver to see the end", receiver.next()).await;
        assert!(closed.is_none());
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

        // While the stream is down a node joins, and the master cannot list
        // for the next two tries.
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
