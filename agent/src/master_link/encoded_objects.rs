//! One kind's objects, kept encoded (protobuf, as the masters send them)
//! in one buffer and found by namespace and name: the agent's long-lived
//! copy of the Services, Endpoints and Nodes it follows
//! ([`super::cluster_objects`]).
//!
//! Why one buffer: the agent decodes the whole copy on every change into
//! short-lived objects of the same small sizes as a map's keys and values
//! would have. Thousands of small long-lived allocations among them pin
//! the allocator's pages, so the heap stays at its peak (measured: 2 MiB
//! more resident with 1,000 Services as a `BTreeMap` of boxed keys and
//! values). Here the copy is two allocations: the records, and their
//! places sorted by namespace and name.
//!
//! A change appends a record and moves the place; the old record's bytes
//! become garbage, and the buffer is rewritten with only the live records
//! (and an eighth of room) once garbage passes a quarter of them, so a
//! rewrite copies the live bytes once for every quarter of them changed:
//! O(1) amortised per changed byte. The buffer grows by an eighth at a
//! time, so its spare room stays small.

use prost::Message;
use skiff_objects::ObjectExt;
use skiff_proto::api::Object;

/// Each record: the namespace's and the name's lengths (u32, little
/// endian), the namespace, the name, then the encoded object.
const HEADER: usize = 8;

/// One kind's objects, encoded, by namespace and name.
#[derive(Debug, Default)]
pub struct EncodedObjects {
    records: Vec<u8>,
    /// The live records' places in `records` (start, end), sorted by
    /// namespace and name.
    live: Vec<(usize, usize)>,
    /// Bytes of `records` that no live record uses.
    garbage: usize,
}

impl EncodedObjects {
    /// How many objects are kept.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no object is kept.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The bytes held (the buffer's capacity and the places'): what the
    /// copy costs.
    pub fn held_bytes(&self) -> usize {
        self.records.capacity() + self.live.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    /// Replaces everything with `objects`; of two with the same namespace
    /// and name, the later is kept.
    pub fn replace<'a>(&mut self, objects: impl IntoIterator<Item = &'a Object>) {
        self.records.clear();
        self.live.clear();
        self.garbage = 0;
        for object in objects {
            let place = self.append(object);
            self.live.push(place);
        }
        // A stable sort keeps the later of two equal keys after the
        // earlier: keep the last of each run.
        let records = &self.records;
        self.live
            .sort_by(|a, b| key(records, a.0).cmp(&key(records, b.0)));
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(self.live.len());
        for place in self.live.drain(..) {
            match kept.last_mut() {
                Some(last) if key(records, last.0) == key(records, place.0) => *last = place,
                _ => kept.push(place),
            }
        }
        self.live = kept;
        self.compact();
    }

    /// Puts `object` in, in place of the one with its namespace and name.
    pub fn put(&mut self, object: &Object) {
        let meta = object.meta();
        let found = self.find(meta.namespace.as_bytes(), meta.name.as_bytes());
        let place = self.append(object);
        match found {
            Ok(i) => {
                let (start, end) = std::mem::replace(&mut self.live[i], place);
                self.garbage += end - start;
            }
            Err(i) => self.live.insert(i, place),
        }
        self.collect_garbage();
    }

    /// Takes out the object with `object`'s namespace and name, if kept.
    pub fn remove(&mut self, object: &Object) {
        let meta = object.meta();
        if let Ok(i) = self.find(meta.namespace.as_bytes(), meta.name.as_bytes()) {
            let (start, end) = self.live.remove(i);
            self.garbage += end - start;
            self.collect_garbage();
        }
    }

    /// Every object, decoded, by namespace and name. A record that does not
    /// decode (never: only what was encoded here is) is left out, logged.
    pub fn decode_all(&self) -> Vec<Object> {
        let mut objects = Vec::with_capacity(self.live.len());
        for &(start, end) in &self.live {
            let (namespace, name) = key(&self.records, start);
            let body = &self.records[start + HEADER + namespace.len() + name.len()..end];
            match Object::decode(body) {
                Ok(object) => objects.push(object),
                Err(e) => tracing::warn!(
                    namespace = %String::from_utf8_lossy(namespace),
                    name = %String::from_utf8_lossy(name),
                    error = %e,
                    "a kept object does not decode; left out",
                ),
            }
        }
        objects
    }

    /// The encoded objects, by namespace and name.
    pub fn encoded(&self) -> impl Iterator<Item = &[u8]> {
        self.live.iter().map(|&(start, end)| {
            let (namespace, name) = key(&self.records, start);
            &self.records[start + HEADER + namespace.len() + name.len()..end]
        })
    }

    fn find(&self, namespace: &[u8], name: &[u8]) -> Result<usize, usize> {
        self.live
            .binary_search_by(|&(start, _)| key(&self.records, start).cmp(&(namespace, name)))
    }

    /// Appends `object`'s record; its place.
    fn append(&mut self, object: &Object) -> (usize, usize) {
        let meta = object.meta();
        let (namespace, name) = (meta.namespace.as_bytes(), meta.name.as_bytes());
        let size = HEADER + namespace.len() + name.len() + object.encoded_len();
        let spare = self.records.capacity() - self.records.len();
        if spare < size {
            self.records.reserve_exact(size.max(self.records.len() / 8));
        }
        let start = self.records.len();
        self.records.extend_from_slice(&length(namespace));
        self.records.extend_from_slice(&length(name));
        self.records.extend_from_slice(namespace);
        self.records.extend_from_slice(name);
        // Encoding into a Vec with room for it cannot fail.
        let _ = object.encode(&mut self.records);
        (start, self.records.len())
    }

    /// Rewrites the buffer with only the live records once the garbage
    /// passes a quarter of them.
    fn collect_garbage(&mut self) {
        if self.garbage > (self.records.len() - self.garbage) / 4 {
            self.compact();
        }
    }

    /// Rewrites the buffer with only the live records, and an eighth of
    /// room for the changes to come.
    fn compact(&mut self) {
        let size: usize = self.live.iter().map(|(start, end)| end - start).sum();
        let mut records = Vec::with_capacity(size + size / 8);
        for place in &mut self.live {
            let start = records.len();
            records.extend_from_slice(&self.records[place.0..place.1]);
            *place = (start, records.len());
        }
        self.records = records;
        self.live.shrink_to_fit();
        self.garbage = 0;
    }
}

fn length(part: &[u8]) -> [u8; 4] {
    u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes()
}

/// The namespace and name of the record at `start`.
fn key(records: &[u8], start: usize) -> (&[u8], &[u8]) {
    let read = |at: usize| {
        let bytes: [u8; 4] = records[at..at + 4].try_into().unwrap_or_default();
        u32::from_le_bytes(bytes) as usize
    };
    let (namespace, name) = (read(start), read(start + 4));
    let namespace_at = start + HEADER;
    let name_at = namespace_at + namespace;
    (
        &records[namespace_at..name_at],
        &records[name_at..name_at + name],
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use skiff_objects::ObjectExt;
    use skiff_proto::api::Object;

    use super::EncodedObjects;
    use crate::master_link::fake_master::service_object as service;

    fn listed(objects: &EncodedObjects) -> Vec<(String, String, String)> {
        objects
            .decode_all()
            .iter()
            .map(|o| {
                let ip = skiff_objects::services::read(o)
                    .map(|s| skiff_objects::services::cluster_ip(&s).to_owned())
                    .unwrap_or_default();
                (o.meta().namespace.clone(), o.meta().name.clone(), ip)
            })
            .collect()
    }

    fn triple(namespace: &str, name: &str, ip: &str) -> (String, String, String) {
        (namespace.to_owned(), name.to_owned(), ip.to_owned())
    }

    #[test]
    fn objects_are_kept_by_namespace_and_name_and_replaced_in_place() {
        let mut objects = EncodedObjects::default();
        objects.replace(&[
            service("b", "web", "10.43.0.1"),
            service("a", "web", "10.43.0.2"),
            service("a", "db", "10.43.0.3"),
            // The later of two with one name is kept.
            service("b", "web", "10.43.0.4"),
        ]);
        let expected = [
            triple("a", "db", "10.43.0.3"),
            triple("a", "web", "10.43.0.2"),
            triple("b", "web", "10.43.0.4"),
        ];
        assert_eq!(listed(&objects), expected);

        objects.put(&service("a", "web", "10.43.0.5"));
        objects.put(&service("a", "cache", "10.43.0.6"));
        objects.remove(&service("a", "db", ""));
        // Removing what is not there changes nothing.
        objects.remove(&service("c", "db", ""));
        let expected = [
            triple("a", "cache", "10.43.0.6"),
            triple("a", "web", "10.43.0.5"),
            triple("b", "web", "10.43.0.4"),
        ];
        assert_eq!(listed(&objects), expected);
        assert_eq!(objects.len(), 3);

        // Namespace first: "a"/"zz" sorts before "ab"/"a", whatever the
        // bytes of the two joined would say.
        objects.replace(&[service("ab", "a", ""), service("a", "zz", "")]);
        let names: Vec<_> = listed(&objects).into_iter().map(|t| (t.0, t.1)).collect();
        let expected = [("a", "zz"), ("ab", "a")].map(|(n, m)| (n.to_owned(), m.to_owned()));
        assert_eq!(names, expected);
    }

    #[test]
    fn each_object_is_kept_as_it_encodes() {
        let mut objects = EncodedObjects::default();
        let web = service("default", "web", "10.43.0.9");
        objects.put(&web);
        let kept: Vec<&[u8]> = objects.encoded().collect();
        assert_eq!(kept, [web.encode_to_vec().as_slice()]);
        assert_eq!(objects.decode_all(), [web]);
    }

    #[test]
    fn many_changes_leave_the_buffer_near_the_size_of_what_is_live() {
        let mut objects = EncodedObjects::default();
        let list: Vec<Object> = (0..1000)
            .map(|i| service("default", &format!("svc-{i}"), "10.43.0.1"))
            .collect();
        objects.replace(&list);
        let live: usize = objects.encoded().map(<[u8]>::len).sum();
        // Each Service changed twenty times, then a tenth deleted.
        for round in 0..20 {
            for i in 0..1000 {
                let ip = format!("10.43.{round}.{}", i % 250);
                objects.put(&service("default", &format!("svc-{i}"), &ip));
            }
        }
        for i in (0..1000).step_by(10) {
            objects.remove(&service("default", &format!("svc-{i}"), ""));
        }
        assert_eq!(objects.len(), 900);
        let now_live: usize = objects.encoded().map(<[u8]>::len).sum();
        assert!(now_live > live * 8 / 10, "{now_live} of {live}");
        // Records carry their keys too: allow those, the quarter of
        // garbage and the eighth of spare room.
        let bound = (now_live + 900 * 24) * 3 / 2 + 900 * 16;
        let held = objects.held_bytes();
        assert!(held <= bound, "{held} bytes held for {now_live} live");
        let last = listed(&objects);
        assert_eq!(last[0], triple("default", "svc-1", "10.43.19.1"));
    }
}
