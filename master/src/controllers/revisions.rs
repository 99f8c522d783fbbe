//! The history of a DaemonSet or a StatefulSet, kept as Kubernetes keeps
//! it: one ControllerRevision per pod template the workload has had, named
//! `<workload>-<hash>`, numbered in `revision` (the highest is the current
//! template, so going back to an older template renumbers its revision),
//! holding in `data` the strategic merge patch that puts that template
//! back (`{"spec":{"template":{..., "$patch":"replace"}}}`: what `kubectl
//! rollout undo` sends), labelled with the template's labels (so the
//! workload's selector finds it) and with `controller-revision-hash:
//! <hash>`, the label its pods carry too (a StatefulSet's pods carry the
//! revision's name there, as Kubernetes does). Old revisions are kept up
//! to `revisionHistoryLimit`, and always while a pod still runs them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

use super::Context;
use skiff_objects::generic;
use skiff_objects::owners::{controller_of, controller_reference};
use skiff_objects::{IntoObject, Kind, ObjectExt};

/// The label that ties a revision and its pods to one template.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// What kubectl records of the last `apply`: not copied to revisions.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One ControllerRevision of a workload, as its controller reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub name: String,
    pub revision: i64,
    /// Its `controller-revision-hash` label (its name when it has none, as
    /// Kubernetes labels such a revision).
    pub hash: String,
    pub data: Value,
}

impl Revision {
    /// Reads a ControllerRevision.
    pub fn read(object: &v1::GenericObject) -> Revision {
        let meta = object.metadata.clone().unwrap_or_default();
        let mut content = generic::content(object);
        let hash = match meta.labels.get(REVISION_HASH_LABEL) {
            Some(hash) => hash.clone(),
            None => meta.name.clone(),
        };
        Revision {
            name: meta.name,
            revision: content.get("revision").and_then(Value::as_i64).unwrap_or(0),
            hash,
            data: content.remove("data").unwrap_or(Value::Null),
        }
    }
}

/// The `data` of the revision that records `template` (`spec.template` as
/// stored): the patch that puts it back.
pub fn revision_data(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(fields) = template.as_object_mut() {
        fields.insert("$patch".to_owned(), Value::from("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Kubernetes' `ComputeHash`: FNV-1a (32 bits) of the template (its JSON,
/// keys in order), then of the collision count when there is one (eight
/// bytes, little-endian), written as its decimal digits mapped onto the
/// alphabet of generated names.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        feed(&bytes);
    }
    let digits = hash.to_string();
    digits
        .bytes()
        .map(|digit| ALPHABET[usize::from(digit) % ALPHABET.len()] as char)
        .collect()
}

/// A workload's revisions, sorted out against its current template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The revision that records the current template (the highest
    /// numbered one, if several do).
    pub current: Option<Revision>,
    /// Other revisions of the current template: deleted.
    pub duplicates: Vec<Revision>,
    /// Revisions of other templates, lowest number first.
    pub old: Vec<Revision>,
}

impl History {
    /// Sorts `revisions` by whether they record `data` (the current
    /// template's [`revision_data`]).
    pub fn sort(revisions: Vec<Revision>, data: &Value) -> History {
        let (mut current, mut old): (Vec<Revision>, Vec<Revision>) =
            revisions.into_iter().partition(|r| r.data == *data);
        current.sort_by_key(|r| std::cmp::Reverse(r.revision));
        old.sort_by_key(|r| r.revision);
        let mut current = current.into_iter();
        History {
            current: current.next(),
            duplicates: current.collect(),
            old,
        }
    }

    /// The number the current template's revision should have: above every
    /// old one.
    pub fn next_revision(&self) -> i64 {
        self.old.iter().map(|r| r.revision).max().unwrap_or(0) + 1
    }

    /// The old revisions to delete so that at most `limit` are left, lowest
    /// number first, never one a pod (by its hash in `live`) still runs.
    pub fn to_prune(&self, limit: usize, live: &BTreeSet<String>) -> Vec<String> {
        let mut excess = self.old.len().saturating_sub(limit);
        let mut doomed = Vec::new();
        for revision in &self.old {
            if excess == 0 {
                break;
            }
            if live.contains(&revision.hash) {
                continue;
            }
            doomed.push(revision.name.clone());
            excess -= 1;
        }
        doomed
    }
}

/// The ControllerRevisions `owner` (a workload of `kind`) controls, by
/// name, from the owner index.
pub fn owned_revisions(
    ctx: &Context,
    owner: &Object,
    kind: Kind,
) -> HashMap<String, v1::GenericObject> {
    let meta = owner.meta();
    let mut stored = HashMap::new();
    for dependent in ctx.store.dependents_of(&meta.uid) {
        let controller = controller_of(&dependent, kind);
        let ours = controller.is_some_and(|r| r.uid == meta.uid);
        let revision = dependent.kind().ok() == Some(Kind::ControllerRevision);
        if let (true, true, Some(Body::Generic(g))) = (ours, revision, &dependent.kind) {
            stored.insert(dependent.meta().name.clone(), g.clone());
        }
    }
    stored
}

/// The ControllerRevision that records the current template of
/// `workload` as number `revision`: its template's `labels` and the
/// hash label, the workload's annotations (`kubernetes.io/change-cause`
/// for `kubectl rollout history`) but kubectl's last applied
/// configuration, the workload as its controller.
pub fn new_revision(
    workload: &Object,
    labels: &BTreeMap<String, String>,
    hash: &str,
    revision: i64,
    data: Value,
) -> Object {
    let meta = workload.meta();
    let mut labels = labels.clone();
    labels.insert(REVISION_HASH_LABEL.to_owned(), hash.to_owned());
    let mut annotations = meta.annotations.clone();
    annotations.remove(LAST_APPLIED);
    let mut content = Map::new();
    content.insert("data".to_owned(), data);
    content.insert("revision".to_owned(), Value::from(revision));
    let kind = Kind::ControllerRevision;
    let mut object = v1::GenericObject {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: format!("{}-{hash}", meta.name),
            namespace: meta.namespace.clone(),
            labels,
            annotations,
            owner_references: controller_reference(workload).into_iter().collect(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    generic::set_content(&mut object, &content);
    object.into_object()
}

/// `stored` (a ControllerRevision) renumbered as `revision`.
pub fn renumbered(stored: &v1::GenericObject, revision: i64) -> Object {
    let mut object = stored.clone();
    let mut content = generic::content(&object);
    content.insert("revision".to_owned(), Value::from(revision));
    generic::set_content(&mut object, &content);
    object.into_object()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::RecordingObjects;

    const DAEMON_SET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  annotations:
    kubernetes.io/change-cause: first
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: "agent:1"}]}
"#;

    fn revision(name: &str, number: i64, data: Value) -> Revision {
        Revision {
            name: name.to_owned(),
            revision: number,
            hash: name.trim_start_matches("ds-").to_owned(),
            data,
        }
    }

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "agent"}},
               "spec": {"containers": [{"name": "a", "image": image}]}})
    }

    #[test]
    fn the_data_is_the_patch_that_puts_the_template_back() {
        let data = revision_data(&template("agent:1"));
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let image = &data["spec"]["template"]["spec"]["containers"][0]["image"];
        assert_eq!(image, "agent:1");
        assert_eq!(data.as_object().map(Map::len), Some(1), "spec only");
    }

    #[test]
    fn hashes_are_stable_follow_the_template_and_the_collision_count() {
        let one = template_hash(&template("agent:1"), None);
        assert_eq!(one, template_hash(&template("agent:1"), None));
        assert!(!one.is_empty() && one.len() <= 10, "{one}");
        let alphabet = "bcdfghjklmnpqrstvwxz2456789";
        assert!(one.chars().all(|c| alphabet.contains(c)), "{one}");
        assert_ne!(one, template_hash(&template("agent:2"), None));
        let collided = template_hash(&template("agent:1"), Some(1));
        assert_ne!(one, collided);
        assert_ne!(collided, template_hash(&template("agent:1"), Some(2)));
    }

    #[test]
    fn the_current_template_is_found_among_the_revisions_and_numbered_above_the_rest() {
        let (first, second) = (template("agent:1"), template("agent:2"));
        let revisions = vec![
            revision("ds-a", 1, revision_data(&first)),
            revision("ds-b", 2, revision_data(&second)),
            revision("ds-c", 3, revision_data(&first)),
        ];
        // Back at agent:1: its revision is the current one, old is agent:2.
        let history = History::sort(revisions.clone(), &revision_data(&first));
        let current = history.current.clone().expect("current");
        assert_eq!(current.name, "ds-c", "the highest of the duplicates");
        assert_eq!(history.duplicates.len(), 1);
        assert_eq!(history.duplicates[0].name, "ds-a");
        assert_eq!(history.old.len(), 1);
        // 3 is the current one's number already.
        assert_eq!(history.next_revision(), 3);

        let history = History::sort(revisions, &revision_data(&second));
        assert_eq!(history.current.as_ref().map(|r| r.revision), Some(2));
        assert_eq!(history.next_revision(), 4, "agent:2 becomes revision 4");

        let none = History::sort(Vec::new(), &revision_data(&first));
        assert_eq!(none.current, None);
        assert_eq!(none.next_revision(), 1);
    }

    #[test]
    fn pruning_keeps_the_limit_and_every_revision_a_pod_still_runs() {
        let old: Vec<Revision> = (1..=5)
            .map(|n| revision(&format!("ds-{n}"), n, json!(n)))
            .collect();
        let history = History {
            old,
            ..History::default()
        };
        let none = BTreeSet::new();
        assert_eq!(history.to_prune(3, &none), ["ds-1", "ds-2"]);
        assert_eq!(history.to_prune(5, &none), Vec::<String>::new());
        let live: BTreeSet<String> = ["1".to_owned()].into();
        assert_eq!(history.to_prune(3, &live), ["ds-2", "ds-3"]);
        assert_eq!(history.to_prune(0, &live).len(), 4);
    }

    #[test]
    fn a_new_revision_is_labelled_owned_and_numbered() {
        let objects = RecordingObjects::new();
        let daemon_set = objects.seed_yaml(DAEMON_SET).remove(0);
        let labels: BTreeMap<String, String> = [("app".to_owned(), "agent".to_owned())].into();
        let data = revision_data(&template("agent:1"));
        let object = new_revision(&daemon_set, &labels, "h4sh", 3, data.clone());
        let meta = object.meta();
        assert_eq!(meta.name, "agent-h4sh");
        assert_eq!(meta.labels[REVISION_HASH_LABEL], "h4sh");
        assert_eq!(meta.labels["app"], "agent");
        assert_eq!(meta.annotations["kubernetes.io/change-cause"], "first");
        assert!(!meta.annotations.contains_key(LAST_APPLIED));
        let owner = &meta.owner_references[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DaemonSet", Some(true))
        );
        assert_eq!(object.kind().ok(), Some(Kind::ControllerRevision));
        let Some(Body::Generic(stored)) = &object.kind else {
            panic!("not generic: {object:?}");
        };
        let read = Revision::read(stored);
        assert_eq!((read.revision, read.hash.as_str()), (3, "h4sh"));
        assert_eq!(read.data, data);
        let Some(Body::Generic(again)) = renumbered(stored, 7).kind else {
            panic!("not generic");
        };
        assert_eq!(Revision::read(&again).revision, 7);
    }
}
