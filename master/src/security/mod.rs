//! The master's side of cluster security: its PKI on disk (CA, its own
//! certificate, the server token, admin.conf), join tokens stored as
//! Secrets, the join exchange it serves, and certificate renewal. The client
//! side of joining is `skiff_security::join_client`.
//!
//! Authorization of API calls lives next to the API, in `api::authz`.

pub mod join_service;
pub mod pki;
pub mod rotation;
pub mod tokens;

pub use pki::{MasterPki, PkiConfig, PkiError};
