//! Property tests (proptest) of what the REST API reads from a client before anything reaches
//! the store: request bodies (`wire::parse_body`), their check against the URL and decoding
//! for every kind in the registry (`wire::check_against_url`, `wire::decode`), the three patch
//! engines (`patch::apply`: JSON Patch, JSON merge patch, strategic merge patch), label and
//! field selectors and URL paths. Each property holds for any input: nothing panics, a refusal
//! is a 4xx with a message, and the laws RFC 6902 and RFC 7386 give hold.
//!
//! Inputs are generated JSON values whose keys are mostly real Kubernetes field names and patch
//! directives, so that the decoders and merges go deep rather than stop at the first unknown
//! field. Each property runs `SKIFF_FUZZ_CASES` cases (256 by default, so an ordinary test run
//! stays quick); `scripts/test` runs many more under a time limit.

use std::collections::BTreeMap;

use proptest::collection;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};
use skiff_master::rest::patch::{self, PatchType};
use skiff_master::rest::path::{self, ResourcePath, Target};
use skiff_master::rest::selectors::{FieldSelector, LabelSelector};
use skiff_master::rest::wire::{self, FieldValidation};
use skiff_objects::registry;
use skiff_objects::ObjectExt;

/// Cases per property when `SKIFF_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

/// The proptest configuration of every property: `SKIFF_FUZZ_CASES` cases; a failing case is
/// saved beside this file (`rest_fuzz.proptest-regressions`) and tried first on later runs.
fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("SKIFF_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let regressions = FileFailurePersistence::WithSource("proptest-regressions");
    ProptestConfig {
        failure_persistence: Some(Box::new(regressions)),
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated JSON

/// Field names of Kubernetes objects (no directives).
const PLAIN_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "spec",
    "status",
    "template",
    "selector",
    "matchLabels",
    "replicas",
    "containers",
    "initContainers",
    "image",
    "command",
    "args",
    "env",
    "value",
    "ports",
    "port",
    "containerPort",
    "targetPort",
    "protocol",
    "volumes",
    "volumeMounts",
    "mountPath",
    "type",
    "clusterIP",
    "nodeName",
    "conditions",
    "subsets",
    "addresses",
    "podCIDRs",
    "data",
    "stringData",
    "strategy",
];

/// Strategic merge patch directives, as keys.
const DIRECTIVE_KEYS: &[&str] = &[
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/finalizers",
    "$setElementOrder/ports",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/args",
    "$setElementOrder/",
    "$unknown",
];

/// Strings that mean something somewhere in an object or a patch.
const STRINGS: &[&str] = &[
    "",
    "default",
    "kube-system",
    "web",
    "v1",
    "apps/v1",
    "Pod",
    "Deployment",
    "Service",
    "replace",
    "delete",
    "merge",
    "nginx:1.27",
    "TCP",
    "ClusterIP",
    "NodePort",
    "Recreate",
    "Always",
    "10.0.0.1",
    "10.42.0.0/24",
    "example.com/finalizer",
    "2024-01-01T00:00:00Z",
    "name",
    "containers",
    "80",
    "-1",
];

/// A field name: mostly a real one, sometimes a directive, now and then anything.
fn field_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(PLAIN_KEYS).prop_map(String::from),
        2 => select(DIRECTIVE_KEYS).prop_map(String::from),
        1 => "[a-zA-Z$/.~-]{0,8}",
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(STRINGS).prop_map(String::from),
        2 => "[ -~]{0,12}",
        1 => "\\PC{0,6}",
    ]
}

/// A number: an integer, or a multiple of 1/4 (which JSON text carries exactly, so a value
/// that goes through a body compares equal to itself).
fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i64..1000).prop_map(Value::from),
        (-4000i32..4000).prop_map(|quarters| Value::from(f64::from(quarters) / 4.0)),
    ]
}

/// Any JSON value, at most 4 levels of arrays and objects deep.
fn json_value() -> impl Strategy<Value = Value> {
    // Built once: the recursion below runs for every value generated.
    let key = field_key().boxed();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            collection::vec((key.clone(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A JSON object of any values.
fn json_object() -> impl Strategy<Value = Value> {
    collection::vec((field_key(), json_value()), 0..8)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

/// A field name that is not a directive.
fn plain_key() -> impl Strategy<Value = String> {
    select(PLAIN_KEYS).prop_map(String::from)
}

/// A JSON value without arrays or directives: maps, scalars and nulls only.
fn plain_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        collection::vec((plain_key(), inner), 0..8)
            .prop_map(|fields| Value::Object(fields.into_iter().collect()))
    })
}

/// A JSON object of [`plain_value`]s.
fn plain_object() -> impl Strategy<Value = Value> {
    collection::vec((plain_key(), plain_value()), 0..8)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

/// A value that is not null, an array or an object.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ]
}

// ---------------------------------------------------------------------------------------------
// Patches

/// Kinds a patch is applied to: some with merge keys, one without.
const PATCH_KINDS: &[&str] = &[
    "Deployment",
    "Pod",
    "Service",
    "Node",
    "Namespace",
    "CronJob",
    "PodTemplate",
    "Widget",
];

const JSON_PATCH_OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test", "frob"];

/// Pointer tokens that are not field names: indexes, bad indexes, bad escapes.
const RAW_POINTER_TOKENS: &[&str] = &[
    "0",
    "1",
    "2",
    "-",
    "01",
    "~2",
    "~",
    "",
    "99999999999999999999",
];

/// A field name as an RFC 6901 reference token.
fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn json_pointer() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => field_key().prop_map(|key| escape_pointer_token(&key)),
        2 => select(RAW_POINTER_TOKENS).prop_map(String::from),
    ];
    collection::vec(token, 0..4).prop_map(|tokens| {
        let mut pointer = String::new();
        for token in tokens {
            pointer.push('/');
            pointer.push_str(&token);
        }
        pointer
    })
}

/// One JSON Patch operation, members possibly missing or wrong.
fn json_patch_operation() -> impl Strategy<Value = Value> {
    (
        select(JSON_PATCH_OPS),
        json_pointer(),
        option::of(json_pointer()),
        option::of(json_value()),
    )
        .prop_map(|(op, path, from, value)| {
            let mut operation = Map::new();
            operation.insert("op".to_owned(), Value::from(op));
            operation.insert("path".to_owned(), Value::from(path));
            if let Some(from) = from {
                operation.insert("from".to_owned(), Value::from(from));
            }
            if let Some(value) = value {
                operation.insert("value".to_owned(), value);
            }
            Value::Object(operation)
        })
}

/// A PATCH body of any of the three kinds, or not JSON at all.
fn patch_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_object().prop_map(|patch| patch.to_string().into_bytes()),
        3 => collection::vec(json_patch_operation(), 0..6)
            .prop_map(|operations| Value::Array(operations).to_string().into_bytes()),
        1 => json_value().prop_map(|value| value.to_string().into_bytes()),
        1 => collection::vec(any::<u8>(), 0..64),
    ]
}

/// A JSON pointer to a value inside `target`, walking down as `choices` say, and that value.
fn pointer_into(target: &Value, choices: &[Index]) -> (String, Value) {
    let mut pointer = String::new();
    let mut at = target;
    for choice in choices {
        match at {
            Value::Object(fields) if !fields.is_empty() => {
                let Some((key, value)) = fields.iter().nth(choice.index(fields.len())) else {
                    break;
                };
                pointer.push('/');
                pointer.push_str(&escape_pointer_token(key));
                at = value;
            }
            Value::Array(items) if !items.is_empty() => {
                let index = choice.index(items.len());
                pointer.push('/');
                pointer.push_str(&index.to_string());
                at = &items[index];
            }
            _ => break,
        }
    }
    (pointer, at.clone())
}

/// `{path[0]: {path[1]: ... value}}`.
fn nested(path: &[&str], value: Value) -> Value {
    path.iter().rev().fold(value, |inner, key| {
        let mut fields = Map::new();
        fields.insert((*key).to_owned(), inner);
        Value::Object(fields)
    })
}

// ---------------------------------------------------------------------------------------------
// Request bodies

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "",
    "*/*",
    "application/yaml",
    "application/apply-patch+yaml",
    "application/yaml; charset=utf-8",
    "text/plain",
    "application/vnd.kubernetes.protobuf",
];

/// Content types `parse_body` reads as JSON.
const JSON_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "",
    "*/*",
];

fn request_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        collection::vec(any::<u8>(), 0..128),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        "[a-z0-9:{}\\[\\],\"' \\n&*!#|>.-]{0,48}".prop_map(String::into_bytes),
    ]
}

const NAMESPACES: &[Option<&str>] = &[None, Some(""), Some("default"), Some("kube-system")];

const VALIDATIONS: &[FieldValidation] = &[
    FieldValidation::Strict,
    FieldValidation::Warn,
    FieldValidation::Ignore,
];

/// A request body's value: mostly an object with Kubernetes fields, sometimes anything.
fn request_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json_value(),
        4 => json_object(),
        2 => (json_string(), json_object()).prop_map(|(name, mut object)| {
            if let Value::Object(fields) = &mut object {
                fields.insert("metadata".to_owned(), json!({ "name": name }));
            }
            object
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Selectors and paths

const LABEL_KEYS: &[&str] = &["app", "tier", "env", "example.com/team", "k8s.io/part-of"];

const LABEL_VALUES: &[&str] = &["web", "db", "a-1", "v1.2", "x_y", ""];

/// A label selector requirement as the test writes and evaluates it, independently of
/// `selectors.rs`.
#[derive(Debug, Clone)]
enum Requirement {
    Equals {
        key: &'static str,
        value: &'static str,
        doubled: bool,
    },
    NotEquals {
        key: &'static str,
        value: &'static str,
    },
    In {
        key: &'static str,
        values: Vec<&'static str>,
    },
    NotIn {
        key: &'static str,
        values: Vec<&'static str>,
    },
    Exists(&'static str),
    DoesNotExist(&'static str),
}

impl Requirement {
    /// As a client writes it; `spaced` puts blanks around operators and after commas.
    fn render(&self, spaced: bool) -> String {
        let blank = if spaced { " " } else { "" };
        let comma = if spaced { ", " } else { "," };
        match self {
            Requirement::Equals {
                key,
                value,
                doubled,
            } => {
                let operator = if *doubled { "==" } else { "=" };
                format!("{key}{blank}{operator}{blank}{value}")
            }
            Requirement::NotEquals { key, value } => format!("{key}{blank}!={blank}{value}"),
            Requirement::In { key, values } => format!("{key} in ({})", values.join(comma)),
            Requirement::NotIn { key, values } => format!("{key} notin ({})", values.join(comma)),
            Requirement::Exists(key) => (*key).to_owned(),
            Requirement::DoesNotExist(key) => format!("!{key}"),
        }
    }

    /// Whether `labels` satisfy it, as Kubernetes defines each operator.
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals { key, value, .. } => {
                labels.get(*key).is_some_and(|label| label == value)
            }
            Requirement::NotEquals { key, value } => {
                labels.get(*key).is_none_or(|label| label != value)
            }
            Requirement::In { key, values } => labels
                .get(*key)
                .is_some_and(|label| values.iter().any(|value| label == value)),
            Requirement::NotIn { key, values } => labels
                .get(*key)
                .is_none_or(|label| values.iter().all(|value| label != value)),
            Requirement::Exists(key) => labels.contains_key(*key),
            Requirement::DoesNotExist(key) => !labels.contains_key(*key),
        }
    }
}

fn label_requirement() -> impl Strategy<Value = Requirement> {
    let parts = (
        0..6u8,
        select(LABEL_KEYS),
        collection::vec(select(LABEL_VALUES), 1..4),
        any::<bool>(),
    );
    parts.prop_map(|(operator, key, values, doubled)| match operator {
        0 => Requirement::Equals {
            key,
            value: values[0],
            doubled,
        },
        1 => Requirement::NotEquals {
            key,
            value: values[0],
        },
        2 => Requirement::In { key, values },
        3 => Requirement::NotIn { key, values },
        4 => Requirement::Exists(key),
        _ => Requirement::DoesNotExist(key),
    })
}

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    collection::btree_map(
        select(LABEL_KEYS).prop_map(String::from),
        select(LABEL_VALUES).prop_map(String::from),
        0..4,
    )
}

/// Text that looks like a selector more often than random text does.
fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[a-z0-9!=(), ./_-]{0,32}",
        "(app|tier|in|notin|!|=|==|!=|\\(|\\)|,| |example.com/|metadata.name|-){0,12}",
    ]
}

const FIELD_SELECTOR_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "Namespace",
    "Secret",
    "ReplicaSet",
    "Event",
    "Deployment",
    "",
];

const GROUPS: &[&str] = &["", "apps", "batch", "example.com"];

const VERSIONS: &[&str] = &["v1", "v1beta1", "v2"];

/// Resources (none of them `namespaces`, whose paths read differently).
const RESOURCES: &[&str] = &["pods", "deployments", "services", "nodes", "endpoints"];

/// One segment of a URL path: never empty, never a `/`.
fn path_segment() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.:_-]{0,10}"
}

/// A resource path and the URL that names it (with a trailing `/` or not).
fn resource_url() -> impl Strategy<Value = (ResourcePath, String)> {
    let name_and_below = option::of((
        path_segment(),
        option::of((path_segment(), collection::vec(path_segment(), 0..3))),
    ));
    let parts = (
        select(GROUPS),
        select(VERSIONS),
        option::of(path_segment()),
        select(RESOURCES),
        name_and_below,
        any::<bool>(),
    );
    parts.prop_map(
        |(group, version, namespace, resource, below, trailing_slash)| {
            let mut url = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            if let Some(namespace) = &namespace {
                url.push_str("/namespaces/");
                url.push_str(namespace);
            }
            url.push('/');
            url.push_str(resource);
            let (mut name, mut subresource, mut tail) = (None, None, Vec::new());
            if let Some((object, under)) = below {
                url.push('/');
                url.push_str(&object);
                name = Some(object);
                if let Some((sub, rest)) = under {
                    url.push('/');
                    url.push_str(&sub);
                    for segment in &rest {
                        url.push('/');
                        url.push_str(segment);
                    }
                    subresource = Some(sub);
                    tail = rest;
                }
            }
            if trailing_slash {
                url.push('/');
            }
            let expected = ResourcePath {
                group: group.to_owned(),
                version: version.to_owned(),
                namespace,
                resource: resource.to_owned(),
                name,
                subresource,
                tail: tail.join("/"),
                watch: false,
            };
            (expected, url)
        },
    )
}

fn url_path() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,32}",
        "(/(api|apis|namespaces|v1|apps|pods|status|finalize|healthz|[a-z]{0,3})){0,8}/?",
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(fuzz_config())]

    /// Any bytes under any content type: a value, or a 4xx naming the problem.
    #[test]
    fn request_bodies_of_any_bytes_parse_or_are_refused(
        body in request_body(),
        content_type in select(CONTENT_TYPES),
    ) {
        if let Err(e) = wire::parse_body(&body, content_type) {
            prop_assert!(e.code.is_client_error(), "{content_type}: {}", e.code);
            prop_assert!(!e.message.is_empty());
        }
    }

    /// A JSON body reads back as the value it was written from, whatever parameters the
    /// content type carries.
    #[test]
    fn json_bodies_read_back_as_written(
        value in json_value(),
        content_type in select(JSON_CONTENT_TYPES),
    ) {
        let body = value.to_string();
        let parsed = wire::parse_body(body.as_bytes(), content_type);
        prop_assert!(parsed.is_ok(), "{content_type}: {body}: {parsed:?}");
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed, value);
        }
    }

    /// Any value, for every stored kind: checked and decoded into an object of that kind, or
    /// refused with a 4xx and a message; what the check fills in agrees with the URL; only `Warn`
    /// turns unknown fields into warnings.
    #[test]
    fn bodies_of_every_kind_decode_or_are_refused_with_a_4xx(
        value in request_value(),
        namespace in select(NAMESPACES),
        validation in select(VALIDATIONS),
    ) {
        // Every version served, those converted to the stored one too. The
        // reviews are answered by `rest/access_review.rs`, never decoded
        // into objects.
        for info in registry::built_in().filter(|i| i.is_stored()) {
            let mut checked = value.clone();
            if let Err(e) = wire::check_against_url(&mut checked, info, namespace) {
                prop_assert!(e.code.is_client_error(), "{}: {}", info.resource, e.code);
                prop_assert!(!e.message.is_empty());
                continue;
            }
            prop_assert_eq!(&checked["kind"], &json!(info.kind.name()));
            prop_assert_eq!(&checked["apiVersion"], &json!(info.api_version));
            prop_assert!(checked["metadata"].is_object());
            if info.namespaced {
                prop_assert_eq!(
                    &checked["metadata"]["namespace"],
                    &json!(namespace.unwrap_or_default())
                );
            }
            match wire::decode(info, checked, validation, wire::BodyOrigin::Text) {
                Ok((object, warnings)) => {
                    prop_assert_eq!(ObjectExt::kind(&object).ok(), Some(info.kind));
                    if validation != FieldValidation::Warn {
                        prop_assert!(
                            !warnings.iter().any(|w| w.starts_with("unknown field")),
                            "{validation:?}: {warnings:?}"
                        );
                    }
                }
                Err(e) => {
                    prop_assert!(e.code.is_client_error(), "{}: {}", info.resource, e.code);
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }

    /// Any patch body of any kind against any object: an object, or an error with a message.
    #[test]
    fn patch_engines_take_any_patch_without_panicking(
        kind in select(PATCH_KINDS),
        target in json_object(),
        body in patch_body(),
    ) {
        for patch_type in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            match patch::apply(kind, &target, patch_type, &body) {
                Ok(result) => prop_assert!(result.is_object(), "{patch_type}: {result}"),
                Err(e) => prop_assert!(!e.to_string().is_empty(), "{patch_type}"),
            }
        }
    }

    /// RFC 7386: a merge patch applied twice gives what it gives once; `{}` changes nothing;
    /// a member set to `null` is gone and one set to a non-object value has that value.
    #[test]
    fn merge_patch_is_idempotent_and_empty_changes_nothing(
        target in json_object(),
        patch in json_object(),
    ) {
        let body = patch.to_string();
        let once = patch::apply("Widget", &target, PatchType::Merge, body.as_bytes());
        prop_assert!(once.is_ok(), "{once:?}");
        let Ok(once) = once else { return Ok(()) };
        let twice = patch::apply("Widget", &once, PatchType::Merge, body.as_bytes());
        prop_assert!(twice.is_ok(), "{twice:?}");
        if let Ok(twice) = twice {
            prop_assert_eq!(&twice, &once);
        }
        if let Value::Object(members) = &patch {
            for (key, value) in members {
                if value.is_null() {
                    prop_assert!(once.get(key).is_none(), "{key} survived null");
                } else if !value.is_object() {
                    prop_assert_eq!(once.get(key), Some(value));
                }
            }
        }
        let unchanged = patch::apply("Widget", &target, PatchType::Merge, b"{}");
        prop_assert!(unchanged.is_ok(), "{unchanged:?}");
        if let Ok(unchanged) = unchanged {
            prop_assert_eq!(unchanged, target);
        }
    }

    /// RFC 6902: no operations change nothing; `test` of the value a pointer names in the
    /// object succeeds and changes nothing.
    #[test]
    fn json_patch_empty_changes_nothing_and_test_of_own_value_succeeds(
        kind in select(PATCH_KINDS),
        target in json_object(),
        choices in collection::vec(any::<Index>(), 0..6),
    ) {
        let unchanged = patch::apply(kind, &target, PatchType::Json, b"[]");
        prop_assert!(unchanged.is_ok(), "{unchanged:?}");
        if let Ok(unchanged) = unchanged {
            prop_assert_eq!(&unchanged, &target);
        }
        let (pointer, value) = pointer_into(&target, &choices);
        let test = json!([{"op": "test", "path": pointer, "value": value}]).to_string();
        let tested = patch::apply(kind, &target, PatchType::Json, test.as_bytes());
        prop_assert!(tested.is_ok(), "{test}: {tested:?}");
        if let Ok(tested) = tested {
            prop_assert_eq!(tested, target);
        }
    }

    /// Strategic merge patch: `{}` changes nothing, for any kind.
    #[test]
    fn strategic_merge_patch_empty_changes_nothing(
        kind in select(PATCH_KINDS),
        target in json_object(),
    ) {
        let unchanged = patch::apply(kind, &target, PatchType::StrategicMerge, b"{}");
        prop_assert!(unchanged.is_ok(), "{unchanged:?}");
        if let Ok(unchanged) = unchanged {
            prop_assert_eq!(unchanged, target);
        }
    }

    /// A patch that only sets one map field (merge or strategic): the field reads back as the
    /// value, and the object's other top-level fields are as they were.
    #[test]
    fn patch_setting_a_map_field_reads_back(
        kind in select(PATCH_KINDS),
        target in json_object(),
        path in collection::vec(select(PLAIN_KEYS), 1..4),
        value in scalar(),
    ) {
        let body = nested(&path, value.clone()).to_string();
        for patch_type in [PatchType::Merge, PatchType::StrategicMerge] {
            let result = patch::apply(kind, &target, patch_type, body.as_bytes());
            prop_assert!(result.is_ok(), "{patch_type}: {body}: {result:?}");
            let Ok(result) = result else { continue };
            let read = path.iter().try_fold(&result, |at, key| at.get(*key));
            prop_assert_eq!(read, Some(&value), "{}: {}", patch_type, body);
            if let Value::Object(members) = &target {
                for (key, before) in members {
                    if Some(key.as_str()) != path.first().copied() {
                        prop_assert_eq!(result.get(key), Some(before), "{}: {}", patch_type, key);
                    }
                }
            }
        }
    }

    /// Without lists or directives, a strategic merge patch is a JSON merge patch.
    #[test]
    fn strategic_merge_without_lists_or_directives_is_a_merge_patch(
        kind in select(PATCH_KINDS),
        target in json_object(),
        patch in plain_object(),
    ) {
        let body = patch.to_string();
        let merged = patch::apply(kind, &target, PatchType::Merge, body.as_bytes());
        let strategic = patch::apply(kind, &target, PatchType::StrategicMerge, body.as_bytes());
        prop_assert!(merged.is_ok() && strategic.is_ok(), "{merged:?} {strategic:?}");
        if let (Ok(merged), Ok(strategic)) = (merged, strategic) {
            prop_assert_eq!(strategic, merged);
        }
    }

    /// Selector parsers and the URL parser take any text without panicking.
    #[test]
    fn selectors_and_paths_of_any_text_parse_or_are_refused(
        text in selector_text(),
        kind in select(FIELD_SELECTOR_KINDS),
        url in url_path(),
    ) {
        if let Err(e) = LabelSelector::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(e) = FieldSelector::parse(kind, &text) {
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = path::parse(&url);
        let _ = path::parse(&text);
    }

    /// A label selector written from valid requirements parses, and selects exactly the label
    /// maps that satisfy every requirement.
    #[test]
    fn label_selectors_select_what_their_requirements_say(
        requirements in collection::vec(label_requirement(), 1..4),
        spaced in any::<bool>(),
        maps in collection::vec(label_map(), 1..8),
    ) {
        let text = requirements
            .iter()
            .map(|requirement| requirement.render(spaced))
            .collect::<Vec<_>>()
            .join(if spaced { ", " } else { "," });
        let selector = LabelSelector::parse(&text);
        prop_assert!(selector.is_ok(), "{text}: {selector:?}");
        let Ok(selector) = selector else { return Ok(()) };
        prop_assert!(!selector.is_empty());
        for labels in &maps {
            let expected = requirements.iter().all(|requirement| requirement.holds(labels));
            prop_assert_eq!(selector.matches(labels), expected, "{} on {:?}", text, labels);
        }
    }

    /// `metadata.name=X` names X and matches only objects named X; `!=` the opposite.
    #[test]
    fn field_selector_on_the_name_matches_by_name(
        name in path_segment(),
        other in path_segment(),
        same in any::<bool>(),
        equal in any::<bool>(),
        kind in select(FIELD_SELECTOR_KINDS),
    ) {
        let object_name = if same { name.clone() } else { other };
        let operator = if equal { "=" } else { "!=" };
        let selector = FieldSelector::parse(kind, &format!("metadata.name{operator}{name}"));
        prop_assert!(selector.is_ok(), "{selector:?}");
        let Ok(selector) = selector else { return Ok(()) };
        prop_assert_eq!(selector.single_name(), equal.then_some(name.as_str()));
        let object = json!({"metadata": {"name": object_name}});
        prop_assert_eq!(selector.matches_json(&object), (object_name == name) == equal);
    }

    /// A resource URL parses into the group, version, namespace, resource, name, subresource
    /// and tail it was written from.
    #[test]
    fn resource_urls_parse_into_their_parts((expected, url) in resource_url()) {
        prop_assert_eq!(path::parse(&url), Target::Resource(expected), "{}", url);
    }
}
