//! Who may do what. Identity comes only from the client certificate the
//! TLS handshake verified ([`PeerInfo`]); no request field can claim one.
//!
//! - Admins may do everything; so may masters, which relay requests they
//!   have already authorized.
//! - A node may read Nodes (for the overlay), Services and Endpoints, and
//!   its own pods; it may write only its own Node (not its spec: podCIDR,
//!   taints and unschedulable are the cluster's), its heartbeats, and the
//!   status of pods bound to it, and confirm that it has torn down a pod
//!   bound to it that is being deleted.
//!
//! Anything else is refused with PermissionDenied and logged.

use skiff_proto::api::object::Kind as Body;
use skiff_security::{Identity, PeerInfo};
use tonic::{Request, Status};

use crate::objects::Kind;
use crate::store::state_machine::ObjectStore;

/// The verified identity behind a request.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    PeerInfo::of(request)
        .and_then(|p| p.identity.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate signed by the cluster CA is required")
        })
}

/// Refuses `identity` doing `action`, and logs it.
pub fn denied(identity: &Identity, action: &str) -> Status {
    tracing::warn!(%identity, action, "permission denied");
    Status::permission_denied(format!("{identity} may not {action}"))
}

/// Whether `pod` in `namespace` is bound to `node` (in this replica).
pub fn pod_bound_to(store: &ObjectStore, namespace: &str, pod: &str, node: &str) -> bool {
    let namespace = if namespace.is_empty() {
        crate::writer::DEFAULT_NAMESPACE
    } else {
        namespace
    };
    matches!(
        store.get(Kind::Pod, namespace, pod).ok().flatten().and_then(|o| o.kind),
        Some(Body::Pod(p)) if p.spec.as_ref().is_some_and(|s| s.node_name == node)
    )
}

/// Get, List or Watch of `kind` (`name` for a Get).
pub fn may_read(
    store: &ObjectStore,
    identity: &Identity,
    kind: Kind,
    namespace: &str,
    name: Option<&str>,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "read")),
    };
    let allowed = match kind {
        Kind::Node | Kind::Service | Kind::Endpoints => true,
        Kind::Pod => name.is_some_and(|p| pod_bound_to(store, namespace, p, node)),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let what = match name {
            Some(n) => format!("read {kind} {n:?}"),
            None => format!("list or watch {}", kind.plural()),
        };
        Err(denied(identity, &what))
    }
}

/// Update or UpdateStatus of `object` (of `kind`, named `name`).
pub fn may_update(
    store: &ObjectStore,
    identity: &Identity,
    object: &skiff_proto::api::Object,
    kind: Kind,
    namespace: &str,
    name: &str,
    status_only: bool,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "write")),
    };
    let allowed = match kind {
        Kind::Node if name == node && !status_only => {
            if !same_node_spec(store, object, name) {
                return Err(denied(
                    identity,
                    "change its own Node's spec (podCIDR, taints, unschedulable are the cluster's)",
                ));
            }
            true
        }
        Kind::Node => name == node,
        Kind::Pod => status_only && pod_bound_to(store, namespace, name, node),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(denied(identity, &format!("update {kind} {name:?}")))
    }
}

/// ConfirmPodDeletion of pod `name` in `namespace` (the node's word that it
/// has stopped the pod and torn its sandbox down, which removes it): a
/// node only for pods bound to it, as the kubelet may only finish its own.
pub fn may_confirm_pod_deletion(
    store: &ObjectStore,
    identity: &Identity,
    namespace: &str,
    name: &str,
) -> Result<(), Status> {
    let node = match identity {
        i if i.is_privileged() => return Ok(()),
        Identity::Node(n) => n,
        _ => return Err(denied(identity, "confirm pod deletions")),
    };
    if pod_bound_to(store, namespace, name, node) {
        Ok(())
    } else {
        let action = format!("confirm deleting pod {namespace}/{name}, not bound to it");
        Err(denied(identity, &action))
    }
}

/// Calls only admins and masters may make (create, delete, logs, cluster
/// membership, the datastore's snapshots). Masters make them only to relay
/// a call they have authorized already.
pub fn privileged(identity: &Identity, action: &str) -> Result<(), Status> {
    if identity.is_privileged() {
        Ok(())
    } else {
        Err(denied(identity, action))
    }
}

/// Calls a node makes about itself.
pub fn is_self(identity: &Identity, node: &str, action: &str) -> Result<(), Status> {
    match identity {
        i if i.is_privileged() => Ok(()),
        Identity::Node(n) if n == node => Ok(()),
        _ => Err(denied(identity, &format!("{action} for node {node:?}"))),
    }
}

/// Whether `object` (a Node) keeps the spec the stored Node `name` has.
/// An update based on an older version passes here: the store refuses it
/// as a conflict.
fn same_node_spec(store: &ObjectStore, object: &skiff_proto::api::Object, name: &str) -> bool {
    let stored = store.get(Kind::Node, "", name).ok().flatten();
    match (stored.and_then(|o| o.kind), &object.kind) {
        (Some(Body::Node(have)), Some(Body::Node(want))) => {
            let version = |n: &skiff_proto::v1::Node| {
                n.metadata
                    .as_ref()
                    .map(|m| m.resource_version.clone())
                    .unwrap_or_default()
            };
            let stale = !version(want).is_empty() && version(want) != version(&have);
            stale || have.spec.unwrap_or_default() == want.spec.clone().unwrap_or_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use skiff_proto::api::Object;
    use skiff_proto::v1;
    use tonic::Code;

    use super::*;
    use crate::objects::{IntoObject, ObjectExt};
    use crate::store::Command;

    const N1_CIDR: &str = "10.42.1.0/24";
    const N2_CIDR: &str = "10.42.2.0/24";
    const OTHER_CIDR: &str = "10.42.9.0/24";

    /// What a node may not do to its own Node, in its refusal's words.
    const OWN_SPEC: &str =
        "change its own Node's spec (podCIDR, taints, unschedulable are the cluster's)";

    fn meta(namespace: &str, name: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    /// A Node as stored, or as its agent sends it (at `resource_version`,
    /// when not empty).
    fn node(name: &str, pod_cidr: &str, resource_version: &str) -> Object {
        let mut metadata = meta("", name);
        if let Some(m) = metadata.as_mut() {
            m.resource_version = resource_version.into();
        }
        v1::Node {
            metadata,
            spec: Some(v1::NodeSpec {
                pod_cidr: pod_cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A pod in `default`, bound to `node` (none when empty).
    fn pod(name: &str, node: &str) -> Object {
        v1::Pod {
            metadata: meta("default", name),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn deployment(name: &str) -> Object {
        v1::Deployment {
            metadata: meta("default", name),
            ..Default::default()
        }
        .into_object()
    }

    fn create(object: &Object) -> Command {
        Command::Create {
            object: object.encode_to_vec(),
            uid: format!("uid-{}", object.meta().name),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// A store holding Nodes n1 (at resourceVersion 2) and n2 and, in
    /// `default`, pod `mine` bound to n1, `theirs` bound to n2 and `loose`
    /// bound to none.
    fn cluster() -> (tempfile::TempDir, Arc<ObjectStore>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = ObjectStore::open(dir.path()).expect("a store");
        let namespace = v1::Namespace {
            metadata: meta("", "default"),
            ..Default::default()
        };
        let objects = [
            namespace.into_object(),
            node("n1", N1_CIDR, ""),
            node("n2", N2_CIDR, ""),
            pod("mine", "n1"),
            pod("theirs", "n2"),
            pod("loose", ""),
        ];
        let commands: Vec<Command> = objects.iter().map(create).collect();
        for result in store.apply_commands(commands) {
            result.expect("created");
        }
        (dir, store)
    }

    /// `may_update` as the API calls it: with the object's own kind,
    /// namespace and name.
    fn may_update_object(
        store: &ObjectStore,
        who: &Identity,
        object: &Object,
        status_only: bool,
    ) -> Result<(), Status> {
        let kind = object.kind().expect("an object with a kind");
        let meta = object.meta();
        may_update(
            store,
            who,
            object,
            kind,
            &meta.namespace,
            &meta.name,
            status_only,
        )
    }

    /// Checks one answer: allowed, or refused with PermissionDenied saying
    /// exactly that `who` may not `action`.
    fn assert_answer(
        answer: Result<(), Status>,
        who: &Identity,
        expected: Result<(), &str>,
        case: &str,
    ) {
        match (answer, expected) {
            (Ok(()), Ok(())) => {}
            (Err(status), Err(action)) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{case}");
                let refusal = format!("{who} may not {action}");
                assert_eq!(status.message(), refusal, "{case}");
            }
            (answer, expected) => panic!("{case}: answered {answer:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn the_identity_comes_only_from_the_verified_client_certificate() {
        let mut request = Request::new(());
        // Not through the TLS listener at all.
        let refused = identity(&request).expect_err("no peer");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(
            refused.message(),
            "a client certificate signed by the cluster CA is required"
        );
        // A TLS peer without a client certificate.
        let remote = "192.0.2.7:40000".parse().expect("an address");
        request.extensions_mut().insert(PeerInfo {
            remote,
            identity: None,
        });
        let refused = identity(&request).expect_err("no certificate");
        assert_eq!(refused.code(), Code::Unauthenticated);
        // A verified certificate.
        let n1 = Identity::Node("n1".into());
        request.extensions_mut().insert(PeerInfo {
            remote,
            identity: Some(n1.clone()),
        });
        assert_eq!(identity(&request).expect("an identity"), n1);
    }

    #[test]
    fn admins_and_masters_may_do_everything() {
        let (_dir, store) = cluster();
        let objects = [
            node("n1", OTHER_CIDR, ""),
            pod("mine", "n1"),
            pod("theirs", "n2"),
            deployment("web"),
        ];
        for who in [Identity::Admin, Identity::Master("1".into())] {
            for kind in Kind::ALL {
                assert!(may_read(&store, &who, kind, "default", None).is_ok());
                let answer = may_read(&store, &who, kind, "default", Some("theirs"));
                assert!(answer.is_ok(), "{who} reading {kind}");
            }
            for object in &objects {
                for status_only in [false, true] {
                    let answer = may_update_object(&store, &who, object, status_only);
                    assert!(answer.is_ok(), "{who} updating {object:?}");
                }
            }
            assert!(privileged(&who, "create objects").is_ok());
            assert!(is_self(&who, "n2", "register").is_ok());
        }
    }

    #[test]
    fn a_node_reads_nodes_services_endpoints_and_only_its_own_pods() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let cases = [
            // What the overlay and the Service rules need.
            (Kind::Node, None, Ok(())),
            (Kind::Node, Some("n2"), Ok(())),
            (Kind::Service, None, Ok(())),
            (Kind::Service, Some("web"), Ok(())),
            (Kind::Endpoints, None, Ok(())),
            (Kind::Endpoints, Some("web"), Ok(())),
            // Pods bound to it, one by one.
            (Kind::Pod, Some("mine"), Ok(())),
            (Kind::Pod, Some("theirs"), Err(r#"read Pod "theirs""#)),
            (Kind::Pod, Some("loose"), Err(r#"read Pod "loose""#)),
            (Kind::Pod, Some("gone"), Err(r#"read Pod "gone""#)),
            (Kind::Pod, None, Err("list or watch pods")),
            // Nothing else.
            (Kind::Secret, Some("token"), Err(r#"read Secret "token""#)),
            (Kind::Secret, None, Err("list or watch secrets")),
            (Kind::Namespace, None, Err("list or watch namespaces")),
            (Kind::Deployment, None, Err("list or watch deployments")),
            (Kind::ReplicaSet, None, Err("list or watch replicasets")),
        ];
        for (kind, name, expected) in cases {
            let answer = may_read(&store, &n1, kind, "default", name);
            assert_answer(answer, &n1, expected, &format!("{kind} {name:?}"));
        }
    }

    #[test]
    fn a_node_updates_only_its_own_node_and_the_status_of_its_own_pods() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let cases = [
            // Its own Node, but not the Node's spec.
            (node("n1", N1_CIDR, ""), false, Ok(())),
            (node("n1", N1_CIDR, "2"), false, Ok(())),
            (node("n1", OTHER_CIDR, ""), false, Err(OWN_SPEC)),
            (node("n1", OTHER_CIDR, "2"), false, Err(OWN_SPEC)),
            (node("n1", OTHER_CIDR, ""), true, Ok(())),
            // Based on an older version: let through for the store to
            // refuse as a conflict, which says more.
            (node("n1", OTHER_CIDR, "1"), false, Ok(())),
            // Another node's Node.
            (node("n2", N2_CIDR, ""), false, Err(r#"update Node "n2""#)),
            (node("n2", N2_CIDR, ""), true, Err(r#"update Node "n2""#)),
            // The status of pods bound to it, and nothing more of them. The
            // stored binding counts, not the one the node sends.
            (pod("mine", "n1"), true, Ok(())),
            (pod("mine", "n1"), false, Err(r#"update Pod "mine""#)),
            (pod("theirs", "n1"), true, Err(r#"update Pod "theirs""#)),
            (pod("loose", "n1"), true, Err(r#"update Pod "loose""#)),
            (pod("gone", "n1"), true, Err(r#"update Pod "gone""#)),
            // Nothing else.
            (deployment("web"), false, Err(r#"update Deployment "web""#)),
            (deployment("web"), true, Err(r#"update Deployment "web""#)),
        ];
        for (object, status_only, expected) in cases {
            let answer = may_update_object(&store, &n1, &object, status_only);
            let case = format!("{} (status only: {status_only})", object.display_name());
            assert_answer(answer, &n1, expected, &case);
        }
        // A Node it has not registered has no spec to keep, so any spec is
        // a change (the store would refuse the update as NotFound anyway).
        let n3 = Identity::Node("n3".into());
        let unregistered = node("n3", OTHER_CIDR, "");
        let answer = may_update_object(&store, &n3, &unregistered, false);
        assert_answer(answer, &n3, Err(OWN_SPEC), "unregistered Node");
    }

    #[test]
    fn only_admins_and_masters_may_create_delete_read_logs_and_add_members() {
        let n1 = Identity::Node("n1".into());
        let actions = [
            "create objects",
            "delete objects",
            "read container logs",
            "add cluster members",
            "save datastore snapshots",
            "remove cluster members",
        ];
        for action in actions {
            assert_answer(privileged(&n1, action), &n1, Err(action), action);
            assert!(privileged(&Identity::Admin, action).is_ok());
            assert!(privileged(&Identity::Master("1".into()), action).is_ok());
        }
    }

    #[test]
    fn a_node_makes_calls_only_about_itself() {
        let n1 = Identity::Node("n1".into());
        let answer = is_self(&n1, "n1", "send heartbeats");
        assert_answer(answer, &n1, Ok(()), "its own heartbeats");
        let answer = is_self(&n1, "n2", "send heartbeats");
        let expected = Err(r#"send heartbeats for node "n2""#);
        assert_answer(answer, &n1, expected, "another node's heartbeats");
    }

    #[test]
    fn a_node_confirms_the_deletion_of_its_own_pods_only() {
        let (_dir, store) = cluster();
        let n1 = Identity::Node("n1".into());
        let answer = may_confirm_pod_deletion(&store, &n1, "default", "mine");
        assert_answer(answer, &n1, Ok(()), "mine");
        // Another node's, an unbound one, one that is not there.
        for name in ["theirs", "loose", "gone"] {
            let answer = may_confirm_pod_deletion(&store, &n1, "default", name);
            let refused = format!("confirm deleting pod default/{name}, not bound to it");
            assert_answer(answer, &n1, Err(refused.as_str()), name);
        }
        for who in [Identity::Admin, Identity::Master("1".into())] {
            let answer = may_confirm_pod_deletion(&store, &who, "default", "theirs");
            assert!(answer.is_ok(), "{who}");
        }
    }

    #[test]
    fn a_pod_is_bound_to_the_node_its_stored_spec_names() {
        let (_dir, store) = cluster();
        assert!(pod_bound_to(&store, "default", "mine", "n1"));
        assert!(pod_bound_to(&store, "", "mine", "n1"), "default namespace");
        assert!(!pod_bound_to(&store, "default", "mine", "n2"));
        assert!(!pod_bound_to(&store, "default", "theirs", "n1"));
        assert!(!pod_bound_to(&store, "default", "loose", "n1"));
        assert!(!pod_bound_to(&store, "default", "gone", "n1"));
        assert!(!pod_bound_to(&store, "kube-system", "mine", "n1"));
    }
}
