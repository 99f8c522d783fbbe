//! Where a field is in a YAML document's text: its line and column, for
//! errors about a value found after the document was parsed (decoding a
//! manifest's object from its JSON value knows the field's path, not its
//! place in the file).
//!
//! The document is walked again along the path, skipping every other
//! value; at the field, the walk stops with an error, and serde_yaml marks
//! its errors with the place of the value it was reading.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What the walk's error says once it stands on the field.
const FOUND: &str = "skiff: the field looked for";

/// The line and column (from 1) of the value at `path` (map keys, and
/// sequence indices in decimal) in `document`; none if the path is not
/// in it.
pub fn locate(document: serde_yaml::Deserializer<'_>, path: &[String]) -> Option<(usize, usize)> {
    match (Walk { path }).deserialize(document) {
        Err(e) if e.to_string().contains(FOUND) => {
            let location = e.location()?;
            Some((location.line(), location.column()))
        }
        _ => None,
    }
}

/// Follows `path` from the value it is given.
struct Walk<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            // Read the value, so that serde_yaml marks the error with its
            // place: whatever it is, `Here` refuses it.
            None => deserializer.deserialize_any(Here),
            Some((next, rest)) => deserializer.deserialize_any(Step { next, rest }),
        }
    }
}

/// Refuses every value, naming [`FOUND`] as what it expected.
struct Here;

impl Visitor<'_> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FOUND)
    }
}

/// One step of the walk: into the map entry or sequence item `next`.
struct Step<'p> {
    next: &'p str,
    rest: &'p [String],
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a map or sequence holding {:?}", self.next)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 == self.next {
                return map.next_value_seed(Walk { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Ok(wanted) = self.next.parse::<usize>() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut index = 0;
        loop {
            if index == wanted {
                return seq.next_element_seed(Walk { path: self.rest }).map(|_| ());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    // A scalar has no fields: the path is not in this document.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A map key as text, whatever scalar it is written as (`80: http`).
struct Key(String);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyText;
        impl Visitor<'_> for KeyText {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        deserializer.deserialize_any(KeyText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, document: usize, path: &[&str]) -> Option<(usize, usize)> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        let doc = serde_yaml::Deserializer::from_str(text).nth(document)?;
        locate(doc, &path)
    }

    const TEXT: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
kind: Deployment
spec:
  replicas: three
  template:
    spec:
      containers:
      - name: web
        image: nginx
      - name: side
        ports:
        - {containerPort: http}
";

    #[test]
    fn a_field_is_found_at_its_value_in_its_document() {
        assert_eq!(at(TEXT, 1, &["spec", "replicas"]), Some((7, 13)));
        assert_eq!(
            at(
                TEXT,
                1,
                &[
                    "spec",
                    "template",
                    "spec",
                    "containers",
                    "1",
                    "ports",
                    "0",
                    "containerPort"
                ]
            ),
            Some((15, 27))
        );
        assert_eq!(at(TEXT, 0, &["metadata", "name"]), Some((3, 18)));
        // A map or sequence is found where it starts.
        assert_eq!(
            at(TEXT, 1, &["spec", "template", "spec", "containers", "1"]),
            Some((13, 9))
        );
    }

    #[test]
    fn a_path_not_in_the_document_has_no_place() {
        assert_eq!(at(TEXT, 1, &["spec", "paused"]), None);
        assert_eq!(at(TEXT, 1, &["spec", "replicas", "x"]), None);
        assert_eq!(
            at(TEXT, 1, &["spec", "template", "spec", "containers", "7"]),
            None
        );
        assert_eq!(at(TEXT, 2, &["spec"]), None);
        // Text that breaks off before the path: nothing, not a panic.
        assert_eq!(at("a: [1, {b: 2", 0, &["c"]), None);
    }
}
