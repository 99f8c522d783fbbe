//! The schemas of the OpenAPI documents, made from the generated API schema
//! (`objects::api_schema`) as Kubernetes' OpenAPI generator writes them:
//! each protobuf message becomes a definition named the Kubernetes way
//! (`k8s.io.api.core.v1.Pod` → `io.k8s.api.core.v1.Pod`), an `object` with
//! a property per field: `string`, `integer` (`int32`/`int64`), `boolean`,
//! `string`/`byte` for bytes, `array` with `items` for repeated fields,
//! `object` with `additionalProperties` for maps, and a reference for a
//! message. Members Go inlines (`json:",inline"`: Volume's VolumeSource)
//! are properties of the enclosing object. Types whose JSON is not an
//! object are definitions of their own, as Kubernetes publishes them:
//! IntOrString (`format: int-or-string`), Quantity, Time and MicroTime
//! (`string`, `date-time`), RawExtension and FieldsV1 (`object`).
//!
//! A top-level kind (and its list) carries `x-kubernetes-group-version-kind`,
//! which is how kubectl finds a kind's schema; messages with Go's embedded
//! TypeMeta get `apiVersion` and `kind`; fields strategic merge patch treats
//! specially carry `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key`, which `kubectl apply` computes its
//! patches with. The schema has no descriptions, so none are written.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use skiff_objects::api_schema::{
    FieldKind, FieldSchema, MessageSchema, PatchMeta, KINDS, MESSAGES, PATCH_META, WITH_TYPE_META,
};

/// The extension kubectl finds a kind's schema (or a path's kind) by.
pub(super) const GROUP_VERSION_KIND: &str = "x-kubernetes-group-version-kind";

/// Which OpenAPI version a schema is written for: where references point
/// and how a reference with siblings is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Swagger 2.0 (`/openapi/v2`): `{"$ref": "#/definitions/..."}`, the
    /// field's extensions beside it.
    V2,
    /// OpenAPI 3.0 (`/openapi/v3/...`): `{"allOf": [{"$ref":
    /// "#/components/schemas/..."}]}`, as Kubernetes writes a field that
    /// refers to a definition.
    V3,
}

impl Dialect {
    /// The `$ref` of definition `name`.
    pub(super) fn reference(self, name: &str) -> String {
        match self {
            Dialect::V2 => format!("#/definitions/{name}"),
            Dialect::V3 => format!("#/components/schemas/{name}"),
        }
    }

    /// A field's schema that refers to definition `name`, to which the
    /// field's extensions may be added.
    fn refers_to(self, name: &str) -> Map<String, Value> {
        let mut schema = Map::new();
        match self {
            Dialect::V2 => {
                schema.insert("$ref".into(), Value::String(self.reference(name)));
            }
            Dialect::V3 => {
                schema.insert("allOf".into(), json!([{"$ref": self.reference(name)}]));
            }
        }
        schema
    }
}

/// The apimachinery types whose JSON is not an object, each a definition
/// of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Special {
    IntOrString,
    Quantity,
    Time,
    MicroTime,
    Duration,
    RawExtension,
    FieldsV1,
}

impl Special {
    fn name(self) -> &'static str {
        match self {
            Special::IntOrString => "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            Special::Quantity => "io.k8s.apimachinery.pkg.api.resource.Quantity",
            Special::Time => "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
            Special::MicroTime => "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
            Special::Duration => "io.k8s.apimachinery.pkg.apis.meta.v1.Duration",
            Special::RawExtension => "io.k8s.apimachinery.pkg.runtime.RawExtension",
            Special::FieldsV1 => "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        }
    }

    /// The definition, as Kubernetes publishes it in each version (v2
    /// has no `oneOf`: int-or-string and quantities are strings there,
    /// which kubectl's validation lets numbers through for).
    fn schema(self, dialect: Dialect) -> Value {
        match (self, dialect) {
            (Special::IntOrString, Dialect::V2) => {
                json!({"type": "string", "format": "int-or-string"})
            }
            (Special::IntOrString, Dialect::V3) => json!({
                "oneOf": [{"type": "integer"}, {"type": "string"}],
                "format": "int-or-string",
                "x-kubernetes-int-or-string": true,
            }),
            (Special::Quantity, Dialect::V2) => json!({"type": "string"}),
            (Special::Quantity, Dialect::V3) => {
                json!({"oneOf": [{"type": "string"}, {"type": "number"}]})
            }
            (Special::Time | Special::MicroTime, _) => {
                json!({"type": "string", "format": "date-time"})
            }
            (Special::Duration, _) => json!({"type": "string"}),
            (Special::RawExtension | Special::FieldsV1, _) => json!({"type": "object"}),
        }
    }
}

/// Kubernetes' OpenAPI name of a message: `k8s.io.api.core.v1.Pod` →
/// `io.k8s.api.core.v1.Pod`.
pub(super) fn definition_name(message: &MessageSchema) -> String {
    match message.name.strip_prefix("k8s.io.") {
        Some(rest) => format!("io.k8s.{rest}"),
        None => message.name.to_owned(),
    }
}

/// The message of top-level kind `kind` in `group`/`version`, as an index
/// into `MESSAGES`.
pub(super) fn kind_message(group: &str, version: &str, kind: &str) -> Option<usize> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| usize::from(k.message))
}

/// The message of the list of the top-level kind whose message is
/// `message` (`...DeploymentList` for `...Deployment`).
pub(super) fn list_message(message: usize) -> Option<usize> {
    let name = format!("{}List", MESSAGES.get(message)?.name);
    MESSAGES.iter().position(|m| m.name == name)
}

/// The definitions of the messages `roots` and of everything they refer
/// to, by name.
pub(super) fn definitions(
    roots: impl IntoIterator<Item = usize>,
    dialect: Dialect,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut done = vec![false; MESSAGES.len()];
    let mut specials = BTreeSet::new();
    let mut queue: Vec<usize> = roots.into_iter().collect();
    while let Some(index) = queue.pop() {
        match done.get_mut(index) {
            Some(seen) if !*seen => *seen = true,
            _ => continue,
        }
        let mut refs = References::default();
        let schema = message_schema(index, dialect, &mut refs);
        out.insert(definition_name(&MESSAGES[index]), schema);
        queue.extend(refs.messages);
        specials.extend(refs.specials);
    }
    for special in specials {
        out.insert(special.name().to_owned(), special.schema(dialect));
    }
    out
}

/// What a message's schema refers to.
#[derive(Default)]
struct References {
    messages: Vec<usize>,
    specials: Vec<Special>,
}

impl References {
    fn message(&mut self, index: u16, dialect: Dialect) -> Map<String, Value> {
        let index = usize::from(index);
        self.messages.push(index);
        dialect.refers_to(&definition_name(&MESSAGES[index]))
    }

    fn special(&mut self, special: Special, dialect: Dialect) -> Map<String, Value> {
        self.specials.push(special);
        dialect.refers_to(special.name())
    }
}

fn message_schema(index: usize, dialect: Dialect, refs: &mut References) -> Value {
    let mut properties = Map::new();
    let type_meta = u16::try_from(index).is_ok_and(|i| WITH_TYPE_META.binary_search(&i).is_ok());
    if type_meta {
        properties.insert("apiVersion".into(), json!({"type": "string"}));
        properties.insert("kind".into(), json!({"type": "string"}));
    }
    add_fields(index, dialect, &mut properties, refs);
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    if !properties.is_empty() {
        schema.insert("properties".into(), Value::Object(properties));
    }
    let kinds = group_version_kinds(index);
    if !kinds.is_empty() {
        schema.insert(GROUP_VERSION_KIND.into(), Value::Array(kinds));
    }
    Value::Object(schema)
}

/// Adds the properties of message `index`'s fields, its inlined members'
/// fields among them.
fn add_fields(
    index: usize,
    dialect: Dialect,
    properties: &mut Map<String, Value>,
    refs: &mut References,
) {
    for field in MESSAGES[index].fields {
        match field.kind {
            FieldKind::Inline(inner) => add_fields(usize::from(inner), dialect, properties, refs),
            _ => {
                let schema = field_schema(index, field, dialect, refs);
                properties.insert(field.json.to_owned(), schema);
            }
        }
    }
}

fn field_schema(
    message: usize,
    field: &FieldSchema,
    dialect: Dialect,
    refs: &mut References,
) -> Value {
    let value = value_schema(field, dialect, refs);
    let mut schema = if field.repeated {
        let mut array = Map::new();
        array.insert("type".into(), json!("array"));
        array.insert("items".into(), Value::Object(value));
        array
    } else {
        value
    };
    if let Some(patch) = patch_meta(message, field.tag) {
        if !patch.strategy.is_empty() {
            schema.insert("x-kubernetes-patch-strategy".into(), json!(patch.strategy));
        }
        if !patch.merge_key.is_empty() {
            schema.insert(
                "x-kubernetes-patch-merge-key".into(),
                json!(patch.merge_key),
            );
        }
    }
    Value::Object(schema)
}

/// The schema of one value of `field` (one item, if it repeats).
fn value_schema(
    field: &FieldSchema,
    dialect: Dialect,
    refs: &mut References,
) -> Map<String, Value> {
    let primitive = |kind: &str, format: Option<&str>| {
        let mut schema = Map::new();
        schema.insert("type".into(), json!(kind));
        if let Some(format) = format {
            schema.insert("format".into(), json!(format));
        }
        schema
    };
    let map_of = |values: Map<String, Value>| {
        let mut schema = Map::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("additionalProperties".into(), Value::Object(values));
        schema
    };
    match field.kind {
        FieldKind::String => primitive("string", None),
        FieldKind::Bytes => primitive("string", Some("byte")),
        FieldKind::Bool => primitive("boolean", None),
        FieldKind::Int32 => primitive("integer", Some("int32")),
        FieldKind::Int64 => primitive("integer", Some("int64")),
        // An inlined member is a property only where a message is written
        // out field by field (`add_fields`); elsewhere it is the message.
        FieldKind::Message(index) | FieldKind::Inline(index) => refs.message(index, dialect),
        FieldKind::IntOrString => refs.special(Special::IntOrString, dialect),
        FieldKind::Quantity => refs.special(Special::Quantity, dialect),
        FieldKind::Time => refs.special(Special::Time, dialect),
        FieldKind::MicroTime => refs.special(Special::MicroTime, dialect),
        FieldKind::Duration => refs.special(Special::Duration, dialect),
        // ManagedFieldsEntry's `fieldsV1` is the only FieldsV1; every other
        // raw JSON field is a RawExtension.
        FieldKind::RawJson if field.json == "fieldsV1" => refs.special(Special::FieldsV1, dialect),
        FieldKind::RawJson => refs.special(Special::RawExtension, dialect),
        FieldKind::MapString => map_of(primitive("string", None)),
        FieldKind::MapBytes => map_of(primitive("string", Some("byte"))),
        FieldKind::MapQuantity => map_of(refs.special(Special::Quantity, dialect)),
        FieldKind::MapTime => map_of(refs.special(Special::Time, dialect)),
        // UserInfo's `extra`: a map of string lists.
        FieldKind::MapStringList => {
            let mut list = Map::new();
            list.insert("type".into(), json!("array"));
            list.insert("items".into(), Value::Object(primitive("string", None)));
            map_of(list)
        }
    }
}

/// The patch strategy and merge key of field `tag` of message `message`.
fn patch_meta(message: usize, tag: u16) -> Option<&'static PatchMeta> {
    let message = u16::try_from(message).ok()?;
    PATCH_META
        .binary_search_by_key(&(message, tag), |p| (p.message, p.tag))
        .ok()
        .and_then(|i| PATCH_META.get(i))
}

/// The `x-kubernetes-group-version-kind` entries of message `index`: the
/// top-level kinds it is, and the lists of those (`DeploymentList`).
fn group_version_kinds(index: usize) -> Vec<Value> {
    let mut kinds: Vec<Value> = KINDS
        .iter()
        .filter(|k| usize::from(k.message) == index)
        .map(|k| group_version_kind(k.group, k.version, k.kind))
        .collect();
    if let Some(item) = MESSAGES[index].name.strip_suffix("List") {
        for k in KINDS
            .iter()
            .filter(|k| MESSAGES[usize::from(k.message)].name == item)
        {
            let list = format!("{}List", k.kind);
            kinds.push(group_version_kind(k.group, k.version, &list));
        }
    }
    kinds
}

/// One group-version-kind as the extension writes it.
pub(super) fn group_version_kind(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str) -> usize {
        MESSAGES.iter().position(|m| m.name == name).unwrap()
    }

    #[test]
    fn the_generated_tables_are_sorted_for_binary_search() {
        assert!(PATCH_META
            .windows(2)
            .all(|w| (w[0].message, w[0].tag) < (w[1].message, w[1].tag)));
        assert!(WITH_TYPE_META.windows(2).all(|w| w[0] < w[1]));
        let pod_spec = message("k8s.io.api.core.v1.PodSpec");
        let containers = patch_meta(pod_spec, 2).unwrap();
        assert_eq!(
            (containers.strategy, containers.merge_key),
            ("merge", "name")
        );
        // PodSpec's field 3 (restartPolicy) has none.
        assert!(patch_meta(pod_spec, 3).is_none());
    }

    #[test]
    fn kinds_and_their_lists_carry_their_group_version_kind() {
        let deployment = message("k8s.io.api.apps.v1.Deployment");
        assert_eq!(kind_message("apps", "v1", "Deployment"), Some(deployment));
        let list = list_message(deployment).unwrap();
        assert_eq!(MESSAGES[list].name, "k8s.io.api.apps.v1.DeploymentList");
        assert_eq!(
            group_version_kinds(list),
            [group_version_kind("apps", "v1", "DeploymentList")]
        );
        assert!(group_version_kinds(message("k8s.io.api.apps.v1.DeploymentSpec")).is_empty());
        assert!(group_version_kinds(message("k8s.io.api.core.v1.List")).is_empty());
        assert_eq!(
            definition_name(&MESSAGES[deployment]),
            "io.k8s.api.apps.v1.Deployment"
        );
    }

    #[test]
    fn definitions_hold_everything_their_roots_refer_to() {
        let pod = message("k8s.io.api.core.v1.Pod");
        let definitions = definitions([pod], Dialect::V2);
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.core.v1.Container",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            "io.k8s.apimachinery.pkg.api.resource.Quantity",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
        ] {
            assert!(definitions.contains_key(name), "{name}");
        }
        assert!(!definitions.contains_key("io.k8s.api.apps.v1.Deployment"));
        let pod = &definitions["io.k8s.api.core.v1.Pod"]["properties"];
        assert_eq!(
            pod["metadata"],
            json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"})
        );
        assert_eq!(
            definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"],
            json!({"type": "string", "format": "int-or-string"})
        );
    }
}
