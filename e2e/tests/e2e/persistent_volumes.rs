//! Persistent volumes on real agents with a private containerd each and a
//! static-busybox image, through the built-in `local-path` StorageClass:
//! a claim without a class gets it, and its volume is made on the node of
//! its first pod (`<that agent's data dir>/storage/pvc-<uid>`). What that
//! pod writes survives its deletion; the replacement lands on the same
//! node although the other node has more room, and reads it. The claim,
//! deleted while a pod uses it, stays Terminating until the pod goes;
//! then its volume is deleted (reclaim Delete) and the agent removes the
//! directory.
//!
//! A pod bound by `nodeName` (skipping the scheduler, as a DaemonSet's
//! pods do) with a claim of 100Ti: the claim is given the pod's node, its
//! volume made there, the pod runs; the size is far more than the node's
//! disk has free (its agent's reading says how much), which `kubectl
//! describe pvc` shows as a warning.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_objects::storage::{ClaimView, VolumeView, LOCAL_PATH_CLASS, SELECTED_NODE_ANNOTATION};
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];

/// The busybox image, imported by each agent from its images dir.
const IMAGE: &str = "e2e/busybox:1";

/// How long a pod may take to start, or a change to show.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the first resource usage reading may take: two ten-second
/// samples, then a heartbeat, with room for a loaded machine.
const READINGS_WITHIN: Duration = Duration::from_secs(120);

/// A claim that names no class: the default, `local-path`, is given.
const CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
"#;

/// A pod named `name` that runs `script` with the claim at `/data`,
/// asking for `cpu`, placed by the scheduler.
fn pod_with_claim(name: &str, script: &str, cpu: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
    resources: {{requests: {{cpu: {cpu}}}}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
"#
    )
}

/// A pod on `node` that only takes room there.
fn filler(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: filler}}
spec:
  terminationGracePeriodSeconds: 1
  nodeName: {node}
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    resources: {{requests: {{cpu: 500m}}}}
"#
    )
}

async fn get_pod(client: &Client, name: &str) -> Option<v1::Pod> {
    match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", name).await.ok()?).kind {
        Some(Body::Pod(pod)) => Some(pod),
        _ => None,
    }
}

async fn get_claim(client: &Client) -> Option<ClaimView> {
    get_claim_named(client, "data").await
}

async fn get_claim_named(client: &Client, name: &str) -> Option<ClaimView> {
    let object = client
        .get(Kind::PersistentVolumeClaim, "default", name)
        .await
        .ok()?;
    ClaimView::read(&object)
}

async fn get_volume(client: &Client, name: &str) -> Option<VolumeView> {
    let object = client.get(Kind::PersistentVolume, "", name).await.ok()?;
    VolumeView::read(&object)
}

fn node_of(pod: &v1::Pod) -> String {
    pod.spec
        .as_ref()
        .map(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// The log of pod `name`'s container, through the master.
fn logs(server: &str, name: &str) -> String {
    let out = ctl(server, &["logs", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn delete_pod(client: &Client, name: &str) -> anyhow::Result<()> {
    client.delete(Kind::Pod, "default", name, "").await?;
    wait_for(&format!("pod {name} gone"), SETTLE, || async {
        get_pod(client, name).await.is_none().then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_data_outlives_its_pods_on_its_node_until_the_claim_goes() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let node = RuntimeNode::start(
            &master.api_addr,
            name,
            |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
            &[],
        )?;
        nodes.push((name, node));
    }
    let tails = |nodes: &[(&str, RuntimeNode)]| {
        nodes
            .iter()
            .map(|(name, n)| format!("{name}:\n{}", n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let client = master.client();
    for (name, node) in &nodes {
        wait_node_ready(&client, name, Duration::from_secs(30))
            .await
            .with_context(|| node.log_tail())?;
    }
    wait_for("the local-path StorageClass", SETTLE, || async {
        client
            .get(Kind::StorageClass, "", LOCAL_PATH_CLASS)
            .await
            .ok()
    })
    .await?;

    // The claim waits for its first pod.
    apply_yaml(&master.api_addr, dir.path(), "claim", CLAIM)?;
    let claim = wait_for("the claim stored", SETTLE, || get_claim(&client)).await?;
    assert_eq!(claim.class(), LOCAL_PATH_CLASS, "the default class");
    assert_eq!(claim.phase, "Pending");

    let writer = pod_with_claim("writer", "echo kept > /data/file; sleep 3600", "10m");
    apply_yaml(&master.api_addr, dir.path(), "writer", &writer)?;
    let running = wait_for("the writer Running", SETTLE, || async {
        get_pod(&client, "writer").await.filter(is_running_ready)
    })
    .await
    .with_context(|| tails(&nodes))?;
    let home = node_of(&running);
    let claim = wait_for("the claim Bound", SETTLE, || async {
        get_claim(&client).await.filter(|c| c.phase == "Bound")
    })
    .await?;
    let volume_name = claim.volume_name().to_owned();
    assert_eq!(volume_name, format!("pvc-{}", claim.meta.uid));
    let volume = get_volume(&client, &volume_name)
        .await
        .context("the provisioned volume")?;
    assert!(volume.pinned_to(&home), "{volume:?} pinned to {home}");
    let (_, home_node) = nodes
        .iter()
        .find(|(name, _)| *name == home)
        .context("the writer's node is one of ours")?;
    let volume_dir: PathBuf = home_node.data_dir().join("storage").join(&volume_name);
    assert_eq!(
        volume.node_path().map(PathBuf::from),
        Some(volume_dir.clone())
    );
    let file = volume_dir.join("file");
    wait_for("the writer's file on the node", SETTLE, || async {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.trim() == "kept")
    })
    .await?;

    // The writer goes; its data stays. The other node has more room, yet
    // the reader goes where the volume is.
    delete_pod(&client, "writer").await?;
    assert!(file.exists(), "the data outlives the pod");
    apply_yaml(&master.api_addr, dir.path(), "filler", &filler(&home))?;
    let reader = pod_with_claim("reader", "cat /data/file; sleep 3600", "100m");
    apply_yaml(&master.api_addr, dir.path(), "reader", &reader)?;
    let running = wait_for("the reader Running", SETTLE, || async {
        get_pod(&client, "reader").await.filter(is_running_ready)
    })
    .await
    .with_context(|| tails(&nodes))?;
    assert_eq!(node_of(&running), home, "the reader is where the volume is");
    let api = master.api_addr.clone();
    wait_for("the reader reads the writer's data", SETTLE, || async {
        logs(&api, "reader").contains("kept").then_some(())
    })
    .await
    .with_context(|| tails(&nodes))?;

    // Deleted while the reader uses it, the claim stays, Terminating.
    client
        .delete(Kind::PersistentVolumeClaim, "default", "data", "")
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = get_claim(&client).await.context("the claim is held")?;
    assert!(held.being_deleted(), "{held:?}");
    assert!(file.exists());

    // Once the reader goes, the claim goes, then the volume (reclaim
    // Delete), then its directory.
    delete_pod(&client, "reader").await?;
    wait_for("the claim gone", SETTLE, || async {
        get_claim(&client).await.is_none().then_some(())
    })
    .await?;
    wait_for("the volume gone", SETTLE, || async {
        get_volume(&client, &volume_name)
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    wait_for("the volume's directory removed", SETTLE, || async {
        (!volume_dir.exists()).then_some(())
    })
    .await
    .with_context(|| tails(&nodes))?;
    delete_pod(&client, "filler").await?;
    Ok(())
}

/// A claim of far more than any test machine's disk.
const HUGE_CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: huge}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 100Ti}}
"#;

/// A pod bound to `node` when made, as a DaemonSet's are, using `huge`.
fn pod_on_node(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: pinned}}
spec:
  terminationGracePeriodSeconds: 1
  nodeName: {node}
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo here > /data/file; sleep 3600"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: huge}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_by_node_name_gets_its_claims_volume_there_with_a_size_warning(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_32) else {
        return Ok(());
    };
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    wait_for("the local-path StorageClass", SETTLE, || async {
        client
            .get(Kind::StorageClass, "", LOCAL_PATH_CLASS)
            .await
            .ok()
    })
    .await?;
    // The node's free storage is known once its first reading is in.
    wait_for(
        "node-a's first resource usage reading",
        READINGS_WITHIN,
        || async { client.get(Kind::NodeMetrics, "", "node-a").await.ok() },
    )
    .await
    .with_context(|| node.log_tail())?;

    apply_yaml(&master.api_addr, dir.path(), "huge", HUGE_CLAIM)?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "pinned",
        &pod_on_node("node-a"),
    )?;
    wait_for("the pinned pod Running", SETTLE, || async {
        get_pod(&client, "pinned").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let claim = wait_for("the claim Bound", SETTLE, || async {
        get_claim_named(&client, "huge")
            .await
            .filter(|c| c.phase == "Bound")
    })
    .await?;
    assert_eq!(
        claim.meta.annotations.get(SELECTED_NODE_ANNOTATION),
        Some(&"node-a".to_owned()),
        "the pod's node is the claim's"
    );
    let volume = get_volume(&client, claim.volume_name())
        .await
        .context("the provisioned volume")?;
    assert!(volume.pinned_to("node-a"), "{volume:?}");
    let file = node
        .data_dir()
        .join("storage")
        .join(claim.volume_name())
        .join("file");
    wait_for("the pod's file in its volume on node-a", SETTLE, || async {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.trim() == "here")
    })
    .await?;

    // Provisioned, and said to be larger than the node has free.
    let k = Kubectl::new(kubectl, &master.api_addr)?;
    let described = k.ok(&["describe", "pvc", "huge"]);
    let warning = described
        .lines()
        .find(|l| l.contains("ProvisioningWarning"))
        .with_context(|| format!("no ProvisioningWarning in:\n{described}"))?;
    assert!(warning.trim_start().starts_with("Warning"), "{described}");
    assert!(
        warning.contains("requested 100Ti of storage, more than the")
            && warning.contains("free on node \"node-a\""),
        "{described}"
    );
    assert!(described.contains("ProvisioningSucceeded"), "{described}");
    delete_pod(&client, "pinned").await?;
    Ok(())
}
