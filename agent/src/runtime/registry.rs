//! Pulling from OCI and Docker registries. The agent's registry config
//! (`registries.yaml`, in the manner of k3s) gives credentials per registry
//! host and marks hosts that speak plain HTTP, such as a registry on
//! loopback. A multi-arch index resolves to this node's platform; every
//! blob is streamed into containerd's content store, which verifies it.

use std::collections::HashMap;
use std::path::Path;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use super::content::BlobStream;
use super::oci::{
    choose_platform, platform_arch, BlobSource, ManifestOrIndex, OciDescriptor, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use super::{Error, Result};

/// `registries.yaml`: per-host settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesFile {
    #[serde(default)]
    pub configs: HashMap<String, RegistryHost>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryHost {
    #[serde(default)]
    pub auth: Option<RegistryAuthConfig>,
    /// Speak plain HTTP to this host (a registry on loopback or a LAN).
    #[serde(default, rename = "plainHTTP")]
    pub plain_http: bool,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthConfig {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Registry settings plus the HTTP client that uses them.
pub struct Registries {
    file: RegistriesFile,
    client: Client,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("file", &self.file)
            .finish()
    }
}

impl Registries {
    pub fn new(file: RegistriesFile) -> Registries {
        let plain: Vec<String> = file
            .configs
            .iter()
            .filter(|(_, h)| h.plain_http)
            .map(|(host, _)| host.clone())
            .collect();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(plain),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        Registries {
            file,
            client: Client::new(config),
        }
    }

    /// Reads `path`; a missing file means no settings.
    pub fn load(path: &Path) -> Result<Registries> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => parse_registries_file(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistriesFile::default(),
            Err(e) => return Err(super::io(format!("reading {}", path.display()))(e)),
        };
        Ok(Registries::new(file))
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self
            .file
            .configs
            .get(registry)
            .and_then(|h| h.auth.as_ref())
        {
            Some(a) => RegistryAuth::Basic(a.username.clone(), a.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Fetches the manifest of `name` (already normalised) for this
    /// node's platform; its blobs are read from the returned source.
    pub async fn fetch_manifest(&self, name: &str) -> Result<PulledManifest<'_>> {
        let reference: Reference = super::reference::ImageRef::parse(name)
            .map_err(|source| Error::Reference {
                image: name.to_string(),
                source,
            })?
            .to_oci();
        let auth = self.auth_for(reference.resolve_registry());
        let accept = [
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_OCI_INDEX,
            MEDIA_DOCKER_LIST,
        ];
        let failed = |e: oci_client::errors::OciDistributionError| Error::Image {
            image: name.to_string(),
            message: format!("pulling from {}: {e}", reference.resolve_registry()),
        };
        let (mut bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &auth, &accept)
            .await
            .map_err(failed)?;
        let mut parsed: ManifestOrIndex =
            serde_json::from_slice(&bytes).map_err(|e| Error::Image {
                image: name.to_string(),
                message: format!("registry sent a manifest that is not valid JSON: {e}"),
            })?;
        if parsed.is_index() {
            let chosen = choose_platform(&parsed).ok_or_else(|| Error::Image {
                image: name.to_string(),
                message: format!("no manifest for linux/{} in the index", platform_arch()),
            })?;
            let by_digest = reference.clone_with_digest(chosen.digest.clone());
            let (platform_bytes, _) = self
                .client
                .pull_manifest_raw(&by_digest, &auth, &accept)
                .await
                .map_err(failed)?;
            if super::content::sha256_digest(&platform_bytes) != chosen.digest {
                return Err(Error::Image {
                    image: name.to_string(),
                    message: format!("manifest does not match {}", chosen.digest),
                });
            }
            bytes = platform_bytes;
            parsed = serde_json::from_slice(&bytes).map_err(|e| Error::Image {
                image: name.to_string(),
                message: format!("platform manifest is not valid JSON: {e}"),
            })?;
        }
        let media_type = if parsed.media_type.is_empty() {
            MEDIA_OCI_MANIFEST.to_string()
        } else {
            parsed.media_type.clone()
        };
        Ok(PulledManifest {
            bytes: bytes.to_vec(),
            media_type,
            blobs: RegistrySource {
                client: &self.client,
                reference,
            },
        })
    }
}

fn parse_registries_file(path: &Path, text: &str) -> Result<RegistriesFile> {
    serde_yaml::from_str(text).map_err(|source| Error::RegistriesFile {
        path: path.to_owned(),
        source,
    })
}

/// A manifest fetched from a registry, and where its blobs come from.
pub struct PulledManifest<'a> {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub blobs: RegistrySource<'a>,
}

/// Reads an image's blobs from the registry it came from.
pub struct RegistrySource<'a> {
    client: &'a Client,
    reference: Reference,
}

impl BlobSource for RegistrySource<'_> {
    async fn open(&self, descriptor: &OciDescriptor) -> Result<BlobStream> {
        let layer = oci_client::manifest::OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            ..Default::default()
        };
        let stream = self
            .client
            .pull_blob_stream(&self.reference, &layer)
            .await
            .map_err(|e| Error::Image {
                image: self.reference.whole(),
                message: format!("fetching blob {}: {e}", descriptor.digest),
            })?;
        Ok(Box::pin(stream.stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_file_reads_auth_and_plain_http() {
        let file: RegistriesFile = serde_yaml::from_str(
            "configs:\n  \"127.0.0.1:5000\":\n    plainHTTP: true\n    auth:\n      username: u\n      password: p\n",
        )
        .unwrap();
        let host = &file.configs["127.0.0.1:5000"];
        assert!(host.plain_http);
        assert_eq!(host.auth.as_ref().unwrap().username, "u");
        let err = serde_yaml::from_str::<RegistriesFile>("configs:\n  h:\n    insecure: true\n")
            .unwrap_err();
        assert!(err.to_string().contains("insecure"), "{err}");
    }
}
