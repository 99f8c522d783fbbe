//! Pulling from OCI and Docker registries. The agent's registry config
//! (`registries.yaml`, in the manner of k3s) gives credentials per registry
//! host and marks hosts that speak plain HTTP, such as a registry on
//! loopback; a pull's own credentials, from the pod's image pull Secrets
//! ([`super::docker_config::PullKeyring`]), take precedence over them. A multi-arch index resolves to this node's platform; a
//! manifest named by digest is checked against it; every blob is streamed
//! into containerd's content store, which verifies it. The HTTP side is
//! skiff's own distribution client (`registry_client`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::content::{sha256_digest, BlobStream};
use super::docker_config::PullKeyring;
use super::oci::{
    choose_platform, platform_arch, BlobSource, ManifestOrIndex, OciDescriptor, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use super::reference::ImageRef;
use super::registry_auth::{CredentialOrigin, Credentials};
use super::registry_client::{api_host, RegistryClient, RegistryError, Repository};
use super::{Error, Result};

/// What a manifest request accepts: images and multi-arch indexes, OCI
/// and Docker.
const ACCEPT: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_LIST,
];

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
#[derive(Debug)]
pub struct Registries {
    file: RegistriesFile,
    client: RegistryClient,
}

impl Registries {
    pub fn new(file: RegistriesFile) -> Registries {
        Registries {
            file,
            client: RegistryClient::default(),
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

    /// Where `image`'s repository is and how to reach it: the settings
    /// under the registry's name (`docker.io`), else under the host its
    /// API is on (`registry-1.docker.io`); the credentials `keyring` has
    /// for it, else those settings'.
    fn repository(&self, image: &ImageRef, keyring: &PullKeyring) -> Repository {
        let host = self
            .file
            .configs
            .get(&image.registry)
            .or_else(|| self.file.configs.get(api_host(&image.registry)));
        let configured = host.and_then(|h| h.auth.as_ref()).map(|a| Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
            origin: CredentialOrigin::RegistriesFile,
        });
        let credentials = keyring
            .lookup(&image.registry, &image.repository)
            .cloned()
            .or(configured);
        Repository::new(
            &image.registry,
            &image.repository,
            host.is_some_and(|h| h.plain_http),
            credentials,
        )
    }

    /// Fetches the manifest of `name` (already normalised) for this
    /// node's platform, with the credentials `keyring` has for its
    /// registry (else `registries.yaml`'s); its blobs are read from the
    /// returned source.
    pub async fn fetch_manifest(
        &self,
        name: &str,
        keyring: &PullKeyring,
    ) -> Result<PulledManifest<'_>> {
        let image = ImageRef::parse(name).map_err(|source| Error::Reference {
            image: name.to_string(),
            source,
        })?;
        let repository = self.repository(&image, keyring);
        let failed = |source: RegistryError| Error::Registry {
            image: name.to_string(),
            source: Box::new(source),
        };
        let fetched = self
            .client
            .manifest(&repository, image.manifest_reference(), &ACCEPT)
            .await
            .map_err(failed)?;
        if let Some(digest) = &image.digest {
            check_digest(name, &repository, &fetched.bytes, digest)?;
        }
        let (mut bytes, mut content_type) = (fetched.bytes, fetched.content_type);
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
            let digest = chosen.digest.clone();
            let platform = self
                .client
                .manifest(&repository, &digest, &ACCEPT)
                .await
                .map_err(failed)?;
            check_digest(name, &repository, &platform.bytes, &digest)?;
            (bytes, content_type) = (platform.bytes, platform.content_type);
            parsed = serde_json::from_slice(&bytes).map_err(|e| Error::Image {
                image: name.to_string(),
                message: format!("platform manifest is not valid JSON: {e}"),
            })?;
        }
        // The manifest's own `mediaType`, else what the registry said it
        // sent, else OCI.
        let media_type = if !parsed.media_type.is_empty() {
            parsed.media_type.clone()
        } else {
            content_type
                .filter(|t| t == MEDIA_OCI_MANIFEST || t == MEDIA_DOCKER_MANIFEST)
                .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string())
        };
        Ok(PulledManifest {
            bytes,
            media_type,
            blobs: RegistrySource {
                client: &self.client,
                repository,
                image: name.to_string(),
            },
        })
    }
}

/// A manifest fetched by digest must have that digest.
fn check_digest(name: &str, repository: &Repository, bytes: &[u8], digest: &str) -> Result<()> {
    use sha2::Digest as _;
    let actual = match digest.split_once(':').map(|(algorithm, _)| algorithm) {
        Some("sha256") => sha256_digest(bytes),
        Some("sha512") => format!("sha512:{:x}", sha2::Sha512::digest(bytes)),
        _ => {
            return Err(Error::Image {
                image: name.to_string(),
                message: format!(
                    "cannot verify {digest}: only sha256 and sha512 digests are supported"
                ),
            })
        }
    };
    if actual.eq_ignore_ascii_case(digest) {
        return Ok(());
    }
    Err(Error::Image {
        image: name.to_string(),
        message: format!(
            "registry {} sent a manifest that does not match {digest} (it is {actual})",
            repository.registry()
        ),
    })
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
    client: &'a RegistryClient,
    repository: Repository,
    /// The image being pulled, for errors.
    image: String,
}

impl BlobSource for RegistrySource<'_> {
    async fn open(&self, descriptor: &OciDescriptor) -> Result<BlobStream> {
        let size = u64::try_from(descriptor.size).ok();
        self.client
            .blob(&self.repository, &descriptor.digest, size)
            .await
            .map_err(|source| Error::Registry {
                image: self.image.clone(),
                source: Box::new(source),
            })
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

    #[tokio::test]
    async fn settings_apply_by_registry_name_or_api_host() {
        let file: RegistriesFile = serde_yaml::from_str(
            "configs:\n  registry-1.docker.io:\n    auth: {username: hub-user, password: p}\n  \"127.0.0.1:5000\":\n    plainHTTP: true\n",
        )
        .unwrap();
        let registries = Registries::new(file);
        let none = PullKeyring::empty();
        let hub = registries.repository(&ImageRef::parse("busybox").unwrap(), &none);
        assert_eq!(
            hub.manifest_url("latest"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        assert!(format!("{hub:?}").contains("hub-user"), "{hub:?}");
        assert!(!format!("{hub:?}").contains("\"p\""), "{hub:?}");
        let local = registries.repository(&ImageRef::parse("127.0.0.1:5000/app:1").unwrap(), &none);
        assert_eq!(
            local.manifest_url("1"),
            "http://127.0.0.1:5000/v2/app/manifests/1"
        );
        assert!(
            format!("{local:?}").contains("credentials: None"),
            "{local:?}"
        );
        let other = registries.repository(&ImageRef::parse("ghcr.io/o/app").unwrap(), &none);
        assert_eq!(
            other.blob_url("sha256:ab"),
            "https://ghcr.io/v2/o/app/blobs/sha256:ab"
        );

        // A pod's pull secret takes precedence over registries.yaml, and
        // applies where registries.yaml has nothing; the host's settings
        // (plain HTTP) stay.
        let mut keyring = PullKeyring::empty();
        let config = br#"{"auths": {"docker.io": {"username": "pod-user", "password": "x"},
                                     "127.0.0.1:5000": {"username": "local", "password": "y"}}}"#;
        let data = [(".dockerconfigjson".to_owned(), config.to_vec())].into();
        keyring.add_secret("regcred", &data).unwrap();
        let hub = registries.repository(&ImageRef::parse("busybox").unwrap(), &keyring);
        assert!(format!("{hub:?}").contains("pod-user"), "{hub:?}");
        assert!(!format!("{hub:?}").contains("hub-user"), "{hub:?}");
        let local =
            registries.repository(&ImageRef::parse("127.0.0.1:5000/app:1").unwrap(), &keyring);
        assert!(format!("{local:?}").contains("local"), "{local:?}");
        assert!(format!("{local:?}").contains("regcred"), "{local:?}");
        assert_eq!(
            local.manifest_url("1"),
            "http://127.0.0.1:5000/v2/app/manifests/1"
        );
    }

    #[test]
    fn manifests_named_by_digest_are_checked() {
        use sha2::Digest as _;
        let repository = Repository::new("r.example", "app", false, None);
        let bytes = br#"{"schemaVersion":2}"#;
        let sha256 = sha256_digest(bytes);
        assert!(check_digest("r.example/app", &repository, bytes, &sha256).is_ok());
        let sha512 = format!("sha512:{:x}", sha2::Sha512::digest(bytes));
        assert!(check_digest("r.example/app", &repository, bytes, &sha512).is_ok());
        let err = check_digest("r.example/app", &repository, b"{}", &sha256)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry r.example sent a manifest that does not match"),
            "{err}"
        );
        assert!(err.starts_with("image r.example/app: "), "{err}");
        let err = check_digest("r.example/app", &repository, bytes, "md5:0123")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only sha256 and sha512"), "{err}");
    }
}
