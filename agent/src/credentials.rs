//! The node's credentials, under `<data-dir>/tls/`: the cluster CA
//! (`ca.crt`), and the node's key and certificate (`node.key`, 0600, and
//! `node.crt`, identity `node:<name>`).
//!
//! Beside them, `<data-dir>/node-password` (0600) claims the node's name:
//! see `skiff_security::node_password`.
//!
//! On first start the agent joins with its token: it checks the master's CA
//! against the token's hash before sending anything, then trades the token
//! for a certificate for a key it made. After that every connection is
//! mutual TLS, and the certificate is renewed through the master when fewer
//! than 90 days are left or when `skiff certificate rotate` asks, without a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use skiff_proto::node::RenewCertificateRequest;
use skiff_security::join_client::{self, JoinError};
use skiff_security::{files, CertStore, ClientTransport, Identity, JoinToken, SecurityError};
use tokio_util::sync::CancellationToken;

use crate::master_link::Masters;

/// Why the node has no usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("node {node} has no certificate in {dir} yet: give a join token (--token or SKIFF_TOKEN) to join the cluster")]
    NoToken { node: String, dir: PathBuf },
    #[error("join token: {0}")]
    Token(SecurityError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("shut down before joining")]
    ShutDown,
    #[error("the master at {master} issued a certificate that is not for node {node}; check that the masters and this agent agree on --node-name")]
    NotForThisNode { master: String, node: String },
}

/// Why one renewal through a master failed; the loop tries the next master
/// at its next check.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("making a key and signing request: {0}")]
    SigningRequest(#[source] SecurityError),
    #[error("no usable master address to renew through; check --server")]
    NoMaster,
    #[error("the master refused to renew: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the master's certificate does not fit the new key: {0}")]
    BadCertificate(#[source] SecurityError),
    #[error("saving the renewed certificate: {0}")]
    Save(#[source] SecurityError),
}

/// A node's CA and certificate, loaded.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub cert: Arc<CertStore>,
}

/// Where an agent keeps its node password.
pub fn node_password_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node-password")
}

/// Where an agent keeps its credentials.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// Saves credentials issued for this node (by joining, or by the master
/// of `skiff server` for its own agent).
pub fn save(dir: &Path, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), SecurityError> {
    files::write_private(&dir.join("node.key"), key_pem.as_bytes())?;
    files::write_public(&dir.join("node.crt"), cert_pem.as_bytes())?;
    files::write_public(&dir.join("ca.crt"), ca_pem.as_bytes())?;
    Ok(())
}

/// Loads the credentials in `dir` when they are for `node`.
pub fn load(dir: &Path, node: &str) -> Option<NodeCredentials> {
    let ca_pem = files::read_text(&dir.join("ca.crt")).ok()?;
    let cert_pem = files::read_text(&dir.join("node.crt")).ok()?;
    let key_pem = files::read_text(&dir.join("node.key")).ok()?;
    let cert = match CertStore::new(&cert_pem, &key_pem) {
        Ok(c) => c,
        // A renewal stopped after writing the certificate: its key is next.
        Err(_) => {
            let next = files::read_text(&dir.join("node.key.next")).ok()?;
            let c = CertStore::new(&cert_pem, &next).ok()?;
            promote_next_key(dir).ok()?;
            c
        }
    };
    let info = cert.info();
    let expected = Identity::Node(node.to_owned());
    if info.identity.as_ref() != Some(&expected) || info.remaining(SystemTime::now()).is_zero() {
        return None;
    }
    Some(NodeCredentials {
        dir: dir.to_owned(),
        ca_pem,
        cert,
    })
}

impl NodeCredentials {
    /// How the agent calls masters.
    pub fn transport(&self) -> Result<ClientTransport, SecurityError> {
        ClientTransport::to_masters(&self.ca_pem, Some(self.cert.clone()))
    }

    /// The log endpoint's TLS: only certificates the CA signed get in.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
        skiff_security::tls::server_config(
            &self.ca_pem,
            self.cert.clone(),
            skiff_security::tls::ClientAuth::Required,
        )
    }
}

/// The node's credentials: those on disk, or new ones from joining with
/// `token` through any of `servers` (retrying while none answers).
pub async fn load_or_join(
    data_dir: &Path,
    node: &str,
    servers: &[String],
    token: Option<&str>,
    node_password: &str,
    shutdown: &CancellationToken,
) -> Result<NodeCredentials, CredentialError> {
    let dir = tls_dir(data_dir);
    if let Some(c) = load(&dir, node) {
        return Ok(c);
    }
    let token = token.ok_or_else(|| CredentialError::NoToken {
        node: node.to_owned(),
        dir: dir.clone(),
    })?;
    let token = JoinToken::parse(token).map_err(CredentialError::Token)?;
    let mut delay = Duration::from_millis(200);
    let mut i = 0;
    loop {
        let addr = &servers[i % servers.len()];
        match join_client::join_node(addr, &token, node, node_password).await {
            Ok(joined) => {
                save(&dir, &joined.ca_pem, &joined.cert_pem, &joined.key_pem)?;
                tracing::info!(master = %addr, node, "joined the cluster");
                return load(&dir, node).ok_or_else(|| CredentialError::NotForThisNode {
                    master: addr.clone(),
                    node: node.to_owned(),
                });
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(master = %addr, error = %e, "cannot join yet; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        i += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return Err(CredentialError::ShutDown),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Renews the certificate through a master when due or asked, until
/// `shutdown`, trying the next master after a failure.
pub async fn renewal_loop(
    credentials: NodeCredentials,
    masters: Masters,
    shutdown: CancellationToken,
) {
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    let current = credentials.cert.clone();
    skiff_security::renewal::run(
        &credentials.dir,
        "node",
        move || current.info(),
        |_forced| {
            let i = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            renew(&credentials, &masters, i)
        },
        shutdown,
    )
    .await
}

async fn renew(
    credentials: &NodeCredentials,
    masters: &Masters,
    i: usize,
) -> Result<(), RenewError> {
    let (key_pem, signing_request) =
        skiff_security::ca::signing_request().map_err(RenewError::SigningRequest)?;
    let mut client = masters.client(i).ok_or(RenewError::NoMaster)?;
    let cert_pem = client
        .renew_certificate(RenewCertificateRequest { signing_request })
        .await
        .map_err(|s| RenewError::Refused {
            code: s.code(),
            message: s.message().to_owned(),
        })?
        .into_inner()
        .cert_pem;
    // Check before writing: never replace a working pair with a bad one.
    credentials
        .cert
        .replace(&cert_pem, &key_pem)
        .map_err(RenewError::BadCertificate)?;
    // The new key goes beside the old one until the certificate is in
    // place, so a crash in between leaves a pair `load` can still match.
    let dir = &credentials.dir;
    files::write_private(&dir.join("node.key.next"), key_pem.as_bytes())
        .and_then(|_| files::write_public(&dir.join("node.crt"), cert_pem.as_bytes()))
        .and_then(|_| promote_next_key(dir))
        .map_err(RenewError::Save)
}

fn promote_next_key(dir: &Path) -> Result<(), SecurityError> {
    let (next, key) = (dir.join("node.key.next"), dir.join("node.key"));
    std::fs::rename(&next, &key).map_err(|source| SecurityError::Io { path: key, source })
}
