//! How API failures reach clients: each error becomes the gRPC status code a
//! Kubernetes user would expect (NotFound, AlreadyExists, Conflict as
//! ABORTED, a delete's UID precondition as FAILED_PRECONDITION, Gone as
//! OUT_OF_RANGE, Invalid as INVALID_ARGUMENT, including an
//! address another object holds, as Kubernetes answers "provided IP is
//! already allocated"), with a message that says what to do.

use tonic::{Code, Status};

use crate::cluster::{ClusterError, MembershipRefused};
use crate::datastore::snapshots::SnapshotsError;
use crate::events::EventStoreError;
use crate::store::state_machine::{Compacted, ListAtError, StateMachineError};
use crate::store::WriteError;
use skiff_objects::validation::ValidationError;
use skiff_objects::{EmptyObject, UnknownKind};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    UnknownKind(#[from] UnknownKind),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Compacted(#[from] Compacted),
    /// A list at a revision this master has not applied yet.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooNew { requested: u64, current: u64 },
    #[error(transparent)]
    Storage(#[from] StateMachineError),
    #[error("no leader is elected yet; retry shortly")]
    NoLeader,
    /// A node confirmed the deletion of a pod nobody is deleting.
    #[error("pod {namespace}/{name} is not being deleted: a node confirms deletions, it does not start them")]
    NotBeingDeleted { namespace: String, name: String },
    #[error("the leader could not be reached at {addr}: {message}")]
    LeaderUnreachable { addr: String, message: String },
    #[error(transparent)]
    Snapshots(#[from] SnapshotsError),
    #[error(transparent)]
    Events(#[from] EventStoreError),
}

impl ApiError {
    /// The store's refusal behind this error, if any.
    fn cluster(&self) -> Option<&ClusterError> {
        match self {
            ApiError::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.cluster().is_some_and(ClusterError::is_not_found)
    }

    /// An object of that name exists already.
    pub fn is_already_exists(&self) -> bool {
        self.cluster().is_some_and(ClusterError::is_already_exists)
    }

    /// A conditional write lost to a newer resourceVersion.
    pub fn is_conflict(&self) -> bool {
        self.cluster().is_some_and(ClusterError::is_conflict)
    }
}

/// The one place write-path failures become API errors (and so, below,
/// gRPC status codes).
impl From<crate::writer::Error> for ApiError {
    fn from(e: crate::writer::Error) -> Self {
        use crate::writer::Error as W;
        match e {
            W::Invalid(message) => ApiError::Invalid(message),
            W::ServiceIp(e) => ApiError::Invalid(e.to_string()),
            W::NodePort(e) => ApiError::Invalid(e.to_string()),
            W::UnknownKind(e) => ApiError::UnknownKind(e),
            W::Validation(e) => ApiError::Validation(e),
            W::Cluster(e) => ApiError::Cluster(e),
            W::Storage(e) => ApiError::Storage(e),
        }
    }
}

impl From<ListAtError> for ApiError {
    fn from(e: ListAtError) -> Self {
        match e {
            ListAtError::Compacted(c) => ApiError::Compacted(c),
            ListAtError::TooNew { requested, current } => ApiError::TooNew { requested, current },
        }
    }
}

impl From<MembershipRefused> for ApiError {
    fn from(refused: MembershipRefused) -> Self {
        ApiError::Cluster(refused.into())
    }
}

impl From<EmptyObject> for ApiError {
    fn from(e: EmptyObject) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::Invalid(_) | ApiError::UnknownKind(_) | ApiError::Validation(_) => {
                Code::InvalidArgument
            }
            ApiError::Cluster(ClusterError::Refused(refused)) => match refused {
                WriteError::NotFound { .. } | WriteError::NamespaceNotFound(_) => Code::NotFound,
                WriteError::AlreadyExists { .. } => Code::AlreadyExists,
                WriteError::Conflict { .. } => Code::Aborted,
                WriteError::UidMismatch { .. } => Code::FailedPrecondition,
                WriteError::Invalid(_) | WriteError::AddressTaken { .. } => Code::InvalidArgument,
            },
            ApiError::Cluster(ClusterError::MembershipRefused(refused)) => match refused {
                MembershipRefused::NotAMember(_) => Code::NotFound,
                MembershipRefused::LastVoter(_)
                | MembershipRefused::Leader(_)
                | MembershipRefused::Unverified { .. } => Code::FailedPrecondition,
            },
            ApiError::Cluster(ClusterError::NotLeader { .. })
            | ApiError::NoLeader
            | ApiError::LeaderUnreachable { .. } => Code::Unavailable,
            ApiError::Cluster(_) => Code::Unavailable,
            ApiError::Compacted(_) => Code::OutOfRange,
            ApiError::TooNew { .. } => Code::DeadlineExceeded,
            ApiError::NotBeingDeleted { .. } => Code::FailedPrecondition,
            ApiError::Storage(_) => Code::Internal,
            ApiError::Snapshots(e) => match e {
                SnapshotsError::BadName { .. } => Code::InvalidArgument,
                SnapshotsError::Exists { .. } => Code::AlreadyExists,
                SnapshotsError::NotFound { .. } => Code::NotFound,
                SnapshotsError::Io { .. }
                | SnapshotsError::Store(_)
                | SnapshotsError::File(_)
                | SnapshotsError::Task(_) => Code::Internal,
            },
            ApiError::Events(e) => match e {
                EventStoreError::NotFound { .. } => Code::NotFound,
                EventStoreError::AlreadyExists { .. } => Code::AlreadyExists,
                EventStoreError::Conflict { .. } => Code::Aborted,
                EventStoreError::Invalid(_) | EventStoreError::Validation(_) => {
                    Code::InvalidArgument
                }
                EventStoreError::Expired { .. } => Code::OutOfRange,
            },
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AddressField;
    use skiff_objects::Kind;

    fn refused(e: WriteError) -> ApiError {
        ApiError::Cluster(ClusterError::Refused(e))
    }

    #[test]
    fn each_refusal_answers_exactly_its_own_question() {
        let not_found = refused(WriteError::NotFound {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: "a".into(),
        });
        let exists = refused(WriteError::AlreadyExists {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: "a".into(),
        });
        let conflict = refused(WriteError::Conflict {
            kind: Kind::Pod,
            name: "a".into(),
            expected: "1".into(),
            current: "2".into(),
        });
        let no_namespace = refused(WriteError::NamespaceNotFound("x".into()));
        let answers = |e: &ApiError| (e.is_not_found(), e.is_already_exists(), e.is_conflict());
        assert_eq!(answers(&not_found), (true, false, false));
        assert_eq!(answers(&exists), (false, true, false));
        assert_eq!(answers(&conflict), (false, false, true));
        assert_eq!(answers(&no_namespace), (false, false, false));
        assert_eq!(answers(&ApiError::NoLeader), (false, false, false));
        assert_eq!(Status::from(conflict).code(), Code::Aborted);
        assert_eq!(Status::from(not_found).code(), Code::NotFound);
        let replaced = refused(WriteError::UidMismatch {
            kind: Kind::Pod,
            name: "a".into(),
            expected: "u1".into(),
            current: "u2".into(),
        });
        assert_eq!(answers(&replaced), (false, false, false));
        let status = Status::from(replaced);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let message = status.message();
        assert!(message.contains("UID in precondition: u1"), "{message}");
    }

    #[test]
    fn event_refusals_get_the_codes_of_the_same_refusals_of_stored_objects() {
        let code = |e: EventStoreError| Status::from(ApiError::from(e)).code();
        let (namespace, name) = (String::from("default"), String::from("web.17f3a"));
        let not_found = EventStoreError::NotFound {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let status = Status::from(ApiError::from(not_found));
        assert_eq!(status.code(), Code::NotFound);
        // Not read as a missing namespace by the REST API.
        assert!(!status.message().starts_with("namespace "), "{status:?}");
        let exists = EventStoreError::AlreadyExists {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        assert_eq!(code(exists), Code::AlreadyExists);
        let conflict = EventStoreError::Conflict {
            namespace,
            name,
            expected: "1".into(),
            current: "2".into(),
        };
        assert_eq!(code(conflict), Code::Aborted);
        assert_eq!(
            code(EventStoreError::Invalid("x".into())),
            Code::InvalidArgument
        );
        let expired = EventStoreError::Expired {
            requested: 1,
            oldest: 5,
            newest: 9,
        };
        assert_eq!(code(expired), Code::OutOfRange);
    }

    #[test]
    fn an_address_held_by_another_object_is_an_invalid_value_naming_both() {
        let taken = refused(WriteError::AddressTaken {
            field: AddressField::ClusterIp,
            value: "10.43.0.20".into(),
            held: "10.43.0.20".into(),
            holder: "Service default/web".into(),
        });
        let answers = (
            taken.is_not_found(),
            taken.is_already_exists(),
            taken.is_conflict(),
        );
        assert_eq!(answers, (false, false, false));
        let status = Status::from(taken);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "spec.clusterIP: Invalid value: \"10.43.0.20\": failed to allocate 10.43.0.20: \
             it is already allocated (10.43.0.20 is held by Service default/web); \
             leave the field empty to be given a free one"
        );
        // Through the write path's error, as a controller's write sees it.
        let overlap = WriteError::AddressTaken {
            field: AddressField::PodCidr,
            value: "10.42.0.0/23".into(),
            held: "10.42.1.0/24".into(),
            holder: "Node n1".into(),
        };
        let write = crate::writer::Error::Cluster(ClusterError::Refused(overlap));
        let status = Status::from(ApiError::from(write));
        assert_eq!(status.code(), Code::InvalidArgument);
        let message = status.message();
        let expected = "spec.podCIDR: Invalid value: \"10.42.0.0/23\"";
        assert!(message.starts_with(expected), "{message}");
        assert!(message.contains("(10.42.1.0/24 is"), "{message}");
        assert!(message.contains("held by Node n1)"), "{message}");
    }
}
