//! How each [`Command`] changes the objects. One function per command
//! (`create`, `update`, `delete`) decides, from a read of the objects, what
//! the command does: store an object, remove one, leave everything as it is,
//! or refuse. Only `commit` writes a decision, so a refused command cannot
//! have changed anything, and every change gets the next revision in one
//! place.
//!
//! The objects are the cache's, as of the last applied batch, seen through
//! [`Objects`], which adds the changes made earlier in the batch being
//! applied (the cache takes a batch whole, after it is applied).
//!
//! Updates and deletes share one precondition step, `existing_matching`: the
//! object must exist and, when the caller names the resourceVersion it read,
//! still be at that version (optimistic concurrency, as in Kubernetes).
//!
//! Deletes and updates follow Kubernetes' delete semantics
//! ([`skiff_objects::deletion`]): a delete removes the object, or keeps it
//! marked (`deletionTimestamp`, a MODIFIED event) while finalizers, a
//! Foreground or Orphan propagation or a pod's grace period hold it; an
//! update of a marked object cannot add finalizers, and one that removes
//! the last of them removes the object (a DELETED event).
//!
//! Creates and updates also share `address_free`: a Service cannot take a
//! clusterIP, nor a Node a pod subnet, that another object holds (for a
//! subnet: or one overlapping it). The leader's allocators choose free
//! addresses, but this check is what every replica applies identically,
//! so two objects never hold one address whatever a leader's allocator
//! thought (a deposed leader's, a stale one's). Holders come from the
//! cache's address index and from the claims of the batch's earlier
//! commands, each checked against the object as the batch has left it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use skiff_proto::api::{EventType, Object};

use super::{Committed, StoredEvent};
use crate::store::cache::{AddressIndex, CachedChange, HeldAddress, Key, ObjectCache};
use crate::store::{AddressField, Applied, ApplyResult, Command, WriteError};
use skiff_objects::deletion::{self, DeleteOptions, DeleteOutcome};
use skiff_objects::{
    legacy_bodies, merge_update, merge_whole_update, object_key, selectable, stored_kind, Kind,
    ObjectExt,
};

/// The objects as the batch being applied has left them so far: the cache,
/// plus what earlier commands of the batch stored or removed.
pub(super) struct Objects<'a> {
    cache: &'a ObjectCache,
    /// (kind, namespace, name) → the object now stored, or `None` if removed.
    batch: HashMap<(Kind, String, String), Option<Arc<Object>>>,
    /// The addresses objects stored earlier in the batch hold (the cache's
    /// index has them only once the batch is applied). Never pruned: a
    /// claim whose object was removed or changed again is stale, which
    /// [`Objects::address_holder`] sees.
    claimed: AddressIndex,
}

impl<'a> Objects<'a> {
    pub(super) fn new(cache: &'a ObjectCache) -> Objects<'a> {
        Objects {
            cache,
            batch: HashMap::new(),
            claimed: AddressIndex::default(),
        }
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        match self
            .batch
            .get(&(kind, namespace.to_owned(), name.to_owned()))
        {
            Some(changed) => changed.clone(),
            None => self.cache.get(kind, namespace, name),
        }
    }

    fn set(&mut self, slot: &Slot, object: Option<Arc<Object>>) {
        for address in object.as_deref().map(HeldAddress::of).unwrap_or_default() {
            let key = (slot.namespace.clone(), slot.name.clone());
            self.claimed.add(address, key);
        }
        self.batch.insert(
            (slot.kind, slot.namespace.clone(), slot.name.clone()),
            object,
        );
    }

    /// An object other than the one at `own` that holds `address` (for a
    /// pod subnet: one overlapping it), with what it holds. Each candidate
    /// from the batch's claims and the cache's index counts only if the
    /// object, as the batch has left it, still holds that address: an
    /// earlier command may have removed it or changed its address.
    fn address_holder(&self, address: HeldAddress, own: &Key) -> Option<(HeldAddress, Key)> {
        let kind = address.holder_kind();
        self.claimed
            .holders(address)
            .into_iter()
            .chain(self.cache.address_holders(address))
            .find(|(held, key)| {
                key != own
                    && self
                        .get(kind, &key.0, &key.1)
                        .is_some_and(|o| HeldAddress::of(&o).contains(held))
            })
    }
}

/// An answer that may be a refusal (nothing stored) instead of a `T`.
type Refusable<T> = std::result::Result<T, WriteError>;

/// What one command does, decided before anything is written.
type Decision = Refusable<Change>;

/// Where an object lives, and what its watchers are told about it.
struct Slot {
    kind: Kind,
    namespace: String,
    name: String,
}

/// What an accepted command does to the objects table.
enum Change {
    /// Store `object` at the next revision (a create or an update of
    /// `previous`, the object stored until now).
    Put {
        slot: Slot,
        object: Box<Object>,
        event_type: EventType,
        previous: Option<Arc<Object>>,
    },
    /// Remove the object at the next revision; `object` is what was stored,
    /// or, for an update that removes it, the update (and `previous` what
    /// was stored).
    Remove {
        slot: Slot,
        object: Arc<Object>,
        previous: Option<Arc<Object>>,
    },
    /// Nothing to write: an update that leaves the object as stored keeps its
    /// revision and tells watchers nothing.
    Unchanged(Arc<Object>),
}

/// Applies one command to the objects table: decides what it does, then,
/// unless it is refused, writes that. A refused command changes nothing and
/// uses no revision.
pub(super) fn execute(
    command: Command,
    objects: &mut Objects<'_>,
    revision: &mut u64,
    events: &mut Vec<Committed>,
) -> ApplyResult {
    let decision = match command {
        Command::Create { object, uid, now } => create(objects, &object, uid, now),
        Command::Update {
            object,
            status_only,
        } => update(objects, &object, status_only, false),
        Command::UpdateWhole { object } => update(objects, &object, false, true),
        Command::Delete {
            kind,
            namespace,
            name,
            resource_version,
        } => remove_now(objects, kind, namespace, name, resource_version),
        Command::DeleteWithOptions {
            kind,
            namespace,
            name,
            options,
            now,
        } => delete(objects, kind, namespace, name, &options, &now),
    };
    decision.map(|change| commit(change, objects, revision, events))
}

/// `Command::Create`: stores a new object. Refused when it cannot be decoded
/// or has no name, when its name is taken, when its namespace does not
/// exist, or when it claims an address another object holds. The proposer
/// chose the uid and the time, because every replica must apply the same
/// thing; a new object starts at generation 1, not being deleted.
fn create(objects: &Objects<'_>, bytes: &[u8], uid: String, now: String) -> Decision {
    let mut object = match legacy_bodies::decode(bytes) {
        Ok(o) => o,
        Err(e) => return invalid(&e),
    };
    let kind = match stored_kind(&object) {
        Ok(k) => k,
        Err(e) => return invalid(&e),
    };
    let (namespace, name) = {
        let m = object.meta();
        (m.namespace.clone(), m.name.clone())
    };
    if name.is_empty() {
        return invalid(&"metadata.name is required");
    }
    if objects.get(kind, &namespace, &name).is_some() {
        return Err(WriteError::AlreadyExists {
            kind,
            namespace,
            name,
        });
    }
    // A custom kind's scope is its definition's, which the leader checked;
    // every replica decides from the object alone.
    let namespaced = match kind {
        Kind::Custom(_) => !namespace.is_empty(),
        kind => kind.namespaced(),
    };
    if namespaced && objects.get(Kind::Namespace, "", &namespace).is_none() {
        return Err(WriteError::NamespaceNotFound(namespace));
    }
    if let Ok(meta) = object.meta_mut() {
        meta.uid = uid;
        meta.creation_timestamp = now;
        meta.generation = 1;
        meta.deletion_timestamp.clear();
        meta.deletion_grace_period_seconds = 0;
    }
    object.set_type_meta();
    let slot = Slot {
        kind,
        namespace,
        name,
    };
    address_free(objects, &slot, &object, None)?;
    Ok(Change::Put {
        slot,
        object: Box::new(object),
        event_type: EventType::Added,
        previous: None,
    })
}

/// `Command::Update`: replaces an object's metadata and spec, or with
/// `status_only` only its status; `Command::UpdateWhole` (`whole`): all of
/// it, status included. Refused when it cannot be decoded, by the
/// precondition, when it claims an address another object holds, or when
/// it adds finalizers to an object being deleted. A full update cannot
/// change what the store owns (uid, creation timestamp, the deletion mark,
/// generateName, status), and counts spec changes in the generation; one
/// that removes the last finalizer of an object being deleted removes it.
fn update(objects: &Objects<'_>, bytes: &[u8], status_only: bool, whole: bool) -> Decision {
    let sent = match legacy_bodies::decode(bytes) {
        Ok(o) => o,
        Err(e) => return invalid(&e),
    };
    let kind = match stored_kind(&sent) {
        Ok(k) => k,
        Err(e) => return invalid(&e),
    };
    let (namespace, name, expected) = {
        let m = sent.meta();
        (
            m.namespace.clone(),
            m.name.clone(),
            m.resource_version.clone(),
        )
    };
    let (slot, stored) = existing_matching(objects, kind, namespace, name, expected)?;
    let current = stored.meta().resource_version.clone();
    let mut merged = if whole {
        merge_whole_update(&stored, sent)
    } else {
        merge_update(&stored, sent, status_only)
    };
    if let Ok(meta) = merged.meta_mut() {
        // The stored version, so that an update that changes nothing else
        // compares equal to what is stored.
        meta.resource_version = current;
    }
    if merged == *stored {
        return Ok(Change::Unchanged(stored));
    }
    let added = deletion::added_finalizers(stored.meta(), merged.meta());
    if !added.is_empty() {
        return invalid(&format!(
            "{kind} \"{}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}",
            slot.name
        ));
    }
    if deletion::removed_by_update(stored.meta(), merged.meta()) {
        let object = Arc::new(merged);
        let previous = Some(stored);
        return Ok(Change::Remove {
            slot,
            object,
            previous,
        });
    }
    address_free(objects, &slot, &merged, Some(&*stored))?;
    Ok(Change::Put {
        slot,
        object: Box::new(merged),
        event_type: EventType::Modified,
        previous: Some(stored),
    })
}

/// `Command::DeleteWithOptions`: removes the object, or marks it for
/// deletion, or, when it is marked already, changes the mark or nothing
/// (see [`deletion::decide_delete`]). Refused by the preconditions
/// (resourceVersion, uid), or when the proposer's time cannot be read.
fn delete(
    objects: &Objects<'_>,
    kind: Kind,
    namespace: String,
    name: String,
    options: &DeleteOptions,
    now: &str,
) -> Decision {
    let expected = options.resource_version.clone();
    let (slot, object) = existing_matching(objects, kind, namespace, name, expected)?;
    let uid = &object.meta().uid;
    if !options.uid.is_empty() && options.uid != *uid {
        return Err(WriteError::UidMismatch {
            kind,
            name: slot.name,
            expected: options.uid.clone(),
            current: uid.clone(),
        });
    }
    let now = match humantime::parse_rfc3339(now) {
        Ok(now) => now,
        Err(e) => return invalid(&format!("the delete's time {now:?}: {e}")),
    };
    let outcome = deletion::decide_delete(&object, options, now);
    Ok(match outcome {
        DeleteOutcome::Remove => Change::Remove {
            slot,
            object,
            previous: None,
        },
        DeleteOutcome::Mark(marked) => Change::Put {
            slot,
            object: marked,
            event_type: EventType::Modified,
            previous: Some(object),
        },
        DeleteOutcome::Unchanged => Change::Unchanged(object),
    })
}

/// `Command::Delete` (earlier builds' delete): removes an object at once.
/// Refused only by the precondition.
fn remove_now(
    objects: &Objects<'_>,
    kind: Kind,
    namespace: String,
    name: String,
    resource_version: String,
) -> Decision {
    let (slot, object) = existing_matching(objects, kind, namespace, name, resource_version)?;
    Ok(Change::Remove {
        slot,
        object,
        previous: None,
    })
}

/// The precondition of updates and deletes: the object `name` of `kind` in
/// `namespace` exists (else `NotFound`), and, unless `expected` is empty, is
/// at resourceVersion `expected` (else `Conflict`: the caller read an older
/// version, and must read again). Answers where the object lives and what is
/// stored there.
fn existing_matching(
    objects: &Objects<'_>,
    kind: Kind,
    namespace: String,
    name: String,
    expected: String,
) -> Refusable<(Slot, Arc<Object>)> {
    let Some(object) = objects.get(kind, &namespace, &name) else {
        return Err(WriteError::NotFound {
            kind,
            namespace,
            name,
        });
    };
    let current = &object.meta().resource_version;
    if !expected.is_empty() && expected != *current {
        return Err(WriteError::Conflict {
            kind,
            name,
            expected,
            current: current.clone(),
        });
    }
    let slot = Slot {
        kind,
        namespace,
        name,
    };
    Ok((slot, object))
}

/// Refuses `object`, about to be stored at `slot`, when it claims an address
/// (a Service's clusterIP or a nodePort, a Node's pod subnet) that another object holds,
/// or, for a subnet, one overlapping another's. An object keeping the
/// address it has (`stored` holds it too) is not checked again, so an
/// update that leaves the address alone is never refused for it.
fn address_free(
    objects: &Objects<'_>,
    slot: &Slot,
    object: &Object,
    stored: Option<&Object>,
) -> Refusable<()> {
    let kept = stored.map(HeldAddress::of).unwrap_or_default();
    let own = (slot.namespace.clone(), slot.name.clone());
    for address in HeldAddress::of(object) {
        if kept.contains(&address) {
            continue;
        }
        let Some((held, (namespace, name))) = objects.address_holder(address, &own) else {
            continue;
        };
        let field = match address {
            HeldAddress::ClusterIp(_) => AddressField::ClusterIp,
            HeldAddress::PodCidr(_) => AddressField::PodCidr,
            HeldAddress::NodePort(port) if health_check_port(object) == Some(port) => {
                AddressField::HealthCheckNodePort
            }
            HeldAddress::NodePort(_) => AddressField::NodePort,
        };
        let holder = if namespace.is_empty() {
            format!("{} {name}", address.holder_kind())
        } else {
            format!("{} {namespace}/{name}", address.holder_kind())
        };
        return Err(WriteError::AddressTaken {
            field,
            value: address.to_string(),
            held: held.to_string(),
            holder,
        });
    }
    Ok(())
}

/// A Service's `healthCheckNodePort` when it is not one of its nodePorts
/// too (then the refusal names the nodePort).
/// Read as [`HeldAddress::of`] reads the ports held.
fn health_check_port(object: &Object) -> Option<u16> {
    let claims = skiff_objects::services::claims(object)?;
    let port = claims.health_check_node_port;
    if port == 0 || claims.node_ports.contains(&port) {
        return None;
    }
    u16::try_from(port).ok()
}

/// Refuses a command whose object cannot be stored as sent.
fn invalid<T>(reason: &dyn std::fmt::Display) -> Refusable<T> {
    Err(WriteError::Invalid(reason.to_string()))
}

/// Writes an accepted change. The one place that writes objects.
fn commit(
    change: Change,
    objects: &mut Objects<'_>,
    revision: &mut u64,
    events: &mut Vec<Committed>,
) -> Applied {
    match change {
        Change::Unchanged(object) => Applied {
            object: object.encode_to_vec(),
            revision: *revision,
        },
        Change::Put {
            slot,
            object,
            event_type,
            previous,
        } => {
            let change = Recorded {
                object: *object,
                event_type,
                previous: previous.as_deref(),
            };
            let (applied, stored) = record(events, revision, &slot, change);
            objects.set(&slot, Some(stored));
            applied
        }
        Change::Remove {
            slot,
            object,
            previous,
        } => {
            objects.set(&slot, None);
            let change = Recorded {
                object: Arc::unwrap_or_clone(object),
                event_type: EventType::Deleted,
                previous: previous.as_deref(),
            };
            record(events, revision, &slot, change).0
        }
    }
}

/// A change as [`record`] takes it.
struct Recorded<'a> {
    /// The object it leaves (for a delete: the object as it was).
    object: Object,
    event_type: EventType,
    /// The object stored before it (none for a create or a plain delete).
    previous: Option<&'a Object>,
}

/// The revision an object was stored at (its `resourceVersion`).
fn stored_revision(object: &Object) -> u64 {
    object.meta().resource_version.parse().unwrap_or(0)
}

/// Gives the change's object the next revision and records the change for
/// watchers, the cache and the next checkpoint; a pod's event names the
/// node it is bound to, so node watches can route it without decoding it,
/// and the version before is kept, encoded, only when selectors may read
/// the two versions differently. Answers what the command returns, and the
/// object as stored.
fn record(
    events: &mut Vec<Committed>,
    revision: &mut u64,
    slot: &Slot,
    change: Recorded<'_>,
) -> (Applied, Arc<Object>) {
    let Recorded {
        mut object,
        event_type,
        previous,
    } = change;
    // The revision of the version this change replaces: the one before,
    // or, for a plain delete, the object's own as it was stored.
    let previous_revision = match (previous, event_type) {
        (Some(before), _) => stored_revision(before),
        (None, EventType::Deleted) => stored_revision(&object),
        (None, _) => 0,
    };
    *revision += 1;
    if let Ok(meta) = object.meta_mut() {
        meta.resource_version = revision.to_string();
    }
    let node = skiff_objects::pods::bound_node(&object);
    let bytes = object.encode_to_vec();
    // A delete made by an update (the last finalizer removed) leaves an
    // object unlike the one it replaces: that one is kept too, so that a
    // list at an earlier revision can be rebuilt.
    let previous = previous
        .filter(|before| {
            event_type == EventType::Deleted
                || !selectable::selected_alike(slot.kind, before, &object)
        })
        .map(|before| Bytes::from(before.encode_to_vec()))
        .unwrap_or_default();
    // The cache keeps it for as long as it is current: prost's decoding
    // left its lists room for about twice the items (3 KB of a 7 KB pod).
    object.shrink_to_fit();
    let object = Arc::new(object);
    events.push(Committed {
        key: object_key(slot.kind, &slot.namespace, &slot.name),
        event: Arc::new(StoredEvent {
            revision: *revision,
            kind: slot.kind,
            namespace: slot.namespace.clone(),
            event_type: event_type as i32,
            node,
            object: Bytes::from(bytes.clone()),
            previous,
            previous_revision,
        }),
        cached: CachedChange {
            kind: slot.kind,
            event_type,
            encoded_len: bytes.len(),
            object: object.clone(),
        },
    });
    let applied = Applied {
        object: bytes,
        revision: *revision,
    };
    (applied, object)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use skiff_proto::api::{EventType, Object};
    use skiff_proto::v1;

    use crate::store::cache::HeldAddress;
    use crate::store::state_machine::{ObjectStore, StoredEvent};
    use crate::store::{AddressField, Applied, ApplyResult, Command, WriteError};
    use skiff_objects::deletion::{
        DeleteOptions, Propagation, FOREGROUND_DELETION, ORPHAN_DEPENDENTS,
    };
    use skiff_objects::services;
    use skiff_objects::{IntoObject, Kind, ObjectExt};

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn create(object: &Object) -> Command {
        create_bytes(object.encode_to_vec(), &object.meta().name)
    }

    fn create_bytes(object: Vec<u8>, name: &str) -> Command {
        Command::Create {
            object,
            uid: format!("uid-{name}"),
            now: NOW.into(),
        }
    }

    fn update(object: &Object, status_only: bool) -> Command {
        Command::Update {
            object: object.encode_to_vec(),
            status_only,
        }
    }

    /// A delete as the API makes it, at [`NOW`].
    fn delete_with(kind: Kind, name: &str, options: DeleteOptions) -> Command {
        Command::DeleteWithOptions {
            kind,
            namespace: "default".into(),
            name: name.into(),
            options,
            now: NOW.into(),
        }
    }

    fn delete(name: &str, resource_version: &str) -> Command {
        Command::Delete {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: name.into(),
            resource_version: resource_version.into(),
        }
    }

    fn namespace() -> Object {
        skiff_objects::namespaces::named("default", "")
    }

    fn node(name: &str) -> Object {
        v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A Node holding pod subnet `pod_cidr` (none when empty).
    fn node_with_subnet(name: &str, pod_cidr: &str) -> Object {
        v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                pod_cidr: pod_cidr.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A Service in `default` with clusterIP `cluster_ip` (none when empty).
    fn service_with(name: &str, spec: services::ServiceSpec) -> Object {
        let meta = v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        services::object(meta, spec, None)
    }

    fn service(name: &str, cluster_ip: &str) -> Object {
        let spec = services::ServiceSpec {
            cluster_ip: Some(cluster_ip.to_owned()).filter(|ip| !ip.is_empty()),
            ..Default::default()
        };
        service_with(name, spec)
    }

    /// `object` with label `tier=web` added: a change that keeps its spec.
    fn labelled(mut object: Object) -> Object {
        if let Ok(meta) = object.meta_mut() {
            meta.labels.insert("tier".into(), "web".into());
        }
        object
    }

    fn taken(field: AddressField, value: &str, held: &str, holder: &str) -> WriteError {
        WriteError::AddressTaken {
            field,
            value: value.into(),
            held: held.into(),
            holder: holder.into(),
        }
    }

    /// A pod in `default`, bound to node n1.
    fn pod(name: &str, image: &str, phase: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: "n1".into(),
                containers: vec![v1::Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    /// A stored pod (a document) in the protobuf model.
    fn as_pod(object: &Object) -> v1::Pod {
        match skiff_objects::legacy_bodies::to_legacy(object.clone()).map(|o| o.kind) {
            Ok(Some(skiff_proto::api::object::Kind::Pod(p))) => p,
            other => panic!("not a pod: {other:?}"),
        }
    }

    fn image(object: &Object) -> String {
        let spec = as_pod(object).spec.expect("a spec");
        spec.containers[0].image.clone()
    }

    fn phase(object: &Object) -> String {
        as_pod(object).status.expect("a status").phase
    }

    fn invalid(reason: &str) -> WriteError {
        WriteError::Invalid(reason.into())
    }

    fn not_found(name: &str) -> WriteError {
        WriteError::NotFound {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// A store holding namespace `default` (revision 1) and pod `a`, bound to
    /// n1, running `img:1` and Pending (revision 2).
    fn store_with_pod() -> (tempfile::TempDir, Arc<ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        apply(&store, create(&namespace())).unwrap();
        let a = pod("a", "img:1", "Pending");
        apply(&store, create(&a)).unwrap();
        (dir, store)
    }

    /// The cache holds a created object as decoded, less the room prost's
    /// decoding left in its lists (a pod's one container had room for four).
    #[test]
    fn a_created_object_is_cached_without_spare_room_in_its_lists() {
        let (_dir, store) = store_with_pod();
        let cached = store.cache().get(Kind::Pod, "default", "a").unwrap();
        // A pod is a document: its fields are one list of bytes.
        let Some(skiff_proto::api::object::Kind::Generic(document)) = &cached.kind else {
            panic!("not a document: {cached:?}");
        };
        assert_eq!(
            document.content.capacity(),
            document.content.len(),
            "spare room kept"
        );
    }

    /// Applies one command, in a log entry of its own.
    fn apply(store: &ObjectStore, command: Command) -> ApplyResult {
        store.apply_commands(vec![command]).remove(0)
    }

    fn get_pod(store: &ObjectStore, name: &str) -> Option<Object> {
        store.get(Kind::Pod, "default", name).unwrap()
    }

    fn decoded(applied: &Applied) -> Object {
        Object::decode(applied.object.as_slice()).unwrap()
    }

    /// The one change recorded at `revision`.
    fn event_at(store: &ObjectStore, revision: u64) -> StoredEvent {
        let events = store.events_after(revision - 1, 1).unwrap().unwrap();
        assert_eq!(events.len(), 1, "no event at revision {revision}");
        StoredEvent::clone(&events[0])
    }

    #[test]
    fn create_stores_a_new_object_with_the_identity_the_proposer_chose() {
        let (_dir, store) = store_with_pod();
        let mut sent = pod("b", "img:1", "Pending");
        {
            // Nothing a client may choose for a new object.
            let meta = sent.meta_mut().unwrap();
            meta.uid = "forged".into();
            meta.resource_version = "99".into();
            meta.generation = 7;
            meta.deletion_timestamp = "2020-01-01T00:00:00Z".into();
        }
        let applied = apply(&store, create(&sent)).unwrap();
        assert_eq!(applied.revision, 3);
        let stored = get_pod(&store, "b").expect("stored");
        assert_eq!(decoded(&applied), stored);
        let meta = stored.meta();
        assert_eq!(meta.uid, "uid-b");
        assert_eq!(meta.creation_timestamp, NOW);
        assert_eq!(meta.resource_version, "3");
        assert_eq!(meta.generation, 1);
        assert_eq!(meta.deletion_timestamp, "");
        assert_eq!(as_pod(&stored).api_version, "v1");
        assert_eq!(as_pod(&stored).kind, "Pod");
        let event = event_at(&store, 3);
        assert_eq!(event.event_type, EventType::Added as i32);
        assert_eq!(event.kind, Kind::Pod);
        assert_eq!(event.namespace, "default");
        assert_eq!(event.node, "n1", "pod events name the node");
        assert_eq!(event.object, applied.object);

        // Cluster-scoped kinds need no namespace.
        let n9 = apply(&store, create(&node("n9"))).unwrap();
        assert_eq!(n9.revision, 4);
        assert_eq!(event_at(&store, 4).node, "");
    }

    #[test]
    fn create_refuses_what_it_cannot_store_and_uses_no_revision() {
        let (_dir, store) = store_with_pod();
        let garbage = apply(&store, create_bytes(vec![0xff, 0xff], "x"));
        assert!(matches!(garbage, Err(WriteError::Invalid(_))));
        let empty = apply(&store, create_bytes(Vec::new(), "x"));
        assert_eq!(empty, Err(invalid("object has no kind skiff serves")));
        let nameless = apply(&store, create(&pod("", "img:1", "Pending")));
        assert_eq!(nameless, Err(invalid("metadata.name is required")));
        assert_eq!(store.revision(), 2);
        assert!(store.events_after(2, 10).unwrap().unwrap().is_empty());
    }

    #[test]
    fn an_update_replaces_metadata_and_spec_but_not_what_the_store_owns() {
        let (_dir, store) = store_with_pod();
        let mut sent = pod("a", "img:2", "Hijacked");
        {
            let meta = sent.meta_mut().unwrap();
            meta.labels.insert("tier".into(), "web".into());
            meta.uid = "forged".into();
            meta.creation_timestamp = "2000-01-01T00:00:00Z".into();
            meta.generation = 42;
        }
        // No resourceVersion: unconditional.
        let applied = apply(&store, update(&sent, false)).unwrap();
        assert_eq!(applied.revision, 3);
        let stored = get_pod(&store, "a").expect("still stored");
        assert_eq!(decoded(&applied), stored);
        let meta = stored.meta();
        assert_eq!(meta.labels["tier"], "web");
        assert_eq!(meta.uid, "uid-a");
        assert_eq!(meta.creation_timestamp, NOW);
        assert_eq!(meta.resource_version, "3");
        assert_eq!(meta.generation, 2, "a spec change counts");
        assert_eq!(image(&stored), "img:2");
        assert_eq!(phase(&stored), "Pending", "the status is kept");
        let event = event_at(&store, 3);
        assert_eq!(event.event_type, EventType::Modified as i32);
        assert_eq!(event.node, "n1");
    }

    #[test]
    fn a_status_update_changes_only_the_status() {
        let (_dir, store) = store_with_pod();
        let mut sent = pod("a", "img:2", "Running");
        {
            let meta = sent.meta_mut().unwrap();
            meta.labels.insert("tier".into(), "web".into());
            // Conditional, on the version that is current.
            meta.resource_version = "2".into();
        }
        let applied = apply(&store, update(&sent, true)).unwrap();
        assert_eq!(applied.revision, 3);
        let stored = get_pod(&store, "a").expect("still stored");
        assert_eq!(decoded(&applied), stored);
        assert_eq!(phase(&stored), "Running");
        assert_eq!(image(&stored), "img:1", "the spec is kept");
        assert!(stored.meta().labels.is_empty(), "metadata kept");
        assert_eq!(stored.meta().generation, 1);
        assert_eq!(stored.meta().resource_version, "3");
        let event = event_at(&store, 3);
        assert_eq!(event.event_type, EventType::Modified as i32);
    }

    #[test]
    fn an_update_needs_the_object_and_the_version_it_read() {
        let (_dir, store) = store_with_pod();
        let b = pod("b", "img:1", "Pending");
        let missing = apply(&store, update(&b, false));
        assert_eq!(missing, Err(not_found("b")));

        let mut stale = pod("a", "img:2", "Running");
        stale.meta_mut().unwrap().resource_version = "1".into();
        let conflict = WriteError::Conflict {
            kind: Kind::Pod,
            name: "a".into(),
            expected: "1".into(),
            current: "2".into(),
        };
        for status_only in [false, true] {
            let refused = apply(&store, update(&stale, status_only));
            assert_eq!(refused, Err(conflict.clone()), "{status_only}");
        }
        assert!(conflict.to_string().contains("read it again"));

        let garbage = apply(&store, update(&Object::default(), false));
        assert_eq!(garbage, Err(invalid("object has no kind skiff serves")));

        assert_eq!(store.revision(), 2);
        assert!(store.events_after(2, 10).unwrap().unwrap().is_empty());
        let a = get_pod(&store, "a").expect("still stored");
        assert_eq!(
            (image(&a).as_str(), phase(&a).as_str()),
            ("img:1", "Pending")
        );
    }

    #[test]
    fn delete_removes_the_object_and_reports_it_at_the_new_revision() {
        let (_dir, store) = store_with_pod();
        let b = pod("b", "img:1", "Pending");
        apply(&store, create(&b)).unwrap();

        // Conditional, on the version that is current.
        let applied = apply(&store, delete("a", "2")).unwrap();
        assert_eq!(applied.revision, 4);
        let gone = decoded(&applied);
        assert_eq!(gone.meta().resource_version, "4");
        assert_eq!(gone.meta().uid, "uid-a");
        assert_eq!(get_pod(&store, "a"), None);
        let event = event_at(&store, 4);
        assert_eq!(event.event_type, EventType::Deleted as i32);
        assert_eq!(event.node, "n1");
        assert_eq!(event.object, applied.object);

        // Unconditional.
        let applied = apply(&store, delete("b", "")).unwrap();
        assert_eq!(applied.revision, 5);
        assert_eq!(get_pod(&store, "b"), None);

        let again = apply(&store, delete("a", ""));
        assert_eq!(again, Err(not_found("a")));
        assert_eq!(store.revision(), 5);
    }

    #[test]
    fn a_cluster_ip_held_by_another_service_is_refused_even_within_one_batch() {
        let (_dir, store) = store_with_pod();
        let ip = "10.43.0.20";
        let held_by_s1 = taken(AddressField::ClusterIp, ip, ip, "Service default/s1");
        let results = store.apply_commands(vec![
            create(&service("s1", ip)),
            // Claims what the batch's first command took: not in the cache
            // yet, refused all the same.
            create(&service("s2", ip)),
            create(&pod("b", "img:1", "Pending")),
            // Headless and not yet allocated Services hold nothing.
            create(&service("h1", "None")),
            create(&service("h2", "None")),
            create(&service("later", "")),
        ]);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(results[1], Err(held_by_s1.clone()));
        for (i, result) in results.iter().enumerate().skip(2) {
            assert!(result.is_ok(), "command {i}: {result:?}");
        }
        assert_eq!(store.get(Kind::Service, "default", "s2").unwrap(), None);
        assert!(get_pod(&store, "b").is_some(), "the rest applied");
        assert_eq!(store.revision(), 2 + 5, "the refusal used no revision");
        let message = held_by_s1.to_string();
        assert!(
            message.contains("spec.clusterIP") && message.contains("10.43.0.20"),
            "{message}"
        );
        assert!(message.contains("held by Service default/s1"), "{message}");

        // Applied: now the cache's index holds it.
        let again = apply(&store, create(&service("s3", ip)));
        assert_eq!(again, Err(held_by_s1.clone()));
        let taking = apply(&store, update(&service("later", ip), false));
        assert_eq!(taking, Err(held_by_s1));
        // An update that keeps its own address is fine.
        let kept = update(&labelled(service("s1", ip)), false);
        let kept = apply(&store, kept).unwrap();
        assert_eq!(decoded(&kept).meta().labels["tier"], "web");

        // Freed earlier in a batch, the address can be taken later in it;
        // once taken, it is held again.
        let results = store.apply_commands(vec![
            Command::Delete {
                kind: Kind::Service,
                namespace: "default".into(),
                name: "s1".into(),
                resource_version: String::new(),
            },
            create(&service("s4", ip)),
            create(&service("s5", ip)),
        ]);
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        let held_by_s4 = taken(AddressField::ClusterIp, ip, ip, "Service default/s4");
        assert_eq!(results[2], Err(held_by_s4));
    }

    /// A NodePort Service in `default` with one port per nodePort.
    fn node_port_service(name: &str, cluster_ip: &str, node_ports: &[i32]) -> Object {
        let ports = node_ports
            .iter()
            .enumerate()
            .map(|(i, node_port)| services::ServicePort {
                name: Some(format!("p{i}")),
                port: 80 + i32::try_from(i).unwrap(),
                protocol: Some("TCP".into()),
                node_port: (*node_port != 0).then_some(*node_port),
                ..Default::default()
            })
            .collect();
        let spec = services::ServiceSpec {
            type_: Some("NodePort".into()),
            cluster_ip: Some(cluster_ip.to_owned()).filter(|ip| !ip.is_empty()),
            ports: Some(ports),
            ..Default::default()
        };
        service_with(name, spec)
    }

    #[test]
    fn a_node_port_held_by_another_service_is_refused_even_within_one_batch() {
        let (_dir, store) = store_with_pod();
        let held_by_a = taken(
            AddressField::NodePort,
            "30080",
            "30080",
            "Service default/a",
        );
        let results = store.apply_commands(vec![
            create(&node_port_service("a", "10.43.0.30", &[30080, 30081])),
            // Its second port is a's first.
            create(&node_port_service("b", "10.43.0.31", &[30090, 30080])),
        ]);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(results[1], Err(held_by_a.clone()));
        let message = held_by_a.to_string();
        assert!(message.contains("spec.ports[].nodePort"), "{message}");
        // Applied: refused from the cache's index too; a keeps its own
        // through an update and frees the one it drops.
        let again = apply(
            &store,
            create(&node_port_service("c", "10.43.0.32", &[30080])),
        );
        assert_eq!(again, Err(held_by_a));
        let fewer = update(&node_port_service("a", "10.43.0.30", &[30080]), false);
        assert!(apply(&store, fewer).is_ok());
        let freed = create(&node_port_service("d", "10.43.0.33", &[30081]));
        assert!(apply(&store, freed).is_ok());
        // A health check port is held as a nodePort, and named as itself.
        let mut read = services::read(&node_port_service("e", "10.43.0.34", &[30100])).unwrap();
        read.spec.as_mut().unwrap().health_check_node_port = Some(30081);
        let checked = service_with("e", read.spec.unwrap());
        let held_by_d = taken(
            AddressField::HealthCheckNodePort,
            "30081",
            "30081",
            "Service default/d",
        );
        assert_eq!(apply(&store, create(&checked)), Err(held_by_d));
    }

    #[test]
    fn a_pod_subnet_held_by_another_node_is_refused_even_within_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let subnet = "10.42.1.0/24";
        let field = AddressField::PodCidr;
        let results = store.apply_commands(vec![
            create(&node_with_subnet("n1", subnet)),
            create(&node_with_subnet("n2", subnet)),
            // Another size, overlapping n1's.
            create(&node_with_subnet("n3", "10.42.0.0/23")),
            create(&node_with_subnet("joining", "")),
            create(&node_with_subnet("n5", "10.42.5.0/24")),
        ]);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(results[1], Err(taken(field, subnet, subnet, "Node n1")));
        let overlap = taken(field, "10.42.0.0/23", subnet, "Node n1");
        assert_eq!(results[2], Err(overlap));
        assert!(results[3].is_ok() && results[4].is_ok(), "{results:?}");
        for refused in ["n2", "n3"] {
            assert_eq!(store.get(Kind::Node, "", refused).unwrap(), None);
        }
        assert_eq!(store.revision(), 3);

        let results = store.apply_commands(vec![
            // The joining node is handed n5's subnet: refused; then a free
            // one: stored.
            update(&node_with_subnet("joining", "10.42.5.0/24"), false),
            update(&node_with_subnet("joining", "10.42.6.0/24"), false),
            // n1 keeps its own subnet through an update.
            update(&labelled(node_with_subnet("n1", subnet)), false),
        ]);
        let held_by_n5 = taken(field, "10.42.5.0/24", "10.42.5.0/24", "Node n5");
        assert_eq!(results[0], Err(held_by_n5));
        assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
        let joining = store.get(Kind::Node, "", "joining").unwrap().unwrap();
        let subnet: Vec<_> = HeldAddress::of(&joining)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(subnet, ["10.42.6.0/24"]);
        let n1 = store.get(Kind::Node, "", "n1").unwrap().unwrap();
        assert_eq!(n1.meta().labels["tier"], "web");
        assert_eq!(store.revision(), 5);
    }

    /// Service `s` in `default`, held by finalizer `example.com/hold`.
    fn held_service() -> Object {
        let mut held = service("s", "");
        if let Ok(meta) = held.meta_mut() {
            meta.finalizers = vec!["example.com/hold".into()];
        }
        held
    }

    fn get_service(store: &ObjectStore, name: &str) -> Option<Object> {
        store.get(Kind::Service, "default", name).unwrap()
    }

    #[test]
    fn a_finalizer_keeps_a_deleted_object_marked_until_an_update_removes_it() {
        let (_dir, store) = store_with_pod();
        apply(&store, create(&held_service())).unwrap();
        let plain = || delete_with(Kind::Service, "s", DeleteOptions::default());
        let marked = apply(&store, plain()).unwrap();
        assert_eq!(marked.revision, 4);
        let stored = get_service(&store, "s").expect("kept");
        assert_eq!(decoded(&marked), stored);
        assert_eq!(stored.meta().deletion_timestamp, NOW);
        assert_eq!(stored.meta().deletion_grace_period_seconds, 0);
        assert_eq!(stored.meta().finalizers, ["example.com/hold"]);
        assert_eq!(event_at(&store, 4).event_type, EventType::Modified as i32);

        // A second delete leaves the mark as it is, and writes nothing.
        let again = apply(&store, plain()).unwrap();
        assert_eq!(again.revision, 4);
        assert_eq!(decoded(&again), stored);

        // No finalizer can be added any more.
        let mut more = stored.clone();
        let meta = more.meta_mut().unwrap();
        meta.finalizers.push("example.com/more".into());
        let refused = apply(&store, update(&more, false));
        assert!(
            matches!(&refused, Err(WriteError::Invalid(m)) if m.contains("no new finalizers")),
            "{refused:?}"
        );
        assert_eq!(store.revision(), 4);
        // Nor the mark cleared: the rest of the update is taken.
        let mut unmarked = stored.clone();
        {
            let meta = unmarked.meta_mut().unwrap();
            meta.deletion_timestamp.clear();
            meta.labels.insert("tier".into(), "web".into());
        }
        apply(&store, update(&unmarked, false)).unwrap();
        let kept = get_service(&store, "s").expect("still kept");
        assert_eq!(kept.meta().deletion_timestamp, NOW);
        assert_eq!(kept.meta().labels["tier"], "web");

        // Removing the last finalizer removes the object.
        let mut released = kept;
        released.meta_mut().unwrap().finalizers.clear();
        let gone = apply(&store, update(&released, false)).unwrap();
        assert_eq!(gone.revision, 6);
        assert_eq!(get_service(&store, "s"), None);
        let event = event_at(&store, 6);
        assert_eq!(event.event_type, EventType::Deleted as i32);
        assert_eq!(event.object, gone.object);
        assert!(decoded(&gone).meta().finalizers.is_empty());
    }

    #[test]
    fn foreground_and_orphan_deletes_wait_for_the_collectors_finalizer() {
        let (_dir, store) = store_with_pod();
        apply(&store, create(&service("s", ""))).unwrap();
        let foreground = DeleteOptions::propagating(Propagation::Foreground);
        apply(&store, delete_with(Kind::Service, "s", foreground)).unwrap();
        let s = get_service(&store, "s").expect("kept for the collector");
        assert_eq!(s.meta().finalizers, [FOREGROUND_DELETION]);
        assert_eq!(s.meta().deletion_timestamp, NOW);
        // An explicit policy on a second delete sets the collector's
        // finalizer, as in Kubernetes.
        let orphan = DeleteOptions::propagating(Propagation::Orphan);
        apply(&store, delete_with(Kind::Service, "s", orphan)).unwrap();
        let s = get_service(&store, "s").expect("still kept");
        assert_eq!(s.meta().finalizers, [ORPHAN_DEPENDENTS]);
        // The collector done, it removes its finalizer: the object goes.
        let mut done = s;
        done.meta_mut().unwrap().finalizers.clear();
        apply(&store, update(&done, false)).unwrap();
        assert_eq!(get_service(&store, "s"), None);
    }

    #[test]
    fn a_bound_pod_is_marked_for_its_grace_period_until_its_node_confirms() {
        let (_dir, store) = store_with_pod();
        let plain = DeleteOptions::default();
        let marked = apply(&store, delete_with(Kind::Pod, "a", plain)).unwrap();
        assert_eq!(marked.revision, 3);
        let a = get_pod(&store, "a").expect("kept while its containers stop");
        assert_eq!(a.meta().deletion_timestamp, "2026-01-01T00:00:30Z");
        assert_eq!(a.meta().deletion_grace_period_seconds, 30);
        let event = event_at(&store, 3);
        assert_eq!(event.event_type, EventType::Modified as i32);
        assert_eq!(event.node, "n1", "its node is told");

        // A confirmation for an earlier pod of that name removes nothing.
        let earlier = DeleteOptions {
            uid: "uid-earlier".into(),
            ..DeleteOptions::force()
        };
        let refused = apply(&store, delete_with(Kind::Pod, "a", earlier));
        let mismatch = WriteError::UidMismatch {
            kind: Kind::Pod,
            name: "a".into(),
            expected: "uid-earlier".into(),
            current: "uid-a".into(),
        };
        assert_eq!(refused, Err(mismatch));
        assert!(get_pod(&store, "a").is_some());

        // Its node's confirmation (grace 0, its uid) removes it.
        let confirmed = DeleteOptions {
            uid: "uid-a".into(),
            ..DeleteOptions::force()
        };
        let gone = apply(&store, delete_with(Kind::Pod, "a", confirmed)).unwrap();
        assert_eq!(gone.revision, 4);
        assert_eq!(get_pod(&store, "a"), None);
        let event = event_at(&store, 4);
        assert_eq!(event.event_type, EventType::Deleted as i32);
        assert_eq!(event.node, "n1");
    }

    #[test]
    fn unbound_pods_and_force_deletes_go_at_once() {
        let (_dir, store) = store_with_pod();
        let mut loose = pod("b", "img:1", "Pending");
        if let Some(skiff_proto::api::object::Kind::Pod(p)) = &mut loose.kind {
            let spec = p.spec.get_or_insert_with(Default::default);
            spec.node_name.clear();
        }
        apply(&store, create(&loose)).unwrap();
        let plain = DeleteOptions::default();
        let gone = apply(&store, delete_with(Kind::Pod, "b", plain)).unwrap();
        assert_eq!(get_pod(&store, "b"), None, "nothing runs it");
        let event = event_at(&store, gone.revision);
        assert_eq!(event.event_type, EventType::Deleted as i32);

        let force = DeleteOptions::force();
        let forced = apply(&store, delete_with(Kind::Pod, "a", force)).unwrap();
        assert_eq!(get_pod(&store, "a"), None, "forced");
        let event = event_at(&store, forced.revision);
        assert_eq!(event.event_type, EventType::Deleted as i32);
    }

    /// A custom kind's object: a generic object of a group no built-in kind
    /// is served in.
    fn gadget(name: &str, namespace: &str, content: serde_json::Value) -> Object {
        v1::GenericObject {
            api_version: "store-test.example.com/v1".into(),
            kind: "Gadget".into(),
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            content: serde_json::to_vec(&content).unwrap(),
        }
        .into_object()
    }

    fn content_of(applied: &Applied) -> serde_json::Value {
        match decoded(applied).kind {
            Some(skiff_proto::api::object::Kind::Generic(g)) => {
                serde_json::Value::Object(skiff_objects::generic::content(&g))
            }
            other => panic!("not generic: {other:?}"),
        }
    }

    #[test]
    fn custom_objects_are_stored_by_their_kind_whatever_is_served() {
        let (_dir, store) = store_with_pod();
        let spec = serde_json::json!({"spec": {"n": 1}, "status": {"ok": false}});
        let created = apply(&store, create(&gadget("g", "default", spec))).unwrap();
        let kind = skiff_objects::stored_kind(&decoded(&created)).unwrap();
        assert!(matches!(kind, Kind::Custom(_)));
        assert_eq!(kind.name(), "Gadget.store-test.example.com");
        assert!(store.get(kind, "default", "g").unwrap().is_some());
        assert_eq!(event_at(&store, created.revision).kind, kind);
        // A namespace that does not exist refuses it, as any namespaced
        // object; one without a namespace is cluster-scoped.
        let nowhere = gadget("g", "nowhere", serde_json::json!({}));
        let refused = apply(&store, create(&nowhere));
        assert_eq!(
            refused,
            Err(WriteError::NamespaceNotFound("nowhere".into()))
        );
        apply(&store, create(&gadget("c", "", serde_json::json!({})))).unwrap();

        // An update keeps the status; a whole update writes it too, and
        // either counts a spec change in the generation.
        let changed = serde_json::json!({"spec": {"n": 2}, "status": {"ok": true}});
        let kept = apply(
            &store,
            update(&gadget("g", "default", changed.clone()), false),
        );
        let kept = kept.unwrap();
        assert_eq!(content_of(&kept)["status"]["ok"], false);
        assert_eq!(content_of(&kept)["spec"]["n"], 2);
        assert_eq!(decoded(&kept).meta().generation, 2);
        let whole = Command::UpdateWhole {
            object: gadget("g", "default", changed).encode_to_vec(),
        };
        let written = apply(&store, whole).unwrap();
        assert_eq!(content_of(&written)["status"]["ok"], true);
        assert_eq!(decoded(&written).meta().generation, 3);
        assert_eq!(decoded(&written).meta().uid, "uid-g");
    }

    /// `object` (a pod) with its status changed by `change`.
    fn with_status(object: Object, change: impl FnOnce(&mut v1::PodStatus)) -> Object {
        let mut status = as_pod(&object).status.unwrap_or_default();
        change(&mut status);
        skiff_objects::pods::with_reported_status(&object, Some(status))
    }

    #[test]
    fn the_version_before_is_kept_only_when_selectors_may_read_the_two_differently() {
        let (_dir, store) = store_with_pod();
        let stored = get_pod(&store, "a").unwrap();
        // A label changed (revision 3): the pod as it was is kept.
        apply(&store, update(&labelled(stored.clone()), false)).unwrap();
        let relabelled = event_at(&store, 3);
        assert_eq!(relabelled.event_type, EventType::Modified as i32);
        let before = Object::decode(&relabelled.previous[..]).unwrap();
        assert_eq!(before, stored);
        // A condition, which no selector reads (revision 4): nothing kept.
        let ready = with_status(get_pod(&store, "a").unwrap(), |status| {
            status.conditions.push(v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            });
        });
        apply(&store, update(&ready, true)).unwrap();
        assert!(event_at(&store, 4).previous.is_empty());
        // The phase, which `status.phase=` selects by (revision 5): kept.
        let running = with_status(get_pod(&store, "a").unwrap(), |status| {
            status.phase = "Running".into();
        });
        apply(&store, update(&running, true)).unwrap();
        let started = event_at(&store, 5);
        let before = Object::decode(&started.previous[..]).unwrap();
        assert_eq!(phase(&before), "Pending");
        assert_eq!(before.meta().resource_version, "4");
        // A delete's event is the pod as it was: nothing more kept.
        apply(&store, delete("a", "")).unwrap();
        let deleted = event_at(&store, 6);
        assert_eq!(deleted.event_type, EventType::Deleted as i32);
        assert!(deleted.previous.is_empty());
    }
}
