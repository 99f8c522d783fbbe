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
//! - **write the old one to whoever reads only it**: each kind moved at a
//!   data format ([`MOVED`]), and a reader that names an earlier one (or
//!   none: a release before [`FORMAT_HEADER`]) gets that kind in its
//!   protobuf model. Such readers are a master of an older release in the
//!   Raft group, while a rolling upgrade has not replaced it (the leader
//!   writes what the lowest format among the members reads: [`for_member`]),
//!   and a client of the API of an older release (an agent, `skiff ctl`:
//!   [`for_reader`]).
//!
//! The conversion goes through Kubernetes' JSON, which both encodings
//! carry the same way: the protobuf model's JSON mapping (`skiff-proto`'s
//! serde attributes) is the document's content. A document with a field
//! the protobuf model has no place for is refused, never cut down, for
//! whatever stores or writes it: a member's snapshot ([`for_member`]), a
//! write relayed to a master of unknown release ([`for_any_reader`]).
//! Only a client that reads (an older agent or `skiff ctl`, [`for_reader`])
//! gets such a document in its model without those fields: it cannot act
//! on them, and without the object it would act as if it did not exist
//! (an agent would drop the Service from its rules and DNS). The copy
//! carries [`CUT_ANNOTATION`], naming the first field left out, and the writer
//! refuses an object that carries it: no older client writes back what it
//! read of a moved kind (`skiff ctl apply` sends its manifest; agents
//! write pods and nodes only), but a user may (`get -o yaml`, edit,
//! `apply`). An older master never reads such a copy: the leader stores
//! no document its model cannot hold while one is a member.
//!
//! Moved so far: Secret (format 3), Namespace (format 4), Endpoints
//! (format 5), Service (format 6), Pod (format 7), Deployment and
//! ReplicaSet (format 8). The protobuf
//! messages stay in `objects.proto` for what older releases wrote and read.

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use skiff_proto::api::Object;
use skiff_proto::v1::{self, GenericObject, ObjectMeta};

use crate::{generic, Body, ObjectExt};

/// A kind whose objects are JSON documents now, and were protobuf models
/// before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The first data format (`datastore::data_format`) whose readers read
    /// this kind as documents.
    pub format: u32,
}

/// Every moved kind, in the order they moved.
pub const MOVED: &[MovedKind] = &[
    MovedKind {
        api_version: "v1",
        kind: "Secret",
        format: 3,
    },
    MovedKind {
        api_version: "v1",
        kind: "Namespace",
        format: 4,
    },
    MovedKind {
        api_version: "v1",
        kind: "Endpoints",
        format: 5,
    },
    MovedKind {
        api_version: "v1",
        kind: "Service",
        format: 6,
    },
    MovedKind {
        api_version: "v1",
        kind: "Pod",
        format: 7,
    },
    MovedKind {
        api_version: "apps/v1",
        kind: "Deployment",
        format: 8,
    },
    MovedKind {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        format: 8,
    },
];

/// The data format this release reads and names: every moved kind as a
/// document (the last of [`MOVED`]'s formats).
pub const LATEST_FORMAT: u32 = 8;

/// The header in which a master (answering Raft traffic) or a client of
/// the API (with each request) names the data format it reads. Absent: a
/// release before format 3, which reads every kind in its protobuf model.
pub const FORMAT_HEADER: &str = "skiff-data-format";

/// The data format a reader names in [`FORMAT_HEADER`] (`header`, if
/// any); `0` when it names none, or none this release can read (it then
/// gets every moved kind in its protobuf model).
pub fn reader_format(header: Option<&str>) -> u32 {
    header
        .and_then(|f| f.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// The format `kind` (a kind's name, of the core group) moved at; `None`
/// for a kind that never had a protobuf model, or still has.
pub fn moved_at(kind: &str) -> Option<u32> {
    MOVED.iter().find(|m| m.kind == kind).map(|m| m.format)
}

/// The format at which `object`'s kind moved, if it is a moved kind's
/// document.
pub fn moved_document_at(object: &Object) -> Option<u32> {
    match &object.kind {
        Some(Body::Generic(g)) => MOVED
            .iter()
            .find(|m| m.kind == g.kind && m.api_version == g.api_version)
            .map(|m| m.format),
        _ => None,
    }
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
    let moved = object
        .kind
        .as_ref()
        .and_then(crate::body_kind)
        .is_some_and(|k| moved_at(k.name()).is_some());
    match object
        .kind
        .as_ref()
        .and_then(core_document)
        .filter(|_| moved)
    {
        Some(document) => Object {
            kind: Some(Body::Generic(document)),
        },
        None => object,
    }
}

/// A core kind's protobuf `body` as its document, for the kinds that are
/// read through Kubernetes' own types (moved, or moving); `None` for
/// another body.
fn core_document(body: &Body) -> Option<GenericObject> {
    Some(match body {
        Body::Secret(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Secret"),
        Body::Namespace(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Namespace"),
        Body::Endpoints(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Endpoints"),
        Body::Service(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Service"),
        Body::Pod(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Pod"),
        Body::Deployment(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "Deployment"),
        Body::ReplicaSet(m) => document_of(m, &m.api_version, &m.kind, &m.metadata, "ReplicaSet"),
        _ => return None,
    })
}

/// Whether `object` is a document of a moved kind (what [`to_legacy`]
/// converts).
pub fn is_moved_document(object: &Object) -> bool {
    moved_document_at(object).is_some()
}

/// `object` as a release before the move reads it: a moved kind's
/// document in its protobuf model; any other object as it is. A field the
/// protobuf model does not have is refused, never dropped.
pub fn to_legacy(object: Object) -> Result<Object, LegacyError> {
    in_model(object, Fit::Whole)
}

/// `object` in its kind's protobuf model, without what the model has no
/// place for and unmarked, for a reader that acts on the model's fields
/// alone (this release's agent: `pods::in_model`); any object not of a
/// moved kind as it is. Refused when a value does not read in the model.
pub fn cut_to_model(object: Object) -> Result<Object, LegacyError> {
    in_model(to_document(object), Fit::Cut)
}

/// How much of a document its protobuf model must hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// All of it, or the conversion is refused.
    Whole,
    /// What the model has a place for; the rest is left out (a copy for a
    /// client that only reads it).
    Cut,
}

fn in_model(object: Object, fit: Fit) -> Result<Object, LegacyError> {
    if !is_moved_document(&object) {
        return Ok(object);
    }
    let Some(Body::Generic(mut document)) = object.kind else {
        unreachable!("checked by is_moved_document");
    };
    if document.kind == "Pod" {
        // The deprecated `serviceAccount` the writer writes beside
        // `serviceAccountName`, which the model holds: nothing lost.
        let mut content = generic::content(&document);
        let spec = content.get_mut("spec").and_then(Value::as_object_mut);
        if let Some(spec) = spec {
            let named = spec.get("serviceAccountName").cloned();
            if spec
                .get("serviceAccount")
                .is_some_and(|a| Some(a) == named.as_ref() || a.is_null())
            {
                spec.remove("serviceAccount");
                generic::set_content(&mut document, &content);
            }
        }
    }
    let fail = |reason: String| LegacyError::Unconvertible {
        kind: document.kind.clone(),
        name: document
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        reason,
    };
    let mut body = match document.kind.as_str() {
        "Secret" => Body::Secret(model_of(&document, fit).map_err(fail)?),
        "Namespace" => Body::Namespace(model_of(&document, fit).map_err(fail)?),
        "Endpoints" => Body::Endpoints(model_of(&document, fit).map_err(fail)?),
        "Service" => Body::Service(model_of(&document, fit).map_err(fail)?),
        "Pod" => Body::Pod(model_of(&document, fit).map_err(fail)?),
        "Deployment" => {
            let mut model: v1::Deployment = model_of(&document, fit).map_err(fail)?;
            if let Some(template) = model.spec.as_mut().and_then(|s| s.template.as_deref_mut()) {
                without_empty_defaults(template);
            }
            Body::Deployment(model)
        }
        "ReplicaSet" => {
            let mut model: v1::ReplicaSet = model_of(&document, fit).map_err(fail)?;
            if let Some(template) = model.spec.as_mut().and_then(|s| s.template.as_deref_mut()) {
                without_empty_defaults(template);
            }
            Body::ReplicaSet(model)
        }
        other => unreachable!("{other} is in MOVED without a protobuf model"),
    };
    crate::with_body!(&mut body, o => {
        o.api_version = document.api_version.clone();
        o.kind = document.kind.clone();
        o.metadata = document.metadata.clone();
    });
    Ok(Object { kind: Some(body) })
}

/// `object` for a reader of a Deployment's or ReplicaSet's fields that
/// skiff's protobuf model holds (`skiff ctl`'s tables, descriptions and
/// rollout progress): such a document in its model, without what the
/// model has no place for; any other object as it is.
pub fn replicated_in_model(object: &Object) -> std::borrow::Cow<'_, Object> {
    let replicated = matches!(
        &object.kind,
        Some(Body::Generic(g)) if g.api_version == "apps/v1" && (g.kind == "Deployment" || g.kind == "ReplicaSet")
    );
    match replicated
        .then(|| in_model(object.clone(), Fit::Cut).ok())
        .flatten()
    {
        Some(model) => std::borrow::Cow::Owned(model),
        None => std::borrow::Cow::Borrowed(object),
    }
}

/// `object` as a client naming data format `format` reads it: a moved
/// kind's object a document when the client reads that kind as documents,
/// in its protobuf model when not, without any field the model lacks (see
/// the module's header: such a client only reads it); any other object as
/// it is.
pub fn for_reader(object: Object, format: u32) -> Object {
    in_format(object, format, Fit::Cut)
}

/// `object` as a master naming data format `format` stores it: as
/// [`for_reader`] makes it, but as a document still when its protobuf
/// model cannot hold all of it (a field the model lacks, which only a
/// member of a later release can take).
pub fn for_member(object: Object, format: u32) -> Object {
    in_format(object, format, Fit::Whole)
}

fn in_format(object: Object, format: u32, fit: Fit) -> Object {
    let object = to_document(object);
    match moved_document_at(&object) {
        Some(at) if format < at => match in_model(object.clone(), Fit::Whole) {
            Ok(whole) => whole,
            Err(LegacyError::Unconvertible { reason, .. }) if fit == Fit::Cut => {
                match in_model(object.clone(), Fit::Cut) {
                    Ok(mut cut) => {
                        if let Ok(meta) = cut.meta_mut() {
                            meta.annotations.insert(CUT_ANNOTATION.to_owned(), reason);
                        }
                        cut
                    }
                    Err(_) => object,
                }
            }
            Err(_) => object,
        },
        _ => object,
    }
}

/// The annotation on a copy of an object cut down to its protobuf model
/// for a client of an older release ([`for_reader`]): the first field
/// left out (there may be more).
pub const CUT_ANNOTATION: &str = "skiff.io/cut-for-older-release";

/// The first field left out of `object`, when it is such a cut-down copy
/// (which must never be written back: the writer refuses it).
pub fn cut_from(object: &Object) -> Option<&str> {
    object
        .meta()
        .annotations
        .get(CUT_ANNOTATION)
        .map(String::as_str)
}

/// Whether a reader naming `format` reads some object of `kind` (a kind's
/// name) differently from how this release holds it: what
/// [`for_reader`] would change.
pub fn reads_differently(kind: &str, format: u32) -> bool {
    moved_at(kind).is_some_and(|at| format < at)
}

/// `object` as masters of every release read it, for a write sent to a
/// master whose release is not known (a client's, a follower's relay to
/// its leader): a moved kind's document in its protobuf model, which this
/// release's writer makes a document again; as it is when it has a field
/// the model lacks (only this release can take it then).
pub fn for_any_reader(object: Object) -> Object {
    for_member(object, 0)
}

/// Encoded `bytes` (an [`Object`]) as [`for_reader`] makes it for a
/// client naming `format`; `None` when they do not decode (the caller
/// keeps them as they are).
pub fn encoded_for_reader(bytes: &[u8], format: u32) -> Option<Vec<u8>> {
    decode(bytes)
        .ok()
        .map(|object| for_reader(object, format).encode_to_vec())
}

/// Encoded `bytes` as [`for_member`] makes them for a member naming
/// `format` (a snapshot's); `None` when they do not decode.
pub fn encoded_for_member(bytes: &[u8], format: u32) -> Option<Vec<u8>> {
    decode(bytes)
        .ok()
        .map(|object| for_member(object, format).encode_to_vec())
}

/// A protobuf model as its document: the same `apiVersion` (`v1` when
/// unset), `kind` (`kind` when unset) and metadata, its other fields as
/// Kubernetes' JSON writes them.
fn document_of<T: Serialize>(
    model: &T,
    api_version: &str,
    own_kind: &str,
    metadata: &Option<ObjectMeta>,
    kind: &str,
) -> GenericObject {
    let value = serde_json::to_value(model).unwrap_or(Value::Null);
    // A model written without its type meta (a controller's) is of its
    // kind's group.
    let api_version = if api_version.is_empty() {
        MOVED
            .iter()
            .find(|m| m.kind == kind)
            .map_or("v1", |m| m.api_version)
    } else {
        api_version
    };
    let kind = if own_kind.is_empty() { kind } else { own_kind };
    generic::document(api_version, kind, metadata.clone(), value)
}

/// The document of the core (`v1`) kind `kind` that `object` holds, in
/// either encoding, read as `T` (its metadata left to the object);
/// `None` for another kind of object, or a damaged one.
pub fn read_core<T: DeserializeOwned>(object: &Object, kind: &str) -> Option<T> {
    let document;
    let g = match object.kind.as_ref()? {
        Body::Generic(g) => g,
        body => {
            document = core_document(body)?;
            &document
        }
    };
    if g.api_version != "v1" || g.kind != kind {
        return None;
    }
    crate::typed::decode(Value::Object(generic::content(g))).ok()
}

/// Whether `object` is of the core (`v1`) kind `kind`, in either
/// encoding.
pub fn is_core_kind(object: &Object, kind: &str) -> bool {
    match &object.kind {
        Some(Body::Generic(g)) => g.api_version == "v1" && g.kind == kind,
        Some(body) => crate::body_kind(body).is_some_and(|k| k.name() == kind),
        None => false,
    }
}

/// A document's content read as its kind's protobuf model (type meta and
/// metadata left for the caller). For a [`Fit::Whole`] one, refused when
/// the model would lose any of it: written back as JSON, the model must
/// say what the document says (unset and empty values alike, as
/// Kubernetes compares them).
fn model_of<T: DeserializeOwned + Serialize>(
    document: &GenericObject,
    fit: Fit,
) -> Result<T, String> {
    value_in_model(Value::Object(generic::content(document)), fit)
}

/// `value`, a part of a document (a pod template, say), read as the
/// protobuf model `T` when the model holds all of it; `None` when a field
/// has no place in the model, or a value does not read in it.
pub fn whole_in_model<T: DeserializeOwned + Serialize>(value: &Value) -> Option<T> {
    // A field the model has no place for, whatever its value (`false`,
    // which the check below takes as unset, is a value).
    let mut said = value.clone();
    generic::strip_nulls(&mut said);
    let mut ignored = false;
    let read: Result<T, _> = serde_ignored::deserialize(said, |_| ignored = true);
    if read.is_err() || ignored {
        return None;
    }
    value_in_model(value.clone(), Fit::Whole).ok()
}

/// A Deployment's or ReplicaSet's template in the protobuf model without
/// the pod's empty `securityContext` and containers' empty `resources`,
/// which this release's defaults write into a template and earlier
/// releases' did not: nothing is lost, and the model (what an older
/// master reads, and hashes to name the template's ReplicaSet) is the one
/// an earlier release would hold.
pub fn without_empty_defaults(template: &mut v1::PodTemplateSpec) {
    let Some(spec) = template.spec.as_mut() else {
        return;
    };
    if spec
        .security_context
        .as_deref()
        .is_some_and(|s| *s == v1::PodSecurityContext::default())
    {
        spec.security_context = None;
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut())
    {
        if c.resources
            .as_ref()
            .is_some_and(|r| *r == v1::ResourceRequirements::default())
        {
            c.resources = None;
        }
    }
}

fn value_in_model<T: DeserializeOwned + Serialize>(
    mut content: Value,
    fit: Fit,
) -> Result<T, String> {
    // `null` is unset, to Kubernetes as to the model (whose fields are no
    // `Option`s).
    generic::strip_nulls(&mut content);
    let model: T = serde_json::from_value(content.clone()).map_err(|e| e.to_string())?;
    if fit == Fit::Cut {
        return Ok(model);
    }
    let mut again = serde_json::to_value(&model).map_err(|e| e.to_string())?;
    if let Value::Object(map) = &mut again {
        // A whole object's model writes its type meta and metadata, which
        // its document keeps apart.
        for own in ["apiVersion", "kind", "metadata"] {
            if content.get(own).is_none() {
                map.remove(own);
            }
        }
    }
    generic::strip_zeros(&mut content);
    generic::strip_zeros(&mut again);
    match first_difference(&content, &again, "") {
        None => Ok(model),
        Some(field) => Err(format!("field {field:?} has no place in it")),
    }
}

/// The path of the first field at which `said` (a document's content) and
/// `kept` (what its protobuf model writes back) differ.
fn first_difference(said: &Value, kept: &Value, at: &str) -> Option<String> {
    let path = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match (said, kept) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .find_map(|(key, value)| match b.get(key) {
                None => Some(path(key)),
                Some(other) => first_difference(value, other, &path(key)),
            })
            .or_else(|| b.keys().find(|k| !a.contains_key(*k)).map(|k| path(k))),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{at}[{i}]"))),
        _ if said == kept => None,
        _ => Some(at.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::v1::{Namespace, NamespaceSpec, NamespaceStatus, Secret};

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
    fn a_reader_gets_each_kind_as_documents_from_the_format_it_moved_at() {
        assert_eq!(reader_format(Some("4")), 4);
        assert_eq!(reader_format(Some(" 3 ")), 3);
        assert_eq!(reader_format(Some("three")), 0);
        assert_eq!(reader_format(None), 0, "a release before the header");
        let secret = to_document(Object {
            kind: Some(Body::Secret(legacy_secret())),
        });
        let namespace = to_document(Object {
            kind: Some(Body::Namespace(legacy_namespace())),
        });
        for (format, secret_document, namespace_document) in [
            (0, false, false),
            (2, false, false),
            (3, true, false),
            (4, true, true),
            (9, true, true),
        ] {
            let read = |o: &Object| is_moved_document(&for_reader(o.clone(), format));
            assert_eq!(read(&secret), secret_document, "Secret at format {format}");
            assert_eq!(
                read(&namespace),
                namespace_document,
                "Namespace at format {format}"
            );
            assert_eq!(reads_differently("Secret", format), !secret_document);
            assert_eq!(reads_differently("Namespace", format), !namespace_document);
        }
        assert!(reads_differently("Endpoints", 4));
        assert!(!reads_differently("Endpoints", 5));
        assert!(!reads_differently("ConfigMap", 0));
        assert!(reads_differently("Pod", 6));
        assert!(!reads_differently("Pod", 7));
        for kind in ["Deployment", "ReplicaSet"] {
            assert!(reads_differently(kind, 7), "{kind}");
            assert!(!reads_differently(kind, 8), "{kind}");
        }
        assert!(!reads_differently("Node", 0), "still a protobuf model");
    }

    #[test]
    fn the_latest_format_is_the_last_a_kind_moved_at() {
        assert_eq!(MOVED.iter().map(|m| m.format).max(), Some(LATEST_FORMAT));
        assert!(MOVED.windows(2).all(|w| w[0].format <= w[1].format));
    }

    fn legacy_namespace() -> Namespace {
        Namespace {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            metadata: Some(ObjectMeta {
                name: "team".into(),
                uid: "u-2".into(),
                resource_version: "9".into(),
                ..Default::default()
            }),
            spec: Some(NamespaceSpec {
                finalizers: vec!["kubernetes".into()],
            }),
            status: Some(NamespaceStatus {
                phase: "Terminating".into(),
            }),
        }
    }

    #[test]
    fn a_protobuf_namespace_reads_as_its_document_and_writes_back_the_same() {
        let legacy = Object {
            kind: Some(Body::Namespace(legacy_namespace())),
        };
        let document = decode(&legacy.encode_to_vec()).unwrap();
        let Some(Body::Generic(g)) = &document.kind else {
            panic!("not a document: {document:?}");
        };
        assert_eq!(
            (g.api_version.as_str(), g.kind.as_str()),
            ("v1", "Namespace")
        );
        assert_eq!(
            Value::Object(generic::content(g)),
            serde_json::json!({
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"},
            })
        );
        assert_eq!(to_legacy(document).unwrap(), legacy);
    }

    #[test]
    fn a_nested_field_the_protobuf_model_lacks_is_refused_by_its_path() {
        let mut document = GenericObject {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            metadata: Some(ObjectMeta {
                name: "team".into(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        let content = serde_json::json!({
            "status": {"phase": "Terminating", "conditions": [{"type": "NamespaceContentRemaining", "status": "True"}]},
        });
        generic::set_content(&mut document, content.as_object().unwrap());
        let object = Object {
            kind: Some(Body::Generic(document)),
        };
        let error = to_legacy(object.clone()).unwrap_err().to_string();
        assert!(error.contains("\"status.conditions\""), "{error}");
        assert!(error.contains("Namespace \"team\""), "{error}");
        assert_eq!(for_member(object.clone(), 3), object, "kept a document");
        // A client that only reads it gets it in the model, without them,
        // marked with the first field left out.
        let cut_object = for_reader(object.clone(), 3);
        let left_out = cut_from(&cut_object).expect("marked as cut");
        assert!(left_out.contains("\"status.conditions\""), "{left_out}");
        let Some(Body::Namespace(cut)) = cut_object.kind else {
            panic!("in the protobuf model for a reader")
        };
        assert_eq!(cut.metadata.as_ref().unwrap().name, "team");
        let status = cut.status.unwrap_or_default();
        assert_eq!(status.phase, "Terminating");
        // Empty and null values are unset (Kubernetes' semantic equality):
        // nothing is lost without them.
        let unset = serde_json::json!({
            "status": {"phase": "Active", "conditions": []},
            "spec": {"finalizers": null},
        });
        let Some(Body::Generic(mut document)) = object.kind else {
            unreachable!()
        };
        generic::set_content(&mut document, unset.as_object().unwrap());
        let whole = Object {
            kind: Some(Body::Generic(document)),
        };
        let legacy = to_legacy(whole.clone()).unwrap();
        assert!(
            matches!(legacy.kind, Some(Body::Namespace(_))),
            "empty values are unset: {legacy:?}"
        );
        // Held whole, it is not marked for a reader either.
        let read = for_reader(whole, 3);
        assert_eq!(read, legacy);
        assert_eq!(cut_from(&read), None);
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
