//! HorizontalPodAutoscalers (`autoscaling/v2`, held as generic objects):
//! the defaults the API server gives their spec and the validation it does
//! beyond the schema, as Kubernetes' `autoscaling/v2` defaulting and
//! `ValidateHorizontalPodAutoscaler` do them, each problem naming its field
//! (`spec.maxReplicas`, `spec.metrics[0].resource.target.averageUtilization`,
//! `spec.behavior.scaleDown.policies[0].periodSeconds`, ...). The numbers
//! of Kubernetes' default behaviour are here too, for the controller
//! (`controllers/horizontal_autoscaler`) to fall back on.

use crate::{Quantity, QuantityError};
use serde_json::{json, Map, Value};

/// The CPU utilization target of an autoscaler given no metrics (`80`).
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;
/// Scale-up policies' period (s) by default.
pub const SCALE_UP_PERIOD_SECONDS: i32 = 15;
/// Pods a scale up may add per period by default.
pub const SCALE_UP_PODS: i32 = 4;
/// Percent a scale up may add per period by default.
pub const SCALE_UP_PERCENT: i32 = 100;
/// Scale-down policies' period (s) by default.
pub const SCALE_DOWN_PERIOD_SECONDS: i32 = 15;
/// Percent a scale down may remove per period by default.
pub const SCALE_DOWN_PERCENT: i32 = 100;
/// The longest `periodSeconds` of a scaling policy.
pub const MAX_PERIOD_SECONDS: i64 = 1800;
/// The longest `stabilizationWindowSeconds`.
pub const MAX_STABILIZATION_WINDOW_SECONDS: i64 = 3600;

/// The metric source types, in Kubernetes' order of its "supported values".
const METRIC_SOURCE_TYPES: &[(&str, &str)] = &[
    ("ContainerResource", "containerResource"),
    ("External", "external"),
    ("Object", "object"),
    ("Pods", "pods"),
    ("Resource", "resource"),
];

/// A quantity field (`averageValue`, `value`, `tolerance`): `None` when
/// unset, else the parsed quantity (a string such as `500m`, or a number).
pub fn quantity(value: &Value) -> Option<Result<Quantity, QuantityError>> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(Quantity::parse(text)),
        Value::Number(number) => Some(Quantity::parse(&number.to_string())),
        other => Some(Quantity::parse(&other.to_string())),
    }
}

/// Kubernetes' default scale-up rules: no stabilization, the larger of
/// 4 pods and 100% per 15 s.
pub fn default_scale_up_rules() -> Value {
    json!({
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": SCALE_UP_PODS, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
            {"type": "Percent", "value": SCALE_UP_PERCENT, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
        ],
    })
}

/// Kubernetes' default scale-down rules: 100% per 15 s; the stabilization
/// window is left to the controller (300 s), as Kubernetes leaves it.
pub fn default_scale_down_rules() -> Value {
    json!({
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": SCALE_DOWN_PERCENT, "periodSeconds": SCALE_DOWN_PERIOD_SECONDS},
        ],
    })
}

/// `SetDefaults_HorizontalPodAutoscaler`: `minReplicas` 1, a CPU
/// utilization target of 80% when no metric is given, and, when a
/// `behavior` is given, each direction's rules completed with the
/// defaults (a field given wins).
pub fn apply_defaults(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    if spec.get("minReplicas").is_none_or(Value::is_null) {
        spec.insert("minReplicas".to_owned(), Value::from(1));
    }
    if spec
        .get("metrics")
        .is_none_or(|m| m.as_array().is_none_or(Vec::is_empty))
    {
        spec.insert(
            "metrics".to_owned(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }]),
        );
    }
    if let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        complete_rules(behavior, "scaleUp", default_scale_up_rules());
        complete_rules(behavior, "scaleDown", default_scale_down_rules());
    }
}

/// `copyHPAScalingRules`: the defaults, with every field `given` sets.
fn complete_rules(behavior: &mut Map<String, Value>, direction: &str, defaults: Value) {
    let mut rules = match defaults {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(given) = behavior.get(direction).and_then(Value::as_object) {
        for (field, value) in given {
            if !value.is_null() {
                rules.insert(field.clone(), value.clone());
            }
        }
    }
    behavior.insert(direction.to_owned(), Value::Object(rules));
}

/// Problems `(field, reason)` with an autoscaler's `spec`, as
/// `ValidateHorizontalPodAutoscalerSpec` finds them (after the defaults).
pub fn validate(spec: &Value, problems: &mut Vec<(String, String)>) {
    let min = spec["minReplicas"].as_i64();
    if let Some(min) = min.filter(|m| *m < 1) {
        invalid(
            problems,
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        );
    }
    let max = spec["maxReplicas"].as_i64().unwrap_or(0);
    if max < 1 {
        invalid(problems, "spec.maxReplicas", max, "must be greater than 0");
    }
    if min.is_some_and(|min| max < min) {
        invalid(
            problems,
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        );
    }
    // Kubernetes looks at the metrics only when the reference is sound,
    // and at the behaviour only when the metrics are.
    let before = problems.len();
    target_reference(&spec["scaleTargetRef"], "spec.scaleTargetRef", problems);
    if problems.len() > before {
        return;
    }
    let metrics = spec["metrics"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (index, metric) in metrics.iter().enumerate() {
        metric_spec(metric, &format!("spec.metrics[{index}]"), problems);
    }
    if problems.len() > before {
        return;
    }
    if let Some(behavior) = spec["behavior"].as_object() {
        for direction in ["scaleUp", "scaleDown"] {
            if let Some(rules) = behavior.get(direction).filter(|r| !r.is_null()) {
                scaling_rules(rules, &format!("spec.behavior.{direction}"), problems);
            }
        }
    }
}

fn invalid(
    problems: &mut Vec<(String, String)>,
    path: &str,
    value: impl std::fmt::Display,
    reason: &str,
) {
    problems.push((path.to_owned(), format!("Invalid value: {value}: {reason}")));
}

fn required(problems: &mut Vec<(String, String)>, path: &str, reason: &str) {
    problems.push((path.to_owned(), format!("Required value: {reason}")));
}

fn unsupported(problems: &mut Vec<(String, String)>, path: &str, value: &str, supported: &[&str]) {
    let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    problems.push((
        path.to_owned(),
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            supported.join(", ")
        ),
    ));
}

/// `ValidateCrossVersionObjectReference`: a kind and a name, each a valid
/// path segment.
fn target_reference(reference: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    for field in ["kind", "name"] {
        let path = format!("{at}.{field}");
        match reference[field].as_str().unwrap_or("") {
            "" => required(
                problems,
                &path,
                &format!("the target's {field} is required"),
            ),
            text => {
                if let Some(reason) = path_segment_problem(text) {
                    invalid(problems, &path, format!("{text:?}"), reason);
                }
            }
        }
    }
}

/// `IsValidPathSegmentName`.
fn path_segment_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        return Some("may not be '.' or '..'");
    }
    if name.contains('/') {
        return Some("may not contain '/'");
    }
    if name.contains('%') {
        return Some("may not contain '%'");
    }
    None
}

/// `validateMetricSpec`: a known type whose source (and only that one) is
/// filled in, and the source itself.
fn metric_spec(metric: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let kind = metric["type"].as_str().unwrap_or("");
    let names: Vec<&str> = METRIC_SOURCE_TYPES.iter().map(|(t, _)| *t).collect();
    let expected = METRIC_SOURCE_TYPES
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, field)| *field);
    match expected {
        None if kind.is_empty() => required(
            problems,
            &format!("{at}.type"),
            "must specify a metric source type",
        ),
        None => unsupported(problems, &format!("{at}.type"), kind, &names),
        Some(field) if metric[field].is_null() => required(
            problems,
            &format!("{at}.{field}"),
            "must populate information for the given metric source",
        ),
        Some(_) => {}
    }
    for (_, field) in METRIC_SOURCE_TYPES {
        let source = &metric[*field];
        if source.is_null() {
            continue;
        }
        let path = format!("{at}.{field}");
        if expected != Some(*field) {
            if expected.is_some() {
                problems.push((
                    path,
                    "Forbidden: must populate the given metric source only".into(),
                ));
            }
            continue;
        }
        match *field {
            "resource" | "containerResource" => {
                if source["name"].as_str().unwrap_or("").is_empty() {
                    required(
                        problems,
                        &format!("{path}.name"),
                        "must specify a resource name",
                    );
                }
                if *field == "containerResource"
                    && source["container"].as_str().unwrap_or("").is_empty()
                {
                    required(
                        problems,
                        &format!("{path}.container"),
                        "must specify a container",
                    );
                }
                let target = &source["target"];
                metric_target(target, &format!("{path}.target"), problems);
                let (utilization, average) =
                    (&target["averageUtilization"], &target["averageValue"]);
                if utilization.is_null() && average.is_null() {
                    required(
                        problems,
                        &format!("{path}.target.averageUtilization"),
                        "must set either a target raw value or a target utilization",
                    );
                }
                if !utilization.is_null() && !average.is_null() {
                    invalid(
                        problems,
                        &format!("{path}.target.averageValue"),
                        average,
                        "may not set both a target raw value and a target utilization",
                    );
                }
            }
            _ => {
                if source["metric"]["name"].as_str().unwrap_or("").is_empty() {
                    required(
                        problems,
                        &format!("{path}.metric.name"),
                        "must specify a metric name",
                    );
                }
                let target = &source["target"];
                metric_target(target, &format!("{path}.target"), problems);
                let value_allowed = *field != "pods";
                let has_value = value_allowed && !target["value"].is_null();
                if !has_value && target["averageValue"].is_null() {
                    let (child, reason) = if value_allowed {
                        ("value", "must set either a target value or averageValue")
                    } else {
                        (
                            "averageValue",
                            "must specify a positive target averageValue",
                        )
                    };
                    required(problems, &format!("{path}.target.{child}"), reason);
                }
                if *field == "object" {
                    target_reference(
                        &source["describedObject"],
                        &format!("{path}.describedObject"),
                        problems,
                    );
                }
            }
        }
    }
}

/// `validateMetricTarget`.
fn metric_target(target: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    match target["type"].as_str().unwrap_or("") {
        "" => required(
            problems,
            &format!("{at}.type"),
            "must specify a metric target type",
        ),
        "Utilization" | "Value" | "AverageValue" => {}
        other => invalid(
            problems,
            &format!("{at}.type"),
            format!("{other:?}"),
            "must be either Utilization, Value, or AverageValue",
        ),
    }
    for field in ["value", "averageValue"] {
        match quantity(&target[field]) {
            None => {}
            Some(Ok(q)) if q.milli() > 0 => {}
            Some(Ok(_)) => invalid(
                problems,
                &format!("{at}.{field}"),
                &target[field],
                "must be positive",
            ),
            Some(Err(e)) => invalid(
                problems,
                &format!("{at}.{field}"),
                &target[field],
                &e.to_string(),
            ),
        }
    }
    if let Some(utilization) = target["averageUtilization"].as_i64().filter(|u| *u < 1) {
        invalid(
            problems,
            &format!("{at}.averageUtilization"),
            utilization,
            "must be greater than 0",
        );
    }
}

/// `validateScalingRules`.
fn scaling_rules(rules: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    if let Some(window) = rules["stabilizationWindowSeconds"].as_i64() {
        let path = format!("{at}.stabilizationWindowSeconds");
        if window < 0 {
            invalid(
                problems,
                &path,
                window,
                "must be greater than or equal to zero",
            );
        }
        if window > MAX_STABILIZATION_WINDOW_SECONDS {
            let reason =
                format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}");
            invalid(problems, &path, window, &reason);
        }
    }
    if let Some(select) = rules["selectPolicy"].as_str() {
        if !matches!(select, "Disabled" | "Max" | "Min") {
            let path = format!("{at}.selectPolicy");
            unsupported(problems, &path, select, &["Disabled", "Max", "Min"]);
        }
    }
    let policies = rules["policies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if policies.is_empty() {
        required(
            problems,
            &format!("{at}.policies"),
            "must specify at least one Policy",
        );
    }
    for (index, policy) in policies.iter().enumerate() {
        let path = format!("{at}.policies[{index}]");
        let kind = policy["type"].as_str().unwrap_or("");
        if kind != "Pods" && kind != "Percent" {
            unsupported(
                problems,
                &format!("{path}.type"),
                kind,
                &["Percent", "Pods"],
            );
        }
        let value = policy["value"].as_i64().unwrap_or(0);
        if value <= 0 {
            invalid(
                problems,
                &format!("{path}.value"),
                value,
                "must be greater than zero",
            );
        }
        let period = policy["periodSeconds"].as_i64().unwrap_or(0);
        if period <= 0 {
            invalid(
                problems,
                &format!("{path}.periodSeconds"),
                period,
                "must be greater than zero",
            );
        }
        if period > MAX_PERIOD_SECONDS {
            let reason = format!("must be less than or equal to {MAX_PERIOD_SECONDS}");
            invalid(problems, &format!("{path}.periodSeconds"), period, &reason);
        }
    }
    match quantity(&rules["tolerance"]) {
        Some(Ok(q)) if q.milli() < 0 => invalid(
            problems,
            &format!("{at}.tolerance"),
            &rules["tolerance"],
            "must be greater than or equal to 0",
        ),
        Some(Err(e)) => invalid(
            problems,
            &format!("{at}.tolerance"),
            &rules["tolerance"],
            &e.to_string(),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(mut spec: Value) -> Vec<(String, String)> {
        apply_defaults(&mut spec);
        let mut problems = Vec::new();
        validate(&spec, &mut problems);
        problems
    }

    fn fields(problems: &[(String, String)]) -> Vec<&str> {
        problems.iter().map(|(f, _)| f.as_str()).collect()
    }

    fn target() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
    }

    #[test]
    fn what_kubectl_autoscale_sends_gets_kubernetes_defaults() {
        let mut spec = json!({"scaleTargetRef": target(), "maxReplicas": 3});
        apply_defaults(&mut spec);
        assert_eq!(spec["minReplicas"], 1);
        assert_eq!(
            spec["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(spec["behavior"].is_null(), "no behavior unless given");
        assert!(problems_of(spec).is_empty());
    }

    #[test]
    fn a_given_behavior_is_completed_field_by_field() {
        let mut spec = json!({
            "scaleTargetRef": target(), "maxReplicas": 3,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        });
        apply_defaults(&mut spec);
        let behavior = &spec["behavior"];
        assert_eq!(behavior["scaleUp"], default_scale_up_rules());
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 0);
        assert_eq!(behavior["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(behavior["scaleDown"]["policies"][0]["type"], "Percent");
        assert!(problems_of(spec).is_empty());
    }

    #[test]
    fn replica_bounds_are_checked_naming_the_field() {
        let found =
            problems_of(json!({"scaleTargetRef": target(), "minReplicas": 0, "maxReplicas": 3}));
        assert_eq!(fields(&found), ["spec.minReplicas"]);
        assert_eq!(
            found[0].1,
            "Invalid value: 0: must be greater than or equal to 1"
        );
        let found =
            problems_of(json!({"scaleTargetRef": target(), "minReplicas": 4, "maxReplicas": 2}));
        assert_eq!(fields(&found), ["spec.maxReplicas"]);
        assert!(found[0].1.contains("`minReplicas`"), "{found:?}");
        let found = problems_of(json!({"scaleTargetRef": target()}));
        assert_eq!(found[0].0, "spec.maxReplicas");
        let found =
            problems_of(json!({"maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment"}}));
        assert_eq!(fields(&found), ["spec.scaleTargetRef.name"]);
    }

    #[test]
    fn metric_targets_are_checked_naming_the_field() {
        let with = |metric: Value| {
            problems_of(json!({"scaleTargetRef": target(), "maxReplicas": 3, "metrics": [metric]}))
        };
        let found = with(json!({"type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}));
        assert_eq!(
            fields(&found),
            ["spec.metrics[0].resource.target.averageUtilization"]
        );
        let found = with(json!({"type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "-1Mi"}}}));
        assert_eq!(
            fields(&found),
            ["spec.metrics[0].resource.target.averageValue"]
        );
        let found = with(
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}),
        );
        assert_eq!(
            fields(&found),
            ["spec.metrics[0].resource.target.averageUtilization"]
        );
        assert!(found[0].1.starts_with("Required value"), "{found:?}");
        let found = with(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Usage", "averageUtilization": 50}}}));
        assert_eq!(fields(&found), ["spec.metrics[0].resource.target.type"]);
        let found = with(json!({"type": "Pods", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}));
        assert_eq!(
            fields(&found),
            ["spec.metrics[0].pods", "spec.metrics[0].resource"],
            "{found:?}"
        );
        let found = with(json!({"type": "Custom"}));
        assert_eq!(fields(&found), ["spec.metrics[0].type"]);
        assert!(
            found[0].1.starts_with("Unsupported value: \"Custom\""),
            "{found:?}"
        );
        let found = with(
            json!({"type": "ContainerResource", "containerResource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}}),
        );
        assert_eq!(
            fields(&found),
            ["spec.metrics[0].containerResource.container"]
        );
    }

    #[test]
    fn behavior_rules_are_checked_naming_the_field() {
        let found = problems_of(json!({
            "scaleTargetRef": target(), "maxReplicas": 3,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 4000, "selectPolicy": "Most"},
                "scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 1801}]},
            },
        }));
        assert_eq!(
            fields(&found),
            [
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
                "spec.behavior.scaleUp.selectPolicy",
                "spec.behavior.scaleDown.policies[0].value",
                "spec.behavior.scaleDown.policies[0].periodSeconds",
            ]
        );
        let found = problems_of(json!({
            "scaleTargetRef": target(), "maxReplicas": 3,
            "behavior": {"scaleDown": {"policies": []}},
        }));
        assert_eq!(fields(&found), ["spec.behavior.scaleDown.policies"]);
    }
}
