//! Pods as real containers: a real `skiff master`, a private containerd,
//! a real `skiff agent`, a loopback registry and a static-busybox image
//! built by the test.

use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{pods_with_app, wait_app_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::ready_master;
use skiff_e2e::registry::LoopbackRegistry;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_objects::Kind;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];

fn deployment(name: &str, image: &str, replicas: u32, command: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "{command}"]
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_from_registry_runs_logs_and_cleans_up() -> anyhow::Result<()> {
    if !e2e_prerequisites(&[TOOLS, &["docker-registry", "skopeo"]].concat()) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let registry = LoopbackRegistry::start()?;
    let image = BusyboxImage::build()?;
    let archive = dir.path().join("busybox.oci.tar");
    image.write_oci_archive(&archive, "docker.io/library/busybox:e2e")?;
    registry.push_oci_archive(&archive, "e2e/busybox:1.0")?;
    let registry_addr = registry.addr();
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| {
            std::fs::write(
                data.join("registries.yaml"),
                format!("configs:\n  \"{registry_addr}\":\n    plainHTTP: true\n"),
            )?;
            Ok(())
        },
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;

    let image_ref = registry.image_ref("e2e/busybox:1.0");
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "web",
        &deployment(
            "web",
            &image_ref,
            2,
            "echo hello-from-$HOSTNAME; exec httpd -f -p 8080 -h /www",
            "",
        ),
    )?;
    let pods = wait_app_ready(&client, "web", 2, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;

    // Status as Kubernetes shows it.
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.host_ip, "127.0.0.1");
        let c = &status.container_statuses[0];
        assert_eq!(c.restart_count, 0);
        assert!(c.ready);
        assert!(c.container_id.starts_with("containerd://"), "{c:?}");
        assert!(c.image_id.starts_with("sha256:"), "{c:?}");
        assert!(c.state.as_ref().unwrap().running.is_some());
    }
    assert_eq!(
        node.task_pids()?.len(),
        2,
        "two running tasks in containerd"
    );

    // Logs through the master.
    let name = pods[0].metadata.as_ref().unwrap().name.clone();
    let logs = wait_for("the pod's log", Duration::from_secs(10), || async {
        let out = ctl(&master.api_addr, &["logs", &name]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains(&format!("hello-from-{name}")).then_some(text)
    })
    .await?;
    assert_eq!(logs.trim(), format!("hello-from-{name}"));
    // --tail and --follow: a follower sees lines written after it started.
    let tail = ctl(&master.api_addr, &["logs", &name, "--tail", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout).trim(),
        format!("hello-from-{name}")
    );
    let mut follower = skiff_e2e::ctl_command(&master.api_addr)
        .args(["logs", "-f", &name])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let follow_out = follower.stdout.take().context("follower stdout")?;
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(follow_out)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("GET /index.html"))
    });
    // httpd logs nothing by default; make the container write a line itself.
    let uid = pods[0].metadata.as_ref().unwrap().uid.clone();
    let pid = node.task_pids()?[&format!("{uid}_main")];
    {
        use std::io::Write;
        let mut stdout = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("/proc/{pid}/fd/1"))?;
        writeln!(stdout, "GET /index.html (written later)")?;
    }
    let followed = tokio::task::spawn_blocking(move || reader.join())
        .await?
        .map_err(|_| anyhow::anyhow!("follower thread"))?;
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        followed.is_some(),
        "logs -f shows lines written while following"
    );
    let missing = ctl(&master.api_addr, &["logs", &name, "-c", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));

    // Deleting the Deployment leaves nothing in containerd.
    let out = ctl(&master.api_addr, &["delete", "deployment", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("containers removed", Duration::from_secs(60), || async {
        let containers = node.containers().ok()?;
        let pods = client.list(Kind::Pod, "default").await.ok()?;
        (containers.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await
    .with_context(|| node.log_tail())?;
    let snapshots = node.snapshots()?;
    assert!(
        snapshots.iter().all(|s| s.starts_with("sha256:")),
        "only image layers remain, no container snapshots: {snapshots:?}"
    );
    let data = node.data_dir();
    let leftovers = |sub: &str| -> Vec<String> {
        std::fs::read_dir(data.join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        leftovers("netns").is_empty(),
        "netns left: {:?}",
        leftovers("netns")
    );
    assert!(
        leftovers("pods").is_empty(),
        "pod dirs left: {:?}",
        leftovers("pods")
    );
    assert!(leftovers("state/pods").is_empty(), "cached pods left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_gapped_archives_are_imported_and_corrupt_ones_skipped() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    // One archive is there at start, one arrives later, one is corrupt.
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| {
            image.write_docker_archive(
                &data.join("images/busybox-docker.tar"),
                "airgap/busybox:docker",
            )?;
            std::fs::write(
                data.join("images/broken.tar"),
                b"this is not a tar archive at all",
            )?;
            Ok(())
        },
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    let never = "        imagePullPolicy: Never\n";
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "docker",
        &deployment("docker", "airgap/busybox:docker", 1, "sleep 3600", never),
    )?;
    wait_app_ready(&client, "docker", 1, Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    let log = node.agent.log();
    assert!(
        log.contains("broken.tar") && log.contains("skipped image archive"),
        "the corrupt archive is reported by name: {}",
        node.agent.log_tail()
    );

    // An OCI archive dropped in while the agent runs.
    let staging = node.data_dir().join("oci.tar.partial");
    image.write_oci_archive(&staging, "registry.example/airgap/busybox:oci")?;
    std::fs::rename(&staging, node.data_dir().join("images/busybox-oci.tar"))?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "oci",
        &deployment(
            "oci",
            "registry.example/airgap/busybox:oci",
            1,
            "sleep 3600",
            never,
        ),
    )?;
    let pod = wait_app_ready(&client, "oci", 1, Duration::from_secs(30))
        .await
        .map(|pods| pods[0].clone())
        .with_context(|| node.log_tail())?;
    let status = pod.status.unwrap();
    assert_eq!(status.container_statuses[0].image_id, image.manifest_digest);

    // An image that is neither imported nor pullable under Never.
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "absent",
        &deployment("absent", "airgap/absent:1", 1, "sleep 3600", never),
    )?;
    let waiting = wait_for("ErrImageNeverPull", Duration::from_secs(30), || async {
        let pods = pods_with_app(&client, "default", "absent").await.ok()?;
        let s = pods.first()?.status.clone()?;
        let w = s.container_statuses.first()?.state.clone()?.waiting?;
        (w.reason == "ErrImageNeverPull").then_some(w)
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        waiting.message.contains("docker.io/airgap/absent:1"),
        "{waiting:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_come_from_the_agent_config() -> anyhow::Result<()> {
    if !e2e_prerequisites(&[TOOLS, &["docker-registry", "skopeo", "perl"]].concat()) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let private = LoopbackRegistry::start_with_auth("skiff", "s3cret")?;
    let other = LoopbackRegistry::start_with_auth("someone", "else")?;
    let image = BusyboxImage::build()?;
    let archive = dir.path().join("busybox.oci.tar");
    image.write_oci_archive(&archive, "docker.io/library/busybox:e2e")?;
    private.push_oci_archive(&archive, "team/busybox:1")?;
    other.push_oci_archive(&archive, "team/busybox:1")?;
    let (private_addr, other_addr) = (private.addr(), other.addr());
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-a",
        |data| {
            std::fs::write(
                data.join("registries.yaml"),
                format!(
                    "configs:\n  \"{private_addr}\":\n    plainHTTP: true\n    auth: {{username: skiff, password: s3cret}}\n  \"{other_addr}\":\n    plainHTTP: true\n"
                ),
            )?;
            Ok(())
        },
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-a", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "private",
        &deployment(
            "private",
            &private.image_ref("team/busybox:1"),
            1,
            "sleep 3600",
            "",
        ),
    )?;
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "denied",
        &deployment(
            "denied",
            &other.image_ref("team/busybox:1"),
            1,
            "sleep 3600",
            "",
        ),
    )?;
    wait_app_ready(&client, "private", 1, Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;
    let waiting = wait_for(
        "pull refused without credentials",
        Duration::from_secs(30),
        || async {
            let pods = pods_with_app(&client, "default", "denied").await.ok()?;
            let w = pods
                .first()?
                .status
                .clone()?
                .container_statuses
                .first()?
                .state
                .clone()?
                .waiting?;
            w.reason.contains("ImagePull").then_some(w)
        },
    )
    .await
    .with_context(|| node.log_tail())?;
    assert!(
        waiting.message.contains(&other_addr),
        "the error names the registry: {waiting:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_socket_the_agent_runs_its_own_containerd() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let agent_dir = tempfile::Builder::new().prefix("skiff-own-").tempdir()?;
    let data = agent_dir.path().join("d");
    std::fs::create_dir_all(data.join("images"))?;
    image.write_docker_archive(&data.join("images/busybox.tar"), "own/busybox:1")?;
    let mut guard = OwnContainerd {
        agent: skiff_e2e::agent::AgentProcess::start(
            &master.api_addr,
            "node-own",
            &data,
            None,
            &[],
        )?,
        data: data.clone(),
    };
    let client = master.client();
    wait_node_ready(&client, "node-own", Duration::from_secs(30))
        .await
        .with_context(|| guard.agent.log_tail())?;
    let socket = data.join("containerd/containerd.sock");
    assert!(socket.exists(), "containerd socket under the data dir");
    let pid: i32 = std::fs::read_to_string(data.join("containerd/containerd.pid"))?
        .trim()
        .parse()?;
    assert!(std::fs::read_to_string(format!("/proc/{pid}/comm"))?.starts_with("containerd"));
    apply_yaml(
        &master.api_addr,
        dir.path(),
        "own",
        &deployment(
            "own",
            "own/busybox:1",
            1,
            "sleep 3600",
            "        imagePullPolicy: Never\n",
        ),
    )?;
    wait_app_ready(&client, "own", 1, Duration::from_secs(30))
        .await
        .with_context(|| guard.agent.log_tail())?;
    let out = ctl(&master.api_addr, &["delete", "deployment", "own"]);
    assert!(out.status.success());
    wait_for("container removed", Duration::from_secs(30), || async {
        guard.tasks().is_empty().then_some(())
    })
    .await?;
    // A clean stop takes the private containerd down with the agent.
    guard.agent.stop();
    wait_for("containerd stopped", Duration::from_secs(10), || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    })
    .await?;
    Ok(())
}

/// Cleans up after an agent that ran its own containerd, also on failure.
struct OwnContainerd {
    agent: skiff_e2e::agent::AgentProcess,
    data: std::path::PathBuf,
}

impl OwnContainerd {
    fn ctr(&self, args: &[&str]) -> String {
        let socket = self.data.join("containerd/containerd.sock");
        std::process::Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .arg("-n")
            .arg(&self.agent.namespace)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    fn tasks(&self) -> Vec<String> {
        self.ctr(&["tasks", "list", "-q"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for OwnContainerd {
    fn drop(&mut self) {
        for task in self.tasks() {
            self.ctr(&["tasks", "delete", "--force", &task]);
        }
        // SIGTERM lets the agent stop the containerd it started.
        self.agent.stop();
        skiff_e2e::containerd::unmount_all_under(&self.data);
        skiff_e2e::agent::remove_runc_state(&self.agent.namespace);
    }
}

/// containerd collects garbage after deletions and after every so many
/// writes. A container's snapshot belongs to nobody between being
/// prepared and the container naming it being created; the agent must
/// hold it in a lease over that gap or the task cannot mount its rootfs.
/// Here containerd collects garbage over and over while pods start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_start_while_containerd_collects_garbage() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        "node-gc",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), "gc/busybox:1"),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, "node-gc", Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;

    let stop = AtomicBool::new(false);
    let collections = AtomicUsize::new(0);
    let replicas = 24;
    let runtime = tokio::runtime::Handle::current();
    let started = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            // Each synchronous lease deletion runs a full collection; two
            // threads keep one running nearly all the time.
            for thread in 0..2 {
                let (stop, collections, node) = (&stop, &collections, &node);
                s.spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("gc-{thread}-{n}");
                        if node.ctr(&["leases", "create", "--id", &id]).is_ok()
                            && node.ctr(&["leases", "delete", "--sync", &id]).is_ok()
                        {
                            collections.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            let started = runtime.block_on(async {
                apply_yaml(
                    &master.api_addr,
                    dir.path(),
                    "gc",
                    &deployment(
                        "gc",
                        "gc/busybox:1",
                        replicas,
                        "sleep 3600",
                        "        imagePullPolicy: Never\n",
                    ),
                )?;
                wait_app_ready(&client, "gc", replicas as usize, Duration::from_secs(90)).await
            });
            stop.store(true, Ordering::Relaxed);
            started
        })
    })
    .with_context(|| node.log_tail())?;
    let collections = collections.load(Ordering::Relaxed);
    assert!(
        collections >= 5,
        "containerd collected garbage only {collections} times"
    );
    assert_eq!(started.len(), replicas as usize);
    let log = node.agent.log();
    assert!(
        !log.contains("container failed to start"),
        "a container failed to start while containerd collected garbage ({collections} collections):\n{}",
        node.agent.log_tail()
    );
    for pod in &started {
        let status = pod.status.clone().unwrap_or_default();
        assert_eq!(status.container_statuses[0].restart_count, 0, "{status:?}");
    }
    assert_eq!(node.task_pids()?.len(), replicas as usize);
    Ok(())
}
