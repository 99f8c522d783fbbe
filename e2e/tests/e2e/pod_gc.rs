//! Pod garbage collection end to end, on hollow nodes: a Node deleted with
//! `kubectl delete node` while its hollow node is still up (heartbeating,
//! watching its pods: nothing but the Node object is gone) keeps its pods
//! through the 40 s quarantine; then each is made Failed with the
//! `DisruptionTarget` condition (`DeletionByPodGC`) and deleted, and their
//! ReplicaSet makes them again on the node that is left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, pods_with_app};
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;
use skiff_e2e::{apply_yaml, ctl, wait_for};
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;
use skiff_proto::v1;

/// Four pods of a ReplicaSet, small enough for any hollow node.
const WEB: &str = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: gc-web}
spec:
  replicas: 4
  selector: {matchLabels: {app: gc-web}}
  template:
    metadata: {labels: {app: gc-web}}
    spec:
      containers:
      - name: web
        image: registry.local/web:1.0
        resources: {requests: {cpu: 10m, memory: 16Mi}}
"#;

/// The pod garbage collector's quarantine for a missing node.
const QUARANTINE: Duration = Duration::from_secs(40);

fn node_of(pod: &v1::Pod) -> &str {
    pod.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

fn uid_of(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// Whether the pod is Failed with the condition pod garbage collection
/// gives a pod whose node is gone.
fn failed_by_pod_gc(pod: &v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == "Failed"
            && s.conditions.iter().any(|c| {
                c.r#type == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason == "DeletionByPodGC"
            })
    })
}

/// `kubectl delete node <name>` (kubectl 1.35; `skiff ctl delete node`
/// where it is not installed outside CI).
async fn delete_node(api_addr: &str, name: &str) -> anyhow::Result<()> {
    let (api_addr, name) = (api_addr.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        match kube_clients::kubectl(KubectlVersion::V1_35) {
            Some(binary) => {
                let kubectl = Kubectl::new(binary, &api_addr)?;
                kubectl.ok(&["delete", "node", &name]);
            }
            None => {
                let out = ctl(&api_addr, &["delete", "node", &name]);
                anyhow::ensure!(
                    out.status.success(),
                    "skiff ctl delete node {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_pods_are_failed_deleted_and_made_again_elsewhere() -> anyhow::Result<()> {
    let (dir, master) = ready_master().await?;
    let fleet = HollowFleet::new(vec![master.api_addr.clone()]);
    let mut nodes = Vec::new();
    for (slot, name) in ["gc-a", "gc-b"].iter().enumerate() {
        nodes.push(fleet.start(name, slot, HollowConfig::default()).await?);
    }
    let client = master.client();
    apply_yaml(&master.api_addr, dir.path(), "gc-web", WEB)?;
    let before = wait_for("4 web pods Running", Duration::from_secs(30), || async {
        let pods = pods_with_app(&client, "default", "gc-web").await.ok()?;
        (pods.len() == 4 && pods.iter().all(is_running_ready)).then_some(pods)
    })
    .await
    .with_context(|| master.log_tail())?;
    let gone = node_of(&before[0]).to_owned();
    let doomed: BTreeSet<String> = before
        .iter()
        .filter(|p| node_of(p) == gone)
        .map(uid_of)
        .collect();

    let from = client.list(Kind::Pod, "default").await?.revision;
    let mut watch = client.watch(Kind::Pod, "default", from).await?;
    delete_node(&master.api_addr, &gone).await?;
    let deleted_at = Instant::now();

    // Every pod of the deleted node goes, each made Failed first.
    let watched = tokio::time::timeout(QUARANTINE + Duration::from_secs(40), async {
        let mut failed = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        while deleted.len() < doomed.len() {
            let event = watch.next().await?.context("the pod watch ended")?;
            let Some(Body::Pod(pod)) = event
                .object
                .map(skiff_objects::pods::in_model)
                .and_then(|o| o.kind)
            else {
                continue;
            };
            let uid = uid_of(&pod);
            if !doomed.contains(&uid) {
                continue;
            }
            if failed_by_pod_gc(&pod) {
                failed.insert(uid.clone());
            }
            if event.r#type == EventType::Deleted as i32 {
                deleted.insert(uid);
            }
        }
        anyhow::Ok(failed)
    })
    .await;
    let failed =
        watched.with_context(|| format!("{gone}'s pods still there; {}", master.log_tail()))??;
    let waited = deleted_at.elapsed();
    assert!(
        waited >= QUARANTINE - Duration::from_secs(5),
        "{gone}'s pods went {waited:?} after it, within the quarantine"
    );
    assert_eq!(failed, doomed, "each made Failed by pod GC before it went");

    // Their ReplicaSet makes them again, on the node that is left.
    let after = wait_for(
        "4 web pods Running again, none on the deleted node",
        Duration::from_secs(30),
        || async {
            let pods = pods_with_app(&client, "default", "gc-web").await.ok()?;
            let elsewhere = pods
                .iter()
                .all(|p| node_of(p) != gone && !doomed.contains(&uid_of(p)));
            (pods.len() == 4 && elsewhere && pods.iter().all(is_running_ready)).then_some(pods)
        },
    )
    .await
    .with_context(|| master.log_tail())?;
    let left = if gone == "gc-a" { "gc-b" } else { "gc-a" };
    assert!(after.iter().all(|p| node_of(p) == left), "{after:?}");
    let node = client.get(Kind::Node, "", &gone).await;
    assert!(node.is_err(), "{gone} came back: {node:?}");
    drop(nodes);
    Ok(())
}
