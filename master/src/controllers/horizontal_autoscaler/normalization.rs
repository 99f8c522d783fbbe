//! What Kubernetes' HPA controller does to the replica count the metrics
//! propose before it scales (`normalizeDesiredReplicas` and
//! `normalizeDesiredReplicasWithBehaviors`), over a [`History`] of recent
//! recommendations and scale events kept in the leader's memory, as
//! Kubernetes keeps them in the controller manager's (a new leader starts
//! with none: the first recommendation is the current count).
//!
//! Without `spec.behavior`: the highest recommendation of the last 5
//! minutes (`--horizontal-pod-autoscaler-downscale-stabilization`) wins,
//! and a scale up goes at most to twice the current count (at least 4),
//! within `minReplicas`..`maxReplicas`. With it: each direction's
//! stabilization window (the lowest recent recommendation holds a scale
//! up back, the highest a scale down), then its policies' rate (`Pods` or
//! `Percent` per `periodSeconds`, counted from the scale events of the
//! period; `selectPolicy` Max, Min or Disabled). Each step says why, as
//! the `AbleToScale` and `ScalingLimited` conditions read.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

/// How long a higher recommendation holds a scale down back when no
/// `behavior` says otherwise.
pub const DOWNSCALE_STABILIZATION_WINDOW: Duration = Duration::from_secs(300);
/// Without `behavior`, a scale up goes at most to this many times the
/// current count ...
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
/// ... or to this many pods, whichever is more.
const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;

/// `selectPolicy`: which policy's limit applies when there are several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The one allowing the largest change.
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// A policy's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// At most `value` pods (or percent) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: Duration,
}

/// One direction's rules, complete (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub window: Duration,
    pub select: SelectPolicy,
    pub policies: Vec<Policy>,
}

/// `spec.behavior`, complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

/// A condition's verdict: whether it holds, why, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub holds: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// The count to scale to, and the conditions that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    pub able_to_scale: Verdict,
    pub scaling_limited: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recommendation {
    replicas: i32,
    at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    change: i32,
    at: SystemTime,
}

/// One autoscaler's recent recommendations (before stabilization) and
/// scale events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    recommendations: Vec<Recommendation>,
    scale_ups: Vec<ScaleEvent>,
    scale_downs: Vec<ScaleEvent>,
}

const READY: Verdict = Verdict {
    holds: true,
    reason: "ReadyForNewScale",
    message: "recommended size matches current size",
};
const UP_STABILIZED: Verdict = Verdict {
    holds: true,
    reason: "ScaleUpStabilized",
    message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
};
const DOWN_STABILIZED: Verdict = Verdict {
    holds: true,
    reason: "ScaleDownStabilized",
    message: "recent recommendations were higher than current one, applying the highest recent recommendation",
};

/// A limit's reason and message (whether it holds is decided after).
type Limit = (&'static str, &'static str);
const WITHIN_RANGE: Limit = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: Limit = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: Limit = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: Limit = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: Limit = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// `now - by`, or the epoch.
fn before(now: SystemTime, by: Duration) -> SystemTime {
    now.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn clamp_i32(n: i64) -> i32 {
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl History {
    /// `recordInitialRecommendation`: the current count, when nothing has
    /// been recommended yet.
    pub fn record_initial(&mut self, current: i32, now: SystemTime) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// The count to scale to from `current` when the metrics propose
    /// `desired`; records `desired` among the recommendations.
    pub fn normalize(
        &mut self,
        behavior: Option<&Behavior>,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: SystemTime,
    ) -> Normalized {
        match behavior {
            None => self.normalize_plain(current, desired, (min, max), now),
            Some(behavior) => {
                self.normalize_with_behavior(behavior, current, desired, (min, max), now)
            }
        }
    }

    fn normalize_plain(
        &mut self,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: SystemTime,
    ) -> Normalized {
        let stabilized = self.stabilize(desired, now);
        let able_to_scale = if stabilized != desired {
            DOWN_STABILIZED
        } else {
            READY
        };
        let (replicas, (reason, message)) = limit_plain(current, stabilized, min, max);
        Normalized {
            replicas,
            able_to_scale,
            scaling_limited: Verdict {
                holds: replicas != stabilized,
                reason,
                message,
            },
        }
    }

    /// `stabilizeRecommendation`: the highest of `desired` and the
    /// recommendations of the last 5 minutes.
    fn stabilize(&mut self, desired: i32, now: SystemTime) -> i32 {
        let cutoff = before(now, DOWNSCALE_STABILIZATION_WINDOW);
        // Older ones are never counted again.
        self.recommendations.retain(|r| r.at >= cutoff);
        let highest = self
            .recommendations
            .iter()
            .map(|r| r.replicas)
            .fold(desired, i32::max);
        self.recommendations.push(Recommendation {
            replicas: desired,
            at: now,
        });
        highest
    }

    fn normalize_with_behavior(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: SystemTime,
    ) -> Normalized {
        let stabilized = self.stabilize_with_behavior(behavior, current, desired, now);
        let able_to_scale = if stabilized == desired {
            READY
        } else if desired >= current {
            UP_STABILIZED
        } else {
            DOWN_STABILIZED
        };
        let (replicas, (reason, message)) =
            self.limit_rate(behavior, current, stabilized, (min, max), now);
        Normalized {
            replicas,
            able_to_scale,
            scaling_limited: Verdict {
                holds: replicas != stabilized,
                reason,
                message,
            },
        }
    }

    /// `stabilizeRecommendationWithBehaviors`: no higher than the lowest
    /// recommendation within the scale-up window, no lower than the
    /// highest within the scale-down window, the current count when those
    /// allow it.
    fn stabilize_with_behavior(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        now: SystemTime,
    ) -> i32 {
        let up_cutoff = before(now, behavior.scale_up.window);
        let down_cutoff = before(now, behavior.scale_down.window);
        let (mut up, mut down) = (desired, desired);
        for recommendation in &self.recommendations {
            if recommendation.at > up_cutoff {
                up = up.min(recommendation.replicas);
            }
            if recommendation.at > down_cutoff {
                down = down.max(recommendation.replicas);
            }
        }
        // up <= desired <= down: the current count, moved into that range.
        let stabilized = current.max(up).min(down);
        self.recommendations
            .retain(|r| !(r.at < up_cutoff && r.at < down_cutoff));
        self.recommendations.push(Recommendation {
            replicas: desired,
            at: now,
        });
        stabilized
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the policies' limit for
    /// this period, then `minReplicas`..`maxReplicas`.
    fn limit_rate(
        &self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: SystemTime,
    ) -> (i32, Limit) {
        match desired.cmp(&current) {
            Ordering::Greater => {
                let limit = self
                    .scale_up_limit(&behavior.scale_up, current, now)
                    .max(current);
                let (allowed, why) = if max > limit {
                    (limit, UP_LIMIT)
                } else {
                    (max, TOO_MANY)
                };
                if desired > allowed {
                    return (allowed, why);
                }
            }
            Ordering::Less => {
                let limit = self
                    .scale_down_limit(&behavior.scale_down, current, now)
                    .min(current);
                let (allowed, why) = if min < limit {
                    (limit, DOWN_LIMIT)
                } else {
                    (min, TOO_FEW)
                };
                if desired < allowed {
                    return (allowed, why);
                }
            }
            Ordering::Equal => {}
        }
        (desired, WITHIN_RANGE)
    }

    /// The count at the start of a policy's period: now's, less what was
    /// added within it, plus what was removed.
    fn period_start(&self, current: i32, period: Duration, now: SystemTime) -> i64 {
        let cutoff = before(now, period);
        let within = |events: &[ScaleEvent]| -> i64 {
            events
                .iter()
                .filter(|e| e.at > cutoff)
                .map(|e| i64::from(e.change))
                .sum()
        };
        i64::from(current) - within(&self.scale_ups) + within(&self.scale_downs)
    }

    /// `calculateScaleUpLimitWithScalingRules`.
    fn scale_up_limit(&self, rules: &Rules, current: i32, now: SystemTime) -> i32 {
        let pick: fn(i64, i64) -> i64 = match rules.select {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => i64::min,
            SelectPolicy::Max => i64::max,
        };
        let mut result = match rules.select {
            SelectPolicy::Min => i64::from(i32::MAX),
            _ => i64::from(i32::MIN),
        };
        for policy in &rules.policies {
            let start = self.period_start(current, policy.period, now);
            let proposed = match policy.kind {
                PolicyKind::Pods => start + i64::from(policy.value),
                // Rounded up: a small percentage must still allow a pod.
                PolicyKind::Percent => {
                    (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
                }
            };
            result = pick(result, proposed);
        }
        clamp_i32(result)
    }

    /// `calculateScaleDownLimitWithBehaviors`.
    fn scale_down_limit(&self, rules: &Rules, current: i32, now: SystemTime) -> i32 {
        // For a scale down the smallest change is the highest count.
        let pick: fn(i64, i64) -> i64 = match rules.select {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => i64::max,
            SelectPolicy::Max => i64::min,
        };
        let mut result = match rules.select {
            SelectPolicy::Min => i64::from(i32::MIN),
            _ => i64::from(i32::MAX),
        };
        for policy in &rules.policies {
            let start = self.period_start(current, policy.period, now);
            let proposed = match policy.kind {
                PolicyKind::Pods => start - i64::from(policy.value),
                PolicyKind::Percent => {
                    (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
                }
            };
            result = pick(result, proposed);
        }
        clamp_i32(result)
    }

    /// `storeScaleEvent`: a scale from `previous` to `new` (kept only with
    /// a `behavior`, whose policies count them).
    pub fn record_scale(
        &mut self,
        behavior: Option<&Behavior>,
        previous: i32,
        new: i32,
        now: SystemTime,
    ) {
        let Some(behavior) = behavior else {
            return;
        };
        // Events older than every policy's period never count again.
        let longest = behavior
            .scale_up
            .policies
            .iter()
            .chain(&behavior.scale_down.policies)
            .map(|p| p.period)
            .max()
            .unwrap_or_default();
        let cutoff = before(now, longest);
        self.scale_ups.retain(|e| e.at >= cutoff);
        self.scale_downs.retain(|e| e.at >= cutoff);
        if new > previous {
            self.scale_ups.push(ScaleEvent {
                change: new - previous,
                at: now,
            });
        } else {
            self.scale_downs.push(ScaleEvent {
                change: previous - new,
                at: now,
            });
        }
    }
}

/// `convertDesiredReplicasWithRules`: within `minReplicas`, and at most
/// twice the current count (at least 4) or `maxReplicas`.
fn limit_plain(current: i32, desired: i32, min: i32, max: i32) -> (i32, Limit) {
    let scale_up_limit =
        (SCALE_UP_LIMIT_FACTOR * f64::from(current)).max(SCALE_UP_LIMIT_MINIMUM) as i32;
    let (allowed, why) = if max > scale_up_limit {
        (scale_up_limit, UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    if desired < min {
        (min, TOO_FEW)
    } else if desired > allowed {
        (allowed, why)
    } else {
        (desired, WITHIN_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    /// Kubernetes' defaults with the given scale-down window.
    fn defaults(down_window: u64) -> Behavior {
        let seconds = Duration::from_secs;
        Behavior {
            scale_up: Rules {
                window: Duration::ZERO,
                select: SelectPolicy::Max,
                policies: vec![
                    Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period: seconds(15),
                    },
                    Policy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period: seconds(15),
                    },
                ],
            },
            scale_down: Rules {
                window: seconds(down_window),
                select: SelectPolicy::Max,
                policies: vec![Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: seconds(15),
                }],
            },
        }
    }

    #[test]
    fn without_behavior_a_scale_down_waits_five_minutes_for_the_highest_recommendation() {
        let mut history = History::default();
        history.record_initial(4, at(0));
        let held = history.normalize(None, 4, 1, (1, 10), at(15));
        assert_eq!(held.replicas, 4);
        assert_eq!(held.able_to_scale.reason, "ScaleDownStabilized");
        assert!(!held.scaling_limited.holds);
        // 4 was recommended at 0 s; at 301 s only the 1 of 15 s is left.
        let down = history.normalize(None, 4, 1, (1, 10), at(301));
        assert_eq!(down.replicas, 1);
        assert_eq!(down.able_to_scale, READY);
        assert_eq!(down.scaling_limited.reason, "DesiredWithinRange");
    }

    #[test]
    fn without_behavior_a_scale_up_is_at_most_double_or_four_and_within_the_bounds() {
        let mut history = History::default();
        let up = history.normalize(None, 1, 10, (1, 20), at(0));
        assert_eq!(up.replicas, 4);
        assert_eq!(up.scaling_limited.reason, "ScaleUpLimit");
        assert!(up.scaling_limited.holds);
        let up = history.normalize(None, 3, 10, (1, 20), at(15));
        assert_eq!(up.replicas, 6);
        let capped = history.normalize(None, 4, 30, (1, 5), at(30));
        assert_eq!(
            (capped.replicas, capped.scaling_limited.reason),
            (5, "TooManyReplicas")
        );
        let floor = History::default().normalize(None, 2, 0, (2, 5), at(0));
        assert_eq!(
            (floor.replicas, floor.scaling_limited.reason),
            (2, "TooFewReplicas")
        );
        assert!(floor.scaling_limited.holds);
    }

    #[test]
    fn default_policies_add_four_pods_or_double_per_fifteen_seconds() {
        let behavior = defaults(300);
        let mut history = History::default();
        history.record_initial(1, at(0));
        let first = history.normalize(Some(&behavior), 1, 10, (1, 20), at(0));
        assert_eq!(first.replicas, 5, "max(1 + 4, 1 × 2)");
        assert_eq!(first.scaling_limited.reason, "ScaleUpLimit");
        history.record_scale(Some(&behavior), 1, 5, at(0));
        // Within the same period the 4 added count: no more yet.
        let soon = history.normalize(Some(&behavior), 5, 10, (1, 20), at(5));
        assert_eq!(soon.replicas, 5);
        // A period later: max(5 + 4, 5 × 2).
        let later = history.normalize(Some(&behavior), 5, 10, (1, 20), at(16));
        assert_eq!(later.replicas, 10);
        assert_eq!(later.scaling_limited.reason, "DesiredWithinRange");
    }

    #[test]
    fn a_scale_down_window_of_zero_scales_down_at_once_and_the_default_holds_back() {
        let mut history = History::default();
        history.record_initial(5, at(0));
        let now = history.normalize(Some(&defaults(0)), 5, 1, (1, 10), at(15));
        assert_eq!(now.replicas, 1);
        let mut history = History::default();
        history.record_initial(5, at(0));
        let held = history.normalize(Some(&defaults(300)), 5, 1, (1, 10), at(15));
        assert_eq!(held.replicas, 5);
        assert_eq!(held.able_to_scale, DOWN_STABILIZED);
    }

    #[test]
    fn a_scale_up_window_holds_the_lowest_recent_recommendation() {
        let mut behavior = defaults(0);
        behavior.scale_up.window = Duration::from_secs(60);
        let mut history = History::default();
        history.record_initial(2, at(0));
        let held = history.normalize(Some(&behavior), 2, 6, (1, 10), at(15));
        assert_eq!(held.replicas, 2);
        assert_eq!(held.able_to_scale, UP_STABILIZED);
        // At 61 s the 2 of 0 s is gone; 6 was recommended at 15 s.
        let up = history.normalize(Some(&behavior), 2, 8, (1, 10), at(61));
        assert_eq!(up.replicas, 6);
    }

    #[test]
    fn select_policy_min_takes_the_smaller_change_and_disabled_none() {
        let mut behavior = defaults(0);
        behavior.scale_up.select = SelectPolicy::Min;
        behavior.scale_up.policies = vec![
            Policy {
                kind: PolicyKind::Pods,
                value: 1,
                period: Duration::from_secs(60),
            },
            Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(60),
            },
        ];
        let up = History::default().normalize(Some(&behavior), 4, 10, (1, 10), at(0));
        assert_eq!(up.replicas, 5, "min(4 + 1, 4 × 2)");
        behavior.scale_down.select = SelectPolicy::Disabled;
        let down = History::default().normalize(Some(&behavior), 5, 1, (1, 10), at(0));
        assert_eq!(
            (down.replicas, down.scaling_limited.reason),
            (5, "ScaleDownLimit")
        );
    }

    #[test]
    fn a_pods_policy_limits_a_scale_down_per_period() {
        let mut behavior = defaults(0);
        behavior.scale_down.policies = vec![Policy {
            kind: PolicyKind::Pods,
            value: 1,
            period: Duration::from_secs(60),
        }];
        let mut history = History::default();
        let first = history.normalize(Some(&behavior), 5, 1, (1, 10), at(0));
        assert_eq!(first.replicas, 4);
        history.record_scale(Some(&behavior), 5, 4, at(0));
        let second = history.normalize(Some(&behavior), 4, 1, (1, 10), at(30));
        assert_eq!(second.replicas, 4, "one pod a minute");
        let third = history.normalize(Some(&behavior), 4, 1, (1, 10), at(61));
        assert_eq!(third.replicas, 3);
    }
}
