//! The cluster's service account signing key: one ECDSA P-256 key with
//! which every master signs the service account tokens it issues (ES256
//! JWTs, [`super::service_account_tokens`]) and checks those it is shown.
//!
//! Every master must hold the same key, and a cluster made by an earlier
//! build must get one too, made once rather than by each of its masters.
//! So the key lives in the replicated store, as the Secret
//! `kube-system/skiff-service-account-key` that the leader makes when there
//! is none (`controllers::service_account_key`; a create, so two leaders in
//! a row cannot both make one). The Secret holds the key sealed
//! (AES-256-GCM) under a key derived (HKDF-SHA256) from the cluster CA's
//! private key ([`SealingKey`]), which every master has on disk (the first
//! made it, masters that join receive it through the join exchange) and
//! nothing else has: whoever may read Secrets through the API reads
//! ciphertext, and cannot sign tokens with it.
//!
//! A key is named (`kid`) as kube-apiserver names its keys: the SHA-256 of
//! the DER SubjectPublicKeyInfo of its public key, base64url without
//! padding. Its public half is what `/openid/v1/jwks` publishes
//! ([`PublicKey::jwk`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use skiff_proto::api::Object;
use skiff_proto::v1;

use crate::store::state_machine::ObjectStore;
use skiff_objects::secrets::{self, Secret};
use skiff_objects::{Kind, ObjectExt};

/// Where the key's Secret lives.
pub const KEY_NAMESPACE: &str = "kube-system";
/// The key's Secret.
pub const KEY_SECRET: &str = "skiff-service-account-key";
/// The key's Secret's type.
pub const KEY_SECRET_TYPE: &str = "skiff.io/service-account-key";
/// The Secret's entry holding the sealed key (nonce, ciphertext, tag).
const SEALED_KEY: &str = "sealed-key";
/// The Secret's entry naming the key (its `kid`), for operators.
const KEY_ID: &str = "key-id";
/// What the Secret says about itself.
const DESCRIPTION_ANNOTATION: &str = "skiff.io/description";
const DESCRIPTION: &str = "The cluster's service account token signing key (ES256), sealed under \
a key derived from the cluster CA's key. Deleting this Secret makes the leader make a new key: \
every service account token issued before is then refused.";

/// HKDF's salt and info for the sealing key, and the sealed key's
/// associated data: a key derived for anything else opens nothing here.
const HKDF_SALT: &[u8] = b"skiff service account signing key";
const HKDF_INFO: &[u8] = b"AES-256-GCM sealing, v1";
const SEALING_AAD: &[u8] = b"kube-system/skiff-service-account-key, v1";
/// AES-GCM's tag.
const TAG_LEN: usize = 16;

/// The DER SubjectPublicKeyInfo of a P-256 public key up to its point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused
/// bits) }, the 65-byte uncompressed point following.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why the signing key cannot be had or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(
        "there is no service account signing key yet: the leader makes the Secret \
         {KEY_NAMESPACE}/{KEY_SECRET} as it starts leading; retry shortly"
    )]
    Missing,
    #[error(
        "the service account signing key in Secret {KEY_NAMESPACE}/{KEY_SECRET} cannot be \
         read: {reason}; delete that Secret to have the leader make a new key (every token \
         signed with the old one is then refused)"
    )]
    Unreadable { reason: String },
    #[error("the cluster CA key cannot be read to seal the service account signing key: {0}")]
    CaKey(String),
    #[error("the system's random source failed while {0}")]
    Random(&'static str),
    #[error("signing a service account token failed")]
    Sign,
}

fn unreadable(reason: impl Into<String>) -> SigningKeyError {
    SigningKeyError::Unreadable {
        reason: reason.into(),
    }
}

/// A public key the cluster signs with: its uncompressed P-256 point and
/// its `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    point: Vec<u8>,
    kid: String,
}

impl PublicKey {
    /// The key of a 65-byte uncompressed point (`04 || x || y`).
    pub fn from_point(point: &[u8]) -> PublicKey {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        PublicKey {
            point: point.to_vec(),
            kid: base64url(digest.as_ref()),
        }
    }

    /// Its key id, as kube-apiserver makes one.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether `signature` (ES256's fixed `r || s`, 64 bytes) of `message`
    /// was made with this key's private half.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .is_ok()
    }

    /// The key as a JSON Web Key (RFC 7517, 7518), as kube-apiserver's
    /// `/openid/v1/jwks` lists its keys.
    pub fn jwk(&self) -> Value {
        let x = self.point.get(1..33).unwrap_or_default();
        let y = self.point.get(33..65).unwrap_or_default();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": base64url(x),
            "y": base64url(y),
        })
    }
}

/// The private key tokens are signed with.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key, and its PKCS#8 document (what is sealed and stored).
    pub fn generate() -> Result<(SigningKey, Vec<u8>), SigningKeyError> {
        let random = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map_err(|_| SigningKeyError::Random("making a service account signing key"))?;
        let pkcs8 = document.as_ref().to_vec();
        Ok((SigningKey::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// The key of a PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, SigningKeyError> {
        let random = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &random)
            .map_err(|e| unreadable(format!("not a P-256 private key: {e}")))?;
        let public = PublicKey::from_point(pair.public_key().as_ref());
        Ok(SigningKey { pair, public })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// ES256: ECDSA P-256 over SHA-256, `r || s` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| SigningKeyError::Sign)?;
        Ok(signature.as_ref().to_vec())
    }
}

/// The key the signing key is sealed under in the store, derived from the
/// cluster CA's private key.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").finish_non_exhaustive()
    }
}

impl SealingKey {
    /// The sealing key of the cluster whose CA key (PEM) is `ca_key_pem`.
    pub fn from_ca_key(ca_key_pem: &str) -> Result<SealingKey, SigningKeyError> {
        let der = PrivateKeyDer::from_pem_slice(ca_key_pem.as_bytes())
            .map_err(|e| SigningKeyError::CaKey(e.to_string()))?;
        SealingKey::derive(der.secret_der())
    }

    fn derive(secret: &[u8]) -> Result<SealingKey, SigningKeyError> {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let info = [HKDF_INFO];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| SigningKeyError::CaKey("deriving the sealing key failed".into()))?;
        Ok(SealingKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        })
    }

    /// `plain` sealed: a random nonce, then the ciphertext and its tag.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(SEALING_AAD),
                &mut sealed,
            )
            .map_err(|_| SigningKeyError::Random("sealing the service account signing key"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// What [`SealingKey::seal`] sealed.
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SigningKeyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(unreadable("the sealed key is too short"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| unreadable("the sealed key has no nonce"))?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(SEALING_AAD), &mut body)
            .map_err(|_| {
                unreadable("it was sealed under another cluster CA's key, or it was changed")
            })?;
        Ok(plain.to_vec())
    }

    /// A new signing key, and the Secret that keeps it, sealed: what the
    /// leader creates when the store holds none.
    pub fn new_key_secret(&self) -> Result<(Object, SigningKey), SigningKeyError> {
        let (key, pkcs8) = SigningKey::generate()?;
        let sealed = self.seal(&pkcs8)?;
        let data = BTreeMap::from([
            (SEALED_KEY.to_owned(), sealed),
            (KEY_ID.to_owned(), key.kid().as_bytes().to_vec()),
        ]);
        let metadata = v1::ObjectMeta {
            name: KEY_SECRET.to_owned(),
            namespace: KEY_NAMESPACE.to_owned(),
            annotations: BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_owned(),
                DESCRIPTION.to_owned(),
            )]),
            ..Default::default()
        };
        Ok((secrets::object(metadata, KEY_SECRET_TYPE, data), key))
    }

    /// The signing key a stored Secret keeps.
    pub fn open_secret(&self, secret: &Secret) -> Result<SigningKey, SigningKeyError> {
        let found = secrets::type_of(secret);
        if found != KEY_SECRET_TYPE {
            return Err(unreadable(format!(
                "its type is {found:?}, not {KEY_SECRET_TYPE:?}"
            )));
        }
        let sealed = secrets::value(secret, SEALED_KEY)
            .ok_or_else(|| unreadable(format!("it has no {SEALED_KEY:?}")))?;
        SigningKey::from_pkcs8(&self.open(sealed)?)
    }

    /// [`SealingKey::open_secret`] of a stored object (a Secret in either
    /// encoding).
    pub fn open_object(&self, object: &Object) -> Result<SigningKey, SigningKeyError> {
        match secrets::read(object) {
            Some(secret) => self.open_secret(&secret),
            None => Err(unreadable("it is not a Secret")),
        }
    }
}

/// The signing key as the store holds it, opened once per version of its
/// Secret.
#[derive(Debug)]
pub struct ServiceAccountKeys {
    sealing: Arc<SealingKey>,
    opened: RwLock<Option<Opened>>,
}

/// The key of one version of the Secret.
#[derive(Debug)]
struct Opened {
    /// The Secret's uid and resourceVersion.
    version: (String, String),
    key: Arc<SigningKey>,
}

impl ServiceAccountKeys {
    pub fn new(sealing: Arc<SealingKey>) -> ServiceAccountKeys {
        ServiceAccountKeys {
            sealing,
            opened: RwLock::new(None),
        }
    }

    /// The signing key `store` holds now.
    pub fn current(&self, store: &ObjectStore) -> Result<Arc<SigningKey>, SigningKeyError> {
        let object = store
            .cache()
            .get(Kind::Secret, KEY_NAMESPACE, KEY_SECRET)
            .ok_or(SigningKeyError::Missing)?;
        let meta = object.meta();
        let version = (meta.uid.clone(), meta.resource_version.clone());
        {
            let opened = self.opened.read().unwrap_or_else(|p| p.into_inner());
            if let Some(opened) = opened.as_ref().filter(|o| o.version == version) {
                return Ok(opened.key.clone());
            }
        }
        let key = Arc::new(self.sealing.open_object(&object)?);
        let opened = Opened {
            version,
            key: key.clone(),
        };
        *self.opened.write().unwrap_or_else(|p| p.into_inner()) = Some(opened);
        Ok(key)
    }
}

/// Base64url without padding, as JOSE writes binary values.
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::store::Command;

    /// RFC 7515 A.3's P-256 key (its public half).
    const RFC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const RFC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn rfc_key() -> PublicKey {
        let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s);
        let mut point = vec![0x04];
        point.extend(decode(RFC_X).unwrap());
        point.extend(decode(RFC_Y).unwrap());
        PublicKey::from_point(&point)
    }

    fn ca_key_pem() -> String {
        skiff_security::install_crypto_provider();
        skiff_security::ClusterCa::generate()
            .unwrap()
            .key_pem()
            .to_owned()
    }

    #[test]
    fn the_key_id_is_the_sha256_of_the_subject_public_key_info_as_kube_apiserver_makes_it() {
        // The SubjectPublicKeyInfo's SHA-256, computed apart (Python's
        // `cryptography`: DER SubjectPublicKeyInfo, hashlib.sha256).
        assert_eq!(
            rfc_key().kid(),
            "K9G7DESol8MKeqCZHN442AYv5EHeUNoPRoJTRPYC6Cc"
        );
        let jwk = rfc_key().jwk();
        assert_eq!(
            jwk,
            json!({
                "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256",
                "kid": "K9G7DESol8MKeqCZHN442AYv5EHeUNoPRoJTRPYC6Cc",
                "x": RFC_X, "y": RFC_Y,
            })
        );
    }

    #[test]
    fn an_es256_signature_of_rfc_7515_verifies_and_a_changed_one_does_not() {
        let signed = "eyJhbGciOiJFUzI1NiJ9.\
            eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(
                "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
            )
            .unwrap();
        let key = rfc_key();
        assert!(key.verify(signed.as_bytes(), &signature));
        let mut changed = signature.clone();
        changed[10] ^= 1;
        assert!(!key.verify(signed.as_bytes(), &changed));
        assert!(!key.verify(b"another message", &signature));
    }

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let signature = key.sign(b"header.payload").unwrap();
        assert_eq!(signature.len(), 64, "ES256's fixed r || s");
        assert!(key.public_key().verify(b"header.payload", &signature));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!other.public_key().verify(b"header.payload", &signature));
        assert_ne!(key.kid(), other.kid());
        // The PKCS#8 document is the same key again.
        assert_eq!(SigningKey::from_pkcs8(&pkcs8).unwrap().kid(), key.kid());
    }

    #[test]
    fn a_sealed_key_opens_only_under_the_same_cluster_ca_key() {
        let ca_key = ca_key_pem();
        let sealing = SealingKey::from_ca_key(&ca_key).unwrap();
        let (object, key) = sealing.new_key_secret().unwrap();
        let secret = secrets::read(&object).expect("a Secret");
        assert_eq!(secrets::type_of(&secret), KEY_SECRET_TYPE);
        let meta = object.meta();
        assert_eq!(
            (meta.namespace.as_str(), meta.name.as_str()),
            (KEY_NAMESPACE, KEY_SECRET)
        );
        // Nothing of the key in the clear: the sealed entry is not its
        // PKCS#8 document.
        let sealed = secrets::value(&secret, SEALED_KEY).unwrap().to_vec();
        assert!(SigningKey::from_pkcs8(&sealed).is_err());

        // The same CA key (another master's copy) opens it.
        let again = SealingKey::from_ca_key(&ca_key).unwrap();
        assert_eq!(again.open_secret(&secret).unwrap().kid(), key.kid());
        // Another cluster's does not.
        let foreign = SealingKey::from_ca_key(&ca_key_pem()).unwrap();
        let refused = foreign.open_secret(&secret).unwrap_err();
        assert!(
            refused.to_string().contains("another cluster CA"),
            "{refused}"
        );
        // Nor does a changed Secret.
        let mut changed = secret.clone();
        let mut bytes = sealed.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let data = changed.data.get_or_insert_with(Default::default);
        data.insert(SEALED_KEY.into(), secrets::ByteString(bytes));
        assert!(again.open_secret(&changed).is_err());
        let mut opaque = secret.clone();
        opaque.type_ = Some("Opaque".into());
        let refused = again.open_secret(&opaque).unwrap_err();
        assert!(refused.to_string().contains("\"Opaque\""), "{refused}");
    }

    #[test]
    fn every_master_reads_the_one_stored_key_and_a_new_secret_is_a_new_key() {
        let ca_key = ca_key_pem();
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let system = skiff_objects::namespaces::named(KEY_NAMESPACE, "");
        let namespace = Command::Create {
            object: system.encode_to_vec(),
            uid: "ns-1".to_owned(),
            now: "2026-01-01T00:00:00Z".to_owned(),
        };
        for result in store.apply_commands(vec![namespace]) {
            result.expect("created");
        }
        // Two masters of one cluster: the same CA key, each its own cache.
        let first = ServiceAccountKeys::new(Arc::new(SealingKey::from_ca_key(&ca_key).unwrap()));
        let second = ServiceAccountKeys::new(Arc::new(SealingKey::from_ca_key(&ca_key).unwrap()));
        assert!(matches!(
            first.current(&store).unwrap_err(),
            SigningKeyError::Missing
        ));

        let (secret, made) = SealingKey::from_ca_key(&ca_key)
            .unwrap()
            .new_key_secret()
            .unwrap();
        let create = |secret: Object, uid: &str| Command::Create {
            object: secret.encode_to_vec(),
            uid: uid.to_owned(),
            now: "2026-01-01T00:00:00Z".to_owned(),
        };
        for result in store.apply_commands(vec![create(secret, "key-1")]) {
            result.expect("created");
        }
        assert_eq!(first.current(&store).unwrap().kid(), made.kid());
        assert_eq!(second.current(&store).unwrap().kid(), made.kid());

        // The Secret deleted and made again: a new key, read at once.
        let delete = Command::DeleteWithOptions {
            kind: Kind::Secret,
            namespace: KEY_NAMESPACE.to_owned(),
            name: KEY_SECRET.to_owned(),
            options: Default::default(),
            now: "2026-01-01T00:00:01Z".to_owned(),
        };
        for result in store.apply_commands(vec![delete]) {
            result.expect("deleted");
        }
        let (secret, remade) = SealingKey::from_ca_key(&ca_key)
            .unwrap()
            .new_key_secret()
            .unwrap();
        for result in store.apply_commands(vec![create(secret, "key-2")]) {
            result.expect("created");
        }
        assert_eq!(first.current(&store).unwrap().kid(), remade.kid());
        assert_ne!(remade.kid(), made.kid());
    }
}
