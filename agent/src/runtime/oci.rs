//! The OCI image format as the agent reads it: media types, descriptors,
//! manifests and indexes, image config files, which manifest of a
//! multi-arch index fits this node, and the [`BlobSource`] a manifest's
//! blobs are read from. Shared by the image store, the registry client and
//! archive import, none of which needs the others for it.

use std::collections::HashMap;

use serde::Deserialize;

use super::content::BlobStream;
use super::Result;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// A content descriptor as manifests and indexes spell it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest, or an index of them (multi-arch images).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestOrIndex {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub config: Option<OciDescriptor>,
    #[serde(default)]
    pub layers: Vec<OciDescriptor>,
    #[serde(default)]
    pub manifests: Vec<OciDescriptor>,
}

impl ManifestOrIndex {
    pub fn is_index(&self) -> bool {
        self.config.is_none() && !self.manifests.is_empty()
    }
}

/// The parts of an image config that decide how a container runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An image ready to run: unpacked, with its run config.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The normalised name (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// The manifest digest, shown as `imageID`.
    pub id: String,
    pub config: RunConfig,
    /// The snapshot holding the unpacked top layer.
    pub chain_id: String,
}

/// This node's platform in OCI terms.
pub fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// Picks this node's manifest from an index.
pub fn choose_platform(index: &ManifestOrIndex) -> Option<&OciDescriptor> {
    let arch = platform_arch();
    let candidates = index.manifests.iter().filter(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    });
    let mut best = None;
    for m in candidates {
        let variant = m.platform.as_ref().and_then(|p| p.variant.as_deref());
        // arm64 images are v8; 32-bit Pis want v7 before v6.
        let preferred = match (arch, variant) {
            ("arm64", None | Some("v8")) | ("arm", Some("v7")) => true,
            ("arm", _) | ("arm64", _) => false,
            _ => true,
        };
        if preferred {
            return Some(m);
        }
        best.get_or_insert(m);
    }
    best
}

/// Where a manifest's blobs come from while it is stored.
pub trait BlobSource: Send + Sync {
    fn open(
        &self,
        descriptor: &OciDescriptor,
    ) -> impl std::future::Future<Output = Result<BlobStream>> + Send;
}
