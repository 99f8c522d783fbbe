//! The API's OpenAPI documents, made from skiff's generated API schema
//! (`objects::api_schema`), so that `kubectl explain` works and kubectl's
//! validation and `apply` patches follow the real types of built-in kinds:
//!
//! - `/openapi/v2` (and the legacy `/swagger-2.0.0.pb-v1`): Swagger 2.0,
//!   as gnostic protobuf when the client asks for protobuf (kubectl, helm),
//!   as JSON otherwise ([`v2`]). The protobuf answer's Content-Type is
//!   `application/com.github.proto-openapi.spec.v2.v1.0+protobuf`: kubectl
//!   1.20 cannot parse the `@` of the official name.
//! - `/openapi/v3`: the index, `{"paths": {"api/v1": {"serverRelativeURL":
//!   "/openapi/v3/api/v1?hash=..."}, ...}}`, one entry per group version
//!   the registry serves; `/openapi/v3/api/v1` and
//!   `/openapi/v3/apis/{group}/{version}`: that group version's OpenAPI 3.0
//!   document, JSON only ([`v3`]).
//!
//! Each document is built on its first request and kept (a `OnceLock`
//! each), so an idle master holds none of them. Answers carry an `ETag`
//! (the upper-case hex SHA-512 of the bytes, as kube-apiserver's) and a
//! matching `If-None-Match` is answered 304; a v3 request with the current
//! `hash` may be cached for good (`Cache-Control: public, immutable`), one
//! with an old hash is redirected to the current one, as kube-apiserver
//! does. The schema has no descriptions, so the documents have none
//! (`kubectl explain` prints `<empty>` / `<no description>`).

mod schemas;
mod v2;
mod v3;

use std::sync::OnceLock;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Map};
use sha2::{Digest, Sha512};

use super::discovery;
use super::status::RestError;
use super::Query;
use v3::GroupVersion;

/// The Content-Type of the v2 protobuf answer.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const JSON: &str = "application/json";

/// A built document: its bytes and their hash.
#[derive(Debug, Clone)]
struct Rendered {
    body: Bytes,
    /// Upper-case hex SHA-512 of `body`: the ETag, and the v3 `hash`.
    hash: String,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Rendered {
        let hash = Sha512::digest(&body)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Rendered {
            body: Bytes::from(body),
            hash,
        }
    }
}

/// One served group version and its v3 document, once built.
#[derive(Debug)]
struct GroupVersionDocument {
    gv: GroupVersion,
    /// Below `/openapi/v3/`: `api/v1`, `apis/apps/v1`.
    path: String,
    document: OnceLock<Rendered>,
}

impl GroupVersionDocument {
    fn rendered(&self) -> &Rendered {
        self.document
            .get_or_init(|| Rendered::new(v3::document(&self.gv)))
    }
}

/// The OpenAPI documents of one master, each built on its first request.
#[derive(Debug)]
pub struct OpenApi {
    v2_json: OnceLock<Rendered>,
    v2_protobuf: OnceLock<Rendered>,
    index: OnceLock<Rendered>,
    group_versions: Vec<GroupVersionDocument>,
}

impl Default for OpenApi {
    fn default() -> OpenApi {
        let group_versions = v3::group_versions()
            .into_iter()
            .map(|gv| GroupVersionDocument {
                path: gv.path(),
                gv,
                document: OnceLock::new(),
            })
            .collect();
        OpenApi {
            v2_json: OnceLock::new(),
            v2_protobuf: OnceLock::new(),
            index: OnceLock::new(),
            group_versions,
        }
    }
}

impl OpenApi {
    /// `GET /openapi/v2`, or the legacy `/swagger-2.0.0.pb-v1` (`legacy`:
    /// always protobuf, as that path always was).
    pub fn v2(&self, legacy: bool, accept: &str, headers: &HeaderMap) -> Response<Body> {
        if legacy || wants_protobuf(accept) {
            let rendered = self
                .v2_protobuf
                .get_or_init(|| Rendered::new(v2::protobuf_document(&discovery::git_version())));
            answer(rendered, V2_PROTOBUF, headers)
        } else {
            let rendered = self
                .v2_json
                .get_or_init(|| Rendered::new(v2::json_document(&discovery::git_version())));
            answer(rendered, JSON, headers)
        }
    }

    /// `GET /openapi/v3` (`path` empty) or `/openapi/v3/{path}`.
    pub fn v3(
        &self,
        path: &str,
        query: &Query,
        accept: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, RestError> {
        if path.is_empty() {
            return Ok(answer(self.index(), JSON, headers));
        }
        let Some(document) = self.group_versions.iter().find(|d| d.path == path) else {
            return Err(RestError::not_found_path(&format!("/openapi/v3/{path}")));
        };
        if !accepts_json(accept) {
            return Err(RestError::new(
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                format!("/openapi/v3/{path} is served as {JSON} only, not as {accept:?}"),
            ));
        }
        let rendered = document.rendered();
        match query.get("hash") {
            Some(hash) if *hash != rendered.hash => Ok(redirect(&format!(
                "/openapi/v3/{path}?hash={}",
                rendered.hash
            ))),
            Some(_) => {
                let mut response = answer(rendered, JSON, headers);
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, immutable"),
                );
                Ok(response)
            }
            None => Ok(answer(rendered, JSON, headers)),
        }
    }

    /// The v3 index. Its hashes are those of the documents, so building it
    /// builds each one; those not asked for yet are dropped again.
    fn index(&self) -> &Rendered {
        self.index.get_or_init(|| {
            let mut paths = Map::new();
            for document in &self.group_versions {
                let hash = match document.document.get() {
                    Some(rendered) => rendered.hash.clone(),
                    None => Rendered::new(v3::document(&document.gv)).hash,
                };
                let url = format!("/openapi/v3/{}?hash={hash}", document.path);
                paths.insert(document.path.clone(), json!({"serverRelativeURL": url}));
            }
            let index = json!({ "paths": paths });
            Rendered::new(serde_json::to_vec(&index).unwrap_or_default())
        })
    }
}

/// `rendered` as the answer, or 304 when `If-None-Match` names its ETag.
fn answer(rendered: &Rendered, content_type: &'static str, headers: &HeaderMap) -> Response<Body> {
    let etag = format!("\"{}\"", rendered.hash);
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag);
    let builder = Response::builder()
        .header(header::ETAG, etag.as_str())
        .header(header::VARY, "Accept");
    let response = if unchanged {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(rendered.body.clone()))
    };
    response.unwrap_or_default()
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .unwrap_or_default()
}

/// The media types of an `Accept` header, without their parameters.
fn media_types(accept: &str) -> impl Iterator<Item = &str> {
    accept
        .split(',')
        .map(|media| media.split(';').next().unwrap_or_default().trim())
        .filter(|media| !media.is_empty())
}

/// Whether `/openapi/v2` is asked for as protobuf: the first media type
/// that is protobuf or JSON decides; JSON when none is.
fn wants_protobuf(accept: &str) -> bool {
    media_types(accept)
        .find_map(|media| match media {
            "application/json" | "application/*" | "*/*" => Some(false),
            protobuf if protobuf.ends_with("+protobuf") => Some(true),
            _ => None,
        })
        .unwrap_or(false)
}

/// Whether a JSON answer is acceptable (no `Accept` is "anything").
fn accepts_json(accept: &str) -> bool {
    accept.trim().is_empty()
        || media_types(accept).any(|m| matches!(m, "application/json" | "application/*" | "*/*"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use skiff_objects::registry;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn header_of(response: &Response<Body>, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn the_index_lists_every_group_version_served_with_its_document_hash() {
        let openapi = OpenApi::default();
        let index: Value = serde_json::from_slice(&openapi.index().body).unwrap();
        let paths = index["paths"].as_object().unwrap();
        let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let served: BTreeSet<String> = registry::built_in()
            .filter(|k| k.in_openapi())
            .map(|k| match k.group {
                "" => format!("api/{}", k.version),
                group => format!("apis/{group}/{}", k.version),
            })
            .collect();
        let expected: BTreeSet<&str> = served.iter().map(String::as_str).collect();
        assert_eq!(listed, expected);
        assert!(listed.contains("api/v1") && listed.contains("apis/apps/v1"));
        // A version served by conversion has its document too.
        assert!(listed.contains("apis/autoscaling/v1") && listed.contains("apis/autoscaling/v2"));
        // The hashes are those of the documents as served (built anew).
        for document in &openapi.group_versions {
            let url = format!(
                "/openapi/v3/{}?hash={}",
                document.path,
                document.rendered().hash
            );
            assert_eq!(paths[&document.path]["serverRelativeURL"], url);
        }
    }

    #[test]
    fn v3_documents_answer_with_etags_redirects_and_kubernetes_errors() {
        let openapi = OpenApi::default();
        let none = HeaderMap::new();
        let ok = openapi
            .v3("apis/apps/v1", &Query::new(), "application/json", &none)
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header_of(&ok, header::CONTENT_TYPE), "application/json");
        let etag = header_of(&ok, header::ETAG).to_owned();
        let hash = etag.trim_matches('"').to_owned();
        assert_eq!(hash.len(), 128);
        assert!(header_of(&ok, header::CACHE_CONTROL).is_empty());

        let current = query(&[("hash", hash.as_str())]);
        let cached = openapi.v3("apis/apps/v1", &current, "", &none).unwrap();
        assert_eq!(
            header_of(&cached, header::CACHE_CONTROL),
            "public, immutable"
        );
        let old = query(&[("hash", "ABC")]);
        let moved = openapi.v3("apis/apps/v1", &old, "*/*", &none).unwrap();
        assert_eq!(moved.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            header_of(&moved, header::LOCATION),
            format!("/openapi/v3/apis/apps/v1?hash={hash}")
        );

        let mut revalidate = HeaderMap::new();
        revalidate.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let unchanged = openapi
            .v3(
                "apis/apps/v1",
                &Query::new(),
                "application/json",
                &revalidate,
            )
            .unwrap();
        assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
        let index = openapi.v3("", &Query::new(), "", &revalidate).unwrap();
        assert_eq!(index.status(), StatusCode::OK);

        let e = openapi
            .v3("apis/nothing.example/v1", &Query::new(), "", &none)
            .unwrap_err();
        assert_eq!((e.code, e.reason), (StatusCode::NOT_FOUND, "NotFound"));
        let protobuf = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf";
        let e = openapi
            .v3("api/v1", &Query::new(), protobuf, &none)
            .unwrap_err();
        assert_eq!(e.code, StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn v2_is_protobuf_when_asked_for_and_on_the_legacy_path() {
        let openapi = OpenApi::default();
        let none = HeaderMap::new();
        let kubectl = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        for (legacy, accept, content_type) in [
            (false, kubectl, V2_PROTOBUF),
            (false, "application/json", JSON),
            (false, "", JSON),
            (false, "application/json, application/x-yaml", JSON),
            (true, "", V2_PROTOBUF),
        ] {
            let response = openapi.v2(legacy, accept, &none);
            assert_eq!(response.status(), StatusCode::OK, "{accept}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                content_type,
                "{accept}"
            );
        }
        // kubectl 1.20 cannot parse a media type with an `@`.
        assert!(!V2_PROTOBUF.contains('@'));
        assert!(wants_protobuf(
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf;q=0.9, */*;q=0.1"
        ));
        assert!(!wants_protobuf("*/*, application/vnd.kubernetes.protobuf"));
        assert!(accepts_json("application/json;charset=utf-8"));
        assert!(!accepts_json("application/yaml"));
    }
}
