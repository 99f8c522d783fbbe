//! `skiff ctl describe`: an object in kubectl's describe layout, with its
//! conditions and their reasons (its Events, which the leader keeps in
//! memory, are not listed here yet: `skiff ctl get events` and `kubectl
//! describe` show them).

use std::fmt::Write as _;

use skiff_objects::pods::{self, Pod};
use skiff_objects::typed::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};
use skiff_objects::typed::meta::Time;
use skiff_objects::{endpoints, namespaces, owners, secrets, services, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

fn map(m: &std::collections::BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "<none>".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n                ")
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<16}{value}", format!("{key}:"));
}

fn conditions(out: &mut String, rows: Vec<[String; 4]>) {
    let _ = writeln!(out, "Conditions:");
    if rows.is_empty() {
        let _ = writeln!(out, "  <none>");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<16}{:<9}{:<28}MESSAGE",
        "TYPE", "STATUS", "REASON"
    );
    for [t, s, r, m] in rows {
        let _ = writeln!(out, "  {t:<16}{s:<9}{r:<28}{m}");
    }
}

/// The describe text for one object.
pub fn describe(object: &Object) -> String {
    let meta = object.meta();
    let mut out = String::new();
    line(&mut out, "Name", &meta.name);
    if !meta.namespace.is_empty() {
        line(&mut out, "Namespace", &meta.namespace);
    }
    line(&mut out, "Labels", map(&meta.labels));
    line(&mut out, "Annotations", map(&meta.annotations));
    line(&mut out, "Created", &meta.creation_timestamp);
    if let Some(owner) = owners::controller(meta) {
        line(
            &mut out,
            "Controlled By",
            format!("{}/{}", owner.kind, owner.name),
        );
    }
    // A Deployment or ReplicaSet in its protobuf model, which holds every
    // field described.
    let model = skiff_objects::legacy_bodies::replicated_in_model(object);
    let object = &*model;
    match &object.kind {
        Some(Body::Pod(_) | Body::Generic(_)) if pods::is_pod(object) => {
            if let Some(p) = pods::read(object) {
                pod(&mut out, &p);
            }
        }
        Some(Body::Deployment(d)) => {
            let spec = d.spec.clone().unwrap_or_default();
            let status = d.status.clone().unwrap_or_default();
            line(
                &mut out,
                "Replicas",
                format!(
                    "{} desired | {} updated | {} total | {} available | {} unavailable",
                    spec.replicas.unwrap_or(1),
                    status.updated_replicas,
                    status.replicas,
                    status.available_replicas,
                    status.unavailable_replicas
                ),
            );
            let strategy = spec.strategy.clone().unwrap_or_default();
            line(&mut out, "StrategyType", &strategy.r#type);
            if let Some(r) = strategy.rolling_update {
                line(
                    &mut out,
                    "RollingUpdate",
                    format!(
                        "{} max unavailable, {} max surge",
                        r.max_unavailable, r.max_surge
                    ),
                );
            }
            conditions(
                &mut out,
                status
                    .conditions
                    .into_iter()
                    .map(|c| [c.r#type, c.status, c.reason, c.message])
                    .collect(),
            );
        }
        Some(Body::ReplicaSet(r)) => {
            let spec = r.spec.clone().unwrap_or_default();
            let status = r.status.clone().unwrap_or_default();
            line(
                &mut out,
                "Replicas",
                format!(
                    "{} current / {} desired",
                    status.replicas,
                    spec.replicas.unwrap_or(1)
                ),
            );
            line(
                &mut out,
                "Pods Status",
                format!(
                    "{} Ready / {} Available",
                    status.ready_replicas, status.available_replicas
                ),
            );
        }
        Some(Body::Node(n)) => {
            let spec = n.spec.clone().unwrap_or_default();
            let status = n.status.clone().unwrap_or_default();
            line(&mut out, "Unschedulable", spec.unschedulable);
            let taints: Vec<String> = spec
                .taints
                .iter()
                .map(|t| format!("{}={}:{}", t.key, t.value, t.effect))
                .collect();
            line(
                &mut out,
                "Taints",
                if taints.is_empty() {
                    "<none>".to_owned()
                } else {
                    taints.join(", ")
                },
            );
            line(
                &mut out,
                "PodCIDR",
                if spec.pod_cidr.is_empty() {
                    "<none>"
                } else {
                    &spec.pod_cidr
                },
            );
            conditions(
                &mut out,
                status
                    .conditions
                    .iter()
                    .map(|c| {
                        [
                            c.r#type.clone(),
                            c.status.clone(),
                            c.reason.clone(),
                            c.message.clone(),
                        ]
                    })
                    .collect(),
            );
            let _ = writeln!(out, "Addresses:");
            for a in &status.addresses {
                let _ = writeln!(out, "  {}: {}", a.r#type, a.address);
            }
            let _ = writeln!(out, "Capacity:       {}", map(&status.capacity));
            let _ = writeln!(out, "Allocatable:    {}", map(&status.allocatable));
        }
        Some(Body::Service(_) | Body::Generic(_)) if services::is_service(object) => {
            let read = services::read(object).unwrap_or_default();
            line(&mut out, "Selector", map(services::selector(&read)));
            line(&mut out, "Type", services::type_of(&read));
            for p in services::ports(&read) {
                let target = match services::target_port(p) {
                    Some(services::IntOrString::Int(n)) => n.to_string(),
                    Some(services::IntOrString::String(name)) => name.clone(),
                    None => p.port.to_string(),
                };
                line(
                    &mut out,
                    "Port",
                    format!(
                        "{} {}/{} -> {target}",
                        services::port_name(p),
                        p.port,
                        services::protocol(p)
                    ),
                );
            }
        }
        Some(Body::Endpoints(_) | Body::Generic(_)) if endpoints::is_endpoints(object) => {
            let read = endpoints::read(object).unwrap_or_default();
            for s in endpoints::subsets(&read) {
                let ips = |list: &[endpoints::EndpointAddress]| {
                    list.iter()
                        .map(|a| a.ip.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                line(&mut out, "Addresses", ips(endpoints::ready(s)));
                line(&mut out, "NotReady", ips(endpoints::not_ready(s)));
            }
        }
        Some(Body::Namespace(_) | Body::Generic(_)) if namespaces::is_namespace(object) => {
            let phase = namespaces::phase(object).unwrap_or_default();
            line(&mut out, "Status", phase);
        }
        Some(Body::Secret(_) | Body::Generic(_)) if secrets::is_secret(object) => {
            // Like kubectl: sizes, never the values.
            let secret = secrets::read(object).unwrap_or_default();
            line(&mut out, "Type", secrets::type_of(&secret));
            for (key, value) in secrets::values(&secret) {
                line(&mut out, &key, format!("{} bytes", value.len()));
            }
        }
        Some(
            Body::Pod(_)
            | Body::Secret(_)
            | Body::Namespace(_)
            | Body::Endpoints(_)
            | Body::Service(_)
            | Body::Generic(_),
        )
        | None => {}
    }
    out
}

fn pod(out: &mut String, p: &Pod) {
    let (no_spec, no_status) = (Default::default(), Default::default());
    let spec: &PodSpec = p.spec.as_ref().unwrap_or(&no_spec);
    let status: &PodStatus = p.status.as_ref().unwrap_or(&no_status);
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_owned()
        } else {
            s.to_owned()
        }
    };
    line(out, "Node", or_none(pods::node_name(p)));
    line(out, "Status", pods::phase(p));
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        line(out, "Reason", reason);
    }
    line(out, "IP", or_none(pods::ip(p)));
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if !init_containers.is_empty() {
        let _ = writeln!(out, "Init Containers:");
        let statuses = status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default();
        containers(out, init_containers, statuses);
    }
    let _ = writeln!(out, "Containers:");
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    containers(out, &spec.containers, statuses);
    let text = |s: Option<String>| s.unwrap_or_default();
    conditions(
        out,
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                let (reason, message) = (c.reason.clone(), c.message.clone());
                [
                    c.type_.clone(),
                    c.status.clone(),
                    text(reason),
                    text(message),
                ]
            })
            .collect(),
    );
}

/// Each container with its state, readiness and restarts (and the message
/// it left when it ended), as `kubectl describe pod` lists them.
fn containers(out: &mut String, specs: &[Container], statuses: &[ContainerStatus]) {
    for c in specs {
        let _ = writeln!(out, "  {}:", c.name);
        let _ = writeln!(
            out,
            "    Image:        {}",
            c.image.as_deref().unwrap_or("")
        );
        if let Some(s) = statuses.iter().find(|s| s.name == c.name) {
            let state = s.state.clone().unwrap_or_default();
            let mut message = String::new();
            let text = if let Some(r) = state.running {
                let since = r.started_at.as_ref().map(kube_text).unwrap_or_default();
                format!("Running (since {since})")
            } else if let Some(w) = state.waiting {
                format!("Waiting ({})", w.reason.unwrap_or_default())
            } else if let Some(t) = state.terminated {
                message = t.message.unwrap_or_default();
                format!(
                    "Terminated ({}, exit code {})",
                    t.reason.unwrap_or_default(),
                    t.exit_code
                )
            } else {
                "Unknown".to_owned()
            };
            let _ = writeln!(out, "    State:        {text}");
            if !message.is_empty() {
                let _ = writeln!(out, "    Message:      {}", message.trim_end());
            }
            let _ = writeln!(out, "    Ready:        {}", s.ready);
            let _ = writeln!(out, "    Restarts:     {}", s.restart_count);
        }
    }
}

/// A time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
fn kube_text(time: &Time) -> String {
    skiff_objects::rfc3339(std::time::SystemTime::from(time.0))
}
