//! The registry of kinds: for each kind skiff serves, its API group and
//! version, its resource (plural) and singular names, whether it lives in a
//! namespace, kubectl's short names and categories, the verbs and
//! subresources the REST API serves for it. Discovery, the REST router and
//! `skiff ctl` read this table; nothing else carries a list of kinds.

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
}

impl Subresource {
    /// The name in URLs and discovery.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Log => "log",
            Subresource::Proxy => "proxy",
        }
    }

    /// The verbs discovery lists for it (kube-apiserver's lists: any HTTP
    /// method goes through a proxy, and discovery names five verbs for it).
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Log => &["get"],
            Subresource::Proxy => &["create", "delete", "get", "patch", "update"],
        }
    }
}

/// Everything the API says about one kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub kind: Kind,
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

/// Every kind skiff serves, in the order discovery lists them.
pub const KINDS: [KindInfo; 8] = [
    KindInfo {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &[Subresource::Status],
    },
    KindInfo {
        kind: Kind::Node,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &[Subresource::Status],
    },
    KindInfo {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &[Subresource::Log, Subresource::Proxy, Subresource::Status],
    },
    KindInfo {
        kind: Kind::Service,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[Subresource::Proxy, Subresource::Status],
    },
    KindInfo {
        kind: Kind::Endpoints,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
    },
    KindInfo {
        kind: Kind::Deployment,
        group: "apps",
        version: "v1",
        api_version: "apps/v1",
        resource: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[Subresource::Status, Subresource::Scale],
    },
    KindInfo {
        kind: Kind::ReplicaSet,
        group: "apps",
        version: "v1",
        api_version: "apps/v1",
        resource: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &[Subresource::Status, Subresource::Scale],
    },
    KindInfo {
        kind: Kind::Secret,
        group: "",
        version: "v1",
        api_version: "v1",
        resource: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
];

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
            self.kind.name().to_owned()
        } else {
            format!("{}.{}", self.kind.name(), self.group)
        }
    }

    pub fn has(&self, subresource: Subresource) -> bool {
        self.subresources.contains(&subresource)
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

/// The registry entry of `kind`.
pub fn info(kind: Kind) -> &'static KindInfo {
    // Every Kind has exactly one entry (tested below); the fallback is
    // never taken.
    KINDS.iter().find(|i| i.kind == kind).unwrap_or(&KINDS[0])
}

/// The kind served as `resource` in `group`/`version`.
pub fn by_resource(group: &str, version: &str, resource: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|i| i.group == group && i.version == version && i.resource == resource)
}

/// The API groups served (besides the core group), each with its
/// versions, in discovery order. `autoscaling/v1` serves no kind of its
/// own: it is the group of the `scale` subresources' Scale.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for info in KINDS.iter().filter(|i| !i.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == info.group) {
            Some((_, versions)) if !versions.contains(&info.version) => versions.push(info.version),
            Some(_) => {}
            None => groups.push((info.group, vec![info.version])),
        }
    }
    groups
}

/// The kinds served in `group`/`version`.
pub fn kinds_in<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static KindInfo> + 'a {
    KINDS
        .iter()
        .filter(move |i| i.group == group && i.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_entry_and_resources_are_unique() {
        for kind in Kind::ALL {
            assert_eq!(KINDS.iter().filter(|i| i.kind == kind).count(), 1, "{kind}");
            assert_eq!(info(kind).kind, kind);
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
        assert_eq!(groups(), vec![("apps", vec!["v1"])]);
    }

    #[test]
    fn pods_serve_log_and_proxy_and_services_proxy() {
        let pods = info(Kind::Pod);
        assert!(pods.has(Subresource::Log));
        assert!(pods.has(Subresource::Proxy));
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
