//! Reading the ConfigMaps and Secrets this node's pods use (env, envFrom,
//! volumes), and the PersistentVolumeClaims and PersistentVolumes behind
//! their `persistentVolumeClaim` volumes, one object at a time: `Api.Get` from a master's local replica
//! (serializable), moving on to the next master when one does not answer
//! or does not yet know the pod that makes the read allowed. The masters
//! let a node read only the ConfigMaps, Secrets and claims its pods
//! reference and the volumes of those claims (or of its node), as
//! Kubernetes' NodeRestriction lets a kubelet; nothing is listed or
//! watched, so a node never holds more than its pods need.
//!
//! What the pods get is [`ConfigData`]: the object's values as bytes,
//! decoded from what the wire carries (a Secret's base64 `data`, a
//! ConfigMap's `data` and base64 `binaryData` inside its JSON fields);
//! claims and volumes come as a [`StorageObject`], read from the leader
//! rather than a replica (a volume a lagging replica does not know yet
//! must not look deleted).
//! Service account tokens for projected volumes come from `Api.RequestToken`
//! ([`ConfigSource::request_token`]): a token of the pod's account, bound
//! to the pod by name and uid, which the masters issue only to the node the
//! pod is bound to.
//! The pod workers see the masters only through the narrow
//! [`ConfigSource`] trait; [`MasterConfigSource`] is the real one and
//! [`StaticConfigSource`] a fake for their tests.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use skiff_objects::legacy_bodies;
use skiff_objects::pods::ConfigReference;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::{BoundObjectReference, GetRequest, Object, RequestTokenRequest};
use skiff_proto::v1;
use tonic::Code;

use super::masters::Masters;

/// How long one master has to answer a read.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

/// The kinds of objects pods read configuration and storage from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
    PersistentVolumeClaim,
    PersistentVolume,
}

impl ConfigKind {
    /// A pod's reference to a ConfigMap or Secret, as the kind and name
    /// this node fetches.
    pub fn of_reference(reference: ConfigReference<'_>) -> (ConfigKind, String) {
        match reference {
            ConfigReference::ConfigMap(name) => (ConfigKind::ConfigMap, name.to_owned()),
            ConfigReference::Secret(name) => (ConfigKind::Secret, name.to_owned()),
        }
    }

    /// The kind as the API names it (`ConfigMap`).
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
            ConfigKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ConfigKind::PersistentVolume => "PersistentVolume",
        }
    }

    /// The word the kubelet's messages use (`configmap "x" not found`).
    pub fn resource(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
            ConfigKind::PersistentVolumeClaim => "persistentvolumeclaim",
            ConfigKind::PersistentVolume => "persistentvolume",
        }
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A ConfigMap's or Secret's values, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigData {
    /// A ConfigMap's `data` (text), or a Secret's `data` (decoded).
    pub data: BTreeMap<String, Vec<u8>>,
    /// A ConfigMap's `binaryData` (decoded): volumes hold these too, the
    /// environment does not.
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

impl ConfigData {
    /// Values given as text, as a ConfigMap's `data` holds them.
    pub fn text(pairs: &[(&str, &str)]) -> ConfigData {
        ConfigData {
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            binary_data: BTreeMap::new(),
        }
    }
}

/// Why a ConfigMap or Secret could not be read. That it does not exist is
/// no error: it is `Ok(None)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {kind} {namespace}/{name}: no master answered ({message})")]
    Unreachable {
        kind: ConfigKind,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("the masters do not let this node read {kind} {namespace}/{name} ({message}); is the pod bound to it yet?")]
    Refused {
        kind: ConfigKind,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("{kind} {namespace}/{name} as the masters sent it: {message}")]
    Malformed {
        kind: ConfigKind,
        namespace: String,
        name: String,
        message: String,
    },
    /// No token of the pod's service account could be had.
    #[error("failed to fetch token for serviceaccount {namespace}/{service_account}: {message}")]
    Token {
        namespace: String,
        service_account: String,
        message: String,
    },
}

/// A service account token a projected volume asks for: its audience
/// (empty: the API's own) and lifetime in seconds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenWanted {
    pub audience: String,
    pub expiration_seconds: i64,
}

/// A TokenRequest as the agent makes it: a token of a pod's service
/// account, bound to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFor {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub wanted: TokenWanted,
}

/// A token the masters issued, and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The signed JWT.
    pub token: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// What a token request gives.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ServiceAccountToken, FetchError>> + Send + 'a>>;

/// What a fetch gives: the object's values, or `None` when it does not
/// exist.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ConfigData>, FetchError>> + Send + 'a>>;

/// A PersistentVolumeClaim or PersistentVolume as the masters send it:
/// its metadata, and its other fields (`spec`, `status`) as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageObject {
    pub meta: v1::ObjectMeta,
    pub fields: serde_json::Value,
}

/// What a storage fetch gives: the object, or `None` when it does not
/// exist.
pub type StorageFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<StorageObject>, FetchError>> + Send + 'a>>;

/// Where the pods' ConfigMaps, Secrets, claims and volumes come from.
pub trait ConfigSource: Send + Sync + 'static {
    /// The ConfigMap or Secret `name` in `namespace`, as it is now.
    fn fetch<'a>(&'a self, kind: ConfigKind, namespace: &'a str, name: &'a str) -> FetchFuture<'a>;
    /// The PersistentVolumeClaim `name` in `namespace`, or the
    /// PersistentVolume `name` (`namespace` empty), as the leader has it.
    fn fetch_storage<'a>(
        &'a self,
        kind: ConfigKind,
        namespace: &'a str,
        name: &'a str,
    ) -> StorageFuture<'a>;
    /// A token of a pod's service account, bound to the pod
    /// (TokenRequest).
    fn request_token<'a>(&'a self, request: &'a TokenFor) -> TokenFuture<'a>;
}

/// The real source: the masters.
#[derive(Debug)]
pub struct MasterConfigSource {
    masters: Masters,
    /// The master asked first: the last one that answered.
    first: AtomicUsize,
}

impl MasterConfigSource {
    pub fn new(masters: Masters) -> MasterConfigSource {
        MasterConfigSource {
            masters,
            first: AtomicUsize::new(0),
        }
    }

    async fn get(
        &self,
        kind: ConfigKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigData>, FetchError> {
        let Some(object) = self.get_object(kind, namespace, name, true).await? else {
            return Ok(None);
        };
        decode(kind, object)
            .map(Some)
            .map_err(|message| FetchError::Malformed {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message,
            })
    }

    async fn get_storage(
        &self,
        kind: ConfigKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StorageObject>, FetchError> {
        let Some(object) = self.get_object(kind, namespace, name, false).await? else {
            return Ok(None);
        };
        decode_storage(kind, object)
            .map(Some)
            .map_err(|message| FetchError::Malformed {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message,
            })
    }

    /// A token from the first master that issues one. A master that has
    /// not seen the pod yet refuses, so the next is asked; what the leader
    /// says is wrong with the request (no such account or pod, a lifetime
    /// out of bounds) is the answer.
    async fn token(&self, request: &TokenFor) -> Result<ServiceAccountToken, FetchError> {
        let tries = self.masters.known().len().max(1);
        let first = self.first.load(Ordering::Relaxed);
        let mut failure = String::from("no master is known");
        for i in first..first + tries {
            let Some(mut api) = self.masters.api(i) else {
                continue;
            };
            let call = RequestTokenRequest {
                namespace: request.namespace.clone(),
                service_account: request.service_account.clone(),
                audiences: if request.wanted.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![request.wanted.audience.clone()]
                },
                expiration_seconds: Some(request.wanted.expiration_seconds),
                bound_object: Some(BoundObjectReference {
                    kind: "Pod".to_owned(),
                    api_version: "v1".to_owned(),
                    name: request.pod_name.clone(),
                    uid: request.pod_uid.clone(),
                }),
            };
            let status = match tokio::time::timeout(GET_TIMEOUT, api.request_token(call)).await {
                Ok(Ok(answer)) => {
                    self.first.store(i, Ordering::Relaxed);
                    let answer = answer.into_inner();
                    let at = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
                    return Ok(ServiceAccountToken {
                        token: answer.token,
                        issued_at: at(answer.issued_at_unix),
                        expires_at: at(answer.expires_at_unix),
                    });
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    failure = format!("no answer within {GET_TIMEOUT:?}");
                    continue;
                }
            };
            failure = status.message().to_owned();
            if matches!(
                status.code(),
                Code::NotFound | Code::InvalidArgument | Code::Aborted
            ) {
                break;
            }
        }
        Err(FetchError::Token {
            namespace: request.namespace.clone(),
            service_account: request.service_account.clone(),
            message: failure,
        })
    }

    /// One object from the first master that answers: from its replica
    /// when `serializable`, else as the leader has it.
    async fn get_object(
        &self,
        kind: ConfigKind,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Option<Object>, FetchError> {
        let tries = self.masters.known().len().max(1);
        let first = self.first.load(Ordering::Relaxed);
        let mut refused = None;
        let mut failure = String::from("no master is known");
        for i in first..first + tries {
            let Some(mut api) = self.masters.api(i) else {
                continue;
            };
            let request = GetRequest {
                kind: kind.name().to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                serializable,
            };
            // Naming the data format it reads, the agent gets the kinds held
            // as documents (Secrets) as documents.
            let request = super::cluster_objects::naming_format(request);
            let status = match tokio::time::timeout(GET_TIMEOUT, api.get(request)).await {
                Ok(Ok(answer)) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(Some(answer.into_inner()));
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    failure = format!("no answer within {GET_TIMEOUT:?}");
                    continue;
                }
            };
            match status.code() {
                Code::NotFound => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(None);
                }
                // A master whose replica has not seen the pod yet refuses;
                // another may have.
                Code::PermissionDenied => refused = Some(status.message().to_owned()),
                _ => failure = status.message().to_owned(),
            }
        }
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        Err(match refused {
            Some(message) => FetchError::Refused {
                kind,
                namespace,
                name,
                message,
            },
            None => FetchError::Unreachable {
                kind,
                namespace,
                name,
                message: failure,
            },
        })
    }
}

impl ConfigSource for MasterConfigSource {
    fn fetch<'a>(&'a self, kind: ConfigKind, namespace: &'a str, name: &'a str) -> FetchFuture<'a> {
        Box::pin(self.get(kind, namespace, name))
    }

    fn fetch_storage<'a>(
        &'a self,
        kind: ConfigKind,
        namespace: &'a str,
        name: &'a str,
    ) -> StorageFuture<'a> {
        Box::pin(self.get_storage(kind, namespace, name))
    }

    fn request_token<'a>(&'a self, request: &'a TokenFor) -> TokenFuture<'a> {
        Box::pin(self.token(request))
    }
}

/// A claim or volume (`kind`) as the masters send it: a generic object.
fn decode_storage(kind: ConfigKind, object: Object) -> Result<StorageObject, String> {
    match object.kind {
        Some(Body::Generic(generic)) if generic.kind == kind.name() => {
            let fields = serde_json::from_slice(&generic.content)
                .map_err(|e| format!("its fields are not JSON: {e}"))?;
            Ok(StorageObject {
                meta: generic.metadata.unwrap_or_default(),
                fields,
            })
        }
        _ => Err("the answer is another kind of object".to_owned()),
    }
}

/// The values of `object`, a `kind` as the masters send it (a Secret in
/// either encoding: a master of an older release sends its protobuf
/// model).
fn decode(kind: ConfigKind, object: Object) -> Result<ConfigData, String> {
    match (kind, legacy_bodies::to_document(object).kind) {
        (ConfigKind::Secret, Some(Body::Generic(generic))) if generic.kind == "Secret" => {
            let fields: serde_json::Value = serde_json::from_slice(&generic.content)
                .map_err(|e| format!("its fields are not JSON: {e}"))?;
            Ok(ConfigData {
                data: base64_values("data", text_values(&fields, "data")?)?,
                binary_data: BTreeMap::new(),
            })
        }
        (ConfigKind::ConfigMap, Some(Body::Generic(generic))) if generic.kind == "ConfigMap" => {
            let fields: serde_json::Value = serde_json::from_slice(&generic.content)
                .map_err(|e| format!("its fields are not JSON: {e}"))?;
            let data = text_values(&fields, "data")?
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            let binary = text_values(&fields, "binaryData")?;
            Ok(ConfigData {
                data,
                binary_data: base64_values("binaryData", binary)?,
            })
        }
        _ => Err("the answer is another kind of object".to_owned()),
    }
}

/// The string values of the map `field` of `fields` (none when absent).
fn text_values(
    fields: &serde_json::Value,
    field: &str,
) -> Result<BTreeMap<String, String>, String> {
    let Some(map) = fields.get(field).and_then(serde_json::Value::as_object) else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(key, value)| match value.as_str() {
            Some(text) => Ok((key.clone(), text.to_owned())),
            None => Err(format!("{field}[{key}] is not a string")),
        })
        .collect()
}

fn base64_values(
    field: &str,
    values: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let engine = base64::engine::general_purpose::STANDARD;
    values
        .into_iter()
        .map(|(key, value)| match engine.decode(value.as_bytes()) {
            Ok(bytes) => Ok((key, bytes)),
            Err(e) => Err(format!("{field}[{key}] is not base64: {e}")),
        })
        .collect()
}

/// A fake source for the pod workers' tests: the objects a test puts in,
/// every fetch recorded, the next ones failing when told. Passed in
/// explicitly where the masters would be.
#[derive(Debug, Default)]
pub struct StaticConfigSource {
    inner: Mutex<StaticObjects>,
}

#[derive(Debug, Default)]
struct StaticObjects {
    objects: BTreeMap<(ConfigKind, String, String), ConfigData>,
    storage: BTreeMap<(ConfigKind, String, String), StorageObject>,
    fetches: Vec<(ConfigKind, String, String)>,
    failing: u32,
    /// Every token request, in order.
    token_requests: Vec<TokenFor>,
    /// The next this many token requests fail.
    failing_tokens: u32,
    /// When tokens are issued; `None`: now.
    token_clock: Option<SystemTime>,
}

impl StaticConfigSource {
    fn lock(&self) -> std::sync::MutexGuard<'_, StaticObjects> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `namespace`/`name` exists (now) with `data`.
    pub fn put(&self, kind: ConfigKind, namespace: &str, name: &str, data: ConfigData) {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.lock().objects.insert(key, data);
    }

    /// `namespace`/`name` no longer exists.
    pub fn remove(&self, kind: ConfigKind, namespace: &str, name: &str) {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.lock().objects.remove(&key);
    }

    /// The claim or volume `namespace`/`name` exists (now) as `object`.
    pub fn put_storage(
        &self,
        kind: ConfigKind,
        namespace: &str,
        name: &str,
        object: StorageObject,
    ) {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.lock().storage.insert(key, object);
    }

    /// The claim or volume `namespace`/`name` no longer exists.
    pub fn remove_storage(&self, kind: ConfigKind, namespace: &str, name: &str) {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.lock().storage.remove(&key);
    }

    /// The next `n` fetches fail as if no master answered.
    pub fn fail_next(&self, n: u32) {
        self.lock().failing = n;
    }

    /// The next `n` token requests fail as if no master issued one.
    pub fn fail_next_tokens(&self, n: u32) {
        self.lock().failing_tokens = n;
    }

    /// Tokens are issued at `at` from now on.
    pub fn set_token_clock(&self, at: SystemTime) {
        self.lock().token_clock = Some(at);
    }

    /// Every token request so far, in order.
    pub fn token_requests(&self) -> Vec<TokenFor> {
        self.lock().token_requests.clone()
    }

    /// How many fetches there have been of `name`.
    pub fn fetches_of(&self, name: &str) -> usize {
        self.lock()
            .fetches
            .iter()
            .filter(|(_, _, n)| n == name)
            .count()
    }
}

impl ConfigSource for StaticConfigSource {
    fn fetch<'a>(&'a self, kind: ConfigKind, namespace: &'a str, name: &'a str) -> FetchFuture<'a> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut inner = self.lock();
        inner.fetches.push(key.clone());
        let answer = if inner.failing > 0 {
            inner.failing -= 1;
            Err(FetchError::Unreachable {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: "injected failure".to_owned(),
            })
        } else {
            Ok(inner.objects.get(&key).cloned())
        };
        Box::pin(std::future::ready(answer))
    }

    fn fetch_storage<'a>(
        &'a self,
        kind: ConfigKind,
        namespace: &'a str,
        name: &'a str,
    ) -> StorageFuture<'a> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut inner = self.lock();
        inner.fetches.push(key.clone());
        let answer = if inner.failing > 0 {
            inner.failing -= 1;
            Err(FetchError::Unreachable {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: "injected failure".to_owned(),
            })
        } else {
            Ok(inner.storage.get(&key).cloned())
        };
        Box::pin(std::future::ready(answer))
    }

    /// Issues `token-<n>-<pod>` (the n-th request) for the lifetime asked,
    /// at the token clock.
    fn request_token<'a>(&'a self, request: &'a TokenFor) -> TokenFuture<'a> {
        let mut inner = self.lock();
        inner.token_requests.push(request.clone());
        let answer = if inner.failing_tokens > 0 {
            inner.failing_tokens -= 1;
            Err(FetchError::Token {
                namespace: request.namespace.clone(),
                service_account: request.service_account.clone(),
                message: "injected failure".to_owned(),
            })
        } else {
            let issued_at = inner.token_clock.unwrap_or_else(SystemTime::now);
            let lifetime = Duration::from_secs(request.wanted.expiration_seconds.max(0) as u64);
            Ok(ServiceAccountToken {
                token: format!("token-{}-{}", inner.token_requests.len(), request.pod_name),
                issued_at,
                expires_at: issued_at + lifetime,
            })
        };
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use skiff_proto::api::object::Kind as Body;
    use skiff_proto::api::Object;
    use skiff_proto::v1;

    use super::*;
    use crate::master_link::fake_master::TestPki;

    fn meta(name: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            ..Default::default()
        })
    }

    fn config_map(name: &str, fields: serde_json::Value) -> Object {
        Object {
            kind: Some(Body::Generic(v1::GenericObject {
                api_version: "v1".to_owned(),
                kind: "ConfigMap".to_owned(),
                metadata: meta(name),
                content: serde_json::to_vec(&fields).expect("JSON"),
            })),
        }
    }

    /// A Secret as a master of this release sends it: a document.
    fn secret(name: &str, data: &[(&str, &str)]) -> Object {
        let values: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        Object {
            kind: Some(Body::Generic(v1::GenericObject {
                api_version: "v1".to_owned(),
                kind: "Secret".to_owned(),
                metadata: meta(name),
                content: serde_json::to_vec(&serde_json::json!({"type": "Opaque", "data": values}))
                    .expect("JSON"),
            })),
        }
    }

    /// A Secret as a master of an older release sends it: its protobuf
    /// model.
    fn legacy_secret(name: &str, data: &[(&str, &str)]) -> Object {
        Object {
            kind: Some(Body::Secret(v1::Secret {
                metadata: meta(name),
                data: data
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn config_maps_and_secrets_are_read_from_the_masters_decoded() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let fields = serde_json::json!({"data": {"a": "one"}, "binaryData": {"b": "AAE="}});
        master.set_objects("ConfigMap", vec![config_map("app", fields)]);
        master.set_objects(
            "Secret",
            vec![secret("creds", &[("password", "aHVudGVyMg==")])],
        );
        let source = MasterConfigSource::new(pki.masters(&[&master]));

        let app = source.fetch(ConfigKind::ConfigMap, "default", "app").await;
        let app = app.expect("read").expect("it exists");
        assert_eq!(app.data["a"], b"one");
        assert_eq!(app.binary_data["b"], [0u8, 1]);
        let creds = source.fetch(ConfigKind::Secret, "default", "creds").await;
        let creds = creds.expect("read").expect("it exists");
        assert_eq!(creds.data["password"], b"hunter2");
        assert!(creds.binary_data.is_empty());
        // Missing is an answer, not an error.
        let gone = source.fetch(ConfigKind::Secret, "default", "gone").await;
        assert_eq!(gone, Ok(None));
        // Each read is one Get of one object from the master's replica.
        let gets = master.with(|s| s.get_requests.clone());
        let asked: Vec<(&str, &str, bool)> = gets
            .iter()
            .map(|g| (g.kind.as_str(), g.name.as_str(), g.serializable))
            .collect();
        let expected = [
            ("ConfigMap", "app", true),
            ("Secret", "creds", true),
            ("Secret", "gone", true),
        ];
        assert_eq!(asked, expected);
    }

    #[tokio::test]
    async fn a_master_that_does_not_answer_is_passed_over_for_the_next() {
        let pki = TestPki::new("pi-1");
        let down = pki.serve().await;
        let up = pki.serve().await;
        down.with(|s| s.failing_gets = 1);
        up.set_objects("Secret", vec![secret("creds", &[("k", "dg==")])]);
        let source = MasterConfigSource::new(pki.masters(&[&down, &up]));
        let creds = source.fetch(ConfigKind::Secret, "default", "creds").await;
        assert_eq!(creds.expect("read").expect("it exists").data["k"], b"v");
        // The one that answered is asked first from then on.
        source
            .fetch(ConfigKind::Secret, "default", "creds")
            .await
            .expect("read again");
        assert_eq!(down.with(|s| s.get_requests.len()), 1);
        assert_eq!(up.with(|s| s.get_requests.len()), 2);

        // No master answers: an error that says so.
        up.with(|s| s.failing_gets = 1);
        down.with(|s| s.failing_gets = 1);
        let failed = source.fetch(ConfigKind::Secret, "default", "creds").await;
        let error = failed.expect_err("no master answered");
        assert!(matches!(error, FetchError::Unreachable { .. }), "{error}");
        assert!(
            error.to_string().contains("Secret default/creds"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tokens_are_requested_bound_to_the_pod_over_grpc() {
        let pki = TestPki::new("pi-1");
        let refusing = pki.serve().await;
        let master = pki.serve().await;
        // A master that has not seen the pod yet refuses: the next is asked.
        refusing.with(|s| {
            s.token_refusals
                .push_back(tonic::Status::permission_denied("not yet"))
        });
        let source = MasterConfigSource::new(pki.masters(&[&refusing, &master]));
        let request = TokenFor {
            namespace: "shop".into(),
            service_account: "default".into(),
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
            wanted: TokenWanted {
                audience: String::new(),
                expiration_seconds: 3607,
            },
        };
        let token = source.request_token(&request).await.expect("a token");
        assert_eq!(token.token, "token-1");
        assert_eq!(token.issued_at, UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(token.expires_at, UNIX_EPOCH + Duration::from_secs(4607));
        let asked = master.with(|s| s.token_requests.clone());
        assert_eq!(asked.len(), 1);
        let asked = &asked[0];
        assert_eq!(
            (asked.namespace.as_str(), asked.service_account.as_str()),
            ("shop", "default")
        );
        // No audience named: the API's own (none sent).
        assert!(asked.audiences.is_empty());
        assert_eq!(asked.expiration_seconds, Some(3607));
        let bound = asked.bound_object.clone().expect("bound to the pod");
        assert_eq!(
            (bound.kind.as_str(), bound.api_version.as_str()),
            ("Pod", "v1")
        );
        assert_eq!((bound.name.as_str(), bound.uid.as_str()), ("web", "uid-1"));

        // Refused by every master: an error naming the account and why.
        let refuse = |s: &mut crate::master_link::fake_master::State| {
            s.token_refusals
                .push_back(tonic::Status::permission_denied("no pod"))
        };
        refusing.with(refuse);
        master.with(refuse);
        let error = source.request_token(&request).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to fetch token for serviceaccount shop/default: no pod"
        );
    }

    #[test]
    fn what_does_not_decode_is_malformed_naming_the_key() {
        for bad in [
            secret("s", &[("k", "not base64!")]),
            legacy_secret("s", &[("k", "not base64!")]),
        ] {
            let error = decode(ConfigKind::Secret, bad).expect_err("not base64");
            assert!(error.starts_with("data[k] is not base64"), "{error}");
        }
        // A master of an older release sends a Secret's protobuf model.
        let old = decode(ConfigKind::Secret, legacy_secret("s", &[("k", "dg==")])).unwrap();
        assert_eq!(old.data, BTreeMap::from([("k".to_owned(), b"v".to_vec())]));
        let fields = serde_json::json!({"data": {"n": 1}});
        let map = config_map("c", fields);
        let error = decode(ConfigKind::ConfigMap, map).expect_err("a number");
        assert_eq!(error, "data[n] is not a string");
        let not_a_map = secret("s", &[]);
        let error = decode(ConfigKind::ConfigMap, not_a_map).expect_err("a Secret");
        assert_eq!(error, "the answer is another kind of object");
    }
}
