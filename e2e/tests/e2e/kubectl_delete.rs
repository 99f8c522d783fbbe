//! Kubernetes' delete semantics through real kubectl (1.20 and 1.35)
//! against a real `skiff master` with two hollow nodes (which confirm the
//! deletion of their pods at once, as a node with nothing to stop would):
//! `delete --cascade=orphan` leaves the ReplicaSet and its pods, freed;
//! `--cascade=foreground` returns once the ReplicaSet and the pods are
//! gone; a ConfigMap with a finalizer stays, marked, and takes no new
//! finalizer, until `patch` removes its own; `drain` (the pods/eviction
//! subresource) is refused while a PodDisruptionBudget would be broken
//! (429) and evicts once there is none.

use std::time::{Duration, Instant};

use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};

/// The hollow nodes.
const NODES: [&str; 2] = ["hollow-1", "hollow-2"];
/// How long anything asynchronous (pods Running, a cascade) may take.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_deletes_as_kubernetes_does() {
    scenario_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_deletes_as_kubernetes_does() {
    scenario_with(KubectlVersion::V1_35).await;
}

/// [`scenario`] with `version`'s kubectl against a master and two hollow
/// nodes.
async fn scenario_with(version: KubectlVersion) {
    kube_clients::on_hollow_cluster(version, &NODES, |k, _| scenario(k)).await;
}

fn scenario(k: &Kubectl) {
    let out = ok(k, "create namespace cascade");
    assert_has(&out, "namespace/cascade created");
    orphan_cascade(k);
    foreground_cascade(k);
    finalizers(k);
    drain_and_disruption_budgets(k);
}

/// A Deployment of `replicas` busybox pods, named and labelled `app=name`,
/// once all of them are Running.
fn deployment(k: &Kubectl, name: &str, replicas: u32) {
    let create = format!("create deployment {name} --image=busybox -n cascade");
    let mut args = words(&create);
    let replicas_flag = format!("--replicas={replicas}");
    args.push(&replicas_flag);
    assert_has(&k.ok(&args), "created");
    let want = vec!["Running"; replicas as usize];
    let pods = format!("pods -l app={name}");
    eventually(&format!("{replicas} Running {name} pods"), || {
        let phases = jsonpath(k, &pods, "{.items[*].status.phase}");
        if words(&phases) == want {
            Ok(())
        } else {
            Err(phases)
        }
    });
}

/// `kubectl get KIND -n cascade -l app=APP -o name`, one name a line.
fn names(k: &Kubectl, kind: &str, app: &str) -> Vec<String> {
    let out = ok(k, &format!("get {kind} -n cascade -l app={app} -o name"));
    out.lines().map(str::to_owned).collect()
}

/// `--cascade=orphan`: the Deployment goes; its ReplicaSet and pods stay,
/// no longer owned.
fn orphan_cascade(k: &Kubectl) {
    deployment(k, "keep", 1);
    let replicasets = names(k, "rs", "keep");
    assert_eq!(replicasets.len(), 1, "{replicasets:?}");
    let out = ok(k, "delete deployment keep -n cascade --cascade=orphan");
    assert_has(&out, r#""keep" deleted"#);
    let err = fails(k, "get deployment keep -n cascade");
    assert_has(&err, "(NotFound)");
    assert_eq!(names(k, "rs", "keep"), replicasets, "the ReplicaSet stays");
    let owners = jsonpath(k, "rs -l app=keep", "{.items[*].metadata.ownerReferences}");
    assert_eq!(owners.trim(), "", "freed: {owners}");
    let pods = names(k, "pods", "keep");
    assert_eq!(pods.len(), 1, "its pod stays: {pods:?}");
    // Still the ReplicaSet's: it keeps it running.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(names(k, "pods", "keep"), pods);
}

/// `--cascade=foreground`: kubectl waits for the Deployment to go, which
/// it does only after its ReplicaSet, which goes only after its pods.
fn foreground_cascade(k: &Kubectl) {
    deployment(k, "fg", 2);
    assert_eq!(names(k, "rs", "fg").len(), 1);
    let out = ok(k, "delete deployment fg -n cascade --cascade=foreground");
    assert_has(&out, r#""fg" deleted"#);
    assert_has(&fails(k, "get deployment fg -n cascade"), "(NotFound)");
    assert!(names(k, "rs", "fg").is_empty(), "gone before the owner");
    assert!(names(k, "pods", "fg").is_empty(), "gone before the owner");
}

/// A ConfigMap held by a finalizer.
const HELD: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: held
  namespace: cascade
  finalizers: [example.com/hold]
data: {mode: slow}
";

/// A merge patch that adds a finalizer to [`HELD`].
const ONE_MORE_FINALIZER: &str =
    r#"{"metadata":{"finalizers":["example.com/hold","example.com/more"]}}"#;

/// A finalizer keeps a deleted ConfigMap, marked; no finalizer can be
/// added to it then; removing its own lets it go.
fn finalizers(k: &Kubectl) {
    let manifest = k.home().join("held.yaml");
    std::fs::write(&manifest, HELD).unwrap();
    let path = manifest.to_str().unwrap_or_default();
    assert_has(&k.ok(&["apply", "-f", path]), "configmap/held created");
    // kubectl would wait for it to go: it does not, yet.
    let out = ok(k, "delete configmap held -n cascade --wait=false");
    assert_has(&out, r#""held" deleted"#);
    let marked = jsonpath(k, "cm held", "{.metadata.deletionTimestamp}");
    assert!(marked.ends_with('Z'), "marked for deletion: {marked:?}");
    let finalizers = jsonpath(k, "cm held", "{.metadata.finalizers[*]}");
    assert_eq!(finalizers, "example.com/hold");
    let mut patch = words("patch configmap held -n cascade --type=merge -p");
    patch.push(ONE_MORE_FINALIZER);
    let err = k.fails(&patch);
    assert_has(&err, "no new finalizers can be added");
    patch.pop();
    patch.push(r#"{"metadata":{"finalizers":null}}"#);
    assert_has(&k.ok(&patch), "configmap/held patched");
    assert_has(&fails(k, "get configmap held -n cascade"), "(NotFound)");
}

/// A PodDisruptionBudget that wants both `guarded` pods healthy.
const BUDGET: &str = "\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: guarded
  namespace: cascade
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: guarded}
";

/// Evictions (`drain`, and one posted by hand) are refused with 429 while
/// the budget would be broken; with no budget, drain evicts and the pods
/// go.
fn drain_and_disruption_budgets(k: &Kubectl) {
    deployment(k, "guarded", 2);
    let manifest = k.home().join("budget.yaml");
    std::fs::write(&manifest, BUDGET).unwrap();
    let path = manifest.to_str().unwrap_or_default();
    let out = k.ok(&["apply", "-f", path]);
    assert_has(&out, "poddisruptionbudget.policy/guarded created");

    let pod = jsonpath(k, "pods -l app=guarded", "{.items[0].metadata.name}");
    let node = jsonpath(k, "pods -l app=guarded", "{.items[0].spec.nodeName}");
    assert!(NODES.contains(&node.as_str()), "on {node:?}");
    let eviction = k.home().join("eviction.json");
    let body = format!(
        r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}", "namespace": "cascade"}}}}"#
    );
    std::fs::write(&eviction, body).unwrap();
    let url = format!("/api/v1/namespaces/cascade/pods/{pod}/eviction");
    let path = eviction.to_str().unwrap_or_default();
    let err = k.fails(&["create", "--raw", &url, "-f", path]);
    assert_has(&err, "(TooManyRequests)");
    assert_has(&err, VIOLATION);

    let drain = format!("drain {node} --ignore-daemonsets --timeout=8s");
    let err = fails(k, &drain);
    assert_has(&err, VIOLATION);
    assert_eq!(names(k, "pods", "guarded").len(), 2, "nothing evicted");
    assert_has(&ok(k, &format!("uncordon {node}")), "uncordoned");

    assert_has(
        &ok(k, "delete poddisruptionbudget guarded -n cascade"),
        r#""guarded" deleted"#,
    );
    let drain = format!("drain {node} --ignore-daemonsets --timeout=50s");
    let out = ok(k, &drain);
    assert_has(&out, "evicted");
    // kubectl 1.20 ends with "node/N evicted", later ones "node/N drained".
    let finished = ["drained", "evicted"].map(|last| format!("node/{node} {last}"));
    assert!(finished.iter().any(|l| out.contains(l)), "{out}");
    let on_node = |n: &str| {
        let placed = jsonpath(k, "pods -l app=guarded", "{.items[*].spec.nodeName}");
        words(&placed).contains(&n)
    };
    assert!(!on_node(node.as_str()), "every guarded pod left {node}");
    // The replacements run on the other node.
    eventually("2 guarded pods again", || {
        let pods = names(k, "pods", "guarded");
        if pods.len() == 2 {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    assert_has(&ok(k, &format!("uncordon {node}")), "uncordoned");
}

/// kube-apiserver's words for an eviction a budget forbids.
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The words of a command line (no quoting: arguments with spaces go in
/// an array).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `kubectl <line>`, which must succeed; its stdout.
fn ok(k: &Kubectl, line: &str) -> String {
    k.ok(&words(line))
}

/// `kubectl <line>`, which must fail; its stderr.
fn fails(k: &Kubectl, line: &str) -> String {
    k.fails(&words(line))
}

/// `kubectl get <what> -n cascade -o jsonpath=<path>`.
fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get", "-n", "cascade", "-o", output.as_str()];
    args.extend(words(what));
    k.ok(&args)
}

/// Asserts that `text` contains `needle`, showing `text` if not.
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// Calls `probe` every 200 ms until it answers `Ok`; panics after
/// [`SETTLE`] with what it last saw.
fn eventually(what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match probe() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {SETTLE:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
