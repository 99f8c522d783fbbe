//! The controller's looks against the recording store and a recording
//! fake of the usage source, on a manual clock: what it scales, what
//! status and Events it writes, and when it waits.

use std::sync::Mutex;

use super::*;
use crate::controllers::job::model::time;
use crate::controllers::recording::{context, Failure, ManualClock, RecordingObjects, WriteOp};
use crate::controllers::ObjectReads;
use skiff_objects::typed;

/// A recording fake of the metrics: readings set by the test, and every
/// pod asked about.
#[derive(Default)]
struct FakeUsage {
    readings: Mutex<HashMap<String, UsageSample>>,
    asked: Mutex<Vec<String>>,
}

impl FakeUsage {
    /// `pod` (in `default`) used `cpu_millis` over the 15 s up to `at`.
    fn set(&self, pod: &str, cpu_millis: u64, at: SystemTime) {
        let sample = UsageSample {
            timestamp: at,
            window: Duration::from_secs(15),
            containers: vec![ContainerSample {
                name: "app".into(),
                cpu_millis,
                memory_bytes: 20 << 20,
            }],
        };
        self.readings.lock().unwrap().insert(pod.to_owned(), sample);
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl PodUsageSource for FakeUsage {
    fn pod_usage(&self, namespace: &str, name: &str) -> Option<UsageSample> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("{namespace}/{name}"));
        self.readings.lock().unwrap().get(name).cloned()
    }
}

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap()
}

const NOW: &str = "2026-03-01T10:00:00Z";

fn deployment(replicas: i32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: busybox}}]}}
"#
    )
}

/// A pod of the Deployment, Running and Ready for an hour, requesting
/// `resources`.
fn pod(name: &str, resources: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  containers: [{{name: app, image: busybox, resources: {resources}}}]
status:
  phase: Running
  startTime: "2026-03-01T09:00:00Z"
  conditions: [{{type: Ready, status: "True", lastTransitionTime: "2026-03-01T09:00:05Z"}}]
"#
    )
}

/// An autoscaler of `target` (kind/name) at 50% CPU, 1 to 3 replicas,
/// with `extra` spec lines.
fn autoscaler(target: &str, extra: &str) -> String {
    let (kind, name) = target.split_once('/').unwrap();
    let api_version = "apps/v1";
    format!(
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web}}
spec:
  scaleTargetRef: {{apiVersion: {api_version}, kind: {kind}, name: {name}}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
{extra}
"#
    )
}

struct Setup {
    objects: Arc<RecordingObjects>,
    usage: Arc<FakeUsage>,
    clock: Arc<ManualClock>,
    controller: HorizontalAutoscalerController,
}

fn setup(yaml: &[String]) -> Setup {
    let objects = RecordingObjects::new();
    for manifest in yaml {
        objects.seed_yaml(manifest);
    }
    let usage = Arc::new(FakeUsage::default());
    let clock = ManualClock::at(at(NOW));
    let controller =
        HorizontalAutoscalerController::with_clock(context(&objects), usage.clone(), clock.clone());
    Setup {
        objects,
        usage,
        clock,
        controller,
    }
}

fn key() -> ObjectKey {
    ObjectKey::new(Kind::HorizontalPodAutoscaler, "default", "web")
}

fn view(objects: &RecordingObjects) -> AutoscalerView {
    let found = objects
        .get(Kind::HorizontalPodAutoscaler, "default", "web")
        .unwrap()
        .unwrap();
    match &found.kind {
        Some(Body::Generic(g)) => AutoscalerView::read(g).unwrap(),
        other => panic!("no autoscaler: {other:?}"),
    }
}

fn replicas_of(objects: &RecordingObjects, kind: Kind) -> i32 {
    let found = objects.get(kind, "default", "web").unwrap().unwrap();
    scale::read(&found).unwrap().replicas
}

fn condition(view: &AutoscalerView, kind: &str) -> (String, String, String) {
    let c = view.status.condition(kind).unwrap();
    let text = |t: &Option<String>| t.clone().unwrap_or_default();
    (c.status.clone(), text(&c.reason), text(&c.message))
}

const CPU_100M: &str = "{requests: {cpu: 100m}}";

#[tokio::test]
async fn a_busy_deployment_is_scaled_up_within_max_replicas_with_kubernetes_status_and_event() {
    let s = setup(&[
        deployment(1),
        pod("web-1", CPU_100M),
        autoscaler("Deployment/web", ""),
    ]);
    s.usage.set("web-1", 250, at(NOW));
    let action = s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(action, Action::RequeueAfter(SYNC_PERIOD));
    assert_eq!(s.usage.asked(), ["default/web-1"]);
    // 250% of a 50% target: 5 pods, limited to maxReplicas.
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 3);
    let view = view(&s.objects);
    let status = &view.status;
    assert_eq!(
        (status.current_replicas, status.desired_replicas),
        (Some(1), 3)
    );
    assert_eq!(status.last_scale_time, time(NOW));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        typed::encode(&status.current_metrics),
        serde_json::json!([{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 250, "averageValue": "250m"}}}])
    );
    assert_eq!(
        condition(&view, "AbleToScale"),
        (
            "True".into(),
            "SucceededRescale".into(),
            "the HPA controller was able to update the target scale to 3".into()
        )
    );
    assert_eq!(condition(&view, "ScalingActive").1, "ValidMetricFound");
    assert_eq!(
        condition(&view, "ScalingLimited"),
        (
            "True".into(),
            "TooManyReplicas".into(),
            "the desired replica count is more than the maximum replica count".into()
        )
    );
    let events = s.objects.events();
    assert_eq!(s.objects.event_reasons(), ["SuccessfulRescale"]);
    assert_eq!(
        events[0].message,
        "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    );
}

#[tokio::test]
async fn a_target_scaled_to_zero_gets_its_status_once_and_then_no_writes() {
    let s = setup(&[deployment(0), autoscaler("Deployment/web", "")]);
    s.controller.reconcile(&key()).await.unwrap();
    let (_, reason, _) = condition(&view(&s.objects), "ScalingActive");
    assert_eq!(reason, "ScalingDisabled");
    // Zero replicas and no metrics: left out, as Kubernetes writes them.
    let status = view(&s.objects).status;
    assert_eq!(
        (status.current_replicas, status.desired_replicas),
        (None, 0)
    );
    assert!(status.current_metrics.is_none());
    s.objects.clear_writes();
    for _ in 0..2 {
        s.clock.advance(SYNC_PERIOD);
        s.controller.reconcile(&key()).await.unwrap();
    }
    assert!(s.objects.writes().is_empty(), "{:?}", s.objects.writes());
}

#[tokio::test]
async fn a_second_look_waits_for_the_sync_period() {
    let s = setup(&[
        deployment(1),
        pod("web-1", CPU_100M),
        autoscaler("Deployment/web", ""),
    ]);
    s.usage.set("web-1", 50, at(NOW));
    s.controller.reconcile(&key()).await.unwrap();
    let writes = s.objects.writes().len();
    // Its own status write (or a resync) brings it back at once: nothing.
    assert_eq!(s.controller.reconcile(&key()).await.unwrap(), Action::Done);
    assert_eq!(s.objects.writes().len(), writes);
    assert_eq!(s.usage.asked().len(), 1);
    s.clock.advance(SYNC_PERIOD);
    let again = s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(again, Action::RequeueAfter(SYNC_PERIOD));
    assert_eq!(s.usage.asked().len(), 2);
    // At the target: no scale, no Event.
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 1);
    assert!(s.objects.event_reasons().is_empty());
}

#[tokio::test]
async fn an_idle_deployment_scales_down_only_after_the_stabilization_window() {
    let s = setup(&[
        deployment(3),
        pod("web-1", CPU_100M),
        pod("web-2", CPU_100M),
        pod("web-3", CPU_100M),
        autoscaler("Deployment/web", ""),
    ]);
    for name in ["web-1", "web-2", "web-3"] {
        s.usage.set(name, 5, at(NOW));
    }
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 3);
    let held = view(&s.objects);
    assert_eq!(condition(&held, "AbleToScale").1, "ScaleDownStabilized");
    assert_eq!(held.status.desired_replicas, 3);
    // Five minutes later the earlier recommendation of 3 has expired.
    s.clock.advance(Duration::from_secs(301));
    for name in ["web-1", "web-2", "web-3"] {
        s.usage.set(name, 5, s.clock.now());
    }
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 1);
    let events = s.objects.events();
    assert_eq!(
        events[0].message,
        "New size: 1; reason: All metrics below target"
    );
}

#[tokio::test]
async fn a_zero_scale_down_window_in_behavior_scales_down_at_once() {
    let behavior = "  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}";
    let s = setup(&[
        deployment(3),
        pod("web-1", CPU_100M),
        pod("web-2", CPU_100M),
        pod("web-3", CPU_100M),
        autoscaler("Deployment/web", behavior),
    ]);
    for name in ["web-1", "web-2", "web-3"] {
        s.usage.set(name, 5, at(NOW));
    }
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 1);
    let view = view(&s.objects);
    assert_eq!(view.status.desired_replicas, 1);
    assert_eq!(condition(&view, "ScalingLimited").1, "DesiredWithinRange");
}

#[tokio::test]
async fn pods_without_cpu_requests_make_scaling_inactive_as_kubernetes_says() {
    let s = setup(&[
        deployment(1),
        pod("web-1", "{}"),
        autoscaler("Deployment/web", ""),
    ]);
    s.usage.set("web-1", 150, at(NOW));
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 1, "not scaled");
    let view = view(&s.objects);
    assert_eq!(
        condition(&view, "ScalingActive"),
        (
            "False".into(),
            "FailedGetResourceMetric".into(),
            "the HPA was unable to compute the replica count: failed to get cpu utilization: \
             missing request for cpu in container app of Pod web-1"
                .into()
        )
    );
    assert_eq!(view.status.current_replicas, Some(1));
    assert_eq!(
        typed::encode(&view.status.current_metrics),
        serde_json::json!([{"type": ""}])
    );
    assert_eq!(
        s.objects.event_reasons(),
        ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]
    );
    let events = s.objects.events();
    assert!(
        events[1]
            .message
            .starts_with("invalid metrics (1 invalid out of 1)"),
        "{}",
        events[1].message
    );
}

#[tokio::test]
async fn a_missing_target_is_a_failed_get_scale() {
    let s = setup(&[autoscaler("Deployment/web", "")]);
    let action = s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(action, Action::RequeueAfter(SYNC_PERIOD));
    let view = view(&s.objects);
    let (holds, reason, message) = condition(&view, "AbleToScale");
    assert_eq!(
        (holds.as_str(), reason.as_str()),
        ("False", "FailedGetScale")
    );
    assert!(
        message.ends_with(r#"deployments.apps "web" not found"#),
        "{message}"
    );
    assert_eq!(s.objects.event_reasons(), ["FailedGetScale"]);
}

#[tokio::test]
async fn a_failed_scale_write_is_reported_and_retried_at_the_next_sync() {
    let s = setup(&[
        deployment(1),
        pod("web-1", CPU_100M),
        autoscaler("Deployment/web", ""),
    ]);
    s.usage.set("web-1", 150, at(NOW));
    s.objects.fail_next(
        WriteOp::Update,
        Kind::Deployment,
        None,
        Failure::Unavailable,
    );
    let e = s.controller.reconcile(&key()).await.unwrap_err();
    assert_eq!(
        s.controller.error_policy(&key(), &e),
        Retry::After(SYNC_PERIOD)
    );
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 1);
    let view = view(&s.objects);
    assert_eq!(condition(&view, "AbleToScale").1, "FailedUpdateScale");
    assert_eq!(s.objects.event_reasons(), ["FailedRescale"]);
    s.clock.advance(SYNC_PERIOD);
    s.usage.set("web-1", 150, s.clock.now());
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 3);
}

#[tokio::test]
async fn a_statefulset_is_scaled_through_its_replicas() {
    let set = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 1
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: busybox}]}
"#;
    let s = setup(&[
        set.to_owned(),
        pod("web-0", CPU_100M),
        autoscaler("StatefulSet/web", ""),
    ]);
    s.usage.set("web-0", 80, at(NOW));
    s.controller.reconcile(&key()).await.unwrap();
    // 80% of 50%: ceil(1.6) = 2.
    assert_eq!(replicas_of(&s.objects, Kind::StatefulSet), 2);
}

#[tokio::test]
async fn custom_metrics_are_reported_unmeasured_and_the_others_still_scale_up() {
    let extra = r#"  - type: Pods
    pods: {metric: {name: requests_per_second}, target: {type: AverageValue, averageValue: "10"}}"#;
    let s = setup(&[
        deployment(1),
        pod("web-1", CPU_100M),
        autoscaler("Deployment/web", extra),
    ]);
    s.usage.set("web-1", 100, at(NOW));
    s.controller.reconcile(&key()).await.unwrap();
    assert_eq!(replicas_of(&s.objects, Kind::Deployment), 2);
    let view = view(&s.objects);
    let metrics = view.status.current_metrics.clone().unwrap_or_default();
    assert_eq!(metrics.len(), 2);
    assert_eq!(typed::encode(&metrics[1]), serde_json::json!({"type": ""}));
    assert_eq!(
        s.objects.event_reasons(),
        ["FailedGetPodsMetric", "SuccessfulRescale"]
    );
}

#[tokio::test]
async fn a_deleted_autoscaler_forgets_its_history() {
    let s = setup(&[autoscaler("Deployment/web", "")]);
    s.controller.reconcile(&key()).await.unwrap();
    assert!(s.controller.tracked().contains_key(&key()));
    s.objects
        .remove(Kind::HorizontalPodAutoscaler, "default", "web", "")
        .unwrap();
    assert_eq!(s.controller.reconcile(&key()).await.unwrap(), Action::Done);
    assert!(!s.controller.tracked().contains_key(&key()));
}
