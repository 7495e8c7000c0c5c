use std::fmt;

use rubeapi::error_keys;
use tonic::{Code, Status};

use crate::store::Key;

/// Everything the apiserver's core and stores can refuse or fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{key} not found")]
    NotFound { key: Key },

    #[error("{key} already exists (revision {revision})")]
    AlreadyExists { key: Key, revision: u64 },

    /// A compare-and-swap precondition did not hold.
    #[error("conflict on {key}: expected revision {expected}, found {}", Found(*.actual))]
    Conflict {
        key: Key,
        expected: u64,
        actual: Option<u64>,
    },

    /// The history a watch asked for is gone.
    #[error(
        "revision {requested} has been compacted (compacted revision {compacted}); relist and watch from the list's revision"
    )]
    Compacted { requested: u64, compacted: u64 },

    /// Input that admission refuses; the message names the field and the problem.
    #[error("{0}")]
    Invalid(String),

    /// A put that would take a Herd over its quota.
    #[error("{0}")]
    QuotaExceeded(String),

    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },

    /// One put of an atomic batch failed, so none was applied.
    #[error("object {} of {count} ({key}): {source}; nothing was applied", .index + 1)]
    InBatch {
        index: usize,
        count: usize,
        key: String,
        source: Box<Error>,
    },

    /// The store cannot serve now (disk, I/O, shutting down); the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),

    #[error("internal error: {0}")]
    Internal(String),

    /// The caller may not do this; the message names who, the verb, the kind and where.
    #[error("{0}")]
    Forbidden(String),

    /// The caller could not be identified: a bad join token, no certificate.
    #[error("{0}")]
    Unauthenticated(String),

    /// This apiserver cannot do this as it was started (no CA key to issue with).
    #[error("{0}")]
    Unsupported(String),

    /// A certificate or key that cannot be made, read or used.
    #[error("{0}")]
    Pki(String),
}

struct Found(Option<u64>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(revision) => write!(f, "{revision}"),
            None => f.write_str("no object"),
        }
    }
}

impl Error {
    /// This error as the failure of put `index` of `count` in one atomic batch; unchanged when
    /// the batch has one put.
    pub fn in_batch(self, index: usize, count: usize, key: &Key) -> Error {
        if count == 1 {
            return self;
        }
        Error::InBatch {
            index,
            count,
            key: key.to_string(),
            source: Box::new(self),
        }
    }

    /// The one table from domain errors to gRPC codes.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Conflict { .. } => Code::Aborted,
            Error::Compacted { .. } => Code::OutOfRange,
            Error::Invalid(_) | Error::TooLarge { .. } => Code::InvalidArgument,
            Error::QuotaExceeded(_) => Code::ResourceExhausted,
            Error::InBatch { source, .. } => source.code(),
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) | Error::Pki(_) => Code::Internal,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Unsupported(_) => Code::FailedPrecondition,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let mut status = Status::new(error.code(), error.to_string());
        if let Error::Compacted {
            requested,
            compacted,
        } = error
        {
            let metadata = status.metadata_mut();
            metadata.insert(error_keys::REQUESTED_REVISION, requested.into());
            metadata.insert(error_keys::COMPACTED_REVISION, compacted.into());
        }
        status
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Unavailable(format!("sqlite: {error}"))
    }
}

impl From<prost::DecodeError> for Error {
    fn from(error: prost::DecodeError) -> Error {
        Error::Internal(format!("stored data does not decode: {error}"))
    }
}
