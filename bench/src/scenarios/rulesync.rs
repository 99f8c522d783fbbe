//! `rulesync`: how long an agent takes to put one Service change into its
//! nftables table with many Services present (issue 18: p99 ≤ 50 ms with
//! 1,000 Services).
//!
//! - The path timed is the agent's own ([`skiff_agent::network`]): its
//!   rules for every Service port sorted, the endpoints of those with
//!   affinity kept in their places, the commands for the Service ports
//!   that changed built (`nftables::service_changes`) and applied in one
//!   transaction through the agent's libnftables session
//!   (`nftables::Nftables`), as `PodNetwork::set_services` does on every
//!   change of the Services or Endpoints it is told. The table is first
//!   built whole (`nftables::ruleset`), as at the agent's start:
//!   `first_apply_ms`.
//! - Then as many changes again, each through an `nft -j -f -` process
//!   (`Nftables::with_nft_command`: the agent's way before, and its way
//!   when the library is missing), in the same run: `nft_process_*` and
//!   the ratio of the p99s. Then `--cold` changes, each after the session
//!   has unloaded the library, so that it loads it and opens a context
//!   first (`cold_*`): the first change after a quiet spell.
//! - Each change moves both of one Service's endpoints (its two pods
//!   replaced), a different Service each time. Every fourth Service is a
//!   NodePort and every tenth has ClientIP affinity, so that the table has
//!   the chains and sets those bring. The part of each change spent
//!   building its commands is reported apart (`build_p50_ms`; the rest is
//!   libnftables and the kernel).
//! - It runs in a network namespace of its own: its thread unshares one,
//!   and the session (its socket opened from that thread) and `nft`,
//!   started from it, work there; the namespace goes with the thread. No
//!   table of the host is touched. Needs root, libnftables and `nft`.
//! - At the end, the table as the kernel holds it (`nft list`) must have
//!   the last change: the run fails otherwise.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_agent::network::nftables::{
    self, DnsRedirect, Exposure, Leftovers, Nftables, ServiceRule, TableScope,
};
use skiff_agent::network::subnet::Subnet;

use super::common::round;
use crate::latency::Latencies;

#[derive(Debug, clap::Args)]
pub struct RulesyncArgs {
    /// Services in the table, one port each.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Changes timed.
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// Changes timed each after the session has unloaded libnftables
    /// (idle), so that each loads it again first.
    #[arg(long, default_value_t = 5)]
    pub cold: usize,
}

/// How long the session for the cold changes waits before unloading the
/// library (the agent waits `nftables::LIBRARY_IDLE`; what a cold change
/// costs does not depend on how long it was idle).
const COLD_IDLE: Duration = Duration::from_millis(100);

/// Service `i`'s clusterIP: inside the service CIDR, past its first
/// addresses.
fn cluster_ip(i: usize) -> Ipv4Addr {
    let octet = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 43, octet(1 + i / 250), octet(1 + i % 250))
}

/// The addresses of Service `i`'s two pods: at the start (`change`
/// `None`, in 10.42.0.x and 10.42.100.x), or those that replace them in
/// change `change`, which no other pod has (10.42.101-199.x, for up to
/// 12,375 changes), so that the table shows whether it has that change.
fn pod_ips(i: usize, change: Option<usize>) -> [Ipv4Addr; 2] {
    let octet = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
    match change {
        None => [0, 100].map(|third| Ipv4Addr::new(10, 42, third, octet(1 + i % 250))),
        Some(change) => {
            let n = change % 12_375;
            let (third, fourth) = (octet(101 + n / 125), octet(1 + 2 * (n % 125)));
            [
                Ipv4Addr::new(10, 42, third, fourth),
                Ipv4Addr::new(10, 42, third, fourth + 1),
            ]
        }
    }
}

fn rule(i: usize, change: Option<usize>) -> ServiceRule {
    ServiceRule {
        cluster_ip: cluster_ip(i),
        protocol: "tcp",
        port: 80,
        endpoints: pod_ips(i, change).map(|ip| (ip, 8080)).to_vec(),
        exposure: Exposure {
            node_port: (i % 4 == 0).then(|| 30000 + u16::try_from(i % 2700).unwrap_or(0)),
            affinity_seconds: (i % 10 == 0).then_some(10_800),
            ..Exposure::default()
        },
    }
}

/// The node's table taken from `held` to `rules` as the agent does it
/// (`PodNetwork::set_services`): the rules sorted, the endpoints of those
/// with affinity kept in their places (`nftables::keep_endpoint_places`),
/// the changed Service ports' commands built
/// (`nftables::service_changes`) and applied in one transaction through
/// `session`; how long building them took, the rules the table now holds
/// and what the change left for the next to delete.
async fn sync(
    session: &Nftables,
    scope: TableScope,
    held: &[ServiceRule],
    rules: &[ServiceRule],
    leftovers: &Leftovers,
) -> anyhow::Result<(Duration, Vec<ServiceRule>, Leftovers)> {
    let started = Instant::now();
    let mut sorted = rules.to_vec();
    sorted.sort();
    nftables::keep_endpoint_places(held, &mut sorted);
    let changes = nftables::service_changes(scope, held, &sorted, leftovers)
        .context("the change cannot be made in place")?;
    let built = started.elapsed();
    session
        .apply(&changes.commands)
        .await
        .context("nft refused the agent's change")?;
    Ok((built, sorted, changes.leftovers))
}

/// Changes timed through one session.
#[derive(Default)]
struct Timed {
    latencies: Latencies,
    building: Latencies,
}

/// What the table holds, between changes.
struct Table {
    rules: Vec<ServiceRule>,
    leftovers: Leftovers,
    /// The last change: the Service and the change's number.
    last: (usize, usize),
}

/// Changes `changes` (numbered from `first`) made through `session`.
async fn time_changes(
    session: &Nftables,
    scope: TableScope,
    table: &mut Table,
    services: usize,
    changes: std::ops::Range<usize>,
) -> anyhow::Result<Timed> {
    let mut timed = Timed::default();
    for change in changes {
        let i = (change * 7919) % services;
        let mut next = table.rules.clone();
        let at = next
            .iter()
            .position(|r| r.cluster_ip == cluster_ip(i))
            .context("the Service to change")?;
        next[at] = rule(i, Some(change));
        let started = Instant::now();
        let (built, held, left) =
            sync(session, scope, &table.rules, &next, &table.leftovers).await?;
        timed.latencies.push(started.elapsed());
        timed.building.push(built);
        table.rules = held;
        table.leftovers = left;
        table.last = (i, change);
    }
    Ok(timed)
}

pub async fn run(args: RulesyncArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "rulesync makes a network namespace and an nftables table in it: run it as root with nft installed"
    );
    anyhow::ensure!(
        args.services > 0 && args.services <= 62_500,
        "--services: 1 to 62500"
    );
    anyhow::ensure!(args.changes > 0, "--changes: at least 1");
    // Its own thread and runtime: the thread's network namespace is the
    // one nft runs in.
    let measured = std::thread::Builder::new()
        .name("rulesync".into())
        .spawn(move || -> anyhow::Result<serde_json::Value> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("unsharing a network namespace")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(measure(args))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the rulesync thread panicked"))??;
    Ok(measured)
}

async fn measure(args: RulesyncArgs) -> anyhow::Result<serde_json::Value> {
    let subnet = |s: &str| s.parse::<Subnet>().context("a bench subnet");
    let scope = TableScope {
        cluster: subnet("10.42.0.0/16")?,
        services: subnet("10.43.0.0/16")?,
        local: subnet("10.42.7.0/24")?,
        dns: Some(DnsRedirect {
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            listener: Ipv4Addr::new(10, 42, 7, 1),
        }),
    };
    let mut rules: Vec<ServiceRule> = (0..args.services).map(|i| rule(i, None)).collect();
    rules.sort();
    // The agent's session (libnftables), opened from this thread: in its
    // network namespace.
    let session = Nftables::open(None);
    anyhow::ensure!(
        session.uses_library(),
        "libnftables.so.1 cannot be loaded (apt-get install libnftables1): the agent would run nft for each change"
    );
    // The whole table, as the agent builds it at start.
    let started = Instant::now();
    session
        .apply(&nftables::ruleset(scope, &[], &rules))
        .await
        .context("nft refused the agent's table")?;
    let first = started.elapsed();
    let mut table = Table {
        rules,
        leftovers: Leftovers::default(),
        last: (0, 0),
    };
    let agent = time_changes(&session, scope, &mut table, args.services, 0..args.changes).await?;
    let agent_last = table.last;
    // Its thread unloads the library when it ends: the cold changes below
    // must not find it loaded.
    drop(session);
    // Then as many changes through an `nft` process each (the agent's way
    // until 2026-12-03, and its way without the library), for the ratio.
    let nft = time_changes(
        &Nftables::with_nft_command(),
        scope,
        &mut table,
        args.services,
        args.changes..2 * args.changes,
    )
    .await?;
    let nft_last = table.last;
    // Last, changes that each find the library unloaded.
    let cold_session = Nftables::open_unloading_after(COLD_IDLE, None);
    let mut cold = Timed::default();
    let mut found_loaded = 0;
    for change in 2 * args.changes..2 * args.changes + args.cold {
        tokio::time::sleep(COLD_IDLE * 3).await;
        let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
        if maps.contains("libnftables.so") {
            found_loaded += 1;
        }
        let one = time_changes(
            &cold_session,
            scope,
            &mut table,
            args.services,
            change..change + 1,
        )
        .await?;
        cold.latencies.extend(one.latencies);
    }
    let listed = std::process::Command::new("nft")
        .args(["list", "table", "ip", nftables::TABLE])
        .output()
        .context("listing the table")?;
    let listing = String::from_utf8_lossy(&listed.stdout);
    let lines = listing.lines().count();
    // The last change of each session.
    let missing = [agent_last, nft_last, table.last]
        .into_iter()
        .flat_map(|(i, change)| pod_ips(i, Some(change)).map(|ip| (i, format!("{ip}:8080"))))
        .find(|(_, moved_to)| !listing.contains(moved_to.as_str()));
    let pass = listed.status.success() && missing.is_none() && found_loaded == 0;
    let ms = |d: Duration| round(d.as_secs_f64() * 1000.0);
    Ok(serde_json::json!({
        "scenario": "rulesync",
        "services": args.services,
        "changes": args.changes,
        "first_apply_ms": ms(first),
        "p50_ms": round(agent.latencies.percentile_ms(50.0)),
        "p99_ms": round(agent.latencies.percentile_ms(99.0)),
        "max_ms": round(agent.latencies.percentile_ms(100.0)),
        "build_p50_ms": round(agent.building.percentile_ms(50.0)),
        "cold_changes": args.cold,
        "cold_p50_ms": round(cold.latencies.percentile_ms(50.0)),
        "cold_max_ms": round(cold.latencies.percentile_ms(100.0)),
        "nft_process_p50_ms": round(nft.latencies.percentile_ms(50.0)),
        "nft_process_p99_ms": round(nft.latencies.percentile_ms(99.0)),
        "p99_vs_nft_process": round(agent.latencies.percentile_ms(99.0) / nft.latencies.percentile_ms(99.0).max(0.001)),
        "table_lines": lines,
        "target_p99_ms": 50,
        "pass": pass,
        "failure": (!pass).then(|| match missing {
            Some((i, moved_to)) => format!("the table does not have a session's last change (service {i}'s endpoint {moved_to})"),
            None if found_loaded > 0 => format!("{found_loaded} of {} cold changes found libnftables still loaded", args.cold),
            None => format!("nft list failed: {}", String::from_utf8_lossy(&listed.stderr).trim()),
        }),
    }))
}
