//! Whether some rules cover others, as Kubernetes compares them
//! (`component-helpers/auth/rbac/validation/policy_comparator.go`): the
//! rules granted are broken down into rules of one API group, resource,
//! verb and name (or one path and verb), and each piece must be covered by
//! one rule held. What is left over is what is missing, compacted for
//! messages (`pkg/registry/rbac/validation/policy_compact.go`).
//!
//! Escalation checks (`api::rbac::escalation`: may a user grant these
//! rules?) and the default roles' reconcile (which rules a kept role
//! lacks, [`super::bootstrap_policy`]) both ask it.

use std::collections::BTreeMap;

use super::{PolicyRule, PolicyRuleExt, ALL};

/// Whether `owner` covers every rule of `servant`, and the broken-down
/// pieces of `servant` it does not cover (Kubernetes' `Covers`).
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let uncovered: Vec<PolicyRule> = servant
        .iter()
        .flat_map(breakdown_rule)
        .filter(|piece| !owner.iter().any(|rule| rule_covers(rule, piece)))
        .collect();
    (uncovered.is_empty(), uncovered)
}

/// `rule` as rules of at most one verb, resource and name (or one path
/// and verb) each (Kubernetes' `BreakdownRule`).
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut pieces = Vec::new();
    for group in rule.group_list() {
        for resource in rule.resource_list() {
            for verb in &rule.verbs {
                let piece = PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: Some(vec![group.clone()]),
                    resources: Some(vec![resource.clone()]),
                    ..PolicyRule::default()
                };
                if rule.name_list().is_empty() {
                    pieces.push(piece);
                } else {
                    for name in rule.name_list() {
                        pieces.push(PolicyRule {
                            resource_names: Some(vec![name.clone()]),
                            ..piece.clone()
                        });
                    }
                }
            }
        }
    }
    // Paths combine with verbs only.
    for url in rule.url_list() {
        for verb in &rule.verbs {
            pieces.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: Some(vec![url.clone()]),
                ..PolicyRule::default()
            });
        }
    }
    pieces
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

/// Whether `owner` covers every resource of `wanted`: `*`, the same one,
/// or, for a subresource, `*/subresource`.
fn resource_covers_all(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, ALL) || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        if has(owner, path) {
            return true;
        }
        match path.split_once('/') {
            Some((_, subresource)) => has(owner, &format!("*/{subresource}")),
            None => false,
        }
    })
}

fn non_resource_url_covers(owner: &str, path: &str) -> bool {
    owner == path
        || owner
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

fn non_resource_urls_cover_all(owner: &[String], wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|path| owner.iter().any(|o| non_resource_url_covers(o, path)))
}

/// Whether `owner` (any rule) covers `piece` (one broken down by
/// [`breakdown_rule`]; Kubernetes' `ruleCovers`).
fn rule_covers(owner: &PolicyRule, piece: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &piece.verbs);
    let groups = has(owner.group_list(), ALL) || has_all(owner.group_list(), piece.group_list());
    let resources = resource_covers_all(owner.resource_list(), piece.resource_list());
    let urls = non_resource_urls_cover_all(owner.url_list(), piece.url_list());
    let names = if piece.name_list().is_empty() {
        owner.name_list().is_empty()
    } else {
        owner.name_list().is_empty() || has_all(owner.name_list(), piece.name_list())
    };
    verbs && groups && resources && urls && names
}

/// Rules of one API group and one resource, nothing else, that differ only
/// by verb merged into one (Kubernetes' `CompactRules`); the others as
/// they are, first.
pub fn compact_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut compacted = Vec::new();
    let mut simple: BTreeMap<(String, String), PolicyRule> = BTreeMap::new();
    for rule in rules {
        let (groups, resources) = (rule.group_list(), rule.resource_list());
        let is_simple = rule.name_list().is_empty()
            && rule.url_list().is_empty()
            && groups.len() == 1
            && resources.len() == 1;
        if !is_simple {
            compacted.push(rule.clone());
            continue;
        }
        let at = (groups[0].clone(), resources[0].clone());
        match simple.get_mut(&at) {
            Some(merged) => merged.verbs.extend(rule.verbs.iter().cloned()),
            None => {
                simple.insert(at, rule.clone());
            }
        }
    }
    compacted.extend(simple.into_values());
    compacted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule::resources(verbs, groups, resources)
    }

    #[test]
    fn rules_break_down_into_one_verb_resource_and_name_each() {
        let pieces =
            breakdown_rule(&rule(&["get", "list"], &["", "apps"], &["pods"]).named(&["a", "b"]));
        assert_eq!(pieces.len(), 8);
        assert!(pieces.contains(&rule(&["list"], &["apps"], &["pods"]).named(&["b"])));
        let paths = breakdown_rule(&PolicyRule::urls(&["get", "post"], &["/a", "/b*"]));
        assert_eq!(paths.len(), 4);
        assert!(paths.contains(&PolicyRule::urls(&["post"], &["/b*"])));
    }

    #[test]
    fn a_rule_held_covers_what_it_grants_and_no_more() {
        let held = [
            rule(&["get", "list"], &[""], &["pods", "*/status"]),
            rule(&["*"], &["apps"], &["deployments"]).named(&["web"]),
            PolicyRule::urls(&["get"], &["/healthz", "/api/*"]),
        ];
        let covered = [
            rule(&["get"], &[""], &["pods"]),
            rule(&["list"], &[""], &["pods/status", "services/status"]),
            rule(&["delete", "patch"], &["apps"], &["deployments"]).named(&["web"]),
            PolicyRule::urls(&["get"], &["/api/v1", "/healthz"]),
        ];
        for wanted in &covered {
            assert_eq!(
                covers(&held, std::slice::from_ref(wanted)),
                (true, vec![]),
                "{wanted:?}"
            );
        }
        let uncovered = [
            (
                rule(&["watch"], &[""], &["pods"]),
                rule(&["watch"], &[""], &["pods"]),
            ),
            (
                rule(&["get"], &["apps"], &["pods"]),
                rule(&["get"], &["apps"], &["pods"]),
            ),
            // Named objects do not cover all of them.
            (
                rule(&["get"], &["apps"], &["deployments"]),
                rule(&["get"], &["apps"], &["deployments"]),
            ),
            (
                rule(&["get"], &["apps"], &["deployments"]).named(&["api"]),
                rule(&["get"], &["apps"], &["deployments"]).named(&["api"]),
            ),
            (
                PolicyRule::urls(&["get"], &["/metrics"]),
                PolicyRule::urls(&["get"], &["/metrics"]),
            ),
            (
                PolicyRule::urls(&["post"], &["/api/v1"]),
                PolicyRule::urls(&["post"], &["/api/v1"]),
            ),
        ];
        for (wanted, missing) in uncovered {
            assert_eq!(
                covers(&held, std::slice::from_ref(&wanted)),
                (false, vec![missing]),
                "{wanted:?}"
            );
        }
        // Everything covers everything.
        let everything = [
            rule(&["*"], &["*"], &["*"]),
            PolicyRule::urls(&["*"], &["*"]),
        ];
        let all: Vec<PolicyRule> = covered
            .iter()
            .cloned()
            .chain(held.iter().cloned())
            .collect();
        assert!(covers(&everything, &all).0);
        // A `*` granted is covered only by a `*` held.
        assert!(!covers(&held, &[rule(&["*"], &[""], &["pods"])]).0);
    }

    #[test]
    fn missing_pieces_of_one_resource_merge_their_verbs() {
        let missing = [
            rule(&["get"], &[""], &["pods"]),
            PolicyRule::urls(&["get"], &["/metrics"]),
            rule(&["list"], &[""], &["pods"]),
            rule(&["get"], &[""], &["pods"]).named(&["web"]),
        ];
        assert_eq!(
            compact_rules(&missing),
            [
                PolicyRule::urls(&["get"], &["/metrics"]),
                rule(&["get"], &[""], &["pods"]).named(&["web"]),
                rule(&["get", "list"], &[""], &["pods"]),
            ]
        );
    }
}
