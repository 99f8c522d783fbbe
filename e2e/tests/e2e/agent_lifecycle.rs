//! Keeping containers alive: restart policies and CrashLoopBackOff, OOM
//! kills under a memory limit, probes (a tcpSocket one with `host` dialed
//! from the node), and static stability (an agent restart adopts running
//! containers; a master outage leaves them alone).
//! Real master, private containerd, real agent, busybox image imported
//! from an archive.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{
    is_running_ready, pods_with_app, wait_app_ready, wait_node_ready, RuntimeNode,
};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_objects::Kind;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
const IMAGE: &str = "e2e/busybox:1";

/// A master and one node with the busybox image imported.
async fn cluster() -> anyhow::Result<(tempfile::TempDir, MasterProcess, RuntimeNode)> {
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    wait_node_ready(&master.client(), "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    Ok((dir, master, node))
}

/// A bare pod running `script` under `sh -c`.
fn pod(name: &str, script: &str, restart_policy: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "{script}"]
{extra}"#
    )
}

async fn get_pod(master: &MasterProcess, name: &str) -> Option<v1::Pod> {
    match master
        .client()
        .get(Kind::Pod, "default", name)
        .await
        .ok()
        .map(skiff_objects::pods::in_model)?
        .kind
    {
        Some(skiff_proto::api::object::Kind::Pod(p)) => Some(p),
        _ => None,
    }
}

fn container(pod: &v1::Pod) -> Option<v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containers_restart_and_crashing_ones_back_off() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master, node) = cluster().await?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "sleeper",
        &pod("sleeper", "sleep 3600", "Always", ""),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "crasher",
        &pod("crasher", "echo crash-$$; exit 3", "Always", ""),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "once",
        &pod("once", "exit 4", "Never", ""),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "onfail",
        &pod("onfail", "exit 0", "OnFailure", ""),
    )?;

    wait_for("sleeper Running", Duration::from_secs(30), || async {
        get_pod(&master, "sleeper").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let sleeper_id = {
        let p = get_pod(&master, "sleeper").await.context("sleeper")?;
        format!("{}_main", p.metadata.unwrap().uid)
    };
    let pid = *node.task_pids()?.get(&sleeper_id).context("sleeper task")?;
    // The container's process, found through containerd: the test started it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let restarted = wait_for(
        "sleeper restarted once",
        Duration::from_secs(30),
        || async {
            let p = get_pod(&master, "sleeper").await?;
            let c = container(&p)?;
            (c.restart_count == 1 && is_running_ready(&p)).then_some(c)
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    let last = restarted
        .last_state
        .unwrap()
        .terminated
        .context("lastState.terminated")?;
    assert_eq!(last.exit_code, Some(137), "killed by SIGKILL");
    let new_pid = node.task_pids()?[&sleeper_id];
    assert_ne!(new_pid, pid, "a new process runs");

    // Crashing: restarted at once, then held back 10 s, shown as CrashLoopBackOff.
    let crashing = wait_for(
        "crasher in CrashLoopBackOff",
        Duration::from_secs(40),
        || async {
            let c = container(&get_pod(&master, "crasher").await?)?;
            let waiting = c.state.clone()?.waiting?;
            (waiting.reason == "CrashLoopBackOff" && c.restart_count >= 1).then_some(c)
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    let last = crashing
        .last_state
        .unwrap()
        .terminated
        .context("lastState.terminated")?;
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.reason, "Error");
    let message = crashing.state.unwrap().waiting.unwrap().message;
    assert!(message.contains("back-off 10s"), "{message}");
    // It stays backed off: no restart for the 10 s that follow.
    let count = crashing.restart_count;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = container(&get_pod(&master, "crasher").await.unwrap()).unwrap();
    assert_eq!(c.restart_count, count, "no restart during the back-off");
    let prev = ctl(&master.api_addr, &["logs", "crasher", "--previous"]);
    assert!(
        String::from_utf8_lossy(&prev.stdout).contains("crash-"),
        "{prev:?}"
    );

    // Never: Failed, not restarted. OnFailure with exit 0: Succeeded.
    let once = wait_for("once Failed", Duration::from_secs(30), || async {
        get_pod(&master, "once")
            .await
            .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Failed"))
    })
    .await?;
    let c = container(&once).unwrap();
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.state.unwrap().terminated.unwrap().exit_code, Some(4));
    wait_for("onfail Succeeded", Duration::from_secs(30), || async {
        get_pod(&master, "onfail")
            .await
            .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Succeeded"))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_oom_killed() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master, node) = cluster().await?;
    let limits = "    resources:\n      limits: {memory: 16Mi}\n";
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "hog",
        &pod("hog", "head -c 200m /dev/zero | tail", "Never", limits),
    )?;
    let hog = wait_for("hog terminated", Duration::from_secs(60), || async {
        get_pod(&master, "hog")
            .await
            .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Failed"))
    })
    .await
    .with_context(|| node.log_tail())?;
    let t = container(&hog).unwrap().state.unwrap().terminated.unwrap();
    assert_eq!(t.reason, "OOMKilled", "{t:?}");
    assert_eq!(t.exit_code, Some(137));

    // The limits are the container's cgroup settings (v1 or v2).
    let limits = "    resources:\n      limits: {memory: 64Mi, cpu: 250m}\n";
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "capped",
        &pod("capped", "sleep 3600", "Always", limits),
    )?;
    let capped = wait_for("capped Running", Duration::from_secs(30), || async {
        get_pod(&master, "capped").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    let uid = capped.metadata.unwrap().uid;
    let cgroup = |controller: &str, v1: &str, v2: &str| -> Option<String> {
        [
            format!("/sys/fs/cgroup/{controller}/skiff/{uid}/main/{v1}"),
            format!("/sys/fs/cgroup/skiff/{uid}/main/{v2}"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
    };
    let memory =
        cgroup("memory", "memory.limit_in_bytes", "memory.max").context("memory limit file")?;
    assert_eq!(memory, (64u64 << 20).to_string());
    let cpu = cgroup("cpu", "cpu.cfs_quota_us", "cpu.max").context("cpu limit file")?;
    assert!(cpu == "25000" || cpu == "25000 100000", "cpu quota {cpu}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_restart_unhealthy_containers() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master, node) = cluster().await?;
    let readiness = r#"    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /index.html, port: http}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      initialDelaySeconds: 5
      periodSeconds: 1
"#;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "slow",
        &pod(
            "slow",
            "sleep 3; exec httpd -f -p 8080 -h /www",
            "Always",
            readiness,
        ),
    )?;
    let liveness = r#"    livenessProbe:
      exec: {command: [cat, /tmp/healthy]}
      periodSeconds: 1
      failureThreshold: 2
"#;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "sick",
        &pod(
            "sick",
            "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600",
            "Always",
            liveness,
        ),
    )?;
    // A tcpSocket probe with a `host` is dialed from the node, as the
    // kubelet dials it: the master's API port is open on the node's
    // loopback, and nothing listens on the pod's.
    let api_port = master
        .api_addr
        .rsplit(':')
        .next()
        .context("the master's API port")?;
    let outside = format!(
        "    readinessProbe:\n      tcpSocket: {{host: localhost, port: {api_port}}}\n      periodSeconds: 1\n"
    );
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "outside",
        &pod("outside", "sleep 3600", "Always", &outside),
    )?;
    // Running but not Ready until httpd answers.
    wait_for(
        "slow Running but not ready",
        Duration::from_secs(30),
        || async {
            let p = get_pod(&master, "slow").await?;
            let s = p.status?;
            (s.phase == "Running" && !container(&get_pod(&master, "slow").await?)?.ready)
                .then_some(())
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    wait_for("slow Ready", Duration::from_secs(30), || async {
        get_pod(&master, "slow").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    wait_for("outside Ready", Duration::from_secs(30), || async {
        get_pod(&master, "outside").await.filter(is_running_ready)
    })
    .await
    .with_context(|| node.log_tail())?;
    // The exec liveness probe fails once the file is gone: restarted.
    wait_for(
        "sick restarted by its liveness probe",
        Duration::from_secs(40),
        || async {
            let c = container(&get_pod(&master, "sick").await?)?;
            (c.restart_count >= 1).then_some(())
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    // The healthy one was never restarted.
    let c = container(&get_pod(&master, "slow").await.unwrap()).unwrap();
    assert_eq!(c.restart_count, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_agent_crashes_and_master_outages() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, mut master, mut node) = cluster().await?;
    let deploy = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: steady
spec:
  replicas: 3
  selector:
    matchLabels: {{app: steady}}
  template:
    metadata:
      labels: {{app: steady}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sleep", "3600"]
"#
    );
    apply_yaml(&master.api_addr, dir.path(), "steady", &deploy)?;
    let client = master.client();
    wait_app_ready(&client, "steady", 3, Duration::from_secs(40))
        .await
        .with_context(|| node.log_tail())?;
    let before = node.task_pids()?;
    assert_eq!(before.len(), 3);

    // SIGKILL the agent and start it again: same processes, no restarts.
    node.agent.kill();
    node.agent.restart()?;
    wait_for(
        "agent adopted its containers",
        Duration::from_secs(20),
        || async {
            node.agent
                .log()
                .contains("adopted running container")
                .then_some(())
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.task_pids()?,
        before,
        "the same PIDs after an agent restart"
    );
    let pods = pods_with_app(&client, "default", "steady").await?;
    for p in &pods {
        assert!(is_running_ready(p));
        assert_eq!(container(p).unwrap().restart_count, 0);
    }

    // No master for 30 s: the containers keep running, and a container
    // that dies meanwhile is restarted by the agent alone.
    master.stop(Duration::from_secs(10))?;
    let (victim, victim_pid) = before.iter().next().map(|(k, v)| (k.clone(), *v)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = node.task_pids()?;
    assert_eq!(during.len(), 3, "all three containers run: {during:?}");
    assert_ne!(
        during[&victim], victim_pid,
        "the killed one was restarted without a master"
    );
    for (id, pid) in &before {
        if *id != victim {
            assert_eq!(during[id], *pid, "{id} untouched");
        }
    }

    // The master returns: nothing duplicated, nothing dropped.
    master.restart()?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let client = master.client();
    wait_for("statuses caught up", Duration::from_secs(30), || async {
        let pods = pods_with_app(&client, "default", "steady").await.ok()?;
        let restarts: i32 = pods
            .iter()
            .filter_map(container)
            .map(|c| c.restart_count)
            .sum();
        (pods.len() == 3 && pods.iter().all(is_running_ready) && restarts == 1).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.task_pids()?,
        during,
        "reconciling after the outage changed nothing"
    );
    assert_eq!(node.containers()?.len(), 3);
    Ok(())
}

/// A master allocates through mimalloc and an agent through the system
/// allocator (`cli/src/allocator.rs`): each process says which when it
/// starts, and the choice is made from the subcommand before `main`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_allocates_through_mimalloc_and_an_agent_through_the_system_allocator(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (_dir, master, node) = cluster().await?;
    let allocator_line = |log: &str| {
        log.lines()
            .find(|l| l.contains("memory allocator"))
            .map(str::to_owned)
    };
    let master_log = std::fs::read_to_string(&master.log_path)?;
    let line = allocator_line(&master_log).context("the master did not log its allocator")?;
    assert!(line.contains("mimalloc"), "master: {line}");
    let line = allocator_line(&node.agent.log()).context("the agent did not log its allocator")?;
    assert!(
        line.contains("system") && !line.contains("mimalloc"),
        "agent: {line}"
    );
    Ok(())
}
