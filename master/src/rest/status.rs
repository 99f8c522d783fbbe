//! Errors of the REST API as Kubernetes `Status` objects, with the reasons,
//! codes and messages kube-apiserver uses, so that kubectl prints its usual
//! lines (`Error from server (NotFound): pods "x" not found`, `The
//! Deployment "x" is invalid: spec.replicas: ...`).
//!
//! The API's gRPC answers (the REST API calls the same service, so the same
//! authorization and leader routing apply) are turned into `Status` here,
//! with the resource and name of the request for the wording.

use http::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

use skiff_objects::registry::KindInfo;

/// A REST failure: the HTTP code, Kubernetes' reason, a message, and the
/// details kubectl builds its messages from.
#[derive(Debug, Clone, PartialEq)]
pub struct RestError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Box<Details>,
}

/// What a `Status` says about the object it is about.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    /// `details.name`, `details.group`, `details.kind` (the resource).
    pub name: String,
    pub group: String,
    pub kind: String,
    /// `details.causes`: (field, message) of each invalid field.
    pub causes: Vec<(String, String)>,
    /// The causes' `reason`; `""` is `FieldValueInvalid`
    /// (`FieldManagerConflict` for an apply's conflicts).
    pub cause_reason: &'static str,
    /// `details.retryAfterSeconds`; 0: none.
    pub retry_after_seconds: u32,
}

impl RestError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> RestError {
        RestError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found_path(path: &str) -> RestError {
        RestError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, what: &str) -> RestError {
        RestError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource: {method} {what}"
            ),
        )
    }

    pub fn unsupported_media_type(content_type: &str, allowed: &str) -> RestError {
        RestError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type:?}; accepted media types include: {allowed}"),
        )
    }

    pub fn too_large(limit: usize) -> RestError {
        RestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// No credentials, or none that hold: 401 `Unauthorized`, whatever was
    /// wrong (a refused token's reason is logged, not told).
    pub fn unauthorized() -> RestError {
        RestError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized: a client certificate signed by the cluster CA (admin.conf holds one) or a valid service account token is required",
        )
    }

    /// A refusal of a request on a path that names no object
    /// (`/metrics`): `forbidden: <message>`, about no resource, as
    /// apimachinery's `NewForbidden` words it for no resource.
    pub fn forbidden_path(message: &str) -> RestError {
        RestError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("forbidden: {message}"),
        )
    }

    pub fn internal(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// A 422 for `kind`'s object `name`, with one cause per field; a field
    /// of the stored version is named as `info`'s version names it (an
    /// `autoscaling/v1` autoscaler's extra metrics by their annotation).
    pub fn invalid(info: &KindInfo, name: &str, causes: Vec<(String, String)>) -> RestError {
        let causes: Vec<(String, String)> = causes
            .iter()
            .map(|(field, message)| info.conversion.served_cause(field, message))
            .collect();
        let detail = causes
            .iter()
            .map(|(field, message)| {
                if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = RestError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{} {name:?} is invalid: {detail}", info.qualified_kind()),
        );
        e.details.name = name.to_owned();
        e.details.group = info.group.to_owned();
        e.details.kind = info.name.to_owned();
        e.details.causes = causes;
        e
    }

    /// A list's options that break kube-apiserver's rules
    /// (`ValidateListOptions`): `causes` as (field, "Reason: why").
    pub fn invalid_list_options(causes: Vec<(String, String)>) -> RestError {
        let each: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let detail = match each.as_slice() {
            [one] => one.clone(),
            _ => format!("[{}]", each.join(", ")),
        };
        let mut e = RestError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {detail}"),
        );
        e.details.group = "meta.k8s.io".to_owned();
        e.details.kind = "ListOptions".to_owned();
        e.details.causes = causes;
        e
    }

    /// The object `name` of `info` does not exist.
    pub fn not_found(info: &KindInfo, name: &str) -> RestError {
        let mut e = RestError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {name:?} not found", info.qualified_resource()),
        );
        e.for_object(info, name);
        e
    }

    fn for_object(&mut self, info: &KindInfo, name: &str) {
        self.details.name = name.to_owned();
        self.details.group = info.group.to_owned();
        self.details.kind = info.resource.to_owned();
    }

    /// The API's gRPC answer `status` to a request on `info`'s object
    /// `name` (empty for collections).
    pub fn from_grpc(status: &tonic::Status, info: &KindInfo, name: &str) -> RestError {
        let message = status.message();
        let resource = info.qualified_resource();
        let mut e = match status.code() {
            // The object's namespace is missing, not the object.
            Code::NotFound if message.starts_with("namespace ") => RestError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                message.replacen("namespace ", "namespaces ", 1),
            ),
            Code::NotFound => RestError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} {name:?} not found"),
            ),
            Code::AlreadyExists => RestError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} {name:?} already exists"),
            ),
            Code::Aborted => RestError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again"),
            ),
            Code::InvalidArgument => {
                return RestError::invalid(info, name, causes_of(message));
            }
            // As apimachinery's `NewForbidden` words it: the object's
            // name only when the request names one.
            Code::PermissionDenied if name.is_empty() => RestError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{resource} is forbidden: {message}"),
            ),
            Code::PermissionDenied => RestError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{resource} {name:?} is forbidden: {message}"),
            ),
            Code::Unauthenticated => RestError::unauthorized(),
            Code::OutOfRange => RestError::new(StatusCode::GONE, "Expired", message),
            Code::Unavailable => {
                RestError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
            }
            // A list at a revision this master has not reached, in
            // kube-apiserver's form (`NewTooLargeResourceVersionError`).
            Code::DeadlineExceeded if message.starts_with("Too large resource version") => {
                let mut e = RestError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!("Timeout: {message}"),
                );
                e.details.cause_reason = "ResourceVersionTooLarge";
                e.details.causes = vec![(String::new(), "Too large resource version".to_owned())];
                e.details.retry_after_seconds = 1;
                return e;
            }
            Code::DeadlineExceeded => {
                RestError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
            }
            Code::ResourceExhausted => {
                RestError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
            }
            Code::FailedPrecondition => RestError::new(StatusCode::CONFLICT, "Conflict", message),
            _ => RestError::internal(message),
        };
        e.for_object(info, name);
        e
    }

    /// The `Status` object.
    pub fn to_json(&self) -> Value {
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if !d.name.is_empty() {
            details.insert("name".into(), json!(d.name));
        }
        if !d.group.is_empty() {
            details.insert("group".into(), json!(d.group));
        }
        if !d.kind.is_empty() {
            details.insert("kind".into(), json!(d.kind));
        }
        if !d.causes.is_empty() {
            let reason = match d.cause_reason {
                "" => "FieldValueInvalid",
                reason => reason,
            };
            let causes = d
                .causes
                .iter()
                .map(|(field, message)| {
                    let mut cause = json!({"reason": reason, "message": message});
                    if !field.is_empty() {
                        cause["field"] = json!(field);
                    }
                    cause
                })
                .collect::<Vec<_>>();
            details.insert("causes".into(), Value::Array(causes));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if d.retry_after_seconds > 0 {
            details.insert("retryAfterSeconds".into(), json!(d.retry_after_seconds));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The field problems in a validation message (`Kind "name" is invalid:
/// a.b: reason; c: reason`), or the whole message as one cause.
fn causes_of(message: &str) -> Vec<(String, String)> {
    let message = message.strip_prefix("invalid request: ").unwrap_or(message);
    let Some((_, list)) = message.split_once(" is invalid: ") else {
        // One refusal about one field (an allocator's: `spec.clusterIP:
        // ...`, `spec.ports[0].nodePort: ...`): that field is the cause.
        if let Some((field, reason)) = message.split_once(": ") {
            let is_path = ["spec.", "metadata.", "status."]
                .iter()
                .any(|root| field.starts_with(root))
                && !field.contains(' ');
            if is_path {
                return vec![(field.to_owned(), reason.to_owned())];
            }
        }
        return vec![(String::new(), message.to_owned())];
    };
    list.split("; ")
        .map(|part| match part.split_once(": ") {
            Some((field, reason)) if !field.contains(' ') => (field.to_owned(), reason.to_owned()),
            _ => (String::new(), part.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::registry::info;
    use skiff_objects::Kind;

    #[test]
    fn grpc_answers_become_the_statuses_kubectl_words_its_messages_from() {
        let pods = info(Kind::Pod);
        let e = RestError::from_grpc(&tonic::Status::not_found("Pod default/x"), pods, "x");
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "pods \"x\" not found");
        let v = e.to_json();
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(v["details"]["kind"], "pods");

        let deployments = info(Kind::Deployment);
        let e = RestError::from_grpc(&tonic::Status::aborted("stale"), deployments, "web");
        assert_eq!(e.code, StatusCode::CONFLICT);
        assert_eq!(e.reason, "Conflict");
        assert!(
            e.message.contains("deployments.apps \"web\""),
            "{}",
            e.message
        );

        let e = RestError::from_grpc(
            &tonic::Status::invalid_argument(
                "Deployment \"web\" is invalid: spec.replicas: must be at least 0; spec.selector: required",
            ),
            deployments,
            "web",
        );
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.details.causes,
            vec![
                ("spec.replicas".to_owned(), "must be at least 0".to_owned()),
                ("spec.selector".to_owned(), "required".to_owned())
            ]
        );
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: spec.replicas: must be at least 0, spec.selector: required"
        );
        assert_eq!(
            e.to_json()["details"]["causes"][1]["field"],
            "spec.selector"
        );
    }

    #[test]
    fn refusals_are_worded_as_apimachinerys_new_forbidden() {
        // A list: about the collection, naming no object.
        let sentence = r#"User "system:serviceaccount:ns:sa" cannot list resource "pods" in API group "" in the namespace "ns""#;
        let refused = tonic::Status::permission_denied(sentence);
        let e = RestError::from_grpc(&refused, info(Kind::Pod), "");
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(e.message, format!("pods is forbidden: {sentence}"));
        let v = e.to_json();
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(v["details"], serde_json::json!({"kind": "pods"}));
        // One object, of a group.
        let sentence = r#"User "system:serviceaccount:ns:sa" cannot get resource "deployments/scale" in API group "apps" in the namespace "ns""#;
        let refused = tonic::Status::permission_denied(sentence);
        let e = RestError::from_grpc(&refused, info(Kind::Deployment), "web");
        assert_eq!(
            e.message,
            format!(r#"deployments.apps "web" is forbidden: {sentence}"#)
        );
        assert_eq!(
            e.to_json()["details"],
            serde_json::json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        // A path that names no object.
        let e = RestError::forbidden_path(r#"User "X" cannot get path "/metrics""#);
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            r#"forbidden: User "X" cannot get path "/metrics""#
        );
    }

    #[test]
    fn an_allocators_refusal_names_its_field() {
        let e = RestError::from_grpc(
            &tonic::Status::invalid_argument(
                "invalid request: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
            ),
            info(Kind::Service),
            "web",
        );
        assert_eq!(e.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.details.causes,
            vec![(
                "spec.ports[0].nodePort".to_owned(),
                "Invalid value: 30080: provided port is already allocated".to_owned()
            )]
        );
        assert_eq!(
            e.message,
            "Service \"web\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
    }

    #[test]
    fn an_invalid_request_without_field_paths_is_one_cause() {
        let e = RestError::from_grpc(
            &tonic::Status::invalid_argument("invalid request: `object` is required"),
            info(Kind::Pod),
            "",
        );
        assert_eq!(
            e.details.causes,
            vec![(String::new(), "`object` is required".to_owned())]
        );
    }
}
