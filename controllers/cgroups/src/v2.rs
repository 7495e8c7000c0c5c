//! cgroup v2: one unified tree. Enabling controllers through `cgroup.subtree_control`, what is
//! written for limits, read for stats, `cgroup.kill`/`cgroup.freeze`, and moving the caller out
//! of its own cgroup (`enter_leaf`) live here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::v1::{CPU_PERIOD_US, cpu_quota_us};
use crate::{CgroupPath, Error, Limits, Result, Stats, fs};

/// The controllers Rube enables for its cgroups, in the order they are written.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The node subtree's directory in the unified tree; its parent is the own cgroup.
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
}

impl V2 {
    pub(crate) fn new(root: PathBuf) -> V2 {
        V2 { root }
    }

    /// The node subtree's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The process's own cgroup: the node subtree's parent.
    pub fn own(&self) -> &Path {
        self.root.parent().unwrap_or(Path::new("/"))
    }

    /// mkdir each missing level from the node subtree down to `path`, enabling controllers in
    /// the own cgroup and in every ancestor of `path` before its child is made, so the child
    /// appears with the controllers' files.
    pub(crate) fn create(&self, path: &CgroupPath) -> Result<()> {
        enable_controllers(self.own())?;
        let mut dir = self.root.clone();
        mkdir(&dir)?;
        for segment in path.segments() {
            enable_controllers(&dir)?;
            dir.push(segment);
            mkdir(&dir)?;
        }
        Ok(())
    }

    pub(crate) fn set_limits(&self, path: &CgroupPath, limits: &Limits) -> Result<()> {
        let dir = path.under(&self.root);
        let cpu = match limits.cpu_millis {
            Some(m) => format!("{} {CPU_PERIOD_US}", cpu_quota_us(m)),
            None => format!("max {CPU_PERIOD_US}"),
        };
        write_limit(&dir, "cpu.max", &cpu, limits.cpu_millis.is_some())?;
        let max = |v: Option<u64>| v.map_or("max".to_string(), |n| n.to_string());
        write_limit(
            &dir,
            "memory.max",
            &max(limits.memory_bytes),
            limits.memory_bytes.is_some(),
        )?;
        // No swap beyond a memory limit, as v1's memsw = limit; unlimited memory may swap.
        let swap = if limits.memory_bytes.is_some() {
            "0"
        } else {
            "max"
        };
        write_limit(&dir, "memory.swap.max", swap, false)?;
        write_limit(&dir, "pids.max", &max(limits.pids), limits.pids.is_some())
    }

    pub(crate) fn stats(&self, path: &CgroupPath) -> Result<Stats> {
        let dir = path.under(&self.root);
        if !dir.is_dir() {
            return Err(fs::io_err(&dir, std::io::ErrorKind::NotFound.into()));
        }
        let optional_u64 = |file: &str| -> Result<Option<u64>> {
            let f = dir.join(file);
            fs::read_optional(&f)?
                .map(|s| fs::parse(&f, &s))
                .transpose()
        };
        let keyed = |file: &str, key: &str| -> Result<u64> {
            let f = dir.join(file);
            match fs::read_optional(&f)? {
                Some(text) => Ok(fs::keyed(&f, &text, key)?.unwrap_or(0)),
                None => Ok(0),
            }
        };
        Ok(Stats {
            memory_current: optional_u64("memory.current")?.unwrap_or(0),
            // memory.peak appeared in 5.19.
            memory_peak: optional_u64("memory.peak")?,
            // memory.events counts this cgroup and its descendants.
            oom_kills: keyed("memory.events", "oom_kill")?,
            cpu_usage_usec: keyed("cpu.stat", "usage_usec")?,
            cpu_throttled_periods: keyed("cpu.stat", "nr_throttled")?,
            cpu_throttled_usec: keyed("cpu.stat", "throttled_usec")?,
            pids_current: optional_u64("pids.current")?.unwrap_or(0),
        })
    }

    /// Writes `cgroup.kill` (5.14+), which SIGKILLs the whole subtree including processes
    /// forked meanwhile. False when the kernel lacks it.
    pub(crate) fn cgroup_kill(&self, path: &CgroupPath) -> Result<bool> {
        let f = path.under(&self.root).join("cgroup.kill");
        if !f.exists() {
            return Ok(false);
        }
        fs::write(&f, "1")?;
        Ok(true)
    }

    /// SIGKILL to the subtree without a fork race: `cgroup.kill` where present, else frozen
    /// with `cgroup.freeze` (v2 lets SIGKILL through to frozen tasks) and signalled.
    pub(crate) fn kill_frozen(&self, path: &CgroupPath) -> Result<()> {
        if self.cgroup_kill(path)? {
            return Ok(());
        }
        let dir = path.under(&self.root);
        let freeze = dir.join("cgroup.freeze");
        let mut pids = std::collections::BTreeSet::new();
        if !freeze.exists() {
            fs::procs_recursive(&dir, &mut pids)?;
            return crate::signal_all(&pids.into_iter().collect::<Vec<_>>(), Signal::SIGKILL)
                .map(drop);
        }
        fs::write(&freeze, "1")?;
        let events = dir.join("cgroup.events");
        crate::wait_file(&events, Duration::from_secs(1), |s| {
            s.lines().any(|l| l == "frozen 1")
        })?;
        let result = fs::procs_recursive(&dir, &mut pids).and_then(|()| {
            crate::signal_all(&pids.into_iter().collect::<Vec<_>>(), Signal::SIGKILL)
        });
        fs::write(&freeze, "0")?;
        result.map(drop)
    }

    pub(crate) fn enter_leaf(&self, leaf: &str) -> Result<Option<PathBuf>> {
        let name = CgroupPath::root().join(leaf)?;
        if Some(std::ffi::OsStr::new(leaf)) == self.root.file_name() {
            return Err(Error::InvalidPath(format!(
                "{leaf:?}: the leaf for the caller cannot be the node subtree itself"
            )));
        }
        let own = self.own();
        // The root cgroup is exempt from the rule, and its cgroup.procs lists every process on
        // the machine that sits there: moving them would be wrong. Only the root lacks
        // cgroup.type.
        if !own.join("cgroup.type").exists() {
            return Ok(None);
        }
        let dir = name.under(own);
        mkdir(&dir)?;
        let procs = own.join("cgroup.procs");
        // Processes may fork while we move them; a few rounds catch the children.
        for _ in 0..10 {
            let text = fs::read(&procs)?;
            let pids: Vec<u32> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| fs::parse(&procs, l))
                .collect::<Result<_>>()?;
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                match fs::write(&dir.join("cgroup.procs"), &pid.to_string()) {
                    // Exited between the read and the write.
                    Err(Error::Write { source, .. })
                        if source.raw_os_error() == Some(libc_esrch()) => {}
                    other => other?,
                }
            }
        }
        Ok(Some(dir))
    }
}

fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fs::io_err(dir, e)),
    }
}

/// The controller names in a `cgroup.controllers` or `cgroup.subtree_control` file.
fn controller_names(text: &str) -> Vec<&str> {
    // The kernel prints bare names; a "+" can only come from a plain file that took our write
    // verbatim (the temp-dir tests), and means the same.
    text.split_whitespace()
        .map(|w| w.trim_start_matches('+'))
        .collect()
}

/// Enables in `dir`'s `cgroup.subtree_control` those of cpu, memory and pids that `dir` has
/// and has not enabled yet, in one write.
fn enable_controllers(dir: &Path) -> Result<()> {
    let available = fs::read(&dir.join("cgroup.controllers"))?;
    let available = controller_names(&available);
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&control)?;
    let enabled = controller_names(&enabled);
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    match fs::write(&control, &missing.join(" ")) {
        Err(Error::Write { source, .. })
            if source.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) =>
        {
            let mut pids = std::collections::BTreeSet::new();
            if let Some(text) = fs::read_optional(&dir.join("cgroup.procs"))? {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            Err(Error::InternalProcesses {
                path: dir.to_path_buf(),
                pids: pids.into_iter().collect(),
            })
        }
        other => other,
    }
}

/// Writes `value` to `dir/file`; a missing file is an error only when the limit is wanted (the
/// controller is not enabled here, so an unlimited value is already in effect).
fn write_limit(dir: &Path, file: &str, value: &str, wanted: bool) -> Result<()> {
    let f = dir.join(file);
    if f.exists() {
        fs::write(&f, value)
    } else if wanted {
        Err(Error::Unsupported {
            path: f,
            what: format!("{file}={value}"),
        })
    } else {
        Ok(())
    }
}
