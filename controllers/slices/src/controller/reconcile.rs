//! The slice controller's decisions: [`reconcile`], pure, and [`simulate`], the executor as
//! a pure model for the fixpoint tests.

use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Slice, SliceStatus};

use super::Params;
use super::model::{Effect, Observed, Run, herd_limits, launch_spec, restarts, timestamp};
use crate::spec::{Outcome, RunningRecord, ShimState};

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
