//! Upgrades, end to end. A master data dir written by an earlier release
//! build (commit 776404e, `e2e/fixtures/datadir-776404e.tar.gz`; what made
//! it is in `e2e/fixtures/datadir-776404e.objects.yaml` and below) is
//! opened by this build: every object is there with its uid, the data
//! format marker is written, and new writes work. Then the procedure
//! README.md's "Upgrades" gives: three masters replaced one at a time,
//! then two agents, with the cluster healthy between steps, the workload's
//! containers running on under the same PIDs, and every object as it was.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::agent::{pods_with_app, wait_app_ready, wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::master::{MasterCluster, MasterProcess};
use skiff_e2e::{apply_yaml, e2e_prerequisites, wait_for};
use skiff_master::client::{Client, ClientError};
use skiff_master::datastore::{data_format, this_skiff};
use skiff_objects::{services, Kind, ObjectExt};
use skiff_proto::api::Object;
use skiff_proto::v1;

/// The earlier build's master data dir, `data/` inside. It was made with
/// `skiff master --data-dir data --listen 127.0.0.1:36443 --raft-listen
/// 127.0.0.1:36444 --metrics-listen none --snapshot-after-entries 20`,
/// `skiff ctl apply -f datadir-776404e.objects.yaml`, 31 scales of `web`
/// (so the log was snapshotted and purged), back to 3 replicas, SIGTERM.
const FIXTURE: &str = "fixtures/datadir-776404e.tar.gz";
/// The addresses its Raft membership (and admin.conf) records.
const FIXTURE_API: &str = "127.0.0.1:36443";
const FIXTURE_RAFT: &str = "127.0.0.1:36444";
/// Its master's id (`data/node-id`).
const FIXTURE_NODE_ID: u64 = 5_212_628_163_668_826_852;
const NAMESPACE: &str = "fixture";
const DEPLOYMENT_UID: &str = "fd89e9f6-b1a5-4361-b7e5-d1d186e59599";
/// The Deployment's resourceVersion, as that build listed it after a
/// restart.
const DEPLOYMENT_VERSION: &str = "248";
const REPLICASET: &str = "web-525wg85h82";
/// Pending: the fixture's cluster had no nodes.
const PODS: [&str; 3] = [
    "web-525wg85h82-g7m9p",
    "web-525wg85h82-kck2h",
    "web-525wg85h82-wdzzz",
];
const CLUSTER_IP: &str = "10.43.0.11";
/// `fixture-password`, in base64 as a Secret keeps it.
const PASSWORD_BASE64: &str = "Zml4dHVyZS1wYXNzd29yZA==";

/// Unpacks the fixture into `dir`; returns its data dir.
fn unpack_fixture(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive.set_preserve_permissions(true);
    archive
        .unpack(dir)
        .with_context(|| format!("unpack {} into {}", path.display(), dir.display()))?;
    Ok(dir.join("data"))
}

/// Fails, naming `addr`, when something listens there: the fixture's
/// membership records fixed ports, so the upgraded master needs them.
fn ensure_free(addr: &str) -> anyhow::Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!(
            "{addr} cannot be listened on ({e}), but the fixture's Raft membership records it, \
             so the upgraded master must listen there: find what listens (ss -ltnp), stop it, \
             and run this test again"
        ),
    }
}

async fn get(client: &Client, kind: Kind, namespace: &str, name: &str) -> anyhow::Result<Object> {
    client
        .get(kind, namespace, name)
        .await
        .with_context(|| format!("get {} {namespace}/{name}", kind.name()))
}

/// The uid of the first owner of `object` ("" without one).
fn owner_uid(object: &Object) -> &str {
    object
        .meta()
        .owner_references
        .first()
        .map_or("", |owner| owner.uid.as_str())
}

/// Sets a Deployment's replicas whatever changed since it was read,
/// retrying until a master takes the write.
async fn scale(client: &Client, namespace: &str, name: &str, replicas: i32) -> anyhow::Result<()> {
    let what = format!("{namespace}/{name} scaled to {replicas}");
    wait_for(&what, Duration::from_secs(30), || async {
        let mut deployment = client.get(Kind::Deployment, namespace, name).await.ok()?;
        skiff_objects::scale::set_replicas(&mut deployment, replicas).ok()?;
        if let Ok(meta) = deployment.meta_mut() {
            // Unconditional: the scale wins over any status write since.
            meta.resource_version.clear();
        }
        client.update(deployment).await.ok().map(drop)
    })
    .await
}

/// Moves this thread into a network namespace of its own, loopback up,
/// so the fixture's fixed ports are free whatever else runs: a sibling
/// test's ephemeral port (a connection's, or a listener's on port 0) can
/// be 36444 on the host's loopback. Threads and processes started from
/// this thread afterwards (the runtime's workers, the master) inherit the
/// namespace; it goes when they do.
fn own_network_namespace() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context(
        "unshare a network namespace for the fixture's fixed ports: this test needs root",
    )?;
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("run `ip link set lo up` in the test's network namespace")?;
    anyhow::ensure!(status.success(), "`ip link set lo up` exited with {status}");
    Ok(())
}

#[test]
fn a_data_dir_of_an_earlier_build_keeps_every_object_and_takes_writes() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["ip"]) {
        return Ok(());
    }
    own_network_namespace()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(earlier_data_dir_in_own_namespace())
}

async fn earlier_data_dir_in_own_namespace() -> anyhow::Result<()> {
    ensure_free(FIXTURE_API)?;
    ensure_free(FIXTURE_RAFT)?;
    let dir = tempfile::Builder::new().prefix("skiff-upg-").tempdir()?;
    let data = unpack_fixture(dir.path())?;
    let marker = data.join(data_format::FILE);
    assert!(!marker.exists(), "the earlier build wrote no format marker");
    // Data format 1 kept the Raft log in redb.
    let (redb_log, log_file) = (data.join("raft-log.redb"), data.join("raft-log.wal"));
    assert!(
        redb_log.exists() && !log_file.exists(),
        "not a format 1 data dir"
    );

    // Listening on the specific addresses it recorded, the master
    // advertises them, so the membership stays valid as it is.
    let mut master = MasterProcess::start_at(&data, FIXTURE_API, FIXTURE_RAFT, &[])?;
    // The API answers only once the master has renewed whatever was due
    // in tls/ and admin.conf (the fixture's certificates last a year from
    // 2026-11-30), so clients read admin.conf after that.
    wait_for("the API port", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(FIXTURE_API).await.ok()
    })
    .await
    .with_context(|| master.log_tail())?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let client = master.client();

    // Its flat admin.conf is now a kubeconfig (kubectl reads it), still
    // pointing at the same address.
    let (admin, layout) = skiff_security::Credentials::load_with_layout(&data.join("admin.conf"))?;
    assert_eq!(layout, skiff_security::CredentialLayout::Kubeconfig);
    assert_eq!(admin.api_address()?, FIXTURE_API);

    // The same one-member cluster.
    let status = client.cluster_status().await?;
    let [member] = status.members.as_slice() else {
        anyhow::bail!("not one member: {:?}", status.members);
    };
    assert_eq!(member.node_id, FIXTURE_NODE_ID);
    assert_eq!(member.api_addr, FIXTURE_API, "the recorded API address");
    assert_eq!(member.raft_addr, FIXTURE_RAFT, "the recorded Raft address");
    assert!(member.voter);
    let fixture_revision: u64 = DEPLOYMENT_VERSION.parse()?;
    assert!(status.revision >= fixture_revision, "{status:?}");

    // Every object, with its uid (the ReplicaSet's and the pods' through
    // their owners) and what it held.
    get(&client, Kind::Namespace, "", NAMESPACE).await?;
    let deployment = get(&client, Kind::Deployment, NAMESPACE, "web").await?;
    assert_eq!(deployment.meta().uid, DEPLOYMENT_UID);
    // Its controller may refresh its status once the new build leads (a
    // later resourceVersion); what the user wrote stays as it was.
    let version: u64 = deployment.meta().resource_version.parse()?;
    assert!(
        version >= fixture_revision,
        "the Deployment went back in time: {version}"
    );
    let web = skiff_objects::scale::read(&deployment)
        .with_context(|| format!("fixture/web is no Deployment: {deployment:?}"))?;
    assert_eq!(web.replicas, 3);

    let sets = client.list(Kind::ReplicaSet, NAMESPACE).await?.items;
    let names: Vec<&str> = sets.iter().map(|o| o.meta().name.as_str()).collect();
    assert_eq!(names, [REPLICASET]);
    assert_eq!(owner_uid(&sets[0]), DEPLOYMENT_UID);
    let set_uid = sets[0].meta().uid.clone();

    let pods = client.list(Kind::Pod, NAMESPACE).await?.items;
    let mut names: Vec<&str> = pods.iter().map(|o| o.meta().name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, PODS);
    for pod in &pods {
        assert_eq!(owner_uid(pod), set_uid, "{}", pod.meta().name);
    }

    let service = get(&client, Kind::Service, NAMESPACE, "web").await?;
    let Some(web) = services::read(&service) else {
        anyhow::bail!("fixture/web is no Service: {service:?}");
    };
    assert_eq!(services::cluster_ip(&web), CLUSTER_IP);
    // Its Endpoints, written in their protobuf model, read as Endpoints
    // (none of its pods had an address: no nodes); the endpoints
    // controller, reconciling them below, must find them as it would
    // write them and leave them unwritten.
    let stored = get(&client, Kind::Endpoints, NAMESPACE, "web").await?;
    let Some(endpoints) = skiff_objects::endpoints::read(&stored) else {
        anyhow::bail!("fixture/web does not read as Endpoints: {stored:?}");
    };
    assert_eq!(
        skiff_objects::endpoints::key(&endpoints),
        (NAMESPACE, "web")
    );
    let endpoints_version = stored.meta().resource_version.clone();

    // Written in its protobuf model by that build, the Secret reads with
    // its values (the client makes whatever it gets a document, so what is
    // checked is the content; the master's own reading of the protobuf
    // model is `legacy_bodies`' and the store's unit tests').
    let secret = get(&client, Kind::Secret, NAMESPACE, "creds").await?;
    let Some(creds) = skiff_objects::secrets::read(&secret) else {
        anyhow::bail!("fixture/creds does not read as a Secret: {secret:?}");
    };
    use base64::Engine;
    let password = skiff_objects::secrets::value(&creds, "password")
        .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
    assert_eq!(password.as_deref(), Some(PASSWORD_BASE64));

    // So does its Namespace, in the phase that build gave it.
    let namespace = get(&client, Kind::Namespace, "", NAMESPACE).await?;
    let phase = skiff_objects::namespaces::phase(&namespace);
    assert_eq!(phase.as_deref(), Some("Active"), "{namespace:?}");

    // The data dir is marked as this build's format.
    let text = std::fs::read_to_string(&marker).context("no marker")?;
    let format_line = format!("skiff-data-format: {}", data_format::CURRENT);
    assert!(text.lines().any(|l| l == format_line), "{text}");
    assert!(text.contains(&this_skiff()), "{text}");
    // Its Raft log was rewritten as a log file, and the redb one is gone.
    assert!(
        log_file.exists() && !redb_log.exists(),
        "the Raft log was not upgraded"
    );

    // It takes writes: a scale-up makes a fourth pod, from the same
    // ReplicaSet.
    scale(&client, NAMESPACE, "web", 4).await?;
    let pods = wait_for("a fourth web pod", Duration::from_secs(30), || async {
        let pods = client.list(Kind::Pod, NAMESPACE).await.ok()?.items;
        (pods.len() == 4).then_some(pods)
    })
    .await
    .with_context(|| master.log_tail())?;
    let added: Vec<&Object> = pods
        .iter()
        .filter(|p| !PODS.contains(&p.meta().name.as_str()))
        .collect();
    assert_eq!(added.len(), 1, "{pods:?}");
    assert_eq!(owner_uid(added[0]), set_uid, "made by the same ReplicaSet");
    let deployment = get(&client, Kind::Deployment, NAMESPACE, "web").await?;
    assert_eq!(deployment.meta().uid, DEPLOYMENT_UID);
    let version: u64 = deployment.meta().resource_version.parse()?;
    assert!(version > fixture_revision, "{version}");
    // The new pod woke the endpoints controller for `web`: the Endpoints
    // the earlier build wrote are what this one would write (no address
    // yet), so they are not rewritten.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let endpoints = get(&client, Kind::Endpoints, NAMESPACE, "web").await?;
    assert_eq!(
        endpoints.meta().resource_version,
        endpoints_version,
        "{endpoints:?}"
    );

    // Marked, it opens again as the current format, the marker untouched.
    let status = master.stop(Duration::from_secs(25))?;
    let log = master.log_tail();
    anyhow::ensure!(status.success(), "stopped with {status}\n{log}");
    let marked = std::fs::read_to_string(&marker)?;
    master.restart()?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let client = master.client();
    assert_eq!(client.list(Kind::Pod, NAMESPACE).await?.items.len(), 4);
    assert_eq!(std::fs::read_to_string(&marker)?, marked);
    Ok(())
}

const TOOLS: &[&str] = &["containerd", "runc", "ctr"];
const IMAGE: &str = "e2e/busybox:upgrade";
/// Names of the Secrets written to check that writes work; not part of
/// the workload.
const PROBE: &str = "upgrade-probe-";
/// The kinds the replacements must leave as they were: the same objects
/// with the same uids.
const KEPT: [Kind; 6] = [
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Pod,
    Kind::Service,
    Kind::Endpoints,
    Kind::Secret,
];
/// Of those, the kinds whose objects must not even be written: no spec
/// changes, and no status changes, since no pod stopped being ready.
const UNWRITTEN: [Kind; 4] = [
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Service,
    Kind::Secret,
];

/// A Deployment of four sleepers, a Service selecting them, a Secret.
fn workload() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: steady
spec:
  replicas: 4
  selector:
    matchLabels: {{app: steady}}
  template:
    metadata:
      labels: {{app: steady}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: steady
spec:
  selector: {{app: steady}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Secret
metadata:
  name: steady-creds
stringData:
  password: rolling
"#
    )
}

/// (kind, name) → (uid, resourceVersion).
type Objects = BTreeMap<(Kind, String), (String, String)>;

/// Every object of the [`KEPT`] kinds in `default`, but the probes.
async fn objects(client: &Client) -> anyhow::Result<Objects> {
    let mut all = Objects::new();
    for kind in KEPT {
        for object in client.list(kind, "default").await?.items {
            let meta = object.meta();
            if meta.name.starts_with(PROBE) {
                continue;
            }
            let key = (kind, meta.name.clone());
            all.insert(key, (meta.uid.clone(), meta.resource_version.clone()));
        }
    }
    Ok(all)
}

/// The objects once they stop changing (statuses settle after a rollout).
async fn settled(client: &Client) -> anyhow::Result<Objects> {
    let mut last = objects(client).await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = objects(client).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the objects kept changing for 30 s: {last:?}")
}

/// Every node's running containers: container id → PID.
fn task_pids(nodes: &[RuntimeNode]) -> anyhow::Result<Vec<BTreeMap<String, u32>>> {
    nodes.iter().map(RuntimeNode::task_pids).collect()
}

/// Waits until the cluster is healthy: a write (Secret `<PROBE><step>`)
/// goes through master `through`, and then, as the leader says, there are
/// three voters, one of them leading, each holding the log up to that
/// write and in touch with the leader within the last 2 s; every master
/// is ready.
async fn healthy(cluster: &MasterCluster, through: usize, step: &str) -> anyhow::Result<()> {
    let client = cluster.masters[through].client();
    let meta = v1::ObjectMeta {
        name: format!("{PROBE}{step}"),
        namespace: "default".into(),
        ..Default::default()
    };
    let probe = skiff_objects::secrets::object(meta, "Opaque", Default::default());
    let what = format!("a write through master {through}");
    wait_for(&what, Duration::from_secs(30), || async {
        match client.create(probe.clone()).await {
            // A retry of a write that was committed after all.
            Ok(_) | Err(ClientError::AlreadyExists(_)) => Some(()),
            Err(_) => None,
        }
    })
    .await
    .with_context(|| cluster.logs())?;
    let written = wait_for(
        "the leader's log index",
        Duration::from_secs(10),
        || async { client.members().await.ok().map(|m| m.last_log_index) },
    )
    .await
    .with_context(|| cluster.logs())?;
    let what = "three voters, a leader, every member caught up and in touch";
    wait_for(what, Duration::from_secs(30), || async {
        let members = client.members().await.ok()?.members;
        let voters = members.iter().filter(|m| m.voter).count();
        let leaders = members.iter().filter(|m| m.leader).count();
        let current = members.iter().all(|m| {
            m.matched_index.is_some_and(|i| i >= written)
                && m.last_contact_ms.is_some_and(|ms| ms < 2_000)
        });
        (members.len() == 3 && voters == 3 && leaders == 1 && current).then_some(())
    })
    .await
    .with_context(|| cluster.logs())?;
    for master in &cluster.masters {
        master.wait_ready(Duration::from_secs(30)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_then_agents_replaced_one_at_a_time_keep_the_workload_running() -> anyhow::Result<()>
{
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let mut cluster = MasterCluster::start(3).await?;
    // Agents know every master, as they do once they have registered.
    let servers = cluster
        .masters
        .iter()
        .map(|m| m.api_addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let image = BusyboxImage::build()?;
    let mut nodes = Vec::new();
    for name in ["upgrade-a", "upgrade-b"] {
        let node = RuntimeNode::start(
            &servers,
            name,
            |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
            &[],
        )?;
        nodes.push(node);
    }
    let client = cluster.masters[0].client();
    for node in &nodes {
        wait_node_ready(&client, &node.agent.node_name, Duration::from_secs(60))
            .await
            .with_context(|| node.log_tail())?;
    }
    let dir = tempfile::Builder::new().prefix("skiff-roll-").tempdir()?;
    let first = cluster.masters[0].api_addr.clone();
    apply_yaml(&first, dir.path(), "steady", &workload())?;
    wait_app_ready(&client, "steady", 4, Duration::from_secs(60))
        .await
        .with_context(|| format!("{}\n{}", nodes[0].log_tail(), nodes[1].log_tail()))?;
    let before = settled(&client).await?;
    let pids = task_pids(&nodes)?;
    let running: usize = pids.iter().map(BTreeMap::len).sum();
    assert_eq!(running, 4, "{pids:?}");

    // Masters first, one at a time. "The new binary" is this same build:
    // what is tested is the procedure (stop one master, start it on its
    // data dir, wait until the cluster is healthy, go on to the next),
    // which an upgrade to a newer binary follows unchanged.
    for i in 0..cluster.masters.len() {
        let status = cluster.masters[i].stop(Duration::from_secs(25))?;
        let log = cluster.masters[i].log_tail();
        anyhow::ensure!(status.success(), "master {i} stopped with {status}\n{log}");
        cluster.masters[i].restart()?;
        healthy(&cluster, i, &format!("master-{i}")).await?;
        assert_eq!(
            task_pids(&nodes)?,
            pids,
            "containers changed while master {i} was replaced"
        );
    }

    // Then the agents, one at a time, stopped as systemd stops them: a
    // restarted agent adopts the running containers, never restarts them.
    let client = cluster.masters[0].client();
    for (node, node_pids) in nodes.iter_mut().zip(&pids) {
        let logged = node.agent.log().len();
        node.agent.stop();
        node.agent.restart()?;
        let node: &RuntimeNode = node;
        let name = node.agent.node_name.as_str();
        let running = node_pids.len();
        let what = format!("{name} running again, its {running} containers adopted");
        wait_for(&what, Duration::from_secs(30), || async {
            let log = node.agent.log();
            let since = log.get(logged..)?;
            let adopted = since.matches("adopted running container").count();
            (since.contains("agent running") && adopted >= running).then_some(())
        })
        .await
        .with_context(|| node.log_tail())?;
        wait_node_ready(&client, name, Duration::from_secs(30))
            .await
            .with_context(|| node.log_tail())?;
        healthy(&cluster, 0, name).await?;
        let now = node.task_pids()?;
        assert_eq!(&now, node_pids, "{name}: containers changed");
    }

    // Everything as it was: the same containers, pods never restarted,
    // the same objects with the same uids, and the workload's own objects
    // not even written.
    wait_app_ready(&client, "steady", 4, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(task_pids(&nodes)?, pids, "containers changed");
    for pod in pods_with_app(&client, "default", "steady").await? {
        let status = pod.status.unwrap_or_default();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "{:?}", pod.metadata);
    }
    let after = objects(&client).await?;
    let names = |all: &Objects| all.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "the same objects");
    for (key, (uid, version)) in &before {
        let (uid_after, version_after) = &after[key];
        let (kind, name) = key;
        assert_eq!(uid_after, uid, "{} {name} has a new uid", kind.name());
        if UNWRITTEN.contains(kind) {
            let what = format!("{} {name} was written", kind.name());
            assert_eq!(version_after, version, "{what}");
        }
    }
    Ok(())
}
