//! CustomResourceDefinitions with real kubectl (1.35 and 1.20) against a
//! real `skiff master` with a hollow node: a CRD with a structural schema,
//! printer columns and the `status` and `scale` subresources is applied
//! and in `kubectl api-resources` within a second, then Established; its
//! objects are applied (defaults set, unknown fields pruned), listed as
//! the printer columns say (also by short name), read as YAML, watched,
//! patched (merge; strategic merge refused with 415, as for any custom
//! resource), scaled, their status written only through `status`,
//! applied server-side, garbage-collected with their owner and their
//! namespace, deleted; schema violations and a CRD with a non-structural
//! schema are refused naming the field, storing nothing; the Python
//! client's CustomObjectsApi lists and reads them (with kubectl 1.35);
//! deleting the CRD deletes its objects (a CRD made again finds none).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};

/// The hollow node the master gets (nothing here runs pods).
const NODES: [&str; 1] = ["crd-hollow-1"];
/// The namespace the objects live in.
const NAMESPACE: &str = "crd-test";
/// A namespace deleted with an object in it.
const DOOMED: &str = "crd-doomed";
/// The CRD's name: `<plural>.<group>`.
const CRD: &str = "widgets.e2e.skiff.io";
/// How long anything asynchronous may take.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_serves_custom_resources() {
    let python = kube_clients::python_client();
    kube_clients::on_hollow_cluster(KubectlVersion::V1_35, &NODES, move |k, _| {
        scenario(k, KubectlVersion::V1_35, python)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_serves_custom_resources() {
    kube_clients::on_hollow_cluster(KubectlVersion::V1_20, &NODES, move |k, _| {
        scenario(k, KubectlVersion::V1_20, None)
    })
    .await;
}

fn scenario(k: &Kubectl, version: KubectlVersion, python: Option<PathBuf>) {
    ok(k, &format!("create namespace {NAMESPACE}"));
    definition(k);
    objects(k);
    subresources(k, version);
    server_side_apply(k, version);
    refusals(k);
    collected(k);
    if let Some(python) = python {
        python_client(k, &python);
    }
    removal(k);
}

/// The CRD applied, in discovery within a second, Established.
fn definition(k: &Kubectl) {
    let file = write(k, "crd.yaml", WIDGETS_CRD);
    let out = k.ok(&["apply", "-f", &file]);
    assert_has(
        &out,
        &format!("customresourcedefinition.apiextensions.k8s.io/{CRD} created"),
    );
    eventually("widgets in api-resources", Duration::from_secs(1), || {
        let out = ok(k, "api-resources --api-group e2e.skiff.io");
        if row_has(&out, "widgets", &["wd", "true", "Widget"]) {
            Ok(())
        } else {
            Err(out)
        }
    });
    ok(
        k,
        &format!("wait --for condition=established --timeout=10s crd/{CRD}"),
    );
    let names = jsonpath(k, &format!("crd {CRD}"), "{.status.acceptedNames.kind}");
    assert_eq!(names, "Widget");
    let finalizers = jsonpath(k, &format!("crd {CRD}"), "{.metadata.finalizers}");
    assert_has(&finalizers, "customresourcecleanup.apiextensions.k8s.io");
    let table = ok(k, "get crd");
    assert_eq!(header_of(&table), ["NAME", "CREATED", "AT"]);
    assert!(row(&table, CRD).is_some(), "{table}");
}

/// Objects applied, defaulted and pruned, listed with the printer
/// columns, read as YAML, watched, patched, deleted.
fn objects(k: &Kubectl) {
    let file = write(k, "w1.yaml", &widget("w1", "3", "small"));
    assert_has(
        &k.ok(&["apply", "-f", &file]),
        "widget.e2e.skiff.io/w1 created",
    );
    let table = ok(k, &format!("get widgets -n {NAMESPACE}"));
    assert_eq!(
        header_of(&table),
        ["NAME", "REPLICAS", "SIZE", "AGE"],
        "{table}"
    );
    let w1 = row(&table, "w1").unwrap_or_default();
    assert_eq!(w1.get(1..3), Some(&["3", "small"][..]), "{table}");
    assert!(row(&ok(k, &format!("get wd -n {NAMESPACE}")), "w1").is_some());
    // The schema's default.
    assert_eq!(jsonpath(k, "widget w1", "{.spec.color}"), "blue");
    let yaml = ok(k, &format!("get widget w1 -n {NAMESPACE} -o yaml"));
    for line in [
        "apiVersion: e2e.skiff.io/v1",
        "kind: Widget",
        "replicas: 3",
        "color: blue",
    ] {
        assert_has(&yaml, line);
    }
    // A field the schema does not know is pruned (not refused when
    // validation is off).
    let extra =
        widget("w-extra", "1", "large").replace("size: large", "size: large\n  shape: round");
    let file = write(k, "w-extra.yaml", &extra);
    k.ok(&["apply", "--validate=false", "-f", &file]);
    assert_eq!(jsonpath(k, "widget w-extra", "{.spec.shape}"), "");
    assert_eq!(jsonpath(k, "widget w-extra", "{.spec.size}"), "large");
    assert_eq!(jsonpath(k, "widget w-extra", "{.spec.color}"), "blue");

    // A watch sees an object arrive.
    let watch = k
        .spawn(&[
            "get",
            "widgets",
            "-n",
            NAMESPACE,
            "-w",
            "--output-watch-events",
        ])
        .unwrap();
    let file = write(k, "w3.yaml", &widget("w3", "1", "small"));
    k.ok(&["apply", "-f", &file]);
    eventually("the watch to show w3", SETTLE, || {
        let seen = watch.output();
        if seen
            .lines()
            .any(|l| l.contains("ADDED") && l.contains("w3"))
        {
            Ok(())
        } else {
            Err(seen)
        }
    });
    drop(watch);

    let patched = k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ]);
    assert_has(&patched, "widget.e2e.skiff.io/w1 patched");
    assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "5");
    let json_patch = r#"[{"op":"replace","path":"/spec/size","value":"large"}]"#;
    k.ok(&[
        "patch", "widget", "w1", "-n", NAMESPACE, "--type", "json", "-p", json_patch,
    ]);
    assert_eq!(jsonpath(k, "widget w1", "{.spec.size}"), "large");
    // Custom resources have no strategic merge keys.
    let refused = k.fails(&[
        "patch",
        "widget",
        "w1",
        "-n",
        NAMESPACE,
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    // Newer kubectls refuse it themselves; older ones send it and get
    // kube-apiserver's 415.
    assert!(
        refused.contains("not supported") || refused.contains("(UnsupportedMediaType)"),
        "a strategic merge patch of a custom resource was not refused as such:\n{refused}"
    );
    assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "5");
    assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "5");

    assert_has(
        &ok(k, &format!("delete widget w3 -n {NAMESPACE}")),
        "\"w3\" deleted",
    );
    k.fails(&["get", "widget", "w3", "-n", NAMESPACE]);
}

/// `status` and `scale`: a main write leaves the status as it is; the
/// status is written through its subresource (kubectl 1.24 and later);
/// `kubectl scale` writes `.spec.replicas` through `scale`.
fn subresources(k: &Kubectl, version: KubectlVersion) {
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":6},"status":{"ready":true}}"#,
    ]);
    assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "6");
    assert_eq!(jsonpath(k, "widget w1", "{.status.ready}"), "");
    if version != KubectlVersion::V1_20 {
        k.ok(&[
            "patch",
            "widget",
            "w1",
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":9},"status":{"ready":true,"replicas":2}}"#,
        ]);
        assert_eq!(jsonpath(k, "widget w1", "{.status.ready}"), "true");
        assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "6");
    }
    assert_has(
        &ok(k, &format!("scale widget w1 -n {NAMESPACE} --replicas=2")),
        "widget.e2e.skiff.io/w1 scaled",
    );
    assert_eq!(jsonpath(k, "widget w1", "{.spec.replicas}"), "2");
}

/// `apply --server-side`: created, applied again with a change, owned by
/// kubectl's manager.
fn server_side_apply(k: &Kubectl, version: KubectlVersion) {
    let file = write(k, "w2.yaml", &widget("w2", "1", "small"));
    let apply = ["apply", "--server-side", "-f", file.as_str()];
    assert_has(&k.ok(&apply), "widget.e2e.skiff.io/w2 serverside-applied");
    let rv = jsonpath(k, "widget w2", "{.metadata.resourceVersion}");
    k.ok(&apply);
    assert_eq!(
        jsonpath(k, "widget w2", "{.metadata.resourceVersion}"),
        rv,
        "an apply that changes nothing stores nothing"
    );
    write(k, "w2.yaml", &widget("w2", "4", "large"));
    assert_has(&k.ok(&apply), "widget.e2e.skiff.io/w2 serverside-applied");
    assert_eq!(jsonpath(k, "widget w2", "{.spec.replicas}"), "4");
    assert_eq!(jsonpath(k, "widget w2", "{.spec.color}"), "blue");
    // kubectl 1.21 and later leave managedFields out unless asked.
    let mut get = vec!["get", "widget", "w2", "-n", NAMESPACE];
    if version != KubectlVersion::V1_20 {
        get.push("--show-managed-fields");
    }
    get.extend(["-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    let managers = k.ok(&get);
    assert_has(&managers, "kubectl");
}

/// Objects that break the schema and a CRD whose schema is not
/// structural: refused naming the field, nothing stored.
fn refusals(k: &Kubectl) {
    let cases = [
        (
            widget("bad-type", "three", "small"),
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
        ),
        (
            widget("bad-enum", "1", "huge"),
            r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#,
        ),
        (
            widget("bad-max", "11", "small"),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
        (
            widget("bad-required", "1", "small").replace("  size: small\n", ""),
            "spec.size: Required value",
        ),
    ];
    for (manifest, message) in cases {
        let name = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("name: "))
            .unwrap_or_default()
            .to_owned();
        let file = write(k, "bad.yaml", &manifest);
        let refused = k.fails(&["apply", "-f", &file]);
        assert_has(&refused, "is invalid");
        assert_has(&refused, message);
        k.fails(&["get", "widget", &name, "-n", NAMESPACE]);
    }
    let file = write(k, "bad-crd.yaml", NOT_STRUCTURAL_CRD);
    let refused = k.fails(&["apply", "-f", &file]);
    assert_has(&refused, "is invalid");
    assert_has(
        &refused,
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[parts].items: Required value",
    );
    k.fails(&["get", "crd", "gadgets.e2e.skiff.io"]);
}

/// A ConfigMap owned by a custom object goes with it; a custom object
/// goes with its namespace.
fn collected(k: &Kubectl) {
    let uid = jsonpath(k, "widget w-extra", "{.metadata.uid}");
    let owned = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: owned
  namespace: {NAMESPACE}
  ownerReferences:
  - apiVersion: e2e.skiff.io/v1
    kind: Widget
    name: w-extra
    uid: {uid}
data:
  a: b
"#
    );
    let file = write(k, "owned.yaml", &owned);
    k.ok(&["apply", "-f", &file]);
    ok(k, &format!("delete widget w-extra -n {NAMESPACE}"));
    eventually("the owned ConfigMap to be collected", SETTLE, || {
        let out = k.run(&["get", "configmap", "owned", "-n", NAMESPACE]);
        if out.status.success() {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Ok(())
        }
    });

    ok(k, &format!("create namespace {DOOMED}"));
    let file = write(
        k,
        "doomed.yaml",
        &widget("w-doomed", "1", "small").replace(NAMESPACE, DOOMED),
    );
    k.ok(&["apply", "-f", &file]);
    ok(k, &format!("delete namespace {DOOMED}"));
    eventually("the namespace's widget to be deleted", SETTLE, || {
        let out = ok(k, &format!("get widgets -n {DOOMED} -o name"));
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out)
        }
    });
}

/// The Python client's CustomObjectsApi lists and reads the objects.
fn python_client(k: &Kubectl, python: &std::path::Path) {
    const SCRIPT: &str = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
api = client.CustomObjectsApi()
listed = api.list_namespaced_custom_object("e2e.skiff.io", "v1", sys.argv[2], "widgets")
print(" ".join(sorted(i["metadata"]["name"] for i in listed["items"])))
one = api.get_namespaced_custom_object("e2e.skiff.io", "v1", sys.argv[2], "widgets", "w2")
print(one["spec"]["replicas"])
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(k.kubeconfig())
        .arg(NAMESPACE)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["w1 w2", "4"]);
}

/// Deleting the CRD deletes its objects, then the CRD; made again, it
/// finds none.
fn removal(k: &Kubectl) {
    assert_has(
        &ok(k, &format!("delete crd {CRD} --timeout=60s")),
        &format!("\"{CRD}\" deleted"),
    );
    k.fails(&["get", "crd", CRD]);
    k.fails(&["get", "widgets", "-n", NAMESPACE]);
    let file = write(k, "crd.yaml", WIDGETS_CRD);
    k.ok(&["apply", "-f", &file]);
    ok(
        k,
        &format!("wait --for condition=established --timeout=10s crd/{CRD}"),
    );
    let left = ok(k, "get widgets -A -o name");
    assert!(
        left.trim().is_empty(),
        "objects outlived their CRD:\n{left}"
    );
    ok(k, &format!("delete crd {CRD} --timeout=60s"));
    ok(k, &format!("delete namespace {NAMESPACE}"));
}

const WIDGETS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.skiff.io
spec:
  group: e2e.skiff.io
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Size
      type: string
      jsonPath: .spec.size
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              replicas:
                type: integer
                minimum: 0
                maximum: 10
              size:
                type: string
                enum: [small, large]
              color:
                type: string
                default: blue
          status:
            type: object
            properties:
              replicas:
                type: integer
              ready:
                type: boolean
"#;

/// A CRD whose schema has an array without `items`: not structural.
const NOT_STRUCTURAL_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.e2e.skiff.io
spec:
  group: e2e.skiff.io
  scope: Namespaced
  names:
    plural: gadgets
    kind: Gadget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              parts:
                type: array
"#;

/// A Widget in the test namespace; `replicas` as YAML text (`three` is a
/// string).
fn widget(name: &str, replicas: &str, size: &str) -> String {
    format!(
        "apiVersion: e2e.skiff.io/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  replicas: {replicas}\n  size: {size}\n"
    )
}

/// Writes `text` into the runner's directory; answers its path.
fn write(k: &Kubectl, name: &str, text: &str) -> String {
    let file = k.home().join(name);
    std::fs::write(&file, text).unwrap();
    file.to_str().expect("temp paths are UTF-8").to_owned()
}

/// The words of a command line.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `kubectl <line>`, which must succeed; its stdout.
fn ok(k: &Kubectl, line: &str) -> String {
    k.ok(&words(line))
}

/// `kubectl get <what> -n crd-test -o jsonpath=<path>`.
fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get", "-n", NAMESPACE, "-o", output.as_str()];
    args.extend(words(what));
    k.ok(&args)
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// The cells of the first table row whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(words)
        .find(|cells| cells.first() == Some(&name))
}

/// Whether the row named `name` has each of `cells` in some column.
fn row_has(table: &str, name: &str, cells: &[&str]) -> bool {
    let found = row(table, name).unwrap_or_default();
    cells.iter().all(|c| found.contains(c))
}

fn header_of(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}
