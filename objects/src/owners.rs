//! Owner references: which object controls another. The ReplicaSet and
//! Deployment controllers set them; the garbage collector and adoption
//! follow them.

use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Kind, ObjectExt};

/// The controlling owner of an object (the reference with `controller:
/// true`), of whatever kind.
pub fn controller(meta: &v1::ObjectMeta) -> Option<&v1::OwnerReference> {
    meta.owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The controlling owner of an object, if it is of `kind`: a reference of
/// that kind marked `controller` (among several marked, which Kubernetes
/// would refuse, that one still counts).
pub fn controller_of(object: &Object, kind: Kind) -> Option<&v1::OwnerReference> {
    controlled_by(object.meta(), kind)
}

/// [`controller_of`] on an object's metadata.
pub fn controlled_by(meta: &v1::ObjectMeta, kind: Kind) -> Option<&v1::OwnerReference> {
    meta.owner_references
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == kind.name())
}

/// An owner reference that makes `owner` the controller of a dependent.
pub fn controller_reference(owner: &Object) -> Option<v1::OwnerReference> {
    let kind = owner.kind().ok()?;
    let meta = owner.meta();
    Some(v1::OwnerReference {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(kind: &str, uid: &str, controller: Option<bool>) -> v1::OwnerReference {
        v1::OwnerReference {
            api_version: "apps/v1".to_owned(),
            kind: kind.to_owned(),
            name: format!("{uid}-name"),
            uid: uid.to_owned(),
            controller,
            block_owner_deletion: None,
        }
    }

    fn pod_owned_by(references: Vec<v1::OwnerReference>) -> Object {
        Object {
            kind: Some(crate::Body::Pod(v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: "p".to_owned(),
                    owner_references: references,
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn the_controller_is_the_reference_marked_controller_of_any_kind() {
        let pod = pod_owned_by(vec![
            reference("ReplicaSet", "a", None),
            reference("ReplicaSet", "b", Some(false)),
            reference("StatefulSet", "c", Some(true)),
        ]);
        assert_eq!(controller(pod.meta()).map(|r| r.uid.as_str()), Some("c"));
        assert_eq!(
            controller_of(&pod, Kind::StatefulSet).map(|r| r.uid.as_str()),
            Some("c")
        );
        assert_eq!(controller_of(&pod, Kind::ReplicaSet), None);
    }

    #[test]
    fn a_controller_of_a_kind_is_found_among_several_marked_controller() {
        let pod = pod_owned_by(vec![
            reference("ReplicaSet", "a", Some(true)),
            reference("DaemonSet", "b", Some(true)),
        ]);
        assert_eq!(controller(pod.meta()).map(|r| r.uid.as_str()), Some("a"));
        assert_eq!(
            controller_of(&pod, Kind::DaemonSet).map(|r| r.uid.as_str()),
            Some("b")
        );
    }

    #[test]
    fn owners_that_are_not_controllers_make_no_controller() {
        let pod = pod_owned_by(vec![
            reference("ReplicaSet", "a", None),
            reference("ReplicaSet", "b", Some(false)),
        ]);
        assert_eq!(controller(pod.meta()), None);
        assert_eq!(controller(pod_owned_by(Vec::new()).meta()), None);
    }
}
