//! The datastore as an operator runs it, end to end with real `skiff`
//! processes: a snapshot saved while writes flow, and
//! `--cluster-reset --restore` bringing back exactly what it holds (a
//! damaged copy refused, changing nothing); a dead master of three removed
//! with `skiff cluster remove` and replaced by a fresh one; snapshots
//! listed, deleted, and taken on schedule with only the newest kept.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::master::{ready_master, selectorless_service, MasterCluster, MasterProcess};
use skiff_e2e::{admin_command, wait_for};
use skiff_master::client::ClientError;
use skiff_objects::{Kind, ObjectExt};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `skiff <command> <args> --server <server> --config <its admin.conf>`.
fn admin(command: &str, server: &str, args: &[&str]) -> Output {
    admin_command(command, server)
        .args(args)
        .output()
        .expect("run skiff")
}

/// Its stdout, once it succeeded.
fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Its stderr, once it failed.
fn failed(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A value of `skiff snapshot save`'s output (`  revision 1234`).
fn field<'a>(saved: &'a str, name: &str) -> &'a str {
    saved
        .lines()
        .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no {name} in: {saved}"))
}

/// Fails unless `haystack` says `needle`.
fn assert_says(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in: {haystack}");
}

/// The master's id, from its data dir.
fn node_id(master: &MasterProcess) -> u64 {
    let path = master.data_dir.join("node-id");
    let id = std::fs::read_to_string(&path).expect("a node id");
    id.trim().parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_while_writes_flow_restores_exactly_what_it_holds() {
    let (_dir, mut master) = ready_master().await.unwrap();
    let client = master.client();
    // Every acknowledged write: name, resourceVersion, when acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<(String, u64, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}-{i}");
                match client.create(selectorless_service(&name)).await {
                    Ok(created) => {
                        let version = created.meta().resource_version.parse().unwrap();
                        acked.lock().unwrap().push((name, version, Instant::now()));
                        i += 1;
                    }
                    // An earlier attempt that timed out may have committed.
                    Err(ClientError::AlreadyExists(_)) => i += 1,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    let server = master.api_addr.clone();
    let save = move || admin("snapshot", &server, &["save", "--name", "e2e"]);
    let saved = tokio::task::spawn_blocking(save).await.unwrap();
    let saved = succeeded(saved, "snapshot save");
    // Writes go on after it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let path = field(&saved, "path").to_owned();
    let revision: u64 = field(&saved, "revision").parse().unwrap();
    let acked = acked.lock().unwrap().clone();
    let before = acked.iter().filter(|(_, _, at)| *at < asked).count();
    let after = acked.iter().filter(|(_, v, _)| *v > revision).count();
    assert!(before > 10, "too few writes before the snapshot: {before}");
    assert!(after > 10, "too few writes after the snapshot: {after}");
    for (name, version, at) in &acked {
        assert!(
            *at >= asked || *version <= revision,
            "{name}, acknowledged at revision {version} before the snapshot was asked for, \
             is not in the snapshot of revision {revision}"
        );
    }

    // A damaged copy is refused and changes nothing.
    master.stop(Duration::from_secs(10)).unwrap();
    let mut damaged = std::fs::read(&path).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let damaged_path = master.data_dir.with_extension("damaged.skiffsnap");
    std::fs::write(&damaged_path, damaged).unwrap();
    let damaged_path = damaged_path.to_str().unwrap();
    let refused = master.cluster_reset(&["--restore", damaged_path]).unwrap();
    let refused = failed(refused, "a restore from a damaged snapshot");
    assert_says(&refused, "fails its checksum");
    let leftovers: Vec<String> = std::fs::read_dir(&master.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("pre-reset-") || f.starts_with("cluster-reset"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The snapshot itself makes the cluster.
    let reset = master.cluster_reset(&["--restore", path.as_str()]).unwrap();
    let reset = succeeded(reset, "the restore");
    assert_says(&reset, "Restart without --cluster-reset");
    master.restart().unwrap();
    master.wait_ready(Duration::from_secs(30)).await.unwrap();
    let client = master.client();
    let listed = client.list(Kind::Service, "default").await.unwrap();
    let stored: BTreeMap<String, u64> = listed
        .items
        .iter()
        .map(|o| {
            let meta = o.meta();
            (meta.name.clone(), meta.resource_version.parse().unwrap())
        })
        .collect();
    for (name, version, _) in &acked {
        if *version <= revision {
            let kept = stored.get(name) == Some(version);
            assert!(kept, "{name} (revision {version}) did not come back");
        } else {
            let back = stored.contains_key(name);
            assert!(!back, "{name} (revision {version}) came back");
        }
    }
    let newest = stored.values().max().copied().unwrap_or_default();
    assert!(newest <= revision, "{newest} is past {revision}");
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.members.len(), 1, "{:?}", status.members);
    assert!(status.revision >= revision);
    // And it takes writes.
    let created = client
        .create(selectorless_service("after-restore"))
        .await
        .unwrap();
    let version: u64 = created.meta().resource_version.parse().unwrap();
    assert!(version > revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_is_removed_and_a_new_one_takes_its_place() {
    let mut cluster = MasterCluster::start(3).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let dead = (leader + 1) % 3;
    let live = (leader + 2) % 3;
    let dead_id = node_id(&cluster.masters[dead]).to_string();
    let leader_id = node_id(&cluster.masters[leader]).to_string();
    cluster.masters[dead].kill();
    // Asked through a follower: the calls go to the leader.
    let server = cluster.masters[live].api_addr.clone();

    let members = succeeded(admin("cluster", &server, &["members"]), "members");
    assert_eq!(members.lines().count(), 4, "{members}");
    assert!(members.contains(&dead_id), "{members}");

    let refused = admin("cluster", &server, &["remove", leader_id.as_str()]);
    let refused = failed(refused, "removing the leader");
    assert_says(&refused, "leads the cluster");
    let refused = admin("cluster", &server, &["remove", "12345"]);
    let refused = failed(refused, "removing an unknown id");
    assert_says(&refused, "no member 12345");

    let removed = admin("cluster", &server, &["remove", dead_id.as_str()]);
    let removed = succeeded(removed, "removing the dead master");
    assert_says(&removed, &format!("member {dead_id} removed"));
    let client = cluster.masters[live].client();
    wait_for("two members", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let status = client.cluster_status().await.ok()?;
            (status.members.len() == 2).then_some(())
        }
    })
    .await
    .unwrap();

    // A new master, with an empty data dir, joins through a live one.
    let dir = tempfile::tempdir().unwrap();
    let replacement = MasterProcess::start(&dir.path().join("replacement"), Some(&server)).unwrap();
    wait_for("three voters", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let members = client.members().await.ok()?;
            let voters = members.members.iter().filter(|m| m.voter).count();
            (voters == 3).then_some(())
        }
    })
    .await
    .unwrap();
    replacement
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();

    // Writes work through every master.
    let masters = [
        &cluster.masters[leader],
        &cluster.masters[live],
        &replacement,
    ];
    for (i, m) in masters.into_iter().enumerate() {
        let name = format!("after-replacement-{i}");
        m.client()
            .create(selectorless_service(&name))
            .await
            .unwrap();
    }
    let members = succeeded(admin("cluster", &server, &["members"]), "members");
    assert_eq!(members.lines().count(), 4, "{members}");
    assert!(!members.contains(&dead_id), "{members}");
    let mut roles: Vec<&str> = members
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["leader", "voter", "voter"], "{members}");
    // Each master names its release in its Raft answers: the table shows
    // this build's version and data format for every member.
    let format = skiff_master::datastore::data_format::CURRENT.to_string();
    for line in members.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[cells.len() - 2..],
            [env!("CARGO_PKG_VERSION"), format.as_str()],
            "{members}"
        );
    }
}

/// The `scheduled-<unix-time>` snapshots a listing shows, by time.
fn scheduled(listing: &str) -> Vec<u64> {
    let mut times: Vec<u64> = listing
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("scheduled-")?
                .parse()
                .ok()
        })
        .collect();
    times.sort_unstable();
    times
}

fn list(server: &str, args: &[&str]) -> String {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    succeeded(admin("snapshot", server, &all), "snapshot list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_deleted_and_taken_on_schedule_keeping_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = ["--snapshot-schedule", "1s", "--snapshot-retention", "2"];
    let master = MasterProcess::start_with(&dir.path().join("m"), None, &schedule).unwrap();
    master.wait_ready(Duration::from_secs(20)).await.unwrap();
    let server = master.api_addr.clone();
    let server = server.as_str();

    let saved = admin("snapshot", server, &["save", "--name", "before-upgrade"]);
    let saved = succeeded(saved, "snapshot save");
    let name = saved.split_whitespace().nth(1).unwrap().to_owned();
    assert!(name.starts_with("before-upgrade-"), "{saved}");
    let refused = admin("snapshot", server, &["save", "--name", "scheduled"]);
    let refused = failed(refused, "a scheduled-looking name");
    assert_says(&refused, "kept for scheduled snapshots");
    let refused = admin("snapshot", server, &["save", "--name", "../x"]);
    let refused = failed(refused, "a name with a slash");
    assert_says(&refused, "snapshot name");

    // Listed with its size, revision and objects.
    let listing = list(server, &[]);
    let row: Vec<&str> = listing
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} not in: {listing}"))
        .split_whitespace()
        .collect();
    let numbers: Vec<u64> = row[1..4].iter().map(|n| n.parse().unwrap()).collect();
    assert!(numbers.iter().all(|n| *n > 0), "{listing}");
    assert!(list(server, &["--local"]).contains(&name));

    // The schedule's: taken every second, the newest two kept.
    let first = wait_for(
        "a scheduled snapshot",
        Duration::from_secs(20),
        move || async move { scheduled(&list(server, &[])).first().copied() },
    )
    .await
    .unwrap();
    wait_for(
        "newer scheduled ones, the older pruned",
        Duration::from_secs(30),
        move || async move {
            let times = scheduled(&list(server, &[]));
            (times.len() == 2 && times.iter().all(|t| *t > first)).then_some(())
        },
    )
    .await
    .unwrap();
    // A snapshot saved by hand is never pruned.
    assert_says(&list(server, &[]), &name);

    // Deleted: gone from the list and the disk; again, it says so.
    succeeded(
        admin("snapshot", server, &["delete", name.as_str()]),
        "delete",
    );
    assert!(!list(server, &[]).contains(&name));
    let file = format!("{name}.skiffsnap");
    assert!(!master.data_dir.join("snapshots").join(file).exists());
    let again = admin("snapshot", server, &["delete", name.as_str()]);
    let again = failed(again, "deleting it again");
    assert_says(&again, "no snapshot named");
}
