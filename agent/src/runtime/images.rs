//! The image store: images as containerd keeps them. An image is a name in
//! containerd's image service pointing at a manifest in the content store;
//! the manifest names a config and layers, and each layer is unpacked into
//! an overlay snapshot named by its chain ID (the digest of the layer
//! digests below it, as the OCI image spec defines it). Labels on the
//! manifest and config tell containerd's garbage collector what keeps what.
//!
//! Images arrive from a registry ([`super::registry`]) or from an archive
//! ([`super::import`]); both hand their blobs to [`ImageStore::store`].
//! Images imported from archives are pinned (as k3s pins its air-gap
//! images) so that image garbage collection ([`super::image_gc`]) never
//! removes what the node cannot pull again. Removing an image deletes its
//! name and waits for containerd's own garbage collector, which then drops
//! the blobs and snapshots nothing else refers to.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image,
    ListImagesRequest, UpdateImageRequest,
};
use containerd_client::types::{Descriptor, Mount};
use skiff_objects::images;

use super::content::{sha256_digest, BlobStream};
use super::docker_config::PullKeyring;
use super::oci::{
    choose_platform, platform_arch, BlobSource, ImageConfigFile, ImageInfo, ManifestOrIndex,
    OciDescriptor,
};
use super::registry::Registries;
use super::rootfs_files;
use super::{call, Containerd, Error, Result, SNAPSHOTTER};

/// Chain IDs of the layers, bottom first (OCI image spec, "Layer ChainID").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Docker Hub normalisation: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(image: &str) -> Result<String> {
    match super::reference::ImageRef::parse(image) {
        Ok(reference) => Ok(reference.whole()),
        Err(source) => Err(Error::Reference {
            image: image.to_string(),
            source,
        }),
    }
}

/// The label containerd's CRI plugin reads as "never garbage-collect this
/// image" (`io.cri-containerd.pinned: pinned`); skiff sets and honours it.
pub const LABEL_PINNED: &str = "io.cri-containerd.pinned";
const PINNED: &str = "pinned";

/// An image name as containerd lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The full name (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// What the name points at: a manifest or an index.
    pub target: Descriptor,
    /// When containerd first stored the name.
    pub created: SystemTime,
    /// Labelled [`LABEL_PINNED`]: never collected.
    pub pinned: bool,
}

/// The image operations garbage collection needs, apart from the pod
/// workers' [`super::ContainerRuntime`], so it can run against a fake.
pub trait ImageInventory: Send + Sync + 'static {
    /// Every image name in this agent's namespace.
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageRecord>>> + Send;
    /// Deletes the image name if it still points where it did when listed,
    /// and returns once containerd has removed whatever only it kept;
    /// false if there was no such image any more.
    fn remove_image(&self, image: &ImageRecord) -> impl Future<Output = Result<bool>> + Send;
}

/// A containerd timestamp as a time; none (or nonsense) is the epoch.
fn system_time(t: Option<prost_types::Timestamp>) -> SystemTime {
    match t {
        Some(t) if t.seconds > 0 => {
            let nanos = u32::try_from(t.nanos).unwrap_or(0);
            UNIX_EPOCH + Duration::new(t.seconds.unsigned_abs(), nanos)
        }
        _ => UNIX_EPOCH,
    }
}

/// Images in containerd, pulled on demand.
pub struct ImageStore {
    containerd: Containerd,
    registries: Registries,
    /// One pull per image name at a time.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever an image is stored, so pods waiting for one retry.
    stored: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").finish_non_exhaustive()
    }
}

/// What `imagePullPolicy` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Kubernetes' rule: the given policy, else the default the master's
    /// defaulting gives a created pod (`images::default_pull_policy`: Always
    /// for `:latest` or no tag, IfNotPresent otherwise).
    pub fn for_container(policy: &str, image: &str) -> PullPolicy {
        let policy = match policy {
            "Always" | "Never" | "IfNotPresent" => policy,
            _ => images::default_pull_policy(image),
        };
        match policy {
            "Always" => PullPolicy::Always,
            "Never" => PullPolicy::Never,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

impl ImageStore {
    pub fn new(containerd: Containerd, registries: Registries) -> ImageStore {
        ImageStore {
            containerd,
            registries,
            pulls: Default::default(),
            stored: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time an image is stored.
    pub fn stored(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The image a container needs, pulled as `policy` says (trying in
    /// turn the credentials `keyring` has for its registry, then those of
    /// `registries.yaml`: [`Registries::fetch_manifest`]) and unpacked.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        keyring: &PullKeyring,
    ) -> Result<ImageInfo> {
        let name = normalize(image)?;
        let lock = {
            let mut pulls = self.pulls.lock().await;
            pulls.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let present = self.lookup(&name).await?;
        match (policy, present) {
            (PullPolicy::Never, None) => Err(Error::Image {
                image: name,
                message: "not present on this node and imagePullPolicy is Never".into(),
            }),
            (PullPolicy::IfNotPresent | PullPolicy::Never, Some(target)) => {
                self.prepare(&name, &target).await
            }
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => {
                let pulled = self.registries.fetch_manifest(&name, keyring).await?;
                let target = self
                    .store(
                        std::slice::from_ref(&name),
                        pulled.bytes,
                        &pulled.media_type,
                        &pulled.blobs,
                        false,
                    )
                    .await?;
                self.prepare(&name, &target).await
            }
        }
    }

    /// The manifest descriptor an image name points at, if it exists.
    pub async fn lookup(&self, name: &str) -> Result<Option<Descriptor>> {
        match self
            .containerd
            .images()
            .get(self.containerd.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::Call {
                call: "images.get",
                status: s,
            }),
        }
    }

    /// Every image name in this agent's namespace.
    pub async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let c = &self.containerd;
        let images = c
            .images()
            .list(c.request(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(call("images.list"))?
            .into_inner()
            .images;
        Ok(images
            .into_iter()
            .filter_map(|image| {
                let pinned = image.labels.get(LABEL_PINNED).is_some_and(|v| v == PINNED);
                Some(ImageRecord {
                    target: image.target?,
                    created: system_time(image.created_at),
                    pinned,
                    name: image.name,
                })
            })
            .collect())
    }

    /// Deletes the image name, unless it was pointed elsewhere since it was
    /// listed (containerd checks the target), with containerd's garbage
    /// collection run before it answers (`sync`), so the space is free
    /// when this returns. False if the name was gone already.
    pub async fn remove_image(&self, image: &ImageRecord) -> Result<bool> {
        // Not while the same name is being pulled or unpacked.
        let lock = {
            let mut pulls = self.pulls.lock().await;
            pulls.entry(image.name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let c = &self.containerd;
        let deleted = c
            .images()
            .delete(c.request(DeleteImageRequest {
                name: image.name.clone(),
                sync: true,
                target: Some(image.target.clone()),
            }))
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Call {
                call: "images.delete",
                status: s,
            }),
        }
    }

    /// Reads the image's config and makes sure it is unpacked.
    async fn prepare(&self, name: &str, target: &Descriptor) -> Result<ImageInfo> {
        let mut manifest_digest = target.digest.clone();
        let mut manifest: ManifestOrIndex = self.read_json(name, &manifest_digest).await?;
        if manifest.is_index() {
            let chosen = choose_platform(&manifest).ok_or_else(|| Error::Image {
                image: name.to_string(),
                message: format!("no manifest for linux/{}", platform_arch()),
            })?;
            manifest_digest = chosen.digest.clone();
            manifest = self.read_json(name, &manifest_digest).await?;
        }
        let config_desc = manifest.config.clone().ok_or_else(|| Error::Image {
            image: name.to_string(),
            message: "manifest has no config".into(),
        })?;
        let config: ImageConfigFile = self.read_json(name, &config_desc.digest).await?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        let chain_id = chain.last().cloned().ok_or_else(|| Error::Image {
            image: name.to_string(),
            message: "image has no layers".into(),
        })?;
        if !self.snapshot_exists(&chain_id).await? {
            let lease = self.containerd.create_lease("unpack").await?;
            let result = self.unpack(name, &manifest.layers, &chain, &lease.id).await;
            self.containerd.delete_lease(lease).await;
            result?;
        }
        Ok(ImageInfo {
            name: name.to_string(),
            id: manifest_digest,
            config: config.config.unwrap_or_default(),
            chain_id,
        })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<T> {
        let bytes = self.containerd.read_blob(digest).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Image {
            image: name.to_string(),
            message: format!("{digest} is not valid JSON of the expected shape: {e}"),
        })
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match self
            .containerd
            .snapshots()
            .stat(self.containerd.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Call {
                call: "snapshots.stat",
                status: s,
            }),
        }
    }

    /// Applies each layer onto a snapshot of the one below it.
    async fn unpack(
        &self,
        name: &str,
        layers: &[OciDescriptor],
        chain: &[String],
        lease: &str,
    ) -> Result<()> {
        if layers.len() != chain.len() {
            return Err(Error::Image {
                image: name.to_string(),
                message: format!(
                    "manifest has {} layers but config has {} diff_ids",
                    layers.len(),
                    chain.len()
                ),
            });
        }
        let c = &self.containerd;
        for (i, (layer, chain_id)) in layers.iter().zip(chain).enumerate() {
            if self.snapshot_exists(chain_id).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chain[i - 1].clone()
            };
            let key = format!("extract-{:016x} {chain_id}", rand::random::<u64>());
            let mounts = c
                .snapshots()
                .prepare(c.request_in_lease(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
                .map_err(call("snapshots.prepare"))?
                .into_inner()
                .mounts;
            let applied = c
                .diff()
                .apply(c.request_in_lease(
                    ApplyRequest {
                        diff: Some(to_descriptor(layer)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                ))
                .await;
            if let Err(status) = applied {
                self.remove_snapshot(&key).await;
                return Err(Error::Call {
                    call: "diff.apply",
                    status,
                });
            }
            let committed = c
                .snapshots()
                .commit(c.request_in_lease(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain_id.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await;
            match committed {
                Ok(_) => {}
                // Another unpack of a shared layer won the race.
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    self.remove_snapshot(&key).await
                }
                Err(status) => {
                    self.remove_snapshot(&key).await;
                    return Err(Error::Call {
                        call: "snapshots.commit",
                        status,
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let _ = self
            .containerd
            .snapshots()
            .remove(self.containerd.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await;
    }

    /// Files of an image's root filesystem (`paths`, absolute inside it;
    /// at most `max` bytes of each), read from the layers of a read-only
    /// view of its top snapshot (`chain_id`), removed again after. A file
    /// the image does not have, or that cannot be read here, is `None`.
    pub async fn read_files(
        &self,
        chain_id: &str,
        paths: &[&str],
        max: u64,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let c = &self.containerd;
        // Under a lease: an unreferenced view may be collected at once.
        let lease = c.create_lease("view").await?;
        let key = format!("view-{:016x} {chain_id}", rand::random::<u64>());
        let request = ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: chain_id.to_string(),
            labels: HashMap::new(),
        };
        let viewed = c
            .snapshots()
            .view(c.request_in_lease(request, Some(lease.id.as_str())))
            .await;
        let read = match viewed {
            Ok(view) => {
                let layers = rootfs_files::layer_dirs(&view.into_inner().mounts);
                let files = paths.iter().map(|path| {
                    rootfs_files::read_file(&layers, path, max).unwrap_or_else(|e| {
                        let image = chain_id;
                        tracing::warn!(image, path, error = %e, "cannot read an image file");
                        None
                    })
                });
                Ok(files.collect())
            }
            Err(status) => Err(Error::Call {
                call: "snapshots.view",
                status,
            }),
        };
        self.remove_snapshot(&key).await;
        c.delete_lease(lease).await;
        read
    }

    /// Mounts of a container's snapshot, for the task's rootfs.
    pub async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        Ok(self
            .containerd
            .snapshots()
            .mounts(self.containerd.request(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
            .map_err(call("snapshots.mounts"))?
            .into_inner()
            .mounts)
    }

    /// Stores a platform manifest and everything it names, then points
    /// `names` at it, [`LABEL_PINNED`] if `pinned`. Blobs come from
    /// `source`; each is verified by digest.
    pub async fn store<S: BlobSource>(
        &self,
        names: &[String],
        manifest_bytes: Vec<u8>,
        manifest_media_type: &str,
        source: &S,
        pinned: bool,
    ) -> Result<Descriptor> {
        let label = names.first().cloned().unwrap_or_default();
        let manifest: ManifestOrIndex =
            serde_json::from_slice(&manifest_bytes).map_err(|e| Error::Image {
                image: label.clone(),
                message: format!("manifest is not valid JSON: {e}"),
            })?;
        let config_desc = manifest.config.clone().ok_or_else(|| Error::Image {
            image: label.clone(),
            message: "manifest has no config".into(),
        })?;
        let c = &self.containerd;
        let lease = c.create_lease("store").await?;
        let result = async {
            // The config is small: read it to learn the chain ID it keeps.
            let config_stream = source.open(&config_desc).await?;
            let config_bytes = collect(config_stream, &config_desc.digest).await?;
            if sha256_digest(&config_bytes) != config_desc.digest {
                return Err(Error::Image {
                    image: label.clone(),
                    message: format!("config blob does not match {}", config_desc.digest),
                });
            }
            let config: ImageConfigFile =
                serde_json::from_slice(&config_bytes).map_err(|e| Error::Image {
                    image: label.clone(),
                    message: format!("image config is not valid: {e}"),
                })?;
            let chain = chain_ids(&config.rootfs.diff_ids);
            let mut config_labels = HashMap::new();
            if let Some(top) = chain.last() {
                config_labels.insert(
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    top.clone(),
                );
            }
            c.write_bytes(&lease.id, &config_desc.digest, config_bytes, config_labels)
                .await?;
            for layer in &manifest.layers {
                if c.has_blob(&layer.digest).await? {
                    continue;
                }
                let stream = source.open(layer).await?;
                c.write_blob(&lease.id, &layer.digest, layer.size, HashMap::new(), stream)
                    .await?;
            }
            let mut labels = HashMap::new();
            labels.insert(
                "containerd.io/gc.ref.content.config".to_string(),
                config_desc.digest.clone(),
            );
            for (i, layer) in manifest.layers.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    layer.digest.clone(),
                );
            }
            let digest = sha256_digest(&manifest_bytes);
            let size = manifest_bytes.len() as i64;
            c.write_bytes(&lease.id, &digest, manifest_bytes, labels)
                .await?;
            let target = Descriptor {
                media_type: manifest_media_type.to_string(),
                digest,
                size,
                annotations: HashMap::new(),
            };
            for name in names {
                self.put_image(name, &target, pinned).await?;
            }
            // Unpack now, so the first pod need not.
            self.prepare(&label, &target).await?;
            self.stored.send_modify(|n| *n += 1);
            Ok(target)
        }
        .await;
        c.delete_lease(lease).await;
        result
    }

    /// Creates or repoints an image name; its labels are replaced by the
    /// pin, or by none.
    async fn put_image(&self, name: &str, target: &Descriptor, pinned: bool) -> Result<()> {
        let c = &self.containerd;
        let mut labels = HashMap::new();
        if pinned {
            labels.insert(LABEL_PINNED.to_string(), PINNED.to_string());
        }
        let image = Image {
            name: name.to_string(),
            labels,
            target: Some(target.clone()),
            created_at: None,
            updated_at: None,
        };
        match c
            .images()
            .create(c.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => c
                .images()
                .update(c.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .map_err(call("images.update")),
            Err(s) => Err(Error::Call {
                call: "images.create",
                status: s,
            }),
        }
    }
}

fn to_descriptor(d: &OciDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

/// Reads the (small) config blob `digest` into memory.
pub async fn collect(mut stream: BlobStream, digest: &str) -> Result<Vec<u8>> {
    use tokio_stream::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(super::io("reading blob"))?;
        out.extend_from_slice(&chunk);
        if out.len() > 16 << 20 {
            return Err(Error::ConfigTooLarge {
                digest: digest.to_owned(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(
            normalize("busybox:1.36").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize("user/app:v1").unwrap(), "docker.io/user/app:v1");
        assert_eq!(
            normalize("127.0.0.1:5000/busybox:e2e").unwrap(),
            "127.0.0.1:5000/busybox:e2e"
        );
        let err = normalize("busybox:bad tag").unwrap_err();
        assert!(
            err.to_string().contains("not a valid image reference"),
            "{err}"
        );
    }

    #[test]
    fn pull_policy_defaults_follow_kubernetes() {
        assert_eq!(PullPolicy::for_container("", "busybox"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::for_container("", "busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::for_container("", "busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::for_container("", "127.0.0.1:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::for_container("Never", "busybox"),
            PullPolicy::Never
        );
    }

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], sha256_digest(b"sha256:a sha256:b"));
    }

    #[test]
    fn index_resolves_to_this_platform() {
        let json = format!(
            r#"{{"manifests":[
              {{"digest":"sha256:other","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}},
              {{"digest":"sha256:mine","size":1,"platform":{{"architecture":"{}","os":"linux"}}}}]}}"#,
            platform_arch()
        );
        let index: ManifestOrIndex = serde_json::from_str(&json).unwrap();
        assert!(index.is_index());
        assert_eq!(choose_platform(&index).unwrap().digest, "sha256:mine");
    }
}
