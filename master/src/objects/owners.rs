//! Owner references: which object controls another. The ReplicaSet and
//! Deployment controllers set them; the garbage collector and adoption
//! follow them.

use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Kind, ObjectExt};

/// The controlling owner of an object, if it is of `kind`.
pub fn controller_of(object: &Object, kind: Kind) -> Option<&v1::OwnerReference> {
    object
        .meta()
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == kind.name())
}

/// An owner reference that makes `owner` the controller of a dependent.
pub fn controller_reference(owner: &Object) -> Option<v1::OwnerReference> {
    let kind = owner.kind().ok()?;
    let meta = owner.meta();
    Some(v1::OwnerReference {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}
