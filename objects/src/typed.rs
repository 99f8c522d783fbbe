//! Kubernetes' own types (the `k8s-openapi` crate, Kubernetes 1.34) for
//! the parts of stored generic objects that skiff acts on: the
//! controllers', the scheduler's and the volume binder's views of Jobs,
//! DaemonSets, PersistentVolumes and the rest are these types, not copies
//! written by hand.
//!
//! Every decode goes through [`decode`] (a `serde_json::Value`) and every
//! encode through [`encode`], so each type's serde code is in the binary
//! once: a `Deserialize` impl is compiled again for every deserializer it
//! is used with. The one exception is `services::read`, which decodes a
//! stored Service straight from its bytes (Services are read on every
//! event of theirs by several controllers and by every agent; BENCHMARKS
//! has what it saved and cost). Stored objects were checked against the API's schema
//! when they were written, so a decode fails only on a damaged object.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use k8s_openapi::api;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `T` read from `value`.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(value)
}

/// A Job's spec read from `value`. Decoded in this crate, not in the one
/// that asks: a Job spec carries a pod template, whose decoder is then
/// in the binary once, beside the one `pods::read` uses (a decode
/// instantiated in the master is compiled again at its optimisation
/// level).
pub fn job_spec(value: Value) -> Result<api::batch::v1::JobSpec, serde_json::Error> {
    decode(value)
}

/// A CronJob's spec read from `value`, decoded in this crate as
/// [`job_spec`] is.
pub fn cron_job_spec(value: Value) -> Result<api::batch::v1::CronJobSpec, serde_json::Error> {
    decode(value)
}

/// `T` read from `value`, or `T`'s default when there is none or it does
/// not read (the views that match against it then match nothing).
pub fn decode_or_default<T: DeserializeOwned + Default>(value: Option<&Value>) -> T {
    value
        .and_then(|v| decode(v.clone()).ok())
        .unwrap_or_default()
}

/// Takes the member `name` out of the object `value` (`null` when it has
/// none): a large part the caller keeps as stored instead of decoding.
pub fn take_member(value: &mut Value, name: &str) -> Value {
    match value.as_object_mut() {
        Some(fields) => fields.remove(name).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// `value` as JSON, with Kubernetes' omissions (unset fields left out).
pub fn encode<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The `storage` of a resource map (`capacity`, `requests`) as a
/// [`crate::Quantity`]; zero when unset or unreadable.
pub fn quantity_of(
    resources: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    name: &str,
) -> crate::Quantity {
    resources
        .and_then(|map| map.get(name))
        .and_then(|q| crate::Quantity::parse(&q.0).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_type_reads_from_json_and_writes_back_without_its_unset_fields() {
        let spec: api::batch::v1::JobSpec = decode(json!({
            "completions": 3,
            "template": {"spec": {"restartPolicy": "Never", "containers": []}}
        }))
        .unwrap();
        assert_eq!(spec.completions, Some(3));
        assert_eq!(spec.parallelism, None);
        assert_eq!(
            spec.template
                .spec
                .as_ref()
                .unwrap()
                .restart_policy
                .as_deref(),
            Some("Never")
        );
        assert_eq!(
            encode(&api::batch::v1::JobStatus {
                active: Some(2),
                ..Default::default()
            }),
            json!({"active": 2})
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_or_the_default() {
        let wrong = json!({"completions": "three"});
        let e = decode::<api::batch::v1::JobSpec>(wrong.clone()).unwrap_err();
        assert!(e.to_string().contains("three"), "{e}");
        let spec: api::batch::v1::JobSpec = decode_or_default(Some(&wrong));
        assert_eq!(spec, api::batch::v1::JobSpec::default());
    }

    #[test]
    fn a_quantity_is_read_by_name() {
        let map = [(
            "storage".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()),
        )]
        .into();
        assert_eq!(
            quantity_of(Some(&map), "storage"),
            crate::Quantity::parse("2Gi").unwrap()
        );
        assert_eq!(quantity_of(Some(&map), "cpu"), crate::Quantity::default());
        assert_eq!(quantity_of(None, "storage"), crate::Quantity::default());
    }
}
