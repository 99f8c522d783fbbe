//! Service account tokens as kube-apiserver issues and accepts them: JWTs
//! (RFC 7519) signed ES256 with the cluster's signing key
//! ([`super::service_account_key`]), whose claims are those of kubernetes'
//! `pkg/serviceaccount/claims.go`: `iss` (the cluster's issuer,
//! `https://kubernetes.default.svc.cluster.local`, as k3s names it), `sub`
//! (`system:serviceaccount:<namespace>:<name>`), `aud`, `exp`, `iat`,
//! `nbf`, `jti`, and the private `kubernetes.io` claims: the namespace, the
//! service account by name and uid and, for a bound token, the Pod (with
//! its node) or Secret it is bound to, by name and uid.
//!
//! A token is accepted ([`TokenAuthority::authenticate`]) when it is one
//! (three base64url parts, `alg` ES256), its signature verifies with a key
//! the cluster holds (by its `kid`), it is within its lifetime give or take
//! kube-apiserver's minute of leeway, it is the cluster issuer's, one of
//! its audiences is one of the API's (the issuer), and what it names still
//! exists with the uid it names: the service account, and the object it
//! is bound to, neither deleted longer than the leeway ago. A service
//! account deleted (even if made again, with another uid) or a bound pod
//! deleted revokes its tokens. Each refusal is a [`TokenError`], which the
//! REST API answers with 401 and logs; no token is ever logged. An
//! accepted token's identity carries what it says beyond its account
//! ([`credential_of`]: its `jti`, and the pod and node of a pod-bound
//! token), which kube-apiserver gives as the user's extras.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use skiff_proto::api::Object;
use skiff_security::identity::service_account_user;
use skiff_security::{Identity, TokenCredential};

use super::service_account_key::{
    base64url, PublicKey, ServiceAccountKeys, SigningKey, SigningKeyError,
};
use crate::store::state_machine::ObjectStore;
use skiff_objects::{Kind, ObjectExt};

/// The issuer of this cluster's tokens (k3s's default
/// `--service-account-issuer`), also the API's one audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How far `exp`, `nbf` and `iat` may be off, and how long a deleted
/// object's tokens still pass (go-jose's `DefaultLeeway`, which
/// kube-apiserver uses).
pub const LEEWAY_SECONDS: i64 = 60;
/// The longest token read; anything longer is refused unread.
pub const MAX_TOKEN_LENGTH: usize = 16 * 1024;
/// The one signing algorithm.
const ALGORITHM: &str = "ES256";

/// Why a token is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("not a service account token: {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}; this cluster's tokens are ES256")]
    Algorithm(String),
    #[error("the token is signed with a key this cluster does not hold (kid {0:?})")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Key(#[from] SigningKeyError),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    #[error("the token is issued by {0:?}, not by this cluster ({ISSUER})")]
    Issuer(String),
    #[error("the token's audiences {token:?} include none of the API's {api:?}")]
    Audience {
        token: Vec<String>,
        api: Vec<String>,
    },
    #[error("the token's subject {0:?} is not its service account")]
    Subject(String),
    #[error("service account {namespace}/{name} does not exist")]
    AccountMissing { namespace: String, name: String },
    #[error("service account UID ({stored}) does not match claim ({claimed})")]
    AccountReplaced { stored: String, claimed: String },
    #[error("service account {namespace}/{name} has been deleted")]
    AccountDeleted { namespace: String, name: String },
    /// The object the token is bound to is gone or being deleted.
    #[error("service account token has been invalidated (its {kind} {name:?} is gone)")]
    Invalidated { kind: Kind, name: String },
    #[error("{kind} UID ({stored}) does not match service account {kind} ref claim ({claimed})")]
    BoundReplaced {
        kind: Kind,
        stored: String,
        claimed: String,
    },
}

/// A name and uid in the `kubernetes.io` claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node of the pod a token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// Written as an array; a single string is read too (RFC 7519).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Audience::deserialize(deserializer)? {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    })
}

/// What a token is bound to besides its service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Nothing: it lives as long as the account, or until it expires.
    Unbound,
    /// A pod (and the node it is bound to, when it is), by name and uid.
    Pod {
        pod: ObjectRef,
        node: Option<ObjectRef>,
    },
    /// A Secret, by name and uid.
    Secret(ObjectRef),
}

/// A reference to the object a TokenRequest binds its token to, as sent
/// (`spec.boundObjectRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundObjectRef {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// Empty: whatever the object's uid is.
    pub uid: String,
}

/// What a token grants: to whom, for whom, how long, bound to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    /// The service account, by name and uid.
    pub account: ObjectRef,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub binding: Binding,
}

impl Claims {
    /// The claims of `grant` issued by `issuer` at `now` (Unix seconds),
    /// with a new `jti`.
    pub fn new(issuer: &str, grant: Grant, now: i64) -> Claims {
        let (pod, node, secret) = match grant.binding {
            Binding::Unbound => (None, None, None),
            Binding::Pod { pod, node } => (Some(pod), node, None),
            Binding::Secret(secret) => (None, None, Some(secret)),
        };
        Claims {
            iss: issuer.to_owned(),
            sub: service_account_user(&grant.namespace, &grant.account.name),
            aud: grant.audiences,
            exp: now.saturating_add(grant.expiration_seconds),
            iat: now,
            nbf: now,
            jti: skiff_objects::metadata::new_uid(),
            kubernetes: KubernetesClaims {
                namespace: grant.namespace,
                serviceaccount: grant.account,
                pod,
                secret,
                node,
            },
        }
    }
}

/// The JOSE header of a token.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// `claims` as a compact JWS signed with `key`: header `{"alg":"ES256",
/// "kid":...}`, as kube-apiserver writes its tokens' (no `typ`).
pub fn encode(key: &SigningKey, claims: &Claims) -> Result<String, SigningKeyError> {
    let header = json!({"alg": ALGORITHM, "kid": key.kid()});
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(&payload)
    );
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&base64url(&signature));
    Ok(token)
}

fn unbase64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| TokenError::Malformed(format!("its {what} is not base64url: {e}")))
}

/// The claims of `token` if it is a well-formed ES256 JWS whose signature
/// verifies with one of `keys` (the one its `kid` names; each, when it
/// names none). Nothing else about the claims is checked here.
pub fn decode(token: &str, keys: &[PublicKey]) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(TokenError::Malformed(format!(
            "it is longer than {MAX_TOKEN_LENGTH} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(TokenError::Malformed(
            "it is not three base64url parts joined by dots".to_owned(),
        ));
    };
    let header: Header = serde_json::from_slice(&unbase64(header, "header")?)
        .map_err(|e| TokenError::Malformed(format!("its header: {e}")))?;
    // What the header names is the sender's: logged, so kept short.
    let short = |text: &str| text.chars().take(64).collect::<String>();
    if header.alg != ALGORITHM {
        return Err(TokenError::Algorithm(short(header.alg.as_str())));
    }
    let candidates: Vec<&PublicKey> = match &header.kid {
        Some(kid) => {
            let named: Vec<&PublicKey> = keys.iter().filter(|k| k.kid() == kid).collect();
            if named.is_empty() {
                return Err(TokenError::UnknownKey(short(kid.as_str())));
            }
            named
        }
        None => keys.iter().collect(),
    };
    let signature = unbase64(signature, "signature")?;
    let signed = &token[..token.len() - parts[2].len() - 1];
    if !candidates
        .iter()
        .any(|k| k.verify(signed.as_bytes(), &signature))
    {
        return Err(TokenError::BadSignature);
    }
    serde_json::from_slice(&unbase64(payload, "payload")?)
        .map_err(|e| TokenError::Malformed(format!("its claims: {e}")))
}

/// Checks the claims of a verified token at `now` (Unix seconds): issuer,
/// lifetime (with [`LEEWAY_SECONDS`]), audience, and a subject that is
/// its service account.
pub fn check_claims(
    claims: &Claims,
    issuer: &str,
    audiences: &[String],
    now: i64,
) -> Result<(), TokenError> {
    if claims.iss != issuer {
        return Err(TokenError::Issuer(claims.iss.clone()));
    }
    if now.saturating_sub(LEEWAY_SECONDS) > claims.exp {
        return Err(TokenError::Expired);
    }
    if now.saturating_add(LEEWAY_SECONDS) < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if now.saturating_add(LEEWAY_SECONDS) < claims.iat {
        return Err(TokenError::IssuedInTheFuture);
    }
    if !claims.aud.iter().any(|a| audiences.contains(a)) {
        return Err(TokenError::Audience {
            token: claims.aud.clone(),
            api: audiences.to_vec(),
        });
    }
    let k = &claims.kubernetes;
    if k.namespace.is_empty() || k.serviceaccount.name.is_empty() {
        return Err(TokenError::Malformed(
            "its kubernetes.io claims name no service account".to_owned(),
        ));
    }
    if claims.sub != service_account_user(&k.namespace, &k.serviceaccount.name) {
        return Err(TokenError::Subject(claims.sub.clone()));
    }
    Ok(())
}

/// Finds a stored object: `(kind, namespace, name)`.
pub type Lookup<'a> = &'a dyn Fn(Kind, &str, &str) -> Option<Arc<Object>>;

/// Whether an object's deletion began before `cutoff` (Unix seconds); an
/// unreadable deletion time counts as long ago.
fn deleted_before(object: &Object, cutoff: i64) -> bool {
    let at = &object.meta().deletion_timestamp;
    if at.is_empty() {
        return false;
    }
    let Ok(time) = humantime::parse_rfc3339_weak(at) else {
        return true;
    };
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64) < cutoff,
        Err(_) => true,
    }
}

/// The service account identity of checked `claims`, if what they name
/// still exists at `now` with the uid they name (kube-apiserver's
/// `validator.Validate`).
pub fn still_valid(claims: &Claims, lookup: Lookup<'_>, now: i64) -> Result<Identity, TokenError> {
    let k = &claims.kubernetes;
    let cutoff = now.saturating_sub(LEEWAY_SECONDS);
    let account =
        lookup(Kind::ServiceAccount, &k.namespace, &k.serviceaccount.name).ok_or_else(|| {
            TokenError::AccountMissing {
                namespace: k.namespace.clone(),
                name: k.serviceaccount.name.clone(),
            }
        })?;
    let stored = &account.meta().uid;
    if *stored != k.serviceaccount.uid {
        return Err(TokenError::AccountReplaced {
            stored: stored.clone(),
            claimed: k.serviceaccount.uid.clone(),
        });
    }
    if deleted_before(&account, cutoff) {
        return Err(TokenError::AccountDeleted {
            namespace: k.namespace.clone(),
            name: k.serviceaccount.name.clone(),
        });
    }
    let bound = [(Kind::Secret, &k.secret), (Kind::Pod, &k.pod)];
    for (kind, reference) in bound {
        let Some(reference) = reference else {
            continue;
        };
        let invalidated = || TokenError::Invalidated {
            kind,
            name: reference.name.clone(),
        };
        let object = lookup(kind, &k.namespace, &reference.name).ok_or_else(invalidated)?;
        let stored = &object.meta().uid;
        if *stored != reference.uid {
            return Err(TokenError::BoundReplaced {
                kind,
                stored: stored.clone(),
                claimed: reference.uid.clone(),
            });
        }
        if deleted_before(&object, cutoff) {
            return Err(invalidated());
        }
    }
    Ok(Identity::ServiceAccount {
        namespace: k.namespace.clone(),
        name: k.serviceaccount.name.clone(),
        uid: k.serviceaccount.uid.clone(),
        credential: credential_of(claims),
    })
}

/// What accepted `claims` say beyond the account, as kube-apiserver's
/// validator reads them: the `jti`, the pod a token is bound to and, for
/// a pod-bound token only, the node (a node claim without a pod is not
/// one skiff issues, and is not shown).
pub fn credential_of(claims: &Claims) -> TokenCredential {
    let k = &claims.kubernetes;
    let mut credential = TokenCredential {
        token_id: claims.jti.clone(),
        ..TokenCredential::default()
    };
    if let Some(pod) = &k.pod {
        credential.pod_name = pod.name.clone();
        credential.pod_uid = pod.uid.clone();
        if let Some(node) = &k.node {
            credential.node_name = node.name.clone();
            credential.node_uid = node.uid.clone();
        }
    }
    credential
}

/// Issues and accepts this cluster's service account tokens, with the
/// signing key the store holds.
pub struct TokenAuthority {
    store: Arc<ObjectStore>,
    keys: ServiceAccountKeys,
    issuer: String,
    /// The audiences the API accepts (kube-apiserver's `--api-audiences`,
    /// by default the issuer).
    audiences: Vec<String>,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// The authority of the cluster whose replicated store (this master's
    /// replica) is `store`, the key read through `keys`.
    pub fn new(store: Arc<ObjectStore>, keys: ServiceAccountKeys) -> TokenAuthority {
        TokenAuthority {
            store,
            keys,
            issuer: ISSUER.to_owned(),
            audiences: vec![ISSUER.to_owned()],
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences the API accepts, and a TokenRequest's default.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// A signed token of `grant`, issued at `now` (Unix seconds), and its
    /// claims.
    pub fn issue(&self, grant: Grant, now: i64) -> Result<(String, Claims), SigningKeyError> {
        let key = self.keys.current(&self.store)?;
        let claims = Claims::new(&self.issuer, grant, now);
        Ok((encode(&key, &claims)?, claims))
    }

    /// Whom `token` authenticates at `now` (Unix seconds): a service
    /// account, when every check of the module's description passes.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        let key = self.keys.current(&self.store)?;
        let claims = decode(token, std::slice::from_ref(key.public_key()))?;
        check_claims(&claims, &self.issuer, &self.audiences, now)?;
        let cache = self.store.cache();
        let lookup = |kind: Kind, namespace: &str, name: &str| cache.get(kind, namespace, name);
        still_valid(&claims, &lookup, now)
    }

    /// The JWK set of the keys tokens are verified with (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Result<Value, SigningKeyError> {
        let key = self.keys.current(&self.store)?;
        Ok(json!({"keys": [key.public_key().jwk()]}))
    }

    /// The OpenID provider configuration (`/.well-known/openid-configuration`),
    /// as kube-apiserver serves it, its keys at `jwks_uri`.
    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
        })
    }
}

/// A cluster's store and token authority for tests, and objects to issue
/// tokens for.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use prost::Message;
    use skiff_proto::api::Object;
    use skiff_proto::v1;

    use super::super::service_account_key::{SealingKey, ServiceAccountKeys};
    use super::TokenAuthority;
    use crate::store::state_machine::ObjectStore;
    use crate::store::Command;
    use skiff_objects::{IntoObject, Kind};

    /// The service account's uid in [`authority`]'s store.
    pub const ACCOUNT_UID: &str = "sa-1";
    /// The pod's.
    pub const POD_UID: &str = "pod-1";

    fn meta(namespace: &str, name: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    /// A store holding a signing key (sealed under a new CA's key),
    /// namespaces `shop` and `kube-system`, service account
    /// `shop/builder` ([`ACCOUNT_UID`]) and its pod `shop/web-0`
    /// ([`POD_UID`], bound to no node), and the authority over it.
    pub fn authority() -> (tempfile::TempDir, Arc<ObjectStore>, TokenAuthority) {
        skiff_security::install_crypto_provider();
        let ca = skiff_security::ClusterCa::generate().expect("a CA");
        let sealing = Arc::new(SealingKey::from_ca_key(ca.key_pem()).expect("a sealing key"));
        let (secret, _) = sealing.new_key_secret().expect("a signing key");
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = ObjectStore::open(dir.path()).expect("a store");
        let namespace = |name: &str| skiff_objects::namespaces::named(name, "");
        let account = v1::GenericObject {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            metadata: meta("shop", "builder"),
            content: b"{}".to_vec(),
        };
        let pod = v1::Pod {
            metadata: meta("shop", "web-0"),
            spec: Some(v1::PodSpec {
                service_account_name: "builder".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let objects: [(Object, &str); 5] = [
            (namespace("shop"), "ns-1"),
            (namespace("kube-system"), "ns-2"),
            (secret, "key-1"),
            (account.into_object(), ACCOUNT_UID),
            (pod.into_object(), POD_UID),
        ];
        let commands = objects
            .iter()
            .map(|(object, uid)| Command::Create {
                object: object.encode_to_vec(),
                uid: (*uid).to_owned(),
                now: "2026-01-01T00:00:00Z".into(),
            })
            .collect();
        for result in store.apply_commands(commands) {
            result.expect("created");
        }
        let authority = TokenAuthority::new(store.clone(), ServiceAccountKeys::new(sealing));
        (dir, store, authority)
    }

    /// Removes `kind` `namespace/name` from `store` at once.
    pub fn remove(store: &ObjectStore, kind: Kind, namespace: &str, name: &str) {
        let delete = Command::DeleteWithOptions {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            options: skiff_objects::deletion::DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            now: "2026-01-01T00:00:00Z".into(),
        };
        for result in store.apply_commands(vec![delete]) {
            result.expect("deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use skiff_proto::v1;

    use super::*;
    use skiff_objects::IntoObject;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600;

    fn grant(binding: Binding) -> Grant {
        Grant {
            namespace: "shop".into(),
            account: ObjectRef {
                name: "builder".into(),
                uid: "sa-1".into(),
            },
            audiences: vec![ISSUER.into()],
            expiration_seconds: 3600,
            binding,
        }
    }

    fn pod_binding() -> Binding {
        Binding::Pod {
            pod: ObjectRef {
                name: "web-0".into(),
                uid: "pod-1".into(),
            },
            node: Some(ObjectRef {
                name: "pi-1".into(),
                uid: "node-1".into(),
            }),
        }
    }

    /// A JWT's part, decoded, as JSON.
    fn part(token: &str, index: usize) -> Value {
        use base64::Engine;
        let text = token.split('.').nth(index).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn claims_are_written_as_kube_apiserver_writes_them() {
        let (key, _) = SigningKey::generate().unwrap();
        let claims = Claims::new(ISSUER, grant(pod_binding()), NOW);
        let token = encode(&key, &claims).unwrap();
        assert_eq!(part(&token, 0), json!({"alg": "ES256", "kid": key.kid()}));
        let payload = part(&token, 1);
        let jti = payload["jti"].as_str().unwrap().to_owned();
        assert_eq!(jti.len(), 36, "a UUID: {jti}");
        assert_eq!(
            payload,
            json!({
                "iss": "https://kubernetes.default.svc.cluster.local",
                "sub": "system:serviceaccount:shop:builder",
                "aud": ["https://kubernetes.default.svc.cluster.local"],
                "exp": NOW + 3600,
                "iat": NOW,
                "nbf": NOW,
                "jti": jti,
                "kubernetes.io": {
                    "namespace": "shop",
                    "serviceaccount": {"name": "builder", "uid": "sa-1"},
                    "pod": {"name": "web-0", "uid": "pod-1"},
                    "node": {"name": "pi-1", "uid": "node-1"},
                },
            })
        );
        // Unbound: the account alone; bound to a Secret: the Secret.
        let unbound = Claims::new(ISSUER, grant(Binding::Unbound), NOW);
        let written = serde_json::to_value(&unbound).unwrap();
        assert_eq!(
            written["kubernetes.io"],
            json!({"namespace": "shop", "serviceaccount": {"name": "builder", "uid": "sa-1"}})
        );
        let secret = ObjectRef {
            name: "ci".into(),
            uid: "s-1".into(),
        };
        let bound = Claims::new(ISSUER, grant(Binding::Secret(secret)), NOW);
        let written = serde_json::to_value(&bound).unwrap();
        assert_eq!(
            written["kubernetes.io"]["secret"],
            json!({"name": "ci", "uid": "s-1"})
        );
        assert_ne!(unbound.jti, bound.jti, "each token its own id");
    }

    #[test]
    fn a_signed_token_decodes_to_its_claims_and_a_single_audience_string_is_read() {
        let (key, _) = SigningKey::generate().unwrap();
        let claims = Claims::new(ISSUER, grant(pod_binding()), NOW);
        let token = encode(&key, &claims).unwrap();
        let keys = [key.public_key().clone()];
        assert_eq!(decode(&token, &keys).unwrap(), claims);
        let mut payload = serde_json::to_value(&claims).unwrap();
        payload["aud"] = json!("x");
        let read: Claims = serde_json::from_value(payload).unwrap();
        assert_eq!(read.aud, ["x"]);
    }

    /// `token` with its payload replaced by `payload`, signature kept.
    fn with_payload(token: &str, payload: &Value) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let payload = base64url(payload.to_string().as_bytes());
        format!("{}.{payload}.{}", parts[0], parts[2])
    }

    #[test]
    fn a_token_that_is_not_one_or_not_signed_by_the_cluster_is_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let (forger, _) = SigningKey::generate().unwrap();
        let keys = [key.public_key().clone()];
        let claims = Claims::new(ISSUER, grant(Binding::Unbound), NOW);
        let token = encode(&key, &claims).unwrap();

        let malformed = |t: &str| matches!(decode(t, &keys), Err(TokenError::Malformed(_)));
        assert!(malformed("garbage"));
        assert!(malformed(""));
        assert!(malformed("a.b"));
        assert!(malformed(&format!("{token}.more")));
        assert!(malformed("!!!.e30.AA"));
        assert!(malformed(&"a".repeat(MAX_TOKEN_LENGTH + 1)));

        // Signed with another key, named as ours or as itself.
        let forged = encode(&forger, &claims).unwrap();
        assert!(matches!(
            decode(&forged, &keys),
            Err(TokenError::UnknownKey(kid)) if kid == forger.kid()
        ));
        let parts: Vec<&str> = forged.split('.').collect();
        let our_header = token.split('.').next().unwrap();
        let relabelled = format!("{our_header}.{}.{}", parts[1], parts[2]);
        assert!(matches!(
            decode(&relabelled, &keys),
            Err(TokenError::BadSignature)
        ));
        // Our signature over claims someone changed.
        let mut changed = serde_json::to_value(&claims).unwrap();
        changed["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        assert!(matches!(
            decode(&with_payload(&token, &changed), &keys),
            Err(TokenError::BadSignature)
        ));
        // Unsigned (`alg: none`), or another algorithm.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none"}"#),
            token.split('.').nth(1).unwrap()
        );
        assert!(matches!(
            decode(&none, &keys),
            Err(TokenError::Algorithm(alg)) if alg == "none"
        ));
        // No kid: every key is tried, ours verifies.
        let no_kid = format!(
            "{}.{}",
            base64url(br#"{"alg":"ES256"}"#),
            token.split('.').nth(1).unwrap()
        );
        let signature = key.sign(no_kid.as_bytes()).unwrap();
        let no_kid = format!("{no_kid}.{}", base64url(&signature));
        assert_eq!(decode(&no_kid, &keys).unwrap(), claims);
    }

    #[test]
    fn the_issuer_lifetime_audience_and_subject_are_checked_with_a_minute_of_leeway() {
        let claims = Claims::new(ISSUER, grant(Binding::Unbound), NOW);
        let api = [ISSUER.to_owned()];
        let check = |claims: &Claims, now: i64| check_claims(claims, ISSUER, &api, now);
        assert!(check(&claims, NOW).is_ok());
        // Expired: not within the leeway after `exp`, refused after it.
        assert!(check(&claims, NOW + 3600 + 60).is_ok());
        assert!(matches!(
            check(&claims, NOW + 3600 + 61),
            Err(TokenError::Expired)
        ));
        // Issued (and valid) from `NOW`, a minute early is tolerated.
        assert!(check(&claims, NOW - 60).is_ok());
        let mut later = claims.clone();
        later.iat = NOW - 3600;
        later.nbf = NOW + 300;
        assert!(matches!(check(&later, NOW), Err(TokenError::NotYetValid)));
        assert!(matches!(
            check(&claims, NOW - 61),
            Err(TokenError::NotYetValid)
        ));
        let mut future = claims.clone();
        future.iat = NOW + 300;
        future.nbf = NOW;
        assert!(matches!(
            check(&future, NOW),
            Err(TokenError::IssuedInTheFuture)
        ));

        let mut elsewhere = claims.clone();
        elsewhere.iss = "https://issuer.example".into();
        assert!(matches!(check(&elsewhere, NOW), Err(TokenError::Issuer(_))));
        let mut vault = claims.clone();
        vault.aud = vec!["vault".into()];
        assert!(matches!(
            check(&vault, NOW),
            Err(TokenError::Audience { .. })
        ));
        vault.aud.push(ISSUER.into());
        assert!(
            check(&vault, NOW).is_ok(),
            "one audience of the API's is enough"
        );
        let mut other = claims.clone();
        other.sub = "system:serviceaccount:kube-system:admin".into();
        assert!(matches!(check(&other, NOW), Err(TokenError::Subject(_))));
    }

    fn account(namespace: &str, name: &str, uid: &str, deleted: &str) -> Arc<Object> {
        Arc::new(
            v1::GenericObject {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: namespace.into(),
                    uid: uid.into(),
                    deletion_timestamp: deleted.into(),
                    ..Default::default()
                }),
                content: b"{}".to_vec(),
            }
            .into_object(),
        )
    }

    fn pod(name: &str, uid: &str, deleted: &str) -> Arc<Object> {
        Arc::new(
            v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "shop".into(),
                    uid: uid.into(),
                    deletion_timestamp: deleted.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object(),
        )
    }

    type Objects = HashMap<(Kind, String), Arc<Object>>;

    fn valid(claims: &Claims, objects: &Objects) -> Result<Identity, TokenError> {
        let lookup = |kind: Kind, _namespace: &str, name: &str| {
            objects.get(&(kind, name.to_owned())).cloned()
        };
        still_valid(claims, &lookup, NOW)
    }

    #[test]
    fn a_token_lives_only_as_long_as_its_account_and_its_bound_pod() {
        let claims = Claims::new(ISSUER, grant(pod_binding()), NOW);
        let mut objects = Objects::new();
        objects.insert(
            (Kind::ServiceAccount, "builder".into()),
            account("shop", "builder", "sa-1", ""),
        );
        objects.insert((Kind::Pod, "web-0".into()), pod("web-0", "pod-1", ""));
        assert_eq!(
            valid(&claims, &objects).unwrap(),
            Identity::ServiceAccount {
                namespace: "shop".into(),
                name: "builder".into(),
                uid: "sa-1".into(),
                credential: TokenCredential {
                    token_id: claims.jti.clone(),
                    pod_name: "web-0".into(),
                    pod_uid: "pod-1".into(),
                    node_name: "pi-1".into(),
                    node_uid: "node-1".into(),
                },
            }
        );

        // The pod being deleted: still valid within the leeway, not after.
        objects.insert(
            (Kind::Pod, "web-0".into()),
            pod("web-0", "pod-1", "2026-01-01T00:00:00Z"),
        );
        assert!(valid(&claims, &objects).is_ok());
        objects.insert(
            (Kind::Pod, "web-0".into()),
            pod("web-0", "pod-1", "2025-12-31T23:58:00Z"),
        );
        assert!(matches!(
            valid(&claims, &objects),
            Err(TokenError::Invalidated {
                kind: Kind::Pod,
                ..
            })
        ));
        // A new pod of the same name.
        objects.insert((Kind::Pod, "web-0".into()), pod("web-0", "pod-2", ""));
        assert!(matches!(
            valid(&claims, &objects),
            Err(TokenError::BoundReplaced {
                kind: Kind::Pod,
                ..
            })
        ));
        // No pod.
        objects.remove(&(Kind::Pod, "web-0".to_owned()));
        assert!(matches!(
            valid(&claims, &objects),
            Err(TokenError::Invalidated {
                kind: Kind::Pod,
                ..
            })
        ));

        // The account made again (another uid), deleted long ago, or gone.
        let unbound = Claims::new(ISSUER, grant(Binding::Unbound), NOW);
        objects.insert(
            (Kind::ServiceAccount, "builder".into()),
            account("shop", "builder", "sa-2", ""),
        );
        assert!(matches!(
            valid(&unbound, &objects),
            Err(TokenError::AccountReplaced { .. })
        ));
        objects.insert(
            (Kind::ServiceAccount, "builder".into()),
            account("shop", "builder", "sa-1", "2025-12-31T23:00:00Z"),
        );
        assert!(matches!(
            valid(&unbound, &objects),
            Err(TokenError::AccountDeleted { .. })
        ));
        objects.clear();
        assert!(matches!(
            valid(&unbound, &objects),
            Err(TokenError::AccountMissing { .. })
        ));
    }

    #[test]
    fn a_tokens_jti_and_its_bound_pod_and_node_are_its_credential() {
        let credential = |binding: Binding| {
            let claims = Claims::new(ISSUER, grant(binding), NOW);
            (credential_of(&claims), claims.jti)
        };
        let (bound, jti) = credential(pod_binding());
        assert_eq!(
            bound,
            TokenCredential {
                token_id: jti.clone(),
                pod_name: "web-0".into(),
                pod_uid: "pod-1".into(),
                node_name: "pi-1".into(),
                node_uid: "node-1".into(),
            }
        );
        let extra = bound.extra();
        assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["web-0"]);
        assert_eq!(extra["authentication.kubernetes.io/pod-uid"], ["pod-1"]);
        assert_eq!(extra["authentication.kubernetes.io/node-name"], ["pi-1"]);
        assert_eq!(extra["authentication.kubernetes.io/node-uid"], ["node-1"]);
        assert_eq!(
            extra["authentication.kubernetes.io/credential-id"],
            [format!("JTI={jti}")]
        );

        // A pod on no node: the pod, no node.
        let (unscheduled, _) = credential(Binding::Pod {
            pod: ObjectRef {
                name: "web-0".into(),
                uid: "pod-1".into(),
            },
            node: None,
        });
        assert_eq!(unscheduled.pod_name, "web-0");
        assert!(unscheduled.node_name.is_empty() && unscheduled.node_uid.is_empty());
        // Unbound, or bound to a Secret: the token's id alone.
        let secret = ObjectRef {
            name: "ci".into(),
            uid: "s-1".into(),
        };
        for binding in [Binding::Unbound, Binding::Secret(secret)] {
            let (given, jti) = credential(binding.clone());
            let only_id = TokenCredential {
                token_id: jti,
                ..TokenCredential::default()
            };
            assert_eq!(given, only_id, "{binding:?}");
        }
        // Claims read from a token without a jti, and with a node but no
        // pod: no id, and the node is not taken.
        let mut payload =
            serde_json::to_value(Claims::new(ISSUER, grant(pod_binding()), NOW)).unwrap();
        payload.as_object_mut().unwrap().remove("jti");
        payload["kubernetes.io"]
            .as_object_mut()
            .unwrap()
            .remove("pod");
        let read: Claims = serde_json::from_value(payload).unwrap();
        assert!(read.kubernetes.node.is_some());
        assert_eq!(credential_of(&read), TokenCredential::default());
        assert!(credential_of(&read).extra().is_empty());
    }

    #[test]
    fn a_secret_bound_token_dies_with_its_secret() {
        let secret = ObjectRef {
            name: "ci".into(),
            uid: "s-1".into(),
        };
        let claims = Claims::new(ISSUER, grant(Binding::Secret(secret)), NOW);
        let mut objects = Objects::new();
        objects.insert(
            (Kind::ServiceAccount, "builder".into()),
            account("shop", "builder", "sa-1", ""),
        );
        assert!(matches!(
            valid(&claims, &objects),
            Err(TokenError::Invalidated {
                kind: Kind::Secret,
                ..
            })
        ));
        let stored = v1::Secret {
            metadata: Some(v1::ObjectMeta {
                name: "ci".into(),
                namespace: "shop".into(),
                uid: "s-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        objects.insert((Kind::Secret, "ci".into()), Arc::new(stored.into_object()));
        assert!(valid(&claims, &objects).is_ok());
    }

    #[test]
    fn an_issued_token_authenticates_its_account_until_the_account_is_deleted() {
        let (_dir, store, authority) = fixtures::authority();
        let (token, claims) = authority.issue(grant(Binding::Unbound), NOW).unwrap();
        assert_eq!(claims.exp, NOW + 3600);
        let account = authority.authenticate(&token, NOW + 10).unwrap();
        assert_eq!(account.to_string(), "system:serviceaccount:shop:builder");
        assert!(matches!(
            authority.authenticate(&token, NOW + 3700),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            authority.authenticate("garbage", NOW),
            Err(TokenError::Malformed(_))
        ));
        // For another audience only.
        let mut vault = grant(Binding::Unbound);
        vault.audiences = vec!["vault".into()];
        let (for_vault, _) = authority.issue(vault, NOW).unwrap();
        assert!(matches!(
            authority.authenticate(&for_vault, NOW),
            Err(TokenError::Audience { .. })
        ));

        fixtures::remove(&store, Kind::ServiceAccount, "shop", "builder");
        assert!(matches!(
            authority.authenticate(&token, NOW + 10),
            Err(TokenError::AccountMissing { .. })
        ));
    }

    #[test]
    fn a_pod_bound_token_is_refused_once_its_pod_is_gone() {
        let (_dir, store, authority) = fixtures::authority();
        let bound = Binding::Pod {
            pod: ObjectRef {
                name: "web-0".into(),
                uid: fixtures::POD_UID.into(),
            },
            node: None,
        };
        let (token, claims) = authority.issue(grant(bound), NOW).unwrap();
        let Identity::ServiceAccount { credential, .. } =
            authority.authenticate(&token, NOW).unwrap()
        else {
            panic!("not a service account");
        };
        let extra = credential.extra();
        assert_eq!(extra["authentication.kubernetes.io/pod-name"], ["web-0"]);
        assert_eq!(
            extra["authentication.kubernetes.io/pod-uid"],
            [fixtures::POD_UID]
        );
        assert_eq!(
            extra["authentication.kubernetes.io/credential-id"],
            [format!("JTI={}", claims.jti)]
        );
        fixtures::remove(&store, Kind::Pod, "shop", "web-0");
        assert!(matches!(
            authority.authenticate(&token, NOW),
            Err(TokenError::Invalidated {
                kind: Kind::Pod,
                ..
            })
        ));
        // Its account's unbound tokens live on.
        let (unbound, _) = authority.issue(grant(Binding::Unbound), NOW).unwrap();
        assert!(authority.authenticate(&unbound, NOW).is_ok());
    }

    #[test]
    fn the_discovery_documents_name_the_issuer_and_the_key_tokens_carry() {
        let (_dir, _store, authority) = fixtures::authority();
        let (token, _) = authority.issue(grant(Binding::Unbound), NOW).unwrap();
        let kid = part(&token, 0)["kid"].as_str().unwrap().to_owned();
        let jwks = authority.jwks().unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], kid.as_str());
        assert_eq!(keys[0]["kty"], "EC");
        assert_eq!(keys[0]["alg"], "ES256");
        let configuration =
            authority.openid_configuration("https://192.168.1.10:6443/openid/v1/jwks");
        assert_eq!(
            configuration,
            json!({
                "issuer": ISSUER,
                "jwks_uri": "https://192.168.1.10:6443/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
        );
    }
}
