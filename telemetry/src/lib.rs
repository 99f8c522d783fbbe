//! Telemetry shared by master and agent: a small metrics registry that
//! renders the Prometheus text exposition format (version 0.0.4), and the
//! HTTP endpoint serving it at `/metrics` beside `/healthz` (the process
//! answers) and `/readyz` (it can do its job: a master with a leader, an
//! agent connected to containerd).

pub mod endpoint;
pub mod registry;
pub mod sd_notify;

pub use endpoint::{serve, NotReady, Probes};
pub use registry::{CounterVec, GaugeFn, HistogramVec, Registry};
