//! kubectl-style tables for `skiff ctl get`: the same columns kubectl
//! prints for each kind, padded with three spaces.

use std::time::{Duration, SystemTime};

use skiff_objects::{endpoints, namespaces, pods, secrets, services, Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::resource_ref;

const NONE: &str = "<none>";

/// Renders objects of one kind as a table.
pub fn render(
    kind: Kind,
    objects: &[Object],
    wide: bool,
    with_namespace: bool,
    now: SystemTime,
) -> String {
    table(kind, objects, wide, with_namespace, now, false)
}

/// As [`render`], with each name written `KIND/NAME` (`deployment.apps/web`):
/// how kubectl shows several kinds at once (`get pods,svc`).
pub fn render_with_kind(
    kind: Kind,
    objects: &[Object],
    wide: bool,
    with_namespace: bool,
    now: SystemTime,
) -> String {
    table(kind, objects, wide, with_namespace, now, true)
}

fn table(
    kind: Kind,
    objects: &[Object],
    wide: bool,
    with_namespace: bool,
    now: SystemTime,
    with_kind: bool,
) -> String {
    let mut header: Vec<&str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::Service => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        Kind::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        generic => return render_generic(generic, objects, wide, with_namespace, now, with_kind),
    };
    if wide {
        match kind {
            Kind::Pod => header.extend(["IP", "NODE"]),
            Kind::Deployment | Kind::ReplicaSet => {
                header.extend(["CONTAINERS", "IMAGES", "SELECTOR"])
            }
            Kind::Service => header.push("SELECTOR"),
            Kind::Node => header.extend([
                "INTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ]),
            _ => {}
        }
    }
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for object in objects {
        let mut row = object_row(object, wide, now);
        if let Some(name) = row.first_mut().filter(|_| with_kind) {
            *name = resource_ref(kind, name);
        }
        if with_namespace {
            row.insert(0, object.meta().namespace.clone());
        }
        rows.push(row);
    }
    format_rows(&rows)
}

/// A table of a kind held as generic objects, with the columns the REST
/// API's Tables give it (`skiff_master::rest::table`).
fn render_generic(
    kind: Kind,
    objects: &[Object],
    wide: bool,
    with_namespace: bool,
    now: SystemTime,
    with_kind: bool,
) -> String {
    use skiff_master::rest::table;
    let now = time::OffsetDateTime::from(now);
    let columns = table::columns(kind.name());
    let shown: Vec<usize> = (0..columns.len())
        .filter(|&i| wide || columns[i].priority == 0)
        .collect();
    let mut header: Vec<String> = shown
        .iter()
        .map(|&i| columns[i].name.to_uppercase())
        .collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".to_owned());
    }
    let mut rows = vec![header];
    for object in objects {
        let value = skiff_objects::manifest::to_json_value(object);
        let cells = table::cells(kind.name(), &value, now);
        let mut row: Vec<String> = shown
            .iter()
            .map(|&i| match cells.get(i) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            })
            .collect();
        if let Some(name) = row.first_mut().filter(|_| with_kind) {
            *name = resource_ref(kind, name);
        }
        if with_namespace {
            row.insert(0, object.meta().namespace.clone());
        }
        rows.push(row);
    }
    format_rows(&rows)
}

/// Rows as aligned columns, three spaces apart (the first row is the
/// header), as kubectl prints them; also for the other client commands'
/// lists.
pub fn format_rows(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// kubectl's age: `45s`, `3m12s`, `25m`, `5h10m`, `17h`, `3d`.
pub fn age(created: &str, now: SystemTime) -> String {
    let Ok(created) = humantime::parse_rfc3339_weak(created) else {
        return NONE.to_owned();
    };
    let secs = now
        .duration_since(created)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        NONE.to_owned()
    } else {
        s.to_owned()
    }
}

fn object_row(object: &Object, wide: bool, now: SystemTime) -> Vec<String> {
    // A Deployment or ReplicaSet in its protobuf model, which holds every
    // column.
    let model = skiff_objects::legacy_bodies::replicated_in_model(object);
    let object = &*model;
    let meta = object.meta();
    let name = meta.name.clone();
    let age = age(&meta.creation_timestamp, now);
    match &object.kind {
        Some(Body::Pod(_) | Body::Generic(_)) if pods::is_pod(object) => {
            let mut row = pod_row(object, name, age, now);
            if wide {
                let pod = pods::read(object).unwrap_or_default();
                row.push(or_none(pods::ip(&pod)));
                row.push(or_none(pods::node_name(&pod)));
            }
            row
        }
        Some(Body::Deployment(d)) => {
            let spec = d.spec.clone().unwrap_or_default();
            let status = d.status.clone().unwrap_or_default();
            let mut row = vec![
                name,
                format!("{}/{}", status.ready_replicas, spec.replicas.unwrap_or(1)),
                status.updated_replicas.to_string(),
                status.available_replicas.to_string(),
                age,
            ];
            if wide {
                row.extend(template_columns(
                    spec.template.as_deref(),
                    spec.selector.as_ref(),
                ));
            }
            row
        }
        Some(Body::ReplicaSet(r)) => {
            let spec = r.spec.clone().unwrap_or_default();
            let status = r.status.clone().unwrap_or_default();
            let mut row = vec![
                name,
                spec.replicas.unwrap_or(1).to_string(),
                status.replicas.to_string(),
                status.ready_replicas.to_string(),
                age,
            ];
            if wide {
                row.extend(template_columns(
                    spec.template.as_deref(),
                    spec.selector.as_ref(),
                ));
            }
            row
        }
        Some(Body::Service(_) | Body::Generic(_)) if services::is_service(object) => {
            let read = services::read(object).unwrap_or_default();
            let ports: Vec<String> = services::ports(&read)
                .iter()
                .map(|p| {
                    let protocol = services::protocol(p);
                    match services::node_port(p) {
                        0 => format!("{}/{protocol}", p.port),
                        node_port => format!("{}:{node_port}/{protocol}", p.port),
                    }
                })
                .collect();
            // As kubectl: ingress points, then externalIPs; a
            // LoadBalancer with neither is <pending>.
            let mut external: Vec<String> =
                services::ingress_ips(&read).map(str::to_owned).collect();
            external.extend(services::external_ips(&read).iter().cloned());
            let kind = services::type_of(&read);
            if external.is_empty() && kind == "LoadBalancer" {
                external.push("<pending>".to_owned());
            }
            let mut row = vec![
                name,
                kind.to_owned(),
                or_none(services::cluster_ip(&read)),
                if external.is_empty() {
                    NONE.to_owned()
                } else {
                    external.join(",")
                },
                if ports.is_empty() {
                    NONE.to_owned()
                } else {
                    ports.join(",")
                },
                age,
            ];
            if wide {
                row.push(labels(services::selector(&read)));
            }
            row
        }
        Some(Body::Endpoints(_) | Body::Generic(_)) if endpoints::is_endpoints(object) => {
            let read = endpoints::read(object).unwrap_or_default();
            let mut shown = Vec::new();
            for subset in endpoints::subsets(&read) {
                let ports = endpoints::ports(subset);
                for a in endpoints::ready(subset) {
                    if ports.is_empty() {
                        shown.push(a.ip.clone());
                    }
                    for p in ports {
                        shown.push(format!("{}:{}", a.ip, p.port));
                    }
                }
            }
            vec![
                name,
                if shown.is_empty() {
                    NONE.to_owned()
                } else {
                    shown.join(",")
                },
                age,
            ]
        }
        Some(Body::Node(n)) => {
            let spec = n.spec.clone().unwrap_or_default();
            let status = n.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .find(|c| c.r#type == "Ready")
                .map(|c| match c.status.as_str() {
                    "True" => "Ready",
                    "False" => "NotReady",
                    _ => "Unknown",
                })
                .unwrap_or("Unknown");
            let state = if spec.unschedulable {
                format!("{ready},SchedulingDisabled")
            } else {
                ready.to_owned()
            };
            let roles: Vec<&str> = meta
                .labels
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            let info = status.node_info.clone().unwrap_or_default();
            let mut row = vec![
                name,
                state,
                if roles.is_empty() {
                    NONE.to_owned()
                } else {
                    roles.join(",")
                },
                age,
                or_none(&info.kubelet_version),
            ];
            if wide {
                let ip = status
                    .addresses
                    .iter()
                    .find(|a| a.r#type == "InternalIP")
                    .map(|a| a.address.clone())
                    .unwrap_or_default();
                row.extend([
                    or_none(&ip),
                    or_none(&info.os_image),
                    or_none(&info.kernel_version),
                    or_none(&info.container_runtime_version),
                ]);
            }
            row
        }
        Some(Body::Namespace(_) | Body::Generic(_)) if namespaces::is_namespace(object) => {
            let phase = namespaces::phase(object)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "Active".to_owned());
            vec![name, phase, age]
        }
        Some(Body::Secret(_) | Body::Generic(_)) if secrets::is_secret(object) => {
            let secret = secrets::read(object).unwrap_or_default();
            let values = secret.data.as_ref().map_or(0, |d| d.len());
            let type_ = secrets::type_of(&secret).to_owned();
            vec![name, type_, values.to_string(), age]
        }
        Some(
            Body::Pod(_)
            | Body::Secret(_)
            | Body::Namespace(_)
            | Body::Endpoints(_)
            | Body::Service(_)
            | Body::Generic(_),
        )
        | None => {
            vec![name]
        }
    }
}

/// READY, STATUS and RESTARTS as the masters' Tables give them to kubectl
/// (`Init:1/2`, `Init:CrashLoopBackOff`, sidecars counted as containers).
fn pod_row(object: &Object, name: String, age: String, now: SystemTime) -> Vec<String> {
    let pod = skiff_objects::manifest::to_json_value(object);
    let now = time::OffsetDateTime::from(now);
    let [ready, status, restarts] = skiff_master::rest::table::pod_summary(&pod, now);
    vec![name, ready, status, restarts, age]
}

fn template_columns(
    template: Option<&v1::PodTemplateSpec>,
    selector: Option<&v1::LabelSelector>,
) -> [String; 3] {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    [
        containers
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        containers
            .iter()
            .map(|c| c.image.clone())
            .collect::<Vec<_>>()
            .join(","),
        selector
            .map(|s| labels(&s.match_labels))
            .unwrap_or_else(|| NONE.to_owned()),
    ]
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return NONE.to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::IntoObject;

    fn at(secs: u64) -> SystemTime {
        humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap() + Duration::from_secs(secs)
    }

    #[test]
    fn ages_read_like_kubectl() {
        let created = "2026-01-01T00:00:00Z";
        assert_eq!(age(created, at(45)), "45s");
        assert_eq!(age(created, at(192)), "3m12s");
        assert_eq!(age(created, at(25 * 60)), "25m");
        assert_eq!(age(created, at(5 * 3600 + 600)), "5h10m");
        assert_eq!(age(created, at(17 * 3600)), "17h");
        assert_eq!(age(created, at(3 * 86400)), "3d");
    }

    #[test]
    fn several_kinds_name_their_rows_with_the_kind() {
        let deployment = v1::Deployment {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_with_kind(
            Kind::Deployment,
            &[deployment.into_object()],
            false,
            true,
            at(30),
        );
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&row[..2], ["shop", "deployment.apps/web"]);
    }

    /// Pod `db`, its init containers `migrate` and `seed` (a sidecar when
    /// `sidecar`) in the states `init` gives.
    fn initializing(init: serde_json::Value, sidecar: bool) -> Object {
        let seed = if sidecar {
            serde_json::json!({"name": "seed", "restartPolicy": "Always"})
        } else {
            serde_json::json!({"name": "seed"})
        };
        let pod: v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "initContainers": [{"name": "migrate"}, seed],
                "containers": [{"name": "db"}]
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": init,
                "containerStatuses": [
                    {"name": "db", "state": {"waiting": {"reason": "PodInitializing"}}}
                ]
            }
        }))
        .unwrap();
        pod.into_object()
    }

    #[test]
    fn pod_table_shows_init_containers_as_kubectl_does() {
        let row = |init: serde_json::Value, sidecar: bool| -> Vec<String> {
            let text = render(
                Kind::Pod,
                &[initializing(init, sidecar)],
                false,
                false,
                at(30),
            );
            let row = text.lines().nth(1).unwrap_or_default();
            row.split_whitespace().map(str::to_owned).collect()
        };
        let done = serde_json::json!({"name": "migrate", "state": {"terminated": {"exitCode": 0}}});
        let seeding = serde_json::json!({"name": "seed", "state": {"running": {}}});
        let r = row(serde_json::json!([done.clone(), seeding]), false);
        assert_eq!(r[1..3], ["0/1", "Init:1/2"]);
        let crashing = serde_json::json!({
            "name": "migrate",
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}
        });
        let r = row(serde_json::json!([crashing]), false);
        assert_eq!(r[1..4], ["0/1", "Init:CrashLoopBackOff", "3"]);
        let failed = serde_json::json!({
            "name": "migrate",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}
        });
        assert_eq!(row(serde_json::json!([failed]), false)[2], "Init:Error");
        let waiting = serde_json::json!({
            "name": "migrate",
            "state": {"waiting": {"reason": "PodInitializing"}}
        });
        assert_eq!(row(serde_json::json!([waiting]), false)[2], "Init:0/2");
        // A started sidecar counts as a container and lets the pod go on.
        let sidecar = serde_json::json!({
            "name": "seed",
            "started": true,
            "ready": true,
            "state": {"running": {}}
        });
        let r = row(serde_json::json!([done, sidecar]), true);
        assert_eq!(r[1..3], ["1/2", "PodInitializing"]);
    }

    #[test]
    fn service_table_shows_node_ports_and_load_balancer_ingress() {
        let service = |name: &str, spec: serde_json::Value, status: serde_json::Value| {
            let service: v1::Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": spec,
                "status": status,
            }))
            .unwrap();
            service.into_object()
        };
        let objects = [
            service(
                "np",
                serde_json::json!({"type": "NodePort", "clusterIP": "10.43.0.20",
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
                serde_json::json!({}),
            ),
            service(
                "lb",
                serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.43.0.21",
                    "ports": [{"port": 8088, "nodePort": 31000, "protocol": "TCP"}]}),
                serde_json::json!({"loadBalancer": {"ingress": [{"ip": "192.168.5.1"}, {"ip": "192.168.5.2"}]}}),
            ),
            service(
                "pending",
                serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.43.0.22",
                    "ports": [{"port": 8088, "nodePort": 31001, "protocol": "TCP"}]}),
                serde_json::json!({}),
            ),
        ];
        let text = render(Kind::Service, &objects, false, false, at(30));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][3..5], ["<none>", "80:30080/TCP"], "{text}");
        assert_eq!(
            rows[1][3..5],
            ["192.168.5.1,192.168.5.2", "8088:31000/TCP"],
            "{text}"
        );
        assert_eq!(rows[2][3], "<pending>", "{text}");
    }

    #[test]
    fn pod_table_has_kubectl_columns() {
        let pod = v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web-x7k2p".into(),
                namespace: "default".into(),
                creation_timestamp: "2026-01-01T00:00:00Z".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container::default(), v1::Container::default()],
                node_name: "pi-1".into(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: "Running".into(),
                pod_ip: "10.42.1.7".into(),
                container_statuses: vec![
                    v1::ContainerStatus {
                        ready: true,
                        restart_count: 2,
                        state: Some(v1::ContainerState {
                            running: Some(v1::ContainerStateRunning::default()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    v1::ContainerStatus {
                        ready: false,
                        restart_count: 1,
                        state: Some(v1::ContainerState {
                            waiting: Some(v1::ContainerStateWaiting {
                                reason: "CrashLoopBackOff".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(Kind::Pod, &[pod.into_object()], true, false, at(30));
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "web-x7k2p",
                "1/2",
                "CrashLoopBackOff",
                "3",
                "30s",
                "10.42.1.7",
                "pi-1"
            ]
        );
    }
}
