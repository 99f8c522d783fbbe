//! The CronJob controller's decisions, as pure functions of a CronJob, the
//! Jobs it made and the time, following Kubernetes' CronJob controller
//! (v2):
//!
//! - `status.active` follows the Jobs: a finished one leaves it
//!   (`SawCompletedJob`, and `lastSuccessfulTime` for a completed one), one
//!   that is gone too (`MissingJob`); an unfinished Job it does not list
//!   is reported (`UnexpectedJob`);
//! - the run due is the latest time the schedule names at or before now
//!   and after the last one scheduled (or the CronJob's creation), and no
//!   earlier than `startingDeadlineSeconds` ago: so schedules missed while
//!   no master led get at most one catch-up run, inside the starting
//!   deadline (more than 100 missed are reported, `TooManyMissedTimes`);
//! - `concurrencyPolicy`: `Allow` runs it; `Forbid` skips it while a Job
//!   is active (`JobAlreadyActive`; it runs late, once the active Job has
//!   finished, if still due); `Replace` deletes the active Jobs first;
//! - nothing runs while suspended, being deleted, or with a schedule or
//!   time zone that cannot be read (`UnparseableSchedule`,
//!   `UnknownTimeZone`);
//! - the Job is named `<cronjob>-<scheduled time in Unix minutes>`, so a
//!   run is never created twice, and carries its scheduled time (in the
//!   schedule's zone) in `batch.kubernetes.io/cronjob-scheduled-timestamp`;
//! - finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//!   `failedJobsHistoryLimit` (1) are deleted, the oldest first;
//! - the next look is 100 ms after the next scheduled time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::tz::TimeZone;
use serde_json::{Map, Value};
use skiff_proto::v1;

use super::model::{
    active, active_mut, name_of, uid_of, ChildJob, CronJobStatus, CronJobView, JobOutcome,
    JobReference, SCHEDULED_TIMESTAMP_ANNOTATION,
};
use crate::controllers::job::decide::PlannedEvent;
use crate::controllers::job::model::{time, time_text};
use skiff_objects::cron_schedule::{rfc3339_in, CronSchedule, UnknownTimeZone};
use skiff_objects::generic;
use skiff_objects::Kind;

/// How long after a scheduled time the controller looks (Kubernetes'
/// `nextScheduleDelta`), so a clock a little behind still finds it due.
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed runs than this are reported.
const MANY_MISSED: usize = 100;

/// Looks up a time zone by name.
pub type ZoneLookup<'a> = &'a dyn Fn(&str) -> Result<TimeZone, UnknownTimeZone>;

/// A Job to create for the run scheduled at `scheduled` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub scheduled: i64,
    pub job_name: String,
}

/// What one round does, in this order: delete the `replace`d Jobs, create
/// the `run`'s Job, delete the `prune`d ones, write `status` (with the new
/// Job recorded by [`record_run`]), record `events`.
#[derive(Debug, Clone, Default)]
pub struct CronPlan {
    pub status: CronJobStatus,
    pub events: Vec<PlannedEvent>,
    pub replace: Vec<JobReference>,
    pub run: Option<Run>,
    /// The zone the run's scheduled time is written in.
    pub zone: Option<TimeZone>,
    pub prune: Vec<ChildJob>,
    pub requeue_after: Option<Duration>,
}

/// The round for `cron_job` with `jobs`, the Jobs it controls, at `now`;
/// zones are looked up with `zones`, and a schedule that names none runs
/// in `default_zone` (the masters' own).
pub fn plan(
    cron_job: &CronJobView,
    jobs: &[ChildJob],
    now: SystemTime,
    zones: ZoneLookup<'_>,
    default_zone: &TimeZone,
) -> CronPlan {
    let mut plan = CronPlan {
        status: cron_job.status.clone(),
        ..CronPlan::default()
    };
    sync_active(&mut plan, jobs);
    if cron_job.being_deleted {
        return plan;
    }
    plan.prune = prune(cron_job, jobs);

    let spec_zone = match cron_job.spec.time_zone.as_deref().map(zones) {
        Some(Err(e)) => {
            plan.events.push(PlannedEvent::warning(
                "UnknownTimeZone",
                &format!("invalid timeZone: {:?}: {}", e.name, e.reason),
            ));
            return plan;
        }
        Some(Ok(zone)) => Some(zone),
        None => None,
    };
    if cron_job.suspended() {
        return plan;
    }
    let schedule = match CronSchedule::parse(&cron_job.spec.schedule) {
        Ok(schedule) => schedule,
        Err(e) => {
            plan.events.push(PlannedEvent::warning(
                "UnparseableSchedule",
                &format!("unparseable schedule: {:?} : {e}", cron_job.spec.schedule),
            ));
            return plan;
        }
    };
    let zone = match schedule.time_zone().map(zones) {
        Some(Ok(zone)) => zone,
        Some(Err(e)) => {
            plan.events.push(PlannedEvent::warning(
                "UnknownTimeZone",
                &format!("invalid timeZone: {:?}: {}", e.name, e.reason),
            ));
            return plan;
        }
        None => spec_zone.unwrap_or_else(|| default_zone.clone()),
    };

    let now_seconds = unix_seconds(now);
    plan.requeue_after = next_look(&schedule, &zone, now);
    let last = match &plan.status.last_schedule_time {
        Some(time) => time.0.as_second(),
        None => parse_seconds(&cron_job.creation_timestamp).unwrap_or(now_seconds),
    };
    let earliest = match cron_job.spec.starting_deadline_seconds {
        Some(deadline) => last.max(now_seconds.saturating_sub(deadline)),
        None => last,
    };
    let Some(scheduled) = schedule
        .latest_at_or_before(now_seconds, &zone)
        .filter(|t| *t > earliest)
    else {
        return plan;
    };
    if missed_runs(&schedule, &zone, earliest, now_seconds) > MANY_MISSED {
        plan.events.push(PlannedEvent::warning(
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
        ));
    }
    if let Some(deadline) = cron_job.spec.starting_deadline_seconds {
        if scheduled.saturating_add(deadline) < now_seconds {
            let message = format!(
                "Missed scheduled time to start a job: {}",
                rfc3339_in(scheduled, &TimeZone::UTC)
            );
            plan.events
                .push(PlannedEvent::warning("MissSchedule", &message));
            return plan;
        }
    }
    let job_name = job_name(&cron_job.name, scheduled);
    let scheduled_text = skiff_objects::rfc3339(at(scheduled));
    let processed = active(&plan.status).iter().any(|r| name_of(r) == job_name)
        || plan.status.last_schedule_time.as_ref().map(time_text) == Some(scheduled_text);
    if processed {
        return plan;
    }
    match cron_job.concurrency_policy() {
        "Forbid" if !active(&plan.status).is_empty() => {
            plan.events.push(PlannedEvent::normal(
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            ));
            return plan;
        }
        "Replace" => {
            plan.replace = plan.status.active.take().unwrap_or_default();
        }
        _ => {}
    }
    plan.run = Some(Run {
        scheduled,
        job_name,
    });
    plan.zone = Some(zone);
    plan
}

/// Records the run's Job in the status: active, and the last scheduled.
pub fn record_run(status: &mut CronJobStatus, job: JobReference, scheduled: i64) {
    if !active(status).iter().any(|r| r.uid == job.uid) {
        active_mut(status).push(job);
    }
    status.last_schedule_time = time(&skiff_objects::rfc3339(at(scheduled)));
}

/// The Job for `run`, from the CronJob's `jobTemplate`, controlled by
/// `owner`.
pub fn new_job(
    cron_job: &CronJobView,
    run: &Run,
    zone: &TimeZone,
    owner: Option<v1::OwnerReference>,
) -> v1::GenericObject {
    let template = &cron_job.job_template;
    let strings = |value: &Value| -> std::collections::BTreeMap<String, String> {
        value
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut annotations = strings(&template["metadata"]["annotations"]);
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.to_owned(),
        rfc3339_in(run.scheduled, zone),
    );
    let mut job = v1::GenericObject {
        api_version: Kind::Job.api_version().to_owned(),
        kind: Kind::Job.name().to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: run.job_name.clone(),
            namespace: cron_job.namespace.clone(),
            labels: strings(&template["metadata"]["labels"]),
            annotations,
            owner_references: owner.into_iter().collect(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    let spec = match &template["spec"] {
        Value::Null => Value::Object(Map::new()),
        spec => spec.clone(),
    };
    let mut content = Map::new();
    content.insert("spec".to_owned(), spec);
    generic::set_content(&mut job, &content);
    job
}

/// `<cronjob>-<scheduled time in Unix minutes>`.
pub fn job_name(cron_job: &str, scheduled: i64) -> String {
    format!("{cron_job}-{}", scheduled.div_euclid(60))
}

/// Takes finished Jobs out of `status.active`, and lists ones gone.
fn sync_active(plan: &mut CronPlan, jobs: &[ChildJob]) {
    let status = &mut plan.status;
    for job in jobs {
        let listed = active(status).iter().any(|r| uid_of(r) == job.uid);
        match job.outcome {
            None if !listed => plan.events.push(PlannedEvent::warning(
                "UnexpectedJob",
                &format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    job.name
                ),
            )),
            Some(outcome) if listed => {
                active_mut(status).retain(|r| uid_of(r) != job.uid);
                plan.events.push(PlannedEvent::normal(
                    "SawCompletedJob",
                    &format!(
                        "Saw completed job: {}, status: {}",
                        job.name,
                        outcome.name()
                    ),
                ));
            }
            _ => {}
        }
        if job.outcome == Some(JobOutcome::Complete) {
            if let Some(done) = job.completion_time.as_deref() {
                let later = status
                    .last_successful_time
                    .as_ref()
                    .map(|last| last.0.as_second())
                    .is_none_or(|last| parse_seconds(done).is_some_and(|d| d > last));
                if later {
                    status.last_successful_time = time(done);
                }
            }
        }
    }
    let gone: Vec<JobReference> = active(status)
        .iter()
        .filter(|r| !jobs.iter().any(|j| j.uid == uid_of(r)))
        .cloned()
        .collect();
    for reference in gone {
        active_mut(status).retain(|r| r.uid != reference.uid);
        plan.events.push(PlannedEvent::normal(
            "MissingJob",
            &format!("Active job went missing: {}", name_of(&reference)),
        ));
    }
}

/// Finished Jobs beyond the history limits, the oldest (by start time,
/// unstarted last, then name) first.
fn prune(cron_job: &CronJobView, jobs: &[ChildJob]) -> Vec<ChildJob> {
    let limits = [
        (
            JobOutcome::Complete,
            cron_job.spec.successful_jobs_history_limit.unwrap_or(3),
        ),
        (
            JobOutcome::Failed,
            cron_job.spec.failed_jobs_history_limit.unwrap_or(1),
        ),
    ];
    let mut pruned = Vec::new();
    for (outcome, limit) in limits {
        let mut finished: Vec<&ChildJob> =
            jobs.iter().filter(|j| j.outcome == Some(outcome)).collect();
        finished.sort_by_key(|j| {
            let started = j.start_time.as_deref().and_then(parse_seconds);
            (started.is_none(), started, j.name.clone())
        });
        let keep = usize::try_from(limit).unwrap_or(0);
        let excess = finished.len().saturating_sub(keep);
        pruned.extend(finished.into_iter().take(excess).cloned());
    }
    pruned
}

/// How many times the schedule named after `earliest`, up to `now` (counted
/// up to one more than [`MANY_MISSED`]).
fn missed_runs(schedule: &CronSchedule, zone: &TimeZone, earliest: i64, now: i64) -> usize {
    let mut count = 0;
    let mut after = earliest;
    while count <= MANY_MISSED {
        match schedule.next_after(after, zone) {
            Some(t) if t <= now => {
                count += 1;
                after = t;
            }
            _ => break,
        }
    }
    count
}

/// How long until the next scheduled time after `now`, plus
/// [`NEXT_SCHEDULE_DELTA`].
fn next_look(schedule: &CronSchedule, zone: &TimeZone, now: SystemTime) -> Option<Duration> {
    let next = schedule.next_after(unix_seconds(now), zone)?;
    let wait = at(next).duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait + NEXT_SCHEDULE_DELTA)
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let seconds = before.duration().as_secs();
            i64::try_from(seconds).map_or(i64::MIN, |s| -s)
        }
    }
}

fn at(seconds: i64) -> SystemTime {
    let since = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(since)
    } else {
        UNIX_EPOCH.checked_sub(since)
    };
    time.unwrap_or(UNIX_EPOCH)
}

fn parse_seconds(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text).ok().map(unix_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at_text(text: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(text).unwrap()
    }

    fn secs(text: &str) -> i64 {
        unix_seconds(at_text(text))
    }

    fn cron(spec: Value) -> CronJobView {
        CronJobView {
            name: "backup".into(),
            namespace: "default".into(),
            uid: "cj-uid".into(),
            creation_timestamp: "2026-03-01T10:00:30Z".into(),
            being_deleted: false,
            job_template: spec["jobTemplate"].clone(),
            spec: skiff_objects::typed::decode(spec).unwrap(),
            status: CronJobStatus::default(),
        }
    }

    /// The zones this test knows: New York (its rules since 2007) and UTC.
    fn zones(name: &str) -> Result<TimeZone, UnknownTimeZone> {
        match name {
            "America/New_York" => Ok(TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()),
            "UTC" => Ok(TimeZone::UTC),
            other => Err(UnknownTimeZone {
                name: other.to_owned(),
                reason: "not in this test's database".to_owned(),
            }),
        }
    }

    fn plan_at(cron_job: &CronJobView, jobs: &[ChildJob], now: &str) -> CronPlan {
        plan(cron_job, jobs, at_text(now), &zones, &TimeZone::UTC)
    }

    fn child(name: &str, outcome: Option<JobOutcome>, started: &str, done: &str) -> ChildJob {
        let time = |t: &str| (!t.is_empty()).then(|| t.to_owned());
        ChildJob {
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: "7".into(),
            outcome,
            start_time: time(started),
            completion_time: time(done),
        }
    }

    fn reference(job: &ChildJob) -> JobReference {
        JobReference {
            kind: Some("Job".into()),
            namespace: Some("default".into()),
            name: Some(job.name.clone()),
            uid: Some(job.uid.clone()),
            api_version: Some("batch/v1".into()),
            resource_version: Some(job.resource_version.clone()),
            field_path: None,
        }
    }

    fn reasons(plan: &CronPlan) -> Vec<String> {
        plan.events.iter().map(|e| e.reason.clone()).collect()
    }

    fn every_minute(policy: &str) -> CronJobView {
        cron(json!({"schedule": "*/1 * * * *", "concurrencyPolicy": policy}))
    }

    #[test]
    fn a_run_is_due_at_its_minute_and_its_job_named_after_it() {
        let mut cj = every_minute("Allow");
        let early = plan_at(&cj, &[], "2026-03-01T10:00:50Z");
        assert_eq!(early.run, None, "nothing since the creation at 10:00:30");
        assert_eq!(early.requeue_after, Some(Duration::from_millis(10_100)));

        let due = plan_at(&cj, &[], "2026-03-01T10:01:00.200Z");
        let run = due.run.clone().expect("due at 10:01");
        assert_eq!(run.scheduled, 1_772_359_260);
        assert_eq!(run.job_name, "backup-29539321");
        assert_eq!(due.requeue_after, Some(Duration::from_millis(59_900)));
        assert!(due.events.is_empty());

        let job = child(&run.job_name, None, "", "");
        record_run(&mut cj.status, reference(&job), run.scheduled);
        assert_eq!(active(&cj.status), [reference(&job)]);
        assert_eq!(
            cj.status
                .last_schedule_time
                .as_ref()
                .map(time_text)
                .as_deref(),
            Some("2026-03-01T10:01:00Z")
        );
        // Looked at again within the minute: nothing more.
        let again = plan_at(&cj, &[job], "2026-03-01T10:01:30Z");
        assert_eq!(again.run, None);
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn forbid_skips_a_run_while_one_is_active_and_starts_it_late_after() {
        let mut cj = every_minute("Forbid");
        let first = child("backup-29539321", None, "2026-03-01T10:01:01Z", "");
        record_run(&mut cj.status, reference(&first), 1_772_359_260);
        let skipped = plan_at(
            &cj,
            std::slice::from_ref(&first),
            "2026-03-01T10:02:00.100Z",
        );
        assert_eq!(skipped.run, None);
        assert_eq!(reasons(&skipped), ["JobAlreadyActive"]);
        assert!(!skipped.events[0].warning);

        // It finishes at 10:02:30: the 10:02 run starts then, late.
        let done = child(
            "backup-29539321",
            Some(JobOutcome::Complete),
            "2026-03-01T10:01:01Z",
            "2026-03-01T10:02:30Z",
        );
        let late = plan_at(&cj, &[done], "2026-03-01T10:02:31Z");
        assert_eq!(reasons(&late), ["SawCompletedJob"]);
        assert!(active(&late.status).is_empty());
        assert_eq!(
            late.status
                .last_successful_time
                .as_ref()
                .map(time_text)
                .as_deref(),
            Some("2026-03-01T10:02:30Z")
        );
        assert_eq!(
            late.run.map(|r| r.job_name).as_deref(),
            Some("backup-29539322")
        );

        // Allow runs alongside; Replace deletes the active one first.
        cj.spec.concurrency_policy = Some("Allow".into());
        let alongside = plan_at(
            &cj,
            std::slice::from_ref(&first),
            "2026-03-01T10:02:00.100Z",
        );
        assert!(alongside.run.is_some() && alongside.replace.is_empty());
        assert_eq!(active(&alongside.status).len(), 1);
        cj.spec.concurrency_policy = Some("Replace".into());
        let replacing = plan_at(
            &cj,
            std::slice::from_ref(&first),
            "2026-03-01T10:02:00.100Z",
        );
        assert_eq!(replacing.replace, [reference(&first)]);
        assert!(active(&replacing.status).is_empty());
        assert_eq!(
            replacing.run.map(|r| r.job_name).as_deref(),
            Some("backup-29539322")
        );
    }

    #[test]
    fn schedules_missed_while_no_master_led_get_one_run_inside_the_starting_deadline() {
        let mut cj = cron(json!({"schedule": "*/1 * * * *"}));
        cj.status.last_schedule_time = time("2026-03-01T10:00:00Z");
        // Seven missed: one run, for the latest.
        let catch_up = plan_at(&cj, &[], "2026-03-01T10:07:20Z");
        assert_eq!(catch_up.run.map(|r| r.scheduled), Some(1_772_359_620));
        assert!(catch_up.events.is_empty(), "{:?}", catch_up.events);
        // Its starting deadline (30 s) passed: none, until the next minute.
        cj.spec.starting_deadline_seconds = Some(30);
        let too_late = plan_at(&cj, &[], "2026-03-01T10:07:40Z");
        assert_eq!(too_late.run, None);
        assert_eq!(too_late.requeue_after, Some(Duration::from_millis(20_100)));
        // Inside a 60 s deadline it still runs.
        cj.spec.starting_deadline_seconds = Some(60);
        let inside = plan_at(&cj, &[], "2026-03-01T10:07:40Z");
        assert_eq!(inside.run.map(|r| r.scheduled), Some(1_772_359_620));
        // A day missed is reported, and still only one run.
        cj.spec.starting_deadline_seconds = None;
        cj.status.last_schedule_time = time("2026-02-28T10:00:00Z");
        let many = plan_at(&cj, &[], "2026-03-01T10:07:20Z");
        assert_eq!(reasons(&many), ["TooManyMissedTimes"]);
        assert_eq!(many.run.map(|r| r.scheduled), Some(1_772_359_620));
    }

    #[test]
    fn suspended_deleted_or_unreadable_cron_jobs_start_nothing_but_keep_their_status() {
        let running = child("backup-1", None, "2026-03-01T10:01:01Z", "");
        let done = ChildJob {
            outcome: Some(JobOutcome::Failed),
            ..running.clone()
        };
        let listed = |mut cj: CronJobView| {
            cj.status.active = Some(vec![reference(&running)]);
            cj
        };
        let suspended = listed(cron(json!({"schedule": "*/1 * * * *", "suspend": true})));
        let plan = plan_at(
            &suspended,
            std::slice::from_ref(&done),
            "2026-03-01T10:05:00Z",
        );
        assert_eq!(plan.run, None);
        assert_eq!(reasons(&plan), ["SawCompletedJob"]);
        assert!(active(&plan.status).is_empty());
        assert_eq!(plan.requeue_after, None);

        let mut deleted = listed(every_minute("Allow"));
        deleted.being_deleted = true;
        let plan = plan_at(
            &deleted,
            std::slice::from_ref(&done),
            "2026-03-01T10:05:00Z",
        );
        assert!(plan.run.is_none() && plan.prune.is_empty());
        assert!(active(&plan.status).is_empty());

        let bad = cron(json!({"schedule": "61 * * * *"}));
        let plan = plan_at(&bad, &[], "2026-03-01T10:05:00Z");
        assert_eq!(reasons(&plan), ["UnparseableSchedule"]);
        assert!(plan.events[0].warning && plan.run.is_none());

        for unknown in [
            json!({"schedule": "*/1 * * * *", "timeZone": "Mars/Base"}),
            json!({"schedule": "CRON_TZ=Mars/Base */1 * * * *"}),
        ] {
            let plan = plan_at(&cron(unknown), &[], "2026-03-01T10:05:00Z");
            assert_eq!(reasons(&plan), ["UnknownTimeZone"]);
            assert!(plan.events[0].message.contains("Mars/Base"));
            assert!(plan.run.is_none());
        }
    }

    #[test]
    fn the_active_list_follows_the_jobs_there_are() {
        let mut cj = every_minute("Allow");
        cj.status.last_schedule_time = time("2026-03-01T10:05:00Z");
        let gone = child("backup-gone", None, "", "");
        cj.status.active = Some(vec![reference(&gone)]);
        let stray = child("backup-stray", None, "", "");
        let newer = child(
            "backup-new",
            Some(JobOutcome::Complete),
            "2026-03-01T10:03:00Z",
            "2026-03-01T10:04:00Z",
        );
        let older = child(
            "backup-old",
            Some(JobOutcome::Complete),
            "2026-03-01T10:01:00Z",
            "2026-03-01T10:02:00Z",
        );
        let plan = plan_at(&cj, &[stray, newer, older], "2026-03-01T10:05:10Z");
        assert_eq!(reasons(&plan), ["UnexpectedJob", "MissingJob"]);
        assert!(active(&plan.status).is_empty());
        assert_eq!(
            plan.status
                .last_successful_time
                .as_ref()
                .map(time_text)
                .as_deref(),
            Some("2026-03-01T10:04:00Z"),
            "the latest completion"
        );
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_go_the_oldest_first() {
        let mut cj = cron(
            json!({"schedule": "@daily", "successfulJobsHistoryLimit": 3,
                                 "failedJobsHistoryLimit": 1}),
        );
        let complete = |name: &str, started: &str| {
            child(
                name,
                Some(JobOutcome::Complete),
                started,
                "2026-03-02T00:00:00Z",
            )
        };
        let failed = |name: &str, started: &str| child(name, Some(JobOutcome::Failed), started, "");
        let jobs = [
            complete("c3", "2026-03-03T00:00:00Z"),
            complete("c1", "2026-03-01T00:00:00Z"),
            complete("c5", "2026-03-05T00:00:00Z"),
            complete("c2", "2026-03-02T00:00:00Z"),
            complete("c4", "2026-03-04T00:00:00Z"),
            failed("f2", "2026-03-02T00:00:00Z"),
            failed("f1", "2026-03-01T00:00:00Z"),
            failed("f-unstarted", ""),
            child("running", None, "2026-03-01T00:00:00Z", ""),
        ];
        let names = |plan: &CronPlan| -> Vec<String> {
            plan.prune.iter().map(|j| j.name.clone()).collect()
        };
        let plan = plan_at(&cj, &jobs, "2026-03-06T12:00:00Z");
        assert_eq!(names(&plan), ["c1", "c2", "f1", "f2"]);
        cj.spec.successful_jobs_history_limit = Some(0);
        cj.spec.failed_jobs_history_limit = Some(0);
        let plan = plan_at(&cj, &jobs, "2026-03-06T12:00:00Z");
        assert_eq!(plan.prune.len(), 8, "every finished one, none running");
    }

    #[test]
    fn schedules_run_in_their_time_zone_and_jobs_say_when_in_it() {
        let mut cj = cron(json!({"schedule": "0 3 * * *", "timeZone": "America/New_York"}));
        cj.creation_timestamp = "2026-01-09T12:00:00Z".into();
        // 03:00 in New York is 08:00 UTC in January.
        assert_eq!(plan_at(&cj, &[], "2026-01-10T07:59:00Z").run, None);
        let due = plan_at(&cj, &[], "2026-01-10T08:00:00.500Z");
        let run = due.run.clone().expect("due at 03:00 New York time");
        assert_eq!(run.scheduled, secs("2026-01-10T08:00:00Z"));
        let zone = due.zone.clone().unwrap();
        let job = new_job(&cj, &run, &zone, None);
        let meta = job.metadata.as_ref().unwrap();
        assert_eq!(
            meta.annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-10T03:00:00-05:00"
        );
        // The same through the schedule's own prefix.
        let mut prefixed = cron(json!({"schedule": "CRON_TZ=America/New_York 0 3 * * *"}));
        prefixed.creation_timestamp = "2026-01-09T12:00:00Z".into();
        let due = plan_at(&prefixed, &[], "2026-01-10T08:00:00.500Z");
        assert_eq!(
            due.run.map(|r| r.scheduled),
            Some(secs("2026-01-10T08:00:00Z"))
        );
        // No zone: the masters' own (UTC here).
        let mut plain = cron(json!({"schedule": "0 3 * * *"}));
        plain.creation_timestamp = "2026-01-09T12:00:00Z".into();
        let due = plan_at(&plain, &[], "2026-01-10T03:00:01Z");
        assert_eq!(
            due.run.map(|r| r.scheduled),
            Some(secs("2026-01-10T03:00:00Z"))
        );
    }

    #[test]
    fn a_runs_job_is_made_from_the_job_template() {
        let cj = cron(json!({
            "schedule": "@hourly",
            "jobTemplate": {
                "metadata": {"labels": {"app": "backup"}, "annotations": {"team": "ops"}},
                "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never"}}}
            }
        }));
        let run = Run {
            scheduled: 1_772_359_200,
            job_name: job_name("backup", 1_772_359_200),
        };
        let owner = v1::OwnerReference {
            kind: "CronJob".into(),
            name: "backup".into(),
            uid: "cj-uid".into(),
            controller: Some(true),
            ..Default::default()
        };
        let job = new_job(&cj, &run, &TimeZone::UTC, Some(owner.clone()));
        assert_eq!(
            (job.api_version.as_str(), job.kind.as_str()),
            ("batch/v1", "Job")
        );
        let meta = job.metadata.as_ref().unwrap();
        assert_eq!(meta.name, "backup-29539320");
        assert_eq!(meta.namespace, "default");
        assert_eq!(meta.labels["app"], "backup");
        assert_eq!(meta.annotations["team"], "ops");
        assert_eq!(
            meta.annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-03-01T10:00:00Z"
        );
        assert_eq!(meta.owner_references, [owner]);
        let content = generic::content(&job);
        assert_eq!(
            content["spec"],
            json!({"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never"}}})
        );
    }
}
