//! The service account issuer's discovery documents, as kube-apiserver
//! serves them (OIDC discovery, so that anything verifying a pod's token,
//! a vault or a cloud's workload identity, finds the keys):
//! `/.well-known/openid-configuration` (the issuer, `jwks_uri` at this
//! master's advertised API address, ES256) and `/openid/v1/jwks` (the
//! signing key's public half as a JWK set, `application/jwk-set+json`).
//! Every authenticated caller may read them (`api::authz`'s path rules);
//! both may be cached for an hour.

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::Value;

use super::json_response;
use super::status::RestError;
use crate::security::service_account_key::SigningKeyError;
use crate::security::service_account_tokens::TokenAuthority;

/// Where the keys are served.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// How long clients may cache either document.
const CACHE_CONTROL: &str = "public, max-age=3600";
const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";

/// Which document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Document {
    OpenIdConfiguration,
    Jwks,
}

/// The `jwks_uri` of a master advertising its API at `server_address`
/// (`HOST:PORT`, or `https://HOST:PORT`).
pub(super) fn jwks_uri(server_address: &str) -> String {
    let host = server_address
        .trim_start_matches("https://")
        .trim_end_matches('/');
    format!("https://{host}{JWKS_PATH}")
}

/// `document` for a caller the authorizer answered (`authorized`: may it
/// `get` the document's path? `authz::authorize_path`'s answer, its
/// refusal a 403 about no resource).
pub(super) fn serve(
    document: Document,
    tokens: &TokenAuthority,
    authorized: Result<(), tonic::Status>,
    server_address: &str,
) -> Result<Response<Body>, RestError> {
    authorized.map_err(|refused| RestError::forbidden_path(refused.message()))?;
    let (value, content_type): (Value, &'static str) = match document {
        Document::OpenIdConfiguration => (
            tokens.openid_configuration(&jwks_uri(server_address)),
            "application/json",
        ),
        Document::Jwks => match tokens.jwks() {
            Ok(keys) => (keys, JWKS_CONTENT_TYPE),
            Err(e @ SigningKeyError::Missing) => {
                let message = e.to_string();
                let code = StatusCode::SERVICE_UNAVAILABLE;
                return Err(RestError::new(code, "ServiceUnavailable", message));
            }
            Err(e) => return Err(RestError::internal(e.to_string())),
        },
    };
    let mut response = json_response(StatusCode::OK, &value);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::authz;
    use crate::security::service_account_tokens::fixtures;

    #[test]
    fn the_keys_are_named_at_the_advertised_api_address() {
        assert_eq!(
            jwks_uri("192.168.1.10:6443"),
            "https://192.168.1.10:6443/openid/v1/jwks"
        );
        assert_eq!(
            jwks_uri("https://pi.local:6443/"),
            "https://pi.local:6443/openid/v1/jwks"
        );
    }

    #[test]
    fn every_authenticated_caller_reads_both_documents() {
        use skiff_security::{Identity, TokenCredential};
        let (_dir, store, tokens) = fixtures::authority();
        let account = Identity::ServiceAccount {
            namespace: "shop".into(),
            name: "builder".into(),
            uid: fixtures::ACCOUNT_UID.into(),
            credential: TokenCredential::default(),
        };
        for who in [account, Identity::Node("pi-1".into()), Identity::Admin] {
            let may = |path| authz::authorize_path(&store, &who, "get", path);
            let path = "/.well-known/openid-configuration";
            let document = Document::OpenIdConfiguration;
            let answer = serve(document, &tokens, may(path), "10.0.0.1:6443").unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{who}");
            assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
            let answer = serve(Document::Jwks, &tokens, may(JWKS_PATH), "10.0.0.1:6443").unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{who}");
            assert_eq!(answer.headers()[header::CONTENT_TYPE], JWKS_CONTENT_TYPE);
            assert_eq!(answer.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
        }
    }

    #[test]
    fn a_refused_caller_is_answered_as_kube_apiserver_refuses_a_path() {
        let (_dir, _store, tokens) = fixtures::authority();
        let sentence =
            r#"User "system:serviceaccount:shop:builder" cannot get path "/openid/v1/jwks""#;
        let refused = Err(tonic::Status::permission_denied(sentence));
        let Err(e) = serve(Document::Jwks, &tokens, refused, "10.0.0.1:6443") else {
            panic!("a refused caller was served");
        };
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            r#"forbidden: User "system:serviceaccount:shop:builder" cannot get path "/openid/v1/jwks""#
        );
        assert!(e.to_json().get("details").is_none());
    }
}
