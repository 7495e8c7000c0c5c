//! The crate's one error enum. Per-key failures are retried and counted by the runtime, never
//! returned from `run`; only shutdown can fail `run`.

use std::path::PathBuf;
use std::time::Duration;

use crate::Key;

/// A boxed error from a controller's own code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the framework can fail with, and the errors executors most often need.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Controller::observe` failed; the key is retried with backoff.
    #[error("cannot observe {key}: {source}")]
    Observe {
        key: Key,
        #[source]
        source: BoxError,
    },

    /// `Controller::execute` failed; the key is retried with backoff.
    #[error("cannot execute effects for {key}: {source}")]
    Execute {
        key: Key,
        #[source]
        source: BoxError,
    },

    /// `Controller::inventory` failed; the keys the cache knows are still reconciled.
    #[error("cannot take the inventory: {source}")]
    Inventory {
        #[source]
        source: BoxError,
    },

    /// Reconcile still returned effects after `steps` rounds of execute and observe: the
    /// controller has no fixpoint for this object (or the world keeps changing under it).
    #[error("{key} did not converge: reconcile still returned effects after {steps} steps")]
    NoFixpoint { key: Key, steps: usize },

    /// Shutdown waited `deadline` and reconciles were still running; they were aborted.
    #[error("shutdown deadline of {deadline:?} passed with {running} reconciles still running")]
    ShutdownDeadline { deadline: Duration, running: usize },

    /// A file an executor could not read or write.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An apiserver call that failed.
    #[error(transparent)]
    Api(#[from] rubeapi::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
