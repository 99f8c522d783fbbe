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
//! `/etc/passwd`. Then the container lifecycle: a startup probe holding
//! back the liveness probe until it passes (and restarting a container
//! that never starts), a postStart hook the container waits for (and one
//! that fails, killing it), a preStop hook that runs before SIGTERM (seen
//! in a hostPath file); a pod in the host's network, PID and IPC
//! namespaces (compared with the test's own, and reached on the node's
//! loopback); and `imagePullSecrets` pulling from a password-protected
//! loopback registry (`docker-registry` with htpasswd), with the pull
//! refused, saying why, without them, with wrong ones or a missing one,
//! a wrong Secret listed before the right one (each tried in turn), and
//! the pull secrets of a pod's service account.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{is_running_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::registry::LoopbackRegistry;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, free_port, wait_for};
use skiff_master::client::Client;
use skiff_objects::{generic, Kind};
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
      if { echo x > /written; } 2>/dev/null; then echo root=writable; else echo root=read-only; fi
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

/// The Events about pod `name`, as (reason, message).
async fn pod_events(client: &Client, name: &str) -> Vec<(String, String)> {
    let Ok(list) = client.list(Kind::Event, "default").await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter_map(|o| match &o.kind {
            Some(Body::Generic(g)) => Some(generic::to_json(g)),
            _ => None,
        })
        .filter(|e| e["involvedObject"]["kind"] == "Pod" && e["involvedObject"]["name"] == name)
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default().to_owned();
            (text("reason"), text("message"))
        })
        .collect()
}

/// The status of the first app container of `pod`.
fn main_status(pod: &v1::Pod) -> Option<&v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.first()
}

/// A container that becomes ready to serve 3 s after it starts; its
/// liveness probe fails until then, so only a startup probe holding it
/// back keeps the container from being restarted.
const SLOW_STARTER: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: slow-starter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 3; echo up > /tmp/up; sleep 3600"]
    startupProbe:
      exec: {command: [sh, -c, "[ -f /tmp/up ]"]}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {command: [sh, -c, "[ -f /tmp/up ]"]}
      periodSeconds: 1
      failureThreshold: 1
"#;

/// A container whose startup probe never passes.
const NEVER_STARTS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: never-starts}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 3600"]
    startupProbe:
      exec: {command: [sh, -c, "[ -f /tmp/never ]"]}
      periodSeconds: 1
      failureThreshold: 2
"#;

/// A postStart hook that takes 5 s to write the file the container waits
/// for; a preStop hook and a SIGTERM trap that append to `order` in the
/// host directory `{dir}`.
fn hooked_pod(dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo sigterm >> /out/order; exit 0' TERM
      while [ ! -f /tmp/warm ]; do sleep 1; done
      echo "saw $$(cat /tmp/warm)"
      while true; do sleep 1; done
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "sleep 5; echo post-start > /tmp/warm"]}}
      preStop:
        exec: {{command: [sh, -c, "echo pre-stop >> /out/order"]}}
    volumeMounts: [{{name: out, mountPath: /out}}]
  volumes:
  - {{name: out, hostPath: {{path: {dir}, type: Directory}}}}
"#
    )
}

/// A pod whose postStart hook fails.
const FAILING_HOOK: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: failing-hook}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 3600"]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "exit 3"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probes_and_lifecycle_hooks_run_as_the_kubelet_runs_them() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let node = node_with_images(&master.api_addr, &client).await?;
    let api = master.api_addr.clone();

    // The startup probe holds the liveness probe back: the container is
    // not restarted, and is started (then ready) once it passes.
    apply_yaml(&api, dir.path(), "slow-starter", SLOW_STARTER)?;
    let pod = wait_for("slow-starter running, not started", SETTLE, || async {
        let pod = get_pod(&client, "slow-starter").await?;
        let main = main_status(&pod)?;
        let running = main.state.as_ref()?.running.is_some();
        (running && main.started == Some(false)).then_some(pod)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(!main_status(&pod).unwrap().ready);
    let pod = wait_for("slow-starter ready", SETTLE, || async {
        get_pod(&client, "slow-starter")
            .await
            .filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let main = main_status(&pod).context("main's status")?;
    assert_eq!(main.started, Some(true));
    assert_eq!(main.restart_count, 0, "liveness waited for startup");

    // One that never starts is restarted, as a failed liveness probe is.
    apply_yaml(&api, dir.path(), "never-starts", NEVER_STARTS)?;
    wait_for("never-starts restarted", SETTLE, || async {
        let pod = get_pod(&client, "never-starts").await?;
        (main_status(&pod)?.restart_count >= 1).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let events = wait_for("the Killing Event", SETTLE, || async {
        let events = pod_events(&client, "never-starts").await;
        events.iter().any(|(r, _)| r == "Killing").then_some(events)
    })
    .await?;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("failed startup probe")),
        "{events:?}"
    );
    assert!(events.iter().any(|(r, _)| r == "Unhealthy"), "{events:?}");

    // postStart: the container shows waiting while its hook runs, then
    // runs with what the hook made.
    let out = tempfile::Builder::new().prefix("skiff-hooks-").tempdir()?;
    let out_dir = out.path().display().to_string();
    apply_yaml(&api, dir.path(), "hooked", &hooked_pod(&out_dir))?;
    let pod = wait_for("hooked created, its hook running", SETTLE, || async {
        let pod = get_pod(&client, "hooked").await?;
        let main = main_status(&pod)?;
        let waiting = main.state.as_ref()?.waiting.as_ref()?;
        (waiting.reason == "ContainerCreating" && !main.container_id.is_empty()).then_some(pod)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(!main_status(&pod).unwrap().ready);
    wait_for("hooked ready", SETTLE, || async {
        get_pod(&client, "hooked").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_for("the container saw the hook's file", SETTLE, || async {
        logs(&api, "hooked", "main")
            .contains("saw post-start")
            .then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;

    // preStop: before the SIGTERM, within the grace period.
    client.delete(Kind::Pod, "default", "hooked", "").await?;
    wait_for("hooked gone", SETTLE, || async {
        get_pod(&client, "hooked").await.is_none().then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let order = std::fs::read_to_string(out.path().join("order"))?;
    assert_eq!(order, "pre-stop\nsigterm\n");

    // A failing postStart hook kills the container, saying why.
    apply_yaml(&api, dir.path(), "failing-hook", FAILING_HOOK)?;
    let pod = wait_for("failing-hook Failed", SETTLE, || async {
        let pod = get_pod(&client, "failing-hook").await?;
        (pod.status.as_ref()?.phase == "Failed").then_some(pod)
    })
    .await
    .with_context(|| node.log_tail())?;
    let main = main_status(&pod).context("main's status")?;
    assert!(main
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some());
    let events = wait_for("FailedPostStartHook", SETTLE, || async {
        let events = pod_events(&client, "failing-hook").await;
        events
            .iter()
            .any(|(r, _)| r == "FailedPostStartHook")
            .then_some(events)
    })
    .await?;
    let (_, message) = events
        .iter()
        .find(|(r, _)| r == "FailedPostStartHook")
        .unwrap();
    assert!(
        message.starts_with("Exec lifecycle hook ([sh -c exit 3]) for Container \"main\" in Pod \"failing-hook_default("),
        "{message}"
    );
    assert!(message.ends_with("exited with 3"), "{message}");
    Ok(())
}

/// A pod in the node's network, PID and IPC namespaces that prints its
/// namespaces and hostname, then serves HTTP on `port` of the node.
fn host_pod(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: host-ns}}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      for ns in net pid ipc; do echo "$$ns=$$(busybox readlink /proc/self/ns/$$ns)"; done
      echo "hostname=$$(busybox hostname)"
      echo done
      echo host-network > /www/index.html
      exec httpd -f -p {port} -h /www
    ports: [{{containerPort: {port}}}]
"#
    )
}

/// The same report from a pod with namespaces of its own.
const OWN_NS_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: own-ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c"]
    args:
    - |
      for ns in net pid ipc; do echo "$$ns=$$(busybox readlink /proc/self/ns/$$ns)"; done
      echo done
      sleep 3600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_the_hosts_namespaces_shares_the_nodes_network_processes_and_ipc(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let node = node_with_images(&master.api_addr, &client).await?;
    let api = master.api_addr.clone();
    let port = free_port();
    apply_yaml(&api, dir.path(), "host-ns", &host_pod(port))?;
    apply_yaml(&api, dir.path(), "own-ns", OWN_NS_POD)?;
    for name in ["host-ns", "own-ns"] {
        wait_for("the pod running", SETTLE, || async {
            get_pod(&client, name).await.filter(is_running_ready)
        })
        .await
        .with_context(|| node.log_tail())?;
    }
    let report = |name: &'static str| {
        let api = api.clone();
        async move {
            wait_for("the pod's report", SETTLE, || async {
                let text = logs(&api, name, "main");
                text.contains("done").then_some(text)
            })
            .await
        }
    };
    let shared = report("host-ns").await.with_context(|| node.log_tail())?;
    let own = report("own-ns").await.with_context(|| node.log_tail())?;
    // The agent runs in the test's namespaces (and so does containerd).
    for ns in ["net", "pid", "ipc"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}"))?;
        let line = format!("{ns}={}", mine.display());
        assert!(shared.lines().any(|l| l == line), "{line} in {shared}");
        assert!(!own.lines().any(|l| l == line), "{line} not in {own}");
    }
    let hostname = nix::unistd::gethostname()?;
    let line = format!("hostname={}", hostname.to_string_lossy());
    assert!(shared.lines().any(|l| l == line), "{line} in {shared}");
    // Its address is the node's, and it serves on the node's port.
    let pod = get_pod(&client, "host-ns").await.context("host-ns")?;
    let status = pod.status.context("a status")?;
    assert_eq!(status.pod_ip, status.host_ip);
    let (code, body) = wait_for("the node's port answering", SETTLE, || async {
        skiff_e2e::http_get(&format!("127.0.0.1:{port}"), "/").ok()
    })
    .await?;
    assert_eq!((code, body.trim()), (200, "host-network"));
    Ok(())
}

/// A `kubernetes.io/dockerconfigjson` Secret for `registry`.
fn pull_secret(name: &str, registry: &str, user: &str, password: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{{"auths": {{"{registry}": {{"username": "{user}", "password": "{password}"}}}}}}'
"#
    )
}

/// A pod pulling `image` every time it starts; `extra` goes into its spec.
fn pulling_pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: main
    image: {image}
    imagePullPolicy: Always
    command: ["sh", "-c", "echo pulled; sleep 3600"]
"#
    )
}

/// The waiting state of pod `name`'s container once it is an image pull
/// failure.
async fn pull_refusal(client: &Client, name: &str) -> anyhow::Result<v1::ContainerStateWaiting> {
    wait_for("the pull refused", SETTLE, || async {
        let pod = get_pod(client, name).await?;
        let waiting = main_status(&pod)?.state.clone()?.waiting?;
        waiting.reason.contains("ImagePull").then_some(waiting)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_pull_from_a_password_protected_registry() -> anyhow::Result<()> {
    if !e2e_prerequisites(&[TOOLS, &["docker-registry", "skopeo", "perl"]].concat()) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let registry = LoopbackRegistry::start_with_auth("skiff", "s3cret")?;
    let image = BusyboxImage::build()?;
    let archive = dir.path().join("busybox.oci.tar");
    image.write_oci_archive(&archive, "docker.io/library/busybox:e2e")?;
    registry.push_oci_archive(&archive, "team/busybox:1")?;
    let addr = registry.addr();
    // The agent's registries.yaml only says the registry speaks plain
    // HTTP: the credentials come from the pods' Secrets.
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| {
            let config = format!("configs:\n  \"{addr}\":\n    plainHTTP: true\n");
            std::fs::write(data.join("registries.yaml"), config)?;
            Ok(())
        },
        &[],
    )?;
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    let api = master.api_addr.clone();
    let image_ref = registry.image_ref("team/busybox:1");
    let secrets = [
        pull_secret("regcred", &addr, "skiff", "s3cret"),
        pull_secret("wrongcred", &addr, "skiff", "nope"),
        pull_secret("othercred", &addr, "other", "nope"),
    ]
    .join("---\n");
    apply_yaml(&api, dir.path(), "secrets", &secrets)?;

    // With the Secret: pulled, and running.
    let with = "  imagePullSecrets: [{name: regcred}]\n";
    apply_yaml(
        &api,
        dir.path(),
        "with-secret",
        &pulling_pod("with-secret", &image_ref, with),
    )?;
    wait_for("with-secret running", SETTLE, || async {
        get_pod(&client, "with-secret")
            .await
            .filter(is_running_ready)
    })
    .await
    .with_context(|| format!("{}\n{}", node.log_tail(), registry.log_tail()))?;
    wait_for("with-secret's log", SETTLE, || async {
        logs(&api, "with-secret", "main")
            .contains("pulled")
            .then_some(())
    })
    .await?;

    // Without: refused, saying there were no credentials.
    apply_yaml(
        &api,
        dir.path(),
        "without",
        &pulling_pod("without", &image_ref, ""),
    )?;
    let waiting = pull_refusal(&client, "without")
        .await
        .with_context(|| node.log_tail())?;
    for part in [
        addr.as_str(),
        "401 Unauthorized",
        "no credentials for this registry in registries.yaml or the pod's imagePullSecrets",
    ] {
        assert!(waiting.message.contains(part), "{part:?} in {waiting:?}");
    }

    // Wrong ones: the registry's 401, naming the Secret.
    let wrong = "  imagePullSecrets: [{name: wrongcred}]\n";
    apply_yaml(
        &api,
        dir.path(),
        "wrong",
        &pulling_pod("wrong", &image_ref, wrong),
    )?;
    let waiting = pull_refusal(&client, "wrong")
        .await
        .with_context(|| node.log_tail())?;
    assert!(waiting.message.contains("401 Unauthorized"), "{waiting:?}");
    assert!(
        waiting
            .message
            .contains(r#"refused with the credentials from imagePullSecret "wrongcred""#),
        "{waiting:?}"
    );

    // A wrong Secret listed before the right one: each matching
    // credential is tried in turn, as the kubelet does, and the pod runs.
    let wrong_first = "  imagePullSecrets: [{name: wrongcred}, {name: regcred}]\n";
    apply_yaml(
        &api,
        dir.path(),
        "wrong-first",
        &pulling_pod("wrong-first", &image_ref, wrong_first),
    )?;
    wait_for("wrong-first running", SETTLE, || async {
        get_pod(&client, "wrong-first")
            .await
            .filter(is_running_ready)
    })
    .await
    .with_context(|| format!("{}\n{}", node.log_tail(), registry.log_tail()))?;

    // Only wrong ones: refused, counting them and naming whose they were.
    let all_wrong = "  imagePullSecrets: [{name: wrongcred}, {name: othercred}]\n";
    apply_yaml(
        &api,
        dir.path(),
        "all-wrong",
        &pulling_pod("all-wrong", &image_ref, all_wrong),
    )?;
    let waiting = pull_refusal(&client, "all-wrong")
        .await
        .with_context(|| node.log_tail())?;
    for part in [
        format!("none of the 2 credentials for registry {addr} worked"),
        r#"imagePullSecret "wrongcred", imagePullSecret "othercred""#.to_owned(),
        "401 Unauthorized".to_owned(),
    ] {
        assert!(waiting.message.contains(&part), "{part:?} in {waiting:?}");
    }

    // A Secret that does not exist: named.
    let missing = "  imagePullSecrets: [{name: absent}]\n";
    apply_yaml(
        &api,
        dir.path(),
        "missing",
        &pulling_pod("missing", &image_ref, missing),
    )?;
    let waiting = pull_refusal(&client, "missing")
        .await
        .with_context(|| node.log_tail())?;
    assert!(
        waiting
            .message
            .ends_with(r#"(imagePullSecrets: secret "absent" not found)"#),
        "{waiting:?}"
    );
    let events = wait_for("FailedToRetrieveImagePullSecret", SETTLE, || async {
        let events = pod_events(&client, "missing").await;
        events
            .iter()
            .any(|(r, _)| r == "FailedToRetrieveImagePullSecret")
            .then_some(events)
    })
    .await?;
    assert!(
        events
            .iter()
            .any(|(_, m)| m.contains(r#"secret "absent" not found"#)),
        "{events:?}"
    );

    // The pull secrets of the pod's service account, given at creation.
    let account = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: puller}
imagePullSecrets: [{name: regcred}]
"#;
    apply_yaml(&api, dir.path(), "puller", account)?;
    let by_account = "  serviceAccountName: puller\n";
    apply_yaml(
        &api,
        dir.path(),
        "from-account",
        &pulling_pod("from-account", &image_ref, by_account),
    )?;
    let pod = wait_for("from-account running", SETTLE, || async {
        get_pod(&client, "from-account")
            .await
            .filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let names: Vec<String> = pod
        .spec
        .context("a spec")?
        .image_pull_secrets
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["regcred"]);
    Ok(())
}
