//! What the slice controller observes of one slice and the effects it asks for, as data; the
//! shim's launch spec and the restart rule they are built from. Pure.

use rubeapi::runink::{Quota, RestartPolicy, Slice, SliceStatus};
use serde::{Deserialize, Serialize};

use super::Params;
use crate::spec::{IsolationSpec, LaunchSpec, LimitsSpec, Outcome, ShimState};

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

pub(super) fn timestamp(ms: u64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

pub(super) fn limit(v: u64) -> Option<u64> {
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

pub(super) fn herd_limits(quota: Option<&Quota>) -> LimitsSpec {
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
