//! Pods as their readers see them: a stored pod, in either encoding, read
//! as Kubernetes' own Pod ([`read`], [`StoredPod`]: the object's metadata
//! beside the spec and status) and its status written back
//! ([`with_status`]); what its status says, as the scheduler, the
//! controllers and node lifecycle all ask: is it Ready, is it still
//! wanted, is it terminating or finished, where is it bound; which
//! ConfigMaps and Secrets its spec reads (env, envFrom, volumes, projected
//! volumes, imagePullSecrets: what its node may read, as Kubernetes'
//! NodeRestriction allows); the pull secrets a created pod gets from its
//! service account ([`admit_pull_secrets`]) and its API credentials
//! ([`admit_service_account_token`]: the `kube-api-access-*` projected
//! volume). Readers still on the protobuf model use the `pod_is_*`
//! predicates, until they move.

use std::sync::Arc;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use crate::{legacy_bodies, ObjectExt};

pub use crate::typed::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};

/// A pod object, in either encoding, read as Kubernetes' own Pod: its spec
/// and status, and of its metadata its name and namespace (the rest is
/// the object's: [`ObjectExt::meta`]). `None` for another kind of object.
/// A status time that does not read (one without its offset, which a
/// client may write: status writes are not checked) is left out, with a
/// warning, as earlier releases ignored it; a spec or status that still
/// does not read is left out whole, so that the pod itself stays visible
/// to those who count it.
pub fn read(object: &Object) -> Option<Pod> {
    let (spec, status) = match &object.kind {
        // Each part straight from the model, without the metadata or a
        // document made first.
        Some(Body::Pod(model)) => (
            model.spec.as_ref().map(crate::typed::encode),
            model.status.as_ref().map(crate::typed::encode),
        ),
        Some(Body::Generic(document)) if document.api_version == "v1" && document.kind == "Pod" => {
            let mut content = crate::generic::content(document);
            (content.remove("spec"), content.remove("status"))
        }
        _ => return None,
    };
    let meta = object.meta();
    let named = |s: &String| (!s.is_empty()).then(|| s.clone());
    let status = status.map(|mut status| {
        let dropped = drop_unreadable_times(&mut status, "status");
        if !dropped.is_empty() {
            let pod = format!("{}/{}", meta.namespace, meta.name);
            tracing::warn!(%pod, fields = ?dropped, "a stored pod's status times cannot be read and are left out");
        }
        status
    });
    let mut pod = Pod {
        spec: spec.and_then(|v| part(v, meta, "spec")),
        status: status.and_then(|v| part(v, meta, "status")),
        ..Pod::default()
    };
    pod.metadata.name = named(&meta.name);
    pod.metadata.namespace = named(&meta.namespace);
    Some(pod)
}

/// A pod's `part` (`spec` or `status`) read as Kubernetes' type; `None`,
/// with a warning, when it does not read.
fn part<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    meta: &v1::ObjectMeta,
    part: &str,
) -> Option<T> {
    match crate::typed::decode(value) {
        Ok(read) => Some(read),
        Err(e) => {
            let pod = format!("{}/{}", meta.namespace, meta.name);
            tracing::warn!(%pod, part, error = %e, "a stored pod's part cannot be read and is left out");
            None
        }
    }
}

/// The time fields of a pod's status (`startTime`, conditions'
/// `lastProbeTime` and `lastTransitionTime`, container states' `startedAt`
/// and `finishedAt`).
const STATUS_TIMES: &[&str] = &[
    "startTime",
    "lastProbeTime",
    "lastTransitionTime",
    "startedAt",
    "finishedAt",
];

/// Takes out of `value` (at `path`) every status time that Kubernetes'
/// `Time` does not read; answers their paths.
fn drop_unreadable_times(value: &mut serde_json::Value, path: &str) -> Vec<String> {
    use serde_json::Value;
    let mut dropped = Vec::new();
    match value {
        Value::Object(fields) => {
            fields.retain(|key, field| {
                let unreadable = STATUS_TIMES.contains(&key.as_str())
                    && field
                        .as_str()
                        .is_some_and(|t| t.parse::<k8s_openapi::jiff::Timestamp>().is_err());
                if unreadable {
                    dropped.push(format!("{path}.{key}"));
                }
                !unreadable
            });
            for (key, field) in fields.iter_mut() {
                dropped.extend(drop_unreadable_times(field, &format!("{path}.{key}")));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                dropped.extend(drop_unreadable_times(item, &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    dropped
}

/// Whether `object` is a pod, in either encoding.
pub fn is_pod(object: &Object) -> bool {
    legacy_bodies::is_core_kind(object, "Pod")
}

/// A stored pod as its readers see it: the object (its metadata is
/// [`StoredPod::meta`]), and its spec and status read as Kubernetes' Pod
/// ([`read`]), shared: a pod is read once for as long as its object is
/// shared ([`READ`]).
#[derive(Debug, Clone)]
pub struct StoredPod {
    pub object: Arc<Object>,
    pub pod: Arc<Pod>,
}

impl StoredPod {
    /// `object` read as a pod; `None` for another kind. The object as it
    /// is shared (the store's cache hands out each version of an object
    /// as one `Arc`) is read once: the controllers that look at a pod on
    /// every event of its owner or Service share that read.
    pub fn read(object: impl Into<Arc<Object>>) -> Option<StoredPod> {
        let object = object.into();
        let pod = READ.get_or_read(&object)?;
        Some(StoredPod { object, pod })
    }

    /// The pod's metadata, as stored.
    pub fn meta(&self) -> &v1::ObjectMeta {
        self.object.meta()
    }
}

/// The pods read from shared objects, by the address of the object, each
/// with a weak reference to it: an entry holds while that object lives
/// (an object behind an `Arc` with a weak reference cannot be changed in
/// place: `Arc::get_mut` refuses, `make_mut` and `unwrap_or_clone` move
/// it), so an address taken again by another object is told apart. An
/// object no one else shares is read and not kept. Every [`PRUNE_EVERY`]
/// reads (looks that find no entry), and whenever the entries outnumber
/// the live ones last counted by that many, the entries of dropped
/// objects go: at most about that many are kept beyond the live ones
/// while pods are read. At most [`MAX_KEPT`] are kept at all: a read pod
/// takes about 12 KB (Kubernetes' Pod has a place for every field), so
/// past that a pod is read again on each look rather than kept.
static READ: ReadPods = ReadPods {
    entries: std::sync::Mutex::new(None),
};

/// Looks, or entries beyond the live ones, between two prunings.
const PRUNE_EVERY: usize = 256;

/// Pods kept read at most (about 50 MB).
const MAX_KEPT: usize = 4096;

struct ReadPods {
    entries: std::sync::Mutex<Option<ReadMap>>,
}

/// The entries, and the looks left until they are pruned next, and the
/// size at which they are pruned at the latest.
struct ReadMap {
    pods: std::collections::HashMap<usize, (std::sync::Weak<Object>, Arc<Pod>)>,
    looks_left: usize,
    prune_at: usize,
}

impl ReadMap {
    /// Takes out the entries of dropped objects (for the caller to free
    /// once the lock is let go) when it is time to.
    fn look(&mut self) -> Vec<(std::sync::Weak<Object>, Arc<Pod>)> {
        self.looks_left = self.looks_left.saturating_sub(1);
        if self.looks_left > 0 && self.pods.len() < self.prune_at {
            return Vec::new();
        }
        let dead: Vec<usize> = self
            .pods
            .iter()
            .filter(|(_, (weak, _))| weak.strong_count() == 0)
            .map(|(address, _)| *address)
            .collect();
        let dead = dead.iter().filter_map(|a| self.pods.remove(a)).collect();
        self.looks_left = PRUNE_EVERY;
        self.prune_at = self.pods.len() + PRUNE_EVERY;
        dead
    }
}

impl ReadPods {
    fn get_or_read(&self, object: &Arc<Object>) -> Option<Arc<Pod>> {
        if Arc::strong_count(object) == 1 {
            // No one else holds it: no one will look again.
            return read(object).map(Arc::new);
        }
        let address = Arc::as_ptr(object) as usize;
        let same = |entry: &(std::sync::Weak<Object>, Arc<Pod>)| {
            entry.0.upgrade().is_some_and(|o| Arc::ptr_eq(&o, object))
        };
        let lock = || self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let dead = {
            let mut entries = lock();
            let map = entries.get_or_insert_with(|| ReadMap {
                pods: Default::default(),
                looks_left: PRUNE_EVERY,
                prune_at: PRUNE_EVERY,
            });
            if let Some(entry) = map.pods.get(&address).filter(|e| same(e)) {
                return Some(entry.1.clone());
            }
            map.look()
        };
        // Freed with the lock let go.
        drop(dead);
        let pod = Arc::new(read(object)?);
        let mut entries = lock();
        if let Some(map) = entries.as_mut().filter(|m| m.pods.len() < MAX_KEPT) {
            map.pods
                .insert(address, (Arc::downgrade(object), pod.clone()));
        }
        Some(pod)
    }
}

/// `object` (a pod as stored, in either encoding) with `status`, for a
/// write of its status; any other object as it is. The protobuf model
/// holds every status field this release writes; a field it lacks is
/// left out, and a status it cannot read at all leaves the model's as it
/// was.
pub fn with_status(object: &Object, status: &PodStatus) -> Object {
    let value = crate::typed::encode(status);
    changed(
        object,
        |content| {
            content.insert("status".to_owned(), value.clone());
        },
        |model| {
            if let Ok(status) = serde_json::from_value(value.clone()) {
                model.status = Some(status);
            }
        },
    )
}

/// `object` (a pod as stored, in either encoding) with its document's
/// content changed by `document`, or its model by `model`; any other
/// object as it is.
fn changed(
    object: &Object,
    document: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    model: impl FnOnce(&mut v1::Pod),
) -> Object {
    let mut object = object.clone();
    match &mut object.kind {
        Some(Body::Generic(stored)) if stored.api_version == "v1" && stored.kind == "Pod" => {
            let mut content = crate::generic::content(stored);
            document(&mut content);
            crate::generic::set_content(stored, &content);
        }
        Some(Body::Pod(pod)) => model(pod),
        _ => {}
    }
    object
}

/// A pod's phase (`""` when it has none yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The node a pod is bound to (`""` when unbound).
pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// The service account a pod runs as: the one it names, else `default`.
pub fn account_of(pod: &Pod) -> &str {
    let spec = pod.spec.as_ref();
    let named = spec.and_then(|s| s.service_account_name.as_deref());
    named.filter(|n| !n.is_empty()).unwrap_or("default")
}

/// A pod's (first) IP (`""` when it has none yet).
pub fn ip(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or("")
}

/// Whether a pod counts as Ready (its Ready condition is True).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod has finished (Succeeded or Failed): nothing of it runs.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether a pod (`meta` its object's metadata) is still wanted: not
/// being deleted (terminating: its node is stopping it) and not finished.
pub fn is_active(meta: &v1::ObjectMeta, pod: &Pod) -> bool {
    // Being deleted: marked (`deletion::is_being_deleted`).
    meta.deletion_timestamp.is_empty() && !is_finished(pod)
}

/// The number of the container port named `name` in `pod`'s containers.
pub fn container_port_named(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref().unwrap_or("") == name)
        .map(|p| p.container_port)
}

/// The node a pod object, in either encoding, is bound to (`""` when
/// unbound or not a pod).
pub fn bound_node(object: &Object) -> String {
    match &object.kind {
        Some(Body::Pod(p)) => p
            .spec
            .as_ref()
            .map_or("", |s| s.node_name.as_str())
            .to_owned(),
        _ => facts(object).map(|f| f.node_name).unwrap_or_default(),
    }
}

/// `object` in the protobuf model when it is a pod in either encoding
/// (without the fields the model has no place for, and unmarked: a copy
/// to read, such as an agent acts on, never to write back); any other
/// object as it is. A pod whose status the model cannot read (status
/// writes are not checked) is read without it; one whose spec it cannot
/// read stays a document, with a warning.
pub fn in_model(object: Object) -> Object {
    if !is_pod(&object) {
        return object;
    }
    let read = legacy_bodies::cut_to_model(object.clone()).or_else(|_| {
        let mut without_status = object.clone();
        if let Some(Body::Generic(document)) = &mut without_status.kind {
            let mut content = crate::generic::content(document);
            content.remove("status");
            crate::generic::set_content(document, &content);
        }
        let read = legacy_bodies::cut_to_model(without_status);
        let pod = format!("{}/{}", object.meta().namespace, object.meta().name);
        match &read {
            Ok(_) => tracing::warn!(
                %pod,
                "a pod's status does not read in the protobuf model and is left out"
            ),
            Err(e) => tracing::warn!(%pod, error = %e, "a pod does not read in the protobuf model"),
        }
        read
    });
    read.unwrap_or(object)
}

/// What the store's indexes, deletion and the metrics ask of a stored
/// pod: where it is bound, its phase and status reason, its grace period
/// and the claims it mounts. [`facts`] reads these alone from a
/// document's bytes, skipping the rest of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub node_name: String,
    pub phase: String,
    pub reason: String,
    pub termination_grace_period_seconds: Option<i64>,
    /// The PersistentVolumeClaims its volumes name, each once, in order.
    pub claims: Vec<String>,
}

impl Facts {
    /// Whether the pod has finished (Succeeded or Failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }

    fn of(pod: &Pod) -> Facts {
        let status = pod.status.as_ref();
        Facts {
            node_name: node_name(pod).to_owned(),
            phase: phase(pod).to_owned(),
            reason: status.and_then(|s| s.reason.clone()).unwrap_or_default(),
            termination_grace_period_seconds: pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds),
            claims: pod.spec.as_ref().map(claim_names).unwrap_or_default(),
        }
    }
}

/// The fields of a stored pod that [`Facts`] holds, as JSON names them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsContent {
    spec: Option<FactsSpec>,
    status: Option<FactsStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsSpec {
    node_name: Option<String>,
    termination_grace_period_seconds: Option<i64>,
    volumes: Option<Vec<FactsVolume>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsVolume {
    persistent_volume_claim: Option<FactsClaim>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsClaim {
    claim_name: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FactsStatus {
    phase: Option<String>,
    reason: Option<String>,
}

/// [`Facts`] of a pod object in either encoding; `None` for another kind.
/// A document's are read from its bytes, without the rest of the pod; one
/// whose fields have the wrong types is read as [`read`] reads it (which
/// leaves out what does not read).
pub fn facts(object: &Object) -> Option<Facts> {
    match &object.kind {
        Some(Body::Generic(d)) if d.api_version == "v1" && d.kind == "Pod" => {
            if d.content.is_empty() {
                return Some(Facts::default());
            }
            // Stored content is written from a parsed map, so it has no
            // duplicate keys, which a derived decoder refuses.
            let Ok(content) = serde_json::from_slice::<FactsContent>(&d.content) else {
                return read(object).map(|pod| Facts::of(&pod));
            };
            let (spec, status) = (content.spec, content.status);
            let mut claims: Vec<String> = Vec::new();
            let volumes = spec.as_ref().and_then(|s| s.volumes.as_ref());
            for volume in volumes.into_iter().flatten() {
                let claim = volume.persistent_volume_claim.as_ref();
                if let Some(name) = claim.and_then(|c| c.claim_name.as_ref()) {
                    if !claims.contains(name) {
                        claims.push(name.clone());
                    }
                }
            }
            Some(Facts {
                node_name: spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                termination_grace_period_seconds: spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds),
                claims,
                phase: status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
                reason: status.and_then(|s| s.reason).unwrap_or_default(),
            })
        }
        Some(Body::Pod(model)) => {
            let spec = model.spec.as_ref();
            let status = model.status.as_ref();
            Some(Facts {
                node_name: spec.map(|s| s.node_name.clone()).unwrap_or_default(),
                phase: status.map(|s| s.phase.clone()).unwrap_or_default(),
                reason: status.map(|s| s.reason.clone()).unwrap_or_default(),
                termination_grace_period_seconds: spec
                    .and_then(|s| s.termination_grace_period_seconds),
                claims: spec.map(crate::storage::claim_names).unwrap_or_default(),
            })
        }
        _ => None,
    }
}

/// The PersistentVolumeClaims a pod spec's volumes name, each once, in
/// order.
pub fn claim_names(spec: &PodSpec) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if let Some(claim) = &volume.persistent_volume_claim {
            if !names.contains(&claim.claim_name) {
                names.push(claim.claim_name.clone());
            }
        }
    }
    names
}

/// The ConfigMaps and Secrets a pod spec reads (its containers'
/// environment, its volumes, its `imagePullSecrets`), each name once,
/// sorted, empty names left out: what its node may read, as Kubernetes'
/// NodeRestriction allows.
pub fn references(spec: &PodSpec) -> (Vec<String>, Vec<String>) {
    use std::collections::BTreeSet;
    let mut config_maps: BTreeSet<&str> = BTreeSet::new();
    let mut secrets: BTreeSet<&str> = BTreeSet::new();
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for e in container.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                config_maps.insert(&r.name);
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(&r.name);
            }
        }
        let from = container
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref());
        for from in from {
            if let Some(r) = &from.config_map_key_ref {
                config_maps.insert(&r.name);
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(&r.name);
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(c) = &volume.config_map {
            config_maps.insert(&c.name);
        }
        if let Some(s) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            secrets.insert(s);
        }
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            if let Some(c) = &source.config_map {
                config_maps.insert(&c.name);
            }
            if let Some(s) = &source.secret {
                secrets.insert(&s.name);
            }
        }
    }
    for pull in spec.image_pull_secrets.iter().flatten() {
        secrets.insert(&pull.name);
    }
    config_maps.remove("");
    secrets.remove("");
    (
        config_maps.into_iter().map(str::to_owned).collect(),
        secrets.into_iter().map(str::to_owned).collect(),
    )
}

/// `object` (a pod as stored, in either encoding) bound to `node`: its
/// `spec.nodeName` set, every other field as it was; any other object as
/// it is.
pub fn with_node(object: &Object, node: &str) -> Object {
    changed(
        object,
        |content| {
            let spec = content
                .entry("spec")
                .or_insert_with(|| serde_json::json!({}));
            if !spec.is_object() {
                *spec = serde_json::json!({});
            }
            spec["nodeName"] = node.into();
        },
        |model| model.spec.get_or_insert_with(Default::default).node_name = node.to_owned(),
    )
}

/// `object` (a pod as stored, in either encoding) with `status` as an
/// agent reports it, in the protobuf model (whose JSON is Kubernetes'),
/// for a write of its status; any other object as it is.
pub fn with_reported_status(object: &Object, status: Option<v1::PodStatus>) -> Object {
    let value = status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default());
    changed(
        object,
        |content| match value {
            Some(value) => {
                content.insert("status".to_owned(), value);
            }
            None => {
                content.remove("status");
            }
        },
        |model| model.status = status,
    )
}

/// Whether a pod is still wanted: not being deleted (terminating) and not
/// finished. Controllers count only these: a terminating pod is replaced
/// at once, and a Service does not send to it.
pub fn pod_is_active(pod: &v1::Pod) -> bool {
    let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
    !pod_is_terminating(pod) && phase != "Succeeded" && phase != "Failed"
}

/// Whether a pod is being deleted (terminating): its node is stopping it.
pub fn pod_is_terminating(pod: &v1::Pod) -> bool {
    pod.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// A ConfigMap or Secret a pod reads, by name, in the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigReference<'a> {
    ConfigMap(&'a str),
    Secret(&'a str),
}

/// The ConfigMaps and Secrets `container`'s environment reads (`env`'s
/// `valueFrom` and `envFrom`), in the order written, names as written
/// (empty ones too): what its agent fetches to start the container.
pub fn container_config_references(container: &v1::Container) -> Vec<ConfigReference<'_>> {
    let mut out = Vec::new();
    for e in &container.env_from {
        if let Some(r) = &e.config_map_ref {
            out.push(ConfigReference::ConfigMap(&r.name));
        }
        if let Some(r) = &e.secret_ref {
            out.push(ConfigReference::Secret(&r.name));
        }
    }
    for from in container.env.iter().filter_map(|e| e.value_from.as_ref()) {
        if let Some(r) = &from.config_map_key_ref {
            out.push(ConfigReference::ConfigMap(&r.name));
        }
        if let Some(r) = &from.secret_key_ref {
            out.push(ConfigReference::Secret(&r.name));
        }
    }
    out
}

/// The ConfigMaps and Secrets `volume` projects (a `configMap` or `secret`
/// volume, a `projected` volume's sources), names as written.
pub fn volume_config_references(volume: &v1::Volume) -> Vec<ConfigReference<'_>> {
    let mut out = Vec::new();
    if let Some(c) = &volume.config_map {
        out.push(ConfigReference::ConfigMap(&c.name));
    }
    if let Some(s) = &volume.secret {
        out.push(ConfigReference::Secret(&s.secret_name));
    }
    for source in volume.projected.iter().flat_map(|p| &p.sources) {
        if let Some(c) = &source.config_map {
            out.push(ConfigReference::ConfigMap(&c.name));
        }
        if let Some(s) = &source.secret {
            out.push(ConfigReference::Secret(&s.name));
        }
    }
    out
}

/// The service account a pod runs as: the one it names, else `default`.
pub fn service_account(spec: &v1::PodSpec) -> &str {
    if spec.service_account_name.is_empty() {
        "default"
    } else {
        &spec.service_account_name
    }
}

/// Admission as Kubernetes' ServiceAccount plugin does it for registry
/// credentials: a pod created without `imagePullSecrets` gets those of
/// its service account (`account`, the object, when it exists). A pod
/// that names its own keeps them. `spec` is the pod's spec as JSON.
pub fn admit_pull_secrets(spec: &mut serde_json::Value, account: Option<&Object>) {
    let listed = |v: &serde_json::Value| v.as_array().is_some_and(|a| !a.is_empty());
    if listed(&spec["imagePullSecrets"]) || !spec.is_object() {
        return;
    }
    let Some(Body::Generic(account)) = account.and_then(|a| a.kind.as_ref()) else {
        return;
    };
    // The account's fields besides its metadata, as JSON.
    let Ok(content) = serde_json::from_slice::<serde_json::Value>(&account.content) else {
        return;
    };
    let Some(listed) = content.get("imagePullSecrets").and_then(|v| v.as_array()) else {
        return;
    };
    let names: Vec<serde_json::Value> = listed
        .iter()
        .filter_map(|r| r.get("name").and_then(|n| n.as_str()))
        .filter(|name| !name.is_empty())
        .map(|name| serde_json::json!({ "name": name }))
        .collect();
    if !names.is_empty() {
        spec["imagePullSecrets"] = serde_json::Value::Array(names);
    }
}

/// Where every container finds its service account's credentials.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the volume holding them (`kube-api-access-xxxxx`).
pub const API_ACCESS_VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap in every namespace holding the cluster CA's certificate.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// The lifetime asked for the token of the `kube-api-access-*` volume:
/// kube-apiserver's, an hour and a few seconds so that the kubelet can
/// tell its own tokens apart.
pub const API_ACCESS_TOKEN_SECONDS: i64 = 3607;

/// Whether the `automountServiceAccountToken` of a ServiceAccount object
/// (its JSON content) says so; `None`: it does not say.
fn account_automounts(account: Option<&Object>) -> Option<bool> {
    let Some(Body::Generic(account)) = account.and_then(|a| a.kind.as_ref()) else {
        return None;
    };
    let content = serde_json::from_slice::<serde_json::Value>(&account.content).ok()?;
    content.get("automountServiceAccountToken")?.as_bool()
}

/// The projected source of the `kube-api-access-*` volume, exactly as
/// kube-apiserver's ServiceAccount admission makes it.
pub fn api_access_volume_source() -> v1::ProjectedVolumeSource {
    v1::ProjectedVolumeSource {
        sources: vec![
            v1::VolumeProjection {
                service_account_token: Some(Box::new(v1::ServiceAccountTokenProjection {
                    audience: String::new(),
                    expiration_seconds: Some(API_ACCESS_TOKEN_SECONDS),
                    path: "token".into(),
                })),
                ..Default::default()
            },
            v1::VolumeProjection {
                config_map: Some(Box::new(v1::ConfigMapProjection {
                    name: ROOT_CA_CONFIG_MAP.into(),
                    items: vec![v1::KeyToPath {
                        key: ROOT_CA_KEY.into(),
                        path: ROOT_CA_KEY.into(),
                        mode: None,
                    }],
                    optional: None,
                })),
                ..Default::default()
            },
            v1::VolumeProjection {
                downward_api: Some(Box::new(v1::DownwardApiProjection {
                    items: vec![v1::DownwardApiVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(v1::ObjectFieldSelector {
                            api_version: "v1".into(),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
        ],
        default_mode: Some(0o644),
    }
}

/// Admission as Kubernetes' ServiceAccount plugin does it for API
/// credentials, on create: `serviceAccountName` defaults to `default`;
/// unless `automountServiceAccountToken` is false (the pod's, else its
/// service account's: `account`, the object, when it exists), every
/// container and init container that mounts nothing at
/// [`SERVICE_ACCOUNT_MOUNT_PATH`] gets a read-only mount there of a
/// `kube-api-access-<suffix>` volume ([`api_access_volume_source`]),
/// added when some container needs it and the pod has none yet (a pod
/// admitted twice keeps the one it has). `suffix` makes the name.
pub fn admit_service_account_token(
    spec: &mut serde_json::Value,
    account: Option<&Object>,
    suffix: impl FnOnce() -> String,
) {
    use serde_json::Value;
    let Some(fields) = spec.as_object_mut() else {
        return;
    };
    let named = fields
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !named {
        fields.insert("serviceAccountName".into(), "default".into());
    }
    // The deprecated `serviceAccount` says the same, as Kubernetes writes
    // it.
    let name = fields["serviceAccountName"].clone();
    fields.insert("serviceAccount".into(), name);
    let automount = fields
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| account_automounts(account))
        .unwrap_or(true);
    if !automount {
        return;
    }
    let existing = fields
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|name| name.starts_with(API_ACCESS_VOLUME_PREFIX))
        .map(str::to_owned);
    let has_volume = existing.is_some();
    let name = existing.unwrap_or_else(|| format!("{API_ACCESS_VOLUME_PREFIX}{}", suffix()));
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let containers = fields.get_mut(list).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !mounts.is_array() {
                *mounts = Value::Array(Vec::new());
            }
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts
                .iter()
                .any(|m| m["mountPath"].as_str() == Some(SERVICE_ACCOUNT_MOUNT_PATH))
            {
                continue;
            }
            mounts.push(serde_json::json!({
                "name": name,
                "readOnly": true,
                "mountPath": SERVICE_ACCOUNT_MOUNT_PATH,
            }));
            needs_volume = true;
        }
    }
    if needs_volume && !has_volume {
        let volumes = fields
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !volumes.is_array() {
            *volumes = Value::Array(Vec::new());
        }
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(serde_json::json!({
                "name": name,
                "projected": api_access_volume_source(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generic, IntoObject};
    use serde_json::json;

    /// A pod in the protobuf model, from its JSON.
    fn model_pod(json: serde_json::Value) -> Object {
        Object {
            kind: Some(Body::Pod(serde_json::from_value(json).unwrap())),
        }
    }

    /// A Running pod `web-0` bound to `n1`, with a named container port
    /// and the Ready condition `ready`, as JSON.
    fn running_pod(ready: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "busybox",
                                "ports": [{"name": "http", "containerPort": 8080}]}],
            },
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.7",
                "conditions": [{"type": "Ready", "status": ready}],
            },
        })
    }

    #[test]
    fn a_pod_reads_the_same_from_its_protobuf_model_and_from_a_document() {
        let json = running_pod("True");
        let (model, _) = (model_pod(json.clone()), ());
        assert!(matches!(model.kind, Some(Body::Pod(_))));
        let metadata = model.meta().clone();
        let document = generic::document("v1", "Pod", Some(metadata), json).into_object();
        for object in [&model, &document] {
            assert!(is_pod(object));
            let pod = read(object).expect("a pod");
            assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
            assert_eq!(pod.metadata.namespace.as_deref(), Some("shop"));
            assert_eq!(node_name(&pod), "n1");
            assert_eq!(ip(&pod), "10.42.0.7");
            assert_eq!(phase(&pod), "Running");
            assert!(is_ready(&pod));
            assert!(!is_finished(&pod));
            assert_eq!(container_port_named(&pod, "http"), Some(8080));
            assert_eq!(container_port_named(&pod, "https"), None);
            assert_eq!(account_of(&pod), "default", "none named");
            let stored = StoredPod::read(object.clone()).expect("a pod");
            assert_eq!(stored.meta().labels["app"], "web");
            assert!(is_active(stored.meta(), &stored.pod));
        }
        assert_eq!(read(&model), read(&document));
    }

    #[test]
    fn a_pod_reads_in_the_protobuf_model_without_what_it_cannot_hold_and_unmarked() {
        let mut json = running_pod("True");
        json["spec"]["os"] = json!({"name": "linux"});
        let meta = model_pod(running_pod("True")).meta().clone();
        let document = generic::document("v1", "Pod", Some(meta.clone()), json.clone());
        let model = in_model(document.into_object());
        let Some(Body::Pod(pod)) = &model.kind else {
            panic!("not in the model: {model:?}");
        };
        assert_eq!(pod.spec.as_ref().unwrap().node_name, "n1");
        assert_eq!(pod.status.as_ref().unwrap().pod_ip, "10.42.0.7");
        assert!(model.meta().annotations.is_empty(), "marked: {model:?}");
        // A status the model cannot read is left out; the pod stays.
        json["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": "many"}]);
        let damaged = generic::document("v1", "Pod", Some(meta), json).into_object();
        let model = in_model(damaged);
        let Some(Body::Pod(pod)) = &model.kind else {
            panic!("not in the model: {model:?}");
        };
        assert_eq!(pod.status, None);
        assert_eq!(pod.spec.as_ref().unwrap().containers[0].name, "c");
        // Another kind is left alone.
        let secret = generic::document("v1", "Secret", None, json!({})).into_object();
        assert_eq!(in_model(secret.clone()), secret);
    }

    #[test]
    fn an_admitted_pod_is_written_whole_for_an_older_master() {
        // Admission writes the deprecated `serviceAccount` beside
        // `serviceAccountName`: the model holds what it says.
        let mut json = running_pod("True");
        json["spec"]["serviceAccountName"] = json!("build");
        json["spec"]["serviceAccount"] = json!("build");
        let meta = model_pod(running_pod("True")).meta().clone();
        let document = generic::document("v1", "Pod", Some(meta.clone()), json.clone());
        let model = legacy_bodies::to_legacy(document.into_object()).expect("whole");
        let Some(Body::Pod(pod)) = &model.kind else {
            panic!("not in the model: {model:?}");
        };
        assert_eq!(pod.spec.as_ref().unwrap().service_account_name, "build");
        // One that says something else is not cut down.
        json["spec"]["serviceAccount"] = json!("other");
        let document = generic::document("v1", "Pod", Some(meta), json);
        assert!(legacy_bodies::to_legacy(document.into_object()).is_err());
    }

    #[test]
    fn readiness_phase_and_deletion_decide_what_a_pod_counts_as() {
        let read_json = |json: serde_json::Value| {
            let (object, _) = crate::manifest::object_from_json(crate::Kind::Pod, json).unwrap();
            object
        };
        let not_ready = read_json(running_pod("False"));
        assert!(!is_ready(&read(&not_ready).unwrap()));
        let mut done = running_pod("False");
        done["status"]["phase"] = json!("Succeeded");
        let done = read_json(done);
        let pod = read(&done).unwrap();
        assert!(is_finished(&pod));
        assert!(!is_active(done.meta(), &pod));
        let mut leaving = running_pod("True");
        leaving["metadata"]["deletionTimestamp"] = json!("2026-12-06T09:00:00Z");
        let leaving = read_json(leaving);
        let pod = read(&leaving).unwrap();
        assert!(is_ready(&pod) && !is_finished(&pod));
        assert!(!is_active(leaving.meta(), &pod), "terminating");
        // An unbound pod with no status yet.
        let fresh = read_json(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "new"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
        let pod = read(&fresh).unwrap();
        assert_eq!((node_name(&pod), ip(&pod), phase(&pod)), ("", "", ""));
        assert!(!is_ready(&pod) && is_active(fresh.meta(), &pod));
    }

    /// A pod using every part of the protobuf model: what an older
    /// release stored reads whole as Kubernetes' Pod.
    const EVERY_FIELD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: full, namespace: shop}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 20
  dnsPolicy: ClusterFirst
  dnsConfig: {nameservers: [10.0.0.10], searches: [x.local], options: [{name: ndots, value: "2"}]}
  nodeSelector: {disk: ssd}
  serviceAccountName: robot
  automountServiceAccountToken: false
  nodeName: n1
  hostNetwork: false
  hostPID: true
  hostIPC: true
  shareProcessNamespace: true
  enableServiceLinks: false
  hostname: full
  subdomain: web
  schedulerName: default-scheduler
  priority: 10
  priorityClassName: high
  imagePullSecrets: [{name: reg}]
  tolerations: [{key: k, operator: Equal, value: v, effect: NoExecute, tolerationSeconds: 30}]
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
    runAsNonRoot: true
    fsGroup: 2000
    supplementalGroups: [3000]
    seccompProfile: {type: RuntimeDefault}
  volumes:
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
  - {name: host, hostPath: {path: /srv, type: Directory}}
  - name: cm
    configMap: {name: cm, items: [{key: a, path: a.txt, mode: 256}], defaultMode: 420, optional: true}
  - {name: secret, secret: {secretName: s, defaultMode: 384}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {apiVersion: v1, fieldPath: metadata.labels}}
      - {path: cpu, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1m}}
  - name: projected
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {audience: api, expirationSeconds: 3600, path: token}
      - configMap: {name: root, items: [{key: ca.crt, path: ca.crt}]}
      - secret: {name: s2}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
  - {name: data, persistentVolumeClaim: {claimName: data, readOnly: true}}
  initContainers:
  - {name: sidecar, image: "side:1", restartPolicy: Always}
  containers:
  - name: app
    image: "app:1"
    command: [/bin/app]
    args: [--port, "8080"]
    workingDir: /srv
    stdin: true
    stdinOnce: true
    tty: true
    imagePullPolicy: IfNotPresent
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    ports: [{name: http, containerPort: 8080, protocol: TCP, hostPort: 80, hostIP: 127.0.0.1}]
    env:
    - {name: A, value: a}
    - name: B
      valueFrom: {configMapKeyRef: {name: cm, key: b, optional: true}}
    - name: C
      valueFrom: {secretKeyRef: {name: s, key: c}}
    - name: D
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: E
      valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Mi}}
    envFrom: [{prefix: X_, configMapRef: {name: cm}}, {secretRef: {name: s, optional: true}}]
    resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 128Mi}}
    volumeMounts:
    - {name: scratch, mountPath: /tmp, readOnly: false, subPath: x, mountPropagation: None}
    livenessProbe:
      httpGet: {path: /healthz, port: 8080, scheme: HTTP, host: 127.0.0.1, httpHeaders: [{name: X, value: y}]}
      initialDelaySeconds: 1
      periodSeconds: 2
      timeoutSeconds: 3
      successThreshold: 1
      failureThreshold: 4
      terminationGracePeriodSeconds: 5
    readinessProbe: {tcpSocket: {port: http}}
    startupProbe: {exec: {command: ["true"]}}
    lifecycle:
      postStart: {exec: {command: [/bin/start]}}
      preStop: {sleep: {seconds: 2}}
    securityContext:
      privileged: false
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      runAsUser: 1001
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      seccompProfile: {type: Localhost, localhostProfile: p.json}
status:
  phase: Running
  message: fine
  reason: Started
  hostIP: 192.0.2.1
  podIP: 10.42.0.9
  podIPs: [{ip: 10.42.0.9}]
  startTime: "2026-12-06T09:00:00Z"
  qosClass: Burstable
  conditions:
  - {type: Ready, status: "True", lastTransitionTime: "2026-12-06T09:00:05Z", lastProbeTime: "2026-12-06T09:00:05Z", reason: R, message: M}
  containerStatuses:
  - name: app
    ready: true
    started: true
    restartCount: 2
    image: "app:1"
    imageID: sha256:abc
    containerID: containerd://abc
    state: {running: {startedAt: "2026-12-06T09:00:01Z"}}
    lastState:
      terminated: {exitCode: 1, signal: 9, reason: Error, message: m, startedAt: "2026-12-06T08:59:00Z", finishedAt: "2026-12-06T09:00:00Z", containerID: containerd://old}
  initContainerStatuses:
  - name: sidecar
    ready: false
    restartCount: 0
    image: "side:1"
    imageID: ""
    state: {waiting: {reason: PodInitializing, message: w}}
"#;

    #[test]
    fn every_field_of_the_protobuf_model_reads_as_kubernetes_pod() {
        let manifest = crate::manifest::parse_manifest("pod.yaml", EVERY_FIELD, false).unwrap();
        assert_eq!(
            manifest.warnings,
            Vec::<String>::new(),
            "the model holds all of it"
        );
        let document = manifest.objects.into_iter().next().unwrap();
        let model = legacy_bodies::to_legacy(document).expect("the model holds all of it");
        assert!(matches!(model.kind, Some(Body::Pod(_))));
        let pod = read(&model).expect("the whole pod reads");
        let mut written = crate::typed::encode(&pod);
        let mut expected = crate::manifest::to_json_value(&model);
        for value in [&mut written, &mut expected] {
            let fields = value.as_object_mut().unwrap();
            for own in ["apiVersion", "kind", "metadata"] {
                fields.remove(own);
            }
        }
        assert_eq!(written, expected);
    }

    #[test]
    fn a_status_is_written_into_either_encoding_and_reads_back() {
        let json = running_pod("True");
        let (model, _) = (model_pod(json.clone()), ());
        let metadata = model.meta().clone();
        let document = generic::document("v1", "Pod", Some(metadata), json).into_object();
        let mut status = read(&model).unwrap().status.unwrap();
        status.phase = Some("Failed".into());
        status.conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByPodGC".into()),
            last_transition_time: Some(crate::kube_time(std::time::UNIX_EPOCH)),
            ..Default::default()
        }]);
        for object in [&model, &document] {
            let written = with_status(object, &status);
            assert_eq!(
                std::mem::discriminant(written.kind.as_ref().unwrap()),
                std::mem::discriminant(object.kind.as_ref().unwrap()),
                "the encoding is kept"
            );
            let pod = read(&written).unwrap();
            assert_eq!(pod.status.as_ref(), Some(&status));
            assert_eq!(
                pod.spec,
                read(object).unwrap().spec,
                "the spec is untouched"
            );
            assert_eq!(written.meta(), object.meta());
        }
        let secret = generic::document("v1", "Secret", None, json!({})).into_object();
        assert_eq!(with_status(&secret, &status), secret);
    }

    #[test]
    fn a_damaged_status_time_is_left_out_and_the_rest_of_the_status_stays() {
        let mut json = running_pod("True");
        // A client may write a status time without its offset: status
        // writes are not checked.
        json["status"]["startTime"] = json!("2026-12-06T09:00:00");
        json["status"]["conditions"][0]["lastTransitionTime"] = json!("yesterday");
        json["status"]["conditions"][0]["lastProbeTime"] = json!("2026-12-06T09:00:05Z");
        let (model, _) = (model_pod(json.clone()), ());
        let document =
            generic::document("v1", "Pod", Some(model.meta().clone()), json).into_object();
        for object in [&model, &document] {
            let pod = read(object).expect("still a pod");
            let status = pod.status.as_ref().expect("the status stays");
            assert_eq!(status.start_time, None, "the damaged time goes");
            let condition = &status.conditions.as_ref().unwrap()[0];
            assert_eq!(condition.last_transition_time, None);
            assert!(condition.last_probe_time.is_some(), "a good time stays");
            assert!(is_ready(&pod) && ip(&pod) == "10.42.0.7" && phase(&pod) == "Running");
            assert_eq!(node_name(&pod), "n1");
        }
    }

    #[test]
    fn a_status_that_still_does_not_read_is_left_out_and_the_pod_stays() {
        let mut json = running_pod("True");
        json["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": "many"}]);
        let metadata = (model_pod(running_pod("True")), ()).0.meta().clone();
        let document = generic::document("v1", "Pod", Some(metadata), json).into_object();
        let pod = read(&document).expect("still a pod");
        assert_eq!(pod.status, None, "the status does not read");
        assert_eq!(node_name(&pod), "n1", "the spec does");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
    }

    #[test]
    fn a_shared_object_is_read_once_and_a_changed_copy_again() {
        let (model, _) = (model_pod(running_pod("True")), ());
        let shared = Arc::new(model);
        let first = StoredPod::read(shared.clone()).unwrap();
        let again = StoredPod::read(shared.clone()).unwrap();
        assert!(Arc::ptr_eq(&first.pod, &again.pod), "read once");
        // A copy changed is another object: read as it is now.
        let mut changed = Object::clone(&shared);
        if let Some(Body::Pod(p)) = &mut changed.kind {
            p.status.as_mut().unwrap().phase = "Succeeded".into();
        }
        let changed = StoredPod::read(changed).unwrap();
        assert_eq!(phase(&changed.pod), "Succeeded");
        assert_eq!(
            phase(&StoredPod::read(shared.clone()).unwrap().pod),
            "Running"
        );
        // Taken out of its Arc and changed in place: read again, also
        // when shared (and so looked up) at the address it may reuse.
        drop((first, again));
        let mut owned = Arc::unwrap_or_clone(shared);
        if let Some(Body::Pod(p)) = &mut owned.kind {
            p.status.as_mut().unwrap().phase = "Failed".into();
        }
        let owned = Arc::new(owned);
        let also = owned.clone();
        assert_eq!(phase(&StoredPod::read(owned).unwrap().pod), "Failed");
        drop(also);
    }

    #[test]
    fn the_reads_of_dropped_objects_are_let_go() {
        let (model, _) = (model_pod(running_pod("True")), ());
        let kept = Arc::new(model.clone());
        let kept_read = StoredPod::read(kept.clone()).unwrap();
        for _ in 0..PRUNE_EVERY * 3 {
            // Shared while it is read, dropped after.
            let shared = Arc::new(model.clone());
            let also = shared.clone();
            StoredPod::read(shared).unwrap();
            drop(also);
        }
        // What the map holds, looked at with the lock let go before any
        // assertion (other tests of this process may read pods too).
        let (held, live, kept_entry) = {
            let entries = READ.entries.lock().unwrap_or_else(|e| e.into_inner());
            let map = entries.as_ref().expect("entries");
            let live = map
                .pods
                .values()
                .filter(|(w, _)| w.strong_count() > 0)
                .count();
            let kept_entry = map
                .pods
                .get(&(Arc::as_ptr(&kept) as usize))
                .map(|e| e.1.clone());
            (map.pods.len(), live, kept_entry)
        };
        assert!(
            held <= live + 2 * PRUNE_EVERY,
            "{held} entries, {live} live"
        );
        let kept_entry = kept_entry.expect("the live one stays");
        assert!(Arc::ptr_eq(&kept_entry, &kept_read.pod));
        // One no one else shares is read and not kept.
        let alone = Arc::new(model);
        let address = Arc::as_ptr(&alone) as usize;
        let read_alone = StoredPod::read(alone).unwrap();
        let entries = READ.entries.lock().unwrap_or_else(|e| e.into_inner());
        let kept = entries.as_ref().and_then(|m| m.pods.get(&address)).cloned();
        drop(entries);
        assert!(kept.is_none(), "not kept");
        drop(read_alone);
    }

    #[test]
    fn at_most_max_kept_pods_are_kept_read() {
        let model = model_pod(running_pod("True"));
        let reads = ReadPods {
            entries: std::sync::Mutex::new(None),
        };
        let live: Vec<Arc<Object>> = (0..MAX_KEPT + 10)
            .map(|_| Arc::new(model.clone()))
            .collect();
        // Shared (an object no one else holds is never kept).
        let _also = live.clone();
        for object in &live {
            assert!(reads.get_or_read(object).is_some(), "read past the cap too");
        }
        let entries = reads.entries.lock().unwrap_or_else(|e| e.into_inner());
        let map = entries.as_ref().expect("entries");
        assert_eq!(map.pods.len(), MAX_KEPT);
        let last = Arc::as_ptr(&live[MAX_KEPT + 9]) as usize;
        assert!(!map.pods.contains_key(&last), "past the cap: not kept");
    }

    #[test]
    fn another_kind_is_not_read_as_a_pod() {
        let secret = generic::document("v1", "Secret", None, json!({"data": {}})).into_object();
        assert!(read(&secret).is_none() && !is_pod(&secret));
        assert!(StoredPod::read(secret).is_none());
    }

    /// A spec reading ConfigMaps `env-cm`, `from-cm`, `vol-cm`, `proj-cm`
    /// and Secrets `env-s`, `from-s`, `vol-s`, `proj-s`, each one way.
    fn spec() -> v1::PodSpec {
        let key_ref = |cm: &str, secret: &str| v1::EnvVar {
            name: "V".into(),
            value_from: Some(v1::EnvVarSource {
                config_map_key_ref: (!cm.is_empty()).then(|| v1::ConfigMapKeySelector {
                    name: cm.into(),
                    key: "k".into(),
                    ..Default::default()
                }),
                secret_key_ref: (!secret.is_empty()).then(|| v1::SecretKeySelector {
                    name: secret.into(),
                    key: "k".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        v1::PodSpec {
            containers: vec![v1::Container {
                name: "c".into(),
                env: vec![key_ref("env-cm", ""), key_ref("", "env-s")],
                ..Default::default()
            }],
            init_containers: vec![v1::Container {
                name: "i".into(),
                env_from: vec![
                    v1::EnvFromSource {
                        config_map_ref: Some(v1::ConfigMapEnvSource {
                            name: "from-cm".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    v1::EnvFromSource {
                        secret_ref: Some(v1::SecretEnvSource {
                            name: "from-s".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            volumes: vec![
                v1::Volume {
                    name: "a".into(),
                    config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                        name: "vol-cm".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                v1::Volume {
                    name: "b".into(),
                    secret: Some(Box::new(v1::SecretVolumeSource {
                        secret_name: "vol-s".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                v1::Volume {
                    name: "c".into(),
                    projected: Some(Box::new(v1::ProjectedVolumeSource {
                        sources: vec![
                            v1::VolumeProjection {
                                config_map: Some(Box::new(v1::ConfigMapProjection {
                                    name: "proj-cm".into(),
                                    ..Default::default()
                                })),
                                ..Default::default()
                            },
                            v1::VolumeProjection {
                                secret: Some(Box::new(v1::SecretProjection {
                                    name: "proj-s".into(),
                                    ..Default::default()
                                })),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn every_way_a_pod_reads_a_config_map_or_secret_counts() {
        // Read as Kubernetes' PodSpec, as NodeRestriction reads a stored pod.
        let read = |spec: &v1::PodSpec| -> PodSpec {
            serde_json::from_value(serde_json::to_value(spec).unwrap()).unwrap()
        };
        let (config_maps, secrets) = references(&read(&spec()));
        assert_eq!(config_maps, ["env-cm", "from-cm", "proj-cm", "vol-cm"]);
        assert_eq!(secrets, ["env-s", "from-s", "proj-s", "vol-s"]);
        // A pull secret is read by the node that pulls the pod's images.
        let mut pulling = spec();
        pulling.image_pull_secrets = vec![v1::LocalObjectReference {
            name: "regcred".into(),
        }];
        let (config_maps, secrets) = references(&read(&pulling));
        assert_eq!(config_maps, ["env-cm", "from-cm", "proj-cm", "vol-cm"]);
        assert_eq!(secrets, ["env-s", "from-s", "proj-s", "regcred", "vol-s"]);
    }

    /// `spec` admitted by `admit`, which works on its JSON.
    fn admitted(spec: &v1::PodSpec, admit: impl FnOnce(&mut serde_json::Value)) -> v1::PodSpec {
        let mut value = serde_json::to_value(spec).unwrap();
        admit(&mut value);
        serde_json::from_value(value).unwrap()
    }

    fn service_account(pull_secrets: serde_json::Value) -> Object {
        let content = serde_json::json!({
            "imagePullSecrets": pull_secrets,
        });
        Object {
            kind: Some(Body::Generic(v1::GenericObject {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                metadata: Some(v1::ObjectMeta {
                    name: "default".into(),
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                content: serde_json::to_vec(&content).unwrap(),
            })),
        }
    }

    #[test]
    fn pods_without_pull_secrets_get_their_service_accounts() {
        let account = service_account(serde_json::json!([{"name": "regcred"}, {"name": ""}]));
        let mut spec = v1::PodSpec::default();
        assert_eq!(super::service_account(&spec), "default");
        spec = admitted(&spec, |s| admit_pull_secrets(s, Some(&account)));
        let names: Vec<&str> = spec
            .image_pull_secrets
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["regcred"]);
        // The pod's own are kept.
        let mut own = v1::PodSpec {
            image_pull_secrets: vec![v1::LocalObjectReference {
                name: "mine".into(),
            }],
            ..Default::default()
        };
        own = admitted(&own, |s| admit_pull_secrets(s, Some(&account)));
        assert_eq!(own.image_pull_secrets.len(), 1);
        assert_eq!(own.image_pull_secrets[0].name, "mine");
        // No account, or one without pull secrets: nothing.
        let mut plain = v1::PodSpec::default();
        plain = admitted(&plain, |s| admit_pull_secrets(s, None));
        plain = admitted(&plain, |s| {
            admit_pull_secrets(s, Some(&service_account(serde_json::json!(null))))
        });
        assert!(plain.image_pull_secrets.is_empty());
    }

    fn account_automounting(automount: serde_json::Value) -> Object {
        let mut account = service_account(serde_json::json!(null));
        if let Some(Body::Generic(g)) = account.kind.as_mut() {
            g.content = serde_json::to_vec(&serde_json::json!({
                "automountServiceAccountToken": automount,
            }))
            .unwrap();
        }
        account
    }

    fn two_containers() -> v1::PodSpec {
        v1::PodSpec {
            containers: vec![v1::Container {
                name: "app".into(),
                ..Default::default()
            }],
            init_containers: vec![v1::Container {
                name: "init".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn pods_get_kubernetes_api_access_volume_and_mounts() {
        let mut spec = two_containers();
        spec = admitted(&spec, |s| {
            admit_service_account_token(s, None, || "abcde".into())
        });
        assert_eq!(spec.service_account_name, "default");
        assert_eq!(spec.volumes.len(), 1);
        let volume = &spec.volumes[0];
        assert_eq!(volume.name, "kube-api-access-abcde");
        let projected = volume.projected.as_ref().unwrap();
        assert_eq!(projected.default_mode, Some(0o644));
        // The three sources, as kube-apiserver writes them, in JSON.
        let json = serde_json::to_value(projected).unwrap();
        assert_eq!(
            json["sources"],
            serde_json::json!([
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ])
        );
        for c in spec.containers.iter().chain(&spec.init_containers) {
            assert_eq!(c.volume_mounts.len(), 1, "{}", c.name);
            let mount = &c.volume_mounts[0];
            assert_eq!(mount.name, "kube-api-access-abcde");
            assert_eq!(mount.mount_path, SERVICE_ACCOUNT_MOUNT_PATH);
            assert!(mount.read_only);
        }
        // Admitted again (the same pod): nothing doubles.
        let before = spec.clone();
        spec = admitted(&spec, |s| {
            admit_service_account_token(s, None, || "zzzzz".into())
        });
        assert_eq!(spec, before);
    }

    #[test]
    fn automount_false_on_the_pod_or_its_account_adds_nothing() {
        let mut off = two_containers();
        off.automount_service_account_token = Some(false);
        off = admitted(&off, |s| {
            admit_service_account_token(s, None, || "abcde".into())
        });
        assert!(off.volumes.is_empty());
        assert!(off.containers[0].volume_mounts.is_empty());

        let account_off = account_automounting(serde_json::json!(false));
        let mut by_account = two_containers();
        by_account = admitted(&by_account, |s| {
            admit_service_account_token(s, Some(&account_off), || "abcde".into())
        });
        assert!(by_account.volumes.is_empty());
        assert!(by_account.init_containers[0].volume_mounts.is_empty());

        // The pod's own true wins over its account's false.
        let mut pod_on = two_containers();
        pod_on.automount_service_account_token = Some(true);
        pod_on = admitted(&pod_on, |s| {
            admit_service_account_token(s, Some(&account_off), || "abcde".into())
        });
        assert_eq!(pod_on.volumes.len(), 1);

        // An account saying true, or nothing, mounts.
        let mut account_on = two_containers();
        let on = account_automounting(serde_json::json!(true));
        account_on = admitted(&account_on, |s| {
            admit_service_account_token(s, Some(&on), || "abcde".into())
        });
        assert_eq!(account_on.volumes.len(), 1);
    }

    #[test]
    fn a_container_mounting_the_path_itself_keeps_its_mount() {
        let mut spec = two_containers();
        spec.containers[0].volume_mounts.push(v1::VolumeMount {
            name: "mine".into(),
            mount_path: SERVICE_ACCOUNT_MOUNT_PATH.into(),
            ..Default::default()
        });
        spec = admitted(&spec, |s| {
            admit_service_account_token(s, None, || "abcde".into())
        });
        assert_eq!(spec.containers[0].volume_mounts.len(), 1);
        assert_eq!(spec.containers[0].volume_mounts[0].name, "mine");
        // The init container still needs it, so the volume is added.
        assert_eq!(
            spec.init_containers[0].volume_mounts[0].name,
            "kube-api-access-abcde"
        );
        assert_eq!(spec.volumes.len(), 1);
        // When no container needs it, no volume.
        let mut all_own = v1::PodSpec {
            containers: vec![spec.containers[0].clone()],
            ..Default::default()
        };
        all_own = admitted(&all_own, |s| {
            admit_service_account_token(s, None, || "abcde".into())
        });
        assert!(all_own.volumes.is_empty());
    }
}
