//! Which CustomResourceDefinitions' names are accepted, and the status a
//! CRD shows for it. Within one API group, a CRD's resource names (plural,
//! singular, short names) and kind names (kind, list kind) must not be
//! another's: the CRD created first keeps them (Kubernetes' naming
//! controller; decided here from the set of CRDs alone, by creation time
//! then name, so every reader of one set decides the same). A CRD whose
//! names are accepted is Established and served; one that is not stays
//! stored, unserved, with `NamesAccepted` False saying which name is taken.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::definition::{Definition, CLEANUP_FINALIZER};

/// A name another CRD of the group holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameConflict {
    /// `PluralConflict`, `SingularConflict`, `ShortNamesConflict`,
    /// `KindConflict` or `ListKindConflict`.
    pub reason: &'static str,
    pub message: String,
}

/// Whether each definition's names are accepted, by CRD name.
pub fn accept<'a>(
    definitions: impl IntoIterator<Item = &'a Definition>,
) -> BTreeMap<String, Result<(), NameConflict>> {
    let mut ordered: Vec<&Definition> = definitions.into_iter().collect();
    ordered.sort_by(|a, b| {
        (a.creation_timestamp.as_str(), a.name.as_str())
            .cmp(&(b.creation_timestamp.as_str(), b.name.as_str()))
    });
    // group → (resource names, kind names) taken.
    let mut taken: BTreeMap<&str, (HashSet<&str>, HashSet<&str>)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for definition in ordered {
        let (resources, kinds) = taken.entry(definition.group.as_str()).or_default();
        let names = &definition.names;
        let conflict = |reason: &'static str, name: &str| NameConflict {
            reason,
            message: format!("{name:?} is already in use"),
        };
        let verdict = if resources.contains(names.plural.as_str()) {
            Err(conflict("PluralConflict", &names.plural))
        } else if resources.contains(names.singular.as_str()) {
            Err(conflict("SingularConflict", &names.singular))
        } else if let Some(short) = names
            .short_names
            .iter()
            .find(|s| resources.contains(s.as_str()))
        {
            Err(conflict("ShortNamesConflict", short))
        } else if kinds.contains(names.kind.as_str()) {
            Err(conflict("KindConflict", &names.kind))
        } else if kinds.contains(names.list_kind.as_str()) {
            Err(conflict("ListKindConflict", &names.list_kind))
        } else {
            resources.insert(names.plural.as_str());
            resources.insert(names.singular.as_str());
            resources.extend(names.short_names.iter().map(String::as_str));
            kinds.insert(names.kind.as_str());
            kinds.insert(names.list_kind.as_str());
            Ok(())
        };
        out.insert(definition.name.clone(), verdict);
    }
    out
}

/// The status a CRD should show: `conditions` (NamesAccepted, Established,
/// and Terminating while it is being deleted), `acceptedNames` and
/// `storedVersions` (every version ever stored: the current one added to
/// those `current` lists). A condition keeps its `lastTransitionTime`
/// while its status stays; `now` is the time of a change.
pub fn desired_status(
    definition: &Definition,
    accepted: &Result<(), NameConflict>,
    current: &Value,
    now: &str,
) -> Value {
    let mut conditions = Vec::new();
    let (status, reason, message) = match accepted {
        Ok(()) => ("True", "NoConflicts", "no conflicts found".to_owned()),
        Err(conflict) => ("False", conflict.reason, conflict.message.clone()),
    };
    conditions.push(("NamesAccepted", status, reason, message));
    let established = match accepted {
        Ok(()) => (
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted".to_owned(),
        ),
        Err(_) => (
            "False",
            "NotAccepted",
            "not all names are accepted".to_owned(),
        ),
    };
    conditions.push(("Established", established.0, established.1, established.2));
    if definition.deleting {
        conditions.push((
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress".to_owned(),
        ));
    }
    let previous = current["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let before = previous.iter().find(|c| c["type"] == kind);
            let since = match before {
                Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
                _ => Value::from(now),
            };
            json!({
                "type": kind,
                "status": status,
                "lastTransitionTime": since,
                "reason": reason,
                "message": message,
            })
        })
        .collect();
    let accepted_names = match accepted {
        Ok(()) => {
            let names = &definition.names;
            let mut value = json!({
                "plural": names.plural,
                "singular": names.singular,
                "kind": names.kind,
                "listKind": names.list_kind,
            });
            if !names.short_names.is_empty() {
                value["shortNames"] = json!(names.short_names);
            }
            if !names.categories.is_empty() {
                value["categories"] = json!(names.categories);
            }
            value
        }
        // Names never accepted: the plural and kind only, as Kubernetes
        // shows a CRD it cannot establish.
        Err(_) => current["acceptedNames"].clone(),
    };
    let mut stored: Vec<Value> = current["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(storage) = definition.storage_version() {
        if !stored.iter().any(|v| v == storage.name.as_str()) {
            stored.push(Value::from(storage.name.as_str()));
        }
    }
    let mut out = json!({
        "conditions": conditions,
        "storedVersions": stored,
    });
    out["acceptedNames"] = if accepted_names.is_null() {
        json!({"plural": "", "kind": ""})
    } else {
        accepted_names
    };
    out
}

/// Whether a CRD still waits for its objects to be deleted.
pub fn holds_cleanup(finalizers: &[String]) -> bool {
    finalizers.iter().any(|f| f == CLEANUP_FINALIZER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_resources::definition::{Names, Version};

    fn definition(name: &str, created: &str, group: &str, plural: &str, kind: &str) -> Definition {
        Definition {
            name: name.into(),
            creation_timestamp: created.into(),
            group: group.into(),
            names: Names {
                plural: plural.into(),
                singular: plural.trim_end_matches('s').into(),
                kind: kind.into(),
                list_kind: format!("{kind}List"),
                short_names: vec![format!("{}x", &plural[..1])],
                categories: Vec::new(),
            },
            versions: vec![Version {
                name: "v1".into(),
                served: true,
                storage: true,
                ..Version::default()
            }],
            ..Definition::default()
        }
    }

    #[test]
    fn the_first_definition_keeps_a_name_within_its_group() {
        let first = definition(
            "widgets.a.io",
            "2024-01-01T00:00:00Z",
            "a.io",
            "widgets",
            "Widget",
        );
        let second = definition(
            "things.a.io",
            "2024-02-01T00:00:00Z",
            "a.io",
            "things",
            "Widget",
        );
        let other_group = definition(
            "widgets.b.io",
            "2024-03-01T00:00:00Z",
            "b.io",
            "widgets",
            "Widget",
        );
        let shorts = definition(
            "wombats.a.io",
            "2024-04-01T00:00:00Z",
            "a.io",
            "wombats",
            "Wombat",
        );
        let verdicts = accept([&second, &shorts, &first, &other_group]);
        assert_eq!(verdicts["widgets.a.io"], Ok(()));
        assert_eq!(verdicts["widgets.b.io"], Ok(()));
        let refused = verdicts["things.a.io"].clone().unwrap_err();
        assert_eq!(refused.reason, "KindConflict");
        assert_eq!(refused.message, "\"Widget\" is already in use");
        // `wx` is widgets' short name already.
        assert_eq!(
            verdicts["wombats.a.io"].clone().unwrap_err().reason,
            "ShortNamesConflict"
        );
    }

    #[test]
    fn the_status_says_established_and_keeps_transition_times() {
        let widgets = definition(
            "widgets.a.io",
            "2024-01-01T00:00:00Z",
            "a.io",
            "widgets",
            "Widget",
        );
        let status = desired_status(&widgets, &Ok(()), &Value::Null, "T1");
        assert_eq!(status["conditions"][1]["type"], "Established");
        assert_eq!(status["conditions"][1]["status"], "True");
        assert_eq!(status["acceptedNames"]["kind"], "Widget");
        assert_eq!(status["storedVersions"], json!(["v1"]));
        let again = desired_status(&widgets, &Ok(()), &status, "T2");
        assert_eq!(again, status);
        let mut deleting = widgets.clone();
        deleting.deleting = true;
        let terminating = desired_status(&deleting, &Ok(()), &status, "T3");
        assert_eq!(terminating["conditions"][2]["type"], "Terminating");
        assert_eq!(terminating["conditions"][0]["lastTransitionTime"], "T1");
    }
}
