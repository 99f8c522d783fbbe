//! The encoded answers of the cluster's zones, by the bytes of the
//! message that asked (all but its id), as a DNS server's packet cache
//! keeps them: a pod asking a name it asked before (most queries: the
//! same few Services, and the same search-path misses) is answered by
//! copying bytes, with no decoding, lookup or encoding.
//!
//! - Only what the zones answered is kept (never a forwarded answer,
//!   which has its own cache and TTLs), and only per UDP thread: no lock.
//! - The answer to a message depends on the message's every byte but its
//!   id (flags, the question as cased, EDNS and its payload size, which
//!   decides truncation) and on the index: entries are dropped whole when
//!   the index is replaced ([`super::SharedIndex::generation`]).
//! - Bounded in bytes ([`MAX_BYTES`]); full, it starts over.

use std::collections::HashMap;

/// The most the cache holds: keys, answers and a per-entry allowance.
pub const MAX_BYTES: usize = 256 * 1024;
/// What an entry costs beyond its bytes (the table's slot, two boxes).
const ENTRY_OVERHEAD: usize = 64;
/// A DNS header's id.
const ID: usize = 2;

/// Encoded answers of one index generation.
#[derive(Debug, Default)]
pub struct AnswerCache {
    generation: u64,
    /// By the asking message without its id: the answer without its id.
    entries: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
}

impl AnswerCache {
    /// The answer to `query` (a whole message as received) at index
    /// `generation`, with `query`'s id, written to `out`; false when none
    /// is kept.
    pub fn answer(&mut self, generation: u64, query: &[u8], out: &mut Vec<u8>) -> bool {
        if generation != self.generation {
            self.clear(generation);
            return false;
        }
        let (Some(id), Some(key)) = (query.get(..ID), query.get(ID..)) else {
            return false;
        };
        let Some(answer) = self.entries.get(key) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(id);
        out.extend_from_slice(answer);
        true
    }

    /// Keeps `answer`, the zones' answer to `query` at index `generation`.
    pub fn insert(&mut self, generation: u64, query: &[u8], answer: &[u8]) {
        if generation != self.generation {
            self.clear(generation);
        }
        let (Some(key), Some(value)) = (query.get(ID..), answer.get(ID..)) else {
            return;
        };
        let cost = key.len() + value.len() + ENTRY_OVERHEAD;
        if cost > MAX_BYTES {
            return;
        }
        if self.bytes + cost > MAX_BYTES {
            self.clear(generation);
        }
        if let Some(old) = self.entries.insert(key.into(), value.into()) {
            self.bytes -= key.len() + old.len() + ENTRY_OVERHEAD;
        }
        self.bytes += cost;
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self, generation: u64) {
        self.generation = generation;
        // A new table: the old one's capacity goes with it.
        self.entries = HashMap::new();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u16, rest: &[u8]) -> Vec<u8> {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(rest);
        bytes
    }

    #[test]
    fn an_answer_comes_back_with_the_asking_id_for_the_same_bytes_only() {
        let mut cache = AnswerCache::default();
        let mut out = Vec::new();
        let query = message(1, b"\x01\x00question");
        assert!(!cache.answer(0, &query, &mut out));
        cache.insert(0, &query, &message(1, b"\x85\x00answer"));
        assert!(cache.answer(0, &message(0xbeef, b"\x01\x00question"), &mut out));
        assert_eq!(out, message(0xbeef, b"\x85\x00answer"));
        // Another flag, or the name cased otherwise: another question.
        assert!(!cache.answer(0, &message(2, b"\x00\x00question"), &mut out));
        assert!(!cache.answer(0, &message(2, b"\x01\x00QUESTION"), &mut out));
        // Shorter than an id: nothing.
        assert!(!cache.answer(0, b"\x01", &mut out));
    }

    #[test]
    fn a_new_index_drops_every_answer() {
        let mut cache = AnswerCache::default();
        let mut out = Vec::new();
        cache.insert(4, &message(1, b"q1"), &message(1, b"a1"));
        cache.insert(4, &message(1, b"q2"), &message(1, b"a2"));
        assert_eq!(cache.len(), 2);
        assert!(!cache.answer(5, &message(1, b"q1"), &mut out));
        assert!(cache.is_empty());
        // An answer computed from the old index is not kept for the new.
        cache.insert(5, &message(1, b"q1"), &message(1, b"a1"));
        assert!(!cache.answer(6, &message(1, b"q1"), &mut out));
    }

    #[test]
    fn it_never_holds_more_than_its_bound() {
        let mut cache = AnswerCache::default();
        let answer = message(1, &[7u8; 400]);
        for i in 0..5_000u32 {
            cache.insert(1, &message(1, &i.to_be_bytes()), &answer);
            assert!(cache.bytes <= MAX_BYTES, "{} bytes", cache.bytes);
        }
        assert!(cache.len() > 100, "it kept {}", cache.len());
        // The same question again replaces its answer, counted once.
        let before = cache.bytes;
        let last = message(1, &4_999u32.to_be_bytes());
        cache.insert(1, &last, &answer);
        assert_eq!(cache.bytes, before);
        // An answer bigger than the bound is not kept.
        cache.insert(1, &message(1, b"huge"), &vec![0u8; MAX_BYTES + 1]);
        let mut out = Vec::new();
        assert!(!cache.answer(1, &message(1, b"huge"), &mut out));
    }
}
