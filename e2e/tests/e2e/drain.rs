//! `kubectl drain` on real agents (private containerd each, busybox
//! imported from an archive) waiting on a PodDisruptionBudget: with both
//! of a Deployment's pods on one node and a budget that wants both
//! healthy, the drain cordons the node and evicts nothing; once the
//! Deployment is scaled up and its new pod runs on the other node, the
//! drain evicts one pod at a time, each only after its replacement is
//! Ready there, and ends with the node empty. Throughout, never fewer
//! pods are healthy than the budget wants.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;
use skiff_e2e::{e2e_prerequisites, wait_for};
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
const IMAGE: &str = "drain/busybox:1";
/// The node drained, and the node its pods move to.
const DRAINED: &str = "drain-a";
const SPARE: &str = "drain-b";
/// How long a real node may take to run a pod.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the drain must be seen waiting before the budget is eased.
const HELD: Duration = Duration::from_secs(8);

/// A Deployment of two busybox pods and a budget wanting both healthy.
const GUARDED: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: guarded
spec:
  replicas: 2
  selector:
    matchLabels: {app: guarded}
  template:
    metadata:
      labels: {app: guarded}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: drain/busybox:1
        imagePullPolicy: Never
        command: [sleep, '3600']
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: guarded
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: guarded}
";

/// The pods of `guarded` that count toward the budget: Running and Ready,
/// not being deleted.
fn healthy(pods: &[v1::Pod]) -> Vec<&v1::Pod> {
    pods.iter()
        .filter(|p| is_running_ready(p))
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_empty())
        })
        .collect()
}

fn node_of(pod: &v1::Pod) -> &str {
    pod.spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .unwrap_or("")
}

fn uid_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_on_real_nodes_waits_for_a_disruption_budget() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let (_dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let mut nodes = Vec::new();
    for name in [DRAINED, SPARE] {
        let node = RuntimeNode::start(
            &master.api_addr,
            name,
            |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
            &[],
        )?;
        wait_node_ready(&master.client(), name, SETTLE)
            .await
            .with_context(|| node.log_tail())?;
        nodes.push(node);
    }
    let logs = || {
        let tails: Vec<String> = nodes.iter().map(RuntimeNode::log_tail).collect();
        format!("{}\n{}", master.log_tail(), tails.join("\n"))
    };
    let k = Kubectl::new(kubectl, &master.api_addr)?;
    let client = master.client();

    // Both pods on the node to drain: the other is cordoned until they run.
    k.ok(&["cordon", SPARE]);
    let manifest = k.home().join("guarded.yaml");
    std::fs::write(&manifest, GUARDED)?;
    k.ok(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    let first = wait_for("2 guarded pods Ready on drain-a", SETTLE, || async {
        let pods = pods_with_app(&client, "default", "guarded").await.ok()?;
        let ready = healthy(&pods);
        (ready.len() == 2 && ready.iter().all(|p| node_of(p) == DRAINED))
            .then(|| ready.iter().map(|p| uid_of(p)).collect::<BTreeSet<_>>())
    })
    .await
    .with_context(logs)?;
    k.ok(&["uncordon", SPARE]);

    // Count the healthy pods for as long as the drain runs.
    let watching = Arc::new(AtomicBool::new(true));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (watching, fewest, samples) = (watching.clone(), fewest.clone(), samples.clone());
        let client = master.client();
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                if let Ok(pods) = pods_with_app(&client, "default", "guarded").await {
                    fewest.fetch_min(healthy(&pods).len(), Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut drain = k.spawn(&["drain", DRAINED, "--ignore-daemonsets", "--timeout=150s"])?;
    // Held: the node is cordoned, nothing is evicted, the drain goes on.
    let held_until = Instant::now() + HELD;
    while Instant::now() < held_until {
        assert!(
            drain.is_running(),
            "the drain ended while the budget forbade every eviction: {}",
            drain.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pods = pods_with_app(&client, "default", "guarded").await?;
    let now: BTreeSet<String> = healthy(&pods).iter().map(|p| uid_of(p)).collect();
    assert_eq!(now, first, "no guarded pod was evicted while held");
    let unschedulable = k.ok(&[
        "get",
        "node",
        DRAINED,
        "-o",
        "jsonpath={.spec.unschedulable}",
    ]);
    assert_eq!(unschedulable.trim(), "true", "the drain cordoned {DRAINED}");
    let output = drain.output();
    assert!(
        output.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "kubectl says why it waits: {output}"
    );

    // A third pod, on the other node, lets one eviction through at a time.
    let held_samples = samples.load(Ordering::SeqCst);
    k.ok(&["scale", "deployment", "guarded", "--replicas", "3"]);
    let deadline = Instant::now() + Duration::from_secs(150);
    while drain.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    watching.store(false, Ordering::SeqCst);
    sampler.await?;
    assert!(
        !drain.is_running(),
        "the drain still runs after 150 s: {}\n{}",
        drain.output(),
        logs()
    );
    let output = drain.output();
    assert!(
        output.contains(&format!("node/{DRAINED} drained")),
        "kubectl drain finished: {output}"
    );
    assert!(drain.succeeded(), "kubectl drain exited 0: {output}");
    let settled = wait_for("3 guarded pods Ready on drain-b", SETTLE, || async {
        let pods = pods_with_app(&client, "default", "guarded").await.ok()?;
        let ready = healthy(&pods);
        (ready.len() == 3 && ready.iter().all(|p| node_of(p) == SPARE))
            .then(|| ready.iter().map(|p| uid_of(p)).collect::<BTreeSet<_>>())
    })
    .await
    .with_context(logs)?;
    assert!(
        settled.is_disjoint(&first),
        "both of drain-a's pods were replaced"
    );
    let evicting = samples.load(Ordering::SeqCst) - held_samples;
    assert!(
        evicting >= 10,
        "only {evicting} samples of the pods while the drain evicted"
    );
    let fewest = fewest.load(Ordering::SeqCst);
    assert!(
        fewest >= 2,
        "the budget wants 2 healthy pods; {fewest} were at one point during the drain"
    );
    let _ = k.run(&["delete", "-f", manifest.to_str().unwrap_or_default()]);
    Ok(())
}
