//! The pod watch: `Nodes.WatchPods` streams every pod bound to this node
//! (ADDED), a BOOKMARK once the list is complete, then every change. Any
//! master serves it from its local replica, so the agent stays on one
//! master until the stream breaks, then moves to the next. Each event
//! becomes a [`Desired`] change on an mpsc channel for the pod manager; a
//! complete list becomes [`Desired::Synced`], after which pods the master
//! no longer has are torn down. The task ends when the receiver is
//! dropped.

use std::collections::HashSet;

use skiff_objects::{pods, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;
use skiff_proto::node::WatchPodsRequest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::masters::Masters;
use super::reconnect::Reconnect;
use super::Desired;

/// Watches the pods bound to `node_name` and feeds the pod manager until
/// `shutdown` or until `desired`'s receiver is dropped.
pub async fn watch_loop(
    masters: Masters,
    node_name: String,
    desired: mpsc::Sender<Desired>,
    shutdown: CancellationToken,
) {
    let mut i = 0;
    let mut backoff = Reconnect::new();
    // The newest revision seen: a list from a master that is behind it
    // (a partitioned follower) must not tear down newer pods.
    let mut newest = 0u64;
    loop {
        if let Some(mut client) = masters.client(i) {
            // This release's format: the master sends the stored pods as
            // they are, and they are read in the protobuf model here.
            let request = super::cluster_objects::naming_format(WatchPodsRequest {
                node_name: node_name.clone(),
            });
            let call = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = desired.closed() => return,
                c = client.watch_pods(request) => c,
            };
            match call {
                Ok(stream) => {
                    masters.learn(i).await;
                    let mut stream = stream.into_inner();
                    let mut listed: Option<HashSet<String>> = Some(HashSet::new());
                    loop {
                        let next = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = desired.closed() => return,
                            n = stream.message() => n,
                        };
                        let event = match next {
                            Ok(Some(e)) => e,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(master = %masters.nth(i), error = %e, "pod watch ended");
                                break;
                            }
                        };
                        if event.r#type == EventType::Bookmark as i32 {
                            if event.revision < newest {
                                tracing::warn!(
                                    master = %masters.nth(i),
                                    revision = event.revision,
                                    newest,
                                    "this master is behind; not removing pods on its word"
                                );
                                listed = None;
                                continue;
                            }
                            newest = newest.max(event.revision);
                            if let Some(uids) = listed.take() {
                                backoff.reset();
                                if desired.send(Desired::Synced(uids)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        newest = newest.max(event.revision);
                        // Read in the protobuf model, which holds every
                        // field the agent acts on.
                        let Some(object) = event.object.map(pods::in_model) else {
                            continue;
                        };
                        // A deletion needs only the uid, whatever the rest.
                        let uid = object.meta().uid.clone();
                        let change = if event.r#type == EventType::Deleted as i32 {
                            if let Some(l) = listed.as_mut() {
                                l.remove(&uid);
                            }
                            Desired::Delete(uid)
                        } else {
                            // Listed even when it does not read (`in_model`
                            // said why): a sync must not tear it down.
                            if let Some(l) = listed.as_mut() {
                                l.insert(uid);
                            }
                            let Some(Body::Pod(pod)) = object.kind else {
                                continue;
                            };
                            Desired::Upsert(Box::new(pod))
                        };
                        if desired.send(change).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(master = %masters.nth(i), error = %e, "cannot watch pods")
                }
            }
        }
        i += 1;
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use skiff_proto::api::object::Kind as Body;
    use skiff_proto::api::{EventType, Object, WatchEvent};
    use skiff_proto::v1;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tonic::Status;

    use super::watch_loop;
    use crate::master_link::fake_master::{within, ScriptedStream, TestPki};
    use crate::master_link::Desired;

    /// A pod as stored (its type meta set).
    fn pod(name: &str) -> v1::Pod {
        v1::Pod {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            metadata: Some(v1::ObjectMeta {
                name: name.to_owned(),
                namespace: "default".to_owned(),
                uid: format!("uid-{name}"),
                ..v1::ObjectMeta::default()
            }),
            ..v1::Pod::default()
        }
    }

    fn event(kind: EventType, name: &str, revision: u64) -> Result<WatchEvent, Status> {
        Ok(WatchEvent {
            r#type: kind as i32,
            object: Some(Object {
                kind: Some(Body::Pod(pod(name))),
            }),
            revision,
            previous: None,
            ..Default::default()
        })
    }

    fn bookmark(revision: u64) -> Result<WatchEvent, Status> {
        Ok(WatchEvent {
            r#type: EventType::Bookmark as i32,
            object: None,
            revision,
            previous: None,
            ..Default::default()
        })
    }

    fn gone() -> Result<WatchEvent, Status> {
        Err(Status::unavailable("master going away"))
    }

    fn upsert(name: &str) -> Desired {
        Desired::Upsert(Box::new(pod(name)))
    }

    fn synced(names: &[&str]) -> Desired {
        let uids: HashSet<String> = names.iter().map(|n| format!("uid-{n}")).collect();
        Desired::Synced(uids)
    }

    async fn send(watch: &ScriptedStream, events: Vec<Result<WatchEvent, Status>>) {
        for e in events {
            watch.send(e).await.expect("the agent is watching");
        }
    }

    async fn next(desired: &mut mpsc::Receiver<Desired>) -> Desired {
        within("a desired change", desired.recv())
            .await
            .expect("the watch loop is running")
    }

    #[tokio::test]
    async fn pods_of_the_node_come_out_as_desired_changes_with_the_complete_list() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let (tx, mut desired) = mpsc::channel(16);
        let link = tokio::spawn(watch_loop(
            pki.masters(&[&master]),
            "pi-1".to_owned(),
            tx,
            shutdown.clone(),
        ));
        let watch = master.pod_watch(0).await;
        let asked_for = master.with(|s| s.pod_watch_requests[0].0.clone());
        assert_eq!(asked_for, "pi-1");
        let events = vec![
            event(EventType::Added, "a", 7),
            event(EventType::Added, "b", 7),
            bookmark(7),
            event(EventType::Modified, "b", 8),
            event(EventType::Deleted, "a", 9),
        ];
        send(&watch, events).await;
        assert_eq!(next(&mut desired).await, upsert("a"));
        assert_eq!(next(&mut desired).await, upsert("b"));
        assert_eq!(next(&mut desired).await, synced(&["a", "b"]));
        assert_eq!(next(&mut desired).await, upsert("b"));
        assert_eq!(next(&mut desired).await, Desired::Delete("uid-a".into()));
        shutdown.cancel();
        within("the watch loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_broken_watch_reconnects_after_a_backoff_and_a_master_behind_removes_nothing() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let (tx, mut desired) = mpsc::channel(16);
        let link = tokio::spawn(watch_loop(
            pki.masters(&[&master]),
            "pi-1".to_owned(),
            tx,
            shutdown.clone(),
        ));
        let first = master.pod_watch(0).await;
        send(&first, vec![event(EventType::Added, "a", 7), bookmark(7)]).await;
        assert_eq!(next(&mut desired).await, upsert("a"));
        assert_eq!(next(&mut desired).await, synced(&["a"]));

        let broken = Instant::now();
        send(&first, vec![gone()]).await;
        let second = master.pod_watch(1).await;
        let waited = master.with(|s| s.pod_watch_requests[1].1) - broken;
        assert!(
            waited >= Duration::from_millis(150),
            "reconnected after {waited:?}, without a backoff"
        );
        // This master lists an older revision than the agent has seen: its
        // list must not make pod "a" go.
        let behind = vec![
            event(EventType::Added, "b", 5),
            bookmark(5),
            event(EventType::Added, "c", 10),
        ];
        send(&second, behind).await;
        assert_eq!(next(&mut desired).await, upsert("b"));
        assert_eq!(next(&mut desired).await, upsert("c"));

        // A master that is up to date lists again, and its word counts.
        send(&second, vec![gone()]).await;
        let third = master.pod_watch(2).await;
        let up_to_date = vec![event(EventType::Added, "c", 10), bookmark(10)];
        send(&third, up_to_date).await;
        assert_eq!(next(&mut desired).await, upsert("c"));
        assert_eq!(next(&mut desired).await, synced(&["c"]));
        shutdown.cancel();
        within("the watch loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn the_agent_learns_the_other_masters_from_the_one_it_watches() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let other = pki.serve().await;
        let members = vec![master.addr.clone(), other.addr.clone()];
        master.with(|s| s.members = members.clone());
        let masters = pki.masters(&[&master]);
        let shutdown = CancellationToken::new();
        let (tx, _desired) = mpsc::channel(16);
        let link = tokio::spawn(watch_loop(
            masters.clone(),
            "pi-1".to_owned(),
            tx,
            shutdown.clone(),
        ));
        within("the other master to be learned", async {
            while !masters.known().contains(&other.addr) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(masters.known(), members);
        shutdown.cancel();
        within("the watch loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_receiver_ends_the_pod_watch() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let (tx, desired) = mpsc::channel(16);
        let link = tokio::spawn(watch_loop(
            pki.masters(&[&master]),
            "pi-1".to_owned(),
            tx,
            shutdown.clone(),
        ));
        master.pod_watch(0).await;
        assert!(!link.is_finished());
        drop(desired);
        // No event comes: the loop must notice the receiver is gone on its own.
        within("the watch loop to end", link).await.unwrap();
        assert!(!shutdown.is_cancelled());
    }
}
