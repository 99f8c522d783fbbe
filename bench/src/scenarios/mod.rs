//! One module per BENCH.md scenario.

pub mod api;
pub mod common;
pub mod cron;
pub mod daemonset;
pub mod disk_idle;
pub mod dns;
pub mod exec;
pub mod failover;
pub mod footprint;
pub mod heartbeat;
pub mod idle;
pub mod jobs;
pub mod metrics;
pub mod nodeport;
pub mod overlay;
pub mod podstart;
pub mod rbac;
pub mod rulesync;
pub mod scale;
pub mod schedule;
pub mod store;
