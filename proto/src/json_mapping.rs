//! Serde helpers referenced by the generated `skiff.v1` types, so that they
//! read and write the way Kubernetes manifests do.
//!
//! Kubernetes has two value shapes that protobuf lacks: `IntOrString`
//! (`targetPort: 8080` or `targetPort: http`) and `Quantity` (`cpu: 1`,
//! `memory: 128Mi`). Both are kept as strings on the wire; these helpers
//! accept either form from YAML/JSON and write numbers back as numbers.
//! A third, free JSON (`managedFields[].fieldsV1`), is kept as its JSON
//! text ([`raw_json`]).

/// True when a field holds its default value and can be left out of output.
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// An optional message written as `{}` when unset (a workload's `status`),
/// read as usual (`null` or missing: unset).
pub mod empty_object_when_unset {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.serialize(serializer),
            None => serializer.serialize_map(Some(0))?.end(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<T>::deserialize(deserializer)
    }
}

/// Accepts an integer or a string. Writes an all-digit string as a number.
pub mod int_or_string {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
        match value.parse::<i64>() {
            Ok(n) if !value.starts_with('+') => serializer.serialize_i64(n),
            _ => serializer.serialize_str(value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(IntOrStringVisitor)
    }

    pub(crate) struct IntOrStringVisitor;

    impl Visitor<'_> for IntOrStringVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer or a string")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
}

/// A `map<string, Quantity>`: values may be numbers or strings in YAML/JSON.
pub mod quantity_map {
    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::fmt;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        // Quantities are always written as strings, as Kubernetes does.
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        deserializer.deserialize_map(QuantityMapVisitor)
    }

    struct QuantityMapVisitor;

    /// One quantity value: a string, an integer or a decimal number.
    struct Quantity(String);

    impl<'de> serde::Deserialize<'de> for Quantity {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(QuantityVisitor).map(Quantity)
        }
    }

    pub(crate) struct QuantityVisitor;

    impl Visitor<'_> for QuantityVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a quantity such as 500m, 128Mi or 2")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }

    impl<'de> Visitor<'de> for QuantityMapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of resource names to quantities")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, Quantity(v))) = access.next_entry::<String, Quantity>()? {
                out.insert(k, v);
            }
            Ok(out)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }
}

/// JSON kept as its text in a string field (`ManagedFieldsEntry.fieldsV1`):
/// written as the JSON it holds, read from any JSON (or YAML) value, which
/// is kept as compact JSON text with its object keys sorted (so that equal
/// values are equal texts).
pub mod raw_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => value.serialize(serializer),
            // Not JSON (skiff never stores such): written as the text it is.
            Err(_) => serializer.serialize_str(text),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => String::new(),
            value => value.to_string(),
        })
    }

    #[cfg(test)]
    mod tests {
        use serde::{Deserialize, Serialize};

        #[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
        struct Holder {
            #[serde(with = "crate::json_mapping::raw_json", default)]
            fields: String,
        }

        #[test]
        fn json_text_is_written_as_json_and_read_back_sorted() {
            let read: Holder =
                serde_json::from_str(r#"{"fields": {"f:spec": {"f:b": {}, "f:a": {}}}}"#).unwrap();
            assert_eq!(read.fields, r#"{"f:spec":{"f:a":{},"f:b":{}}}"#);
            let written = serde_json::to_value(&read).unwrap();
            assert_eq!(written["fields"]["f:spec"]["f:a"], serde_json::json!({}));
            let null: Holder = serde_json::from_str(r#"{"fields": null}"#).unwrap();
            assert_eq!(null, Holder::default());
        }
    }
}

/// A single `Quantity` (`sizeLimit`, `divisor`): a number or a string in
/// YAML/JSON, always written as a string, as Kubernetes does.
pub mod quantity {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(super::quantity_map::QuantityVisitor)
    }
}

#[cfg(test)]
mod workload_status_tests {
    use crate::v1;

    #[test]
    fn a_workload_without_status_is_written_with_an_empty_one() {
        let json = serde_json::to_value(v1::Deployment::default()).unwrap();
        assert_eq!(json["status"], serde_json::json!({}));
        let json = serde_json::to_value(v1::ReplicaSet::default()).unwrap();
        assert_eq!(json["status"], serde_json::json!({}));
        let read: v1::Deployment = serde_json::from_str(r#"{"status": null}"#).unwrap();
        assert_eq!(read.status, None);
        let read: v1::Deployment =
            serde_json::from_str(r#"{"status": {"readyReplicas": 2}}"#).unwrap();
        assert_eq!(read.status.map(|s| s.ready_replicas), Some(2));
    }
}
