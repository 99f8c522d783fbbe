//! A pod's volumes on this node, made before any of its containers starts
//! and bind-mounted into them as their `volumeMounts` say. Each lives
//! under the pod's directory (`volumes/<plugin>/<volume>`, the kubelet's
//! plugin names), but for hostPath, which is the host's own path:
//!
//! - `emptyDir`: a directory (0777) the pod's containers share; with
//!   `medium: Memory` a tmpfs mounted on it through the sandbox, as big as
//!   the smallest of `sizeLimit`, the pod's memory limit and the node's
//!   allocatable memory;
//! - `hostPath`: the path, checked (or made) as its `type` says
//!   ([`host_path`]);
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files
//!   ([`projection`]) written by the kubelet's atomic writer
//!   ([`atomic_writer`]), secret and projected ones on a tmpfs so they never
//!   touch the node's disk. A projected `serviceAccountToken` is a token
//!   of the pod's service account bound to the pod, from the masters
//!   (`Api.RequestToken`), replaced after 80% of its lifetime or a day
//!   (`pod_config::needs_refresh`). They are written again when what they hold
//!   changes, which the worker checks every half minute; when their source
//!   cannot be read (no master, the object deleted) the files already
//!   there stay;
//! - `persistentVolumeClaim`: the directory of the PersistentVolume the
//!   claim is bound to ([`claim`]): a `local-path` volume's, made here, or
//!   a static `hostPath` or `local` volume's path; the pod waits while
//!   the claim is not bound. Read-only when the volume source says so.
//!
//! With the pod's `securityContext.fsGroup`, emptyDir, file and writable
//! persistent volumes belong to that group ([`ownership`]): group-readable files (writable
//! too in an emptyDir) and set-group-ID directories.
//!
//! A mount ([`PreparedVolumes::mounts`]) is read-only when it asks, and
//! always for file volumes, as Kubernetes mounts them. `subPath` mounts
//! the path inside the volume, resolved here (symlinks that leave the
//! volume are refused; missing directories of emptyDir and hostPath
//! volumes are made), so a file of a configMap volume mounted by subPath
//! keeps the content it had. `mountPropagation: HostToContainer` mounts
//! `rslave`, so mounts the host adds later show inside.
//!
//! On teardown [`unmount_all`] unmounts the pod's tmpfs mounts before its
//! directory is removed.

pub mod atomic_writer;
pub mod claim;
pub mod host_path;
pub mod ownership;
pub mod projection;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use skiff_objects::Quantity;
use skiff_proto::v1;

use crate::master_link::{ConfigSource, FetchError};
use crate::pods::downward_api::PodFacts;
use crate::pods::layout::PodLayout;
use crate::pods::pod_config::PodConfig;
use crate::pods::sandbox::{PodSandbox, SandboxError};
use crate::runtime::spec::ContainerMount;

use self::atomic_writer::{Payload, WriteError};
use self::claim::ClaimError;
use self::host_path::HostPathError;
use self::ownership::OwnershipError;
use self::projection::ProjectionError;

/// The directories of the volume plugins, named as the kubelet names them.
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
pub const PROJECTED: &str = "kubernetes.io~projected";

/// The plugins whose volumes may be tmpfs mounts.
const ON_TMPFS: [&str; 3] = [EMPTY_DIR, SECRET, PROJECTED];

/// A volume that could not be made, in the kubelet's words.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {reason}")]
pub struct VolumeError {
    pub volume: String,
    #[source]
    pub reason: Box<VolumeFailure>,
}

/// What went wrong making one volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeFailure {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Files(#[from] WriteError),
    #[error(transparent)]
    HostPath(#[from] HostPathError),
    #[error(transparent)]
    Tmpfs(#[from] SandboxError),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error("{}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("the volume has no source skiff knows")]
    NoSource,
}

/// Why a container's mounts could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("volumeMount {mount:?} of container {container:?}: the pod has no such volume")]
    NoVolume { mount: String, container: String },
    #[error(
        "failed to prepare subPath for volumeMount {mount:?} of container {container:?}: {reason}"
    )]
    SubPath {
        mount: String,
        container: String,
        reason: String,
    },
}

/// What a prepared volume holds, for mounting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// What the pod writes: an emptyDir, the host's path, a persistent
    /// volume.
    Writable,
    /// A persistent volume its claim's volume source mounts `readOnly`.
    ReadOnly,
    /// Files the agent writes (configMap, secret, downwardAPI, projected).
    Projected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Prepared {
    path: PathBuf,
    holds: Holds,
}

/// A pod's volumes, ready to mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedVolumes {
    volumes: BTreeMap<String, Prepared>,
}

impl PreparedVolumes {
    /// Where volume `name` is on the host.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(|v| v.path.as_path())
    }

    /// The bind mounts `container`'s `volumeMounts` ask for, the shallowest
    /// destinations first (so `/data` comes before `/data/cache`).
    pub fn mounts(&self, container: &v1::Container) -> Result<Vec<ContainerMount>, MountError> {
        let mut mounts = Vec::new();
        for m in &container.volume_mounts {
            let Some(volume) = self.volumes.get(&m.name) else {
                return Err(MountError::NoVolume {
                    mount: m.name.clone(),
                    container: container.name.clone(),
                });
            };
            let writable = volume.holds == Holds::Writable;
            let source = if m.sub_path.is_empty() {
                volume.path.clone()
            } else {
                let found = sub_path(&volume.path, &m.sub_path, writable);
                found.map_err(|reason| MountError::SubPath {
                    mount: m.name.clone(),
                    container: container.name.clone(),
                    reason,
                })?
            };
            mounts.push(ContainerMount {
                destination: m.mount_path.clone(),
                source: source.display().to_string(),
                read_only: m.read_only || !writable,
                host_to_container: m.mount_propagation == "HostToContainer",
            });
        }
        mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
        Ok(mounts)
    }
}

/// The path `sub` inside the volume at `root`, with symlinks resolved; one
/// that leaves the volume is refused. Missing directories are made when
/// `make` (emptyDir, hostPath), else refused.
fn sub_path(root: &Path, sub: &str, make: bool) -> Result<PathBuf, String> {
    if sub.starts_with('/') || sub.split('/').any(|part| part == "..") {
        return Err(format!(
            "subPath {sub:?} must be relative and stay in the volume"
        ));
    }
    let real_root = std::fs::canonicalize(root);
    let root = real_root.map_err(|e| format!("{}: {e}", root.display()))?;
    let mut at = root.clone();
    for part in Path::new(sub).components() {
        let Component::Normal(name) = part else {
            continue;
        };
        let next = at.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(_) => {
                let real = std::fs::canonicalize(&next)
                    .map_err(|e| format!("subPath {sub:?}: {}: {e}", next.display()))?;
                if !real.starts_with(&root) {
                    return Err(format!(
                        "subPath {sub:?} leaves the volume through a symlink"
                    ));
                }
                at = real;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && make => {
                std::fs::create_dir(&next)
                    .map_err(|e| format!("subPath {sub:?}: creating {}: {e}", next.display()))?;
                at = next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("subPath {sub:?} does not exist in the volume"));
            }
            Err(e) => return Err(format!("subPath {sub:?}: {}: {e}", next.display())),
        }
    }
    Ok(at)
}

/// What making a pod's volumes needs.
pub struct VolumeSetup<'a, S> {
    pub sandbox: &'a S,
    pub source: &'a dyn ConfigSource,
    pub layout: &'a PodLayout,
    pub facts: PodFacts<'a>,
}

impl<S: PodSandbox> VolumeSetup<'_, S> {
    /// Makes every volume of the pod ready: idempotent, and files are
    /// written again only when what they hold changed. The first volume
    /// that cannot be made is the error.
    pub async fn prepare(&self, config: &mut PodConfig) -> Result<PreparedVolumes, VolumeError> {
        let mut out = PreparedVolumes::default();
        let Some(spec) = self.facts.pod.spec.as_ref() else {
            return Ok(out);
        };
        for v in &spec.volumes {
            let prepared = self.prepare_one(v, config).await;
            let prepared = prepared.map_err(|reason| VolumeError {
                volume: v.name.clone(),
                reason: Box::new(reason),
            })?;
            out.volumes.insert(v.name.clone(), prepared);
        }
        Ok(out)
    }

    async fn prepare_one(
        &self,
        v: &v1::Volume,
        config: &mut PodConfig,
    ) -> Result<Prepared, VolumeFailure> {
        let volumes = self.layout.volumes_dir(self.facts.pod);
        let fs_group = fs_group(self.facts.pod);
        if let Some(e) = &v.empty_dir {
            let dir = volumes.join(EMPTY_DIR).join(&v.name);
            make_dir(&dir)?;
            if e.medium == "Memory" {
                let size = memory_size(e, &self.facts);
                self.sandbox.mount_tmpfs(&dir, size)?;
            }
            set_mode(&dir, dir_mode(fs_group))?;
            if let Some(gid) = fs_group.filter(|gid| ownership::needs(&dir, *gid)) {
                ownership::apply(&dir, gid, true)?;
            }
            return Ok(Prepared {
                path: dir,
                holds: Holds::Writable,
            });
        }
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            host_path::check(&path, h.r#type.as_deref().unwrap_or(""))?;
            return Ok(Prepared {
                path,
                holds: Holds::Writable,
            });
        }
        if let Some(source) = &v.persistent_volume_claim {
            let namespace = self
                .facts
                .pod
                .metadata
                .as_ref()
                .map_or("", |m| m.namespace.as_str());
            let claimed = claim::resolve(self.source, namespace, &source.claim_name).await?;
            claim::make_ready(&claimed)?;
            // As the kubelet does for a persistent volume it may write.
            if !source.read_only {
                let dir = &claimed.path;
                if let Some(gid) = fs_group.filter(|gid| ownership::needs(dir, *gid)) {
                    ownership::apply(dir, gid, true)?;
                }
            }
            return Ok(Prepared {
                path: claimed.path,
                holds: if source.read_only {
                    Holds::ReadOnly
                } else {
                    Holds::Writable
                },
            });
        }
        let (plugin, on_tmpfs) = if v.config_map.is_some() {
            (CONFIG_MAP, false)
        } else if v.secret.is_some() {
            (SECRET, true)
        } else if v.downward_api.is_some() {
            (DOWNWARD_API, false)
        } else if v.projected.is_some() {
            (PROJECTED, true)
        } else {
            return Err(VolumeFailure::NoSource);
        };
        let dir = volumes.join(plugin).join(&v.name);
        make_dir(&dir)?;
        if on_tmpfs {
            self.sandbox.mount_tmpfs(&dir, None)?;
        }
        set_mode(&dir, dir_mode(fs_group))?;
        let prepared = Prepared {
            path: dir.clone(),
            holds: Holds::Projected,
        };
        let mut files = match self.files(v, config).await {
            Ok(files) => files,
            Err(e) if atomic_writer::has_data(&dir) => {
                tracing::warn!(volume = %v.name, error = %e, "keeping the volume's files");
                return Ok(prepared);
            }
            Err(e) => return Err(e),
        };
        if fs_group.is_some() {
            // What the group is given, written with the files, so that an
            // unchanged payload is seen as unchanged.
            for file in files.values_mut() {
                file.mode |= 0o440;
            }
        }
        let changed = atomic_writer::write(&dir, &files)?;
        if changed {
            tracing::info!(volume = %v.name, dir = %dir.display(), "volume files written");
        }
        if let Some(gid) = fs_group.filter(|gid| changed || ownership::needs(&dir, *gid)) {
            ownership::apply(&dir, gid, false)?;
        }
        Ok(prepared)
    }

    /// The files of a configMap, secret, downwardAPI or projected volume,
    /// from what the masters say now.
    async fn files(
        &self,
        v: &v1::Volume,
        config: &mut PodConfig,
    ) -> Result<Payload, VolumeFailure> {
        let pod = self.facts.pod;
        let namespace = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
        let wanted = projection::references(v);
        let mut objects = config.read(self.source, namespace, &wanted).await?;
        let tokens = projection::tokens(v);
        if !tokens.is_empty() {
            let now = std::time::SystemTime::now();
            config
                .read_tokens(self.source, pod, &tokens, now, &mut objects)
                .await?;
        }
        Ok(projection::payload(v, &objects, &self.facts)?)
    }
}

fn make_dir(dir: &Path) -> Result<(), VolumeFailure> {
    std::fs::create_dir_all(dir).map_err(|source| VolumeFailure::Directory {
        path: dir.to_path_buf(),
        source,
    })
}

/// The group that owns the pod's volumes (`securityContext.fsGroup`).
fn fs_group(pod: &v1::Pod) -> Option<u32> {
    let context = pod.spec.as_ref()?.security_context.as_ref()?;
    context.fs_group.and_then(|gid| u32::try_from(gid).ok())
}

/// The mode of a volume's own directory: open to all, and set-group-ID
/// when the pod has an fsGroup.
fn dir_mode(fs_group: Option<u32>) -> u32 {
    match fs_group {
        Some(_) => 0o2777,
        None => 0o777,
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), VolumeFailure> {
    let permissions = std::fs::Permissions::from_mode(mode);
    std::fs::set_permissions(dir, permissions).map_err(|source| VolumeFailure::Directory {
        path: dir.to_path_buf(),
        source,
    })
}

/// The size of a memory-backed emptyDir, as the kubelet sizes it: the
/// smallest of the node's allocatable memory, the pod's memory limit (when
/// every container has one) and the volume's `sizeLimit`; `None` leaves
/// tmpfs its own default.
fn memory_size(e: &v1::EmptyDirVolumeSource, facts: &PodFacts<'_>) -> Option<u64> {
    let node = facts
        .node_allocatable
        .get("memory")
        .and_then(|m| positive_bytes(m.as_str()));
    let containers = facts
        .pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut pod_limit = (!containers.is_empty()).then_some(0i64);
    for c in containers {
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.get("memory"))
            .and_then(|m| positive_bytes(m.as_str()));
        pod_limit = match (pod_limit, limit) {
            (Some(sum), Some(limit)) => Some(sum.saturating_add(limit)),
            _ => None,
        };
    }
    let mut size = node;
    let bounds = [pod_limit, positive_bytes(&e.size_limit)];
    for bound in bounds.into_iter().flatten() {
        if size.is_none_or(|s| bound <= s) {
            size = Some(bound);
        }
    }
    size.and_then(|s| u64::try_from(s).ok())
}

/// A quantity in whole bytes, when it is one above zero.
fn positive_bytes(text: &str) -> Option<i64> {
    Quantity::parse(text)
        .ok()
        .map(|q| q.units_ceil())
        .filter(|b| *b > 0)
}

/// Unmounts every tmpfs of the pod whose directory is `pod_dir`, so its
/// files can be removed; a failure is logged and the rest still done.
pub fn unmount_all<S: PodSandbox>(sandbox: &S, pod_dir: &Path) {
    let volumes = PodLayout::volumes_dir_in(pod_dir);
    for plugin in ON_TMPFS {
        let Ok(entries) = std::fs::read_dir(volumes.join(plugin)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = sandbox.unmount(&path) {
                tracing::warn!(volume = %path.display(), error = %e, "cannot unmount a pod volume");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::master_link::{ConfigData, ConfigKind, StaticConfigSource, StorageObject};
    use crate::pods::sandbox::recording::{RecordingSandbox, SandboxCall};

    fn limited(name: &str, memory: Option<&str>) -> v1::Container {
        let limits: BTreeMap<String, String> = memory
            .map(|m| [("memory".to_owned(), m.to_owned())].into())
            .unwrap_or_default();
        v1::Container {
            name: name.into(),
            resources: Some(v1::ResourceRequirements {
                limits,
                requests: BTreeMap::new(),
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<v1::Container>, volumes: Vec<v1::Volume>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                uid: "u1".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers,
                volumes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_volumes_are_the_smallest_of_node_pod_and_size_limit() {
        let allocatable: BTreeMap<String, String> =
            [("memory".to_owned(), "1Gi".to_owned())].into();
        let size = |containers: Vec<v1::Container>, size_limit: &str| {
            let pod = pod(containers, vec![]);
            let facts = PodFacts {
                pod: &pod,
                host_ip: "",
                pod_ip: "",
                node_allocatable: &allocatable,
            };
            let volume = v1::EmptyDirVolumeSource {
                medium: "Memory".into(),
                size_limit: size_limit.into(),
            };
            memory_size(&volume, &facts)
        };
        let mi = |n: u64| Some(n << 20);
        let both = || vec![limited("a", Some("64Mi")), limited("b", Some("32Mi"))];
        assert_eq!(size(both(), ""), mi(96), "the pod's limit: the sum");
        assert_eq!(size(both(), "16Mi"), mi(16), "a smaller sizeLimit");
        assert_eq!(size(both(), "2Gi"), mi(96), "a larger sizeLimit");
        let one = || vec![limited("a", Some("64Mi")), limited("b", None)];
        assert_eq!(size(one(), ""), mi(1024), "a container without a limit");
        assert_eq!(size(one(), "8Mi"), mi(8));
        assert_eq!(size(one(), "0"), mi(1024), "zero is no limit");
    }

    fn mount(name: &str, path: &str, sub_path: &str) -> v1::VolumeMount {
        v1::VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub_path.into(),
            ..Default::default()
        }
    }

    /// Volumes `cache` (an emptyDir) and `config` (files) at temp dirs.
    fn prepared(root: &Path) -> PreparedVolumes {
        let cache = root.join("cache");
        let config = root.join("config");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        let mut files = Payload::new();
        let entry = atomic_writer::FileEntry {
            data: b"port=80".to_vec(),
            mode: 0o644,
        };
        files.insert("app.conf".into(), entry);
        atomic_writer::write(&config, &files).unwrap();
        let mut out = PreparedVolumes::default();
        let writable = Prepared {
            path: cache,
            holds: Holds::Writable,
        };
        out.volumes.insert("cache".into(), writable);
        let projected = Prepared {
            path: config,
            holds: Holds::Projected,
        };
        out.volumes.insert("config".into(), projected);
        out
    }

    #[test]
    fn mounts_are_read_only_for_files_and_sorted_shallowest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = prepared(tmp.path());
        let mut propagated = mount("cache", "/data/cache", "");
        propagated.mount_propagation = "HostToContainer".into();
        let mut read_only = mount("cache", "/data", "");
        read_only.read_only = true;
        let container = v1::Container {
            name: "main".into(),
            volume_mounts: vec![propagated, mount("config", "/etc/app", ""), read_only],
            ..Default::default()
        };
        let mounts = volumes.mounts(&container).unwrap();
        let cache = tmp.path().join("cache").display().to_string();
        let config = tmp.path().join("config").display().to_string();
        let expected = [
            ContainerMount {
                destination: "/data".into(),
                source: cache.clone(),
                read_only: true,
                host_to_container: false,
            },
            ContainerMount {
                destination: "/data/cache".into(),
                source: cache,
                read_only: false,
                host_to_container: true,
            },
            ContainerMount {
                destination: "/etc/app".into(),
                source: config,
                read_only: true,
                host_to_container: false,
            },
        ];
        assert_eq!(mounts, expected);
        let stray = v1::Container {
            name: "main".into(),
            volume_mounts: vec![mount("nope", "/x", "")],
            ..Default::default()
        };
        let error = volumes.mounts(&stray).unwrap_err();
        assert!(matches!(error, MountError::NoVolume { .. }), "{error}");
    }

    #[test]
    fn sub_paths_stay_in_their_volume_and_pin_a_files_current_content() {
        let tmp = tempfile::tempdir().unwrap();
        let volumes = prepared(tmp.path());
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let cache = tmp.path().join("cache");
        std::os::unix::fs::symlink(&outside, cache.join("escape")).unwrap();
        let container = |mounts: Vec<v1::VolumeMount>| v1::Container {
            name: "main".into(),
            volume_mounts: mounts,
            ..Default::default()
        };
        // A missing directory of an emptyDir is made.
        let made = volumes
            .mounts(&container(vec![mount("cache", "/logs", "a/b")]))
            .unwrap();
        assert!(cache.join("a/b").is_dir());
        let real_cache = std::fs::canonicalize(&cache).unwrap();
        let expected = real_cache.join("a/b").display().to_string();
        assert_eq!(made[0].source, expected);
        // A file of a files volume: its current timestamped copy.
        let pinned = volumes
            .mounts(&container(vec![mount(
                "config",
                "/etc/app.conf",
                "app.conf",
            )]))
            .unwrap();
        let link = tmp.path().join("config/..data");
        let data = std::fs::read_link(&link).unwrap();
        let real_config = std::fs::canonicalize(tmp.path().join("config")).unwrap();
        let expected = real_config.join(data).join("app.conf");
        assert_eq!(pinned[0].source, expected.display().to_string());
        assert!(pinned[0].read_only);
        // Out through a symlink, or missing in a files volume: refused.
        for (volume, sub, reason) in [
            ("cache", "escape", "leaves the volume"),
            ("cache", "escape/x", "leaves the volume"),
            ("config", "nope", "does not exist"),
        ] {
            let error = volumes
                .mounts(&container(vec![mount(volume, "/x", sub)]))
                .unwrap_err();
            assert!(error.to_string().contains(reason), "{sub}: {error}");
            assert!(!outside.join("x").exists(), "nothing made outside");
        }
    }

    #[tokio::test]
    async fn each_kind_of_volume_is_made_and_secrets_go_on_tmpfs() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(&tmp.path().join("data"));
        let host = tmp.path().join("host/dir");
        let volume = |name: &str| v1::Volume {
            name: name.into(),
            ..Default::default()
        };
        let mut scratch = volume("scratch");
        scratch.empty_dir = Some(Box::new(v1::EmptyDirVolumeSource::default()));
        let mut memory = volume("memory");
        memory.empty_dir = Some(Box::new(v1::EmptyDirVolumeSource {
            medium: "Memory".into(),
            size_limit: "16Mi".into(),
        }));
        let mut host_dir = volume("host");
        host_dir.host_path = Some(Box::new(v1::HostPathVolumeSource {
            path: host.display().to_string(),
            r#type: Some("DirectoryOrCreate".into()),
        }));
        let mut config = volume("config");
        config.config_map = Some(Box::new(v1::ConfigMapVolumeSource {
            name: "app".into(),
            default_mode: Some(0o644),
            ..Default::default()
        }));
        let mut secret = volume("creds");
        secret.secret = Some(Box::new(v1::SecretVolumeSource {
            secret_name: "creds".into(),
            default_mode: Some(0o400),
            ..Default::default()
        }));
        let volumes = vec![scratch, memory, host_dir, config, secret];
        let pod = pod(vec![limited("main", Some("64Mi"))], volumes);
        let allocatable = BTreeMap::new();
        let sandbox = RecordingSandbox::default();
        let source = StaticConfigSource::default();
        let app = ConfigData::text(&[("app.conf", "port=80")]);
        source.put(ConfigKind::ConfigMap, "shop", "app", app);
        let creds = ConfigData::text(&[("password", "hunter2")]);
        source.put(ConfigKind::Secret, "shop", "creds", creds);
        let setup = VolumeSetup {
            sandbox: &sandbox,
            source: &source,
            layout: &layout,
            facts: PodFacts {
                pod: &pod,
                host_ip: "",
                pod_ip: "",
                node_allocatable: &allocatable,
            },
        };
        let mut config = PodConfig::default();
        let prepared = setup.prepare(&mut config).await.expect("every volume");
        let dir = layout.volumes_dir(&pod);
        let path = |name: &str| prepared.path(name).expect(name).to_path_buf();
        assert_eq!(path("scratch"), dir.join(EMPTY_DIR).join("scratch"));
        assert!(path("scratch").is_dir());
        assert_eq!(path("host"), host);
        assert!(host.is_dir(), "DirectoryOrCreate made it");
        let conf_file = path("config").join("app.conf");
        let conf = std::fs::read_to_string(&conf_file).unwrap();
        assert_eq!(conf, "port=80");
        let password = path("creds").join("password");
        assert_eq!(std::fs::read_to_string(&password).unwrap(), "hunter2");
        let meta = std::fs::metadata(&password).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        // The memory emptyDir and the secret on tmpfs; nothing else.
        let mounted = [
            SandboxCall::MountTmpfs {
                path: dir.join(EMPTY_DIR).join("memory"),
                size_bytes: Some(16 << 20),
            },
            SandboxCall::MountTmpfs {
                path: dir.join(SECRET).join("creds"),
                size_bytes: None,
            },
        ];
        assert_eq!(sandbox.calls(), mounted);

        // The ConfigMap changes; the secret is deleted: the files follow
        // the one and keep the other.
        let changed = ConfigData::text(&[("app.conf", "port=81")]);
        source.put(ConfigKind::ConfigMap, "shop", "app", changed);
        source.remove(ConfigKind::Secret, "shop", "creds");
        setup.prepare(&mut config).await.expect("again");
        let conf = std::fs::read_to_string(&conf_file).unwrap();
        assert_eq!(conf, "port=81");
        assert_eq!(std::fs::read_to_string(&password).unwrap(), "hunter2");

        // Teardown unmounts the tmpfs volumes.
        unmount_all(&sandbox, &layout.pod_dir(&pod));
        assert!(sandbox.mounted().is_empty(), "{:?}", sandbox.mounted());
    }

    #[tokio::test]
    async fn an_fs_group_owns_empty_dirs_and_files_and_is_not_walked_again() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        // A group this process may give: its own.
        let gid = std::fs::metadata(tmp.path()).unwrap().gid();
        let scratch = v1::Volume {
            name: "scratch".into(),
            empty_dir: Some(Box::new(v1::EmptyDirVolumeSource::default())),
            ..Default::default()
        };
        let config = v1::Volume {
            name: "config".into(),
            config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                name: "app".into(),
                default_mode: Some(0o600),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut pod = pod(vec![limited("main", None)], vec![scratch, config]);
        pod.spec.as_mut().unwrap().security_context = Some(Box::new(v1::PodSecurityContext {
            fs_group: Some(i64::from(gid)),
            ..Default::default()
        }));
        let allocatable = BTreeMap::new();
        let sandbox = RecordingSandbox::default();
        let source = StaticConfigSource::default();
        let app = ConfigData::text(&[("app.conf", "port=80")]);
        source.put(ConfigKind::ConfigMap, "shop", "app", app);
        let setup = VolumeSetup {
            sandbox: &sandbox,
            source: &source,
            layout: &layout,
            facts: PodFacts {
                pod: &pod,
                host_ip: "",
                pod_ip: "",
                node_allocatable: &allocatable,
            },
        };
        let mut config = PodConfig::default();
        let prepared = setup.prepare(&mut config).await.expect("every volume");
        let meta = |path: &PathBuf| std::fs::metadata(path).unwrap();
        let scratch = prepared.path("scratch").unwrap().to_path_buf();
        assert_eq!(meta(&scratch).gid(), gid);
        assert_eq!(meta(&scratch).mode() & 0o7777, 0o2777);
        let conf = prepared.path("config").unwrap().join("app.conf");
        assert_eq!(meta(&conf).gid(), gid);
        assert_eq!(meta(&conf).mode() & 0o777, 0o640, "the group may read");
        // Unchanged: the files are not written again.
        let data = prepared
            .path("config")
            .unwrap()
            .join(atomic_writer::DATA_LINK);
        let before = std::fs::read_link(&data).unwrap();
        setup.prepare(&mut config).await.expect("again");
        assert_eq!(std::fs::read_link(&data).unwrap(), before);
    }

    #[tokio::test]
    async fn a_claims_volume_is_its_local_path_directory_and_waits_while_unbound() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(&tmp.path().join("data"));
        let dir = tmp.path().join("data/storage/pvc-c-1");
        let claimed = |name: &str, read_only: bool| v1::Volume {
            name: name.into(),
            persistent_volume_claim: Some(Box::new(v1::PersistentVolumeClaimVolumeSource {
                claim_name: "data".into(),
                read_only,
            })),
            ..Default::default()
        };
        let mut main = limited("main", None);
        main.volume_mounts = vec![
            v1::VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            v1::VolumeMount {
                name: "seen".into(),
                mount_path: "/seen".into(),
                ..Default::default()
            },
        ];
        let pod = pod(
            vec![main.clone()],
            vec![claimed("data", false), claimed("seen", true)],
        );
        let allocatable = BTreeMap::new();
        let sandbox = RecordingSandbox::default();
        let source = StaticConfigSource::default();
        let claim_at = |phase: &str, volume: &str| StorageObject {
            meta: v1::ObjectMeta {
                name: "data".into(),
                uid: "c-1".into(),
                ..Default::default()
            },
            fields: serde_json::json!({"spec": {"volumeName": volume}, "status": {"phase": phase}}),
        };
        source.put_storage(
            ConfigKind::PersistentVolumeClaim,
            "shop",
            "data",
            claim_at("Pending", ""),
        );
        let setup = VolumeSetup {
            sandbox: &sandbox,
            source: &source,
            layout: &layout,
            facts: PodFacts {
                pod: &pod,
                host_ip: "",
                pod_ip: "",
                node_allocatable: &allocatable,
            },
        };
        let mut config = PodConfig::default();
        let error = setup.prepare(&mut config).await.unwrap_err();
        assert!(error.to_string().contains("is not bound yet"), "{error}");
        assert!(!dir.exists(), "nothing made for an unbound claim");

        source.put_storage(
            ConfigKind::PersistentVolumeClaim,
            "shop",
            "data",
            claim_at("Bound", "pvc-c-1"),
        );
        let volume = StorageObject {
            meta: v1::ObjectMeta {
                name: "pvc-c-1".into(),
                annotations: [(
                    claim::PROVISIONED_BY_ANNOTATION.to_owned(),
                    claim::LOCAL_PATH_PROVISIONER.to_owned(),
                )]
                .into(),
                ..Default::default()
            },
            fields: serde_json::json!({"spec": {
                "hostPath": {"path": dir.display().to_string()},
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": "shop", "name": "data", "uid": "c-1"},
            }}),
        };
        source.put_storage(ConfigKind::PersistentVolume, "", "pvc-c-1", volume);
        let prepared = setup.prepare(&mut config).await.expect("bound now");
        assert_eq!(prepared.path("data"), Some(dir.as_path()));
        assert!(dir.is_dir());
        let mounts = prepared.mounts(&main).unwrap();
        let modes: Vec<(&str, bool)> = mounts
            .iter()
            .map(|m| (m.destination.as_str(), m.read_only))
            .collect();
        assert_eq!(modes, [("/data", false), ("/seen", true)]);
        assert!(sandbox.calls().is_empty(), "a plain directory: no mount");
    }

    #[tokio::test]
    async fn a_missing_config_map_fails_the_volume_in_the_kubelets_words() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let volume = v1::Volume {
            name: "config".into(),
            config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                name: "app".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let pod = pod(vec![limited("main", None)], vec![volume]);
        let allocatable = BTreeMap::new();
        let sandbox = RecordingSandbox::default();
        let source = StaticConfigSource::default();
        let setup = VolumeSetup {
            sandbox: &sandbox,
            source: &source,
            layout: &layout,
            facts: PodFacts {
                pod: &pod,
                host_ip: "",
                pod_ip: "",
                node_allocatable: &allocatable,
            },
        };
        let mut config = PodConfig::default();
        let error = setup.prepare(&mut config).await.unwrap_err();
        let expected =
            r#"MountVolume.SetUp failed for volume "config" : configmap "app" not found"#;
        assert_eq!(error.to_string(), expected);
    }
}
