//! `kubectl logs` and `kubectl proxy` against real containers: `skiff
//! server` (a master and an agent in one process, with the agent's own
//! containerd and the pod network, as a machine runs it) inside a netns
//! test host, so that the master reaches pod IPs over the node's bridge;
//! kubectl 1.20, the machine's 1.32 and 1.35 drive it from this host over
//! the underlay. With each kubectl, a pod (`kubectl run`) prints a numbered
//! line every 0.2 s and serves a page with busybox httpd on 8080; its log
//! is read whole, with `--tail` and with `-f`, and its page through
//! `kubectl proxy`, by pod (`name`, `name:port`, `http:name:port`) and by
//! service. Then a pod of two containers (`kubectl apply`): the log of
//! each, and kube-apiserver's refusal when none is named.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::{e2e_prerequisites, free_port, http_get};

/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "srv/busybox:1";
/// How long anything asynchronous (a pod Running, endpoints) may take.
const SETTLE: Duration = Duration::from_secs(60);
/// What the pods' httpd serves as `/index.html`.
const PAGE: &str = "proxied-by-skiff";
/// The pod's script: the page, httpd in the background, then `line-1`,
/// `line-2`, ... every 0.2 s.
const CHATTY: &str = "echo proxied-by-skiff > /www/index.html; \
     httpd -f -p 8080 -h /www & \
     i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.2; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_logs_and_proxies_to_real_pods() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let versions = [
        KubectlVersion::V1_20,
        KubectlVersion::V1_32,
        KubectlVersion::V1_35,
    ];
    let kubectls: Vec<(KubectlVersion, PathBuf)> = versions
        .into_iter()
        .filter_map(|v| kube_clients::kubectl(v).map(|path| (v, path)))
        .collect();
    if kubectls.is_empty() {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-podio-").tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?.write_docker_archive(&data.join("agent/images/busybox.tar"), IMAGE)?;
    let NodeServer {
        process: server,
        api,
        client: _,
    } = ServerProcess::start_node_in_host(&host, &data, "solo", &[], SETTLE).await?;

    let mut last = None;
    for (version, binary) in kubectls {
        let kubectl = Kubectl::new(binary, &api)?;
        let release = version.release();
        let run = tokio::task::spawn_blocking(move || {
            scenario(&kubectl, release);
            kubectl
        });
        last = Some(finish(run.await, release, &server)?);
    }
    if let Some(kubectl) = last {
        let run = tokio::task::spawn_blocking(move || {
            two_containers(&kubectl);
            kubectl
        });
        finish(run.await, "two containers", &server)?;
    }
    Ok(())
}

/// What a blocking scenario gave back; its panic goes on, after the
/// server's log.
fn finish<T>(
    ran: Result<T, tokio::task::JoinError>,
    what: &str,
    server: &ServerProcess,
) -> anyhow::Result<T> {
    match ran {
        Ok(value) => Ok(value),
        Err(e) => {
            eprintln!("{what}: the server's log ends:\n{}", server.log_tail());
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            anyhow::bail!("{what}: {e}")
        }
    }
}

/// One kubectl's pod: run, logs, proxy.
fn scenario(k: &Kubectl, release: &str) {
    let pod = format!("chatty-{}", release.replace('.', "-"));
    let image = format!("--image={IMAGE}");
    let out = k.ok(&[
        "run",
        &pod,
        &image,
        "--image-pull-policy=Never",
        "--port=8080",
        "--command",
        "--",
        "sh",
        "-c",
        CHATTY,
    ]);
    assert_has(&out, &format!("pod/{pod} created"));
    eventually(&format!("pod {pod} Running"), SETTLE, || {
        let phase = k.ok(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"]);
        if phase.trim() == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });
    logs(k, &pod);
    proxy(k, &pod);
}

/// `kubectl logs`: the whole log, `--tail=2`, and `-f` streaming lines
/// written after it started.
fn logs(k: &Kubectl, pod: &str) {
    let whole = eventually("three log lines", SETTLE, || {
        let out = k.ok(&["logs", pod]);
        let numbers = line_numbers(&out);
        if numbers.len() >= 3 {
            Ok(numbers)
        } else {
            Err(out)
        }
    });
    assert_eq!(whole[0], 1, "the log starts at its first line: {whole:?}");
    assert!(
        whole.windows(2).all(|w| w[1] == w[0] + 1),
        "no line is missing: {whole:?}"
    );
    let newest = whole[whole.len() - 1];

    let tail = k.ok(&["logs", "--tail=2", pod]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let tail = line_numbers(&tail);
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert_eq!(tail[1], tail[0] + 1, "{tail:?}");
    assert!(tail[1] >= newest, "the last lines: {tail:?} after {newest}");

    // Following: lines written after kubectl started arrive while it runs.
    let started_after = line_numbers(&k.ok(&["logs", pod]))
        .last()
        .copied()
        .unwrap_or(newest);
    let mut follower = k
        .command()
        .args(["logs", "-f", pod])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kubectl logs -f");
    let stdout = follower.stdout.take().expect("the follower's stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Five more lines: a second of the pod's output after kubectl began.
    let wanted = started_after + 5;
    let deadline = Instant::now() + SETTLE;
    let mut seen = Vec::new();
    let mut highest = 0;
    while highest < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                highest = highest.max(number_of(&line).unwrap_or(0));
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    let still_following = matches!(follower.try_wait(), Ok(None));
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = reader.join();
    assert!(
        highest >= wanted,
        "kubectl logs -f showed line-{wanted} within {SETTLE:?}; it showed {seen:?}"
    );
    assert!(
        still_following,
        "kubectl logs -f was still following when stopped"
    );
}

/// `kubectl proxy`: `/version`, the pod's page by pod name (`name:port`,
/// the default port, `http:name:port`), https refused, and the page by
/// service (exposed with `kubectl expose`).
fn proxy(k: &Kubectl, pod: &str) {
    let service = format!("{pod}-web");
    let name_flag = format!("--name={service}");
    let out = k.ok(&[
        "expose",
        "pod",
        pod,
        "--port=80",
        "--target-port=8080",
        &name_flag,
    ]);
    assert_has(&out, &format!("service/{service} exposed"));

    let port = free_port();
    let port_flag = format!("--port={port}");
    let running = k
        .spawn(&["proxy", &port_flag])
        .expect("start kubectl proxy");
    let addr = format!("127.0.0.1:{port}");
    let version = eventually(
        "kubectl proxy to serve /version",
        SETTLE,
        || match http_get(&addr, "/version") {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("{code}: {body}\n{}", running.output())),
            Err(e) => Err(format!("{e:#}\n{}", running.output())),
        },
    );
    assert_has(&version, "gitVersion");

    let pods = "/api/v1/namespaces/default/pods";
    for path in [
        format!("{pods}/{pod}:8080/proxy/index.html"),
        format!("{pods}/{pod}/proxy/"),
        format!("{pods}/http:{pod}:8080/proxy/index.html"),
    ] {
        let (code, body) = http_get(&addr, &path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        assert_eq!((code, body.trim()), (200, PAGE), "GET {path}");
    }
    let path = format!("{pods}/https:{pod}:8443/proxy/");
    let (code, body) = http_get(&addr, &path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(code, 400, "GET {path}: {body}");
    assert_has(&body, "https is not supported yet");
    let path = format!("{pods}/nowhere:8080/proxy/");
    let (code, body) = http_get(&addr, &path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(code, 404, "GET {path}: {body}");

    let services = "/api/v1/namespaces/default/services";
    for path in [
        format!("{services}/{service}:80/proxy/index.html"),
        format!("{services}/{service}/proxy/index.html"),
    ] {
        // The Endpoints follow the Service a moment later.
        let body = eventually(&format!("GET {path}"), SETTLE, || {
            match http_get(&addr, &path) {
                Ok((200, body)) => Ok(body),
                Ok((code, body)) => Err(format!("{code}: {body}")),
                Err(e) => Err(format!("{e:#}")),
            }
        });
        assert_eq!(body.trim(), PAGE, "GET {path}");
    }
    drop(running);
}

/// A pod of two containers: each one's log by name, and without a name the
/// 400 kube-apiserver answers, listing both.
fn two_containers(k: &Kubectl) {
    let manifest = k.home().join("pair.yaml");
    std::fs::write(&manifest, PAIR).expect("write pair.yaml");
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    assert_has(&out, "pod/pair created");
    for container in ["left", "right"] {
        let said = format!("from-{container}");
        eventually(&format!("{said} in the log"), SETTLE, || {
            let out = k.run(&["logs", "pair", "-c", container]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.trim() == said {
                Ok(())
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            }
        });
    }
    let err = k.fails(&["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"]);
    assert_has(&err, "(BadRequest)");
    assert_has(
        &err,
        "a container name must be specified for pod pair, choose one of: [left right]",
    );
}

const PAIR: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: left, image: "srv/busybox:1", imagePullPolicy: Never, command: [sh, -c, "echo from-left; exec sleep 3600"]}
  - {name: right, image: "srv/busybox:1", imagePullPolicy: Never, command: [sh, -c, "echo from-right; exec sleep 3600"]}
"#;

/// The numbers of the `line-N` lines of `text`, in order.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(number_of).collect()
}

fn number_of(line: &str) -> Option<u64> {
    line.trim().strip_prefix("line-")?.parse().ok()
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}
