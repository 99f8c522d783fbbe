//! PodDisruptionBudgets (`policy/v1`, stored as generic objects): the
//! status Kubernetes' disruption controller keeps ([`compute_status`],
//! written by `controllers::disruption`), and what the eviction
//! subresource decides from that status ([`decide_eviction`]), with
//! Kubernetes' arithmetic.
//!
//! A budget's pods are the pods of its namespace its selector selects
//! (none for a missing selector, every one for an empty one). With
//! `maxUnavailable`, or `minAvailable` as a percentage, the expected count
//! is the sum of the scale (`spec.replicas`) of the pods' controllers (a
//! ReplicaSet's Deployment when it has one, or a StatefulSet); a selected
//! pod without such a controller fails the budget (`SyncFailed`, no
//! disruptions), as in Kubernetes. With `minAvailable` as a count it is
//! the number of selected pods that have not finished. Healthy pods are
//! those Ready, not being deleted and not evicted a moment ago (the
//! budget's `disruptedPods`, kept for two minutes or until the pod is
//! being deleted). An eviction takes one of `disruptionsAllowed` and
//! records the pod in `disruptedPods` with a write conditional on the
//! budget's resourceVersion, so two evictions at the same moment cannot
//! both take the last one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{self, LabelSelector};

use super::deletion::is_being_deleted;
use super::pods::{self, StoredPod};
use super::{generic, selector};
use crate::typed::meta::{Condition, Time};

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

/// How long an evicted pod that is not yet being deleted counts as
/// disrupted (Kubernetes' `DeletionTimeout`).
pub const DISRUPTED_POD_TIMEOUT: Duration = Duration::from_secs(120);
/// The status condition the disruption controller keeps.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// One PodDisruptionBudget: its rule and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    /// `None`: the budget selects no pods (a missing selector in
    /// `policy/v1`).
    pub selector: Option<LabelSelector>,
    pub min_available: Option<Amount>,
    pub max_unavailable: Option<Amount>,
    /// `unhealthyPodEvictionPolicy: AlwaysAllow`: a pod that is not Ready
    /// may always be evicted (the default, `IfHealthyBudget`, lets it go
    /// only while the budget has its healthy pods).
    pub always_allow_unhealthy: bool,
    /// `metadata.generation`.
    pub generation: i64,
    pub status: BudgetStatus,
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
        let meta = g.metadata.clone().unwrap_or_default();
        let mut content = generic::content(g);
        let spec = content.remove("spec").unwrap_or(Value::Null);
        let mut budget = Budget::from_spec(meta.name, &spec);
        budget.generation = meta.generation;
        budget.status = crate::typed::decode_or_default(content.get("status"));
        Some(budget)
    }

    /// The budget a PodDisruptionBudget's `spec` states (no status yet).
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
            always_allow_unhealthy: spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow",
            generation: 0,
            status: BudgetStatus::default(),
        }
    }

    /// Whether the budget covers `pod` (of its namespace: the caller's to
    /// ensure).
    pub fn selects(&self, pod: &v1::ObjectMeta) -> bool {
        match &self.selector {
            Some(s) => selector::matches(s, &pod.labels),
            None => false,
        }
    }

    /// Whether the expected count comes from the pods' controllers' scale
    /// (Kubernetes: `maxUnavailable`, or `minAvailable` as a percentage).
    pub fn needs_scale(&self) -> bool {
        self.max_unavailable.is_some() || matches!(self.min_available, Some(Amount::Percent(_)))
    }

    /// Kubernetes' `expectedPods` and `desiredHealthy` for the budget's
    /// `selected` pods; `scale` names a pod's scaled controller (its uid)
    /// and that controller's `spec.replicas`, or says why it has none.
    pub fn expected_and_desired(
        &self,
        selected: &[&StoredPod],
        scale: impl Fn(&v1::ObjectMeta) -> Result<(String, i64), String>,
    ) -> Result<(i64, i64), String> {
        if !self.needs_scale() {
            let active = selected
                .iter()
                .filter(|p| !pods::is_finished(&p.pod))
                .count();
            let expected = i64::try_from(active).unwrap_or(i64::MAX);
            let desired = self.min_available.map_or(0, |min| min.of(expected));
            return Ok((expected, desired));
        }
        let mut controllers: BTreeMap<String, i64> = BTreeMap::new();
        for pod in selected {
            let (uid, replicas) = scale(pod.meta())?;
            controllers.insert(uid, replicas);
        }
        let expected: i64 = controllers.values().map(|r| (*r).max(0)).sum();
        let desired = match (self.max_unavailable, self.min_available) {
            (Some(max), _) => (expected - max.of(expected)).max(0),
            (None, Some(min)) => min.of(expected),
            (None, None) => 0,
        };
        Ok((expected, desired))
    }
}

/// A PodDisruptionBudget's `status`: Kubernetes' type.
pub use crate::typed::api::policy::v1::PodDisruptionBudgetStatus as BudgetStatus;

/// What the disruption controller and the eviction do with a budget's
/// status.
pub trait BudgetStatusExt {
    /// `object` (a PodDisruptionBudget) with this status.
    fn write_into(&self, object: &v1::GenericObject) -> v1::GenericObject;
    /// The `DisruptionAllowed` condition's status and reason, if it has one.
    fn allowed_condition(&self) -> Option<(&str, &str)>;
    /// Takes one of the allowed disruptions for evicting `pod` at `now`.
    fn take_disruption(&mut self, pod: &str, now: SystemTime);
}

impl BudgetStatusExt for BudgetStatus {
    fn write_into(&self, object: &v1::GenericObject) -> v1::GenericObject {
        let mut object = object.clone();
        let mut content = generic::content(&object);
        content.insert("status".to_owned(), crate::typed::encode(self));
        generic::set_content(&mut object, &content);
        object
    }

    fn allowed_condition(&self) -> Option<(&str, &str)> {
        let conditions = self.conditions.as_deref().unwrap_or_default();
        let condition = conditions.iter().find(|c| c.type_ == DISRUPTION_ALLOWED)?;
        Some((condition.status.as_str(), condition.reason.as_str()))
    }

    fn take_disruption(&mut self, pod: &str, now: SystemTime) {
        self.disruptions_allowed -= 1;
        self.disrupted_pods
            .get_or_insert_with(BTreeMap::new)
            .insert(pod.to_owned(), Time(now.try_into().unwrap_or_default()));
    }
}

/// Sets `status`'s `DisruptionAllowed` condition; its transition time
/// moves only when its status does.
fn set_condition(
    status: &mut BudgetStatus,
    allowed: bool,
    reason: &str,
    message: &str,
    now: SystemTime,
) {
    let holds = if allowed { "True" } else { "False" };
    let observed_generation = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let previous = conditions
        .iter()
        .position(|c| c.type_ == DISRUPTION_ALLOWED);
    let since = previous
        .map(|i| &conditions[i])
        .filter(|c| c.status == holds)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(now.try_into().unwrap_or_default()));
    let condition = Condition {
        type_: DISRUPTION_ALLOWED.to_owned(),
        status: holds.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time: since,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// A count as a status holds it (`int32`).
fn count(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

/// The status Kubernetes' disruption controller gives `budget` (of
/// `generation`) over the `pods` of its namespace, at `now`; `scale` as
/// for [`Budget::expected_and_desired`]. Also when to look again: when a
/// disrupted pod's entry runs out.
pub fn compute_status(
    budget: &Budget,
    pods: &[StoredPod],
    scale: impl Fn(&v1::ObjectMeta) -> Result<(String, i64), String>,
    now: SystemTime,
) -> (BudgetStatus, Option<Duration>) {
    let previous = &budget.status;
    let selected: Vec<&StoredPod> = pods.iter().filter(|p| budget.selects(p.meta())).collect();
    let mut status = previous.clone();
    let (expected, desired) = match budget.expected_and_desired(&selected, scale) {
        Ok(counts) => counts,
        Err(why) => {
            // Kubernetes' fail-safe: nothing may be disrupted.
            status.disruptions_allowed = 0;
            set_condition(&mut status, false, "SyncFailed", &why, now);
            return (status, None);
        }
    };
    // Evicted pods not yet being deleted, for at most two minutes.
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for pod in &selected {
        let name = pod.meta().name.as_str();
        let Some(at) = previous.disrupted_pods.as_ref().and_then(|d| d.get(name)) else {
            continue;
        };
        if is_being_deleted(pod.meta()) {
            continue;
        }
        let since = SystemTime::from(at.0);
        // A pod of the name created since is the evicted one's replacement
        // (a StatefulSet's member comes back under its name).
        let created = pod.meta().creation_timestamp.as_str();
        if humantime::parse_rfc3339_weak(created).is_ok_and(|c| c >= since) {
            continue;
        }
        let until = since + DISRUPTED_POD_TIMEOUT;
        let Ok(left) = until.duration_since(now) else {
            continue;
        };
        recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
        disrupted.insert(name.to_owned(), at.clone());
    }
    let healthy = selected
        .iter()
        .filter(|p| counts_as_healthy(p))
        .filter(|p| !disrupted.contains_key(&p.meta().name))
        .count();
    let healthy = i64::try_from(healthy).unwrap_or(i64::MAX);
    let mut allowed = healthy - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    // Kubernetes' omissions: `observedGeneration` and `disruptedPods` are
    // `omitempty`, the counts are not.
    status.observed_generation = Some(budget.generation).filter(|g| *g != 0);
    status.disrupted_pods = Some(disrupted).filter(|d| !d.is_empty());
    status.disruptions_allowed = count(allowed);
    status.current_healthy = count(healthy);
    status.desired_healthy = count(desired);
    status.expected_pods = count(expected);
    if allowed > 0 {
        set_condition(&mut status, true, "SufficientPods", "", now);
    } else {
        set_condition(&mut status, false, "InsufficientPods", "", now);
    }
    (status, recheck)
}

/// What evicting a pod comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionDecision {
    /// The pod may go without touching a budget: delete it.
    Allowed,
    /// The pod may go, taking one of `budget`'s allowed disruptions (a
    /// conditional write of its status) first.
    Disrupt { budget: String },
    /// Refused (429): `budget` wants `desired` healthy pods and has
    /// `healthy`.
    Refused {
        budget: String,
        desired: i64,
        healthy: i64,
    },
    /// Refused (429) for now: the disruption controller has not yet
    /// counted `budget`'s current spec.
    NotYetCounted { budget: String },
    /// More than one budget selects the pod, which Kubernetes' eviction
    /// does not support (500): their names.
    SeveralBudgets(Vec<String>),
}

/// Whether `pod` may be evicted, given the `budgets` of its namespace and
/// their status. A pod that is not running (Pending, Succeeded, Failed) or
/// is being deleted already disrupts nothing. A pod that is not Ready may
/// go while its budget has enough healthy pods without it (or always,
/// with `unhealthyPodEvictionPolicy: AlwaysAllow`).
pub fn decide_eviction(pod: &StoredPod, budgets: &[Budget]) -> EvictionDecision {
    let phase = pods::phase(&pod.pod);
    if is_being_deleted(pod.meta()) || phase == "Pending" || pods::is_finished(&pod.pod) {
        return EvictionDecision::Allowed;
    }
    let selecting: Vec<&Budget> = budgets.iter().filter(|b| b.selects(pod.meta())).collect();
    let budget = match selecting.as_slice() {
        [] => return EvictionDecision::Allowed,
        [one] => *one,
        several => {
            let names = several.iter().map(|b| b.name.clone()).collect();
            return EvictionDecision::SeveralBudgets(names);
        }
    };
    let status = &budget.status;
    if status.observed_generation.unwrap_or(0) < budget.generation {
        return EvictionDecision::NotYetCounted {
            budget: budget.name.clone(),
        };
    }
    if !pods::is_ready(&pod.pod) {
        let has_enough =
            status.current_healthy >= status.desired_healthy && status.desired_healthy > 0;
        if budget.always_allow_unhealthy || has_enough {
            return EvictionDecision::Allowed;
        }
    }
    if status.disruptions_allowed > 0 {
        EvictionDecision::Disrupt {
            budget: budget.name.clone(),
        }
    } else {
        EvictionDecision::Refused {
            budget: budget.name.clone(),
            desired: i64::from(status.desired_healthy),
            healthy: i64::from(status.current_healthy),
        }
    }
}

/// Ready and not being deleted: what a budget counts as healthy.
fn counts_as_healthy(pod: &StoredPod) -> bool {
    pods::is_ready(&pod.pod) && !is_being_deleted(pod.meta())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::IntoObject;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW
    }

    /// A pod labelled `app=<app>`, Running, Ready or not, controlled by the
    /// ReplicaSet `rs-<app>`.
    fn pod(name: &str, app: &str, ready: bool) -> v1::Pod {
        let ready = if ready { "True" } else { "False" };
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), app.to_owned())].into(),
                owner_references: vec![v1::OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: format!("rs-{app}"),
                    uid: format!("uid-{app}"),
                    controller: Some(true),
                    ..Default::default()
                }],
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

    fn web(ready: &[bool]) -> Vec<v1::Pod> {
        ready
            .iter()
            .enumerate()
            .map(|(i, r)| pod(&format!("web-{i}"), "web", *r))
            .collect()
    }

    /// A budget over the `app=web` pods with `rule` (`minAvailable` or
    /// `maxUnavailable`) set to `value`.
    fn web_budget(rule: &str, value: Value) -> Budget {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
        spec[rule] = value;
        let mut budget = Budget::from_spec("web-pdb".into(), &spec);
        budget.generation = 1;
        budget
    }

    /// Every pod's controller has `replicas`.
    fn scaled(replicas: i64) -> impl Fn(&v1::ObjectMeta) -> Result<(String, i64), String> {
        move |meta: &v1::ObjectMeta| {
            let owner = meta
                .owner_references
                .iter()
                .find(|r| r.controller == Some(true))
                .cloned();
            owner
                .map(|r| (r.uid, replicas))
                .ok_or_else(|| format!("found no controllers for pod {:?}", meta.name))
        }
    }

    /// `(expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed)`.
    fn counts(status: &BudgetStatus) -> (i32, i32, i32, i32) {
        (
            status.expected_pods,
            status.desired_healthy,
            status.current_healthy,
            status.disruptions_allowed,
        )
    }

    /// `pods` as stored objects, to be read as the controller reads them.
    fn stored(pods: &[v1::Pod]) -> Vec<Object> {
        pods.iter().cloned().map(IntoObject::into_object).collect()
    }

    fn read(objects: Vec<Object>) -> Vec<StoredPod> {
        objects
            .into_iter()
            .map(|o| StoredPod::read(o).expect("a pod"))
            .collect()
    }

    /// [`decide_eviction`] for `pod` as stored.
    fn eviction(pod: &v1::Pod, budgets: &[Budget]) -> EvictionDecision {
        let object = pod.clone().into_object();
        decide_eviction(&StoredPod::read(object).expect("a pod"), budgets)
    }

    fn status_of(budget: &Budget, pods: &[v1::Pod], replicas: i64) -> BudgetStatus {
        compute_status(budget, &read(stored(pods)), scaled(replicas), now()).0
    }

    /// `budget` with the status the controller gives it over `pods`.
    fn counted(mut budget: Budget, pods: &[v1::Pod], replicas: i64) -> Budget {
        budget.status = status_of(&budget, pods, replicas);
        budget
    }

    #[test]
    fn min_available_as_a_count_or_a_percentage_rounded_up() {
        let pods = web(&[true, true, true]);
        let two = web_budget("minAvailable", json!(2));
        assert_eq!(counts(&status_of(&two, &pods, 3)), (3, 2, 3, 1));
        let all = web_budget("minAvailable", json!(3));
        assert_eq!(counts(&status_of(&all, &pods, 3)), (3, 3, 3, 0));
        // 67% of 3 is 2.01: 3 pods must stay.
        let most = web_budget("minAvailable", json!("67%"));
        assert_eq!(counts(&status_of(&most, &pods, 3)), (3, 3, 3, 0));
        // A percentage counts against the controllers' scale: 50% of 4 is 2.
        let half = web_budget("minAvailable", json!("50%"));
        assert_eq!(counts(&status_of(&half, &pods, 4)), (4, 2, 3, 1));
    }

    #[test]
    fn max_unavailable_counts_against_the_controllers_scale() {
        let mut pods = web(&[true, true, true]);
        let none = web_budget("maxUnavailable", json!(0));
        assert_eq!(counts(&status_of(&none, &pods, 3)), (3, 3, 3, 0));
        let one = web_budget("maxUnavailable", json!(1));
        assert_eq!(counts(&status_of(&one, &pods, 3)), (3, 2, 3, 1));
        // The ReplicaSet wants 4: one is missing already.
        assert_eq!(counts(&status_of(&one, &pods, 4)), (4, 3, 3, 0));
        // One is being deleted: it is not healthy.
        let gone_soon = pods[1].metadata.as_mut().unwrap();
        gone_soon.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(counts(&status_of(&one, &pods, 3)), (3, 2, 2, 0));
        // Percentages of the 3 expected round up: 33% is 1 unavailable,
        // 34% is 2.
        let pods = web(&[true, true, true]);
        let third = web_budget("maxUnavailable", json!("33%"));
        assert_eq!(counts(&status_of(&third, &pods, 3)), (3, 2, 3, 1));
        let more = web_budget("maxUnavailable", json!("34%"));
        assert_eq!(counts(&status_of(&more, &pods, 3)), (3, 1, 3, 2));
    }

    #[test]
    fn several_controllers_add_up_and_a_pod_without_one_fails_the_budget() {
        let mut pods = web(&[true, true]);
        let other = pods[1].metadata.as_mut().unwrap();
        other.owner_references[0].uid = "uid-other".into();
        let one = web_budget("maxUnavailable", json!(1));
        assert_eq!(counts(&status_of(&one, &pods, 2)).0, 4, "2 + 2");

        pods[1].metadata.as_mut().unwrap().owner_references.clear();
        let failed = status_of(&one, &pods, 2);
        assert_eq!(failed.disruptions_allowed, 0);
        assert_eq!(failed.allowed_condition(), Some(("False", "SyncFailed")));
        // minAvailable as a count needs no controller.
        let count = web_budget("minAvailable", json!(1));
        assert_eq!(counts(&status_of(&count, &pods, 2)), (2, 1, 2, 1));
    }

    #[test]
    fn the_condition_says_whether_a_disruption_is_allowed() {
        let pods = web(&[true, true]);
        let one = web_budget("minAvailable", json!(1));
        let status = status_of(&one, &pods, 2);
        assert_eq!(status.allowed_condition(), Some(("True", "SufficientPods")));
        assert_eq!(status.observed_generation, Some(1));
        let strict = web_budget("minAvailable", json!(2));
        let status = status_of(&strict, &pods, 2);
        assert_eq!(
            status.allowed_condition(),
            Some(("False", "InsufficientPods"))
        );
        assert_eq!(status.conditions.unwrap()[0].observed_generation, Some(1));
        // No pods: nothing to disrupt.
        let status = status_of(&one, &[], 2);
        assert_eq!(counts(&status), (0, 1, 0, 0));
    }

    #[test]
    fn an_evicted_pod_counts_as_disrupted_until_it_is_being_deleted_or_two_minutes_pass() {
        let mut pods = web(&[true, true, true]);
        let mut budget = counted(web_budget("maxUnavailable", json!(1)), &pods, 3);
        assert_eq!(budget.status.disruptions_allowed, 1);
        budget.status.take_disruption("web-0", now());
        assert_eq!(budget.status.disruptions_allowed, 0);
        // Recounted before web-0's deletion is seen: still not healthy.
        let (status, recheck) = compute_status(&budget, &read(stored(&pods)), scaled(3), now());
        assert_eq!(counts(&status), (3, 2, 2, 0));
        assert_eq!(recheck, Some(DISRUPTED_POD_TIMEOUT));
        assert!(status.disrupted_pods.unwrap().contains_key("web-0"));
        // Once it is being deleted, the entry goes.
        pods[0].metadata.as_mut().unwrap().deletion_timestamp = "2026-01-01T00:00:00Z".into();
        let (status, recheck) = compute_status(&budget, &read(stored(&pods)), scaled(3), now());
        assert!(status.disrupted_pods.is_none());
        assert_eq!(recheck, None);
        // Replaced by a new pod of the name (a StatefulSet's member): the
        // new one is not the one evicted.
        let mut replaced = web(&[true, true, true]);
        let meta = replaced[0].metadata.as_mut().unwrap();
        meta.creation_timestamp = crate::rfc3339(now());
        let (status, _) = compute_status(&budget, &read(stored(&replaced)), scaled(3), now());
        assert_eq!(counts(&status), (3, 2, 3, 1));
        assert!(status.disrupted_pods.is_none());
        // Never deleted: healthy again after two minutes.
        let pods = web(&[true, true, true]);
        let later = now() + DISRUPTED_POD_TIMEOUT + Duration::from_secs(1);
        let (status, _) = compute_status(&budget, &read(stored(&pods)), scaled(3), later);
        assert_eq!(counts(&status), (3, 2, 3, 1));
    }

    #[test]
    fn evictions_follow_the_counted_status() {
        let pods = web(&[true, true, true]);
        let one = counted(web_budget("maxUnavailable", json!(1)), &pods, 3);
        let disrupt = EvictionDecision::Disrupt {
            budget: "web-pdb".into(),
        };
        assert_eq!(eviction(&pods[0], std::slice::from_ref(&one)), disrupt);
        let mut taken = one.clone();
        taken.status.take_disruption("web-0", now());
        let refused = EvictionDecision::Refused {
            budget: "web-pdb".into(),
            desired: 2,
            healthy: 3,
        };
        assert_eq!(eviction(&pods[1], &[taken]), refused);
        // A new spec not yet counted: wait.
        let mut changed = one.clone();
        changed.generation = 2;
        let waiting = EvictionDecision::NotYetCounted {
            budget: "web-pdb".into(),
        };
        assert_eq!(eviction(&pods[1], &[changed]), waiting);
    }

    #[test]
    fn pods_that_disrupt_nothing_or_no_budget_covers_may_go() {
        let mut pods = web(&[true, false]);
        let strict = counted(web_budget("minAvailable", json!(1)), &pods, 2);
        let strict = std::slice::from_ref(&strict);
        // Unready, and the budget keeps its one healthy pod without it.
        assert_eq!(eviction(&pods[1], strict), EvictionDecision::Allowed);
        // The only healthy one may not go.
        let refused = EvictionDecision::Refused {
            budget: "web-pdb".into(),
            desired: 1,
            healthy: 1,
        };
        assert_eq!(eviction(&pods[0], strict), refused);
        // Already being deleted, or not running yet: nothing to protect.
        let gone_soon = pods[0].metadata.as_mut().unwrap();
        gone_soon.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert_eq!(eviction(&pods[0], strict), EvictionDecision::Allowed);
        let mut pending = pod("new", "web", false);
        pending.status.as_mut().unwrap().phase = "Pending".into();
        assert_eq!(eviction(&pending, strict), EvictionDecision::Allowed);
        // Another app's budget, and a budget with no selector, cover nothing.
        let db = pod("db-0", "db", true);
        assert_eq!(eviction(&db, strict), EvictionDecision::Allowed);
        let selectorless = [Budget::from_spec(
            "none".into(),
            &json!({"minAvailable": 1}),
        )];
        assert_eq!(eviction(&db, &selectorless), EvictionDecision::Allowed);
        // An unready pod under a budget with no healthy pods to spare:
        // only AlwaysAllow lets it go.
        let lone = [pod("web-9", "web", false)];
        let mut none_healthy = counted(web_budget("minAvailable", json!(1)), &lone, 1);
        let refused = EvictionDecision::Refused {
            budget: "web-pdb".into(),
            desired: 1,
            healthy: 0,
        };
        assert_eq!(
            eviction(&lone[0], std::slice::from_ref(&none_healthy)),
            refused
        );
        none_healthy.always_allow_unhealthy = true;
        assert_eq!(
            eviction(&lone[0], &[none_healthy]),
            EvictionDecision::Allowed
        );
    }

    #[test]
    fn a_pod_under_two_budgets_is_not_evicted() {
        let pods = web(&[true, true]);
        let web_pdb = web_budget("minAvailable", json!(0));
        let other = json!({"selector": {}, "maxUnavailable": "100%"});
        let two = [web_pdb, Budget::from_spec("other".into(), &other)];
        assert_eq!(
            eviction(&pods[0], &two),
            EvictionDecision::SeveralBudgets(vec!["web-pdb".into(), "other".into()])
        );
    }

    #[test]
    fn a_stored_budget_is_read_from_its_generic_object_and_its_status_written_back() {
        let content = json!({
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": "50%",
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"},
            "status": {"disruptionsAllowed": 2, "observedGeneration": 3, "currentHealthy": 4},
        });
        let stored = v1::GenericObject {
            api_version: "policy/v1".into(),
            kind: "PodDisruptionBudget".into(),
            metadata: Some(v1::ObjectMeta {
                name: "web-pdb".into(),
                generation: 3,
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).unwrap(),
        };
        let read = Budget::of(&stored.clone().into_object()).expect("a budget");
        assert_eq!(read.name, "web-pdb");
        assert_eq!(read.min_available, Some(Amount::Percent(50)));
        assert_eq!(read.max_unavailable, None);
        assert!(read.always_allow_unhealthy);
        assert_eq!(read.generation, 3);
        assert_eq!(
            (read.status.disruptions_allowed, read.status.current_healthy),
            (2, 4)
        );
        assert!(read.selects(pod("a", "web", true).metadata.as_ref().unwrap()));
        assert!(!read.selects(pod("b", "db", true).metadata.as_ref().unwrap()));
        let not_a_budget = pod("a", "web", true).into_object();
        assert_eq!(Budget::of(&not_a_budget), None);

        let mut status = read.status.clone();
        status.take_disruption("web-0", now());
        let written = status.write_into(&stored);
        let json = generic::content(&written)["status"].clone();
        assert_eq!(json["disruptionsAllowed"], 1);
        assert_eq!(json["disruptedPods"]["web-0"], crate::rfc3339(now()));
        assert_eq!(json["expectedPods"], 0);
        let again = Budget::of(&written.into_object()).unwrap();
        assert_eq!(again.status, status);
    }
}
