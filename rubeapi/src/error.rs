use std::fmt;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Textproto that does not parse, or does not describe a valid object.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },

    #[error("unknown type '{name}'")]
    UnknownType { name: String },

    /// A known message type that is not a storable kind (it lacks the `(rube.kind)` option).
    #[error("type '{name}' is not a kind: it has no (rube.kind) option")]
    NotAKind { name: String },

    #[error("cannot decode {type_name}: {reason}")]
    Decode { type_name: String, reason: String },

    #[error("invalid json: {0}")]
    Json(String),

    #[error("invalid label selector '{input}': {reason}")]
    Selector { input: String, reason: String },

    #[error("invalid type descriptors: {0}")]
    Descriptor(String),

    /// A client configuration file that cannot be read, parsed or used.
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },

    /// No client configuration was given and none was found where clients look.
    #[error(
        "no client configuration: pass --config FILE or set RUBE_CONFIG; looked in {}",
        .tried.join(", ")
    )]
    NoConfig { tried: Vec<String> },

    /// Joining a node failed before the apiserver answered: a token that does not parse, a
    /// server that is not the token's cluster.
    #[error("{0}")]
    Join(String),

    /// No TCP connection to `addr` (refused, timed out): the same call may succeed later.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },

    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },

    /// The history the caller asked for is gone; relist and watch from the list's revision.
    #[error("revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted { requested: u64, compacted: u64 },

    /// The apiserver said the object does not exist (`NOT_FOUND`).
    #[error("{}", .0.message())]
    NotFound(tonic::Status),

    /// A precondition failed: the revision moved on (`ABORTED`) or the object exists
    /// (`ALREADY_EXISTS`). Read again and retry, or give up.
    #[error("{}", .0.message())]
    Conflict(tonic::Status),

    /// The apiserver, or the store behind it, could not be reached (`UNAVAILABLE`); the same
    /// call may succeed later.
    #[error("{}", .0.message())]
    Unavailable(tonic::Status),

    /// The apiserver does not know who the caller is (`UNAUTHENTICATED`): no client
    /// certificate.
    #[error("{}", .0.message())]
    Unauthenticated(tonic::Status),

    /// The caller may not do this (`PERMISSION_DENIED`).
    #[error("{}", .0.message())]
    PermissionDenied(tonic::Status),

    /// Any other error the apiserver returned.
    #[error("{}", .0.message())]
    Api(tonic::Status),
}

impl Error {
    /// The gRPC code of an error the apiserver returned; `None` for local errors.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::NotFound(status)
            | Error::Conflict(status)
            | Error::Unavailable(status)
            | Error::Unauthenticated(status)
            | Error::PermissionDenied(status)
            | Error::Api(status) => Some(status.code()),
            Error::Compacted { .. } => Some(tonic::Code::OutOfRange),
            _ => None,
        }
    }

    /// Whether the apiserver said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// Whether a precondition failed: a revision that moved on, or an object that exists.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }

    /// Whether the call may succeed if made again later: the apiserver was unreachable, or
    /// the connection broke mid-call (tonic reports that as `UNKNOWN` or `CANCELLED`).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Connect { .. } | Error::Unreachable { .. } => true,
            Error::Api(status) => {
                matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
            }
            _ => false,
        }
    }
}

/// A position in a textproto input, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `input`. Columns count characters.
    pub fn of_offset(input: &str, offset: usize) -> Location {
        let offset = offset.min(input.len());
        let before = &input[..floor_char_boundary(input, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Metadata keys the apiserver uses to carry structured error details.
pub mod error_keys {
    /// On `OUT_OF_RANGE`: the compacted revision.
    pub const COMPACTED_REVISION: &str = "rube-compacted-revision";
    /// On `OUT_OF_RANGE`: the revision the client asked for.
    pub const REQUESTED_REVISION: &str = "rube-requested-revision";
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::NotFound => return Error::NotFound(status),
            tonic::Code::Aborted | tonic::Code::AlreadyExists => return Error::Conflict(status),
            tonic::Code::Unavailable => return Error::Unavailable(status),
            tonic::Code::Unauthenticated => return Error::Unauthenticated(status),
            tonic::Code::PermissionDenied => return Error::PermissionDenied(status),
            _ => {}
        }
        if status.code() == tonic::Code::OutOfRange {
            let get = |key| {
                status
                    .metadata()
                    .get(key)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let (Some(requested), Some(compacted)) = (
                get(error_keys::REQUESTED_REVISION),
                get(error_keys::COMPACTED_REVISION),
            ) {
                return Error::Compacted {
                    requested,
                    compacted,
                };
            }
        }
        Error::Api(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_the_variants_callers_match() {
        let e = Error::from(tonic::Status::not_found("runink.Slice herd/x not found"));
        assert!(e.is_not_found() && !e.is_conflict());
        assert_eq!(e.to_string(), "runink.Slice herd/x not found");
        assert!(Error::from(tonic::Status::aborted("revision moved")).is_conflict());
        assert!(Error::from(tonic::Status::already_exists("exists")).is_conflict());
        assert!(Error::from(tonic::Status::unavailable("down")).is_transient());
        let other = Error::from(tonic::Status::invalid_argument("bad"));
        assert!(matches!(other, Error::Api(_)) && !other.is_transient());
        assert_eq!(other.code(), Some(tonic::Code::InvalidArgument));
    }

    #[test]
    fn location_counts_lines_and_characters() {
        let input = "ab\ncdé\nf";
        assert_eq!(Location::of_offset(input, 0).to_string(), "1:1");
        assert_eq!(Location::of_offset(input, 3).to_string(), "2:1");
        // 'é' is two bytes but one column.
        assert_eq!(Location::of_offset(input, 7).to_string(), "2:4");
        assert_eq!(Location::of_offset(input, 100).to_string(), "3:2");
    }
}
