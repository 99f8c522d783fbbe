//! Who a REST request comes from. A client certificate the TLS handshake
//! verified wins; without one, a service account token in `Authorization:
//! Bearer` (how a pod calls the API: its token and the cluster's CA, no
//! certificate) is checked by the cluster's [`TokenAuthority`] (signature,
//! lifetime, issuer, audience, and that its account and bound object still
//! exist) and its service account is the caller (with the token's id and
//! a pod-bound token's pod and node, the user's extras); anything else is
//! answered 401 `Unauthorized`, as kube-apiserver answers it, whatever was
//! wrong. A refused token is logged with the reason and the caller's
//! address, never itself. The header is dropped once read, as
//! kube-apiserver's authentication filter drops it, so that nothing
//! relayed onwards (`pods/proxy`) carries the caller's token.
//!
//! gRPC calls never come here: they need a certificate (the gate in
//! `skiff_security::gate`), as before.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap};
use skiff_security::PeerInfo;

use super::status::RestError;
use crate::security::service_account_tokens::TokenAuthority;

/// The token of an `Authorization: Bearer <token>` header, read as
/// kube-apiserver reads it (the scheme in any case, the first word after
/// it); `None` for no header, another scheme, or no token.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut words = value.splitn(3, ' ');
    let scheme = words.next()?;
    let token = words.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller of a request that came through the TLS listener as `peer`,
/// with `headers` (whose `Authorization` is removed), at `now`.
pub(super) fn authenticate(
    tokens: &TokenAuthority,
    peer: Option<PeerInfo>,
    headers: &mut HeaderMap,
    now: SystemTime,
) -> Result<PeerInfo, RestError> {
    let token = bearer_token(headers).map(str::to_owned);
    headers.remove(header::AUTHORIZATION);
    let Some(peer) = peer else {
        return Err(RestError::unauthorized());
    };
    if peer.identity.is_some() {
        return Ok(peer);
    }
    let Some(token) = token else {
        return Err(RestError::unauthorized());
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match tokens.authenticate(&token, now) {
        Ok(identity) => Ok(PeerInfo {
            remote: peer.remote,
            identity: Some(identity),
        }),
        Err(refusal) => {
            tracing::info!(remote = %peer.remote, reason = %refusal, "refused a service account token");
            Err(RestError::unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;
    use skiff_security::{Identity, TokenCredential};

    use super::*;
    use crate::security::service_account_key::SigningKey;
    use crate::security::service_account_tokens::{
        encode, fixtures, Binding, Claims, Grant, ObjectRef, ISSUER,
    };
    use skiff_objects::Kind;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600;

    fn at(seconds: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    fn anonymous() -> Option<PeerInfo> {
        Some(PeerInfo {
            remote: "10.42.0.7:40000".parse().unwrap(),
            identity: None,
        })
    }

    fn grant(audiences: &[&str], binding: Binding) -> Grant {
        Grant {
            namespace: "shop".into(),
            account: ObjectRef {
                name: "builder".into(),
                uid: fixtures::ACCOUNT_UID.into(),
            },
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            expiration_seconds: 3600,
            binding,
        }
    }

    #[test]
    fn the_bearer_token_is_read_as_kube_apiserver_reads_it() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer abc def")), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&headers("Basic YWRtaW46YWRtaW4=")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn a_valid_token_makes_its_service_account_the_caller_and_is_not_passed_on() {
        let (_dir, _store, tokens) = fixtures::authority();
        let (token, claims) = tokens
            .issue(grant(&[ISSUER], Binding::Unbound), NOW)
            .unwrap();
        let mut sent = headers(&format!("Bearer {token}"));
        let caller = authenticate(&tokens, anonymous(), &mut sent, at(NOW + 5)).unwrap();
        assert_eq!(
            caller.identity,
            Some(Identity::ServiceAccount {
                namespace: "shop".into(),
                name: "builder".into(),
                uid: fixtures::ACCOUNT_UID.into(),
                credential: TokenCredential {
                    token_id: claims.jti,
                    ..TokenCredential::default()
                },
            })
        );
        assert!(sent.get(header::AUTHORIZATION).is_none(), "dropped");
    }

    #[test]
    fn a_verified_client_certificate_wins_over_any_token() {
        let (_dir, _store, tokens) = fixtures::authority();
        let admin = Some(PeerInfo {
            remote: "192.0.2.1:50000".parse().unwrap(),
            identity: Some(Identity::Admin),
        });
        let mut sent = headers("Bearer garbage");
        let caller = authenticate(&tokens, admin, &mut sent, at(NOW)).unwrap();
        assert_eq!(caller.identity, Some(Identity::Admin));
        assert!(sent.get(header::AUTHORIZATION).is_none(), "dropped");
    }

    /// Every kind of bad token, and no token at all: 401 `Unauthorized`.
    #[test]
    fn every_bad_token_is_answered_401_unauthorized() {
        let (_dir, store, tokens) = fixtures::authority();
        let issue = |audiences: &[&str], binding: Binding, at: i64| {
            tokens.issue(grant(audiences, binding), at).unwrap().0
        };
        let pod = Binding::Pod {
            pod: ObjectRef {
                name: "web-0".into(),
                uid: fixtures::POD_UID.into(),
            },
            node: None,
        };
        let bound_to_pod = issue(&[ISSUER], pod, NOW);
        let (forger, _) = SigningKey::generate().unwrap();
        let forged = encode(
            &forger,
            &Claims::new(ISSUER, grant(&[ISSUER], Binding::Unbound), NOW),
        )
        .unwrap();
        let valid = issue(&[ISSUER], Binding::Unbound, NOW);
        // The account's signature over claims changed to another account.
        let parts: Vec<&str> = valid.split('.').collect();
        let mut claims: serde_json::Value = {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        claims["sub"] = "system:serviceaccount:kube-system:default".into();
        claims["kubernetes.io"]["namespace"] = "kube-system".into();
        let changed = format!(
            "{}.{}.{}",
            parts[0],
            crate::security::service_account_key::base64url(claims.to_string().as_bytes()),
            parts[2]
        );
        let cases = [
            ("garbage", "garbage".to_owned()),
            ("forged signature", forged),
            ("changed claims", changed),
            ("expired", issue(&[ISSUER], Binding::Unbound, NOW - 7200)),
            ("wrong audience", issue(&["vault"], Binding::Unbound, NOW)),
        ];
        for (case, token) in &cases {
            let mut sent = headers(&format!("Bearer {token}"));
            let refused = authenticate(&tokens, anonymous(), &mut sent, at(NOW)).unwrap_err();
            assert_eq!(refused.code, http::StatusCode::UNAUTHORIZED, "{case}");
            assert_eq!(refused.reason, "Unauthorized", "{case}");
            assert!(sent.get(header::AUTHORIZATION).is_none(), "{case}: dropped");
        }

        // The bound pod deleted; then the account.
        let mut sent = headers(&format!("Bearer {bound_to_pod}"));
        assert!(authenticate(&tokens, anonymous(), &mut sent, at(NOW)).is_ok());
        fixtures::remove(&store, Kind::Pod, "shop", "web-0");
        let mut sent = headers(&format!("Bearer {bound_to_pod}"));
        let refused = authenticate(&tokens, anonymous(), &mut sent, at(NOW)).unwrap_err();
        assert_eq!(refused.code, http::StatusCode::UNAUTHORIZED, "deleted pod");
        let mut sent = headers(&format!("Bearer {valid}"));
        assert!(authenticate(&tokens, anonymous(), &mut sent, at(NOW)).is_ok());
        fixtures::remove(&store, Kind::ServiceAccount, "shop", "builder");
        let mut sent = headers(&format!("Bearer {valid}"));
        let refused = authenticate(&tokens, anonymous(), &mut sent, at(NOW)).unwrap_err();
        assert_eq!(
            refused.code,
            http::StatusCode::UNAUTHORIZED,
            "deleted account"
        );

        // No credentials at all, another scheme, or not through TLS.
        for mut sent in [HeaderMap::new(), headers("Basic YWRtaW46YWRtaW4=")] {
            let refused = authenticate(&tokens, anonymous(), &mut sent, at(NOW)).unwrap_err();
            assert_eq!(refused.code, http::StatusCode::UNAUTHORIZED);
        }
        let mut sent = headers(&format!("Bearer {valid}"));
        let refused = authenticate(&tokens, None, &mut sent, at(NOW)).unwrap_err();
        assert_eq!(refused.code, http::StatusCode::UNAUTHORIZED);
    }
}
