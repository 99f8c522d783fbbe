//! The protobuf models that kinds had before skiff held them as JSON
//! documents (generic objects read through Kubernetes' own types,
//! [`crate::typed`]), and the one way between the two encodings.
//!
//! A kind moves from its protobuf model (`Body::Secret`, ...) to a JSON
//! document (`Body::Generic`) without losing what was written before:
//!
//! - **read both**: whatever decodes an object (the store from its files
//!   and the Raft log, the API from a client, a client from the API) calls
//!   [`decode`] or [`to_document`], so that every object of a moved kind in
//!   memory is a document, whatever its bytes were;
//! - **write the old one to whoever reads only it**: a master of an older
//!   release in the Raft group, while a rolling upgrade has not replaced it
//!   (the leader writes with [`to_legacy`] until every voter names a data
//!   format that reads documents), and a client that does not name one
//!   (an agent or `skiff ctl` of an older release).
//!
//! The conversion goes through Kubernetes' JSON, which both encodings
//! carry the same way: the protobuf model's JSON mapping (`skiff-proto`'s
//! serde attributes) is the document's content.
//!
//! Moved so far: Secret. The protobuf message stays in `objects.proto` for
//! what older releases wrote and read.

use prost::Message;
use serde_json::{Map, Value};
use skiff_proto::api::Object;
use skiff_proto::v1::{GenericObject, Secret};

use crate::{generic, Body};

/// The kind names whose objects are JSON documents now, and were protobuf
/// models before.
pub const MOVED: &[&str] = &["Secret"];

/// The first data format (`datastore::data_format`) whose readers read
/// the moved kinds as documents.
pub const DOCUMENTS_FORMAT: u32 = 3;

/// The header in which a master (answering Raft traffic) or a client of
/// the API (with each request) names the data format it reads. Absent: a
/// release before [`DOCUMENTS_FORMAT`].
pub const FORMAT_HEADER: &str = "skiff-data-format";

/// Whether a reader naming `format` (the [`FORMAT_HEADER`]'s value, if
/// any) reads the moved kinds as documents.
pub fn reads_documents(format: Option<&str>) -> bool {
    format
        .and_then(|f| f.trim().parse::<u32>().ok())
        .is_some_and(|f| f >= DOCUMENTS_FORMAT)
}

/// Why bytes or a document could not be read as an object.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("undecodable object: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{kind} {name:?} cannot be written for an older release: {reason}")]
    Unconvertible {
        kind: String,
        name: String,
        reason: String,
    },
}

/// Decodes `bytes` (an encoded [`Object`]) with any moved kind's object as
/// a document.
pub fn decode(bytes: &[u8]) -> Result<Object, prost::DecodeError> {
    Object::decode(bytes).map(to_document)
}

/// `object` with a moved kind's protobuf body made a document; any other
/// object as it is.
pub fn to_document(object: Object) -> Object {
    match object.kind {
        Some(Body::Secret(secret)) => Object {
            kind: Some(Body::Generic(secret_document(secret))),
        },
        _ => object,
    }
}

/// Whether `object` is a document of a moved kind (what [`to_legacy`]
/// converts).
pub fn is_moved_document(object: &Object) -> bool {
    matches!(&object.kind, Some(Body::Generic(g))
        if g.api_version == "v1" && MOVED.contains(&g.kind.as_str()))
}

/// `object` as a release before the move reads it: a moved kind's
/// document in its protobuf model; any other object as it is. A field the
/// protobuf model does not have is refused, never dropped.
pub fn to_legacy(object: Object) -> Result<Object, LegacyError> {
    if !is_moved_document(&object) {
        return Ok(object);
    }
    let Some(Body::Generic(document)) = object.kind else {
        unreachable!("checked by is_moved_document");
    };
    let name = document
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let fail = |reason: String| LegacyError::Unconvertible {
        kind: document.kind.clone(),
        name: name.clone(),
        reason,
    };
    let content = generic::content(&document);
    let known = ["type", "data", "stringData", "immutable"];
    if let Some(field) = content.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(fail(format!("field {field:?} has no place in it")));
    }
    let mut secret: Secret =
        serde_json::from_value(Value::Object(content)).map_err(|e| fail(e.to_string()))?;
    secret.api_version = document.api_version.clone();
    secret.kind = document.kind.clone();
    secret.metadata = document.metadata.clone();
    Ok(Object {
        kind: Some(Body::Secret(secret)),
    })
}

/// `object` as masters of every release read it, for a write sent to a
/// master whose release is not known (a client's, a follower's relay to
/// its leader): a moved kind's document in its protobuf model, which this
/// release's writer makes a document again; as it is when it has a field
/// the model lacks (only this release can take it then).
pub fn for_any_reader(object: Object) -> Object {
    if !is_moved_document(&object) {
        return object;
    }
    to_legacy(object.clone()).unwrap_or(object)
}

/// Encoded `bytes` (an [`Object`]) as [`for_any_reader`] makes it; `None`
/// when they do not decode (the caller keeps them as they are).
pub fn encoded_for_any_reader(bytes: &[u8]) -> Option<Vec<u8>> {
    decode(bytes)
        .ok()
        .map(|object| for_any_reader(object).encode_to_vec())
}

/// A protobuf Secret as its document: the same `apiVersion`, `kind` and
/// metadata, its other fields as Kubernetes' JSON writes them.
fn secret_document(secret: Secret) -> GenericObject {
    let Secret {
        api_version,
        kind,
        metadata,
        ..
    } = &secret;
    let mut document = GenericObject {
        api_version: if api_version.is_empty() {
            "v1".to_owned()
        } else {
            api_version.clone()
        },
        kind: if kind.is_empty() {
            "Secret".to_owned()
        } else {
            kind.clone()
        },
        metadata: metadata.clone(),
        content: Vec::new(),
    };
    let mut content = match serde_json::to_value(&secret) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for own in ["apiVersion", "kind", "metadata"] {
        content.remove(own);
    }
    generic::set_content(&mut document, &content);
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::v1::ObjectMeta;

    fn legacy_secret() -> Secret {
        Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: Some(ObjectMeta {
                name: "creds".into(),
                namespace: "app".into(),
                uid: "u-1".into(),
                resource_version: "7".into(),
                ..Default::default()
            }),
            r#type: "Opaque".into(),
            data: [("password".to_owned(), "aHVudGVyMg==".to_owned())].into(),
            string_data: Default::default(),
            immutable: true,
        }
    }

    #[test]
    fn a_protobuf_secret_reads_as_its_document_and_writes_back_the_same() {
        let legacy = Object {
            kind: Some(Body::Secret(legacy_secret())),
        };
        let document = decode(&legacy.encode_to_vec()).unwrap();
        let Some(Body::Generic(g)) = &document.kind else {
            panic!("not a document: {document:?}");
        };
        assert_eq!((g.api_version.as_str(), g.kind.as_str()), ("v1", "Secret"));
        assert_eq!(g.metadata.as_ref().unwrap().uid, "u-1");
        assert_eq!(
            Value::Object(generic::content(g)),
            serde_json::json!({
                "type": "Opaque", "data": {"password": "aHVudGVyMg=="}, "immutable": true,
            })
        );
        assert!(is_moved_document(&document));
        assert_eq!(to_legacy(document).unwrap(), legacy);
    }

    #[test]
    fn only_a_reader_naming_format_three_or_later_reads_documents() {
        assert!(reads_documents(Some("3")));
        assert!(reads_documents(Some("4")));
        assert!(!reads_documents(Some("2")));
        assert!(!reads_documents(Some("three")));
        assert!(!reads_documents(None), "a release before the header");
    }

    #[test]
    fn a_write_for_any_reader_is_in_the_protobuf_model_when_it_can_be() {
        let legacy = Object {
            kind: Some(Body::Secret(legacy_secret())),
        };
        let document = to_document(legacy.clone());
        assert_eq!(for_any_reader(document.clone()), legacy);
        assert_eq!(for_any_reader(legacy.clone()), legacy);
        let Some(Body::Generic(mut extra)) = document.kind else {
            unreachable!()
        };
        let mut content = generic::content(&extra);
        content.insert("extra".into(), Value::from(1));
        generic::set_content(&mut extra, &content);
        let only_documents = Object {
            kind: Some(Body::Generic(extra)),
        };
        assert_eq!(for_any_reader(only_documents.clone()), only_documents);
    }

    #[test]
    fn other_objects_pass_through_both_ways() {
        let config_map = Object {
            kind: Some(Body::Generic(GenericObject {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                ..Default::default()
            })),
        };
        assert_eq!(to_document(config_map.clone()), config_map);
        assert!(!is_moved_document(&config_map));
        assert_eq!(to_legacy(config_map.clone()).unwrap(), config_map);
        let unnamed = Object {
            kind: Some(Body::Secret(Secret::default())),
        };
        let document = to_document(unnamed);
        assert!(is_moved_document(&document), "{document:?}");
    }

    #[test]
    fn an_older_clients_secret_with_bad_base64_is_refused_as_a_document() {
        let legacy = Object {
            kind: Some(Body::Secret(Secret {
                data: [("k".to_owned(), "not base64!".to_owned())].into(),
                ..Default::default()
            })),
        };
        let Some(Body::Generic(document)) = to_document(legacy).kind else {
            panic!("not a document");
        };
        let problems = generic::validate(crate::Kind::Secret, &document);
        assert_eq!(
            problems,
            [(
                "data[k]".to_owned(),
                "Invalid value: illegal base64 data".to_owned()
            )]
        );
    }

    #[test]
    fn a_field_the_protobuf_model_lacks_is_refused_not_dropped() {
        let mut document = GenericObject {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: Some(ObjectMeta {
                name: "s".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        let content = serde_json::json!({"data": {"a": "YQ=="}, "extra": 1});
        generic::set_content(&mut document, content.as_object().unwrap());
        let object = Object {
            kind: Some(Body::Generic(document)),
        };
        let error = to_legacy(object).unwrap_err().to_string();
        assert!(error.contains("\"extra\""), "{error}");
        assert!(error.contains("Secret \"s\""), "{error}");
    }
}
