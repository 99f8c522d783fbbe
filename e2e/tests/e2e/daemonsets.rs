//! DaemonSets end to end. On real agents (private containerd, busybox
//! imported from an archive): one pod on each of two nodes and on a third
//! that joins later, within seconds of it being Ready; a rolling update
//! node by node, `skiff ctl rollout status` and `rollout undo`. With hollow
//! nodes: a node that dies keeps its DaemonSet pod (node lifecycle evicts
//! the other pods there, no DaemonSet pod starts anywhere else) and has it
//! still when it comes back; and kubectl's `rollout status`, `history` and
//! `undo daemonset`, which read the ControllerRevisions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::controllers::daemonset::spec::{DaemonSetStatus, StoredStatus};
use skiff_master::controllers::revisions::{Revision, REVISION_HASH_LABEL};
use skiff_objects::owners::controller_of;
use skiff_objects::{Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
const IMAGE: &str = "e2e/busybox:1";
/// The DaemonSet of the real-agent tests.
const APP: &str = "node-agent";
/// How long real nodes may take to run a DaemonSet's pods.
const SETTLE: Duration = Duration::from_secs(60);

/// A DaemonSet whose pods print `version` and sleep; its template changes
/// with `version`.
fn daemon_set(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {APP}
spec:
  selector:
    matchLabels: {{app: {APP}}}
  template:
    metadata:
      labels: {{app: {APP}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: {IMAGE}
        command: ["sh", "-c", "echo agent {version}; sleep 3600"]
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

/// A master, and one real node per name with the busybox image imported,
/// each Ready.
async fn cluster(
    names: &[&str],
) -> anyhow::Result<(tempfile::TempDir, MasterProcess, Vec<RuntimeNode>)> {
    let (dir, master) = ready_master().await?;
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_node(&master, name).await?);
    }
    Ok((dir, master, nodes))
}

/// A real node named `name`, Ready.
async fn start_node(master: &MasterProcess, name: &str) -> anyhow::Result<RuntimeNode> {
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        name,
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    wait_node_ready(&master.client(), name, Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    Ok(node)
}

fn node_of(pod: &v1::Pod) -> &str {
    pod.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

fn name_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// The VERSION a pod's container was given.
fn version_of(pod: &v1::Pod) -> String {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice());
    let env = containers.and_then(|c| c.first()).map(|c| c.env.as_slice());
    let version = env.and_then(|env| env.iter().find(|e| e.name == "VERSION"));
    version.map(|e| e.value.clone()).unwrap_or_default()
}

/// The DaemonSet's pods that are not being deleted, by node.
async fn daemon_pods(client: &Client, app: &str) -> BTreeMap<String, v1::Pod> {
    let pods = pods_with_app(client, "default", app)
        .await
        .unwrap_or_default();
    let live = pods.into_iter().filter(|p| {
        let meta = p.metadata.as_ref();
        meta.is_some_and(|m| m.deletion_timestamp.is_empty())
    });
    live.map(|p| (node_of(&p).to_owned(), p)).collect()
}

/// Waits until every one of `nodes` runs one Running and Ready pod of the
/// DaemonSet `app`, of `version` (any, when empty), and no other node does.
async fn wait_daemon_pods(
    client: &Client,
    app: &str,
    nodes: &[&str],
    version: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, v1::Pod>> {
    let what = format!("{app} pods Running and Ready on {nodes:?}");
    wait_for(&what, timeout, || async {
        let pods = daemon_pods(client, app).await;
        let placed: Vec<&str> = pods.keys().map(String::as_str).collect();
        let ready = pods
            .values()
            .all(|p| is_running_ready(p) && (version.is_empty() || version_of(p) == version));
        (placed == nodes && ready).then_some(pods)
    })
    .await
}

async fn status_of(client: &Client, name: &str) -> Option<DaemonSetStatus> {
    let object = client.get(Kind::DaemonSet, "default", name).await.ok()?;
    match &object.kind {
        Some(Body::Generic(daemon_set)) => Some(DaemonSetStatus::read(daemon_set)),
        _ => None,
    }
}

/// The DaemonSet's ControllerRevisions, lowest number first.
async fn revisions_of(client: &Client, name: &str) -> anyhow::Result<Vec<Revision>> {
    let daemon_set = client.get(Kind::DaemonSet, "default", name).await?;
    let uid = daemon_set.meta().uid.clone();
    let listed = client.list(Kind::ControllerRevision, "default").await?;
    let mut revisions: Vec<Revision> = listed
        .items
        .iter()
        .filter(|o| controller_of(o, Kind::DaemonSet).is_some_and(|r| r.uid == uid))
        .filter_map(|o| match &o.kind {
            Some(Body::Generic(g)) => Some(Revision::read(g)),
            _ => None,
        })
        .collect();
    revisions.sort_by_key(|r| r.revision);
    Ok(revisions)
}

fn hash_of(pod: &v1::Pod) -> String {
    let labels = pod.metadata.as_ref().map(|m| &m.labels);
    let hash = labels.and_then(|l| l.get(REVISION_HASH_LABEL));
    hash.cloned().unwrap_or_default()
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

fn ctl_ok(server: &str, args: &[&str]) -> String {
    let out = ctl(server, args);
    assert!(
        out.status.success(),
        "skiff ctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_runs_on_every_node_and_on_one_that_joins_later() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let both = ["node-a", "node-b"];
    let (dir, master, nodes) = cluster(&both).await?;
    let client = master.client();
    apply_yaml(&master.api_addr, dir.path(), APP, &daemon_set("1"))?;
    let logs = || nodes.iter().map(RuntimeNode::log_tail).collect::<Vec<_>>();
    let pods = wait_daemon_pods(&client, APP, &both, "1", SETTLE)
        .await
        .with_context(|| format!("{}\n{}", master.log_tail(), logs().join("\n")))?;
    let revisions = revisions_of(&client, APP).await?;
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    for pod in pods.values() {
        let meta = pod.metadata.clone().unwrap_or_default();
        assert!(meta.name.starts_with("node-agent-"), "{}", meta.name);
        assert_eq!(meta.owner_references[0].kind, "DaemonSet");
        assert_eq!(hash_of(pod), revisions[0].hash);
    }
    let out = ctl_ok(
        &master.api_addr,
        &["rollout", "status", "ds/node-agent", "--timeout", "60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");

    // A third node joins: it gets its pod within seconds of being Ready.
    let joined = start_node(&master, "node-c").await?;
    let ready_at = Instant::now();
    wait_for(
        "a node-agent pod on node-c",
        Duration::from_secs(20),
        || async { daemon_pods(&client, APP).await.remove("node-c") },
    )
    .await?;
    let placed_in = ready_at.elapsed();
    assert!(
        placed_in <= Duration::from_secs(5),
        "node-c got its pod {placed_in:?} after it was Ready"
    );
    let everywhere = ["node-a", "node-b", "node-c"];
    wait_daemon_pods(&client, APP, &everywhere, "1", SETTLE)
        .await
        .with_context(|| joined.log_tail())?;
    let status = wait_for(
        "the status to count 3 nodes",
        Duration::from_secs(10),
        || async {
            status_of(&client, APP)
                .await
                .filter(|s| s.number_available == Some(3))
        },
    )
    .await?;
    let counts = (
        status.desired_number_scheduled,
        status.current_number_scheduled,
        status.number_ready,
        status.updated_number_scheduled,
        status.number_misscheduled,
    );
    assert_eq!(counts, (3, 3, 3, Some(3), 0));
    eprintln!("node-c had its pod {placed_in:?} after it was Ready");
    // skiff ctl's table has kubectl's columns and these counts.
    let table = ctl_ok(&master.api_addr, &["get", "daemonsets"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        rows[1][..7],
        [APP, "3", "3", "3", "3", "3", "<none>"],
        "{table}"
    );

    // Deleting the DaemonSet takes its pods and revisions with it.
    ctl_ok(&master.api_addr, &["delete", "ds", APP]);
    wait_for("the pods to go", Duration::from_secs(30), || async {
        let pods = pods_with_app(&client, "default", APP).await.ok()?;
        pods.is_empty().then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_rolls_node_by_node_and_rolls_back() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let both = ["node-a", "node-b"];
    let (dir, master, nodes) = cluster(&both).await?;
    let client = master.client();
    apply_yaml(&master.api_addr, dir.path(), APP, &daemon_set("1"))?;
    let logs = || nodes.iter().map(RuntimeNode::log_tail).collect::<Vec<_>>();
    let first = wait_daemon_pods(&client, APP, &both, "1", SETTLE)
        .await
        .with_context(|| format!("{}\n{}", master.log_tail(), logs().join("\n")))?;

    // Counts the nodes with a Ready pod while the template changes.
    let lowest = Arc::new(AtomicUsize::new(usize::MAX));
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (client, lowest, watching) = (client.clone(), lowest.clone(), watching.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while watching.load(Ordering::SeqCst) {
                let pods = pods_with_app(&client, "default", APP).await;
                if let Ok(pods) = pods {
                    let ready = pods.iter().filter(|p| is_running_ready(p));
                    let nodes: BTreeSet<&str> = ready.map(node_of).collect();
                    lowest.fetch_min(nodes.len(), Ordering::SeqCst);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    apply_yaml(&master.api_addr, dir.path(), APP, &daemon_set("2"))?;
    let out = ctl_ok(
        &master.api_addr,
        &["rollout", "status", "ds/node-agent", "--timeout", "120s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(out.contains("new pods have been updated"), "{out}");
    let second = wait_daemon_pods(&client, APP, &both, "2", Duration::from_secs(30)).await?;
    watching.store(false, Ordering::SeqCst);
    let samples = monitor.await?;
    assert!(
        samples >= 10,
        "the rollout was sampled only {samples} times"
    );
    assert!(
        lowest.load(Ordering::SeqCst) >= 1,
        "maxUnavailable 1 of 2 nodes: at least one node kept a Ready pod"
    );
    for (node, pod) in &second {
        // Replaced.
        assert_ne!(name_of(pod), name_of(&first[node]));
    }
    let revisions = revisions_of(&client, APP).await?;
    let numbers: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(second.values().all(|p| hash_of(p) == revisions[1].hash));

    // Back to the first template: its revision becomes number 3.
    let out = ctl_ok(&master.api_addr, &["rollout", "undo", "ds/node-agent"]);
    assert_eq!(out.trim(), "daemonset.apps/node-agent rolled back");
    let back = wait_daemon_pods(&client, APP, &both, "1", Duration::from_secs(90)).await?;
    let revisions = revisions_of(&client, APP).await?;
    let numbered: Vec<(i64, &str)> = revisions
        .iter()
        .map(|r| (r.revision, r.hash.as_str()))
        .collect();
    let (first_hash, second_hash) = (hash_of(&first["node-a"]), hash_of(&second["node-a"]));
    assert_eq!(
        numbered,
        [(2, second_hash.as_str()), (3, first_hash.as_str())]
    );
    assert!(back.values().all(|p| hash_of(p) == first_hash));
    Ok(())
}

/// A DaemonSet for hollow nodes (nothing runs).
fn hollow_daemon_set(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      containers:
      - name: agent
        image: {image}
"#
    )
}

/// A Deployment of three pods, spread over three nodes by the scheduler.
const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/web:1
        resources: {requests: {cpu: 100m}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_keeps_its_daemonset_pod_and_no_other_node_gets_one() -> anyhow::Result<()> {
    let (dir, master) = ready_master().await?;
    let fleet = HollowFleet::new(vec![master.api_addr.clone()]);
    let names = ["edge-1", "edge-2", "edge-3"];
    let mut nodes = Vec::new();
    for (slot, name) in names.iter().enumerate() {
        nodes.push(fleet.start(name, slot, HollowConfig::default()).await?);
    }
    let client = master.client();
    let agent = hollow_daemon_set("agent:1");
    apply_yaml(&master.api_addr, dir.path(), "agent", &agent)?;
    apply_yaml(&master.api_addr, dir.path(), "web", WEB)?;
    let before = wait_daemon_pods(&client, "agent", &names, "", Duration::from_secs(30)).await?;
    let web = wait_for(
        "3 web pods Running, one per node",
        Duration::from_secs(30),
        || async {
            let pods = pods_with_app(&client, "default", "web").await.ok()?;
            let on: BTreeSet<&str> = pods.iter().map(node_of).collect();
            (pods.iter().all(is_running_ready) && on.len() == 3).then_some(pods)
        },
    )
    .await?;
    let web_on_3 = web.iter().find(|p| node_of(p) == "edge-3").map(name_of);
    let web_on_3 = web_on_3.context("a web pod on edge-3")?;

    // edge-3 dies. Node lifecycle marks it NotReady, then evicts its web
    // pod; its DaemonSet pod stays, and no other node gets one.
    nodes[2].kill();
    wait_for(
        "edge-3's web pod evicted",
        Duration::from_secs(30),
        || async {
            let pods = pods_with_app(&client, "default", "web").await.ok()?;
            pods.iter().all(|p| name_of(p) != web_on_3).then_some(())
        },
    )
    .await
    .with_context(|| master.log_tail())?;
    let after = daemon_pods(&client, "agent").await;
    let all = pods_with_app(&client, "default", "agent").await?;
    assert_eq!(all.len(), 3, "no DaemonSet pod started or went: {all:?}");
    let stayed = after.get("edge-3").context("edge-3's DaemonSet pod")?;
    assert_eq!(name_of(stayed), name_of(&before["edge-3"]));
    let status = status_of(&client, "agent").await.context("a status")?;
    // A silent node is to run no new pod.
    assert_eq!(status.desired_number_scheduled, 2);

    // edge-3 comes back: Ready, untainted, with the same pod.
    let _revived = fleet.start("edge-3", 2, HollowConfig::default()).await?;
    wait_for(
        "the DaemonSet to count edge-3 again",
        Duration::from_secs(20),
        || async {
            status_of(&client, "agent")
                .await
                .filter(|s| s.desired_number_scheduled == 3 && s.number_available == Some(3))
        },
    )
    .await?;
    let again = daemon_pods(&client, "agent").await;
    let names_before: Vec<String> = before.values().map(name_of).collect();
    let names_again: Vec<String> = again.values().map(name_of).collect();
    assert_eq!(names_again, names_before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_rolls_out_and_undoes_a_daemonset() {
    rollouts_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_rolls_out_and_undoes_a_daemonset() {
    rollouts_with(KubectlVersion::V1_35).await;
}

async fn rollouts_with(version: KubectlVersion) {
    let nodes = ["hollow-1", "hollow-2"];
    kube_clients::on_hollow_cluster(version, &nodes, |k, _| rollouts(k)).await;
}

/// `kubectl rollout status`, `set image`, `rollout history` and `rollout
/// undo` of a DaemonSet on two hollow nodes.
fn rollouts(k: &Kubectl) {
    let manifest = k.home().join("agent.yaml");
    std::fs::write(&manifest, hollow_daemon_set("registry.local/agent:1")).unwrap();
    let path = manifest.to_str().unwrap_or_default();
    let created = k.ok(&["apply", "-f", path]);
    assert_has(&created, "daemonset.apps/agent created");
    let status = ["rollout", "status", "daemonset/agent", "--timeout=60s"];
    assert_has(&k.ok(&status), "successfully rolled out");

    let image = "agent=registry.local/agent:2";
    k.ok(&["set", "image", "daemonset/agent", image]);
    assert_has(&k.ok(&status), "successfully rolled out");
    eventually("both pods at agent:2", || {
        let now = images(k);
        (now == ["registry.local/agent:2"; 2])
            .then_some(())
            .ok_or(now)
    });
    assert_eq!(history(k), [1, 2]);

    let undo = k.ok(&["rollout", "undo", "daemonset/agent"]);
    assert_has(&undo, "daemonset.apps/agent rolled back");
    assert_has(&k.ok(&status), "successfully rolled out");
    eventually("the pods back at agent:1", || {
        let now = images(k);
        (now == ["registry.local/agent:1"; 2])
            .then_some(())
            .ok_or(now)
    });
    assert_eq!(history(k), [2, 3], "the first template is revision 3 now");
}

/// The image of each of the DaemonSet's pods (`terminating` for one being
/// deleted).
fn images(k: &Kubectl) -> Vec<String> {
    let template = concat!(
        "go-template={{range .items}}",
        "{{if .metadata.deletionTimestamp}}terminating",
        "{{else}}{{(index .spec.containers 0).image}}{{end}}",
        r#"{{"\n"}}{{end}}"#
    );
    let out = k.ok(&["get", "pods", "-l", "app=agent", "-o", template]);
    out.lines().map(str::to_owned).collect()
}

/// The revision numbers `kubectl rollout history` lists.
fn history(k: &Kubectl) -> Vec<u64> {
    let out = k.ok(&["rollout", "history", "daemonset/agent"]);
    let first_words = out.lines().filter_map(|l| l.split_whitespace().next());
    first_words.filter_map(|w| w.parse().ok()).collect()
}

/// Polls `probe` (what it saw, when not yet) for 30 s.
fn eventually(what: &str, mut probe: impl FnMut() -> Result<(), Vec<String>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
