//! Label selectors: `matchLabels` and `matchExpressions` with Kubernetes'
//! operators (In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;

use skiff_proto::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector matches
/// everything, as in Kubernetes. Unknown operators match nothing
/// (validation refuses them before they are stored).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| e.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector selects nothing in particular (no terms at all).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.is_empty() && selector.match_expressions.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["front".into(), "edge".into()],
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        assert!(matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "back")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "front"), ("canary", "1")])
        ));
        assert!(!matches(&selector, &labels(&[("tier", "front")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }
}
