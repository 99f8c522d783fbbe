//! Configuration and volumes for pods, on a real `skiff agent` with a
//! private containerd and a static-busybox image: a pod whose containers
//! take env from a ConfigMap, a Secret and the downward API (`envFrom`
//! with a prefix, `$(VAR)` in args), and mount a configMap volume, a
//! secret volume (on a tmpfs on the node), an emptyDir the two containers
//! share and a hostPath; what they print says what they saw. A change to
//! the ConfigMap reaches the mounted file within a minute. A pod that
//! needs a ConfigMap that is not there waits as CreateContainerConfigError
//! and starts by itself once it is created. Deleting the pod unmounts its
//! tmpfs and removes its volumes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
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

/// How long a pod may take to start, or a change to show.
const SETTLE: Duration = Duration::from_secs(60);

/// ConfigMap `app` (with `app.conf` at `port`) and Secret `creds`.
fn config(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: app}}
data:
  mode: fast
  app.conf: "port={port}"
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
  password: hunter2
"#
    )
}

/// The pod that reads everything: `main` prints what it was given, then
/// its config file every second; `side` waits for `main`'s file in the
/// emptyDir they share. `$$(...)` is the shell's, escaped from Kubernetes'
/// `$(VAR)` expansion; `$(MODE)` is expanded by it.
fn configured_pod(host_dir: &Path) -> String {
    let host_dir = host_dir.display();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: configured
  labels: {{app: configured}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      echo "mode=$MODE expanded=$(MODE) password=$PASSWORD pod=$POD_NAME prefixed=$CFG_mode"
      echo "file=$$(cat /etc/app/app.conf) secret=$$(cat /creds/password)"
      echo "host=$$(cat /host/marker)"
      echo shared > /shared/from-main
      while true; do echo "now=$$(cat /etc/app/app.conf)"; sleep 1; done
    env:
    - name: MODE
      valueFrom: {{configMapKeyRef: {{name: app, key: mode}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: app}}}}
    volumeMounts:
    - {{name: config, mountPath: /etc/app, readOnly: true}}
    - {{name: creds, mountPath: /creds}}
    - {{name: scratch, mountPath: /shared}}
    - {{name: host, mountPath: /host, readOnly: true}}
  - name: side
    image: {IMAGE}
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - until cat /scratch/from-main; do sleep 1; done; echo seen; sleep 3600
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
  volumes:
  - {{name: config, configMap: {{name: app}}}}
  - {{name: creds, secret: {{secretName: creds}}}}
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: host, hostPath: {{path: "{host_dir}", type: Directory}}}}
"#
    )
}

/// A pod whose one container needs key `level` of ConfigMap `later`.
const WAITING_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: waiting
  labels: {app: waiting}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo level=$LEVEL; sleep 3600"]
    env:
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: later, key: level}}
"#;

async fn get_pod(client: &Client, name: &str) -> Option<v1::Pod> {
    match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", name).await.ok()?).kind {
        Some(Body::Pod(pod)) => Some(pod),
        _ => None,
    }
}

/// The log of `container` of pod `name`, through the master.
fn logs(server: &str, name: &str, container: &str) -> String {
    let out = ctl(server, &["logs", name, "-c", container]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mount points of the agent's mount namespace (the test's own) under
/// `dir` that belong to pod volumes.
fn volume_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(&dir) && point.contains("kubernetes.io~"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_env_and_volumes_from_config_maps_secrets_and_the_node() -> anyhow::Result<()> {
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
    let host_dir = dir.path().join("host-share");
    std::fs::create_dir_all(&host_dir)?;
    std::fs::write(host_dir.join("marker"), "marked")?;

    apply_yaml(&master.api_addr, dir.path(), "config", &config(80))?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "configured",
        &configured_pod(&host_dir),
    )?;
    wait_for("the configured pod Running", SETTLE, || async {
        get_pod(&client, "configured")
            .await
            .filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;

    // What the containers saw.
    let api = master.api_addr.clone();
    let main = wait_for("main's report", SETTLE, || async {
        let text = logs(&api, "configured", "main");
        text.contains("now=").then_some(text)
    })
    .await
    .with_context(|| node.log_tail())?;
    let expected = [
        "mode=fast expanded=fast password=hunter2 pod=configured prefixed=fast",
        "file=port=80 secret=hunter2",
        "host=marked",
        "now=port=80",
    ];
    for line in expected {
        assert!(main.lines().any(|l| l == line), "{line:?} in {main}");
    }
    wait_for("side sees main's file", SETTLE, || async {
        let text = logs(&api, "configured", "side");
        (text.contains("shared") && text.contains("seen")).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    // The secret's files are on a tmpfs, not the node's disk.
    let mounts = volume_mounts_under(&node.data_dir());
    assert!(
        mounts
            .iter()
            .any(|m| m.ends_with("kubernetes.io~secret/creds")),
        "{mounts:?}"
    );

    // A change to the ConfigMap reaches the mounted file within a minute.
    apply_yaml(&master.api_addr, dir.path(), "config", &config(81))?;
    wait_for("the new config in the mounted file", SETTLE, || async {
        logs(&api, "configured", "main")
            .contains("now=port=81")
            .then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;

    // A pod that needs a ConfigMap that is not there waits, saying which.
    apply_yaml(&master.api_addr, dir.path(), "waiting", WAITING_POD)?;
    let waiting = wait_for("CreateContainerConfigError", SETTLE, || async {
        let pod = get_pod(&client, "waiting").await?;
        let status = pod.status?.container_statuses.first()?.state.clone()?;
        let waiting = status.waiting?;
        (waiting.reason == "CreateContainerConfigError").then_some(waiting)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert_eq!(waiting.message, r#"configmap "later" not found"#);
    // Created, it starts by itself.
    let later = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {level: \"3\"}\n";
    apply_yaml(&master.api_addr, dir.path(), "later", later)?;
    wait_for("the waiting pod Running", SETTLE, || async {
        get_pod(&client, "waiting").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_for("the waiting pod's level", SETTLE, || async {
        logs(&api, "waiting", "main")
            .contains("level=3")
            .then_some(())
    })
    .await?;

    // Deleting the pod unmounts its tmpfs and removes its volumes.
    let out = ctl(&master.api_addr, &["delete", "pod", "configured"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the configured pod gone", SETTLE, || async {
        get_pod(&client, "configured").await.is_none().then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let pods_dir = node.data_dir().join("pods");
    wait_for("its volumes removed", SETTLE, || async {
        // The other pod, still running, keeps its own (the service account
        // token's among them).
        let mut mounts = volume_mounts_under(&pods_dir);
        mounts.retain(|m| m.contains("_configured_"));
        let left = std::fs::read_dir(&pods_dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("configured"))
            })
            .unwrap_or(false);
        (mounts.is_empty() && !left).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    assert_eq!(
        std::fs::read_to_string(host_dir.join("marker"))?,
        "marked",
        "a hostPath is the host's: it stays"
    );
    Ok(())
}
