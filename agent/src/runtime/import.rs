//! Air-gapped image import. Image archives dropped into
//! `<data-dir>/images/` are imported into containerd at start and whenever
//! a new or changed file appears. Two archive shapes are read: `docker
//! save` archives (`manifest.json` naming a config and layer tars per image)
//! and OCI image layouts (`index.json` plus `blobs/sha256/…`), each plain or
//! gzip-compressed. An archive that cannot be read is reported by name and
//! skipped; the agent carries on.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::content::BlobStream;
use super::images::ImageStore;
use super::oci::{
    choose_platform, platform_arch, BlobSource, ManifestOrIndex, OciDescriptor,
    MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LAYER, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST,
};
use super::reference::{ImageRef, ReferenceError};
use super::{Error, Result};

/// What is wrong with an image archive; the archive is skipped and the
/// agent carries on.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("unpacking stopped: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
    #[error("not a readable tar archive: {0}; give a `docker save` archive or an OCI layout tar, plain or gzipped")]
    NotTar(#[source] std::io::Error),
    #[error("neither manifest.json (docker save) nor index.json (OCI layout) found")]
    UnknownLayout,
    #[error("{what} is not valid: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{rel}: path leaves the archive")]
    Escapes { rel: String },
    #[error(
        "manifest.json entry {entry} has no RepoTags naming the image; tag it before `docker save`"
    )]
    NoRepoTags { entry: usize },
    #[error("{place}: {name:?} is not a valid image reference: {source}")]
    ImageName {
        place: String,
        name: String,
        #[source]
        source: ReferenceError,
    },
    #[error(
        "index.json manifest {entry} has no full image name (annotation io.containerd.image.name)"
    )]
    NoImageName { entry: usize },
    #[error("{digest:?} is not a sha256 digest")]
    Digest { digest: String },
    #[error("{image}: no manifest for linux/{arch}")]
    NoPlatform { image: String, arch: &'static str },
    #[error("index.json lists no images")]
    NoImages,
    #[error("storing its images: {0}")]
    Store(#[source] Box<Error>),
}

type ArchiveResult<T> = std::result::Result<T, ArchiveError>;

/// One image found in an archive.
#[derive(Debug)]
struct ArchiveImage {
    names: Vec<String>,
    manifest: Vec<u8>,
    media_type: String,
}

/// Blobs of an unpacked archive, by digest.
struct ArchiveBlobs {
    files: HashMap<String, PathBuf>,
}

impl BlobSource for ArchiveBlobs {
    async fn open(&self, descriptor: &OciDescriptor) -> Result<BlobStream> {
        let path = self
            .files
            .get(&descriptor.digest)
            .ok_or_else(|| Error::Image {
                image: descriptor.digest.clone(),
                message: "blob is missing from the archive".into(),
            })?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(super::io(format!("opening {}", path.display())))?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            1 << 20,
        )))
    }
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Imports every image in the archive at `path`; returns their names.
pub async fn import_archive(
    store: &ImageStore,
    path: &Path,
    scratch: &Path,
) -> Result<Vec<String>> {
    let dir = scratch.join(format!("import-{:016x}", rand::random::<u64>()));
    let unpack_from = path.to_path_buf();
    let unpack_to = dir.clone();
    let result = async {
        tokio::task::spawn_blocking(move || unpack(&unpack_from, &unpack_to))
            .await
            .map_err(ArchiveError::Interrupted)?
            .map_err(ArchiveError::NotTar)?;
        let (images, blobs) = if dir.join("manifest.json").is_file() {
            read_docker_archive(&dir)?
        } else if dir.join("index.json").is_file() {
            read_oci_layout(&dir)?
        } else {
            return Err(ArchiveError::UnknownLayout);
        };
        let mut names = Vec::new();
        for image in images {
            store
                .store(
                    &image.names,
                    image.manifest,
                    &image.media_type,
                    &blobs,
                    true,
                )
                .await
                .map_err(|e| ArchiveError::Store(Box::new(e)))?;
            names.extend(image.names);
        }
        Ok(names)
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result.map_err(|source| Error::Archive {
        file: path.display().to_string(),
        source: Box::new(source),
    })
}

fn unpack(path: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    // `unpack` refuses entries that would land outside `to`.
    archive.unpack(to)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, rel: &str) -> ArchiveResult<T> {
    let bytes = read_inside(dir, rel)?;
    parse_json(rel, &bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> ArchiveResult<T> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
        what: what.to_owned(),
        source,
    })
}

fn read_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Read { what, source }
}

fn read_inside(dir: &Path, rel: &str) -> ArchiveResult<Vec<u8>> {
    let path = inside(dir, rel)?;
    std::fs::read(&path).map_err(read_error(rel))
}

/// `rel` within `dir`, refusing paths that climb out of it.
fn inside(dir: &Path, rel: &str) -> ArchiveResult<PathBuf> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ArchiveError::Escapes {
            rel: rel.to_owned(),
        });
    }
    Ok(dir.join(rel_path))
}

fn file_digest(path: &Path) -> ArchiveResult<(String, i64)> {
    use sha2::Digest;
    let what = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(read_error(what.as_str()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0i64;
    loop {
        let n = file.read(&mut buf).map_err(read_error(what.as_str()))?;
        if n == 0 {
            break;
        }
        size += n as i64;
        hasher.update(&buf[..n]);
    }
    Ok((format!("sha256:{:x}", hasher.finalize()), size))
}

/// `name` normalised, or why it is not an image name (found at `place`).
fn image_name(place: impl FnOnce() -> String, name: &str) -> ArchiveResult<String> {
    match ImageRef::parse(name) {
        Ok(reference) => Ok(reference.whole()),
        Err(source) => Err(ArchiveError::ImageName {
            place: place(),
            name: name.to_owned(),
            source,
        }),
    }
}

fn read_docker_archive(dir: &Path) -> ArchiveResult<(Vec<ArchiveImage>, ArchiveBlobs)> {
    let entries: Vec<DockerManifestEntry> = read_json(dir, "manifest.json")?;
    let mut files = HashMap::new();
    let mut images = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let tags = entry.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            return Err(ArchiveError::NoRepoTags { entry: i });
        }
        let names = tags
            .iter()
            .map(|t| image_name(|| format!("manifest.json entry {i}"), t))
            .collect::<ArchiveResult<Vec<_>>>()?;
        let config_path = inside(dir, &entry.config)?;
        let (config_digest, config_size) = file_digest(&config_path)?;
        files.insert(config_digest.clone(), config_path);
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let path = inside(dir, layer)?;
            let (digest, size) = file_digest(&path)?;
            let mut magic = [0u8; 2];
            let gz = std::fs::File::open(&path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && magic == [0x1f, 0x8b];
            let media_type = if gz {
                format!("{MEDIA_DOCKER_LAYER}.gzip")
            } else {
                MEDIA_DOCKER_LAYER.to_string()
            };
            layers
                .push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
            files.insert(digest, path);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_DOCKER_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers,
        });
        images.push(ArchiveImage {
            names,
            manifest: manifest.to_string().into_bytes(),
            media_type: MEDIA_DOCKER_MANIFEST.to_string(),
        });
    }
    Ok((images, ArchiveBlobs { files }))
}

fn blob_path(dir: &Path, digest: &str) -> ArchiveResult<PathBuf> {
    let not_sha256 = || ArchiveError::Digest {
        digest: digest.to_owned(),
    };
    let (algorithm, hex) = digest.split_once(':').ok_or_else(not_sha256)?;
    if algorithm != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_sha256());
    }
    Ok(dir.join("blobs").join(algorithm).join(hex))
}

fn read_oci_layout(dir: &Path) -> ArchiveResult<(Vec<ArchiveImage>, ArchiveBlobs)> {
    let index: ManifestOrIndex = read_json(dir, "index.json")?;
    let mut files = HashMap::new();
    let blobs_dir = dir.join("blobs").join("sha256");
    if let Ok(entries) = std::fs::read_dir(&blobs_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            files.insert(format!("sha256:{name}"), entry.path());
        }
    }
    let mut images = Vec::new();
    for (i, descriptor) in index.manifests.iter().enumerate() {
        let name = descriptor
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                descriptor
                    .annotations
                    .get("org.opencontainers.image.ref.name")
            })
            .filter(|n| n.contains(':') || n.contains('/') || n.contains('@'))
            .ok_or(ArchiveError::NoImageName { entry: i })?;
        let name = image_name(|| format!("index.json manifest {i}"), name)?;
        let mut bytes = read_blob(dir, &descriptor.digest)?;
        let mut parsed: ManifestOrIndex =
            parse_json(&format!("manifest {}", descriptor.digest), &bytes)?;
        if parsed.is_index() {
            let Some(chosen) = choose_platform(&parsed).map(|m| m.digest.clone()) else {
                return Err(ArchiveError::NoPlatform {
                    image: name,
                    arch: platform_arch(),
                });
            };
            bytes = read_blob(dir, &chosen)?;
            parsed = parse_json(&format!("manifest {chosen}"), &bytes)?;
        }
        let media_type = if parsed.media_type.is_empty() {
            MEDIA_OCI_MANIFEST.to_string()
        } else {
            parsed.media_type
        };
        images.push(ArchiveImage {
            names: vec![name],
            manifest: bytes,
            media_type,
        });
    }
    if images.is_empty() {
        return Err(ArchiveError::NoImages);
    }
    Ok((images, ArchiveBlobs { files }))
}

fn read_blob(dir: &Path, digest: &str) -> ArchiveResult<Vec<u8>> {
    std::fs::read(blob_path(dir, digest)?).map_err(read_error(format!("blob {digest}")))
}

/// What is known about one archive file.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

/// What the image directory watcher has already handled.
#[derive(Debug, Default)]
pub struct ImageDirState {
    done: HashMap<PathBuf, Seen>,
    // A file must look the same on two polls before it is read, so a copy
    // in progress is not imported half-written.
    pending: HashMap<PathBuf, Seen>,
}

/// Imports every archive in `dir` as it is now (at agent start).
pub async fn import_image_dir(store: &ImageStore, dir: &Path, scratch: &Path) -> ImageDirState {
    let mut state = ImageDirState::default();
    scan(store, dir, scratch, &mut state, true).await;
    state
}

/// Watches `<data-dir>/images/` and imports what appears in it.
pub async fn watch_image_dir(
    store: std::sync::Arc<ImageStore>,
    dir: PathBuf,
    scratch: PathBuf,
    poll: Duration,
    mut state: ImageDirState,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        scan(&store, &dir, &scratch, &mut state, false).await;
    }
}

async fn scan(
    store: &ImageStore,
    dir: &Path,
    scratch: &Path,
    state: &mut ImageDirState,
    first: bool,
) {
    let ImageDirState { done, pending } = state;
    {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if name.starts_with('.') || !path.is_file() {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let seen = Seen {
                    len: meta.len(),
                    modified: meta.modified().ok(),
                };
                if done.get(&path) == Some(&seen) {
                    continue;
                }
                // At start, files are taken as they are.
                if !first && pending.get(&path) != Some(&seen) {
                    pending.insert(path.clone(), seen);
                    continue;
                }
                pending.remove(&path);
                match import_archive(store, &path, scratch).await {
                    Ok(names) => {
                        tracing::info!(file = %path.display(), images = ?names, "imported image archive")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "skipped image archive")
                    }
                }
                done.insert(path, seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_cannot_escape() {
        let dir = Path::new("/tmp/x");
        assert!(inside(dir, "../etc/passwd").is_err());
        assert!(inside(dir, "/etc/passwd").is_err());
        assert_eq!(inside(dir, "a/layer.tar").unwrap(), dir.join("a/layer.tar"));
        assert!(blob_path(dir, "sha256:../../x").is_err());
    }

    #[test]
    fn docker_archive_without_tags_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("manifest.json"),
            r#"[{"Config":"c.json","Layers":[]}]"#,
        )
        .unwrap();
        let err = read_docker_archive(tmp.path()).err().unwrap();
        assert!(
            matches!(err, ArchiveError::NoRepoTags { entry: 0 }),
            "{err}"
        );
        assert!(err.to_string().contains("RepoTags"), "{err}");
    }
}
