//! The registry of kinds: for each kind skiff serves, its API group and
//! version, its resource (plural) and singular names, whether it lives in a
//! namespace, kubectl's short names and categories, the verbs and
//! subresources the REST API serves for it, and how skiff holds it (typed,
//! generic, or never stored: the access reviews, and the metrics API's
//! readings). Discovery, the REST
//! router and `skiff ctl` read this table; nothing else carries a list of
//! kinds. Built-in kinds are the static [`KINDS`], one entry each, at the
//! version the store holds; a built-in kind also served at another version
//! has an entry of [`OTHER_VERSIONS`] for it, whose objects are the same
//! stored ones converted on the way out and in ([`Conversion`]), as
//! kube-apiserver serves `autoscaling/v1` HorizontalPodAutoscalers from its
//! `autoscaling/v2` store. Custom kinds, defined by
//! CustomResourceDefinitions, are [`custom`]'s, and every lookup here
//! (`info`, `by_resource`, `groups`, `kinds_in`, `all`) answers for all
//! of them (`info`: a kind's stored version).

pub mod custom;

use serde_json::Value;

use super::autoscaling_v1::{self, AnnotationError};
use super::Kind;

/// A subresource served under `<resource>/<name>/<subresource>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: the object, writing only its status.
    Status,
    /// `scale`: an `autoscaling/v1` Scale of `spec.replicas`.
    Scale,
    /// `log`: a pod's container log, as text.
    Log,
    /// `proxy`: HTTP relayed to a pod, or to one of a service's endpoints.
    Proxy,
    /// `eviction`: a `policy/v1` Eviction deletes a pod unless a
    /// PodDisruptionBudget forbids it (what `kubectl drain` posts).
    Eviction,
    /// `exec`: a command run in a pod's container, over a WebSocket
    /// (`rest/pod_streams.rs`).
    Exec,
    /// `attach`: a pod's container's own process, its stdio joined over a
    /// WebSocket or SPDY (`rest/pod_streams.rs`).
    Attach,
    /// `portforward`: TCP into a pod's network namespace, over a WebSocket.
    PortForward,
    /// `token`: an `authentication.k8s.io/v1` TokenRequest, answered with a
    /// token of the ServiceAccount (`rest/token_request.rs`).
    Token,
}

impl Subresource {
    /// The name in URLs and discovery.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Log => "log",
            Subresource::Proxy => "proxy",
            Subresource::Eviction => "eviction",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Token => "token",
        }
    }

    /// The verbs discovery lists for it (kube-apiserver's lists: any HTTP
    /// method goes through a proxy, and discovery names five verbs for it).
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Log => &["get"],
            Subresource::Proxy => &["create", "delete", "get", "patch", "update"],
            Subresource::Eviction | Subresource::Token => &["create"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                &["create", "get"]
            }
        }
    }
}

/// How skiff holds a kind's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// A typed message of its own (`skiff.v1.Pod`, ...): skiff acts on it.
    Typed,
    /// A `GenericObject`: typed metadata and the rest as JSON, checked
    /// against Kubernetes' schema for the kind (`objects/generic.rs`);
    /// stored, listed and watched, acted on by later work.
    Generic,
    /// Never stored: a create-only review (`authorization.k8s.io`'s
    /// SelfSubjectAccessReview, SelfSubjectRulesReview and
    /// SubjectAccessReview, `authentication.k8s.io`'s SelfSubjectReview)
    /// that the REST API answers itself, from the caller's identity (or the
    /// user a SubjectAccessReview names) and the rules every call is
    /// authorized with (`rest/access_review.rs` over `api/authz.rs`).
    Review,
    /// A `GenericObject` kept in the leader's memory, bounded, never in
    /// the replicated store (`crate::events`: Events); served with every
    /// verb like the others, by the leader.
    Ephemeral,
    /// Never stored: made on each read from the nodes' resource usage
    /// readings in the leader's memory (`crate::resource_metrics`), as
    /// metrics-server answers `metrics.k8s.io`: `get` and `list` only,
    /// by the leader (`api::resource_metrics`).
    Metrics,
    /// A custom kind (`Kind::Custom`): a `GenericObject` checked against
    /// the structural schema of its CustomResourceDefinition
    /// (`objects::custom_resources`), served while the definition is
    /// ([`custom`]).
    Custom,
}

/// How the objects of a served version are read and written: as the store
/// holds them, or converted to and from the stored version (kubernetes
/// `pkg/apis/<group>/<version>/conversion.go`). The REST API converts on
/// the way out ([`Conversion::to_served`]) and in
/// ([`Conversion::to_stored`]); everything behind it (the API service, the
/// writer, the store, controllers, watches) sees stored objects only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// As the store holds them: every [`KINDS`] entry, and each version of
    /// a custom kind (whose versions differ only in `apiVersion`).
    AsStored,
    /// `autoscaling/v1` HorizontalPodAutoscalers, held as `autoscaling/v2`
    /// (`objects/autoscaling_v1.rs`).
    AutoscalingV1,
}

impl Conversion {
    /// A stored object (Kubernetes JSON) as this version serves it; its
    /// `apiVersion` is the caller's to set.
    pub fn to_served(self, stored: Value) -> Value {
        match self {
            Conversion::AsStored => stored,
            Conversion::AutoscalingV1 => autoscaling_v1::to_v1(stored),
        }
    }

    /// An object written at this version (Kubernetes JSON, checked against
    /// this version's schema) as the store holds it, `apiVersion`
    /// included; what cannot be converted is refused, naming its field.
    pub fn to_stored(self, served: Value) -> Result<Value, AnnotationError> {
        match self {
            Conversion::AsStored => Ok(served),
            Conversion::AutoscalingV1 => autoscaling_v1::to_v2(served),
        }
    }

    /// Problems `(field, reason)` of an object written at this version in
    /// fields of its own, which the stored version's validation would name
    /// by its own fields.
    pub fn check(self, served: &Value) -> Vec<(String, String)> {
        match self {
            Conversion::AsStored => Vec::new(),
            Conversion::AutoscalingV1 => autoscaling_v1::check(served),
        }
    }

    /// A problem found in the stored version (its field and message) as
    /// this version names it.
    pub fn served_cause(self, field: &str, message: &str) -> (String, String) {
        match self {
            Conversion::AsStored => (field.to_owned(), message.to_owned()),
            Conversion::AutoscalingV1 => autoscaling_v1::served_cause(field, message),
        }
    }
}

/// Everything the API says about one kind at one version.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub kind: Kind,
    /// The name as written in `kind:`.
    pub name: &'static str,
    /// The API group; `""` is the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// `apiVersion` as objects carry it: `v1`, `apps/v1`.
    pub api_version: &'static str,
    /// The resource: the lowercase plural (`pods`, `replicasets`).
    pub resource: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` puts the kind in `kubectl get all`.
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    pub model: Model,
    /// How this version's objects relate to the stored ones.
    pub conversion: Conversion,
}

/// The verbs every kind's collection and objects serve.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];
/// Namespaces' verbs: no `deletecollection` (kube-apiserver answers a
/// DELETE of the collection 405: every namespace, `kube-system` too, is not
/// a thing one request deletes).
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// The only verb of a review: it is created, answered and forgotten.
const REVIEW_VERBS: &[&str] = &["create"];
/// The verbs of the metrics API (metrics-server's): readings are read.
const METRICS_VERBS: &[&str] = &["get", "list"];
const POD: &[Subresource] = &[
    Subresource::Attach,
    Subresource::Eviction,
    Subresource::Exec,
    Subresource::Log,
    Subresource::PortForward,
    Subresource::Proxy,
    Subresource::Status,
];
const SERVICE: &[Subresource] = &[Subresource::Proxy, Subresource::Status];
const SERVICE_ACCOUNT: &[Subresource] = &[Subresource::Token];
const ALL: &[&str] = &["all"];

/// One registry entry; `api_version` must be `group/version` (tested).
#[allow(clippy::too_many_arguments)]
const fn entry(
    kind: Kind,
    name: &'static str,
    (group, version, api_version): (&'static str, &'static str, &'static str),
    (resource, singular): (&'static str, &'static str),
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
    model: Model,
) -> KindInfo {
    KindInfo {
        kind,
        name,
        group,
        version,
        api_version,
        resource,
        singular,
        namespaced,
        short_names,
        categories,
        subresources,
        model,
        conversion: Conversion::AsStored,
    }
}

/// `stored`'s kind also served at `(group, version, api_version)`, its
/// objects converted by `conversion`.
const fn also_served_as(
    stored: KindInfo,
    (group, version, api_version): (&'static str, &'static str, &'static str),
    conversion: Conversion,
) -> KindInfo {
    KindInfo {
        group,
        version,
        api_version,
        conversion,
        ..stored
    }
}

const CORE: (&str, &str, &str) = ("", "v1", "v1");
const APPS: (&str, &str, &str) = ("apps", "v1", "apps/v1");
const BATCH: (&str, &str, &str) = ("batch", "v1", "batch/v1");
const NETWORKING: (&str, &str, &str) = ("networking.k8s.io", "v1", "networking.k8s.io/v1");
const RBAC: (&str, &str, &str) = (
    "rbac.authorization.k8s.io",
    "v1",
    "rbac.authorization.k8s.io/v1",
);
const POLICY: (&str, &str, &str) = ("policy", "v1", "policy/v1");
const AUTOSCALING: (&str, &str, &str) = ("autoscaling", "v2", "autoscaling/v2");
const AUTOSCALING_V1: (&str, &str, &str) = ("autoscaling", "v1", "autoscaling/v1");
const STORAGE: (&str, &str, &str) = ("storage.k8s.io", "v1", "storage.k8s.io/v1");
const COORDINATION: (&str, &str, &str) = ("coordination.k8s.io", "v1", "coordination.k8s.io/v1");
const DISCOVERY: (&str, &str, &str) = ("discovery.k8s.io", "v1", "discovery.k8s.io/v1");
const SCHEDULING: (&str, &str, &str) = ("scheduling.k8s.io", "v1", "scheduling.k8s.io/v1");
const AUTHORIZATION: (&str, &str, &str) = ("authorization.k8s.io", "v1", "authorization.k8s.io/v1");
const AUTHENTICATION: (&str, &str, &str) =
    ("authentication.k8s.io", "v1", "authentication.k8s.io/v1");

const APIEXTENSIONS: (&str, &str, &str) = ("apiextensions.k8s.io", "v1", "apiextensions.k8s.io/v1");

const EVENTS: (&str, &str, &str) = ("events.k8s.io", "v1", "events.k8s.io/v1");
const METRICS: (&str, &str, &str) = ("metrics.k8s.io", "v1beta1", "metrics.k8s.io/v1beta1");

use Model::{Ephemeral, Generic, Metrics, Review, Typed};

/// HorizontalPodAutoscalers, stored at `autoscaling/v2` ([`KINDS`]) and
/// also served at `autoscaling/v1` ([`OTHER_VERSIONS`]).
const HORIZONTAL_POD_AUTOSCALER: KindInfo = entry(
    Kind::HorizontalPodAutoscaler,
    "HorizontalPodAutoscaler",
    AUTOSCALING,
    ("horizontalpodautoscalers", "horizontalpodautoscaler"),
    true,
    &["hpa"],
    ALL,
    STATUS,
    Generic,
);

/// Every kind skiff serves, in the order discovery lists them. Of two
/// kinds with one name (`Event`), the first is the one a name alone means
/// (`Kind::from_name`).
#[rustfmt::skip]
pub const KINDS: [KindInfo; 42] = [
    entry(Kind::Namespace, "Namespace", CORE, ("namespaces", "namespace"), false, &["ns"], &[], STATUS, Generic),
    entry(Kind::Node, "Node", CORE, ("nodes", "node"), false, &["no"], &[], STATUS, Typed),
    entry(Kind::Pod, "Pod", CORE, ("pods", "pod"), true, &["po"], ALL, POD, Generic),
    entry(Kind::Service, "Service", CORE, ("services", "service"), true, &["svc"], ALL, SERVICE, Generic),
    entry(Kind::Endpoints, "Endpoints", CORE, ("endpoints", "endpoints"), true, &["ep"], &[], &[], Generic),
    entry(Kind::Secret, "Secret", CORE, ("secrets", "secret"), true, &[], &[], &[], Generic),
    entry(Kind::ConfigMap, "ConfigMap", CORE, ("configmaps", "configmap"), true, &["cm"], &[], &[], Generic),
    entry(Kind::ServiceAccount, "ServiceAccount", CORE, ("serviceaccounts", "serviceaccount"), true, &["sa"], &[], SERVICE_ACCOUNT, Generic),
    entry(Kind::LimitRange, "LimitRange", CORE, ("limitranges", "limitrange"), true, &["limits"], &[], &[], Generic),
    entry(Kind::ResourceQuota, "ResourceQuota", CORE, ("resourcequotas", "resourcequota"), true, &["quota"], &[], STATUS, Generic),
    entry(Kind::PersistentVolume, "PersistentVolume", CORE, ("persistentvolumes", "persistentvolume"), false, &["pv"], &[], STATUS, Generic),
    entry(Kind::PersistentVolumeClaim, "PersistentVolumeClaim", CORE, ("persistentvolumeclaims", "persistentvolumeclaim"), true, &["pvc"], &[], STATUS, Generic),
    entry(Kind::Event, "Event", CORE, ("events", "event"), true, &["ev"], &[], &[], Ephemeral),
    entry(Kind::Deployment, "Deployment", APPS, ("deployments", "deployment"), true, &["deploy"], ALL, STATUS_SCALE, Generic),
    entry(Kind::ReplicaSet, "ReplicaSet", APPS, ("replicasets", "replicaset"), true, &["rs"], ALL, STATUS_SCALE, Generic),
    entry(Kind::DaemonSet, "DaemonSet", APPS, ("daemonsets", "daemonset"), true, &["ds"], ALL, STATUS, Generic),
    entry(Kind::StatefulSet, "StatefulSet", APPS, ("statefulsets", "statefulset"), true, &["sts"], ALL, STATUS_SCALE, Generic),
    entry(Kind::ControllerRevision, "ControllerRevision", APPS, ("controllerrevisions", "controllerrevision"), true, &[], &[], &[], Generic),
    entry(Kind::Job, "Job", BATCH, ("jobs", "job"), true, &[], ALL, STATUS, Generic),
    entry(Kind::CronJob, "CronJob", BATCH, ("cronjobs", "cronjob"), true, &["cj"], ALL, STATUS, Generic),
    entry(Kind::Ingress, "Ingress", NETWORKING, ("ingresses", "ingress"), true, &["ing"], &[], STATUS, Generic),
    entry(Kind::IngressClass, "IngressClass", NETWORKING, ("ingressclasses", "ingressclass"), false, &[], &[], &[], Generic),
    entry(Kind::NetworkPolicy, "NetworkPolicy", NETWORKING, ("networkpolicies", "networkpolicy"), true, &["netpol"], &[], &[], Generic),
    entry(Kind::Role, "Role", RBAC, ("roles", "role"), true, &[], &[], &[], Generic),
    entry(Kind::RoleBinding, "RoleBinding", RBAC, ("rolebindings", "rolebinding"), true, &[], &[], &[], Generic),
    entry(Kind::ClusterRole, "ClusterRole", RBAC, ("clusterroles", "clusterrole"), false, &[], &[], &[], Generic),
    entry(Kind::ClusterRoleBinding, "ClusterRoleBinding", RBAC, ("clusterrolebindings", "clusterrolebinding"), false, &[], &[], &[], Generic),
    entry(Kind::PodDisruptionBudget, "PodDisruptionBudget", POLICY, ("poddisruptionbudgets", "poddisruptionbudget"), true, &["pdb"], &[], STATUS, Generic),
    HORIZONTAL_POD_AUTOSCALER,
    entry(Kind::StorageClass, "StorageClass", STORAGE, ("storageclasses", "storageclass"), false, &["sc"], &[], &[], Generic),
    entry(Kind::CsiDriver, "CSIDriver", STORAGE, ("csidrivers", "csidriver"), false, &[], &[], &[], Generic),
    entry(Kind::Lease, "Lease", COORDINATION, ("leases", "lease"), true, &[], &[], &[], Generic),
    entry(Kind::EndpointSlice, "EndpointSlice", DISCOVERY, ("endpointslices", "endpointslice"), true, &[], &[], &[], Generic),
    entry(Kind::PriorityClass, "PriorityClass", SCHEDULING, ("priorityclasses", "priorityclass"), false, &["pc"], &[], &[], Generic),
    entry(Kind::CustomResourceDefinition, "CustomResourceDefinition", APIEXTENSIONS, ("customresourcedefinitions", "customresourcedefinition"), false, &["crd", "crds"], &["api-extensions"], STATUS, Generic),
    entry(Kind::SelfSubjectAccessReview, "SelfSubjectAccessReview", AUTHORIZATION, ("selfsubjectaccessreviews", "selfsubjectaccessreview"), false, &[], &[], &[], Review),
    entry(Kind::SelfSubjectRulesReview, "SelfSubjectRulesReview", AUTHORIZATION, ("selfsubjectrulesreviews", "selfsubjectrulesreview"), false, &[], &[], &[], Review),
    entry(Kind::SelfSubjectReview, "SelfSubjectReview", AUTHENTICATION, ("selfsubjectreviews", "selfsubjectreview"), false, &[], &[], &[], Review),
    entry(Kind::SubjectAccessReview, "SubjectAccessReview", AUTHORIZATION, ("subjectaccessreviews", "subjectaccessreview"), false, &[], &[], &[], Review),
    entry(Kind::EventsK8sIoEvent, "Event", EVENTS, ("events", "event"), true, &["ev"], &[], &[], Ephemeral),
    entry(Kind::NodeMetrics, "NodeMetrics", METRICS, ("nodes", "nodemetrics"), false, &[], &[], &[], Metrics),
    entry(Kind::PodMetrics, "PodMetrics", METRICS, ("pods", "podmetrics"), true, &[], &[], &[], Metrics),
];

/// The other versions built-in kinds are served at, each converted to and
/// from the stored version (the kind's [`KINDS`] entry), after it in
/// discovery: a group's first version is its preferred one.
pub const OTHER_VERSIONS: [KindInfo; 1] = [also_served_as(
    HORIZONTAL_POD_AUTOSCALER,
    AUTOSCALING_V1,
    Conversion::AutoscalingV1,
)];

impl KindInfo {
    /// The resource with its group, as Kubernetes names it in messages:
    /// `pods`, `deployments.apps`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// The kind with its group, as in "is invalid" messages: `Pod`,
    /// `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }

    pub fn has(&self, subresource: Subresource) -> bool {
        self.subresources.contains(&subresource)
    }

    /// Whether objects of the kind are kept (in the store, or Events in the
    /// leader's memory) and served as objects: every kind but the reviews
    /// and the metrics API's readings.
    pub fn is_stored(&self) -> bool {
        !matches!(self.model, Model::Review | Model::Metrics)
    }

    /// Whether the OpenAPI documents describe the kind: every kind but the
    /// metrics API's, whose schema kube-apiserver does not publish either
    /// (metrics-server does, through API aggregation) and skiff's
    /// generated schema does not hold.
    pub fn in_openapi(&self) -> bool {
        // Nor CustomResourceDefinitions, nor custom kinds: the generated
        // schema has neither.
        !matches!(self.model, Model::Metrics | Model::Custom)
            && self.kind != Kind::CustomResourceDefinition
    }

    /// The verbs discovery lists for the kind's collection and objects.
    pub fn verbs(&self) -> &'static [&'static str] {
        match self.model {
            _ if self.kind == Kind::Namespace => NAMESPACE_VERBS,
            Model::Typed | Model::Generic | Model::Ephemeral | Model::Custom => &VERBS,
            Model::Review => REVIEW_VERBS,
            Model::Metrics => METRICS_VERBS,
        }
    }
}

/// `group/version`, or just `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// The registry entry of `kind` (a custom kind's: its storage version's).
pub fn info(kind: Kind) -> &'static KindInfo {
    if let Kind::Custom(custom) = kind {
        return custom::info(custom);
    }
    // Every built-in Kind has exactly one entry (tested below); the
    // fallback is never taken.
    KINDS.iter().find(|i| i.kind == kind).unwrap_or(&KINDS[0])
}

/// The kind served as `resource` in `group`/`version`.
pub fn by_resource(group: &str, version: &str, resource: &str) -> Option<&'static KindInfo> {
    built_in()
        .find(|i| i.group == group && i.version == version && i.resource == resource)
        .or_else(|| custom::by_resource(group, version, resource))
}

/// Whether a built-in kind is served in `group` (a CustomResourceDefinition
/// may not add kinds to those groups).
pub fn is_builtin_group(group: &str) -> bool {
    static GROUPS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| KINDS.iter().map(|i| i.group).collect());
    GROUPS.contains(group)
}

/// The API groups served (besides the core group), each with its
/// versions, in discovery order: the built-in ones, then custom ones.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for info in built_in().filter(|i| !i.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == info.group) {
            Some((_, versions)) if !versions.contains(&info.version) => versions.push(info.version),
            Some(_) => {}
            None => groups.push((info.group, vec![info.version])),
        }
    }
    groups.extend(custom::groups());
    groups
}

/// The kinds served in `group`/`version`.
pub fn kinds_in<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static KindInfo> + 'a {
    built_in()
        .filter(move |i| i.group == group && i.version == version)
        .chain(custom::kinds_in(group, version))
}

/// Every kind served, built-in and custom, at each version it is served
/// at.
pub fn all() -> Vec<&'static KindInfo> {
    let mut all: Vec<&'static KindInfo> = built_in().collect();
    all.extend(custom::all());
    all
}

/// Every built-in kind at each version it is served at: [`KINDS`], then
/// [`OTHER_VERSIONS`].
pub fn built_in() -> impl Iterator<Item = &'static KindInfo> {
    KINDS.iter().chain(OTHER_VERSIONS.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant of `Kind`. The match fails to compile when a variant
    /// is added to `Kind` and not listed here.
    fn every_variant() -> Vec<Kind> {
        use Kind::*;
        let all = vec![
            Namespace,
            Node,
            Pod,
            Service,
            Endpoints,
            Deployment,
            ReplicaSet,
            Secret,
            ConfigMap,
            ServiceAccount,
            LimitRange,
            ResourceQuota,
            PersistentVolume,
            PersistentVolumeClaim,
            DaemonSet,
            StatefulSet,
            ControllerRevision,
            Job,
            CronJob,
            Ingress,
            IngressClass,
            NetworkPolicy,
            Role,
            RoleBinding,
            ClusterRole,
            ClusterRoleBinding,
            PodDisruptionBudget,
            HorizontalPodAutoscaler,
            StorageClass,
            CsiDriver,
            Lease,
            EndpointSlice,
            PriorityClass,
            SelfSubjectAccessReview,
            SelfSubjectRulesReview,
            SelfSubjectReview,
            Event,
            EventsK8sIoEvent,
            NodeMetrics,
            PodMetrics,
            CustomResourceDefinition,
            SubjectAccessReview,
        ];
        for kind in &all {
            match kind {
                Namespace
                | Node
                | Pod
                | Service
                | Endpoints
                | Deployment
                | ReplicaSet
                | Secret
                | ConfigMap
                | ServiceAccount
                | LimitRange
                | ResourceQuota
                | PersistentVolume
                | PersistentVolumeClaim
                | DaemonSet
                | StatefulSet
                | ControllerRevision
                | Job
                | CronJob
                | Ingress
                | IngressClass
                | NetworkPolicy
                | Role
                | RoleBinding
                | ClusterRole
                | ClusterRoleBinding
                | PodDisruptionBudget
                | HorizontalPodAutoscaler
                | StorageClass
                | CsiDriver
                | Lease
                | EndpointSlice
                | PriorityClass
                | SelfSubjectAccessReview
                | SelfSubjectRulesReview
                | SelfSubjectReview
                | Event
                | EventsK8sIoEvent
                | NodeMetrics
                | PodMetrics
                | CustomResourceDefinition
                | SubjectAccessReview => {}
                // Custom kinds are the dynamic registry's, not in KINDS.
                Custom(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_of_kind_is_in_the_registry_once() {
        let all = every_variant();
        assert_eq!(all.len(), KINDS.len());
        for kind in all {
            assert_eq!(
                KINDS.iter().filter(|i| i.kind == kind).count(),
                1,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn every_kind_has_exactly_one_entry_and_resources_are_unique() {
        for kind in Kind::ALL {
            assert_eq!(KINDS.iter().filter(|i| i.kind == kind).count(), 1, "{kind}");
            assert_eq!(info(kind).kind, kind);
            let named = Kind::from_type(info(kind).api_version, info(kind).name);
            assert_eq!(named.ok(), Some(kind));
        }
        for a in &KINDS {
            let same = KINDS
                .iter()
                .filter(|b| b.group == a.group && b.resource == a.resource)
                .count();
            assert_eq!(same, 1, "{}", a.resource);
        }
    }

    #[test]
    fn resources_are_found_by_group_version_and_name() {
        assert_eq!(
            by_resource("apps", "v1", "deployments").map(|i| i.kind),
            Some(Kind::Deployment)
        );
        assert_eq!(by_resource("", "v1", "deployments").map(|i| i.kind), None);
        assert_eq!(
            by_resource("", "v1", "pods").map(|i| i.kind),
            Some(Kind::Pod)
        );
        assert_eq!(
            info(Kind::Deployment).qualified_resource(),
            "deployments.apps"
        );
        assert_eq!(info(Kind::Pod).qualified_resource(), "pods");
        assert_eq!(info(Kind::ReplicaSet).api_version, "apps/v1");
        for i in &KINDS {
            assert_eq!(i.api_version, group_version(i.group, i.version));
        }
        assert_eq!(groups()[0], ("apps", vec!["v1"]));
        assert!(groups().contains(&("batch", vec!["v1"])));
        assert_eq!(
            by_resource("batch", "v1", "cronjobs").map(|i| (i.kind, i.model)),
            Some((Kind::CronJob, Model::Generic))
        );
        assert_eq!(
            by_resource("", "v1", "events").map(|i| (i.kind, i.model)),
            Some((Kind::Event, Model::Ephemeral))
        );
        assert_eq!(
            by_resource("events.k8s.io", "v1", "events").map(|i| (i.kind, i.model)),
            Some((Kind::EventsK8sIoEvent, Model::Ephemeral))
        );
        assert!(groups().contains(&("events.k8s.io", vec!["v1"])));
        // A name alone means the core Event.
        assert_eq!(Kind::from_name("Event").ok(), Some(Kind::Event));
    }

    #[test]
    fn autoscalers_are_stored_at_v2_and_also_served_at_v1() {
        let v2 = by_resource("autoscaling", "v2", "horizontalpodautoscalers").expect("v2");
        let v1 = by_resource("autoscaling", "v1", "horizontalpodautoscalers").expect("v1");
        assert_eq!(v2.kind, Kind::HorizontalPodAutoscaler);
        assert_eq!(v1.kind, Kind::HorizontalPodAutoscaler);
        assert_eq!(v2.conversion, Conversion::AsStored);
        assert_eq!(v1.conversion, Conversion::AutoscalingV1);
        assert_eq!(v1.api_version, "autoscaling/v1");
        assert_eq!(
            (v1.short_names, v1.categories),
            (v2.short_names, v2.categories)
        );
        assert!(v1.has(Subresource::Status) && v1.in_openapi() && v1.is_stored());
        // The kind is the store's version.
        assert_eq!(info(Kind::HorizontalPodAutoscaler).version, "v2");
        assert_eq!(
            Kind::HorizontalPodAutoscaler.api_version(),
            "autoscaling/v2"
        );
        // v2 first: the group's preferred version.
        assert!(groups().contains(&("autoscaling", vec!["v2", "v1"])));
        let at_v1: Vec<Conversion> = kinds_in("autoscaling", "v1")
            .map(|i| i.conversion)
            .collect();
        assert_eq!(at_v1, [Conversion::AutoscalingV1]);
        assert!(all()
            .iter()
            .any(|i| i.kind == Kind::HorizontalPodAutoscaler && i.version == "v1"));
        // Still one kind, held once.
        let held = Kind::ALL
            .iter()
            .filter(|k| **k == Kind::HorizontalPodAutoscaler)
            .count();
        assert_eq!(held, 1);
        for other in &OTHER_VERSIONS {
            let stored = info(other.kind);
            assert_eq!(stored.conversion, Conversion::AsStored);
            assert_ne!(other.conversion, Conversion::AsStored);
            assert_eq!(
                (other.group, other.resource, other.name, other.namespaced),
                (
                    stored.group,
                    stored.resource,
                    stored.name,
                    stored.namespaced
                )
            );
            assert_ne!(other.version, stored.version);
            assert_eq!(other.api_version, group_version(other.group, other.version));
        }
    }

    #[test]
    fn the_reviews_are_create_only_kinds_that_are_never_stored() {
        let reviews = [
            ("authorization.k8s.io", "selfsubjectaccessreviews"),
            ("authorization.k8s.io", "selfsubjectrulesreviews"),
            ("authentication.k8s.io", "selfsubjectreviews"),
            ("authorization.k8s.io", "subjectaccessreviews"),
        ];
        for (group, resource) in reviews {
            let info = by_resource(group, "v1", resource).expect(resource);
            assert_eq!(info.model, Model::Review, "{resource}");
            assert!(!info.is_stored(), "{resource}");
            assert!(!info.namespaced, "{resource}");
            assert_eq!(info.verbs(), ["create"], "{resource}");
            assert!(!info.kind.is_stored(), "{resource}");
        }
        let stored = KINDS.iter().filter(|i| i.is_stored()).count();
        let metrics = KINDS.iter().filter(|i| i.model == Model::Metrics).count();
        assert_eq!(stored, KINDS.len() - reviews.len() - metrics);
        assert_eq!(info(Kind::Pod).verbs(), VERBS);
        assert!(!info(Kind::Namespace).verbs().contains(&"deletecollection"));
        assert!(info(Kind::Namespace).verbs().contains(&"delete"));
        assert!(groups().contains(&("authorization.k8s.io", vec!["v1"])));
        assert!(groups().contains(&("authentication.k8s.io", vec!["v1"])));
        // Not a kind `skiff ctl` lists.
        assert!(Kind::parse_cli("selfsubjectaccessreviews").is_err());
    }

    #[test]
    fn the_metrics_api_serves_node_and_pod_metrics_read_only() {
        let nodes = by_resource("metrics.k8s.io", "v1beta1", "nodes").expect("nodes");
        assert_eq!((nodes.kind, nodes.name), (Kind::NodeMetrics, "NodeMetrics"));
        assert!(!nodes.namespaced);
        let pods = by_resource("metrics.k8s.io", "v1beta1", "pods").expect("pods");
        assert_eq!((pods.kind, pods.name), (Kind::PodMetrics, "PodMetrics"));
        assert!(pods.namespaced);
        for info in [nodes, pods] {
            assert_eq!(info.model, Model::Metrics);
            assert_eq!(info.verbs(), ["get", "list"]);
            assert!(info.subresources.is_empty());
            assert!(!info.is_stored() && !info.in_openapi());
            assert!(info.kind.is_metrics() && !info.kind.is_ephemeral());
            assert_eq!(info.api_version, "metrics.k8s.io/v1beta1");
        }
        assert_eq!(
            info(Kind::PodMetrics).qualified_resource(),
            "pods.metrics.k8s.io"
        );
        assert!(groups().contains(&("metrics.k8s.io", vec!["v1beta1"])));
        // The core kinds of the same resource names are still found first.
        assert_eq!(
            by_resource("", "v1", "pods").map(|i| i.kind),
            Some(Kind::Pod)
        );
        assert!(Kind::parse_cli("podmetrics").is_err());
        assert!(info(Kind::Pod).in_openapi() && !Kind::Pod.is_metrics());
    }

    #[test]
    fn custom_resource_definitions_are_a_cluster_scoped_generic_kind() {
        let crds =
            by_resource("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("served");
        assert_eq!(crds.kind, Kind::CustomResourceDefinition);
        assert_eq!((crds.model, crds.namespaced), (Model::Generic, false));
        assert_eq!(crds.short_names, ["crd", "crds"]);
        assert!(crds.has(Subresource::Status) && !crds.in_openapi());
        assert!(is_builtin_group("apps") && is_builtin_group("apiextensions.k8s.io"));
        assert!(is_builtin_group("") && !is_builtin_group("example.com"));
        assert_eq!(
            Kind::parse_cli("crd").ok(),
            Some(Kind::CustomResourceDefinition)
        );
    }

    #[test]
    fn pods_serve_log_and_proxy_and_services_proxy() {
        let pods = info(Kind::Pod);
        assert!(pods.has(Subresource::Log));
        assert!(pods.has(Subresource::Proxy));
        assert!(pods.has(Subresource::Eviction));
        assert!(pods.has(Subresource::Exec) && pods.has(Subresource::PortForward));
        assert!(pods.has(Subresource::Attach));
        assert_eq!(Subresource::Attach.name(), "attach");
        assert!(!info(Kind::Deployment).has(Subresource::Exec));
        assert_eq!(Subresource::PortForward.name(), "portforward");
        assert_eq!(Subresource::Eviction.verbs(), ["create"]);
        assert!(!info(Kind::Deployment).has(Subresource::Eviction));
        assert!(info(Kind::ServiceAccount).has(Subresource::Token));
        assert_eq!(
            (Subresource::Token.name(), Subresource::Token.verbs()),
            ("token", &["create"][..])
        );
        let services = info(Kind::Service);
        assert!(services.has(Subresource::Proxy));
        assert!(!services.has(Subresource::Log));
        assert!(!info(Kind::Deployment).has(Subresource::Proxy));
        assert_eq!(Subresource::Log.name(), "log");
        assert_eq!(Subresource::Log.verbs(), ["get"]);
        assert_eq!(
            Subresource::Proxy.verbs(),
            ["create", "delete", "get", "patch", "update"]
        );
    }
}
