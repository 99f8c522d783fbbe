//! Watch streams: every change after a revision, in order, with no gaps and
//! no duplicates.
//!
//! A watcher subscribes to live notifications of its kind
//! ([`ObjectStore::subscribe_kind`]: it is not woken by the changes of
//! every other kind, which thousands of nodes' watches would each pay for)
//! *before* reading the kept history, then drops live events it already
//! sent. If it falls behind the live channel it reads the history again
//! from where it was. A revision after which a change of the kind is no
//! longer kept (or older than the history's beginning), or a snapshot that
//! replaced the state, ends the stream with OUT_OF_RANGE so the client
//! re-lists.
//!
//! A watch that asks `with_previous` (the REST API's, when it has label or
//! field selectors) also gets the object before a change whenever the
//! store kept it ([`StoredEvent::previous`]).
//!
//! Objects go out as the bytes the store holds
//! ([`WatchEvent::encoded_object`](skiff_proto::api::WatchEvent)), shared
//! by reference count: a change reaches every watcher of its kind, and
//! none copies, decodes or encodes it again, and it waits in a watcher's
//! queue as a small [`event_stream::Encoded`], not as a `WatchEvent`;
//! in-process readers (the REST API) decode
//! what they read (`WatchEvent::decoded`).

use std::sync::Arc;

use super::event_stream::{self, Encoded, EventSender, EventStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::ApiError;
use crate::store::state_machine::{Compacted, Notification, ObjectStore, StoredEvent};
use skiff_objects::{legacy_bodies, Kind};

/// History is read in pages of this many events.
const PAGE: usize = 1024;

struct Watcher {
    store: Arc<ObjectStore>,
    kind: Kind,
    namespace: Option<String>,
    /// Whether events carry the object before the change, when kept.
    with_previous: bool,
    /// Whether the watcher reads the watched kind in its protobuf model
    /// (`skiff_objects::legacy_bodies`): one of a release from before the
    /// kind became a document.
    protobuf_model: bool,
    /// The data format the watcher named.
    reader_format: u32,
    last: u64,
    out: EventSender,
}

/// What a watch asks for.
pub(super) struct WatchScope {
    pub kind: Kind,
    /// `None` watches every namespace.
    pub namespace: Option<String>,
    pub from_revision: u64,
    pub with_previous: bool,
    /// The data format the watcher named (`0`: none).
    pub reader_format: u32,
}

/// Starts a watch and returns its stream.
pub(super) fn start(
    store: Arc<ObjectStore>,
    scope: WatchScope,
    shutdown: CancellationToken,
) -> Result<EventStream, ApiError> {
    // Only this kind's changes: a watch is not woken by every other.
    let live = store.subscribe_kind(scope.kind);
    let (out, rx) = event_stream::channel(256);
    let mut watcher = Watcher {
        store,
        kind: scope.kind,
        namespace: scope.namespace,
        with_previous: scope.with_previous,
        protobuf_model: legacy_bodies::reads_differently(scope.kind.name(), scope.reader_format),
        reader_format: scope.reader_format,
        last: scope.from_revision,
        out,
    };
    // Fail fast, before the stream starts, when a change of the kind after
    // the revision is gone. Judged per kind, as kube-apiserver's watch
    // cache (one per resource) judges it: a quiet kind's watch resumed from
    // its last change is served while other kinds' changes went by.
    if let Err(compacted) = watcher
        .store
        .kind_events_after(scope.kind, scope.from_revision, 0)
    {
        return Err(compacted.into());
    }
    let out = watcher.out.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = out.closed() => {}
            result = watcher.run(live) => {
                if let Err(status) = result {
                    let _ = out.send(Err(status)).await;
                }
            }
        }
    });
    Ok(rx)
}

/// The watcher's consumer went away.
struct Gone;

impl Watcher {
    async fn run(&mut self, mut live: broadcast::Receiver<Notification>) -> Result<(), Status> {
        if self.catch_up().await?.is_err() {
            return Ok(());
        }
        loop {
            match live.recv().await {
                // Revisions come with gaps (other kinds' changes); a missed
                // one of this kind would be reported as lagging.
                Ok(Notification::Event(event, _)) => {
                    if event.revision <= self.last {
                        continue;
                    }
                    if self.send(&event).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(Notification::Reset { revision }) => {
                    return Err(ApiError::from(Compacted {
                        requested: self.last,
                        oldest: revision,
                    })
                    .into());
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

    /// Sends every kept event of its kind after `self.last`.
    async fn catch_up(&mut self) -> Result<Result<(), Gone>, Status> {
        loop {
            let page = self
                .store
                .kind_events_after(self.kind, self.last, PAGE)
                .map_err(ApiError::from)?;
            let full = page.len() == PAGE;
            for event in page {
                if self.send(&event).await.is_err() {
                    return Ok(Err(Gone));
                }
            }
            if !full {
                return Ok(Ok(()));
            }
        }
    }

    async fn send(&mut self, event: &StoredEvent) -> Result<(), Gone> {
        self.last = event.revision;
        if event.kind != self.kind {
            return Ok(());
        }
        if let Some(ns) = &self.namespace {
            if *ns != event.namespace {
                return Ok(());
            }
        }
        // The stored bytes as they are, shared: no copy, decode or encode
        // per watcher (but for one of an older release watching a kind
        // held as a document).
        let previous =
            (self.with_previous && !event.previous.is_empty()).then(|| event.previous.clone());
        let mut message = Encoded {
            event_type: event.event_type,
            revision: event.revision,
            object: event.object.clone(),
            previous,
        };
        if self.protobuf_model {
            let format = self.reader_format;
            message.object = in_protobuf_model(&message.object, format);
            message.previous = message
                .previous
                .as_ref()
                .map(|p| in_protobuf_model(p, format));
        }
        self.out.send_encoded(message).await.map_err(|_| Gone)
    }
}

/// An encoded object of a kind held as a document, encoded in its
/// protobuf model instead for a watcher naming data format `format`
/// (`skiff_objects::legacy_bodies`); as it is when that cannot be done
/// (what the watcher then reads names the problem no less than a refusal
/// would).
fn in_protobuf_model(bytes: &bytes::Bytes, format: u32) -> bytes::Bytes {
    legacy_bodies::encoded_for_reader(bytes, format).map_or_else(|| bytes.clone(), Into::into)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use skiff_proto::api::Object;
    use skiff_proto::v1;
    use tokio_stream::StreamExt;

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

    fn meta(name: &str, namespace: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        })
    }

    /// The object of the first event a watcher of `kind` naming
    /// `reader_format` gets from the start.
    async fn first_event(store: &Arc<ObjectStore>, kind: Kind, reader_format: u32) -> Object {
        let scope = WatchScope {
            kind,
            namespace: None,
            from_revision: 0,
            with_previous: false,
            reader_format,
        };
        let mut stream = start(store.clone(), scope, CancellationToken::new()).unwrap();
        let event = stream.next().await.unwrap().unwrap();
        let bytes = event.encoded_object.expect("the object");
        Object::decode(&bytes[..]).unwrap()
    }

    #[tokio::test]
    async fn a_watcher_gets_each_moved_kind_as_the_data_format_it_names_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let namespace = skiff_objects::namespaces::named("default", "Active");
        let secret = skiff_objects::secrets::object(
            meta("s", "default").unwrap(),
            "Opaque",
            [("k".to_owned(), b"v".to_vec())].into(),
        );
        store.apply_commands(vec![create(namespace), create(secret)]);
        let cases = [
            (Kind::Secret, 0, false),
            (Kind::Secret, 3, true),
            (Kind::Secret, 4, true),
            (Kind::Namespace, 0, false),
            (Kind::Namespace, 3, false),
            (Kind::Namespace, 4, true),
        ];
        for (kind, reader_format, documents) in cases {
            let object = first_event(&store, kind, reader_format).await;
            assert_eq!(
                legacy_bodies::is_moved_document(&object),
                documents,
                "{kind} at format {reader_format}: {object:?}"
            );
            if kind == Kind::Secret {
                let read = skiff_objects::secrets::read(&object).expect("a Secret");
                assert_eq!(skiff_objects::secrets::value(&read, "k"), Some(&b"v"[..]));
            } else {
                let phase = skiff_objects::namespaces::phase(&object);
                assert_eq!(phase.as_deref(), Some("Active"));
            }
        }
    }

    #[tokio::test]
    async fn an_older_agent_watching_services_gets_one_its_model_cannot_hold_cut_down() {
        use skiff_objects::services::{self, ServicePort, ServiceSpec};
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let namespace = skiff_objects::namespaces::named("default", "Active");
        // publishNotReadyAddresses has no place in the protobuf model of
        // format 5: an agent of that release still gets the Service (its
        // rules and DNS need it), in its model, without that field.
        let spec = ServiceSpec {
            cluster_ip: Some("10.43.0.30".into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        };
        let service = services::object(meta("peers", "default").unwrap(), spec, None);
        assert!(legacy_bodies::to_legacy(service.clone()).is_err());
        store.apply_commands(vec![create(namespace), create(service)]);
        for (reader_format, documents) in [(5, false), (legacy_bodies::LATEST_FORMAT, true)] {
            let object = first_event(&store, Kind::Service, reader_format).await;
            assert_eq!(
                legacy_bodies::is_moved_document(&object),
                documents,
                "at format {reader_format}: {object:?}"
            );
            // Marked as cut for the older reader, so it is never written
            // back.
            assert_eq!(
                legacy_bodies::cut_from(&object).is_some(),
                !documents,
                "{object:?}"
            );
            let read = services::read(&object).expect("a Service");
            assert_eq!(services::cluster_ip(&read), "10.43.0.30");
            assert_eq!(services::ports(&read)[0].port, 80);
            assert_eq!(services::publishes_not_ready(&read), documents);
        }
    }

    #[tokio::test]
    async fn a_watch_is_refused_only_when_a_change_of_its_kind_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open_with_retention(dir.path(), 5).unwrap();
        // Namespaces at 1 and 2, pods at 3..=10; the history keeps 6..=10.
        let mut commands = Vec::new();
        for name in ["default", "other"] {
            commands.push(create(skiff_objects::namespaces::named(name, "")));
        }
        for i in 0..8 {
            let pod = v1::Pod {
                metadata: meta(&format!("p{i}"), "default"),
                ..Default::default()
            };
            commands.push(create(pod.into_object()));
        }
        store.apply_commands(commands);
        let watch = |kind, from_revision| {
            let scope = WatchScope {
                kind,
                namespace: None,
                from_revision,
                with_previous: false,
                reader_format: skiff_objects::legacy_bodies::LATEST_FORMAT,
            };
            start(store.clone(), scope, CancellationToken::new())
        };
        // No namespace changed after 2: served, though older than the history.
        assert!(watch(Kind::Namespace, 2).is_ok());
        // The namespace made at 2 is gone: refused, to list again.
        let refused = watch(Kind::Namespace, 1).err().expect("refused");
        assert_eq!(tonic::Status::from(refused).code(), tonic::Code::OutOfRange);
        assert!(watch(Kind::Pod, 4).is_err());
        let mut pods = watch(Kind::Pod, 5).unwrap();
        assert_eq!(pods.next().await.unwrap().unwrap().revision, 6);
    }

    #[tokio::test]
    async fn a_watch_gets_the_pod_before_its_relabelling_only_when_it_asks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let pod = v1::Pod {
            metadata: meta("web", "default"),
            ..Default::default()
        };
        store.apply_commands(vec![
            create(skiff_objects::namespaces::named("default", "")),
            create(pod.into_object()),
        ]);
        let mut relabelled = store.get(Kind::Pod, "default", "web").unwrap().unwrap();
        relabelled
            .meta_mut()
            .unwrap()
            .labels
            .insert("app".into(), "db".into());
        let update = Command::Update {
            object: relabelled.encode_to_vec(),
            status_only: false,
        };
        store.apply_commands(vec![update]);
        assert_eq!(store.revision(), 3);
        for with_previous in [false, true] {
            let scope = WatchScope {
                kind: Kind::Pod,
                namespace: None,
                from_revision: 2,
                with_previous,
                reader_format: skiff_objects::legacy_bodies::LATEST_FORMAT,
            };
            let mut stream = start(store.clone(), scope, CancellationToken::new()).unwrap();
            let event = stream.next().await.unwrap().unwrap();
            // Sent as the store's bytes, decoded by a reader.
            assert!(event.object.is_none() && event.encoded_object.is_some());
            let event = event.decoded().unwrap();
            assert_eq!(event.revision, 3);
            let app = |object: &Object| object.meta().labels["app"].clone();
            assert_eq!(event.object.as_ref().map(app).as_deref(), Some("db"));
            let before = event.previous.as_ref().map(app);
            assert_eq!(
                before.as_deref(),
                with_previous.then_some("web"),
                "with_previous: {with_previous}"
            );
        }
    }
}
