//! `skiff ctl` against a real master: apply, get, delete, and clear errors
//! for bad manifests that leave nothing behind.

use skiff_e2e::ctl;
use skiff_e2e::master::ready_master;

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

    let bad_kind = ctl(&m.api_addr, &["get", "configmaps"]);
    assert!(!bad_kind.status.success());
    assert!(text(&bad_kind.stderr).contains("unknown kind \"configmaps\""));

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
