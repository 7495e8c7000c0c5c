//! [`SliceController`]: runs the `runink.Slice`s bound to this node (label `node=<name>`), one
//! shim each, and reports their status.
//!
//! `observe` reads only this node's state — the slice dir the shim writes, the controller's own
//! record of the run (`run.json`) and of the last status it wrote (`status.pb`), the Herd quota
//! from the rubelet's cache, and the clock — never the apiserver, so slices are kept running
//! and restarted while the apiserver is unreachable. [`reconcile`] is pure; [`simulate`] models
//! the executor for the fixpoint tests. Restart back-off is data: the observed state carries
//! `now`, and a [`Effect::WakeAt`] asks to be woken when the back-off ends.
//!
//! Wakeups: the shim's exit and the end of a back-off are not object changes, so the runtime
//! does not see them. The controller sends the key on the channel [`SliceController::wakeups`]
//! hands out, and the runtime reconciles the key (`controllers::run_with_wakeups`, as the
//! rubelet runs it).
//!
//! Nothing here forks or writes cgroup limits of slices: the shim does.
//!
//! # Files
//! - `mod.rs`: [`Config`] (how the rubelet builds the controller) and [`Params`] (the plain
//!   data `reconcile` reads of it).
//! - [`model`]: what `observe` sees ([`Observed`], [`Run`]), the [`Effect`]s, and the launch spec
//!   and restart rule they are built from. Pure.
//! - [`reconcile`]: the pure [`reconcile()`] and its executor model [`simulate`].
//! - [`executor`]: [`SliceController`]: `observe`, `execute`, the wakers of exits and
//!   back-offs, and the slice dir's files.
//! - [`sweep`]: [`sweep()`], the cleanup of orphaned cgroups at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cgroups::Hierarchy;
use controllers::Backoff;
use rubeapi::Client;
use rubeapi::runink::Quota;

use crate::spec::HierarchySpec;

pub mod executor;
pub mod model;
pub mod reconcile;
pub mod sweep;

pub use executor::{SliceController, slice_dir};
pub use model::{Effect, Observed, Run, launch_spec, restarts};
pub use reconcile::{reconcile, simulate};
pub use sweep::sweep;

/// The quota of a Herd by name (from the rubelet's cache of Herds).
pub type HerdQuota = Arc<dyn Fn(&str) -> Option<Quota> + Send + Sync>;

/// How the rubelet builds the controller.
pub struct Config {
    pub node: String,
    /// Slice dirs are `<state_dir>/slices/<namespace>/<name>/`.
    pub state_dir: PathBuf,
    /// FIFOs are `<pipes_dir>/<namespace>/<name>`.
    pub pipes_dir: PathBuf,
    /// The binary whose `shim --dir <dir>` runs [`crate::main_from_args`].
    pub shim_exe: PathBuf,
    pub hierarchy: Hierarchy,
    pub client: Client,
    /// Between SIGTERM and SIGKILL when a slice is stopped or times out.
    pub kill_grace: Duration,
    /// One log file's size before rotation, and how many are kept.
    pub log_file_bytes: u64,
    pub log_files: u32,
    /// Delay before the n-th restart: `initial · 2^(n−1)` up to `max`.
    pub restart_backoff: Backoff,
    /// The quota of a Herd by name, from the rubelet's cache.
    pub herd_quota: HerdQuota,
}

impl Config {
    /// Defaults for everything but what only the rubelet knows.
    pub fn new(
        node: &str,
        state_dir: &Path,
        shim_exe: &Path,
        hierarchy: Hierarchy,
        client: Client,
    ) -> Config {
        Config {
            node: node.to_owned(),
            state_dir: state_dir.to_owned(),
            pipes_dir: state_dir.join("pipes"),
            shim_exe: shim_exe.to_owned(),
            hierarchy,
            client,
            kill_grace: Duration::from_secs(10),
            log_file_bytes: 10 << 20,
            log_files: 3,
            restart_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            herd_quota: Arc::new(|_| None),
        }
    }
}

/// What reconcile needs from the config: plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub node: String,
    pub pipes_dir: PathBuf,
    pub hierarchy: HierarchySpec,
    pub kill_grace: Duration,
    pub log_file_bytes: u64,
    pub log_files: u32,
    pub restart_backoff: Backoff,
}
