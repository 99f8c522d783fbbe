//! Secrets as Kubernetes' own `Secret` type: how the master's token and
//! key controllers, the agent's env, volumes and image pulls, and
//! `skiff ctl` read one, and how the master makes one. A Secret is a JSON
//! document (a generic object); one written in the protobuf model of an
//! older release reads the same ([`crate::legacy_bodies`]).

use std::collections::BTreeMap;

use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

use crate::typed;
pub use crate::typed::api::core::v1::Secret;
use crate::{generic, legacy_bodies, Body};

pub use k8s_openapi::ByteString;

/// The Secret `object` holds, without its metadata (which stays the
/// object's); `None` for another kind of object, or a damaged one.
pub fn read(object: &Object) -> Option<Secret> {
    legacy_bodies::read_core(object, "Secret")
}

/// Whether `object` is a Secret, in either encoding.
pub fn is_secret(object: &Object) -> bool {
    legacy_bodies::is_core_kind(object, "Secret")
}

/// A Secret's values, decoded (an empty map for none).
pub fn values(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect()
}

/// The value of `key`, decoded.
pub fn value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    secret.data.as_ref()?.get(key).map(|v| v.0.as_slice())
}

/// `type`, `Opaque` when unset.
pub fn type_of(secret: &Secret) -> &str {
    secret.type_.as_deref().unwrap_or("Opaque")
}

/// A Secret of `type_` holding `values`, with `metadata`, as the store
/// keeps it.
pub fn object(metadata: ObjectMeta, type_: &str, values: BTreeMap<String, Vec<u8>>) -> Object {
    let secret = Secret {
        type_: Some(type_.to_owned()),
        data: Some(
            values
                .into_iter()
                .map(|(key, value)| (key, ByteString(value)))
                .collect(),
        ),
        ..Secret::default()
    };
    of(metadata, &secret)
}

/// `secret` (whose own `metadata` is ignored) with `metadata`, as the
/// store keeps it.
pub fn of(metadata: ObjectMeta, secret: &Secret) -> Object {
    let document = generic::document("v1", "Secret", Some(metadata), typed::encode(secret));
    Object {
        kind: Some(Body::Generic(document)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_made_here_reads_back_in_either_encoding() {
        let meta = ObjectMeta {
            name: "creds".into(),
            namespace: "app".into(),
            ..Default::default()
        };
        let values = BTreeMap::from([("password".to_owned(), b"hunter2".to_vec())]);
        let made = object(meta, "kubernetes.io/basic-auth", values.clone());
        let Some(Body::Generic(g)) = &made.kind else {
            panic!("not a document: {made:?}");
        };
        assert_eq!(
            serde_json::Value::Object(generic::content(g)),
            serde_json::json!({"type": "kubernetes.io/basic-auth", "data": {"password": "aHVudGVyMg=="}})
        );
        let read_back = read(&made).expect("a Secret");
        assert_eq!(type_of(&read_back), "kubernetes.io/basic-auth");
        assert_eq!(super::values(&read_back), values);
        assert_eq!(value(&read_back, "password"), Some(&b"hunter2"[..]));
        assert_eq!(value(&read_back, "user"), None);

        let legacy = legacy_bodies::to_legacy(made.clone()).unwrap();
        assert!(matches!(legacy.kind, Some(Body::Secret(_))));
        assert!(is_secret(&legacy) && is_secret(&made));
        assert_eq!(read(&legacy), Some(read_back));
        let config_map = skiff_proto::v1::GenericObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            ..Default::default()
        };
        let config_map = Object {
            kind: Some(Body::Generic(config_map)),
        };
        assert_eq!(read(&config_map), None);
        assert!(!is_secret(&config_map));
    }
}
