//! The three bodies of a Kubernetes `PATCH`, applied to an object as JSON: JSON Patch
//! (RFC 6902, `application/json-patch+json`, what `kubectl rollout undo` sends), JSON merge
//! patch (RFC 7386, `application/merge-patch+json`, `kubectl scale` and `label`) and strategic
//! merge patch (`application/strategic-merge-patch+json`, `kubectl apply`, `rollout restart`,
//! helm 3).
//!
//! Strategic merge patch is RFC 7386 plus lists: a list with a merge key (`containers` on
//! `name`, Service `ports` on `port`, ...) merges element by element, a list Kubernetes merges
//! as a set (`metadata.finalizers`) takes the union, any other list is replaced; directives say
//! what a plain merge cannot: `$patch` (`replace`, `delete`), `$setElementOrder/<list>`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<list>`. kubernetes/apimachinery
//! `pkg/util/strategicpatch` is the reference; where this module differs it says so. Which list
//! merges on which key comes from a [`ListMergeSchema`]: [`BuiltInMergeKeys`] knows skiff's
//! kinds and every PodSpec, a kind registry can supply another.
//!
//! Pure: a body and a JSON object in, a JSON object or a [`PatchError`] naming the problem and
//! where it is out. Bad input never panics: a body's nesting is bounded by serde_json's
//! recursion limit (128 levels), a JSON Patch by its number of operations, by how much it may
//! copy and by how deep it may nest what it moves. RFC 6902 and RFC 7386 are implemented here
//! rather than with the json-patch crate, for errors that name the operation and the path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Number, Value};

/// Results of this module; JSON Patch helpers use other error types.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// At most this many operations in one JSON Patch (the limit kube-apiserver sets).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// At most this many JSON values copied by the `copy` operations of one JSON Patch (or moved
/// deeper by its `move` operations), so that a short patch copying the object into itself
/// again and again cannot exhaust memory or time.
pub const MAX_JSON_PATCH_COPIED_VALUES: usize = 250_000;

/// How deep a JSON Patch may nest a value: as deep as a JSON body is read (serde_json's
/// recursion limit), so that the result can be read back and nothing recurses deeper.
pub const MAX_JSON_PATCH_DEPTH: usize = 128;

/// The three patch formats Kubernetes serves (server-side apply's `application/apply-patch+yaml`
/// is not one of them: `objects::field_manager` merges applied configurations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// RFC 6902 JSON Patch: a list of operations.
    Json,
    /// RFC 7386 JSON merge patch.
    Merge,
    /// Kubernetes strategic merge patch.
    StrategicMerge,
}

impl PatchType {
    const ALL: [PatchType; 3] = [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge];

    /// From a request's Content-Type (parameters like `; charset=utf-8` ignored, case
    /// ignored): `application/json-patch+json`, `application/merge-patch+json`,
    /// `application/strategic-merge-patch+json`. Anything else is `None` (415 for the caller).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let essence = content_type
            .split_once(';')
            .map_or(content_type, |(essence, _)| essence)
            .trim();
        PatchType::ALL
            .into_iter()
            .find(|patch_type| patch_type.content_type().eq_ignore_ascii_case(essence))
    }

    /// The Content-Type a client sends with this kind of patch.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

impl fmt::Display for PatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatchType::Json => "JSON patch",
            PatchType::Merge => "JSON merge patch",
            PatchType::StrategicMerge => "strategic merge patch",
        })
    }
}

/// Why a patch could not be applied, and where. Strategic merge patch locations are paths in
/// the patch (`spec.template.spec.containers[0].env`); JSON Patch ones are the operation's
/// index and path.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the patch is not valid JSON: {source}")]
    Malformed { source: serde_json::Error },
    #[error("a {patch_type} must be a JSON object, not {found}")]
    NotAnObject {
        patch_type: PatchType,
        found: &'static str,
    },
    #[error("a JSON patch must be a JSON array of operations, not {found}")]
    NotAnArray { found: &'static str },
    #[error("a JSON patch may hold at most {max} operations; this one holds {count}")]
    TooManyOperations { count: usize, max: usize },
    #[error("patch op {index}: {problem}")]
    BadOperation {
        index: usize,
        problem: OperationSyntax,
    },
    #[error("patch op {index} ({op} {path}): {problem}")]
    OperationFailed {
        index: usize,
        op: &'static str,
        path: String,
        problem: OperationFailure,
    },
    #[error(
        "strategic merge patch, at {at}: unknown $patch value {value}; \
         expected \"replace\" or \"delete\""
    )]
    UnknownPatchDirective { at: String, value: String },
    #[error(
        "strategic merge patch, at {at}: unknown directive {key:?}; the directives are $patch, \
         $retainKeys, $setElementOrder/<field> and $deleteFromPrimitiveList/<field>"
    )]
    UnknownDirective { at: String, key: String },
    #[error("strategic merge patch, at {at}: {directive} must be {expected}")]
    BadDirective {
        at: String,
        directive: String,
        expected: &'static str,
    },
    #[error(
        "strategic merge patch, at {at}: the element has no {key:?}, the merge key of this list"
    )]
    MissingMergeKey { at: String, key: &'static str },
    #[error(
        "strategic merge patch, at {at}: this list merges on {key:?}, so its elements must be \
         objects"
    )]
    ElementNotObject { at: String, key: &'static str },
    #[error(
        "strategic merge patch, at {at}: this list is a set of values, so its elements must be \
         strings, numbers or booleans"
    )]
    ElementNotValue { at: String },
    #[error(
        "strategic merge patch, at {at}: \"$patch\": \"delete\" needs a merge key, and this list \
         of values has none; use $deleteFromPrimitiveList/<field>"
    )]
    DeleteInValueList { at: String },
    #[error(
        "strategic merge patch, at {at}: $retainKeys does not name {field:?}, which the patch \
         sets; name it or leave the field out"
    )]
    RetainKeysOmitsField { at: String, field: String },
    #[error(
        "strategic merge patch, at {at}: it must name every element the patch gives for the \
         list, in the patch's order"
    )]
    ElementOrderMismatch { at: String },
    #[error("the object to patch is not a JSON object")]
    TargetNotObject,
    #[error("the {patch_type} leaves {found} where the object was; the result must be an object")]
    ResultNotObject {
        patch_type: PatchType,
        found: &'static str,
    },
}

/// What is wrong with the shape of a JSON Patch operation.
#[derive(Debug, thiserror::Error)]
pub enum OperationSyntax {
    #[error(
        "not a JSON object; an operation looks like \
         {{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}}"
    )]
    NotAnObject,
    #[error("lacks {0:?}")]
    Missing(&'static str),
    #[error("{0:?} is not a string")]
    NotAString(&'static str),
    #[error("unknown op {0:?}; expected add, remove, replace, move, copy or test")]
    UnknownOp(String),
}

/// Why a well-formed JSON Patch operation failed on the object.
#[derive(Debug, thiserror::Error)]
pub enum OperationFailure {
    #[error("path not found")]
    PathNotFound,
    #[error("from {0} not found")]
    FromNotFound(String),
    #[error("{pointer:?} is not a JSON pointer: {reason}")]
    BadPointer {
        pointer: String,
        reason: &'static str,
    },
    #[error("{0:?} is not an array index")]
    BadIndex(String),
    #[error("index {index} is out of range for an array of {len}")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("the parent is neither an object nor an array")]
    ParentNotContainer,
    #[error("test failed: the value there is different")]
    TestFailed,
    #[error("the whole object cannot be removed")]
    RemoveRoot,
    #[error("a value cannot be moved into itself")]
    MoveIntoItself,
    #[error("the patch copies (or moves deeper) more than {0} JSON values in all")]
    CopyTooLarge(usize),
    #[error("the value would sit {depth} levels deep; at most {max} are allowed")]
    TooDeep { depth: usize, max: usize },
}

/// How a list merges under strategic merge patch (Kubernetes' `patchStrategy: merge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// A list of objects, merged element by element on this field (`patchMergeKey`).
    ByKey(&'static str),
    /// A list of values merged as a set (`patchStrategy: merge` without a key, as
    /// `metadata.finalizers`).
    Set,
}

/// Where strategic merge patch learns how the lists of a kind merge. [`BuiltInMergeKeys`]
/// serves skiff's kinds; a kind registry can implement it too (names live for `'static`:
/// interned or leaked once when the kind is registered).
pub trait ListMergeSchema {
    /// How the list at `path` (field names from the object root, list indexes left out, e.g.
    /// `["spec", "template", "spec", "containers"]`) merges in an object of `kind`; `None`:
    /// the patch's list replaces it.
    fn list_merge(&self, kind: &str, path: &[&str]) -> Option<ListMerge>;
}

/// The merge keys of k8s.io/api's struct tags for skiff's kinds (Pod, Deployment, ReplicaSet,
/// Service, Endpoints, Node, Namespace, Secret) and for every PodSpec wherever it sits.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltInMergeKeys;

/// The strategic-merge merge key of the list at `path` in an object of `kind`, from
/// [`BuiltInMergeKeys`]; `None`: the list is replaced.
pub fn merge_key(kind: &str, path: &[&str]) -> Option<ListMerge> {
    BuiltInMergeKeys.list_merge(kind, path)
}

/// Which kinds a rule is about.
#[derive(Clone, Copy)]
enum Kinds {
    Any,
    Only(&'static [&'static str]),
}

impl Kinds {
    fn include(self, kind: &str) -> bool {
        match self {
            Kinds::Any => true,
            Kinds::Only(kinds) => kinds.contains(&kind),
        }
    }
}

/// A list outside any PodSpec whose merging the built-in schema knows.
struct ListRule {
    kinds: Kinds,
    path: &'static [&'static str],
    merge: ListMerge,
}

const OBJECT_LISTS: &[ListRule] = &[
    ListRule {
        kinds: Kinds::Any,
        path: &["metadata", "ownerReferences"],
        merge: ListMerge::ByKey("uid"),
    },
    ListRule {
        kinds: Kinds::Any,
        path: &["metadata", "finalizers"],
        merge: ListMerge::Set,
    },
    ListRule {
        kinds: Kinds::Any,
        path: &["status", "conditions"],
        merge: ListMerge::ByKey("type"),
    },
    ListRule {
        kinds: Kinds::Only(&["Service"]),
        path: &["spec", "ports"],
        merge: ListMerge::ByKey("port"),
    },
    ListRule {
        kinds: Kinds::Only(&["Node"]),
        path: &["status", "addresses"],
        merge: ListMerge::ByKey("type"),
    },
    ListRule {
        kinds: Kinds::Only(&["Node"]),
        path: &["spec", "podCIDRs"],
        merge: ListMerge::Set,
    },
    ListRule {
        kinds: Kinds::Only(&["Pod"]),
        path: &["status", "podIPs"],
        merge: ListMerge::ByKey("ip"),
    },
    ListRule {
        kinds: Kinds::Only(&["Pod"]),
        path: &["status", "hostIPs"],
        merge: ListMerge::ByKey("ip"),
    },
];

/// Kinds whose PodSpec is `spec.template.spec`.
const POD_TEMPLATE_OWNERS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "ReplicationController",
];

/// Where a PodSpec sits in each kind that has one.
const POD_SPEC_PLACES: &[(Kinds, &[&str])] = &[
    (Kinds::Only(&["Pod"]), &["spec"]),
    (Kinds::Only(&["PodTemplate"]), &["template", "spec"]),
    (
        Kinds::Only(POD_TEMPLATE_OWNERS),
        &["spec", "template", "spec"],
    ),
    (
        Kinds::Only(&["CronJob"]),
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ),
];

/// A PodSpec's merged lists (tolerations, for one, have no key and are replaced).
const POD_SPEC_LISTS: &[(&str, ListMerge)] = &[
    ("containers", ListMerge::ByKey("name")),
    ("initContainers", ListMerge::ByKey("name")),
    ("ephemeralContainers", ListMerge::ByKey("name")),
    ("volumes", ListMerge::ByKey("name")),
    ("imagePullSecrets", ListMerge::ByKey("name")),
    ("hostAliases", ListMerge::ByKey("ip")),
    ("schedulingGates", ListMerge::ByKey("name")),
    ("resourceClaims", ListMerge::ByKey("name")),
    ("topologySpreadConstraints", ListMerge::ByKey("topologyKey")),
];

/// The PodSpec lists whose elements are containers.
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// A container's merged lists.
const CONTAINER_FIELD_LISTS: &[(&str, ListMerge)] = &[
    ("env", ListMerge::ByKey("name")),
    ("ports", ListMerge::ByKey("containerPort")),
    ("volumeMounts", ListMerge::ByKey("mountPath")),
    ("volumeDevices", ListMerge::ByKey("devicePath")),
];

impl ListMergeSchema for BuiltInMergeKeys {
    fn list_merge(&self, kind: &str, path: &[&str]) -> Option<ListMerge> {
        if let Some(rule) = OBJECT_LISTS
            .iter()
            .find(|rule| rule.kinds.include(kind) && rule.path == path)
        {
            return Some(rule.merge);
        }
        POD_SPEC_PLACES
            .iter()
            .filter(|(kinds, _)| kinds.include(kind))
            .find_map(|(_, place)| match path.split_at_checked(place.len()) {
                Some((head, within)) if head == *place => pod_spec_list(within),
                _ => None,
            })
    }
}

/// How the list at `within` (a path inside a PodSpec) merges.
fn pod_spec_list(within: &[&str]) -> Option<ListMerge> {
    match within {
        [list] => listed(POD_SPEC_LISTS, list),
        [containers, list] if CONTAINER_LISTS.contains(containers) => {
            listed(CONTAINER_FIELD_LISTS, list)
        }
        _ => None,
    }
}

fn listed(table: &[(&str, ListMerge)], name: &str) -> Option<ListMerge> {
    table
        .iter()
        .find(|(entry, _)| *entry == name)
        .map(|(_, merge)| *merge)
}

/// Applies `patch` (the raw request body) to `target` (an object as Kubernetes JSON) for an
/// object of Kubernetes kind `kind` ("Deployment", "Pod", ...), with the built-in merge keys.
pub fn apply(kind: &str, target: &Value, patch_type: PatchType, patch: &[u8]) -> Result<Value> {
    apply_with_schema(&BuiltInMergeKeys, kind, target, patch_type, patch)
}

/// [`apply`], with the strategic merge keys of `schema`.
pub fn apply_with_schema(
    schema: &dyn ListMergeSchema,
    kind: &str,
    target: &Value,
    patch_type: PatchType,
    patch: &[u8],
) -> Result<Value> {
    let Value::Object(object) = target else {
        return Err(PatchError::TargetNotObject);
    };
    let document: Value =
        serde_json::from_slice(patch).map_err(|source| PatchError::Malformed { source })?;
    let patched = match patch_type {
        PatchType::Json => apply_json_patch(target, &document)?,
        PatchType::Merge => {
            let patch = patch_object(&document, patch_type)?;
            Value::Object(merge_patch(object.clone(), patch))
        }
        PatchType::StrategicMerge => {
            let patch = patch_object(&document, patch_type)?;
            let mut merge = StrategicMerge {
                schema,
                kind,
                at: Vec::new(),
            };
            Value::Object(merge.merge_map(object.clone(), patch)?)
        }
    };
    if patched.is_object() {
        Ok(patched)
    } else {
        Err(PatchError::ResultNotObject {
            patch_type,
            found: json_type(&patched),
        })
    }
}

fn patch_object(document: &Value, patch_type: PatchType) -> Result<&Map<String, Value>> {
    document.as_object().ok_or_else(|| PatchError::NotAnObject {
        patch_type,
        found: json_type(document),
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 7386 JSON merge patch

/// Merges `patch` into `target`: `null` deletes a member, objects merge, anything else
/// (arrays included) replaces.
fn merge_patch(mut target: Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
            continue;
        }
        let merged = match value {
            Value::Object(fields) => {
                let current = match target.remove(key) {
                    Some(Value::Object(current)) => current,
                    _ => Map::new(),
                };
                Value::Object(merge_patch(current, fields))
            }
            other => other.clone(),
        };
        target.insert(key.clone(), merged);
    }
    target
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// A `$patch` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Replace,
    Delete,
}

/// One step of a location in a strategic merge patch: a field, or an element of a list.
#[derive(Debug, Clone, Copy)]
enum Step<'p> {
    Field(&'p str),
    Index(usize),
}

/// An element of a merged list and its index in the live list (`None`: new from the patch).
struct Placed {
    value: Value,
    live: Option<usize>,
}

/// One strategic merge of a patch into an object of `kind`.
///
/// Where apimachinery differs: it takes a `$`-key it does not know for a field, this module
/// refuses it; it errors on live elements without the merge key, this module keeps them where
/// they are; `$deleteFromPrimitiveList/` here deletes whatever the list's strategy; the map of a
/// `$patch: replace` has its own directives applied; where apimachinery's order of added
/// elements depends on Go slice aliasing, `arrange` gives a rule.
struct StrategicMerge<'a, 'p> {
    schema: &'a dyn ListMergeSchema,
    kind: &'a str,
    /// Where in the patch the merge is: for list lookups and error messages.
    at: Vec<Step<'p>>,
}

impl<'p> StrategicMerge<'_, 'p> {
    /// Merges the map `patch` into `original`. `$patch: replace` keeps only the patch's fields;
    /// `$patch: delete` empties the map (apimachinery keeps it as `{}`; a map the patch deletes
    /// where there was none stays absent, see `merge_value`).
    fn merge_map(
        &mut self,
        original: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        match patch.get(PATCH) {
            None => self.merge_fields(original, patch),
            Some(directive) => match self.directive(directive)? {
                Directive::Replace => self.merge_fields(Map::new(), patch),
                Directive::Delete => Ok(Map::new()),
            },
        }
    }

    /// Merges the fields of `patch` (its `$patch` aside) into `original`, in this order:
    /// `$retainKeys`, then the fields (a list with `$setElementOrder/` ordered by it), then
    /// lists only reordered, then `$deleteFromPrimitiveList/` deletions.
    fn merge_fields(
        &mut self,
        mut original: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut retain: Option<&'p [Value]> = None;
        let mut orders: BTreeMap<&'p str, &'p [Value]> = BTreeMap::new();
        let mut deletions: Vec<(&'p str, &'p [Value])> = Vec::new();
        for (key, value) in patch {
            if !key.starts_with('$') || key == PATCH {
                continue;
            }
            if key == RETAIN_KEYS {
                retain = Some(self.directive_list(key, value)?);
            } else if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
                let field = self.directive_field(key, field)?;
                orders.insert(field, self.directive_list(key, value)?);
            } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                let field = self.directive_field(key, field)?;
                deletions.push((field, self.directive_list(key, value)?));
            } else {
                return Err(PatchError::UnknownDirective {
                    at: self.child_location(key),
                    key: key.clone(),
                });
            }
        }

        if let Some(names) = retain {
            let mut kept: HashSet<&str> = HashSet::with_capacity(names.len());
            for name in names {
                let Some(name) = name.as_str() else {
                    return Err(PatchError::BadDirective {
                        at: self.child_location(RETAIN_KEYS),
                        directive: RETAIN_KEYS.to_owned(),
                        expected: "a list of field names",
                    });
                };
                kept.insert(name);
            }
            let unnamed = patch.iter().find(|(key, value)| {
                !key.starts_with('$') && !value.is_null() && !kept.contains(key.as_str())
            });
            if let Some((field, _)) = unnamed {
                return Err(PatchError::RetainKeysOmitsField {
                    at: self.child_location(RETAIN_KEYS),
                    field: field.clone(),
                });
            }
            original.retain(|key, _| kept.contains(key.as_str()));
        }

        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            let current = original.remove(key);
            let order = orders.get(key.as_str()).copied();
            self.at.push(Step::Field(key.as_str()));
            let merged = self.merge_value(current, value, order);
            self.at.pop();
            if let Some(merged) = merged? {
                original.insert(key.clone(), merged);
            }
        }

        for (&field, &order) in &orders {
            if patch.contains_key(field) {
                continue;
            }
            if let Some(Value::Array(items)) = original.get_mut(field) {
                self.at.push(Step::Field(field));
                let ordered = self.reorder(std::mem::take(items), order);
                self.at.pop();
                *items = ordered?;
            }
        }

        for (field, doomed) in deletions {
            if let Some(Value::Array(items)) = original.get_mut(field) {
                let doomed: HashSet<String> = doomed.iter().map(token).collect();
                items.retain(|item| !doomed.contains(&token(item)));
            }
        }
        Ok(original)
    }

    /// The merge of one field's patch value into its current value (`None`: absent).
    /// `Ok(None)` leaves the field absent.
    fn merge_value(
        &mut self,
        current: Option<Value>,
        patch: &'p Value,
        order: Option<&'p [Value]>,
    ) -> Result<Option<Value>> {
        match patch {
            Value::Object(fields) => {
                let original = match current {
                    Some(Value::Object(original)) => original,
                    // Nothing to merge into: the patch's map stands alone, its directives
                    // applied to nothing, and a map it deletes stays absent.
                    _ => {
                        let directive = fields
                            .get(PATCH)
                            .map(|directive| self.directive(directive))
                            .transpose()?;
                        if directive == Some(Directive::Delete) {
                            return Ok(None);
                        }
                        Map::new()
                    }
                };
                Ok(Some(Value::Object(self.merge_map(original, fields)?)))
            }
            Value::Array(items) => {
                let original = match current {
                    Some(Value::Array(original)) => original,
                    _ => Vec::new(),
                };
                Ok(Some(Value::Array(self.merge_list(original, items, order)?)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }

    fn merge_list(
        &mut self,
        original: Vec<Value>,
        patch: &'p [Value],
        order: Option<&'p [Value]>,
    ) -> Result<Vec<Value>> {
        match self.list_merge_here() {
            None => self.replace_list(patch),
            Some(ListMerge::Set) => self.merge_set(original, patch, order),
            Some(ListMerge::ByKey(key)) => self.merge_by_key(original, patch, key, order),
        }
    }

    /// A list without merge key: the patch's list, directives applied to nothing. An element
    /// carrying `$patch` (a list-level `replace`, or a `delete`) is dropped, as in apimachinery;
    /// a `$setElementOrder/` for such a list is ignored (the patch gives the order).
    fn replace_list(&mut self, patch: &'p [Value]) -> Result<Vec<Value>> {
        let mut items = Vec::with_capacity(patch.len());
        for (index, item) in patch.iter().enumerate() {
            self.at.push(Step::Index(index));
            let standing = match item.get(PATCH) {
                Some(directive) => self.directive(directive).map(|_| None),
                None => self.merge_value(None, item, None),
            };
            self.at.pop();
            if let Some(value) = standing? {
                items.push(value);
            }
        }
        Ok(items)
    }

    /// A list of values merged as a set: the union, each value once. An element
    /// `{"$patch": "replace"}` makes the patch's values the whole list.
    fn merge_set(
        &mut self,
        original: Vec<Value>,
        patch: &'p [Value],
        order: Option<&'p [Value]>,
    ) -> Result<Vec<Value>> {
        let mut replace = false;
        let mut additions: Vec<&'p Value> = Vec::with_capacity(patch.len());
        for (index, item) in patch.iter().enumerate() {
            match item {
                Value::Object(fields) => {
                    let Some(directive) = fields.get(PATCH) else {
                        return Err(PatchError::ElementNotValue {
                            at: self.element_location(index),
                        });
                    };
                    self.at.push(Step::Index(index));
                    let directive = self.directive(directive);
                    self.at.pop();
                    match directive? {
                        Directive::Replace => replace = true,
                        Directive::Delete => {
                            return Err(PatchError::DeleteInValueList {
                                at: self.element_location(index),
                            });
                        }
                    }
                }
                Value::Array(_) => {
                    return Err(PatchError::ElementNotValue {
                        at: self.element_location(index),
                    });
                }
                value => additions.push(value),
            }
        }

        let mut seen = HashSet::new();
        let mut placed = Vec::with_capacity(original.len() + additions.len());
        if !replace {
            for (index, value) in original.into_iter().enumerate() {
                if seen.insert(token(&value)) {
                    placed.push(Placed {
                        value,
                        live: Some(index),
                    });
                }
            }
        }
        for &value in &additions {
            if seen.insert(token(value)) {
                placed.push(Placed {
                    value: value.clone(),
                    live: None,
                });
            }
        }
        let patch_ids: Vec<String> = additions.iter().copied().map(token).collect();
        let rank = match order {
            Some(order) => self.order_rank(order, &patch_ids, None)?,
            None => first_positions(patch_ids),
        };
        Ok(arrange(placed, &rank, None))
    }

    /// A list of objects merged on `key`: a patch element updates the element with the same
    /// key (the first, if the live list repeats it) or is added; `{"$patch": "delete", key: v}`
    /// removes every element with that key; an element `{"$patch": "replace"}` makes the
    /// patch's elements the whole list.
    fn merge_by_key(
        &mut self,
        original: Vec<Value>,
        patch: &'p [Value],
        key: &'static str,
        order: Option<&'p [Value]>,
    ) -> Result<Vec<Value>> {
        let mut replace = false;
        let mut doomed: HashSet<String> = HashSet::new();
        let mut updates: Vec<(usize, &'p Map<String, Value>)> = Vec::with_capacity(patch.len());
        for (index, item) in patch.iter().enumerate() {
            let Value::Object(fields) = item else {
                return Err(PatchError::ElementNotObject {
                    at: self.element_location(index),
                    key,
                });
            };
            let Some(directive) = fields.get(PATCH) else {
                updates.push((index, fields));
                continue;
            };
            self.at.push(Step::Index(index));
            let directive = self.directive(directive);
            self.at.pop();
            match directive? {
                Directive::Replace => replace = true,
                Directive::Delete => {
                    let id = fields.get(key).ok_or_else(|| PatchError::MissingMergeKey {
                        at: self.element_location(index),
                        key,
                    })?;
                    doomed.insert(token(id));
                }
            }
        }

        let mut patch_ids = Vec::with_capacity(updates.len());
        for &(index, fields) in &updates {
            match fields.get(key) {
                Some(id) => patch_ids.push(token(id)),
                None if replace => {}
                None => {
                    return Err(PatchError::MissingMergeKey {
                        at: self.element_location(index),
                        key,
                    });
                }
            }
        }

        let mut placed: Vec<Placed> = if replace {
            Vec::new()
        } else {
            original
                .into_iter()
                .enumerate()
                .filter(|(_, value)| {
                    identity(value, Some(key)).is_none_or(|id| !doomed.contains(&id))
                })
                .map(|(index, value)| Placed {
                    value,
                    live: Some(index),
                })
                .collect()
        };
        let mut slots: HashMap<String, usize> = HashMap::with_capacity(placed.len());
        for (slot, entry) in placed.iter().enumerate() {
            if let Some(id) = identity(&entry.value, Some(key)) {
                slots.entry(id).or_insert(slot);
            }
        }
        for (index, fields) in updates {
            let id = fields.get(key).map(token);
            let slot = id.as_ref().and_then(|id| slots.get(id).copied());
            let current = match slot.and_then(|slot| placed.get_mut(slot)) {
                Some(entry) => match std::mem::take(&mut entry.value) {
                    Value::Object(current) => current,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            self.at.push(Step::Index(index));
            let merged = self.merge_map(current, fields);
            self.at.pop();
            let merged = Value::Object(merged?);
            match slot.and_then(|slot| placed.get_mut(slot)) {
                Some(entry) => entry.value = merged,
                None => {
                    if let Some(id) = id {
                        slots.insert(id, placed.len());
                    }
                    placed.push(Placed {
                        value: merged,
                        live: None,
                    });
                }
            }
        }

        let rank = match order {
            Some(order) => self.order_rank(order, &patch_ids, Some(key))?,
            None => first_positions(patch_ids),
        };
        Ok(arrange(placed, &rank, Some(key)))
    }

    /// A live list the patch only orders, with `$setElementOrder/` and no list of its own.
    fn reorder(&self, live: Vec<Value>, order: &[Value]) -> Result<Vec<Value>> {
        let key = match self.list_merge_here() {
            Some(ListMerge::ByKey(key)) => Some(key),
            Some(ListMerge::Set) => None,
            None => return Ok(live),
        };
        let rank = self.order_rank(order, &[], key)?;
        let placed = live
            .into_iter()
            .enumerate()
            .map(|(index, value)| Placed {
                value,
                live: Some(index),
            })
            .collect();
        Ok(arrange(placed, &rank, key))
    }

    /// The rank `$setElementOrder/<list>` gives each element it names, after checking, as
    /// apimachinery does, that the patch's own elements (`patch_ids`) appear in it in the
    /// same order.
    fn order_rank(
        &self,
        order: &[Value],
        patch_ids: &[String],
        key: Option<&str>,
    ) -> Result<HashMap<String, usize>> {
        let mut order_ids = Vec::with_capacity(order.len());
        for (index, item) in order.iter().enumerate() {
            let id = match (key, item) {
                (Some(key), Value::Object(fields)) => fields.get(key).map(token),
                (Some(_), _) | (None, Value::Object(_) | Value::Array(_)) => None,
                (None, value) => Some(token(value)),
            };
            let Some(id) = id else {
                return Err(PatchError::BadDirective {
                    at: self.order_location(Some(index)),
                    directive: format!("{SET_ELEMENT_ORDER}{}", self.list_field()),
                    expected: match key {
                        Some(_) => "a list of objects that carry the list's merge key",
                        None => "a list of strings, numbers or booleans",
                    },
                });
            };
            order_ids.push(id);
        }
        let mut matched = 0;
        for id in &order_ids {
            if patch_ids.get(matched) == Some(id) {
                matched += 1;
            }
        }
        // As apimachinery, an empty order checks nothing (and names nothing).
        if !order_ids.is_empty() && matched < patch_ids.len() {
            return Err(PatchError::ElementOrderMismatch {
                at: self.order_location(None),
            });
        }
        Ok(first_positions(order_ids))
    }

    fn directive(&self, value: &Value) -> Result<Directive> {
        match value.as_str() {
            Some("replace") => Ok(Directive::Replace),
            Some("delete") => Ok(Directive::Delete),
            _ => Err(PatchError::UnknownPatchDirective {
                at: self.child_location(PATCH),
                value: value.to_string(),
            }),
        }
    }

    fn directive_list(&self, key: &str, value: &'p Value) -> Result<&'p [Value]> {
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| PatchError::BadDirective {
                at: self.child_location(key),
                directive: key.to_owned(),
                expected: "a list",
            })
    }

    fn directive_field(&self, key: &str, field: &'p str) -> Result<&'p str> {
        if field.is_empty() {
            return Err(PatchError::BadDirective {
                at: self.child_location(key),
                directive: key.to_owned(),
                expected: "followed by a field name",
            });
        }
        Ok(field)
    }

    /// How the list at the current location merges.
    fn list_merge_here(&self) -> Option<ListMerge> {
        let fields: Vec<&str> = self
            .at
            .iter()
            .filter_map(|step| match step {
                Step::Field(name) => Some(*name),
                Step::Index(_) => None,
            })
            .collect();
        self.schema.list_merge(self.kind, &fields)
    }

    /// The field the current location ends in (the list being merged).
    fn list_field(&self) -> &'p str {
        match self.at.last() {
            Some(&Step::Field(field)) => field,
            _ => "",
        }
    }

    fn child_location(&self, name: &str) -> String {
        let mut location = render(&self.at);
        if !location.is_empty() {
            location.push('.');
        }
        location.push_str(name);
        location
    }

    fn element_location(&self, index: usize) -> String {
        format!("{}[{index}]", render(&self.at))
    }

    /// Where the current list's `$setElementOrder/` directive (or one of its elements) is.
    fn order_location(&self, index: Option<usize>) -> String {
        let parent: &[Step<'p>] = match self.at.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        };
        let mut location = render(parent);
        if !location.is_empty() {
            location.push('.');
        }
        location.push_str(SET_ELEMENT_ORDER);
        location.push_str(self.list_field());
        if let Some(index) = index {
            location.push_str(&format!("[{index}]"));
        }
        location
    }
}

/// A location in a patch as `spec.template.spec.containers[0].env`.
fn render(steps: &[Step<'_>]) -> String {
    let mut location = String::new();
    for step in steps {
        match step {
            Step::Field(name) => {
                if !location.is_empty() {
                    location.push('.');
                }
                location.push_str(name);
            }
            Step::Index(index) => location.push_str(&format!("[{index}]")),
        }
    }
    location
}

/// The order of a merged list. Elements the patch names (in `$setElementOrder/`, else in its
/// list) come in the patch's order; the others (server-only) keep their live order and are
/// woven in as apimachinery's `mergeSortedSlice` does: one goes before the next named element
/// if it stood before it in the live list. A named element that is new stands, for that
/// comparison, just before the next named element that is live (after every live element if
/// none is), so new elements are appended unless the order puts them before live ones.
fn arrange(placed: Vec<Placed>, rank: &HashMap<String, usize>, key: Option<&str>) -> Vec<Value> {
    let mut named: Vec<(usize, Placed)> = Vec::new();
    let mut unnamed: Vec<Placed> = Vec::new();
    for entry in placed {
        match identity(&entry.value, key).and_then(|id| rank.get(&id).copied()) {
            Some(position) => named.push((position, entry)),
            None => unnamed.push(entry),
        }
    }
    named.sort_by_key(|(position, _)| *position);
    unnamed.sort_by_key(|entry| entry.live.unwrap_or(usize::MAX));

    // (live index, is live): a new element sorts just before the live one it precedes.
    let mut anchored: Vec<(Value, (usize, bool))> = Vec::with_capacity(named.len());
    let mut next_live = usize::MAX;
    for (_, entry) in named.into_iter().rev() {
        let anchor = match entry.live {
            Some(live) => {
                next_live = live;
                (live, true)
            }
            None => (next_live, false),
        };
        anchored.push((entry.value, anchor));
    }
    anchored.reverse();

    let mut merged = Vec::with_capacity(anchored.len() + unnamed.len());
    let mut named = anchored.into_iter().peekable();
    let mut unnamed = unnamed.into_iter().peekable();
    loop {
        let take_unnamed = match (unnamed.peek(), named.peek()) {
            (Some(entry), Some((_, anchor))) => (entry.live.unwrap_or(usize::MAX), true) < *anchor,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_unnamed {
            unnamed.next().map(|entry| entry.value)
        } else {
            named.next().map(|(value, _)| value)
        };
        merged.extend(next);
    }
    merged
}

/// What identifies a list element: its merge key's value, or the value itself in a set.
fn identity(value: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(key) => value.get(key).map(token),
        None => Some(token(value)),
    }
}

/// The first position of each id.
fn first_positions(ids: Vec<String>) -> HashMap<String, usize> {
    let mut positions = HashMap::with_capacity(ids.len());
    for (position, id) in ids.into_iter().enumerate() {
        positions.entry(id).or_insert(position);
    }
    positions
}

/// A hashable stand-in for a JSON value, equal for values Kubernetes counts as equal: numbers
/// by value as Go's float64 compares them (`80` and `80.0` are one port).
fn token(value: &Value) -> String {
    match value {
        Value::String(text) => format!("s{text}"),
        Value::Number(number) => match number.as_f64() {
            Some(0.0) => "n0".to_owned(),
            Some(float) => format!("n{float}"),
            None => format!("n{number}"),
        },
        other => format!("j{other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON Patch

/// A parsed JSON Patch operation (its `path` aside).
enum Operation<'p> {
    Add { value: &'p Value },
    Remove,
    Replace { value: &'p Value },
    Move { from: &'p str },
    Copy { from: &'p str },
    Test { value: &'p Value },
}

impl Operation<'_> {
    fn name(&self) -> &'static str {
        match self {
            Operation::Add { .. } => "add",
            Operation::Remove => "remove",
            Operation::Replace { .. } => "replace",
            Operation::Move { .. } => "move",
            Operation::Copy { .. } => "copy",
            Operation::Test { .. } => "test",
        }
    }
}

/// Runs the operations of `patch` in order on a copy of `target`; the first that fails fails
/// the patch, so a patch applies whole or not at all.
fn apply_json_patch(target: &Value, patch: &Value) -> Result<Value> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::NotAnArray {
            found: json_type(patch),
        });
    };
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let mut document = target.clone();
    let mut limits = Limits {
        copy_budget: MAX_JSON_PATCH_COPIED_VALUES,
    };
    for (index, operation) in operations.iter().enumerate() {
        let (path, operation) = parse_operation(operation)
            .map_err(|problem| PatchError::BadOperation { index, problem })?;
        run_operation(&mut document, path, &operation, &mut limits).map_err(|problem| {
            PatchError::OperationFailed {
                index,
                op: operation.name(),
                path: path.to_owned(),
                problem,
            }
        })?;
    }
    Ok(document)
}

fn parse_operation(operation: &Value) -> Result<(&str, Operation<'_>), OperationSyntax> {
    let Value::Object(members) = operation else {
        return Err(OperationSyntax::NotAnObject);
    };
    let members = Members(members);
    let op = members.string("op")?;
    let path = members.string("path")?;
    let parsed = match op {
        "add" => Operation::Add {
            value: members.value()?,
        },
        "remove" => Operation::Remove,
        "replace" => Operation::Replace {
            value: members.value()?,
        },
        "move" => Operation::Move {
            from: members.string("from")?,
        },
        "copy" => Operation::Copy {
            from: members.string("from")?,
        },
        "test" => Operation::Test {
            value: members.value()?,
        },
        other => return Err(OperationSyntax::UnknownOp(other.to_owned())),
    };
    Ok((path, parsed))
}

/// The members of one JSON Patch operation.
struct Members<'v>(&'v Map<String, Value>);

impl<'v> Members<'v> {
    fn string(&self, name: &'static str) -> Result<&'v str, OperationSyntax> {
        match self.0.get(name) {
            Some(Value::String(text)) => Ok(text.as_str()),
            Some(_) => Err(OperationSyntax::NotAString(name)),
            None => Err(OperationSyntax::Missing(name)),
        }
    }

    fn value(&self) -> Result<&'v Value, OperationSyntax> {
        self.0.get("value").ok_or(OperationSyntax::Missing("value"))
    }
}

/// What the rest of a JSON Patch may still do. Every value placed is checked against
/// [`MAX_JSON_PATCH_DEPTH`]: values from the patch and copies are measured; a move can only
/// deepen what it moves by its change of path length, so only a move to a longer path is
/// measured (and charged to the copy budget).
struct Limits {
    copy_budget: usize,
}

impl Limits {
    /// Charges `value` to the copy budget; its depth.
    fn charge(&mut self, value: &Value) -> Result<usize, OperationFailure> {
        let (depth, size) = measure(value, self.copy_budget);
        if size > self.copy_budget {
            return Err(OperationFailure::CopyTooLarge(MAX_JSON_PATCH_COPIED_VALUES));
        }
        self.copy_budget -= size;
        Ok(depth)
    }

    /// Checks a value `depth` deep placed under `tokens`.
    fn place(tokens: &[String], depth: usize) -> Result<(), OperationFailure> {
        let depth = tokens.len().saturating_add(depth);
        if depth > MAX_JSON_PATCH_DEPTH {
            return Err(OperationFailure::TooDeep {
                depth,
                max: MAX_JSON_PATCH_DEPTH,
            });
        }
        Ok(())
    }
}

fn run_operation(
    document: &mut Value,
    path: &str,
    operation: &Operation<'_>,
    limits: &mut Limits,
) -> Result<(), OperationFailure> {
    let tokens = parse_pointer(path)?;
    match operation {
        Operation::Add { value } => {
            Limits::place(&tokens, measure(value, usize::MAX).0)?;
            add_at(document, &tokens, Value::clone(value))
        }
        Operation::Remove => remove_at(document, &tokens).map(|_removed| ()),
        Operation::Replace { value } => {
            Limits::place(&tokens, measure(value, usize::MAX).0)?;
            let slot = resolve_mut(document, &tokens).ok_or(OperationFailure::PathNotFound)?;
            *slot = Value::clone(value);
            Ok(())
        }
        Operation::Move { from } => {
            let from_tokens = parse_pointer(from)?;
            if from_tokens == tokens {
                return match resolve(document, &tokens) {
                    Some(_) => Ok(()),
                    None => Err(OperationFailure::FromNotFound((*from).to_owned())),
                };
            }
            if tokens.len() > from_tokens.len() && tokens.starts_with(&from_tokens) {
                return Err(OperationFailure::MoveIntoItself);
            }
            let moved = remove_at(document, &from_tokens)
                .map_err(|_| OperationFailure::FromNotFound((*from).to_owned()))?;
            if tokens.len() > from_tokens.len() {
                Limits::place(&tokens, limits.charge(&moved)?)?;
            }
            add_at(document, &tokens, moved)
        }
        Operation::Copy { from } => {
            let from_tokens = parse_pointer(from)?;
            let copied = resolve(document, &from_tokens)
                .ok_or_else(|| OperationFailure::FromNotFound((*from).to_owned()))?;
            Limits::place(&tokens, limits.charge(copied)?)?;
            let copied = copied.clone();
            add_at(document, &tokens, copied)
        }
        Operation::Test { value } => {
            let actual = resolve(document, &tokens).ok_or(OperationFailure::PathNotFound)?;
            if json_equal(actual, value) {
                Ok(())
            } else {
                Err(OperationFailure::TestFailed)
            }
        }
    }
}

/// The reference tokens of an RFC 6901 JSON pointer (`""` is the whole document).
fn parse_pointer(pointer: &str) -> Result<Vec<String>, OperationFailure> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(OperationFailure::BadPointer {
            pointer: pointer.to_owned(),
            reason: "it must be empty or start with \"/\"",
        });
    };
    rest.split('/')
        .map(|token| {
            unescape(token).ok_or_else(|| OperationFailure::BadPointer {
                pointer: pointer.to_owned(),
                reason: "\"~\" must be followed by 0 or 1",
            })
        })
        .collect()
}

fn unescape(token: &str) -> Option<String> {
    let mut unescaped = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => unescaped.push('~'),
                Some('1') => unescaped.push('/'),
                _ => return None,
            }
        } else {
            unescaped.push(c);
        }
    }
    Some(unescaped)
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn array_index(token: &str) -> Result<usize, OperationFailure> {
    let digits = !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return Err(OperationFailure::BadIndex(token.to_owned()));
    }
    token
        .parse()
        .map_err(|_| OperationFailure::BadIndex(token.to_owned()))
}

fn resolve<'d>(document: &'d Value, tokens: &[String]) -> Option<&'d Value> {
    tokens
        .iter()
        .try_fold(document, |current, token| match current {
            Value::Object(members) => members.get(token),
            Value::Array(items) => array_index(token).ok().and_then(|index| items.get(index)),
            _ => None,
        })
}

fn resolve_mut<'d>(document: &'d mut Value, tokens: &[String]) -> Option<&'d mut Value> {
    tokens
        .iter()
        .try_fold(document, |current, token| match current {
            Value::Object(members) => members.get_mut(token),
            Value::Array(items) => array_index(token)
                .ok()
                .and_then(move |index| items.get_mut(index)),
            _ => None,
        })
}

fn add_at(document: &mut Value, tokens: &[String], value: Value) -> Result<(), OperationFailure> {
    let Some((last, parent)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match resolve_mut(document, parent) {
        Some(Value::Object(members)) => {
            members.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index = array_index(last)?;
            if index > items.len() {
                return Err(OperationFailure::IndexOutOfRange {
                    index,
                    len: items.len(),
                });
            }
            items.insert(index, value);
            Ok(())
        }
        Some(_) => Err(OperationFailure::ParentNotContainer),
        None => Err(OperationFailure::PathNotFound),
    }
}

fn remove_at(document: &mut Value, tokens: &[String]) -> Result<Value, OperationFailure> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err(OperationFailure::RemoveRoot);
    };
    match resolve_mut(document, parent) {
        Some(Value::Object(members)) => members.remove(last).ok_or(OperationFailure::PathNotFound),
        Some(Value::Array(items)) => {
            let index = array_index(last)?;
            if index >= items.len() {
                return Err(OperationFailure::IndexOutOfRange {
                    index,
                    len: items.len(),
                });
            }
            Ok(items.remove(index))
        }
        _ => Err(OperationFailure::PathNotFound),
    }
}

/// How deep `value` nests (arrays and objects on its deepest path, itself included) and how
/// many JSON values it holds, without recursion; counting stops just past `limit` values.
fn measure(value: &Value, limit: usize) -> (usize, usize) {
    let (mut deepest, mut count) = (0, 0);
    let mut pending = vec![(value, 0)];
    while let Some((next, depth)) = pending.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match next {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                pending.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(members) => {
                deepest = deepest.max(depth + 1);
                pending.extend(members.values().map(|member| (member, depth + 1)));
            }
            _ => {}
        }
    }
    (deepest, count)
}

/// RFC 6902 equality: numbers by value (`2` equals `2.0`), objects regardless of member order.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => numbers_equal(left, right),
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(l, r)| json_equal(l, r))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, l)| right.get(key).is_some_and(|r| json_equal(l, r)))
        }
        _ => left == right,
    }
}

fn numbers_equal(left: &Number, right: &Number) -> bool {
    if let (Some(left), Some(right)) = (left.as_i64(), right.as_i64()) {
        return left == right;
    }
    if let (Some(left), Some(right)) = (left.as_u64(), right.as_u64()) {
        return left == right;
    }
    match (left.as_f64(), right.as_f64()) {
        (Some(left), Some(right)) => left == right,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The patch kubectl apply sent after the image and env var B changed and env var A was
    /// removed (KUBERNETES-API.md §8), byte for byte.
    const KUBECTL_APPLY_PATCH: &str = r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"api"}],"containers":[{"$setElementOrder/env":[{"name":"B"}],"env":[{"name":"B","value":"2"},{"$patch":"delete","name":"A"}],"image":"nginx:1.21","name":"api"}]}}}}"#;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "api",
                "namespace": "default",
                "annotations": {"deployment.kubernetes.io/revision": "2"},
                "finalizers": ["example.com/a", "example.com/b"]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "api"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
                },
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {
                        "containers": [{
                            "name": "api",
                            "image": "nginx:1.20",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]
                        }],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            },
            "status": {
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "True"}
                ]
            }
        })
    }

    fn pod(containers: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": containers}
        })
    }

    /// `object` with the value at `pointer` replaced.
    fn with(mut object: Value, pointer: &str, value: Value) -> Value {
        *object
            .pointer_mut(pointer)
            .expect("the fixture has this path") = value;
        object
    }

    fn patched(kind: &str, target: &Value, patch_type: PatchType, patch: &Value) -> Value {
        apply(kind, target, patch_type, patch.to_string().as_bytes())
            .unwrap_or_else(|error| panic!("the patch applies: {error}"))
    }

    fn strategic(kind: &str, target: &Value, patch: &Value) -> Value {
        patched(kind, target, PatchType::StrategicMerge, patch)
    }

    fn refused(kind: &str, target: &Value, patch_type: PatchType, patch: &str) -> PatchError {
        match apply(kind, target, patch_type, patch.as_bytes()) {
            Ok(result) => panic!("the patch was accepted: {result}"),
            Err(error) => error,
        }
    }

    /// The `name` of each element of the list at `pointer` (the element itself for strings).
    fn names(object: &Value, pointer: &str) -> Vec<String> {
        object
            .pointer(pointer)
            .and_then(Value::as_array)
            .expect("a list at the pointer")
            .iter()
            .map(|item| {
                let name = item.get("name").unwrap_or(item);
                name.as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[test]
    fn content_types_name_the_patch_type_with_parameters_ignored() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                Some(PatchType::StrategicMerge),
            ),
            ("Application/JSON-Patch+JSON", Some(PatchType::Json)),
            ("application/apply-patch+yaml", None),
            ("application/json", None),
            ("", None),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                PatchType::from_content_type(content_type),
                expected,
                "{content_type}"
            );
        }
        for patch_type in PatchType::ALL {
            assert_eq!(
                PatchType::from_content_type(patch_type.content_type()),
                Some(patch_type)
            );
        }
    }

    #[test]
    fn kubectl_apply_patch_changes_image_and_env_and_keeps_the_other_container_fields() {
        let result = apply(
            "Deployment",
            &deployment(),
            PatchType::StrategicMerge,
            KUBECTL_APPLY_PATCH.as_bytes(),
        )
        .expect("kubectl's patch applies");
        let expected = with(
            deployment(),
            "/spec/template/spec/containers/0",
            json!({
                "name": "api",
                "image": "nginx:1.21",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "B", "value": "2"}]
            }),
        );
        assert_eq!(result, expected);

        // The same body as a JSON merge patch replaces the containers list: ports are lost.
        let merged = apply(
            "Deployment",
            &deployment(),
            PatchType::Merge,
            KUBECTL_APPLY_PATCH.as_bytes(),
        )
        .expect("it is a valid merge patch too");
        assert!(merged
            .pointer("/spec/template/spec/containers/0/ports")
            .is_none());
    }

    #[test]
    fn rollout_restart_adds_the_annotation_to_the_pod_template() {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"
        }}}}});
        let expected = with(
            deployment(),
            "/spec/template/metadata",
            json!({
                "labels": {"app": "api"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"}
            }),
        );
        assert_eq!(strategic("Deployment", &deployment(), &patch), expected);
    }

    #[test]
    fn scale_merge_patch_sets_the_replicas() {
        let result = patched(
            "Deployment",
            &deployment(),
            PatchType::Merge,
            &json!({"spec": {"replicas": 5}}),
        );
        assert_eq!(result, with(deployment(), "/spec/replicas", json!(5)));
    }

    #[test]
    fn rollout_undo_json_patch_replaces_the_template_and_the_annotations() {
        let template = json!({
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "nginx:1.19"}]}
        });
        let annotations = json!({"deployment.kubernetes.io/revision": "1"});
        let patch = json!([
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations}
        ]);
        let result = patched("Deployment", &deployment(), PatchType::Json, &patch);
        let expected = with(
            with(deployment(), "/spec/template", template),
            "/metadata/annotations",
            annotations,
        );
        assert_eq!(result, expected);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
                ]
            }
        });
        let patch = json!({"spec": {"ports": [
            {"port": 443, "targetPort": 9443},
            {"port": 9090, "name": "metrics"}
        ]}});
        let result = strategic("Service", &service, &patch);
        assert_eq!(
            result.pointer("/spec/ports"),
            Some(&json!([
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"},
                {"name": "metrics", "port": 9090}
            ]))
        );

        // Merge keys compare as numbers: 80.0 is port 80.
        let renamed = strategic(
            "Service",
            &service,
            &json!({"spec": {"ports": [{"port": 80.0, "name": "web"}]}}),
        );
        assert_eq!(names(&renamed, "/spec/ports"), ["web", "https"]);
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let owned = with(
            pod(json!([{"name": "c", "image": "busybox"}])),
            "/metadata",
            json!({
                "name": "p",
                "ownerReferences": [
                    {"uid": "u1", "kind": "ReplicaSet", "name": "a", "controller": true},
                    {"uid": "u2", "kind": "ReplicaSet", "name": "b"}
                ]
            }),
        );
        let patch = json!({"metadata": {"ownerReferences": [
            {"uid": "u2", "blockOwnerDeletion": true},
            {"$patch": "delete", "uid": "u1"},
            {"uid": "u3", "kind": "Deployment", "name": "c"}
        ]}});
        let result = strategic("Pod", &owned, &patch);
        assert_eq!(
            result.pointer("/metadata/ownerReferences"),
            Some(&json!([
                {"uid": "u2", "kind": "ReplicaSet", "name": "b", "blockOwnerDeletion": true},
                {"uid": "u3", "kind": "Deployment", "name": "c"}
            ]))
        );
    }

    #[test]
    fn maps_merge_and_null_deletes_a_key() {
        let patch = json!({
            "metadata": {"labels": {"tier": "web"}, "annotations": null},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}, "paused": {"a": null, "b": 1}}
        });
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/metadata/labels"),
            Some(&json!({"tier": "web"}))
        );
        assert!(result.pointer("/metadata/annotations").is_none());
        assert_eq!(
            result.pointer("/spec/selector/matchLabels"),
            Some(&json!({"app": "api", "tier": "web"}))
        );
        // A null inside a map that did not exist is not kept.
        assert_eq!(result.pointer("/spec/paused"), Some(&json!({"b": 1})));
        assert_eq!(result.pointer("/spec/replicas"), Some(&json!(2)));
    }

    #[test]
    fn keyed_lists_update_the_matching_element_and_append_new_ones_in_patch_order() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "api",
            "env": [{"name": "A", "value": "9"}, {"name": "C"}, {"name": "D"}]
        }]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/spec/template/spec/containers/0/env"),
            Some(&json!([
                {"name": "A", "value": "9"},
                {"name": "B", "value": "1"},
                {"name": "C"},
                {"name": "D"}
            ]))
        );
        assert_eq!(
            result.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("nginx:1.20"))
        );
    }

    #[test]
    fn keyed_lists_take_the_patch_order_for_the_elements_it_names() {
        // apimachinery's "preserve the order from the patch in a merging list 2": the element
        // the patch does not name stays before the one it preceded.
        let target = pod(json!([{"name": "c1"}, {"name": "c2", "v": 2}, {"name": "c3"}]));
        let patch = json!({"spec": {"containers": [{"name": "c3", "v": 3}, {"name": "c1"}]}});
        let result = strategic("Pod", &target, &patch);
        assert_eq!(names(&result, "/spec/containers"), ["c2", "c3", "c1"]);
        assert_eq!(result.pointer("/spec/containers/0/v"), Some(&json!(2)));
        assert_eq!(result.pointer("/spec/containers/1/v"), Some(&json!(3)));
    }

    #[test]
    fn delete_directive_removes_every_element_with_that_key() {
        let target = pod(json!([
            {"name": "a"}, {"name": "b"}, {"name": "a", "image": "dup"}
        ]));
        let patch = json!({"spec": {"containers": [{"$patch": "delete", "name": "a"}]}});
        let result = strategic("Pod", &target, &patch);
        assert_eq!(
            result.pointer("/spec/containers"),
            Some(&json!([{"name": "b"}]))
        );
    }

    #[test]
    fn replace_directive_in_a_list_replaces_the_list() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"},
            {"name": "web", "image": "httpd"}
        ]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/spec/template/spec/containers"),
            Some(&json!([{"name": "web", "image": "httpd"}]))
        );

        let finalizers = json!({"metadata": {"finalizers": [{"$patch": "replace"}, "x"]}});
        let result = strategic("Deployment", &deployment(), &finalizers);
        assert_eq!(result.pointer("/metadata/finalizers"), Some(&json!(["x"])));
    }

    #[test]
    fn replace_directive_on_a_map_keeps_only_the_patch_fields() {
        let patch = json!({"spec": {"selector": {
            "$patch": "replace",
            "matchLabels": {"tier": "web"}
        }}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/spec/selector"),
            Some(&json!({"matchLabels": {"tier": "web"}}))
        );
    }

    #[test]
    fn delete_directive_on_a_map_empties_it_and_adds_nothing_where_there_was_none() {
        let patch = json!({"spec": {
            "strategy": {"$patch": "delete"},
            "paused": {"$patch": "delete"}
        }});
        let result = strategic("Deployment", &deployment(), &patch);
        // As apimachinery: the deleted map is left as {}.
        assert_eq!(result.pointer("/spec/strategy"), Some(&json!({})));
        assert!(result.pointer("/spec/paused").is_none());
    }

    #[test]
    fn set_element_order_orders_named_elements_and_keeps_server_only_ones_in_place() {
        // apimachinery's "set elements order in a list with server-only items 2".
        let target = pod(json!([
            {"name": "c1", "other": "a"},
            {"name": "c2", "value": 2},
            {"name": "c9"},
            {"name": "c3", "value": 3},
            {"name": "c4", "value": 4}
        ]));
        let patch = json!({"spec": {"$setElementOrder/containers": [
            {"name": "c2"}, {"name": "c1"}, {"name": "c4"}, {"name": "c3"}
        ]}});
        let result = strategic("Pod", &target, &patch);
        assert_eq!(
            names(&result, "/spec/containers"),
            ["c2", "c1", "c9", "c4", "c3"]
        );
        assert_eq!(
            result.pointer("/spec/containers/1/other"),
            Some(&json!("a"))
        );
    }

    #[test]
    fn set_element_order_places_added_elements_among_server_only_ones() {
        // apimachinery's "add map and delete map from merging list".
        let target = pod(json!([
            {"name": "c1"},
            {"name": "c2", "other": "b"},
            {"name": "c4", "other": "c"}
        ]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "c2"}, {"name": "c3"}],
            "containers": [{"name": "c3", "image": "x"}, {"$patch": "delete", "name": "c1"}]
        }});
        let result = strategic("Pod", &target, &patch);
        assert_eq!(names(&result, "/spec/containers"), ["c2", "c4", "c3"]);

        // apimachinery's "add an item in a list of primitives and preserve order".
        let target = with(
            deployment(),
            "/metadata/finalizers",
            json!(["f1", "f4", "f2"]),
        );
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["f3", "f1", "f2"],
            "finalizers": ["f3"]
        }});
        let result = strategic("Deployment", &target, &patch);
        assert_eq!(
            names(&result, "/metadata/finalizers"),
            ["f3", "f1", "f4", "f2"]
        );
    }

    #[test]
    fn set_element_order_must_name_the_patch_elements_in_the_patch_order() {
        let target = pod(json!([{"name": "c1"}, {"name": "c3"}, {"name": "c2"}]));
        let patch = r#"{"spec": {
            "$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}, {"name": "c3"}],
            "containers": [{"name": "c3", "image": "x"}, {"name": "c1", "image": "y"}]
        }}"#;
        let error = refused("Pod", &target, PatchType::StrategicMerge, patch);
        assert!(
            matches!(error, PatchError::ElementOrderMismatch { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "strategic merge patch, at spec.$setElementOrder/containers: it must name every \
             element the patch gives for the list, in the patch's order"
        );
    }

    #[test]
    fn retain_keys_drops_the_fields_it_does_not_name() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/spec/strategy"),
            Some(&json!({"type": "Recreate"}))
        );

        // A field the patch deletes need not be named.
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null
        }}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/spec/strategy"),
            Some(&json!({"type": "Recreate"}))
        );

        let patch = r#"{"spec": {"strategy": {
            "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 2}
        }}}"#;
        let error = refused(
            "Deployment",
            &deployment(),
            PatchType::StrategicMerge,
            patch,
        );
        assert!(
            matches!(
                &error,
                PatchError::RetainKeysOmitsField { at, field }
                    if at == "spec.strategy.$retainKeys" && field == "rollingUpdate"
            ),
            "{error:?}"
        );
    }

    #[test]
    fn delete_from_primitive_list_removes_the_values() {
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["example.com/a", "example.com/absent"],
            "finalizers": ["example.com/c"]
        }});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/metadata/finalizers"),
            Some(&json!(["example.com/b", "example.com/c"]))
        );

        // Deleting from a list that is not there adds nothing.
        let patch = json!({"spec": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert!(result.pointer("/spec/finalizers").is_none());
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let patch = json!({"metadata": {"finalizers": ["example.com/b", "example.com/c"]}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/metadata/finalizers"),
            Some(&json!(["example.com/a", "example.com/b", "example.com/c"]))
        );
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "containers": [{"name": "api", "args": ["--two"]}]
        }}}});
        let mut target = deployment();
        target["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--one", "--verbose"]);
        let result = strategic("Deployment", &target, &patch);
        assert_eq!(
            result.pointer("/spec/template/spec/tolerations"),
            Some(&json!([{"key": "b", "operator": "Exists"}]))
        );
        assert_eq!(
            result.pointer("/spec/template/spec/containers/0/args"),
            Some(&json!(["--two"]))
        );

        let endpoints = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]
        });
        let patch = json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]});
        let result = strategic("Endpoints", &endpoints, &patch);
        assert_eq!(
            result.pointer("/subsets"),
            Some(&json!([{"addresses": [{"ip": "10.0.0.2"}]}]))
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let patch = json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result.pointer("/status/conditions"),
            Some(&json!([
                {"type": "Available", "status": "False"},
                {"type": "Progressing", "status": "True"}
            ]))
        );
    }

    #[test]
    fn unknown_directives_are_refused_with_their_location() {
        let target = deployment();
        let error = refused(
            "Deployment",
            &target,
            PatchType::StrategicMerge,
            r#"{"spec": {"$bogus": 1}}"#,
        );
        assert!(
            matches!(&error, PatchError::UnknownDirective { at, key }
                if at == "spec.$bogus" && key == "$bogus"),
            "{error:?}"
        );

        let error = refused(
            "Deployment",
            &target,
            PatchType::StrategicMerge,
            r#"{"spec": {"$setElementOrder": []}}"#,
        );
        assert!(
            matches!(error, PatchError::UnknownDirective { .. }),
            "{error:?}"
        );

        let error = refused(
            "Deployment",
            &target,
            PatchType::StrategicMerge,
            r#"{"spec": {"selector": {"$patch": "merge"}}}"#,
        );
        assert_eq!(
            error.to_string(),
            "strategic merge patch, at spec.selector.$patch: unknown $patch value \"merge\"; \
             expected \"replace\" or \"delete\""
        );

        let error = refused(
            "Deployment",
            &target,
            PatchType::StrategicMerge,
            r#"{"spec": {"template": {"spec": {"containers": [{"name": "api", "$patch": 1}]}}}}"#,
        );
        assert!(
            matches!(&error, PatchError::UnknownPatchDirective { at, value }
                if at == "spec.template.spec.containers[0].$patch" && value == "1"),
            "{error:?}"
        );
    }

    #[test]
    fn directives_of_the_wrong_type_are_refused() {
        let target = deployment();
        let cases = [
            (
                r#"{"spec": {"template": {"spec": {"$setElementOrder/containers": {}}}}}"#,
                "spec.template.spec.$setElementOrder/containers",
            ),
            (
                r#"{"spec": {"template": {"spec": {"$setElementOrder/containers": ["api"]}}}}"#,
                "spec.template.spec.$setElementOrder/containers[0]",
            ),
            (
                r#"{"metadata": {"$setElementOrder/finalizers": [{"name": "x"}]}}"#,
                "metadata.$setElementOrder/finalizers[0]",
            ),
            (
                r#"{"spec": {"strategy": {"$retainKeys": "type"}}}"#,
                "spec.strategy.$retainKeys",
            ),
            (
                r#"{"spec": {"strategy": {"$retainKeys": [1]}}}"#,
                "spec.strategy.$retainKeys",
            ),
            (
                r#"{"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}"#,
                "metadata.$deleteFromPrimitiveList/finalizers",
            ),
            (
                r#"{"metadata": {"$deleteFromPrimitiveList/": []}}"#,
                "metadata.$deleteFromPrimitiveList/",
            ),
        ];
        for (patch, location) in cases {
            let error = refused("Deployment", &target, PatchType::StrategicMerge, patch);
            assert!(
                matches!(&error, PatchError::BadDirective { at, .. } if at == location),
                "{patch}: {error:?}"
            );
        }
    }

    #[test]
    fn list_elements_must_fit_the_list() {
        let target = deployment();
        let error = refused(
            "Deployment",
            &target,
            PatchType::StrategicMerge,
            r#"{"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}"#,
        );
        assert_eq!(
            error.to_string(),
            "strategic merge patch, at spec.template.spec.containers[0]: the element has no \
             \"name\", the merge key of this list"
        );

        let cases = [
            r#"{"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}"#,
            r#"{"spec": {"template": {"spec": {"containers": ["api"]}}}}"#,
            r#"{"metadata": {"finalizers": [{"name": "x"}]}}"#,
            r#"{"metadata": {"finalizers": [["x"]]}}"#,
            r#"{"metadata": {"finalizers": [{"$patch": "delete"}]}}"#,
        ];
        let expected: [fn(&PatchError) -> bool; 5] = [
            |error| matches!(error, PatchError::MissingMergeKey { key: "name", .. }),
            |error| matches!(error, PatchError::ElementNotObject { key: "name", .. }),
            |error| matches!(error, PatchError::ElementNotValue { .. }),
            |error| matches!(error, PatchError::ElementNotValue { .. }),
            |error| matches!(error, PatchError::DeleteInValueList { .. }),
        ];
        for (patch, expected) in cases.into_iter().zip(expected) {
            let error = refused("Deployment", &target, PatchType::StrategicMerge, patch);
            assert!(expected(&error), "{patch}: {error:?}");
        }
    }

    #[test]
    fn malformed_json_is_refused_with_its_line_and_column() {
        for patch_type in PatchType::ALL {
            let error = refused("Deployment", &deployment(), patch_type, "{\n  \"spec\": }");
            assert!(matches!(error, PatchError::Malformed { .. }), "{error:?}");
            assert!(error.to_string().contains("line 2 column 11"), "{error}");
        }
        let error = refused("Deployment", &deployment(), PatchType::Merge, "");
        assert!(error.to_string().contains("line 1 column 0"), "{error}");
    }

    #[test]
    fn patches_of_the_wrong_shape_are_refused() {
        let target = deployment();
        let error = refused("Deployment", &target, PatchType::StrategicMerge, "[1]");
        assert_eq!(
            error.to_string(),
            "a strategic merge patch must be a JSON object, not an array"
        );
        let error = refused("Deployment", &target, PatchType::Merge, "\"x\"");
        assert_eq!(
            error.to_string(),
            "a JSON merge patch must be a JSON object, not a string"
        );
        let error = refused("Deployment", &target, PatchType::Json, "{}");
        assert_eq!(
            error.to_string(),
            "a JSON patch must be a JSON array of operations, not an object"
        );
        let error = refused("Deployment", &json!([1]), PatchType::Merge, "{}");
        assert!(matches!(error, PatchError::TargetNotObject), "{error:?}");
        let error = refused(
            "Deployment",
            &target,
            PatchType::Json,
            r#"[{"op": "replace", "path": "", "value": 5}]"#,
        );
        assert!(
            matches!(
                error,
                PatchError::ResultNotObject {
                    found: "a number",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn deep_nesting_is_refused_or_merged_without_overflow() {
        let too_deep = format!("{{\"spec\":{}}}", nested(300));
        for patch_type in [PatchType::Merge, PatchType::StrategicMerge] {
            let error = refused("Deployment", &deployment(), patch_type, &too_deep);
            assert!(error.to_string().contains("recursion limit"), "{error}");
        }
        let deep = format!("{{\"spec\":{}}}", nested(120));
        let pointer = format!("/spec{}", "/a".repeat(120));
        for patch_type in [PatchType::Merge, PatchType::StrategicMerge] {
            let result = apply("Deployment", &deployment(), patch_type, deep.as_bytes())
                .expect("nesting within the limit merges");
            assert_eq!(result.pointer(&pointer), Some(&json!(1)));
        }
    }

    #[test]
    fn json_patch_runs_every_operation_in_order() {
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 2.0},
            {"op": "add", "path": "/metadata/labels", "value": {"tier": "web"}},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "C"}},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/0", "value": {"name": "Z"}},
            {"op": "remove", "path": "/spec/template/spec/tolerations"},
            {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata/labels"},
            {
                "op": "move",
                "from": "/metadata/annotations/deployment.kubernetes.io~1revision",
                "path": "/metadata/annotations/old~0revision"
            },
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {
                "op": "test",
                "path": "/metadata/finalizers",
                "value": ["example.com/a", "example.com/b"]
            }
        ]);
        let result = patched("Deployment", &deployment(), PatchType::Json, &patch);
        assert_eq!(
            names(&result, "/spec/template/spec/containers/0/env"),
            ["Z", "A", "B", "C"]
        );
        assert_eq!(
            result.pointer("/metadata/labels"),
            Some(&json!({"tier": "web"}))
        );
        assert_eq!(
            result.pointer("/spec/template/metadata/labels"),
            Some(&json!({"tier": "web"}))
        );
        assert_eq!(
            result.pointer("/metadata/annotations"),
            Some(&json!({"old~revision": "2"}))
        );
        assert!(result.pointer("/spec/template/spec/tolerations").is_none());
        assert_eq!(result.pointer("/spec/replicas"), Some(&json!(4)));
    }

    #[test]
    fn json_patch_errors_name_the_operation_and_its_path() {
        let target = deployment();
        let error = refused(
            "Deployment",
            &target,
            PatchType::Json,
            r#"[
                {"op": "test", "path": "/spec/replicas", "value": 2},
                {"op": "add", "path": "/metadata/labels", "value": {}},
                {"op": "replace", "path": "/spec/replicaz", "value": 3}
            ]"#,
        );
        assert_eq!(
            error.to_string(),
            "patch op 2 (replace /spec/replicaz): path not found"
        );

        type Check = (&'static str, fn(&OperationFailure) -> bool);
        let failures: [Check; 9] = [
            (
                r#"{"op": "test", "path": "/spec/replicas", "value": 3}"#,
                |problem| matches!(problem, OperationFailure::TestFailed),
            ),
            (
                r#"{"op": "add", "path": "spec/replicas", "value": 3}"#,
                |problem| matches!(problem, OperationFailure::BadPointer { .. }),
            ),
            (
                r#"{"op": "add", "path": "/metadata/a~2b", "value": 3}"#,
                |problem| matches!(problem, OperationFailure::BadPointer { .. }),
            ),
            (
                r#"{"op": "add", "path": "/spec/template/spec/containers/5", "value": {}}"#,
                |problem| {
                    matches!(
                        problem,
                        OperationFailure::IndexOutOfRange { index: 5, len: 1 }
                    )
                },
            ),
            (
                r#"{"op": "remove", "path": "/spec/template/spec/containers/01"}"#,
                |problem| matches!(problem, OperationFailure::BadIndex(index) if index == "01"),
            ),
            (r#"{"op": "remove", "path": ""}"#, |problem| {
                matches!(problem, OperationFailure::RemoveRoot)
            }),
            (
                r#"{"op": "move", "from": "/spec", "path": "/spec/template/old"}"#,
                |problem| matches!(problem, OperationFailure::MoveIntoItself),
            ),
            (
                r#"{"op": "copy", "from": "/x", "path": "/spec/other"}"#,
                |problem| matches!(problem, OperationFailure::FromNotFound(from) if from == "/x"),
            ),
            (
                r#"{"op": "add", "path": "/spec/replicas/x", "value": 1}"#,
                |problem| matches!(problem, OperationFailure::ParentNotContainer),
            ),
        ];
        for (operation, expected) in failures {
            let error = refused(
                "Deployment",
                &target,
                PatchType::Json,
                &format!("[{operation}]"),
            );
            match &error {
                PatchError::OperationFailed {
                    index: 0, problem, ..
                } if expected(problem) => {}
                other => panic!("{operation}: {other:?}"),
            }
        }

        type SyntaxCheck = (&'static str, fn(&OperationSyntax) -> bool);
        let syntax: [SyntaxCheck; 5] = [
            ("1", |problem| {
                matches!(problem, OperationSyntax::NotAnObject)
            }),
            (r#"{"op": "add", "path": "/x"}"#, |problem| {
                matches!(problem, OperationSyntax::Missing("value"))
            }),
            (
                r#"{"op": "frobnicate", "path": "/x"}"#,
                |problem| matches!(problem, OperationSyntax::UnknownOp(op) if op == "frobnicate"),
            ),
            (r#"{"path": "/x", "value": 1}"#, |problem| {
                matches!(problem, OperationSyntax::Missing("op"))
            }),
            (r#"{"op": "move", "path": "/x", "from": 7}"#, |problem| {
                matches!(problem, OperationSyntax::NotAString("from"))
            }),
        ];
        for (operation, expected) in syntax {
            let body = format!(r#"[{{"op": "test", "path": "", "value": {{}}}}, {operation}]"#);
            let error = refused("Deployment", &json!({}), PatchType::Json, &body);
            match &error {
                PatchError::BadOperation { index: 1, problem } if expected(problem) => {}
                other => panic!("{operation}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_patch_size_and_depth_are_bounded() {
        let test = json!({"op": "test", "path": "/kind", "value": "Deployment"});
        let many = Value::Array(vec![test; MAX_JSON_PATCH_OPERATIONS + 1]);
        let error = refused(
            "Deployment",
            &deployment(),
            PatchType::Json,
            &many.to_string(),
        );
        assert!(
            matches!(
                error,
                PatchError::TooManyOperations {
                    count: 10_001,
                    max: 10_000
                }
            ),
            "{error:?}"
        );

        // Each copy of the object into a new member of itself doubles it; the budget stops
        // that after a dozen copies.
        let doubling: Vec<Value> = (0..40)
            .map(|n| json!({"op": "copy", "from": "", "path": format!("/copy{n}")}))
            .collect();
        let doubling = Value::Array(doubling);
        let error = refused(
            "Deployment",
            &deployment(),
            PatchType::Json,
            &doubling.to_string(),
        );
        assert!(
            matches!(
                error,
                PatchError::OperationFailed {
                    problem: OperationFailure::CopyTooLarge(_),
                    ..
                }
            ),
            "{error:?}"
        );

        // Operations of constant size that nest a value one level deeper each round stop at
        // the depth limit, rather than build an object nothing can recurse through.
        let round = [
            json!({"op": "add", "path": "/w", "value": {}}),
            json!({"op": "move", "from": "/x", "path": "/w/x"}),
            json!({"op": "move", "from": "/w", "path": "/x"}),
        ];
        let deepening: Vec<Value> = round.iter().cycle().take(3 * 200).cloned().collect();
        let body = Value::Array(deepening).to_string();
        let error = refused("Widget", &json!({"x": {}}), PatchType::Json, &body);
        assert!(
            matches!(
                error,
                PatchError::OperationFailed {
                    problem: OperationFailure::TooDeep { max: 128, .. },
                    ..
                }
            ),
            "{error:?}"
        );
        // The same rounds, fewer of them, are fine.
        let shallow: Vec<Value> = round.iter().cycle().take(3 * 20).cloned().collect();
        let result = patched(
            "Widget",
            &json!({"x": {}}),
            PatchType::Json,
            &Value::Array(shallow),
        );
        assert_eq!(
            result.pointer(&format!("{}/x", "/x".repeat(20))),
            Some(&json!({}))
        );
    }

    #[test]
    fn json_merge_patch_follows_rfc_7386() {
        let patch = json!({
            "metadata": {"labels": {"tier": "web"}, "annotations": null},
            "spec": {"template": {"spec": {"containers": [{"name": "api"}]}}}
        });
        let result = patched("Deployment", &deployment(), PatchType::Merge, &patch);
        assert_eq!(
            result.pointer("/metadata/labels"),
            Some(&json!({"tier": "web"}))
        );
        assert!(result.pointer("/metadata/annotations").is_none());
        // Lists are replaced whole, merge keys or not.
        assert_eq!(
            result.pointer("/spec/template/spec/containers"),
            Some(&json!([{"name": "api"}]))
        );
    }

    #[test]
    fn merge_keys_cover_skiffs_kinds_and_every_pod_spec() {
        let by = |key| Some(ListMerge::ByKey(key));
        let cases: [(&str, &[&str], Option<ListMerge>); 21] = [
            ("Pod", &["spec", "containers"], by("name")),
            (
                "Pod",
                &["spec", "ephemeralContainers", "volumeDevices"],
                by("devicePath"),
            ),
            ("Pod", &["status", "podIPs"], by("ip")),
            (
                "Deployment",
                &["spec", "template", "spec", "containers", "env"],
                by("name"),
            ),
            (
                "ReplicaSet",
                &["spec", "template", "spec", "containers", "ports"],
                by("containerPort"),
            ),
            (
                "StatefulSet",
                &["spec", "template", "spec", "volumes"],
                by("name"),
            ),
            (
                "DaemonSet",
                &["spec", "template", "spec", "imagePullSecrets"],
                by("name"),
            ),
            (
                "Job",
                &["spec", "template", "spec", "hostAliases"],
                by("ip"),
            ),
            (
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "initContainers",
                    "volumeMounts",
                ],
                by("mountPath"),
            ),
            ("Service", &["spec", "ports"], by("port")),
            ("Node", &["status", "addresses"], by("type")),
            ("Node", &["spec", "podCIDRs"], Some(ListMerge::Set)),
            ("Secret", &["metadata", "ownerReferences"], by("uid")),
            (
                "Namespace",
                &["metadata", "finalizers"],
                Some(ListMerge::Set),
            ),
            ("Namespace", &["status", "conditions"], by("type")),
            ("Pod", &["spec", "tolerations"], None),
            ("Pod", &["spec", "containers", "args"], None),
            ("Endpoints", &["subsets"], None),
            ("Pod", &["spec", "ports"], None),
            ("Deployment", &["spec", "containers"], None),
            ("Namespace", &["spec", "finalizers"], None),
        ];
        for (kind, path, expected) in cases {
            assert_eq!(merge_key(kind, path), expected, "{kind} {path:?}");
        }
    }

    #[test]
    fn another_schema_can_supply_the_merge_keys() {
        struct ItemsById;
        impl ListMergeSchema for ItemsById {
            fn list_merge(&self, _kind: &str, path: &[&str]) -> Option<ListMerge> {
                (path == ["spec", "items"]).then_some(ListMerge::ByKey("id"))
            }
        }
        let target = json!({"spec": {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}});
        let patch = br#"{"spec": {"items": [{"id": 2, "v": "c"}]}}"#;
        let merged = apply_with_schema(
            &ItemsById,
            "Widget",
            &target,
            PatchType::StrategicMerge,
            patch,
        )
        .expect("the patch applies");
        assert_eq!(
            merged.pointer("/spec/items"),
            Some(&json!([{"id": 1, "v": "a"}, {"id": 2, "v": "c"}]))
        );
        let replaced =
            apply("Widget", &target, PatchType::StrategicMerge, patch).expect("the patch applies");
        assert_eq!(
            replaced.pointer("/spec/items"),
            Some(&json!([{"id": 2, "v": "c"}]))
        );
    }

    /// A tiny deterministic generator (Knuth's MMIX LCG), so the test needs no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % bound.max(1) as u64) as usize
        }
    }

    const FUZZ_BYTES: &[u8] = br#"{}[]",:$/-~0123456789 anulltrue"#;

    fn mutate_bytes(body: &mut Vec<u8>, rng: &mut Lcg) {
        let at = rng.below(body.len() + 1);
        let byte = FUZZ_BYTES[rng.below(FUZZ_BYTES.len())];
        match rng.below(3) {
            0 if at < body.len() => body[at] = byte,
            1 if at < body.len() => {
                body.remove(at);
            }
            _ => body.insert(at, byte),
        }
    }

    fn mutate_value(value: &mut Value, rng: &mut Lcg, depth: usize) {
        let replacements = [
            json!(null),
            json!([]),
            json!({}),
            json!("x"),
            json!(7),
            json!({"$patch": "delete"}),
            json!({"$patch": "replace", "name": "api"}),
            json!({"$patch": "bogus"}),
            json!([{"name": "A"}, {"$patch": "delete", "name": "api"}, {"$patch": "replace"}]),
            json!(["f", {"$patch": "replace"}]),
            json!({"$retainKeys": ["name", "image"], "name": "api"}),
            json!({"$setElementOrder/env": [{"name": "B"}, {"name": "A"}], "env": [{"name": "A"}]}),
            json!({"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}),
            json!({"op": "move", "from": "/spec", "path": "/metadata/x"}),
        ];
        let descend = depth < 16 && rng.below(4) != 0;
        match value {
            Value::Object(fields) if descend && !fields.is_empty() => {
                let index = rng.below(fields.len());
                if let Some(child) = fields.values_mut().nth(index) {
                    mutate_value(child, rng, depth + 1);
                }
            }
            Value::Array(items) if descend && !items.is_empty() => {
                let index = rng.below(items.len());
                mutate_value(&mut items[index], rng, depth + 1);
            }
            Value::Object(fields) if rng.below(2) == 0 => {
                let key = ["spec", "$patch", "env", "containers", "finalizers"][rng.below(5)];
                fields.insert(
                    key.to_owned(),
                    replacements[rng.below(replacements.len())].clone(),
                );
            }
            _ => *value = replacements[rng.below(replacements.len())].clone(),
        }
    }

    #[test]
    fn random_and_mutated_patches_never_panic() {
        let target = deployment();
        let seeds: [Value; 5] = [
            serde_json::from_str(KUBECTL_APPLY_PATCH).expect("valid JSON"),
            json!({"spec": {"replicas": 3, "template": {"metadata": {"annotations": {"a": "b"}}}}}),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["example.com/b", "x"],
                "finalizers": ["x"]
            }}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!([
                {"op": "replace", "path": "/spec/template", "value": {"spec": {}}},
                {"op": "copy", "from": "/spec", "path": "/status/copy"},
                {"op": "test", "path": "/spec/replicas", "value": 2}
            ]),
        ];
        let mut rng = Lcg(0x5eed);
        let (mut accepted, mut rejected) = (0, 0);
        for round in 0..2000 {
            let seed = &seeds[rng.below(seeds.len())];
            let body: Vec<u8> = match round % 3 {
                0 => (0..rng.below(48))
                    .map(|_| FUZZ_BYTES[rng.below(FUZZ_BYTES.len())])
                    .collect(),
                1 => {
                    let mut body = seed.to_string().into_bytes();
                    for _ in 0..=rng.below(3) {
                        mutate_bytes(&mut body, &mut rng);
                    }
                    body
                }
                _ => {
                    let mut value = seed.clone();
                    for _ in 0..=rng.below(3) {
                        mutate_value(&mut value, &mut rng, 0);
                    }
                    value.to_string().into_bytes()
                }
            };
            for patch_type in PatchType::ALL {
                match apply("Deployment", &target, patch_type, &body) {
                    Ok(result) => {
                        assert!(result.is_object());
                        accepted += 1;
                    }
                    Err(error) => {
                        assert!(!error.to_string().is_empty());
                        rejected += 1;
                    }
                }
            }
        }
        // Both outcomes were exercised, so the inputs reached the merge code and its errors.
        assert!(
            accepted > 100 && rejected > 100,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}
