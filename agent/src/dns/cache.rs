//! The forwarder's cache of upstream answers, bounded twice: by entries
//! and by bytes (each answer is kept as the upstream's wire message, so an
//! entry costs its size and a little more). An answer is kept for its
//! smallest TTL (a negative one for its SOA's, RFC 2308), never longer
//! than [`MAX_TTL`] (what k3s's CoreDNS `cache 30` keeps), and handed out
//! with its TTLs counted down by its age. Answers without a TTL to go by
//! (errors, truncated ones, negative ones without an SOA) are not kept.
//! When full, expired entries go first, then the least recently used.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};

/// The longest an answer is kept.
pub const MAX_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most unless told otherwise.
pub const DEFAULT_MAX_ENTRIES: usize = 1024;
/// Bytes of answers kept at most unless told otherwise.
pub const DEFAULT_MAX_BYTES: usize = 256 << 10;
/// What an entry costs besides its message (key, bookkeeping).
const ENTRY_OVERHEAD: usize = 64;

/// A question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: LowerName,
    qtype: RecordType,
    qclass: DNSClass,
}

impl CacheKey {
    pub fn new(name: &Name, qtype: RecordType, qclass: DNSClass) -> CacheKey {
        CacheKey {
            name: LowerName::new(name),
            qtype,
            qclass,
        }
    }

    fn cost(&self, message: &[u8]) -> usize {
        message.len() + self.name.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct Entry {
    /// The upstream's answer, as it came.
    message: Box<[u8]>,
    stored: Instant,
    expires: Instant,
    /// When it was last handed out, as a count of uses (for LRU).
    used: u64,
}

/// The cache; not shared by itself (the forwarder locks it).
#[derive(Debug)]
pub struct ResponseCache {
    entries: HashMap<CacheKey, Entry>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    uses: u64,
}

impl Default for ResponseCache {
    fn default() -> ResponseCache {
        ResponseCache::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    }
}

/// How long `message` may be kept; `None`: not at all.
pub fn lifetime(message: &Message) -> Option<Duration> {
    if message.metadata.truncation {
        return None;
    }
    let seconds = match message.metadata.response_code {
        ResponseCode::NoError if !message.answers.is_empty() => {
            message.answers.iter().map(|r| r.ttl).min()?
        }
        ResponseCode::NoError | ResponseCode::NXDomain => message
            .authorities
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .min()?,
        _ => return None,
    };
    let lifetime = Duration::from_secs(u64::from(seconds)).min(MAX_TTL);
    (!lifetime.is_zero()).then_some(lifetime)
}

impl ResponseCache {
    /// At most `max_entries` answers of at most `max_bytes` in all.
    pub fn new(max_entries: usize, max_bytes: usize) -> ResponseCache {
        ResponseCache {
            entries: HashMap::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            uses: 0,
        }
    }

    /// The answer to `key` if one is kept and fresh at `now`, with its TTLs
    /// counted down by its age and cut to what is left of its lifetime.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entries.get_mut(key)?;
        if entry.expires <= now {
            let gone = self.entries.remove(key)?;
            self.bytes = self.bytes.saturating_sub(key.cost(&gone.message));
            return None;
        }
        self.uses += 1;
        entry.used = self.uses;
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let left =
            u32::try_from(entry.expires.duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX);
        let mut message = Message::from_vec(&entry.message).ok()?;
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age).min(left);
        }
        Some(message)
    }

    /// Keeps `wire`, the upstream's answer `message` to `key`, if it may be
    /// kept; makes room first.
    pub fn insert(&mut self, key: CacheKey, message: &Message, wire: &[u8], now: Instant) {
        let Some(lifetime) = lifetime(message) else {
            return;
        };
        let cost = key.cost(wire);
        if cost > self.max_bytes || self.max_entries == 0 {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.bytes = self.bytes.saturating_sub(key.cost(&old.message));
        }
        self.make_room(cost, now);
        self.uses += 1;
        self.bytes += cost;
        self.entries.insert(
            key,
            Entry {
                message: wire.into(),
                stored: now,
                expires: now + lifetime,
                used: self.uses,
            },
        );
    }

    /// Removes entries until one more of `cost` bytes fits: expired ones,
    /// then the least recently used.
    fn make_room(&mut self, cost: usize, now: Instant) {
        if !self.is_full(cost) {
            return;
        }
        let bytes = &mut self.bytes;
        self.entries.retain(|key, entry| {
            let keep = entry.expires > now;
            if !keep {
                *bytes = bytes.saturating_sub(key.cost(&entry.message));
            }
            keep
        });
        while self.is_full(cost) {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                return;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(oldest.cost(&gone.message));
            }
        }
    }

    /// Whether one more entry of `cost` bytes would not fit.
    fn is_full(&self, cost: usize) -> bool {
        self.entries.len() >= self.max_entries || self.bytes + cost > self.max_bytes
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the kept answers cost, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Record;

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// An upstream answer for `qname` with one A record of `ttl`.
    fn answer(qname: &str, ttl: u32) -> (Message, Vec<u8>) {
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        message.add_query(Query::query(name(qname), RecordType::A));
        message.add_answer(Record::from_rdata(
            name(qname),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        let wire = message.to_vec().unwrap();
        (message, wire)
    }

    fn key(qname: &str) -> CacheKey {
        CacheKey::new(&name(qname), RecordType::A, DNSClass::IN)
    }

    #[test]
    fn answers_are_kept_for_their_ttl_at_most_30_s_and_age_on_the_way_out() {
        let mut cache = ResponseCache::default();
        let now = Instant::now();
        let (message, wire) = answer("example.com.", 300);
        cache.insert(key("example.com."), &message, &wire, now);
        // Any case asks the same question.
        let later = now + Duration::from_secs(10);
        let hit = cache.get(&key("EXAMPLE.com."), later).unwrap();
        assert_eq!(hit.answers[0].ttl, 20, "cut to what is left of 30 s");
        assert!(cache.get(&key("example.com."), now + MAX_TTL).is_none());
        assert!(cache.is_empty(), "an expired entry is removed when met");
        assert_eq!(cache.bytes(), 0);

        let (short, wire) = answer("short.example.", 4);
        cache.insert(key("short.example."), &short, &wire, now);
        let hit = cache.get(&key("short.example."), now + Duration::from_secs(3));
        assert_eq!(hit.unwrap().answers[0].ttl, 1);
        assert!(cache
            .get(&key("short.example."), now + Duration::from_secs(4))
            .is_none());
    }

    #[test]
    fn answers_without_a_ttl_to_go_by_are_not_kept() {
        let mut cache = ResponseCache::default();
        let now = Instant::now();
        let (zero, wire) = answer("zero.example.", 0);
        cache.insert(key("zero.example."), &zero, &wire, now);
        let mut failed = Message::new(1, MessageType::Response, OpCode::Query);
        failed.metadata.response_code = ResponseCode::ServFail;
        cache.insert(key("failed.example."), &failed, &[0; 12], now);
        let mut bare_nx = Message::new(1, MessageType::Response, OpCode::Query);
        bare_nx.metadata.response_code = ResponseCode::NXDomain;
        cache.insert(key("nx.example."), &bare_nx, &[0; 12], now);
        let (mut truncated, wire) = answer("tc.example.", 60);
        truncated.metadata.truncation = true;
        cache.insert(key("tc.example."), &truncated, &wire, now);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_negative_answer_is_kept_for_its_soa_minimum() {
        let mut nx = Message::new(1, MessageType::Response, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name("ns.example."), name("h.example."), 1, 1, 1, 1, 15);
        nx.add_authority(Record::from_rdata(name("example."), 3600, RData::SOA(soa)));
        assert_eq!(lifetime(&nx), Some(Duration::from_secs(15)));
    }

    #[test]
    fn the_cache_holds_at_most_its_entries_and_bytes_dropping_the_least_recently_used() {
        let now = Instant::now();
        let mut cache = ResponseCache::new(3, 1 << 20);
        for n in ["a.", "b.", "c."] {
            let (m, w) = answer(n, 60);
            cache.insert(key(n), &m, &w, now);
        }
        // "a." is used; "b." is now the least recently used.
        assert!(cache.get(&key("a."), now).is_some());
        let (m, w) = answer("d.", 60);
        cache.insert(key("d."), &m, &w, now);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("b."), now).is_none());
        assert!(cache.get(&key("a."), now).is_some());

        // Bytes: room for about two answers.
        let (m, w) = answer("x.", 60);
        let one = key("x.").cost(&w);
        let mut small = ResponseCache::new(100, one * 2 + one / 2);
        for n in ["x.", "y.", "z."] {
            let (m, w) = answer(n, 60);
            small.insert(key(n), &m, &w, now);
        }
        assert_eq!(small.len(), 2);
        assert!(small.bytes() <= one * 2 + one / 2);
        assert!(small.get(&key("x."), now).is_none(), "the oldest went");
        // One answer larger than the whole cache is not kept at all.
        let mut tiny = ResponseCache::new(100, 10);
        tiny.insert(key("x."), &m, &w, now);
        assert!(tiny.is_empty());
    }
}
