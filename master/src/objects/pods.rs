//! What a pod's status says about it, as the scheduler, the controllers and
//! node lifecycle all ask: is it Ready, is it still wanted, is it
//! terminating or finished, where is it bound; and the image pull policy a
//! container gets by default.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

/// The node a pod object is bound to (`""` when unbound or not a pod).
pub fn bound_node(object: &Object) -> &str {
    match &object.kind {
        Some(Body::Pod(p)) => p.spec.as_ref().map_or("", |s| s.node_name.as_str()),
        _ => "",
    }
}

/// Whether a pod counts as Ready (its Ready condition is True).
pub fn pod_is_ready(pod: &v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Whether a pod is still wanted: not being deleted (terminating) and not
/// finished. Controllers count only these: a terminating pod is replaced
/// at once, and a Service does not send to it.
pub fn pod_is_active(pod: &v1::Pod) -> bool {
    !pod_is_terminating(pod) && !pod_is_finished(pod)
}

/// Whether a pod has finished (Succeeded or Failed): nothing of it runs.
pub fn pod_is_finished(pod: &v1::Pod) -> bool {
    let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
    phase == "Succeeded" || phase == "Failed"
}

/// Whether a pod is being deleted (terminating): its node is stopping it.
pub fn pod_is_terminating(pod: &v1::Pod) -> bool {
    pod.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let has_digest = image.contains('@');
    match last.split_once(':') {
        _ if has_digest => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}
