//! Who a certificate speaks for. The identity is the certificate's common
//! name: `admin`, `node:<name>` or `master:<id>`.

use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Result, SecurityError};

/// The principal a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A cluster administrator: may do everything.
    Admin,
    /// The agent of one node.
    Node(String),
    /// A master, by Raft node id.
    Master(String),
}

impl Identity {
    /// The certificate common name for this identity.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Admin => "admin".to_owned(),
            Identity::Node(n) => format!("node:{n}"),
            Identity::Master(id) => format!("master:{id}"),
        }
    }

    /// Reads an identity from a common name; `None` for anything else.
    pub fn from_common_name(cn: &str) -> Option<Identity> {
        if cn == "admin" {
            return Some(Identity::Admin);
        }
        if let Some(n) = cn.strip_prefix("node:").filter(|n| !n.is_empty()) {
            return Some(Identity::Node(n.to_owned()));
        }
        cn.strip_prefix("master:")
            .filter(|id| !id.is_empty())
            .map(|id| Identity::Master(id.to_owned()))
    }

    /// Admins and masters (which relay requests they already authorized)
    /// may do everything.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Identity::Admin | Identity::Master(_))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.common_name())
    }
}

/// What skiff needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Option<Identity>,
    /// The serial number in hex, to tell certificates apart.
    pub serial: String,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Parses a DER certificate (no signature checks: callers verify the
    /// chain through rustls first).
    pub fn from_der(der: &[u8]) -> Result<CertInfo> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| SecurityError::Certificate(format!("unparsable certificate: {e}")))?;
        let identity = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .and_then(Identity::from_common_name);
        let not_after = cert.validity().not_after.timestamp();
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
        Ok(CertInfo {
            identity,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after,
        })
    }

    /// Parses the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<CertInfo> {
        let der = crate::tls::first_cert(pem, "certificate")?;
        CertInfo::from_der(&der)
    }

    /// Time left until it expires (zero when already expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// Whether it is due for renewal at `now`.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        self.remaining(now) < crate::RENEW_BEFORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_round_trip() {
        for id in [
            Identity::Admin,
            Identity::Node("pi-1".into()),
            Identity::Master("42".into()),
        ] {
            assert_eq!(Identity::from_common_name(&id.common_name()), Some(id));
        }
        assert_eq!(Identity::from_common_name("node:"), None);
        assert_eq!(Identity::from_common_name("root"), None);
        assert_eq!(Identity::from_common_name("Admin"), None);
    }

    #[test]
    fn only_admins_and_masters_are_privileged() {
        assert!(Identity::Admin.is_privileged());
        assert!(Identity::Master("1".into()).is_privileged());
        assert!(!Identity::Node("a".into()).is_privileged());
    }
}
