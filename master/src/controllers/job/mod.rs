//! The Job controller: runs each Job's pods to completion as Kubernetes'
//! Job controller does (what to do is decided in [`decide`], over the
//! typed [`model`] of the Job), one round per reconcile: delete, create,
//! write the status, then remove the tracking finalizer from the pods the
//! status now counts. It records Kubernetes' Events on the Job
//! (`SuccessfulCreate`, `FailedCreate`, `SuccessfulDelete`,
//! `FailedDelete`, `Completed`, `BackoffLimitExceeded`,
//! `DeadlineExceeded`, `PodFailurePolicy`, `Suspended`, `Resumed`),
//! deletes a finished Job once its `ttlSecondsAfterFinished` has passed
//! (Kubernetes' TTL-after-finished controller, in the foreground), and
//! removes the tracking finalizer from pods whose Job is gone, finished or
//! replaced by another of the same name, so that none is held forever.
//! A Job whose `spec.managedBy` names another controller is left to it.
//! The time comes from a [`Clock`], for tests.

pub mod decide;
pub mod model;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::controllers::workload_spec::PodTemplate;
use crate::events::{Clock, SystemClock};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use decide::{has_tracking_finalizer, pod_ref, JobPlan, PodDeletion, PodRef};
use model::{with_status, JobView, TRACKING_FINALIZER};
use skiff_objects::deletion::{DeleteOptions, Propagation};
use skiff_objects::generic::JOB_NAME_LABEL;
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::{IntoObject, Kind, ObjectExt};

/// The component its Events are recorded as.
const COMPONENT: &str = "job-controller";

pub struct JobController {
    ctx: Context,
    clock: Arc<dyn Clock>,
}

impl JobController {
    /// A controller on the system clock.
    pub fn new(ctx: Context) -> JobController {
        JobController::with_clock(ctx, Arc::new(SystemClock))
    }

    pub fn with_clock(ctx: Context, clock: Arc<dyn Clock>) -> JobController {
        JobController { ctx, clock }
    }
}

impl Reconciler for JobController {
    const NAME: &'static str = "job";
    const KIND: Kind = Kind::Job;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Job, Kind::Pod]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Job => ObjectKey::of(object).into_iter().collect(),
            Kind::Pod => controller_of(object, Kind::Job)
                .map(|owner| ObjectKey::new(Kind::Job, &event.namespace, &owner.name))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let now = self.clock.now();
        let object = self.ctx.store.get(Kind::Job, &key.namespace, &key.name)?;
        let uid = object.as_ref().map(|o| o.meta().uid.clone());
        self.release_orphans(key, uid.as_deref()).await?;
        let Some(object) = object else {
            return Ok(Action::Done);
        };
        let Some(Body::Generic(generic)) = &object.kind else {
            return Ok(Action::Done);
        };
        let job = match JobView::read(generic) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "not reconciling a Job that cannot be read");
                return Ok(Action::Done);
            }
        };
        if job.managed_elsewhere() {
            return Ok(Action::Done);
        }
        if job.finished().is_some() {
            return self.after_finish(&job, now).await;
        }
        let pods = self.pods_of(&job);
        if job.unknown_completion_mode() {
            let events = self.ctx.events.for_component(COMPONENT);
            events.warning(
                &object,
                "UnknownCompletionMode",
                "Skipped Job sync because completion mode is unknown",
            );
            return Ok(Action::Done);
        }
        let plan = decide::plan(&job, &pods, now);
        self.apply(&object, generic, &job, plan, now).await
    }
}

impl JobController {
    /// Carries out one round's plan.
    async fn apply(
        &self,
        object: &Object,
        stored: &v1::GenericObject,
        job: &JobView,
        plan: JobPlan,
        now: SystemTime,
    ) -> Result<Action, ReconcileError> {
        let events = self.ctx.events.for_component(COMPONENT);
        let template = if plan.create.is_empty() {
            None
        } else {
            match PodTemplate::read(&job.template) {
                Ok(template) => Some(template),
                Err(e) => {
                    let message = format!("Error creating: the pod template cannot be read: {e}");
                    events.warning(object, "FailedCreate", message);
                    return Ok(Action::Done);
                }
            }
        };
        for deletion in &plan.delete {
            self.delete_pod(object, &job.namespace, deletion).await?;
        }
        if let Some(template) = &template {
            self.create_pods(object, job, template, &plan.create)
                .await?;
        }
        if plan.status != job.status {
            let updated = with_status(stored, &plan.status);
            self.ctx.writer.update_status(updated.into_object()).await?;
        }
        for pod in &plan.release {
            self.release(&job.namespace, pod).await?;
        }
        for event in &plan.events {
            if event.warning {
                events.warning(object, &event.reason, event.message.clone());
            } else {
                events.normal(object, &event.reason, event.message.clone());
            }
        }
        let mut after = plan.requeue_after;
        let finished = JobView {
            status: plan.status,
            ..job.clone()
        };
        if let Some(ttl) = decide::ttl_left(&finished, now) {
            // Look again when it expires (at once when it has).
            let ttl = ttl.max(Duration::from_millis(1));
            after = Some(after.map_or(ttl, |a| a.min(ttl)));
        }
        Ok(after.map_or(Action::Done, Action::RequeueAfter))
    }

    /// The pods `job` controls.
    fn pods_of(&self, job: &JobView) -> Vec<StoredPod> {
        self.pod_objects_of(job)
            .into_iter()
            .filter_map(StoredPod::read)
            .collect()
    }

    /// The pods `job` controls, as stored (not read).
    fn pod_objects_of(&self, job: &JobView) -> Vec<Arc<Object>> {
        let dependents = self.ctx.store.dependents_of(&job.uid).into_iter();
        dependents
            .filter(|o| pods::is_pod(o))
            .filter(|o| controller_of(o, Kind::Job).is_some_and(|r| r.uid == job.uid))
            .collect()
    }

    async fn create_pods(
        &self,
        object: &Object,
        job: &JobView,
        template: &PodTemplate,
        indexes: &[Option<i32>],
    ) -> Result<(), ReconcileError> {
        let events = self.ctx.events.for_component(COMPONENT);
        let owner = controller_reference(object);
        // Concurrent creates share Raft entries.
        let mut creates = tokio::task::JoinSet::new();
        for index in indexes {
            let pod = decide::new_pod(job, template, *index, owner.clone());
            let writer = self.ctx.writer.clone();
            creates.spawn(async move { writer.create_from_template(pod).await });
        }
        let mut failure = None;
        while let Some(joined) = creates.join_next().await {
            match joined {
                Ok(Ok(created)) => {
                    let message = format!("Created pod: {}", created.meta().name);
                    events.normal(object, "SuccessfulCreate", message);
                }
                Ok(Err(e)) => {
                    // A generated name that collided is no one's fault:
                    // the next round tries another.
                    if !e.is_already_exists() {
                        events.warning(object, "FailedCreate", format!("Error creating: {e}"));
                    }
                    failure = Some(e.into());
                }
                Err(source) => {
                    failure = Some(ReconcileError::Task {
                        what: "pod create",
                        source,
                    })
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Deletes a pod, releasing it first when it is not a failure.
    async fn delete_pod(
        &self,
        object: &Object,
        namespace: &str,
        deletion: &PodDeletion,
    ) -> Result<(), ReconcileError> {
        if deletion.release_first {
            self.release(namespace, &deletion.pod).await?;
        }
        let events = self.ctx.events.for_component(COMPONENT);
        let name = &deletion.pod.name;
        let options = DeleteOptions {
            uid: deletion.pod.uid.clone(),
            ..DeleteOptions::default()
        };
        match self
            .ctx
            .writer
            .delete_with(Kind::Pod, namespace, name, options)
            .await
        {
            Ok(_) => {
                events.normal(object, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => {
                events.warning(object, "FailedDelete", format!("Error deleting: {e}"));
                Err(e.into())
            }
        }
    }

    /// Removes the tracking finalizer from the pod, if it is still that
    /// pod and holds it; read again, so that the write is conditional on
    /// what it is now.
    async fn release(&self, namespace: &str, pod: &PodRef) -> Result<(), ReconcileError> {
        let Some(current) = self.ctx.store.get(Kind::Pod, namespace, &pod.name)? else {
            return Ok(());
        };
        let meta = current.meta();
        if meta.uid != pod.uid || !meta.finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
            return Ok(());
        }
        let mut updated = Arc::unwrap_or_clone(current);
        if let Ok(meta) = updated.meta_mut() {
            meta.finalizers.retain(|f| f != TRACKING_FINALIZER);
        }
        match self.ctx.writer.update(updated).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases the pods named for the Job `key` that hold the tracking
    /// finalizer but whose controlling Job is gone (or was another Job of
    /// the same name, not `current`): nobody else would count them.
    async fn release_orphans(
        &self,
        key: &ObjectKey,
        current: Option<&str>,
    ) -> Result<(), ReconcileError> {
        let labels = BTreeMap::from([(JOB_NAME_LABEL.to_owned(), key.name.clone())]);
        for pod in self.ctx.store.select(Kind::Pod, &key.namespace, &labels) {
            let orphaned = controller_of(&pod, Kind::Job)
                .is_some_and(|o| o.name == key.name && Some(o.uid.as_str()) != current);
            if orphaned && pods::is_pod(&pod) && has_tracking_finalizer(pod.meta()) {
                self.release(&key.namespace, &pod_ref(pod.meta())).await?;
            }
        }
        Ok(())
    }

    /// A finished Job: no pod stays held, and the Job goes once its TTL has
    /// passed.
    async fn after_finish(&self, job: &JobView, now: SystemTime) -> Result<Action, ReconcileError> {
        let pods = self.pod_objects_of(job);
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p.meta())) {
            self.release(&job.namespace, &pod_ref(pod.meta())).await?;
        }
        let Some(left) = decide::ttl_left(job, now) else {
            return Ok(Action::Done);
        };
        if !left.is_zero() {
            return Ok(Action::RequeueAfter(left));
        }
        if job.being_deleted {
            return Ok(Action::Done);
        }
        let options = DeleteOptions {
            uid: job.uid.clone(),
            propagation: Some(Propagation::Foreground),
            ..DeleteOptions::default()
        };
        match self
            .ctx
            .writer
            .delete_with(Kind::Job, &job.namespace, &job.name, options)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if e.is_not_found() => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod reconcile_tests {
    use super::*;
    use crate::controllers::recording::{context, Failure, ManualClock, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::deletion::FOREGROUND_DELETION;
    use std::time::UNIX_EPOCH;

    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0 + seconds)
    }

    fn job_yaml(completions: u32, extra: &str) -> String {
        format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: work}}
spec:
  completions: {completions}
  parallelism: 2
{extra}  template:
    metadata: {{labels: {{app: work}}}}
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: busybox}}]
"#
        )
    }

    struct Setup {
        objects: Arc<RecordingObjects>,
        controller: JobController,
        clock: Arc<ManualClock>,
    }

    fn setup(yaml: &str) -> Setup {
        let objects = RecordingObjects::new();
        objects.seed_yaml(yaml);
        let clock = ManualClock::at(at(0));
        let controller = JobController::with_clock(context(&objects), clock.clone());
        Setup {
            objects,
            controller,
            clock,
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Job, "default", "work")
    }

    /// The pods stored (documents), in the protobuf model (to change in
    /// tests).
    fn pods(objects: &RecordingObjects) -> Vec<v1::Pod> {
        objects
            .objects(Kind::Pod)
            .into_iter()
            .filter_map(|o| {
                match skiff_objects::legacy_bodies::for_reader(Object::clone(&o), 6).kind {
                    Some(Body::Pod(p)) => Some(p),
                    _ => None,
                }
            })
            .collect()
    }

    fn read(pod: &v1::Pod) -> StoredPod {
        StoredPod::read(pod.clone().into_object()).expect("a pod")
    }

    fn job(objects: &RecordingObjects) -> JobView {
        match objects
            .get(Kind::Job, "default", "work")
            .unwrap()
            .as_deref()
        {
            Some(Object {
                kind: Some(Body::Generic(g)),
            }) => JobView::read(g).unwrap(),
            other => panic!("no Job: {other:?}"),
        }
    }

    /// Plays the node: every pod of the Job exits with `exit_code` now.
    fn finish_all(objects: &RecordingObjects, exit_code: i32, now: SystemTime) {
        for mut pod in pods(objects) {
            let status = pod.status.get_or_insert_with(Default::default);
            status.phase = if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            }
            .into();
            status.container_statuses = vec![v1::ContainerStatus {
                name: "main".into(),
                state: Some(v1::ContainerState {
                    terminated: Some(Box::new(v1::ContainerStateTerminated {
                        exit_code: Some(exit_code),
                        finished_at: skiff_objects::rfc3339(now),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }];
            // Written as the writer stores it: the pods are documents.
            let written = skiff_objects::legacy_bodies::to_document(pod.into_object());
            objects.write(WriteOp::UpdateStatus, written).unwrap();
        }
    }

    fn conditions(view: &JobView) -> Vec<String> {
        view.status
            .conditions
            .iter()
            .flatten()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect()
    }

    #[tokio::test]
    async fn a_job_runs_its_pods_counts_them_through_the_finalizer_and_completes() {
        let s = setup(&job_yaml(2, ""));
        let action = s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(action, Action::Done);
        let created = pods(&s.objects);
        assert_eq!(created.len(), 2);
        let uid = job(&s.objects).uid;
        for pod in &created {
            let meta = pod.metadata.as_ref().unwrap();
            assert!(meta.name.starts_with("work-"), "{}", meta.name);
            assert_eq!(meta.labels["app"], "work");
            assert_eq!(meta.labels["batch.kubernetes.io/job-name"], "work");
            assert_eq!(meta.labels["batch.kubernetes.io/controller-uid"], uid);
            assert_eq!(meta.finalizers, [TRACKING_FINALIZER]);
            let owner = controller_of(&pod.clone().into_object(), Kind::Job)
                .cloned()
                .unwrap();
            assert_eq!(owner.uid, uid);
        }
        assert_eq!(
            s.objects.event_reasons(),
            ["SuccessfulCreate", "SuccessfulCreate"]
        );
        let running = job(&s.objects);
        assert_eq!(running.status.active, Some(2));
        assert_eq!(
            running
                .status
                .start_time
                .as_ref()
                .map(model::time_text)
                .as_deref(),
            Some(skiff_objects::rfc3339(at(0)).as_str())
        );

        s.clock.set(at(5));
        finish_all(&s.objects, 0, at(4));
        s.controller.reconcile(&key()).await.unwrap();
        let met = job(&s.objects);
        assert_eq!(conditions(&met), ["SuccessCriteriaMet=True"]);
        let uncounted = met.status.uncounted_terminated_pods.unwrap();
        assert_eq!(uncounted.succeeded.map_or(0, |s| s.len()), 2);
        assert!(
            pods(&s.objects)
                .iter()
                .all(|p| !decide::has_tracking_finalizer(read(p).meta())),
            "released once the status names them"
        );

        s.controller.reconcile(&key()).await.unwrap();
        let done = job(&s.objects);
        assert_eq!(done.status.succeeded, Some(2));
        assert_eq!(
            conditions(&done),
            ["SuccessCriteriaMet=True", "Complete=True"]
        );
        assert!(done.status.completion_time.is_some());
        assert_eq!(s.objects.event_reasons().last().unwrap(), "Completed");
        s.objects.clear_writes();
        s.controller.reconcile(&key()).await.unwrap();
        assert!(
            s.objects.writes().is_empty(),
            "a finished Job stays as it is"
        );
    }

    #[tokio::test]
    async fn a_leader_change_before_the_finalizer_removal_neither_loses_nor_doubles_a_pod() {
        let s = setup(&job_yaml(1, ""));
        s.controller.reconcile(&key()).await.unwrap();
        finish_all(&s.objects, 0, at(1));
        // The status names the pod, then the leader goes before the
        // finalizer removal is written.
        s.objects
            .fail_next(WriteOp::Update, Kind::Pod, None, Failure::Unavailable);
        assert!(s.controller.reconcile(&key()).await.is_err());
        let cut = job(&s.objects);
        assert_eq!(
            cut.status
                .uncounted_terminated_pods
                .unwrap()
                .succeeded
                .map_or(0, |s| s.len()),
            1
        );
        assert!(pods(&s.objects)
            .iter()
            .all(|p| decide::has_tracking_finalizer(read(p).meta())));

        // The next leader's controller picks it up from the store alone.
        let next = JobController::with_clock(context(&s.objects), s.clock.clone());
        for _ in 0..3 {
            next.reconcile(&key()).await.unwrap();
        }
        let done = job(&s.objects);
        assert_eq!(done.status.succeeded, Some(1), "counted exactly once");
        assert_eq!(model::counter(done.status.failed), 0);
        assert!(model::uncounted_is_empty(
            &done.status.uncounted_terminated_pods.unwrap()
        ));
        assert_eq!(pods(&s.objects).len(), 1, "no pod more");
        let completed = s
            .objects
            .event_reasons()
            .into_iter()
            .filter(|r| r == "Completed")
            .count();
        assert_eq!(completed, 1);
    }

    #[tokio::test]
    async fn pods_of_a_job_that_is_gone_or_was_replaced_are_let_go() {
        let s = setup(&job_yaml(2, ""));
        s.controller.reconcile(&key()).await.unwrap();
        let old: Vec<String> = pods(&s.objects)
            .iter()
            .map(|p| p.metadata.as_ref().unwrap().name.clone())
            .collect();
        s.objects.remove(Kind::Job, "default", "work", "").unwrap();
        // Another Job of the same name.
        s.objects.seed_yaml(&job_yaml(1, ""));
        s.controller.reconcile(&key()).await.unwrap();
        let now = pods(&s.objects);
        for pod in &now {
            let meta = pod.metadata.as_ref().unwrap();
            let held = decide::has_tracking_finalizer(read(pod).meta());
            assert_eq!(held, !old.contains(&meta.name), "{}", meta.name);
        }
        assert_eq!(now.len(), 3, "the new Job's pod beside the old two");
        // And with no Job at all.
        s.objects.remove(Kind::Job, "default", "work", "").unwrap();
        s.controller.reconcile(&key()).await.unwrap();
        assert!(pods(&s.objects)
            .iter()
            .all(|p| !decide::has_tracking_finalizer(read(p).meta())));
    }

    #[tokio::test]
    async fn a_finished_job_is_deleted_in_the_foreground_once_its_ttl_has_passed() {
        let finished = "  ttlSecondsAfterFinished: 60\n";
        let s = setup(&job_yaml(1, finished));
        let mut stored = s.objects.objects(Kind::Job).remove(0);
        if let Some(Body::Generic(g)) = &mut stored.kind {
            let mut content = skiff_objects::generic::content(g);
            content.insert(
                "status".into(),
                serde_json::json!({"conditions": [{"type": "Complete", "status": "True",
                    "lastTransitionTime": skiff_objects::rfc3339(at(100))}]}),
            );
            skiff_objects::generic::set_content(g, &content);
        }
        s.objects.write(WriteOp::UpdateStatus, stored).unwrap();
        s.clock.set(at(130));
        let action = s.controller.reconcile(&key()).await.unwrap();
        assert_eq!(action, Action::RequeueAfter(Duration::from_secs(30)));
        s.clock.set(at(161));
        s.controller.reconcile(&key()).await.unwrap();
        let marked = s
            .objects
            .get(Kind::Job, "default", "work")
            .unwrap()
            .unwrap();
        assert!(!marked.meta().deletion_timestamp.is_empty());
        assert_eq!(marked.meta().finalizers, [FOREGROUND_DELETION]);
    }

    #[tokio::test]
    async fn a_failing_job_backs_off_then_fails_with_its_reason_as_an_event() {
        let s = setup(&job_yaml(1, "  backoffLimit: 0\n"));
        s.controller.reconcile(&key()).await.unwrap();
        finish_all(&s.objects, 2, at(1));
        s.clock.set(at(2));
        for _ in 0..2 {
            s.controller.reconcile(&key()).await.unwrap();
        }
        let failed = job(&s.objects);
        assert_eq!(conditions(&failed), ["FailureTarget=True", "Failed=True"]);
        assert_eq!(failed.status.failed, Some(1));
        let last = s.objects.events().pop().unwrap();
        assert_eq!(last.reason, "BackoffLimitExceeded");
        assert_eq!(last.event_type, crate::events::EventType::Warning);
        assert_eq!(pods(&s.objects).len(), 1, "never replaced");
    }
}
