//! The Endpoints controller: for every Service with a selector, an
//! Endpoints object of the same name listing the selected pods that have an
//! IP — ready ones under `addresses`, the rest under `notReadyAddresses` —
//! with the Service's ports resolved against each pod (named target ports
//! included). Services without a selector keep hand-written Endpoints.

use std::collections::BTreeMap;

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Action, Context, ObjectKey, ReconcileError, Reconciler};
use crate::objects::pods::{pod_is_active, pod_is_ready};
use crate::objects::{IntoObject, Kind, ObjectExt};
use crate::store::state_machine::StoredEvent;

pub struct EndpointsController {
    pub ctx: Context,
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Reconciler for EndpointsController {
    const NAME: &'static str = "endpoints";
    const KIND: Kind = Kind::Service;

    fn keys_for(&self, event: &StoredEvent, object: &Object) -> Vec<ObjectKey> {
        match event.kind {
            Kind::Service => ObjectKey::of(object).into_iter().collect(),
            Kind::Endpoints => {
                vec![ObjectKey::new(
                    Kind::Service,
                    &event.namespace,
                    &object.meta().name,
                )]
            }
            Kind::Pod => {
                let labels = &object.meta().labels;
                match self.ctx.store.list(Kind::Service, Some(&event.namespace)) {
                    Ok((services, _)) => services
                        .iter()
                        .filter(|s| match &s.kind {
                            Some(Body::Service(s)) => s
                                .spec
                                .as_ref()
                                .is_some_and(|spec| selects(&spec.selector, labels)),
                            _ => false,
                        })
                        .filter_map(ObjectKey::of)
                        .collect(),
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        let existing = self
            .ctx
            .store
            .get(Kind::Endpoints, &key.namespace, &key.name)?;
        let service = self
            .ctx
            .store
            .get(Kind::Service, &key.namespace, &key.name)?;
        let Some(Object {
            kind: Some(Body::Service(service)),
        }) = service
        else {
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
        let spec = service.spec.clone().unwrap_or_default();
        if spec.selector.is_empty() {
            return Ok(Action::Done);
        }
        let (pods, _) = self.ctx.store.list(Kind::Pod, Some(&key.namespace))?;
        // Pods grouped by the ports they resolve to, as Kubernetes does.
        let mut subsets: BTreeMap<Vec<(String, i32, String)>, v1::EndpointSubset> = BTreeMap::new();
        for object in pods {
            let Some(Body::Pod(pod)) = object.kind else {
                continue;
            };
            let meta = pod.metadata.clone().unwrap_or_default();
            if !selects(&spec.selector, &meta.labels) || !pod_is_active(&pod) {
                continue;
            }
            let ip = pod
                .status
                .as_ref()
                .map(|s| s.pod_ip.clone())
                .unwrap_or_default();
            if ip.is_empty() {
                continue;
            }
            let ports: Vec<(String, i32, String)> = spec
                .ports
                .iter()
                .filter_map(|p| {
                    resolve_port(p, &pod).map(|n| (p.name.clone(), n, p.protocol.clone()))
                })
                .collect();
            let address = v1::EndpointAddress {
                ip,
                hostname: String::new(),
                node_name: pod
                    .spec
                    .as_ref()
                    .map(|s| s.node_name.clone())
                    .unwrap_or_default(),
                target_ref: Some(v1::ObjectReference {
                    kind: "Pod".into(),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    uid: meta.uid.clone(),
                    ..Default::default()
                }),
            };
            let subset = subsets
                .entry(ports.clone())
                .or_insert_with(|| v1::EndpointSubset {
                    ports: ports
                        .iter()
                        .map(|(name, port, protocol)| v1::EndpointPort {
                            name: name.clone(),
                            port: *port,
                            protocol: protocol.clone(),
                            app_protocol: String::new(),
                        })
                        .collect(),
                    ..Default::default()
                });
            if pod_is_ready(&pod) {
                subset.addresses.push(address);
            } else {
                subset.not_ready_addresses.push(address);
            }
        }
        let mut subsets: Vec<v1::EndpointSubset> = subsets.into_values().collect();
        for s in &mut subsets {
            s.addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
            s.not_ready_addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
        let service_meta = service.metadata.clone().unwrap_or_default();
        match existing.and_then(|o| match o.kind {
            Some(Body::Endpoints(e)) => Some(e),
            _ => None,
        }) {
            Some(current) if current.subsets == subsets => {}
            Some(mut current) => {
                current.subsets = subsets;
                self.ctx.writer.update(current.into_object()).await?;
            }
            None => {
                let endpoints = v1::Endpoints {
                    metadata: Some(v1::ObjectMeta {
                        name: key.name.clone(),
                        namespace: key.namespace.clone(),
                        labels: service_meta.labels,
                        ..Default::default()
                    }),
                    subsets,
                    ..Default::default()
                };
                match self.ctx.writer.create(endpoints.into_object()).await {
                    Ok(_) => {}
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Action::Done)
    }
}

/// The pod port a Service port sends to: a number, or a named container port.
fn resolve_port(port: &v1::ServicePort, pod: &v1::Pod) -> Option<i32> {
    let target = if port.target_port.is_empty() {
        port.port.to_string()
    } else {
        port.target_port.clone()
    };
    if let Ok(n) = target.parse() {
        return Some(n);
    }
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .find(|p| p.name == target)
        .map(|p| p.container_port)
}
