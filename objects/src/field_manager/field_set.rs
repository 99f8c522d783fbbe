//! Sets of field paths, as server-side apply records who owns what
//! (structured-merge-diff's `fieldpath`): a path is a list of steps into an
//! object (a field, a list item named by its key fields, a set member by
//! its value), and a set is written in `metadata.managedFields` as a
//! `FieldsV1` object: `{"f:spec": {"f:replicas": {}}}`, `k:{"name":"web"}`
//! for a keyed list item, `v:"a"` for a set member, `.` for a path that is
//! itself in the set and has children in it too.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde_json::{Map, Value};

/// How deep a `FieldsV1` object is read; deeper parts are left out (no
/// served kind nests anywhere near this deep).
const MAX_DEPTH: usize = 128;

/// One step into an object. Ordered as structured-merge-diff orders them:
/// fields, then keys, then values, then indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object, or a key of a map (`f:name`).
    Field(String),
    /// An item of a list merged by key: the compact JSON object of its key
    /// fields, keys sorted (`k:{"containerPort":80,"protocol":"TCP"}`).
    Key(String),
    /// A member of a list merged as a set: its value as compact JSON
    /// (`v:"foregroundDeletion"`).
    Value(String),
    /// An item by position (`i:0`): read where another writer put one;
    /// skiff names items by key or value.
    Index(usize),
}

impl PathElement {
    /// The item of a keyed list whose key fields are `fields`.
    pub fn key(fields: Map<String, Value>) -> PathElement {
        PathElement::Key(Value::Object(fields).to_string())
    }

    /// The member `value` of a set-like list.
    pub fn value(value: &Value) -> PathElement {
        PathElement::Value(value.to_string())
    }

    /// As `FieldsV1` writes it: `f:replicas`, `k:{"name":"web"}`, ...
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Reads what [`PathElement::encode`] writes; `None` for anything else
    /// (skipped, as structured-merge-diff skips steps it does not know).
    pub fn decode(text: &str) -> Option<PathElement> {
        let (kind, rest) = (text.get(..2)?, text.get(2..)?);
        match kind {
            "f:" => Some(PathElement::Field(rest.to_owned())),
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(fields) => Some(PathElement::key(fields)),
                _ => None,
            },
            "v:" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|value| PathElement::value(&value)),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

/// A path from the object's root.
pub type Path = Vec<PathElement>;

/// A path as Kubernetes prints it in conflicts: `.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`,
/// `.metadata.finalizers[="a"]`.
pub fn display(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(json) => {
                let pairs = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(fields)) => fields
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => json.clone(),
                };
                out.push('[');
                out.push_str(&pairs);
                out.push(']');
            }
            PathElement::Value(json) => {
                out.push_str("[=");
                out.push_str(json);
                out.push(']');
            }
            PathElement::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A set of paths: the fields one manager owns, or what a write changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    paths: BTreeSet<Path>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn insert(&mut self, path: Path) {
        self.paths.insert(path);
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.paths.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// The paths, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter()
    }

    /// Whether the set holds a path below `prefix` (not `prefix` itself).
    pub fn has_below(&self, prefix: &[PathElement]) -> bool {
        // Paths extending `prefix` come right after it in the set's order.
        self.paths
            .range::<[PathElement], _>((Bound::Excluded(prefix), Bound::Unbounded))
            .next()
            .is_some_and(|path| path.len() > prefix.len() && path.starts_with(prefix))
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            paths: self.paths.union(&other.paths).cloned().collect(),
        }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            paths: self.paths.intersection(&other.paths).cloned().collect(),
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            paths: self.paths.difference(&other.paths).cloned().collect(),
        }
    }

    /// The set as a `FieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Node::default();
        for path in &self.paths {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        Value::Object(root.children_json())
    }

    /// The set a `FieldsV1` object holds. Steps it cannot read are left
    /// out with what is below them; anything but an object is no set.
    pub fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        if let Value::Object(map) = value {
            read_children(map, &mut Vec::new(), &mut set);
        }
        set
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(paths: I) -> FieldSet {
        FieldSet {
            paths: paths.into_iter().collect(),
        }
    }
}

/// A path step of a set being written: whether its path is in the set,
/// and the steps below it.
#[derive(Default)]
struct Node {
    member: bool,
    children: BTreeMap<PathElement, Node>,
}

impl Node {
    fn children_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (element, child) in &self.children {
            let mut inner = child.children_json();
            if child.member && !inner.is_empty() {
                inner.insert(".".to_owned(), Value::Object(Map::new()));
            }
            out.insert(element.encode(), Value::Object(inner));
        }
        out
    }
}

/// Reads the steps of `map`, the object at `prefix`, into `set`.
fn read_children(map: &Map<String, Value>, prefix: &mut Path, set: &mut FieldSet) {
    if prefix.len() >= MAX_DEPTH {
        return;
    }
    for (key, child) in map {
        if key == "." {
            continue;
        }
        let Some(element) = PathElement::decode(key) else {
            continue;
        };
        prefix.push(element);
        match child {
            Value::Object(inner) => {
                // `{}` is a path in the set; `.` marks one with children.
                if inner.is_empty() || inner.contains_key(".") {
                    set.insert(prefix.clone());
                }
                read_children(inner, prefix, set);
            }
            _ => set.insert(prefix.clone()),
        }
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_owned())
    }

    fn name_key(name: &str) -> PathElement {
        let mut fields = Map::new();
        fields.insert("name".into(), json!(name));
        PathElement::key(fields)
    }

    #[test]
    fn path_elements_encode_as_kubernetes_writes_them_and_read_back() {
        let mut port = Map::new();
        port.insert("protocol".into(), json!("TCP"));
        port.insert("containerPort".into(), json!(80));
        let elements = [
            (field("replicas"), "f:replicas"),
            (name_key("web"), r#"k:{"name":"web"}"#),
            (
                PathElement::key(port),
                r#"k:{"containerPort":80,"protocol":"TCP"}"#,
            ),
            (PathElement::value(&json!("a")), r#"v:"a""#),
            (PathElement::Index(3), "i:3"),
        ];
        for (element, text) in elements {
            assert_eq!(element.encode(), text);
            assert_eq!(PathElement::decode(text), Some(element), "{text}");
        }
        // Keys are read in any order and kept sorted.
        assert_eq!(
            PathElement::decode(r#"k:{"protocol":"TCP","containerPort":80}"#)
                .unwrap()
                .encode(),
            r#"k:{"containerPort":80,"protocol":"TCP"}"#
        );
        for unknown in ["x:1", "k:[1]", "k:{", "i:x", "f", ""] {
            assert_eq!(PathElement::decode(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let fields_v1 = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        });
        let set = FieldSet::from_fields_v1(&fields_v1);
        let containers = [
            field("spec"),
            field("template"),
            field("spec"),
            field("containers"),
        ];
        let mut web = containers.to_vec();
        web.push(name_key("web"));
        let mut image = web.clone();
        image.push(field("image"));
        assert!(set.contains(&[field("spec"), field("replicas")]));
        assert!(set.contains(&web), "the item itself is a member");
        assert!(set.contains(&image));
        assert!(!set.contains(&[field("spec")]), "parents are not members");
        assert_eq!(set.len(), 5);
        assert_eq!(set.to_fields_v1(), fields_v1);
        assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()), set);
        assert!(set.has_below(&containers));
        assert!(set.has_below(&web));
        assert!(!set.has_below(&[field("spec"), field("replicas")]));
        assert!(!set.has_below(&[field("status")]));
        assert_eq!(FieldSet::from_fields_v1(&json!("x")), FieldSet::new());
    }

    #[test]
    fn set_operations_work_on_paths() {
        let a: FieldSet = [vec![field("a")], vec![field("b")]].into_iter().collect();
        let b: FieldSet = [vec![field("b")], vec![field("c")]].into_iter().collect();
        let only_a: FieldSet = [vec![field("a")]].into_iter().collect();
        let only_b: FieldSet = [vec![field("b")]].into_iter().collect();
        assert_eq!(a.union(&b).len(), 3);
        assert_eq!(a.intersection(&b), only_b);
        assert_eq!(a.difference(&b), only_a);
    }

    #[test]
    fn paths_display_as_in_kubernetes_conflicts() {
        let path = vec![
            field("spec"),
            field("containers"),
            name_key("web"),
            field("image"),
        ];
        assert_eq!(display(&path), r#".spec.containers[name="web"].image"#);
        let finalizer = vec![
            field("metadata"),
            field("finalizers"),
            PathElement::value(&json!("a")),
        ];
        assert_eq!(display(&finalizer), r#".metadata.finalizers[="a"]"#);
    }
}
