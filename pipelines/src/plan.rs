//! One pipeline's plan: the DAG core's assessment placed by the scheduler. Pure.
//!
//! What lives here: naming slices and pipes, turning ready steps into slices on nodes (one by
//! one in BATCH; in STREAMING the whole attempt, all steps together on one node), and the
//! status that results. What never does:
//! building objects or talking to the apiserver (that is [`crate::controller`]'s).

use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, StepStatus};

use crate::dag::{self, SliceView};
use crate::schedule::{Amount, Cluster, Demand};

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

/// The attempt in a slice name made by [`slice_name`], if it is one.
pub fn attempt_of(slice: &str, pipeline: &str, step: &str) -> Option<u32> {
    slice
        .strip_prefix(pipeline)?
        .strip_prefix('.')?
        .strip_prefix(step)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The FIFO a STREAMING step writes its stdout to in attempt `attempt`:
/// `<pipeline>_<step>-<attempt>` (the underscore occurs in neither name, so pipes of different
/// pipelines never collide). Each attempt has its own pipes: a slice of a broken attempt that
/// is still being stopped must neither write into nor read from the next attempt's.
pub fn pipe_name(pipeline: &str, step: &str, attempt: u32) -> String {
    format!("{pipeline}_{step}-{attempt}")
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
    let mut placed = |i: usize, node: String, steps: &mut [StepStatus]| {
        let step = &pipeline.steps[i];
        let status = &mut steps[i];
        status.attempts += 1;
        status.state = State::Running as i32;
        status.slice = slice_name(name, &step.name, status.attempts);
        status.node = node.clone();
        status.exit_code = None;
        status.message = String::new();
        let (stdin_pipe, stdout_pipe) = pipes(name, pipeline, i, status.attempts);
        create.push(NewSlice {
            step: i,
            name: status.slice.clone(),
            attempt: status.attempts,
            node,
            stdin_pipe,
            stdout_pipe,
        });
    };
    if pipeline.mode == Mode::Streaming as i32 {
        if !assessment.ready.is_empty() {
            let demands: Vec<Demand<'_>> = assessment.ready.iter().map(|&i| demand(i)).collect();
            match cluster.place_together(&demands, pinned) {
                Ok(node) => {
                    for &i in &assessment.ready {
                        placed(i, node.clone(), &mut steps);
                    }
                }
                Err(why) => {
                    for &i in &assessment.ready {
                        steps[i].message = why.to_string();
                    }
                }
            }
        }
    } else {
        for &i in &assessment.ready {
            match cluster.place(&demand(i)) {
                Ok(node) => placed(i, node, &mut steps),
                Err(why) => steps[i].message = why.to_string(),
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
