//! Cluster DNS as pods see it: `skiff server` (a master and an agent in one
//! process, the agent with its own containerd and the pod network) inside a
//! netns test host, told to take its upstream resolvers from a resolv.conf
//! naming a tiny DNS server the test runs on that host's loopback (never a
//! real outside address). A busybox pod looks up, by the cluster DNS
//! address its resolv.conf names: a Service, a headless Service and its
//! StatefulSet-style member (`hostname`/`subdomain`), a named port's SRV
//! record, a clusterIP's PTR record, an ExternalName (followed to the tiny
//! server), `kubernetes.default`, an outside name (forwarded) and a name
//! nobody has (NXDOMAIN, never forwarded). It fetches `http://web/` by
//! short name through its search path, reaches the API at
//! `kubernetes.default:443`, and has `KUBERNETES_SERVICE_HOST` in its
//! environment.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_e2e::server::{NodeServer, ServerProcess};
use skiff_e2e::test_hosts::Underlay;
use skiff_e2e::{apply_yaml, ctl, e2e_prerequisites, wait_for};
use skiff_master::client::Client;
use skiff_objects::{services, Kind};
use skiff_proto::api::object::Kind as Body;

/// The busybox image, imported by the agent from its images dir.
const IMAGE: &str = "dns/busybox:1";
/// How long anything asynchronous (a pod Running, an answer) may take.
const SETTLE: Duration = Duration::from_secs(90);
/// What the tiny upstream answers for every name under `outside.test`.
const OUTSIDE_ADDRESS: &str = "192.0.2.77";

/// A DNS server on a test host's loopback, port 53: A questions about
/// names under `outside.test` get [`OUTSIDE_ADDRESS`], other types under
/// it no answer, everything else NXDOMAIN. It records every name asked.
struct TinyUpstream {
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The answer to `query` and the name it asked, if it is a question.
fn tiny_answer(query: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = usize::from(*query.get(at)?);
        if length == 0 {
            break;
        }
        let label = query.get(at + 1..at + 1 + length)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + length;
    }
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question = query.get(12..at + 5)?;
    let name = labels.join(".");
    let ours = name == "outside.test" || name.ends_with(".outside.test");
    let address = ours && qtype == 1;
    let mut reply = query.get(..2)?.to_vec();
    let flags: u16 = if ours { 0x8180 } else { 0x8183 };
    reply.extend_from_slice(&flags.to_be_bytes());
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&u16::from(address).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if address {
        // The question's name, A, IN, TTL 60, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
    }
    Some((name, reply))
}

impl TinyUpstream {
    /// Starts it on 127.0.0.1:53 inside network namespace `netns`.
    async fn start(netns: &str) -> anyhow::Result<TinyUpstream> {
        let path = PathBuf::from(format!("/run/netns/{netns}"));
        let socket = skiff_agent::network::netns::run_in(path, || -> anyhow::Result<UdpSocket> {
            Ok(UdpSocket::bind("127.0.0.1:53")?)
        })
        .await
        .context("binding the tiny upstream in the test host")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (names, stopped) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                if let Some((name, reply)) = tiny_answer(&buffer[..n]) {
                    names.lock().unwrap_or_else(|p| p.into_inner()).push(name);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Ok(TinyUpstream {
            asked,
            stop,
            thread: Some(thread),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TinyUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: @IMAGE@
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /w && echo page-web > /w/index.html && exec httpd -f -p 8080 -h /w"]
    ports: [{containerPort: 8080, name: http}]
"#;

const WEB_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n";

/// A StatefulSet member as its controller makes it: `hostname` and
/// `subdomain` naming the headless Service.
const DB_0: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: @IMAGE@
    imagePullPolicy: Never
    command: ["sh", "-c", "exec httpd -f -p 8080 -h /www"]
"#;

const DB_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{name: http, port: 8080}]\n";

const EXT_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: ExternalName\n  externalName: db.outside.test\n";

/// The client: its environment and resolv.conf once, then every lookup
/// again and again, each after a `== <what>` line.
const CLIENT: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: @IMAGE@
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      echo "env KUBERNETES_SERVICE_HOST=$KUBERNETES_SERVICE_HOST WEB_SERVICE_HOST=$WEB_SERVICE_HOST"
      echo "== resolv.conf"; cat /etc/resolv.conf
      while true; do
        echo "== web"; nslookup web.default.svc.cluster.local 2>&1
        echo "== db-0"; nslookup db-0.db.default.svc.cluster.local 2>&1
        echo "== db"; nslookup db.default.svc.cluster.local 2>&1
        echo "== srv"; nslookup -type=srv _http._tcp.web.default.svc.cluster.local 2>&1
        echo "== ptr"; nslookup "$WEB_SERVICE_HOST" 2>&1
        echo "== ext"; nslookup ext.default.svc.cluster.local 2>&1
        echo "== kubernetes"; nslookup kubernetes.default.svc.cluster.local 2>&1
        echo "== outside"; nslookup www.outside.test 2>&1
        echo "== missing"; nslookup nope.default.svc.cluster.local 2>&1
        echo "== fetch"; timeout 5 wget -q -O - http://web/ 2>&1
        echo "== api"; echo "api-out: $(timeout 5 wget -q -O - http://kubernetes.default:443/ 2>&1)"
        echo "== end"
        sleep 2
      done
"#;

/// Whether some `== <what>` section of `log` contains `needle`.
fn section_has(log: &str, what: &str, needle: &str) -> bool {
    let heading = format!("{what}\n");
    log.split("== ")
        .filter_map(|s| s.strip_prefix(heading.as_str()))
        .any(|s| s.contains(needle))
}

async fn service_ip(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let object = client.get(Kind::Service, namespace, name).await?;
    match services::read(&object) {
        Some(s) => Ok(services::cluster_ip(&s).to_owned()),
        None => anyhow::bail!("{namespace}/{name} is not a Service: {object:?}"),
    }
}

async fn running_ip(client: &Client, name: &str) -> anyhow::Result<String> {
    wait_for(&format!("{name} Running"), SETTLE, || async {
        match skiff_objects::pods::in_model(client.get(Kind::Pod, "default", name).await.ok()?).kind
        {
            Some(Body::Pod(p)) => {
                let s = p.status?;
                (s.phase == "Running" && !s.pod_ip.is_empty()).then_some(s.pod_ip)
            }
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_find_services_by_name_through_their_nodes_dns() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["containerd", "runc", "ctr", "ip", "nsenter", "nft"]) {
        return Ok(());
    }
    let mut underlay = Underlay::new()?;
    let host = underlay.add_host(2)?;
    let upstream = TinyUpstream::start(&host.netns).await?;
    let dir = tempfile::Builder::new().prefix("skiff-dns-").tempdir()?;
    // The node's resolvers: the tiny upstream on its loopback.
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.1\nsearch outside.test\n")?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("agent/images"))?;
    BusyboxImage::build()?.write_docker_archive(&data.join("agent/images/busybox.tar"), IMAGE)?;
    let resolv_conf = resolv_conf.display().to_string();
    let NodeServer {
        process: server,
        api,
        client,
    } = ServerProcess::start_node_in_host(
        &host,
        &data,
        "solo",
        &["--resolv-conf", &resolv_conf],
        SETTLE,
    )
    .await?;

    // The built-in Services: the API at the range's first address, DNS at
    // its tenth.
    let api_ip = wait_for("the kubernetes Service", SETTLE, || async {
        service_ip(&client, "default", "kubernetes").await.ok()
    })
    .await?;
    assert_eq!(api_ip, "10.43.0.1");
    assert_eq!(
        service_ip(&client, "kube-system", "kube-dns").await?,
        "10.43.0.10"
    );

    let image = |yaml: &str| yaml.replace("@IMAGE@", IMAGE);
    for (name, yaml) in [
        ("web-svc", WEB_SERVICE.to_owned()),
        ("db-svc", DB_SERVICE.to_owned()),
        ("ext-svc", EXT_SERVICE.to_owned()),
        ("web", image(WEB)),
        ("db-0", image(DB_0)),
    ] {
        apply_yaml(&api, dir.path(), name, &yaml)?;
    }
    let web_ip = service_ip(&client, "default", "web").await?;
    running_ip(&client, "web")
        .await
        .with_context(|| server.log_tail())?;
    let db_ip = running_ip(&client, "db-0")
        .await
        .with_context(|| server.log_tail())?;
    // The agent learns of the Services within a moment (from its watch
    // events, 100 ms after a change); the client's variables are made
    // when it starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    apply_yaml(&api, dir.path(), "client", &image(CLIENT))?;

    let expected = [
        ("resolv.conf", "nameserver 10.43.0.10".to_owned()),
        // (then the node's search domains: this one's, or those behind a
        // systemd-resolved stub if the machine has one)
        (
            "resolv.conf",
            "search default.svc.cluster.local svc.cluster.local cluster.local".to_owned(),
        ),
        ("resolv.conf", "options ndots:5".to_owned()),
        ("web", format!("Address: {web_ip}")),
        ("db-0", format!("Address: {db_ip}")),
        ("db", format!("Address: {db_ip}")),
        ("srv", "80 web.default.svc.cluster.local".to_owned()),
        ("ptr", "name = web.default.svc.cluster.local".to_owned()),
        ("ext", "db.outside.test".to_owned()),
        ("ext", format!("Address: {OUTSIDE_ADDRESS}")),
        ("kubernetes", format!("Address: {api_ip}")),
        ("outside", format!("Address: {OUTSIDE_ADDRESS}")),
        ("missing", "NXDOMAIN".to_owned()),
        ("fetch", "page-web".to_owned()),
        // The API answers a plain-HTTP request on its TLS port by hanging
        // up: the name was found and the connection made.
        ("api", "api-out: wget: ".to_owned()),
    ];
    let client_log = || {
        let out = ctl(&api, &["logs", "client"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let missing = |log: &str| -> Vec<String> {
        expected
            .iter()
            .filter(|(what, needle)| !section_has(log, what, needle))
            .map(|(what, needle)| format!("{what}: {needle}"))
            .collect()
    };
    let waited = wait_for("every answer in the client's log", SETTLE, || async {
        let log = client_log();
        missing(&log).is_empty().then_some(log)
    })
    .await;
    let log = match waited {
        Ok(log) => log,
        Err(e) => {
            let log = client_log();
            anyhow::bail!(
                "{e}; missing {:?}\nclient's log:\n{log}\nserver's log:\n{}",
                missing(&log),
                server.log_tail()
            );
        }
    };
    assert!(
        log.contains(&format!(
            "env KUBERNETES_SERVICE_HOST={api_ip} WEB_SERVICE_HOST={web_ip}"
        )),
        "{log}"
    );
    for refused in ["bad address", "can't connect"] {
        assert!(!section_has(&log, "api", refused), "{log}");
    }
    // The upstream was asked the outside names, and never a cluster one.
    let asked = upstream.asked();
    assert!(asked.iter().any(|n| n == "www.outside.test"), "{asked:?}");
    assert!(asked.iter().any(|n| n == "db.outside.test"), "{asked:?}");
    let leaked: Vec<&String> = asked
        .iter()
        .filter(|n| n.ends_with("cluster.local") || n.ends_with("in-addr.arpa"))
        .collect();
    assert!(leaked.is_empty(), "forwarded cluster names: {leaked:?}");
    Ok(())
}

#[test]
fn the_tiny_upstream_answers_as_it_says() {
    // www.outside.test A, id 0x1234, one question.
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["www", "outside", "test"] {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let (name, reply) = tiny_answer(&query).unwrap();
    assert_eq!(name, "www.outside.test");
    assert_eq!(&reply[..2], &[0x12, 0x34]);
    assert_eq!(&reply[6..8], &[0, 1], "one answer");
    assert_eq!(&reply[reply.len() - 4..], &[192, 0, 2, 77]);
    let mut other = query.clone();
    // www.elsewhe.test
    other[17..24].copy_from_slice(b"elsewhe");
    let (_, nx) = tiny_answer(&other).unwrap();
    assert_eq!(nx[3] & 0x0f, 3, "NXDOMAIN");
    assert!(tiny_answer(&query[..14]).is_none());
}
