//! Services as Kubernetes' own `Service` type: how the endpoints, slice
//! and load balancer controllers, the REST proxy, `skiff ctl` and the
//! agent's Service rules, DNS and health checks read them. A Service
//! written in the protobuf model of an older release reads the same
//! ([`crate::legacy_bodies`]).

use std::collections::BTreeMap;

use skiff_proto::api::Object;
use skiff_proto::v1::ObjectMeta;

pub use crate::typed::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
pub use crate::typed::IntOrString;
use crate::{generic, legacy_bodies, typed, Body, ObjectExt};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The Service `object` holds, with only the name and namespace of its
/// metadata (the rest stays the object's); `None` for another kind of
/// object, or a damaged one.
pub fn read(object: &Object) -> Option<Service> {
    let mut service: Service = match &object.kind {
        // Straight from the stored bytes, with no `serde_json::Value` tree
        // built first (`crate::typed::decode`): Services are read on each
        // of their events by several controllers and by every agent. The
        // cost is a second copy of Service's decoder in the binary.
        Some(Body::Generic(document)) => {
            if document.api_version != "v1" || document.kind != "Service" {
                return None;
            }
            match serde_json::from_slice(&document.content) {
                Ok(service) => service,
                // What does not read so (empty bytes, or not a JSON
                // object) reads as it did through a `Value`.
                Err(_) => legacy_bodies::read_core(object, "Service")?,
            }
        }
        _ => legacy_bodies::read_core(object, "Service")?,
    };
    let meta = object.meta();
    let named = |s: &String| (!s.is_empty()).then(|| s.clone());
    service.metadata.name = named(&meta.name);
    service.metadata.namespace = named(&meta.namespace);
    Some(service)
}

/// What the store's indexes keep of a Service: its selector and the
/// addresses it claims. Read from a document's bytes with
/// [`claims`], without the rest of the Service, as every member of the
/// cluster does for each Service it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `spec.selector` (empty when unset).
    pub selector: BTreeMap<String, String>,
    /// `spec.clusterIP`, as written (empty when unset).
    pub cluster_ip: String,
    /// Each port's `nodePort` (0 when it has none), in order.
    pub node_ports: Vec<i32>,
    /// `spec.healthCheckNodePort` (0 when it has none).
    pub health_check_node_port: i32,
}

impl Claims {
    /// What a read Service claims.
    pub fn of(service: &Service) -> Claims {
        Claims {
            selector: selector(service).clone(),
            cluster_ip: cluster_ip(service).to_owned(),
            node_ports: ports(service).iter().map(node_port).collect(),
            health_check_node_port: health_check_node_port(service),
        }
    }
}

/// The fields of a stored Service that [`Claims`] holds, as JSON names
/// them; the rest of the document is skipped unread.
#[derive(serde::Deserialize)]
struct ClaimsContent {
    #[serde(default)]
    spec: Option<ClaimsSpec>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClaimsSpec {
    #[serde(default)]
    selector: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Option<Vec<ClaimsPort>>,
    #[serde(default)]
    health_check_node_port: Option<i32>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimsPort {
    #[serde(default)]
    node_port: Option<i32>,
}

/// What the Service `object` claims (see [`Claims`]), in either
/// encoding; `None` for another kind of object, or one whose claimed
/// fields do not read (a selector, address or port of the wrong type).
pub fn claims(object: &Object) -> Option<Claims> {
    let Some(Body::Generic(document)) = &object.kind else {
        return read(object).map(|service| Claims::of(&service));
    };
    if document.api_version != "v1" || document.kind != "Service" {
        return None;
    }
    if document.content.is_empty() {
        // As `read` takes empty content: a Service with no fields.
        return Some(Claims::default());
    }
    // Stored content is always written from a parsed map (defaults,
    // `generic::set_content`), so it has no duplicate keys, which a
    // derived decoder refuses.
    let content: ClaimsContent = serde_json::from_slice(&document.content).ok()?;
    let spec = content.spec.unwrap_or_default();
    Some(Claims {
        selector: spec.selector.unwrap_or_default(),
        cluster_ip: spec.cluster_ip.unwrap_or_default(),
        node_ports: (spec.ports.into_iter().flatten())
            .map(|port| port.node_port.unwrap_or_default())
            .collect(),
        health_check_node_port: spec.health_check_node_port.unwrap_or_default(),
    })
}

/// Whether `object` is a Service, in either encoding.
pub fn is_service(object: &Object) -> bool {
    legacy_bodies::is_core_kind(object, "Service")
}

/// `(namespace, name)` of a read Service (empty when unset).
pub fn key(service: &Service) -> (&str, &str) {
    let meta = &service.metadata;
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn spec_str(service: &Service, field: impl Fn(&ServiceSpec) -> Option<&String>) -> &str {
    service
        .spec
        .as_ref()
        .and_then(field)
        .map_or("", String::as_str)
}

fn spec_list(service: &Service, field: impl Fn(&ServiceSpec) -> Option<&Vec<String>>) -> &[String] {
    service
        .spec
        .as_ref()
        .and_then(field)
        .map_or(&[], Vec::as_slice)
}

/// `spec.type`, `ClusterIP` when unset (as Kubernetes defaults it).
pub fn type_of(service: &Service) -> &str {
    match spec_str(service, |s| s.type_.as_ref()) {
        "" => "ClusterIP",
        named => named,
    }
}

/// Whether the Service is reached on the nodes' ports (NodePort or
/// LoadBalancer).
pub fn is_exposed(service: &Service) -> bool {
    matches!(type_of(service), "NodePort" | "LoadBalancer")
}

/// `spec.clusterIP` (`None` for a headless Service), empty when unset.
pub fn cluster_ip(service: &Service) -> &str {
    spec_str(service, |s| s.cluster_ip.as_ref())
}

/// `spec.externalName` (an ExternalName Service's alias), empty when
/// unset.
pub fn external_name(service: &Service) -> &str {
    spec_str(service, |s| s.external_name.as_ref())
}

/// `spec.ports` (none when unset).
pub fn ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// A port's name, empty when unset.
pub fn port_name(port: &ServicePort) -> &str {
    port.name.as_deref().unwrap_or_default()
}

/// A port's protocol, `TCP` when unset.
pub fn protocol(port: &ServicePort) -> &str {
    match port.protocol.as_deref() {
        None | Some("") => "TCP",
        Some(named) => named,
    }
}

/// A port's nodePort, 0 when it has none.
pub fn node_port(port: &ServicePort) -> i32 {
    port.node_port.unwrap_or_default()
}

/// `spec.selector` (empty when unset: the Service selects nothing, its
/// Endpoints are its own).
pub fn selector(service: &Service) -> &BTreeMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .unwrap_or(&NO_LABELS)
}

/// `spec.externalIPs`.
pub fn external_ips(service: &Service) -> &[String] {
    spec_list(service, |s| s.external_ips.as_ref())
}

/// `spec.loadBalancerSourceRanges`.
pub fn source_ranges(service: &Service) -> &[String] {
    spec_list(service, |s| s.load_balancer_source_ranges.as_ref())
}

/// `spec.loadBalancerClass`, empty when unset (the built-in load
/// balancer's).
pub fn load_balancer_class(service: &Service) -> &str {
    spec_str(service, |s| s.load_balancer_class.as_ref())
}

/// Whether `spec.externalTrafficPolicy` is `Local`.
pub fn is_external_local(service: &Service) -> bool {
    spec_str(service, |s| s.external_traffic_policy.as_ref()) == "Local"
}

/// Whether `spec.internalTrafficPolicy` is `Local`.
pub fn is_internal_local(service: &Service) -> bool {
    spec_str(service, |s| s.internal_traffic_policy.as_ref()) == "Local"
}

/// Whether `spec.publishNotReadyAddresses` is set: the Service's
/// endpoints are every selected pod with an address, ready or not (as a
/// StatefulSet's peers need to find each other before they are ready).
pub fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// `spec.healthCheckNodePort`, 0 when it has none.
pub fn health_check_node_port(service: &Service) -> i32 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.health_check_node_port)
        .unwrap_or_default()
}

/// How long a client sticks to one endpoint under `sessionAffinity:
/// ClientIP` (its timeout, Kubernetes' default when unset or not
/// positive); `None` without affinity.
pub fn affinity_seconds(service: &Service) -> Option<u32> {
    let spec = service.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .unwrap_or_default();
    Some(
        u32::try_from(timeout)
            .ok()
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS),
    )
}

/// `status.loadBalancer.ingress`.
pub fn ingress(service: &Service) -> &[LoadBalancerIngress] {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_deref())
        .unwrap_or_default()
}

/// The IPs of `status.loadBalancer.ingress`, in order.
pub fn ingress_ips(service: &Service) -> impl Iterator<Item = &str> {
    ingress(service).iter().filter_map(|i| i.ip.as_deref())
}

/// A port's `targetPort` as written: a number or a container port's
/// name (`None` when unset: the port itself).
pub fn target_port(port: &ServicePort) -> Option<&IntOrString> {
    port.target_port.as_ref()
}

/// `object` (a Service as stored, in either encoding) with `spec`, for
/// a write of it; any other object as it is.
pub fn set_spec(object: &mut Object, spec: ServiceSpec) {
    set_member(object, "spec", typed::encode(&spec), |model, value| {
        if let Ok(spec) = serde_json::from_value(value) {
            model.spec = Some(spec);
        }
    });
}

/// Sets the top-level member `name` of a Service document to `value`,
/// or gives it to `legacy` for a Service in its protobuf model.
fn set_member(
    object: &mut Object,
    name: &str,
    value: serde_json::Value,
    legacy: impl FnOnce(&mut skiff_proto::v1::Service, serde_json::Value),
) {
    match &mut object.kind {
        Some(Body::Generic(document))
            if document.api_version == "v1" && document.kind == "Service" =>
        {
            let mut content = generic::content(document);
            content.insert(name.to_owned(), value);
            generic::set_content(document, &content);
        }
        Some(Body::Service(model)) => legacy(model, value),
        _ => {}
    }
}

/// A Service with `spec` and `status`, with `metadata`, as a document.
pub fn object(metadata: ObjectMeta, spec: ServiceSpec, status: Option<ServiceStatus>) -> Object {
    let service = Service {
        spec: Some(spec),
        status,
        ..Service::default()
    };
    let document = generic::document("v1", "Service", Some(metadata), typed::encode(&service));
    Object {
        kind: Some(Body::Generic(document)),
    }
}

/// `object` (a Service as stored, in either encoding) with `status`, for
/// a write of its status; any other object as it is.
pub fn with_status(object: &Object, status: ServiceStatus) -> Object {
    let mut object = object.clone();
    set_member(
        &mut object,
        "status",
        typed::encode(&status),
        |model, value| {
            // The protobuf model holds every status field this release writes
            // (load balancer ingress IPs); one it cannot hold leaves the
            // status as it was.
            if let Ok(status) = serde_json::from_value(value) {
                model.status = Some(status);
            }
        },
    );
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("10.43.0.20".into()),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("web".into())),
                    node_port: Some(30080),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("dns".into()),
                    port: 53,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
            ]),
            selector: Some([("app".to_owned(), "web".to_owned())].into()),
            external_traffic_policy: Some("Local".into()),
            health_check_node_port: Some(31000),
            session_affinity: Some("ClientIP".into()),
            external_ips: Some(vec!["192.0.2.9".into()]),
            ..Default::default()
        }
    }

    fn status() -> ServiceStatus {
        ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("192.0.2.10".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_service_gets_a_status_or_spec_written() {
        let secret = Object {
            kind: Some(Body::Generic(generic::document(
                "v1",
                "Secret",
                None,
                serde_json::json!({}),
            ))),
        };
        let status = ServiceStatus::default();
        assert_eq!(with_status(&secret, status), secret);
        let mut written = secret.clone();
        set_spec(&mut written, spec());
        assert_eq!(written, secret);
    }

    #[test]
    fn services_made_here_read_back_in_either_encoding_with_their_defaults() {
        let meta = ObjectMeta {
            name: "web".into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let made = object(meta, spec(), Some(status()));
        assert!(is_service(&made));
        let read_back = read(&made).expect("a Service");
        assert_eq!(key(&read_back), ("shop", "web"));
        assert_eq!(type_of(&read_back), "LoadBalancer");
        assert!(is_exposed(&read_back));
        assert_eq!(cluster_ip(&read_back), "10.43.0.20");
        assert_eq!(ports(&read_back).len(), 2);
        assert_eq!(port_name(&ports(&read_back)[0]), "http");
        assert_eq!(protocol(&ports(&read_back)[0]), "TCP");
        assert_eq!(protocol(&ports(&read_back)[1]), "UDP");
        assert_eq!(node_port(&ports(&read_back)[0]), 30080);
        assert_eq!(node_port(&ports(&read_back)[1]), 0);
        assert_eq!(
            target_port(&ports(&read_back)[0]),
            Some(&IntOrString::String("web".into()))
        );
        assert_eq!(selector(&read_back)["app"], "web");
        assert!(is_external_local(&read_back));
        assert!(!is_internal_local(&read_back));
        assert_eq!(health_check_node_port(&read_back), 31000);
        assert_eq!(affinity_seconds(&read_back), Some(DEFAULT_AFFINITY_SECONDS));
        assert_eq!(external_ips(&read_back), ["192.0.2.9"]);
        assert_eq!(ingress_ips(&read_back).collect::<Vec<_>>(), ["192.0.2.10"]);
        // In the protobuf model of an older release, it reads the same.
        assert!(legacy_bodies::is_moved_document(&made));
        let legacy = legacy_bodies::to_legacy(made).expect("the model holds it");
        assert!(matches!(legacy.kind, Some(Body::Service(_))));
        assert!(is_service(&legacy));
        assert_eq!(read(&legacy), Some(read_back));
    }

    #[test]
    fn an_empty_service_reads_as_kubernetes_defaults_it() {
        let made = object(ObjectMeta::default(), ServiceSpec::default(), None);
        let read_back = read(&made).expect("a Service");
        assert_eq!(key(&read_back), ("", ""));
        assert_eq!(type_of(&read_back), "ClusterIP");
        assert!(!is_exposed(&read_back));
        assert_eq!(cluster_ip(&read_back), "");
        assert!(ports(&read_back).is_empty());
        assert!(selector(&read_back).is_empty());
        assert_eq!(affinity_seconds(&read_back), None);
        assert_eq!(ingress_ips(&read_back).count(), 0);
        let other = crate::namespaces::object(ObjectMeta::default(), "Active");
        assert!(!is_service(&other));
        assert_eq!(read(&other), None);
    }

    fn with_content(content: &str) -> Object {
        let mut made = object(ObjectMeta::default(), ServiceSpec::default(), None);
        if let Some(Body::Generic(document)) = &mut made.kind {
            document.content = content.as_bytes().to_vec();
        }
        made
    }

    #[test]
    fn claims_read_from_the_bytes_are_what_the_read_service_claims() {
        let meta = ObjectMeta {
            name: "web".into(),
            ..Default::default()
        };
        let made = object(meta, spec(), Some(status()));
        let claimed = claims(&made).expect("a Service's claims");
        assert_eq!(claimed, Claims::of(&read(&made).unwrap()));
        assert_eq!(claimed.selector["app"], "web");
        assert_eq!(claimed.cluster_ip, "10.43.0.20");
        assert_eq!(claimed.node_ports, [30080, 0]);
        assert_eq!(claimed.health_check_node_port, 31000);
        // In the protobuf model, the same.
        let legacy = legacy_bodies::to_legacy(made).expect("the model holds it");
        assert_eq!(claims(&legacy), Some(claimed));
        // None set: nothing claimed; another kind: none.
        let empty = object(ObjectMeta::default(), ServiceSpec::default(), None);
        assert_eq!(claims(&empty), Some(Claims::default()));
        assert_eq!(claims(&with_content("{}")), Some(Claims::default()));
        assert_eq!(claims(&with_content("")), Some(Claims::default()));
        let other = crate::namespaces::object(ObjectMeta::default(), "Active");
        assert_eq!(claims(&other), None);
    }

    #[test]
    fn claims_skip_fields_they_do_not_hold_but_refuse_their_own_of_the_wrong_type() {
        // A damaged field elsewhere does not hide the addresses held.
        let elsewhere = with_content(
            r#"{"spec":{"clusterIP":"10.43.0.7","ports":[{"port":80,"nodePort":30001}],"sessionAffinity":7},"status":"odd"}"#,
        );
        assert_eq!(read(&elsewhere), None);
        let claimed = claims(&elsewhere).expect("its claims read");
        assert_eq!(claimed.cluster_ip, "10.43.0.7");
        assert_eq!(claimed.node_ports, [30001]);
        // Its own fields of the wrong type: not read.
        for damaged in [
            r#"{"spec":{"ports":[{"nodePort":"30001"}]}}"#,
            r#"{"spec":{"clusterIP":7}}"#,
            r#"{"spec":{"selector":["app"]}}"#,
            r#"{"spec":"#,
        ] {
            assert_eq!(claims(&with_content(damaged)), None, "{damaged}");
        }
    }

    #[test]
    fn a_service_read_from_its_bytes_reads_as_through_a_json_value() {
        let made = object(ObjectMeta::default(), spec(), Some(status()));
        let Some(Body::Generic(document)) = &made.kind else {
            panic!("a document")
        };
        let through_value: Service =
            typed::decode(serde_json::Value::Object(generic::content(document))).unwrap();
        assert_eq!(read(&made), Some(through_value));
        // Empty bytes, or fields that are not a JSON object, read as
        // through a Value: an empty Service. A field of the wrong type
        // does not read.
        assert_eq!(read(&with_content("")), Some(Service::default()));
        assert_eq!(read(&with_content("[1]")), Some(Service::default()));
        assert_eq!(read(&with_content(r#"{"spec":{"ports":7}}"#)), None);
    }
}
