//! The CronJob controller: creates each CronJob's Jobs on its schedule as
//! Kubernetes' CronJob controller does (what to do is decided in
//! [`decide`], over the typed [`model`]), one round per reconcile: delete
//! the Jobs a `Replace` policy replaces, create the Job due (a name that
//! already exists is its own Job, made before a leader change: recorded,
//! not made twice), delete finished Jobs beyond the history limits, write
//! the status. It records Kubernetes' Events on the CronJob
//! (`SuccessfulCreate`, `FailedCreate`, `SuccessfulDelete`,
//! `FailedDelete`, `SawCompletedJob`, `MissingJob`, `UnexpectedJob`,
//! `JobAlreadyActive`, `MissSchedule`, `TooManyMissedTimes`,
//! `UnparseableSchedule`, `UnknownTimeZone`) and looks again 100 ms after
//! the next scheduled time. Schedules without a time zone run in the
//! master's own zone (Kubernetes: the controller manager's); the time comes
//! from a [`Clock`], for tests.

pub mod decide;
pub mod model;

use std::sync::Arc;

use jiff::tz::TimeZone;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::job::model::JobView;
use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::events::{Clock, SystemClock};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use decide::CronPlan;
use model::{with_status, ChildJob, CronJobView, JobReference};
use skiff_objects::cron_schedule::time_zone;
use skiff_objects::deletion::{DeleteOptions, Propagation};
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::{body_kind, IntoObject, Kind, ObjectExt};

/// The component its Events are recorded as.
const COMPONENT: &str = "cronjob-controller";

pub struct CronJobController {
    ctx: Context,
    clock: Arc<dyn Clock>,
    /// The zone of schedules that name none.
    default_zone: TimeZone,
}

impl CronJobController {
    /// A controller on the system clock, running schedules without a time
    /// zone in this machine's (UTC when it has none configured).
    pub fn new(ctx: Context) -> CronJobController {
        let zone = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        CronJobController::with_clock(ctx, Arc::new(SystemClock), zone)
    }

    pub fn with_clock(
        ctx: Context,
        clock: Arc<dyn Clock>,
        default_zone: TimeZone,
    ) -> CronJobController {
        CronJobController {
            ctx,
            clock,
            default_zone,
        }
    }
}

impl Reconciler for CronJobController {
    const NAME: &'static str = "cronjob";
    const KIND: Kind = Kind::CronJob;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::CronJob, Kind::Job]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::CronJob => ObjectKey::of(object).into_iter().collect(),
            Kind::Job => controller_of(object, Kind::CronJob)
                .map(|owner| ObjectKey::new(Kind::CronJob, &event.namespace, &owner.name))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let now = self.clock.now();
        let Some(object) = self
            .ctx
            .store
            .get(Kind::CronJob, &key.namespace, &key.name)?
        else {
            // Deleted: the garbage collector removes its Jobs.
            return Ok(Action::Done);
        };
        let Some(Body::Generic(stored)) = &object.kind else {
            return Ok(Action::Done);
        };
        let cron_job = match CronJobView::read(stored) {
            Ok(cron_job) => cron_job,
            Err(e) => {
                tracing::warn!(error = %e, "not reconciling a CronJob that cannot be read");
                return Ok(Action::Done);
            }
        };
        let jobs = self.jobs_of(&cron_job);
        let plan = decide::plan(&cron_job, &jobs, now, &time_zone, &self.default_zone);
        self.apply(&object, stored, &cron_job, plan).await
    }
}

impl CronJobController {
    /// The Jobs `cron_job` controls.
    fn jobs_of(&self, cron_job: &CronJobView) -> Vec<ChildJob> {
        self.ctx
            .store
            .dependents_of(&cron_job.uid)
            .iter()
            .filter(|o| controller_of(o, Kind::CronJob).is_some_and(|r| r.uid == cron_job.uid))
            .filter_map(|o| match &o.kind {
                Some(body @ Body::Generic(job)) if body_kind(body) == Some(Kind::Job) => {
                    let view = JobView::read(job).ok()?;
                    Some(ChildJob::of(&view, &o.meta().resource_version))
                }
                _ => None,
            })
            .collect()
    }

    /// Carries out one round's plan.
    async fn apply(
        &self,
        object: &Object,
        stored: &v1::GenericObject,
        cron_job: &CronJobView,
        plan: CronPlan,
    ) -> Result<Action, ReconcileError> {
        let events = self.ctx.events.for_component(COMPONENT);
        let namespace = &cron_job.namespace;
        let mut status = plan.status.clone();
        for job in &plan.replace {
            self.delete_job(object, namespace, model::name_of(job), model::uid_of(job))
                .await?;
        }
        if let (Some(run), Some(zone)) = (&plan.run, &plan.zone) {
            let job = decide::new_job(cron_job, run, zone, controller_reference(object));
            match self.ctx.writer.create(job.into_object()).await {
                Ok(created) => {
                    let message = format!("Created job {}", run.job_name);
                    events.normal(object, "SuccessfulCreate", message);
                    decide::record_run(&mut status, reference_to(&created), run.scheduled);
                }
                Err(e) if e.is_already_exists() => {
                    // Made before, and its status write lost to a leader
                    // change: recorded now, if it is this CronJob's.
                    let existing = self.ctx.store.get(Kind::Job, namespace, &run.job_name)?;
                    if let Some(existing) = existing {
                        let ours = controller_of(&existing, Kind::CronJob)
                            .is_some_and(|o| o.uid == cron_job.uid);
                        if ours {
                            decide::record_run(&mut status, reference_to(&existing), run.scheduled);
                        }
                    }
                }
                Err(e) => {
                    events.warning(object, "FailedCreate", format!("Error creating job: {e}"));
                    return Err(e.into());
                }
            }
        }
        for job in &plan.prune {
            self.delete_job(object, namespace, &job.name, &job.uid)
                .await?;
        }
        if status != cron_job.status {
            let updated = with_status(stored, &status);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        for event in &plan.events {
            if event.warning {
                events.warning(object, &event.reason, event.message.clone());
            } else {
                events.normal(object, &event.reason, event.message.clone());
            }
        }
        Ok(plan
            .requeue_after
            .map_or(Action::Done, Action::RequeueAfter))
    }

    /// Deletes one of its Jobs (its pods after it, in the background).
    async fn delete_job(
        &self,
        object: &Object,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), ReconcileError> {
        let events = self.ctx.events.for_component(COMPONENT);
        let options = DeleteOptions {
            uid: uid.to_owned(),
            propagation: Some(Propagation::Background),
            ..DeleteOptions::default()
        };
        match self
            .ctx
            .writer
            .delete_with(Kind::Job, namespace, name, options)
            .await
        {
            Ok(_) => {
                events.normal(object, "SuccessfulDelete", format!("Deleted job {name}"));
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => {
                events.warning(object, "FailedDelete", format!("Deleted job: {e}"));
                Err(e.into())
            }
        }
    }
}

/// An `ObjectReference` to the Job `job`, as `status.active` lists it.
fn reference_to(job: &Object) -> JobReference {
    let meta = job.meta();
    let set = |field: &str| Some(field.to_owned()).filter(|f| !f.is_empty());
    JobReference {
        kind: set(Kind::Job.name()),
        namespace: set(&meta.namespace),
        name: set(&meta.name),
        uid: set(&meta.uid),
        api_version: set(Kind::Job.api_version()),
        resource_version: set(&meta.resource_version),
        field_path: None,
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::model::SCHEDULED_TIMESTAMP_ANNOTATION;
    use super::*;
    use crate::controllers::recording::{context, Failure, ManualClock, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use std::time::{Duration, SystemTime};

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(text).unwrap()
    }

    fn cron_yaml(schedule: &str, policy: &str) -> String {
        format!(
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: backup, creationTimestamp: "2026-03-01T10:00:30Z"}}
spec:
  schedule: "{schedule}"
  concurrencyPolicy: {policy}
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata: {{labels: {{app: backup}}}}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: main, image: busybox}}]
"#
        )
    }

    struct Setup {
        objects: Arc<RecordingObjects>,
        controller: CronJobController,
        clock: Arc<ManualClock>,
        uid: String,
    }

    fn setup(yaml: &str, now: &str) -> Setup {
        let objects = RecordingObjects::new();
        let uid = objects.seed_yaml(yaml).remove(0).meta().uid.clone();
        let clock = ManualClock::at(at(now));
        let controller =
            CronJobController::with_clock(context(&objects), clock.clone(), TimeZone::UTC);
        Setup {
            objects,
            controller,
            clock,
            uid,
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::CronJob, "default", "backup")
    }

    fn job_names(objects: &RecordingObjects) -> Vec<String> {
        objects
            .objects(Kind::Job)
            .iter()
            .map(|o| o.meta().name.clone())
            .collect()
    }

    fn cron_job(objects: &RecordingObjects) -> CronJobView {
        match objects
            .get(Kind::CronJob, "default", "backup")
            .unwrap()
            .as_deref()
        {
            Some(Object {
                kind: Some(Body::Generic(g)),
            }) => CronJobView::read(g).unwrap(),
            other => panic!("no CronJob: {other:?}"),
        }
    }

    /// Plays the Job controller: the Job `name` completes now.
    fn complete(objects: &RecordingObjects, name: &str, now: &str) {
        let mut job =
            Arc::unwrap_or_clone(objects.get(Kind::Job, "default", name).unwrap().unwrap());
        if let Some(Body::Generic(g)) = &mut job.kind {
            let mut content = skiff_objects::generic::content(g);
            content.insert(
                "status".into(),
                serde_json::json!({"startTime": now, "completionTime": now, "succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True",
                                    "lastTransitionTime": now}]}),
            );
            skiff_objects::generic::set_content(g, &content);
        }
        objects.write(WriteOp::UpdateStatus, job).unwrap();
    }

    #[tokio::test]
    async fn a_due_run_creates_its_job_once_even_when_the_status_write_is_lost() {
        let s = setup(
            &cron_yaml("*/1 * * * *", "Allow"),
            "2026-03-01T10:01:00.200Z",
        );
        s.objects.fail_next(
            WriteOp::UpdateStatus,
            Kind::CronJob,
            None,
            Failure::Unavailable,
        );
        assert!(s.controller.reconcile(&key()).await.is_err());
        assert_eq!(job_names(&s.objects), ["backup-29539321"]);
        assert!(model::active(&cron_job(&s.objects).status).is_empty());

        // Looked at again (by the next leader): the Job is found, not made
        // again, and recorded.
        let action = s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(action, Action::RequeueAfter(Duration::from_millis(59_900)));
        assert_eq!(job_names(&s.objects), ["backup-29539321"]);
        let status = cron_job(&s.objects).status;
        assert_eq!(model::active(&status).len(), 1);
        assert_eq!(
            model::name_of(&model::active(&status)[0]),
            "backup-29539321"
        );
        assert_eq!(
            status
                .last_schedule_time
                .as_ref()
                .map(crate::controllers::job::model::time_text)
                .as_deref(),
            Some("2026-03-01T10:01:00Z")
        );
        let job = s.objects.objects(Kind::Job).remove(0);
        let meta = job.meta();
        assert_eq!(meta.labels["app"], "backup");
        assert_eq!(
            meta.annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            controller_of(&job, Kind::CronJob).map(|o| o.uid.clone()),
            Some(s.uid.clone())
        );
        assert_eq!(
            s.objects.event_reasons(),
            ["SuccessfulCreate", "UnexpectedJob"]
        );
    }

    #[tokio::test]
    async fn forbid_waits_for_the_active_job_and_history_keeps_the_latest() {
        let s = setup(
            &cron_yaml("*/1 * * * *", "Forbid"),
            "2026-03-01T10:01:00.200Z",
        );
        s.controller.reconcile(&key()).await.unwrap();
        s.clock.set(at("2026-03-01T10:02:00.100Z"));
        s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(job_names(&s.objects), ["backup-29539321"], "forbidden");
        assert_eq!(
            s.objects.event_reasons().last().unwrap(),
            "JobAlreadyActive"
        );

        complete(&s.objects, "backup-29539321", "2026-03-01T10:02:20Z");
        s.clock.set(at("2026-03-01T10:02:21Z"));
        s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(
            job_names(&s.objects),
            ["backup-29539321", "backup-29539322"],
            "the 10:02 run, late"
        );
        let status = cron_job(&s.objects).status;
        assert_eq!(
            model::name_of(&model::active(&status)[0]),
            "backup-29539322"
        );
        assert_eq!(
            status
                .last_successful_time
                .as_ref()
                .map(crate::controllers::job::model::time_text)
                .as_deref(),
            Some("2026-03-01T10:02:20Z")
        );

        // With one successful Job kept, the older goes once the next one
        // completes.
        complete(&s.objects, "backup-29539322", "2026-03-01T10:02:40Z");
        s.clock.set(at("2026-03-01T10:02:41Z"));
        s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(job_names(&s.objects), ["backup-29539322"]);
        let reasons = s.objects.event_reasons();
        assert!(
            reasons.contains(&"SuccessfulDelete".to_owned()),
            "{reasons:?}"
        );
    }
}
