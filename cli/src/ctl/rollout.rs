//! `scale`, `rollout status` and `rollout undo` (of Deployments,
//! DaemonSets and StatefulSets), `cordon` and `drain`, as kubectl does
//! them: the client changes the object, the controller does the rest.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skiff_master::client::{Client, ClientError};
use skiff_master::controllers::daemonset::spec::{DaemonSetStatus, StoredStatus};
use skiff_master::controllers::deployment::owned_replicasets;
use skiff_master::controllers::revisions::Revision;
use skiff_master::controllers::statefulset::spec::StatefulSetStatus;
use skiff_objects::disruption_budget::{
    decide_eviction, Budget, BudgetStatusExt, EvictionDecision, VIOLATION_MESSAGE,
};
use skiff_objects::generic;
use skiff_objects::owners::{self, controller_of};
use skiff_objects::pods;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{resource_ref, CtlError, Result};
use skiff_objects::{Kind, ObjectExt};

fn api(context: String) -> impl FnOnce(ClientError) -> CtlError {
    move |source| CtlError::Api { context, source }
}

/// Sets `spec.replicas`, retrying when someone else wrote in between.
pub async fn scale(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<()> {
    if !matches!(
        kind,
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
    ) {
        return Err(CtlError::Usage(format!(
            "{} cannot be scaled",
            kind.plural()
        )));
    }
    let what = resource_ref(kind, name);
    for _ in 0..5 {
        let mut object = client
            .get(kind, namespace, name)
            .await
            .map_err(api(format!("getting {what}")))?;
        skiff_objects::scale::set_replicas(&mut object, replicas)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        match client.update(object).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(api(format!("scaling {what}"))(e)),
        }
    }
    Err(CtlError::Usage(format!("{what} kept changing; try again")))
}

/// Waits for the rollout of a Deployment, a DaemonSet or a StatefulSet
/// (`kind`) to finish, printing progress.
pub async fn status(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let what = resource_ref(kind, name);
    loop {
        let object = client
            .get(kind, namespace, name)
            .await
            .map_err(api(format!("getting {what}")))?;
        let (message, done) = match kind {
            Kind::DaemonSet => daemon_set_progress(&object, name),
            Kind::StatefulSet => stateful_set_progress(&object, name),
            _ => progress(&object, name),
        };
        if message != last {
            writeln!(out, "{message}")?;
            out.flush()?;
            last = message;
        }
        if done {
            if last.starts_with("error: ") {
                return Err(CtlError::Usage(
                    last.trim_start_matches("error: ").to_owned(),
                ));
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CtlError::Usage(format!(
                "timed out after {} waiting for the rollout of {what}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// kubectl's rollout progress message, and whether the rollout is done.
pub fn progress(object: &Object, name: &str) -> (String, bool) {
    // Read in its protobuf model, which holds every field read here.
    let model = skiff_objects::legacy_bodies::replicated_in_model(object);
    let d = match &model.kind {
        Some(Body::Deployment(d)) => d,
        Some(Body::Generic(g)) if g.kind == "Deployment" => {
            return (
                format!("error: deployment {name:?} does not read as skiff reads a Deployment"),
                true,
            )
        }
        _ => return (format!("{name} is not a deployment"), true),
    };
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let generation = object.meta().generation;
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded");
    if stalled && status.observed_generation >= generation {
        return (
            format!("error: deployment {name:?} exceeded its progress deadline"),
            true,
        );
    }
    if status.observed_generation < generation {
        return (
            "Waiting for deployment spec update to be observed...".to_owned(),
            false,
        );
    }
    if status.updated_replicas < want {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                status.updated_replicas
            ),
            false,
        );
    }
    if status.replicas > status.updated_replicas {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                status.replicas - status.updated_replicas
            ),
            false,
        );
    }
    if status.available_replicas < status.updated_replicas {
        return (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                status.available_replicas, status.updated_replicas
            ),
            false,
        );
    }
    (format!("deployment {name:?} successfully rolled out"), true)
}

/// kubectl's rollout progress of a DaemonSet, and whether it is done.
pub fn daemon_set_progress(object: &Object, name: &str) -> (String, bool) {
    let Some(Body::Generic(daemon_set)) = &object.kind else {
        return (format!("{name} is not a daemon set"), true);
    };
    let content = generic::content(daemon_set);
    let strategy = content
        .get("spec")
        .and_then(|spec| spec.pointer("/updateStrategy/type"))
        .and_then(Value::as_str);
    if strategy.is_some_and(|s| s != "RollingUpdate") {
        let only = "rollout status is only available for RollingUpdate strategy type";
        return (format!("error: {only}"), true);
    }
    let status = DaemonSetStatus::read(daemon_set);
    let (updated, desired) = (
        status.updated_number_scheduled.unwrap_or(0),
        status.desired_number_scheduled,
    );
    let available = status.number_available.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < object.meta().generation {
        return (
            "Waiting for daemon set spec update to be observed...".to_owned(),
            false,
        );
    }
    if updated < desired {
        return (
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
            ),
            false,
        );
    }
    if available < desired {
        return (
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
            ),
            false,
        );
    }
    (format!("daemon set {name:?} successfully rolled out"), true)
}

/// kubectl's rollout progress of a StatefulSet, and whether it is done:
/// ready members first, then the partitioned update (kubectl reports any
/// RollingUpdate with a `rollingUpdate` block, partition 0 included, as a
/// partitioned roll out), then the revisions.
pub fn stateful_set_progress(object: &Object, name: &str) -> (String, bool) {
    let Some(Body::Generic(set)) = &object.kind else {
        return (format!("{name} is not a stateful set"), true);
    };
    let content = generic::content(set);
    let spec = content.get("spec").cloned().unwrap_or(Value::Null);
    if spec["updateStrategy"]["type"]
        .as_str()
        .is_some_and(|s| s != "RollingUpdate")
    {
        let only = "rollout status is only available for RollingUpdate strategy type";
        return (format!("error: {only}"), true);
    }
    let status = StatefulSetStatus::read(set);
    let observed = status.observed_generation.unwrap_or(0);
    let ready = i64::from(status.ready_replicas.unwrap_or(0));
    let updated = status.updated_replicas.unwrap_or(0);
    let (update_revision, current_revision) = (
        status.update_revision.unwrap_or_default(),
        status.current_revision.unwrap_or_default(),
    );
    if observed == 0 || observed < object.meta().generation {
        return (
            "Waiting for statefulset spec update to be observed...".to_owned(),
            false,
        );
    }
    let replicas = spec["replicas"].as_i64();
    if let Some(replicas) = replicas {
        if ready < replicas {
            let waiting = replicas - ready;
            return (format!("Waiting for {waiting} pods to be ready..."), false);
        }
    }
    let rolling = &spec["updateStrategy"]["rollingUpdate"];
    if rolling.is_object() {
        if let (Some(replicas), Some(partition)) = (replicas, rolling["partition"].as_i64()) {
            if i64::from(updated) < replicas - partition {
                return (
                    format!(
                        "Waiting for partitioned roll out to finish: {} out of {} new pods have been updated...",
                        updated,
                        replicas - partition
                    ),
                    false,
                );
            }
        }
        return (
            format!("partitioned roll out complete: {updated} new pods have been updated..."),
            true,
        );
    }
    if update_revision != current_revision {
        return (
            format!(
                "waiting for statefulset rolling update to complete {updated} pods at revision {update_revision}..."
            ),
            false,
        );
    }
    (
        format!(
            "statefulset rolling update complete {} pods at revision {current_revision}...",
            status.current_replicas.unwrap_or(0)
        ),
        true,
    )
}

/// Puts the template of an earlier revision back into a Deployment, a
/// DaemonSet or a StatefulSet (`kind`).
pub async fn undo(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    to_revision: Option<u64>,
) -> Result<()> {
    match kind {
        Kind::DaemonSet | Kind::StatefulSet => {
            undo_from_history(client, kind, namespace, name, to_revision).await
        }
        _ => undo_deployment(client, namespace, name, to_revision).await,
    }
}

/// What `kubectl rollout undo daemonset` (or `statefulset`, `kind`) does:
/// the template recorded in its ControllerRevision of that number (by
/// default the one before the newest) becomes its template again.
async fn undo_from_history(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    to_revision: Option<u64>,
) -> Result<()> {
    let noun = match kind {
        Kind::StatefulSet => "stateful set",
        _ => "daemon set",
    };
    let daemon_set = client
        .get(kind, namespace, name)
        .await
        .map_err(api(format!("getting {noun} {name:?}")))?;
    let uid = daemon_set.meta().uid.clone();
    let listed = client
        .list(Kind::ControllerRevision, namespace)
        .await
        .map_err(api("listing controllerrevisions".to_owned()))?;
    let mut revisions: Vec<Revision> = listed
        .items
        .iter()
        .filter(|o| controller_of(o, kind).is_some_and(|r| r.uid == uid))
        .filter_map(|o| match &o.kind {
            Some(Body::Generic(g)) => Some(Revision::read(g)),
            _ => None,
        })
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let target =
        match to_revision {
            Some(n) => revisions
                .iter()
                .find(|r| u64::try_from(r.revision).ok() == Some(n))
                .ok_or_else(|| CtlError::Usage(format!("{noun} {name:?} has no revision {n}")))?,
            None => revisions.iter().rev().nth(1).ok_or_else(|| {
                CtlError::Usage(format!("{noun} {name:?} has no previous revision"))
            })?,
        };
    let Some(mut template) = target.data.pointer("/spec/template").cloned() else {
        return Err(CtlError::Usage(format!(
            "revision {} of {noun} {name:?} records no template",
            target.revision
        )));
    };
    if let Some(fields) = template.as_object_mut() {
        fields.remove("$patch");
    }
    let mut updated = daemon_set;
    if let Some(Body::Generic(g)) = updated.kind.as_mut() {
        let mut content = generic::content(g);
        if let Some(spec) = content.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("template".to_owned(), template);
        }
        generic::set_content(g, &content);
    }
    client
        .update(updated)
        .await
        .map_err(api(format!("rolling back {noun} {name:?}")))?;
    Ok(())
}

/// Puts the template of an earlier revision back into the Deployment.
async fn undo_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    to_revision: Option<u64>,
) -> Result<()> {
    let deployment = client
        .get(Kind::Deployment, namespace, name)
        .await
        .map_err(api(format!("getting deployment {name:?}")))?;
    let uid = deployment.meta().uid.clone();
    let sets = client
        .list(Kind::ReplicaSet, namespace)
        .await
        .map_err(api("listing replicasets".to_owned()))?;
    let owned = owned_replicasets(sets.items, &uid);
    let target = match to_revision {
        Some(n) => owned
            .iter()
            .find(|rs| rs.revision() == n)
            .ok_or_else(|| CtlError::Usage(format!("deployment {name:?} has no revision {n}")))?,
        None => owned.iter().rev().nth(1).ok_or_else(|| {
            CtlError::Usage(format!("deployment {name:?} has no previous revision"))
        })?,
    };
    let template = target.template_without_hash();
    let mut updated = skiff_objects::legacy_bodies::to_document(deployment);
    if let Some(Body::Generic(d)) = updated.kind.as_mut() {
        let mut content = generic::content(d);
        if let Some(spec) = content.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("template".to_owned(), template);
        }
        generic::set_content(d, &content);
    }
    client
        .update(updated)
        .await
        .map_err(api(format!("rolling back deployment {name:?}")))?;
    Ok(())
}

/// Sets or clears `spec.unschedulable` on a node.
pub async fn set_unschedulable(client: &Client, node: &str, unschedulable: bool) -> Result<()> {
    for _ in 0..5 {
        let mut object = client
            .get(Kind::Node, "", node)
            .await
            .map_err(api(format!("getting node {node:?}")))?;
        if let Some(Body::Node(n)) = object.kind.as_mut() {
            n.spec.get_or_insert_with(Default::default).unschedulable = unschedulable;
        }
        match client.update(object).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(api(format!("updating node {node:?}"))(e)),
        }
    }
    Err(CtlError::Usage(format!(
        "node {node:?} kept changing; try again"
    )))
}

/// `kubectl drain`: cordons the node and evicts every pod on it but
/// DaemonSets' (as `--ignore-daemonsets`); pods no controller would
/// recreate only with `force`. Each eviction is what `pods/eviction` does
/// ([`evict`]): it waits while a PodDisruptionBudget allows no disruption,
/// up to `timeout` (zero: for ever).
pub async fn drain(
    client: &Client,
    node: &str,
    force: bool,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    set_unschedulable(client, node, true).await?;
    writeln!(out, "node/{node} cordoned")?;
    let list = client
        .list(Kind::Pod, "")
        .await
        .map_err(api("listing pods".to_owned()))?;
    let (daemons, on_node): (Vec<Object>, Vec<Object>) = list
        .items
        .into_iter()
        .filter(|o| pods::bound_node(o) == node)
        .partition(|o| controller_of(o, Kind::DaemonSet).is_some());
    if !daemons.is_empty() {
        let names: Vec<String> = daemons.iter().map(ObjectExt::display_name).collect();
        let names = names.join(", ");
        writeln!(out, "Warning: ignoring DaemonSet-managed Pods: {names}")?;
    }
    let unmanaged: Vec<String> = on_node
        .iter()
        .filter(|o| owners::controller(o.meta()).is_none())
        .map(|o| o.display_name())
        .collect();
    if !unmanaged.is_empty() && !force {
        return Err(CtlError::Usage(format!(
            "cannot drain node {node:?}: these pods have no controller and would be lost: {}; use --force to delete them",
            unmanaged.join(", ")
        )));
    }
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    for o in on_node {
        evict(client, &o, deadline, out).await?;
        writeln!(out, "pod/{} evicted", o.meta().name)?;
    }
    writeln!(out, "node/{node} drained")?;
    Ok(())
}

/// How long drain waits before asking a PodDisruptionBudget again
/// (kubectl's interval).
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// Evicts `object` (a pod) as `pods/eviction` does: once the
/// PodDisruptionBudget that covers it allows a disruption, it takes one
/// (the budget's status, written conditionally on its resourceVersion, so
/// two drains cannot both take the last one), then deletes the pod (only
/// while it has the uid it was counted with; one already gone or replaced
/// under its name counts as evicted). While
/// the budget allows none it waits, telling so once, until `deadline`.
async fn evict(
    client: &Client,
    object: &Object,
    deadline: Option<tokio::time::Instant>,
    out: &mut dyn Write,
) -> Result<()> {
    if !pods::is_pod(object) {
        return Ok(());
    }
    let meta = object.meta();
    let (namespace, name) = (meta.namespace.as_str(), meta.name.as_str());
    let mut told = false;
    loop {
        // Decided on the pod as it is now, not as listed (it may have
        // become Ready meanwhile). Gone, or replaced under its name (a
        // StatefulSet member): nothing to evict, no disruption to take.
        let now = match client.get(Kind::Pod, namespace, name).await {
            Ok(now) if now.meta().uid == meta.uid => now,
            Ok(_) | Err(ClientError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(api(format!("reading pod {name:?}"))(e)),
        };
        let Some(pod) = pods::StoredPod::read(now) else {
            return Ok(());
        };
        let listed = client
            .list(Kind::PodDisruptionBudget, namespace)
            .await
            .map_err(api("listing poddisruptionbudgets".to_owned()))?;
        let budgets: Vec<Budget> = listed.items.iter().filter_map(Budget::of).collect();
        let budget = match decide_eviction(&pod, &budgets) {
            EvictionDecision::Allowed => break,
            EvictionDecision::Disrupt { budget } => budget,
            EvictionDecision::SeveralBudgets(names) => {
                return Err(CtlError::Usage(format!(
                    "cannot evict pod {name:?}: more than one PodDisruptionBudget selects it ({})",
                    names.join(", ")
                )));
            }
            EvictionDecision::Refused { .. } | EvictionDecision::NotYetCounted { .. } => {
                if !told {
                    writeln!(
                        out,
                        "error when evicting pods/{name:?} -n {namespace:?} (will retry after 5s): {VIOLATION_MESSAGE}"
                    )?;
                    out.flush()?;
                    told = true;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return Err(CtlError::Usage(format!(
                        "cannot evict pod {name:?} in time: {VIOLATION_MESSAGE}"
                    )));
                }
                tokio::time::sleep(EVICTION_RETRY).await;
                continue;
            }
        };
        let stored = listed.items.iter().find(|o| o.meta().name == budget);
        let counted = budgets.iter().find(|b| b.name == budget);
        let (
            Some(Object {
                kind: Some(Body::Generic(stored)),
            }),
            Some(counted),
        ) = (stored, counted)
        else {
            continue;
        };
        let mut status = counted.status.clone();
        status.take_disruption(name, SystemTime::now());
        let written = Object {
            kind: Some(Body::Generic(status.write_into(stored))),
        };
        match client.update_status(written).await {
            Ok(_) => break,
            // Another eviction took one first: count again.
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(api(format!("updating poddisruptionbudget {budget:?}"))(e)),
        }
    }
    // Only the pod the budget was counted for: one recreated under its
    // name meanwhile (a StatefulSet member) is not this eviction's.
    match client
        .delete_with_uid(Kind::Pod, namespace, name, &meta.uid)
        .await
    {
        Ok(_) | Err(ClientError::NotFound(_)) => Ok(()),
        Err(e) if e.is_uid_mismatch() => Ok(()),
        Err(e) => Err(api(format!("evicting pod {name:?}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::manifest::parse_manifest;

    fn daemon_set(strategy: &str, generation: i64, status: &str) -> Object {
        let yaml = format!(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  updateStrategy: {{type: {strategy}}}
  selector: {{matchLabels: {{app: a}}}}
  template:
    metadata: {{labels: {{app: a}}}}
    spec: {{containers: [{{name: a, image: i}}]}}
status: {status}
"#
        );
        let mut manifest = parse_manifest("ds.yaml", &yaml, true).unwrap();
        let mut object = manifest.objects.remove(0);
        if let Ok(meta) = object.meta_mut() {
            meta.generation = generation;
        }
        object
    }

    fn counts(observed: i64, desired: i32, updated: i32, available: i32) -> String {
        format!(
            "{{observedGeneration: {observed}, desiredNumberScheduled: {desired}, updatedNumberScheduled: {updated}, numberAvailable: {available}}}"
        )
    }

    #[test]
    fn a_daemon_sets_rollout_reads_as_kubectl_prints_it() {
        let progress_of = |status: String| {
            let object = daemon_set("RollingUpdate", 2, &status);
            daemon_set_progress(&object, "agent")
        };
        let (message, done) = progress_of(counts(1, 3, 3, 3));
        assert_eq!(
            message,
            "Waiting for daemon set spec update to be observed..."
        );
        assert!(!done);
        let (message, done) = progress_of(counts(2, 3, 1, 1));
        let want = "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...";
        assert_eq!((message.as_str(), done), (want, false));
        let (message, done) = progress_of(counts(2, 3, 3, 2));
        let want = "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available...";
        assert_eq!((message.as_str(), done), (want, false));
        let (message, done) = progress_of(counts(2, 3, 3, 3));
        let want = "daemon set \"agent\" successfully rolled out";
        assert_eq!((message.as_str(), done), (want, true));

        let on_delete = daemon_set("OnDelete", 1, &counts(1, 1, 1, 1));
        let (message, done) = daemon_set_progress(&on_delete, "agent");
        assert!(message.starts_with("error: "), "{message}");
        assert!(done);
    }

    fn stateful_set(rolling: &str, generation: i64, status: &str) -> Object {
        let yaml = format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  replicas: 3
  updateStrategy: {rolling}
  selector: {{matchLabels: {{app: a}}}}
  template:
    metadata: {{labels: {{app: a}}}}
    spec: {{containers: [{{name: a, image: i}}]}}
status: {status}
"#
        );
        let mut manifest = parse_manifest("sts.yaml", &yaml, true).unwrap();
        let mut object = manifest.objects.remove(0);
        if let Ok(meta) = object.meta_mut() {
            meta.generation = generation;
        }
        object
    }

    #[test]
    fn a_stateful_sets_rollout_reads_as_kubectl_prints_it() {
        let partitioned = "{type: RollingUpdate, rollingUpdate: {partition: 1}}";
        let status = |observed: i64, ready: i32, updated: i32| {
            format!("{{observedGeneration: {observed}, readyReplicas: {ready}, updatedReplicas: {updated}, currentRevision: web-a, updateRevision: web-b, currentReplicas: 1}}")
        };
        let progress_of = |strategy: &str, status: String| {
            stateful_set_progress(&stateful_set(strategy, 2, &status), "web")
        };
        let (message, done) = progress_of(partitioned, status(1, 3, 3));
        assert_eq!(
            (message.as_str(), done),
            (
                "Waiting for statefulset spec update to be observed...",
                false
            )
        );
        let (message, done) = progress_of(partitioned, status(2, 1, 0));
        assert_eq!(
            (message.as_str(), done),
            ("Waiting for 2 pods to be ready...", false)
        );
        let (message, done) = progress_of(partitioned, status(2, 3, 1));
        let want =
            "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...";
        assert_eq!((message.as_str(), done), (want, false));
        let (message, done) = progress_of(partitioned, status(2, 3, 2));
        let want = "partitioned roll out complete: 2 new pods have been updated...";
        assert_eq!((message.as_str(), done), (want, true));

        let plain = "{type: RollingUpdate}";
        let (message, done) = progress_of(plain, status(2, 3, 2));
        let want = "waiting for statefulset rolling update to complete 2 pods at revision web-b...";
        assert_eq!((message.as_str(), done), (want, false));
        let complete = "{observedGeneration: 2, readyReplicas: 3, currentReplicas: 3, currentRevision: web-b, updateRevision: web-b}";
        let (message, done) = progress_of(plain, complete.to_owned());
        let want = "statefulset rolling update complete 3 pods at revision web-b...";
        assert_eq!((message.as_str(), done), (want, true));

        let (message, done) = progress_of("{type: OnDelete}", complete.to_owned());
        assert!(message.starts_with("error: "), "{message}");
        assert!(done);
    }
}
