//! The metrics API, `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics,
//! as metrics-server answers it (what `kubectl top` and autoscalers
//! read): made on each read, on the leader, from its
//! [`ResourceMetrics`] joined with the stored objects. A node's reading is
//! answered while its Node exists; a pod's while the pod exists with the
//! UID the reading names and is bound to the node that sent it (a node
//! speaks only for its own pods, and a pod of a reused name never shows
//! its predecessor's use). Each carries the Node's or pod's labels, which
//! label selectors select on, as metrics-server copies them, and a
//! `creationTimestamp` of now. Readings older than
//! [`crate::resource_metrics::MAX_AGE`] are not answered: a get of one is
//! NotFound, a list leaves it out.
//!
//! Quantities as metrics-server writes them: CPU in millicores (`250m`,
//! `0`), memory in bytes (`4Ki`, `1536Mi`, or plain bytes); the window as
//! Go prints a `time.Duration` (`10.012s`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};
use skiff_objects::rfc3339;
use skiff_proto::api::Object;
use skiff_proto::v1::{GenericObject, ObjectMeta};

use crate::resource_metrics::{NodeUsage, PodReading, ResourceMetrics};
use skiff_objects::{generic, pods, IntoObject, Kind, ObjectExt};

/// A stored object by kind, namespace ("" for cluster-scoped kinds) and
/// name: the leader's cache.
pub(super) type Lookup<'a> = &'a dyn Fn(Kind, &str, &str) -> Option<Arc<Object>>;

/// The NodeMetrics or PodMetrics named, if a fresh reading of it exists.
pub(super) fn get(
    readings: &ResourceMetrics,
    lookup: Lookup<'_>,
    kind: Kind,
    namespace: &str,
    name: &str,
    (now, created): (Instant, SystemTime),
) -> Option<Object> {
    match kind {
        Kind::NodeMetrics => {
            let node = lookup(Kind::Node, "", name)?;
            let usage = readings.node_at(name, now)?;
            Some(node_metrics(name, node.meta(), &usage, created))
        }
        Kind::PodMetrics => {
            let pod = lookup(Kind::Pod, namespace, name)?;
            readings
                .pod_readings_at(namespace, name, now)
                .into_iter()
                .find(|reading| is_of(reading, &pod))
                .map(|reading| pod_metrics(&pod, &reading, created))
        }
        _ => None,
    }
}

/// Every NodeMetrics, or every PodMetrics of `namespace` ("" for all),
/// with a fresh reading.
pub(super) fn list(
    readings: &ResourceMetrics,
    lookup: Lookup<'_>,
    kind: Kind,
    namespace: &str,
    (now, created): (Instant, SystemTime),
) -> Vec<Object> {
    match kind {
        Kind::NodeMetrics => readings
            .nodes_at(now)
            .into_iter()
            .filter_map(|(name, usage)| {
                let node = lookup(Kind::Node, "", &name)?;
                Some(node_metrics(&name, node.meta(), &usage, created))
            })
            .collect(),
        Kind::PodMetrics => {
            let namespace = Some(namespace).filter(|n| !n.is_empty());
            readings
                .pods_at(namespace, now)
                .into_iter()
                .filter_map(|reading| {
                    let pod = lookup(Kind::Pod, &reading.namespace, &reading.name)?;
                    is_of(&reading, &pod).then(|| pod_metrics(&pod, &reading, created))
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Whether `reading` is of the stored `pod`: its UID, reported by the
/// node it is bound to.
fn is_of(reading: &PodReading, pod: &Object) -> bool {
    if !pods::is_pod(pod) {
        return false;
    }
    let uid = &pod.meta().uid;
    !uid.is_empty() && *uid == reading.uid && pods::bound_node(pod) == reading.node
}

/// The metadata metrics-server gives a reading: the object's name,
/// namespace and labels, created now.
fn metadata(of: &ObjectMeta, name: &str, created: SystemTime) -> ObjectMeta {
    ObjectMeta {
        name: name.to_owned(),
        namespace: of.namespace.clone(),
        labels: of.labels.clone(),
        creation_timestamp: rfc3339(created),
        ..Default::default()
    }
}

fn metrics_object(kind: Kind, metadata: ObjectMeta, content: Map<String, Value>) -> Object {
    let mut object = GenericObject {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        metadata: Some(metadata),
        content: Vec::new(),
    };
    generic::set_content(&mut object, &content);
    object.into_object()
}

fn node_metrics(name: &str, node: &ObjectMeta, usage: &NodeUsage, created: SystemTime) -> Object {
    let mut content = Map::new();
    content.insert("timestamp".into(), json!(rfc3339(usage.timestamp)));
    content.insert("window".into(), json!(go_duration(usage.window)));
    content.insert(
        "usage".into(),
        usage_json(usage.cpu_millis, usage.memory_bytes),
    );
    let meta = ObjectMeta {
        namespace: String::new(),
        ..metadata(node, name, created)
    };
    metrics_object(Kind::NodeMetrics, meta, content)
}

fn pod_metrics(pod: &Object, reading: &PodReading, created: SystemTime) -> Object {
    let usage = &reading.usage;
    let containers: Vec<Value> = usage
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "usage": usage_json(c.cpu_millis, c.memory_bytes),
            })
        })
        .collect();
    let mut content = Map::new();
    content.insert("timestamp".into(), json!(rfc3339(usage.timestamp)));
    content.insert("window".into(), json!(go_duration(usage.window)));
    content.insert("containers".into(), Value::Array(containers));
    let meta = ObjectMeta {
        namespace: reading.namespace.clone(),
        ..metadata(pod.meta(), &reading.name, created)
    };
    metrics_object(Kind::PodMetrics, meta, content)
}

/// `{"cpu": ..., "memory": ...}`.
fn usage_json(cpu_millis: u64, memory_bytes: u64) -> Value {
    json!({"cpu": cpu_quantity(cpu_millis), "memory": memory_quantity(memory_bytes)})
}

/// Millicores as a quantity: `250m`, `0`.
fn cpu_quantity(millis: u64) -> String {
    if millis == 0 {
        "0".to_owned()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a binary quantity in its largest exact unit (`Ki`, `Mi`,
/// `Gi`, `Ti`), else plain bytes, as Kubernetes writes a BinarySI one.
fn memory_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    let mut value = bytes;
    let mut unit = 0;
    while unit < 4 && value % 1024 == 0 {
        value /= 1024;
        unit += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti"][unit];
    format!("{value}{suffix}")
}

/// A duration as Go's `time.Duration.String` writes one of a second or
/// more (`10s`, `10.25s`, `1m30s`), the JSON of a `metav1.Duration`;
/// shorter ones in milliseconds (`500ms`), and `0s`.
fn go_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, fraction) = (rest / 1000, rest % 1000);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&seconds.to_string());
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('s');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    use skiff_proto::v1;

    use super::*;
    use crate::resource_metrics::{ContainerReport, NodeReport, PodReport};

    const SECOND: Duration = Duration::from_secs(1);

    fn wall(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_322_445 + secs)
    }

    fn meta(namespace: &str, name: &str, uid: &str, labels: &[(&str, &str)]) -> v1::ObjectMeta {
        v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn stored_pod(name: &str, uid: &str, node: &str) -> Object {
        v1::Pod {
            metadata: Some(meta("shop", name, uid, &[("app", name)])),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn stored_node(name: &str) -> Object {
        v1::Node {
            metadata: Some(meta(
                "",
                name,
                "node-uid",
                &[("kubernetes.io/hostname", name)],
            )),
            ..Default::default()
        }
        .into_object()
    }

    struct Cluster {
        objects: HashMap<(Kind, String, String), Arc<Object>>,
    }

    impl Cluster {
        fn new(objects: Vec<Object>) -> Cluster {
            let objects = objects
                .into_iter()
                .map(|o| {
                    let key = (
                        o.kind().unwrap(),
                        o.meta().namespace.clone(),
                        o.meta().name.clone(),
                    );
                    (key, Arc::new(o))
                })
                .collect();
            Cluster { objects }
        }

        fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
            let key = (kind, namespace.to_owned(), name.to_owned());
            self.objects.get(&key).cloned()
        }
    }

    fn container(name: &str, cpu_nanocores: u64, memory_bytes: u64) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            cpu_nanocores,
            memory_bytes,
        }
    }

    fn pod(name: &str, uid: &str, containers: Vec<ContainerReport>) -> PodReport {
        PodReport {
            namespace: "shop".into(),
            name: name.into(),
            uid: uid.into(),
            containers,
        }
    }

    /// `n1` reports `web` (and `stale-uid`, `elsewhere`, `deleted`, which
    /// must not be answered); `n2` reports nothing.
    fn readings(now: Instant) -> ResourceMetrics {
        let metrics = ResourceMetrics::default();
        let n1 = NodeReport {
            window: Duration::from_millis(10_012),
            age: 2 * SECOND,
            cpu_nanocores: 1_234_000_000,
            memory_bytes: 3 << 30,
            pods: vec![
                pod(
                    "web",
                    "u-web",
                    vec![
                        container("app", 987_654_321, 5 << 20),
                        container("log", 0, 1000),
                    ],
                ),
                pod("stale-uid", "u-old", vec![container("app", 1, 1)]),
                pod("elsewhere", "u-else", vec![container("app", 1, 1)]),
                pod("deleted", "u-gone", vec![container("app", 1, 1)]),
            ],
            storage: None,
        };
        metrics.record_at("n1", n1, now, wall(12));
        let n2 = NodeReport {
            window: 10 * SECOND,
            ..Default::default()
        };
        metrics.record_at("n2", n2, now, wall(10));
        metrics
    }

    fn cluster() -> Cluster {
        Cluster::new(vec![
            stored_node("n1"),
            stored_pod("web", "u-web", "n1"),
            stored_pod("stale-uid", "u-new", "n1"),
            stored_pod("elsewhere", "u-else", "n2"),
        ])
    }

    fn json_of(object: &Object) -> Value {
        skiff_objects::manifest::to_json_value(object)
    }

    #[test]
    fn a_pods_metrics_are_its_containers_usage_with_its_labels() {
        let now = Instant::now();
        let (metrics, cluster) = (readings(now), cluster());
        let lookup = |k: Kind, ns: &str, n: &str| cluster.get(k, ns, n);
        let at = (now, wall(20));
        let web = get(&metrics, &lookup, Kind::PodMetrics, "shop", "web", at).unwrap();
        assert_eq!(web.kind().unwrap(), Kind::PodMetrics);
        assert_eq!(
            json_of(&web),
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1",
                "kind": "PodMetrics",
                "metadata": {
                    "name": "web",
                    "namespace": "shop",
                    "labels": {"app": "web"},
                    "creationTimestamp": "2026-01-02T02:54:25Z",
                },
                "timestamp": "2026-01-02T02:54:15Z",
                "window": "10.012s",
                "containers": [
                    {"name": "app", "usage": {"cpu": "988m", "memory": "5Mi"}},
                    {"name": "log", "usage": {"cpu": "0", "memory": "1000"}},
                ],
            })
        );
    }

    #[test]
    fn readings_of_another_pod_of_the_name_or_node_or_of_a_deleted_pod_are_not_answered() {
        let now = Instant::now();
        let (metrics, cluster) = (readings(now), cluster());
        let lookup = |k: Kind, ns: &str, n: &str| cluster.get(k, ns, n);
        let at = (now, wall(20));
        for name in ["stale-uid", "elsewhere", "deleted", "never-reported"] {
            assert!(
                get(&metrics, &lookup, Kind::PodMetrics, "shop", name, at).is_none(),
                "{name}"
            );
        }
        assert!(get(&metrics, &lookup, Kind::PodMetrics, "other", "web", at).is_none());
        let listed = list(&metrics, &lookup, Kind::PodMetrics, "", at);
        let names: Vec<&str> = listed.iter().map(|o| o.meta().name.as_str()).collect();
        assert_eq!(names, ["web"]);
        assert_eq!(
            list(&metrics, &lookup, Kind::PodMetrics, "shop", at).len(),
            1
        );
        assert!(list(&metrics, &lookup, Kind::PodMetrics, "other", at).is_empty());
    }

    #[test]
    fn a_nodes_metrics_are_the_machines_usage_while_its_node_exists() {
        let now = Instant::now();
        let (metrics, cluster) = (readings(now), cluster());
        let lookup = |k: Kind, ns: &str, n: &str| cluster.get(k, ns, n);
        let at = (now, wall(20));
        let n1 = get(&metrics, &lookup, Kind::NodeMetrics, "", "n1", at).unwrap();
        assert_eq!(
            json_of(&n1),
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1",
                "kind": "NodeMetrics",
                "metadata": {
                    "name": "n1",
                    "labels": {"kubernetes.io/hostname": "n1"},
                    "creationTimestamp": "2026-01-02T02:54:25Z",
                },
                "timestamp": "2026-01-02T02:54:15Z",
                "window": "10.012s",
                "usage": {"cpu": "1234m", "memory": "3Gi"},
            })
        );
        // n2 reports, but no Node n2 is stored.
        assert!(get(&metrics, &lookup, Kind::NodeMetrics, "", "n2", at).is_none());
        let listed = list(&metrics, &lookup, Kind::NodeMetrics, "", at);
        let names: Vec<&str> = listed.iter().map(|o| o.meta().name.as_str()).collect();
        assert_eq!(names, ["n1"]);
    }

    #[test]
    fn stale_readings_are_neither_got_nor_listed() {
        let now = Instant::now();
        let (metrics, cluster) = (readings(now), cluster());
        let lookup = |k: Kind, ns: &str, n: &str| cluster.get(k, ns, n);
        // Two seconds old when it came: stale 28 s later.
        let later = (now + 29 * SECOND, wall(49));
        assert!(get(&metrics, &lookup, Kind::PodMetrics, "shop", "web", later).is_none());
        assert!(get(&metrics, &lookup, Kind::NodeMetrics, "", "n1", later).is_none());
        assert!(list(&metrics, &lookup, Kind::PodMetrics, "", later).is_empty());
        assert!(list(&metrics, &lookup, Kind::NodeMetrics, "", later).is_empty());
    }

    #[test]
    fn quantities_are_written_as_kubernetes_writes_them() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(1), "1m");
        assert_eq!(cpu_quantity(2500), "2500m");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(4096), "4Ki");
        assert_eq!(memory_quantity(1536 << 20), "1536Mi");
        assert_eq!(memory_quantity(2 << 30), "2Gi");
        assert_eq!(memory_quantity(5 << 40), "5Ti");
        assert_eq!(memory_quantity(3 << 50), "3072Ti");
    }

    #[test]
    fn windows_are_written_as_go_writes_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(10 * SECOND), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_250)), "10.25s");
        assert_eq!(go_duration(Duration::from_millis(10_012)), "10.012s");
        assert_eq!(go_duration(90 * SECOND), "1m30s");
        assert_eq!(go_duration(3600 * SECOND), "1h0m0s");
    }
}
