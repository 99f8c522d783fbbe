//! What server-side apply needs of a kind's schema, read from the generated
//! API schema (`objects::api_schema`): at each place in an object, whether
//! the value there is a structure merged field by field, a map merged key
//! by key (`labels`), a list (merged by key, as a set, or replaced whole)
//! or a leaf. Kubernetes publishes this as `x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys`; skiff derives it from the strategic merge
//! patch markers the schema carries (`PATCH_META`): a list with a merge key
//! is a map keyed by it (container and Service ports also by `protocol`,
//! defaulting to TCP, as Kubernetes keys them), a list of values with
//! strategy `merge` is a set (`finalizers`), any other list is atomic.
//! Places the schema does not describe are read as structured-merge-diff's
//! "deduced" type: objects field by field, anything else a leaf.

use crate::api_schema::{FieldKind, FieldSchema, PatchMeta, KINDS, MESSAGES, PATCH_META};

/// The shape of the value at one place in an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A message: an object merged field by field.
    Struct(u16),
    /// A map with string keys (`labels`, `data`, resource quantities),
    /// merged key by key; its values are leaves.
    Map,
    /// A list; its items are messages (`Some`) or leaves.
    List { item: Option<u16>, list: ListType },
    /// A scalar, or a value replaced whole (`RawExtension`).
    Leaf,
    /// No schema: objects field by field, anything else a leaf.
    Deduced,
}

/// How a list merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListType {
    /// Replaced and owned whole.
    Atomic,
    /// Values merged as a set, each owned on its own.
    Set,
    /// Objects merged by their key fields: `key`, and a second one for
    /// the lists Kubernetes keys by two (with its default, when it has
    /// one).
    Keyed {
        key: &'static str,
        second: Option<SecondKey>,
    },
}

/// The second key field of a list keyed by two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SecondKey {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

impl ListType {
    /// The key fields of a keyed list, with their defaults.
    pub fn keys(self) -> Vec<(&'static str, Option<&'static str>)> {
        match self {
            ListType::Keyed { key, second } => {
                let mut keys = vec![(key, None)];
                keys.extend(second.map(|s| (s.name, s.default)));
                keys
            }
            ListType::Atomic | ListType::Set => Vec::new(),
        }
    }
}

/// The shape of a whole object of `kind` in `group`/`version`.
pub(super) fn root(group: &str, version: &str, kind: &str) -> Shape {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map_or(Shape::Deduced, |k| Shape::Struct(k.message))
}

impl Shape {
    /// The shape of the member `name` of an object of this shape.
    pub fn field(self, name: &str) -> Shape {
        match self {
            Shape::Struct(message) => match find_field(message, name, 0) {
                Some((owner, field)) => field_shape(owner, field),
                None => Shape::Deduced,
            },
            Shape::Map | Shape::Leaf | Shape::List { .. } => Shape::Leaf,
            Shape::Deduced => Shape::Deduced,
        }
    }

    /// The shape of the items of a list of this shape.
    pub fn item(self) -> Shape {
        match self {
            Shape::List {
                item: Some(message),
                ..
            } => Shape::Struct(message),
            _ => Shape::Leaf,
        }
    }

    /// How a list of this shape merges (atomic for anything not a list).
    pub fn list_type(self) -> ListType {
        match self {
            Shape::List { list, .. } => list,
            _ => ListType::Atomic,
        }
    }
}

/// The field `name` (in JSON) of `message`, inlined members included, and
/// the message that declares it (what `PATCH_META` is keyed by).
fn find_field(message: u16, name: &str, depth: usize) -> Option<(u16, &'static FieldSchema)> {
    // Inlining nests one or two deep; the bound only guards the recursion.
    if depth > 8 {
        return None;
    }
    let schema = MESSAGES.get(usize::from(message))?;
    schema.fields.iter().find_map(|field| match field.kind {
        FieldKind::Inline(inner) => find_field(inner, name, depth + 1),
        _ if field.json == name => Some((message, field)),
        _ => None,
    })
}

fn field_shape(owner: u16, field: &'static FieldSchema) -> Shape {
    let message = match field.kind {
        FieldKind::Message(inner) => Some(inner),
        _ => None,
    };
    if field.repeated {
        return Shape::List {
            item: message,
            list: list_type(owner, field.tag, message.is_some()),
        };
    }
    match field.kind {
        FieldKind::Message(inner) => Shape::Struct(inner),
        FieldKind::MapString
        | FieldKind::MapBytes
        | FieldKind::MapQuantity
        | FieldKind::MapTime
        | FieldKind::MapStringList => Shape::Map,
        _ => Shape::Leaf,
    }
}

/// How the list field `tag` of `owner` merges.
fn list_type(owner: u16, tag: u16, of_messages: bool) -> ListType {
    let key = |m: &PatchMeta| (m.message, m.tag);
    let Ok(found) = PATCH_META.binary_search_by_key(&(owner, tag), key) else {
        return ListType::Atomic;
    };
    let meta = &PATCH_META[found];
    if !meta.strategy.split(',').any(|s| s == "merge") {
        return ListType::Atomic;
    }
    match (of_messages, meta.merge_key) {
        (false, _) => ListType::Set,
        (true, "") => ListType::Atomic,
        (true, key) => ListType::Keyed {
            key,
            second: second_key(key),
        },
    }
}

/// The lists Kubernetes keys by two fields (`+listMapKey`) where strategic
/// merge patch names one: container ports (`containerPort`, `protocol`),
/// Service ports (`port`, `protocol`), topology spread constraints
/// (`topologyKey`, `whenUnsatisfiable`).
fn second_key(key: &str) -> Option<SecondKey> {
    match key {
        "containerPort" | "port" => Some(SecondKey {
            name: "protocol",
            default: Some("TCP"),
        }),
        "topologyKey" => Some(SecondKey {
            name: "whenUnsatisfiable",
            default: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(root: Shape, path: &[&str]) -> Shape {
        path.iter().fold(root, |shape, step| match *step {
            "[]" => shape.item(),
            name => shape.field(name),
        })
    }

    #[test]
    fn lists_merge_as_kubernetes_lists_them() {
        let deployment = root("apps", "v1", "Deployment");
        assert!(matches!(deployment, Shape::Struct(_)));
        let containers = at(deployment, &["spec", "template", "spec", "containers"]);
        assert_eq!(
            containers.list_type(),
            ListType::Keyed {
                key: "name",
                second: None,
            }
        );
        let ports = at(containers, &["[]", "ports"]);
        assert_eq!(
            ports.list_type().keys(),
            vec![("containerPort", None), ("protocol", Some("TCP"))]
        );
        let env = at(containers, &["[]", "env"]);
        assert_eq!(env.list_type().keys(), vec![("name", None)]);
        // No merge key: replaced whole.
        let args = at(containers, &["[]", "args"]);
        assert_eq!(args.list_type(), ListType::Atomic);
        let tolerations = at(deployment, &["spec", "template", "spec", "tolerations"]);
        assert_eq!(tolerations.list_type(), ListType::Atomic);
        assert_eq!(
            at(deployment, &["metadata", "finalizers"]).list_type(),
            ListType::Set
        );
        let owners = at(deployment, &["metadata", "ownerReferences"]);
        assert_eq!(owners.list_type().keys(), vec![("uid", None)]);
        let service_ports = at(root("", "v1", "Service"), &["spec", "ports"]);
        assert_eq!(
            service_ports.list_type().keys(),
            vec![("port", None), ("protocol", Some("TCP"))]
        );
    }

    #[test]
    fn maps_leaves_and_places_without_schema() {
        let deployment = root("apps", "v1", "Deployment");
        assert_eq!(at(deployment, &["metadata", "labels"]), Shape::Map);
        assert_eq!(at(deployment, &["metadata", "labels", "app"]), Shape::Leaf);
        assert_eq!(at(deployment, &["spec", "replicas"]), Shape::Leaf);
        assert_eq!(at(deployment, &["spec", "colour"]), Shape::Deduced);
        assert_eq!(at(deployment, &["spec", "colour", "hue"]), Shape::Deduced);
        // A Volume's sources are inlined into it.
        let volumes = at(deployment, &["spec", "template", "spec", "volumes", "[]"]);
        assert!(matches!(volumes.field("configMap"), Shape::Struct(_)));
        let config_map = root("", "v1", "ConfigMap");
        assert_eq!(config_map.field("data"), Shape::Map);
        assert_eq!(root("example.com", "v1", "Widget"), Shape::Deduced);
    }
}
