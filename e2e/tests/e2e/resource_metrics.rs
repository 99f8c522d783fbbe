//! The metrics API (`metrics.k8s.io/v1beta1`) against real containers:
//! `skiff server` (a master and an agent with its own containerd, as a
//! machine runs it) in a netns test host, as in `kubectl_pods`. Two
//! busybox pods: one burning a CPU (`while :; do :; done`), one asleep.
//! With kubectl 1.20, the machine's 1.32 and 1.35: the group in discovery
//! (`api-resources`), `kubectl top nodes` (and one node by name), `kubectl
//! top pods` (by label, by name, `--containers`), the burner well above
//! the sleeper; then the raw API: a PodMetrics with its container's
//! memory, the NodeMetricsList, and a pod without a reading NotFound as
//! metrics-server answers it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::e2e_prerequisites;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;
use skiff_objects::Quantity;

/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "srv/busybox:1";
/// How long a pod may take to run.
const SETTLE: Duration = Duration::from_secs(60);
/// How long the first readings may take: two ten-second samples of the
/// running containers, then a heartbeat, with room for a loaded machine.
const READINGS_WITHIN: Duration = Duration::from_secs(120);
/// The least CPU the burning pod must show, in millicores: a busy loop
/// takes a whole CPU on an idle machine; a loaded CI runner shares it.
const BURNING: i64 = 200;
/// The most CPU the sleeping pod may show.
const ASLEEP: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_shows_what_real_containers_use() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let versions = [
        KubectlVersion::V1_35,
        KubectlVersion::V1_32,
        KubectlVersion::V1_20,
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
    let dir = tempfile::Builder::new().prefix("skiff-top-").tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?.write_docker_archive(&data.join("agent/images/busybox.tar"), IMAGE)?;
    let NodeServer {
        process: server,
        api,
        client: _,
    } = ServerProcess::start_node_in_host(&host, &data, "solo", &[], SETTLE).await?;

    let runners = kubectls
        .into_iter()
        .map(|(version, binary)| Ok((version, Kubectl::new(binary, &api)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run = tokio::task::spawn_blocking(move || {
        // The newest kubectl there is makes the pods.
        start_pods(&runners[0].1);
        for (version, kubectl) in &runners {
            top(kubectl, *version);
        }
        raw_api(&runners[0].1);
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

/// `burner` spins, `sleeper` sleeps; both Running.
fn start_pods(k: &Kubectl) {
    let image = format!("--image={IMAGE}");
    let pods = [
        ("burner", "while :; do :; done"),
        ("sleeper", "exec sleep 3600"),
    ];
    for (pod, script) in pods {
        k.ok(&[
            "run",
            pod,
            &image,
            "--image-pull-policy=Never",
            "--command",
            "--",
            "sh",
            "-c",
            script,
        ]);
    }
    for (pod, _) in pods {
        eventually(&format!("pod {pod} Running"), SETTLE, || {
            let phase = k.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
            if phase.trim() == "Running" {
                Ok(())
            } else {
                Err(phase)
            }
        });
    }
}

/// One kubectl's `top`, and the group in its discovery.
fn top(k: &Kubectl, version: KubectlVersion) {
    let release = version.release();
    let resources = k.ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    for kind in ["NodeMetrics", "PodMetrics"] {
        assert!(resources.contains(kind), "kubectl {release}: {resources}");
    }

    // Pods: the first readings come after two samples.
    let (burner, sleeper) = eventually(
        &format!("kubectl {release} top pods with both pods"),
        READINGS_WITHIN,
        || {
            let out = k.run(&["top", "pods"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            let rows = rows(&text);
            let cpu = |pod: &str| rows.iter().find(|r| r[0] == pod).map(|r| millicores(&r[1]));
            match (cpu("burner"), cpu("sleeper")) {
                (Some(burner), Some(sleeper)) if burner >= BURNING => Ok((burner, sleeper)),
                _ => Err(text),
            }
        },
    );
    assert!(
        sleeper < ASLEEP && sleeper < burner,
        "kubectl {release}: sleeper {sleeper}m, burner {burner}m"
    );

    // By label (`kubectl run` labels `run=<name>`), and by name.
    let labelled = k.ok(&["top", "pods", "-l", "run=burner"]);
    let names: Vec<String> = rows(&labelled).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, ["burner"], "kubectl {release}:\n{labelled}");
    let named = k.ok(&["top", "pod", "burner"]);
    assert_eq!(rows(&named).len(), 1, "kubectl {release}:\n{named}");

    // Each container: POD NAME CPU MEMORY.
    let containers = k.ok(&["top", "pods", "--containers"]);
    let row = rows(&containers)
        .into_iter()
        .find(|r| r[0] == "burner")
        .unwrap_or_else(|| panic!("kubectl {release}: no burner row:\n{containers}"));
    assert_eq!(row[1], "burner", "kubectl {release}:\n{containers}");
    assert!(
        millicores(&row[2]) >= BURNING,
        "kubectl {release}:\n{containers}"
    );

    // The node: NAME CPU CPU% MEMORY MEMORY%, its CPU at least the burner's
    // share and its memory above nothing.
    for args in [&["top", "nodes"][..], &["top", "node", "solo"][..]] {
        let out = eventually(
            &format!("kubectl {release} {}", args.join(" ")),
            READINGS_WITHIN,
            || {
                let out = k.run(args);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                match rows(&text).into_iter().find(|r| r[0] == "solo") {
                    Some(row) if row.len() >= 4 && millicores(&row[1]) >= BURNING => Ok(row),
                    _ => Err(text),
                }
            },
        );
        assert!(bytes(&out[3]) > 0, "kubectl {release}: {out:?}");
        assert!(out[2].ends_with('%'), "kubectl {release}: {out:?}");
    }
}

/// The API as other clients read it.
fn raw_api(k: &Kubectl) {
    let pod: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
    ]))
    .expect("a PodMetrics as JSON");
    assert_eq!(pod["kind"], "PodMetrics", "{pod}");
    assert_eq!(pod["apiVersion"], "metrics.k8s.io/v1beta1", "{pod}");
    assert_eq!(pod["metadata"]["labels"]["run"], "burner", "{pod}");
    assert!(
        pod["window"].as_str().is_some_and(|w| w.ends_with('s')),
        "{pod}"
    );
    assert!(
        pod["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{pod}"
    );
    let usage = &pod["containers"][0]["usage"];
    assert!(bytes(usage["memory"].as_str().unwrap_or("")) > 0, "{pod}");
    assert!(
        millicores(usage["cpu"].as_str().unwrap_or("")) >= BURNING,
        "{pod}"
    );

    let nodes: Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]))
            .expect("a NodeMetricsList as JSON");
    assert_eq!(nodes["kind"], "NodeMetricsList", "{nodes}");
    assert_eq!(nodes["items"][0]["metadata"]["name"], "solo", "{nodes}");

    let all: Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods"]))
            .expect("a PodMetricsList as JSON");
    let names: Vec<&str> = all["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.contains(&"burner") && names.contains(&"sleeper"),
        "{all}"
    );

    let e = k.fails(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
    ]);
    assert!(e.contains("NotFound") && e.contains("not found"), "{e}");
}

/// A table's rows without its header, as words.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|r| !r.is_empty())
        .collect()
}

/// A CPU quantity (`998m`, `1`) in millicores; -1 when it is not one.
fn millicores(text: &str) -> i64 {
    Quantity::parse(text).map(|q| q.milli()).unwrap_or(-1)
}

/// A memory quantity (`12Mi`, `300Ki`) in bytes; 0 when it is not one.
fn bytes(text: &str) -> i64 {
    Quantity::parse(text).map(|q| q.units_ceil()).unwrap_or(0)
}
