//! Join tokens in the k3s manner: `K10<ca-hash>::<id>.<secret>`.
//!
//! The CA hash lets a joining machine check the master's CA before it
//! sends anything; the id names the token on the master, which keeps only
//! a hash of the secret.

use sha2::{Digest, Sha256};

use crate::{Result, SecurityError};

const PREFIX: &str = "K10";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUsage {
    /// Joining agents (nodes).
    Agent,
    /// Joining masters (they receive the CA key) and agents.
    Server,
}

impl TokenUsage {
    pub fn name(self) -> &'static str {
        match self {
            TokenUsage::Agent => "agent",
            TokenUsage::Server => "server",
        }
    }

    pub fn parse(s: &str) -> Option<TokenUsage> {
        match s {
            "agent" => Some(TokenUsage::Agent),
            "server" => Some(TokenUsage::Server),
            _ => None,
        }
    }

    /// Whether a token of this usage lets `wanted` join.
    pub fn allows(self, wanted: TokenUsage) -> bool {
        self == TokenUsage::Server || wanted == TokenUsage::Agent
    }
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate, hex.
    pub ca_hash: String,
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn random_string(len: usize) -> String {
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl JoinToken {
    /// A new random token for the CA with hash `ca_hash`.
    pub fn generate(ca_hash: &str) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: random_string(ID_LEN),
            secret: random_string(SECRET_LEN),
        }
    }

    /// Parses `K10<hash>::<id>.<secret>`, saying what is wrong otherwise.
    pub fn parse(text: &str) -> Result<JoinToken> {
        let bad = |why: &str| SecurityError::Token(why.to_owned());
        let text = text.trim();
        let Some((head, credential)) = text.split_once("::") else {
            return Err(bad(
                "not of the form K10<ca-hash>::<id>.<secret>; use a whole token from `skiff token create` or the master's <data-dir>/token",
            ));
        };
        let ca_hash = head
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("does not start with K10"))?;
        if ca_hash.len() != 64 || !ca_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash after K10 must be 64 hex digits"));
        }
        let (id, secret) = credential
            .split_once('.')
            .ok_or_else(|| bad("the part after :: must be <id>.<secret>"))?;
        let valid =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
        if !valid(id, ID_LEN) {
            return Err(bad("the token id must be 6 characters a-z, 0-9"));
        }
        if !valid(secret, SECRET_LEN) {
            return Err(bad("the token secret must be 16 characters a-z, 0-9"));
        }
        Ok(JoinToken {
            ca_hash: ca_hash.to_ascii_lowercase(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The hash of the secret, as the master stores it.
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

/// SHA-256 (hex) of a token secret.
pub fn secret_hash(secret: &str) -> String {
    crate::ca::hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(stored_hash: &str, presented_secret: &str) -> bool {
    let presented = secret_hash(presented_secret);
    if presented.len() != stored_hash.len() {
        return false;
    }
    presented
        .bytes()
        .zip(stored_hash.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let t = JoinToken::generate(HASH);
        let parsed = JoinToken::parse(&format!(" {t}\n")).unwrap();
        assert_eq!(parsed, t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert!(secret_matches(&t.secret_hash(), &t.secret));
        assert!(!secret_matches(&t.secret_hash(), "0000000000000000"));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (text, why) in [
            ("abcdef.0123456789abcdef", "K10<ca-hash>"),
            ("X10abc::abcdef.0123456789abcdef", "K10"),
            ("K10abc::abcdef.0123456789abcdef", "64 hex"),
            (
                &format!("K10{HASH}::abcdef0123456789abcdef"),
                "<id>.<secret>",
            ),
            (&format!("K10{HASH}::ABCDEF.0123456789abcdef"), "token id"),
            (&format!("K10{HASH}::abcdef.short"), "token secret"),
        ] {
            let err = JoinToken::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn server_tokens_also_join_agents() {
        assert!(TokenUsage::Server.allows(TokenUsage::Agent));
        assert!(TokenUsage::Server.allows(TokenUsage::Server));
        assert!(TokenUsage::Agent.allows(TokenUsage::Agent));
        assert!(!TokenUsage::Agent.allows(TokenUsage::Server));
    }
}
