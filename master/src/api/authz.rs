//! Who may do what. Identity comes only from the client certificate the
//! TLS handshake verified ([`PeerInfo`]), or, on the REST API, from a
//! service account token whose signature it verified; no request field
//! can claim one, except that the REST API's impersonation headers make a
//! caller act as another user when it is allowed `impersonate` on it
//! ([`authorize_request`]); that user ([`Identity::User`]) is then
//! authorized as its name and groups say, as a SubjectAccessReview's
//! ([`decide_for_user`]).
//!
//! The rules are data ([`Rule`], [`PathRule`]) read by one function,
//! [`decide`]: may this identity make this [`Access`], a verb on a kind's
//! objects (one object, or a subresource of it)? Every call on objects is
//! authorized with it ([`authorize`]); the REST API's access reviews
//! (`kubectl auth can-i`, what k9s and Headlamp ask before they list)
//! answer with it, and list the same rules ([`rules_for`]).
//!
//! - Admins may do everything; so may masters, which relay requests they
//!   have already authorized.
//! - A node may read Nodes (for the overlay), Services and Endpoints, its
//!   own pods, and the ConfigMaps, Secrets and PersistentVolumeClaims
//!   those pods read (env, envFrom, volumes, imagePullSecrets) and the
//!   PersistentVolumes
//!   bound to those claims or pinned to the node, one by one, as
//!   Kubernetes' NodeRestriction lets a kubelet (a volume that does not
//!   exist is answered NotFound, so that an agent can remove the directory
//!   of a deleted `local-path` volume); it may write only its own Node and the status of pods
//!   bound to it, and Events about its Node and those pods
//!   ([`may_record_event`]), and confirm that it has torn down a pod bound
//!   to it that is being deleted ([`may_confirm_pod_deletion`]). Its Node's spec (podCIDR, taints, unschedulable) is the
//!   cluster's: that is checked on the write itself ([`may_update`]), as
//!   Kubernetes' NodeRestriction admission does, not by the rules. It may
//!   request tokens for the service accounts of the pods bound to it, each
//!   bound to such a pod ([`may_request_token`], NodeRestriction again).
//! - Everyone authenticated may review its own access and read discovery,
//!   the version, health and the service account issuer's documents
//!   (`/.well-known/openid-configuration`, `/openid/v1/jwks`).
//! - Any other identity (a service account) may do what Kubernetes' RBAC
//!   grants its user ([`kubernetes_user`]) through the stored RoleBindings
//!   and ClusterRoleBindings (`api::rbac`), besides what everyone may; and
//!   may write roles and bindings only granting what it holds
//!   ([`may_write_rbac`]). The access reviews answer for it from the same
//!   bindings, and so does a SubjectAccessReview for any user
//!   ([`decide_for_user`]).
//!
//! Calls that are not about objects (cluster membership, the datastore's
//! snapshots) are for admins and masters alone ([`privileged`]), and the
//! agents' own protocol for a node about itself ([`is_self`]).
//!
//! Anything else is refused with PermissionDenied and logged. A refusal
//! by the rules says so in kube-apiserver's words ([`refusal_message`]:
//! `User "system:serviceaccount:ns:sa" cannot list resource "pods" in API
//! group "" in the namespace "ns"`), which the REST API's 403s carry; the
//! checks beyond them (what a node's writes must keep, NodeRestriction's
//! on tokens) say `<identity> may not <what>` ([`denied`]).

use skiff_proto::api::object::Kind as Body;
use skiff_security::{Identity, PeerInfo};
use tonic::{Request, Status};

use super::rbac::{self, escalation};
use crate::security::service_account_tokens::BoundObjectRef;
use crate::store::state_machine::ObjectStore;
use skiff_objects::rbac as rbac_objects;
use skiff_objects::rbac::PolicyRuleExt;
use skiff_objects::{pods, registry, storage, Kind, ObjectExt};

/// A verb of the Kubernetes API, as authorization names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// Every verb skiff serves.
    pub const ALL: [Verb; 8] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Patch,
        Verb::Delete,
        Verb::DeleteCollection,
    ];

    /// The name Kubernetes gives it (`get`, `deletecollection`).
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    /// The verb named `name`, if skiff serves it.
    pub fn from_name(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }

    /// How refusals say it.
    fn phrase(self) -> &'static str {
        match self {
            Verb::Get => "read",
            Verb::DeleteCollection => "delete all",
            other => other.name(),
        }
    }
}

/// One access to objects: what authorization decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    pub verb: Verb,
    pub kind: Kind,
    /// The namespace; "" for cluster-scoped kinds, or all namespaces.
    pub namespace: &'a str,
    /// One object; `None` for a collection (list, watch, create).
    pub name: Option<&'a str>,
    /// "" for the object itself, else its subresource (`status`, `log`).
    pub subresource: &'a str,
}

impl<'a> Access<'a> {
    /// `verb` on the objects of `kind` (on `name` alone when given).
    pub fn new(verb: Verb, kind: Kind, namespace: &'a str, name: Option<&'a str>) -> Access<'a> {
        Access {
            verb,
            kind,
            namespace,
            name,
            subresource: "",
        }
    }

    /// The same access to a subresource of the objects.
    pub fn with_subresource(self, subresource: &'a str) -> Access<'a> {
        Access {
            subresource,
            ..self
        }
    }

    /// What it does, as refusals say it: `read Pod "web"`, `list pods`,
    /// `update the status of Pod "web"`.
    pub fn describe(&self) -> String {
        let objects = match self.name {
            Some(name) => format!("{} {name:?}", self.kind),
            None => self.kind.plural().to_owned(),
        };
        if self.subresource.is_empty() {
            format!("{} {objects}", self.verb.phrase())
        } else {
            let part = self.subresource;
            format!("{} the {part} of {objects}", self.verb.phrase())
        }
    }
}

/// How a REST request that comes to an Update or UpdateStatus of the API
/// service was asked, when that is not an `update` of the part written: a
/// PATCH is authorized as `patch` (of the object, its `status` or its
/// `scale`) and a PUT of a `scale` as `update` of `scale`, as
/// kube-apiserver authorizes the request rather than the write it comes
/// to (a patch is neither a get nor an update). A request extension, set by
/// the REST API in this process alone (no client can send one); it
/// changes only the verb and part the rules are asked about: what the
/// write itself must keep is checked for the caller all the same
/// ([`may_update`]'s Node spec, [`may_write_rbac`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedAs {
    pub verb: Verb,
    /// The request was on the `scale` subresource (its write is of the
    /// whole object, changed in `spec.replicas` alone).
    pub scale: bool,
}

impl RequestedAs {
    /// The access a write of `kind`'s object `name` (its status alone when
    /// `status_only`) is authorized as: this, or without one an `update`
    /// of the part written.
    pub fn access<'a>(
        requested: Option<RequestedAs>,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        status_only: bool,
    ) -> Access<'a> {
        let verb = requested.map_or(Verb::Update, |r| r.verb);
        let part = match requested {
            _ if status_only => "status",
            Some(RequestedAs { scale: true, .. }) => "scale",
            _ => "",
        };
        Access::new(verb, kind, namespace, Some(name)).with_subresource(part)
    }
}

/// The answer to "may this identity make this access?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Allowed: the rule that allows it. Refused: `<identity> may not
    /// <what>`.
    pub reason: String,
}

/// The verbs a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbs {
    All,
    Only(&'static [Verb]),
}

/// The kinds a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    All,
    Only(&'static [Kind]),
}

/// Which objects of its kinds a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every one.
    Any,
    /// The caller's own Node.
    OwnNode,
    /// The pods bound to the caller's node, as stored.
    BoundPods,
    /// The ConfigMaps, Secrets or PersistentVolumeClaims that a pod bound
    /// to the caller's node reads (in the pod's namespace), as stored.
    ReadByBoundPods,
    /// The PersistentVolumes bound to a claim a pod bound to the caller's
    /// node uses, or pinned to that node, or that do not exist.
    NodeVolumes,
    /// The ServiceAccounts a pod bound to the caller's node runs as (in the
    /// pod's namespace), as stored.
    AccountsOfBoundPods,
}

/// One grant: these verbs on these parts (the object itself, or
/// subresources) of these kinds' objects, within a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Verbs,
    pub kinds: Kinds,
    /// `""` is the object itself; `None`: the object and every subresource.
    pub parts: Option<&'static [&'static str]>,
    pub scope: Scope,
    /// Why, as the access reviews say it.
    pub reason: &'static str,
}

impl Rule {
    /// Whether the rule is about `access` (its scope aside).
    fn covers(&self, access: &Access<'_>) -> bool {
        let verb = match self.verbs {
            Verbs::All => true,
            Verbs::Only(verbs) => verbs.contains(&access.verb),
        };
        let kind = match self.kinds {
            Kinds::All => true,
            Kinds::Only(kinds) => kinds.contains(&access.kind),
        };
        let part = self.parts.is_none_or(|p| p.contains(&access.subresource));
        verb && kind && part
    }
}

/// A grant of paths that name no object (`/version`, `/healthz`): `*` is
/// every verb or path, a trailing `*` a prefix, as in Kubernetes' rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRule {
    /// Lowercase HTTP verbs (`get`, `post`), or `*`.
    pub verbs: &'static [&'static str],
    pub paths: &'static [&'static str],
    pub reason: &'static str,
}

impl PathRule {
    fn covers(&self, verb: &str, path: &str) -> bool {
        let verb = self.verbs.iter().any(|v| *v == "*" || *v == verb);
        let path = self.paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => *p == path,
        });
        verb && path
    }
}

/// What admins and masters may do.
const PRIVILEGED: &[Rule] = &[Rule {
    verbs: Verbs::All,
    kinds: Kinds::All,
    parts: None,
    scope: Scope::Any,
    reason: "admins and masters may do everything",
}];

/// What a node may do.
const NODE: &[Rule] = &[
    Rule {
        verbs: Verbs::Only(&[Verb::Get, Verb::List, Verb::Watch]),
        kinds: Kinds::Only(&[Kind::Node, Kind::Service, Kind::Endpoints]),
        parts: Some(&["", "status"]),
        scope: Scope::Any,
        reason: "a node reads Nodes (for the overlay), Services and Endpoints",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Get]),
        kinds: Kinds::Only(&[Kind::Pod]),
        parts: Some(&["", "status"]),
        scope: Scope::BoundPods,
        reason: "a node reads the pods bound to it",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Get]),
        kinds: Kinds::Only(&[Kind::ConfigMap]),
        parts: Some(&[""]),
        scope: Scope::ReadByBoundPods,
        reason: "a node reads the ConfigMaps the pods bound to it read",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Get]),
        kinds: Kinds::Only(&[Kind::Secret]),
        parts: Some(&[""]),
        scope: Scope::ReadByBoundPods,
        reason: "a node reads the Secrets the pods bound to it read",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Get]),
        kinds: Kinds::Only(&[Kind::PersistentVolumeClaim]),
        parts: Some(&[""]),
        scope: Scope::ReadByBoundPods,
        reason: "a node reads the PersistentVolumeClaims the pods bound to it use",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Get]),
        kinds: Kinds::Only(&[Kind::PersistentVolume]),
        parts: Some(&[""]),
        scope: Scope::NodeVolumes,
        reason:
            "a node reads the PersistentVolumes of the claims its pods use and those pinned to it",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Update, Verb::Patch]),
        kinds: Kinds::Only(&[Kind::Node]),
        parts: Some(&["", "status"]),
        scope: Scope::OwnNode,
        reason: "a node updates its own Node (not its spec)",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Update, Verb::Patch]),
        kinds: Kinds::Only(&[Kind::Pod]),
        parts: Some(&["status"]),
        scope: Scope::BoundPods,
        reason: "a node reports the status of the pods bound to it",
    },
    Rule {
        verbs: Verbs::Only(&[Verb::Create]),
        kinds: Kinds::Only(&[Kind::ServiceAccount]),
        parts: Some(&["token"]),
        scope: Scope::AccountsOfBoundPods,
        reason: "a node requests tokens for the service accounts of the pods bound to it",
    },
];

/// What everyone authenticated may do.
const EVERYONE: &[Rule] = &[Rule {
    verbs: Verbs::Only(&[Verb::Create]),
    kinds: Kinds::Only(&[
        Kind::SelfSubjectAccessReview,
        Kind::SelfSubjectRulesReview,
        Kind::SelfSubjectReview,
    ]),
    parts: Some(&[""]),
    scope: Scope::Any,
    reason: "everyone may review its own access",
}];

/// The paths admins and masters may use.
const PRIVILEGED_PATHS: &[PathRule] = &[PathRule {
    verbs: &["*"],
    paths: &["*"],
    reason: "admins and masters may do everything",
}];

/// The paths everyone authenticated may read (Kubernetes' `system:discovery`
/// and `system:public-info-viewer`; and the service account issuer's
/// documents, which kube-apiserver grants service accounts in
/// `system:service-account-issuer-discovery`).
const EVERYONE_PATHS: &[PathRule] = &[
    PathRule {
        verbs: &["get"],
        paths: &[
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/readyz",
            "/openapi",
            "/openapi/*",
            "/version",
            "/version/",
        ],
        reason: "everyone may read discovery, the version and health",
    },
    PathRule {
        verbs: &["get"],
        paths: &[
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration/",
            "/openid/v1/jwks",
            "/openid/v1/jwks/",
        ],
        reason: "everyone may read the service account issuer's discovery documents",
    },
];

/// Whose rules decide a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    /// Admins and masters, and any user in `system:masters`: everything.
    Privileged,
    /// A node's agent (`system:node:<name>` in `system:nodes`): its own
    /// rules, as Kubernetes' Node authorizer and NodeRestriction.
    Node(String),
    /// Anyone else (service accounts first): RBAC, as this user.
    Rbac(KubernetesUser),
}

impl Principal {
    /// Whose `identity`'s rules are: admins, masters and nodes keep theirs,
    /// a user acted as (impersonation) is whose its name and groups say
    /// ([`Principal::of_user`]), every other identity is RBAC's.
    fn of(identity: &Identity) -> Principal {
        match identity {
            i if i.is_privileged() => Principal::Privileged,
            Identity::Node(node) => Principal::Node(node.clone()),
            Identity::User { .. } => Principal::of_user(&kubernetes_user(identity)),
            other => Principal::Rbac(kubernetes_user(other)),
        }
    }

    /// Whose a user's rules are (a SubjectAccessReview's user, maybe no
    /// identity of skiff's): `system:masters` may do everything, a node's
    /// user in `system:nodes` has the node's rules, anyone else RBAC's.
    fn of_user(user: &KubernetesUser) -> Principal {
        let in_group = |group: &str| user.groups.iter().any(|g| g == group);
        if in_group(rbac_objects::MASTERS_GROUP) {
            return Principal::Privileged;
        }
        match user.username.strip_prefix(NODE_USER_PREFIX) {
            Some(node) if !node.is_empty() && in_group(NODES_GROUP) => {
                Principal::Node(node.to_owned())
            }
            _ => Principal::Rbac(user.clone()),
        }
    }

    /// Its static rules, its own first; RBAC's come after them.
    fn rules(&self) -> impl Iterator<Item = &'static Rule> {
        let own: &'static [Rule] = match self {
            Principal::Privileged => PRIVILEGED,
            Principal::Node(_) => NODE,
            Principal::Rbac(_) => &[],
        };
        own.iter().chain(EVERYONE)
    }

    /// Its static path rules, its own first; RBAC's come after them.
    fn path_rules(&self) -> impl Iterator<Item = &'static PathRule> {
        let own: &'static [PathRule] = match self {
            Principal::Privileged => PRIVILEGED_PATHS,
            Principal::Node(_) | Principal::Rbac(_) => &[],
        };
        own.iter().chain(EVERYONE_PATHS)
    }
}

/// How Kubernetes names a node's user: `system:node:<name>`.
const NODE_USER_PREFIX: &str = "system:node:";
/// The group of nodes' users.
const NODES_GROUP: &str = "system:nodes";

/// Whether `access` is within `scope` for `principal`.
fn in_scope(store: &ObjectStore, principal: &Principal, scope: Scope, access: &Access<'_>) -> bool {
    match (scope, principal, access.name) {
        (Scope::Any, _, _) => true,
        (Scope::OwnNode, Principal::Node(node), Some(name)) => name == node,
        (Scope::BoundPods, Principal::Node(node), Some(pod)) => {
            pod_bound_to(store, access.namespace, pod, node)
        }
        (Scope::ReadByBoundPods, Principal::Node(node), Some(name)) => {
            read_by_bound_pod(store, access.kind, access.namespace, name, node)
        }
        (Scope::NodeVolumes, Principal::Node(node), Some(name)) => {
            volume_readable_by_node(store, name, node)
        }
        (Scope::AccountsOfBoundPods, Principal::Node(node), Some(name)) => {
            let namespace = match access.namespace {
                "" => crate::writer::DEFAULT_NAMESPACE,
                namespace => namespace,
            };
            accounts_of_bound_pods(store, node, namespace)
                .iter()
                .any(|a| a == name)
        }
        _ => false,
    }
}

/// `access` as RBAC reads it: the verb's name, the kind's group and
/// resource.
fn rbac_request<'a>(access: &Access<'a>) -> rbac::Request<'a> {
    let info = registry::info(access.kind);
    rbac::Request::Resource(rbac::ResourceRequest {
        verb: access.verb.name(),
        api_group: info.group,
        resource: info.resource,
        subresource: access.subresource,
        namespace: access.namespace,
        name: access.name.unwrap_or(""),
    })
}

/// May `principal` make `access`? Its static rules, then RBAC's for an
/// RBAC principal; a refusal of another names it as `who`.
fn decide_for(
    store: &ObjectStore,
    principal: &Principal,
    who: &dyn std::fmt::Display,
    access: &Access<'_>,
) -> Decision {
    let granted = principal
        .rules()
        .find(|rule| rule.covers(access) && in_scope(store, principal, rule.scope, access));
    if let Some(rule) = granted {
        return Decision {
            allowed: true,
            reason: rule.reason.to_owned(),
        };
    }
    match principal {
        Principal::Rbac(user) => {
            let answer = rbac::authorize(
                store.cache(),
                &user.username,
                &user.groups,
                &rbac_request(access),
            );
            Decision {
                allowed: answer.allowed,
                reason: answer.reason,
            }
        }
        Principal::Privileged | Principal::Node(_) => Decision {
            allowed: false,
            reason: format!("{who} may not {}", access.describe()),
        },
    }
}

/// May `principal` use `verb` on `path`, which names no object?
fn decide_path_for(
    store: &ObjectStore,
    principal: &Principal,
    who: &dyn std::fmt::Display,
    verb: &str,
    path: &str,
) -> Decision {
    if let Some(rule) = principal.path_rules().find(|rule| rule.covers(verb, path)) {
        return Decision {
            allowed: true,
            reason: rule.reason.to_owned(),
        };
    }
    match principal {
        Principal::Rbac(user) => {
            let request = rbac::Request::NonResource { verb, path };
            let answer = rbac::authorize(store.cache(), &user.username, &user.groups, &request);
            Decision {
                allowed: answer.allowed,
                reason: answer.reason,
            }
        }
        Principal::Privileged | Principal::Node(_) => Decision {
            allowed: false,
            reason: format!("{who} may not {verb} {path}"),
        },
    }
}

/// May `identity` make `access`? The one answer to that question: calls on
/// objects are authorized with it, and the access reviews answer with it.
/// Admins and masters may do everything, nodes what their rules say; any
/// other identity what RBAC grants its user (after what everyone may).
pub fn decide(store: &ObjectStore, identity: &Identity, access: &Access<'_>) -> Decision {
    decide_for(store, &Principal::of(identity), identity, access)
}

/// May `identity` use `verb` (lowercase HTTP, `get`) on `path`, which names
/// no object? The same principals as [`decide`].
pub fn decide_path(store: &ObjectStore, identity: &Identity, verb: &str, path: &str) -> Decision {
    decide_path_for(store, &Principal::of(identity), identity, verb, path)
}

/// May the user `user` (a name and groups, as a SubjectAccessReview asks)
/// make `access`? As [`decide`] answers for the identity that user is:
/// `system:masters` everything, a node's user in `system:nodes` the node's
/// rules, anyone else RBAC's.
pub fn decide_for_user(
    store: &ObjectStore,
    user: &KubernetesUser,
    access: &Access<'_>,
) -> Decision {
    decide_for(store, &Principal::of_user(user), &user.username, access)
}

/// [`decide_path`] for the user `user`.
pub fn decide_path_for_user(
    store: &ObjectStore,
    user: &KubernetesUser,
    verb: &str,
    path: &str,
) -> Decision {
    decide_path_for(store, &Principal::of_user(user), &user.username, verb, path)
}

/// [`decide`] for a call: refused with PermissionDenied in Kubernetes'
/// words ([`refusal_message`]), and logged as every refusal is (the
/// identity and what it may not do).
pub fn authorize(
    store: &ObjectStore,
    identity: &Identity,
    access: &Access<'_>,
) -> Result<(), Status> {
    if decide(store, identity, access).allowed {
        return Ok(());
    }
    let action = access.describe();
    tracing::warn!(%identity, action = action.as_str(), "permission denied");
    Err(Status::permission_denied(refusal_message(
        store, identity, access,
    )))
}

/// [`decide_path`] for a request on a path that names no object: refused
/// with PermissionDenied in Kubernetes' words (`User "X" cannot get path
/// "/metrics"`), and logged.
pub fn authorize_path(
    store: &ObjectStore,
    identity: &Identity,
    verb: &str,
    path: &str,
) -> Result<(), Status> {
    let principal = Principal::of(identity);
    if decide_path_for(store, &principal, identity, verb, path).allowed {
        return Ok(());
    }
    let action = format!("{verb} {path}");
    tracing::warn!(%identity, action = action.as_str(), "permission denied");
    let username = kubernetes_user(identity).username;
    let sentence = forbidden_path_message(&username, verb, path);
    let reason = authorizer_reason(store, &principal, "");
    Err(Status::permission_denied(with_reason(sentence, &reason)))
}

/// What kube-apiserver says when `identity` is refused `access`: its
/// sentence for the request ([`forbidden_message`]) and, after a colon,
/// what the authorizers said of it, when they said anything (RBAC names
/// the roles its bindings name that do not exist: `RBAC:
/// role.rbac.authorization.k8s.io "gone" not found`). The REST API puts
/// `<resource> "<name>" is forbidden: ` before it, as `NewForbidden` does.
pub fn refusal_message(store: &ObjectStore, identity: &Identity, access: &Access<'_>) -> String {
    let username = kubernetes_user(identity).username;
    let sentence = forbidden_message(&username, access);
    let reason = authorizer_reason(store, &Principal::of(identity), access.namespace);
    with_reason(sentence, &reason)
}

/// What Kubernetes' authorizers add to a refusal of `principal` in
/// `namespace`: RBAC's missing roles, or nothing (the static rules of
/// nodes and admins say nothing more than the sentence).
fn authorizer_reason(store: &ObjectStore, principal: &Principal, namespace: &str) -> String {
    match principal {
        Principal::Rbac(user) => {
            rbac::refusal_reason(store.cache(), &user.username, &user.groups, namespace)
        }
        Principal::Privileged | Principal::Node(_) => String::new(),
    }
}

/// `sentence`, and `: reason` when there is one (kube-apiserver's
/// `Forbidden`).
fn with_reason(sentence: String, reason: &str) -> String {
    if reason.is_empty() {
        sentence
    } else {
        format!("{sentence}: {reason}")
    }
}

/// kube-apiserver's sentence refusing the user `username` `access`
/// (`forbiddenMessage` in its `responsewriters`): `User
/// "system:serviceaccount:ns:sa" cannot list resource "pods" in API group
/// "" in the namespace "ns"`; a subresource is named after its resource
/// (`"pods/eviction"`), and a request outside namespaces is `at the
/// cluster scope`.
pub fn forbidden_message(username: &str, access: &Access<'_>) -> String {
    let info = registry::info(access.kind);
    let request = rbac::ResourceRequest {
        verb: access.verb.name(),
        api_group: info.group,
        resource: info.resource,
        subresource: access.subresource,
        namespace: access.namespace,
        name: access.name.unwrap_or(""),
    };
    forbidden_request_message(username, &request)
}

/// [`forbidden_message`] for any request on a resource, of a verb or a
/// resource skiff has no [`Kind`] for (`impersonate` on `users`).
pub fn forbidden_request_message(username: &str, request: &rbac::ResourceRequest<'_>) -> String {
    let resource = match request.subresource {
        "" => request.resource.to_owned(),
        part => format!("{}/{part}", request.resource),
    };
    let (verb, group) = (request.verb, request.api_group);
    let sentence = match request.namespace {
        "" => format!(
            "User {username:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
        ),
        namespace => format!(
            "User {username:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}"
        ),
    };
    html_escaped(&sentence)
}

/// kube-apiserver's sentence refusing the user `username` `verb` (`get`)
/// on `path`, which names no object: `User "X" cannot get path
/// "/metrics"`.
pub fn forbidden_path_message(username: &str, verb: &str, path: &str) -> String {
    html_escaped(&format!("User {username:?} cannot {verb} path {path:?}"))
}

/// `text` with `&`, `<` and `>` escaped, as kube-apiserver escapes its
/// refusals' sentences so that they never read as HTML.
fn html_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// May `identity` make `request` (the verb `impersonate` on `users`,
/// `groups`, `serviceaccounts`, `uids` or `userextras`, as the REST API's
/// impersonation asks before it acts as another user)? Admins, masters
/// and `system:masters` may do everything (RBAC's `cluster-admin`); nodes
/// have no such rule; anyone else what RBAC grants its user. Refused:
/// PermissionDenied in kube-apiserver's words ([`refusal_message`]'s,
/// `User "X" cannot impersonate resource "users" in API group "" at the
/// cluster scope`), logged.
pub fn authorize_request(
    store: &ObjectStore,
    identity: &Identity,
    request: &rbac::ResourceRequest<'_>,
) -> Result<(), Status> {
    let principal = Principal::of(identity);
    let allowed = match &principal {
        Principal::Privileged => true,
        Principal::Node(_) => false,
        Principal::Rbac(user) => {
            let asked = rbac::Request::Resource(*request);
            rbac::authorize(store.cache(), &user.username, &user.groups, &asked).allowed
        }
    };
    if allowed {
        return Ok(());
    }
    let action = format!(
        "{} {} {:?}",
        request.verb,
        match request.subresource {
            "" => request.resource.to_owned(),
            part => format!("{}/{part}", request.resource),
        },
        request.name
    );
    tracing::warn!(%identity, action = action.as_str(), "permission denied");
    let username = kubernetes_user(identity).username;
    let sentence = forbidden_request_message(&username, request);
    let reason = authorizer_reason(store, &principal, request.namespace);
    Err(Status::permission_denied(with_reason(sentence, &reason)))
}

/// The verified identity behind a request.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    PeerInfo::of(request)
        .and_then(|p| p.identity.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate signed by the cluster CA is required")
        })
}

/// Refuses `identity` doing `action`, and logs it.
pub fn denied(identity: &Identity, action: &str) -> Status {
    tracing::warn!(%identity, action, "permission denied");
    Status::permission_denied(format!("{identity} may not {action}"))
}

/// Whether `pod` in `namespace` is bound to `node` (in this replica).
pub fn pod_bound_to(store: &ObjectStore, namespace: &str, pod: &str, node: &str) -> bool {
    let namespace = if namespace.is_empty() {
        crate::writer::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    let stored = store.get(Kind::Pod, namespace, pod).ok().flatten();
    stored.is_some_and(|o| pods::is_pod(&o) && pods::bound_node(&o) == node)
}

/// Whether a pod bound to `node` in `namespace` reads the ConfigMap or
/// Secret (`kind`) named `name`, in this replica's cache: the pods on the
/// node are few, and only their specs are looked at.
pub fn read_by_bound_pod(
    store: &ObjectStore,
    kind: Kind,
    namespace: &str,
    name: &str,
    node: &str,
) -> bool {
    let namespace = if namespace.is_empty() {
        crate::writer::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    store.cache().pods_on_node(node).into_iter().any(|object| {
        if object.meta().namespace != namespace {
            return false;
        }
        let Some(pod) = pods::StoredPod::read(object) else {
            return false;
        };
        let Some(spec) = &pod.pod.spec else {
            return false;
        };
        let (config_maps, secrets) = pods::references(spec);
        match kind {
            Kind::ConfigMap => config_maps.iter().any(|n| n == name),
            Kind::Secret => secrets.iter().any(|n| n == name),
            Kind::PersistentVolumeClaim => pods::claim_names(spec).iter().any(|c| c == name),
            _ => false,
        }
    })
}

/// Whether node `node` may read the PersistentVolume `name`: one bound to
/// a claim that a pod bound to it uses, one pinned to it (a `local-path`
/// volume of its own), or one that does not exist (the answer is
/// NotFound: how an agent learns that a volume whose directory it holds
/// was deleted).
pub fn volume_readable_by_node(store: &ObjectStore, name: &str, node: &str) -> bool {
    let cache = store.cache();
    let Some(volume) = cache.get(Kind::PersistentVolume, "", name) else {
        return true;
    };
    if storage::VolumeView::read(&volume).is_some_and(|v| v.pinned_to(node)) {
        return true;
    }
    cache.pods_on_node(node).iter().any(|object| {
        let Some(facts) = pods::facts(object) else {
            return false;
        };
        let namespace = &object.meta().namespace;
        facts.claims.iter().any(|claim| {
            cache
                .get(Kind::PersistentVolumeClaim, namespace, claim)
                .and_then(|o| storage::ClaimView::read(&o))
                .is_some_and(|c| c.volume_name() == name)
        })
    })
}

/// What a node may not do to its own Node, though it may update it.
const OWN_NODE_SPEC: &str =
    "change its own Node's spec (podCIDR, taints, unschedulable are the cluster's)";

/// Whether node `node` may record an Event about the object of `kind`
/// (`Node` or `Pod`) named `namespace`/`name`: its own Node, or a pod
/// bound to it.
pub fn may_record_event(
    store: &ObjectStore,
    node: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> bool {
    match kind {
        "Node" => name == node,
        "Pod" => pod_bound_to(store, namespace, name, node),
        _ => false,
    }
}

/// Update or UpdateStatus of `object` (of `kind`, named `name`): the rules
/// ([`decide`]) on an `update` of the part written, or on what the REST
/// request it comes from was asked as (`requested`: a `patch`, an update
/// of `scale`), then what the write itself must keep: a node's Node spec
/// is the cluster's.
#[allow(clippy::too_many_arguments)]
pub fn may_update(
    store: &ObjectStore,
    identity: &Identity,
    object: &skiff_proto::api::Object,
    kind: Kind,
    namespace: &str,
    name: &str,
    status_only: bool,
    requested: Option<RequestedAs>,
) -> Result<(), Status> {
    let access = RequestedAs::access(requested, kind, namespace, name, status_only);
    authorize(store, identity, &access)?;
    let a_node = acting_node(identity).is_some();
    if a_node && kind == Kind::Node && !status_only && !same_node_spec(store, object, name) {
        return Err(denied(identity, OWN_NODE_SPEC));
    }
    Ok(())
}

/// ConfirmPodDeletion of pod `name` in `namespace` (the node's word that it
/// has stopped the pod and torn its sandbox down, which removes it): a
/// node only for pods bound to it, as the kubelet may only finish its own.
pub fn may_confirm_pod_deletion(
    store: &ObjectStore,
    identity: &Identity,
    namespace: &str,
    name: &str,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "confirm pod deletions")),
    };
    if pod_bound_to(store, namespace, name, node) {
        Ok(())
    } else {
        let action = format!("confirm deleting pod {namespace}/{name}, not bound to it");
        Err(denied(identity, &action))
    }
}

/// The node whose rules `identity` has, if any: a node's agent, or a user
/// acted as that is a node's (`system:node:<name>` in `system:nodes`), to
/// whom NodeRestriction's checks beyond the rules apply all the same.
fn acting_node(identity: &Identity) -> Option<String> {
    match Principal::of(identity) {
        Principal::Node(node) => Some(node),
        Principal::Privileged | Principal::Rbac(_) => None,
    }
}

/// The service accounts the pods bound to `node` in `namespace` (every
/// namespace for `""`; `default` when the pod names none) run as, sorted.
fn accounts_of_bound_pods(store: &ObjectStore, node: &str, namespace: &str) -> Vec<String> {
    let namespace = match namespace {
        "" => None,
        namespace => Some(namespace),
    };
    let mut names: Vec<String> = store
        .cache()
        .pods_on_node(node)
        .iter()
        .filter(|object| namespace.is_none_or(|ns| object.meta().namespace == ns))
        .filter_map(|object| pods::StoredPod::read(object.clone()))
        // A pod whose spec does not read names no account.
        .filter(|pod| pod.pod.spec.is_some())
        .map(|pod| pods::account_of(&pod.pod).to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A TokenRequest for service account `account` in `namespace`, bound to
/// `bound`, by `identity`, beyond the rules ([`decide`] on the `token`
/// subresource): what Kubernetes' NodeRestriction admission asks of a
/// node's, a token bound to a pod of the account that is bound to the node,
/// named with its uid.
pub fn may_request_token(
    store: &ObjectStore,
    identity: &Identity,
    namespace: &str,
    account: &str,
    bound: Option<&BoundObjectRef>,
) -> Result<(), Status> {
    let Some(node) = acting_node(identity) else {
        return Ok(());
    };
    let pod = match bound {
        Some(r) if r.kind == "Pod" && r.api_version == "v1" && !r.name.is_empty() => r,
        _ => return Err(denied(identity, "request a token not bound to a pod")),
    };
    if pod.uid.is_empty() {
        let action = "request a token bound to a pod without naming the pod's uid";
        return Err(denied(identity, action));
    }
    let stored = store.cache().get(Kind::Pod, namespace, &pod.name);
    let Some(stored) = stored.and_then(pods::StoredPod::read) else {
        let action = format!(
            "request a token bound to pod {namespace}/{}, which does not exist",
            pod.name
        );
        return Err(denied(identity, &action));
    };
    if stored.meta().uid != pod.uid {
        let action = format!(
            "request a token bound to pod {namespace}/{} with uid {}: the UID in the bound \
             object reference does not match the UID in record (the pod might have been deleted \
             and then recreated)",
            pod.name, pod.uid
        );
        return Err(denied(identity, &action));
    }
    if pods::node_name(&stored.pod) != node {
        let action = format!(
            "request a token bound to pod {namespace}/{}, scheduled on another node",
            pod.name
        );
        return Err(denied(identity, &action));
    }
    if pods::account_of(&stored.pod) != account {
        let action = format!(
            "request a token for service account {namespace}/{account} bound to pod {namespace}/{}, which runs as another",
            pod.name
        );
        return Err(denied(identity, &action));
    }
    Ok(())
}

/// Calls about the cluster rather than its objects (membership, the
/// datastore's snapshots), which only admins and masters may make. Masters
/// make them only to relay a call they have authorized already.
pub fn privileged(identity: &Identity, action: &str) -> Result<(), Status> {
    if identity.is_privileged() {
        Ok(())
    } else {
        Err(denied(identity, action))
    }
}

/// Calls a node makes about itself.
pub fn is_self(identity: &Identity, node: &str, action: &str) -> Result<(), Status> {
    match identity {
        i if i.is_privileged() => Ok(()),
        Identity::Node(n) if n == node => Ok(()),
        _ => Err(denied(identity, &format!("{action} for node {node:?}"))),
    }
}

/// One grant as a rules review lists it (Kubernetes' `ResourceRule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    /// Resources, and subresources as `pods/status`; `*` for all.
    pub resources: Vec<String>,
    /// Empty for every object.
    pub resource_names: Vec<String>,
}

/// One path grant as a rules review lists it (`NonResourceRule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    pub paths: Vec<String>,
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| (*i).to_owned()).collect()
}

/// Everything `identity` may do in `namespace` (`""`: cluster-wide rules
/// only), from the rules [`decide`] reads: what `kubectl auth can-i --list`
/// shows. The pods bound to a node are named as they are bound now; an
/// RBAC identity's rules are its bindings' roles' (ClusterRoleBindings',
/// and the namespace's RoleBindings').
pub fn rules_for(
    store: &ObjectStore,
    identity: &Identity,
    namespace: &str,
) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
    let principal = Principal::of(identity);
    let mut resource_rules = Vec::new();
    for rule in principal.rules() {
        let names = match (rule.scope, &principal) {
            (Scope::Any, _) => Vec::new(),
            (Scope::OwnNode, Principal::Node(node)) => vec![node.clone()],
            (Scope::BoundPods, Principal::Node(node)) => bound_pod_names(store, node, namespace),
            (Scope::ReadByBoundPods, Principal::Node(node)) => {
                names_read_by_bound_pods(store, node, namespace, rule.kinds)
            }
            (Scope::AccountsOfBoundPods, Principal::Node(node)) => {
                accounts_of_bound_pods(store, node, namespace)
            }
            _ => continue,
        };
        if rule.scope != Scope::Any && names.is_empty() {
            continue;
        }
        let verbs = match rule.verbs {
            Verbs::All => vec!["*".to_owned()],
            Verbs::Only(verbs) => verbs.iter().map(|v| v.name().to_owned()).collect(),
        };
        let Kinds::Only(kinds) = rule.kinds else {
            resource_rules.push(ResourceRule {
                verbs,
                api_groups: vec!["*".to_owned()],
                resources: vec!["*".to_owned()],
                resource_names: names,
            });
            continue;
        };
        // One listed rule per API group: a listed rule's groups and
        // resources combine freely.
        let mut groups: Vec<&'static str> = Vec::new();
        for kind in kinds {
            let group = registry::info(*kind).group;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        for group in groups {
            let resources = kinds
                .iter()
                .map(|k| registry::info(*k))
                .filter(|info| info.group == group)
                .flat_map(|info| resource_parts(info.resource, rule.parts))
                .collect();
            resource_rules.push(ResourceRule {
                verbs: verbs.clone(),
                api_groups: vec![group.to_owned()],
                resources,
                resource_names: names.clone(),
            });
        }
    }
    let mut non_resource_rules: Vec<NonResourceRule> = principal
        .path_rules()
        .map(|rule| NonResourceRule {
            verbs: owned(rule.verbs),
            paths: owned(rule.paths),
        })
        .collect();
    if let Principal::Rbac(user) = &principal {
        // Roles that cannot be found grant nothing; `authorize` names them
        // in its refusals.
        let (granted, _missing_roles) =
            rbac::rules_for(store.cache(), &user.username, &user.groups, namespace);
        for rule in granted {
            if !rule.resource_list().is_empty() {
                resource_rules.push(ResourceRule {
                    verbs: rule.verbs.clone(),
                    api_groups: rule.group_list().to_vec(),
                    resources: rule.resource_list().to_vec(),
                    resource_names: rule.name_list().to_vec(),
                });
            }
            if !rule.url_list().is_empty() {
                non_resource_rules.push(NonResourceRule {
                    verbs: rule.verbs,
                    paths: rule.non_resource_urls.unwrap_or_default(),
                });
            }
        }
    }
    (resource_rules, non_resource_rules)
}

/// `resource` and its subresources as rules name them (`pods/status`).
fn resource_parts(resource: &str, parts: Option<&[&str]>) -> Vec<String> {
    match parts {
        None => vec![resource.to_owned(), format!("{resource}/*")],
        Some(parts) => parts
            .iter()
            .map(|part| match *part {
                "" => resource.to_owned(),
                part => format!("{resource}/{part}"),
            })
            .collect(),
    }
}

/// The names of the pods bound to `node` in `namespace` (every namespace
/// for `""`), sorted.
fn bound_pod_names(store: &ObjectStore, node: &str, namespace: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .cache()
        .pods_on_node(node)
        .iter()
        .map(|pod| pod.meta())
        .filter(|meta| namespace.is_empty() || meta.namespace == namespace)
        .map(|meta| meta.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The names of the ConfigMaps and Secrets (as `kinds` has them) that the
/// pods bound to `node` in `namespace` (every namespace for `""`) read,
/// sorted.
fn names_read_by_bound_pods(
    store: &ObjectStore,
    node: &str,
    namespace: &str,
    kinds: Kinds,
) -> Vec<String> {
    let wanted = |kind: Kind| match kinds {
        Kinds::All => true,
        Kinds::Only(kinds) => kinds.contains(&kind),
    };
    let mut names = Vec::new();
    for object in store.cache().pods_on_node(node) {
        if !namespace.is_empty() && object.meta().namespace != namespace {
            continue;
        }
        let Some(pod) = pods::StoredPod::read(object) else {
            continue;
        };
        let Some(spec) = &pod.pod.spec else {
            continue;
        };
        let (config_maps, secrets) = pods::references(spec);
        if wanted(Kind::ConfigMap) {
            names.extend(config_maps);
        }
        if wanted(Kind::Secret) {
            names.extend(secrets);
        }
        if wanted(Kind::PersistentVolumeClaim) {
            names.extend(pods::claim_names(spec));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Who an identity is in Kubernetes' terms, named as k3s names its users:
/// what `kubectl auth whoami` shows, and the user RBAC authorizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesUser {
    pub username: String,
    pub groups: Vec<String>,
}

/// `identity` as a Kubernetes user: admins are `system:admin` in
/// `system:masters`, nodes `system:node:<name>` in `system:nodes`, service
/// accounts `system:serviceaccount:<namespace>:<name>` in
/// `system:serviceaccounts` and `system:serviceaccounts:<namespace>`; every
/// one in `system:authenticated`. A user acted as is its name and the
/// groups impersonation gave it, as they are.
pub fn kubernetes_user(identity: &Identity) -> KubernetesUser {
    let (username, mut groups) = match identity {
        Identity::Admin => ("system:admin".to_owned(), vec!["system:masters".to_owned()]),
        Identity::Node(name) => (
            format!("system:node:{name}"),
            vec!["system:nodes".to_owned()],
        ),
        Identity::Master(id) => (
            format!("system:skiff-master:{id}"),
            vec!["system:masters".to_owned()],
        ),
        Identity::ServiceAccount {
            namespace, name, ..
        } => (
            skiff_security::identity::service_account_user(namespace, name),
            vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        ),
        Identity::User { name, groups, .. } => {
            return KubernetesUser {
                username: name.clone(),
                groups: groups.clone(),
            };
        }
    };
    groups.push("system:authenticated".to_owned());
    KubernetesUser { username, groups }
}

/// A create or update (`verb`) of `object`, of RBAC's own kinds (`kind`:
/// Role, ClusterRole, RoleBinding, ClusterRoleBinding) in `namespace`, by
/// `identity`, who may write it: no one grants what they do not hold
/// (`api::rbac::escalation`). Admins and masters (`system:masters`) pass;
/// any other kind passes. A refusal is PermissionDenied in Kubernetes'
/// words, logged.
pub fn may_write_rbac(
    store: &ObjectStore,
    identity: &Identity,
    verb: Verb,
    kind: Kind,
    namespace: &str,
    object: &skiff_proto::api::Object,
) -> Result<(), Status> {
    let is_rbac = matches!(
        kind,
        Kind::Role | Kind::ClusterRole | Kind::RoleBinding | Kind::ClusterRoleBinding
    );
    if !is_rbac || identity.is_privileged() {
        return Ok(());
    }
    let user = kubernetes_user(identity);
    let namespace = crate::writer::namespace_for(kind, namespace);
    let cache = store.cache();
    let answer = match kind {
        Kind::Role | Kind::ClusterRole => {
            let previous = match verb {
                Verb::Update | Verb::Patch => cache.get(kind, &namespace, &object.meta().name),
                _ => None,
            };
            escalation::check_role_write(
                cache,
                &user.username,
                &user.groups,
                kind,
                &namespace,
                object,
                previous.as_deref(),
            )
        }
        _ => {
            escalation::check_binding_write(cache, &user.username, &user.groups, &namespace, object)
        }
    };
    answer.map_err(|refusal| {
        let action = format!(
            "{} {} {:?}: grant RBAC permissions not held",
            verb.name(),
            kind.plural(),
            object.meta().name
        );
        tracing::warn!(%identity, action, "permission denied");
        Status::permission_denied(refusal.to_string())
    })
}

/// Whether `object` (a Node) keeps the spec the stored Node `name` has.
/// An update based on an older version passes here: the store refuses it
/// as a conflict.
fn same_node_spec(store: &ObjectStore, object: &skiff_proto::api::Object, name: &str) -> bool {
    let stored = store.get(Kind::Node, "", name).ok().flatten();
    match (stored.and_then(|o| o.kind), &object.kind) {
        (Some(Body::Node(have)), Some(Body::Node(want))) => {
            let version = |n: &skiff_proto::v1::Node| {
                n.metadata
                    .as_ref()
                    .map(|m| m.resource_version.clone())
                    .unwrap_or_default()
            };
            let stale = !version(want).is_empty() && version(want) != version(&have);
            stale || have.spec.unwrap_or_default() == want.spec.clone().unwrap_or_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use skiff_proto::api::Object;
    use skiff_proto::v1;
    use skiff_security::TokenCredential;
    use tonic::Code;

    use super::*;
    use crate::store::Command;
    use skiff_objects::{IntoObject, ObjectExt};

    const N1_CIDR: &str = "10.42.1.0/24";
    const N2_CIDR: &str = "10.42.2.0/24";
    const OTHER_CIDR: &str = "10.42.9.0/24";

    /// What a node may not do to its own Node, in its refusal's words.
    const OWN_SPEC: &str = OWN_NODE_SPEC;

    fn meta(namespace: &str, name: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    /// A Node as stored, or as its agent sends it (at `resource_version`,
    /// when not empty).
    fn node(name: &str, pod_cidr: &str, resource_version: &str) -> Object {
        let mut metadata = meta("", name);
        if let Some(m) = metadata.as_mut() {
            m.resource_version = resource_version.into();
        }
        v1::Node {
            metadata,
            spec: Some(v1::NodeSpec {
                pod_cidr: pod_cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A pod in `default`, bound to `node` (none when empty).
    fn pod(name: &str, node: &str) -> Object {
        v1::Pod {
            metadata: meta("default", name),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn deployment(name: &str) -> Object {
        v1::Deployment {
            metadata: meta("default", name),
            ..Default::default()
        }
        .into_object()
    }

    fn create(object: &Object) -> Command {
        Command::Create {
            object: object.encode_to_vec(),
            uid: format!("uid-{}", object.meta().name),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// A store holding Nodes n1 (at resourceVersion 2) and n2 and, in
    /// `default`, pod `mine` bound to n1, `theirs` bound to n2 and `loose`
    /// bound to none.
    fn cluster() -> (tempfile::TempDir, Arc<ObjectStore>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = ObjectStore::open(dir.path()).expect("a store");
        let objects = [
            skiff_objects::namespaces::named("default", ""),
            node("n1", N1_CIDR, ""),
            node("n2", N2_CIDR, ""),
            pod("mine", "n1"),
            pod("theirs", "n2"),
            pod("loose", ""),
        ];
        let commands: Vec<Command> = objects.iter().map(create).collect();
        for result in store.apply_commands(commands) {
            result.expect("created");
        }
        (dir, store)
    }

    /// `may_update` as the API calls it: with the object's own kind,
    /// namespace and name.
    fn may_update_object(
        store: &ObjectStore,
        who: &Identity,
        object: &Object,
        status_only: bool,
    ) -> Result<(), Status> {
        let kind = object.kind().expect("an object with a kind");
        let meta = object.meta();
        may_update(
            store,
            who,
            object,
            kind,
            &meta.namespace,
            &meta.name,
            status_only,
            None,
        )
    }

    /// Checks one answer: allowed, or refused with PermissionDenied saying
    /// exactly the refusal expected.
    fn assert_answer(answer: Result<(), Status>, expected: Result<(), String>, case: &str) {
        match (answer, expected) {
            (Ok(()), Ok(())) => {}
            (Err(status), Err(refusal)) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{case}");
                assert_eq!(status.message(), refusal, "{case}");
            }
            (answer, expected) => panic!("{case}: answered {answer:?}, expected {expected:?}"),
        }
    }

    /// A refusal beyond the rules: `<who> may not <action>`.
    fn may_not(who: &Identity, action: &str) -> String {
        format!("{who} may not {action}")
    }

    /// kube-apiserver's refusal of the user `user` to `verb` the
    /// `resource` of API group `group` in `namespace`.
    fn cannot(user: &str, verb: &str, resource: &str, group: &str, namespace: &str) -> String {
        format!(
            r#"User "{user}" cannot {verb} resource "{resource}" in API group "{group}" in the namespace "{namespace}""#
        )
    }

    /// Node n1's user.
    const N1_USER: &str = "system:node:n1";

    #[test]
    fn the_identity_comes_only_from_the_verified_client_certificate() {
        let mut request = Request::new(());
        // Not through the TLS listener at all.
        let refused = identity(&request).expect_err("no peer");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(
            refused.message(),
            "a client certificate signed by the cluster CA is required"
        );
        // A TLS peer without a client certificate.
        let remote = "192.0.2.7:40000".parse().expect("an address");
        request.extensions_mut().insert(PeerInfo {
            remote,
            identity: None,
        });
        let refused = identity(&request).expect_err("no certificate");
        assert_eq!(refused.code(), Code::Unauthenticated);
        // A verified certificate.
        let n1 = Identity::Node("n1".into());
        request.extensions_mut().insert(PeerInfo {
            remote,
            identity: Some(n1.clone()),
        });
        assert_eq!(identity(&request).expect("an identity"), n1);
    }

    /// `verb` on `kind` in `default` (outside namespaces for a
    /// cluster-scoped kind; on `name` when given), as a call is authorized.
    fn call(
        store: &ObjectStore,
        who: &Identity,
        verb: Verb,
        kind: Kind,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let namespace = if kind.namespaced() { "default" } else { "" };
        authorize(store, who, &Access::new(verb, kind, namespace, name))
    }

    #[test]
    fn admins_and_masters_may_do_everything() {
        let (_dir, store) = cluster();
        let objects = [
            node("n1", OTHER_CIDR, ""),
            pod("mine", "n1"),
            pod("theirs", "n2"),
            deployment("web"),
        ];
        for who in [Identity::Admin, Identity::Master("1".into())] {
            for kind in Kind::ALL {
                for verb in Verb::ALL {
                    for name in [None, Some("theirs")] {
                        let answer = call(&store, &who, verb, kind, name);
                        assert!(answer.is_ok(), "{who} {verb:?} {kind} {name:?}");
                    }
                }
                let log = Access::new(Verb::Get, kind, "default", Some("theirs"));
                let decision = decide(&store, &who, &log.with_subresource("log"));
                assert!(decision.allowed, "{who} reading the log of {kind}");
                assert_eq!(decision.reason, "admins and masters may do everything");
            }
            for object in &objects {
                for status_only in [false, true] {
                    let answer = may_update_object(&store, &who, object, status_only);
                    assert!(answer.is_ok(), "{who} updating {object:?}");
                }
            }
            assert!(privileged(&who, "add cluster members").is_ok());
            assert!(is_self(&who, "n2", "register").is_ok());
        }
    }

    #[test]
    fn a_node_reads_nodes_services_endpoints_and_only_its_own_pods() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let core = |verb: &str, resource: &str| Err(cannot(N1_USER, verb, resource, "", "default"));
        let apps =
            |verb: &str, resource: &str| Err(cannot(N1_USER, verb, resource, "apps", "default"));
        let cases = [
            // What the overlay and the Service rules need.
            (Verb::List, Kind::Node, None, Ok(())),
            (Verb::Watch, Kind::Node, None, Ok(())),
            (Verb::Get, Kind::Node, Some("n2"), Ok(())),
            (Verb::List, Kind::Service, None, Ok(())),
            (Verb::Watch, Kind::Service, None, Ok(())),
            (Verb::Get, Kind::Service, Some("web"), Ok(())),
            (Verb::List, Kind::Endpoints, None, Ok(())),
            (Verb::Get, Kind::Endpoints, Some("web"), Ok(())),
            // Pods bound to it, one by one.
            (Verb::Get, Kind::Pod, Some("mine"), Ok(())),
            (Verb::Get, Kind::Pod, Some("theirs"), core("get", "pods")),
            (Verb::Get, Kind::Pod, Some("loose"), core("get", "pods")),
            (Verb::Get, Kind::Pod, Some("gone"), core("get", "pods")),
            (Verb::List, Kind::Pod, None, core("list", "pods")),
            (Verb::Watch, Kind::Pod, None, core("watch", "pods")),
            // Nothing else.
            (Verb::Get, Kind::Secret, Some("token"), core("get", "secrets")),
            (Verb::List, Kind::Secret, None, core("list", "secrets")),
            (
                Verb::Watch,
                Kind::Namespace,
                None,
                Err(r#"User "system:node:n1" cannot watch resource "namespaces" in API group "" at the cluster scope"#.to_owned()),
            ),
            (Verb::List, Kind::Deployment, None, apps("list", "deployments")),
            (Verb::List, Kind::ReplicaSet, None, apps("list", "replicasets")),
        ];
        for (verb, kind, name, expected) in cases {
            let answer = call(&store, &n1, verb, kind, name);
            assert_answer(answer, expected, &format!("{verb:?} {kind} {name:?}"));
        }
    }

    #[test]
    fn a_node_creates_and_deletes_nothing_and_reads_no_logs() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let pods = |verb: &str| cannot(N1_USER, verb, "pods", "", "default");
        let nodes = |verb: &str| {
            format!(
                r#"User "system:node:n1" cannot {verb} resource "nodes" in API group "" at the cluster scope"#
            )
        };
        let cases = [
            (Verb::Create, Kind::Pod, None, pods("create")),
            (Verb::Create, Kind::Node, None, nodes("create")),
            (Verb::Delete, Kind::Pod, Some("mine"), pods("delete")),
            (Verb::Delete, Kind::Node, Some("n1"), nodes("delete")),
            (
                Verb::DeleteCollection,
                Kind::Pod,
                None,
                pods("deletecollection"),
            ),
        ];
        for (verb, kind, name, refusal) in cases {
            let answer = call(&store, &n1, verb, kind, name);
            let case = format!("{verb:?} {kind} {name:?}");
            assert_answer(answer, Err(refusal), &case);
        }
        // Not even of the pods bound to it.
        let log = Access::new(Verb::Get, Kind::Pod, "default", Some("mine"));
        let answer = authorize(&store, &n1, &log.with_subresource("log"));
        let refusal = cannot(N1_USER, "get", "pods/log", "", "default");
        assert_answer(answer, Err(refusal), "log");
    }

    #[test]
    fn exec_and_port_forward_are_for_admins_and_never_for_nodes() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        for part in ["exec", "attach", "portforward"] {
            let session = Access::new(Verb::Create, Kind::Pod, "default", Some("mine"))
                .with_subresource(part);
            assert!(
                authorize(&store, &Identity::Admin, &session).is_ok(),
                "{part}"
            );
            // Not even into the pods bound to it.
            let answer = authorize(&store, &n1, &session);
            let refusal = cannot(N1_USER, "create", &format!("pods/{part}"), "", "default");
            assert_answer(answer, Err(refusal), part);
        }
    }

    #[test]
    fn a_node_updates_only_its_own_node_and_the_status_of_its_own_pods() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let own_spec: Result<(), String> = Err(may_not(&n1, OWN_SPEC));
        let nodes = |resource: &str| {
            Err(format!(
                r#"User "system:node:n1" cannot update resource "{resource}" in API group "" at the cluster scope"#
            ))
        };
        let pods = |resource: &str| Err(cannot(N1_USER, "update", resource, "", "default"));
        let deployments =
            |resource: &str| Err(cannot(N1_USER, "update", resource, "apps", "default"));
        let cases = [
            // Its own Node, but not the Node's spec.
            (node("n1", N1_CIDR, ""), false, Ok(())),
            (node("n1", N1_CIDR, "2"), false, Ok(())),
            (node("n1", OTHER_CIDR, ""), false, own_spec.clone()),
            (node("n1", OTHER_CIDR, "2"), false, own_spec),
            (node("n1", OTHER_CIDR, ""), true, Ok(())),
            // Based on an older version: let through for the store to
            // refuse as a conflict, which says more.
            (node("n1", OTHER_CIDR, "1"), false, Ok(())),
            // Another node's Node.
            (node("n2", N2_CIDR, ""), false, nodes("nodes")),
            (node("n2", N2_CIDR, ""), true, nodes("nodes/status")),
            // The status of pods bound to it, and nothing more of them. The
            // stored binding counts, not the one the node sends.
            (pod("mine", "n1"), true, Ok(())),
            (pod("mine", "n1"), false, pods("pods")),
            (pod("theirs", "n1"), true, pods("pods/status")),
            (pod("loose", "n1"), true, pods("pods/status")),
            (pod("gone", "n1"), true, pods("pods/status")),
            // Nothing else.
            (deployment("web"), false, deployments("deployments")),
            (deployment("web"), true, deployments("deployments/status")),
        ];
        for (object, status_only, expected) in cases {
            let answer = may_update_object(&store, &n1, &object, status_only);
            let case = format!("{} (status only: {status_only})", object.display_name());
            assert_answer(answer, expected, &case);
        }
        // A Node it has not registered has no spec to keep, so any spec is
        // a change (the store would refuse the update as NotFound anyway).
        let n3 = Identity::Node("n3".into());
        let unregistered = node("n3", OTHER_CIDR, "");
        let answer = may_update_object(&store, &n3, &unregistered, false);
        assert_answer(answer, Err(may_not(&n3, OWN_SPEC)), "unregistered Node");
    }

    #[test]
    fn only_admins_and_masters_may_change_the_cluster_itself() {
        let n1 = Identity::Node("n1".into());
        let actions = [
            "add cluster members",
            "save datastore snapshots",
            "remove cluster members",
        ];
        for action in actions {
            assert_answer(privileged(&n1, action), Err(may_not(&n1, action)), action);
            assert!(privileged(&Identity::Admin, action).is_ok());
            assert!(privileged(&Identity::Master("1".into()), action).is_ok());
        }
    }

    #[test]
    fn a_node_makes_calls_only_about_itself() {
        let n1 = Identity::Node("n1".into());
        let answer = is_self(&n1, "n1", "send heartbeats");
        assert_answer(answer, Ok(()), "its own heartbeats");
        let answer = is_self(&n1, "n2", "send heartbeats");
        let expected = Err(may_not(&n1, r#"send heartbeats for node "n2""#));
        assert_answer(answer, expected, "another node's heartbeats");
    }

    #[test]
    fn a_node_records_events_only_about_its_node_and_its_own_pods() {
        let (_dir, store) = cluster();
        let cases = [
            ("Node", "", "n1", true),
            ("Node", "", "n2", false),
            ("Pod", "default", "mine", true),
            ("Pod", "", "mine", true),
            ("Pod", "default", "theirs", false),
            ("Pod", "default", "loose", false),
            ("Pod", "default", "gone", false),
            ("Deployment", "default", "web", false),
            ("Secret", "default", "mine", false),
        ];
        for (kind, namespace, name, allowed) in cases {
            let answer = may_record_event(&store, "n1", kind, namespace, name);
            assert_eq!(answer, allowed, "{kind} {namespace}/{name}");
        }
    }

    #[test]
    fn a_node_confirms_the_deletion_of_its_own_pods_only() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let answer = may_confirm_pod_deletion(&store, &n1, "default", "mine");
        assert_answer(answer, Ok(()), "mine");
        // Another node's, an unbound one, one that is not there.
        for name in ["theirs", "loose", "gone"] {
            let answer = may_confirm_pod_deletion(&store, &n1, "default", name);
            let refused = format!("confirm deleting pod default/{name}, not bound to it");
            assert_answer(answer, Err(may_not(&n1, &refused)), name);
        }
        for who in [Identity::Admin, Identity::Master("1".into())] {
            let answer = may_confirm_pod_deletion(&store, &who, "default", "theirs");
            assert!(answer.is_ok(), "{who}");
        }
    }

    #[test]
    fn a_pod_is_bound_to_the_node_its_stored_spec_names() {
        let (_dir, store) = cluster();
        assert!(pod_bound_to(&store, "default", "mine", "n1"));
        assert!(pod_bound_to(&store, "", "mine", "n1"), "default namespace");
        assert!(!pod_bound_to(&store, "default", "mine", "n2"));
        assert!(!pod_bound_to(&store, "default", "theirs", "n1"));
        assert!(!pod_bound_to(&store, "default", "loose", "n1"));
        assert!(!pod_bound_to(&store, "default", "gone", "n1"));
        assert!(!pod_bound_to(&store, "kube-system", "mine", "n1"));
    }

    const REVIEWS: [Kind; 3] = [
        Kind::SelfSubjectAccessReview,
        Kind::SelfSubjectRulesReview,
        Kind::SelfSubjectReview,
    ];

    #[test]
    fn everyone_may_review_its_own_access_and_nothing_more_of_the_reviews() {
        let (_dir, store) = cluster();
        let everyone = "everyone may review its own access";
        let privileged = "admins and masters may do everything";
        let who = [
            (Identity::Admin, privileged),
            (Identity::Master("1".into()), privileged),
            (Identity::Node("n1".into()), everyone),
        ];
        for (who, reason) in who {
            for kind in REVIEWS {
                let create = Access::new(Verb::Create, kind, "", None);
                let decision = decide(&store, &who, &create);
                assert_eq!(decision.reason, reason, "{who} creating {kind}");
                assert!(decision.allowed, "{who} creating {kind}");
            }
        }
        let n1 = Identity::Node("n1".into());
        let list = Access::new(Verb::List, Kind::SelfSubjectAccessReview, "", None);
        assert_eq!(
            decide(&store, &n1, &list),
            Decision {
                allowed: false,
                reason: "node:n1 may not list selfsubjectaccessreviews".into(),
            }
        );
    }

    #[test]
    fn paths_that_name_no_object_are_discovery_for_everyone_and_all_for_admins() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        for path in [
            "/version",
            "/api",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v2",
        ] {
            let decision = decide_path(&store, &n1, "get", path);
            assert!(decision.allowed, "{path}: {decision:?}");
            let reason = "everyone may read discovery, the version and health";
            assert_eq!(decision.reason, reason);
        }
        let refusals = [
            ("get", "/metrics", "node:n1 may not get /metrics"),
            ("get", "/apix", "node:n1 may not get /apix"),
            ("post", "/api", "node:n1 may not post /api"),
        ];
        for (verb, path, refusal) in refusals {
            let decision = decide_path(&store, &n1, verb, path);
            assert!(!decision.allowed, "{verb} {path}");
            assert_eq!(decision.reason, refusal);
        }
        for who in [Identity::Admin, Identity::Master("2".into())] {
            assert!(
                decide_path(&store, &who, "post", "/metrics").allowed,
                "{who}"
            );
            assert!(
                decide_path(&store, &who, "get", "/version").allowed,
                "{who}"
            );
        }
    }

    /// The review rules every identity has.
    fn review_rules() -> [ResourceRule; 2] {
        [
            ResourceRule {
                verbs: vec!["create".into()],
                api_groups: vec!["authorization.k8s.io".into()],
                resources: vec![
                    "selfsubjectaccessreviews".into(),
                    "selfsubjectrulesreviews".into(),
                ],
                resource_names: vec![],
            },
            ResourceRule {
                verbs: vec!["create".into()],
                api_groups: vec!["authentication.k8s.io".into()],
                resources: vec!["selfsubjectreviews".into()],
                resource_names: vec![],
            },
        ]
    }

    /// The path rules every identity has: discovery, and the service
    /// account issuer's documents.
    fn everyone_paths() -> Vec<NonResourceRule> {
        EVERYONE_PATHS
            .iter()
            .map(|rule| NonResourceRule {
                verbs: vec!["get".into()],
                paths: owned(rule.paths),
            })
            .collect()
    }

    fn discovery_paths() -> NonResourceRule {
        NonResourceRule {
            verbs: vec!["get".into()],
            paths: owned(EVERYONE_PATHS[0].paths),
        }
    }

    #[test]
    fn an_admin_is_listed_every_verb_on_everything() {
        let (_dir, store) = cluster();
        let (resources, paths) = rules_for(&store, &Identity::Admin, "default");
        let everything = ResourceRule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            resource_names: vec![],
        };
        let [access, whoami] = review_rules();
        assert_eq!(resources, [everything, access, whoami]);
        let all_paths = NonResourceRule {
            verbs: vec!["*".into()],
            paths: vec!["*".into()],
        };
        let mut expected = vec![all_paths];
        expected.extend(everyone_paths());
        assert_eq!(paths, expected);
    }

    #[test]
    fn a_node_is_listed_its_reads_its_own_node_and_the_pods_bound_to_it() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let core = |verbs: &[&str], resources: &[&str], names: &[&str]| ResourceRule {
            verbs: owned(verbs),
            api_groups: vec![String::new()],
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        };
        let reads = core(
            &["get", "list", "watch"],
            &[
                "nodes",
                "nodes/status",
                "services",
                "services/status",
                "endpoints",
                "endpoints/status",
            ],
            &[],
        );
        let own_node = core(&["update", "patch"], &["nodes", "nodes/status"], &["n1"]);
        let [access, whoami] = review_rules();
        let (resources, paths) = rules_for(&store, &n1, "default");
        let expected = [
            reads.clone(),
            core(&["get"], &["pods", "pods/status"], &["mine"]),
            own_node.clone(),
            core(&["update", "patch"], &["pods/status"], &["mine"]),
            // Pod `mine` names no service account: it runs as `default`.
            core(&["create"], &["serviceaccounts/token"], &["default"]),
            access.clone(),
            whoami.clone(),
        ];
        assert_eq!(resources, expected);
        assert_eq!(paths, everyone_paths());
        // No pod of n1's in kube-system: no rules about pods there.
        let (resources, _) = rules_for(&store, &n1, "kube-system");
        assert_eq!(resources, [reads, own_node, access, whoami]);
        // Every listed rule is one `decide` grants.
        let get_mine = Access::new(Verb::Get, Kind::Pod, "default", Some("mine"));
        assert!(decide(&store, &n1, &get_mine).allowed);
        let patch_own = Access::new(Verb::Patch, Kind::Node, "", Some("n1"));
        assert!(decide(&store, &n1, &patch_own.with_subresource("status")).allowed);
    }

    /// A pod in `default` bound to `node` that reads ConfigMap `config`
    /// (through a volume), Secret `secret` (through env) and Secret
    /// `<secret>-pull` (its imagePullSecrets).
    fn pod_reading(name: &str, node: &str, config: &str, secret: &str) -> Object {
        let password = v1::EnvVar {
            name: "PASSWORD".into(),
            value_from: Some(v1::EnvVarSource {
                secret_key_ref: Some(v1::SecretKeySelector {
                    name: secret.into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let volume = v1::Volume {
            name: "config".into(),
            config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                name: config.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        v1::Pod {
            metadata: meta("default", name),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                containers: vec![v1::Container {
                    name: "c".into(),
                    env: vec![password],
                    ..Default::default()
                }],
                volumes: vec![volume],
                image_pull_secrets: vec![v1::LocalObjectReference {
                    name: format!("{secret}-pull"),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A generic object of `kind` named `name` in `namespace` with `fields`.
    fn storage_object(
        kind: &str,
        namespace: &str,
        name: &str,
        fields: serde_json::Value,
    ) -> Object {
        v1::GenericObject {
            api_version: "v1".into(),
            kind: kind.into(),
            metadata: meta(namespace, name),
            content: serde_json::to_vec(&fields).expect("JSON"),
        }
        .into_object()
    }

    #[test]
    fn a_node_reads_the_claims_its_pods_use_and_their_volumes_and_its_own() {
        let (_dir, store) = cluster();
        let claimer = v1::Pod {
            metadata: meta("default", "claimer"),
            spec: Some(v1::PodSpec {
                node_name: "n1".into(),
                volumes: vec![v1::Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(Box::new(
                        v1::PersistentVolumeClaimVolumeSource {
                            claim_name: "data".into(),
                            read_only: false,
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        let pinned = serde_json::json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}
        ]}}}});
        let more = [
            claimer,
            storage_object(
                "PersistentVolumeClaim",
                "default",
                "data",
                serde_json::json!({"spec": {"volumeName": "pv-data"}}),
            ),
            storage_object(
                "PersistentVolumeClaim",
                "default",
                "else",
                serde_json::json!({}),
            ),
            storage_object("PersistentVolume", "", "pv-data", serde_json::json!({})),
            storage_object("PersistentVolume", "", "pinned", pinned),
            storage_object("PersistentVolume", "", "other", serde_json::json!({})),
        ];
        for result in store.apply_commands(more.iter().map(create).collect()) {
            result.expect("created");
        }
        let get = |node: &str, kind: Kind, namespace: &str, name: &str| {
            let who = Identity::Node(node.into());
            authorize(
                &store,
                &who,
                &Access::new(Verb::Get, kind, namespace, Some(name)),
            )
            .is_ok()
        };
        let claim = Kind::PersistentVolumeClaim;
        let volume = Kind::PersistentVolume;
        assert!(get("n1", claim, "default", "data"));
        assert!(!get("n1", claim, "default", "else"), "no pod of n1 uses it");
        assert!(!get("n2", claim, "default", "data"), "not n2's pod");
        assert!(
            get("n1", volume, "", "pv-data"),
            "bound to a claim n1's pod uses"
        );
        assert!(get("n1", volume, "", "pinned"), "pinned to n1");
        assert!(!get("n1", volume, "", "other"));
        assert!(!get("n2", volume, "", "pv-data"));
        assert!(!get("n2", volume, "", "pinned"));
        assert!(get("n2", volume, "", "deleted"), "answered NotFound");
        let list = Access::new(Verb::List, volume, "", None);
        assert!(authorize(&store, &Identity::Node("n1".into()), &list).is_err());
    }

    #[test]
    fn a_node_reads_only_the_config_maps_and_secrets_its_own_pods_read() {
        let (_dir, store) = cluster();
        let more = [
            pod_reading("app", "n1", "app-config", "app-secret"),
            pod_reading("other", "n2", "other-config", "other-secret"),
        ];
        for result in store.apply_commands(more.iter().map(create).collect()) {
            result.expect("created");
        }
        let n1 = Identity::Node("n1".into());
        let get =
            |resource: &str, namespace: &str| Err(cannot(N1_USER, "get", resource, "", namespace));
        let cases = [
            (Kind::ConfigMap, "default", "app-config", Ok(())),
            (Kind::Secret, "default", "app-secret", Ok(())),
            (Kind::Secret, "default", "app-secret-pull", Ok(())),
            (Kind::ConfigMap, "", "app-config", Ok(())),
            // A ConfigMap's name is not a Secret's, nor the other way round.
            (
                Kind::Secret,
                "default",
                "app-config",
                get("secrets", "default"),
            ),
            (
                Kind::ConfigMap,
                "default",
                "app-secret",
                get("configmaps", "default"),
            ),
            // Those of another node's pods.
            (
                Kind::ConfigMap,
                "default",
                "other-config",
                get("configmaps", "default"),
            ),
            (
                Kind::Secret,
                "default",
                "other-secret",
                get("secrets", "default"),
            ),
            (
                Kind::Secret,
                "default",
                "other-secret-pull",
                get("secrets", "default"),
            ),
            // The same name in another namespace.
            (
                Kind::ConfigMap,
                "kube-system",
                "app-config",
                get("configmaps", "kube-system"),
            ),
        ];
        for (kind, namespace, name, expected) in cases {
            let access = Access::new(Verb::Get, kind, namespace, Some(name));
            let answer = authorize(&store, &n1, &access);
            assert_answer(answer, expected, &format!("{kind} {namespace}/{name}"));
        }
        // One by one only, and never written.
        let refusals = [
            (Verb::List, None),
            (Verb::Watch, None),
            (Verb::Update, Some("app-config")),
            (Verb::Delete, Some("app-config")),
        ];
        for (verb, name) in refusals {
            let answer = call(&store, &n1, verb, Kind::ConfigMap, name);
            let refusal = cannot(N1_USER, verb.name(), "configmaps", "", "default");
            assert_answer(answer, Err(refusal), verb.name());
        }
        // `can-i --list` names them.
        let (resources, _) = rules_for(&store, &n1, "default");
        let get = |resource: &str, name: &str| ResourceRule {
            verbs: vec!["get".into()],
            api_groups: vec![String::new()],
            resources: vec![resource.to_owned()],
            resource_names: vec![name.to_owned()],
        };
        assert!(
            resources.contains(&get("configmaps", "app-config")),
            "{resources:?}"
        );
        let secrets = ResourceRule {
            resource_names: vec!["app-secret".to_owned(), "app-secret-pull".to_owned()],
            ..get("secrets", "")
        };
        assert!(resources.contains(&secrets), "{resources:?}");
    }

    #[test]
    fn identities_are_the_users_k3s_names() {
        let user = |username: &str, groups: &[&str]| KubernetesUser {
            username: username.to_owned(),
            groups: owned(groups),
        };
        assert_eq!(
            kubernetes_user(&Identity::Admin),
            user("system:admin", &["system:masters", "system:authenticated"])
        );
        assert_eq!(
            kubernetes_user(&Identity::Node("pi-1".into())),
            user(
                "system:node:pi-1",
                &["system:nodes", "system:authenticated"]
            )
        );
        assert_eq!(
            kubernetes_user(&Identity::Master("3".into())),
            user(
                "system:skiff-master:3",
                &["system:masters", "system:authenticated"]
            )
        );
        let builder = Identity::ServiceAccount {
            namespace: "shop".into(),
            name: "builder".into(),
            uid: "6f1c".into(),
            credential: TokenCredential::default(),
        };
        assert_eq!(
            kubernetes_user(&builder),
            user(
                "system:serviceaccount:shop:builder",
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:shop",
                    "system:authenticated",
                ]
            )
        );
    }

    fn default_account() -> Identity {
        Identity::ServiceAccount {
            namespace: "default".into(),
            name: "default".into(),
            uid: "sa-1".into(),
            credential: TokenCredential::default(),
        }
    }

    #[test]
    fn a_service_account_without_bindings_may_do_what_everyone_may_and_nothing_more() {
        let (_dir, store) = cluster();
        let account = default_account();
        let user = "system:serviceaccount:default:default";
        let cases = [
            (Verb::List, Kind::Pod, None, "pods", ""),
            (Verb::Get, Kind::Pod, Some("mine"), "pods", ""),
            (Verb::Get, Kind::Secret, Some("token"), "secrets", ""),
            (Verb::Create, Kind::Deployment, None, "deployments", "apps"),
            (
                Verb::List,
                Kind::ServiceAccount,
                None,
                "serviceaccounts",
                "",
            ),
        ];
        for (verb, kind, name, resource, group) in cases {
            let answer = call(&store, &account, verb, kind, name);
            let refusal = cannot(user, verb.name(), resource, group, "default");
            assert_answer(answer, Err(refusal), &format!("{verb:?} {kind} {name:?}"));
        }
        // Not even a token of its own.
        let token = Access::new(
            Verb::Create,
            Kind::ServiceAccount,
            "default",
            Some("default"),
        )
        .with_subresource("token");
        let answer = authorize(&store, &account, &token);
        let refusal = cannot(user, "create", "serviceaccounts/token", "", "default");
        assert_answer(answer, Err(refusal), "its own token");
        for kind in REVIEWS {
            assert!(decide(&store, &account, &Access::new(Verb::Create, kind, "", None)).allowed);
        }
        for path in [
            "/apis",
            "/version",
            "/.well-known/openid-configuration",
            "/openid/v1/jwks",
        ] {
            assert!(decide_path(&store, &account, "get", path).allowed, "{path}");
        }
        assert_eq!(
            decide_path(&store, &account, "get", "/metrics").reason,
            "RBAC: no rules authorize user \"system:serviceaccount:default:default\" with groups \
             [\"system:serviceaccounts\" \"system:serviceaccounts:default\" \"system:authenticated\"] \
             to \"get\" nonResourceURL \"/metrics\" cluster-wide"
        );
        let (resources, paths) = rules_for(&store, &account, "default");
        assert_eq!(resources, review_rules());
        assert_eq!(paths, everyone_paths());
    }

    /// A pod in `namespace` bound to `node` running as `account`.
    fn pod_running_as(namespace: &str, name: &str, node: &str, account: &str) -> Object {
        v1::Pod {
            metadata: meta(namespace, name),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                service_account_name: account.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn a_node_requests_tokens_only_for_the_accounts_of_its_own_pods() {
        let (_dir, store) = cluster();
        let more = [
            pod_running_as("default", "builder-0", "n1", "builder"),
            pod_running_as("default", "deployer-0", "n2", "deployer"),
        ];
        for result in store.apply_commands(more.iter().map(create).collect()) {
            result.expect("created");
        }
        let n1 = Identity::Node("n1".into());
        let token = |namespace: &'static str, account: &'static str| {
            Access::new(Verb::Create, Kind::ServiceAccount, namespace, Some(account))
                .with_subresource("token")
        };
        // `mine` runs as default, `builder-0` as builder: both bound to n1.
        for account in ["default", "builder"] {
            assert!(
                authorize(&store, &n1, &token("default", account)).is_ok(),
                "{account}"
            );
        }
        assert!(
            authorize(&store, &n1, &token("", "builder")).is_ok(),
            "the default namespace"
        );
        let tokens_in =
            |namespace: &str| cannot(N1_USER, "create", "serviceaccounts/token", "", namespace);
        let refusals = [
            (token("default", "deployer"), tokens_in("default")),
            (token("kube-system", "default"), tokens_in("kube-system")),
        ];
        for (access, refusal) in refusals {
            let case = format!("{access:?}");
            assert_answer(authorize(&store, &n1, &access), Err(refusal), &case);
        }
        // Reading or changing the accounts is another matter.
        let read = Access::new(Verb::Get, Kind::ServiceAccount, "default", Some("builder"));
        assert!(authorize(&store, &n1, &read).is_err());
        let (resources, _) = rules_for(&store, &n1, "default");
        let tokens = ResourceRule {
            verbs: vec!["create".into()],
            api_groups: vec!["".into()],
            resources: vec!["serviceaccounts/token".into()],
            resource_names: vec!["builder".into(), "default".into()],
        };
        assert!(resources.contains(&tokens), "{resources:?}");
    }

    #[test]
    fn a_node_s_token_is_bound_to_a_pod_of_its_own_by_name_and_uid_as_node_restriction_asks() {
        let (_dir, store) = cluster();
        let more = [pod_running_as("default", "builder-0", "n1", "builder")];
        for result in store.apply_commands(more.iter().map(create).collect()) {
            result.expect("created");
        }
        let n1 = Identity::Node("n1".into());
        let bound = |name: &str, uid: &str| BoundObjectRef {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: name.into(),
            uid: uid.into(),
        };
        let ask = |account: &str, reference: Option<BoundObjectRef>| {
            may_request_token(&store, &n1, "default", account, reference.as_ref())
        };
        // The `create` helper gives each object the uid `uid-<name>`.
        assert!(ask("builder", Some(bound("builder-0", "uid-builder-0"))).is_ok());
        assert!(ask("default", Some(bound("mine", "uid-mine"))).is_ok());
        let not_bound = "request a token not bound to a pod";
        let secret = BoundObjectRef {
            kind: "Secret".into(),
            ..bound("builder-0", "uid-builder-0")
        };
        let refusals = [
            (ask("builder", None), not_bound.to_owned()),
            (ask("builder", Some(secret)), not_bound.to_owned()),
            (
                ask("builder", Some(bound("builder-0", ""))),
                "request a token bound to a pod without naming the pod's uid".to_owned(),
            ),
            (
                ask("builder", Some(bound("gone", "uid-gone"))),
                "request a token bound to pod default/gone, which does not exist".to_owned(),
            ),
            (
                ask("default", Some(bound("theirs", "uid-theirs"))),
                "request a token bound to pod default/theirs, scheduled on another node".to_owned(),
            ),
            (
                ask("default", Some(bound("builder-0", "uid-builder-0"))),
                "request a token for service account default/default bound to pod \
                 default/builder-0, which runs as another"
                    .to_owned(),
            ),
        ];
        for (answer, refusal) in refusals {
            assert_answer(answer, Err(may_not(&n1, &refusal)), &refusal);
        }
        let replaced = ask("builder", Some(bound("builder-0", "uid-old")));
        let refused = replaced.expect_err("another uid");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            refused
                .message()
                .contains("does not match the UID in record"),
            "{refused:?}"
        );
        // Admins are not held to it.
        assert!(may_request_token(&store, &Identity::Admin, "default", "builder", None).is_ok());
    }

    const ROBOT_USER: &str = "system:serviceaccount:team:robot";

    fn robot() -> Identity {
        Identity::ServiceAccount {
            namespace: "team".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            credential: TokenCredential::default(),
        }
    }

    /// `cluster()` with RBAC: Role `pod-reader` in `team` (read pods)
    /// bound to the service account `robot`, and the default
    /// `system:discovery` ClusterRole and binding.
    fn cluster_with_rbac() -> (tempfile::TempDir, Arc<ObjectStore>) {
        use crate::api::rbac::tests::{binding, rbac_object};
        let (dir, store) = cluster();
        let reader = rbac_object(
            "Role",
            "team",
            "pod-reader",
            serde_json::json!({"rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
            ]}),
        );
        let bound = binding(
            "RoleBinding",
            "team",
            "robot-pods",
            ("Role", "pod-reader"),
            serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
        );
        let defaults = skiff_objects::rbac::bootstrap_policy::cluster_roles()
            .into_iter()
            .chain(skiff_objects::rbac::bootstrap_policy::cluster_role_bindings())
            .filter(|o| o.meta().name == "system:discovery");
        let team = skiff_objects::namespaces::named("team", "");
        let objects: Vec<Object> = [team, reader, bound].into_iter().chain(defaults).collect();
        for result in store.apply_commands(objects.iter().map(create).collect()) {
            result.expect("created");
        }
        (dir, store)
    }

    #[test]
    fn a_service_account_may_do_what_its_bindings_grant_and_no_more() {
        let (_dir, store) = cluster_with_rbac();
        let robot = robot();
        let list = Access::new(Verb::List, Kind::Pod, "team", None);
        assert_eq!(
            decide(&store, &robot, &list),
            Decision {
                allowed: true,
                reason: r#"RBAC: allowed by RoleBinding "robot-pods/team" of Role "pod-reader" to ServiceAccount "robot/team""#.into(),
            }
        );
        let log = Access::new(Verb::Get, Kind::Pod, "team", Some("web")).with_subresource("log");
        assert!(decide(&store, &robot, &log).allowed);
        let refused = [
            (
                Access::new(Verb::List, Kind::Pod, "default", None),
                cannot(ROBOT_USER, "list", "pods", "", "default"),
            ),
            (
                Access::new(Verb::Delete, Kind::Pod, "team", Some("web")),
                cannot(ROBOT_USER, "delete", "pods", "", "team"),
            ),
            (
                Access::new(Verb::Get, Kind::Secret, "team", Some("token")),
                cannot(ROBOT_USER, "get", "secrets", "", "team"),
            ),
            (
                Access::new(Verb::Get, Kind::Pod, "team", Some("web")).with_subresource("exec"),
                cannot(ROBOT_USER, "get", "pods/exec", "", "team"),
            ),
        ];
        for (access, refusal) in refused {
            let decision = decide(&store, &robot, &access);
            assert!(!decision.allowed, "{access:?}");
            assert!(
                decision.reason.starts_with(&format!(
                    "RBAC: no rules authorize user {ROBOT_USER:?} with groups"
                )),
                "{}",
                decision.reason
            );
            let answer = authorize(&store, &robot, &access);
            assert_answer(answer, Err(refusal), &format!("{access:?}"));
        }
        // Everyone's own rules come first: the self reviews.
        let review = Access::new(Verb::Create, Kind::SelfSubjectAccessReview, "", None);
        assert_eq!(
            decide(&store, &robot, &review).reason,
            "everyone may review its own access"
        );
        // Paths: everyone's, then RBAC's (system:discovery to
        // system:authenticated); nothing else.
        assert!(decide_path(&store, &robot, "get", "/version").allowed);
        let metrics = decide_path(&store, &robot, "get", "/metrics");
        assert!(!metrics.allowed);
        assert!(metrics
            .reason
            .contains(r#"to "get" nonResourceURL "/metrics" cluster-wide"#));
    }

    #[test]
    fn a_service_account_is_listed_its_rbac_rules() {
        let (_dir, store) = cluster_with_rbac();
        let (resources, paths) = rules_for(&store, &robot(), "team");
        let [access, whoami] = review_rules();
        let pods = ResourceRule {
            verbs: owned(&["get", "list", "watch"]),
            api_groups: vec![String::new()],
            resources: owned(&["pods", "pods/log"]),
            resource_names: vec![],
        };
        assert_eq!(resources, [access.clone(), whoami.clone(), pods]);
        assert_eq!(paths[0], discovery_paths());
        // system:discovery's paths, granted through RBAC.
        assert!(paths[1..]
            .iter()
            .any(|p| p.paths.contains(&"/openapi/*".to_owned())));
        // Elsewhere, only what everyone may.
        let (resources, _) = rules_for(&store, &robot(), "default");
        assert_eq!(resources, [access, whoami]);
    }

    #[test]
    fn a_subject_access_review_answers_for_any_user_as_for_its_identity() {
        let (_dir, store) = cluster_with_rbac();
        let user = |name: &str, groups: &[&str]| KubernetesUser {
            username: name.to_owned(),
            groups: owned(groups),
        };
        let list = Access::new(Verb::List, Kind::Pod, "team", None);
        // The robot, with or without its groups.
        let robot = kubernetes_user(&robot());
        assert_eq!(
            decide_for_user(&store, &robot, &list),
            decide(&store, &self::robot(), &list)
        );
        assert!(decide_for_user(&store, &user(ROBOT_USER, &[]), &list).allowed);
        let elsewhere = Access::new(Verb::List, Kind::Pod, "default", None);
        assert!(!decide_for_user(&store, &robot, &elsewhere).allowed);
        // system:masters may do everything, whoever it is.
        let admin = user("someone", &["system:masters"]);
        let delete = Access::new(Verb::Delete, Kind::Node, "", Some("n1"));
        assert_eq!(
            decide_for_user(&store, &admin, &delete).reason,
            "admins and masters may do everything"
        );
        // A node's user has the node's rules, in system:nodes only.
        let n1 = user("system:node:n1", &["system:nodes"]);
        let mine = Access::new(Verb::Get, Kind::Pod, "default", Some("mine"));
        assert!(decide_for_user(&store, &n1, &mine).allowed);
        let theirs = Access::new(Verb::Get, Kind::Pod, "default", Some("theirs"));
        let refused = decide_for_user(&store, &n1, &theirs);
        assert_eq!(
            refused.reason,
            r#"system:node:n1 may not read Pod "theirs""#
        );
        let pretender = user("system:node:n1", &[]);
        assert!(!decide_for_user(&store, &pretender, &mine).allowed);
        // Paths likewise.
        assert!(decide_path_for_user(&store, &admin, "get", "/metrics").allowed);
        assert!(!decide_path_for_user(&store, &robot, "get", "/metrics").allowed);
    }

    #[test]
    fn a_service_account_writes_roles_and_bindings_granting_only_what_it_holds() {
        use crate::api::rbac::tests::{binding, rbac_object};
        let (_dir, store) = cluster_with_rbac();
        let robot = robot();
        let role = |verbs: serde_json::Value| {
            rbac_object(
                "Role",
                "team",
                "granted",
                serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]}),
            )
        };
        let held = role(serde_json::json!(["list"]));
        assert!(may_write_rbac(&store, &robot, Verb::Create, Kind::Role, "team", &held).is_ok());
        let more = role(serde_json::json!(["list", "delete"]));
        let refused = may_write_rbac(&store, &robot, Verb::Create, Kind::Role, "team", &more)
            .expect_err("an escalation");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            concat!(
                r#"user "system:serviceaccount:team:robot" (groups=["system:serviceaccounts" "system:serviceaccounts:team" "system:authenticated"]) "#,
                "is attempting to grant RBAC permissions not currently held:\n",
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
            )
        );
        let bind_admin = binding(
            "RoleBinding",
            "team",
            "granted",
            ("ClusterRole", "system:discovery"),
            serde_json::json!([{"kind": "User", "name": "jane"}]),
        );
        // It holds system:discovery's paths cluster-wide, so in team too.
        assert!(may_write_rbac(
            &store,
            &robot,
            Verb::Create,
            Kind::RoleBinding,
            "team",
            &bind_admin
        )
        .is_ok());
        // Admins and masters pass; other kinds are not checked.
        assert!(may_write_rbac(
            &store,
            &Identity::Admin,
            Verb::Create,
            Kind::Role,
            "team",
            &more
        )
        .is_ok());
        assert!(may_write_rbac(&store, &robot, Verb::Create, Kind::Pod, "team", &more).is_ok());
    }

    /// `cluster_with_rbac()` where the robot may besides, in `team`, only
    /// `patch` Deployments, `update` their `scale`, `deletecollection`
    /// Secrets and `create` `pods/eviction`.
    fn cluster_with_narrow_grants() -> (tempfile::TempDir, Arc<ObjectStore>) {
        use crate::api::rbac::tests::{binding, rbac_object};
        let (dir, store) = cluster_with_rbac();
        let narrow = rbac_object(
            "Role",
            "team",
            "narrow",
            serde_json::json!({"rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["deletecollection"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            ]}),
        );
        let bound = binding(
            "RoleBinding",
            "team",
            "robot-narrow",
            ("Role", "narrow"),
            serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
        );
        for result in store.apply_commands([narrow, bound].iter().map(create).collect()) {
            result.expect("created");
        }
        (dir, store)
    }

    #[test]
    fn a_write_is_authorized_as_the_request_it_comes_from_was_asked() {
        let access = |requested, status_only| {
            RequestedAs::access(requested, Kind::Deployment, "team", "web", status_only)
        };
        let update = Access::new(Verb::Update, Kind::Deployment, "team", Some("web"));
        let patch = Access::new(Verb::Patch, Kind::Deployment, "team", Some("web"));
        // No request said otherwise: an update of the part written.
        assert_eq!(access(None, false), update);
        assert_eq!(access(None, true), update.with_subresource("status"));
        // A PATCH: a patch of the object or its status.
        let patched = RequestedAs {
            verb: Verb::Patch,
            scale: false,
        };
        assert_eq!(access(Some(patched), false), patch);
        assert_eq!(
            access(Some(patched), true),
            patch.with_subresource("status")
        );
        // Through `scale` (a write of the whole object): of `scale`.
        let scaled = RequestedAs {
            verb: Verb::Patch,
            scale: true,
        };
        assert_eq!(access(Some(scaled), false), patch.with_subresource("scale"));
        let put_scale = RequestedAs {
            verb: Verb::Update,
            scale: true,
        };
        assert_eq!(
            access(Some(put_scale), false),
            update.with_subresource("scale")
        );
    }

    #[test]
    fn a_patch_needs_patch_alone_not_a_get_and_an_update() {
        let (_dir, store) = cluster_with_narrow_grants();
        let robot = robot();
        let web = v1::Deployment {
            metadata: meta("team", "web"),
            ..Default::default()
        }
        .into_object();
        let on_web = |verb| Access::new(verb, Kind::Deployment, "team", Some("web"));
        // The REST API authorizes the PATCH as a whole...
        assert!(decide(&store, &robot, &on_web(Verb::Patch)).allowed);
        for verb in [Verb::Get, Verb::Update] {
            assert!(!decide(&store, &robot, &on_web(verb)).allowed, "{verb:?}");
        }
        // ...and its write as the patch it was asked as.
        let write = |requested, status_only| {
            let (kind, namespace) = (Kind::Deployment, "team");
            may_update(
                &store,
                &robot,
                &web,
                kind,
                namespace,
                "web",
                status_only,
                requested,
            )
        };
        let patched = RequestedAs {
            verb: Verb::Patch,
            scale: false,
        };
        assert!(write(Some(patched), false).is_ok());
        // The same write taken for an update is refused, naming it.
        let refusal =
            |verb: &str, resource: &str| Err(cannot(ROBOT_USER, verb, resource, "apps", "team"));
        let update = refusal("update", "deployments");
        assert_answer(write(None, false), update, "an update");
        // A patch of the status is another grant, which it lacks.
        let status = refusal("patch", "deployments/status");
        assert_answer(write(Some(patched), true), status, "status");
        // Through `scale`: a patch of it is refused, an update allowed.
        let scale = refusal("patch", "deployments/scale");
        let patch_scale = RequestedAs {
            verb: Verb::Patch,
            scale: true,
        };
        assert_answer(write(Some(patch_scale), false), scale, "scale");
        let put_scale = RequestedAs {
            verb: Verb::Update,
            scale: true,
        };
        assert!(write(Some(put_scale), false).is_ok());
        // Elsewhere, nothing.
        let elsewhere = Access::new(Verb::Patch, Kind::Deployment, "default", Some("web"));
        assert!(!decide(&store, &robot, &elsewhere).allowed);
    }

    #[test]
    fn a_deletecollection_needs_deletecollection_alone_not_a_list_and_deletes() {
        let (_dir, store) = cluster_with_narrow_grants();
        let robot = robot();
        let all = Access::new(Verb::DeleteCollection, Kind::Secret, "team", None);
        assert!(decide(&store, &robot, &all).allowed);
        let parts = [
            Access::new(Verb::List, Kind::Secret, "team", None),
            Access::new(Verb::Delete, Kind::Secret, "team", Some("token")),
        ];
        for access in parts {
            assert!(!decide(&store, &robot, &access).allowed, "{access:?}");
        }
        let refused = authorize(
            &store,
            &robot,
            &Access::new(Verb::DeleteCollection, Kind::Secret, "default", None),
        );
        let refusal = cannot(ROBOT_USER, "deletecollection", "secrets", "", "default");
        assert_answer(refused, Err(refusal), "elsewhere");
    }

    #[test]
    fn an_eviction_needs_create_of_pods_eviction_and_its_writes_are_the_masters() {
        let (_dir, store) = cluster_with_narrow_grants();
        let robot = robot();
        let evict =
            Access::new(Verb::Create, Kind::Pod, "team", Some("web")).with_subresource("eviction");
        assert!(decide(&store, &robot, &evict).allowed);
        // What an eviction comes to: this master may make it, the robot
        // may not (its Role reads pods, but writes neither budgets nor
        // pods).
        let master = Identity::Master("1".into());
        let comes_to = [
            Access::new(Verb::List, Kind::PodDisruptionBudget, "team", None),
            Access::new(Verb::Update, Kind::PodDisruptionBudget, "team", Some("web"))
                .with_subresource("status"),
            Access::new(Verb::Delete, Kind::Pod, "team", Some("web")),
        ];
        for access in comes_to {
            assert!(!decide(&store, &robot, &access).allowed, "{access:?}");
            assert!(decide(&store, &master, &access).allowed, "{access:?}");
        }
        // Refused elsewhere, naming the eviction.
        let elsewhere = Access::new(Verb::Create, Kind::Pod, "default", Some("web"))
            .with_subresource("eviction");
        let refusal = cannot(ROBOT_USER, "create", "pods/eviction", "", "default");
        let answer = authorize(&store, &robot, &elsewhere);
        assert_answer(answer, Err(refusal), "elsewhere");
    }

    #[test]
    fn refusals_are_worded_as_kube_apiserver_words_them() {
        let sweeper = "system:serviceaccount:narrow:sweeper";
        let cases = [
            (
                Access::new(Verb::List, Kind::ConfigMap, "narrow", None),
                r#"User "system:serviceaccount:narrow:sweeper" cannot list resource "configmaps" in API group "" in the namespace "narrow""#,
            ),
            (
                Access::new(Verb::Create, Kind::Pod, "narrow", Some("web"))
                    .with_subresource("eviction"),
                r#"User "system:serviceaccount:narrow:sweeper" cannot create resource "pods/eviction" in API group "" in the namespace "narrow""#,
            ),
            (
                Access::new(Verb::Get, Kind::Deployment, "narrow", Some("web"))
                    .with_subresource("scale"),
                r#"User "system:serviceaccount:narrow:sweeper" cannot get resource "deployments/scale" in API group "apps" in the namespace "narrow""#,
            ),
            // Outside namespaces: a cluster-scoped kind, or all namespaces.
            (
                Access::new(Verb::Delete, Kind::Node, "", Some("n1")),
                r#"User "system:serviceaccount:narrow:sweeper" cannot delete resource "nodes" in API group "" at the cluster scope"#,
            ),
            (
                Access::new(Verb::Watch, Kind::Pod, "", None),
                r#"User "system:serviceaccount:narrow:sweeper" cannot watch resource "pods" in API group "" at the cluster scope"#,
            ),
        ];
        for (access, sentence) in cases {
            assert_eq!(forbidden_message(sweeper, &access), sentence, "{access:?}");
        }
        assert_eq!(
            forbidden_path_message("system:node:n1", "get", "/metrics"),
            r#"User "system:node:n1" cannot get path "/metrics""#
        );
        // Nothing in it reads as HTML.
        assert_eq!(
            forbidden_path_message("x", "get", "/<b>&"),
            r#"User "x" cannot get path "/&lt;b&gt;&amp;""#
        );
    }

    #[test]
    fn a_refusal_adds_the_missing_roles_rbac_met_as_kube_apiserver_does() {
        use crate::api::rbac::tests::binding;
        let (_dir, store) = cluster_with_rbac();
        let dangling = binding(
            "RoleBinding",
            "team",
            "robot-gone",
            ("Role", "gone"),
            serde_json::json!([{"kind": "ServiceAccount", "name": "robot"}]),
        );
        for result in store.apply_commands(vec![create(&dangling)]) {
            result.expect("created");
        }
        let robot = robot();
        let in_team = Access::new(Verb::List, Kind::Secret, "team", None);
        let refusal = format!(
            r#"{}: RBAC: role.rbac.authorization.k8s.io "gone" not found"#,
            cannot(ROBOT_USER, "list", "secrets", "", "team")
        );
        assert_answer(authorize(&store, &robot, &in_team), Err(refusal), "in team");
        // Elsewhere no binding names the missing role: the sentence alone.
        let elsewhere = Access::new(Verb::List, Kind::Secret, "default", None);
        let refusal = cannot(ROBOT_USER, "list", "secrets", "", "default");
        assert_answer(
            authorize(&store, &robot, &elsewhere),
            Err(refusal),
            "elsewhere",
        );
        // A path.
        let refusal = r#"User "system:serviceaccount:team:robot" cannot get path "/metrics""#;
        let answer = authorize_path(&store, &robot, "get", "/metrics");
        assert_answer(answer, Err(refusal.to_owned()), "/metrics");
        assert!(authorize_path(&store, &robot, "get", "/version").is_ok());
    }

    #[test]
    fn a_watch_is_its_own_grant_whatever_a_list_grants() {
        use crate::api::rbac::tests::{binding, rbac_object};
        let (_dir, store) = cluster_with_rbac();
        let mut objects = Vec::new();
        for (account, verb) in [("watcher", "watch"), ("lister", "list")] {
            objects.push(rbac_object(
                "Role",
                "team",
                account,
                serde_json::json!({"rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": [verb]},
                ]}),
            ));
            objects.push(binding(
                "RoleBinding",
                "team",
                account,
                ("Role", account),
                serde_json::json!([{"kind": "ServiceAccount", "name": account}]),
            ));
        }
        for result in store.apply_commands(objects.iter().map(create).collect()) {
            result.expect("created");
        }
        let account = |name: &str| Identity::ServiceAccount {
            namespace: "team".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            credential: TokenCredential::default(),
        };
        let (watcher, lister) = (account("watcher"), account("lister"));
        let on = |verb| Access::new(verb, Kind::ConfigMap, "team", None);
        assert!(authorize(&store, &watcher, &on(Verb::Watch)).is_ok());
        assert!(authorize(&store, &lister, &on(Verb::List)).is_ok());
        let refusal = cannot(
            "system:serviceaccount:team:watcher",
            "list",
            "configmaps",
            "",
            "team",
        );
        assert_answer(
            authorize(&store, &watcher, &on(Verb::List)),
            Err(refusal),
            "watcher lists",
        );
        let refusal = cannot(
            "system:serviceaccount:team:lister",
            "watch",
            "configmaps",
            "",
            "team",
        );
        assert_answer(
            authorize(&store, &lister, &on(Verb::Watch)),
            Err(refusal),
            "lister watches",
        );
    }

    /// The user `name` in `groups`, acted as by an admin (impersonation).
    fn acted_as(name: &str, groups: &[&str]) -> Identity {
        Identity::User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            extra: Default::default(),
            impersonator: Box::new(Identity::Admin),
        }
    }

    #[test]
    fn impersonating_is_authorized_as_rbac_grants_it_and_always_for_admins() {
        use crate::api::rbac::tests::{binding, rbac_object};
        let (_dir, store) = cluster_with_rbac();
        let impersonate = |group: &'static str,
                           resource: &'static str,
                           subresource: &'static str,
                           namespace: &'static str,
                           name: &'static str| rbac::ResourceRequest {
            verb: "impersonate",
            api_group: group,
            resource,
            subresource,
            namespace,
            name,
        };
        let as_jane = impersonate("", "users", "", "", "jane");
        let as_bob = impersonate("", "users", "", "", "bob");
        let refused = |user: &str, resource: &str, group: &str| {
            format!(
                r#"User "{user}" cannot impersonate resource "{resource}" in API group "{group}" at the cluster scope"#
            )
        };
        let robot = robot();
        assert_answer(
            authorize_request(&store, &robot, &as_jane),
            Err(refused(ROBOT_USER, "users", "")),
            "no grant",
        );
        // Admins and masters may (`cluster-admin`'s `*`); nodes never.
        for who in [Identity::Admin, Identity::Master("1".into())] {
            assert!(authorize_request(&store, &who, &as_bob).is_ok(), "{who}");
        }
        let n1 = Identity::Node("n1".into());
        assert_answer(
            authorize_request(&store, &n1, &as_jane),
            Err(refused(N1_USER, "users", "")),
            "a node",
        );
        // A ClusterRole granting `impersonate` on the user jane, and on
        // every service account.
        let role = rbac_object(
            "ClusterRole",
            "",
            "jane-impersonator",
            serde_json::json!({"rules": [
                {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["jane"]},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
            ]}),
        );
        let bound = binding(
            "ClusterRoleBinding",
            "",
            "robot-impersonates",
            ("ClusterRole", "jane-impersonator"),
            serde_json::json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}]),
        );
        for result in store.apply_commands([role, bound].iter().map(create).collect()) {
            result.expect("created");
        }
        assert!(authorize_request(&store, &robot, &as_jane).is_ok());
        assert_answer(
            authorize_request(&store, &robot, &as_bob),
            Err(refused(ROBOT_USER, "users", "")),
            "bob",
        );
        let account = impersonate("", "serviceaccounts", "", "narrow", "patcher");
        assert!(authorize_request(&store, &robot, &account).is_ok());
        assert_answer(
            authorize_request(&store, &robot, &impersonate("", "groups", "", "", "devs")),
            Err(refused(ROBOT_USER, "groups", "")),
            "a group",
        );
        let uid = impersonate("authentication.k8s.io", "uids", "", "", "u-1");
        assert_answer(
            authorize_request(&store, &robot, &uid),
            Err(refused(ROBOT_USER, "uids", "authentication.k8s.io")),
            "a uid",
        );
        let extra = impersonate("authentication.k8s.io", "userextras", "scopes", "", "view");
        assert_answer(
            authorize_request(&store, &robot, &extra),
            Err(refused(
                ROBOT_USER,
                "userextras/scopes",
                "authentication.k8s.io",
            )),
            "an extra",
        );
        // Refused in a namespace, the sentence names it.
        let elsewhere = impersonate("", "pods", "", "narrow", "x");
        assert_answer(
            authorize_request(&store, &robot, &elsewhere),
            Err(format!(
                r#"User "{ROBOT_USER}" cannot impersonate resource "pods" in API group "" in the namespace "narrow""#
            )),
            "in a namespace",
        );
    }

    #[test]
    fn a_user_acted_as_is_authorized_as_its_name_and_groups_say() {
        let (_dir, store) = cluster_with_rbac();
        // A service account's user, with its groups: what the account may.
        let groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated",
        ];
        let as_robot = acted_as(ROBOT_USER, &groups);
        let pods = Access::new(Verb::List, Kind::Pod, "team", None);
        assert!(authorize(&store, &as_robot, &pods).is_ok());
        let secrets = Access::new(Verb::Get, Kind::Secret, "team", Some("token"));
        assert_answer(
            authorize(&store, &as_robot, &secrets),
            Err(cannot(ROBOT_USER, "get", "secrets", "", "team")),
            "as robot",
        );
        assert_eq!(
            decide(&store, &as_robot, &secrets).allowed,
            decide(&store, &robot(), &secrets).allowed
        );
        // Another user without bindings: what everyone may, no more.
        let jane = acted_as("jane", &["devs", "system:authenticated"]);
        assert_answer(
            authorize(&store, &jane, &pods),
            Err(cannot("jane", "list", "pods", "", "team")),
            "as jane",
        );
        let review = Access::new(Verb::Create, Kind::SelfSubjectAccessReview, "", None);
        assert!(authorize(&store, &jane, &review).is_ok());
        // `system:masters`: everything, as RBAC's cluster-admin.
        let master = acted_as("root", &["system:masters", "system:authenticated"]);
        assert!(authorize(&store, &master, &secrets).is_ok());
        // A node's user in `system:nodes`: the node's rules, and
        // NodeRestriction's checks beyond them.
        let node = acted_as(N1_USER, &["system:nodes", "system:authenticated"]);
        let mine = Access::new(Verb::Get, Kind::Pod, "default", Some("mine"));
        let theirs = Access::new(Verb::Get, Kind::Pod, "default", Some("theirs"));
        assert!(authorize(&store, &node, &mine).is_ok());
        assert!(authorize(&store, &node, &theirs).is_err());
        assert_answer(
            may_request_token(&store, &node, "default", "default", None),
            Err(may_not(&node, "request a token not bound to a pod")),
            "a node's token",
        );
        assert!(may_request_token(&store, &jane, "default", "default", None).is_ok());
        // Without `system:nodes`, a node's name is a user like any other.
        let named_like_a_node = acted_as(N1_USER, &["system:authenticated"]);
        assert!(authorize(&store, &named_like_a_node, &mine).is_err());
        // Refusals are logged (and beyond the rules worded) with both.
        assert_eq!(
            may_not(&node, "x"),
            "system:node:n1 (impersonated by admin) may not x"
        );
    }
}
