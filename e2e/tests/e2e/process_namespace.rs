//! `shareProcessNamespace` on a real `skiff agent` with a private
//! containerd and the static-busybox image: a pod of two containers that
//! shares its PID namespace, seen from inside (`ps` in one container lists
//! the other's `sleep`, and PID 1 is the pod's pause process, not the
//! container's own command) and from the node (the pause process by its
//! pid file, each container's task in its PID namespace), beside the same
//! pod without the flag, whose containers see only their own processes.
//! An agent killed and started again adopts the pod as it was: the same
//! pause process, the same container processes, nothing restarted. The
//! pause process goes with the pod. Asking for both `shareProcessNamespace`
//! and `hostPID` is refused with Kubernetes' message.

use std::path::PathBuf;
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

/// Pod `name` with containers `a` (`sleep 3601`) and `b` (`sleep 3602`),
/// with `extra` lines in its spec.
fn pod_of_two(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
{extra}  terminationGracePeriodSeconds: 1
  containers:
  - {{name: a, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3601"]}}
  - {{name: b, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, "3602"]}}
"#
    )
}

async fn get_pod(client: &Client, name: &str) -> Option<v1::Pod> {
    match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", name).await.ok()?).kind {
        Some(Body::Pod(pod)) => Some(pod),
        _ => None,
    }
}

/// The processes `ps` lists in `container` of pod `pod`: (PID, command).
fn processes(api: &str, pod: &str, container: &str) -> Vec<(u32, String)> {
    let out = ctl(api, &["exec", pod, "-c", container, "--", "ps"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ps in {pod}/{container}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // busybox: `PID USER COMMAND` (with `TIME` in some builds): the
    // command is what stands from the header's COMMAND column on.
    let mut lines = text.lines();
    let at = lines
        .next()
        .and_then(|header| header.find("COMMAND"))
        .unwrap_or_else(|| panic!("ps in {pod}/{container} without a COMMAND column: {text}"));
    lines
        .filter_map(|line| {
            let pid = line.split_whitespace().next()?.parse().ok()?;
            Some((pid, line.get(at..)?.trim().to_owned()))
        })
        .collect()
}

/// The command line of PID 1 as `container` of pod `pod` sees it, its
/// arguments joined by spaces (read whole: `ps` cuts lines at 80
/// columns).
fn pid_1(api: &str, pod: &str, container: &str) -> String {
    let cat = ["exec", pod, "-c", container, "--", "cat", "/proc/1/cmdline"];
    let out = ctl(api, &cat);
    assert!(out.status.success(), "{out:?}");
    let args: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    args.join(" ")
}

fn lists(list: &[(u32, String)], command: &str) -> bool {
    list.iter().any(|(_, c)| c == command)
}

/// The PID namespace process `pid` of the node is in.
fn pid_namespace(pid: u32) -> anyhow::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .with_context(|| format!("the PID namespace of process {pid}"))
}

/// The PID in the pause process file of pod `uid`, if the file is there,
/// and whether that process is the pod's pause process.
fn pause_process(node: &RuntimeNode, uid: &str) -> Option<(u32, bool)> {
    let file = node.data_dir().join("pause").join(uid);
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    Some((pid, cmdline == format!("skiff-pause\0{uid}\0").into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_sharing_its_process_namespace_sees_its_containers_processes() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let client = master.client();
    let api = master.api_addr.clone();
    let image = BusyboxImage::build()?;
    let mut node = RuntimeNode::start(
        &api,
        "node-a",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;

    // Both at once is refused, naming the field, as Kubernetes does.
    let both = pod_of_two("both", "  hostPID: true\n  shareProcessNamespace: true\n");
    let refused = apply_yaml(&api, dir.path(), "both", &both)
        .expect_err("shareProcessNamespace with hostPID is refused")
        .to_string();
    assert!(
        refused.contains("spec.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"),
        "{refused}"
    );
    assert!(get_pod(&client, "both").await.is_none(), "not stored");

    let shared = pod_of_two("shared", "  shareProcessNamespace: true\n");
    apply_yaml(&api, dir.path(), "shared", &shared)?;
    apply_yaml(&api, dir.path(), "private", &pod_of_two("private", ""))?;
    let mut uids = Vec::new();
    for name in ["shared", "private"] {
        let pod = wait_for("the pod running", SETTLE, || async {
            get_pod(&client, name).await.filter(is_running_ready)
        })
        .await
        .with_context(|| node.log_tail())?;
        uids.push(pod.metadata.context("metadata")?.uid);
    }
    let (shared_uid, private_uid) = (uids[0].clone(), uids[1].clone());

    // From inside: b sees a's sleep (and a sees b's), under the pause
    // process as PID 1.
    let seen = processes(&api, "shared", "b");
    assert!(
        lists(&seen, "sleep 3601"),
        "a's process seen from b: {seen:?}"
    );
    assert!(lists(&seen, "sleep 3602"), "{seen:?}");
    let pause_command = format!("skiff-pause {shared_uid}");
    assert_eq!(pid_1(&api, "shared", "b"), pause_command, "{seen:?}");
    // busybox's ps shows it as well (cut at 80 columns), by its name.
    let init = seen.iter().find(|(pid, _)| *pid == 1);
    assert!(
        init.is_some_and(|(_, command)| command.starts_with("skiff-pause ")),
        "{seen:?}"
    );
    let seen_from_a = processes(&api, "shared", "a");
    assert!(lists(&seen_from_a, "sleep 3602"), "{seen_from_a:?}");
    // Without the flag each container has its own: b alone, its command
    // PID 1.
    let own = processes(&api, "private", "b");
    assert!(!lists(&own, "sleep 3601"), "a's process not seen: {own:?}");
    assert_eq!(pid_1(&api, "private", "b"), "sleep 3602", "{own:?}");

    // From the node: the pause process by its pid file, both containers in
    // its PID namespace; none for the other pod, whose containers have a
    // namespace each.
    let (pause, is_pause) =
        pause_process(&node, &shared_uid).context("the shared pod's pause process file")?;
    assert!(is_pause, "process {pause} is the pod's pause process");
    let tasks = node.task_pids()?;
    let task = |uid: &str, name: &str| {
        tasks
            .get(&format!("{uid}_{name}"))
            .copied()
            .with_context(|| format!("task {uid}_{name} in {tasks:?}"))
    };
    let pod_namespace = pid_namespace(pause)?;
    for name in ["a", "b"] {
        assert_eq!(
            pid_namespace(task(&shared_uid, name)?)?,
            pod_namespace,
            "{name}"
        );
    }
    assert!(pause_process(&node, &private_uid).is_none());
    let private_a = pid_namespace(task(&private_uid, "a")?)?;
    let private_b = pid_namespace(task(&private_uid, "b")?)?;
    assert_ne!(private_a, private_b);
    assert_ne!(private_a, pod_namespace);

    // An agent killed and started again adopts the pod as it was.
    node.agent.kill();
    node.agent.restart()?;
    wait_for("the agent adopting its containers", SETTLE, || async {
        node.agent
            .log()
            .contains("adopted running container")
            .then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    // A few of its passes over the pods.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(node.task_pids()?, tasks, "the same container processes");
    assert_eq!(
        pause_process(&node, &shared_uid),
        Some((pause, true)),
        "the same pause process"
    );
    assert_eq!(pid_namespace(pause)?, pod_namespace);
    let seen = processes(&api, "shared", "b");
    assert!(lists(&seen, "sleep 3601"), "{seen:?}");
    assert_eq!(pid_1(&api, "shared", "b"), pause_command);
    let pod = get_pod(&client, "shared").await.context("the shared pod")?;
    let status = pod.status.context("a status")?;
    for c in &status.container_statuses {
        assert_eq!(c.restart_count, 0, "{} restarted", c.name);
    }

    // The pause process goes with the pod.
    let out = ctl(&api, &["delete", "pod", "shared"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the pod gone", SETTLE, || async {
        get_pod(&client, "shared").await.is_none().then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        pause_process(&node, &shared_uid).is_none(),
        "pid file removed"
    );
    wait_for("the pause process gone", SETTLE, || async {
        let cmdline = std::fs::read(format!("/proc/{pause}/cmdline")).unwrap_or_default();
        (cmdline != format!("skiff-pause\0{shared_uid}\0").into_bytes()).then_some(())
    })
    .await?;
    Ok(())
}
