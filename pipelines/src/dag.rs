//! The DAG core: each step's state from the pipeline's spec, its slices and the status the
//! controller recorded; which steps may start; the pipeline's phase. Pure.
//!
//! What lives here: the step states of rnr (PENDING, RUNNING, SUCCESS, FAILED, SKIPPED,
//! ACTION_PENDING) and the rules that move between them: dependencies, retries, a user's retry
//! (`retry_requests`), skip, pause, and losing a slice to a node that is NOT_READY. What never
//! does: where a slice goes (that is [`crate::schedule`]'s), I/O, clocks.
//!
//! The slices are the truth about what ran; the recorded status only remembers what the
//! slices may no longer show: how many attempts were made, and that a step succeeded whose
//! slice was removed since.
//!
//! - **Attempts** count every slice made for a step, restarts after a lost node included.
//! - **Retries** are a budget of failures: a step whose latest slice FAILED gets a new slice
//!   while its failed slices number at most `retries + retry_requests`, so bumping
//!   `retry_requests` (a user's retry) buys one more attempt for a FAILED step.
//! - **Skip** stops a running slice and marks the step SKIPPED; dependents treat SKIPPED like
//!   SUCCESS. A step that already succeeded stays SUCCESS.
//! - **Pause** keeps running slices running and starts nothing: a step that would start is
//!   ACTION_PENDING until the pipeline is resumed.
//! - **BATCH** starts a step once all its dependencies are SUCCESS or SKIPPED; **STREAMING**
//!   starts every step at once (the dependencies are pipes, not order).

use std::collections::HashMap;

use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, StepStatus};

use crate::schedule::Amount;

/// How far a slice got, from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlicePhase {
    /// No status yet, or PENDING: placed, not started.
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl SlicePhase {
    /// Still using its node: pending or running.
    pub fn is_active(self) -> bool {
        matches!(self, SlicePhase::Pending | SlicePhase::Running)
    }
}

/// What the core needs of one slice of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceView {
    pub name: String,
    pub step: String,
    /// From the name, `<pipeline>.<step>-<attempt>`; 0 when the name has another shape.
    pub attempt: u32,
    /// The `node` label.
    pub node: String,
    pub request: Amount,
    pub phase: SlicePhase,
    pub exit_code: Option<i32>,
    pub message: String,
    /// Marked for deletion (it has finalizers still to be removed).
    pub deleting: bool,
    /// The uid of its controlling owner reference ("" when it has none).
    pub owner_uid: String,
}

/// Where the core leaves each step before scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// One status per step, in spec order. A step in `ready` is PENDING here; the caller sets
    /// it RUNNING once its slice is placed.
    pub steps: Vec<StepStatus>,
    /// Indexes of the steps that should get a new slice now.
    pub ready: Vec<usize>,
    /// Slices to delete: lost to a NOT_READY node, superseded by a later attempt, or of a
    /// step that was skipped while it ran.
    pub delete: Vec<String>,
}

/// The states of `pipeline`'s steps given its slices, `recorded` (the status the controller
/// wrote last, for attempts and successes whose slices are gone) and which nodes are READY.
pub fn assess(
    pipeline: &Pipeline,
    recorded: &[StepStatus],
    slices: &[SliceView],
    node_ready: impl Fn(&str) -> bool,
) -> Assessment {
    let streaming = pipeline.mode == Mode::Streaming as i32;
    let mut by_step: HashMap<&str, Vec<&SliceView>> = HashMap::new();
    for slice in slices {
        by_step.entry(slice.step.as_str()).or_default().push(slice);
    }
    let recorded: HashMap<&str, &StepStatus> =
        recorded.iter().map(|s| (s.name.as_str(), s)).collect();
    let index: HashMap<&str, usize> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();

    let mut out = Assessment {
        steps: vec![StepStatus::default(); pipeline.steps.len()],
        ready: Vec::new(),
        delete: Vec::new(),
    };
    // Whether step i wants a new slice once its dependencies allow.
    let mut wants = vec![false; pipeline.steps.len()];
    for (i, step) in pipeline.steps.iter().enumerate() {
        let mine = by_step.remove(step.name.as_str()).unwrap_or_default();
        let before = recorded.get(step.name.as_str()).copied();
        let mut status = StepStatus {
            name: step.name.clone(),
            attempts: mine
                .iter()
                .map(|s| s.attempt)
                .chain(before.map(|b| b.attempts))
                .max()
                .unwrap_or(0),
            ..Default::default()
        };
        let failures = mine
            .iter()
            .filter(|s| s.phase == SlicePhase::Failed)
            .count();
        let budget = step.retries as usize + step.retry_requests as usize;
        let mut live: Vec<&SliceView> = mine.iter().copied().filter(|s| !s.deleting).collect();
        live.sort_by(|a, b| b.attempt.cmp(&a.attempt).then(b.name.cmp(&a.name)));
        // Active slices go when they were superseded by a later attempt, lost with their node
        // (counted as an attempt; the step is placed again elsewhere) or skipped. The step is
        // then judged by the slices that stay.
        let mut kept: Vec<&SliceView> = Vec::with_capacity(live.len());
        for (k, slice) in live.into_iter().enumerate() {
            if slice.phase.is_active() && (k > 0 || step.skip || !node_ready(&slice.node)) {
                out.delete.push(slice.name.clone());
            } else {
                kept.push(slice);
            }
        }
        match kept.first() {
            Some(current) => {
                status.slice = current.name.clone();
                status.node = current.node.clone();
                status.exit_code = current.exit_code;
                status.message = current.message.clone();
                match current.phase {
                    SlicePhase::Succeeded => status.state = State::Success as i32,
                    SlicePhase::Failed if step.skip => skipped(&mut status),
                    SlicePhase::Failed if failures > budget => {
                        status.state = State::Failed as i32;
                        if status.message.is_empty() {
                            status.message = match current.exit_code {
                                Some(code) => format!("exit code {code}"),
                                None => "failed".into(),
                            };
                        }
                    }
                    SlicePhase::Failed => wants[i] = true,
                    SlicePhase::Pending | SlicePhase::Running => {
                        status.state = State::Running as i32;
                    }
                }
            }
            None => match before {
                Some(b) if b.state == State::Success as i32 => {
                    // The slice of a success was removed: the success stands.
                    status.state = State::Success as i32;
                    status.slice = b.slice.clone();
                    status.node = b.node.clone();
                    status.exit_code = b.exit_code;
                }
                _ if step.skip => skipped(&mut status),
                _ => wants[i] = true,
            },
        }
        out.steps[i] = status;
    }

    // Dependencies, in an order where every step comes after those it depends on.
    for i in topological_order(pipeline, &index) {
        if !wants[i] {
            continue;
        }
        let step = &pipeline.steps[i];
        let blocker = if streaming {
            None
        } else {
            step.depends_on.iter().find_map(|d| {
                let state = index.get(d.as_str()).map(|&j| out.steps[j].state);
                match state {
                    Some(s) if s == State::Success as i32 || s == State::Skipped as i32 => None,
                    Some(s) if s == State::Failed as i32 => Some(format!("blocked: '{d}' failed")),
                    _ => Some(format!("waiting for '{d}'")),
                }
            })
        };
        let status = &mut out.steps[i];
        status.state = State::Pending as i32;
        match blocker {
            Some(reason) => status.message = reason,
            None if pipeline.paused => {
                status.state = State::ActionPending as i32;
                status.message = "paused: resume the pipeline to start it".into();
            }
            None => out.ready.push(i),
        }
    }
    out.ready.sort_unstable();
    out.delete.sort();
    out.delete.dedup();
    out
}

fn skipped(status: &mut StepStatus) {
    status.state = State::Skipped as i32;
    status.message = "skipped".into();
}

/// Step indexes with every step after its dependencies; steps on a cycle (which admission
/// refuses) and their dependents are left out, so they never start.
fn topological_order(pipeline: &Pipeline, index: &HashMap<&str, usize>) -> Vec<usize> {
    let n = pipeline.steps.len();
    let mut missing: Vec<usize> = vec![0; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, step) in pipeline.steps.iter().enumerate() {
        for d in &step.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                missing[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let j = order[next];
        next += 1;
        for &i in &dependents[j] {
            missing[i] -= 1;
            if missing[i] == 0 {
                order.push(i);
            }
        }
    }
    order
}

/// The pipeline's phase from its steps' final states: SUCCEEDED when every step succeeded or
/// was skipped; FAILED when a step failed and none runs any more; PAUSED while paused;
/// RUNNING once anything ran; PENDING before.
pub fn phase(pipeline: &Pipeline, steps: &[StepStatus]) -> Phase {
    let count = |state: State| steps.iter().filter(|s| s.state == state as i32).count();
    let finished = count(State::Success) + count(State::Skipped);
    if finished == steps.len() {
        return Phase::Succeeded;
    }
    if count(State::Failed) > 0 && count(State::Running) == 0 {
        return Phase::Failed;
    }
    if pipeline.paused {
        return Phase::Paused;
    }
    if finished + count(State::Running) + count(State::Failed) > 0 {
        return Phase::Running;
    }
    Phase::Pending
}
