//! helm 4's hooks and `helm test` on a real `skiff server` (master and
//! agent in one process, with a private containerd, in a network-namespace
//! test host, no pod network), with a chart the test writes: a ConfigMap
//! as the release's one resource, and Jobs and Pods of the static-busybox
//! image as hooks.
//!
//! - A LoadBalancer Service: `helm install --wait` returns with its
//!   ingress set (ServiceLB's: the node's address), as helm's readiness
//!   asks.
//! - A DaemonSet and a StatefulSet of two whose pods are Ready two seconds
//!   after they start: `helm install --wait` and `helm upgrade --wait`
//!   (a new greeting in their pods' environment) return only once every
//!   pod is Ready with the current template.
//! - `pre-install` Job (kept, `before-hook-creation`): it completes before
//!   helm creates the ConfigMap (its completion time is no later than the
//!   ConfigMap's creation).
//! - `post-install` Job (`hook-succeeded`): helm waits for it to complete
//!   and then deletes it, with its pod.
//! - `helm test`: a `test` Pod that exits 0 passes (phase `Succeeded`);
//!   after an upgrade that makes it exit 1, `helm test` fails and the pod
//!   is `Failed`.
//! - A `pre-upgrade` Job that exits 1 (`backoffLimit: 0`): the upgrade
//!   fails on it (`pre-upgrade hooks failed`, the Job `Failed` with
//!   `BackoffLimitExceeded`), the revision is `failed`, and the ConfigMap
//!   keeps the last good revision's data.
//! - `pre-delete` Job (`hook-succeeded`): `helm uninstall --wait` runs it
//!   to completion before removing the ConfigMap; afterwards the release
//!   and its resources are gone (hook resources, as helm documents, are
//!   not the release's: only the kept `pre-install` Job stays).

use std::path::Path;
use std::time::Duration;

use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::e2e_prerequisites;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Helm, Kubectl, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;

const TOOLS: &[&str] = &["containerd", "runc", "ctr", "ip", "nsenter", "nft"];
/// The node the hooks run on.
const NODE: &str = "node-a";
/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "e2e/busybox:1";
/// The release and its namespace.
const RELEASE: &str = "hooks";
const NAMESPACE: &str = "helm-hooks";
/// helm's `--timeout` for what it waits for (hooks included).
const WAIT: &str = "60s";
/// How long anything asynchronous may take.
const SETTLE: Duration = Duration::from_secs(60);

const CHART_YAML: &str = "apiVersion: v2
name: hooks
version: 0.1.0
";

/// Exit codes of the upgrade-time hook and the test pod, and the
/// ConfigMap's data, as values.
const VALUES_YAML: &str = "preUpgradeExit: 0
testExit: 0
greeting: hello
";

/// A hook Job running `sh -c <script>` once (`backoffLimit: 0`), named
/// `<release>-<name>`.
fn hook_job(name: &str, hook: &str, delete_policy: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {{{{ .Release.Name }}}}-{name}
  annotations:
    helm.sh/hook: {hook}
    helm.sh/hook-delete-policy: {delete_policy}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, {script}]
"
    )
}

/// The pod spec of the chart's DaemonSet and StatefulSet: the greeting in
/// its environment (an upgrade changing it rolls them), Ready only two
/// seconds after it starts, so that helm's `--wait` has to wait.
const WORKLOAD_POD: &str = "      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: e2e/busybox:1
        imagePullPolicy: Never
        env: [{name: GREETING, value: {{ .Values.greeting | quote }}}]
        command: [sh, -c, 'sleep 2; touch /tmp/ready; sleep 3600']
        readinessProbe:
          exec: {command: [sh, -c, 'test -f /tmp/ready']}
          periodSeconds: 1
";

/// The chart's files, relative to its directory.
fn chart_files() -> Vec<(&'static str, String)> {
    vec![
        ("Chart.yaml", CHART_YAML.to_owned()),
        ("values.yaml", VALUES_YAML.to_owned()),
        (
            "templates/configmap.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
"
            .to_owned(),
        ),
        (
            "templates/service.yaml",
            "apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-lb
spec:
  type: LoadBalancer
  selector:
    app: none
  ports:
  - port: 8080
    targetPort: 8080
"
            .to_owned(),
        ),
        (
            "templates/workloads.yaml",
            format!(
                "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{{{ .Release.Name }}}}-agent
spec:
  selector:
    matchLabels: {{app: {{{{ .Release.Name }}}}-agent}}
  template:
    metadata:
      labels: {{app: {{{{ .Release.Name }}}}-agent}}
    spec:
{WORKLOAD_POD}---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{{{ .Release.Name }}}}-db
spec:
  serviceName: {{{{ .Release.Name }}}}-db
  replicas: 2
  selector:
    matchLabels: {{app: {{{{ .Release.Name }}}}-db}}
  template:
    metadata:
      labels: {{app: {{{{ .Release.Name }}}}-db}}
    spec:
{WORKLOAD_POD}"
            ),
        ),
        (
            "templates/pre-install.yaml",
            hook_job(
                "pre-install",
                "pre-install",
                "before-hook-creation",
                "'sleep 1; exit 0'",
            ),
        ),
        (
            "templates/post-install.yaml",
            hook_job("post-install", "post-install", "hook-succeeded", "'exit 0'"),
        ),
        (
            "templates/pre-upgrade.yaml",
            hook_job(
                "pre-upgrade",
                "pre-upgrade",
                "before-hook-creation",
                "'exit {{ .Values.preUpgradeExit }}'",
            ),
        ),
        (
            "templates/pre-delete.yaml",
            hook_job("pre-delete", "pre-delete", "hook-succeeded", "'exit 0'"),
        ),
        (
            "templates/tests/test.yaml",
            "apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: e2e/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, 'exit {{ .Values.testExit }}']
"
            .to_owned(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_runs_hook_jobs_and_test_pods_and_fails_on_a_failed_hook() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(helm) = kube_clients::helm() else {
        return Ok(());
    };
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new()
        .prefix("skiff-helm-hooks-")
        .tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?.write_docker_archive(&data.join("agent/images/busybox.tar"), IMAGE)?;
    let NodeServer {
        process: server,
        api,
        client: _,
    } = ServerProcess::start_node_in_host(
        &host,
        &data,
        NODE,
        &["--pod-network", "none"],
        Duration::from_secs(30),
    )
    .await?;
    let helm = Helm::new(helm, &api)?;
    let kubectl = Kubectl::new(kubectl, &api)?;
    let node_ip = host.ip.clone();
    let task = tokio::task::spawn_blocking(move || scenario(&helm, &kubectl, &node_ip));
    if let Err(e) = task.await {
        eprintln!("server: {}", server.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("helm hooks scenario: {e}");
    }
    Ok(())
}

fn scenario(h: &Helm, k: &Kubectl, node_ip: &str) {
    let chart = h.home().join("hooks");
    for (file, text) in chart_files() {
        let at = chart.join(file);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, text).unwrap();
    }
    let chart = path(&chart);
    let pre_install = format!("{RELEASE}-pre-install");
    let post_install = format!("{RELEASE}-post-install");
    let pre_upgrade = format!("{RELEASE}-pre-upgrade");
    let settings = format!("{RELEASE}-settings");
    let test_pod = format!("{RELEASE}-test");

    // Install: pre-install ran to completion before the ConfigMap was
    // made; post-install ran (helm waited for it) and was deleted.
    h.ok(&[
        "install",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        WAIT,
    ]);
    let job = |name: &str, field: &str| {
        k.ok(&[
            "get",
            "job",
            name,
            "-n",
            NAMESPACE,
            "-o",
            &format!("jsonpath={field}"),
        ])
    };
    assert_eq!(job(&pre_install, "{.status.succeeded}"), "1");
    assert_eq!(
        job(
            &pre_install,
            "{.status.conditions[?(@.type==\"Complete\")].status}"
        ),
        "True"
    );
    // --wait returned with the DaemonSet's and StatefulSet's pods Ready.
    rolled_out(k, "hello");
    let ingress = k.ok(&[
        "get",
        "service",
        &format!("{RELEASE}-lb"),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    assert_eq!(ingress, node_ip);
    let completed = job(&pre_install, "{.status.completionTime}");
    let created = k.ok(&[
        "get",
        "configmap",
        &settings,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.creationTimestamp}",
    ]);
    // RFC 3339 in UTC, second precision: ordered as strings.
    assert!(
        !completed.is_empty() && completed <= created,
        "pre-install completed at {completed:?}, the ConfigMap was created at {created:?}"
    );
    eventually("the post-install Job and its pod deleted", SETTLE, || {
        let jobs = k.ok(&["get", "jobs", "-n", NAMESPACE, "-o", "name"]);
        let pods = k.ok(&[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            &format!("job-name={post_install}"),
            "-o",
            "name",
        ]);
        if !jobs.contains(&post_install) && pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{jobs}\n{pods}"))
        }
    });
    assert_eq!(status(h), "deployed");

    // helm test: the test pod passes.
    let out = h.ok(&["test", RELEASE, "--namespace", NAMESPACE, "--timeout", WAIT]);
    assert!(out.contains(&test_pod), "{out}");
    assert!(out.contains("Phase:          Succeeded"), "{out}");
    assert_eq!(pod_phase(k, &test_pod), "Succeeded");

    // An upgrade making the test fail (its pre-upgrade hook passes), then
    // helm test fails and says so.
    h.ok(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "testExit=1",
        "--set",
        "greeting=again",
        "--wait",
        "--timeout",
        WAIT,
    ]);
    assert_eq!(job(&pre_upgrade, "{.status.succeeded}"), "1");
    // --wait returned with both rolled to the new greeting.
    rolled_out(k, "again");
    let out = h.run(&["test", RELEASE, "--namespace", NAMESPACE, "--timeout", WAIT]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "helm test passed:\n{said}");
    assert!(said.contains(&test_pod), "{said}");
    assert_eq!(pod_phase(k, &test_pod), "Failed");
    assert_eq!(greeting(k, &settings), "again");

    // An upgrade whose pre-upgrade hook fails: refused, the revision
    // failed, the release's resources left as they were.
    let out = h.run(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "preUpgradeExit=1",
        "--set",
        "greeting=never",
        "--wait",
        "--timeout",
        WAIT,
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the upgrade passed:\n{said}");
    assert!(said.contains("pre-upgrade hooks failed"), "{said}");
    assert_eq!(
        job(
            &pre_upgrade,
            "{.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "BackoffLimitExceeded"
    );
    assert_eq!(job(&pre_upgrade, "{.status.failed}"), "1");
    assert_eq!(status(h), "failed");
    assert_eq!(greeting(k, &settings), "again");

    // Uninstall: pre-delete runs (helm waits for it), then the release's
    // ConfigMap and records go; hook resources are not the release's.
    h.ok(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--wait",
        "--timeout",
        WAIT,
    ]);
    let listed = h.ok(&["list", "--namespace", NAMESPACE, "--short"]);
    assert!(listed.trim().is_empty(), "{listed}");
    eventually("the release's ConfigMap and records gone", SETTLE, || {
        let configmaps = k.ok(&["get", "configmaps", "-n", NAMESPACE, "-o", "name"]);
        let secrets = k.ok(&["get", "secrets", "-n", NAMESPACE, "-o", "name"]);
        if !configmaps.contains(&settings) && !secrets.contains("sh.helm.release.v1") {
            Ok(())
        } else {
            Err(format!("{configmaps}\n{secrets}"))
        }
    });
    let jobs = k.ok(&["get", "jobs", "-n", NAMESPACE, "-o", "name"]);
    assert!(
        !jobs.contains("pre-delete") && jobs.contains(&pre_install),
        "{jobs}"
    );
}

/// Asserts, without waiting (helm's `--wait` has returned), that the
/// chart's DaemonSet (one pod: one node) and StatefulSet (two) are rolled
/// out with `greeting`: each has observed its generation and counts every
/// pod updated and Ready, and every pod not being deleted is of the
/// current template and Ready. (Pods being replaced may still be going,
/// for a second's grace.)
fn rolled_out(k: &Kubectl, greeting: &str) {
    let get = |what: &str| -> serde_json::Value {
        let mut args = vec!["get", "-n", NAMESPACE, "-o", "json"];
        args.extend(what.split_whitespace());
        let out = k.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let agent = get(&format!("daemonset {RELEASE}-agent"));
    let db = get(&format!("statefulset {RELEASE}-db"));
    for (what, object) in [("agent", &agent), ("db", &db)] {
        assert_eq!(
            object["status"]["observedGeneration"], object["metadata"]["generation"],
            "{what}: {object}"
        );
    }
    let status = &agent["status"];
    assert_eq!(status["numberReady"], 1, "{status}");
    assert_eq!(status["updatedNumberScheduled"], 1, "{status}");
    let status = &db["status"];
    assert_eq!(status["readyReplicas"], 2, "{status}");
    assert_eq!(status["updatedReplicas"], 2, "{status}");
    assert_eq!(
        status["currentRevision"], status["updateRevision"],
        "{status}"
    );
    for (app, count) in [
        (format!("{RELEASE}-agent"), 1),
        (format!("{RELEASE}-db"), 2),
    ] {
        let pods = get(&format!("pods -l app={app}"));
        let staying: Vec<&serde_json::Value> = pods["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(staying.len(), count, "{app}: {pods}");
        for pod in staying {
            let env = &pod["spec"]["containers"][0]["env"][0]["value"];
            assert_eq!(env, greeting, "{app}: {pod}");
            let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            assert!(ready, "{app}: not Ready: {pod}");
        }
    }
}

/// The release's status as `helm status` reports it.
fn status(h: &Helm) -> String {
    let out = h.ok(&["status", RELEASE, "--namespace", NAMESPACE, "-o", "json"]);
    let status: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    status["info"]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no info.status in {out}"))
        .to_owned()
}

fn pod_phase(k: &Kubectl, pod: &str) -> String {
    k.ok(&[
        "get",
        "pod",
        pod,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.status.phase}",
    ])
}

fn greeting(k: &Kubectl, configmap: &str) -> String {
    k.ok(&[
        "get",
        "configmap",
        configmap,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.greeting}",
    ])
}

fn path(file: &Path) -> &str {
    file.to_str().expect("temp paths are UTF-8")
}
