//! Namespaces as Kubernetes' own `Namespace` type: how the controllers,
//! the namespace-deletion checks and `skiff ctl` read one, and how the
//! master makes the built-in ones. A Namespace is a JSON document (a
//! generic object); one written in the protobuf model of an older release
//! reads the same ([`crate::legacy_bodies`]).

use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

pub use crate::typed::api::core::v1::Namespace;
use crate::{generic, legacy_bodies, Body};

/// The Namespace `object` holds, without its metadata (which stays the
/// object's); `None` for another kind of object, or a damaged one.
pub fn read(object: &Object) -> Option<Namespace> {
    legacy_bodies::read_core(object, "Namespace")
}

/// Whether `object` is a Namespace, in either encoding.
pub fn is_namespace(object: &Object) -> bool {
    legacy_bodies::is_core_kind(object, "Namespace")
}

/// `status.phase` (`Active`, `Terminating`); `None` when unset, or for
/// another kind of object.
pub fn phase(object: &Object) -> Option<String> {
    read(object)?.status?.phase
}

/// A Namespace in `phase` (none when empty: the writer defaults it to
/// `Active`), with `metadata`, as the store keeps it.
pub fn object(metadata: ObjectMeta, phase: &str) -> Object {
    let content = if phase.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "status": { "phase": phase } })
    };
    let document = generic::document("v1", "Namespace", Some(metadata), content);
    Object {
        kind: Some(Body::Generic(document)),
    }
}

/// [`object`] named `name`, with nothing else in its metadata.
pub fn named(name: &str, phase: &str) -> Object {
    object(
        ObjectMeta {
            name: name.to_owned(),
            ..Default::default()
        },
        phase,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::v1;

    #[test]
    fn a_namespace_made_here_reads_back_in_either_encoding() {
        let made = named("team", "Terminating");
        assert!(is_namespace(&made));
        assert!(legacy_bodies::is_moved_document(&made));
        assert_eq!(phase(&made).as_deref(), Some("Terminating"));
        let legacy = legacy_bodies::to_legacy(made.clone()).unwrap();
        let Some(Body::Namespace(n)) = &legacy.kind else {
            panic!("not in the protobuf model: {legacy:?}");
        };
        assert_eq!(n.status.as_ref().unwrap().phase, "Terminating");
        assert!(is_namespace(&legacy));
        assert_eq!(phase(&legacy).as_deref(), Some("Terminating"));
        assert_eq!(phase(&named("fresh", "")), None);
    }

    #[test]
    fn the_phase_defaults_to_active_even_from_a_null_status() {
        for status in [serde_json::json!(null), serde_json::json!({})] {
            let mut object = named("team", "");
            let Some(Body::Generic(g)) = object.kind.as_mut() else {
                unreachable!()
            };
            let content = serde_json::json!({ "status": status });
            generic::set_content(g, content.as_object().unwrap());
            generic::apply_defaults(crate::Kind::Namespace, g);
            assert_eq!(phase(&object).as_deref(), Some("Active"), "{status}");
        }
        let mut leaving = named("team", "Terminating");
        if let Some(Body::Generic(g)) = leaving.kind.as_mut() {
            generic::apply_defaults(crate::Kind::Namespace, g);
        }
        assert_eq!(phase(&leaving).as_deref(), Some("Terminating"));
    }

    #[test]
    fn other_objects_are_no_namespaces() {
        let secret = crate::secrets::object(Default::default(), "Opaque", Default::default());
        assert!(!is_namespace(&secret));
        assert_eq!(read(&secret), None);
        let node = Object {
            kind: Some(Body::Node(v1::Node::default())),
        };
        assert_eq!(phase(&node), None);
    }
}
