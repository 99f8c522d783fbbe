//! Secrets as Kubernetes' own `Secret` type: how the master's token and
//! key controllers, the agent's env, volumes and image pulls, and
//! `skiff ctl` read one, and how the master makes one. A Secret is a JSON
//! document (a generic object); one written in the protobuf model of an
//! older release reads the same ([`crate::legacy_bodies`]).

use std::collections::BTreeMap;

use skiff_proto::api::Object;
use skiff_proto::v1::{GenericObject, ObjectMeta};

use crate::typed;
pub use crate::typed::api::core::v1::Secret;
use crate::{generic, legacy_bodies, Body};

pub use k8s_openapi::ByteString;

/// The Secret `object` holds, without its metadata (which stays the
/// object's); `None` for another kind of object, or a damaged one.
pub fn read(object: &Object) -> Option<Secret> {
    let document;
    let body = match &object.kind {
        Some(Body::Secret(_)) => {
            document = legacy_bodies::to_document(object.clone());
            document.kind.as_ref()?
        }
        other => other.as_ref()?,
    };
    let Body::Generic(g) = body else {
        return None;
    };
    if g.api_version != "v1" || g.kind != "Secret" {
        return None;
    }
    typed::decode(serde_json::Value::Object(generic::content(g))).ok()
}

/// Whether `object` is a Secret, in either encoding.
pub fn is_secret(object: &Object) -> bool {
    match &object.kind {
        Some(Body::Secret(_)) => true,
        Some(Body::Generic(g)) => g.api_version == "v1" && g.kind == "Secret",
        _ => false,
    }
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
    let mut content = match typed::encode(secret) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for own in ["apiVersion", "kind", "metadata"] {
        content.remove(own);
    }
    let mut document = GenericObject {
        api_version: "v1".to_owned(),
        kind: "Secret".to_owned(),
        metadata: Some(metadata),
        content: Vec::new(),
    };
    generic::set_content(&mut document, &content);
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
        let config_map = GenericObject {
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
