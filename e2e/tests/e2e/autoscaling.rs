//! HorizontalPodAutoscalers end to end, on a real master and a real agent
//! (a private containerd, the static-busybox image), with kubectl 1.20 and
//! 1.35: a Deployment whose pod burns a CPU (a shell loop, requesting 100m)
//! gets kubectl 1.20's `autoscale deployment --cpu-percent=50 --min=1
//! --max=3`, an `autoscaling/v1` object, read back at v1
//! (`targetCPUUtilizationPercentage`) and at v2 (the `cpu` metric) as one
//! object; it is scaled up past one replica on the usage the agent reports,
//! with `SuccessfulRescale`, and both kubectls' tables show the CPU against
//! its target. Then kubectl 1.35 applies the autoscaler again at v2 with
//! `behavior.scaleDown.stabilizationWindowSeconds: 0` (so the test need not
//! wait Kubernetes' 5 minutes), kubectl 1.20 reads it and writes it back
//! whole at v1 (what `kubectl edit` does; v1 has no `behavior`, which rides
//! in an annotation), the Deployment's command is patched to sleep, and it
//! is scaled back down to one replica: at once only if the v1 write kept
//! the behavior. Last, kubectl 1.35's `autoscale` makes a v2 autoscaler.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use skiff_e2e::agent::{pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::{e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::controllers::horizontal_autoscaler::model::{AutoscalerView, Conditions};
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
/// The busybox image, imported from an archive (never pulled).
const IMAGE: &str = "hpa/busybox:1";
/// The Deployment (and its autoscaler, as `kubectl autoscale` names it).
const APP: &str = "burner";
/// Time for usage to be measured and for the autoscaler's 15 s looks.
const SCALE_UP: Duration = Duration::from_secs(180);
/// The same, plus a rollout to the idle command.
const SCALE_DOWN: Duration = Duration::from_secs(240);

/// The autoscaler at each version, by the resource's full name (a plain
/// `hpa` is the group's preferred version, v2).
const AT_V1: &str = "horizontalpodautoscalers.v1.autoscaling";
const AT_V2: &str = "horizontalpodautoscalers.v2.autoscaling";
/// Where `autoscaling/v1` carries `spec.behavior`.
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// Where `autoscaling/v1` carries `status.conditions`.
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// kubectl's columns for autoscalers.
const COLUMNS: [&str; 7] = [
    "NAME",
    "REFERENCE",
    "TARGETS",
    "MINPODS",
    "MAXPODS",
    "REPLICAS",
    "AGE",
];

/// One busy loop of shell builtins: a whole CPU, no forks.
const BURN: &str = "while :; do :; done";
/// The JSON patch that makes the Deployment's pods sleep instead.
const IDLE: &str = r#"[{"op": "replace", "path": "/spec/template/spec/containers/0/command",
  "value": ["sh", "-c", "sleep 3600"]}]"#;

fn deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {APP}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {APP}}}
  template:
    metadata:
      labels: {{app: {APP}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "{BURN}"]
        resources:
          requests: {{cpu: 100m}}
"#
    )
}

/// The autoscaler `kubectl autoscale` made, scaling down at once.
fn autoscaler_without_down_window() -> String {
    format!(
        r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {APP}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {APP}}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {{type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
"#
    )
}

/// A master and one real node. Field order is drop order: the node goes
/// before its master.
struct OneNode {
    node: RuntimeNode,
    master: MasterProcess,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn one_node(name: &str) -> anyhow::Result<OneNode> {
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        name,
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, name, Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    Ok(OneNode {
        node,
        master,
        client,
        _dir: dir,
    })
}

/// The Deployment's `spec.replicas`.
async fn wanted_replicas(client: &Client) -> Option<i32> {
    let object = client.get(Kind::Deployment, "default", APP).await.ok()?;
    // A document, read in its protobuf model.
    match skiff_objects::legacy_bodies::cut_to_model(object)
        .ok()?
        .kind
    {
        Some(Body::Deployment(d)) => d.spec?.replicas,
        _ => None,
    }
}

async fn autoscaler(client: &Client) -> Option<AutoscalerView> {
    let object = client
        .get(Kind::HorizontalPodAutoscaler, "default", APP)
        .await
        .ok()?;
    match &object.kind {
        Some(Body::Generic(g)) => AutoscalerView::read(g).ok(),
        _ => None,
    }
}

/// The messages of the autoscaler's `SuccessfulRescale` Events.
fn rescales(k: &Kubectl) -> String {
    let selector = format!("involvedObject.name={APP},reason=SuccessfulRescale");
    k.ok(&[
        "get",
        "events",
        "--field-selector",
        &selector,
        "-o",
        "jsonpath={.items[*].message}",
    ])
}

/// The autoscaler as `kubectl get <resource> -o json` prints it.
fn read_json(k: &Kubectl, resource: &str) -> Value {
    let text = k.ok(&["get", resource, APP, "-o", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("get {resource} -o json: {e}: {text}"))
}

/// Asserts that `table` is kubectl's autoscaler table with the burner's
/// row: its columns, its target and the CPU against 50%.
fn assert_autoscaler_table(table: &str) {
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, COLUMNS, "{table}");
    assert!(table.contains(&format!("Deployment/{APP}")), "{table}");
    assert!(table.contains("/50%"), "{table}");
}

/// Writes `text` into the runner's home as `name` and applies it.
fn apply(k: &Kubectl, name: &str, text: &str) -> String {
    let path = k.home().join(name);
    std::fs::write(&path, text).expect("write a manifest");
    k.ok(&["apply", "-f", &path.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_deployment_is_scaled_up_by_its_autoscaler_and_down_when_idle() -> anyhow::Result<()>
{
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let Some(old_binary) = kube_clients::kubectl(KubectlVersion::V1_20) else {
        return Ok(());
    };
    let cluster = one_node("hpa-node").await?;
    let client = &cluster.client;
    let k = Kubectl::new(binary, &cluster.master.api_addr)?;
    let old = Kubectl::new(old_binary, &cluster.master.api_addr)?;
    let logs = || format!("{}\n{}", cluster.master.log_tail(), cluster.node.log_tail());

    apply(&k, "deployment.yaml", &deployment());
    wait_for("the burner pod Running", SCALE_UP, || async {
        let pods = pods_with_app(client, "default", APP).await.ok()?;
        let running = pods
            .iter()
            .any(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running"));
        running.then_some(())
    })
    .await
    .with_context(logs)?;

    // kubectl 1.20 knows only autoscaling/v1.
    let autoscale = [
        "autoscale",
        "deployment",
        APP,
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ];
    let made = old.ok(&autoscale);
    assert!(made.contains(&format!("{APP} autoscaled")), "{made}");
    let v1 = read_json(&old, AT_V1);
    assert_eq!(v1["apiVersion"], "autoscaling/v1", "{v1}");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1}");
    assert_eq!(v1["spec"]["minReplicas"], 1, "{v1}");
    assert_eq!(v1["spec"]["maxReplicas"], 3, "{v1}");
    assert_eq!(v1["spec"]["scaleTargetRef"]["kind"], "Deployment", "{v1}");
    assert_eq!(v1["spec"]["scaleTargetRef"]["name"], APP, "{v1}");
    assert!(v1["spec"].get("metrics").is_none(), "{v1}");
    // The same object at v2, as kubectl 1.35 reads it.
    let v2 = read_json(&k, AT_V2);
    assert_eq!(v2["apiVersion"], "autoscaling/v2", "{v2}");
    assert_eq!(v2["metadata"]["uid"], v1["metadata"]["uid"], "{v2}");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]),
        "{v2}"
    );
    assert!(
        v2["spec"].get("targetCPUUtilizationPercentage").is_none(),
        "{v2}"
    );

    // Up: one pod at about 1000% of a 50% target.
    let up = wait_for("a scale up past 1 replica", SCALE_UP, || async {
        wanted_replicas(client).await.filter(|r| *r > 1)
    })
    .await
    .with_context(logs)?;
    assert!(up <= 3, "maxReplicas holds: {up}");
    let view = autoscaler(client).await.context("the autoscaler")?;
    assert!(view.status.last_scale_time.is_some(), "{:?}", view.status);
    let active = view
        .status
        .condition("ScalingActive")
        .and_then(|c| c.reason.clone());
    assert_eq!(
        active.as_deref(),
        Some("ValidMetricFound"),
        "{:?}",
        view.status
    );
    let events = rescales(&k);
    assert!(
        events.contains("reason: cpu resource utilization (percentage of request) above target"),
        "{events}"
    );
    assert_autoscaler_table(&k.ok(&["get", "hpa", APP]));
    // kubectl 1.20's tables, of its plain `hpa` and of v1: the same
    // columns and cells, made from the one stored object.
    assert_autoscaler_table(&old.ok(&["get", "hpa", APP]));
    assert_autoscaler_table(&old.ok(&["get", AT_V1, APP]));
    // What the controller wrote, at v1: the scale's time, and the
    // conditions v1 has no field for in their annotation.
    let v1 = read_json(&old, AT_V1);
    assert!(v1["status"]["lastScaleTime"].is_string(), "{v1}");
    let conditions = v1["metadata"]["annotations"][CONDITIONS_ANNOTATION]
        .as_str()
        .with_context(|| format!("no conditions annotation: {v1}"))?;
    let conditions: Value = serde_json::from_str(conditions)?;
    assert!(
        conditions
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "ScalingActive")),
        "{conditions}"
    );

    // Down: no stabilization window, applied at v2...
    apply(&k, "hpa.yaml", &autoscaler_without_down_window());
    // ...then read and written back whole at v1, as `kubectl edit` does:
    // the behavior rides in its annotation and must come back, or the
    // scale down below waits Kubernetes' 5 minutes. (Without a
    // resourceVersion the write is not refused when the controller
    // writes the status in between.)
    let mut edited = read_json(&old, AT_V1);
    assert!(
        edited["metadata"]["annotations"][BEHAVIOR_ANNOTATION].is_string(),
        "{edited}"
    );
    edited["metadata"]["labels"]["edited-at"] = json!("v1");
    if let Some(meta) = edited["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let path = old.home().join("hpa-v1.json");
    std::fs::write(&path, edited.to_string())?;
    old.ok(&["replace", "-f", &path.display().to_string()]);
    let v2 = read_json(&k, AT_V2);
    assert_eq!(v2["metadata"]["labels"]["edited-at"], "v1", "{v2}");
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 0,
        "{v2}"
    );
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50,
        "{v2}"
    );
    let stored_annotations = v2["metadata"]["annotations"]
        .as_object()
        .map(|a| a.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        !stored_annotations
            .iter()
            .any(|a| a.starts_with("autoscaling.alpha.kubernetes.io/")),
        "{v2}"
    );
    k.ok(&["patch", "deployment", APP, "--type=json", "-p", IDLE]);
    wait_for("a scale down to 1 replica", SCALE_DOWN, || async {
        wanted_replicas(client).await.filter(|r| *r == 1)
    })
    .await
    .with_context(logs)?;
    let events = rescales(&k);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    let view = autoscaler(client).await.context("the autoscaler")?;
    assert_eq!(view.status.desired_replicas, 1, "{:?}", view.status);

    k.ok(&["delete", "hpa", APP]);

    // kubectl 1.35 makes its autoscaler at v2.
    let made = k.ok(&autoscale);
    assert!(made.contains(&format!("{APP} autoscaled")), "{made}");
    let v2 = read_json(&k, AT_V2);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50,
        "{v2}"
    );
    k.ok(&["delete", "hpa", APP]);
    k.ok(&["delete", "deployment", APP]);
    Ok(())
}
