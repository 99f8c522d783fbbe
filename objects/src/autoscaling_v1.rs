//! HorizontalPodAutoscalers as `autoscaling/v1` serves them: the objects
//! the store holds as `autoscaling/v2`, converted on the way out ([`to_v1`])
//! and on the way in ([`to_v2`]) as kube-apiserver converts them (kubernetes
//! `pkg/apis/autoscaling/v1/conversion.go`), on Kubernetes JSON.
//!
//! v1 names one metric, `spec.targetCPUUtilizationPercentage` (v2's `cpu`
//! `Resource` metric with a `Utilization` target), and one current value,
//! `status.currentCPUUtilizationPercentage`; `scaleTargetRef`, the replica
//! bounds and the rest of the status are the same fields in both. What
//! else a v2 object holds travels in annotations, so that a v1 client's
//! read-modify-write (kubectl 1.20's `edit`, `apply`, `replace`) keeps it:
//!
//! - `autoscaling.alpha.kubernetes.io/metrics`: the other metrics, as v1's
//!   `MetricSpec`s (`targetAverageUtilization`, `metricName`, ...);
//! - `.../current-metrics`: every current metric, as v1's `MetricStatus`es;
//! - `.../behavior`: `spec.behavior`, as Go writes Kubernetes' internal
//!   type, which has no JSON tags (`ScaleUp`, `StabilizationWindowSeconds`,
//!   ...); read back ignoring case, and left out when it is malformed, as
//!   kube-apiserver reads it;
//! - `.../conditions`: `status.conditions`.
//!
//! Written at v1, the annotations become fields again and are dropped: a
//! stored autoscaler never carries them ([`drop_round_trip_annotations`],
//! which v2 writes go through too, as in kube-apiserver). The metrics read
//! from the annotation come first and the CPU target last, as Kubernetes
//! orders them. A v1 write's problems are named by v1's fields: its CPU
//! target is checked here ([`check`]), and what v2's validation finds in a
//! field v1 carries in an annotation is named by that annotation
//! ([`served_cause`]).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::autoscaling::{quantity, DEFAULT_CPU_UTILIZATION};

/// The version this module serves.
pub const API_VERSION: &str = "autoscaling/v1";
/// The version the store holds autoscalers at.
pub const STORED_API_VERSION: &str = "autoscaling/v2";
/// The metrics besides the CPU utilization target.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Every current metric, the CPU utilization's included.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// `spec.behavior`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// `status.conditions`.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// The annotations kube-apiserver drops from every autoscaler it decodes:
/// the four above, and the two its older versions carry a behavior's
/// tolerances in.
const ROUND_TRIP_ANNOTATIONS: [&str; 6] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
    CONDITIONS_ANNOTATION,
    "autoscaling.alpha.kubernetes.io/scale-up-tolerance",
    "autoscaling.alpha.kubernetes.io/scale-down-tolerance",
];

/// The v1 object's fields besides spec and status that the stored object
/// keeps.
const ENVELOPE: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// An annotation of a v1 object written that does not hold what the
/// conversion reads from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.annotations[{annotation}]: Invalid value: {reason}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub reason: String,
}

impl AnnotationError {
    /// The field, as Kubernetes names an annotation:
    /// `metadata.annotations[autoscaling.alpha.kubernetes.io/metrics]`.
    pub fn field(&self) -> String {
        annotation_field(self.annotation)
    }

    /// The problem, as a validation cause words it.
    pub fn message(&self) -> String {
        format!("Invalid value: {}", self.reason)
    }
}

fn annotation_field(annotation: &str) -> String {
    format!("metadata.annotations[{annotation}]")
}

/// A stored (`autoscaling/v2`) autoscaler as `autoscaling/v1` serves it
/// (`Convert_autoscaling_HorizontalPodAutoscaler_To_v1_...`); its
/// `apiVersion` is left as it is, for the caller to set. The status is
/// always there, with its two replica counts, as Go writes it.
pub fn to_v1(stored: Value) -> Value {
    let Value::Object(mut object) = stored else {
        return stored;
    };
    let spec = take_object(&mut object, "spec");
    let status = take_object(&mut object, "status");
    let metrics = items(&spec, "metrics");

    let mut v1_spec = Map::new();
    put(&mut v1_spec, "scaleTargetRef", &spec["scaleTargetRef"]);
    put(&mut v1_spec, "minReplicas", &spec["minReplicas"]);
    v1_spec.insert("maxReplicas".into(), number_or_zero(&spec["maxReplicas"]));
    if let Some(target) = metrics.iter().find_map(cpu_utilization_target) {
        v1_spec.insert("targetCPUUtilizationPercentage".into(), target.clone());
    }

    let current = items(&status, "currentMetrics");
    let mut v1_status = Map::new();
    put(
        &mut v1_status,
        "observedGeneration",
        &status["observedGeneration"],
    );
    put(&mut v1_status, "lastScaleTime", &status["lastScaleTime"]);
    v1_status.insert(
        "currentReplicas".into(),
        number_or_zero(&status["currentReplicas"]),
    );
    v1_status.insert(
        "desiredReplicas".into(),
        number_or_zero(&status["desiredReplicas"]),
    );
    // Kubernetes' loop has no `break`: the last CPU utilization counts.
    if let Some(utilization) = current.iter().rev().find_map(cpu_current_utilization) {
        v1_status.insert(
            "currentCPUUtilizationPercentage".into(),
            utilization.clone(),
        );
    }

    let mut carried: Vec<(&str, String)> = Vec::new();
    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| cpu_utilization_target(m).is_none())
        .map(metric_to_v1)
        .collect();
    if !others.is_empty() {
        carried.push((METRICS_ANNOTATION, Value::Array(others).to_string()));
    }
    if !current.is_empty() {
        let statuses: Vec<Value> = current.iter().map(metric_status_to_v1).collect();
        carried.push((
            CURRENT_METRICS_ANNOTATION,
            Value::Array(statuses).to_string(),
        ));
    }
    if spec["behavior"].is_object() {
        carried.push((
            BEHAVIOR_ANNOTATION,
            behavior_to_go(&spec["behavior"]).to_string(),
        ));
    }
    let conditions = items(&status, "conditions");
    if !conditions.is_empty() {
        carried.push((
            CONDITIONS_ANNOTATION,
            Value::Array(conditions.to_vec()).to_string(),
        ));
    }
    set_annotations(&mut object, carried);

    object.insert("spec".into(), Value::Object(v1_spec));
    object.insert("status".into(), Value::Object(v1_status));
    Value::Object(object)
}

/// An autoscaler written at `autoscaling/v1` (Kubernetes JSON, checked
/// against v1's schema) as the store holds it, at `autoscaling/v2`
/// (`Convert_v1_HorizontalPodAutoscaler_To_autoscaling_...`): the CPU
/// target as a metric after those of the metrics annotation, 80% when
/// there is neither (the default v1's controller once applied), the other
/// annotations' fields back in place and the annotations dropped. Fields
/// v1 does not have are left out. A metrics, current metrics or conditions
/// annotation that is not a JSON list of objects is refused; a behavior
/// annotation that is malformed is left out.
pub fn to_v2(served: Value) -> Result<Value, AnnotationError> {
    let Value::Object(mut object) = served else {
        return Ok(served);
    };
    object.retain(|field, _| {
        ENVELOPE.contains(&field.as_str()) || field == "spec" || field == "status"
    });
    let had_status = object.contains_key("status");
    let spec = take_object(&mut object, "spec");
    let status = take_object(&mut object, "status");
    let annotations = annotations_of(&object);

    let mut v2_spec = Map::new();
    put(&mut v2_spec, "scaleTargetRef", &spec["scaleTargetRef"]);
    put(&mut v2_spec, "minReplicas", &spec["minReplicas"]);
    put(&mut v2_spec, "maxReplicas", &spec["maxReplicas"]);
    let mut metrics: Vec<Value> = match annotations.get(METRICS_ANNOTATION) {
        Some(text) => list_annotation(METRICS_ANNOTATION, text, "autoscaling/v1 MetricSpecs")?
            .iter()
            .map(metric_from_v1)
            .collect(),
        None => Vec::new(),
    };
    if let Some(target) = present(&spec["targetCPUUtilizationPercentage"]) {
        metrics.push(cpu_metric(target.clone()));
    }
    if metrics.is_empty() {
        metrics.push(cpu_metric(Value::from(DEFAULT_CPU_UTILIZATION)));
    }
    v2_spec.insert("metrics".into(), Value::Array(metrics));
    if let Some(behavior) = annotations
        .get(BEHAVIOR_ANNOTATION)
        .and_then(|text| behavior_from_go(text.as_str()))
    {
        v2_spec.insert("behavior".into(), behavior);
    }

    let mut v2_status = Map::new();
    for field in [
        "observedGeneration",
        "lastScaleTime",
        "currentReplicas",
        "desiredReplicas",
    ] {
        put(&mut v2_status, field, &status[field]);
    }
    match annotations.get(CURRENT_METRICS_ANNOTATION) {
        // Kubernetes: the annotation's have more to say than the field.
        Some(text) => {
            let current = list_annotation(
                CURRENT_METRICS_ANNOTATION,
                text,
                "autoscaling/v1 MetricStatuses",
            )?;
            let current = current.iter().map(metric_status_from_v1).collect();
            v2_status.insert("currentMetrics".into(), Value::Array(current));
        }
        None => {
            if let Some(utilization) = present(&status["currentCPUUtilizationPercentage"]) {
                let current = json!([{
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": utilization}},
                }]);
                v2_status.insert("currentMetrics".into(), current);
            }
        }
    }
    if let Some(text) = annotations.get(CONDITIONS_ANNOTATION) {
        let conditions = list_annotation(
            CONDITIONS_ANNOTATION,
            text,
            "autoscaling/v1 HorizontalPodAutoscalerConditions",
        )?;
        let conditions = conditions.iter().map(condition).collect();
        v2_status.insert("conditions".into(), Value::Array(conditions));
    }

    set_annotations(&mut object, Vec::new());
    object.insert("apiVersion".into(), Value::from(STORED_API_VERSION));
    object.insert("spec".into(), Value::Object(v2_spec));
    if had_status || !v2_status.is_empty() {
        object.insert("status".into(), Value::Object(v2_status));
    }
    Ok(Value::Object(object))
}

/// Problems `(field, reason)` of an autoscaler written at v1 in the one
/// field v1 names differently from v2: its CPU target, which v2's
/// validation would report as `spec.metrics[N].resource.target...`.
pub fn check(served: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let target = &served["spec"]["targetCPUUtilizationPercentage"];
    if let Some(percent) = target.as_i64().filter(|p| *p < 1) {
        problems.push((
            "spec.targetCPUUtilizationPercentage".to_owned(),
            format!("Invalid value: {percent}: must be greater than 0"),
        ));
    }
    problems
}

/// A problem v2's validation found in an autoscaler written at v1 (its
/// field and message), named by the v1 field it came from: what v1
/// carries in an annotation is that annotation's, with v2's field kept in
/// the message; the fields both versions have are named alike. (The CPU
/// target, the one v2 metric v1 names, is [`check`]ed before.)
pub fn served_cause(field: &str, message: &str) -> (String, String) {
    const CARRIED: [(&str, &str); 4] = [
        ("spec.metrics", METRICS_ANNOTATION),
        ("spec.behavior", BEHAVIOR_ANNOTATION),
        ("status.currentMetrics", CURRENT_METRICS_ANNOTATION),
        ("status.conditions", CONDITIONS_ANNOTATION),
    ];
    for (v2_field, annotation) in CARRIED {
        if within(field, v2_field) {
            return (annotation_field(annotation), format!("{field}: {message}"));
        }
    }
    (field.to_owned(), message.to_owned())
}

/// Drops the annotations the conversion carries fields in (what
/// kube-apiserver does to every autoscaler it decodes, whatever its
/// version: they are never stored).
pub fn drop_round_trip_annotations(annotations: &mut BTreeMap<String, String>) {
    for annotation in ROUND_TRIP_ANNOTATIONS {
        annotations.remove(annotation);
    }
}

/// Whether `field` is `root` or lies inside it (`root.x`, `root[0]`,
/// `root.0` as schema errors write list items).
fn within(field: &str, root: &str) -> bool {
    field
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// The member `field` of `object` taken out, as an object (empty when it
/// is missing or not an object).
fn take_object(object: &mut Map<String, Value>, field: &str) -> Value {
    match object.remove(field) {
        Some(Value::Object(map)) => Value::Object(map),
        _ => Value::Object(Map::new()),
    }
}

/// The list `field` of `object`, empty when missing.
fn items<'v>(object: &'v Value, field: &str) -> &'v [Value] {
    object[field].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `value` unless it is null (what indexing a missing member gives).
fn present(value: &Value) -> Option<&Value> {
    (!value.is_null()).then_some(value)
}

/// Sets `field` to `value` when it is there.
fn put(map: &mut Map<String, Value>, field: &str, value: &Value) {
    if let Some(value) = present(value) {
        map.insert(field.to_owned(), value.clone());
    }
}

/// A Go `int32` field: written even when zero.
fn number_or_zero(value: &Value) -> Value {
    present(value).cloned().unwrap_or_else(|| Value::from(0))
}

/// The object's annotations, those that are text.
fn annotations_of(object: &Map<String, Value>) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|annotations| {
            annotations
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces the object's round-trip annotations with `carried`; an
/// annotation map left empty is removed, as Go leaves it out.
fn set_annotations(object: &mut Map<String, Value>, carried: Vec<(&str, String)>) {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        for annotation in ROUND_TRIP_ANNOTATIONS {
            annotations.remove(annotation);
        }
    }
    if !carried.is_empty() {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(annotations) = annotations.as_object_mut() {
            for (annotation, text) in carried {
                annotations.insert(annotation.to_owned(), Value::from(text));
            }
        }
    }
    if metadata
        .get("annotations")
        .is_some_and(|a| a.as_object().is_some_and(Map::is_empty))
    {
        metadata.remove("annotations");
    }
}

/// An annotation that should hold a JSON list of objects (`what`), read.
fn list_annotation(
    annotation: &'static str,
    text: &str,
    what: &str,
) -> Result<Vec<Value>, AnnotationError> {
    let refused = |detail: String| AnnotationError {
        annotation,
        reason: format!("must be a JSON list of {what}: {detail}"),
    };
    match serde_json::from_str::<Value>(text) {
        Err(e) => Err(refused(e.to_string())),
        // Go reads `null` as no list.
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(Value::Array(list)) => match list.iter().position(|item| !item.is_object()) {
            Some(at) => Err(refused(format!("item {at} is not an object"))),
            None => Ok(list),
        },
        Ok(_) => Err(refused("it is not a list".to_owned())),
    }
}

/// A v2 metric's CPU utilization target, when it is the `cpu` `Resource`
/// metric with one (what v1's `targetCPUUtilizationPercentage` is).
fn cpu_utilization_target(metric: &Value) -> Option<&Value> {
    if metric["type"] != "Resource" || metric["resource"]["name"] != "cpu" {
        return None;
    }
    present(&metric["resource"]["target"]["averageUtilization"])
}

/// A v2 current metric's CPU utilization, when it is the `cpu` `Resource`
/// metric's.
fn cpu_current_utilization(metric: &Value) -> Option<&Value> {
    if metric["type"] != "Resource" || metric["resource"]["name"] != "cpu" {
        return None;
    }
    present(&metric["resource"]["current"]["averageUtilization"])
}

/// v2's metric for v1's CPU target `percent`.
fn cpu_metric(percent: Value) -> Value {
    json!({
        "type": "Resource",
        "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": percent},
        },
    })
}

/// A v2 `MetricSpec` as v1's `MetricSpec` (the annotation's shape).
fn metric_to_v1(metric: &Value) -> Value {
    let mut out = Map::new();
    put(&mut out, "type", &metric["type"]);
    if let Some(source) = present(&metric["object"]) {
        let (identity, target) = (&source["metric"], &source["target"]);
        let mut v1 = Map::new();
        put(&mut v1, "target", &source["describedObject"]);
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "targetValue", &target["value"]);
        put(&mut v1, "selector", &identity["selector"]);
        put(&mut v1, "averageValue", &target["averageValue"]);
        out.insert("object".into(), Value::Object(v1));
    }
    if let Some(source) = present(&metric["pods"]) {
        let (identity, target) = (&source["metric"], &source["target"]);
        let mut v1 = Map::new();
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "targetAverageValue", &target["averageValue"]);
        put(&mut v1, "selector", &identity["selector"]);
        out.insert("pods".into(), Value::Object(v1));
    }
    for field in ["resource", "containerResource"] {
        if let Some(source) = present(&metric[field]) {
            let target = &source["target"];
            let mut v1 = Map::new();
            put(&mut v1, "name", &source["name"]);
            put(
                &mut v1,
                "targetAverageUtilization",
                &target["averageUtilization"],
            );
            put(&mut v1, "targetAverageValue", &target["averageValue"]);
            if field == "containerResource" {
                put(&mut v1, "container", &source["container"]);
            }
            out.insert(field.into(), Value::Object(v1));
        }
    }
    if let Some(source) = present(&metric["external"]) {
        let (identity, target) = (&source["metric"], &source["target"]);
        let mut v1 = Map::new();
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "metricSelector", &identity["selector"]);
        put(&mut v1, "targetValue", &target["value"]);
        put(&mut v1, "targetAverageValue", &target["averageValue"]);
        out.insert("external".into(), Value::Object(v1));
    }
    Value::Object(out)
}

/// v1's `MetricSpec` (from the annotation) as v2's, each target typed as
/// Kubernetes types it from what is set. An object metric's `targetValue`
/// of zero beside an `averageValue` is left out: it is what v1 writes for
/// a v2 target without a value (Go's quantity is not a pointer there), and
/// v2's validation refuses a zero value.
fn metric_from_v1(metric: &Value) -> Value {
    let mut out = Map::new();
    put(&mut out, "type", &metric["type"]);
    if let Some(source) = present(&metric["object"]) {
        let average = &source["averageValue"];
        let value = present(&source["targetValue"])
            .filter(|v| average.is_null() || !is_zero_quantity(v))
            .cloned()
            .unwrap_or(Value::Null);
        let kind = if average.is_null() {
            "Value"
        } else {
            "AverageValue"
        };
        let mut v2 = Map::new();
        put(&mut v2, "describedObject", &reference(&source["target"]));
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["selector"]),
        );
        v2.insert(
            "target".into(),
            target(kind, &[("value", &value), ("averageValue", average)]),
        );
        out.insert("object".into(), Value::Object(v2));
    }
    if let Some(source) = present(&metric["pods"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["selector"]),
        );
        let average = &source["targetAverageValue"];
        v2.insert(
            "target".into(),
            target("AverageValue", &[("averageValue", average)]),
        );
        out.insert("pods".into(), Value::Object(v2));
    }
    for field in ["resource", "containerResource"] {
        if let Some(source) = present(&metric[field]) {
            let utilization = &source["targetAverageUtilization"];
            let average = &source["targetAverageValue"];
            let kind = if utilization.is_null() {
                "AverageValue"
            } else {
                "Utilization"
            };
            let mut v2 = Map::new();
            put(&mut v2, "name", &source["name"]);
            if field == "containerResource" {
                put(&mut v2, "container", &source["container"]);
            }
            let set = [
                ("averageUtilization", utilization),
                ("averageValue", average),
            ];
            v2.insert("target".into(), target(kind, &set));
            out.insert(field.into(), Value::Object(v2));
        }
    }
    if let Some(source) = present(&metric["external"]) {
        let value = &source["targetValue"];
        let average = &source["targetAverageValue"];
        let kind = if value.is_null() {
            "AverageValue"
        } else {
            "Value"
        };
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["metricSelector"]),
        );
        v2.insert(
            "target".into(),
            target(kind, &[("value", value), ("averageValue", average)]),
        );
        out.insert("external".into(), Value::Object(v2));
    }
    Value::Object(out)
}

/// A v2 `MetricStatus` as v1's `MetricStatus` (the annotation's shape).
fn metric_status_to_v1(metric: &Value) -> Value {
    let mut out = Map::new();
    put(&mut out, "type", &metric["type"]);
    if let Some(source) = present(&metric["object"]) {
        let (identity, current) = (&source["metric"], &source["current"]);
        let mut v1 = Map::new();
        put(&mut v1, "target", &source["describedObject"]);
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "currentValue", &current["value"]);
        put(&mut v1, "selector", &identity["selector"]);
        put(&mut v1, "averageValue", &current["averageValue"]);
        out.insert("object".into(), Value::Object(v1));
    }
    if let Some(source) = present(&metric["pods"]) {
        let (identity, current) = (&source["metric"], &source["current"]);
        let mut v1 = Map::new();
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "currentAverageValue", &current["averageValue"]);
        put(&mut v1, "selector", &identity["selector"]);
        out.insert("pods".into(), Value::Object(v1));
    }
    for field in ["resource", "containerResource"] {
        if let Some(source) = present(&metric[field]) {
            let current = &source["current"];
            let mut v1 = Map::new();
            put(&mut v1, "name", &source["name"]);
            put(
                &mut v1,
                "currentAverageUtilization",
                &current["averageUtilization"],
            );
            put(&mut v1, "currentAverageValue", &current["averageValue"]);
            if field == "containerResource" {
                put(&mut v1, "container", &source["container"]);
            }
            out.insert(field.into(), Value::Object(v1));
        }
    }
    if let Some(source) = present(&metric["external"]) {
        let (identity, current) = (&source["metric"], &source["current"]);
        let mut v1 = Map::new();
        put(&mut v1, "metricName", &identity["name"]);
        put(&mut v1, "metricSelector", &identity["selector"]);
        put(&mut v1, "currentValue", &current["value"]);
        put(&mut v1, "currentAverageValue", &current["averageValue"]);
        out.insert("external".into(), Value::Object(v1));
    }
    Value::Object(out)
}

/// v1's `MetricStatus` (from the annotation) as v2's.
fn metric_status_from_v1(metric: &Value) -> Value {
    let mut out = Map::new();
    put(&mut out, "type", &metric["type"]);
    if let Some(source) = present(&metric["object"]) {
        let mut v2 = Map::new();
        put(&mut v2, "describedObject", &reference(&source["target"]));
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["selector"]),
        );
        let set = [
            ("value", &source["currentValue"]),
            ("averageValue", &source["averageValue"]),
        ];
        v2.insert("current".into(), fields(&set));
        out.insert("object".into(), Value::Object(v2));
    }
    if let Some(source) = present(&metric["pods"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["selector"]),
        );
        let set = [("averageValue", &source["currentAverageValue"])];
        v2.insert("current".into(), fields(&set));
        out.insert("pods".into(), Value::Object(v2));
    }
    for field in ["resource", "containerResource"] {
        if let Some(source) = present(&metric[field]) {
            let mut v2 = Map::new();
            put(&mut v2, "name", &source["name"]);
            if field == "containerResource" {
                put(&mut v2, "container", &source["container"]);
            }
            let set = [
                ("averageUtilization", &source["currentAverageUtilization"]),
                ("averageValue", &source["currentAverageValue"]),
            ];
            v2.insert("current".into(), fields(&set));
            out.insert(field.into(), Value::Object(v2));
        }
    }
    if let Some(source) = present(&metric["external"]) {
        let mut v2 = Map::new();
        v2.insert(
            "metric".into(),
            identifier(&source["metricName"], &source["metricSelector"]),
        );
        let set = [
            ("value", &source["currentValue"]),
            ("averageValue", &source["currentAverageValue"]),
        ];
        v2.insert("current".into(), fields(&set));
        out.insert("external".into(), Value::Object(v2));
    }
    Value::Object(out)
}

/// v2's `MetricIdentifier`: a metric's name and selector.
fn identifier(name: &Value, selector: &Value) -> Value {
    fields(&[("name", name), ("selector", &label_selector(selector))])
}

// What an annotation holds is read as Go reads it into its types: members
// the type does not have are left behind (an object copied whole would
// carry them into the stored object). Anything but an object is passed on
// for the stored version's schema to refuse, naming it.

/// A `CrossVersionObjectReference`.
fn reference(value: &Value) -> Value {
    only(value, &["kind", "name", "apiVersion"])
}

/// A `LabelSelector`.
fn label_selector(value: &Value) -> Value {
    only(value, &["matchLabels", "matchExpressions"])
}

/// A `HorizontalPodAutoscalerCondition`.
fn condition(value: &Value) -> Value {
    only(
        value,
        &["type", "status", "lastTransitionTime", "reason", "message"],
    )
}

/// `value`'s members named in `known`, when it is an object.
fn only(value: &Value, known: &[&str]) -> Value {
    match value {
        Value::Object(map) => {
            let set: Vec<(&str, &Value)> = known
                .iter()
                .filter_map(|field| Some((*field, map.get(*field)?)))
                .collect();
            fields(&set)
        }
        other => other.clone(),
    }
}

/// v2's `MetricTarget` of type `kind` with the values that are set.
fn target(kind: &str, set: &[(&str, &Value)]) -> Value {
    let mut target = Map::new();
    target.insert("type".into(), Value::from(kind));
    for (field, value) in set {
        put(&mut target, field, value);
    }
    Value::Object(target)
}

/// An object of the members of `set` that are there.
fn fields(set: &[(&str, &Value)]) -> Value {
    let mut out = Map::new();
    for (field, value) in set {
        put(&mut out, field, value);
    }
    Value::Object(out)
}

fn is_zero_quantity(value: &Value) -> bool {
    matches!(quantity(value), Some(Ok(q)) if q.milli() == 0)
}

/// `spec.behavior` as Go's `json.Marshal` writes Kubernetes' internal
/// `HorizontalPodAutoscalerBehavior`: Go's field names, unset pointers as
/// `null`.
fn behavior_to_go(behavior: &Value) -> Value {
    json!({
        "ScaleUp": rules_to_go(&behavior["scaleUp"]),
        "ScaleDown": rules_to_go(&behavior["scaleDown"]),
    })
}

fn rules_to_go(rules: &Value) -> Value {
    if !rules.is_object() {
        return Value::Null;
    }
    let policies = match rules["policies"].as_array() {
        Some(policies) => policies
            .iter()
            .map(|policy| {
                json!({
                    "Type": policy["type"].clone(),
                    "Value": number_or_zero(&policy["value"]),
                    "PeriodSeconds": number_or_zero(&policy["periodSeconds"]),
                })
            })
            .collect(),
        None => Value::Null,
    };
    json!({
        "StabilizationWindowSeconds": rules["stabilizationWindowSeconds"].clone(),
        "SelectPolicy": rules["selectPolicy"].clone(),
        "Policies": policies,
        "Tolerance": rules["tolerance"].clone(),
    })
}

/// The behavior annotation read back as v2's `spec.behavior`, as
/// kube-apiserver reads it: member names matched ignoring case, and
/// nothing when the text does not read as the internal type (a member of
/// the wrong type) or sets neither direction.
fn behavior_from_go(text: &str) -> Option<Value> {
    let Ok(Value::Object(go)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let mut behavior = Map::new();
    for (go_name, name) in [("ScaleUp", "scaleUp"), ("ScaleDown", "scaleDown")] {
        if let Some(rules) = member(&go, go_name) {
            behavior.insert(name.to_owned(), rules_from_go(rules)?);
        }
    }
    (!behavior.is_empty()).then_some(Value::Object(behavior))
}

fn rules_from_go(go: &Value) -> Option<Value> {
    let go = go.as_object()?;
    let mut rules = Map::new();
    if let Some(window) = member(go, "StabilizationWindowSeconds") {
        rules.insert("stabilizationWindowSeconds".into(), int32(window)?);
    }
    if let Some(select) = member(go, "SelectPolicy") {
        rules.insert("selectPolicy".into(), Value::from(select.as_str()?));
    }
    if let Some(policies) = member(go, "Policies") {
        let policies = policies
            .as_array()?
            .iter()
            .map(policy_from_go)
            .collect::<Option<Vec<Value>>>()?;
        rules.insert("policies".into(), Value::Array(policies));
    }
    if let Some(tolerance) = member(go, "Tolerance") {
        if !(tolerance.is_string() || tolerance.is_number()) {
            return None;
        }
        rules.insert("tolerance".into(), tolerance.clone());
    }
    Some(Value::Object(rules))
}

fn policy_from_go(go: &Value) -> Option<Value> {
    let go = go.as_object()?;
    let mut policy = Map::new();
    if let Some(kind) = member(go, "Type") {
        policy.insert("type".into(), Value::from(kind.as_str()?));
    }
    for (go_name, name) in [("Value", "value"), ("PeriodSeconds", "periodSeconds")] {
        if let Some(number) = member(go, go_name) {
            policy.insert(name.into(), int32(number)?);
        }
    }
    Some(Value::Object(policy))
}

/// A member as Go's `encoding/json` finds it: the exact name, else one
/// equal ignoring case; `null` counts as missing.
fn member<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object
        .get(name)
        .or_else(|| {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        })
        .filter(|value| !value.is_null())
}

/// A JSON number that fits Go's `int32`.
fn int32(value: &Value) -> Option<Value> {
    let number = value.as_i64().filter(|n| i32::try_from(*n).is_ok())?;
    Some(Value::from(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kubectl 1.20's `autoscale --cpu-percent=50 --min=1 --max=3`
    /// creates.
    fn kubectl_autoscale() -> Value {
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetCPUUtilizationPercentage": 50,
            },
            "status": {"currentReplicas": 0, "desiredReplicas": 0},
        })
    }

    /// A stored autoscaler with what v1 cannot name: a memory metric
    /// before its CPU one, a behavior, current metrics and conditions.
    fn rich_v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "web", "namespace": "shop", "resourceVersion": "42",
                "annotations": {"team": "shop"},
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "200Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "requests"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "Object", "object": {
                        "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                        "metric": {"name": "hits", "selector": {"matchLabels": {"path": "/"}}},
                        "target": {"type": "AverageValue", "averageValue": "30"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"},
                        "target": {"type": "Value", "value": "100"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                        "target": {"type": "Utilization", "averageUtilization": 70}}},
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 60}}},
                ],
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                    },
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "selectPolicy": "Max",
                        "policies": [
                            {"type": "Pods", "value": 4, "periodSeconds": 15},
                            {"type": "Percent", "value": 100, "periodSeconds": 15},
                        ],
                        "tolerance": "50m",
                    },
                },
            },
            "status": {
                "observedGeneration": 3,
                "lastScaleTime": "2026-11-30T12:00:00Z",
                "currentReplicas": 4,
                "desiredReplicas": 5,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "memory",
                        "current": {"averageValue": "150Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 75, "averageValue": "75m"}}},
                ],
                "conditions": [
                    {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                     "lastTransitionTime": "2026-11-30T11:00:00Z", "message": "recommended size matches"},
                    {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
                     "lastTransitionTime": "2026-11-30T11:00:00Z", "message": "the HPA was able to compute"},
                ],
            },
        })
    }

    fn annotation(object: &Value, name: &str) -> Value {
        let text = object["metadata"]["annotations"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no annotation {name}: {object}"));
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn kubectl_autoscales_cpu_percent_is_v2s_cpu_utilization_metric() {
        let stored = to_v2(kubectl_autoscale()).unwrap();
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert_eq!(stored["spec"]["minReplicas"], 1);
        assert_eq!(stored["spec"]["maxReplicas"], 3);
        assert_eq!(stored["spec"]["scaleTargetRef"]["name"], "web");
        assert!(stored["spec"]
            .get("targetCPUUtilizationPercentage")
            .is_none());
        assert!(stored["metadata"].get("annotations").is_none(), "{stored}");

        let served = to_v1(stored);
        assert_eq!(served["spec"], kubectl_autoscale()["spec"]);
        assert_eq!(
            served["status"],
            json!({"currentReplicas": 0, "desiredReplicas": 0})
        );
        assert!(served["metadata"].get("annotations").is_none(), "{served}");
    }

    #[test]
    fn a_v1_autoscaler_without_a_target_gets_kubernetes_80_percent() {
        let mut v1 = kubectl_autoscale();
        v1["spec"]
            .as_object_mut()
            .unwrap()
            .remove("targetCPUUtilizationPercentage");
        let stored = to_v2(v1).unwrap();
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
    }

    #[test]
    fn what_v1_cannot_name_is_carried_in_kubernetes_annotations() {
        let served = to_v1(rich_v2());
        let spec = &served["spec"];
        assert_eq!(spec["targetCPUUtilizationPercentage"], 60);
        assert_eq!(spec["minReplicas"], 2);
        assert_eq!(spec["maxReplicas"], 10);
        assert!(spec.get("metrics").is_none() && spec.get("behavior").is_none());
        let status = &served["status"];
        assert_eq!(status["currentCPUUtilizationPercentage"], 75);
        assert_eq!(status["currentReplicas"], 4);
        assert_eq!(status["desiredReplicas"], 5);
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["lastScaleTime"], "2026-11-30T12:00:00Z");
        assert!(status.get("conditions").is_none() && status.get("currentMetrics").is_none());
        // The user's own annotation stays.
        assert_eq!(served["metadata"]["annotations"]["team"], "shop");

        // The other metrics, as v1's MetricSpecs; the CPU target is not
        // among them, the container's CPU is.
        let metrics = annotation(&served, METRICS_ANNOTATION);
        assert_eq!(metrics.as_array().unwrap().len(), 5, "{metrics}");
        assert_eq!(
            metrics[0],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "200Mi"}})
        );
        assert_eq!(
            metrics[1],
            json!({"type": "Pods", "pods": {"metricName": "requests", "targetAverageValue": "10"}})
        );
        assert_eq!(metrics[2]["object"]["target"]["kind"], "Ingress");
        assert_eq!(metrics[2]["object"]["metricName"], "hits");
        assert_eq!(metrics[2]["object"]["averageValue"], "30");
        assert_eq!(metrics[2]["object"]["selector"]["matchLabels"]["path"], "/");
        assert_eq!(
            metrics[3],
            json!({"type": "External", "external": {"metricName": "queue", "targetValue": "100"}})
        );
        assert_eq!(
            metrics[4]["containerResource"],
            json!({"name": "cpu", "container": "app", "targetAverageUtilization": 70})
        );

        let current = annotation(&served, CURRENT_METRICS_ANNOTATION);
        assert_eq!(
            current[1],
            json!({"type": "Resource", "resource": {"name": "cpu",
                "currentAverageUtilization": 75, "currentAverageValue": "75m"}})
        );
        let behavior = annotation(&served, BEHAVIOR_ANNOTATION);
        assert_eq!(behavior["ScaleDown"]["StabilizationWindowSeconds"], 0);
        assert_eq!(behavior["ScaleUp"]["Policies"][0]["Type"], "Pods");
        assert_eq!(behavior["ScaleUp"]["Policies"][0]["PeriodSeconds"], 15);
        assert_eq!(behavior["ScaleUp"]["Tolerance"], "50m");
        assert_eq!(behavior["ScaleDown"]["Tolerance"], Value::Null);
        let conditions = annotation(&served, CONDITIONS_ANNOTATION);
        assert_eq!(conditions, rich_v2()["status"]["conditions"]);
    }

    #[test]
    fn a_v1_read_modify_write_keeps_what_v1_cannot_name() {
        let mut served = to_v1(rich_v2());
        // What a v1 client edits: the fields it knows.
        served["spec"]["maxReplicas"] = json!(12);
        served["spec"]["targetCPUUtilizationPercentage"] = json!(65);
        let stored = to_v2(served).unwrap();

        let mut expected = rich_v2();
        expected["spec"]["maxReplicas"] = json!(12);
        // Kubernetes' order: the annotation's metrics, then the CPU target.
        expected["spec"]["metrics"][5]["resource"]["target"]["averageUtilization"] = json!(65);
        assert_eq!(stored["spec"], expected["spec"]);
        assert_eq!(stored["status"], expected["status"]);
        // The round-trip annotations are gone, the user's stays.
        assert_eq!(stored["metadata"]["annotations"], json!({"team": "shop"}));
        assert_eq!(stored["metadata"]["resourceVersion"], "42");

        // And once more: nothing moves.
        assert_eq!(to_v2(to_v1(stored.clone())).unwrap(), stored);
    }

    #[test]
    fn the_cpu_target_goes_last_as_in_kubernetes() {
        let mut first = rich_v2();
        let metrics = first["spec"]["metrics"].as_array_mut().unwrap();
        let cpu = metrics.pop().unwrap();
        metrics.insert(0, cpu.clone());
        let stored = to_v2(to_v1(first)).unwrap();
        assert_eq!(stored["spec"]["metrics"][5], cpu);
        assert_eq!(stored["spec"]["metrics"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn an_object_metric_with_an_average_keeps_no_zero_value() {
        // What Go writes for it: the non-pointer targetValue as "0".
        let v1_metric = json!({"type": "Object", "object": {
            "target": {"kind": "Ingress", "name": "main"}, "metricName": "hits",
            "targetValue": "0", "averageValue": "30"}});
        let v2 = metric_from_v1(&v1_metric);
        assert_eq!(
            v2["object"]["target"],
            json!({"type": "AverageValue", "averageValue": "30"})
        );
        let valued = json!({"type": "Object", "object": {
            "target": {"kind": "Ingress", "name": "main"}, "metricName": "hits", "targetValue": "5"}});
        assert_eq!(
            metric_from_v1(&valued)["object"]["target"],
            json!({"type": "Value", "value": "5"})
        );
    }

    #[test]
    fn the_behavior_annotation_is_read_as_go_reads_it() {
        let go = r#"{"scaleup": {"stabilizationwindowseconds": 30,
            "Policies": [{"type": "Pods", "VALUE": 2, "PeriodSeconds": 60}]}, "ScaleDown": null}"#;
        assert_eq!(
            behavior_from_go(go),
            Some(json!({"scaleUp": {"stabilizationWindowSeconds": 30,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}))
        );
        // Malformed or empty: no behavior, as kube-apiserver leaves it.
        for text in [
            "abc",
            "[]",
            "{}",
            r#"{"ScaleUp": null, "ScaleDown": null}"#,
            r#"{"ScaleUp": {"StabilizationWindowSeconds": "30"}}"#,
            r#"{"ScaleUp": {"Policies": [{"Value": 3000000000}]}}"#,
        ] {
            assert_eq!(behavior_from_go(text), None, "{text}");
        }
        let mut v1 = kubectl_autoscale();
        v1["metadata"]["annotations"] = json!({BEHAVIOR_ANNOTATION: "not json"});
        let stored = to_v2(v1).unwrap();
        assert!(stored["spec"].get("behavior").is_none());
        assert!(
            stored["metadata"].get("annotations").is_none(),
            "dropped too"
        );
    }

    #[test]
    fn a_malformed_metrics_annotation_is_refused_naming_it() {
        for (annotation, text) in [
            (METRICS_ANNOTATION, "{not json"),
            (METRICS_ANNOTATION, r#"{"type": "Pods"}"#),
            (CURRENT_METRICS_ANNOTATION, "[1]"),
            (CONDITIONS_ANNOTATION, r#""text""#),
        ] {
            let mut v1 = kubectl_autoscale();
            v1["metadata"]["annotations"] = json!({annotation: text});
            let e = to_v2(v1).unwrap_err();
            assert_eq!(e.annotation, annotation);
            assert_eq!(e.field(), format!("metadata.annotations[{annotation}]"));
            assert!(
                e.message()
                    .starts_with("Invalid value: must be a JSON list"),
                "{e}"
            );
        }
        let mut v1 = kubectl_autoscale();
        v1["metadata"]["annotations"] = json!({METRICS_ANNOTATION: "null"});
        assert!(to_v2(v1).is_ok(), "Go reads null as no list");
    }

    #[test]
    fn fields_v1_does_not_have_are_left_out() {
        let mut v1 = kubectl_autoscale();
        v1["spec"]["metrics"] = json!([{"type": "Pods"}]);
        v1["extra"] = json!(true);
        let stored = to_v2(v1).unwrap();
        assert_eq!(stored["spec"]["metrics"].as_array().unwrap().len(), 1);
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["name"], "cpu");
        assert!(stored.get("extra").is_none());
    }

    #[test]
    fn problems_are_named_by_v1s_fields() {
        let mut v1 = kubectl_autoscale();
        v1["spec"]["targetCPUUtilizationPercentage"] = json!(0);
        assert_eq!(
            check(&v1),
            [(
                "spec.targetCPUUtilizationPercentage".to_owned(),
                "Invalid value: 0: must be greater than 0".to_owned()
            )]
        );
        assert!(check(&kubectl_autoscale()).is_empty());
        assert_eq!(
            served_cause(
                "spec.maxReplicas",
                "Invalid value: 0: must be greater than 0"
            ),
            (
                "spec.maxReplicas".to_owned(),
                "Invalid value: 0: must be greater than 0".to_owned()
            )
        );
        let (field, message) = served_cause(
            "spec.metrics[0].pods.metric.name",
            "Required value: must specify a metric name",
        );
        assert_eq!(field, format!("metadata.annotations[{METRICS_ANNOTATION}]"));
        assert_eq!(
            message,
            "spec.metrics[0].pods.metric.name: Required value: must specify a metric name"
        );
        let (field, _) = served_cause("spec.behavior.scaleUp.policies", "Required value");
        assert_eq!(
            field,
            format!("metadata.annotations[{BEHAVIOR_ANNOTATION}]")
        );
        let (field, _) = served_cause("status.conditions.0.type", "invalid value");
        assert_eq!(
            field,
            format!("metadata.annotations[{CONDITIONS_ANNOTATION}]")
        );
        assert_eq!(served_cause("spec.metricsx", "m").0, "spec.metricsx");
    }

    #[test]
    fn round_trip_annotations_are_never_stored() {
        let mut annotations: BTreeMap<String, String> = [
            (METRICS_ANNOTATION, "[]"),
            (BEHAVIOR_ANNOTATION, "{}"),
            ("autoscaling.alpha.kubernetes.io/scale-up-tolerance", "0.1"),
            ("team", "shop"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        drop_round_trip_annotations(&mut annotations);
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        // A stored object that carries them anyway is served with its own.
        let mut stored = rich_v2();
        stored["metadata"]["annotations"][METRICS_ANNOTATION] = json!("[{\"type\": \"stale\"}]");
        let served = to_v1(stored);
        assert_eq!(
            annotation(&served, METRICS_ANNOTATION)[0]["type"],
            "Resource"
        );
    }

    #[test]
    fn anything_else_is_left_alone_and_nothing_panics() {
        assert_eq!(to_v1(json!([1, 2])), json!([1, 2]));
        assert_eq!(to_v2(json!("x")).unwrap(), json!("x"));
        let odd = json!({"metadata": 3, "spec": [], "status": "up"});
        let served = to_v1(odd.clone());
        assert_eq!(served["spec"]["maxReplicas"], 0);
        assert!(to_v2(odd).is_ok());
    }
}
