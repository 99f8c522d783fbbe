//! The agent's metrics, served at `/metrics` beside `/healthz` and
//! `/readyz` (ready = containerd answers):
//!
//! - `skiff_container_starts_total{namespace,pod,container}` and
//!   `skiff_container_restarts_total{namespace,pod,container}`;
//! - `skiff_image_pulls_total{result}`: images pulled or found, or errors;
//! - `skiff_agent_events_dropped_total{reason}`: Kubernetes Events not
//!   delivered (`queue_full`, `unreachable`, `refused`; see
//!   `master_link::events`);
//! - `skiff_agent_pods`: pods this agent runs.

use std::sync::Arc;

use skiff_telemetry::{CounterVec, Registry};

#[derive(Clone)]
pub struct AgentMetrics {
    pub registry: Arc<Registry>,
    pub container_starts: Arc<CounterVec>,
    pub container_restarts: Arc<CounterVec>,
    pub image_pulls: Arc<CounterVec>,
    pub events_dropped: Arc<CounterVec>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        AgentMetrics {
            container_starts: registry.counter(
                "skiff_container_starts_total",
                "Containers started, first runs and restarts.",
                &["namespace", "pod", "container"],
            ),
            container_restarts: registry.counter(
                "skiff_container_restarts_total",
                "Containers restarted after they exited or failed a liveness probe.",
                &["namespace", "pod", "container"],
            ),
            image_pulls: registry.counter(
                "skiff_image_pulls_total",
                "Images made ready for a container, by result (ok or error).",
                &["result"],
            ),
            events_dropped: registry.counter(
                "skiff_agent_events_dropped_total",
                "Kubernetes Events about the node and its pods that no master took, by reason.",
                &["reason"],
            ),
            registry,
        }
    }
}
