//! How the API and peer servers are exposed. Plain TCP today; the security
//! work adds mutual TLS here without reshaping the API.

use std::net::SocketAddr;

/// Transport for a gRPC listener or client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TransportConfig {
    /// Unencrypted HTTP/2 (loopback and trusted networks only).
    #[default]
    Plaintext,
}

impl TransportConfig {
    /// The URI a client uses to reach `addr` with this transport.
    pub fn uri(&self, addr: &str) -> String {
        match self {
            TransportConfig::Plaintext => format!("http://{addr}"),
        }
    }
}

/// Resolves `host:port` to a socket address, naming the flag on failure.
pub fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {value:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {value:?}: no address"))
}
