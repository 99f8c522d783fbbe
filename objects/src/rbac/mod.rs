//! Kubernetes RBAC's objects (`rbac.authorization.k8s.io/v1` Role,
//! ClusterRole, RoleBinding, ClusterRoleBinding), held as generic objects,
//! read as typed views: a role's [`PolicyRule`]s and `aggregationRule`
//! ([`RoleView`]), a binding's `roleRef` and subjects ([`BindingView`]),
//! and who a subject is ([`Subject::applies_to`], Kubernetes'
//! `appliesToUser`). [`SubjectKey`] is what bindings are indexed by in the
//! object cache (`store::rbac_index`): a request's user and groups look up
//! only the bindings naming them.
//!
//! What reads these views: the authorizer (`api::rbac`), the ClusterRole
//! aggregation controller, the default roles kept at bootstrap
//! ([`bootstrap_policy`]), and the rule comparison every escalation check
//! and policy reconcile makes ([`policy_comparator`]).

pub mod bootstrap_policy;
pub mod policy_comparator;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::LabelSelector;

use super::{generic, selector};

/// The RBAC API group.
pub const API_GROUP: &str = "rbac.authorization.k8s.io";
/// The `apiVersion` of its objects.
pub const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
/// `*` in a rule's verbs, API groups, resources or non-resource URLs.
pub const ALL: &str = "*";
/// How Kubernetes names a service account as a user:
/// `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group every service account is in.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// The group that may do everything (`system:masters`): never refused,
/// escalation included.
pub const MASTERS_GROUP: &str = "system:masters";

/// One grant of a role, as Kubernetes writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verbs: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*/subresource` or `*`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// Empty: every object.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
    /// Paths, a trailing `*` a prefix.
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// A JSON `null` read as the empty value (`resourceNames: null`).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `["a" "b"]`, as Go's `%q` prints a string slice.
fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

impl PolicyRule {
    /// A rule of `verbs` on `resources` of `api_groups`.
    pub fn resources(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: owned(verbs),
            api_groups: owned(api_groups),
            resources: owned(resources),
            ..PolicyRule::default()
        }
    }

    /// A rule of `verbs` on the paths `urls`.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: owned(verbs),
            non_resource_urls: owned(urls),
            ..PolicyRule::default()
        }
    }

    /// The same rule limited to the objects named `names`.
    pub fn named(self, names: &[&str]) -> PolicyRule {
        PolicyRule {
            resource_names: owned(names),
            ..self
        }
    }

    /// The rule as escalation refusals print it (Kubernetes'
    /// `CompactString`): `{APIGroups:[""], Resources:["pods"],
    /// Verbs:["get"]}`, empty fields left out.
    pub fn compact_string(&self) -> String {
        let fields = [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ];
        let parts: Vec<String> = fields
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(name, values)| format!("{name}:{}", quoted_list(values)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| (*i).to_owned()).collect()
}

/// A ClusterRole's `aggregationRule`: its rules are those of the
/// ClusterRoles any of these selectors selects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationRule {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// What a Role or ClusterRole grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleView {
    pub rules: Vec<PolicyRule>,
    /// ClusterRoles only.
    pub aggregation_rule: Option<AggregationRule>,
}

impl RoleView {
    /// Reads a Role or ClusterRole; `None` for another kind of object.
    /// Rules that do not read as rules (which the schema check refuses on
    /// write) grant nothing.
    pub fn read(object: &Object) -> Option<RoleView> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.api_version != API_VERSION || !matches!(g.kind.as_str(), "Role" | "ClusterRole") {
            return None;
        }
        Some(RoleView::from_content(&generic::content(g)))
    }

    /// The view of a role's fields besides `metadata`.
    pub fn from_content(content: &serde_json::Map<String, Value>) -> RoleView {
        let rules = content
            .get("rules")
            .and_then(|r| serde_json::from_value::<Vec<PolicyRule>>(r.clone()).ok())
            .unwrap_or_default();
        let aggregation_rule = content
            .get("aggregationRule")
            .filter(|a| !a.is_null())
            .and_then(|a| serde_json::from_value::<AggregationRule>(a.clone()).ok());
        RoleView {
            rules,
            aggregation_rule,
        }
    }

    /// Whether it has an `aggregationRule` with at least one selector
    /// (Kubernetes' `hasAggregationRule`).
    pub fn has_aggregation_rule(&self) -> bool {
        self.aggregation_rule
            .as_ref()
            .is_some_and(|a| !a.cluster_role_selectors.is_empty())
    }

    /// Whether one of its `aggregationRule`'s selectors selects a
    /// ClusterRole labelled `labels`: whether it aggregates that role's
    /// rules.
    pub fn aggregates_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let mut selectors = self
            .aggregation_rule
            .iter()
            .flat_map(|a| &a.cluster_role_selectors);
        selectors.any(|s| selector::matches(s, labels))
    }
}

/// A binding's `roleRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

/// One subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    pub name: String,
    /// A ServiceAccount's; the binding's own when empty (a RoleBinding).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// A `User` or `Group` subject.
    pub fn named(kind: &str, name: &str) -> Subject {
        Subject {
            kind: kind.to_owned(),
            api_group: API_GROUP.to_owned(),
            name: name.to_owned(),
            namespace: String::new(),
        }
    }

    /// The namespace a ServiceAccount subject means: its own, else the
    /// binding's (`""` for a ClusterRoleBinding: no service account).
    fn service_account_namespace<'a>(&'a self, binding_namespace: &'a str) -> &'a str {
        if self.namespace.is_empty() {
            binding_namespace
        } else {
            &self.namespace
        }
    }

    /// Whether the subject is the user `user` in `groups`, in a binding of
    /// `binding_namespace` (`""` for a ClusterRoleBinding): Kubernetes'
    /// `appliesToUser`. Another kind of subject is no one.
    pub fn applies_to(&self, user: &str, groups: &[String], binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user == self.name,
            "Group" => groups.contains(&self.name),
            "ServiceAccount" => {
                let namespace = self.service_account_namespace(binding_namespace);
                !namespace.is_empty() && is_service_account_user(user, namespace, &self.name)
            }
            _ => false,
        }
    }

    /// The key it is indexed by; `None` for a subject that is no one (an
    /// unknown kind, a ServiceAccount without a namespace in a
    /// ClusterRoleBinding).
    pub fn key(&self, binding_namespace: &str) -> Option<SubjectKey> {
        match self.kind.as_str() {
            "User" => Some(SubjectKey::User(self.name.clone())),
            "Group" => Some(SubjectKey::Group(self.name.clone())),
            "ServiceAccount" => {
                let namespace = self.service_account_namespace(binding_namespace);
                (!namespace.is_empty()).then(|| SubjectKey::ServiceAccount {
                    namespace: namespace.to_owned(),
                    name: self.name.clone(),
                })
            }
            _ => None,
        }
    }

    /// How decisions name it (Kubernetes' `describeSubject`): `User
    /// "jane"`, `ServiceAccount "robot/team"` (name, then namespace).
    pub fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let namespace = self.service_account_namespace(binding_namespace);
                let account = format!("{}/{namespace}", self.name);
                format!("{} {account:?}", self.kind)
            }
            _ => format!("{} {:?}", self.kind, self.name),
        }
    }
}

/// Whether `user` is the service account `namespace`/`name`
/// (`system:serviceaccount:<namespace>:<name>`; Kubernetes'
/// `serviceaccount.MatchesUsername`).
pub fn is_service_account_user(user: &str, namespace: &str, name: &str) -> bool {
    user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest == name)
}

/// What bindings are indexed by: who a subject names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKey {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

/// The keys of the subjects that may apply to the user `user` in
/// `groups`: the user, each group, and, for a service account's user name,
/// the service account (every split of `<namespace>:<name>` at a colon, as
/// `is_service_account_user` would match any of them). Exactly the
/// bindings indexed under these can name the user.
pub fn user_keys(user: &str, groups: &[String]) -> Vec<SubjectKey> {
    let mut keys = vec![SubjectKey::User(user.to_owned())];
    keys.extend(groups.iter().map(|g| SubjectKey::Group(g.clone())));
    if let Some(rest) = user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX) {
        for (at, _) in rest.match_indices(':') {
            keys.push(SubjectKey::ServiceAccount {
                namespace: rest[..at].to_owned(),
                name: rest[at + 1..].to_owned(),
            });
        }
    }
    keys
}

/// What a RoleBinding or ClusterRoleBinding binds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindingView {
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl BindingView {
    /// Reads a RoleBinding or ClusterRoleBinding; `None` for another kind
    /// of object.
    pub fn read(object: &Object) -> Option<BindingView> {
        let Some(Body::Generic(g)) = &object.kind else {
            return None;
        };
        if g.api_version != API_VERSION
            || !matches!(g.kind.as_str(), "RoleBinding" | "ClusterRoleBinding")
        {
            return None;
        }
        let content = generic::content(g);
        let role_ref = content
            .get("roleRef")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let subjects = content
            .get("subjects")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        Some(BindingView { role_ref, subjects })
    }

    /// The first subject that is the user `user` in `groups`, and where it
    /// is (Kubernetes' `appliesTo`).
    pub fn subject_for(
        &self,
        user: &str,
        groups: &[String],
        binding_namespace: &str,
    ) -> Option<&Subject> {
        self.subjects
            .iter()
            .find(|s| s.applies_to(user, groups, binding_namespace))
    }

    /// The keys of its subjects (each once) in a binding of
    /// `binding_namespace`.
    pub fn subject_keys(&self, binding_namespace: &str) -> Vec<SubjectKey> {
        let mut keys: Vec<SubjectKey> = self
            .subjects
            .iter()
            .filter_map(|s| s.key(binding_namespace))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoObject;
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    fn object(kind: &str, namespace: &str, name: &str, content: Value) -> Object {
        GenericObject {
            api_version: API_VERSION.to_owned(),
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

    #[test]
    fn roles_read_their_rules_and_aggregation_rule_nulls_included() {
        let role = object(
            "ClusterRole",
            "",
            "r",
            serde_json::json!({
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": null},
                    {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
                ],
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]},
            }),
        );
        let view = RoleView::read(&role).expect("a role");
        assert_eq!(
            view.rules,
            [
                PolicyRule::resources(&["get"], &[""], &["pods"]),
                PolicyRule::urls(&["get"], &["/healthz"]),
            ]
        );
        assert!(view.has_aggregation_rule());
        let labelled = |a: &str| BTreeMap::from([("a".to_owned(), a.to_owned())]);
        assert!(view.aggregates_labels(&labelled("b")));
        assert!(!view.aggregates_labels(&labelled("c")));
        let empty = object("Role", "ns", "e", serde_json::json!({"rules": null}));
        assert_eq!(RoleView::read(&empty), Some(RoleView::default()));
        assert!(!RoleView::default().aggregates_labels(&labelled("b")));
        let binding = object("RoleBinding", "ns", "b", serde_json::json!({}));
        assert_eq!(RoleView::read(&binding), None);
    }

    #[test]
    fn rules_are_written_and_printed_as_kubernetes_writes_them() {
        let rule = PolicyRule::resources(&["get", "list"], &[""], &["pods"]).named(&["web"]);
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            serde_json::json!({
                "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                "resourceNames": ["web"],
            })
        );
        assert_eq!(
            rule.compact_string(),
            r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["web"], Verbs:["get" "list"]}"#
        );
        assert_eq!(
            PolicyRule::urls(&["get"], &["/metrics"]).compact_string(),
            r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#
        );
    }

    #[test]
    fn subjects_apply_as_kubernetes_applies_them() {
        let groups = ["devs".to_owned(), AUTHENTICATED_GROUP.to_owned()];
        let user = Subject::named("User", "jane");
        assert!(user.applies_to("jane", &[], ""));
        assert!(!user.applies_to("john", &groups, ""));
        let group = Subject::named("Group", "devs");
        assert!(group.applies_to("john", &groups, ""));
        assert!(!group.applies_to("devs", &[], ""));
        let robot = "system:serviceaccount:team:robot";
        // A ServiceAccount subject without a namespace is the binding's.
        let sa = Subject {
            kind: "ServiceAccount".into(),
            name: "robot".into(),
            ..Subject::default()
        };
        assert!(sa.applies_to(robot, &[], "team"));
        assert!(!sa.applies_to(robot, &[], "other"));
        assert!(!sa.applies_to(robot, &[], ""), "no namespace: no one");
        assert_eq!(sa.describe("team"), r#"ServiceAccount "robot/team""#);
        let elsewhere = Subject {
            namespace: "team".into(),
            ..sa.clone()
        };
        assert!(elsewhere.applies_to(robot, &[], "other"));
        assert!(elsewhere.applies_to(robot, &[], ""));
        assert!(!elsewhere.applies_to("system:serviceaccount:team:robot2", &[], ""));
        assert!(!elsewhere.applies_to("system:serviceaccount:teams:robot", &[], ""));
        let unknown = Subject::named("Robot", "robot");
        assert!(!unknown.applies_to("robot", &[], "team"));
        assert_eq!(unknown.key("team"), None);
    }

    #[test]
    fn a_users_keys_are_every_subject_that_can_name_it() {
        let keys = user_keys("system:serviceaccount:team:robot", &["g".to_owned()]);
        assert_eq!(
            keys,
            [
                SubjectKey::User("system:serviceaccount:team:robot".into()),
                SubjectKey::Group("g".into()),
                SubjectKey::ServiceAccount {
                    namespace: "team".into(),
                    name: "robot".into()
                },
            ]
        );
        // Each key a subject can have that applies to the user is among
        // the user's keys.
        let subjects = [
            Subject::named("User", "system:serviceaccount:team:robot"),
            Subject::named("Group", "g"),
            Subject {
                kind: "ServiceAccount".into(),
                name: "robot".into(),
                ..Subject::default()
            },
        ];
        for subject in subjects {
            assert!(subject.applies_to(
                "system:serviceaccount:team:robot",
                &["g".to_owned()],
                "team"
            ));
            let key = subject.key("team").expect("a key");
            assert!(keys.contains(&key), "{key:?}");
        }
        assert_eq!(user_keys("jane", &[]), [SubjectKey::User("jane".into())]);
    }

    #[test]
    fn bindings_read_their_role_and_subjects() {
        let binding = object(
            "RoleBinding",
            "team",
            "b",
            serde_json::json!({
                "roleRef": {"apiGroup": API_GROUP, "kind": "Role", "name": "pod-reader"},
                "subjects": [
                    {"kind": "ServiceAccount", "name": "robot"},
                    {"kind": "User", "apiGroup": API_GROUP, "name": "jane"},
                    {"kind": "User", "apiGroup": API_GROUP, "name": "jane"},
                ],
            }),
        );
        let view = BindingView::read(&binding).expect("a binding");
        assert_eq!(view.role_ref.kind, "Role");
        assert_eq!(view.role_ref.name, "pod-reader");
        assert_eq!(
            view.subject_keys("team"),
            [
                SubjectKey::User("jane".into()),
                SubjectKey::ServiceAccount {
                    namespace: "team".into(),
                    name: "robot".into()
                },
            ]
        );
        let found = view.subject_for("jane", &[], "team").expect("jane");
        assert_eq!(found.describe("team"), r#"User "jane""#);
        assert!(view.subject_for("john", &[], "team").is_none());
    }
}
