//! The directories of this node's `local-path` PersistentVolumes, under
//! `<data dir>/storage/<volume>`: the agent tells the masters where they
//! live (the Node annotation [`STORAGE_DIR_ANNOTATION`], which the
//! provisioner puts in each volume's `hostPath`), makes each one when a pod
//! first mounts it (`pods::volumes::claim`), and removes the directory of
//! a volume that was deleted, as k3s's local-path-provisioner does for
//! reclaim policy `Delete`: a small reconcile loop that asks the leader,
//! for each directory, whether its volume still exists. A directory with a
//! `<volume>.retain` marker beside it (reclaim policy `Retain`) is kept,
//! and so is anything not named like a provisioned volume (`pvc-...`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::master_link::{ConfigKind, ConfigSource};
use crate::pods::volumes::claim::{retain_marker, RETAIN_SUFFIX};

/// The Node annotation naming the directory of this node's `local-path`
/// volumes: the object model's, which the master's provisioner reads.
pub use skiff_objects::storage::STORAGE_DIR_ANNOTATION;

/// How often deleted volumes' directories are looked for.
pub const CLEAN_INTERVAL: Duration = Duration::from_secs(10);

/// Where this node's `local-path` volumes live.
pub fn storage_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// The volume directories under `dir` the clean-up may remove: named as
/// provisioned volumes are, without a retain marker.
fn candidates(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let path = e.path();
            let ours = name.starts_with("pvc-") && !name.ends_with(RETAIN_SUFFIX);
            (ours && !retain_marker(&path).exists()).then_some((name, path))
        })
        .collect();
    out.sort();
    out
}

/// One pass: removes the directory of every volume under `dir` that the
/// masters say no longer exists; the names removed. A volume that cannot
/// be read now (no master) is left for the next pass.
pub async fn clean_once(source: &dyn ConfigSource, dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for (name, path) in candidates(dir) {
        match source
            .fetch_storage(ConfigKind::PersistentVolume, "", &name)
            .await
        {
            Ok(None) => match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(volume = %name, path = %path.display(), "removed the directory of a deleted local-path volume");
                    removed.push(name);
                }
                Err(e) => {
                    tracing::warn!(volume = %name, path = %path.display(), error = %e, "cannot remove the directory of a deleted volume")
                }
            },
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::debug!(volume = %name, error = %e, "cannot tell whether a volume exists")
            }
        }
    }
    removed
}

/// Runs [`clean_once`] every [`CLEAN_INTERVAL`] until `shutdown`.
pub async fn clean_loop(source: Arc<dyn ConfigSource>, dir: PathBuf, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CLEAN_INTERVAL) => {}
        }
        clean_once(source.as_ref(), &dir).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_link::{StaticConfigSource, StorageObject};

    #[tokio::test]
    async fn only_directories_of_deleted_volumes_without_retain_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = storage_dir(tmp.path());
        for name in ["pvc-live", "pvc-gone", "pvc-kept", "by-hand"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("data"), b"x").unwrap();
        }
        std::fs::write(dir.join("pvc-kept.retain"), b"").unwrap();
        let source = StaticConfigSource::default();
        source.put_storage(
            ConfigKind::PersistentVolume,
            "",
            "pvc-live",
            StorageObject::default(),
        );
        let removed = clean_once(&source, &dir).await;
        assert_eq!(removed, ["pvc-gone"]);
        assert!(!dir.join("pvc-gone").exists());
        for kept in ["pvc-live", "pvc-kept", "by-hand"] {
            assert!(dir.join(kept).join("data").exists(), "{kept}");
        }
        // No master: nothing is removed.
        source.remove_storage(ConfigKind::PersistentVolume, "", "pvc-live");
        source.fail_next(1);
        assert!(clean_once(&source, &dir).await.is_empty());
        assert!(dir.join("pvc-live").exists());
        assert_eq!(clean_once(&source, &dir).await, ["pvc-live"]);
    }
}
