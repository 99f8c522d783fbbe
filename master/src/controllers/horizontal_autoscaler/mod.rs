//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), as
//! Kubernetes' `podautoscaler` controller runs it, on the leader: every
//! 15 s (`--horizontal-pod-autoscaler-sync-period`; at once when its spec
//! changes) each autoscaler reads its target's scale (a Deployment,
//! ReplicaSet or StatefulSet: `objects::scale`), the pods the target
//! selects and their resource usage from a [`PodUsageSource`], proposes a
//! count per metric ([`calculator`]: `Resource` and `ContainerResource`
//! metrics of CPU and memory, `Utilization` of the pods' requests or
//! `AverageValue`), takes the highest, stabilizes and rate-limits it
//! ([`normalization`], over a history kept in memory), writes the target's
//! `spec.replicas` as its `scale` subresource does, and the autoscaler's
//! status ([`model`]: current and desired replicas, `lastScaleTime`,
//! `currentMetrics`, the `AbleToScale`, `ScalingActive` and
//! `ScalingLimited` conditions with Kubernetes' reasons,
//! `observedGeneration`). It records Kubernetes' Events
//! (`SuccessfulRescale` "New size: 3; reason: cpu resource utilization
//! (percentage of request) above target", `FailedGetScale`,
//! `FailedGetResourceMetric`, `FailedComputeMetricsReplicas`,
//! `FailedRescale`, `SelectorRequired`, ...). `Pods`, `Object` and
//! `External` metrics are kept but not measured: skiff serves no custom or
//! external metrics API, and their condition says so.
//!
//! Usage comes through the narrow [`PodUsageSource`] trait, so the
//! decisions are tested against a fake; the real source is the master's
//! resource metrics (`metrics_source.rs`, wired in with the metrics API).

pub mod calculator;
mod metrics_source;
pub mod model;
pub mod normalization;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use skiff_objects::deletion::is_being_deleted;
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::typed::api::core::v1::Container;
use skiff_objects::typed::meta::Time;
use skiff_objects::{rfc3339, Quantity};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler, Retry};
use crate::events::{Clock, SystemClock};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::{StateMachineError, StoredEvent};
use crate::writer;
use calculator::{
    average_value_replicas, utilization_replicas, Calculation, ContainerRequests, PodFacts,
    PodMetric, PodMetrics, ResourceName, Tolerances,
};
use model::{
    resource_status, unmeasured_status, with_status, AutoscalerStatus, AutoscalerView, Conditions,
    MetricSpec, MetricStatus, MetricTarget,
};
use normalization::History;
use skiff_objects::{registry, scale, selector, IntoObject, Kind, ObjectExt};

/// How often each autoscaler is looked at.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// A look this much before its time counts as on time (timers and the
/// wall clock are not exactly in step).
const PACING_SLACK: Duration = Duration::from_secs(1);
/// The component its Events are recorded as.
const COMPONENT: &str = "horizontal-pod-autoscaler";

const ABLE_TO_SCALE: &str = "AbleToScale";
const SCALING_ACTIVE: &str = "ScalingActive";
const SCALING_LIMITED: &str = "ScalingLimited";

/// One container's usage in a pod's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    pub name: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A pod's latest resource usage reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSample {
    /// When it was measured (the end of its window).
    pub timestamp: SystemTime,
    /// Over how long the CPU usage was averaged.
    pub window: Duration,
    pub containers: Vec<ContainerSample>,
}

/// Where pods' usage readings come from (the master's resource metrics;
/// a fake in tests).
pub trait PodUsageSource: Send + Sync {
    /// The latest reading of the pod, if there is one.
    fn pod_usage(&self, namespace: &str, name: &str) -> Option<UsageSample>;
}

/// What the controller keeps of one autoscaler between looks.
#[derive(Debug, Default)]
struct Tracked {
    history: History,
    /// When the last look started, and the generation it saw.
    last_look: Option<(SystemTime, i64)>,
}

pub struct HorizontalAutoscalerController {
    ctx: Context,
    usage: Arc<dyn PodUsageSource>,
    clock: Arc<dyn Clock>,
    tracked: Mutex<HashMap<ObjectKey, Tracked>>,
}

impl HorizontalAutoscalerController {
    pub fn new(ctx: Context, usage: Arc<dyn PodUsageSource>) -> HorizontalAutoscalerController {
        HorizontalAutoscalerController::with_clock(ctx, usage, Arc::new(SystemClock))
    }

    pub fn with_clock(
        ctx: Context,
        usage: Arc<dyn PodUsageSource>,
        clock: Arc<dyn Clock>,
    ) -> HorizontalAutoscalerController {
        HorizontalAutoscalerController {
            ctx,
            usage,
            clock,
            tracked: Mutex::new(HashMap::new()),
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_history<T>(&self, key: &ObjectKey, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.tracked().entry(key.clone()).or_default().history)
    }

    /// Whether this look comes too soon after the last one (the same
    /// generation less than [`SYNC_PERIOD`] ago: the controller's own
    /// status write, or a resync); otherwise it is recorded as the last.
    fn too_soon(&self, key: &ObjectKey, generation: i64, now: SystemTime) -> bool {
        let mut tracked = self.tracked();
        let entry = tracked.entry(key.clone()).or_default();
        if let Some((at, seen)) = entry.last_look {
            let elapsed = now.duration_since(at).ok();
            if seen == generation && elapsed.is_some_and(|e| e + PACING_SLACK < SYNC_PERIOD) {
                return true;
            }
        }
        entry.last_look = Some((now, generation));
        false
    }
}

impl Reconciler for HorizontalAutoscalerController {
    const NAME: &'static str = "horizontal-pod-autoscaler";
    const KIND: Kind = Kind::HorizontalPodAutoscaler;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::HorizontalPodAutoscaler]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::HorizontalPodAutoscaler => ObjectKey::of(object).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let now = self.clock.now();
        let found = self
            .ctx
            .store
            .get(Kind::HorizontalPodAutoscaler, &key.namespace, &key.name)?;
        let Some(object) = found else {
            // Deleted: its history goes with it.
            self.tracked().remove(key);
            return Ok(Action::Done);
        };
        let Some(Body::Generic(stored)) = &object.kind else {
            return Ok(Action::Done);
        };
        if !object.meta().deletion_timestamp.is_empty() {
            return Ok(Action::Done);
        }
        let view = match AutoscalerView::read(stored) {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(error = %e, "not reconciling a HorizontalPodAutoscaler that cannot be read");
                return Ok(Action::Done);
            }
        };
        // The next look is already queued by the last one.
        if self.too_soon(key, view.generation, now) {
            return Ok(Action::Done);
        }
        self.look(key, &object, stored, &view, now).await?;
        Ok(Action::RequeueAfter(SYNC_PERIOD))
    }

    /// As Kubernetes: a failed look is retried at the next sync.
    fn error_policy(&self, _key: &ObjectKey, _error: &ReconcileError) -> Retry {
        Retry::After(SYNC_PERIOD)
    }
}

/// The autoscaler's target, read.
struct Target {
    object: Object,
    scale: scale::Scale,
}

/// Why the target's scale could not be read.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    #[error("no matches for kind {kind:?} in group {group:?}")]
    UnknownKind { kind: String, group: String },
    #[error(transparent)]
    NoScale(#[from] scale::ScaleError),
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error(transparent)]
    Store(#[from] StateMachineError),
}

/// What the metrics propose together (`computeReplicasForMetrics`).
struct Measured {
    /// `None`: no count (every metric failed, or some failed and the
    /// others would scale down).
    replicas: Option<i32>,
    /// The metric that proposed the count.
    metric: String,
    /// `currentMetrics`, one per metric.
    statuses: Vec<MetricStatus>,
    /// What failed, if anything.
    error: Option<String>,
}

/// One metric's proposal.
struct Proposal {
    replicas: i32,
    /// How the rescale reason names the metric.
    name: String,
    status: MetricStatus,
}

/// Why a metric proposed nothing: the Event's and condition's reason, and
/// the error.
type MetricFailure = (&'static str, String);

impl HorizontalAutoscalerController {
    /// One look at an autoscaler (`reconcileAutoscaler`).
    async fn look(
        &self,
        key: &ObjectKey,
        object: &Object,
        stored: &v1::GenericObject,
        view: &AutoscalerView,
        now: SystemTime,
    ) -> Result<(), ReconcileError> {
        let events = self.ctx.events.for_component(COMPONENT);
        let now_text = rfc3339(now);
        let mut status = view.status.clone();
        status.observed_generation = Some(view.generation);
        let target = match self.target(view) {
            Ok(target) => target,
            Err(TargetError::Store(e)) => return Err(e.into()),
            Err(e) => {
                events.warning(object, "FailedGetScale", e.to_string());
                let message =
                    format!("the HPA controller was unable to get the target's current scale: {e}");
                status.set_condition(ABLE_TO_SCALE, false, "FailedGetScale", &message, &now_text);
                return self.write_status(object, stored, view, &status).await;
            }
        };
        status.set_condition(
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
            &now_text,
        );
        let current = target.scale.replicas;
        self.with_history(key, |h| h.record_initial(current, now));
        let (min, max) = (view.min_replicas(), view.spec.max_replicas);
        let behavior = view.behavior();
        let mut desired = 0;
        let mut reason = String::new();
        let mut rescale = true;
        let mut statuses = Vec::new();
        if current == 0 && min != 0 {
            rescale = false;
            status.set_condition(
                SCALING_ACTIVE,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &now_text,
            );
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".to_owned();
            desired = max;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".to_owned();
            desired = min;
        } else {
            let measured = self.measure(object, view, &target, &mut status, &now_text, now)?;
            statuses = measured.statuses;
            let Some(proposed) = measured.replicas else {
                status.current_replicas = Some(current);
                status.current_metrics = Some(statuses);
                let written = self.write_status(object, stored, view, &status).await;
                if let Some(error) = measured.error {
                    events.warning(object, "FailedComputeMetricsReplicas", error);
                }
                return written;
            };
            if let Some(error) = &measured.error {
                // Some metrics failed; the others still scale up.
                tracing::debug!(autoscaler = %key.name, %error, "scaling on the metrics that work");
            }
            let mut metric = "";
            if proposed > desired {
                desired = proposed;
                metric = measured.metric.as_str();
            }
            if desired > current {
                reason = format!("{metric} above target");
            }
            if desired < current {
                reason = "All metrics below target".to_owned();
            }
            let normalized = self.with_history(key, |h| {
                h.normalize(behavior.as_ref(), current, desired, (min, max), now)
            });
            let able = normalized.able_to_scale;
            status.set_condition(
                ABLE_TO_SCALE,
                able.holds,
                able.reason,
                able.message,
                &now_text,
            );
            let limited = normalized.scaling_limited;
            let (holds, why, message) = (limited.holds, limited.reason, limited.message);
            status.set_condition(SCALING_LIMITED, holds, why, message, &now_text);
            desired = normalized.replicas;
            rescale = desired != current;
        }
        if rescale {
            if let Err(e) = self.scale_target(&target, desired).await {
                let message = format!("New size: {desired}; reason: {reason}; error: {e}");
                events.warning(object, "FailedRescale", message);
                let message =
                    format!("the HPA controller was unable to update the target scale: {e}");
                status.set_condition(
                    ABLE_TO_SCALE,
                    false,
                    "FailedUpdateScale",
                    &message,
                    &now_text,
                );
                status.current_replicas = Some(current);
                status.current_metrics = Some(statuses);
                if let Err(status_error) = self.write_status(object, stored, view, &status).await {
                    tracing::debug!(autoscaler = %key.name, error = %status_error, "status not written");
                }
                return Err(e.into());
            }
            let message =
                format!("the HPA controller was able to update the target scale to {desired}");
            status.set_condition(ABLE_TO_SCALE, true, "SucceededRescale", &message, &now_text);
            events.normal(
                object,
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {reason}"),
            );
            self.with_history(key, |h| {
                h.record_scale(behavior.as_ref(), current, desired, now)
            });
            tracing::info!(
                autoscaler = %key.name, namespace = %key.namespace, from = current, to = desired,
                %reason, "rescaled"
            );
            status.last_scale_time = crate::controllers::job::model::time(&now_text);
        } else {
            desired = current;
        }
        status.current_replicas = Some(current);
        status.desired_replicas = desired;
        status.current_metrics = Some(statuses);
        self.write_status(object, stored, view, &status).await
    }

    /// The target named by `spec.scaleTargetRef`, and its scale.
    fn target(&self, view: &AutoscalerView) -> Result<Target, TargetError> {
        let reference = &view.spec.scale_target_ref;
        let group = reference
            .api_version
            .as_deref()
            .and_then(|v| v.rsplit_once('/'))
            .map_or("", |(group, _)| group);
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.name() == reference.kind && registry::info(*k).group == group)
            .ok_or_else(|| TargetError::UnknownKind {
                kind: reference.kind.clone(),
                group: group.to_owned(),
            })?;
        if !scale::has_scale(kind) {
            return Err(scale::ScaleError::NoScale {
                kind: kind.name().to_owned(),
            }
            .into());
        }
        let found = self.ctx.store.get(kind, &view.namespace, &reference.name)?;
        let object = found.ok_or_else(|| TargetError::NotFound {
            resource: registry::info(kind).qualified_resource(),
            name: reference.name.clone(),
        })?;
        let object = Arc::unwrap_or_clone(object);
        let scale = scale::read(&object)?;
        Ok(Target { object, scale })
    }

    /// Writes `replicas` into the target, as its `scale` subresource does
    /// (conditional on the version read).
    async fn scale_target(&self, target: &Target, replicas: i32) -> Result<(), writer::Error> {
        let mut object = target.object.clone();
        if let Err(e) = scale::set_replicas(&mut object, replicas) {
            // Read as a scaled kind a moment ago: cannot happen.
            return Err(writer::Error::Invalid(e.to_string()));
        }
        self.ctx.writer.update(object).await.map(|_| ())
    }

    /// The status write, when anything changed (`updateStatusIfNeeded`).
    async fn write_status(
        &self,
        object: &Object,
        stored: &v1::GenericObject,
        view: &AutoscalerView,
        status: &AutoscalerStatus,
    ) -> Result<(), ReconcileError> {
        // Compared as stored: with what Kubernetes leaves out left out, as
        // the view read it (a zero `currentReplicas`, empty lists).
        let status = model::with_kubernetes_omissions(status.clone());
        if status == view.status {
            return Ok(());
        }
        let updated = with_status(stored, &status).into_object();
        match self.ctx.writer.update_status(updated).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if !e.is_conflict() {
                    let events = self.ctx.events.for_component(COMPONENT);
                    events.warning(object, "FailedUpdateStatus", e.to_string());
                }
                Err(e.into())
            }
        }
    }

    /// The pods of `namespace` that `selector` selects.
    fn pods_selected(
        &self,
        namespace: &str,
        selector: &v1::LabelSelector,
    ) -> Result<Vec<StoredPod>, StateMachineError> {
        let candidates = if selector.match_labels.is_empty() {
            self.ctx.store.list(Kind::Pod, Some(namespace))?.0
        } else {
            self.ctx
                .store
                .select(Kind::Pod, namespace, &selector.match_labels)
        };
        Ok(candidates
            .into_iter()
            .filter(|o| selector::matches(selector, &o.meta().labels))
            .filter_map(StoredPod::read)
            .collect())
    }

    /// `computeReplicasForMetrics`: each metric's proposal, the highest
    /// wins; the `ScalingActive` condition says how it went.
    fn measure(
        &self,
        object: &Object,
        view: &AutoscalerView,
        target: &Target,
        status: &mut AutoscalerStatus,
        now_text: &str,
        now: SystemTime,
    ) -> Result<Measured, StateMachineError> {
        let events = self.ctx.events.for_component(COMPONENT);
        if selector::is_empty(&target.scale.selector) {
            let error = "selector is required";
            events.warning(object, "SelectorRequired", error);
            status.set_condition(
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
                now_text,
            );
            return Ok(Measured {
                replicas: None,
                metric: String::new(),
                statuses: Vec::new(),
                error: Some(error.to_owned()),
            });
        }
        let pods = self.pods_selected(&view.namespace, &target.scale.selector)?;
        let facts: Vec<PodFacts> = pods.iter().map(pod_facts).collect();
        let samples: BTreeMap<String, UsageSample> = facts
            .iter()
            .filter_map(|pod| {
                let sample = self.usage.pod_usage(&view.namespace, &pod.name)?;
                Some((pod.name.clone(), sample))
            })
            .collect();
        let metrics = view.metrics();
        let round = Round {
            pods: &facts,
            samples: &samples,
            current: target.scale.replicas,
            tolerances: view.tolerances(),
            now,
        };
        let mut statuses = vec![unmeasured_status(); metrics.len()];
        let (mut replicas, mut metric_name) = (0, String::new());
        let mut failures: Vec<MetricFailure> = Vec::new();
        for (index, metric) in metrics.iter().enumerate() {
            match round.propose(metric) {
                Ok(proposal) => {
                    statuses[index] = proposal.status;
                    if replicas == 0 || proposal.replicas > replicas {
                        replicas = proposal.replicas;
                        metric_name = proposal.name;
                    }
                }
                Err((reason, error)) => {
                    events.warning(object, reason, error.clone());
                    failures.push((reason, error));
                }
            }
        }
        let error = failures.first().map(|(_, first)| {
            format!(
                "invalid metrics ({} invalid out of {}), first error is: {first}",
                failures.len(),
                metrics.len()
            )
        });
        let all_failed = failures.len() >= metrics.len();
        if all_failed || (!failures.is_empty() && replicas < target.scale.replicas) {
            if let Some((reason, first)) = failures.first() {
                let message = format!("the HPA was unable to compute the replica count: {first}");
                status.set_condition(SCALING_ACTIVE, false, reason, &message, now_text);
            }
            return Ok(Measured {
                replicas: None,
                metric: String::new(),
                statuses,
                error,
            });
        }
        let message = format!(
            "the HPA was able to successfully calculate a replica count from {metric_name}"
        );
        status.set_condition(SCALING_ACTIVE, true, "ValidMetricFound", &message, now_text);
        Ok(Measured {
            replicas: Some(replicas),
            metric: metric_name,
            statuses,
            error,
        })
    }
}

/// What every metric of one look is computed over.
struct Round<'a> {
    pods: &'a [PodFacts],
    samples: &'a BTreeMap<String, UsageSample>,
    /// The target's `spec.replicas`.
    current: i32,
    tolerances: Tolerances,
    now: SystemTime,
}

impl Round<'_> {
    /// `computeReplicasForMetric`.
    fn propose(&self, metric: &MetricSpec) -> Result<Proposal, MetricFailure> {
        let custom = |reason: &'static str, what: &str, name: &str| -> MetricFailure {
            (
                reason,
                format!("unable to get {what} {name}: skiff serves no {what}s API"),
            )
        };
        match metric.type_.as_str() {
            "Resource" => {
                let reason = "FailedGetResourceMetric";
                let source = metric
                    .resource
                    .as_ref()
                    .ok_or_else(|| missing(reason, "resource"))?;
                self.resource(&source.name, &source.target, None)
                    .map_err(|e| (reason, e))
            }
            "ContainerResource" => {
                let reason = "FailedGetContainerResourceMetric";
                let source = metric
                    .container_resource
                    .as_ref()
                    .ok_or_else(|| missing(reason, "containerResource"))?;
                self.resource(&source.name, &source.target, Some(&source.container))
                    .map_err(|e| (reason, e))
            }
            "Pods" => {
                let name = metric.pods.as_ref().map_or("", |p| p.metric.name.as_str());
                Err(custom("FailedGetPodsMetric", "custom metric", name))
            }
            "Object" => {
                let name = metric
                    .object
                    .as_ref()
                    .map_or("", |o| o.metric.name.as_str());
                let (reason, error) = custom("FailedGetObjectMetric", "custom metric", name);
                Err((
                    reason,
                    format!("failed to get object metric value: {error}"),
                ))
            }
            "External" => {
                let name = metric
                    .external
                    .as_ref()
                    .map_or("", |e| e.metric.name.as_str());
                Err(custom("FailedGetExternalMetric", "external metric", name))
            }
            other => Err((
                "InvalidMetricSourceType",
                format!("unknown metric source type {other:?}"),
            )),
        }
    }

    /// `computeStatusForResourceMetricGeneric`.
    fn resource(
        &self,
        name: &str,
        target: &MetricTarget,
        container: Option<&str>,
    ) -> Result<Proposal, String> {
        let Some(resource) = ResourceName::parse(name) else {
            // Resource metrics measure CPU and memory only.
            let what = if target.average_value.is_some() {
                "usage"
            } else {
                "utilization"
            };
            return Err(format!(
                "failed to get {name} {what}: unable to get metrics for resource {name}: no metrics returned from resource metrics API"
            ));
        };
        let calculation = Calculation {
            pods: self.pods,
            metrics: readings(self.samples, resource, container),
            resource,
            container,
            current_replicas: self.current,
            tolerances: self.tolerances,
            now: self.now,
        };
        if let Some(average) = &target.average_value {
            let goal = skiff_objects::Quantity::parse(&average.0)
                .ok()
                .map(|q| q.milli())
                .filter(|milli| *milli > 0)
                .ok_or_else(|| format!("invalid average value target {} for {name}", average.0))?;
            let proposal = average_value_replicas(calculation, goal)
                .map_err(|e| format!("failed to get {name} usage: {e}"))?;
            return Ok(Proposal {
                replicas: proposal.replicas,
                name: format!("{name} resource"),
                status: resource_status(name, container, None, proposal.average),
            });
        }
        let Some(utilization) = target.average_utilization else {
            return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".to_owned());
        };
        let proposal = utilization_replicas(calculation, utilization)
            .map_err(|e| format!("failed to get {name} utilization: {e}"))?;
        let kind = if container.is_some() {
            "container resource"
        } else {
            "resource"
        };
        Ok(Proposal {
            replicas: proposal.replicas,
            name: format!("{name} {kind} utilization (percentage of request)"),
            status: resource_status(
                name,
                container,
                Some(proposal.utilization),
                proposal.average,
            ),
        })
    }
}

/// A metric whose type names a source that is not there.
fn missing(reason: &'static str, field: &str) -> MetricFailure {
    (
        reason,
        format!("invalid metric: the {field} source is missing"),
    )
}

/// The pods' readings of `resource` (of `container` alone when given), in
/// thousandths; a pod without that container has none.
fn readings(
    samples: &BTreeMap<String, UsageSample>,
    resource: ResourceName,
    container: Option<&str>,
) -> PodMetrics {
    let thousandths = |sample: &ContainerSample| -> i64 {
        match resource {
            ResourceName::Cpu => i64::try_from(sample.cpu_millis).unwrap_or(i64::MAX),
            ResourceName::Memory => i64::try_from(sample.memory_bytes)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        }
    };
    samples
        .iter()
        .filter_map(|(pod, sample)| {
            let mut counted = sample
                .containers
                .iter()
                .filter(|c| container.is_none_or(|name| name == c.name))
                .peekable();
            counted.peek()?;
            let value = counted.fold(0i64, |sum, c| sum.saturating_add(thousandths(c)));
            let metric = PodMetric {
                value,
                timestamp: sample.timestamp,
                window: sample.window,
            };
            Some((pod.clone(), metric))
        })
        .collect()
}

/// What the calculation needs of a pod. A container's limit stands in for
/// a request it lacks, as Kubernetes' defaulting would have set it.
fn pod_facts(stored: &StoredPod) -> PodFacts {
    let (meta, pod) = (stored.meta(), &*stored.pod);
    let status = pod.status.as_ref();
    let time = |t: &Time| SystemTime::from(t.0);
    let ready = status
        .and_then(|s| s.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            let since = c
                .last_transition_time
                .as_ref()
                .map_or(SystemTime::UNIX_EPOCH, time);
            (c.status == "True", since)
        });
    let request = |container: &Container, resource: &str| -> Option<i64> {
        let resources = container.resources.as_ref()?;
        let given = resources
            .requests
            .as_ref()
            .and_then(|r| r.get(resource))
            .or_else(|| resources.limits.as_ref()?.get(resource))?;
        Quantity::parse(&given.0).ok().map(|q| q.milli())
    };
    let containers = pod.spec.as_ref().map_or_else(Vec::new, |spec| {
        spec.containers
            .iter()
            .map(|c| ContainerRequests {
                name: c.name.clone(),
                cpu: request(c, "cpu"),
                memory: request(c, "memory"),
            })
            .collect()
    });
    PodFacts {
        name: meta.name.clone(),
        phase: pods::phase(pod).to_owned(),
        deleting: is_being_deleted(meta),
        start_time: status.and_then(|s| s.start_time.as_ref()).map(time),
        ready,
        containers,
    }
}

#[cfg(test)]
mod tests;
