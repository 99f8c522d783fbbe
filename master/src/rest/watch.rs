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
//! Label and field selectors filter the events. With a Table `Accept`,
//! each object is a one-row Table (the first with its columns).

use std::time::Duration;

use axum::body::Body;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};
use skiff_proto::api::api_server::Api;
use skiff_proto::api::{EventType, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use skiff_security::PeerInfo;
use tokio_util::sync::CancellationToken;

use super::selectors::{FieldSelector, LabelSelector};
use super::status::RestError;
use super::{custom_kinds, wire, Query};
use crate::api::ApiService;
use crate::objects::registry::KindInfo;

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

    fn selects(&self, object: &Value) -> bool {
        self.labels.matches_json(object) && self.fields.matches_json(object)
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

/// Who watches what: the caller, the kind and namespace, the selectors.
pub(super) struct WatchTarget<'a> {
    pub api: &'a ApiService,
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

/// Starts a watch and answers with its stream. `listed` holds the current
/// objects and their revision when [`WatchPlan::starts_with_list`].
pub(super) async fn serve(
    target: WatchTarget<'_>,
    plan: WatchPlan,
    listed: Option<(Vec<Value>, u64)>,
) -> Result<Response<Body>, RestError> {
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
        },
    );
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(BUFFERED_EVENTS);
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
            if tx.send(Ok(line)).await.is_err() {
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
            let line = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if bookmarks => encoder.bookmark(last_revision, false),
                event = events.next() => match event {
                    None => return,
                    Some(Err(status)) => {
                        let code = if status.code() == tonic::Code::OutOfRange { StatusCode::GONE } else { StatusCode::INTERNAL_SERVER_ERROR };
                        let reason = if code == StatusCode::GONE { "Expired" } else { "InternalError" };
                        let e = RestError::new(code, reason, status.message().to_owned());
                        let _ = tx.send(Ok(encoder.line("ERROR", e.to_json()))).await;
                        return;
                    }
                    Some(Ok(event)) => {
                        last_revision = event.revision;
                        let Some(object) = event.object.as_ref() else { continue };
                        let mut value = encode(encoder.info, object, encoder.table);
                        value["metadata"]["resourceVersion"] = json!(event.revision.to_string());
                        if !encoder.selects(&value) {
                            continue;
                        }
                        let kind = match EventType::try_from(event.r#type) {
                            Ok(EventType::Added) => "ADDED",
                            Ok(EventType::Deleted) => "DELETED",
                            _ => "MODIFIED",
                        };
                        encoder.line(kind, value)
                    }
                },
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default())
}
