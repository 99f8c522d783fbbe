//! Registry authentication as the OCI distribution protocol does it
//! (Docker's token authentication): a request without credentials is
//! answered `401` with `WWW-Authenticate`; `Basic realm=...` asks for the
//! user and password themselves, `Bearer realm=...,service=...,scope=...`
//! for a token from the realm (a token service), fetched with the user and
//! password if there are any and anonymously otherwise, and sent as
//! `Authorization: Bearer` until it expires. This module parses the
//! challenges and the token service's answer and keeps what was learned
//! ([`AuthCache`]): which registries want Basic credentials, and a token per
//! repository and credentials until its `expires_in` (a token fetched with
//! one pod's pull secret is never sent for a pull without it). The HTTP
//! exchanges themselves are in `registry_client`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::header::HeaderValue;
use serde::Deserialize;

/// How long a token lives when the token service does not say (the
/// distribution spec's default for `expires_in`).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is dropped this long before it expires (at most half its life),
/// so a request does not carry one that runs out on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A registry user and password, and where they come from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub origin: CredentialOrigin,
}

/// Where a pull's credentials come from, as refusals name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialOrigin {
    /// The agent's `registries.yaml` (`auth`).
    RegistriesFile,
    /// A pod's image pull Secret, by name.
    PullSecret(String),
}

impl std::fmt::Display for CredentialOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialOrigin::RegistriesFile => f.write_str("registries.yaml"),
            CredentialOrigin::PullSecret(name) => write!(f, "imagePullSecret {name:?}"),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Credentials {
    /// A digest of the user and password: what a cached token is kept
    /// under, so that it goes only with the credentials it was fetched
    /// with (the password itself is not kept twice).
    fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.username.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.password.as_bytes());
        format!("{:x}", hasher.finalize())
    }

    /// `Basic base64(user:password)`, marked sensitive (never logged).
    pub fn basic_header(&self) -> Option<HeaderValue> {
        let pair = format!("{}:{}", self.username, self.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        sensitive(&format!("Basic {encoded}"))
    }
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut header = HeaderValue::from_str(value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// One challenge of a `WWW-Authenticate` header (RFC 7235): a scheme,
/// lowercased, and its parameters (names lowercased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The challenges in one `WWW-Authenticate` value, in order. Anything
/// that does not parse ends the list; nothing here panics or loops.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut pos = 0;
    let skip_ws = |pos: &mut usize| {
        while *pos < b.len() && (b[*pos] == b' ' || b[*pos] == b'\t') {
            *pos += 1;
        }
    };
    let token = |pos: &mut usize| -> String {
        let start = *pos;
        while *pos < b.len() && is_tchar(b[*pos]) {
            *pos += 1;
        }
        header[start..*pos].to_owned()
    };
    let mut out = Vec::new();
    loop {
        while pos < b.len() && (b[pos] == b' ' || b[pos] == b'\t' || b[pos] == b',') {
            pos += 1;
        }
        let scheme = token(&mut pos);
        if scheme.is_empty() {
            return out;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            skip_ws(&mut pos);
            let before = pos;
            let name = token(&mut pos);
            skip_ws(&mut pos);
            if name.is_empty() || pos >= b.len() || b[pos] != b'=' {
                // The next challenge's scheme (or the end).
                pos = before;
                break;
            }
            pos += 1;
            skip_ws(&mut pos);
            let value = if pos < b.len() && b[pos] == b'"' {
                pos += 1;
                let mut raw = Vec::new();
                while pos < b.len() && b[pos] != b'"' {
                    if b[pos] == b'\\' && pos + 1 < b.len() {
                        pos += 1;
                    }
                    raw.push(b[pos]);
                    pos += 1;
                }
                if pos < b.len() {
                    pos += 1; // the closing quote
                }
                String::from_utf8_lossy(&raw).into_owned()
            } else {
                // Lenient: an unquoted URL is not a token, but registries
                // send them.
                let start = pos;
                while pos < b.len() && !matches!(b[pos], b',' | b' ' | b'\t') {
                    pos += 1;
                }
                header[start..pos].to_owned()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            skip_ws(&mut pos);
            if pos < b.len() && b[pos] == b',' {
                pos += 1;
                continue;
            }
            break;
        }
        out.push(challenge);
        if pos >= b.len() || (!is_tchar(b[pos]) && b[pos] != b',') {
            return out;
        }
    }
}

/// What a registry's 401 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A token from `realm`, for `service` and `scope` when given.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// The user and password themselves.
    Basic,
    /// No challenge at all.
    Nothing,
    /// Only schemes skiff does not speak (named), or a Bearer challenge
    /// without a realm.
    Unsupported(String),
}

/// What the `WWW-Authenticate` values of a 401 ask for; Bearer first
/// when a registry offers both.
pub fn requested<'a>(headers: impl IntoIterator<Item = &'a str>) -> Requested {
    let challenges: Vec<Challenge> = headers.into_iter().flat_map(parse_challenges).collect();
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
        return match bearer.param("realm").filter(|r| !r.is_empty()) {
            Some(realm) => Requested::Bearer {
                realm: realm.to_owned(),
                service: bearer.param("service").map(str::to_owned),
                scope: bearer.param("scope").map(str::to_owned),
            },
            None => Requested::Unsupported("Bearer without a realm".to_owned()),
        };
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Requested::Basic;
    }
    if challenges.is_empty() {
        return Requested::Nothing;
    }
    let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
    Requested::Unsupported(schemes.join(", "))
}

/// The scope a pull of `repository` asks a token service for.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// `realm?service=...&scope=...` (appended with `&` when the realm has a
/// query already), values percent-encoded.
pub fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_owned();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    for (name, value) in [("service", service), ("scope", Some(scope))] {
        let Some(value) = value else { continue };
        url.push(separator);
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encode(value));
        separator = '&';
    }
    url
}

/// RFC 3986: everything but unreserved characters as `%XX`.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A token from a token service and how long it is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerToken {
    pub token: String,
    pub lifetime: Duration,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads a token service's answer: `token`, or the OAuth2 name
/// `access_token`, and `expires_in` seconds (60 when absent).
pub fn parse_token_response(body: &[u8]) -> Result<BearerToken, String> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| format!("answer is not a token response (JSON object): {e}"))?;
    let token = if response.token.is_empty() {
        response.access_token
    } else {
        response.token
    };
    if token.is_empty() {
        return Err("answer has neither \"token\" nor \"access_token\"".to_owned());
    }
    if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err("token has characters an HTTP header cannot carry".to_owned());
    }
    let lifetime = match response.expires_in {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
        _ => DEFAULT_TOKEN_LIFETIME,
    };
    Ok(BearerToken { token, lifetime })
}

#[derive(Debug)]
struct CachedToken {
    authorization: HeaderValue,
    until: Instant,
}

/// What this agent has learned about registries' authentication: the
/// registries (by base URL) that want Basic credentials, and a token per
/// (registry, repository, credentials) until shortly before it expires.
#[derive(Debug, Default)]
pub struct AuthCache {
    basic: HashSet<String>,
    tokens: HashMap<TokenKey, CachedToken>,
}

/// Registry base URL, repository, and the credentials' fingerprint (empty
/// for anonymous).
type TokenKey = (String, String, String);

fn token_key(base: &str, repository: &str, credentials: Option<&Credentials>) -> TokenKey {
    let who = credentials
        .map(Credentials::fingerprint)
        .unwrap_or_default();
    (base.to_owned(), repository.to_owned(), who)
}

impl AuthCache {
    /// The `Authorization` to send to `base` for `repository` with
    /// `credentials` at `now`: a live token fetched with them, else Basic
    /// credentials to a registry known to want them, else none.
    pub fn authorization(
        &mut self,
        base: &str,
        repository: &str,
        credentials: Option<&Credentials>,
        now: Instant,
    ) -> Option<HeaderValue> {
        let key = token_key(base, repository, credentials);
        match self.tokens.get(&key) {
            Some(cached) if cached.until > now => return Some(cached.authorization.clone()),
            Some(_) => {
                self.tokens.remove(&key);
            }
            None => {}
        }
        if self.basic.contains(base) {
            return credentials.and_then(Credentials::basic_header);
        }
        None
    }

    /// Keeps `token`, fetched with `credentials`, for `base` and
    /// `repository`; expired tokens of other repositories are dropped on
    /// the way.
    pub fn store_token(
        &mut self,
        base: &str,
        repository: &str,
        credentials: Option<&Credentials>,
        token: &BearerToken,
        now: Instant,
    ) {
        self.tokens.retain(|_, cached| cached.until > now);
        let Some(authorization) = sensitive(&format!("Bearer {}", token.token)) else {
            return;
        };
        let margin = EXPIRY_MARGIN.min(token.lifetime / 2);
        self.tokens.insert(
            token_key(base, repository, credentials),
            CachedToken {
                authorization,
                until: now + token.lifetime - margin,
            },
        );
    }

    /// Remembers that `base` asks for Basic credentials.
    pub fn use_basic(&mut self, base: &str) {
        self.basic.insert(base.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer_challenge_parses() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let challenges = parse_challenges(header);
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].scheme, "bearer");
        assert_eq!(
            challenges[0].param("realm"),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(
            requested([header]),
            Requested::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
    }

    #[test]
    fn challenges_parse_leniently_and_in_order() {
        // Basic as docker-registry's htpasswd auth sends it.
        assert_eq!(requested([r#"Basic realm="skiff-e2e""#]), Requested::Basic);
        // Two challenges in one value, spaces, unquoted and escaped values,
        // case-insensitive scheme and names.
        let two = parse_challenges(
            r#"basic realm="a \"quoted\" realm" , BEARER Realm=https://t.example/token, service = reg ,error="insufficient_scope""#,
        );
        assert_eq!(two.len(), 2, "{two:?}");
        assert_eq!(two[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(two[1].scheme, "bearer");
        assert_eq!(two[1].param("realm"), Some("https://t.example/token"));
        assert_eq!(two[1].param("service"), Some("reg"));
        assert_eq!(two[1].param("error"), Some("insufficient_scope"));
        // Bearer is preferred, also across header lines.
        assert!(matches!(
            requested([r#"Basic realm="x""#, r#"Bearer realm="https://t/""#]),
            Requested::Bearer { .. }
        ));
        assert_eq!(requested([]), Requested::Nothing);
        assert_eq!(
            requested([r#"Bearer service="x""#]),
            Requested::Unsupported("Bearer without a realm".into())
        );
        assert_eq!(
            requested(["Negotiate abc=="]),
            Requested::Unsupported("negotiate".into())
        );
        // Garbage ends the list without a panic.
        for junk in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "Bearer ,=,",
            "é",
        ] {
            let _ = parse_challenges(junk);
        }
        assert_eq!(
            parse_challenges("Bearer realm=\"unterminated")[0].param("realm"),
            Some("unterminated")
        );
    }

    #[test]
    fn token_url_encodes_service_and_scope() {
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                &pull_scope("library/busybox")
            ),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull"
        );
        assert_eq!(
            token_url(
                "http://127.0.0.1:5000/auth?x=1",
                None,
                "repository:a b:pull"
            ),
            "http://127.0.0.1:5000/auth?x=1&scope=repository%3Aa%20b%3Apull"
        );
    }

    #[test]
    fn token_responses_parse() {
        let t = parse_token_response(
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.lifetime, Duration::from_secs(300));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token, "xyz");
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
        // Both: `token` wins.
        let t = parse_token_response(br#"{"token":"a","access_token":"b"}"#).unwrap();
        assert_eq!(t.token, "a");
        let cases: [(&[u8], &str); 4] = [
            (br#"{}"#, "neither"),
            (b"<html>", "not a token response"),
            (br#"{"token":"a\nb"}"#, "header"),
            (br#"{"token":7}"#, "not a token response"),
        ];
        for (body, why) in cases {
            let err = parse_token_response(body).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn cache_keeps_tokens_per_repository_until_expiry_and_basic_per_registry() {
        let mut cache = AuthCache::default();
        let now = Instant::now();
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
            origin: CredentialOrigin::RegistriesFile,
        };
        assert_eq!(
            cache.authorization("https://r", "a", Some(&creds), now),
            None
        );
        let token = BearerToken {
            token: "t1".into(),
            lifetime: Duration::from_secs(300),
        };
        cache.store_token("https://r", "a", None, &token, now);
        let header = cache.authorization("https://r", "a", None, now).unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer t1");
        assert!(header.is_sensitive());
        // Not for another repository or registry.
        assert_eq!(cache.authorization("https://r", "b", None, now), None);
        assert_eq!(cache.authorization("https://s", "a", None, now), None);
        // Gone shortly before it expires.
        let late = now + Duration::from_secs(291);
        assert_eq!(cache.authorization("https://r", "a", None, late), None);
        // A short-lived token keeps half its life.
        let short = BearerToken {
            token: "t2".into(),
            lifetime: Duration::from_secs(4),
        };
        cache.store_token("https://r", "a", None, &short, now);
        assert!(cache
            .authorization("https://r", "a", None, now + Duration::from_secs(1))
            .is_some());
        assert!(cache
            .authorization("https://r", "a", None, now + Duration::from_secs(2))
            .is_none());
        // Basic once the registry asked for it, and only with credentials.
        cache.use_basic("http://h:5000");
        let basic = cache
            .authorization("http://h:5000", "x", Some(&creds), now)
            .unwrap();
        assert_eq!(basic.to_str().unwrap(), "Basic dTpw");
        assert_eq!(cache.authorization("http://h:5000", "x", None, now), None);
        assert!(!format!("{creds:?}").contains("\"p\""), "{creds:?}");

        // A token fetched with credentials goes with them only: not to an
        // anonymous pull, nor to one with other credentials.
        let with = BearerToken {
            token: "t3".into(),
            lifetime: Duration::from_secs(300),
        };
        cache.store_token("https://r", "c", Some(&creds), &with, now);
        let header = cache.authorization("https://r", "c", Some(&creds), now);
        assert_eq!(header.unwrap().to_str().unwrap(), "Bearer t3");
        assert_eq!(cache.authorization("https://r", "c", None, now), None);
        let other = Credentials {
            password: "q".into(),
            origin: CredentialOrigin::PullSecret("regcred".into()),
            ..creds.clone()
        };
        assert_eq!(
            cache.authorization("https://r", "c", Some(&other), now),
            None
        );
        assert_eq!(other.origin.to_string(), r#"imagePullSecret "regcred""#);
    }
}
