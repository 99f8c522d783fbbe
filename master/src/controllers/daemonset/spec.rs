//! A DaemonSet as its controller reads and writes it. DaemonSets are held
//! as generic objects (`objects::generic`: typed metadata, the rest as the
//! JSON it was sent as), so this takes out what the controller acts on:
//! the selector; the pod template, as stored (what revisions record and
//! hash) and as the typed pod every node gets, with the tolerations every
//! DaemonSet pod gets; where that pod may run ([`Requirements`]); the
//! update strategy; `minReadySeconds`; `revisionHistoryLimit`. And the
//! status it writes back ([`DaemonSetStatus`], Kubernetes' field names).

use serde_json::Value;
use skiff_proto::v1;

use super::eligibility::{add_daemon_tolerations, Requirements};
use crate::controllers::deployment::resolve;
use crate::controllers::revisions::REVISION_HASH_LABEL;
use crate::controllers::workload_spec::{
    int_or_string, selector_of, spec_of, template_of, PodTemplate,
};
use skiff_objects::metadata::random_suffix;
use skiff_objects::placement::required_node_affinity;

pub use crate::controllers::workload_spec::{SpecError, StoredStatus};

/// Longest base of a generated pod name (`<daemonset>-`), as Kubernetes
/// cuts `generateName`, so that the name stays a valid label value.
const MAX_NAME_BASE: usize = 58;

/// How a changed template reaches the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStrategy {
    /// Only pods someone deletes are replaced.
    OnDelete,
    /// Old pods are replaced node by node: counts or percentages (`"1"`,
    /// `"10%"`) of the nodes that should run a pod.
    RollingUpdate {
        max_unavailable: String,
        max_surge: String,
    },
}

impl UpdateStrategy {
    /// Whether a node may run a new pod beside its old one while it starts
    /// (`maxSurge` above 0).
    pub fn allows_surge(&self) -> bool {
        match self {
            UpdateStrategy::OnDelete => false,
            UpdateStrategy::RollingUpdate { max_surge, .. } => resolve(max_surge, 1, true) > 0,
        }
    }

    /// `(maxSurge, maxUnavailable)` for `desired` nodes; percentages round
    /// up, and both 0 counts as one unavailable, as in Kubernetes.
    pub fn limits(&self, desired: i32) -> (i32, i32) {
        let (surge, unavailable) = match self {
            UpdateStrategy::OnDelete => (0, 0),
            UpdateStrategy::RollingUpdate {
                max_unavailable,
                max_surge,
            } => (
                resolve(max_surge, desired, true).max(0),
                resolve(max_unavailable, desired, true).max(0),
            ),
        };
        if desired > 0 && surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }
}

/// What the controller reads of a DaemonSet.
#[derive(Debug, Clone)]
pub struct DaemonSetSpec {
    pub selector: v1::LabelSelector,
    /// `spec.template` as stored.
    pub template: Value,
    /// The template as the pod every node gets (but for its name, node and
    /// revision label), with the DaemonSet tolerations.
    pub pod: v1::PodTemplateSpec,
    /// The template as its pods are made from it: every field it has, the
    /// DaemonSet tolerations added.
    pub made_from: PodTemplate,
    /// Where the pods may run.
    pub requirements: Requirements,
    pub strategy: UpdateStrategy,
    pub min_ready_seconds: i32,
    pub revision_history_limit: usize,
}

impl DaemonSetSpec {
    /// Reads the spec of a DaemonSet.
    pub fn read(object: &v1::GenericObject) -> Result<DaemonSetSpec, SpecError> {
        let spec = spec_of(object);
        let selector = selector_of(&spec)?;
        let template = template_of(&spec);
        let pod = serde_json::from_value::<v1::PodTemplateSpec>(template.clone());
        let mut pod = pod.map_err(|e| SpecError::new("spec.template", e.to_string()))?;
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        add_daemon_tolerations(pod_spec);
        let affinity = template.get("spec").and_then(required_node_affinity);
        let requirements = Requirements::new(pod_spec, affinity);
        let mut made_from = PodTemplate::read(&template)?;
        if let Some(fields) = made_from.spec.as_object_mut() {
            let tolerations = serde_json::to_value(&pod_spec.tolerations)
                .map_err(|e| SpecError::new("spec.template.spec.tolerations", e.to_string()))?;
            fields.insert("tolerations".to_owned(), tolerations);
        }
        let rolling = &spec["updateStrategy"]["rollingUpdate"];
        let strategy = match spec["updateStrategy"]["type"].as_str() {
            Some("OnDelete") => UpdateStrategy::OnDelete,
            _ => UpdateStrategy::RollingUpdate {
                max_unavailable: int_or_string(&rolling["maxUnavailable"], "1"),
                max_surge: int_or_string(&rolling["maxSurge"], "0"),
            },
        };
        let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
        let limit = spec["revisionHistoryLimit"].as_i64().unwrap_or(10);
        Ok(DaemonSetSpec {
            selector,
            template,
            pod,
            made_from,
            requirements,
            strategy,
            min_ready_seconds: i32::try_from(min_ready.max(0)).unwrap_or(i32::MAX),
            revision_history_limit: usize::try_from(limit.max(0)).unwrap_or(usize::MAX),
        })
    }

    /// The pod `node` gets: the template's, bound to `node`, labelled with
    /// the revision's `hash`, owned by `owner`, named
    /// `<daemonset>-<random5>`.
    pub fn pod_for(
        &self,
        daemon_set: &str,
        namespace: &str,
        hash: &str,
        node: &str,
        owner: Option<v1::OwnerReference>,
    ) -> skiff_proto::api::Object {
        let meta = self.made_from.metadata.clone();
        let mut labels = meta.labels;
        labels.insert(REVISION_HASH_LABEL.to_owned(), hash.to_owned());
        let mut spec = self.made_from.spec.clone();
        if let Some(fields) = spec.as_object_mut() {
            fields.insert("nodeName".to_owned(), node.into());
        }
        let base: String = format!("{daemon_set}-")
            .chars()
            .take(MAX_NAME_BASE)
            .collect();
        let metadata = v1::ObjectMeta {
            name: format!("{base}{}", random_suffix()),
            namespace: namespace.to_owned(),
            labels,
            annotations: meta.annotations,
            owner_references: owner.into_iter().collect(),
            ..Default::default()
        };
        PodTemplate::pod(metadata, spec)
    }
}

/// A DaemonSet's `status`: Kubernetes' type.
pub use k8s_openapi::api::apps::v1::DaemonSetStatus;

impl StoredStatus for DaemonSetStatus {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::RecordingObjects;
    use skiff_objects::generic;
    use skiff_objects::placement::TAINT_UNREACHABLE;
    use skiff_proto::api::object::Kind as Body;

    fn read(yaml: &str) -> Result<DaemonSetSpec, SpecError> {
        let objects = RecordingObjects::new();
        let Some(Body::Generic(g)) = objects.seed_yaml(yaml).remove(0).kind else {
            panic!("not a generic object");
        };
        DaemonSetSpec::read(&g)
    }

    const AGENT: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  minReadySeconds: 5
  template:
    metadata:
      labels: {app: agent}
      annotations: {note: kept}
    spec:
      hostNetwork: true
      nodeSelector: {role: edge}
      tolerations: [{key: dedicated, operator: Exists}]
      containers:
      - name: a
        image: "agent:1"
        resources: {requests: {cpu: 10m}}
"#;

    #[test]
    fn a_daemonset_reads_with_kubernetes_defaults_and_daemon_tolerations() {
        let spec = read(AGENT).unwrap();
        assert_eq!(spec.selector.match_labels["app"], "agent");
        assert_eq!(spec.min_ready_seconds, 5);
        assert_eq!(spec.revision_history_limit, 10);
        let rolling = UpdateStrategy::RollingUpdate {
            max_unavailable: "1".into(),
            max_surge: "0".into(),
        };
        assert_eq!(spec.strategy, rolling);
        assert_eq!(spec.template["spec"]["containers"][0]["image"], "agent:1");
        let pod_spec = spec.pod.spec.clone().unwrap();
        assert_eq!(pod_spec.containers[0].image, "agent:1");
        let keys: Vec<&str> = pod_spec
            .tolerations
            .iter()
            .map(|t| t.key.as_str())
            .collect();
        assert_eq!(keys[0], "dedicated", "the template's own first");
        assert!(keys.contains(&TAINT_UNREACHABLE), "{keys:?}");
        assert_eq!(keys.len(), 8, "hostNetwork: network-unavailable too");

        let pod = spec.pod_for("agent", "default", "h4sh", "n1", None);
        let Some(Body::Generic(document)) = &pod.kind else {
            panic!("a pod document: {pod:?}");
        };
        assert_eq!((&*document.api_version, &*document.kind), ("v1", "Pod"));
        let meta = document.metadata.clone().unwrap();
        assert!(meta.name.starts_with("agent-") && meta.name.len() == 11);
        assert_eq!(meta.labels[REVISION_HASH_LABEL], "h4sh");
        assert_eq!(meta.labels["app"], "agent");
        assert_eq!(meta.annotations["note"], "kept");
        let made = generic::content(document)["spec"].clone();
        assert_eq!(made["nodeName"], "n1");
        assert_eq!(made["hostNetwork"], true);
        let keys: Vec<&str> = made["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys[0], "dedicated");
        assert_eq!(keys.len(), 8, "{keys:?}");
        assert_eq!(made["tolerations"][1]["effect"], "NoExecute");

        let long = "d".repeat(70);
        let pod = spec.pod_for(&long, "default", "h4sh", "n1", None);
        assert_eq!(
            skiff_objects::ObjectExt::meta(&pod).name.len(),
            MAX_NAME_BASE + 5
        );

        // A field skiff's protobuf model lacks is kept.
        let with_os = AGENT.replace(
            "      hostNetwork: true\n",
            "      hostNetwork: true\n      os: {name: linux}\n",
        );
        let spec = read(&with_os).unwrap();
        let pod = spec.pod_for("agent", "default", "h4sh", "n1", None);
        let Some(Body::Generic(document)) = &pod.kind else {
            panic!("a pod document: {pod:?}");
        };
        assert_eq!(generic::content(document)["spec"]["os"]["name"], "linux");
    }

    #[test]
    fn strategies_and_their_limits() {
        let on_delete = AGENT.replace(
            "  minReadySeconds: 5\n",
            "  updateStrategy: {type: OnDelete}\n",
        );
        let strategy = read(&on_delete).unwrap().strategy;
        assert_eq!(strategy, UpdateStrategy::OnDelete);
        let surge = AGENT.replace(
            "  minReadySeconds: 5\n",
            "  updateStrategy: {rollingUpdate: {maxSurge: 20%, maxUnavailable: 0}}\n",
        );
        let strategy = read(&surge).unwrap().strategy;
        assert!(strategy.allows_surge());
        // 20% of 12 nodes rounds up to 3.
        assert_eq!(strategy.limits(12), (3, 0));
        let default = read(AGENT).unwrap().strategy;
        assert!(!default.allows_surge());
        assert_eq!(default.limits(12), (0, 1));
        let percent = UpdateStrategy::RollingUpdate {
            max_unavailable: "10%".into(),
            max_surge: "0".into(),
        };
        assert_eq!(percent.limits(12), (0, 2));
        assert_eq!(percent.limits(0), (0, 0));
        let nothing = UpdateStrategy::RollingUpdate {
            max_unavailable: "0".into(),
            max_surge: "0".into(),
        };
        assert_eq!(nothing.limits(3), (0, 1), "both 0: one unavailable");
    }

    #[test]
    fn an_empty_selector_is_refused() {
        let everything = AGENT.replace("{matchLabels: {app: agent}}", "{}");
        let e = read(&everything).unwrap_err();
        assert_eq!(e.field, "spec.selector");
    }

    #[test]
    fn the_status_round_trips_with_kubernetes_names() {
        let status = DaemonSetStatus {
            desired_number_scheduled: 3,
            number_unavailable: Some(1),
            observed_generation: Some(2),
            collision_count: Some(1),
            ..Default::default()
        };
        let object = v1::GenericObject {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            ..Default::default()
        };
        let written = status.write_into(&object);
        let json = generic::content(&written)["status"].clone();
        assert_eq!(json["desiredNumberScheduled"], 3);
        assert_eq!(json["numberUnavailable"], 1);
        assert_eq!(json["collisionCount"], 1);
        assert_eq!(json["numberMisscheduled"], 0, "not omitempty in Kubernetes");
        assert!(json.get("numberAvailable").is_none(), "unset: left out");
        assert!(json.get("conditions").is_none());
        assert_eq!(DaemonSetStatus::read(&written), status);
        assert_eq!(DaemonSetStatus::read(&object), DaemonSetStatus::default());
    }
}
