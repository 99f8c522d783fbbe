//! Routes pod changes to the nodes they concern. One task reads the
//! store's change notifications and hands each pod event to the watchers
//! of the node the pod is bound to, so a thousand watching agents cost one
//! lookup per change, not a thousand wake-ups and decodes.
//!
//! A watcher that cannot keep up is dropped; its agent watches again from
//! a fresh list, which is always correct.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::store::state_machine::{KindFilter, Notification, ObjectStore, StoredEvent};
use skiff_objects::Kind;

/// Events buffered per watcher before it is considered too slow.
const BUFFER: usize = 1024;

type Subscribers = HashMap<String, Vec<mpsc::Sender<Arc<StoredEvent>>>>;

/// The per-node router of pod events.
pub struct NodePodHub {
    subscribers: Mutex<Subscribers>,
}

impl NodePodHub {
    /// Starts routing; stops at `shutdown`.
    pub fn spawn(store: Arc<ObjectStore>, shutdown: CancellationToken) -> Arc<NodePodHub> {
        let hub = Arc::new(NodePodHub {
            subscribers: Mutex::new(HashMap::new()),
        });
        // Pods only: nothing else is routed to a node.
        let mut live = store.subscribe_to(KindFilter::only(&[Kind::Pod]));
        let routing = hub.clone();
        tokio::spawn(async move {
            loop {
                let notification = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = live.recv() => n,
                };
                match notification {
                    Ok(Notification::Event(event, _)) => routing.route(event),
                    // Missed events: every watcher must re-list.
                    Ok(Notification::Reset { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => {
                        routing.lock().clear();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn route(&self, event: Arc<StoredEvent>) {
        if event.kind != Kind::Pod || event.node.is_empty() {
            return;
        }
        let mut subscribers = self.lock();
        if let Some(list) = subscribers.get_mut(&event.node) {
            list.retain(|tx| tx.try_send(event.clone()).is_ok());
            if list.is_empty() {
                subscribers.remove(&event.node);
            }
        }
    }

    /// Pod events for `node` from now on. The receiver ends if the watcher
    /// falls behind or history was lost; the caller then re-lists.
    pub fn subscribe(&self, node: &str) -> mpsc::Receiver<Arc<StoredEvent>> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.lock().entry(node.to_owned()).or_default().push(tx);
        rx
    }
}
