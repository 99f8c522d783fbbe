//! Pulling from OCI and Docker registries. The agent's registry config
//! (`registries.yaml`, in the manner of k3s) gives credentials per registry
//! host and marks hosts that speak plain HTTP, such as a registry on
//! loopback.
//!
//! Which credentials a pull uses is the kubelet's rule: every credential
//! of the pod's image pull Secrets that matches the image
//! ([`super::docker_config::PullKeyring`], in the keyring's order), then
//! `registries.yaml`'s for the registry (the node's own, as the kubelet's
//! node keyring comes after the Secrets), each tried in turn until the
//! registry accepts one; anonymously only when there are none. Like the
//! kubelet, a pull whose credentials were all refused does not go on
//! without any; its error names the registry, how many were tried and
//! whose they were, and the last refusal.
//!
//! A multi-arch index resolves to this node's platform; a manifest named by
//! digest is checked against it; every blob is streamed into containerd's
//! content store, which verifies it. The HTTP side is skiff's own
//! distribution client (`registry_client`).

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

    /// The settings for `image`'s registry: under its name (`docker.io`),
    /// else under the host its API is on (`registry-1.docker.io`).
    fn host_settings(&self, image: &ImageRef) -> Option<&RegistryHost> {
        self.file
            .configs
            .get(&image.registry)
            .or_else(|| self.file.configs.get(api_host(&image.registry)))
    }

    /// How a pull of `image` reaches its repository, one way per
    /// credential it tries, in turn: those `keyring` has for it, then
    /// `registries.yaml`'s (the same user and password only once); one
    /// anonymous way when there are none.
    fn attempts(&self, image: &ImageRef, keyring: &PullKeyring) -> Vec<Repository> {
        let host = self.host_settings(image);
        let configured = host.and_then(|h| h.auth.as_ref()).map(|a| Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
            origin: CredentialOrigin::RegistriesFile,
        });
        let mut credentials: Vec<Credentials> = Vec::new();
        let found = keyring.lookup(&image.registry, &image.repository);
        for candidate in found.into_iter().cloned().chain(configured) {
            let seen = credentials
                .iter()
                .any(|c| c.username == candidate.username && c.password == candidate.password);
            if !seen {
                credentials.push(candidate);
            }
        }
        let plain_http = host.is_some_and(|h| h.plain_http);
        let repository = |credentials: Option<Credentials>| {
            Repository::new(&image.registry, &image.repository, plain_http, credentials)
        };
        if credentials.is_empty() {
            return vec![repository(None)];
        }
        credentials.into_iter().map(Some).map(repository).collect()
    }

    /// Fetches the manifest of `name` (already normalised) for this
    /// node's platform, trying the credentials for its registry in turn
    /// (see the module's doc); its blobs are read from the returned
    /// source, with the credentials that were accepted.
    pub async fn fetch_manifest(
        &self,
        name: &str,
        keyring: &PullKeyring,
    ) -> Result<PulledManifest<'_>> {
        let image = ImageRef::parse(name).map_err(|source| Error::Reference {
            image: name.to_string(),
            source,
        })?;
        let attempts = self.attempts(&image, keyring);
        let tried = attempts.len();
        let origins: Vec<String> = attempts
            .iter()
            .filter_map(|r| r.credentials().map(|c| c.origin.to_string()))
            .collect();
        let mut last = None;
        for (number, repository) in attempts.into_iter().enumerate() {
            match self.fetch_from(name, &image, repository).await {
                // The registry (or its token service) said no, or could
                // not be reached: the next credentials may do. A manifest
                // that is wrong in itself would be the same with any.
                Err(Error::Registry { source, .. }) if tried > 1 => {
                    tracing::info!(
                        image = %name,
                        attempt = number + 1,
                        of = tried,
                        error = %source,
                        "pull failed with these credentials"
                    );
                    last = Some(source);
                }
                result => return result,
            }
        }
        match last {
            Some(last) => Err(Error::CredentialsExhausted {
                image: name.to_string(),
                registry: image.registry.clone(),
                tried,
                origins: origins.join(", "),
                last,
            }),
            // `attempts` always gives one way at least.
            None => Err(Error::Image {
                image: name.to_string(),
                message: format!("no way to reach registry {}", image.registry),
            }),
        }
    }

    /// One attempt of [`Registries::fetch_manifest`]: through `repository`
    /// and its credentials.
    async fn fetch_from(
        &self,
        name: &str,
        image: &ImageRef,
        repository: Repository,
    ) -> Result<PulledManifest<'_>> {
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
    use std::net::SocketAddr;
    use std::sync::Arc;

    use crate::runtime::test_registry::{answer, TestServer};

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

    /// The first way a pull of `image` would try.
    fn first_attempt(registries: &Registries, image: &str, keyring: &PullKeyring) -> Repository {
        let image = ImageRef::parse(image).unwrap();
        registries.attempts(&image, keyring).remove(0)
    }

    fn users(attempts: &[Repository]) -> Vec<Option<String>> {
        attempts
            .iter()
            .map(|r| r.credentials().map(|c| c.username.clone()))
            .collect()
    }

    #[tokio::test]
    async fn settings_apply_by_registry_name_or_api_host() {
        let file: RegistriesFile = serde_yaml::from_str(
            "configs:\n  registry-1.docker.io:\n    auth: {username: hub-user, password: p}\n  \"127.0.0.1:5000\":\n    plainHTTP: true\n",
        )
        .unwrap();
        let registries = Registries::new(file);
        let none = PullKeyring::empty();
        let hub = first_attempt(&registries, "busybox", &none);
        assert_eq!(
            hub.manifest_url("latest"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        assert!(format!("{hub:?}").contains("hub-user"), "{hub:?}");
        assert!(!format!("{hub:?}").contains("\"p\""), "{hub:?}");
        let local = first_attempt(&registries, "127.0.0.1:5000/app:1", &none);
        assert_eq!(
            local.manifest_url("1"),
            "http://127.0.0.1:5000/v2/app/manifests/1"
        );
        assert!(local.credentials().is_none(), "{local:?}");
        let other = first_attempt(&registries, "ghcr.io/o/app", &none);
        assert_eq!(
            other.blob_url("sha256:ab"),
            "https://ghcr.io/v2/o/app/blobs/sha256:ab"
        );

        // A pod's pull secrets come first, registries.yaml's after them
        // (the same user and password once); the host's settings (plain
        // HTTP) stay.
        let mut keyring = PullKeyring::empty();
        let config = br#"{"auths": {"docker.io": {"username": "pod-user", "password": "x"},
                                     "127.0.0.1:5000": {"username": "local", "password": "y"}}}"#;
        let data = [(".dockerconfigjson".to_owned(), config.to_vec())].into();
        keyring.add_secret("regcred", &data).unwrap();
        let again = br#"{"auths": {"docker.io": {"username": "hub-user", "password": "p"}}}"#;
        let data = [(".dockerconfigjson".to_owned(), again.to_vec())].into();
        keyring.add_secret("same-as-file", &data).unwrap();
        let hub = registries.attempts(&ImageRef::parse("busybox").unwrap(), &keyring);
        assert_eq!(
            users(&hub),
            [Some("pod-user".to_owned()), Some("hub-user".to_owned())]
        );
        assert_eq!(
            hub[1].credentials().unwrap().origin.to_string(),
            r#"imagePullSecret "same-as-file""#
        );
        let local =
            registries.attempts(&ImageRef::parse("127.0.0.1:5000/app:1").unwrap(), &keyring);
        assert_eq!(users(&local), [Some("local".to_owned())]);
        assert!(format!("{:?}", local[0]).contains("regcred"), "{local:?}");
        assert_eq!(
            local[0].manifest_url("1"),
            "http://127.0.0.1:5000/v2/app/manifests/1"
        );
        let other = registries.attempts(&ImageRef::parse("ghcr.io/o/app").unwrap(), &keyring);
        assert_eq!(users(&other), [None], "anonymous when nothing matches");
    }

    /// A keyring of one Secret per `(name, user, password)` for `registry`,
    /// in that order.
    fn keyring_for(registry: &str, secrets: &[(&str, &str, &str)]) -> PullKeyring {
        let mut keyring = PullKeyring::empty();
        for (name, user, password) in secrets {
            let config = format!(
                r#"{{"auths": {{"{registry}": {{"username": "{user}", "password": "{password}"}}}}}}"#
            );
            let data = [(".dockerconfigjson".to_owned(), config.into_bytes())].into();
            keyring.add_secret(name, &data).unwrap();
        }
        keyring
    }

    /// A registry on loopback that serves `app:1` (one layer) only to
    /// Basic `right:pw`.
    async fn registry_accepting_only_right() -> TestServer {
        const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c0","size":2},"layers":[]}"#;
        // base64("right:pw")
        const RIGHT: &str = "Basic cmlnaHQ6cHc=";
        TestServer::start(Arc::new(
            |_: SocketAddr, path: &str, auth: Option<&str>| match (path, auth) {
                ("/v2/app/manifests/1", Some(RIGHT)) => answer(
                    200,
                    &[("content-type", MEDIA_OCI_MANIFEST.into())],
                    MANIFEST,
                ),
                ("/v2/app/blobs/sha256:c0", Some(RIGHT)) => answer(200, &[], "{}"),
                _ => answer(
                    401,
                    &[("www-authenticate", r#"Basic realm="test""#.into())],
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                ),
            },
        ))
        .await
    }

    fn plain_http(addr: &str) -> Registries {
        let config = format!("configs:\n  \"{addr}\":\n    plainHTTP: true\n");
        Registries::new(serde_yaml::from_str(&config).unwrap())
    }

    #[tokio::test]
    async fn every_matching_credential_is_tried_in_turn_until_one_is_accepted() {
        let registry = registry_accepting_only_right().await;
        let addr = registry.addr.to_string();
        let registries = plain_http(&addr);
        let keyring = keyring_for(
            &addr,
            &[("wrongcred", "wrong", "nope"), ("regcred", "right", "pw")],
        );
        let image = format!("{addr}/app:1");
        let pulled = registries.fetch_manifest(&image, &keyring).await.unwrap();
        assert_eq!(pulled.media_type, MEDIA_OCI_MANIFEST);
        // The blobs come with the credentials that were accepted.
        let config = OciDescriptor {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: "sha256:c0".into(),
            size: 2,
            platform: None,
            annotations: HashMap::new(),
        };
        let mut blob = pulled.blobs.open(&config).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = tokio_stream::StreamExt::next(&mut blob).await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(bytes, b"{}");
        let auths: Vec<Option<String>> = registry.seen().into_iter().map(|(_, a)| a).collect();
        assert_eq!(
            auths,
            [
                // The first credentials: challenged, then refused.
                None,
                Some("Basic d3Jvbmc6bm9wZQ==".to_owned()),
                // The second: accepted, for the manifest and the blob.
                Some("Basic cmlnaHQ6cHc=".to_owned()),
                Some("Basic cmlnaHQ6cHc=".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn when_every_credential_is_refused_the_error_counts_them_and_names_whose() {
        let registry = registry_accepting_only_right().await;
        let addr = registry.addr.to_string();
        let registries = plain_http(&addr);
        let keyring = keyring_for(
            &addr,
            &[("first", "wrong", "nope"), ("second", "other", "s3cret")],
        );
        let image = format!("{addr}/app:1");
        let err = match registries.fetch_manifest(&image, &keyring).await {
            Ok(_) => panic!("pulled with wrong credentials"),
            Err(e) => e,
        };
        assert!(
            matches!(err, Error::CredentialsExhausted { tried: 2, .. }),
            "{err}"
        );
        let message = err.to_string();
        for part in [
            format!("image {image}: none of the 2 credentials for registry {addr} worked"),
            r#"tried in this order: imagePullSecret "first", imagePullSecret "second""#.to_owned(),
            "401 Unauthorized".to_owned(),
            r#"refused with the credentials from imagePullSecret "second""#.to_owned(),
        ] {
            assert!(message.contains(&part), "{part:?} in {message}");
        }
        for secret in ["nope", "s3cret"] {
            assert!(!message.contains(secret), "{secret:?} shown in {message}");
        }
        // Each in turn (the second challenged once more, the registry
        // wanting Basic), and no anonymous pull after them, as the
        // kubelet.
        let auths: Vec<Option<String>> = registry.seen().into_iter().map(|(_, a)| a).collect();
        let wrong = Some("Basic d3Jvbmc6bm9wZQ==".to_owned());
        let other = Some("Basic b3RoZXI6czNjcmV0".to_owned());
        assert_eq!(auths, [None, wrong, other.clone(), other]);

        // One credential refused: the registry's refusal as it is.
        let keyring = keyring_for(&addr, &[("only", "wrong", "nope")]);
        let err = match registries.fetch_manifest(&image, &keyring).await {
            Ok(_) => panic!("pulled with wrong credentials"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(r#"refused with the credentials from imagePullSecret "only""#),
            "{err}"
        );
        assert!(!err.contains("none of the"), "{err}");
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
