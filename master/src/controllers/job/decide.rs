//! The Job controller's decisions, as pure functions of a Job, the pods it
//! controls and the time, following Kubernetes' Job controller (1.31 and
//! later, with `JobPodReplacementPolicy` and delayed terminal conditions):
//!
//! - how many pods should run: `parallelism`, but never more than the
//!   completions still missing; none while suspended, and excess pods are
//!   deleted, the least advanced first (Indexed: duplicated or
//!   out-of-range indexes first); Indexed Jobs start their lowest pending
//!   indexes;
//! - when a failed pod is replaced: after an exponential back-off (10 s,
//!   doubling with each failure since the last success, at most 6 min),
//!   derived from the pods themselves, so a new leader keeps it;
//! - when the Job has failed: more counted failures than `backoffLimit`
//!   (with `restartPolicy: OnFailure`, container restarts reaching it),
//!   `activeDeadlineSeconds` passed since `startTime`, or a
//!   `podFailurePolicy` rule with `FailJob` matching a failed pod (`Ignore`
//!   rules keep a failure out of the count); its running pods are then
//!   deleted. When it has succeeded: the completions reached;
//! - exactly-once counting with the `batch.kubernetes.io/job-tracking`
//!   finalizer: a finished pod still holding it goes into
//!   `status.uncountedTerminatedPods` (Indexed: its index into
//!   `completedIndexes`) in one status write, its finalizer is removed
//!   after that, and only a uid whose pod holds no finalizer any more
//!   moves from there into `succeeded` / `failed`; so a leader change at
//!   any point neither loses a pod nor counts it twice;
//! - conditions as Kubernetes writes them: `FailureTarget` or
//!   `SuccessCriteriaMet` first, then, once no pod is uncounted and none
//!   is terminating, `Failed` (reasons `BackoffLimitExceeded`,
//!   `DeadlineExceeded`, `PodFailurePolicy`) or `Complete`
//!   (`CompletionsReached`, with `completionTime`); `Suspended`;
//! - the pods it creates: from the template, owned by the Job, labelled
//!   with its name and uid, holding the tracking finalizer; Indexed ones
//!   with their index (annotation, label, `JOB_COMPLETION_INDEX`, hostname
//!   `<job>-<index>`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skiff_objects::typed::api::core::v1::{ContainerStatus, PodStatus};
use skiff_proto::api::Object;
use skiff_proto::v1;

use crate::controllers::workload_spec::{containers_mut, PodTemplate};

use super::model::{
    conditions, conditions_mut, counter, holds, new_condition, time, uncounted_is_empty,
    uncounted_uids, with_kubernetes_omissions, JobCondition, JobStatus, JobView,
    UncountedTerminatedPods, COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV, TRACKING_FINALIZER,
};
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::generic::job_pod_labels;
use skiff_objects::pods::{self, StoredPod};

/// The first wait before a failed pod is replaced.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait before a failed pod is replaced.
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);
/// Most pods created or deleted in one round.
pub const MAX_POD_CHANGES_PER_ROUND: usize = 500;
/// Most uids in `uncountedTerminatedPods` (and finalizers removed) in one
/// round, so that the status stays small and one big Job cannot starve
/// the others.
pub const MAX_UNCOUNTED_PODS: usize = 500;
/// Longest `generateName` the API server keeps (63 less the suffix).
const MAX_GENERATE_NAME: usize = 58;

pub const REASON_BACKOFF_LIMIT: &str = "BackoffLimitExceeded";
pub const REASON_DEADLINE: &str = "DeadlineExceeded";
pub const REASON_POD_FAILURE_POLICY: &str = "PodFailurePolicy";
pub const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";
const MESSAGE_BACKOFF_LIMIT: &str = "Job has reached the specified backoff limit";
const MESSAGE_DEADLINE: &str = "Job was active longer than specified deadline";
const MESSAGE_COMPLETIONS_REACHED: &str = "Reached expected number of succeeded pods";

/// A pod, by name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDeletion {
    pub pod: PodRef,
    /// Remove its tracking finalizer first: it is not a failure (excess,
    /// or the Job is suspended), so it is never counted.
    pub release_first: bool,
}

/// An Event to record on the Job once the round's status is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl PlannedEvent {
    pub fn normal(reason: &str, message: &str) -> PlannedEvent {
        PlannedEvent {
            warning: false,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    pub fn warning(reason: &str, message: &str) -> PlannedEvent {
        PlannedEvent {
            warning: true,
            ..PlannedEvent::normal(reason, message)
        }
    }
}

/// What one round does, in this order: delete, create, write `status`,
/// release, record `events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPlan {
    pub delete: Vec<PodDeletion>,
    /// One entry per pod to create: its completion index (Indexed Jobs).
    pub create: Vec<Option<i32>>,
    /// The status to write (when it differs from the stored one).
    pub status: JobStatus,
    /// Pods whose tracking finalizer goes once `status` is written.
    pub release: Vec<PodRef>,
    pub events: Vec<PlannedEvent>,
    /// Look again after this long (a back-off or a deadline ends).
    pub requeue_after: Option<Duration>,
}

/// How the Job ends, once it is decided.
#[derive(Debug, Clone, PartialEq)]
enum Finish {
    Success,
    Failure {
        reason: String,
        message: String,
        /// `FailureTarget` is in the status already.
        recorded: bool,
    },
}

/// The round for a Job that has not finished (no `Complete` or `Failed`
/// condition) with `pods`, the pods it controls, at `now`.
pub fn plan(job: &JobView, pods: &[StoredPod], now: SystemTime) -> JobPlan {
    let now_text = skiff_objects::rfc3339(now);
    let mut status = job.status.clone();
    let mut events = Vec::new();
    let mut requeue_after = None;
    let indexed = job.indexed();
    let completions = job.spec.completions;

    // Uids whose pods hold no finalizer any more were counted: into the
    // counters with them.
    let (uncounted_succeeded, uncounted_failed) =
        uncounted_uids(status.uncounted_terminated_pods.take().unwrap_or_default());
    let tracked: HashSet<&str> = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p.meta()))
        .map(pod_uid)
        .collect();
    let (mut uncounted_succeeded, counted): (Vec<String>, Vec<String>) = uncounted_succeeded
        .into_iter()
        .partition(|uid| tracked.contains(uid.as_str()));
    status.succeeded = Some(counter(status.succeeded).saturating_add(count(counted.len())));
    let (mut uncounted_failed, counted): (Vec<String>, Vec<String>) = uncounted_failed
        .into_iter()
        .partition(|uid| tracked.contains(uid.as_str()));
    status.failed = Some(counter(status.failed).saturating_add(count(counted.len())));

    // What the pods still holding the finalizer add.
    let valid_index =
        |pod: &StoredPod| completion_index(pod).filter(|i| completions.is_some_and(|c| *i < c));
    let countable = |pod: &&StoredPod| {
        has_tracking_finalizer(pod.meta()) && (!indexed || valid_index(pod).is_some())
    };
    let mut succeeded_indexes = parse_indexes(
        status.completed_indexes.as_deref().unwrap_or(""),
        completions.unwrap_or(0),
    );
    let succeeded_total = if indexed {
        for pod in pods.iter().filter(countable) {
            if phase(pod) == "Succeeded" {
                succeeded_indexes.extend(valid_index(pod));
            }
        }
        count(succeeded_indexes.len())
    } else {
        let new = pods
            .iter()
            .filter(countable)
            .filter(|p| {
                phase(p) == "Succeeded" && !uncounted_succeeded.iter().any(|u| u == pod_uid(p))
            })
            .count();
        counter(status.succeeded).saturating_add(count(uncounted_succeeded.len() + new))
    };
    let new_failures = pods
        .iter()
        .filter(countable)
        .filter(|p| is_failed(job, p) && !uncounted_failed.iter().any(|u| u == pod_uid(p)))
        .filter(|p| match_failure_policy(job, p).counts)
        .count();
    let failed_total =
        counter(status.failed).saturating_add(count(uncounted_failed.len() + new_failures));

    if status.start_time.is_none() && !job.suspended() {
        status.start_time = time(&now_text);
    }

    // Has it ended?
    let mut finish = if holding(&status, "SuccessCriteriaMet").is_some() {
        Some(Finish::Success)
    } else if let Some(target) = holding(&status, "FailureTarget") {
        Some(Finish::Failure {
            reason: target.reason.clone().unwrap_or_default(),
            message: target.message.clone().unwrap_or_default(),
            recorded: true,
        })
    } else {
        fail_job_message(job, pods).map(|message| Finish::Failure {
            reason: REASON_POD_FAILURE_POLICY.to_owned(),
            message,
            recorded: false,
        })
    };
    if finish.is_none() {
        if failed_total > job.backoff_limit() || past_backoff_limit_on_failure(job, pods) {
            finish = Some(failure(REASON_BACKOFF_LIMIT, MESSAGE_BACKOFF_LIMIT));
        } else if let Some(left) = active_deadline_left(job, &status, now) {
            if left.is_zero() {
                finish = Some(failure(REASON_DEADLINE, MESSAGE_DEADLINE));
            } else {
                requeue_after = earliest(requeue_after, left);
            }
        }
    }

    let active: Vec<&StoredPod> = pods
        .iter()
        .filter(|p| pods::is_active(p.meta(), &p.pod))
        .collect();
    let mut active_count = active.len();
    let mut ready = active.iter().filter(|p| pods::is_ready(&p.pod)).count();
    let mut terminating = pods.iter().filter(|p| is_terminating(p)).count();
    let mut delete = Vec::new();
    let mut create = Vec::new();
    if finish.is_some() {
        // Ended: what still runs goes (and counts as failed when the Job
        // failed).
        delete.extend(active.iter().map(|p| PodDeletion {
            pod: pod_ref(p.meta()),
            release_first: false,
        }));
        terminating += active_count;
        active_count = 0;
        ready = 0;
    } else {
        let managed = !job.being_deleted;
        if managed {
            let decided = manage(
                job,
                &active,
                terminating,
                succeeded_total,
                &succeeded_indexes,
                pods,
                now,
            );
            for pod in &decided.delete {
                delete.push(PodDeletion {
                    pod: pod_ref(pod.meta()),
                    release_first: true,
                });
                if pods::is_ready(&pod.pod) {
                    ready = ready.saturating_sub(1);
                }
            }
            active_count = active_count.saturating_sub(decided.delete.len()) + decided.create.len();
            terminating += decided.delete.len();
            create = decided.create;
            if let Some(wait) = decided.wait {
                requeue_after = earliest(requeue_after, wait);
            }
        }
        let complete = match completions {
            None => succeeded_total > 0 && active_count == 0,
            Some(c) => succeeded_total >= c && active_count == 0,
        };
        if complete {
            finish = Some(Finish::Success);
        } else if managed {
            suspension(job, &mut status, &mut events, &now_text);
        }
    }

    // Finished pods into the uncounted lists, and their finalizers to go.
    let failing = matches!(finish, Some(Finish::Failure { .. }));
    let mut release = Vec::new();
    let mut capped = false;
    let mut in_order: Vec<&StoredPod> = pods.iter().collect();
    if indexed {
        in_order.sort_by_key(|p| completion_index(p).unwrap_or(i32::MAX));
    }
    for pod in in_order {
        if !has_tracking_finalizer(pod.meta()) {
            continue;
        }
        let failed = is_failed(job, pod);
        let succeeded = phase(pod) == "Succeeded";
        if !(job.being_deleted || finish.is_some() || succeeded || failed) {
            continue;
        }
        release.push(pod_ref(pod.meta()));
        let uid = pod_uid(pod);
        if succeeded && !uncounted_failed.iter().any(|u| u == uid) {
            if !indexed && !uncounted_succeeded.iter().any(|u| u == uid) {
                uncounted_succeeded.push(uid.to_owned());
            }
        } else if (failed || failing)
            && !uncounted_failed.iter().any(|u| u == uid)
            && (!indexed || valid_index(pod).is_some())
            && match_failure_policy(job, pod).counts
        {
            uncounted_failed.push(uid.to_owned());
        }
        if uncounted_succeeded.len() + uncounted_failed.len() >= MAX_UNCOUNTED_PODS {
            capped = true;
            break;
        }
    }
    if indexed {
        status.succeeded = Some(count(succeeded_indexes.len()));
        status.completed_indexes = Some(format_indexes(&succeeded_indexes));
    }

    // Conditions: the interim one now, the terminal one once every pod is
    // counted and none is terminating.
    match &finish {
        Some(Finish::Failure {
            reason,
            message,
            recorded: false,
        }) => conditions_mut(&mut status).push(new_condition(
            "FailureTarget",
            true,
            reason,
            message,
            &now_text,
        )),
        Some(Finish::Success) if holding(&status, "SuccessCriteriaMet").is_none() => {
            conditions_mut(&mut status).push(new_condition(
                "SuccessCriteriaMet",
                true,
                REASON_COMPLETIONS_REACHED,
                MESSAGE_COMPLETIONS_REACHED,
                &now_text,
            ))
        }
        _ => {}
    }
    let uncounted = UncountedTerminatedPods {
        succeeded: Some(uncounted_succeeded),
        failed: Some(uncounted_failed),
    };
    if let Some(finish) = &finish {
        if !capped && uncounted_is_empty(&uncounted) && terminating == 0 {
            match finish {
                Finish::Success => {
                    set_condition(
                        conditions_mut(&mut status),
                        "Complete",
                        true,
                        REASON_COMPLETIONS_REACHED,
                        MESSAGE_COMPLETIONS_REACHED,
                        &now_text,
                    );
                    status.completion_time = time(&now_text);
                    if completions.is_some_and(|c| counter(status.succeeded) > c) {
                        events.push(PlannedEvent::warning(
                            "TooManySucceededPods",
                            "Too many succeeded pods running after completion count reached",
                        ));
                    }
                    events.push(PlannedEvent::normal("Completed", "Job completed"));
                }
                Finish::Failure {
                    reason, message, ..
                } => {
                    set_condition(
                        conditions_mut(&mut status),
                        "Failed",
                        true,
                        reason,
                        message,
                        &now_text,
                    );
                    events.push(PlannedEvent::warning(reason, message));
                }
            }
        }
    }
    status.active = Some(count(active_count));
    status.ready = Some(count(ready));
    status.terminating = Some(count(terminating));
    status.uncounted_terminated_pods = Some(uncounted);
    JobPlan {
        delete,
        create,
        status: with_kubernetes_omissions(status),
        release,
        events,
        requeue_after,
    }
}

/// How long until a finished Job's `ttlSecondsAfterFinished` runs out
/// (zero: delete it now); `None` without one, or when it has not finished.
pub fn ttl_left(job: &JobView, now: SystemTime) -> Option<Duration> {
    let ttl = job.spec.ttl_seconds_after_finished?;
    let finished = job.finished()?;
    let at = finished
        .last_transition_time
        .as_ref()
        .map_or(now, |t| SystemTime::from(t.0));
    let expires = at.checked_add(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)))?;
    Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What the pods of a running Job need.
#[derive(Debug, Default)]
struct Managed<'a> {
    delete: Vec<&'a StoredPod>,
    create: Vec<Option<i32>>,
    wait: Option<Duration>,
}

fn manage<'a>(
    job: &JobView,
    active: &[&'a StoredPod],
    terminating: usize,
    succeeded: i32,
    succeeded_indexes: &BTreeSet<i32>,
    pods: &[StoredPod],
    now: SystemTime,
) -> Managed<'a> {
    if job.suspended() {
        return Managed {
            delete: active.to_vec(),
            ..Managed::default()
        };
    }
    let running = count(active.len());
    let parallelism = job.parallelism();
    let wanted = match job.spec.completions {
        // A work queue: once one pod succeeded, no new ones.
        None if succeeded > 0 => running,
        None => parallelism,
        Some(completions) => completions.saturating_sub(succeeded).clamp(0, parallelism),
    };
    let excess = usize::try_from(running - wanted).unwrap_or(0);
    let mut delete = pods_for_removal(job, active, excess);
    if !delete.is_empty() {
        delete.truncate(MAX_POD_CHANGES_PER_ROUND);
        return Managed {
            delete,
            ..Managed::default()
        };
    }
    // Pods still terminating are only waited for when they may yet
    // succeed (podReplacementPolicy Failed, or a pod failure policy).
    let replacing = if only_replace_failed(job) {
        count(terminating)
    } else {
        0
    };
    let missing = wanted.saturating_sub(replacing).saturating_sub(running);
    let Ok(missing) = usize::try_from(missing) else {
        return Managed::default();
    };
    if missing == 0 {
        return Managed::default();
    }
    let wait = backoff_left(job, pods, now);
    if !wait.is_zero() {
        return Managed {
            wait: Some(wait),
            ..Managed::default()
        };
    }
    let missing = missing.min(MAX_POD_CHANGES_PER_ROUND);
    let create = if job.indexed() {
        let completions = job.spec.completions.unwrap_or(0);
        first_pending_indexes(succeeded_indexes, active, missing, completions)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; missing]
    };
    Managed {
        create,
        ..Managed::default()
    }
}

/// The `Suspended` condition and its Events; a resumed Job's deadline
/// starts over.
fn suspension(job: &JobView, status: &mut JobStatus, events: &mut Vec<PlannedEvent>, now: &str) {
    if job.suspended() {
        let changed = set_condition(
            conditions_mut(status),
            "Suspended",
            true,
            "JobSuspended",
            "Job suspended",
            now,
        );
        if changed {
            events.push(PlannedEvent::normal("Suspended", "Job suspended"));
        }
    } else {
        let changed = set_condition(
            conditions_mut(status),
            "Suspended",
            false,
            "JobResumed",
            "Job resumed",
            now,
        );
        if changed {
            events.push(PlannedEvent::normal("Resumed", "Job resumed"));
            status.start_time = time(now);
        }
    }
}

/// Sets a condition as Kubernetes' `ensureJobConditionStatus` does: a
/// changed one is replaced (its transition time now), a missing one added
/// only when it holds. Whether anything changed.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    kind: &str,
    holds: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> bool {
    let wanted = new_condition(kind, holds, reason, message, now);
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            let same = existing.status == wanted.status
                && existing.reason == wanted.reason
                && existing.message == wanted.message;
            if !same {
                *existing = wanted;
            }
            !same
        }
        None if holds => {
            conditions.push(wanted);
            true
        }
        None => false,
    }
}

fn holding<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    conditions(status)
        .iter()
        .find(|c| c.type_ == kind && holds(c))
}

fn failure(reason: &str, message: &str) -> Finish {
    Finish::Failure {
        reason: reason.to_owned(),
        message: message.to_owned(),
        recorded: false,
    }
}

fn earliest(current: Option<Duration>, candidate: Duration) -> Option<Duration> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// How long the Job may still run (`activeDeadlineSeconds` since
/// `startTime`); `None` without a deadline, a start, or while suspended.
fn active_deadline_left(job: &JobView, status: &JobStatus, now: SystemTime) -> Option<Duration> {
    let seconds = job.spec.active_deadline_seconds?;
    if job.suspended() {
        return None;
    }
    let started = SystemTime::from(status.start_time.as_ref()?.0);
    let end = started.checked_add(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))?;
    Some(end.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether the restarts of a `restartPolicy: OnFailure` Job's running
/// pods have reached `backoffLimit` (any restart, for a limit of 0).
fn past_backoff_limit_on_failure(job: &JobView, pods: &[StoredPod]) -> bool {
    if job.restart_policy() != "OnFailure" {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.pod.status.as_ref())
        .flat_map(container_statuses)
        .map(|c| i64::from(c.restart_count))
        .sum();
    let limit = i64::from(job.backoff_limit());
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// How long until a failed pod may be replaced: [`DEFAULT_BACKOFF`]
/// doubled for each counted failure since the last success (at most
/// [`MAX_BACKOFF`]), from the last failure.
pub fn backoff_left(job: &JobView, pods: &[StoredPod], now: SystemTime) -> Duration {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(finished_at)
        .max();
    let failures: Vec<SystemTime> = pods
        .iter()
        .filter(|p| {
            let failed =
                phase(p) == "Failed" || (has_tracking_finalizer(p.meta()) && is_failed(job, p));
            failed && match_failure_policy(job, p).counts
        })
        .map(|p| finished_at(p).unwrap_or(now))
        .filter(|at| last_success.is_none_or(|s| *at > s))
        .collect();
    let Some(last) = failures.iter().max() else {
        return Duration::ZERO;
    };
    let delay = backoff_delay(failures.len());
    let since = now.duration_since(*last).unwrap_or(Duration::ZERO);
    delay.saturating_sub(since)
}

/// The wait after `failures` failures in a row.
pub fn backoff_delay(failures: usize) -> Duration {
    let mut delay = DEFAULT_BACKOFF;
    for _ in 1..failures {
        delay = delay.saturating_mul(2);
        if delay >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    delay
}

/// When a pod finished: its containers' last finish, else when it stopped
/// being Ready, else when it was deleted, else when it was created.
fn finished_at(pod: &StoredPod) -> Option<SystemTime> {
    let status = pod.pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let from_containers = (!containers.is_empty())
        .then(|| {
            containers
                .iter()
                .map(|c| {
                    let terminated = c.state.as_ref()?.terminated.as_ref()?;
                    terminated
                        .finished_at
                        .as_ref()
                        .map(|t| SystemTime::from(t.0))
                })
                .collect::<Option<Vec<SystemTime>>>()
        })
        .flatten()
        .and_then(|times| times.into_iter().max());
    if from_containers.is_some() {
        return from_containers;
    }
    let unready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| SystemTime::from(t.0));
    if unready.is_some() {
        return unready;
    }
    let meta = pod.meta();
    if let Some(deleted) = parse_time(&meta.deletion_timestamp) {
        let grace =
            Duration::from_secs(u64::try_from(meta.deletion_grace_period_seconds).unwrap_or(0));
        return deleted.checked_sub(grace);
    }
    parse_time(&meta.creation_timestamp)
}

/// A failed pod: `Failed`, or (unless only failed pods are replaced) being
/// deleted before it succeeded.
pub fn is_failed(job: &JobView, pod: &StoredPod) -> bool {
    let phase = phase(pod);
    if phase == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    being_deleted(pod) && phase != "Succeeded"
}

/// Whether pods being deleted are waited for instead of replaced at once.
fn only_replace_failed(job: &JobView) -> bool {
    job.spec.pod_failure_policy.is_some()
        || job.spec.pod_replacement_policy.as_deref() == Some("Failed")
}

/// What the pod failure policy says of a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    /// A `FailJob` rule matched: the Job fails with this message.
    pub fail_job: Option<String>,
    /// The failure counts towards `backoffLimit` (no `Ignore` rule
    /// matched).
    pub counts: bool,
}

/// Matches a failed pod against the Job's pod failure policy: the first
/// rule whose exit codes (of a container that exited non-zero) or pod
/// conditions match decides.
pub fn match_failure_policy(job: &JobView, pod: &StoredPod) -> PolicyMatch {
    let counted = PolicyMatch {
        fail_job: None,
        counts: true,
    };
    let Some(policy) = &job.spec.pod_failure_policy else {
        return counted;
    };
    let no_status = PodStatus::default();
    let status = pod.pod.status.as_ref().unwrap_or(&no_status);
    let (namespace, name) = (pod.meta().namespace.as_str(), pod.meta().name.as_str());
    let conditions = status.conditions.as_deref().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            container_statuses(status)
                .find_map(|c| {
                    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                    let named = codes.container_name.as_ref().is_none_or(|n| *n == c.name);
                    let listed = codes.values.contains(&code);
                    let matches = match codes.operator.as_str() {
                        "In" => listed,
                        "NotIn" => !listed,
                        _ => false,
                    };
                    (named && code != 0 && matches).then(|| {
                        format!(
                            "Container {} for pod {}/{} failed with exit code {code} matching {} rule at index {index}",
                            c.name, namespace, name, rule.action
                        )
                    })
                })
        } else {
            conditions.iter().find_map(|condition| {
                rule.on_pod_conditions
                    .iter()
                    .flatten()
                    .any(|pattern| {
                        let wanted = if pattern.status.is_empty() {
                            "True"
                        } else {
                            pattern.status.as_str()
                        };
                        pattern.type_ == condition.type_ && wanted == condition.status
                    })
                    .then(|| {
                        format!(
                            "Pod {}/{} has condition {} matching {} rule at index {index}",
                            namespace, name, condition.type_, rule.action
                        )
                    })
            })
        };
        let Some(message) = matched else {
            continue;
        };
        match rule.action.as_str() {
            "Ignore" => {
                return PolicyMatch {
                    fail_job: None,
                    counts: false,
                }
            }
            "FailJob" => {
                return PolicyMatch {
                    fail_job: Some(message),
                    counts: true,
                }
            }
            // Count, and FailIndex (skiff has no per-index back-off
            // limit): counted.
            "Count" | "FailIndex" => return counted,
            _ => {}
        }
    }
    counted
}

/// The message of the first `FailJob` rule a failed pod matches.
fn fail_job_message(job: &JobView, pods: &[StoredPod]) -> Option<String> {
    job.spec.pod_failure_policy.as_ref()?;
    pods.iter()
        .filter(|p| is_failed(job, p))
        .find_map(|p| match_failure_policy(job, p).fail_job)
}

/// The pods to delete so that at most `at_least` fewer run; for Indexed
/// Jobs also every pod with a duplicated index (all but the most
/// advanced) or none in range. The least advanced go first.
fn pods_for_removal<'a>(
    job: &JobView,
    active: &[&'a StoredPod],
    at_least: usize,
) -> Vec<&'a StoredPod> {
    let mut remove = Vec::new();
    let mut left = Vec::new();
    if job.indexed() {
        let completions = job.spec.completions.unwrap_or(0);
        let mut by_index: BTreeMap<i32, Vec<&'a StoredPod>> = BTreeMap::new();
        for &pod in active {
            match completion_index(pod) {
                Some(index) if index < completions => by_index.entry(index).or_default().push(pod),
                _ => remove.push(pod),
            }
        }
        for (_, mut same) in by_index {
            same.sort_by_key(|p| removal_rank(p));
            if let Some(kept) = same.pop() {
                left.push(kept);
            }
            remove.extend(same);
        }
    } else {
        left = active.to_vec();
    }
    if remove.len() < at_least {
        left.sort_by_key(|p| removal_rank(p));
        let more = at_least - remove.len();
        remove.extend(left.into_iter().take(more));
    }
    remove
}

/// Lower ranks are removed first: unscheduled, then pending, not ready,
/// and the newest.
fn removal_rank(pod: &StoredPod) -> (u8, u8, u8, Reverse<String>) {
    let scheduled = !pods::node_name(&pod.pod).is_empty();
    let phase = match phase(pod) {
        "Running" => 2,
        "Unknown" => 1,
        _ => 0,
    };
    (
        u8::from(scheduled),
        phase,
        u8::from(pods::is_ready(&pod.pod)),
        Reverse(pod.meta().creation_timestamp.clone()),
    )
}

/// The lowest `wanted` indexes below `completions` that neither succeeded
/// nor have an active pod.
fn first_pending_indexes(
    succeeded: &BTreeSet<i32>,
    active: &[&StoredPod],
    wanted: usize,
    completions: i32,
) -> Vec<i32> {
    let running: HashSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
    (0..completions)
        .filter(|i| !succeeded.contains(i) && !running.contains(i))
        .take(wanted)
        .collect()
}

/// An Indexed Job pod's completion index (its annotation, else its label).
pub fn completion_index(pod: &StoredPod) -> Option<i32> {
    let meta = pod.meta();
    meta.annotations
        .get(COMPLETION_INDEX_ANNOTATION)
        .or_else(|| meta.labels.get(COMPLETION_INDEX_ANNOTATION))?
        .parse()
        .ok()
        .filter(|i| *i >= 0)
}

/// `completedIndexes` (`1,3-5`) as a set, indexes from `completions` on
/// left out.
pub fn parse_indexes(text: &str, completions: i32) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.parse::<i32>(), last.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            continue;
        };
        indexes.extend(first.max(0)..=last.min(completions.saturating_sub(1)));
    }
    indexes
}

/// A set of indexes as `completedIndexes` writes it: ascending, runs as
/// `first-last`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &index in indexes {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(index) => *last = index,
            _ => runs.push((index, index)),
        }
    }
    runs.iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod for `job` from its `template` (completion `index` for Indexed
/// Jobs), controlled by `owner`: a pod document with every field of the
/// template's spec.
pub fn new_pod(
    job: &JobView,
    template: &PodTemplate,
    index: Option<i32>,
    owner: Option<v1::OwnerReference>,
) -> Object {
    let template_meta = template.metadata.clone();
    let mut labels = template_meta.labels;
    for (key, value) in job_pod_labels(&job.name, &job.uid) {
        labels.insert(key.to_owned(), value);
    }
    let mut annotations = template_meta.annotations;
    let mut finalizers = template_meta.finalizers;
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_owned());
    }
    let mut spec = template.spec.clone();
    if let Some(index) = index {
        labels.insert(COMPLETION_INDEX_ANNOTATION.to_owned(), index.to_string());
        annotations.insert(COMPLETION_INDEX_ANNOTATION.to_owned(), index.to_string());
        if let Some(map) = spec.as_object_mut() {
            map.insert(
                "hostname".to_owned(),
                format!("{}-{index}", job.name).into(),
            );
        }
        for container in containers_mut(&mut spec) {
            let env = container
                .entry("env")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(env) = env.as_array_mut() else {
                continue;
            };
            if !env.iter().any(|e| e["name"] == COMPLETION_INDEX_ENV) {
                // As Kubernetes writes it: the downward API reads the
                // index annotation.
                env.push(serde_json::json!({
                    "name": COMPLETION_INDEX_ENV,
                    "valueFrom": {"fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                    }},
                }));
            }
        }
    }
    let metadata = v1::ObjectMeta {
        generate_name: generate_name(&job.name, index),
        namespace: job.namespace.clone(),
        labels,
        annotations,
        finalizers,
        owner_references: owner.into_iter().collect(),
        ..Default::default()
    };
    PodTemplate::pod(metadata, spec)
}

/// `<job>-` (Indexed: `<job>-<index>-`), the Job's name shortened to fit.
fn generate_name(job: &str, index: Option<i32>) -> String {
    let appendix = match index {
        Some(index) => format!("-{index}-"),
        None => "-".to_owned(),
    };
    let room = MAX_GENERATE_NAME.saturating_sub(appendix.len());
    let base: String = job.chars().take(room).collect();
    format!("{base}{appendix}")
}

/// Whether the pod `meta` describes holds the Job's tracking finalizer.
pub fn has_tracking_finalizer(meta: &v1::ObjectMeta) -> bool {
    meta.finalizers.iter().any(|f| f == TRACKING_FINALIZER)
}

/// The pod `meta` describes, by name and uid.
pub fn pod_ref(meta: &v1::ObjectMeta) -> PodRef {
    PodRef {
        name: meta.name.clone(),
        uid: meta.uid.clone(),
    }
}

fn pod_uid(pod: &StoredPod) -> &str {
    &pod.meta().uid
}

fn phase(pod: &StoredPod) -> &str {
    pods::phase(&pod.pod)
}

fn being_deleted(pod: &StoredPod) -> bool {
    is_being_deleted(pod.meta())
}

/// Being deleted, and not finished: its node is still stopping it.
fn is_terminating(pod: &StoredPod) -> bool {
    being_deleted(pod) && !pods::is_finished(&pod.pod)
}

/// A pod's container statuses, its init containers' after its others'.
fn container_statuses(status: &PodStatus) -> impl Iterator<Item = &ContainerStatus> {
    let containers = status.container_statuses.iter().flatten();
    containers.chain(status.init_container_statuses.iter().flatten())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::job::model::{finished_condition, time_text};
    use serde_json::json;
    use skiff_objects::IntoObject;
    use std::time::UNIX_EPOCH;

    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0 + seconds)
    }

    fn stamp(seconds: u64) -> String {
        skiff_objects::rfc3339(at(seconds))
    }

    fn job(spec: serde_json::Value) -> JobView {
        JobView {
            name: "work".into(),
            namespace: "default".into(),
            uid: "job-uid".into(),
            being_deleted: false,
            template: spec["template"].clone(),
            spec: skiff_objects::typed::decode(spec).unwrap(),
            status: JobStatus::default(),
        }
    }

    /// A Job and its pods, changed round by round as the controller and
    /// the nodes would change them.
    struct World {
        job: JobView,
        pods: Vec<v1::Pod>,
        created: usize,
    }

    impl World {
        fn new(spec: serde_json::Value) -> World {
            World {
                job: job(spec),
                pods: Vec::new(),
                created: 0,
            }
        }

        /// One round at `seconds`: its plan carried out in full (deleted
        /// pods go at once unless a finalizer holds them).
        fn round(&mut self, seconds: u64) -> JobPlan {
            let plan = plan(&self.job, &stored(&self.pods), at(seconds));
            for deletion in &plan.delete {
                if deletion.release_first {
                    self.release(&deletion.pod.uid);
                }
                if let Some(pod) = self.pod_mut(&deletion.pod.uid) {
                    let meta = pod.metadata.as_mut().unwrap();
                    meta.deletion_timestamp = stamp(seconds);
                }
                self.drop_unheld();
            }
            for index in &plan.create {
                self.created += 1;
                let name = format!("work-{}", self.created);
                let mut pod = pod(&name, "Pending");
                if let Some(index) = index {
                    let meta = pod.metadata.as_mut().unwrap();
                    meta.annotations
                        .insert(COMPLETION_INDEX_ANNOTATION.into(), index.to_string());
                }
                self.pods.push(pod);
            }
            self.job.status = plan.status.clone();
            for released in &plan.release {
                self.release(&released.uid);
            }
            self.drop_unheld();
            plan
        }

        fn pod_mut(&mut self, uid: &str) -> Option<&mut v1::Pod> {
            self.pods.iter_mut().find(|p| uid_of(p) == uid)
        }

        fn release(&mut self, uid: &str) {
            if let Some(pod) = self.pod_mut(uid) {
                let meta = pod.metadata.as_mut().unwrap();
                meta.finalizers.retain(|f| f != TRACKING_FINALIZER);
            }
        }

        /// Pods being deleted and held by no finalizer are gone (their
        /// nodes confirmed at once).
        fn drop_unheld(&mut self) {
            self.pods.retain(|p| !deleting(p) || held(p));
        }

        fn finish(&mut self, name: &str, exit_code: i32, seconds: u64) {
            let pod = self
                .pods
                .iter_mut()
                .find(|p| p.metadata.as_ref().unwrap().name == name)
                .unwrap();
            *pod = finished(pod.clone(), exit_code, seconds);
        }

        fn condition_types(&self) -> Vec<String> {
            self.job
                .status
                .conditions
                .iter()
                .flatten()
                .map(|c| format!("{}={}", c.type_, c.status))
                .collect()
        }
    }

    /// `pods` as the controller reads them from the store.
    fn stored(pods: &[v1::Pod]) -> Vec<StoredPod> {
        pods.iter().map(one).collect()
    }

    fn one(pod: &v1::Pod) -> StoredPod {
        StoredPod::read(pod.clone().into_object()).expect("a pod")
    }

    fn uid_of(pod: &v1::Pod) -> &str {
        pod.metadata.as_ref().map_or("", |m| m.uid.as_str())
    }

    fn deleting(pod: &v1::Pod) -> bool {
        pod.metadata.as_ref().is_some_and(is_being_deleted)
    }

    fn held(pod: &v1::Pod) -> bool {
        pod.metadata.as_ref().is_some_and(has_tracking_finalizer)
    }

    /// A pod of the Job in `phase`, holding the tracking finalizer.
    fn pod(name: &str, phase: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                finalizers: vec![TRACKING_FINALIZER.into()],
                creation_timestamp: stamp(0),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `pod`, its container `main` exited with `exit_code` at `seconds`.
    fn finished(mut pod: v1::Pod, exit_code: i32, seconds: u64) -> v1::Pod {
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
                    finished_at: stamp(seconds),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }];
        pod
    }

    fn running_ready(name: &str) -> v1::Pod {
        let mut pod = pod(name, "Running");
        pod.status.as_mut().unwrap().conditions = vec![v1::PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }];
        pod
    }

    fn reasons(plan: &JobPlan) -> Vec<String> {
        plan.events.iter().map(|e| e.reason.clone()).collect()
    }

    /// The uids of a plan's uncounted pods.
    struct Uncounted {
        succeeded: Vec<String>,
        failed: Vec<String>,
    }

    impl Uncounted {
        fn is_empty(&self) -> bool {
            self.succeeded.is_empty() && self.failed.is_empty()
        }
    }

    fn uncounted(plan: &JobPlan) -> Uncounted {
        let listed = plan.status.uncounted_terminated_pods.clone();
        let (succeeded, failed) = uncounted_uids(listed.unwrap_or_default());
        Uncounted { succeeded, failed }
    }

    #[test]
    fn parallelism_pods_run_until_the_completions_succeed_and_the_job_completes() {
        let mut w = World::new(json!({"completions": 3, "parallelism": 2, "backoffLimit": 6}));
        let first = w.round(0);
        assert_eq!(first.create, [None, None]);
        assert_eq!(counter(first.status.active), 2);
        assert_eq!(
            first.status.start_time.as_ref().map(time_text).as_deref(),
            Some(stamp(0).as_str())
        );
        assert!(w.round(1).create.is_empty(), "two already run");

        w.finish("work-1", 0, 5);
        let counted = w.round(6);
        assert_eq!(uncounted(&counted).succeeded, ["uid-work-1"]);
        assert_eq!(
            counter(counted.status.succeeded),
            0,
            "counted once its finalizer is gone"
        );
        assert_eq!(counted.release[0].name, "work-1");
        assert_eq!(counted.create, [None], "the third completion starts");
        let next = w.round(7);
        assert_eq!(counter(next.status.succeeded), 1);
        assert!(uncounted(&next).is_empty());

        w.finish("work-2", 0, 8);
        w.finish("work-3", 0, 9);
        let met = w.round(10);
        assert!(met.create.is_empty());
        assert_eq!(w.condition_types(), ["SuccessCriteriaMet=True"]);
        assert!(
            reasons(&met).is_empty(),
            "complete only once all are counted"
        );
        let done = w.round(11);
        assert_eq!(counter(done.status.succeeded), 3);
        assert_eq!(
            w.condition_types(),
            ["SuccessCriteriaMet=True", "Complete=True"]
        );
        let complete = &conditions(&done.status)[1];
        assert_eq!(complete.reason.as_deref(), Some(REASON_COMPLETIONS_REACHED));
        assert_eq!(
            done.status
                .completion_time
                .as_ref()
                .map(time_text)
                .as_deref(),
            Some(stamp(11).as_str())
        );
        assert_eq!(reasons(&done), ["Completed"]);
        assert_eq!(w.created, 3, "no pod more than the completions");
        assert!(w.pods.iter().all(|p| !held(p)));
    }

    #[test]
    fn a_finished_pod_is_counted_exactly_once_wherever_a_leader_change_cuts_the_round() {
        let spec = json!({"completions": 2, "parallelism": 1});
        // The status naming the pod was written, its finalizer not yet
        // removed: the next leader removes it and counts the pod once.
        let mut w = World::new(spec.clone());
        w.job.status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(vec!["uid-a".into()]),
            failed: Some(Vec::new()),
        });
        w.pods = vec![finished(pod("a", "Running"), 0, 1)];
        let again = plan(&w.job, &stored(&w.pods), at(2));
        assert_eq!(uncounted(&again).succeeded, ["uid-a"], "not added twice");
        assert_eq!(counter(again.status.succeeded), 0);
        assert_eq!(again.release[0].uid, "uid-a");
        w.round(2);
        assert_eq!(counter(w.round(3).status.succeeded), 1);
        assert_eq!(counter(w.round(4).status.succeeded), 1, "and never again");

        // The finalizer went, the counter was not written: counted once.
        let mut w = World::new(spec.clone());
        w.job.status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(vec!["uid-a".into()]),
            failed: Some(Vec::new()),
        });
        let mut done = finished(pod("a", "Running"), 0, 1);
        done.metadata.as_mut().unwrap().finalizers.clear();
        w.pods = vec![done];
        assert_eq!(counter(w.round(2).status.succeeded), 1);
        assert_eq!(counter(w.round(3).status.succeeded), 1);

        // The pod is gone altogether: it was released, so it counts.
        let mut w = World::new(spec.clone());
        w.job.status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(Vec::new()),
            failed: Some(vec!["uid-gone".into()]),
        });
        assert_eq!(counter(w.round(2).status.failed), 1);

        // Nothing was written before the leader died: the pod still holds
        // the finalizer, so the next leader finds and counts it.
        let mut w = World::new(spec);
        w.pods = vec![finished(pod("a", "Running"), 0, 1)];
        assert_eq!(uncounted(&w.round(2)).succeeded, ["uid-a"]);
        assert_eq!(counter(w.round(3).status.succeeded), 1);
        // A finished pod without the finalizer, not in the lists, was
        // counted before: it adds nothing.
        let before = w.job.status.clone();
        let plan = w.round(4);
        assert_eq!(plan.status.succeeded, before.succeeded);
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job() {
        let mut w = World::new(json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}));
        w.round(0);
        w.finish("work-1", 3, 10);
        let failed_once = w.round(11);
        assert_eq!(uncounted(&failed_once).failed, ["uid-work-1"]);
        assert!(failed_once.create.is_empty(), "the back-off runs");
        assert_eq!(failed_once.requeue_after, Some(Duration::from_secs(9)));
        assert!(w.round(15).create.is_empty());
        let replaced = w.round(21);
        assert_eq!(counter(replaced.status.failed), 1);
        assert_eq!(replaced.create, [None], "10 s after the failure");

        w.finish("work-2", 3, 30);
        let target = w.round(31);
        assert!(target.create.is_empty());
        assert_eq!(w.condition_types(), ["FailureTarget=True"]);
        assert_eq!(
            conditions(&target.status)[0].reason.as_deref(),
            Some(REASON_BACKOFF_LIMIT)
        );
        let failed = w.round(32);
        assert_eq!(counter(failed.status.failed), 2);
        assert_eq!(w.condition_types(), ["FailureTarget=True", "Failed=True"]);
        assert_eq!(
            conditions(&failed.status)[1].reason.as_deref(),
            Some(REASON_BACKOFF_LIMIT)
        );
        assert_eq!(
            failed.events,
            [PlannedEvent::warning(
                REASON_BACKOFF_LIMIT,
                MESSAGE_BACKOFF_LIMIT
            )]
        );
        assert!(failed.status.completion_time.is_none());
        assert_eq!(w.created, 2);
    }

    #[test]
    fn replacements_wait_a_back_off_that_doubles_up_to_six_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), MAX_BACKOFF);
        assert_eq!(backoff_delay(60), MAX_BACKOFF);

        let j = job(json!({"completions": 5}));
        let failed = |name: &str, s: u64| finished(pod(name, "Running"), 1, s);
        let pods = vec![failed("a", 100), failed("b", 110)];
        // Two failures in a row: 20 s from the last one.
        assert_eq!(
            backoff_left(&j, &stored(&pods), at(115)),
            Duration::from_secs(15)
        );
        assert_eq!(backoff_left(&j, &stored(&pods), at(200)), Duration::ZERO);
        // A success after them starts over.
        let mut with_success = pods.clone();
        with_success.push(finished(pod("c", "Running"), 0, 120));
        assert_eq!(
            backoff_left(&j, &stored(&with_success), at(121)),
            Duration::ZERO
        );
        // Failures after the success count from it.
        with_success.push(failed("d", 130));
        assert_eq!(
            backoff_left(&j, &stored(&with_success), at(131)),
            Duration::from_secs(9)
        );
        // The back-off is read from the pods, released or not, so a new
        // leader keeps it.
        let mut released = pods.clone();
        for pod in &mut released {
            pod.metadata.as_mut().unwrap().finalizers.clear();
        }
        assert_eq!(
            backoff_left(&j, &stored(&released), at(115)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn an_active_deadline_fails_the_job_and_stops_its_pods() {
        let mut w = World::new(json!({"parallelism": 2, "completions": 2,
                                      "activeDeadlineSeconds": 30}));
        assert_eq!(w.round(0).requeue_after, Some(Duration::from_secs(30)));
        for pod in &mut w.pods {
            pod.status.as_mut().unwrap().phase = "Running".into();
        }
        assert_eq!(w.round(10).requeue_after, Some(Duration::from_secs(20)));
        let expired = w.round(30);
        assert_eq!(expired.delete.len(), 2);
        assert!(expired.delete.iter().all(|d| !d.release_first));
        assert_eq!(
            uncounted(&expired).failed.len(),
            2,
            "its pods count as failed"
        );
        assert_eq!(w.condition_types(), ["FailureTarget=True"]);
        assert_eq!(
            conditions(&expired.status)[0].reason.as_deref(),
            Some(REASON_DEADLINE)
        );
        let failed = w.round(31);
        assert_eq!(counter(failed.status.failed), 2);
        assert_eq!(w.condition_types(), ["FailureTarget=True", "Failed=True"]);
        assert_eq!(reasons(&failed), [REASON_DEADLINE]);
    }

    #[test]
    fn the_failed_condition_waits_until_no_pod_is_terminating() {
        let mut j = job(json!({"completions": 1, "backoffLimit": 0}));
        j.status.conditions = Some(vec![new_condition(
            "FailureTarget",
            true,
            REASON_BACKOFF_LIMIT,
            MESSAGE_BACKOFF_LIMIT,
            &stamp(0),
        )]);
        let mut stopping = pod("a", "Running");
        let meta = stopping.metadata.as_mut().unwrap();
        meta.deletion_timestamp = stamp(5);
        meta.finalizers.clear();
        let waiting = plan(&j, &stored(&[stopping]), at(1));
        assert_eq!(waiting.status.terminating, Some(1));
        assert!(waiting.events.is_empty());
        assert!(finished_condition(&waiting.status).is_none());
        let done = plan(&j, &[], at(2));
        assert_eq!(
            finished_condition(&done.status).map(|c| c.type_.as_str()),
            Some("Failed")
        );
    }

    #[test]
    fn a_suspended_job_stops_its_pods_uncounted_and_a_resumed_one_starts_over() {
        let mut w = World::new(json!({"completions": 2, "parallelism": 2}));
        w.round(0);
        w.job.spec.suspend = Some(true);
        let suspended = w.round(5);
        assert_eq!(suspended.delete.len(), 2);
        assert!(suspended.delete.iter().all(|d| d.release_first));
        assert!(uncounted(&suspended).is_empty(), "not failures");
        assert_eq!(counter(suspended.status.active), 0);
        assert_eq!(w.condition_types(), ["Suspended=True"]);
        assert_eq!(reasons(&suspended), ["Suspended"]);
        assert!(w.pods.is_empty());
        assert!(w.round(6).events.is_empty(), "said once");

        w.job.spec.suspend = Some(false);
        let resumed = w.round(100);
        assert_eq!(resumed.create.len(), 2);
        assert_eq!(counter(resumed.status.failed), 0);
        assert_eq!(w.condition_types(), ["Suspended=False"]);
        assert_eq!(
            conditions(&resumed.status)[0].reason.as_deref(),
            Some("JobResumed")
        );
        assert_eq!(reasons(&resumed), ["Resumed"]);
        assert_eq!(
            resumed.status.start_time.as_ref().map(time_text).as_deref(),
            Some(stamp(100).as_str()),
            "the deadline counts from the resumption"
        );

        // Created suspended: no start time, no pods.
        let mut w = World::new(json!({"completions": 1, "suspend": true}));
        let plan = w.round(0);
        assert!(plan.create.is_empty());
        assert!(plan.status.start_time.is_none());
    }

    fn policy_job(rules: serde_json::Value) -> JobView {
        job(
            json!({"completions": 1, "backoffLimit": 6, "podFailurePolicy": {"rules": rules},
                   "template": {"spec": {"restartPolicy": "Never"}}}),
        )
    }

    #[test]
    fn a_fail_job_rule_fails_the_job_with_the_pod_failure_policy_reason() {
        let j = policy_job(json!([
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}
        ]));
        let pods = [finished(pod("a", "Running"), 42, 1)];
        let plan = plan(&j, &stored(&pods), at(2));
        let target = &conditions(&plan.status)[0];
        assert_eq!(
            (
                target.type_.as_str(),
                target.reason.as_deref().unwrap_or_default()
            ),
            ("FailureTarget", REASON_POD_FAILURE_POLICY)
        );
        assert_eq!(
            target.message.as_deref(),
            Some("Container main for pod default/a failed with exit code 42 matching FailJob rule at index 0")
        );
        assert!(plan.create.is_empty());
        // Another exit code is an ordinary failure, replaced.
        let other = [finished(pod("a", "Running"), 1, 1)];
        assert!(plan_of(&j, &other, 100).status.conditions.is_none());
        assert_eq!(plan_of(&j, &other, 100).create, [None]);
    }

    fn plan_of(j: &JobView, pods: &[v1::Pod], seconds: u64) -> JobPlan {
        plan(j, &stored(pods), at(seconds))
    }

    #[test]
    fn an_ignore_rule_keeps_a_failure_out_of_the_count_and_the_back_off() {
        let j = policy_job(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [137]}}
        ]));
        let mut evicted = finished(pod("a", "Running"), 1, 1);
        evicted.status.as_mut().unwrap().conditions = vec![v1::PodCondition {
            r#type: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        }];
        let killed = finished(pod("b", "Running"), 137, 1);
        for failed in [evicted, killed] {
            let plan = plan_of(&j, std::slice::from_ref(&failed), 2);
            assert!(uncounted(&plan).is_empty(), "not counted");
            assert_eq!(plan.release.len(), 1, "but released");
            assert_eq!(plan.create, [None], "replaced at once");
            assert!(!match_failure_policy(&j, &one(&failed)).counts);
        }
        // Count counts; rules are tried in order; NotIn and container
        // names narrow what matches.
        let j = policy_job(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "sidecar",
                                                  "operator": "In", "values": [1]}},
            {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            {"action": "Count", "onExitCodes": {"operator": "In", "values": [1]}}
        ]));
        let code = |c: i32| match_failure_policy(&j, &one(&finished(pod("p", "Running"), c, 1)));
        assert_eq!(
            code(1),
            PolicyMatch {
                fail_job: None,
                counts: true
            }
        );
        assert!(!code(3).counts, "NotIn [1, 2] ignores 3");
        assert!(code(2).counts, "no rule matches 2: counted");
        let plan = plan_of(&j, &[finished(pod("p", "Running"), 1, 1)], 2);
        assert_eq!(uncounted(&plan).failed, ["uid-p"]);
    }

    #[test]
    fn with_a_pod_failure_policy_a_terminating_pod_is_waited_for_not_replaced() {
        let j = policy_job(json!([]));
        let mut stopping = pod("a", "Running");
        stopping.metadata.as_mut().unwrap().deletion_timestamp = stamp(1);
        let plan = plan_of(&j, std::slice::from_ref(&stopping), 2);
        assert!(plan.create.is_empty(), "it may still succeed");
        assert!(uncounted(&plan).is_empty(), "not a failure yet");
        // Without one, a terminating pod is a failure: replaced once the
        // back-off from its deletion has passed.
        let j = job(json!({"completions": 1}));
        let plan = plan_of(&j, std::slice::from_ref(&stopping), 2);
        assert_eq!(uncounted(&plan).failed, ["uid-a"]);
        assert!(plan.create.is_empty());
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(9)));
        assert_eq!(plan_of(&j, &[stopping], 12).create, [None]);
    }

    #[test]
    fn on_failure_restarts_reaching_the_backoff_limit_fail_the_job() {
        let j = job(json!({"completions": 1, "backoffLimit": 2,
                           "template": {"spec": {"restartPolicy": "OnFailure"}}}));
        let mut restarting = running_ready("a");
        restarting.status.as_mut().unwrap().container_statuses = vec![v1::ContainerStatus {
            name: "main".into(),
            restart_count: 1,
            ..Default::default()
        }];
        assert!(plan_of(&j, std::slice::from_ref(&restarting), 1)
            .status
            .conditions
            .is_none());
        restarting.status.as_mut().unwrap().container_statuses[0].restart_count = 2;
        let plan = plan_of(&j, &[restarting], 1);
        assert_eq!(
            conditions(&plan.status)[0].reason.as_deref(),
            Some(REASON_BACKOFF_LIMIT)
        );
        assert_eq!(plan.delete.len(), 1);
    }

    #[test]
    fn without_completions_the_job_completes_once_a_pod_succeeded_and_none_runs() {
        let mut w = World::new(json!({"parallelism": 2}));
        assert_eq!(w.round(0).create.len(), 2);
        w.finish("work-1", 0, 5);
        let one_done = w.round(6);
        assert!(one_done.create.is_empty(), "no new pods after a success");
        assert!(w.job.status.conditions.is_none(), "work-2 still runs");
        w.finish("work-2", 0, 7);
        w.round(8);
        w.round(9);
        assert_eq!(
            w.condition_types(),
            ["SuccessCriteriaMet=True", "Complete=True"]
        );
        assert_eq!(counter(w.job.status.succeeded), 2);
    }

    #[test]
    fn excess_pods_go_the_least_advanced_first_without_counting_as_failures() {
        let j = job(json!({"completions": 5, "parallelism": 1}));
        let pending = pod("pending", "Pending");
        let ready = running_ready("ready");
        let plan = plan_of(&j, &[ready, pending], 1);
        assert_eq!(
            plan.delete,
            [PodDeletion {
                pod: PodRef {
                    name: "pending".into(),
                    uid: "uid-pending".into()
                },
                release_first: true
            }]
        );
        assert_eq!(counter(plan.status.active), 1);
        assert_eq!(plan.status.ready, Some(1));
        assert!(plan.create.is_empty());
    }

    #[test]
    fn an_indexed_job_runs_its_lowest_pending_indexes_and_records_the_completed_ones() {
        let mut w = World::new(json!({"completions": 5, "parallelism": 2,
                                      "completionMode": "Indexed"}));
        assert_eq!(w.round(0).create, [Some(0), Some(1)]);
        w.finish("work-1", 0, 3);
        let first = w.round(4);
        assert_eq!(
            first
                .status
                .completed_indexes
                .as_deref()
                .unwrap_or_default(),
            "0"
        );
        assert_eq!(counter(first.status.succeeded), 1);
        assert_eq!(first.create, [Some(2)]);
        assert!(uncounted(&first).is_empty(), "indexes need no uids");
        w.finish("work-2", 0, 5);
        w.finish("work-3", 0, 5);
        let more = w.round(6);
        assert_eq!(
            more.status.completed_indexes.as_deref().unwrap_or_default(),
            "0-2"
        );
        assert_eq!(more.create, [Some(3), Some(4)]);
        w.finish("work-5", 0, 7);
        assert_eq!(
            w.round(8)
                .status
                .completed_indexes
                .as_deref()
                .unwrap_or_default(),
            "0-2,4"
        );

        // A duplicated index keeps its most advanced pod.
        let j = job(json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}));
        let with_index = |mut p: v1::Pod, index: &str| {
            let meta = p.metadata.as_mut().unwrap();
            meta.annotations
                .insert(COMPLETION_INDEX_ANNOTATION.into(), index.into());
            p
        };
        let pods = [
            with_index(running_ready("a"), "1"),
            with_index(pod("b", "Pending"), "1"),
            with_index(pod("c", "Pending"), "7"),
        ];
        let plan = plan_of(&j, &pods, 1);
        let deleted: Vec<&str> = plan.delete.iter().map(|d| d.pod.name.as_str()).collect();
        assert_eq!(deleted, ["c", "b"], "out of range, then the duplicate");
    }

    #[test]
    fn completed_indexes_read_and_write_as_kubernetes_writes_them() {
        let set = parse_indexes("0,2-4,9,x,7-6", 8);
        assert_eq!(set, BTreeSet::from([0, 2, 3, 4]));
        assert_eq!(format_indexes(&set), "0,2-4");
        assert_eq!(format_indexes(&BTreeSet::from([1, 2])), "1-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(parse_indexes("0-2147483647", 3), BTreeSet::from([0, 1, 2]));
    }

    /// The metadata and spec of a pod document.
    fn pod_parts(pod: &Object) -> (v1::ObjectMeta, Value) {
        let Some(skiff_proto::api::object::Kind::Generic(document)) = &pod.kind else {
            panic!("not a document: {pod:?}");
        };
        assert_eq!((&*document.api_version, &*document.kind), ("v1", "Pod"));
        let spec = skiff_objects::generic::content(document)["spec"].clone();
        (document.metadata.clone().unwrap_or_default(), spec)
    }

    #[test]
    fn new_pods_carry_the_jobs_labels_finalizer_owner_and_index() {
        let j = job(json!({"completions": 4, "completionMode": "Indexed"}));
        let template = PodTemplate::read(&json!({
            "metadata": {"labels": {"app": "batch"}, "annotations": {"note": "x"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox",
                                     "env": [{"name": "MODE", "value": "fast"}]}],
                     "initContainers": [{"name": "setup", "image": "busybox"}]}
        }))
        .unwrap();
        let owner = v1::OwnerReference {
            kind: "Job".into(),
            name: "work".into(),
            uid: "job-uid".into(),
            controller: Some(true),
            ..Default::default()
        };
        let (meta, spec) = pod_parts(&new_pod(&j, &template, Some(3), Some(owner.clone())));
        assert_eq!(meta.generate_name, "work-3-");
        assert_eq!(meta.labels["app"], "batch");
        assert_eq!(meta.labels["batch.kubernetes.io/job-name"], "work");
        assert_eq!(meta.labels["batch.kubernetes.io/controller-uid"], "job-uid");
        assert_eq!(meta.labels["job-name"], "work");
        assert_eq!(meta.labels["controller-uid"], "job-uid");
        assert_eq!(meta.labels[COMPLETION_INDEX_ANNOTATION], "3");
        assert_eq!(meta.annotations[COMPLETION_INDEX_ANNOTATION], "3");
        assert_eq!(meta.annotations["note"], "x");
        assert_eq!(meta.finalizers, [TRACKING_FINALIZER]);
        assert_eq!(meta.owner_references, [owner]);
        assert_eq!(spec["hostname"], "work-3");
        let index_env = json!({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
            "apiVersion": "v1",
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']",
        }}});
        assert_eq!(
            spec["containers"][0]["env"],
            json!([{"name": "MODE", "value": "fast"}, index_env])
        );
        assert_eq!(spec["initContainers"][0]["env"], json!([index_env]));

        let (meta, spec) = pod_parts(&new_pod(&job(json!({})), &template, None, None));
        assert_eq!(meta.generate_name, "work-");
        assert!(!meta.annotations.contains_key(COMPLETION_INDEX_ANNOTATION));
        assert!(spec.get("hostname").is_none());
        assert!(spec["initContainers"][0].get("env").is_none());
        assert_eq!(
            generate_name(&"j".repeat(70), Some(12)),
            format!("{}-12-", "j".repeat(54))
        );
    }

    #[test]
    fn new_pods_keep_every_field_of_the_template_skiffs_model_lacks() {
        // Fields the protobuf model has no place for (affinity, os,
        // readiness gates): a pod made through it lost them.
        let spec = json!({
            "restartPolicy": "Never",
            "os": {"name": "linux"},
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a"]}
                    ]}}
                ],
            }},
            "readinessGates": [{"conditionType": "example.com/ready"}],
            "containers": [{"name": "main", "image": "busybox", "env": null}],
        });
        let template = PodTemplate::read(&json!({
            "metadata": {"creationTimestamp": null, "labels": {"app": "batch"}},
            "spec": spec,
        }))
        .unwrap();
        assert_eq!(template.metadata.labels["app"], "batch");
        let (_, made) = pod_parts(&new_pod(&job(json!({})), &template, None, None));
        let mut expected = spec.clone();
        expected["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("env");
        assert_eq!(made, expected);
        assert!(PodTemplate::read(&json!({"spec": []})).is_err());
        assert!(PodTemplate::read(&json!({"metadata": {"labels": 3}})).is_err());
    }

    #[test]
    fn a_job_being_deleted_lets_go_of_every_pod_and_starts_none() {
        let mut j = job(json!({"completions": 3, "parallelism": 2}));
        j.being_deleted = true;
        let pods = [running_ready("a"), finished(pod("b", "Running"), 0, 1)];
        let plan = plan_of(&j, &pods, 2);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        let released: Vec<&str> = plan.release.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(released, ["a", "b"]);
        assert_eq!(uncounted(&plan).succeeded, ["uid-b"]);
    }

    #[test]
    fn a_finished_job_lives_on_for_its_ttl_from_the_finish() {
        let mut j = job(json!({"ttlSecondsAfterFinished": 60}));
        assert_eq!(ttl_left(&j, at(0)), None, "not finished");
        j.status.conditions = Some(vec![new_condition(
            "Complete",
            true,
            REASON_COMPLETIONS_REACHED,
            "",
            &stamp(100),
        )]);
        assert_eq!(ttl_left(&j, at(130)), Some(Duration::from_secs(30)));
        assert_eq!(ttl_left(&j, at(500)), Some(Duration::ZERO));
        j.spec.ttl_seconds_after_finished = None;
        assert_eq!(ttl_left(&j, at(500)), None);
    }
}
