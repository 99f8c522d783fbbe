//! Cluster security with real `skiff` processes over real TLS: nothing but
//! the join exchange without a certificate; join tokens checked (wrong,
//! expired, deleted, wrong usage, a CA that does not match the token's
//! hash); a node's certificate reaches only what is its own; forged client
//! certificates are refused; key files are 0600.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use skiff_e2e::credentials::{admin_conf, join_token};
use skiff_e2e::master::{ready_master, MasterProcess};
use skiff_e2e::skiff_bin;
use skiff_master::client::{Client, ClientError};
use skiff_objects::manifest::parse_manifest;
use skiff_objects::{Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::join::join_client::JoinClient;
use skiff_proto::join::CaCertificateRequest;
use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::{Heartbeat, RegisterRequest, UpdatePodStatusRequest, WatchPodsRequest};
use skiff_proto::v1;
use skiff_security::join_client::{join_master, join_node, JoinError};
use skiff_security::{
    node_password, CertInfo, CertStore, ClientTransport, ClusterCa, Credentials, Identity,
    JoinToken,
};
use tonic::Code;

fn code(e: &ClientError) -> Code {
    match e {
        ClientError::Other { code, .. } => *code,
        ClientError::NotFound(_) => Code::NotFound,
        ClientError::Unavailable { .. } => Code::Unavailable,
        _ => Code::Unknown,
    }
}

fn admin_credentials(m: &MasterProcess) -> Credentials {
    skiff_security::install_crypto_provider();
    Credentials::load(&admin_conf(&m.api_addr).unwrap()).unwrap()
}

/// `skiff token <args>` against `m` with its admin.conf.
fn token_cli(m: &MasterProcess, args: &[&str]) -> std::process::Output {
    std::process::Command::new(skiff_bin())
        .arg("token")
        .arg("--server")
        .arg(&m.api_addr)
        .arg("--config")
        .arg(admin_conf(&m.api_addr).unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Runs a `skiff agent` that is expected to give up; kills it (by its own
/// PID) if it is still running after 30 s, so a regression fails instead
/// of hanging.
fn failing_agent(dir: &std::path::Path, name: &str, server: &str, token: &str) -> (bool, String) {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(skiff_bin())
        .args(["agent", "--server", server, "--node-name", name])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args([
            "--token",
            token,
            "--metrics-listen",
            "none",
            "--pod-network",
            "none",
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exited_ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent {name} was still running after 30 s: it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (exited_ok, std::fs::read_to_string(&log).unwrap())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_only_the_join_exchange_is_served() {
    let (_dir, m) = ready_master().await.unwrap();
    let admin = admin_credentials(&m);
    // Trusts the cluster CA, shows no certificate.
    let anonymous = ClientTransport::to_masters(&admin.ca_pem, None).unwrap();

    let api = Client::new(&m.api_addr, &anonymous).unwrap();
    let e = api.list(Kind::Pod, "").await.unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");
    assert!(e.to_string().contains("client certificate"), "{e}");
    let e = api.cluster_status().await.unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");

    let mut nodes = NodesClient::new(anonymous.channel(&m.api_addr).unwrap());
    let e = nodes
        .register(RegisterRequest { node: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // The join exchange answers anyone: the CA, nothing secret.
    let mut join = JoinClient::new(anonymous.channel(&m.api_addr).unwrap());
    let ca = join
        .ca_certificate(CaCertificateRequest {})
        .await
        .unwrap()
        .into_inner()
        .ca_pem;
    assert_eq!(ca, admin.ca_pem);

    // Raft traffic needs a master's certificate to even finish a handshake.
    let mut peer = skiff_proto::raft::raft_peer_client::RaftPeerClient::new(
        anonymous.channel(&m.raft_addr).unwrap(),
    );
    let e = peer
        .vote(skiff_proto::raft::RaftPayload { data: vec![] })
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert_ne!(
        e.code(),
        Code::InvalidArgument,
        "the payload was read: {e:?}"
    );

    // The admin credential works.
    let client = m.client();
    assert!(client.cluster_status().await.unwrap().has_leader);

    // Private keys and credential files are 0600.
    for file in ["tls/ca.key", "tls/master.key", "admin.conf", "token"] {
        assert_eq!(mode(&m.data_dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&m.data_dir.join("tls/ca.crt")), 0o644);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_checked_before_anything_is_issued() {
    let (dir, m) = ready_master().await.unwrap();
    let admin = admin_credentials(&m);
    let server_token = JoinToken::parse(&join_token(&m.api_addr).unwrap()).unwrap();
    assert_eq!(
        server_token.ca_hash,
        skiff_security::ca::ca_hash(&admin.ca_pem).unwrap()
    );

    // Tokens made with the CLI.
    let made = token_cli(&m, &["create", "--ttl", "1h", "--description", "pi"]);
    assert!(made.status.success(), "{made:?}");
    let agent_token = JoinToken::parse(&stdout(&made)).unwrap();
    let made = token_cli(&m, &["create", "--ttl", "1s"]);
    let short_token = JoinToken::parse(&stdout(&made)).unwrap();
    let listed = stdout(&token_cli(&m, &["list"]));
    assert!(listed.contains(&agent_token.id), "{listed}");
    assert!(listed.contains("pi"), "{listed}");
    assert!(!listed.contains(&agent_token.secret), "{listed}");

    // A good token joins: the certificate is for the node asked for.
    let joined = join_node(
        &m.api_addr,
        &agent_token,
        "node-ok",
        &node_password::generate(),
    )
    .await
    .unwrap();
    let info = CertInfo::from_pem(&joined.cert_pem).unwrap();
    assert_eq!(info.identity, Some(Identity::Node("node-ok".into())));
    assert_eq!(joined.ca_pem, admin.ca_pem);

    // A wrong secret, or an id nobody made.
    let mut wrong = agent_token.clone();
    wrong.secret = "0000000000000000".into();
    let e = join_node(&m.api_addr, &wrong, "node-x", &node_password::generate())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, JoinError::Refused { message, .. } if message.contains("unknown token or wrong secret")),
        "{e}"
    );
    let stranger = JoinToken::generate(&server_token.ca_hash);
    let e = join_node(&m.api_addr, &stranger, "node-x", &node_password::generate())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, JoinError::Refused { .. }), "{e}");

    // An expired token.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = join_node(
        &m.api_addr,
        &short_token,
        "node-x",
        &node_password::generate(),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(stdout(&token_cli(&m, &["list"])).contains("expired"));

    // An agent token does not hand out the CA.
    let e = join_master(&m.api_addr, &agent_token).await.err().unwrap();
    assert!(e.to_string().contains("server token"), "{e}");
    // The server token does.
    let ca = join_master(&m.api_addr, &server_token).await.unwrap();
    assert_eq!(ca.ca_pem, admin.ca_pem);

    // A deleted token stops working.
    let deleted = token_cli(&m, &["delete", &agent_token.id]);
    assert!(deleted.status.success(), "{deleted:?}");
    let e = join_node(
        &m.api_addr,
        &agent_token,
        "node-y",
        &node_password::generate(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, JoinError::Refused { .. }), "{e}");

    // A token pinning another CA: the agent refuses the master and exits,
    // and the master never saw a join request.
    let mut forged = server_token.clone();
    forged.ca_hash = "ab".repeat(32);
    let (ok, err) = failing_agent(dir.path(), "mitm", &m.api_addr, &forged.to_string());
    assert!(!ok);
    assert!(err.contains("refusing it"), "{err}");
    assert!(!dir.path().join("mitm/tls/node.crt").exists());
    // And with a wrong secret, a real agent process exits saying so.
    let (ok, err) = failing_agent(dir.path(), "wrong", &m.api_addr, &wrong.to_string());
    assert!(!ok);
    assert!(err.contains("unknown token or wrong secret"), "{err}");
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("join refused"), "refusals are logged");
    assert!(!log.contains("mitm"), "the mismatched agent sent nothing");
}

/// A client with a node's own certificate.
struct NodeClient {
    api: Client,
    nodes: NodesClient<tonic::transport::Channel>,
}

async fn join_as(m: &MasterProcess, token: &JoinToken, name: &str) -> NodeClient {
    let joined = join_node(&m.api_addr, token, name, &node_password::generate())
        .await
        .unwrap();
    let store = CertStore::new(&joined.cert_pem, &joined.key_pem).unwrap();
    let transport = ClientTransport::to_masters(&joined.ca_pem, Some(store)).unwrap();
    NodeClient {
        api: Client::new(&m.api_addr, &transport).unwrap(),
        nodes: NodesClient::new(transport.channel(&m.api_addr).unwrap()),
    }
}

fn node(name: &str) -> v1::Node {
    v1::Node {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_on(name: &str, node: &str) -> Object {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n"
    );
    parse_manifest("pod.yaml", &yaml, true)
        .unwrap()
        .objects
        .remove(0)
}

fn phase(o: &Object) -> String {
    match &skiff_objects::pods::in_model(o.clone()).kind {
        Some(Body::Pod(p)) => p.status.clone().unwrap_or_default().phase,
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_reaches_only_what_is_its_own() {
    let (_dir, m) = ready_master().await.unwrap();
    let admin = m.client();
    let token = JoinToken::parse(&join_token(&m.api_addr).unwrap()).unwrap();
    let mut a = join_as(&m, &token, "node-a").await;
    let mut b = join_as(&m, &token, "node-b").await;
    for (c, name) in [(&mut a, "node-a"), (&mut b, "node-b")] {
        c.nodes
            .register(RegisterRequest {
                node: Some(node(name)),
            })
            .await
            .unwrap();
    }
    admin.create(pod_on("pod-a", "node-a")).await.unwrap();
    admin.create(pod_on("pod-b", "node-b")).await.unwrap();

    // Its own: register, heartbeats, its pods, their status, its Node.
    a.nodes
        .register(RegisterRequest {
            node: Some(node("node-a")),
        })
        .await
        .unwrap();
    let beats = tokio_stream::iter(vec![Heartbeat {
        node_name: "node-a".into(),
        usage: None,
    }]);
    a.nodes.heartbeats(beats).await.unwrap();
    a.nodes
        .watch_pods(WatchPodsRequest {
            node_name: "node-a".into(),
        })
        .await
        .unwrap();
    let status = v1::PodStatus {
        phase: "Running".into(),
        ..Default::default()
    };
    a.nodes
        .update_pod_status(UpdatePodStatusRequest {
            namespace: "default".into(),
            name: "pod-a".into(),
            status: Some(status.clone()),
            uid: String::new(),
        })
        .await
        .unwrap();
    a.api.get(Kind::Pod, "default", "pod-a").await.unwrap();
    assert_eq!(a.api.list(Kind::Node, "").await.unwrap().items.len(), 2);
    a.api.list(Kind::Service, "").await.unwrap();
    a.api.list(Kind::Endpoints, "").await.unwrap();
    // The cluster gives node-a its pod subnet; wait for that write first.
    skiff_e2e::wait_for("node-a's podCIDR", Duration::from_secs(10), || async {
        match admin.get(Kind::Node, "", "node-a").await.ok()?.kind {
            Some(Body::Node(n)) => (!n.spec?.pod_cidr.is_empty()).then_some(()),
            _ => None,
        }
    })
    .await
    .unwrap();
    let mut own = a.api.get(Kind::Node, "", "node-a").await.unwrap();
    if let Some(Body::Node(n)) = own.kind.as_mut() {
        let meta = n.metadata.get_or_insert_with(Default::default);
        meta.labels.insert("mine".into(), "yes".into());
    }
    a.api.update(own).await.unwrap();
    // ... but not its spec: the pod subnet and taints are the cluster's.
    let mut grab = a.api.get(Kind::Node, "", "node-a").await.unwrap();
    if let Some(Body::Node(n)) = grab.kind.as_mut() {
        n.spec.get_or_insert_with(Default::default).pod_cidr = "10.42.99.0/24".into();
    }
    let e = a.api.update(grab).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");

    // Another node's: refused, and nothing changes.
    let e = a
        .nodes
        .register(RegisterRequest {
            node: Some(node("node-b")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let beats = tokio_stream::iter(vec![Heartbeat {
        node_name: "node-b".into(),
        usage: None,
    }]);
    let e = a.nodes.heartbeats(beats).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = a
        .nodes
        .watch_pods(WatchPodsRequest {
            node_name: "node-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = a
        .nodes
        .update_pod_status(UpdatePodStatusRequest {
            namespace: "default".into(),
            name: "pod-b".into(),
            status: Some(status),
            uid: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut theirs = admin.get(Kind::Node, "", "node-b").await.unwrap();
    if let Some(Body::Node(n)) = theirs.kind.as_mut() {
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.unschedulable = true;
    }
    let e = a.api.update(theirs.clone()).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    let e = a.api.update_status(theirs).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    for e in [
        a.api.get(Kind::Pod, "default", "pod-b").await.unwrap_err(),
        a.api.list(Kind::Pod, "").await.unwrap_err(),
        a.api.list(Kind::Secret, "").await.unwrap_err(),
        a.api
            .delete(Kind::Pod, "default", "pod-b", "")
            .await
            .unwrap_err(),
        a.api
            .delete(Kind::Node, "", "node-b", "")
            .await
            .unwrap_err(),
        a.api.create(pod_on("sneaky", "node-a")).await.unwrap_err(),
    ] {
        assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    }

    let pod_b = admin.get(Kind::Pod, "default", "pod-b").await.unwrap();
    assert_eq!(phase(&pod_b), "Pending", "pod-b was not touched");
    assert_eq!(
        phase(&admin.get(Kind::Pod, "default", "pod-a").await.unwrap()),
        "Running"
    );
    let node_b = admin.get(Kind::Node, "", "node-b").await.unwrap();
    let Some(Body::Node(n)) = node_b.kind else {
        panic!("node-b")
    };
    assert!(!n.spec.unwrap_or_default().unschedulable);
    assert!(admin.get(Kind::Pod, "default", "sneaky").await.is_err());
    let labels = admin.get(Kind::Node, "", "node-a").await.unwrap();
    assert_eq!(
        labels.meta().labels.get("mine").map(String::as_str),
        Some("yes")
    );
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("permission denied"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_client_certificates_are_refused() {
    let (_dir, m) = ready_master().await.unwrap();
    let real = admin_credentials(&m);

    // Self-signed, claiming to be the admin.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    let self_signed = params.self_signed(&key).unwrap();
    // Signed by a CA of its own, claiming to be the admin.
    let other_ca = ClusterCa::generate().unwrap();
    let other = other_ca.issue(&Identity::Admin, &[]).unwrap();

    for (what, cert_pem, key_pem) in [
        ("self-signed", self_signed.pem(), key.serialize_pem()),
        ("another CA's", other.cert_pem, other.key_pem),
    ] {
        let store = CertStore::new(&cert_pem, &key_pem).unwrap();
        let forged = ClientTransport::to_masters(&real.ca_pem, Some(store)).unwrap();
        let client = Client::new(&m.api_addr, &forged).unwrap();
        let e = client.list(Kind::Secret, "").await.unwrap_err();
        assert_ne!(code(&e), Code::Ok, "{what}");
        assert!(
            !matches!(e, ClientError::NotFound(_)),
            "{what}: a forged certificate got an answer: {e}"
        );
        let e = client.cluster_status().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Unavailable { .. } | ClientError::Other { .. }
            ),
            "{what}: {e}"
        );
    }
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("TLS handshake refused"), "{log}");
    // The real one still works.
    m.client().list(Kind::Secret, "").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_exchange_is_rate_limited() {
    let (_dir, m) = ready_master().await.unwrap();
    let admin = admin_credentials(&m);
    let anonymous = ClientTransport::to_masters(&admin.ca_pem, None).unwrap();
    let mut join = JoinClient::new(anonymous.channel(&m.api_addr).unwrap());
    let mut refused = 0;
    for _ in 0..60 {
        if let Err(e) = join.ca_certificate(CaCertificateRequest {}).await {
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            refused += 1;
        }
    }
    assert!(refused >= 30, "only {refused} of 60 rapid calls refused");
    // Authenticated calls are not affected.
    m.client().cluster_status().await.unwrap();
    // An oversized join request is refused before it is read.
    let huge = skiff_proto::join::JoinNodeRequest {
        token_id: "abcdef".into(),
        token_secret: "0123456789abcdef".into(),
        node_name: "big".into(),
        signing_request: vec![0; 256 * 1024],
        node_password: node_password::generate(),
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let e = join.join_node(huge).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_near_its_end_is_renewed_without_a_restart() {
    if !skiff_e2e::e2e_prerequisites(&["containerd", "runc"]) {
        return;
    }
    let (_dir, m) = ready_master().await.unwrap();
    let ca = ClusterCa::from_pem(
        &std::fs::read_to_string(m.data_dir.join("tls/ca.crt")).unwrap(),
        &std::fs::read_to_string(m.data_dir.join("tls/ca.key")).unwrap(),
    )
    .unwrap();
    // A certificate with 30 days left: inside the 90-day renewal window.
    let short = ca
        .issue_for(
            &Identity::Node("renew-me".into()),
            &[skiff_security::node_server_name("renew-me")],
            Duration::from_secs(30 * 24 * 3600),
        )
        .unwrap();
    let old_serial = CertInfo::from_pem(&short.cert_pem).unwrap().serial;
    let node = skiff_e2e::agent::RuntimeNode::start(
        &m.api_addr,
        "renew-me",
        |data| {
            let tls = data.join("tls");
            std::fs::create_dir_all(&tls)?;
            std::fs::write(tls.join("ca.crt"), ca.cert_pem())?;
            std::fs::write(tls.join("node.crt"), &short.cert_pem)?;
            std::fs::write(tls.join("node.key"), &short.key_pem)?;
            Ok(())
        },
        // No token: the node must get by with the certificate it has.
        &["--token", ""],
    )
    .unwrap();
    let pid = node.agent.pid();
    let crt = node.data_dir().join("tls/node.crt");
    let renewed = skiff_e2e::wait_for("a renewed certificate", Duration::from_secs(30), || async {
        let info = CertInfo::from_pem(&std::fs::read_to_string(&crt).ok()?).ok()?;
        (info.serial != old_serial).then_some(info)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log_tail()));
    assert_eq!(renewed.identity, Some(Identity::Node("renew-me".into())));
    let left = renewed.remaining(std::time::SystemTime::now());
    assert!(left > Duration::from_secs(360 * 24 * 3600), "{left:?}");
    assert_eq!(node.agent.pid(), pid, "no restart");
    assert_eq!(mode(&node.data_dir().join("tls/node.key")), 0o600);
    // The node keeps working with its new certificate.
    skiff_e2e::agent::wait_node_ready(&m.client(), "renew-me", Duration::from_secs(30))
        .await
        .unwrap();
    // It made a node password (0600) and its Node carries only the hash.
    let password_file = node.data_dir().join("node-password");
    assert_eq!(mode(&password_file), 0o600);
    let password = std::fs::read_to_string(&password_file).unwrap();
    let stored = m.client().get(Kind::Node, "", "renew-me").await.unwrap();
    let annotations = stored.meta().annotations.clone();
    assert_eq!(
        annotations.get(node_password::ANNOTATION),
        Some(&node_password::hash(password.trim()))
    );
    assert!(!format!("{stored:?}").contains(password.trim()));
}

/// A node name belongs to the machine that first joined with it: another
/// machine holding a valid agent token cannot take the name (and with it
/// the node's identity) while its Node exists; the machine itself can
/// join again; deleting the Node hands the name on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_belongs_to_the_machine_that_joined_with_it() {
    let (_dir, m) = ready_master().await.unwrap();
    let made = token_cli(&m, &["create", "--ttl", "1h"]);
    assert!(made.status.success(), "{made:?}");
    let token = JoinToken::parse(&stdout(&made)).unwrap();

    // The first machine joins as pi-1 and registers its Node with the
    // hash of its password, as the agent does.
    let first = node_password::generate();
    let joined = join_node(&m.api_addr, &token, "pi-1", &first)
        .await
        .unwrap();
    let store = CertStore::new(&joined.cert_pem, &joined.key_pem).unwrap();
    let transport = ClientTransport::to_masters(&joined.ca_pem, Some(store)).unwrap();
    let mut nodes = NodesClient::new(transport.channel(&m.api_addr).unwrap());
    let mut pi = node("pi-1");
    pi.metadata.as_mut().unwrap().annotations.insert(
        node_password::ANNOTATION.into(),
        node_password::hash(&first),
    );
    nodes
        .register(RegisterRequest { node: Some(pi) })
        .await
        .unwrap();

    // Another machine with the same token and another password: refused,
    // and told how to free the name.
    let e = join_node(&m.api_addr, &token, "pi-1", &node_password::generate())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, JoinError::Refused { message, .. }
            if message.contains("already joined from another machine")
            && message.contains("skiff ctl delete node pi-1")),
        "{e}"
    );
    // No password, or a short one: refused as invalid.
    let e = join_node(&m.api_addr, &token, "pi-2", "short")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("node password"), "{e}");
    // The first machine itself joins again (it lost its certificate).
    let again = join_node(&m.api_addr, &token, "pi-1", &first)
        .await
        .unwrap();
    assert_eq!(
        CertInfo::from_pem(&again.cert_pem).unwrap().identity,
        Some(Identity::Node("pi-1".into()))
    );

    // Deleting the Node hands the name to whoever joins next.
    let admin = m.client();
    admin.delete(Kind::Node, "", "pi-1", "").await.unwrap();
    skiff_e2e::wait_for("pi-1 deleted", Duration::from_secs(10), || async {
        admin
            .get(Kind::Node, "", "pi-1")
            .await
            .is_err()
            .then_some(())
    })
    .await
    .unwrap();
    join_node(&m.api_addr, &token, "pi-1", &node_password::generate())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("node password differs"), "refusals are logged");
}
