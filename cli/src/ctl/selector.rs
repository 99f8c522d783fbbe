//! `-l`/`--selector`: kubectl's label-selector syntax (`app=web`,
//! `app!=x`, `tier in (a,b)`, `tier notin (a)`, `key`, `!key`, joined by
//! commas, all of which must hold). The text becomes a Kubernetes
//! `LabelSelector` of `matchExpressions` (`skiff_objects::selector::parse`,
//! the parser the REST API's `labelSelector` uses too), which
//! `selector::matches` then decides, so `-l` means exactly what a
//! Deployment's selector means. The API lists whole kinds, so the client
//! does the filtering.

use skiff_objects::selector;
use skiff_objects::ObjectExt;
use skiff_proto::api::Object;
use skiff_proto::v1::LabelSelector;

/// Why a `-l` selector could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad selector {text:?}: {reason}; write terms like app=web, app!=web, 'tier in (a,b)', 'tier notin (a)', key or !key, joined by commas")]
pub struct SelectorError {
    pub text: String,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, SelectorError>;

/// A parsed `-l` selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    selector: LabelSelector,
}

impl Selector {
    /// Reads kubectl's selector syntax.
    pub fn parse(text: &str) -> Result<Selector> {
        let fail = |reason: String| SelectorError {
            text: text.to_owned(),
            reason,
        };
        // The API reads an empty selector as "everything"; on the command
        // line it is a mistake.
        if text.trim().is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        let selector = selector::parse(text).map_err(|e| fail(e.reason))?;
        Ok(Selector { selector })
    }

    /// The selector as the API writes it.
    pub fn label_selector(&self) -> &LabelSelector {
        &self.selector
    }

    /// Whether the object's labels satisfy every term.
    pub fn matches(&self, object: &Object) -> bool {
        selector::matches(&self.selector, &object.meta().labels)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use skiff_objects::IntoObject;
    use skiff_proto::v1::{ObjectMeta, Pod};

    use super::*;

    fn pod(labels: &[(&str, &str)]) -> Object {
        Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn the_text_becomes_match_expressions() {
        let selector = Selector::parse("app!=web,tier in (a, b)").unwrap();
        let terms: Vec<(&str, &str, Vec<&str>)> = selector
            .label_selector()
            .match_expressions
            .iter()
            .map(|r| {
                let values = r.values.iter().map(String::as_str).collect();
                (r.key.as_str(), r.operator.as_str(), values)
            })
            .collect();
        assert_eq!(
            terms,
            vec![
                ("app", "NotIn", vec!["web"]),
                ("tier", "In", vec!["a", "b"])
            ]
        );
    }

    #[test]
    fn bad_selectors_name_the_text_and_what_is_wrong() {
        for (text, needle) in [
            ("", "empty"),
            ("  ", "empty"),
            ("tier in (a,b", "not closed"),
            ("-app=web", "not a label key"),
        ] {
            let e = Selector::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {needle:?} not in {e}");
            assert!(e.contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn objects_are_matched_by_their_labels() {
        let web = pod(&[("app", "web"), ("tier", "front")]);
        let api = pod(&[("app", "api")]);
        let bare = pod(&[]);
        for (text, expected) in [
            ("app=web", [true, false, false]),
            ("app!=web", [false, true, true]),
            ("app,!tier", [false, true, false]),
        ] {
            let selector = Selector::parse(text).unwrap();
            let got = [&web, &api, &bare].map(|o| selector.matches(o));
            assert_eq!(got, expected, "{text}");
        }
    }
}
