//! TokenRequest (`POST serviceaccounts/NAME/token`): a token of a service
//! account, signed by the cluster ([`TokenAuthority`]), as kube-apiserver's
//! TokenREST makes one: authorized as `create` on `serviceaccounts/token`
//! (a node only for the accounts of pods bound to it, each token bound to
//! such a pod: `authz::may_request_token`), for the account as the leader
//! has it (a linearizable read: here after a read index when this master
//! leads, else asked of the leader), for the API's audiences unless others
//! are asked, for an hour unless another lifetime (at least ten minutes,
//! at most 2^32 seconds, as kube-apiserver validates it) is asked, and
//! bound, when asked, to a Pod of the account (and so to the pod's node)
//! or a Secret, which must exist (with the uid given, if one is). Nothing
//! is stored: the REST API answers the token (`rest/token_request.rs`), and
//! so does the gRPC `Api.RequestToken` agents call ([`ApiService::token_over_grpc`]).
//! Like kube-apiserver without `--service-account-max-token-expiration`,
//! no shorter maximum is imposed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skiff_proto::api::{GetRequest, Object, RequestTokenRequest, RequestTokenResponse};
use skiff_security::Identity;
use tonic::{Code, Request, Status};

use super::authz::{self, Access, Verb};
use super::{api_client, ApiService, READ_CONFIRM_WITHIN};
use crate::security::service_account_key::SigningKeyError;
use crate::security::service_account_tokens::{
    Binding, BoundObjectRef, Grant, ObjectRef, TokenAuthority,
};
use skiff_objects::{pods, Kind, ObjectExt};

/// A token's lifetime when the request asks for none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a request may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// What a TokenRequest asks for (its `spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequestSpec {
    /// Empty: the API's own audiences.
    pub audiences: Vec<String>,
    /// `None`: [`DEFAULT_EXPIRATION_SECONDS`].
    pub expiration_seconds: Option<i64>,
    pub bound_object: Option<BoundObjectRef>,
}

/// A token issued, and what it was issued with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// Why no token was issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenRequestError {
    /// Refused by the rules, in kube-apiserver's words (`User "X" cannot
    /// create resource "serviceaccounts/token" ...`), or beyond them as
    /// NodeRestriction refuses a node (`<identity> may not <what>`).
    #[error("{0}")]
    Forbidden(String),
    /// A field of the request, with kube-apiserver's wording.
    #[error("{field}: Invalid value: {value}: {message}")]
    Invalid {
        field: &'static str,
        value: i64,
        message: &'static str,
    },
    #[error("serviceaccounts {name:?} not found")]
    AccountNotFound { name: String },
    #[error("{resource} {name:?} not found")]
    BoundNotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object \
         reference ({uid}) does not match the UID in record. The object might have been \
         deleted and then recreated"
    )]
    UidConflict {
        kind: String,
        name: String,
        uid: String,
    },
    /// What the token names could not be read as the leader has it.
    #[error("reading what the token names: {}", .0.message())]
    Read(tonic::Status),
    #[error(transparent)]
    Key(#[from] SigningKeyError),
}

impl TokenRequestError {
    /// The gRPC status of this refusal: the codes the REST statuses map to
    /// (403, 422/400, 404, 409, and a missing signing key: 503).
    pub fn into_status(self) -> Status {
        let message = self.to_string();
        match self {
            TokenRequestError::Forbidden(_) => Status::permission_denied(message),
            TokenRequestError::Invalid { .. } | TokenRequestError::BadRequest(_) => {
                Status::invalid_argument(message)
            }
            TokenRequestError::AccountNotFound { .. } | TokenRequestError::BoundNotFound { .. } => {
                Status::not_found(message)
            }
            TokenRequestError::UidConflict { .. } => Status::aborted(message),
            TokenRequestError::Read(status) => status,
            TokenRequestError::Key(SigningKeyError::Missing) => Status::unavailable(message),
            TokenRequestError::Key(_) => Status::internal(message),
        }
    }
}

/// Checks a requested lifetime as kube-apiserver's `ValidateTokenRequest`.
pub fn check_expiration(seconds: i64) -> Result<(), TokenRequestError> {
    let invalid = |message| TokenRequestError::Invalid {
        field: "spec.expirationSeconds",
        value: seconds,
        message,
    };
    if seconds < MIN_EXPIRATION_SECONDS {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    Ok(())
}

/// The kind of object a `boundObjectRef` names, and its resource (for
/// NotFound): a Pod or a Secret (of the core group, whatever version).
pub fn bound_kind(reference: &BoundObjectRef) -> Result<(Kind, &'static str), TokenRequestError> {
    let (group, version) = match reference.api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", reference.api_version.as_str()),
    };
    match (group, reference.kind.as_str()) {
        ("", "Pod") => Ok((Kind::Pod, "pods")),
        ("", "Secret") => Ok((Kind::Secret, "secrets")),
        (group, kind) => Err(TokenRequestError::BadRequest(format!(
            "cannot bind token to object of type {group}/{version}, Kind={kind}"
        ))),
    }
}

/// What a token of service account `account` is bound to: `object`, the
/// stored object `reference` names (of [`bound_kind`]), on the node of
/// uid `node_uid` when it is a pod bound to a node (`None`: no such Node).
pub fn binding_of(
    account: &str,
    reference: &BoundObjectRef,
    object: &Object,
    node_uid: Option<String>,
) -> Result<Binding, TokenRequestError> {
    let stored = ObjectRef {
        name: reference.name.clone(),
        uid: object.meta().uid.clone(),
    };
    if !reference.uid.is_empty() && reference.uid != stored.uid {
        return Err(TokenRequestError::UidConflict {
            kind: reference.kind.clone(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        });
    }
    let Some(pod) = pods::read(object) else {
        return Ok(Binding::Secret(stored));
    };
    if pod.spec.is_none() {
        return Err(TokenRequestError::BadRequest(format!(
            "cannot bind token to pod {:?}: its spec cannot be read",
            reference.name
        )));
    }
    if pods::account_of(&pod) != account {
        return Err(TokenRequestError::BadRequest(format!(
            "cannot bind token for serviceaccount {account:?} to pod running with \
             different serviceaccount name."
        )));
    }
    // The node's name even when its Node is gone, as kube-apiserver does.
    let node_name = pods::node_name(&pod);
    let node = (!node_name.is_empty()).then(|| ObjectRef {
        name: node_name.to_owned(),
        uid: node_uid.unwrap_or_default(),
    });
    Ok(Binding::Pod { pod: stored, node })
}

/// The name of the node a stored pod is bound to, if any.
fn node_of(object: &Object) -> Option<String> {
    Some(pods::bound_node(object)).filter(|n| !n.is_empty())
}

/// Whole seconds since the Unix epoch.
fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ApiService {
    /// The cluster's service account token authority: what the REST API
    /// authenticates bearer tokens and serves the issuer's documents with.
    pub fn service_account_tokens(&self) -> &TokenAuthority {
        &self.tokens
    }

    /// `kind` `namespace/name` as the leader has it (`None`: there is
    /// none): a linearizable get, served here when this master leads,
    /// relayed to the leader (as this master) otherwise.
    async fn read_as_leader_has_it(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Object>, TokenRequestError> {
        let request = Request::new(GetRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            serializable: false,
        });
        let answer = self
            .router
            .on_leader(
                request,
                |r| self.get_local(r, READ_CONFIRM_WITHIN),
                |ch, r| async move { api_client(ch).get(r).await },
            )
            .await;
        match answer {
            Ok(object) => Ok(Some(object.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(TokenRequestError::Read(status)),
        }
    }

    /// `Api.RequestToken`: [`ApiService::request_token`] for a gRPC request.
    pub async fn token_over_grpc(
        &self,
        identity: &Identity,
        request: RequestTokenRequest,
    ) -> Result<RequestTokenResponse, Status> {
        let spec = TokenRequestSpec {
            audiences: request.audiences,
            expiration_seconds: request.expiration_seconds,
            bound_object: request.bound_object.map(|b| BoundObjectRef {
                kind: b.kind,
                api_version: b.api_version,
                name: b.name,
                uid: b.uid,
            }),
        };
        let issued = ApiService::request_token(
            self,
            identity,
            &request.namespace,
            &request.service_account,
            spec,
        )
        .await
        .map_err(TokenRequestError::into_status)?;
        Ok(RequestTokenResponse {
            token: issued.token,
            audiences: issued.audiences,
            expiration_seconds: issued.expiration_seconds,
            issued_at_unix: unix_seconds(issued.issued_at),
            expires_at_unix: unix_seconds(issued.expires_at),
        })
    }

    /// A token of service account `namespace/name` for `identity`, as the
    /// module's description says.
    pub async fn request_token(
        &self,
        identity: &Identity,
        namespace: &str,
        name: &str,
        spec: TokenRequestSpec,
    ) -> Result<IssuedToken, TokenRequestError> {
        let store = &self.cluster.store;
        let access = Access::new(Verb::Create, Kind::ServiceAccount, namespace, Some(name))
            .with_subresource("token");
        if !authz::decide(store, identity, &access).allowed {
            tracing::warn!(%identity, action = %access.describe(), "permission denied");
            let refusal = authz::refusal_message(store, identity, &access);
            return Err(TokenRequestError::Forbidden(refusal));
        }
        authz::may_request_token(store, identity, namespace, name, spec.bound_object.as_ref())
            .map_err(|refused| TokenRequestError::Forbidden(refused.message().to_owned()))?;
        let account = self
            .read_as_leader_has_it(Kind::ServiceAccount, namespace, name)
            .await?
            .ok_or_else(|| TokenRequestError::AccountNotFound {
                name: name.to_owned(),
            })?;
        let audiences = if spec.audiences.is_empty() {
            self.tokens.audiences().to_vec()
        } else {
            spec.audiences
        };
        let expiration_seconds = spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        check_expiration(expiration_seconds)?;
        let binding = match &spec.bound_object {
            None => Binding::Unbound,
            Some(reference) => {
                let (kind, resource) = bound_kind(reference)?;
                let object = self
                    .read_as_leader_has_it(kind, namespace, &reference.name)
                    .await?
                    .ok_or_else(|| TokenRequestError::BoundNotFound {
                        resource,
                        name: reference.name.clone(),
                    })?;
                // The node's uid from this replica, as kube-apiserver reads
                // it from its cache.
                let node_uid = node_of(&object).and_then(|node| {
                    let node = store.cache().get(Kind::Node, "", &node)?;
                    Some(node.meta().uid.clone())
                });
                binding_of(name, reference, &object, node_uid)?
            }
        };
        let grant = Grant {
            namespace: namespace.to_owned(),
            account: ObjectRef {
                name: name.to_owned(),
                uid: account.meta().uid.clone(),
            },
            audiences: audiences.clone(),
            expiration_seconds,
            binding,
        };
        let bound = format!("{:?}", grant.binding);
        let (token, claims) = self.tokens.issue(grant, unix_seconds(SystemTime::now()))?;
        tracing::info!(
            %identity,
            account = %format!("{namespace}/{name}"),
            ?audiences,
            expiration_seconds,
            %bound,
            jti = %claims.jti,
            "issued a service account token"
        );
        let at = |seconds: i64| UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
        Ok(IssuedToken {
            token,
            audiences,
            expiration_seconds,
            issued_at: at(claims.iat),
            expires_at: at(claims.exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use skiff_proto::v1;

    use super::*;
    use skiff_objects::IntoObject;

    #[test]
    fn refusals_map_to_the_grpc_codes_of_their_rest_statuses() {
        let code = |e: TokenRequestError| e.into_status().code();
        assert_eq!(
            code(TokenRequestError::Forbidden("no".into())),
            Code::PermissionDenied
        );
        assert_eq!(
            code(check_expiration(60).unwrap_err()),
            Code::InvalidArgument
        );
        assert_eq!(
            code(TokenRequestError::AccountNotFound { name: "a".into() }),
            Code::NotFound
        );
        assert_eq!(
            code(TokenRequestError::Key(SigningKeyError::Missing)),
            Code::Unavailable
        );
        let forbidden = TokenRequestError::Forbidden("node \"n1\" may not".into()).into_status();
        assert_eq!(forbidden.message(), "node \"n1\" may not");
    }

    #[test]
    fn lifetimes_are_checked_as_kube_apiserver_checks_them() {
        assert!(check_expiration(600).is_ok());
        assert!(check_expiration(3600).is_ok());
        assert!(check_expiration(1 << 32).is_ok());
        let short = check_expiration(60).unwrap_err();
        assert_eq!(
            short.to_string(),
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        let long = check_expiration((1 << 32) + 1).unwrap_err();
        assert_eq!(
            long.to_string(),
            "spec.expirationSeconds: Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"
        );
        assert!(check_expiration(0).is_err());
    }

    fn reference(kind: &str, api_version: &str, name: &str, uid: &str) -> BoundObjectRef {
        BoundObjectRef {
            kind: kind.into(),
            api_version: api_version.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// Pod `name` (uid `uid-<name>`) bound to `node`, running as `account`.
    fn pod(name: &str, node: &str, account: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                service_account_name: account.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn secret(name: &str) -> Object {
        v1::Secret {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "shop".into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn a_token_is_bound_to_a_pod_and_its_node_or_to_a_secret_of_the_core_group() {
        assert_eq!(
            bound_kind(&reference("Pod", "v1", "web-0", "")).unwrap(),
            (Kind::Pod, "pods")
        );
        assert_eq!(
            bound_kind(&reference("Secret", "", "ci", "")).unwrap(),
            (Kind::Secret, "secrets")
        );
        let web = pod("web-0", "pi-1", "builder");
        let bound = binding_of(
            "builder",
            &reference("Pod", "v1", "web-0", ""),
            &web,
            Some("uid-pi-1".into()),
        );
        assert_eq!(
            bound.unwrap(),
            Binding::Pod {
                pod: ObjectRef {
                    name: "web-0".into(),
                    uid: "uid-web-0".into()
                },
                node: Some(ObjectRef {
                    name: "pi-1".into(),
                    uid: "uid-pi-1".into()
                }),
            }
        );
        // A Node that is gone: its name alone. An unbound pod: no node. An
        // account named by none: `default`.
        let gone = binding_of("builder", &reference("Pod", "v1", "web-0", ""), &web, None);
        assert!(matches!(
            gone.unwrap(),
            Binding::Pod { node: Some(ObjectRef { uid, .. }), .. } if uid.is_empty()
        ));
        let loose = pod("loose", "", "");
        let reference_loose = reference("Pod", "v1", "loose", "uid-loose");
        let loose = binding_of("default", &reference_loose, &loose, None);
        assert!(matches!(loose.unwrap(), Binding::Pod { node: None, .. }));
        let ci = binding_of(
            "builder",
            &reference("Secret", "v1", "ci", "uid-ci"),
            &secret("ci"),
            None,
        );
        assert_eq!(
            ci.unwrap(),
            Binding::Secret(ObjectRef {
                name: "ci".into(),
                uid: "uid-ci".into()
            })
        );
    }

    #[test]
    fn a_binding_to_what_is_not_the_accounts_is_refused_in_kube_apiserver_s_words() {
        let web = pod("web-0", "pi-1", "builder");
        let refused = |account: &str, r: BoundObjectRef| {
            binding_of(account, &r, &web, None).unwrap_err().to_string()
        };
        assert_eq!(
            refused("default", reference("Pod", "v1", "web-0", "")),
            r#"cannot bind token for serviceaccount "default" to pod running with different serviceaccount name."#
        );
        assert_eq!(
            refused("builder", reference("Pod", "v1", "web-0", "uid-old")),
            "Operation cannot be fulfilled on Pod \"web-0\": the UID in the bound object \
             reference (uid-old) does not match the UID in record. The object might have been \
             deleted and then recreated"
        );
        let kind = |r: BoundObjectRef| bound_kind(&r).unwrap_err().to_string();
        assert_eq!(
            kind(reference("Deployment", "apps/v1", "web", "")),
            "cannot bind token to object of type apps/v1, Kind=Deployment"
        );
        assert_eq!(
            kind(reference("Node", "v1", "pi-1", "")),
            "cannot bind token to object of type /v1, Kind=Node"
        );
        assert_eq!(
            kind(reference("Pod", "example.com/v1", "web-0", "")),
            "cannot bind token to object of type example.com/v1, Kind=Pod"
        );
    }
}
