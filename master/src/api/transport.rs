//! How masters, agents and clients reach each other: always gRPC over
//! mutual TLS ([`ClientTransport`] from the security crate), plus parsing
//! of listen addresses.

use std::net::SocketAddr;

pub use skiff_security::ClientTransport;

/// A listen or advertise address that does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ListenAddressError {
    #[error("{flag} {value:?}: {source}; give host:port, for example 0.0.0.0:6443")]
    Resolve {
        flag: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {value:?}: no address; give host:port with a host that resolves")]
    NoAddress { flag: String, value: String },
}

/// Resolves `host:port` to a socket address, naming the flag on failure.
pub fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, ListenAddressError> {
    use std::net::ToSocketAddrs;
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|source| ListenAddressError::Resolve {
            flag: flag.to_owned(),
            value: value.to_owned(),
            source,
        })?;
    match addrs.next() {
        Some(addr) => Ok(addr),
        None => Err(ListenAddressError::NoAddress {
            flag: flag.to_owned(),
            value: value.to_owned(),
        }),
    }
}
