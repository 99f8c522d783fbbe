//! Defaulting: the values Kubernetes fills in when a manifest leaves them
//! out, applied by the master before every create and update, so stored
//! objects are complete and `apply` of an unchanged manifest is a no-op.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

pub use super::images::default_pull_policy;

/// Kubernetes' default maxSurge and maxUnavailable.
pub const DEFAULT_ROLLING_PERCENT: &str = "25%";

/// The mode of the files of configMap, secret, downwardAPI and projected
/// volumes when the volume sets none (0644, written `420`).
pub const DEFAULT_VOLUME_FILE_MODE: i32 = 0o644;

/// A `serviceAccountToken` volume source's lifetime when it names none
/// (`expirationSeconds`, an hour, as Kubernetes defaults it).
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Fills in defaults, in place.
pub fn apply_defaults(object: &mut Object) {
    match object.kind.as_mut() {
        Some(Body::Generic(g)) => {
            if let Some(kind) = super::Kind::from_type(&g.api_version, &g.kind)
                .ok()
                .filter(|k| k.is_generic())
            {
                if kind == super::Kind::Pod {
                    // Parsed once for both.
                    let mut content = super::generic::content(g);
                    pod_content(&mut content);
                    super::generic::set_content(g, &content);
                } else if matches!(kind, super::Kind::Deployment | super::Kind::ReplicaSet) {
                    let mut content = super::generic::content(g);
                    replicated_content(kind, &mut content);
                    super::generic::set_content(g, &content);
                } else {
                    super::generic::apply_defaults(kind, g);
                }
            }
        }
        Some(Body::Pod(p)) => {
            pod_spec(p.spec.get_or_insert_with(Default::default));
            let status = p.status.get_or_insert_with(Default::default);
            if status.phase.is_empty() {
                status.phase = "Pending".to_owned();
            }
        }
        // A Secret, Namespace, Endpoints, Service, Deployment or ReplicaSet
        // is defaulted as its document, which what decodes one makes it
        // (`legacy_bodies`).
        Some(
            Body::Node(_)
            | Body::Secret(_)
            | Body::Namespace(_)
            | Body::Endpoints(_)
            | Body::Service(_)
            | Body::Deployment(_)
            | Body::ReplicaSet(_),
        )
        | None => {}
    }
}

/// A pod document's defaults, as [`pod_spec`] gives the protobuf model's
/// (and as Kubernetes gives a pod): the template's (`generic::pod_spec`),
/// then what a pod gets beyond them; its phase is Pending until its node
/// reports. A number Kubernetes' Go types hold as a plain int (a probe's
/// periods and thresholds, a host port) is unset when 0.
///
/// `content` is the document's fields (all but apiVersion, kind and
/// metadata), parsed: the writer defaults and admits a pod on one parse.
pub fn pod_content(content: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    super::generic::content_defaults(super::Kind::Pod, content);
    let spec = content
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    if spec.is_object() {
        super::generic::pod_spec(spec, Some("Always"));
        pod_document_spec(spec);
        // The deprecated name of `serviceAccountName`, which Kubernetes
        // takes when the other is unset (and writes back as the same).
        if let Some(deprecated) = spec["serviceAccount"].as_str().filter(|a| !a.is_empty()) {
            let deprecated = deprecated.to_owned();
            default(spec, "serviceAccountName", deprecated);
        }
    }
    let status = content
        .entry("status")
        .or_insert_with(|| Value::Object(Default::default()));
    if status.is_null() {
        *status = Value::Object(Default::default());
    }
    default(status, "phase", "Pending");
}

use super::generic::default;

/// A Deployment's or ReplicaSet's defaults, as Kubernetes gives them (and
/// as skiff gave their protobuf models): one replica; for a Deployment a
/// history of 10, a progress deadline of 600 s, and a rolling update of
/// 25% surge and 25% unavailable; and its template's pod spec what a
/// pod's gets (but its phase).
fn replicated_content(kind: super::Kind, content: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let spec = content
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    if spec.is_null() {
        *spec = Value::Object(Default::default());
    }
    default(spec, "replicas", 1);
    if kind == super::Kind::Deployment {
        default(spec, "revisionHistoryLimit", 10);
        default(spec, "progressDeadlineSeconds", 600);
        default(spec, "strategy", serde_json::json!({}));
        default(&mut spec["strategy"], "type", "RollingUpdate");
        if spec["strategy"]["type"] == "RollingUpdate" {
            let strategy = &mut spec["strategy"];
            default(strategy, "rollingUpdate", serde_json::json!({}));
            let rolling = &mut strategy["rollingUpdate"];
            default(rolling, "maxSurge", DEFAULT_ROLLING_PERCENT);
            default(rolling, "maxUnavailable", DEFAULT_ROLLING_PERCENT);
        }
    }
    if let Some(pod) = spec.pointer_mut("/template/spec").filter(|p| p.is_object()) {
        super::generic::pod_spec(pod, Some("Always"));
        pod_document_spec(pod);
    }
    // Written, empty, from its creation on, as Kubernetes writes it (the
    // Python client's models require it).
    let status = content
        .entry("status")
        .or_insert_with(|| Value::Object(Default::default()));
    if status.is_null() {
        *status = Value::Object(Default::default());
    }
}

/// Sets a number field that is missing, null or 0.
fn default_number(at: &mut serde_json::Value, field: &str, value: i64) {
    if at.get(field).is_some_and(|v| v.as_i64() == Some(0)) {
        at[field] = value.into();
    }
    default(at, field, value);
}

/// What a pod's spec gets beyond a template's defaults.
fn pod_document_spec(spec: &mut serde_json::Value) {
    use serde_json::Value;
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    for list in ["containers", "initContainers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            container_document(c);
            // A pod in the host's network listens on the node's ports
            // themselves: Kubernetes writes each as a host port.
            let ports = c.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten().filter(|_| host_network) {
                if let Some(number) = port.get("containerPort").cloned() {
                    if port
                        .get("hostPort")
                        .is_none_or(|p| p.is_null() || p.as_i64() == Some(0))
                    {
                        port["hostPort"] = number;
                    }
                }
            }
        }
    }
    let tolerations = spec.get_mut("tolerations").and_then(Value::as_array_mut);
    for t in tolerations.into_iter().flatten() {
        default(t, "operator", "Equal");
    }
    let volumes = spec.get_mut("volumes").and_then(Value::as_array_mut);
    for v in volumes.into_iter().flatten() {
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if v[source].is_object() {
                default(&mut v[source], "defaultMode", DEFAULT_VOLUME_FILE_MODE);
            }
        }
        let items = v
            .pointer_mut("/downwardAPI/items")
            .and_then(Value::as_array_mut);
        for item in items.into_iter().flatten() {
            field_ref_document(item);
        }
        let sources = v
            .pointer_mut("/projected/sources")
            .and_then(Value::as_array_mut);
        for source in sources.into_iter().flatten() {
            let items = source
                .pointer_mut("/downwardAPI/items")
                .and_then(Value::as_array_mut);
            for item in items.into_iter().flatten() {
                field_ref_document(item);
            }
            if source["serviceAccountToken"].is_object() {
                default(
                    &mut source["serviceAccountToken"],
                    "expirationSeconds",
                    DEFAULT_TOKEN_EXPIRATION_SECONDS,
                );
            }
        }
        // Kubernetes writes the unchecked type as "".
        if let Some(host_path) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
            host_path.entry("type").or_insert_with(|| "".into());
        }
    }
}

/// A field selector's apiVersion (at `fieldRef` of `at`) is `v1` unless
/// set.
fn field_ref_document(at: &mut serde_json::Value) {
    if at["fieldRef"].is_object() {
        default(&mut at["fieldRef"], "apiVersion", "v1");
    }
}

fn container_document(c: &mut serde_json::Value) {
    use serde_json::Value;
    let env = c.get_mut("env").and_then(Value::as_array_mut);
    for e in env.into_iter().flatten() {
        if e["valueFrom"].is_object() {
            field_ref_document(&mut e["valueFrom"]);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = c.get_mut(probe).filter(|p| p.is_object()) else {
            continue;
        };
        default_number(probe, "timeoutSeconds", 1);
        default_number(probe, "periodSeconds", 10);
        default_number(probe, "successThreshold", 1);
        default_number(probe, "failureThreshold", 3);
        http_get_document(probe);
    }
    for hook in ["postStart", "preStop"] {
        if let Some(hook) = c.pointer_mut(&format!("/lifecycle/{hook}")) {
            http_get_document(hook);
        }
    }
}

/// An httpGet action (at `httpGet` of `at`) asks for `/` over HTTP unless
/// it says otherwise.
fn http_get_document(at: &mut serde_json::Value) {
    if at["httpGet"].is_object() {
        default(&mut at["httpGet"], "path", "/");
        default(&mut at["httpGet"], "scheme", "HTTP");
    }
}

/// Defaults of a pod spec in its protobuf model (a pod of an older release's
/// client).
pub fn pod_spec(spec: &mut v1::PodSpec) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = "Always".to_owned();
    }
    spec.termination_grace_period_seconds.get_or_insert(30);
    if spec.dns_policy.is_empty() {
        spec.dns_policy = "ClusterFirst".to_owned();
    }
    // `enableServiceLinks` is left unset (the agent takes it as true, as
    // Kubernetes defaults it): writing it into templates stored before
    // would change their hash, and re-applying an unchanged Deployment
    // would roll it.
    if spec.scheduler_name.is_empty() {
        spec.scheduler_name = "default-scheduler".to_owned();
    }
    let host_network = spec.host_network;
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut())
    {
        container(c);
        // A pod in the host's network listens on the node's ports
        // themselves: Kubernetes writes each as a host port.
        if host_network {
            for p in &mut c.ports {
                if p.host_port == 0 {
                    p.host_port = p.container_port;
                }
            }
        }
    }
    for t in &mut spec.tolerations {
        if t.operator.is_empty() {
            t.operator = "Equal".to_owned();
        }
    }
    for v in &mut spec.volumes {
        volume(v);
    }
}

fn volume(v: &mut v1::Volume) {
    if let Some(c) = v.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
        for item in &mut d.items {
            field_ref(item.field_ref.as_mut());
        }
    }
    if let Some(p) = v.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_VOLUME_FILE_MODE);
        for source in &mut p.sources {
            for item in source.downward_api.iter_mut().flat_map(|d| &mut d.items) {
                field_ref(item.field_ref.as_mut());
            }
            if let Some(t) = source.service_account_token.as_mut() {
                t.expiration_seconds
                    .get_or_insert(DEFAULT_TOKEN_EXPIRATION_SECONDS);
            }
        }
    }
    if let Some(h) = v.host_path.as_mut() {
        // Kubernetes writes the unchecked type as "".
        h.r#type.get_or_insert_with(String::new);
    }
}

/// A field selector's apiVersion is `v1` unless set.
fn field_ref(selector: Option<&mut v1::ObjectFieldSelector>) {
    if let Some(s) = selector {
        if s.api_version.is_empty() {
            s.api_version = "v1".to_owned();
        }
    }
}

fn container(c: &mut v1::Container) {
    if c.image_pull_policy.is_empty() {
        c.image_pull_policy = default_pull_policy(&c.image).to_owned();
    }
    if c.termination_message_path.is_empty() {
        c.termination_message_path = "/dev/termination-log".to_owned();
    }
    if c.termination_message_policy.is_empty() {
        c.termination_message_policy = "File".to_owned();
    }
    for p in &mut c.ports {
        if p.protocol.is_empty() {
            p.protocol = "TCP".to_owned();
        }
    }
    for e in &mut c.env {
        field_ref(e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()));
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if probe.timeout_seconds == 0 {
            probe.timeout_seconds = 1;
        }
        if probe.period_seconds == 0 {
            probe.period_seconds = 10;
        }
        if probe.success_threshold == 0 {
            probe.success_threshold = 1;
        }
        if probe.failure_threshold == 0 {
            probe.failure_threshold = 3;
        }
        http_get(probe.http_get.as_mut());
    }
    if let Some(lifecycle) = c.lifecycle.as_mut() {
        for hook in [lifecycle.post_start.as_mut(), lifecycle.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            http_get(hook.http_get.as_mut());
        }
    }
}

/// An httpGet action (of a probe or a lifecycle hook) asks for `/` over
/// HTTP unless it says otherwise.
fn http_get(action: Option<&mut v1::HttpGetAction>) {
    if let Some(h) = action {
        if h.path.is_empty() {
            h.path = "/".to_owned();
        }
        if h.scheme.is_empty() {
            h.scheme = "HTTP".to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoObject;

    #[test]
    fn a_pod_document_gets_the_models_defaults_and_its_deprecated_account_name_counts() {
        let content = serde_json::json!({"spec": {
            "serviceAccount": "build",
            "hostNetwork": true,
            "tolerations": [{"key": "k", "value": "v"}],
            "containers": [{
                "name": "c", "image": "busybox:1.36",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"port": 8080}, "periodSeconds": 0},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            }],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
            "affinity": {"nodeAffinity": {}},
        }});
        let mut object = crate::generic::document("v1", "Pod", None, content).into_object();
        apply_defaults(&mut object);
        let Some(Body::Generic(document)) = &object.kind else {
            panic!("not a document: {object:?}");
        };
        let content = serde_json::Value::Object(crate::generic::content(document));
        let spec = &content["spec"];
        assert_eq!(spec["serviceAccountName"], "build");
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["tolerations"][0]["operator"], "Equal");
        assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 0o644);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["ports"][0]["hostPort"], 8080, "in the host's network");
        let probe = &c["readinessProbe"];
        assert_eq!(
            (
                &probe["periodSeconds"],
                &probe["timeoutSeconds"],
                &probe["failureThreshold"]
            ),
            (
                &serde_json::json!(10),
                &serde_json::json!(1),
                &serde_json::json!(3)
            )
        );
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(content["status"]["phase"], "Pending");
        // A field no default touches is kept as written, and no check
        // leaves a null behind.
        assert_eq!(spec["affinity"], serde_json::json!({"nodeAffinity": {}}));
        assert!(!document_has_null(&content), "{content}");
    }

    fn document_has_null(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Null => true,
            serde_json::Value::Array(items) => items.iter().any(document_has_null),
            serde_json::Value::Object(fields) => fields.values().any(document_has_null),
            _ => false,
        }
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn deployment_gets_kubernetes_defaults() {
        // A Deployment is a document; the model's defaults, on it.
        let mut o = crate::legacy_bodies::to_document(
            v1::Deployment {
                spec: Some(v1::DeploymentSpec {
                    template: Some(Box::new(v1::PodTemplateSpec {
                        spec: Some(v1::PodSpec {
                            containers: vec![v1::Container {
                                name: "c".into(),
                                image: "busybox:1.36".into(),
                                ports: vec![v1::ContainerPort {
                                    container_port: 80,
                                    ..Default::default()
                                }],
                                readiness_probe: Some(Box::default()),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        );
        apply_defaults(&mut o);
        assert!(matches!(o.kind, Some(Body::Generic(_))));
        // Its protobuf model holds every default.
        let model = crate::legacy_bodies::to_legacy(o.clone()).unwrap();
        let Some(Body::Deployment(d)) = &model.kind else {
            panic!()
        };
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.r#type, "RollingUpdate");
        let rolling = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(
            (rolling.max_surge.as_str(), rolling.max_unavailable.as_str()),
            ("25%", "25%")
        );
        let pod = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy, "Always");
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        assert_eq!(pod.containers[0].image_pull_policy, "IfNotPresent");
        assert_eq!(pod.containers[0].ports[0].protocol, "TCP");
        let probe = pod.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!((probe.period_seconds, probe.failure_threshold), (10, 3));
        let Some(Body::Generic(g)) = &o.kind else {
            panic!()
        };
        assert_eq!(crate::generic::content(g)["status"], serde_json::json!({}));
        // Defaulting twice changes nothing more.
        let once = o.clone();
        apply_defaults(&mut o);
        assert_eq!(o, once);
        // A Recreate Deployment gets no rolling update.
        let mut recreate = crate::manifest::parse_manifest(
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {strategy: {type: Recreate}}\n",
            true,
        )
        .unwrap()
        .objects
        .remove(0);
        apply_defaults(&mut recreate);
        let Some(Body::Generic(g)) = &recreate.kind else {
            panic!()
        };
        let content = crate::generic::content(g);
        assert_eq!(
            content["spec"]["strategy"],
            serde_json::json!({"type": "Recreate"})
        );
        // A status, empty, from its creation on.
        assert_eq!(content["status"], serde_json::json!({}));
    }

    #[test]
    fn volumes_get_their_file_mode_and_host_paths_an_unchecked_type() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox:1.36
    env:
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
  volumes:
  - {name: a, configMap: {name: cm}}
  - {name: b, secret: {secretName: s, defaultMode: 256}}
  - {name: c, hostPath: {path: /srv}}
  - {name: d, downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}}
  - {name: e, projected: {sources: [{configMap: {name: cm}}]}}
  - {name: f, emptyDir: {}}
"#;
        let mut o = crate::manifest::parse_manifest("p.yaml", text, true)
            .unwrap()
            .objects
            .remove(0);
        apply_defaults(&mut o);
        let json = crate::manifest::to_json_value(&o);
        let volumes = &json["spec"]["volumes"];
        assert_eq!(volumes[0]["configMap"]["defaultMode"], 420);
        assert_eq!(
            volumes[1]["secret"]["defaultMode"], 256,
            "set ones are kept"
        );
        assert_eq!(volumes[2]["hostPath"]["type"], "");
        assert_eq!(volumes[3]["downwardAPI"]["defaultMode"], 420);
        let item = &volumes[3]["downwardAPI"]["items"][0];
        assert_eq!(item["fieldRef"]["apiVersion"], "v1");
        assert_eq!(volumes[4]["projected"]["defaultMode"], 420);
        assert_eq!(volumes[5]["emptyDir"], serde_json::json!({}));
        let env = &json["spec"]["containers"][0]["env"][0];
        assert_eq!(env["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let once = o.clone();
        apply_defaults(&mut o);
        assert_eq!(o, once);
    }

    #[test]
    fn host_network_ports_and_lifecycle_hooks_get_kubernetes_defaults() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  hostNetwork: true
  hostPID: true
  imagePullSecrets: [{name: regcred}]
  containers:
  - name: c
    image: busybox:1.36
    ports: [{containerPort: 8080}, {containerPort: 9090, hostPort: 9090}]
    lifecycle:
      postStart: {httpGet: {port: 8080}}
      preStop: {sleep: {seconds: 3}}
"#;
        let mut o = crate::manifest::parse_manifest("p.yaml", text, true)
            .unwrap()
            .objects
            .remove(0);
        apply_defaults(&mut o);
        let json = crate::manifest::to_json_value(&o);
        let spec = &json["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["hostPID"], true, "{spec}");
        assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred");
        let c = &spec["containers"][0];
        assert_eq!(c["ports"][0]["hostPort"], 8080, "the container's port");
        assert_eq!(c["ports"][1]["hostPort"], 9090);
        let post_start = &c["lifecycle"]["postStart"]["httpGet"];
        assert_eq!(
            (post_start["path"].as_str(), post_start["scheme"].as_str()),
            (Some("/"), Some("HTTP"))
        );
        assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 3);
        let once = o.clone();
        apply_defaults(&mut o);
        assert_eq!(o, once);
    }
}
