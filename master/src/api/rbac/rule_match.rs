//! Whether one rule allows one request, exactly as Kubernetes matches them
//! (`plugin/pkg/auth/authorizer/rbac/rbac.go` `RuleAllows` over
//! `pkg/apis/rbac/v1/evaluation_helpers.go`): a verb of the rule or `*`; a
//! group of the rule or `*`; a resource of the rule, `*`, the request's
//! `resource/subresource`, or `*/subresource`; no names in the rule, or the
//! request's name among them; for a path, a path of the rule, `*`, or a
//! prefix ending in `*`.

use super::Request;
use skiff_objects::rbac::{PolicyRule, PolicyRuleExt, ALL};

/// Whether `rule` allows `request`.
pub fn rule_allows(request: &Request<'_>, rule: &PolicyRule) -> bool {
    match request {
        Request::Resource(r) => {
            verb_matches(rule, r.verb)
                && api_group_matches(rule, r.api_group)
                && resource_matches(rule, r.resource, r.subresource)
                && resource_name_matches(rule, r.name)
        }
        Request::NonResource { verb, path } => {
            verb_matches(rule, verb) && non_resource_url_matches(rule, path)
        }
    }
}

pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.group_list().iter().any(|g| g == ALL || g == group)
}

/// `resource`, with `subresource` unless it is empty: Kubernetes matches
/// the rule's resources against `resource/subresource` (written without
/// making that string on each request here).
pub fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resource_list().iter().any(|r| {
        r == ALL
            || is_combined(r, resource, subresource)
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Whether `written` is `resource` (no subresource) or
/// `resource/subresource`.
fn is_combined(written: &str, resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() {
        return written == resource;
    }
    written
        .strip_prefix(resource)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| rest == subresource)
}

pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.name_list().is_empty() || rule.name_list().iter().any(|n| n == name)
}

pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.url_list().iter().any(|u| {
        u == ALL
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
    })
}

#[cfg(test)]
mod tests {
    use super::super::ResourceRequest;
    use super::*;

    fn request<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Request<'a> {
        Request::Resource(ResourceRequest {
            verb,
            api_group: group,
            resource,
            subresource: sub,
            namespace: "team",
            name,
        })
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule::resources(verbs, groups, resources)
    }

    #[test]
    fn verbs_match_themselves_or_a_star() {
        let list = request("list", "", "pods", "", "");
        assert!(rule_allows(
            &list,
            &rule(&["get", "list"], &[""], &["pods"])
        ));
        assert!(rule_allows(&list, &rule(&["*"], &[""], &["pods"])));
        assert!(!rule_allows(&list, &rule(&["get"], &[""], &["pods"])));
        // A star in a request is no wildcard: it is matched as written.
        let star = request("*", "", "pods", "", "");
        assert!(!rule_allows(
            &star,
            &rule(&["get", "list"], &[""], &["pods"])
        ));
        assert!(rule_allows(&star, &rule(&["*"], &[""], &["pods"])));
    }

    #[test]
    fn api_groups_match_themselves_or_a_star() {
        let deployments = request("get", "apps", "deployments", "", "web");
        assert!(rule_allows(
            &deployments,
            &rule(&["get"], &["apps"], &["deployments"])
        ));
        assert!(rule_allows(
            &deployments,
            &rule(&["get"], &["*"], &["deployments"])
        ));
        assert!(!rule_allows(
            &deployments,
            &rule(&["get"], &[""], &["deployments"])
        ));
        assert!(!rule_allows(
            &deployments,
            &rule(&["get"], &[], &["deployments"])
        ));
    }

    #[test]
    fn resources_match_themselves_a_star_their_subresource_or_any_resources_subresource() {
        let pods = request("get", "", "pods", "", "web");
        let log = request("get", "", "pods", "log", "web");
        let scale = request("update", "apps", "deployments", "scale", "web");
        assert!(rule_allows(&pods, &rule(&["get"], &[""], &["pods"])));
        assert!(rule_allows(&pods, &rule(&["get"], &[""], &["*"])));
        // The resource does not grant its subresources, nor the other way.
        assert!(!rule_allows(&log, &rule(&["get"], &[""], &["pods"])));
        assert!(!rule_allows(&pods, &rule(&["get"], &[""], &["pods/log"])));
        assert!(rule_allows(&log, &rule(&["get"], &[""], &["pods/log"])));
        assert!(rule_allows(&log, &rule(&["get"], &[""], &["*/log"])));
        assert!(rule_allows(&log, &rule(&["get"], &[""], &["*"])));
        assert!(!rule_allows(&log, &rule(&["get"], &[""], &["pods/status"])));
        assert!(!rule_allows(&log, &rule(&["get"], &[""], &["*/status"])));
        // `*/subresource` is exactly that subresource.
        assert!(!rule_allows(&log, &rule(&["get"], &[""], &["*/catalog"])));
        assert!(!rule_allows(&pods, &rule(&["get"], &[""], &["*/"])));
        assert!(rule_allows(
            &scale,
            &rule(&["update"], &["apps"], &["*/scale"])
        ));
        assert!(rule_allows(
            &scale,
            &rule(&["update"], &["apps"], &["deployments/scale"])
        ));
        assert!(!rule_allows(
            &scale,
            &rule(&["update"], &["apps"], &["replicasets/scale"])
        ));
    }

    #[test]
    fn resource_names_limit_a_rule_to_those_objects() {
        let web = rule(&["get", "list"], &[""], &["configmaps"]).named(&["web", "api"]);
        assert!(rule_allows(
            &request("get", "", "configmaps", "", "web"),
            &web
        ));
        assert!(rule_allows(
            &request("get", "", "configmaps", "", "api"),
            &web
        ));
        assert!(!rule_allows(
            &request("get", "", "configmaps", "", "db"),
            &web
        ));
        // A collection has no name: named rules do not allow listing.
        assert!(!rule_allows(
            &request("list", "", "configmaps", "", ""),
            &web
        ));
    }

    #[test]
    fn paths_match_themselves_a_star_or_a_prefix() {
        let rule = PolicyRule::urls(&["get"], &["/healthz", "/apis/*", "/logs*"]);
        let get = |path: &'static str| Request::NonResource { verb: "get", path };
        assert!(rule_allows(&get("/healthz"), &rule));
        assert!(!rule_allows(&get("/healthz/etcd"), &rule));
        assert!(rule_allows(&get("/apis/apps/v1"), &rule));
        assert!(rule_allows(&get("/apis/"), &rule));
        assert!(!rule_allows(&get("/apis"), &rule));
        assert!(rule_allows(&get("/logs"), &rule));
        assert!(rule_allows(&get("/logsandmore"), &rule));
        let post = Request::NonResource {
            verb: "post",
            path: "/healthz",
        };
        assert!(!rule_allows(&post, &rule));
        let everything = PolicyRule::urls(&["*"], &["*"]);
        assert!(rule_allows(&post, &everything));
        // Resource rules say nothing about paths, nor path rules about
        // resources.
        assert!(!rule_allows(
            &get("/healthz"),
            &PolicyRule::resources(&["*"], &["*"], &["*"])
        ));
        assert!(!rule_allows(
            &request("get", "", "pods", "", ""),
            &everything
        ));
    }
}
