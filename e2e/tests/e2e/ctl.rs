//! `skiff ctl` against a real master: apply, get, delete, and clear errors
//! for bad manifests that leave nothing behind; `KIND/NAME`, several kinds
//! at once, label selectors, `delete -f`; `skiff token --server` and
//! `skiff completion` like every other command.

use std::io::Write;
use std::process::Stdio;

use skiff_e2e::credentials::admin_conf;
use skiff_e2e::master::ready_master;
use skiff_e2e::{ctl, ctl_command, skiff_bin};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_refused_with_their_location_and_store_nothing() {
    let (dir, m) = ready_master().await.unwrap();
    let cases = [
        (
            "unknown-field.yaml",
            format!(
                "{GOOD_NAMESPACE}---\n{}",
                DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  replicaz: 3")
            ),
            vec![
                "unknown-field.yaml",
                "document 2",
                "Deployment",
                "spec.replicaz",
            ],
        ),
        (
            "broken.yaml",
            format!(
                "{GOOD_NAMESPACE}---\n{}",
                DEPLOYMENT.replace("{app: web}\n  template", "{app: web\n  template")
            ),
            vec!["broken.yaml", "YAML syntax error at line"],
        ),
        (
            "wrong-type.yaml",
            format!(
                "{GOOD_NAMESPACE}---\n{}",
                DEPLOYMENT.replace("replicas: 2", "replicas: two")
            ),
            vec!["wrong-type.yaml", "document 2", "spec.replicas", "line 12"],
        ),
    ];
    for (name, body, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let out = ctl(&m.api_addr, &["apply", "-f", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: apply should fail");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{name}: {needle:?} not in {stderr:?}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        // The valid namespace in the same file was not created either.
        let get = ctl(&m.api_addr, &["get", "ns", "shop"]);
        assert!(!get.status.success(), "{name}: namespace shop was created");
        assert!(
            text(&get.stderr).contains("not found"),
            "{}",
            text(&get.stderr)
        );
    }
    // --strict=false applies the same file, warning about the field.
    let path = dir.path().join("unknown-field.yaml");
    let out = ctl(
        &m.api_addr,
        &["apply", "--strict=false", "-f", path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("spec.replicaz"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_delete_work_like_kubectl() {
    let (dir, m) = ready_master().await.unwrap();
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, format!("{DEPLOYMENT}---\n{GOOD_NAMESPACE}")).unwrap();
    let file = path.to_str().unwrap();

    let out = ctl(&m.api_addr, &["apply", "-f", file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "namespace/shop created\ndeployment.apps/web created\n"
    );
    let again = ctl(&m.api_addr, &["apply", "-f", file]);
    assert_eq!(
        text(&again.stdout),
        "namespace/shop unchanged\ndeployment.apps/web unchanged\n"
    );
    std::fs::write(&path, DEPLOYMENT.replace("replicas: 2", "replicas: 5")).unwrap();
    let changed = ctl(&m.api_addr, &["apply", "-f", file]);
    assert_eq!(text(&changed.stdout), "deployment.apps/web configured\n");

    let table = text(&ctl(&m.api_addr, &["get", "deploy", "-n", "shop"]).stdout);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(&lines[1][..2], ["web", "0/5"]);

    let json = ctl(&m.api_addr, &["get", "deployments", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    assert_eq!(list["items"][0]["spec"]["replicas"], 5);
    assert_eq!(list["items"][0]["metadata"]["generation"], 2);

    let yaml = text(
        &ctl(
            &m.api_addr,
            &["get", "deploy", "web", "-n", "shop", "-o", "yaml"],
        )
        .stdout,
    );
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    let bad_kind = ctl(&m.api_addr, &["get", "widgets"]);
    assert!(!bad_kind.status.success());
    assert!(text(&bad_kind.stderr).contains("unknown kind \"widgets\""));

    let deleted = ctl(&m.api_addr, &["delete", "deploy", "web", "-n", "shop"]);
    assert_eq!(text(&deleted.stdout), "deployment.apps/web deleted\n");
    let gone = ctl(&m.api_addr, &["get", "deploy", "web", "-n", "shop"]);
    assert!(!gone.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_refused_with_the_field_and_reason_and_nothing_is_stored() {
    let (dir, m) = ready_master().await.unwrap();
    let namespace = dir.path().join("ns.yaml");
    std::fs::write(&namespace, GOOD_NAMESPACE).unwrap();
    assert!(
        ctl(&m.api_addr, &["apply", "-f", namespace.to_str().unwrap()])
            .status
            .success()
    );
    let cases = [
        (
            "wrong selector",
            DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}"),
            "spec.selector: does not match the template's labels",
        ),
        (
            "negative replicas",
            DEPLOYMENT.replace("replicas: 2", "replicas: -2"),
            "spec.replicas: must be >= 0, got -2",
        ),
        (
            "bad quantity",
            DEPLOYMENT.replace(
                "image: busybox:1.36",
                "image: busybox:1.36\n        resources: {limits: {memory: 12 MB}}",
            ),
            "spec.template.spec.containers.0.resources.limits.memory: \"12 MB\" is not a quantity",
        ),
        (
            "invalid name",
            DEPLOYMENT.replace("name: web\n  namespace", "name: Web_1\n  namespace"),
            "metadata.name: \"Web_1\" is not a DNS subdomain",
        ),
    ];
    for (what, body, expected) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, body).unwrap();
        let out = ctl(&m.api_addr, &["apply", "-f", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: apply should fail");
        assert!(
            stderr.contains(expected),
            "{what}: {expected:?} not in {stderr:?}"
        );
        assert!(stderr.contains("is invalid"), "{what}: {stderr}");
        let list = ctl(&m.api_addr, &["get", "deploy", "-n", "shop", "-o", "name"]);
        assert_eq!(text(&list.stdout), "", "{what}: something was stored");
    }
}

/// A Service for the Deployment above and two bare pods with their own
/// labels (the Deployment's pods carry only `app: web`).
const SERVICE_AND_PODS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata:
  name: api-1
  namespace: shop
  labels: {app: api, tier: back}
spec:
  containers:
  - name: main
    image: busybox:1.36
---
apiVersion: v1
kind: Pod
metadata:
  name: cache-1
  namespace: shop
  labels: {app: cache, tier: back}
spec:
  containers:
  - name: main
    image: busybox:1.36
"#;

/// Stdout of a command that must have succeeded (else its stderr).
fn succeeded(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Stderr of a command that must have failed.
fn failed(out: std::process::Output) -> String {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    text(&out.stderr)
}

/// The lines of `text`, sorted (list order is the store's).
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_slash_name_several_kinds_and_selectors_work_like_kubectl() {
    let (dir, m) = ready_master().await.unwrap();
    // `skiff ctl <args> -n shop`.
    let shop = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "shop"]);
        ctl(&m.api_addr, &all)
    };
    let path = dir.path().join("shop.yaml");
    let all = format!("{GOOD_NAMESPACE}---\n{DEPLOYMENT}---\n{SERVICE_AND_PODS}");
    std::fs::write(&path, all).unwrap();
    succeeded(ctl(&m.api_addr, &["apply", "-f", path.to_str().unwrap()]));

    // KIND/NAME, as get, describe and delete take it.
    let table = succeeded(shop(&["get", "deploy/web"]));
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("web "), "{table}");
    let names = succeeded(shop(&["get", "deploy/web", "svc/web", "-o", "name"]));
    assert_eq!(names, "deployment.apps/web\nservice/web\n");
    let described = succeeded(shop(&["describe", "deployments/web"]));
    assert!(described.contains("web"), "{described}");
    let mixed = failed(shop(&["get", "deploy", "svc/web"]));
    assert!(mixed.contains("\"svc/web\""), "{mixed}");

    // Several kinds: each kind's table in turn, names with their kind.
    let tables = succeeded(shop(&["get", "pods,svc"]));
    let headers = tables.lines().filter(|l| l.starts_with("NAME")).count();
    assert_eq!(headers, 2, "{tables}");
    assert!(tables.contains("CLUSTER-IP"), "{tables}");
    assert!(tables.contains("\n\nNAME"), "{tables}");
    for row in ["pod/api-1 ", "pod/cache-1 ", "service/web "] {
        let found = tables.lines().any(|l| l.starts_with(row));
        assert!(found, "{row:?} in {tables}");
    }

    // Label selectors, as kubectl writes them.
    let selected = |selector: &str| {
        let names = succeeded(shop(&["get", "pods", "-l", selector, "-o", "name"]));
        sorted_lines(&names)
    };
    let both = ["pod/api-1", "pod/cache-1"];
    assert_eq!(selected("tier=back"), both);
    assert_eq!(selected("tier=back,app!=cache"), ["pod/api-1"]);
    assert_eq!(selected("app in (api, cache)"), both);
    assert_eq!(selected("tier,app notin (api)"), ["pod/cache-1"]);
    assert!(!selected("!tier").contains(&"pod/api-1".to_owned()));
    let bad = failed(shop(&["get", "pods", "-l", "tier in (a"]));
    assert!(bad.contains("bad selector \"tier in (a\""), "{bad}");

    // Delete by selector: only what matches.
    let deleted = succeeded(shop(&["delete", "pods", "-l", "tier=back"]));
    let expected = ["pod/api-1 deleted", "pod/cache-1 deleted"];
    assert_eq!(sorted_lines(&deleted), expected);
    assert!(selected("tier").is_empty());
    succeeded(shop(&["get", "svc/web", "deploy/web"]));
    let none = shop(&["delete", "pods", "-l", "tier=back"]);
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("No resources found"));

    // KIND/NAME for delete, and a missing one among several.
    let partly = shop(&["delete", "svc/web", "svc/nope"]);
    assert_eq!(text(&partly.stdout), "service/web deleted\n");
    let stderr = failed(partly);
    assert!(stderr.contains("service/nope"), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

/// What `delete -f` says for the Deployment and the Service.
const BOTH_DELETED: &str = "deployment.apps/web deleted\nservice/web deleted\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_f_deletes_every_object_in_the_manifest() {
    let (dir, m) = ready_master().await.unwrap();
    let service = SERVICE_AND_PODS.split("---").next().unwrap();
    let manifest = format!("{DEPLOYMENT}---\n{service}");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, format!("{GOOD_NAMESPACE}---\n{manifest}")).unwrap();
    let file = path.to_str().unwrap();
    succeeded(ctl(&m.api_addr, &["apply", "-f", file]));

    // Two documents: each deleted and reported, in the file's order.
    std::fs::write(&path, &manifest).unwrap();
    let deleted = succeeded(ctl(&m.api_addr, &["delete", "-f", file]));
    assert_eq!(deleted, BOTH_DELETED);
    failed(ctl(&m.api_addr, &["get", "deploy/web", "-n", "shop"]));

    // Again: both are missing, which is an error unless ignored.
    let again = failed(ctl(&m.api_addr, &["delete", "-f", file]));
    assert_eq!(again.matches("not found").count(), 2, "{again}");
    assert!(again.contains("2 of 2 objects"), "{again}");
    let ignored = ctl(&m.api_addr, &["delete", "-f", file, "--ignore-not-found"]);
    assert_eq!(succeeded(ignored), "");

    // From stdin, as apply takes it.
    succeeded(ctl(&m.api_addr, &["apply", "-f", file]));
    let mut child = ctl_command(&m.api_addr)
        .args(["delete", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(manifest.as_bytes()).unwrap();
    drop(stdin);
    let from_stdin = succeeded(child.wait_with_output().unwrap());
    assert_eq!(from_stdin, BOTH_DELETED);

    // A malformed manifest: the file and the document, and nothing deleted.
    succeeded(ctl(&m.api_addr, &["apply", "-f", file]));
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, manifest.replace("kind: Service", "kind: Servic")).unwrap();
    let broken = broken.to_str().unwrap();
    let refused = failed(ctl(&m.api_addr, &["delete", "-f", broken]));
    assert!(refused.contains("broken.yaml"), "{refused}");
    assert!(refused.contains("document 2"), "{refused}");
    succeeded(ctl(&m.api_addr, &["get", "deploy/web", "-n", "shop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_takes_server_and_completion_prints_scripts() {
    let skiff = |args: &[&str]| {
        std::process::Command::new(skiff_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let script = succeeded(skiff(&["completion", "bash"]));
    assert!(script.contains("_skiff()"), "{script}");
    assert!(script.contains("--selector"), "{script}");
    for shell in ["zsh", "fish"] {
        let script = succeeded(skiff(&["completion", shell]));
        assert!(script.contains("skiff"), "{shell}: {script}");
    }

    let (_dir, m) = ready_master().await.unwrap();
    let conf = admin_conf(&m.api_addr).unwrap();
    let conf = conf.to_str().unwrap();
    // `skiff token <args> --server <server> --config <admin.conf>`.
    let token = |server: &str, args: &[&str]| {
        std::process::Command::new(skiff_bin())
            .arg("token")
            .args(args)
            .args(["--server", server, "--config", conf])
            .output()
            .unwrap()
    };
    let server = m.api_addr.as_str();
    let made = succeeded(token(server, &["create", "--usage", "server"]));
    assert!(made.starts_with("K10"), "{made}");
    let listed = succeeded(token(server, &["list"]));
    assert!(listed.contains("server"), "{listed}");
    // --server is the address used, not admin.conf's: nothing listens here.
    let elsewhere = failed(token("127.0.0.1:1", &["list"]));
    assert!(elsewhere.contains("127.0.0.1:1"), "{elsewhere}");
}
