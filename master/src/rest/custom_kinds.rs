//! What the REST API answers differently for custom kinds (those of
//! CustomResourceDefinitions), from the served definition of the URL's
//! version:
//! - Tables (`kubectl get`): NAME, then the version's
//!   `additionalPrinterColumns`, or AGE when it has none, cells read by
//!   their `jsonPath` and typed as kube-apiserver's table convertor types
//!   them (`date` as an age); [`table`] and [`write_table`] choose between
//!   these and the built-in printers of `table.rs`;
//! - the `scale` subresource: an `autoscaling/v1` Scale of the
//!   definition's `specReplicasPath`, `statusReplicasPath` and
//!   `labelSelectorPath` ([`scale_of`]), written back at
//!   `specReplicasPath` ([`set_replicas`]).

use serde_json::{json, Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::table;
use skiff_objects::custom_resources::definition::{PrinterColumn, ScalePaths};
use skiff_objects::generic;
use skiff_objects::registry::custom::served_definition;
use skiff_objects::registry::{KindInfo, Model};
use skiff_objects::Kind;

/// The printer columns of `info`'s version, when it is a served custom
/// kind (`None` for the built-in printers).
fn printer_columns(info: &KindInfo) -> Option<Vec<PrinterColumn>> {
    if info.model != Model::Custom {
        return None;
    }
    let Kind::Custom(kind) = info.kind else {
        return None;
    };
    let served = served_definition(kind);
    let columns = served
        .as_ref()
        .and_then(|s| s.definition.version(info.version))
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    Some(columns)
}

fn definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    let mut out = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": table::NAME_DOC,
        "priority": 0,
    })];
    if columns.is_empty() {
        out.push(json!({
            "name": "Age",
            "type": "date",
            "format": "",
            "description": table::CREATED_DOC,
            "priority": 0,
        }));
    }
    for column in columns {
        out.push(json!({
            "name": column.name,
            "type": column.value_type,
            "format": column.format,
            "description": column.description,
            "priority": column.priority,
        }));
    }
    out
}

fn cells(columns: &[PrinterColumn], object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let mut out = vec![object["metadata"]["name"].clone()];
    if columns.is_empty() {
        out.push(Value::from(age(
            &object["metadata"]["creationTimestamp"],
            now,
        )));
    }
    for column in columns {
        let value = column
            .json_path
            .first(object)
            .cloned()
            .unwrap_or(Value::Null);
        out.push(cell(&column.value_type, value, now));
    }
    out
}

/// kube-apiserver's `cellForJSONValue`: the value as the column's type,
/// `null` (kubectl's `<none>`) when it is missing or of another type;
/// strings print any value.
fn cell(value_type: &str, value: Value, now: OffsetDateTime) -> Value {
    match (value_type, value) {
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))
            .map_or(Value::Null, Value::from),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => Value::Bool(b),
        ("date", Value::String(s)) => Value::from(age(&Value::String(s), now)),
        ("string", Value::String(s)) => Value::String(s),
        ("string", other) => Value::from(other.to_string()),
        _ => Value::Null,
    }
}

/// The age of the RFC 3339 time at `value`, as AGE prints it.
fn age(value: &Value, now: OffsetDateTime) -> String {
    match value.as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339)) {
        Some(Ok(at)) => table::human_seconds((now - at).whole_seconds()),
        Some(Err(_)) => "<invalid>".to_owned(),
        None => "<unknown>".to_owned(),
    }
}

fn row(columns: &[PrinterColumn], mut object: Value, now: OffsetDateTime) -> Value {
    let cells = cells(columns, &object, now);
    let metadata = match object["metadata"].take() {
        Value::Object(metadata) => Value::Object(metadata),
        _ => Value::Object(Map::new()),
    };
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        },
    })
}

/// A `meta.k8s.io/v1` Table of `objects` of `info`'s kind (see
/// `table::table`).
pub fn table(
    info: &KindInfo,
    objects: &[&Value],
    resource_version: &str,
    with_columns: bool,
    now: OffsetDateTime,
) -> Value {
    let Some(columns) = printer_columns(info) else {
        return table::table(info.name, objects, resource_version, with_columns, now);
    };
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".to_owned(), Value::from(resource_version));
    }
    let mut out = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    });
    if with_columns {
        out["columnDefinitions"] = Value::Array(definitions(&columns));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| row(&columns, (*o).clone(), now))
        .collect();
    out["rows"] = Value::Array(rows);
    out
}

/// [`table`] written into `out` a row at a time (see
/// `table::write_table`).
pub fn write_table(
    out: &mut Vec<u8>,
    info: &KindInfo,
    objects: impl Iterator<Item = Value>,
    metadata: &Value,
    now: OffsetDateTime,
) {
    let Some(columns) = printer_columns(info) else {
        table::write_table(out, info.name, objects, metadata, now);
        return;
    };
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
    let _ = serde_json::to_writer(&mut *out, metadata);
    out.extend_from_slice(br#","columnDefinitions":"#);
    let _ = serde_json::to_writer(&mut *out, &definitions(&columns));
    out.extend_from_slice(br#","rows":["#);
    for (i, object) in objects.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &row(&columns, object, now));
    }
    out.extend_from_slice(b"]}");
}

/// The scale paths of `info`'s version, when it is a custom kind with a
/// `scale` subresource.
pub fn scale_paths(info: &KindInfo) -> Option<ScalePaths> {
    let Kind::Custom(kind) = info.kind else {
        return None;
    };
    let served = served_definition(kind)?;
    served.definition.version(info.version)?.scale.clone()
}

fn at<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |v, field| v.get(field.as_str()))
}

/// The `autoscaling/v1` Scale of `object` (as JSON, as the API answers
/// it) by `paths`: replicas 0 where a path holds none.
pub fn scale_of(paths: &ScalePaths, object: &Value) -> Value {
    let meta = &object["metadata"];
    let count = |path: &[String]| at(object, path).and_then(Value::as_i64).unwrap_or(0);
    let selector = paths
        .label_selector
        .as_ref()
        .and_then(|p| at(object, p))
        .and_then(Value::as_str)
        .unwrap_or("");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": count(&paths.spec_replicas)},
        "status": {
            "replicas": count(&paths.status_replicas),
            "selector": selector,
        },
    })
}

/// Sets `replicas` at the `specReplicasPath` of `object` (a custom kind's
/// generic object), making the objects on the way.
pub fn set_replicas(paths: &ScalePaths, object: &mut Object, replicas: i32) -> bool {
    let Some(Body::Generic(g)) = object.kind.as_mut() else {
        return false;
    };
    let Some((last, parents)) = paths.spec_replicas.split_last() else {
        return false;
    };
    let mut content = Value::Object(generic::content(g));
    let mut place = &mut content;
    for field in parents {
        let Some(map) = place.as_object_mut() else {
            return false;
        };
        let next = map
            .entry(field.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if next.is_null() {
            *next = Value::Object(Map::new());
        }
        place = next;
    }
    let Some(map) = place.as_object_mut() else {
        return false;
    };
    map.insert(last.clone(), Value::from(replicas));
    if let Value::Object(content) = content {
        generic::set_content(g, &content);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::custom_resources::json_path::JsonPath;

    fn column(name: &str, value_type: &str, path: &str) -> PrinterColumn {
        PrinterColumn {
            name: name.into(),
            value_type: value_type.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: JsonPath::parse(path).unwrap(),
        }
    }

    #[test]
    fn cells_are_typed_as_the_columns_say() {
        let now = OffsetDateTime::parse("2024-01-01T01:00:00Z", &Rfc3339).unwrap();
        let object = json!({
            "metadata": {"name": "w", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "size": "big", "on": true, "ratio": 1.5, "nested": {"a": 1}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        // No columns: NAME and AGE.
        assert_eq!(cells(&[], &object, now), [json!("w"), json!("60m")]);
        let columns = [
            column("Replicas", "integer", ".spec.replicas"),
            column("Size", "string", ".spec.size"),
            column("On", "boolean", ".spec.on"),
            column("Ratio", "number", ".spec.ratio"),
            column("Nested", "string", ".spec.nested"),
            column(
                "Ready",
                "string",
                r#".status.conditions[?(@.type=="Ready")].status"#,
            ),
            column("Created", "date", ".metadata.creationTimestamp"),
            column("Missing", "string", ".spec.none"),
            column("Wrong", "integer", ".spec.size"),
        ];
        assert_eq!(
            cells(&columns, &object, now),
            [
                json!("w"),
                json!(3),
                json!("big"),
                json!(true),
                json!(1.5),
                json!(r#"{"a":1}"#),
                json!("True"),
                json!("60m"),
                Value::Null,
                Value::Null,
            ]
        );
        assert_eq!(definitions(&columns).len(), columns.len() + 1);
        assert_eq!(definitions(&[])[1]["name"], "Age");
    }

    #[test]
    fn scale_reads_and_writes_the_definitions_paths() {
        let paths = ScalePaths {
            spec_replicas: vec!["spec".into(), "size".into()],
            status_replicas: vec!["status".into(), "count".into()],
            label_selector: Some(vec!["status".into(), "selector".into()]),
        };
        let value = json!({
            "metadata": {"name": "w"},
            "spec": {"size": 2},
            "status": {"count": 1, "selector": "app=w"},
        });
        let scale = scale_of(&paths, &value);
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["replicas"], 1);
        assert_eq!(scale["status"]["selector"], "app=w");
        let mut object = Object {
            kind: Some(Body::Generic(skiff_proto::v1::GenericObject {
                api_version: "example.com/v1".into(),
                kind: "Widget".into(),
                metadata: None,
                content: br#"{"status":{"count":1}}"#.to_vec(),
            })),
        };
        assert!(set_replicas(&paths, &mut object, 5));
        let Some(Body::Generic(g)) = &object.kind else {
            panic!("generic");
        };
        assert_eq!(generic::content(g)["spec"]["size"], 5);
        assert_eq!(generic::content(g)["status"]["count"], 1);
    }
}
