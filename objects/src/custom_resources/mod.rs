//! Custom resources: what a CustomResourceDefinition says and how objects
//! of the kind it defines are checked, pure functions of JSON. The kinds
//! themselves (their identity, and which definitions are served) are the
//! registry's (`objects::registry::custom`).
//!
//! - [`definition`]: a CRD read into a [`Definition`], and the checks made
//!   of a CRD before it is stored;
//! - [`schema`]: structural schemas: pruning, defaults, validation;
//! - [`naming`]: whose names are accepted, and a CRD's status;
//! - [`json_path`]: the JSONPath of printer columns and scale paths.
//!
//! An object of a custom kind is written as kube-apiserver writes one:
//! [`prune_and_default`] (by the schema of the object's version), then
//! [`validate`]; the writer stores it at the storage version (conversion
//! `None`: only `apiVersion` changes).

pub mod definition;
pub mod json_path;
pub mod naming;
pub mod schema;

use serde_json::Value;

pub use definition::{Definition, Version, CLEANUP_FINALIZER, GROUP};
pub use schema::Problem;

/// Drops what `version`'s schema does not specify from `object` (the whole
/// object as JSON) and sets its defaults. Answers the paths of the unknown
/// fields dropped.
pub fn prune_and_default(version: &Version, object: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Some(schema) = &version.schema {
        schema.prune(object, "", &mut pruned);
        schema.apply_defaults(object);
    }
    pruned
}

/// Every problem `object` (the whole object as JSON) has by `version`'s
/// schema.
pub fn validate(version: &Version, object: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(schema) = &version.schema {
        schema.validate(object, "", &mut problems);
    }
    problems
}

/// The version named by an `apiVersion` of `definition`'s group
/// (`example.com/v1` → `v1`), if the definition has it.
pub fn version_of<'d>(definition: &'d Definition, api_version: &str) -> Option<&'d Version> {
    let (group, version) = api_version.split_once('/')?;
    (group == definition.group)
        .then(|| definition.version(version))
        .flatten()
}
