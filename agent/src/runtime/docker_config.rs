//! Registry credentials as Docker's config files hold them, which is what
//! Kubernetes' image pull Secrets carry: `.dockerconfigjson`
//! (`{"auths": {KEY: ENTRY}}`, type `kubernetes.io/dockerconfigjson`) or
//! the legacy `.dockercfg` (`{KEY: ENTRY}`, `kubernetes.io/dockercfg`);
//! like the kubelet, the key the Secret has decides, not its type. An
//! ENTRY has `username` and `password`, or `auth` (base64 of
//! `user:password`). A KEY names a registry: a host with its port,
//! optionally a scheme (ignored), a path (a repository prefix) and `*` for
//! one DNS label of the host; Docker Hub's names (`https://index.docker.io/v1/`,
//! `registry-1.docker.io`, `docker.io`) are all Docker Hub, and a `/v1/` or
//! `/v2/` path names the registry's API, not a repository.
//!
//! [`PullKeyring`] holds the entries of a pod's pull Secrets and gives an
//! image the most specific match (a longer path first, an exact host
//! before a wildcard, the Secrets' order last), as the kubelet's keyring
//! does; the pull then uses those credentials rather than the agent's
//! `registries.yaml`. Unlike the kubelet, which tries every match and then
//! no credentials, one match is tried.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::registry_auth::{CredentialOrigin, Credentials};

/// The key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The key of a legacy `kubernetes.io/dockercfg` Secret.
pub const DOCKER_CFG_KEY: &str = ".dockercfg";

/// Docker Hub, as image references name it.
const DOCKER_HUB: &str = "docker.io";
/// Other names of Docker Hub in Docker config keys.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
    "hub.docker.com",
];

/// Why a pull Secret's credentials cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error("secret {secret:?} has neither a .dockerconfigjson nor a .dockercfg key; make it with `kubectl create secret docker-registry`")]
    NoKey { secret: String },
    #[error("secret {secret:?}: {key} is not a Docker config file: {message}")]
    Malformed {
        secret: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// One registry's credentials from a pull Secret.
#[derive(Debug, Clone)]
struct KeyringEntry {
    /// Lowercase, with its port; a label may be `*`.
    host: String,
    /// A repository prefix (no slashes at either end); empty for any.
    path: String,
    credentials: Credentials,
    /// The order it was added in.
    order: usize,
}

/// The registry credentials of a pod's pull Secrets.
#[derive(Debug, Clone, Default)]
pub struct PullKeyring {
    entries: Vec<KeyringEntry>,
}

impl PullKeyring {
    /// No credentials: a pull with only `registries.yaml`'s.
    pub fn empty() -> PullKeyring {
        PullKeyring::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the entries of Secret `secret` (its decoded `data`); how many
    /// it holds. An entry without a user name or password is skipped.
    pub fn add_secret(
        &mut self,
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<usize, DockerConfigError> {
        let malformed = |key: &'static str, message: String| DockerConfigError::Malformed {
            secret: secret.to_owned(),
            key,
            message,
        };
        let entries: BTreeMap<String, Entry> = if let Some(bytes) = data.get(DOCKER_CONFIG_JSON_KEY)
        {
            let config: ConfigJson = serde_json::from_slice(bytes)
                .map_err(|e| malformed(DOCKER_CONFIG_JSON_KEY, e.to_string()))?;
            config.auths
        } else if let Some(bytes) = data.get(DOCKER_CFG_KEY) {
            serde_json::from_slice(bytes).map_err(|e| malformed(DOCKER_CFG_KEY, e.to_string()))?
        } else {
            return Err(DockerConfigError::NoKey {
                secret: secret.to_owned(),
            });
        };
        let mut added = 0;
        for (key, entry) in entries {
            let Some((host, path)) = parse_key(&key) else {
                tracing::warn!(secret = %secret, key = %key, "pull secret entry names no registry; skipped");
                continue;
            };
            let Some((username, password)) = user_and_password(&entry) else {
                tracing::warn!(secret = %secret, key = %key, "pull secret entry has no user name and password; skipped");
                continue;
            };
            let order = self.entries.len();
            self.entries.push(KeyringEntry {
                host,
                path,
                credentials: Credentials {
                    username,
                    password,
                    origin: CredentialOrigin::PullSecret(secret.to_owned()),
                },
                order,
            });
            added += 1;
        }
        // Most specific first: a longer path, an exact host, then the
        // order the Secrets name them in.
        self.entries.sort_by_key(|e| {
            let wildcards = e.host.split('.').filter(|l| *l == "*").count();
            (std::cmp::Reverse(e.path.len()), wildcards, e.order)
        });
        Ok(added)
    }

    /// The credentials for repository `repository` on `registry` (as
    /// image references name them: `docker.io`, `127.0.0.1:5000`).
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Credentials> {
        let registry = canonical_host(&registry.to_ascii_lowercase());
        self.entries
            .iter()
            .find(|e| host_matches(&e.host, &registry) && path_matches(&e.path, repository))
            .map(|e| &e.credentials)
    }
}

/// A Docker config key as (host, path): scheme dropped, host lowercased
/// and Docker Hub's names made one, a `v1`/`v2` API path dropped.
fn parse_key(key: &str) -> Option<(String, String)> {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, path),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let host = canonical_host(&host.to_ascii_lowercase());
    let mut path = path.trim_matches('/');
    for api in ["v1", "v2"] {
        if path == api {
            path = "";
        } else if let Some(rest) = path.strip_prefix(&format!("{api}/")) {
            if host == DOCKER_HUB {
                path = rest;
            }
        }
    }
    Some((host, path.to_owned()))
}

/// Docker Hub under its one name.
fn canonical_host(host: &str) -> String {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB.to_owned()
    } else {
        host.to_owned()
    }
}

/// The entry's user and password: given, else from `auth`.
fn user_and_password(entry: &Entry) -> Option<(String, String)> {
    if !entry.username.is_empty() {
        return Some((entry.username.clone(), entry.password.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// Whether pattern `pattern` (labels may be `*`, the port must be the
/// same) matches `host`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                (name.to_owned(), port.to_owned())
            }
            _ => (h.to_owned(), String::new()),
        }
    };
    let (pattern_name, pattern_port) = split(pattern);
    let (name, port) = split(host);
    if pattern_port != port {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let pattern_labels: Vec<&str> = pattern_name.split('.').collect();
    labels.len() == pattern_labels.len()
        && labels
            .iter()
            .zip(&pattern_labels)
            .all(|(label, want)| *want == "*" || label == want)
}

/// Whether repository `repository` is under path `prefix` (whole path
/// segments).
fn path_matches(prefix: &str, repository: &str) -> bool {
    prefix.is_empty()
        || repository == prefix
        || repository
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        [(key.to_owned(), json.as_bytes().to_vec())].into()
    }

    fn user(found: Option<&Credentials>) -> Option<(&str, String)> {
        found.map(|c| (c.username.as_str(), c.origin.to_string()))
    }

    #[test]
    fn docker_config_json_and_legacy_dockercfg_secrets_give_credentials_by_registry() {
        let mut keyring = PullKeyring::empty();
        assert!(keyring.is_empty());
        // `kubectl create secret docker-registry` writes both forms of
        // the user and password; `auth` alone is enough.
        let json = r#"{"auths": {
            "127.0.0.1:5000": {"username": "skiff", "password": "s3cret", "auth": "c2tpZmY6czNjcmV0"},
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
            "registry.lan/team": {"username": "team", "password": "t"}
        }}"#;
        let added = keyring
            .add_secret("regcred", &secret(DOCKER_CONFIG_JSON_KEY, json))
            .unwrap();
        assert_eq!(added, 3);
        let legacy = r#"{"*.example.com": {"username": "wild", "password": "w"},
                         "registry.lan": {"username": "lan", "password": "l"}}"#;
        keyring
            .add_secret("old", &secret(DOCKER_CFG_KEY, legacy))
            .unwrap();

        let found = keyring.lookup("127.0.0.1:5000", "team/busybox").unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("skiff", "s3cret")
        );
        assert_eq!(found.origin.to_string(), r#"imagePullSecret "regcred""#);
        // Docker Hub by any of its names; the password from `auth`.
        let hub = keyring.lookup("docker.io", "library/busybox").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "hubpw")
        );
        // The longer path wins; other repositories get the host's entry.
        assert_eq!(
            user(keyring.lookup("registry.lan", "team/app")),
            Some(("team", r#"imagePullSecret "regcred""#.to_owned()))
        );
        assert_eq!(
            user(keyring.lookup("registry.lan", "teamwork/app")),
            Some(("lan", r#"imagePullSecret "old""#.to_owned()))
        );
        // One label per `*`; the port must match.
        assert_eq!(
            user(keyring.lookup("r.example.com", "a")).unwrap().0,
            "wild"
        );
        assert!(keyring.lookup("a.r.example.com", "a").is_none());
        assert!(keyring.lookup("127.0.0.1:5001", "team/busybox").is_none());
        assert!(keyring.lookup("ghcr.io", "o/app").is_none());
    }

    #[test]
    fn secrets_that_are_not_docker_configs_say_so() {
        let mut keyring = PullKeyring::empty();
        let opaque: BTreeMap<String, Vec<u8>> = [("password".to_owned(), b"x".to_vec())].into();
        let e = keyring.add_secret("plain", &opaque).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"secret "plain" has neither a .dockerconfigjson nor a .dockercfg key; make it with `kubectl create secret docker-registry`"#
        );
        let e = keyring
            .add_secret("broken", &secret(DOCKER_CONFIG_JSON_KEY, "{auths"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"secret "broken": .dockerconfigjson is not a Docker config file: "#),
            "{e}"
        );
        // Entries without credentials are skipped, not errors.
        let empty = r#"{"auths": {"r.example": {}, "": {"username": "u", "password": "p"}}}"#;
        let added = keyring
            .add_secret("empty", &secret(DOCKER_CONFIG_JSON_KEY, empty))
            .unwrap();
        assert_eq!(added, 0);
        assert!(keyring.is_empty());
    }

    #[test]
    fn keys_are_read_as_the_kubelet_reads_them() {
        let key = |k: &str| parse_key(k).map(|(h, p)| format!("{h}|{p}"));
        assert_eq!(
            key("https://index.docker.io/v1/").as_deref(),
            Some("docker.io|")
        );
        assert_eq!(key("registry-1.docker.io").as_deref(), Some("docker.io|"));
        assert_eq!(
            key("http://127.0.0.1:5000").as_deref(),
            Some("127.0.0.1:5000|")
        );
        assert_eq!(
            key("Registry.LAN:443/v2/").as_deref(),
            Some("registry.lan:443|")
        );
        assert_eq!(key("ghcr.io/owner/").as_deref(), Some("ghcr.io|owner"));
        assert_eq!(key("https://").as_deref(), None);
    }
}
