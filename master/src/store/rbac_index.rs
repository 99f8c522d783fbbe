//! RBAC's part of the object cache: RoleBindings and ClusterRoleBindings
//! indexed by the subjects they name (`objects::rbac::SubjectKey`: a user,
//! a group, a service account), ClusterRoles with an `aggregationRule`
//! indexed by the labels their selectors select, and every role's and
//! binding's content read once, when it is applied, not on each request.
//!
//! An authorization asks [`RbacIndex::grants`] with the keys of the
//! request's user and groups: a few hash lookups, then the bindings that
//! name them, each with its role's rules. What it costs does not grow with
//! the bindings of other subjects: a thousand RoleBindings of other
//! service accounts are never looked at. It holds each role's rules and
//! each binding's subjects a second time, decoded (a few hundred bytes
//! each). A ClusterRole's change asks
//! [`RbacIndex::aggregating_cluster_roles`] which aggregated roles select
//! it: the aggregators indexed under its labels, not every ClusterRole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use skiff_proto::api::Object;

use super::edit_set;
use skiff_objects::rbac::{selectors_of, BindingView, RoleRef, RoleView, SubjectKey};
use skiff_objects::Kind;

/// An object's place: (namespace, name), as the cache keys it.
type Key = (String, String);

/// Why a binding's role grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefError {
    /// As Kubernetes' listers say it: `clusterrole.rbac.authorization.k8s.io
    /// "view" not found`.
    #[error("{resource}.rbac.authorization.k8s.io {name:?} not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("unsupported role reference kind: {0:?}")]
    UnsupportedKind(String),
}

/// One binding that names the user, with what its role grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `""` for a ClusterRoleBinding.
    pub binding_namespace: String,
    pub binding_name: String,
    pub binding: Arc<BindingView>,
    /// The role's rules, or why there are none.
    pub role: Result<Arc<RoleView>, RoleRefError>,
}

/// The index; kept by the cache under its lock.
#[derive(Debug, Default)]
pub struct RbacIndex {
    /// (subject, the binding's namespace: `""` for ClusterRoleBindings) →
    /// the names of the bindings there that name it.
    by_subject: HashMap<(SubjectKey, String), BTreeSet<String>>,
    /// Every binding, read.
    bindings: HashMap<(Kind, Key), Arc<BindingView>>,
    /// Every Role and ClusterRole, read.
    roles: HashMap<(Kind, Key), Arc<RoleView>>,
    /// A `matchLabels` pair of an aggregation selector → the ClusterRoles
    /// with that selector (a selector with several pairs is under each).
    aggregators_by_label: HashMap<(String, String), BTreeSet<String>>,
    /// The ClusterRoles with an aggregation selector without
    /// `matchLabels` (expressions only, or empty: every role), checked
    /// against every role's labels.
    aggregators_without_labels: BTreeSet<String>,
}

impl RbacIndex {
    /// Indexes (`add`) or forgets an object of `kind` at `key`; objects
    /// of other kinds are not RBAC's.
    pub fn edit(&mut self, kind: Kind, key: &Key, object: &Object, add: bool) {
        match kind {
            Kind::Role | Kind::ClusterRole => {
                let at = (kind, key.clone());
                if add {
                    let Some(role) = RoleView::read(object) else {
                        return;
                    };
                    let role = Arc::new(role);
                    if let Some(old) = self.roles.insert(at, role.clone()) {
                        self.edit_aggregator(kind, &key.1, &old, false);
                    }
                    self.edit_aggregator(kind, &key.1, &role, true);
                } else if let Some(old) = self.roles.remove(&at) {
                    self.edit_aggregator(kind, &key.1, &old, false);
                }
            }
            Kind::RoleBinding | Kind::ClusterRoleBinding => {
                let Some(binding) = BindingView::read(object) else {
                    return;
                };
                for subject in binding.subject_keys(&key.0) {
                    let at = (subject, key.0.clone());
                    edit_set(&mut self.by_subject, at, key.1.clone(), add);
                }
                if add {
                    self.bindings.insert((kind, key.clone()), Arc::new(binding));
                } else {
                    self.bindings.remove(&(kind, key.clone()));
                }
            }
            _ => {}
        }
    }

    /// Indexes (`add`) or forgets the aggregation selectors of `role`, the
    /// ClusterRole `name` (a Role aggregates nothing).
    fn edit_aggregator(&mut self, kind: Kind, name: &str, role: &RoleView, add: bool) {
        let Some(aggregation) = role.aggregation_rule.as_ref() else {
            return;
        };
        if kind != Kind::ClusterRole {
            return;
        }
        for selector in selectors_of(aggregation) {
            let labels = selector.match_labels.iter().flatten();
            if labels.clone().next().is_none() {
                if add {
                    self.aggregators_without_labels.insert(name.to_owned());
                } else {
                    self.aggregators_without_labels.remove(name);
                }
            }
            for (k, v) in labels {
                let at = (k.clone(), v.clone());
                edit_set(&mut self.aggregators_by_label, at, name.to_owned(), add);
            }
        }
    }

    /// The bindings naming any of `subjects` that apply in `namespace`:
    /// the ClusterRoleBindings, then (for a namespace) that namespace's
    /// RoleBindings, each in name order and once, with their roles' rules.
    /// Kubernetes visits the same bindings (`VisitRulesFor`), having
    /// listed them all.
    pub fn grants(&self, subjects: &[SubjectKey], namespace: &str) -> Vec<Grant> {
        let mut found = Vec::new();
        let mut scopes = vec![(Kind::ClusterRoleBinding, "")];
        if !namespace.is_empty() {
            scopes.push((Kind::RoleBinding, namespace));
        }
        for (kind, binding_namespace) in scopes {
            let mut names: BTreeSet<&String> = BTreeSet::new();
            for subject in subjects {
                let at = (subject.clone(), binding_namespace.to_owned());
                names.extend(self.by_subject.get(&at).into_iter().flatten());
            }
            for name in names {
                let key = (binding_namespace.to_owned(), name.clone());
                let Some(binding) = self.bindings.get(&(kind, key)) else {
                    continue;
                };
                found.push(Grant {
                    binding_namespace: binding_namespace.to_owned(),
                    binding_name: name.clone(),
                    role: self.role_of(&binding.role_ref, binding_namespace),
                    binding: binding.clone(),
                });
            }
        }
        found
    }

    /// The role `role_ref` refers to, for a binding in `namespace` (`""`
    /// for a ClusterRoleBinding) (Kubernetes' `GetRoleReferenceRules`):
    /// what a grant holds, and what the escalation check of a binding's
    /// write compares with the writer's rules.
    pub fn role_of(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<Arc<RoleView>, RoleRefError> {
        let (kind, resource, namespace) = match role_ref.kind.as_str() {
            "Role" => (Kind::Role, "role", namespace),
            "ClusterRole" => (Kind::ClusterRole, "clusterrole", ""),
            other => return Err(RoleRefError::UnsupportedKind(other.to_owned())),
        };
        let key = (namespace.to_owned(), role_ref.name.clone());
        self.roles
            .get(&(kind, key))
            .cloned()
            .ok_or_else(|| RoleRefError::NotFound {
                resource,
                name: role_ref.name.clone(),
            })
    }

    /// The ClusterRole `name`, read (its rules and `aggregationRule`).
    pub fn cluster_role(&self, name: &str) -> Option<Arc<RoleView>> {
        let key = (String::new(), name.to_owned());
        self.roles.get(&(Kind::ClusterRole, key)).cloned()
    }

    /// The names of the ClusterRoles with an `aggregationRule` one of whose
    /// selectors selects a ClusterRole labelled `labels`, in name order:
    /// those to aggregate again when such a role changes. Looks only at
    /// the aggregators indexed under `labels`' pairs and those whose
    /// selectors have no `matchLabels`.
    pub fn aggregating_cluster_roles(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut candidates: BTreeSet<&String> = BTreeSet::new();
        candidates.extend(&self.aggregators_without_labels);
        for (k, v) in labels {
            let at = (k.clone(), v.clone());
            candidates.extend(self.aggregators_by_label.get(&at).into_iter().flatten());
        }
        candidates
            .into_iter()
            .filter(|name| {
                let role = self.cluster_role(name);
                role.is_some_and(|r| r.aggregates_labels(labels))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use skiff_objects::IntoObject;
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    /// An RBAC object of `kind` with `content` besides its metadata.
    pub(crate) fn object(
        kind: &str,
        namespace: &str,
        name: &str,
        content: serde_json::Value,
    ) -> Object {
        GenericObject {
            api_version: "rbac.authorization.k8s.io/v1".to_owned(),
            kind: kind.to_owned(),
            metadata: Some(ObjectMeta {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).expect("JSON"),
        }
        .into_object()
    }

    fn put(index: &mut RbacIndex, kind: Kind, object: &Object, add: bool) {
        use skiff_objects::ObjectExt;
        let meta = object.meta();
        let key = (meta.namespace.clone(), meta.name.clone());
        index.edit(kind, &key, object, add);
    }

    fn binding(
        kind: &str,
        namespace: &str,
        name: &str,
        role: (&str, &str),
        subject: serde_json::Value,
    ) -> Object {
        object(
            kind,
            namespace,
            name,
            serde_json::json!({
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1},
                "subjects": [subject],
            }),
        )
    }

    fn robot() -> Vec<SubjectKey> {
        skiff_objects::rbac::user_keys(
            "system:serviceaccount:team:robot",
            &["system:serviceaccounts".to_owned()],
        )
    }

    #[test]
    fn grants_are_the_bindings_naming_the_user_with_their_roles() {
        let mut index = RbacIndex::default();
        let reader = object(
            "Role",
            "team",
            "reader",
            serde_json::json!({"rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ]}),
        );
        put(&mut index, Kind::Role, &reader, true);
        let sa = serde_json::json!({"kind": "ServiceAccount", "name": "robot"});
        let group = serde_json::json!({"kind": "Group", "name": "system:serviceaccounts"});
        let objects = [
            (
                Kind::RoleBinding,
                binding(
                    "RoleBinding",
                    "team",
                    "b-read",
                    ("Role", "reader"),
                    sa.clone(),
                ),
            ),
            (
                Kind::RoleBinding,
                binding(
                    "RoleBinding",
                    "team",
                    "a-view",
                    ("ClusterRole", "view"),
                    group.clone(),
                ),
            ),
            (
                Kind::RoleBinding,
                binding(
                    "RoleBinding",
                    "other",
                    "read",
                    ("Role", "reader"),
                    sa.clone(),
                ),
            ),
            (
                Kind::ClusterRoleBinding,
                binding(
                    "ClusterRoleBinding",
                    "",
                    "all",
                    ("ClusterRole", "view"),
                    group,
                ),
            ),
            (
                Kind::ClusterRoleBinding,
                binding("ClusterRoleBinding", "", "odd", ("Thing", "x"), sa),
            ),
        ];
        for (kind, object) in &objects {
            put(&mut index, *kind, object, true);
        }
        // Someone else's bindings, many of them.
        for i in 0..1000 {
            let other = serde_json::json!({"kind": "ServiceAccount", "name": format!("sa-{i}")});
            let b = binding(
                "RoleBinding",
                "team",
                &format!("other-{i}"),
                ("Role", "reader"),
                other,
            );
            put(&mut index, Kind::RoleBinding, &b, true);
        }
        let other = skiff_objects::rbac::user_keys("system:serviceaccount:team:sa-999", &[]);
        assert_eq!(index.grants(&other, "team")[0].binding_name, "other-999");
        let grants = index.grants(&robot(), "team");
        // A ClusterRoleBinding's namespace is "".
        let found: Vec<(&str, &str)> = grants
            .iter()
            .map(|g| (g.binding_namespace.as_str(), g.binding_name.as_str()))
            .collect();
        // The ServiceAccount subject without a namespace is the binding's:
        // "odd" (a ClusterRoleBinding) names no one.
        assert_eq!(found, [("", "all"), ("team", "a-view"), ("team", "b-read")]);
        assert_eq!(
            grants[0].role.as_ref().unwrap_err().to_string(),
            r#"clusterrole.rbac.authorization.k8s.io "view" not found"#
        );
        assert_eq!(grants[2].role.as_ref().unwrap().rules.len(), 1);
        // Cluster-wide: the ClusterRoleBindings only.
        assert_eq!(index.grants(&robot(), "").len(), 1);
        // Forgotten when deleted.
        for (kind, object) in &objects {
            put(&mut index, *kind, object, false);
        }
        assert!(index.grants(&robot(), "team").is_empty());
        put(&mut index, Kind::Role, &reader, false);
        let b = binding(
            "RoleBinding",
            "team",
            "other-1",
            ("Role", "reader"),
            serde_json::json!({"kind": "ServiceAccount", "name": "sa-1"}),
        );
        let keys = skiff_objects::rbac::user_keys("system:serviceaccount:team:sa-1", &[]);
        assert_eq!(
            index.grants(&keys, "team")[0]
                .role
                .as_ref()
                .unwrap_err()
                .to_string(),
            r#"role.rbac.authorization.k8s.io "reader" not found"#
        );
        put(&mut index, Kind::RoleBinding, &b, false);
        assert!(index.grants(&keys, "team").is_empty());
    }

    #[test]
    fn unsupported_role_kinds_are_named() {
        let mut index = RbacIndex::default();
        let odd = binding(
            "ClusterRoleBinding",
            "",
            "odd",
            ("Thing", "x"),
            serde_json::json!({"kind": "User", "name": "jane"}),
        );
        put(&mut index, Kind::ClusterRoleBinding, &odd, true);
        let grants = index.grants(&[SubjectKey::User("jane".into())], "");
        assert_eq!(
            grants[0].role.as_ref().unwrap_err().to_string(),
            r#"unsupported role reference kind: "Thing""#
        );
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A ClusterRole aggregating by `selectors`.
    fn aggregator(name: &str, selectors: serde_json::Value) -> Object {
        let rule = serde_json::json!({"aggregationRule": {"clusterRoleSelectors": selectors}});
        object("ClusterRole", "", name, rule)
    }

    #[test]
    fn aggregating_cluster_roles_are_found_by_the_labels_their_selectors_select() {
        let mut index = RbacIndex::default();
        let to_monitoring = ("aggregate-to-monitoring", "true");
        let monitoring = aggregator(
            "monitoring",
            serde_json::json!([{"matchLabels": {"aggregate-to-monitoring": "true", "tier": "a"}}]),
        );
        let ops = aggregator(
            "ops",
            serde_json::json!([{"matchExpressions": [{"key": "team", "operator": "In", "values": ["ops"]}]}]),
        );
        put(&mut index, Kind::ClusterRole, &monitoring, true);
        put(&mut index, Kind::ClusterRole, &ops, true);
        // A Role aggregates nothing, even with a selector of every role.
        let local = serde_json::json!({"aggregationRule": {"clusterRoleSelectors": [{}]}});
        put(
            &mut index,
            Kind::Role,
            &object("Role", "team", "local", local),
            true,
        );
        let found = |index: &RbacIndex, pairs: &[(&str, &str)]| {
            index.aggregating_cluster_roles(&labels(pairs))
        };
        assert_eq!(
            found(&index, &[to_monitoring, ("tier", "a")]),
            ["monitoring"]
        );
        // Every pair of a selector, not one of them.
        assert!(found(&index, &[to_monitoring]).is_empty());
        // Expressions are checked against any role's labels.
        assert_eq!(
            found(&index, &[("team", "ops"), to_monitoring, ("tier", "a")]),
            ["monitoring", "ops"]
        );
        assert!(found(&index, &[("team", "dev")]).is_empty());
        assert!(found(&index, &[]).is_empty());

        // The aggregator's selector changes: found by its new labels only,
        // as the cache applies an update (the old version forgotten first).
        let relabelled = aggregator(
            "monitoring",
            serde_json::json!([{"matchLabels": {"aggregate-to-monitoring": "v2"}}]),
        );
        put(&mut index, Kind::ClusterRole, &monitoring, false);
        put(&mut index, Kind::ClusterRole, &relabelled, true);
        assert!(found(&index, &[to_monitoring, ("tier", "a")]).is_empty());
        assert_eq!(
            found(&index, &[("aggregate-to-monitoring", "v2")]),
            ["monitoring"]
        );
        // Stored again over itself, without the old one forgotten first:
        // the old selectors still go.
        put(&mut index, Kind::ClusterRole, &monitoring, true);
        assert!(found(&index, &[("aggregate-to-monitoring", "v2")]).is_empty());
        assert_eq!(
            found(&index, &[to_monitoring, ("tier", "a")]),
            ["monitoring"]
        );
        // Losing its aggregationRule, or being deleted: found no more.
        let plain = object(
            "ClusterRole",
            "",
            "monitoring",
            serde_json::json!({"rules": []}),
        );
        put(&mut index, Kind::ClusterRole, &monitoring, false);
        put(&mut index, Kind::ClusterRole, &plain, true);
        assert!(found(&index, &[to_monitoring, ("tier", "a")]).is_empty());
        assert!(index.cluster_role("monitoring").is_some());
        put(&mut index, Kind::ClusterRole, &ops, false);
        assert!(found(&index, &[("team", "ops")]).is_empty());
        assert!(index.cluster_role("ops").is_none());
        assert!(index.aggregators_by_label.is_empty());
        assert!(index.aggregators_without_labels.is_empty());
    }
}
