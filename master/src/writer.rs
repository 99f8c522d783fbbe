//! The one path every object change takes, from the API or from the
//! controllers on the leader: place in a namespace, default, validate,
//! check size, then propose through Raft and wait for it to be applied.

use prost::Message;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use crate::api::ApiError;
use crate::cluster::Cluster;
use crate::objects::defaults::apply_defaults;
use crate::objects::validation::validate;
use crate::objects::{Kind, ObjectExt};
use crate::store::state_machine::StateMachineError;
use crate::store::Command;

/// The namespace objects go to when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Largest object the store keeps, as Kubernetes does with etcd's limit.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// Validated writes to the replicated store. Must run on the leader; a
/// follower gets `NotLeader`.
#[derive(Clone)]
pub struct ObjectWriter {
    cluster: Cluster,
}

impl ObjectWriter {
    pub fn new(cluster: Cluster) -> ObjectWriter {
        ObjectWriter { cluster }
    }

    /// Creates an object (named, or named from `generateName`).
    pub async fn create(&self, mut object: Object) -> Result<Object, ApiError> {
        let kind = object.kind()?;
        place_in_namespace(&mut object, kind)?;
        {
            let meta = object.meta_mut()?;
            if meta.name.is_empty() {
                if meta.generate_name.is_empty() {
                    return Err(ApiError::Invalid(
                        "metadata.name (or metadata.generateName) is required".to_owned(),
                    ));
                }
                meta.name = format!("{}{}", meta.generate_name, random_suffix());
            }
        }
        apply_defaults(&mut object);
        validate(&object)?;
        // A Service's address is chosen and stored under one lock, so no
        // two Services get the same one.
        let _assigning = match &mut object.kind {
            Some(Body::Service(service)) => {
                let ips = &self.cluster.service_ips;
                let guard = ips.lock().await;
                ips.assign(&self.cluster.store, service)?;
                Some(guard)
            }
            _ => None,
        };
        let command = Command::Create {
            object: encode_checked(&object)?,
            uid: new_uid(),
            now: now_rfc3339(),
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }

    /// Replaces metadata and spec (status is kept); conditional when
    /// `metadata.resourceVersion` is set.
    pub async fn update(&self, object: Object) -> Result<Object, ApiError> {
        self.write_update(object, false).await
    }

    /// Replaces status only; conditional when `metadata.resourceVersion` is set.
    pub async fn update_status(&self, object: Object) -> Result<Object, ApiError> {
        self.write_update(object, true).await
    }

    async fn write_update(
        &self,
        mut object: Object,
        status_only: bool,
    ) -> Result<Object, ApiError> {
        let kind = object.kind()?;
        place_in_namespace(&mut object, kind)?;
        if object.meta().name.is_empty() {
            return Err(ApiError::Invalid("metadata.name is required".to_owned()));
        }
        if !status_only {
            apply_defaults(&mut object);
            validate(&object)?;
            if let Some(Body::Service(service)) = &mut object.kind {
                let meta = service.metadata.clone().unwrap_or_default();
                let old = self
                    .cluster
                    .store
                    .get(Kind::Service, &meta.namespace, &meta.name)?;
                if let Some(Body::Service(old)) = old.and_then(|o| o.kind) {
                    crate::service_ips::keep_on_update(&old, service)?;
                }
            }
        }
        let command = Command::Update {
            object: encode_checked(&object)?,
            status_only,
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }

    /// Deletes an object; with a non-empty `resource_version`, only at it.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<Object, ApiError> {
        let command = Command::Delete {
            kind,
            namespace: namespace_for(kind, namespace),
            name: name.to_owned(),
            resource_version: resource_version.to_owned(),
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }
}

/// Namespaced kinds default to `default`; cluster-scoped kinds have none.
fn place_in_namespace(object: &mut Object, kind: Kind) -> Result<(), ApiError> {
    let meta = object.meta_mut()?;
    meta.namespace = namespace_for(kind, &meta.namespace);
    Ok(())
}

pub fn namespace_for(kind: Kind, given: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if given.is_empty() {
        DEFAULT_NAMESPACE.to_owned()
    } else {
        given.to_owned()
    }
}

/// Encodes an object for the store, refusing ones over [`MAX_OBJECT_BYTES`].
fn encode_checked(object: &Object) -> Result<Vec<u8>, ApiError> {
    let bytes = object.encode_to_vec();
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::Invalid(format!(
            "{} {} is {} bytes; objects are limited to {} bytes",
            object.kind().map(|k| k.name()).unwrap_or("object"),
            object.display_name(),
            bytes.len(),
            MAX_OBJECT_BYTES
        )));
    }
    Ok(bytes)
}

fn decode_object(bytes: &[u8]) -> Result<Object, ApiError> {
    Object::decode(bytes).map_err(|e| {
        ApiError::Storage(StateMachineError::Decode {
            what: "object",
            reason: e.to_string(),
        })
    })
}

/// A random RFC 4122 version-4 UUID, as Kubernetes uses for `metadata.uid`.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no
/// look-alike digits, so no words appear by accident).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Now, as Kubernetes writes timestamps (`2026-01-02T03:04:05Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
