//! cgroup v1: one hierarchy per controller, each with its own directory for a cgroup. What is
//! written for limits, read for stats, and how a subtree is frozen for killing live here; the
//! operations that only touch `cgroup.procs` and directories are shared in `lib.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{CgroupPath, Error, Limits, Result, Stats, Subsystem, fs};

/// The CFS period Rube uses everywhere (100 ms, the kernel's default).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas below 1 ms.
pub(crate) const CPU_MIN_QUOTA_US: u64 = 1_000;

/// The quota in microseconds per [`CPU_PERIOD_US`] for `millis` thousandths of a core.
pub(crate) fn cpu_quota_us(millis: u64) -> u64 {
    millis
        .saturating_mul(CPU_PERIOD_US / 1000)
        .max(CPU_MIN_QUOTA_US)
}

/// The node subtree's directory in each v1 hierarchy.
#[derive(Debug, Clone)]
pub struct V1 {
    roots: Vec<(Subsystem, PathBuf)>,
}

impl V1 {
    pub(crate) fn new(mut roots: Vec<(Subsystem, PathBuf)>) -> V1 {
        roots.sort_by_key(|(c, _)| *c);
        roots.dedup_by_key(|(c, _)| *c);
        V1 { roots }
    }

    /// Each controller with the node subtree's directory in its hierarchy, in
    /// [`Subsystem::ALL`] order.
    pub fn roots(&self) -> &[(Subsystem, PathBuf)] {
        &self.roots
    }

    pub(crate) fn root(&self, c: Subsystem) -> Option<&Path> {
        self.roots
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, p)| p.as_path())
    }

    /// The distinct directories: comounted controllers (`cpu,cpuacct`) share one.
    pub(crate) fn unique_roots(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, p) in &self.roots {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        out
    }

    fn dir(&self, c: Subsystem, path: &CgroupPath) -> Option<PathBuf> {
        self.root(c).map(|r| path.under(r))
    }

    pub(crate) fn create(&self, path: &CgroupPath) -> Result<()> {
        for root in self.unique_roots() {
            let dir = path.under(root);
            std::fs::create_dir_all(&dir).map_err(|e| fs::io_err(&dir, e))?;
        }
        Ok(())
    }

    pub(crate) fn set_limits(&self, path: &CgroupPath, limits: &Limits) -> Result<()> {
        let dir = |c| self.dir(c, path);
        set_cpu(dir(Subsystem::Cpu), path, limits.cpu_millis)?;
        set_memory(dir(Subsystem::Memory), path, limits.memory_bytes)?;
        let value = limits.pids.map_or("max".to_string(), |n| n.to_string());
        let wanted = limits.pids.is_some();
        write_limit(
            dir(Subsystem::Pids),
            Subsystem::Pids,
            path,
            "pids.max",
            &value,
            wanted,
        )
    }

    pub(crate) fn stats(&self, path: &CgroupPath) -> Result<Stats> {
        let dirs: Vec<PathBuf> = self.unique_roots().iter().map(|r| path.under(r)).collect();
        if !dirs.iter().any(|d| d.is_dir()) {
            let missing = dirs
                .into_iter()
                .next()
                .unwrap_or_else(|| path.under(Path::new("")));
            return Err(fs::io_err(&missing, std::io::ErrorKind::NotFound.into()));
        }
        let mut s = Stats::default();
        if let Some(d) = self.dir(Subsystem::Memory, path) {
            s.memory_current = fs::read_u64(&d.join("memory.usage_in_bytes"))?;
            s.memory_peak = Some(fs::read_u64(&d.join("memory.max_usage_in_bytes"))?);
            // `oom_kill` appeared in 4.13; older kernels only say `under_oom`.
            let f = d.join("memory.oom_control");
            s.oom_kills = fs::keyed(&f, &fs::read(&f)?, "oom_kill")?.unwrap_or(0);
        }
        if let Some(d) = self.dir(Subsystem::Cpuacct, path) {
            s.cpu_usage_usec = fs::read_u64(&d.join("cpuacct.usage"))? / 1000;
        }
        if let Some(d) = self.dir(Subsystem::Cpu, path) {
            let f = d.join("cpu.stat");
            if let Some(text) = fs::read_optional(&f)? {
                s.cpu_throttled_periods = fs::keyed(&f, &text, "nr_throttled")?.unwrap_or(0);
                s.cpu_throttled_usec = fs::keyed(&f, &text, "throttled_time")?.unwrap_or(0) / 1000;
            }
        }
        if let Some(d) = self.dir(Subsystem::Pids, path) {
            s.pids_current = fs::read_u64(&d.join("pids.current"))?;
        }
        Ok(s)
    }

    /// SIGKILL to every process below `path` with the freezer holding them still, so none can
    /// fork a child the signal misses. Frozen tasks act on SIGKILL only when thawed, hence
    /// freeze, signal, thaw. Without a freezer hierarchy the signal goes out unfrozen.
    pub(crate) fn kill_frozen(&self, path: &CgroupPath) -> Result<()> {
        let state = self
            .dir(Subsystem::Freezer, path)
            .map(|d| d.join("freezer.state"))
            .filter(|f| f.exists());
        let pids = |s: &Self| -> Result<Vec<u32>> {
            let mut set = std::collections::BTreeSet::new();
            for r in s.unique_roots() {
                let d = path.under(r);
                if d.exists() {
                    fs::procs_recursive(&d, &mut set)?;
                }
            }
            Ok(set.into_iter().collect())
        };
        let Some(state) = state else {
            crate::signal_all(&pids(self)?, Signal::SIGKILL)?;
            return Ok(());
        };
        fs::write(&state, "FROZEN")?;
        // FREEZING lasts while a task is in a state it cannot be frozen in; kill anyway after a
        // while, the freeze only narrows the fork race.
        let frozen = crate::wait_file(&state, Duration::from_secs(1), |s| s.trim() == "FROZEN")?;
        if !frozen {
            tracing::debug!(state = %state.display(), "freezer did not reach FROZEN; killing anyway");
        }
        let result = pids(self).and_then(|p| crate::signal_all(&p, Signal::SIGKILL));
        fs::write(&state, "THAWED")?;
        result.map(drop)
    }
}

/// Writes `value` to `dir/file`, or says why it cannot when the limit is actually wanted.
/// An unwanted limit (`None`) on a controller that is not there is fine: it is unlimited.
fn write_limit(
    dir: Option<PathBuf>,
    controller: Subsystem,
    path: &CgroupPath,
    file: &str,
    value: &str,
    wanted: bool,
) -> Result<()> {
    match dir.map(|d| d.join(file)) {
        Some(f) if f.exists() => fs::write(&f, value),
        Some(f) if wanted => Err(Error::Unsupported {
            path: f,
            what: format!("{file}={value}"),
        }),
        None if wanted => Err(Error::NotMounted(format!(
            "no {} hierarchy: cannot set {file}={value} on {path}",
            controller.name()
        ))),
        _ => Ok(()),
    }
}

fn set_cpu(dir: Option<PathBuf>, path: &CgroupPath, millis: Option<u64>) -> Result<()> {
    let quota = millis.map_or("-1".to_string(), |m| cpu_quota_us(m).to_string());
    if let (Some(d), Some(_)) = (&dir, millis) {
        // Rewrite the period only when it differs: with a quota set, the kernel rechecks the
        // hierarchy on every period write.
        let period = d.join("cpu.cfs_period_us");
        if period.exists() && fs::read_u64(&period)? != CPU_PERIOD_US {
            fs::write(&period, &CPU_PERIOD_US.to_string())?;
        }
    }
    write_limit(
        dir,
        Subsystem::Cpu,
        path,
        "cpu.cfs_quota_us",
        &quota,
        millis.is_some(),
    )
}

/// The kernel requires memsw >= limit at every moment, so raising a limit writes memsw first
/// and lowering writes it last. With memsw equal to the limit, the cgroup cannot swap.
fn set_memory(dir: Option<PathBuf>, path: &CgroupPath, bytes: Option<u64>) -> Result<()> {
    let value = bytes.map_or("-1".to_string(), |b| b.to_string());
    let Some(d) = dir
        .clone()
        .filter(|d| d.join("memory.limit_in_bytes").exists())
    else {
        let wanted = bytes.is_some();
        return write_limit(
            dir,
            Subsystem::Memory,
            path,
            "memory.limit_in_bytes",
            &value,
            wanted,
        );
    };
    let limit = d.join("memory.limit_in_bytes");
    let memsw = d.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return fs::write(&limit, &value);
    }
    let current = fs::read_u64(&limit)?;
    if bytes.unwrap_or(u64::MAX) >= current {
        fs::write(&memsw, &value)?;
        fs::write(&limit, &value)
    } else {
        fs::write(&limit, &value)?;
        fs::write(&memsw, &value)
    }
}
