//! Who a request speaks for. A certificate's identity is its common name:
//! `admin`, `node:<name>` or `master:<id>`. A service account
//! (`system:serviceaccount:<namespace>:<name>`) is never read from a
//! certificate: only the master's REST API makes one, from a service
//! account token it verified. What else skiff reads from a certificate
//! (serial, expiry, the names and addresses it is valid for) is
//! [`CertInfo`].

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

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
    /// A Kubernetes service account, authenticated by a token the cluster
    /// signed (bound to the account's `uid`); never from a certificate.
    ServiceAccount {
        namespace: String,
        name: String,
        uid: String,
    },
}

impl Identity {
    /// The certificate common name for this identity; for a service
    /// account, which has no certificate, its Kubernetes user name (which
    /// [`Identity::from_common_name`] never reads back).
    pub fn common_name(&self) -> String {
        match self {
            Identity::Admin => "admin".to_owned(),
            Identity::Node(n) => format!("node:{n}"),
            Identity::Master(id) => format!("master:{id}"),
            Identity::ServiceAccount {
                namespace, name, ..
            } => service_account_user(namespace, name),
        }
    }

    /// Reads an identity from a common name; `None` for anything else
    /// (a service account's name among them: no certificate makes one).
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

/// The Kubernetes user name of service account `name` in `namespace`:
/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
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
    /// Its subject alternative names: DNS names as written, IP addresses
    /// as `IpAddr` prints them.
    pub sans: Vec<String>,
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
        let sans = match cert.subject_alternative_name() {
            Ok(Some(extension)) => extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(CertInfo {
            identity,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after,
            sans,
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

/// An IP address SAN: 4 bytes (IPv4) or 16 (IPv6).
fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
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
        // A certificate never speaks for a service account.
        let robot = Identity::ServiceAccount {
            namespace: "team".into(),
            name: "robot".into(),
            uid: "u-1".into(),
        };
        assert_eq!(robot.common_name(), "system:serviceaccount:team:robot");
        assert_eq!(Identity::from_common_name(&robot.common_name()), None);
        assert!(!robot.is_privileged());
    }

    #[test]
    fn a_service_account_is_named_as_kubernetes_names_it_and_never_read_from_a_certificate() {
        let account = Identity::ServiceAccount {
            namespace: "shop".into(),
            name: "builder".into(),
            uid: "6f1c".into(),
        };
        assert_eq!(account.to_string(), "system:serviceaccount:shop:builder");
        assert_eq!(Identity::from_common_name(&account.common_name()), None);
        assert_eq!(
            Identity::from_common_name("system:serviceaccount:shop:builder"),
            None
        );
        assert!(!account.is_privileged());
    }

    #[test]
    fn only_admins_and_masters_are_privileged() {
        assert!(Identity::Admin.is_privileged());
        assert!(Identity::Master("1".into()).is_privileged());
        assert!(!Identity::Node("a".into()).is_privileged());
    }

    #[test]
    fn subject_alternative_names_are_read_back() {
        crate::install_crypto_provider();
        let ca = crate::ClusterCa::generate().unwrap();
        let sans = ["skiff-master", "pi.local", "192.168.1.10", "::1", "fe80::1"];
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let issued = ca.issue(&Identity::Master("7".into()), &sans).unwrap();
        let info = CertInfo::from_pem(&issued.cert_pem).unwrap();
        assert_eq!(info.sans, sans);
        let admin = ca.issue(&Identity::Admin, &[]).unwrap();
        assert!(CertInfo::from_pem(&admin.cert_pem).unwrap().sans.is_empty());
    }
}
