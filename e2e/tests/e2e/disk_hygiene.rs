//! Disk hygiene on a real node: a real `skiff master`, a private
//! containerd, a real `skiff agent` with image garbage collection set to
//! collect at any usage (`--image-gc-high-threshold 1
//! --image-gc-low-threshold 0`), and the static-busybox image served by a
//! loopback registry under two tags.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{wait_app_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::registry::LoopbackRegistry;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};

const TOOLS: &[&str] = &["containerd", "runc", "ctr", "docker-registry", "skopeo"];

/// What the agent logs when a collection found nothing more to remove.
const STUCK: &str = "image garbage collection cannot get under the low threshold";

/// Pod `<name>` labelled `app: <name>`, sleeping in `image`.
fn pod(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sleep", "3600"]
"#
    )
}

/// The image names in the node's containerd namespace.
fn images(node: &RuntimeNode) -> anyhow::Result<Vec<String>> {
    Ok(node
        .ctr(&["images", "ls", "-q"])?
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_are_collected_and_images_in_use_stay() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let registry = LoopbackRegistry::start()?;
    let archive = dir.path().join("busybox.oci.tar");
    let image = BusyboxImage::build()?;
    image.write_oci_archive(&archive, "docker.io/library/busybox:e2e")?;
    registry.push_oci_archive(&archive, "gc/busybox:old")?;
    registry.push_oci_archive(&archive, "gc/busybox:kept")?;
    let old = registry.image_ref("gc/busybox:old");
    let kept = registry.image_ref("gc/busybox:kept");
    let registry_addr = registry.addr();
    // The private containerd's root is under the temp dir.
    let measured = std::env::temp_dir().display().to_string();
    let node = RuntimeNode::start(
        &master.api_addr,
        "gc-node",
        |data| {
            std::fs::write(
                data.join("registries.yaml"),
                format!("configs:\n  \"{registry_addr}\":\n    plainHTTP: true\n"),
            )?;
            Ok(())
        },
        &[
            "--image-gc-high-threshold",
            "1",
            "--image-gc-low-threshold",
            "0",
            "--image-minimum-gc-age",
            "0s",
            "--image-gc-interval",
            "1s",
            "--image-gc-path",
            &measured,
        ],
    )?;
    let client = master.client();
    wait_node_ready(&client, "gc-node", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;

    // An image in use stays, however full the disk: every collection
    // finds nothing else to remove and says so.
    let manifest = pod("gc-old", &old);
    apply_yaml(&master.api_addr, dir.path(), "gc-old", &manifest)?;
    wait_app_ready(&client, "gc-old", 1, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;
    let collections = || node.agent.log().matches(STUCK).count();
    let before = collections();
    wait_for("two collections", Duration::from_secs(20), || async {
        (collections() >= before + 2).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let names = images(&node)?;
    assert!(names.contains(&old), "{names:?}");

    // Once its pod is gone, it is collected; the one in use stays.
    let manifest = pod("gc-kept", &kept);
    apply_yaml(&master.api_addr, dir.path(), "gc-kept", &manifest)?;
    wait_app_ready(&client, "gc-kept", 1, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;
    let out = ctl(&master.api_addr, &["delete", "pod", "gc-old"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the unused image removed",
        Duration::from_secs(60),
        || async {
            let names = images(&node).ok()?;
            (!names.contains(&old)).then_some(())
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    // The agent logs the removal once it has measured what it freed,
    // just after containerd has let the image go.
    let logged = || {
        node.agent
            .log()
            .lines()
            .any(|l| l.contains("removed unused image") && l.contains(&old))
    };
    wait_for(
        "the removal logged with the image",
        Duration::from_secs(10),
        || async { logged().then_some(()) },
    )
    .await
    .with_context(|| node.log_tail())?;
    // A few more collections later, the image in use is still there and
    // its pod still runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names = images(&node)?;
    assert!(names.contains(&kept), "{names:?}");
    assert!(!names.contains(&old), "{names:?}");
    wait_app_ready(&client, "gc-kept", 1, Duration::from_secs(5))
        .await
        .with_context(|| node.log_tail())?;
    Ok(())
}
