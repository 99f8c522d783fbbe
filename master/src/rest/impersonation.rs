//! Kubernetes' user impersonation (`kubectl --as=jane --as-group=devs`,
//! helm's `--kube-as-user`, client-go's `ImpersonationConfig`), as
//! kube-apiserver's impersonation filter does it. A caller that
//! authenticated as itself asks to act as another user with the headers
//! `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid`
//! and `Impersonate-Extra-<key>` (repeatable; the key lower-cased, then
//! percent-decoded). It must be allowed the verb `impersonate` on each
//! thing it asks for: `users` named as the user (or, for a service
//! account's user `system:serviceaccount:<ns>:<name>`, `serviceaccounts`
//! `<name>` in `<ns>`), `groups` named as each group, and in
//! `authentication.k8s.io` `uids` named as the uid and `userextras/<key>`
//! named as each value; the first refused is a 403 in kube-apiserver's
//! words (`users "bob" is forbidden: User "..." cannot impersonate resource
//! "users" in API group "" at the cluster scope`). Allowed, the request
//! proceeds as that user ([`Identity::User`]) from then on: its
//! authorization, its refusals' words, what `kubectl auth whoami` shows;
//! logs name both (`jane (impersonated by admin)`). The headers are
//! dropped once read, so that nothing relayed onwards carries them.
//!
//! The user's groups are those asked for (for a service account asked
//! without any, its own two, `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`) and `system:authenticated` unless they
//! say `system:authenticated` or `system:unauthenticated` already
//! (`system:anonymous` gets `system:unauthenticated` instead). A node's
//! user (`system:node:<name>` in `system:nodes`) has the node's rules, as
//! a SubjectAccessReview answers for it.
//!
//! Where skiff is stricter than kube-apiserver: `Impersonate-User` or
//! `Impersonate-Uid` given twice, a header that is not text, and an
//! `Impersonate-Extra-` header naming no key are 400 `BadRequest` (kube-
//! apiserver reads the first, or keeps the bytes); so are groups, a uid or
//! extras without a user (kube-apiserver answers that one 500).

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, StatusCode};
use skiff_security::{Identity, PeerInfo};

use super::status::RestError;
use crate::api::rbac::ResourceRequest;
use crate::api::ApiService;

const USER_HEADER: &str = "impersonate-user";
const UID_HEADER: &str = "impersonate-uid";
const GROUP_HEADER: &str = "impersonate-group";
/// Header names are lower case here (the `http` crate's).
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The API group of `uids` and `userextras`.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const ANONYMOUS: &str = "system:anonymous";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// Who a request asks to act as, as its headers say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Requested {
    /// `""`: no user asked for.
    pub user: String,
    /// `""`: no uid asked for.
    pub uid: String,
    /// As given, in order (an empty value too, as kube-apiserver keeps it).
    pub groups: Vec<String>,
    /// By key (decoded, lower case), each key's values in order.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One `impersonate` the caller must be allowed (kube-apiserver's
/// `actingAsAttributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Check {
    pub api_group: &'static str,
    pub resource: &'static str,
    /// An extra's key; `""` otherwise.
    pub subresource: String,
    /// A service account's namespace; `""` otherwise.
    pub namespace: String,
    pub name: String,
}

impl Check {
    fn request(&self) -> ResourceRequest<'_> {
        ResourceRequest {
            verb: "impersonate",
            api_group: self.api_group,
            resource: self.resource,
            subresource: &self.subresource,
            namespace: &self.namespace,
            name: &self.name,
        }
    }

    /// The 403 refusing it, worded as apimachinery's `NewForbidden` words
    /// it (`users "bob" is forbidden: <message>`), `message` being the
    /// authorizer's sentence and reason.
    fn forbidden(&self, message: &str) -> RestError {
        let resource = match self.api_group {
            "" => self.resource.to_owned(),
            group => format!("{}.{group}", self.resource),
        };
        let text = match self.name.as_str() {
            "" => format!("{resource} is forbidden: {message}"),
            name => format!("{resource} {name:?} is forbidden: {message}"),
        };
        let mut e = RestError::new(StatusCode::FORBIDDEN, "Forbidden", text);
        e.details.name = self.name.clone();
        e.details.group = self.api_group.to_owned();
        e.details.kind = self.resource.to_owned();
        e
    }
}

/// Reads who `headers` ask to act as; `None` when they ask for nothing
/// (no impersonation headers, or only an empty `Impersonate-User`, as
/// kube-apiserver reads it). Groups, a uid or extras without a user, a
/// user or uid given twice, a value that is not text or an extra header
/// naming no key are refused (400, naming the header).
pub(super) fn requested(headers: &HeaderMap) -> Result<Option<Requested>, RestError> {
    let user = single(headers, USER_HEADER, "Impersonate-User")?;
    let uid = single(headers, UID_HEADER, "Impersonate-Uid")?;
    let groups = headers
        .get_all(GROUP_HEADER)
        .iter()
        .map(|value| text(value, "Impersonate-Group"))
        .collect::<Result<Vec<String>, RestError>>()?;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in headers.keys() {
        let Some(encoded) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        if encoded.is_empty() {
            return Err(RestError::bad_request(
                "the Impersonate-Extra- header names no key: send Impersonate-Extra-<key>",
            ));
        }
        let key = extra_key(encoded);
        let header = format!("Impersonate-Extra-{encoded}");
        let values = extra.entry(key).or_default();
        for value in headers.get_all(name) {
            values.push(text(value, &header)?);
        }
    }
    if user.is_empty() {
        if groups.is_empty() && uid.is_empty() && extra.is_empty() {
            return Ok(None);
        }
        let mut asked: Vec<String> = groups.iter().map(|g| format!("group {g:?}")).collect();
        for (key, values) in &extra {
            asked.extend(values.iter().map(|v| format!("extra {key:?}={v:?}")));
        }
        if !uid.is_empty() {
            asked.push(format!("uid {uid:?}"));
        }
        return Err(RestError::bad_request(format!(
            "requested [{}] without impersonating a user (send Impersonate-User too)",
            asked.join(", ")
        )));
    }
    Ok(Some(Requested {
        user,
        uid,
        groups,
        extra,
    }))
}

/// The one value of header `name` (`shown` as it is written), `""`
/// without one.
fn single(headers: &HeaderMap, name: &str, shown: &str) -> Result<String, RestError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(String::new());
    };
    if values.next().is_some() {
        return Err(RestError::bad_request(format!(
            "the {shown} header is given more than once: give it once"
        )));
    }
    text(value, shown)
}

fn text(value: &http::HeaderValue, header: &str) -> Result<String, RestError> {
    value.to_str().map(str::to_owned).map_err(|_| {
        RestError::bad_request(format!(
            "the {header} header is not text (visible ASCII); percent-encode it"
        ))
    })
}

/// An extra's key from the rest of its header's name: lower case, then
/// `%XX` escapes decoded (client-go encodes what a header name cannot
/// hold: `Impersonate-Extra-example.com%2fscopes`); a malformed escape
/// keeps the key as written, as kube-apiserver keeps it.
fn extra_key(encoded: &str) -> String {
    let lower = encoded.to_ascii_lowercase();
    percent_decoded(&lower).unwrap_or(lower)
}

/// `text` with every `%XX` decoded; `None` when an escape is malformed or
/// the bytes are not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The namespace and name of a service account's user
/// (`system:serviceaccount:<ns>:<name>`, both valid names, as
/// kube-apiserver's `SplitUsername` reads it); `None` for any other user.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let namespace_is_a_label = namespace.len() <= 63 && !namespace.contains('.');
    (valid(namespace) && namespace_is_a_label && valid(name)).then_some((namespace, name))
}

/// Every `impersonate` `requested` needs, in kube-apiserver's order: the
/// user (or its service account), each group, each extra value, the uid.
pub(super) fn checks(requested: &Requested) -> Vec<Check> {
    let mut checks = Vec::new();
    let check = |api_group: &'static str,
                 resource: &'static str,
                 subresource: &str,
                 namespace: &str,
                 name: &str| Check {
        api_group,
        resource,
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    checks.push(match service_account(&requested.user) {
        Some((namespace, name)) => check("", "serviceaccounts", "", namespace, name),
        None => check("", "users", "", "", &requested.user),
    });
    for group in &requested.groups {
        checks.push(check("", "groups", "", "", group));
    }
    for (key, values) in &requested.extra {
        for value in values {
            checks.push(check(AUTHENTICATION_GROUP, "userextras", key, "", value));
        }
    }
    if !requested.uid.is_empty() {
        checks.push(check(AUTHENTICATION_GROUP, "uids", "", "", &requested.uid));
    }
    checks
}

/// The user `requested` is, acted as by `impersonator`: its groups
/// completed as kube-apiserver completes them (see the module's doc).
pub(super) fn acted_as(requested: Requested, impersonator: Identity) -> Identity {
    let mut groups = requested.groups;
    if groups.is_empty() {
        if let Some((namespace, _)) = service_account(&requested.user) {
            groups = vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ];
        }
    }
    let authenticated = groups.iter().any(|g| g == AUTHENTICATED);
    let unauthenticated = groups.iter().any(|g| g == UNAUTHENTICATED);
    if requested.user != ANONYMOUS {
        if !authenticated && !unauthenticated {
            groups.push(AUTHENTICATED.to_owned());
        }
    } else if !unauthenticated {
        groups.push(UNAUTHENTICATED.to_owned());
    }
    Identity::User {
        name: requested.user,
        uid: requested.uid,
        groups,
        extra: requested.extra,
        impersonator: Box::new(impersonator),
    }
}

/// Drops every impersonation header from `headers`.
fn remove_headers(headers: &mut HeaderMap) {
    let extras: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(EXTRA_PREFIX))
        .cloned()
        .collect();
    for name in extras {
        headers.remove(name);
    }
    for name in [USER_HEADER, UID_HEADER, GROUP_HEADER] {
        headers.remove(name);
    }
}

/// The caller `peer` (authenticated) of a request with `headers`, or the
/// user it asks to act as if it may (the impersonation headers are
/// removed either way).
pub(super) fn impersonate(
    api: &ApiService,
    peer: PeerInfo,
    headers: &mut HeaderMap,
) -> Result<PeerInfo, RestError> {
    let asked = requested(headers);
    remove_headers(headers);
    let Some(requested) = asked? else {
        return Ok(peer);
    };
    let Some(caller) = peer.identity.clone() else {
        return Err(RestError::unauthorized());
    };
    for check in checks(&requested) {
        api.authorize_request(&caller, &check.request())
            .map_err(|refused| check.forbidden(refused.message()))?;
    }
    let user = acted_as(requested, caller);
    tracing::debug!(remote = %peer.remote, caller = %user, "acting as another user");
    Ok(PeerInfo {
        remote: peer.remote,
        identity: Some(user),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn bad_request(pairs: &[(&str, &str)]) -> String {
        let refused = requested(&headers(pairs)).unwrap_err();
        assert_eq!(refused.code, StatusCode::BAD_REQUEST, "{pairs:?}");
        assert_eq!(refused.reason, "BadRequest");
        refused.message
    }

    #[test]
    fn no_impersonation_headers_ask_for_nothing() {
        assert_eq!(requested(&HeaderMap::new()).unwrap(), None);
        let unrelated = headers(&[("accept", "application/json")]);
        assert_eq!(requested(&unrelated).unwrap(), None);
        // An empty user alone is no user, as kube-apiserver reads it.
        assert_eq!(
            requested(&headers(&[("Impersonate-User", "")])).unwrap(),
            None
        );
    }

    #[test]
    fn a_user_its_repeated_groups_uid_and_extras_are_read() {
        let asked = requested(&headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "u-7"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
            ("Impersonate-Extra-Example.com%2FReason", "audit"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(asked.user, "jane");
        assert_eq!(asked.uid, "u-7");
        assert_eq!(asked.groups, strings(&["devs", "ops"]));
        let extra: Vec<(&str, Vec<String>)> = asked
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        assert_eq!(
            extra,
            [
                ("example.com/reason", strings(&["audit"])),
                ("scopes", strings(&["view", "edit"])),
            ]
        );
    }

    #[test]
    fn an_extras_key_is_lower_cased_then_percent_decoded_or_kept_when_malformed() {
        assert_eq!(extra_key("Example.com%2fScopes"), "example.com/scopes");
        assert_eq!(extra_key("a%3Db"), "a=b");
        // An escape decoding to upper case stays upper case: decoded after.
        assert_eq!(extra_key("x%41"), "xA");
        // Malformed or not UTF-8: the key as written (lower case).
        assert_eq!(extra_key("100%"), "100%");
        assert_eq!(extra_key("A%zz"), "a%zz");
        assert_eq!(extra_key("bad%ff"), "bad%ff");
    }

    #[test]
    fn groups_a_uid_or_extras_without_a_user_are_refused_naming_them() {
        let message = bad_request(&[("Impersonate-Group", "devs")]);
        assert_eq!(
            message,
            r#"requested [group "devs"] without impersonating a user (send Impersonate-User too)"#
        );
        let message = bad_request(&[
            ("Impersonate-User", ""),
            ("Impersonate-Uid", "u-1"),
            ("Impersonate-Extra-Scopes", "view"),
        ]);
        assert_eq!(
            message,
            r#"requested [extra "scopes"="view", uid "u-1"] without impersonating a user (send Impersonate-User too)"#
        );
    }

    #[test]
    fn malformed_and_repeated_headers_are_refused_naming_the_header() {
        let message = bad_request(&[("Impersonate-User", "jane"), ("Impersonate-User", "bob")]);
        assert!(
            message.contains("Impersonate-User header is given more than once"),
            "{message}"
        );
        let message = bad_request(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Uid", "1"),
            ("Impersonate-Uid", "2"),
        ]);
        assert!(
            message.contains("Impersonate-Uid header is given more than once"),
            "{message}"
        );
        let message = bad_request(&[("Impersonate-User", "jane"), ("Impersonate-Extra-", "x")]);
        assert!(message.contains("names no key"), "{message}");
        let mut not_text = headers(&[("Impersonate-User", "jane")]);
        not_text.append(
            "impersonate-group",
            HeaderValue::from_bytes(b"d\xe9vs").unwrap(),
        );
        let refused = requested(&not_text).unwrap_err();
        assert_eq!(refused.code, StatusCode::BAD_REQUEST);
        assert!(
            refused
                .message
                .contains("the Impersonate-Group header is not text"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn the_headers_are_dropped_once_read() {
        let mut sent = headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Uid", "u-1"),
            ("Impersonate-Extra-Scopes", "view"),
            ("accept", "application/json"),
        ]);
        remove_headers(&mut sent);
        let left: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    fn check(
        group: &'static str,
        resource: &'static str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Check {
        Check {
            api_group: group,
            resource,
            subresource: sub.to_owned(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn each_thing_asked_for_is_one_impersonate_check_as_kube_apiserver_makes_them() {
        let asked = Requested {
            user: "jane".into(),
            uid: "u-7".into(),
            groups: strings(&["devs", "ops"]),
            extra: [("scopes".to_owned(), strings(&["view", "edit"]))].into(),
        };
        assert_eq!(
            checks(&asked),
            [
                check("", "users", "", "", "jane"),
                check("", "groups", "", "", "devs"),
                check("", "groups", "", "", "ops"),
                check(AUTHENTICATION_GROUP, "userextras", "scopes", "", "view"),
                check(AUTHENTICATION_GROUP, "userextras", "scopes", "", "edit"),
                check(AUTHENTICATION_GROUP, "uids", "", "", "u-7"),
            ]
        );
        let account = Requested {
            user: "system:serviceaccount:narrow:patcher".into(),
            ..Requested::default()
        };
        assert_eq!(
            checks(&account),
            [check("", "serviceaccounts", "", "narrow", "patcher")]
        );
        // Not a service account's name: a user like any other.
        for user in [
            "system:serviceaccount:narrow",
            "system:serviceaccount:narrow:a:b",
            "system:serviceaccount::patcher",
            "system:serviceaccount:Narrow:patcher",
        ] {
            let asked = Requested {
                user: user.into(),
                ..Requested::default()
            };
            assert_eq!(checks(&asked), [check("", "users", "", "", user)], "{user}");
        }
    }

    #[test]
    fn the_user_acted_as_gets_its_groups_as_kube_apiserver_completes_them() {
        let groups_of = |user: &str, groups: &[&str]| {
            let asked = Requested {
                user: user.into(),
                groups: strings(groups),
                ..Requested::default()
            };
            match acted_as(asked, Identity::Admin) {
                Identity::User { groups, .. } => groups,
                other => panic!("not a user: {other:?}"),
            }
        };
        assert_eq!(groups_of("jane", &[]), ["system:authenticated"]);
        assert_eq!(
            groups_of("jane", &["devs"]),
            ["devs", "system:authenticated"]
        );
        assert_eq!(
            groups_of("jane", &["system:authenticated"]),
            ["system:authenticated"]
        );
        assert_eq!(
            groups_of("jane", &["system:unauthenticated"]),
            ["system:unauthenticated"]
        );
        assert_eq!(
            groups_of("system:anonymous", &[]),
            ["system:unauthenticated"]
        );
        // A service account's own groups when none are asked for; else
        // those asked for alone.
        assert_eq!(
            groups_of("system:serviceaccount:narrow:patcher", &[]),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:narrow",
                "system:authenticated"
            ]
        );
        assert_eq!(
            groups_of("system:serviceaccount:narrow:patcher", &["devs"]),
            ["devs", "system:authenticated"]
        );
        let asked = Requested {
            user: "jane".into(),
            uid: "u-7".into(),
            groups: strings(&["devs"]),
            extra: [("scopes".to_owned(), strings(&["view"]))].into(),
        };
        assert_eq!(
            acted_as(asked.clone(), Identity::Admin),
            Identity::User {
                name: "jane".into(),
                uid: "u-7".into(),
                groups: strings(&["devs", "system:authenticated"]),
                extra: asked.extra,
                impersonator: Box::new(Identity::Admin),
            }
        );
    }

    #[test]
    fn a_refusal_is_worded_as_new_forbidden_words_it() {
        let sentence = r#"User "system:serviceaccount:a:b" cannot impersonate resource "users" in API group "" at the cluster scope"#;
        let refused = check("", "users", "", "", "bob").forbidden(sentence);
        assert_eq!(refused.code, StatusCode::FORBIDDEN);
        assert_eq!(refused.reason, "Forbidden");
        assert_eq!(
            refused.message,
            format!(r#"users "bob" is forbidden: {sentence}"#)
        );
        assert_eq!(refused.details.kind, "users");
        let refused = check(AUTHENTICATION_GROUP, "uids", "", "", "u-1").forbidden("no");
        assert_eq!(
            refused.message,
            r#"uids.authentication.k8s.io "u-1" is forbidden: no"#
        );
    }
}
