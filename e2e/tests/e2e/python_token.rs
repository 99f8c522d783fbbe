//! A pod's service account token used by the official Kubernetes Python
//! client as in-cluster code uses it: a busybox pod running `sleep` on a
//! real `skiff server` (master and agent in one process, with a private
//! containerd, in a network-namespace test host, no pod network), as its
//! namespace's `default` ServiceAccount. The test reads the pod's
//! `/var/run/secrets/kubernetes.io/serviceaccount` (`token`, `ca.crt`,
//! `namespace`) with `kubectl exec` into a directory of its own shaped
//! like that path, and runs `e2e/python/token_scenario.py` with the
//! venv's Python and `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`
//! naming the server (the pods have loopback only, so the token goes to
//! the API from here, with the pod's `ca.crt` as the only trust). The
//! script configures the client with its `InClusterConfigLoader` and lists
//! the namespace's pods: refused first (403, kube-apiserver's `pods is
//! forbidden: User "system:serviceaccount:..." cannot list resource
//! "pods" ...`), then, once a Role allowing get/list on pods is bound to
//! the account, allowed, the pod itself listed; pods of another namespace
//! are still refused.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::e2e_prerequisites;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;

const TOOLS: &[&str] = &["containerd", "runc", "ctr", "ip", "nsenter", "nft"];
/// The node the pod runs on.
const NODE: &str = "node-a";
/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "e2e/busybox:1";
/// The pod's namespace, made by the test.
const NAMESPACE: &str = "py-token";
/// A namespace the account is never allowed to list pods in.
const ELSEWHERE: &str = "default";
/// The pod whose token the script uses.
const POD: &str = "token-holder";
/// The pod's service account: its namespace's own.
const ACCOUNT: &str = "default";
/// Where the service account volume is mounted, in the pod and (under a
/// directory of the test's) here.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The Role (and RoleBinding) that lets the account read pods.
const ROLE: &str = "pod-reader";
/// How long anything asynchronous (the namespace's account and CA
/// ConfigMap, the pod running) may take.
const SETTLE: Duration = Duration::from_secs(60);
/// How long one run of the script may take (its own wait for the binding
/// is 60 s).
const SCRIPT_WITHIN: Duration = Duration::from_secs(120);

/// The pod: busybox `sleep`, as the namespace's default account (no
/// `serviceAccountName`: admission names it). `sleep` as PID 1 ignores
/// SIGTERM, hence the short grace period.
fn pod_yaml() -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {POD}
  namespace: {NAMESPACE}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, \"3600\"]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_token_lists_its_namespaces_pods_with_the_python_client_once_a_role_allows_it(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let Some(python) = kube_clients::python_client() else {
        return Ok(());
    };
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new()
        .prefix("skiff-python-token-")
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
    let kubectl = Kubectl::new(kubectl, &api)?;
    let service = ServiceAddress {
        host: host.ip.clone(),
        port: api
            .rsplit_once(':')
            .map(|(_, port)| port.to_owned())
            .expect("host:port"),
    };
    let task = tokio::task::spawn_blocking(move || scenario(&kubectl, &python, &service));
    if let Err(e) = task.await {
        eprintln!("server: {}", server.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("Python token scenario: {e}");
    }
    Ok(())
}

/// Where the API server listens, as a pod's environment names it.
struct ServiceAddress {
    /// `KUBERNETES_SERVICE_HOST`.
    host: String,
    /// `KUBERNETES_SERVICE_PORT`.
    port: String,
}

fn scenario(k: &Kubectl, python: &Path, service: &ServiceAddress) {
    k.ok(&["create", "namespace", NAMESPACE]);
    // The namespace's default account and CA ConfigMap, made by the
    // leader's controllers, before the pod that mounts them.
    eventually(
        "py-token's default ServiceAccount and kube-root-ca.crt",
        SETTLE,
        || {
            let account = k.run(&["get", "serviceaccount", ACCOUNT, "-n", NAMESPACE]);
            let ca = k.run(&["get", "configmap", "kube-root-ca.crt", "-n", NAMESPACE]);
            if account.status.success() && ca.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&account.stderr),
                    String::from_utf8_lossy(&ca.stderr)
                ))
            }
        },
    );
    let manifest = k.home().join("pod.yaml");
    std::fs::write(&manifest, pod_yaml()).unwrap();
    k.ok(&["apply", "-f", path(&manifest)]);
    let pod_ref = format!("pod/{POD}");
    let ready = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    eventually("the pod to be ready", SETTLE, || {
        let out = k.run(&["get", pod_ref.as_str(), "-n", NAMESPACE, "-o", ready]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && said == "True" {
            Ok(())
        } else {
            Err(format!("{said}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    let account = k.ok(&[
        "get",
        pod_ref.as_str(),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.serviceAccountName}",
    ]);
    assert_eq!(account, ACCOUNT);

    // The pod's service account volume, copied byte for byte to a
    // directory shaped like its path.
    let root = k.home().join("pod-root");
    let account_dir = root.join(TOKEN_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&account_dir).unwrap();
    for file in ["token", "ca.crt", "namespace"] {
        let inside = format!("{TOKEN_DIR}/{file}");
        let content = k.ok(&["exec", "-n", NAMESPACE, POD, "--", "cat", inside.as_str()]);
        assert!(!content.is_empty(), "the pod's {inside} is empty");
        std::fs::write(account_dir.join(file), content).unwrap();
    }
    let namespace = std::fs::read_to_string(account_dir.join("namespace")).unwrap();
    assert_eq!(namespace, NAMESPACE);

    // Before any Role: refused, in kube-apiserver's words.
    let user = format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}");
    let refused_here = refusal(&user, NAMESPACE);
    let out = run_script(python, service, &["refused", path(&account_dir), ACCOUNT]);
    assert_line(&out, &refused_here);

    // A Role to get and list pods, bound to the account.
    k.ok(&[
        "create",
        "role",
        ROLE,
        "--verb=get,list",
        "--resource=pods",
        "-n",
        NAMESPACE,
    ]);
    let bound_role = format!("--role={ROLE}");
    let subject = format!("--serviceaccount={NAMESPACE}:{ACCOUNT}");
    k.ok(&[
        "create",
        "rolebinding",
        ROLE,
        bound_role.as_str(),
        subject.as_str(),
        "-n",
        NAMESPACE,
    ]);

    // Allowed in its own namespace, the pod itself listed; still refused
    // elsewhere.
    let out = run_script(
        python,
        service,
        &["allowed", path(&account_dir), ACCOUNT, ELSEWHERE],
    );
    assert_line(&out, &format!("listed: {POD}"));
    assert_line(&out, &refusal(&user, ELSEWHERE));
}

/// The line the script prints for kube-apiserver's refusal of `user`
/// listing pods in `namespace`.
fn refusal(user: &str, namespace: &str) -> String {
    format!(
        "refused: pods is forbidden: User \"{user}\" cannot list resource \"pods\" in API group \"\" in the namespace \"{namespace}\""
    )
}

/// Runs `token_scenario.py <args>` with the venv's `python` and the
/// server's address as a pod's environment gives it; asserts that it
/// passed and answers what it printed. Killed (by its own PID) after
/// [`SCRIPT_WITHIN`].
fn run_script(python: &Path, service: &ServiceAddress, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/token_scenario.py");
    let scratch = tempfile::Builder::new()
        .prefix("token-scenario-")
        .tempdir()
        .unwrap();
    let stdout_file = scratch.path().join("stdout");
    let stderr_file = scratch.path().join("stderr");
    let mut command = Command::new(python);
    // -u: its lines in order with any traceback; no bytecode written next
    // to the script in the source tree. No kubeconfig of this machine's:
    // the in-cluster configuration is all it has.
    command
        .arg("-u")
        .arg(&script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("KUBERNETES_SERVICE_HOST", &service.host)
        .env("KUBERNETES_SERVICE_PORT", &service.port)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
    let deadline = Instant::now() + SCRIPT_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let what = format!("{} {}", script.display(), args.join(" "));
    let Some(status) = status else {
        panic!("{what} ran past {SCRIPT_WITHIN:?}:\n{stdout}\n{stderr}");
    };
    assert!(
        status.success(),
        "{what} failed ({status}):\n{stdout}\n{stderr}"
    );
    assert_line(&stdout, "PASSED");
    stdout
}

/// Asserts that `text` has the line `line`, showing `text` if not.
fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

fn path(file: &Path) -> &str {
    file.to_str().expect("temp paths are UTF-8")
}
