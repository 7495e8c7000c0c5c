//! A private systemd user manager, for tests on machines where systemd is not PID 1 (containers,
//! CI): real units, run by real systemd, with no effect on the host. Nothing here is used by
//! the controller itself.
//!
//! How: `unshare --mount --pid --fork --mount-proc --kill-child` gives a mount and PID
//! namespace; inside, a tmpfs on `/run/systemd` with an empty `/run/systemd/system` makes
//! systemd believe the machine was booted with it (what `sd_booted()` checks), and
//! `/lib/systemd/systemd --user` runs as a child of the namespace's init (a user manager
//! refuses to be PID 1). Its runtime dir (`XDG_RUNTIME_DIR`) and unit dir (`XDG_CONFIG_HOME`)
//! are in a temp dir. `systemctl --user` reaches it through its private socket; systemctl runs
//! inside the namespaces through `nsenter`, because the manager drops connections from
//! processes outside its PID namespace. No D-Bus daemon is needed.
//!
//! Dropping the harness kills the namespace's init by its PID, which makes the kernel kill
//! everything in the namespace (the manager and its units).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::Error;
use crate::systemd::Systemctl;

/// The user manager's binary on Debian.
pub const SYSTEMD: &str = "/lib/systemd/systemd";

/// A running private user manager. Dropping it stops it and everything it runs.
#[derive(Debug)]
pub struct UserManager {
    dir: tempfile::TempDir,
    unshare: std::process::Child,
    /// The namespace's init, in the host's PID namespace: the `nsenter` target.
    init: u32,
}

impl UserManager {
    /// Why a user manager cannot run on this machine, or `None` when it can: it needs root
    /// (mount and PID namespaces), `unshare` and `nsenter` (util-linux), and systemd.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("not running as root: mount and PID namespaces need it".into());
        }
        for (program, package) in [
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("systemctl", "systemd"),
        ] {
            if which(program).is_none() {
                return Some(format!(
                    "{program} is not installed (Debian package {package})"
                ));
            }
        }
        if !Path::new(SYSTEMD).exists() {
            return Some(format!("{SYSTEMD} is missing (Debian package systemd)"));
        }
        None
    }

    /// Starts a user manager and waits until it runs.
    ///
    /// # Errors
    /// [`Error::UserManager`] with the manager's output when it does not come up in 20 s.
    pub async fn start() -> Result<UserManager, Error> {
        if let Some(reason) = UserManager::unavailable() {
            return Err(Error::UserManager(reason));
        }
        let dir = tempfile::Builder::new()
            .prefix("rube-user-manager-")
            .tempdir()
            .map_err(Error::io(std::env::temp_dir()))?;
        let runtime = dir.path().join("runtime");
        let config = dir.path().join("config");
        for d in [&runtime, &config.join("systemd/user")] {
            std::fs::create_dir_all(d).map_err(Error::io(d))?;
        }
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(Error::io(&runtime))?;
        let log_path = dir.path().join("manager.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io(&log_path))?;
        let script = format!(
            "set -e\n\
             mkdir -p /run/systemd\n\
             mount -t tmpfs tmpfs /run/systemd\n\
             mkdir -p /run/systemd/system\n\
             {SYSTEMD} --user --log-target=console &\n\
             wait\n"
        );
        let unshare = std::process::Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "/bin/sh",
                "-c",
                &script,
            ])
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", &config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::io(&log_path))?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "unshare".into(),
                source,
            })?;
        let mut manager = UserManager {
            dir,
            unshare,
            init: 0,
        };
        let failed = |manager: &UserManager, why: &str| {
            let log =
                std::fs::read_to_string(manager.dir.path().join("manager.log")).unwrap_or_default();
            Error::UserManager(format!("{why}; its output:\n{log}"))
        };
        for _ in 0..200 {
            if let Ok(Some(status)) = manager.unshare.try_wait() {
                return Err(failed(&manager, &format!("unshare exited with {status}")));
            }
            if manager.init == 0 {
                let pid = manager.unshare.id();
                let children = format!("/proc/{pid}/task/{pid}/children");
                manager.init = std::fs::read_to_string(children)
                    .ok()
                    .and_then(|c| c.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            }
            if manager.init != 0 {
                let output = tokio::process::Command::new("nsenter")
                    .args(manager.nsenter())
                    .args(["systemctl", "--user", "is-system-running"])
                    .env("XDG_RUNTIME_DIR", manager.runtime_dir())
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .map_err(|source| Error::Spawn {
                        program: "nsenter".into(),
                        source,
                    })?;
                let state = String::from_utf8_lossy(&output.stdout);
                if matches!(state.trim(), "running" | "degraded") {
                    return Ok(manager);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(failed(
            &manager,
            "the user manager did not reach 'running' in 20 s",
        ))
    }

    fn nsenter(&self) -> Vec<String> {
        vec![
            "-t".into(),
            self.init.to_string(),
            "--mount".into(),
            "--pid".into(),
        ]
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// `systemctl --user` for this manager, run inside its namespaces.
    pub fn systemctl(&self) -> Systemctl {
        let mut prefix = vec!["nsenter".to_owned()];
        prefix.extend(self.nsenter());
        Systemctl::user()
            .with_prefix(prefix)
            .with_env("XDG_RUNTIME_DIR", self.runtime_dir())
    }

    /// Where this manager reads unit files (`$XDG_CONFIG_HOME/systemd/user`).
    pub fn unit_dir(&self) -> PathBuf {
        self.dir.path().join("config/systemd/user")
    }

    /// The manager's namespace init, in the host's PID namespace.
    pub fn init_pid(&self) -> u32 {
        self.init
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        // The namespace's init first: its death takes every process of the namespace along.
        for pid in [self.init, self.unshare.id()] {
            if let Ok(pid) = i32::try_from(pid)
                && pid > 0
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.unshare.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
