//! Registry credentials as Docker's config files hold them, which is what
//! Kubernetes' image pull Secrets carry: `.dockerconfigjson`
//! (`{"auths": {KEY: ENTRY}}`, type `kubernetes.io/dockerconfigjson`) or
//! the legacy `.dockercfg` (`{KEY: ENTRY}`, `kubernetes.io/dockercfg`);
//! like the kubelet, the key the Secret has decides, not its type. An
//! ENTRY has `username` and `password`, or `auth` (base64 of
//! `user:password`).
//!
//! A KEY is read as the kubelet's keyring (`pkg/credentialprovider`) reads
//! it: a host with its port, optionally a scheme (ignored) and a path; a
//! path starting `/v1/` or `/v2/` loses that part (Docker's API prefix),
//! and `/` alone is no path. Docker Hub's names (`https://index.docker.io/v1/`,
//! `registry-1.docker.io`, `docker.io`) are all Docker Hub. A key matches an
//! image when the ports are the same, the hosts have as many DNS labels and
//! each label matches (a label may be a glob: `*` any run of characters,
//! `?` one, so `*.example.com` or `app*.k8s.io`), and the key's path is a
//! prefix of the image's `/repository` (a plain string prefix, as the
//! kubelet's: `host/team` also matches `host/teamwork/app`).
//!
//! [`PullKeyring`] holds the entries of a pod's pull Secrets and gives an
//! image every entry that matches, in the kubelet's order: the keys sorted
//! in reverse (so `quay.io/coreos` before `quay.io`, and `r.example.com`
//! before `*.example.com`), the entries under one key in the Secrets'
//! order. The pull tries them in turn (`registry.rs`).

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

/// One registry's credentials from a pull Secret, under the kubelet's
/// key: host and path.
#[derive(Debug, Clone)]
struct KeyringEntry {
    /// Lowercase, with its port; a label may be a glob.
    host: String,
    /// A prefix of the image's `/repository` (`/team`); empty for any.
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
        // The kubelet's index: keys in reverse order, so that a longer
        // key comes before its prefix and a label before a `*` in its
        // place; under one key, the order the Secrets name them in.
        self.entries
            .sort_by_cached_key(|e| (std::cmp::Reverse(format!("{}{}", e.host, e.path)), e.order));
        Ok(added)
    }

    /// Every credential for repository `repository` on `registry` (as
    /// image references name them: `docker.io`, `127.0.0.1:5000`), in the
    /// order a pull tries them.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<&Credentials> {
        let registry = canonical_host(&registry.to_ascii_lowercase());
        let path = format!("/{repository}");
        self.entries
            .iter()
            .filter(|e| host_matches(&e.host, &registry) && path.starts_with(&e.path))
            .map(|e| &e.credentials)
            .collect()
    }
}

/// A Docker config key as the kubelet's (host, path): scheme dropped,
/// host lowercased and Docker Hub's names made one, a leading `/v1` or
/// `/v2` of a longer path dropped, `/` alone no path.
fn parse_key(key: &str) -> Option<(String, String)> {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (host, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let host = canonical_host(&host.to_ascii_lowercase());
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
        &path[3..]
    } else {
        path
    };
    let path = if path == "/" { "" } else { path };
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

/// Whether pattern `pattern` (its labels may be globs, its port must be
/// the same) matches `host`, label by label.
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
            .all(|(label, glob)| label_matches(glob, label))
}

/// Whether DNS label `label` matches glob `glob`: `*` any run of
/// characters, `?` any one, anything else itself (the kubelet's
/// `filepath.Match` also knows `[...]` classes, which no registry name
/// needs).
fn label_matches(glob: &str, label: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let label: Vec<char> = label.chars().collect();
    let (mut g, mut l) = (0, 0);
    // Where the last `*` was, and where in the label it now ends.
    let mut star: Option<(usize, usize)> = None;
    while l < label.len() {
        if g < glob.len() && (glob[g] == '?' || glob[g] == label[l]) {
            g += 1;
            l += 1;
        } else if g < glob.len() && glob[g] == '*' {
            star = Some((g, l));
            g += 1;
        } else if let Some((star_at, matched_to)) = star {
            // Let the `*` take one more character.
            g = star_at + 1;
            l = matched_to + 1;
            star = Some((star_at, matched_to + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        [(key.to_owned(), json.as_bytes().to_vec())].into()
    }

    /// The user names `keyring` gives, in order.
    fn users(keyring: &PullKeyring, registry: &str, repository: &str) -> Vec<String> {
        keyring
            .lookup(registry, repository)
            .into_iter()
            .map(|c| c.username.clone())
            .collect()
    }

    fn keyring_of(secrets: &[(&str, &str)]) -> PullKeyring {
        let mut keyring = PullKeyring::empty();
        for (name, json) in secrets {
            keyring
                .add_secret(name, &secret(DOCKER_CONFIG_JSON_KEY, json))
                .unwrap();
        }
        keyring
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

        let found = keyring.lookup("127.0.0.1:5000", "team/busybox");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].username.as_str(), found[0].password.as_str()),
            ("skiff", "s3cret")
        );
        assert_eq!(found[0].origin.to_string(), r#"imagePullSecret "regcred""#);
        // Docker Hub by any of its names; the password from `auth`.
        let hub = keyring.lookup("docker.io", "library/busybox");
        assert_eq!(
            (hub[0].username.as_str(), hub[0].password.as_str()),
            ("hub", "hubpw")
        );
        // The path's entry first, then the host's, each from its Secret.
        let lan = keyring.lookup("registry.lan", "team/app");
        let origins: Vec<(&str, String)> = lan
            .iter()
            .map(|c| (c.username.as_str(), c.origin.to_string()))
            .collect();
        assert_eq!(
            origins,
            [
                ("team", r#"imagePullSecret "regcred""#.to_owned()),
                ("lan", r#"imagePullSecret "old""#.to_owned())
            ]
        );
        assert_eq!(users(&keyring, "registry.lan", "other/app"), ["lan"]);
        assert_eq!(users(&keyring, "r.example.com", "a"), ["wild"]);
        // Nothing for another port or registry.
        assert!(keyring.lookup("127.0.0.1:5001", "team/busybox").is_empty());
        assert!(keyring.lookup("ghcr.io", "o/app").is_empty());
    }

    #[test]
    fn every_match_comes_in_the_kubelets_order() {
        let first = r#"{"auths": {
            "registry.lan": {"username": "host-1", "password": "p"},
            "registry.lan/team": {"username": "team-1", "password": "p"},
            "registry.lan/team/app": {"username": "app-1", "password": "p"},
            "*.lan": {"username": "glob-1", "password": "p"},
            "registry.lan:5000": {"username": "port", "password": "p"}
        }}"#;
        let second = r#"{"auths": {
            "https://registry.lan/v2/": {"username": "host-2", "password": "p"},
            "http://registry.lan/team": {"username": "team-2", "password": "p"}
        }}"#;
        let keyring = keyring_of(&[("first", first), ("second", second)]);
        // The longest path first; under one key, the Secrets' order (the
        // scheme and the `/v2/` of the API are not part of the key); the
        // exact host before the glob; the other port not at all.
        assert_eq!(
            users(&keyring, "registry.lan", "team/app"),
            ["app-1", "team-1", "team-2", "host-1", "host-2", "glob-1"]
        );
        // A path is a string prefix, as the kubelet's.
        assert_eq!(
            users(&keyring, "registry.lan", "teamwork"),
            ["team-1", "team-2", "host-1", "host-2", "glob-1"]
        );
        assert_eq!(
            users(&keyring, "Registry.LAN", "x"),
            ["host-1", "host-2", "glob-1"]
        );
        assert_eq!(users(&keyring, "registry.lan:5000", "team/app"), ["port"]);
        assert_eq!(users(&keyring, "other.lan", "team/app"), ["glob-1"]);
        assert!(users(&keyring, "a.registry.lan", "x").is_empty());
    }

    #[test]
    fn host_globs_match_one_label_each_and_ports_must_be_the_same() {
        let json = r#"{"auths": {
            "*.example.com": {"username": "sub", "password": "p"},
            "app*.k8s.io": {"username": "prefix", "password": "p"},
            "k8s.*": {"username": "tld", "password": "p"},
            "r?.example.com": {"username": "query", "password": "p"},
            "*.example.com:5000": {"username": "sub-5000", "password": "p"}
        }}"#;
        let keyring = keyring_of(&[("globs", json)]);
        assert_eq!(users(&keyring, "r.example.com", "a"), ["sub"]);
        // A `?` in a key starts its query, as in the kubelet's url.Parse:
        // that key is host `r`, not a glob.
        assert_eq!(users(&keyring, "r1.example.com", "a"), ["sub"]);
        assert_eq!(users(&keyring, "r", "a"), ["query"]);
        assert!(users(&keyring, "a.b.example.com", "a").is_empty());
        assert!(users(&keyring, "example.com", "a").is_empty());
        assert_eq!(users(&keyring, "app-east.k8s.io", "a"), ["prefix"]);
        assert!(users(&keyring, "web.k8s.io", "a").is_empty());
        assert_eq!(users(&keyring, "k8s.io", "a"), ["tld"]);
        assert_eq!(users(&keyring, "r.example.com:5000", "a"), ["sub-5000"]);
        assert!(users(&keyring, "r.example.com:443", "a").is_empty());

        for (glob, label, matches) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("*b*", "abc", true),
            ("??", "ab", true),
            ("??", "abc", false),
            ("a", "b", false),
        ] {
            assert_eq!(label_matches(glob, label), matches, "{glob:?} {label:?}");
        }
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
        assert_eq!(
            key("registry.lan/v2/team").as_deref(),
            Some("registry.lan|/team")
        );
        assert_eq!(key("ghcr.io/owner/").as_deref(), Some("ghcr.io|/owner/"));
        assert_eq!(key("ghcr.io/").as_deref(), Some("ghcr.io|"));
        assert_eq!(key("https://").as_deref(), None);
    }
}
