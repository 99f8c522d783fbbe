//! Controllers on a real master: Deployment → ReplicaSet → Pods, rolling
//! updates, rollback, scaling and garbage collection. No agent runs here:
//! where pods must become Ready, the test reports them Ready itself, the way
//! a node would, through the real API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_e2e::master::ready_master;
use skiff_e2e::{ctl, wait_for};
use skiff_master::client::Client;
use skiff_objects::{services, Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

fn deployment_yaml(
    namespace: &str,
    replicas: i32,
    image: &str,
    surge: &str,
    unavailable: &str,
) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {namespace}}}\nspec:\n  replicas: {replicas}\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: web, image: \"{image}\"}}\n"
    )
}

fn apply(server: &str, dir: &std::path::Path, yaml: &str) {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = ctl(server, &["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pods(items: Vec<Object>) -> Vec<v1::Pod> {
    items
        .into_iter()
        .filter_map(|o| match skiff_objects::pods::in_model(o).kind {
            Some(Body::Pod(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn is_ready(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn image(p: &v1::Pod) -> String {
    p.spec.as_ref().unwrap().containers[0].image.clone()
}

/// Plays the nodes: reports every pod Running and Ready a little after it
/// appears, as an agent would.
fn report_pods_ready(
    client: Client,
    namespace: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(list) = client.list(Kind::Pod, namespace).await {
                for mut pod in pods(list.items) {
                    let name = pod.metadata.as_ref().unwrap().name.clone();
                    let first = *seen.entry(name).or_insert_with(tokio::time::Instant::now);
                    if is_ready(&pod) || first.elapsed() < Duration::from_millis(150) {
                        continue;
                    }
                    let status = pod.status.get_or_insert_with(Default::default);
                    status.phase = "Running".into();
                    status.conditions = vec![v1::PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: humantime::format_rfc3339_seconds(
                            std::time::SystemTime::now(),
                        )
                        .to_string(),
                        ..Default::default()
                    }];
                    let _ = client
                        .update_status(skiff_objects::IntoObject::into_object(pod))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_makes_a_replicaset_and_pods_and_deleting_it_removes_them() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    apply(
        &m.api_addr,
        dir.path(),
        &deployment_yaml("default", 3, "busybox:1.36", "25%", "25%"),
    );
    let rs = wait_for("a replicaset with 3 pods", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let sets = client.list(Kind::ReplicaSet, "default").await.ok()?.items;
            let pods = pods(client.list(Kind::Pod, "default").await.ok()?.items);
            (sets.len() == 1 && pods.len() == 3).then(|| sets[0].clone())
        }
    })
    .await
    .unwrap();
    let rs_meta = rs.meta().clone();
    assert!(rs_meta.name.starts_with("web-"), "{}", rs_meta.name);
    assert_eq!(rs_meta.owner_references[0].kind, "Deployment");
    assert_eq!(
        rs_meta.annotations["deployment.kubernetes.io/revision"],
        "1"
    );
    for p in pods(client.list(Kind::Pod, "default").await.unwrap().items) {
        let meta = p.metadata.unwrap();
        let suffix = meta
            .name
            .strip_prefix(&format!("{}-", rs_meta.name))
            .unwrap();
        assert_eq!(suffix.len(), 5, "{}", meta.name);
        assert_eq!(meta.owner_references[0].uid, rs_meta.uid);
        assert_eq!(meta.owner_references[0].controller, Some(true));
        assert_eq!(meta.labels["app"], "web");
    }

    // Scale up and down through ctl.
    let out = ctl(&m.api_addr, &["scale", "deploy/web", "--replicas", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("5 pods", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (client.list(Kind::Pod, "default").await.ok()?.items.len() == 5).then_some(()) }
    })
    .await
    .unwrap();
    ctl(
        &m.api_addr,
        &["scale", "deployment", "web", "--replicas", "2"],
    );
    wait_for("2 pods", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (client.list(Kind::Pod, "default").await.ok()?.items.len() == 2).then_some(()) }
    })
    .await
    .unwrap();

    let out = ctl(&m.api_addr, &["delete", "deploy", "web"]);
    assert!(out.status.success());
    wait_for(
        "replicasets and pods to be collected",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let sets = client.list(Kind::ReplicaSet, "default").await.ok()?.items;
                let pods = client.list(Kind::Pod, "default").await.ok()?.items;
                (sets.is_empty() && pods.is_empty()).then_some(())
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_enough_pods_ready_and_rollback_restores_the_template() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = report_pods_ready(client.clone(), "default", stop.clone());
    apply(
        &m.api_addr,
        dir.path(),
        &deployment_yaml("default", 4, "app:v1", "1", "1"),
    );
    let out = ctl(
        &m.api_addr,
        &["rollout", "status", "deploy/web", "--timeout", "60s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));

    // Watch the number of Ready pods while the template changes.
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (client, lowest, watching) = (client.clone(), lowest.clone(), watching.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while watching.load(Ordering::SeqCst) {
                if let Ok(list) = client.list(Kind::Pod, "default").await {
                    let ready = pods(list.items).iter().filter(|p| is_ready(p)).count() as i64;
                    lowest.fetch_min(ready, Ordering::SeqCst);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        })
    };
    apply(
        &m.api_addr,
        dir.path(),
        &deployment_yaml("default", 4, "app:v2", "1", "1"),
    );
    let out = ctl(
        &m.api_addr,
        &["rollout", "status", "deploy/web", "--timeout", "60s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stdout).into_owned();
    wait_for("only v2 pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(client.list(Kind::Pod, "default").await.ok()?.items);
            (p.len() == 4 && p.iter().all(|p| image(p) == "app:v2")).then_some(())
        }
    })
    .await
    .unwrap();
    watching.store(false, Ordering::SeqCst);
    let samples = monitor.await.unwrap();
    assert!(
        samples >= 10,
        "the rollout was sampled only {samples} times"
    );
    let lowest = lowest.load(Ordering::SeqCst);
    eprintln!("lowest ready during the rollout: {lowest} over {samples} samples\n{progress}");
    assert!(
        lowest >= 3,
        "ready pods fell to {lowest}, below replicas - maxUnavailable = 3\n{progress}\n{}",
        m.log_tail()
    );

    // Rollback restores the v1 template and its ReplicaSet.
    let out = ctl(&m.api_addr, &["rollout", "undo", "deploy/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = client
        .get(Kind::Deployment, "default", "web")
        .await
        .unwrap();
    let Some(Body::Deployment(d)) = skiff_objects::legacy_bodies::cut_to_model(d).unwrap().kind
    else {
        panic!()
    };
    let template = d.spec.unwrap().template.unwrap();
    assert_eq!(template.spec.unwrap().containers[0].image, "app:v1");
    assert!(!template
        .metadata
        .unwrap()
        .labels
        .contains_key("pod-template-hash"));
    wait_for("only v1 pods again", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(client.list(Kind::Pod, "default").await.ok()?.items);
            (p.len() == 4 && p.iter().all(|p| image(p) == "app:v1")).then_some(())
        }
    })
    .await
    .unwrap();
    let sets = client
        .list(Kind::ReplicaSet, "default")
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 2, "the v1 ReplicaSet is reused, not duplicated");
    let revisions: Vec<String> = sets
        .iter()
        .map(|s| s.meta().annotations["deployment.kubernetes.io/revision"].clone())
        .collect();
    assert!(revisions.contains(&"3".to_owned()), "{revisions:?}");
    stop.store(true, Ordering::SeqCst);
    nodes.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_leaves_nothing_behind() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    apply(
        &m.api_addr,
        dir.path(),
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: team}}\nspec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n",
            deployment_yaml("team", 3, "busybox:1.36", "25%", "25%")
        ),
    );
    wait_for("3 pods in team", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (client.list(Kind::Pod, "team").await.ok()?.items.len() == 3).then_some(()) }
    })
    .await
    .unwrap();
    let out = ctl(&m.api_addr, &["delete", "ns", "team"]);
    assert!(out.status.success());
    wait_for(
        "namespace team to be empty",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                for kind in [
                    Kind::Pod,
                    Kind::ReplicaSet,
                    Kind::Deployment,
                    Kind::Service,
                    Kind::Endpoints,
                ] {
                    if !client.list(kind, "team").await.ok()?.items.is_empty() {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await
    .unwrap();
    // Nothing can be created in it any more.
    let late = ctl(
        &m.api_addr,
        &["scale", "deploy/web", "-n", "team", "--replicas", "1"],
    );
    assert!(!late.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_starting_new_ones() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = report_pods_ready(client.clone(), "default", stop.clone());
    let recreate = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n  strategy: {{type: Recreate}}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: web, image: \"{image}\"}}\n"
        )
    };
    apply(&m.api_addr, dir.path(), &recreate("app:v1"));
    let out = ctl(
        &m.api_addr,
        &["rollout", "status", "deploy/web", "--timeout", "60s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mixed = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (client, mixed, watching) = (client.clone(), mixed.clone(), watching.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while watching.load(Ordering::SeqCst) {
                if let Ok(list) = client.list(Kind::Pod, "default").await {
                    let images: std::collections::BTreeSet<String> =
                        pods(list.items).iter().map(image).collect();
                    if images.len() > 1 {
                        mixed.store(true, Ordering::SeqCst);
                    }
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        })
    };
    apply(&m.api_addr, dir.path(), &recreate("app:v2"));
    wait_for("3 v2 pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(client.list(Kind::Pod, "default").await.ok()?.items);
            (p.len() == 3 && p.iter().all(|p| image(p) == "app:v2" && is_ready(p))).then_some(())
        }
    })
    .await
    .unwrap();
    watching.store(false, Ordering::SeqCst);
    let samples = monitor.await.unwrap();
    assert!(samples >= 5, "sampled only {samples} times");
    assert!(
        !mixed.load(Ordering::SeqCst),
        "old and new pods ran at the same time under Recreate"
    );
    stop.store(true, Ordering::SeqCst);
    nodes.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_adopts_matching_orphans_and_releases_relabelled_pods() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    apply(
        &m.api_addr,
        dir.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: manual, labels: {app: adopt}}\nspec:\n  containers: [{name: c, image: \"busybox:1.36\"}]\n",
    );
    apply(
        &m.api_addr,
        dir.path(),
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: adopter}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: adopt}}\n  template:\n    metadata: {labels: {app: adopt}}\n    spec:\n      containers: [{name: c, image: \"busybox:1.36\"}]\n",
    );
    let rs_uid = client
        .get(Kind::ReplicaSet, "default", "adopter")
        .await
        .unwrap()
        .meta()
        .uid
        .clone();
    wait_for(
        "the orphan adopted and one pod created",
        Duration::from_secs(20),
        || {
            let (client, rs_uid) = (client.clone(), rs_uid.clone());
            async move {
                let p = pods(client.list(Kind::Pod, "default").await.ok()?.items);
                let manual = p
                    .iter()
                    .find(|p| p.metadata.as_ref().unwrap().name == "manual")?;
                let adopted = manual
                    .metadata
                    .as_ref()?
                    .owner_references
                    .iter()
                    .any(|r| r.uid == rs_uid);
                (p.len() == 2 && adopted).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Stays at two: the adopted pod counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.list(Kind::Pod, "default").await.unwrap().items.len(),
        2
    );

    // Relabel it out of the selector: released, and replaced.
    let mut manual = client.get(Kind::Pod, "default", "manual").await.unwrap();
    manual
        .meta_mut()
        .unwrap()
        .labels
        .insert("app".into(), "other".into());
    client.update(manual).await.unwrap();
    wait_for("release and replacement", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let p = pods(client.list(Kind::Pod, "default").await.ok()?.items);
            let manual = p
                .iter()
                .find(|p| p.metadata.as_ref().unwrap().name == "manual")?;
            let released = manual.metadata.as_ref()?.owner_references.is_empty();
            (p.len() == 3 && released).then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_count_as_available_only_after_min_ready_seconds() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = report_pods_ready(client.clone(), "default", stop.clone());
    let yaml = deployment_yaml("default", 2, "app:v1", "25%", "25%")
        .replace("  replicas: 2\n", "  replicas: 2\n  minReadySeconds: 3\n");
    apply(&m.api_addr, dir.path(), &yaml);
    let status = |client: Client| async move {
        let d = client.get(Kind::Deployment, "default", "web").await.ok()?;
        match skiff_objects::legacy_bodies::cut_to_model(d).ok()?.kind {
            Some(Body::Deployment(d)) => d.status,
            _ => None,
        }
    };
    let ready_at = wait_for("2 ready replicas", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (status(client).await?.ready_replicas == 2).then(std::time::Instant::now) }
    })
    .await
    .unwrap();
    let early = status(client.clone()).await.unwrap();
    assert!(
        early.available_replicas < 2,
        "available before minReadySeconds: {early:?}"
    );
    wait_for("2 available replicas", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (status(client).await?.available_replicas == 2).then_some(()) }
    })
    .await
    .unwrap();
    assert!(
        ready_at.elapsed() >= Duration::from_secs(1),
        "became available {:?} after ready",
        ready_at.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    nodes.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_reports_its_progress_deadline_exceeded() {
    let (dir, m) = ready_master().await.unwrap();
    let client = m.client();
    // No node ever reports these pods ready.
    let yaml = deployment_yaml("default", 2, "app:v1", "25%", "25%").replace(
        "  replicas: 2\n",
        "  replicas: 2\n  progressDeadlineSeconds: 2\n",
    );
    apply(&m.api_addr, dir.path(), &yaml);
    let condition = wait_for("ProgressDeadlineExceeded", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let d = client.get(Kind::Deployment, "default", "web").await.ok()?;
            let Some(Body::Deployment(d)) =
                skiff_objects::legacy_bodies::cut_to_model(d).ok()?.kind
            else {
                return None;
            };
            d.status?
                .conditions
                .into_iter()
                .find(|c| c.r#type == "Progressing" && c.status == "False")
        }
    })
    .await
    .unwrap();
    assert_eq!(condition.reason, "ProgressDeadlineExceeded");
    assert!(
        condition.message.contains("has timed out progressing"),
        "{condition:?}"
    );
    let out = ctl(
        &m.api_addr,
        &["rollout", "status", "deploy/web", "--timeout", "10s"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exceeded its progress deadline"),
        "{stderr}"
    );
}

fn service_yaml(name: &str, cluster_ip: Option<&str>) -> String {
    let ip = cluster_ip
        .map(|ip| format!("  clusterIP: \"{ip}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{ip}  selector: {{app: {name}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n"
    )
}

fn cluster_ip(o: &Object) -> String {
    match services::read(o) {
        Some(s) => services::cluster_ip(&s).to_owned(),
        None => panic!("not a Service: {o:?}"),
    }
}

/// A Service turned into an ExternalName and back by `kubectl apply`, as
/// kube-apiserver allows it: the clusterIP kubectl sends back unchanged is
/// dropped (an ExternalName has none) and the address is free again; turned
/// back, the Service gets a new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_turns_a_service_into_an_external_name_and_back() {
    use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let (dir, master) = ready_master().await.unwrap();
    let kubectl = Kubectl::new(binary, &master.api_addr).unwrap();
    let manifest = dir.path().join("alias.yaml");
    let apply = |spec: &str| {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: alias}}\nspec:\n{spec}  ports:\n  - {{port: 80, targetPort: 8080}}\n"
        );
        std::fs::write(&manifest, yaml).unwrap();
        kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    };
    let field =
        |path: &str| kubectl.ok(&["get", "svc", "alias", "-o", &format!("jsonpath={{{path}}}")]);
    apply("  selector: {app: alias}\n");
    let first = field(".spec.clusterIP");
    assert!(first.starts_with("10.43."), "{first}");

    apply("  type: ExternalName\n  externalName: db.example.com\n");
    assert_eq!(field(".spec.type"), "ExternalName");
    assert_eq!(
        field(".spec.clusterIP"),
        "",
        "an ExternalName has no clusterIP"
    );
    // Its old address can be had again.
    let taker = dir.path().join("taker.yaml");
    std::fs::write(&taker, service_yaml("taker", Some(&first))).unwrap();
    kubectl.ok(&["apply", "-f", taker.to_str().unwrap()]);

    apply("  selector: {app: alias}\n");
    assert_eq!(field(".spec.type"), "ClusterIP");
    let second = field(".spec.clusterIP");
    assert!(
        second.starts_with("10.43.") && second != first,
        "{second} (first {first})"
    );
    // Still immutable once it is a ClusterIP again.
    let moved = kubectl.fails(&[
        "patch",
        "svc",
        "alias",
        "-p",
        r#"{"spec":{"clusterIP":"10.43.9.9"}}"#,
    ]);
    assert!(moved.contains("immutable"), "{moved}");
}

/// Services get addresses from the service CIDR as Kubernetes gives them:
/// unique, the asked one if it is free and in range, none for headless,
/// kept across updates and immutable, free again after a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_unique_cluster_ips_that_never_change() {
    let (dir, master) = ready_master().await.unwrap();
    let client = master.client();
    let create = |yaml: String| {
        let client = client.clone();
        async move {
            let object = skiff_objects::manifest::parse_manifest("svc.yaml", &yaml, true)
                .unwrap()
                .objects
                .remove(0);
            client.create(object).await
        }
    };
    // Created at once, they still get different addresses.
    let mut made = tokio::task::JoinSet::new();
    for i in 0..8 {
        made.spawn(create(service_yaml(&format!("s{i}"), None)));
    }
    let mut ips = std::collections::BTreeSet::new();
    while let Some(r) = made.join_next().await {
        ips.insert(cluster_ip(&r.unwrap().unwrap()));
    }
    assert_eq!(ips.len(), 8, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.43.0.")), "{ips:?}");
    assert!(
        ips.contains("10.43.0.11"),
        "the first ten are kept back: {ips:?}"
    );

    // Asked-for addresses: free and in range, or refused with the reason.
    let fixed = create(service_yaml("fixed", Some("10.43.7.7")))
        .await
        .unwrap();
    assert_eq!(cluster_ip(&fixed), "10.43.7.7");
    let e = create(service_yaml("dup", Some("10.43.7.7")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already allocated to Service default/fixed"),
        "{e}"
    );
    let e = create(service_yaml("outside", Some("10.99.0.1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in the service CIDR 10.43.0.0/16"), "{e}");
    let e = create(service_yaml("junk", Some("ten")))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.clusterIP"), "{e}");
    let headless = create(service_yaml("headless", Some("None")))
        .await
        .unwrap();
    assert_eq!(cluster_ip(&headless), "None");

    // Applying the manifest again (no clusterIP in it) keeps the address;
    // asking for another one is refused.
    apply(&master.api_addr, dir.path(), &service_yaml("fixed", None));
    let again = client.get(Kind::Service, "default", "fixed").await.unwrap();
    assert_eq!(cluster_ip(&again), "10.43.7.7");
    let mut moved = again.clone();
    let mut spec = services::read(&again).unwrap().spec.unwrap();
    spec.cluster_ip = Some("10.43.7.8".into());
    services::set_spec(&mut moved, spec);
    let e = client.update(moved).await.unwrap_err().to_string();
    assert!(e.contains("immutable"), "{e}");

    // Deleted, its address can be had again.
    client
        .delete(Kind::Service, "default", "fixed", "")
        .await
        .unwrap();
    let reused = create(service_yaml("fixed2", Some("10.43.7.7")))
        .await
        .unwrap();
    assert_eq!(cluster_ip(&reused), "10.43.7.7");
    let listed = ctl(&master.api_addr, &["get", "svc", "fixed2"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("10.43.7.7"), "{listed}");
}
