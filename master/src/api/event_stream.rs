//! The queue behind a watch stream. Its slots hold boxed events: tokio's
//! channel allocates slots in blocks of 32, and an unboxed
//! `Result<WatchEvent, Status>` is about a kilobyte, so thousands of open
//! watches (one per node) would hold tens of megabytes of empty slots.

use std::pin::Pin;

use skiff_proto::api::WatchEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

type Item = Result<WatchEvent, Status>;

/// What a watch returns to tonic.
pub type EventStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

/// The sending side of a watch.
#[derive(Clone)]
pub struct EventSender(mpsc::Sender<Box<Item>>);

/// The stream's consumer went away.
#[derive(Debug)]
pub struct Closed;

impl EventSender {
    pub async fn send(&self, item: Item) -> Result<(), Closed> {
        self.0.send(Box::new(item)).await.map_err(|_| Closed)
    }

    /// Resolves when the consumer has gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// A queue of `capacity` events and the stream reading it.
pub fn channel(capacity: usize) -> (EventSender, EventStream) {
    let (tx, rx) = mpsc::channel(capacity);
    let stream = ReceiverStream::new(rx).map(|boxed: Box<Item>| *boxed);
    (EventSender(tx), Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_arrive_in_order_and_a_dropped_stream_closes_the_sender() {
        let (tx, mut rx) = channel(4);
        for revision in 1..=3 {
            tx.send(Ok(WatchEvent {
                revision,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        for revision in 1..=3 {
            assert_eq!(rx.next().await.unwrap().unwrap().revision, revision);
        }
        drop(rx);
        assert!(tx.send(Err(Status::aborted("x"))).await.is_err());
        tx.closed().await;
    }
}
