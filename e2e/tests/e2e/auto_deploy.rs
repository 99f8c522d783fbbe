//! Manifests in `<data-dir>/manifests/` are applied at start and when they
//! change; a broken one is reported by name and the others still apply.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::master::MasterProcess;
use skiff_e2e::wait_for;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;

fn deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: addons}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: addon, namespace: addons}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: addon}}}}
  template:
    metadata: {{labels: {{app: addon}}}}
    spec:
      containers:
      - {{name: main, image: "busybox:1.36"}}
"#
    )
}

async fn replicas(master: &MasterProcess) -> Option<i32> {
    let object = master
        .client()
        .get(Kind::Deployment, "addons", "addon")
        .await
        .ok()?;
    // A document, read in its protobuf model.
    match skiff_objects::legacy_bodies::cut_to_model(object)
        .ok()?
        .kind
    {
        Some(Body::Deployment(d)) => d.spec?.replicas,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_applied_at_start_and_when_changed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("m");
    std::fs::create_dir_all(data.join("manifests"))?;
    std::fs::write(data.join("manifests/addon.yaml"), deployment(2))?;
    std::fs::write(
        data.join("manifests/broken.yaml"),
        "kind: Deployment\nmetadata: {name: x}\nspec: {replicas: many}\n",
    )?;
    std::fs::write(data.join("manifests/notes.txt"), "not a manifest")?;
    let master = MasterProcess::start(&data, None)?;
    master.wait_ready(Duration::from_secs(30)).await?;
    wait_for("the addon at start", Duration::from_secs(20), || async {
        (replicas(&master).await == Some(2)).then_some(())
    })
    .await
    .with_context(|| master.log_tail())?;
    // Changed on disk: applied again.
    std::fs::write(data.join("manifests/addon.yaml"), deployment(3))?;
    wait_for("the changed addon", Duration::from_secs(20), || async {
        (replicas(&master).await == Some(3)).then_some(())
    })
    .await
    .with_context(|| master.log_tail())?;
    let log = std::fs::read_to_string(&master.log_path)?;
    assert!(
        log.contains("broken.yaml") && log.contains("auto-deploy manifest not applied"),
        "the broken file is named: {}",
        master.log_tail()
    );
    assert!(!log.contains("notes.txt"));
    Ok(())
}
