//! The service account volume on a real `skiff agent` with a private
//! containerd and a static-busybox image: a pod created without
//! `automountServiceAccountToken: false` is admitted with a
//! `kube-api-access-*` projected volume mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, where its container
//! finds `namespace`, the cluster CA (`ca.crt`, from the namespace's
//! `kube-root-ca.crt` ConfigMap) and `token`: a JWT of the pod's service
//! account whose `kubernetes.io` claims name the pod. A pod that sets
//! `automountServiceAccountToken: false` has no such directory.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde_json::Value;
use skiff_e2e::agent::{is_running_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];

/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "e2e/busybox:1";

/// How long a pod may take to start.
const SETTLE: Duration = Duration::from_secs(60);

/// `reader` prints what its service account volume holds; `sealed`, with
/// automounting off, whether the directory is there. `$$(...)` is the
/// shell's, escaped from Kubernetes' `$(VAR)` expansion.
const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      d=/var/run/secrets/kubernetes.io/serviceaccount
      echo "namespace=$$(cat $d/namespace)"
      echo "token=$$(cat $d/token)"
      cat $d/ca.crt
      echo done
      sleep 3600
---
apiVersion: v1
kind: Pod
metadata: {name: sealed}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      if [ -e /var/run/secrets/kubernetes.io/serviceaccount ]; then echo present; else echo absent; fi
      sleep 3600
"#;

async fn get_pod(client: &Client, name: &str) -> Option<v1::Pod> {
    match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", name).await.ok()?).kind {
        Some(Body::Pod(pod)) => Some(pod),
        _ => None,
    }
}

/// The log of pod `name`'s container `main`, through the master.
fn logs(server: &str, name: &str) -> String {
    let out = ctl(server, &["logs", name, "-c", "main"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The claims of a JWT, as JSON.
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("the claims of {token:?}: {e}"));
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_find_their_service_account_token_ca_and_namespace() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
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
    // The namespace's default account and CA ConfigMap, made by the
    // leader's controllers.
    wait_for(
        "default's ServiceAccount and kube-root-ca.crt",
        SETTLE,
        || async {
            let account = client.get(Kind::ServiceAccount, "default", "default").await;
            let ca = client
                .get(Kind::ConfigMap, "default", "kube-root-ca.crt")
                .await;
            (account.is_ok() && ca.is_ok()).then_some(())
        },
    )
    .await?;

    apply_yaml(&master.api_addr, dir.path(), "pods", PODS)?;
    // Admitted as Kubernetes admits it.
    let reader = get_pod(&client, "reader").await.context("reader stored")?;
    let spec = reader.spec.clone().unwrap_or_default();
    assert_eq!(spec.service_account_name, "default");
    let volume = spec
        .volumes
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("a kube-api-access volume in {:?}", spec.volumes));
    let mount = &spec.containers[0].volume_mounts;
    assert!(
        mount.iter().any(|m| m.name == volume.name
            && m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"
            && m.read_only),
        "{mount:?}"
    );
    let sealed = get_pod(&client, "sealed").await.context("sealed stored")?;
    let sealed_spec = sealed.spec.unwrap_or_default();
    assert!(sealed_spec.volumes.is_empty(), "{:?}", sealed_spec.volumes);

    for name in ["reader", "sealed"] {
        wait_for(&format!("{name} Running"), SETTLE, || async {
            get_pod(&client, name).await.filter(is_running_ready)
        })
        .await
        .with_context(|| node.log_tail())?;
    }
    let api = master.api_addr.clone();
    let printed = wait_for("reader's report", SETTLE, || async {
        let text = logs(&api, "reader");
        text.contains("done").then_some(text)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        printed.lines().any(|l| l == "namespace=default"),
        "{printed}"
    );
    assert!(
        printed.lines().any(|l| l == "-----BEGIN CERTIFICATE-----"),
        "{printed}"
    );
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("a token in {printed}"));
    let claims = claims(token);
    let bound = &claims["kubernetes.io"];
    assert_eq!(bound["pod"]["name"], "reader", "{claims}");
    let uid = reader.metadata.unwrap_or_default().uid;
    assert_eq!(bound["pod"]["uid"], uid.as_str(), "{claims}");
    assert_eq!(bound["namespace"], "default", "{claims}");
    assert_eq!(bound["serviceaccount"]["name"], "default", "{claims}");
    assert_eq!(bound["node"]["name"], "node-a", "{claims}");
    assert_eq!(
        claims["sub"], "system:serviceaccount:default:default",
        "{claims}"
    );

    let sealed_log = wait_for("sealed's report", SETTLE, || async {
        let text = logs(&api, "sealed");
        (!text.trim().is_empty()).then_some(text)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert_eq!(sealed_log.trim(), "absent");
    Ok(())
}
