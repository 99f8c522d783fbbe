//! The cluster CA: created once by the first master, shared with masters
//! that join with a server token, and used to sign every leaf certificate
//! (masters, nodes, admins). Keys are ECDSA P-256.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;
use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::{Result, SecurityError};

/// The cluster CA: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

/// A signed leaf certificate and, when the CA made the key, its key.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    /// Empty when the holder made the key and sent a signing request.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(lifetime.as_secs() as i64);
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

impl ClusterCa {
    /// A new CA, valid for [`crate::CA_VALIDITY`].
    pub fn generate() -> Result<ClusterCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        dn.push(DnType::CommonName, format!("skiff-ca@{created}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, crate::CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        ClusterCa::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| SecurityError::Pem {
            what: "CA key".into(),
            message: e.to_string(),
        })?;
        if key.subject_public_key_info() != public_key_of(cert_pem)? {
            return Err(SecurityError::Certificate(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| SecurityError::Pem {
            what: "CA certificate".into(),
            message: e.to_string(),
        })?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The hash a join token pins: SHA-256 of the CA certificate (DER), hex.
    pub fn hash(&self) -> String {
        ca_hash(&self.cert_pem).unwrap_or_default()
    }

    fn leaf_params(identity: &Identity, sans: &[String]) -> Result<CertificateParams> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.common_name());
        dn.push(DnType::OrganizationName, "skiff");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, crate::LEAF_VALIDITY);
        Ok(params)
    }

    /// A certificate for `identity` with a new key made here.
    pub fn issue(&self, identity: &Identity, sans: &[String]) -> Result<IssuedCert> {
        self.issue_for(identity, sans, crate::LEAF_VALIDITY)
    }

    /// Like [`ClusterCa::issue`] with a lifetime other than a year (tests
    /// of renewal use short ones).
    pub fn issue_for(
        &self,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let mut params = Self::leaf_params(identity, sans)?;
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs the public key of a signing request (DER) for `identity`. The
    /// identity and names come from the caller, never from the request.
    pub fn sign_request(
        &self,
        request_der: &[u8],
        identity: &Identity,
        sans: &[String],
    ) -> Result<IssuedCert> {
        let request = CertificateSigningRequestParams::from_der(
            &CertificateSigningRequestDer::from(request_der),
        )
        .map_err(|e| SecurityError::Certificate(format!("bad signing request: {e}")))?;
        let cert =
            Self::leaf_params(identity, sans)?.signed_by(&request.public_key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: String::new(),
        })
    }
}

/// A new key (PEM) and a signing request for it (DER), for a holder that
/// keeps its key to itself.
pub fn signing_request() -> Result<(String, Vec<u8>)> {
    let key = KeyPair::generate()?;
    let request = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((key.serialize_pem(), request.der().to_vec()))
}

/// SHA-256 (hex) of the first certificate in `cert_pem`.
pub fn ca_hash(cert_pem: &str) -> Result<String> {
    let der = crate::tls::first_cert(cert_pem, "CA certificate")?;
    Ok(hex(&Sha256::digest(der.as_ref())))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn public_key_of(cert_pem: &str) -> Result<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = crate::tls::first_cert(cert_pem, "CA certificate")?;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| SecurityError::Certificate(format!("unparsable CA certificate: {e}")))?;
    Ok(cert.public_key().raw.to_vec())
}

/// Whether `key_pem` is the private key of the first certificate in
/// `cert_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> Result<bool> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| SecurityError::Pem {
        what: "private key".into(),
        message: e.to_string(),
    })?;
    Ok(key.subject_public_key_info() == public_key_of(cert_pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CertInfo;

    #[test]
    fn issued_certificates_carry_the_identity_and_a_year() {
        let ca = ClusterCa::generate().unwrap();
        let leaf = ca
            .issue(&Identity::Node("pi-1".into()), &["pi-1.node.skiff".into()])
            .unwrap();
        let info = CertInfo::from_pem(&leaf.cert_pem).unwrap();
        assert_eq!(info.identity, Some(Identity::Node("pi-1".into())));
        let left = info.remaining(std::time::SystemTime::now());
        assert!(left > Duration::from_secs(364 * 24 * 3600), "{left:?}");
        assert!(!info.needs_renewal(std::time::SystemTime::now()));
        assert!(key_matches(&leaf.cert_pem, &leaf.key_pem).unwrap());
    }

    #[test]
    fn a_signing_request_gets_the_callers_identity_not_its_own() {
        let ca = ClusterCa::generate().unwrap();
        let (key_pem, request) = signing_request().unwrap();
        let leaf = ca
            .sign_request(&request, &Identity::Node("b".into()), &[])
            .unwrap();
        assert_eq!(
            CertInfo::from_pem(&leaf.cert_pem).unwrap().identity,
            Some(Identity::Node("b".into()))
        );
        assert!(key_matches(&leaf.cert_pem, &key_pem).unwrap());
        let err = ca
            .sign_request(b"garbage", &Identity::Admin, &[])
            .unwrap_err();
        assert!(err.to_string().contains("bad signing request"), "{err}");
    }

    #[test]
    fn the_ca_reloads_from_pem_and_refuses_a_foreign_key() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(ca.hash(), again.hash());
        assert_eq!(ca.hash().len(), 64);
        let other = ClusterCa::generate().unwrap();
        let err = ClusterCa::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn short_lived_certificates_are_due_for_renewal() {
        let ca = ClusterCa::generate().unwrap();
        let leaf = ca
            .issue_for(&Identity::Admin, &[], Duration::from_secs(30 * 24 * 3600))
            .unwrap();
        let info = CertInfo::from_pem(&leaf.cert_pem).unwrap();
        assert!(info.needs_renewal(std::time::SystemTime::now()));
    }
}
