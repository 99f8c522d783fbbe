//! A work queue of object keys: each key is queued at most once, requeued
//! after a delay when asked, with exponential backoff for failures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::ObjectKey;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct WorkQueue {
    ready: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    delayed: BinaryHeap<Reverse<(Instant, ObjectKey)>>,
    failures: HashMap<ObjectKey, u32>,
}

impl WorkQueue {
    /// Queues `key` unless it is already waiting.
    pub fn add(&mut self, key: ObjectKey) {
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// Queues `key` once `delay` has passed.
    pub fn add_after(&mut self, key: ObjectKey, delay: Duration) {
        self.delayed.push(Reverse((Instant::now() + delay, key)));
    }

    /// Queues `key` after a backoff that doubles with each failure in a row.
    pub fn retry(&mut self, key: ObjectKey) {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let delay = FIRST_BACKOFF
            .saturating_mul(1u32 << (*n).min(16))
            .min(MAX_BACKOFF);
        *n += 1;
        self.add_after(key, delay);
    }

    /// The key succeeded: its backoff starts over.
    pub fn forget(&mut self, key: &ObjectKey) {
        self.failures.remove(key);
    }

    fn promote_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, key))) = self.delayed.pop() {
                self.add(key);
            }
        }
    }

    /// The next key to work on. Cancel-safe.
    pub async fn next(&mut self) -> ObjectKey {
        loop {
            self.promote_due();
            if let Some(key) = self.ready.pop_front() {
                self.queued.remove(&key);
                return key;
            }
            match self.delayed.peek() {
                Some(Reverse((at, _))) => tokio::time::sleep_until(*at).await,
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Keys waiting, now or later.
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::Kind;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Pod, "default", name)
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_delays_honoured() {
        let mut q = WorkQueue::default();
        q.add(key("a"));
        q.add(key("b"));
        q.add(key("a"));
        assert_eq!(q.next().await, key("a"));
        assert_eq!(q.next().await, key("b"));
        q.add_after(key("c"), Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next().await, key("c"));
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially() {
        let mut q = WorkQueue::default();
        let mut waits = Vec::new();
        for _ in 0..4 {
            q.retry(key("x"));
            let start = Instant::now();
            q.next().await;
            waits.push(start.elapsed().as_millis());
        }
        assert_eq!(waits, vec![100, 200, 400, 800]);
        q.forget(&key("x"));
        q.retry(key("x"));
        let start = Instant::now();
        q.next().await;
        assert_eq!(start.elapsed().as_millis(), 100);
    }
}
