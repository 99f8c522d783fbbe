//! `kubectl attach`, `kubectl run -i`/`-it`/`--attach` and `kubectl exec
//! -it` against real containers (kubectl 1.35 over WebSocket
//! `v5.channel.k8s.io`, kubectl 1.20 over SPDY/3.1), and an agent restart
//! under a port-forward and an attached container: a master and one agent
//! with its own containerd, the busybox image imported. Checked: piped
//! stdin reaching a `stdinOnce` container and its answer printed, the pod
//! removed by `--rm`, the container's exit code through `kubectl run`, a
//! container without stdin followed by `--attach`, shells on a terminal
//! (a pseudo-terminal: kubectl takes a TTY only when its stdin is one) with
//! `exec -it` and `run -it`, exit codes passed through, `skiff ctl exec -t`
//! giving the remote terminal the local one's size, and no container FIFOs
//! left once the pods are gone. Then the agent restarts: a
//! forwarded connection ends, a new port-forward works once the agent is
//! back, the pods' processes are the same, and a `stdin: true` container's
//! stdin and output (to an attached client and to its log) go on across
//! the restart; nothing is left running in the containers.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::pseudo_terminal::OnTerminal;
use skiff_e2e::{ctl_command, e2e_prerequisites, free_port, http_get};

use super::kubectl_exec::assert_has;
use skiff_e2e::eventually;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "e2e/busybox:1";
/// How long anything asynchronous (a pod Running, a prompt) may take.
const SETTLE: Duration = Duration::from_secs(60);
/// What the `web` pod serves.
const PAGE: &str = "served-through-the-restart";
/// A pod serving [`PAGE`] on 8080, and one echoing each line of its stdin
/// (`stdin: true`, kept open across attaches).
const RESTART_PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    command: ["sh", "-c", "mkdir -p /www; echo served-through-the-restart > /www/index.html; exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: echoer
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    stdin: true
    command: ["sh", "-c", "while read line; do echo \"echo:$line\"; done"]
"#;

/// A master and one node (its own containerd) with the busybox image.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attaches_and_runs_interactively_on_real_containers() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let (_dir, master, node) = cluster().await?;
    let kubectl = Kubectl::new(binary, &master.api_addr)?;
    // kubectl 1.20 speaks SPDY/3.1 only.
    let spdy = kube_clients::kubectl(KubectlVersion::V1_20)
        .map(|binary| Kubectl::new(binary, &master.api_addr))
        .transpose()?;
    let container_io = node.data_dir().join("container-io");
    let api = master.api_addr.clone();
    let run = tokio::task::spawn_blocking(move || {
        interactive(&kubectl, spdy.as_ref(), &api, &container_io);
    });
    if let Err(e) = run.await {
        eprintln!("the agent's log ends:\n{}", node.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        anyhow::bail!("{e}");
    }
    Ok(())
}

fn interactive(k: &Kubectl, spdy: Option<&Kubectl>, api: &str, container_io: &Path) {
    let image = format!("--image={IMAGE}");

    // kubectl run -i --rm: piped stdin reaches the container, its answer
    // comes back, and the pod is removed. `stdinOnce` closes the
    // container's stdin when kubectl's ends.
    let clients = [(k, "ask-websocket")]
        .into_iter()
        .chain(spdy.map(|old| (old, "ask-spdy")));
    for (client, pod) in clients {
        let word = format!("hello-{pod}");
        let out = with_input(
            client,
            &[
                "run",
                pod,
                "-i",
                "--rm",
                "--restart=Never",
                &image,
                "--",
                "sh",
                "-c",
                "read x; echo got $x",
            ],
            &format!("{word}\n"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl run -i {pod} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_has(&stdout, &format!("got {word}"));
        gone(k, pod);
    }

    // The container's exit code is kubectl run's.
    let out = with_input(
        k,
        &[
            "run",
            "ask-code",
            "-i",
            "--rm",
            "--restart=Never",
            &image,
            "--",
            "sh",
            "-c",
            "read x; echo got $x; exit 3",
        ],
        "code\n",
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_has(&String::from_utf8_lossy(&out.stdout), "got code");
    gone(k, "ask-code");

    // A container without stdin: --attach follows what it prints.
    let printed = k.ok(&[
        "run",
        "printer",
        "--attach",
        "--rm",
        "--restart=Never",
        &image,
        "--",
        "sh",
        "-c",
        "sleep 4; echo printed-$((40+2))",
    ]);
    assert_has(&printed, "printed-42");
    gone(k, "printer");

    // exec -it: a shell on a terminal, its exit code passed through.
    k.ok(&["run", "shell", &image, "--", "sleep", "3600"]);
    running(k, "shell");
    for client in [k].into_iter().chain(spdy) {
        let mut command = client.command();
        command.args(["exec", "-it", "shell", "--", "sh"]);
        let mut term = OnTerminal::start(command).expect("kubectl exec -it on a terminal");
        term.wait_for("# ", SETTLE).expect("the shell's prompt");
        term.type_keys("echo $((6*7))-exec\r").expect("type");
        term.wait_for("42-exec", SETTLE)
            .expect("the shell's answer");
        term.type_keys("exit 5\r").expect("type");
        let status = term.wait(SETTLE).expect("kubectl exec -it ends");
        assert_eq!(status.code(), Some(5), "{}", term.printed());
    }
    // skiff ctl exec -t: the local terminal's size (80x24) is the remote
    // terminal's (sent once the session is up, hence the pause).
    let mut command = ctl_command(api);
    command.args([
        "exec",
        "-i",
        "-t",
        "shell",
        "--",
        "sh",
        "-c",
        "sleep 1; busybox stty size",
    ]);
    let mut term = OnTerminal::start(command).expect("skiff ctl exec -t on a terminal");
    term.wait_for("24 80", SETTLE)
        .expect("the remote terminal's size");
    let status = term.wait(SETTLE).expect("skiff ctl exec -t ends");
    assert!(status.success(), "{status}: {}", term.printed());
    k.ok(&["delete", "pod", "shell", "--grace-period=1"]);

    // run -it: attached to the container's own terminal.
    let mut command = k.command();
    command.args([
        "run",
        "tty-shell",
        "-it",
        "--rm",
        "--restart=Never",
        image.as_str(),
        "--",
        "sh",
    ]);
    let mut term = OnTerminal::start(command).expect("kubectl run -it on a terminal");
    term.wait_for("If you don't see a command prompt", SETTLE)
        .expect("kubectl attached");
    term.type_keys("echo $((7*6))-tty\r").expect("type");
    term.wait_for("42-tty", SETTLE)
        .expect("the container's shell answered");
    term.type_keys("exit\r").expect("type");
    let status = term.wait(SETTLE).expect("kubectl run -it ends");
    assert!(status.success(), "{status}: {}", term.printed());
    gone(k, "tty-shell");

    // The containers with their own stdio are gone, and their FIFOs too.
    eventually("no container FIFOs left", SETTLE, || {
        let left: Vec<String> = std::fs::read_dir(container_io)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_ends_port_forwards_cleanly_and_keeps_container_stdio(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let (_dir, master, node) = cluster().await?;
    let kubectl = Kubectl::new(binary, &master.api_addr)?;
    let run = tokio::task::spawn_blocking(move || {
        let mut node = node;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            agent_restart(&kubectl, &mut node)
        }));
        if let Err(panic) = outcome {
            eprintln!("the agent's log ends:\n{}", node.log_tail());
            std::panic::resume_unwind(panic);
        }
    });
    if let Err(e) = run.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        anyhow::bail!("{e}");
    }
    Ok(())
}

fn agent_restart(k: &Kubectl, node: &mut RuntimeNode) {
    let manifest = k.home().join("restart-pods.yaml");
    std::fs::write(&manifest, RESTART_PODS).expect("write the manifest");
    k.ok(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    running(k, "web");
    running(k, "echoer");
    let before = node.task_pids().expect("the running tasks");

    // Attached to the echoer: a line in, its answer out; the end of
    // kubectl's stdin detaches it (no stdinOnce: stdin stays open).
    let mut attached = Attached::start(k, &["attach", "-i", "echoer"]);
    attached.send_line("one");
    attached.wait_for("echo:one");
    assert!(
        attached.detach().success(),
        "kubectl attach -i ended in error"
    );

    // A port-forward, with a connection through it.
    let local = free_port();
    let mut forward = k
        .port_forward("pod/web", &[format!("{local}:8080")], SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let page = eventually(
        "the page through the port-forward",
        SETTLE,
        || match http_get(&format!("127.0.0.1:{local}"), "/index.html") {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}\n{}", forward.output())),
        },
    );
    assert_eq!(page.trim(), PAGE);
    let mut held = std::net::TcpStream::connect(("127.0.0.1", local)).expect("hold a connection");
    // Half a request: httpd waits for the rest (a minute) while the
    // connection is relayed through the agent.
    held.write_all(b"GET /index.html HTTP/1.0\r\n")
        .expect("start a request");
    std::thread::sleep(Duration::from_secs(1));

    // The agent restarts: the forwarded connection ends, well before
    // httpd's own timeout.
    node.agent.stop();
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut rest = Vec::new();
    match held.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the forwarded connection outlived the agent by 20 s; kubectl printed:\n{}",
            forward.output()
        ),
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains(PAGE),
        "an unfinished request was answered"
    );
    // kubectl says the connection was lost (and, since 1.23, ends).
    eventually(
        "kubectl port-forward reporting the lost connection",
        SETTLE,
        || {
            let said = forward.output();
            if !forward.is_running() || said.contains("error") || said.contains("lost connection") {
                Ok(())
            } else {
                Err(said)
            }
        },
    );
    node.agent.restart().expect("start the agent again");

    // A new port-forward works once the agent is back.
    let again = free_port();
    let second = k
        .port_forward("pod/web", &[format!("{again}:8080")], SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let page = eventually(
        "the page through a new port-forward",
        SETTLE,
        || match http_get(&format!("127.0.0.1:{again}"), "/index.html") {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}\n{}", second.output())),
        },
    );
    assert_eq!(page.trim(), PAGE);
    drop(second);
    drop(forward);

    // The pods went on: the same processes, no restarts.
    assert_eq!(
        node.task_pids().expect("the running tasks"),
        before,
        "the containers' processes changed across the agent restart"
    );
    for pod in ["web", "echoer"] {
        let restarts = k.ok(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        assert_eq!(restarts.trim(), "0", "{pod} restarted");
    }

    // The echoer's stdin and output came through the restart: attached
    // again, a line in and its answer out, and both runs in its log.
    let mut attached = Attached::start(k, &["attach", "-i", "echoer"]);
    attached.send_line("two");
    attached.wait_for("echo:two");
    assert!(
        attached.detach().success(),
        "kubectl attach -i ended in error"
    );
    let logs = k.ok(&["logs", "echoer"]);
    assert_has(&logs, "echo:one");
    assert_has(&logs, "echo:two");

    // Nothing left over: httpd alone in web, the loop alone in echoer, no
    // exec session's FIFOs, and only the echoer's own stdio.
    let exec_dirs = node.data_dir().join("exec");
    eventually("no leftover processes or FIFOs", SETTLE, || {
        let web = k.ok(&["exec", "web", "--", "ps"]);
        let echoer = k.ok(&["exec", "echoer", "--", "ps"]);
        let strays: Vec<&str> = web
            .lines()
            .chain(echoer.lines())
            .filter(|l| !l.trim_start().starts_with("PID"))
            .filter(|l| {
                !l.contains("httpd -f -p 8080")
                    && !l.contains("while read line")
                    && !l.trim_end().ends_with("ps")
            })
            .collect();
        let sessions = std::fs::read_dir(&exec_dirs).into_iter().flatten().count();
        let own_stdio = std::fs::read_dir(node.data_dir().join("container-io"))
            .into_iter()
            .flatten()
            .count();
        // The session running `ps` may still be being removed.
        if strays.is_empty() && sessions <= 1 && own_stdio == 1 {
            Ok(())
        } else {
            Err(format!(
                "{web}\n{echoer}\nexec FIFO dirs: {sessions}, container stdio dirs: {own_stdio}"
            ))
        }
    });
}

/// Waits until pod `name` is Running.
fn running(k: &Kubectl, name: &str) {
    eventually(&format!("pod {name} Running"), SETTLE, || {
        let phase = k.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        if phase.trim() == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });
}

/// Waits until pod `name` no longer exists.
fn gone(k: &Kubectl, name: &str) {
    eventually(&format!("pod {name} gone"), SETTLE, || {
        let out = k.run(&["get", "pod", name]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && stderr.contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
        }
    });
}

/// Runs `kubectl <args>` with `input` on its stdin, then its end; what it
/// did. Panics if it outlives [`SETTLE`].
fn with_input(k: &Kubectl, args: &[&str], input: &str) -> Output {
    let mut child = k
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut stdin = child.stdin.take().expect("kubectl's stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("write kubectl's stdin");
    drop(stdin);
    let deadline = Instant::now() + SETTLE;
    while child.try_wait().expect("wait for kubectl").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("kubectl's output");
            panic!(
                "kubectl {} still ran after {SETTLE:?}:\n{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("kubectl's output")
}

/// A kubectl attached with a pipe to its stdin, its output in a file;
/// stopped (only this child) if still running when dropped.
struct Attached {
    child: Child,
    stdin: Option<ChildStdin>,
    log: tempfile::NamedTempFile,
}

impl Attached {
    fn start(k: &Kubectl, args: &[&str]) -> Attached {
        let log = tempfile::NamedTempFile::new_in(k.home()).expect("a log file");
        let mut child = k
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.as_file().try_clone().expect("the log"))
            .stderr(log.as_file().try_clone().expect("the log"))
            .spawn()
            .expect("start kubectl");
        let stdin = child.stdin.take();
        Attached { child, stdin, log }
    }

    fn output(&self) -> String {
        std::fs::read(self.log.path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write kubectl's stdin");
        stdin.flush().expect("flush kubectl's stdin");
    }

    fn wait_for(&mut self, text: &str) {
        eventually(&format!("{text:?} from kubectl attach"), SETTLE, || {
            let printed = self.output();
            if printed.contains(text) {
                Ok(())
            } else {
                Err(printed)
            }
        });
    }

    /// Ends kubectl's stdin (it detaches) and waits for it to exit.
    fn detach(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for kubectl") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl attach did not end with its stdin; it printed:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
