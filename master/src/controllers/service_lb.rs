//! The built-in load balancer (k3s' ServiceLB, without its pods): every
//! Service of type LoadBalancer with no `spec.loadBalancerClass` gets, in
//! `status.loadBalancer.ingress`, the addresses of the eligible nodes, and
//! every agent answers the Service's ports on those addresses (its
//! nftables rules, `skiff_agent::network::nftables`).
//!
//! Eligible nodes, as k3s picks them:
//! - Ready ones;
//! - when any node carries `svccontroller.k3s.cattle.io/enablelb=true`,
//!   only those; a node labelled `false` never;
//! - with `externalTrafficPolicy: Local`, only nodes running a ready
//!   endpoint (the others would drop the traffic).
//!
//! Each node gives its ExternalIP, else its InternalIP. A port (number and
//! protocol) that an older LoadBalancer Service already answers on is not
//! taken over: the newer Service stays Pending (no ingress) with a
//! `PortInUse` Warning Event, as k3s' svclb pods stay Pending on a taken
//! hostPort. Nor is a port where the nodes themselves listen by default
//! ([`NODE_LISTENERS`]: SSH, the API, Raft, the agent, the VXLAN overlay):
//! the load balancer's DNAT on the node addresses would take it over. A
//! Service that stops being a LoadBalancer loses its ingress.
//!
//! The controller keeps the names of the LoadBalancer Services it handles
//! (listed once per leadership, then kept from the change notifications),
//! so that neither a Service event nor a port check costs a list of every
//! Service: only the load balancers are looked at.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{EventType, Object};
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::store::state_machine::KindFilter;
use crate::store::state_machine::StoredEvent;
use skiff_objects::services::{self, Service};
use skiff_objects::{endpoints, Kind, ObjectExt};

/// The label by which nodes opt in to (`true`) or out of (`false`) the
/// load balancer, as in k3s.
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";
const LOAD_BALANCER: &str = "LoadBalancer";
const COMPONENT: &str = "service-lb-controller";

/// Ports the nodes listen on by default (port, protocol, what): a
/// LoadBalancer asking for one stays Pending rather than hijack it.
pub const NODE_LISTENERS: &[(i32, &str, &str)] = &[
    (22, "TCP", "SSH"),
    (6443, "TCP", "the skiff API"),
    (6444, "TCP", "Raft between masters"),
    (10250, "TCP", "the skiff agent"),
    (8472, "UDP", "the VXLAN overlay"),
];

/// The first of `spec`'s ports that a node listens on itself, and what
/// listens there.
fn node_listener(service: &Service) -> Option<(i32, String, &'static str)> {
    services::ports(service).iter().find_map(|p| {
        NODE_LISTENERS
            .iter()
            .find(|(port, protocol, _)| *port == p.port && *protocol == services::protocol(p))
            .map(|(port, protocol, what)| (*port, (*protocol).to_owned(), *what))
    })
}

pub struct ServiceLbController {
    ctx: Context,
    /// The LoadBalancer Services handled; `None` until first needed.
    load_balancers: Mutex<Option<BTreeSet<ObjectKey>>>,
}

/// Whether this controller handles `service`: a LoadBalancer of no
/// class.
pub fn handled(service: &Service) -> bool {
    services::type_of(service) == LOAD_BALANCER && services::load_balancer_class(service).is_empty()
}

/// The (port, protocol) pairs a Service answers on at its ingress.
fn exposed_ports(service: &Service) -> BTreeSet<(i32, String)> {
    services::ports(service)
        .iter()
        .map(|p| (p.port, services::protocol(p).to_owned()))
        .collect()
}

fn node_ready(node: &v1::Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The address a node gives to load balancers: its ExternalIP, else its
/// InternalIP.
fn node_address(node: &v1::Node) -> Option<String> {
    let addresses = &node.status.as_ref()?.addresses;
    ["ExternalIP", "InternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.r#type == *kind && !a.address.is_empty())
            .map(|a| a.address.clone())
    })
}

/// The ingress addresses for a Service, given the cluster's nodes and,
/// for Local traffic policy, the nodes with a ready endpoint (`None`:
/// Cluster policy, any node will do). Sorted, each once.
pub fn ingress_addresses<'a, N>(nodes: N, local_to: Option<&BTreeSet<String>>) -> Vec<String>
where
    N: IntoIterator<Item = &'a v1::Node> + Clone,
{
    let opted_in = nodes.clone().into_iter().any(|n| {
        n.metadata
            .as_ref()
            .is_some_and(|m| m.labels.get(ENABLE_LB_LABEL).is_some_and(|v| v == "true"))
    });
    let mut out: Vec<String> = nodes
        .into_iter()
        .filter(|n| {
            let meta = n.metadata.clone().unwrap_or_default();
            let label = meta.labels.get(ENABLE_LB_LABEL).map(String::as_str);
            let enabled = match label {
                Some("true") => true,
                Some("false") => false,
                _ => !opted_in,
            };
            enabled && node_ready(n) && local_to.is_none_or(|names| names.contains(&meta.name))
        })
        .filter_map(node_address)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The nodes running a ready endpoint of the Service (from its Endpoints).
fn nodes_with_endpoints(read: Option<&endpoints::Endpoints>) -> BTreeSet<String> {
    read.into_iter()
        .flat_map(endpoints::subsets)
        .flat_map(endpoints::ready)
        .filter_map(|a| a.node_name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Which comes first when two Services want one port (lower first): one
/// already serving (it has an ingress) before one that is not, so that a
/// newcomer never takes a port over; then the older (creation times are
/// whole seconds, so two made in one second tie), then by namespace and name.
/// (`object` as stored, read as `service`.)
fn seniority(object: &Object, service: &Service) -> (bool, String, String, String) {
    let meta = object.meta();
    (
        !has_ingress(service),
        meta.creation_timestamp.clone(),
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

/// The Service `object` holds, in either encoding.
fn service_of(object: &Object) -> Option<Service> {
    services::read(object)
}

/// Whether a Service's status lists any load balancer ingress.
fn has_ingress(service: &Service) -> bool {
    !services::ingress(service).is_empty()
}

impl ServiceLbController {
    pub fn new(ctx: Context) -> ServiceLbController {
        ServiceLbController {
            ctx,
            load_balancers: Mutex::new(None),
        }
    }

    /// Runs `f` on the set of handled LoadBalancer Services, listing them
    /// first if this is the first time.
    fn with_known<T>(&self, f: impl FnOnce(&mut BTreeSet<ObjectKey>) -> T) -> T {
        let mut guard = self
            .load_balancers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let known = guard.get_or_insert_with(|| {
            let listed = self.ctx.store.list(Kind::Service, None);
            let (services, _) = listed.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "service-lb: cannot list Services; starting from none");
                (Vec::new(), 0)
            });
            services
                .iter()
                .filter(|o| service_of(o).is_some_and(|s| handled(&s)))
                .filter_map(|o| ObjectKey::of(o))
                .collect()
        });
        f(known)
    }

    /// Records whether the Service at `key` is a handled LoadBalancer;
    /// true if that changed.
    fn note(&self, key: &ObjectKey, is_load_balancer: bool) -> bool {
        self.with_known(|known| {
            if is_load_balancer {
                known.insert(key.clone())
            } else {
                known.remove(key)
            }
        })
    }

    /// The LoadBalancer Services this controller handles.
    fn load_balancers(&self) -> Result<Vec<Arc<Object>>, ReconcileError> {
        let mut out = Vec::new();
        for key in self.load_balancer_keys() {
            if let Some(object) = self
                .ctx
                .store
                .get(Kind::Service, &key.namespace, &key.name)?
            {
                if service_of(&object).is_some_and(|s| handled(&s)) {
                    out.push(object);
                }
            }
        }
        Ok(out)
    }

    /// The names of the LoadBalancer Services this controller handles.
    fn load_balancer_keys(&self) -> Vec<ObjectKey> {
        self.with_known(|known| known.iter().cloned().collect())
    }

    /// The first older Service already answering on one of `service`'s
    /// ports: its name and the port.
    fn port_taken(
        &self,
        object: &Object,
        service: &Service,
    ) -> Result<Option<(String, i32, String)>, ReconcileError> {
        let mine = exposed_ports(service);
        let me = seniority(object, service);
        for other_object in self.load_balancers()? {
            let Some(other) = service_of(&other_object) else {
                continue;
            };
            let them = seniority(&other_object, &other);
            if (&them.2, &them.3) == (&me.2, &me.3) || them > me {
                continue;
            }
            if let Some((port, protocol)) = exposed_ports(&other).intersection(&mine).next() {
                return Ok(Some((
                    format!("{}/{}", them.2, them.3),
                    *port,
                    protocol.clone(),
                )));
            }
        }
        Ok(None)
    }

    /// Makes the ingress of `service` (stored as `object`) list exactly
    /// `addresses`; writes nothing when it does already.
    async fn set_ingress(
        &self,
        object: &Object,
        service: &Service,
        addresses: Vec<String>,
    ) -> Result<(), ReconcileError> {
        let ingress: Vec<services::LoadBalancerIngress> = addresses
            .into_iter()
            .map(|ip| services::LoadBalancerIngress {
                ip: Some(ip),
                ..Default::default()
            })
            .collect();
        if services::ingress(service) == ingress.as_slice() {
            return Ok(());
        }
        let mut status = service.status.clone().unwrap_or_default();
        status.load_balancer = Some(services::LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
        let updated = services::with_status(object, status);
        self.ctx.writer.update_status(updated).await?;
        Ok(())
    }
}

impl Reconciler for ServiceLbController {
    const NAME: &'static str = "service-lb";
    const KIND: Kind = Kind::Service;
    const WATCHES: KindFilter = KindFilter::only(&[Kind::Service, Kind::Endpoints, Kind::Node]);
    // Which Service answers on a port is decided across Services (the
    // older one keeps it): one reconcile at a time.
    const CONCURRENCY: usize = 1;

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Service => {
                let Some(key) = ObjectKey::of(object) else {
                    return Vec::new();
                };
                let deleted = event.event_type == EventType::Deleted as i32;
                let is_load_balancer = !deleted && service_of(object).is_some_and(|s| handled(&s));
                let changed = self.note(&key, is_load_balancer);
                // A load balancer that came, went or changed its ports may
                // free or take a port others wait for.
                let mut keys = if changed || is_load_balancer {
                    self.load_balancer_keys()
                } else {
                    Vec::new()
                };
                // Any other Service reconciles to nothing unless it has an
                // ingress to clear: most Services are not queued at all.
                if deleted || changed || self.may_act_on(object) {
                    keys.push(key);
                }
                keys.sort();
                keys.dedup();
                keys
            }
            // Endpoints count only for a load balancer's
            // `externalTrafficPolicy: Local` (which nodes answer).
            Kind::Endpoints => {
                let key = ObjectKey::new(Kind::Service, &event.namespace, &object.meta().name);
                if self.with_known(|known| known.contains(&key)) {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            // Node writes are rare (heartbeats stay in memory): readiness,
            // addresses, labels.
            Kind::Node => self.load_balancer_keys(),
            _ => Vec::new(),
        }
    }

    /// A load balancer of ours, or a Service with an ingress to clear.
    fn may_act_on(&self, object: &Object) -> bool {
        if !services::is_service(object) {
            return true;
        }
        service_of(object).is_some_and(|s| handled(&s) || has_ingress(&s))
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let Some(object) = self
            .ctx
            .store
            .get(Kind::Service, &key.namespace, &key.name)?
        else {
            self.note(key, false);
            return Ok(Action::Done);
        };
        let Some(service) = service_of(&object) else {
            return Ok(Action::Done);
        };
        let is_ours = handled(&service);
        self.note(key, is_ours);
        if !is_ours {
            // Another class's, or no longer a LoadBalancer: no ingress of
            // ours stays (another class's controller writes its own). Most
            // Services never had one, and are not copied to find that out.
            let is_load_balancer = services::type_of(&service) == LOAD_BALANCER;
            if !is_load_balancer && has_ingress(&service) {
                self.set_ingress(&object, &service, Vec::new()).await?;
            }
            return Ok(Action::Done);
        }
        if let Some((port, protocol, what)) = node_listener(&service) {
            self.ctx.events.for_component(COMPONENT).warning(
                &object,
                "PortInUse",
                format!(
                    "port {port}/{protocol} is where {what} listens on the nodes; a load balancer there would take it over, so this Service stays Pending: use another port"
                ),
            );
            self.set_ingress(&object, &service, Vec::new()).await?;
            return Ok(Action::Done);
        }
        if let Some((owner, port, protocol)) = self.port_taken(&object, &service)? {
            self.ctx.events.for_component(COMPONENT).warning(
                &object,
                "PortInUse",
                format!(
                    "port {port}/{protocol} is already answered by LoadBalancer Service {owner}; this Service stays Pending until it is free"
                ),
            );
            self.set_ingress(&object, &service, Vec::new()).await?;
            return Ok(Action::Done);
        }
        // Every node, read once from the cache and not copied: the nodes
        // are few, and each one's readiness, labels and addresses count.
        let (node_objects, _) = self.ctx.store.list(Kind::Node, None)?;
        let nodes = node_objects.iter().filter_map(|o| match &o.kind {
            Some(Body::Node(n)) => Some(n),
            _ => None,
        });
        let local_to = if services::is_external_local(&service) {
            let endpoints = self
                .ctx
                .store
                .get(Kind::Endpoints, &key.namespace, &key.name)?;
            let read = endpoints.as_deref().and_then(endpoints::read);
            Some(nodes_with_endpoints(read.as_ref()))
        } else {
            None
        };
        let addresses = ingress_addresses(nodes, local_to.as_ref());
        let had_none = !has_ingress(&service);
        if had_none && !addresses.is_empty() {
            self.ctx.events.for_component(COMPONENT).normal(
                &object,
                "UpdatedIngressIP",
                format!(
                    "LoadBalancer Ingress IP addresses updated: {}",
                    addresses.join(", ")
                ),
            );
        }
        self.set_ingress(&object, &service, addresses).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controllers::recording::{context, stored_event, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  conditions: [{type: Ready, status: "True"}]
  addresses: [{type: InternalIP, address: 192.168.5.1}]
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status:
  conditions: [{type: Ready, status: "True"}]
  addresses: [{type: InternalIP, address: 192.168.5.2}, {type: ExternalIP, address: 203.0.113.2}]
---
apiVersion: v1
kind: Node
metadata: {name: n3}
status:
  conditions: [{type: Ready, status: "False"}]
  addresses: [{type: InternalIP, address: 192.168.5.3}]
---
apiVersion: v1
kind: Service
metadata: {name: web, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
- addresses: [{ip: 10.42.2.5, nodeName: n2}]
  ports: [{port: 8080, protocol: TCP}]
"#;

    fn stored(objects: &RecordingObjects, name: &str) -> Object {
        objects
            .get(Kind::Service, "default", name)
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap()
    }

    /// The stored Service `name` with its spec changed by `change`.
    fn changed(
        objects: &RecordingObjects,
        name: &str,
        change: impl FnOnce(&mut services::ServiceSpec),
    ) -> Object {
        let mut object = stored(objects, name);
        let mut spec = service_of(&object).unwrap().spec.unwrap_or_default();
        change(&mut spec);
        services::set_spec(&mut object, spec);
        object
    }

    fn ingress(objects: &RecordingObjects, name: &str) -> Vec<String> {
        let service = service_of(&stored(objects, name)).unwrap();
        services::ingress_ips(&service).map(str::to_owned).collect()
    }

    fn setup() -> (Arc<RecordingObjects>, ServiceLbController) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(CLUSTER);
        objects.clear_writes();
        let controller = ServiceLbController::new(context(&objects));
        (objects, controller)
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Service, "default", name)
    }

    #[tokio::test]
    async fn ready_nodes_addresses_become_the_ingress_once() {
        let (objects, controller) = setup();
        controller.reconcile(&key("web")).await.unwrap();
        // n3 is not Ready; n2 gives its ExternalIP.
        assert_eq!(ingress(&objects, "web"), ["192.168.5.1", "203.0.113.2"]);
        assert!(objects
            .event_reasons()
            .contains(&"UpdatedIngressIP".to_owned()));
        // Nothing changed: nothing written again.
        objects.clear_writes();
        controller.reconcile(&key("web")).await.unwrap();
        assert!(objects.writes().is_empty());
    }

    #[tokio::test]
    async fn local_policy_lists_only_nodes_with_ready_endpoints() {
        let (objects, controller) = setup();
        let web = changed(&objects, "web", |spec| {
            spec.external_traffic_policy = Some("Local".into());
        });
        objects.write(WriteOp::Update, web).unwrap();
        controller.reconcile(&key("web")).await.unwrap();
        assert_eq!(ingress(&objects, "web"), ["203.0.113.2"]);
    }

    #[test]
    fn labelled_nodes_opt_in_and_out() {
        let mut nodes: Vec<v1::Node> = Vec::new();
        for (name, label, ip) in [
            ("a", Some("true"), "10.0.0.1"),
            ("b", None, "10.0.0.2"),
            ("c", Some("false"), "10.0.0.3"),
        ] {
            let mut labels = BTreeMap::new();
            if let Some(label) = label {
                labels.insert(ENABLE_LB_LABEL.to_owned(), label.to_owned());
            }
            nodes.push(v1::Node {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    labels,
                    ..Default::default()
                }),
                status: Some(v1::NodeStatus {
                    conditions: vec![v1::NodeCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    addresses: vec![v1::NodeAddress {
                        r#type: "InternalIP".into(),
                        address: ip.into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        // One node opted in: only it.
        assert_eq!(ingress_addresses(&nodes, None), ["10.0.0.1"]);
        // None opted in: all but the one opted out.
        nodes[0].metadata.as_mut().unwrap().labels.clear();
        assert_eq!(ingress_addresses(&nodes, None), ["10.0.0.1", "10.0.0.2"]);
    }

    #[tokio::test]
    async fn a_port_the_nodes_listen_on_is_never_taken() {
        let (objects, controller) = setup();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ssh}
spec:
  type: LoadBalancer
  ports: [{port: 22, protocol: TCP}]
"#,
        );
        controller.reconcile(&key("ssh")).await.unwrap();
        assert!(ingress(&objects, "ssh").is_empty());
        let events = objects.events();
        let refused = events
            .iter()
            .find(|e| e.reason == "PortInUse")
            .expect("event");
        assert!(refused.message.contains("22/TCP"), "{}", refused.message);
        assert!(refused.message.contains("SSH"), "{}", refused.message);
    }

    #[tokio::test]
    async fn a_newer_service_on_a_taken_port_stays_pending_with_an_event() {
        let (objects, controller) = setup();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: clash, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP}]
"#,
        );
        controller.reconcile(&key("web")).await.unwrap();
        controller.reconcile(&key("clash")).await.unwrap();
        assert!(ingress(&objects, "clash").is_empty());
        assert_eq!(ingress(&objects, "web").len(), 2);
        let events = objects.events();
        let clash = events
            .iter()
            .find(|e| e.reason == "PortInUse")
            .expect("event");
        assert!(clash.message.contains("80/TCP"), "{}", clash.message);
        assert!(clash.message.contains("default/web"), "{}", clash.message);
        // A Service of another class is left alone; one turned ClusterIP
        // loses its ingress.
        let web = changed(&objects, "web", |spec| {
            spec.type_ = Some("ClusterIP".into())
        });
        objects.write(WriteOp::Update, web).unwrap();
        controller.reconcile(&key("web")).await.unwrap();
        assert!(ingress(&objects, "web").is_empty());
        controller.reconcile(&key("clash")).await.unwrap();
        assert_eq!(ingress(&objects, "clash").len(), 2);
    }

    #[tokio::test]
    async fn a_serving_service_keeps_its_port_from_one_made_in_the_same_second() {
        let (objects, controller) = setup();
        controller.reconcile(&key("web")).await.unwrap();
        assert_eq!(ingress(&objects, "web").len(), 2);
        // Made in the same second as web, and earlier by name: without the
        // serving rule it would take web's port over.
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: aaa, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP}]
"#,
        );
        controller.reconcile(&key("aaa")).await.unwrap();
        controller.reconcile(&key("web")).await.unwrap();
        assert!(ingress(&objects, "aaa").is_empty());
        assert_eq!(ingress(&objects, "web").len(), 2);
    }

    /// `keys_for` of a `kind` event of `event_type` for `object`.
    fn queued(
        controller: &ServiceLbController,
        kind: Kind,
        event_type: EventType,
        object: &Object,
    ) -> Vec<ObjectKey> {
        controller.keys_for(&stored_event(kind, "default", event_type), object)
    }

    #[test]
    fn only_load_balancers_and_services_with_an_ingress_to_clear_are_queued() {
        let (objects, controller) = setup();
        objects.seed_yaml(
            r#"
apiVersion: v1
kind: Service
metadata: {name: plain}
spec: {ports: [{port: 81}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: plain}
subsets: [{addresses: [{ip: 10.42.1.7}], ports: [{port: 81}]}]
"#,
        );
        let plain = stored(&objects, "plain");
        let web = stored(&objects, "web");
        let endpoints = |name: &str| {
            objects
                .get(Kind::Endpoints, "default", name)
                .unwrap()
                .map(Arc::unwrap_or_clone)
                .unwrap()
        };
        // A Service that is not a load balancer and has no ingress: no
        // reconcile, for its own changes or its Endpoints'.
        for event_type in [EventType::Added, EventType::Modified] {
            assert!(queued(&controller, Kind::Service, event_type, &plain).is_empty());
        }
        assert!(queued(
            &controller,
            Kind::Endpoints,
            EventType::Modified,
            &endpoints("plain")
        )
        .is_empty());
        // The load balancer is queued for both.
        assert_eq!(
            queued(&controller, Kind::Service, EventType::Modified, &web),
            [key("web")]
        );
        assert_eq!(
            queued(
                &controller,
                Kind::Endpoints,
                EventType::Modified,
                &endpoints("web")
            ),
            [key("web")]
        );
        // One with an ingress left over is queued, to clear it.
        let status = services::ServiceStatus {
            load_balancer: Some(services::LoadBalancerStatus {
                ingress: Some(vec![services::LoadBalancerIngress {
                    ip: Some("192.168.5.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        let object = services::with_status(&plain, status);
        assert_eq!(
            queued(&controller, Kind::Service, EventType::Modified, &object),
            [key("plain")]
        );
        // A deletion is always looked at.
        assert_eq!(
            queued(&controller, Kind::Service, EventType::Deleted, &plain),
            [key("plain")]
        );
        // The load balancer stops being one: it is queued to clear its
        // ingress, with every other load balancer (its ports are free),
        // and its Endpoints no longer are.
        let object = changed(&objects, "web", |spec| {
            spec.type_ = Some("ClusterIP".into())
        });
        assert_eq!(
            queued(&controller, Kind::Service, EventType::Modified, &object),
            [key("web")]
        );
        assert!(queued(
            &controller,
            Kind::Endpoints,
            EventType::Modified,
            &endpoints("web")
        )
        .is_empty());
    }
}
