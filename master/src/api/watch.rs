//! Watch streams: every change after a revision, in order, with no gaps and
//! no duplicates.
//!
//! A watcher subscribes to live notifications *before* reading the kept
//! history, then drops live events it already sent. If it falls behind the
//! live channel it reads the history again from where it was. A revision
//! older than the kept history, or a snapshot that replaced the state, ends
//! the stream with OUT_OF_RANGE so the client re-lists.

use std::sync::Arc;

use super::event_stream::{self, EventSender, EventStream};
use prost::Message;
use skiff_proto::api::{Object, WatchEvent};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::ApiError;
use crate::objects::Kind;
use crate::store::state_machine::{Compacted, Notification, ObjectStore, StoredEvent};

/// History is read in pages of this many events.
const PAGE: usize = 1024;

struct Watcher {
    store: Arc<ObjectStore>,
    kind: Kind,
    namespace: Option<String>,
    last: u64,
    out: EventSender,
}

/// Starts a watch and returns its stream.
pub(super) fn start(
    store: Arc<ObjectStore>,
    kind: Kind,
    namespace: Option<String>,
    from_revision: u64,
    shutdown: CancellationToken,
) -> Result<EventStream, ApiError> {
    let live = store.subscribe();
    let (out, rx) = event_stream::channel(256);
    let mut watcher = Watcher {
        store,
        kind,
        namespace,
        last: from_revision,
        out,
    };
    // Fail fast, before the stream starts, when the revision is gone.
    if let Err(compacted) = watcher.store.events_after(from_revision, 0)? {
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
                Ok(Notification::Event(event, _)) => {
                    if event.revision <= self.last {
                        continue;
                    }
                    if event.revision > self.last + 1 {
                        // Should not happen; recover from history if it does.
                        if self.catch_up().await?.is_err() {
                            return Ok(());
                        }
                        if event.revision <= self.last {
                            continue;
                        }
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

    /// Sends every kept event after `self.last`.
    async fn catch_up(&mut self) -> Result<Result<(), Gone>, Status> {
        loop {
            let page = self
                .store
                .events_after(self.last, PAGE)
                .map_err(ApiError::from)?
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
        let object = match Object::decode(event.object.as_slice()) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(revision = event.revision, error = %e, "undecodable event in history");
                return Ok(());
            }
        };
        let message = WatchEvent {
            r#type: event.event_type,
            object: Some(object),
            revision: event.revision,
        };
        self.out.send(Ok(message)).await.map_err(|_| Gone)
    }
}
