//! helm 4 with the chart `helm create` makes, unchanged but for its image
//! (the static-busybox image, imported by the agent of a real `skiff
//! server` (master and agent in one process, with a private containerd,
//! in a network-namespace test host), whose command serves `/www` on port
//! 80, so the
//! chart's own `httpGet` probes on port `http` pass), once with helm 4's
//! default server-side apply and once with `--server-side=false`, one
//! release each in a namespace of its own: installed with `--wait`, the
//! Deployment's pod running on the agent as the chart's ServiceAccount,
//! with the automounted `kube-api-access-*` volume: `ca.crt`, `namespace`
//! (the release's) and `token` in
//! `/var/run/secrets/kubernetes.io/serviceaccount`, read with `kubectl
//! exec`. The pods have loopback only (no pod network), so the token goes
//! to the API from here, with the pod's `ca.crt` as the only trust: a
//! SelfSubjectReview (`kubectl auth whoami`) names
//! `system:serviceaccount:<namespace>:<release>-web`, listing pods is
//! refused as that account until a RoleBinding allows it. Then an upgrade
//! with `--wait` rolling two replicas out whose readiness starts late (so
//! helm returns only once they are ready), an upgrade whose readiness
//! never passes (helm's `--wait` times out, the revision is `failed`),
//! `helm list` and `helm history`, a rollback with `--wait` to the good
//! revision and `helm uninstall --wait`, after which the chart's objects,
//! its pods and the release's records are gone. Every write keeps to the
//! method the release was installed with (`managedFields`: helm's `Apply`
//! or its `Update`).

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::e2e_prerequisites;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Helm, Kubectl, KubectlVersion};
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;

const TOOLS: &[&str] = &["containerd", "runc", "ctr", "ip", "nsenter", "nft"];
/// The node the chart's pods run on.
const NODE: &str = "node-a";
/// The chart `helm create` makes, and so the suffix of its full names.
const CHART: &str = "web";
/// The web image, imported by the agent from its images dir.
const IMAGE: &str = "e2e/web:1";
/// The chart's values naming [`IMAGE`], which is never pulled.
const IMAGE_VALUES: [&str; 6] = [
    "--set",
    "image.repository=e2e/web",
    "--set",
    "image.tag=1",
    "--set",
    "image.pullPolicy=Never",
];
/// The image's command: `/www` served on the chart's port 80; SIGTERM
/// ends it at once (PID 1 would otherwise ignore it and sit out the
/// chart's 30 s grace period).
const SERVE: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";
/// Where the service account volume is mounted.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// helm's `--timeout` for what it waits for.
const WAIT: &str = "60s";
/// helm's `--timeout` for the upgrade that cannot become ready.
const FAILING_WAIT: &str = "10s";
/// How long anything asynchronous (an agent Ready, a binding honoured,
/// pods gone) may take.
const SETTLE: Duration = Duration::from_secs(60);

/// One release of the chart, and how helm writes it.
struct Release {
    name: &'static str,
    namespace: &'static str,
    /// What `helm install` is told of server-side apply (nothing: helm 4's
    /// default, server-side); upgrades and rollbacks say nothing, so helm
    /// keeps to the release's method.
    install_flags: &'static [&'static str],
    /// The operation of helm's `managedFields` entries: `Apply` for
    /// server-side apply, `Update` for helm's client-side patches.
    operation: &'static str,
}

impl Release {
    /// `helm create`'s full name: `<release>-<chart>`.
    fn full_name(&self) -> String {
        format!("{}-{CHART}", self.name)
    }

    /// The account helm's tokens name: the chart's ServiceAccount.
    fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.full_name()
        )
    }
}

const RELEASES: [Release; 2] = [
    Release {
        name: "ssa",
        namespace: "helm-ssa",
        install_flags: &[],
        operation: "Apply",
    },
    Release {
        name: "csa",
        namespace: "helm-csa",
        install_flags: &["--server-side=false"],
        operation: "Update",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_create_chart_runs_on_an_agent_with_its_service_account_token() -> anyhow::Result<()> {
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
    let dir = tempfile::Builder::new().prefix("skiff-helm-").tempdir()?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?
        .with_command(&["sh", "-c", SERVE])?
        .write_docker_archive(&data.join("agent/images/web.tar"), IMAGE)?;
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
    let api_addr = api.clone();
    let task = tokio::task::spawn_blocking(move || {
        let chart = helm.home().join(CHART);
        helm.ok(&["create", path(&chart)]);
        for release in &RELEASES {
            lifecycle(&helm, &kubectl, &api_addr, path(&chart), release);
        }
    });
    if let Err(e) = task.await {
        eprintln!("server: {}", server.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("helm scenario: {e}");
    }
    Ok(())
}

/// One release from install to uninstall.
fn lifecycle(h: &Helm, k: &Kubectl, api: &str, chart: &str, r: &Release) {
    let full = r.full_name();
    let deploy = format!("deploy/{full}");

    // Installed, and --wait waited for the pod to be ready.
    let mut install = vec!["install", r.name, chart, "--create-namespace"];
    install.extend(r.install_flags);
    let out = h.ok(&helm_args(r, &install, &[]));
    assert_has(&out, "STATUS: deployed");
    assert_has(&out, "REVISION: 1");
    assert_eq!(get(k, r, &deploy, "{.status.readyReplicas}"), "1");
    let account = format!("serviceaccount/{full}");
    assert_eq!(
        get(k, r, &account, "{.automountServiceAccountToken}"),
        "true"
    );
    for what in [deploy.as_str(), account.as_str()] {
        assert_written_by_helm(k, r, what);
    }

    // The pod: on the agent, as the chart's account, its token mounted.
    let pods = pod_names(k, r);
    let [pod] = pods.as_slice() else {
        panic!("one pod of release {} after install: {pods:?}", r.name);
    };
    let pod_ref = format!("pod/{pod}");
    assert_eq!(get(k, r, &pod_ref, "{.spec.serviceAccountName}"), full);
    assert_eq!(get(k, r, &pod_ref, "{.spec.nodeName}"), NODE);
    let volumes = get(k, r, &pod_ref, "{.spec.volumes[*].name}");
    assert!(
        volumes
            .split_whitespace()
            .any(|v| v.starts_with("kube-api-access-")),
        "no kube-api-access volume in {volumes:?}"
    );
    token_works_as_the_account(k, api, r, pod);

    // Two replicas of a changed template, ready only 3 s after they
    // start: helm returns once they are.
    let rollout = [
        "--set",
        "replicaCount=2",
        "--set",
        "podAnnotations.rollout=two",
        "--set",
        "readinessProbe.initialDelaySeconds=3",
    ];
    let out = h.ok(&helm_args(r, &["upgrade", r.name, chart], &rollout));
    assert_has(&out, "STATUS: deployed");
    assert_has(&out, "REVISION: 2");
    let rolled = "{.status.updatedReplicas} {.status.readyReplicas}";
    assert_eq!(get(k, r, &deploy, rolled), "2 2");
    let annotation = "{.spec.template.metadata.annotations.rollout}";
    assert_eq!(get(k, r, &deploy, annotation), "two");

    // A readiness probe that never passes: --wait gives up, the revision
    // fails.
    let never_ready = [
        "--set",
        "replicaCount=2",
        "--set",
        "podAnnotations.rollout=three",
        "--set",
        "readinessProbe.httpGet.path=/missing",
        "--timeout",
        FAILING_WAIT,
    ];
    let failed = h.run(&helm_args(r, &["upgrade", r.name, chart], &never_ready));
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the upgrade should fail: {said}");
    assert_has(&said, "UPGRADE FAILED");
    assert_has(
        &said,
        &format!("Deployment/{}/{full} not ready", r.namespace),
    );
    let row = list_row(h, r);
    assert_eq!(row.get(2).map(String::as_str), Some("3"), "{row:?}");
    assert!(row.iter().any(|c| c == "failed"), "{row:?}");

    // Back to revision 2, waited for.
    let out = h.ok(&helm_args(r, &["rollback", r.name, "2"], &[]));
    assert_has(&out, "Rollback was a success");
    assert_eq!(get(k, r, &deploy, rolled), "2 2");
    assert_eq!(get(k, r, &deploy, annotation), "two");
    let probe_path = "{.spec.template.spec.containers[0].readinessProbe.httpGet.path}";
    assert_eq!(get(k, r, &deploy, probe_path), "/");
    let row = list_row(h, r);
    assert_eq!(row.get(2).map(String::as_str), Some("4"), "{row:?}");
    assert!(row.iter().any(|c| c == "deployed"), "{row:?}");
    let history = h.ok(&helm_args(r, &["history", r.name], &[]));
    let revision = |n: &str| {
        history
            .lines()
            .find(|line| line.split_whitespace().next() == Some(n))
            .unwrap_or_else(|| panic!("no revision {n} in:\n{history}"))
    };
    assert_has(revision("3"), "failed");
    assert_has(revision("4"), "deployed");
    assert_has(revision("4"), "Rollback to 2");
    for what in [deploy.as_str(), account.as_str()] {
        assert_written_by_helm(k, r, what);
    }

    // Uninstalled, waited for; the pods follow.
    let out = h.ok(&helm_args(r, &["uninstall", r.name], &[]));
    assert_has(&out, &format!("release \"{}\" uninstalled", r.name));
    let kinds = "deployments,services,serviceaccounts";
    let left = k.ok(&["get", kinds, "-n", r.namespace, "-o", "name"]);
    assert!(!left.contains(&full), "{left}");
    let releases = k.ok(&["get", "secrets", "-n", r.namespace, "-o", "name"]);
    let records = format!("sh.helm.release.v1.{}.", r.name);
    assert!(!releases.contains(&records), "{releases}");
    let listed = h.ok(&helm_args(r, &["list"], &[]));
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(r.name)),
        "{listed}"
    );
    // Their ReplicaSets and pods, collected after the Deployment.
    eventually("the release's ReplicaSets and pods to go", SETTLE, || {
        let pods = pod_names(k, r);
        let sets = k.ok(&["get", "replicasets", "-n", r.namespace, "-o", "name"]);
        if pods.is_empty() && !sets.contains(&full) {
            Ok(())
        } else {
            Err(format!("{pods:?}\n{sets}"))
        }
    });
}

/// `helm <command> --namespace <ns>`, then the image values (every
/// install and upgrade gives them: without `--reuse-values` an upgrade
/// starts from the chart's own), `extra`, and `--wait` with [`WAIT`]
/// (an `extra` `--timeout` comes later and wins).
fn helm_args<'a>(r: &'a Release, command: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = command.to_vec();
    args.extend(["--namespace", r.namespace]);
    if matches!(command.first(), Some(&"install" | &"upgrade")) {
        args.extend(IMAGE_VALUES);
    }
    if matches!(
        command.first(),
        Some(&"install" | &"upgrade" | &"rollback" | &"uninstall")
    ) {
        args.extend(["--wait", "--timeout", WAIT]);
    }
    args.extend(extra);
    args
}

/// The service account volume seen from inside `pod`, and its token
/// presented to the API with the pod's own CA: who it is (with the pod,
/// node and token id `kubectl auth whoami` shows as extras), what it may
/// do.
fn token_works_as_the_account(k: &Kubectl, api: &str, r: &Release, pod: &str) {
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "-n", r.namespace, pod, "--"];
        all.extend(args);
        k.ok(&all)
    };
    let listed = exec(&["ls", TOKEN_DIR]);
    let mut files: Vec<&str> = listed.split_whitespace().collect();
    files.sort_unstable();
    assert_eq!(files, ["ca.crt", "namespace", "token"], "{listed}");
    let read = |file: &str| exec(&["cat", format!("{TOKEN_DIR}/{file}").as_str()]);
    // As Kubernetes writes it: the name alone, no newline.
    assert_eq!(read("namespace"), r.namespace);
    let ca = read("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = read("token");
    let claims = claims(&token);
    let bound = &claims["kubernetes.io"];
    assert_eq!(claims["sub"], r.username().as_str(), "{claims}");
    assert_eq!(bound["namespace"], r.namespace, "{claims}");
    assert_eq!(bound["pod"]["name"], pod, "{claims}");
    assert_eq!(bound["node"]["name"], NODE, "{claims}");

    // A kubeconfig of what the pod has: the CA and the token, no
    // client certificate.
    let ca_file = k.home().join(format!("{}-ca.crt", r.name));
    std::fs::write(&ca_file, &ca).unwrap();
    let config = k.home().join(format!("{}-account.conf", r.name));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://{api}\n    certificate-authority: {}\nusers:\n- name: account\n  user:\n    token: {}\ncontexts:\n- name: account\n  context:\n    cluster: skiff\n    user: account\ncurrent-context: account\n",
        path(&ca_file),
        token.trim()
    );
    std::fs::write(&config, text).unwrap();
    let as_account = |args: &[&'static str]| {
        let mut all = vec!["--kubeconfig", path(&config)];
        all.extend(args);
        all
    };

    let review: Value = serde_json::from_str(&k.ok(&as_account(&["auth", "whoami", "-o", "json"])))
        .expect("a SelfSubjectReview");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], r.username().as_str(), "{review}");
    let groups = user["groups"].to_string();
    let own_group = format!("\"system:serviceaccounts:{}\"", r.namespace);
    assert!(groups.contains(&own_group), "{groups}");
    // The token's pod, its node and its id, as kube-apiserver gives them
    // (kubectl shows them as `Extra: authentication.kubernetes.io/...`).
    let pod_uid = get(k, r, &format!("pod/{pod}"), "{.metadata.uid}");
    let node_uid = k.ok(&["get", "node", NODE, "-o", "jsonpath={.metadata.uid}"]);
    assert!(
        !pod_uid.is_empty() && !node_uid.is_empty(),
        "{pod_uid:?} {node_uid:?}"
    );
    let jti = claims["jti"].as_str().expect("the token has a jti");
    assert_eq!(
        user["extra"],
        serde_json::json!({
            "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")],
            "authentication.kubernetes.io/node-name": [NODE],
            "authentication.kubernetes.io/node-uid": [node_uid],
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [pod_uid],
        }),
        "{review}"
    );

    // Authenticated, not authorized: refused as the account (403, not 401).
    let list = as_account(&["get", "pods", "-n", r.namespace, "-o", "name"]);
    let refused = k.fails(&list);
    assert_has(&refused, "Forbidden");
    assert_has(&refused, &r.username());
    // Until a RoleBinding lets the account read pods.
    let role = format!("{}-pod-reader", r.name);
    let subject = format!("--serviceaccount={}:{}", r.namespace, r.full_name());
    k.ok(&[
        "create",
        "role",
        role.as_str(),
        "--verb=get,list",
        "--resource=pods",
        "-n",
        r.namespace,
    ]);
    let bound_role = format!("--role={role}");
    k.ok(&[
        "create",
        "rolebinding",
        role.as_str(),
        bound_role.as_str(),
        subject.as_str(),
        "-n",
        r.namespace,
    ]);
    let own = format!("pod/{pod}");
    eventually("the account to list pods", SETTLE, || {
        let out = k.run(&list);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.lines().any(|l| l == own) {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    // Only in its namespace.
    let elsewhere = k.fails(&as_account(&["get", "pods", "-n", "default"]));
    assert_has(&elsewhere, "Forbidden");
}

/// `kubectl get <what> -n <ns> -o jsonpath=<jsonpath>`.
fn get(k: &Kubectl, r: &Release, what: &str, jsonpath: &str) -> String {
    let output = format!("jsonpath={jsonpath}");
    k.ok(&["get", what, "-n", r.namespace, "-o", output.as_str()])
}

/// The names of the release's pods (by `helm create`'s instance label).
fn pod_names(k: &Kubectl, r: &Release) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={}", r.name);
    let names = "jsonpath={.items[*].metadata.name}";
    let out = k.ok(&[
        "get",
        "pods",
        "-n",
        r.namespace,
        "-l",
        selector.as_str(),
        "-o",
        names,
    ]);
    out.split_whitespace().map(str::to_owned).collect()
}

/// Asserts that helm wrote `what` by the release's method: its
/// `managedFields` have helm's entry with [`Release::operation`] and none
/// with the other one.
fn assert_written_by_helm(k: &Kubectl, r: &Release, what: &str) {
    let entries =
        "jsonpath={range .metadata.managedFields[*]}{.manager}={.operation}{\"\\n\"}{end}";
    let out = k.ok(&[
        "get",
        what,
        "-n",
        r.namespace,
        "--show-managed-fields",
        "-o",
        entries,
    ]);
    let helm: Vec<&str> = out.lines().filter(|l| l.starts_with("helm=")).collect();
    assert_eq!(helm, [format!("helm={}", r.operation)], "{what}: {out}");
}

/// The cells of the release's row in `helm list`.
fn list_row(h: &Helm, r: &Release) -> Vec<String> {
    let listed = h.ok(&helm_args(r, &["list"], &[]));
    listed
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(r.name))
        .unwrap_or_else(|| panic!("no release {} in:\n{listed}", r.name))
}

/// The claims of a JWT, as JSON.
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim())
        .unwrap_or_else(|e| panic!("the claims of {token:?}: {e}"));
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn path(file: &std::path::Path) -> &str {
    file.to_str().expect("temp paths are UTF-8")
}

/// Asserts that `text` contains `needle`, showing `text` if not.
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}
