//! Defaults that work on a LAN. `skiff server` with no address flags, in a
//! netns test host, listens on every address and advertises the address
//! of its default route's interface, so an agent in another test host
//! joins it and learns the cluster network from it (nobody repeats the
//! ranges on every node). A server restarted at another address points
//! its admin.conf and its Raft membership at the new one. An agent that
//! cannot join says so to systemd and gives up at its deadline.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_node_ready, RuntimeNode};
use skiff_e2e::credentials::{admin_client, register_master};
use skiff_e2e::server::ServerProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::{e2e_prerequisites, free_port, skiff_bin, wait_for};
use skiff_master::client::Client;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_security::Credentials;

const TOOLS: &[&str] = &["containerd", "runc", "ctr", "ip", "nsenter", "nft"];
/// The API port `skiff server` listens on unless told otherwise.
const API_PORT: u16 = 6443;
/// The Raft port, likewise.
const RAFT_PORT: u16 = 6444;

/// The address the `server:` of the server's admin.conf names
/// (`HOST:PORT`, from its `https://HOST:PORT`).
fn admin_conf_server(server: &ServerProcess) -> anyhow::Result<String> {
    let path = server.master_dir().join("admin.conf");
    Ok(Credentials::load(&path)?.api_address()?)
}

/// The (API, Raft) addresses of every member, as `client`'s master knows
/// them.
async fn members(client: &Client) -> anyhow::Result<Vec<(String, String)>> {
    let status = client.cluster_status().await?;
    Ok(status
        .members
        .into_iter()
        .map(|m| (m.api_addr, m.raft_addr))
        .collect())
}

/// The InternalIP and `spec.podCIDR` of node `name`.
async fn node_addresses(client: &Client, name: &str) -> anyhow::Result<(String, String)> {
    let Some(Body::Node(node)) = client.get(Kind::Node, "", name).await?.kind else {
        anyhow::bail!("{name} is not a node");
    };
    let internal_ip = node
        .status
        .unwrap_or_default()
        .addresses
        .into_iter()
        .find(|a| a.r#type == "InternalIP")
        .map(|a| a.address)
        .unwrap_or_default();
    Ok((internal_ip, node.spec.unwrap_or_default().pod_cidr))
}

/// Runs `nft list table ip skiff` inside `host`.
fn skiff_table(host: &TestHost) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", host.netns.as_str()])
        .args(["nft", "list", "table", "ip", "skiff"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft list table ip skiff in {}: {}",
        host.netns,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_another_host_joins_a_default_server_and_learns_the_cluster_network(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let server_host = underlay.add_host(2)?;
    let agent_host = underlay.add_host(3)?;
    let dir = tempfile::Builder::new().prefix("skiff-lan-").tempdir()?;
    // No --listen, --advertise-*: only ranges other than the defaults, for
    // the agent to learn.
    let server = ServerProcess::start_in_host(
        &server_host,
        &dir.path().join("server"),
        &[
            "--node-name",
            "lan-server",
            "--cluster-cidr",
            "10.150.0.0/16",
            "--service-cidr",
            "10.151.0.0/16",
        ],
    )?;
    let api = format!("{}:{API_PORT}", server_host.ip);
    register_master(&api, &server.master_dir());
    let client = admin_client(&api).with_context(|| server.log_tail())?;
    wait_node_ready(&client, "lan-server", Duration::from_secs(60))
        .await
        .with_context(|| server.log_tail())?;
    // It advertises its host's address, not loopback: to clients and to
    // Raft.
    assert_eq!(admin_conf_server(&server)?, api);
    let raft = format!("{}:{RAFT_PORT}", server_host.ip);
    assert_eq!(members(&client).await?, [(api.clone(), raft)]);

    // An agent on another host, told only the server's address (and a
    // token): no --cluster-cidr, --service-cidr or --cluster-dns.
    let node = RuntimeNode::start_in_host(&api, &agent_host, |_| Ok(()))?;
    let name = node.agent.node_name.clone();
    wait_node_ready(&client, &name, Duration::from_secs(60))
        .await
        .with_context(|| format!("{}\n{}", node.log_tail(), server.log_tail()))?;
    // Ready comes with registering; the pod subnet a moment later.
    let (internal_ip, pod_cidr) = wait_for("a pod subnet", Duration::from_secs(30), || async {
        let (ip, cidr) = node_addresses(&client, &name).await.ok()?;
        (!cidr.is_empty()).then_some((ip, cidr))
    })
    .await?;
    assert_eq!(internal_ip, agent_host.ip);
    assert!(pod_cidr.starts_with("10.150."), "{pod_cidr}");

    // What it learned is used: traffic leaving the learned cluster CIDR
    // is masqueraded, the learned service CIDR is refused unless
    // translated ...
    let table = wait_for("the nftables table", Duration::from_secs(30), || async {
        skiff_table(&agent_host).ok()
    })
    .await
    .with_context(|| node.log_tail())?;
    assert!(table.contains("10.150.0.0/16"), "{table}");
    assert!(table.contains("10.151.0.0/16"), "{table}");
    assert!(!table.contains("10.42.0.0/16"), "{table}");
    // ... and kept for restarts without a master.
    let kept = std::fs::read_to_string(node.data_dir().join("network/cluster.json"))?;
    let kept: serde_json::Value = serde_json::from_str(&kept)?;
    assert_eq!(kept["cluster_cidr"]["net"], "10.150.0.0", "{kept}");
    assert_eq!(kept["service_cidr"]["net"], "10.151.0.0", "{kept}");
    assert_eq!(kept["cluster_dns"], "10.151.0.10", "{kept}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_at_another_address_moves_its_admin_conf_and_membership(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(TOOLS) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-move-").tempdir()?;
    let args = ["--node-name", "mover", "--pod-network", "none"];
    let mut server = ServerProcess::start_in_host(&host, &dir.path().join("server"), &args)?;
    let api = format!("{}:{API_PORT}", host.ip);
    register_master(&api, &server.master_dir());
    let client = admin_client(&api).with_context(|| server.log_tail())?;
    wait_node_ready(&client, "mover", Duration::from_secs(60))
        .await
        .with_context(|| server.log_tail())?;
    assert_eq!(admin_conf_server(&server)?, api);

    // The machine gets another address while skiff is down.
    server.stop();
    let moved = underlay.readdress_host(&host, 3)?;
    server.restart()?;
    let new_api = format!("{}:{API_PORT}", moved.ip);
    let new_raft = format!("{}:{RAFT_PORT}", moved.ip);
    register_master(&new_api, &server.master_dir());

    // admin.conf is rewritten to the new address, and works as it is:
    // `skiff ctl` told nothing but the file reaches the cluster.
    let admin_conf = server.master_dir().join("admin.conf");
    let ctl_nodes = || {
        Command::new(skiff_bin())
            .arg("ctl")
            .arg("--config")
            .arg(&admin_conf)
            .args(["get", "nodes"])
            .env_remove("SKIFF_SERVER")
            .stdin(Stdio::null())
            .output()
    };
    wait_for("ctl via admin.conf", Duration::from_secs(60), || async {
        let out = ctl_nodes().ok()?;
        let listed = String::from_utf8_lossy(&out.stdout).contains("mover");
        (out.status.success() && listed).then_some(())
    })
    .await
    .with_context(|| server.log_tail())?;
    assert_eq!(admin_conf_server(&server)?, new_api);

    // The one-member cluster records the new addresses, and the node
    // re-registers with its new InternalIP.
    let client = admin_client(&new_api)?;
    wait_for("the new membership", Duration::from_secs(30), || async {
        let now = members(&client).await.ok()?;
        (now == [(new_api.clone(), new_raft.clone())]).then_some(())
    })
    .await
    .with_context(|| server.log_tail())?;
    wait_for("the node's new IP", Duration::from_secs(30), || async {
        let (internal_ip, _) = node_addresses(&client, "mover").await.ok()?;
        (internal_ip == moved.ip).then_some(())
    })
    .await
    .with_context(|| server.log_tail())?;
    wait_node_ready(&client, "mover", Duration::from_secs(30))
        .await
        .with_context(|| server.log_tail())?;
    Ok(())
}

/// The datagrams sent to `socket` so far.
fn datagrams(socket: &UnixDatagram) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

#[test]
fn an_agent_that_cannot_join_tells_systemd_and_gives_up_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    // Nothing listens here.
    let master = format!("127.0.0.1:{}", free_port());
    let token = format!("K10{}::abc123.0123456789abcdef", "0".repeat(64));
    let data_dir = dir.path().join("agent");
    let started = Instant::now();
    let out = Command::new(skiff_bin())
        .args(["agent", "--server", &master, "--token", &token])
        .args(["--node-name", "lonely", "--join-timeout", "2s"])
        .args(["--metrics-listen", "none", "--pod-network", "none"])
        .arg("--data-dir")
        .arg(&data_dir)
        // Not the machine's /etc/skiff/config.yaml.
        .env("SKIFF_CONFIG_FILE", dir.path().join("absent.yaml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("SKIFF_SERVER")
        .env_remove("SKIFF_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
    assert!(stderr.contains("gave up after 2s"), "{stderr}");
    let why = format!("could not join the cluster through {master}");
    assert!(stderr.contains(&why), "{stderr}");
    assert!(stderr.contains("--join-timeout"), "{stderr}");
    let said = datagrams(&socket);
    let joining = format!("STATUS=joining {master}");
    assert!(said.iter().any(|d| d.starts_with(&joining)), "{said:?}");
    assert!(!said.iter().any(|d| d == "READY=1"), "{said:?}");
}
