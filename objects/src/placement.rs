//! What a pod asks of a node, as predicates the scheduler and the DaemonSet
//! controller share: taints against tolerations ([`tolerates`],
//! [`untolerated`]), `nodeSelector` ([`node_selector_matches`]), and
//! required node affinity ([`NodeSelectorTerm`]: `matchExpressions` on the
//! node's labels, `matchFields` on `metadata.name`, read from JSON because
//! only the kinds held as generic objects carry it), plus the taint keys
//! Kubernetes gives nodes in trouble.

use std::collections::BTreeMap;

use skiff_proto::v1;

/// A node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// A node the node lifecycle has not heard from (Ready Unknown).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// A node short of disk.
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// A node short of memory.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// A node short of process IDs.
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// A cordoned node (`spec.unschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// A node whose network is not set up yet.
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Whether toleration `t` tolerates `taint`: the same effect (or any, when
/// it names none) and the same key with operator `Exists` or the same
/// value (or every key, when it names none, with `Exists`).
pub fn tolerates(t: &v1::Toleration, taint: &v1::Taint) -> bool {
    let effect_ok = t.effect.is_empty() || t.effect == taint.effect;
    let key_ok = if t.key.is_empty() {
        t.operator == "Exists"
    } else {
        t.key == taint.key && (t.operator == "Exists" || t.value == taint.value)
    };
    effect_ok && key_ok
}

/// The first of `taints` whose effect `counts` that none of `tolerations`
/// tolerates.
pub fn untolerated<'a>(
    taints: &'a [v1::Taint],
    tolerations: &[v1::Toleration],
    counts: impl Fn(&str) -> bool,
) -> Option<&'a v1::Taint> {
    taints
        .iter()
        .filter(|taint| counts(&taint.effect))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Whether a node's `labels` have every label of a pod's `nodeSelector`,
/// with its value.
pub fn node_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `key`, `operator` (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`,
/// `Lt`) and `values`.
pub use crate::typed::api::core::v1::NodeSelectorRequirement;
/// One term of a required node affinity
/// (`requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]`):
/// every requirement must hold (`matchExpressions` on the node's labels,
/// `matchFields` on its fields, of which Kubernetes allows
/// `metadata.name`), and a term without any matches no node.
pub use crate::typed::api::core::v1::NodeSelectorTerm;

/// The required node affinity of a pod spec given as JSON: `None` when it
/// has none; terms that do not read as terms count as none at all, so they
/// match no node.
pub fn required_node_affinity(pod_spec: &serde_json::Value) -> Option<Vec<NodeSelectorTerm>> {
    let terms = pod_spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        .filter(|required| !required.is_null())?
        .get("nodeSelectorTerms")
        .cloned()
        .unwrap_or(serde_json::Value::Array(Vec::new()));
    Some(crate::typed::decode(terms).unwrap_or_default())
}

/// Whether the node named `name` with `labels` satisfies one of `terms`
/// (none: no node does).
pub fn node_matches_terms(
    terms: &[NodeSelectorTerm],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        let empty = expressions.is_empty() && fields.is_empty();
        !empty
            && expressions
                .iter()
                .all(|r| requirement_holds(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_holds(r, Some(name)))
    })
}

/// Whether `value` (`None`: the label is missing) satisfies `r`.
fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let listed = |v: &str| values.iter().any(|x| x == v);
    match r.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => value.is_none_or(|v| !listed(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(value), [bound]) = (value, values) else {
                return false;
            };
            match (value.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> v1::Taint {
        v1::Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> v1::Toleration {
        v1::Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect.into(),
            toleration_seconds: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tolerations_match_taints_by_key_value_and_effect() {
        let gpu = taint("dedicated", "gpu", "NoSchedule");
        let same_value = toleration("dedicated", "Equal", "gpu", "");
        assert!(tolerates(&same_value, &gpu));
        assert!(tolerates(
            &toleration("dedicated", "Exists", "", "NoSchedule"),
            &gpu
        ));
        assert!(tolerates(&toleration("", "Exists", "", ""), &gpu));
        let other_value = toleration("dedicated", "Equal", "db", "");
        assert!(!tolerates(&other_value, &gpu));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &gpu
        ));
        assert!(!tolerates(&toleration("", "Equal", "", ""), &gpu));

        let taints = [
            taint("a", "", "PreferNoSchedule"),
            gpu,
            taint(TAINT_UNREACHABLE, "", "NoExecute"),
        ];
        let hard = |effect: &str| effect == "NoSchedule" || effect == "NoExecute";
        let found = untolerated(&taints, &[], hard).map(|t| t.key.as_str());
        assert_eq!(found, Some("dedicated"), "PreferNoSchedule is soft");
        let tolerated = [toleration("dedicated", "Exists", "", "")];
        let found = untolerated(&taints, &tolerated, hard).map(|t| t.key.as_str());
        assert_eq!(found, Some(TAINT_UNREACHABLE));
        let tolerated = [toleration("", "Exists", "", "")];
        assert_eq!(untolerated(&taints, &tolerated, hard), None);
    }

    #[test]
    fn a_node_selector_needs_every_label_with_its_value() {
        let node = labels(&[("disk", "ssd"), ("zone", "a")]);
        assert!(node_selector_matches(&labels(&[]), &node));
        assert!(node_selector_matches(&labels(&[("disk", "ssd")]), &node));
        assert!(!node_selector_matches(
            &labels(&[("disk", "ssd"), ("gpu", "yes")]),
            &node
        ));
        assert!(!node_selector_matches(&labels(&[("zone", "b")]), &node));
    }

    #[test]
    fn required_node_affinity_reads_terms_and_matches_labels_or_the_name() {
        let terms = json!([
            {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "cores", "operator": "Gt", "values": ["2"]},
                {"key": "spot", "operator": "DoesNotExist"}
            ]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-9"]}]}
        ]);
        let required = json!({"nodeSelectorTerms": terms});
        let spec = json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": required}}});
        let terms = required_node_affinity(&spec).expect("terms");
        assert_eq!(terms.len(), 2);
        let fits = |name: &str, l: &[(&str, &str)]| node_matches_terms(&terms, name, &labels(l));
        assert!(fits("n1", &[("zone", "a"), ("cores", "4")]));
        assert!(!fits("n1", &[("zone", "c"), ("cores", "4")]));
        // Gt is strict.
        assert!(!fits("n1", &[("zone", "a"), ("cores", "2")]));
        assert!(!fits("n1", &[("zone", "a"), ("cores", "x")]));
        assert!(!fits("n1", &[("zone", "a"), ("cores", "4"), ("spot", "")]));
        assert!(fits("edge-9", &[]), "by name, through matchFields");

        assert_eq!(required_node_affinity(&json!({"containers": []})), None);
        let no_terms = json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}});
        let none = required_node_affinity(&no_terms).expect("an affinity");
        assert!(!node_matches_terms(&none, "n1", &labels(&[])));
        let empty_term = [NodeSelectorTerm::default()];
        assert!(!node_matches_terms(&empty_term, "n1", &labels(&[])));
        let not_in = [NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "spot".into(),
                operator: "NotIn".into(),
                values: Some(vec!["true".into()]),
            }]),
            ..Default::default()
        }];
        assert!(node_matches_terms(&not_in, "n1", &labels(&[])));
        assert!(!node_matches_terms(
            &not_in,
            "n1",
            &labels(&[("spot", "true")])
        ));
    }
}
