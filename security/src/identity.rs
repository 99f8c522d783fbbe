//! Who a request speaks for. A certificate's identity is its common name:
//! `admin`, `node:<name>` or `master:<id>`. A service account
//! (`system:serviceaccount:<namespace>:<name>`) is never read from a
//! certificate: only the master's REST API makes one, from a service
//! account token it verified, with what that token says beyond the
//! account ([`TokenCredential`]: its id and, for a token bound to a pod,
//! the pod and its node), which Kubernetes hands on as the user's extras.
//! Nor is a [`Identity::User`]: the REST API makes one when a caller it
//! authenticated asks to act as another user (Kubernetes' impersonation,
//! `kubectl --as`) and may. What else skiff reads from a certificate
//! (serial, expiry, the names and addresses it is valid for) is
//! [`CertInfo`].

use std::collections::BTreeMap;
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
        /// What the token said beyond the account.
        credential: TokenCredential,
    },
    /// Any Kubernetes user, as another identity acts as it
    /// (impersonation): its name, uid (`""`: none), groups (complete:
    /// `system:authenticated` among them when it is in it) and extras, as
    /// kube-apiserver's `user.Info`; never from a certificate or a token.
    User {
        name: String,
        uid: String,
        groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
        /// Who acts as it, as it authenticated.
        impersonator: Box<Identity>,
    },
}

/// The user extra naming the pod a service account's token is bound to
/// (kube-apiserver's `serviceaccount.PodNameKey`).
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The user extra holding that pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// The user extra naming the node that pod is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The user extra holding that node's uid.
pub const NODE_UID_EXTRA: &str = "authentication.kubernetes.io/node-uid";
/// The user extra identifying the credential a user authenticated with
/// (`user.CredentialIDKey`); for a token, `JTI=<jti>`.
pub const CREDENTIAL_ID_EXTRA: &str = "authentication.kubernetes.io/credential-id";

/// What the token a service account authenticated with says beyond the
/// account (kube-apiserver's `ServiceAccountInfo`; never the token
/// itself): its `jti` and, for a token bound to a pod, the pod and the
/// node it is bound to. An empty string is what the token does not carry.
/// It is shown as the user's extras ([`TokenCredential::extra`]), as
/// `kubectl auth whoami` shows them; authorization never reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TokenCredential {
    /// The token's `jti` claim.
    pub token_id: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
    pub node_uid: String,
}

impl TokenCredential {
    /// The user's extras, by kube-apiserver's rules: the pod's name and
    /// uid only together, the node's name alone or with its uid (never
    /// the uid alone), the credential id when the token has a `jti`.
    /// Empty for a token that carries none of them.
    pub fn extra(&self) -> BTreeMap<&'static str, Vec<String>> {
        let mut extra = BTreeMap::new();
        if !self.pod_name.is_empty() && !self.pod_uid.is_empty() {
            extra.insert(POD_NAME_EXTRA, vec![self.pod_name.clone()]);
            extra.insert(POD_UID_EXTRA, vec![self.pod_uid.clone()]);
        }
        if !self.token_id.is_empty() {
            extra.insert(CREDENTIAL_ID_EXTRA, vec![format!("JTI={}", self.token_id)]);
        }
        if !self.node_name.is_empty() {
            extra.insert(NODE_NAME_EXTRA, vec![self.node_name.clone()]);
            if !self.node_uid.is_empty() {
                extra.insert(NODE_UID_EXTRA, vec![self.node_uid.clone()]);
            }
        }
        extra
    }
}

impl Identity {
    /// The certificate common name for this identity; for a service
    /// account or a user, which have no certificate, its Kubernetes user
    /// name (which [`Identity::from_common_name`] never reads back).
    pub fn common_name(&self) -> String {
        match self {
            Identity::Admin => "admin".to_owned(),
            Identity::Node(n) => format!("node:{n}"),
            Identity::Master(id) => format!("master:{id}"),
            Identity::ServiceAccount {
                namespace, name, ..
            } => service_account_user(namespace, name),
            Identity::User { name, .. } => name.clone(),
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
    /// may do everything; a user acted as never is (what its groups grant
    /// is for authorization to say).
    pub fn is_privileged(&self) -> bool {
        matches!(self, Identity::Admin | Identity::Master(_))
    }
}

/// The Kubernetes user name of service account `name` in `namespace`:
/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Its common name; a user acted as says who acts as it too (`jane
/// (impersonated by admin)`), so that every log line naming the caller
/// names both.
impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::User {
                name, impersonator, ..
            } => write!(f, "{name} (impersonated by {impersonator})"),
            other => f.write_str(&other.common_name()),
        }
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
            credential: TokenCredential::default(),
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
            credential: TokenCredential {
                token_id: "j-1".into(),
                pod_name: "web-0".into(),
                pod_uid: "p-1".into(),
                ..Default::default()
            },
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
    fn a_tokens_pod_node_and_id_are_the_extras_kube_apiserver_gives() {
        let extra = |credential: TokenCredential| -> Vec<(String, Vec<String>)> {
            credential
                .extra()
                .into_iter()
                .map(|(key, values)| (key.to_owned(), values))
                .collect()
        };
        let pair = |key: &str, value: &str| (key.to_owned(), vec![value.to_owned()]);
        // A pod-bound token on a node, with a jti: all five.
        let bound = TokenCredential {
            token_id: "2f1b7d4a".into(),
            pod_name: "web-0".into(),
            pod_uid: "p-1".into(),
            node_name: "pi-1".into(),
            node_uid: "n-1".into(),
        };
        assert_eq!(
            extra(bound.clone()),
            [
                pair("authentication.kubernetes.io/credential-id", "JTI=2f1b7d4a"),
                pair("authentication.kubernetes.io/node-name", "pi-1"),
                pair("authentication.kubernetes.io/node-uid", "n-1"),
                pair("authentication.kubernetes.io/pod-name", "web-0"),
                pair("authentication.kubernetes.io/pod-uid", "p-1"),
            ]
        );
        // A node whose uid is unknown: its name alone; a uid alone: nothing.
        let unknown_node_uid = TokenCredential {
            node_uid: String::new(),
            ..bound.clone()
        };
        let given = unknown_node_uid.extra();
        assert_eq!(given[NODE_NAME_EXTRA], ["pi-1"]);
        assert!(!given.contains_key(NODE_UID_EXTRA), "{given:?}");
        assert_eq!(given.len(), 4);
        let uid_only = TokenCredential {
            node_uid: "n-1".into(),
            ..Default::default()
        };
        assert!(extra(uid_only).is_empty());
        // A pod's name without its uid is not given.
        let half_pod = TokenCredential {
            pod_name: "web-0".into(),
            ..Default::default()
        };
        assert!(extra(half_pod).is_empty());
        // An unbound token: its id only; a token without a jti: nothing.
        let unbound = TokenCredential {
            token_id: "j-1".into(),
            ..Default::default()
        };
        assert_eq!(
            extra(unbound),
            [pair(
                "authentication.kubernetes.io/credential-id",
                "JTI=j-1"
            )]
        );
        assert!(extra(TokenCredential::default()).is_empty());
    }

    #[test]
    fn only_admins_and_masters_are_privileged() {
        assert!(Identity::Admin.is_privileged());
        assert!(Identity::Master("1".into()).is_privileged());
        assert!(!Identity::Node("a".into()).is_privileged());
        let acted_as = Identity::User {
            name: "root".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
            extra: BTreeMap::new(),
            impersonator: Box::new(Identity::Admin),
        };
        assert!(!acted_as.is_privileged());
    }

    #[test]
    fn a_user_acted_as_is_named_by_its_name_and_shown_with_who_acts_as_it() {
        let jane = Identity::User {
            name: "jane".into(),
            uid: "u-7".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
            impersonator: Box::new(Identity::Admin),
        };
        assert_eq!(jane.common_name(), "jane");
        assert_eq!(jane.to_string(), "jane (impersonated by admin)");
        // Whatever its name, no certificate speaks for it.
        assert_eq!(Identity::from_common_name(&jane.common_name()), None);
        let as_admin = Identity::User {
            name: "admin".into(),
            uid: "u-7".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
            impersonator: Box::new(Identity::Admin),
        };
        assert_eq!(Identity::from_common_name("admin"), Some(Identity::Admin));
        assert_ne!(Identity::from_common_name("admin"), Some(as_admin));
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
