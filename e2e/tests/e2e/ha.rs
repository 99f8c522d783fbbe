//! High availability under load: three real masters, hollow nodes, masters
//! killed with SIGKILL while both cores are busy. The cluster must converge
//! to exactly the wanted pods each time, lose no acknowledged write, and
//! every read and write through any master must be linearizable (checked
//! with stateright's linearizability tester, as etcd's robustness tests
//! check theirs with porcupine).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::cpu_load::CpuLoad;
use skiff_e2e::hollow::{HollowConfig, HollowFleet, HollowNode};
use skiff_e2e::master::MasterCluster;
use skiff_e2e::{metric_sample as metric, wait_for};
use skiff_master::client::Client;
use skiff_objects::{IntoObject, Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

/// How long the cluster may take to converge after each kill.
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

fn clients(cluster: &MasterCluster) -> Vec<Client> {
    cluster.masters.iter().map(|m| m.client()).collect()
}

/// The live masters' clients.
fn live_clients(cluster: &MasterCluster) -> Vec<Client> {
    cluster
        .masters
        .iter()
        .filter(|m| m.pid().is_some())
        .map(|m| m.client())
        .collect()
}

fn web(replicas: i32) -> v1::Deployment {
    let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    v1::Deployment {
        metadata: Some(v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(v1::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(Box::new(v1::PodTemplateSpec {
                metadata: Some(v1::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(v1::PodSpec {
                    containers: vec![v1::Container {
                        name: "web".into(),
                        image: "busybox:1.36".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets the Deployment's replicas through whichever live master takes it.
async fn scale(clients: &[Client], replicas: i32) {
    wait_for(
        &format!("scale to {replicas}"),
        Duration::from_secs(30),
        || async {
            for c in clients {
                let Ok(mut d) = c.get(Kind::Deployment, "default", "web").await else {
                    continue;
                };
                if skiff_objects::scale::set_replicas(&mut d, replicas).is_err() {
                    continue;
                }
                if let Ok(m) = d.meta_mut() {
                    // Unconditional: the scale wins whatever changed since.
                    m.resource_version.clear();
                }
                if c.update(d).await.is_ok() {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .unwrap();
}

/// Waits until exactly `replicas` pods exist, all Running, with one
/// ReplicaSet, as a linearizable read through some live master says; on
/// timeout, says what it last saw.
async fn converged(clients: &[Client], replicas: usize, within: Duration) -> anyhow::Result<()> {
    let seen = Mutex::new(String::new());
    let waited = wait_for(
        &format!("exactly {replicas} running pods"),
        within,
        || async {
            for c in clients {
                let Ok(pods) = c.list(Kind::Pod, "default").await else {
                    continue;
                };
                let running = pods
                    .items
                    .iter()
                    .filter(
                        |o| match &skiff_objects::pods::in_model(Object::clone(o)).kind {
                            Some(Body::Pod(p)) => {
                                p.status.as_ref().is_some_and(|s| s.phase == "Running")
                            }
                            _ => false,
                        },
                    )
                    .count();
                let Ok(sets) = c.list(Kind::ReplicaSet, "default").await else {
                    continue;
                };
                *seen.lock().unwrap() = describe_pods(&pods.items, sets.items.len());
                return (pods.items.len() == replicas
                    && running == replicas
                    && sets.items.len() == 1)
                    .then_some(());
            }
            None
        },
    )
    .await;
    waited.map_err(|e| anyhow::anyhow!("{e}; last seen: {}", seen.lock().unwrap()))
}

/// Pods that are not plainly Running (phase, node, deletion mark), and
/// the counts.
fn describe_pods(pods: &[Object], replicasets: usize) -> String {
    let mut odd = Vec::new();
    let mut running = 0;
    for o in pods {
        let o = skiff_objects::pods::in_model(o.clone());
        let Some(Body::Pod(p)) = &o.kind else {
            continue;
        };
        let meta = p.metadata.clone().unwrap_or_default();
        let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
        let node = p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
        if phase == "Running" && meta.deletion_timestamp.is_empty() {
            running += 1;
        } else {
            let deleting = &meta.deletion_timestamp;
            odd.push(format!(
                "{} phase={phase:?} node={node:?} deleting={deleting:?}",
                meta.name
            ));
        }
    }
    format!(
        "{} pods ({running} running, not being deleted), {replicasets} ReplicaSets; others: [{}]",
        pods.len(),
        odd.join("; ")
    )
}

/// Names of acknowledged writes, made continuously through every master.
struct AckedWrites {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckedWrites {
    fn start(clients: Vec<Client>) -> AckedWrites {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, acked) = (stop.clone(), acked.clone());
            async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("ack-{n}");
                    let c = &clients[n % clients.len()];
                    match c.create(secret(&name, "00000000")).await {
                        Ok(_) => acked.lock().unwrap().push(name),
                        // Unknown outcome: it may or may not exist. Only
                        // acknowledged writes must survive.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        AckedWrites { stop, acked, task }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_cores_busy_the_cluster_converges_after_leader_and_follower_kills() {
    let load = CpuLoad::all_cores();
    let mut cluster = MasterCluster::start(3).await.unwrap();
    let addrs: Vec<String> = cluster.masters.iter().map(|m| m.api_addr.clone()).collect();
    let fleet = HollowFleet::new(addrs.clone());
    let mut nodes: Vec<HollowNode> = Vec::new();
    for i in 0..50 {
        nodes.push(
            fleet
                .start(&format!("node-{i:02}"), i, HollowConfig::default())
                .await
                .unwrap(),
        );
    }
    let all = clients(&cluster);
    all[0].create(web(10).into_object()).await.unwrap();
    converged(&all, 10, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let writes = AckedWrites::start(all.clone());

    // 1. The leader dies during a scale-up.
    scale(&all, 30).await;
    let leader = cluster.leader().await.unwrap();
    let killed = Instant::now();
    cluster.masters[leader].kill();
    converged(&live_clients(&cluster), 30, CONVERGE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("after killing the leader: {e}\n{}", cluster.logs()));
    let after_leader = killed.elapsed();
    cluster.masters[leader].restart().unwrap();
    cluster.masters[leader]
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();

    // 2. A follower dies during a scale-up, and comes back.
    let leader = cluster.leader().await.unwrap();
    let follower = (leader + 1) % 3;
    scale(&all, 45).await;
    let killed = Instant::now();
    cluster.masters[follower].kill();
    converged(&live_clients(&cluster), 45, CONVERGE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("after killing a follower: {e}\n{}", cluster.logs()));
    let after_follower = killed.elapsed();
    let restarted = Instant::now();
    cluster.masters[follower].restart().unwrap();
    cluster.masters[follower]
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();
    // 3. A scale-down with the follower just back.
    scale(&all, 20).await;
    converged(&all, 20, CONVERGE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("after the follower came back: {e}\n{}", cluster.logs()));
    let after_restart = restarted.elapsed();

    // No acknowledged write was lost: every one is there, read through
    // every master.
    let acked = writes.finish().await;
    assert!(
        acked.len() >= 10,
        "only {} writes acknowledged",
        acked.len()
    );
    for c in &all {
        let stored: BTreeSet<String> = c
            .list(Kind::Secret, "default")
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| o.meta().name.clone())
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        assert!(
            lost.is_empty(),
            "acknowledged but lost via {}: {lost:?}",
            c.addr()
        );
    }
    assert!(load.rounds() > 0, "the cpu load never ran");
    eprintln!(
        "converged {after_leader:?} after the leader's death, {after_follower:?} after a follower's, \
         {after_restart:?} after its restart; {} acknowledged writes all kept",
        acked.len()
    );
    drop(nodes);
}

/// One client's view of an operation on one key, in real-time order.
#[derive(Debug, Clone)]
enum Event {
    Invoke {
        thread: u64,
        key: String,
        op: RegisterOp<String>,
    },
    Return {
        thread: u64,
        key: String,
        ret: RegisterRet<String>,
    },
}

/// The history of every client, in the order things happened, and a
/// trace of it for a human: every operation with its time, its master and
/// its answer or error, and the test's kills and restarts, printed for the
/// keys that fail the check.
struct History {
    events: Mutex<Vec<Event>>,
    trace: Mutex<Vec<(Duration, Option<String>, String)>>,
    started: Instant,
}

impl History {
    fn new() -> History {
        History {
            events: Mutex::default(),
            trace: Mutex::default(),
            started: Instant::now(),
        }
    }

    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    /// A line of the trace: about `key`, or about the cluster when `None`.
    fn note(&self, key: Option<&str>, line: String) {
        let at = self.started.elapsed();
        self.trace
            .lock()
            .unwrap()
            .push((at, key.map(str::to_owned), line));
    }

    /// The trace of `keys` and of the cluster, one line each.
    fn trace_of(&self, keys: &[&String]) -> String {
        self.trace
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| k.as_ref().is_none_or(|k| keys.contains(&k)))
            .map(|(at, k, line)| format!("{at:>10.3?} {} {line}", k.as_deref().unwrap_or("--")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn secret(key: &str, value: &str) -> Object {
    let meta = v1::ObjectMeta {
        name: key.into(),
        namespace: "default".into(),
        ..Default::default()
    };
    // Eight digits are valid base64, so the value is stored as it is.
    let fields = serde_json::json!({"data": {"v": value}});
    let mut document = v1::GenericObject {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata: Some(meta),
        content: Vec::new(),
    };
    skiff_objects::generic::set_content(&mut document, fields.as_object().unwrap());
    document.into_object()
}

/// A client loop: random reads and writes of the current round's keys,
/// each recorded before it is sent and after its answer. An operation that
/// fails has an unknown outcome (a write may still take effect), so it
/// stays open in the history and the client goes on under a new thread id.
async fn client_loop(
    client: Client,
    index: u64,
    round: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
    keys_per_round: usize,
) -> (u64, u64) {
    let mut incarnation = 0u64;
    let mut seq = 0u64;
    let (mut ok, mut failed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let thread = index * 1_000_000 + incarnation;
        let key = format!(
            "lin-{}-{}",
            round.load(Ordering::Relaxed),
            rand::random::<u64>() as usize % keys_per_round
        );
        seq += 1;
        let write = rand::random::<bool>();
        let value = format!("{:08}", index * 1_000_000 + seq);
        let op = if write {
            RegisterOp::Write(value.clone())
        } else {
            RegisterOp::Read
        };
        history.note(
            Some(&key),
            format!(
                "thread {thread} via master {} invokes {op:?}",
                (index - 1) / 2
            ),
        );
        history.push(Event::Invoke {
            thread,
            key: key.clone(),
            op,
        });
        let ret = if write {
            client
                .update(secret(&key, &value))
                .await
                .map(|_| RegisterRet::WriteOk)
        } else {
            client
                .get(Kind::Secret, "default", &key)
                .await
                .map(|o| match o.kind {
                    Some(Body::Generic(s)) if s.kind == "Secret" => {
                        let fields = skiff_objects::generic::content(&s);
                        let value = fields["data"]["v"].as_str().unwrap_or_default();
                        RegisterRet::ReadOk(value.to_owned())
                    }
                    other => panic!("a Secret was asked for, got {other:?}"),
                })
        };
        match ret {
            Ok(ret) => {
                history.note(Some(&key), format!("thread {thread} returns {ret:?}"));
                history.push(Event::Return { thread, key, ret });
                ok += 1;
            }
            Err(e) => {
                history.note(Some(&key), format!("thread {thread} failed: {e}"));
                incarnation += 1;
                failed += 1;
            }
        }
        // Paced, so each key's history stays short and mostly sequential
        // and the (exponential in the worst case) check stays quick.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_through_every_master_are_linearizable_across_leader_kills() {
    const KILLS: usize = 10;
    const KEYS: usize = 8;
    let mut cluster = MasterCluster::start(3).await.unwrap();
    let all = clients(&cluster);
    let history = Arc::new(History::new());
    let round = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let initial = "00000000".to_owned();
    // Each round has keys of its own (linearizability is checked per key,
    // and short per-key histories keep the check fast); they exist before
    // the round starts, holding the initial value.
    let create_round = |r: usize| {
        let all = all.clone();
        let initial = initial.clone();
        async move {
            for k in 0..KEYS {
                let s = secret(&format!("lin-{r}-{k}"), &initial);
                wait_for("a round's key", Duration::from_secs(30), || {
                    let (all, s) = (all.clone(), s.clone());
                    async move {
                        for c in &all {
                            match c.create(s.clone()).await {
                                Ok(_) => return Some(()),
                                Err(e) if e.to_string().contains("already exists") => {
                                    return Some(())
                                }
                                Err(_) => {}
                            }
                        }
                        None
                    }
                })
                .await
                .unwrap();
            }
        }
    };
    create_round(0).await;
    let mut loops = Vec::new();
    for (i, c) in all.iter().enumerate() {
        for j in 0..2 {
            loops.push(tokio::spawn(client_loop(
                c.clone(),
                (i * 2 + j) as u64 + 1,
                round.clone(),
                stop.clone(),
                history.clone(),
                KEYS,
            )));
        }
    }
    for r in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.leader().await.unwrap();
        cluster.masters[leader].kill();
        history.note(None, format!("master {leader} (the leader) killed"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cluster.masters[leader].restart().unwrap();
        history.note(None, format!("master {leader} restarted"));
        cluster.masters[leader]
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
        create_round(r + 1).await;
        round.store(r + 1, Ordering::Relaxed);
        history.note(None, format!("round {} begins", r + 1));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loops {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }

    // Check each key's history on a thread with room for the search.
    let events = history.events.lock().unwrap().clone();
    let recorded = events.len();
    let (done, checked) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(move || done.send(check_per_key(&events, &initial)))
        .unwrap();
    let report = checked
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the check of {recorded} events did not finish in 120 s"));
    let violations: Vec<&String> = report
        .iter()
        .filter(|(_, r)| !r.consistent)
        .map(|(k, _)| k)
        .collect();
    let reads_seeing_writes = report.values().map(|r| r.reads_of_written).sum::<usize>();
    eprintln!(
        "{KILLS} leader kills, {ok} operations answered, {failed} failed (outcome unknown), \
         {} keys checked, {} violations, {reads_seeing_writes} reads saw a written value",
        report.len(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "not linearizable: {violations:?}\n{}\n{}",
        history.trace_of(&violations),
        cluster.logs()
    );
    assert_eq!(
        report.len(),
        KEYS * (KILLS + 1),
        "every round's keys were used"
    );
    assert!(ok >= 200, "only {ok} operations were answered");
    assert!(
        reads_seeing_writes >= 20,
        "reads must see written values to check anything"
    );
}

struct KeyReport {
    consistent: bool,
    reads_of_written: usize,
}

fn check_per_key(events: &[Event], initial: &str) -> BTreeMap<String, KeyReport> {
    // An operation that never returned may be linearized anywhere after
    // its invocation, in particular at the very end. So a read that never
    // returned constrains nothing, and neither does a write that never
    // returned and whose value no read saw (at the end it is seen by no
    // one): both are left out, which keeps the tester's search (a plain
    // backtracking search) from trying them at every step. A write that
    // never returned but was seen stays open: it took effect, at a time the
    // tester must find.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Invoke { thread, .. } => {
                open.insert(*thread, i);
            }
            Event::Return { thread, key, ret } => {
                open.remove(thread);
                if let RegisterRet::ReadOk(v) = ret {
                    seen.insert((key, v));
                }
            }
        }
    }
    let left_out: BTreeSet<usize> = open
        .into_values()
        .filter(|&i| match &events[i] {
            Event::Invoke {
                key,
                op: RegisterOp::Write(v),
                ..
            } => !seen.contains(&(key.as_str(), v.as_str())),
            _ => true,
        })
        .collect();
    let mut testers: BTreeMap<String, LinearizabilityTester<u64, Register<String>>> =
        BTreeMap::new();
    let mut reads_of_written: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Invoke { .. } if left_out.contains(&i) => {}
            Event::Invoke { thread, key, op } => {
                testers
                    .entry(key.clone())
                    .or_insert_with(|| LinearizabilityTester::new(Register(initial.to_owned())))
                    .on_invoke(*thread, op.clone())
                    .expect("a well-formed history");
            }
            Event::Return { thread, key, ret } => {
                if matches!(ret, RegisterRet::ReadOk(v) if v != initial) {
                    *reads_of_written.entry(key.clone()).or_default() += 1;
                }
                testers
                    .get_mut(key)
                    .expect("invoked before returned")
                    .on_return(*thread, ret.clone())
                    .expect("a well-formed history");
            }
        }
    }
    testers
        .into_iter()
        .map(|(key, tester)| {
            let report = KeyReport {
                consistent: tester.is_consistent(),
                reads_of_written: reads_of_written.get(&key).copied().unwrap_or(0),
            };
            (key, report)
        })
        .collect()
}

#[test]
fn the_history_check_flags_a_stale_read_and_accepts_an_unknown_write() {
    let initial = "00000000";
    let invoke = |thread, op| Event::Invoke {
        thread,
        key: "k".into(),
        op,
    };
    let ret = |thread, ret| Event::Return {
        thread,
        key: "k".into(),
        ret,
    };
    // A write is acknowledged, then a later read returns the old value.
    let stale = [
        invoke(1, RegisterOp::Write("00000001".into())),
        ret(1, RegisterRet::WriteOk),
        invoke(2, RegisterOp::Read),
        ret(2, RegisterRet::ReadOk(initial.into())),
    ];
    assert!(!check_per_key(&stale, initial)["k"].consistent);
    // A write whose answer was lost may have happened: a read may see it,
    // and a read that never returned is ignored.
    let unknown = [
        invoke(1, RegisterOp::Write("00000001".into())),
        invoke(3, RegisterOp::Read),
        invoke(2, RegisterOp::Read),
        ret(2, RegisterRet::ReadOk("00000001".into())),
        invoke(4, RegisterOp::Read),
        ret(4, RegisterRet::ReadOk("00000001".into())),
    ];
    let report = check_per_key(&unknown, initial);
    assert!(report["k"].consistent);
    assert_eq!(report["k"].reads_of_written, 2);
    // A write whose answer was lost and that no one saw may not have
    // happened at all.
    let unseen = [
        invoke(1, RegisterOp::Write("00000001".into())),
        invoke(2, RegisterOp::Read),
        ret(2, RegisterRet::ReadOk(initial.into())),
        invoke(3, RegisterOp::Write("00000002".into())),
        ret(3, RegisterRet::WriteOk),
        invoke(4, RegisterOp::Read),
        ret(4, RegisterRet::ReadOk("00000002".into())),
    ];
    assert!(check_per_key(&unseen, initial)["k"].consistent);
    // But once it was seen, the old value cannot come back.
    let flip = [
        invoke(1, RegisterOp::Write("00000001".into())),
        invoke(2, RegisterOp::Read),
        ret(2, RegisterRet::ReadOk("00000001".into())),
        invoke(4, RegisterOp::Read),
        ret(4, RegisterRet::ReadOk(initial.into())),
    ];
    assert!(!check_per_key(&flip, initial)["k"].consistent);
}

/// SIGCONTs the processes it names when dropped, so a failing test never
/// leaves a master stopped.
struct Stopped(Vec<u32>);

impl Stopped {
    fn stop(pids: Vec<u32>) -> Stopped {
        for &pid in &pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .unwrap();
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_stops_its_controllers_and_steps_down() {
    let cluster = MasterCluster::start(3).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let metrics = cluster.masters[leader].metrics_addr.clone();
    assert_eq!(metric(&metrics, "skiff_controllers_running"), Some(1.0));
    // Both followers freeze: the leader still believes it leads, but no
    // quorum answers it any more.
    let followers: Vec<u32> = (0..3)
        .filter(|&i| i != leader)
        .filter_map(|i| cluster.masters[i].pid())
        .collect();
    let frozen_at = Instant::now();
    let frozen = Stopped::stop(followers);
    wait_for("the cut-off leader to stop its controllers", Duration::from_secs(20), || {
        let metrics = metrics.clone();
        async move { (metric(&metrics, "skiff_controllers_running") == Some(0.0)).then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.masters[leader].log_tail()));
    let stopped_after = frozen_at.elapsed();
    assert!(
        stopped_after >= Duration::from_secs(9),
        "controllers stopped after only {stopped_after:?}: a slow quorum is not a lost one"
    );
    let log = std::fs::read_to_string(&cluster.masters[leader].log_path).unwrap();
    assert!(
        log.contains("stepping down"),
        "{}",
        cluster.masters[leader].log_tail()
    );
    // A linearizable read through the cut-off leader fails rather than
    // answer from a view no quorum confirmed.
    assert!(cluster.masters[leader]
        .client()
        .get(Kind::Namespace, "", "default")
        .await
        .is_err());

    // The followers wake up: the cluster has a leader and takes writes.
    drop(frozen);
    let all = clients(&cluster);
    wait_for(
        "a write after the quorum is back",
        Duration::from_secs(20),
        || {
            let all = all.clone();
            async move {
                for c in &all {
                    if c.create(secret("after-step-down", "00000001"))
                        .await
                        .is_ok()
                    {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    wait_for(
        "controllers running again",
        Duration::from_secs(20),
        || async {
            cluster
                .masters
                .iter()
                .any(|m| metric(&m.metrics_addr, "skiff_controllers_running") == Some(1.0))
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    eprintln!(
        "the cut-off leader stopped its controllers {stopped_after:?} after losing its quorum"
    );
}
