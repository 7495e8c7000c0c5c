//! One pipeline's plan: the DAG core's assessment placed by the scheduler. Pure.
//!
//! What lives here: naming slices and pipes, the environment of a shard, turning the slices
//! the core wants started into slices on nodes (one by one in BATCH, each shard of a parallel
//! step placed on its own; in STREAMING the whole attempt, all steps together on one node),
//! and the status that results. What never does: building objects or talking to the
//! apiserver (that is [`crate::controller`]'s).

use std::collections::HashMap;

use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, StepStatus};

use crate::dag::{self, SliceView, Start};
use crate::schedule::{Amount, Cluster, Demand};

/// The environment variable that tells a shard its index, `0..RUBE_SHARDS`.
pub const ENV_SHARD_INDEX: &str = "RUBE_SHARD_INDEX";
/// The environment variable that tells a shard how many shards its step has.
pub const ENV_SHARDS: &str = "RUBE_SHARDS";

/// A slice to create for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSlice {
    /// Index of the step in the spec.
    pub step: usize,
    pub name: String,
    pub attempt: u32,
    pub node: String,
    /// STREAMING: the FIFO this step reads from / writes to ("" for none).
    pub stdin_pipe: String,
    pub stdout_pipe: String,
    /// A shard of a parallel BATCH step: its index and the step's number of shards.
    pub shard: Option<(u32, u32)>,
}

/// What to do for one pipeline now, and the status that says so.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<StepStatus>,
    pub phase: Phase,
    pub create: Vec<NewSlice>,
    pub delete: Vec<String>,
}

/// `<pipeline>.<step>-<attempt>`. The dot cannot occur in a step name, so names of different
/// pipelines and steps never collide (`a-b` + `c` and `a` + `b-c` would with a dash).
pub fn slice_name(pipeline: &str, step: &str, attempt: u32) -> String {
    format!("{pipeline}.{step}-{attempt}")
}

/// `<pipeline>.<step>-<attempt>.<index>`: shard `index` of a parallel step. The last label is
/// all digits, which `<step>-<attempt>` never is, so it cannot be mistaken for a slice name of
/// a step that is not sharded.
pub fn shard_name(pipeline: &str, step: &str, attempt: u32, index: u32) -> String {
    format!("{pipeline}.{step}-{attempt}.{index}")
}

/// The attempt and, for a shard, the index in a slice name made by [`slice_name`] or
/// [`shard_name`] for `pipeline`'s `step`, if it is one.
pub fn parse_slice_name(slice: &str, pipeline: &str, step: &str) -> Option<(u32, Option<u32>)> {
    let rest = slice
        .strip_prefix(pipeline)?
        .strip_prefix('.')?
        .strip_prefix(step)?
        .strip_prefix('-')?;
    let (attempt, shard) = match rest.split_once('.') {
        Some((attempt, index)) => (attempt, Some(number(index)?)),
        None => (rest, None),
    };
    Some((number(attempt)?, shard))
}

/// Plain decimal digits only: `parse` would take a leading `+`.
fn number(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The FIFO a STREAMING step writes its stdout to in attempt `attempt`:
/// `<pipeline>_<step>-<attempt>` (the underscore occurs in neither name, so pipes of different
/// pipelines never collide). Each attempt has its own pipes: a slice of a broken attempt that
/// is still being stopped must neither write into nor read from the next attempt's.
pub fn pipe_name(pipeline: &str, step: &str, attempt: u32) -> String {
    format!("{pipeline}_{step}-{attempt}")
}

/// The environment of `new`: the step's `env`, and for a shard [`ENV_SHARD_INDEX`] and
/// [`ENV_SHARDS`]. Ours win over the step's variables of the same names: a shard that read
/// another index than the one it was started as would do another shard's work twice.
pub fn slice_env(step_env: &HashMap<String, String>, new: &NewSlice) -> HashMap<String, String> {
    let mut env = step_env.clone();
    if let Some((index, shards)) = new.shard {
        env.insert(ENV_SHARD_INDEX.to_owned(), index.to_string());
        env.insert(ENV_SHARDS.to_owned(), shards.to_string());
    }
    env
}

/// Plans `pipeline` (named `name`): which slices to delete and create, on which nodes, and the
/// resulting status. `cluster` holds the nodes and every active slice of *other* pipelines and
/// users; this pipeline's `slices` are counted here.
pub fn plan(
    name: &str,
    pipeline: &Pipeline,
    recorded: &[StepStatus],
    slices: &[SliceView],
    cluster: &mut Cluster,
) -> Plan {
    let assessment = dag::assess(pipeline, recorded, slices, |node| cluster.is_ready(node));
    let mut steps = assessment.steps;
    // What keeps running takes its room before anything new is placed.
    let mut pinned: Option<&str> = None;
    for slice in slices {
        if !slice.deleting && slice.phase.is_active() && !assessment.delete.contains(&slice.name) {
            cluster.occupy(&slice.node, &slice.request, true);
            pinned.get_or_insert(slice.node.as_str());
        }
    }
    let mut create = Vec::new();
    let demand = |i: usize| {
        let step = &pipeline.steps[i];
        Demand {
            request: Amount::of_slice(step.resources.as_ref()),
            node_selector: &step.node_selector,
        }
    };
    let mut placed = |start: &Start, node: String, steps: &mut [StepStatus]| {
        let step = &pipeline.steps[start.step];
        let status = &mut steps[start.step];
        status.attempts += 1;
        status.state = State::Running as i32;
        status.slice = match start.shard {
            Some(index) => shard_name(name, &step.name, start.attempt, index),
            None => slice_name(name, &step.name, start.attempt),
        };
        status.node = node.clone();
        status.exit_code = None;
        status.message = String::new();
        let (stdin_pipe, stdout_pipe) = pipes(name, pipeline, start.step, start.attempt);
        create.push(NewSlice {
            step: start.step,
            name: status.slice.clone(),
            attempt: start.attempt,
            node,
            stdin_pipe,
            stdout_pipe,
            shard: start.shard.map(|index| (index, step.parallelism)),
        });
    };
    if pipeline.mode == Mode::Streaming as i32 {
        if !assessment.ready.is_empty() {
            let demands: Vec<Demand<'_>> =
                assessment.ready.iter().map(|s| demand(s.step)).collect();
            match cluster.place_together(&demands, pinned) {
                Ok(node) => {
                    for start in &assessment.ready {
                        placed(start, node.clone(), &mut steps);
                    }
                }
                Err(why) => {
                    for start in &assessment.ready {
                        steps[start.step].message = why.to_string();
                    }
                }
            }
        }
    } else {
        // Each slice on its own, shards of one step included: every placement counts, so the
        // next one spreads away from it.
        for start in &assessment.ready {
            match cluster.place(&demand(start.step)) {
                Ok(node) => placed(start, node, &mut steps),
                Err(why) => steps[start.step].message = why.to_string(),
            }
        }
    }
    let phase = dag::phase(pipeline, &steps);
    Plan {
        steps,
        phase,
        create,
        delete: assessment.delete,
    }
}

/// STREAMING: step `i` reads the pipe of the step it depends on and writes its own pipe when
/// a step depends on it, both of attempt `attempt`. BATCH: no pipes.
fn pipes(name: &str, pipeline: &Pipeline, i: usize, attempt: u32) -> (String, String) {
    if pipeline.mode != Mode::Streaming as i32 {
        return (String::new(), String::new());
    }
    let step = &pipeline.steps[i];
    let stdin = step
        .depends_on
        .first()
        .map(|source| pipe_name(name, source, attempt))
        .unwrap_or_default();
    let feeds = pipeline
        .steps
        .iter()
        .any(|s| s.depends_on.contains(&step.name));
    let stdout = if feeds {
        pipe_name(name, &step.name, attempt)
    } else {
        String::new()
    };
    (stdin, stdout)
}
