//! Rube's cgroups: one interface over cgroup v1 and v2 (youki's libcgroups is the model).
//!
//! # Layout
//! - [`Hierarchy`]: where Rube's subtree lives, v1 (one directory per controller) or v2 (one
//!   unified tree), detected from `/proc/self/mountinfo` and `/proc/self/cgroup`, or pointed at a
//!   temp dir in tests.
//! - [`Limits`] and [`Stats`]: what is written and read, as plain data.
//! - [`CgroupPath`]: a path relative to Rube's node subtree (`rube/<herd>/<slice>`), validated.
//!
//! Every operation writes or reads plain files under the paths it is given; errors carry the
//! path and the value that failed. Nothing here spawns processes or knows about slices.
//!
//! STATUS: interface only. The implementation is being written (see the `cgroups` helper task);
//! signatures here are the contract other crates code against.

use std::path::PathBuf;
use std::time::Duration;

/// Limits of one cgroup. `None` leaves the kernel default (unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core: v2 `cpu.max` = "<millis*period/1000> <period>",
    /// v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`.
    pub cpu_millis: Option<u64>,
    /// v2 `memory.max` (and `memory.swap.max` = 0 where present), v1
    /// `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where present).
    pub memory_bytes: Option<u64>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// Counters read from one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub memory_current: u64,
    pub memory_peak: Option<u64>,
    /// How many times the OOM killer killed a process in this cgroup (v2 `memory.events`
    /// `oom_kill`, v1 `memory.oom_control` `oom_kill`).
    pub oom_kills: u64,
    /// CPU time used, microseconds (v2 `cpu.stat` usage_usec, v1 `cpuacct.usage` / 1000).
    pub cpu_usage_usec: u64,
    /// Periods in which the cgroup was throttled, and for how long (v2 `cpu.stat`, v1
    /// `cpu.stat`).
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_usec: u64,
    pub pids_current: u64,
}

/// The interface (implemented by the `cgroups` task; names and signatures are the contract):
///
/// ```text
/// pub struct CgroupPath  // relative to Rube's node subtree; segments [a-z0-9._-]+, no "..", Display "herd/slice"
///   fn new(path: &str) -> Result<CgroupPath>;  fn join(&self, segment: &str) -> Result<CgroupPath>
/// pub enum Version { V1, V2 }
/// pub enum Hierarchy { V1(V1), V2(V2) }
///   fn detect(subtree: &str) -> Result<Hierarchy>     // the node subtree ("rube") under the
///                                                     // process's own cgroup in each hierarchy
///   fn v1_at(roots: Vec<(Controller, PathBuf)>) -> Hierarchy   // tests: temp dirs
///   fn v2_at(root: PathBuf) -> Hierarchy                          // tests: a temp dir
///   fn version(&self) -> Version
///   fn create(&self, path: &CgroupPath, limits: &Limits) -> Result<()>   // mkdir -p, enable
///        // controllers on the way down (v2 subtree_control), write limits; idempotent
///   fn set_limits(&self, path: &CgroupPath, limits: &Limits) -> Result<()>
///   fn add_process(&self, path: &CgroupPath, pid: u32) -> Result<()>    // every hierarchy
///   fn procs(&self, path: &CgroupPath) -> Result<Vec<u32>>              // recursive
///   fn kill(&self, path: &CgroupPath, signal: nix::sys::signal::Signal) -> Result<usize>
///   fn remove(&self, path: &CgroupPath, grace: Duration) -> Result<()>  // SIGTERM, wait up to
///        // grace, SIGKILL, wait until empty, rmdir deepest first; Ok when already absent
///   fn stats(&self, path: &CgroupPath) -> Result<Stats>
///   fn children(&self, path: &CgroupPath) -> Result<Vec<String>>        // for orphan sweeps
///   fn exists(&self, path: &CgroupPath) -> bool
///   fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf>  // the directories: one per v1
///        // controller, one on v2 (for status and CLONE_INTO_CGROUP)
/// pub enum Error { Io { path: PathBuf, source }, Write { path, value, source }, Parse { path, .. },
///                  InvalidPath(String), NotMounted(String), Busy { path, pids } }
/// ```
#[doc(hidden)]
pub fn _contract(_: Duration, _: PathBuf) {}
