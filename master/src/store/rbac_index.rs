//! RBAC's part of the object cache: RoleBindings and ClusterRoleBindings
//! indexed by the subjects they name (`objects::rbac::SubjectKey`: a user,
//! a group, a service account), and every role's and binding's content
//! read once, when it is applied, not on each request.
//!
//! An authorization asks [`RbacIndex::grants`] with the keys of the
//! request's user and groups: a few hash lookups, then the bindings that
//! name them, each with its role's rules. What it costs does not grow with
//! the bindings of other subjects: a thousand RoleBindings of other
//! service accounts are never looked at. It holds each role's rules and
//! each binding's subjects a second time, decoded (a few hundred bytes
//! each).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use skiff_proto::api::Object;

use crate::objects::rbac::{BindingView, RoleView, SubjectKey};
use crate::objects::Kind;

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
    /// RoleBinding or ClusterRoleBinding.
    pub binding_kind: Kind,
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
}

impl RbacIndex {
    /// Indexes (`add`) or forgets an object of `kind` at `key`; objects
    /// of other kinds are not RBAC's.
    pub fn edit(&mut self, kind: Kind, key: &Key, object: &Object, add: bool) {
        match kind {
            Kind::Role | Kind::ClusterRole => {
                if add {
                    if let Some(role) = RoleView::read(object) {
                        self.roles.insert((kind, key.clone()), Arc::new(role));
                    }
                } else {
                    self.roles.remove(&(kind, key.clone()));
                }
            }
            Kind::RoleBinding | Kind::ClusterRoleBinding => {
                let Some(binding) = BindingView::read(object) else {
                    return;
                };
                for subject in binding.subject_keys(&key.0) {
                    let at = (subject, key.0.clone());
                    if add {
                        self.by_subject.entry(at).or_default().insert(key.1.clone());
                    } else if let Some(names) = self.by_subject.get_mut(&at) {
                        names.remove(&key.1);
                        if names.is_empty() {
                            self.by_subject.remove(&at);
                        }
                    }
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
                    binding_kind: kind,
                    binding_namespace: binding_namespace.to_owned(),
                    binding_name: name.clone(),
                    role: self.role_of(binding, binding_namespace),
                    binding: binding.clone(),
                });
            }
        }
        found
    }

    /// The role `binding` (of `namespace`, `""` for a ClusterRoleBinding)
    /// refers to (Kubernetes' `GetRoleReferenceRules`).
    fn role_of(
        &self,
        binding: &BindingView,
        namespace: &str,
    ) -> Result<Arc<RoleView>, RoleRefError> {
        let role_ref = &binding.role_ref;
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

    /// How many bindings are indexed.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::IntoObject;
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    fn object(kind: &str, namespace: &str, name: &str, content: serde_json::Value) -> Object {
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
        use crate::objects::ObjectExt;
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
        crate::objects::rbac::user_keys(
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
        assert_eq!(index.binding_count(), 1005);
        let grants = index.grants(&robot(), "team");
        let found: Vec<(Kind, &str, &str)> = grants
            .iter()
            .map(|g| {
                (
                    g.binding_kind,
                    g.binding_namespace.as_str(),
                    g.binding_name.as_str(),
                )
            })
            .collect();
        // The ServiceAccount subject without a namespace is the binding's:
        // "odd" (a ClusterRoleBinding) names no one.
        assert_eq!(
            found,
            [
                (Kind::ClusterRoleBinding, "", "all"),
                (Kind::RoleBinding, "team", "a-view"),
                (Kind::RoleBinding, "team", "b-read"),
            ]
        );
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
        let keys = crate::objects::rbac::user_keys("system:serviceaccount:team:sa-1", &[]);
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
}
