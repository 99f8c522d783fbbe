//! skiff's cluster security: the CA and the certificates it signs, the
//! identities certificates carry, k3s-style join tokens that pin the CA,
//! the admin credential file (a kubeconfig), and gRPC over mutual TLS
//! (rustls, ring) for both ends of every connection.
//!
//! Identity comes only from verified credentials: [`Identity`] is read
//! from the client certificate during the TLS handshake
//! ([`listener::PeerInfo`]) and never from a request field; the one other
//! source is the master's REST API, which makes a service account identity
//! from a service account token whose signature it verified.

pub mod ca;
pub mod channel;
pub mod credentials;
pub mod files;
pub mod gate;
pub mod identity;
pub mod join_client;
pub mod listener;
pub mod node_password;
pub mod renewal;
pub mod tls;
pub mod token;

pub use ca::{ClusterCa, IssuedCert};
pub use channel::{ChannelCache, ClientTransport};
pub use credentials::{CredentialLayout, Credentials};
pub use identity::{CertInfo, Identity, TokenCredential};
pub use listener::PeerInfo;
pub use tls::CertStore;
pub use token::{JoinToken, TokenUsage};

use std::time::Duration;

/// How long a leaf certificate (master, node, admin) is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A leaf is renewed when fewer than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// The DNS name every master's serving certificate carries and every
/// client checks, whatever address it dialled.
pub const MASTER_SERVER_NAME: &str = "skiff-master";

/// The DNS name a node's certificate carries for its own servers (logs).
pub fn node_server_name(node: &str) -> String {
    format!("{node}.node.skiff")
}

/// Why a security operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("join token: {0}")]
    Token(String),
    #[error("credential file {path}: {message}")]
    Credentials {
        path: std::path::PathBuf,
        message: String,
    },
    /// An API address that is not `https://HOST:PORT` or `HOST:PORT`.
    #[error("{server:?}: {reason}")]
    ServerAddress { server: String, reason: String },
}

impl From<rcgen::Error> for SecurityError {
    fn from(e: rcgen::Error) -> Self {
        SecurityError::Certificate(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, SecurityError>;

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The file `skiff certificate rotate` leaves in a TLS dir to ask the
/// running master or agent to renew its certificates now.
pub fn rotate_request_path(tls_dir: &std::path::Path) -> std::path::PathBuf {
    tls_dir.join("rotate-requested")
}
