//! How API failures reach clients: each error becomes the gRPC status code a
//! Kubernetes user would expect (NotFound, AlreadyExists, Conflict as
//! ABORTED, Gone as OUT_OF_RANGE), with a message that says what to do.

use tonic::{Code, Status};

use crate::cluster::ClusterError;
use crate::objects::validation::ValidationError;
use crate::objects::{EmptyObject, UnknownKind};
use crate::store::state_machine::{Compacted, StateMachineError};
use crate::store::WriteError;

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
    #[error(transparent)]
    Storage(#[from] StateMachineError),
    #[error("no leader is elected yet; retry shortly")]
    NoLeader,
    #[error("the leader could not be reached at {addr}: {message}")]
    LeaderUnreachable { addr: String, message: String },
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
                WriteError::Invalid(_) => Code::InvalidArgument,
            },
            ApiError::Cluster(ClusterError::NotLeader { .. })
            | ApiError::NoLeader
            | ApiError::LeaderUnreachable { .. } => Code::Unavailable,
            ApiError::Cluster(_) => Code::Unavailable,
            ApiError::Compacted(_) => Code::OutOfRange,
            ApiError::Storage(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
