//! The Endpoints controller: for every Service with a selector, an
//! Endpoints object of the same name listing the selected pods that have an
//! IP — ready ones under `addresses`, the rest under `notReadyAddresses` —
//! with the Service's ports resolved against each pod (named target ports
//! included), and the pod's `hostname` when its `subdomain` names the
//! Service (what cluster DNS answers `hostname.service.namespace.svc` from).
//! Services without a selector, and ExternalName Services, keep
//! hand-written Endpoints.

use std::collections::BTreeMap;

use skiff_proto::api::{EventType, Object};
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::pods::{self, Pod, StoredPod};
use skiff_objects::services::{self, Service};
use skiff_objects::{endpoints, Kind, ObjectExt};

pub struct EndpointsController {
    pub ctx: Context,
}

/// Whether a Service's Endpoints are this controller's to write: it has a
/// selector and is not an ExternalName.
fn endpoints_are_managed(service: &Service) -> bool {
    !services::selector(service).is_empty() && services::type_of(service) != "ExternalName"
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Reconciler for EndpointsController {
    const NAME: &'static str = "endpoints";
    const KIND: Kind = Kind::Service;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Service, Kind::Endpoints, Kind::Pod]);

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            // A deletion takes the Endpoints with it; otherwise a Service
            // without a selector reconciles to nothing and is not queued.
            Kind::Service
                if event.event_type == EventType::Deleted as i32 || self.may_act_on(object) =>
            {
                ObjectKey::of(object).into_iter().collect()
            }
            Kind::Service => Vec::new(),
            Kind::Endpoints => {
                vec![ObjectKey::new(
                    Kind::Service,
                    &event.namespace,
                    &object.meta().name,
                )]
            }
            // The Services selecting the pod, from the selector index: a
            // pod event costs what selects it, not every Service.
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

    fn may_act_on(&self, object: &Object) -> bool {
        if !services::is_service(object) {
            return true;
        }
        services::read(object).is_some_and(|s| endpoints_are_managed(&s))
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let existing = self
            .ctx
            .store
            .get(Kind::Endpoints, &key.namespace, &key.name)?;
        let service_object = self
            .ctx
            .store
            .get(Kind::Service, &key.namespace, &key.name)?;
        if let Some(stored) = service_object.as_deref() {
            if services::read(stored).is_none() {
                // Damaged (its fields do not read as a Service): its
                // Endpoints are left as they are, not taken for gone.
                tracing::warn!(namespace = %key.namespace, name = %key.name, "endpoints: a stored Service does not read as one; its Endpoints are left alone");
                return Ok(Action::Done);
            }
        }
        let Some(service) = service_object.as_deref().and_then(services::read) else {
            // Service gone: its Endpoints go too.
            if existing.is_some() {
                match self
                    .ctx
                    .writer
                    .delete(Kind::Endpoints, &key.namespace, &key.name, "")
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Action::Done);
        };
        if !endpoints_are_managed(&service) {
            return Ok(Action::Done);
        }
        let selector = services::selector(&service);
        let pods = self.ctx.store.select(Kind::Pod, &key.namespace, selector);
        // Pods grouped by the ports they resolve to, as Kubernetes does.
        let mut subsets: BTreeMap<Vec<(String, i32, String)>, Subset> = BTreeMap::new();
        for object in pods {
            let meta = object.meta();
            if !selects(selector, &meta.labels) {
                continue;
            }
            let Some(pod) = StoredPod::read(object.clone()).map(|p| p.pod) else {
                continue;
            };
            // As Kubernetes: finished pods never, terminating ones only
            // when the Service publishes not-ready addresses.
            let publish = services::publishes_not_ready(&service);
            let listed = !pods::is_finished(&pod) && (publish || !is_being_deleted(meta));
            if !listed {
                continue;
            }
            let ip = pods::ip(&pod).to_owned();
            if ip.is_empty() {
                continue;
            }
            let ports: Vec<(String, i32, String)> = services::ports(&service)
                .iter()
                .filter_map(|p| {
                    let protocol = services::protocol(p).to_owned();
                    resolve_port(p, &pod).map(|n| (services::port_name(p).to_owned(), n, protocol))
                })
                .collect();
            // As Kubernetes names StatefulSet members in DNS.
            let spec = pod.spec.as_ref();
            let hostname = spec
                .filter(|s| s.subdomain.as_deref() == Some(key.name.as_str()))
                .and_then(|s| s.hostname.clone())
                .unwrap_or_default();
            let set = |s: String| (!s.is_empty()).then_some(s);
            let address = endpoints::EndpointAddress {
                ip,
                hostname: set(hostname),
                node_name: set(pods::node_name(&pod).to_owned()),
                target_ref: Some(endpoints::ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: set(meta.namespace.clone()),
                    name: set(meta.name.clone()),
                    uid: set(meta.uid.clone()),
                    ..Default::default()
                }),
            };
            let subset = subsets.entry(ports.clone()).or_insert_with(|| Subset {
                ports: ports
                    .iter()
                    .map(|(name, port, protocol)| endpoints::EndpointPort {
                        name: set(name.clone()),
                        port: *port,
                        protocol: Some(protocol.clone()),
                        app_protocol: None,
                    })
                    .collect(),
                ..Default::default()
            });
            if pods::is_ready(&pod) || publish {
                subset.ready.push(address);
            } else {
                subset.not_ready.push(address);
            }
        }
        let subsets: Vec<endpoints::EndpointSubset> =
            subsets.into_values().map(Subset::into_subset).collect();
        let service_labels = service_object
            .as_deref()
            .map(|o| o.meta().labels.clone())
            .unwrap_or_default();
        let meta = v1::ObjectMeta {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            labels: service_labels,
            ..Default::default()
        };
        put_subsets(&self.ctx, existing.as_deref(), meta, subsets).await?;
        Ok(Action::Done)
    }
}

/// Makes the Endpoints stored as `existing` (made with `meta` when there
/// are none) list exactly `subsets`; writes nothing when they do already
/// (shared with the `kubernetes` Service's controller).
pub async fn put_subsets(
    ctx: &Context,
    existing: Option<&Object>,
    meta: v1::ObjectMeta,
    subsets: Vec<endpoints::EndpointSubset>,
) -> Result<(), ReconcileError> {
    let current = existing.and_then(|o| Some((o, endpoints::read(o)?)));
    match current {
        Some((_, current)) if endpoints::subsets(&current) == subsets.as_slice() => {}
        Some((stored, _)) => {
            let updated = endpoints::object(stored.meta().clone(), subsets);
            ctx.writer.update(updated).await?;
        }
        None => match ctx.writer.create(endpoints::object(meta, subsets)).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

/// One subset as it is gathered: its ports, and its addresses.
#[derive(Default)]
struct Subset {
    ports: Vec<endpoints::EndpointPort>,
    ready: Vec<endpoints::EndpointAddress>,
    not_ready: Vec<endpoints::EndpointAddress>,
}

impl Subset {
    /// The subset, its addresses in order of IP (an empty list unset, as
    /// it reads back from the store).
    fn into_subset(mut self) -> endpoints::EndpointSubset {
        self.ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        self.not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
        endpoints::EndpointSubset {
            addresses: set_list(self.ready),
            not_ready_addresses: set_list(self.not_ready),
            ports: set_list(self.ports),
        }
    }
}

/// `list`, or unset when empty.
fn set_list<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

/// The pod port a Service port sends to: a number, or a named container
/// port (shared with the EndpointSlice controller).
pub fn resolve_port(port: &services::ServicePort, pod: &Pod) -> Option<i32> {
    let target = match services::target_port(port) {
        None => return Some(port.port),
        Some(services::IntOrString::Int(n)) => return Some(*n),
        Some(services::IntOrString::String(name)) => name,
    };
    // A number written as a string is the number, as before.
    if let Ok(n) = target.parse() {
        return Some(n);
    }
    pods::container_port_named(pod, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{
        context, stored_event, Failure, RecordingObjects, WriteOp,
    };
    use crate::controllers::ObjectReads;
    use skiff_objects::endpoints::Endpoints;
    use skiff_objects::legacy_bodies;
    use std::sync::Arc;

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

    /// Gives a seeded pod an IP and a Ready condition.
    fn set_status(objects: &RecordingObjects, name: &str, ip: &str, ready: bool) {
        let Some(stored) = objects.get(Kind::Pod, "default", name).unwrap() else {
            panic!("no pod {name}");
        };
        let status = Some(v1::PodStatus {
            phase: "Running".into(),
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

    fn setup() -> (Arc<RecordingObjects>, EndpointsController) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(SERVICE_AND_PODS);
        set_status(&objects, "web-1", "10.42.1.5", true);
        set_status(&objects, "web-2", "10.42.2.6", false);
        set_status(&objects, "db-1", "10.42.1.9", true);
        objects.clear_writes();
        let controller = EndpointsController {
            ctx: context(&objects),
        };
        (objects, controller)
    }

    fn endpoints_named(objects: &RecordingObjects, name: &str) -> Option<Endpoints> {
        let stored = objects.get(Kind::Endpoints, "default", name).unwrap()?;
        assert!(legacy_bodies::is_moved_document(&stored), "{stored:?}");
        endpoints::read(&stored)
    }

    fn endpoints(objects: &RecordingObjects) -> Option<Endpoints> {
        endpoints_named(objects, "web")
    }

    fn ips(addresses: &[endpoints::EndpointAddress]) -> Vec<&str> {
        addresses.iter().map(|a| a.ip.as_str()).collect()
    }

    #[tokio::test]
    async fn a_service_publishing_not_ready_addresses_lists_every_pod_as_ready() {
        let (objects, controller) = setup();
        objects.seed_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: peers}\nspec:\n  selector: {app: web}\n  publishNotReadyAddresses: true\n  ports: [{name: http, port: 80, targetPort: http}]\n",
        );
        let key = ObjectKey::new(Kind::Service, "default", "peers");
        controller.reconcile(&key).await.unwrap();
        let e = endpoints_named(&objects, "peers").expect("Endpoints created");
        let subset = &endpoints::subsets(&e)[0];
        // web-2 is not Ready, and listed with web-1 all the same.
        assert_eq!(ips(endpoints::ready(subset)), ["10.42.1.5", "10.42.2.6"]);
        assert!(endpoints::not_ready(subset).is_empty());
        // A terminating pod stays listed by it, and leaves web's.
        let mut web_1 = objects
            .get(Kind::Pod, "default", "web-1")
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap();
        web_1.meta_mut().unwrap().deletion_timestamp = "2026-01-01T00:00:00Z".into();
        objects.seed(web_1);
        controller.reconcile(&key).await.unwrap();
        let e = endpoints_named(&objects, "peers").unwrap();
        let subset = &endpoints::subsets(&e)[0];
        assert_eq!(ips(endpoints::ready(subset)), ["10.42.1.5", "10.42.2.6"]);
        let web = ObjectKey::new(Kind::Service, "default", "web");
        controller.reconcile(&web).await.unwrap();
        let e = endpoints(&objects).unwrap();
        let listed: Vec<&str> = endpoints::subsets(&e)
            .iter()
            .flat_map(|s| endpoints::ready(s).iter().chain(endpoints::not_ready(s)))
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(listed, ["10.42.2.6"]);
    }

    #[tokio::test]
    async fn ready_pods_are_addresses_and_unready_ones_not_ready_addresses() {
        let (objects, controller) = setup();
        let key = ObjectKey::new(Kind::Service, "default", "web");
        assert_eq!(controller.reconcile(&key).await.unwrap(), Action::Done);
        let e = endpoints(&objects).expect("Endpoints created");
        let stored = objects.get(Kind::Endpoints, "default", "web").unwrap();
        let stored = stored.expect("stored");
        assert_eq!(stored.meta().labels.get("tier").unwrap(), "front");
        assert_eq!(endpoints::subsets(&e).len(), 1);
        let subset = &endpoints::subsets(&e)[0];
        // web-3 has no IP yet and db-1 is not selected.
        let ready = endpoints::ready(subset);
        assert_eq!(ips(ready), ["10.42.1.5"]);
        assert_eq!(ips(endpoints::not_ready(subset)), ["10.42.2.6"]);
        assert_eq!(ready[0].node_name.as_deref(), Some("n1"));
        let target = ready[0].target_ref.as_ref().unwrap();
        assert_eq!(target.name.as_deref(), Some("web-1"));
        // The named target port resolves to the container's port.
        let ports = endpoints::ports(subset);
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (
                ports[0].name.as_deref(),
                ports[0].port,
                endpoints::protocol(&ports[0])
            ),
            (Some("http"), 8080, "TCP")
        );
        // A second pass with nothing changed writes nothing.
        objects.clear_writes();
        controller.reconcile(&key).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn a_pod_turning_ready_moves_to_addresses_with_one_update() {
        let (objects, controller) = setup();
        let key = ObjectKey::new(Kind::Service, "default", "web");
        controller.reconcile(&key).await.unwrap();
        set_status(&objects, "web-2", "10.42.2.6", true);
        objects.clear_writes();
        controller.reconcile(&key).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(
            (writes[0].op, writes[0].kind),
            (WriteOp::Update, Kind::Endpoints)
        );
        let e = endpoints(&objects).unwrap();
        let subset = &endpoints::subsets(&e)[0];
        assert_eq!(ips(endpoints::ready(subset)), ["10.42.1.5", "10.42.2.6"]);
        assert!(endpoints::not_ready(subset).is_empty());
    }

    #[tokio::test]
    async fn a_deleted_service_takes_its_endpoints_with_it() {
        let (objects, controller) = setup();
        let key = ObjectKey::new(Kind::Service, "default", "web");
        controller.reconcile(&key).await.unwrap();
        objects.remove(Kind::Service, "default", "web", "").unwrap();
        controller.reconcile(&key).await.unwrap();
        assert!(endpoints(&objects).is_none());
    }

    #[tokio::test]
    async fn a_service_without_a_selector_keeps_hand_written_endpoints() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 192.0.2.7}], ports: [{port: 80}]}]
"#,
        );
        objects.clear_writes();
        let controller = EndpointsController {
            ctx: context(&objects),
        };
        let key = ObjectKey::new(Kind::Service, "default", "web");
        controller.reconcile(&key).await.unwrap();
        assert!(objects.writes().is_empty());
        let e = endpoints(&objects).unwrap();
        assert_eq!(
            ips(endpoints::ready(&endpoints::subsets(&e)[0])),
            ["192.0.2.7"]
        );
    }

    #[tokio::test]
    async fn a_pod_whose_subdomain_names_the_service_is_listed_with_its_hostname() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec: {hostname: db-0, subdomain: db, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-x, labels: {app: db}}
spec: {hostname: db-x, subdomain: other, containers: [{name: c, image: busybox}]}
"#,
        );
        set_status(&objects, "db-0", "10.42.1.10", true);
        set_status(&objects, "db-x", "10.42.1.11", true);
        let controller = EndpointsController {
            ctx: context(&objects),
        };
        let key = ObjectKey::new(Kind::Service, "default", "db");
        controller.reconcile(&key).await.unwrap();
        let e = endpoints_named(&objects, "db").expect("Endpoints for db");
        let named: Vec<(&str, Option<&str>)> = endpoints::ready(&endpoints::subsets(&e)[0])
            .iter()
            .map(|a| (a.ip.as_str(), a.hostname.as_deref()))
            .collect();
        // Only the pod whose subdomain is this Service gets its hostname.
        assert_eq!(named, [("10.42.1.10", Some("db-0")), ("10.42.1.11", None)]);
    }

    #[tokio::test]
    async fn a_failed_write_is_an_error_to_retry_and_stores_nothing() {
        let (objects, controller) = setup();
        objects.fail_next(WriteOp::Create, Kind::Endpoints, None, Failure::Unavailable);
        let key = ObjectKey::new(Kind::Service, "default", "web");
        let e = controller.reconcile(&key).await.unwrap_err();
        assert!(!e.is_conflict(), "{e}");
        assert!(endpoints(&objects).is_none());
        // The retry succeeds.
        controller.reconcile(&key).await.unwrap();
        assert!(endpoints(&objects).is_some());
    }

    /// A Service event of `event_type` for the seeded Service `name`.
    fn service_event(
        objects: &RecordingObjects,
        name: &str,
        event_type: EventType,
    ) -> (StoredEvent, Object) {
        let service = objects
            .get(Kind::Service, "default", name)
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap();
        (stored_event(Kind::Service, "default", event_type), service)
    }

    #[test]
    fn only_services_whose_endpoints_it_writes_or_deletions_are_queued() {
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
spec: {type: ExternalName, externalName: example.test, selector: {app: web}}
"#,
        );
        let controller = EndpointsController {
            ctx: context(&objects),
        };
        let queued = |name: &str, event_type: EventType| {
            let (event, service) = service_event(&objects, name, event_type);
            controller.keys_for(&event, &service)
        };
        let web = [ObjectKey::new(Kind::Service, "default", "web")];
        assert_eq!(queued("web", EventType::Added), web);
        assert_eq!(queued("web", EventType::Modified), web);
        // Nothing to reconcile for these until they are deleted.
        assert!(queued("manual", EventType::Added).is_empty());
        assert!(queued("manual", EventType::Modified).is_empty());
        assert!(queued("outside", EventType::Modified).is_empty());
        // A deletion takes the Endpoints of any Service with it.
        assert_eq!(
            queued("manual", EventType::Deleted),
            [ObjectKey::new(Kind::Service, "default", "manual")]
        );
        assert_eq!(
            queued("outside", EventType::Deleted),
            [ObjectKey::new(Kind::Service, "default", "outside")]
        );
    }

    #[test]
    fn pod_changes_queue_the_services_that_select_them() {
        let (objects, controller) = setup();
        let pod = objects
            .get(Kind::Pod, "default", "web-3")
            .unwrap()
            .map(std::sync::Arc::unwrap_or_clone)
            .unwrap();
        let event = StoredEvent {
            revision: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type: 0,
            node: String::new(),
            object: bytes::Bytes::new(),
            previous: bytes::Bytes::new(),
            previous_revision: 0,
        };
        assert_eq!(
            controller.keys_for(&event, &pod),
            [ObjectKey::new(Kind::Service, "default", "web")]
        );
        let db = objects
            .get(Kind::Pod, "default", "db-1")
            .unwrap()
            .map(std::sync::Arc::unwrap_or_clone)
            .unwrap();
        assert!(controller.keys_for(&event, &db).is_empty());
    }
}
