//! What a REST URL names: `/version`, health, discovery, OpenAPI, the
//! service account issuer's documents, or a resource path
//! `/api/v1/[namespaces/{ns}/]{resource}[/{name}[/{sub}]]` (and the same
//! under `/apis/{group}/{version}`), or a watch of one through the
//! deprecated watch paths kube-apiserver still serves
//! (`/api/v1/watch/[namespaces/{ns}/]{resource}[/{name}]`). A trailing `/`
//! is accepted, as the Python client sends one.

/// A resource path, parsed but not yet looked up in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    /// `Some` for `/namespaces/{ns}/...` paths.
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// What follows the subresource (a proxy's path), without its `/`.
    pub tail: String,
    /// Under `/watch/`: a watch whatever the query says (of the named
    /// object alone when there is a name).
    pub watch: bool,
}

/// What a request's path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their `/...` checks).
    Health,
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: the groups.
    Groups,
    /// `/api/v1`, `/apis/{group}/{version}`: a group version's resources.
    GroupVersion {
        group: String,
        version: String,
    },
    /// `/apis/{group}`: one group.
    Group(String),
    OpenApiV2,
    /// `/openapi/v3` and below.
    OpenApiV3(String),
    /// `/.well-known/openid-configuration`: the service account issuer's
    /// OpenID provider configuration.
    OpenIdConfiguration,
    /// `/openid/v1/jwks`: the keys its tokens are signed with.
    Jwks,
    Resource(ResourcePath),
    Unknown,
}

/// Names the target of `path`.
pub fn parse(path: &str) -> Target {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    match segments.as_slice() {
        ["version"] => Target::Version,
        ["healthz" | "livez" | "readyz", ..] => Target::Health,
        ["api"] => Target::CoreVersions,
        ["apis"] => Target::Groups,
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => Target::OpenApiV2,
        ["openapi", "v3", rest @ ..] => Target::OpenApiV3(rest.join("/")),
        [".well-known", "openid-configuration"] => Target::OpenIdConfiguration,
        ["openid", "v1", "jwks"] => Target::Jwks,
        ["api", version, rest @ ..] => resource_path("", version, rest),
        ["apis", group] => Target::Group((*group).to_owned()),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        _ => Target::Unknown,
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Target {
    if rest.is_empty() {
        return Target::GroupVersion {
            group: group.to_owned(),
            version: version.to_owned(),
        };
    }
    if rest.iter().any(|s| s.is_empty()) {
        return Target::Unknown;
    }
    let (watch, rest) = match rest {
        ["watch", watched @ ..] if !watched.is_empty() => (true, watched),
        _ => (false, rest),
    };
    let namespaced = rest[0] == "namespaces"
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    Target::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        resource: rest[0].to_owned(),
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
        tail: rest.get(3..).map(|t| t.join("/")).unwrap_or_default(),
        watch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match parse(path) {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_and_fixed_paths_are_named() {
        assert_eq!(parse("/version"), Target::Version);
        assert_eq!(parse("/version/"), Target::Version);
        assert_eq!(parse("/readyz/ping"), Target::Health);
        assert_eq!(parse("/api"), Target::CoreVersions);
        assert_eq!(
            parse("/.well-known/openid-configuration"),
            Target::OpenIdConfiguration
        );
        assert_eq!(parse("/openid/v1/jwks"), Target::Jwks);
        assert_eq!(parse("/openid/v1/jwks/"), Target::Jwks);
        assert_eq!(parse("/openid/v1"), Target::Unknown);
        assert_eq!(parse("/apis/"), Target::Groups);
        assert_eq!(
            parse("/api/v1/"),
            Target::GroupVersion {
                group: String::new(),
                version: "v1".into()
            }
        );
        assert_eq!(
            parse("/apis/apps/v1"),
            Target::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse("/apis/apps"), Target::Group("apps".into()));
        assert_eq!(parse("/openapi/v2"), Target::OpenApiV2);
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1"),
            Target::OpenApiV3("apis/apps/v1".into())
        );
        assert_eq!(parse("/nonsense"), Target::Unknown);
        assert_eq!(parse("/api/v1/namespaces//pods"), Target::Unknown);
    }

    #[test]
    fn resource_paths_split_into_namespace_resource_name_and_subresource() {
        let r = resource("/api/v1/namespaces/default/pods/web-1/log");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "pods");
        assert_eq!(r.name.as_deref(), Some("web-1"));
        assert_eq!(r.subresource.as_deref(), Some("log"));

        let r = resource("/apis/apps/v1/namespaces/ns/deployments/web/scale");
        assert_eq!((r.group.as_str(), r.version.as_str()), ("apps", "v1"));
        assert_eq!(r.subresource.as_deref(), Some("scale"));

        let r = resource("/api/v1/pods");
        assert_eq!(r.namespace, None);
        assert_eq!(r.name, None);

        let r = resource("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = resource("/api/v1/namespaces/kube-system/status");
        assert_eq!(r.namespace, None);
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = resource("/api/v1/namespaces/default/services");
        assert_eq!(
            (r.namespace.as_deref(), r.resource.as_str()),
            (Some("default"), "services")
        );

        let r = resource("/api/v1/namespaces/ns/pods/p:8080/proxy/a/b");
        assert_eq!(r.subresource.as_deref(), Some("proxy"));
        assert_eq!(r.tail, "a/b");
        assert!(!r.watch);
    }

    #[test]
    fn watch_paths_name_what_they_watch() {
        let r = resource("/api/v1/watch/namespaces/default/configmaps");
        assert!(r.watch);
        assert_eq!(
            (r.namespace.as_deref(), r.resource.as_str(), r.name),
            (Some("default"), "configmaps", None)
        );
        let r = resource("/apis/apps/v1/watch/namespaces/ns/deployments/web/");
        assert!(r.watch);
        assert_eq!((r.group.as_str(), r.name.as_deref()), ("apps", Some("web")));
        let r = resource("/api/v1/watch/nodes");
        assert!(r.watch);
        assert_eq!((r.namespace, r.resource.as_str()), (None, "nodes"));
        // `watch` alone is a resource's name, which none has.
        let r = resource("/api/v1/watch");
        assert!(!r.watch);
        assert_eq!(r.resource, "watch");
    }
}
