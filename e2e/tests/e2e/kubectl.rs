//! Real kubectl (1.20, the machine's 1.32, 1.35) against a real `skiff
//! master` with two hollow nodes, through the Kubernetes REST API on the
//! master's API port: one scenario, run by each version, covering what an
//! operator types every day (discovery, access reviews (`auth can-i`, `auth
//! whoami`), tables, output formats, create, scale, label, annotate, the
//! three patch types, set image, the rollout commands (`status`, `history`,
//! `undo`, `restart`) and `wait`, expose, run, apply, watch, explain and validation
//! against the OpenAPI documents, delete, proxy,
//! and the kinds skiff stores for later: a ConfigMap, a Job, a CronJob,
//! RBAC, a StatefulSet, an Ingress, a PVC) and the errors kubectl shows.
//! Then bad requests (`get --raw`, `create --raw`, no client certificate)
//! and the Kubernetes `Status` errors they get.

use std::collections::BTreeSet;
use std::time::Duration;

use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;
use skiff_e2e::{free_port, http_get};

/// The hollow nodes, in fleet slot order: slot `i` reports InternalIP
/// `198.18.0.<i + 1>`.
const NODES: [&str; 2] = ["hollow-1", "hollow-2"];
/// How long anything asynchronous (pods Running, a watch event) may take.
const SETTLE: Duration = Duration::from_secs(30);
/// The namespace the scenario works in (also spelled out in its commands).
const NAMESPACE: &str = "shop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_works_a_cluster_through_the_rest_api() {
    scenario_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_works_a_cluster_through_the_rest_api() {
    scenario_with(KubectlVersion::V1_32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_works_a_cluster_through_the_rest_api() {
    scenario_with(KubectlVersion::V1_35).await;
}

/// [`scenario`] with `version`'s kubectl against a master and two hollow
/// nodes.
async fn scenario_with(version: KubectlVersion) {
    kube_clients::on_hollow_cluster(version, &NODES, move |k, api_addr| {
        scenario(k, api_addr, version)
    })
    .await;
}

fn scenario(k: &Kubectl, api_addr: &str, version: KubectlVersion) {
    discovery(k, api_addr);
    access_reviews(k, version);
    nodes(k);
    deployment_and_pods(k);
    changes(k);
    rollouts(k);
    apply_and_watch(k);
    explain_and_validation(k, version);
    stored_kinds(k, version);
    deletes_and_errors(k);
    pod_fields(k);
    deployment_fields(k);
    proxy(k);
}

/// `version`, `cluster-info`, `api-resources`.
fn discovery(k: &Kubectl, api_addr: &str) {
    let out = ok(k, "version");
    let server = out
        .lines()
        .find(|l| l.starts_with("Server Version"))
        .unwrap_or_default();
    assert_has(server, "skiff");

    let out = ok(k, "cluster-info");
    assert_has(&out, "is running at");
    assert_has(&out, &format!("https://{api_addr}"));

    let out = ok(k, "api-resources");
    let header = out.lines().next().unwrap_or_default();
    for heading in ["NAME", "SHORTNAMES", "NAMESPACED", "KIND"] {
        assert_has(header, heading);
    }
    assert!(row_has(&out, "pods", &["po", "true", "Pod"]), "{out}");
    assert!(row_has(&out, "nodes", &["no", "false"]), "{out}");
    let deploy = row(&out, "deployments").unwrap_or_default();
    assert!(deploy.contains(&"deploy"), "{out}");
    assert!(deploy.contains(&"Deployment"), "{out}");
    assert!(deploy.contains(&"true"), "{out}");
    // APIVERSION `apps/v1` (APIGROUP `apps` in older kubectl).
    assert!(deploy.iter().any(|c| c.starts_with("apps")), "{out}");
}

/// `auth can-i` (one question, and `--list`) and `auth whoami`, answered
/// from the admin's identity by the same rules every request is
/// authorized with.
fn access_reviews(k: &Kubectl, version: KubectlVersion) {
    assert_eq!(ok(k, "auth can-i create deployments").trim(), "yes");
    assert_eq!(ok(k, "auth can-i delete pods -n kube-system").trim(), "yes");
    let log = "auth can-i get pods --subresource=log -n shop";
    assert_eq!(ok(k, log).trim(), "yes");

    // A resource skiff does not serve: no, saying why, and exit code 1.
    let widgets = k.run(&words("auth can-i get widgets"));
    assert!(!widgets.status.success(), "{widgets:?}");
    let answer = String::from_utf8_lossy(&widgets.stdout);
    assert!(answer.starts_with("no"), "{answer}");
    assert_has(&answer, r#"skiff serves no resource "widgets""#);

    let out = ok(k, "auth can-i --list");
    let header = words("Resources Non-Resource URLs Resource Names Verbs");
    assert_eq!(header_of(&out), header, "{out}");
    // Everything, for an admin: `*.*` with every verb, and every path.
    assert!(row_has(&out, "*.*", &["[*]"]), "{out}");
    let paths = out
        .lines()
        .map(words)
        .any(|cells| cells == ["[*]", "[]", "[*]"]);
    assert!(paths, "no row for every path:\n{out}");
    let review = "selfsubjectaccessreviews.authorization.k8s.io";
    assert!(row_has(&out, review, &["[create]"]), "{out}");

    // `auth whoami` came with kubectl 1.26 (and v1 with 1.28).
    if version != KubectlVersion::V1_20 {
        let out = ok(k, "auth whoami");
        assert!(row_has(&out, "Username", &["system:admin"]), "{out}");
        assert_has(&out, "system:masters");
        assert_has(&out, "system:authenticated");
    }
}

/// `get nodes`, plain and wide.
fn nodes(k: &Kubectl) {
    let out = eventually("both nodes Ready", SETTLE, || {
        let out = ok(k, "get nodes");
        let ready = NODES.iter().all(|n| row_has(&out, n, &["Ready"]));
        if ready {
            Ok(out)
        } else {
            Err(out)
        }
    });
    let columns = words("NAME STATUS ROLES AGE VERSION");
    assert_eq!(header_of(&out), columns, "{out}");
    assert_eq!(out.lines().count(), 1 + NODES.len(), "{out}");

    let out = ok(k, "get nodes -o wide");
    assert!(header_of(&out).contains(&"INTERNAL-IP"), "{out}");
    for (slot, name) in NODES.into_iter().enumerate() {
        let ip = format!("198.18.0.{}", slot + 1);
        assert!(row_has(&out, name, &[ip.as_str()]), "{out}");
    }
}

/// A namespace and a Deployment whose pods the hollow nodes run; the
/// usual ways of looking at them.
fn deployment_and_pods(k: &Kubectl) {
    let out = ok(k, "create namespace shop");
    assert_has(&out, "namespace/shop created");
    // Namespaces are Kubernetes' own documents: the phase defaulted, the
    // table, a field selector on the phase, labels.
    let out = ok(k, "get namespace shop");
    assert_eq!(header_of(&out), words("NAME STATUS AGE"), "{out}");
    assert!(row_has(&out, "shop", &["Active"]), "{out}");
    let phase = ok(k, "get ns shop -o jsonpath={.status.phase}");
    assert_eq!(phase.trim(), "Active");
    let active = ok(k, "get ns --field-selector status.phase=Active -o name");
    for name in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/shop",
    ] {
        assert!(active.lines().any(|n| n == name), "{name}: {active}");
    }
    let terminating = ok(
        k,
        "get ns --field-selector status.phase=Terminating -o name",
    );
    assert!(terminating.trim().is_empty(), "{terminating}");
    assert_has(
        &ok(k, "label namespace shop team=shop"),
        "namespace/shop labeled",
    );
    let labelled = ok(k, "get ns -l team=shop -o name");
    assert_eq!(labelled.trim(), "namespace/shop");
    let create = "create deployment web --image=busybox --replicas=2 -n shop";
    assert_has(&ok(k, create), "deployment.apps/web created");
    rollout_status(k);
    let out = eventually("deployment web 2/2 ready", SETTLE, || {
        let out = ok(k, "get deploy -n shop");
        if row_has(&out, "web", &["2/2"]) {
            Ok(out)
        } else {
            Err(out)
        }
    });
    let columns = words("NAME READY UP-TO-DATE AVAILABLE AGE");
    assert_eq!(header_of(&out), columns, "{out}");

    let out = eventually("2 Running pods", SETTLE, || {
        let out = ok(k, "get pods -n shop -o wide");
        if column(&out, 2) == ["Running"; 2] {
            Ok(out)
        } else {
            Err(out)
        }
    });
    let columns = words("NAME READY STATUS RESTARTS AGE IP NODE");
    assert!(header_of(&out).starts_with(&columns), "{out}");
    for line in out.lines().skip(1) {
        let on_node = line.split_whitespace().any(|c| NODES.contains(&c));
        assert!(on_node, "a pod on no hollow node:\n{out}");
    }

    let out = ok(k, "get pods -A");
    assert_eq!(header_of(&out).first(), Some(&"NAMESPACE"), "{out}");
    let in_shop = out.lines().filter(|l| l.starts_with("shop ")).count();
    assert_eq!(in_shop, 2, "{out}");

    // Label selectors.
    let names = names_of(&ok(k, "get pods -n shop -l app=web -o name"));
    assert_eq!(names.len(), 2, "{names:?}");
    let none = k.run(&words("get pods -n shop -l app=other"));
    assert!(none.status.success(), "{none:?}");
    assert!(none.stdout.is_empty(), "{none:?}");
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_has(&stderr, "No resources found");

    // Output formats.
    let out = ok(k, "get pods -n shop -o json");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List", "{out}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{out}");
    let mut json_names = BTreeSet::new();
    for item in &items {
        assert_eq!(item["kind"], "Pod", "{out}");
        assert_eq!(item["metadata"]["labels"]["app"], "web", "{out}");
        assert_eq!(item["metadata"]["namespace"], NAMESPACE, "{out}");
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        json_names.insert(name.to_owned());
    }
    assert_eq!(json_names, names, "-o json and -o name disagree");

    let out = ok(k, "get pods -n shop -o yaml");
    assert_has(&out, "kind: List");
    assert_has(&out, "kind: Pod");
    assert_has(&out, "app: web");
    for name in &names {
        assert_has(&out, name);
    }

    let out = jsonpath(k, "pods", "{.items[*].metadata.name}");
    let jsonpath_names: BTreeSet<String> = out.split_whitespace().map(str::to_owned).collect();
    assert_eq!(jsonpath_names, names, "{out}");

    let template = r#"go-template={{range .items}}{{.metadata.name}}{{"\n"}}{{end}}"#;
    let out = k.ok(&["get", "pods", "-n", NAMESPACE, "-o", template]);
    let template_names: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(template_names, names, "{out}");
}

/// scale, label, annotate, the three patch types, set image, expose, run.
fn changes(k: &Kubectl) {
    let out = ok(k, "scale deploy web --replicas=3 -n shop");
    assert_has(&out, "deployment.apps/web scaled");
    eventually("3 Running web pods", SETTLE, || {
        let phases = jsonpath(k, "pods -l app=web", "{.items[*].status.phase}");
        let phases: Vec<String> = phases.split_whitespace().map(str::to_owned).collect();
        if phases == ["Running"; 3] {
            Ok(())
        } else {
            Err(format!("{phases:?}"))
        }
    });

    let out = ok(k, "label deploy web tier=frontend -n shop");
    assert_has(&out, "deployment.apps/web labeled");
    let out = ok(k, "get deploy -n shop -l tier=frontend -o name");
    assert_eq!(out.trim(), "deployment.apps/web");
    let out = ok(k, "annotate deploy web note=hello -n shop");
    assert_has(&out, "deployment.apps/web annotated");
    let note = jsonpath(k, "deploy/web", "{.metadata.annotations.note}");
    assert_eq!(note, "hello");

    let merge = r#"{"metadata":{"labels":{"patched":"merge"}}}"#;
    let out = patch(k, "merge", merge);
    assert_has(&out, "deployment.apps/web patched");
    let patched = jsonpath(k, "deploy/web", "{.metadata.labels.patched}");
    assert_eq!(patched, "merge");
    let tier = jsonpath(k, "deploy/web", "{.metadata.labels.tier}");
    assert_eq!(tier, "frontend", "a merge patch dropped a label");

    // Strategic: the container is merged by its name, so the image the
    // patch does not mention stays.
    let strategic = r#"{"spec":{"template":{"spec":{"containers":[
        {"name":"busybox","env":[{"name":"MODE","value":"strategic"}]}]}}}}"#;
    let out = patch(k, "strategic", strategic);
    assert_has(&out, "deployment.apps/web patched");
    let containers = "{.spec.template.spec.containers[*].name}";
    assert_eq!(jsonpath(k, "deploy/web", containers), "busybox");
    let image = "{.spec.template.spec.containers[0].image}";
    assert_eq!(jsonpath(k, "deploy/web", image), "busybox");
    let env = "{.spec.template.spec.containers[0].env[0].value}";
    assert_eq!(jsonpath(k, "deploy/web", env), "strategic");
    // Its own revision (2): `rollouts` goes back to it.
    rollout_status(k);

    let json = r#"[{"op":"replace","path":"/metadata/labels/patched","value":"json"}]"#;
    let out = patch(k, "json", json);
    assert_has(&out, "deployment.apps/web patched");
    let patched = jsonpath(k, "deploy/web", "{.metadata.labels.patched}");
    assert_eq!(patched, "json");

    let out = ok(k, "set image deployment/web busybox=busybox:2 -n shop");
    assert_has(&out, "deployment.apps/web image updated");
    assert_eq!(jsonpath(k, "deploy/web", image), "busybox:2");
    rollout_status(k);

    let out = ok(k, "expose deployment web --port 80 -n shop");
    assert_has(&out, "service/web exposed");
    let out = ok(k, "get svc -n shop");
    let columns = words("NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE");
    assert_eq!(header_of(&out), columns, "{out}");
    let svc = row(&out, "web").unwrap_or_default();
    assert_eq!(svc.get(1), Some(&"ClusterIP"), "{out}");
    assert_eq!(svc.get(4), Some(&"80/TCP"), "{out}");
    let ip: Option<std::net::Ipv4Addr> = svc.get(2).and_then(|ip| ip.parse().ok());
    let [a, b, _, _] = ip.map(|ip| ip.octets()).unwrap_or_default();
    assert_eq!((a, b), (10, 43), "not in 10.43.0.0/16:\n{out}");
    // Kubernetes' own document, with its defaults; a field the protobuf
    // model of earlier releases had no room for is kept.
    let defaults = "{.spec.sessionAffinity} {.spec.ports[0].targetPort} {.spec.clusterIPs[0]}";
    let ip = svc.get(2).copied().unwrap_or_default();
    assert_eq!(jsonpath(k, "svc web", defaults), format!("None 80 {ip}"));
    let body = r#"{"spec":{"publishNotReadyAddresses":true}}"#;
    k.ok(&[
        "patch", "svc", "web", "-n", NAMESPACE, "--type", "merge", "-p", body,
    ]);
    let kept = jsonpath(k, "svc web", "{.spec.publishNotReadyAddresses}");
    assert_eq!(kept, "true");

    // Its Endpoints (Kubernetes' own documents) list the pods' addresses
    // at the target port.
    let pod_ips = |k: &Kubectl| {
        let ips = jsonpath(k, "pods -l app=web", "{.items[*].status.podIP}");
        let mut ips: Vec<String> = ips.split_whitespace().map(str::to_owned).collect();
        ips.sort();
        ips
    };
    eventually("the Endpoints of web list its pods", SETTLE, || {
        let listed = jsonpath(k, "endpoints web", "{.subsets[*].addresses[*].ip}");
        let mut listed: Vec<String> = listed.split_whitespace().map(str::to_owned).collect();
        listed.sort();
        let want = pod_ips(k);
        if !want.is_empty() && listed == want {
            Ok(())
        } else {
            Err(format!("listed {listed:?}, pods {want:?}"))
        }
    });
    let port = jsonpath(
        k,
        "ep web",
        "{.subsets[0].ports[0].port}/{.subsets[0].ports[0].protocol}",
    );
    assert_eq!(port, "80/TCP");
    let out = ok(k, "get endpoints web -n shop");
    assert_eq!(header_of(&out), words("NAME ENDPOINTS AGE"), "{out}");
    let first = pod_ips(k).into_iter().next().unwrap_or_default();
    assert!(out.contains(&format!("{first}:80")), "{out}");

    let out = ok(k, "run solo --image=busybox -n shop");
    assert_has(&out, "pod/solo created");
    eventually("pod solo Running", SETTLE, || {
        let phase = jsonpath(k, "pod/solo", "{.status.phase}");
        if phase == "Running" {
            Ok(())
        } else {
            Err(phase)
        }
    });
}

/// `kubectl rollout status deployment/web`, which must report it rolled out
/// (the controller's status: observedGeneration, updated and available
/// replicas).
fn rollout_status(k: &Kubectl) {
    let out = ok(k, "rollout status deployment/web -n shop --timeout=60s");
    assert_has(&out, r#"deployment "web" successfully rolled out"#);
}

/// The Deployment's revision, as the controller records it.
const REVISION: &str = r"{.metadata.annotations.deployment\.kubernetes\.io/revision}";

/// `rollout history` (revisions from the ReplicaSets' annotations, with
/// their change-cause), `rollout undo` (a JSON Patch of the template and
/// the annotations), `rollout restart` (a strategic merge patch of the
/// template) and `wait --for=condition=Available`, on `web`, whose
/// template has changed twice since it was created: its env (a strategic
/// patch) and its image.
fn rollouts(k: &Kubectl) {
    let image = "{.spec.template.spec.containers[0].image}";
    let out = ok(k, "rollout history deployment/web -n shop");
    // `deployment.apps/web`, then the table.
    assert_has(&out, "deployment.apps/web");
    let header = out
        .lines()
        .map(words)
        .any(|cells| cells == ["REVISION", "CHANGE-CAUSE"]);
    assert!(header, "{out}");
    for revision in ["1", "2", "3"] {
        assert!(row_has(&out, revision, &["<none>"]), "{out}");
    }
    assert_eq!(jsonpath(k, "deploy/web", REVISION), "3");

    // The Deployment's change-cause reaches its newest ReplicaSet.
    let cause = "annotate deployment/web kubernetes.io/change-cause=busybox-2 -n shop";
    assert_has(&ok(k, cause), "deployment.apps/web annotated");
    eventually("revision 3's change-cause in the history", SETTLE, || {
        let out = ok(k, "rollout history deployment/web -n shop");
        if row_has(&out, "3", &["busybox-2"]) {
            Ok(())
        } else {
            Err(out)
        }
    });

    // Back to revision 2's template, which becomes revision 4.
    let out = ok(k, "rollout undo deployment/web -n shop");
    assert_has(&out, "deployment.apps/web rolled back");
    assert_eq!(jsonpath(k, "deploy/web", image), "busybox");
    let env = "{.spec.template.spec.containers[0].env[0].value}";
    assert_eq!(jsonpath(k, "deploy/web", env), "strategic");
    rollout_status(k);
    eventually("revision 4 recorded on the Deployment", SETTLE, || {
        let revision = jsonpath(k, "deploy/web", REVISION);
        if revision == "4" {
            Ok(())
        } else {
            Err(revision)
        }
    });
    let out = ok(k, "rollout history deployment/web -n shop");
    assert!(row_has(&out, "3", &["busybox-2"]), "{out}");
    assert!(row(&out, "4").is_some(), "{out}");

    // A restart: a new template annotation, so a new ReplicaSet rolls out.
    let sets = |k: &Kubectl| ok(k, "get rs -n shop -l app=web -o name").lines().count();
    let before = sets(k);
    let out = ok(k, "rollout restart deployment/web -n shop");
    assert_has(&out, "deployment.apps/web restarted");
    let restarted = r"{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}";
    assert!(!jsonpath(k, "deploy/web", restarted).is_empty());
    rollout_status(k);
    assert_eq!(sets(k), before + 1);
    eventually("revision 5 recorded on the Deployment", SETTLE, || {
        let revision = jsonpath(k, "deploy/web", REVISION);
        if revision == "5" {
            Ok(())
        } else {
            Err(revision)
        }
    });
    assert_eq!(jsonpath(k, "deploy/web", image), "busybox");

    let wait = "wait --for=condition=Available deployment/web -n shop --timeout=60s";
    assert_has(&ok(k, wait), "deployment.apps/web condition met");
}

/// `apply -f` (created, unchanged, configured), and `get -w` seeing a
/// change made while it watches.
fn apply_and_watch(k: &Kubectl) {
    let manifest = k.home().join("api.yaml");
    let apply = ["apply", "-f", manifest.to_str().unwrap_or_default()];
    std::fs::write(&manifest, api_deployment(1)).unwrap();
    assert_has(&k.ok(&apply), "deployment.apps/api created");
    assert_has(&k.ok(&apply), "deployment.apps/api unchanged");
    std::fs::write(&manifest, api_deployment(2)).unwrap();
    assert_has(&k.ok(&apply), "deployment.apps/api configured");
    assert_eq!(jsonpath(k, "deploy/api", "{.spec.replicas}"), "2");

    // Killed when dropped: the watch itself never ends.
    let watch = k.spawn(&words("get deploy -n shop -w")).unwrap();
    eventually("the watch to list api", SETTLE, || {
        let seen = watch.output();
        if row(&seen, "api").is_some() {
            Ok(())
        } else {
            Err(seen)
        }
    });
    let out = ok(k, "scale deploy api --replicas=3 -n shop");
    assert_has(&out, "deployment.apps/api scaled");
    eventually("the watch to show api wanting 3", SETTLE, || {
        let seen = watch.output();
        let api = rows_named(&seen, "api");
        if api.iter().any(|r| cell(r, 1).ends_with("/3")) {
            Ok(())
        } else {
            Err(seen)
        }
    });
    drop(watch);
}

/// `explain` from the OpenAPI documents (kubectl 1.20 reads `/openapi/v2`,
/// later ones `/openapi/v3`), and `apply` with default validation: a
/// Deployment using int-or-strings, quantities and a probe applies (twice:
/// unchanged, so the patch computed from the documents' merge keys is
/// empty); one with `replicas: "three"` is refused, by kubectl 1.20's
/// client-side validation against the v2 schema or, from 1.27 on, by the
/// server (the v3 documents say it validates fields itself).
fn explain_and_validation(k: &Kubectl, version: KubectlVersion) {
    let out = ok(k, "explain deployment.spec.replicas");
    assert!(has_line(&out, &["KIND:", "Deployment"]), "{out}");
    assert!(
        has_line(&out, &["FIELD:", "replicas", "<integer>"]),
        "{out}"
    );
    let out = ok(k, "explain pods.spec.containers");
    let containers: &[&str] = if version == KubectlVersion::V1_20 {
        &["RESOURCE:", "containers", "<[]Object>"]
    } else {
        &["FIELD:", "containers", "<[]Container>"]
    };
    assert!(has_line(&out, containers), "{out}");
    assert!(has_line(&out, &["image", "<string>"]), "{out}");
    // A field of a message type: "Object" in kubectl 1.20, its name later.
    let probe = if version == KubectlVersion::V1_20 {
        "<Object>"
    } else {
        "<Probe>"
    };
    assert!(has_line(&out, &["livenessProbe", probe]), "{out}");

    let manifest = k.home().join("checked.yaml");
    let apply = ["apply", "-f", manifest.to_str().unwrap_or_default()];
    std::fs::write(&manifest, checked_deployment("2")).unwrap();
    assert_has(&k.ok(&apply), "deployment.apps/checked created");
    assert_has(&k.ok(&apply), "deployment.apps/checked unchanged");
    std::fs::write(&manifest, checked_deployment("\"three\"")).unwrap();
    let err = k.fails(&apply);
    assert_has(&err, "replicas");
    assert_eq!(jsonpath(k, "deploy/checked", "{.spec.replicas}"), "2");
    assert_has(
        &ok(k, "delete deployment checked -n shop"),
        "\"checked\" deleted",
    );
}

/// Kinds skiff stores without acting on them yet: created by kubectl's
/// generators (protobuf bodies from 1.32 on) and by `apply` (twice:
/// unchanged), with Kubernetes' defaults, listed with their columns,
/// refused when invalid, and deleted.
fn stored_kinds(k: &Kubectl, version: KubectlVersion) {
    assert_has(
        &ok(
            k,
            "create configmap settings --from-literal=mode=fast -n shop",
        ),
        "configmap/settings created",
    );
    assert_eq!(jsonpath(k, "cm/settings", "{.data.mode}"), "fast");
    // Secrets (JSON documents read through Kubernetes' type): stringData
    // lands in data as base64, `type` is defaulted and never changes, and
    // an immutable Secret's data does not change either.
    assert_has(
        &ok(
            k,
            "create secret generic creds --from-literal=password=hunter2 -n shop",
        ),
        "secret/creds created",
    );
    assert_eq!(
        jsonpath(k, "secret/creds", "{.type} {.data.password}"),
        "Opaque aHVudGVyMg=="
    );
    let secrets = ok(k, "get secrets -n shop");
    let creds = row(&secrets, "creds").expect("a row for creds");
    assert_eq!(
        (cell(&creds, 1), cell(&creds, 2)),
        ("Opaque", "1"),
        "{secrets}"
    );
    let merge = [
        "patch", "secret", "creds", "-n", "shop", "--type", "merge", "-p",
    ];
    let mut add_user = merge.to_vec();
    add_user.push(r#"{"stringData":{"user":"jane"}}"#);
    k.ok(&add_user);
    assert_eq!(jsonpath(k, "secret/creds", "{.data.user}"), "amFuZQ==");
    let mut retype = merge.to_vec();
    retype.push(r#"{"type":"kubernetes.io/tls"}"#);
    assert_has(&k.fails(&retype), "field is immutable");
    let mut freeze = merge.to_vec();
    freeze.push(r#"{"immutable":true}"#);
    k.ok(&freeze);
    let mut change = merge.to_vec();
    change.push(r#"{"data":{"user":"am9obg=="}}"#);
    assert_has(
        &k.fails(&change),
        "field is immutable when `immutable` is set",
    );
    assert_eq!(jsonpath(k, "secret/creds", "{.data.user}"), "amFuZQ==");
    assert_has(
        &ok(k, "create job hello --image=busybox -n shop -- echo hi"),
        "job.batch/hello created",
    );
    // Kubernetes' defaults.
    assert_eq!(
        jsonpath(k, "job/hello", "{.spec.backoffLimit} {.spec.completions}"),
        "6 1"
    );
    // kubectl 1.20 creates CronJobs as batch/v1beta1, which Kubernetes
    // 1.25 and later (and skiff) do not serve: the manifest below has one.
    if version != KubectlVersion::V1_20 {
        let mut cron = words("create cronjob nightly --image=busybox -n shop");
        cron.push("--schedule=0 3 * * *");
        assert_has(&k.ok(&cron), "cronjob.batch/nightly created");
        assert_eq!(
            jsonpath(k, "cronjob/nightly", "{.spec.concurrencyPolicy}"),
            "Allow"
        );
        assert_has(
            &ok(k, "delete cronjob nightly -n shop"),
            "\"nightly\" deleted",
        );
    }
    assert_has(
        &ok(
            k,
            "create role reader --verb=get,list --resource=pods -n shop",
        ),
        "role.rbac.authorization.k8s.io/reader created",
    );
    assert_has(
        &ok(
            k,
            "create rolebinding readers --role=reader --user=jane -n shop",
        ),
        "rolebinding.rbac.authorization.k8s.io/readers created",
    );
    assert_has(
        &ok(k, "create serviceaccount robot -n shop"),
        "serviceaccount/robot created",
    );

    let manifest = k.home().join("stored.yaml");
    std::fs::write(&manifest, STORED_KINDS).unwrap();
    let apply = ["apply", "-f", manifest.to_str().unwrap_or_default()];
    let out = k.ok(&apply);
    assert_has(&out, "statefulset.apps/db created");
    assert_has(&out, "ingress.networking.k8s.io/web created");
    assert_has(&out, "persistentvolumeclaim/data created");
    assert_has(&out, "cronjob.batch/nightly created");
    let out = k.ok(&apply);
    assert_has(&out, "statefulset.apps/db unchanged");
    assert_has(&out, "ingress.networking.k8s.io/web unchanged");
    assert_has(&out, "persistentvolumeclaim/data unchanged");
    assert_eq!(
        jsonpath(k, "sts/db", "{.spec.podManagementPolicy}"),
        "OrderedReady"
    );
    assert_eq!(
        jsonpath(k, "cronjob/nightly", "{.spec.concurrencyPolicy}"),
        "Allow"
    );

    // Their columns, as kubectl shows them against Kubernetes.
    let out = ok(k, "get jobs -n shop");
    assert!(
        header_of(&out).starts_with(&["NAME", "STATUS", "COMPLETIONS"]),
        "{out}"
    );
    let out = ok(k, "get pvc -n shop");
    // Unbound: no volume, capacity or access modes yet, as Kubernetes shows it.
    assert!(row_has(&out, "data", &["Pending"]), "{out}");
    let out = ok(k, "get cronjobs -n shop");
    assert!(row_has(&out, "nightly", &["3", "False"]), "{out}");

    // Invalid ones are refused with the field named, and nothing stored.
    std::fs::write(&manifest, BAD_JOB).unwrap();
    let err = k.fails(&apply);
    assert_has(&err, "restartPolicy");
    assert_has(&fails(k, "get job bad -n shop"), "(NotFound)");

    assert_has(&ok(k, "delete job hello -n shop"), "\"hello\" deleted");
    assert_has(&fails(k, "get job hello -n shop"), "(NotFound)");
}

/// `delete` and the NotFound after it; the errors kubectl prints for a
/// missing object and an invalid one.
fn deletes_and_errors(k: &Kubectl) {
    let out = ok(k, "delete pod solo -n shop");
    assert_has(&out, r#"pod "solo" deleted"#);
    let err = fails(k, "get pod solo -n shop");
    let not_found = r#"Error from server (NotFound): pods "solo" not found"#;
    assert_has(&err, not_found);
    let out = ok(k, "delete deployment web -n shop");
    assert_has(&out, r#""web" deleted"#);
    let err = fails(k, "get deployment web -n shop");
    assert_has(&err, "Error from server (NotFound)");
    assert_has(&err, r#""web" not found"#);

    let err = fails(k, "get pods nope");
    let not_found = r#"Error from server (NotFound): pods "nope" not found"#;
    assert_has(&err, not_found);

    let invalid = k.home().join("invalid.yaml");
    std::fs::write(&invalid, INVALID_DEPLOYMENT).unwrap();
    let path = invalid.to_str().unwrap_or_default();
    let err = k.fails(&["apply", "-n", NAMESPACE, "-f", path]);
    assert_has(&err, r#""bad" is invalid"#);
    let err = fails(k, "get deployment bad -n shop");
    assert_has(&err, "(NotFound)");
}

/// Applies `manifest` (written to `file` in kubectl's home) with kubectl's
/// default (strict) field validation: it must say `created`, warn that
/// skiff does not act on the field at `unread`, and say nothing of the
/// node affinity (acted on). The manifest's path.
fn applied_with_fields(
    k: &Kubectl,
    (file, manifest): (&str, &str),
    created: &str,
    unread: &str,
) -> std::path::PathBuf {
    let path = k.home().join(file);
    std::fs::write(&path, manifest).unwrap();
    let out = k.run(&[
        "apply",
        "-n",
        NAMESPACE,
        "-f",
        path.to_str().unwrap_or_default(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_has(&stdout, created);
    let warned = format!("{unread}: skiff does not act on this field yet");
    assert_has(&stderr, &warned);
    assert!(!stderr.contains("nodeAffinity"), "acted on: {stderr}");
    path
}

/// A pod using fields skiff's protobuf model had no place for, applied
/// with kubectl's default (strict) field validation: stored whole,
/// warned about where skiff does not act on them, and placed on the node
/// its required node affinity names.
fn pod_fields(k: &Kubectl) {
    applied_with_fields(
        k,
        ("placed.yaml", PLACED_POD),
        "pod/placed created",
        "spec.topologySpreadConstraints",
    );
    let started = std::time::Instant::now();
    let node = loop {
        let node = jsonpath(k, "pod placed", "{.spec.nodeName}");
        if !node.is_empty() || started.elapsed() > SETTLE {
            break node;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(node, NODES[1], "its required node affinity names it");
    let kept = "{.spec.topologySpreadConstraints[0].topologyKey} {.spec.os.name}";
    assert_eq!(jsonpath(k, "pod placed", kept), "zone linux");
    let defaulted = "{.spec.restartPolicy} {.spec.containers[0].terminationMessagePath}";
    assert_eq!(
        jsonpath(k, "pod placed", defaulted),
        "Always /dev/termination-log"
    );
    assert_has(&ok(k, "delete pod placed -n shop"), r#""placed" deleted"#);
}

/// A pod with a required node affinity (the second hollow node, by name),
/// a topology spread constraint and an `os`.
const PLACED_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: placed}
spec:
  os: {name: linux}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchFields: [{key: metadata.name, operator: In, values: [hollow-2]}]
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}
  containers:
  - {name: c, image: busybox:1.36}
"#;

/// A Deployment whose template uses fields skiff's protobuf model had no
/// place for, applied with kubectl's default (strict) field validation:
/// stored whole, its ReplicaSet's and pods' templates whole, and its pods
/// placed on the node their required node affinity names.
fn deployment_fields(k: &Kubectl) {
    let path = applied_with_fields(
        k,
        ("placed-deployment.yaml", PLACED_DEPLOYMENT),
        "deployment.apps/spread created",
        "spec.template.spec.topologySpreadConstraints",
    );
    let path = path.to_str().unwrap_or_default();
    let kept = "{.spec.template.spec.topologySpreadConstraints[0].topologyKey}";
    assert_eq!(jsonpath(k, "deployment spread", kept), "zone");
    let nodes = "{.items[*].spec.nodeName}";
    let started = std::time::Instant::now();
    let placed = loop {
        let placed = jsonpath(k, "pods -l app=spread", nodes);
        if placed.split_whitespace().count() == 2 || started.elapsed() > SETTLE {
            break placed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let expected = format!("{0} {0}", NODES[1]);
    assert_eq!(placed, expected, "their required node affinity names it");
    let spread = "{.items[*].spec.topologySpreadConstraints[0].topologyKey}";
    assert_eq!(jsonpath(k, "pods -l app=spread", spread), "zone zone");
    let of_set = "{.items[*].spec.template.spec.topologySpreadConstraints[0].topologyKey}";
    assert_eq!(jsonpath(k, "replicasets -l app=spread", of_set), "zone");
    // Applied again unchanged: no new ReplicaSet.
    k.ok(&["apply", "-n", NAMESPACE, "-f", path]);
    std::thread::sleep(Duration::from_millis(500));
    let sets = jsonpath(k, "replicasets -l app=spread", "{.items[*].metadata.name}");
    assert_eq!(sets.split_whitespace().count(), 1, "{sets}");
    let deleted = ok(k, "delete deployment spread -n shop");
    assert_has(&deleted, r#""spread" deleted"#);
}

/// Two replicas with a required node affinity (the second hollow node, by
/// name) and a topology spread constraint.
const PLACED_DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 2
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchFields: [{key: metadata.name, operator: In, values: [hollow-2]}]
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}
      containers:
      - {name: c, image: busybox:1.36}
"#;

/// `kubectl proxy` relays plain HTTP on loopback to the API.
fn proxy(k: &Kubectl) {
    let port = free_port();
    let port_flag = format!("--port={port}");
    let running = k.spawn(&["proxy", &port_flag]).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let version = eventually("kubectl proxy to serve /version", SETTLE, || {
        let answer = http_get(&addr, "/version");
        match answer {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("{code}: {body}\n{}", running.output())),
            Err(e) => Err(format!("{e:#}\n{}", running.output())),
        }
    });
    assert_has(&version, "gitVersion");
    assert_has(&version, "skiff");
    let serving = format!("Starting to serve on {addr}");
    assert_has(&running.output(), &serving);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_with_kubernetes_status_errors() {
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let k = Kubectl::new(binary, &m.api_addr).unwrap();

    let err = fails(&k, "get --raw /api/v1/namespaces/default/pods/nope");
    assert_has(&err, "(NotFound)");
    let err = fails(&k, "get --raw /api/v1/widgets");
    assert_has(&err, "(NotFound)");

    let pods = "/api/v1/namespaces/default/pods";
    let malformed = k.home().join("malformed.json");
    std::fs::write(&malformed, MALFORMED_POD).unwrap();
    let path = malformed.to_str().unwrap_or_default();
    let err = k.fails(&["create", "--raw", pods, "-f", path]);
    assert_has(&err, "(BadRequest)");

    let elsewhere = k.home().join("elsewhere.json");
    std::fs::write(&elsewhere, POD_OF_ANOTHER_NAMESPACE).unwrap();
    let path = elsewhere.to_str().unwrap_or_default();
    let err = k.fails(&["create", "--raw", pods, "-f", path]);
    assert_has(&err, "(BadRequest)");
    let err = fails(&k, "get pod misplaced -n default");
    assert_has(&err, "(NotFound)");

    let answer = skiff_e2e::bare_https::get(&m.api_addr, "/api/v1/namespaces", None).await;
    let (code, body) = answer.unwrap_or_else(|e| panic!("{e:#}\n{}", m.log_tail()));
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["status"], "Failure", "{body}");
    assert_eq!(status["reason"], "Unauthorized", "{body}");
    assert_eq!(status["code"], 401, "{body}");
}

/// The Deployment `apply` creates, leaves and changes.
fn api_deployment(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: {NAMESPACE}\n  labels: {{app: api}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n      - name: api\n        image: busybox:1.36\n"
    )
}

/// A Deployment the server must refuse (negative replicas); kubectl itself
/// does not check it: the OpenAPI schema says only that replicas is an
/// integer.
const INVALID_DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: bad, image: 'busybox:1.36'}]
";

/// The Deployment `explain_and_validation` applies, with `replicas` as
/// given (YAML).
/// (The cpu limit is the string `"1"`: kubectl's client-side apply compares
/// the manifest with the stored object as JSON, and a number `1` differs
/// from the `"1"` any Kubernetes answers, so a second apply would say
/// "configured" against a real cluster too.)
fn checked_deployment(replicas: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: checked
  namespace: {NAMESPACE}
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 25%, maxUnavailable: 1}}
  selector:
    matchLabels: {{app: checked}}
  template:
    metadata:
      labels: {{app: checked}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: [sleep, \"3600\"]
        ports: [{{name: http, containerPort: 8080}}]
        env: [{{name: MODE, value: fast}}]
        resources:
          requests: {{cpu: 100m, memory: 32Mi}}
          limits: {{cpu: \"1\", memory: 64Mi}}
        readinessProbe:
          tcpSocket: {{port: http}}
"
    )
}

/// A request body that is not JSON: it ends inside an object.
const MALFORMED_POD: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"#;

/// A Pod in namespace `elsewhere`, to be posted to `default`'s URL.
const POD_OF_ANOTHER_NAMESPACE: &str = r#"{"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "misplaced", "namespace": "elsewhere"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}"#;

/// A StatefulSet, an Ingress, a PersistentVolumeClaim and a CronJob, as
/// charts write them.
const STORED_KINDS: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: shop
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: busybox:1.36
        resources:
          requests: {cpu: 100m, memory: 64Mi}
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port: {number: 80}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: shop
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: shop
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: c
            image: busybox:1.36
"#;

/// A Job whose pods would restart forever: Kubernetes refuses it.
const BAD_JOB: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: bad
  namespace: shop
spec:
  template:
    spec:
      restartPolicy: Always
      containers:
      - name: c
        image: busybox:1.36
"#;

/// The words of a command line (no quoting: arguments with spaces go in
/// an array).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `kubectl <line>`, which must succeed; its stdout.
fn ok(k: &Kubectl, line: &str) -> String {
    k.ok(&words(line))
}

/// `kubectl <line>`, which must fail; its stderr.
fn fails(k: &Kubectl, line: &str) -> String {
    k.fails(&words(line))
}

/// `kubectl get <what> -n shop -o jsonpath=<path>`.
fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get", "-n", NAMESPACE, "-o", output.as_str()];
    args.extend(words(what));
    k.ok(&args)
}

/// `kubectl patch deploy web -n shop --type <kind> -p <body>`.
fn patch(k: &Kubectl, kind: &str, body: &str) -> String {
    let mut args = words("patch deploy web -n shop --type");
    args.extend([kind, "-p", body]);
    k.ok(&args)
}

/// Whether a line of `text` is exactly `expected`, word by word.
fn has_line(text: &str, expected: &[&str]) -> bool {
    text.lines().any(|line| words(line) == expected)
}

/// Asserts that `text` contains `needle`, showing `text` if not.
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// The cells of every table row whose first cell is `name`.
fn rows_named<'a>(table: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    let mut rows = Vec::new();
    for cells in table.lines().map(words) {
        if cells.first() == Some(&name) {
            rows.push(cells);
        }
    }
    rows
}

/// The cells of the first table row whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    rows_named(table, name).into_iter().next()
}

/// Cell `n` of a row, or "" if the row is shorter.
fn cell<'a>(row: &[&'a str], n: usize) -> &'a str {
    row.get(n).copied().unwrap_or_default()
}

/// Cell `n` of each row under the header ("" where a row is shorter).
fn column(table: &str, n: usize) -> Vec<&str> {
    let rows = table.lines().skip(1).map(words);
    rows.map(|cells| cell(&cells, n)).collect()
}

/// Whether the row named `name` has each of `cells` in some column.
fn row_has(table: &str, name: &str, cells: &[&str]) -> bool {
    let found = row(table, name).unwrap_or_default();
    cells.iter().all(|c| found.contains(c))
}

/// A table's column names (each one word in the tables checked here).
fn header_of(table: &str) -> Vec<&str> {
    let header = table.lines().next().unwrap_or_default();
    header.split_whitespace().collect()
}

/// Pod names from `-o name` output (`pod/NAME` lines).
fn names_of(out: &str) -> BTreeSet<String> {
    let names = out.lines().filter_map(|l| l.strip_prefix("pod/"));
    names.map(str::to_owned).collect()
}
