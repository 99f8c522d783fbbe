//! What kube-apiserver refuses in workload specs, refused to kubectl with
//! the field named and nothing stored or changed: a DaemonSet whose
//! selector's expressions miss its template, a Job whose manual selector
//! misses its pods, a bad cron schedule; and updates of what may not
//! change: a Job's pod template and completions, a StatefulSet's spec
//! beyond replicas, template and strategy, a Deployment's and a
//! DaemonSet's selector. What may change (a Job's parallelism, a
//! StatefulSet's replicas and image) still does. With `skiff ctl apply`,
//! which replaces the object with the manifest: a Job applied again is
//! unchanged (its generated selector and labels kept), a changed template
//! refused.

use skiff_e2e::ctl;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_is_refused_invalid_workloads_and_immutable_changes() {
    kube_clients::on_hollow_cluster(KubectlVersion::V1_35, &["wv-1"], |k, _| refusals(k)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_is_refused_invalid_workloads_and_immutable_changes() {
    kube_clients::on_hollow_cluster(KubectlVersion::V1_20, &["wv-1"], |k, _| refusals(k)).await;
}

/// A container spec with `image`.
fn containers(image: &str) -> String {
    format!("[{{name: main, image: {image}, command: [sleep, '3600']}}]")
}

fn daemon_set(selector: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {selector}
  template:
    metadata:
      labels: {{app: agent, tier: node}}
    spec:
      containers: {}
",
        containers("busybox")
    )
}

fn job(selector: &str, completions: u32, parallelism: u32, image: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: batch}}
spec:
  suspend: true
  {selector}
  completions: {completions}
  parallelism: {parallelism}
  template:
    metadata:
      labels: {{app: batch}}
    spec:
      restartPolicy: Never
      containers: {}
",
        containers(image)
    )
}

fn stateful_set(service: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: {service}
  replicas: {replicas}
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      containers: {}
",
        containers(image)
    )
}

fn deployment(selector: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 0
  selector:
    matchLabels: {selector}
  template:
    metadata:
      labels: {{app: web, tier: front}}
    spec:
      containers: {}
",
        containers("busybox")
    )
}

const BAD_CRON: &str = "apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '61 * * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox}]
";

/// `kubectl apply -f` of `manifest` (written to `name`.yaml); its output
/// and whether it succeeded.
fn apply(k: &Kubectl, name: &str, manifest: &str) -> (bool, String) {
    let file = k.home().join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let out = k.run(&["apply", "-f", file.to_str().unwrap_or_default()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Applies `manifest`, which must be refused naming each of `needles`.
fn refused(k: &Kubectl, name: &str, manifest: &str, needles: &[&str]) {
    let (ok, out) = apply(k, name, manifest);
    assert!(!ok, "{name} was taken: {out}");
    for needle in needles {
        assert!(out.contains(needle), "{name}: {needle:?} not in {out}");
    }
}

/// Applies `manifest`, which must be taken.
fn taken(k: &Kubectl, name: &str, manifest: &str) {
    let (ok, out) = apply(k, name, manifest);
    assert!(ok, "{name} was refused: {out}");
}

fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get", "-o", output.as_str()];
    args.extend(what.split_whitespace());
    k.ok(&args).trim().to_owned()
}

fn refusals(k: &Kubectl) {
    // Invalid specs: the field named, nothing stored.
    let missed = "{matchLabels: {app: agent}, matchExpressions: [{key: tier, operator: In, values: [edge]}]}";
    refused(
        k,
        "ds-missed",
        &daemon_set(missed),
        &[
            r#""agent" is invalid"#,
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ],
    );
    let err = k.fails(&["get", "daemonset", "agent"]);
    assert!(err.contains("NotFound"), "nothing stored: {err}");
    refused(
        k,
        "job-manual",
        &job(
            "manualSelector: true\n  selector: {matchLabels: {app: other}}",
            1,
            1,
            "busybox",
        ),
        &[r#""batch" is invalid"#, "spec.template.metadata.labels"],
    );
    refused(
        k,
        "cron",
        BAD_CRON,
        &[r#""nightly" is invalid"#, "spec.schedule"],
    );

    // A Job: its template and completions may not change; its
    // parallelism may.
    taken(k, "job", &job("", 2, 1, "busybox"));
    refused(
        k,
        "job-image",
        &job("", 2, 1, "busybox:2"),
        &["spec.template: Invalid value", "field is immutable"],
    );
    refused(
        k,
        "job-completions",
        &job("", 3, 1, "busybox"),
        &["spec.completions: Invalid value: 3: field is immutable"],
    );
    let image = jsonpath(k, "job batch", "{.spec.template.spec.containers[0].image}");
    assert_eq!(image, "busybox", "the stored Job is unchanged");
    taken(k, "job-parallel", &job("", 2, 2, "busybox"));
    assert_eq!(jsonpath(k, "job batch", "{.spec.parallelism}"), "2");

    // A StatefulSet: replicas and template may change; its service may not.
    taken(k, "sts", &stateful_set("db", 1, "busybox"));
    taken(k, "sts-scaled", &stateful_set("db", 2, "busybox:2"));
    assert_eq!(jsonpath(k, "statefulset db", "{.spec.replicas}"), "2");
    refused(
        k,
        "sts-service",
        &stateful_set("other", 2, "busybox:2"),
        &[
            "spec: Forbidden: updates to statefulset spec for fields other than",
            "are forbidden",
        ],
    );
    assert_eq!(jsonpath(k, "statefulset db", "{.spec.serviceName}"), "db");

    // Selectors of Deployments and DaemonSets.
    taken(k, "web", &deployment("{app: web}"));
    refused(
        k,
        "web-selector",
        &deployment("{app: web, tier: front}"),
        &["spec.selector: Invalid value", "field is immutable"],
    );
    taken(k, "ds", &daemon_set("{matchLabels: {app: agent}}"));
    refused(
        k,
        "ds-selector",
        &daemon_set("{matchLabels: {app: agent, tier: node}}"),
        &["spec.selector: Invalid value", "field is immutable"],
    );
    let selector = jsonpath(k, "daemonset agent", "{.spec.selector.matchLabels}");
    assert!(!selector.contains("tier"), "unchanged: {selector}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_ctl_applies_a_job_again_unchanged_and_is_refused_a_new_template(
) -> anyhow::Result<()> {
    let (dir, master) = ready_master().await?;
    let api = master.api_addr.clone();
    let apply = |name: &str, manifest: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        let out = ctl(&api, &["apply", "-f", path.to_str().unwrap_or_default()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = apply("job", &job("", 2, 1, "busybox"));
    assert!(ok && out.contains("created"), "{out}");
    let (ok, out) = apply("job", &job("", 2, 1, "busybox"));
    assert!(ok && out.contains("unchanged"), "applied again: {out}");
    let (ok, out) = apply("job", &job("", 2, 1, "busybox:2"));
    assert!(!ok, "a new template was taken: {out}");
    assert!(
        out.contains("spec.template") && out.contains("field is immutable"),
        "{out}"
    );
    let (ok, out) = apply("job", &job("", 2, 2, "busybox"));
    assert!(ok && out.contains("configured"), "parallelism: {out}");
    Ok(())
}
