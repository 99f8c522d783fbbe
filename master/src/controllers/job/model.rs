//! A Job as the Job controller (and the CronJob controller, which reads
//! the Jobs it made) sees it: a typed model of the parts of `spec` they act
//! on and of the `status` the Job controller writes, read from the JSON of
//! the stored generic object (which keeps everything else as sent), and
//! the names Kubernetes gives the labels, annotations and finalizer of Job
//! pods.

use serde::{Deserialize, Serialize};
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

/// The parts of a Job's `spec` the controller acts on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobSpec {
    pub parallelism: Option<i32>,
    pub completions: Option<i32>,
    pub active_deadline_seconds: Option<i64>,
    pub backoff_limit: Option<i32>,
    pub completion_mode: Option<String>,
    pub suspend: Option<bool>,
    pub ttl_seconds_after_finished: Option<i64>,
    pub pod_failure_policy: Option<PodFailurePolicy>,
    pub pod_replacement_policy: Option<String>,
    /// Another controller runs this Job when it names one but
    /// [`JOB_CONTROLLER`].
    pub managed_by: Option<String>,
    /// The pod template, as sent.
    pub template: Value,
}

/// `spec.podFailurePolicy`: rules, in order, for what a failed pod means.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodFailurePolicy {
    pub rules: Vec<PodFailurePolicyRule>,
}

/// One rule: an action (`FailJob`, `Ignore`, `Count`, `FailIndex`) for
/// failures with these exit codes or pod conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodFailurePolicyRule {
    pub action: String,
    pub on_exit_codes: Option<OnExitCodes>,
    pub on_pod_conditions: Vec<OnPodCondition>,
}

/// Exit codes (`In` or `NotIn` the values) of a container (any when no
/// name is given).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnExitCodes {
    pub container_name: Option<String>,
    pub operator: String,
    pub values: Vec<i32>,
}

/// A pod condition of this type with this status (`True` when none is
/// given).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OnPodCondition {
    pub r#type: String,
    pub status: String,
}

/// A Job's `status`, as the controller writes it: Kubernetes' fields and
/// omissions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub active: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub succeeded: i32,
    #[serde(skip_serializing_if = "is_zero")]
    pub failed: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminating: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub completed_indexes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncounted_terminated_pods: Option<UncountedTerminatedPods>,
}

/// The uids of finished pods counted in neither `succeeded` nor `failed`
/// yet: they still hold the tracking finalizer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UncountedTerminatedPods {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub succeeded: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

impl UncountedTerminatedPods {
    pub fn is_empty(&self) -> bool {
        self.succeeded.is_empty() && self.failed.is_empty()
    }
}

/// One of a Job's conditions (`Complete`, `Failed`, `SuccessCriteriaMet`,
/// `FailureTarget`, `Suspended`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobCondition {
    pub r#type: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_probe_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl JobCondition {
    /// A condition that holds (or not) since `now`.
    pub fn new(kind: &str, holds: bool, reason: &str, message: &str, now: &str) -> JobCondition {
        JobCondition {
            r#type: kind.to_owned(),
            status: String::from(if holds { "True" } else { "False" }),
            last_probe_time: now.to_owned(),
            last_transition_time: now.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    pub fn holds(&self) -> bool {
        self.status == "True"
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A Job as read from its stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    pub spec: JobSpec,
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
        let spec = match content.remove("spec") {
            Some(spec) => serde_json::from_value(spec).map_err(unreadable)?,
            None => JobSpec::default(),
        };
        let status = match content.remove("status") {
            Some(Value::Null) | None => JobStatus::default(),
            Some(status) => serde_json::from_value(status).map_err(unreadable)?,
        };
        Ok(JobView {
            being_deleted: !meta.deletion_timestamp.is_empty(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            spec,
            status,
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
        self.spec.template["spec"]["restartPolicy"]
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
    status
        .conditions
        .iter()
        .find(|c| (c.r#type == "Complete" || c.r#type == "Failed") && c.holds())
}

/// `object` with `status` as its status.
pub fn with_status(object: &GenericObject, status: &JobStatus) -> GenericObject {
    let mut updated = object.clone();
    let mut content = generic::content(&updated);
    match serde_json::to_value(status) {
        Ok(value) => {
            content.insert("status".to_owned(), value);
        }
        Err(_) => {
            content.remove("status");
        }
    }
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
        assert_eq!(rules[0].on_pod_conditions[0].r#type, "DisruptionTarget");
        assert_eq!(view.status.succeeded, 1);
        assert_eq!(
            view.status
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .failed,
            ["p1"]
        );

        let mut status = view.status.clone();
        status.ready = Some(0);
        status.conditions.push(JobCondition::new(
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
            reread.finished().map(|c| c.r#type.as_str()),
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
