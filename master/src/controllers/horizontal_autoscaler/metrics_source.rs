//! The autoscaler's real [`PodUsageSource`]: the master's resource metrics
//! (`crate::resource_metrics::ResourceMetrics`, what the `metrics.k8s.io`
//! API serves), each pod's latest reading as the controller reads usage.

use super::{ContainerSample, PodUsageSource, UsageSample};
use crate::resource_metrics::ResourceMetrics;

impl PodUsageSource for ResourceMetrics {
    fn pod_usage(&self, namespace: &str, name: &str) -> Option<UsageSample> {
        let usage = self.pod(namespace, name)?;
        Some(UsageSample {
            timestamp: usage.timestamp,
            window: usage.window,
            containers: usage
                .containers
                .into_iter()
                .map(|c| ContainerSample {
                    name: c.name,
                    cpu_millis: c.cpu_millis,
                    memory_bytes: c.memory_bytes,
                })
                .collect(),
        })
    }
}
