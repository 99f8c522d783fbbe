//! Server-side apply with real clients against a real `skiff master`:
//! `kubectl apply --server-side` (kubectl 1.20 and 1.35) applying twice
//! (the second apply stores nothing: same resourceVersion), dropping a
//! field it applied before, refused after `kubectl scale` took
//! `.spec.replicas` and winning with `--force-conflicts`, and a second
//! manager adding a container that the first one's applies leave alone;
//! then helm 4, which installs and upgrades with server-side apply: a
//! chart written here (a ConfigMap, a Deployment, a Service) installed,
//! upgraded with changed values, listed and uninstalled.

use std::time::Duration;

use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Helm, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;

/// The namespace the kubectl scenario works in.
const NAMESPACE: &str = "ssa";
/// The namespace helm installs into (created by helm).
const HELM_NAMESPACE: &str = "charts";
/// How long something asynchronous may take.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_applies_server_side() {
    kubectl_scenario_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_applies_server_side() {
    kubectl_scenario_with(KubectlVersion::V1_35).await;
}

/// A master, then [`kubectl_scenario`] with `version`'s kubectl on a
/// blocking thread; the master's log when it fails.
async fn kubectl_scenario_with(version: KubectlVersion) {
    let Some(binary) = kube_clients::kubectl(version) else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let kubectl = Kubectl::new(binary, &m.api_addr).unwrap();
    let task = tokio::task::spawn_blocking(move || kubectl_scenario(&kubectl, version));
    if let Err(e) = task.await {
        eprintln!("kubectl {}: {}", version.release(), m.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("kubectl {} scenario: {e}", version.release());
    }
}

fn kubectl_scenario(k: &Kubectl, version: KubectlVersion) {
    k.ok(&["create", "namespace", NAMESPACE]);
    applied_twice(k, version);
    conflicts(k);
    second_manager(k);
}

/// A ConfigMap applied twice: the second apply changes nothing, not even
/// the resourceVersion; the manager owns its fields (`managedFields`); a
/// key it stops applying goes.
fn applied_twice(k: &Kubectl, version: KubectlVersion) {
    let data = [("greeting", "hello"), ("old", "x")];
    let manifest = write(k, "settings.yaml", &settings(&data));
    let apply = ["apply", "--server-side", "-f", manifest.as_str()];
    assert_has(&k.ok(&apply), "configmap/settings serverside-applied");
    let rv = jsonpath(k, "configmap/settings", "{.metadata.resourceVersion}");
    assert_has(&k.ok(&apply), "configmap/settings serverside-applied");
    assert_eq!(
        jsonpath(k, "configmap/settings", "{.metadata.resourceVersion}"),
        rv,
        "an apply that changes nothing stores nothing"
    );

    // kubectl 1.21 and later leave managedFields out unless asked.
    let mut get = vec!["get", "configmap", "settings", "-n", NAMESPACE];
    if version != KubectlVersion::V1_20 {
        get.push("--show-managed-fields");
    }
    let managed = |path: &str| {
        let output = format!("jsonpath={path}");
        let mut args = get.clone();
        args.extend(["-o", output.as_str()]);
        k.ok(&args)
    };
    assert_eq!(managed("{.metadata.managedFields[*].manager}"), "kubectl");
    assert_eq!(managed("{.metadata.managedFields[*].operation}"), "Apply");
    let fields_type = managed("{.metadata.managedFields[*].fieldsType}");
    assert_eq!(fields_type, "FieldsV1");
    let fields = managed("{.metadata.managedFields[0].fieldsV1}");
    assert_has(&fields, "f:greeting");
    assert_has(&fields, "f:old");

    // Dropped from the manifest: removed from the object.
    write(k, "settings.yaml", &settings(&[("greeting", "hello")]));
    assert_has(&k.ok(&apply), "configmap/settings serverside-applied");
    let data = jsonpath(k, "configmap/settings", "{.data}");
    assert_has(&data, "greeting");
    assert!(!data.contains("old"), "{data}");
}

/// `kubectl scale` takes `.spec.replicas` from the applier: its next apply
/// is refused naming the field, until it forces.
fn conflicts(k: &Kubectl) {
    let manifest = write(k, "web.yaml", &deployment(2));
    let apply = ["apply", "--server-side", "-f", manifest.as_str()];
    assert_has(&k.ok(&apply), "deployment.apps/web serverside-applied");
    assert_eq!(jsonpath(k, "deploy/web", "{.spec.replicas}"), "2");

    let scaled = k.ok(&["scale", "deploy/web", "--replicas=3", "-n", NAMESPACE]);
    assert_has(&scaled, "deployment.apps/web scaled");
    let refused = k.fails(&apply);
    assert_has(&refused, "conflict");
    assert_has(&refused, ".spec.replicas");
    assert_eq!(jsonpath(k, "deploy/web", "{.spec.replicas}"), "3");

    let forced = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        manifest.as_str(),
    ];
    assert_has(&k.ok(&forced), "deployment.apps/web serverside-applied");
    assert_eq!(jsonpath(k, "deploy/web", "{.spec.replicas}"), "2");
    // Its own value again: no conflict now.
    assert_has(&k.ok(&apply), "deployment.apps/web serverside-applied");
}

/// Another manager applies a second container into the Deployment
/// (containers merge by name); the first manager's applies keep it.
fn second_manager(k: &Kubectl) {
    let sidecar = write(k, "sidecar.yaml", SIDECAR);
    // The partial manifest lacks what a whole Deployment needs; the
    // server merges it into one that has it.
    let mesh = [
        "apply",
        "--server-side",
        "--field-manager=mesh",
        "--validate=false",
        "-f",
        sidecar.as_str(),
    ];
    assert_has(&k.ok(&mesh), "deployment.apps/web serverside-applied");
    let names = "{.spec.template.spec.containers[*].name}";
    assert_eq!(jsonpath(k, "deploy/web", names), "web log");
    let manifest = k.home().join("web.yaml");
    let apply = ["apply", "--server-side", "-f", path(&manifest)];
    assert_has(&k.ok(&apply), "deployment.apps/web serverside-applied");
    assert_eq!(jsonpath(k, "deploy/web", names), "web log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_4_installs_upgrades_lists_and_uninstalls_with_server_side_apply() {
    let Some(helm) = kube_clients::helm() else {
        return;
    };
    let Some(kubectl) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let helm = Helm::new(helm, &m.api_addr).unwrap();
    let kubectl = Kubectl::new(kubectl, &m.api_addr).unwrap();
    let task = tokio::task::spawn_blocking(move || helm_scenario(&helm, &kubectl));
    if let Err(e) = task.await {
        eprintln!("helm: {}", m.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("helm scenario: {e}");
    }
}

fn helm_scenario(h: &Helm, k: &Kubectl) {
    let chart = write_chart(h);
    let chart = path(&chart);
    let install = in_namespace(&["install", "shop", chart, "--create-namespace"]);
    assert_has(&h.ok(&install), "STATUS: deployed");
    let get = |what: &str, path: &str| {
        let output = format!("jsonpath={path}");
        let args = ["get", what, "-n", HELM_NAMESPACE, "-o", output.as_str()];
        k.ok(&args)
    };
    assert_eq!(get("configmap/shop-settings", "{.data.greeting}"), "hello");
    assert_eq!(get("deploy/shop-web", "{.spec.replicas}"), "1");
    assert_has(&get("service/shop-web", "{.spec.clusterIP}"), ".");
    // helm applied them server-side, as its own manager.
    let managed = |what: &str, path: &str| {
        let output = format!("jsonpath={path}");
        let args = [
            "get",
            what,
            "-n",
            HELM_NAMESPACE,
            "--show-managed-fields",
            "-o",
            output.as_str(),
        ];
        k.ok(&args)
    };
    for what in [
        "configmap/shop-settings",
        "deploy/shop-web",
        "service/shop-web",
    ] {
        let managers = managed(what, "{.metadata.managedFields[*].manager}");
        let operations = managed(what, "{.metadata.managedFields[*].operation}");
        let entries: Vec<(&str, &str)> = managers
            .split_whitespace()
            .zip(operations.split_whitespace())
            .collect();
        assert!(entries.contains(&("helm", "Apply")), "{what}: {entries:?}");
    }

    // An upgrade forces, as helm 4 upgrades may.
    let mut upgrade = in_namespace(&["upgrade", "shop", chart, "--force-conflicts"]);
    upgrade.extend(["--set", "greeting=bye", "--set", "replicas=2"]);
    assert_has(&h.ok(&upgrade), "STATUS: deployed");
    assert_eq!(get("configmap/shop-settings", "{.data.greeting}"), "bye");
    assert_eq!(get("deploy/shop-web", "{.spec.replicas}"), "2");
    let env = "{.spec.template.spec.containers[0].env[0].value}";
    assert_eq!(get("deploy/shop-web", env), "bye");

    let listed = h.ok(&in_namespace(&["list"]));
    let row = listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some("shop"))
        .unwrap_or_else(|| panic!("no release shop in:\n{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"deployed"), "{row}");
    assert_eq!(cells.get(2), Some(&"2"), "revision 2: {row}");

    let uninstalled = h.ok(&in_namespace(&["uninstall", "shop"]));
    assert_has(&uninstalled, "release \"shop\" uninstalled");
    eventually("the chart's objects to go", SETTLE, || {
        let left = k.ok(&[
            "get",
            "configmaps,deployments,services,secrets",
            "-n",
            HELM_NAMESPACE,
            "-o",
            "name",
        ]);
        let ours = left.lines().filter(|l| l.contains("shop")).count();
        if ours == 0 {
            Ok(())
        } else {
            Err(left)
        }
    });
}

/// `args` and `--namespace charts`.
fn in_namespace<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--namespace", HELM_NAMESPACE]);
    all
}

/// A chart in the runner's home: a ConfigMap with `greeting`, a Deployment
/// of `replicas` whose container sees the greeting, a Service in front.
fn write_chart(h: &Helm) -> std::path::PathBuf {
    let dir = h.home().join("shop");
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let files = [
        (dir.join("Chart.yaml"), CHART),
        (dir.join("values.yaml"), VALUES),
        (templates.join("configmap.yaml"), CONFIG_MAP_TEMPLATE),
        (templates.join("deployment.yaml"), DEPLOYMENT_TEMPLATE),
        (templates.join("service.yaml"), SERVICE_TEMPLATE),
    ];
    for (file, text) in files {
        std::fs::write(file, text).unwrap();
    }
    dir
}

const CHART: &str = "\
apiVersion: v2
name: shop
description: A chart for skiff's server-side apply test
version: 0.1.0
appVersion: \"1.0\"
";

const VALUES: &str = "\
greeting: hello
replicas: 1
";

const CONFIG_MAP_TEMPLATE: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
";

const DEPLOYMENT_TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    app: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}-web
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}-web
    spec:
      containers:
        - name: web
          image: busybox:1.36
          args: [\"httpd\", \"-f\", \"-p\", \"8080\"]
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: GREETING
              value: {{ .Values.greeting | quote }}
";

const SERVICE_TEMPLATE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector:
    app: {{ .Release.Name }}-web
  ports:
    - name: http
      port: 80
      targetPort: http
";

/// The ConfigMap `applied_twice` applies, with `data`.
fn settings(data: &[(&str, &str)]) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {NAMESPACE}\ndata:\n"
    );
    for (key, value) in data {
        text.push_str(&format!("  {key}: {value}\n"));
    }
    text
}

/// The Deployment `conflicts` applies, with `replicas`.
fn deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {NAMESPACE}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox:1.36\n        ports:\n        - containerPort: 80\n"
    )
}

/// What the second manager applies: one more container.
const SIDECAR: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ssa
spec:
  template:
    spec:
      containers:
      - name: log
        image: busybox:1.36
";

/// Writes `text` to `name` in the runner's home; its path.
fn write(k: &Kubectl, name: &str, text: &str) -> String {
    let file = k.home().join(name);
    std::fs::write(&file, text).unwrap();
    path(&file).to_owned()
}

fn path(file: &std::path::Path) -> &str {
    file.to_str().expect("temp paths are UTF-8")
}

/// `kubectl get <what> -n ssa -o jsonpath=<path>`.
fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    k.ok(&["get", what, "-n", NAMESPACE, "-o", output.as_str()])
}

/// Asserts that `text` contains `needle`, showing `text` if not.
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}
