//! `persistentVolumeClaim` volumes: the claim is read from the masters,
//! then the PersistentVolume it is bound to, and the volume's directory on
//! this node is what the pod's containers bind-mount:
//!
//! - a `local-path` volume (`pv.kubernetes.io/provisioned-by:
//!   rancher.io/local-path`, skiff's built-in provisioner): its `hostPath`
//!   directory, made here (mode 0777, as k3s's local-path-provisioner
//!   makes it) the first time a pod uses it. Beside it, `<dir>.retain`
//!   records that its reclaim policy is `Retain`, so that the node's
//!   clean-up ([`crate::local_volumes`]) keeps its data once the volume is
//!   deleted;
//! - a static `hostPath` volume: the path, checked as its `type` says;
//! - a static `local` volume: the path, which must exist.
//!
//! A claim that is not bound yet fails the volume (the pod waits in
//! ContainerCreating and the worker tries again), as the kubelet does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::host_path::{self, HostPathError};
use crate::master_link::{ConfigKind, ConfigSource, FetchError};

/// The provisioner of the volumes this node makes the directories of, and
/// the volume annotation naming its provisioner: the object model's.
pub use skiff_objects::storage::{LOCAL_PATH_PROVISIONER, PROVISIONED_BY_ANNOTATION};
/// Beside a `local-path` volume's directory: its data outlives the volume.
pub const RETAIN_SUFFIX: &str = ".retain";

/// Why a claim's volume cannot be mounted, in the kubelet's words where
/// it has them.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("persistentvolumeclaim {0:?} not found")]
    ClaimNotFound(String),
    #[error(
        "PVC {namespace}/{name} is not bound yet (its phase is {phase:?}); waiting for its volume"
    )]
    NotBound {
        namespace: String,
        name: String,
        phase: String,
    },
    #[error("persistentvolume {0:?} not found")]
    VolumeNotFound(String),
    #[error("persistentvolume {volume:?} is not bound to claim {namespace}/{name}")]
    BoundElsewhere {
        volume: String,
        namespace: String,
        name: String,
    },
    #[error("persistentvolume {0:?} has neither hostPath nor local: skiff mounts only those")]
    NoPath(String),
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error("local volume path {}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a claim's volume is held on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A directory skiff's `local-path` provisioner stands for; `retain`
    /// when its reclaim policy keeps the data.
    LocalPath { retain: bool },
    /// A static `hostPath` volume, with its `type`.
    HostPath { kind: String },
    /// A static `local` volume.
    Local,
}

/// The volume a claim is bound to, as this node mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedVolume {
    pub volume: String,
    pub path: PathBuf,
    pub source: VolumeSource,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Reads the claim `name` in `namespace` and the volume it is bound to.
pub async fn resolve(
    source: &dyn ConfigSource,
    namespace: &str,
    name: &str,
) -> Result<ClaimedVolume, ClaimError> {
    let claim = source
        .fetch_storage(ConfigKind::PersistentVolumeClaim, namespace, name)
        .await?
        .ok_or_else(|| ClaimError::ClaimNotFound(name.to_owned()))?;
    let volume_name = text(&claim.fields, "/spec/volumeName").to_owned();
    let phase = text(&claim.fields, "/status/phase");
    if volume_name.is_empty() || phase != "Bound" {
        return Err(ClaimError::NotBound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            phase: phase.to_owned(),
        });
    }
    let volume = source
        .fetch_storage(ConfigKind::PersistentVolume, "", &volume_name)
        .await?
        .ok_or_else(|| ClaimError::VolumeNotFound(volume_name.clone()))?;
    let reference = volume
        .fields
        .pointer("/spec/claimRef")
        .cloned()
        .unwrap_or(Value::Null);
    let uid = text(&reference, "/uid");
    let same = text(&reference, "/namespace") == namespace
        && text(&reference, "/name") == name
        && (uid.is_empty() || uid == claim.meta.uid);
    if !same {
        return Err(ClaimError::BoundElsewhere {
            volume: volume_name,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    let host_path = text(&volume.fields, "/spec/hostPath/path");
    let local = text(&volume.fields, "/spec/local/path");
    let provisioned = volume
        .meta
        .annotations
        .get(PROVISIONED_BY_ANNOTATION)
        .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
    let (path, source) = if !host_path.is_empty() {
        let source = if provisioned {
            let policy = text(&volume.fields, "/spec/persistentVolumeReclaimPolicy");
            VolumeSource::LocalPath {
                retain: policy != "Delete",
            }
        } else {
            VolumeSource::HostPath {
                kind: text(&volume.fields, "/spec/hostPath/type").to_owned(),
            }
        };
        (host_path, source)
    } else if !local.is_empty() {
        (local, VolumeSource::Local)
    } else {
        return Err(ClaimError::NoPath(volume_name));
    };
    Ok(ClaimedVolume {
        volume: volume_name,
        path: PathBuf::from(path),
        source,
    })
}

/// The file beside a `local-path` directory that says to keep its data.
pub fn retain_marker(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(RETAIN_SUFFIX);
    dir.with_file_name(name)
}

/// Makes the volume's directory ready to mount: a `local-path` one made
/// (0777) when missing and its retain marker kept as its policy says; a
/// `hostPath` one checked (or made) as its type says; a `local` one must
/// exist.
pub fn make_ready(volume: &ClaimedVolume) -> Result<(), ClaimError> {
    let path = &volume.path;
    let io = |source| ClaimError::Directory {
        path: path.clone(),
        source,
    };
    match &volume.source {
        VolumeSource::LocalPath { retain } => {
            if !path.is_dir() {
                std::fs::create_dir_all(path).map_err(io)?;
                let mode = std::fs::Permissions::from_mode(0o777);
                std::fs::set_permissions(path, mode).map_err(io)?;
            }
            let marker = retain_marker(path);
            if *retain && !marker.exists() {
                std::fs::write(&marker, b"").map_err(|source| ClaimError::Directory {
                    path: marker.clone(),
                    source,
                })?;
            } else if !*retain && marker.exists() {
                std::fs::remove_file(&marker).map_err(|source| ClaimError::Directory {
                    path: marker.clone(),
                    source,
                })?;
            }
            Ok(())
        }
        VolumeSource::HostPath { kind } => Ok(host_path::check(path, kind)?),
        VolumeSource::Local => match std::fs::metadata(path) {
            Ok(_) => Ok(()),
            Err(source) => Err(ClaimError::Local {
                path: path.clone(),
                source,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_link::{StaticConfigSource, StorageObject};
    use skiff_proto::v1;

    fn object(name: &str, uid: &str, annotations: &[(&str, &str)], fields: Value) -> StorageObject {
        StorageObject {
            meta: v1::ObjectMeta {
                name: name.into(),
                uid: uid.into(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            },
            fields,
        }
    }

    fn bound_claim(source: &StaticConfigSource, volume: &str) {
        let claim = object(
            "data",
            "c-1",
            &[],
            serde_json::json!({"spec": {"volumeName": volume}, "status": {"phase": "Bound"}}),
        );
        source.put_storage(ConfigKind::PersistentVolumeClaim, "shop", "data", claim);
    }

    fn local_path_volume(source: &StaticConfigSource, path: &Path, policy: &str) {
        let volume = object(
            "pvc-c-1",
            "v-1",
            &[(PROVISIONED_BY_ANNOTATION, LOCAL_PATH_PROVISIONER)],
            serde_json::json!({"spec": {
                "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
                "persistentVolumeReclaimPolicy": policy,
                "claimRef": {"namespace": "shop", "name": "data", "uid": "c-1"},
            }}),
        );
        source.put_storage(ConfigKind::PersistentVolume, "", "pvc-c-1", volume);
    }

    #[tokio::test]
    async fn a_local_path_claim_is_its_volumes_directory_made_world_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("storage/pvc-c-1");
        let source = StaticConfigSource::default();
        bound_claim(&source, "pvc-c-1");
        local_path_volume(&source, &dir, "Delete");
        let claimed = resolve(&source, "shop", "data").await.unwrap();
        assert_eq!(claimed.path, dir);
        assert_eq!(claimed.source, VolumeSource::LocalPath { retain: false });
        make_ready(&claimed).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        assert!(!retain_marker(&dir).exists());
        // Data there stays when it is made ready again.
        std::fs::write(dir.join("keep"), b"1").unwrap();
        local_path_volume(&source, &dir, "Retain");
        let claimed = resolve(&source, "shop", "data").await.unwrap();
        make_ready(&claimed).unwrap();
        assert!(dir.join("keep").exists());
        assert_eq!(
            retain_marker(&dir),
            tmp.path().join("storage/pvc-c-1.retain")
        );
        assert!(retain_marker(&dir).exists(), "Retain is recorded");
    }

    #[tokio::test]
    async fn an_unbound_missing_or_foreign_claim_fails_naming_it() {
        let source = StaticConfigSource::default();
        let missing = resolve(&source, "shop", "data").await.unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"persistentvolumeclaim "data" not found"#
        );
        let pending = object(
            "data",
            "c-1",
            &[],
            serde_json::json!({"spec": {}, "status": {"phase": "Pending"}}),
        );
        source.put_storage(ConfigKind::PersistentVolumeClaim, "shop", "data", pending);
        let unbound = resolve(&source, "shop", "data").await.unwrap_err();
        assert!(matches!(unbound, ClaimError::NotBound { .. }), "{unbound}");
        bound_claim(&source, "pvc-c-1");
        let gone = resolve(&source, "shop", "data").await.unwrap_err();
        assert!(matches!(gone, ClaimError::VolumeNotFound(_)), "{gone}");
        let foreign = object(
            "pvc-c-1",
            "v-1",
            &[],
            serde_json::json!({"spec": {
                "hostPath": {"path": "/srv"},
                "claimRef": {"namespace": "shop", "name": "data", "uid": "an-older-claim"},
            }}),
        );
        source.put_storage(ConfigKind::PersistentVolume, "", "pvc-c-1", foreign);
        let error = resolve(&source, "shop", "data").await.unwrap_err();
        assert!(
            matches!(error, ClaimError::BoundElsewhere { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn static_volumes_are_their_paths_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let source = StaticConfigSource::default();
        bound_claim(&source, "pvc-c-1");
        let local = object(
            "pvc-c-1",
            "v-1",
            &[],
            serde_json::json!({"spec": {
                "local": {"path": tmp.path().join("disk").display().to_string()},
                "claimRef": {"namespace": "shop", "name": "data"},
            }}),
        );
        source.put_storage(ConfigKind::PersistentVolume, "", "pvc-c-1", local);
        let claimed = resolve(&source, "shop", "data").await.unwrap();
        assert_eq!(claimed.source, VolumeSource::Local);
        let error = make_ready(&claimed).unwrap_err();
        assert!(matches!(error, ClaimError::Local { .. }), "{error}");
        std::fs::create_dir(tmp.path().join("disk")).unwrap();
        make_ready(&claimed).unwrap();
    }
}
