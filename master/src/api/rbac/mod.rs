//! Kubernetes' RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`): may a
//! user (a name and groups) make a request (a verb on a resource of an API
//! group, maybe a subresource, in a namespace, maybe one object by name;
//! or a verb on a path that names no object)?
//!
//! The stored RoleBindings and ClusterRoleBindings are what decides: a
//! ClusterRoleBinding grants its ClusterRole's rules everywhere; a
//! RoleBinding grants its Role's, or a ClusterRole's, in its own namespace
//! only. A binding applies when one of its subjects is the user (`User`),
//! one of its groups (`Group`), or, for a service account's user
//! `system:serviceaccount:<namespace>:<name>`, that service account
//! (`ServiceAccount`, whose namespace defaults to the binding's). A rule
//! allows a request as [`rule_match`] says. Rules only allow; nothing
//! is denied but by the absence of a rule.
//!
//! The bindings come from the object cache's index by subject
//! (`store::rbac_index`): a request looks only at the bindings that name
//! its user or its groups, whatever the number of others, and at rules
//! read when the roles were stored.
//!
//! Each decision says why, in Kubernetes' words: `RBAC: allowed by
//! RoleBinding "robot-pods/team" of Role "pod-reader" to ServiceAccount
//! "robot/team"`; a refusal names the user, groups and request (`RBAC: no
//! rules authorize user ...`), and the bindings whose roles could not be
//! found.
//!
//! Writes of roles and bindings are checked besides ([`escalation`]): no
//! one grants what they do not hold.

pub mod escalation;
pub mod rule_match;

use crate::store::cache::ObjectCache;
use crate::store::rbac_index::Grant;
use skiff_objects::rbac::{user_keys, PolicyRule, SubjectExt};

pub use rule_match::rule_allows;

/// A request on resources, in RBAC's terms (Kubernetes'
/// `authorizer.Attributes` of a resource request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRequest<'a> {
    /// `get`, `list`, ..., or any other (`bind`, `escalate`).
    pub verb: &'a str,
    /// `""`: the core group.
    pub api_group: &'a str,
    /// The plural (`pods`).
    pub resource: &'a str,
    /// `""`: the object itself.
    pub subresource: &'a str,
    /// `""`: cluster-scoped, or every namespace.
    pub namespace: &'a str,
    /// `""`: a collection.
    pub name: &'a str,
}

/// What RBAC decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Resource(ResourceRequest<'a>),
    /// A lowercase HTTP verb on a path naming no object (`/version`).
    NonResource {
        verb: &'a str,
        path: &'a str,
    },
}

impl Request<'_> {
    /// The namespace whose RoleBindings apply (`""`: none).
    fn namespace(&self) -> &str {
        match self {
            Request::Resource(r) => r.namespace,
            Request::NonResource { .. } => "",
        }
    }

    /// The request as Kubernetes' RBAC logs a refusal: `"get" resource
    /// "deployments.apps/scale" named "web" in namespace "shop"`, `"get"
    /// nonResourceURL "/metrics" cluster-wide`.
    fn describe(&self) -> String {
        let operation = match self {
            Request::Resource(r) => {
                let mut resource = r.resource.to_owned();
                if !r.api_group.is_empty() {
                    resource = format!("{resource}.{}", r.api_group);
                }
                if !r.subresource.is_empty() {
                    resource = format!("{resource}/{}", r.subresource);
                }
                let mut operation = format!("{:?} resource {resource:?}", r.verb);
                if !r.name.is_empty() {
                    operation = format!("{operation} named {:?}", r.name);
                }
                operation
            }
            Request::NonResource { verb, path } => format!("{verb:?} nonResourceURL {path:?}"),
        };
        match self.namespace() {
            "" => format!("{operation} cluster-wide"),
            namespace => format!("{operation} in namespace {namespace:?}"),
        }
    }
}

/// RBAC's answer, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// `["a" "b"]`, as Go's `%q` prints groups.
fn quoted(groups: &[String]) -> String {
    let quoted: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// Errors as Kubernetes aggregates them: one alone, several (each said
/// once) in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut distinct: Vec<&str> = Vec::with_capacity(errors.len());
    for error in errors {
        if !distinct.contains(&error.as_str()) {
            distinct.push(error);
        }
    }
    match distinct.as_slice() {
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The bindings that may apply to `user` in `groups` for a request in
/// `namespace`.
fn grants(cache: &ObjectCache, user: &str, groups: &[String], namespace: &str) -> Vec<Grant> {
    cache.rbac_grants(&user_keys(user, groups), namespace)
}

/// What a grant is called in a decision: `ClusterRoleBinding "x" of
/// ClusterRole "y" to Group "z"`, `RoleBinding "x/ns" of Role "y" to ...`.
fn describe_grant(grant: &Grant, user: &str, groups: &[String]) -> String {
    let binding = &grant.binding;
    let (kind, name) = if grant.binding_namespace.is_empty() {
        ("ClusterRoleBinding", grant.binding_name.clone())
    } else {
        let name = format!("{}/{}", grant.binding_name, grant.binding_namespace);
        ("RoleBinding", name)
    };
    let subject = binding
        .subject_for(user, groups, &grant.binding_namespace)
        .map(|s| s.describe(&grant.binding_namespace))
        .unwrap_or_default();
    format!(
        "{kind} {name:?} of {} {:?} to {subject}",
        binding.role_ref.kind, binding.role_ref.name
    )
}

/// May `user` in `groups` make `request`? Kubernetes' `RBACAuthorizer`:
/// the first rule of a binding that applies and allows it decides.
pub fn authorize(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    request: &Request<'_>,
) -> Decision {
    let mut errors = Vec::new();
    for grant in grants(cache, user, groups, request.namespace()) {
        // The index found it by a subject; the binding says which applies.
        if grant
            .binding
            .subject_for(user, groups, &grant.binding_namespace)
            .is_none()
        {
            continue;
        }
        match &grant.role {
            Ok(role) => {
                if role.rules.iter().any(|rule| rule_allows(request, rule)) {
                    return Decision {
                        allowed: true,
                        reason: format!(
                            "RBAC: allowed by {}",
                            describe_grant(&grant, user, groups)
                        ),
                    };
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut reason = format!(
        "RBAC: no rules authorize user {user:?} with groups {} to {}",
        quoted(groups),
        request.describe()
    );
    if !errors.is_empty() {
        reason = format!("{reason}; RBAC: {}", aggregate(&errors));
    }
    Decision {
        allowed: false,
        reason,
    }
}

/// What Kubernetes' RBAC authorizer says of a request of `user` in
/// `groups` in `namespace` (`""`: outside namespaces) that it does not
/// allow, which kube-apiserver adds to its 403's message: the roles that
/// the bindings applying to the user name but that cannot be found (`RBAC:
/// role.rbac.authorization.k8s.io "gone" not found`), or nothing (its
/// search for a rule it only logs).
pub fn refusal_reason(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    namespace: &str,
) -> String {
    let (_, errors) = rules_for(cache, user, groups, namespace);
    if errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", aggregate(&errors))
    }
}

/// Every rule RBAC grants `user` in `groups` in `namespace` (`""`: the
/// ClusterRoleBindings' only), in the order [`authorize`] reads them, and
/// the errors met finding them (roles that do not exist): what a rules
/// review lists (Kubernetes' `RulesFor`).
pub fn rules_for(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    namespace: &str,
) -> (Vec<PolicyRule>, Vec<String>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for grant in grants(cache, user, groups, namespace) {
        if grant
            .binding
            .subject_for(user, groups, &grant.binding_namespace)
            .is_none()
        {
            continue;
        }
        match &grant.role {
            Ok(role) => rules.extend(role.rules.iter().cloned()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (rules, errors)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use skiff_proto::api::{EventType, Object};
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    use super::*;
    use crate::store::cache::CachedChange;
    use skiff_objects::rbac::PolicyRuleExt;
    use skiff_objects::{IntoObject, ObjectExt};

    /// An RBAC object of `kind` with `content`.
    pub(crate) fn rbac_object(
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

    /// A binding of `kind` (`RoleBinding` or `ClusterRoleBinding`) of the
    /// role `role` (`(kind, name)`) to `subjects`.
    pub(crate) fn binding(
        kind: &str,
        namespace: &str,
        name: &str,
        role: (&str, &str),
        subjects: serde_json::Value,
    ) -> Object {
        let role_ref = serde_json::json!({
            "apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1,
        });
        rbac_object(
            kind,
            namespace,
            name,
            serde_json::json!({"roleRef": role_ref, "subjects": subjects}),
        )
    }

    /// A cache holding `objects`.
    pub(crate) fn cache_of(objects: &[Object]) -> ObjectCache {
        let cache = ObjectCache::default();
        let changes: Vec<CachedChange> = objects
            .iter()
            .map(|o| CachedChange {
                kind: o.kind().expect("a kind"),
                event_type: EventType::Added,
                object: Arc::new(o.clone()),
                encoded_len: 100,
            })
            .collect();
        cache.apply(&changes, 1);
        cache
    }

    fn resource<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Request<'a> {
        Request::Resource(ResourceRequest {
            verb,
            api_group: group,
            resource,
            subresource: "",
            namespace,
            name,
        })
    }

    const ROBOT: &str = "system:serviceaccount:team:robot";

    fn robot_groups() -> Vec<String> {
        [
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Team `team`: a Role `pod-reader` bound to the service account
    /// `robot` (no namespace: the binding's); ClusterRole `secret-reader`
    /// (named secrets only) bound in `team` to user `jane`; ClusterRole
    /// `node-reader` bound cluster-wide to group `ops`; ClusterRole
    /// `healthz` (paths) bound to every service account.
    fn team() -> Vec<Object> {
        vec![
            rbac_object(
                "Role",
                "team",
                "pod-reader",
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                ]}),
            ),
            binding(
                "RoleBinding",
                "team",
                "robot-pods",
                ("Role", "pod-reader"),
                serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ),
            rbac_object(
                "ClusterRole",
                "",
                "secret-reader",
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"], "verbs": ["get"]},
                ]}),
            ),
            binding(
                "RoleBinding",
                "team",
                "jane-secrets",
                ("ClusterRole", "secret-reader"),
                serde_json::json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]),
            ),
            rbac_object(
                "ClusterRole",
                "",
                "node-reader",
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["*"]},
                    {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]},
                ]}),
            ),
            binding(
                "ClusterRoleBinding",
                "",
                "ops-nodes",
                ("ClusterRole", "node-reader"),
                serde_json::json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}]),
            ),
            rbac_object(
                "ClusterRole",
                "",
                "healthz",
                serde_json::json!({"rules": [
                    {"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]},
                ]}),
            ),
            binding(
                "ClusterRoleBinding",
                "",
                "accounts-healthz",
                ("ClusterRole", "healthz"),
                serde_json::json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts"}]),
            ),
        ]
    }

    #[test]
    fn a_role_binding_grants_its_role_to_a_service_account_of_its_namespace() {
        let cache = cache_of(&team());
        let groups = robot_groups();
        let list = authorize(
            &cache,
            ROBOT,
            &groups,
            &resource("list", "", "pods", "team", ""),
        );
        assert_eq!(
            list,
            Decision {
                allowed: true,
                reason: r#"RBAC: allowed by RoleBinding "robot-pods/team" of Role "pod-reader" to ServiceAccount "robot/team""#.into(),
            }
        );
        // Not in another namespace, nor in all of them.
        for namespace in ["default", ""] {
            let decision = authorize(
                &cache,
                ROBOT,
                &groups,
                &resource("list", "", "pods", namespace, ""),
            );
            assert!(!decision.allowed, "{namespace:?}");
        }
        // Another service account of the same name elsewhere is someone
        // else.
        let other = "system:serviceaccount:other:robot";
        let decision = authorize(
            &cache,
            other,
            &[],
            &resource("list", "", "pods", "team", ""),
        );
        assert!(!decision.allowed);
        // Only what the role says: not writes, not other resources.
        for (verb, what) in [("delete", "pods"), ("get", "services"), ("list", "secrets")] {
            let decision = authorize(
                &cache,
                ROBOT,
                &groups,
                &resource(verb, "", what, "team", "x"),
            );
            assert!(!decision.allowed, "{verb} {what}");
        }
    }

    #[test]
    fn a_role_binding_of_a_cluster_role_grants_it_in_the_bindings_namespace_only() {
        let cache = cache_of(&team());
        let get = |namespace: &'static str, name: &'static str| {
            authorize(
                &cache,
                "jane",
                &[],
                &resource("get", "", "secrets", namespace, name),
            )
        };
        let allowed = get("team", "db");
        assert!(allowed.allowed);
        assert_eq!(
            allowed.reason,
            r#"RBAC: allowed by RoleBinding "jane-secrets/team" of ClusterRole "secret-reader" to User "jane""#
        );
        assert!(!get("default", "db").allowed, "another namespace");
        assert!(!get("", "db").allowed, "cluster-wide");
        assert!(!get("team", "api").allowed, "another name");
        let list = authorize(
            &cache,
            "jane",
            &[],
            &resource("list", "", "secrets", "team", ""),
        );
        assert!(!list.allowed, "a named rule does not list");
    }

    #[test]
    fn a_cluster_role_binding_grants_everywhere_to_its_groups() {
        let cache = cache_of(&team());
        let ops = ["ops".to_owned()];
        for namespace in ["", "team", "default"] {
            let decision = authorize(
                &cache,
                "sam",
                &ops,
                &resource("delete", "", "nodes", namespace, "n1"),
            );
            assert_eq!(
                decision.reason,
                r#"RBAC: allowed by ClusterRoleBinding "ops-nodes" of ClusterRole "node-reader" to Group "ops""#,
                "{namespace:?}"
            );
        }
        let scale = |resource: &'static str, group: &'static str| {
            Request::Resource(ResourceRequest {
                verb: "update",
                api_group: group,
                resource,
                subresource: "scale",
                namespace: "team",
                name: "web",
            })
        };
        assert!(authorize(&cache, "sam", &ops, &scale("deployments", "apps")).allowed);
        assert!(authorize(&cache, "sam", &ops, &scale("statefulsets", "apps")).allowed);
        assert!(!authorize(&cache, "sam", &ops, &scale("deployments", "")).allowed);
        assert!(!authorize(&cache, "sam", &[], &resource("get", "", "nodes", "", "n1")).allowed);
    }

    #[test]
    fn paths_are_granted_by_cluster_roles_bound_cluster_wide() {
        let cache = cache_of(&team());
        let groups = robot_groups();
        let get = |path: &'static str| Request::NonResource { verb: "get", path };
        let decision = authorize(&cache, ROBOT, &groups, &get("/healthz"));
        assert_eq!(
            decision.reason,
            r#"RBAC: allowed by ClusterRoleBinding "accounts-healthz" of ClusterRole "healthz" to Group "system:serviceaccounts""#
        );
        assert!(authorize(&cache, ROBOT, &groups, &get("/logs/kube")).allowed);
        assert!(!authorize(&cache, ROBOT, &groups, &get("/metrics")).allowed);
        let post = Request::NonResource {
            verb: "post",
            path: "/healthz",
        };
        assert!(!authorize(&cache, ROBOT, &groups, &post).allowed);
    }

    #[test]
    fn a_refusal_names_the_user_groups_request_and_missing_roles() {
        let mut objects = team();
        objects.push(binding(
            "RoleBinding",
            "team",
            "robot-gone",
            ("ClusterRole", "gone"),
            serde_json::json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}]),
        ));
        let cache = cache_of(&objects);
        let groups = robot_groups();
        let delete = Request::Resource(ResourceRequest {
            verb: "delete",
            api_group: "apps",
            resource: "deployments",
            subresource: "scale",
            namespace: "team",
            name: "web",
        });
        assert_eq!(
            authorize(&cache, ROBOT, &groups, &delete),
            Decision {
                allowed: false,
                reason: concat!(
                    r#"RBAC: no rules authorize user "system:serviceaccount:team:robot" with groups "#,
                    r#"["system:serviceaccounts" "system:serviceaccounts:team" "system:authenticated"] "#,
                    r#"to "delete" resource "deployments.apps/scale" named "web" in namespace "team"; "#,
                    r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#,
                )
                .into(),
            }
        );
        // What kube-apiserver adds to its 403: the missing role alone, in
        // the namespace whose bindings name it; nothing elsewhere.
        assert_eq!(
            refusal_reason(&cache, ROBOT, &groups, "team"),
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        );
        assert_eq!(refusal_reason(&cache, ROBOT, &groups, "default"), "");
        let metrics = Request::NonResource {
            verb: "get",
            path: "/metrics",
        };
        assert_eq!(
            authorize(&cache, "jane", &[], &metrics).reason,
            r#"RBAC: no rules authorize user "jane" with groups [] to "get" nonResourceURL "/metrics" cluster-wide"#
        );
    }

    #[test]
    fn missing_roles_are_each_named_once_as_kubernetes_aggregates_them() {
        let mut objects = team();
        for (name, role) in [("gone-1", "gone"), ("gone-2", "gone"), ("lost", "lost")] {
            objects.push(binding(
                "RoleBinding",
                "team",
                name,
                ("Role", role),
                serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ));
        }
        let cache = cache_of(&objects);
        let reason = refusal_reason(&cache, ROBOT, &robot_groups(), "team");
        assert_eq!(
            reason,
            r#"RBAC: [role.rbac.authorization.k8s.io "gone" not found, role.rbac.authorization.k8s.io "lost" not found]"#
        );
    }

    #[test]
    fn the_rules_listed_are_those_of_the_bindings_that_apply() {
        let cache = cache_of(&team());
        let groups = robot_groups();
        let (rules, errors) = rules_for(&cache, ROBOT, &groups, "team");
        assert!(errors.is_empty());
        assert_eq!(
            rules,
            [
                PolicyRule::urls(&["get"], &["/healthz", "/logs/*"]),
                PolicyRule::resources(&["get", "list", "watch"], &[""], &["pods", "pods/log"]),
            ]
        );
        let (cluster_wide, _) = rules_for(&cache, ROBOT, &groups, "");
        assert_eq!(
            cluster_wide,
            [PolicyRule::urls(&["get"], &["/healthz", "/logs/*"])]
        );
    }

    #[test]
    fn a_thousand_other_bindings_are_not_looked_at() {
        let mut objects = team();
        for i in 0..1000 {
            objects.push(binding(
                "RoleBinding",
                "team",
                &format!("sa-{i}"),
                ("Role", "pod-reader"),
                serde_json::json!([{"kind": "ServiceAccount", "name": format!("sa-{i}")}]),
            ));
        }
        let cache = cache_of(&objects);
        let groups = robot_groups();
        // What a request of the robot's reads: its own bindings, not the
        // thousand others.
        let found = grants(&cache, ROBOT, &groups, "team");
        let names: Vec<&str> = found.iter().map(|g| g.binding_name.as_str()).collect();
        assert_eq!(names, ["accounts-healthz", "robot-pods"]);
        let list = resource("list", "", "pods", "team", "");
        assert!(authorize(&cache, ROBOT, &groups, &list).allowed);
        assert!(authorize(&cache, "system:serviceaccount:team:sa-7", &[], &list).allowed);
    }
}
