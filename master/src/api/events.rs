//! Kubernetes Events through the API: calls on the kind `Event` are served
//! by the leader from its [`EventStore`] instead of the replicated store
//! (`ApiService` routes them, and a follower relays them, watches
//! included; events.k8s.io/v1 is the REST API's view of the same). A watch
//! streams every change after a resourceVersion of the leader's store, in
//! order; one the store no longer keeps, or never issued, ends with
//! OUT_OF_RANGE (410 Expired over REST), as does every watch when the
//! store starts over with a new leadership.

use std::sync::Arc;

use skiff_proto::api::{EventType as WatchEventType, ListResponse, WatchEvent};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::event_stream::{self, EventSender, EventStream};
use super::ApiError;
use crate::events::{Change, ChangeType, EventStore, EventStoreError, Notice};

/// Events buffered for a slow watcher before the watch waits for it.
const BUFFERED_EVENTS: usize = 256;

/// The Events of `namespace` (empty: all), and the resourceVersion to
/// watch from after them.
pub(super) fn list(store: &EventStore, namespace: &str) -> ListResponse {
    let namespace = (!namespace.is_empty()).then_some(namespace);
    let (items, revision) = store.list(namespace);
    ListResponse { items, revision }
}

/// Starts a watch of the Events of `namespace` (or all) after
/// `from_revision`.
pub(super) fn watch(
    store: Arc<EventStore>,
    namespace: Option<String>,
    from_revision: u64,
    shutdown: CancellationToken,
) -> Result<EventStream, ApiError> {
    // Subscribe first: what changes while the history is read arrives
    // live, and what the history had already is skipped by revision.
    let live = store.subscribe();
    let backlog = store.changes_after(from_revision)?;
    let (out, stream) = event_stream::channel(BUFFERED_EVENTS);
    let mut watcher = Watcher {
        store,
        namespace,
        last: from_revision,
        out,
    };
    let out = watcher.out.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = out.closed() => {}
            result = watcher.run(backlog, live) => {
                if let Err(status) = result {
                    let _ = out.send(Err(status)).await;
                }
            }
        }
    });
    Ok(stream)
}

struct Watcher {
    store: Arc<EventStore>,
    namespace: Option<String>,
    /// The last revision sent (or skipped as another namespace's).
    last: u64,
    out: EventSender,
}

/// The watcher's consumer went away.
struct Gone;

impl Watcher {
    async fn run(
        &mut self,
        backlog: Vec<Arc<Change>>,
        mut live: broadcast::Receiver<Notice>,
    ) -> Result<(), Status> {
        if self.send_all(backlog).await.is_err() {
            return Ok(());
        }
        loop {
            match live.recv().await {
                Ok(Notice::Changed(change)) => {
                    if change.revision <= self.last {
                        continue;
                    }
                    if change.revision > self.last + 1 {
                        // Not expected (every change is notified); the
                        // history has what was missed, if anything.
                        if self.catch_up().await?.is_err() {
                            return Ok(());
                        }
                        if change.revision <= self.last {
                            continue;
                        }
                    }
                    if self.send(&change).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(Notice::Restarted) => {
                    let revision = self.store.revision();
                    let expired = EventStoreError::Expired {
                        requested: self.last,
                        oldest: revision,
                        newest: revision,
                    };
                    return Err(ApiError::from(expired).into());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.catch_up().await?.is_err() {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Sends every kept change after the last one sent.
    async fn catch_up(&mut self) -> Result<Result<(), Gone>, Status> {
        let missed = self
            .store
            .changes_after(self.last)
            .map_err(ApiError::from)?;
        Ok(self.send_all(missed).await)
    }

    async fn send_all(&mut self, changes: Vec<Arc<Change>>) -> Result<(), Gone> {
        for change in changes {
            self.send(&change).await?;
        }
        Ok(())
    }

    async fn send(&mut self, change: &Change) -> Result<(), Gone> {
        self.last = change.revision;
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != change.namespace)
        {
            return Ok(());
        }
        let event_type = match change.change_type {
            ChangeType::Added => WatchEventType::Added,
            ChangeType::Modified => WatchEventType::Modified,
            ChangeType::Deleted => WatchEventType::Deleted,
        };
        // Boxed as it is queued: the watch keeps no event across the wait.
        let sent = self.out.send(Ok(WatchEvent {
            r#type: event_type as i32,
            object: Some(change.object()),
            revision: change.revision,
            previous: None,
            ..Default::default()
        }));
        sent.await.map_err(|_| Gone)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use skiff_proto::v1::{GenericObject, ObjectMeta};
    use tokio_stream::StreamExt;

    use super::*;
    use crate::events::{EventSource, EventType, InvolvedObject, NewEvent, SystemClock};
    use skiff_objects::{generic, IntoObject, ObjectExt};

    fn recorded(namespace: &str, pod: &str) -> NewEvent {
        NewEvent {
            involved: InvolvedObject {
                kind: "Pod".into(),
                namespace: namespace.into(),
                name: pod.into(),
                ..Default::default()
            },
            event_type: EventType::Normal,
            reason: "Pulled".into(),
            message: "pulled".into(),
            source: EventSource::default(),
            count: 1,
        }
    }

    async fn next(stream: &mut EventStream) -> Result<WatchEvent, Status> {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a watch event within 5 s")
            .expect("the stream is open")
    }

    #[tokio::test]
    async fn a_watch_replays_what_it_missed_then_follows_its_namespace() {
        let store = Arc::new(EventStore::new(Arc::new(SystemClock)));
        store.record_event(recorded("a", "web"));
        let from = store.revision();
        store.record_event(recorded("a", "db"));
        store.record_event(recorded("b", "web"));
        let shutdown = CancellationToken::new();
        let mut stream =
            watch(store.clone(), Some("a".into()), from, shutdown.clone()).expect("a watch");
        let missed = next(&mut stream).await.unwrap();
        assert_eq!(missed.revision, from + 1);
        assert_eq!(missed.r#type, WatchEventType::Added as i32);
        let object = missed.object.unwrap();
        assert!(object.meta().name.starts_with("db."), "{object:?}");
        // Live: namespace b's Event is skipped, a's arrives.
        store.record_event(recorded("b", "cache"));
        let again = store.record_event(recorded("a", "db"));
        let live = next(&mut stream).await.unwrap();
        assert_eq!(live.r#type, WatchEventType::Modified as i32);
        assert_eq!(
            live.object.unwrap().meta().resource_version,
            again.meta().resource_version
        );
        // A new leadership ends the watch as expired.
        store.restart();
        let ended = next(&mut stream).await.unwrap_err();
        assert_eq!(ended.code(), tonic::Code::OutOfRange);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_watch_from_a_version_the_store_does_not_have_is_refused_at_once() {
        let store = Arc::new(EventStore::new(Arc::new(SystemClock)));
        let before = store.revision() - 1;
        let refused = watch(store.clone(), None, before, CancellationToken::new());
        let status = Status::from(refused.err().expect("refused"));
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        let mut event = GenericObject {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: Some(ObjectMeta {
                name: "e".into(),
                namespace: "a".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        if let serde_json::Value::Object(fields) = json!({"reason": "Created"}) {
            generic::set_content(&mut event, &fields);
        }
        store.create(event.into_object()).unwrap();
        let listed = list(&store, "a");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.revision, store.revision());
        assert!(list(&store, "b").items.is_empty());
    }
}
