//! `skiff-bench`: benchmark scenarios run against real `skiff` processes it
//! starts itself in a temp dir. Progress goes to stderr; the last line of
//! stdout is one JSON object with the figures (see shared/BENCH.md).

mod etcd_api;
mod etcd_cluster;
mod latency;
mod proc_stats;
mod scenarios;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "skiff-bench", about = "skiff benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Raft write throughput and latency of fsynced creates, optionally
    /// next to etcd's.
    Store(scenarios::store::StoreArgs),
    /// Scheduling throughput onto hollow nodes.
    Schedule(scenarios::schedule::ScheduleArgs),
    /// Master CPU and memory with many heartbeating nodes.
    Heartbeat(scenarios::heartbeat::HeartbeatArgs),
    /// Failure detection, rescheduling, and false evictions on lossy links.
    Failover(scenarios::failover::FailoverArgs),
    /// Disk writes and CPU of an idle cluster.
    Idle(scenarios::idle::IdleArgs),
    /// Memory, start-up time and binary size.
    Footprint(scenarios::footprint::FootprintArgs),
    /// Pod-to-pod throughput over the VXLAN overlay vs host-to-host.
    Overlay(scenarios::overlay::OverlayArgs),
    /// Pod start latency on a real node (containerd), local image.
    Podstart(scenarios::podstart::PodstartArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.scenario {
            Scenario::Store(args) => scenarios::store::run(args).await,
            Scenario::Schedule(args) => scenarios::schedule::run(args).await,
            Scenario::Heartbeat(args) => scenarios::heartbeat::run(args).await,
            Scenario::Failover(args) => scenarios::failover::run(args).await,
            Scenario::Idle(args) => scenarios::idle::run(args).await,
            Scenario::Podstart(args) => scenarios::podstart::run(args).await,
            Scenario::Overlay(args) => scenarios::overlay::run(args).await,
            Scenario::Footprint(args) => scenarios::footprint::run(args).await,
        }
    });
    match result {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
