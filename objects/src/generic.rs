//! Objects of the kinds skiff stores, lists and watches without a typed
//! model of its own (`registry::Model::Generic`: ConfigMap, Job, Role,
//! ...): a [`GenericObject`] holds the typed metadata every object has and
//! the other top-level fields as the JSON object they were sent as, so
//! nothing a client wrote is lost and `kubectl apply` finds it unchanged.
//!
//! What makes them more than stored documents:
//! - [`from_json`] checks a body against Kubernetes' schema for the kind
//!   (`objects::schema_check`, on the schema generated from the API's
//!   definitions): a wrong type is refused naming its field, an unknown
//!   field is reported for `fieldValidation`;
//! - [`apply_defaults`] sets Kubernetes' defaults (Job, CronJob,
//!   DaemonSet, StatefulSet and their pod templates, volumes and claims,
//!   HorizontalPodAutoscalers through `objects::autoscaling`, their
//!   `autoscaling/v1` round-trip annotations dropped, ...);
//! - [`validate`] checks what the schema cannot (required fields, selectors
//!   matching templates, allowed values; HorizontalPodAutoscalers'
//!   replica bounds, metric targets and behavior in
//!   `objects::autoscaling`);
//! - [`validate_update`] refuses, with kube-apiserver's rules and words,
//!   what an update of a Job, StatefulSet or DaemonSet may not change,
//!   compared as Kubernetes' semantic equality compares (unset, empty and
//!   zero alike; quantities by value); [`keep_generated`] carries a Job's
//!   generated selector, labels and defaulted completions into a replace
//!   from a manifest;
//! - `status` is kept apart from the rest for status updates and for
//!   `generation`.
//!
//! Custom kinds (`Kind::Custom`) are generic objects too, read by their
//! definition instead of Kubernetes' schema: fields the version's
//! structural schema does not specify are pruned (and reported as
//! unknown), its defaults set, its constraints checked
//! (`objects::custom_resources`). CustomResourceDefinitions themselves
//! are checked by `custom_resources::definition`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_proto::v1::{GenericObject, LabelSelector, ObjectMeta};

use super::cron_schedule::{time_zone, CronSchedule};
use super::custom_resources::{self, Definition, Version};
use super::images::default_pull_policy;
use super::registry::custom::{served_definition, ServedDefinition};
use super::{CustomKind, Kind};

pub use super::schema_check::SchemaError;

/// The label that selects a Job's pods by the Job's uid.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label that names a pod's Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The uid label under its name before Kubernetes 1.27, still set.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// The Job name label under its name before Kubernetes 1.27, still set.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// The labels Kubernetes gives the pods of the Job `name` with `uid`.
pub fn job_pod_labels(name: &str, uid: &str) -> [(&'static str, String); 4] {
    [
        (JOB_CONTROLLER_UID_LABEL, uid.to_owned()),
        (JOB_NAME_LABEL, name.to_owned()),
        (LEGACY_CONTROLLER_UID_LABEL, uid.to_owned()),
        (LEGACY_JOB_NAME_LABEL, name.to_owned()),
    ]
}

/// What the API server adds to a Job it creates unless
/// `spec.manualSelector` is true or a selector was given, as Kubernetes
/// does: a selector on the Job's `uid` (known before the create is
/// proposed), and the labels it selects on the pod template.
pub fn generate_job_selector(object: &mut GenericObject, uid: &str) {
    let name = object
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut map = content(object);
    let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if manual || spec.get("selector").is_some_and(|s| !s.is_null()) {
        return;
    }
    spec.insert(
        "selector".to_owned(),
        serde_json::json!({"matchLabels": {JOB_CONTROLLER_UID_LABEL: uid}}),
    );
    let labels = template_labels_mut(spec);
    if let Some(labels) = labels {
        for (key, value) in job_pod_labels(&name, uid) {
            labels.insert(key.to_owned(), Value::from(value));
        }
    }
    set_content(object, &map);
}

/// A spec's `template.metadata.labels`, made (empty) when missing; `None`
/// when the spec has no template object.
fn template_labels_mut(spec: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    spec.get_mut("template")
        .and_then(Value::as_object_mut)
        .map(|template| object_at(template, "metadata"))
        .and_then(Value::as_object_mut)
        .map(|metadata| object_at(metadata, "labels"))
        .and_then(Value::as_object_mut)
}

/// The field `key` of `map`, an empty object when it is missing or null.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Value {
    let value = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value
}

/// The object's fields besides `apiVersion`, `kind` and `metadata`.
pub fn content(object: &GenericObject) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(&object.content) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Replaces the object's content.
pub fn set_content(object: &mut GenericObject, content: &Map<String, Value>) {
    object.content = serde_json::to_vec(content).unwrap_or_default();
}

/// A document of `kind` at `api_version` with `metadata`, holding the
/// fields of `value` (an object as Kubernetes' JSON writes it) but its
/// own `apiVersion`, `kind` and `metadata`.
pub fn document(
    api_version: &str,
    kind: &str,
    metadata: Option<ObjectMeta>,
    value: Value,
) -> GenericObject {
    let mut content = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for own in ["apiVersion", "kind", "metadata"] {
        content.remove(own);
    }
    let mut document = GenericObject {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        metadata,
        content: Vec::new(),
    };
    set_content(&mut document, &content);
    document
}

/// Whether two objects want the same: everything but `status` equal.
pub fn same_spec(a: &GenericObject, b: &GenericObject) -> bool {
    // The same bytes are the same content (the common case: a write that
    // changed only metadata, or nothing), with no parse.
    if a.content == b.content {
        return true;
    }
    let (mut a, mut b) = (content(a), content(b));
    a.remove("status");
    b.remove("status");
    a == b
}

/// Gives `object` the `status` of `from` (none when `from` has none).
pub fn copy_status(object: &mut GenericObject, from: &GenericObject) {
    // Neither holds a `status` anywhere (Endpoints, ConfigMaps, ...):
    // nothing to give or take, with no parse.
    let named_status = |o: &GenericObject| o.content.windows(8).any(|w| w == b"\"status\"");
    if !named_status(object) && !named_status(from) {
        return;
    }
    let mut mine = content(object);
    match content(from).remove("status") {
        Some(status) => mine.insert("status".into(), status),
        None => mine.remove("status"),
    };
    set_content(object, &mine);
}

/// A StatefulSet's `volumeClaimTemplates`: each named, once, with access
/// modes and a storage request (what each member's claim needs).
fn claim_template_checks(templates: &Value, problems: &mut Vec<(String, String)>) {
    let Some(templates) = templates.as_array() else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, template) in templates.iter().enumerate() {
        let field = |f: &str| format!("spec.volumeClaimTemplates[{i}].{f}");
        match template["metadata"]["name"].as_str() {
            Some(name) if !name.is_empty() => {
                if !seen.insert(name.to_owned()) {
                    problems.push((field("metadata.name"), format!("Duplicate value: {name:?}")));
                }
            }
            _ => problems.push((field("metadata.name"), "Required value".to_owned())),
        }
        let spec = &template["spec"];
        if spec["accessModes"].as_array().is_none_or(|m| m.is_empty()) {
            problems.push((
                field("spec.accessModes"),
                "Required value: at least 1 access mode is required".to_owned(),
            ));
        }
        if spec["dataSource"].is_null()
            && spec["dataSourceRef"].is_null()
            && spec["resources"]["requests"]["storage"].is_null()
        {
            problems.push((
                field("spec.resources[storage]"),
                "Required value: the storage request is required".to_owned(),
            ));
        }
    }
}

/// The object as Kubernetes JSON.
pub fn to_json(object: &GenericObject) -> Value {
    let mut map = Map::new();
    map.insert(
        "apiVersion".into(),
        Value::from(object.api_version.as_str()),
    );
    map.insert("kind".into(), Value::from(object.kind.as_str()));
    let metadata = object
        .metadata
        .as_ref()
        .and_then(|m| serde_json::to_value(m).ok())
        .unwrap_or_else(|| Value::Object(Map::new()));
    map.insert("metadata".into(), metadata);
    map.extend(content(object));
    Value::Object(map)
}

/// Reads an object of the generic `kind` from JSON (whose `apiVersion` and
/// `kind` the caller checked), checking it against Kubernetes' schema.
/// Fields the schema does not know are added to `unknown` (kept in the
/// object; the caller decides whether to refuse them).
pub fn from_json(
    kind: Kind,
    mut value: Value,
    unknown: &mut Vec<String>,
) -> Result<GenericObject, SchemaError> {
    match kind {
        Kind::Custom(custom) => {
            let served = served(custom)?;
            let version = version_at(&served, value["apiVersion"].as_str().unwrap_or(""))?;
            if let Some(schema) = &version.schema {
                schema.prune(&mut value, "", unknown);
            }
        }
        _ => schema_check(kind, &mut value, unknown)?,
    }
    let Value::Object(mut map) = value else {
        return Err(SchemaError {
            path: String::new(),
            message: "expected an object".to_owned(),
        });
    };
    let api_version = take_string(&mut map, "apiVersion");
    let kind_name = take_string(&mut map, "kind");
    let metadata = match map.remove("metadata") {
        None | Some(Value::Null) => ObjectMeta::default(),
        // The path of the field that does not read (`metadata.labels.version`).
        Some(m) => serde_path_to_error::deserialize::<_, ObjectMeta>(m).map_err(|e| {
            let at = e.path().to_string();
            SchemaError {
                path: if at.is_empty() || at == "." {
                    "metadata".to_owned()
                } else {
                    format!("metadata.{at}")
                },
                message: e.inner().to_string(),
            }
        })?,
    };
    let mut object = GenericObject {
        api_version,
        kind: kind_name,
        metadata: Some(metadata),
        content: Vec::new(),
    };
    set_content(&mut object, &map);
    Ok(object)
}

fn take_string(map: &mut Map<String, Value>, key: &str) -> String {
    match map.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Checks `value` against Kubernetes' schema for `kind`, collecting the
/// paths of fields it does not know.
fn schema_check(
    kind: Kind,
    value: &mut Value,
    unknown: &mut Vec<String>,
) -> Result<(), SchemaError> {
    if !kind.is_generic() {
        return Err(SchemaError {
            path: String::new(),
            message: format!("{kind} is not held as a generic object"),
        });
    }
    if kind == Kind::CustomResourceDefinition {
        // The generated schema has no apiextensions types: a CRD is
        // checked whole by `custom_resources::definition` in `validate`.
        return if value.is_object() {
            Ok(())
        } else {
            Err(SchemaError {
                path: String::new(),
                message: "expected an object".to_owned(),
            })
        };
    }
    let info = super::registry::info(kind);
    super::schema_check::check(info.group, info.version, info.name, value, unknown)
}

/// The served definition of a custom kind.
fn served(kind: CustomKind) -> Result<std::sync::Arc<ServedDefinition>, SchemaError> {
    served_definition(kind).ok_or_else(|| SchemaError {
        path: "kind".to_owned(),
        message: format!(
            "no CustomResourceDefinition serves {} (it was deleted, or its names are not accepted)",
            kind.qualified()
        ),
    })
}

/// The served version of `served` that `api_version` names.
fn version_at<'s>(
    served: &'s ServedDefinition,
    api_version: &str,
) -> Result<&'s Version, SchemaError> {
    custom_resources::version_of(&served.definition, api_version)
        .filter(|v| v.served)
        .ok_or_else(|| SchemaError {
            path: "apiVersion".to_owned(),
            message: format!(
                "{api_version:?} is not a served version of {}",
                served.definition.name
            ),
        })
}

/// A custom kind's object pruned and defaulted by the schema of its
/// version (left as it is when its definition or version is not served:
/// validation refuses it).
fn custom_defaults(kind: CustomKind, object: &mut GenericObject) {
    let Ok(served) = served(kind) else {
        return;
    };
    let Ok(version) = version_at(&served, &object.api_version) else {
        return;
    };
    let mut value = to_json(object);
    custom_resources::prune_and_default(version, &mut value);
    if let Value::Object(mut map) = value {
        for envelope in ["apiVersion", "kind", "metadata"] {
            map.remove(envelope);
        }
        set_content(object, &map);
    }
}

/// Kubernetes' defaults of a CustomResourceDefinition's spec: its singular
/// and list kind from its kind, conversion `None`.
fn definition_defaults(map: &mut Map<String, Value>) {
    let Some(spec) = map.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let kind = spec["names"]["kind"].as_str().unwrap_or("").to_owned();
    if let Some(names) = spec.get_mut("names").filter(|n| n.is_object()) {
        if !kind.is_empty() {
            default(names, "singular", kind.to_ascii_lowercase());
            default(names, "listKind", format!("{kind}List"));
        }
    }
    default(spec, "conversion", serde_json::json!({"strategy": "None"}));
}

/// Kubernetes' defaults for `kind`'s fields.
pub fn apply_defaults(kind: Kind, object: &mut GenericObject) {
    if let Kind::Custom(custom) = kind {
        custom_defaults(custom, object);
        return;
    }
    if kind == Kind::CustomResourceDefinition {
        let mut map = content(object);
        definition_defaults(&mut map);
        set_content(object, &map);
        return;
    }
    if kind == Kind::HorizontalPodAutoscaler {
        // The annotations `autoscaling/v1` carries v2's fields in are
        // never stored, as kube-apiserver drops them whatever the version
        // written.
        if let Some(meta) = object.metadata.as_mut() {
            super::autoscaling_v1::drop_round_trip_annotations(&mut meta.annotations);
        }
    }
    let mut map = content(object);
    content_defaults(kind, &mut map);
    set_content(object, &map);
}

/// Kubernetes' defaults for the fields (all but apiVersion, kind and
/// metadata) of an object of `kind`, a built-in kind other than
/// CustomResourceDefinition, already parsed.
pub fn content_defaults(kind: Kind, map: &mut Map<String, Value>) {
    let spec = map
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    match kind {
        Kind::Job => job_spec(spec),
        Kind::CronJob => {
            default(spec, "concurrencyPolicy", "Allow");
            default(spec, "suspend", false);
            default(spec, "successfulJobsHistoryLimit", 3);
            default(spec, "failedJobsHistoryLimit", 1);
            if let Some(job) = spec.pointer_mut("/jobTemplate/spec") {
                job_spec(job);
            }
        }
        Kind::DaemonSet => {
            default(
                spec,
                "updateStrategy",
                serde_json::json!({"type": "RollingUpdate"}),
            );
            if let Some(strategy) = spec.get_mut("updateStrategy") {
                default(strategy, "type", "RollingUpdate");
            }
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                let rolling = &mut spec["updateStrategy"];
                default(rolling, "rollingUpdate", serde_json::json!({}));
                default(&mut rolling["rollingUpdate"], "maxUnavailable", 1);
                default(&mut rolling["rollingUpdate"], "maxSurge", 0);
            }
            default(spec, "revisionHistoryLimit", 10);
            template_pod_spec(spec);
        }
        Kind::StatefulSet => {
            default(spec, "replicas", 1);
            default(spec, "podManagementPolicy", "OrderedReady");
            default(
                spec,
                "updateStrategy",
                serde_json::json!({"type": "RollingUpdate"}),
            );
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                let rolling = &mut spec["updateStrategy"];
                default(rolling, "rollingUpdate", serde_json::json!({}));
                default(&mut rolling["rollingUpdate"], "partition", 0);
            }
            default(spec, "revisionHistoryLimit", 10);
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template_pod_spec(spec);
        }
        Kind::Namespace => {
            let status = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()));
            if status.is_null() {
                *status = Value::Object(Map::new());
            }
            default(status, "phase", "Active");
        }
        Kind::PersistentVolumeClaim => {
            default(spec, "volumeMode", "Filesystem");
            let status = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()));
            default(status, "phase", "Pending");
        }
        Kind::PersistentVolume => {
            default(spec, "persistentVolumeReclaimPolicy", "Retain");
            default(spec, "volumeMode", "Filesystem");
            let status = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()));
            default(status, "phase", "Pending");
        }
        Kind::NetworkPolicy if !spec["policyTypes"].is_array() => {
            let mut types = vec![Value::from("Ingress")];
            if spec["egress"].is_array() {
                types.push(Value::from("Egress"));
            }
            spec["policyTypes"] = Value::Array(types);
        }
        Kind::HorizontalPodAutoscaler => super::autoscaling::apply_defaults(spec),
        Kind::EndpointSlice => {
            if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    default(port, "protocol", "TCP");
                }
            }
        }
        Kind::Service => service_defaults(spec),
        Kind::Endpoints => {
            let subsets = map.get_mut("subsets").and_then(Value::as_array_mut);
            for subset in subsets.into_iter().flatten() {
                let ports = subset.get_mut("ports").and_then(Value::as_array_mut);
                for port in ports.into_iter().flatten() {
                    default(port, "protocol", "TCP");
                }
            }
        }
        _ => {}
    }
    // Kinds whose fields are top-level (StorageClass, PriorityClass, ...)
    // or that have no spec keep none.
    if map
        .get("spec")
        .is_some_and(|s| s.as_object().is_some_and(Map::is_empty))
    {
        map.remove("spec");
    }
    match kind {
        Kind::Secret => secret_defaults(map),
        Kind::StorageClass => {
            default_in(map, "reclaimPolicy", "Delete");
            default_in(map, "volumeBindingMode", "Immediate");
        }
        Kind::PriorityClass => default_in(map, "preemptionPolicy", "PreemptLowerPriority"),
        _ => {}
    }
}

/// Sets `field` of the JSON object `at` when it is missing, null or `""`
/// (Kubernetes defaults an empty string as unset; protobuf bodies carry
/// every string field, empty ones too).
pub(crate) fn default(at: &mut Value, field: &str, value: impl Into<Value>) {
    if let Some(map) = at.as_object_mut() {
        default_in(map, field, value);
    }
}

fn default_in(map: &mut Map<String, Value>, field: &str, value: impl Into<Value>) {
    if map.get(field).is_none_or(unset) {
        map.insert(field.to_owned(), value.into());
    }
}

fn unset(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// A Service's defaults, as Kubernetes sets them: its type, session
/// affinity (and a ClientIP one's timeout), a NodePort or LoadBalancer's
/// external traffic policy, and each port's protocol and target port.
fn service_defaults(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    default_in(map, "type", "ClusterIP");
    default_in(map, "sessionAffinity", "None");
    let service_type = map.get("type").and_then(Value::as_str);
    if matches!(service_type, Some("NodePort" | "LoadBalancer")) {
        default_in(map, "externalTrafficPolicy", "Cluster");
    }
    if map.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        // Kubernetes' default stickiness: three hours.
        let client_ip = object_member(map, "sessionAffinityConfig")
            .and_then(|config| object_member(config, "clientIP"));
        if let Some(client_ip) = client_ip {
            default_in(client_ip, "timeoutSeconds", 10800);
        }
    }
    let ports = map.get_mut("ports").and_then(Value::as_array_mut);
    for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
        default_in(port, "protocol", "TCP");
        // A port number written as a string is the number (as earlier
        // releases stored it, and as their protobuf model reads it); 0 is
        // unset, as Kubernetes defaults it.
        let written = port.get("targetPort").and_then(Value::as_str);
        if let Some(number) = written.and_then(|t| t.parse::<u16>().ok()) {
            port.insert("targetPort".to_owned(), Value::from(number));
        }
        if port.get("targetPort").and_then(Value::as_i64) == Some(0) {
            port.remove("targetPort");
        }
        let number = port.get("port").filter(|p| p.is_number()).cloned();
        if let Some(number) = number {
            default_in(port, "targetPort", number);
        }
    }
}

/// The JSON object `map[name]`, made an empty one when unset; `None`
/// when it is something else (which validation refuses).
fn object_member<'a>(
    map: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    let member = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if member.is_null() {
        *member = Value::Object(Map::new());
    }
    member.as_object_mut()
}

fn job_spec(spec: &mut Value) {
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        default(spec, "completions", 1);
    }
    default(spec, "parallelism", 1);
    default(spec, "backoffLimit", 6);
    default(spec, "completionMode", "NonIndexed");
    default(spec, "suspend", false);
    default(spec, "podReplacementPolicy", "TerminatingOrFailed");
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        pod_spec(pod, None);
    }
}

/// Defaults of `spec.template.spec` (restart policy Always).
fn template_pod_spec(spec: &mut Value) {
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        pod_spec(pod, Some("Always"));
    }
}

/// A pod spec's defaults as templates get them (a pod gets more:
/// `defaults::pod_document`).
pub(crate) fn pod_spec(pod: &mut Value, restart_policy: Option<&str>) {
    if let Some(policy) = restart_policy {
        default(pod, "restartPolicy", policy);
    }
    default(pod, "terminationGracePeriodSeconds", 30);
    default(pod, "dnsPolicy", "ClusterFirst");
    default(pod, "schedulerName", "default-scheduler");
    default(pod, "securityContext", serde_json::json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = pod.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers {
                let image = container["image"].as_str().unwrap_or("").to_owned();
                default(container, "imagePullPolicy", default_pull_policy(&image));
                default(container, "terminationMessagePath", "/dev/termination-log");
                default(container, "terminationMessagePolicy", "File");
                default(container, "resources", serde_json::json!({}));
                if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports {
                        default(port, "protocol", "TCP");
                    }
                }
            }
        }
    }
}

/// What Kubernetes refuses that the schema allows: `(field, reason)` for
/// each problem.
pub fn validate(kind: Kind, object: &GenericObject) -> Vec<(String, String)> {
    validate_content(kind, object, &content(object))
}

/// [`validate`] of an object whose content the caller has read already
/// (`map`, as [`content`] reads it), so that it is parsed once.
pub fn validate_content(
    kind: Kind,
    object: &GenericObject,
    map: &Map<String, Value>,
) -> Vec<(String, String)> {
    static UNSET: Value = Value::Null;
    if let Kind::Custom(custom) = kind {
        return match served(custom) {
            Ok(served) => match version_at(&served, &object.api_version) {
                Ok(version) => custom_resources::validate(version, &to_json(object)),
                Err(e) => vec![(e.path, e.message)],
            },
            Err(e) => vec![(e.path, e.message)],
        };
    }
    if kind == Kind::CustomResourceDefinition {
        let builtin = |group: &str| super::registry::is_builtin_group(group);
        return Definition::examine(object, &builtin).1;
    }
    let spec = map.get("spec").unwrap_or(&UNSET);
    let mut problems = Vec::new();
    fn require(problems: &mut Vec<(String, String)>, present: bool, path: &str, what: &str) {
        if !present {
            problems.push((path.to_owned(), format!("Required value: {what}")));
        }
    }
    match kind {
        Kind::Secret => secret_checks(map, &mut problems),
        Kind::Job => {
            require(
                &mut problems,
                spec["template"].is_object(),
                "spec.template",
                "a pod template is required",
            );
            job_checks(spec, "spec", &mut problems);
            // The selector is generated on create unless `manualSelector`
            // is set; either way it must select the Job's pods.
            require(
                &mut problems,
                spec["selector"].is_object(),
                "spec.selector",
                "a selector is required",
            );
            if spec["selector"].is_object() {
                selector_matches_template(spec, &mut problems);
            }
        }
        Kind::CronJob => {
            let schedule = spec["schedule"].as_str().unwrap_or("");
            require(
                &mut problems,
                !schedule.is_empty(),
                "spec.schedule",
                "a schedule is required",
            );
            if !schedule.is_empty() {
                cron_job_checks(spec, schedule, &mut problems);
            }
            require(
                &mut problems,
                spec["jobTemplate"]["spec"]["template"].is_object(),
                "spec.jobTemplate.spec.template",
                "a pod template is required",
            );
            job_checks(
                &spec["jobTemplate"]["spec"],
                "spec.jobTemplate.spec",
                &mut problems,
            );
        }
        Kind::DaemonSet | Kind::StatefulSet => {
            require(
                &mut problems,
                spec["selector"].is_object(),
                "spec.selector",
                "a selector is required",
            );
            require(
                &mut problems,
                spec["template"].is_object(),
                "spec.template",
                "a pod template is required",
            );
            if spec["selector"].is_object() {
                let empty = ["matchLabels", "matchExpressions"].iter().all(|f| {
                    spec["selector"][f].as_object().is_none_or(|m| m.is_empty())
                        && spec["selector"][f].as_array().is_none_or(|a| a.is_empty())
                });
                if empty {
                    let what = if kind == Kind::DaemonSet {
                        "daemonset"
                    } else {
                        "statefulset"
                    };
                    problems.push((
                        "spec.selector".to_owned(),
                        format!("Invalid value: {{}}: empty selector is invalid for {what}"),
                    ));
                } else {
                    selector_matches_template(spec, &mut problems);
                }
            }
            if spec["template"].is_object()
                && spec["template"]["spec"]["containers"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
            {
                problems.push((
                    "spec.template.spec.containers".to_owned(),
                    "Required value: at least one container".to_owned(),
                ));
            }
            if kind == Kind::DaemonSet {
                daemon_set_strategy(&spec["updateStrategy"], &mut problems);
            }
            if kind == Kind::StatefulSet && spec["replicas"].as_i64().is_some_and(|r| r < 0) {
                problems.push((
                    "spec.replicas".to_owned(),
                    "Invalid value: must be greater than or equal to 0".to_owned(),
                ));
            }
            if kind == Kind::StatefulSet {
                claim_template_checks(&spec["volumeClaimTemplates"], &mut problems);
            }
        }
        Kind::PersistentVolumeClaim => {
            require(
                &mut problems,
                spec["accessModes"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty()),
                "spec.accessModes",
                "at least 1 access mode is required",
            );
            if spec["dataSource"].is_null() && spec["dataSourceRef"].is_null() {
                require(
                    &mut problems,
                    !spec["resources"]["requests"]["storage"].is_null(),
                    "spec.resources[storage]",
                    "the storage request is required",
                );
            }
        }
        Kind::Role | Kind::ClusterRole => {
            if let Some(rules) = map.get("rules").and_then(Value::as_array) {
                for (i, rule) in rules.iter().enumerate() {
                    if rule["verbs"].as_array().is_none_or(|v| v.is_empty()) {
                        problems.push((
                            format!("rules[{i}].verbs"),
                            "Required value: verbs must contain at least one value".to_owned(),
                        ));
                    }
                }
            }
        }
        Kind::HorizontalPodAutoscaler => super::autoscaling::validate(spec, &mut problems),
        Kind::Endpoints => endpoints_checks(map, &mut problems),
        Kind::RoleBinding | Kind::ClusterRoleBinding => {
            require(
                &mut problems,
                map.get("roleRef")
                    .is_some_and(|r| r["name"].as_str().is_some_and(|n| !n.is_empty())),
                "roleRef.name",
                "the role to bind is required",
            );
        }
        _ => {}
    }
    problems
}

/// Whether [`validate_update`] has anything to check for `kind`.
pub fn has_update_rules(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Job
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::Deployment
            | Kind::ReplicaSet
            | Kind::Secret
            | Kind::ConfigMap
    )
}

/// Endpoints' addresses and ports, as kube-apiserver checks them: each
/// address an IP, each port a port number and a protocol it knows.
fn endpoints_checks(map: &Map<String, Value>, problems: &mut Vec<(String, String)>) {
    let subsets = map.get("subsets").and_then(Value::as_array);
    for (i, subset) in subsets.into_iter().flatten().enumerate() {
        for list in ["addresses", "notReadyAddresses"] {
            let addresses = subset[list].as_array();
            for (j, address) in addresses.into_iter().flatten().enumerate() {
                let ip = address["ip"].as_str().unwrap_or("");
                if ip.parse::<std::net::IpAddr>().is_err() {
                    problems.push((
                        format!("subsets[{i}].{list}[{j}].ip"),
                        format!("Invalid value: {ip:?}: must be a valid IP address"),
                    ));
                }
            }
        }
        let ports = subset["ports"].as_array();
        for (j, port) in ports.into_iter().flatten().enumerate() {
            let number = port["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                problems.push((
                    format!("subsets[{i}].ports[{j}].port"),
                    format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                ));
            }
            let protocol = port["protocol"].as_str().unwrap_or("TCP");
            if !["TCP", "UDP", "SCTP"].contains(&protocol) {
                problems.push((
                    format!("subsets[{i}].ports[{j}].protocol"),
                    format!("Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ));
            }
        }
    }
}

/// What Kubernetes refuses in an update of `kind` from `old` to `new`
/// (both with defaults applied, compared as Kubernetes' semantic equality
/// compares: `strip_zeros`; selectors `strip_empty`, a label's value `""`
/// being a value) that `validate` of `new` alone allows:
/// `(field, reason)` for each field that may not change. A Job's
/// selector, completion mode, success and failure policies,
/// backoffLimitPerIndex, managedBy and pod template (a
/// suspended Job that never started may change its template's scheduling
/// directives, labels and annotations), and its completions unless it is
/// an Indexed Job kept at completions = parallelism; a StatefulSet's spec
/// beyond the fields it may change; a DaemonSet's, Deployment's or ReplicaSet's
/// selector.
pub fn validate_update(
    kind: Kind,
    old: &GenericObject,
    new: &GenericObject,
) -> Vec<(String, String)> {
    // Compared as Kubernetes' semantic equality compares Go values: an
    // unset field, an empty list or map and a zero value are the same.
    let spec_of = |object: &GenericObject| {
        let mut spec = content(object).remove("spec").unwrap_or(Value::Null);
        strip_zeros(&mut spec);
        spec
    };
    let (before, after) = (spec_of(old), spec_of(new));
    let mut problems = Vec::new();
    let immutable = |field: &str, problems: &mut Vec<(String, String)>| {
        if before[field] != after[field] {
            problems.push((format!("spec.{field}"), immutable_reason(&after[field])));
        }
    };
    // A kind given rules here is named in `has_update_rules` too.
    match kind {
        Kind::Job => {
            for field in [
                "selector",
                "completionMode",
                "podFailurePolicy",
                "successPolicy",
                "backoffLimitPerIndex",
                "managedBy",
            ] {
                immutable(field, &mut problems);
            }
            // An Indexed Job's completions change with its parallelism
            // (elastic Indexed Jobs); other Jobs' never.
            let completions = &after["completions"];
            if before["completions"] != *completions {
                if after["completionMode"] != "Indexed" {
                    problems.push(("spec.completions".to_owned(), immutable_reason(completions)));
                } else if !completions.is_null() && *completions != after["parallelism"] {
                    problems.push((
                        "spec.completions".to_owned(),
                        format!(
                            "Invalid value: {completions}: can only be modified in tandem with spec.parallelism"
                        ),
                    ));
                }
            }
            let never_started = before["suspend"] == true
                && content(old)
                    .get("status")
                    .is_none_or(|s| s["startTime"].is_null());
            let template = |spec: &Value| {
                let mut template = spec["template"].clone();
                if never_started {
                    if let Some(meta) = template
                        .as_object_mut()
                        .and_then(|t| t.get_mut("metadata"))
                        .and_then(Value::as_object_mut)
                    {
                        meta.remove("labels");
                        meta.remove("annotations");
                    }
                    if let Some(pod) = template
                        .as_object_mut()
                        .and_then(|t| t.get_mut("spec"))
                        .and_then(Value::as_object_mut)
                    {
                        for field in ["nodeSelector", "tolerations", "schedulingGates"] {
                            pod.remove(field);
                        }
                        if let Some(affinity) =
                            pod.get_mut("affinity").and_then(Value::as_object_mut)
                        {
                            affinity.remove("nodeAffinity");
                        }
                    }
                    strip_zeros(&mut template);
                }
                template
            };
            if template(&before) != template(&after) {
                problems.push((
                    "spec.template".to_owned(),
                    immutable_reason(&after["template"]),
                ));
            }
        }
        Kind::StatefulSet => {
            let fixed = |spec: &Value| {
                let mut spec = spec.clone();
                if let Some(map) = spec.as_object_mut() {
                    for field in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "revisionHistoryLimit",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        map.remove(field);
                    }
                }
                spec
            };
            if fixed(&before) != fixed(&after) {
                problems.push((
                    "spec".to_owned(),
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', \
                     'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', \
                     'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
                        .to_owned(),
                ));
            }
        }
        // Compared as label selectors: a label's value "" is a value.
        Kind::DaemonSet | Kind::Deployment | Kind::ReplicaSet => {
            let selector_of = |object: &GenericObject| {
                let mut selector = content(object)
                    .get("spec")
                    .map(|spec| spec["selector"].clone())
                    .unwrap_or(Value::Null);
                strip_empty(&mut selector);
                selector
            };
            let asked = selector_of(new);
            if selector_of(old) != asked {
                problems.push(("spec.selector".to_owned(), immutable_reason(&asked)));
            }
        }
        Kind::Secret => immutable_data(old, new, "Secret", &["data", "stringData"], &mut problems),
        Kind::ConfigMap => immutable_data(
            old,
            new,
            "ConfigMap",
            &["data", "binaryData"],
            &mut problems,
        ),
        _ => {}
    }
    problems
}

/// A Secret's `type` never changes; an `immutable` Secret's or ConfigMap's
/// values and `immutable` itself never change either (Kubernetes'
/// `ValidateSecretUpdate`, `ValidateConfigMapUpdate`).
fn immutable_data(
    old: &GenericObject,
    new: &GenericObject,
    kind: &str,
    values: &[&str],
    problems: &mut Vec<(String, String)>,
) {
    let (before, after) = (content(old), content(new));
    let field = |map: &Map<String, Value>, name: &str| {
        let mut value = map.get(name).cloned().unwrap_or(Value::Null);
        strip_zeros(&mut value);
        value
    };
    if kind == "Secret" && field(&before, "type") != field(&after, "type") {
        problems.push(("type".to_owned(), immutable_reason(&after["type"])));
    }
    if before.get("immutable") != Some(&Value::Bool(true)) {
        return;
    }
    for name in values {
        if field(&before, name) != field(&after, name) {
            problems.push((
                (*name).to_owned(),
                "Forbidden: field is immutable when `immutable` is set".to_owned(),
            ));
        }
    }
    if after.get("immutable") != Some(&Value::Bool(true)) {
        problems.push((
            "immutable".to_owned(),
            "Forbidden: field is immutable when `immutable` is set".to_owned(),
        ));
    }
}

/// Largest total size of a Secret's values, as in Kubernetes.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A Secret's keys (letters, digits, '-', '_' and '.'; not `.` or `..`),
/// its values (text; `data`'s base64) and their total size (Kubernetes'
/// `ValidateSecret`).
fn secret_checks(map: &Map<String, Value>, problems: &mut Vec<(String, String)>) {
    use base64::Engine;
    let mut total = 0;
    for field in ["data", "stringData"] {
        let Some(values) = map.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in values {
            let key_ok = !key.is_empty()
                && key.len() <= 253
                && key != "."
                && key != ".."
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !key_ok {
                problems.push((
                    format!("{field}[{key}]"),
                    format!(
                        "Invalid value: {key:?}: a valid config key must consist of alphanumeric \
                         characters, '-', '_' or '.'"
                    ),
                ));
            }
            let Some(text) = value.as_str() else {
                problems.push((
                    format!("{field}[{key}]"),
                    format!("Invalid value: {value}: must be a string"),
                ));
                continue;
            };
            if field == "stringData" {
                total += text.len();
                continue;
            }
            // The schema check refuses bad base64 in what REST and
            // manifests send; a protobuf Secret from an older client made a
            // document is checked here.
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => total += bytes.len(),
                Err(_) => problems.push((
                    format!("data[{key}]"),
                    "Invalid value: illegal base64 data".to_owned(),
                )),
            }
        }
    }
    if total > MAX_SECRET_BYTES {
        problems.push((
            "data".to_owned(),
            format!("Too long: may not be more than {MAX_SECRET_BYTES} bytes ({total} given)"),
        ));
    }
}

/// A Secret's `type` is `Opaque` unless set; `stringData` is write-only,
/// its values written into `data` as base64 over those of the same key
/// (Kubernetes' Secret strategy).
fn secret_defaults(map: &mut Map<String, Value>) {
    use base64::Engine;
    default_in(map, "type", "Opaque");
    let Some(plain) = map.remove("stringData") else {
        return;
    };
    let Value::Object(plain) = plain else {
        return;
    };
    if let Some(data) = object_at(map, "data").as_object_mut() {
        for (key, value) in plain {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::from(encoded));
        }
    }
}

/// Kubernetes' reason for a changed immutable field, showing the value
/// asked for (shortened when long).
pub fn immutable_reason(value: &Value) -> String {
    const LONGEST: usize = 120;
    let mut shown = value.to_string();
    if shown.len() > LONGEST {
        let mut end = LONGEST;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    format!("Invalid value: {shown}: field is immutable")
}

/// Removes every `null` member of every object in `value`: unset, to
/// Kubernetes as to the typed models.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Writes the quantities of `value`'s own fields (`requests`, `limits`,
/// `overhead`, `capacity`, `sizeLimit`) as their value in millis, so that
/// `cpu: 1`, `"1"` and `"1000m"` compare alike (and `1Gi` and `1024Mi`).
fn quantities_as_values(value: &mut Value) {
    fn quantity_value(value: &mut Value) {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return,
        };
        if let Ok(q) = crate::Quantity::parse(&text) {
            *value = Value::String(format!("{}m", q.milli()));
        }
    }
    if let Value::Object(fields) = value {
        for (key, field) in fields.iter_mut() {
            match key.as_str() {
                "requests" | "limits" | "overhead" | "capacity" => {
                    if let Some(quantities) = field.as_object_mut() {
                        quantities.values_mut().for_each(quantity_value);
                    }
                }
                "sizeLimit" => quantity_value(field),
                _ => {}
            }
        }
    }
}

/// Removes, at every depth, `null`s and empty lists and maps (which
/// Kubernetes' semantic equality takes as unset), keeping `""`, `false`
/// and `0`, which a field that is a pointer in Kubernetes' Go types (and
/// a map's entry) holds as a value of its own; quantities compared by
/// value, as `strip_zeros` does.
pub fn strip_empty(value: &mut Value) {
    quantities_as_values(value);
    match value {
        Value::Object(fields) => {
            fields.values_mut().for_each(strip_empty);
            fields.retain(|_, v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty),
        _ => {}
    }
}

/// Removes, at every depth, what Kubernetes' semantic equality does not
/// tell from an unset field: `null`, `false`, `0`, `""`, and lists and
/// maps left empty; and writes each quantity of resources (`requests`,
/// `limits`, `overhead`, `capacity`, `sizeLimit`) as its value, as
/// Kubernetes compares them (`cpu: 1`, `"1"` and `"1000m"` alike; `1Gi`
/// and `1024Mi`), which a Go client sends back in canonical form.
pub fn strip_zeros(value: &mut Value) {
    quantities_as_values(value);
    fn zero(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(items) => items.is_empty(),
            Value::Object(fields) => fields.is_empty(),
        }
    }
    match value {
        Value::Object(fields) => {
            fields.values_mut().for_each(strip_zeros);
            fields.retain(|_, v| !zero(v));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_zeros),
        _ => {}
    }
}

/// Generated fields a replace from a manifest (`skiff ctl apply`, the
/// auto-deploy directory) carries over from the stored object, as
/// kubectl's apply keeps what it did not set: a Job's completions when
/// the manifest sets none, and its generated selector and the labels it
/// selects in the pod template, when the manifest sets no selector of its
/// own.
pub fn keep_generated(kind: Kind, stored: &GenericObject, sent: &mut GenericObject) {
    if kind != Kind::Job {
        return;
    }
    let stored = content(stored);
    let mut map = content(sent);
    let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if manual || spec.get("selector").is_some_and(|s| !s.is_null()) {
        return;
    }
    let Some(stored_spec) = stored.get("spec") else {
        return;
    };
    // Completions defaulted at create (a Job created with neither
    // completions nor parallelism has 1) stay: a manifest that now sets
    // parallelism alone would otherwise ask to unset them.
    if spec.get("completions").is_none_or(Value::is_null) {
        if let Some(completions) = stored_spec.get("completions").filter(|c| !c.is_null()) {
            spec.insert("completions".to_owned(), completions.clone());
        }
    }
    let Some(selector) = stored_spec.get("selector").filter(|s| !s.is_null()) else {
        set_content(sent, &map);
        return;
    };
    spec.insert("selector".to_owned(), selector.clone());
    let generated = &stored_spec["template"]["metadata"]["labels"];
    let labels = template_labels_mut(spec);
    if let Some(labels) = labels {
        for (key, _) in job_pod_labels("", "") {
            if let Some(value) = generated.get(key) {
                labels.entry(key).or_insert_with(|| value.clone());
            }
        }
    }
    set_content(sent, &map);
}

/// The problems of a label selector's expressions, as Kubernetes'
/// `ValidateLabelSelector` names them (`at`: the selector's path).
fn selector_checks(selector: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let Some(expressions) = selector["matchExpressions"].as_array() else {
        return;
    };
    for (i, expression) in expressions.iter().enumerate() {
        let path = format!("{at}.matchExpressions[{i}]");
        let values = expression["values"].as_array().map_or(0, Vec::len);
        match expression["operator"].as_str().unwrap_or("") {
            "In" | "NotIn" if values == 0 => problems.push((
                format!("{path}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'".to_owned(),
            )),
            "Exists" | "DoesNotExist" if values > 0 => problems.push((
                format!("{path}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    .to_owned(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => problems.push((
                format!("{path}.operator"),
                format!("Invalid value: {other:?}: not a valid selector operator"),
            )),
        }
    }
}

/// Whether `spec.selector` selects `spec.template`'s labels (`matchLabels`
/// and `matchExpressions`); if not, the problem as Kubernetes names it.
/// An expression Kubernetes refuses is named instead; a selector that
/// does not read is left to the schema.
fn selector_matches_template(spec: &Value, problems: &mut Vec<(String, String)>) {
    let before = problems.len();
    selector_checks(&spec["selector"], "spec.selector", problems);
    if problems.len() > before {
        // A selector that does not parse is not matched (Kubernetes').
        return;
    }
    let Ok(selector) = serde_json::from_value::<LabelSelector>(spec["selector"].clone()) else {
        return;
    };
    let labels: BTreeMap<String, String> = spec["template"]["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if !super::selector::matches(&selector, &labels) {
        problems.push((
            "spec.template.metadata.labels".to_owned(),
            "Invalid value: `selector` does not match template `labels`".to_owned(),
        ));
    }
}

/// A DaemonSet's `updateStrategy`, as Kubernetes validates it: a known
/// type, and for RollingUpdate counts or percentages of which exactly one
/// is above 0.
fn daemon_set_strategy(strategy: &Value, problems: &mut Vec<(String, String)>) {
    const STRATEGIES: &str = r#""OnDelete", "RollingUpdate""#;
    let at = "spec.updateStrategy";
    match strategy["type"].as_str().unwrap_or("RollingUpdate") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let rolling = &strategy["rollingUpdate"];
            // Unset, each is Kubernetes' default.
            let mut amount = |field: &str, unset: i64| -> Option<i64> {
                let path = format!("{at}.rollingUpdate.{field}");
                let value = &rolling[field];
                let (number, percent) = match value {
                    Value::Null => return Some(unset),
                    Value::Number(n) => (n.as_i64(), false),
                    Value::String(s) => match s.strip_suffix('%') {
                        Some(p) => (p.parse::<i64>().ok(), true),
                        None => (s.parse::<i64>().ok(), false),
                    },
                    _ => (None, false),
                };
                let reason = match number {
                    None => "must be an integer or percentage (e.g. 5 or 10%)",
                    Some(n) if n < 0 => "must be greater than or equal to 0",
                    Some(n) if percent && n > 100 => "must not be greater than 100%",
                    Some(n) => return Some(n),
                };
                problems.push((path, format!("Invalid value: {value}: {reason}")));
                None
            };
            let surge = amount("maxSurge", 0);
            let unavailable = amount("maxUnavailable", 1);
            match (surge, unavailable) {
                (Some(s), Some(u)) if s > 0 && u > 0 => problems.push((
                    format!("{at}.rollingUpdate.maxSurge"),
                    "Invalid value: may not be set when maxUnavailable is non-zero".to_owned(),
                )),
                (Some(0), Some(0)) => problems.push((
                    format!("{at}.rollingUpdate.maxUnavailable"),
                    "Required value: cannot be 0 when maxSurge is 0".to_owned(),
                )),
                _ => {}
            }
        }
        other => problems.push((
            format!("{at}.type"),
            format!("Unsupported value: {other:?}: supported values: {STRATEGIES}"),
        )),
    }
}

fn job_checks(spec: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let policy = spec["template"]["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("");
    if spec["template"].is_object() && policy != "Never" && policy != "OnFailure" {
        problems.push((
            format!("{at}.template.spec.restartPolicy"),
            format!("Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\""),
        ));
    }
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            problems.push((
                format!("{at}.{field}"),
                "Invalid value: must be greater than or equal to 0".to_owned(),
            ));
        }
    }
    if spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|n| n <= 0)
    {
        problems.push((
            format!("{at}.activeDeadlineSeconds"),
            "Invalid value: must be greater than 0".to_owned(),
        ));
    }
    let mode = spec["completionMode"].as_str().unwrap_or("NonIndexed");
    if mode != "NonIndexed" && mode != "Indexed" {
        problems.push((
            format!("{at}.completionMode"),
            format!("Unsupported value: {mode:?}: supported values: \"NonIndexed\", \"Indexed\""),
        ));
    }
    if mode == "Indexed" && spec["completions"].is_null() {
        problems.push((
            format!("{at}.completions"),
            "Required value: when completion mode is Indexed".to_owned(),
        ));
    }
    if spec["podFailurePolicy"].is_object() {
        if spec["template"].is_object() && policy != "Never" {
            problems.push((
                format!("{at}.template.spec.restartPolicy"),
                format!("Invalid value: {policy:?}: only \"Never\" is supported when podFailurePolicy is specified"),
            ));
        }
        pod_failure_policy_checks(
            &spec["podFailurePolicy"],
            &format!("{at}.podFailurePolicy"),
            problems,
        );
    }
}

fn pod_failure_policy_checks(policy: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let rules = policy["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{at}.rules[{i}]");
        let action = rule["action"].as_str().unwrap_or("");
        if !matches!(action, "FailJob" | "FailIndex" | "Ignore" | "Count") {
            problems.push((
                format!("{at}.action"),
                format!("Unsupported value: {action:?}: supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\""),
            ));
        }
        let on_exit_codes = rule["onExitCodes"].is_object();
        let on_conditions = rule["onPodConditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        if on_exit_codes == on_conditions {
            problems.push((
                at.clone(),
                "Invalid value: specify one of onExitCodes and onPodConditions, but not both"
                    .to_owned(),
            ));
        }
        if on_exit_codes {
            let codes = &rule["onExitCodes"];
            let operator = codes["operator"].as_str().unwrap_or("");
            if operator != "In" && operator != "NotIn" {
                problems.push((
                    format!("{at}.onExitCodes.operator"),
                    format!("Unsupported value: {operator:?}: supported values: \"In\", \"NotIn\""),
                ));
            }
            let values = codes["values"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if values.is_empty() {
                problems.push((
                    format!("{at}.onExitCodes.values"),
                    "Required value: at least one exit code".to_owned(),
                ));
            }
            if operator == "In" && values.iter().any(|v| v.as_i64() == Some(0)) {
                problems.push((
                    format!("{at}.onExitCodes.values"),
                    "Invalid value: 0: must not be 0 for the In operator".to_owned(),
                ));
            }
        }
    }
}

/// A CronJob's schedule (parsed as the controller parses it), time zone
/// and policies.
fn cron_job_checks(spec: &Value, schedule: &str, problems: &mut Vec<(String, String)>) {
    match CronSchedule::parse(schedule) {
        Err(e) => problems.push((
            "spec.schedule".to_owned(),
            format!("Invalid value: {schedule:?}: {e}"),
        )),
        Ok(parsed) => {
            if let Some(zone) = parsed.time_zone() {
                if spec["timeZone"].is_string() {
                    problems.push((
                        "spec.schedule".to_owned(),
                        format!("Invalid value: {schedule:?}: cannot use both timeZone field and TZ or CRON_TZ in schedule"),
                    ));
                } else if let Err(e) = time_zone(zone) {
                    problems.push((
                        "spec.schedule".to_owned(),
                        format!("Invalid value: {schedule:?}: {e}"),
                    ));
                }
            }
        }
    }
    if let Some(zone) = spec["timeZone"].as_str() {
        if let Err(e) = time_zone(zone) {
            problems.push((
                "spec.timeZone".to_owned(),
                format!("Invalid value: {zone:?}: {}", e.reason),
            ));
        }
    }
    let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
    if !matches!(policy, "Allow" | "Forbid" | "Replace") {
        problems.push((
            "spec.concurrencyPolicy".to_owned(),
            format!("Unsupported value: {policy:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""),
        ));
    }
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            problems.push((
                format!("spec.{field}"),
                "Invalid value: must be greater than or equal to 0".to_owned(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(kind: Kind, value: Value) -> (GenericObject, Vec<String>) {
        let mut unknown = Vec::new();
        let object = from_json(kind, value, &mut unknown).unwrap();
        (object, unknown)
    }

    #[test]
    fn objects_round_trip_keeping_every_field_sent() {
        let sent = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default", "labels": {"a": "b"}},
            "data": {"mode": "fast"}, "binaryData": {"blob": "AAE="}
        });
        let (object, unknown) = read(Kind::ConfigMap, sent.clone());
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(object.metadata.as_ref().unwrap().name, "settings");
        assert_eq!(to_json(&object), sent);
    }

    #[test]
    fn the_schema_refuses_wrong_types_naming_the_field_and_reports_unknown_ones() {
        let mut unknown = Vec::new();
        let e = from_json(
            Kind::Job,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"backoffLimit": "many"}}),
            &mut unknown,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.backoffLimit", "{e:?}");

        let (object, unknown) = read(
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "data": {}, "colour": "blue"}),
        );
        assert_eq!(unknown, vec!["colour".to_owned()]);
        assert_eq!(content(&object)["colour"], "blue");
    }

    #[test]
    fn status_is_kept_apart_from_what_the_object_wants() {
        let (mut a, _) = read(
            Kind::Job,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"parallelism": 2}, "status": {"active": 1}}),
        );
        let (b, _) = read(
            Kind::Job,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"parallelism": 2}, "status": {"succeeded": 3}}),
        );
        assert!(same_spec(&a, &b));
        copy_status(&mut a, &b);
        assert_eq!(content(&a)["status"], json!({"succeeded": 3}));
    }

    #[test]
    fn a_status_is_given_and_taken_and_left_alone_when_neither_has_one() {
        let object = |content: Value| GenericObject {
            api_version: "v1".into(),
            kind: "Endpoints".into(),
            metadata: None,
            content: serde_json::to_vec(&content).unwrap(),
        };
        // Neither has one: the content stays byte for byte.
        let mut plain = object(json!({"subsets": [{"addresses": [{"ip": "10.42.1.5"}]}]}));
        let before = plain.content.clone();
        copy_status(&mut plain, &object(json!({"subsets": []})));
        assert_eq!(plain.content, before);
        // Given, and taken away.
        copy_status(&mut plain, &object(json!({"status": {"phase": "Active"}})));
        assert_eq!(content(&plain)["status"], json!({"phase": "Active"}));
        copy_status(&mut plain, &object(json!({"subsets": []})));
        assert!(!content(&plain).contains_key("status"));
        // Equal bytes are the same spec; different ones are compared.
        let a = object(json!({"subsets": [], "status": {"x": 1}}));
        let b = object(json!({"status": {"x": 2}, "subsets": []}));
        assert!(same_spec(&a, &a.clone()));
        assert!(same_spec(&a, &b));
        assert!(!same_spec(&a, &object(json!({"subsets": [{}]}))));
    }

    #[test]
    fn a_service_gets_kubernetes_defaults_and_keeps_what_was_given() {
        let service = |spec: Value| {
            let (mut object, _) = read(
                Kind::Service,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": spec}),
            );
            apply_defaults(Kind::Service, &mut object);
            content(&object)["spec"].clone()
        };
        let plain = service(json!({"ports": [
            {"port": 80},
            {"port": 53, "protocol": "UDP", "targetPort": "dns"},
            {"name": "a", "port": 81, "targetPort": "8081"},
            {"name": "b", "port": 82, "targetPort": 0},
        ]}));
        assert_eq!(plain["type"], "ClusterIP");
        assert_eq!(plain["sessionAffinity"], "None");
        assert!(plain["externalTrafficPolicy"].is_null(), "{plain}");
        assert_eq!(
            plain["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(
            plain["ports"][1],
            json!({"port": 53, "protocol": "UDP", "targetPort": "dns"})
        );
        // A number written as a string is the number; 0 is unset.
        assert_eq!(plain["ports"][2]["targetPort"], 8081);
        assert_eq!(plain["ports"][3]["targetPort"], 82);
        let sticky = service(json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP"}));
        assert_eq!(sticky["externalTrafficPolicy"], "Cluster");
        assert_eq!(
            sticky["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        let timed = service(json!({"sessionAffinity": "ClientIP",
                                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        assert_eq!(
            timed["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            60
        );
        // A spec of the wrong shape is left for validation, not defaulted.
        let mut odd = document(
            "v1",
            "Service",
            None,
            json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": 5,
                            "ports": [7]}}),
        );
        apply_defaults(Kind::Service, &mut odd);
        assert_eq!(content(&odd)["spec"]["sessionAffinityConfig"], 5);
        assert_eq!(content(&odd)["spec"]["ports"], json!([7]));
    }

    #[test]
    fn kubernetes_defaults_are_set_and_what_was_given_is_kept() {
        let (mut job, _) = read(
            Kind::Job,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox"}]}}}}),
        );
        apply_defaults(Kind::Job, &mut job);
        let spec = &content(&job)["spec"];
        assert_eq!(spec["backoffLimit"], 2);
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );

        let (mut sc, _) = read(
            Kind::StorageClass,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "local"}, "provisioner": "x"}),
        );
        apply_defaults(Kind::StorageClass, &mut sc);
        let c = content(&sc);
        assert_eq!(c["reclaimPolicy"], "Delete");
        assert!(c.get("spec").is_none(), "{c:?}");
    }

    #[test]
    fn an_autoscaler_is_defaulted_and_never_keeps_v1s_round_trip_annotations() {
        let (mut hpa, _) = read(
            Kind::HorizontalPodAutoscaler,
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "web", "annotations": {
                       "team": "shop",
                       "autoscaling.alpha.kubernetes.io/metrics": "[]",
                       "autoscaling.alpha.kubernetes.io/conditions": "[]"}},
                   "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                            "maxReplicas": 3}}),
        );
        apply_defaults(Kind::HorizontalPodAutoscaler, &mut hpa);
        let annotations = &hpa.metadata.as_ref().unwrap().annotations;
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        assert_eq!(content(&hpa)["spec"]["minReplicas"], 1);
    }

    #[test]
    fn a_daemonsets_update_strategy_is_defaulted_and_checked_as_kubernetes_does() {
        let daemon_set = |strategy: Value| {
            let (mut ds, _) = read(
                Kind::DaemonSet,
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
                       "spec": {"selector": {"matchLabels": {"a": "b"}},
                         "updateStrategy": strategy,
                         "template": {"metadata": {"labels": {"a": "b"}},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            );
            apply_defaults(Kind::DaemonSet, &mut ds);
            ds
        };
        let problems = |strategy: Value| -> Vec<String> {
            let found = validate(Kind::DaemonSet, &daemon_set(strategy));
            found.into_iter().map(|(field, _)| field).collect()
        };
        let defaulted = content(&daemon_set(json!({"rollingUpdate": {"maxSurge": 0}})));
        let strategy = &defaulted["spec"]["updateStrategy"];
        assert_eq!(strategy["type"], "RollingUpdate");
        assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(strategy["rollingUpdate"]["maxSurge"], 0);
        assert!(problems(json!({})).is_empty());
        assert!(problems(json!({"type": "OnDelete"})).is_empty());
        let surge = json!({"rollingUpdate": {"maxSurge": "10%", "maxUnavailable": 0}});
        assert!(problems(surge).is_empty());

        let at = "spec.updateStrategy.rollingUpdate";
        let both = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}});
        assert_eq!(problems(both), [format!("{at}.maxSurge")]);
        let neither = json!({"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}});
        assert_eq!(problems(neither), [format!("{at}.maxUnavailable")]);
        let wrong = json!({"rollingUpdate": {"maxSurge": "a lot", "maxUnavailable": "150%"}});
        let fields = [format!("{at}.maxSurge"), format!("{at}.maxUnavailable")];
        assert_eq!(problems(wrong), fields);
        let unknown = json!({"type": "Sometimes"});
        assert_eq!(problems(unknown), ["spec.updateStrategy.type"]);
    }

    #[test]
    fn a_created_job_selects_its_pods_by_its_uid_unless_it_brings_a_selector() {
        let job = |spec: Value| {
            read(
                Kind::Job,
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
                       "spec": spec}),
            )
            .0
        };
        let mut generated = job(json!({"template": {"metadata": {"labels": {"app": "b"}},
                                                    "spec": {"containers": []}}}));
        generate_job_selector(&mut generated, "u-1");
        let spec = &content(&generated)["spec"];
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({"app": "b", "batch.kubernetes.io/controller-uid": "u-1",
                   "batch.kubernetes.io/job-name": "backup", "controller-uid": "u-1",
                   "job-name": "backup"})
        );
        // No template: nothing made up (validation names what is missing).
        let mut bare = job(json!({"completions": 1}));
        generate_job_selector(&mut bare, "u-1");
        assert!(content(&bare)["spec"].get("template").is_none());
        for kept in [
            json!({"manualSelector": true, "template": {}}),
            json!({"selector": {"matchLabels": {"app": "b"}}, "template": {}}),
        ] {
            let mut manual = job(kept.clone());
            generate_job_selector(&mut manual, "u-1");
            assert_eq!(content(&manual)["spec"], kept);
        }
    }

    #[test]
    fn what_the_schema_allows_but_kubernetes_refuses_is_refused() {
        let (job, _) = read(
            Kind::Job,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                   "spec": {"template": {"spec": {"restartPolicy": "Always",
                     "containers": [{"name": "c", "image": "busybox"}]}}}}),
        );
        let problems = validate(Kind::Job, &job);
        assert_eq!(
            problems[0].0, "spec.template.spec.restartPolicy",
            "{problems:?}"
        );

        let (cron, _) = read(
            Kind::CronJob,
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                   "spec": {"schedule": "every day", "jobTemplate": {"spec": {"template": {"spec": {
                     "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}}),
        );
        assert_eq!(validate(Kind::CronJob, &cron)[0].0, "spec.schedule");

        let cron_problems = |spec: Value| -> Vec<String> {
            let mut spec = spec;
            spec["jobTemplate"] = json!({"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
            let (cron, _) = read(
                Kind::CronJob,
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                       "spec": spec}),
            );
            validate(Kind::CronJob, &cron)
                .into_iter()
                .map(|(field, reason)| format!("{field}: {reason}"))
                .collect()
        };
        assert_eq!(
            cron_problems(json!({"schedule": "*/5 * * * *"})),
            Vec::<String>::new()
        );
        let out_of_range = cron_problems(json!({"schedule": "61 * * * *"}));
        assert!(
            out_of_range[0].starts_with("spec.schedule: Invalid value")
                && out_of_range[0].contains("minute"),
            "{out_of_range:?}"
        );
        let unknown_zone = cron_problems(json!({"schedule": "@daily", "timeZone": "Mars/Base"}));
        assert!(
            unknown_zone[0].starts_with("spec.timeZone:"),
            "{unknown_zone:?}"
        );
        let local = cron_problems(json!({"schedule": "@daily", "timeZone": "Local"}));
        assert!(local[0].starts_with("spec.timeZone:"), "{local:?}");
        let both = cron_problems(json!({"schedule": "TZ=UTC @daily", "timeZone": "UTC"}));
        assert!(both[0].contains("cannot use both"), "{both:?}");
        let policy = cron_problems(json!({
            "schedule": "@daily", "concurrencyPolicy": "Sometimes", "startingDeadlineSeconds": -1
        }));
        assert!(
            policy[0].starts_with("spec.concurrencyPolicy: Unsupported value"),
            "{policy:?}"
        );
        assert!(
            policy[1].starts_with("spec.startingDeadlineSeconds:"),
            "{policy:?}"
        );

        let job_problems = |spec: Value| -> Vec<String> {
            let (mut job, _) = read(
                Kind::Job,
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                       "spec": spec}),
            );
            generate_job_selector(&mut job, "u-1");
            validate(Kind::Job, &job)
                .into_iter()
                .map(|(field, _)| field)
                .collect()
        };
        let template = |restart: &str| {
            let containers = json!([{"name": "c", "image": "i"}]);
            json!({"spec": {"restartPolicy": restart, "containers": containers}})
        };
        assert_eq!(
            job_problems(json!({"completionMode": "Indexed", "template": template("Never")})),
            ["spec.completions"]
        );
        assert_eq!(
            job_problems(json!({"completionMode": "Sorted", "template": template("Never")})),
            ["spec.completionMode"]
        );
        assert_eq!(
            job_problems(json!({"activeDeadlineSeconds": 0, "template": template("Never")})),
            ["spec.activeDeadlineSeconds"]
        );
        let failure_policy = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0]}},
            {"action": "Explode", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Ignore"}
        ]});
        assert_eq!(
            job_problems(
                json!({"podFailurePolicy": failure_policy, "template": template("OnFailure")})
            ),
            [
                "spec.template.spec.restartPolicy",
                "spec.podFailurePolicy.rules[0].onExitCodes.values",
                "spec.podFailurePolicy.rules[1].action",
                "spec.podFailurePolicy.rules[2]",
            ]
        );

        let (pvc, _) = read(
            Kind::PersistentVolumeClaim,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"},
                   "spec": {}}),
        );
        let fields: Vec<String> = validate(Kind::PersistentVolumeClaim, &pvc)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
    }

    #[test]
    fn a_statefulsets_claim_templates_need_a_name_access_modes_and_storage() {
        let claims = json!([
            {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
            {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}},
            {"spec": {"resources": {"requests": {"storage": "1Gi"}}}},
        ]);
        let (set, _) = read(
            Kind::StatefulSet,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                   "spec": {"selector": {"matchLabels": {"app": "db"}},
                            "template": {"metadata": {"labels": {"app": "db"}},
                                         "spec": {"containers": [{"name": "db", "image": "db"}]}},
                            "volumeClaimTemplates": claims}}),
        );
        let fields: Vec<String> = validate(Kind::StatefulSet, &set)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.volumeClaimTemplates[1].metadata.name",
                "spec.volumeClaimTemplates[1].spec.resources[storage]",
                "spec.volumeClaimTemplates[2].metadata.name",
                "spec.volumeClaimTemplates[2].spec.accessModes",
            ]
        );
    }
    /// `kind` named `name` with `spec`, defaults applied.
    fn defaulted(kind: Kind, api_version: &str, spec: Value) -> GenericObject {
        let (mut object, _) = read(
            kind,
            json!({"apiVersion": api_version, "kind": kind.name(),
                   "metadata": {"name": "x", "namespace": "default"}, "spec": spec}),
        );
        apply_defaults(kind, &mut object);
        object
    }

    fn fields(problems: Vec<(String, String)>) -> Vec<String> {
        problems.into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn a_selector_must_select_the_template_by_its_expressions_too() {
        let set = |selector: Value, labels: Value| {
            defaulted(
                Kind::DaemonSet,
                "apps/v1",
                json!({"selector": selector,
                       "template": {"metadata": {"labels": labels},
                                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}),
            )
        };
        let matching = set(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}),
            json!({"app": "b"}),
        );
        assert!(fields(validate(Kind::DaemonSet, &matching)).is_empty());
        let missed = set(
            json!({"matchLabels": {"app": "b"},
                   "matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            json!({"app": "b"}),
        );
        let problems = validate(Kind::DaemonSet, &missed);
        assert_eq!(fields(problems.clone()), ["spec.template.metadata.labels"]);
        assert!(problems[0]
            .1
            .contains("`selector` does not match template `labels`"));
        let empty = set(json!({}), json!({"app": "b"}));
        let problems = validate(Kind::DaemonSet, &empty);
        assert_eq!(fields(problems.clone()), ["spec.selector"]);
        assert!(problems[0]
            .1
            .contains("empty selector is invalid for daemonset"));
    }

    #[test]
    fn a_manual_job_selector_must_select_its_template() {
        let job = |selector: Value| {
            let mut job = defaulted(
                Kind::Job,
                "batch/v1",
                json!({"manualSelector": true, "selector": selector,
                       "template": {"metadata": {"labels": {"app": "batch"}},
                                    "spec": {"restartPolicy": "Never",
                                             "containers": [{"name": "c", "image": "i"}]}}}),
            );
            generate_job_selector(&mut job, "u-1");
            validate(Kind::Job, &job)
        };
        assert!(job(json!({"matchLabels": {"app": "batch"}})).is_empty());
        assert_eq!(
            fields(job(json!({"matchLabels": {"app": "other"}}))),
            ["spec.template.metadata.labels"]
        );
        assert_eq!(fields(job(Value::Null)), ["spec.selector"]);
    }

    #[test]
    fn a_jobs_template_selector_and_completions_are_immutable() {
        let spec = |completions: i64, image: &str| {
            json!({"completions": completions, "parallelism": 1,
                   "selector": {"matchLabels": {JOB_CONTROLLER_UID_LABEL: "u-1"}},
                   "template": {"metadata": {"labels": {JOB_CONTROLLER_UID_LABEL: "u-1"}},
                                "spec": {"restartPolicy": "Never",
                                         "containers": [{"name": "c", "image": image}]}}})
        };
        let old = defaulted(Kind::Job, "batch/v1", spec(3, "a"));
        let same = defaulted(Kind::Job, "batch/v1", spec(3, "a"));
        assert!(validate_update(Kind::Job, &old, &same).is_empty());
        let changed = defaulted(Kind::Job, "batch/v1", spec(4, "b"));
        let problems = validate_update(Kind::Job, &old, &changed);
        assert_eq!(
            fields(problems.clone()),
            ["spec.completions", "spec.template"]
        );
        assert_eq!(problems[0].1, "Invalid value: 4: field is immutable");
        assert!(
            problems[1].1.ends_with(": field is immutable"),
            "{problems:?}"
        );
        // What may change: parallelism, suspend, deadlines.
        let mut scaled = spec(3, "a");
        scaled["parallelism"] = json!(3);
        scaled["suspend"] = json!(true);
        scaled["activeDeadlineSeconds"] = json!(60);
        let scaled = defaulted(Kind::Job, "batch/v1", scaled);
        assert!(validate_update(Kind::Job, &old, &scaled).is_empty());
        // An Indexed Job kept at completions = parallelism is elastic.
        let indexed = |n: i64| {
            let mut s = spec(n, "a");
            s["completionMode"] = json!("Indexed");
            s["parallelism"] = json!(n);
            defaulted(Kind::Job, "batch/v1", s)
        };
        assert!(validate_update(Kind::Job, &indexed(3), &indexed(5)).is_empty());
    }

    #[test]
    fn a_suspended_job_that_never_started_may_change_where_its_pods_go() {
        let spec = |node: &str, image: &str| {
            json!({"suspend": true,
                   "selector": {"matchLabels": {"a": "b"}},
                   "template": {"metadata": {"labels": {"a": "b"}},
                                "spec": {"restartPolicy": "Never", "nodeSelector": {"zone": node},
                                         "containers": [{"name": "c", "image": image}]}}})
        };
        let old = defaulted(Kind::Job, "batch/v1", spec("east", "i"));
        let moved = defaulted(Kind::Job, "batch/v1", spec("west", "i"));
        assert!(validate_update(Kind::Job, &old, &moved).is_empty());
        let reimaged = defaulted(Kind::Job, "batch/v1", spec("east", "j"));
        assert_eq!(
            fields(validate_update(Kind::Job, &old, &reimaged)),
            ["spec.template"]
        );
        // Once started, not even that.
        let mut started = old.clone();
        let mut map = content(&started);
        map.insert(
            "status".into(),
            json!({"startTime": "2026-12-01T00:00:00Z"}),
        );
        set_content(&mut started, &map);
        assert_eq!(
            fields(validate_update(Kind::Job, &started, &moved)),
            ["spec.template"]
        );
    }

    #[test]
    fn a_statefulset_may_change_only_its_replicas_template_and_strategy() {
        let spec = |replicas: i64, image: &str, service: &str, storage: &str| {
            json!({"replicas": replicas, "serviceName": service,
                   "selector": {"matchLabels": {"app": "db"}},
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                   "template": {"metadata": {"labels": {"app": "db"}},
                                "spec": {"containers": [{"name": "c", "image": image}]}},
                   "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": storage}}}}]})
        };
        let set = |s: Value| defaulted(Kind::StatefulSet, "apps/v1", s);
        let old = set(spec(2, "a", "db", "1Gi"));
        assert!(
            validate_update(Kind::StatefulSet, &old, &set(spec(5, "b", "db", "1Gi"))).is_empty()
        );
        for changed in [spec(2, "a", "other", "1Gi"), spec(2, "a", "db", "2Gi")] {
            let problems = validate_update(Kind::StatefulSet, &old, &set(changed));
            assert_eq!(fields(problems.clone()), ["spec"]);
            assert!(problems[0]
                .1
                .starts_with("Forbidden: updates to statefulset spec"));
        }
    }

    #[test]
    fn a_daemonsets_selector_is_immutable() {
        let spec = |app: &str| {
            json!({"selector": {"matchLabels": {"app": app}},
                   "template": {"metadata": {"labels": {"app": "a", "tier": "b"}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}}})
        };
        let old = defaulted(Kind::DaemonSet, "apps/v1", spec("a"));
        let problems = validate_update(
            Kind::DaemonSet,
            &old,
            &defaulted(Kind::DaemonSet, "apps/v1", spec("b")),
        );
        assert_eq!(
            problems,
            [(
                "spec.selector".to_owned(),
                r#"Invalid value: {"matchLabels":{"app":"b"}}: field is immutable"#.to_owned()
            )]
        );
    }
    /// A Secret or ConfigMap of `fields` (besides metadata), read and
    /// defaulted as a write is.
    fn config_object(kind: Kind, fields: Value) -> GenericObject {
        let mut value = json!({"apiVersion": "v1", "kind": kind.name(), "metadata": {"name": "s"}});
        value
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (mut object, unknown) = read(kind, value);
        assert!(unknown.is_empty(), "{unknown:?}");
        apply_defaults(kind, &mut object);
        object
    }

    #[test]
    fn a_secrets_string_data_lands_in_data_and_its_keys_and_size_are_checked() {
        let secret = config_object(
            Kind::Secret,
            json!({"data": {"a": "aGk=", "b": "b2xk"}, "stringData": {"b": "new", "c": "x"}}),
        );
        assert_eq!(
            Value::Object(content(&secret)),
            json!({"type": "Opaque", "data": {"a": "aGk=", "b": "bmV3", "c": "eA=="}})
        );
        assert!(validate(Kind::Secret, &secret).is_empty());
        let typed = config_object(Kind::Secret, json!({"type": "kubernetes.io/tls"}));
        assert_eq!(content(&typed)["type"], "kubernetes.io/tls");

        // What the schema check does not see (a protobuf Secret of an older
        // client, made a document: `legacy_bodies`' tests) is checked here.
        let mut bad = config_object(Kind::Secret, json!({}));
        set_content(
            &mut bad,
            json!({"data": {"k": "not base64!"}}).as_object().unwrap(),
        );
        assert_eq!(
            validate(Kind::Secret, &bad),
            [(
                "data[k]".to_owned(),
                "Invalid value: illegal base64 data".to_owned()
            )]
        );
        let mut not_text = config_object(Kind::Secret, json!({}));
        set_content(
            &mut not_text,
            json!({"data": {"k": 1}}).as_object().unwrap(),
        );
        let problems = validate(Kind::Secret, &not_text);
        assert_eq!(problems[0].0, "data[k]", "{problems:?}");
        let bad_keys = config_object(Kind::Secret, json!({"data": {"a/b": "", "..": ""}}));
        let paths: Vec<String> = validate(Kind::Secret, &bad_keys)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(paths, ["data[..]", "data[a/b]"]);
        // 1 MiB of values at most, counted decoded.
        use base64::Engine;
        let encode = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0u8; n]);
        let at_most = config_object(Kind::Secret, json!({"data": {"k": encode(1 << 20)}}));
        assert!(validate(Kind::Secret, &at_most).is_empty());
        let over = config_object(
            Kind::Secret,
            json!({"data": {"k": encode(1 << 20)}, "stringData": {"l": "x"}}),
        );
        let problems = validate(Kind::Secret, &over);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.starts_with("Too long"), "{problems:?}");
    }

    #[test]
    fn an_immutable_secrets_or_config_maps_values_and_any_secrets_type_never_change() {
        let secret = |fields: Value| config_object(Kind::Secret, fields);
        let paths = |problems: Vec<(String, String)>| -> Vec<String> {
            problems.into_iter().map(|(path, _)| path).collect()
        };
        // Mutable: values change; the type never does.
        let old = secret(json!({"data": {"a": "YQ=="}}));
        assert!(
            validate_update(Kind::Secret, &old, &secret(json!({"data": {"a": "Yg=="}}))).is_empty()
        );
        let retyped = secret(json!({"type": "kubernetes.io/tls", "data": {"a": "YQ=="}}));
        let problems = validate_update(Kind::Secret, &old, &retyped);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "type");
        assert!(
            problems[0].1.ends_with("field is immutable"),
            "{problems:?}"
        );
        // Immutable: neither values nor `immutable` change; labels may.
        let frozen = secret(json!({"data": {"a": "YQ=="}, "immutable": true}));
        let same = secret(json!({"data": {"a": "YQ=="}, "immutable": true}));
        assert!(validate_update(Kind::Secret, &frozen, &same).is_empty());
        let changed = secret(json!({"data": {"a": "Yg=="}, "immutable": true}));
        assert_eq!(
            paths(validate_update(Kind::Secret, &frozen, &changed)),
            ["data"]
        );
        let thawed = secret(json!({"data": {"a": "YQ=="}}));
        assert_eq!(
            paths(validate_update(Kind::Secret, &frozen, &thawed)),
            ["immutable"]
        );
        let map = |fields: Value| config_object(Kind::ConfigMap, fields);
        let frozen = map(json!({"data": {"a": "1"}, "immutable": true}));
        let changed =
            map(json!({"data": {"a": "2"}, "binaryData": {"b": "YQ=="}, "immutable": true}));
        let problems = validate_update(Kind::ConfigMap, &frozen, &changed);
        assert_eq!(paths(problems.clone()), ["data", "binaryData"]);
        assert!(problems[0]
            .1
            .contains("field is immutable when `immutable` is set"));
        let mutable = map(json!({"data": {"a": "1"}}));
        assert!(
            validate_update(Kind::ConfigMap, &mutable, &map(json!({"data": {"a": "2"}})))
                .is_empty()
        );
    }

    #[test]
    fn updates_are_compared_as_kubernetes_compares_go_values() {
        let spec = |extra: Value| {
            let mut spec = json!({"replicas": 1, "serviceName": "db",
                   "selector": {"matchLabels": {"app": "db"}},
                   "template": {"metadata": {"labels": {"app": "db"}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}},
                   "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}}}]});
            if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
                spec.extend(extra.clone());
            }
            defaulted(Kind::StatefulSet, "apps/v1", spec)
        };
        let old = spec(json!({}));
        // What a Go client's typed update sends: empty structs and lists.
        let go = spec(json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": "db"}, "matchExpressions": []},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "status": {},
              "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "",
                       "resources": {"requests": {"storage": "1Gi"}}}}]
        }));
        assert!(validate_update(Kind::StatefulSet, &old, &go).is_empty());
    }

    #[test]
    fn an_indexed_jobs_completions_change_only_with_its_parallelism() {
        let indexed = |completions: i64, parallelism: i64| {
            defaulted(
                Kind::Job,
                "batch/v1",
                json!({"completionMode": "Indexed", "completions": completions,
                       "parallelism": parallelism, "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}},
                                    "spec": {"restartPolicy": "Never",
                                             "containers": [{"name": "c", "image": "i"}]}}}),
            )
        };
        let problems = validate_update(Kind::Job, &indexed(3, 3), &indexed(5, 3));
        assert_eq!(
            problems,
            [(
                "spec.completions".to_owned(),
                "Invalid value: 5: can only be modified in tandem with spec.parallelism".to_owned()
            )]
        );
    }

    #[test]
    fn a_suspended_jobs_pod_affinity_stays_fixed() {
        let spec = |affinity: Value| {
            json!({"suspend": true, "selector": {"matchLabels": {"a": "b"}},
                   "template": {"metadata": {"labels": {"a": "b"}},
                                "spec": {"restartPolicy": "Never", "affinity": affinity,
                                         "containers": [{"name": "c", "image": "i"}]}}})
        };
        let node = |zone: &str| {
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": [zone]}]}]}}})
        };
        let old = defaulted(Kind::Job, "batch/v1", spec(node("a")));
        let moved = defaulted(Kind::Job, "batch/v1", spec(node("b")));
        assert!(validate_update(Kind::Job, &old, &moved).is_empty());
        let mut spread = node("a");
        spread["podAntiAffinity"] = json!({"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "zone"}}]});
        let spread = defaulted(Kind::Job, "batch/v1", spec(spread));
        assert_eq!(
            fields(validate_update(Kind::Job, &old, &spread)),
            ["spec.template"]
        );
    }

    #[test]
    fn selector_expressions_kubernetes_refuses_are_named_not_matched() {
        let set = |expression: Value| {
            defaulted(
                Kind::DaemonSet,
                "apps/v1",
                json!({"selector": {"matchExpressions": [expression]},
                       "template": {"metadata": {"labels": {"app": "a"}},
                                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}),
            )
        };
        let problems = |expression: Value| validate(Kind::DaemonSet, &set(expression));
        let empty_in = problems(json!({"key": "app", "operator": "In", "values": []}));
        assert_eq!(
            fields(empty_in),
            ["spec.selector.matchExpressions[0].values"]
        );
        let valued_exists = problems(json!({"key": "app", "operator": "Exists", "values": ["a"]}));
        assert_eq!(
            fields(valued_exists),
            ["spec.selector.matchExpressions[0].values"]
        );
        let unknown = problems(json!({"key": "app", "operator": "Near", "values": ["a"]}));
        assert_eq!(
            unknown,
            [(
                "spec.selector.matchExpressions[0].operator".to_owned(),
                r#"Invalid value: "Near": not a valid selector operator"#.to_owned()
            )]
        );
    }

    #[test]
    fn a_replace_from_a_manifest_keeps_a_jobs_generated_selector_and_labels() {
        let manifest = json!({"template": {"metadata": {"labels": {"app": "batch"}},
                              "spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "i"}]}}});
        let mut stored = defaulted(Kind::Job, "batch/v1", manifest.clone());
        generate_job_selector(&mut stored, "u-1");
        let mut sent = defaulted(Kind::Job, "batch/v1", manifest.clone());
        keep_generated(Kind::Job, &stored, &mut sent);
        assert!(
            validate(Kind::Job, &sent).is_empty(),
            "{:?}",
            validate(Kind::Job, &sent)
        );
        assert!(validate_update(Kind::Job, &stored, &sent).is_empty());
        let spec = &content(&sent)["spec"];
        assert_eq!(spec["selector"], content(&stored)["spec"]["selector"]);
        assert_eq!(spec["template"]["metadata"]["labels"]["app"], "batch");
        // A manifest with a selector of its own keeps it.
        let mut own = manifest;
        own["manualSelector"] = json!(true);
        own["selector"] = json!({"matchLabels": {"app": "batch"}});
        let mut sent = defaulted(Kind::Job, "batch/v1", own.clone());
        keep_generated(Kind::Job, &stored, &mut sent);
        assert_eq!(content(&sent)["spec"]["selector"], own["selector"]);
    }
    #[test]
    fn quantities_are_compared_by_value_as_a_go_client_sends_them_back() {
        let job = |cpu: Value, memory: &str, size: &str| {
            defaulted(
                Kind::Job,
                "batch/v1",
                json!({"selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}},
                                    "spec": {"restartPolicy": "Never",
                                             "volumes": [{"name": "scratch",
                                                          "emptyDir": {"sizeLimit": size}}],
                                             "containers": [{"name": "c", "image": "i",
                                               "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}}),
            )
        };
        let written = job(json!(1), "1024Mi", "0.5Gi");
        let canonical = job(json!("1"), "1Gi", "512Mi");
        assert!(validate_update(Kind::Job, &written, &canonical).is_empty());
        let milli = job(json!("1000m"), "1Gi", "512Mi");
        assert!(validate_update(Kind::Job, &written, &milli).is_empty());
        let more = job(json!("2"), "1Gi", "512Mi");
        assert_eq!(
            fields(validate_update(Kind::Job, &written, &more)),
            ["spec.template"]
        );
    }

    #[test]
    fn a_replace_from_a_manifest_keeps_a_jobs_defaulted_completions() {
        let template = json!({"metadata": {"labels": {"app": "batch"}},
                              "spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "i"}]}});
        let mut stored = defaulted(Kind::Job, "batch/v1", json!({"template": template.clone()}));
        generate_job_selector(&mut stored, "u-1");
        assert_eq!(content(&stored)["spec"]["completions"], 1);
        let mut sent = defaulted(
            Kind::Job,
            "batch/v1",
            json!({"parallelism": 2, "template": template}),
        );
        keep_generated(Kind::Job, &stored, &mut sent);
        assert_eq!(content(&sent)["spec"]["completions"], 1);
        assert!(validate_update(Kind::Job, &stored, &sent).is_empty());
    }
}
