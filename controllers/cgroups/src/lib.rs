//! Rube's cgroups: one interface over cgroup v1 and v2 (youki's libcgroups is the model).
//!
//! # Layout
//! - [`Hierarchy`]: where Rube's node subtree lives, v1 (one directory per controller) or v2 (one
//!   unified tree), detected from `/proc/self/mountinfo` and `/proc/self/cgroup`
//!   ([`Hierarchy::detect`]), or pointed at temp dirs in tests ([`Hierarchy::v1_at`],
//!   [`Hierarchy::v2_at`]). Its methods are the whole interface; the operations common to both
//!   versions (membership, signals, removal, listing) live in this file.
//! - `v1.rs`, `v2.rs`: what each version writes and reads (limits, stats, subtree_control).
//! - `detect.rs`: the pure parsers of the two `/proc` files and the v1-or-v2 decision.
//! - `path.rs`: [`CgroupPath`], a validated path relative to the node subtree
//!   (`<herd>/<slice>`).
//! - `fs.rs`: reads and writes of interface files with errors that carry path and value.
//! - [`Limits`] and [`Stats`]: what is written and read, as plain data.
//!
//! Nothing here spawns processes or knows about slices, herds or the API: callers name cgroups
//! by [`CgroupPath`] and this crate turns that into files.
//!
//! # The node subtree
//! Rube's cgroups live in `<own cgroup>/<subtree>` (subtree usually `rube`), the layout below it
//! being `<herd>/<slice>`: the Herd directory carries the Herd's quota, a slice is a leaf.
//! "Own cgroup" is the cgroup of the calling process in each hierarchy, never the hierarchy's
//! root: on a machine where the process sits in `memory:/process_api/<id>`, that is where `rube`
//! goes.
//!
//! # cgroup v2: no internal processes
//! On v2 a controller can be enabled in `cgroup.subtree_control` only of a cgroup that holds no
//! processes itself (the root excepted). [`Hierarchy::create`] enables `cpu`, `memory` and `pids`
//! in the own cgroup and every cgroup down to the new one's parent, so **the own cgroup must be
//! empty first**: the rubelet calls [`Hierarchy::enter_leaf`] (e.g. `enter_leaf("rubelet")`) at
//! start, which moves every process of the own cgroup into `<own>/rubelet`. Otherwise `create`
//! fails with [`Error::InternalProcesses`] naming the cgroup and its pids. Processes go into
//! slice leaves only, never into `rube` or a Herd directory. v1 has no such rule and
//! `enter_leaf` does nothing there.
//!
//! # Differences the caller sees
//! - v1 refuses a child whose CPU quota exceeds its parent's (the write fails with `EINVAL`, an
//!   [`Error::Write`]); v2 accepts it and the parent caps the child. Lower a Herd's CPU quota
//!   below a slice's only after lowering the slice.
//! - CPU quotas below the kernel's minimum of 1 ms per 100 ms period (`cpu_millis` < 10) are
//!   raised to it.
//! - v1 rounds memory limits down to whole pages.

mod detect;
mod fs;
mod path;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use path::CgroupPath;
pub use v1::V1;
pub use v2::V2;

/// Limits of one cgroup. `None` leaves the kernel default (unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core: v2 `cpu.max` = `"<millis*period/1000> <period>"`,
    /// v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, with a period of 100 ms.
    pub cpu_millis: Option<u64>,
    /// v2 `memory.max` (and `memory.swap.max` = 0 where present), v1
    /// `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where present): no swap
    /// beyond the limit.
    pub memory_bytes: Option<u64>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// Counters read from one cgroup (and, where the kernel counts hierarchically, its children).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes charged now (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub memory_current: u64,
    /// The high-water mark (v2 `memory.peak` where the kernel has it, v1
    /// `memory.max_usage_in_bytes`).
    pub memory_peak: Option<u64>,
    /// How many times the OOM killer killed a process in this cgroup (v2 `memory.events`
    /// `oom_kill`, v1 `memory.oom_control` `oom_kill`).
    pub oom_kills: u64,
    /// CPU time used, microseconds (v2 `cpu.stat` usage_usec, v1 `cpuacct.usage` / 1000).
    pub cpu_usage_usec: u64,
    /// Periods in which the cgroup was throttled, and for how long (v2 `cpu.stat`
    /// `nr_throttled`/`throttled_usec`, v1 `cpu.stat` `nr_throttled`/`throttled_time` / 1000).
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_usec: u64,
    /// `pids.current`.
    pub pids_current: u64,
}

/// Which cgroup version a [`Hierarchy`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The v1 subsystems (v2 calls them controllers) Rube uses, each its own hierarchy (or
/// comounted, e.g. `cpu,cpuacct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subsystem {
    Memory,
    Pids,
    Cpu,
    Cpuacct,
    Freezer,
}

impl Subsystem {
    pub const ALL: [Subsystem; 5] = [
        Subsystem::Memory,
        Subsystem::Pids,
        Subsystem::Cpu,
        Subsystem::Cpuacct,
        Subsystem::Freezer,
    ];

    /// The kernel's name of the controller.
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Memory => "memory",
            Subsystem::Pids => "pids",
            Subsystem::Cpu => "cpu",
            Subsystem::Cpuacct => "cpuacct",
            Subsystem::Freezer => "freezer",
        }
    }
}

/// Everything that can go wrong; each variant names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("parse {}: {value:?}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        value: String,
        reason: String,
    },
    #[error("invalid cgroup path {0}")]
    InvalidPath(String),
    #[error("cgroups not mounted: {0}")]
    NotMounted(String),
    /// Processes remained after SIGKILL and the wait that follows it.
    #[error("{} still has processes {pids:?}", path.display())]
    Busy { path: PathBuf, pids: Vec<u32> },
    /// v2's "no internal processes" rule: controllers cannot be enabled for children of a
    /// cgroup that holds processes itself (see [`Hierarchy::enter_leaf`]).
    #[error(
        "{}: cannot enable controllers in a cgroup that holds processes {pids:?}; move them to a leaf first",
        path.display()
    )]
    InternalProcesses { path: PathBuf, pids: Vec<u32> },
    /// A limit was asked for but the controller or its file is not available at `path`.
    #[error("cannot set {what}: {} does not exist (controller not available)", path.display())]
    Unsupported { path: PathBuf, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long [`Hierarchy::remove`] waits for processes to disappear after SIGKILL. Exiting takes
/// the kernel little time unless a process is stuck in uninterruptible sleep, and then waiting
/// longer does not help the caller; it retries later.
const KILL_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// Rube's node subtree in one cgroup version. See the crate docs for the layout and the v2 rule
/// the caller must follow.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    V1(V1),
    V2(V2),
}

impl Hierarchy {
    /// The node subtree `subtree` (usually `rube`) under the calling process's own cgroup, in
    /// every hierarchy. A machine with v1 hierarchies for memory, pids or cpu is v1 even when
    /// cgroup2 is mounted too (hybrid); otherwise the unified cgroup2 tree is used.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a bad `subtree`, [`Error::Io`] when the /proc files cannot be
    /// read, [`Error::NotMounted`] without any cgroup filesystem.
    pub fn detect(subtree: &str) -> Result<Hierarchy> {
        let subtree = CgroupPath::new(subtree)?;
        let mountinfo = fs::read(Path::new("/proc/self/mountinfo"))?;
        let cgroup = fs::read(Path::new("/proc/self/cgroup"))?;
        let h = detect::detect_from(&mountinfo, &cgroup, &subtree.under(Path::new("")))?;
        tracing::debug!(?h, "detected cgroup hierarchy");
        Ok(h)
    }

    /// v1 with the node subtree of each controller at the given directory (tests: temp dirs).
    pub fn v1_at(roots: Vec<(Subsystem, PathBuf)>) -> Hierarchy {
        Hierarchy::V1(V1::new(roots))
    }

    /// v2 with the node subtree at `root`; its parent directory is taken as the own cgroup,
    /// whose `cgroup.subtree_control` [`Hierarchy::create`] writes too.
    pub fn v2_at(root: PathBuf) -> Hierarchy {
        Hierarchy::V2(V2::new(root))
    }

    pub fn version(&self) -> Version {
        match self {
            Hierarchy::V1(_) => Version::V1,
            Hierarchy::V2(_) => Version::V2,
        }
    }

    /// Creates `path` and its missing ancestors (up to and including the node subtree) in
    /// every hierarchy, enables controllers on the way down (v2), and writes `limits` to `path`.
    /// Idempotent: creating an existing cgroup only rewrites its limits.
    ///
    /// # Errors
    /// [`Error::Io`] for a directory that cannot be made, [`Error::Write`] for a limit the
    /// kernel refuses, [`Error::InternalProcesses`] (v2) when a cgroup on the way holds
    /// processes, [`Error::Unsupported`] for a limit whose controller is missing.
    pub fn create(&self, path: &CgroupPath, limits: &Limits) -> Result<()> {
        match self {
            Hierarchy::V1(h) => h.create(path)?,
            Hierarchy::V2(h) => h.create(path)?,
        }
        self.set_limits(path, limits)
    }

    /// Writes `limits` to the existing cgroup `path`; `None` fields are reset to unlimited.
    ///
    /// # Errors
    /// As for [`Hierarchy::create`].
    pub fn set_limits(&self, path: &CgroupPath, limits: &Limits) -> Result<()> {
        match self {
            Hierarchy::V1(h) => h.set_limits(path, limits),
            Hierarchy::V2(h) => h.set_limits(path, limits),
        }
    }

    /// Moves process `pid` (all its threads) into `path` in every hierarchy.
    ///
    /// # Errors
    /// [`Error::Write`] naming the `cgroup.procs` file and the pid (e.g. `ESRCH` for a process
    /// that is gone, `ENOENT` for a cgroup that does not exist).
    pub fn add_process(&self, path: &CgroupPath, pid: u32) -> Result<()> {
        for dir in self.dirs(path) {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in `path` and the cgroups below it, in any hierarchy, sorted. An absent
    /// cgroup holds none.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Parse`] for an unreadable `cgroup.procs`.
    pub fn procs(&self, path: &CgroupPath) -> Result<Vec<u32>> {
        let mut pids = BTreeSet::new();
        for dir in self.dirs(path) {
            if dir.exists() {
                fs::procs_recursive(&dir, &mut pids)?;
            }
        }
        Ok(pids.into_iter().collect())
    }

    /// Sends `signal` to every process in `path` and below, and returns how many there were.
    /// On v2, SIGKILL goes through `cgroup.kill` where the kernel has it, which also catches
    /// processes forked while the signal is on its way.
    ///
    /// # Errors
    /// As for [`Hierarchy::procs`]; [`Error::Write`] for `cgroup.kill`; [`Error::Io`] when a
    /// signal cannot be sent for another reason than the process being gone.
    pub fn kill(&self, path: &CgroupPath, signal: Signal) -> Result<usize> {
        let pids = self.procs(path)?;
        match (self, signal) {
            (Hierarchy::V2(h), Signal::SIGKILL) if h.cgroup_kill(path)? => Ok(pids.len()),
            _ => signal_all(&pids, signal),
        }
    }

    /// Removes `path` and everything below it: SIGTERM to every process, up to `grace` for them
    /// to exit, then SIGKILL with the cgroup frozen (v1 freezer, v2 `cgroup.kill` or
    /// `cgroup.freeze`) so a fork cannot escape it, a bounded wait until empty, and `rmdir`
    /// deepest first in every hierarchy. Ok when already absent.
    ///
    /// # Errors
    /// [`Error::Busy`] when processes survive SIGKILL for 10 s; [`Error::Io`]
    /// for a directory that cannot be removed (e.g. `EBUSY` when a process joined meanwhile:
    /// call again).
    pub fn remove(&self, path: &CgroupPath, grace: Duration) -> Result<()> {
        if !self.exists(path) {
            return Ok(());
        }
        if !self.procs(path)?.is_empty() {
            self.kill(path, Signal::SIGTERM)?;
            if !self.wait_empty(path, grace)? {
                match self {
                    Hierarchy::V1(h) => h.kill_frozen(path)?,
                    Hierarchy::V2(h) => h.kill_frozen(path)?,
                }
                if !self.wait_empty(path, KILL_WAIT)? {
                    return Err(Error::Busy {
                        path: self.dirs(path).into_iter().next().unwrap_or_default(),
                        pids: self.procs(path)?,
                    });
                }
            }
        }
        for dir in self.dirs(path) {
            fs::rmdir_tree(&dir)?;
        }
        tracing::debug!(%path, "removed cgroup");
        Ok(())
    }

    /// Whether `path` and below became empty within `timeout`.
    fn wait_empty(&self, path: &CgroupPath, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.procs(path)?.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Counters of `path`. Counters of a controller that is not available read 0 (`None` for
    /// the peak).
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound`) when `path` does not exist; [`Error::Io`] or [`Error::Parse`]
    /// for an unreadable file.
    pub fn stats(&self, path: &CgroupPath) -> Result<Stats> {
        match self {
            Hierarchy::V1(h) => h.stats(path),
            Hierarchy::V2(h) => h.stats(path),
        }
    }

    /// The names of the cgroups directly below `path`, in any hierarchy, sorted: what a sweep
    /// compares with the slices that should exist. An absent `path` has none.
    ///
    /// # Errors
    /// [`Error::Io`] for a directory that cannot be read.
    pub fn children(&self, path: &CgroupPath) -> Result<Vec<String>> {
        let mut names = BTreeSet::new();
        for dir in self.dirs(path) {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fs::io_err(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| fs::io_err(&dir, e))?;
                if entry
                    .file_type()
                    .map_err(|e| fs::io_err(&entry.path(), e))?
                    .is_dir()
                {
                    names.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Whether `path` exists in any hierarchy.
    pub fn exists(&self, path: &CgroupPath) -> bool {
        self.dirs(path).iter().any(|d| d.is_dir())
    }

    /// The real directories of `path`: one per v1 hierarchy (comounted controllers share one;
    /// order memory, pids, cpu, cpuacct, freezer), the one directory on v2 (for
    /// `CLONE_INTO_CGROUP`).
    pub fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf> {
        match self {
            Hierarchy::V1(h) => h.unique_roots().iter().map(|r| path.under(r)).collect(),
            Hierarchy::V2(h) => vec![path.under(h.root())],
        }
    }

    /// The directory holding `controller`'s files for `path`: on v1 that controller's hierarchy
    /// (`None` when it is not mounted), on v2 the one directory.
    pub fn dir(&self, path: &CgroupPath, controller: Subsystem) -> Option<PathBuf> {
        match self {
            Hierarchy::V1(h) => h.root(controller).map(|r| path.under(r)),
            Hierarchy::V2(h) => Some(path.under(h.root())),
        }
    }

    /// v2: moves every process of the own cgroup (the node subtree's parent) into the leaf
    /// `<own>/<leaf>`, creating it, so controllers can be enabled below the own cgroup (the "no
    /// internal processes" rule). Call it once at start, before [`Hierarchy::create`]. Returns
    /// the leaf directory, or `None` when there is nothing to do: on v1, which has no such rule,
    /// and when the own cgroup is the v2 root, which is exempt (and whose processes are the
    /// whole machine's).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a bad `leaf` or one equal to the subtree's name;
    /// [`Error::Io`]/[`Error::Write`] when the leaf cannot be made or a process moved.
    pub fn enter_leaf(&self, leaf: &str) -> Result<Option<PathBuf>> {
        match self {
            Hierarchy::V1(_) => Ok(None),
            Hierarchy::V2(h) => h.enter_leaf(leaf),
        }
    }
}

/// Signals each pid, skipping ones that already exited; returns how many were signalled.
fn signal_all(pids: &[u32], signal: Signal) -> Result<usize> {
    let mut sent = 0;
    for &pid in pids {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal) {
            Ok(()) => sent += 1,
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::Io {
                    path: PathBuf::from(format!("/proc/{pid}")),
                    source: io::Error::other(format!("kill {signal}: {e}")),
                });
            }
        }
    }
    Ok(sent)
}

/// Waits up to `timeout` for `file` to contain `want` (a freezer state).
fn wait_file(file: &Path, timeout: Duration, want: impl Fn(&str) -> bool) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if want(&fs::read(file)?) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}
