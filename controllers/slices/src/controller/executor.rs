//! [`SliceController`]: what reads and changes the node for the slice controller — `observe`
//! (the slice dir, `run.json`, `status.pb`, the clock), `execute` (shims, cgroups, status
//! writes) and the wakers that reconcile a key when its shim exits or its back-off ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cgroups::CgroupPath;
use controllers::{Controller, Key};
use prost::{Message, Name};
use rubeapi::object;
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::{Slice, SliceStatus};
use tokio::sync::mpsc;

use super::model::{Effect, Observed, Run};
use super::reconcile::reconcile;
use super::{Config, Params};
use crate::Error;
use crate::shim;
use crate::spec::{
    self, HierarchySpec, LaunchSpec, LimitsSpec, Outcome, ShimState, now_ms, read_json,
    write_atomic, write_json,
};

const RUN: &str = "run.json";
const STATUS: &str = "status.pb";

/// Keys with a live exit watcher or timer in this process.
#[derive(Default)]
struct Wakers {
    watching: HashMap<Key, u64>,
    timers: HashMap<Key, u64>,
    next: u64,
}

/// The slice controller. See the module docs.
pub struct SliceController {
    config: Config,
    params: Params,
    wakers: Arc<Mutex<Wakers>>,
    wake_tx: mpsc::UnboundedSender<Key>,
    wake_rx: Mutex<Option<mpsc::UnboundedReceiver<Key>>>,
}

impl SliceController {
    pub fn new(config: Config) -> SliceController {
        let params = Params {
            node: config.node.clone(),
            pipes_dir: config.pipes_dir.clone(),
            hierarchy: HierarchySpec::of(&config.hierarchy),
            kill_grace: config.kill_grace,
            log_file_bytes: config.log_file_bytes,
            log_files: config.log_files,
            restart_backoff: config.restart_backoff,
        };
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        SliceController {
            config,
            params,
            wakers: Arc::default(),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Keys to reconcile because their shim exited or their restart back-off ended. Handed
    /// out once.
    pub fn wakeups(&self) -> Option<mpsc::UnboundedReceiver<Key>> {
        self.wake_rx.lock().expect("not poisoned").take()
    }

    /// `<state_dir>/slices/<namespace>/<name>`.
    pub fn slice_dir(&self, key: &Key) -> PathBuf {
        slice_dir(&self.config.state_dir, &key.namespace, &key.name)
    }

    fn leaf(key: &Key) -> Result<CgroupPath, Error> {
        Ok(CgroupPath::new(&format!("{}/{}", key.namespace, key.name))?)
    }

    async fn stop_and_wait(&self, dir: &Path) -> Result<(), Error> {
        if !shim::stop(dir, self.config.kill_grace)? {
            return Ok(());
        }
        let waited = self.config.kill_grace + Duration::from_secs(20);
        let give_up = tokio::time::Instant::now() + waited;
        while let ShimState::Running(_) = spec::read(dir)? {
            if tokio::time::Instant::now() > give_up {
                return Err(Error::ShimDidNotStop {
                    dir: dir.to_owned(),
                    waited,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn watch(&self, key: &Key) {
        let dir = self.slice_dir(key);
        let id = {
            let mut wakers = self.wakers.lock().expect("not poisoned");
            wakers.next += 1;
            let id = wakers.next;
            wakers.watching.insert(key.clone(), id);
            id
        };
        let (wakers, tx, key) = (self.wakers.clone(), self.wake_tx.clone(), key.clone());
        tokio::spawn(async move {
            while let Ok(ShimState::Running(_)) = spec::read(&dir) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wakers.lock().expect("not poisoned").watching.get(&key) != Some(&id) {
                    return;
                }
            }
            let mut w = wakers.lock().expect("not poisoned");
            if w.watching.get(&key) == Some(&id) {
                w.watching.remove(&key);
            }
            drop(w);
            let _ = tx.send(key);
        });
    }

    fn wake_at(&self, key: &Key, at: u64) {
        self.wakers
            .lock()
            .expect("not poisoned")
            .timers
            .insert(key.clone(), at);
        let (wakers, tx, key) = (self.wakers.clone(), self.wake_tx.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
            let mut w = wakers.lock().expect("not poisoned");
            if w.timers.get(&key) == Some(&at) {
                w.timers.remove(&key);
                drop(w);
                let _ = tx.send(key);
            }
        });
    }

    fn forget(&self, key: &Key) {
        let mut w = self.wakers.lock().expect("not poisoned");
        w.watching.remove(key);
        w.timers.remove(key);
    }

    async fn launch(
        &self,
        key: &Key,
        herd: &str,
        herd_limits: LimitsSpec,
        spec: LaunchSpec,
        run: Run,
    ) -> Result<(), Error> {
        let dir = self.slice_dir(key);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::io(&dir))?;
        self.config
            .hierarchy
            .create(&CgroupPath::new(herd)?, &herd_limits.into())?;
        write_json(&dir.join(RUN), &run)?;
        self.forget(key);
        let exe = self.config.shim_exe.clone();
        let launched = tokio::task::spawn_blocking(move || shim::launch(&exe, &dir, &spec))
            .await
            .map_err(|e| Error::LaunchTask {
                dir: self.slice_dir(key),
                message: e.to_string(),
            })?;
        match launched {
            // The outcome is recorded: the next round reports it and restarts per policy.
            Ok(_) | Err(Error::Exec { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn abandon(&self, key: &Key) -> Result<(), Error> {
        let dir = self.slice_dir(key);
        let ShimState::Lost(record) = spec::read(&dir)? else {
            return Ok(());
        };
        let removed = self
            .config
            .hierarchy
            .remove(&Self::leaf(key)?, self.config.kill_grace);
        let outcome = Outcome {
            started_ms: record.started_ms,
            finished_ms: now_ms(),
            pid: record.pid,
            cgroup: record.cgroup,
            message: "shim lost: it exited without recording the outcome".into(),
            ..Default::default()
        };
        removed?;
        write_json(&dir.join(spec::OUTCOME), &outcome)
    }

    async fn remove(&self, key: &Key) -> Result<(), Error> {
        let dir = self.slice_dir(key);
        self.forget(key);
        self.stop_and_wait(&dir).await?;
        self.config
            .hierarchy
            .remove(&Self::leaf(key)?, self.config.kill_grace)?;
        remove_pipes(&dir)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&dir)(e)),
            _ => Ok(()),
        }
    }

    async fn write_status(&self, key: &Key, status: SliceStatus) -> Result<(), Error> {
        let written = self
            .config
            .client
            .update_status(
                &Slice::full_name(),
                &key.namespace,
                &key.name,
                object::pack(&status),
                None,
            )
            .await;
        match written {
            Ok(_) => {}
            // Deleted meanwhile: the next round cleans up.
            Err(rubeapi::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let dir = self.slice_dir(key);
        if dir.is_dir() {
            write_atomic(&dir.join(STATUS), &status.encode_to_vec())?;
        }
        Ok(())
    }
}

/// `<state_dir>/slices/<namespace>/<name>`.
pub fn slice_dir(state_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    state_dir.join("slices").join(namespace).join(name)
}

impl Controller for SliceController {
    type Observed = Observed;
    type Effect = Effect;
    type Error = Error;

    fn name(&self) -> &str {
        "slices"
    }

    fn selector(&self) -> Selector {
        Selector {
            r#type: Slice::full_name(),
            labels: format!("node={}", self.config.node),
            ..Default::default()
        }
    }

    async fn observe(&self, key: &Key, _desired: Option<&Object>) -> Result<Observed, Error> {
        let dir = self.slice_dir(key);
        let status = match tokio::fs::read(dir.join(STATUS)).await {
            Ok(bytes) => {
                Some(
                    SliceStatus::decode(bytes.as_slice()).map_err(|e| Error::Decode {
                        path: dir.join(STATUS),
                        reason: e.to_string(),
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(dir.join(STATUS))(e)),
        };
        let (watching, wake_at) = {
            let w = self.wakers.lock().expect("not poisoned");
            (w.watching.contains_key(key), w.timers.get(key).copied())
        };
        Ok(Observed {
            now_ms: now_ms(),
            dir: dir.is_dir(),
            run: read_json(&dir.join(RUN))?,
            shim: spec::read(&dir)?,
            status,
            watching,
            wake_at,
            herd_quota: (self.config.herd_quota)(&key.namespace),
        })
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
        reconcile(&self.params, desired, observed)
    }

    async fn execute(&self, key: &Key, effects: Vec<Effect>) -> Result<(), Error> {
        for effect in effects {
            match effect {
                Effect::Launch {
                    herd,
                    herd_limits,
                    spec,
                    run,
                } => self.launch(key, &herd, herd_limits, *spec, run).await?,
                Effect::Stop => self.stop_and_wait(&self.slice_dir(key)).await?,
                Effect::Abandon => self.abandon(key).await?,
                Effect::Watch => self.watch(key),
                Effect::WakeAt(at) => self.wake_at(key, at),
                Effect::Remove => self.remove(key).await?,
                Effect::Status(status) => self.write_status(key, status).await?,
            }
        }
        Ok(())
    }

    /// Every slice dir on this node, so slices deleted while the rubelet was down are cleaned.
    async fn inventory(&self) -> Result<Vec<Key>, Error> {
        let base = self.config.state_dir.join("slices");
        controllers::inventory::namespaced_entries(&base, &Slice::full_name())
            .await
            .map_err(|(path, e)| Error::io(path)(e))
    }
}

/// Unlinks the FIFOs the slice in `dir` used (its spec.json names them): each attempt of a
/// STREAMING pipeline has pipes of its own, so they would otherwise pile up in the pipe
/// directory. The slice's processes are gone by now; a neighbour still holding an end keeps
/// it working (an unlinked FIFO lives while it is open), and a neighbour that opens the path
/// later makes a new one. Only FIFOs are removed; a spec.json that cannot be read leaves the
/// pipes (they are empty files) rather than keep the slice from going.
fn remove_pipes(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(Some(spec)) = read_json::<LaunchSpec>(&dir.join(spec::SPEC)) else {
        return Ok(());
    };
    for pipe in [spec.stdin_pipe, spec.stdout_pipe].into_iter().flatten() {
        let is_fifo = std::fs::symlink_metadata(&pipe).is_ok_and(|m| m.file_type().is_fifo());
        if is_fifo {
            match std::fs::remove_file(&pipe) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&pipe)(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
