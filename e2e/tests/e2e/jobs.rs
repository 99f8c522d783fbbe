//! Jobs and CronJobs on a real master with a real agent (a private
//! containerd, the static-busybox image): a Job completing 3 of 3 with 2 at
//! a time, a failing Job stopping at its backoffLimit after Kubernetes'
//! back-off, an Indexed Job whose containers see `JOB_COMPLETION_INDEX`,
//! a CronJob firing every minute and honouring `Forbid`. And, on three
//! masters with hollow nodes that report each Job pod Succeeded a second
//! after it runs (`HollowConfig::complete_after`), a leader killed while
//! Jobs complete: no completion lost or counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;
use skiff_e2e::agent::{wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_e2e::master::{ready_master, MasterCluster, MasterProcess};
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_master::controllers::job::model::{
    conditions, counter, time_text, uncounted_is_empty, JobView, TRACKING_FINALIZER,
};
use skiff_objects::generic::{self, JOB_NAME_LABEL};
use skiff_objects::{Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
/// The busybox image, imported from an archive (never pulled).
const IMAGE: &str = "jobs/busybox:1";

/// A master and one real node. Field order is drop order: the node goes
/// before its master.
struct OneNode {
    node: RuntimeNode,
    master: MasterProcess,
    client: Client,
    dir: tempfile::TempDir,
}

async fn one_node(name: &str) -> anyhow::Result<OneNode> {
    let (dir, master) = ready_master().await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.api_addr,
        name,
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    let client = master.client();
    wait_node_ready(&client, name, Duration::from_secs(30))
        .await
        .with_context(|| node.log_tail())?;
    Ok(OneNode {
        node,
        master,
        client,
        dir,
    })
}

/// A Job running `command` in busybox; `spec` holds its other spec lines.
fn job_yaml(name: &str, spec: &str, command: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "{command}"]
"#
    )
}

async fn job(client: &Client, name: &str) -> Option<JobView> {
    match client.get(Kind::Job, "default", name).await.ok()?.kind {
        Some(Body::Generic(g)) => JobView::read(&g).ok(),
        _ => None,
    }
}

fn holds(job: &JobView, kind: &str) -> bool {
    conditions(&job.status)
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

fn condition_reason(job: &JobView, kind: &str) -> String {
    conditions(&job.status)
        .iter()
        .find(|c| c.type_ == kind)
        .and_then(|c| c.reason.clone())
        .unwrap_or_default()
}

/// The pods of the Job `name`, by name.
async fn job_pods(client: &Client, name: &str) -> anyhow::Result<Vec<v1::Pod>> {
    let mut pods: Vec<v1::Pod> = client
        .list(Kind::Pod, "default")
        .await?
        .items
        .into_iter()
        .filter_map(|o| match skiff_objects::pods::in_model(o).kind {
            Some(Body::Pod(p)) => Some(p),
            _ => None,
        })
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| m.labels.get(JOB_NAME_LABEL).map(String::as_str) == Some(name))
        })
        .collect();
    pods.sort_by_key(|p| name_of(p).to_owned());
    Ok(pods)
}

fn name_of(pod: &v1::Pod) -> &str {
    pod.metadata.as_ref().map_or("", |m| m.name.as_str())
}

fn phase(pod: &v1::Pod) -> &str {
    pod.status.as_ref().map_or("", |s| s.phase.as_str())
}

fn tracked(pod: &v1::Pod) -> bool {
    pod.metadata
        .as_ref()
        .is_some_and(|m| m.finalizers.iter().any(|f| f == TRACKING_FINALIZER))
}

/// The reasons of the Events about the object `name` of `kind`.
async fn event_reasons(client: &Client, kind: &str, name: &str) -> Vec<String> {
    let Ok(list) = client.list(Kind::Event, "default").await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter_map(|o| match &o.kind {
            Some(Body::Generic(g)) => Some(generic::to_json(g)),
            _ => None,
        })
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn time(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap_or(SystemTime::UNIX_EPOCH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_three_of_three_running_two_at_a_time() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let c = one_node("node-jobs").await?;
    apply_yaml(
        &c.master.api_addr,
        c.dir.path(),
        "three",
        &job_yaml(
            "three",
            "  completions: 3\n  parallelism: 2",
            "sleep 2; echo done",
        ),
    )?;
    let most_unfinished = AtomicUsize::new(0);
    let done = wait_for("Job three Complete", Duration::from_secs(120), || async {
        let pods = job_pods(&c.client, "three").await.ok()?;
        let unfinished = pods
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .count();
        most_unfinished.fetch_max(unfinished, Ordering::SeqCst);
        job(&c.client, "three")
            .await
            .filter(|j| holds(j, "Complete"))
    })
    .await
    .with_context(|| c.node.log_tail())?;
    let most_unfinished = most_unfinished.load(Ordering::SeqCst);
    assert!(
        most_unfinished <= 2,
        "{most_unfinished} pods ran at once with parallelism 2"
    );
    assert_eq!(counter(done.status.succeeded), 3);
    assert_eq!(counter(done.status.failed), 0);
    assert!(holds(&done, "SuccessCriteriaMet"));
    assert_eq!(condition_reason(&done, "Complete"), "CompletionsReached");
    assert!(done.status.start_time.is_some() && done.status.completion_time.is_some());
    assert!(done
        .status
        .uncounted_terminated_pods
        .as_ref()
        .is_none_or(uncounted_is_empty));
    let pods = job_pods(&c.client, "three").await?;
    assert_eq!(pods.len(), 3, "one pod per completion");
    for pod in &pods {
        assert_eq!(phase(pod), "Succeeded", "{}", name_of(pod));
        assert!(!tracked(pod), "{} still holds the finalizer", name_of(pod));
        let labels = &pod.metadata.as_ref().unwrap().labels;
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], done.uid);
        assert_eq!(labels["job-name"], "three");
    }
    // `spec.selector` was made from the Job's uid when it was created.
    let stored = c.client.get(Kind::Job, "default", "three").await?;
    let Some(Body::Generic(g)) = stored.kind else {
        anyhow::bail!("the Job is not a generic object");
    };
    let selector = &generic::to_json(&g)["spec"]["selector"]["matchLabels"];
    assert_eq!(
        selector["batch.kubernetes.io/controller-uid"],
        Value::from(done.uid.clone())
    );
    let reasons = event_reasons(&c.client, "Job", "three").await;
    let created = reasons.iter().filter(|r| *r == "SuccessfulCreate").count();
    assert!(created >= 1, "{reasons:?}");
    assert!(reasons.contains(&"Completed".to_owned()), "{reasons:?}");
    let out = ctl(&c.master.api_addr, &["get", "jobs"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("three ") && l.contains("Complete") && l.contains("3/3")),
        "{table}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_backs_off_and_stops_at_its_backoff_limit() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let c = one_node("node-fails").await?;
    apply_yaml(
        &c.master.api_addr,
        c.dir.path(),
        "fails",
        &job_yaml("fails", "  backoffLimit: 1", "exit 3"),
    )?;
    let failed = wait_for("Job fails Failed", Duration::from_secs(120), || async {
        job(&c.client, "fails").await.filter(|j| holds(j, "Failed"))
    })
    .await
    .with_context(|| c.node.log_tail())?;
    assert_eq!(
        counter(failed.status.failed),
        2,
        "backoffLimit 1: the second failure ends it"
    );
    assert_eq!(counter(failed.status.succeeded), 0);
    assert_eq!(
        condition_reason(&failed, "FailureTarget"),
        "BackoffLimitExceeded"
    );
    assert_eq!(condition_reason(&failed, "Failed"), "BackoffLimitExceeded");
    assert!(failed.status.completion_time.is_none());

    // No third attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = job_pods(&c.client, "fails").await?;
    assert_eq!(
        pods.len(),
        2,
        "{:?}",
        pods.iter().map(name_of).collect::<Vec<_>>()
    );
    let mut finished_at = Vec::new();
    for pod in &pods {
        assert_eq!(phase(pod), "Failed", "{}", name_of(pod));
        assert!(!tracked(pod));
        let terminated = pod.status.as_ref().unwrap().container_statuses[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .unwrap();
        assert_eq!(terminated.exit_code, Some(3));
        let created = time(&pod.metadata.as_ref().unwrap().creation_timestamp);
        finished_at.push((created, time(&terminated.finished_at)));
    }
    finished_at.sort();
    // The replacement waited out the 10 s back-off (timestamps are whole
    // seconds).
    let (first, second) = (finished_at[0], finished_at[1]);
    let waited = second.0.duration_since(first.1).unwrap_or_default();
    assert!(
        waited >= Duration::from_secs(9),
        "the second pod came {waited:?} after the first failed"
    );
    let reasons = event_reasons(&c.client, "Job", "fails").await;
    assert!(
        reasons.contains(&"BackoffLimitExceeded".to_owned()),
        "{reasons:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_gives_each_pod_its_completion_index() -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let c = one_node("node-indexed").await?;
    // A required node affinity (which skiff's protobuf model has no place
    // for) that only this node meets: the pods carry it and are placed by
    // it.
    let affinity = "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - {key: kubernetes.io/hostname, operator: In, values: [node-indexed]}\n";
    let yaml = job_yaml(
        "indexed",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
        "echo index=$JOB_COMPLETION_INDEX",
    )
    .replace(
        "      restartPolicy: Never\n",
        &format!("      restartPolicy: Never\n{affinity}"),
    );
    apply_yaml(&c.master.api_addr, c.dir.path(), "indexed", &yaml)?;
    let done = wait_for("Job indexed Complete", Duration::from_secs(120), || async {
        job(&c.client, "indexed")
            .await
            .filter(|j| holds(j, "Complete"))
    })
    .await
    .with_context(|| c.node.log_tail())?;
    assert_eq!(done.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(counter(done.status.succeeded), 3);
    let pods = job_pods(&c.client, "indexed").await?;
    assert_eq!(pods.len(), 3);
    let mut seen = BTreeSet::new();
    for pod in &pods {
        let meta = pod.metadata.as_ref().unwrap();
        let index = meta.annotations["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(
            meta.labels["batch.kubernetes.io/job-completion-index"],
            index
        );
        assert!(
            meta.name.starts_with(&format!("indexed-{index}-")),
            "{}",
            meta.name
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().hostname,
            format!("indexed-{index}")
        );
        let out = ctl(&c.master.api_addr, &["logs", &meta.name]);
        let log = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(log, format!("index={index}"), "{}", meta.name);
        let stored = c.client.get(Kind::Pod, "default", &meta.name).await?;
        let Some(Body::Generic(document)) = stored.kind else {
            anyhow::bail!("pod {} is not a document: {stored:?}", meta.name);
        };
        let terms = &skiff_objects::generic::content(&document)["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(
            terms[0]["matchExpressions"][0]["values"],
            serde_json::json!(["node-indexed"]),
            "{}: the template's affinity",
            meta.name
        );
        seen.insert(index);
    }
    assert_eq!(seen, BTreeSet::from(["0".into(), "1".into(), "2".into()]));
    Ok(())
}

fn cron_yaml() -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: every-minute
spec:
  schedule: "*/1 * * * *"
  timeZone: UTC
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 2
          containers:
          - name: main
            image: {IMAGE}
            imagePullPolicy: Never
            command: ["sh", "-c", "sleep 65"]
"#
    )
}

/// One of the CronJob's Jobs.
#[derive(Clone)]
struct CronRun {
    scheduled: SystemTime,
    created: SystemTime,
    job: Option<JobView>,
}

impl CronRun {
    fn finished(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| holds(j, "Complete") || holds(j, "Failed"))
    }
}

/// The CronJob's Jobs, by name.
async fn cron_jobs(client: &Client) -> anyhow::Result<BTreeMap<String, CronRun>> {
    let mut jobs = BTreeMap::new();
    for object in client.list(Kind::Job, "default").await?.items {
        let owned = object
            .meta()
            .owner_references
            .iter()
            .any(|o| o.kind == "CronJob" && o.name == "every-minute");
        let Some(Body::Generic(g)) = &object.kind else {
            continue;
        };
        if !owned {
            continue;
        }
        let meta = object.meta();
        let scheduled = meta
            .annotations
            .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
            .map(|t| time(t.as_str()))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let run = CronRun {
            scheduled,
            created: time(&meta.creation_timestamp),
            job: JobView::read(g).ok(),
        };
        jobs.insert(meta.name.clone(), run);
    }
    Ok(jobs)
}

fn unix_minutes(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_job_fires_every_minute_and_forbid_waits_for_the_running_job() -> anyhow::Result<()>
{
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let c = one_node("node-cron").await?;
    apply_yaml(&c.master.api_addr, c.dir.path(), "cron", &cron_yaml())?;

    // The first run, at the next minute.
    let first = wait_for("the first run", Duration::from_secs(75), || async {
        cron_jobs(&c.client).await.ok()?.into_iter().next()
    })
    .await
    .with_context(|| c.master.log_tail())?;
    let (
        first_name,
        CronRun {
            scheduled, created, ..
        },
    ) = first;
    assert_eq!(
        first_name,
        format!("every-minute-{}", unix_minutes(scheduled)),
        "named after its minute"
    );
    let late = created.duration_since(scheduled).unwrap_or_default();
    assert!(
        late <= Duration::from_secs(5),
        "created {late:?} after its minute"
    );

    // The next minute comes while it runs (65 s): Forbid skips it, and no
    // second Job runs beside the first.
    let most_unfinished = AtomicUsize::new(0);
    let count_unfinished = |jobs: &BTreeMap<String, CronRun>| {
        let unfinished = jobs.values().filter(|run| !run.finished()).count();
        most_unfinished.fetch_max(unfinished, Ordering::SeqCst);
    };
    wait_for("JobAlreadyActive", Duration::from_secs(75), || async {
        if let Ok(jobs) = cron_jobs(&c.client).await {
            count_unfinished(&jobs);
        }
        let reasons = event_reasons(&c.client, "CronJob", "every-minute").await;
        reasons
            .contains(&"JobAlreadyActive".to_owned())
            .then_some(())
    })
    .await
    .with_context(|| c.master.log_tail())?;
    assert_eq!(
        cron_jobs(&c.client).await?.len(),
        1,
        "no run beside the active one"
    );

    // Once the first has finished, the skipped run starts (late).
    let jobs = wait_for("the second run", Duration::from_secs(90), || async {
        let jobs = cron_jobs(&c.client).await.ok()?;
        count_unfinished(&jobs);
        (jobs.len() == 2).then_some(jobs)
    })
    .await
    .with_context(|| c.node.log_tail())?;
    let (first_done, second) = {
        let mut runs: Vec<CronRun> = jobs.into_values().collect();
        runs.sort_by_key(|run| run.scheduled);
        (runs[0].clone(), runs[1].clone())
    };
    // The first run completed: a run that failed (its pod evicted, say)
    // would also let the second start, but would leave no
    // lastSuccessfulTime; say which it was, and why.
    let first_name = format!("every-minute-{}", unix_minutes(first_done.scheduled));
    let view = match first_done.job.clone().filter(|j| holds(j, "Complete")) {
        Some(view) => view,
        // Read again: the Job may have been listed a moment before its
        // Complete condition.
        None => job(&c.client, &first_name)
            .await
            .context("the first run's Job")?,
    };
    if !holds(&view, "Complete") {
        let mut pods = Vec::new();
        let mut pod_events = Vec::new();
        for pod in job_pods(&c.client, &first_name).await? {
            pods.push(format!(
                "{} {} {:?}",
                name_of(&pod),
                phase(&pod),
                pod.status
            ));
            pod_events.extend(event_reasons(&c.client, "Pod", name_of(&pod)).await);
        }
        anyhow::bail!(
            "the first run did not complete: conditions {:?}; Job events {:?}; pods {pods:?}; \
             pod events {pod_events:?}\n{}\n{}",
            view.status.conditions,
            event_reasons(&c.client, "Job", &first_name).await,
            c.master.log_tail(),
            c.node.log_tail()
        );
    }
    let completed = time(
        &view
            .status
            .completion_time
            .as_ref()
            .map(time_text)
            .unwrap_or_default(),
    );
    assert!(
        second.created >= completed,
        "the second run started before the first finished"
    );
    assert!(unix_minutes(second.scheduled) > unix_minutes(first_done.scheduled));
    assert_eq!(
        most_unfinished.load(Ordering::SeqCst),
        1,
        "two runs were active at once"
    );
    let stored = c
        .client
        .get(Kind::CronJob, "default", "every-minute")
        .await?;
    let Some(Body::Generic(g)) = stored.kind else {
        anyhow::bail!("the CronJob is not a generic object");
    };
    let status = &generic::to_json(&g)["status"];
    assert!(status["lastSuccessfulTime"].is_string(), "{status}");
    assert!(status["lastScheduleTime"].is_string(), "{status}");
    let _ = ctl(&c.master.api_addr, &["delete", "cronjob", "every-minute"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_during_jobs_neither_loses_nor_doubles_a_completion() {
    let mut cluster = MasterCluster::start(3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Three hollow nodes on every master, each pod's run one second long:
    // the scheduler binds the pods, the nodes report them Running, then
    // Succeeded, through whichever master answers.
    let addrs: Vec<String> = cluster.masters.iter().map(|m| m.api_addr.clone()).collect();
    let fleet = HollowFleet::new(addrs);
    let config = HollowConfig {
        complete_after: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut nodes = Vec::new();
    for slot in 0..3 {
        let name = format!("batch-node-{slot}");
        nodes.push(fleet.start(&name, slot, config.clone()).await.unwrap());
    }
    for name in ["batch-a", "batch-b"] {
        apply_yaml(
            &cluster.masters[0].api_addr,
            dir.path(),
            name,
            &job_yaml(name, "  completions: 8\n  parallelism: 3", "true"),
        )
        .unwrap();
    }
    let clients: Vec<Client> = cluster.masters.iter().map(|m| m.client()).collect();

    // Kill the leader once some pods have been counted, mid-way.
    let succeeded = |client: Client| async move {
        let mut total = 0;
        for name in ["batch-a", "batch-b"] {
            total += job(&client, name)
                .await
                .map_or(0, |j| counter(j.status.succeeded));
        }
        total
    };
    wait_for("4 completions counted", Duration::from_secs(60), || {
        let client = clients[0].clone();
        async move { (succeeded(client).await >= 4).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let leader = cluster.leader().await.unwrap();
    cluster.masters[leader].kill();
    let live: Vec<Client> = cluster
        .masters
        .iter()
        .filter(|m| m.pid().is_some())
        .map(|m| m.client())
        .collect();

    for name in ["batch-a", "batch-b"] {
        let done = wait_for(&format!("{name} Complete"), Duration::from_secs(60), || {
            let client = live[0].clone();
            async move { job(&client, name).await.filter(|j| holds(j, "Complete")) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
        assert_eq!(
            counter(done.status.succeeded),
            8,
            "{name}: every completion, once"
        );
        assert_eq!(counter(done.status.failed), 0, "{name}");
        assert!(
            done.status
                .uncounted_terminated_pods
                .as_ref()
                .is_none_or(uncounted_is_empty),
            "{name}"
        );
        let pods = job_pods(&live[0], name).await.unwrap();
        assert_eq!(
            pods.len(),
            8,
            "{name}: one pod per completion, none made twice: {:?}",
            pods.iter().map(name_of).collect::<Vec<_>>()
        );
        assert!(pods.iter().all(|p| phase(p) == "Succeeded"), "{name}");
        assert!(pods.iter().all(|p| !tracked(p)), "{name}: a finalizer left");
        let on_nodes = pods.iter().all(|p| {
            let node = p.spec.as_ref().map_or("", |s| s.node_name.as_str());
            node.starts_with("batch-node-")
        });
        assert!(on_nodes, "{name}: every pod ran on a node");
    }
    drop(nodes);
}
