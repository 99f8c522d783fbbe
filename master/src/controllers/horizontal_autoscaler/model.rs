//! A HorizontalPodAutoscaler (`autoscaling/v2`, a generic object) as the
//! controller reads it: a typed view of the `spec` it acts on (its target,
//! replica bounds, metrics and behaviour) and of the `status` it writes
//! (`currentReplicas`, `desiredReplicas`, `lastScaleTime`,
//! `currentMetrics`, `conditions`, `observedGeneration`), read from the
//! stored JSON, which keeps everything else as sent. Quantities are
//! written back as Kubernetes writes a milli-quantity (`130m`, `2`,
//! `52428800`, `100M`).

use std::time::Duration;

use serde_json::Value;
use skiff_proto::v1::GenericObject;

use super::calculator::{Tolerances, DEFAULT_TOLERANCE};
use super::normalization::{
    Behavior, Policy, PolicyKind, Rules, SelectPolicy, DOWNSCALE_STABILIZATION_WINDOW,
};
use skiff_objects::autoscaling::{
    default_scale_down_rules, default_scale_up_rules, DEFAULT_CPU_UTILIZATION,
};
use skiff_objects::generic;

/// An autoscaler's `spec`, `status` and their parts: Kubernetes' types.
pub use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HPAScalingRules as ScalingRules,
    HorizontalPodAutoscalerCondition as AutoscalerCondition,
    HorizontalPodAutoscalerSpec as AutoscalerSpec,
    HorizontalPodAutoscalerStatus as AutoscalerStatus, MetricSpec, MetricStatus, MetricTarget,
    MetricValueStatus, ResourceMetricSource, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_objects::typed;

use crate::controllers::job::model::time;

/// The conditions of an autoscaler's status, as the controller keeps them.
pub trait Conditions {
    /// `setCondition`: the condition of `kind` now says this; its
    /// transition time moves only when whether it holds changes.
    fn set_condition(&mut self, kind: &str, holds: bool, reason: &str, message: &str, now: &str);
    /// The condition of `kind`, if set.
    fn condition(&self, kind: &str) -> Option<&AutoscalerCondition>;
}

impl Conditions for AutoscalerStatus {
    fn set_condition(&mut self, kind: &str, holds: bool, reason: &str, message: &str, now: &str) {
        let holds = if holds { "True" } else { "False" };
        let conditions = self.conditions.get_or_insert_with(Vec::new);
        let position = match conditions.iter().position(|c| c.type_ == kind) {
            Some(position) => position,
            None => {
                conditions.push(AutoscalerCondition {
                    type_: kind.to_owned(),
                    ..AutoscalerCondition::default()
                });
                conditions.len() - 1
            }
        };
        let condition = &mut conditions[position];
        if condition.status != holds {
            condition.last_transition_time = time(now);
        }
        let text = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
        condition.status = holds.to_owned();
        condition.reason = text(reason);
        condition.message = text(message);
    }

    fn condition(&self, kind: &str) -> Option<&AutoscalerCondition> {
        let conditions = self.conditions.as_deref().unwrap_or_default();
        conditions.iter().find(|c| c.type_ == kind)
    }
}

/// `status` as Kubernetes writes it: a zero `currentReplicas`, and empty
/// `currentMetrics` and `conditions`, left out (`omitempty`).
pub fn with_kubernetes_omissions(mut status: AutoscalerStatus) -> AutoscalerStatus {
    status.current_replicas = status.current_replicas.filter(|n| *n != 0);
    status.current_metrics = status.current_metrics.filter(|m| !m.is_empty());
    status.conditions = status.conditions.filter(|c| !c.is_empty());
    status
}

/// An autoscaler as read from its stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerView {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    pub spec: AutoscalerSpec,
    pub status: AutoscalerStatus,
}

/// An autoscaler whose spec or status has fields of the wrong shape.
#[derive(Debug, thiserror::Error)]
#[error("HorizontalPodAutoscaler {namespace}/{name} cannot be read: {source}")]
pub struct UnreadableAutoscaler {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

impl AutoscalerView {
    /// Reads the autoscaler held in `object`.
    pub fn read(object: &GenericObject) -> Result<AutoscalerView, UnreadableAutoscaler> {
        let meta = object.metadata.clone().unwrap_or_default();
        let mut content = generic::content(object);
        let unreadable = |source| UnreadableAutoscaler {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            source,
        };
        let spec = match content.remove("spec") {
            Some(Value::Null) | None => AutoscalerSpec::default(),
            Some(spec) => typed::decode(spec).map_err(unreadable)?,
        };
        // The controller owns the status: one it cannot read is replaced.
        let status = typed::decode_or_default(content.get("status"));
        Ok(AutoscalerView {
            name: meta.name,
            namespace: meta.namespace,
            generation: meta.generation,
            spec,
            status: with_kubernetes_omissions(status),
        })
    }

    /// `minReplicas` (1 when unset).
    pub fn min_replicas(&self) -> i32 {
        self.spec.min_replicas.unwrap_or(1)
    }

    /// The metrics, or Kubernetes' default (CPU at 80%) when none are
    /// given (as the API server's defaults would have it).
    pub fn metrics(&self) -> Vec<MetricSpec> {
        if let Some(metrics) = self.spec.metrics.as_ref().filter(|m| !m.is_empty()) {
            return metrics.clone();
        }
        vec![MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(DEFAULT_CPU_UTILIZATION),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        }]
    }

    /// The behaviour, complete (Kubernetes' defaults for what is not
    /// given, the controller's 5 minutes for a scale-down window), or
    /// `None` without a `behavior`.
    pub fn behavior(&self) -> Option<Behavior> {
        let given = self.spec.behavior.as_ref()?;
        let up = complete(
            given.scale_up.as_ref(),
            default_scale_up_rules(),
            Duration::ZERO,
        );
        let down = complete(
            given.scale_down.as_ref(),
            default_scale_down_rules(),
            DOWNSCALE_STABILIZATION_WINDOW,
        );
        Some(Behavior {
            scale_up: up,
            scale_down: down,
        })
    }

    /// Each direction's tolerance: `behavior.scale{Up,Down}.tolerance`, or
    /// 10%.
    pub fn tolerances(&self) -> Tolerances {
        let given = |rules: Option<&ScalingRules>| -> f64 {
            rules
                .and_then(|r| r.tolerance.as_ref())
                .and_then(|t| skiff_objects::Quantity::parse(&t.0).ok())
                .map_or(DEFAULT_TOLERANCE, |q| q.milli() as f64 / 1000.0)
        };
        let behavior = self.spec.behavior.as_ref();
        Tolerances {
            scale_down: given(behavior.and_then(|b| b.scale_down.as_ref())),
            scale_up: given(behavior.and_then(|b| b.scale_up.as_ref())),
        }
    }
}

/// One direction's rules: what is given, else the defaults (`defaults`,
/// JSON from `objects::autoscaling`), with `window` for an unset window.
fn complete(given: Option<&ScalingRules>, defaults: Value, window: Duration) -> Rules {
    let defaults: ScalingRules = typed::decode(defaults).unwrap_or_default();
    let window = given
        .and_then(|g| g.stabilization_window_seconds)
        .or(defaults.stabilization_window_seconds)
        .map_or(window, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
    let select = match given
        .and_then(|g| g.select_policy.as_deref())
        .or(defaults.select_policy.as_deref())
    {
        Some("Min") => SelectPolicy::Min,
        Some("Disabled") => SelectPolicy::Disabled,
        _ => SelectPolicy::Max,
    };
    let policies = given
        .and_then(|g| g.policies.as_ref())
        .or(defaults.policies.as_ref())
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| {
            let kind = match p.type_.as_str() {
                "Pods" => PolicyKind::Pods,
                "Percent" => PolicyKind::Percent,
                _ => return None,
            };
            Some(Policy {
                kind,
                value: p.value,
                period: Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)),
            })
        })
        .collect();
    Rules {
        window,
        select,
        policies,
    }
}

/// `object` with `status` as its status.
pub fn with_status(object: &GenericObject, status: &AutoscalerStatus) -> GenericObject {
    let mut updated = object.clone();
    let mut content = generic::content(&updated);
    let status = with_kubernetes_omissions(status.clone());
    content.insert("status".to_owned(), typed::encode(&status));
    generic::set_content(&mut updated, &content);
    updated
}

/// A measured resource metric's entry of `status.currentMetrics`.
pub fn resource_status(
    name: &str,
    container: Option<&str>,
    utilization: Option<i32>,
    average: i64,
) -> MetricStatus {
    let current = MetricValueStatus {
        average_utilization: utilization,
        average_value: Some(Quantity(
            skiff_objects::Quantity::from_milli(average).decimal_si(),
        )),
        value: None,
    };
    match container {
        None => MetricStatus {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricStatus {
                name: name.to_owned(),
                current,
            }),
            ..MetricStatus::default()
        },
        Some(container) => MetricStatus {
            type_: "ContainerResource".to_owned(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: name.to_owned(),
                container: container.to_owned(),
                current,
            }),
            ..MetricStatus::default()
        },
    }
}

/// The entry of `status.currentMetrics` of a metric that could not be
/// measured, as Kubernetes leaves it (`{"type": ""}`).
pub fn unmeasured_status() -> MetricStatus {
    MetricStatus::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_objects::Kind;

    fn autoscaler(body: Value) -> GenericObject {
        let mut unknown = Vec::new();
        let mut object =
            generic::from_json(Kind::HorizontalPodAutoscaler, body, &mut unknown).unwrap();
        generic::apply_defaults(Kind::HorizontalPodAutoscaler, &mut object);
        object
    }

    #[test]
    fn an_autoscaler_is_read_with_its_defaults_and_its_status_written_back() {
        let object = autoscaler(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "maxReplicas": 3},
        }));
        let view = AutoscalerView::read(&object).unwrap();
        assert_eq!(view.spec.scale_target_ref.kind, "Deployment");
        assert_eq!((view.min_replicas(), view.spec.max_replicas), (1, 3));
        let metrics = view.metrics();
        let cpu = metrics[0].resource.as_ref().unwrap();
        assert_eq!(
            (cpu.name.as_str(), cpu.target.average_utilization),
            ("cpu", Some(80))
        );
        assert_eq!(view.behavior(), None);
        assert_eq!(view.tolerances(), Tolerances::default());

        let mut status = view.status.clone();
        status.desired_replicas = 2;
        status.current_replicas = Some(1);
        status.current_metrics = Some(vec![resource_status("cpu", None, Some(65), 130)]);
        status.set_condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "got it",
            "2026-01-01T00:00:00Z",
        );
        let written = with_status(&object, &status);
        let content = generic::content(&written);
        assert_eq!(
            content["status"],
            json!({"currentReplicas": 1, "desiredReplicas": 2,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 65, "averageValue": "130m"}}}],
                   "conditions": [{"type": "AbleToScale", "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "reason": "SucceededGetScale", "message": "got it"}]})
        );
        assert_eq!(AutoscalerView::read(&written).unwrap().status, status);
    }

    #[test]
    fn null_lists_read_as_empty_and_a_status_of_the_wrong_shape_is_replaced() {
        let mut object = autoscaler(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3},
        }));
        let mut content = generic::content(&object);
        content.insert(
            "status".into(),
            json!({"currentMetrics": null, "conditions": null, "desiredReplicas": 1}),
        );
        generic::set_content(&mut object, &content);
        let view = AutoscalerView::read(&object).unwrap();
        assert!(view.status.current_metrics.is_none());
        assert_eq!(view.status.desired_replicas, 1);
        content.insert("status".into(), json!({"desiredReplicas": "many"}));
        generic::set_content(&mut object, &content);
        let view = AutoscalerView::read(&object).unwrap();
        assert_eq!(view.status, AutoscalerStatus::default());
        content.insert("spec".into(), json!({"maxReplicas": "many"}));
        generic::set_content(&mut object, &content);
        let e = AutoscalerView::read(&object).unwrap_err();
        assert!(e.to_string().contains("HorizontalPodAutoscaler"), "{e}");
    }

    #[test]
    fn a_condition_moves_its_transition_time_only_when_it_flips() {
        let mut status = AutoscalerStatus::default();
        const T1: &str = "2026-01-01T00:00:01Z";
        const T3: &str = "2026-01-01T00:00:03Z";
        status.set_condition("ScalingActive", true, "ValidMetricFound", "a", T1);
        status.set_condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            "b",
            "2026-01-01T00:00:02Z",
        );
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions[0].last_transition_time, time(T1));
        assert_eq!(conditions[0].message.as_deref(), Some("b"));
        status.set_condition("ScalingActive", false, "FailedGetResourceMetric", "c", T3);
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions[0].last_transition_time, time(T3));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn a_given_behavior_is_completed_with_kubernetes_defaults() {
        let object = autoscaler(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                     "behavior": {"scaleDown": {"selectPolicy": "Min", "tolerance": "0.05"}}},
        }));
        let view = AutoscalerView::read(&object).unwrap();
        let behavior = view.behavior().unwrap();
        assert_eq!(behavior.scale_up.window, Duration::ZERO);
        assert_eq!(behavior.scale_up.policies.len(), 2);
        assert_eq!(behavior.scale_down.window, DOWNSCALE_STABILIZATION_WINDOW);
        assert_eq!(behavior.scale_down.select, SelectPolicy::Min);
        assert_eq!(
            behavior.scale_down.policies,
            [Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(15)
            }]
        );
        let tolerances = view.tolerances();
        assert_eq!((tolerances.scale_down, tolerances.scale_up), (0.05, 0.1));
    }
}
