//! ClusterRole aggregation, as Kubernetes' `clusterrole-aggregation`
//! controller does it: a ClusterRole with an `aggregationRule` gets as
//! its `rules` those of every other ClusterRole one of its
//! `clusterRoleSelectors` selects, selector by selector, the selected
//! roles in name order, each rule once (what it had is replaced). This
//! is how `admin`, `edit` and `view` hold the rules of the roles labelled
//! `rbac.authorization.k8s.io/aggregate-to-<role>` (`edit` is itself
//! labelled to `admin`, `view` to `edit`).
//!
//! A ClusterRole's change looks again at the aggregated roles whose
//! selectors select it, as labelled now and, when its labels changed, as
//! labelled before (the object cache's index of aggregation selectors,
//! `store::rbac_index`), and at itself if it aggregates: an event costs
//! the roles it concerns, not every ClusterRole (Kubernetes looks at every
//! aggregated one). The selected roles' rules are read from that index,
//! decoded when they were stored. A chain settles in as many passes as it
//! is long.

use std::collections::BTreeSet;

use prost::Message;
use serde_json::json;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::rbac::{selectors_of, PolicyRule, RoleView};
use skiff_objects::{generic, selector, Kind, ObjectExt};

pub struct ClusterRoleAggregationController {
    ctx: Context,
}

impl ClusterRoleAggregationController {
    pub fn new(ctx: Context) -> ClusterRoleAggregationController {
        ClusterRoleAggregationController { ctx }
    }

    /// The rules `role` (named `name`) aggregates from the others, each
    /// once, in Kubernetes' order.
    fn aggregated_rules(
        &self,
        name: &str,
        role: &RoleView,
    ) -> Result<Vec<PolicyRule>, ReconcileError> {
        let mut rules: Vec<PolicyRule> = Vec::new();
        let Some(aggregation) = &role.aggregation_rule else {
            return Ok(rules);
        };
        for selector in selectors_of(aggregation) {
            // ClusterRoles are few: those with the selector's labels, or
            // all of them, are looked through.
            let candidates = match &selector.match_labels {
                Some(labels) if !labels.is_empty() => {
                    self.ctx.store.select(Kind::ClusterRole, "", labels)
                }
                _ => self.ctx.store.list(Kind::ClusterRole, Some(""))?.0,
            };
            let mut selected: Vec<String> = candidates
                .iter()
                .filter(|o| selector::matches_typed(selector, &o.meta().labels))
                .map(|o| o.meta().name.clone())
                .filter(|other| other != name)
                .collect();
            selected.sort();
            for other in selected {
                let Some(view) = self.ctx.store.cluster_role_view(&other)? else {
                    continue;
                };
                for rule in &view.rules {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
        }
        Ok(rules)
    }
}

impl Reconciler for ClusterRoleAggregationController {
    const NAME: &'static str = "clusterrole-aggregation";
    const KIND: Kind = Kind::ClusterRole;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::ClusterRole]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        if event.kind != Kind::ClusterRole {
            return Vec::new();
        }
        let store = &self.ctx.store;
        let meta = object.meta();
        let mut names: BTreeSet<String> = BTreeSet::new();
        // Its own selectors, or rules written over.
        let view = store.cluster_role_view(&meta.name).ok().flatten();
        if view.is_some_and(|r| r.aggregation_rule.is_some()) {
            names.insert(meta.name.clone());
        }
        names.extend(store.aggregating_cluster_roles(&meta.labels));
        // A role relabelled out of a selector leaves what selected it.
        if !event.previous.is_empty() {
            if let Ok(before) = Object::decode(&event.previous[..]) {
                names.extend(store.aggregating_cluster_roles(&before.meta().labels));
            }
        }
        names
            .iter()
            .map(|name| ObjectKey::new(Kind::ClusterRole, "", name))
            .collect()
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(stored) = self.ctx.store.get(Kind::ClusterRole, "", &key.name)? else {
            return Ok(Action::Done);
        };
        let Some(role) = RoleView::read(&stored) else {
            return Ok(Action::Done);
        };
        if role.aggregation_rule.is_none() {
            return Ok(Action::Done);
        }
        let rules = self.aggregated_rules(&key.name, &role)?;
        if rules == role.rules {
            return Ok(Action::Done);
        }
        // Conditional on the version read: a change since is looked at
        // again.
        let mut updated = Object::clone(&stored);
        if let Some(Body::Generic(g)) = updated.kind.as_mut() {
            let mut content = generic::content(g);
            content.insert("rules".to_owned(), json!(rules));
            generic::set_content(g, &content);
        }
        self.ctx.writer.update(updated).await?;
        tracing::info!(role = %key.name, rules = rules.len(), "aggregated ClusterRole rules");
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::rbac::{bootstrap_policy, PolicyRuleExt};

    fn rules_of(objects: &RecordingObjects, name: &str) -> Vec<PolicyRule> {
        let role = objects
            .get(Kind::ClusterRole, "", name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}"));
        RoleView::read(&role).expect("a role").rules
    }

    /// Reconciles every aggregated role until nothing changes; answers how
    /// many passes wrote something.
    async fn settle(
        controller: &ClusterRoleAggregationController,
        objects: &RecordingObjects,
    ) -> usize {
        let mut passes = 0;
        loop {
            objects.clear_writes();
            let (roles, _) = objects.list(Kind::ClusterRole, None).unwrap();
            for role in roles {
                let key = ObjectKey::of(&role).unwrap();
                controller.reconcile(&key).await.unwrap();
            }
            if objects.writes().is_empty() {
                return passes;
            }
            passes += 1;
            assert!(passes < 10, "does not settle");
        }
    }

    #[tokio::test]
    async fn aggregated_roles_hold_the_rules_of_the_roles_they_select() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: monitoring
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {example.com/aggregate-to-monitoring: "true"}
  - matchExpressions: [{key: team, operator: In, values: [ops]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: b-pods
  labels: {example.com/aggregate-to-monitoring: "true"}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [services], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: a-nodes
  labels: {example.com/aggregate-to-monitoring: "true", team: ops}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: c-ops
  labels: {team: ops}
rules:
- {apiGroups: [""], resources: [services], verbs: [get]}
- {apiGroups: [apps], resources: [deployments], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: unrelated
  labels: {team: dev}
rules:
- {apiGroups: [""], resources: [secrets], verbs: ["*"]}
"#,
        );
        let controller = ClusterRoleAggregationController::new(context(&objects));
        controller
            .reconcile(&ObjectKey::new(Kind::ClusterRole, "", "monitoring"))
            .await
            .unwrap();
        // First selector's roles by name, then the second's; each rule once.
        assert_eq!(
            rules_of(&objects, "monitoring"),
            [
                PolicyRule::resources(&["get"], &[""], &["nodes"]),
                PolicyRule::resources(&["get", "list"], &[""], &["pods"]),
                PolicyRule::resources(&["get"], &[""], &["services"]),
                PolicyRule::resources(&["list"], &["apps"], &["deployments"]),
            ]
        );
        // Settled: nothing more to write.
        objects.clear_writes();
        controller
            .reconcile(&ObjectKey::new(Kind::ClusterRole, "", "monitoring"))
            .await
            .unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
        // A selected role losing its label takes its rules away.
        let mut ops = Object::clone(
            &objects
                .get(Kind::ClusterRole, "", "c-ops")
                .unwrap()
                .unwrap(),
        );
        ops.meta_mut().unwrap().labels.clear();
        objects.write(WriteOp::Update, ops).unwrap();
        controller
            .reconcile(&ObjectKey::new(Kind::ClusterRole, "", "monitoring"))
            .await
            .unwrap();
        assert_eq!(rules_of(&objects, "monitoring").len(), 3);
        // A role without an aggregation rule is left alone.
        objects.clear_writes();
        controller
            .reconcile(&ObjectKey::new(Kind::ClusterRole, "", "unrelated"))
            .await
            .unwrap();
        assert!(objects.writes().is_empty());
    }

    /// The default ClusterRoles, and the controller over them.
    fn with_default_roles() -> (Arc<RecordingObjects>, ClusterRoleAggregationController) {
        let objects = RecordingObjects::new();
        for role in bootstrap_policy::cluster_roles() {
            objects.seed(role);
        }
        let controller = ClusterRoleAggregationController::new(context(&objects));
        (objects, controller)
    }

    #[tokio::test]
    async fn admin_edit_and_view_hold_kubernetes_rules_once_settled() {
        let (objects, controller) = with_default_roles();
        assert!(settle(&controller, &objects).await >= 1);
        let view = rules_of(&objects, "view");
        let edit = rules_of(&objects, "edit");
        let admin = rules_of(&objects, "admin");
        let own = |name: &str| rules_of(&objects, name);
        assert_eq!(view, own("system:aggregate-to-view"));
        // edit: its own, then view's (by name: system:... sorts before
        // view).
        let mut expected_edit = own("system:aggregate-to-edit");
        expected_edit.extend(view.iter().cloned());
        assert_eq!(edit, expected_edit);
        let mut expected_admin = edit.clone();
        expected_admin.extend(own("system:aggregate-to-admin"));
        assert_eq!(admin, expected_admin);
    }

    #[tokio::test]
    async fn a_change_looks_again_at_the_aggregated_roles_selecting_the_role() {
        let (objects, controller) = with_default_roles();
        // The names `keys_for` answers for a change of the role `name`, as
        // stored now, made from `previous` when given.
        let keys = |name: &str, previous: Option<&Object>| -> Vec<String> {
            let object = objects.get(Kind::ClusterRole, "", name).unwrap().unwrap();
            let event = StoredEvent {
                revision: 1,
                kind: Kind::ClusterRole,
                namespace: String::new(),
                event_type: 0,
                node: String::new(),
                object: bytes::Bytes::new(),
                previous: previous
                    .map(|p| bytes::Bytes::from(p.encode_to_vec()))
                    .unwrap_or_default(),
                previous_revision: 0,
            };
            let keys = controller.keys_for(&event, &object);
            keys.into_iter().map(|k| k.name).collect()
        };
        // Selected by no aggregated role, aggregating nothing.
        assert!(keys("cluster-admin", None).is_empty());
        assert_eq!(keys("system:aggregate-to-view", None), ["view"]);
        // An aggregated role selected by another: both.
        assert_eq!(keys("view", None), ["edit", "view"]);
        assert_eq!(keys("edit", None), ["admin", "edit"]);
        assert_eq!(keys("admin", None), ["admin"]);
        // Relabelled out of edit's selector: edit still looks again (and
        // drops its rules), by the labels before the change.
        let stored = objects.get(Kind::ClusterRole, "", "system:aggregate-to-edit");
        let before = Object::clone(&stored.unwrap().unwrap());
        let mut after = before.clone();
        let labels = &mut after.meta_mut().unwrap().labels;
        labels.remove(bootstrap_policy::AGGREGATE_TO_EDIT);
        objects.write(WriteOp::Update, after).unwrap();
        assert!(keys("system:aggregate-to-edit", None).is_empty());
        assert_eq!(keys("system:aggregate-to-edit", Some(&before)), ["edit"]);
    }
}
