//! The JSON side of server-side apply, guided by the kind's schema
//! (`schema.rs`): the paths a value has (its leaves with their
//! values, and the items of keyed lists), a configuration merged into a
//! live object, a path removed from an object, and what changed between
//! two objects (structured-merge-diff's `ToFieldSet`, `Merge`,
//! `RemoveItems` and `Compare`).
//!
//! What is a leaf: scalars, atomic lists, members of set-like lists, and
//! empty objects and lists (so that `{}` set on purpose is owned). The
//! fields the server sets (`metadata.name`, `uid`, `resourceVersion`, ...)
//! and the type meta are never paths; `status` is one only for writes of
//! the status subresource, and then nothing else is.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::field_set::{display, FieldSet, Path, PathElement};
use super::schema::{ListType, Shape};
use super::{Error, Scope};

/// How deep values are walked; below, a value counts as one leaf. JSON
/// bodies are read at most 128 levels deep anyway.
const MAX_DEPTH: usize = 128;

/// Fields of `metadata` that no manager owns: the server sets them
/// (structured-merge-diff's stripped fields, plus the deletion mark).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// How list items must name themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keys {
    /// An applied configuration: each item of a keyed list carries its key
    /// fields (or they have defaults), and no two items share a key.
    Strict,
    /// A stored object: an item without keys is named by its position,
    /// items sharing a key share a path.
    Lenient,
}

/// Every path of an object: each leaf with its value, each keyed list item
/// with `None`.
pub(super) type Paths<'v> = BTreeMap<Path, Option<&'v Value>>;

/// The paths of `object` (whose shape is `root`) that a write of `scope`
/// covers.
pub(super) fn paths<'v>(
    root: Shape,
    object: &'v Value,
    scope: Scope,
    keys: Keys,
) -> Result<Paths<'v>, Error> {
    let mut out = Paths::new();
    let Value::Object(map) = object else {
        return Ok(out);
    };
    let mut path = Path::new();
    for (name, value) in map {
        if value.is_null() || !scope.tracks(name) {
            continue;
        }
        let shape = root.field(name);
        path.push(PathElement::Field(name.clone()));
        let walked = if name == "metadata" {
            walk_metadata(shape, value, &mut path, keys, &mut out)
        } else {
            walk(shape, value, &mut path, keys, 1, &mut out)
        };
        path.pop();
        walked?;
    }
    Ok(out)
}

fn walk_metadata<'v>(
    shape: Shape,
    value: &'v Value,
    path: &mut Path,
    keys: Keys,
    out: &mut Paths<'v>,
) -> Result<(), Error> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    for (name, field) in map {
        if field.is_null() || SERVER_METADATA.contains(&name.as_str()) {
            continue;
        }
        path.push(PathElement::Field(name.clone()));
        let walked = walk(shape.field(name), field, path, keys, 2, out);
        path.pop();
        walked?;
    }
    Ok(())
}

fn walk<'v>(
    shape: Shape,
    value: &'v Value,
    path: &mut Path,
    keys: Keys,
    depth: usize,
    out: &mut Paths<'v>,
) -> Result<(), Error> {
    if depth >= MAX_DEPTH {
        out.insert(path.clone(), Some(value));
        return Ok(());
    }
    match (shape, value) {
        (Shape::Struct(_) | Shape::Map | Shape::Deduced, Value::Object(map))
            if map.values().any(|v| !v.is_null()) =>
        {
            for (name, child) in map {
                if child.is_null() {
                    continue;
                }
                path.push(PathElement::Field(name.clone()));
                let walked = walk(shape.field(name), child, path, keys, depth + 1, out);
                path.pop();
                walked?;
            }
            Ok(())
        }
        (Shape::List { list, .. }, Value::Array(items))
            if list != ListType::Atomic && items.iter().any(|v| !v.is_null()) =>
        {
            let item_shape = shape.item();
            let mut seen = HashSet::new();
            for (index, item) in items.iter().enumerate() {
                if item.is_null() {
                    continue;
                }
                let element = item_element(list, item, index, keys, path)?;
                if keys == Keys::Strict && !seen.insert(element.clone()) {
                    return Err(Error::DuplicateKey {
                        path: display(path),
                        key: display(std::slice::from_ref(&element)),
                    });
                }
                path.push(element);
                let walked = if list == ListType::Set {
                    out.insert(path.clone(), Some(item));
                    Ok(())
                } else {
                    out.insert(path.clone(), None);
                    walk(item_shape, item, path, keys, depth + 1, out)
                };
                path.pop();
                walked?;
            }
            Ok(())
        }
        _ => {
            out.insert(path.clone(), Some(value));
            Ok(())
        }
    }
}

/// The step naming `item`, the element `index` of a list of type `list`
/// at `at`: its key fields (defaults filled in), or its value for a set.
fn item_element(
    list: ListType,
    item: &Value,
    index: usize,
    keys: Keys,
    at: &[PathElement],
) -> Result<PathElement, Error> {
    match list {
        ListType::Set => Ok(PathElement::value(item)),
        ListType::Atomic => Ok(PathElement::Index(index)),
        ListType::Keyed { .. } => {
            let Value::Object(fields) = item else {
                return match keys {
                    Keys::Strict => Err(Error::ItemNotAnObject {
                        path: display(at),
                        index,
                    }),
                    Keys::Lenient => Ok(PathElement::Index(index)),
                };
            };
            let mut key = Map::new();
            for (name, default) in list.keys() {
                match (fields.get(name).filter(|v| !v.is_null()), default) {
                    (Some(value), _) => {
                        key.insert(name.to_owned(), value.clone());
                    }
                    (None, Some(default)) => {
                        key.insert(name.to_owned(), Value::from(default));
                    }
                    (None, None) if keys == Keys::Strict => {
                        return Err(Error::MissingKey {
                            path: display(at),
                            index,
                            key: name.to_owned(),
                        });
                    }
                    (None, None) => {}
                }
            }
            if key.is_empty() {
                Ok(PathElement::Index(index))
            } else {
                Ok(PathElement::key(key))
            }
        }
    }
}

/// The step naming a stored item (never refused: see [`Keys::Lenient`]).
fn identity(list: ListType, item: &Value, index: usize) -> PathElement {
    item_element(list, item, index, Keys::Lenient, &[]).unwrap_or(PathElement::Index(index))
}

/// Merges `config` (without `null`s; its keys checked by [`paths`] with
/// [`Keys::Strict`]) into `live`, both of `shape`: objects field by field,
/// keyed lists item by item, set-like lists member by member; anything
/// else becomes the configuration's value.
pub(super) fn merge_into(shape: Shape, live: &mut Value, config: &Value) {
    merge_at(shape, live, config, 0);
}

fn merge_at(shape: Shape, live: &mut Value, config: &Value, depth: usize) {
    if depth < MAX_DEPTH {
        match (shape, config) {
            (Shape::Struct(_) | Shape::Map | Shape::Deduced, Value::Object(fields)) => {
                if let Value::Object(live_fields) = live {
                    for (name, value) in fields {
                        match live_fields.get_mut(name) {
                            Some(current) => merge_at(shape.field(name), current, value, depth + 1),
                            None => {
                                live_fields.insert(name.clone(), value.clone());
                            }
                        }
                    }
                    return;
                }
            }
            (Shape::List { list, .. }, Value::Array(items)) if list != ListType::Atomic => {
                if let Value::Array(live_items) = live {
                    let taken = std::mem::take(live_items);
                    *live_items = merge_lists(shape, list, taken, items, depth);
                    return;
                }
            }
            _ => {}
        }
    }
    *live = config.clone();
}

/// A keyed or set-like list merged as structured-merge-diff merges one:
/// each item the configuration names is merged into its live namesake,
/// in the configuration's order; live items it does not name stay where
/// they were among them (a live item that shares a name with an earlier
/// one is kept as it is).
fn merge_lists(
    shape: Shape,
    list: ListType,
    live: Vec<Value>,
    config: &[Value],
    depth: usize,
) -> Vec<Value> {
    let item_shape = shape.item();
    let config: Vec<(PathElement, &Value)> = config
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.is_null())
        .map(|(index, item)| (identity(list, item, index), item))
        .collect();
    let wanted: HashSet<&PathElement> = config.iter().map(|(id, _)| id).collect();
    // Where each name the configuration uses is in the live list (its
    // first item of that name); `None` for the other live items.
    let mut first: HashMap<PathElement, usize> = HashMap::new();
    let mut live_ids: Vec<Option<PathElement>> = Vec::with_capacity(live.len());
    for (index, item) in live.iter().enumerate() {
        let id = identity(list, item, index);
        if wanted.contains(&id) && !first.contains_key(&id) {
            first.insert(id.clone(), index);
            live_ids.push(Some(id));
        } else {
            live_ids.push(None);
        }
    }
    // The names both lists have, in the configuration's order.
    let shared: Vec<&PathElement> = config
        .iter()
        .map(|(id, _)| id)
        .filter(|id| first.contains_key(*id))
        .collect();
    let mut live: Vec<Option<Value>> = live.into_iter().map(Some).collect();
    let mut emitted: HashSet<&PathElement> = HashSet::new();
    let mut next_shared = 0;
    let mut out = Vec::with_capacity(live.len() + config.len());
    let (mut li, mut ci) = (0, 0);
    while li < live.len() || ci < config.len() {
        if let (Some(Some(id)), Some((wanted_id, item))) = (live_ids.get(li), config.get(ci)) {
            if id == wanted_id {
                let mut merged = live[li].take().unwrap_or(Value::Null);
                merge_at(item_shape, &mut merged, item, depth + 1);
                out.push(merged);
                emitted.insert(wanted_id);
                if shared.get(next_shared) == Some(&wanted_id) {
                    next_shared += 1;
                }
                li += 1;
                ci += 1;
                continue;
            }
            // A shared item the configuration wants later: it comes then.
            if shared.get(next_shared) != Some(&id) {
                li += 1;
                continue;
            }
        }
        if let Some(id) = live_ids.get(li) {
            match id {
                None => {
                    out.extend(live[li].take());
                    li += 1;
                    continue;
                }
                Some(id) if emitted.contains(id) => {
                    li += 1;
                    continue;
                }
                Some(_) => {}
            }
        }
        match config.get(ci) {
            Some((id, item)) => {
                let mut merged = match first.get(id) {
                    Some(&at) => live[at].take().unwrap_or(Value::Null),
                    None => Value::Null,
                };
                merge_at(item_shape, &mut merged, item, depth + 1);
                out.push(merged);
                emitted.insert(id);
                if shared.get(next_shared) == Some(&id) {
                    next_shared += 1;
                }
                ci += 1;
            }
            // Cannot happen (a live item the configuration names is
            // emitted with it); keeps the loop finite all the same.
            None => {
                out.extend(live[li].take());
                li += 1;
            }
        }
    }
    out
}

/// Removes what `path` names from `object` (of shape `root`), if it is
/// there. Objects and lists the removal leaves empty go too, except the
/// object's top-level fields; the key fields of a keyed item stay (the
/// item is named by them).
pub(super) fn remove(root: Shape, object: &mut Value, path: &[PathElement]) {
    let Some((PathElement::Field(name), rest)) = path.split_first() else {
        return;
    };
    let Value::Object(map) = object else {
        return;
    };
    if rest.is_empty() {
        map.remove(name);
    } else if let Some(child) = map.get_mut(name) {
        remove_below(root.field(name), child, rest);
    }
}

/// Removes `path` from `value` (of `shape`); whether that left `value`
/// empty.
fn remove_below(shape: Shape, value: &mut Value, path: &[PathElement]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, value) {
        (PathElement::Field(name), Value::Object(map)) => {
            let removed = if rest.is_empty() {
                map.remove(name).is_some()
            } else {
                let emptied = match map.get_mut(name) {
                    Some(child) => remove_below(shape.field(name), child, rest),
                    None => false,
                };
                if emptied {
                    map.remove(name);
                }
                emptied
            };
            removed && map.is_empty()
        }
        (element, Value::Array(items)) => {
            let list = shape.list_type();
            if list == ListType::Atomic {
                return false;
            }
            if let [PathElement::Field(name)] = rest {
                if list.keys().iter().any(|(key, _)| *key == name.as_str()) {
                    return false;
                }
            }
            let found = items
                .iter()
                .enumerate()
                .position(|(index, item)| identity(list, item, index) == *element);
            let Some(at) = found else {
                return false;
            };
            let removed = rest.is_empty() || remove_below(shape.item(), &mut items[at], rest);
            if removed {
                items.remove(at);
            }
            removed && items.is_empty()
        }
        _ => false,
    }
}

/// What a write changed: paths it added, leaves whose value it changed,
/// paths it removed.
#[derive(Debug, Default)]
pub(super) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// What the write set: added or modified.
    pub fn set(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

/// Compares the paths of an object before and after a write.
pub(super) fn compare(before: &Paths<'_>, after: &Paths<'_>) -> Comparison {
    let mut comparison = Comparison::default();
    for (path, value) in after {
        match before.get(path) {
            None => comparison.added.insert(path.clone()),
            Some(old) if old != value => comparison.modified.insert(path.clone()),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            comparison.removed.insert(path.clone());
        }
    }
    comparison
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_manager::schema;
    use serde_json::json;

    fn deployment() -> Shape {
        schema::root("apps", "v1", "Deployment")
    }

    fn encoded(paths: &Paths<'_>) -> Vec<String> {
        paths.keys().map(|path| display(path.as_slice())).collect()
    }

    #[test]
    fn paths_are_leaves_and_keyed_items_without_server_fields() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": "7", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "args": ["a", "b"], "ports": [{"containerPort": 80}]}
            ]}}},
            "status": {"replicas": 2}
        });
        let found = paths(deployment(), &object, Scope::Object, Keys::Strict).unwrap();
        let web = r#".spec.template.spec.containers[name="web"]"#;
        assert_eq!(
            encoded(&found),
            vec![
                ".metadata.labels.app".to_owned(),
                ".spec.replicas".to_owned(),
                web.to_owned(),
                format!("{web}.args"),
                format!("{web}.name"),
                format!(r#"{web}.ports[containerPort=80,protocol="TCP"]"#),
                format!(r#"{web}.ports[containerPort=80,protocol="TCP"].containerPort"#),
            ]
        );
        let status = paths(deployment(), &object, Scope::Status, Keys::Strict).unwrap();
        assert_eq!(encoded(&status), vec![".status.replicas".to_owned()]);
    }

    #[test]
    fn configurations_must_key_their_items_once() {
        let config =
            |containers: Value| json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let missing = config(json!([{"image": "nginx"}]));
        let e = paths(deployment(), &missing, Scope::Object, Keys::Strict).unwrap_err();
        assert!(
            matches!(&e, Error::MissingKey { key, index: 0, .. } if key == "name"),
            "{e}"
        );
        let twice = config(json!([{"name": "a"}, {"name": "a"}]));
        let e = paths(deployment(), &twice, Scope::Object, Keys::Strict).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#".spec.template.spec.containers: duplicate entries for key [name="a"]"#
        );
        // Stored objects are read whatever they hold.
        assert!(paths(deployment(), &twice, Scope::Object, Keys::Lenient).is_ok());
        assert!(paths(deployment(), &missing, Scope::Object, Keys::Lenient).is_ok());
    }

    #[test]
    fn keyed_lists_merge_item_by_item_in_the_configurations_order() {
        let mut live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"},
            {"name": "only-live", "image": "x"},
            {"name": "b", "image": "b:1", "args": ["1"]}
        ]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"},
            {"name": "new", "image": "n"},
            {"name": "a", "image": "a:2"}
        ]}}}});
        merge_into(deployment(), &mut live, &config);
        let containers = &live["spec"]["template"]["spec"]["containers"];
        let names: Vec<&str> = containers
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["only-live", "b", "new", "a"]);
        let b = json!({"name": "b", "image": "b:2", "args": ["1"]});
        assert_eq!(containers[1], b);
        assert_eq!(containers[3]["image"], "a:2");
    }

    #[test]
    fn atomic_lists_are_replaced_and_sets_united() {
        let mut live = json!({
            "metadata": {"finalizers": ["x", "y"]},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}}
        });
        let config = json!({
            "metadata": {"finalizers": ["z", "x"]},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}
        });
        merge_into(deployment(), &mut live, &config);
        assert_eq!(live["metadata"]["finalizers"], json!(["z", "x", "y"]));
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["3"])
        );
    }

    #[test]
    fn removal_drops_emptied_parents_but_not_keys_or_top_level_fields() {
        let mut object = json!({
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}
            ]}}}
        });
        let field = |name: &str| PathElement::Field(name.to_owned());
        let tier = [field("metadata"), field("labels"), field("tier")];
        remove(deployment(), &mut object, &tier);
        assert_eq!(object["metadata"], json!({"name": "web"}));
        let mut key = Map::new();
        key.insert("name".into(), json!("a"));
        let a = vec![
            field("spec"),
            field("template"),
            field("spec"),
            field("containers"),
            PathElement::key(key),
        ];
        let mut env = a.clone();
        env.push(field("env"));
        let mut x = Map::new();
        x.insert("name".into(), json!("X"));
        env.push(PathElement::key(x));
        remove(deployment(), &mut object, &env);
        let mut name = a.clone();
        name.push(field("name"));
        remove(deployment(), &mut object, &name);
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}])
        );
        remove(deployment(), &mut object, &a);
        assert_eq!(object["spec"], json!({}), "emptied parents go: {object}");
        remove(deployment(), &mut object, &[field("spec")]);
        assert!(object.get("spec").is_none());
    }

    #[test]
    fn comparisons_tell_added_modified_and_removed_paths() {
        let before = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let after = json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 2}});
        let before = paths(deployment(), &before, Scope::Object, Keys::Lenient).unwrap();
        let after = paths(deployment(), &after, Scope::Object, Keys::Lenient).unwrap();
        let comparison = compare(&before, &after);
        let shown = |set: &FieldSet| {
            set.iter()
                .map(|p| display(p.as_slice()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(&comparison.added), [".metadata.labels.c"]);
        assert_eq!(shown(&comparison.modified), [".spec.replicas"]);
        assert_eq!(shown(&comparison.removed), [".metadata.labels.b"]);
        assert!(compare(&before, &before).is_empty());
    }
}
