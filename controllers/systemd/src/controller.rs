//! [`UnitController`]: the `controllers::Controller` for `api.systemd.Unit` objects bound to one
//! node. `observe` reads only local state, so the node keeps converging while the apiserver is
//! unreachable: the unit file in the unit dir, the manager's view of the unit, and two records
//! per object in the controller's state dir:
//!
//! - `<state dir>/<namespace>/<name>.started`: the unit file content last started or restarted;
//! - `<state dir>/<namespace>/<name>.status`: the `UnitStatus` last written to the apiserver
//!   (protobuf), recorded only after `update_status` succeeded.
//!
//! `execute` is the only code here that changes anything. Decisions live in
//! [`crate::reconcile`]; nothing here decides.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use controllers::{Controller, Key};
use prost::{Message, Name};
use rubeapi::Client;
use rubeapi::api::systemd::{Unit, UnitStatus};
use rubeapi::object;
use rubeapi::rube::{Object, Selector};
use rubeapi::validate::unit::{SUFFIX, unit_name};

use crate::Error;
use crate::reconcile::{self, Context, Effect, Observed, UnitFile};
use crate::render::parse_marker;
use crate::systemd::{Manager, Systemd};

/// The system manager's unit directory, where a node's units go by default.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// Keeps the `api.systemd.Unit` objects labelled `node=<node>` installed and running.
pub struct UnitController<S> {
    node: String,
    unit_dir: PathBuf,
    state_dir: PathBuf,
    client: Client,
    systemd: S,
    checked: AtomicBool,
}

impl<S: Systemd> UnitController<S> {
    /// A controller for node `node`, writing unit files into `unit_dir` (which must be in the
    /// manager's unit search path: [`SYSTEM_UNIT_DIR`] for `Systemctl::system()`,
    /// `$XDG_CONFIG_HOME/systemd/user` for `Systemctl::user()`), keeping its records in
    /// `state_dir`, writing statuses through `client`. Does no I/O.
    pub fn new(
        node: impl Into<String>,
        unit_dir: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        client: Client,
        systemd: S,
    ) -> UnitController<S> {
        UnitController {
            node: node.into(),
            unit_dir: unit_dir.into(),
            state_dir: state_dir.into(),
            client,
            systemd,
            checked: AtomicBool::new(false),
        }
    }

    pub fn systemd(&self) -> &S {
        &self.systemd
    }

    pub fn unit_dir(&self) -> &Path {
        &self.unit_dir
    }

    /// Asks the manager whether it is there, and logs the answer: an error naming the problem
    /// (systemd not PID 1, no socket) or the manager's version. The runtime calls it once
    /// through the first `inventory`; a rubelet may call it at start to refuse to run.
    ///
    /// # Errors
    /// What [`Systemd::check`] returns.
    pub async fn check_systemd(&self) -> Result<Manager, Error> {
        self.checked.store(true, Ordering::Relaxed);
        match self.systemd.check().await {
            Ok(manager) => {
                tracing::info!(
                    version = %manager.version,
                    state = %manager.state,
                    unit_dir = %self.unit_dir.display(),
                    "systemd unit controller: manager reachable"
                );
                Ok(manager)
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "systemd unit controller: no systemd manager to run units with; \
                     api.systemd.Unit objects for this node will fail to reconcile"
                );
                Err(error)
            }
        }
    }

    fn context(&self) -> Context {
        Context {
            node: self.node.clone(),
            default_target: self.systemd.default_target().to_owned(),
        }
    }

    fn record(&self, key: &Key, what: &str) -> PathBuf {
        self.state_dir
            .join(&key.namespace)
            .join(format!("{}.{what}", key.name))
    }

    async fn record_started(&self, key: &Key, content: &str) -> Result<(), Error> {
        write_atomically(&self.record(key, "started"), content.as_bytes(), 0o600).await
    }

    fn unit_path(&self, key: &Key) -> PathBuf {
        self.unit_dir.join(unit_name(&key.name))
    }
}

async fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match tokio::fs::read(path).await {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

async fn remove_optional(path: &Path) -> Result<(), Error> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `content` to `path` so that a crash leaves the old file or the new one, never half:
/// a temp file in the same directory (hidden, without the `.service` suffix, so no manager
/// loads it), fsync, mode, rename, fsync of the directory.
pub async fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
    let path = path.to_owned();
    let content = content.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".rube-")
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(Error::io(dir))?;
        temp.write_all(&content).map_err(Error::io(temp.path()))?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(temp.path()))?;
        temp.as_file().sync_all().map_err(Error::io(temp.path()))?;
        temp.persist(&path).map_err(|e| Error::io(&path)(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(dir))
    })
    .await
    .unwrap_or_else(|e| Err(Error::io(PathBuf::new())(std::io::Error::other(e))))
}

impl<S: Systemd> Controller for UnitController<S> {
    type Observed = Observed;
    type Effect = Effect;
    type Error = Error;

    fn name(&self) -> &str {
        "systemd-units"
    }

    fn selector(&self) -> Selector {
        Selector {
            r#type: Unit::full_name(),
            labels: format!("node={}", self.node),
            ..Default::default()
        }
    }

    async fn observe(&self, key: &Key, _desired: Option<&Object>) -> Result<Observed, Error> {
        let file = match read_optional(&self.unit_path(key)).await? {
            None => UnitFile::Absent,
            Some(bytes) => UnitFile::classify(
                &key.namespace,
                &key.name,
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
        };
        let state = self.systemd.show(&unit_name(&key.name)).await?;
        let started = read_optional(&self.record(key, "started"))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let status_path = self.record(key, "status");
        let status = match read_optional(&status_path).await? {
            Some(bytes) => {
                Some(
                    UnitStatus::decode(bytes.as_slice()).map_err(|source| Error::Record {
                        path: status_path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Observed {
            file,
            state,
            started,
            status,
        })
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
        reconcile::reconcile(&self.context(), desired, observed)
    }

    async fn execute(&self, key: &Key, effects: Vec<Effect>) -> Result<(), Error> {
        let unit = unit_name(&key.name);
        for effect in effects {
            match effect {
                Effect::WriteFile(content) => {
                    write_atomically(&self.unit_path(key), content.as_bytes(), 0o644).await?;
                }
                Effect::DaemonReload => self.systemd.daemon_reload().await?,
                Effect::Enable => self.systemd.enable(&unit).await?,
                Effect::Disable => self.systemd.disable(&unit).await?,
                Effect::Start { content } => {
                    job_done(key, self.systemd.start(&unit).await)?;
                    self.record_started(key, &content).await?;
                }
                Effect::Restart { content } => {
                    job_done(key, self.systemd.restart(&unit).await)?;
                    self.record_started(key, &content).await?;
                }
                Effect::Stop => job_done(key, self.systemd.stop(&unit).await)?,
                Effect::RemoveFile => {
                    // Checked again here: never remove a file this object did not write.
                    let path = self.unit_path(key);
                    if let Some(bytes) = read_optional(&path).await?
                        && parse_marker(&String::from_utf8_lossy(&bytes)).as_ref() == Some(key)
                    {
                        remove_optional(&path).await?;
                    }
                }
                Effect::ResetFailed => self.systemd.reset_failed(&unit).await?,
                Effect::Forget => {
                    remove_optional(&self.record(key, "started")).await?;
                    remove_optional(&self.record(key, "status")).await?;
                }
                Effect::WriteStatus(status) => {
                    self.client
                        .update_status(
                            &Unit::full_name(),
                            &key.namespace,
                            &key.name,
                            object::pack(&status),
                            None,
                        )
                        .await?;
                    write_atomically(&self.record(key, "status"), &status.encode_to_vec(), 0o600)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Units in the unit dir that carry this controller's marker, and objects with records in
    /// the state dir: what exists here whether or not the apiserver still has it. The first
    /// call also checks the manager and logs clearly when there is none.
    async fn inventory(&self) -> Result<Vec<Key>, Error> {
        if !self.checked.load(Ordering::Relaxed) {
            let _ = self.check_systemd().await;
        }
        let mut keys = std::collections::BTreeSet::new();
        if let Ok(mut entries) = tokio::fs::read_dir(&self.unit_dir).await {
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(Error::io(&self.unit_dir))?
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(SUFFIX) || name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                // Only regular files: the `*.wants/` symlinks and aliases are systemd's.
                let Ok(meta) = tokio::fs::symlink_metadata(&path).await else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let Some(bytes) = read_optional(&path).await? else {
                    continue;
                };
                if let Some(key) = parse_marker(&String::from_utf8_lossy(&bytes))
                    && unit_name(&key.name) == name
                {
                    keys.insert(key);
                }
            }
        }
        if let Ok(mut namespaces) = tokio::fs::read_dir(&self.state_dir).await {
            while let Some(ns) = namespaces
                .next_entry()
                .await
                .map_err(Error::io(&self.state_dir))?
            {
                let Ok(mut records) = tokio::fs::read_dir(ns.path()).await else {
                    continue;
                };
                let namespace = ns.file_name().to_string_lossy().into_owned();
                while let Some(record) = records.next_entry().await.map_err(Error::io(ns.path()))? {
                    let file = record.file_name().to_string_lossy().into_owned();
                    let name = file
                        .strip_suffix(".started")
                        .or_else(|| file.strip_suffix(".status"));
                    if let Some(name) = name.filter(|n| !n.starts_with('.')) {
                        keys.insert(Key::new(&Unit::full_name(), &namespace, name));
                    }
                }
            }
        }
        Ok(keys.into_iter().collect())
    }
}

/// A job that ran and failed is the unit's failure, shown in its state and status, not the
/// controller's: logged, and the effects go on.
fn job_done(key: &Key, job: Result<(), Error>) -> Result<(), Error> {
    match job {
        Err(Error::JobFailed { command, stderr }) => {
            tracing::warn!(%key, %command, %stderr, "unit job failed");
            Ok(())
        }
        other => other,
    }
}
