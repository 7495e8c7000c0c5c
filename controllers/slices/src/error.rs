//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the shim, the controller and the log readers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{path}: cannot decode: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// The workload could not be started: the shim reported why (like `std::process` does
    /// for a failed exec). The outcome is recorded in the slice dir too.
    #[error("cannot start {command}: {message}")]
    Exec { command: String, message: String },
    /// A live shim already has this slice dir.
    #[error("a shim already runs for {dir}")]
    AlreadyRunning { dir: PathBuf },
    /// The shim gave up before the workload existed, and said why.
    #[error("the shim for {dir} gave up before the workload started: {message}")]
    ShimGaveUp { dir: PathBuf, message: String },
    /// The shim ended without a report; the last line of its log says why, if anything does.
    #[error("the shim for {dir} exited without reporting (see {log}): {last_line}")]
    ShimSilent {
        dir: PathBuf,
        log: PathBuf,
        last_line: String,
    },
    /// The shim's report was not one (see `shim::Report`).
    #[error("the shim for {dir} reported {line:?}, which is not a report")]
    ShimReport { dir: PathBuf, line: String },
    /// A shim asked to stop was still running when the controller stopped waiting.
    #[error("the shim for {dir} did not stop within {waited:?}")]
    ShimDidNotStop {
        dir: PathBuf,
        waited: std::time::Duration,
    },
    /// The blocking task that launches a shim panicked or was cancelled.
    #[error("launching the shim for {dir} failed: {message}")]
    LaunchTask { dir: PathBuf, message: String },
    #[error("invalid slice: {0}")]
    Invalid(String),
    #[error("usage: {0}")]
    Usage(String),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Api(#[from] rubeapi::Error),
}

impl Error {
    /// `map_err(Error::io(path))`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// `map_err(Error::sys("mount /proc"))`.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }
}
