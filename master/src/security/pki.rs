//! A master's PKI on disk, under `<data-dir>/tls/`:
//!
//! - `ca.crt`, `ca.key`: the cluster CA (made by the first master, copied to
//!   masters that join with a server token);
//! - `master.crt`, `master.key`: this master's certificate, identity
//!   `master:<id>`, used to serve the API and Raft and to call other masters
//!   and agents;
//!
//! and beside it `<data-dir>/token` (the cluster's server token) and
//! `<data-dir>/admin.conf` (an admin kubeconfig for `skiff ctl`, kubectl,
//! helm). Private keys and both files are 0600.
//!
//! The master's certificate names every address a client may dial it by:
//! `skiff-master`, localhost and loopback, the hostname, each specific
//! address it listens on and each address it advertises (kubectl checks
//! the host of admin.conf's `server:` against them). A stored certificate
//! that lacks one of them is re-issued on start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_security::credentials::api_address;
use skiff_security::tls::{self, ClientAuth};
use skiff_security::{
    files, CertInfo, CertStore, ClientTransport, ClusterCa, CredentialLayout, Credentials,
    Identity, JoinToken, SecurityError,
};

use skiff_security::join_client::{self, JoinError};

/// Why a master's PKI could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("{0}")]
    Config(String),
}

/// What a master needs to set up its PKI.
#[derive(Debug, Clone)]
pub struct PkiConfig {
    pub data_dir: PathBuf,
    /// This master's Raft node id.
    pub node_id: u64,
    /// Extra names and addresses for the serving certificate.
    pub sans: Vec<String>,
    /// The API address written into admin.conf (a SAN too).
    pub advertise_api: String,
    /// The Raft address other masters are told (a SAN too).
    pub advertise_raft: String,
    /// Where the API and Raft listen; specific addresses are SANs, the
    /// unspecified 0.0.0.0 and :: are not.
    pub listen: Vec<SocketAddr>,
    /// To join a cluster without a CA yet: a member's address and a server
    /// token.
    pub join: Option<(String, String)>,
    /// Other places admin.conf is copied to (`/etc/skiff/admin.conf`).
    pub admin_conf_copies: Vec<PathBuf>,
}

/// A master's CA, certificate and tokens, loaded and ready to serve.
pub struct MasterPki {
    pub dir: PathBuf,
    pub ca: Arc<ClusterCa>,
    /// This master's certificate, swapped on renewal.
    pub cert: Arc<CertStore>,
    pub server_token: JoinToken,
    pub identity: Identity,
    sans: Vec<String>,
    config: PkiConfig,
}

impl std::fmt::Debug for MasterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterPki")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Paths of the PKI files under a master's data dir.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

pub fn admin_conf_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.conf")
}

/// The host of a `host:port` address, unbracketed; `None` for none or an
/// unspecified one (0.0.0.0, ::).
fn host_of(addr: &str) -> Option<String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host != "0.0.0.0" && host != "::").then(|| host.to_owned())
}

impl MasterPki {
    /// Loads the PKI, creating (or, with `join`, fetching) what is missing,
    /// and renewing this master's certificate and admin.conf when due.
    pub async fn prepare(config: PkiConfig) -> Result<MasterPki, PkiError> {
        let dir = tls_dir(&config.data_dir);
        let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let token_file = token_path(&config.data_dir);
        let ca = if ca_crt.exists() && ca_key.exists() {
            ClusterCa::from_pem(&files::read_text(&ca_crt)?, &files::read_text(&ca_key)?)?
        } else if let Some((addr, token)) = &config.join {
            let token = JoinToken::parse(token)?;
            let joined = join_client::join_master(addr, &token).await?;
            let ca = ClusterCa::from_pem(&joined.ca_pem, &joined.ca_key_pem)?;
            files::write_private(&token_file, format!("{}\n", joined.server_token).as_bytes())?;
            files::write_private(&ca_key, ca.key_pem().as_bytes())?;
            files::write_public(&ca_crt, ca.cert_pem().as_bytes())?;
            tracing::info!(through = %addr, "received the cluster CA");
            ca
        } else {
            let ca = ClusterCa::generate()?;
            let token = JoinToken::generate(&ca.hash());
            // Token first: a CA without its token would be unusable.
            files::write_private(&token_file, format!("{token}\n").as_bytes())?;
            files::write_private(&ca_key, ca.key_pem().as_bytes())?;
            files::write_public(&ca_crt, ca.cert_pem().as_bytes())?;
            tracing::info!(hash = %ca.hash(), "created the cluster CA");
            ca
        };
        let server_token = JoinToken::parse(&files::read_text(&token_file)?)
            .map_err(|e| PkiError::Config(format!("{}: {e}", token_file.display())))?;
        if server_token.ca_hash != ca.hash() {
            return Err(PkiError::Config(format!(
                "{} pins another CA than {}",
                token_file.display(),
                ca_crt.display()
            )));
        }

        let hostname = nix::unistd::gethostname()
            .ok()
            .map(|name| name.to_string_lossy().into_owned());
        let sans = wanted_sans(&config, hostname);

        let identity = Identity::Master(config.node_id.to_string());
        let (crt, key) = (dir.join("master.crt"), dir.join("master.key"));
        let stored = match (files::read_text(&crt), files::read_text(&key)) {
            (Ok(c), Ok(k)) => CertStore::new(&c, &k).ok(),
            _ => None,
        };
        let current = stored.filter(|store| {
            let info = store.info();
            let missing = missing_sans(&info, &sans);
            if !missing.is_empty() {
                tracing::info!(
                    ?missing,
                    "the master certificate does not name every address this master serves at; \
                     issuing a new one"
                );
            }
            usable(&info, &identity) && missing.is_empty()
        });
        let cert = match current {
            Some(store) => store,
            None => {
                let issued = ca.issue(&identity, &sans)?;
                files::write_private(&key, issued.key_pem.as_bytes())?;
                files::write_public(&crt, issued.cert_pem.as_bytes())?;
                CertStore::new(&issued.cert_pem, &issued.key_pem)?
            }
        };
        let pki = MasterPki {
            dir,
            ca: Arc::new(ca),
            cert,
            server_token,
            identity,
            sans,
            config,
        };
        pki.ensure_admin_conf(false)?;
        Ok(pki)
    }

    /// Writes admin.conf (and its copies) when missing, for another CA,
    /// due for renewal, or when `force`d; one that points at another
    /// address than this master advertises (it moved) is pointed at the
    /// advertised one, and one in an earlier build's flat layout is
    /// rewritten as a kubeconfig, both keeping its certificate.
    pub fn ensure_admin_conf(&self, force: bool) -> Result<(), PkiError> {
        let path = admin_conf_path(&self.config.data_dir);
        let current = Credentials::load_with_layout(&path).ok();
        let fresh = !force
            && current.as_ref().is_some_and(|(c, _)| {
                c.ca_pem == self.ca.cert_pem()
                    && CertInfo::from_pem(&c.cert_pem).is_ok_and(|i| usable(&i, &Identity::Admin))
            });
        let advertised = api_address(&self.config.advertise_api)?;
        if let Some((mut credentials, layout)) = current.filter(|_| fresh) {
            let moved = !credentials.api_address().is_ok_and(|a| a == advertised);
            if moved {
                tracing::info!(
                    path = %path.display(),
                    old = %credentials.server,
                    new = %advertised,
                    "admin.conf pointed at another address; rewrote it to the advertised one"
                );
                credentials.server = advertised.clone();
            }
            let flat = layout == CredentialLayout::Flat;
            if flat {
                tracing::info!(
                    path = %path.display(),
                    "admin.conf was in an earlier build's layout; rewrote it as a kubeconfig"
                );
            }
            if moved || flat {
                credentials.save(&path)?;
            }
        }
        if !fresh {
            let issued = self.ca.issue(&Identity::Admin, &[])?;
            let credentials = Credentials {
                server: advertised,
                ca_pem: self.ca.cert_pem().to_owned(),
                cert_pem: issued.cert_pem,
                key_pem: issued.key_pem,
                namespace: None,
            };
            credentials.save(&path)?;
            tracing::info!(path = %path.display(), "wrote admin credentials");
        }
        for copy in &self.config.admin_conf_copies {
            let same = std::fs::read(copy).ok() == std::fs::read(&path).ok();
            if !same {
                let bytes = std::fs::read(&path).map_err(|source| SecurityError::Io {
                    path: path.clone(),
                    source,
                })?;
                files::write_private(copy, &bytes)?;
                tracing::info!(path = %copy.display(), "copied admin credentials");
            }
        }
        Ok(())
    }

    /// Issues a new certificate for this master and swaps it in.
    pub fn renew(&self) -> Result<(), PkiError> {
        let issued = self.ca.issue(&self.identity, &self.sans)?;
        files::write_private(&self.dir.join("master.key"), issued.key_pem.as_bytes())?;
        files::write_public(&self.dir.join("master.crt"), issued.cert_pem.as_bytes())?;
        self.cert.replace(&issued.cert_pem, &issued.key_pem)?;
        Ok(())
    }

    /// Whether this master's certificate is due for renewal.
    pub fn due(&self) -> bool {
        self.cert.info().needs_renewal(std::time::SystemTime::now())
    }

    /// The API server's TLS: client certificates optional (the join
    /// exchange is open; everything else is gated).
    pub fn api_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        Ok(tls::server_config(
            self.ca.cert_pem(),
            self.cert.clone(),
            ClientAuth::Optional,
        )?)
    }

    /// The Raft peer server's TLS: no handshake without a certificate.
    pub fn peer_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        Ok(tls::server_config(
            self.ca.cert_pem(),
            self.cert.clone(),
            ClientAuth::Required,
        )?)
    }

    /// How this master calls other masters (and, with another server
    /// name, agents).
    pub fn client(&self) -> Result<ClientTransport, PkiError> {
        Ok(ClientTransport::to_masters(
            self.ca.cert_pem(),
            Some(self.cert.clone()),
        )?)
    }
}

/// A stored certificate is kept when it names the right identity and is
/// not yet due for renewal.
fn usable(info: &CertInfo, identity: &Identity) -> bool {
    info.identity.as_ref() == Some(identity) && !info.needs_renewal(std::time::SystemTime::now())
}

/// Every name and address the master's certificate must carry: its fixed
/// names, the `hostname`, the hosts of the addresses it advertises and of
/// the specific ones it listens on, and the operator's extra SANs; sorted,
/// each once.
fn wanted_sans(config: &PkiConfig, hostname: Option<String>) -> Vec<String> {
    let mut sans = vec![
        skiff_security::MASTER_SERVER_NAME.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    sans.extend(hostname.filter(|name| !name.is_empty()));
    sans.extend(host_of(&config.advertise_api));
    sans.extend(host_of(&config.advertise_raft));
    sans.extend(
        config
            .listen
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string()),
    );
    sans.extend(config.sans.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

/// The `wanted` names a certificate does not carry; addresses compare as
/// addresses, DNS names without regard to case.
fn missing_sans<'a>(info: &CertInfo, wanted: &'a [String]) -> Vec<&'a str> {
    wanted
        .iter()
        .map(String::as_str)
        .filter(|want| !info.sans.iter().any(|have| same_name(have, want)))
        .collect()
}

fn same_name(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn config(data_dir: &Path, advertise_api: &str) -> PkiConfig {
        PkiConfig {
            data_dir: data_dir.to_owned(),
            node_id: 7,
            sans: Vec::new(),
            advertise_api: advertise_api.to_owned(),
            advertise_raft: "127.0.0.1:6444".to_owned(),
            listen: Vec::new(),
            join: None,
            admin_conf_copies: vec![data_dir.join("etc/admin.conf")],
        }
    }

    fn master_cert(data_dir: &Path) -> CertInfo {
        let pem = std::fs::read_to_string(tls_dir(data_dir).join("master.crt")).unwrap();
        CertInfo::from_pem(&pem).unwrap()
    }

    #[tokio::test]
    async fn admin_conf_follows_the_advertised_address_and_keeps_its_certificate() {
        skiff_security::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let path = admin_conf_path(dir.path());
        MasterPki::prepare(config(dir.path(), "127.0.0.1:6443"))
            .await
            .unwrap();
        let before = Credentials::load(&path).unwrap();
        assert_eq!(before.server, "https://127.0.0.1:6443");

        MasterPki::prepare(config(dir.path(), "192.168.1.10:6443"))
            .await
            .unwrap();
        let after = Credentials::load(&path).unwrap();
        assert_eq!(after.server, "https://192.168.1.10:6443");
        assert_eq!(after.cert_pem, before.cert_pem, "the same certificate");
        let copy = Credentials::load(&dir.path().join("etc/admin.conf")).unwrap();
        assert_eq!(copy.api_address().unwrap(), "192.168.1.10:6443");
    }

    #[tokio::test]
    async fn an_earlier_builds_flat_admin_conf_is_rewritten_as_a_kubeconfig() {
        skiff_security::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let path = admin_conf_path(dir.path());
        MasterPki::prepare(config(dir.path(), "127.0.0.1:6443"))
            .await
            .unwrap();
        let written = Credentials::load(&path).unwrap();
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let flat = format!(
            "server: 127.0.0.1:6443\ncertificate-authority-data: {}\n\
             client-certificate-data: {}\nclient-key-data: {}\n",
            b64(&written.ca_pem),
            b64(&written.cert_pem),
            b64(&written.key_pem)
        );
        std::fs::write(&path, flat).unwrap();
        assert_eq!(
            Credentials::load_with_layout(&path).unwrap().1,
            CredentialLayout::Flat
        );

        MasterPki::prepare(config(dir.path(), "127.0.0.1:6443"))
            .await
            .unwrap();
        let (after, layout) = Credentials::load_with_layout(&path).unwrap();
        assert_eq!(layout, CredentialLayout::Kubeconfig);
        assert_eq!(after.server, "https://127.0.0.1:6443");
        assert_eq!(after.cert_pem, written.cert_pem, "the same certificate");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kind: Config"), "{text}");
        let copy = std::fs::read_to_string(dir.path().join("etc/admin.conf")).unwrap();
        assert_eq!(copy, text, "the copy follows");
    }

    #[tokio::test]
    async fn the_master_certificate_is_reissued_when_an_address_is_not_among_its_sans() {
        skiff_security::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        MasterPki::prepare(config(dir.path(), "127.0.0.1:6443"))
            .await
            .unwrap();
        let first = master_cert(dir.path());
        MasterPki::prepare(config(dir.path(), "127.0.0.1:6443"))
            .await
            .unwrap();
        assert_eq!(master_cert(dir.path()).serial, first.serial, "kept");

        // A new advertised address.
        let pki = MasterPki::prepare(config(dir.path(), "192.168.1.10:6443"))
            .await
            .unwrap();
        let second = master_cert(dir.path());
        assert_ne!(second.serial, first.serial, "re-issued");
        assert!(
            second.sans.contains(&"192.168.1.10".to_owned()),
            "{second:?}"
        );
        assert_eq!(pki.cert.info().serial, second.serial, "and served");

        // A new specific listen address; an unspecified one is no SAN.
        let mut listening = config(dir.path(), "192.168.1.10:6443");
        listening.listen = vec![
            "10.0.0.5:6443".parse().unwrap(),
            "0.0.0.0:6444".parse().unwrap(),
        ];
        MasterPki::prepare(listening.clone()).await.unwrap();
        let third = master_cert(dir.path());
        assert_ne!(third.serial, second.serial, "re-issued");
        assert!(third.sans.contains(&"10.0.0.5".to_owned()), "{third:?}");
        assert!(third.sans.contains(&"192.168.1.10".to_owned()), "{third:?}");
        assert!(!third.sans.contains(&"0.0.0.0".to_owned()), "{third:?}");
        MasterPki::prepare(listening).await.unwrap();
        assert_eq!(master_cert(dir.path()).serial, third.serial, "kept");
    }

    #[test]
    fn the_wanted_sans_are_every_address_served_at() {
        let mut c = config(Path::new("/nowhere"), "[fe80::1]:6443");
        c.advertise_raft = "pi.local:6444".to_owned();
        c.listen = vec![
            "0.0.0.0:6443".parse().unwrap(),
            "[::]:6444".parse().unwrap(),
            "192.168.1.10:6445".parse().unwrap(),
        ];
        c.sans = vec!["skiff.example".to_owned(), "localhost".to_owned()];
        let sans = wanted_sans(&c, Some("pi".to_owned()));
        assert_eq!(
            sans,
            [
                "127.0.0.1",
                "192.168.1.10",
                "::1",
                "fe80::1",
                "localhost",
                "pi",
                "pi.local",
                "skiff-master",
                "skiff.example",
            ]
        );
    }

    #[test]
    fn sans_compare_addresses_as_addresses_and_names_without_case() {
        let info = CertInfo {
            identity: None,
            serial: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
            sans: vec!["Pi.Local".to_owned(), "fe80::1".to_owned()],
        };
        let wanted = [
            "pi.local".to_owned(),
            "fe80:0:0::1".to_owned(),
            "10.0.0.5".to_owned(),
        ];
        assert_eq!(missing_sans(&info, &wanted), ["10.0.0.5"]);
    }
}
