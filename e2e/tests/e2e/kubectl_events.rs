//! Kubernetes Events through real kubectl (1.20, the machine's 1.32, 1.35)
//! against a real `skiff master` with two hollow nodes: a Deployment's
//! scaling, its ReplicaSet's pods and their scheduling are recorded in the
//! leader's memory, and `kubectl describe` (which lists an object's Events
//! by field selector), `kubectl get events` (Table, wide, field selectors)
//! and `events.k8s.io/v1` show them; a pod that fits no node counts up one
//! `FailedScheduling` Event instead of adding one per retry. Hollow nodes
//! run no containers, so the kubelet's Events are not among them.

use std::time::{Duration, Instant};

use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};

/// The hollow nodes.
const NODES: [&str; 2] = ["hollow-1", "hollow-2"];
/// How long anything asynchronous may take.
const SETTLE: Duration = Duration::from_secs(30);
/// The namespace the scenario works in (also spelled out in its commands).
const NAMESPACE: &str = "ev";

/// A pod no node can take: no node has the label it selects.
const STUCK_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: stuck, namespace: ev}
spec:
  nodeSelector: {disk: none}
  containers: [{name: main, image: busybox}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_shows_events() {
    scenario_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_shows_events() {
    scenario_with(KubectlVersion::V1_32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_shows_events() {
    scenario_with(KubectlVersion::V1_35).await;
}

/// [`scenario`] with `version`'s kubectl against a master and two hollow
/// nodes.
async fn scenario_with(version: KubectlVersion) {
    kube_clients::on_hollow_cluster(version, &NODES, |k, _| scenario(k)).await;
}

fn scenario(k: &Kubectl) {
    ok(k, "create namespace ev");
    ok(
        k,
        "create deployment web --image=busybox --replicas=2 -n ev",
    );
    let pods = eventually("2 pods bound to hollow nodes", || {
        let out = ok(k, "get pods -n ev -o wide");
        let bound = out
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().any(|c| NODES.contains(&c)))
            .count();
        if bound == 2 {
            Ok(out)
        } else {
            Err(out)
        }
    });
    let pod = pods
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();

    // `describe` lists an object's Events by involvedObject.
    let out = eventually("the Deployment's scaling in describe", || {
        let out = ok(k, "describe deployment web -n ev");
        if out.contains("ScalingReplicaSet") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert_has(&out, "Scaled up replica set web-");
    assert_has(&out, "deployment-controller");
    let out = eventually("the pod's scheduling in describe", || {
        let out = ok(k, &format!("describe pod {pod} -n ev"));
        if out.contains("Scheduled") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert_has(&out, &format!("Successfully assigned ev/{pod} to hollow-"));
    assert_has(&out, "default-scheduler");
    // Another pod's Events are not this one's.
    assert!(!out.contains("ScalingReplicaSet"), "{out}");

    // `get events`: kube-apiserver's columns, plain and wide.
    let out = ok(k, "get events -n ev");
    let header = out.lines().next().unwrap_or_default();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert_has(header, column);
    }
    for reason in ["Scheduled", "SuccessfulCreate", "ScalingReplicaSet"] {
        assert_has(&out, reason);
    }
    assert_has(&out, &format!("pod/{pod}"));
    assert_has(&out, "deployment/web");
    let wide = ok(k, "get events -n ev -o wide");
    let header = wide.lines().next().unwrap_or_default();
    for column in ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"] {
        assert_has(header, column);
    }
    let out = ok(k, "get ev -n ev --field-selector reason=Scheduled -o name");
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 2, "one per pod:\n{out}");
    for name in &names {
        assert!(name.starts_with("event/"), "{out}");
    }
    let listed = ok(k, "get events -n ev -o json");
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty(), "{listed}");
    for item in &items {
        assert_eq!(item["kind"], "Event", "{listed}");
        assert!(item["involvedObject"].is_object(), "{listed}");
    }

    // The same Events as events.k8s.io/v1 serves them.
    let reasons = ok(
        k,
        "get events.events.k8s.io -n ev -o jsonpath={.items[*].reason}",
    );
    assert_has(&reasons, "Scheduled");
    let kinds = ok(
        k,
        "get events.events.k8s.io -n ev -o jsonpath={.items[*].regarding.kind}",
    );
    assert_has(&kinds, "Pod");

    // A pod that fits nowhere: one FailedScheduling Event, counted up.
    let manifest = k.home().join("stuck.yaml");
    std::fs::write(&manifest, STUCK_POD).unwrap();
    let path = manifest.to_string_lossy().into_owned();
    k.ok(&["apply", "-f", path.as_str()]);
    let selector = "reason=FailedScheduling,involvedObject.name=stuck";
    let counts = eventually("FailedScheduling counted twice", || {
        let counts = k.ok(&[
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            selector,
            "-o",
            "jsonpath={.items[*].count}",
        ]);
        let counted: Vec<u64> = counts
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        if counted.len() == 1 && counted[0] >= 2 {
            Ok(counts)
        } else {
            Err(counts)
        }
    });
    assert_eq!(counts.split_whitespace().count(), 1, "{counts}");
    let out = ok(k, "describe pod stuck -n ev");
    assert_has(&out, "FailedScheduling");
    assert_has(&out, "node(s) didn't match Pod's node affinity/selector");
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `kubectl <line>`, which must succeed; its stdout.
fn ok(k: &Kubectl, line: &str) -> String {
    k.ok(&words(line))
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// Calls `probe` every 200 ms until it answers `Ok`, and returns that;
/// panics after [`SETTLE`] with what it last saw.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {SETTLE:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
