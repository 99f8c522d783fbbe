//! What a StatefulSet's members need next, decided as Kubernetes'
//! `StatefulSetControl` decides it, over plain facts about the members'
//! pods (no store, no clock), so that every rule is a unit test:
//!
//! - Members are the ordinals `start .. start + replicas`. A missing one is
//!   created, at the current revision below `start + partition` and at the
//!   update revision from there up (OnDelete: always the update revision).
//!   A finished (Failed or Succeeded) one is deleted, to come back under
//!   the same name once it is gone.
//! - OrderedReady goes one member at a time, lowest ordinal first, and
//!   waits while a member is being deleted or is not yet Running and Ready
//!   (and available, after `minReadySeconds`). Parallel does not wait.
//! - Pods outside the ordinals (a scale down) are removed highest first;
//!   OrderedReady removes one and waits for it to be gone.
//! - RollingUpdate, once nothing else is to be done, replaces members of
//!   an older revision from the highest ordinal down to `start +
//!   partition`, while fewer than `maxUnavailable` of that range are
//!   unavailable (1, Kubernetes' default, is its one-at-a-time rollout).
//!
//! [`count`] is Kubernetes' status arithmetic over the same facts.

use std::collections::BTreeMap;

use super::spec::{PodManagement, UpdateStrategy};

/// What the plan needs of one pod of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ordinal: i32,
    /// Its `controller-revision-hash` label: the name of its revision.
    pub revision: String,
    pub terminating: bool,
    /// Succeeded or Failed.
    pub finished: bool,
    /// Running and Ready.
    pub ready: bool,
    /// Ready for `minReadySeconds`.
    pub available: bool,
}

impl Member {
    fn healthy(&self) -> bool {
        self.ready && self.available && !self.terminating
    }
}

/// What the plan needs of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub replicas: i32,
    pub start: i32,
    pub management: PodManagement,
    pub strategy: UpdateStrategy,
    /// The revision the members had before the update began.
    pub current_revision: String,
    /// The revision of the current template.
    pub update_revision: String,
}

impl Shape {
    fn end(&self) -> i32 {
        self.start.saturating_add(self.replicas.max(0))
    }

    fn in_range(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal < self.end()
    }

    fn ordered(&self) -> bool {
        self.management == PodManagement::OrderedReady
    }

    /// The revision a new member `ordinal` is created at.
    pub fn revision_for(&self, ordinal: i32) -> &str {
        match &self.strategy {
            UpdateStrategy::RollingUpdate { partition, .. }
                if ordinal < self.start.saturating_add(*partition) =>
            {
                &self.current_revision
            }
            _ => &self.update_revision,
        }
    }
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It Failed or Succeeded: it comes back under its name.
    Finished,
    /// Its ordinal is beyond the replicas (a scale down).
    Condemned,
    /// It runs an older revision (a rolling update).
    Outdated,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Member `ordinal` gets its claims and its pod at `revision`.
    Create { ordinal: i32, revision: String },
    /// The pod named `pod` is deleted.
    Delete { pod: String, why: Why },
}

/// The changes for this round, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Something is waited for (a member to become Ready or to go): the
    /// next change will come from a change to a pod.
    pub waiting: bool,
}

/// The next changes for `members` (the StatefulSet's pods, one per
/// ordinal: the store holds one pod per name).
pub fn plan(shape: &Shape, members: &[Member]) -> Plan {
    let by_ordinal: BTreeMap<i32, &Member> = members.iter().map(|m| (m.ordinal, m)).collect();
    let ordered = shape.ordered();
    let mut plan = Plan::default();

    for ordinal in shape.start..shape.end() {
        let step_done = match by_ordinal.get(&ordinal) {
            None => {
                let revision = shape.revision_for(ordinal).to_owned();
                plan.steps.push(Step::Create { ordinal, revision });
                true
            }
            Some(m) if m.finished && !m.terminating => {
                plan.steps.push(Step::Delete {
                    pod: m.name.clone(),
                    why: Why::Finished,
                });
                true
            }
            Some(m) => !m.healthy(),
        };
        if step_done && ordered {
            plan.waiting = true;
            return plan;
        }
    }

    let mut condemned: Vec<&Member> = members
        .iter()
        .filter(|m| !shape.in_range(m.ordinal))
        .collect();
    condemned.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    for m in condemned {
        if !m.terminating {
            plan.steps.push(Step::Delete {
                pod: m.name.clone(),
                why: Why::Condemned,
            });
        }
        if ordered {
            plan.waiting = true;
            return plan;
        }
    }

    let UpdateStrategy::RollingUpdate { partition, .. } = &shape.strategy else {
        return plan;
    };
    let update_min = shape.start.saturating_add((*partition).max(0));
    let range: Vec<i32> = (update_min..shape.end()).rev().collect();
    let unavailable = range
        .iter()
        .filter(|o| !by_ordinal.get(o).is_some_and(|m| m.healthy()))
        .count();
    let unavailable = i32::try_from(unavailable).unwrap_or(i32::MAX);
    let mut budget = shape.strategy.max_unavailable(shape.replicas) - unavailable;
    for ordinal in range {
        let Some(m) = by_ordinal.get(&ordinal) else {
            continue;
        };
        if m.revision == shape.update_revision || m.terminating {
            continue;
        }
        if budget <= 0 {
            plan.waiting = true;
            break;
        }
        // A healthy member going down uses one of the budget; an unhealthy
        // one is counted already.
        if m.healthy() {
            budget -= 1;
        }
        plan.steps.push(Step::Delete {
            pod: m.name.clone(),
            why: Why::Outdated,
        });
    }
    plan
}

/// Kubernetes' counts of a StatefulSet's pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
}

/// The status counts of `members` against the two revisions, and whether
/// the rolling update is complete (every pod updated and Ready: the update
/// revision becomes the current one).
pub fn count(members: &[Member], current: &str, update: &str) -> (Counts, bool) {
    let mut counts = Counts::default();
    for m in members {
        counts.replicas += 1;
        if m.ready {
            counts.ready += 1;
            if m.available {
                counts.available += 1;
            }
        }
        if !m.terminating {
            if m.revision == current {
                counts.current += 1;
            }
            if m.revision == update {
                counts.updated += 1;
            }
        }
    }
    let complete = counts.updated == counts.replicas && counts.ready == counts.replicas;
    (counts, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "web-old";
    const NEW: &str = "web-new";

    fn member(ordinal: i32, revision: &str, ready: bool) -> Member {
        Member {
            name: format!("web-{ordinal}"),
            ordinal,
            revision: revision.to_owned(),
            terminating: false,
            finished: false,
            ready,
            available: ready,
        }
    }

    fn shape(replicas: i32, management: PodManagement, strategy: UpdateStrategy) -> Shape {
        Shape {
            replicas,
            start: 0,
            management,
            strategy,
            current_revision: OLD.to_owned(),
            update_revision: NEW.to_owned(),
        }
    }

    fn rolling(partition: i32, max_unavailable: &str) -> UpdateStrategy {
        UpdateStrategy::RollingUpdate {
            partition,
            max_unavailable: max_unavailable.to_owned(),
        }
    }

    fn ordered(replicas: i32) -> Shape {
        shape(replicas, PodManagement::OrderedReady, rolling(0, "1"))
    }

    fn create(ordinal: i32, revision: &str) -> Step {
        Step::Create {
            ordinal,
            revision: revision.to_owned(),
        }
    }

    fn delete(ordinal: i32, why: Why) -> Step {
        Step::Delete {
            pod: format!("web-{ordinal}"),
            why,
        }
    }

    #[test]
    fn ordered_ready_creates_one_member_at_a_time_in_order() {
        let shape = Shape {
            current_revision: NEW.to_owned(),
            ..ordered(3)
        };
        let first = plan(&shape, &[]);
        assert_eq!(first.steps, [create(0, NEW)]);
        assert!(first.waiting);
        // web-0 exists but is not Ready: nothing more.
        let waiting = plan(&shape, &[member(0, NEW, false)]);
        assert_eq!(waiting.steps, []);
        assert!(waiting.waiting);
        // Ready: web-1 next.
        let next = plan(&shape, &[member(0, NEW, true)]);
        assert_eq!(next.steps, [create(1, NEW)]);
        // Ready but not yet available (minReadySeconds): wait.
        let mut young = member(0, NEW, true);
        young.available = false;
        assert_eq!(plan(&shape, &[young]).steps, []);
        // A gap is filled before anything above it waits on it.
        let gap = plan(&shape, &[member(0, NEW, true), member(2, NEW, true)]);
        assert_eq!(gap.steps, [create(1, NEW)]);
        let all = [
            member(0, NEW, true),
            member(1, NEW, true),
            member(2, NEW, true),
        ];
        let done = plan(&shape, &all);
        assert_eq!(done, Plan::default());
    }

    #[test]
    fn parallel_creates_and_removes_every_member_at_once() {
        let shape = Shape {
            current_revision: NEW.to_owned(),
            ..shape(3, PodManagement::Parallel, rolling(0, "1"))
        };
        let first = plan(&shape, &[member(1, NEW, false)]);
        assert_eq!(first.steps, [create(0, NEW), create(2, NEW)]);
        let down = Shape {
            replicas: 1,
            ..shape
        };
        let members = [
            member(0, NEW, true),
            member(1, NEW, false),
            member(2, NEW, true),
        ];
        let removed = plan(&down, &members);
        let expected = [delete(2, Why::Condemned), delete(1, Why::Condemned)];
        assert_eq!(removed.steps, expected);
    }

    #[test]
    fn ordered_ready_scales_down_highest_first_one_at_a_time() {
        let shape = Shape {
            current_revision: NEW.to_owned(),
            ..ordered(1)
        };
        let mut members = vec![
            member(0, NEW, true),
            member(1, NEW, true),
            member(2, NEW, true),
        ];
        let first = plan(&shape, &members);
        assert_eq!(first.steps, [delete(2, Why::Condemned)]);
        members[2].terminating = true;
        let waiting = plan(&shape, &members);
        assert_eq!(waiting.steps, []);
        assert!(waiting.waiting, "web-2 is still going");
        members.pop();
        assert_eq!(plan(&shape, &members).steps, [delete(1, Why::Condemned)]);
        // A member below the replicas that is not Ready holds the scale
        // down back.
        members[0].ready = false;
        assert_eq!(plan(&shape, &members).steps, []);
    }

    #[test]
    fn a_finished_member_is_deleted_to_come_back_under_its_name() {
        let shape = Shape {
            current_revision: NEW.to_owned(),
            ..ordered(2)
        };
        let mut failed = member(0, NEW, false);
        failed.finished = true;
        let members = [failed.clone(), member(1, NEW, true)];
        assert_eq!(plan(&shape, &members).steps, [delete(0, Why::Finished)]);
        failed.terminating = true;
        let members = [failed, member(1, NEW, true)];
        assert_eq!(plan(&shape, &members).steps, [], "waits for it to go");
    }

    #[test]
    fn a_rolling_update_goes_from_the_highest_ordinal_down_one_at_a_time() {
        let shape = ordered(3);
        let mut members = vec![
            member(0, OLD, true),
            member(1, OLD, true),
            member(2, OLD, true),
        ];
        assert_eq!(plan(&shape, &members).steps, [delete(2, Why::Outdated)]);
        // web-2 is being replaced: nothing else goes.
        members[2].terminating = true;
        assert_eq!(plan(&shape, &members).steps, []);
        // It is gone: it comes back at the new revision.
        members.pop();
        assert_eq!(plan(&shape, &members).steps, [create(2, NEW)]);
        members.push(member(2, NEW, false));
        assert_eq!(plan(&shape, &members).steps, [], "web-2 not Ready yet");
        members[2].ready = true;
        members[2].available = true;
        assert_eq!(plan(&shape, &members).steps, [delete(1, Why::Outdated)]);
    }

    #[test]
    fn a_partition_keeps_the_members_below_it_at_the_current_revision() {
        let shape = shape(3, PodManagement::OrderedReady, rolling(2, "1"));
        let members = [
            member(0, OLD, true),
            member(1, OLD, true),
            member(2, NEW, true),
        ];
        assert_eq!(plan(&shape, &members), Plan::default(), "only web-2 rolls");
        // A member below the partition that is recreated keeps the old
        // revision; one at or above it gets the new one.
        assert_eq!(plan(&shape, &members[1..]).steps, [create(0, OLD)]);
        assert_eq!(shape.revision_for(1), OLD);
        assert_eq!(shape.revision_for(2), NEW);
        // Partition 0 again: web-1 goes next.
        let whole = Shape {
            strategy: rolling(0, "1"),
            ..shape
        };
        assert_eq!(plan(&whole, &members).steps, [delete(1, Why::Outdated)]);
    }

    #[test]
    fn max_unavailable_replaces_several_members_at_once() {
        let shape = shape(4, PodManagement::Parallel, rolling(0, "2"));
        let members: Vec<Member> = (0..4).map(|o| member(o, OLD, true)).collect();
        let expected = [delete(3, Why::Outdated), delete(2, Why::Outdated)];
        assert_eq!(plan(&shape, &members).steps, expected);
        // One is unavailable already: only one more goes.
        let mut members = members;
        members[3].ready = false;
        members[3].available = false;
        let expected = [delete(3, Why::Outdated), delete(2, Why::Outdated)];
        assert_eq!(
            plan(&shape, &members).steps,
            expected,
            "the unready one is free"
        );
        members[3].revision = NEW.to_owned();
        let step = plan(&shape, &members);
        assert_eq!(step.steps, [delete(2, Why::Outdated)]);
    }

    #[test]
    fn on_delete_replaces_nothing_and_recreates_at_the_update_revision() {
        let shape = shape(2, PodManagement::OrderedReady, UpdateStrategy::OnDelete);
        let members = [member(0, OLD, true), member(1, OLD, true)];
        assert_eq!(plan(&shape, &members), Plan::default());
        assert_eq!(plan(&shape, &members[1..]).steps, [create(0, NEW)]);
    }

    #[test]
    fn ordinals_start_where_the_spec_says() {
        let shape = Shape {
            start: 5,
            current_revision: NEW.to_owned(),
            ..ordered(2)
        };
        assert_eq!(plan(&shape, &[]).steps, [create(5, NEW)]);
        // web-0 is outside 5..7: removed once 5 and 6 are Ready.
        let members = [
            member(0, NEW, true),
            member(5, NEW, true),
            member(6, NEW, true),
        ];
        assert_eq!(plan(&shape, &members).steps, [delete(0, Why::Condemned)]);
    }

    #[test]
    fn counts_and_the_end_of_a_rollout() {
        let mut members = vec![
            member(0, OLD, true),
            member(1, NEW, true),
            member(2, NEW, false),
        ];
        let (counts, complete) = count(&members, OLD, NEW);
        let expected = Counts {
            replicas: 3,
            ready: 2,
            available: 2,
            current: 1,
            updated: 2,
        };
        assert_eq!(counts, expected);
        assert!(!complete);
        members[0].revision = NEW.to_owned();
        members[2].ready = true;
        members[2].available = true;
        let (counts, complete) = count(&members, OLD, NEW);
        assert_eq!((counts.updated, counts.current), (3, 0));
        assert!(complete);
        // A member being deleted is no longer current or updated.
        members[1].terminating = true;
        let (counts, complete) = count(&members, OLD, NEW);
        assert_eq!((counts.replicas, counts.updated), (3, 2));
        assert!(!complete);
    }
}
