//! Fields skiff accepts and stores but does not act on yet (Localhost
//! seccomp profiles, Jobs' per-index back-off and success policies, a
//! Service's requested `loadBalancerIP` and `trafficDistribution` hints),
//! and the deprecated `tcpSocket` lifecycle hook, which Kubernetes
//! accepts and the kubelet does not run. A Service's types, traffic
//! policies (`internalTrafficPolicy: Local` included),
//! `publishNotReadyAddresses` and health check ports are acted on by the
//! agents and the masters. Writes that use fields not acted on are
//! answered with a warning per field (the REST API's `Warning` header,
//! which kubectl prints), so nothing is silently ignored.

use serde_json::Value;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::Kind;

/// One warning per field of `object` that skiff does not act on yet.
pub fn warnings(object: &Object) -> Vec<String> {
    let mut out = Vec::new();
    match object.kind.as_ref() {
        Some(Body::Pod(pod)) => pod_spec(pod.spec.as_ref(), "spec", &mut out),
        Some(body @ Body::Generic(generic)) => {
            let content = super::generic::content(generic);
            let spec = content.get("spec").unwrap_or(&Value::Null);
            match super::body_kind(body) {
                Some(Kind::Job) => {
                    job_spec(spec, "spec", &mut out);
                    let template = &spec["template"]["spec"];
                    pod_document(template, "spec.template.spec", &mut out);
                }
                Some(Kind::CronJob) => {
                    let job = &spec["jobTemplate"]["spec"];
                    job_spec(job, "spec.jobTemplate.spec", &mut out);
                    let template = &job["template"]["spec"];
                    let path = "spec.jobTemplate.spec.template.spec";
                    pod_document(template, path, &mut out);
                }
                // Their pods carry every field of the template (a
                // DaemonSet places its pods by their required node
                // affinity itself; the scheduler places the others').
                Some(Kind::DaemonSet | Kind::StatefulSet | Kind::Deployment | Kind::ReplicaSet) => {
                    let template = &spec["template"]["spec"];
                    pod_document(template, "spec.template.spec", &mut out);
                }
                Some(Kind::Service) => service_spec(spec, &mut out),
                Some(Kind::Pod) => pod_document(spec, "spec", &mut out),
                _ => {}
            }
        }
        _ => {}
    }
    out
}

/// Service fields no part of skiff acts on: a requested load balancer
/// address (deprecated in Kubernetes; the built-in load balancer answers
/// on the nodes' addresses) and traffic distribution hints (every
/// endpoint is as near as any to skiff's Service rules).
fn service_spec(spec: &Value, out: &mut Vec<String>) {
    let fields = [
        (
            "loadBalancerIP",
            "the built-in load balancer answers on the nodes' addresses",
        ),
        (
            "trafficDistribution",
            "traffic goes to every ready endpoint alike",
        ),
    ];
    for (field, why) in fields {
        if !spec[field].is_null() && spec[field] != "" {
            out.push(format!(
                "spec.{field}: skiff does not act on this field yet ({why})"
            ));
        }
    }
}

/// Job fields of per-index back-off and success policies.
fn job_spec(spec: &Value, path: &str, out: &mut Vec<String>) {
    for field in ["backoffLimitPerIndex", "maxFailedIndexes", "successPolicy"] {
        if !spec[field].is_null() {
            out.push(format!(
                "{path}.{field}: skiff does not act on {field} yet; the Job's backoffLimit and completions decide"
            ));
        }
    }
}

/// A pod document's `spec` (at `path`: a pod's, or a workload template's,
/// whose pods carry every field of it): what [`pod_spec`] warns about,
/// read as the protobuf model (which holds every field skiff acts on),
/// and each field that model has no place for, which nothing of skiff
/// reads, but a required node affinity (acted on by the scheduler for a
/// pod and for the pods of a Job's, CronJob's, StatefulSet's, Deployment's
/// or ReplicaSet's template,
/// by a DaemonSet for its template). A spec that does not read as the
/// model gets none (validation says why).
fn pod_document(spec: &Value, path: &str, out: &mut Vec<String>) {
    if spec.is_null() {
        return;
    }
    let mut said = spec.clone();
    super::generic::strip_nulls(&mut said);
    let Ok(model) = serde_json::from_value::<v1::PodSpec>(said.clone()) else {
        return;
    };
    pod_spec(Some(&model), path, out);
    let mut kept = serde_json::to_value(&model).unwrap_or_default();
    // Of what was said, what Kubernetes knows (an unknown field is the
    // decoder's to refuse or warn about).
    let Ok(known) = crate::typed::decode::<crate::pods::PodSpec>(said) else {
        return;
    };
    let mut said = crate::typed::encode(&known);
    // The deprecated name of `serviceAccountName`, read as that.
    if let Some(fields) = said.as_object_mut() {
        fields.remove("serviceAccount");
    }
    if let Some(Value::Object(node)) = said.pointer_mut("/affinity/nodeAffinity") {
        node.remove("requiredDuringSchedulingIgnoredDuringExecution");
    }
    super::generic::strip_zeros(&mut said);
    super::generic::strip_zeros(&mut kept);
    left_out(&said, &kept, path, out);
}

/// A warning for each field of `said` that `kept` (what a model read of
/// it) lacks, at `at`.
fn left_out(said: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (said, kept) {
        (Value::Object(said), Value::Object(kept)) => {
            for (key, value) in said {
                let path = format!("{at}.{key}");
                match kept.get(key) {
                    // An object is named by its fields, so that what is
                    // acted on in it is not named.
                    None if value.is_object() => {
                        left_out(value, &Value::Object(Default::default()), &path, out)
                    }
                    None => out.push(format!("{path}: skiff does not act on this field yet")),
                    Some(kept) => left_out(value, kept, &path, out),
                }
            }
        }
        (Value::Array(said), Value::Array(kept)) if said.len() == kept.len() => {
            for (i, (a, b)) in said.iter().zip(kept).enumerate() {
                left_out(a, b, &format!("{at}.{i}"), out);
            }
        }
        _ => {}
    }
}

fn pod_spec(spec: Option<&v1::PodSpec>, path: &str, out: &mut Vec<String>) {
    let Some(spec) = spec else {
        return;
    };
    for (group, list) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let Some(lifecycle) = &c.lifecycle else {
                continue;
            };
            for (hook, handler) in [
                ("postStart", &lifecycle.post_start),
                ("preStop", &lifecycle.pre_stop),
            ] {
                if handler.as_ref().is_some_and(|h| h.tcp_socket.is_some()) {
                    out.push(format!(
                        "{path}.{group}.{i}.lifecycle.{hook}.tcpSocket: deprecated; like the kubelet, skiff does not run tcpSocket hooks and counts the hook as failed; use exec, httpGet or sleep"
                    ));
                }
            }
        }
    }
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    let mut seccomp = vec![(format!("{path}.securityContext"), pod_seccomp)];
    for (group, list) in [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let profile = c
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref());
            seccomp.push((format!("{path}.{group}.{i}.securityContext"), profile));
        }
    }
    for (at, profile) in seccomp {
        if profile.is_some_and(|p| p.r#type == "Localhost") {
            out.push(format!(
                "{at}.seccompProfile: skiff does not load Localhost profiles; the runtime default profile applies instead"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pod_documents_fields_no_part_of_skiff_reads_are_warned_about() {
        let document = crate::generic::document(
            "v1",
            "Pod",
            None,
            serde_json::json!({"spec": {
                "containers": [{"name": "c", "image": "i"}],
                "priorityClassName": "high",
                "os": {"name": "linux"},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                               "whenUnsatisfiable": "DoNotSchedule"}],
                "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchExpressions": [
                            {"key": "zone", "operator": "Exists"}]}}]}},
                "colour": "blue",
            }}),
        );
        use crate::IntoObject;
        let mut said = warnings(&document.into_object());
        said.sort();
        assert_eq!(
            said,
            [
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution: skiff does not act on this field yet",
                "spec.os.name: skiff does not act on this field yet",
                "spec.topologySpreadConstraints: skiff does not act on this field yet",
            ],
            "the required node affinity is the scheduler's; an unknown field is the decoder's"
        );
        // A StatefulSet's, Deployment's, ReplicaSet's, Job's or CronJob's
        // pods carry every field of the template: its required node
        // affinity is acted on, by the scheduler; a DaemonSet's by the
        // DaemonSet's placement.
        let template = serde_json::json!({"template": {"spec": {
            "containers": [{"name": "c", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}},
        }}});
        let of = |kind: &str| {
            let set = crate::generic::document(
                "apps/v1",
                kind,
                None,
                serde_json::json!({"spec": template}),
            );
            warnings(&set.into_object())
        };
        assert_eq!(of("StatefulSet"), Vec::<String>::new());
        assert_eq!(of("DaemonSet"), Vec::<String>::new());
        assert_eq!(of("Deployment"), Vec::<String>::new());
        assert_eq!(of("ReplicaSet"), Vec::<String>::new());
        let of_batch = |kind: &str, spec: serde_json::Value| {
            let job = crate::generic::document("batch/v1", kind, None, spec);
            warnings(&job.into_object())
        };
        assert_eq!(
            of_batch("Job", serde_json::json!({"spec": template})),
            Vec::<String>::new()
        );
        let cron = serde_json::json!({"spec": {"jobTemplate": {"spec": template}}});
        assert_eq!(of_batch("CronJob", cron), Vec::<String>::new());
        // What no part of skiff reads is still named.
        let mut spread = template.clone();
        spread["template"]["spec"]["os"] = serde_json::json!({"name": "linux"});
        assert_eq!(
            of_batch("Job", serde_json::json!({"spec": spread})),
            ["spec.template.spec.os.name: skiff does not act on this field yet"]
        );
        let deployment = crate::generic::document(
            "apps/v1",
            "Deployment",
            None,
            serde_json::json!({"spec": spread}),
        );
        assert_eq!(
            warnings(&deployment.into_object()),
            ["spec.template.spec.os.name: skiff does not act on this field yet"]
        );
    }

    use super::*;

    #[test]
    fn each_field_skiff_ignores_gets_a_warning_naming_it() {
        let pod = Object {
            kind: Some(Body::Pod(v1::Pod {
                spec: Some(v1::PodSpec {
                    host_network: true,
                    share_process_namespace: Some(true),
                    containers: vec![v1::Container {
                        lifecycle: Some(Box::new(v1::Lifecycle {
                            pre_stop: Some(v1::LifecycleHandler {
                                tcp_socket: Some(v1::TcpSocketAction::default()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    init_containers: vec![v1::Container {
                        security_context: Some(Box::new(v1::SecurityContext {
                            seccomp_profile: Some(v1::SeccompProfile {
                                r#type: "Localhost".into(),
                                localhost_profile: "audit.json".into(),
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    volumes: vec![
                        v1::Volume {
                            name: "scratch".into(),
                            empty_dir: Some(Box::new(v1::EmptyDirVolumeSource::default())),
                            ..Default::default()
                        },
                        v1::Volume {
                            name: "data".into(),
                            persistent_volume_claim: Some(Box::new(
                                v1::PersistentVolumeClaimVolumeSource {
                                    claim_name: "data".into(),
                                    read_only: false,
                                },
                            )),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let w = warnings(&pod);
        assert_eq!(w.len(), 2, "{w:?}");
        // hostNetwork and shareProcessNamespace are acted on: no warning.
        assert!(
            !w.iter().any(|w| w.contains("shareProcessNamespace")),
            "{w:?}"
        );
        let tcp_hook = "spec.containers.0.lifecycle.preStop.tcpSocket: deprecated";
        assert!(w[0].starts_with(tcp_hook), "{w:?}");
        // Init containers run: only the profile skiff cannot load is named.
        let localhost = "spec.initContainers.0.securityContext.seccompProfile:";
        assert!(w[1].starts_with(localhost), "{w:?}");
        // Volumes skiff mounts (persistentVolumeClaim ones too) are not
        // warned about.

        let service = |spec: Value| {
            let meta = v1::ObjectMeta::default();
            let spec = crate::typed::decode(spec).unwrap();
            crate::services::object(meta, spec, None)
        };
        // NodePort and LoadBalancer Services and both traffic policies are
        // acted on: no warning.
        for t in ["NodePort", "LoadBalancer", "ClusterIP"] {
            assert!(warnings(&service(serde_json::json!({"type": t}))).is_empty());
        }
        let local = service(serde_json::json!({
            "internalTrafficPolicy": "Local",
            "externalTrafficPolicy": "Local",
            "publishNotReadyAddresses": true,
        }));
        assert!(warnings(&local).is_empty());
        // A requested load balancer address and traffic distribution hints
        // are not.
        let hinted = service(serde_json::json!({
            "type": "LoadBalancer",
            "loadBalancerIP": "192.0.2.7",
            "trafficDistribution": "PreferClose",
        }));
        let w = warnings(&hinted);
        assert_eq!(w.len(), 2, "{w:?}");
        let empty = service(serde_json::json!({"loadBalancerIP": ""}));
        assert!(warnings(&empty).is_empty());
        assert!(
            w[0].starts_with("spec.loadBalancerIP: skiff does not act"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("spec.trafficDistribution: skiff does not act"),
            "{w:?}"
        );

        let plain = Object {
            kind: Some(Body::Pod(v1::Pod::default())),
        };
        assert!(warnings(&plain).is_empty());
    }

    #[test]
    fn job_policies_skiff_does_not_act_on_are_named() {
        let generic = |kind: &str, spec: Value| Object {
            kind: Some(Body::Generic(v1::GenericObject {
                api_version: "batch/v1".into(),
                kind: kind.into(),
                metadata: Some(v1::ObjectMeta::default()),
                content: serde_json::to_vec(&serde_json::json!({ "spec": spec })).unwrap(),
            })),
        };
        let job = generic(
            "Job",
            serde_json::json!({"backoffLimitPerIndex": 1, "completions": 3}),
        );
        let w = warnings(&job);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("spec.backoffLimitPerIndex:"), "{w:?}");
        let cron = generic(
            "CronJob",
            serde_json::json!({"jobTemplate": {"spec": {"successPolicy": {"rules": []}}}}),
        );
        let w = warnings(&cron);
        assert!(
            w[0].starts_with("spec.jobTemplate.spec.successPolicy:"),
            "{w:?}"
        );
        assert!(warnings(&generic("Job", serde_json::json!({"completions": 1}))).is_empty());
    }
}
