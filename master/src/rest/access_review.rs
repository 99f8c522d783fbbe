//! The access reviews: `authorization.k8s.io/v1` SelfSubjectAccessReview
//! (`kubectl auth can-i VERB RESOURCE [NAME]`; k9s asks one before every
//! list and watch), SelfSubjectRulesReview (`kubectl auth can-i --list`)
//! and SubjectAccessReview (the same question about any user and groups,
//! for whoever may create them: admins, or what RBAC grants), and
//! `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`,
//! which shows a service account token's extras: its id, and the pod and
//! node it is bound to).
//! They are created and never stored (`registry::Model::Review`): the
//! answer is the request with its `status` filled in from the caller's
//! verified identity (or the review's user) and the rules every call is
//! authorized with (`api::authz`, through [`ApiService::review_access`],
//! [`ApiService::review_access_of`] and [`ApiService::review_rules`]), so
//! a review never says yes to what a call would refuse, nor no to what it
//! would allow. As in Kubernetes, a user's extras never change an answer
//! (RBAC does not read them): a SubjectAccessReview's `spec.extra` is
//! answered back as sent.
//!
//! Resources are looked up in the registry of kinds. `*` stands for every
//! verb, group or resource, and is allowed only when every access it stands
//! for is. A verb, resource or subresource skiff does not serve is not
//! allowed, with a reason saying so (and `denied` unset: no rule refused
//! it, there is nothing to allow).

use std::sync::Arc;

use axum::body::Body;
use http::{header, HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};
use skiff_security::{Identity, PeerInfo};

use super::path::ResourcePath;
use super::status::RestError;
use super::{json_response, wire};
use crate::api::authz::{
    self, Access, Decision, KubernetesUser, NonResourceRule, ResourceRule, Verb,
};
use crate::api::ApiService;
use skiff_objects::registry::{self, KindInfo};
use skiff_objects::Kind;

/// A request on a review's resource path.
pub(super) struct ReviewRequest<'a> {
    pub api: &'a Arc<ApiService>,
    pub peer: &'a PeerInfo,
    pub method: &'a Method,
    pub path: &'a ResourcePath,
    pub headers: &'a HeaderMap,
}

/// What a SelfSubjectAccessReview answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    allowed: bool,
    /// A rule refused it (not: skiff does not serve what was asked about).
    denied: bool,
    reason: String,
}

impl Answer {
    fn of(decision: Decision) -> Answer {
        Answer {
            allowed: decision.allowed,
            denied: !decision.allowed,
            reason: decision.reason,
        }
    }

    /// Not allowed, as nothing skiff serves was asked about.
    fn unserved(reason: String) -> Answer {
        Answer {
            allowed: false,
            denied: false,
            reason,
        }
    }

    fn to_json(&self) -> Value {
        let mut status = json!({"allowed": self.allowed, "reason": self.reason});
        if self.denied {
            status["denied"] = json!(true);
        }
        status
    }
}

/// `POST` of a review (`info`, a `registry::Model::Review` kind): the
/// review sent, with its `status`, as `201 Created`; nothing is stored.
pub(super) fn serve(
    info: &'static KindInfo,
    request: ReviewRequest<'_>,
    body: &[u8],
) -> Result<Response<Body>, RestError> {
    let path = request.path;
    if let Some(sub) = &path.subresource {
        let group_version = registry::group_version(&path.group, &path.version);
        let what = format!("{group_version} {}/{sub}", path.resource);
        return Err(RestError::not_found_path(&what));
    }
    if path.name.is_some() || *request.method != Method::POST {
        return Err(RestError::method_not_allowed(request.method, info.resource));
    }
    let identity = request
        .peer
        .identity
        .as_ref()
        .ok_or_else(RestError::unauthorized)?;
    // Reviewing is itself an access, allowed by the same rules, and
    // refused as any other (`subjectaccessreviews.authorization.k8s.io is
    // forbidden: User "X" cannot create resource ...`).
    let create = Access::new(Verb::Create, info.kind, "", None);
    request
        .api
        .authorize(identity, &create)
        .map_err(|refused| RestError::from_grpc(&refused, info, ""))?;
    let content_type = super::header_text(request.headers, header::CONTENT_TYPE);
    let mut review = wire::parse_body(body, &content_type)?;
    wire::check_against_url(&mut review, info, None)?;
    let status = match info.kind {
        Kind::SelfSubjectAccessReview => {
            let decide = |access: &Access<'_>| request.api.review_access(identity, access);
            let decide_path =
                |verb: &str, path: &str| request.api.review_path(identity, verb, path);
            access_status(info, &review["spec"], decide, decide_path)?
        }
        Kind::SubjectAccessReview => {
            let user = reviewed_user(info, &review["spec"])?;
            let decide = |access: &Access<'_>| request.api.review_access_of(&user, access);
            let decide_path =
                |verb: &str, path: &str| request.api.review_path_of(&user, verb, path);
            access_status(info, &review["spec"], decide, decide_path)?
        }
        Kind::SelfSubjectRulesReview => {
            let namespace = review["spec"]["namespace"].as_str().unwrap_or("");
            let (resources, paths) = request.api.review_rules(identity, namespace);
            rules_status(&resources, &paths)
        }
        Kind::SelfSubjectReview => user_status(identity),
        other => return Err(RestError::internal(format!("{other} is not a review"))),
    };
    review["status"] = status;
    Ok(json_response(StatusCode::CREATED, &review))
}

/// The user a SubjectAccessReview's `spec` asks about: `user` and
/// `groups`, at least one of them (as Kubernetes validates it).
fn reviewed_user(info: &KindInfo, spec: &Value) -> Result<KubernetesUser, RestError> {
    let username = text(spec, "user").to_owned();
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if username.is_empty() && groups.is_empty() {
        let cause = "Invalid value: \"\": at least one of user or group must be specified";
        return Err(RestError::invalid(
            info,
            "",
            vec![("spec.user".to_owned(), cause.to_owned())],
        ));
    }
    Ok(KubernetesUser { username, groups })
}

/// The status of an access review's `spec` (a SelfSubjectAccessReview's,
/// or a SubjectAccessReview's), with `decide` deciding each access it asks
/// about and `decide_path` a path.
fn access_status(
    info: &KindInfo,
    spec: &Value,
    decide: impl Fn(&Access<'_>) -> Decision,
    decide_path: impl Fn(&str, &str) -> Decision,
) -> Result<Value, RestError> {
    let resource = spec.get("resourceAttributes").filter(|a| a.is_object());
    let path = spec.get("nonResourceAttributes").filter(|a| a.is_object());
    let answer = match (resource, path) {
        (Some(attributes), None) => resource_answer(attributes, &decide),
        (None, Some(attributes)) => {
            let verb = text(attributes, "verb");
            let path = text(attributes, "path");
            Answer::of(decide_path(verb, path))
        }
        _ => {
            let cause = "Invalid value: \"null\": exactly one of nonResourceAttributes or \
                         resourceAttributes must be specified";
            return Err(RestError::invalid(
                info,
                "",
                vec![("spec.resourceAttributes".to_owned(), cause.to_owned())],
            ));
        }
    };
    Ok(answer.to_json())
}

/// The answer to `resourceAttributes`: allowed when every access they
/// stand for is; else the first refusal.
fn resource_answer(attributes: &Value, decide: &impl Fn(&Access<'_>) -> Decision) -> Answer {
    let verb = text(attributes, "verb");
    let group = text(attributes, "group");
    let version = text(attributes, "version");
    let resource = text(attributes, "resource");
    let subresource = text(attributes, "subresource");
    let namespace = text(attributes, "namespace");
    let name = Some(text(attributes, "name")).filter(|n| !n.is_empty());
    let verbs = match (verb, Verb::from_name(verb)) {
        ("*", _) => Verb::ALL.to_vec(),
        (_, Some(verb)) => vec![verb],
        (_, None) => return Answer::unserved(format!("skiff serves no verb {verb:?}")),
    };
    let serves_part = |info: &KindInfo| {
        subresource.is_empty() || info.subresources.iter().any(|s| s.name() == subresource)
    };
    let kinds: Vec<&'static KindInfo> = registry::all()
        .into_iter()
        .filter(|i| group == "*" || i.group == group)
        .filter(|i| matches!(version, "" | "*") || i.version == version)
        .filter(|i| resource == "*" || i.resource == resource)
        .filter(|i| serves_part(i))
        .collect();
    if kinds.is_empty() {
        return Answer::unserved(unserved_resource(group, resource, subresource));
    }
    let mut reason = None;
    for info in kinds {
        // Cluster-scoped objects are the same whatever namespace is named.
        let namespace = if info.namespaced { namespace } else { "" };
        for verb in &verbs {
            let access = Access::new(*verb, info.kind, namespace, name);
            let decision = decide(&access.with_subresource(subresource));
            if !decision.allowed {
                return Answer::of(decision);
            }
            if reason.is_none() {
                reason = Some(decision.reason);
            }
        }
    }
    Answer {
        allowed: true,
        denied: false,
        reason: reason.unwrap_or_default(),
    }
}

/// Why a resource asked about is not allowed: skiff does not serve it.
fn unserved_resource(group: &str, resource: &str, subresource: &str) -> String {
    let what = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    match group {
        "" => format!("skiff serves no resource {what:?} in the core API group"),
        "*" => format!("skiff serves no resource {what:?} in any API group"),
        group => format!("skiff serves no resource {what:?} in API group {group:?}"),
    }
}

/// A SelfSubjectRulesReview's status: the rules, as Kubernetes'
/// `ResourceRule`s and `NonResourceRule`s; the list is complete.
fn rules_status(resources: &[ResourceRule], paths: &[NonResourceRule]) -> Value {
    let resource_rules: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut rule = json!({
                "verbs": r.verbs,
                "apiGroups": r.api_groups,
                "resources": r.resources,
            });
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            rule
        })
        .collect();
    let non_resource_rules: Vec<Value> = paths
        .iter()
        .map(|p| json!({"verbs": p.verbs, "nonResourceURLs": p.paths}))
        .collect();
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}

/// A SelfSubjectReview's status: who the caller is (a service account's
/// uid too, and the extras of the token it came with: its id, and the pod
/// and node of a pod-bound token, as kube-apiserver tells them; a user
/// acted as, its uid and extras as asked for, and never who acts as it).
fn user_status(identity: &Identity) -> Value {
    let user = authz::kubernetes_user(identity);
    let mut info = json!({"username": user.username, "groups": user.groups});
    match identity {
        Identity::ServiceAccount {
            uid, credential, ..
        } => {
            info["uid"] = json!(uid);
            let extra = credential.extra();
            if !extra.is_empty() {
                info["extra"] = json!(extra);
            }
        }
        Identity::User { uid, extra, .. } => {
            if !uid.is_empty() {
                info["uid"] = json!(uid);
            }
            if !extra.is_empty() {
                info["extra"] = json!(extra);
            }
        }
        Identity::Admin | Identity::Node(_) | Identity::Master(_) => {}
    }
    json!({ "userInfo": info })
}

/// A string attribute; `""` when missing or not a string.
fn text<'v>(attributes: &'v Value, field: &str) -> &'v str {
    attributes[field].as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_security::TokenCredential;

    use super::*;
    use crate::store::state_machine::ObjectStore;

    fn store() -> (tempfile::TempDir, Arc<ObjectStore>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = ObjectStore::open(dir.path()).expect("a store");
        (dir, store)
    }

    fn access_review() -> &'static KindInfo {
        registry::info(Kind::SelfSubjectAccessReview)
    }

    /// What a SelfSubjectAccessReview of `spec` answers `who`.
    fn review(store: &ObjectStore, who: &Identity, spec: Value) -> Result<Value, RestError> {
        let decide = |access: &Access<'_>| authz::decide(store, who, access);
        let decide_path = |verb: &str, path: &str| authz::decide_path(store, who, verb, path);
        access_status(access_review(), &spec, decide, decide_path)
    }

    /// What a SubjectAccessReview of `spec` answers.
    fn subject_review(store: &ObjectStore, spec: Value) -> Result<Value, RestError> {
        let info = registry::info(Kind::SubjectAccessReview);
        let user = reviewed_user(info, &spec)?;
        let decide = |access: &Access<'_>| authz::decide_for_user(store, &user, access);
        let decide_path =
            |verb: &str, path: &str| authz::decide_path_for_user(store, &user, verb, path);
        access_status(info, &spec, decide, decide_path)
    }

    /// `kubectl auth can-i VERB RESOURCE` as kubectl sends it.
    fn can_i(verb: &str, group: &str, resource: &str) -> Value {
        json!({"resourceAttributes": {
            "namespace": "shop",
            "verb": verb,
            "group": group,
            "resource": resource,
        }})
    }

    #[test]
    fn an_admin_may_do_everything_it_asks_about() {
        let (_dir, store) = store();
        let everything = json!({
            "allowed": true,
            "reason": "admins and masters may do everything",
        });
        let questions = [
            can_i("create", "apps", "deployments"),
            can_i("delete", "", "pods"),
            can_i("list", "", "secrets"),
            can_i("*", "*", "*"),
            json!({"resourceAttributes": {
                "verb": "get", "resource": "pods", "subresource": "log", "name": "web",
            }}),
        ];
        for who in [Identity::Admin, Identity::Master("1".into())] {
            for question in &questions {
                let answer = review(&store, &who, question.clone()).unwrap();
                assert_eq!(answer, everything, "{who}: {question}");
            }
            let path = json!({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}});
            assert_eq!(review(&store, &who, path).unwrap(), everything);
        }
    }

    #[test]
    fn a_node_is_allowed_its_reads_and_refused_the_rest() {
        let (_dir, store) = store();
        let n1 = Identity::Node("n1".into());
        let reads = "a node reads Nodes (for the overlay), Services and Endpoints";
        let allowed = [
            (can_i("list", "", "nodes"), reads),
            (can_i("watch", "", "services"), reads),
            (
                can_i("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
                "everyone may review its own access",
            ),
        ];
        for (question, reason) in allowed {
            let answer = review(&store, &n1, question.clone()).unwrap();
            assert_eq!(
                answer,
                json!({"allowed": true, "reason": reason}),
                "{question}"
            );
        }
        let refused = [
            (can_i("list", "", "pods"), "node:n1 may not list pods"),
            (can_i("get", "", "secrets"), "node:n1 may not read secrets"),
            (
                can_i("create", "apps", "deployments"),
                "node:n1 may not create deployments",
            ),
            // Every resource of every group: the first one refused.
            (can_i("get", "*", "*"), "node:n1 may not read namespaces"),
            // Every verb on nodes: reads are allowed, creates are not.
            (can_i("*", "", "nodes"), "node:n1 may not create nodes"),
        ];
        for (question, reason) in refused {
            let answer = review(&store, &n1, question.clone()).unwrap();
            assert_eq!(
                answer,
                json!({"allowed": false, "denied": true, "reason": reason}),
                "{question}"
            );
        }
        let path = |path: &str| json!({"nonResourceAttributes": {"verb": "get", "path": path}});
        assert_eq!(
            review(&store, &n1, path("/version")).unwrap()["allowed"],
            true
        );
        assert_eq!(
            review(&store, &n1, path("/metrics")).unwrap(),
            json!({"allowed": false, "denied": true, "reason": "node:n1 may not get /metrics"})
        );
    }

    #[test]
    fn what_skiff_does_not_serve_is_not_allowed_with_a_reason() {
        let (_dir, store) = store();
        let unserved = [
            (
                can_i("get", "example.com", "widgets"),
                r#"skiff serves no resource "widgets" in API group "example.com""#,
            ),
            (
                can_i("get", "", "deployments"),
                r#"skiff serves no resource "deployments" in the core API group"#,
            ),
            (
                json!({"resourceAttributes": {
                    "verb": "create", "resource": "pods", "subresource": "ephemeralcontainers",
                }}),
                r#"skiff serves no resource "pods/ephemeralcontainers" in the core API group"#,
            ),
            (
                can_i("impersonate", "", "pods"),
                r#"skiff serves no verb "impersonate""#,
            ),
        ];
        for (question, reason) in unserved {
            let answer = review(&store, &Identity::Admin, question.clone()).unwrap();
            assert_eq!(
                answer,
                json!({"allowed": false, "reason": reason}),
                "{question}"
            );
        }
    }

    #[test]
    fn a_review_asks_about_resources_or_paths_exactly_once() {
        let (_dir, store) = store();
        let both = json!({
            "resourceAttributes": {"verb": "get", "resource": "pods"},
            "nonResourceAttributes": {"verb": "get", "path": "/version"},
        });
        for spec in [json!({}), json!({"resourceAttributes": null}), both] {
            let e = review(&store, &Identity::Admin, spec.clone()).unwrap_err();
            assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY, "{spec}");
            assert_eq!(e.details.causes[0].0, "spec.resourceAttributes");
        }
    }

    #[test]
    fn rules_and_users_are_written_as_kubernetes_writes_them() {
        let resources = [ResourceRule {
            verbs: vec!["update".into(), "patch".into()],
            api_groups: vec![String::new()],
            resources: vec!["nodes".into(), "nodes/status".into()],
            resource_names: vec!["n1".into()],
        }];
        let paths = [NonResourceRule {
            verbs: vec!["get".into()],
            paths: vec!["/version".into()],
        }];
        assert_eq!(
            rules_status(&resources, &paths),
            json!({
                "resourceRules": [{
                    "verbs": ["update", "patch"],
                    "apiGroups": [""],
                    "resources": ["nodes", "nodes/status"],
                    "resourceNames": ["n1"],
                }],
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/version"]}],
                "incomplete": false,
            })
        );
        // kubectl reads the lists even when empty: they are always written.
        assert_eq!(
            rules_status(&[], &[]),
            json!({"resourceRules": [], "nonResourceRules": [], "incomplete": false})
        );
        assert_eq!(
            user_status(&Identity::Admin),
            json!({"userInfo": {
                "username": "system:admin",
                "groups": ["system:masters", "system:authenticated"],
            }})
        );
        let account = Identity::ServiceAccount {
            namespace: "default".into(),
            name: "default".into(),
            uid: "6f1c".into(),
            credential: TokenCredential::default(),
        };
        assert_eq!(
            user_status(&account),
            json!({"userInfo": {
                "username": "system:serviceaccount:default:default",
                "uid": "6f1c",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:default",
                    "system:authenticated",
                ],
            }})
        );
    }

    #[test]
    fn whoami_with_a_pod_bound_token_shows_its_pod_node_and_id_as_extras() {
        let pod_bound = Identity::ServiceAccount {
            namespace: "shop".into(),
            name: "builder".into(),
            uid: "sa-1".into(),
            credential: TokenCredential {
                token_id: "2f1b7d4a-0a11-4c2e-9f0b-6d7c8e9a0b1c".into(),
                pod_name: "web-0".into(),
                pod_uid: "pod-1".into(),
                node_name: "pi-1".into(),
                node_uid: "node-1".into(),
            },
        };
        assert_eq!(
            user_status(&pod_bound),
            json!({"userInfo": {
                "username": "system:serviceaccount:shop:builder",
                "uid": "sa-1",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:shop",
                    "system:authenticated",
                ],
                "extra": {
                    "authentication.kubernetes.io/credential-id":
                        ["JTI=2f1b7d4a-0a11-4c2e-9f0b-6d7c8e9a0b1c"],
                    "authentication.kubernetes.io/node-name": ["pi-1"],
                    "authentication.kubernetes.io/node-uid": ["node-1"],
                    "authentication.kubernetes.io/pod-name": ["web-0"],
                    "authentication.kubernetes.io/pod-uid": ["pod-1"],
                },
            }})
        );
        // An unbound token: its id alone.
        let unbound = Identity::ServiceAccount {
            namespace: "shop".into(),
            name: "builder".into(),
            uid: "sa-1".into(),
            credential: TokenCredential {
                token_id: "j-1".into(),
                ..TokenCredential::default()
            },
        };
        assert_eq!(
            user_status(&unbound)["userInfo"]["extra"],
            json!({"authentication.kubernetes.io/credential-id": ["JTI=j-1"]})
        );
        // Certificates carry none.
        let node = user_status(&Identity::Node("pi-1".into()));
        assert!(node["userInfo"].get("extra").is_none(), "{node}");
    }

    #[test]
    fn whoami_as_another_user_shows_that_user_and_never_who_acts_as_it() {
        let jane = Identity::User {
            name: "jane".into(),
            uid: "u-7".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: [("scopes".to_owned(), vec!["view".to_owned()])].into(),
            impersonator: Box::new(Identity::Admin),
        };
        assert_eq!(
            user_status(&jane),
            json!({"userInfo": {
                "username": "jane",
                "uid": "u-7",
                "groups": ["devs", "system:authenticated"],
                "extra": {"scopes": ["view"]},
            }})
        );
        let bare = Identity::User {
            name: "bob".into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
            extra: Default::default(),
            impersonator: Box::new(Identity::Admin),
        };
        assert_eq!(
            user_status(&bare),
            json!({"userInfo": {"username": "bob", "groups": ["system:authenticated"]}})
        );
    }

    /// A store holding namespace `team`, Role `pod-reader` there (list
    /// pods) and its RoleBinding `robot-pods` to the service account
    /// `robot`.
    fn team() -> (tempfile::TempDir, Arc<ObjectStore>) {
        use crate::api::rbac::tests::{binding, rbac_object};
        use crate::store::Command;
        use prost::Message;
        use skiff_objects::ObjectExt;
        let (dir, store) = store();
        let namespace = skiff_objects::namespaces::named("team", "");
        let role = rbac_object(
            "Role",
            "team",
            "pod-reader",
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        );
        let bound = binding(
            "RoleBinding",
            "team",
            "robot-pods",
            ("Role", "pod-reader"),
            json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}]),
        );
        let commands = [namespace, role, bound]
            .iter()
            .map(|o| Command::Create {
                object: o.encode_to_vec(),
                uid: format!("uid-{}", o.meta().name),
                now: "2026-01-01T00:00:00Z".into(),
            })
            .collect();
        for result in store.apply_commands(commands) {
            result.expect("created");
        }
        (dir, store)
    }

    #[test]
    fn a_subject_access_review_answers_for_the_user_it_names() {
        let (_dir, store) = team();
        let robot = "system:serviceaccount:team:robot";
        let asked = |namespace: &str| {
            json!({
                "user": robot,
                "resourceAttributes": {"namespace": namespace, "verb": "list", "resource": "pods"},
            })
        };
        assert_eq!(
            subject_review(&store, asked("team")).unwrap(),
            json!({
                "allowed": true,
                "reason": r#"RBAC: allowed by RoleBinding "robot-pods/team" of Role "pod-reader" to ServiceAccount "robot/team""#,
            })
        );
        let refused = subject_review(&store, asked("default")).unwrap();
        assert_eq!(refused["allowed"], false);
        assert_eq!(
            refused["reason"],
            r#"RBAC: no rules authorize user "system:serviceaccount:team:robot" with groups [] to "list" resource "pods" in namespace "default""#
        );
        // Groups alone, and system:masters.
        let masters = json!({
            "groups": ["system:masters"],
            "resourceAttributes": {"verb": "delete", "resource": "nodes", "name": "n1"},
        });
        assert_eq!(subject_review(&store, masters).unwrap()["allowed"], true);
        let path = json!({
            "user": robot,
            "nonResourceAttributes": {"verb": "get", "path": "/version"},
        });
        assert_eq!(subject_review(&store, path).unwrap()["allowed"], true);
        // A pod-bound token's uid and extras, as a webhook would pass them
        // on: RBAC reads neither, the answer is the user's.
        let mut with_extra = asked("team");
        with_extra["uid"] = json!("u-1");
        with_extra["extra"] = json!({
            "authentication.kubernetes.io/pod-name": ["robot-0"],
            "authentication.kubernetes.io/pod-uid": ["p-1"],
            "authentication.kubernetes.io/credential-id": ["JTI=j-1"],
        });
        assert_eq!(
            subject_review(&store, with_extra).unwrap(),
            subject_review(&store, asked("team")).unwrap()
        );
        // Nobody at all is refused as Kubernetes refuses it.
        let nobody = json!({"resourceAttributes": {"verb": "list", "resource": "pods"}});
        let e = subject_review(&store, nobody).unwrap_err();
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.details.causes[0].0, "spec.user");
    }

    #[test]
    fn a_service_account_reviews_its_own_access_through_rbac() {
        let (_dir, store) = team();
        let robot = Identity::ServiceAccount {
            namespace: "team".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            credential: TokenCredential::default(),
        };
        let mut list = can_i("list", "", "pods");
        list["resourceAttributes"]["namespace"] = json!("team");
        assert_eq!(
            review(&store, &robot, list.clone()).unwrap()["allowed"],
            true
        );
        let refused = review(&store, &robot, can_i("list", "", "pods")).unwrap();
        assert_eq!(refused["allowed"], false, "not in shop");
        // With a pod-bound token: the same answers, word for word.
        let from_pod = Identity::ServiceAccount {
            namespace: "team".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            credential: TokenCredential {
                token_id: "j-1".into(),
                pod_name: "robot-0".into(),
                pod_uid: "p-1".into(),
                node_name: "pi-1".into(),
                node_uid: "n-1".into(),
            },
        };
        for question in [list, can_i("list", "", "pods")] {
            assert_eq!(
                review(&store, &from_pod, question.clone()).unwrap(),
                review(&store, &robot, question.clone()).unwrap(),
                "{question}"
            );
        }
    }
}
