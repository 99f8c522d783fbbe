//! Which pods a workload controller (ReplicaSet, DaemonSet, StatefulSet)
//! counts as its own, as Kubernetes' `PodControllerRefManager.ClaimPods`
//! decides it from ControllerRefs (the owner reference with `controller:
//! true`): a pod it controls and still matches stays its own; one it
//! controls but no longer matches (relabelled out of the selector) is
//! released, its reference removed, and keeps running unowned; an orphan
//! it matches is adopted, given its reference. Pods being deleted are
//! neither adopted nor released; pods controlled by another are left
//! alone. The candidates come from the cache's indexes (the owner's
//! dependents and the pods its selector may select), so a claim costs what
//! the controller has, not its namespace.

use std::collections::HashSet;

use skiff_proto::api::Object;
use skiff_proto::v1;

use super::{Context, ReconcileError};
use skiff_objects::deletion::is_being_deleted;
use skiff_objects::owners::{self, controller_of, controller_reference};
use skiff_objects::pods::{self, StoredPod};
use skiff_objects::{selector, Kind, ObjectExt};

/// What, beyond its selector, decides which pods a controller claims.
pub struct ClaimRules<'a> {
    /// The pods it looks at at all (a ReplicaSet's: active ones); the rest
    /// are neither claimed, adopted nor released.
    pub considers: &'a (dyn Fn(&StoredPod) -> bool + Sync),
    /// What a pod's metadata needs, besides the selector's labels, to match
    /// (a StatefulSet's: named as a member; a ReplicaSet's: a selector that
    /// is not empty).
    pub matches: &'a (dyn Fn(&v1::ObjectMeta) -> bool + Sync),
    /// What a matching orphan that is not being deleted needs to be
    /// adopted (a DaemonSet's: bound to a node).
    pub adoptable: &'a (dyn Fn(&StoredPod) -> bool + Sync),
}

impl<'a> ClaimRules<'a> {
    /// Every pod looked at, the selector alone matching, every matching
    /// orphan adoptable.
    pub fn selector_only() -> ClaimRules<'a> {
        ClaimRules {
            considers: &any_pod,
            matches: &any_meta,
            adoptable: &any_pod,
        }
    }
}

fn any_pod(_: &StoredPod) -> bool {
    true
}

fn any_meta(_: &v1::ObjectMeta) -> bool {
    true
}

/// The pods `owner` (a workload controller, not being deleted) claims
/// with `selector` under `rules`: those it controls and matches, and the
/// orphans it adopts (as written); those it releases are written without
/// its reference. In the order the indexes give them: its dependents
/// first, then the selected pods by name.
pub async fn claim_pods(
    ctx: &Context,
    owner: &Object,
    selector: &v1::LabelSelector,
    rules: &ClaimRules<'_>,
) -> Result<Vec<StoredPod>, ReconcileError> {
    let meta = owner.meta();
    let mut candidates = ctx.store.dependents_of(&meta.uid);
    candidates.extend(
        ctx.store
            .selector_candidates(Kind::Pod, &meta.namespace, selector)?,
    );
    let mut seen = HashSet::new();
    let mut owned = Vec::new();
    for candidate in candidates {
        // Owned pods are among both; each is looked at once.
        if !pods::is_pod(&candidate) || !seen.insert(candidate.meta().name.clone()) {
            continue;
        }
        // Decided from the metadata first: a pod that is not to be kept,
        // let go or adopted is not read.
        let pod_meta = candidate.meta();
        let matching = selector::matches(selector, &pod_meta.labels) && (rules.matches)(pod_meta);
        let leaving = is_being_deleted(pod_meta);
        let claim = match owners::controller(pod_meta) {
            Some(r) if r.uid == meta.uid && matching => Claim::Keep,
            Some(r) if r.uid == meta.uid && !leaving => Claim::Release,
            None if matching && !leaving => Claim::Adopt,
            _ => continue,
        };
        let Some(pod) = StoredPod::read(candidate) else {
            continue;
        };
        if !(rules.considers)(&pod) {
            continue;
        }
        match claim {
            Claim::Keep => owned.push(pod),
            Claim::Release => {
                // Relabelled out of the selector: let go.
                write_meta(ctx, &pod, |m| {
                    m.owner_references.retain(|r| r.uid != meta.uid)
                })
                .await?;
            }
            Claim::Adopt if (rules.adoptable)(&pod) => {
                let reference = controller_reference(owner);
                let adopted = write_meta(ctx, &pod, |m| m.owner_references.extend(reference));
                owned.push(adopted.await?);
            }
            Claim::Adopt => {}
        }
    }
    Ok(owned)
}

/// What a claim does with one pod.
enum Claim {
    Keep,
    Release,
    Adopt,
}

/// The pods `owner` (of `kind`) controls now, from the owner index; no
/// adoption, no release.
pub fn owned_pods(ctx: &Context, owner: &Object, kind: Kind) -> Vec<StoredPod> {
    let uid = &owner.meta().uid;
    let dependents = ctx.store.dependents_of(uid);
    dependents
        .into_iter()
        .filter(|o| controller_of(o, kind).is_some_and(|r| r.uid == *uid))
        .filter_map(StoredPod::read)
        .collect()
}

/// Writes `change` to a pod's metadata, conditional on its
/// resourceVersion; answers the pod as written.
async fn write_meta(
    ctx: &Context,
    pod: &StoredPod,
    change: impl FnOnce(&mut v1::ObjectMeta),
) -> Result<StoredPod, ReconcileError> {
    let mut object = Object::clone(&pod.object);
    change(
        object
            .meta_mut()
            .map_err(|_| ReconcileError::WrongKind { kind: "Pod" })?,
    );
    let written = ctx.writer.update(object).await?;
    StoredPod::read(written).ok_or(ReconcileError::WrongKind { kind: "Pod" })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects};
    use crate::controllers::ObjectReads;
    use skiff_objects::IntoObject;

    const OWNER: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "web:1"}]}
"#;

    /// A pod labelled `app: <app>`, controlled by `owner` if given, bound
    /// to `node` (`""`: unbound).
    fn pod(name: &str, app: &str, owner: Option<&Object>, node: &str) -> Object {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_owned(), app.to_owned())].into(),
                owner_references: owner.and_then(controller_reference).into_iter().collect(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn names(pods: &[StoredPod]) -> Vec<String> {
        pods.iter().map(|p| p.meta().name.clone()).collect()
    }

    fn controller_uid(objects: &RecordingObjects, name: &str) -> Option<String> {
        let object = objects.get(Kind::Pod, "default", name).unwrap().unwrap();
        let meta = object.meta();
        owners::controller(meta).map(|r| r.uid.clone())
    }

    fn setup() -> (Arc<RecordingObjects>, Object, v1::LabelSelector) {
        let objects = RecordingObjects::new();
        let owner = objects.seed_yaml(OWNER).remove(0);
        let selector = v1::LabelSelector {
            match_labels: [("app".to_owned(), "web".to_owned())].into(),
            match_expressions: Vec::new(),
        };
        (objects, owner, selector)
    }

    #[tokio::test]
    async fn owned_pods_stay_relabelled_ones_go_and_orphans_are_adopted() {
        let (objects, owner, selector) = setup();
        objects.seed(pod("mine", "web", Some(&owner), "n1"));
        objects.seed(pod("moved", "db", Some(&owner), "n1"));
        objects.seed(pod("orphan", "web", None, "n1"));
        objects.seed(pod("stranger", "db", None, "n1"));
        let ctx = context(&objects);
        let rules = ClaimRules::selector_only();
        let claimed = claim_pods(&ctx, &owner, &selector, &rules).await.unwrap();
        assert_eq!(names(&claimed), ["mine", "orphan"]);
        let uid = Some(owner.meta().uid.clone());
        assert_eq!(controller_uid(&objects, "orphan"), uid);
        assert_eq!(controller_uid(&objects, "moved"), None, "released");
        assert_eq!(controller_uid(&objects, "stranger"), None);
        let owned = owned_pods(&ctx, &owner, Kind::ReplicaSet);
        assert_eq!(names(&owned), ["mine", "orphan"]);

        // Level-triggered: a second claim writes nothing.
        objects.clear_writes();
        let again = claim_pods(&ctx, &owner, &selector, &rules).await.unwrap();
        assert_eq!(names(&again), ["mine", "orphan"]);
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }

    #[tokio::test]
    async fn rules_hold_pods_back_and_pods_of_others_or_being_deleted_are_left() {
        let (objects, owner, selector) = setup();
        let other = objects
            .seed_yaml(&OWNER.replace("{name: web}", "{name: other}"))
            .remove(0);
        objects.seed(pod("theirs", "web", Some(&other), "n1"));
        objects.seed(pod("unbound", "web", None, ""));
        let mut leaving = pod("leaving", "web", None, "n1");
        if let Ok(meta) = leaving.meta_mut() {
            meta.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        }
        objects.seed(leaving);
        let ctx = context(&objects);

        // A DaemonSet's rule: only bound orphans are adopted.
        let bound = |pod: &StoredPod| !skiff_objects::pods::node_name(&pod.pod).is_empty();
        let rules = ClaimRules {
            adoptable: &bound,
            ..ClaimRules::selector_only()
        };
        let claimed = claim_pods(&ctx, &owner, &selector, &rules).await.unwrap();
        assert!(claimed.is_empty(), "{:?}", names(&claimed));
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
        let theirs = controller_uid(&objects, "theirs");
        assert_eq!(theirs, Some(other.meta().uid.clone()));

        // A StatefulSet's rule: only pods named as members match.
        let named = |meta: &v1::ObjectMeta| meta.name.starts_with("web-");
        let rules = ClaimRules {
            matches: &named,
            ..ClaimRules::selector_only()
        };
        objects.seed(pod("web-0", "web", None, "n1"));
        let claimed = claim_pods(&ctx, &owner, &selector, &rules).await.unwrap();
        assert_eq!(names(&claimed), ["web-0"]);
        assert_eq!(controller_uid(&objects, "unbound"), None);

        // A ReplicaSet's rule: only active pods are looked at.
        let active = |pod: &StoredPod| !is_being_deleted(pod.meta());
        let rules = ClaimRules {
            considers: &active,
            ..ClaimRules::selector_only()
        };
        let claimed = claim_pods(&ctx, &owner, &selector, &rules).await.unwrap();
        // Its own first (from the owner index), then the selected ones.
        assert_eq!(names(&claimed), ["web-0", "unbound"]);
        assert_eq!(controller_uid(&objects, "leaving"), None);
    }
}
