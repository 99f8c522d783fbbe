//! The one path every object change takes, from the API or from the
//! controllers on the leader: place in a namespace, default, validate,
//! check size, then propose through Raft and wait for it to be applied.

use prost::Message;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use std::sync::Arc;

use crate::cluster::{Cluster, ClusterError};
use crate::objects::defaults::apply_defaults;
use crate::objects::metadata::{new_uid, random_suffix};
use crate::objects::validation::{validate, ValidationError};
use crate::objects::{EmptyObject, Kind, ObjectExt, UnknownKind};
use crate::service_ips::{ServiceIpError, ServiceIps};
use crate::store::state_machine::StateMachineError;
use crate::store::{Command, WriteError};
use skiff_values::now_rfc3339;

/// The namespace objects go to when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Largest object the store keeps, as Kubernetes does with etcd's limit.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// Why a write did not happen. Nothing was stored. The API maps each case
/// to a Kubernetes status in one place (`api::error`); controllers ask
/// [`Error::is_conflict`] and friends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (no name, too large).
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    UnknownKind(#[from] UnknownKind),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A Service's clusterIP could not be given.
    #[error("invalid request: {0}")]
    ServiceIp(ServiceIpError),
    /// Raft refused or could not take the write (including the state
    /// machine's refusals: not found, exists, conflict).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The local replica could not be read or decoded.
    #[error(transparent)]
    Storage(#[from] StateMachineError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The state machine's refusal behind this error, if any.
    pub fn refusal(&self) -> Option<&WriteError> {
        match self {
            Error::Cluster(c) => c.refusal(),
            _ => None,
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Cluster(c) if c.is_not_found())
    }

    /// An object of that name exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Cluster(c) if c.is_already_exists())
    }

    /// A conditional write lost to a newer resourceVersion.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Cluster(c) if c.is_conflict())
    }
}

impl From<EmptyObject> for Error {
    fn from(e: EmptyObject) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl From<ServiceIpError> for Error {
    fn from(e: ServiceIpError) -> Self {
        match e {
            ServiceIpError::Store(e) => Error::Storage(e),
            other => Error::ServiceIp(other),
        }
    }
}

/// Validated writes to the replicated store. Must run on the leader; a
/// follower gets `NotLeader`.
#[derive(Clone)]
pub struct ObjectWriter {
    cluster: Cluster,
    service_ips: Arc<ServiceIps>,
}

impl ObjectWriter {
    pub fn new(cluster: Cluster, service_ips: Arc<ServiceIps>) -> ObjectWriter {
        ObjectWriter {
            cluster,
            service_ips,
        }
    }

    /// The replicated store behind the writes.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates an object (named, or named from `generateName`).
    pub async fn create(&self, mut object: Object) -> Result<Object> {
        let kind = object.kind()?;
        place_in_namespace(&mut object, kind)?;
        {
            let meta = object.meta_mut()?;
            if meta.name.is_empty() {
                if meta.generate_name.is_empty() {
                    return Err(Error::Invalid(
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
                let ips = &self.service_ips;
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
    pub async fn update(&self, object: Object) -> Result<Object> {
        self.write_update(object, false).await
    }

    /// Replaces status only; conditional when `metadata.resourceVersion` is set.
    pub async fn update_status(&self, object: Object) -> Result<Object> {
        self.write_update(object, true).await
    }

    async fn write_update(&self, mut object: Object, status_only: bool) -> Result<Object> {
        let kind = object.kind()?;
        place_in_namespace(&mut object, kind)?;
        if object.meta().name.is_empty() {
            return Err(Error::Invalid("metadata.name is required".to_owned()));
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
    ) -> Result<Object> {
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
fn place_in_namespace(object: &mut Object, kind: Kind) -> Result<()> {
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
fn encode_checked(object: &Object) -> Result<Vec<u8>> {
    let bytes = object.encode_to_vec();
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(Error::Invalid(format!(
            "{} {} is {} bytes; objects are limited to {} bytes",
            object.kind().map(|k| k.name()).unwrap_or("object"),
            object.display_name(),
            bytes.len(),
            MAX_OBJECT_BYTES
        )));
    }
    Ok(bytes)
}

fn decode_object(bytes: &[u8]) -> Result<Object> {
    Object::decode(bytes).map_err(|e| {
        Error::Storage(StateMachineError::Decode {
            what: "object",
            reason: e.to_string(),
        })
    })
}
