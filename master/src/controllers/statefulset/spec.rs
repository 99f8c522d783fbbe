//! A StatefulSet as its controller reads and writes it. StatefulSets are
//! held as generic objects (`objects::generic`: typed metadata, the rest as
//! the JSON it was sent as), so this takes out what the controller acts
//! on: `replicas` and `ordinals.start`; the selector; the pod template, as
//! stored (what revisions record and hash) and typed; `serviceName`; the
//! `volumeClaimTemplates`; `podManagementPolicy`; the update strategy
//! (`partition`, `maxUnavailable`); `persistentVolumeClaimRetentionPolicy`;
//! `minReadySeconds`; `revisionHistoryLimit`. It also builds what every
//! member gets: its pod `<set>-<ordinal>` with a stable hostname and
//! subdomain and its claims `<claim>-<set>-<ordinal>`. And the status it
//! writes back ([`StatefulSetStatus`], Kubernetes' field names).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_proto::v1;

use crate::controllers::deployment::resolve;
use crate::controllers::revisions::REVISION_HASH_LABEL;
use crate::controllers::workload_spec::{
    int_or_string, selector_of, spec_of, template_of, PodTemplate,
};
use skiff_objects::generic;
use skiff_objects::selector;

pub use crate::controllers::workload_spec::{SpecError, StoredStatus};

/// The label that names a member's pod (Kubernetes' `StatefulSetPodNameLabel`).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label that holds a member's ordinal (Kubernetes' `PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `podManagementPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodManagement {
    /// One member at a time: created in ordinal order, each Running and
    /// Ready before the next; removed in reverse order.
    OrderedReady,
    /// All members created and removed at once.
    Parallel,
}

/// How a changed template reaches the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStrategy {
    /// Only members someone deletes come back at the new revision.
    OnDelete,
    /// Members with an ordinal at or above `start + partition` are
    /// replaced, highest first, at most `max_unavailable` (a count or a
    /// percentage of `replicas`) unavailable at a time.
    RollingUpdate {
        partition: i32,
        max_unavailable: String,
    },
}

impl UpdateStrategy {
    /// How many members of the update range may be unavailable at once, for
    /// `replicas` members: a percentage rounds up, and never less than 1.
    pub fn max_unavailable(&self, replicas: i32) -> i32 {
        match self {
            UpdateStrategy::OnDelete => 1,
            UpdateStrategy::RollingUpdate {
                max_unavailable, ..
            } => resolve(max_unavailable, replicas, true).max(1),
        }
    }
}

/// `persistentVolumeClaimRetentionPolicy`: what happens to members' claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The claims are deleted with the StatefulSet (they are owned by it).
    pub delete_when_deleted: bool,
    /// The claims of members removed by a scale down are deleted.
    pub delete_when_scaled: bool,
}

/// One of `volumeClaimTemplates`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimTemplate {
    /// The volume name the template's containers mount it by.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The claim's `spec`, as given.
    pub spec: Value,
}

/// What the controller reads of a StatefulSet.
#[derive(Debug, Clone)]
pub struct StatefulSetSpec {
    pub replicas: i32,
    /// `ordinals.start`: the first member's ordinal.
    pub start: i32,
    pub selector: v1::LabelSelector,
    /// `spec.template` as stored.
    pub template: Value,
    /// The template as its pods are made from it.
    pub pod: PodTemplate,
    /// The governing (headless) Service: every member's subdomain.
    pub service_name: String,
    pub claims: Vec<ClaimTemplate>,
    pub management: PodManagement,
    pub strategy: UpdateStrategy,
    pub retention: Retention,
    pub min_ready_seconds: i32,
    pub revision_history_limit: usize,
}

impl StatefulSetSpec {
    /// Reads the spec of a StatefulSet.
    pub fn read(object: &v1::GenericObject) -> Result<StatefulSetSpec, SpecError> {
        let spec = spec_of(object);
        let selector = selector_of(&spec)?;
        let template = template_of(&spec);
        let pod = pod_template(&template).map_err(|e| SpecError::new("spec.template", e))?;
        if !selector::matches(&selector, &pod.metadata.labels) {
            return Err(SpecError::new(
                "spec.template.metadata.labels",
                "the selector does not match the template's labels",
            ));
        }
        let replicas = spec["replicas"].as_i64().unwrap_or(1);
        if replicas < 0 {
            return Err(SpecError::new("spec.replicas", "must not be negative"));
        }
        let start = spec["ordinals"]["start"].as_i64().unwrap_or(0);
        if start < 0 {
            return Err(SpecError::new(
                "spec.ordinals.start",
                "must not be negative",
            ));
        }
        let claims = claim_templates(&spec["volumeClaimTemplates"])?;
        let management = match spec["podManagementPolicy"].as_str() {
            Some("Parallel") => PodManagement::Parallel,
            None | Some("OrderedReady") => PodManagement::OrderedReady,
            Some(other) => {
                return Err(SpecError::new(
                    "spec.podManagementPolicy",
                    format!("{other:?} is neither OrderedReady nor Parallel"),
                ))
            }
        };
        let rolling = &spec["updateStrategy"]["rollingUpdate"];
        let strategy = match spec["updateStrategy"]["type"].as_str() {
            Some("OnDelete") => UpdateStrategy::OnDelete,
            _ => {
                let partition = rolling["partition"].as_i64().unwrap_or(0);
                if partition < 0 {
                    return Err(SpecError::new(
                        "spec.updateStrategy.rollingUpdate.partition",
                        "must not be negative",
                    ));
                }
                UpdateStrategy::RollingUpdate {
                    partition: clamp(partition),
                    max_unavailable: int_or_string(&rolling["maxUnavailable"], "1"),
                }
            }
        };
        let policy = &spec["persistentVolumeClaimRetentionPolicy"];
        let retention = Retention {
            delete_when_deleted: policy["whenDeleted"].as_str() == Some("Delete"),
            delete_when_scaled: policy["whenScaled"].as_str() == Some("Delete"),
        };
        let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
        let limit = spec["revisionHistoryLimit"].as_i64().unwrap_or(10);
        Ok(StatefulSetSpec {
            replicas: clamp(replicas),
            start: clamp(start),
            selector,
            template,
            pod,
            service_name: spec["serviceName"].as_str().unwrap_or("").to_owned(),
            claims,
            management,
            strategy,
            retention,
            min_ready_seconds: clamp(min_ready.max(0)),
            revision_history_limit: usize::try_from(limit.max(0)).unwrap_or(usize::MAX),
        })
    }

    /// The pod of member `ordinal` of the StatefulSet `set` from `template`
    /// (the template of `revision`, the ControllerRevision's name): named
    /// `<set>-<ordinal>`, with its hostname and the Service as subdomain,
    /// labelled with its revision, name and ordinal, its claims mounted in
    /// place of the template's volumes of the same names, owned by `owner`.
    pub fn pod_for(
        &self,
        set: &str,
        namespace: &str,
        ordinal: i32,
        template: &PodTemplate,
        revision: &str,
        owner: Option<v1::OwnerReference>,
    ) -> skiff_proto::api::Object {
        let name = pod_name(set, ordinal);
        let meta = template.metadata.clone();
        let mut labels = meta.labels;
        labels.insert(REVISION_HASH_LABEL.to_owned(), revision.to_owned());
        labels.insert(POD_NAME_LABEL.to_owned(), name.clone());
        labels.insert(POD_INDEX_LABEL.to_owned(), ordinal.to_string());
        let mut spec = template.spec.clone();
        if let Some(fields) = spec.as_object_mut() {
            fields.insert("hostname".to_owned(), name.clone().into());
            if self.service_name.is_empty() {
                fields.remove("subdomain");
            } else {
                fields.insert("subdomain".to_owned(), self.service_name.clone().into());
            }
            let volumes = fields
                .entry("volumes")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(volumes) = volumes.as_array_mut() {
                for claim in &self.claims {
                    let volume = serde_json::json!({
                        "name": claim.name,
                        "persistentVolumeClaim": {
                            "claimName": claim_name(&claim.name, set, ordinal),
                        },
                    });
                    match volumes
                        .iter_mut()
                        .find(|v| v["name"] == claim.name.as_str())
                    {
                        Some(existing) => *existing = volume,
                        None => volumes.push(volume),
                    }
                }
                if volumes.is_empty() {
                    fields.remove("volumes");
                }
            }
        }
        let metadata = v1::ObjectMeta {
            name,
            namespace: namespace.to_owned(),
            labels,
            annotations: meta.annotations,
            owner_references: owner.into_iter().collect(),
            ..Default::default()
        };
        PodTemplate::pod(metadata, spec)
    }

    /// The PersistentVolumeClaim of member `ordinal` from `claim`: named
    /// `<claim>-<set>-<ordinal>`, labelled with the template's labels and
    /// the selector's, owned by `owner` (the StatefulSet, when its claims
    /// go with it; none, when they are retained).
    pub fn claim_for(
        &self,
        claim: &ClaimTemplate,
        set: &str,
        namespace: &str,
        ordinal: i32,
        owner: Option<v1::OwnerReference>,
    ) -> v1::GenericObject {
        let mut labels = claim.labels.clone();
        for (key, value) in &self.selector.match_labels {
            labels.insert(key.clone(), value.clone());
        }
        let mut content = Map::new();
        content.insert("spec".to_owned(), claim.spec.clone());
        let mut object = v1::GenericObject {
            api_version: "v1".to_owned(),
            kind: "PersistentVolumeClaim".to_owned(),
            metadata: Some(v1::ObjectMeta {
                name: claim_name(&claim.name, set, ordinal),
                namespace: namespace.to_owned(),
                labels,
                annotations: claim.annotations.clone(),
                owner_references: owner.into_iter().collect(),
                ..Default::default()
            }),
            content: Vec::new(),
        };
        generic::set_content(&mut object, &content);
        object
    }
}

/// The pod template of `spec.template` as stored (or as a revision
/// records it, `$patch` and all).
pub fn pod_template(template: &Value) -> Result<PodTemplate, String> {
    let mut template = template.clone();
    if let Some(fields) = template.as_object_mut() {
        fields.remove("$patch");
    }
    PodTemplate::read(&template).map_err(|e| e.to_string())
}

/// The template a ControllerRevision of a StatefulSet records in its
/// `data` (`{"spec": {"template": ...}}`).
pub fn revision_template(data: &Value) -> Result<PodTemplate, String> {
    match data.get("spec").and_then(|s| s.get("template")) {
        Some(template) => pod_template(template),
        None => Err("the revision records no spec.template".to_owned()),
    }
}

/// The name of member `ordinal`'s pod.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The name of member `ordinal`'s claim from the template `claim`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The ordinal of a pod named as a member of `set` (`<set>-<n>`).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The ordinal of a claim named for a member of `set` from the template
/// `claim` (`<claim>-<set>-<n>`).
pub fn claim_ordinal(claim: &str, set: &str, name: &str) -> Option<i32> {
    let rest = name.strip_prefix(claim)?.strip_prefix('-')?;
    ordinal_of(set, rest)
}

fn claim_templates(value: &Value) -> Result<Vec<ClaimTemplate>, SpecError> {
    let Some(items) = value.as_array() else {
        return Ok(Vec::new());
    };
    let mut claims = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |f: &str| format!("spec.volumeClaimTemplates[{i}].{f}");
        let meta: v1::ObjectMeta = match item.get("metadata") {
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|e| SpecError::new(field("metadata"), e.to_string()))?,
            None => v1::ObjectMeta::default(),
        };
        if meta.name.is_empty() {
            return Err(SpecError::new(field("metadata.name"), "a name is required"));
        }
        let spec = item.get("spec").cloned().unwrap_or(Value::Null);
        if spec["resources"]["requests"]["storage"].is_null() {
            return Err(SpecError::new(
                field("spec.resources.requests.storage"),
                "the storage request is required",
            ));
        }
        if claims.iter().any(|c: &ClaimTemplate| c.name == meta.name) {
            return Err(SpecError::new(
                field("metadata.name"),
                format!("{:?} is used by another claim template", meta.name),
            ));
        }
        claims.push(ClaimTemplate {
            name: meta.name,
            labels: meta.labels,
            annotations: meta.annotations,
            spec,
        });
    }
    Ok(claims)
}

fn clamp(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

/// A StatefulSet's `status`: Kubernetes' type.
pub use k8s_openapi::api::apps::v1::StatefulSetStatus;

impl StoredStatus for StatefulSetStatus {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::RecordingObjects;
    use skiff_proto::api::object::Kind as Body;

    const WEB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: "web:1"
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data, labels: {tier: storage}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

    fn read(yaml: &str) -> Result<StatefulSetSpec, SpecError> {
        let objects = RecordingObjects::new();
        let Some(Body::Generic(g)) = objects.seed_yaml(yaml).remove(0).kind else {
            panic!("not a generic object");
        };
        StatefulSetSpec::read(&g)
    }

    #[test]
    fn a_statefulset_reads_with_kubernetes_defaults() {
        let spec = read(WEB).unwrap();
        assert_eq!((spec.replicas, spec.start), (3, 0));
        assert_eq!(spec.management, PodManagement::OrderedReady);
        let rolling = UpdateStrategy::RollingUpdate {
            partition: 0,
            max_unavailable: "1".into(),
        };
        assert_eq!(spec.strategy, rolling);
        let retain = Retention {
            delete_when_deleted: false,
            delete_when_scaled: false,
        };
        assert_eq!(spec.retention, retain);
        assert_eq!(spec.service_name, "web");
        assert_eq!(spec.claims.len(), 1);
        assert_eq!(spec.claims[0].name, "data");
        assert_eq!(spec.revision_history_limit, 10);
    }

    #[test]
    fn a_member_pod_has_its_name_hostname_labels_and_claims() {
        let spec = read(WEB).unwrap();
        let pod = spec.pod_for("web", "default", 2, &spec.pod, "web-abc", None);
        let Some(skiff_proto::api::object::Kind::Generic(document)) = &pod.kind else {
            panic!("a pod document: {pod:?}");
        };
        assert_eq!((&*document.api_version, &*document.kind), ("v1", "Pod"));
        let meta = document.metadata.clone().unwrap();
        assert_eq!(meta.name, "web-2");
        assert_eq!(meta.labels[REVISION_HASH_LABEL], "web-abc");
        assert_eq!(meta.labels[POD_NAME_LABEL], "web-2");
        assert_eq!(meta.labels[POD_INDEX_LABEL], "2");
        assert_eq!(meta.labels["app"], "web");
        let pod_spec = generic::content(document)["spec"].clone();
        assert_eq!(
            (&pod_spec["hostname"], &pod_spec["subdomain"]),
            (&serde_json::json!("web-2"), &serde_json::json!("web"))
        );
        assert_eq!(
            pod_spec["volumes"],
            serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}])
        );
        // A field skiff's protobuf model lacks is kept.
        let spread = WEB.replace(
            "    spec:\n      containers:",
            "    spec:\n      os: {name: linux}\n      containers:",
        );
        let spec = read(&spread).unwrap();
        let pod = spec.pod_for("web", "default", 0, &spec.pod, "web-abc", None);
        let Some(skiff_proto::api::object::Kind::Generic(document)) = &pod.kind else {
            panic!("a pod document: {pod:?}");
        };
        let content = generic::content(document);
        assert_eq!(content["spec"]["os"], serde_json::json!({"name": "linux"}));

        let pvc = spec.claim_for(&spec.claims[0], "web", "default", 2, None);
        let meta = pvc.metadata.clone().unwrap();
        assert_eq!(meta.name, "data-web-2");
        assert_eq!(meta.labels["tier"], "storage");
        assert_eq!(meta.labels["app"], "web", "the selector's labels too");
        let content = generic::content(&pvc);
        assert_eq!(content["spec"]["resources"]["requests"]["storage"], "1Gi");
    }

    #[test]
    fn ordinals_are_read_back_from_names_and_nothing_else() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-1-2"), None);
        assert_eq!(claim_ordinal("data", "web", "data-web-3"), Some(3));
        assert_eq!(claim_ordinal("data", "web", "logs-web-3"), None);
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        let no_storage = WEB.replace("resources: {requests: {storage: 1Gi}}", "resources: {}");
        let e = read(&no_storage).unwrap_err();
        assert_eq!(
            e.field,
            "spec.volumeClaimTemplates[0].spec.resources.requests.storage"
        );
        let policy = WEB.replace(
            "serviceName: web",
            "serviceName: web\n  podManagementPolicy: Sometimes",
        );
        assert_eq!(read(&policy).unwrap_err().field, "spec.podManagementPolicy");
        let parallel = WEB.replace(
            "serviceName: web",
            "serviceName: web\n  podManagementPolicy: Parallel",
        );
        assert_eq!(read(&parallel).unwrap().management, PodManagement::Parallel);
        let everything = WEB.replace("{matchLabels: {app: web}}", "{}");
        assert_eq!(read(&everything).unwrap_err().field, "spec.selector");
    }

    #[test]
    fn strategies_partitions_and_max_unavailable() {
        let partitioned = WEB.replace(
            "serviceName: web",
            "serviceName: web\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2, maxUnavailable: 50%}}",
        );
        let strategy = read(&partitioned).unwrap().strategy;
        let expected = UpdateStrategy::RollingUpdate {
            partition: 2,
            max_unavailable: "50%".into(),
        };
        assert_eq!(strategy, expected);
        // 50% of 3 rounds up to 2; 0 still lets one go.
        assert_eq!(strategy.max_unavailable(3), 2);
        let zero = UpdateStrategy::RollingUpdate {
            partition: 0,
            max_unavailable: "0".into(),
        };
        assert_eq!(zero.max_unavailable(3), 1);
        let on_delete = WEB.replace(
            "serviceName: web",
            "serviceName: web\n  updateStrategy: {type: OnDelete}",
        );
        assert_eq!(read(&on_delete).unwrap().strategy, UpdateStrategy::OnDelete);
        let start = WEB.replace(
            "serviceName: web",
            "serviceName: web\n  ordinals: {start: 5}",
        );
        assert_eq!(read(&start).unwrap().start, 5);
    }

    #[test]
    fn a_revision_records_a_template_that_reads_back() {
        let spec = read(WEB).unwrap();
        let data = crate::controllers::revisions::revision_data(&spec.template);
        let template = revision_template(&data).unwrap();
        assert_eq!(template, spec.pod);
        assert!(revision_template(&serde_json::json!({})).is_err());
    }

    #[test]
    fn the_status_round_trips_with_kubernetes_names() {
        let status = StatefulSetStatus {
            replicas: 3,
            ready_replicas: Some(2),
            available_replicas: Some(0),
            current_revision: Some("web-a".into()),
            update_revision: Some("web-b".into()),
            observed_generation: Some(2),
            ..Default::default()
        };
        let object = v1::GenericObject {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            ..Default::default()
        };
        let written = status.write_into(&object);
        let json = generic::content(&written)["status"].clone();
        assert_eq!(json["readyReplicas"], 2);
        assert_eq!(json["currentRevision"], "web-a");
        assert_eq!(json["updateRevision"], "web-b");
        assert_eq!(json["availableReplicas"], 0, "not omitempty in Kubernetes");
        assert!(json.get("updatedReplicas").is_none(), "unset: left out");
        assert!(json.get("collisionCount").is_none());
        assert_eq!(StatefulSetStatus::read(&written), status);
    }
}
