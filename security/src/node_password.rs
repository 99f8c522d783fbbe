//! Node passwords, as k3s has them: a node name belongs to the machine that
//! first joined with it. Each agent makes a random password on its first
//! join and keeps it (`<data-dir>/node-password`, 0600); its Node carries
//! only the password's SHA-256 (annotation [`ANNOTATION`]). A later join
//! under the same name must present the same password, so a holder of an
//! agent token cannot take over a running node's name and identity.
//! Deleting the Node frees the name.

use crate::files;
use crate::token::{secret_hash, secret_matches};
use crate::SecurityError;
use std::path::Path;

/// The Node annotation holding the SHA-256 (hex) of its node password.
pub const ANNOTATION: &str = "skiff.io/node-password-hash";

/// Shortest password a master accepts (hex characters).
pub const MIN_LENGTH: usize = 32;

/// A new random password: 128 bits, hex.
pub fn generate() -> String {
    let bytes: [u8; 16] = rand::random();
    crate::ca::hex(&bytes)
}

/// What the Node's annotation holds for `password`.
pub fn hash(password: &str) -> String {
    secret_hash(password)
}

/// Whether `password` is the one whose hash is `stored_hash` (constant time).
pub fn matches(stored_hash: &str, password: &str) -> bool {
    secret_matches(stored_hash, password)
}

/// The password in `path`, made and written (0600) first if there is none.
pub fn load_or_create(path: &Path) -> Result<String, SecurityError> {
    match files::read_text(path) {
        Ok(text) if text.trim().len() >= MIN_LENGTH => return Ok(text.trim().to_owned()),
        Ok(_) => {
            return Err(SecurityError::Credentials {
                path: path.to_owned(),
                message: format!("not a node password (shorter than {MIN_LENGTH} characters); remove it to make a new one, and delete this machine's Node if it joined before"),
            })
        }
        Err(_) if !path.exists() => {}
        Err(e) => return Err(e),
    }
    let password = generate();
    files::write_private(path, password.as_bytes())?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_only() {
        let p = generate();
        assert_eq!(p.len(), MIN_LENGTH);
        assert!(matches(&hash(&p), &p));
        assert!(!matches(&hash(&p), &generate()));
        assert_ne!(generate(), generate());
    }

    #[test]
    fn the_password_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-password");
        let first = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "short").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("node-password") && e.contains("not a node password"),
            "{e}"
        );
    }
}
