//! `labelSelector` and `fieldSelector` query parameters as Kubernetes
//! parses them: labels with `=`, `==`, `!=`, `in (...)`, `notin (...)`,
//! `key` and `!key`, comma-separated (all must hold; read by the object
//! model's `selector::parse`, which `skiff ctl -l` uses too); fields with `=`,
//! `==` and `!=` on the fields each kind supports (`metadata.name` and
//! `metadata.namespace` everywhere), anything else refused by name. Events
//! are selected by the fields kube-apiserver selects them by
//! (`involvedObject.*`, `reason`, `source`, ...; `kubectl describe` lists
//! an object's Events with them), events.k8s.io's by its own names for
//! the same fields (`regarding.*`, `reportingController`). Which fields
//! each kind has: `skiff_objects::selectable`.

use std::collections::BTreeMap;

use serde_json::Value;

use skiff_objects::registry::KindInfo;
use skiff_objects::selectable::{kind_fields, COMMON_FIELDS, EVENTS_K8S_IO_EVENT};
use skiff_objects::{selector, Kind};
use skiff_proto::v1;

/// A selector that does not parse, or names a field that is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse labelSelector {selector:?}: {why}")]
    Label { selector: String, why: String },
    #[error("invalid fieldSelector requirement {requirement:?}: expected field=value, field==value or field!=value")]
    Field { requirement: String },
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
}

/// A parsed `labelSelector` (`skiff_objects::selector::parse`, the parser
/// `skiff ctl -l` uses too); empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(v1::LabelSelector);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        selector::parse(text)
            .map(LabelSelector)
            .map_err(|e| SelectorError::Label {
                selector: text.to_owned(),
                why: e.reason,
            })
    }

    pub fn is_empty(&self) -> bool {
        selector::is_empty(&self.0)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        selector::matches(&self.0, labels)
    }
}

/// A parsed `fieldSelector`; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The kind name [`FieldSelector::parse`] takes for objects of `info`'s
/// kind: its name, qualified by its group where two groups serve one name
/// (`Event.events.k8s.io`).
pub fn selector_kind(info: &KindInfo) -> &'static str {
    match info.kind {
        Kind::EventsK8sIoEvent => EVENTS_K8S_IO_EVENT,
        // `metadata.name` and `metadata.namespace` only, whatever the
        // custom kind is called.
        Kind::Custom(_) => "",
        kind => kind.name(),
    }
}

impl FieldSelector {
    /// Parses `text` for objects of `kind`, refusing fields it does not
    /// support.
    pub fn parse(kind: &str, text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Field {
                    requirement: part.to_owned(),
                });
            };
            let field = field.trim();
            if !COMMON_FIELDS.contains(&field) && !kind_fields(kind).contains(&field) {
                return Err(SelectorError::UnsupportedField {
                    field: field.to_owned(),
                });
            }
            requirements.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name `metadata.name=X` selects, if the selector is just that.
    pub fn single_name(&self) -> Option<&str> {
        match self.0.as_slice() {
            [(field, true, name)] if field == "metadata.name" => Some(name),
            _ => None,
        }
    }

    /// The value `field` must equal, if the selector requires one
    /// (`field=value` or `field==value`; apimachinery's
    /// `RequiresExactMatch`).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, equal, _)| *equal && f == field)
            .map(|(_, _, value)| value.as_str())
    }

    /// Whether the object (as JSON) satisfies every requirement. A missing
    /// field reads as `""` (or `false` for booleans, as Kubernetes does).
    /// An Event's `source` is its source's component, else its reporting
    /// component (kubernetes `pkg/registry/core/event/strategy.go`).
    pub fn matches_json(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut at = object;
            if field == "source" {
                at = match &object["source"]["component"] {
                    Value::String(s) if !s.is_empty() => &object["source"]["component"],
                    _ => &object["reportingComponent"],
                };
            } else {
                for segment in field.split('.') {
                    at = &at[segment];
                }
            }
            let actual = match at {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
                    "false".to_owned()
                }
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_label_operator_selects_as_kubernetes_does() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, cache)", true, false),
            ("app notin (web,cache)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app in (web,db),!tier", false, true),
            ("app,tier=front", true, false),
            ("", true, true),
        ];
        for (text, on_web, on_db) in cases {
            let s = LabelSelector::parse(text).unwrap();
            assert_eq!(s.matches(&web), on_web, "{text} on web");
            assert_eq!(s.matches(&db), on_db, "{text} on db");
        }
    }

    #[test]
    fn bad_label_selectors_are_refused_naming_the_selector_and_why() {
        for (text, why) in [
            ("app in web", "expected \"(\""),
            ("=x", "expected a label key"),
            ("app=in valid", "expected \",\" or the end"),
            ("a b c", "after \"a\""),
            ("app in (x", "not closed"),
            ("app=web,,tier=a", "expected a label key"),
        ] {
            let e = LabelSelector::parse(text).unwrap_err();
            assert!(matches!(e, SelectorError::Label { .. }), "{text}: {e}");
            let message = e.to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains(why), "{text}: {why:?} not in {message}");
        }
    }

    #[test]
    fn field_selectors_match_supported_fields_and_refuse_others() {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("Pod", "metadata.name=a,spec.nodeName==n1").unwrap();
        assert!(s.matches_json(&pod));
        let s = FieldSelector::parse("Pod", "status.phase!=Running").unwrap();
        assert!(!s.matches_json(&pod));
        let s = FieldSelector::parse("Pod", "spec.nodeName=").unwrap();
        assert!(!s.matches_json(&pod));
        assert!(s.matches_json(&json!({"metadata": {"name": "b"}})));
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name=a")
                .unwrap()
                .single_name(),
            Some("a")
        );
        assert_eq!(
            FieldSelector::parse("Deployment", "spec.replicas=1").unwrap_err(),
            SelectorError::UnsupportedField {
                field: "spec.replicas".into()
            }
        );
        assert!(matches!(
            FieldSelector::parse("Pod", "metadata.name").unwrap_err(),
            SelectorError::Field { .. }
        ));
        let node = json!({"metadata": {"name": "n"}});
        assert!(FieldSelector::parse("Node", "spec.unschedulable=false")
            .unwrap()
            .matches_json(&node));
    }

    #[test]
    fn events_are_selected_as_kubectl_describe_selects_them() {
        let event = json!({
            "metadata": {"name": "web.17f3a", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "shop", "uid": "u-1"},
            "reason": "Scheduled",
            "type": "Normal",
            "source": {"component": "default-scheduler"},
            "reportingComponent": "default-scheduler"
        });
        let describe = "involvedObject.name=web,involvedObject.namespace=shop,\
                        involvedObject.uid=u-1,involvedObject.kind=Pod";
        let s = FieldSelector::parse("Event", describe).unwrap();
        assert!(s.matches_json(&event));
        let other_uid = "involvedObject.name=web,involvedObject.uid=u-2";
        assert!(!FieldSelector::parse("Event", other_uid)
            .unwrap()
            .matches_json(&event));
        for (selector, selects) in [
            ("reason=Scheduled", true),
            ("type!=Warning", true),
            ("source=default-scheduler", true),
            ("source=kubelet", false),
            ("reportingComponent=default-scheduler", true),
            ("involvedObject.kind=Node", false),
            ("metadata.namespace=shop", true),
        ] {
            let s = FieldSelector::parse("Event", selector).unwrap();
            assert_eq!(s.matches_json(&event), selects, "{selector}");
        }
        // Without a source component, `source` is the reporting one.
        let reported = json!({"reportingComponent": "kubelet"});
        let s = FieldSelector::parse("Event", "source=kubelet").unwrap();
        assert!(s.matches_json(&reported));
        assert_eq!(
            FieldSelector::parse("Event", "note=x").unwrap_err(),
            SelectorError::UnsupportedField {
                field: "note".into()
            }
        );
    }

    #[test]
    fn events_k8s_io_events_are_selected_by_their_own_field_names() {
        use skiff_objects::registry::info;
        assert_eq!(selector_kind(info(Kind::Event)), "Event");
        assert_eq!(selector_kind(info(Kind::Pod)), "Pod");
        let kind = selector_kind(info(Kind::EventsK8sIoEvent));
        let event = json!({
            "regarding": {"kind": "Pod", "name": "web", "uid": "u-1"},
            "reportingController": "kubelet",
            "reason": "Pulled"
        });
        let s = FieldSelector::parse(kind, "regarding.name=web,regarding.uid=u-1").unwrap();
        assert!(s.matches_json(&event));
        let s = FieldSelector::parse(kind, "reportingController=kubelet,reason=Pulled").unwrap();
        assert!(s.matches_json(&event));
        assert!(FieldSelector::parse(kind, "involvedObject.name=web").is_err());
        assert!(FieldSelector::parse(kind, "metadata.name=x").is_ok());
    }
}
