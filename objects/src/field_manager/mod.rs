//! Server-side apply, and who owns which fields of an object
//! (`metadata.managedFields`), as kube-apiserver keeps them with
//! structured-merge-diff: each manager (`kubectl`, `helm`, `kubectl-edit`,
//! ...) has an entry per operation (`Apply` for server-side apply,
//! `Update` for every other write) and subresource, holding the set of
//! fields it owns ([`FieldSet`]).
//!
//! - An [`Update`] (create, replace, patch) gives its manager the fields it
//!   added or changed, and takes them from everyone else.
//! - An [`Apply`] merges a partial object (the applied configuration) into
//!   the live one following the kind's list types (`schema.rs`: lists with a
//!   merge key by key, `finalizers`-like lists as sets, other lists whole,
//!   maps key by key), removes what the applier applied last time and no
//!   longer does unless another manager owns it too, and refuses to change
//!   a field another manager owns unless forced: 409 with every conflict
//!   ([`Error::Conflicts`]). Its manager then owns exactly the fields of
//!   its configuration; applying the same value as another manager shares
//!   the field.
//!
//! Both work on objects as the REST API answers them (Kubernetes JSON);
//! the caller reads and writes the object and turns JSON into objects, so
//! what an apply makes is compared as it would be stored (decoded,
//! defaulted). An entry's time moves only when its write changed the
//! object, so a repeated apply changes nothing and stores nothing. Update
//! entries are capped at [`MAX_UPDATE_MANAGERS`]; the oldest are merged
//! into one `ancient-changes` entry, as kube-apiserver does.

mod field_set;
mod merge;
mod schema;

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_proto::v1::{ManagedFieldsEntry, ObjectMeta};

pub use field_set::{display, FieldSet, Path, PathElement};

use super::generic::strip_nulls;
use super::registry::KindInfo;
use merge::Keys;
use schema::Shape;

/// At most this many `Update` entries; older ones are merged.
pub const MAX_UPDATE_MANAGERS: usize = 10;
/// The entry the oldest `Update` entries are merged into.
pub const ANCIENT_CHANGES: &str = "ancient-changes";
/// How long a manager's name may be (kube-apiserver's limit).
pub const MAX_FIELD_MANAGER_LENGTH: usize = 128;
/// The only `fieldsType` there is.
const FIELDS_V1: &str = "FieldsV1";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an apply is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fields other managers own would change (409 Conflict).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsGiven,
    #[error("the applied configuration must be an object")]
    NotAnObject,
    #[error("{path}: element {index} is not an object, but the list is keyed")]
    ItemNotAnObject { path: String, index: usize },
    #[error(
        "{path}: element {index}: associative list with keys has an element that omits key \
         field {key:?} (and doesn't have default value)"
    )]
    MissingKey {
        path: String,
        index: usize,
        key: String,
    },
    #[error("{path}: duplicate entries for key {key}")]
    DuplicateKey { path: String, key: String },
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager as Kubernetes names it: `"helm"`, `"kubectl" using
    /// apps/v1`, `"kubectl" with subresource "scale" using apps/v1`.
    pub manager: String,
    /// The field, as `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    /// The message of the conflict's `StatusCause`.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.manager)
    }
}

/// kube-apiserver's message for a refused apply.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for conflict in conflicts {
        by_manager
            .entry(&conflict.manager)
            .or_default()
            .push(&conflict.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|field| format!("- {field}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// What a write did: server-side apply, or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }

    fn parse(name: &str) -> Option<Operation> {
        match name {
            "Apply" => Some(Operation::Apply),
            "Update" => Some(Operation::Update),
            _ => None,
        }
    }
}

/// Which part of an object a write covers: the subresource it went
/// through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object: everything but `status`.
    Object,
    /// `status` only.
    Status,
    /// The `scale` subresource (`spec.replicas`, through the object).
    Scale,
}

impl Scope {
    /// The entry's `subresource`.
    pub fn subresource(self) -> &'static str {
        match self {
            Scope::Object => "",
            Scope::Status => "status",
            Scope::Scale => "scale",
        }
    }

    /// Whether a write of this scope covers the top-level field `name`.
    fn tracks(self, name: &str) -> bool {
        match name {
            "apiVersion" | "kind" => false,
            "status" => self == Scope::Status,
            _ => self != Scope::Status,
        }
    }
}

/// One manager's fields for one operation and subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// When its write last changed the object (RFC 3339).
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: Operation, subresource: &str) -> bool {
        self.operation == operation && self.manager == manager && self.subresource == subresource
    }

    /// Where it goes among an object's entries.
    fn order(&self) -> (Operation, &str, &str, &str, &str) {
        (
            self.operation,
            self.time.as_str(),
            self.manager.as_str(),
            self.api_version.as_str(),
            self.subresource.as_str(),
        )
    }

    /// How conflicts name it (kube-apiserver's `printManager`).
    fn described(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(" with subresource ");
            out.push_str(&format!("{:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(" using ");
            out.push_str(&self.api_version);
        }
        out
    }

    /// An entry as stored; `None` when it cannot be read (another
    /// `fieldsType`, an unknown operation, no JSON): such are dropped.
    fn from_proto(entry: &ManagedFieldsEntry) -> Option<Entry> {
        let operation = Operation::parse(&entry.operation)?;
        if !entry.fields_type.is_empty() && entry.fields_type != FIELDS_V1 {
            return None;
        }
        let fields = if entry.fields_v1.is_empty() {
            FieldSet::new()
        } else {
            FieldSet::from_fields_v1(&serde_json::from_str(&entry.fields_v1).ok()?)
        };
        Some(Entry {
            manager: entry.manager.clone(),
            operation,
            api_version: entry.api_version.clone(),
            time: entry.time.clone(),
            subresource: entry.subresource.clone(),
            fields,
        })
    }

    fn to_proto(&self) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: self.manager.clone(),
            operation: self.operation.name().to_owned(),
            api_version: self.api_version.clone(),
            time: self.time.clone(),
            fields_type: FIELDS_V1.to_owned(),
            fields_v1: self.fields.to_fields_v1().to_string(),
            subresource: self.subresource.clone(),
        }
    }
}

/// An object's managed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields {
    entries: Vec<Entry>,
}

impl ManagedFields {
    /// The entries `meta` holds (those that cannot be read left out).
    pub fn of(meta: &ObjectMeta) -> ManagedFields {
        ManagedFields {
            entries: meta
                .managed_fields
                .iter()
                .filter_map(Entry::from_proto)
                .collect(),
        }
    }

    /// What a write starts from: the written object's own entries, or,
    /// when it brings none, the stored object's (a client that does not
    /// know managedFields must not lose them).
    pub fn for_write(written: &ObjectMeta, stored: Option<&ObjectMeta>) -> ManagedFields {
        match stored {
            Some(stored) if written.managed_fields.is_empty() => ManagedFields::of(stored),
            _ => ManagedFields::of(written),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of `manager`'s `operation` through `subresource`.
    pub fn find(&self, manager: &str, operation: Operation, subresource: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.is(manager, operation, subresource))
    }

    /// As `metadata.managedFields` holds them, in kube-apiserver's order
    /// (Apply before Update, then oldest first).
    pub fn to_proto(&self) -> Vec<ManagedFieldsEntry> {
        self.entries.iter().map(Entry::to_proto).collect()
    }

    fn position(&self, manager: &str, operation: Operation, subresource: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.is(manager, operation, subresource))
    }

    /// Drops empty entries, caps the Update entries, sorts.
    fn tidy(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
        self.cap_updates();
        self.entries.sort_by(|a, b| {
            let (a, b) = (a.order(), b.order());
            a.cmp(&b)
        });
    }

    /// Merges the oldest Update entries into [`ANCIENT_CHANGES`] until
    /// at most [`MAX_UPDATE_MANAGERS`] are left.
    fn cap_updates(&mut self) {
        let updates = |entries: &[Entry]| {
            entries
                .iter()
                .filter(|e| e.operation == Operation::Update)
                .count()
        };
        while updates(&self.entries) > MAX_UPDATE_MANAGERS {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.operation == Operation::Update && e.manager != ANCIENT_CHANGES)
                .min_by(|(_, a), (_, b)| (&a.time, &a.manager).cmp(&(&b.time, &b.manager)))
                .map(|(index, _)| index);
            let Some(oldest) = oldest else {
                return;
            };
            let entry = self.entries.remove(oldest);
            let bucket = self.entries.iter_mut().find(|e| {
                e.operation == Operation::Update
                    && e.manager == ANCIENT_CHANGES
                    && e.subresource.is_empty()
            });
            match bucket {
                Some(bucket) => {
                    bucket.fields = bucket.fields.union(&entry.fields);
                    if entry.time > bucket.time {
                        bucket.time = entry.time;
                    }
                }
                None => self.entries.push(Entry {
                    manager: ANCIENT_CHANGES.to_owned(),
                    subresource: String::new(),
                    ..entry
                }),
            }
        }
    }
}

/// The shape of objects of `info`'s kind.
fn root(info: &KindInfo) -> Shape {
    schema::root(info.group, info.version, info.name)
}

/// A server-side apply (`PATCH` with `application/apply-patch+yaml`): who
/// applies, to which part, whether it takes fields from other managers.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub info: &'static KindInfo,
    /// `fieldManager`.
    pub manager: &'a str,
    pub scope: Scope,
    /// `force=true`: conflicting fields change owner instead of refusing.
    pub force: bool,
    /// The time an entry gets when the apply changes the object.
    pub now: &'a str,
}

/// What an applied configuration makes of the live object, before the
/// owners are settled.
#[derive(Debug)]
pub struct Merged {
    /// The object (Kubernetes JSON), for the caller to decode, default and
    /// hand to [`Apply::settle`] as it would be stored.
    pub object: Value,
    /// The fields of the configuration: what the applier will own.
    pub applied: FieldSet,
}

impl Apply<'_> {
    /// Merges the applied configuration `config` into `live` (`None`: the
    /// object does not exist yet, the configuration is all of it), then
    /// removes what the applier applied last time (its entry in `managed`)
    /// and no longer does, unless another manager owns it. Refuses a
    /// configuration that is not an object, carries managedFields, or
    /// leaves out or repeats the keys of a keyed list's items.
    pub fn merge(
        &self,
        live: Option<&Value>,
        managed: &ManagedFields,
        config: &Value,
    ) -> Result<Merged> {
        if !config.is_object() {
            return Err(Error::NotAnObject);
        }
        let given = &config["metadata"]["managedFields"];
        if !given.is_null() && given.as_array().is_none_or(|entries| !entries.is_empty()) {
            return Err(Error::ManagedFieldsGiven);
        }
        let mut config = config.clone();
        strip_nulls(&mut config);
        self.restrict(&mut config);
        let root = root(self.info);
        let applied: FieldSet = merge::paths(root, &config, self.scope, Keys::Strict)?
            .into_keys()
            .collect();
        let mut object = match live {
            Some(live) => {
                let mut object = live.clone();
                merge::merge_into(root, &mut object, &config);
                object
            }
            None => config,
        };
        let subresource = self.scope.subresource();
        if let Some(last) = managed.find(self.manager, Operation::Apply, subresource) {
            let mut owned = applied.clone();
            for entry in &managed.entries {
                if !entry.is(self.manager, Operation::Apply, subresource) {
                    owned = owned.union(&entry.fields);
                }
            }
            for path in last.fields.difference(&applied).iter() {
                if !owned.contains(path) && !owned.has_below(path) {
                    merge::remove(root, &mut object, path);
                }
            }
        }
        Ok(Merged { object, applied })
    }

    /// Settles the owners once the caller has `result`, what the apply
    /// makes of `live` as it would be stored: refuses (unless forced) to
    /// change fields other managers own; takes the fields it changes or
    /// removes from them; the applier owns `applied`. Answers the managed
    /// fields to store with `result`.
    pub fn settle(
        &self,
        live: Option<&Value>,
        result: &Value,
        mut managed: ManagedFields,
        applied: FieldSet,
    ) -> Result<ManagedFields> {
        let root = root(self.info);
        let empty = Value::Object(Map::new());
        let before = merge::paths(root, live.unwrap_or(&empty), self.scope, Keys::Lenient)?;
        let after = merge::paths(root, result, self.scope, Keys::Lenient)?;
        let comparison = merge::compare(&before, &after);
        let changed = comparison.set();
        let subresource = self.scope.subresource();
        let mut conflicts = Vec::new();
        for entry in &managed.entries {
            if entry.is(self.manager, Operation::Apply, subresource) {
                continue;
            }
            let taken = entry.fields.intersection(&changed);
            conflicts.extend(taken.iter().map(|path| Conflict {
                manager: entry.described(),
                field: display(path),
            }));
        }
        if !conflicts.is_empty() && !self.force {
            return Err(Error::Conflicts(conflicts));
        }
        for entry in &mut managed.entries {
            if !entry.is(self.manager, Operation::Apply, subresource) {
                entry.fields = entry
                    .fields
                    .difference(&changed)
                    .difference(&comparison.removed);
            }
        }
        let previous = managed.position(self.manager, Operation::Apply, subresource);
        let time = match previous {
            Some(index) if comparison.is_empty() => managed.entries[index].time.clone(),
            _ => self.now.to_owned(),
        };
        if let Some(index) = previous {
            managed.entries.remove(index);
        }
        managed.entries.push(Entry {
            manager: self.manager.to_owned(),
            operation: Operation::Apply,
            api_version: self.info.api_version.to_owned(),
            time,
            subresource: subresource.to_owned(),
            fields: applied,
        });
        managed.tidy();
        Ok(managed)
    }

    /// Keeps what a write of this scope may change: everything but
    /// `status`, or `status` (and the object's name) only.
    fn restrict(&self, config: &mut Value) {
        let Value::Object(map) = config else {
            return;
        };
        match self.scope {
            Scope::Object | Scope::Scale => {
                map.remove("status");
            }
            Scope::Status => {
                map.retain(|name, _| {
                    matches!(name.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                });
                if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
                    metadata.retain(|name, _| {
                        matches!(name.as_str(), "name" | "namespace" | "resourceVersion")
                    });
                }
            }
        }
    }
}

/// Any write but an apply (create, replace, patch, and their status and
/// scale subresources), as its manager's `Update` entry records it.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    pub info: &'static KindInfo,
    /// `fieldManager`, or the client's user agent's first word.
    pub manager: &'a str,
    pub scope: Scope,
    pub now: &'a str,
}

impl Update<'_> {
    /// The managed fields after a write that makes `written` of `live`
    /// (`None`: a create), both as the API answers them, starting from
    /// `managed` ([`ManagedFields::for_write`]): the manager gains what the
    /// write added or changed and everyone loses that and what it removed.
    pub fn record(
        &self,
        live: Option<&Value>,
        written: &Value,
        mut managed: ManagedFields,
    ) -> ManagedFields {
        let root = root(self.info);
        let empty = Value::Object(Map::new());
        let scope = self.scope;
        let before =
            merge::paths(root, live.unwrap_or(&empty), scope, Keys::Lenient).unwrap_or_default();
        let after = merge::paths(root, written, scope, Keys::Lenient).unwrap_or_default();
        let comparison = merge::compare(&before, &after);
        let set = comparison.set();
        let subresource = scope.subresource();
        for entry in &mut managed.entries {
            if !entry.is(self.manager, Operation::Update, subresource) {
                entry.fields = entry
                    .fields
                    .difference(&set)
                    .difference(&comparison.removed);
            }
        }
        match managed.position(self.manager, Operation::Update, subresource) {
            Some(index) => {
                let entry = &mut managed.entries[index];
                entry.fields = entry.fields.union(&set).difference(&comparison.removed);
                if !set.is_empty() {
                    entry.time = self.now.to_owned();
                    entry.api_version = self.info.api_version.to_owned();
                }
            }
            None if !set.is_empty() => managed.entries.push(Entry {
                manager: self.manager.to_owned(),
                operation: Operation::Update,
                api_version: self.info.api_version.to_owned(),
                time: self.now.to_owned(),
                subresource: subresource.to_owned(),
                fields: set,
            }),
            None => {}
        }
        managed.tidy();
        managed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::info;
    use crate::Kind;
    use serde_json::json;

    const EARLIER: &str = "2026-12-01T10:00:00Z";
    const LATER: &str = "2026-12-01T11:00:00Z";

    /// An applied Deployment: `replicas` and the `web` container's image
    /// (with port 80), plus what `extra` adds to `spec.template.spec`.
    fn config(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [
                        {"name": "web", "image": image, "ports": [{"containerPort": 80}]}
                    ]}
                }
            }
        })
    }

    /// The object as stored: its live JSON and its managed fields.
    #[derive(Debug, Clone)]
    struct Stored {
        object: Option<Value>,
        managed: ManagedFields,
    }

    const NOTHING: Stored = Stored {
        object: None,
        managed: ManagedFields {
            entries: Vec::new(),
        },
    };

    fn apply_at(
        stored: &Stored,
        config: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Stored> {
        let apply = Apply {
            info: info(Kind::Deployment),
            manager,
            scope: Scope::Object,
            force,
            now,
        };
        let live = stored.object.as_ref();
        let merged = apply.merge(live, &stored.managed, config)?;
        let managed = apply.settle(live, &merged.object, stored.managed.clone(), merged.applied)?;
        Ok(Stored {
            object: Some(merged.object),
            managed,
        })
    }

    fn apply(stored: &Stored, config: &Value, manager: &str, force: bool) -> Result<Stored> {
        apply_at(stored, config, manager, force, EARLIER)
    }

    fn update(stored: &Stored, written: Value, manager: &str, scope: Scope) -> Stored {
        let update = Update {
            info: info(Kind::Deployment),
            manager,
            scope,
            now: LATER,
        };
        let managed = update.record(stored.object.as_ref(), &written, stored.managed.clone());
        Stored {
            object: Some(written),
            managed,
        }
    }

    fn object(stored: &Stored) -> &Value {
        stored.object.as_ref().unwrap()
    }

    fn owner_of(stored: &Stored, field: &str) -> Vec<String> {
        let mut owners = Vec::new();
        for entry in stored.managed.entries() {
            if entry.fields.iter().any(|path| display(path) == field) {
                owners.push(entry.manager.clone());
            }
        }
        owners
    }

    #[test]
    fn apply_creates_the_object_and_owns_its_configuration() {
        let created = apply(&NOTHING, &config(2, "nginx:1"), "kubectl", false).unwrap();
        assert_eq!(object(&created), &config(2, "nginx:1"));
        let [entry] = created.managed.entries() else {
            panic!("one entry: {:?}", created.managed)
        };
        assert_eq!(entry.manager, "kubectl");
        assert_eq!(entry.operation, Operation::Apply);
        assert_eq!(entry.api_version, "apps/v1");
        assert_eq!(entry.time, EARLIER);
        let proto = &created.managed.to_proto()[0];
        assert_eq!(proto.operation, "Apply");
        assert_eq!(proto.fields_type, "FieldsV1");
        let fields: Value = serde_json::from_str(&proto.fields_v1).unwrap();
        let web = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(web["."], json!({}));
        assert_eq!(web["f:image"], json!({}));
        let port = &web["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"];
        assert_eq!(port, &json!({".": {}, "f:containerPort": {}}));
        assert_eq!(fields["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
        // The entry reads back as it was written.
        let meta = ObjectMeta {
            managed_fields: created.managed.to_proto(),
            ..Default::default()
        };
        assert_eq!(ManagedFields::of(&meta), created.managed);
    }

    #[test]
    fn the_same_apply_again_changes_nothing_not_even_the_time() {
        let created = apply(&NOTHING, &config(2, "nginx:1"), "kubectl", false).unwrap();
        let again = apply_at(&created, &config(2, "nginx:1"), "kubectl", false, LATER).unwrap();
        assert_eq!(again.object, created.object);
        assert_eq!(again.managed, created.managed, "the entry keeps its time");
        // A change moves the time.
        let changed = apply_at(&created, &config(3, "nginx:1"), "kubectl", false, LATER).unwrap();
        assert_eq!(changed.managed.entries()[0].time, LATER);
        assert_eq!(object(&changed)["spec"]["replicas"], 3);
    }

    #[test]
    fn changing_another_managers_field_conflicts_and_force_takes_it() {
        let applied = apply(&NOTHING, &config(2, "nginx:1"), "kubectl", false).unwrap();
        // `kubectl scale` through the scale subresource.
        let mut scaled = object(&applied).clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaled = update(&applied, scaled, "kubectl-scale", Scope::Scale);
        assert_eq!(owner_of(&scaled, ".spec.replicas"), ["kubectl-scale"]);

        let e = apply(&scaled, &config(2, "nginx:1"), "kubectl", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" with subresource \
             \"scale\" using apps/v1: .spec.replicas"
        );
        let Error::Conflicts(conflicts) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(conflicts[0].field, ".spec.replicas");
        assert_eq!(
            conflicts[0].message(),
            "conflict with \"kubectl-scale\" with subresource \"scale\" using apps/v1"
        );
        // Applying the value the other manager set is no conflict: shared.
        let shared = apply(&scaled, &config(5, "nginx:1"), "kubectl", false).unwrap();
        let mut owners = owner_of(&shared, ".spec.replicas");
        owners.sort();
        assert_eq!(owners, ["kubectl", "kubectl-scale"]);

        let forced = apply(&scaled, &config(2, "nginx:1"), "kubectl", true).unwrap();
        assert_eq!(object(&forced)["spec"]["replicas"], 2);
        assert_eq!(owner_of(&forced, ".spec.replicas"), ["kubectl"]);
        // The scale entry, left with nothing, goes.
        assert_eq!(forced.managed.entries().len(), 1, "{:?}", forced.managed);
    }

    #[test]
    fn several_conflicts_are_listed_by_manager() {
        let applied = apply(&NOTHING, &config(2, "nginx:1"), "helm", false).unwrap();
        let e = apply(&applied, &config(3, "nginx:2"), "kubectl", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"helm\":\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn a_field_the_applier_stops_setting_is_removed_unless_someone_else_owns_it() {
        let mut first = config(2, "nginx:1");
        first["metadata"]["labels"]["tier"] = json!("front");
        first["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        let applied = apply(&NOTHING, &first, "kubectl", false).unwrap();
        // Dropped from the configuration: gone.
        let dropped = apply(&applied, &config(2, "nginx:1"), "kubectl", false).unwrap();
        let labels = &object(&dropped)["metadata"]["labels"];
        assert_eq!(labels, &json!({"app": "web"}));
        let web = &object(&dropped)["spec"]["template"]["spec"]["containers"][0];
        assert!(web.get("env").is_none(), "{web}");

        // Owned by another manager too: it stays, and is theirs alone.
        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "front"}}});
        let shared = apply(&applied, &other, "helm", false).unwrap();
        let kept = apply(&shared, &config(2, "nginx:1"), "kubectl", false).unwrap();
        assert_eq!(object(&kept)["metadata"]["labels"]["tier"], "front");
        assert_eq!(owner_of(&kept, ".metadata.labels.tier"), ["helm"]);
        // ... until that one drops it too.
        other["metadata"]["labels"] = json!({"owner": "helm"});
        let gone = apply(&kept, &other, "helm", false).unwrap();
        assert_eq!(
            object(&gone)["metadata"]["labels"],
            json!({"app": "web", "owner": "helm"})
        );
    }

    #[test]
    fn keyed_lists_merge_by_key_and_each_manager_owns_its_items() {
        let applied = apply(&NOTHING, &config(2, "nginx:1"), "kubectl", false).unwrap();
        let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox"}]}}}});
        let both = apply(&applied, &sidecar, "mesh", false).unwrap();
        let containers = &object(&both)["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "web");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1], json!({"name": "log", "image": "busybox"}));
        let log = r#".spec.template.spec.containers[name="log"]"#;
        assert_eq!(owner_of(&both, log), ["mesh"]);
        // The first applier's next apply leaves the other's item alone.
        let again = apply(&both, &config(2, "nginx:2"), "kubectl", false).unwrap();
        let containers = &object(&again)["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[1]["name"], "log");
    }

    #[test]
    fn atomic_lists_are_replaced_and_owned_whole() {
        let mut with_args = config(2, "nginx:1");
        with_args["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["-a", "-b"]);
        let applied = apply(&NOTHING, &with_args, "kubectl", false).unwrap();
        let args = r#".spec.template.spec.containers[name="web"].args"#;
        assert_eq!(owner_of(&applied, args), ["kubectl"]);
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["-c"]}]}}}});
        let e = apply(&applied, &other, "debugger", false).unwrap_err();
        assert!(e.to_string().ends_with(args), "{e}");
        let forced = apply(&applied, &other, "debugger", true).unwrap();
        let web = &object(&forced)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(web["args"], json!(["-c"]));
        assert_eq!(web["image"], "nginx:1");
        assert_eq!(owner_of(&forced, args), ["debugger"]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut given = config(1, "nginx");
        given["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        assert_eq!(
            apply(&NOTHING, &given, "kubectl", false).unwrap_err(),
            Error::ManagedFieldsGiven
        );
        let mut unkeyed = config(1, "nginx");
        unkeyed["spec"]["template"]["spec"]["containers"][0]["name"] = Value::Null;
        let e = apply(&NOTHING, &unkeyed, "kubectl", false).unwrap_err();
        assert!(e.to_string().contains("omits key field \"name\""), "{e}");
        assert_eq!(
            apply(&NOTHING, &json!([1]), "kubectl", false).unwrap_err(),
            Error::NotAnObject
        );
    }

    #[test]
    fn updates_own_what_they_change_and_take_it_from_others() {
        let written = config(2, "nginx:1");
        let created = update(&NOTHING, written, "kubectl-create", Scope::Object);
        let [entry] = created.managed.entries() else {
            panic!("{:?}", created.managed)
        };
        assert_eq!(entry.operation, Operation::Update);
        assert_eq!(entry.time, LATER);
        assert_eq!(owner_of(&created, ".spec.replicas"), ["kubectl-create"]);
        // Status is the status subresource's, never the object's.
        let mut with_status = config(2, "nginx:1");
        with_status["status"] = json!({"replicas": 2});
        let ignored = update(&created, with_status, "kubectl-edit", Scope::Object);
        assert!(ignored
            .managed
            .find("kubectl-edit", Operation::Update, "")
            .is_none());
        let written = config(2, "nginx:2");
        let edited = update(&created, written, "kubectl-edit", Scope::Object);
        let image = r#".spec.template.spec.containers[name="web"].image"#;
        assert_eq!(owner_of(&edited, image), ["kubectl-edit"]);
        assert_eq!(owner_of(&edited, ".spec.replicas"), ["kubectl-create"]);
        // A write that changes nothing records nothing.
        let same = update(&edited, config(2, "nginx:2"), "kubectl-edit", Scope::Object);
        assert_eq!(same.managed, edited.managed);
        // What a write removes, nobody owns any more.
        let mut without = config(2, "nginx:2");
        without["metadata"]["labels"] = Value::Null;
        let removed = update(&edited, without, "kubectl-edit", Scope::Object);
        assert!(owner_of(&removed, ".metadata.labels.app").is_empty());
    }

    #[test]
    fn update_entries_are_capped_by_merging_the_oldest() {
        let mut stored = NOTHING;
        for n in 0..=12 {
            let mut written = stored
                .object
                .clone()
                .unwrap_or_else(|| config(1, "nginx:0"));
            written["metadata"]["labels"][format!("l{n}")] = json!("x");
            let manager = format!("m{n}");
            let now = format!("2026-12-01T10:00:{n:02}Z");
            let update = Update {
                info: info(Kind::Deployment),
                manager: &manager,
                scope: Scope::Object,
                now: &now,
            };
            let managed = update.record(stored.object.as_ref(), &written, stored.managed);
            stored = Stored {
                object: Some(written),
                managed,
            };
        }
        // 13 writers, 10 entries: the four oldest merged into one.
        assert_eq!(stored.managed.entries().len(), MAX_UPDATE_MANAGERS);
        let ancient = stored
            .managed
            .find(ANCIENT_CHANGES, Operation::Update, "")
            .unwrap();
        let owns = |field: &str| ancient.fields.iter().any(|p| display(p) == field);
        assert!(owns(".metadata.labels.l0") && owns(".metadata.labels.l3"));
        assert!(owns(".spec.replicas"), "the first writer's fields");
        assert!(!owns(".metadata.labels.l4"));
        assert_eq!(ancient.time, "2026-12-01T10:00:03Z");
        assert!(stored.managed.find("m4", Operation::Update, "").is_some());
        assert!(stored.managed.find("m0", Operation::Update, "").is_none());
    }
}
