//! The ClusterRoles and ClusterRoleBindings every cluster has, as
//! kube-apiserver's RBAC bootstrap policy makes them
//! (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), each labelled
//! `kubernetes.io/bootstrapping: rbac-defaults` and annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`:
//!
//! - `cluster-admin` (everything), bound to the group `system:masters`;
//! - the user-facing `admin`, `edit` and `view`, aggregated
//!   (`aggregationRule`) from the ClusterRoles labelled
//!   `rbac.authorization.k8s.io/aggregate-to-<role>: "true"`:
//!   `system:aggregate-to-admin`, `-edit` and `-view` carry Kubernetes'
//!   rules, `edit` is aggregated into `admin` and `view` into `edit`;
//! - `system:basic-user` (the self reviews) and `system:discovery`, bound
//!   to `system:authenticated`; `system:public-info-viewer` (version and
//!   health), bound to `system:authenticated` and `system:unauthenticated`;
//!   `system:service-account-issuer-discovery`, bound to
//!   `system:serviceaccounts`.
//!
//! Kept as kube-apiserver keeps them at each start ([`reconcile_role`],
//! [`reconcile_binding`], `pkg/registry/rbac/reconciliation`): a missing
//! one is created; one whose annotation is not `"false"` gets back the
//! labels, annotations, rules, aggregation selectors and subjects it lacks
//! (what was added to it stays), and a binding whose `roleRef` changed is
//! made again. The leader's loop that does it is
//! `controllers::default_rbac_policy`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1::{GenericObject, ObjectMeta};

use super::policy_comparator::covers;
use super::{
    aggregation_of_label, selectors_of, AggregationRule, BindingView, PolicyRule, PolicyRuleExt,
    RoleView, Subject, SubjectExt, API_VERSION,
};
use crate::typed::{self, meta::LabelSelector};
use crate::{generic, IntoObject, ObjectExt};

/// The label of every default object.
pub const BOOTSTRAPPING_LABEL: &str = "kubernetes.io/bootstrapping";
pub const BOOTSTRAPPING_VALUE: &str = "rbac-defaults";
/// `"false"` keeps a default object as someone changed it.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// Aggregated into `admin`, `edit` and `view` when `"true"`.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The verbs that change objects.
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// The verbs that read them.
const READ: &[&str] = &["get", "list", "watch"];
/// Both.
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule::resources(verbs, groups, resources)
}

/// A default ClusterRole: `extra_labels` besides the bootstrapping label,
/// `rules`, and the labels an `aggregationRule` selects, if any.
fn cluster_role(
    name: &str,
    extra_labels: &[&str],
    rules: Vec<PolicyRule>,
    aggregate_from: Option<&str>,
) -> Object {
    let mut content = Map::new();
    if !rules.is_empty() {
        content.insert("rules".to_owned(), typed::encode(&rules));
    }
    if let Some(label) = aggregate_from {
        let rule = aggregation_of_label(label);
        content.insert("aggregationRule".to_owned(), typed::encode(&rule));
    }
    default_object("ClusterRole", name, extra_labels, content)
}

/// A default ClusterRoleBinding of the ClusterRole of the same name to
/// `groups`.
fn cluster_role_binding(name: &str, groups: &[&str]) -> Object {
    let subjects: Vec<Subject> = groups.iter().map(|g| Subject::named("Group", g)).collect();
    let mut content = Map::new();
    content.insert(
        "roleRef".to_owned(),
        json!({"apiGroup": super::API_GROUP, "kind": "ClusterRole", "name": name}),
    );
    content.insert("subjects".to_owned(), typed::encode(&subjects));
    default_object("ClusterRoleBinding", name, &[], content)
}

fn default_object(
    kind: &str,
    name: &str,
    extra_labels: &[&str],
    content: Map<String, Value>,
) -> Object {
    let mut labels: BTreeMap<String, String> = [(
        BOOTSTRAPPING_LABEL.to_owned(),
        BOOTSTRAPPING_VALUE.to_owned(),
    )]
    .into();
    labels.extend(
        extra_labels
            .iter()
            .map(|l| ((*l).to_owned(), "true".to_owned())),
    );
    let mut object = GenericObject {
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        metadata: Some(ObjectMeta {
            name: name.to_owned(),
            labels,
            annotations: [(AUTOUPDATE_ANNOTATION.to_owned(), "true".to_owned())].into(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    generic::set_content(&mut object, &content);
    object.into_object()
}

/// The default ClusterRoles, in name order.
pub fn cluster_roles() -> Vec<Object> {
    vec![
        cluster_role("admin", &[], vec![], Some(AGGREGATE_TO_ADMIN)),
        cluster_role(
            "cluster-admin",
            &[],
            vec![
                rule(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ],
            None,
        ),
        cluster_role(
            "edit",
            &[AGGREGATE_TO_ADMIN],
            vec![],
            Some(AGGREGATE_TO_EDIT),
        ),
        cluster_role(
            "system:aggregate-to-admin",
            &[AGGREGATE_TO_ADMIN],
            aggregate_to_admin(),
            None,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[AGGREGATE_TO_EDIT],
            aggregate_to_edit(),
            None,
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[AGGREGATE_TO_VIEW],
            aggregate_to_view(),
            None,
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
            None,
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
            None,
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
            None,
        ),
        cluster_role(
            "view",
            &[AGGREGATE_TO_EDIT],
            vec![],
            Some(AGGREGATE_TO_VIEW),
        ),
    ]
}

/// The default ClusterRoleBindings, in name order.
pub fn cluster_role_bindings() -> Vec<Object> {
    vec![
        cluster_role_binding("cluster-admin", &[super::MASTERS_GROUP]),
        cluster_role_binding("system:basic-user", &[super::AUTHENTICATED_GROUP]),
        cluster_role_binding("system:discovery", &[super::AUTHENTICATED_GROUP]),
        cluster_role_binding(
            "system:public-info-viewer",
            &[super::AUTHENTICATED_GROUP, super::UNAUTHENTICATED_GROUP],
        ),
        cluster_role_binding(
            "system:service-account-issuer-discovery",
            &[super::SERVICE_ACCOUNTS_GROUP],
        ),
    ]
}

/// `system:aggregate-to-admin`: what `admin` has beyond `edit`.
fn aggregate_to_admin() -> Vec<PolicyRule> {
    vec![
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
        rule(
            READ_WRITE,
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
        ),
    ]
}

/// `system:aggregate-to-edit`: what `edit` has beyond `view`.
fn aggregate_to_edit() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
        ),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

/// `system:aggregate-to-view`: what `view` has.
fn aggregate_to_view() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ]
}

/// Whether a default object was changed on purpose and is to be left as it
/// is (its annotation says `"false"`).
fn protected(existing: &Object) -> bool {
    existing
        .meta()
        .annotations
        .get(AUTOUPDATE_ANNOTATION)
        .is_some_and(|v| v == "false")
}

/// Gives `object` the labels and annotations of `expected` it lacks (its
/// own values kept); answers whether it lacked any.
fn merge_metadata(object: &mut Object, expected: &Object) -> bool {
    let Ok(meta) = object.meta_mut() else {
        return false;
    };
    let wanted = expected.meta();
    let mut changed = false;
    for (k, v) in &wanted.labels {
        if !meta.labels.contains_key(k) {
            meta.labels.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    for (k, v) in &wanted.annotations {
        if !meta.annotations.contains_key(k) {
            meta.annotations.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// Edits the fields of a generic object besides its metadata.
fn edit_content(object: &mut Object, edit: impl FnOnce(&mut Map<String, Value>)) {
    if let Some(Body::Generic(g)) = object.kind.as_mut() {
        let mut content = generic::content(g);
        edit(&mut content);
        generic::set_content(g, &content);
    }
}

/// The stored default ClusterRole `existing` made to hold what `expected`
/// (its default) has: missing labels and annotations, missing rules
/// (broken down, appended), missing aggregation selectors, and no
/// aggregation rule when the default has none (Kubernetes'
/// `computeReconciledRole`, in the union mode kube-apiserver runs). `None`
/// when nothing is to change, or when it is protected.
pub fn reconcile_role(existing: &Object, expected: &Object) -> Option<Object> {
    if protected(existing) {
        return None;
    }
    let (have, want) = (RoleView::read(existing)?, RoleView::read(expected)?);
    let mut reconciled = existing.clone();
    let mut changed = merge_metadata(&mut reconciled, expected);
    let (_, missing) = covers(&have.rules, &want.rules);
    if !missing.is_empty() {
        let mut rules = have.rules.clone();
        rules.extend(missing);
        edit_content(&mut reconciled, |c| {
            c.insert("rules".to_owned(), typed::encode(&rules));
        });
        changed = true;
    }
    match (&have.aggregation_rule, &want.aggregation_rule) {
        (Some(_), None) => {
            edit_content(&mut reconciled, |c| {
                c.remove("aggregationRule");
            });
            changed = true;
        }
        (have_rule, Some(want_rule)) => {
            let mut selectors = have_rule
                .as_ref()
                .map(|a| selectors_of(a).to_vec())
                .unwrap_or_default();
            let missing: Vec<LabelSelector> = selectors_of(want_rule)
                .iter()
                .filter(|s| !selectors.contains(s))
                .cloned()
                .collect();
            if !missing.is_empty() {
                selectors.extend(missing);
                let rule = AggregationRule {
                    cluster_role_selectors: Some(selectors),
                };
                edit_content(&mut reconciled, |c| {
                    c.insert("aggregationRule".to_owned(), typed::encode(&rule));
                });
                changed = true;
            }
        }
        (None, None) => {}
    }
    changed.then_some(reconciled)
}

/// What keeping a default ClusterRoleBinding takes.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingReconcile {
    /// As it should be, or protected.
    Unchanged,
    /// Written back with what it lacks.
    Update(Object),
    /// Its `roleRef` (which cannot change) names another role: deleted and
    /// made again as the default is.
    Recreate(Object),
}

/// The stored default ClusterRoleBinding `existing` made to hold what
/// `expected` has: missing labels, annotations and subjects (appended),
/// or the default itself when the role it binds is another (Kubernetes'
/// `computeReconciledRoleBinding`, union mode).
pub fn reconcile_binding(existing: &Object, expected: &Object) -> BindingReconcile {
    if protected(existing) {
        return BindingReconcile::Unchanged;
    }
    let (Some(have), Some(want)) = (BindingView::read(existing), BindingView::read(expected))
    else {
        return BindingReconcile::Unchanged;
    };
    if have.role_ref != want.role_ref {
        return BindingReconcile::Recreate(expected.clone());
    }
    let mut reconciled = existing.clone();
    let mut changed = merge_metadata(&mut reconciled, expected);
    let missing: Vec<&Subject> = want
        .subjects
        .iter()
        .filter(|s| !have.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        let mut subjects = have.subjects.clone();
        subjects.extend(missing.into_iter().cloned());
        edit_content(&mut reconciled, |c| {
            c.insert("subjects".to_owned(), typed::encode(&subjects));
        });
        changed = true;
    }
    if changed {
        BindingReconcile::Update(reconciled)
    } else {
        BindingReconcile::Unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn named<'a>(objects: &'a [Object], name: &str) -> &'a Object {
        objects
            .iter()
            .find(|o| o.meta().name == name)
            .unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn the_defaults_are_labelled_annotated_and_bound_as_kubernetes_binds_them() {
        let roles = cluster_roles();
        let bindings = cluster_role_bindings();
        for object in roles.iter().chain(&bindings) {
            let meta = object.meta();
            assert_eq!(
                meta.labels[BOOTSTRAPPING_LABEL], "rbac-defaults",
                "{}",
                meta.name
            );
            assert_eq!(
                meta.annotations[AUTOUPDATE_ANNOTATION], "true",
                "{}",
                meta.name
            );
        }
        assert!(roles
            .iter()
            .all(|r| r.kind().ok() == Some(Kind::ClusterRole)));
        let groups = |name: &str| -> Vec<String> {
            let binding = BindingView::read(named(&bindings, name)).expect("a binding");
            assert_eq!(binding.role_ref.kind, "ClusterRole");
            assert_eq!(binding.role_ref.name, name);
            binding.subjects.iter().map(|s| s.name.clone()).collect()
        };
        assert_eq!(groups("cluster-admin"), ["system:masters"]);
        assert_eq!(groups("system:basic-user"), ["system:authenticated"]);
        assert_eq!(groups("system:discovery"), ["system:authenticated"]);
        assert_eq!(
            groups("system:public-info-viewer"),
            ["system:authenticated", "system:unauthenticated"]
        );
        assert_eq!(
            groups("system:service-account-issuer-discovery"),
            ["system:serviceaccounts"]
        );
        // Every binding's role is a default one.
        for binding in &bindings {
            let name = &BindingView::read(binding).unwrap().role_ref.name;
            assert!(roles.iter().any(|r| r.meta().name == *name), "{name}");
        }
        // admin, edit and view are aggregated, and chained.
        for (role, label) in [
            ("admin", AGGREGATE_TO_ADMIN),
            ("edit", AGGREGATE_TO_EDIT),
            ("view", AGGREGATE_TO_VIEW),
        ] {
            let view = RoleView::read(named(&roles, role)).unwrap();
            assert!(view.rules.is_empty(), "{role}");
            let aggregation = view.aggregation_rule.unwrap();
            let labels = selectors_of(&aggregation)[0].match_labels.as_ref().unwrap();
            assert_eq!(labels[label], "true", "{role}");
        }
        assert_eq!(
            named(&roles, "edit").meta().labels[AGGREGATE_TO_ADMIN],
            "true"
        );
        assert_eq!(
            named(&roles, "view").meta().labels[AGGREGATE_TO_EDIT],
            "true"
        );
    }

    fn with_rules(object: &Object, rules: Vec<PolicyRule>) -> Object {
        let mut object = object.clone();
        edit_content(&mut object, |c| {
            c.insert("rules".to_owned(), typed::encode(&rules));
        });
        object
    }

    #[test]
    fn a_kept_role_gets_back_what_it_lacks_and_keeps_what_was_added() {
        let roles = cluster_roles();
        let expected = named(&roles, "system:basic-user");
        assert_eq!(reconcile_role(expected, expected), None);
        // A rule dropped, one added, a label removed.
        let added = rule(&["get"], &[""], &["pods"]);
        let kept_rule = RoleView::read(expected).unwrap().rules[1].clone();
        let mut existing = with_rules(expected, vec![kept_rule.clone(), added.clone()]);
        existing.meta_mut().unwrap().labels.clear();
        let reconciled = reconcile_role(&existing, expected).expect("changed");
        assert_eq!(
            reconciled.meta().labels[BOOTSTRAPPING_LABEL],
            "rbac-defaults"
        );
        let rules = RoleView::read(&reconciled).unwrap().rules;
        assert_eq!(rules[..2], [kept_rule, added]);
        assert!(covers(&rules, &RoleView::read(expected).unwrap().rules).0);
        // Protected: left alone.
        let mut protected = existing.clone();
        protected
            .meta_mut()
            .unwrap()
            .annotations
            .insert(AUTOUPDATE_ANNOTATION.into(), "false".into());
        assert_eq!(reconcile_role(&protected, expected), None);
        // An aggregated role's rules are the aggregation controller's.
        let admin = named(&roles, "admin");
        let filled = with_rules(admin, vec![rule(&["get"], &[""], &["pods"])]);
        assert_eq!(reconcile_role(&filled, admin), None);
    }

    #[test]
    fn a_kept_binding_gets_back_its_subjects_and_is_made_again_for_another_role() {
        let bindings = cluster_role_bindings();
        let expected = named(&bindings, "system:discovery");
        assert_eq!(
            reconcile_binding(expected, expected),
            BindingReconcile::Unchanged
        );
        let mut emptied = expected.clone();
        edit_content(&mut emptied, |c| {
            c.insert(
                "subjects".to_owned(),
                json!([Subject::named("User", "jane")]),
            );
        });
        let BindingReconcile::Update(updated) = reconcile_binding(&emptied, expected) else {
            panic!("an update");
        };
        let names: Vec<String> = BindingView::read(&updated)
            .unwrap()
            .subjects
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["jane", "system:authenticated"]);
        let mut elsewhere = expected.clone();
        edit_content(&mut elsewhere, |c| {
            c.insert(
                "roleRef".to_owned(),
                json!({"apiGroup": super::super::API_GROUP, "kind": "ClusterRole", "name": "view"}),
            );
        });
        let BindingReconcile::Recreate(again) = reconcile_binding(&elsewhere, expected) else {
            panic!("made again");
        };
        assert_eq!(
            BindingView::read(&again).unwrap().role_ref.name,
            "system:discovery"
        );
    }
}
