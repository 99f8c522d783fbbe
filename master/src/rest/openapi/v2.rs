//! The Swagger 2.0 document (`/openapi/v2`, `/swagger-2.0.0.pb-v1`): every
//! message of the served groups as a definition, as JSON or as the gnostic
//! `openapi_v2.Document` protobuf kubectl and helm ask for.
//!
//! kubectl (1.20 always; later ones when `/openapi/v3` does not answer)
//! validates `apply` and `create -f` manifests against this document
//! (kube-openapi `pkg/util/proto` and `pkg/util/proto/validation`): it finds
//! a kind's definition by `x-kubernetes-group-version-kind`, refuses fields
//! a definition does not have and values of the wrong type; kubectl 1.20's
//! `apply` also computes its strategic merge patch from the definitions'
//! patch extensions, and `explain` prints them. So the definitions follow
//! Kubernetes' own in every type (see `schemas`). No paths are published:
//! only later kubectl versions read them (for `fieldValidation`), from the
//! v3 documents.
//!
//! The protobuf messages are written by hand with the field numbers of
//! google/gnostic's `openapiv2/OpenAPIv2.proto`; only the fields skiff
//! writes are declared. A vendor extension's value is YAML text
//! (`Any.yaml`), which kube-openapi reads with gopkg.in/yaml.v2.

use prost::Message;
use serde_json::{json, Map, Value};

use super::schemas::{self, Dialect};
use skiff_objects::api_schema::MESSAGES;

/// gnostic `openapi_v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Document {
    #[prost(string, tag = "1")]
    pub(super) swagger: String,
    #[prost(message, optional, tag = "2")]
    pub(super) info: Option<Info>,
    #[prost(message, optional, tag = "9")]
    pub(super) definitions: Option<Definitions>,
}

/// gnostic `openapi_v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Info {
    #[prost(string, tag = "1")]
    pub(super) title: String,
    #[prost(string, tag = "2")]
    pub(super) version: String,
}

/// gnostic `openapi_v2.Definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub(super) additional_properties: Vec<NamedSchema>,
}

/// gnostic `openapi_v2.NamedSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct NamedSchema {
    #[prost(string, tag = "1")]
    pub(super) name: String,
    #[prost(message, optional, tag = "2")]
    pub(super) value: Option<Schema>,
}

/// gnostic `openapi_v2.Schema`, the fields Kubernetes' definitions use.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Schema {
    /// `_ref`.
    #[prost(string, tag = "1")]
    pub(super) reference: String,
    #[prost(string, tag = "2")]
    pub(super) format: String,
    #[prost(message, optional, boxed, tag = "21")]
    pub(super) additional_properties: Option<Box<AdditionalPropertiesItem>>,
    /// `type`.
    #[prost(message, optional, tag = "22")]
    pub(super) type_item: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub(super) items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    pub(super) properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub(super) vendor_extension: Vec<NamedAny>,
}

/// gnostic `openapi_v2.AdditionalPropertiesItem`: a oneof of a schema (1)
/// and a boolean (2), written as the two optional fields it is on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    pub(super) schema: Option<Schema>,
    #[prost(bool, optional, tag = "2")]
    pub(super) boolean: Option<bool>,
}

/// gnostic `openapi_v2.TypeItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub(super) value: Vec<String>,
}

/// gnostic `openapi_v2.ItemsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub(super) schema: Vec<Schema>,
}

/// gnostic `openapi_v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub(super) additional_properties: Vec<NamedSchema>,
}

/// gnostic `openapi_v2.NamedAny`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct NamedAny {
    #[prost(string, tag = "1")]
    pub(super) name: String,
    #[prost(message, optional, tag = "2")]
    pub(super) value: Option<Any>,
}

/// gnostic `openapi_v2.Any`: only its YAML text (2) is written.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Any {
    #[prost(string, tag = "2")]
    pub(super) yaml: String,
}

/// Every definition, by name.
fn definitions() -> Map<String, Value> {
    schemas::definitions(0..MESSAGES.len(), Dialect::V2)
}

/// The document as JSON text.
pub(super) fn json_document(version: &str) -> Vec<u8> {
    let document = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": {},
        "definitions": definitions(),
    });
    serde_json::to_vec(&document).unwrap_or_default()
}

/// The document as gnostic protobuf.
pub(super) fn protobuf_document(version: &str) -> Vec<u8> {
    let definitions = definitions()
        .iter()
        .map(|(name, schema)| NamedSchema {
            name: name.clone(),
            value: Some(schema_of(schema)),
        })
        .collect();
    let document = Document {
        swagger: "2.0".to_owned(),
        info: Some(Info {
            title: "Kubernetes".to_owned(),
            version: version.to_owned(),
        }),
        definitions: Some(Definitions {
            additional_properties: definitions,
        }),
    };
    document.encode_to_vec()
}

/// A JSON schema as gnostic's `Schema`; keys Swagger 2.0 has no field for
/// here (none of the v2 definitions has one) are left out.
fn schema_of(value: &Value) -> Schema {
    let mut schema = Schema::default();
    let Value::Object(map) = value else {
        return schema;
    };
    for (key, value) in map {
        match (key.as_str(), value) {
            ("$ref", Value::String(reference)) => schema.reference.clone_from(reference),
            ("format", Value::String(format)) => schema.format.clone_from(format),
            ("type", Value::String(kind)) => {
                schema.type_item = Some(TypeItem {
                    value: vec![kind.clone()],
                });
            }
            ("items", items) => {
                schema.items = Some(ItemsItem {
                    schema: vec![schema_of(items)],
                });
            }
            ("properties", Value::Object(properties)) => {
                let named = properties
                    .iter()
                    .map(|(name, property)| NamedSchema {
                        name: name.clone(),
                        value: Some(schema_of(property)),
                    })
                    .collect();
                schema.properties = Some(Properties {
                    additional_properties: named,
                });
            }
            ("additionalProperties", Value::Bool(allowed)) => {
                schema.additional_properties = Some(Box::new(AdditionalPropertiesItem {
                    schema: None,
                    boolean: Some(*allowed),
                }));
            }
            ("additionalProperties", values) => {
                schema.additional_properties = Some(Box::new(AdditionalPropertiesItem {
                    schema: Some(schema_of(values)),
                    boolean: None,
                }));
            }
            (name, extension) if name.starts_with("x-") => {
                schema.vendor_extension.push(NamedAny {
                    name: name.to_owned(),
                    value: Some(Any {
                        yaml: yaml_text(extension),
                    }),
                });
            }
            _ => {}
        }
    }
    schema
}

/// An extension's value as YAML: scalars as JSON text (a double-quoted
/// string, `true`, a number: YAML reads them alike), an object of scalars
/// as a block mapping, a list of those as a block sequence, as Kubernetes
/// writes `x-kubernetes-group-version-kind`:
///
/// ```yaml
/// - group: "apps"
///   kind: "Deployment"
///   version: "v1"
/// ```
fn yaml_text(value: &Value) -> String {
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().map(yaml_item).collect(),
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| format!("{}: {value}\n", yaml_key(key)))
            .collect(),
        other => format!("{other}\n"),
    }
}

/// One item of a block sequence.
fn yaml_item(item: &Value) -> String {
    match item {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let lead = if i == 0 { "- " } else { "  " };
                format!("{lead}{}: {value}\n", yaml_key(key))
            })
            .collect(),
        other => format!("- {other}\n"),
    }
}

/// A mapping key: plain when it is a word, else double-quoted.
fn yaml_key(key: &str) -> String {
    let word = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric());
    if word {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const GVK: &str = "x-kubernetes-group-version-kind";

    fn decoded() -> Document {
        Document::decode(protobuf_document("v1.34.0+skiff").as_slice()).unwrap()
    }

    fn definitions_of(document: &Document) -> BTreeMap<&str, &Schema> {
        document
            .definitions
            .iter()
            .flat_map(|d| &d.additional_properties)
            .filter_map(|named| Some((named.name.as_str(), named.value.as_ref()?)))
            .collect()
    }

    fn property<'d>(schema: &'d Schema, name: &str) -> &'d Schema {
        schema
            .properties
            .iter()
            .flat_map(|p| &p.additional_properties)
            .find(|p| p.name == name)
            .and_then(|p| p.value.as_ref())
            .unwrap_or_else(|| panic!("no property {name}"))
    }

    fn types(schema: &Schema) -> Vec<&str> {
        schema
            .type_item
            .iter()
            .flat_map(|t| &t.value)
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn the_protobuf_document_decodes_with_the_pod_and_its_kind() {
        let document = decoded();
        assert_eq!(document.swagger, "2.0");
        assert_eq!(document.info.as_ref().unwrap().version, "v1.34.0+skiff");
        let definitions = definitions_of(&document);
        let pod = definitions["io.k8s.api.core.v1.Pod"];
        assert_eq!(types(pod), ["object"]);
        let kind = pod.vendor_extension.iter().find(|e| e.name == GVK).unwrap();
        assert_eq!(
            kind.value.as_ref().unwrap().yaml,
            "- group: \"\"\n  kind: \"Pod\"\n  version: \"v1\"\n"
        );
        // What kubectl reads it with is YAML.
        let read: Value = serde_yaml::from_str(&kind.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(read, json!([{"group": "", "kind": "Pod", "version": "v1"}]));
        assert_eq!(
            property(pod, "spec").reference,
            "#/definitions/io.k8s.api.core.v1.PodSpec"
        );
        assert_eq!(types(property(pod, "apiVersion")), ["string"]);

        let spec = definitions["io.k8s.api.apps.v1.DeploymentSpec"];
        let replicas = property(spec, "replicas");
        assert_eq!(
            (types(replicas), replicas.format.as_str()),
            (vec!["integer"], "int32")
        );
        let strategy = property(spec, "strategy");
        assert_eq!(
            strategy.reference,
            "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"
        );
        assert_eq!(
            strategy.vendor_extension[0].name,
            "x-kubernetes-patch-strategy"
        );
        let int_or_string = definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(types(int_or_string), ["string"]);
        assert_eq!(int_or_string.format, "int-or-string");
        let meta = definitions["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"];
        let labels = property(meta, "labels");
        let values = labels.additional_properties.as_ref().unwrap();
        assert_eq!(types(values.schema.as_ref().unwrap()), ["string"]);
        let containers = property(definitions["io.k8s.api.core.v1.PodSpec"], "containers");
        assert_eq!(
            containers.items.as_ref().unwrap().schema[0].reference,
            "#/definitions/io.k8s.api.core.v1.Container"
        );
    }

    #[test]
    fn the_json_document_holds_the_same_definitions() {
        let json: Value = serde_json::from_slice(&json_document("v1.34.0+skiff")).unwrap();
        assert_eq!(json["swagger"], "2.0");
        let in_json = json["definitions"].as_object().unwrap();
        let document = decoded();
        let in_protobuf = definitions_of(&document);
        assert_eq!(in_json.len(), in_protobuf.len());
        assert!(in_json.len() > MESSAGES.len());
        for (name, schema) in in_json {
            assert_eq!(&schema_of(schema), in_protobuf[name.as_str()], "{name}");
        }
    }

    /// kube-openapi's model of a schema (`pkg/util/proto/document.go`), as
    /// kubectl 1.20 parses the document: every definition must parse, or
    /// kubectl refuses the whole document.
    #[derive(Debug)]
    enum Model<'d> {
        Kind(BTreeMap<&'d str, &'d Schema>),
        Map(Option<&'d Schema>),
        Array(&'d Schema),
        Primitive(&'d str),
        Arbitrary,
        Reference(&'d str),
    }

    fn model<'d>(schema: &'d Schema, names: &BTreeMap<&str, &Schema>) -> Result<Model<'d>, String> {
        let types: &[String] = schema
            .type_item
            .as_ref()
            .map(|t| t.value.as_slice())
            .unwrap_or_default();
        let kind = move || -> Model<'d> {
            let fields = schema
                .properties
                .iter()
                .flat_map(|p| &p.additional_properties)
                .filter_map(|named| Some((named.name.as_str(), named.value.as_ref()?)))
                .collect();
            Model::Kind(fields)
        };
        if !schema.reference.is_empty() {
            let properties = schema.properties.as_ref();
            if properties.is_some_and(|p| !p.additional_properties.is_empty()) {
                return Err("unallowed embedded type definition".into());
            }
            if !types.is_empty() {
                return Err("definition reference can't have a type".into());
            }
            let Some(name) = schema.reference.strip_prefix("#/definitions/") else {
                return Err(format!("unallowed reference {}", schema.reference));
            };
            if !names.contains_key(name) {
                return Err(format!("unknown model in reference: {name:?}"));
            }
            return Ok(Model::Reference(name));
        }
        match types {
            [] if schema.properties.is_some() => Ok(kind()),
            [] => Ok(Model::Arbitrary),
            [object] if object == "object" && schema.properties.is_some() => Ok(kind()),
            [object] if object == "object" => Ok(Model::Map(
                schema
                    .additional_properties
                    .as_ref()
                    .and_then(|a| a.schema.as_ref()),
            )),
            [array] if array == "array" => {
                match schema.items.as_ref().map(|i| i.schema.as_slice()) {
                    Some([items]) => Ok(Model::Array(items)),
                    _ => Err("array should have exactly one sub-item".into()),
                }
            }
            [primitive] => match primitive.as_str() {
                "string" | "number" | "integer" | "boolean" => Ok(Model::Primitive(primitive)),
                other => Err(format!("Unknown primitive type: {other:?}")),
            },
            _ => Err("definitions with multiple types aren't supported".into()),
        }
    }

    fn parses(schema: &Schema, names: &BTreeMap<&str, &Schema>) -> Result<(), String> {
        match model(schema, names)? {
            Model::Kind(fields) => fields.into_iter().try_for_each(|(name, field)| {
                parses(field, names).map_err(|e| format!("{name}: {e}"))
            }),
            Model::Map(Some(values)) => parses(values, names),
            Model::Array(items) => parses(items, names),
            _ => Ok(()),
        }
    }

    #[test]
    fn every_definition_parses_as_kube_openapi_parses_it() {
        let document = decoded();
        let definitions = definitions_of(&document);
        for (name, schema) in &definitions {
            parses(schema, &definitions).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// kube-openapi's validation (`pkg/util/proto/validation/types.go`),
    /// which kubectl 1.20 runs on every manifest of `apply` and `create -f`.
    fn validate(
        value: &Value,
        schema: &Schema,
        names: &BTreeMap<&str, &Schema>,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let model = match model(schema, names) {
            Ok(model) => model,
            Err(e) => {
                errors.push(format!("{path}: {e}"));
                return;
            }
        };
        match (model, value) {
            (Model::Reference(name), _) => validate(value, names[name], names, path, errors),
            (Model::Arbitrary, _) => {}
            (Model::Kind(fields), Value::Object(map)) => {
                for (key, value) in map.iter().filter(|(_, v)| !v.is_null()) {
                    match fields.get(key.as_str()) {
                        Some(field) => {
                            validate(value, field, names, &format!("{path}.{key}"), errors)
                        }
                        None => errors.push(format!("{path}: unknown field {key:?}")),
                    }
                }
            }
            (Model::Map(values), Value::Object(map)) => {
                for (key, value) in map {
                    let at = format!("{path}.{key}");
                    match (value, values) {
                        (Value::Null, _) => errors.push(format!("{at}: nil")),
                        (_, Some(values)) => validate(value, values, names, &at, errors),
                        (_, None) => {}
                    }
                }
            }
            (Model::Array(items), Value::Array(values)) => {
                for (i, value) in values.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    match value {
                        Value::Null => errors.push(format!("{at}: nil")),
                        value => validate(value, items, names, &at, errors),
                    }
                }
            }
            (Model::Primitive(kind), Value::Bool(_) | Value::Number(_) | Value::String(_)) => {
                let fits = match kind {
                    "string" => true,
                    "integer" | "number" => value.is_number(),
                    _ => value.is_boolean(),
                };
                if !fits {
                    errors.push(format!(
                        "{path}: invalid type: got {value}, expected {kind}"
                    ));
                }
            }
            (model, value) => errors.push(format!(
                "{path}: invalid type: got {value}, expected {model:?}"
            )),
        }
    }

    /// The definition kubectl validates `object` against (found by
    /// `x-kubernetes-group-version-kind`), and its errors.
    fn validate_manifest(object: &Value, names: &BTreeMap<&str, &Schema>) -> Vec<String> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().unwrap_or_default();
        let wanted = json!([{"group": group, "kind": kind, "version": version}]);
        let found = names.iter().find(|(_, schema)| {
            schema.vendor_extension.iter().any(|e| {
                e.name == GVK
                    && e.value.as_ref().is_some_and(|v| {
                        let read: Option<Value> = serde_yaml::from_str(&v.yaml).ok();
                        read.as_ref() == Some(&wanted)
                    })
            })
        });
        let Some((_, schema)) = found else {
            return vec![format!("no definition of {api_version} {kind}")];
        };
        let mut errors = Vec::new();
        validate(object, schema, names, kind, &mut errors);
        errors
    }

    /// Manifests as the Kubernetes docs and charts write them.
    const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
  annotations: {note: "x"}
spec:
  replicas: 2
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front]}
  template:
    metadata:
      labels: {app: web}
      creationTimestamp: null
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {runAsUser: 1000, fsGroup: 2000}
      containers:
      - name: web
        image: nginx:1.25
        imagePullPolicy: IfNotPresent
        command: [nginx, -g, daemon off;]
        ports:
        - {name: http, containerPort: 80, protocol: TCP}
        env:
        - {name: MODE, value: fast}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - name: LIMIT
          valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {cpu: 1, memory: 128974848}
        livenessProbe:
          httpGet: {path: /healthz, port: http}
          initialDelaySeconds: 3
        readinessProbe:
          tcpSocket: {port: 80}
        volumeMounts:
        - {name: config, mountPath: /etc/nginx/conf.d, readOnly: true}
      volumes:
      - name: config
        configMap: {name: web, defaultMode: 420, items: [{key: a, path: b}]}
      - name: scratch
        emptyDir: {sizeLimit: 1Gi}
      tolerations:
      - {key: example, operator: Exists, effect: NoSchedule, tolerationSeconds: 30}
status: {}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: ClusterIP
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: alt, port: 8080, targetPort: 8080}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
type: Opaque
data: {password: cGFzc3dvcmQ=}
stringData: {user: admin}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {a: "1"}
binaryData: {b: AAE=}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox:1.36, args: [echo, hi]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  backoffLimit: 6
  completions: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36, command: [echo, hi]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: busybox:1.36
        resources: {requests: {cpu: 100m, memory: 64Mi}}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  tls: [{hosts: [shop.example], secretName: tls}]
  rules:
  - host: shop.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec: {maxUnavailable: 50%, selector: {matchLabels: {app: web}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: readers, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: User, name: jane, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 80}, {port: http, protocol: TCP}]}]
"#;

    fn documents(text: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect()
    }

    #[test]
    fn valid_manifests_pass_kubectl_1_20_validation_and_wrong_types_do_not() {
        let document = decoded();
        let names = definitions_of(&document);
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut texts = vec![("MANIFESTS".to_owned(), MANIFESTS.to_owned())];
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            texts.push((path.display().to_string(), text));
        }
        let mut checked = 0;
        for (name, text) in &texts {
            for object in documents(text) {
                assert_eq!(
                    validate_manifest(&object, &names),
                    Vec::<String>::new(),
                    "{name}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 22, "{checked}");

        let deployment = |spec: &str| {
            documents(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {spec}\n"
            ))
            .remove(0)
        };
        let errors = validate_manifest(&deployment("{replicas: three}"), &names);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("Deployment.spec.replicas: invalid type"),
            "{errors:?}"
        );
        let errors = validate_manifest(&deployment("{replica: 3}"), &names);
        assert_eq!(errors, ["Deployment.spec: unknown field \"replica\""]);
        let errors = validate_manifest(
            &deployment("{template: {spec: {containers: {name: c}}}}"),
            &names,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("Deployment.spec.template.spec.containers: invalid type"));
    }
}
