//! Objects as the REST API reads and writes them: request bodies (JSON or
//! YAML) decoded into skiff's objects, checked against the URL (kind,
//! apiVersion, namespace) and for unknown fields as `fieldValidation` asks;
//! answers encoded as Kubernetes JSON with `apiVersion` and `kind` set and
//! the fields that client libraries require always present. Events are
//! held as core v1 Events and answered as the URL's group has them
//! (`events::convert`). A version the store does not hold (the registry's
//! `OTHER_VERSIONS`: `autoscaling/v1` HorizontalPodAutoscalers) is read
//! against its own schema, its unknown fields and problems named by its
//! own paths, then converted to the stored version; answers are converted
//! back (`registry::Conversion`).

use serde_json::{json, Value};
use skiff_proto::api::Object;

use super::status::RestError;
use crate::events::convert;
use skiff_objects::manifest::{object_from_json, to_json_value};
use skiff_objects::registry::{self, Conversion, KindInfo};
use skiff_objects::{schema_check, Kind};

/// What to do with fields skiff does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Accept it and answer a `Warning` header per field (the default).
    Warn,
    /// Accept it silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, RestError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(RestError::bad_request(format!(
                "fieldValidation {other:?} is not one of Strict, Warn, Ignore"
            ))),
        }
    }
}

/// Parses a request body as JSON, or YAML when the Content-Type says so.
pub fn parse_body(body: &[u8], content_type: &str) -> Result<Value, RestError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                RestError::bad_request(format!("the request body is not valid YAML: {e}"))
            }),
        super::protobuf::CONTENT_TYPE => super::protobuf::decode(body).map_err(|e| {
            RestError::bad_request(format!("the protobuf request body cannot be read: {e}"))
        }),
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            RestError::bad_request(format!(
                "the request body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        }),
        other => Err(RestError::unsupported_media_type(
            other,
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )),
    }
}

/// Checks a body's `kind`, `apiVersion` and namespace against the URL,
/// filling in what the body left out (the Python client sends neither
/// `kind` nor `apiVersion`).
pub fn check_against_url(
    value: &mut Value,
    info: &KindInfo,
    namespace: Option<&str>,
) -> Result<(), RestError> {
    let Some(object) = value.as_object_mut() else {
        return Err(RestError::bad_request(format!(
            "the request body must be a {} object, not {}",
            info.name,
            json_type(value)
        )));
    };
    match object.get("kind") {
        None | Some(Value::Null) => {
            object.insert("kind".into(), json!(info.name));
        }
        Some(Value::String(k)) if k.is_empty() => {
            object.insert("kind".into(), json!(info.name));
        }
        Some(Value::String(k)) if k == info.name => {}
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "the kind {} of the body does not match the URL's resource {} (kind {})",
                other, info.resource, info.name
            )))
        }
    }
    match object.get("apiVersion") {
        None | Some(Value::Null) => {
            object.insert("apiVersion".into(), json!(info.api_version));
        }
        Some(Value::String(v)) if v.is_empty() => {
            object.insert("apiVersion".into(), json!(info.api_version));
        }
        Some(Value::String(v)) if v == info.api_version => {}
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "the apiVersion {other} of the body does not match the URL's {}",
                info.api_version
            )))
        }
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| RestError::bad_request("metadata must be an object"))?;
    if info.namespaced {
        let url = namespace.unwrap_or_default();
        match metadata.get("namespace") {
            None | Some(Value::Null) => {
                metadata.insert("namespace".into(), json!(url));
            }
            Some(Value::String(n)) if n.is_empty() => {
                metadata.insert("namespace".into(), json!(url));
            }
            Some(Value::String(n)) if n == url => {}
            Some(other) => {
                return Err(RestError::bad_request(format!(
                    "the namespace of the provided object ({other}) does not match the namespace sent on the request ({url:?})"
                )))
            }
        }
    } else if metadata
        .get("namespace")
        .is_some_and(|n| n.as_str().is_some_and(|n| !n.is_empty()))
    {
        return Err(RestError::bad_request(format!(
            "{} are not namespaced; metadata.namespace must be empty",
            info.resource
        )));
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes a checked body into an object of `info`'s kind. Unknown fields
/// are refused (Strict) or returned as warnings (Warn).
pub fn decode(
    info: &KindInfo,
    mut value: Value,
    validation: FieldValidation,
    origin: BodyOrigin,
) -> Result<(Object, Vec<String>), RestError> {
    // `null` means "not set" (kubectl sends `creationTimestamp: null`).
    strip_nulls(&mut value);
    let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let kept = (origin == BodyOrigin::Protobuf).then(|| value.clone());
    let (object, mut unknown) = match info.conversion {
        Conversion::AsStored => object_from_json(info.kind, value).map_err(|e| {
            RestError::invalid(info, &name, vec![(e.path.clone(), e.message.clone())])
        })?,
        _ => decode_converted(info, value, &name)?,
    };
    if let Some(sent) = kept {
        // Go writes every field that is not a pointer, set or not: an empty
        // one that skiff does not know was not asked for.
        unknown.retain(|path| !value_at(&sent, path).is_none_or(is_zero));
    }
    let mut warnings: Vec<String> = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            return Err(RestError::bad_request(format!(
                "strict decoding error: {}",
                unknown
                    .iter()
                    .map(|p| format!("unknown field {p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        FieldValidation::Warn => unknown
            .iter()
            .map(|p| format!("unknown field {p:?}"))
            .collect(),
        _ => Vec::new(),
    };
    warnings.extend(skiff_objects::unsupported::warnings(&object));
    Ok((object, warnings))
}

/// A body of a version the store does not hold: checked against its own
/// version's schema (so that its unknown fields and wrong types are named
/// by its own paths) and in the fields only it has, converted to the
/// stored version and decoded as that. Whatever the stored version's
/// decoding finds is named as the body's version names it (in
/// `RestError::invalid`); the unknown fields are the body's.
fn decode_converted(
    info: &KindInfo,
    mut value: Value,
    name: &str,
) -> Result<(Object, Vec<String>), RestError> {
    let mut unknown = Vec::new();
    schema_check::check(
        info.group,
        info.version,
        info.name,
        &mut value,
        &mut unknown,
    )
    .map_err(|e| RestError::invalid(info, name, vec![(e.path, e.message)]))?;
    let problems = info.conversion.check(&value);
    if !problems.is_empty() {
        return Err(RestError::invalid(info, name, problems));
    }
    let stored = info
        .conversion
        .to_stored(value)
        .map_err(|e| RestError::invalid(info, name, vec![(e.field(), e.message())]))?;
    // What the stored version does not know came from annotations, which
    // Kubernetes reads leniently: left out, not reported.
    let (object, _) = object_from_json(info.kind, stored)
        .map_err(|e| RestError::invalid(info, name, vec![(e.path, e.message)]))?;
    Ok((object, unknown))
}

/// Where a request body came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOrigin {
    /// JSON or YAML, as the client wrote it.
    Text,
    /// Kubernetes protobuf, decoded: it carries every non-pointer field of
    /// the Go type, empty ones too.
    Protobuf,
}

impl BodyOrigin {
    pub fn of(content_type: &str) -> BodyOrigin {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media == super::protobuf::CONTENT_TYPE {
            BodyOrigin::Protobuf
        } else {
            BodyOrigin::Text
        }
    }
}

/// The value at a dotted field path (`spec.containers.0.stdin`).
fn value_at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |at, segment| match at {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// `""`, `0`, `false`, `{}` or `[]` (or objects and arrays of only those).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.iter().all(is_zero),
        Value::Object(map) => map.values().all(is_zero),
    }
}

pub use skiff_objects::generic::strip_nulls;

/// An object as the API answers it.
pub fn encode(info: &KindInfo, object: &Object) -> Value {
    let mut value = info.conversion.to_served(to_json_value(object));
    if let Some(map) = value.as_object_mut() {
        if info.kind == Kind::EventsK8sIoEvent {
            convert::to_events_v1(map);
        }
        map.insert("apiVersion".into(), json!(info.api_version));
        map.insert("kind".into(), json!(info.name));
        map.entry("metadata").or_insert_with(|| json!({}));
        if info.kind == Kind::Event {
            // The Python client's V1Event requires it.
            map.entry("involvedObject").or_insert_with(|| json!({}));
        }
    }
    fill_required(info.kind.name(), &mut value);
    value
}

/// `object` as a Table's row reads it: at the version the store holds,
/// as kube-apiserver prints every version from its one internal object
/// (an `autoscaling/v1` autoscaler's metrics, and their current values,
/// in the order they are stored; v1's JSON has them in annotations, the
/// CPU target moved last).
pub fn encode_for_table(info: &KindInfo, object: &Object) -> Value {
    let slim = pod_for_table(object);
    encode_whole_for_table(info, slim.as_ref().unwrap_or(object))
}

/// [`encode_for_table`] with every field: what a field selector reads
/// (a pod's `spec.schedulerName`, say, which its row does not print).
pub fn encode_whole_for_table(info: &KindInfo, object: &Object) -> Value {
    match info.conversion {
        Conversion::AsStored => encode(info, object),
        _ => encode(registry::info(info.kind), object),
    }
}

/// A pod document with only what its Table row reads of its spec (its
/// containers' and init containers' names and restart policies, the
/// node, the readiness gates) and all of its status: the rest of a spec
/// is skipped, not made into a JSON tree (a Table of 10,000 pods read
/// each whole). `None` for another object, or a pod whose fields do not
/// read so (it is read whole).
fn pod_for_table(object: &Object) -> Option<Object> {
    use skiff_proto::api::object::Kind as Body;
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Content {
        #[serde(skip_serializing_if = "Option::is_none")]
        spec: Option<Spec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<Value>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        #[serde(skip_serializing_if = "Option::is_none")]
        containers: Option<Vec<Container>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        init_containers: Option<Vec<Container>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        node_name: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        readiness_gates: Option<Value>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Container {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        restart_policy: Option<Value>,
    }
    let Some(Body::Generic(document)) = &object.kind else {
        return None;
    };
    if document.api_version != "v1" || document.kind != "Pod" || document.content.is_empty() {
        return None;
    }
    // Stored content is written from a parsed map: no duplicate keys.
    let content: Content = serde_json::from_slice(&document.content).ok()?;
    let slim = skiff_proto::v1::GenericObject {
        api_version: document.api_version.clone(),
        kind: document.kind.clone(),
        metadata: document.metadata.clone(),
        content: serde_json::to_vec(&content).ok()?,
    };
    Some(Object {
        kind: Some(Body::Generic(slim)),
    })
}

/// Appends `object` as the API answers it (what [`encode`] makes) as JSON
/// to `out`. Typed objects are written straight from their fields, without
/// a JSON tree: this is what lists of many objects cost.
pub fn write_json(out: &mut Vec<u8>, info: &KindInfo, object: &Object) {
    use skiff_proto::api::object::Kind as Body;
    let body = match &object.kind {
        Some(Body::Generic(_)) | None => None,
        Some(body) => (!needs_filling(info.kind.name())).then_some(body),
    };
    let Some(body) = body else {
        if let Some(Body::Generic(document)) = &object.kind {
            if write_document(out, info, document) {
                return;
            }
        }
        // Cannot fail: a Value always serializes.
        let _ = serde_json::to_writer(&mut *out, &encode(info, object));
        return;
    };
    let start = out.len();
    out.extend_from_slice(b"{\"apiVersion\":");
    let _ = serde_json::to_writer(&mut *out, info.api_version);
    out.extend_from_slice(b",\"kind\":");
    let _ = serde_json::to_writer(&mut *out, info.name);
    let fields = out.len();
    // The body's own type meta (which the store sets) is left out: the
    // object's apiVersion and kind are the ones written above, once.
    let written = skiff_objects::with_body!(body, o => {
        if o.api_version.is_empty() && o.kind.is_empty() {
            serde_json::to_writer(&mut *out, o)
        } else {
            let mut o = o.clone();
            o.api_version.clear();
            o.kind.clear();
            serde_json::to_writer(&mut *out, &o)
        }
    });
    if written.is_err() || out.get(fields) != Some(&b'{') {
        out.truncate(start);
        let _ = serde_json::to_writer(&mut *out, &encode(info, object));
        return;
    }
    // The object's own `{` becomes the separator after the type meta.
    if out.get(fields + 1) == Some(&b'}') {
        out.truncate(fields);
        out.extend_from_slice(b",\"metadata\":{}}");
    } else {
        out[fields] = b',';
    }
}

/// Appends a document served as it is stored (what [`encode`] makes of
/// it) with its content's bytes as they are, without a JSON tree (a list
/// of 10,000 pods); `false`, writing nothing, for one [`encode`] changes
/// or whose content is not a JSON object's bytes.
fn write_document(
    out: &mut Vec<u8>,
    info: &KindInfo,
    document: &skiff_proto::v1::GenericObject,
) -> bool {
    let plain = info.conversion == Conversion::AsStored
        && !matches!(info.kind, Kind::Event | Kind::EventsK8sIoEvent)
        && !needs_filling(info.kind.name());
    let content = &document.content;
    // Stored content is compact JSON (`generic::set_content`): `{}`, or
    // `{"` and a key.
    let compact = content.as_slice() == b"{}" || content.starts_with(b"{\"");
    if !plain || !compact || content.last() != Some(&b'}') {
        return false;
    }
    out.extend_from_slice(b"{\"apiVersion\":");
    let _ = serde_json::to_writer(&mut *out, info.api_version);
    out.extend_from_slice(b",\"kind\":");
    let _ = serde_json::to_writer(&mut *out, info.name);
    out.extend_from_slice(b",\"metadata\":");
    match &document.metadata {
        Some(meta) => {
            let _ = serde_json::to_writer(&mut *out, meta);
        }
        None => out.extend_from_slice(b"{}"),
    }
    if content.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&content[1..]);
    } else {
        out.push(b'}');
    }
    true
}

/// Kinds whose answers get fields their typed encoding may leave out
/// (see [`fill_required`]).
fn needs_filling(kind: &str) -> bool {
    matches!(kind, "Node" | "ReplicaSet")
}

/// Parts Kubernetes always writes that an object may lack altogether, and
/// that client libraries refuse to do without (the Python client's models
/// require them). Fields inside the parts an object has are written by its
/// encoding itself (`proto/build.rs` `ALWAYS_WRITTEN`).
fn fill_required(kind: &str, value: &mut Value) {
    if !needs_filling(kind) {
        return;
    }
    let status = &mut value["status"];
    if !status.is_object() {
        *status = json!({});
    }
    match kind {
        "Node" => {
            let info = &mut status["nodeInfo"];
            if !info.is_object() {
                *info = json!({});
            }
            for field in [
                "architecture",
                "bootID",
                "containerRuntimeVersion",
                "kernelVersion",
                "kubeProxyVersion",
                "kubeletVersion",
                "machineID",
                "operatingSystem",
                "osImage",
                "systemUUID",
            ] {
                default_field(info, field, json!(""));
            }
        }
        _ => default_field(status, "replicas", json!(0)),
    }
}

fn default_field(object: &mut Value, field: &str, default: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(field).or_insert(default);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::registry::info;
    use skiff_objects::ObjectExt;

    #[test]
    fn bodies_must_agree_with_the_url_and_get_what_they_left_out() {
        let pods = info(Kind::Pod);
        let mut v = json!({"metadata": {"name": "a"}});
        check_against_url(&mut v, pods, Some("ns")).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["metadata"]["namespace"], "ns");

        let mut v = json!({"kind": "Service", "metadata": {"name": "a"}});
        let e = check_against_url(&mut v, pods, Some("ns")).unwrap_err();
        assert_eq!(e.code, http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("does not match"), "{}", e.message);

        let mut v = json!({"metadata": {"name": "a", "namespace": "other"}});
        let e = check_against_url(&mut v, pods, Some("ns")).unwrap_err();
        assert!(e.message.contains("namespace"), "{}", e.message);

        let mut v = json!({"apiVersion": "apps/v1", "kind": "Pod"});
        assert!(check_against_url(&mut v, pods, Some("ns")).is_err());
        let mut v = json!([1]);
        assert!(check_against_url(&mut v, pods, Some("ns")).is_err());
        let mut v = json!({"metadata": {"name": "n", "namespace": "x"}});
        assert!(check_against_url(&mut v, info(Kind::Node), None).is_err());
    }

    #[test]
    fn unknown_fields_are_refused_warned_about_or_ignored_as_asked() {
        let pods = info(Kind::Pod);
        let body = || {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "d"},
                   "spec": {"containers": [{"name": "c", "image": "i", "colour": "blue"}]}})
        };
        let e = decode(pods, body(), FieldValidation::Strict, BodyOrigin::Text).unwrap_err();
        assert!(
            e.message.contains("spec.containers.0.colour"),
            "{}",
            e.message
        );
        let (_, warnings) = decode(pods, body(), FieldValidation::Warn, BodyOrigin::Text).unwrap();
        assert_eq!(
            warnings,
            vec!["unknown field \"spec.containers.0.colour\"".to_owned()]
        );
        let (_, warnings) =
            decode(pods, body(), FieldValidation::Ignore, BodyOrigin::Text).unwrap();
        assert!(warnings.is_empty());
        assert!(FieldValidation::parse(Some("Loose")).is_err());
    }

    #[test]
    fn empty_fields_skiff_does_not_know_are_ignored_in_protobuf_bodies_only() {
        // A Node's protobuf model (the one kind still held in one) has no
        // place for spec.externalID.
        let nodes = info(Kind::Node);
        let body = |id: Value| {
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "a", "selfLink": ""},
                   "spec": {"externalID": id}})
        };
        let strict = FieldValidation::Strict;
        let (_, warnings) = decode(nodes, body(json!("")), strict, BodyOrigin::Protobuf).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let e = decode(nodes, body(json!("x")), strict, BodyOrigin::Protobuf).unwrap_err();
        assert!(e.message.contains("externalID"), "{}", e.message);
        let e = decode(nodes, body(json!("")), strict, BodyOrigin::Text).unwrap_err();
        assert!(e.message.contains("selfLink"), "{}", e.message);
    }

    #[test]
    fn malformed_bodies_name_the_problem_and_where() {
        let e = parse_body(b"{\"a\": ", "application/json").unwrap_err();
        assert_eq!(e.code, http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = parse_body(b"a: [", "application/yaml").unwrap_err();
        assert!(e.message.contains("YAML"), "{}", e.message);
        let e = parse_body(b"x", "text/plain").unwrap_err();
        assert_eq!(e.code, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let pods = info(Kind::Pod);
        let e = decode(
            pods,
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"}, "spec": {"containers": "no"}}),
            FieldValidation::Warn,
            BodyOrigin::Text,
        )
        .unwrap_err();
        assert_eq!(e.code, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("spec.containers"), "{}", e.message);
    }

    #[test]
    fn kinds_without_status_get_none() {
        let mut v = json!({"metadata": {"name": "c"}, "data": {}});
        fill_required("ConfigMap", &mut v);
        assert_eq!(v, json!({"metadata": {"name": "c"}, "data": {}}));
    }

    #[test]
    fn events_are_answered_as_the_urls_group_has_them() {
        let held = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.17f3a", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "message": "Started container web",
            "reportingComponent": "kubelet",
            "firstTimestamp": "2026-11-30T12:00:00Z",
            "count": 2
        });
        let (object, _) = decode(
            info(Kind::Event),
            held,
            FieldValidation::Strict,
            BodyOrigin::Text,
        )
        .unwrap();
        let core = encode(info(Kind::Event), &object);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "Started container web");
        let v1 = encode(info(Kind::EventsK8sIoEvent), &object);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["kind"], "Event");
        assert_eq!(v1["regarding"]["name"], "web");
        assert_eq!(v1["note"], "Started container web");
        assert_eq!(v1["reportingController"], "kubelet");
        assert_eq!(v1["deprecatedCount"], 2);
        assert_eq!(v1["eventTime"], "2026-11-30T12:00:00.000000Z");
        assert!(v1.get("involvedObject").is_none(), "{v1}");
        // An Event without one still carries involvedObject.
        let (bare, _) = decode(
            info(Kind::Event),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}}),
            FieldValidation::Strict,
            BodyOrigin::Text,
        )
        .unwrap();
        assert_eq!(
            encode(info(Kind::Event), &bare)["involvedObject"],
            json!({})
        );
        // An events.k8s.io body decodes as that kind, to be held as core.
        let (sent, _) = decode(
            info(Kind::EventsK8sIoEvent),
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": "e"}, "note": "hi", "regarding": {"kind": "Node"}}),
            FieldValidation::Strict,
            BodyOrigin::Text,
        )
        .unwrap();
        assert_eq!(sent.kind().unwrap(), Kind::EventsK8sIoEvent);
    }

    /// The `autoscaling/v1` entry of the registry.
    fn autoscaling_v1() -> &'static KindInfo {
        registry::by_resource("autoscaling", "v1", "horizontalpodautoscalers").unwrap()
    }

    /// What kubectl 1.20's `autoscale deployment web --cpu-percent=50
    /// --min=1 --max=3` posts.
    fn v1_autoscaler() -> Value {
        json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50,
            },
        })
    }

    #[test]
    fn autoscalers_written_at_v1_are_held_at_v2_and_answered_at_either() {
        let v1 = autoscaling_v1();
        let (object, warnings) = decode(
            v1,
            v1_autoscaler(),
            FieldValidation::Strict,
            BodyOrigin::Text,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(object.kind().unwrap(), Kind::HorizontalPodAutoscaler);
        let held = to_json_value(&object);
        assert_eq!(held["apiVersion"], "autoscaling/v2");
        assert_eq!(
            held["spec"]["metrics"][0]["resource"]["target"],
            json!({"type": "Utilization", "averageUtilization": 50})
        );

        let at_v2 = encode(info(Kind::HorizontalPodAutoscaler), &object);
        assert_eq!(at_v2["apiVersion"], "autoscaling/v2");
        assert!(at_v2["spec"]
            .get("targetCPUUtilizationPercentage")
            .is_none());
        let at_v1 = encode(v1, &object);
        assert_eq!(at_v1["apiVersion"], "autoscaling/v1");
        assert_eq!(at_v1["kind"], "HorizontalPodAutoscaler");
        assert_eq!(at_v1["spec"], v1_autoscaler()["spec"]);
        assert!(at_v1["spec"].get("metrics").is_none());
        // Lists are written as the URL's version too.
        let mut out = Vec::new();
        write_json(&mut out, v1, &object);
        let written: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written, at_v1);
        // Tables are made from the stored version, as kube-apiserver
        // prints every version from one object.
        assert_eq!(encode_for_table(v1, &object), at_v2);
    }

    #[test]
    fn a_v1_write_is_checked_by_v1s_schema_and_named_by_v1s_fields() {
        let v1 = autoscaling_v1();
        let mut body = v1_autoscaler();
        body["spec"]["metrics"] = json!([]);
        let e = decode(v1, body.clone(), FieldValidation::Strict, BodyOrigin::Text).unwrap_err();
        assert!(
            e.message.contains("unknown field \"spec.metrics\""),
            "{}",
            e.message
        );
        let (object, warnings) = decode(v1, body, FieldValidation::Warn, BodyOrigin::Text).unwrap();
        assert_eq!(warnings, ["unknown field \"spec.metrics\""]);
        // v1's own target survives; the unknown field does not.
        let held = to_json_value(&object);
        assert_eq!(held["spec"]["metrics"].as_array().unwrap().len(), 1);

        let mut body = v1_autoscaler();
        body["spec"]["targetCPUUtilizationPercentage"] = json!("fifty");
        let e = decode(v1, body, FieldValidation::Warn, BodyOrigin::Text).unwrap_err();
        assert_eq!(e.code, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details.causes[0].0, "spec.targetCPUUtilizationPercentage");

        let mut body = v1_autoscaler();
        body["spec"]["targetCPUUtilizationPercentage"] = json!(0);
        let e = decode(v1, body, FieldValidation::Warn, BodyOrigin::Text).unwrap_err();
        assert_eq!(
            e.message,
            "HorizontalPodAutoscaler.autoscaling \"web\" is invalid: spec.targetCPUUtilizationPercentage: Invalid value: 0: must be greater than 0"
        );

        let mut body = v1_autoscaler();
        body["metadata"]["annotations"] =
            json!({"autoscaling.alpha.kubernetes.io/metrics": "{oops"});
        let e = decode(v1, body, FieldValidation::Warn, BodyOrigin::Text).unwrap_err();
        assert_eq!(e.code, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.details.causes[0].0,
            "metadata.annotations[autoscaling.alpha.kubernetes.io/metrics]"
        );

        // What v2's validation finds in a metric v1 carries in the
        // annotation is named by the annotation (the writer's refusal
        // reaches the REST API as these causes).
        let mut body = v1_autoscaler();
        body["metadata"]["annotations"] = json!({"autoscaling.alpha.kubernetes.io/metrics":
            r#"[{"type": "Pods", "pods": {"targetAverageValue": "10"}}]"#});
        let (mut object, _) = decode(v1, body, FieldValidation::Strict, BodyOrigin::Text).unwrap();
        skiff_objects::defaults::apply_defaults(&mut object);
        let problems = skiff_objects::validation::validate(&object).unwrap_err();
        let causes: Vec<(String, String)> = problems
            .errors
            .iter()
            .map(|f| (f.path.clone(), f.reason.clone()))
            .collect();
        assert_eq!(
            causes[0].0, "spec.metrics[0].pods.metric.name",
            "{causes:?}"
        );
        let e = RestError::invalid(v1, "web", causes.clone());
        assert_eq!(
            e.details.causes[0].0,
            "metadata.annotations[autoscaling.alpha.kubernetes.io/metrics]"
        );
        assert!(
            e.details.causes[0]
                .1
                .starts_with("spec.metrics[0].pods.metric.name: Required value"),
            "{:?}",
            e.details.causes
        );
        // At v2 the same problem keeps v2's field.
        let e = RestError::invalid(info(Kind::HorizontalPodAutoscaler), "web", causes);
        assert_eq!(e.details.causes[0].0, "spec.metrics[0].pods.metric.name");
    }

    #[test]
    fn answers_carry_type_meta_and_the_fields_clients_require() {
        let node = skiff_proto::api::Object {
            kind: Some(skiff_proto::api::object::Kind::Node(
                skiff_proto::v1::Node {
                    metadata: Some(skiff_proto::v1::ObjectMeta {
                        name: "n1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        };
        let v = encode(info(Kind::Node), &node);
        assert_eq!(v["kind"], "Node");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "");
        assert_eq!(v["status"]["nodeInfo"]["systemUUID"], "");
    }

    /// The keys of the JSON object `json`, in the order written, each
    /// as often as written.
    fn top_level_keys(json: &[u8]) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((key, _)) =
                            map.next_entry::<String, serde::de::IgnoredAny>()?
                        {
                            keys.push(key);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(Visitor)
            }
        }
        serde_json::from_slice::<Keys>(json).unwrap().0
    }

    #[test]
    fn objects_written_straight_read_as_their_encoding_with_the_fields_clients_require() {
        use skiff_proto::api::object::Kind as Body;
        use skiff_proto::v1;
        let pod = Object {
            kind: Some(Body::Pod(v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: "p".into(),
                    namespace: "ns".into(),
                    ..Default::default()
                }),
                status: Some(v1::PodStatus {
                    phase: "Pending".into(),
                    container_statuses: vec![v1::ContainerStatus::default()],
                    conditions: vec![v1::PodCondition::default()],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let bare = skiff_objects::secrets::of(Default::default(), &Default::default());
        let replicaset = Object {
            kind: Some(Body::ReplicaSet(v1::ReplicaSet::default())),
        };
        // A pod as stored now: a document, written with its content's
        // bytes as they are.
        let document = skiff_objects::legacy_bodies::to_document(pod.clone());
        assert!(matches!(document.kind, Some(Body::Generic(_))));
        let empty = Object {
            kind: Some(Body::Generic(skiff_objects::generic::document(
                "v1",
                "Pod",
                None,
                json!({}),
            ))),
        };
        use skiff_objects::IntoObject;
        let mut deployment = skiff_proto::v1::Deployment {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        // As the store sets it.
        if let Some(Body::Deployment(d)) = deployment.kind.as_mut() {
            d.api_version = "apps/v1".into();
            d.kind = "Deployment".into();
        }
        for (kind, object) in [
            (Kind::Pod, &pod),
            (Kind::Pod, &document),
            (Kind::Pod, &empty),
            (Kind::Secret, &bare),
            (Kind::ReplicaSet, &replicaset),
            (Kind::Deployment, &deployment),
        ] {
            let mut out = Vec::new();
            write_json(&mut out, info(kind), object);
            let written: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, encode(info(kind), object), "{kind:?}");
            // A Value keeps the last of a key written twice: the keys are
            // read as written.
            let keys = top_level_keys(&out);
            let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len(), "{kind:?}: {keys:?}");
        }
        let v = encode(info(Kind::Pod), &pod);
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        let status = &v["status"]["containerStatuses"][0];
        for field in ["name", "image", "imageID"] {
            assert_eq!(status[field], "", "{field}");
        }
        assert_eq!(status["ready"], false);
        assert_eq!(status["restartCount"], 0);
        assert_eq!(v["status"]["conditions"][0]["type"], "");
        assert_eq!(v["status"]["conditions"][0]["status"], "");
        assert_eq!(v["status"]["phase"], "Pending");
        assert!(
            v["status"].get("podIP").is_none(),
            "other empty fields stay out"
        );
        assert_eq!(encode(info(Kind::Secret), &bare)["metadata"], json!({}));
        assert_eq!(
            encode(info(Kind::ReplicaSet), &replicaset)["status"]["replicas"],
            0
        );
    }

    #[test]
    fn a_pods_table_row_reads_only_what_it_prints_and_prints_the_same() {
        use skiff_proto::api::object::Kind as Body;
        use skiff_proto::v1;
        let spec = json!({
            "nodeName": "n1",
            "readinessGates": [{"conditionType": "example.com/gate"}],
            "initContainers": [
                {"name": "setup", "image": "busybox"},
                {"name": "sidecar", "image": "busybox", "restartPolicy": "Always"},
            ],
            "containers": [
                {"name": "app", "image": "busybox", "env": [{"name": "A", "value": "1"}],
                 "resources": {"requests": {"cpu": "100m"}}},
                {"name": "log", "image": "busybox"},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        });
        let status = json!({
            "phase": "Running",
            "podIP": "10.42.0.5",
            "podIPs": [{"ip": "10.42.0.5"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "initContainerStatuses": [
                {"name": "setup", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "sidecar", "ready": true, "started": true, "restartCount": 1,
                 "state": {"running": {}}},
            ],
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-12-06T10:00:00Z"}}},
                {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ],
        });
        let meta = v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            creation_timestamp: "2026-12-06T09:00:00Z".into(),
            ..Default::default()
        };
        let pod = Object {
            kind: Some(Body::Generic(skiff_objects::generic::document(
                "v1",
                "Pod",
                Some(meta),
                json!({"spec": spec, "status": status}),
            ))),
        };
        let slim = pod_for_table(&pod).expect("a pod document");
        let Some(Body::Generic(slim_document)) = &slim.kind else {
            panic!("a document");
        };
        let slim_content: Value = serde_json::from_slice(&slim_document.content).unwrap();
        assert!(slim_content["spec"].get("volumes").is_none(), "not read");
        assert!(slim_content["spec"]["containers"][0].get("env").is_none());
        let now = time::OffsetDateTime::parse(
            "2026-12-06T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let full = encode(info(Kind::Pod), &pod);
        let read = encode_for_table(info(Kind::Pod), &pod);
        let rows = |pod: &Value| {
            super::super::table::table("Pod", &[pod], "1", false, now)["rows"].clone()
        };
        assert_eq!(rows(&read), rows(&full));
        let cells = &rows(&read)[0]["cells"];
        assert_eq!(cells[1], "2/3", "{cells}");
        assert_eq!(cells[2], "CrashLoopBackOff", "{cells}");
        // Another kind is read whole.
        assert!(pod_for_table(&skiff_objects::namespaces::named("n", "")).is_none());
    }
}
