//! Kubernetes RBAC's objects (`rbac.authorization.k8s.io/v1` Role,
//! ClusterRole, RoleBinding, ClusterRoleBinding), held as generic objects,
//! read as views of Kubernetes' own types: a role's [`PolicyRule`]s and
//! `aggregationRule` ([`RoleView`]), a binding's `roleRef` and subjects
//! ([`BindingView`]), and who a subject is ([`SubjectExt::applies_to`],
//! Kubernetes' `appliesToUser`). Lists and strings that Kubernetes leaves
//! unset when empty are read that way ([`PolicyRuleExt::normalized`],
//! [`SubjectExt::normalized`]), so that equal rules and subjects compare
//! equal. [`SubjectKey`] is what bindings are indexed by in the
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

use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{generic, selector, typed};

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

pub use crate::typed::api::rbac::v1::{AggregationRule, PolicyRule, RoleRef, Subject};

/// A list field of a rule or selector: empty when unset.
fn items(list: &Option<Vec<String>>) -> &[String] {
    list.as_deref().unwrap_or_default()
}

/// `Some(items)`, or `None` for none: how Go's `omitempty` writes a list.
fn unless_empty(items: Vec<String>) -> Option<Vec<String>> {
    (!items.is_empty()).then_some(items)
}

/// `["a" "b"]`, as Go's `%q` prints a string slice.
fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| (*i).to_owned()).collect()
}

/// What skiff does with a [`PolicyRule`] (Kubernetes' type): builds one,
/// reads its lists (unset ones as empty), and prints it.
pub trait PolicyRuleExt: Sized {
    /// A rule of `verbs` on `resources` of `api_groups`.
    fn resources(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> Self;
    /// A rule of `verbs` on the paths `urls`.
    fn urls(verbs: &[&str], urls: &[&str]) -> Self;
    /// The same rule limited to the objects named `names`.
    fn named(self, names: &[&str]) -> Self;
    /// `apiGroups`.
    fn group_list(&self) -> &[String];
    /// `resources`: `resource`, `resource/subresource`, `*/subresource` or
    /// `*`.
    fn resource_list(&self) -> &[String];
    /// `resourceNames`; empty: every object.
    fn name_list(&self) -> &[String];
    /// `nonResourceURLs`: paths, a trailing `*` a prefix.
    fn url_list(&self) -> &[String];
    /// The rule as escalation refusals print it (Kubernetes'
    /// `CompactString`): `{APIGroups:[""], Resources:["pods"],
    /// Verbs:["get"]}`, empty fields left out.
    fn compact_string(&self) -> String;
    /// The rule with its empty lists unset, as Kubernetes reads and
    /// writes them, so that equal rules compare equal.
    fn normalized(self) -> Self;
}

impl PolicyRuleExt for PolicyRule {
    fn resources(verbs: &[&str], api_groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: owned(verbs),
            api_groups: unless_empty(owned(api_groups)),
            resources: unless_empty(owned(resources)),
            ..PolicyRule::default()
        }
    }

    fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: owned(verbs),
            non_resource_urls: unless_empty(owned(urls)),
            ..PolicyRule::default()
        }
    }

    fn named(self, names: &[&str]) -> PolicyRule {
        PolicyRule {
            resource_names: unless_empty(owned(names)),
            ..self
        }
    }

    fn group_list(&self) -> &[String] {
        items(&self.api_groups)
    }

    fn resource_list(&self) -> &[String] {
        items(&self.resources)
    }

    fn name_list(&self) -> &[String] {
        items(&self.resource_names)
    }

    fn url_list(&self) -> &[String] {
        items(&self.non_resource_urls)
    }

    fn compact_string(&self) -> String {
        let fields = [
            ("APIGroups", self.group_list()),
            ("Resources", self.resource_list()),
            ("NonResourceURLs", self.url_list()),
            ("ResourceNames", self.name_list()),
            ("Verbs", self.verbs.as_slice()),
        ];
        let parts: Vec<String> = fields
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(name, values)| format!("{name}:{}", quoted_list(values)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }

    fn normalized(self) -> PolicyRule {
        PolicyRule {
            api_groups: self.api_groups.and_then(unless_empty),
            resources: self.resources.and_then(unless_empty),
            resource_names: self.resource_names.and_then(unless_empty),
            non_resource_urls: self.non_resource_urls.and_then(unless_empty),
            verbs: self.verbs,
        }
    }
}

/// An `aggregationRule` selecting the ClusterRoles labelled `label: "true"`
/// (how the default roles aggregate).
pub fn aggregation_of_label(label: &str) -> AggregationRule {
    let selector = crate::typed::meta::LabelSelector {
        match_labels: Some([(label.to_owned(), "true".to_owned())].into()),
        ..Default::default()
    };
    AggregationRule {
        cluster_role_selectors: Some(vec![selector]),
    }
}

/// An `aggregationRule`'s selectors (none when unset).
pub fn selectors_of(rule: &AggregationRule) -> &[crate::typed::meta::LabelSelector] {
    rule.cluster_role_selectors.as_deref().unwrap_or_default()
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
            .and_then(|r| typed::decode::<Vec<PolicyRule>>(r.clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .map(PolicyRule::normalized)
            .collect();
        let aggregation_rule = content
            .get("aggregationRule")
            .filter(|a| !a.is_null())
            .and_then(|a| typed::decode::<AggregationRule>(a.clone()).ok());
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
            .is_some_and(|a| !selectors_of(a).is_empty())
    }

    /// Whether one of its `aggregationRule`'s selectors selects a
    /// ClusterRole labelled `labels`: whether it aggregates that role's
    /// rules.
    pub fn aggregates_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let mut selectors = self.aggregation_rule.iter().flat_map(selectors_of);
        selectors.any(|s| selector::matches_typed(s, labels))
    }
}

/// What skiff does with a binding's [`Subject`] (Kubernetes' type): who
/// it is, and how it is indexed and named.
pub trait SubjectExt: Sized {
    /// A `User` or `Group` subject.
    fn named(kind: &str, name: &str) -> Self;
    /// The namespace a ServiceAccount subject means: its own, else the
    /// binding's (`""` for a ClusterRoleBinding: no service account).
    fn service_account_namespace<'a>(&'a self, binding_namespace: &'a str) -> &'a str;
    /// Whether the subject is the user `user` in `groups`, in a binding of
    /// `binding_namespace` (`""` for a ClusterRoleBinding): Kubernetes'
    /// `appliesToUser`. Another kind of subject is no one.
    fn applies_to(&self, user: &str, groups: &[String], binding_namespace: &str) -> bool;
    /// The key it is indexed by; `None` for a subject that is no one (an
    /// unknown kind, a ServiceAccount without a namespace in a
    /// ClusterRoleBinding).
    fn key(&self, binding_namespace: &str) -> Option<SubjectKey>;
    /// How decisions name it (Kubernetes' `describeSubject`): `User
    /// "jane"`, `ServiceAccount "robot/team"` (name, then namespace).
    fn describe(&self, binding_namespace: &str) -> String;
    /// The subject with an empty `apiGroup` or `namespace` unset, as
    /// Kubernetes reads it, so that equal subjects compare equal.
    fn normalized(self) -> Self;
}

impl SubjectExt for Subject {
    fn named(kind: &str, name: &str) -> Subject {
        Subject {
            kind: kind.to_owned(),
            api_group: Some(API_GROUP.to_owned()),
            name: name.to_owned(),
            namespace: None,
        }
    }

    fn service_account_namespace<'a>(&'a self, binding_namespace: &'a str) -> &'a str {
        match self.namespace.as_deref() {
            None | Some("") => binding_namespace,
            Some(own) => own,
        }
    }

    fn applies_to(&self, user: &str, groups: &[String], binding_namespace: &str) -> bool {
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

    fn key(&self, binding_namespace: &str) -> Option<SubjectKey> {
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

    fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let namespace = self.service_account_namespace(binding_namespace);
                let account = format!("{}/{namespace}", self.name);
                format!("{} {account:?}", self.kind)
            }
            _ => format!("{} {:?}", self.kind, self.name),
        }
    }

    fn normalized(self) -> Subject {
        let set = |text: Option<String>| text.filter(|t| !t.is_empty());
        Subject {
            api_group: set(self.api_group),
            namespace: set(self.namespace),
            ..self
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
            .and_then(|r| typed::decode(r.clone()).ok())
            .unwrap_or_default();
        let subjects = content
            .get("subjects")
            .and_then(|s| typed::decode::<Vec<Subject>>(s.clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .map(Subject::normalized)
            .collect();
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
    fn empty_lists_and_strings_read_as_unset_so_equal_rules_and_subjects_compare_equal() {
        let role = object(
            "Role",
            "ns",
            "r",
            serde_json::json!({"rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"],
                 "resourceNames": [], "nonResourceURLs": []},
            ]}),
        );
        let view = RoleView::read(&role).expect("a role");
        assert_eq!(
            view.rules,
            [PolicyRule::resources(&["get"], &[""], &["pods"])]
        );
        assert_eq!(view.rules[0].resource_names, None);
        let binding = object(
            "RoleBinding",
            "ns",
            "b",
            serde_json::json!({
                "roleRef": {"apiGroup": API_GROUP, "kind": "Role", "name": "r"},
                "subjects": [
                    {"kind": "Group", "apiGroup": API_GROUP, "name": "devs", "namespace": ""},
                    {"kind": "ServiceAccount", "apiGroup": "", "name": "robot"},
                ],
            }),
        );
        let view = BindingView::read(&binding).expect("a binding");
        assert_eq!(view.subjects[0], Subject::named("Group", "devs"));
        assert_eq!(view.subjects[1].api_group, None);
        assert_eq!(view.subjects[1].namespace, None);
        assert_eq!(
            view.subjects[1].describe("ns"),
            r#"ServiceAccount "robot/ns""#
        );
        // Written back, unset lists and strings are left out, as Go's
        // omitempty leaves them out.
        assert_eq!(
            crate::typed::encode(&view.subjects[1]),
            serde_json::json!({"kind": "ServiceAccount", "name": "robot"})
        );
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
            namespace: Some("team".into()),
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
