//! Structural schemas: a CustomResourceDefinition version's
//! `openAPIV3Schema` read once ([`Schema::parse`], which also reports what
//! makes a schema non-structural or unusable, by the path Kubernetes names
//! it with), then applied to every object of that version as
//! kube-apiserver applies it, in its order:
//!
//! 1. [`Schema::prune`]: fields the schema does not specify are dropped
//!    (and reported, for `fieldValidation`), unless
//!    `x-kubernetes-preserve-unknown-fields` or `additionalProperties`
//!    keeps them; a `null` where the schema is not `nullable` is dropped;
//! 2. [`Schema::apply_defaults`]: `default` values for missing fields,
//!    nested defaults included;
//! 3. [`Schema::validate`]: types (`x-kubernetes-int-or-string`,
//!    `nullable`), `required`, `enum`, `minimum`/`maximum` (exclusive too),
//!    `multipleOf`, `minLength`/`maxLength`, `pattern`, `minItems`/
//!    `maxItems`, `minProperties`/`maxProperties`, list types `set` and
//!    `map` (duplicates), `allOf`/`anyOf`/`oneOf`/`not`, with
//!    kube-apiserver's messages (`spec.replicas: Invalid value: "string":
//!    spec.replicas in body must be of type integer: "string"`).
//!
//! The root's `apiVersion`, `kind` and `metadata` are the envelope's: never
//! pruned, defaulted or checked here (metadata is typed). Not read:
//! `format` (kept, not checked), `x-kubernetes-validations` (CEL rules are
//! not evaluated), `x-kubernetes-map-type`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// How deep a schema may nest.
const MAX_DEPTH: usize = 128;
/// The largest compiled `pattern`, in bytes of automaton.
const MAX_PATTERN_SIZE: usize = 1 << 20;

/// One problem: the field path and kube-apiserver's wording of it.
pub type Problem = (String, String);

/// The JSON types a schema names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            Type::Object => value.is_object(),
            Type::Array => value.is_array(),
            Type::String => value.is_string(),
            Type::Integer => is_integer(value),
            Type::Number => value.is_number(),
            Type::Boolean => value.is_boolean(),
        }
    }
}

/// What other members an object may have.
#[derive(Debug, Clone, Default)]
pub enum Additional {
    /// Only `properties` (unknown ones are pruned).
    #[default]
    None,
    /// Anything (`additionalProperties: true`).
    Any,
    /// Each member's value by this schema (a map).
    Schema(Box<Schema>),
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ListType {
    #[default]
    Atomic,
    Set,
    /// Keyed by `x-kubernetes-list-map-keys`.
    Map(Vec<String>),
}

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub types: Option<Type>,
    pub nullable: bool,
    pub int_or_string: bool,
    pub preserve_unknown: bool,
    pub embedded_resource: bool,
    pub properties: BTreeMap<String, Schema>,
    pub additional: Additional,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enumeration: Vec<Value>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<(String, regex::Regex)>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub list_type: ListType,
    pub default: Option<Value>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
}

/// Where a node sits, for the structural rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Field,
    Item,
    /// Inside `allOf`, `anyOf`, `oneOf`, `not`: value validations only.
    Junctor,
}

/// Keywords a CRD schema may not use, and why.
const FORBIDDEN: [(&str, &str); 6] = [
    ("$ref", "$ref is not supported"),
    ("definitions", "definitions are not supported"),
    ("dependencies", "dependencies are not supported"),
    ("additionalItems", "additionalItems cannot be set to false"),
    ("patternProperties", "patternProperties is not supported"),
    ("id", "id is not supported"),
];

impl Schema {
    /// Reads `value`, an `openAPIV3Schema` found at `path` (for problems:
    /// `spec.versions[0].schema.openAPIV3Schema`), adding to `problems`
    /// what Kubernetes refuses in it. A schema with problems is still read
    /// as far as it goes.
    pub fn parse(value: &Value, path: &str, problems: &mut Vec<Problem>) -> Schema {
        parse_node(value, path, Level::Root, 0, problems)
    }

    /// Removes from `value` what this schema does not specify (see the
    /// module doc); `path` is where `value` sits ("" for the object).
    /// Adds the paths of the unknown fields removed to `pruned`.
    pub fn prune(&self, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
        self.prune_at(value, path, path.is_empty(), pruned);
    }

    fn prune_at(&self, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                let keep_all = self.preserve_unknown || matches!(self.additional, Additional::Any);
                let mut gone = Vec::new();
                for (key, member) in map.iter_mut() {
                    if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if self.embedded_resource
                        && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                    {
                        continue;
                    }
                    let at = child(path, key);
                    match self.properties.get(key) {
                        Some(schema) => {
                            if member.is_null() && !schema.nullable {
                                gone.push((key.clone(), None));
                            } else {
                                schema.prune_at(member, &at, false, pruned);
                            }
                        }
                        None => match &self.additional {
                            Additional::Schema(schema) => {
                                if member.is_null() && !schema.nullable {
                                    gone.push((key.clone(), None));
                                } else {
                                    schema.prune_at(member, &at, false, pruned);
                                }
                            }
                            _ if keep_all => {}
                            _ => gone.push((key.clone(), Some(at))),
                        },
                    }
                }
                for (key, reported) in gone {
                    map.remove(&key);
                    pruned.extend(reported);
                }
            }
            Value::Array(items) => {
                if let Some(schema) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        schema.prune_at(item, &format!("{path}[{i}]"), false, pruned);
                    }
                }
            }
            _ => {}
        }
    }

    /// Sets the `default` of every missing field under `value`, nested
    /// defaults included (a defaulted object gets its own members'
    /// defaults).
    pub fn apply_defaults(&self, value: &mut Value) {
        self.default_at(value, true);
    }

    fn default_at(&self, value: &mut Value, root: bool) {
        match value {
            Value::Object(map) => {
                for (key, schema) in &self.properties {
                    if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(default) = &schema.default {
                        if map.get(key).is_none_or(|v| v.is_null() && !schema.nullable) {
                            map.insert(key.clone(), default.clone());
                        }
                    }
                }
                for (key, member) in map.iter_mut() {
                    if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    match (self.properties.get(key), &self.additional) {
                        (Some(schema), _) => schema.default_at(member, false),
                        (None, Additional::Schema(schema)) => schema.default_at(member, false),
                        _ => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(schema) = &self.items {
                    for item in items {
                        schema.default_at(item, false);
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks `value` (at `path`, "" for the object), adding every problem
    /// to `problems`.
    pub fn validate(&self, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        self.validate_at(value, path, path.is_empty(), problems);
    }

    fn validate_at(&self, value: &Value, path: &str, root: bool, problems: &mut Vec<Problem>) {
        if value.is_null() {
            if !self.nullable && (self.types.is_some() || self.int_or_string) {
                let expected = self.type_names();
                problems.push(type_error(path, &expected, value));
            }
            return;
        }
        if self.int_or_string {
            if !is_integer(value) && !value.is_string() {
                problems.push(type_error(path, "integer,string", value));
                return;
            }
        } else if let Some(types) = self.types {
            if !types.admits(value) {
                problems.push(type_error(path, types.name(), value));
                return;
            }
        }
        if !self.enumeration.is_empty() && !self.enumeration.contains(value) {
            let supported: Vec<String> = self.enumeration.iter().map(Value::to_string).collect();
            problems.push((
                path.to_owned(),
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                ),
            ));
        }
        match value {
            Value::Number(n) => self.check_number(n.as_f64().unwrap_or(0.0), value, path, problems),
            Value::String(s) => self.check_string(s, path, problems),
            Value::Array(items) => self.check_array(items, path, problems),
            Value::Object(map) => self.check_object(map, path, root, problems),
            _ => {}
        }
        self.check_junctors(value, path, root, problems);
    }

    fn type_names(&self) -> String {
        match (self.int_or_string, self.types) {
            (true, _) => "integer,string".to_owned(),
            (false, Some(t)) => t.name().to_owned(),
            (false, None) => "any".to_owned(),
        }
    }

    fn check_number(&self, n: f64, value: &Value, path: &str, problems: &mut Vec<Problem>) {
        let mut invalid = |detail: String| {
            problems.push((
                path.to_owned(),
                format!("Invalid value: {value}: {} in body {detail}", body(path)),
            ));
        };
        if let Some(min) = self.minimum {
            if self.exclusive_minimum && n <= min {
                invalid(format!("should be greater than {min}"));
            } else if n < min {
                invalid(format!("should be greater than or equal to {min}"));
            }
        }
        if let Some(max) = self.maximum {
            if self.exclusive_maximum && n >= max {
                invalid(format!("should be less than {max}"));
            } else if n > max {
                invalid(format!("should be less than or equal to {max}"));
            }
        }
        if let Some(factor) = self.multiple_of.filter(|f| *f > 0.0) {
            let ratio = n / factor;
            if (ratio - ratio.round()).abs() > 1e-9 {
                invalid(format!("should be a multiple of {factor}"));
            }
        }
    }

    fn check_string(&self, s: &str, path: &str, problems: &mut Vec<Problem>) {
        let length = s.chars().count() as u64;
        if let Some(max) = self.max_length {
            if length > max {
                problems.push((
                    path.to_owned(),
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
        }
        if let Some(min) = self.min_length {
            if length < min {
                problems.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: {}: {} in body should be at least {min} chars long",
                        Value::from(s),
                        body(path)
                    ),
                ));
            }
        }
        if let Some((text, pattern)) = &self.pattern {
            if !pattern.is_match(s) {
                problems.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: {}: {} in body should match '{text}'",
                        Value::from(s),
                        body(path)
                    ),
                ));
            }
        }
    }

    fn check_array(&self, items: &[Value], path: &str, problems: &mut Vec<Problem>) {
        let count = items.len() as u64;
        if let Some(max) = self.max_items {
            if count > max {
                problems.push((
                    path.to_owned(),
                    format!("Too many: {count}: must have at most {max} items"),
                ));
            }
        }
        if let Some(min) = self.min_items {
            if count < min {
                problems.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: {count}: {} in body should have at least {min} items",
                        body(path)
                    ),
                ));
            }
        }
        match &self.list_type {
            ListType::Atomic => {}
            ListType::Set => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        problems.push((format!("{path}[{i}]"), format!("Duplicate value: {item}")));
                    }
                }
            }
            ListType::Map(keys) => {
                let key_of = |item: &Value| -> Value {
                    let mut key = Map::new();
                    for k in keys {
                        if let Some(v) = item.get(k.as_str()) {
                            key.insert(k.clone(), v.clone());
                        }
                    }
                    Value::Object(key)
                };
                let seen: Vec<Value> = items.iter().map(key_of).collect();
                for (i, key) in seen.iter().enumerate() {
                    if seen[..i].contains(key) {
                        problems.push((format!("{path}[{i}]"), format!("Duplicate value: {key}")));
                    }
                }
            }
        }
        if let Some(schema) = &self.items {
            for (i, item) in items.iter().enumerate() {
                schema.validate_at(item, &format!("{path}[{i}]"), false, problems);
            }
        }
    }

    fn check_object(
        &self,
        map: &Map<String, Value>,
        path: &str,
        root: bool,
        problems: &mut Vec<Problem>,
    ) {
        let envelope = |key: &str| {
            (root || self.embedded_resource) && matches!(key, "apiVersion" | "kind" | "metadata")
        };
        for name in &self.required {
            if envelope(name.as_str()) {
                continue;
            }
            if map.get(name).is_none_or(Value::is_null) {
                problems.push((child(path, name), "Required value".to_owned()));
            }
        }
        let count = map
            .keys()
            .filter(|k| !(root && envelope(k.as_str())))
            .count() as u64;
        if let Some(max) = self.max_properties {
            if count > max {
                problems.push((
                    path.to_owned(),
                    format!("Too many: {count}: must have at most {max} items"),
                ));
            }
        }
        if let Some(min) = self.min_properties {
            if count < min {
                problems.push((
                    path.to_owned(),
                    format!(
                        "Invalid value: {count}: {} in body should have at least {min} properties",
                        body(path)
                    ),
                ));
            }
        }
        for (key, member) in map {
            if envelope(key.as_str()) {
                continue;
            }
            let at = child(path, key);
            match (self.properties.get(key), &self.additional) {
                (Some(schema), _) => schema.validate_at(member, &at, false, problems),
                (None, Additional::Schema(schema)) => {
                    schema.validate_at(member, &at, false, problems)
                }
                _ => {}
            }
        }
    }

    fn check_junctors(&self, value: &Value, path: &str, root: bool, problems: &mut Vec<Problem>) {
        for schema in &self.all_of {
            schema.validate_at(value, path, root, problems);
        }
        let passes = |schema: &Schema| {
            let mut found = Vec::new();
            schema.validate_at(value, path, root, &mut found);
            found.is_empty()
        };
        let invalid = |detail: &str| {
            (
                path.to_owned(),
                format!("Invalid value: {value}: {} in body {detail}", body(path)),
            )
        };
        if !self.any_of.is_empty() && !self.any_of.iter().any(passes) {
            problems.push(invalid("must validate at least one schema (anyOf)"));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|s| passes(s)).count() != 1 {
            problems.push(invalid("must validate one and only one schema (oneOf)"));
        }
        if let Some(not) = &self.not {
            if passes(not) {
                problems.push(invalid("must not validate the schema (not)"));
            }
        }
    }
}

/// `path` as the body part of kube-openapi's messages (`spec.replicas`;
/// the object itself is `body`).
fn body(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

/// The member `key` of the object at `path`.
fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A whole number: an integer, or a float without a fraction (Go decodes
/// every JSON number as a float64 first).
fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// The type of a JSON value as kube-openapi names it in messages.
fn actual_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// kube-apiserver's type error: `Invalid value: "string": spec.replicas in
/// body must be of type integer: "string"`.
fn type_error(path: &str, expected: &str, value: &Value) -> Problem {
    let actual = actual_type(value);
    (
        path.to_owned(),
        format!(
            "Invalid value: \"{actual}\": {} in body must be of type {expected}: \"{actual}\"",
            body(path)
        ),
    )
}

fn parse_node(
    value: &Value,
    path: &str,
    level: Level,
    depth: usize,
    problems: &mut Vec<Problem>,
) -> Schema {
    let mut schema = Schema::default();
    let Some(map) = value.as_object() else {
        problems.push((
            path.to_owned(),
            format!(
                "Invalid value: \"{}\": must be an object",
                actual_type(value)
            ),
        ));
        return schema;
    };
    if depth > MAX_DEPTH {
        problems.push((
            path.to_owned(),
            format!("Forbidden: nested more than {MAX_DEPTH} levels deep"),
        ));
        return schema;
    }
    let at = |key: &str| format!("{path}.{key}");
    for (keyword, reason) in FORBIDDEN {
        if map.contains_key(keyword) {
            problems.push((at(keyword), format!("Forbidden: {reason}")));
        }
    }
    if map.get("uniqueItems") == Some(&Value::Bool(true)) {
        problems.push((
            at("uniqueItems"),
            "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic".to_owned(),
        ));
    }
    let flag = |key: &str| map.get(key).and_then(Value::as_bool).unwrap_or(false);
    schema.nullable = flag("nullable");
    schema.int_or_string = flag("x-kubernetes-int-or-string");
    schema.preserve_unknown = flag("x-kubernetes-preserve-unknown-fields");
    schema.embedded_resource = flag("x-kubernetes-embedded-resource");
    match map.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if name.is_empty() => {}
        Some(Value::String(name)) => match Type::parse(name) {
            Some(t) => schema.types = Some(t),
            None => problems.push((
                at("type"),
                format!(
                    "Unsupported value: {}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
                    Value::from(name.as_str())
                ),
            )),
        },
        Some(other) => problems.push((
            at("type"),
            format!("Invalid value: {other}: must be a string"),
        )),
    }
    let structural = level != Level::Junctor;
    if structural && schema.types.is_none() && !schema.int_or_string && !schema.preserve_unknown {
        let reason = match level {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            _ => "must not be empty for specified object fields",
        };
        problems.push((at("type"), format!("Required value: {reason}")));
    }
    if level == Level::Root {
        if let Some(t) = schema.types.filter(|t| *t != Type::Object) {
            problems.push((
                at("type"),
                format!(
                    "Invalid value: \"{}\": must be object at the root",
                    t.name()
                ),
            ));
        }
        if schema.nullable {
            problems.push((
                at("nullable"),
                "Forbidden: nullable cannot be true at the root".to_owned(),
            ));
        }
    }
    if schema.int_or_string && schema.types.is_some() {
        problems.push((
            at("type"),
            "Invalid value: must be empty if x-kubernetes-int-or-string is true".to_owned(),
        ));
    }
    if schema.embedded_resource && schema.types.is_some_and(|t| t != Type::Object) {
        problems.push((
            at("type"),
            "Invalid value: must be object if x-kubernetes-embedded-resource is true".to_owned(),
        ));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, property) in properties {
            let child = format!("{path}.properties[{name}]");
            let node = parse_node(
                property,
                &child,
                structural_or(level, Level::Field),
                depth + 1,
                problems,
            );
            schema.properties.insert(name.clone(), node);
        }
    } else if let Some(other) = map.get("properties").filter(|p| !p.is_null()) {
        problems.push((
            at("properties"),
            format!("Invalid value: {other}: must be an object"),
        ));
    }
    match map.get("additionalProperties") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(true)) => schema.additional = Additional::Any,
        Some(Value::Bool(false)) => problems.push((
            at("additionalProperties"),
            "Forbidden: additionalProperties cannot be set to false".to_owned(),
        )),
        Some(additional) => {
            let node = parse_node(
                additional,
                &at("additionalProperties"),
                structural_or(level, Level::Field),
                depth + 1,
                problems,
            );
            schema.additional = Additional::Schema(Box::new(node));
        }
    }
    if !schema.properties.is_empty() && !matches!(schema.additional, Additional::None) {
        problems.push((
            at("additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".to_owned(),
        ));
    }
    match map.get("items") {
        None | Some(Value::Null) => {
            if structural && schema.types == Some(Type::Array) {
                problems.push((at("items"), "Required value: must be specified".to_owned()));
            }
        }
        Some(Value::Array(_)) => problems.push((
            at("items"),
            "Forbidden: items must be a schema object and not an array".to_owned(),
        )),
        Some(items) => {
            let node = parse_node(
                items,
                &at("items"),
                structural_or(level, Level::Item),
                depth + 1,
                problems,
            );
            schema.items = Some(Box::new(node));
        }
    }
    if let Some(required) = map.get("required") {
        match required.as_array() {
            Some(names) => {
                for name in names {
                    match name.as_str() {
                        Some(name) => schema.required.push(name.to_owned()),
                        None => problems.push((
                            at("required"),
                            format!("Invalid value: {name}: must be a string"),
                        )),
                    }
                }
            }
            None => problems.push((
                at("required"),
                format!("Invalid value: {required}: must be a list of field names"),
            )),
        }
    }
    if let Some(values) = map.get("enum") {
        match values.as_array() {
            Some(values) => schema.enumeration = values.clone(),
            None => problems.push((
                at("enum"),
                format!("Invalid value: {values}: must be a list"),
            )),
        }
    }
    schema.minimum = number(map, "minimum", path, problems);
    schema.maximum = number(map, "maximum", path, problems);
    schema.multiple_of = number(map, "multipleOf", path, problems);
    schema.exclusive_minimum = flag("exclusiveMinimum");
    schema.exclusive_maximum = flag("exclusiveMaximum");
    schema.min_length = count(map, "minLength", path, problems);
    schema.max_length = count(map, "maxLength", path, problems);
    schema.min_items = count(map, "minItems", path, problems);
    schema.max_items = count(map, "maxItems", path, problems);
    schema.min_properties = count(map, "minProperties", path, problems);
    schema.max_properties = count(map, "maxProperties", path, problems);
    if let Some(pattern) = map.get("pattern") {
        match pattern.as_str() {
            Some(text) => match regex::RegexBuilder::new(text)
                .size_limit(MAX_PATTERN_SIZE)
                .build()
            {
                Ok(compiled) => schema.pattern = Some((text.to_owned(), compiled)),
                Err(e) => problems.push((
                    at("pattern"),
                    format!(
                        "Invalid value: {}: must be a valid regular expression, but isn't: {e}",
                        Value::from(text)
                    ),
                )),
            },
            None => problems.push((
                at("pattern"),
                format!("Invalid value: {pattern}: must be a string"),
            )),
        }
    }
    schema.list_type = match map.get("x-kubernetes-list-type").and_then(Value::as_str) {
        None | Some("atomic") => ListType::Atomic,
        Some("set") => ListType::Set,
        Some("map") => {
            let keys: Vec<String> = map
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                problems.push((
                    at("x-kubernetes-list-map-keys"),
                    "Required value: must not be empty if x-kubernetes-list-type is map".to_owned(),
                ));
            }
            ListType::Map(keys)
        }
        Some(other) => {
            problems.push((
                at("x-kubernetes-list-type"),
                format!(
                    "Unsupported value: {}: supported values: \"atomic\", \"map\", \"set\"",
                    Value::from(other)
                ),
            ));
            ListType::Atomic
        }
    };
    for (keyword, list) in [
        ("allOf", &mut schema.all_of),
        ("anyOf", &mut schema.any_of),
        ("oneOf", &mut schema.one_of),
    ] {
        if let Some(subschemas) = map.get(keyword).and_then(Value::as_array) {
            for (i, sub) in subschemas.iter().enumerate() {
                let sub_path = format!("{path}.{keyword}[{i}]");
                list.push(parse_node(
                    sub,
                    &sub_path,
                    Level::Junctor,
                    depth + 1,
                    problems,
                ));
            }
        }
    }
    if let Some(not) = map.get("not").filter(|n| !n.is_null()) {
        let node = parse_node(not, &at("not"), Level::Junctor, depth + 1, problems);
        schema.not = Some(Box::new(node));
    }
    if let Some(default) = map.get("default").filter(|d| !d.is_null()) {
        if level == Level::Junctor {
            problems.push((
                at("default"),
                "Forbidden: must not be set inside allOf, anyOf, oneOf or not".to_owned(),
            ));
        } else {
            // A default must survive pruning unchanged and be valid, or
            // every defaulted object would be refused.
            let mut pruned_default = default.clone();
            let mut pruned = Vec::new();
            schema.prune_at(&mut pruned_default, "", false, &mut pruned);
            if let Some(field) = pruned.first() {
                problems.push((
                    at("default"),
                    format!(
                        "Invalid value: {default}: must not have unknown fields, got {field:?}"
                    ),
                ));
            }
            let mut invalid = Vec::new();
            schema.validate_at(&pruned_default, "", false, &mut invalid);
            for (field, reason) in invalid {
                let where_ = if field.is_empty() {
                    at("default")
                } else {
                    format!("{}.{field}", at("default"))
                };
                problems.push((where_, reason));
            }
            schema.default = Some(default.clone());
        }
    }
    schema
}

/// `wanted`, unless the node is inside a junctor, whose subtree is value
/// validations only.
fn structural_or(level: Level, wanted: Level) -> Level {
    if level == Level::Junctor {
        Level::Junctor
    } else {
        wanted
    }
}

fn number(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<f64> {
    let value = map.get(key).filter(|v| !v.is_null())?;
    match value.as_f64() {
        Some(n) => Some(n),
        None => {
            problems.push((
                format!("{path}.{key}"),
                format!("Invalid value: {value}: must be a number"),
            ));
            None
        }
    }
}

fn count(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<u64> {
    let value = map.get(key).filter(|v| !v.is_null())?;
    match value.as_u64() {
        Some(n) => Some(n),
        None => {
            problems.push((
                format!("{path}.{key}"),
                format!("Invalid value: {value}: must be a non-negative integer"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> Schema {
        let mut problems = Vec::new();
        let schema = Schema::parse(&value, "schema", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        schema
    }

    fn problems_of(schema: &Schema, value: Value) -> Vec<Problem> {
        let mut problems = Vec::new();
        schema.validate(&value, "", &mut problems);
        problems
    }

    fn widget() -> Schema {
        schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                        "note": {"type": "string", "nullable": true},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "ports": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "properties": {
                                "name": {"type": "string"},
                                "protocol": {"type": "string", "default": "TCP"},
                            }},
                        },
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            },
        }))
    }

    #[test]
    fn a_wrong_type_is_refused_in_kube_apiservers_words() {
        let found = problems_of(
            &widget(),
            json!({"spec": {"size": "small", "replicas": "string"}}),
        );
        assert_eq!(
            found,
            [(
                "spec.replicas".to_owned(),
                r#"Invalid value: "string": spec.replicas in body must be of type integer: "string""#
                    .to_owned()
            )]
        );
        let found = problems_of(&widget(), json!({"spec": {"size": "small", "port": true}}));
        assert!(
            found[0].1.contains("must be of type integer,string"),
            "{found:?}"
        );
        assert!(problems_of(
            &widget(),
            json!({"spec": {"size": "small", "port": "http"}})
        )
        .is_empty());
        assert!(problems_of(&widget(), json!({"spec": {"size": "small", "port": 80}})).is_empty());
        // 2.0 is a whole number, as Go reads it.
        assert!(problems_of(
            &widget(),
            json!({"spec": {"size": "small", "replicas": 2.0}})
        )
        .is_empty());
    }

    #[test]
    fn required_enum_bounds_lengths_and_patterns_are_checked() {
        let found = problems_of(&widget(), json!({"spec": {"replicas": 11}}));
        assert!(
            found.contains(&("spec.size".to_owned(), "Required value".to_owned())),
            "{found:?}"
        );
        assert!(found.contains(&(
            "spec.replicas".to_owned(),
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10"
                .to_owned()
        )));
        let found = problems_of(&widget(), json!({"spec": {"size": "medium"}}));
        assert_eq!(
            found[0].1,
            r#"Unsupported value: "medium": supported values: "small", "large""#
        );
        let found = problems_of(
            &widget(),
            json!({"spec": {"size": "small", "name": "ABCDEFG"}}),
        );
        let reasons: Vec<&str> = found.iter().map(|(_, r)| r.as_str()).collect();
        assert!(
            reasons.contains(&"Too long: may not be more than 5 bytes"),
            "{found:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.ends_with("should match '^[a-z]+$'")),
            "{found:?}"
        );
        let found = problems_of(&widget(), json!({"spec": {"size": "small", "name": "a"}}));
        assert!(
            found[0].1.ends_with("should be at least 2 chars long"),
            "{found:?}"
        );
        let found = problems_of(&widget(), json!({"spec": {"size": "small", "ratio": 0}}));
        assert!(
            found[0].1.ends_with("should be greater than 0"),
            "{found:?}"
        );
        let found = problems_of(
            &widget(),
            json!({"spec": {"size": "small", "tags": ["a", "a", "b"]}}),
        );
        assert!(
            found
                .iter()
                .any(|(_, r)| r == "Too many: 3: must have at most 2 items"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(p, r)| p == "spec.tags[1]" && r == "Duplicate value: \"a\""),
            "{found:?}"
        );
        let found = problems_of(
            &widget(),
            json!({"spec": {"size": "small", "ports": [{"name": "a"}, {"name": "a"}]}}),
        );
        assert_eq!(found[0].0, "spec.ports[1]");
        let found = problems_of(
            &widget(),
            json!({"spec": {"size": "small", "labels": {"a": 1}}}),
        );
        assert_eq!(found[0].0, "spec.labels.a");
        assert!(
            problems_of(&widget(), json!({"spec": {"size": "small", "note": null}})).is_empty()
        );
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved_and_defaults_fill_gaps() {
        let schema = widget();
        let mut object = json!({
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "anything": 1},
            "spec": {
                "size": "small",
                "extra": 1,
                "replicas": null,
                "free": {"kept": {"deep": true}},
                "labels": {"a": "b"},
                "ports": [{"name": "http", "junk": 1}],
            },
            "other": {},
        });
        let mut pruned = Vec::new();
        schema.prune(&mut object, "", &mut pruned);
        pruned.sort();
        assert_eq!(pruned, ["other", "spec.extra", "spec.ports[0].junk"]);
        schema.apply_defaults(&mut object);
        assert_eq!(object["spec"]["replicas"], 1);
        assert_eq!(object["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(object["spec"]["free"]["kept"]["deep"], true);
        assert_eq!(object["metadata"]["anything"], 1);
        assert_eq!(object["kind"], "Widget");
        assert!(problems_of(&schema, object).is_empty());
    }

    #[test]
    fn schemas_kubernetes_refuses_are_reported_by_path() {
        let mut problems = Vec::new();
        Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {"properties": {"a": {"type": "string"}}},
                    "list": {"type": "array"},
                    "bad": {"type": "text"},
                    "both": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": {"type": "string"}},
                    "ref": {"$ref": "#/definitions/x", "type": "string"},
                    "re": {"type": "string", "pattern": "("},
                    "n": {"type": "integer", "default": "three"},
                },
            }),
            "spec.versions[0].schema.openAPIV3Schema",
            &mut problems,
        );
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        let root = "spec.versions[0].schema.openAPIV3Schema";
        for wanted in [
            format!("{root}.properties[spec].type"),
            format!("{root}.properties[list].items"),
            format!("{root}.properties[bad].type"),
            format!("{root}.properties[both].additionalProperties"),
            format!("{root}.properties[ref].$ref"),
            format!("{root}.properties[re].pattern"),
            format!("{root}.properties[n].default"),
        ] {
            assert!(paths.contains(&wanted.as_str()), "{wanted} in {problems:?}");
        }
        let mut problems = Vec::new();
        Schema::parse(&json!({"type": "string"}), "s", &mut problems);
        assert_eq!(
            problems,
            [(
                "s.type".to_owned(),
                "Invalid value: \"string\": must be object at the root".to_owned()
            )]
        );
    }

    #[test]
    fn junctors_combine_subschemas() {
        let schema = schema(json!({
            "type": "object",
            "properties": {"v": {
                "type": "integer",
                "anyOf": [{"minimum": 10}, {"maximum": 0}],
                "not": {"enum": [100]},
            }},
        }));
        assert!(problems_of(&schema, json!({"v": 11})).is_empty());
        assert!(problems_of(&schema, json!({"v": -1})).is_empty());
        assert!(problems_of(&schema, json!({"v": 5}))[0]
            .1
            .contains("(anyOf)"));
        assert!(problems_of(&schema, json!({"v": 100}))[0]
            .1
            .contains("(not)"));
    }
}
