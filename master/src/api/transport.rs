//! How masters, agents and clients reach each other: always gRPC over
//! mutual TLS ([`ClientTransport`] from the security crate), plus parsing
//! of listen addresses.

use std::net::SocketAddr;

pub use skiff_security::ClientTransport;

/// Resolves `host:port` to a socket address, naming the flag on failure.
pub fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {value:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {value:?}: no address"))
}
