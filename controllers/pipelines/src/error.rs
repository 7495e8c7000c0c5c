//! The crate's one error enum.

/// What observing or executing can fail with. Every variant names the call or object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed; `action` says which (`list slices`, `create 3 slices for ...`).
    #[error("cannot {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: rubeapi::Error,
    },

    /// An object read from the apiserver does not hold what its type says.
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: rubeapi::Error,
    },

    /// The slice cache does not hold the controller's own last write yet (its watch lags or
    /// is cut); deciding from it would redo what was done.
    #[error(
        "the slice cache is at revision {at:?}, behind this controller's last write at {revision}"
    )]
    CacheBehind { revision: u64, at: Option<u64> },

    /// The runtime stopped with an error (only at shutdown).
    #[error(transparent)]
    Runtime(#[from] controllers::Error),
}
