//! Validation of objects before they are stored: names, labels, quantities,
//! replica counts, selectors against templates, ports and enumerations.
//! Every problem is reported with its field path; nothing is stored when
//! any is found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{selector, Kind, ObjectExt};
use crate::Quantity;

// The name formats, kept where callers have always found them.
pub use crate::names::{
    check_dns_label, check_dns_subdomain, is_label_key, is_label_name, DnsNameError,
};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

/// Everything wrong with an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} is invalid: ", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.path, e.reason)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// Checks an object; `Err` lists every problem found.
pub fn validate(object: &Object) -> Result<(), ValidationError> {
    validate_with(object, None)
}

/// [`validate`] of a document whose fields (all but apiVersion, kind and
/// metadata) the caller has parsed already: `content` must be what its
/// content's bytes hold.
pub fn validate_parsed(
    object: &Object,
    content: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ValidationError> {
    validate_with(object, Some(content))
}

fn validate_with(
    object: &Object,
    parsed: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    let meta = object.meta();
    let kind = object.kind().ok();
    match kind {
        Some(Kind::Namespace) => dns_label(&mut errors, "metadata.name", &meta.name),
        Some(Kind::Service) => dns_1035_label(&mut errors, "metadata.name", &meta.name),
        // RBAC's names are path segments (`system:aggregate-to-admin`), as
        // kube-apiserver's ValidateRBACName has them.
        Some(Kind::Role | Kind::ClusterRole | Kind::RoleBinding | Kind::ClusterRoleBinding) => {
            path_segment_name(&mut errors, "metadata.name", &meta.name)
        }
        _ => dns_subdomain(&mut errors, "metadata.name", &meta.name),
    }
    if kind.is_some_and(Kind::namespaced) {
        dns_label(&mut errors, "metadata.namespace", &meta.namespace);
    }
    labels(&mut errors, "metadata.labels", &meta.labels);
    for key in meta.annotations.keys() {
        label_key(&mut errors, key, || format!("metadata.annotations[{key}]"));
    }
    match &object.kind {
        Some(Body::Pod(p)) => pod_spec(&mut errors, "spec", p.spec.as_ref(), false),
        Some(Body::Node(n)) => {
            for (i, t) in n.spec.clone().unwrap_or_default().taints.iter().enumerate() {
                let path = format!("spec.taints.{i}");
                label_key(&mut errors, &t.key, || format!("{path}.key"));
                one_of(
                    &mut errors,
                    &format!("{path}.effect"),
                    &t.effect,
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                );
            }
            let status = n.status.clone().unwrap_or_default();
            quantities(&mut errors, "status.capacity", &status.capacity);
            quantities(&mut errors, "status.allocatable", &status.allocatable);
        }
        // What decodes a Secret makes it a document (`legacy_bodies`)
        // before anything validates it.
        Some(
            Body::Secret(_)
            | Body::Namespace(_)
            | Body::Endpoints(_)
            | Body::Service(_)
            | Body::Deployment(_)
            | Body::ReplicaSet(_),
        ) => errors.add(
            "",
            "a Secret, Namespace, Endpoints, Service, Deployment or ReplicaSet must be read as its document first",
        ),
        Some(Body::Generic(g)) => match kind {
            Some(kind) => {
                // The content is parsed once, for every check.
                let read;
                let content = match parsed {
                    Some(content) => content,
                    None => {
                        read = match serde_json::from_slice(&g.content) {
                            Ok(serde_json::Value::Object(map)) => map,
                            _ => {
                                errors.add("", "the object's fields are not a JSON object");
                                serde_json::Map::new()
                            }
                        };
                        &read
                    }
                };
                for (path, reason) in super::generic::validate_content(kind, g, content) {
                    errors.add(path, reason);
                }
                if kind == Kind::Pod {
                    pod_document(&mut errors, content.get("spec"));
                }
                if matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
                    replicated(&mut errors, kind, content.get("spec"));
                }
                if kind == Kind::Service {
                    // Read as Kubernetes' own type (the schema checked
                    // its fields' shapes).
                    match crate::typed::decode::<crate::services::Service>(
                        serde_json::Value::Object(content.clone()),
                    ) {
                        Ok(read) => service(&mut errors, read.spec.as_ref()),
                        Err(e) => errors.add("", format!("does not read as a Service: {e}")),
                    }
                }
            }
            None => errors.add("kind", format!("{:?} is not a kind skiff serves", g.kind)),
        },
        None => {}
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            kind: kind.map(|k| k.name().to_owned()).unwrap_or_default(),
            name: meta.name.clone(),
            errors: errors.0,
        })
    }
}

/// Whether [`validate_update`] has anything to check for `kind` (the
/// writer skips reading the stored object again when not).
pub fn has_update_rules(kind: Kind) -> bool {
    super::generic::has_update_rules(kind)
}

/// Checks an update from the stored `old` to `new` (both with defaults
/// applied) for what Kubernetes does not let an update change: an
/// apps/v1 Deployment's, ReplicaSet's or DaemonSet's selector, a Job's
/// template, selector and completions, a StatefulSet's spec beyond what
/// it may change (`generic::validate_update`). `Err` lists each field.
pub fn validate_update(old: &Object, new: &Object) -> Result<(), ValidationError> {
    let mut errors = Errors::default();
    let kind = new.kind().ok();
    if let (Some(Body::Generic(old)), Some(Body::Generic(new)), Some(kind)) =
        (&old.kind, &new.kind, kind)
    {
        for (path, reason) in super::generic::validate_update(kind, old, new) {
            errors.add(path, reason);
        }
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            kind: kind.map(|k| k.name().to_owned()).unwrap_or_default(),
            name: new.meta().name.clone(),
            errors: errors.0,
        })
    }
}

fn dns_label(errors: &mut Errors, path: &str, value: &str) {
    if let Err(reason) = check_dns_label(value) {
        errors.add(path, reason.to_string());
    }
}

fn dns_1035_label(errors: &mut Errors, path: &str, value: &str) {
    match check_dns_label(value) {
        Err(reason) => errors.add(path, reason.to_string()),
        Ok(()) if !value.starts_with(|c: char| c.is_ascii_lowercase()) => errors.add(
            path,
            format!("{value:?} must start with a lowercase letter"),
        ),
        Ok(()) => {}
    }
}

/// A name that is one URL path segment (kube-apiserver's
/// `IsValidPathSegmentName`), in its words.
fn path_segment_name(errors: &mut Errors, path: &str, value: &str) {
    let problem = match value {
        "" => Some("Required value".to_owned()),
        "." | ".." => Some(format!("{value:?}: may not be '{value}'")),
        _ => ["/", "%"]
            .iter()
            .find(|c| value.contains(**c))
            .map(|c| format!("{value:?}: may not contain '{c}'")),
    };
    if let Some(problem) = problem {
        errors.add(path, problem);
    }
}

fn dns_subdomain(errors: &mut Errors, path: &str, value: &str) {
    if let Err(e) = check_dns_subdomain(value) {
        errors.add(path, e.to_string());
    }
}

/// Checks a label key; its field path is made only for an error, since
/// nearly every key is valid.
fn label_key(errors: &mut Errors, key: &str, path: impl FnOnce() -> String) {
    if !is_label_key(key) {
        errors.add(
            path(),
            format!("{key:?} is not a valid key: an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'"),
        );
    }
}

fn labels(errors: &mut Errors, path: &str, map: &BTreeMap<String, String>) {
    for (k, v) in map {
        label_key(errors, k, || format!("{path}[{k}]"));
        if !v.is_empty() && !is_label_name(v) {
            errors.add(
                format!("{path}[{k}]"),
                format!("{v:?} is not a valid label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            );
        }
    }
}

fn replicas(errors: &mut Errors, path: &str, value: Option<i32>) {
    if let Some(n) = value {
        if n < 0 {
            errors.add(path, format!("must be >= 0, got {n}"));
        }
    }
}

fn one_of(errors: &mut Errors, path: &str, value: &str, allowed: &[&str]) {
    if !value.is_empty() && !allowed.contains(&value) {
        errors.add(
            path,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        );
    }
}

fn port_number(errors: &mut Errors, path: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        errors.add(path, format!("{port} is not a port number (1-65535)"));
    }
}

/// An int-or-string that must be a count or a percentage; returns the
/// count, or the percentage, when valid.
fn int_or_percent(errors: &mut Errors, path: &str, value: &str) -> Option<i64> {
    if value.is_empty() {
        return None;
    }
    let number = value.strip_suffix('%').unwrap_or(value);
    match number.parse::<i64>() {
        Ok(n) if n >= 0 => Some(n),
        _ => {
            errors.add(
                path,
                format!("{value:?} is not a non-negative count or percentage like 1 or 25%"),
            );
            None
        }
    }
}

fn quantities(
    errors: &mut Errors,
    path: &str,
    map: &BTreeMap<String, String>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    for (name, value) in map {
        match Quantity::parse(value) {
            Ok(q) if q < Quantity::default() => errors.add(
                format!("{path}.{name}"),
                format!("{value:?} must not be negative"),
            ),
            Ok(q) => {
                out.insert(name.clone(), q);
            }
            Err(e) => errors.add(format!("{path}.{name}"), e.to_string()),
        }
    }
    out
}

fn selector_and_template(
    errors: &mut Errors,
    selector: Option<&v1::LabelSelector>,
    template: Option<&v1::PodTemplateSpec>,
) {
    let selector = selector.cloned().unwrap_or_default();
    if selector::is_empty(&selector) {
        errors.add("spec.selector", "is required and must not be empty");
    }
    for (i, e) in selector.match_expressions.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions.{i}");
        label_key(errors, &e.key, || format!("{path}.key"));
        match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => errors.add(
                format!("{path}.values"),
                "must not be empty for In and NotIn",
            ),
            "Exists" | "DoesNotExist" if !e.values.is_empty() => errors.add(
                format!("{path}.values"),
                "must be empty for Exists and DoesNotExist",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.add(
                format!("{path}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
    let Some(template) = template else {
        errors.add("spec.template", "is required");
        return;
    };
    let template_labels = template
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    labels(errors, "spec.template.metadata.labels", &template_labels);
    if !selector::is_empty(&selector) && !selector::matches(&selector, &template_labels) {
        errors.add(
            "spec.selector",
            format!(
                "does not match the template's labels {template_labels:?}; the selector must select the pods this object creates"
            ),
        );
    }
    pod_spec(errors, "spec.template.spec", template.spec.as_ref(), true);
}

/// A Deployment's or ReplicaSet's `spec` (a document's), read as its
/// protobuf model, which holds every field skiff checks (what it lacks,
/// the schema has checked the shape of).
fn replicated(errors: &mut Errors, kind: Kind, spec: Option<&serde_json::Value>) {
    let mut spec = spec.cloned().unwrap_or(serde_json::Value::Null);
    super::generic::strip_nulls(&mut spec);
    if spec.is_null() {
        spec = serde_json::json!({});
    }
    if kind == Kind::Deployment {
        match serde_json::from_value::<v1::DeploymentSpec>(spec) {
            Ok(spec) => deployment_spec(errors, spec),
            Err(e) => errors.add("spec", format!("does not read as a Deployment spec: {e}")),
        }
    } else {
        match serde_json::from_value::<v1::ReplicaSetSpec>(spec) {
            Ok(spec) => {
                replicas(errors, "spec.replicas", spec.replicas);
                selector_and_template(errors, spec.selector.as_ref(), spec.template.as_deref());
            }
            Err(e) => errors.add("spec", format!("does not read as a ReplicaSet spec: {e}")),
        }
    }
}

fn deployment_spec(errors: &mut Errors, spec: v1::DeploymentSpec) {
    replicas(errors, "spec.replicas", spec.replicas);
    selector_and_template(errors, spec.selector.as_ref(), spec.template.as_deref());
    if let Some(limit) = spec.revision_history_limit {
        if limit < 0 {
            errors.add(
                "spec.revisionHistoryLimit",
                format!("must be >= 0, got {limit}"),
            );
        }
    }
    let strategy = spec.strategy.unwrap_or_default();
    match strategy.r#type.as_str() {
        "RollingUpdate" | "" => {
            let rolling = strategy.rolling_update.unwrap_or_default();
            let surge = int_or_percent(
                errors,
                "spec.strategy.rollingUpdate.maxSurge",
                &rolling.max_surge,
            );
            let unavailable = int_or_percent(
                errors,
                "spec.strategy.rollingUpdate.maxUnavailable",
                &rolling.max_unavailable,
            );
            if surge == Some(0) && unavailable == Some(0) {
                errors.add(
                    "spec.strategy.rollingUpdate",
                    "maxSurge and maxUnavailable may not both be 0",
                );
            }
        }
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errors.add(
                    "spec.strategy.rollingUpdate",
                    "may not be set when spec.strategy.type is Recreate",
                );
            }
        }
        other => errors.add(
            "spec.strategy.type",
            format!("{other:?} is not RollingUpdate or Recreate"),
        ),
    }
}

/// A pod document's spec (`spec`), checked as the protobuf model's is:
/// read as that model, which holds every field skiff acts on. A field the
/// model lacks is checked by the schema only (its shape), not by
/// Kubernetes' further rules.
fn pod_document(errors: &mut Errors, spec: Option<&serde_json::Value>) {
    let Some(mut spec) = spec.filter(|s| !s.is_null()).cloned() else {
        pod_spec(errors, "spec", None, false);
        return;
    };
    super::generic::strip_nulls(&mut spec);
    match serde_json::from_value::<v1::PodSpec>(spec) {
        Ok(spec) => pod_spec(errors, "spec", Some(&spec), false),
        Err(e) => errors.add("spec", format!("does not read as a pod spec: {e}")),
    }
}

fn pod_spec(errors: &mut Errors, path: &str, spec: Option<&v1::PodSpec>, in_template: bool) {
    let Some(spec) = spec else {
        errors.add(path, "is required");
        return;
    };
    if spec.containers.is_empty() {
        errors.add(
            format!("{path}.containers"),
            "at least one container is required",
        );
    }
    one_of(
        errors,
        &format!("{path}.restartPolicy"),
        &spec.restart_policy,
        &["Always", "OnFailure", "Never"],
    );
    if in_template && !spec.restart_policy.is_empty() && spec.restart_policy != "Always" {
        errors.add(
            format!("{path}.restartPolicy"),
            format!(
                "{:?}: only Always is allowed for pods a controller keeps running",
                spec.restart_policy
            ),
        );
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errors.add(
                format!("{path}.terminationGracePeriodSeconds"),
                "must be >= 0",
            );
        }
    }
    labels(errors, &format!("{path}.nodeSelector"), &spec.node_selector);
    if spec.share_process_namespace == Some(true) && spec.host_pid {
        errors.add(
            format!("{path}.shareProcessNamespace"),
            "Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled",
        );
    }
    let container_names: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .map(|c| c.name.as_str())
        .collect();
    let volume_names = volumes(errors, path, spec, &container_names);
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (group, list) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let cpath = format!("{path}.{group}.{i}");
            dns_label(errors, &format!("{cpath}.name"), &c.name);
            if !c.name.is_empty() && !names.insert(c.name.clone()) {
                errors.add(
                    format!("{cpath}.name"),
                    format!("{:?} is used twice", c.name),
                );
            }
            if c.image.trim().is_empty() {
                errors.add(format!("{cpath}.image"), "is required");
            }
            one_of(
                errors,
                &format!("{cpath}.imagePullPolicy"),
                &c.image_pull_policy,
                &["Always", "IfNotPresent", "Never"],
            );
            for (j, p) in c.ports.iter().enumerate() {
                let ppath = format!("{cpath}.ports.{j}");
                port_number(errors, &format!("{ppath}.containerPort"), p.container_port);
                if p.host_port != 0 {
                    port_number(errors, &format!("{ppath}.hostPort"), p.host_port);
                    if !host_ports.insert((p.host_port, p.protocol.clone())) {
                        errors.add(
                            format!("{ppath}.hostPort"),
                            format!("{} is used twice", p.host_port),
                        );
                    }
                }
                one_of(
                    errors,
                    &format!("{ppath}.protocol"),
                    &p.protocol,
                    &["TCP", "UDP", "SCTP"],
                );
            }
            for (j, e) in c.env.iter().enumerate() {
                env_var(errors, &format!("{cpath}.env.{j}"), e, &container_names);
            }
            for (j, e) in c.env_from.iter().enumerate() {
                env_from(errors, &format!("{cpath}.envFrom.{j}"), e);
            }
            volume_mounts(errors, &cpath, c, &volume_names);
            if let Some(r) = &c.resources {
                let limits = quantities(errors, &format!("{cpath}.resources.limits"), &r.limits);
                let requests =
                    quantities(errors, &format!("{cpath}.resources.requests"), &r.requests);
                for (name, request) in &requests {
                    if let Some(limit) = limits.get(name) {
                        if request > limit {
                            errors.add(
                                format!("{cpath}.resources.requests.{name}"),
                                format!("must be less than or equal to the limit {limit}"),
                            );
                        }
                    }
                }
            }
            let init = group == "initContainers";
            let sidecar = init && c.restart_policy == "Always";
            container_restart_policy(errors, &cpath, &c.restart_policy, init);
            for (probe_name, probe) in [
                ("livenessProbe", &c.liveness_probe),
                ("readinessProbe", &c.readiness_probe),
                ("startupProbe", &c.startup_probe),
            ] {
                if let Some(p) = probe {
                    if init && !sidecar {
                        errors.add(
                            format!("{cpath}.{probe_name}"),
                            "may not be set for init containers without restartPolicy: Always",
                        );
                    }
                    let handlers = usize::from(p.exec.is_some())
                        + usize::from(p.http_get.is_some())
                        + usize::from(p.tcp_socket.is_some());
                    if handlers != 1 {
                        errors.add(
                            format!("{cpath}.{probe_name}"),
                            "must have exactly one of exec, httpGet or tcpSocket",
                        );
                    }
                    let ppath = format!("{cpath}.{probe_name}");
                    if let Some(http) = &p.http_get {
                        action_port(errors, &format!("{ppath}.httpGet.port"), &http.port);
                    }
                    if let Some(tcp) = &p.tcp_socket {
                        action_port(errors, &format!("{ppath}.tcpSocket.port"), &tcp.port);
                    }
                    // Liveness and startup verdicts restart the container
                    // on one failure streak; one success is all they count.
                    if probe_name != "readinessProbe" && p.success_threshold > 1 {
                        errors.add(
                            format!("{cpath}.{probe_name}.successThreshold"),
                            "must be 1",
                        );
                    }
                }
            }
            if let Some(lifecycle) = &c.lifecycle {
                if init && !sidecar {
                    errors.add(
                        format!("{cpath}.lifecycle"),
                        "may not be set for init containers without restartPolicy: Always",
                    );
                }
                let grace = spec.termination_grace_period_seconds;
                for (hook_name, hook) in [
                    ("postStart", &lifecycle.post_start),
                    ("preStop", &lifecycle.pre_stop),
                ] {
                    if let Some(hook) = hook {
                        let hpath = format!("{cpath}.lifecycle.{hook_name}");
                        lifecycle_handler(errors, &hpath, hook, grace);
                    }
                }
            }
            if spec.host_network {
                for (j, p) in c.ports.iter().enumerate() {
                    if p.host_port != 0 && p.host_port != p.container_port {
                        errors.add(
                            format!("{cpath}.ports.{j}.hostPort"),
                            format!(
                                "must match containerPort {} when hostNetwork is true",
                                p.container_port
                            ),
                        );
                    }
                }
            }
            if let Some(sc) = &c.security_context {
                security_context(errors, &format!("{cpath}.securityContext"), sc);
            }
        }
    }
    if let Some(sc) = &spec.security_context {
        pod_security_context(errors, &format!("{path}.securityContext"), sc);
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        let tpath = format!("{path}.tolerations.{i}");
        one_of(
            errors,
            &format!("{tpath}.operator"),
            &t.operator,
            &["Exists", "Equal"],
        );
        one_of(
            errors,
            &format!("{tpath}.effect"),
            &t.effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
        if t.operator == "Exists" && !t.value.is_empty() {
            errors.add(
                format!("{tpath}.value"),
                "must be empty when operator is Exists",
            );
        }
    }
    pod_dns(errors, path, spec);
}

/// A port given as a number (1-65535) or by name (an IANA service name:
/// at most 15 lowercase letters, digits and dashes, a letter among them),
/// as Kubernetes' `ValidatePortNumOrName` checks it.
fn port_number_or_name(errors: &mut Errors, path: &str, port: &str) {
    if let Ok(n) = port.parse::<i32>() {
        port_number(errors, path, n);
        return;
    }
    let named_ok = port.len() <= 15
        && port.bytes().any(|b| b.is_ascii_lowercase())
        && check_dns_label(port).is_ok();
    if !named_ok {
        errors.add(
            path,
            format!("{port:?} is neither a port number nor a port name"),
        );
    }
}

/// The port of an httpGet or tcpSocket action: required, a number or a
/// name.
fn action_port(errors: &mut Errors, path: &str, port: &str) {
    if port.is_empty() {
        errors.add(path, "is required");
    } else {
        port_number_or_name(errors, path, port);
    }
}

/// A lifecycle hook: exactly one action, an exec with a command, an
/// httpGet with a port, a sleep no longer than the grace period.
fn lifecycle_handler(
    errors: &mut Errors,
    path: &str,
    hook: &v1::LifecycleHandler,
    grace: Option<i64>,
) {
    let actions = usize::from(hook.exec.is_some())
        + usize::from(hook.http_get.is_some())
        + usize::from(hook.tcp_socket.is_some())
        + usize::from(hook.sleep.is_some());
    if actions != 1 {
        errors.add(
            path,
            "must have exactly one of exec, httpGet, sleep or tcpSocket",
        );
    }
    if let Some(exec) = &hook.exec {
        if exec.command.is_empty() {
            errors.add(format!("{path}.exec.command"), "is required");
        }
    }
    if let Some(tcp) = &hook.tcp_socket {
        action_port(errors, &format!("{path}.tcpSocket.port"), &tcp.port);
    }
    if let Some(http) = &hook.http_get {
        action_port(errors, &format!("{path}.httpGet.port"), &http.port);
        if !http.scheme.is_empty() && http.scheme != "HTTP" && http.scheme != "HTTPS" {
            errors.add(
                format!("{path}.httpGet.scheme"),
                format!("{:?}: must be HTTP or HTTPS", http.scheme),
            );
        }
    }
    if let Some(sleep) = &hook.sleep {
        let grace = grace.unwrap_or(30);
        if sleep.seconds < 0 || sleep.seconds > grace {
            errors.add(
                format!("{path}.sleep.seconds"),
                format!(
                    "{}: must be non-negative and no more than terminationGracePeriodSeconds ({grace})",
                    sleep.seconds
                ),
            );
        }
    }
}

/// Most nameservers a pod's resolv.conf may list (glibc reads three).
const MAX_DNS_NAMESERVERS: usize = 3;
/// Most search domains, and most characters of them all, Kubernetes allows.
const MAX_DNS_SEARCHES: usize = 32;
const MAX_DNS_SEARCH_CHARS: usize = 2048;

/// `dnsPolicy`, `dnsConfig`, `hostname` and `subdomain`, as Kubernetes
/// checks them.
fn pod_dns(errors: &mut Errors, path: &str, spec: &v1::PodSpec) {
    one_of(
        errors,
        &format!("{path}.dnsPolicy"),
        &spec.dns_policy,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if !spec.hostname.is_empty() {
        dns_label(errors, &format!("{path}.hostname"), &spec.hostname);
    }
    if !spec.subdomain.is_empty() {
        dns_label(errors, &format!("{path}.subdomain"), &spec.subdomain);
    }
    let config_path = format!("{path}.dnsConfig");
    let Some(config) = &spec.dns_config else {
        if spec.dns_policy == "None" {
            errors.add(
                config_path,
                "is required when dnsPolicy is None: give at least one nameserver",
            );
        }
        return;
    };
    if spec.dns_policy == "None" && config.nameservers.is_empty() {
        errors.add(
            format!("{config_path}.nameservers"),
            "must list at least one nameserver when dnsPolicy is None",
        );
    }
    if config.nameservers.len() > MAX_DNS_NAMESERVERS {
        errors.add(
            format!("{config_path}.nameservers"),
            format!(
                "{} nameservers; at most {MAX_DNS_NAMESERVERS}",
                config.nameservers.len()
            ),
        );
    }
    for (i, server) in config.nameservers.iter().enumerate() {
        if server.parse::<std::net::IpAddr>().is_err() {
            errors.add(
                format!("{config_path}.nameservers.{i}"),
                format!("{server:?} is not an IP address"),
            );
        }
    }
    if config.searches.len() > MAX_DNS_SEARCHES {
        errors.add(
            format!("{config_path}.searches"),
            format!(
                "{} search domains; at most {MAX_DNS_SEARCHES}",
                config.searches.len()
            ),
        );
    }
    let chars: usize = config.searches.iter().map(String::len).sum::<usize>()
        + config.searches.len().saturating_sub(1);
    if chars > MAX_DNS_SEARCH_CHARS {
        errors.add(
            format!("{config_path}.searches"),
            format!("{chars} characters in all; at most {MAX_DNS_SEARCH_CHARS}"),
        );
    }
    for (i, search) in config.searches.iter().enumerate() {
        // A trailing dot (fully qualified) is allowed, as in Kubernetes.
        let name = search.strip_suffix('.').unwrap_or(search);
        dns_subdomain(errors, &format!("{config_path}.searches.{i}"), name);
    }
    for (i, option) in config.options.iter().enumerate() {
        if option.name.is_empty() {
            errors.add(format!("{config_path}.options.{i}.name"), "is required");
        }
    }
}

/// A container's own `restartPolicy`: only an init container may have
/// one, and only `Always` (which makes it a sidecar).
fn container_restart_policy(errors: &mut Errors, cpath: &str, policy: &str, init: bool) {
    let path = format!("{cpath}.restartPolicy");
    match (init, policy) {
        (_, "") | (true, "Always") => {}
        (true, other) => errors.add(
            path,
            format!("{other:?}: only Always (a sidecar) is allowed, or leave it unset"),
        ),
        (false, _) => errors.add(path, "may only be set on init containers"),
    }
}

/// A user or group ID, as Kubernetes allows them.
fn id_range(errors: &mut Errors, path: &str, id: Option<i64>) {
    if let Some(id) = id {
        if !(0..=i64::from(i32::MAX)).contains(&id) {
            errors.add(
                path,
                format!("{id} must be between 0 and 2147483647, inclusive"),
            );
        }
    }
}

fn seccomp_profile(errors: &mut Errors, path: &str, p: &v1::SeccompProfile) {
    let tpath = format!("{path}.type");
    if p.r#type.is_empty() {
        errors.add(tpath, "is required");
    } else {
        let types = ["RuntimeDefault", "Unconfined", "Localhost"];
        one_of(errors, &tpath, &p.r#type, &types);
    }
    let lpath = format!("{path}.localhostProfile");
    match (p.r#type.as_str(), p.localhost_profile.as_str()) {
        ("Localhost", "") => errors.add(lpath, "is required when type is Localhost"),
        ("Localhost", profile) if profile.starts_with('/') || has_backstep(profile) => errors.add(
            lpath,
            format!("{profile:?} must be a relative path without '..'"),
        ),
        ("Localhost", _) | (_, "") => {}
        _ => errors.add(lpath, "may only be set when type is Localhost"),
    }
}

/// A container's securityContext: IDs in range, and no privilege
/// escalation forbidden where the container is privileged or may
/// administer the system anyway.
fn security_context(errors: &mut Errors, path: &str, sc: &v1::SecurityContext) {
    id_range(errors, &format!("{path}.runAsUser"), sc.run_as_user);
    id_range(errors, &format!("{path}.runAsGroup"), sc.run_as_group);
    if let Some(p) = &sc.seccomp_profile {
        seccomp_profile(errors, &format!("{path}.seccompProfile"), p);
    }
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errors.add(
                format!("{path}.allowPrivilegeEscalation"),
                "cannot set allowPrivilegeEscalation to false and privileged to true",
            );
        }
        let mut adds = sc.capabilities.iter().flat_map(|c| &c.add);
        if adds.any(|c| {
            let c = c.to_ascii_uppercase();
            c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"
        }) {
            errors.add(
                format!("{path}.allowPrivilegeEscalation"),
                "cannot set allowPrivilegeEscalation to false and capabilities.add CAP_SYS_ADMIN",
            );
        }
    }
}

fn pod_security_context(errors: &mut Errors, path: &str, sc: &v1::PodSecurityContext) {
    id_range(errors, &format!("{path}.runAsUser"), sc.run_as_user);
    id_range(errors, &format!("{path}.runAsGroup"), sc.run_as_group);
    id_range(errors, &format!("{path}.fsGroup"), sc.fs_group);
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        id_range(errors, &format!("{path}.supplementalGroups.{i}"), Some(*g));
    }
    if let Some(p) = &sc.seccomp_profile {
        seccomp_profile(errors, &format!("{path}.seccompProfile"), p);
    }
    one_of(
        errors,
        &format!("{path}.fsGroupChangePolicy"),
        &sc.fs_group_change_policy,
        &["OnRootMismatch", "Always"],
    );
}

/// The largest file mode a volume may give (0777).
const MAX_FILE_MODE: i32 = 0o777;

/// The volume types skiff knows, as the API names them.
const VOLUME_TYPES: &str =
    "emptyDir, hostPath, configMap, secret, downwardAPI, projected or persistentVolumeClaim";

/// Checks the pod's volumes (`containers`: the pod's container names);
/// returns their names, for the mounts.
fn volumes<'a>(
    errors: &mut Errors,
    path: &str,
    spec: &'a v1::PodSpec,
    containers: &BTreeSet<&str>,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vpath = format!("{path}.volumes.{i}");
        dns_label(errors, &format!("{vpath}.name"), &v.name);
        if !v.name.is_empty() && !names.insert(v.name.as_str()) {
            errors.add(
                format!("{vpath}.name"),
                format!("{:?} is used twice", v.name),
            );
        }
        let sources = usize::from(v.empty_dir.is_some())
            + usize::from(v.host_path.is_some())
            + usize::from(v.config_map.is_some())
            + usize::from(v.secret.is_some())
            + usize::from(v.downward_api.is_some())
            + usize::from(v.projected.is_some())
            + usize::from(v.persistent_volume_claim.is_some());
        match sources {
            0 => errors.add(
                vpath.as_str(),
                format!("must specify a volume type: one of {VOLUME_TYPES}"),
            ),
            1 => {}
            _ => errors.add(vpath.as_str(), "may not specify more than 1 volume type"),
        }
        if let Some(e) = &v.empty_dir {
            if !e.medium.is_empty() && e.medium != "Memory" {
                errors.add(
                    format!("{vpath}.emptyDir.medium"),
                    format!(
                        "{:?} is not supported: use \"\" (the node's disk) or Memory",
                        e.medium
                    ),
                );
            }
            if !e.size_limit.is_empty() {
                non_negative_quantity(
                    errors,
                    &format!("{vpath}.emptyDir.sizeLimit"),
                    &e.size_limit,
                );
            }
        }
        if let Some(h) = &v.host_path {
            let hpath = format!("{vpath}.hostPath");
            if h.path.is_empty() {
                errors.add(format!("{hpath}.path"), "is required");
            } else if has_backstep(&h.path) {
                errors.add(format!("{hpath}.path"), "must not contain '..'");
            }
            one_of(
                errors,
                &format!("{hpath}.type"),
                h.r#type.as_deref().unwrap_or(""),
                &[
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
        if let Some(c) = &v.config_map {
            let cpath = format!("{vpath}.configMap");
            object_name(errors, &format!("{cpath}.name"), &c.name);
            key_to_paths(errors, &cpath, &c.items);
            file_mode(errors, &format!("{cpath}.defaultMode"), c.default_mode);
        }
        if let Some(secret) = &v.secret {
            let spath = format!("{vpath}.secret");
            object_name(errors, &format!("{spath}.secretName"), &secret.secret_name);
            key_to_paths(errors, &spath, &secret.items);
            file_mode(errors, &format!("{spath}.defaultMode"), secret.default_mode);
        }
        if let Some(d) = &v.downward_api {
            let dpath = format!("{vpath}.downwardAPI");
            downward_api_files(errors, &dpath, &d.items, containers);
            file_mode(errors, &format!("{dpath}.defaultMode"), d.default_mode);
        }
        if let Some(p) = &v.projected {
            projected(errors, &format!("{vpath}.projected"), p, containers);
        }
        if let Some(claim) = &v.persistent_volume_claim {
            if claim.claim_name.is_empty() {
                errors.add(
                    format!("{vpath}.persistentVolumeClaim.claimName"),
                    "is required",
                );
            }
        }
    }
    names
}

fn projected(
    errors: &mut Errors,
    path: &str,
    p: &v1::ProjectedVolumeSource,
    containers: &BTreeSet<&str>,
) {
    file_mode(errors, &format!("{path}.defaultMode"), p.default_mode);
    // Every source writes into the one directory: no path twice.
    let mut paths = BTreeSet::new();
    for (i, source) in p.sources.iter().enumerate() {
        let spath = format!("{path}.sources.{i}");
        let kinds = usize::from(source.secret.is_some())
            + usize::from(source.config_map.is_some())
            + usize::from(source.downward_api.is_some())
            + usize::from(source.service_account_token.is_some());
        if kinds != 1 {
            errors.add(
                spath.as_str(),
                "must have exactly one of secret, configMap, downwardAPI or serviceAccountToken",
            );
        }
        if let Some(t) = &source.service_account_token {
            let tpath = format!("{spath}.serviceAccountToken");
            // As kube-apiserver bounds a TokenRequest's lifetime.
            match t.expiration_seconds {
                Some(s) if s < 600 => errors.add(
                    format!("{tpath}.expirationSeconds"),
                    format!("Invalid value: {s}: may not specify a duration less than 10 minutes"),
                ),
                Some(s) if s > 1 << 32 => errors.add(
                    format!("{tpath}.expirationSeconds"),
                    format!(
                        "Invalid value: {s}: may not specify a duration larger than 2^32 seconds"
                    ),
                ),
                _ => {}
            }
            volume_file_path(errors, &format!("{tpath}.path"), &t.path);
            unique_path(errors, &format!("{tpath}.path"), &t.path, &mut paths);
        }
        if let Some(c) = &source.config_map {
            object_name(errors, &format!("{spath}.configMap.name"), &c.name);
            key_to_paths(errors, &format!("{spath}.configMap"), &c.items);
            for (j, item) in c.items.iter().enumerate() {
                let at = format!("{spath}.configMap.items.{j}.path");
                unique_path(errors, &at, &item.path, &mut paths);
            }
        }
        if let Some(secret) = &source.secret {
            object_name(errors, &format!("{spath}.secret.name"), &secret.name);
            key_to_paths(errors, &format!("{spath}.secret"), &secret.items);
            for (j, item) in secret.items.iter().enumerate() {
                let at = format!("{spath}.secret.items.{j}.path");
                unique_path(errors, &at, &item.path, &mut paths);
            }
        }
        if let Some(d) = &source.downward_api {
            let dpath = format!("{spath}.downwardAPI");
            downward_api_files(errors, &dpath, &d.items, containers);
            for (j, item) in d.items.iter().enumerate() {
                let at = format!("{dpath}.items.{j}.path");
                unique_path(errors, &at, &item.path, &mut paths);
            }
        }
    }
}

fn unique_path(errors: &mut Errors, at: &str, path: &str, seen: &mut BTreeSet<String>) {
    if !path.is_empty() && !seen.insert(path.to_owned()) {
        errors.add(at, format!("{path:?} is written by two sources"));
    }
}

/// The name of a ConfigMap or Secret a pod refers to.
fn object_name(errors: &mut Errors, path: &str, name: &str) {
    if name.is_empty() {
        errors.add(path, "is required");
    } else {
        dns_subdomain(errors, path, name);
    }
}

/// The `items` of a configMap or secret volume (or projection).
fn key_to_paths(errors: &mut Errors, path: &str, items: &[v1::KeyToPath]) {
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.items.{i}");
        if item.key.is_empty() {
            errors.add(format!("{ipath}.key"), "is required");
        } else if !is_config_key(&item.key) {
            errors.add(format!("{ipath}.key"), CONFIG_KEY_RULE);
        }
        volume_file_path(errors, &format!("{ipath}.path"), &item.path);
        file_mode(errors, &format!("{ipath}.mode"), item.mode);
    }
}

/// What a ConfigMap or Secret key may be made of.
const CONFIG_KEY_RULE: &str = "keys must be made of letters, digits, '-', '_' and '.'";

/// A ConfigMap or Secret key: letters, digits, '-', '_' and '.'.
fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// A file's path inside a volume: relative, never leaving the volume, and
/// not starting with `..` (the volume's own `..data`).
fn volume_file_path(errors: &mut Errors, path: &str, value: &str) {
    if value.is_empty() {
        errors.add(path, "is required");
    } else if value.starts_with('/') {
        errors.add(path, format!("{value:?} must be a relative path"));
    } else if has_backstep(value) {
        errors.add(path, format!("{value:?} must not contain '..'"));
    } else if value.starts_with("..") {
        errors.add(path, format!("{value:?} must not start with '..'"));
    }
}

/// Whether `path` has a `..` element.
fn has_backstep(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

fn file_mode(errors: &mut Errors, path: &str, mode: Option<i32>) {
    if let Some(mode) = mode {
        if !(0..=MAX_FILE_MODE).contains(&mode) {
            errors.add(
                path,
                format!("{mode} must be a number between 0 and 0777 (octal), both inclusive"),
            );
        }
    }
}

fn non_negative_quantity(errors: &mut Errors, path: &str, value: &str) {
    match Quantity::parse(value) {
        Ok(q) if q < Quantity::default() => {
            errors.add(path, format!("{value:?} must not be negative"))
        }
        Ok(_) => {}
        Err(e) => errors.add(path, e.to_string()),
    }
}

/// The items of a downwardAPI volume (or projection); `containers` names
/// the pod's containers.
fn downward_api_files(
    errors: &mut Errors,
    path: &str,
    items: &[v1::DownwardApiVolumeFile],
    containers: &BTreeSet<&str>,
) {
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}.items.{i}");
        volume_file_path(errors, &format!("{ipath}.path"), &item.path);
        file_mode(errors, &format!("{ipath}.mode"), item.mode);
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => {
                field_selector(errors, &format!("{ipath}.fieldRef"), f, VOLUME_FIELDS);
            }
            (None, Some(r)) => {
                let rpath = format!("{ipath}.resourceFieldRef");
                if r.container_name.is_empty() {
                    errors.add(format!("{rpath}.containerName"), "is required");
                }
                resource_selector(errors, &rpath, r, containers);
            }
            (Some(_), Some(_)) => errors.add(
                ipath.as_str(),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ),
            (None, None) => errors.add(
                ipath.as_str(),
                "must specify one of fieldRef or resourceFieldRef",
            ),
        }
    }
}

/// The pod fields a downwardAPI volume file may hold.
const VOLUME_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];

/// The pod fields an environment variable may hold.
const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// A `fieldRef`: one of `allowed`, or one label or annotation
/// (`metadata.labels['app']`).
fn field_selector(errors: &mut Errors, path: &str, f: &v1::ObjectFieldSelector, allowed: &[&str]) {
    if !f.api_version.is_empty() && f.api_version != "v1" {
        errors.add(
            format!("{path}.apiVersion"),
            format!("{:?} is not supported: use v1", f.api_version),
        );
    }
    let field = f.field_path.as_str();
    if field.is_empty() {
        errors.add(format!("{path}.fieldPath"), "is required");
        return;
    }
    match map_subscript(field) {
        Some(key) if is_label_key(key) => {}
        Some(key) => errors.add(
            format!("{path}.fieldPath"),
            format!("{key:?} is not a valid label or annotation key"),
        ),
        None if allowed.contains(&field) => {}
        None => {
            let mut supported: Vec<&str> = allowed.to_vec();
            supported.extend(["metadata.labels['<KEY>']", "metadata.annotations['<KEY>']"]);
            errors.add(
                format!("{path}.fieldPath"),
                format!(
                    "{field:?} is not supported; supported values: {}",
                    supported.join(", ")
                ),
            );
        }
    }
}

/// The key of `metadata.labels['key']` or `metadata.annotations['key']`.
fn map_subscript(field: &str) -> Option<&str> {
    for map in ["metadata.labels", "metadata.annotations"] {
        let key = field
            .strip_prefix(map)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"));
        if key.is_some() {
            return key;
        }
    }
    None
}

/// The container resources a `resourceFieldRef` may read.
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

/// A `resourceFieldRef`: a known resource, a container of the pod (when
/// named and `containers` is known), a divisor that fits the resource.
fn resource_selector(
    errors: &mut Errors,
    path: &str,
    r: &v1::ResourceFieldSelector,
    containers: &BTreeSet<&str>,
) {
    if r.resource.is_empty() {
        errors.add(format!("{path}.resource"), "is required");
    } else if !RESOURCE_FIELDS.contains(&r.resource.as_str()) {
        errors.add(
            format!("{path}.resource"),
            format!(
                "{:?} is not supported; supported values: {}",
                r.resource,
                RESOURCE_FIELDS.join(", ")
            ),
        );
    }
    if !r.container_name.is_empty()
        && !containers.is_empty()
        && !containers.contains(r.container_name.as_str())
    {
        errors.add(
            format!("{path}.containerName"),
            format!("{:?} is not a container of the pod", r.container_name),
        );
    }
    if r.divisor.is_empty() {
        return;
    }
    let divisor_path = format!("{path}.divisor");
    let divisor = match Quantity::parse(&r.divisor) {
        Ok(d) => d,
        Err(e) => {
            errors.add(divisor_path, e.to_string());
            return;
        }
    };
    let allowed: &[&str] = if r.resource.ends_with(".cpu") {
        &["1m", "1"]
    } else {
        &[
            "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
        ]
    };
    let fits = divisor == Quantity::default()
        || allowed
            .iter()
            .any(|a| Quantity::parse(a).is_ok_and(|q| q == divisor));
    if !fits {
        errors.add(
            divisor_path,
            format!(
                "{:?} is not a divisor of {}: use one of {}",
                r.divisor,
                r.resource,
                allowed.join(", ")
            ),
        );
    }
}

fn env_var(errors: &mut Errors, path: &str, e: &v1::EnvVar, containers: &BTreeSet<&str>) {
    if e.name.is_empty() {
        errors.add(format!("{path}.name"), "is required");
    } else if !is_env_name(&e.name) {
        errors.add(format!("{path}.name"), ENV_NAME_RULE);
    }
    let Some(from) = &e.value_from else {
        return;
    };
    let vpath = format!("{path}.valueFrom");
    if !e.value.is_empty() {
        errors.add(
            vpath.as_str(),
            "may not be specified when `value` is not empty",
        );
    }
    let sources = usize::from(from.field_ref.is_some())
        + usize::from(from.resource_field_ref.is_some())
        + usize::from(from.config_map_key_ref.is_some())
        + usize::from(from.secret_key_ref.is_some());
    match sources {
        0 => errors.add(
            vpath.as_str(),
            "must specify one of: fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef",
        ),
        1 => {}
        _ => errors.add(
            vpath.as_str(),
            "may not have more than one field specified at a time",
        ),
    }
    if let Some(f) = &from.field_ref {
        field_selector(errors, &format!("{vpath}.fieldRef"), f, ENV_FIELDS);
    }
    if let Some(r) = &from.resource_field_ref {
        resource_selector(errors, &format!("{vpath}.resourceFieldRef"), r, containers);
    }
    if let Some(r) = &from.config_map_key_ref {
        let at = format!("{vpath}.configMapKeyRef");
        key_selector(errors, &at, &r.name, &r.key);
    }
    if let Some(r) = &from.secret_key_ref {
        let at = format!("{vpath}.secretKeyRef");
        key_selector(errors, &at, &r.name, &r.key);
    }
}

fn key_selector(errors: &mut Errors, path: &str, name: &str, key: &str) {
    object_name(errors, &format!("{path}.name"), name);
    if key.is_empty() {
        errors.add(format!("{path}.key"), "is required");
    } else if !is_config_key(key) {
        errors.add(format!("{path}.key"), CONFIG_KEY_RULE);
    }
}

/// What an environment variable's name may be made of.
const ENV_NAME_RULE: &str = "must consist of printable ASCII characters other than '='";

/// An environment variable name, as Kubernetes allows it: printable ASCII
/// but `=`.
fn is_env_name(name: &str) -> bool {
    let allowed = |b: u8| (b' '..=b'~').contains(&b) && b != b'=';
    !name.is_empty() && name.bytes().all(allowed)
}

fn env_from(errors: &mut Errors, path: &str, e: &v1::EnvFromSource) {
    if !e.prefix.is_empty() && !is_env_name(&e.prefix) {
        errors.add(format!("{path}.prefix"), ENV_NAME_RULE);
    }
    match (&e.config_map_ref, &e.secret_ref) {
        (Some(c), None) => object_name(errors, &format!("{path}.configMapRef.name"), &c.name),
        (None, Some(s)) => object_name(errors, &format!("{path}.secretRef.name"), &s.name),
        (Some(_), Some(_)) => {
            errors.add(path, "may not have more than one field specified at a time")
        }
        (None, None) => errors.add(path, "must specify one of: configMapRef or secretRef"),
    }
}

fn volume_mounts(errors: &mut Errors, cpath: &str, c: &v1::Container, volumes: &BTreeSet<&str>) {
    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mpath = format!("{cpath}.volumeMounts.{i}");
        if m.name.is_empty() {
            errors.add(format!("{mpath}.name"), "is required");
        } else if !volumes.contains(m.name.as_str()) {
            errors.add(
                format!("{mpath}.name"),
                format!("{:?} is not a volume of the pod (spec.volumes)", m.name),
            );
        }
        if m.mount_path.is_empty() {
            errors.add(format!("{mpath}.mountPath"), "is required");
        } else if !m.mount_path.starts_with('/') {
            errors.add(
                format!("{mpath}.mountPath"),
                format!("{:?} must be an absolute path", m.mount_path),
            );
        } else if !mount_paths.insert(m.mount_path.trim_end_matches('/')) {
            errors.add(
                format!("{mpath}.mountPath"),
                format!("{:?} must be unique", m.mount_path),
            );
        }
        if m.sub_path.starts_with('/') {
            errors.add(
                format!("{mpath}.subPath"),
                format!("{:?} must be a relative path", m.sub_path),
            );
        } else if has_backstep(&m.sub_path) {
            errors.add(
                format!("{mpath}.subPath"),
                format!("{:?} must not contain '..'", m.sub_path),
            );
        }
        match m.mount_propagation.as_str() {
            "" | "None" | "HostToContainer" => {}
            "Bidirectional" => errors.add(
                format!("{mpath}.mountPropagation"),
                "Bidirectional is allowed only to privileged containers, which skiff does not run",
            ),
            other => errors.add(
                format!("{mpath}.mountPropagation"),
                format!("{other:?} is not one of None, HostToContainer, Bidirectional"),
            ),
        }
    }
}

/// A Service's spec, read as Kubernetes' own type, as kube-apiserver
/// checks it (the clusterIP and nodePorts' ranges and holders are the
/// allocators').
fn service(errors: &mut Errors, spec: Option<&crate::services::ServiceSpec>) {
    use crate::services;
    let spec = spec.cloned().unwrap_or_default();
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let service_type = text(&spec.type_);
    one_of(
        errors,
        "spec.type",
        &service_type,
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    );
    if service_type == "ExternalName" {
        // Kubernetes allows a trailing dot (a fully qualified name).
        let external_name = text(&spec.external_name);
        let name = external_name.strip_suffix('.').unwrap_or(&external_name);
        dns_subdomain(errors, "spec.externalName", name);
        let cluster_ip = text(&spec.cluster_ip);
        if !cluster_ip.is_empty() {
            errors.add(
                "spec.clusterIP",
                format!("{cluster_ip:?}: may not be set for ExternalName services"),
            );
        }
        if spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
            errors.add(
                "spec.clusterIPs",
                "may not be set for ExternalName services".to_owned(),
            );
        }
    }
    let ports = spec.ports.clone().unwrap_or_default();
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = services::port_name(p);
        port_number(errors, &format!("{path}.port"), p.port);
        one_of(
            errors,
            &format!("{path}.protocol"),
            p.protocol.as_deref().unwrap_or_default(),
            &["TCP", "UDP", "SCTP"],
        );
        if ports.len() > 1 && name.is_empty() {
            errors.add(
                format!("{path}.name"),
                "is required when a Service has more than one port",
            );
        }
        if !name.is_empty() && !names.insert(name.to_owned()) {
            errors.add(format!("{path}.name"), format!("{name:?} is used twice"));
        }
        match services::target_port(p) {
            Some(services::IntOrString::Int(n)) => {
                port_number(errors, &format!("{path}.targetPort"), *n)
            }
            Some(services::IntOrString::String(target)) => {
                port_number_or_name(errors, &format!("{path}.targetPort"), target)
            }
            None => {}
        }
        if let Some(node_port) = p.node_port.filter(|n| *n != 0) {
            port_number(errors, &format!("{path}.nodePort"), node_port);
        }
    }
    labels(
        errors,
        "spec.selector",
        &spec.selector.clone().unwrap_or_default(),
    );
    one_of(
        errors,
        "spec.externalTrafficPolicy",
        &text(&spec.external_traffic_policy),
        &["Cluster", "Local"],
    );
    one_of(
        errors,
        "spec.internalTrafficPolicy",
        &text(&spec.internal_traffic_policy),
        &["Cluster", "Local"],
    );
    one_of(
        errors,
        "spec.sessionAffinity",
        &text(&spec.session_affinity),
        &["None", "ClientIP"],
    );
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(timeout) = timeout.filter(|t| !(1..=86400).contains(t)) {
        errors.add(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("{timeout} is not between 1 and 86400 seconds"),
        );
    }
    for (i, range) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        if let Err(e) = crate::Ipv4Net::parse_lenient(range) {
            errors.add(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("is not an IPv4 CIDR: {e}"),
            );
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            errors.add(
                format!("spec.externalIPs[{i}]"),
                format!("{ip:?} is not an IPv4 address"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::apply_defaults;
    use crate::manifest::parse_manifest;

    fn check(yaml: &str) -> Result<(), ValidationError> {
        let mut o = parse_manifest("t.yaml", yaml, true)
            .unwrap()
            .objects
            .remove(0);
        o.meta_mut().unwrap().namespace = "default".into();
        apply_defaults(&mut o);
        validate(&o)
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        resources: {limits: {cpu: 500m, memory: 64Mi}}\n";

    #[test]
    fn secrets_merge_string_data_and_refuse_bad_base64() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGk=}\nstringData: {b: hello}\n";
        let mut o = parse_manifest("s.yaml", yaml, true)
            .unwrap()
            .objects
            .remove(0);
        o.meta_mut().unwrap().namespace = "default".into();
        apply_defaults(&mut o);
        validate(&o).unwrap();
        let Some(Body::Generic(s)) = &o.kind else {
            panic!("not a document: {o:?}")
        };
        // stringData is written into data over the same key, then dropped.
        assert_eq!(
            serde_json::Value::Object(crate::generic::content(s)),
            serde_json::json!({"type": "Opaque", "data": {"a": "aGk=", "b": "aGVsbG8="}})
        );
        let e = parse_manifest("s.yaml", &yaml.replace("aGk=", "not base64!"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field \"data.a\" at line 4") && e.contains("base64"),
            "{e}"
        );
        let e = reasons(&yaml.replace("{b: hello}", "{\"b/c\": hello}"));
        assert!(e.contains("data[b/c]"), "{e}");
        let e = reasons(&yaml.replace("{b: hello}", "{\"..\": hello}"));
        assert!(e.contains("data[..]"), "{e}");
    }

    #[test]
    fn rbac_names_are_path_segments() {
        let role = |name: &str| {
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name:?}}}\nrules: []\n")
        };
        check(&role("system:aggregate-to-admin")).unwrap();
        let e = reasons(&role("a/b"));
        assert!(
            e.contains("metadata.name: \"a/b\": may not contain '/'"),
            "{e}"
        );
        let e = reasons(&role(".."));
        assert!(e.contains("metadata.name: \"..\": may not be '..'"), "{e}");
        // Other kinds keep DNS subdomains.
        let e = reasons(&DEPLOYMENT.replace("name: web}", "name: \"a:b\"}"));
        assert!(e.contains("is not a DNS subdomain"), "{e}");
    }

    #[test]
    fn a_good_deployment_passes() {
        check(DEPLOYMENT).unwrap();
    }

    #[test]
    fn a_deployments_selector_may_not_change_and_its_replicas_may() {
        let read = |yaml: &str| {
            let mut o = parse_manifest("d.yaml", yaml, true)
                .unwrap()
                .objects
                .remove(0);
            o.meta_mut().unwrap().namespace = "default".into();
            apply_defaults(&mut o);
            o
        };
        let old = read(DEPLOYMENT);
        validate_update(
            &old,
            &read(&DEPLOYMENT.replace("replicas: 2", "replicas: 5")),
        )
        .unwrap();
        let relabelled = DEPLOYMENT
            .replace(
                "matchLabels: {app: web}",
                "matchLabels: {app: web, tier: a}",
            )
            .replace("labels: {app: web}}", "labels: {app: web, tier: a}}");
        let e = validate_update(&old, &read(&relabelled)).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].path, "spec.selector");
        assert!(e.errors[0].reason.ends_with("field is immutable"), "{e}");
    }

    fn reasons(yaml: &str) -> String {
        check(yaml).unwrap_err().to_string()
    }

    #[test]
    fn bad_deployments_name_the_field() {
        let e = reasons(&DEPLOYMENT.replace("replicas: 2", "replicas: -1"));
        assert!(e.contains("spec.replicas: must be >= 0, got -1"), "{e}");
        let e = reasons(&DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}"));
        assert!(
            e.contains("spec.selector: does not match the template's labels"),
            "{e}"
        );
        let e = reasons(&DEPLOYMENT.replace("cpu: 500m", "cpu: lots"));
        assert!(
            e.contains(
                "spec.template.spec.containers.0.resources.limits.cpu: \"lots\" is not a quantity"
            ),
            "{e}"
        );
        let e = reasons(&DEPLOYMENT.replace("name: web}", "name: Web_App}"));
        assert!(
            e.contains("metadata.name: \"Web_App\" is not a DNS subdomain"),
            "{e}"
        );
        assert!(e.starts_with("Deployment \"Web_App\" is invalid"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let yaml = DEPLOYMENT
            .replace("replicas: 2", "replicas: -3")
            .replace("image: busybox", "image: \"\"");
        let err = check(&yaml).unwrap_err();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.replicas", "spec.template.spec.containers.0.image"]
        );
    }

    const POD_WITH_VOLUMES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    env:
    - name: A
      valueFrom: {configMapKeyRef: {name: cm, key: a}}
    - name: B
      valueFrom: {secretKeyRef: {name: s, key: b, optional: true}}
    - name: APP
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: cm}}
    volumeMounts:
    - {name: config, mountPath: /etc/app, readOnly: true}
    - {name: scratch, mountPath: /scratch, subPath: c}
  volumes:
  - {name: config, configMap: {name: cm, items: [{key: a, path: conf/a.txt, mode: 256}]}}
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
"#;

    #[test]
    fn a_pod_with_volumes_env_and_env_from_passes() {
        check(POD_WITH_VOLUMES).unwrap();
    }

    #[test]
    fn a_pod_checked_on_its_parsed_fields_finds_what_a_check_of_its_bytes_finds() {
        // A pod document as the writer checks it: placed and defaulted.
        let defaulted = |yaml: &str| {
            let mut o = parse_manifest("t.yaml", yaml, true)
                .unwrap()
                .objects
                .remove(0);
            o.meta_mut().unwrap().namespace = "default".into();
            apply_defaults(&mut o);
            let Some(Body::Generic(document)) = &o.kind else {
                panic!("a pod is a document: {o:?}");
            };
            let content = crate::generic::content(document);
            (o, content)
        };
        let bad = POD_WITH_VOLUMES
            .replace("image: busybox", "image: \"\"")
            .replace("mountPath: /scratch", "mountPath: \"\"");
        for yaml in [POD_WITH_VOLUMES.to_owned(), bad] {
            let (o, content) = defaulted(&yaml);
            let parsed = validate_parsed(&o, &content).map_err(|e| e.to_string());
            assert_eq!(parsed, validate(&o).map_err(|e| e.to_string()), "{yaml}");
        }
        let (o, mut content) = defaulted(POD_WITH_VOLUMES);
        content["spec"]["containers"][0]["image"] = "".into();
        // What is checked is the fields given, not the bytes.
        validate(&o).unwrap();
        let err = validate_parsed(&o, &content).unwrap_err();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.containers.0.image"], "{err}");
    }

    #[test]
    fn bad_volumes_mounts_and_env_sources_name_the_field() {
        let scratch = "{name: scratch, emptyDir: {medium: Memory, sizeLimit: 64Mi}}";
        let cases = [
            (
                scratch,
                "{name: config, emptyDir: {}}",
                r#"spec.volumes.1.name: "config" is used twice"#,
            ),
            (
                scratch,
                "{name: scratch}",
                "spec.volumes.1: must specify a volume type",
            ),
            (
                scratch,
                "{name: scratch, emptyDir: {}, hostPath: {path: /tmp}}",
                "spec.volumes.1: may not specify more than 1 volume type",
            ),
            (
                scratch,
                "{name: scratch, hostPath: {path: /srv, type: Folder}}",
                r#"spec.volumes.1.hostPath.type: "Folder" is not one of"#,
            ),
            (
                "medium: Memory",
                "medium: Disk",
                r#"spec.volumes.1.emptyDir.medium: "Disk" is not supported"#,
            ),
            (
                "{name: config, mountPath",
                "{name: nope, mountPath",
                r#"spec.containers.0.volumeMounts.0.name: "nope" is not a volume of the pod"#,
            ),
            (
                "mountPath: /etc/app",
                "mountPath: etc/app",
                r#"volumeMounts.0.mountPath: "etc/app" must be an absolute path"#,
            ),
            (
                "readOnly: true}",
                "readOnly: true, mountPropagation: Bidirectional}",
                "volumeMounts.0.mountPropagation: Bidirectional is allowed only to privileged",
            ),
            (
                "subPath: c}",
                "subPath: /c}",
                r#"volumeMounts.1.subPath: "/c" must be a relative path"#,
            ),
            (
                "subPath: c}",
                "subPath: c/../../x}",
                r#"volumeMounts.1.subPath: "c/../../x" must not contain '..'"#,
            ),
            (
                "path: conf/a.txt",
                "path: ../a.txt",
                r#"spec.volumes.0.configMap.items.0.path: "../a.txt" must not contain '..'"#,
            ),
            (
                "path: conf/a.txt",
                "path: ..data",
                r#"items.0.path: "..data" must not start with '..'"#,
            ),
            (
                "mode: 256",
                "mode: 512",
                "spec.volumes.0.configMap.items.0.mode: 512 must be a number between 0 and 0777",
            ),
            (
                "{configMapKeyRef: {name: cm, key: a}}",
                "{configMapKeyRef: {name: cm, key: a}, fieldRef: {fieldPath: metadata.name}}",
                "spec.containers.0.env.0.valueFrom: may not have more than one field",
            ),
            (
                "\"metadata.labels['app']\"",
                "status.phase",
                r#"env.2.valueFrom.fieldRef.fieldPath: "status.phase" is not supported"#,
            ),
            (
                "divisor: 1Mi",
                "divisor: 3Mi",
                r#"env.3.valueFrom.resourceFieldRef.divisor: "3Mi" is not a divisor"#,
            ),
            (
                "{prefix: CFG_, configMapRef: {name: cm}}",
                "{prefix: CFG_}",
                "spec.containers.0.envFrom.0: must specify one of: configMapRef or secretRef",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(POD_WITH_VOLUMES.contains(from), "{from}");
            let e = reasons(&POD_WITH_VOLUMES.replace(from, to));
            assert!(e.contains(expected), "{to}: {e}");
        }
    }

    const POD_WITH_API_ACCESS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - {name: kube-api-access-abcde, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  volumes:
  - name: kube-api-access-abcde
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
"#;

    #[test]
    fn service_account_token_sources_are_checked() {
        check(POD_WITH_API_ACCESS).unwrap();
        let cases = [
            (
                "expirationSeconds: 3607",
                "expirationSeconds: 60",
                "spec.volumes.0.projected.sources.0.serviceAccountToken.expirationSeconds: \
                 Invalid value: 60: may not specify a duration less than 10 minutes",
            ),
            (
                "path: token}",
                "path: ca.crt}",
                r#"spec.volumes.0.projected.sources.1.configMap.items.0.path: "ca.crt" is written by two sources"#,
            ),
            (
                "path: token}",
                "path: /token}",
                "spec.volumes.0.projected.sources.0.serviceAccountToken.path",
            ),
            (
                "- serviceAccountToken: {expirationSeconds: 3607, path: token}",
                "- {serviceAccountToken: {path: token}, secret: {name: s}}",
                "spec.volumes.0.projected.sources.0: must have exactly one of",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(POD_WITH_API_ACCESS.contains(from), "{from}");
            let e = reasons(&POD_WITH_API_ACCESS.replace(from, to));
            assert!(e.contains(expected), "{to}: {e}");
        }
    }

    const POD_WITH_INIT_AND_SECURITY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile: {type: RuntimeDefault}
  initContainers:
  - {name: migrate, image: busybox}
  - name: proxy
    image: busybox
    restartPolicy: Always
    readinessProbe: {tcpSocket: {port: 80}}
  containers:
  - name: c
    image: busybox
    securityContext:
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
"#;

    const POD_WITH_HOOKS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  terminationGracePeriodSeconds: 10
  imagePullSecrets: [{name: regcred}]
  containers:
  - name: c
    image: busybox
    ports: [{containerPort: 8080}]
    startupProbe: {httpGet: {port: 8080}, failureThreshold: 30, periodSeconds: 1}
    lifecycle:
      postStart: {exec: {command: [sh, -c, "echo started"]}}
      preStop: {sleep: {seconds: 5}}
"#;

    #[test]
    fn lifecycle_hooks_startup_probes_and_host_namespaces_are_checked() {
        check(POD_WITH_HOOKS).unwrap();
        let cases = [
            (
                "postStart: {exec: {command: [sh, -c, \"echo started\"]}}",
                "postStart: {exec: {command: [sh]}, sleep: {seconds: 1}}",
                "spec.containers.0.lifecycle.postStart: must have exactly one of exec, httpGet, sleep or tcpSocket",
            ),
            (
                "postStart: {exec: {command: [sh, -c, \"echo started\"]}}",
                "postStart: {exec: {command: []}}",
                "spec.containers.0.lifecycle.postStart.exec.command: is required",
            ),
            (
                "preStop: {sleep: {seconds: 5}}",
                "preStop: {sleep: {seconds: 11}}",
                "spec.containers.0.lifecycle.preStop.sleep.seconds: 11: must be non-negative and no more than terminationGracePeriodSeconds (10)",
            ),
            (
                "preStop: {sleep: {seconds: 5}}",
                "preStop: {httpGet: {path: /quit, port: 8080, scheme: FTP}}",
                r#"spec.containers.0.lifecycle.preStop.httpGet.scheme: "FTP": must be HTTP or HTTPS"#,
            ),
            (
                "failureThreshold: 30",
                "failureThreshold: 30, successThreshold: 2",
                "spec.containers.0.startupProbe.successThreshold: must be 1",
            ),
            (
                "[{containerPort: 8080}]",
                "[{containerPort: 8080, hostPort: 80}]",
                "spec.containers.0.ports.0.hostPort: must match containerPort 8080 when hostNetwork is true",
            ),
            (
                "httpGet: {port: 8080}",
                "httpGet: {port: 70000}",
                "spec.containers.0.startupProbe.httpGet.port: 70000 is not a port number (1-65535)",
            ),
            (
                "httpGet: {port: 8080}",
                "httpGet: {port: 99999999999}",
                r#"spec.containers.0.startupProbe.httpGet.port: "99999999999" is neither a port number nor a port name"#,
            ),
            (
                "httpGet: {port: 8080}",
                "tcpSocket: {port: Web_Port}",
                r#"spec.containers.0.startupProbe.tcpSocket.port: "Web_Port" is neither a port number nor a port name"#,
            ),
            (
                "httpGet: {port: 8080}",
                "tcpSocket: {host: x}",
                "spec.containers.0.startupProbe.tcpSocket.port: is required",
            ),
            (
                "preStop: {sleep: {seconds: 5}}",
                "preStop: {httpGet: {path: /quit, port: 0}}",
                "spec.containers.0.lifecycle.preStop.httpGet.port: 0 is not a port number (1-65535)",
            ),
        ];
        // A port by name is a port.
        let named = POD_WITH_HOOKS.replace("httpGet: {port: 8080}", "httpGet: {port: web-ui}");
        check(&named).unwrap();
        for (from, to, expected) in cases {
            assert!(POD_WITH_HOOKS.contains(from), "{from}");
            let e = reasons(&POD_WITH_HOOKS.replace(from, to));
            assert!(e.contains(expected), "{to}: {e}");
        }
        let init = POD_WITH_INIT_AND_SECURITY.replace(
            "{name: migrate, image: busybox}",
            "{name: migrate, image: busybox, lifecycle: {preStop: {sleep: {seconds: 1}}}}",
        );
        let e = reasons(&init);
        assert!(
            e.contains("spec.initContainers.0.lifecycle: may not be set for init containers without restartPolicy: Always"),
            "{e}"
        );
    }

    #[test]
    fn a_shared_process_namespace_and_the_hosts_are_refused_together() {
        let conflict = "spec.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled";
        // Either alone is fine.
        check(POD_WITH_HOOKS).unwrap();
        let shared = POD_WITH_HOOKS.replace("  hostPID: true\n", "  shareProcessNamespace: true\n");
        assert!(shared.contains("shareProcessNamespace: true"), "{shared}");
        check(&shared).unwrap();
        let both = POD_WITH_HOOKS.replace(
            "  hostPID: true\n",
            "  hostPID: true\n  shareProcessNamespace: true\n",
        );
        let e = reasons(&both);
        assert_eq!(e, format!("Pod \"p\" is invalid: {conflict}"));
        // Explicitly not shared: no conflict.
        let unshared = POD_WITH_HOOKS.replace(
            "  hostPID: true\n",
            "  hostPID: true\n  shareProcessNamespace: false\n",
        );
        check(&unshared).unwrap();
        // In a template, under its own path.
        let deployment = DEPLOYMENT.replace(
            "    spec:\n      containers:",
            "    spec:\n      hostPID: true\n      shareProcessNamespace: true\n      containers:",
        );
        assert_ne!(deployment, DEPLOYMENT);
        let e = reasons(&deployment);
        assert!(
            e.contains("spec.template.spec.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"),
            "{e}"
        );
    }

    #[test]
    fn a_pod_with_init_containers_a_sidecar_and_security_contexts_passes() {
        check(POD_WITH_INIT_AND_SECURITY).unwrap();
    }

    #[test]
    fn bad_init_containers_and_security_contexts_name_the_field() {
        let cases = [
            (
                "{name: migrate, image: busybox}",
                "{name: migrate, image: busybox, restartPolicy: OnFailure}",
                r#"spec.initContainers.0.restartPolicy: "OnFailure": only Always (a sidecar) is allowed"#,
            ),
            (
                "{name: migrate, image: busybox}",
                "{name: migrate, image: busybox, livenessProbe: {exec: {command: [sh]}}}",
                "spec.initContainers.0.livenessProbe: may not be set for init containers without restartPolicy: Always",
            ),
            (
                "  - name: c\n    image: busybox\n",
                "  - name: c\n    image: busybox\n    restartPolicy: Always\n",
                "spec.containers.0.restartPolicy: may only be set on init containers",
            ),
            (
                "runAsUser: 1000",
                "runAsUser: -1",
                "spec.securityContext.runAsUser: -1 must be between 0 and 2147483647",
            ),
            (
                "fsGroup: 2000",
                "fsGroup: 4294967296",
                "spec.securityContext.fsGroup: 4294967296 must be between 0 and 2147483647",
            ),
            (
                "[4000]",
                "[4000, -2]",
                "spec.securityContext.supplementalGroups.1: -2 must be between",
            ),
            (
                "OnRootMismatch",
                "Sometimes",
                r#"spec.securityContext.fsGroupChangePolicy: "Sometimes" is not one of"#,
            ),
            (
                "{type: RuntimeDefault}",
                "{type: Localhost}",
                "spec.securityContext.seccompProfile.localhostProfile: is required when type is Localhost",
            ),
            (
                "{type: RuntimeDefault}",
                "{type: RuntimeDefault, localhostProfile: my.json}",
                "seccompProfile.localhostProfile: may only be set when type is Localhost",
            ),
            (
                "{type: RuntimeDefault}",
                "{type: Strict}",
                r#"spec.securityContext.seccompProfile.type: "Strict" is not one of"#,
            ),
            (
                "runAsNonRoot: true",
                "privileged: true",
                "spec.containers.0.securityContext.allowPrivilegeEscalation: cannot set allowPrivilegeEscalation to false and privileged to true",
            ),
            (
                "add: [NET_BIND_SERVICE]",
                "add: [SYS_ADMIN]",
                "cannot set allowPrivilegeEscalation to false and capabilities.add CAP_SYS_ADMIN",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(POD_WITH_INIT_AND_SECURITY.contains(from), "{from}");
            let e = reasons(&POD_WITH_INIT_AND_SECURITY.replace(from, to));
            assert!(e.contains(expected), "{to}: {e}");
        }
    }

    #[test]
    fn bad_label_and_annotation_keys_are_named_by_their_paths() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {\"bad key\": x, good: y}\n  annotations: {\"-x\": z}\nspec:\n  containers: [{name: a, image: x}]\n";
        let e = reasons(pod);
        assert!(
            e.contains("metadata.labels[bad key]: \"bad key\" is not a valid key"),
            "{e}"
        );
        assert!(
            e.contains("metadata.annotations[-x]: \"-x\" is not a valid key"),
            "{e}"
        );
        assert!(!e.contains("metadata.labels[good]"), "{e}");
    }

    #[test]
    fn services_and_pods() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, targetPort: http}\n  - {port: 70000}\n";
        let e = reasons(svc);
        assert!(
            e.contains("spec.ports[1].port: 70000 is not a port number"),
            "{e}"
        );
        assert!(
            e.contains("spec.ports[0].name: is required when a Service has more than one port"),
            "{e}"
        );
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: a, image: x, resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}\n  - {name: a, image: y}\n";
        let e = reasons(pod);
        assert!(
            e.contains("spec.restartPolicy: \"Sometimes\" is not one of"),
            "{e}"
        );
        assert!(
            e.contains("spec.containers.1.name: \"a\" is used twice"),
            "{e}"
        );
        assert!(
            e.contains("requests.memory: must be less than or equal to the limit"),
            "{e}"
        );
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x}\n";

    #[test]
    fn pod_dns_settings_are_checked_as_kubernetes_checks_them() {
        check(POD).unwrap();
        let good = format!(
            "{POD}  dnsPolicy: None\n  hostname: db-0\n  subdomain: db\n  dnsConfig:\n    nameservers: [1.2.3.4]\n    searches: [example.com.]\n    options: [{{name: ndots, value: \"2\"}}, {{name: edns0}}]\n"
        );
        check(&good).unwrap();
        let e = reasons(&format!("{POD}  dnsPolicy: Sometimes\n"));
        assert!(
            e.contains("spec.dnsPolicy: \"Sometimes\" is not one of"),
            "{e}"
        );
        let e = reasons(&format!("{POD}  dnsPolicy: None\n"));
        assert!(
            e.contains("spec.dnsConfig: is required when dnsPolicy is None"),
            "{e}"
        );
        let e = reasons(&format!(
            "{POD}  dnsPolicy: None\n  dnsConfig: {{searches: [a.b]}}\n"
        ));
        assert!(
            e.contains("spec.dnsConfig.nameservers: must list at least one"),
            "{e}"
        );
        let bad = format!(
            "{POD}  hostname: Db_0\n  subdomain: -db\n  dnsConfig:\n    nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, nine]\n    searches: [Bad_Name]\n    options: [{{value: \"1\"}}]\n"
        );
        let err = check(&bad).unwrap_err();
        let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.hostname",
                "spec.subdomain",
                "spec.dnsConfig.nameservers",
                "spec.dnsConfig.nameservers.3",
                "spec.dnsConfig.searches.0",
                "spec.dnsConfig.options.0.name",
            ],
            "{err}"
        );
    }

    #[test]
    fn an_external_name_service_needs_a_dns_name_and_no_cluster_ip() {
        let svc =
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: ExternalName\n";
        check(&format!("{svc}  externalName: db.example.com.\n")).unwrap();
        let e = reasons(svc);
        assert!(e.contains("spec.externalName: is required"), "{e}");
        let e = reasons(&format!("{svc}  externalName: not_a_name\n"));
        assert!(
            e.contains("spec.externalName: \"not_a_name\" is not a DNS subdomain"),
            "{e}"
        );
        let e = reasons(&format!(
            "{svc}  externalName: db.example.com\n  clusterIP: 10.43.0.99\n"
        ));
        assert!(
            e.contains("spec.clusterIP: \"10.43.0.99\": may not be set"),
            "{e}"
        );
        let e = reasons(&format!(
            "{svc}  externalName: db.example.com\n  clusterIPs: [10.43.0.99]\n"
        ));
        assert!(
            e.contains("spec.clusterIPs: may not be set for ExternalName services"),
            "{e}"
        );
    }

    #[test]
    fn exposed_services_name_their_bad_fields() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n";
        check(&format!(
            "{svc}  loadBalancerSourceRanges: [192.168.1.7/24, 10.0.0.0/8]\n  externalIPs: [198.51.100.7]\n  externalTrafficPolicy: Local\n  sessionAffinity: ClientIP\n"
        ))
        .unwrap();
        let e = reasons(&format!(
            "{svc}  loadBalancerSourceRanges: [10.0.0.0/8, lan]\n"
        ));
        assert!(
            e.contains("spec.loadBalancerSourceRanges[1]: is not an IPv4 CIDR"),
            "{e}"
        );
        let e = reasons(&format!("{svc}  externalIPs: [example.com]\n"));
        assert!(
            e.contains("spec.externalIPs[0]: \"example.com\" is not an IPv4 address"),
            "{e}"
        );
        let e = reasons(&format!("{svc}  externalTrafficPolicy: Nearby\n"));
        assert!(
            e.contains("spec.externalTrafficPolicy: \"Nearby\" is not one of"),
            "{e}"
        );
        let e = reasons(&format!(
            "{svc}  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 90000}}}}\n"
        ));
        assert!(
            e.contains("spec.sessionAffinityConfig.clientIP.timeoutSeconds: 90000 is not between"),
            "{e}"
        );
    }
}
