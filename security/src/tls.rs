//! rustls configurations (ring provider, TLS 1.3, HTTP/2) for servers and
//! clients, with certificates held in a [`CertStore`] that can be swapped
//! while connections are open: renewal never needs a restart.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::identity::CertInfo;
use crate::{Result, SecurityError};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Pem {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Pem {
            what: what.to_owned(),
            message: "no certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

/// The first certificate in a PEM text.
pub fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    Ok(certs(pem, what)?.remove(0))
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| SecurityError::Pem {
        what: "private key".to_owned(),
        message: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| SecurityError::Certificate(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// One certificate and key, replaceable at any time. New handshakes use
/// the newest; open connections keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<(Arc<CertifiedKey>, CertInfo)>,
}

fn certified(cert_pem: &str, key_pem: &str) -> Result<(Arc<CertifiedKey>, CertInfo)> {
    let chain = certs(cert_pem, "certificate")?;
    let info = CertInfo::from_der(chain[0].as_ref())?;
    if !crate::ca::key_matches(cert_pem, key_pem)? {
        return Err(SecurityError::Certificate(
            "the private key does not belong to the certificate".to_owned(),
        ));
    }
    let key = provider()
        .key_provider
        .load_private_key(private_key(key_pem)?)?;
    Ok((Arc::new(CertifiedKey::new(chain, key)), info))
}

impl CertStore {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<CertStore>> {
        Ok(Arc::new(CertStore {
            current: RwLock::new(certified(cert_pem, key_pem)?),
        }))
    }

    /// Swaps in a new certificate and key (checked to belong together).
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let next = certified(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// What the current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate is verified when offered; the server decides per
    /// call what an anonymous client may do (only the join exchange).
    Optional,
    /// No handshake completes without a certificate signed by the CA.
    Required,
}

/// A server configuration presenting `store`'s certificate and verifying
/// client certificates against the CA in `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    store: Arc<CertStore>,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider());
    let verifier = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated().build(),
        ClientAuth::Required => builder.build(),
    }
    .map_err(|e| SecurityError::Certificate(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    // HTTP/1.1 too: the Kubernetes REST API on the same port serves
    // clients that speak only it (the Python client, curl).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA in `ca_pem`, presenting
/// `store`'s certificate when given.
pub fn client_config(ca_pem: &str, store: Option<Arc<CertStore>>) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match store {
        Some(store) => builder.with_client_cert_resolver(store),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that accepts any server certificate. Used for
/// one call only: fetching the master's CA, which the caller then checks
/// against the hash in its join token before trusting or sending anything.
pub fn unverified_client_config() -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer::default()))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate, as Go's `InsecureSkipVerify`: neither
/// its chain nor its name is checked, but the handshake's signatures still
/// are, with the certificate's key (ring's algorithms). For the join's CA
/// fetch, and for the agent's HTTPS probes and hooks of pods, whose
/// certificates the kubelet does not verify either.
#[derive(Debug)]
pub struct AcceptAnyServer(Arc<CryptoProvider>);

impl Default for AcceptAnyServer {
    fn default() -> AcceptAnyServer {
        AcceptAnyServer(provider())
    }
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
