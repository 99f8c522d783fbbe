//! The queue behind a watch stream.
//!
//! A change sent as the store's bytes ([`EventSender::send_encoded`]) waits
//! in the queue as [`Encoded`]: its type, revision and the store's
//! reference-counted bytes, about a hundred bytes with its tag, boxed. It
//! becomes a [`WatchEvent`] only when tonic takes it to write it out.
//! Anything else waits as a `Result<WatchEvent, Status>` boxed once more, a
//! kilobyte or more (a `WatchEvent` holds its decoded objects inline). Each
//! slot is one pointer because tokio's channel allocates slots in blocks of
//! 32 and keeps up to a few blocks per channel: thousands of open watches
//! (three or four per node) would otherwise hold megabytes of empty slots.
//! Before [`Encoded`], every queued change of a burst (a Service created
//! goes to every node's Service watch) cost a kilobyte on each of them: 59
//! MB at the peak of 1,000 nodes' watches (`skiff-bench scale`, heaptrack).

use std::future::Future;
use std::pin::Pin;

use prost::bytes::Bytes;
use skiff_proto::api::WatchEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

type Item = Result<WatchEvent, Status>;

/// What a watch returns to tonic.
pub type EventStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

/// A change as the store holds it: sent without being decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// `EventType` as its protobuf number.
    pub event_type: i32,
    pub revision: u64,
    /// The prost-encoded object.
    pub object: Bytes,
    /// The prost-encoded object before the change, when sent.
    pub previous: Option<Bytes>,
}

impl From<Encoded> for WatchEvent {
    fn from(e: Encoded) -> WatchEvent {
        WatchEvent {
            r#type: e.event_type,
            revision: e.revision,
            encoded_object: Some(e.object),
            encoded_previous: e.previous,
            ..Default::default()
        }
    }
}

/// One queued entry, boxed ([`Slot`]).
enum Entry {
    Encoded(Encoded),
    Item(Box<Item>),
}

/// What the channel holds: one pointer.
type Slot = Box<Entry>;

impl Entry {
    fn into_item(self) -> Item {
        match self {
            Entry::Encoded(e) => Ok(WatchEvent::from(e)),
            Entry::Item(item) => *item,
        }
    }
}

/// The sending side of a watch.
#[derive(Clone)]
pub struct EventSender(mpsc::Sender<Slot>);

/// The stream's consumer went away.
#[derive(Debug)]
pub struct Closed;

impl EventSender {
    /// Queues `item`. It is boxed before the returned future exists, so a
    /// watch task waiting for room holds a pointer, not the event: an
    /// `async fn` would keep its argument (a `WatchEvent` holds its
    /// decoded objects inline, about two kilobytes) in the state of every
    /// task that sends one, for as long as the task lives.
    pub fn send(&self, item: Item) -> impl Future<Output = Result<(), Closed>> + Send + '_ {
        self.queue(Box::new(Entry::Item(Box::new(item))))
    }

    /// Queues a change as the store's bytes, in a box of about a hundred
    /// bytes rather than a [`WatchEvent`]'s kilobyte or more.
    pub fn send_encoded(
        &self,
        event: Encoded,
    ) -> impl Future<Output = Result<(), Closed>> + Send + '_ {
        self.queue(Box::new(Entry::Encoded(event)))
    }

    async fn queue(&self, slot: Slot) -> Result<(), Closed> {
        self.0.send(slot).await.map_err(|_| Closed)
    }

    /// Resolves when the consumer has gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// A queue of `capacity` events and the stream reading it.
pub fn channel(capacity: usize) -> (EventSender, EventStream) {
    let (tx, rx) = mpsc::channel(capacity);
    let stream = ReceiverStream::new(rx).map(|slot: Slot| (*slot).into_item());
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

    #[tokio::test]
    async fn an_encoded_change_comes_out_as_its_event_with_the_same_bytes() {
        let (tx, mut rx) = channel(4);
        let object = Bytes::from_static(b"\x0a\x03pod");
        let encoded = Encoded {
            event_type: 2,
            revision: 7,
            object: object.clone(),
            previous: None,
        };
        tx.send_encoded(encoded).await.unwrap();
        tx.send(Err(Status::aborted("behind"))).await.unwrap();
        let event = rx.next().await.unwrap().unwrap();
        assert_eq!((event.r#type, event.revision), (2, 7));
        assert_eq!(event.encoded_object.as_ref(), Some(&object));
        // Shared with the sender's copy, not copied.
        assert_eq!(event.encoded_object.unwrap().as_ptr(), object.as_ptr());
        assert!(event.encoded_previous.is_none() && event.object.is_none());
        // Queued in order with the other kind of entry.
        let failed = rx.next().await.unwrap().unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Aborted);
    }

    #[test]
    fn a_queued_change_takes_a_small_box_and_a_slot_one_pointer() {
        // What a queued change allocates, against the event it stands for.
        let entry = std::mem::size_of::<Entry>();
        let item = std::mem::size_of::<Item>();
        assert!(entry <= 128, "Entry {entry} B");
        assert!(entry * 4 <= item, "Entry {entry} B, Item {item} B");
        assert_eq!(std::mem::size_of::<Slot>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn a_send_waiting_for_room_holds_a_pointer_not_the_event() {
        let (tx, _rx) = channel(1);
        let item = std::mem::size_of::<Item>();
        let sending = tx.send(Ok(WatchEvent::default()));
        // What every watch task keeps while it waits: the channel's send
        // (its semaphore's wait and the boxed slot), not a WatchEvent.
        let held = std::mem::size_of_val(&sending);
        assert!(held * 4 <= item, "send future {held} B, event {item} B");
    }
}
