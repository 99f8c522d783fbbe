//! Joining, client side: fetch the master's CA over an unverified TLS
//! connection, refuse it unless its hash is the one in the token, then,
//! trusting only that CA, trade the token for a node certificate or (for a
//! master) the CA. Nothing secret is sent before the CA is checked.

use crate::{ca, tls, ClientTransport, JoinToken, SecurityError};
use skiff_proto::join::join_client::JoinClient;
use skiff_proto::join::{
    CaCertificateRequest, JoinMasterRequest, JoinMasterResponse, JoinNodeRequest,
};
use tonic::Code;

/// Largest join message either side accepts.
pub const MAX_JOIN_MESSAGE: usize = 64 * 1024;

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the master at {addr} presented a CA whose hash is {got}, but the join token pins {expected}: refusing it (wrong token, or someone in the middle)")]
    CaMismatch {
        addr: String,
        expected: String,
        got: String,
    },
    #[error("the master at {addr} refused to join us: {message}")]
    Refused { addr: String, message: String },
    #[error("the master at {addr} is unreachable: {message}")]
    Unavailable { addr: String, message: String },
    #[error(transparent)]
    Security(#[from] SecurityError),
}

impl JoinError {
    /// Whether trying again later may work.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JoinError::Unavailable { .. })
    }

    fn from_status(addr: &str, status: tonic::Status) -> JoinError {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted => JoinError::Unavailable {
                addr: addr.to_owned(),
                message,
            },
            _ => JoinError::Refused {
                addr: addr.to_owned(),
                message,
            },
        }
    }
}

fn client(
    addr: &str,
    transport: &ClientTransport,
) -> Result<JoinClient<tonic::transport::Channel>, JoinError> {
    let channel = transport
        .channel(addr)
        .map_err(|e| JoinError::Unavailable {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    Ok(JoinClient::new(channel)
        .max_decoding_message_size(MAX_JOIN_MESSAGE)
        .max_encoding_message_size(MAX_JOIN_MESSAGE))
}

/// The master's CA (PEM), checked against the token's hash.
pub async fn fetch_ca(addr: &str, token: &JoinToken) -> Result<String, JoinError> {
    let probe = ClientTransport::new(tls::unverified_client_config()?, crate::MASTER_SERVER_NAME)?;
    let ca_pem = client(addr, &probe)?
        .ca_certificate(CaCertificateRequest {})
        .await
        .map_err(|s| JoinError::from_status(addr, s))?
        .into_inner()
        .ca_pem;
    let got = ca::ca_hash(&ca_pem)?;
    if got != token.ca_hash {
        return Err(JoinError::CaMismatch {
            addr: addr.to_owned(),
            expected: token.ca_hash.clone(),
            got,
        });
    }
    Ok(ca_pem)
}

/// A node's credentials after joining.
pub struct NodeCredentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Joins node `node_name`: a key made here, a certificate from the master.
pub async fn join_node(
    addr: &str,
    token: &JoinToken,
    node_name: &str,
    node_password: &str,
) -> Result<NodeCredentials, JoinError> {
    let ca_pem = fetch_ca(addr, token).await?;
    let verified = ClientTransport::to_masters(&ca_pem, None)?;
    let (key_pem, request) = ca::signing_request()?;
    let cert_pem = client(addr, &verified)?
        .join_node(JoinNodeRequest {
            token_id: token.id.clone(),
            token_secret: token.secret.clone(),
            node_name: node_name.to_owned(),
            signing_request: request,
            node_password: node_password.to_owned(),
        })
        .await
        .map_err(|s| JoinError::from_status(addr, s))?
        .into_inner()
        .cert_pem;
    Ok(NodeCredentials {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// Joins a master: the CA and the server token, for a server token.
pub async fn join_master(addr: &str, token: &JoinToken) -> Result<JoinMasterResponse, JoinError> {
    let ca_pem = fetch_ca(addr, token).await?;
    let verified = ClientTransport::to_masters(&ca_pem, None)?;
    let response = client(addr, &verified)?
        .join_master(JoinMasterRequest {
            token_id: token.id.clone(),
            token_secret: token.secret.clone(),
        })
        .await
        .map_err(|s| JoinError::from_status(addr, s))?
        .into_inner();
    if ca::ca_hash(&response.ca_pem)? != token.ca_hash {
        return Err(JoinError::CaMismatch {
            addr: addr.to_owned(),
            expected: token.ca_hash.clone(),
            got: ca::ca_hash(&response.ca_pem)?,
        });
    }
    Ok(response)
}
