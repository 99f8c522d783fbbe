//! What a pod's status says about it, as the scheduler, the controllers and
//! node lifecycle all ask: is it Ready, is it still wanted.

use skiff_proto::v1;

/// Whether a pod counts as Ready (its Ready condition is True).
pub fn pod_is_ready(pod: &v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Whether a pod is still wanted: not being deleted and not finished.
pub fn pod_is_active(pod: &v1::Pod) -> bool {
    let deleting = pod
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    !deleting && phase != "Succeeded" && phase != "Failed"
}
