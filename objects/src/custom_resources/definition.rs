//! An `apiextensions.k8s.io/v1` CustomResourceDefinition read into what
//! serving its objects needs ([`Definition`]: group, names, scope, and per
//! version whether it is served or stored, its structural schema, its
//! `status` and `scale` subresources and its printer columns), and the
//! checks kube-apiserver makes of a CRD before it stores one
//! ([`Definition::examine`]'s problems: the name is `<plural>.<group>`,
//! names are DNS labels, one storage version, a structural schema for every
//! version, scale paths under `.spec`/`.status`, printer columns, a
//! protected group's approval annotation), each naming its field.
//! Conversion webhooks are not served: a CRD asking for one is refused.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use skiff_proto::v1::{GenericObject, ObjectMeta};

use super::json_path::JsonPath;
use super::schema::{Problem, Schema};

/// The API group of CustomResourceDefinitions.
pub const GROUP: &str = "apiextensions.k8s.io";
/// The finalizer that holds a CRD until its objects are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The annotation a CRD in a protected group (`*.k8s.io`,
/// `*.kubernetes.io`) must carry.
pub const APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";

/// The names a CRD gives its kind (`spec.names`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

/// Where a CRD's objects live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Namespaced,
    Cluster,
}

/// A version's `scale` subresource: where the replicas and the selector
/// are (paths of fields only).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub value_type: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub json_path: JsonPath,
}

/// One of a CRD's versions.
#[derive(Debug, Clone, Default)]
pub struct Version {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub deprecated: bool,
    pub deprecation_warning: Option<String>,
    pub schema: Option<Schema>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<PrinterColumn>,
}

/// A CustomResourceDefinition, as serving its objects needs it.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    /// `metadata.name`: `<plural>.<group>`.
    pub name: String,
    pub resource_version: String,
    pub creation_timestamp: String,
    /// Marked for deletion: its objects are being deleted, none created.
    pub deleting: bool,
    pub group: String,
    pub names: Names,
    pub scope: Scope,
    pub versions: Vec<Version>,
}

impl Definition {
    /// Reads a CRD for serving: `None` when it lacks what that needs (a
    /// group, a plural, a kind, exactly one storage version), which
    /// [`Definition::examine`] would have refused.
    pub fn read(object: &GenericObject) -> Option<Definition> {
        let (definition, _) = Definition::examine(object, &|_: &str| false);
        let storage = definition.versions.iter().filter(|v| v.storage).count();
        let usable = !definition.group.is_empty()
            && !definition.names.plural.is_empty()
            && !definition.names.kind.is_empty()
            && storage == 1;
        usable.then_some(definition)
    }

    /// Reads a CRD and every problem kube-apiserver would refuse it for.
    /// `builtin_group` says which groups the server serves itself (a CRD
    /// may not add kinds to them).
    pub fn examine(
        object: &GenericObject,
        builtin_group: &dyn Fn(&str) -> bool,
    ) -> (Definition, Vec<Problem>) {
        let meta = object.metadata.clone().unwrap_or_default();
        let content = match serde_json::from_slice::<Value>(&object.content) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut problems = Vec::new();
        let spec = content.get("spec").cloned().unwrap_or(Value::Null);
        let mut definition = Definition {
            name: meta.name.clone(),
            resource_version: meta.resource_version.clone(),
            creation_timestamp: meta.creation_timestamp.clone(),
            deleting: !meta.deletion_timestamp.is_empty(),
            ..Definition::default()
        };
        if !spec.is_object() {
            problems.push(("spec".to_owned(), "Required value".to_owned()));
            return (definition, problems);
        }
        definition.group = text(&spec["group"]).to_owned();
        check_group(&definition.group, &meta, builtin_group, &mut problems);
        definition.names = read_names(&spec["names"], &mut problems);
        let wanted = format!("{}.{}", definition.names.plural, definition.group);
        if !definition.names.plural.is_empty()
            && !definition.group.is_empty()
            && meta.name != wanted
        {
            problems.push((
                "metadata.name".to_owned(),
                format!(
                    "Invalid value: {}: must be spec.names.plural+\".\"+spec.group",
                    Value::from(meta.name.as_str())
                ),
            ));
        }
        definition.scope = match text(&spec["scope"]) {
            "Namespaced" => Scope::Namespaced,
            "Cluster" => Scope::Cluster,
            "" => {
                problems.push(("spec.scope".to_owned(), "Required value".to_owned()));
                Scope::Namespaced
            }
            other => {
                problems.push((
                    "spec.scope".to_owned(),
                    format!(
                        "Unsupported value: {}: supported values: \"Cluster\", \"Namespaced\"",
                        Value::from(other)
                    ),
                ));
                Scope::Namespaced
            }
        };
        if spec["preserveUnknownFields"] == Value::Bool(true) {
            problems.push((
                "spec.preserveUnknownFields".to_owned(),
                "Invalid value: true: must be false; set x-kubernetes-preserve-unknown-fields: true in spec.versions[*].schema.openAPIV3Schema instead".to_owned(),
            ));
        }
        match text(&spec["conversion"]["strategy"]) {
            "" | "None" => {}
            other => problems.push((
                "spec.conversion.strategy".to_owned(),
                format!(
                    "Unsupported value: {}: supported values: \"None\" (conversion webhooks are not served)",
                    Value::from(other)
                ),
            )),
        }
        definition.versions = read_versions(&spec["versions"], &mut problems);
        (definition, problems)
    }

    /// The version objects are stored at.
    pub fn storage_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.storage)
    }

    /// The version called `name`.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The served versions, the preferred one first (Kubernetes' version
    /// priority: GA, then beta, then alpha, newer first).
    pub fn served_versions(&self) -> Vec<&Version> {
        let mut served: Vec<&Version> = self.versions.iter().filter(|v| v.served).collect();
        served.sort_by(|a, b| version_priority(&a.name, &b.name));
        served
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
}

/// Kubernetes' version priority (`version.CompareKubeAwareVersionStrings`,
/// highest first): `v2` before `v1` before `v1beta2` before `v1beta1`
/// before `v1alpha1`, then versions of other forms alphabetically.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        if major == 0 {
            return None;
        }
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (stage, minor) = if let Some(m) = tail.strip_prefix("beta") {
            (1, m)
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (0, m)
        } else {
            return None;
        };
        if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((major, stage, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => {
            // Stage first (GA, beta, alpha), then the numbers, highest first.
            sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na))
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A DNS-1035 label, as Kubernetes checks resource names with.
fn is_dns_1035_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

const DNS_1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

fn dns_1035(path: &str, value: &str, problems: &mut Vec<Problem>) {
    if !is_dns_1035_label(value) {
        problems.push((
            path.to_owned(),
            format!("Invalid value: {}: {DNS_1035}", Value::from(value)),
        ));
    }
}

fn check_group(
    group: &str,
    meta: &ObjectMeta,
    builtin_group: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) {
    let path = "spec.group".to_owned();
    if group.is_empty() {
        problems.push((path, "Required value".to_owned()));
        return;
    }
    let subdomain = group.len() <= 253
        && group.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if !subdomain || !group.contains('.') {
        problems.push((
            path,
            format!(
                "Invalid value: {}: should be a domain with at least one dot",
                Value::from(group)
            ),
        ));
        return;
    }
    if builtin_group(group) {
        problems.push((
            path,
            format!(
                "Invalid value: {}: the group is served by the API server itself",
                Value::from(group)
            ),
        ));
        return;
    }
    let protected = group == "k8s.io"
        || group.ends_with(".k8s.io")
        || group == "kubernetes.io"
        || group.ends_with(".kubernetes.io");
    if protected && !meta.annotations.contains_key(APPROVAL_ANNOTATION) {
        problems.push((
            format!("metadata.annotations[{APPROVAL_ANNOTATION}]"),
            format!("Required value: protected groups must have approval annotation {APPROVAL_ANNOTATION:?}, see https://github.com/kubernetes/enhancements/pull/1111"),
        ));
    }
}

fn string_list(value: &Value, path: &str, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                match item.as_str() {
                    Some(s) => {
                        dns_1035(&at, s, problems);
                        if out.iter().any(|o| o == s) {
                            problems.push((at, format!("Duplicate value: {}", Value::from(s))));
                        } else {
                            out.push(s.to_owned());
                        }
                    }
                    None => problems.push((at, format!("Invalid value: {item}: must be a string"))),
                }
            }
        }
        other => problems.push((
            path.to_owned(),
            format!("Invalid value: {other}: must be a list"),
        )),
    }
    out
}

fn read_names(names: &Value, problems: &mut Vec<Problem>) -> Names {
    let plural = text(&names["plural"]).to_owned();
    let kind = text(&names["kind"]).to_owned();
    if plural.is_empty() {
        problems.push(("spec.names.plural".to_owned(), "Required value".to_owned()));
    } else {
        dns_1035("spec.names.plural", &plural, problems);
    }
    if kind.is_empty() {
        problems.push(("spec.names.kind".to_owned(), "Required value".to_owned()));
    } else if !is_dns_1035_label(&kind.to_ascii_lowercase()) || !kind.is_ascii() {
        problems.push((
            "spec.names.kind".to_owned(),
            format!(
                "Invalid value: {}: may have mixed case, but should otherwise match: {DNS_1035}",
                Value::from(kind.as_str())
            ),
        ));
    }
    let singular = match text(&names["singular"]) {
        "" => kind.to_ascii_lowercase(),
        given => {
            dns_1035("spec.names.singular", given, problems);
            given.to_owned()
        }
    };
    let list_kind = match text(&names["listKind"]) {
        "" => format!("{kind}List"),
        given => given.to_owned(),
    };
    if !kind.is_empty() && list_kind == kind {
        problems.push((
            "spec.names.listKind".to_owned(),
            format!(
                "Invalid value: {}: kind and listKind cannot be the same",
                Value::from(list_kind.as_str())
            ),
        ));
    }
    Names {
        plural,
        singular,
        kind,
        list_kind,
        short_names: string_list(&names["shortNames"], "spec.names.shortNames", problems),
        categories: string_list(&names["categories"], "spec.names.categories", problems),
    }
}

fn read_versions(versions: &Value, problems: &mut Vec<Problem>) -> Vec<Version> {
    let Some(items) = versions.as_array().filter(|v| !v.is_empty()) else {
        problems.push((
            "spec.versions".to_owned(),
            "Required value: must have exactly one version marked as storage version".to_owned(),
        ));
        return Vec::new();
    };
    let mut out: Vec<Version> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = text(&item["name"]).to_owned();
        if name.is_empty() {
            problems.push((format!("{path}.name"), "Required value".to_owned()));
        } else {
            dns_1035(&format!("{path}.name"), &name, problems);
            if out.iter().any(|v| v.name == name) {
                problems.push((
                    format!("{path}.name"),
                    format!("Duplicate value: {}", Value::from(name.as_str())),
                ));
            }
        }
        let schema_path = format!("{path}.schema.openAPIV3Schema");
        let schema = match &item["schema"]["openAPIV3Schema"] {
            Value::Null => {
                problems.push((
                    schema_path,
                    "Required value: schemas are required".to_owned(),
                ));
                None
            }
            value => Some(Schema::parse(value, &schema_path, problems)),
        };
        let subresources = &item["subresources"];
        let scale = match &subresources["scale"] {
            Value::Null => None,
            scale => read_scale(scale, &format!("{path}.subresources.scale"), problems),
        };
        out.push(Version {
            name,
            served: item["served"].as_bool().unwrap_or(false),
            storage: item["storage"].as_bool().unwrap_or(false),
            deprecated: item["deprecated"].as_bool().unwrap_or(false),
            deprecation_warning: item["deprecationWarning"].as_str().map(str::to_owned),
            schema,
            status: !subresources["status"].is_null(),
            scale,
            columns: read_columns(
                &item["additionalPrinterColumns"],
                &format!("{path}.additionalPrinterColumns"),
                problems,
            ),
        });
    }
    let storage = out.iter().filter(|v| v.storage).count();
    if storage != 1 {
        problems.push((
            "spec.versions".to_owned(),
            format!("Invalid value: {storage} storage versions: must have exactly one version marked as storage version"),
        ));
    }
    out
}

fn read_scale(scale: &Value, path: &str, problems: &mut Vec<Problem>) -> Option<ScalePaths> {
    let mut read = |key: &str, roots: &[&str], required: bool| -> Option<Vec<String>> {
        let at = format!("{path}.{key}");
        let given = text(&scale[key]);
        if given.is_empty() {
            if required {
                problems.push((at, "Required value".to_owned()));
            }
            return None;
        }
        let fields = JsonPath::parse(given).ok().and_then(|p| {
            p.fields()
                .map(|f| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        });
        match fields {
            Some(fields) if fields.len() > 1 && roots.contains(&fields[0].as_str()) => Some(fields),
            _ => {
                let under = roots
                    .iter()
                    .map(|r| format!(".{r}"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                problems.push((
                    at,
                    format!(
                        "Invalid value: {}: should be a json path under {under}",
                        Value::from(given)
                    ),
                ));
                None
            }
        }
    };
    let spec_replicas = read("specReplicasPath", &["spec"], true);
    let status_replicas = read("statusReplicasPath", &["status"], true);
    let label_selector = read("labelSelectorPath", &["spec", "status"], false);
    Some(ScalePaths {
        spec_replicas: spec_replicas?,
        status_replicas: status_replicas?,
        label_selector,
    })
}

fn read_columns(columns: &Value, path: &str, problems: &mut Vec<Problem>) -> Vec<PrinterColumn> {
    let Some(items) = columns.as_array() else {
        return Vec::new();
    };
    let mut out: Vec<PrinterColumn> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |key: &str| format!("{path}[{i}].{key}");
        let name = text(&item["name"]).to_owned();
        if name.is_empty() {
            problems.push((at("name"), "Required value".to_owned()));
        } else if out.iter().any(|c| c.name == name) {
            problems.push((
                at("name"),
                format!("Duplicate value: {}", Value::from(name.as_str())),
            ));
        }
        let value_type = text(&item["type"]).to_owned();
        if !matches!(
            value_type.as_str(),
            "integer" | "number" | "string" | "boolean" | "date"
        ) {
            problems.push((
                at("type"),
                format!(
                    "Unsupported value: {}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
                    Value::from(value_type.as_str())
                ),
            ));
        }
        let given = text(&item["jsonPath"]);
        let json_path = match JsonPath::parse(given) {
            _ if given.is_empty() => {
                problems.push((at("jsonPath"), "Required value".to_owned()));
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                problems.push((
                    at("jsonPath"),
                    format!("Invalid value: {}: {}", Value::from(given), e.reason),
                ));
                None
            }
        };
        let priority = item["priority"].as_i64().unwrap_or(0);
        if priority < 0 {
            problems.push((
                at("priority"),
                format!("Invalid value: {priority}: must be non-negative"),
            ));
        }
        if let Some(json_path) = json_path {
            out.push(PrinterColumn {
                name,
                value_type,
                format: text(&item["format"]).to_owned(),
                description: text(&item["description"]).to_owned(),
                priority: i32::try_from(priority).unwrap_or(0),
                json_path,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A CRD object named `name` with `spec`.
    fn crd(name: &str, spec: Value) -> GenericObject {
        GenericObject {
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&json!({ "spec": spec })).unwrap(),
        }
    }

    fn widgets_spec() -> Value {
        json!({
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                     "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                 }}},
                 "subresources": {"status": {}, "scale": {
                     "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [
                     {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
            ],
        })
    }

    #[test]
    fn a_valid_definition_is_read_with_its_versions() {
        let (definition, problems) =
            Definition::examine(&crd("widgets.example.com", widgets_spec()), &|_: &str| {
                false
            });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(definition.names.singular, "widget");
        assert_eq!(definition.names.list_kind, "WidgetList");
        assert_eq!(definition.names.short_names, ["wd"]);
        let storage = definition.storage_version().unwrap();
        assert_eq!(storage.name, "v1");
        assert!(storage.status);
        let scale = storage.scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas, ["spec", "replicas"]);
        assert_eq!(storage.columns[0].name, "Replicas");
        let served: Vec<&str> = definition
            .served_versions()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(served, ["v1", "v1alpha1"]);
        assert!(Definition::read(&crd("widgets.example.com", widgets_spec())).is_some());
    }

    #[test]
    fn definitions_kubernetes_refuses_are_reported_by_field() {
        let mut spec = widgets_spec();
        spec["versions"][0]["storage"] = json!(true);
        spec["names"]["plural"] = json!("Widgets");
        spec["scope"] = json!("Global");
        spec["versions"][1]["subresources"]["scale"]["specReplicasPath"] = json!(".status.x");
        spec["versions"][1]["additionalPrinterColumns"][0]["type"] = json!("float");
        let (_, problems) =
            Definition::examine(&crd("widgets.example.com", spec), &|_: &str| false);
        let fields: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        for wanted in [
            "spec.names.plural",
            "spec.scope",
            "spec.versions",
            "spec.versions[1].subresources.scale.specReplicasPath",
            "spec.versions[1].additionalPrinterColumns[0].type",
        ] {
            assert!(fields.contains(&wanted), "{wanted} in {problems:?}");
        }
        // The name must be <plural>.<group>.
        let (_, problems) =
            Definition::examine(&crd("gadgets.example.com", widgets_spec()), &|_: &str| {
                false
            });
        assert_eq!(problems[0].0, "metadata.name");
        // Groups the server serves, and protected ones without approval.
        let mut apps = widgets_spec();
        apps["group"] = json!("apps.example.com");
        let (_, problems) =
            Definition::examine(&crd("widgets.apps.example.com", apps), &|g: &str| {
                g == "apps.example.com"
            });
        assert_eq!(problems[0].0, "spec.group");
        let mut protected = widgets_spec();
        protected["group"] = json!("x.k8s.io");
        let (_, problems) =
            Definition::examine(&crd("widgets.x.k8s.io", protected), &|_: &str| false);
        assert_eq!(
            problems[0].0,
            "metadata.annotations[api-approved.kubernetes.io]"
        );
        // A version without a schema.
        let mut bare = widgets_spec();
        bare["versions"][0]["schema"] = Value::Null;
        let (_, problems) =
            Definition::examine(&crd("widgets.example.com", bare), &|_: &str| false);
        assert_eq!(
            problems,
            [(
                "spec.versions[0].schema.openAPIV3Schema".to_owned(),
                "Required value: schemas are required".to_owned()
            )]
        );
    }

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut versions = vec!["v1alpha1", "foo", "v2", "v1beta1", "v1", "v1beta2", "bar"];
        versions.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            versions,
            ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }
}
