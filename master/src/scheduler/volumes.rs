//! What a pod's `persistentVolumeClaim` volumes ask of the scheduler, as
//! kube-scheduler's VolumeBinding plugin decides it:
//!
//! - a claim that does not exist, or is being deleted, keeps the pod
//!   unscheduled, saying so;
//! - a bound claim whose volume has node affinity (a `local-path` volume
//!   is pinned to its node) allows only the nodes that affinity admits;
//! - an unbound claim of a WaitForFirstConsumer class lets the scheduler
//!   pick the node, and is then given it (`volume.kubernetes.io/selected-node`)
//!   for its volume to be bound or provisioned there; once given one, later
//!   pods using it go to that node too;
//! - an unbound claim of any other class (or none) must be bound first.

use std::collections::BTreeMap;

use crate::controllers::ObjectReads;
use skiff_objects::storage::{ClaimView, ClassView, VolumeView};
use skiff_objects::Kind;

/// Why a pod's claims keep it from every node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimProblem {
    #[error("persistentvolumeclaim {0:?} not found")]
    NotFound(String),
    #[error("persistentvolumeclaim {0:?} is being deleted")]
    BeingDeleted(String),
    #[error("pod has unbound immediate PersistentVolumeClaims (persistentvolumeclaim {0:?} must be bound first)")]
    UnboundImmediate(String),
    #[error("persistentvolumeclaim {claim:?} is bound to persistentvolume {volume:?}, which does not exist")]
    VolumeMissing { claim: String, volume: String },
}

/// What a pod's claims ask of the node it goes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeDemand {
    /// The volumes of its bound claims: their node affinity must admit
    /// the node.
    pub bound: Vec<VolumeView>,
    /// The nodes unbound claims were already given: the pod goes there.
    pub selected_nodes: Vec<String>,
    /// The unbound WaitForFirstConsumer claims to give the chosen node.
    pub to_select: Vec<String>,
}

impl VolumeDemand {
    /// Whether the node named `name` with `labels` suits every claim.
    pub fn admits(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.bound.iter().all(|v| v.admits_node(name, labels))
            && self.selected_nodes.iter().all(|n| n == name)
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty() && self.selected_nodes.is_empty() && self.to_select.is_empty()
    }
}

/// What the claims of a pod in `namespace` with `spec` ask, or why the pod
/// cannot be placed at all.
pub fn volume_demand(
    store: &dyn ObjectReads,
    namespace: &str,
    claims: &[String],
) -> Result<VolumeDemand, ClaimProblem> {
    let mut demand = VolumeDemand::default();
    for name in claims.iter().cloned() {
        let claim = store
            .get(Kind::PersistentVolumeClaim, namespace, &name)
            .ok()
            .flatten()
            .and_then(|o| ClaimView::read(&o));
        let Some(claim) = claim else {
            return Err(ClaimProblem::NotFound(name));
        };
        if claim.being_deleted() {
            return Err(ClaimProblem::BeingDeleted(name));
        }
        if !claim.volume_name().is_empty() {
            let volume = store
                .get(Kind::PersistentVolume, "", claim.volume_name())
                .ok()
                .flatten()
                .and_then(|o| VolumeView::read(&o));
            match volume {
                Some(volume) => demand.bound.push(volume),
                None => {
                    return Err(ClaimProblem::VolumeMissing {
                        claim: name,
                        volume: claim.volume_name().to_owned(),
                    })
                }
            }
            continue;
        }
        if let Some(node) = claim.selected_node() {
            if !demand.selected_nodes.iter().any(|n| n == node) {
                demand.selected_nodes.push(node.to_owned());
            }
            continue;
        }
        let waits = !claim.class().is_empty()
            && store
                .get(Kind::StorageClass, "", claim.class())
                .ok()
                .flatten()
                .and_then(|o| ClassView::read(&o))
                .is_some_and(|c| c.waits_for_first_consumer());
        if !waits {
            return Err(ClaimProblem::UnboundImmediate(name));
        }
        demand.to_select.push(name);
    }
    Ok(demand)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::RecordingObjects;

    /// The claims a pod's volumes name.
    fn pod_with_claims(claims: &[&str]) -> Vec<String> {
        claims.iter().map(|c| (*c).to_owned()).collect()
    }

    const OBJECTS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-path}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pvc-1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  hostPath: {path: /var/lib/skiff/storage/pvc-1}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [pi-2]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bound, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  volumeName: pvc-1
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: waiting, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: placed
  namespace: shop
  annotations: {volume.kubernetes.io/selected-node: pi-3}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-path
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: immediate, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
"#;

    fn labels(node: &str) -> BTreeMap<String, String> {
        [("kubernetes.io/hostname".to_owned(), node.to_owned())].into()
    }

    #[test]
    fn a_bound_claim_pins_the_pod_to_its_volumes_node() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(OBJECTS);
        let demand = volume_demand(&*objects, "shop", &pod_with_claims(&["bound"])).unwrap();
        assert!(demand.admits("pi-2", &labels("pi-2")));
        assert!(!demand.admits("pi-1", &labels("pi-1")));
        assert!(demand.to_select.is_empty());
    }

    #[test]
    fn a_waiting_claim_lets_the_scheduler_pick_and_a_placed_one_pins() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(OBJECTS);
        let demand = volume_demand(&*objects, "shop", &pod_with_claims(&["waiting"])).unwrap();
        assert!(demand.admits("pi-1", &labels("pi-1")));
        assert_eq!(demand.to_select, ["waiting"]);
        let demand = volume_demand(&*objects, "shop", &pod_with_claims(&["placed"])).unwrap();
        assert!(demand.admits("pi-3", &labels("pi-3")));
        assert!(!demand.admits("pi-1", &labels("pi-1")));
        // Two claims that want different nodes fit no node at all.
        let both = pod_with_claims(&["bound", "placed"]);
        let demand = volume_demand(&*objects, "shop", &both).unwrap();
        assert!(!demand.admits("pi-2", &labels("pi-2")));
        assert!(!demand.admits("pi-3", &labels("pi-3")));
    }

    #[test]
    fn a_missing_or_unbound_immediate_claim_keeps_the_pod_unscheduled() {
        let objects = RecordingObjects::new();
        objects.seed_yaml(OBJECTS);
        let missing = volume_demand(&*objects, "shop", &pod_with_claims(&["nope"]));
        assert_eq!(missing, Err(ClaimProblem::NotFound("nope".into())));
        assert_eq!(
            missing.unwrap_err().to_string(),
            r#"persistentvolumeclaim "nope" not found"#
        );
        let other_namespace = volume_demand(&*objects, "default", &pod_with_claims(&["bound"]));
        assert_eq!(other_namespace, Err(ClaimProblem::NotFound("bound".into())));
        let immediate = volume_demand(&*objects, "shop", &pod_with_claims(&["immediate"]));
        assert_eq!(
            immediate,
            Err(ClaimProblem::UnboundImmediate("immediate".into()))
        );
        let none = volume_demand(&*objects, "shop", &[]).unwrap();
        assert!(none.is_empty());
    }
}
