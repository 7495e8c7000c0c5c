//! The crate's one error enum. Messages are lowercase and name what failed: the command, the
//! path, the unit.

use std::path::PathBuf;

/// Everything the unit controller, its systemd implementations and its test harness fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system manager was asked for, but PID 1 is not systemd (a container, a build
    /// machine): no unit can run.
    #[error(
        "systemd is not PID 1 on this machine (PID 1 is '{pid1}'), so the system manager cannot \
         run units; run the rubelet on a host booted with systemd, or point it at a user manager"
    )]
    NotBooted { pid1: String },

    /// systemctl could not reach the manager (no socket, no bus, permission).
    #[error("cannot reach the systemd manager with `{command}`: {stderr}")]
    Unreachable { command: String, stderr: String },

    /// A start, restart or stop job ran and failed: the unit's problem, visible in its state,
    /// not the controller's.
    #[error("`{command}` ran and its job failed: {stderr}")]
    JobFailed { command: String, stderr: String },

    /// Any other systemctl failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Systemctl {
        command: String,
        status: String,
        stderr: String,
    },

    /// systemctl's output did not read as expected.
    #[error("cannot read the output of `{command}`: {reason}")]
    Output { command: String, reason: String },

    /// A program that could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A file or directory that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A record in the state dir that does not decode.
    #[error("{path}: cannot decode the recorded status: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },

    /// The test harness could not start a user manager.
    #[error("cannot start a private user manager: {0}")]
    UserManager(String),

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
