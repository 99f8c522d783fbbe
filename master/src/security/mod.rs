//! The master's side of cluster security: its PKI on disk (CA, its own
//! certificate, the server token, admin.conf), join tokens stored as
//! Secrets, the join exchange it serves, certificate renewal, and service
//! account tokens: the cluster's signing key, kept in the store sealed
//! under a key derived from the CA's ([`service_account_key`]), and the
//! tokens signed with it ([`service_account_tokens`]). The client side of
//! joining is `skiff_security::join_client`.
//!
//! Authorization of API calls lives next to the API, in `api::authz`.

pub mod join_service;
pub mod pki;
pub mod rotation;
pub mod service_account_key;
pub mod service_account_tokens;
pub mod tokens;

pub use pki::{MasterPki, PkiConfig, PkiError};
