//! `kubectl exec` and `kubectl cp` (kubectl 1.35, WebSocket
//! `v5.channel.k8s.io`; kubectl 1.20, SPDY/3.1 `v4.channel.k8s.io`),
//! `kubectl port-forward` (kubectl 1.20 over SPDY/3.1, kubectl 1.35 over
//! SPDY tunnelled in a WebSocket) and `skiff ctl exec` / `skiff ctl
//! port-forward` against a real container: `skiff server` (a master and an
//! agent with its own containerd) in a netns test host, driven from this
//! host over the underlay, as in `kubectl_pods`. A busybox pod serves a
//! page with httpd on 8080 and another on 8081. Checked: exit codes passed
//! through, stdout and stderr apart, the container's environment, stdin
//! with `-i`, `cp` both ways (tar over exec), a command that does not exist
//! and an unknown container refused in words, port-forwards to the pod and
//! to a Service, two ports at once, and to a port nothing listens on, and
//! that a client going away leaves no process in the container and no FIFO
//! on the node. Then the Python client's `stream` exec and `portforward`
//! (WebSocket `v4.channel.k8s.io`) on the same pod.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlProcess, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::{ctl_command, e2e_prerequisites, free_port, http_get};

/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "srv/busybox:1";
/// How long anything asynchronous (a pod Running, a process gone) may take.
const SETTLE: Duration = Duration::from_secs(60);
/// What the pod's httpd serves as `/index.html` on 8080.
const PAGE: &str = "served-by-the-pod";
/// What the pod's second httpd serves on 8081.
const SECOND_PAGE: &str = "second-port";
/// The pod: the pages, httpd in the background on 8081, then httpd in the
/// foreground on 8080.
const SERVE: &str = "echo served-by-the-pod > /www/index.html; mkdir -p /second; \
    echo second-port > /second/index.html; httpd -p 8081 -h /second; \
    exec httpd -f -p 8080 -h /www";
/// A Service in front of the pod (`kubectl run` labels it `run=shell`):
/// port 80 to 8080, 81 to 8081.
const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: shell-web
spec:
  selector:
    run: shell
  ports:
  - name: first
    port: 80
    targetPort: 8080
  - name: second
    port: 81
    targetPort: 8081
";
/// An environment variable of the pod's spec, which exec must see.
const GREETING: &str = "GREETING=from-the-pod-spec";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_skiff_ctl_exec_copy_and_forward_into_real_pods() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-exec-").tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?.write_docker_archive(&data.join("agent/images/busybox.tar"), IMAGE)?;
    let NodeServer {
        process: server,
        api,
        client: _,
    } = ServerProcess::start_node_in_host(&host, &data, "solo", &[], SETTLE).await?;

    let kubectl = Kubectl::new(binary, &api)?;
    // kubectl 1.20 speaks SPDY/3.1 only.
    let spdy_kubectl = kube_clients::kubectl(KubectlVersion::V1_20)
        .map(|binary| Kubectl::new(binary, &api))
        .transpose()?;
    let fifos = data.join("agent/exec");
    let scratch = dir.path().to_owned();
    let python = kube_clients::python_client();
    let run = tokio::task::spawn_blocking(move || {
        scenario(&kubectl, spdy_kubectl.as_ref(), &api, &fifos, &scratch);
        if let Some(python) = python {
            python_streams(&python, &api);
        }
    });
    if let Err(e) = run.await {
        eprintln!("the server's log ends:\n{}", server.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        anyhow::bail!("{e}");
    }
    Ok(())
}

fn scenario(k: &Kubectl, spdy: Option<&Kubectl>, api: &str, fifos: &Path, scratch: &Path) {
    let pod = "shell";
    let image = format!("--image={IMAGE}");
    let env = format!("--env={GREETING}");
    k.ok(&[
        "run",
        pod,
        &image,
        &env,
        "--image-pull-policy=Never",
        "--port=8080",
        "--command",
        "--",
        "sh",
        "-c",
        SERVE,
    ]);
    eventually(&format!("pod {pod} Running"), SETTLE, || {
        let phase = k.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
        if phase.trim() == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });

    // Exit codes, stdout and stderr apart.
    let out = k.run(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "to-stdout\n");
    assert_has(&stderr, "to-stderr");
    assert_has(&stderr, "command terminated with exit code 3");
    assert_eq!(k.ok(&["exec", pod, "--", "true"]), "");

    // The container's own environment and user.
    let seen = k.ok(&["exec", pod, "--", "sh", "-c", "echo $GREETING; id -u"]);
    assert_eq!(seen, "from-the-pod-spec\n0\n");

    // stdin, to its end.
    let echoed = with_stdin(k, &["exec", "-i", pod, "--", "cat"], b"through stdin\n");
    assert_eq!(echoed, "through stdin\n");

    // Refusals in words.
    let e = k.fails(&["exec", pod, "--", "no-such-command"]);
    assert_has(&e, "no-such-command");
    let e = k.fails(&["exec", pod, "-c", "nope", "--", "true"]);
    assert_has(&e, "nope");

    // cp: tar over exec, both ways.
    let local = scratch.join("to-pod.txt");
    let content = "copied by kubectl cp\n".repeat(1000);
    std::fs::write(&local, &content).expect("write the file to copy");
    let into = format!("{pod}:/tmp/copied.txt");
    k.ok(&["cp", &local.display().to_string(), &into]);
    assert_eq!(
        k.ok(&["exec", pod, "--", "cat", "/tmp/copied.txt"]),
        content
    );
    let back = scratch.join("from-pod.txt");
    k.ok(&["cp", &into, &back.display().to_string()]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("the copied-back file"),
        content
    );

    if let Some(old) = spdy {
        spdy_exec(old, pod, scratch);
    }

    // skiff ctl exec: the same path over gRPC.
    let out = ctl_command(api)
        .args(["exec", pod, "--", "sh", "-c", "echo via-ctl; exit 7"])
        .output()
        .expect("run skiff ctl exec");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-ctl\n");

    port_forwards(api, pod, scratch);
    kubectl_port_forwards(k, spdy, pod);

    // A client that goes away ends its process.
    let mut sleeper = k
        .spawn(&["exec", pod, "--", "sleep", "4242"])
        .expect("start kubectl exec sleep");
    eventually("the exec'd sleep running", SETTLE, || {
        let ps = k.ok(&["exec", pod, "--", "ps"]);
        if ps.contains("sleep 4242") && sleeper.is_running() {
            Ok(())
        } else {
            Err(ps)
        }
    });
    drop(sleeper);
    eventually("the exec'd sleep gone with its client", SETTLE, || {
        let ps = k.ok(&["exec", pod, "--", "ps"]);
        if ps.contains("sleep 4242") {
            Err(ps)
        } else {
            Ok(())
        }
    });

    // Nothing left: in the container only httpd (and this ps), on the
    // node no FIFO directory of a finished session.
    eventually("no leftover exec processes or FIFOs", SETTLE, || {
        let ps = k.ok(&["exec", pod, "--", "ps"]);
        let others: Vec<&str> = ps
            .lines()
            .skip(1)
            .filter(|l| {
                !l.contains("httpd -f -p 8080")
                    && !l.contains("httpd -p 8081")
                    && !l.trim_end().ends_with("ps")
            })
            .collect();
        let sessions: Vec<PathBuf> = std::fs::read_dir(fifos)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        // The session running `ps` may still be being removed.
        if others.is_empty() && sessions.len() <= 1 {
            Ok(())
        } else {
            Err(format!("{ps}\nFIFO dirs: {sessions:?}"))
        }
    });
}

/// kubectl 1.20's exec and cp, over SPDY/3.1 (`v4.channel.k8s.io`): exit
/// codes passed through, stdout and stderr apart, stdin to its end, a
/// command that does not exist refused in words.
fn spdy_exec(k: &Kubectl, pod: &str, scratch: &Path) {
    let out = k.run(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "echo over-spdy; echo spdy-stderr >&2; exit 5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "over-spdy\n");
    assert_has(&stderr, "spdy-stderr");
    assert_has(&stderr, "command terminated with exit code 5");
    assert_eq!(
        k.ok(&["exec", pod, "--", "sh", "-c", "echo $GREETING"]),
        "from-the-pod-spec\n"
    );
    let echoed = with_stdin(k, &["exec", "-i", pod, "--", "cat"], b"spdy stdin\n");
    assert_eq!(echoed, "spdy stdin\n");
    let e = k.fails(&["exec", pod, "--", "no-such-command"]);
    assert_has(&e, "no-such-command");

    let local = scratch.join("to-pod-spdy.txt");
    let content = "copied over SPDY\n".repeat(2000);
    std::fs::write(&local, &content).expect("write the file to copy");
    let into = format!("{pod}:/tmp/copied-spdy.txt");
    k.ok(&["cp", &local.display().to_string(), &into]);
    let back = scratch.join("from-pod-spdy.txt");
    k.ok(&["cp", &into, &back.display().to_string()]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("the copied-back file"),
        content
    );
}

/// `kubectl port-forward` with kubectl 1.20 (SPDY/3.1) and kubectl 1.35
/// (SPDY in a WebSocket, `SPDY/3.1+portforward.k8s.io`): to the pod and to
/// the Service, two ports at once each, two connections at once; and to a
/// port nothing listens on, which the client reports.
fn kubectl_port_forwards(k: &Kubectl, spdy: Option<&Kubectl>, pod: &str) {
    let manifest = k.home().join("shell-web.yaml");
    std::fs::write(&manifest, SERVICE).expect("write shell-web.yaml");
    k.ok(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    let pod_target = format!("pod/{pod}");
    // kubectl 1.35 tries the WebSocket tunnel first and falls back to SPDY
    // if the upgrade fails; at -v=4 it says the tunnel was negotiated.
    let clients = spdy.map(|old| (old, false)).into_iter().chain([(k, true)]);
    for (client, tunnelled) in clients {
        for (target, remote) in [
            (pod_target.as_str(), [8080, 8081]),
            ("svc/shell-web", [80, 81]),
        ] {
            let (first, second) = (free_port(), free_port());
            let mut ports = vec![
                format!("{first}:{}", remote[0]),
                format!("{second}:{}", remote[1]),
            ];
            if tunnelled {
                ports.push("-v=4".to_owned());
            }
            let mut forward = kubectl_forward(client, target, &ports);
            if tunnelled {
                // client-go's tunneling dialer logs the subprotocol the
                // WebSocket upgrade agreed on (at -v=4); a failed upgrade
                // falls back to plain SPDY without it.
                assert_has(&forward.output(), "negotiated protocol: portforward.k8s.io");
            }
            // A connection held open on the first port while both serve.
            let held =
                std::net::TcpStream::connect(("127.0.0.1", first)).expect("hold a connection");
            for (port, page) in [(first, PAGE), (second, SECOND_PAGE), (first, PAGE)] {
                let got = eventually(
                    &format!("{page} through {target} on {port}"),
                    SETTLE,
                    || match http_get(&format!("127.0.0.1:{port}"), "/index.html") {
                        Ok((200, body)) => Ok(body),
                        other => Err(format!("{other:?}\n{}", forward.output())),
                    },
                );
                assert_eq!(got.trim(), page, "{target} port {port}");
            }
            drop(held);
            assert!(
                forward.is_running(),
                "kubectl port-forward ended:\n{}",
                forward.output()
            );
        }

        let closed = free_port();
        let forward = kubectl_forward(client, &pod_target, &[format!("{closed}:9")]);
        eventually("kubectl reporting the refused port", SETTLE, || {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", closed)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            }
            let said = forward.output();
            if said.contains("localhost:9") {
                Ok(())
            } else {
                Err(said)
            }
        });
        drop(forward);
    }
    k.ok(&["delete", "service", "shell-web"]);
}

/// `kubectl port-forward TARGET PORTS...` (flags may follow) in the
/// background, once it listens on every port.
fn kubectl_forward(k: &Kubectl, target: &str, ports: &[String]) -> KubectlProcess {
    k.port_forward(target, ports, SETTLE)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The Python client's `stream` exec and `portforward`
/// (`e2e/python/stream_scenario.py`) on the same pod.
fn python_streams(python: &Path, api: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/stream_scenario.py");
    let conf = skiff_e2e::credentials::admin_conf(api).expect("the admin.conf");
    let mut child = Command::new(python)
        .arg("-u")
        .arg(&script)
        .arg(conf)
        .args(["default", "shell", PAGE])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python stream scenario");
    let deadline = Instant::now() + SETTLE;
    while child.try_wait().expect("wait for Python").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python stream scenario ran past {SETTLE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("Python's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASSED"),
        "{} failed ({}):\n{stdout}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skiff ctl port-forward` to the page, and to a port nothing listens on.
fn port_forwards(api: &str, pod: &str, scratch: &Path) {
    let local = free_port();
    let mut forward = Forward::start(api, pod, &format!("{local}:8080"), scratch);
    let page = eventually("the page through port-forward", SETTLE, || {
        match http_get(&format!("127.0.0.1:{local}"), "/index.html") {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}\n{}", forward.output())),
        }
    });
    assert_eq!(page.trim(), PAGE);
    // Two connections at once.
    let first = std::net::TcpStream::connect(("127.0.0.1", local)).expect("first connection");
    let (_, second) = http_get(&format!("127.0.0.1:{local}"), "/index.html").expect("second");
    assert_eq!(second.trim(), PAGE);
    drop(first);
    forward.stop();

    let closed = free_port();
    let mut forward = Forward::start(api, pod, &format!("{closed}:9"), scratch);
    eventually("a refused port-forward said so", SETTLE, || {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", closed)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
        let said = forward.output();
        if said.contains("localhost:9") {
            Ok(())
        } else {
            Err(said)
        }
    });
    forward.stop();
}

/// A `skiff ctl port-forward` running in the background, its output in a
/// file; stopped (only this child) when dropped.
struct Forward {
    child: Child,
    log: PathBuf,
}

impl Forward {
    fn start(api: &str, pod: &str, ports: &str, scratch: &Path) -> Forward {
        let log = scratch.join(format!("port-forward-{}.log", ports.replace(':', "-")));
        let file = std::fs::File::create(&log).expect("the port-forward log");
        let child = ctl_command(api)
            .args(["port-forward", pod, ports])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log"))
            .stderr(file)
            .spawn()
            .expect("start skiff ctl port-forward");
        Forward { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `kubectl <args>` with `input` on its stdin (then its end); its
/// stdout. Panics if it fails or outlives [`SETTLE`].
fn with_stdin(k: &Kubectl, args: &[&str], input: &[u8]) -> String {
    let mut command: Command = k.command();
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut stdin = child.stdin.take().expect("kubectl's stdin");
    stdin.write_all(input).expect("write kubectl's stdin");
    drop(stdin);
    let deadline = Instant::now() + SETTLE;
    loop {
        if child.try_wait().expect("wait for kubectl").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl {} still ran after {SETTLE:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("kubectl's output");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}
