//! A CronJob as the CronJob controller sees it: a typed model of its
//! `spec` and of the `status` the controller writes, read from the JSON of
//! the stored generic object, and a summary of each Job it made.

use serde_json::Value;
use skiff_proto::v1::GenericObject;

use crate::controllers::job::model::{finished_condition, time_text, JobView};
use skiff_objects::{generic, typed};

/// The annotation with the time a CronJob's Job was scheduled for.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A CronJob's `spec` and `status`: Kubernetes' types.
pub use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};
/// An entry of `status.active`: an `ObjectReference` to a Job.
pub use k8s_openapi::api::core::v1::ObjectReference as JobReference;

/// The Jobs `status.active` lists (none when unset).
pub fn active(status: &CronJobStatus) -> &[JobReference] {
    status.active.as_deref().unwrap_or_default()
}

/// `status.active`, to change.
pub fn active_mut(status: &mut CronJobStatus) -> &mut Vec<JobReference> {
    status.active.get_or_insert_with(Vec::new)
}

/// A reference's uid (`""` when unset).
pub fn uid_of(reference: &JobReference) -> &str {
    reference.uid.as_deref().unwrap_or("")
}

/// A reference's name (`""` when unset).
pub fn name_of(reference: &JobReference) -> &str {
    reference.name.as_deref().unwrap_or("")
}

/// `status` as Kubernetes writes it: an empty `active` left out.
pub fn with_kubernetes_omissions(mut status: CronJobStatus) -> CronJobStatus {
    status.active = status.active.filter(|a| !a.is_empty());
    status
}

/// A CronJob as read from its stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct CronJobView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub creation_timestamp: String,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    /// Its spec, but for the Job template: Kubernetes' type.
    pub spec: CronJobSpec,
    /// `spec.jobTemplate` (`metadata` and `spec`), as stored.
    pub job_template: Value,
    /// Its status, with Kubernetes' omissions.
    pub status: CronJobStatus,
}

/// A CronJob whose spec or status has fields of the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("CronJob {namespace}/{name} cannot be read: {source}")]
pub struct UnreadableCronJob {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

impl CronJobView {
    /// Reads the CronJob held in `object`.
    pub fn read(object: &GenericObject) -> Result<CronJobView, UnreadableCronJob> {
        let meta = object.metadata.clone().unwrap_or_default();
        let mut content = generic::content(object);
        let unreadable = |source| UnreadableCronJob {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            source,
        };
        let mut spec = content.remove("spec").unwrap_or(Value::Null);
        let job_template = typed::take_member(&mut spec, "jobTemplate");
        let spec = match spec {
            Value::Null => CronJobSpec::default(),
            spec => typed::cron_job_spec(spec).map_err(unreadable)?,
        };
        let status = match content.remove("status") {
            Some(Value::Null) | None => CronJobStatus::default(),
            Some(status) => typed::decode(status).map_err(unreadable)?,
        };
        Ok(CronJobView {
            being_deleted: !meta.deletion_timestamp.is_empty(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            creation_timestamp: meta.creation_timestamp,
            spec,
            job_template,
            status: with_kubernetes_omissions(status),
        })
    }

    /// `concurrencyPolicy` (`Allow` when unset).
    pub fn concurrency_policy(&self) -> &str {
        self.spec.concurrency_policy.as_deref().unwrap_or("Allow")
    }

    /// `suspend: true`.
    pub fn suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }
}

/// `object` with `status` as its status.
pub fn with_status(object: &GenericObject, status: &CronJobStatus) -> GenericObject {
    let mut updated = object.clone();
    let mut content = generic::content(&updated);
    let status = with_kubernetes_omissions(status.clone());
    content.insert("status".to_owned(), typed::encode(&status));
    generic::set_content(&mut updated, &content);
    updated
}

/// How a Job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Complete,
    Failed,
}

impl JobOutcome {
    pub fn name(self) -> &'static str {
        match self {
            JobOutcome::Complete => "Complete",
            JobOutcome::Failed => "Failed",
        }
    }
}

/// What the CronJob controller needs to know of one of its Jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildJob {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// `None` while it runs.
    pub outcome: Option<JobOutcome>,
    pub start_time: Option<String>,
    pub completion_time: Option<String>,
}

impl ChildJob {
    /// The summary of the Job `job`, stored at `resource_version`.
    pub fn of(job: &JobView, resource_version: &str) -> ChildJob {
        let outcome = finished_condition(&job.status).map(|c| {
            if c.type_ == "Complete" {
                JobOutcome::Complete
            } else {
                JobOutcome::Failed
            }
        });
        ChildJob {
            name: job.name.clone(),
            uid: job.uid.clone(),
            resource_version: resource_version.to_owned(),
            outcome,
            start_time: job.status.start_time.as_ref().map(time_text),
            completion_time: job.status.completion_time.as_ref().map(time_text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cron_job_is_read_with_its_status_and_written_back_without_empty_fields() {
        let mut unknown = Vec::new();
        let object = generic::from_json(
            skiff_objects::Kind::CronJob,
            json!({
                "apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "nightly", "namespace": "default", "uid": "c1",
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin",
                         "concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {}}},
                "status": {"lastScheduleTime": "2026-01-02T02:00:00Z"}
            }),
            &mut unknown,
        )
        .unwrap();
        let view = CronJobView::read(&object).unwrap();
        assert_eq!(view.spec.schedule, "0 3 * * *");
        assert_eq!(view.spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(view.concurrency_policy(), "Forbid");
        assert_eq!(view.creation_timestamp, "2026-01-01T00:00:00Z");
        assert!(!view.suspended());
        let mut status = view.status.clone();
        active_mut(&mut status).push(JobReference {
            kind: Some("Job".into()),
            name: Some("nightly-29000000".into()),
            uid: Some("j1".into()),
            ..JobReference::default()
        });
        let written = with_status(&object, &status);
        assert_eq!(
            generic::content(&written)["status"],
            json!({"lastScheduleTime": "2026-01-02T02:00:00Z",
                   "active": [{"kind": "Job", "name": "nightly-29000000", "uid": "j1"}]})
        );
    }
}
