//! The control plane with hollow nodes: real masters, nodes that speak the
//! real agent protocol (without containers). Scheduling, spreading,
//! failure detection, eviction and leader failover.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use skiff_e2e::hollow::{HollowConfig, HollowFleet, HollowNode};
use skiff_e2e::master::{ready_master, MasterCluster};
use skiff_e2e::{ctl, wait_for};
use skiff_master::client::Client;
use skiff_objects::{endpoints, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

fn apply(server: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = ctl(server, &["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn deployment(replicas: i32, cpu: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: busybox:1.36\n        resources: {{requests: {{cpu: {cpu}, memory: 64Mi}}}}\n"
    )
}

async fn pods(client: &Client) -> Vec<v1::Pod> {
    client
        .list(Kind::Pod, "default")
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| match skiff_objects::pods::in_model(o).kind {
            Some(Body::Pod(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn node_of(p: &v1::Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn running(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

async fn start_nodes(fleet: &HollowFleet, names: &[&str], config: HollowConfig) -> Vec<HollowNode> {
    let mut nodes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        nodes.push(fleet.start(n, i, config.clone()).await.unwrap());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_spread_over_three_nodes_and_run() {
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let _nodes = start_nodes(&fleet, &["pi-1", "pi-2", "pi-3"], HollowConfig::default()).await;
    apply(&m.api_addr, &deployment(3, "100m"));
    let client = m.client();
    let placed = wait_for("3 running pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 3 && p.iter().all(running)).then_some(p)
        }
    })
    .await
    .unwrap();
    let nodes: BTreeSet<String> = placed.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 3, "replicas not spread: {nodes:?}");
    let out = String::from_utf8_lossy(&ctl(&m.api_addr, &["get", "pods", "-o", "wide"]).stdout)
        .into_owned();
    assert!(out.contains("Running") && out.contains("pi-1"), "{out}");
    wait_for("deployment 3/3 ready", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let d = client.get(Kind::Deployment, "default", "web").await.ok()?;
            match skiff_objects::legacy_bodies::cut_to_model(d).ok()?.kind {
                Some(Body::Deployment(d)) => (d.status?.ready_replicas == 3).then_some(()),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_says_why_and_runs_once_capacity_appears() {
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let small = HollowConfig {
        cpu: "1".into(),
        ..Default::default()
    };
    let _nodes = start_nodes(&fleet, &["small"], small).await;
    apply(&m.api_addr, &deployment(1, "2"));
    let client = m.client();
    let message = wait_for("PodScheduled=False", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await.into_iter().next()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.r#type == "PodScheduled")?;
            (c.status == "False").then_some(c.message)
        }
    })
    .await
    .unwrap();
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
    let _big = fleet
        .start(
            "big",
            1,
            HollowConfig {
                cpu: "8".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p = wait_for(
        "the pod to run on the big node",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let p = pods(&client).await.into_iter().next()?;
                running(&p).then_some(p)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(node_of(&p), "big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_moves_its_pods_elsewhere() {
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let mut nodes = start_nodes(&fleet, &["a", "b", "c"], HollowConfig::default()).await;
    apply(&m.api_addr, &deployment(6, "100m"));
    let client = m.client();
    wait_for("6 running pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 6 && p.iter().all(running)).then_some(())
        }
    })
    .await
    .unwrap();
    let before: BTreeMap<String, String> = pods(&client)
        .await
        .iter()
        .map(|p| (p.metadata.as_ref().unwrap().name.clone(), node_of(p)))
        .collect();
    let victims: Vec<&String> = before
        .iter()
        .filter(|(_, n)| *n == "c")
        .map(|(p, _)| p)
        .collect();
    assert!(!victims.is_empty(), "nothing ran on c: {before:?}");

    let killed_at = std::time::Instant::now();
    nodes[2].kill();
    wait_for("node c NotReady", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let n = client.get(Kind::Node, "", "c").await.ok()?;
            let Some(Body::Node(n)) = n.kind else {
                return None;
            };
            let ready = n
                .status?
                .conditions
                .into_iter()
                .find(|c| c.r#type == "Ready")?;
            (ready.status == "Unknown").then_some(())
        }
    })
    .await
    .unwrap();
    let detected = killed_at.elapsed();
    let after = wait_for("6 running pods on a and b", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 6 && p.iter().all(|p| running(p) && node_of(p) != "c")).then_some(p)
        }
    })
    .await
    .unwrap();
    let moved = killed_at.elapsed();
    for v in victims {
        assert!(
            after
                .iter()
                .all(|p| &p.metadata.as_ref().unwrap().name != v),
            "{v} is still there"
        );
    }
    assert!(
        detected <= Duration::from_secs(7),
        "NotReady after {detected:?}"
    );
    assert!(
        moved <= Duration::from_secs(20),
        "pods moved after {moved:?}"
    );
    eprintln!("detected in {detected:?}, pods running elsewhere after {moved:?}");

    // The node comes back: Ready again, untainted, and gets no old pods back.
    let revived = fleet.start("c", 2, HollowConfig::default()).await.unwrap();
    wait_for("node c Ready again", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let n = client.get(Kind::Node, "", "c").await.ok()?;
            let Some(Body::Node(n)) = n.kind else {
                return None;
            };
            let tainted = n
                .spec?
                .taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable");
            let ready = n
                .status?
                .conditions
                .into_iter()
                .any(|c| c.r#type == "Ready" && c.status == "True");
            (ready && !tainted).then_some(())
        }
    })
    .await
    .unwrap();
    drop(revived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_scale_up_ends_with_exactly_the_replicas() {
    let mut cluster = MasterCluster::start(3).await.unwrap();
    let addrs: Vec<String> = cluster.masters.iter().map(|m| m.api_addr.clone()).collect();
    let fleet = HollowFleet::new(addrs.clone());
    let _nodes = start_nodes(&fleet, &["n1", "n2", "n3"], HollowConfig::default()).await;
    let leader = cluster.leader().await.unwrap();
    let other = addrs[(leader + 1) % 3].clone();
    apply(&other, &deployment(2, "10m"));
    let client = skiff_e2e::credentials::admin_client(&other).unwrap();
    wait_for("2 running pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 2 && p.iter().all(running)).then_some(())
        }
    })
    .await
    .unwrap();
    let out = ctl(&other, &["scale", "deploy/web", "--replicas", "40"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.masters[leader].kill();
    wait_for(
        "40 running pods after failover",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let p = pods(&client).await;
                (p.len() == 40 && p.iter().all(running)).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    // And it stays at exactly 40: no duplicates from the old leader's work.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pods(&client).await.len(), 40);
    }
    let sets = client
        .list(Kind::ReplicaSet, "default")
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_ready_pods_a_service_selects() {
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let _nodes = start_nodes(&fleet, &["a", "b"], HollowConfig::default()).await;
    apply(
        &m.api_addr,
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
            deployment(3, "10m")
        ),
    );
    let client = m.client();
    let ips = wait_for("3 endpoint addresses", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let e = client.get(Kind::Endpoints, "default", "web").await.ok()?;
            let e = endpoints::read(&e)?;
            let subset = endpoints::subsets(&e).first()?;
            let ready = endpoints::ready(subset);
            let port = endpoints::ports(subset).first()?.port;
            (ready.len() == 3 && port == 8080)
                .then(|| ready.iter().map(|a| a.ip.clone()).collect::<BTreeSet<_>>())
        }
    })
    .await
    .unwrap();
    let pod_ips: BTreeSet<String> = pods(&client)
        .await
        .iter()
        .map(|p| p.status.as_ref().unwrap().pod_ip.clone())
        .collect();
    assert_eq!(ips, pod_ips);
    // Scaling down shrinks the Endpoints; deleting the Service removes them.
    ctl(&m.api_addr, &["scale", "deploy/web", "--replicas", "1"]);
    wait_for("1 endpoint address", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let e = client.get(Kind::Endpoints, "default", "web").await.ok()?;
            let e = endpoints::read(&e)?;
            (endpoints::ready(endpoints::subsets(&e).first()?).len() == 1).then_some(())
        }
    })
    .await
    .unwrap();
    ctl(&m.api_addr, &["delete", "svc", "web"]);
    wait_for("endpoints to go", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            client
                .get(Kind::Endpoints, "default", "web")
                .await
                .is_err()
                .then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_drain_describe_and_watch_work_like_kubectl() {
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let _nodes = start_nodes(&fleet, &["a", "b"], HollowConfig::default()).await;
    apply(&m.api_addr, &deployment(4, "10m"));
    let client = m.client();
    wait_for("4 running pods", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 4 && p.iter().all(running)).then_some(())
        }
    })
    .await
    .unwrap();

    // get -w prints a row for each change.
    let mut watcher = skiff_e2e::ctl_command(&m.api_addr)
        .args(["get", "pods", "-w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let out = ctl(&m.api_addr, &["cordon", "a"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node/a cordoned\n");
    let nodes = String::from_utf8_lossy(&ctl(&m.api_addr, &["get", "nodes"]).stdout).into_owned();
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");

    let out = ctl(&m.api_addr, &["drain", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node/a drained"));
    let placed = wait_for("4 running pods on b", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let p = pods(&client).await;
            (p.len() == 4 && p.iter().all(|p| running(p) && node_of(p) == "b")).then_some(p)
        }
    })
    .await
    .unwrap();

    let name = placed[0].metadata.as_ref().unwrap().name.clone();
    let text =
        String::from_utf8_lossy(&ctl(&m.api_addr, &["describe", "pod", &name]).stdout).into_owned();
    assert!(text.contains("Node:           b"), "{text}");
    assert!(text.contains("Controlled By:  ReplicaSet/web-"), "{text}");
    assert!(text.contains("Ready           True"), "{text}");
    let text = String::from_utf8_lossy(&ctl(&m.api_addr, &["describe", "deploy", "web"]).stdout)
        .into_owned();
    assert!(
        text.contains("4 desired | 4 updated | 4 total | 4 available"),
        "{text}"
    );
    assert!(text.contains("NewReplicaSetAvailable"), "{text}");

    let out = ctl(&m.api_addr, &["uncordon", "a"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node/a uncordoned\n");

    watcher.kill().unwrap();
    let output = watcher.wait_with_output().unwrap();
    let rows = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(rows.starts_with("NAME"), "{rows}");
    // The drained pods' replacements appeared as rows after the header.
    assert!(rows.lines().count() > 5, "{rows}");
    assert!(
        rows.contains("Pending") || rows.contains("Running"),
        "{rows}"
    );
}
