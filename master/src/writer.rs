//! The one path every object change takes, from the API or from the
//! controllers on the leader: place in a namespace, default, validate,
//! check size, then propose through Raft and wait for it to be applied.
//!
//! Objects of custom kinds are written as their served definition says
//! (`admit_custom`): refused while it is being deleted (creates) or not
//! served, pruned, defaulted and validated by the schema of their version,
//! stored at the storage version; a create drops the status when the
//! version has a `status` subresource, and an update of a kind without
//! one writes the status too (`Command::UpdateWhole`). A created
//! CustomResourceDefinition gets the finalizer that holds it until its
//! objects are deleted (`custom_resources::CLEANUP_FINALIZER`), kept on
//! updates until it is being deleted; its scope and kind cannot change.

use prost::Message;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use std::sync::Arc;

use crate::cluster::{Cluster, ClusterError};
use crate::node_ports::{NodePortError, NodePorts};
use crate::service_ips::{ServiceIpError, ServiceIps};
use crate::store::state_machine::StateMachineError;
use crate::store::{Command, WriteError};
use skiff_objects::custom_resources::{self, Definition, CLEANUP_FINALIZER};
use skiff_objects::defaults::apply_defaults;
use skiff_objects::deletion::DeleteOptions;
use skiff_objects::metadata::{new_uid, random_suffix};
use skiff_objects::now_rfc3339;
use skiff_objects::registry::custom::served_definition;
use skiff_objects::validation::{
    has_update_rules, validate, validate_parsed, validate_update, FieldError, ValidationError,
};
use skiff_objects::{
    generic, legacy_bodies, pods, services, storage, CustomKind, EmptyObject, Kind, ObjectExt,
    UnknownKind,
};

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
    /// A Service's nodePorts could not be given.
    #[error("invalid request: {0}")]
    NodePort(NodePortError),
    /// Raft refused or could not take the write (including the state
    /// machine's refusals: not found, exists, conflict, and an address
    /// another object holds, `WriteError::AddressTaken`, when the
    /// allocators' view was behind the log).
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
        Error::ServiceIp(e)
    }
}

impl From<NodePortError> for Error {
    fn from(e: NodePortError) -> Self {
        Error::NodePort(e)
    }
}

/// Validated writes to the replicated store. Must run on the leader; a
/// follower gets `NotLeader`.
#[derive(Clone)]
pub struct ObjectWriter {
    cluster: Cluster,
    service_ips: Arc<ServiceIps>,
    node_ports: Arc<NodePorts>,
}

impl ObjectWriter {
    pub fn new(
        cluster: Cluster,
        service_ips: Arc<ServiceIps>,
        node_ports: Arc<NodePorts>,
    ) -> ObjectWriter {
        ObjectWriter {
            cluster,
            service_ips,
            node_ports,
        }
    }

    /// The replicated store behind the writes.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates an object (named, or named from `generateName`). One of a
    /// kind held as a document, sent in its protobuf model (by a client of
    /// an older release), is made its document first.
    pub async fn create(&self, object: Object) -> Result<Object> {
        let mut object = legacy_bodies::to_document(object);
        not_cut(&object)?;
        let kind = object.kind()?;
        not_ephemeral(kind)?;
        if let Kind::Custom(custom) = kind {
            admit_custom(custom, &mut object, Write::Create)?;
        }
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
        // A pod's document is defaulted, admitted and validated on one
        // parse of its fields (the most frequent create).
        let pod_content = match (kind, object.kind.as_mut()) {
            (Kind::Pod, Some(Body::Generic(pod))) => {
                let mut content = generic::content(pod);
                skiff_objects::defaults::pod_content(&mut content);
                let namespace = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
                self.admit_pod(namespace, &mut content);
                generic::set_content(pod, &content);
                Some(content)
            }
            _ => {
                apply_defaults(&mut object);
                None
            }
        };
        // The uid is known now, so that a Job can select its pods by it.
        let uid = new_uid();
        match (kind, object.kind.as_mut()) {
            (Kind::Job, Some(Body::Generic(job))) => {
                skiff_objects::generic::generate_job_selector(job, &uid);
            }
            // Admission as Kubernetes' DefaultStorageClass and
            // StorageObjectInUseProtection plugins do it.
            (Kind::PersistentVolumeClaim, Some(Body::Generic(claim))) => {
                let (classes, _) = self.cluster.store.cache().list(Kind::StorageClass, None);
                let default = storage::default_class_name(&classes);
                storage::admit_claim(claim, default.as_deref());
            }
            (Kind::PersistentVolume, Some(Body::Generic(volume))) => storage::admit_volume(volume),
            (Kind::CustomResourceDefinition, Some(Body::Generic(crd))) => {
                let meta = crd.metadata.get_or_insert_with(Default::default);
                if !meta.finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
                    meta.finalizers.push(CLEANUP_FINALIZER.to_owned());
                }
            }
            _ => {}
        }
        match &pod_content {
            Some(content) => validate_parsed(&object, content)?,
            None => validate(&object)?,
        }
        if let Kind::Custom(custom) = kind {
            to_storage_version(custom, &mut object);
        }
        // A Service's address and nodePorts stay reserved until the create
        // is applied (then the cache holds them) or fails, so concurrent
        // creates never get the same one and none waits for another.
        let _reserved = match read_service(&object)? {
            Some(mut service) => {
                let cache = self.cluster.store.cache();
                let ip = self.service_ips.assign(cache, &mut service)?;
                let ports = self.node_ports.assign(cache, &mut service, None)?;
                // Written back even when the allocators changed nothing:
                // through Kubernetes' type, the spec keeps only the fields
                // it has, as kube-apiserver stores what it decoded.
                services::set_spec(&mut object, service.spec.unwrap_or_default());
                Some((ip, ports))
            }
            None => None,
        };
        let command = Command::Create {
            object: self.encode_for_store(&object)?,
            uid,
            now: now_rfc3339(),
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }

    /// Creates an object a controller made from a template (a Job's,
    /// StatefulSet's or DaemonSet's pod, every field of the template in
    /// it). While a master of an older release is in the cluster (one
    /// whose data format is before the kind moved to documents: it reads
    /// only the protobuf model), the object is created without the fields
    /// that model has no place for, as this release made such pods before
    /// (a pod a user writes with them is refused then, naming the field);
    /// once every master runs this release, pods keep them.
    pub async fn create_from_template(&self, object: Object) -> Result<Object> {
        let older_member = legacy_bodies::moved_document_at(&object)
            .is_some_and(|moved_at| self.cluster.members_data_format() < moved_at);
        if !older_member {
            return self.create(object).await;
        }
        // Whole in the model: written as it is.
        if legacy_bodies::to_legacy(object.clone()).is_ok() {
            return self.create(object).await;
        }
        match legacy_bodies::cut_to_model(object.clone()) {
            Ok(cut) => {
                tracing::warn!(
                    object = %object.display_name(),
                    "created without the fields an older master's model has no place for, until every master runs this release"
                );
                self.create(cut).await
            }
            Err(_) => self.create(object).await,
        }
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

    async fn write_update(&self, object: Object, status_only: bool) -> Result<Object> {
        let mut object = legacy_bodies::to_document(object);
        not_cut(&object)?;
        let kind = object.kind()?;
        not_ephemeral(kind)?;
        place_in_namespace(&mut object, kind)?;
        if object.meta().name.is_empty() {
            return Err(Error::Invalid("metadata.name is required".to_owned()));
        }
        if let Kind::Custom(custom) = kind {
            let write = if status_only {
                Write::Status
            } else {
                Write::Update
            };
            let whole = admit_custom(custom, &mut object, write)?;
            apply_defaults(&mut object);
            validate(&object)?;
            to_storage_version(custom, &mut object);
            let object = self.encode_for_store(&object)?;
            let command = if whole {
                Command::UpdateWhole { object }
            } else {
                Command::Update {
                    object,
                    status_only,
                }
            };
            return decode_object(&self.cluster.propose(command).await?.object);
        }
        if kind == Kind::CustomResourceDefinition && !status_only {
            self.admit_definition_update(&mut object)?;
        }
        // New nodePorts (and the address of a Service that was
        // ExternalName) stay reserved until the update is applied or fails.
        let _reserved = if status_only {
            None
        } else {
            apply_defaults(&mut object);
            let mut service = read_service(&object)?;
            let old_service = match &service {
                Some(_) => {
                    let meta = object.meta();
                    let old = self
                        .cluster
                        .store
                        .get(Kind::Service, &meta.namespace, &meta.name)?;
                    old.as_ref().and_then(services::read)
                }
                None => None,
            };
            if let (Some(old), Some(service)) = (&old_service, &mut service) {
                crate::service_ips::drop_type_dependent_fields(old, service);
                services::set_spec(&mut object, service.spec.clone().unwrap_or_default());
            }
            validate(&object)?;
            self.admit_update(&object)?;
            match service {
                Some(mut service) => {
                    let cache = self.cluster.store.cache();
                    let mut address = None;
                    if let Some(old) = &old_service {
                        crate::service_ips::keep_on_update(old, &mut service)?;
                        if crate::service_ips::needs_address(old, &service) {
                            address = Some(self.service_ips.assign(cache, &mut service)?);
                        }
                    }
                    let ports =
                        self.node_ports
                            .assign(cache, &mut service, old_service.as_ref())?;
                    services::set_spec(&mut object, service.spec.unwrap_or_default());
                    Some((address, ports))
                }
                None => None,
            }
        };
        let command = Command::Update {
            object: self.encode_for_store(&object)?,
            status_only,
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }

    /// Deletes an object with the default options; with a non-empty
    /// `resource_version`, only at it (see [`ObjectWriter::delete_with`]).
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<Object> {
        let options = DeleteOptions::at_version(resource_version);
        self.delete_with(kind, namespace, name, options).await
    }

    /// Deletes an object as Kubernetes does (`objects::deletion`): it goes
    /// at once, or stays marked (`metadata.deletionTimestamp`) while
    /// finalizers, dependents to collect (Foreground, Orphan) or a pod's
    /// grace period hold it. Answers the object as removed, or as marked.
    pub async fn delete_with(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: DeleteOptions,
    ) -> Result<Object> {
        not_ephemeral(kind)?;
        let command = Command::DeleteWithOptions {
            kind,
            namespace: namespace_for(kind, namespace),
            name: name.to_owned(),
            options,
            now: now_rfc3339(),
        };
        decode_object(&self.cluster.propose(command).await?.object)
    }
}

impl ObjectWriter {
    /// Registry and API credentials from a pod's service account, as
    /// Kubernetes' ServiceAccount admission plugin adds them to a created
    /// pod (`content`: its document's fields, defaulted).
    fn admit_pod(&self, namespace: &str, content: &mut serde_json::Map<String, serde_json::Value>) {
        let Some(spec) = content.get_mut("spec").filter(|s| s.is_object()) else {
            return;
        };
        let named = spec["serviceAccountName"].as_str().unwrap_or_default();
        let name = if named.is_empty() { "default" } else { named };
        let cache = self.cluster.store.cache();
        let account = cache.get(Kind::ServiceAccount, namespace, name);
        pods::admit_pull_secrets(spec, account.as_deref());
        pods::admit_service_account_token(spec, account.as_deref(), random_suffix);
    }
}

/// Refuses a copy of an object that was cut down for a client of an older
/// release (`legacy_bodies::CUT_ANNOTATION`): written back, it would lose
/// what was left out of it.
fn not_cut(object: &Object) -> Result<()> {
    match legacy_bodies::cut_from(object) {
        Some(left_out) => Err(Error::Invalid(format!(
            "{} {:?} is a copy cut down for a client of an older release ({left_out}; annotation {}): read it again with a client of this release, and write that",
            object.kind().map(|k| k.name()).unwrap_or("object"),
            object.meta().name,
            legacy_bodies::CUT_ANNOTATION
        ))),
        None => Ok(()),
    }
}

/// The Service `object` is (as the allocators read it: its spec and
/// status, its name and namespace); `None` for another kind. A Service
/// whose fields do not read as one is refused.
fn read_service(object: &Object) -> Result<Option<services::Service>> {
    if !services::is_service(object) {
        return Ok(None);
    }
    if let Some(service) = services::read(object) {
        return Ok(Some(service));
    }
    // Why not, for the answer.
    let why = match &object.kind {
        Some(Body::Generic(document)) => skiff_objects::typed::decode::<services::Service>(
            serde_json::Value::Object(generic::content(document)),
        )
        .err()
        .map(|e| e.to_string()),
        _ => None,
    };
    Err(Error::Invalid(format!(
        "Service {:?}: its fields do not read as a Service: {}",
        object.meta().name,
        why.unwrap_or_else(|| "not a Service's body".to_owned())
    )))
}

impl ObjectWriter {
    /// What Kubernetes does not let an update change
    /// (`validation::validate_update`), against the stored object with
    /// today's defaults. An update at another resourceVersion than the
    /// cached one is left to the store, which refuses it as a conflict
    /// (as kube-apiserver checks the precondition before validating); one
    /// newer than this master has applied, just after a leader change, is
    /// not checked.
    fn admit_update(&self, object: &Object) -> Result<()> {
        let kind = object.kind()?;
        if !has_update_rules(kind) {
            return Ok(());
        }
        let meta = object.meta();
        let cache = self.cluster.store.cache();
        let Some(stored) = cache.get(kind, &meta.namespace, &meta.name) else {
            return Ok(());
        };
        let asked = &meta.resource_version;
        if !asked.is_empty() && *asked != stored.meta().resource_version {
            return Ok(());
        }
        // Defaults added since it was stored are not changes.
        let mut stored = Object::clone(&stored);
        apply_defaults(&mut stored);
        validate_update(&stored, object)?;
        Ok(())
    }

    /// What a CustomResourceDefinition's update may not change (its scope;
    /// its kind, which its objects are stored by), and the cleanup
    /// finalizer it keeps until it is being deleted.
    fn admit_definition_update(&self, object: &mut Object) -> Result<()> {
        let Some(Body::Generic(sent)) = object.kind.as_mut() else {
            return Ok(());
        };
        let meta = sent.metadata.clone().unwrap_or_default();
        let cache = self.cluster.store.cache();
        let Some(stored) = cache.get(Kind::CustomResourceDefinition, "", &meta.name) else {
            return Ok(());
        };
        let Some(Body::Generic(stored)) = &stored.kind else {
            return Ok(());
        };
        let none = |_: &str| false;
        let (before, _) = Definition::examine(stored, &none);
        let (after, _) = Definition::examine(sent, &none);
        let mut errors = Vec::new();
        if before.scope != after.scope {
            errors.push(FieldError {
                path: "spec.scope".to_owned(),
                reason: format!(
                    "Invalid value: {:?}: field is immutable",
                    scope_name(&after)
                ),
            });
        }
        if !before.names.kind.is_empty() && before.names.kind != after.names.kind {
            errors.push(FieldError {
                path: "spec.names.kind".to_owned(),
                reason: format!(
                    "Invalid value: {:?}: field is immutable (objects of the kind are stored by it)",
                    after.names.kind
                ),
            });
        }
        if !errors.is_empty() {
            return Err(Error::Validation(ValidationError {
                kind: Kind::CustomResourceDefinition.name().to_owned(),
                name: meta.name,
                errors,
            }));
        }
        let stored_meta = stored.metadata.clone().unwrap_or_default();
        let held = stored_meta
            .finalizers
            .iter()
            .any(|f| f == CLEANUP_FINALIZER);
        if held && stored_meta.deletion_timestamp.is_empty() {
            let sent_meta = sent.metadata.get_or_insert_with(Default::default);
            if !sent_meta.finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
                sent_meta.finalizers.push(CLEANUP_FINALIZER.to_owned());
            }
        }
        Ok(())
    }
}

fn scope_name(definition: &Definition) -> &'static str {
    if definition.namespaced() {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// A write of an object of a custom kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
    Status,
}

/// What writing an object of a custom kind needs of its definition: that
/// it is served (and not being deleted, for a create), in a served
/// version, which has a `status` subresource for a status write. A create
/// of a version with a `status` subresource drops the status, as
/// kube-apiserver does. Answers whether an update writes the whole object
/// (the version has no `status` subresource, so status is like any
/// field).
fn admit_custom(kind: CustomKind, object: &mut Object, write: Write) -> Result<bool> {
    let served = served_definition(kind).ok_or_else(|| {
        Error::Invalid(format!(
            "no CustomResourceDefinition serves {} (it was deleted, or its names are not accepted)",
            kind.qualified()
        ))
    })?;
    let definition = &served.definition;
    if write == Write::Create && definition.deleting {
        return Err(Error::Invalid(format!(
            "create not allowed while custom resource definition {} is terminating",
            definition.name
        )));
    }
    let Some(Body::Generic(g)) = object.kind.as_mut() else {
        return Err(Error::Invalid(format!(
            "{} objects are held as generic objects",
            kind.qualified()
        )));
    };
    let version = custom_resources::version_of(definition, &g.api_version)
        .filter(|v| v.served)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "apiVersion {:?} is not a served version of {}",
                g.api_version, definition.name
            ))
        })?;
    match write {
        Write::Status if !version.status => Err(Error::Invalid(format!(
            "{} {} has no status subresource",
            definition.name, version.name
        ))),
        Write::Create if version.status => {
            let mut content = generic::content(g);
            if content.remove("status").is_some() {
                generic::set_content(g, &content);
            }
            Ok(false)
        }
        Write::Update => Ok(!version.status),
        _ => Ok(false),
    }
}

/// Stores an object of a custom kind at its definition's storage version
/// (conversion `None`: only `apiVersion` changes).
fn to_storage_version(kind: CustomKind, object: &mut Object) {
    let Some(served) = served_definition(kind) else {
        return;
    };
    if let Some(Body::Generic(g)) = object.kind.as_mut() {
        g.api_version = served.storage.api_version.to_owned();
    }
}

/// Refuses kinds the replicated store does not hold (Events live in the
/// leader's memory: `crate::events`, through the API).
fn not_ephemeral(kind: Kind) -> Result<()> {
    if kind.is_ephemeral() {
        return Err(Error::Invalid(format!(
            "{kind} objects are kept in the leader's memory, not in the store; write them through the API"
        )));
    }
    Ok(())
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

impl ObjectWriter {
    /// Encodes an object for the store: a moved kind's document in its
    /// protobuf model while a master of an older release (one whose data
    /// format is before the kind moved: it reads only that) is in the
    /// cluster, as it is otherwise (`skiff_objects::legacy_bodies`; every
    /// master reads both). The same format decides what snapshots carry.
    fn encode_for_store(&self, object: &Object) -> Result<Vec<u8>> {
        let Some(moved_at) = legacy_bodies::moved_document_at(object) else {
            return encode_checked(object);
        };
        let format = self.cluster.members_data_format();
        self.cluster.store.set_snapshot_reader_format(format);
        if format >= moved_at {
            return encode_checked(object);
        }
        let legacy =
            legacy_bodies::to_legacy(object.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        encode_checked(&legacy)
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
    legacy_bodies::decode(bytes).map_err(|e| {
        Error::Storage(StateMachineError::Decode {
            what: "object",
            reason: e.to_string(),
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use openraft::ServerState;
    use skiff_proto::v1;
    use tempfile::TempDir;

    use super::*;
    use crate::store::MemberNode;
    use skiff_objects::IntoObject;

    /// A real one-member Raft cluster in a temp dir, leading, with the
    /// `default` namespace, and a writer over it.
    pub(crate) async fn one_member() -> (TempDir, ObjectWriter) {
        let me = MemberNode {
            raft_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:1".into(),
        };
        let (dir, cluster) = Cluster::one_member(me).await;
        cluster
            .raft
            .wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "one member leads")
            .await
            .unwrap();
        let ips = ServiceIps::new("10.43.0.0/16".parse().unwrap()).unwrap();
        let node_ports = NodePorts::new(Default::default());
        let writer = ObjectWriter::new(cluster, Arc::new(ips), Arc::new(node_ports));
        writer
            .create(skiff_objects::namespaces::named(DEFAULT_NAMESPACE, ""))
            .await
            .unwrap();
        (dir, writer)
    }

    fn pod(name: &str, generate_name: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                generate_name: generate_name.into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// Adds member 2, a learner that never answers (so of a data format
    /// not known yet, until a test records one for it).
    async fn add_silent_member(writer: &ObjectWriter) {
        let learner = MemberNode {
            raft_addr: "127.0.0.1:9".into(),
            api_addr: "127.0.0.1:9".into(),
        };
        writer
            .cluster
            .raft
            .add_learner(2, learner, false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_pod_made_from_a_template_leaves_out_what_an_older_masters_model_lacks() {
        let (_dir, writer) = one_member().await;
        let pod = |name: &str| {
            let meta = v1::ObjectMeta {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.into(),
                ..Default::default()
            };
            let content = serde_json::json!({"spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}},
            }});
            let document = generic::document("v1", "Pod", Some(meta), content);
            Object {
                kind: Some(Body::Generic(document)),
            }
        };
        let affinity_of = |name: &str| {
            let stored = writer.cluster.store.get(Kind::Pod, DEFAULT_NAMESPACE, name);
            let stored = stored.unwrap().expect("stored");
            let Some(Body::Generic(document)) = &stored.kind else {
                panic!("a document: {stored:?}");
            };
            generic::content(document)["spec"]["affinity"].clone()
        };
        // Every member reads documents: kept.
        writer.create_from_template(pod("now")).await.unwrap();
        assert!(affinity_of("now").is_object());
        // A member of data format 6 (pods still in their protobuf model).
        add_silent_member(&writer).await;
        let format_six = crate::store::network::PeerRelease::this(6);
        writer.cluster.contacts.record(2, Some(format_six));
        assert_eq!(writer.cluster.members_data_format(), 6);
        // A user's pod with the field is refused, naming it.
        let refused = writer.create(pod("asked")).await.unwrap_err().to_string();
        assert!(refused.contains("affinity"), "{refused}");
        // A controller's is made without it, as before this release.
        writer.create_from_template(pod("made")).await.unwrap();
        assert!(affinity_of("made").is_null());
        // The member upgraded: kept again.
        let format_seven = crate::store::network::PeerRelease::this(7);
        writer.cluster.contacts.record(2, Some(format_seven));
        writer.create_from_template(pod("later")).await.unwrap();
        assert!(affinity_of("later").is_object());
    }

    #[tokio::test]
    async fn a_replicaset_made_from_a_template_leaves_out_what_an_older_masters_model_lacks() {
        let (_dir, writer) = one_member().await;
        let replica_set = |name: &str| {
            let meta = v1::ObjectMeta {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.into(),
                ..Default::default()
            };
            let content = serde_json::json!({"spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{"name": "c", "image": "busybox"}],
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                            "whenUnsatisfiable": "DoNotSchedule"}],
                    },
                },
            }});
            let document = generic::document("apps/v1", "ReplicaSet", Some(meta), content);
            Object {
                kind: Some(Body::Generic(document)),
            }
        };
        let spread_of = |name: &str| {
            let stored = writer
                .cluster
                .store
                .get(Kind::ReplicaSet, DEFAULT_NAMESPACE, name);
            let stored = stored.unwrap().expect("stored");
            let Some(Body::Generic(document)) = &stored.kind else {
                panic!("a document: {stored:?}");
            };
            generic::content(document)["spec"]["template"]["spec"]["topologySpreadConstraints"]
                .clone()
        };
        // A member of data format 7 (ReplicaSets still in their protobuf
        // model, which has no place for a spread constraint).
        add_silent_member(&writer).await;
        let format_seven = crate::store::network::PeerRelease::this(7);
        writer.cluster.contacts.record(2, Some(format_seven));
        assert_eq!(writer.cluster.members_data_format(), 7);
        let refused = writer.create(replica_set("asked")).await.unwrap_err();
        assert!(
            refused.to_string().contains("topologySpreadConstraints"),
            "{refused}"
        );
        // A Deployment's is made without it, as before this release.
        writer
            .create_from_template(replica_set("made"))
            .await
            .unwrap();
        assert!(spread_of("made").is_null());
        // The member upgraded: kept.
        let format_eight = crate::store::network::PeerRelease::this(8);
        writer.cluster.contacts.record(2, Some(format_eight));
        writer
            .create_from_template(replica_set("later"))
            .await
            .unwrap();
        assert_eq!(spread_of("later")[0]["topologyKey"], "zone");
    }

    #[tokio::test]
    async fn a_moved_kind_is_written_in_its_protobuf_model_while_a_member_may_read_only_that() {
        let (_dir, writer) = one_member().await;
        let meta = |name: &str| v1::ObjectMeta {
            name: name.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            ..Default::default()
        };
        let secret = |name: &str| {
            let values = [("k".to_owned(), b"v".to_vec())].into();
            skiff_objects::secrets::object(meta(name), "Opaque", values)
        };
        let encoded_body = |object: &Object| {
            let bytes = writer.encode_for_store(object).unwrap();
            Object::decode(&bytes[..]).unwrap().kind
        };
        // Every member (this one) reads documents: a document.
        assert_eq!(
            writer.cluster.members_data_format(),
            legacy_bodies::LATEST_FORMAT
        );
        assert!(matches!(encoded_body(&secret("a")), Some(Body::Generic(_))));
        // A learner that has never answered may be a master of an older
        // release: the protobuf model, which it reads.
        add_silent_member(&writer).await;
        assert_eq!(writer.cluster.members_data_format(), 0);
        assert!(matches!(encoded_body(&secret("b")), Some(Body::Secret(_))));
        // Written so, it is a document in the store all the same.
        let created = writer.create(secret("b")).await.unwrap();
        let stored = writer
            .cluster
            .store
            .get(Kind::Secret, DEFAULT_NAMESPACE, "b")
            .unwrap()
            .unwrap();
        for object in [&created, &stored] {
            assert!(legacy_bodies::is_moved_document(object), "{object:?}");
            let secret = skiff_objects::secrets::read(object).unwrap();
            assert_eq!(skiff_objects::secrets::value(&secret, "k"), Some(&b"v"[..]));
        }
        // Other kinds are never converted.
        assert!(matches!(encoded_body(&pod("p", "")), Some(Body::Pod(_))));
        // The learner names data format 3: Secrets as documents, which it
        // reads, Namespaces still in their protobuf model.
        let format_three = crate::store::network::PeerRelease::this(3);
        writer.cluster.contacts.record(2, Some(format_three));
        assert_eq!(writer.cluster.members_data_format(), 3);
        assert!(matches!(encoded_body(&secret("c")), Some(Body::Generic(_))));
        let team = skiff_objects::namespaces::named("team", "Active");
        assert!(matches!(encoded_body(&team), Some(Body::Namespace(_))));
        // Written so, it is a document in the store all the same.
        writer.create(team).await.unwrap();
        let stored = writer.cluster.store.get(Kind::Namespace, "", "team");
        let stored = stored.unwrap().unwrap();
        assert!(legacy_bodies::is_moved_document(&stored), "{stored:?}");
        assert_eq!(
            skiff_objects::namespaces::phase(&stored).as_deref(),
            Some("Active")
        );
        // One with a field the protobuf model lacks cannot be written for
        // it: refused, naming the field, not stored without it.
        let mut conditions = skiff_objects::namespaces::named("odd", "Active");
        if let Some(Body::Generic(g)) = conditions.kind.as_mut() {
            let content = serde_json::json!({
                "status": {"phase": "Active", "conditions": [{"type": "X", "status": "True"}]},
            });
            skiff_objects::generic::set_content(g, content.as_object().unwrap());
        }
        let refused = writer.create(conditions).await.unwrap_err().to_string();
        assert!(refused.contains("status.conditions"), "{refused}");
        assert!(refused.contains("for an older release"), "{refused}");
        let odd = writer
            .cluster
            .store
            .get(Kind::Namespace, "", "odd")
            .unwrap();
        assert!(odd.is_none());
        // The learner names data format 5: Endpoints as documents,
        // Services still in their protobuf model, allocated all the same.
        let format_five = crate::store::network::PeerRelease::this(5);
        writer.cluster.contacts.record(2, Some(format_five));
        assert_eq!(writer.cluster.members_data_format(), 5);
        let web = service("web", "");
        assert!(matches!(encoded_body(&web), Some(Body::Service(_))));
        let created = writer.create(web).await.unwrap();
        let stored = writer
            .cluster
            .store
            .get(Kind::Service, DEFAULT_NAMESPACE, "web");
        let stored = stored.unwrap().unwrap();
        for object in [&created, &stored] {
            assert!(legacy_bodies::is_moved_document(object), "{object:?}");
            assert_eq!(cluster_ip(object), "10.43.0.11");
        }
        // publishNotReadyAddresses is a field its model lacks: refused for
        // it, by its path.
        let mut peers = services::read(&service("peers", "")).unwrap();
        peers.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let meta = v1::ObjectMeta {
            name: "peers".into(),
            ..Default::default()
        };
        let peers = services::object(meta, peers.spec.unwrap(), None);
        let refused = writer.create(peers).await.unwrap_err().to_string();
        assert!(
            refused.contains("spec.publishNotReadyAddresses"),
            "{refused}"
        );
        let none = writer
            .cluster
            .store
            .get(Kind::Service, DEFAULT_NAMESPACE, "peers");
        assert!(none.unwrap().is_none());
        // Once every member reads Services as documents, it is taken.
        writer
            .cluster
            .contacts
            .record(2, Some(crate::store::network::PeerRelease::this(6)));
        let mut peers = services::read(&service("peers", "")).unwrap();
        peers.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let meta = v1::ObjectMeta {
            name: "peers".into(),
            ..Default::default()
        };
        let taken = writer
            .create(services::object(meta, peers.spec.unwrap(), None))
            .await
            .unwrap();
        assert!(services::publishes_not_ready(
            &services::read(&taken).unwrap()
        ));
    }

    #[tokio::test]
    async fn events_never_go_into_the_store() {
        let (_dir, writer) = one_member().await;
        let event = v1::GenericObject {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: Some(v1::ObjectMeta {
                name: "web.17f3a".into(),
                ..Default::default()
            }),
            content: b"{}".to_vec(),
        }
        .into_object();
        let refused = writer.create(event.clone()).await.unwrap_err();
        assert!(matches!(refused, Error::Invalid(_)), "{refused}");
        assert!(writer.update(event).await.is_err());
        let deleted = writer.delete(Kind::Event, "default", "web.17f3a", "").await;
        assert!(matches!(deleted, Err(Error::Invalid(_))));
        let stored = writer.cluster().store.list(Kind::Event, None).unwrap().0;
        assert!(stored.is_empty());
    }

    fn service(name: &str, cluster_ip: &str) -> Object {
        v1::Service {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::ServiceSpec {
                cluster_ip: cluster_ip.into(),
                selector: [("app".to_owned(), name.to_owned())].into(),
                ports: vec![v1::ServicePort {
                    port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn cluster_ip(object: &Object) -> String {
        let service = services::read(object).expect("a Service");
        services::cluster_ip(&service).to_owned()
    }

    #[tokio::test]
    async fn a_copy_cut_down_for_an_older_client_is_never_written_back() {
        use skiff_objects::services::{ServicePort, ServiceSpec};
        let (_dir, writer) = one_member().await;
        let spec = ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        };
        let meta = v1::ObjectMeta {
            name: "peers".into(),
            ..Default::default()
        };
        let stored = writer
            .create(services::object(meta, spec, None))
            .await
            .unwrap();
        // What an agent or skiff ctl of format 5 reads: the protobuf model,
        // without publishNotReadyAddresses, marked.
        let cut = legacy_bodies::for_reader(stored.clone(), 5);
        assert!(matches!(cut.kind, Some(Body::Service(_))), "{cut:?}");
        let left_out = legacy_bodies::cut_from(&cut).expect("marked as cut");
        assert!(
            left_out.contains("spec.publishNotReadyAddresses"),
            "{left_out}"
        );
        let before = writer.cluster().store.revision();
        for attempt in [writer.update(cut.clone()).await, writer.create(cut).await] {
            let e = attempt.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e}");
            assert!(e.to_string().contains("cut down"), "{e}");
        }
        assert_eq!(writer.cluster().store.revision(), before, "nothing stored");
        let kept = writer
            .cluster()
            .store
            .get(Kind::Service, DEFAULT_NAMESPACE, "peers");
        let kept = services::read(&kept.unwrap().unwrap()).unwrap();
        assert!(services::publishes_not_ready(&kept));
        // A reader of this release gets it whole and unmarked.
        let whole = legacy_bodies::for_reader(stored, legacy_bodies::LATEST_FORMAT);
        assert_eq!(legacy_bodies::cut_from(&whole), None);
    }

    #[tokio::test]
    async fn a_service_keeps_only_the_fields_kubernetes_type_has_even_when_nothing_is_allocated() {
        let (_dir, writer) = one_member().await;
        // Headless: the allocators change nothing.
        let mut headless = legacy_bodies::to_document(service("db", "None"));
        if let Some(Body::Generic(document)) = &mut headless.kind {
            let mut content = skiff_objects::generic::content(document);
            content["spec"]["madeUp"] = serde_json::Value::from(1);
            content["spec"]["externalIPs"] = serde_json::Value::Null;
            skiff_objects::generic::set_content(document, &content);
        }
        let stored = writer.create(headless).await.unwrap();
        let Some(Body::Generic(document)) = &stored.kind else {
            panic!("a document: {stored:?}")
        };
        let spec = &skiff_objects::generic::content(document)["spec"];
        assert_eq!(spec["clusterIP"], "None");
        assert!(spec.get("madeUp").is_none(), "{spec}");
        assert!(spec.get("externalIPs").is_none(), "{spec}");
    }

    #[tokio::test]
    async fn a_pod_is_placed_defaulted_and_given_a_uid() {
        let (_dir, writer) = one_member().await;
        let stored = writer.create(pod("web", "")).await.unwrap();
        let meta = stored.meta();
        assert_eq!(meta.namespace, DEFAULT_NAMESPACE);
        assert_eq!(meta.uid.len(), 36);
        assert_eq!(&meta.uid[14..15], "4", "a version-4 UUID: {}", meta.uid);
        assert!(!meta.resource_version.is_empty());
        // Stored as a document, with Kubernetes' defaults.
        let read = pods::read(&stored).expect("a pod");
        assert!(matches!(stored.kind, Some(Body::Generic(_))), "{stored:?}");
        let spec = read.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(read.status.unwrap().phase.as_deref(), Some("Pending"));
        let again = writer.create(pod("web", "")).await.unwrap_err();
        assert!(again.is_already_exists(), "{again}");
    }

    #[tokio::test]
    async fn generate_name_gets_a_random_suffix_and_no_name_at_all_is_refused() {
        let (_dir, writer) = one_member().await;
        let stored = writer.create(pod("", "web-")).await.unwrap();
        let name = &stored.meta().name;
        assert_eq!(name.len(), "web-".len() + 5, "{name}");
        assert!(name[4..]
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let before = writer.cluster().store.revision();
        let e = writer.create(pod("", "")).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(e.to_string().contains("metadata.generateName"), "{e}");
        assert_eq!(writer.cluster().store.revision(), before, "nothing stored");
    }

    #[tokio::test]
    async fn invalid_and_oversized_objects_are_refused_and_nothing_is_stored() {
        let (_dir, writer) = one_member().await;
        let before = writer.cluster().store.revision();
        let mut no_containers = pod("empty", "");
        if let Some(Body::Pod(p)) = &mut no_containers.kind {
            p.spec.as_mut().unwrap().containers.clear();
        }
        let e = writer.create(no_containers).await.unwrap_err();
        assert!(matches!(e, Error::Validation(_)), "{e}");
        assert!(e.to_string().contains("spec.containers"), "{e}");
        // Validation has no limit on container args; the store's size
        // check is what refuses this one.
        let mut huge = pod("huge", "");
        if let Some(Body::Pod(p)) = &mut huge.kind {
            p.spec.as_mut().unwrap().containers[0].args = vec!["x".repeat(MAX_OBJECT_BYTES)];
        }
        let e = writer.create(huge).await.unwrap_err();
        assert!(e.to_string().contains("objects are limited to"), "{e}");
        assert_eq!(writer.cluster().store.revision(), before);
    }

    #[tokio::test]
    async fn services_get_free_cluster_ips_that_cannot_change() {
        let (_dir, writer) = one_member().await;
        let a = writer.create(service("a", "")).await.unwrap();
        let b = writer.create(service("b", "")).await.unwrap();
        assert_eq!(cluster_ip(&a), "10.43.0.11");
        assert_eq!(cluster_ip(&b), "10.43.0.12");
        // Sent in the protobuf model (an older client's), stored as a
        // document, with the address in both of its fields.
        assert!(legacy_bodies::is_moved_document(&a), "{a:?}");
        let read = services::read(&a).unwrap();
        assert_eq!(
            read.spec.unwrap().cluster_ips,
            Some(vec!["10.43.0.11".to_owned()])
        );
        let taken = writer.create(service("c", "10.43.0.11")).await.unwrap_err();
        assert!(
            matches!(taken, Error::ServiceIp(ServiceIpError::InUse { .. })),
            "{taken}"
        );
        let outside = writer.create(service("c", "10.99.0.1")).await.unwrap_err();
        assert!(matches!(
            outside,
            Error::ServiceIp(ServiceIpError::OutOfRange { .. })
        ));
        // An update that leaves the address out keeps it; one that changes
        // it is refused.
        let kept = writer.update(service("a", "")).await.unwrap();
        assert_eq!(cluster_ip(&kept), "10.43.0.11");
        let moved = writer.update(service("a", "10.43.0.50")).await.unwrap_err();
        assert!(matches!(
            moved,
            Error::ServiceIp(ServiceIpError::Immutable { .. })
        ));
    }

    #[tokio::test]
    async fn stale_writes_conflict_and_deletes_can_be_conditional() {
        let (_dir, writer) = one_member().await;
        let first = writer.create(pod("web", "")).await.unwrap();
        let old_version = first.meta().resource_version.clone();
        let mut labelled = first.clone();
        labelled
            .meta_mut()
            .unwrap()
            .labels
            .insert("v".into(), "2".into());
        let second = writer.update(labelled.clone()).await.unwrap();
        assert_ne!(second.meta().resource_version, old_version);
        let stale = writer.update(labelled).await.unwrap_err();
        assert!(stale.is_conflict(), "{stale}");
        let e = writer
            .delete(Kind::Pod, "", "web", &old_version)
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        writer
            .delete(Kind::Pod, "", "web", &second.meta().resource_version)
            .await
            .unwrap();
        let gone = writer.delete(Kind::Pod, "", "web", "").await.unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
    }
}
