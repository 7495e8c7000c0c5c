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
//! # BATCH
//! Each step is judged on its own.
//! - **Attempts** count every slice made for a step, restarts after a lost node included.
//! - **Retries** are a budget of failures: a step whose latest slice FAILED gets a new slice
//!   while its failed slices number at most `retries + retry_requests`, so bumping
//!   `retry_requests` (a user's retry) buys one more attempt for a FAILED step.
//! - **Skip** stops a running slice and marks the step SKIPPED; dependents treat SKIPPED like
//!   SUCCESS. A step that already succeeded stays SUCCESS.
//! - **Pause** keeps running slices running and starts nothing: a step that would start is
//!   ACTION_PENDING until the pipeline is resumed.
//! - A step starts once all its dependencies are SUCCESS or SKIPPED.
//!
//! # Parallel BATCH steps
//! A BATCH step with `parallelism` N > 1 is an indexed job: shards `0..N`, each a slice named
//! `<pipeline>.<step>-<attempt>.<index>` and told its index and N (`RUBE_SHARD_INDEX`,
//! `RUBE_SHARDS`), each placed on its own.
//! - A failed shard is **retried** alone while the step's failed slices, over all shards,
//!   number at most `retries + retry_requests`; beyond that the step is FAILED and its shards
//!   still running are stopped. A shard lost with its node is placed again: an attempt, not a
//!   failure.
//! - **Attempts** count every slice over all shards; the attempt in a new shard's name is one
//!   more than the count before it (shards made together share it), so names never repeat.
//! - The step is **SUCCESS** once every shard has a slice that succeeded; its status counts
//!   `shards_succeeded` of `shards`. **Skip** stops every shard; **pause** keeps running
//!   shards running and starts none.
//!
//! # STREAMING
//! The steps are one gang: they run at once, joined by pipes, so no step's outcome means
//! anything without the others'. A producer that dies makes its consumer see end-of-file and
//! "succeed" on part of the data; a consumer that dies kills its producers with SIGPIPE; a
//! step restarted alone would open a pipe nobody else holds. So:
//! - **Attempts** belong to the pipeline: every step's slices of attempt *k* are made
//!   together, named `<pipeline>.<step>-<k>`, and each step's `attempts` is the pipeline's.
//! - An attempt **breaks** when one of its slices FAILED, or one that has not finished is lost
//!   (its node is NOT_READY, or the slice is gone). Then every slice of it still running is
//!   deleted, and all steps start again as attempt *k + 1* (on fresh pipes, named after the
//!   attempt, so nothing of attempt *k* still stopping can write into or read from them).
//! - **Retries**: a failed attempt is charged, in each chain of pipes, to the failed step
//!   furthest downstream: a step upstream of it most likely died of the broken pipe (SIGPIPE)
//!   when it stopped reading, so it is a casualty, not a cause. A new attempt starts after a
//!   failed one while every step's charges number at most its `retries + retry_requests`;
//!   otherwise the pipeline is FAILED and nothing of it runs. A user's retry must therefore
//!   name the charged step (the one FAILED without "downstream" in its message). A lost
//!   attempt is charged to nobody: it counts as an attempt, not as a failure, as in BATCH.
//! - **Success** counts only within one attempt: a step is SUCCESS when its slice of the
//!   current attempt succeeded, and the pipeline SUCCEEDS when every step's slice of the same
//!   attempt did. A success of a broken attempt is discarded with it.
//! - **Skip** is refused by admission (a skipped step's neighbours would wait on its pipes
//!   forever); a spec that carries it anyway (stored before the rule) has it ignored.
//! - **Pause** keeps a running attempt running and starts none: a broken attempt's slices are
//!   still stopped (they can only block or produce part of the data), and the steps wait as
//!   ACTION_PENDING.

use std::collections::HashMap;

use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, Step, StepStatus};

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
    /// From the name, `<pipeline>.<step>-<attempt>[.<index>]`; 0 when the name has another
    /// shape.
    pub attempt: u32,
    /// From the name: the index of a shard of a parallel step (`None`: not a shard).
    pub shard: Option<u32>,
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

/// One slice to make: of step `step` (its index in the spec), for shard `shard` of a parallel
/// step (`None` for a step that is not sharded), with `attempt` in its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Start {
    pub step: usize,
    pub shard: Option<u32>,
    pub attempt: u32,
}

/// Where the core leaves each step before scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// One status per step, in spec order. A step in `ready` is PENDING here (or RUNNING, a
    /// parallel step with shards still running); the caller sets it RUNNING once a slice of it
    /// is placed.
    pub steps: Vec<StepStatus>,
    /// The slices that should be made now, in step order.
    pub ready: Vec<Start>,
    /// Slices to delete: lost to a NOT_READY node, superseded by a later attempt, of a step
    /// that was skipped while it ran, or of a STREAMING attempt that broke.
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
    let recorded: HashMap<&str, &StepStatus> =
        recorded.iter().map(|s| (s.name.as_str(), s)).collect();
    let index: HashMap<&str, usize> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut out = if pipeline.mode == Mode::Streaming as i32 {
        assess_streaming(pipeline, &recorded, slices, &node_ready, &index)
    } else {
        assess_batch(pipeline, &recorded, slices, &node_ready, &index)
    };
    out.ready.sort_unstable();
    out.delete.sort();
    out.delete.dedup();
    out
}

/// BATCH: each step judged on its own slices; a step starts once its dependencies allow.
fn assess_batch(
    pipeline: &Pipeline,
    recorded: &HashMap<&str, &StepStatus>,
    slices: &[SliceView],
    node_ready: &impl Fn(&str) -> bool,
    index: &HashMap<&str, usize>,
) -> Assessment {
    let mut by_step: HashMap<&str, Vec<&SliceView>> = HashMap::new();
    for slice in slices {
        by_step.entry(slice.step.as_str()).or_default().push(slice);
    }
    let mut out = Assessment {
        steps: vec![StepStatus::default(); pipeline.steps.len()],
        ready: Vec::new(),
        delete: Vec::new(),
    };
    // What each step wants started once its dependencies allow.
    let mut wants: Vec<Vec<Start>> = vec![Vec::new(); pipeline.steps.len()];
    for (i, step) in pipeline.steps.iter().enumerate() {
        let mine = by_step.remove(step.name.as_str()).unwrap_or_default();
        let before = recorded.get(step.name.as_str()).copied();
        let judged = if step.parallelism > 1 {
            judge_sharded(step, before, &mine, node_ready)
        } else {
            judge_single(step, before, &mine, node_ready)
        };
        out.steps[i] = judged.status;
        out.delete.extend(judged.delete);
        wants[i] = judged
            .wants
            .into_iter()
            .map(|shard| Start {
                step: i,
                shard,
                attempt: judged.attempt,
            })
            .collect();
    }

    // Dependencies, in an order where every step comes after those it depends on.
    for i in topological_order(pipeline, index) {
        if wants[i].is_empty() {
            continue;
        }
        let step = &pipeline.steps[i];
        let blocker = step.depends_on.iter().find_map(|d| {
            let state = index.get(d.as_str()).map(|&j| out.steps[j].state);
            match state {
                Some(s) if s == State::Success as i32 || s == State::Skipped as i32 => None,
                Some(s) if s == State::Failed as i32 => Some(format!("blocked: '{d}' failed")),
                _ => Some(format!("waiting for '{d}'")),
            }
        });
        let status = &mut out.steps[i];
        // A parallel step whose other shards run stays RUNNING while some wait.
        let running = status.state == State::Running as i32;
        if !running {
            status.state = State::Pending as i32;
        }
        match blocker {
            Some(reason) => status.message = reason,
            None if pipeline.paused && running => {
                let shards: Vec<String> = wants[i]
                    .iter()
                    .filter_map(|s| s.shard.map(|k| k.to_string()))
                    .collect();
                status.message = format!(
                    "paused: resume the pipeline to start shards {}",
                    shards.join(", ")
                );
            }
            None if pipeline.paused => paused(status),
            None => out.ready.append(&mut wants[i]),
        }
    }
    out
}

/// One BATCH step judged: its status, the slices of it to delete, and what it wants started.
struct Judged {
    status: StepStatus,
    delete: Vec<String>,
    /// The shards (`None`: the step itself) that want a new slice.
    wants: Vec<Option<u32>>,
    /// The attempt in the names of those slices.
    attempt: u32,
}

/// A step without parallelism: judged by its latest slice.
fn judge_single(
    step: &Step,
    before: Option<&StepStatus>,
    mine: &[&SliceView],
    node_ready: &impl Fn(&str) -> bool,
) -> Judged {
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
    let mut delete = Vec::new();
    // Shards (left from an earlier parallelism) are no slice of the step as it is now.
    let (shards, mine): (Vec<&SliceView>, Vec<&SliceView>) =
        mine.iter().copied().partition(|s| s.shard.is_some());
    for shard in shards {
        if !shard.deleting && shard.phase.is_active() {
            delete.push(shard.name.clone());
        }
    }
    let failures = mine
        .iter()
        .filter(|s| s.phase == SlicePhase::Failed)
        .count();
    let budget = budget(step);
    let mut live: Vec<&SliceView> = mine.iter().copied().filter(|s| !s.deleting).collect();
    live.sort_by(|a, b| b.attempt.cmp(&a.attempt).then(b.name.cmp(&a.name)));
    // Active slices go when they were superseded by a later attempt, lost with their node
    // (counted as an attempt; the step is placed again elsewhere) or skipped. The step is
    // then judged by the slices that stay.
    let mut kept: Vec<&SliceView> = Vec::with_capacity(live.len());
    for (k, slice) in live.into_iter().enumerate() {
        if slice.phase.is_active() && (k > 0 || step.skip || !node_ready(&slice.node)) {
            delete.push(slice.name.clone());
        } else {
            kept.push(slice);
        }
    }
    let mut wants = false;
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
                        status.message = failure_message(current.exit_code);
                    }
                }
                SlicePhase::Failed => wants = true,
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
            _ => wants = true,
        },
    }
    let attempt = status.attempts + 1;
    Judged {
        status,
        delete,
        wants: if wants { vec![None] } else { Vec::new() },
        attempt,
    }
}

/// A BATCH step with parallelism N > 1, an indexed job: shards `0..N`, each judged by its
/// latest slice like a step of its own, with one budget of failures for the whole step.
///
/// - A shard whose latest slice FAILED gets a new slice, alone, while the step's failed slices
///   (over all shards) number at most `retries + retry_requests`; beyond that the step is
///   FAILED and its shards still running are stopped.
/// - A shard lost with its node is placed again, as a new attempt and not as a failure.
/// - The step is SUCCESS once every shard has a slice that succeeded; skip stops every shard
///   still running (a step whose shards all succeeded stays SUCCESS).
/// - `attempts` counts the slices made for the step, over all shards. The attempt in a new
///   shard's name is one more than that count, as for a step that is not sharded, and the
///   shards made together share it: the count only grows, so no name is used twice, even
///   when a slice was removed before its successor could be placed.
/// - Slices that are no shard of `0..N` (left from another parallelism) are stopped and
///   count for nothing but `attempts`.
fn judge_sharded(
    step: &Step,
    before: Option<&StepStatus>,
    mine: &[&SliceView],
    node_ready: &impl Fn(&str) -> bool,
) -> Judged {
    let n = step.parallelism as usize;
    let mut status = StepStatus {
        name: step.name.clone(),
        attempts: mine
            .iter()
            .map(|s| s.attempt)
            .chain(before.map(|b| b.attempts))
            .chain([mine.len() as u32])
            .max()
            .unwrap_or(0),
        shards: step.parallelism,
        ..Default::default()
    };
    let attempt = status.attempts + 1;
    let shard_of = |s: &SliceView| s.shard.map(|k| k as usize).filter(|&k| k < n);
    let mut delete = Vec::new();
    let failures = mine
        .iter()
        .filter(|s| s.phase == SlicePhase::Failed && shard_of(s).is_some())
        .count();
    let budget = budget(step);
    let mut live: Vec<&SliceView> = mine.iter().copied().filter(|s| !s.deleting).collect();
    live.sort_by(|a, b| b.attempt.cmp(&a.attempt).then(b.name.cmp(&a.name)));
    // Per shard, as for a step: active slices go when superseded, lost or skipped; the
    // shard is judged by its latest slice that stays.
    let mut seen = vec![false; n];
    let mut latest: Vec<Option<&SliceView>> = vec![None; n];
    // The newest finished slice of each shard: what names the failure of a FAILED step, the
    // same before and after its running shards are stopped.
    let mut finished: Vec<Option<&SliceView>> = vec![None; n];
    for slice in live {
        let Some(k) = shard_of(slice) else {
            if slice.phase.is_active() {
                delete.push(slice.name.clone());
            }
            continue;
        };
        if !slice.phase.is_active() && finished[k].is_none() {
            finished[k] = Some(slice);
        }
        let superseded = std::mem::replace(&mut seen[k], true);
        if slice.phase.is_active() && (superseded || step.skip || !node_ready(&slice.node)) {
            delete.push(slice.name.clone());
        } else if latest[k].is_none() {
            latest[k] = Some(slice);
        }
    }
    // Some slices of a success were removed: the success stands, unless a slice that stays
    // says otherwise.
    let stands = before.is_some_and(|b| b.state == State::Success as i32)
        && latest
            .iter()
            .flatten()
            .all(|s| s.phase == SlicePhase::Succeeded);
    let done = |k: usize| latest[k].map_or(stands, |s| s.phase == SlicePhase::Succeeded);
    status.shards_succeeded = (0..n).filter(|&k| done(k)).count() as u32;
    // The latest slice of any shard names the step's whereabouts.
    if let Some(s) = latest.iter().flatten().max_by_key(|s| (s.attempt, s.shard)) {
        status.slice = s.name.clone();
        status.node = s.node.clone();
    } else if let Some(b) = before {
        status.slice = b.slice.clone();
        status.node = b.node.clone();
    }
    let failed: Vec<usize> = (0..n)
        .filter(|&k| latest[k].is_some_and(|s| s.phase == SlicePhase::Failed))
        .collect();
    let mut wants = Vec::new();
    if status.shards_succeeded as usize == n {
        status.state = State::Success as i32;
    } else if step.skip {
        skipped(&mut status);
    } else if !failed.is_empty() && failures > budget {
        // Failed beyond the budget: the shards still running are stopped.
        for s in latest.iter().flatten() {
            if s.phase.is_active() {
                delete.push(s.name.clone());
            }
        }
        // The most recent failure names the step's.
        let (k, s) = finished
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.filter(|s| s.phase == SlicePhase::Failed).map(|s| (k, s)))
            .max_by_key(|(k, s)| (s.attempt, *k))
            .expect("a failed shard has a finished slice");
        status.state = State::Failed as i32;
        status.slice = s.name.clone();
        status.node = s.node.clone();
        status.exit_code = s.exit_code;
        let why = if s.message.is_empty() {
            failure_message(s.exit_code)
        } else {
            s.message.clone()
        };
        status.message = format!("shard {k}: {why}");
    } else {
        let mut running = false;
        for (k, slice) in latest.iter().enumerate() {
            match slice {
                Some(s) if s.phase.is_active() => running = true,
                _ if done(k) => {}
                _ => wants.push(Some(k as u32)),
            }
        }
        if running {
            status.state = State::Running as i32;
        }
    }
    Judged {
        status,
        delete,
        wants,
        attempt,
    }
}

/// How many failed slices a step may have before it is FAILED: its `retries`, and one more
/// for each retry a user asked for.
fn budget(step: &Step) -> usize {
    step.retries as usize + step.retry_requests as usize
}

fn failure_message(exit_code: Option<i32>) -> String {
    match exit_code {
        Some(code) => format!("exit code {code}"),
        None => "failed".into(),
    }
}

/// Where a step's slice of the current STREAMING attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    Running,
    Succeeded,
    Failed,
    /// Not finished, and gone or on a node that is not READY.
    Lost,
}

/// STREAMING: the steps as one gang with one attempt number (see the module docs).
fn assess_streaming(
    pipeline: &Pipeline,
    recorded: &HashMap<&str, &StepStatus>,
    slices: &[SliceView],
    node_ready: &impl Fn(&str) -> bool,
    index: &HashMap<&str, usize>,
) -> Assessment {
    let n = pipeline.steps.len();
    let mut out = Assessment {
        steps: vec![StepStatus::default(); n],
        ready: Vec::new(),
        delete: Vec::new(),
    };
    // The current attempt: the latest any slice or the record knows of. Slices whose names
    // carry no attempt (0) belong to none.
    let attempt = slices
        .iter()
        .map(|s| s.attempt)
        .chain(recorded.values().map(|r| r.attempts))
        .max()
        .unwrap_or(0);
    let live: Vec<&SliceView> = slices.iter().filter(|s| !s.deleting).collect();
    let mut current: Vec<Option<&SliceView>> = vec![None; n];
    for slice in &live {
        // Shards are no slices of a STREAMING step (admission refuses its parallelism).
        if slice.attempt == 0 || slice.attempt != attempt || slice.shard.is_some() {
            continue;
        }
        if let Some(&i) = index.get(slice.step.as_str())
            && current[i].is_none_or(|c| slice.name < c.name)
        {
            current[i] = Some(slice);
        }
    }
    let outcomes: Vec<MemberState> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| match current[i] {
            Some(s) if s.phase.is_active() && !node_ready(&s.node) => MemberState::Lost,
            Some(s) => match s.phase {
                SlicePhase::Succeeded => MemberState::Succeeded,
                SlicePhase::Failed => MemberState::Failed,
                SlicePhase::Pending | SlicePhase::Running => MemberState::Running,
            },
            // The slice of a success was removed: the success stands, for this attempt.
            None if recorded
                .get(step.name.as_str())
                .is_some_and(|r| r.attempts == attempt && r.state == State::Success as i32) =>
            {
                MemberState::Succeeded
            }
            None => MemberState::Lost,
        })
        .collect();
    for (i, step) in pipeline.steps.iter().enumerate() {
        let status = &mut out.steps[i];
        status.name = step.name.clone();
        status.attempts = attempt;
        match current[i] {
            Some(s) => {
                status.slice = s.name.clone();
                status.node = s.node.clone();
                status.exit_code = s.exit_code;
                status.message = s.message.clone();
            }
            // The slice is gone: what the record says of this attempt stands.
            None => {
                if let Some(r) = recorded
                    .get(step.name.as_str())
                    .filter(|r| r.attempts == attempt)
                {
                    status.slice = r.slice.clone();
                    status.node = r.node.clone();
                    status.exit_code = r.exit_code;
                }
            }
        }
    }

    // Whatever runs and is not a healthy part of the current attempt goes: superseded
    // attempts, slices of steps no longer in the spec, and, once the attempt broke, all of it.
    let broken = attempt > 0
        && outcomes
            .iter()
            .any(|o| matches!(o, MemberState::Failed | MemberState::Lost));
    for slice in &live {
        let healthy = !broken
            && index
                .get(slice.step.as_str())
                .is_some_and(|&i| current[i].is_some_and(|c| c.name == slice.name));
        if slice.phase.is_active() && !healthy {
            out.delete.push(slice.name.clone());
        }
    }

    if attempt > 0 && !broken {
        for (status, outcome) in out.steps.iter_mut().zip(&outcomes) {
            status.state = if *outcome == MemberState::Succeeded {
                State::Success
            } else {
                State::Running
            } as i32;
        }
        return out;
    }
    let charges = charges(pipeline, &live, index);
    let failed_now = outcomes.contains(&MemberState::Failed);
    let over: Vec<usize> = (0..n)
        .filter(|&i| {
            let step = &pipeline.steps[i];
            failed_now && charges[i] > budget(step)
        })
        .collect();
    if over.is_empty() {
        // Nothing ran yet, or the attempt broke within the budget: all start (again) together.
        for (i, status) in out.steps.iter_mut().enumerate() {
            status.state = State::Pending as i32;
            if pipeline.paused {
                paused(status);
            } else {
                out.ready.push(Start {
                    step: i,
                    shard: None,
                    attempt: attempt + 1,
                });
            }
        }
        return out;
    }
    // Failed beyond the budget: the charged steps are FAILED, the steps that failed because
    // of them say so, the rest are blocked.
    let culprit = &pipeline.steps[over[0]].name;
    let culprits = culprits_of(pipeline, &live, index, attempt);
    for (i, status) in out.steps.iter_mut().enumerate() {
        if over.contains(&i) || outcomes[i] == MemberState::Failed {
            status.state = State::Failed as i32;
            if status.message.is_empty() {
                status.message = match status.exit_code {
                    None if outcomes[i] != MemberState::Failed => {
                        format!("failed {} times", charges[i])
                    }
                    code => failure_message(code),
                };
            }
            if outcomes[i] == MemberState::Failed && !culprits.contains(&i) {
                let below = downstream(pipeline, index, i)
                    .find(|j| culprits.contains(j))
                    .map_or(culprit, |j| &pipeline.steps[j].name);
                status.message = format!("{}; '{below}' downstream failed", status.message);
            }
        } else {
            status.state = State::Pending as i32;
            status.message = format!("blocked: '{culprit}' failed");
        }
    }
    out
}

/// How many failed attempts each step is charged with: per attempt, in each chain of pipes,
/// the failed step furthest downstream (see the module docs). Index by step.
fn charges(pipeline: &Pipeline, live: &[&SliceView], index: &HashMap<&str, usize>) -> Vec<usize> {
    let mut attempts: Vec<u32> = live
        .iter()
        .filter(|s| s.phase == SlicePhase::Failed && s.attempt > 0)
        .map(|s| s.attempt)
        .collect();
    attempts.sort_unstable();
    attempts.dedup();
    let mut charges = vec![0; pipeline.steps.len()];
    for attempt in attempts {
        for i in culprits_of(pipeline, live, index, attempt) {
            charges[i] += 1;
        }
    }
    charges
}

/// The steps charged with attempt `attempt`: those whose slice of it FAILED with no failed
/// slice of it further down their chain.
fn culprits_of(
    pipeline: &Pipeline,
    live: &[&SliceView],
    index: &HashMap<&str, usize>,
    attempt: u32,
) -> Vec<usize> {
    let failed: Vec<usize> = live
        .iter()
        .filter(|s| s.attempt == attempt && s.phase == SlicePhase::Failed)
        .filter_map(|s| index.get(s.step.as_str()).copied())
        .collect();
    let mut culprits: Vec<usize> = failed
        .iter()
        .copied()
        .filter(|&i| !downstream(pipeline, index, i).any(|j| failed.contains(&j)))
        .collect();
    culprits.sort_unstable();
    culprits.dedup();
    culprits
}

/// The steps fed by step `i`, nearest first. Each STREAMING step feeds at most one
/// (admission); the walk stops after as many steps as there are, so a cycle cannot trap it.
fn downstream<'a>(
    pipeline: &'a Pipeline,
    index: &'a HashMap<&str, usize>,
    i: usize,
) -> impl Iterator<Item = usize> + 'a {
    let name = |i: usize| pipeline.steps[i].name.as_str();
    std::iter::successors(Some(i), move |&j| {
        pipeline
            .steps
            .iter()
            .find(|s| s.depends_on.first().map(String::as_str) == Some(name(j)))
            .and_then(|s| index.get(s.name.as_str()).copied())
    })
    .skip(1)
    .take(pipeline.steps.len())
}

fn paused(status: &mut StepStatus) {
    status.state = State::ActionPending as i32;
    status.message = "paused: resume the pipeline to start it".into();
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
