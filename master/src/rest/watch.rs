//! REST watches: one JSON event per line (`{"type": ..., "object": ...}`),
//! flushed as it happens, from the API service's gRPC watch.
//!
//! - `resourceVersion=N`: every change after N. A revision the master no
//!   longer keeps ends in an `ERROR` event with a 410 `Expired` Status, and
//!   clients list again.
//! - No `resourceVersion`, or `0`: first every current object as `ADDED`,
//!   then the changes after the list.
//! - `sendInitialEvents=true` (WatchList, client-go 0.35's default): the
//!   same, and the initial events end with a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end: "true"`.
//! - `allowWatchBookmarks`: a `BOOKMARK` with the newest revision every
//!   [`BOOKMARK_EVERY`].
//!
//! Label and field selectors filter the events as kube-apiserver's watch
//! cache does (`cacheWatcher.convertToWatchEvent`), judging the object
//! before and after each change: a change that makes an object match is
//! sent as `ADDED`, one that makes it stop matching as `DELETED` (carrying
//! the object as it was, at the change's resourceVersion), one that leaves
//! it matching as `MODIFIED`; a deletion only if the object matched. The
//! object before comes from the store only when selectors may read it
//! differently (`WatchEvent.previous`, asked for by watches with
//! selectors alone); otherwise both versions are judged alike. Labels are
//! matched on the typed object; an object is made JSON for a field
//! selector or to be sent, at most once. With a Table `Accept`, each
//! object is a one-row Table (the first with its columns).
//!
//! [`start`] makes the events, each one JSON line ([`EventLines`]);
//! [`chunked`] answers them as a chunked HTTP body, and
//! [`super::watch_websocket`] as WebSocket text messages when the request
//! asks for an upgrade: the same watch either way, framed differently.

use std::time::Duration;

use axum::body::Body;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};
use skiff_proto::api::api_server::Api;
use skiff_proto::api::{EventType, Object, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use skiff_security::PeerInfo;
use tokio_util::sync::CancellationToken;

use super::selectors::{FieldSelector, LabelSelector};
use super::status::RestError;
use super::{custom_kinds, wire, Query};
use crate::api::ApiService;
use skiff_objects::registry::KindInfo;
use skiff_objects::ObjectExt;

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// How long a watch lasts without `timeoutSeconds`, as kube-apiserver's
/// default minimum request timeout.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Events buffered for a slow client before the watch waits for it.
const BUFFERED_EVENTS: usize = 256;

/// How one watch writes its events.
struct Encoder {
    info: &'static KindInfo,
    table: bool,
    columns_sent: bool,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Encoder {
    fn line(&mut self, kind: &str, object: Value) -> bytes::Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let with_columns = !self.columns_sent;
            self.columns_sent = true;
            custom_kinds::table(
                self.info,
                &[&object],
                &rv,
                with_columns,
                time::OffsetDateTime::now_utc(),
            )
        } else {
            object
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        bytes::Bytes::from(line)
    }

    /// What this watch sends for `event`, if anything: its type and the
    /// object, as JSON at the event's resourceVersion.
    fn selected(&self, event: &WatchEvent) -> Option<(&'static str, Value)> {
        let object = event.object.as_ref()?;
        let change = EventType::try_from(event.r#type).unwrap_or(EventType::Modified);
        let mut after = Version::new(object);
        if self.labels.is_empty() && self.fields.is_empty() {
            return Some((type_name(change), self.json(after, event.revision)));
        }
        let mut before = event.previous.as_ref().map(Version::new);
        let after_matches = change != EventType::Deleted && self.matches(&mut after);
        let before_matches = match (change, before.as_mut()) {
            (EventType::Added, _) => false,
            (_, Some(before)) => self.matches(before),
            // A deletion's object is the object as it was.
            (EventType::Deleted, None) => self.matches(&mut after),
            // Not kept: selectors read both versions alike.
            (_, None) => after_matches,
        };
        let (sent, shown) = selected_change(change, before_matches, after_matches)?;
        let version = match (shown, before) {
            (Shown::Previous, Some(before)) => before,
            _ => after,
        };
        Some((type_name(sent), self.json(version, event.revision)))
    }

    /// Whether the selectors select `version`: labels on the typed object,
    /// fields (when there are any) on its JSON.
    fn matches(&self, version: &mut Version<'_>) -> bool {
        if !self.labels.matches(&version.object.meta().labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        // Every field a selector may read: a Table row's JSON leaves out
        // what the row does not print.
        let (info, object, table) = (self.info, version.object, self.table);
        let json = version.json.get_or_insert_with(|| match table {
            true => wire::encode_whole_for_table(info, object),
            false => wire::encode(info, object),
        });
        self.fields.matches_json(json)
    }

    /// `version` as sent: JSON, at `revision`.
    fn json(&self, version: Version<'_>, revision: u64) -> Value {
        let mut value = version
            .json
            .unwrap_or_else(|| encode(self.info, version.object, self.table));
        value["metadata"]["resourceVersion"] = json!(revision.to_string());
        value
    }

    fn bookmark(&mut self, revision: u64, initial_events_end: bool) -> bytes::Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.info.name,
            "apiVersion": self.info.api_version,
            "metadata": metadata,
        });
        self.line("BOOKMARK", object)
    }
}

/// One version of a changed object, made JSON at most once.
struct Version<'a> {
    object: &'a Object,
    json: Option<Value>,
}

impl<'a> Version<'a> {
    fn new(object: &'a Object) -> Version<'a> {
        Version { object, json: None }
    }
}

/// Which version of the object a selected watch's event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// The one the change left (for a deletion: the object as it was).
    Changed,
    /// The one before the change: an object that stopped matching.
    Previous,
}

/// What a watch with selectors sends for a change of type `change`, as
/// kube-apiserver's cacher decides: `before`, whether the object before
/// the change matched (not asked for a creation); `after`, whether the
/// one it leaves matches (not asked for a deletion).
fn selected_change(change: EventType, before: bool, after: bool) -> Option<(EventType, Shown)> {
    match change {
        EventType::Added => after.then_some((EventType::Added, Shown::Changed)),
        EventType::Deleted => before.then_some((EventType::Deleted, Shown::Changed)),
        _ => match (before, after) {
            (true, true) => Some((EventType::Modified, Shown::Changed)),
            (false, true) => Some((EventType::Added, Shown::Changed)),
            (true, false) => Some((EventType::Deleted, Shown::Previous)),
            (false, false) => None,
        },
    }
}

fn type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Added => "ADDED",
        EventType::Deleted => "DELETED",
        _ => "MODIFIED",
    }
}

/// What a watch request asks for, from its query parameters.
pub(super) struct WatchPlan {
    /// `sendInitialEvents`, when given.
    send_initial: Option<bool>,
    /// `resourceVersion` (`""` when not given).
    resource_version: String,
    bookmarks: bool,
    timeout: Duration,
    table: bool,
}

impl WatchPlan {
    pub(super) fn from_query(
        info: &'static KindInfo,
        query: &Query,
        table: bool,
    ) -> Result<WatchPlan, RestError> {
        let send_initial = match query.get("sendInitialEvents").map(String::as_str) {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(RestError::bad_request(format!(
                    "sendInitialEvents {other:?} is neither true nor false"
                )))
            }
        };
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true" || v == "1");
        let timeout = match query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
                RestError::bad_request(format!(
                    "timeoutSeconds {t:?} is not a non-negative integer"
                ))
            })?),
            None => DEFAULT_WATCH_TIMEOUT,
        };
        if send_initial == Some(true) && !bookmarks {
            return Err(RestError::invalid(
                info,
                "",
                vec![(
                    "allowWatchBookmarks".into(),
                    "Forbidden: sendInitialEvents requires allowWatchBookmarks=true".into(),
                )],
            ));
        }
        Ok(WatchPlan {
            send_initial,
            resource_version: query.get("resourceVersion").cloned().unwrap_or_default(),
            bookmarks,
            timeout,
            table,
        })
    }

    /// Whether the watch starts with the current objects (so the caller
    /// lists them first).
    pub(super) fn starts_with_list(&self) -> bool {
        self.send_initial == Some(true)
            || (self.send_initial.is_none() && matches!(self.resource_version.as_str(), "" | "0"))
    }
}

/// Who watches what: the peer the API service's watch is made as, the
/// kind and namespace, the selectors.
pub(super) struct WatchTarget<'a> {
    pub api: &'a ApiService,
    /// This master, for a REST watch its caller was authorized for as a
    /// `watch` already (`resources::Call::watch`).
    pub peer: &'a PeerInfo,
    pub info: &'static KindInfo,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub shutdown: CancellationToken,
}

/// An object as a watch event carries it: as the API answers it, or as a
/// Table's row reads it.
pub(super) fn encode(info: &KindInfo, object: &skiff_proto::api::Object, table: bool) -> Value {
    if table {
        wire::encode_for_table(info, object)
    } else {
        wire::encode(info, object)
    }
}

/// A started watch's events, each one JSON line (`{"type":...,"object":...}`
/// and a newline), as they happen. It ends when the watch does (its
/// timeout, the server's shutdown, after an `ERROR` event); dropping it
/// ends the watch and frees its subscription to the store.
pub(super) type EventLines = mpsc::Receiver<bytes::Bytes>;

/// Starts a watch: its revision checked and the API service's watch
/// begun as `target.peer` (a refusal is the error, before anything is
/// sent), its events on the way. `listed` holds
/// the current objects and their revision when
/// [`WatchPlan::starts_with_list`].
pub(super) async fn start(
    target: WatchTarget<'_>,
    plan: WatchPlan,
    listed: Option<(Vec<Value>, u64)>,
) -> Result<EventLines, RestError> {
    let info = target.info;
    let bookmarks = plan.bookmarks;
    let timeout = plan.timeout;
    let mut encoder = Encoder {
        info,
        table: plan.table,
        columns_sent: false,
        labels: target.labels,
        fields: target.fields,
    };

    // What is sent before the changes: the current objects, when asked for.
    let mut initial = Vec::new();
    let from_revision = match listed {
        Some((items, revision)) => {
            for item in items {
                initial.push(encoder.line("ADDED", item));
            }
            if plan.send_initial == Some(true) {
                initial.push(encoder.bookmark(revision, true));
            }
            revision
        }
        None => plan.resource_version.parse::<u64>().map_err(|_| {
            RestError::bad_request(format!(
                "resourceVersion {:?} is not one this server gave",
                plan.resource_version
            ))
        })?,
    };

    let request = super::as_caller(
        target.peer,
        WatchRequest {
            kind: info.kind.name().to_owned(),
            namespace: target.namespace.unwrap_or_default(),
            from_revision,
            with_previous: !encoder.labels.is_empty() || !encoder.fields.is_empty(),
        },
    );
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(BUFFERED_EVENTS);
    let mut events = match target.api.watch(request).await {
        Ok(stream) => Some(stream.into_inner()),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            let expired = RestError::new(
                StatusCode::GONE,
                "Expired",
                format!(
                    "too old resource version: {from_revision} ({})",
                    status.message()
                ),
            );
            initial.push(encoder.line("ERROR", expired.to_json()));
            None
        }
        Err(status) => return Err(RestError::from_grpc(&status, info, "")),
    };
    let shutdown = target.shutdown;
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(events) = events.as_mut() else {
            return;
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let mut last_revision = from_revision;
        loop {
            // The next line, or (`Err`) the ERROR line that ends the watch.
            // Nothing is awaited inside a branch: what a branch holds (an
            // event and its decoded objects, kilobytes) would be kept in
            // this task's state for as long as the watch lasts.
            let next: Result<bytes::Bytes, bytes::Bytes> = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if bookmarks => Ok(encoder.bookmark(last_revision, false)),
                event = events.next() => match event {
                    None => return,
                    Some(Err(status)) => {
                        let code = if status.code() == tonic::Code::OutOfRange { StatusCode::GONE } else { StatusCode::INTERNAL_SERVER_ERROR };
                        let reason = if code == StatusCode::GONE { "Expired" } else { "InternalError" };
                        let e = RestError::new(code, reason, status.message().to_owned());
                        Err(encoder.line("ERROR", e.to_json()))
                    }
                    Some(Ok(event)) => {
                        last_revision = event.revision;
                        // The watch sends the stored bytes; this reader
                        // wants the objects.
                        match event.decoded() {
                            Ok(event) => match encoder.selected(&event) {
                                Some((kind, value)) => Ok(encoder.line(kind, value)),
                                None => continue,
                            },
                            Err(e) => {
                                let e = RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", format!("an undecodable object at revision {last_revision}: {e}"));
                                Err(encoder.line("ERROR", e.to_json()))
                            }
                        }
                    }
                },
            };
            let (line, ends) = match next {
                Ok(line) => (line, false),
                Err(line) => (line, true),
            };
            if tx.send(line).await.is_err() || ends {
                return;
            }
        }
    });
    Ok(rx)
}

/// A watch's events as a chunked HTTP answer, one line a chunk.
pub(super) fn chunked(lines: EventLines) -> Response<Body> {
    let chunks = tokio_stream::wrappers::ReceiverStream::new(lines).map(Ok::<_, std::io::Error>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(chunks))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use skiff_proto::v1;

    use super::*;
    use skiff_objects::registry::info;
    use skiff_objects::{IntoObject, Kind};

    /// A watch of pods with these selectors.
    fn encoder(labels: &str, fields: &str) -> Encoder {
        Encoder {
            info: info(Kind::Pod),
            table: false,
            columns_sent: false,
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::parse("Pod", fields).unwrap(),
        }
    }

    fn pod(app: &str, node: &str, phase: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web-1".into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), app.to_owned())].into(),
                resource_version: "6".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A change at revision 7.
    fn change(change: EventType, object: Object, previous: Option<Object>) -> WatchEvent {
        WatchEvent {
            r#type: change as i32,
            object: Some(object),
            revision: 7,
            previous,
            ..Default::default()
        }
    }

    /// The type sent, and the sent object's `app` label, `spec.nodeName`
    /// and resourceVersion.
    fn sent(
        encoder: &Encoder,
        event: &WatchEvent,
    ) -> Option<(&'static str, String, String, String)> {
        let (kind, value) = encoder.selected(event)?;
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        Some((
            kind,
            text(&value["metadata"]["labels"]["app"]),
            text(&value["spec"]["nodeName"]),
            text(&value["metadata"]["resourceVersion"]),
        ))
    }

    fn expect(
        kind: &'static str,
        app: &str,
        node: &str,
    ) -> Option<(&'static str, String, String, String)> {
        Some((kind, app.to_owned(), node.to_owned(), "7".to_owned()))
    }

    #[test]
    fn the_two_versions_decide_the_event_as_kube_apiserver_decides_it() {
        use EventType::{Added, Deleted, Modified};
        let cases = [
            // A creation: sent if it matches.
            (Added, false, true, Some((Added, Shown::Changed))),
            (Added, false, false, None),
            // An update: by what matched before and after.
            (Modified, true, true, Some((Modified, Shown::Changed))),
            (Modified, false, true, Some((Added, Shown::Changed))),
            (Modified, true, false, Some((Deleted, Shown::Previous))),
            (Modified, false, false, None),
            // A deletion: sent if the object matched.
            (Deleted, true, false, Some((Deleted, Shown::Changed))),
            (Deleted, false, false, None),
        ];
        for (change, before, after, expected) in cases {
            assert_eq!(
                selected_change(change, before, after),
                expected,
                "{change:?}, matched before: {before}, after: {after}"
            );
        }
    }

    #[test]
    fn a_label_selected_watch_sees_objects_arrive_and_leave_as_their_labels_change() {
        let watch = encoder("app=web", "");
        let web = || pod("web", "n1", "Running");
        let db = || pod("db", "n1", "Running");
        // Creations and deletions: only of matching objects.
        assert_eq!(
            sent(&watch, &change(EventType::Added, web(), None)),
            expect("ADDED", "web", "n1")
        );
        assert_eq!(sent(&watch, &change(EventType::Added, db(), None)), None);
        assert_eq!(
            sent(&watch, &change(EventType::Deleted, web(), None)),
            expect("DELETED", "web", "n1")
        );
        assert_eq!(sent(&watch, &change(EventType::Deleted, db(), None)), None);
        // Relabelled away: DELETED, carrying the pod as it was.
        let away = change(EventType::Modified, db(), Some(web()));
        assert_eq!(sent(&watch, &away), expect("DELETED", "web", "n1"));
        // Relabelled back: ADDED.
        let back = change(EventType::Modified, web(), Some(db()));
        assert_eq!(sent(&watch, &back), expect("ADDED", "web", "n1"));
        // Changes that keep the labels (no version before kept).
        assert_eq!(
            sent(&watch, &change(EventType::Modified, web(), None)),
            expect("MODIFIED", "web", "n1")
        );
        assert_eq!(sent(&watch, &change(EventType::Modified, db(), None)), None);
        // An update that removed a matching object (its last finalizer,
        // and its label with it): DELETED.
        let removed = change(EventType::Deleted, db(), Some(web()));
        assert_eq!(sent(&watch, &removed), expect("DELETED", "db", "n1"));
        let never_seen = change(EventType::Deleted, web(), Some(db()));
        assert_eq!(sent(&watch, &never_seen), None);
    }

    #[test]
    fn a_field_selected_watch_sees_objects_arrive_and_leave_as_their_fields_change() {
        let on_n1 = encoder("", "spec.nodeName=n1");
        let bound = change(
            EventType::Modified,
            pod("web", "n1", "Pending"),
            Some(pod("web", "", "Pending")),
        );
        assert_eq!(sent(&on_n1, &bound), expect("ADDED", "web", "n1"));
        let running = encoder("app=web", "status.phase=Running");
        let finished = change(
            EventType::Modified,
            pod("web", "n1", "Succeeded"),
            Some(pod("web", "n1", "Running")),
        );
        let (kind, before) = running.selected(&finished).unwrap();
        assert_eq!(kind, "DELETED");
        assert_eq!(before["status"]["phase"], "Running");
        assert_eq!(before["metadata"]["resourceVersion"], "7");
        let started = change(
            EventType::Modified,
            pod("web", "n1", "Running"),
            Some(pod("web", "n1", "Pending")),
        );
        assert_eq!(running.selected(&started).unwrap().0, "ADDED");
        // Both selectors must hold, before as after.
        let relabelled = change(
            EventType::Modified,
            pod("db", "n1", "Running"),
            Some(pod("web", "n1", "Running")),
        );
        assert_eq!(running.selected(&relabelled).unwrap().0, "DELETED");
        let deleted = change(EventType::Deleted, pod("web", "n1", "Failed"), None);
        assert_eq!(running.selected(&deleted), None);
    }

    #[test]
    fn a_table_watch_selects_on_fields_its_rows_do_not_print() {
        let table = Encoder {
            table: true,
            ..encoder("", "spec.schedulerName=other")
        };
        // A pod as stored: a document, whose Table row reads its spec slim.
        let pod = |scheduler: &str| {
            let mut object = skiff_objects::legacy_bodies::to_document(pod("web", "", "Pending"));
            let Some(skiff_proto::api::object::Kind::Generic(document)) = &mut object.kind else {
                panic!("a document");
            };
            let mut content = skiff_objects::generic::content(document);
            content["spec"]["schedulerName"] = json!(scheduler);
            skiff_objects::generic::set_content(document, &content);
            object
        };
        let ours = change(EventType::Added, pod("other"), None);
        assert_eq!(table.selected(&ours).map(|(kind, _)| kind), Some("ADDED"));
        let not = change(EventType::Added, pod("default-scheduler"), None);
        assert_eq!(table.selected(&not), None);
    }

    #[test]
    fn a_watch_without_selectors_sends_every_change_as_it_is() {
        let everything = encoder("", "");
        let away = change(
            EventType::Modified,
            pod("db", "n1", "Running"),
            Some(pod("web", "n1", "Running")),
        );
        assert_eq!(sent(&everything, &away), expect("MODIFIED", "db", "n1"));
        let deleted = change(EventType::Deleted, pod("db", "n1", "Running"), None);
        assert_eq!(sent(&everything, &deleted), expect("DELETED", "db", "n1"));
    }
}
