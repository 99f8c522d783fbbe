//! The CustomResourceDefinition controller, what kube-apiserver's
//! apiextensions controllers do:
//! - status: `NamesAccepted` and `Established` (whose names are accepted
//!   is decided over every CRD of the group, `custom_resources::naming`,
//!   as the registry decides what it serves), `Terminating` while it is
//!   deleted, `acceptedNames`, `storedVersions`; written when it changes;
//! - cleanup: a CRD being deleted that holds the
//!   `customresourcecleanup.apiextensions.k8s.io` finalizer (given at
//!   creation by the writer) has every object of its kind deleted; once
//!   none is left (objects with finalizers of their own are waited for),
//!   the finalizer is removed and the CRD goes.
//!
//! A CRD is looked at again when any CRD of its group changes, and when
//! an object of its kind goes while it is being deleted; while objects
//! remain, every second.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_objects::now_rfc3339;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object};

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::custom_resources::naming::{self, holds_cleanup};
use skiff_objects::custom_resources::{Definition, CLEANUP_FINALIZER};
use skiff_objects::deletion::{is_being_deleted, DeleteOptions};
use skiff_objects::registry::custom::served_definition;
use skiff_objects::{generic, CustomKind, Kind, ObjectExt};

/// How often a CRD being deleted is looked at while its objects remain.
const CLEANUP_EVERY: Duration = Duration::from_secs(1);

pub struct CustomResourceDefinitionController {
    ctx: Context,
}

impl CustomResourceDefinitionController {
    pub fn new(ctx: Context) -> CustomResourceDefinitionController {
        CustomResourceDefinitionController { ctx }
    }

    /// Every CRD, read (the unreadable left out).
    fn definitions(&self) -> Result<Vec<(Arc<Object>, Definition)>, ReconcileError> {
        let (crds, _) = self.ctx.store.list(Kind::CustomResourceDefinition, None)?;
        Ok(crds
            .into_iter()
            .filter_map(|o| {
                let definition = match &o.kind {
                    Some(Body::Generic(g)) => Definition::read(g)?,
                    _ => return None,
                };
                Some((o, definition))
            })
            .collect())
    }

    /// Writes `status` into `crd` (conditional on its resourceVersion);
    /// answers the CRD as written.
    async fn write_status(&self, crd: &Object, status: Value) -> Result<Object, ReconcileError> {
        let mut written = crd.clone();
        if let Some(Body::Generic(g)) = written.kind.as_mut() {
            let mut content = generic::content(g);
            content.insert("status".to_owned(), status);
            generic::set_content(g, &content);
        }
        Ok(self.ctx.writer.update_status(written).await?)
    }

    /// Deletes the objects of `kind`; answers whether any is left (deleted
    /// now, or marked and held by finalizers of its own).
    async fn delete_objects(&self, kind: Kind) -> Result<bool, ReconcileError> {
        let (objects, _) = self.ctx.store.list(kind, None)?;
        if objects.is_empty() {
            return Ok(false);
        }
        let mut deletes = tokio::task::JoinSet::new();
        for object in objects.iter().filter(|o| !is_being_deleted(o.meta())) {
            let meta = object.meta();
            let (writer, namespace, name) = (
                self.ctx.writer.clone(),
                meta.namespace.clone(),
                meta.name.clone(),
            );
            deletes.spawn(async move {
                writer
                    .delete_with(kind, &namespace, &name, DeleteOptions::default())
                    .await
            });
        }
        while let Some(joined) = deletes.join_next().await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.is_not_found() => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(source) => {
                    return Err(ReconcileError::Task {
                        what: "delete",
                        source,
                    })
                }
            }
        }
        Ok(true)
    }
}

/// The group a CRD object names.
fn group_of(object: &Object) -> String {
    match &object.kind {
        Some(Body::Generic(g)) => Value::Object(generic::content(g))["spec"]["group"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

impl Reconciler for CustomResourceDefinitionController {
    const NAME: &'static str = "customresourcedefinition";
    const KIND: Kind = Kind::CustomResourceDefinition;
    // The definitions, and the deletions of any custom kind's objects.
    const WATCHES: KindFilter = KindFilter {
        kinds: Some(&[Kind::CustomResourceDefinition]),
        custom: true,
    };

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            // Whose names are accepted is decided across the group.
            Kind::CustomResourceDefinition => {
                let group = group_of(object);
                let mut keys: Vec<ObjectKey> = ObjectKey::of(object).into_iter().collect();
                if let Ok((crds, _)) = self.ctx.store.list(Kind::CustomResourceDefinition, None) {
                    keys.extend(
                        crds.iter()
                            .filter(|o| o.meta().name != object.meta().name)
                            .filter(|o| group_of(o) == group)
                            .filter_map(|o| ObjectKey::of(o)),
                    );
                }
                keys
            }
            // The last objects of a CRD being deleted going.
            Kind::Custom(kind) if event.event_type == EventType::Deleted as i32 => {
                served_definition(kind)
                    .filter(|served| served.definition.deleting)
                    .map(|served| {
                        ObjectKey::new(Kind::CustomResourceDefinition, "", &served.definition.name)
                    })
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(crd) = self
            .ctx
            .store
            .get(Kind::CustomResourceDefinition, "", &key.name)?
        else {
            return Ok(Action::Done);
        };
        let definitions = self.definitions()?;
        let verdicts = naming::accept(definitions.iter().map(|(_, d)| d));
        let mine = definitions.iter().find(|(_, d)| d.name == key.name);
        let mut crd = (*crd).clone();
        if let (Some((_, definition)), Some(verdict)) = (mine, verdicts.get(&key.name)) {
            let current = match &crd.kind {
                Some(Body::Generic(g)) => {
                    generic::content(g).remove("status").unwrap_or(Value::Null)
                }
                _ => Value::Null,
            };
            let desired = naming::desired_status(definition, verdict, &current, &now_rfc3339());
            if desired != current {
                crd = self.write_status(&crd, desired).await?;
            }
        }
        let meta = crd.meta();
        if !is_being_deleted(meta) || !holds_cleanup(&meta.finalizers) {
            return Ok(Action::Done);
        }
        // Its objects first: a kind this process never met has none.
        if let Some((_, definition)) = mine {
            if let Some(kind) = CustomKind::find(&definition.group, &definition.names.kind) {
                if self.delete_objects(Kind::Custom(kind)).await? {
                    return Ok(Action::RequeueAfter(CLEANUP_EVERY));
                }
            }
        }
        let mut released = crd.clone();
        if let Ok(meta) = released.meta_mut() {
            meta.finalizers.retain(|f| f != CLEANUP_FINALIZER);
        }
        match self.ctx.writer.update(released).await {
            Ok(_) => Ok(Action::Done),
            Err(e) if e.is_not_found() => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use serde_json::json;
    use skiff_objects::IntoObject;
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    fn crd(name: &str, group: &str, plural: &str, kind: &str, created: &str) -> Object {
        let spec = json!({
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}}}],
        });
        GenericObject {
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: created.into(),
                finalizers: vec![CLEANUP_FINALIZER.into()],
                ..Default::default()
            }),
            content: serde_json::to_vec(&json!({ "spec": spec })).unwrap(),
        }
        .into_object()
    }

    fn status_of(objects: &RecordingObjects, name: &str) -> Value {
        let crd = objects
            .get(Kind::CustomResourceDefinition, "", name)
            .unwrap()
            .unwrap();
        let Some(Body::Generic(g)) = &crd.kind else {
            panic!("generic");
        };
        generic::content(g).remove("status").unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn established_crds_and_a_refused_name_get_their_status() {
        let objects = RecordingObjects::new();
        let ctx = crate::controllers::recording::context(&objects);
        let group = "controller-test-a.io";
        objects.seed(crd(
            &format!("widgets.{group}"),
            group,
            "widgets",
            "Widget",
            "2024-01-01T00:00:00Z",
        ));
        objects.seed(crd(
            &format!("others.{group}"),
            group,
            "others",
            "Widget",
            "2024-02-01T00:00:00Z",
        ));
        let controller = CustomResourceDefinitionController::new(ctx);
        for name in [format!("widgets.{group}"), format!("others.{group}")] {
            let key = ObjectKey::new(Kind::CustomResourceDefinition, "", &name);
            assert_eq!(controller.reconcile(&key).await.unwrap(), Action::Done);
        }
        let widgets = status_of(&objects, &format!("widgets.{group}"));
        assert_eq!(widgets["conditions"][1]["type"], "Established");
        assert_eq!(widgets["conditions"][1]["status"], "True");
        assert_eq!(widgets["acceptedNames"]["plural"], "widgets");
        let others = status_of(&objects, &format!("others.{group}"));
        // Both singulars default to the lowercased kind, "widget", and
        // Kubernetes checks the singular before the kind.
        assert_eq!(others["conditions"][0]["reason"], "SingularConflict");
        assert_eq!(others["conditions"][1]["status"], "False");
        // Nothing changed: nothing written.
        let writes = objects.writes().len();
        let key = ObjectKey::new(
            Kind::CustomResourceDefinition,
            "",
            &format!("widgets.{group}"),
        );
        controller.reconcile(&key).await.unwrap();
        assert_eq!(objects.writes().len(), writes);
    }

    #[tokio::test]
    async fn a_deleted_crd_goes_once_its_objects_are_deleted() {
        let objects = RecordingObjects::new();
        let ctx = crate::controllers::recording::context(&objects);
        let group = "controller-test-b.io";
        let name = format!("gadgets.{group}");
        objects.seed(crd(
            &name,
            group,
            "gadgets",
            "Gadget",
            "2024-01-01T00:00:00Z",
        ));
        let kind = Kind::Custom(CustomKind::intern(group, "Gadget"));
        for gadget in ["g1", "g2"] {
            objects.seed(
                GenericObject {
                    api_version: format!("{group}/v1"),
                    kind: "Gadget".into(),
                    metadata: Some(ObjectMeta {
                        name: gadget.into(),
                        namespace: "default".into(),
                        ..Default::default()
                    }),
                    content: b"{}".to_vec(),
                }
                .into_object(),
            );
        }
        let writer = ctx.writer.clone();
        writer
            .delete_with(
                Kind::CustomResourceDefinition,
                "",
                &name,
                DeleteOptions::default(),
            )
            .await
            .unwrap();
        let controller = CustomResourceDefinitionController::new(ctx);
        let key = ObjectKey::new(Kind::CustomResourceDefinition, "", &name);
        // The objects go first; the CRD waits for them.
        let action = controller.reconcile(&key).await.unwrap();
        assert_eq!(action, Action::RequeueAfter(CLEANUP_EVERY));
        assert!(objects.list(kind, None).unwrap().0.is_empty());
        let held = objects
            .get(Kind::CustomResourceDefinition, "", &name)
            .unwrap()
            .unwrap();
        assert!(is_being_deleted(held.meta()));
        assert_eq!(
            status_of(&objects, &name)["conditions"][2]["type"],
            "Terminating"
        );
        // Then the finalizer is removed and the CRD is gone.
        assert_eq!(controller.reconcile(&key).await.unwrap(), Action::Done);
        assert!(objects
            .get(Kind::CustomResourceDefinition, "", &name)
            .unwrap()
            .is_none());
        let deletes = objects
            .writes()
            .iter()
            .filter(|w| w.op == WriteOp::Delete && w.kind == kind)
            .count();
        assert_eq!(deletes, 2);
    }
}
