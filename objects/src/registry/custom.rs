//! The dynamic part of the registry of kinds: custom kinds, defined by
//! CustomResourceDefinitions.
//!
//! - Identity: [`CustomKind`], a custom kind's group and name interned
//!   into a small copyable id, so that `Kind` stays `Copy` and every map
//!   keyed by kind (the cache, watches, controllers' keys) holds custom
//!   kinds as it holds built-in ones. Interning is append-only and each
//!   name is leaked once: the set is bounded by the kinds that were ever
//!   defined or stored, and only the store (objects it applies, commands
//!   it reads) and served definitions intern; client input only looks
//!   kinds up ([`CustomKind::find`]).
//! - Serving: which definitions are served, published by every object
//!   cache ([`DefinitionSource::publish`], each cache under its own id,
//!   replaced whole) whenever its CRDs change, before the change is
//!   announced: a new CRD is in discovery as soon as its create returns.
//!   A definition is served when its names are accepted
//!   (`custom_resources::naming`); each served version has a
//!   [`KindInfo`], interned by content (leaked once per distinct entry, so
//!   the REST router's `&'static KindInfo` works unchanged).
//!
//! One master process holds one store, so one source; tests may hold
//! several, which only add up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;

use super::{Conversion, KindInfo, Model, Subresource};
use crate::custom_resources::definition::{version_priority, Definition};
use crate::custom_resources::naming;
use crate::Kind;

/// A custom kind: an API group and a kind name, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomKind(u32);

struct KindNames {
    group: &'static str,
    name: &'static str,
    /// `Widget.example.com`: how the store and the API service name it.
    qualified: &'static str,
}

#[derive(Default)]
struct Interned {
    ids: HashMap<(String, String), u32>,
    names: Vec<&'static KindNames>,
}

static INTERNED: LazyLock<RwLock<Interned>> = LazyLock::new(RwLock::default);

static UNKNOWN: KindNames = KindNames {
    group: "",
    name: "",
    qualified: "",
};

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

fn leak_all(texts: &[String]) -> &'static [&'static str] {
    let leaked: Vec<&'static str> = texts.iter().map(|t| leak(t)).collect();
    Box::leak(leaked.into_boxed_slice())
}

impl CustomKind {
    /// The kind `name` of `group`, interned if it is new. For the store
    /// and served definitions only: see the module doc.
    pub fn intern(group: &str, name: &str) -> CustomKind {
        if let Some(found) = CustomKind::find(group, name) {
            return found;
        }
        let mut table = INTERNED.write().unwrap_or_else(|p| p.into_inner());
        let key = (group.to_owned(), name.to_owned());
        if let Some(id) = table.ids.get(&key) {
            return CustomKind(*id);
        }
        let id = u32::try_from(table.names.len()).unwrap_or(u32::MAX);
        let names: &'static KindNames = Box::leak(Box::new(KindNames {
            group: leak(group),
            name: leak(name),
            qualified: leak(&format!("{name}.{group}")),
        }));
        table.names.push(names);
        table.ids.insert(key, id);
        CustomKind(id)
    }

    /// The kind `name` of `group`, if it was ever interned.
    pub fn find(group: &str, name: &str) -> Option<CustomKind> {
        let table = INTERNED.read().unwrap_or_else(|p| p.into_inner());
        table
            .ids
            .get(&(group.to_owned(), name.to_owned()))
            .map(|id| CustomKind(*id))
    }

    /// The kind named `Widget.example.com`, if it was ever interned.
    pub fn from_qualified(qualified: &str) -> Option<CustomKind> {
        let (name, group) = qualified.split_once('.')?;
        CustomKind::find(group, name)
    }

    fn names(self) -> &'static KindNames {
        let table = INTERNED.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(self.0)
            .ok()
            .and_then(|i| table.names.get(i).copied())
            .unwrap_or(&UNKNOWN)
    }

    pub fn group(self) -> &'static str {
        self.names().group
    }

    /// The name as written in `kind:` (`Widget`).
    pub fn name(self) -> &'static str {
        self.names().name
    }

    /// `Widget.example.com`.
    pub fn qualified(self) -> &'static str {
        self.names().qualified
    }
}

/// Ordered by group and name, the same in every process (ids are not).
impl Ord for CustomKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.group(), self.name()).cmp(&(other.group(), other.name()))
    }
}

impl PartialOrd for CustomKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Carried by name (commands in the Raft log): ids differ between
/// processes.
impl serde::Serialize for CustomKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(self.group(), self.name()), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for CustomKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (group, name) = <(String, String) as serde::Deserialize>::deserialize(deserializer)?;
        Ok(CustomKind::intern(&group, &name))
    }
}

/// A served CustomResourceDefinition.
#[derive(Debug)]
pub struct ServedDefinition {
    pub definition: Arc<Definition>,
    pub kind: CustomKind,
    /// The served versions' registry entries, the preferred one first.
    pub versions: Vec<&'static KindInfo>,
    /// The storage version's entry.
    pub storage: &'static KindInfo,
}

impl ServedDefinition {
    /// The entry of the served version `version`.
    pub fn served_version(&self, version: &str) -> Option<&'static KindInfo> {
        self.versions.iter().copied().find(|i| i.version == version)
    }
}

#[derive(Default)]
struct Served {
    by_name: BTreeMap<String, Arc<ServedDefinition>>,
    by_kind: HashMap<CustomKind, Arc<ServedDefinition>>,
    by_resource: HashMap<(String, String, String), &'static KindInfo>,
}

#[derive(Default)]
struct Registry {
    /// Each source's definitions by CRD name (as parsed at their
    /// resourceVersion).
    sources: BTreeMap<u64, BTreeMap<String, Arc<Definition>>>,
    served: Arc<Served>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(RwLock::default);

/// The newest entry of every custom kind ever served (or made up), for
/// [`info`] once its definition is gone.
static LAST_KNOWN: LazyLock<RwLock<HashMap<CustomKind, &'static KindInfo>>> =
    LazyLock::new(RwLock::default);

/// What makes two entries the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InfoKey {
    kind: CustomKind,
    version: String,
    resource: String,
    singular: String,
    namespaced: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
    status: bool,
    scale: bool,
}

static INFOS: LazyLock<Mutex<HashMap<InfoKey, &'static KindInfo>>> = LazyLock::new(Mutex::default);

const NONE: &[Subresource] = &[];
const STATUS: &[Subresource] = &[Subresource::Status];
const SCALE: &[Subresource] = &[Subresource::Scale];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];

fn interned_info(key: InfoKey) -> &'static KindInfo {
    let mut infos = INFOS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(info) = infos.get(&key) {
        return info;
    }
    let group = key.kind.group();
    let info: &'static KindInfo = Box::leak(Box::new(KindInfo {
        kind: Kind::Custom(key.kind),
        name: key.kind.name(),
        group,
        version: leak(&key.version),
        api_version: leak(&format!("{group}/{}", key.version)),
        resource: leak(&key.resource),
        singular: leak(&key.singular),
        namespaced: key.namespaced,
        short_names: leak_all(&key.short_names),
        categories: leak_all(&key.categories),
        subresources: match (key.status, key.scale) {
            (false, false) => NONE,
            (true, false) => STATUS,
            (false, true) => SCALE,
            (true, true) => STATUS_SCALE,
        },
        model: Model::Custom,
        conversion: Conversion::AsStored,
    }));
    infos.insert(key, info);
    info
}

fn build(sources: &BTreeMap<u64, BTreeMap<String, Arc<Definition>>>) -> Served {
    let mut all: BTreeMap<&str, &Arc<Definition>> = BTreeMap::new();
    for definitions in sources.values() {
        for (name, definition) in definitions {
            all.entry(name.as_str()).or_insert(definition);
        }
    }
    let verdicts = naming::accept(all.values().map(|d| &***d));
    let mut served = Served::default();
    let mut last_known = LAST_KNOWN.write().unwrap_or_else(|p| p.into_inner());
    for (name, definition) in all {
        if !matches!(verdicts.get(name), Some(Ok(()))) {
            continue;
        }
        let Some(storage) = definition.storage_version() else {
            continue;
        };
        let kind = CustomKind::intern(&definition.group, &definition.names.kind);
        let names = &definition.names;
        let entry = |version: &crate::custom_resources::Version| {
            interned_info(InfoKey {
                kind,
                version: version.name.clone(),
                resource: names.plural.clone(),
                singular: names.singular.clone(),
                namespaced: definition.namespaced(),
                short_names: names.short_names.clone(),
                categories: names.categories.clone(),
                status: version.status,
                scale: version.scale.is_some(),
            })
        };
        let versions: Vec<&'static KindInfo> = definition
            .served_versions()
            .into_iter()
            .map(entry)
            .collect();
        let storage = entry(storage);
        for info in &versions {
            let key = (
                info.group.to_owned(),
                info.version.to_owned(),
                info.resource.to_owned(),
            );
            served.by_resource.insert(key, *info);
        }
        last_known.insert(kind, storage);
        let one = Arc::new(ServedDefinition {
            definition: definition.clone(),
            kind,
            versions,
            storage,
        });
        served.by_kind.insert(kind, one.clone());
        served.by_name.insert(name.to_owned(), one);
    }
    served
}

fn served() -> Arc<Served> {
    REGISTRY
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .served
        .clone()
}

/// Replaces what `source` defines with the CustomResourceDefinitions
/// `crds` (unchanged ones are not read again).
fn publish(source: u64, crds: &[Arc<Object>]) {
    let mut registry = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let previous = registry.sources.remove(&source).unwrap_or_default();
    let mut parsed = BTreeMap::new();
    for object in crds {
        let Some(Body::Generic(crd)) = &object.kind else {
            continue;
        };
        let meta = crd.metadata.clone().unwrap_or_default();
        let unchanged = previous
            .get(&meta.name)
            .filter(|_| !meta.resource_version.is_empty())
            .filter(|d| d.resource_version == meta.resource_version)
            .cloned();
        let definition = match unchanged {
            Some(definition) => definition,
            None => match Definition::read(crd) {
                Some(definition) => Arc::new(definition),
                None => {
                    tracing::warn!(crd = %meta.name, "a stored CustomResourceDefinition cannot be served: it lacks a group, names or one storage version");
                    continue;
                }
            },
        };
        parsed.insert(meta.name, definition);
    }
    registry.sources.insert(source, parsed);
    registry.served = Arc::new(build(&registry.sources));
}

fn retire(source: u64) {
    let mut registry = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    if registry.sources.remove(&source).is_some() {
        registry.served = Arc::new(build(&registry.sources));
    }
}

/// Where served definitions come from: one object cache. Dropping it
/// withdraws what it published.
#[derive(Debug)]
pub struct DefinitionSource {
    id: u64,
}

impl Default for DefinitionSource {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        DefinitionSource {
            id: NEXT.fetch_add(1, AtomicOrdering::Relaxed),
        }
    }
}

impl DefinitionSource {
    /// Serves the CustomResourceDefinitions `crds` (every CRD this source
    /// holds), in place of what it published before.
    pub fn publish(&self, crds: &[Arc<Object>]) {
        publish(self.id, crds);
    }
}

impl Drop for DefinitionSource {
    fn drop(&mut self) {
        retire(self.id);
    }
}

/// The custom kind served as `resource` in `group`/`version`.
pub fn by_resource(group: &str, version: &str, resource: &str) -> Option<&'static KindInfo> {
    let key = (group.to_owned(), version.to_owned(), resource.to_owned());
    served().by_resource.get(&key).copied()
}

/// The groups custom kinds are served in, each with its versions, the
/// preferred one first; groups by name.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let served = served();
    let mut groups: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for one in served.by_name.values() {
        let versions = groups.entry(one.storage.group).or_default();
        for info in &one.versions {
            if !versions.contains(&info.version) {
                versions.push(info.version);
            }
        }
    }
    groups
        .into_iter()
        .filter(|(_, versions)| !versions.is_empty())
        .map(|(group, mut versions)| {
            versions.sort_by(|a, b| version_priority(a, b));
            (group, versions)
        })
        .collect()
}

/// The custom kinds served in `group`/`version`.
pub fn kinds_in(group: &str, version: &str) -> Vec<&'static KindInfo> {
    let served = served();
    served
        .by_name
        .values()
        .filter_map(|one| {
            one.versions
                .iter()
                .copied()
                .find(|i| i.group == group && i.version == version)
        })
        .collect()
}

/// Every served version of every served custom kind.
pub fn all() -> Vec<&'static KindInfo> {
    served()
        .by_name
        .values()
        .flat_map(|one| one.versions.iter().copied())
        .collect()
}

/// The served definition of `kind`, if it is served.
pub fn served_definition(kind: CustomKind) -> Option<Arc<ServedDefinition>> {
    served().by_kind.get(&kind).cloned()
}

/// Whether custom kinds are served in `group`.
pub fn serves_group(group: &str) -> bool {
    served()
        .by_name
        .values()
        .any(|one| one.definition.group == group)
}

/// The registry entry of `kind`: its storage version's while it is
/// served, else the last one it had, else one made up from its name
/// (namespaced, plural `<kind>s`), for messages.
pub fn info(kind: CustomKind) -> &'static KindInfo {
    if let Some(one) = served().by_kind.get(&kind) {
        return one.storage;
    }
    if let Some(info) = LAST_KNOWN
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&kind)
    {
        return info;
    }
    let lower = kind.name().to_ascii_lowercase();
    let made_up = interned_info(InfoKey {
        kind,
        version: "v1".to_owned(),
        resource: format!("{lower}s"),
        singular: lower,
        namespaced: true,
        short_names: Vec::new(),
        categories: Vec::new(),
        status: false,
        scale: false,
    });
    LAST_KNOWN
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(kind, made_up);
    made_up
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_proto::v1::{GenericObject, ObjectMeta};

    fn crd(group: &str, plural: &str, kind: &str, rv: &str, created: &str) -> Arc<Object> {
        let spec = json!({
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object"}},
                 "subresources": {"status": {}}},
            ],
        });
        Arc::new(Object {
            kind: Some(Body::Generic(GenericObject {
                api_version: "apiextensions.k8s.io/v1".into(),
                kind: "CustomResourceDefinition".into(),
                metadata: Some(ObjectMeta {
                    name: format!("{plural}.{group}"),
                    resource_version: rv.into(),
                    creation_timestamp: created.into(),
                    ..Default::default()
                }),
                content: serde_json::to_vec(&json!({ "spec": spec })).unwrap(),
            })),
        })
    }

    #[test]
    fn interned_kinds_are_stable_ordered_by_name_and_carried_by_name() {
        let a = CustomKind::intern("registry-test-a.io", "Zebra");
        assert_eq!(CustomKind::intern("registry-test-a.io", "Zebra"), a);
        assert_eq!(CustomKind::find("registry-test-a.io", "Zebra"), Some(a));
        assert_eq!(
            CustomKind::from_qualified("Zebra.registry-test-a.io"),
            Some(a)
        );
        assert_eq!(CustomKind::find("registry-test-a.io", "Never"), None);
        assert_eq!(a.qualified(), "Zebra.registry-test-a.io");
        let b = CustomKind::intern("registry-test-a.io", "Ant");
        assert!(b < a, "ordered by name, not by id");
        let bytes = bincode::serialize(&Kind::Custom(a)).unwrap();
        let back: Kind = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, Kind::Custom(a));
    }

    #[test]
    fn published_definitions_are_served_until_their_source_withdraws_them() {
        let source = DefinitionSource::default();
        let group = "registry-test-b.io";
        source.publish(&[
            crd(group, "gizmos", "Gizmo", "5", "2024-01-01T00:00:00Z"),
            // Same kind, later: its names are not accepted, it is not served.
            crd(group, "others", "Gizmo", "6", "2024-02-01T00:00:00Z"),
        ]);
        let info = by_resource(group, "v1", "gizmos").expect("served");
        assert_eq!(
            (info.name, info.api_version),
            ("Gizmo", "registry-test-b.io/v1")
        );
        assert!(info.has(Subresource::Status));
        assert_eq!(info.model, Model::Custom);
        assert_eq!(info.kind.name(), "Gizmo.registry-test-b.io");
        assert!(by_resource(group, "v1beta1", "gizmos").is_some());
        assert!(by_resource(group, "v1", "others").is_none());
        let listed = groups();
        let versions = &listed.iter().find(|(g, _)| *g == group).unwrap().1;
        assert_eq!(versions, &vec!["v1", "v1beta1"]);
        assert_eq!(kinds_in(group, "v1beta1").len(), 1);
        let Kind::Custom(kind) = info.kind else {
            panic!("a custom kind");
        };
        assert_eq!(super::info(kind).version, "v1");
        assert!(served_definition(kind).is_some());
        drop(source);
        assert!(by_resource(group, "v1", "gizmos").is_none());
        // The last entry stays known for messages.
        assert_eq!(super::info(kind).resource, "gizmos");
    }
}
