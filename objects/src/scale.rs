//! The scale of a workload, as Kubernetes' `scale` subresource
//! (`autoscaling/v1` Scale) presents it: `spec.replicas` (what is wanted),
//! `status.replicas` (what there is) and the selector of its pods, for the
//! kinds that have one (Deployment, ReplicaSet, StatefulSet: documents;
//! an older client's Deployment or ReplicaSet model too). Read and set
//! here once, for the REST API's `scale` subresource and for the
//! HorizontalPodAutoscaler controller, which scales its target as that
//! subresource does: a write of `spec.replicas` and nothing else.

use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::LabelSelector;

use super::{body_kind, generic, Kind};

/// What the `scale` subresource shows of an object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scale {
    /// `spec.replicas` (1 when unset, as Kubernetes defaults it).
    pub replicas: i32,
    /// `status.replicas`.
    pub status_replicas: i32,
    /// `spec.selector`: the pods the workload counts.
    pub selector: LabelSelector,
}

/// Why an object has no scale to read or set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// Its kind has no `scale` subresource.
    #[error("{kind} has no scale subresource (only Deployments, ReplicaSets and StatefulSets do)")]
    NoScale { kind: String },
    /// A workload whose `spec.selector` is not a label selector.
    #[error("the selector of {kind} {name:?} cannot be read: {reason}")]
    BadSelector {
        kind: String,
        name: String,
        reason: String,
    },
}

/// The kinds with a `scale` subresource.
pub fn has_scale(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
    )
}

fn no_scale(object: &Object) -> ScaleError {
    let kind = match &object.kind {
        Some(body) => body_kind(body).map_or("an object of no served kind", Kind::name),
        None => "an empty object",
    };
    ScaleError::NoScale {
        kind: kind.to_owned(),
    }
}

/// The scale of `object`.
pub fn read(object: &Object) -> Result<Scale, ScaleError> {
    match &object.kind {
        Some(Body::Deployment(d)) => {
            let spec = d.spec.clone().unwrap_or_default();
            Ok(Scale {
                replicas: spec.replicas.unwrap_or(1),
                status_replicas: d.status.as_ref().map_or(0, |s| s.replicas),
                selector: spec.selector.unwrap_or_default(),
            })
        }
        Some(Body::ReplicaSet(r)) => {
            let spec = r.spec.clone().unwrap_or_default();
            Ok(Scale {
                replicas: spec.replicas.unwrap_or(1),
                status_replicas: r.status.as_ref().map_or(0, |s| s.replicas),
                selector: spec.selector.unwrap_or_default(),
            })
        }
        // Held as documents: their JSON.
        Some(body @ Body::Generic(g)) if body_kind(body).is_some_and(has_scale) => {
            let content = generic::content(g);
            let spec = content.get("spec").unwrap_or(&Value::Null);
            let selector = match spec.get("selector") {
                None | Some(Value::Null) => LabelSelector::default(),
                Some(selector) => serde_json::from_value(selector.clone()).map_err(|e| {
                    ScaleError::BadSelector {
                        kind: g.kind.clone(),
                        name: g
                            .metadata
                            .as_ref()
                            .map_or("", |m| m.name.as_str())
                            .to_owned(),
                        reason: e.to_string(),
                    }
                })?,
            };
            let count = |v: &Value| v.as_i64().and_then(|n| i32::try_from(n).ok());
            Ok(Scale {
                replicas: spec.get("replicas").and_then(count).unwrap_or(1),
                status_replicas: content
                    .get("status")
                    .and_then(|s| s.get("replicas"))
                    .and_then(count)
                    .unwrap_or(0),
                selector,
            })
        }
        _ => Err(no_scale(object)),
    }
}

/// Sets `spec.replicas` of `object` (everything else kept), as a write of
/// its `scale` subresource does.
pub fn set_replicas(object: &mut Object, replicas: i32) -> Result<(), ScaleError> {
    let scaled = object
        .kind
        .as_ref()
        .and_then(body_kind)
        .is_some_and(has_scale);
    match object.kind.as_mut() {
        Some(Body::Deployment(d)) => {
            d.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
            Ok(())
        }
        Some(Body::ReplicaSet(r)) => {
            r.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
            Ok(())
        }
        Some(Body::Generic(g)) if scaled => {
            let mut content = generic::content(g);
            let spec = content
                .entry("spec")
                .or_insert_with(|| Value::Object(Default::default()));
            if spec.is_null() {
                *spec = Value::Object(Default::default());
            }
            if let Some(fields) = spec.as_object_mut() {
                fields.insert("replicas".to_owned(), Value::from(replicas));
            }
            generic::set_content(g, &content);
            Ok(())
        }
        _ => Err(no_scale(object)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoObject;
    use serde_json::json;
    use skiff_proto::v1;

    fn stateful_set(content: Value) -> Object {
        v1::GenericObject {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            metadata: Some(v1::ObjectMeta {
                name: "db".into(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).unwrap(),
        }
        .into_object()
    }

    #[test]
    fn a_deployments_scale_is_its_replicas_status_and_selector() {
        let mut deployment = v1::Deployment {
            spec: Some(v1::DeploymentSpec {
                replicas: Some(3),
                selector: Some(v1::LabelSelector {
                    match_labels: [("app".to_owned(), "web".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(v1::DeploymentStatus {
                replicas: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        let scale = read(&deployment).unwrap();
        assert_eq!((scale.replicas, scale.status_replicas), (3, 2));
        assert_eq!(scale.selector.match_labels["app"], "web");
        set_replicas(&mut deployment, 5).unwrap();
        assert_eq!(read(&deployment).unwrap().replicas, 5);
        // As stored: a document, its replicas set in its JSON.
        let mut document = crate::legacy_bodies::to_document(deployment);
        assert_eq!(
            read(&document).unwrap(),
            Scale {
                replicas: 5,
                ..scale
            }
        );
        set_replicas(&mut document, 1).unwrap();
        let Some(Body::Generic(g)) = &document.kind else {
            panic!("not a document")
        };
        let content = generic::content(g);
        assert_eq!(content["spec"]["replicas"], 1);
        assert_eq!(content["status"]["replicas"], 2, "status untouched");
    }

    #[test]
    fn a_statefulsets_replicas_are_set_in_its_json_keeping_the_rest() {
        let mut set = stateful_set(json!({
            "spec": {"replicas": 3, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "db"}}},
            "status": {"replicas": 2},
        }));
        let scale = read(&set).unwrap();
        assert_eq!((scale.replicas, scale.status_replicas), (3, 2));
        assert_eq!(scale.selector.match_labels["app"], "db");
        set_replicas(&mut set, 1).unwrap();
        let Some(Body::Generic(g)) = &set.kind else {
            panic!("not generic")
        };
        let content = generic::content(g);
        assert_eq!(content["spec"]["replicas"], 1);
        assert_eq!(content["spec"]["serviceName"], "db");
        assert_eq!(content["status"]["replicas"], 2, "status untouched");
    }

    #[test]
    fn kinds_without_a_scale_are_refused_by_name() {
        let mut pod = v1::Pod::default().into_object();
        let e = read(&pod).unwrap_err();
        assert!(e.to_string().starts_with("Pod has no scale"), "{e}");
        assert!(set_replicas(&mut pod, 2).is_err());
        let bad = stateful_set(json!({"spec": {"selector": {"matchLabels": "app"}}}));
        assert!(matches!(read(&bad), Err(ScaleError::BadSelector { .. })));
    }
}
