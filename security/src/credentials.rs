//! The credential file a client uses (`admin.conf`): a kubeconfig, so that
//! kubectl, helm and client libraries read it as it is. It names where the
//! API is (`https://HOST:PORT`), the CA to trust, and a client certificate
//! and key, each base64 PEM. Whoever can read it is a cluster admin, so it
//! is 0600.
//!
//! Reading follows kubectl: `current-context` names a context, which names
//! a cluster and a user; other entries and fields skiff does not use are
//! ignored. Files earlier skiff builds wrote (one flat mapping: `server:
//! HOST:PORT` and three `*-data:` keys) are still read, strictly; the
//! master rewrites them as kubeconfigs.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::channel::ClientTransport;
use crate::tls::CertStore;
use crate::{CertInfo, Identity, Result, SecurityError};

/// A client's credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The API's address as given: `https://HOST:PORT` (a kubeconfig's
    /// `server:`) or `HOST:PORT`. [`Credentials::api_address`] is what a
    /// client dials.
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The namespace of the kubeconfig's current context, if it names one.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// How a credential file on disk is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialLayout {
    /// A kubeconfig (`apiVersion: v1`, `kind: Config`), as skiff writes it.
    Kubeconfig,
    /// The flat file of earlier skiff builds (`server:` and three
    /// `*-data:` keys): still read, to be rewritten as a kubeconfig.
    Flat,
}

/// The cluster, and the context, of a kubeconfig skiff writes.
const CLUSTER_NAME: &str = "skiff";
const CONTEXT_NAME: &str = "skiff";
/// The user of a kubeconfig skiff writes for an admin certificate.
const ADMIN_USER: &str = "skiff-admin";

const HEADER: &str = "# skiff credentials. Whoever can read this file is a cluster admin.\n";

/// The file earlier skiff builds wrote; nothing else may be in it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FlatFile {
    server: String,
    certificate_authority_data: String,
    client_certificate_data: String,
    client_key_data: String,
}

/// A kubeconfig, as far as skiff reads and writes one. Every part is
/// optional here so that a missing one is reported by name; fields skiff
/// does not use (kubectl writes many) are ignored.
#[derive(Serialize, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    clusters: Option<Vec<NamedCluster>>,
    users: Option<Vec<NamedUser>>,
    contexts: Option<Vec<NamedContext>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(skip_deserializing)]
    preferences: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize)]
struct NamedCluster {
    name: Option<String>,
    cluster: Option<ClusterEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: Option<String>,
    certificate_authority_data: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct NamedUser {
    name: Option<String>,
    user: Option<UserEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct NamedContext {
    name: Option<String>,
    context: Option<ContextEntry>,
}

#[derive(Serialize, Deserialize)]
struct ContextEntry {
    cluster: Option<String>,
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// An entry of a kubeconfig list, found by its name.
trait Named {
    fn name(&self) -> Option<&str>;
}

impl Named for NamedCluster {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Named for NamedUser {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Named for NamedContext {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The first entry of `list` called `name`.
fn find<T: Named>(list: Option<Vec<T>>, name: &str) -> Option<T> {
    list.unwrap_or_default()
        .into_iter()
        .find(|entry| entry.name() == Some(name))
}

/// One value read from the file, with where it was (for errors).
struct Found {
    at: String,
    value: String,
}

/// A value that must be there and not be empty.
fn required(value: Option<String>, at: String) -> std::result::Result<Found, String> {
    match value.filter(|v| !v.trim().is_empty()) {
        Some(value) => Ok(Found { at, value }),
        None => Err(format!("{at}: missing")),
    }
}

/// What either layout holds, still base64 where the file has it so.
struct Parts {
    server: Found,
    ca: Found,
    cert: Found,
    key: Found,
    namespace: Option<String>,
}

impl FlatFile {
    fn into_parts(self) -> Parts {
        let found = |at: &str, value: String| Found {
            at: at.to_owned(),
            value,
        };
        Parts {
            server: found("server", self.server),
            ca: found(
                "certificate-authority-data",
                self.certificate_authority_data,
            ),
            cert: found("client-certificate-data", self.client_certificate_data),
            key: found("client-key-data", self.client_key_data),
            namespace: None,
        }
    }
}

impl Kubeconfig {
    /// The current context's cluster and user, or what is missing.
    fn into_parts(self) -> std::result::Result<Parts, String> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "Config") {
            return Err(format!("kind: {kind:?}, not Config"));
        }
        let current = self
            .current_context
            .filter(|c| !c.is_empty())
            .ok_or("current-context: missing")?;
        let context = find(self.contexts, &current)
            .ok_or_else(|| format!("contexts: no context named {current:?} (current-context)"))?
            .context
            .ok_or_else(|| format!("contexts: {current:?}: context: missing"))?;
        let cluster_name = required(context.cluster, format!("contexts: {current:?}: cluster"))?;
        let user_name = required(context.user, format!("contexts: {current:?}: user"))?;
        let (cluster_name, user_name) = (cluster_name.value, user_name.value);
        let cluster = find(self.clusters, &cluster_name)
            .ok_or_else(|| {
                format!("clusters: no cluster named {cluster_name:?} (context {current:?})")
            })?
            .cluster
            .ok_or_else(|| format!("clusters: {cluster_name:?}: cluster: missing"))?;
        let user = find(self.users, &user_name)
            .ok_or_else(|| format!("users: no user named {user_name:?} (context {current:?})"))?
            .user
            .ok_or_else(|| format!("users: {user_name:?}: user: missing"))?;
        let in_cluster = |field: &str| format!("clusters: {cluster_name:?}: {field}");
        let in_user = |field: &str| format!("users: {user_name:?}: {field}");
        Ok(Parts {
            server: required(cluster.server, in_cluster("server"))?,
            ca: required(
                cluster.certificate_authority_data,
                in_cluster("certificate-authority-data"),
            )?,
            cert: required(
                user.client_certificate_data,
                in_user("client-certificate-data"),
            )?,
            key: required(user.client_key_data, in_user("client-key-data"))?,
            namespace: context.namespace.filter(|n| !n.is_empty()),
        })
    }
}

/// The `HOST:PORT` a client dials for `server`: a kubeconfig's
/// `https://HOST[:PORT][/]` (port 443 when none is given) or a bare
/// `HOST:PORT`; an IPv6 host comes back in brackets. `http://` is refused:
/// skiff serves its API over TLS only.
pub fn api_address(server: &str) -> Result<String> {
    let refuse = |reason: &str| SecurityError::ServerAddress {
        server: server.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = server.trim();
    let (rest, default_port) = match trimmed.split_once("://") {
        None => (trimmed, None),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, Some(443)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
            return Err(refuse(
                "plain http is not served: skiff's API speaks only TLS; use https://",
            ))
        }
        Some(_) => return Err(refuse("not https://HOST:PORT")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(refuse(
            "a path, query or user name is not supported: give https://HOST:PORT",
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| refuse("an unclosed '[' around an IPv6 address"))?;
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| refuse("expected :PORT after ']'"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(refuse(
                    "an IPv6 address must be in brackets: [ADDRESS]:PORT",
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(refuse("no host"));
    }
    let port: u16 = match (port, default_port) {
        (Some(port), _) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| refuse("the port is not a number from 1 to 65535"))?,
        (None, Some(port)) => port,
        (None, None) => return Err(refuse("no port: give HOST:PORT")),
    };
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl Credentials {
    /// Reads a credential file (a kubeconfig, or an earlier build's flat
    /// file), naming the file and field on any problem.
    pub fn load(path: &Path) -> Result<Credentials> {
        Credentials::load_with_layout(path).map(|(credentials, _)| credentials)
    }

    /// Reads a credential file and says how it was laid out.
    pub fn load_with_layout(path: &Path) -> Result<(Credentials, CredentialLayout)> {
        let fail = |message: String| SecurityError::Credentials {
            path: path.to_owned(),
            message,
        };
        let text = crate::files::read_text(path)?;
        let document: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let Some(mapping) = document.as_mapping() else {
            return Err(fail(
                "not a kubeconfig: expected a mapping with clusters, users, contexts and \
                 current-context"
                    .to_owned(),
            ));
        };
        let (parts, layout) = if mapping.contains_key("server") {
            let file: FlatFile = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
            (file.into_parts(), CredentialLayout::Flat)
        } else {
            let file: Kubeconfig = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
            (
                file.into_parts().map_err(fail)?,
                CredentialLayout::Kubeconfig,
            )
        };
        api_address(&parts.server.value).map_err(|e| fail(format!("{}: {e}", parts.server.at)))?;
        let decode = |part: &Found| -> Result<String> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(part.value.trim())
                .map_err(|e| fail(format!("{}: not base64: {e}", part.at)))?;
            String::from_utf8(bytes).map_err(|_| fail(format!("{}: not PEM text", part.at)))
        };
        let credentials = Credentials {
            ca_pem: decode(&parts.ca)?,
            cert_pem: decode(&parts.cert)?,
            key_pem: decode(&parts.key)?,
            server: parts.server.value,
            namespace: parts.namespace,
        };
        // Checks that the PEM parts parse and belong together.
        credentials.transport().map_err(|e| fail(e.to_string()))?;
        Ok((credentials, layout))
    }

    /// Writes the file as a kubeconfig, atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let yaml = self
            .to_kubeconfig()
            .map_err(|message| SecurityError::Credentials {
                path: path.to_owned(),
                message,
            })?;
        crate::files::write_private(path, format!("{HEADER}{yaml}").as_bytes())
    }

    /// The `HOST:PORT` to dial (see [`api_address`]).
    pub fn api_address(&self) -> Result<String> {
        api_address(&self.server)
    }

    /// The transport these credentials give: trust the CA, show the cert.
    pub fn transport(&self) -> Result<ClientTransport> {
        let store = CertStore::new(&self.cert_pem, &self.key_pem)?;
        ClientTransport::to_masters(&self.ca_pem, Some(store))
    }

    /// These credentials as kubeconfig YAML: one cluster, one user, one
    /// context, current.
    fn to_kubeconfig(&self) -> std::result::Result<String, String> {
        let address = self.api_address().map_err(|e| format!("server: {e}"))?;
        let encode = |pem: &str| Some(base64::engine::general_purpose::STANDARD.encode(pem));
        let user = self.user_name();
        let file = Kubeconfig {
            api_version: Some("v1".to_owned()),
            kind: Some("Config".to_owned()),
            clusters: Some(vec![NamedCluster {
                name: Some(CLUSTER_NAME.to_owned()),
                cluster: Some(ClusterEntry {
                    server: Some(format!("https://{address}")),
                    certificate_authority_data: encode(&self.ca_pem),
                }),
            }]),
            users: Some(vec![NamedUser {
                name: Some(user.clone()),
                user: Some(UserEntry {
                    client_certificate_data: encode(&self.cert_pem),
                    client_key_data: encode(&self.key_pem),
                }),
            }]),
            contexts: Some(vec![NamedContext {
                name: Some(CONTEXT_NAME.to_owned()),
                context: Some(ContextEntry {
                    cluster: Some(CLUSTER_NAME.to_owned()),
                    user: Some(user),
                    namespace: self.namespace.clone(),
                }),
            }]),
            current_context: Some(CONTEXT_NAME.to_owned()),
            preferences: Some(BTreeMap::new()),
        };
        serde_yaml::to_string(&file).map_err(|e| e.to_string())
    }

    /// The kubeconfig user: `skiff-admin` for an admin certificate, else
    /// `skiff-` and the certificate's identity.
    fn user_name(&self) -> String {
        match CertInfo::from_pem(&self.cert_pem)
            .ok()
            .and_then(|info| info.identity)
        {
            Some(Identity::Admin) | None => ADMIN_USER.to_owned(),
            Some(other) => format!("skiff-{}", other.common_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterCa;
    use std::os::unix::fs::PermissionsExt;

    fn admin(server: &str) -> Credentials {
        crate::install_crypto_provider();
        let ca = ClusterCa::generate().unwrap();
        let issued = ca.issue(&Identity::Admin, &[]).unwrap();
        Credentials {
            server: server.into(),
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            namespace: None,
        }
    }

    fn b64(pem: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    /// A kubeconfig of two clusters, users and contexts, as kubectl might
    /// leave it (extra fields); `current` is the current context. Only the
    /// `skiff` cluster and `skiff-admin` user hold real data.
    fn two_contexts(c: &Credentials, current: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: elsewhere
  cluster: {{server: 'https://10.9.9.9:443', certificate-authority-data: not-base64!}}
- name: skiff
  cluster:
    server: https://192.168.1.10:6443
    certificate-authority-data: {ca}
    extensions: [{{name: x, extension: {{a: 1}}}}]
users:
- name: someone
  user: {{token: abc}}
- name: skiff-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: other
  context: {{cluster: elsewhere, user: someone}}
- name: shop
  context: {{cluster: skiff, user: skiff-admin, namespace: shop}}
current-context: {current}
preferences: {{colors: true}}
",
            ca = b64(&c.ca_pem),
            cert = b64(&c.cert_pem),
            key = b64(&c.key_pem),
        )
    }

    #[test]
    fn kubeconfigs_round_trip_at_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = admin("127.0.0.1:6443");
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");

        let (back, layout) = Credentials::load_with_layout(&path).unwrap();
        assert_eq!(layout, CredentialLayout::Kubeconfig);
        assert_eq!(back.server, "https://127.0.0.1:6443");
        assert_eq!(back.api_address().unwrap(), "127.0.0.1:6443");
        assert_eq!(back.ca_pem, c.ca_pem);
        assert_eq!(back.cert_pem, c.cert_pem);
        assert_eq!(back.key_pem, c.key_pem);
        assert_eq!(back.namespace, None);

        let shop = Credentials {
            namespace: Some("shop".into()),
            ..back
        };
        shop.save(&path).unwrap();
        assert_eq!(
            Credentials::load(&path).unwrap().namespace.as_deref(),
            Some("shop")
        );
    }

    #[test]
    fn the_written_file_is_a_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = admin("[::1]:6443");
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["apiVersion"].as_str(), Some("v1"), "{text}");
        assert_eq!(doc["kind"].as_str(), Some("Config"), "{text}");
        assert_eq!(doc["current-context"].as_str(), Some("skiff"), "{text}");
        assert!(doc["preferences"].is_mapping(), "{text}");

        let cluster = &doc["clusters"][0];
        assert_eq!(cluster["name"].as_str(), Some("skiff"));
        let server = cluster["cluster"]["server"].as_str().unwrap();
        assert!(server.starts_with("https://"), "{server}");
        assert_eq!(server, "https://[::1]:6443", "IPv6 in brackets");
        let ca = cluster["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(ca, b64(&c.ca_pem));

        let user = &doc["users"][0];
        assert_eq!(user["name"].as_str(), Some("skiff-admin"));
        let cert = user["user"]["client-certificate-data"].as_str().unwrap();
        assert_eq!(cert, b64(&c.cert_pem));
        let key = user["user"]["client-key-data"].as_str().unwrap();
        assert_eq!(key, b64(&c.key_pem));

        let context = &doc["contexts"][0];
        assert_eq!(context["name"].as_str(), Some("skiff"));
        assert_eq!(context["context"]["cluster"].as_str(), Some("skiff"));
        assert_eq!(context["context"]["user"].as_str(), Some("skiff-admin"));
        assert!(context["context"].get("namespace").is_none(), "{text}");

        let back = Credentials::load(&path).unwrap();
        assert_eq!(back.api_address().unwrap(), "[::1]:6443");
    }

    #[test]
    fn a_flat_file_of_an_earlier_build_still_loads_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = admin("127.0.0.1:6443");
        let flat = format!(
            "# skiff credentials. Whoever can read this file is a cluster admin.
server: 127.0.0.1:6443
certificate-authority-data: {}
client-certificate-data: {}
client-key-data: {}
",
            b64(&c.ca_pem),
            b64(&c.cert_pem),
            b64(&c.key_pem)
        );
        std::fs::write(&path, &flat).unwrap();
        let (back, layout) = Credentials::load_with_layout(&path).unwrap();
        assert_eq!(layout, CredentialLayout::Flat);
        assert_eq!(back.server, "127.0.0.1:6443");
        assert_eq!(back.api_address().unwrap(), "127.0.0.1:6443");
        assert_eq!(back.cert_pem, c.cert_pem);
        assert_eq!(back.key_pem, c.key_pem);

        let bad_key = flat.replace(
            &format!("client-key-data: {}", b64(&c.key_pem)),
            "client-key-data: zz!!",
        );
        std::fs::write(&path, bad_key).unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(err.contains("admin.conf"), "{err}");
        assert!(err.contains("client-key-data: not base64"), "{err}");

        std::fs::write(&path, "server: x\nsurprise: 1\n").unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn the_current_context_chooses_the_cluster_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = admin("127.0.0.1:6443");
        std::fs::write(&path, two_contexts(&c, "shop")).unwrap();
        let back = Credentials::load(&path).unwrap();
        assert_eq!(back.server, "https://192.168.1.10:6443");
        assert_eq!(back.api_address().unwrap(), "192.168.1.10:6443");
        assert_eq!(back.ca_pem, c.ca_pem);
        assert_eq!(back.cert_pem, c.cert_pem);
        assert_eq!(back.namespace.as_deref(), Some("shop"));

        // The other context's user has a token, no certificate: it is
        // only read when it is the current one.
        std::fs::write(&path, two_contexts(&c, "other")).unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("users: \"someone\": client-certificate-data: missing"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = admin("127.0.0.1:6443");
        let good = two_contexts(&c, "shop");
        let cases = [
            (
                good.replace("current-context: shop", "current-context: x"),
                "contexts: no context named \"x\" (current-context)",
            ),
            (
                good.replace("current-context: shop\n", ""),
                "current-context: missing",
            ),
            (
                good.replace("cluster: skiff, user", "cluster: gone, user"),
                "clusters: no cluster named \"gone\" (context \"shop\")",
            ),
            (
                good.replace("user: skiff-admin,", "user: nobody,"),
                "users: no user named \"nobody\" (context \"shop\")",
            ),
            (
                good.replace("{cluster: skiff, user: skiff-admin, ", "{"),
                "contexts: \"shop\": cluster: missing",
            ),
            (
                good.replace(&format!("client-key-data: {}", b64(&c.key_pem)), ""),
                "users: \"skiff-admin\": client-key-data: missing",
            ),
            (
                good.replace(
                    "server: https://192.168.1.10:6443",
                    "server: http://192.168.1.10:6443",
                ),
                "clusters: \"skiff\": server: \"http://192.168.1.10:6443\": plain http",
            ),
            ("kind: Pod\n".to_owned(), "kind: \"Pod\", not Config"),
            ("- a list\n".to_owned(), "not a kubeconfig"),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, &text).unwrap();
            let err = Credentials::load(&path).unwrap_err().to_string();
            assert!(err.contains("admin.conf"), "{err}");
            assert!(err.contains(expected), "{err}\n(wanted {expected:?})");
        }
    }

    #[test]
    fn server_addresses_become_host_and_port() {
        for (server, address) in [
            ("127.0.0.1:6443", "127.0.0.1:6443"),
            ("https://127.0.0.1:6443", "127.0.0.1:6443"),
            ("HTTPS://pi.local:6443/", "pi.local:6443"),
            ("https://pi.local", "pi.local:443"),
            ("https://[fe80::1]:6443", "[fe80::1]:6443"),
            ("[::1]:6443", "[::1]:6443"),
        ] {
            assert_eq!(api_address(server).unwrap(), address, "{server}");
        }
        for (server, reason) in [
            ("http://127.0.0.1:6443", "only TLS"),
            ("ftp://127.0.0.1:6443", "not https://"),
            ("fe80::1:6443", "brackets"),
            ("127.0.0.1", "no port"),
            ("https://127.0.0.1:6443/prefix", "path"),
            ("https://127.0.0.1:http", "port"),
            ("https://[::1", "unclosed"),
            ("", "no host"),
        ] {
            let err = api_address(server).unwrap_err().to_string();
            assert!(err.contains(reason), "{server}: {err}");
        }
    }
}
