//! `skiff-bench`: benchmark scenarios run against real `skiff` processes it
//! starts itself in a temp dir. Progress goes to stderr; the last line of
//! stdout is one JSON object with the figures (see shared/BENCH.md).

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
    /// Raft write throughput and latency of fsynced creates.
    Store(scenarios::store::StoreArgs),
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
