//! Checks an object given as Kubernetes JSON against the Kubernetes API's
//! schema for its kind (`objects::api_schema`, generated from the API's
//! protobuf definitions and JSON names): every field must be one the kind's
//! type has, holding a value of the field's type. A wrong type is an error
//! naming the field; a field the type does not have is reported as unknown
//! (the caller refuses or warns, as `fieldValidation` says).
//!
//! JSON shapes follow Kubernetes' own encoding: int-or-string fields take a
//! number or a string, quantities a string or a number, bytes base64 text,
//! `RawExtension` any JSON, and `null` stands for "not set" anywhere.

use base64::Engine;
use serde_json::{Map, Value};

use super::api_schema::{FieldKind, FieldSchema, MessageSchema, KINDS, MESSAGES};

/// How deep objects may nest; the served schema nests at most 14 deep.
const MAX_DEPTH: usize = 64;

/// A value of the wrong type, or an object skiff has no schema for: the
/// field (empty for the object itself) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

/// Checks `value`, an object of `kind` in `group`/`version`, adding the
/// paths of fields its type does not have to `unknown`. A quantity given
/// as a number (`storage: 5`, `averageValue: 0.5`) is rewritten as the
/// text Kubernetes stores it as (`"5"`, `"500m"`), so that what reads the
/// stored object (Kubernetes' own types, `crate::typed`) finds text.
pub fn check(
    group: &str,
    version: &str,
    kind: &str,
    value: &mut Value,
    unknown: &mut Vec<String>,
) -> Result<(), SchemaError> {
    let Some(schema) = KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
    else {
        return Err(SchemaError {
            path: String::new(),
            message: format!("no schema for {kind} in {group}/{version}"),
        });
    };
    let Value::Object(map) = value else {
        return Err(type_error("", "an object", value));
    };
    let message = &MESSAGES[usize::from(schema.message)];
    check_fields(message, map, "", unknown, true, 0)
}

fn check_fields(
    message: &'static MessageSchema,
    map: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
    top: bool,
    depth: usize,
) -> Result<(), SchemaError> {
    if depth > MAX_DEPTH {
        return Err(SchemaError {
            path: path.to_owned(),
            message: format!("nested more than {MAX_DEPTH} objects deep"),
        });
    }
    for (key, value) in map.iter_mut() {
        // The type meta is the envelope's, not the message's.
        if top && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match find_field(message, key) {
            Some(field) => check_field(field, value, &at, unknown, depth)?,
            None => unknown.push(at),
        }
    }
    Ok(())
}

/// The field named `key` (in JSON), also among inlined members.
fn find_field(message: &'static MessageSchema, key: &str) -> Option<&'static FieldSchema> {
    message.fields.iter().find_map(|field| match field.kind {
        FieldKind::Inline(inner) => find_field(&MESSAGES[usize::from(inner)], key),
        _ if field.json == key => Some(field),
        _ => None,
    })
}

fn check_field(
    field: &FieldSchema,
    value: &mut Value,
    path: &str,
    unknown: &mut Vec<String>,
    depth: usize,
) -> Result<(), SchemaError> {
    if value.is_null() {
        return Ok(());
    }
    if !field.repeated {
        return check_value(field.kind, value, path, unknown, depth);
    }
    let Value::Array(items) = value else {
        return Err(type_error(path, "a list", value));
    };
    for (i, item) in items.iter_mut().enumerate() {
        if !item.is_null() {
            check_value(field.kind, item, &format!("{path}.{i}"), unknown, depth)?;
        }
    }
    Ok(())
}

fn check_value(
    kind: FieldKind,
    value: &mut Value,
    path: &str,
    unknown: &mut Vec<String>,
    depth: usize,
) -> Result<(), SchemaError> {
    let is_base64 = |v: &Value| {
        v.as_str()
            .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok())
    };
    let (ok, expected) = match kind {
        FieldKind::Message(inner) | FieldKind::Inline(inner) => {
            let Value::Object(map) = value else {
                return Err(type_error(path, "an object", value));
            };
            let message = &MESSAGES[usize::from(inner)];
            return check_fields(message, map, path, unknown, false, depth + 1);
        }
        FieldKind::String => (value.is_string(), "a string"),
        FieldKind::Time | FieldKind::MicroTime => {
            empty_time_as_unset(value);
            (value.is_null() || is_time(value), "an RFC 3339 time")
        }
        FieldKind::Duration => (value.is_string(), "a duration"),
        FieldKind::Bytes => (is_base64(value), "base64 text"),
        FieldKind::Bool => (value.is_boolean(), "true or false"),
        FieldKind::Int32 => (
            value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "a 32-bit integer",
        ),
        FieldKind::Int64 => (value.is_i64() || value.is_u64(), "an integer"),
        FieldKind::IntOrString => (
            value.is_string() || value.is_i64(),
            "an integer or a string",
        ),
        FieldKind::Quantity => {
            quantity_as_text(value);
            (
                value.is_string(),
                "a quantity (a string such as 100m or 1Gi, or a number)",
            )
        }
        FieldKind::RawJson => (true, "JSON"),
        FieldKind::MapString => return map_check(value, path, &Value::is_string, "a string"),
        FieldKind::MapTime => {
            if let Value::Object(map) = value {
                map.values_mut().for_each(empty_time_as_unset);
            }
            return map_check(value, path, &is_time, "an RFC 3339 time");
        }
        FieldKind::MapBytes => return map_check(value, path, &is_base64, "base64 text"),
        FieldKind::MapQuantity => {
            if let Value::Object(map) = value {
                map.values_mut().for_each(quantity_as_text);
            }
            return map_check(value, path, &Value::is_string, "a quantity");
        }
        FieldKind::MapStringList => {
            let strings = |v: &Value| {
                v.as_array()
                    .is_some_and(|items| items.iter().all(Value::is_string))
            };
            return map_check(value, path, &strings, "a list of strings");
        }
    };
    if ok {
        Ok(())
    } else {
        Err(type_error(path, expected, value))
    }
}

/// A map whose every value (but `null`s) is `each`: refused naming the
/// first entry that is not (`metadata.labels.version`), or the map itself
/// when it is no map.
fn map_check(
    value: &Value,
    path: &str,
    each: &dyn Fn(&Value) -> bool,
    expected: &str,
) -> Result<(), SchemaError> {
    let Value::Object(map) = value else {
        return Err(type_error(
            path,
            &format!("a map, each value {expected}"),
            value,
        ));
    };
    match map.iter().find(|(_, v)| !v.is_null() && !each(v)) {
        Some((key, bad)) => Err(type_error(&format!("{path}.{key}"), expected, bad)),
        None => Ok(()),
    }
}

/// Whether `value` is a time as Kubernetes' `Time` and `MicroTime` read
/// one (RFC 3339: `2026-12-05T17:00:00Z`, an offset, a fraction): what
/// Kubernetes' own types (`crate::typed`) read a stored object with.
fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.parse::<jiff::Timestamp>().is_ok())
}

/// An empty string given for a time: unset (`null`), as a protobuf body's
/// zero time is.
fn empty_time_as_unset(value: &mut Value) {
    if value.as_str() == Some("") {
        *value = Value::Null;
    }
}

/// A quantity given as a number, as the text Kubernetes stores it as: its
/// DecimalSI form (`5` → `"5"`, `0.5` → `"500m"`, `1000` → `"1k"`; below a
/// thousandth rounded up, as skiff keeps quantities). One that does not
/// read as a quantity stays a number, and is refused as one.
fn quantity_as_text(value: &mut Value) {
    if let Value::Number(number) = value {
        if let Ok(quantity) = crate::Quantity::parse(&number.to_string()) {
            *value = Value::String(quantity.decimal_si());
        }
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> SchemaError {
    let found = match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() > 40 => "a string".to_owned(),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    SchemaError {
        path: path.to_owned(),
        message: format!("invalid value: {found}, expected {expected}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(group: &str, kind: &str, value: Value) -> Result<Vec<String>, SchemaError> {
        let mut unknown = Vec::new();
        let mut value = value;
        check(group, "v1", kind, &mut value, &mut unknown).map(|()| unknown)
    }

    #[test]
    fn objects_of_their_kinds_type_pass_and_unknown_fields_are_reported_by_path() {
        let unknown = run(
            "",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "labels": {"a": "b"}, "colour": "blue"},
                   "data": {"k": "v"}, "binaryData": {"b": "AAE="}, "extra": 1}),
        )
        .unwrap();
        assert_eq!(unknown, ["extra", "metadata.colour"]);
    }

    #[test]
    fn wrong_types_are_refused_naming_the_field() {
        let e = run(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"backoffLimit": "many"}}),
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.backoffLimit");
        assert!(e.message.contains("string \"many\""), "{}", e.message);
        let e = run(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "binaryData": {"b": "not base64!"}}),
        )
        .unwrap_err();
        // The entry is named.
        assert_eq!(e.path, "binaryData.b");
        let e = run("", "ConfigMap", json!({"metadata": {"labels": ["a"]}})).unwrap_err();
        assert_eq!(e.path, "metadata.labels");
        let labels = json!({"metadata": {"labels": {"app": "a", "version": 2}}});
        let e = run("", "ConfigMap", labels).unwrap_err();
        assert_eq!(e.path, "metadata.labels.version");
        assert!(e.message.contains("expected a string"), "{}", e.message);
        assert!(run("", "ConfigMap", json!([1])).is_err());
        assert!(run("", "Frobnicator", json!({})).is_err());
    }

    #[test]
    fn kubernetes_json_shapes_are_accepted() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {"cpu": "500m", "memory": 128}},
                    "ports": [{"containerPort": 80}],
                    "livenessProbe": {"httpGet": {"port": "http", "path": "/"}}}],
                // VolumeSource is inlined into Volume.
                "volumes": [{"name": "v", "configMap": {"name": "c"}}, null]
            }}},
            "status": {"startTime": "2026-11-30T12:00:00Z"}
        });
        assert_eq!(run("batch", "Job", job).unwrap(), Vec::<String>::new());
        let e = run(
            "batch",
            "Job",
            json!({"spec": {"template": {"spec": {"containers": [{"ports": [{"containerPort": 1.5}]}]}}}}),
        )
        .unwrap_err();
        assert_eq!(
            e.path,
            "spec.template.spec.containers.0.ports.0.containerPort"
        );
    }

    #[test]
    fn a_users_extra_is_a_map_of_string_lists() {
        let review = |extra: Value| json!({"status": {"userInfo": {"extra": extra}}});
        let lists = review(json!({"scopes": ["a", "b"], "none": []}));
        let unknown = run("authentication.k8s.io", "SelfSubjectReview", lists).unwrap();
        assert_eq!(unknown, Vec::<String>::new());
        // A wrong entry is named; a list for the map, the map.
        for (wrong, at) in [
            (json!({"scopes": "a"}), "status.userInfo.extra.scopes"),
            (json!({"scopes": [1]}), "status.userInfo.extra.scopes"),
            (json!(["a"]), "status.userInfo.extra"),
        ] {
            let value = review(wrong.clone());
            let e = run("authentication.k8s.io", "SelfSubjectReview", value).unwrap_err();
            assert_eq!(e.path, at, "{wrong}");
            assert!(e.message.contains("list of strings"), "{}", e.message);
        }
    }

    #[test]
    fn a_quantity_given_as_a_number_is_stored_as_kubernetes_text() {
        let mut claim =
            json!({"spec": {"resources": {"requests": {"storage": 5, "big": 5e9, "x": "1Gi"}}}});
        let mut unknown = Vec::new();
        check("", "v1", "PersistentVolumeClaim", &mut claim, &mut unknown).unwrap();
        assert_eq!(
            claim["spec"]["resources"]["requests"],
            json!({"storage": "5", "big": "5G", "x": "1Gi"})
        );
        let mut autoscaler = json!({"spec": {"maxReplicas": 3, "metrics": [{"type": "Pods",
            "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": 0.5}}}]}});
        check(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            &mut autoscaler,
            &mut unknown,
        )
        .unwrap();
        assert_eq!(
            autoscaler["spec"]["metrics"][0]["pods"]["target"]["averageValue"],
            "500m"
        );
        assert!(unknown.is_empty(), "{unknown:?}");
        let mut wrong = json!({"spec": {"resources": {"requests": {"storage": true}}}});
        let e = check("", "v1", "PersistentVolumeClaim", &mut wrong, &mut unknown).unwrap_err();
        assert_eq!(e.path, "spec.resources.requests.storage");
    }

    #[test]
    fn times_are_rfc_3339_and_an_empty_one_is_unset() {
        let mut unknown = Vec::new();
        let mut job = json!({"status": {"startTime": "2026-12-05T17:00:00Z",
            "completionTime": "", "conditions": [{"type": "Complete", "status": "True",
            "lastTransitionTime": "2026-12-05T17:00:00.5+01:00"}]}});
        check("batch", "v1", "Job", &mut job, &mut unknown).unwrap();
        assert_eq!(job["status"]["completionTime"], Value::Null);
        for bad in ["yesterday", "2026-12-05", "2026-12-05T17:00:00"] {
            let mut job = json!({"status": {"startTime": bad}});
            let e = check("batch", "v1", "Job", &mut job, &mut unknown).unwrap_err();
            assert_eq!(e.path, "status.startTime", "{bad}");
            assert!(e.message.contains("RFC 3339"), "{}", e.message);
        }
        let mut budget = json!({"status": {"disruptedPods": {"web-0": "soon"}}});
        let e = check(
            "policy",
            "v1",
            "PodDisruptionBudget",
            &mut budget,
            &mut unknown,
        );
        assert_eq!(e.unwrap_err().path, "status.disruptedPods.web-0");
    }
}
