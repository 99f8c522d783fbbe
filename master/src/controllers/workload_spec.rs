//! What the DaemonSet and StatefulSet controllers read alike of their
//! workloads, which are held as generic objects (`objects::generic`: typed
//! metadata, the rest as the JSON it was sent as): the `spec` with its
//! `null`s removed, the selector (an empty one refused: it would claim
//! every pod of the namespace), the pod template as stored, int-or-string
//! fields as the text `deployment::resolve` reads; and the status, read
//! and written back with Kubernetes' field names. [`SpecError`] names the
//! field a workload cannot be acted on for.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use skiff_proto::v1;

use skiff_objects::{generic, selector, typed};

/// A workload its controller cannot act on: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The workload's `spec` (`null` when it has none), every `null` member
/// removed.
pub fn spec_of(object: &v1::GenericObject) -> Value {
    let mut spec = generic::content(object)
        .remove("spec")
        .unwrap_or(Value::Null);
    strip_nulls(&mut spec);
    spec
}

/// `spec.selector`; refused when it does not read, or when it is empty.
pub fn selector_of(spec: &Value) -> Result<v1::LabelSelector, SpecError> {
    let selector: v1::LabelSelector = match spec.get("selector") {
        Some(s) => serde_json::from_value(s.clone())
            .map_err(|e| SpecError::new("spec.selector", e.to_string()))?,
        None => v1::LabelSelector::default(),
    };
    if selector::is_empty(&selector) {
        return Err(SpecError::new(
            "spec.selector",
            "an empty selector would claim every pod",
        ));
    }
    Ok(selector)
}

/// `spec.template` as stored (an empty object when there is none).
pub fn template_of(spec: &Value) -> Value {
    spec.get("template")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// A workload's pod template as its pods are made from it: the metadata
/// read (labels, annotations and finalizers are what a pod takes of it),
/// the spec kept as the JSON it is stored as, so that a pod has every
/// field its template has, not only those of skiff's protobuf model.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTemplate {
    pub metadata: v1::ObjectMeta,
    /// `spec.template.spec`, without `null`s (an empty object when unset).
    pub spec: Value,
}

impl PodTemplate {
    /// Reads `spec.template` (as stored); refused when its metadata does
    /// not read, or its spec is not an object.
    pub fn read(template: &Value) -> Result<PodTemplate, SpecError> {
        let metadata = match template.get("metadata") {
            Some(meta) if !meta.is_null() => {
                // `creationTimestamp: null`, as kubectl writes it.
                let mut meta = meta.clone();
                strip_nulls(&mut meta);
                serde_json::from_value(meta)
                    .map_err(|e| SpecError::new("spec.template.metadata", e.to_string()))?
            }
            _ => v1::ObjectMeta::default(),
        };
        let mut spec = match template.get("spec") {
            Some(spec @ Value::Object(_)) => spec.clone(),
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(_) => return Err(SpecError::new("spec.template.spec", "expected an object")),
        };
        strip_nulls(&mut spec);
        Ok(PodTemplate { metadata, spec })
    }

    /// A pod document of `spec` (this template's, changed as the
    /// workload's pods need) with `metadata`.
    pub fn pod(metadata: v1::ObjectMeta, spec: Value) -> skiff_proto::api::Object {
        let content = serde_json::json!({ "spec": spec });
        let document = generic::document("v1", "Pod", Some(metadata), content);
        skiff_proto::api::Object {
            kind: Some(skiff_proto::api::object::Kind::Generic(document)),
        }
    }
}

/// The containers and init containers of a pod spec (JSON), each a JSON
/// object.
pub fn containers_mut(spec: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    let (containers, init) = match spec.as_object_mut() {
        Some(map) => {
            let mut containers = None;
            let mut init = None;
            for (key, value) in map.iter_mut() {
                match key.as_str() {
                    "containers" => containers = value.as_array_mut(),
                    "initContainers" => init = value.as_array_mut(),
                    _ => {}
                }
            }
            (containers, init)
        }
        None => (None, None),
    };
    containers
        .into_iter()
        .flatten()
        .chain(init.into_iter().flatten())
        .filter_map(Value::as_object_mut)
}

/// An int-or-string field as the text `deployment::resolve` reads
/// (`default` when unset).
pub fn int_or_string(value: &Value, default: &str) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => default.to_owned(),
    }
}

pub use skiff_objects::generic::strip_nulls;

/// The workload's `status` (the default, all zero, when it has none or
/// one that does not read).
pub fn read_status<T: DeserializeOwned + Default>(object: &v1::GenericObject) -> T {
    typed::decode_or_default(generic::content(object).get("status"))
}

/// A workload status kept in its generic object's `status`: Kubernetes'
/// type, read and written whole.
pub trait StoredStatus: Serialize + DeserializeOwned + Default {
    /// The status `object` has (all zero when it has none, or one that
    /// does not read).
    fn read(object: &v1::GenericObject) -> Self {
        read_status(object)
    }

    /// `object` with this status.
    fn write_into(&self, object: &v1::GenericObject) -> v1::GenericObject {
        with_status(object, self)
    }
}

/// A count as Kubernetes writes an `omitempty` one: left out when zero.
pub fn unless_zero<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

/// `object` with `status` as its `status`.
pub fn with_status<T: Serialize>(object: &v1::GenericObject, status: &T) -> v1::GenericObject {
    let mut object = object.clone();
    let mut content = generic::content(&object);
    let status = match typed::encode(status) {
        Value::Null => Value::Object(Map::new()),
        status => status,
    };
    content.insert("status".to_owned(), status);
    generic::set_content(&mut object, &content);
    object
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(content: Value) -> v1::GenericObject {
        let mut object = v1::GenericObject {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            ..Default::default()
        };
        if let Value::Object(map) = content {
            generic::set_content(&mut object, &map);
        }
        object
    }

    #[test]
    fn the_spec_reads_without_nulls_and_with_its_selector_and_template() {
        let spec = spec_of(&object(json!({"spec": {
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": null},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": null}},
            "minReadySeconds": null,
        }})));
        assert!(spec.get("minReadySeconds").is_none());
        assert_eq!(
            template_of(&spec),
            json!({"metadata": {"labels": {"app": "web"}}})
        );
        assert_eq!(selector_of(&spec).unwrap().match_labels["app"], "web");
        assert_eq!(spec_of(&object(json!({}))), Value::Null);
        assert_eq!(template_of(&Value::Null), json!({}));
    }

    #[test]
    fn an_empty_or_unreadable_selector_is_refused_naming_it() {
        for spec in [
            json!({}),
            json!({"selector": {}}),
            json!({"selector": {"matchLabels": 3}}),
        ] {
            let e = selector_of(&spec).unwrap_err();
            assert_eq!(e.field, "spec.selector", "{spec}");
        }
        assert_eq!(int_or_string(&json!(2), "1"), "2");
        assert_eq!(int_or_string(&json!("25%"), "1"), "25%");
        assert_eq!(int_or_string(&json!(""), "1"), "1");
        assert_eq!(int_or_string(&Value::Null, "0"), "0");
    }

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Counts {
        ready_replicas: i32,
    }

    #[test]
    fn the_status_round_trips_and_the_rest_is_kept() {
        let stored = object(json!({"spec": {"replicas": 2}, "status": {"readyReplicas": "x"}}));
        // A status that does not read is all zero.
        assert_eq!(read_status::<Counts>(&stored), Counts::default());
        let written = with_status(&stored, &Counts { ready_replicas: 2 });
        assert_eq!(
            read_status::<Counts>(&written),
            Counts { ready_replicas: 2 }
        );
        assert_eq!(generic::content(&written)["spec"]["replicas"], 2);
    }
}
