//! `POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token`: an
//! `authentication.k8s.io/v1` TokenRequest (what `kubectl create token`
//! and the kubelet post, JSON or protobuf), answered `201 Created` with the
//! request, its defaults filled in (`spec.audiences`,
//! `spec.expirationSeconds`), and `status.token` and
//! `status.expirationTimestamp`. The token is made by
//! `ApiService::request_token` (`api/token_requests.rs`); this module reads
//! the request and writes the answer and kube-apiserver's errors (a body
//! naming another account: 422; a refused caller: 403; no such account or
//! bound object: 404; a bound object of another kind or account: 400; a
//! bound object's other uid: 409).

use std::sync::Arc;

use axum::body::Body;
use http::{header, HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};
use skiff_security::PeerInfo;

use super::status::RestError;
use super::{json_response, wire};
use crate::api::token_requests::{TokenRequestError, TokenRequestSpec};
use crate::api::ApiService;
use crate::security::service_account_key::SigningKeyError;
use crate::security::service_account_tokens::BoundObjectRef;
use skiff_objects::registry;
use skiff_objects::Kind;

/// The kind and version a TokenRequest is read and answered as.
const KIND: &str = "TokenRequest";
const API_VERSION: &str = "authentication.k8s.io/v1";
const GROUP: &str = "authentication.k8s.io";

/// A TokenRequest for one service account.
pub(super) struct TokenRequestCall<'a> {
    pub api: &'a Arc<ApiService>,
    pub peer: &'a PeerInfo,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub namespace: &'a str,
    /// The service account.
    pub name: &'a str,
}

/// A 422 for the TokenRequest `name` (kube-apiserver names none for a
/// problem of its spec) with one invalid field.
fn invalid(name: &str, field: &str, message: String) -> RestError {
    let mut e = RestError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{KIND}.{GROUP} {name:?} is invalid: {field}: {message}"),
    );
    e.details.name = name.to_owned();
    e.details.group = GROUP.to_owned();
    e.details.kind = KIND.to_owned();
    e.details.causes = vec![(field.to_owned(), message)];
    e
}

/// A string field of a JSON object; `""` when missing or null.
fn text<'v>(object: &'v Value, field: &str, path: &str) -> Result<&'v str, RestError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RestError::bad_request(format!(
            "{path}{field} must be a string, not {other}"
        ))),
    }
}

/// The request's `spec`, read from the body `request`.
fn read_spec(request: &Value) -> Result<TokenRequestSpec, RestError> {
    let spec = match request.get("spec") {
        None | Some(Value::Null) => return Ok(TokenRequestSpec::default()),
        Some(spec @ Value::Object(_)) => spec,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "spec must be an object, not {other}"
            )))
        }
    };
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| RestError::bad_request("spec.audiences must be a list of strings"))?,
        Some(_) => {
            return Err(RestError::bad_request(
                "spec.audiences must be a list of strings",
            ))
        }
    };
    let expiration_seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_i64().ok_or_else(|| {
            RestError::bad_request(format!(
                "spec.expirationSeconds must be an integer, not {value}"
            ))
        })?),
    };
    let bound_object = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(reference @ Value::Object(_)) => {
            let path = "spec.boundObjectRef.";
            Some(BoundObjectRef {
                kind: text(reference, "kind", path)?.to_owned(),
                api_version: text(reference, "apiVersion", path)?.to_owned(),
                name: text(reference, "name", path)?.to_owned(),
                uid: text(reference, "uid", path)?.to_owned(),
            })
        }
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "spec.boundObjectRef must be an object, not {other}"
            )))
        }
    };
    Ok(TokenRequestSpec {
        audiences,
        expiration_seconds,
        bound_object,
    })
}

/// Checks the body's `kind`, `apiVersion`, `metadata.name` and
/// `metadata.namespace` against the URL (each may be left out).
fn check_against_url(request: &Value, namespace: &str, name: &str) -> Result<(), RestError> {
    if !request.is_object() {
        return Err(RestError::bad_request(format!(
            "the request body must be a {KIND} object"
        )));
    }
    match text(request, "kind", "")? {
        "" | KIND => {}
        other => {
            return Err(RestError::bad_request(format!(
                "the kind {other:?} of the body is not {KIND}, which serviceaccounts/token takes"
            )))
        }
    }
    match text(request, "apiVersion", "")? {
        "" | API_VERSION => {}
        other => {
            return Err(RestError::bad_request(format!(
                "the apiVersion {other:?} of the body is not {API_VERSION}"
            )))
        }
    }
    let metadata = request.get("metadata").cloned().unwrap_or(Value::Null);
    let given = text(&metadata, "name", "metadata.")?;
    if !given.is_empty() && given != name {
        let message =
            format!("Invalid value: {given:?}: must match the service account name if specified");
        return Err(invalid(name, "metadata.name", message));
    }
    let given = text(&metadata, "namespace", "metadata.")?;
    if !given.is_empty() && given != namespace {
        let message = format!(
            "Invalid value: {given:?}: must match the service account namespace if specified"
        );
        return Err(invalid(name, "metadata.namespace", message));
    }
    Ok(())
}

/// The Status of a refusal of a TokenRequest for account `name`.
fn refusal(e: TokenRequestError, name: &str) -> RestError {
    let accounts = registry::info(Kind::ServiceAccount);
    match e {
        TokenRequestError::Forbidden(reason) => {
            let mut e = RestError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("serviceaccounts {name:?} is forbidden: {reason}"),
            );
            e.details.name = name.to_owned();
            e.details.kind = accounts.resource.to_owned();
            e
        }
        TokenRequestError::Invalid {
            field,
            value,
            message,
        } => invalid("", field, format!("Invalid value: {value}: {message}")),
        TokenRequestError::AccountNotFound { name } => RestError::not_found(accounts, &name),
        e @ TokenRequestError::BoundNotFound { .. } => {
            let mut refused = RestError::new(StatusCode::NOT_FOUND, "NotFound", e.to_string());
            if let TokenRequestError::BoundNotFound { resource, name } = e {
                refused.details.name = name;
                refused.details.kind = resource.to_owned();
            }
            refused
        }
        TokenRequestError::BadRequest(message) => RestError::bad_request(message),
        e @ TokenRequestError::UidConflict { .. } => {
            RestError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
        }
        TokenRequestError::Read(status) => RestError::from_grpc(&status, accounts, name),
        TokenRequestError::Key(e @ SigningKeyError::Missing) => RestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            e.to_string(),
        ),
        TokenRequestError::Key(e) => RestError::internal(e.to_string()),
    }
}

impl TokenRequestCall<'_> {
    /// Reads the TokenRequest `body`, asks for the token, and answers it.
    pub async fn serve(self, body: &[u8]) -> Result<Response<Body>, RestError> {
        if *self.method != Method::POST {
            return Err(RestError::method_not_allowed(
                self.method,
                "serviceaccounts/token",
            ));
        }
        let identity = self
            .peer
            .identity
            .as_ref()
            .ok_or_else(RestError::unauthorized)?;
        let request = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            let content_type = super::header_text(self.headers, header::CONTENT_TYPE);
            wire::parse_body(body, &content_type)?
        };
        check_against_url(&request, self.namespace, self.name)?;
        let spec = read_spec(&request)?;
        let issued = self
            .api
            .request_token(identity, self.namespace, self.name, spec)
            .await
            .map_err(|e| refusal(e, self.name))?;
        let mut answer_spec = Map::new();
        answer_spec.insert("audiences".into(), json!(issued.audiences));
        answer_spec.insert("expirationSeconds".into(), json!(issued.expiration_seconds));
        let bound = request["spec"]["boundObjectRef"].clone();
        if bound.is_object() {
            answer_spec.insert("boundObjectRef".into(), bound);
        }
        let answer = json!({
            "kind": KIND,
            "apiVersion": API_VERSION,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "creationTimestamp": skiff_objects::rfc3339(issued.issued_at),
            },
            "spec": answer_spec,
            "status": {
                "token": issued.token,
                "expirationTimestamp": skiff_objects::rfc3339(issued.expires_at),
            },
        });
        Ok(json_response(StatusCode::CREATED, &answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_with_what_it_leaves_out_left_to_the_defaults() {
        assert_eq!(read_spec(&json!({})).unwrap(), TokenRequestSpec::default());
        assert_eq!(
            read_spec(&json!({"spec": {"audiences": null}})).unwrap(),
            TokenRequestSpec::default()
        );
        let spec = read_spec(&json!({"spec": {
            "audiences": ["vault"],
            "expirationSeconds": 7200,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "u"},
        }}))
        .unwrap();
        assert_eq!(
            spec,
            TokenRequestSpec {
                audiences: vec!["vault".into()],
                expiration_seconds: Some(7200),
                bound_object: Some(BoundObjectRef {
                    kind: "Pod".into(),
                    api_version: "v1".into(),
                    name: "web-0".into(),
                    uid: "u".into(),
                }),
            }
        );
        // What the protobuf decoding keeps: zero values, empty strings.
        let spec = read_spec(&json!({"spec": {
            "audiences": [],
            "expirationSeconds": 0,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "", "name": "web-0", "uid": ""},
        }}))
        .unwrap();
        assert_eq!(
            spec.expiration_seconds,
            Some(0),
            "checked, and refused, later"
        );
        for bad in [
            json!({"spec": {"audiences": "vault"}}),
            json!({"spec": {"audiences": [1]}}),
            json!({"spec": {"expirationSeconds": "1h"}}),
            json!({"spec": {"boundObjectRef": "web-0"}}),
            json!({"spec": {"boundObjectRef": {"name": 3}}}),
            json!({"spec": []}),
        ] {
            let e = read_spec(&bad).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn a_body_naming_another_account_is_refused_as_kube_apiserver_refuses_it() {
        let ok = [
            json!({}),
            json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1"}),
            json!({"metadata": {"name": "builder", "namespace": "shop"}}),
            json!({"metadata": {"name": "", "namespace": ""}}),
        ];
        for body in ok {
            assert!(
                check_against_url(&body, "shop", "builder").is_ok(),
                "{body}"
            );
        }
        let other = json!({"metadata": {"name": "deployer"}});
        let e = check_against_url(&other, "shop", "builder").unwrap_err();
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"builder\" is invalid: metadata.name: \
             Invalid value: \"deployer\": must match the service account name if specified"
        );
        let elsewhere = json!({"metadata": {"namespace": "default"}});
        let e = check_against_url(&elsewhere, "shop", "builder").unwrap_err();
        assert_eq!(e.details.causes[0].0, "metadata.namespace");
        for bad in [
            json!({"kind": "Pod"}),
            json!({"apiVersion": "v1"}),
            json!([]),
        ] {
            let e = check_against_url(&bad, "shop", "builder").unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn refusals_are_the_statuses_kube_apiserver_answers() {
        let short = TokenRequestError::Invalid {
            field: "spec.expirationSeconds",
            value: 60,
            message: "may not specify a duration less than 10 minutes",
        };
        let e = refusal(short, "default");
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        // What kubectl create token --duration=1m prints after "error:
        // failed to create token: ".
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: \
             Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        assert_eq!(
            e.details.causes,
            [(
                "spec.expirationSeconds".to_owned(),
                "Invalid value: 60: may not specify a duration less than 10 minutes".to_owned()
            )]
        );
        let missing = TokenRequestError::AccountNotFound {
            name: "nobody".into(),
        };
        let e = refusal(missing, "nobody");
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                StatusCode::NOT_FOUND,
                r#"serviceaccounts "nobody" not found"#
            )
        );
        let forbidden = TokenRequestError::Forbidden(
            r#"User "system:node:n1" cannot create resource "serviceaccounts/token" in API group "" in the namespace "default""#.into(),
        );
        let e = refusal(forbidden, "x");
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            r#"serviceaccounts "x" is forbidden: User "system:node:n1" cannot create resource "serviceaccounts/token" in API group "" in the namespace "default""#
        );
        let gone = TokenRequestError::BoundNotFound {
            resource: "pods",
            name: "web-0".into(),
        };
        let e = refusal(gone, "x");
        assert_eq!(
            (e.code, e.message.as_str(), e.details.kind.as_str()),
            (StatusCode::NOT_FOUND, r#"pods "web-0" not found"#, "pods")
        );
        let replaced = TokenRequestError::UidConflict {
            kind: "Pod".into(),
            name: "web-0".into(),
            uid: "u".into(),
        };
        assert_eq!(refusal(replaced, "x").code, StatusCode::CONFLICT);
        let other = TokenRequestError::BadRequest("cannot bind".into());
        assert_eq!(refusal(other, "x").code, StatusCode::BAD_REQUEST);
        let no_key = TokenRequestError::Key(SigningKeyError::Missing);
        assert_eq!(refusal(no_key, "x").code, StatusCode::SERVICE_UNAVAILABLE);
    }
}
