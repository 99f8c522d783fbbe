//! `skiff-bench`: benchmark scenarios run against real `skiff` processes it
//! starts itself in a temp dir. Progress goes to stderr; the last line of
//! stdout is one JSON object with the figures (see shared/BENCH.md). A
//! scenario that gates its own figures (`scale`, `api`, `rbac`, `metrics`,
//! and `jobs` on its completion counts) reports `"pass": false` and why
//! (`"failure"`); the process then exits non-zero after printing them, so
//! CI fails loudly.

// The `api` scenario's report is one `serde_json::json!` with many fields.
#![recursion_limit = "256"]

mod etcd_api;
mod etcd_cluster;
mod latency;
mod proc_stats;
mod rest_client;
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
    /// A DaemonSet's pods bound on every hollow node.
    Daemonset(scenarios::daemonset::DaemonsetArgs),
    /// Jobs run to completion on hollow nodes: Jobs and pod completions
    /// per second, master CPU and memory.
    Jobs(scenarios::jobs::JobsArgs),
    /// How late CronJobs scheduled every minute fire.
    Cron(scenarios::cron::CronArgs),
    /// Master CPU and memory with many heartbeating nodes.
    Heartbeat(scenarios::heartbeat::HeartbeatArgs),
    /// What the nodes' resource usage readings and the metrics API
    /// (`kubectl top`) cost the master: its CPU with and without them.
    Metrics(scenarios::metrics::MetricsArgs),
    /// Failure detection, rescheduling, and false evictions on lossy links.
    Failover(scenarios::failover::FailoverArgs),
    /// Disk writes and CPU of an idle cluster.
    Idle(scenarios::idle::IdleArgs),
    /// Disk writes of an idle node (server, containerd, shims) with a pod.
    DiskIdle(scenarios::disk_idle::DiskIdleArgs),
    /// Memory, start-up time and binary size.
    Footprint(scenarios::footprint::FootprintArgs),
    /// Pod-to-pod throughput over the VXLAN overlay vs host-to-host.
    Overlay(scenarios::overlay::OverlayArgs),
    /// Throughput through a NodePort vs straight to the pod, from a LAN
    /// host.
    Nodeport(scenarios::nodeport::NodeportArgs),
    /// How long one Service change takes to reach an agent's nftables
    /// table with many Services in it.
    Rulesync(scenarios::rulesync::RulesyncArgs),
    /// Pod start latency on a real node (containerd), local image.
    Podstart(scenarios::podstart::PodstartArgs),
    /// Whether hot paths grow with the number of objects: the same probes
    /// at a fraction of the load and at full load.
    Scale(scenarios::scale::ScaleArgs),
    /// `kubectl exec` latency against `ctr task exec`, and `kubectl
    /// port-forward` throughput against a direct connection to the pod.
    Exec(scenarios::exec::ExecArgs),
    /// The Kubernetes REST API beside gRPC on the same masters: creates,
    /// lists of many pods as JSON and as a Table, many watchers.
    Api(scenarios::api::ApiArgs),
    /// What RBAC authorization adds to a service account's REST requests
    /// with many RoleBindings of others stored, against the same requests
    /// without them, in alternating blocks.
    Rbac(scenarios::rbac::RbacArgs),
    /// Cluster DNS: skiff's DNS server against dnsmasq serving the same
    /// names, queries per second and latency with dnsperf.
    Dns(scenarios::dns::DnsArgs),
    /// skiff's DNS server alone, until stdin closes (what `dns` runs as a
    /// child).
    #[command(hide = true)]
    DnsServer(scenarios::dns::DnsServerArgs),
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
            Scenario::Daemonset(args) => scenarios::daemonset::run(args).await,
            Scenario::Jobs(args) => scenarios::jobs::run(args).await,
            Scenario::Cron(args) => scenarios::cron::run(args).await,
            Scenario::Heartbeat(args) => scenarios::heartbeat::run(args).await,
            Scenario::Metrics(args) => scenarios::metrics::run(args).await,
            Scenario::Failover(args) => scenarios::failover::run(args).await,
            Scenario::Idle(args) => scenarios::idle::run(args).await,
            Scenario::DiskIdle(args) => scenarios::disk_idle::run(args).await,
            Scenario::Podstart(args) => scenarios::podstart::run(args).await,
            Scenario::Overlay(args) => scenarios::overlay::run(args).await,
            Scenario::Nodeport(args) => scenarios::nodeport::run(args).await,
            Scenario::Rulesync(args) => scenarios::rulesync::run(args).await,
            Scenario::Footprint(args) => scenarios::footprint::run(args).await,
            Scenario::Scale(args) => scenarios::scale::run(args).await,
            Scenario::Exec(args) => scenarios::exec::run(args).await,
            Scenario::Api(args) => scenarios::api::run(args).await,
            Scenario::Rbac(args) => scenarios::rbac::run(args).await,
            Scenario::Dns(args) => scenarios::dns::run(args).await,
            Scenario::DnsServer(args) => scenarios::dns::serve(args).await,
        }
    });
    match result {
        Ok(report) => {
            println!("{report}");
            if let Some(failure) = failure_of(&report) {
                eprintln!("error: {failure}");
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Why a scenario that gates its own figures failed: set when the report
/// says `"pass": false`.
fn failure_of(report: &serde_json::Value) -> Option<String> {
    if report.get("pass").and_then(serde_json::Value::as_bool) != Some(false) {
        return None;
    }
    let why = report.get("failure").and_then(serde_json::Value::as_str);
    Some(why.unwrap_or("the scenario did not pass").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_report_that_says_it_did_not_pass_fails_the_run() {
        assert_eq!(failure_of(&serde_json::json!({"p50_ms": 1.0})), None);
        assert_eq!(failure_of(&serde_json::json!({"pass": true})), None);
        let failed = serde_json::json!({"pass": false, "failure": "scale: slow"});
        assert_eq!(failure_of(&failed).as_deref(), Some("scale: slow"));
        let unexplained = serde_json::json!({"pass": false});
        assert!(failure_of(&unexplained).is_some());
    }
}
