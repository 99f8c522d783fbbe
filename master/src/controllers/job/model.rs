//! A Job as the Job controller (and the CronJob controller, which reads
//! the Jobs it made) sees it: a typed model of the parts of `spec` they act
//! on and of the `status` the Job controller writes, read from the JSON of
//! the stored generic object (which keeps everything else as sent), and
//! the names Kubernetes gives the labels, annotations and finalizer of Job
//! pods.

use serde_json::Value;
use skiff_proto::v1::GenericObject;

use skiff_objects::generic;

/// The finalizer that holds a Job's pod until the Job controller has
/// counted it in the Job's status (`batch.kubernetes.io/job-tracking`).
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The variable with the completion index in every container of an
/// Indexed Job's pods.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The `spec.managedBy` of Jobs this controller runs (or none).
pub const JOB_CONTROLLER: &str = "kubernetes.io/job-controller";

/// A Job's `spec` and `status`, and their parts: Kubernetes' types.
pub use k8s_openapi::api::batch::v1::{
    JobCondition, JobSpec, JobStatus, PodFailurePolicy, PodFailurePolicyRule,
    UncountedTerminatedPods,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_objects::typed;

/// A counter of `status` (`active`, `succeeded`, `failed`): 0 when unset.
pub fn counter(value: Option<i32>) -> i32 {
    value.unwrap_or(0)
}

/// A timestamp in RFC 3339 as the Kubernetes `Time` it is (`None` when it
/// does not read).
pub fn time(text: &str) -> Option<Time> {
    text.parse::<k8s_openapi::jiff::Timestamp>().ok().map(Time)
}

/// A `Time` as Kubernetes writes it (RFC 3339, whole seconds, UTC).
pub fn time_text(time: &Time) -> String {
    skiff_objects::rfc3339(std::time::SystemTime::from(time.0))
}

/// A condition of `kind` that holds (or not) since `now`.
pub fn new_condition(
    kind: &str,
    holds: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> JobCondition {
    let text = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
    JobCondition {
        type_: kind.to_owned(),
        status: String::from(if holds { "True" } else { "False" }),
        last_probe_time: time(now),
        last_transition_time: time(now),
        reason: text(reason),
        message: text(message),
    }
}

/// Whether `condition` holds (`status: "True"`).
pub fn holds(condition: &JobCondition) -> bool {
    condition.status == "True"
}

/// The conditions of `status` (none when unset).
pub fn conditions(status: &JobStatus) -> &[JobCondition] {
    status.conditions.as_deref().unwrap_or_default()
}

/// The conditions of `status`, to change.
pub fn conditions_mut(status: &mut JobStatus) -> &mut Vec<JobCondition> {
    status.conditions.get_or_insert_with(Vec::new)
}

/// The uids of `uncounted`'s succeeded and failed pods.
pub fn uncounted_uids(uncounted: UncountedTerminatedPods) -> (Vec<String>, Vec<String>) {
    (
        uncounted.succeeded.unwrap_or_default(),
        uncounted.failed.unwrap_or_default(),
    )
}

/// Whether `uncounted` lists no pod.
pub fn uncounted_is_empty(uncounted: &UncountedTerminatedPods) -> bool {
    uncounted.succeeded.as_ref().is_none_or(Vec::is_empty)
        && uncounted.failed.as_ref().is_none_or(Vec::is_empty)
}

/// `status` with what Kubernetes leaves out of a Job's status when it
/// writes it left unset: zero `active`, `succeeded` and `failed` counters,
/// empty `completedIndexes`, no conditions, an empty list of uncounted
/// pods (Go's `omitempty`; `ready`, `terminating` and
/// `uncountedTerminatedPods` are pointers and stay when zero or empty).
pub fn with_kubernetes_omissions(mut status: JobStatus) -> JobStatus {
    let nonzero = |n: Option<i32>| n.filter(|n| *n != 0);
    status.active = nonzero(status.active);
    status.succeeded = nonzero(status.succeeded);
    status.failed = nonzero(status.failed);
    status.completed_indexes = status.completed_indexes.filter(|c| !c.is_empty());
    status.conditions = status.conditions.filter(|c| !c.is_empty());
    if let Some(uncounted) = &mut status.uncounted_terminated_pods {
        uncounted.succeeded = uncounted.succeeded.take().filter(|u| !u.is_empty());
        uncounted.failed = uncounted.failed.take().filter(|u| !u.is_empty());
    }
    status
}

/// A Job as read from its stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    /// Its spec, but for the template: Kubernetes' type.
    pub spec: JobSpec,
    /// `spec.template`, as stored (the controller makes pods of it).
    pub template: Value,
    /// Its status, with Kubernetes' omissions.
    pub status: JobStatus,
}

/// A Job whose spec or status has fields of the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("Job {namespace}/{name} cannot be read: {source}")]
pub struct UnreadableJob {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

impl JobView {
    /// Reads the Job held in `object`.
    pub fn read(object: &GenericObject) -> Result<JobView, UnreadableJob> {
        let meta = object.metadata.clone().unwrap_or_default();
        let mut content = generic::content(object);
        let unreadable = |source| UnreadableJob {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            source,
        };
        let mut spec = content.remove("spec").unwrap_or(Value::Null);
        let template = typed::take_member(&mut spec, "template");
        let spec = match spec {
            Value::Null => JobSpec::default(),
            spec => typed::job_spec(spec).map_err(unreadable)?,
        };
        let status = match content.remove("status") {
            Some(Value::Null) | None => JobStatus::default(),
            Some(status) => typed::decode(status).map_err(unreadable)?,
        };
        Ok(JobView {
            being_deleted: !meta.deletion_timestamp.is_empty(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            spec,
            template,
            status: with_kubernetes_omissions(status),
        })
    }

    /// How many pods may run at once (`parallelism`, 1 when unset).
    pub fn parallelism(&self) -> i32 {
        self.spec.parallelism.unwrap_or(1).max(0)
    }

    /// How many failures the Job takes before it fails (`backoffLimit`,
    /// 6 when unset).
    pub fn backoff_limit(&self) -> i32 {
        self.spec.backoff_limit.unwrap_or(6).max(0)
    }

    /// `completionMode: Indexed`.
    pub fn indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some("Indexed")
    }

    /// A completion mode other than `NonIndexed` and `Indexed`.
    pub fn unknown_completion_mode(&self) -> bool {
        !matches!(
            self.spec.completion_mode.as_deref(),
            None | Some("NonIndexed") | Some("Indexed")
        )
    }

    /// `suspend: true`.
    pub fn suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }

    /// `spec.managedBy` names another controller.
    pub fn managed_elsewhere(&self) -> bool {
        self.spec
            .managed_by
            .as_deref()
            .is_some_and(|m| m != JOB_CONTROLLER)
    }

    /// The pod template's `restartPolicy`.
    pub fn restart_policy(&self) -> &str {
        self.template["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("")
    }

    /// The condition that says the Job is finished: `Complete` or
    /// `Failed`, holding.
    pub fn finished(&self) -> Option<&JobCondition> {
        finished_condition(&self.status)
    }
}

/// The `Complete` or `Failed` condition of `status` that holds, if any.
pub fn finished_condition(status: &JobStatus) -> Option<&JobCondition> {
    conditions(status)
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && holds(c))
}

/// `object` with `status` as its status.
pub fn with_status(object: &GenericObject, status: &JobStatus) -> GenericObject {
    let mut updated = object.clone();
    let mut content = generic::content(&updated);
    let status = with_kubernetes_omissions(status.clone());
    content.insert("status".to_owned(), typed::encode(&status));
    generic::set_content(&mut updated, &content);
    updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(body: Value) -> GenericObject {
        let mut unknown = Vec::new();
        generic::from_json(skiff_objects::Kind::Job, body, &mut unknown).unwrap()
    }

    #[test]
    fn a_job_is_read_with_its_defaults_and_written_back_as_kubernetes_writes_it() {
        let object = job(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "backup", "namespace": "default", "uid": "u1"},
            "spec": {"completions": 3, "completionMode": "Indexed",
                     "template": {"spec": {"restartPolicy": "OnFailure"}},
                     "podFailurePolicy": {"rules": [{"action": "Ignore",
                         "onPodConditions": [{"type": "DisruptionTarget"}]}]}},
            "status": {"succeeded": 1, "uncountedTerminatedPods": {"failed": ["p1"]}}
        }));
        let view = JobView::read(&object).unwrap();
        assert_eq!(view.spec.completions, Some(3));
        assert_eq!(view.parallelism(), 1);
        assert_eq!(view.backoff_limit(), 6);
        assert!(view.indexed() && !view.suspended() && !view.unknown_completion_mode());
        assert!(!view.managed_elsewhere());
        assert_eq!(view.restart_policy(), "OnFailure");
        let rules = &view.spec.pod_failure_policy.as_ref().unwrap().rules;
        let patterns = rules[0].on_pod_conditions.as_deref().unwrap();
        assert_eq!(patterns[0].type_, "DisruptionTarget");
        assert_eq!(view.status.succeeded, Some(1));
        let uncounted = view.status.uncounted_terminated_pods.as_ref().unwrap();
        assert_eq!(uncounted.failed.as_deref().unwrap(), ["p1"]);
        assert_eq!(view.template["spec"]["restartPolicy"], "OnFailure");
        assert_eq!(view.spec.template, Default::default(), "kept apart as sent");

        let mut status = view.status.clone();
        status.ready = Some(0);
        status.active = Some(0);
        conditions_mut(&mut status).push(new_condition(
            "Complete",
            true,
            "CompletionsReached",
            "",
            "2026-01-01T00:00:00Z",
        ));
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        let written = with_status(&object, &status);
        let content = generic::content(&written);
        assert_eq!(
            content["status"],
            json!({"succeeded": 1, "ready": 0, "uncountedTerminatedPods": {},
                   "conditions": [{"type": "Complete", "status": "True",
                                   "lastProbeTime": "2026-01-01T00:00:00Z",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z",
                                   "reason": "CompletionsReached"}]})
        );
        // The spec is kept as sent.
        assert_eq!(content["spec"]["completions"], 3);
        let reread = JobView::read(&written).unwrap();
        assert_eq!(
            reread.finished().map(|c| c.type_.as_str()),
            Some("Complete")
        );
    }

    #[test]
    fn a_spec_of_the_wrong_shape_is_an_error_naming_the_job() {
        let mut object = job(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "backup", "namespace": "default"}
        }));
        generic::set_content(
            &mut object,
            &serde_json::from_value(json!({"spec": {"parallelism": "many"}})).unwrap(),
        );
        let e = JobView::read(&object).unwrap_err();
        assert!(e.to_string().contains("default/backup"), "{e}");
        assert!(JobView {
            spec: JobSpec {
                completion_mode: Some("Sorted".into()),
                ..JobSpec::default()
            },
            ..JobView::read(&job(json!({"apiVersion": "batch/v1", "kind": "Job",
                                        "metadata": {"name": "j"}})))
            .unwrap()
        }
        .unknown_completion_mode());
    }
}
