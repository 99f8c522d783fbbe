//! Join tokens made with `skiff token create`: Secrets of type
//! `bootstrap.kubernetes.io/token` named `bootstrap-token-<id>` in
//! `kube-system`, as Kubernetes keeps its bootstrap tokens. The master keeps
//! only a hash of the secret. The cluster's own server token (in every
//! master's `<data-dir>/token`) is not stored: masters know it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use skiff_objects::secrets::{self, Secret};
use skiff_proto::api::Object;
use skiff_proto::v1;
use skiff_security::token::secret_matches;
use skiff_security::{JoinToken, TokenUsage};

use crate::store::state_machine::ObjectStore;
use skiff_objects::Kind;

/// Where token Secrets live.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// The Secret type of a join token.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// The Secret name for token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// A stored token, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub usage: TokenUsage,
    pub expires: Option<SystemTime>,
    pub description: String,
    secret_hash: String,
}

/// Why a join was refused. The messages never say whether an id exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("join token refused: unknown token or wrong secret")]
    Unknown,
    #[error("join token {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("join token {id} is an agent token; a master joins only with a server token")]
    WrongUsage { id: String },
}

/// The text value of `key`, if it is UTF-8.
fn text(secret: &Secret, key: &str) -> Option<String> {
    String::from_utf8(secrets::value(secret, key)?.to_vec()).ok()
}

/// The Secret that stores `token` (a document, as the store keeps it).
pub fn token_secret(
    token: &JoinToken,
    usage: TokenUsage,
    expires: Option<SystemTime>,
    description: &str,
) -> Object {
    let mut data = BTreeMap::new();
    data.insert("token-id".to_owned(), token.id.clone().into_bytes());
    data.insert(
        "token-secret-sha256".to_owned(),
        token.secret_hash().into_bytes(),
    );
    data.insert("usage".to_owned(), usage.name().as_bytes().to_vec());
    if let Some(at) = expires {
        data.insert(
            "expiration".to_owned(),
            skiff_objects::rfc3339(at).into_bytes(),
        );
    }
    if !description.is_empty() {
        data.insert("description".to_owned(), description.as_bytes().to_vec());
    }
    let metadata = v1::ObjectMeta {
        name: secret_name(&token.id),
        namespace: TOKEN_NAMESPACE.to_owned(),
        ..Default::default()
    };
    secrets::object(metadata, TOKEN_SECRET_TYPE, data)
}

/// Reads a token Secret (in either encoding); `None` when `object` is not
/// one.
pub fn record(object: &Object) -> Option<TokenRecord> {
    let secret = secrets::read(object)?;
    if secrets::type_of(&secret) != TOKEN_SECRET_TYPE {
        return None;
    }
    let expires = match text(&secret, "expiration") {
        Some(text) => Some(humantime::parse_rfc3339(&text).ok()?),
        None => None,
    };
    Some(TokenRecord {
        id: text(&secret, "token-id")?,
        usage: TokenUsage::parse(&text(&secret, "usage")?)?,
        expires,
        description: text(&secret, "description").unwrap_or_default(),
        secret_hash: text(&secret, "token-secret-sha256")?,
    })
}

/// Checks a presented id and secret against the server token and the
/// stored tokens, for a joiner that needs `wanted`.
pub fn check(
    store: &ObjectStore,
    server_token: &JoinToken,
    id: &str,
    secret: &str,
    wanted: TokenUsage,
    now: SystemTime,
) -> Result<(), TokenRefusal> {
    if id == server_token.id {
        return if secret_matches(&server_token.secret_hash(), secret) {
            Ok(())
        } else {
            Err(TokenRefusal::Unknown)
        };
    }
    let stored = store
        .get(Kind::Secret, TOKEN_NAMESPACE, &secret_name(id))
        .ok()
        .flatten();
    let Some(record) = stored.as_ref().and_then(record) else {
        return Err(TokenRefusal::Unknown);
    };
    if record.id != id || !secret_matches(&record.secret_hash, secret) {
        return Err(TokenRefusal::Unknown);
    }
    if let Some(at) = record.expires {
        if at <= now {
            return Err(TokenRefusal::Expired {
                id: id.to_owned(),
                at: skiff_objects::rfc3339(at),
            });
        }
    }
    if !record.usage.allows(wanted) {
        return Err(TokenRefusal::WrongUsage { id: id.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::Duration;

    #[test]
    fn a_token_secret_reads_back_without_its_secret() {
        let token = JoinToken::generate(&"a".repeat(64));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let secret = token_secret(&token, TokenUsage::Agent, Some(at), "for pi-4");
        let r = record(&secret).unwrap();
        assert_eq!(r.id, token.id);
        assert_eq!(r.usage, TokenUsage::Agent);
        assert_eq!(r.expires, Some(at));
        assert_eq!(r.description, "for pi-4");
        // Nothing of the secret itself is kept, in the clear or base64.
        let encoded = base64::engine::general_purpose::STANDARD.encode(&token.secret);
        let Some(skiff_proto::api::object::Kind::Generic(document)) = &secret.kind else {
            panic!("not a document: {secret:?}");
        };
        let stored = String::from_utf8(document.content.clone()).unwrap();
        assert!(stored.contains(&base64::engine::general_purpose::STANDARD.encode(&token.id)));
        assert!(!stored.contains(&token.secret), "{stored}");
        assert!(!stored.contains(&encoded), "{stored}");
        // As an older release wrote it: the same record.
        let legacy = skiff_objects::legacy_bodies::to_legacy(secret).unwrap();
        assert_eq!(record(&legacy), Some(r));
    }
}
