//! PodDisruptionBudgets (`policy/v1`, stored as generic objects) as the
//! eviction subresource reads them: whether evicting a pod would leave
//! fewer healthy pods than a budget that selects it wants
//! ([`decide_eviction`]), with Kubernetes' arithmetic.
//!
//! Kubernetes' disruption controller keeps each budget's status (expected
//! pods from the controllers' scale, healthy pods, disruptions allowed);
//! skiff has no such controller and computes the same from the pods at
//! the time of the eviction: a budget's pods are the pods of its namespace
//! its selector selects (none for a missing selector, every one for an
//! empty one), the expected count is those not finished (Kubernetes takes
//! it from their controllers' scale; a pod being replaced counts until it
//! is gone), the healthy ones are those Ready and not being deleted. Two
//! evictions at the same moment can therefore both pass,
//! where Kubernetes serializes them on the budget's status.

use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{self, LabelSelector};

use super::deletion::is_being_deleted;
use super::pods::pod_is_ready;
use super::{generic, selector};

/// Kubernetes' words for a refused eviction (kubectl drain prints them).
pub const VIOLATION_MESSAGE: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// A budget's `minAvailable` or `maxUnavailable`: a count or a percentage
/// of the expected pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(i64),
    Percent(i64),
}

impl Amount {
    /// An int-or-string as Kubernetes writes it: `2`, `"2"`, `"50%"`.
    fn from_json(value: &Value) -> Option<Amount> {
        if let Some(n) = value.as_i64() {
            return Some(Amount::Count(n.max(0)));
        }
        let text = value.as_str()?.trim();
        let (number, percent) = match text.strip_suffix('%') {
            Some(number) => (number, true),
            None => (text, false),
        };
        let n = number.parse::<i64>().ok()?.max(0);
        if percent {
            Some(Amount::Percent(n))
        } else {
            Some(Amount::Count(n))
        }
    }

    /// The amount for `expected` pods; percentages round up, as Kubernetes'
    /// `GetScaledValueFromIntOrPercent(..., true)`.
    fn of(self, expected: i64) -> i64 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => expected.saturating_mul(p).saturating_add(99) / 100,
        }
    }
}

/// One PodDisruptionBudget, as far as evictions read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    /// `None`: the budget selects no pods (a missing selector in
    /// `policy/v1`).
    pub selector: Option<LabelSelector>,
    pub min_available: Option<Amount>,
    pub max_unavailable: Option<Amount>,
}

impl Budget {
    /// The budget a stored PodDisruptionBudget states; `None` for any
    /// other object.
    pub fn of(object: &Object) -> Option<Budget> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.kind != "PodDisruptionBudget" {
            return None;
        }
        let name = g.metadata.clone().unwrap_or_default().name;
        let spec = generic::content(g).remove("spec").unwrap_or(Value::Null);
        Some(Budget::from_spec(name, &spec))
    }

    /// The budget a PodDisruptionBudget's `spec` states.
    pub fn from_spec(name: String, spec: &Value) -> Budget {
        let selector = match spec.get("selector") {
            None | Some(Value::Null) => None,
            Some(s) => serde_json::from_value::<LabelSelector>(s.clone()).ok(),
        };
        Budget {
            name,
            selector,
            min_available: spec.get("minAvailable").and_then(Amount::from_json),
            max_unavailable: spec.get("maxUnavailable").and_then(Amount::from_json),
        }
    }

    /// Whether the budget covers `pod` (of its namespace: the caller's to
    /// ensure).
    pub fn selects(&self, pod: &v1::Pod) -> bool {
        let labels = pod.metadata.as_ref().map(|m| &m.labels);
        match (&self.selector, labels) {
            (Some(s), Some(labels)) => selector::matches(s, labels),
            (Some(s), None) => selector::is_empty(s),
            (None, _) => false,
        }
    }

    /// How many healthy pods the budget wants, and how many of `pods` it
    /// has (Kubernetes' `desiredHealthy` and `currentHealthy`).
    pub fn health(&self, pods: &[v1::Pod]) -> (i64, i64) {
        let mine: Vec<&v1::Pod> = pods.iter().filter(|p| self.selects(p)).collect();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let expected = count(mine.iter().filter(|p| !finished(p)).count());
        let healthy = count(mine.iter().filter(|p| counts_as_healthy(p)).count());
        let desired = match (self.max_unavailable, self.min_available) {
            (Some(max), _) => (expected - max.of(expected)).max(0),
            (None, Some(min)) => min.of(expected),
            (None, None) => 0,
        };
        (desired, healthy)
    }
}

/// What evicting a pod comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionDecision {
    /// The pod may go: delete it.
    Allowed,
    /// Refused (429): `budget` wants `desired` healthy pods and has
    /// `healthy`, the pod among them.
    Refused {
        budget: String,
        desired: i64,
        healthy: i64,
    },
    /// More than one budget selects the pod, which Kubernetes' eviction
    /// does not support (500): their names.
    SeveralBudgets(Vec<String>),
}

/// Whether `pod` may be evicted, given the `budgets` and the `pods` of its
/// namespace (the pod among them). A pod that is not running (Pending,
/// Succeeded, Failed) or is being deleted already disrupts nothing. An
/// unready pod may go while the budget has enough healthy pods without it.
pub fn decide_eviction(pod: &v1::Pod, budgets: &[Budget], pods: &[v1::Pod]) -> EvictionDecision {
    if being_deleted(pod) || phase(pod) == "Pending" || finished(pod) {
        return EvictionDecision::Allowed;
    }
    let selecting: Vec<&Budget> = budgets.iter().filter(|b| b.selects(pod)).collect();
    let budget = match selecting.as_slice() {
        [] => return EvictionDecision::Allowed,
        [one] => *one,
        several => {
            let names = several.iter().map(|b| b.name.clone()).collect();
            return EvictionDecision::SeveralBudgets(names);
        }
    };
    let (desired, healthy) = budget.health(pods);
    if !pod_is_ready(pod) && healthy >= desired && desired > 0 {
        return EvictionDecision::Allowed;
    }
    if healthy - desired > 0 {
        EvictionDecision::Allowed
    } else {
        EvictionDecision::Refused {
            budget: budget.name.clone(),
            desired,
            healthy,
        }
    }
}

fn being_deleted(pod: &v1::Pod) -> bool {
    pod.metadata.as_ref().is_some_and(is_being_deleted)
}

/// Ready and not being deleted: what a budget counts as healthy.
fn counts_as_healthy(pod: &v1::Pod) -> bool {
    pod_is_ready(pod) && !being_deleted(pod)
}

fn phase(pod: &v1::Pod) -> &str {
    pod.status.as_ref().map_or("", |s| s.phase.as_str())
}

fn finished(pod: &v1::Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::objects::IntoObject;

    /// A pod labelled `app=<app>`, Running, Ready or not.
    fn pod(name: &str, app: &str, ready: bool) -> v1::Pod {
        let ready = if ready { "True" } else { "False" };
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), app.to_owned())].into(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: "Running".into(),
                conditions: vec![v1::PodCondition {
                    r#type: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn budget(spec: Value) -> Budget {
        Budget::from_spec("web-pdb".into(), &spec)
    }

    /// A budget over the `app=web` pods with `rule` (`minAvailable` or
    /// `maxUnavailable`) set to `value`.
    fn web_budget(rule: &str, value: Value) -> [Budget; 1] {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
        spec[rule] = value;
        [budget(spec)]
    }

    fn web(ready: &[bool]) -> Vec<v1::Pod> {
        ready
            .iter()
            .enumerate()
            .map(|(i, r)| pod(&format!("web-{i}"), "web", *r))
            .collect()
    }

    fn refused(desired: i64, healthy: i64) -> EvictionDecision {
        EvictionDecision::Refused {
            budget: "web-pdb".into(),
            desired,
            healthy,
        }
    }

    const ALLOWED: EvictionDecision = EvictionDecision::Allowed;

    #[test]
    fn min_available_as_a_count_or_a_percentage_rounded_up() {
        let pods = web(&[true, true, true]);
        let two = web_budget("minAvailable", json!(2));
        assert_eq!(decide_eviction(&pods[0], &two, &pods), ALLOWED);
        let all = web_budget("minAvailable", json!(3));
        assert_eq!(decide_eviction(&pods[0], &all, &pods), refused(3, 3));
        // 67% of 3 is 2.01: 3 pods must stay.
        let most = web_budget("minAvailable", json!("67%"));
        assert_eq!(decide_eviction(&pods[0], &most, &pods), refused(3, 3));
        let half = web_budget("minAvailable", json!("50%"));
        assert_eq!(decide_eviction(&pods[0], &half, &pods), ALLOWED);
    }

    #[test]
    fn max_unavailable_counts_against_the_expected_pods() {
        let mut pods = web(&[true, true, true]);
        let none = web_budget("maxUnavailable", json!(0));
        assert_eq!(decide_eviction(&pods[0], &none, &pods), refused(3, 3));
        let one = web_budget("maxUnavailable", json!(1));
        assert_eq!(decide_eviction(&pods[0], &one, &pods), ALLOWED);
        // One is already being deleted: it is not healthy, and the next
        // eviction would be the second disruption.
        let gone_soon = pods[1].metadata.as_mut().unwrap();
        gone_soon.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(decide_eviction(&pods[0], &one, &pods), refused(2, 2));
        // Percentages of the 3 expected round up: 33% is 1 unavailable,
        // 34% is 2.
        let third = web_budget("maxUnavailable", json!("33%"));
        assert_eq!(decide_eviction(&pods[0], &third, &pods), refused(2, 2));
        let more = web_budget("maxUnavailable", json!("34%"));
        assert_eq!(decide_eviction(&pods[0], &more, &pods), ALLOWED);
    }

    #[test]
    fn pods_that_disrupt_nothing_or_no_budget_covers_may_go() {
        let mut pods = web(&[true, false]);
        let strict = web_budget("minAvailable", json!(1));
        // Unready, and the budget keeps its one healthy pod without it.
        assert_eq!(decide_eviction(&pods[1], &strict, &pods), ALLOWED);
        // The only healthy one may not go.
        assert_eq!(decide_eviction(&pods[0], &strict, &pods), refused(1, 1));
        // Already being deleted, or not running yet: nothing to protect.
        let gone_soon = pods[0].metadata.as_mut().unwrap();
        gone_soon.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(decide_eviction(&pods[0], &strict, &pods), ALLOWED);
        let mut pending = pod("new", "web", false);
        pending.status.as_mut().unwrap().phase = "Pending".into();
        assert_eq!(decide_eviction(&pending, &strict, &pods), ALLOWED);
        // Another app's budget, and a budget with no selector, cover nothing.
        let db = pod("db-0", "db", true);
        let alone = [db.clone()];
        assert_eq!(decide_eviction(&db, &strict, &alone), ALLOWED);
        let selectorless = [budget(json!({"minAvailable": 1}))];
        assert_eq!(decide_eviction(&db, &selectorless, &alone), ALLOWED);
        // An empty selector covers every pod of the namespace.
        let everything = [budget(json!({"selector": {}, "minAvailable": 1}))];
        assert_eq!(decide_eviction(&db, &everything, &alone), refused(1, 1));
    }

    #[test]
    fn a_pod_under_two_budgets_is_not_evicted() {
        let pods = web(&[true, true]);
        let [web_pdb] = web_budget("minAvailable", json!(0));
        let other = json!({"selector": {}, "maxUnavailable": "100%"});
        let two = [web_pdb, Budget::from_spec("other".into(), &other)];
        assert_eq!(
            decide_eviction(&pods[0], &two, &pods),
            EvictionDecision::SeveralBudgets(vec!["web-pdb".into(), "other".into()])
        );
    }

    #[test]
    fn a_stored_budget_is_read_from_its_generic_object() {
        let content = json!({
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": "50%"},
            "status": {"disruptionsAllowed": 0},
        });
        let stored = v1::GenericObject {
            api_version: "policy/v1".into(),
            kind: "PodDisruptionBudget".into(),
            metadata: Some(v1::ObjectMeta {
                name: "web-pdb".into(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).unwrap(),
        }
        .into_object();
        let read = Budget::of(&stored).expect("a budget");
        assert_eq!(read.name, "web-pdb");
        assert_eq!(read.min_available, Some(Amount::Percent(50)));
        assert_eq!(read.max_unavailable, None);
        assert!(read.selects(&pod("a", "web", true)));
        assert!(!read.selects(&pod("b", "db", true)));
        let not_a_budget = pod("a", "web", true).into_object();
        assert_eq!(Budget::of(&not_a_budget), None);
    }
}
