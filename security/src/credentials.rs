//! The credential file a client uses (`admin.conf`): where the API is, the
//! CA to trust, and a client certificate and key, base64 PEM in the manner
//! of a kubeconfig. Whoever can read it is a cluster admin, so it is 0600.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::channel::ClientTransport;
use crate::tls::CertStore;
use crate::{Result, SecurityError};

/// A client's credentials.
#[derive(Clone)]
pub struct Credentials {
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CredentialFile {
    server: String,
    certificate_authority_data: String,
    client_certificate_data: String,
    client_key_data: String,
}

const HEADER: &str = "# skiff credentials. Whoever can read this file is a cluster admin.\n";

impl Credentials {
    /// Reads a credential file, naming the file and field on any problem.
    pub fn load(path: &Path) -> Result<Credentials> {
        let fail = |message: String| SecurityError::Credentials {
            path: path.to_owned(),
            message,
        };
        let text = crate::files::read_text(path)?;
        let file: CredentialFile = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let decode = |field: &str, value: &str| -> Result<String> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|e| fail(format!("{field}: not base64: {e}")))?;
            String::from_utf8(bytes).map_err(|_| fail(format!("{field}: not PEM text")))
        };
        let credentials = Credentials {
            server: file.server,
            ca_pem: decode(
                "certificate-authority-data",
                &file.certificate_authority_data,
            )?,
            cert_pem: decode("client-certificate-data", &file.client_certificate_data)?,
            key_pem: decode("client-key-data", &file.client_key_data)?,
        };
        if credentials.server.trim().is_empty() {
            return Err(fail("server: empty".to_owned()));
        }
        // Checks that the PEM parts parse and belong together.
        credentials.transport().map_err(|e| fail(e.to_string()))?;
        Ok(credentials)
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let file = CredentialFile {
            server: self.server.clone(),
            certificate_authority_data: encode(&self.ca_pem),
            client_certificate_data: encode(&self.cert_pem),
            client_key_data: encode(&self.key_pem),
        };
        let yaml = serde_yaml::to_string(&file).map_err(|e| SecurityError::Credentials {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        crate::files::write_private(path, format!("{HEADER}{yaml}").as_bytes())
    }

    /// The transport these credentials give: trust the CA, show the cert.
    pub fn transport(&self) -> Result<ClientTransport> {
        let store = CertStore::new(&self.cert_pem, &self.key_pem)?;
        ClientTransport::to_masters(&self.ca_pem, Some(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterCa, Identity};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credential_files_round_trip_at_0600_and_name_bad_fields() {
        crate::install_crypto_provider();
        let ca = ClusterCa::generate().unwrap();
        let admin = ca.issue(&Identity::Admin, &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let c = Credentials {
            server: "127.0.0.1:6443".into(),
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: admin.cert_pem,
            key_pem: admin.key_pem,
        };
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Credentials::load(&path).unwrap();
        assert_eq!(back.server, c.server);
        assert_eq!(back.cert_pem, c.cert_pem);

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("client-key-data: ", "client-key-data: !!"),
        )
        .unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(err.contains("admin.conf"), "{err}");
        std::fs::write(&path, "server: x\nsurprise: 1\n").unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
    }
}
