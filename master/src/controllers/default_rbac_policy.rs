//! The default ClusterRoles and ClusterRoleBindings every cluster has
//! (`objects::rbac::bootstrap_policy`: `cluster-admin` for
//! `system:masters`, `admin`, `edit`, `view`, discovery and the self
//! reviews for everyone authenticated, ...), kept by the leader as
//! kube-apiserver keeps its RBAC bootstrap policy at each start: a
//! missing one is created; an existing one not annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"` gets back the
//! labels, annotations, rules, aggregation selectors and subjects it
//! lacks (what was added to it stays), and a binding of another role is
//! made again. Roles first, so that no binding names a role not there.
//! Not a reconciler: a loop that looks at once and then periodically, as
//! for the built-in StorageClass ([`super::default_storage_class`]).

use std::time::Duration;

use skiff_proto::api::Object;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::rbac::bootstrap_policy::{
    self, reconcile_binding, reconcile_role, BindingReconcile,
};
use skiff_objects::{Kind, ObjectExt};

/// Looks again this often.
const RESYNC: Duration = Duration::from_secs(60);

/// Creates `object` (of `kind`); one made meanwhile is fine.
async fn create(ctx: &Context, kind: Kind, object: Object) -> Result<(), ReconcileError> {
    let name = object.meta().name.clone();
    match ctx.writer.create(object).await {
        Ok(_) => {
            tracing::info!(kind = kind.name(), %name, "created a default RBAC object");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure every default ClusterRole and ClusterRoleBinding exists and
/// holds what it should. Idempotent: nothing is written when they do.
pub async fn reconcile(ctx: &Context) -> Result<(), ReconcileError> {
    for expected in bootstrap_policy::cluster_roles() {
        let name = expected.meta().name.clone();
        match ctx.store.get(Kind::ClusterRole, "", &name)? {
            None => create(ctx, Kind::ClusterRole, expected).await?,
            Some(existing) => {
                if let Some(reconciled) = reconcile_role(&existing, &expected) {
                    ctx.writer.update(reconciled).await?;
                    tracing::info!(%name, "restored a default ClusterRole");
                }
            }
        }
    }
    for expected in bootstrap_policy::cluster_role_bindings() {
        let name = expected.meta().name.clone();
        let Some(existing) = ctx.store.get(Kind::ClusterRoleBinding, "", &name)? else {
            create(ctx, Kind::ClusterRoleBinding, expected).await?;
            continue;
        };
        match reconcile_binding(&existing, &expected) {
            BindingReconcile::Unchanged => {}
            BindingReconcile::Update(reconciled) => {
                ctx.writer.update(reconciled).await?;
                tracing::info!(%name, "restored a default ClusterRoleBinding");
            }
            BindingReconcile::Recreate(again) => {
                // Only the binding read: one changed since is looked at
                // again at the next pass.
                let options = DeleteOptions {
                    uid: existing.meta().uid.clone(),
                    ..DeleteOptions::default()
                };
                match ctx
                    .writer
                    .delete_with(Kind::ClusterRoleBinding, "", &name, options)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                create(ctx, Kind::ClusterRoleBinding, again).await?;
            }
        }
    }
    Ok(())
}

/// Keeps the default RBAC policy while leading, until `shutdown`. A failed
/// pass is logged and tried again at the next.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    loop {
        if let Err(e) = reconcile(&ctx).await {
            tracing::warn!(error = %e, "cannot keep the default RBAC roles and bindings; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use skiff_proto::api::object::Kind as Body;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::generic;
    use skiff_objects::rbac::bootstrap_policy::AUTOUPDATE_ANNOTATION;
    use skiff_objects::rbac::{BindingView, PolicyRuleExt, RoleView};

    fn stored(objects: &RecordingObjects, kind: Kind, name: &str) -> Object {
        objects
            .get(kind, "", name)
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap_or_else(|| panic!("{name}"))
    }

    fn set(object: &mut Object, field: &str, value: serde_json::Value) {
        if let Some(Body::Generic(g)) = object.kind.as_mut() {
            let mut content = generic::content(g);
            content.insert(field.to_owned(), value);
            generic::set_content(g, &content);
        }
    }

    #[tokio::test]
    async fn the_default_roles_and_bindings_are_there_after_bootstrap() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        reconcile(&ctx).await.unwrap();
        let names = |kind: Kind| -> Vec<String> {
            objects
                .objects(kind)
                .iter()
                .map(|o| o.meta().name.clone())
                .collect()
        };
        let roles = names(Kind::ClusterRole);
        for role in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:service-account-issuer-discovery",
        ] {
            assert!(roles.contains(&role.to_owned()), "{role}: {roles:?}");
        }
        assert_eq!(
            names(Kind::ClusterRoleBinding),
            [
                "cluster-admin",
                "system:basic-user",
                "system:discovery",
                "system:public-info-viewer",
                "system:service-account-issuer-discovery",
            ]
        );
        let masters =
            BindingView::read(&stored(&objects, Kind::ClusterRoleBinding, "cluster-admin"))
                .unwrap();
        assert_eq!(masters.subjects[0].kind, "Group");
        assert_eq!(masters.subjects[0].name, "system:masters");
        // Every write a create, and a second pass writes nothing.
        assert!(objects.writes().iter().all(|w| w.op == WriteOp::Create));
        objects.clear_writes();
        reconcile(&ctx).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn defaults_are_restored_unless_marked_to_be_kept_as_they_are() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        reconcile(&ctx).await.unwrap();
        // A rule taken from system:basic-user and one added; a subject
        // taken from system:discovery.
        let mut basic = stored(&objects, Kind::ClusterRole, "system:basic-user");
        let extra = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]});
        set(&mut basic, "rules", json!([extra]));
        objects.write(WriteOp::Update, basic).unwrap();
        let mut discovery = stored(&objects, Kind::ClusterRoleBinding, "system:discovery");
        set(&mut discovery, "subjects", json!([]));
        objects.write(WriteOp::Update, discovery).unwrap();
        // system:public-info-viewer deleted; system:basic-user's binding
        // pointed at another role.
        objects
            .remove(Kind::ClusterRole, "", "system:public-info-viewer", "")
            .unwrap();
        let mut moved = stored(&objects, Kind::ClusterRoleBinding, "system:basic-user");
        set(
            &mut moved,
            "roleRef",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}),
        );
        objects.write(WriteOp::Update, moved).unwrap();
        reconcile(&ctx).await.unwrap();
        let rules = RoleView::read(&stored(&objects, Kind::ClusterRole, "system:basic-user"))
            .unwrap()
            .rules;
        // The added rule kept, the taken ones back (broken down: three).
        assert_eq!(rules.len(), 4, "{rules:?}");
        assert_eq!(rules[0].resource_list(), ["pods"]);
        let subjects = BindingView::read(&stored(
            &objects,
            Kind::ClusterRoleBinding,
            "system:discovery",
        ))
        .unwrap()
        .subjects;
        assert_eq!(subjects.len(), 1);
        stored(&objects, Kind::ClusterRole, "system:public-info-viewer");
        let binding = BindingView::read(&stored(
            &objects,
            Kind::ClusterRoleBinding,
            "system:basic-user",
        ))
        .unwrap();
        assert_eq!(binding.role_ref.name, "system:basic-user");
        // Marked to be kept: left as changed.
        let mut kept = stored(&objects, Kind::ClusterRole, "system:discovery");
        set(&mut kept, "rules", json!([]));
        kept.meta_mut()
            .unwrap()
            .annotations
            .insert(AUTOUPDATE_ANNOTATION.into(), "false".into());
        objects.write(WriteOp::Update, kept).unwrap();
        objects.clear_writes();
        reconcile(&ctx).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }
}
