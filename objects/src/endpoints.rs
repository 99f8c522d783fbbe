//! Endpoints as Kubernetes' own `Endpoints` type: how the endpoints
//! controllers write them and the agent's Service rules, DNS and health
//! checks, the REST proxy and `skiff ctl` read them. Endpoints are a JSON
//! document (a generic object); one written in the protobuf model of an
//! older release reads the same ([`crate::legacy_bodies`]).

use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

pub use crate::typed::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference,
};
use crate::{generic, legacy_bodies, typed, Body, ObjectExt};

/// The Endpoints `object` holds, with only the name and namespace of its
/// metadata (the rest stays the object's); `None` for another kind of
/// object, or a damaged one.
pub fn read(object: &Object) -> Option<Endpoints> {
    let mut endpoints: Endpoints = legacy_bodies::read_core(object, "Endpoints")?;
    let meta = object.meta();
    let named = |s: &String| (!s.is_empty()).then(|| s.clone());
    endpoints.metadata.name = named(&meta.name);
    endpoints.metadata.namespace = named(&meta.namespace);
    Some(endpoints)
}

/// Whether `object` is an Endpoints, in either encoding.
pub fn is_endpoints(object: &Object) -> bool {
    legacy_bodies::is_core_kind(object, "Endpoints")
}

/// The ready addresses of all subsets.
pub fn ready_count(endpoints: &Endpoints) -> usize {
    subsets(endpoints).iter().map(|s| ready(s).len()).sum()
}

/// `(namespace, name)` of read Endpoints (empty when unset).
pub fn key(endpoints: &Endpoints) -> (&str, &str) {
    let meta = &endpoints.metadata;
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The subsets (none when unset).
pub fn subsets(endpoints: &Endpoints) -> &[EndpointSubset] {
    endpoints.subsets.as_deref().unwrap_or_default()
}

/// A subset's ready addresses.
pub fn ready(subset: &EndpointSubset) -> &[EndpointAddress] {
    subset.addresses.as_deref().unwrap_or_default()
}

/// A subset's addresses that are not ready.
pub fn not_ready(subset: &EndpointSubset) -> &[EndpointAddress] {
    subset.not_ready_addresses.as_deref().unwrap_or_default()
}

/// A subset's ports.
pub fn ports(subset: &EndpointSubset) -> &[EndpointPort] {
    subset.ports.as_deref().unwrap_or_default()
}

/// A port's protocol, `TCP` when unset.
pub fn protocol(port: &EndpointPort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// Endpoints with `subsets` (none when empty), with `metadata`, as the
/// store keeps them.
pub fn object(metadata: ObjectMeta, subsets: Vec<EndpointSubset>) -> Object {
    let endpoints = Endpoints {
        subsets: (!subsets.is_empty()).then_some(subsets),
        ..Endpoints::default()
    };
    let document = generic::document("v1", "Endpoints", Some(metadata), typed::encode(&endpoints));
    Object {
        kind: Some(Body::Generic(document)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subset() -> EndpointSubset {
        EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "10.42.1.5".into(),
                node_name: Some("n1".into()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some("web-1".into()),
                    namespace: Some("shop".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            not_ready_addresses: Some(vec![EndpointAddress {
                ip: "10.42.2.7".into(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: 8080,
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn endpoints_made_here_read_back_in_either_encoding() {
        let meta = ObjectMeta {
            name: "web".into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let made = object(meta, vec![subset()]);
        assert!(is_endpoints(&made));
        assert!(legacy_bodies::is_moved_document(&made));
        let read_back = read(&made).expect("Endpoints");
        assert_eq!(key(&read_back), ("shop", "web"));
        let only = &subsets(&read_back)[0];
        assert_eq!(ready(only)[0].ip, "10.42.1.5");
        assert_eq!(not_ready(only)[0].ip, "10.42.2.7");
        assert_eq!(ports(only)[0].port, 8080);
        assert_eq!(protocol(&ports(only)[0]), "TCP");
        let legacy = legacy_bodies::to_legacy(made.clone()).unwrap();
        let Some(Body::Endpoints(e)) = &legacy.kind else {
            panic!("not in the protobuf model: {legacy:?}");
        };
        assert_eq!(
            e.subsets[0].addresses[0].target_ref.as_ref().unwrap().name,
            "web-1"
        );
        assert_eq!(read(&legacy), Some(read_back));
    }

    #[test]
    fn a_field_the_protobuf_model_lacks_is_refused_for_an_older_reader() {
        let mut with_path = subset();
        with_path.addresses.as_mut().unwrap()[0]
            .target_ref
            .as_mut()
            .unwrap()
            .field_path = Some("spec.containers{web}".into());
        let made = object(ObjectMeta::default(), vec![with_path]);
        let error = legacy_bodies::to_legacy(made).unwrap_err().to_string();
        assert!(
            error.contains("\"subsets[0].addresses[0].targetRef.fieldPath\""),
            "{error}"
        );
    }

    #[test]
    fn addresses_ports_and_protocols_are_checked_as_kube_apiserver_checks_them() {
        let bad = EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "10.42.1.300".into(),
                ..Default::default()
            }]),
            not_ready_addresses: Some(vec![EndpointAddress {
                ip: "10.42.2.7".into(),
                ..Default::default()
            }]),
            ports: Some(vec![
                EndpointPort {
                    port: 0,
                    ..Default::default()
                },
                EndpointPort {
                    port: 53,
                    protocol: Some("ICMP".into()),
                    ..Default::default()
                },
            ]),
        };
        let made = object(ObjectMeta::default(), vec![subset(), bad]);
        let Some(Body::Generic(g)) = &made.kind else {
            unreachable!()
        };
        let problems = generic::validate(crate::Kind::Endpoints, g);
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subsets[1].addresses[0].ip",
                "subsets[1].ports[0].port",
                "subsets[1].ports[1].protocol"
            ],
            "{problems:?}"
        );
        assert!(
            problems[0].1.contains("must be a valid IP address"),
            "{problems:?}"
        );
        let mut defaulted = made.clone();
        if let Some(Body::Generic(g)) = defaulted.kind.as_mut() {
            generic::apply_defaults(crate::Kind::Endpoints, g);
        }
        let read_back = read(&defaulted).unwrap();
        let port = &ports(&subsets(&read_back)[0])[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"), "defaulted");
    }

    #[test]
    fn other_objects_are_no_endpoints() {
        let namespace = crate::namespaces::named("team", "");
        assert!(!is_endpoints(&namespace));
        assert_eq!(read(&namespace), None);
    }
}
