//! Every namespace's `default` ServiceAccount, as Kubernetes' service
//! account controller keeps it: made when a namespace appears (the built-in
//! ones included), and made again when it is deleted, with a new uid, so
//! that the deleted one's tokens stay refused. Not in a namespace being
//! deleted. An existing account is left as it is (its `imagePullSecrets`
//! are its owner's).

use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::{deletion, IntoObject, Kind, ObjectExt};

/// The account every namespace has, and pods run as when they name none.
pub const DEFAULT_ACCOUNT: &str = "default";

pub struct DefaultServiceAccountController {
    pub ctx: Context,
}

/// The `default` ServiceAccount of `namespace`, as Kubernetes makes it.
pub fn default_account(namespace: &str) -> v1::GenericObject {
    v1::GenericObject {
        api_version: "v1".to_owned(),
        kind: "ServiceAccount".to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: DEFAULT_ACCOUNT.to_owned(),
            namespace: namespace.to_owned(),
            ..Default::default()
        }),
        content: b"{}".to_vec(),
    }
}

impl Reconciler for DefaultServiceAccountController {
    const NAME: &'static str = "service-accounts";
    const KIND: Kind = Kind::Namespace;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Namespace, Kind::ServiceAccount]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Namespace => ObjectKey::of(object).into_iter().collect(),
            Kind::ServiceAccount if object.meta().name == DEFAULT_ACCOUNT => {
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
        let account = self
            .ctx
            .store
            .get(Kind::ServiceAccount, namespace, DEFAULT_ACCOUNT)?;
        if account.is_some() {
            return Ok(Action::Done);
        }
        match self
            .ctx
            .writer
            .create(default_account(namespace).into_object())
            .await
        {
            Ok(_) => {
                tracing::info!(%namespace, "made the default ServiceAccount");
                Ok(Action::Done)
            }
            // Made meanwhile, or the namespace just went.
            Err(e) if e.is_already_exists() || e.is_not_found() => Ok(Action::Done),
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

    fn namespace(name: &str, phase: &str) -> Object {
        skiff_objects::namespaces::named(name, phase)
    }

    fn uid_of_default(objects: &RecordingObjects, namespace: &str) -> Option<String> {
        objects
            .get(Kind::ServiceAccount, namespace, DEFAULT_ACCOUNT)
            .unwrap()
            .map(|o| Arc::unwrap_or_clone(o).meta().uid.clone())
    }

    #[tokio::test]
    async fn a_namespace_gets_a_default_account_and_gets_it_again_once_deleted() {
        let objects = RecordingObjects::new();
        objects.seed(namespace("shop", "Active"));
        let controller = DefaultServiceAccountController {
            ctx: context(&objects),
        };
        let key = ObjectKey::new(Kind::Namespace, "", "shop");
        assert_eq!(controller.reconcile(&key).await.unwrap(), Action::Done);
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].kind, writes[0].name.as_str()),
            (WriteOp::Create, Kind::ServiceAccount, DEFAULT_ACCOUNT)
        );
        let first = uid_of_default(&objects, "shop").expect("made");

        // There: nothing to do.
        objects.clear_writes();
        controller.reconcile(&key).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        // Deleted: made again, another account (uid).
        objects
            .remove(Kind::ServiceAccount, "shop", DEFAULT_ACCOUNT, "")
            .unwrap();
        controller.reconcile(&key).await.unwrap();
        let second = uid_of_default(&objects, "shop").expect("made again");
        assert_ne!(second, first);
    }

    #[tokio::test]
    async fn no_account_is_made_in_a_namespace_being_deleted_or_gone() {
        let objects = RecordingObjects::new();
        objects.seed(namespace("leaving", "Terminating"));
        let controller = DefaultServiceAccountController {
            ctx: context(&objects),
        };
        for name in ["leaving", "gone"] {
            let key = ObjectKey::new(Kind::Namespace, "", name);
            controller.reconcile(&key).await.unwrap();
        }
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[test]
    fn a_default_account_s_change_looks_at_its_namespace() {
        let objects = RecordingObjects::new();
        let controller = DefaultServiceAccountController {
            ctx: context(&objects),
        };
        let event = |kind: Kind, namespace: &str| StoredEvent {
            revision: 1,
            kind,
            namespace: namespace.into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        let account = default_account("shop").into_object();
        assert_eq!(
            controller.keys_for(&event(Kind::ServiceAccount, "shop"), &account),
            [ObjectKey::new(Kind::Namespace, "", "shop")]
        );
        let mut builder = default_account("shop");
        if let Some(meta) = builder.metadata.as_mut() {
            meta.name = "builder".into();
        }
        let builder = builder.into_object();
        assert!(controller
            .keys_for(&event(Kind::ServiceAccount, "shop"), &builder)
            .is_empty());
    }
}
