//! The EndpointSlice controller (`discovery.k8s.io/v1`), beside the
//! Endpoints one ([`super::endpoints`]), since current clients (kubectl,
//! ingress controllers, service meshes) read slices: for every Service
//! with a selector, slices labelled `kubernetes.io/service-name=<service>`
//! and `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`, owned by the Service, listing the
//! selected pods that have an IPv4 address (`addressType: IPv4`), grouped
//! by the ports the Service's ports resolve to on each pod (named target
//! ports included), at most [`MAX_ENDPOINTS_PER_SLICE`] to a slice. Each
//! endpoint carries Kubernetes' conditions (`serving`: the pod is Ready;
//! `terminating`: it is being deleted; `ready`: serving and not
//! terminating), `nodeName`, the pod as `targetRef`, and its `hostname`
//! when its `subdomain` names the Service. Finished pods are left out;
//! terminating ones stay, as Kubernetes keeps them. A Service without
//! endpoints has one empty slice (Kubernetes' placeholder).
//!
//! Updates move as little as they can ([`plan`]): an endpoint stays in
//! the slice it is in, new ones fill slices with room before a new slice
//! is made, and emptied slices go. ExternalName Services and deleted ones
//! lose their slices; Services without a selector keep whatever slices
//! others wrote. Slices other managers wrote are never touched.
//!
//! Reads go through the cache's indexes: the pods by the selector's
//! labels, the slices by their Service label, the Services selecting a
//! changed pod by the selector index; nothing lists every pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object};
use skiff_proto::v1;

use super::endpoints::resolve_port;
use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::owners::controller_reference;
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::services::{self, Service};
use skiff_objects::{generic, typed};
use skiff_objects::{IntoObject, Kind, ObjectExt};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who keeps a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller, as Kubernetes' own names itself.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// On the slices of a headless Service.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address type skiff's pods have.
const ADDRESS_TYPE: &str = "IPv4";

pub struct EndpointSliceController {
    pub ctx: Context,
}

/// One port of a slice, one endpoint (one pod) of a slice, its
/// conditions, and the pod behind it: Kubernetes' types.
pub use k8s_openapi::api::core::v1::ObjectReference as TargetRef;
pub use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions as Conditions, EndpointPort as SlicePort,
};

/// What tells endpoints apart: the address.
fn endpoint_key(endpoint: &SliceEndpoint) -> &str {
    endpoint.addresses.first().map_or("", String::as_str)
}

/// The ports a slice lists, as the planner groups endpoints by them:
/// ordered by name, port, protocol and app protocol (Kubernetes' type has
/// no order of its own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ports(pub Vec<SlicePort>);

impl Ports {
    fn key(&self) -> Vec<(&str, i32, &str, &str)> {
        fn text(field: &Option<String>) -> &str {
            field.as_deref().unwrap_or("")
        }
        self.0
            .iter()
            .map(|p| {
                let port = p.port.unwrap_or(0);
                (
                    text(&p.name),
                    port,
                    text(&p.protocol),
                    text(&p.app_protocol),
                )
            })
            .collect()
    }
}

impl Eq for Ports {}

impl PartialOrd for Ports {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ports {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// What a slice lists: its name (`""` for one to create), ports and
/// endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slice {
    pub name: String,
    pub ports: Ports,
    pub endpoints: Vec<SliceEndpoint>,
}

/// The endpoints wanted, grouped by the ports they serve.
pub type Desired = BTreeMap<Ports, Vec<SliceEndpoint>>;

/// What to do with a Service's slices.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Existing slices with what they list next, and whether that differs
    /// from what they list now.
    pub keep: Vec<(Slice, bool)>,
    /// Slices to make.
    pub create: Vec<Slice>,
    /// Slices to delete, by name.
    pub delete: Vec<String>,
}

/// Turns the `existing` slices into the `desired` endpoints with as few
/// changes as it can (see the module header). No desired endpoint at all
/// means one slice without ports or endpoints.
pub fn plan(existing: Vec<Slice>, mut desired: Desired) -> Plan {
    if desired.is_empty() {
        desired.insert(Ports::default(), Vec::new());
    }
    let mut by_ports: BTreeMap<Ports, Vec<Slice>> = BTreeMap::new();
    for slice in existing {
        by_ports.entry(slice.ports.clone()).or_default().push(slice);
    }
    let mut out = Plan::default();
    for (ports, endpoints) in desired {
        let mut slices = by_ports.remove(&ports).unwrap_or_default();
        slices.sort_by(|a, b| a.name.cmp(&b.name));
        if endpoints.is_empty() {
            // The placeholder: the first one kept, emptied.
            let mut slices = slices.into_iter();
            match slices.next() {
                Some(first) => {
                    let changed = !first.endpoints.is_empty();
                    let next = Slice {
                        endpoints: Vec::new(),
                        ..first
                    };
                    out.keep.push((next, changed));
                }
                None => out.create.push(Slice {
                    name: String::new(),
                    ports,
                    endpoints: Vec::new(),
                }),
            }
            out.delete.extend(slices.map(|s| s.name));
            continue;
        }
        let mut wanted: BTreeMap<String, SliceEndpoint> = endpoints
            .into_iter()
            .map(|e| (endpoint_key(&e).to_owned(), e))
            .collect();
        // Endpoints stay where they are (up to the limit a slice holds).
        let mut next: Vec<Vec<SliceEndpoint>> = Vec::with_capacity(slices.len());
        for slice in &slices {
            let mut kept = Vec::new();
            for endpoint in &slice.endpoints {
                if kept.len() >= MAX_ENDPOINTS_PER_SLICE {
                    break;
                }
                if let Some(now) = wanted.remove(endpoint_key(endpoint)) {
                    kept.push(now);
                }
            }
            next.push(kept);
        }
        // New ones fill slices with room first, then new slices.
        let mut rest = wanted.into_values();
        for kept in &mut next {
            while kept.len() < MAX_ENDPOINTS_PER_SLICE {
                match rest.next() {
                    Some(endpoint) => kept.push(endpoint),
                    None => break,
                }
            }
        }
        let rest: Vec<SliceEndpoint> = rest.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.create.push(Slice {
                name: String::new(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
        for (slice, mut endpoints) in slices.into_iter().zip(next) {
            if endpoints.is_empty() {
                out.delete.push(slice.name);
                continue;
            }
            endpoints.sort_by(|a, b| endpoint_key(a).cmp(endpoint_key(b)));
            let changed = endpoints != slice.endpoints;
            out.keep.push((Slice { endpoints, ..slice }, changed));
        }
    }
    // Slices of ports no pod serves any more.
    out.delete
        .extend(by_ports.into_values().flatten().map(|s| s.name));
    out
}

/// The endpoints `service` wants from `pods` (those its selector picked).
pub fn desired(service: &Service, pods: &[Arc<Object>]) -> Desired {
    let (namespace, name) = services::key(service);
    let selector = services::selector(service);
    let mut groups = Desired::new();
    for object in pods {
        let pod_meta = object.meta();
        let selected = !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| pod_meta.labels.get(k) == Some(v));
        if !selected || pod_meta.namespace != namespace {
            continue;
        }
        let Some(pod) = StoredPod::read(object.clone()).map(|p| p.pod) else {
            continue;
        };
        if pods::is_finished(&pod) {
            continue;
        }
        let ip = pods::ip(&pod);
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            continue;
        }
        let set = |text: &str| Some(text.to_owned()).filter(|t| !t.is_empty());
        let ports: Vec<SlicePort> = services::ports(service)
            .iter()
            .filter_map(|p| {
                Some(SlicePort {
                    name: set(services::port_name(p)),
                    port: Some(resolve_port(p, &pod)?),
                    protocol: set(services::protocol(p)),
                    app_protocol: p.app_protocol.as_deref().and_then(set),
                })
            })
            .collect();
        let serving = pods::is_ready(&pod);
        let terminating = is_being_deleted(pod_meta);
        // As Kubernetes: ready whatever the pod says when the Service
        // publishes not-ready addresses.
        let ready = services::publishes_not_ready(service) || (serving && !terminating);
        let spec = pod.spec.as_ref();
        let hostname = spec
            .filter(|s| s.subdomain.as_deref() == Some(name))
            .and_then(|s| s.hostname.as_deref())
            .and_then(set);
        let endpoint = SliceEndpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(Conditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname,
            node_name: set(pods::node_name(&pod)),
            target_ref: Some(TargetRef {
                kind: set("Pod"),
                namespace: set(&pod_meta.namespace),
                name: set(&pod_meta.name),
                uid: set(&pod_meta.uid),
                ..TargetRef::default()
            }),
            ..SliceEndpoint::default()
        };
        groups.entry(Ports(ports)).or_default().push(endpoint);
    }
    groups
}

/// The labels of `service`'s slices (`service_object` as stored): its
/// own (but the two this controller sets), the Service's name, the
/// manager, and the headless mark.
pub fn slice_labels(service_object: &Object, service: &Service) -> BTreeMap<String, String> {
    let meta = service_object.meta();
    let mut labels = meta.labels.clone();
    labels.remove(SERVICE_NAME_LABEL);
    labels.remove(MANAGED_BY_LABEL);
    labels.remove(HEADLESS_LABEL);
    labels.insert(SERVICE_NAME_LABEL.to_owned(), meta.name.clone());
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    if services::cluster_ip(service) == "None" {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    labels
}

fn name_of(object: &v1::GenericObject) -> String {
    object
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// A stored slice as the planner reads it; `None` for one that is not
/// IPv4 (not this controller's kind of slice: deleted).
fn read_slice(object: &v1::GenericObject) -> Option<Slice> {
    let content = generic::content(object);
    if content.get("addressType").and_then(Value::as_str) != Some(ADDRESS_TYPE) {
        return None;
    }
    let list = |field: &str| content.get(field).cloned().unwrap_or(Value::Null);
    Some(Slice {
        name: name_of(object),
        // Unreadable lists read as empty: rewritten.
        ports: Ports(typed::decode(list("ports")).unwrap_or_default()),
        endpoints: typed::decode(list("endpoints")).unwrap_or_default(),
    })
}

/// `object`'s content with `slice`'s ports and endpoints.
fn write_slice(object: &mut v1::GenericObject, slice: &Slice) {
    let mut content = generic::content(object);
    content.insert("addressType".to_owned(), Value::from(ADDRESS_TYPE));
    content.insert("endpoints".to_owned(), typed::encode(&slice.endpoints));
    if slice.ports.0.is_empty() {
        content.remove("ports");
    } else {
        content.insert("ports".to_owned(), typed::encode(&slice.ports.0));
    }
    generic::set_content(object, &content);
}

/// A new slice of `service` (stored as `service_object`) listing `slice`.
fn new_slice(service_object: &Object, service: &Service, slice: &Slice) -> v1::GenericObject {
    let meta = service_object.meta();
    let kind = Kind::EndpointSlice;
    let mut object = v1::GenericObject {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        metadata: Some(v1::ObjectMeta {
            generate_name: format!("{}-", meta.name),
            namespace: meta.namespace.clone(),
            labels: slice_labels(service_object, service),
            owner_references: controller_reference(service_object).into_iter().collect(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    generic::set_content(&mut object, &Map::new());
    write_slice(&mut object, slice);
    object
}

impl EndpointSliceController {
    /// The slices this controller keeps for the Service `namespace/name`,
    /// from the label index.
    fn managed_slices(&self, namespace: &str, name: &str) -> Vec<v1::GenericObject> {
        let labels = BTreeMap::from([
            (SERVICE_NAME_LABEL.to_owned(), name.to_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ]);
        self.ctx
            .store
            .select(Kind::EndpointSlice, namespace, &labels)
            .iter()
            .filter_map(|o| match &o.kind {
                Some(Body::Generic(g)) => Some(g.clone()),
                _ => None,
            })
            .collect()
    }

    async fn delete_slice(&self, namespace: &str, name: &str) -> Result<(), ReconcileError> {
        match self
            .ctx
            .writer
            .delete(Kind::EndpointSlice, namespace, name, "")
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Reconciler for EndpointSliceController {
    const NAME: &'static str = "endpointslices";
    const KIND: Kind = Kind::Service;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Service, Kind::EndpointSlice, Kind::Pod]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            // A deletion takes the slices with it; otherwise a Service
            // without a selector reconciles to nothing and is not queued.
            Kind::Service
                if event.event_type == EventType::Deleted as i32 || self.may_act_on(object) =>
            {
                ObjectKey::of(object).into_iter().collect()
            }
            Kind::Service => Vec::new(),
            Kind::EndpointSlice => {
                let labels = &object.meta().labels;
                if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
                    return Vec::new();
                }
                labels
                    .get(SERVICE_NAME_LABEL)
                    .map(|service| ObjectKey::new(Kind::Service, &event.namespace, service))
                    .into_iter()
                    .collect()
            }
            // The Services selecting the pod, from the selector index.
            Kind::Pod => self
                .ctx
                .store
                .services_selecting(&event.namespace, &object.meta().labels)
                .iter()
                .filter_map(|s| ObjectKey::of(s))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A Service with a selector, or an ExternalName one (the slices it
    /// had go); others write the slices of any other Service without one.
    fn may_act_on(&self, object: &Object) -> bool {
        if !services::is_service(object) {
            return true;
        }
        services::read(object).is_some_and(|s| {
            !services::selector(&s).is_empty() || services::type_of(&s) == "ExternalName"
        })
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let stored = self.managed_slices(&key.namespace, &key.name);
        let service_object = self
            .ctx
            .store
            .get(Kind::Service, &key.namespace, &key.name)?;
        let service = service_object.as_deref().and_then(services::read);
        let Some((service_object, service)) = service_object.as_deref().zip(service.as_ref())
        else {
            // Service gone: its slices go too.
            for slice in &stored {
                self.delete_slice(&key.namespace, &name_of(slice)).await?;
            }
            return Ok(Action::Done);
        };
        if services::type_of(service) == "ExternalName" {
            for slice in &stored {
                self.delete_slice(&key.namespace, &name_of(slice)).await?;
            }
            return Ok(Action::Done);
        }
        let selector = services::selector(service);
        if selector.is_empty() {
            return Ok(Action::Done);
        }
        let pods = self.ctx.store.select(Kind::Pod, &key.namespace, selector);
        let wanted = desired(service, &pods);
        let mut by_name: BTreeMap<String, v1::GenericObject> = BTreeMap::new();
        let mut existing = Vec::new();
        let mut foreign = Vec::new();
        for object in stored {
            let name = name_of(&object);
            match read_slice(&object) {
                Some(slice) => existing.push(slice),
                None => foreign.push(name.clone()),
            }
            by_name.insert(name, object);
        }
        let plan = plan(existing, wanted);
        let labels = slice_labels(service_object, service);
        let owners: Vec<v1::OwnerReference> =
            controller_reference(service_object).into_iter().collect();
        for (slice, changed) in &plan.keep {
            let Some(object) = by_name.get(&slice.name) else {
                continue;
            };
            let unchanged_meta = object
                .metadata
                .as_ref()
                .is_some_and(|m| m.labels == labels && m.owner_references == owners);
            if !changed && unchanged_meta {
                continue;
            }
            let mut object = object.clone();
            write_slice(&mut object, slice);
            let meta = object.metadata.get_or_insert_with(Default::default);
            meta.labels = labels.clone();
            meta.owner_references = owners.clone();
            self.ctx.writer.update(object.into_object()).await?;
        }
        for slice in &plan.create {
            let object = new_slice(service_object, service, slice);
            self.ctx.writer.create(object.into_object()).await?;
        }
        for name in plan.delete.iter().chain(&foreign) {
            self.delete_slice(&key.namespace, name).await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{
        context, stored_event, Failure, RecordingObjects, WriteOp,
    };
    use crate::controllers::ObjectReads;

    const SERVICE_AND_PODS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, labels: {app: web}}
spec:
  containers: [{name: c, image: busybox, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, labels: {app: db}}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
"#;

    /// Gives a seeded pod an IP, a phase and a Ready condition.
    fn set_status(objects: &RecordingObjects, name: &str, ip: &str, phase: &str, ready: bool) {
        let Some(stored) = objects.get(Kind::Pod, "default", name).unwrap() else {
            panic!("no pod {name}");
        };
        let status = Some(v1::PodStatus {
            phase: phase.into(),
            pod_ip: ip.into(),
            conditions: vec![v1::PodCondition {
                r#type: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let pod = skiff_objects::pods::with_reported_status(&stored, status);
        objects.write(WriteOp::UpdateStatus, pod).unwrap();
    }

    fn setup() -> (Arc<RecordingObjects>, EndpointSliceController) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(SERVICE_AND_PODS);
        set_status(&objects, "web-1", "10.42.1.5", "Running", true);
        set_status(&objects, "web-2", "10.42.2.6", "Running", false);
        set_status(&objects, "db-1", "10.42.1.9", "Running", true);
        objects.clear_writes();
        let controller = EndpointSliceController {
            ctx: context(&objects),
        };
        (objects, controller)
    }

    /// The stored slices of `service`, as generic objects.
    fn slices(objects: &RecordingObjects, service: &str) -> Vec<v1::GenericObject> {
        objects
            .objects(Kind::EndpointSlice)
            .into_iter()
            .filter_map(|o| match o.kind {
                Some(Body::Generic(g)) => Some(g),
                _ => None,
            })
            .filter(|g| {
                g.metadata
                    .as_ref()
                    .and_then(|m| m.labels.get(SERVICE_NAME_LABEL))
                    .is_some_and(|s| s == service)
            })
            .collect()
    }

    fn addresses(slice: &v1::GenericObject) -> Vec<String> {
        read_slice(slice)
            .unwrap()
            .endpoints
            .iter()
            .map(|e| endpoint_key(e).to_owned())
            .collect()
    }

    fn web() -> ObjectKey {
        ObjectKey::new(Kind::Service, "default", "web")
    }

    #[tokio::test]
    async fn a_slice_lists_the_selected_pods_with_kubernetes_conditions() {
        let (objects, controller) = setup();
        assert_eq!(controller.reconcile(&web()).await.unwrap(), Action::Done);
        let stored = slices(&objects, "web");
        assert_eq!(stored.len(), 1, "{stored:?}");
        let slice = &stored[0];
        let meta = slice.metadata.clone().unwrap();
        assert!(meta.name.starts_with("web-"), "{}", meta.name);
        assert_eq!(meta.labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(meta.labels["tier"], "front");
        assert!(!meta.labels.contains_key(HEADLESS_LABEL));
        let owner = &meta.owner_references[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Service", "web")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(slice.api_version, "discovery.k8s.io/v1");
        let content = generic::content(slice);
        assert_eq!(content["addressType"], "IPv4");
        // The named target port resolved on the pods.
        assert_eq!(
            content["ports"],
            serde_json::json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        // web-3 has no address yet, db-1 is not selected; the unready pod
        // is listed, not ready.
        let read = read_slice(slice).unwrap();
        assert_eq!(addresses(slice), ["10.42.1.5", "10.42.2.6"]);
        let first = &read.endpoints[0];
        assert_eq!(first.node_name.as_deref(), Some("n1"));
        let target = first.target_ref.as_ref().unwrap();
        assert_eq!(target.name.as_deref(), Some("web-1"));
        assert_eq!(
            first.conditions,
            Some(Conditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false)
            })
        );
        assert_eq!(
            read.endpoints[1].conditions.as_ref().unwrap().ready,
            Some(false)
        );
        assert_eq!(
            content["endpoints"][0]["conditions"],
            serde_json::json!({"ready": true, "serving": true, "terminating": false})
        );
        // Nothing changed: nothing written.
        objects.clear_writes();
        controller.reconcile(&web()).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn terminating_pods_stay_listed_not_ready_and_finished_ones_go() {
        let (objects, controller) = setup();
        controller.reconcile(&web()).await.unwrap();
        // web-1 is being deleted (marked: bound to a node, still Ready:
        // serving, terminating).
        objects.remove(Kind::Pod, "default", "web-1", "").unwrap();
        set_status(&objects, "web-2", "10.42.2.6", "Failed", false);
        objects.clear_writes();
        controller.reconcile(&web()).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "one update: {writes:?}");
        assert_eq!(writes[0].op, WriteOp::Update);
        let read = read_slice(&slices(&objects, "web")[0]).unwrap();
        assert_eq!(read.endpoints.len(), 1);
        assert_eq!(
            read.endpoints[0].conditions,
            Some(Conditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true)
            })
        );
    }

    #[tokio::test]
    async fn a_service_without_endpoints_keeps_one_empty_slice_and_a_deleted_one_none() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}\n",
        );
        let controller = EndpointSliceController {
            ctx: context(&objects),
        };
        controller.reconcile(&web()).await.unwrap();
        let stored = slices(&objects, "web");
        assert_eq!(stored.len(), 1);
        let content = generic::content(&stored[0]);
        assert_eq!(content["endpoints"], serde_json::json!([]));
        assert!(content.get("ports").is_none(), "{content:?}");
        let labels = &stored[0].metadata.as_ref().unwrap().labels;
        assert_eq!(labels[HEADLESS_LABEL], "");
        // Deleted: its slices go.
        objects.remove(Kind::Service, "default", "web", "").unwrap();
        controller.reconcile(&web()).await.unwrap();
        assert!(slices(&objects, "web").is_empty());
    }

    #[tokio::test]
    async fn slices_hold_at_most_a_hundred_and_endpoints_stay_where_they_are() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
        );
        let pod = |i: usize| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, labels: {{app: web}}}}\nspec: {{nodeName: n1, containers: [{{name: c, image: busybox}}]}}\n"
            )
        };
        for i in 0..250 {
            objects.seed_yaml(&pod(i));
            set_status(
                &objects,
                &format!("web-{i}"),
                &format!("10.42.{}.{}", i / 200, i % 200 + 1),
                "Running",
                true,
            );
        }
        let controller = EndpointSliceController {
            ctx: context(&objects),
        };
        controller.reconcile(&web()).await.unwrap();
        let mut sizes: Vec<usize> = slices(&objects, "web")
            .iter()
            .map(|s| addresses(s).len())
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [50, 100, 100]);
        // One more pod: into the slice with room, nothing else rewritten.
        objects.seed_yaml(&pod(250));
        set_status(&objects, "web-250", "10.42.9.1", "Running", true);
        objects.clear_writes();
        controller.reconcile(&web()).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].op, WriteOp::Update);
        let grown = slices(&objects, "web")
            .into_iter()
            .find(|s| addresses(s).contains(&"10.42.9.1".to_owned()))
            .unwrap();
        assert_eq!(addresses(&grown).len(), 51);
    }

    #[test]
    fn the_plan_moves_little_and_drops_stale_slices() {
        let port = |n: i32| SlicePort {
            port: Some(n),
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        let endpoint = |ip: &str| SliceEndpoint {
            addresses: vec![ip.to_owned()],
            ..Default::default()
        };
        let slice = |name: &str, p: i32, ips: &[&str]| Slice {
            name: name.to_owned(),
            ports: Ports(vec![port(p)]),
            endpoints: ips.iter().map(|ip| endpoint(ip)).collect(),
        };
        let existing = vec![
            slice("a", 80, &["10.0.0.1", "10.0.0.2"]),
            slice("b", 80, &["10.0.0.3"]),
            // Pods no longer serve 81.
            slice("old", 81, &["10.0.0.9"]),
        ];
        // 10.0.0.3 gone, 10.0.0.4 new: b empties, 10.0.0.4 goes into a.
        let desired = Desired::from([(
            Ports(vec![port(80)]),
            vec![
                endpoint("10.0.0.4"),
                endpoint("10.0.0.2"),
                endpoint("10.0.0.1"),
            ],
        )]);
        let plan = plan(existing.clone(), desired);
        assert!(plan.create.is_empty(), "{plan:?}");
        assert_eq!(plan.keep.len(), 1);
        let (kept, changed) = &plan.keep[0];
        assert!(changed);
        assert_eq!(kept.name, "a");
        let ips: Vec<&str> = kept.endpoints.iter().map(endpoint_key).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
        assert_eq!(plan.delete, ["b", "old"]);
        // Nothing wanted: one placeholder, without ports, the rest deleted.
        let plan = super::plan(existing, Desired::new());
        assert!(plan.keep.is_empty(), "{plan:?}");
        assert_eq!(plan.create, [Slice::default()]);
        assert_eq!(plan.delete, ["a", "b", "old"]);
    }

    #[tokio::test]
    async fn external_name_services_lose_their_slices_and_foreign_ones_are_left() {
        let (objects, controller) = setup();
        controller.reconcile(&web()).await.unwrap();
        // Someone else's slice for the same Service.
        objects.seed_yaml(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-mine, labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: me}}\naddressType: IPv4\nendpoints: [{addresses: [192.0.2.1]}]\n",
        );
        let mut stored = objects
            .get(Kind::Service, "default", "web")
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .expect("no web");
        let mut spec = services::read(&stored).unwrap().spec.unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("example.com".into());
        services::set_spec(&mut stored, spec);
        objects.write(WriteOp::Update, stored).unwrap();
        controller.reconcile(&web()).await.unwrap();
        let left = slices(&objects, "web");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].metadata.as_ref().unwrap().name, "web-mine");
    }

    #[tokio::test]
    async fn a_failed_write_is_an_error_to_retry_and_the_retry_converges() {
        let (objects, controller) = setup();
        objects.fail_next(
            WriteOp::Create,
            Kind::EndpointSlice,
            None,
            Failure::Unavailable,
        );
        let e = controller.reconcile(&web()).await.unwrap_err();
        assert!(!e.is_conflict(), "{e}");
        assert!(slices(&objects, "web").is_empty());
        controller.reconcile(&web()).await.unwrap();
        assert_eq!(slices(&objects, "web").len(), 1);
    }

    #[test]
    fn pod_and_slice_changes_queue_their_service() {
        let (objects, controller) = setup();
        let event = |kind| StoredEvent {
            revision: 1,
            kind,
            namespace: "default".into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        let pod = objects
            .get(Kind::Pod, "default", "web-3")
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap();
        assert_eq!(controller.keys_for(&event(Kind::Pod), &pod), [web()]);
        let slice = |managed_by: &str| {
            v1::GenericObject {
                api_version: "discovery.k8s.io/v1".into(),
                kind: "EndpointSlice".into(),
                metadata: Some(v1::ObjectMeta {
                    name: "web-x".into(),
                    namespace: "default".into(),
                    labels: BTreeMap::from([
                        (SERVICE_NAME_LABEL.to_owned(), "web".to_owned()),
                        (MANAGED_BY_LABEL.to_owned(), managed_by.to_owned()),
                    ]),
                    ..Default::default()
                }),
                content: Vec::new(),
            }
            .into_object()
        };
        let slice_event = event(Kind::EndpointSlice);
        assert_eq!(
            controller.keys_for(&slice_event, &slice(MANAGED_BY)),
            [web()]
        );
        assert!(controller.keys_for(&slice_event, &slice("me")).is_empty());
    }

    #[test]
    fn services_without_a_selector_are_queued_only_when_their_slices_may_go() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec: {type: ExternalName, externalName: example.test}
"#,
        );
        let controller = EndpointSliceController {
            ctx: context(&objects),
        };
        let queued = |name: &str, event_type: EventType| {
            let service = objects
                .get(Kind::Service, "default", name)
                .unwrap()
                .map(Arc::unwrap_or_clone)
                .unwrap();
            controller.keys_for(
                &stored_event(Kind::Service, "default", event_type),
                &service,
            )
        };
        let key = |name: &str| [ObjectKey::new(Kind::Service, "default", name)];
        assert_eq!(queued("web", EventType::Added), key("web"));
        assert_eq!(queued("web", EventType::Modified), key("web"));
        // Others write its slices: nothing to do until it is deleted.
        assert!(queued("manual", EventType::Added).is_empty());
        assert!(queued("manual", EventType::Modified).is_empty());
        assert_eq!(queued("manual", EventType::Deleted), key("manual"));
        // The slices it had before it became an ExternalName go.
        assert_eq!(queued("outside", EventType::Modified), key("outside"));
    }
}
