//! StatefulSets and PodDisruptionBudgets end to end. On a real node (a
//! private containerd, busybox imported from an archive, `local-path`
//! claims): a member deleted comes back under its name on its claim with
//! its data, and one scaled away and back too; a new template held by a
//! partition replaces only the members at or above it, then the rest when
//! it is lowered, each on its claim with its data. On hollow nodes (they
//! report pods Running and Ready at once and confirm deletions at once, so
//! the order the controller keeps is what the pods show). With skiff's client: members created one
//! at a time in ordinal order with their claims first, scaled down highest
//! first, a deleted member back under its name with its claim, `skiff ctl
//! scale` and `rollout status`; a member on a node that dies is marked,
//! not replaced, until the node confirms it stopped or the member is
//! force-deleted (then it runs on a live node); `skiff ctl drain`
//! waiting on a PodDisruptionBudget counted from the StatefulSet's scale.
//! With kubectl: a rolling update held by a
//! partition, then completed, `rollout status`, `scale` through the scale
//! subresource, `rollout undo`; a PodDisruptionBudget's status counted
//! from the StatefulSet's scale, and an eviction refused, then allowed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, pods_with_app, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::hollow::{HollowConfig, HollowFleet, HollowNode};
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::controllers::statefulset::spec::{ordinal_of, StatefulSetStatus, StoredStatus};
use skiff_objects::disruption_budget::{Budget, BudgetStatusExt};
use skiff_objects::{Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

/// How long hollow nodes may take to run a StatefulSet's members.
const SETTLE: Duration = Duration::from_secs(30);

/// A headless Service and a StatefulSet `db` of `replicas` members with
/// one claim each.
fn db(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: {replicas}
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      containers:
      - name: db
        image: registry.local/db:1
        volumeMounts: [{{name: data, mountPath: /var/lib/db}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

/// `db` without its claim template: members free to move to another node.
/// (A member with a `local-path` claim is pinned to its volume's node, so a
/// drain leaves it Pending, as Kubernetes does with local volumes.)
fn db_without_claims(replicas: u32) -> String {
    let manifest = db(replicas);
    let (head, _claims) = manifest
        .split_once("  volumeClaimTemplates:")
        .expect("db has a claim template");
    head.replace(
        "        volumeMounts: [{name: data, mountPath: /var/lib/db}]\n",
        "",
    )
}

fn name_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

fn uid_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// The members' pods (being deleted or not), by ordinal.
async fn members(client: &Client) -> BTreeMap<i32, v1::Pod> {
    let pods = pods_with_app(client, "default", "db")
        .await
        .unwrap_or_default();
    pods.into_iter()
        .filter_map(|p| Some((ordinal_of("db", &name_of(&p))?, p)))
        .collect()
}

/// Waits until the members are exactly `ordinals`, each Running and Ready
/// and not being deleted.
async fn wait_members(client: &Client, ordinals: &[i32]) -> anyhow::Result<BTreeMap<i32, v1::Pod>> {
    wait_members_within(client, ordinals, SETTLE).await
}

/// [`wait_members`], for at most `timeout`.
async fn wait_members_within(
    client: &Client,
    ordinals: &[i32],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, v1::Pod>> {
    let what = format!("db members {ordinals:?} Running and Ready");
    wait_for(&what, timeout, || async {
        let now = members(client).await;
        let placed: Vec<i32> = now.keys().copied().collect();
        let ready = now.values().all(|p| {
            let going = p
                .metadata
                .as_ref()
                .is_some_and(|m| !m.deletion_timestamp.is_empty());
            is_running_ready(p) && !going
        });
        (placed == ordinals && ready).then_some(now)
    })
    .await
}

/// The claims of the namespace: name and uid.
async fn claims(client: &Client) -> anyhow::Result<BTreeMap<String, String>> {
    let listed = client.list(Kind::PersistentVolumeClaim, "default").await?;
    Ok(listed
        .items
        .iter()
        .map(|o| (o.meta().name.clone(), o.meta().uid.clone()))
        .collect())
}

async fn status_of(client: &Client) -> Option<StatefulSetStatus> {
    let object = client.get(Kind::StatefulSet, "default", "db").await.ok()?;
    match &object.kind {
        Some(Body::Generic(set)) => Some(StatefulSetStatus::read(set)),
        _ => None,
    }
}

/// Samples the members every 5 ms while `watching`, recording every
/// moment the OrderedReady rule was broken: a member present while one
/// below it is missing or not Ready.
fn watch_order(
    client: Client,
    watching: Arc<AtomicBool>,
    broken: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while watching.load(Ordering::SeqCst) {
            let now = members(&client).await;
            samples += 1;
            let highest = now.keys().max().copied();
            if let Some(highest) = highest {
                for below in 0..highest {
                    let fine = now.get(&below).is_some_and(is_running_ready);
                    if !fine {
                        let present: Vec<i32> = now.keys().copied().collect();
                        let seen = format!(
                            "db-{highest} with db-{below} not Running and Ready: {present:?}"
                        );
                        broken.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples
    })
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

/// What a real node needs to run the members.
const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
/// The busybox image, imported from an archive (never pulled).
const IMAGE: &str = "sts/busybox:1";
/// How long a real node may take to start a member, or a change to show.
const REAL_SETTLE: Duration = Duration::from_secs(60);

/// `db` for a real node: each run of a member adds a line to `/data/runs`
/// on its claim, then logs how many runs the claim has seen and its host
/// name, then its template's `version`. Rolling updates leave members
/// below `partition` alone.
fn counting_db(replicas: u32, version: u32, partition: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: {replicas}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{partition: {partition}}}
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: "{version}"}}]
        command: ["sh", "-c", "echo run >> /data/runs; echo runs=$(grep -c run /data/runs) host=$HOSTNAME; echo version=$VERSION; sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

/// Waits until the log of pod `name` has `line`.
async fn wait_log(server: &str, name: &str, line: &str) -> anyhow::Result<()> {
    wait_for(&format!("{name} to log {line:?}"), REAL_SETTLE, || async {
        let out = ctl(server, &["logs", name]);
        let log = String::from_utf8_lossy(&out.stdout);
        log.lines().any(|l| l.trim() == line).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_a_member_comes_back_with_its_name_and_its_data() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        "sts-real",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "sts-real", REAL_SETTLE)
        .await
        .with_context(|| node.log_tail())?;
    wait_for("the local-path StorageClass", REAL_SETTLE, || async {
        client.get(Kind::StorageClass, "", "local-path").await.ok()
    })
    .await?;
    let api = master.api_addr.clone();
    apply_yaml(&api, dir.path(), "db", &counting_db(2, 1, 0))?;
    let first = wait_members_within(&client, &[0, 1], REAL_SETTLE)
        .await
        .with_context(|| node.log_tail())?;
    for ordinal in [0, 1] {
        let name = format!("db-{ordinal}");
        wait_log(&api, &name, &format!("runs=1 host={name}"))
            .await
            .with_context(|| node.log_tail())?;
    }
    let kept = claims(&client).await?;
    let names: Vec<&str> = kept.keys().map(String::as_str).collect();
    assert_eq!(names, ["data-db-0", "data-db-1"]);
    wait_for("the status to count 2 ready", REAL_SETTLE, || async {
        status_of(&client)
            .await
            .filter(|s| s.ready_replicas == Some(2))
    })
    .await?;
    let table = ctl_ok(&api, &["get", "statefulsets"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "READY", "AGE"], "{table}");
    assert_eq!(rows[1][..2], ["db", "2/2"], "{table}");

    // db-0 deleted: a new pod under its name, on its claim, with its data.
    client.delete(Kind::Pod, "default", "db-0", "").await?;
    let old = uid_of(&first[&0]);
    wait_for("a new db-0 Running", REAL_SETTLE, || async {
        let now = members(&client).await;
        let pod = now.get(&0)?;
        let going = pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty());
        (uid_of(pod) != old && is_running_ready(pod) && !going).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_log(&api, "db-0", "runs=2 host=db-0")
        .await
        .with_context(|| node.log_tail())?;
    assert_eq!(claims(&client).await?, kept, "the same claim objects");

    // Scaled down, db-1 goes and its claim stays; scaled up again, db-1
    // comes back on it with its data.
    ctl_ok(&api, &["scale", "sts/db", "--replicas", "1"]);
    wait_members_within(&client, &[0], REAL_SETTLE).await?;
    assert_eq!(
        claims(&client).await?,
        kept,
        "the claim outlives the scale down"
    );
    ctl_ok(&api, &["scale", "sts/db", "--replicas", "2"]);
    wait_members_within(&client, &[0, 1], REAL_SETTLE)
        .await
        .with_context(|| node.log_tail())?;
    wait_log(&api, "db-1", "runs=2 host=db-1")
        .await
        .with_context(|| node.log_tail())?;

    // A new template held by partition 1: db-1 is replaced, on its claim
    // with its data; db-0 keeps running the old one.
    let before = members(&client).await;
    apply_yaml(&api, dir.path(), "db", &counting_db(2, 2, 1))?;
    wait_log(&api, "db-1", "version=2")
        .await
        .with_context(|| node.log_tail())?;
    wait_log(&api, "db-1", "runs=3 host=db-1")
        .await
        .with_context(|| node.log_tail())?;
    wait_members_within(&client, &[0, 1], REAL_SETTLE).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = members(&client).await;
    assert_eq!(
        uid_of(&held[&0]),
        uid_of(&before[&0]),
        "db-0, below the partition, is not replaced"
    );
    wait_log(&api, "db-0", "version=1").await?;
    // The partition lowered to 0: db-0 is replaced too, with its data.
    apply_yaml(&api, dir.path(), "db", &counting_db(2, 2, 0))?;
    wait_log(&api, "db-0", "version=2")
        .await
        .with_context(|| node.log_tail())?;
    wait_log(&api, "db-0", "runs=3 host=db-0")
        .await
        .with_context(|| node.log_tail())?;
    assert_eq!(claims(&client).await?, kept, "the same claims throughout");
    let _ = ctl(&api, &["delete", "statefulset", "db"]);
    drop(node);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_in_order_go_in_reverse_and_keep_their_names_and_claims() -> anyhow::Result<()>
{
    let (dir, master) = ready_master().await?;
    let fleet = HollowFleet::new(vec![master.api_addr.clone()]);
    let mut nodes = Vec::new();
    for (slot, name) in ["sts-1", "sts-2"].iter().enumerate() {
        nodes.push(fleet.start(name, slot, HollowConfig::default()).await?);
    }
    let client = master.client();
    let watching = Arc::new(AtomicBool::new(true));
    let broken = Arc::new(Mutex::new(Vec::new()));
    let monitor = watch_order(client.clone(), watching.clone(), broken.clone());

    // Created in order, each claim before its pod.
    apply_yaml(&master.api_addr, dir.path(), "db", &db(3))?;
    let first = wait_members(&client, &[0, 1, 2])
        .await
        .map_err(|e| e.context(master.log_tail()))?;
    let made = claims(&client).await?;
    let names: Vec<&str> = made.keys().map(String::as_str).collect();
    assert_eq!(names, ["data-db-0", "data-db-1", "data-db-2"]);
    for (ordinal, pod) in &first {
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname, format!("db-{ordinal}"));
        assert_eq!(spec.subdomain, "db");
        let claim = spec.volumes.iter().find(|v| v.name == "data");
        let claim = claim.and_then(|v| v.persistent_volume_claim.clone());
        assert_eq!(
            claim.map(|c| c.claim_name),
            Some(format!("data-db-{ordinal}"))
        );
        let meta = pod.metadata.clone().unwrap_or_default();
        assert_eq!(
            meta.labels["statefulset.kubernetes.io/pod-name"],
            format!("db-{ordinal}")
        );
        assert_eq!(
            meta.labels["apps.kubernetes.io/pod-index"],
            ordinal.to_string()
        );
        assert_eq!(meta.owner_references[0].kind, "StatefulSet");
    }
    let out = ctl_ok(
        &master.api_addr,
        &["rollout", "status", "sts/db", "--timeout", "30s"],
    );
    assert!(out.contains("roll out complete"), "{out}");
    let status = status_of(&client).await.expect("a status");
    let counts = (
        status.replicas,
        status.ready_replicas,
        status.updated_replicas,
    );
    assert_eq!(counts, (3, Some(3), Some(3)));
    assert_eq!(status.current_revision, status.update_revision);

    // Scaled down highest first; the claims stay (Retain).
    ctl_ok(&master.api_addr, &["scale", "sts/db", "--replicas", "1"]);
    wait_members(&client, &[0]).await?;
    assert_eq!(claims(&client).await?, made, "the claims are retained");

    // Back up: the same claims.
    ctl_ok(&master.api_addr, &["scale", "sts/db", "--replicas", "2"]);
    let again = wait_members(&client, &[0, 1]).await?;
    assert_eq!(claims(&client).await?, made);
    watching.store(false, Ordering::SeqCst);
    let samples = monitor.await?;
    assert!(
        samples >= 10,
        "the members were sampled only {samples} times"
    );
    let broken = broken.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(broken.is_empty(), "OrderedReady broken: {broken:?}");

    // A deleted member comes back under its name, with its claim.
    let old = uid_of(&again[&1]);
    client.delete(Kind::Pod, "default", "db-1", "").await?;
    let started = Instant::now();
    let back = wait_for("db-1 replaced", SETTLE, || async {
        let now = members(&client).await;
        let replaced = now
            .get(&1)
            .filter(|p| uid_of(p) != old && is_running_ready(p));
        replaced.cloned()
    })
    .await?;
    eprintln!("db-1 came back after {:?}", started.elapsed());
    let spec = back.spec.unwrap_or_default();
    let claim = spec
        .volumes
        .iter()
        .find_map(|v| v.persistent_volume_claim.clone());
    assert_eq!(claim.map(|c| c.claim_name).as_deref(), Some("data-db-1"));
    assert_eq!(claims(&client).await?, made, "the same claim objects");
    drop(nodes);
    Ok(())
}

/// A master, two hollow nodes named `names` and `db` (`manifest`) with
/// both members running, db-0's node killed: where the dead-node tests
/// start. Field order is drop order: the nodes go before their master.
struct DeadNode {
    _nodes: Vec<HollowNode>,
    fleet: HollowFleet,
    master: MasterProcess,
    _dir: tempfile::TempDir,
    /// The members before the node died.
    before: BTreeMap<i32, v1::Pod>,
    /// db-0's node, killed, and its fleet slot.
    dead: String,
    slot: usize,
}

async fn db_0s_node_killed(names: [&str; 2], manifest: &str) -> anyhow::Result<DeadNode> {
    let (dir, master) = ready_master().await?;
    let fleet = HollowFleet::new(vec![master.api_addr.clone()]);
    let mut nodes = Vec::new();
    for (slot, name) in names.iter().enumerate() {
        nodes.push(fleet.start(name, slot, HollowConfig::default()).await?);
    }
    apply_yaml(&master.api_addr, dir.path(), "db", manifest)?;
    let before = wait_members(&master.client(), &[0, 1]).await?;
    let dead = node_of(&before[&0]);
    let slot = names
        .iter()
        .position(|n| *n == dead)
        .expect("db-0 on a hollow node");
    nodes[slot].kill();
    Ok(DeadNode {
        _nodes: nodes,
        fleet,
        master,
        _dir: dir,
        before,
        dead,
        slot,
    })
}

fn node_of(pod: &v1::Pod) -> String {
    pod.spec
        .as_ref()
        .map_or(String::new(), |s| s.node_name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_a_dead_node_comes_back_only_once_its_node_confirms_it_stopped(
) -> anyhow::Result<()> {
    // Its node dies: past the grace and the eviction delay, db-0 is marked
    // for deletion, but not forced out, so no second db-0 can start while
    // the node may still run the first.
    let cluster = db_0s_node_killed(["dead-1", "dead-2"], &db(2)).await?;
    let DeadNode {
        fleet,
        master,
        before,
        dead,
        slot,
        ..
    } = &cluster;
    let client = master.client();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let now = members(&client).await;
    let kept = now.get(&0).expect("db-0 is kept while its node is silent");
    assert_eq!(uid_of(kept), uid_of(&before[&0]), "the same db-0");
    let marked = kept
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    assert!(marked, "db-0 is marked for deletion");

    // The node comes back and confirms the pod stopped: db-0 comes back,
    // under its name, with its claim.
    let _revived = fleet.start(dead, *slot, HollowConfig::default()).await?;
    let old = uid_of(&before[&0]);
    wait_for("a new db-0", SETTLE, || async {
        let now = members(&client).await;
        now.get(&0)
            .filter(|p| uid_of(p) != old && is_running_ready(p))
            .cloned()
    })
    .await
    .map_err(|e| e.context(master.log_tail()))?;
    let made = claims(&client).await?;
    assert!(made.contains_key("data-db-0"), "{made:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_a_dead_node_is_replaced_elsewhere_once_it_is_force_deleted(
) -> anyhow::Result<()> {
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    // Its node dies: db-0 is marked, and kept, as in the test above.
    let cluster = db_0s_node_killed(["forced-1", "forced-2"], &db_without_claims(2)).await?;
    let DeadNode {
        master,
        before,
        dead,
        ..
    } = &cluster;
    let client = master.client();
    let old = uid_of(&before[&0]);
    wait_for("db-0 marked for deletion", SETTLE, || async {
        let now = members(&client).await;
        let pod = now.get(&0)?;
        let marked = pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty());
        (marked && uid_of(pod) == old).then_some(())
    })
    .await
    .map_err(|e| e.context(master.log_tail()))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = members(&client).await;
    assert_eq!(
        now.get(&0).map(uid_of).as_deref(),
        Some(old.as_str()),
        "no second db-0 while its node may still run the first"
    );

    // An operator who knows the node is gone force-deletes it: a new db-0
    // runs on the live node.
    let k = Kubectl::new(kubectl, &master.api_addr)?;
    let forced = tokio::task::spawn_blocking(move || {
        k.ok(&["delete", "pod", "db-0", "--grace-period=0", "--force"])
    })
    .await?;
    assert!(forced.contains(r#"pod "db-0" force deleted"#), "{forced}");
    let replaced = wait_for("a new db-0 on the live node", SETTLE, || async {
        let now = members(&client).await;
        now.get(&0)
            .filter(|p| uid_of(p) != old && is_running_ready(p))
            .cloned()
    })
    .await
    .map_err(|e| e.context(master.log_tail()))?;
    assert_ne!(node_of(&replaced), *dead, "not on the dead node");
    drop(cluster);
    Ok(())
}

/// A budget over `db`'s members that lets `max_unavailable` go.
fn db_budget(max_unavailable: u32) -> String {
    format!(
        r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: db-pdb
spec:
  maxUnavailable: {max_unavailable}
  selector:
    matchLabels: {{app: db}}
"#
    )
}

/// `db-pdb` as the disruption controller counted it.
async fn budget_of(client: &Client) -> Option<Budget> {
    let object = client
        .get(Kind::PodDisruptionBudget, "default", "db-pdb")
        .await
        .ok()?;
    Budget::of(&object).filter(|b| b.status.observed_generation == Some(b.generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_ctl_drain_waits_for_a_disruption_budget() -> anyhow::Result<()> {
    let (dir, master) = ready_master().await?;
    let fleet = HollowFleet::new(vec![master.api_addr.clone()]);
    let mut nodes = Vec::new();
    for (slot, name) in ["drain-1", "drain-2"].iter().enumerate() {
        nodes.push(fleet.start(name, slot, HollowConfig::default()).await?);
    }
    let client = master.client();
    apply_yaml(&master.api_addr, dir.path(), "db", &db_without_claims(2))?;
    apply_yaml(&master.api_addr, dir.path(), "db-pdb", &db_budget(0))?;
    let before = wait_members(&client, &[0, 1]).await?;
    // The budget is counted again after each pod change: one count may
    // still see db-1 before it was Ready.
    let counted = wait_for(
        "db-pdb counted with both members healthy",
        SETTLE,
        || async {
            budget_of(&client)
                .await
                .filter(|b| b.status.expected_pods == 2 && b.status.current_healthy == 2)
        },
    )
    .await?;
    let status = &counted.status;
    let counts = (
        status.expected_pods,
        status.desired_healthy,
        status.current_healthy,
        status.disruptions_allowed,
    );
    assert_eq!(counts, (2, 2, 2, 0), "counted from the StatefulSet's scale");
    assert_eq!(
        status.allowed_condition(),
        Some(("False", "InsufficientPods"))
    );

    // maxUnavailable 0: the drain waits, then gives up; nothing is evicted.
    let node = before[&0].spec.clone().unwrap_or_default().node_name;
    let out = ctl(&master.api_addr, &["drain", &node, "--timeout", "8s"]);
    assert!(!out.status.success(), "drained against the budget");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("will retry"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disruption budget"), "{stderr}");
    let now = members(&client).await;
    let uids: Vec<String> = now.values().map(uid_of).collect();
    let uids_before: Vec<String> = before.values().map(uid_of).collect();
    assert_eq!(uids, uids_before, "nothing evicted");

    // One may go: the drain evicts the node's members one at a time, each
    // after the one before is back elsewhere.
    apply_yaml(&master.api_addr, dir.path(), "db-pdb", &db_budget(1))?;
    wait_for("one disruption allowed", SETTLE, || async {
        budget_of(&client)
            .await
            .filter(|b| b.status.disruptions_allowed == 1)
    })
    .await?;
    let out = ctl_ok(&master.api_addr, &["drain", &node, "--timeout", "60s"]);
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    let after = wait_members(&client, &[0, 1]).await?;
    for pod in after.values() {
        let on = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        assert_ne!(on, node, "{} still on the drained node", name_of(pod));
    }
    drop(nodes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_rolls_a_statefulset_with_a_partition_and_counts_its_budget() {
    let nodes = ["hollow-1", "hollow-2"];
    kube_clients::on_hollow_cluster(KubectlVersion::V1_35, &nodes, |k, _| partitioned(k)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_rolls_a_statefulset_with_a_partition_and_counts_its_budget() {
    let nodes = ["hollow-1", "hollow-2"];
    kube_clients::on_hollow_cluster(KubectlVersion::V1_20, &nodes, |k, _| partitioned(k)).await;
}

/// A StatefulSet `web` of 3 whose updates stop at ordinal 2.
const WEB: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {partition: 2}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/web:1
"#;

/// A budget that lets none of the StatefulSet's members go (counted
/// against its scale).
const BUDGET: &str = r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web-pdb
spec:
  maxUnavailable: 0
  selector:
    matchLabels: {app: web}
"#;

/// A partitioned rolling update, `rollout status`, `set image`, `patch`,
/// `scale`, `rollout undo`; a budget's status and an eviction.
fn partitioned(k: &Kubectl) {
    let manifest = k.home().join("web.yaml");
    std::fs::write(&manifest, WEB).unwrap();
    let path = manifest.to_str().unwrap_or_default();
    assert_has(
        &k.ok(&["apply", "-f", path]),
        "statefulset.apps/web created",
    );
    let status = ["rollout", "status", "statefulset/web", "--timeout=60s"];
    assert_has(
        &k.ok(&status),
        "partitioned roll out complete: 3 new pods have been updated",
    );

    k.ok(&[
        "set",
        "image",
        "statefulset/web",
        "web=registry.local/web:2",
    ]);
    assert_has(
        &k.ok(&status),
        "partitioned roll out complete: 1 new pods have been updated",
    );
    eventually("web-2 alone at web:2", || {
        let now = images(k);
        let want = [
            "registry.local/web:1",
            "registry.local/web:1",
            "registry.local/web:2",
        ];
        (now == want).then_some(()).ok_or(now)
    });

    // The partition is lifted: the rest roll, highest first.
    let lift = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#;
    k.ok(&["patch", "statefulset", "web", "-p", lift]);
    assert_has(
        &k.ok(&status),
        "partitioned roll out complete: 3 new pods have been updated",
    );
    eventually("every member at web:2", || {
        let now = images(k);
        (now == ["registry.local/web:2"; 3])
            .then_some(())
            .ok_or(now)
    });
    let revisions = jsonpath(
        k,
        "statefulset web",
        "{.status.currentRevision} {.status.updateRevision}",
    );
    let both: Vec<&str> = revisions.split_whitespace().collect();
    assert!(both.len() == 2 && both[0] == both[1], "{revisions}");

    // The scale subresource.
    assert_has(
        &k.ok(&["scale", "statefulset/web", "--replicas=2"]),
        "statefulset.apps/web scaled",
    );
    eventually("web-2 gone", || {
        let now = images(k);
        (now.len() == 2).then_some(()).ok_or(now)
    });
    assert_has(
        &k.ok(&["rollout", "undo", "statefulset/web"]),
        "statefulset.apps/web rolled back",
    );
    assert_has(
        &k.ok(&status),
        "partitioned roll out complete: 2 new pods have been updated",
    );
    eventually("the members back at web:1", || {
        let now = images(k);
        (now == ["registry.local/web:1"; 2])
            .then_some(())
            .ok_or(now)
    });

    // A budget over the two members, counted from the StatefulSet's scale.
    let budget = k.home().join("budget.yaml");
    std::fs::write(&budget, BUDGET).unwrap();
    let path = budget.to_str().unwrap_or_default();
    assert_has(
        &k.ok(&["apply", "-f", path]),
        "poddisruptionbudget.policy/web-pdb created",
    );
    let counted = "{.status.expectedPods} {.status.desiredHealthy} {.status.currentHealthy} {.status.disruptionsAllowed} {.status.conditions[0].reason}";
    eventually("the budget counted", || {
        let now = jsonpath(k, "pdb web-pdb", counted);
        (now == "2 2 2 0 InsufficientPods")
            .then_some(())
            .ok_or(vec![now])
    });
    let evict = |pod: &str| {
        let eviction = k.home().join("eviction.json");
        let body = format!(
            r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}", "namespace": "default"}}}}"#
        );
        std::fs::write(&eviction, body).unwrap();
        let url = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
        let path = eviction.to_str().unwrap_or_default().to_owned();
        k.run(&["create", "--raw", &url, "-f", &path])
    };
    let refused = evict("web-1");
    assert!(!refused.status.success(), "evicted against the budget");
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_has(&err, "(TooManyRequests)");
    assert_has(
        &err,
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );

    let loosen = r#"{"spec":{"maxUnavailable":1}}"#;
    k.ok(&["patch", "pdb", "web-pdb", "--type=merge", "-p", loosen]);
    eventually("one disruption allowed", || {
        let now = jsonpath(k, "pdb web-pdb", counted);
        (now == "2 1 2 1 SufficientPods")
            .then_some(())
            .ok_or(vec![now])
    });
    let uid = jsonpath(k, "pod web-1", "{.metadata.uid}");
    let allowed = evict("web-1");
    assert!(
        allowed.status.success(),
        "eviction refused: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    eventually("web-1 back under its name", || {
        let now = jsonpath_if_there(k, "pod web-1", "{.metadata.uid} {.status.phase}");
        let now = now.unwrap_or_else(|| "(missing)".to_owned());
        (now.ends_with(" Running") && !now.starts_with(&uid))
            .then_some(())
            .ok_or(vec![now])
    });
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// `kubectl get <what> -o jsonpath=<path>`, trimmed.
fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend(what.split_whitespace());
    args.extend(["-o", output.as_str()]);
    k.ok(&args).trim().to_owned()
}

/// As [`jsonpath`], for an object that may be missing for a moment (a
/// member being replaced): `None` while kubectl cannot get it.
fn jsonpath_if_there(k: &Kubectl, what: &str, path: &str) -> Option<String> {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend(what.split_whitespace());
    args.extend(["-o", output.as_str()]);
    let out = k.run(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The image of each member's pod, by name (`terminating` for one being
/// deleted).
fn images(k: &Kubectl) -> Vec<String> {
    let template = concat!(
        "go-template={{range .items}}",
        "{{if .metadata.deletionTimestamp}}terminating",
        "{{else}}{{(index .spec.containers 0).image}}{{end}}",
        r#"{{"\n"}}{{end}}"#
    );
    let out = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--sort-by=.metadata.name",
        "-o",
        template,
    ]);
    out.lines().map(str::to_owned).collect()
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
