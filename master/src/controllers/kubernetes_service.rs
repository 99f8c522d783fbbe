//! The Services every cluster has, kept by the leader as Kubernetes'
//! control plane keeps them:
//!
//! - `default/kubernetes`: the API, at the service CIDR's first address on
//!   port 443 (`https`). It selects no pods: its Endpoints are the masters'
//!   advertised API addresses, rewritten whenever the Raft membership
//!   changes (a master joins, leaves or moves), so every node routes
//!   `10.43.0.1:443` to a master through its ordinary Service rules.
//! - `kube-system/kube-dns`: the cluster DNS address (`--cluster-dns`) on 53
//!   UDP and TCP, for tools that look for it. Every agent answers DNS on
//!   its own node (skiff runs no DNS pods), so it has no selector and no
//!   Endpoints.
//!
//! Either Service is created again when it is missing; one that exists is
//! left as it is (someone may have changed it on purpose). Only loopback-
//! free IPv4 API addresses can be endpoints: a pod cannot reach a master's
//! loopback, nor a host name through nftables.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use skiff_proto::api::Object;
use skiff_proto::v1;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::cluster::Cluster;
use crate::writer::DEFAULT_NAMESPACE;
use skiff_objects::services;
use skiff_objects::{endpoints, Kind, ObjectExt};

/// The API's Service, in `default`.
pub const API_SERVICE: &str = "kubernetes";
/// The cluster DNS Service, in [`SYSTEM_NAMESPACE`].
pub const DNS_SERVICE: &str = "kube-dns";
/// Where Kubernetes keeps its own Services.
pub const SYSTEM_NAMESPACE: &str = "kube-system";
/// The API's port when no master's can be read.
const DEFAULT_API_PORT: u16 = 6443;
/// Looks again this often even when the membership did not change.
const RESYNC: Duration = Duration::from_secs(30);

/// What the two Services are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltInServices {
    /// `default/kubernetes`'s clusterIP: the service CIDR's first address.
    pub api_service_ip: Ipv4Addr,
    /// `kube-system/kube-dns`'s clusterIP: the cluster DNS address.
    pub cluster_dns: Ipv4Addr,
}

fn port(name: &str, protocol: &str, port: i32, target: u16) -> services::ServicePort {
    services::ServicePort {
        name: Some(name.to_owned()),
        protocol: Some(protocol.to_owned()),
        port,
        target_port: Some(services::IntOrString::Int(i32::from(target))),
        ..Default::default()
    }
}

fn service(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    cluster_ip: Ipv4Addr,
    ports: Vec<services::ServicePort>,
) -> Object {
    let meta = v1::ObjectMeta {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    let spec = services::ServiceSpec {
        type_: Some("ClusterIP".to_owned()),
        cluster_ip: Some(cluster_ip.to_string()),
        ports: Some(ports),
        ..Default::default()
    };
    services::object(meta, spec, None)
}

/// `default/kubernetes` as Kubernetes makes it, sending to `api_port`.
pub fn api_service(ip: Ipv4Addr, api_port: u16) -> Object {
    service(
        DEFAULT_NAMESPACE,
        API_SERVICE,
        &[("component", "apiserver"), ("provider", "kubernetes")],
        ip,
        vec![port("https", "TCP", 443, api_port)],
    )
}

/// `kube-system/kube-dns` at the cluster DNS address.
pub fn dns_service(ip: Ipv4Addr) -> Object {
    service(
        SYSTEM_NAMESPACE,
        DNS_SERVICE,
        &[
            ("k8s-app", "kube-dns"),
            ("kubernetes.io/cluster-service", "true"),
            ("kubernetes.io/name", "KubeDNS"),
        ],
        ip,
        vec![port("dns", "UDP", 53, 53), port("dns-tcp", "TCP", 53, 53)],
    )
}

/// The masters' API addresses (`IP:port`) a pod can be sent to: IPv4, not
/// loopback or unspecified; the rest are skipped.
fn reachable(api_addresses: &[String]) -> Vec<SocketAddrV4> {
    let mut out: Vec<SocketAddrV4> = api_addresses
        .iter()
        .filter_map(|a| a.parse::<SocketAddrV4>().ok())
        .filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The subsets of `default/kubernetes`'s Endpoints: the masters'
/// addresses, one subset per API port (masters normally share one).
pub fn api_endpoint_subsets(api_addresses: &[String]) -> Vec<endpoints::EndpointSubset> {
    let mut by_port: BTreeMap<u16, Vec<endpoints::EndpointAddress>> = BTreeMap::new();
    for address in reachable(api_addresses) {
        by_port
            .entry(address.port())
            .or_default()
            .push(endpoints::EndpointAddress {
                ip: address.ip().to_string(),
                ..Default::default()
            });
    }
    by_port
        .into_iter()
        .map(|(port, addresses)| endpoints::EndpointSubset {
            addresses: Some(addresses),
            ports: Some(vec![endpoints::EndpointPort {
                name: Some("https".to_owned()),
                port: i32::from(port),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .collect()
}

/// Makes sure both Services exist and `default/kubernetes`'s Endpoints
/// list exactly `api_addresses` (the members' advertised API addresses).
/// Idempotent: nothing is written when all is as it should be.
pub async fn reconcile(
    ctx: &Context,
    config: &BuiltInServices,
    api_addresses: &[String],
) -> Result<(), ReconcileError> {
    let api_port = reachable(api_addresses)
        .first()
        .map(SocketAddrV4::port)
        .unwrap_or(DEFAULT_API_PORT);
    let wanted = [
        api_service(config.api_service_ip, api_port),
        dns_service(config.cluster_dns),
    ];
    for service in wanted {
        let meta = service.meta().clone();
        if ctx
            .store
            .get(Kind::Service, &meta.namespace, &meta.name)?
            .is_some()
        {
            continue;
        }
        match ctx.writer.create(service).await {
            Ok(_) => tracing::info!(
                namespace = %meta.namespace,
                name = %meta.name,
                "created a built-in Service"
            ),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let subsets = api_endpoint_subsets(api_addresses);
    let existing = ctx
        .store
        .get(Kind::Endpoints, DEFAULT_NAMESPACE, API_SERVICE)?;
    let meta = v1::ObjectMeta {
        name: API_SERVICE.to_owned(),
        namespace: DEFAULT_NAMESPACE.to_owned(),
        ..Default::default()
    };
    super::endpoints::put_subsets(ctx, existing.as_deref(), meta, subsets).await?;
    Ok(())
}

/// Every member's advertised API address, sorted.
fn member_api_addresses(cluster: &Cluster) -> Vec<String> {
    let mut addresses: Vec<String> = cluster
        .members()
        .into_iter()
        .map(|(_, node, _)| node.api_addr)
        .collect();
    addresses.sort();
    addresses
}

/// Keeps the built-in Services while leading: at once, whenever the
/// membership's API addresses change, and every [`RESYNC`]; until
/// `shutdown`. A failed pass is logged and tried again at the next.
pub async fn run(
    ctx: Context,
    config: BuiltInServices,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    let mut metrics = cluster.raft.metrics();
    loop {
        let addresses = member_api_addresses(&cluster);
        if let Err(e) = reconcile(&ctx, &config, &addresses).await {
            tracing::warn!(
                error = %e,
                "cannot keep the kubernetes and kube-dns Services; retrying"
            );
        }
        let resync = tokio::time::sleep(RESYNC);
        tokio::pin!(resync);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut resync => break,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if member_api_addresses(&cluster) != addresses {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use std::sync::Arc;

    fn config() -> BuiltInServices {
        BuiltInServices {
            api_service_ip: Ipv4Addr::new(10, 43, 0, 1),
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
        }
    }

    fn addresses(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    fn get_service(objects: &RecordingObjects, namespace: &str, name: &str) -> services::Service {
        let stored = objects.get(Kind::Service, namespace, name).unwrap();
        match stored.as_deref().and_then(services::read) {
            Some(s) => s,
            None => panic!("no Service {namespace}/{name}: {stored:?}"),
        }
    }

    fn api_endpoint_ips(objects: &RecordingObjects) -> Vec<(String, i32)> {
        let stored = objects
            .get(Kind::Endpoints, DEFAULT_NAMESPACE, API_SERVICE)
            .unwrap();
        let Some(e) = stored.as_deref().and_then(endpoints::read) else {
            panic!("no Endpoints default/kubernetes: {stored:?}");
        };
        endpoints::subsets(&e)
            .iter()
            .flat_map(|s| {
                let port = endpoints::ports(s)[0].port;
                endpoints::ready(s)
                    .iter()
                    .map(move |a| (a.ip.clone(), port))
            })
            .collect()
    }

    #[tokio::test]
    async fn both_services_are_made_and_the_api_endpoints_follow_the_masters() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        let masters = addresses(&["192.0.2.2:6443", "192.0.2.1:6443"]);
        reconcile(&ctx, &config(), &masters).await.unwrap();

        let api = get_service(&objects, "default", "kubernetes");
        assert_eq!(services::cluster_ip(&api), "10.43.0.1");
        assert!(services::selector(&api).is_empty(), "it selects no pods");
        let https = &services::ports(&api)[0];
        assert_eq!((services::port_name(https), https.port), ("https", 443));
        assert_eq!(
            services::target_port(https),
            Some(&services::IntOrString::Int(6443))
        );
        let dns = get_service(&objects, "kube-system", "kube-dns");
        assert_eq!(services::cluster_ip(&dns), "10.43.0.10");
        let ports: Vec<(&str, &str, i32)> = services::ports(&dns)
            .iter()
            .map(|p| (services::port_name(p), services::protocol(p), p.port))
            .collect();
        assert_eq!(ports, [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]);
        assert_eq!(
            api_endpoint_ips(&objects),
            [
                ("192.0.2.1".to_owned(), 6443),
                ("192.0.2.2".to_owned(), 6443)
            ]
        );

        // Nothing changed: nothing written.
        objects.clear_writes();
        reconcile(&ctx, &config(), &masters).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        // A master left, another moved: one update of the Endpoints; a
        // loopback address and a host name cannot be endpoints.
        let now = addresses(&["192.0.2.9:6443", "127.0.0.1:6443", "master-3:6443"]);
        reconcile(&ctx, &config(), &now).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].kind),
            (WriteOp::Update, Kind::Endpoints)
        );
        assert_eq!(api_endpoint_ips(&objects), [("192.0.2.9".to_owned(), 6443)]);
    }

    #[tokio::test]
    async fn a_deleted_service_comes_back_and_a_changed_one_is_left_alone() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        let masters = addresses(&["192.0.2.1:6443"]);
        reconcile(&ctx, &config(), &masters).await.unwrap();
        objects
            .remove(Kind::Service, SYSTEM_NAMESPACE, DNS_SERVICE, "")
            .unwrap();
        let mut api = objects
            .get(Kind::Service, "default", "kubernetes")
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .unwrap();
        api.meta_mut()
            .unwrap()
            .labels
            .insert("mine".into(), "yes".into());
        objects.write(WriteOp::Update, api).unwrap();
        objects.clear_writes();

        reconcile(&ctx, &config(), &masters).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].name.as_str()),
            (WriteOp::Create, DNS_SERVICE)
        );
        let api = objects.get(Kind::Service, "default", "kubernetes");
        assert_eq!(api.unwrap().unwrap().meta().labels["mine"], "yes");
    }
}
