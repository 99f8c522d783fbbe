//! `GET .../pods/NAME/log`, what `kubectl logs [-f]` reads: the container
//! log as `text/plain`, streamed chunk by chunk as the API service's
//! `PodLogs` call relays it from the pod's node agent. The request is
//! authorized as kube-apiserver authorizes it, as `get` of `pods/log`
//! alone ([`log_access`], by `super::resources` before it comes here): a
//! caller need not read the pod, whose read and the log's relay are then
//! this master's. Query parameters: `container` (the pod's only
//! container when not given; kube-apiserver's `400`s otherwise), `follow`,
//! `tailLines`, `previous`, `limitBytes` (the answer ends after that many
//! bytes). The agent's log files hold what the container wrote and no
//! times, so `timestamps`, `sinceSeconds` and `sinceTime` are accepted and
//! answered with a `Warning` that they are not acted on yet.

use std::io;

use axum::body::Body;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use skiff_objects::pods::{self, Pod};
use skiff_objects::typed::api::core::v1::{Container, PodSpec};
use skiff_proto::api::api_server::Api;
use skiff_proto::api::{GetRequest, LogChunk, PodLogsRequest};
use skiff_security::PeerInfo;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::status::RestError;
use super::{add_warnings, as_caller, Query};
use crate::api::authz::{Access, Verb};
use crate::api::ApiService;
use skiff_objects::registry::info;
use skiff_objects::Kind;

/// Chunks buffered for a slow client before the relay waits for it.
const RELAYED_CHUNKS: usize = 16;

/// Said when `timestamps=true` is asked for.
const TIMESTAMPS_NOT_SUPPORTED: &str = "timestamps is not supported yet: skiff's agent keeps log \
     lines without their times, so they are sent as the container wrote them";
/// Said when `sinceSeconds` or `sinceTime` is given.
const SINCE_NOT_SUPPORTED: &str = "sinceSeconds and sinceTime are not supported yet: skiff's \
     agent keeps log lines without their times, so the whole log is sent";

/// What a `pods/log` request asks for, from its query parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct LogQuery {
    /// `container`; empty picks the pod's only container.
    pub container: String,
    pub follow: bool,
    /// `tailLines`: only the last lines.
    pub tail_lines: Option<i64>,
    pub previous: bool,
    /// `limitBytes`: the answer ends after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Parameters accepted but not acted on, said in `Warning` headers.
    pub warnings: Vec<String>,
}

impl LogQuery {
    /// Reads the parameters; a malformed one is a `400` naming it.
    pub(super) fn parse(query: &Query) -> Result<LogQuery, RestError> {
        let since_seconds = positive(query, "sinceSeconds")?;
        let since_time = given(query, "sinceTime");
        if let Some(time) = since_time.filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_err()) {
            return Err(RestError::bad_request(format!(
                "sinceTime {time:?} is not an RFC 3339 time"
            )));
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(RestError::bad_request(
                "at most one of sinceTime or sinceSeconds may be given",
            ));
        }
        let mut warnings = Vec::new();
        if flag(query, "timestamps")? {
            warnings.push(TIMESTAMPS_NOT_SUPPORTED.to_owned());
        }
        if since_seconds.is_some() || since_time.is_some() {
            warnings.push(SINCE_NOT_SUPPORTED.to_owned());
        }
        Ok(LogQuery {
            container: given(query, "container").unwrap_or_default().to_owned(),
            follow: flag(query, "follow")?,
            tail_lines: non_negative(query, "tailLines")?,
            previous: flag(query, "previous")?,
            limit_bytes: positive(query, "limitBytes")?,
            warnings,
        })
    }
}

/// A parameter's value, when given and not empty.
fn given<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    query
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A boolean parameter, in the spellings Go's `strconv.ParseBool` reads
/// (kube-apiserver's parser).
fn flag(query: &Query, name: &str) -> Result<bool, RestError> {
    match given(query, name) {
        None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some(other) => Err(RestError::bad_request(format!(
            "{name} {other:?} is neither true nor false"
        ))),
    }
}

/// An integer parameter that must be 0 or more.
fn non_negative(query: &Query, name: &str) -> Result<Option<i64>, RestError> {
    given(query, name)
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                RestError::bad_request(format!("{name} {v:?} is not a non-negative integer"))
            })
        })
        .transpose()
}

/// An integer parameter that must be 1 or more.
fn positive(query: &Query, name: &str) -> Result<Option<u64>, RestError> {
    given(query, name)
        .map(|v| {
            v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                RestError::bad_request(format!("{name} {v:?} is not a positive integer"))
            })
        })
        .transpose()
}

/// What a log request on `pods/NAME/log` is authorized as: `get` of the
/// pod's `log` subresource, and nothing else (kube-apiserver's request
/// info for a GET of a subresource).
pub(super) fn log_access<'a>(namespace: &'a str, name: &'a str) -> Access<'a> {
    Access::new(Verb::Get, Kind::Pod, namespace, Some(name)).with_subresource("log")
}

/// Which pod's log is read, once the request is authorized.
pub(super) struct LogRequest<'a> {
    pub api: &'a ApiService,
    /// Whom the pod's read and the log's relay are made as: this master,
    /// the request authorized as [`log_access`] already.
    pub peer: &'a PeerInfo,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Ends a followed log when the master shuts down.
    pub shutdown: CancellationToken,
}

/// Answers the log `query` asks for, streamed.
pub(super) async fn serve(
    request: LogRequest<'_>,
    query: LogQuery,
) -> Result<Response<Body>, RestError> {
    let pods = info(Kind::Pod);
    let object = request
        .api
        .get(as_caller(
            request.peer,
            GetRequest {
                kind: pods.kind.name().to_owned(),
                namespace: request.namespace.to_owned(),
                name: request.name.to_owned(),
                serializable: false,
            },
        ))
        .await
        .map_err(|s| RestError::from_grpc(&s, pods, request.name))?
        .into_inner();
    let Some(pod) = pods::read(&object) else {
        return Err(RestError::internal(format!(
            "the API answered a read of pod {} with another kind",
            request.name
        )));
    };
    let container = choose_container(&pod, request.name, &query.container)?;
    let chunks = request
        .api
        .pod_logs(as_caller(
            request.peer,
            PodLogsRequest {
                namespace: request.namespace.to_owned(),
                name: request.name.to_owned(),
                container,
                follow: query.follow,
                tail_lines: query.tail_lines,
                previous: query.previous,
            },
        ))
        .await
        .map_err(|s| log_error(&s, request.name))?
        .into_inner();
    let body = relay(chunks, query.limit_bytes, request.shutdown);
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_default();
    add_warnings(&mut response, &query.warnings);
    Ok(response)
}

/// The container whose log is read: the one asked for, or the pod's only
/// container; otherwise kube-apiserver's refusals, word for word.
pub(super) fn choose_container(pod: &Pod, name: &str, asked: &str) -> Result<String, RestError> {
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if !asked.is_empty() {
        let known = spec
            .containers
            .iter()
            .chain(init_containers)
            .any(|c| c.name == asked);
        return if known {
            Ok(asked.to_owned())
        } else {
            Err(RestError::bad_request(format!(
                "container {asked} is not valid for pod {name}"
            )))
        };
    }
    match spec.containers.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(RestError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        several => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names_of(several)
            );
            if !init_containers.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    names_of(init_containers)
                ));
            }
            Err(RestError::bad_request(message))
        }
    }
}

/// The containers' names, space-separated (as Go prints a `[]string`).
fn names_of(containers: &[Container]) -> String {
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The API's refusal of a log request as a `Status`: the pod gone is a
/// 404; a log that is not there (a container not started yet, no previous
/// run, a pod not on a node yet) is a 400 with the agent's or master's
/// words, as kube-apiserver answers "container is waiting to start".
fn log_error(status: &Status, name: &str) -> RestError {
    match status.code() {
        Code::NotFound if status.message().ends_with(" not found") => {
            RestError::from_grpc(status, info(Kind::Pod), name)
        }
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            RestError::bad_request(status.message())
        }
        _ => RestError::from_grpc(status, info(Kind::Pod), name),
    }
}

/// The log chunks as a body, cut after `limit` bytes; it ends when the log
/// does (at once unless following), when the client goes, or when the
/// master shuts down.
fn relay(
    mut chunks: ReceiverStream<Result<LogChunk, Status>>,
    limit: Option<u64>,
    shutdown: CancellationToken,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(RELAYED_CHUNKS);
    tokio::spawn(async move {
        let mut left = limit;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                next = chunks.next() => next,
            };
            let data = match next {
                None => return,
                Some(Ok(chunk)) => cut(Bytes::from(chunk.data), &mut left),
                Some(Err(status)) => {
                    // The answer has begun; breaking the body off is how
                    // the client learns that the rest is missing.
                    let message = status.message().to_owned();
                    let _ = tx.send(Err(io::Error::other(message))).await;
                    return;
                }
            };
            if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                return;
            }
            if left == Some(0) {
                return;
            }
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

/// `data`, shortened to what `left` still allows, which it counts down.
fn cut(mut data: Bytes, left: &mut Option<u64>) -> Bytes {
    if let Some(left) = left {
        let keep = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
        data.truncate(keep);
        *left -= keep as u64;
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &str)]) -> RestError {
        match LogQuery::parse(&query(pairs)) {
            Ok(parsed) => panic!("{pairs:?} was accepted as {parsed:?}"),
            Err(e) => e,
        }
    }

    fn pod(containers: &[&str], init_containers: &[&str]) -> Pod {
        let named = |names: &[&str]| -> Vec<Container> {
            names
                .iter()
                .map(|n| Container {
                    name: (*n).to_owned(),
                    ..Default::default()
                })
                .collect()
        };
        Pod {
            spec: Some(PodSpec {
                containers: named(containers),
                init_containers: Some(named(init_containers)).filter(|c| !c.is_empty()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_log_is_authorized_as_a_get_of_pods_log_alone() {
        let access = log_access("ns", "web");
        assert_eq!(access.verb, Verb::Get);
        assert_eq!(access.kind, Kind::Pod);
        assert_eq!((access.namespace, access.name), ("ns", Some("web")));
        // The log, not the pod: an account allowed `get pods/log` alone
        // may read it, one allowed `get pods` alone may not.
        assert_eq!(access.subresource, "log");
        assert_ne!(access, Access::new(Verb::Get, Kind::Pod, "ns", Some("web")));
    }

    #[test]
    fn log_queries_read_every_parameter_kubectl_sends() {
        assert_eq!(LogQuery::parse(&query(&[])).unwrap(), LogQuery::default());
        let q = LogQuery::parse(&query(&[
            ("container", "web"),
            ("follow", "true"),
            ("tailLines", "2"),
            ("previous", "1"),
            ("limitBytes", "100"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            LogQuery {
                container: "web".into(),
                follow: true,
                tail_lines: Some(2),
                previous: true,
                limit_bytes: Some(100),
                warnings: Vec::new(),
            }
        );
        assert!(LogQuery::parse(&query(&[("follow", "1")])).unwrap().follow);
        assert!(
            !LogQuery::parse(&query(&[("follow", "false")]))
                .unwrap()
                .follow
        );
        assert_eq!(
            LogQuery::parse(&query(&[("tailLines", "0")]))
                .unwrap()
                .tail_lines,
            Some(0)
        );
    }

    #[test]
    fn malformed_log_parameters_are_refused_naming_the_parameter() {
        for (name, value) in [
            ("tailLines", "-1"),
            ("tailLines", "two"),
            ("limitBytes", "0"),
            ("limitBytes", "-5"),
            ("sinceSeconds", "soon"),
            ("sinceTime", "yesterday"),
            ("follow", "maybe"),
            ("previous", "yes"),
        ] {
            let e = refusal(&[(name, value)]);
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{name}={value}");
            assert_eq!(e.reason, "BadRequest");
            assert!(e.message.contains(name), "{name}={value}: {}", e.message);
        }
        let e = refusal(&[
            ("sinceSeconds", "10"),
            ("sinceTime", "2025-01-01T00:00:00Z"),
        ]);
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn timestamps_and_since_are_accepted_with_a_warning_that_they_are_not_acted_on() {
        let q = LogQuery::parse(&query(&[("timestamps", "true")])).unwrap();
        assert_eq!(q.warnings, [TIMESTAMPS_NOT_SUPPORTED]);
        let q = LogQuery::parse(&query(&[("sinceSeconds", "60")])).unwrap();
        assert_eq!(q.warnings, [SINCE_NOT_SUPPORTED]);
        let q = LogQuery::parse(&query(&[("sinceTime", "2025-01-01T00:00:00Z")])).unwrap();
        assert_eq!(q.warnings, [SINCE_NOT_SUPPORTED]);
        let q = LogQuery::parse(&query(&[("timestamps", "false")])).unwrap();
        assert!(q.warnings.is_empty());
    }

    #[test]
    fn the_only_container_is_chosen_and_ambiguity_is_refused_in_kubes_words() {
        assert_eq!(
            choose_container(&pod(&["web"], &[]), "p", "").unwrap(),
            "web"
        );
        assert_eq!(
            choose_container(&pod(&["a", "b"], &[]), "p", "b").unwrap(),
            "b"
        );
        assert_eq!(
            choose_container(&pod(&["a"], &["setup"]), "p", "setup").unwrap(),
            "setup"
        );
        let e = choose_container(&pod(&["a", "b"], &[]), "two", "").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "a container name must be specified for pod two, choose one of: [a b]"
        );
        let e = choose_container(&pod(&["a", "b"], &["init"]), "two", "").unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod two, choose one of: [a b] or one of the init containers: [init]"
        );
        let e = choose_container(&pod(&["a"], &[]), "one", "nope").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "container nope is not valid for pod one");
    }

    #[test]
    fn a_missing_log_is_a_bad_request_and_a_missing_pod_not_found() {
        let e = log_error(&Status::not_found("pod default/web not found"), "web");
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "pods \"web\" not found");
        let e = log_error(
            &Status::not_found("container main of pod web has no previous run"),
            "web",
        );
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "container main of pod web has no previous run");
        let e = log_error(
            &Status::failed_precondition("pod default/web is not scheduled to a node yet"),
            "web",
        );
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        let e = log_error(&Status::unavailable("cannot reach the agent"), "web");
        assert_eq!(e.code, StatusCode::SERVICE_UNAVAILABLE);
        let e = log_error(&Status::permission_denied("read container logs"), "web");
        assert_eq!(e.code, StatusCode::FORBIDDEN);
    }

    #[test]
    fn limit_bytes_cuts_the_stream_across_chunks() {
        let mut left = Some(5);
        assert_eq!(&cut(Bytes::from_static(b"abc"), &mut left)[..], b"abc");
        assert_eq!(left, Some(2));
        assert_eq!(&cut(Bytes::from_static(b"defg"), &mut left)[..], b"de");
        assert_eq!(left, Some(0));
        assert!(cut(Bytes::from_static(b"h"), &mut left).is_empty());
        let mut unlimited = None;
        assert_eq!(&cut(Bytes::from_static(b"xyz"), &mut unlimited)[..], b"xyz");
        assert_eq!(unlimited, None);
    }

    #[tokio::test]
    async fn the_relayed_body_ends_at_the_limit() {
        use http_body_util::BodyExt;
        let (tx, rx) = mpsc::channel(4);
        for line in ["line-1\n", "line-2\n", "line-3\n"] {
            tx.send(Ok(LogChunk {
                data: line.as_bytes().to_vec(),
            }))
            .await
            .unwrap();
        }
        // The sender stays open, as a followed log's does: only the limit
        // ends the body.
        let body = relay(ReceiverStream::new(rx), Some(10), CancellationToken::new());
        let collected = tokio::time::timeout(std::time::Duration::from_secs(5), body.collect())
            .await
            .expect("the body ends at the limit")
            .unwrap()
            .to_bytes();
        assert_eq!(&collected[..], b"line-1\nlin");
        drop(tx);
    }
}
