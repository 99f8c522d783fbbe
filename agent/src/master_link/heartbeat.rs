//! Heartbeats: one client-streaming call (`Nodes.Heartbeats`) carrying a
//! heartbeat every interval. Only the leader keeps heartbeats (they are
//! never written to Raft), so a follower refuses the stream with
//! UNAVAILABLE and the leader's address in `x-skiff-leader`
//! ([`skiff_proto::LEADER_METADATA`]), which the agent follows at once. A
//! master that no longer knows the node (a new cluster) answers NOT_FOUND
//! and the node registers again. Any other end moves on to the next master
//! after a backoff.
//!
//! The node's resource usage rides on the heartbeats ([`UsageFeed`]): the
//! newest reading on the first heartbeat of each stream (a new leader has
//! none), then each new reading once, dated with its age as it goes; the
//! leader keeps them in memory for the metrics API.

use std::time::Duration;

use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::{Heartbeat, HeartbeatSummary, NodeResourceUsage};
use skiff_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::masters::Masters;
use super::reconnect::Reconnect;
use super::registration::register;
use super::UsageFeed;

/// Heartbeats a stream must carry before it counts as healthy and the
/// reconnect backoff starts over.
const HEALTHY_AFTER: u64 = 3;

/// Sees each heartbeat before and after it is sent. The agent sends every
/// one ([`EveryBeat`]); hollow nodes in benchmarks drop some (simulated
/// loss) and count the rest.
pub trait HeartbeatTap: Send {
    /// Whether to send this heartbeat; `false` skips it.
    fn admit(&mut self) -> bool;
    /// A heartbeat went onto the stream.
    fn sent(&mut self);
}

/// Sends every heartbeat, counting none.
#[derive(Debug, Clone, Copy, Default)]
pub struct EveryBeat;

impl HeartbeatTap for EveryBeat {
    fn admit(&mut self) -> bool {
        true
    }

    fn sent(&mut self) {}
}

/// Registers, then heartbeats every `interval` until `shutdown`, with the
/// readings of `usage`.
pub async fn heartbeat_loop(
    masters: Masters,
    node: v1::Node,
    interval: Duration,
    usage: UsageFeed,
    shutdown: CancellationToken,
) {
    if register(&masters, &node, &shutdown).await.is_none() {
        return;
    }
    send_heartbeats(masters, node, interval, EveryBeat, Some(usage), shutdown).await
}

/// Heartbeats for the registered `node` every `interval` until
/// `shutdown`, to the leader: follows `x-skiff-leader` when a master
/// refuses, registers again when a master has forgotten the node, and
/// otherwise tries the next master after a backoff. The readings of
/// `usage`, if any, ride on them.
pub async fn send_heartbeats<T: HeartbeatTap>(
    masters: Masters,
    node: v1::Node,
    interval: Duration,
    mut tap: T,
    mut usage: Option<UsageFeed>,
    shutdown: CancellationToken,
) {
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut target = masters.nth(0);
    let mut i = 0;
    let mut backoff = Reconnect::new();
    loop {
        let ended = match masters.channel(&target) {
            None => {
                tracing::warn!(master = %target, "not a usable master address");
                None
            }
            Some(channel) => {
                let stream = stream_heartbeats(
                    channel,
                    &name,
                    interval,
                    &mut tap,
                    usage.as_mut(),
                    &mut backoff,
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ended = stream => Some(ended),
                }
            }
        };
        match ended {
            Some(Err(status)) => {
                if let Some(leader) = status
                    .metadata()
                    .get(skiff_proto::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                {
                    tracing::debug!(from = %target, to = %leader, "following the leader");
                    target = leader.to_string();
                    continue;
                }
                if status.code() == tonic::Code::NotFound {
                    // The master forgot this node (a new cluster): register again.
                    if register(&masters, &node, &shutdown).await.is_none() {
                        return;
                    }
                }
                tracing::debug!(master = %target, error = %status, "heartbeat stream ended");
            }
            Some(Ok(_)) => tracing::debug!(master = %target, "heartbeat stream closed"),
            None => {}
        }
        i += 1;
        target = masters.nth(i);
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// One heartbeat stream on `channel`, until the master ends it.
async fn stream_heartbeats<T: HeartbeatTap>(
    channel: tonic::transport::Channel,
    name: &str,
    interval: Duration,
    tap: &mut T,
    mut usage: Option<&mut UsageFeed>,
    backoff: &mut Reconnect,
) -> Result<tonic::Response<HeartbeatSummary>, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let mut client = NodesClient::new(channel);
    let call = client.heartbeats(ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut tick = tokio::time::interval(interval);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            ended = &mut call => return ended,
            _ = tick.tick() => {
                if !tap.admit() {
                    continue;
                }
                let beat = Heartbeat {
                    node_name: name.to_owned(),
                    usage: usage.as_deref_mut().and_then(|feed| take_usage(feed, sent == 0)),
                };
                if tx.send(beat).await.is_err() {
                    // The call dropped its request stream: it is over.
                    return Ok(tonic::Response::new(HeartbeatSummary::default()));
                }
                tap.sent();
                sent += 1;
                if sent == HEALTHY_AFTER {
                    backoff.reset();
                }
            }
        }
    }
}

/// The reading for the next heartbeat: on a stream's first (`whole`)
/// the newest there is, else a new one, once; with its age now.
fn take_usage(feed: &mut UsageFeed, whole: bool) -> Option<NodeResourceUsage> {
    // A sampler that stopped (its sender gone) leaves its last reading.
    let changed = feed.has_changed().unwrap_or(false);
    if !whole && !changed {
        return None;
    }
    let reading = feed.borrow_and_update().clone()?;
    let mut usage = reading.usage;
    let age = reading.taken.elapsed().as_millis();
    usage.age_millis = u32::try_from(age).unwrap_or(u32::MAX);
    Some(usage)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use skiff_proto::node::NodeResourceUsage;
    use skiff_proto::LEADER_METADATA;
    use skiff_security::Identity;
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use super::{heartbeat_loop, take_usage};
    use crate::master_link::fake_master::{node, within, TestPki};
    use crate::master_link::{UsageFeed, UsageReading};

    /// A feed with no reading yet, and its sender.
    fn no_usage() -> (watch::Sender<Option<UsageReading>>, UsageFeed) {
        watch::channel(None)
    }

    fn reading(cpu_nanocores: u64, taken: Instant) -> Option<UsageReading> {
        Some(UsageReading {
            taken,
            usage: NodeResourceUsage {
                window_millis: 10_000,
                cpu_nanocores,
                ..Default::default()
            },
        })
    }

    fn not_leader(leader: &str) -> tonic::Status {
        let mut status = tonic::Status::unavailable("this master is not the leader");
        let value = leader.parse().expect("an address is valid metadata");
        status.metadata_mut().insert(LEADER_METADATA, value);
        status
    }

    #[tokio::test]
    async fn heartbeats_reach_the_master_at_the_interval_and_carry_the_node_name() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let (_usage, feed) = no_usage();
        let link = tokio::spawn(heartbeat_loop(
            pki.masters(&[&master]),
            node("pi-1"),
            Duration::from_millis(100),
            feed,
            shutdown.clone(),
        ));
        let beats = master.until_heartbeats(10).await;
        master.with(|s| {
            assert_eq!(s.registered.len(), 1, "registers once, before heartbeats");
            let (registered, identity) = &s.registered[0];
            let name = registered.metadata.as_ref().map(|m| m.name.as_str());
            assert_eq!(name, Some("pi-1"));
            assert_eq!(identity, &Some(Identity::Node("pi-1".to_owned())));
        });
        assert!(beats.iter().all(|(name, _)| name == "pi-1"), "{beats:?}");
        // Five intervals, measured after the stream is up (the first beats
        // may wait together for the TLS handshake).
        let span = beats[9].1 - beats[4].1;
        let about_right = Duration::from_millis(300)..=Duration::from_millis(2500);
        assert!(
            about_right.contains(&span),
            "five 100 ms intervals took {span:?}"
        );
        shutdown.cancel();
        within("the heartbeat loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_follower_refusing_with_the_leader_address_sends_heartbeats_to_the_leader() {
        let pki = TestPki::new("pi-1");
        let follower = pki.serve().await;
        let leader = pki.serve().await;
        let refusal = not_leader(&leader.addr);
        follower.with(|s| s.refuse_heartbeats = Some(refusal));
        let shutdown = CancellationToken::new();
        // The agent knows only the follower: the leader's address comes
        // from the refusal alone.
        let (_usage, feed) = no_usage();
        let link = tokio::spawn(heartbeat_loop(
            pki.masters(&[&follower]),
            node("pi-1"),
            Duration::from_millis(50),
            feed,
            shutdown.clone(),
        ));
        let beats = leader.until_heartbeats(3).await;
        assert!(beats.iter().all(|(name, _)| name == "pi-1"), "{beats:?}");
        follower.with(|s| {
            assert!(s.heartbeat_calls >= 1, "the follower was asked first");
            assert!(s.heartbeats.is_empty(), "the follower took heartbeats");
        });
        shutdown.cancel();
        within("the heartbeat loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_master_that_forgot_the_node_gets_it_registered_again() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        master.with(|s| s.forget_node = 1);
        let shutdown = CancellationToken::new();
        let (_usage, feed) = no_usage();
        let link = tokio::spawn(heartbeat_loop(
            pki.masters(&[&master]),
            node("pi-1"),
            Duration::from_millis(50),
            feed,
            shutdown.clone(),
        ));
        master.until_heartbeats(1).await;
        master.with(|s| {
            assert_eq!(
                s.registered.len(),
                2,
                "registered at start and after NOT_FOUND"
            );
            assert_eq!(s.heartbeat_calls, 2, "one refused stream, one taken");
        });
        shutdown.cancel();
        within("the heartbeat loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_reading_rides_on_the_first_heartbeat_of_a_stream_and_each_new_one_once() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let (usage, feed) = no_usage();
        usage.send_replace(reading(111, Instant::now()));
        let shutdown = CancellationToken::new();
        let link = tokio::spawn(heartbeat_loop(
            pki.masters(&[&master]),
            node("pi-1"),
            Duration::from_millis(50),
            feed,
            shutdown.clone(),
        ));
        master.until_heartbeats(3).await;
        usage.send_replace(reading(222, Instant::now()));
        let usages = master
            .until("the second reading", |s| {
                (s.usages.len() >= 2).then(|| s.usages.clone())
            })
            .await;
        master
            .until_heartbeats(master.with(|s| s.heartbeats.len()) + 3)
            .await;
        let (beats, usages_now) = master.with(|s| (s.heartbeats.len(), s.usages.clone()));
        let cpu: Vec<u64> = usages_now.iter().map(|u| u.cpu_nanocores).collect();
        assert_eq!(cpu, [111, 222], "each reading once, of {beats} heartbeats");
        assert_eq!(usages[0].window_millis, 10_000);
        shutdown.cancel();
        within("the heartbeat loop to stop", link).await.unwrap();
    }

    #[test]
    fn a_reading_goes_with_its_age_and_a_new_stream_gets_the_newest_again() {
        let (usage, mut feed) = no_usage();
        assert_eq!(take_usage(&mut feed, true), None, "no reading yet");
        let taken = Instant::now() - Duration::from_millis(1500);
        usage.send_replace(reading(7, taken));
        let sent = take_usage(&mut feed, false).expect("a new reading");
        assert_eq!(sent.cpu_nanocores, 7);
        assert!(
            (1500..5000).contains(&sent.age_millis),
            "age {} ms",
            sent.age_millis
        );
        assert_eq!(take_usage(&mut feed, false), None, "sent once");
        let again = take_usage(&mut feed, true).expect("a new stream's first");
        assert_eq!(again.cpu_nanocores, 7);
        drop(usage);
        assert_eq!(take_usage(&mut feed, false), None);
        assert!(take_usage(&mut feed, true).is_some(), "the last one stays");
    }
}
