//! What label and field selectors read of an object: its labels, and the
//! fields kube-apiserver lets each kind be selected by ([`COMMON_FIELDS`]
//! for every kind, [`kind_fields`] for a few more). The REST API matches
//! selectors on an object's JSON (`rest/selectors.rs`, which takes these
//! lists); the store only asks whether a change altered any of it
//! ([`selected_alike`]), to keep the version before such a change for
//! watches with a selector: kube-apiserver sends them DELETED when an
//! object stops matching and ADDED when it starts to, which needs both
//! versions.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{Kind, ObjectExt};

/// The name field selectors know events.k8s.io's Events by.
pub const EVENTS_K8S_IO_EVENT: &str = "Event.events.k8s.io";

/// Fields every kind may be selected by. An update never changes them.
pub const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The further fields `kind` (a kind's name, or [`EVENTS_K8S_IO_EVENT`])
/// may be selected by, as kube-apiserver allows.
pub fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "ReplicaSet" => &["status.replicas"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        // kubernetes pkg/apis/events/v1 AddFieldLabelConversionsForEvent.
        EVENTS_K8S_IO_EVENT => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        _ => &[],
    }
}

/// One selectable field's value on a stored object, compared as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Flag(bool),
    Count(i32),
    /// A document's field (`Null` when unset).
    Json(serde_json::Value),
}

/// The value of `field` (one of [`kind_fields`]) on a stored object;
/// `None` for a field that is not one of its typed kind's (and for
/// Events, which live outside the store). A document's field is read from
/// its content, whatever its kind.
pub fn field_value<'a>(object: &'a Object, field: &str) -> Option<FieldValue<'a>> {
    use FieldValue::{Count, Flag, Json, Text};
    match object.kind.as_ref()? {
        Body::Pod(pod) => {
            let spec = pod.spec.as_ref();
            let status = pod.status.as_ref();
            let text = |s: Option<&'a String>| Text(s.map_or("", String::as_str));
            Some(match field {
                "spec.nodeName" => text(spec.map(|s| &s.node_name)),
                "spec.restartPolicy" => text(spec.map(|s| &s.restart_policy)),
                "spec.schedulerName" => text(spec.map(|s| &s.scheduler_name)),
                "spec.serviceAccountName" => text(spec.map(|s| &s.service_account_name)),
                "spec.hostNetwork" => Flag(spec.is_some_and(|s| s.host_network)),
                "status.phase" => text(status.map(|s| &s.phase)),
                "status.podIP" => text(status.map(|s| &s.pod_ip)),
                // skiff's pods have no nominatedNodeName: always empty.
                "status.nominatedNodeName" => Text(""),
                _ => return None,
            })
        }
        Body::Node(node) if field == "spec.unschedulable" => {
            Some(Flag(node.spec.as_ref().is_some_and(|s| s.unschedulable)))
        }
        Body::Generic(document) => {
            let content = serde_json::Value::Object(crate::generic::content(document));
            let pointer = format!("/{}", field.replace('.', "/"));
            Some(Json(
                content
                    .pointer(&pointer)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            ))
        }
        Body::ReplicaSet(set) if field == "status.replicas" => {
            Some(Count(set.status.as_ref().map_or(0, |s| s.replicas)))
        }
        _ => None,
    }
}

/// Whether every label and field selector selects `before` and `after`
/// (two versions of one object of `kind`) alike: same labels, same values
/// of the kind's selectable fields. When they differ a selector may start
/// or stop matching, and watches with one need the version before.
pub fn selected_alike(kind: Kind, before: &Object, after: &Object) -> bool {
    if before.meta().labels != after.meta().labels {
        return false;
    }
    let fields: &[&str] = match kind {
        // `metadata.name` and `metadata.namespace` only, whatever the
        // custom kind is called.
        Kind::Custom(_) => &[],
        kind => kind_fields(kind.name()),
    };
    if let (Some(Body::Generic(a)), Some(Body::Generic(b))) = (&before.kind, &after.kind) {
        // Each document's content parsed once for all its fields (a pod's
        // every write asks).
        if a.content == b.content || fields.is_empty() {
            return true;
        }
        let (a, b) = (
            serde_json::Value::Object(crate::generic::content(a)),
            serde_json::Value::Object(crate::generic::content(b)),
        );
        return fields.iter().all(|field| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let at =
                |v: &'_ serde_json::Value| v.pointer(&pointer).cloned().filter(|v| !v.is_null());
            at(&a) == at(&b)
        });
    }
    fields
        .iter()
        .all(|field| field_value(before, field) == field_value(after, field))
}

#[cfg(test)]
mod tests {
    use skiff_proto::v1;

    use super::*;
    use crate::IntoObject;

    fn pod(labels: &[(&str, &str)], node: &str, phase: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn every_selectable_field_of_a_stored_kind_is_read() {
        let objects = [
            ("Pod", pod(&[], "", "")),
            ("Node", v1::Node::default().into_object()),
            ("Namespace", crate::namespaces::named("a", "")),
            (
                "Secret",
                crate::secrets::object(Default::default(), "", Default::default()),
            ),
            ("ReplicaSet", v1::ReplicaSet::default().into_object()),
        ];
        for (kind, object) in &objects {
            for field in kind_fields(kind) {
                assert!(
                    field_value(object, field).is_some(),
                    "{kind} {field}: a selectable field the store cannot compare"
                );
            }
        }
        assert_eq!(field_value(&objects[0].1, "spec.unschedulable"), None);
        // A document's field is its content's value, whatever the kind.
        let secret =
            crate::secrets::object(Default::default(), "kubernetes.io/tls", Default::default());
        assert_eq!(
            field_value(&secret, "type"),
            Some(FieldValue::Json("kubernetes.io/tls".into()))
        );
    }

    #[test]
    fn changes_of_labels_or_selectable_fields_are_told_apart_from_others() {
        let before = pod(&[("app", "web")], "", "Pending");
        let same = pod(&[("app", "web")], "", "Pending");
        assert!(selected_alike(Kind::Pod, &before, &same));
        let relabelled = pod(&[("app", "db")], "", "Pending");
        assert!(!selected_alike(Kind::Pod, &before, &relabelled));
        let bound = pod(&[("app", "web")], "n1", "Pending");
        assert!(!selected_alike(Kind::Pod, &before, &bound));
        let running = pod(&[("app", "web")], "", "Running");
        assert!(!selected_alike(Kind::Pod, &before, &running));
        // What no selector reads: a condition, a container's image.
        let mut conditions = same.clone();
        if let Some(Body::Pod(p)) = conditions.kind.as_mut() {
            let status = p.status.get_or_insert_with(Default::default);
            status.conditions.push(v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            });
        }
        assert!(selected_alike(Kind::Pod, &before, &conditions));
        let unschedulable = v1::Node {
            spec: Some(v1::NodeSpec {
                unschedulable: true,
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        let node = v1::Node::default().into_object();
        assert!(!selected_alike(Kind::Node, &node, &unschedulable));
    }

    #[test]
    fn a_documents_selectable_field_is_compared_from_its_content() {
        let active = crate::namespaces::named("team", "Active");
        let terminating = crate::namespaces::named("team", "Terminating");
        assert!(!selected_alike(Kind::Namespace, &active, &terminating));
        assert!(selected_alike(Kind::Namespace, &active, &active.clone()));
        assert_eq!(
            field_value(&active, "status.phase"),
            Some(FieldValue::Json("Active".into()))
        );
        assert_eq!(
            field_value(&crate::namespaces::named("new", ""), "status.phase"),
            Some(FieldValue::Json(serde_json::Value::Null))
        );
    }
}
