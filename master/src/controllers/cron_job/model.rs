//! A CronJob as the CronJob controller sees it: a typed model of its
//! `spec` and of the `status` the controller writes, read from the JSON of
//! the stored generic object, and a summary of each Job it made.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_proto::v1::GenericObject;

use crate::controllers::job::model::{finished_condition, time_text, JobView};
use skiff_objects::generic;

/// The annotation with the time a CronJob's Job was scheduled for.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A CronJob's `spec` (Kubernetes' defaults are set on every stored one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CronJobSpec {
    pub schedule: String,
    pub time_zone: Option<String>,
    pub starting_deadline_seconds: Option<i64>,
    pub concurrency_policy: Option<String>,
    pub suspend: Option<bool>,
    pub successful_jobs_history_limit: Option<i32>,
    pub failed_jobs_history_limit: Option<i32>,
    /// The Job template (`metadata` and `spec`), as sent.
    pub job_template: Value,
}

/// A CronJob's `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CronJobStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<JobReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
}

/// An entry of `status.active`: an `ObjectReference` to a Job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
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
    pub spec: CronJobSpec,
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
        let spec = match content.remove("spec") {
            Some(spec) => serde_json::from_value(spec).map_err(unreadable)?,
            None => CronJobSpec::default(),
        };
        let status = match content.remove("status") {
            Some(Value::Null) | None => CronJobStatus::default(),
            Some(status) => serde_json::from_value(status).map_err(unreadable)?,
        };
        Ok(CronJobView {
            being_deleted: !meta.deletion_timestamp.is_empty(),
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            creation_timestamp: meta.creation_timestamp,
            spec,
            status,
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
        status.active.push(JobReference {
            kind: "Job".into(),
            name: "nightly-29000000".into(),
            uid: "j1".into(),
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
