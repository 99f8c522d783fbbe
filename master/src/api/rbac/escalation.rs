//! Escalation prevention, as kube-apiserver's RBAC storage does it
//! (`pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/
//! policybased`, `pkg/registry/rbac/escalation_check.go`,
//! `validation/rule.go` `ConfirmNoEscalation`): whoever may write roles
//! and bindings still cannot grant more than they hold.
//!
//! - Creating or updating a Role or ClusterRole: every rule it grants must
//!   be covered by the rules the writer holds where the role lives (a
//!   ClusterRole: cluster-wide), unless the writer has the `escalate` verb
//!   on it. A ClusterRole with an `aggregationRule` (or losing one) needs
//!   every permission (`*` on everything), as it may gather anything.
//! - Creating or updating a RoleBinding or ClusterRoleBinding: the writer
//!   has the `bind` verb on the role it names (in the binding's namespace,
//!   or cluster-wide for a ClusterRoleBinding), or holds every rule of
//!   that role there.
//! - Members of `system:masters` (skiff's admins and masters) pass.
//!
//! A refusal is Kubernetes' Forbidden: `user "jane" (groups=["devs"]) is
//! attempting to grant RBAC permissions not currently held:` then each
//! missing permission, compacted, on a line.

use super::{authorize, rules_for, Request, ResourceRequest};
use crate::store::cache::ObjectCache;
use crate::store::rbac_index::RoleRefError;
use skiff_objects::rbac::policy_comparator::{compact_rules, covers};
use skiff_objects::rbac::{
    BindingView, PolicyRule, PolicyRuleExt, RoleView, API_GROUP, MASTERS_GROUP,
};
use skiff_objects::{Kind, ObjectExt};
use skiff_proto::api::Object;

/// Why a write of a role or binding is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscalationError {
    /// What Kubernetes answers (`ConfirmNoEscalation`).
    #[error(
        "user {user:?} (groups={groups}) is attempting to grant RBAC permissions not currently held:\n{missing}{resolution}"
    )]
    NotHeld {
        user: String,
        /// As Go's `%q` prints them: `["a" "b"]`.
        groups: String,
        /// The missing permissions, one per line.
        missing: String,
        /// `; resolution errors: [...]` when some of the writer's roles
        /// could not be found.
        resolution: String,
    },
    #[error("must have cluster-admin privileges to use the aggregationRule")]
    AggregationRule,
    /// The role a binding names cannot be found or named.
    #[error(transparent)]
    RoleRef(#[from] RoleRefError),
}

/// Whether `groups` may grant anything: `system:masters` (Kubernetes'
/// `EscalationAllowed`).
pub fn escalation_allowed(groups: &[String]) -> bool {
    groups.iter().any(|g| g == MASTERS_GROUP)
}

/// Whether `rules` are held by `user` in `groups` in `namespace` (`""`:
/// cluster-wide), else the refusal naming what is not (Kubernetes'
/// `ConfirmNoEscalation`).
pub fn confirm_no_escalation(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), EscalationError> {
    let (held, errors) = rules_for(cache, user, groups, namespace);
    let (covered, missing) = covers(&held, rules);
    if covered {
        return Ok(());
    }
    let mut lines: Vec<String> = compact_rules(&missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    lines.sort();
    lines.dedup();
    let resolution = if errors.is_empty() {
        String::new()
    } else {
        format!("; resolution errors: [{}]", errors.join(" "))
    };
    let quoted: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
    Err(EscalationError::NotHeld {
        user: user.to_owned(),
        groups: format!("[{}]", quoted.join(" ")),
        missing: lines.join("\n"),
        resolution,
    })
}

/// Every permission: what an `aggregationRule` needs (`fullAuthority`).
fn full_authority() -> [PolicyRule; 2] {
    [
        PolicyRule::resources(&["*"], &["*"], &["*"]),
        PolicyRule::urls(&["*"], &["*"]),
    ]
}

/// May `user` in `groups` use `verb` (`escalate`, `bind`) on the role
/// `name` of `resource` (`roles`, `clusterroles`) in `namespace`?
fn may(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let request = Request::Resource(ResourceRequest {
        verb,
        api_group: API_GROUP,
        resource,
        subresource: "",
        namespace,
        name,
    });
    authorize(cache, user, groups, &request).allowed
}

/// May `user` in `groups` write `object`, a Role or ClusterRole
/// (`kind`) in `namespace` (`""` for a ClusterRole)? `previous` is the
/// stored one an update replaces. Kubernetes' policy-based role storage.
pub fn check_role_write(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    kind: Kind,
    namespace: &str,
    object: &Object,
    previous: Option<&Object>,
) -> Result<(), EscalationError> {
    if escalation_allowed(groups) {
        return Ok(());
    }
    let resource = if kind == Kind::ClusterRole {
        "clusterroles"
    } else {
        "roles"
    };
    let name = &object.meta().name;
    if may(cache, user, groups, "escalate", resource, namespace, name) {
        return Ok(());
    }
    let role = RoleView::read(object).unwrap_or_default();
    confirm_no_escalation(cache, user, groups, namespace, &role.rules)?;
    let aggregates = |o: Option<&Object>| {
        o.and_then(RoleView::read)
            .is_some_and(|r| r.has_aggregation_rule())
    };
    if kind == Kind::ClusterRole && (aggregates(Some(object)) || aggregates(previous)) {
        confirm_no_escalation(cache, user, groups, namespace, &full_authority())
            .map_err(|_| EscalationError::AggregationRule)?;
    }
    Ok(())
}

/// May `user` in `groups` write `object`, a RoleBinding in `namespace` or
/// a ClusterRoleBinding (`namespace` `""`)? Kubernetes' policy-based
/// binding storage: `bind` on the role, or holding its rules.
pub fn check_binding_write(
    cache: &ObjectCache,
    user: &str,
    groups: &[String],
    namespace: &str,
    object: &Object,
) -> Result<(), EscalationError> {
    if escalation_allowed(groups) {
        return Ok(());
    }
    let binding = BindingView::read(object).unwrap_or_default();
    let role_ref = &binding.role_ref;
    let resource = match role_ref.kind.as_str() {
        "Role" => Some("roles"),
        "ClusterRole" => Some("clusterroles"),
        _ => None,
    };
    // `bind` is asked in the role ref's own group, as Kubernetes asks it.
    if let Some(resource) = resource {
        let request = Request::Resource(ResourceRequest {
            verb: "bind",
            api_group: &role_ref.api_group,
            resource,
            subresource: "",
            namespace,
            name: &role_ref.name,
        });
        if authorize(cache, user, groups, &request).allowed {
            return Ok(());
        }
    }
    let role = cache.rbac_role_of(role_ref, namespace)?;
    confirm_no_escalation(cache, user, groups, namespace, &role.rules)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{binding, cache_of, rbac_object};
    use super::*;

    const ROBOT: &str = "system:serviceaccount:team:robot";

    fn groups() -> Vec<String> {
        vec!["system:serviceaccounts".to_owned()]
    }

    /// The robot may write roles and bindings in `team` and holds
    /// `pod-reader` there (read pods); `jane` may also escalate and bind
    /// there; ClusterRole `pod-admin` (everything on pods) exists.
    fn cluster() -> ObjectCache {
        let rbac_writer = serde_json::json!({"rules": [
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"], "verbs": ["create", "update"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        ]});
        cache_of(&[
            rbac_object("ClusterRole", "", "rbac-writer", rbac_writer),
            binding(
                "RoleBinding",
                "team",
                "robot-writes",
                ("ClusterRole", "rbac-writer"),
                serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ),
            rbac_object(
                "ClusterRole",
                "",
                "escalator",
                serde_json::json!({"rules": [
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate", "bind"]},
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["pod-admin"]},
                ]}),
            ),
            binding(
                "RoleBinding",
                "team",
                "jane-escalates",
                ("ClusterRole", "escalator"),
                serde_json::json!([{"kind": "User", "name": "jane"}]),
            ),
            rbac_object(
                "ClusterRole",
                "",
                "pod-admin",
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
                ]}),
            ),
            rbac_object(
                "Role",
                "team",
                "reader",
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                ]}),
            ),
        ])
    }

    fn role(kind: &str, namespace: &str, rules: serde_json::Value) -> Object {
        rbac_object(
            kind,
            namespace,
            "granted",
            serde_json::json!({"rules": rules}),
        )
    }

    #[test]
    fn a_role_granting_only_what_the_writer_holds_is_allowed() {
        let cache = cluster();
        let held = role(
            "Role",
            "team",
            serde_json::json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["web"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ]),
        );
        let answer = check_role_write(&cache, ROBOT, &groups(), Kind::Role, "team", &held, None);
        assert_eq!(answer, Ok(()));
    }

    #[test]
    fn a_role_granting_more_is_refused_naming_what_is_not_held() {
        let cache = cluster();
        let more = role(
            "Role",
            "team",
            serde_json::json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete", "create"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            ]),
        );
        let refused = check_role_write(&cache, ROBOT, &groups(), Kind::Role, "team", &more, None)
            .expect_err("an escalation");
        assert_eq!(
            refused.to_string(),
            concat!(
                r#"user "system:serviceaccount:team:robot" (groups=["system:serviceaccounts"]) "#,
                "is attempting to grant RBAC permissions not currently held:\n",
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "create"]}"#,
                "\n",
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
            )
        );
        // What it holds in `team` it does not hold elsewhere.
        let elsewhere = role(
            "Role",
            "default",
            serde_json::json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ]),
        );
        let answer = check_role_write(
            &cache,
            ROBOT,
            &groups(),
            Kind::Role,
            "default",
            &elsewhere,
            None,
        );
        assert!(
            matches!(answer, Err(EscalationError::NotHeld { .. })),
            "{answer:?}"
        );
        // Nor cluster-wide: a ClusterRole checks the ClusterRoleBindings.
        let cluster_role = role(
            "ClusterRole",
            "",
            serde_json::json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ]),
        );
        let answer = check_role_write(
            &cache,
            ROBOT,
            &groups(),
            Kind::ClusterRole,
            "",
            &cluster_role,
            None,
        );
        assert!(answer.is_err());
    }

    #[test]
    fn the_escalate_verb_and_system_masters_may_grant_anything() {
        let cache = cluster();
        let more = role(
            "Role",
            "team",
            serde_json::json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            ]),
        );
        assert_eq!(
            check_role_write(&cache, "jane", &[], Kind::Role, "team", &more, None),
            Ok(())
        );
        // `escalate` on roles in `team` only.
        let answer = check_role_write(&cache, "jane", &[], Kind::Role, "default", &more, None);
        assert!(answer.is_err());
        let masters = [MASTERS_GROUP.to_owned()];
        let cluster_role = role(
            "ClusterRole",
            "",
            serde_json::json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            ]),
        );
        let answer = check_role_write(
            &cache,
            "system:admin",
            &masters,
            Kind::ClusterRole,
            "",
            &cluster_role,
            None,
        );
        assert_eq!(answer, Ok(()));
    }

    #[test]
    fn an_aggregation_rule_needs_every_permission() {
        let cache = cluster();
        let mut aggregated = role("ClusterRole", "", serde_json::json!([]));
        if let Some(skiff_proto::api::object::Kind::Generic(g)) = aggregated.kind.as_mut() {
            let mut content = skiff_objects::generic::content(g);
            content.insert(
                "aggregationRule".into(),
                serde_json::json!({"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}),
            );
            skiff_objects::generic::set_content(g, &content);
        }
        // The robot holds nothing cluster-wide; nothing granted is still
        // refused for the aggregation rule.
        let answer = check_role_write(
            &cache,
            ROBOT,
            &groups(),
            Kind::ClusterRole,
            "",
            &aggregated,
            None,
        );
        assert_eq!(answer, Err(EscalationError::AggregationRule));
        // Dropping one is as much a change.
        let plain = role("ClusterRole", "", serde_json::json!([]));
        let answer = check_role_write(
            &cache,
            ROBOT,
            &groups(),
            Kind::ClusterRole,
            "",
            &plain,
            Some(&aggregated),
        );
        assert_eq!(answer, Err(EscalationError::AggregationRule));
        assert_eq!(
            check_role_write(
                &cache,
                ROBOT,
                &groups(),
                Kind::ClusterRole,
                "",
                &plain,
                None
            ),
            Ok(())
        );
    }

    fn role_binding(namespace: &str, role: (&str, &str)) -> Object {
        binding(
            if namespace.is_empty() {
                "ClusterRoleBinding"
            } else {
                "RoleBinding"
            },
            namespace,
            "granted",
            role,
            serde_json::json!([{"kind": "User", "name": "someone"}]),
        )
    }

    #[test]
    fn a_binding_needs_bind_on_its_role_or_holding_its_rules() {
        let cache = cluster();
        let robot = |b: &Object, namespace: &str| {
            check_binding_write(&cache, ROBOT, &groups(), namespace, b)
        };
        // The robot holds list pods in team: it may bind `reader` there.
        assert_eq!(
            robot(&role_binding("team", ("Role", "reader")), "team"),
            Ok(())
        );
        // Not pod-admin (everything on pods).
        let refused = robot(&role_binding("team", ("ClusterRole", "pod-admin")), "team")
            .expect_err("not held");
        assert!(
            refused
                .to_string()
                .ends_with(r#"{APIGroups:[""], Resources:["pods"], Verbs:["*"]}"#),
            "{refused}"
        );
        // Nor cluster-wide, where it holds nothing.
        assert!(robot(&role_binding("", ("ClusterRole", "pod-admin")), "").is_err());
        // A role that does not exist.
        let gone = robot(&role_binding("team", ("Role", "gone")), "team").unwrap_err();
        assert_eq!(
            gone,
            EscalationError::RoleRef(RoleRefError::NotFound {
                resource: "role",
                name: "gone".into()
            })
        );
        assert_eq!(
            gone.to_string(),
            r#"role.rbac.authorization.k8s.io "gone" not found"#
        );
        // A role reference of another kind.
        let odd = robot(&role_binding("team", ("Thing", "x")), "team").unwrap_err();
        assert_eq!(
            odd.to_string(),
            r#"unsupported role reference kind: "Thing""#
        );
        // jane may bind pod-admin in team (by name), though she does not
        // hold it; and any Role there.
        let jane =
            |b: &Object, namespace: &str| check_binding_write(&cache, "jane", &[], namespace, b);
        assert_eq!(
            jane(&role_binding("team", ("ClusterRole", "pod-admin")), "team"),
            Ok(())
        );
        assert_eq!(
            jane(&role_binding("team", ("Role", "gone")), "team"),
            Ok(())
        );
        assert!(jane(
            &role_binding("default", ("ClusterRole", "pod-admin")),
            "default"
        )
        .is_err());
        assert!(jane(&role_binding("", ("ClusterRole", "pod-admin")), "").is_err());
        // system:masters binds anything.
        let masters = [MASTERS_GROUP.to_owned()];
        let admin = check_binding_write(
            &cache,
            "system:admin",
            &masters,
            "",
            &role_binding("", ("ClusterRole", "pod-admin")),
        );
        assert_eq!(admin, Ok(()));
    }
}
