//! Reading and writing objects as Kubernetes YAML/JSON manifests.
//!
//! A manifest file holds one or more YAML documents (JSON is YAML too), each
//! an object or a `kind: List` of objects. Every error names the file, the
//! document and where in it the problem is: a syntax error its line, an
//! unknown field or a wrong type its field path (and line when known).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::Kind;
use crate::with_body;

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: YAML syntax error{}: {message}", at_line(*line, *column))]
    Syntax {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{file}: document {document}: {message}")]
    Document {
        file: String,
        document: usize,
        message: String,
    },
    #[error("{file}: document {document} ({kind} {name:?}): unknown field \"{path}\" (use --strict=false to ignore unknown fields)")]
    UnknownField {
        file: String,
        document: usize,
        kind: Kind,
        name: String,
        path: String,
    },
    #[error("{file}: document {document} ({kind}): field \"{path}\"{}: {message}", at_line(*line, *column))]
    InvalidField {
        file: String,
        document: usize,
        kind: Kind,
        path: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn at_line(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// The objects read from one manifest, with warnings for what was ignored.
#[derive(Debug, Default)]
pub struct Manifest {
    pub objects: Vec<Object>,
    pub warnings: Vec<String>,
}

/// Reads every object from a YAML or JSON manifest. `file` names the input
/// in errors. With `strict`, an unknown field is an error; without, a warning.
pub fn parse_manifest(file: &str, text: &str, strict: bool) -> Result<Manifest, ManifestError> {
    // First pass: every document as a generic value, to catch syntax errors
    // and learn each document's kind.
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| syntax_error(file, &e))?;
        values.push(value);
    }
    let mut out = Manifest::default();
    // Second pass: each document's objects, decoded from JSON values as the
    // API decodes request bodies (one decoder for both); a field of the wrong
    // type is found in the text again for its line.
    for (index, value) in values.into_iter().enumerate() {
        let document = index + 1;
        if value.is_null() {
            continue;
        }
        let (api_version, kind_name) = type_meta(file, document, &value)?;
        if kind_name == "List" {
            let items = match value.get("items") {
                Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                Some(serde_yaml::Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(ManifestError::Document {
                        file: file.to_owned(),
                        document,
                        message: "`items` of a List must be a sequence".to_owned(),
                    })
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                let (api_version, kind_name) = type_meta(file, document, &item)?;
                let kind = check_kind(file, document, &api_version, &kind_name)?;
                let name = object_name(&item);
                let mut unknown = Vec::new();
                let object = decode_yaml_value(kind, &item, &mut unknown).map_err(|e| {
                    let mut e = e.within(&["items".to_owned(), i.to_string()]);
                    e.locate_in(text, index);
                    invalid_field(file, document, kind, e)
                })?;
                report_unknown(file, document, kind, &name, unknown, strict, &mut out)?;
                out.objects.push(object);
            }
            continue;
        }
        let kind = check_kind(file, document, &api_version, &kind_name)?;
        let name = object_name(&value);
        let mut unknown = Vec::new();
        let object = decode_yaml_value(kind, &value, &mut unknown).map_err(|mut e| {
            e.locate_in(text, index);
            invalid_field(file, document, kind, e)
        })?;
        report_unknown(file, document, kind, &name, unknown, strict, &mut out)?;
        out.objects.push(object);
    }
    Ok(out)
}

/// Decodes a YAML document's object through its JSON value.
fn decode_yaml_value(
    kind: Kind,
    value: &serde_yaml::Value,
    unknown: &mut Vec<String>,
) -> Result<Object, DecodeError> {
    let json = serde_json::to_value(value).map_err(|e| DecodeError {
        path: String::new(),
        segments: Vec::new(),
        line: None,
        column: None,
        message: format!("not a JSON object: {e}"),
    })?;
    decode(kind, json, unknown)
}

fn syntax_error(file: &str, e: &serde_yaml::Error) -> ManifestError {
    let location = e.location();
    ManifestError::Syntax {
        file: file.to_owned(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message: strip_location(&e.to_string()),
    }
}

/// serde_yaml appends " at line L column C" to messages; the error types
/// here carry the location themselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn type_meta(
    file: &str,
    document: usize,
    value: &serde_yaml::Value,
) -> Result<(String, String), ManifestError> {
    let doc_error = |message: String| ManifestError::Document {
        file: file.to_owned(),
        document,
        message,
    };
    if !value.is_mapping() {
        return Err(doc_error(
            "expected an object with apiVersion and kind".to_owned(),
        ));
    }
    let field = |name: &str| -> Result<String, ManifestError> {
        match value.get(name) {
            Some(serde_yaml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_yaml::Value::String(_)) | None | Some(serde_yaml::Value::Null) => {
                Err(doc_error(format!("missing required field \"{name}\"")))
            }
            Some(_) => Err(doc_error(format!("field \"{name}\" must be a string"))),
        }
    };
    let kind = field("kind")?;
    let api_version = field("apiVersion")?;
    Ok((api_version, kind))
}

fn check_kind(
    file: &str,
    document: usize,
    api_version: &str,
    kind_name: &str,
) -> Result<Kind, ManifestError> {
    let doc_error = |message: String| ManifestError::Document {
        file: file.to_owned(),
        document,
        message,
    };
    let kind = Kind::from_type(api_version, kind_name).map_err(|e| doc_error(e.to_string()))?;
    if kind.api_version() != api_version {
        return Err(doc_error(format!(
            "{kind} is served as apiVersion \"{}\", not \"{api_version}\"",
            kind.api_version()
        )));
    }
    Ok(kind)
}

fn object_name(value: &serde_yaml::Value) -> String {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn report_unknown(
    file: &str,
    document: usize,
    kind: Kind,
    name: &str,
    unknown: Vec<String>,
    strict: bool,
    out: &mut Manifest,
) -> Result<(), ManifestError> {
    if let Some(path) = unknown.first() {
        if strict {
            return Err(ManifestError::UnknownField {
                file: file.to_owned(),
                document,
                kind,
                name: name.to_owned(),
                path: path.clone(),
            });
        }
    }
    for path in unknown {
        out.warnings.push(format!(
            "{file}: document {document} ({kind} {name:?}): unknown field \"{path}\" ignored"
        ));
    }
    Ok(())
}

/// A typed decoding failure: where in the object, and why.
struct DecodeError {
    path: String,
    /// The path's map keys and sequence indices, to find it in the text.
    segments: Vec<String>,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

impl DecodeError {
    /// The error of an object found at `prefix` (a List's item).
    fn within(mut self, prefix: &[String]) -> DecodeError {
        let mut segments = prefix.to_vec();
        segments.append(&mut self.segments);
        self.segments = segments;
        self.path = format!("{}.{}", prefix.join("."), self.path)
            .trim_end_matches('.')
            .to_owned();
        self
    }

    /// Sets the line and column of the field this error names, found in
    /// the `document`th (from 0) document of `text`.
    ///
    /// A path's last segments may be one map key with dots in it
    /// (`metadata.labels.app.kubernetes.io/version`): the path as split is
    /// tried first, then with its last two, three, ... segments as one key.
    fn locate_in(&mut self, text: &str, document: usize) {
        let n = self.segments.len();
        let mut paths = vec![self.segments.clone()];
        for joined in 2..=n {
            let mut path = self.segments[..n - joined].to_vec();
            path.push(self.segments[n - joined..].join("."));
            paths.push(path);
        }
        for path in paths {
            let Some(doc) = serde_yaml::Deserializer::from_str(text).nth(document) else {
                return;
            };
            if let Some((line, column)) = crate::yaml_location::locate(doc, &path) {
                self.line = Some(line);
                self.column = Some(column);
                return;
            }
        }
    }
}

fn invalid_field(file: &str, document: usize, kind: Kind, e: DecodeError) -> ManifestError {
    ManifestError::InvalidField {
        file: file.to_owned(),
        document,
        kind,
        path: e.path,
        line: e.line,
        column: e.column,
        message: e.message,
    }
}

fn decode_typed<T: DeserializeOwned>(
    value: serde_json::Value,
    unknown: &mut Vec<String>,
) -> Result<T, DecodeError> {
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let ignoring = serde_ignored::Deserializer::new(value, &mut on_unknown);
    serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let segments = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        DecodeError {
            path: e.path().to_string(),
            segments,
            line: None,
            column: None,
            message: e.inner().to_string(),
        }
    })
}

/// `spec.containers.0.name`: serde_ignored's path without its `?` markers
/// for optional values.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let join = |parent: &Path<'_>, segment: String| {
        let parent = field_path(parent);
        if parent.is_empty() {
            segment
        } else {
            format!("{parent}.{segment}")
        }
    };
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(parent, index.to_string()),
        Path::Map { parent, key } => join(parent, key.clone()),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

fn decode(
    kind: Kind,
    value: serde_json::Value,
    unknown: &mut Vec<String>,
) -> Result<Object, DecodeError> {
    let body = match kind {
        Kind::Node => Body::Node(decode_typed::<v1::Node>(value, unknown)?),
        generic => {
            let object =
                super::generic::from_json(generic, value, unknown).map_err(|e| DecodeError {
                    segments: e.path.split('.').map(str::to_owned).collect(),
                    path: e.path,
                    line: None,
                    column: None,
                    message: e.message,
                })?;
            Body::Generic(object)
        }
    };
    Ok(Object { kind: Some(body) })
}

/// An API request body's object that could not be decoded: which field
/// (empty for the object itself) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct FieldDecodeError {
    pub kind: Kind,
    pub path: String,
    pub message: String,
}

/// Decodes an object of `kind` from a JSON value (an API request body),
/// returning it with the paths of the fields skiff does not know, which
/// the caller refuses, warns about or ignores.
pub fn object_from_json(
    kind: Kind,
    value: serde_json::Value,
) -> Result<(Object, Vec<String>), FieldDecodeError> {
    let mut unknown = Vec::new();
    let object = decode(kind, value, &mut unknown).map_err(|e| FieldDecodeError {
        kind,
        path: e.path,
        message: e.message,
    })?;
    Ok((object, unknown))
}

/// An object as a JSON value, with Kubernetes field names.
pub fn to_json_value(object: &Object) -> serde_json::Value {
    match &object.kind {
        Some(Body::Generic(g)) => super::generic::to_json(g),
        Some(body) => with_body!(body, o => serde_json::to_value(o).unwrap_or_default()),
        None => serde_json::Value::Null,
    }
}

/// A `kind: List` of objects, as kubectl prints `get -o json` for many.
pub fn list_to_json_value(objects: &[Object]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(to_json_value).collect::<Vec<_>>(),
    })
}

/// A JSON value as YAML text.
pub fn to_yaml(value: &serde_json::Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectExt;

    const NGINX_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        parse_manifest("test.yaml", text, true)
    }

    #[test]
    fn nginx_deployment_reads_with_kubernetes_names() {
        let m = parse(NGINX_DEPLOYMENT).unwrap();
        assert_eq!(m.objects.len(), 1);
        // A document; its protobuf model reads the same.
        let model = crate::legacy_bodies::to_legacy(m.objects[0].clone()).unwrap();
        let Some(Body::Deployment(d)) = &model.kind else {
            panic!("not a deployment: {:?}", m.objects[0]);
        };
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.selector.as_ref().unwrap().match_labels["app"], "nginx");
        let pod = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image, "nginx:1.14.2");
        assert_eq!(pod.containers[0].ports[0].container_port, 80);
    }

    #[test]
    fn round_trip_keeps_every_field_and_omits_empty_ones() {
        let m = parse(NGINX_DEPLOYMENT).unwrap();
        let json = to_json_value(&m.objects[0]);
        // A document: as it was read (the writer's defaults add the rest).
        let expected: serde_json::Value = serde_yaml::from_str(NGINX_DEPLOYMENT).unwrap();
        assert_eq!(json, expected);
    }

    #[test]
    fn multi_document_yaml_reads_every_object() {
        let text = format!(
            "{NGINX_DEPLOYMENT}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: nginx\n  ports:\n  - port: 80\n    targetPort: 8080\n---\n"
        );
        let m = parse(&text).unwrap();
        let kinds: Vec<Kind> = m.objects.iter().map(|o| o.kind().unwrap()).collect();
        assert_eq!(kinds, vec![Kind::Deployment, Kind::Service]);
        let s = crate::services::read(&m.objects[1]).expect("a Service");
        assert_eq!(
            crate::services::target_port(&crate::services::ports(&s)[0]),
            Some(&crate::services::IntOrString::Int(8080))
        );
        // Written back as a number, as Kubernetes does.
        let json = to_json_value(&m.objects[1]);
        assert_eq!(json["spec"]["ports"][0]["targetPort"], 8080);
    }

    #[test]
    fn kubernetes_spellings_and_value_shapes() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: team-a}
spec:
  containers:
  - name: c
    image: busybox
    resources:
      limits: {cpu: 1, memory: 128Mi}
      requests: {cpu: "250m", memory: 64Mi}
    readinessProbe:
      httpGet: {path: /healthz, port: http}
status:
  podIP: 10.42.0.5
  hostIP: 192.168.1.10
"#;
        let m = parse(text).unwrap();
        // A pod is a document; its protobuf model reads the same.
        let model = crate::legacy_bodies::to_legacy(m.objects[0].clone()).unwrap();
        let Some(Body::Pod(p)) = &model.kind else {
            panic!()
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.limits["cpu"], "1");
        assert_eq!(res.requests["cpu"], "250m");
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .port,
            "http"
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.pod_ip, "10.42.0.5");
        assert_eq!(status.host_ip, "192.168.1.10");
        let json = to_json_value(&m.objects[0]);
        assert_eq!(json["status"]["podIP"], "10.42.0.5");
        assert_eq!(json["metadata"]["namespace"], "team-a");
    }

    #[test]
    fn volume_fields_read_and_write_as_kubernetes_has_them() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    env:
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1}}
    volumeMounts: [{name: info, mountPath: /etc/info, mountPropagation: HostToContainer}]
  volumes:
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: cache, emptyDir: {sizeLimit: 1}}
"#;
        let m = parse(text).unwrap();
        // A pod is a document; its protobuf model reads the same.
        let model = crate::legacy_bodies::to_legacy(m.objects[0].clone()).unwrap();
        let Some(Body::Pod(p)) = &model.kind else {
            panic!()
        };
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.volumes[1].empty_dir.as_ref().unwrap().size_limit, "1");
        // Quantities are written as strings; downwardAPI keeps its spelling.
        let json = to_json_value(&m.objects[0]);
        let volumes = &json["spec"]["volumes"];
        assert_eq!(volumes[1]["emptyDir"]["sizeLimit"], "1");
        assert_eq!(volumes[0]["downwardAPI"]["items"][0]["path"], "labels");
        let container = &json["spec"]["containers"][0];
        let divisor = &container["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"];
        assert_eq!(divisor, "1");
        let propagation = &container["volumeMounts"][0]["mountPropagation"];
        assert_eq!(propagation, "HostToContainer");
    }

    #[test]
    fn json_list_reads_each_item() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}]}"#;
        let m = parse_manifest("list.json", text, true).unwrap();
        let names: Vec<_> = m.objects.iter().map(|o| o.meta().name.clone()).collect();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn unknown_field_is_an_error_naming_its_path() {
        let text = NGINX_DEPLOYMENT.replace(
            "containerPort: 80",
            "containerPort: 80\n          hostPortt: 8080",
        );
        let err = parse(&text).unwrap_err();
        match &err {
            ManifestError::UnknownField {
                path,
                document,
                kind,
                name,
                ..
            } => {
                assert_eq!(path, "spec.template.spec.containers.0.ports.0.hostPortt");
                assert_eq!(*document, 1);
                assert_eq!(*kind, Kind::Deployment);
                assert_eq!(name, "nginx-deployment");
            }
            other => panic!("wrong error: {other:?}"),
        }
        assert!(err.to_string().contains("hostPortt"), "{err}");
    }

    #[test]
    fn unknown_field_is_a_warning_when_not_strict() {
        let text = NGINX_DEPLOYMENT.replace("replicas: 3", "replicas: 3\n  colour: blue");
        let m = parse_manifest("test.yaml", &text, false).unwrap();
        assert_eq!(m.objects.len(), 1);
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("spec.colour"), "{:?}", m.warnings);
    }

    #[test]
    fn syntax_error_names_its_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [unclosed\n";
        let err = parse(text).unwrap_err();
        match &err {
            ManifestError::Syntax { line, .. } => assert!(line.is_some(), "{err}"),
            other => panic!("wrong error: {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("test.yaml: YAML syntax error at line"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let text = NGINX_DEPLOYMENT.replace("replicas: 3", "replicas: three");
        let err = parse(&text).unwrap_err();
        match &err {
            ManifestError::InvalidField { path, line, .. } => {
                assert_eq!(path, "spec.replicas");
                assert_eq!(*line, Some(9));
            }
            other => panic!("wrong error: {other:?}"),
        }
        assert!(err.to_string().contains("spec.replicas"), "{err}");
    }

    #[test]
    fn a_list_items_wrong_type_names_its_item_and_line() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
  spec:
    replicas: [3]
";
        let err = parse(text).unwrap_err();
        match &err {
            ManifestError::InvalidField {
                path, line, column, ..
            } => {
                assert_eq!(path, "items.1.spec.replicas");
                assert_eq!((*line, *column), (Some(11), Some(15)));
            }
            other => panic!("wrong error: {other:?}"),
        }
    }

    #[test]
    fn a_number_for_a_label_with_dots_in_its_key_names_its_line() {
        let text = NGINX_DEPLOYMENT.replace(
            "    app: nginx\nspec",
            "    app: nginx\n    app.kubernetes.io/version: 1.0\nspec",
        );
        match parse(&text).unwrap_err() {
            ManifestError::InvalidField { path, line, .. } => {
                assert_eq!(path, "metadata.labels.app.kubernetes.io/version");
                assert_eq!(line, Some(8));
            }
            other => panic!("wrong error: {other:?}"),
        }
    }

    #[test]
    fn a_number_for_a_label_is_refused_as_the_api_refuses_it() {
        // kubectl refuses it too: labels are strings.
        let text = NGINX_DEPLOYMENT.replace("    app: nginx\nspec", "    version: 2\nspec");
        let err = parse(&text).unwrap_err();
        match &err {
            ManifestError::InvalidField {
                path,
                line,
                message,
                ..
            } => {
                assert_eq!(path, "metadata.labels.version");
                assert_eq!(*line, Some(7));
                assert!(message.contains("expected a string"), "{message}");
            }
            other => panic!("wrong error: {other:?}"),
        }
    }

    #[test]
    fn missing_kind_and_wrong_api_version_are_errors() {
        let err = parse("apiVersion: v1\nmetadata: {name: x}\n").unwrap_err();
        assert!(
            err.to_string().contains("missing required field \"kind\""),
            "{err}"
        );
        let err = parse("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("apps/v1"), "{err}");
        let err = parse("apiVersion: v1\nkind: Widget\nmetadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("unknown kind \"Widget\""), "{err}");
        let err = parse("---\n- 1\n- 2\n").unwrap_err();
        assert!(err.to_string().contains("document 1"), "{err}");
    }
}
