//! Kubernetes' delete semantics, as pure decisions: what a delete does to a
//! stored object, and what an update may do to an object being deleted.
//! The state machine applies them on every master (so they hold whichever
//! master leads), and the controllers' recording fake applies the same.
//!
//! - An object goes at once unless something must happen first, and is
//!   meanwhile kept, marked with `metadata.deletionTimestamp` and
//!   `deletionGracePeriodSeconds`:
//!   - each of its `metadata.finalizers` must be removed, by an update of
//!     whoever added it;
//!   - a Foreground delete adds `foregroundDeletion`, which the garbage
//!     collector removes once it has deleted the dependents; an Orphan
//!     delete adds `orphan`, removed once the dependents no longer name
//!     the object as their owner;
//!   - a pod bound to a node gets a grace period for its containers to
//!     stop (`deletionTimestamp` = now + grace), which its node ends by
//!     confirming the teardown: a delete with grace 0.
//! - Once marked, an object stays marked: an update cannot clear the mark
//!   or add finalizers, only remove them, and removing the last one
//!   removes the object unless a pod's grace period still runs. A second
//!   delete does not move the mark, except that a pod's grace period may
//!   be shortened (to 0 by its node, or by a force delete); an explicit
//!   propagation policy sets the collector's finalizers, as in Kubernetes.
//!
//! The time is the proposer's (carried by the command), so every replica
//! decides the same.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

use super::ObjectExt;

/// The finalizer of a Foreground delete: the garbage collector deletes the
/// dependents first.
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";
/// The finalizer of an Orphan delete: the garbage collector frees the
/// dependents first.
pub const ORPHAN_DEPENDENTS: &str = "orphan";
/// A pod's grace period when its spec sets none (Kubernetes' default).
pub const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// The last second an RFC 3339 timestamp with a four-digit year can name
/// (9999-12-31T23:59:59Z); later deadlines are written as it.
const LAST_WRITABLE_SECOND: u64 = 253_402_300_799;

/// What happens to an object's dependents when it is deleted
/// (Kubernetes' `propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// The object goes; the garbage collector deletes the dependents after.
    Background,
    /// The object stays, marked, until the dependents are gone.
    Foreground,
    /// The object stays, marked, until the dependents no longer name it.
    Orphan,
}

/// A propagation policy that is none of Kubernetes' three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("propagationPolicy {given:?} is not one of Orphan, Foreground, Background")]
pub struct UnknownPropagation {
    pub given: String,
}

impl Propagation {
    /// A policy as Kubernetes spells it; `""` is none given.
    pub fn parse(text: &str) -> Result<Option<Propagation>, UnknownPropagation> {
        match text {
            "" => Ok(None),
            "Background" => Ok(Some(Propagation::Background)),
            "Foreground" => Ok(Some(Propagation::Foreground)),
            "Orphan" => Ok(Some(Propagation::Orphan)),
            other => Err(UnknownPropagation {
                given: other.to_owned(),
            }),
        }
    }

    /// The name as Kubernetes spells it.
    pub fn name(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }
}

/// How to delete (Kubernetes' `DeleteOptions`, as far as the store acts on
/// them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOptions {
    /// Unless empty, the object must be at this resourceVersion.
    pub resource_version: String,
    /// Unless empty, the object must have this uid.
    pub uid: String,
    /// `None`: the object's own collector finalizers decide (Background
    /// when it has neither).
    pub propagation: Option<Propagation>,
    /// Seconds a pod bound to a node is given to stop; 0 removes it at once
    /// (unless finalizers hold it). `None`: its
    /// `terminationGracePeriodSeconds`. Negative counts as 1, as in
    /// Kubernetes.
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    /// Only the preconditions a caller gave: everything else as by default.
    pub fn at_version(resource_version: &str) -> DeleteOptions {
        DeleteOptions {
            resource_version: resource_version.to_owned(),
            ..DeleteOptions::default()
        }
    }

    /// A force delete: no grace period (finalizers still hold the object).
    pub fn force() -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        }
    }

    /// A delete with `propagation` for the dependents.
    pub fn propagating(propagation: Propagation) -> DeleteOptions {
        DeleteOptions {
            propagation: Some(propagation),
            ..DeleteOptions::default()
        }
    }
}

/// What a delete does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// It goes now.
    Remove,
    /// It stays, marked (or marked anew): store this.
    Mark(Box<Object>),
    /// It is being deleted already, and this delete changes nothing.
    Unchanged,
}

/// Whether a stored Namespace is being deleted (marked, or in phase
/// `Terminating`): nothing new is made in it.
pub fn namespace_terminating(namespace: &Object) -> bool {
    !namespace.meta().deletion_timestamp.is_empty()
        || crate::namespaces::phase(namespace).as_deref() == Some("Terminating")
}

/// Decides what deleting `stored` with `options` at `now` does (the
/// preconditions are the caller's to check first).
pub fn decide_delete(stored: &Object, options: &DeleteOptions, now: SystemTime) -> DeleteOutcome {
    let old = stored.meta();
    let pod = crate::pods::facts(stored);
    let pod = pod.as_ref();
    let mut marked = stored.clone();
    let Ok(meta) = marked.meta_mut() else {
        return DeleteOutcome::Remove;
    };
    meta.finalizers = finalizers_for(&old.finalizers, options.propagation);
    if old.deletion_timestamp.is_empty() {
        let grace = pod.map_or(0, |p| pod_grace(p, options.grace_period_seconds));
        if grace == 0 && meta.finalizers.is_empty() {
            return DeleteOutcome::Remove;
        }
        meta.deletion_timestamp = timestamp(now, grace);
        meta.deletion_grace_period_seconds = grace;
        return DeleteOutcome::Mark(Box::new(marked));
    }
    // Already marked: only a pod's running grace period can be shortened.
    let running = old.deletion_grace_period_seconds;
    if let (Some(_), Some(asked)) = (pod, options.grace_period_seconds) {
        let asked = if asked < 0 { 1 } else { asked };
        if asked < running {
            let started = humantime::parse_rfc3339(&old.deletion_timestamp)
                .ok()
                .and_then(|end| end.checked_sub(Duration::from_secs(seconds(running))))
                .unwrap_or(now);
            meta.deletion_timestamp = timestamp(started, asked);
            meta.deletion_grace_period_seconds = asked;
        }
    }
    if meta.finalizers.is_empty() && meta.deletion_grace_period_seconds == 0 {
        return DeleteOutcome::Remove;
    }
    if marked == *stored {
        DeleteOutcome::Unchanged
    } else {
        DeleteOutcome::Mark(Box::new(marked))
    }
}

/// The finalizers an update of an object being deleted adds (none may
/// be): empty when it adds none, or the object is not being deleted.
pub fn added_finalizers(stored: &ObjectMeta, updated: &ObjectMeta) -> Vec<String> {
    if stored.deletion_timestamp.is_empty() {
        return Vec::new();
    }
    updated
        .finalizers
        .iter()
        .filter(|f| !stored.finalizers.contains(f))
        .cloned()
        .collect()
}

/// Whether an update removes the object: it is being deleted, the update
/// took away its last finalizer, and no grace period runs (a pod waits for
/// its node all the same).
pub fn removed_by_update(stored: &ObjectMeta, updated: &ObjectMeta) -> bool {
    !stored.deletion_timestamp.is_empty()
        && !stored.finalizers.is_empty()
        && updated.finalizers.is_empty()
        && updated.deletion_grace_period_seconds == 0
}

/// Whether an object is marked for deletion.
pub fn is_being_deleted(meta: &ObjectMeta) -> bool {
    !meta.deletion_timestamp.is_empty()
}

/// The finalizers after a delete with `propagation`: an explicit policy
/// replaces the collector's finalizers with its own (Background: none);
/// none given keeps them.
fn finalizers_for(current: &[String], propagation: Option<Propagation>) -> Vec<String> {
    let Some(propagation) = propagation else {
        return current.to_vec();
    };
    let mut wanted: Vec<String> = current
        .iter()
        .filter(|f| *f != FOREGROUND_DELETION && *f != ORPHAN_DEPENDENTS)
        .cloned()
        .collect();
    match propagation {
        Propagation::Background => {}
        Propagation::Foreground => wanted.push(FOREGROUND_DELETION.to_owned()),
        Propagation::Orphan => wanted.push(ORPHAN_DEPENDENTS.to_owned()),
    }
    let same_set = wanted.len() == current.len() && wanted.iter().all(|f| current.contains(f));
    if same_set {
        current.to_vec()
    } else {
        wanted
    }
}

/// A pod's grace period: none when it is not bound to a node or has
/// finished (nothing runs to stop); else what was asked, or its spec's.
fn pod_grace(pod: &crate::pods::Facts, asked: Option<i64>) -> i64 {
    if pod.node_name.is_empty() || pod.is_finished() {
        return 0;
    }
    let grace = asked
        .or(pod.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_POD_GRACE_SECONDS);
    if grace < 0 {
        1
    } else {
        grace
    }
}

fn seconds(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `at` plus `plus` seconds, as Kubernetes writes timestamps (whole
/// seconds; at most the last writable second).
fn timestamp(at: SystemTime, plus: i64) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let second = since_epoch
        .saturating_add(seconds(plus))
        .min(LAST_WRITABLE_SECOND);
    crate::rfc3339(UNIX_EPOCH + Duration::from_secs(second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoObject;
    use skiff_proto::v1;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn now() -> SystemTime {
        humantime::parse_rfc3339(NOW).unwrap()
    }

    fn meta(finalizers: &[&str]) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: "x".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            finalizers: finalizers.iter().map(|f| (*f).to_owned()).collect(),
            ..Default::default()
        })
    }

    fn config_map(finalizers: &[&str]) -> Object {
        v1::GenericObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            metadata: meta(finalizers),
            content: b"{}".to_vec(),
        }
        .into_object()
    }

    /// A pod on `node` ("": unbound) with a grace period of `grace` seconds.
    fn pod(node: &str, grace: Option<i64>, phase: &str) -> Object {
        v1::Pod {
            metadata: meta(&[]),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn marked(outcome: DeleteOutcome) -> Object {
        match outcome {
            DeleteOutcome::Mark(object) => *object,
            other => panic!("not marked: {other:?}"),
        }
    }

    fn mark_of(object: &Object) -> (&str, i64, Vec<&str>) {
        let m = object.meta();
        let finalizers = m.finalizers.iter().map(String::as_str).collect();
        (
            m.deletion_timestamp.as_str(),
            m.deletion_grace_period_seconds,
            finalizers,
        )
    }

    #[test]
    fn an_object_with_nothing_to_wait_for_goes_at_once() {
        let options = DeleteOptions::default();
        assert_eq!(
            decide_delete(&config_map(&[]), &options, now()),
            DeleteOutcome::Remove
        );
        let background = DeleteOptions::propagating(Propagation::Background);
        assert_eq!(
            decide_delete(&config_map(&[]), &background, now()),
            DeleteOutcome::Remove
        );
        // Nothing runs for these pods.
        for unbound_or_done in [pod("", Some(30), ""), pod("n1", Some(30), "Succeeded")] {
            let outcome = decide_delete(&unbound_or_done, &options, now());
            assert_eq!(outcome, DeleteOutcome::Remove);
        }
        let running = pod("n1", Some(30), "Running");
        let forced = decide_delete(&running, &DeleteOptions::force(), now());
        assert_eq!(forced, DeleteOutcome::Remove);
    }

    #[test]
    fn finalizers_and_propagation_keep_the_object_marked() {
        let kept = marked(decide_delete(
            &config_map(&["example.com/keep"]),
            &DeleteOptions::default(),
            now(),
        ));
        assert_eq!(mark_of(&kept), (NOW, 0, vec!["example.com/keep"]));

        let foreground = DeleteOptions::propagating(Propagation::Foreground);
        let kept = marked(decide_delete(&config_map(&[]), &foreground, now()));
        assert_eq!(mark_of(&kept), (NOW, 0, vec![FOREGROUND_DELETION]));

        let orphan = DeleteOptions::propagating(Propagation::Orphan);
        let kept = marked(decide_delete(&config_map(&["a"]), &orphan, now()));
        assert_eq!(mark_of(&kept), (NOW, 0, vec!["a", ORPHAN_DEPENDENTS]));

        // An explicit Background takes a collector finalizer away.
        let background = DeleteOptions::propagating(Propagation::Background);
        let outcome = decide_delete(&config_map(&[ORPHAN_DEPENDENTS]), &background, now());
        assert_eq!(outcome, DeleteOutcome::Remove);
        // None given: the object's own collector finalizer stays.
        let kept = decide_delete(
            &config_map(&[ORPHAN_DEPENDENTS]),
            &DeleteOptions::default(),
            now(),
        );
        assert_eq!(mark_of(&marked(kept)).2, vec![ORPHAN_DEPENDENTS]);
    }

    #[test]
    fn a_bound_pod_is_given_its_grace_period() {
        let running = pod("n1", Some(20), "Running");
        let kept = marked(decide_delete(&running, &DeleteOptions::default(), now()));
        assert_eq!(mark_of(&kept), ("2026-01-01T00:00:20Z", 20, vec![]));
        // Without one in its spec: Kubernetes' 30 s.
        let kept = decide_delete(
            &pod("n1", None, "Running"),
            &DeleteOptions::default(),
            now(),
        );
        assert_eq!(mark_of(&marked(kept)).1, DEFAULT_POD_GRACE_SECONDS);
        // Asked for: that one; a negative one counts as 1 s.
        let asked = DeleteOptions {
            grace_period_seconds: Some(5),
            ..DeleteOptions::default()
        };
        let kept = marked(decide_delete(&running, &asked, now()));
        assert_eq!(mark_of(&kept), ("2026-01-01T00:00:05Z", 5, vec![]));
        let negative = DeleteOptions {
            grace_period_seconds: Some(-3),
            ..DeleteOptions::default()
        };
        let kept = marked(decide_delete(&running, &negative, now()));
        assert_eq!(mark_of(&kept).1, 1);
        // An absurd one is written as the last writable second.
        let forever = DeleteOptions {
            grace_period_seconds: Some(i64::MAX),
            ..DeleteOptions::default()
        };
        let kept = marked(decide_delete(&running, &forever, now()));
        assert_eq!(mark_of(&kept).0, "9999-12-31T23:59:59Z");
    }

    #[test]
    fn a_second_delete_only_shortens_a_pods_grace_period() {
        let later = now() + Duration::from_secs(7);
        let terminating = marked(decide_delete(
            &pod("n1", Some(30), "Running"),
            &DeleteOptions::default(),
            now(),
        ));
        let again = decide_delete(&terminating, &DeleteOptions::default(), later);
        assert_eq!(again, DeleteOutcome::Unchanged);
        let longer = DeleteOptions {
            grace_period_seconds: Some(60),
            ..DeleteOptions::default()
        };
        assert_eq!(
            decide_delete(&terminating, &longer, later),
            DeleteOutcome::Unchanged
        );
        let shorter = DeleteOptions {
            grace_period_seconds: Some(10),
            ..DeleteOptions::default()
        };
        let shortened = marked(decide_delete(&terminating, &shorter, later));
        // From when the deletion started, not from now.
        assert_eq!(mark_of(&shortened), ("2026-01-01T00:00:10Z", 10, vec![]));
        // The node's confirmation (grace 0) removes it.
        assert_eq!(
            decide_delete(&shortened, &DeleteOptions::force(), later),
            DeleteOutcome::Remove
        );

        // Other kinds keep their mark whatever the grace asked.
        let held = marked(decide_delete(
            &config_map(&["a"]),
            &DeleteOptions::default(),
            now(),
        ));
        assert_eq!(
            decide_delete(&held, &DeleteOptions::force(), later),
            DeleteOutcome::Unchanged
        );
    }

    #[test]
    fn a_pod_held_by_a_finalizer_waits_for_it_after_its_node_confirms() {
        let mut running = pod("n1", Some(30), "Running");
        running.meta_mut().unwrap().finalizers = vec!["example.com/audit".into()];
        let terminating = marked(decide_delete(&running, &DeleteOptions::default(), now()));
        let confirmed = marked(decide_delete(&terminating, &DeleteOptions::force(), now()));
        assert_eq!(mark_of(&confirmed), (NOW, 0, vec!["example.com/audit"]));
        // Its last finalizer removed by an update: gone.
        let mut updated = confirmed.meta().clone();
        updated.finalizers.clear();
        assert!(removed_by_update(confirmed.meta(), &updated));
        // While the grace period runs, the node still has to confirm.
        let mut still_running = terminating.meta().clone();
        still_running.finalizers.clear();
        assert!(!removed_by_update(terminating.meta(), &still_running));
    }

    #[test]
    fn updates_of_an_object_being_deleted_may_only_remove_finalizers() {
        let live = config_map(&["a"]);
        let mut more = live.meta().clone();
        more.finalizers.push("b".into());
        assert!(
            added_finalizers(live.meta(), &more).is_empty(),
            "a live object takes any"
        );
        assert!(!removed_by_update(live.meta(), &ObjectMeta::default()));

        let held = marked(decide_delete(&live, &DeleteOptions::default(), now()));
        let mut more = held.meta().clone();
        more.finalizers.push("b".into());
        assert_eq!(added_finalizers(held.meta(), &more), ["b"]);
        let mut fewer = held.meta().clone();
        fewer.finalizers.clear();
        assert!(added_finalizers(held.meta(), &fewer).is_empty());
        assert!(removed_by_update(held.meta(), &fewer));
        assert!(!removed_by_update(held.meta(), held.meta()));
    }

    #[test]
    fn propagation_policies_are_read_as_kubernetes_spells_them() {
        assert_eq!(Propagation::parse(""), Ok(None));
        for p in [
            Propagation::Background,
            Propagation::Foreground,
            Propagation::Orphan,
        ] {
            assert_eq!(Propagation::parse(p.name()), Ok(Some(p)));
        }
        let e = Propagation::parse("Sideways").unwrap_err();
        assert!(e.to_string().contains("Sideways"), "{e}");
    }
}
