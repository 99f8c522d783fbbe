//! The replica calculation of Kubernetes' HPA controller
//! (`replica_calculator.go`), as pure functions over what the controller
//! gathered: the target's pods ([`PodFacts`]) and each one's reading of
//! one resource ([`PodMetric`], in thousandths: millicores, or
//! thousandths of a byte as Kubernetes' `MilliValue` has memory).
//!
//! Pods are grouped as Kubernetes groups them: being deleted or Failed:
//! ignored; Pending: unready; no reading: missing; for CPU, a pod not
//! Ready, or Ready for less than one reading window within its first
//! 5 minutes (`--horizontal-pod-autoscaler-cpu-initialization-period`),
//! or never Ready since 30 s after it started
//! (`--horizontal-pod-autoscaler-initial-readiness-delay`): unready.
//! The usage ratio (utilization against the target, or average value
//! against the target) over the ready pods with readings gives
//! `ceil(ratio × ready pods)` unless it is within the tolerance (10%,
//! or `behavior.scale{Up,Down}.tolerance`); when pods are missing
//! readings (counted at 100% of their request on a scale down, 0% on a
//! scale up) or unready on a scale up (0%), the ratio is taken again with
//! them, and nothing changes if that flips the direction or falls within
//! the tolerance.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Pods younger than this may still be warming up their CPU.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// A pod not Ready this long after it started has never been Ready.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// How far the usage ratio may stray from 1 without a change
/// (`--horizontal-pod-autoscaler-tolerance`).
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// The resources resource metrics measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceName {
    Cpu,
    Memory,
}

impl ResourceName {
    /// `cpu` or `memory`; nothing else is measured.
    pub fn parse(name: &str) -> Option<ResourceName> {
        match name {
            "cpu" => Some(ResourceName::Cpu),
            "memory" => Some(ResourceName::Memory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceName::Cpu => "cpu",
            ResourceName::Memory => "memory",
        }
    }
}

/// One container's requests, in thousandths (`None`: not requested).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerRequests {
    pub name: String,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
}

impl ContainerRequests {
    fn of(&self, resource: ResourceName) -> Option<i64> {
        match resource {
            ResourceName::Cpu => self.cpu,
            ResourceName::Memory => self.memory,
        }
    }
}

/// What the calculation needs of one pod the target selects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodFacts {
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `status.startTime`.
    pub start_time: Option<SystemTime>,
    /// The `Ready` condition: whether it holds, and since when.
    pub ready: Option<(bool, SystemTime)>,
    /// Its (app) containers' requests.
    pub containers: Vec<ContainerRequests>,
}

/// One pod's reading of a resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// In thousandths.
    pub value: i64,
    /// When it was measured.
    pub timestamp: SystemTime,
    /// Over how long.
    pub window: Duration,
}

/// Readings by pod name.
pub type PodMetrics = BTreeMap<String, PodMetric>;

/// How far the usage ratio may go below and above 1 with no change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub scale_down: f64,
    pub scale_up: f64,
}

impl Default for Tolerances {
    fn default() -> Tolerances {
        Tolerances {
            scale_down: DEFAULT_TOLERANCE,
            scale_up: DEFAULT_TOLERANCE,
        }
    }
}

impl Tolerances {
    fn within(&self, ratio: f64) -> bool {
        1.0 - self.scale_down <= ratio && ratio <= 1.0 + self.scale_up
    }
}

/// Why no replica count could be computed (Kubernetes' words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalculationError {
    #[error("unable to get metrics for resource {resource}: no metrics returned from resource metrics API")]
    NoMetrics { resource: &'static str },
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: &'static str,
        container: String,
        pod: String,
    },
    #[error("did not receive metrics for any ready pods")]
    NoReadyMetrics,
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// One resource metric's inputs.
#[derive(Debug, Clone)]
pub struct Calculation<'a> {
    pub pods: &'a [PodFacts],
    pub metrics: PodMetrics,
    pub resource: ResourceName,
    /// A `ContainerResource` metric's container: its requests alone count.
    pub container: Option<&'a str>,
    /// The target's `spec.replicas`.
    pub current_replicas: i32,
    pub tolerances: Tolerances,
    pub now: SystemTime,
}

/// What a utilization target proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilizationProposal {
    pub replicas: i32,
    /// Percent of the requests used (ready pods with readings).
    pub utilization: i32,
    /// Their average reading, in thousandths.
    pub average: i64,
}

/// What an average value target proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueProposal {
    pub replicas: i32,
    /// The average reading of the ready pods with readings, in thousandths.
    pub average: i64,
}

/// The pods by how they count.
struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
    ignored: Vec<String>,
}

/// `groupPods`.
fn group(calc: &Calculation<'_>) -> Groups {
    let mut groups = Groups {
        ready: 0,
        unready: Vec::new(),
        missing: Vec::new(),
        ignored: Vec::new(),
    };
    for pod in calc.pods {
        if pod.deleting || pod.phase == "Failed" {
            groups.ignored.push(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            groups.unready.push(pod.name.clone());
            continue;
        }
        let Some(metric) = calc.metrics.get(&pod.name) else {
            groups.missing.push(pod.name.clone());
            continue;
        };
        if calc.resource == ResourceName::Cpu && cpu_unready(pod, metric, calc.now) {
            groups.unready.push(pod.name.clone());
            continue;
        }
        groups.ready += 1;
    }
    groups
}

/// Whether a CPU reading of `pod` says nothing yet: Kubernetes' rules for
/// pods warming up.
fn cpu_unready(pod: &PodFacts, metric: &PodMetric, now: SystemTime) -> bool {
    let (Some((ready, since)), Some(start)) = (pod.ready, pod.start_time) else {
        return true;
    };
    if start + CPU_INITIALIZATION_PERIOD > now {
        // Within its first minutes: not Ready, or not one whole window
        // measured since it last changed.
        !ready || metric.timestamp < since + metric.window
    } else {
        // Later: unready only if it has never been Ready.
        !ready && start + INITIAL_READINESS_DELAY > since
    }
}

/// `calculatePodRequests`: each pod's request (the sum over its
/// containers, or the one container's), every counted container needing
/// one.
fn requests(calc: &Calculation<'_>) -> Result<BTreeMap<String, i64>, CalculationError> {
    let mut requests = BTreeMap::new();
    for pod in calc.pods {
        let mut sum = 0i64;
        for container in &pod.containers {
            if calc.container.is_some_and(|c| c != container.name) {
                continue;
            }
            match container.of(calc.resource) {
                Some(request) => sum = sum.saturating_add(request),
                None => {
                    return Err(CalculationError::MissingRequest {
                        resource: calc.resource.as_str(),
                        container: container.name.clone(),
                        pod: pod.name.clone(),
                    })
                }
            }
        }
        requests.insert(pod.name.clone(), sum);
    }
    Ok(requests)
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, average reading).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), CalculationError> {
    let (mut used, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (pod, metric) in metrics {
        // Readings of pods not (or no longer) selected are extraneous.
        let Some(request) = requests.get(pod) else {
            continue;
        };
        used = used.saturating_add(metric.value);
        requested = requested.saturating_add(*request);
        entries += 1;
    }
    if requested == 0 {
        return Err(CalculationError::NoMatchingMetrics);
    }
    let utilization = used.saturating_mul(100) / requested;
    let utilization = i32::try_from(utilization).unwrap_or(i32::MAX);
    let ratio = f64::from(utilization) / f64::from(target.max(1));
    Ok((ratio, utilization, used / entries))
}

/// `GetMetricUsageRatio`: (ratio, average reading).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics
        .values()
        .fold(0i64, |sum, m| sum.saturating_add(m.value));
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target.max(1) as f64, average)
}

fn remove(metrics: &mut PodMetrics, pods: &[String]) {
    for pod in pods {
        metrics.remove(pod);
    }
}

fn ceil_replicas(ratio: f64, pods: usize) -> i32 {
    let wanted = (ratio * pods as f64).ceil();
    if wanted >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        wanted as i32
    }
}

/// `GetResourceReplicas`: the replicas for a target utilization (percent
/// of the pods' requests).
pub fn utilization_replicas(
    mut calc: Calculation<'_>,
    target_utilization: i32,
) -> Result<UtilizationProposal, CalculationError> {
    if calc.metrics.is_empty() {
        return Err(CalculationError::NoMetrics {
            resource: calc.resource.as_str(),
        });
    }
    if calc.pods.is_empty() {
        return Err(CalculationError::NoPods);
    }
    let groups = group(&calc);
    remove(&mut calc.metrics, &groups.ignored);
    remove(&mut calc.metrics, &groups.unready);
    let requests = requests(&calc)?;
    if calc.metrics.is_empty() {
        return Err(CalculationError::NoReadyMetrics);
    }
    let (ratio, utilization, average) =
        utilization_ratio(&calc.metrics, &requests, target_utilization)?;
    let proposal = |replicas| UtilizationProposal {
        replicas,
        utilization,
        average,
    };
    let current = calc.current_replicas;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if calc.tolerances.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(ratio, groups.ready)));
    }
    if !groups.missing.is_empty() {
        if ratio < 1.0 {
            // On a scale down, a pod without a reading uses all its
            // request (or the target, above 100%).
            let fallback = i64::from(target_utilization.max(100));
            for pod in &groups.missing {
                let value = requests.get(pod).copied().unwrap_or(0) * fallback / 100;
                calc.metrics.insert(pod.clone(), filler(value, calc.now));
            }
        } else if ratio > 1.0 {
            // On a scale up, none of it.
            for pod in &groups.missing {
                calc.metrics.insert(pod.clone(), filler(0, calc.now));
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            calc.metrics.insert(pod.clone(), filler(0, calc.now));
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&calc.metrics, &requests, target_utilization)?;
    Ok(proposal(settle(
        current,
        ratio,
        new_ratio,
        calc.metrics.len(),
        calc.tolerances,
    )))
}

/// `GetRawResourceReplicas` (`calcPlainMetricReplicas`): the replicas for
/// a target average value, in thousandths.
pub fn average_value_replicas(
    mut calc: Calculation<'_>,
    target: i64,
) -> Result<ValueProposal, CalculationError> {
    if calc.metrics.is_empty() {
        return Err(CalculationError::NoMetrics {
            resource: calc.resource.as_str(),
        });
    }
    if calc.pods.is_empty() {
        return Err(CalculationError::NoPods);
    }
    let groups = group(&calc);
    remove(&mut calc.metrics, &groups.ignored);
    remove(&mut calc.metrics, &groups.unready);
    if calc.metrics.is_empty() {
        return Err(CalculationError::NoReadyMetrics);
    }
    let (ratio, average) = usage_ratio(&calc.metrics, target);
    let proposal = |replicas| ValueProposal { replicas, average };
    let current = calc.current_replicas;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if calc.tolerances.within(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(ratio, groups.ready)));
    }
    if !groups.missing.is_empty() {
        let value = if ratio < 1.0 {
            Some(target)
        } else if ratio > 1.0 {
            Some(0)
        } else {
            None
        };
        if let Some(value) = value {
            for pod in &groups.missing {
                calc.metrics.insert(pod.clone(), filler(value, calc.now));
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            calc.metrics.insert(pod.clone(), filler(0, calc.now));
        }
    }
    let (new_ratio, _) = usage_ratio(&calc.metrics, target);
    Ok(proposal(settle(
        current,
        ratio,
        new_ratio,
        calc.metrics.len(),
        calc.tolerances,
    )))
}

/// A reading assumed for a pod that gave none (or none that counts).
fn filler(value: i64, now: SystemTime) -> PodMetric {
    PodMetric {
        value,
        timestamp: now,
        window: Duration::ZERO,
    }
}

/// The count after the assumed readings: the current one when the new
/// ratio is within the tolerance, or would turn the direction around
/// (itself, or through the number of pods counted).
fn settle(current: i32, ratio: f64, new_ratio: f64, counted: usize, tolerances: Tolerances) -> i32 {
    if tolerances.within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let replicas = ceil_replicas(new_ratio, counted);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return current;
    }
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
    }

    /// A pod Running and Ready for an hour, requesting `cpu` millicores.
    fn running(name: &str, cpu: i64) -> PodFacts {
        PodFacts {
            name: name.to_owned(),
            phase: "Running".to_owned(),
            deleting: false,
            start_time: Some(at(0)),
            ready: Some((true, at(10))),
            containers: vec![ContainerRequests {
                name: "app".to_owned(),
                cpu: Some(cpu),
                memory: Some(64 << 20 << 10),
            }],
        }
    }

    fn now() -> SystemTime {
        at(3600)
    }

    fn reading(value: i64) -> PodMetric {
        PodMetric {
            value,
            timestamp: now(),
            window: Duration::from_secs(15),
        }
    }

    fn readings(values: &[(&str, i64)]) -> PodMetrics {
        values
            .iter()
            .map(|(pod, value)| (pod.to_string(), reading(*value)))
            .collect()
    }

    fn cpu(pods: &[PodFacts], metrics: PodMetrics, current: i32) -> Calculation<'_> {
        Calculation {
            pods,
            metrics,
            resource: ResourceName::Cpu,
            container: None,
            current_replicas: current,
            tolerances: Tolerances::default(),
            now: now(),
        }
    }

    #[test]
    fn the_ratio_over_ready_pods_gives_the_count_outside_the_tolerance() {
        let pods = [running("a", 100), running("b", 100)];
        // 150% of 50%: three times the pods.
        let up = utilization_replicas(cpu(&pods, readings(&[("a", 150), ("b", 150)]), 2), 50);
        assert_eq!(
            up.unwrap(),
            UtilizationProposal {
                replicas: 6,
                utilization: 150,
                average: 150
            }
        );
        // 54% of 50% is within 10%: no change.
        let near = utilization_replicas(cpu(&pods, readings(&[("a", 54), ("b", 54)]), 2), 50);
        assert_eq!(near.unwrap().replicas, 2);
        // 56% is not.
        let over = utilization_replicas(cpu(&pods, readings(&[("a", 56), ("b", 56)]), 2), 50);
        assert_eq!(over.unwrap().replicas, 3);
        // 10% of 50%: ceil(0.2 × 2) = 1.
        let down = utilization_replicas(cpu(&pods, readings(&[("a", 10), ("b", 10)]), 2), 50);
        assert_eq!(down.unwrap().replicas, 1);
    }

    #[test]
    fn a_configured_tolerance_widens_one_direction() {
        let pods = [running("a", 100)];
        let mut calc = cpu(&pods, readings(&[("a", 70)]), 1);
        calc.tolerances.scale_up = 0.5;
        assert_eq!(utilization_replicas(calc, 50).unwrap().replicas, 1);
        let mut calc = cpu(&pods, readings(&[("a", 30)]), 2);
        calc.tolerances.scale_up = 0.5;
        assert_eq!(utilization_replicas(calc, 50).unwrap().replicas, 1);
    }

    #[test]
    fn pods_without_readings_count_fully_on_a_scale_down_and_not_at_all_on_a_scale_up() {
        let pods = [running("a", 100), running("b", 100), running("c", 100)];
        // Down: a and b at 10% of a 50% target; c assumed at 100%:
        // (10+10+100)/300 = 40% → ratio 0.8 → ceil(0.8 × 3) = 3: no change.
        let down = utilization_replicas(cpu(&pods, readings(&[("a", 10), ("b", 10)]), 3), 50);
        assert_eq!(down.unwrap().replicas, 3);
        // Without c the same readings would give 1.
        let two = [running("a", 100), running("b", 100)];
        let alone = utilization_replicas(cpu(&two, readings(&[("a", 10), ("b", 10)]), 2), 50);
        assert_eq!(alone.unwrap().replicas, 1);
        // Up: a and b at 150%; c assumed at 0%: 100% → ratio 2 → 6.
        let up = utilization_replicas(cpu(&pods, readings(&[("a", 150), ("b", 150)]), 3), 50);
        let up = up.unwrap();
        assert_eq!(up.replicas, 6);
        assert_eq!(up.utilization, 150, "reported over the pods measured");
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up_only() {
        let mut warming = running("c", 100);
        warming.start_time = Some(now() - Duration::from_secs(20));
        warming.ready = Some((false, now() - Duration::from_secs(20)));
        let pending = PodFacts {
            phase: "Pending".into(),
            ..running("d", 100)
        };
        let pods = [running("a", 100), running("b", 100), warming, pending];
        let metrics = readings(&[("a", 100), ("b", 100), ("c", 300)]);
        // Ready pods at 200% of 50%; c (unready) and d (pending) at 0%:
        // 200/400 = 50% → within the tolerance after all: no change.
        let up = utilization_replicas(cpu(&pods, metrics, 4), 50);
        assert_eq!(up.unwrap().replicas, 4);
        // On a scale down unready pods are left out.
        let metrics = readings(&[("a", 10), ("b", 10), ("c", 300)]);
        let down = utilization_replicas(cpu(&pods, metrics, 4), 50).unwrap();
        assert_eq!(down.replicas, 1, "ceil(0.2 × 2)");
        assert_eq!(down.utilization, 10);
    }

    #[test]
    fn a_fresh_ready_pod_counts_once_a_whole_window_was_measured() {
        let mut fresh = running("a", 100);
        fresh.start_time = Some(now() - Duration::from_secs(60));
        fresh.ready = Some((true, now() - Duration::from_secs(10)));
        let pods = [fresh];
        // Ready 10 s ago, a 15 s window ending now: not yet.
        let early = utilization_replicas(cpu(&pods, readings(&[("a", 200)]), 1), 50);
        assert_eq!(early.unwrap_err(), CalculationError::NoReadyMetrics);
        let mut later = readings(&[("a", 200)]);
        later.get_mut("a").unwrap().window = Duration::from_secs(5);
        assert_eq!(
            utilization_replicas(cpu(&pods, later, 1), 50)
                .unwrap()
                .replicas,
            4
        );
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored_and_memory_has_no_warm_up() {
        let mut gone = running("b", 100);
        gone.deleting = true;
        let failed = PodFacts {
            phase: "Failed".into(),
            ..running("c", 100)
        };
        let mut fresh = running("a", 100);
        fresh.ready = Some((false, now()));
        fresh.start_time = Some(now());
        let pods = [fresh, gone, failed];
        let mebibyte = 1000 << 20;
        let metrics = readings(&[
            ("a", 32 * mebibyte),
            ("b", 900 * mebibyte),
            ("c", 900 * mebibyte),
        ]);
        let calc = Calculation {
            resource: ResourceName::Memory,
            ..cpu(&pods, metrics, 3)
        };
        // 32 Mi of a 16 Mi average target, from pod a alone.
        let proposal = average_value_replicas(calc, 16 * mebibyte).unwrap();
        assert_eq!(
            proposal,
            ValueProposal {
                replicas: 2,
                average: 32 * mebibyte
            }
        );
    }

    #[test]
    fn a_container_without_a_request_stops_a_utilization_target() {
        let mut pod = running("a", 100);
        pod.containers.push(ContainerRequests {
            name: "sidecar".into(),
            cpu: None,
            memory: None,
        });
        let pods = [pod];
        let e = utilization_replicas(cpu(&pods, readings(&[("a", 100)]), 1), 50).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing request for cpu in container sidecar of Pod a"
        );
        // A ContainerResource target needs only its container's request.
        let calc = Calculation {
            container: Some("app"),
            ..cpu(&pods, readings(&[("a", 100)]), 1)
        };
        assert_eq!(utilization_replicas(calc, 50).unwrap().replicas, 2);
    }

    #[test]
    fn no_readings_at_all_or_no_pods_are_errors() {
        let pods = [running("a", 100)];
        assert_eq!(
            utilization_replicas(cpu(&pods, PodMetrics::new(), 1), 50)
                .unwrap_err()
                .to_string(),
            "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
        );
        assert_eq!(
            utilization_replicas(cpu(&[], readings(&[("a", 1)]), 1), 50).unwrap_err(),
            CalculationError::NoPods
        );
    }

    #[test]
    fn an_average_value_target_assumes_the_target_for_missing_pods_on_a_scale_down() {
        let pods = [
            running("a", 100),
            running("b", 100),
            running("c", 100),
            running("d", 100),
        ];
        // a, b at 10m of a 100m average; c and d assumed at 100m:
        // (10+10+100+100)/4 = 55 → ratio 0.55 → ceil(0.55 × 4) = 3.
        let calc = cpu(&pods, readings(&[("a", 10), ("b", 10)]), 4);
        assert_eq!(average_value_replicas(calc, 100).unwrap().replicas, 3);
    }
}
