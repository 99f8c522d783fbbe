//! The OpenAPI 3.0 documents (`/openapi/v3/api/v1`,
//! `/openapi/v3/apis/{group}/{version}`): one per group version served,
//! with the schemas of its kinds and of everything they refer to
//! (`components.schemas`), and `paths` for each kind's resource.
//!
//! kubectl 1.27 and later read three things from a kind's paths: `explain`
//! finds the kind of a resource from the `x-kubernetes-group-version-kind`
//! of the operations on its collection (`pkg/explain/v2/templates`);
//! `apply` and `create` skip client-side validation when the PATCH
//! operation of the kind lists a `fieldValidation` query parameter (the
//! server validates; cli-runtime `query_param_verifier_v3.go`); and `apply`
//! computes its strategic merge patch from these schemas when that PATCH
//! operation accepts `application/strategic-merge-patch+json`
//! (`pkg/cmd/apply/patcher.go`).

use serde_json::{json, Map, Value};

use super::schemas::{self, Dialect, GROUP_VERSION_KIND};
use skiff_objects::api_schema::MESSAGES;
use skiff_objects::registry::{self, KindInfo};

/// The request body of every PATCH (Kubernetes' name for it).
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// The patch types the REST API accepts.
const PATCH_TYPES: [&str; 4] = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// A served group version as the v3 index names it: `api/v1`,
/// `apis/apps/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GroupVersion {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
}

impl GroupVersion {
    /// The path below `/openapi/v3/`.
    pub(super) fn path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }

    /// Where its resources are: `/api/v1`, `/apis/apps/v1`.
    fn api_prefix(&self) -> String {
        format!("/{}", self.path())
    }
}

/// Every group version the registry serves and the documents describe,
/// core first, in discovery order.
pub(super) fn group_versions() -> Vec<GroupVersion> {
    let mut all: Vec<GroupVersion> = Vec::new();
    for info in registry::built_in().filter(|i| i.in_openapi()) {
        let gv = GroupVersion {
            group: info.group,
            version: info.version,
        };
        if !all.contains(&gv) {
            all.push(gv);
        }
    }
    all
}

/// The document of `gv`, as JSON text.
pub(super) fn document(gv: &GroupVersion) -> Vec<u8> {
    let mut roots = Vec::new();
    let mut paths = Map::new();
    for info in registry::kinds_in(gv.group, gv.version).filter(|i| i.in_openapi()) {
        let message = schemas::kind_message(info.group, info.version, info.name);
        if let Some(message) = message {
            roots.push(message);
            roots.extend(schemas::list_message(message));
        }
        add_paths(gv, info, message, &mut paths);
    }
    let mut components = schemas::definitions(roots, Dialect::V3);
    components.insert(PATCH.to_owned(), json!({"type": "object"}));
    let document = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": components},
    });
    serde_json::to_vec(&document).unwrap_or_default()
}

/// The paths of `info`'s resource: its collection (list, create), each
/// object (get, replace, patch, delete) and, for a namespaced kind, the
/// list across namespaces.
fn add_paths(
    gv: &GroupVersion,
    info: &KindInfo,
    message: Option<usize>,
    paths: &mut Map<String, Value>,
) {
    let prefix = gv.api_prefix();
    let resource = info.resource;
    let collection = if info.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{resource}")
    } else {
        format!("{prefix}/{resource}")
    };
    let object = format!("{collection}/{{name}}");
    let gvk = schemas::group_version_kind(info.group, info.version, info.name);
    let kind_schema = message.map(|m| schemas::definition_name(&MESSAGES[m]));
    let list_schema = message
        .and_then(schemas::list_message)
        .map(|m| schemas::definition_name(&MESSAGES[m]))
        .or_else(|| kind_schema.clone());
    let operation = |action: &str| Operation {
        action: action.to_owned(),
        gvk: gvk.clone(),
        parameters: Vec::new(),
        body: None,
        answer: None,
    };
    let writes = || {
        vec![
            query_parameter("dryRun", "string"),
            query_parameter("fieldManager", "string"),
            query_parameter("fieldValidation", "string"),
        ]
    };
    let kind_body = |schema: Option<&str>| {
        let mut content = Map::new();
        content.insert("*/*".into(), media(schema));
        content
    };

    let list = Operation {
        answer: list_schema,
        ..operation("list")
    };
    if info.namespaced {
        paths.insert(
            format!("{prefix}/{resource}"),
            path_item(&[("get", list.clone())], Vec::new()),
        );
    }
    let create = Operation {
        parameters: writes(),
        body: Some(kind_body(kind_schema.as_deref())),
        answer: kind_schema.clone(),
        ..operation("post")
    };
    let mut collection_parameters = Vec::new();
    if info.namespaced {
        collection_parameters.push(path_parameter("namespace"));
    }
    let mut object_parameters = vec![path_parameter("name")];
    object_parameters.extend(collection_parameters.iter().cloned());
    paths.insert(
        collection,
        path_item(&[("get", list), ("post", create)], collection_parameters),
    );

    let get = Operation {
        answer: kind_schema.clone(),
        ..operation("get")
    };
    let replace = Operation {
        parameters: writes(),
        body: Some(kind_body(kind_schema.as_deref())),
        answer: kind_schema.clone(),
        ..operation("put")
    };
    let mut patch_parameters = writes();
    patch_parameters.push(query_parameter("force", "boolean"));
    let mut patch_content = Map::new();
    for patch_type in PATCH_TYPES {
        patch_content.insert(patch_type.into(), media(Some(PATCH)));
    }
    let patch = Operation {
        parameters: patch_parameters,
        body: Some(patch_content),
        answer: kind_schema,
        ..operation("patch")
    };
    let delete = operation("delete");
    let operations = [
        ("get", get),
        ("put", replace),
        ("patch", patch),
        ("delete", delete),
    ];
    paths.insert(object, path_item(&operations, object_parameters));
}

/// One operation on a path, as the document writes it.
#[derive(Clone)]
struct Operation {
    /// `x-kubernetes-action`: list, post, get, put, patch, delete.
    action: String,
    gvk: Value,
    /// Its query parameters.
    parameters: Vec<Value>,
    /// The request body's media types.
    body: Option<Map<String, Value>>,
    /// The definition a success answers with.
    answer: Option<String>,
}

impl Operation {
    fn to_json(&self) -> Value {
        let mut ok = Map::new();
        ok.insert("description".into(), json!("OK"));
        if let Some(answer) = &self.answer {
            let mut content = Map::new();
            content.insert("application/json".into(), media(Some(answer.as_str())));
            ok.insert("content".into(), Value::Object(content));
        }
        let mut responses = Map::new();
        responses.insert("200".into(), Value::Object(ok));
        let mut operation = Map::new();
        operation.insert("responses".into(), Value::Object(responses));
        operation.insert("x-kubernetes-action".into(), json!(self.action));
        operation.insert(GROUP_VERSION_KIND.into(), self.gvk.clone());
        if !self.parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(self.parameters.clone()));
        }
        if let Some(body) = &self.body {
            let mut request = Map::new();
            request.insert("content".into(), Value::Object(body.clone()));
            request.insert("required".into(), json!(true));
            operation.insert("requestBody".into(), Value::Object(request));
        }
        Value::Object(operation)
    }
}

fn path_item(operations: &[(&str, Operation)], parameters: Vec<Value>) -> Value {
    let mut item = Map::new();
    for (method, operation) in operations {
        item.insert((*method).to_owned(), operation.to_json());
    }
    if !parameters.is_empty() {
        item.insert("parameters".into(), Value::Array(parameters));
    }
    Value::Object(item)
}

/// A media type's entry: the schema of its body, if skiff has one.
fn media(schema: Option<&str>) -> Value {
    match schema {
        Some(name) => json!({"schema": {"$ref": Dialect::V3.reference(name)}}),
        None => json!({}),
    }
}

fn query_parameter(name: &str, kind: &str) -> Value {
    json!({"in": "query", "name": name, "schema": {"type": kind, "uniqueItems": true}})
}

fn path_parameter(name: &str) -> Value {
    json!({
        "in": "path",
        "name": name,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMAS: &str = "#/components/schemas/";

    fn parsed(group: &'static str, version: &'static str) -> Value {
        serde_json::from_slice(&document(&GroupVersion { group, version })).unwrap()
    }

    fn schema<'d>(document: &'d Value, name: &str) -> &'d Value {
        let schema = &document["components"]["schemas"][name];
        assert!(schema.is_object(), "{name} is not in the document");
        schema
    }

    fn refers_to(name: &str) -> Value {
        json!({"allOf": [{"$ref": format!("{SCHEMAS}{name}")}]})
    }

    #[test]
    fn apps_v1_has_deployment_with_its_kind_and_its_fields_typed() {
        let document = parsed("apps", "v1");
        assert_eq!(document["openapi"], "3.0.0");
        let deployment = schema(&document, "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            deployment[GROUP_VERSION_KIND],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(deployment["type"], "object");
        assert_eq!(deployment["properties"]["kind"], json!({"type": "string"}));
        assert_eq!(
            deployment["properties"]["spec"],
            refers_to("io.k8s.api.apps.v1.DeploymentSpec")
        );
        let spec = &schema(&document, "io.k8s.api.apps.v1.DeploymentSpec")["properties"];
        assert_eq!(
            spec["replicas"],
            json!({"type": "integer", "format": "int32"})
        );
        assert_eq!(spec["paused"], json!({"type": "boolean"}));
        assert_eq!(
            spec["template"],
            refers_to("io.k8s.api.core.v1.PodTemplateSpec")
        );
        assert_eq!(
            spec["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        schema(&document, "io.k8s.api.core.v1.PodTemplateSpec");
        schema(&document, "io.k8s.api.core.v1.PodSpec");

        let rolling = schema(&document, "io.k8s.api.apps.v1.RollingUpdateDeployment");
        let int_or_string = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
        assert_eq!(rolling["properties"]["maxSurge"], refers_to(int_or_string));
        let int_or_string = schema(&document, int_or_string);
        assert_eq!(int_or_string["format"], "int-or-string");
        assert_eq!(int_or_string["x-kubernetes-int-or-string"], json!(true));
        assert_eq!(
            int_or_string["oneOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );

        let list = schema(&document, "io.k8s.api.apps.v1.DeploymentList");
        assert_eq!(
            list[GROUP_VERSION_KIND],
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            list["properties"]["items"]["items"],
            refers_to("io.k8s.api.apps.v1.Deployment")
        );
        // Only what apps/v1 refers to: no Pod.
        assert!(document["components"]["schemas"]
            .get("io.k8s.api.core.v1.Pod")
            .is_none());
    }

    #[test]
    fn core_v1_types_lists_maps_and_inlined_members_as_kubernetes_writes_them() {
        let document = parsed("", "v1");
        let pod = schema(&document, "io.k8s.api.core.v1.Pod");
        assert_eq!(
            pod[GROUP_VERSION_KIND],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        let pod_spec = &schema(&document, "io.k8s.api.core.v1.PodSpec")["properties"];
        assert_eq!(
            pod_spec["containers"],
            json!({
                "type": "array",
                "items": refers_to("io.k8s.api.core.v1.Container"),
                "x-kubernetes-patch-merge-key": "name",
                "x-kubernetes-patch-strategy": "merge",
            })
        );
        assert_eq!(
            pod_spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        // Tolerations have no merge key: the list is replaced.
        assert!(pod_spec["tolerations"]
            .get("x-kubernetes-patch-strategy")
            .is_none());
        assert_eq!(
            pod_spec["nodeSelector"],
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        let container = &schema(&document, "io.k8s.api.core.v1.Container")["properties"];
        assert_eq!(
            container["args"],
            json!({"type": "array", "items": {"type": "string"}})
        );
        assert_eq!(
            container["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );

        // VolumeSource's members are Volume's own.
        let volume = &schema(&document, "io.k8s.api.core.v1.Volume")["properties"];
        assert!(volume["configMap"].is_object());
        assert!(volume["name"].is_object());
        assert!(volume.get("volumeSource").is_none());

        let quantity = "io.k8s.apimachinery.pkg.api.resource.Quantity";
        let resources = schema(&document, "io.k8s.api.core.v1.ResourceRequirements");
        assert_eq!(
            resources["properties"]["limits"],
            json!({"type": "object", "additionalProperties": refers_to(quantity)})
        );
        assert_eq!(
            schema(&document, quantity)["oneOf"],
            json!([{"type": "string"}, {"type": "number"}])
        );
        let secret = &schema(&document, "io.k8s.api.core.v1.Secret")["properties"];
        assert_eq!(
            secret["data"]["additionalProperties"],
            json!({"type": "string", "format": "byte"})
        );
        let time = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
        let meta = schema(&document, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        assert_eq!(meta["properties"]["creationTimestamp"], refers_to(time));
        assert_eq!(meta["properties"]["generation"]["format"], "int64");
        assert_eq!(
            schema(&document, time),
            &json!({"type": "string", "format": "date-time"})
        );
        let entry = schema(
            &document,
            "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry",
        );
        assert_eq!(
            entry["properties"]["fieldsV1"],
            refers_to("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1")
        );
    }

    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(reference)) => out.push(reference.clone()),
                        _ => references(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_within_its_document() {
        for gv in group_versions() {
            let document: Value = serde_json::from_slice(&document(&gv)).unwrap();
            let mut found = Vec::new();
            references(&document, &mut found);
            assert!(found.len() > 10, "{}", gv.path());
            for reference in found {
                let name = reference
                    .strip_prefix(SCHEMAS)
                    .unwrap_or_else(|| panic!("{}: {reference}", gv.path()));
                assert!(
                    document["components"]["schemas"].get(name).is_some(),
                    "{}: {reference} does not resolve",
                    gv.path()
                );
            }
        }
    }

    /// What kubectl looks for: the PATCH operation of each kind with
    /// `fieldValidation` (cli-runtime's `supportsQueryParamV3`) and
    /// strategic merge patch (apply's `gvkSupportsPatchOpenAPIV3`), the
    /// kind of a resource's collection (explain's template) and the schema
    /// with that kind.
    #[test]
    fn every_served_kind_has_paths_kubectl_finds_it_by() {
        let served = group_versions();
        assert_eq!(served[0].path(), "api/v1");
        assert!(served.iter().any(|gv| gv.path() == "apis/apps/v1"));
        for gv in served {
            let document: Value = serde_json::from_slice(&document(&gv)).unwrap();
            let paths = document["paths"].as_object().unwrap();
            for info in registry::kinds_in(gv.group, gv.version).filter(|i| i.in_openapi()) {
                let gvk = schemas::group_version_kind(info.group, info.version, info.name);
                let patches: Vec<&Value> = paths
                    .values()
                    .filter_map(|path| path.get("patch"))
                    .filter(|patch| patch[GROUP_VERSION_KIND] == gvk)
                    .collect();
                assert_eq!(patches.len(), 1, "{}", info.name);
                let parameters = patches[0]["parameters"].as_array().unwrap();
                assert!(
                    parameters
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                    "{}",
                    info.name
                );
                let content = &patches[0]["requestBody"]["content"];
                assert!(content
                    .get("application/strategic-merge-patch+json")
                    .is_some());

                let all = format!("/{}/{}", gv.path(), info.resource);
                let collection = &document["paths"][all.as_str()];
                assert_eq!(collection["get"][GROUP_VERSION_KIND], gvk, "{all}");
                let components = document["components"]["schemas"].as_object().unwrap();
                let with_kind = components.values().filter(|schema| {
                    schema[GROUP_VERSION_KIND]
                        .as_array()
                        .is_some_and(|kinds| kinds.contains(&gvk))
                });
                assert_eq!(with_kind.count(), 1, "{}", info.name);
            }
        }
        let core: Value = serde_json::from_slice(&document(&GroupVersion {
            group: "",
            version: "v1",
        }))
        .unwrap();
        let pod = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(pod["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(pod["parameters"][0]["name"], "name");
        assert_eq!(pod["parameters"][1]["name"], "namespace");
        assert!(core["paths"]["/api/v1/nodes/{name}"]["put"].is_object());
    }
}
