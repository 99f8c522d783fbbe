//! Pod spec features that real charts use, on a real `skiff agent` with a
//! private containerd and a static-busybox image (and the same image with
//! `USER nobody`): init containers that run in order (each appends to a
//! file in an emptyDir the app container then reads), a failing one that
//! holds the app container as `Init:CrashLoopBackOff` (or, in a pod that
//! never restarts, fails it as `Init:Error` with its termination message),
//! and securityContexts seen from inside the container: the user, group
//! and supplementary groups (`id`), the fsGroup on an emptyDir and a
//! configMap volume (`stat`), a read-only root filesystem (writing to `/`
//! fails), no capabilities, no new privileges and the RuntimeDefault
//! seccomp filter (`/proc/self/status`); `runAsNonRoot` refusing a root
//! image with the kubelet's message, and a user name from the image's
//! `/etc/passwd`.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];

/// The busybox image, imported by the agent from its images dir; it runs
/// as root.
const IMAGE: &str = "e2e/busybox:1";

/// The same image with `USER nobody` (65534 in its `/etc/passwd`).
const NOBODY_IMAGE: &str = "e2e/busybox-nobody:1";

/// How long a pod may take to start, or a change to show.
const SETTLE: Duration = Duration::from_secs(60);

/// Two init containers appending to `/work/order` in turn (the second
/// after a pause, so that running them side by side would show), then the
/// app container, which appends its own line and prints the file.
const ORDERED_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: first
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 1; echo first >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo second >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo main >> /work/order; echo order=$$(busybox tr '\\n' , < /work/order); sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes:
  - {name: work, emptyDir: {}}
"#;

/// A pod whose init container fails, under `policy`, after writing its
/// termination message.
fn failing_pod(name: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: migrate
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo migration 7 failed > /dev/termination-log; exit 3"]
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo started; sleep 3600"]
"#
    )
}

/// What the container of the confined pod prints about itself. `$$(...)`
/// is the shell's, escaped from Kubernetes' `$(VAR)` expansion.
const CONFINED_POD: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: confined}
data: {key: value}
---
apiVersion: v1
kind: Pod
metadata: {name: confined}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      echo "uid=$$(busybox id -u) gid=$$(busybox id -g) groups=$$(busybox id -G)"
      echo "data=$$(busybox stat -c '%g %a' /data)"
      echo hello > /data/file && echo "file=$$(busybox stat -c '%g' /data/file)"
      echo "config=$$(busybox stat -L -c '%g' /config/key)"
      if echo x > /written 2>/dev/null; then echo root=writable; else echo root=read-only; fi
      busybox awk '/^(NoNewPrivs|Seccomp|CapEff):/ {print $1 $2}' /proc/self/status
      echo done
      sleep 3600
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: config, mountPath: /config}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: config, configMap: {name: confined}}
"#;

/// A pod that must not run as root, in `image`.
fn non_root_pod(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo \"uid=$$(busybox id -u) gid=$$(busybox id -g)\"; sleep 3600"]
"#
    )
}

async fn get_pod(client: &Client, name: &str) -> Option<v1::Pod> {
    match client.get(Kind::Pod, "default", name).await.ok()?.kind {
        Some(Body::Pod(pod)) => Some(pod),
        _ => None,
    }
}

/// The log of `container` of pod `name`, through the master.
fn logs(server: &str, name: &str, container: &str) -> String {
    let out = ctl(server, &["logs", name, "-c", container]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The STATUS column `skiff ctl get pod` shows for pod `name`.
fn shown_status(server: &str, name: &str) -> String {
    let out = ctl(server, &["get", "pod", name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text.lines().nth(1).unwrap_or_default();
    row.split_whitespace().nth(2).unwrap_or_default().to_owned()
}

/// The status of init container `name` of `pod`.
fn init_status<'a>(pod: &'a v1::Pod, name: &str) -> Option<&'a v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .find(|c| c.name == name)
}

/// The status of the pod's condition `kind`.
fn condition(pod: &v1::Pod, kind: &str) -> String {
    let conditions = pod.status.as_ref().map(|s| s.conditions.as_slice());
    let found = conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.r#type == kind);
    found.map(|c| c.status.clone()).unwrap_or_default()
}

/// A node named `node-a` with both images, ready.
async fn node_with_images(master_api: &str, client: &Client) -> anyhow::Result<RuntimeNode> {
    let image = BusyboxImage::build()?;
    let nobody = image.with_user("nobody")?;
    let node = RuntimeNode::start(
        master_api,
        "node-a",
        |data| {
            image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE)?;
            nobody.write_docker_archive(&data.join("images/busybox-nobody.tar"), NOBODY_IMAGE)
        },
        &[],
    )?;
    wait_node_ready(client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    Ok(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_a_failing_one_holds_the_app() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let node = node_with_images(&master.api_addr, &client).await?;
    let api = master.api_addr.clone();

    // In order, each once the one before it has ended, then the app.
    apply_yaml(&api, dir.path(), "ordered", ORDERED_POD)?;
    let pod = wait_for("the ordered pod Running", SETTLE, || async {
        get_pod(&client, "ordered").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    for name in ["first", "second"] {
        let status = init_status(&pod, name).context("an init container status")?;
        let state = status.state.as_ref().and_then(|s| s.terminated.as_ref());
        let state = state.with_context(|| format!("{name} ended: {status:?}"))?;
        assert_eq!(
            (state.exit_code, state.reason.as_str()),
            (Some(0), "Completed")
        );
    }
    assert_eq!(condition(&pod, "Initialized"), "True");
    let order = wait_for("main's report", SETTLE, || async {
        let text = logs(&api, "ordered", "main");
        text.contains("order=").then_some(text)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        order.lines().any(|l| l == "order=first,second,main,"),
        "{order}"
    );
    assert_eq!(shown_status(&api, "ordered"), "Running");

    // A failing init container is restarted with a back-off; the app
    // container never starts.
    apply_yaml(
        &api,
        dir.path(),
        "looping",
        &failing_pod("looping", "Always"),
    )?;
    let pod = wait_for("migrate in CrashLoopBackOff", SETTLE, || async {
        let pod = get_pod(&client, "looping").await?;
        let migrate = init_status(&pod, "migrate")?;
        let waiting = migrate.state.as_ref()?.waiting.as_ref()?;
        (waiting.reason == "CrashLoopBackOff").then_some(pod)
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_for("Init:CrashLoopBackOff shown", SETTLE, || async {
        (shown_status(&api, "looping") == "Init:CrashLoopBackOff").then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.phase, "Pending");
    assert_eq!(condition(&pod, "Initialized"), "False");
    let migrate = init_status(&pod, "migrate").context("migrate's status")?;
    assert!(migrate.restart_count >= 1, "{migrate:?}");
    let main = status.container_statuses.first().context("main's status")?;
    let main_waiting = main.state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        main_waiting.map(|w| w.reason.as_str()),
        Some("PodInitializing")
    );
    assert!(main.container_id.is_empty(), "main never started: {main:?}");
    assert!(!logs(&api, "looping", "main").contains("started"));

    // In a pod that never restarts, it fails the pod, saying why.
    apply_yaml(
        &api,
        dir.path(),
        "failing",
        &failing_pod("failing", "Never"),
    )?;
    let pod = wait_for("the failing pod Failed", SETTLE, || async {
        let pod = get_pod(&client, "failing").await?;
        (pod.status.as_ref()?.phase == "Failed").then_some(pod)
    })
    .await
    .with_context(|| node.log_tail())?;
    let migrate = init_status(&pod, "migrate").context("migrate's status")?;
    let ended = migrate.state.as_ref().and_then(|s| s.terminated.as_ref());
    let ended = ended.context("migrate ended")?;
    assert_eq!((ended.exit_code, ended.reason.as_str()), (Some(3), "Error"));
    assert_eq!(ended.message, "migration 7 failed\n");
    assert_eq!(shown_status(&api, "failing"), "Init:Error");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_contexts_are_seen_from_inside_the_container() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let node = node_with_images(&master.api_addr, &client).await?;
    let api = master.api_addr.clone();

    apply_yaml(&api, dir.path(), "confined", CONFINED_POD)?;
    wait_for("the confined pod Running", SETTLE, || async {
        get_pod(&client, "confined").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let seen = wait_for("the confined pod's report", SETTLE, || async {
        let text = logs(&api, "confined", "main");
        text.contains("done").then_some(text)
    })
    .await
    .with_context(|| node.log_tail())?;
    let line = |prefix: &str| {
        let found = seen.lines().find(|l| l.starts_with(prefix));
        found.unwrap_or_default().to_owned()
    };
    // runAsUser and runAsGroup; supplementalGroups and fsGroup joined.
    let ids = line("uid=");
    assert!(ids.starts_with("uid=1000 gid=3000 groups="), "{seen}");
    let groups: Vec<&str> = ids
        .split("groups=")
        .nth(1)
        .unwrap_or("")
        .split(' ')
        .collect();
    for group in ["3000", "2000", "4000"] {
        assert!(groups.contains(&group), "{group} in {ids}");
    }
    // The fsGroup owns the emptyDir (set-group-ID, so new files too) and
    // the configMap's files.
    assert_eq!(line("data="), "data=2000 2777", "{seen}");
    assert_eq!(line("file="), "file=2000", "{seen}");
    assert_eq!(line("config="), "config=2000", "{seen}");
    // readOnlyRootFilesystem.
    assert_eq!(line("root="), "root=read-only", "{seen}");
    // No new privileges, no capabilities, the seccomp filter (mode 2).
    assert_eq!(line("NoNewPrivs:"), "NoNewPrivs:1", "{seen}");
    assert_eq!(line("CapEff:"), "CapEff:0000000000000000", "{seen}");
    assert_eq!(line("Seccomp:"), "Seccomp:2", "{seen}");

    // runAsNonRoot keeps a root image from starting, saying why.
    apply_yaml(&api, dir.path(), "rooted", &non_root_pod("rooted", IMAGE))?;
    let waiting = wait_for("CreateContainerConfigError", SETTLE, || async {
        let pod = get_pod(&client, "rooted").await?;
        let state = pod.status?.container_statuses.first()?.state.clone()?;
        let waiting = state.waiting?;
        (waiting.reason == "CreateContainerConfigError").then_some(waiting)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        waiting.message.starts_with(
            "container has runAsNonRoot and image will run as root (pod: \"rooted_default("
        ),
        "{}",
        waiting.message
    );
    assert!(
        waiting.message.ends_with(", container: main)"),
        "{}",
        waiting.message
    );

    // An image whose USER is a name of its /etc/passwd runs as that user,
    // which runAsNonRoot lets start.
    apply_yaml(
        &api,
        dir.path(),
        "named",
        &non_root_pod("named", NOBODY_IMAGE),
    )?;
    wait_for("the named pod Running", SETTLE, || async {
        get_pod(&client, "named").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_for("the named pod's ids", SETTLE, || async {
        logs(&api, "named", "main")
            .contains("uid=65534 gid=65534")
            .then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    Ok(())
}
