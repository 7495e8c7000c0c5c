//! What the controller hands the shim ([`LaunchSpec`]) and what the shim leaves behind
//! ([`Outcome`], [`RunningRecord`]): plain data, written as JSON files in the slice dir, and
//! [`read`], which says what a slice dir holds ([`ShimState`]). The controller, the shim and the
//! log readers all build on this module; it builds on none of them. Nothing here starts
//! processes; [`read`] only looks a shim's pid up in `/proc`.
//!
//! The files of a slice dir: `spec.json`, `shim.json`, `outcome.json`, `stop`, `shim.lock`,
//! `shim.log` (the shim's own errors), `output.<offset>.log` (the workload's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cgroups::{CgroupPath, Hierarchy, Subsystem};
use serde::{Deserialize, Serialize};

use crate::Error;

pub const SPEC: &str = "spec.json";
pub const SHIM: &str = "shim.json";
pub const OUTCOME: &str = "outcome.json";
pub const STOP: &str = "stop";
pub const LOCK: &str = "shim.lock";
pub const SHIM_LOG: &str = "shim.log";

/// What a slice dir says about its workload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShimState {
    /// No shim was started here (or it failed before the workload existed).
    #[default]
    Absent,
    /// The shim lives; the workload runs (or waits for its FIFOs).
    Running(RunningRecord),
    Exited(Outcome),
    /// The shim died without recording an outcome (killed, or the node rebooted); its
    /// workload may still run in its cgroup.
    Lost(RunningRecord),
}

/// Rube's node subtree as directories, so the shim drives the very cgroups the controller
/// chose (the shim's own cgroup may differ from the rubelet's, e.g. after `enter_leaf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HierarchySpec {
    /// `(controller name, node subtree directory)` for each mounted v1 controller.
    V1(Vec<(String, PathBuf)>),
    /// The node subtree directory of the unified tree.
    V2(PathBuf),
}

impl HierarchySpec {
    pub fn of(hierarchy: &Hierarchy) -> HierarchySpec {
        let root = CgroupPath::root();
        match hierarchy {
            Hierarchy::V1(_) => HierarchySpec::V1(
                Subsystem::ALL
                    .iter()
                    .filter_map(|c| Some((c.name().to_owned(), hierarchy.dir(&root, *c)?)))
                    .collect(),
            ),
            Hierarchy::V2(_) => HierarchySpec::V2(hierarchy.dirs(&root).remove(0)),
        }
    }

    pub fn hierarchy(&self) -> Hierarchy {
        match self {
            HierarchySpec::V1(roots) => Hierarchy::v1_at(
                roots
                    .iter()
                    .filter_map(|(name, dir)| {
                        let c = Subsystem::ALL.into_iter().find(|c| c.name() == name)?;
                        Some((c, dir.clone()))
                    })
                    .collect(),
            ),
            HierarchySpec::V2(root) => Hierarchy::v2_at(root.clone()),
        }
    }
}

/// Namespaces and identity, as the shim applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationSpec {
    /// Own pid namespace; implies `mount` (a private /proc is mounted).
    pub pid: bool,
    pub mount: bool,
    /// Own UTS namespace; implied by a hostname.
    pub uts: bool,
    pub ipc: bool,
    /// Own network namespace with only `lo`, up.
    pub net: bool,
    pub hostname: Option<String>,
    pub uid: Option<u32>,
    /// Defaults to `uid` when only that is given.
    pub gid: Option<u32>,
}

/// Everything the shim needs to run one workload; `spec.json` in the slice dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub command: String,
    pub args: Vec<String>,
    /// The whole environment of the workload; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: BTreeMap<String, String>,
    /// Empty: `/`.
    pub working_dir: String,
    pub hierarchy: Option<HierarchySpec>,
    /// The leaf, relative to the node subtree (`<herd>/<slice>`).
    pub cgroup: String,
    pub limits: LimitsSpec,
    pub isolation: IsolationSpec,
    /// Active deadline in seconds from the start; the shim kills the cgroup after it.
    pub timeout_seconds: Option<u64>,
    /// FIFOs (made when missing): stdin reads from `stdin_pipe` (else /dev/null), stdout
    /// writes to `stdout_pipe` (else the log).
    pub stdin_pipe: Option<PathBuf>,
    pub stdout_pipe: Option<PathBuf>,
    /// Capacity to give those pipes' kernel buffer (`F_SETPIPE_SZ`); `None` keeps the kernel's
    /// default. Absent in the spec.json of shims started by an older rubelet.
    #[serde(default)]
    pub pipe_buffer_bytes: Option<u64>,
    /// Size of one log file before it is rotated, and how many files are kept.
    pub log_file_bytes: u64,
    pub log_files: u32,
    /// Between SIGTERM and SIGKILL when the deadline passes.
    pub kill_grace_ms: u64,
}

/// [`cgroups::Limits`] with serde.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsSpec {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

impl From<LimitsSpec> for cgroups::Limits {
    fn from(l: LimitsSpec) -> cgroups::Limits {
        cgroups::Limits {
            cpu_millis: l.cpu_millis,
            memory_bytes: l.memory_bytes,
            pids: l.pids,
        }
    }
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a workload ended; `outcome.json`, written once, atomically, by the shim (or by the
/// controller for a shim that died without writing it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: u64,
    pub pid: u32,
    pub cgroup: String,
    /// Why it ended when that was not its own doing: "deadline exceeded", "stopped", an exec
    /// error, "shim lost".
    pub message: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }
}

/// The shim of a running workload; `shim.json`, written by the shim once the workload exists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRecord {
    /// The workload's pid in the shim's pid namespace.
    pub pid: u32,
    pub shim_pid: u32,
    /// Field 22 of `/proc/<shim_pid>/stat`: with the pid, names the shim process uniquely.
    pub shim_start_ticks: u64,
    pub started_ms: u64,
    pub cgroup: String,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `value` as JSON to `path` atomically (write, fsync, rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial).map_err(Error::io(&partial))?;
    file.write_all(bytes).map_err(Error::io(&partial))?;
    file.sync_all().map_err(Error::io(&partial))?;
    std::fs::rename(&partial, path).map_err(Error::io(path))
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Decode {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// What `dir` holds. See [`ShimState`].
pub fn read(dir: &Path) -> Result<ShimState, Error> {
    if let Some(outcome) = read_json::<Outcome>(&dir.join(OUTCOME))? {
        return Ok(ShimState::Exited(outcome));
    }
    let Some(record) = read_json::<RunningRecord>(&dir.join(SHIM))? else {
        return Ok(ShimState::Absent);
    };
    if start_ticks(record.shim_pid) == Some(record.shim_start_ticks) {
        return Ok(ShimState::Running(record));
    }
    // The shim may have written its outcome and exited between the two reads.
    match read_json::<Outcome>(&dir.join(OUTCOME))? {
        Some(outcome) => Ok(ShimState::Exited(outcome)),
        None => Ok(ShimState::Lost(record)),
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot) of a live process;
/// `None` when there is no such process or it is a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` is field 3; start time is field 22.
    fields.nth(18)?.parse().ok()
}
