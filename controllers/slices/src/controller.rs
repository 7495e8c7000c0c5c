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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cgroups::{CgroupPath, Hierarchy};
use controllers::{Backoff, Controller, Key};
use prost::{Message, Name};
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Quota, RestartPolicy, Slice, SliceStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::Error;
use crate::shim::{self, ShimState};
use crate::spec::{
    HierarchySpec, IsolationSpec, LaunchSpec, LimitsSpec, Outcome, RunningRecord, now_ms,
    read_json, write_atomic, write_json,
};

const RUN: &str = "run.json";
const STATUS: &str = "status.pb";

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

/// The run the controller last launched for a slice (`run.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The object's generation it was launched for.
    pub generation: u64,
    /// Restarts before it, for this generation.
    pub restarts: u32,
}

/// This node's view of one slice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// Unix milliseconds when observed.
    pub now_ms: u64,
    /// The slice dir exists.
    pub dir: bool,
    pub run: Option<Run>,
    pub shim: ShimState,
    /// The status this controller last wrote successfully.
    pub status: Option<SliceStatus>,
    /// This process watches the shim and will wake the key when it exits.
    pub watching: bool,
    /// This process will wake the key at this time.
    pub wake_at: Option<u64>,
    pub herd_quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create the Herd cgroup with its quota, record `run`, start a shim.
    Launch {
        herd: String,
        herd_limits: LimitsSpec,
        spec: Box<LaunchSpec>,
        run: Run,
    },
    /// Stop the workload and wait until its outcome is recorded.
    Stop,
    /// The shim died without an outcome: kill what is left in the cgroup, record "shim lost".
    Abandon,
    /// Wake the key when the shim exits.
    Watch,
    /// Wake the key at this time (unix ms).
    WakeAt(u64),
    /// Stop, remove the cgroup leaf and the slice dir.
    Remove,
    /// Write the status to the apiserver, then record it locally.
    Status(SliceStatus),
}

fn timestamp(ms: u64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn limit(v: u64) -> Option<u64> {
    (v > 0).then_some(v)
}

/// The shim's spec for `slice`, named `namespace/name`.
pub fn launch_spec(params: &Params, namespace: &str, name: &str, slice: &Slice) -> LaunchSpec {
    let resources = slice.resources.unwrap_or_default();
    let iso = slice.isolation.clone().unwrap_or_default();
    let pipe = |p: &str| (!p.is_empty()).then(|| params.pipes_dir.join(namespace).join(p));
    LaunchSpec {
        command: slice.command.clone(),
        args: slice.args.clone(),
        env: slice
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        working_dir: slice.working_dir.clone(),
        hierarchy: Some(params.hierarchy.clone()),
        cgroup: format!("{namespace}/{name}"),
        limits: LimitsSpec {
            cpu_millis: limit(resources.cpu_millis),
            memory_bytes: limit(resources.memory_bytes),
            pids: limit(resources.pids),
        },
        isolation: IsolationSpec {
            pid: iso.pid,
            mount: iso.mount,
            uts: iso.uts,
            ipc: iso.ipc,
            net: iso.net,
            hostname: (!iso.hostname.is_empty()).then_some(iso.hostname),
            uid: iso.uid,
            gid: iso.gid,
        },
        timeout_seconds: limit(slice.timeout_seconds),
        stdin_pipe: pipe(&slice.stdin_pipe),
        stdout_pipe: pipe(&slice.stdout_pipe),
        pipe_buffer_bytes: limit(slice.pipe_buffer_bytes),
        log_file_bytes: params.log_file_bytes,
        log_files: params.log_files,
        kill_grace_ms: params.kill_grace.as_millis() as u64,
    }
}

fn herd_limits(quota: Option<&Quota>) -> LimitsSpec {
    quota.map_or_else(LimitsSpec::default, |q| LimitsSpec {
        cpu_millis: limit(q.cpu_millis),
        memory_bytes: limit(q.memory_bytes),
        pids: limit(q.pids),
    })
}

/// Whether a run that ended with `outcome` is started again under `policy`: the one rule in
/// `rubeapi::object::restarts_after`, which quota admission and the scheduler also follow.
pub fn restarts(policy: RestartPolicy, outcome: &Outcome) -> bool {
    rubeapi::object::restarts_after(policy, outcome.succeeded())
}

/// Unlinks the FIFOs the slice in `dir` used (its spec.json names them): each attempt of a
/// STREAMING pipeline has pipes of its own, so they would otherwise pile up in the pipe
/// directory. The slice's processes are gone by now; a neighbour still holding an end keeps
/// it working (an unlinked FIFO lives while it is open), and a neighbour that opens the path
/// later makes a new one. Only FIFOs are removed; a spec.json that cannot be read leaves the
/// pipes (they are empty files) rather than keep the slice from going.
fn remove_pipes(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(Some(spec)) = read_json::<LaunchSpec>(&dir.join(shim::SPEC)) else {
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

/// Pure: what to change so this node matches `desired`.
pub fn reconcile(params: &Params, desired: Option<&Object>, observed: &Observed) -> Vec<Effect> {
    let Some(object) = desired else {
        let left = observed.dir || observed.shim != ShimState::Absent;
        return if left { vec![Effect::Remove] } else { vec![] };
    };
    let generation = object.metadata.as_ref().map_or(0, |m| m.generation);
    let base = SliceStatus {
        node: params.node.clone(),
        observed_generation: generation,
        ..Default::default()
    };
    let slice = object
        .spec_as::<Slice>()
        .map_err(|e| e.to_string())
        .and_then(|s| {
            if s.command.is_empty() {
                Err("the command is empty".to_owned())
            } else {
                Ok(s)
            }
        });
    let mut effects = Vec::new();
    let slice = match slice {
        Ok(slice) => slice,
        Err(reason) => {
            // Whatever ran for an earlier spec stops; nothing new starts.
            if let ShimState::Running(_) = observed.shim {
                return vec![Effect::Stop];
            }
            let status = SliceStatus {
                phase: Phase::Failed as i32,
                message: format!("invalid slice: {reason}"),
                ..base
            };
            if observed.status.as_ref() != Some(&status) {
                effects.push(Effect::Status(status));
            }
            return effects;
        }
    };
    let run = observed.run.filter(|r| r.generation == generation);
    let launch = |restarts: u32| Effect::Launch {
        herd: object.namespace().to_owned(),
        herd_limits: herd_limits(observed.herd_quota.as_ref()),
        spec: Box::new(launch_spec(
            params,
            object.namespace(),
            object.name(),
            &slice,
        )),
        run: Run {
            generation,
            restarts,
        },
    };
    let status = match (&observed.shim, run) {
        // A new spec: stop the old run, start anew.
        (ShimState::Running(_), None) => {
            effects.push(Effect::Stop);
            None
        }
        (ShimState::Running(record), Some(run)) => {
            if !observed.watching {
                effects.push(Effect::Watch);
            }
            Some(SliceStatus {
                phase: Phase::Running as i32,
                pid: record.pid,
                restarts: run.restarts,
                start_time: timestamp(record.started_ms),
                cgroup: record.cgroup.clone(),
                ..base
            })
        }
        (ShimState::Lost(_), _) => {
            effects.push(Effect::Abandon);
            None
        }
        (ShimState::Absent, run) => {
            effects.push(launch(run.map_or(0, |r| r.restarts)));
            None
        }
        (ShimState::Exited(_), None) => {
            effects.push(launch(0));
            None
        }
        (ShimState::Exited(outcome), Some(run)) => {
            let mut status = SliceStatus {
                phase: if outcome.succeeded() {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                } as i32,
                pid: outcome.pid,
                exit_code: outcome.exit_code,
                signal: outcome.signal,
                oom_killed: outcome.oom_killed,
                restarts: run.restarts,
                start_time: timestamp(outcome.started_ms),
                finish_time: timestamp(outcome.finished_ms),
                cgroup: outcome.cgroup.clone(),
                message: outcome.message.clone(),
                ..base
            };
            if restarts(slice.restart_policy(), outcome) {
                let delay = params.restart_backoff.delay(run.restarts + 1);
                let at = outcome.finished_ms + delay.as_millis() as u64;
                if observed.now_ms >= at {
                    effects.push(launch(run.restarts + 1));
                    None
                } else {
                    if observed.wake_at != Some(at) {
                        effects.push(Effect::WakeAt(at));
                    }
                    let why = format!("restarting after a back-off of {}s", delay.as_secs_f64());
                    status.message = if status.message.is_empty() {
                        why
                    } else {
                        format!("{}; {why}", status.message)
                    };
                    Some(status)
                }
            } else {
                Some(status)
            }
        }
    };
    // Last, so the status never claims what did not happen.
    if let Some(status) = status
        && observed.status.as_ref() != Some(&status)
    {
        effects.push(Effect::Status(status));
    }
    effects
}

/// The executor as a pure model, for the fixpoint tests. A launched workload gets pid 1000.
pub fn simulate(observed: &Observed, effects: &[Effect]) -> Observed {
    let mut world = observed.clone();
    for effect in effects {
        match effect {
            Effect::Launch { spec, run, .. } => {
                world.dir = true;
                world.run = Some(*run);
                world.watching = false;
                world.wake_at = None;
                world.shim = ShimState::Running(RunningRecord {
                    pid: 1000,
                    shim_pid: 999,
                    shim_start_ticks: 1,
                    started_ms: world.now_ms,
                    cgroup: spec.cgroup.clone(),
                });
            }
            Effect::Stop | Effect::Abandon => {
                if let ShimState::Running(r) | ShimState::Lost(r) = &world.shim {
                    world.shim = ShimState::Exited(Outcome {
                        signal: matches!(effect, Effect::Stop).then_some(libc::SIGKILL),
                        started_ms: r.started_ms,
                        finished_ms: world.now_ms,
                        pid: r.pid,
                        cgroup: r.cgroup.clone(),
                        message: "stopped".into(),
                        ..Default::default()
                    });
                }
                world.watching = false;
            }
            Effect::Watch => world.watching = true,
            Effect::WakeAt(at) => world.wake_at = Some(*at),
            Effect::Remove => {
                world.dir = false;
                world.run = None;
                world.shim = ShimState::Absent;
                world.status = None;
                world.watching = false;
                world.wake_at = None;
            }
            Effect::Status(status) => world.status = Some(status.clone()),
        }
    }
    world
}

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
        while let ShimState::Running(_) = shim::read(dir)? {
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
            while let Ok(ShimState::Running(_)) = shim::read(&dir) {
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
        let ShimState::Lost(record) = shim::read(&dir)? else {
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
        write_json(&dir.join(shim::OUTCOME), &outcome)
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
            shim: shim::read(&dir)?,
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

/// At start: removes (killing what runs in them) the slice cgroups `<herd>/<slice>` under the
/// node subtree that have no slice dir in `state_dir`. Returns the removed paths.
///
/// # Errors
/// [`Error::Cgroup`] when a cgroup cannot be listed or removed.
pub fn sweep(
    hierarchy: &Hierarchy,
    state_dir: &Path,
    grace: Duration,
) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    let root = CgroupPath::root();
    if !hierarchy.exists(&root) {
        return Ok(removed);
    }
    for herd in hierarchy.children(&root)? {
        let herd_path = root.join(&herd)?;
        for leaf in hierarchy.children(&herd_path)? {
            if slice_dir(state_dir, &herd, &leaf).is_dir() {
                continue;
            }
            let path = herd_path.join(&leaf)?;
            hierarchy.remove(&path, grace)?;
            removed.push(path.to_string());
        }
    }
    Ok(removed)
}
