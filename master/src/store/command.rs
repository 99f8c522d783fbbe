//! The commands that Raft log entries carry, and their results.
//!
//! Everything non-deterministic (uids, timestamps) is decided by the master
//! that proposes a command, never in `apply`, so every replica computes the
//! same state.

use serde::{Deserialize, Serialize};

use skiff_objects::deletion::DeleteOptions;
use skiff_objects::Kind;

/// A change to the object store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Store a new object (prost-encoded `Object`).
    Create {
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
        uid: String,
        now: String,
    },
    /// Replace metadata and spec (or only status). Conditional when the
    /// object's `metadata.resourceVersion` is set.
    Update {
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
        status_only: bool,
    },
    /// Remove an object at once, whatever its finalizers, optionally only
    /// at a given resourceVersion: what earlier builds proposed for every
    /// delete, kept so that their log entries apply as they did. Nothing
    /// proposes it any more.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        resource_version: String,
    },
    /// Delete an object as Kubernetes does (`objects::deletion`): remove
    /// it, or keep it marked while finalizers, dependents to collect or a
    /// pod's grace period hold it. `now` (RFC 3339) is the proposer's time,
    /// for the mark. New variants go at the end: entries carry the index.
    DeleteWithOptions {
        kind: Kind,
        namespace: String,
        name: String,
        options: DeleteOptions,
        now: String,
    },
    /// Replace everything but what the store owns, status included (an
    /// object of a custom kind whose definition has no `status`
    /// subresource: its status is written like its spec). Conditional as
    /// `Update` is.
    UpdateWhole {
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
    },
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The object as stored (for Delete: as it was when deleted).
    #[serde(with = "serde_bytes")]
    pub object: Vec<u8>,
    /// The store revision after this write.
    pub revision: u64,
}

/// Why a write was refused by the state machine. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error("{kind} \"{name}\" not found{}", in_namespace(namespace))]
    NotFound {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("{kind} \"{name}\" already exists{}", in_namespace(namespace))]
    AlreadyExists {
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("namespace \"{0}\" not found; create it first")]
    NamespaceNotFound(String),
    #[error("conflict: {kind} \"{name}\" is at resourceVersion {current}, the request expected {expected}; read it again and retry")]
    Conflict {
        kind: Kind,
        name: String,
        expected: String,
        current: String,
    },
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The object claims an address another object holds: `value` is what
    /// it asked for, `held` what `holder` (kind and name) has, the same
    /// address or, for pod subnets, one overlapping it.
    #[error("{field}: Invalid value: {value:?}: failed to allocate {value}: it is already allocated ({held} is held by {holder}); leave the field empty to be given a free one")]
    AddressTaken {
        field: AddressField,
        value: String,
        held: String,
        holder: String,
    },
    /// A delete named the uid of an object that is no longer there: the
    /// name now holds another (`current`).
    #[error("Precondition failed: UID in precondition: {expected}, UID in object meta: {current} ({kind} \"{name}\" was replaced; nothing was deleted)")]
    UidMismatch {
        kind: Kind,
        name: String,
        expected: String,
        current: String,
    },
}

/// A field whose value the cluster gives to one object at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressField {
    /// A Service's `spec.clusterIP`.
    ClusterIp,
    /// A Node's `spec.podCIDR`.
    PodCidr,
    /// One of a Service's `spec.ports[].nodePort`.
    NodePort,
    /// A Service's `spec.healthCheckNodePort` (a number from the nodePorts').
    HealthCheckNodePort,
}

impl std::fmt::Display for AddressField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressField::ClusterIp => "spec.clusterIP",
            AddressField::PodCidr => "spec.podCIDR",
            AddressField::NodePort => "spec.ports[].nodePort",
            AddressField::HealthCheckNodePort => "spec.healthCheckNodePort",
        })
    }
}

fn in_namespace(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!(" in namespace \"{namespace}\"")
    }
}

/// The state machine's answer to one command.
pub type ApplyResult = Result<Applied, WriteError>;

/// What one Raft log entry carries: the commands of every client that was
/// waiting when the entry was proposed, applied in order. Batching many
/// writes into one entry makes them share one fsync on every member.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

/// One result per command of a [`Proposal`], in order. Entries that carry
/// no proposal (blank and membership entries) answer with none.
pub type ProposalResult = Vec<ApplyResult>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands as earlier builds declared them, with the objects as
    /// plain `Vec<u8>` (a sequence to serde, written a byte at a time).
    #[derive(Debug, Serialize, Deserialize)]
    enum LegacyCommand {
        Create {
            object: Vec<u8>,
            uid: String,
            now: String,
        },
        Update {
            object: Vec<u8>,
            status_only: bool,
        },
        Delete {
            kind: Kind,
            namespace: String,
            name: String,
            resource_version: String,
        },
        DeleteWithOptions {
            kind: Kind,
            namespace: String,
            name: String,
            options: DeleteOptions,
            now: String,
        },
        UpdateWhole {
            object: Vec<u8>,
        },
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct LegacyApplied {
        object: Vec<u8>,
        revision: u64,
    }

    /// Bytes of every value 0..=255 and then some, as an object would be.
    fn object_bytes() -> Vec<u8> {
        (0..=255u8).chain([7, 0, 255]).collect()
    }

    #[test]
    fn entries_are_the_same_bytes_as_earlier_builds_wrote_and_read_back() {
        let object = object_bytes();
        let pairs = [
            (
                LegacyCommand::Create {
                    object: object.clone(),
                    uid: "u-1".into(),
                    now: "2026-12-04T00:00:00Z".into(),
                },
                Command::Create {
                    object: object.clone(),
                    uid: "u-1".into(),
                    now: "2026-12-04T00:00:00Z".into(),
                },
            ),
            (
                LegacyCommand::Update {
                    object: object.clone(),
                    status_only: true,
                },
                Command::Update {
                    object: object.clone(),
                    status_only: true,
                },
            ),
            (
                LegacyCommand::UpdateWhole { object: Vec::new() },
                Command::UpdateWhole { object: Vec::new() },
            ),
            (
                LegacyCommand::Delete {
                    kind: Kind::Pod,
                    namespace: "default".into(),
                    name: "web".into(),
                    resource_version: "7".into(),
                },
                Command::Delete {
                    kind: Kind::Pod,
                    namespace: "default".into(),
                    name: "web".into(),
                    resource_version: "7".into(),
                },
            ),
        ];
        for (legacy, command) in pairs {
            let written = bincode::serialize(&legacy).unwrap();
            assert_eq!(
                bincode::serialize(&command).unwrap(),
                written,
                "{command:?}"
            );
            let read: Command = bincode::deserialize(&written).unwrap();
            assert_eq!(format!("{read:?}"), format!("{command:?}"));
        }
        // A batch of them, as one log entry carries.
        let proposal = Proposal {
            commands: vec![
                Command::Create {
                    object: object.clone(),
                    uid: "u-2".into(),
                    now: String::new(),
                },
                Command::UpdateWhole {
                    object: object.clone(),
                },
            ],
        };
        let read: Proposal = bincode::deserialize(&bincode::serialize(&proposal).unwrap()).unwrap();
        assert_eq!(format!("{read:?}"), format!("{proposal:?}"));
        let applied = Applied {
            object: object.clone(),
            revision: 42,
        };
        let legacy = LegacyApplied {
            object,
            revision: 42,
        };
        let written = bincode::serialize(&legacy).unwrap();
        assert_eq!(bincode::serialize(&applied).unwrap(), written);
        assert_eq!(bincode::deserialize::<Applied>(&written).unwrap(), applied);
    }

    #[test]
    fn a_truncated_entry_is_an_error_not_a_short_object() {
        let written = bincode::serialize(&Command::Update {
            object: object_bytes(),
            status_only: false,
        })
        .unwrap();
        for cut in [written.len() - 1, written.len() - 100, 6] {
            assert!(
                bincode::deserialize::<Command>(&written[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
