//! Talking to a systemd manager: the [`Systemd`] trait, the real [`Systemctl`], and the
//! [`RecordingSystemd`] fake for tests. No decisions live here: what to call, and when, is the
//! controller's reconcile.
//!
//! The real implementation runs `systemctl` rather than speaking D-Bus (zbus):
//! - `systemctl` reaches the system manager through its private socket
//!   (`/run/systemd/private`), with no system bus running, and a user manager the same way;
//! - `start`, `restart` and `stop` wait for their job and report its failure, which over D-Bus
//!   means subscribing to `JobRemoved` and matching job paths by hand;
//! - it adds no dependency tree to the node agent, and a process per call costs milliseconds,
//!   nothing next to a unit's start.
//!
//! A command prefix ([`Systemctl::with_prefix`]) runs it through e.g. `nsenter`, which is how
//! the tests reach a user manager inside a PID namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::Error;

/// What the manager said about itself at [`Systemd::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    /// systemd's version, e.g. `252.38-1~deb12u1`.
    pub version: String,
    /// `running`, `degraded`, `starting`, ...
    pub state: String,
}

/// A unit's properties as `systemctl show` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    pub load_state: String,
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    pub active_state: String,
    /// The type-specific state: `running`, `dead`, `exited`, `auto-restart`, ...
    pub sub_state: String,
    /// The main process, 0 when none (in the manager's PID namespace).
    pub main_pid: u32,
    /// The exit status (or signal number) of the last main process.
    pub exec_main_status: i32,
    /// `enabled`, `disabled`, `static`, `linked`, `masked`, or empty when there is no file.
    pub unit_file_state: String,
    /// The file on disk changed since the manager loaded it.
    pub need_daemon_reload: bool,
    /// When the active state last changed, in seconds since the epoch.
    pub state_change: Option<i64>,
}

impl UnitState {
    /// Running, or on its way up or down: something a stop would end.
    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "deactivating" | "reloading"
        )
    }
}

/// Which manager a [`Systemctl`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The system manager (PID 1): units in `/etc/systemd/system`.
    System,
    /// The calling user's manager (`systemctl --user`): units in `~/.config/systemd/user`.
    User,
}

/// A systemd manager. Unit names are full names (`indexer.service`).
///
/// Every method is idempotent: enabling an enabled unit or stopping a stopped one succeeds.
pub trait Systemd: Send + Sync + 'static {
    /// The target a unit with no `[Install]` target of its own is wanted by:
    /// `multi-user.target` for the system manager, `default.target` for a user manager.
    fn default_target(&self) -> &str;

    /// Whether the manager is there to talk to.
    ///
    /// # Errors
    /// [`Error::NotBooted`] when the system manager is asked for and PID 1 is not systemd;
    /// [`Error::Unreachable`] when the manager does not answer.
    fn check(&self) -> impl Future<Output = Result<Manager, Error>> + Send;

    /// Makes the manager read unit files again.
    ///
    /// # Errors
    /// [`Error::Systemctl`] or [`Error::Unreachable`].
    fn daemon_reload(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Enables a unit: the symlinks its `[Install]` section asks for.
    ///
    /// # Errors
    /// [`Error::Systemctl`] (e.g. the unit is masked) or [`Error::Unreachable`].
    fn enable(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes the symlinks [`Systemd::enable`] made.
    ///
    /// # Errors
    /// As [`Systemd::enable`].
    fn disable(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Starts a unit and waits for the job.
    ///
    /// # Errors
    /// [`Error::JobFailed`] when the job ran and failed (the unit's state says why);
    /// [`Error::Systemctl`] or [`Error::Unreachable`] otherwise.
    fn start(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Restarts a unit (starts it when stopped) and waits for the job.
    ///
    /// # Errors
    /// As [`Systemd::start`].
    fn restart(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stops a unit and waits for the job.
    ///
    /// # Errors
    /// As [`Systemd::start`].
    fn stop(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Forgets a failed unit's failure, so a removed unit leaves the manager's memory.
    ///
    /// # Errors
    /// [`Error::Systemctl`] or [`Error::Unreachable`].
    fn reset_failed(&self, unit: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// A unit's state. A unit the manager does not know is `load_state: "not-found"`.
    ///
    /// # Errors
    /// [`Error::Unreachable`], [`Error::Systemctl`] or [`Error::Output`].
    fn show(&self, unit: &str) -> impl Future<Output = Result<UnitState, Error>> + Send;
}

/// The real manager, through `systemctl`.
#[derive(Debug, Clone)]
pub struct Systemctl {
    scope: Scope,
    prefix: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Where PID 1's name is read, to say clearly when systemd is not PID 1.
    proc_root: PathBuf,
}

impl Systemctl {
    /// The system manager. The default for a node.
    pub fn system() -> Systemctl {
        Systemctl {
            scope: Scope::System,
            prefix: Vec::new(),
            env: Vec::new(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// The calling user's manager (`systemctl --user`).
    pub fn user() -> Systemctl {
        Systemctl {
            scope: Scope::User,
            ..Systemctl::system()
        }
    }

    /// Runs `systemctl` through `prefix` (e.g. `nsenter -t PID -m -p`). With a prefix, PID 1 is
    /// not checked: the manager lives wherever the prefix leads.
    pub fn with_prefix<I, S>(mut self, prefix: I) -> Systemctl
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.prefix = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Sets an environment variable for `systemctl` (e.g. `XDG_RUNTIME_DIR` for a user manager).
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Systemctl {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn command_line(&self, args: &[&str]) -> String {
        let mut words: Vec<String> = self
            .prefix
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        words.push("systemctl".into());
        if self.scope == Scope::User {
            words.push("--user".into());
        }
        words.extend(args.iter().map(|a| (*a).to_owned()));
        words.join(" ")
    }

    /// Runs systemctl with `args`; its stdout on success.
    async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let mut words: Vec<OsString> = self.prefix.clone();
        words.push("systemctl".into());
        if self.scope == Scope::User {
            words.push("--user".into());
        }
        words.extend(args.iter().map(OsString::from));
        let mut command = tokio::process::Command::new(&words[0]);
        command
            .args(&words[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = command.output().await.map_err(|source| Error::Spawn {
            program: words[0].to_string_lossy().into_owned(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let command = self.command_line(args);
        // systemctl's own words for the two failures that are not "the call was wrong".
        if stderr.starts_with("Job for ") || stderr.contains(" failed because ") {
            Err(Error::JobFailed { command, stderr })
        } else if stderr.contains("Failed to connect to bus")
            || stderr.contains("Transport endpoint is not connected")
            || stderr.contains("has not been booted with systemd")
        {
            Err(Error::Unreachable { command, stderr })
        } else {
            Err(Error::Systemctl {
                command,
                status: output.status.to_string(),
                stderr,
            })
        }
    }
}

/// Parses `Key=value` lines of `systemctl show`.
fn properties(output: &str) -> BTreeMap<&str, &str> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect()
}

/// The properties [`Systemd::show`] reads.
const SHOWN: &str = "LoadState,ActiveState,SubState,MainPID,ExecMainStatus,UnitFileState,\
                     NeedDaemonReload,StateChangeTimestamp";

/// A [`UnitState`] from `systemctl show --timestamp=unix -p SHOWN` output.
pub fn parse_show(command: &str, output: &str) -> Result<UnitState, Error> {
    let p = properties(output);
    let bad = |reason: String| Error::Output {
        command: command.to_owned(),
        reason,
    };
    let get = |key: &str| -> Result<String, Error> {
        p.get(key)
            .map(|v| (*v).to_owned())
            .ok_or_else(|| bad(format!("no {key}= in the output")))
    };
    let number = |key: &str| -> Result<i64, Error> {
        let value = get(key)?;
        value
            .parse()
            .map_err(|_| bad(format!("{key}={value} is not a number")))
    };
    let state_change = match get("StateChangeTimestamp")?.as_str() {
        "" | "n/a" => None,
        value => Some(
            value
                .strip_prefix('@')
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("StateChangeTimestamp={value} is not @seconds")))?,
        ),
    };
    Ok(UnitState {
        load_state: get("LoadState")?,
        active_state: get("ActiveState")?,
        sub_state: get("SubState")?,
        main_pid: u32::try_from(number("MainPID")?).map_err(|e| bad(e.to_string()))?,
        exec_main_status: i32::try_from(number("ExecMainStatus")?)
            .map_err(|e| bad(e.to_string()))?,
        unit_file_state: get("UnitFileState")?,
        need_daemon_reload: get("NeedDaemonReload")? == "yes",
        state_change,
    })
}

impl Systemd for Systemctl {
    fn default_target(&self) -> &str {
        match self.scope {
            Scope::System => "multi-user.target",
            Scope::User => "default.target",
        }
    }

    async fn check(&self) -> Result<Manager, Error> {
        if self.scope == Scope::System && self.prefix.is_empty() {
            let comm = self.proc_root.join("1/comm");
            let pid1 = tokio::fs::read_to_string(&comm)
                .await
                .map_err(Error::io(&comm))?
                .trim()
                .to_owned();
            if pid1 != "systemd" || !Path::new("/run/systemd/system").is_dir() {
                return Err(Error::NotBooted { pid1 });
            }
        }
        let args = ["show", "-p", "Version,SystemState"];
        let output = self.run(&args).await.map_err(|e| match e {
            Error::Systemctl {
                command, stderr, ..
            } => Error::Unreachable { command, stderr },
            other => other,
        })?;
        let p = properties(&output);
        Ok(Manager {
            version: p.get("Version").copied().unwrap_or_default().to_owned(),
            state: p.get("SystemState").copied().unwrap_or_default().to_owned(),
        })
    }

    async fn daemon_reload(&self) -> Result<(), Error> {
        self.run(&["daemon-reload"]).await.map(drop)
    }

    async fn enable(&self, unit: &str) -> Result<(), Error> {
        self.run(&["enable", "--", unit]).await.map(drop)
    }

    async fn disable(&self, unit: &str) -> Result<(), Error> {
        self.run(&["disable", "--", unit]).await.map(drop)
    }

    async fn start(&self, unit: &str) -> Result<(), Error> {
        self.run(&["start", "--", unit]).await.map(drop)
    }

    async fn restart(&self, unit: &str) -> Result<(), Error> {
        self.run(&["restart", "--", unit]).await.map(drop)
    }

    async fn stop(&self, unit: &str) -> Result<(), Error> {
        self.run(&["stop", "--", unit]).await.map(drop)
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), Error> {
        self.run(&["reset-failed", "--", unit]).await.map(drop)
    }

    async fn show(&self, unit: &str) -> Result<UnitState, Error> {
        let args = ["show", "--timestamp=unix", "-p", SHOWN, "--", unit];
        let output = self.run(&args).await?;
        parse_show(&self.command_line(&args), &output)
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    DaemonReload,
    Enable(String),
    Disable(String),
    Start(String),
    Restart(String),
    Stop(String),
    ResetFailed(String),
}

/// A fake manager for tests: records every changing call in order and keeps the state a real
/// manager would, reading unit files from a unit dir at daemon-reload (so a missing reload
/// shows as `need_daemon_reload`, and a unit the manager never loaded as `not-found`).
/// Clones share one state, so a test keeps a handle while the controller owns another.
#[derive(Debug, Clone)]
pub struct RecordingSystemd {
    unit_dir: PathBuf,
    inner: Arc<Mutex<Fake>>,
}

#[derive(Debug, Default)]
struct Fake {
    calls: Vec<Call>,
    /// Unit files as the manager last loaded them.
    loaded: BTreeMap<String, Vec<u8>>,
    enabled: BTreeSet<String>,
    running: BTreeMap<String, u32>,
    failed: BTreeSet<String>,
    /// Units whose start and restart jobs fail.
    failing: BTreeSet<String>,
    next_pid: u32,
    unreachable: bool,
}

impl RecordingSystemd {
    /// A fake manager whose unit files are in `unit_dir`.
    pub fn new(unit_dir: impl Into<PathBuf>) -> RecordingSystemd {
        RecordingSystemd {
            unit_dir: unit_dir.into(),
            inner: Arc::new(Mutex::new(Fake {
                next_pid: 100,
                ..Fake::default()
            })),
        }
    }

    /// The changing calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// From now on, start and restart jobs of `unit` fail (as a service whose process exits
    /// with an error at once).
    pub fn fail_starts(&self, unit: &str) {
        self.lock().failing.insert(unit.to_owned());
    }

    /// Makes every call fail as if the manager were gone.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, call: Call) -> Result<std::sync::MutexGuard<'_, Fake>, Error> {
        let mut fake = self.lock();
        if fake.unreachable {
            return Err(Error::Unreachable {
                command: format!("{call:?}"),
                stderr: "the fake manager is unreachable".into(),
            });
        }
        fake.calls.push(call);
        Ok(fake)
    }

    fn start_job(&self, unit: &str, call: Call) -> Result<(), Error> {
        let mut fake = self.call(call)?;
        if !fake.loaded.contains_key(unit) {
            return Err(Error::Systemctl {
                command: format!("start {unit}"),
                status: "exit status: 5".into(),
                stderr: format!("Failed to start {unit}: Unit {unit} not found."),
            });
        }
        if fake.failing.contains(unit) {
            fake.running.remove(unit);
            fake.failed.insert(unit.to_owned());
            return Err(Error::JobFailed {
                command: format!("start {unit}"),
                stderr: format!("Job for {unit} failed."),
            });
        }
        fake.next_pid += 1;
        let pid = fake.next_pid;
        fake.failed.remove(unit);
        fake.running.insert(unit.to_owned(), pid);
        Ok(())
    }
}

impl Systemd for RecordingSystemd {
    fn default_target(&self) -> &str {
        "multi-user.target"
    }

    async fn check(&self) -> Result<Manager, Error> {
        if self.lock().unreachable {
            return Err(Error::Unreachable {
                command: "check".into(),
                stderr: "the fake manager is unreachable".into(),
            });
        }
        Ok(Manager {
            version: "fake".into(),
            state: "running".into(),
        })
    }

    async fn daemon_reload(&self) -> Result<(), Error> {
        let mut loaded = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.unit_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".service") && !name.starts_with('.') {
                    let path = entry.path();
                    loaded.insert(name, std::fs::read(&path).map_err(Error::io(&path))?);
                }
            }
        }
        let mut fake = self.call(Call::DaemonReload)?;
        fake.loaded = loaded;
        Ok(())
    }

    async fn enable(&self, unit: &str) -> Result<(), Error> {
        let exists = self.unit_dir.join(unit).exists();
        let mut fake = self.call(Call::Enable(unit.to_owned()))?;
        if !exists {
            return Err(Error::Systemctl {
                command: format!("enable {unit}"),
                status: "exit status: 1".into(),
                stderr: format!("Failed to enable unit: Unit file {unit} does not exist."),
            });
        }
        fake.enabled.insert(unit.to_owned());
        Ok(())
    }

    async fn disable(&self, unit: &str) -> Result<(), Error> {
        self.call(Call::Disable(unit.to_owned()))?
            .enabled
            .remove(unit);
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<(), Error> {
        if self.lock().running.contains_key(unit) {
            drop(self.call(Call::Start(unit.to_owned()))?);
            return Ok(());
        }
        self.start_job(unit, Call::Start(unit.to_owned()))
    }

    async fn restart(&self, unit: &str) -> Result<(), Error> {
        self.start_job(unit, Call::Restart(unit.to_owned()))
    }

    async fn stop(&self, unit: &str) -> Result<(), Error> {
        self.call(Call::Stop(unit.to_owned()))?.running.remove(unit);
        Ok(())
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), Error> {
        self.call(Call::ResetFailed(unit.to_owned()))?
            .failed
            .remove(unit);
        Ok(())
    }

    async fn show(&self, unit: &str) -> Result<UnitState, Error> {
        let path = self.unit_dir.join(unit);
        let on_disk = std::fs::read(&path).ok();
        let fake = self.lock();
        if fake.unreachable {
            return Err(Error::Unreachable {
                command: format!("show {unit}"),
                stderr: "the fake manager is unreachable".into(),
            });
        }
        let loaded = fake.loaded.get(unit);
        let (active, sub, pid) = if let Some(pid) = fake.running.get(unit) {
            ("active", "running", *pid)
        } else if fake.failed.contains(unit) {
            ("failed", "failed", 0)
        } else {
            ("inactive", "dead", 0)
        };
        Ok(UnitState {
            load_state: if loaded.is_some() {
                "loaded"
            } else {
                "not-found"
            }
            .into(),
            active_state: active.into(),
            sub_state: sub.into(),
            main_pid: pid,
            exec_main_status: if fake.failed.contains(unit) { 1 } else { 0 },
            unit_file_state: match &on_disk {
                None => String::new(),
                Some(_) if fake.enabled.contains(unit) => "enabled".into(),
                Some(_) => "disabled".into(),
            },
            need_daemon_reload: on_disk.as_ref() != loaded,
            state_change: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_parses_into_a_unit_state() {
        let output = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=53\n\
                      ExecMainStatus=0\nUnitFileState=enabled\nNeedDaemonReload=no\n\
                      StateChangeTimestamp=@1763888568\n";
        assert_eq!(
            parse_show("show", output).unwrap(),
            UnitState {
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                main_pid: 53,
                exec_main_status: 0,
                unit_file_state: "enabled".into(),
                need_daemon_reload: false,
                state_change: Some(1_763_888_568),
            }
        );
        let missing = "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n\
                       ExecMainStatus=0\nUnitFileState=\nNeedDaemonReload=no\n\
                       StateChangeTimestamp=\n";
        let state = parse_show("show", missing).unwrap();
        assert_eq!(state.load_state, "not-found");
        assert_eq!(state.state_change, None);
        let err = parse_show("systemctl show x", "LoadState=loaded\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the output of `systemctl show x`: no StateChangeTimestamp= in the output"
        );
    }

    #[tokio::test]
    async fn the_system_manager_check_names_pid_1_when_it_is_not_systemd() {
        let proc_root = tempfile::tempdir().unwrap();
        std::fs::create_dir(proc_root.path().join("1")).unwrap();
        std::fs::write(proc_root.path().join("1/comm"), "process_api\n").unwrap();
        let systemctl = Systemctl {
            proc_root: proc_root.path().to_owned(),
            ..Systemctl::system()
        };
        let err = systemctl.check().await.unwrap_err();
        assert!(matches!(err, Error::NotBooted { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "systemd is not PID 1 on this machine (PID 1 is 'process_api'), so the system \
             manager cannot run units; run the rubelet on a host booted with systemd, or point \
             it at a user manager"
        );
    }

    #[tokio::test]
    async fn a_manager_that_is_not_there_is_unreachable() {
        // A user manager whose runtime dir is empty: systemctl finds no socket to talk to.
        let runtime = tempfile::tempdir().unwrap();
        let systemctl = Systemctl::user()
            .with_env("XDG_RUNTIME_DIR", runtime.path())
            .with_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        match systemctl.check().await {
            Err(Error::Unreachable { command, .. }) => {
                assert_eq!(command, "systemctl --user show -p Version,SystemState");
            }
            Err(Error::Spawn { .. }) => {
                rubeapi::testing::skip(
                    "a_manager_that_is_not_there_is_unreachable",
                    "systemctl is not installed (Debian package systemd)",
                );
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
}
