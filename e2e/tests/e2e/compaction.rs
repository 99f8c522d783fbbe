//! Snapshots and log purging: the log stays bounded under continuous
//! writes, and a follower that missed purged entries catches up from a
//! snapshot sent over the peer transport.

use std::time::Duration;

use skiff_e2e::master::{selectorless_service, MasterCluster};
use skiff_e2e::wait_for;
use skiff_objects::{Kind, ObjectExt};

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_catch_up_a_follower_that_fell_behind() {
    let mut cluster = MasterCluster::start_with(3, &["--snapshot-after-entries", "100"])
        .await
        .unwrap();
    let leader = cluster.leader().await.unwrap();
    let behind = (leader + 1) % 3;
    cluster.masters[behind].kill();
    let client = cluster.masters[leader].client();
    let log_file = cluster.masters[leader].data_dir.join("raft-log.wal");

    let mut counter = client
        .create(selectorless_service("counter"))
        .await
        .unwrap();
    // Sequential updates: one log entry each. The file grows between
    // compactions and shrinks at each: what must not grow is how large it
    // gets.
    let (mut largest_warmup, mut largest_after) = (0, 0);
    for i in 0..1500 {
        counter
            .meta_mut()
            .unwrap()
            .labels
            .insert("n".into(), i.to_string());
        counter = client.update(counter).await.unwrap();
        let size = file_size(&log_file);
        if i < 500 {
            largest_warmup = largest_warmup.max(size);
        } else {
            largest_after = largest_after.max(size);
        }
    }
    eprintln!(
        "raft log file: at most {largest_warmup} bytes in the first 500 writes, {largest_after} in the next 1000"
    );
    let status = client.cluster_status().await.unwrap();
    assert!(
        status.snapshot_index > 1000,
        "no recent snapshot: {status:?}"
    );
    assert!(status.purged_index > 1000, "log not purged: {status:?}");
    assert!(
        largest_warmup > 0,
        "no raft log file at {}",
        log_file.display()
    );
    assert!(
        largest_after <= largest_warmup * 2,
        "raft log file kept growing: at most {largest_warmup} bytes in the first 500 writes, {largest_after} in the next 1000"
    );

    // The follower's missing entries are gone from every log: it can only
    // catch up by installing a snapshot.
    cluster.masters[behind].restart().unwrap();
    let lagging = cluster.masters[behind].client();
    let target = status.revision;
    wait_for("the follower to catch up", Duration::from_secs(30), || {
        let lagging = lagging.clone();
        async move {
            let list = lagging.list_local(Kind::Service, "default").await.ok()?;
            (list.revision >= target).then_some(list)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let caught_up = lagging.list_local(Kind::Service, "default").await.unwrap();
    // The leader's own `kubernetes` Service is there too.
    let written: Vec<_> = caught_up
        .items
        .iter()
        .filter(|o| o.meta().name != "kubernetes")
        .collect();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].meta().labels["n"], "1499");
    let status = lagging.cluster_status().await.unwrap();
    assert!(
        status.snapshot_index > 1000,
        "follower has no snapshot: {status:?}"
    );
}
