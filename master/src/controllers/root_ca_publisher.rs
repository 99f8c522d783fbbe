//! Every namespace's `kube-root-ca.crt` ConfigMap, holding the cluster CA's
//! certificate under `ca.crt`, as kube-controller-manager's
//! root-ca-cert-publisher keeps it: made when a namespace appears, made
//! again when deleted, and its `ca.crt` put back when it differs (other
//! keys are dropped, as Kubernetes rewrites `data` whole). Not in a
//! namespace being deleted. Pods read it through their `kube-api-access-*`
//! volume (`objects/src/pods.rs`, `admit_service_account_token`).

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::pods::{ROOT_CA_CONFIG_MAP, ROOT_CA_KEY};
use skiff_objects::{deletion, IntoObject, Kind, ObjectExt};

/// The annotation kube-controller-manager puts on the ConfigMap.
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the \
kube-apiserver when using internal endpoints such as the internal service IP or \
kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes \
clusters.";

pub struct RootCaPublisher {
    pub ctx: Context,
    /// The cluster CA's certificate, PEM.
    pub ca_pem: String,
}

/// The ConfigMap's fields besides its metadata, as JSON.
fn content(ca_pem: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "data": { ROOT_CA_KEY: ca_pem } }))
        .expect("a JSON object serializes")
}

/// The `kube-root-ca.crt` ConfigMap of `namespace` holding `ca_pem`.
pub fn root_ca_config_map(namespace: &str, ca_pem: &str) -> v1::GenericObject {
    v1::GenericObject {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: ROOT_CA_CONFIG_MAP.to_owned(),
            namespace: namespace.to_owned(),
            annotations: [(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned())].into(),
            ..Default::default()
        }),
        content: content(ca_pem),
    }
}

/// Whether a stored ConfigMap holds exactly `ca_pem` as its only key.
fn holds(stored: &Object, ca_pem: &str) -> bool {
    let Some(Body::Generic(map)) = &stored.kind else {
        return false;
    };
    let Ok(fields) = serde_json::from_slice::<serde_json::Value>(&map.content) else {
        return false;
    };
    fields.get("data") == Some(&serde_json::json!({ ROOT_CA_KEY: ca_pem }))
        && fields.get("binaryData").is_none()
}

impl Reconciler for RootCaPublisher {
    const NAME: &'static str = "root-ca-cert-publisher";
    const KIND: Kind = Kind::Namespace;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Namespace, Kind::ConfigMap]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Namespace => ObjectKey::of(object).into_iter().collect(),
            Kind::ConfigMap if object.meta().name == ROOT_CA_CONFIG_MAP => {
                vec![ObjectKey::new(Kind::Namespace, "", &event.namespace)]
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let namespace = &key.name;
        let Some(stored) = self.ctx.store.get(Kind::Namespace, "", namespace)? else {
            return Ok(Action::Done);
        };
        if deletion::namespace_terminating(&stored) {
            return Ok(Action::Done);
        }
        let existing = self
            .ctx
            .store
            .get(Kind::ConfigMap, namespace, ROOT_CA_CONFIG_MAP)?;
        let written = match existing {
            Some(map) if holds(&map, &self.ca_pem) => return Ok(Action::Done),
            Some(map) => {
                let mut map = std::sync::Arc::unwrap_or_clone(map);
                if let Some(Body::Generic(g)) = map.kind.as_mut() {
                    g.content = content(&self.ca_pem);
                }
                self.ctx.writer.update(map).await
            }
            None => {
                let map = root_ca_config_map(namespace, &self.ca_pem);
                self.ctx.writer.create(map.into_object()).await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(%namespace, "published the cluster CA as kube-root-ca.crt");
                Ok(Action::Done)
            }
            // The namespace just went.
            Err(e) if e.is_not_found() => Ok(Action::Done),
            // Written meanwhile: that write's event brings it here again.
            Err(e) if e.is_already_exists() || e.is_conflict() => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn namespace(name: &str, phase: &str) -> Object {
        skiff_objects::namespaces::named(name, phase)
    }

    fn data(objects: &RecordingObjects, namespace: &str) -> Option<serde_json::Value> {
        let stored = objects
            .get(Kind::ConfigMap, namespace, ROOT_CA_CONFIG_MAP)
            .unwrap()?;
        let stored = Arc::unwrap_or_clone(stored);
        let Some(Body::Generic(g)) = &stored.kind else {
            panic!("a ConfigMap is generic");
        };
        let fields: serde_json::Value = serde_json::from_slice(&g.content).unwrap();
        Some(fields["data"].clone())
    }

    #[tokio::test]
    async fn every_namespace_gets_the_ca_and_gets_it_back_when_changed() {
        let objects = RecordingObjects::new();
        objects.seed(namespace("shop", "Active"));
        let controller = RootCaPublisher {
            ctx: context(&objects),
            ca_pem: PEM.into(),
        };
        let key = ObjectKey::new(Kind::Namespace, "", "shop");
        assert_eq!(controller.reconcile(&key).await.unwrap(), Action::Done);
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].kind, writes[0].name.as_str()),
            (WriteOp::Create, Kind::ConfigMap, ROOT_CA_CONFIG_MAP)
        );
        assert_eq!(
            data(&objects, "shop"),
            Some(serde_json::json!({"ca.crt": PEM}))
        );

        // As it should be: nothing written.
        objects.clear_writes();
        controller.reconcile(&key).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        // Edited: put back.
        let mut edited = root_ca_config_map("shop", "not a CA");
        edited.content = br#"{"data":{"ca.crt":"not a CA","extra":"x"}}"#.to_vec();
        objects
            .remove(Kind::ConfigMap, "shop", ROOT_CA_CONFIG_MAP, "")
            .unwrap();
        objects.seed(edited.into_object());
        objects.clear_writes();
        controller.reconcile(&key).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].op, WriteOp::Update);
        assert_eq!(
            data(&objects, "shop"),
            Some(serde_json::json!({"ca.crt": PEM}))
        );
    }

    #[tokio::test]
    async fn nothing_is_published_in_a_namespace_being_deleted_or_gone() {
        let objects = RecordingObjects::new();
        objects.seed(namespace("leaving", "Terminating"));
        let controller = RootCaPublisher {
            ctx: context(&objects),
            ca_pem: PEM.into(),
        };
        for name in ["leaving", "gone"] {
            controller
                .reconcile(&ObjectKey::new(Kind::Namespace, "", name))
                .await
                .unwrap();
        }
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }
}
