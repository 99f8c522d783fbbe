//! Discovery documents, all made from the registry of kinds: `/version`,
//! `/api` and `/apis` (plain, and aggregated `APIGroupDiscoveryList` v2
//! when the client asks for it), `/apis/{group}`, and each group version's
//! `APIResourceList` with its subresources.

use serde_json::{json, Value};

use skiff_objects::registry::{self, KindInfo, Subresource};
use skiff_objects::Kind;

/// The Kubernetes version skiff's API corresponds to. Charts and clients
/// compare against it.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "34";

/// The version `/version` and the OpenAPI documents report:
/// `v1.34.0+skiff`.
pub fn git_version() -> String {
    format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+skiff")
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": git_version(),
        "gitCommit": format!("skiff-{}", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", go_arch()),
    })
}

/// This machine's architecture as Go names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Whether an `Accept` header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let media = media.replace(' ', "");
        media.contains("as=APIGroupDiscoveryList")
            && media.contains("v=v2;") | media.ends_with("v=v2")
    })
}

/// The Content-Type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/api`: the core group's versions, plain.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

fn group_document(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": registry::group_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions.clone(),
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`: every group besides the core one, plain.
pub fn groups() -> Value {
    let groups: Vec<Value> = registry::groups()
        .iter()
        .map(|(group, versions)| group_document(group, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or `None` for a group not served.
pub fn group(name: &str) -> Option<Value> {
    let groups = registry::groups();
    let (group, versions) = groups.iter().find(|(g, _)| *g == name)?;
    let mut document = group_document(group, versions);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

fn subresource_kind(
    info: &KindInfo,
    subresource: Subresource,
) -> (&'static str, &'static str, &'static str) {
    match subresource {
        Subresource::Scale => ("autoscaling", "v1", "Scale"),
        Subresource::Eviction => ("policy", "v1", "Eviction"),
        Subresource::Token => ("authentication.k8s.io", "v1", "TokenRequest"),
        Subresource::Status | Subresource::Log => (info.group, info.version, info.name),
        Subresource::Proxy => (info.group, info.version, proxy_options_kind(info)),
        Subresource::Exec => (info.group, info.version, "PodExecOptions"),
        Subresource::Attach => (info.group, info.version, "PodAttachOptions"),
        Subresource::PortForward => (info.group, info.version, "PodPortForwardOptions"),
    }
}

/// The kind kube-apiserver names a proxy subresource after
/// (`PodProxyOptions`, `ServiceProxyOptions`).
fn proxy_options_kind(info: &KindInfo) -> &'static str {
    match info.kind {
        Kind::Pod => "PodProxyOptions",
        Kind::Service => "ServiceProxyOptions",
        Kind::Node => "NodeProxyOptions",
        other => other.name(),
    }
}

/// `/api/v1`, `/apis/{group}/{version}`: the resources served there, or
/// `None` for a group version not served.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    let served = (group.is_empty() && version == "v1")
        || registry::groups()
            .iter()
            .any(|(g, vs)| *g == group && vs.contains(&version));
    if !served {
        return None;
    }
    let mut resources = Vec::new();
    for info in registry::kinds_in(group, version) {
        let mut resource = json!({
            "name": info.resource,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.name,
            "verbs": info.verbs(),
            "storageVersionHash": "",
        });
        if !info.short_names.is_empty() {
            resource["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            resource["categories"] = json!(info.categories);
        }
        resources.push(resource);
        for sub in info.subresources {
            let (sub_group, sub_version, sub_kind) = subresource_kind(info, *sub);
            let mut entry = json!({
                "name": format!("{}/{}", info.resource, sub.name()),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": sub_kind,
                "verbs": sub.verbs(),
            });
            // Only where the subresource's kind is of another group (kubectl
            // drain finds the Eviction's version here).
            if matches!(
                sub,
                Subresource::Scale | Subresource::Eviction | Subresource::Token
            ) {
                entry["group"] = json!(sub_group);
                entry["version"] = json!(sub_version);
            }
            resources.push(entry);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": registry::group_version(group, version),
        "resources": resources,
    }))
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = registry::kinds_in(group, version)
        .map(|info| {
            let subresources: Vec<Value> = info
                .subresources
                .iter()
                .map(|sub| {
                    let (g, v, k) = subresource_kind(info, *sub);
                    json!({
                        "subresource": sub.name(),
                        "responseKind": {"group": g, "version": v, "kind": k},
                        "verbs": sub.verbs(),
                    })
                })
                .collect();
            let mut resource = json!({
                "resource": info.resource,
                "responseKind": {"group": info.group, "version": info.version, "kind": info.name},
                "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": info.singular,
                "verbs": info.verbs(),
            });
            if !info.short_names.is_empty() {
                resource["shortNames"] = json!(info.short_names);
            }
            if !info.categories.is_empty() {
                resource["categories"] = json!(info.categories);
            }
            if !subresources.is_empty() {
                resource["subresources"] = Value::Array(subresources);
            }
            resource
        })
        .collect();
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

/// `/api` (`core`) or `/apis` as an aggregated `APIGroupDiscoveryList`.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({"metadata": {"name": ""}, "versions": [aggregated_version("", "v1")]})]
    } else {
        registry::groups()
            .iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| aggregated_version(group, v))
                    .collect();
                json!({"metadata": {"name": group}, "versions": versions})
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_a_current_kubernetes_one_with_every_field_clients_require() {
        let v = version();
        assert_eq!(v["gitVersion"], "v1.34.0+skiff");
        for field in [
            "major",
            "minor",
            "gitVersion",
            "gitCommit",
            "gitTreeState",
            "buildDate",
            "goVersion",
            "compiler",
            "platform",
        ] {
            assert!(v[field].is_string(), "{field}");
        }
    }

    #[test]
    fn resource_lists_carry_every_kind_of_the_group_with_its_subresources() {
        let core = resources("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(!names.contains(&"deployments"));
        let pods = &core["resources"][names.iter().position(|n| *n == "pods").unwrap()];
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["singularName"], "pod");

        let apps = resources("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resources("batch", "v2").is_none());
        assert!(resources("widgets.example.com", "v1").is_none());
        let batch = resources("batch", "v1").unwrap();
        assert_eq!(batch["resources"][0]["name"], "jobs");
        assert!(resources("", "v2").is_none());
        assert_eq!(
            groups()["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }

    #[test]
    fn autoscalers_are_listed_at_v2_preferred_and_at_v1() {
        let group = group("autoscaling").unwrap();
        assert_eq!(group["preferredVersion"]["groupVersion"], "autoscaling/v2");
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["groupVersion"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["autoscaling/v2", "autoscaling/v1"]);
        for version in ["v2", "v1"] {
            let list = resources("autoscaling", version).unwrap();
            assert_eq!(list["groupVersion"], format!("autoscaling/{version}"));
            let names: Vec<&str> = list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                [
                    "horizontalpodautoscalers",
                    "horizontalpodautoscalers/status"
                ],
                "{version}"
            );
            let hpa = &list["resources"][0];
            assert_eq!(hpa["kind"], "HorizontalPodAutoscaler");
            assert_eq!(hpa["shortNames"], json!(["hpa"]));
            assert_eq!(hpa["categories"], json!(["all"]));
            assert_eq!(hpa["verbs"], json!(skiff_objects::registry::VERBS));
        }
        let aggregated = aggregated(false);
        let autoscaling = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "autoscaling")
            .unwrap();
        let versions: Vec<&str> = autoscaling["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v2", "v1"]);
        let v1 = &autoscaling["versions"][1]["resources"][0];
        assert_eq!(v1["resource"], "horizontalpodautoscalers");
        assert_eq!(
            v1["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "HorizontalPodAutoscaler"})
        );
        assert_eq!(v1["subresources"][0]["responseKind"]["version"], "v1");
    }

    #[test]
    fn events_are_listed_in_both_groups_with_every_verb() {
        for group in ["", "events.k8s.io"] {
            let list = resources(group, "v1").unwrap();
            let events = list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "events")
                .cloned()
                .unwrap_or_else(|| panic!("no events in {group:?}"));
            assert_eq!(events["kind"], "Event");
            assert_eq!(events["namespaced"], true);
            assert_eq!(events["shortNames"], json!(["ev"]));
            assert_eq!(events["verbs"], json!(skiff_objects::registry::VERBS));
        }
        let names: Vec<Value> = groups()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].clone())
            .collect();
        assert!(names.contains(&json!("events.k8s.io")), "{names:?}");
    }

    #[test]
    fn pods_list_log_and_proxy_and_services_proxy_as_kube_apiserver_does() {
        let core = resources("", "v1").unwrap();
        let entry = |name: &str| -> Value {
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} is not listed"))
        };
        let log = entry("pods/log");
        assert_eq!(log["kind"], "Pod");
        assert_eq!(log["verbs"], json!(["get"]));
        // What kubectl drain looks for (CheckEvictionSupport).
        let eviction = entry("pods/eviction");
        assert_eq!(eviction["kind"], "Eviction");
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["version"], "v1");
        assert_eq!(eviction["verbs"], json!(["create"]));
        // What kubectl create token posts to, as kube-apiserver lists it.
        let token = entry("serviceaccounts/token");
        assert_eq!(
            token,
            json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            })
        );
        let exec = entry("pods/exec");
        assert_eq!(exec["kind"], "PodExecOptions");
        assert_eq!(exec["verbs"], json!(["create", "get"]));
        assert_eq!(entry("pods/portforward")["kind"], "PodPortForwardOptions");
        let attach = entry("pods/attach");
        assert_eq!(attach["kind"], "PodAttachOptions");
        assert_eq!(attach["verbs"], json!(["create", "get"]));
        let proxy = entry("pods/proxy");
        assert_eq!(proxy["kind"], "PodProxyOptions");
        assert_eq!(
            proxy["verbs"],
            json!(["create", "delete", "get", "patch", "update"])
        );
        assert!(proxy.get("group").is_none(), "{proxy}");
        let service_proxy = entry("services/proxy");
        assert_eq!(service_proxy["kind"], "ServiceProxyOptions");
        assert_eq!(service_proxy["verbs"], proxy["verbs"]);
        assert_eq!(
            entry("pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );

        let core = aggregated(true);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        let subresources: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(
            subresources,
            [
                "attach",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "status"
            ]
        );
        assert_eq!(
            pods["subresources"][1]["responseKind"],
            json!({"group": "policy", "version": "v1", "kind": "Eviction"})
        );
        // attach, exec and portforward: create (WebSocket clients) and get.
        assert_eq!(pods["subresources"][0]["verbs"], json!(["create", "get"]));
        assert_eq!(pods["subresources"][2]["verbs"], json!(["create", "get"]));
        assert_eq!(pods["subresources"][3]["verbs"], json!(["get"]));
        assert_eq!(pods["subresources"][4]["verbs"], json!(["create", "get"]));
        assert_eq!(
            pods["subresources"][5]["responseKind"],
            json!({"group": "", "version": "v1", "kind": "PodProxyOptions"})
        );
    }

    #[test]
    fn the_access_reviews_are_listed_with_the_verb_create_alone() {
        let authorization = resources("authorization.k8s.io", "v1").unwrap();
        let listed: Vec<(&str, &Value)> = authorization["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), &r["verbs"]))
            .collect();
        let create = json!(["create"]);
        assert_eq!(
            listed,
            [
                ("selfsubjectaccessreviews", &create),
                ("selfsubjectrulesreviews", &create),
                ("subjectaccessreviews", &create)
            ]
        );
        assert_eq!(
            authorization["resources"][0]["kind"],
            "SelfSubjectAccessReview"
        );
        assert_eq!(authorization["resources"][0]["namespaced"], false);
        let authentication = resources("authentication.k8s.io", "v1").unwrap();
        assert_eq!(
            authentication["resources"],
            json!([{
                "name": "selfsubjectreviews",
                "singularName": "selfsubjectreview",
                "namespaced": false,
                "kind": "SelfSubjectReview",
                "verbs": ["create"],
                "storageVersionHash": "",
            }])
        );
        let listed = groups();
        let names: Vec<&str> = listed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"authorization.k8s.io"), "{names:?}");
        assert!(names.contains(&"authentication.k8s.io"), "{names:?}");
        // Aggregated discovery says the same; stored kinds keep every verb.
        let apis = aggregated(false);
        let group = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "authentication.k8s.io")
            .unwrap();
        let review = &group["versions"][0]["resources"][0];
        assert_eq!(review["resource"], "selfsubjectreviews");
        assert_eq!(review["verbs"], json!(["create"]));
        assert_eq!(review["scope"], "Cluster");
        let core = resources("", "v1").unwrap();
        let verbs = |name: &str| {
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .map(|r| r["verbs"].clone())
                .unwrap()
        };
        assert_eq!(verbs("pods").as_array().unwrap().len(), 8);
        // As kube-apiserver: a namespace is deleted one at a time.
        assert_eq!(
            verbs("namespaces"),
            json!(["create", "delete", "get", "list", "patch", "update", "watch"])
        );
    }

    #[test]
    fn aggregated_discovery_is_offered_only_when_asked_for() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        let apis = aggregated(false);
        assert_eq!(apis["items"][0]["metadata"]["name"], "apps");
        let deployments = &apis["items"][0]["versions"][0]["resources"][0];
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(
            deployments["subresources"][1]["responseKind"]["kind"],
            "Scale"
        );
        let core = aggregated(true);
        assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    }

    #[test]
    fn the_metrics_api_is_discovered_with_get_and_list_as_metrics_server_serves_it() {
        let names: Vec<Value> = groups()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].clone())
            .collect();
        assert!(names.contains(&json!("metrics.k8s.io")), "{names:?}");
        let metrics = group("metrics.k8s.io").unwrap();
        assert_eq!(
            metrics["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let list = resources("metrics.k8s.io", "v1beta1").unwrap();
        let resources = list["resources"].as_array().unwrap();
        let found: Vec<(&str, &str, bool)> = resources
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap();
                let kind = r["kind"].as_str().unwrap();
                (name, kind, r["namespaced"].as_bool().unwrap())
            })
            .collect();
        assert_eq!(
            found,
            [
                ("nodes", "NodeMetrics", false),
                ("pods", "PodMetrics", true)
            ]
        );
        assert!(resources
            .iter()
            .all(|r| r["verbs"] == json!(["get", "list"])));
        let apis = aggregated(false);
        let item = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(item["versions"][0]["version"], "v1beta1");
        let pods = &item["versions"][0]["resources"][1];
        assert_eq!(pods["resource"], "pods");
        assert_eq!(pods["responseKind"]["kind"], "PodMetrics");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["verbs"], json!(["get", "list"]));
    }
}
