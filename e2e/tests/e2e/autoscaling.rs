//! HorizontalPodAutoscalers end to end, on a real master and a real agent
//! (a private containerd, the static-busybox image), with kubectl 1.35:
//! a Deployment whose pod burns a CPU (a shell loop, requesting 100m) gets
//! `kubectl autoscale deployment --cpu-percent=50 --min=1 --max=3` (an
//! `autoscaling/v2` object), and is scaled up past one replica on the
//! usage the agent reports, with `SuccessfulRescale` and `kubectl get hpa`
//! showing the CPU against its target; then the autoscaler is applied again
//! with `behavior.scaleDown.stabilizationWindowSeconds: 0` (so the test
//! need not wait Kubernetes' 5 minutes), the Deployment's command is
//! patched to sleep, and it is scaled back down to one replica.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::{e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::controllers::horizontal_autoscaler::model::AutoscalerView;
use skiff_master::objects::Kind;
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
    match object.kind {
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
    let cluster = one_node("hpa-node").await?;
    let client = &cluster.client;
    let k = Kubectl::new(binary, &cluster.master.api_addr)?;
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

    let made = k.ok(&[
        "autoscale",
        "deployment",
        APP,
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    assert!(made.contains(&format!("{APP} autoscaled")), "{made}");
    let listed = k.ok(&["get", "hpa", APP, "-o", "jsonpath={.apiVersion}"]);
    assert_eq!(
        listed, "autoscaling/v2",
        "kubectl 1.35 makes v2 autoscalers"
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
        .map(|c| c.reason.clone());
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
    let table = k.ok(&["get", "hpa", APP]);
    assert!(table.contains("TARGETS"), "{table}");
    assert!(table.contains("/50%"), "{table}");
    assert!(table.contains(&format!("Deployment/{APP}")), "{table}");

    // Down: no stabilization window, and the pods made idle.
    apply(&k, "hpa.yaml", &autoscaler_without_down_window());
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
    k.ok(&["delete", "deployment", APP]);
    Ok(())
}
