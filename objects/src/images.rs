//! What skiff reads of an image reference: the pull policy a container
//! of it gets by default (Kubernetes' rule: `Always` for `:latest` or an
//! untagged image, `IfNotPresent` for a tag or a digest).

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
