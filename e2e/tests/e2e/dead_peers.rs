//! A client whose host goes away without a word, as a node does when its
//! plug is pulled, is let go by the master: two watchers in a test host
//! (`skiff ctl get -w` over gRPC, kubectl's `get -w` over the REST API)
//! hold their connections to a real `skiff master` on the underlay; the
//! host's link is cut, so they never close them; the master's side of
//! both connections must be gone within `DEAD_PEER_AFTER` of the cut (and
//! a margin), found dead by the kernel's keepalive probes, where before it
//! held idle watches for ever.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::credentials::admin_conf;
use skiff_e2e::kube_clients::{kubectl, KubectlProcess, KubectlVersion};
use skiff_e2e::master::MasterProcess;
use skiff_e2e::test_hosts::{TestHost, Underlay};
use skiff_e2e::{e2e_prerequisites, skiff_bin};
use skiff_security::listener::DEAD_PEER_AFTER;

/// Starts a client in a test host, in the background (stopped by its own
/// PID when dropped). `ip netns exec` execs the program: the PID is the
/// client's.
fn watcher(
    host: &TestHost,
    program: &std::path::Path,
    args: &[&str],
    log_dir: &std::path::Path,
) -> anyhow::Result<KubectlProcess> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &host.netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    KubectlProcess::spawn(command, log_dir)
}

/// The master's established connections from `client_ip` to `server`
/// (`ip:port`), as `ss` lists them in the master's namespace.
fn connections(server: &str, client_ip: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            "src",
            server,
            "dst",
            client_ip,
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_clients_idle_watches_are_closed_by_the_master() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["ip", "ss"]) {
        return Ok(());
    }
    let Some(kubectl) = kubectl(KubectlVersion::V1_35) else {
        return Ok(());
    };
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let dir = tempfile::Builder::new().prefix("skiff-dead-").tempdir()?;
    let master = MasterProcess::start_on(&dir.path().join("master"), &underlay.gateway(), &[])?;
    master.wait_ready(Duration::from_secs(30)).await?;
    let api = master.api_addr.clone();
    let conf = admin_conf(&api)?;
    let conf = conf.to_str().expect("utf-8 path");
    let cache = dir.path().join("kubectl-cache");
    let watchers = [
        watcher(
            &host,
            &skiff_bin(),
            &[
                "ctl", "--server", &api, "--config", conf, "get", "pods", "-w",
            ],
            dir.path(),
        )?,
        watcher(
            &host,
            &kubectl,
            &[
                "--kubeconfig",
                conf,
                "--cache-dir",
                cache.to_str().expect("utf-8 path"),
                "get",
                "pods",
                "-w",
            ],
            dir.path(),
        )?,
    ];
    let outputs = || {
        format!(
            "skiff ctl: {}\nkubectl: {}\nmaster: {}",
            watchers[0].output(),
            watchers[1].output(),
            master.log_tail()
        )
    };

    // Both watch, each over a connection of its own (kubectl's discovery
    // connections may come and go: wait for exactly the two that stay).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = connections(&api, &host.ip)?;
        if open.len() == 2 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the two watches did not settle on two connections: {open:?}\n{}",
            outputs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = connections(&api, &host.ip)?;
    anyhow::ensure!(
        before.len() == 2,
        "two watch connections before the cut: {before:?}\n{}",
        outputs()
    );

    // The plug is pulled: the host answers nothing from now on, and closes
    // nothing.
    let cut = Command::new("ip")
        .args(["-n", &host.netns, "link", "set", "eth0", "down"])
        .output()?;
    anyhow::ensure!(
        cut.status.success(),
        "cut the host's link: {}",
        String::from_utf8_lossy(&cut.stderr)
    );
    let cut_at = Instant::now();
    let limit = DEAD_PEER_AFTER + Duration::from_secs(20);
    loop {
        let open = connections(&api, &host.ip)?;
        if open.is_empty() {
            break;
        }
        anyhow::ensure!(
            cut_at.elapsed() < limit,
            "the master still holds {} connection(s) of a host cut off {:?} ago \
             (dead peers are let go after {DEAD_PEER_AFTER:?}): {open:?}\n{}",
            open.len(),
            cut_at.elapsed(),
            outputs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "both connections closed {:?} after the cut",
        cut_at.elapsed()
    );

    // The master goes on serving the clients it can still reach.
    let client = master.client();
    client
        .list(skiff_objects::Kind::Pod, "default")
        .await
        .map_err(|e| anyhow::anyhow!("list after the cut: {e}\n{}", outputs()))?;
    drop(watchers);
    drop(underlay);
    Ok(())
}
