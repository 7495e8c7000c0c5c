//! Rules for `runink.Pipeline`: the steps form a DAG the pipeline controller can run.
//!
//! What lives here: checks of one spec on its own (names, dependencies, cycles, what STREAMING
//! can wire). What never does: anything that needs other objects (nodes, quotas) or the
//! pipeline's name; those are the controller's to report in the status.

use std::collections::HashMap;

use crate::runink::pipeline::Mode;
use crate::runink::{Pipeline, Step};

use super::Invalid;

/// The longest step name. Slices are named `<pipeline>.<step>-<attempt>` (shards of a
/// parallel step `<pipeline>.<step>-<attempt>.<index>`), and the DNS label `<step>-<attempt>`
/// must stay within 63 characters for any attempt.
pub const MAX_STEP_NAME: usize = 52;

/// The most shards a parallel step may have. Each is a slice of its own, made at once when
/// the step starts; more than this is a mistake rather than a plan.
pub const MAX_PARALLELISM: u32 = 1000;

/// Refuses a pipeline without steps, with a step name that is not a DNS label (of at most
/// [`MAX_STEP_NAME`] characters) or is used twice, a step without a command, parallelism
/// above [`MAX_PARALLELISM`], an unknown or repeated dependency, a cycle, or a STREAMING
/// pipeline whose steps do not form chains (each step reads from at most one step and feeds
/// at most one), skips a step or runs one with parallelism above 1.
pub fn validate(pipeline: &Pipeline) -> Result<(), Invalid> {
    if pipeline.steps.is_empty() {
        return Err(Invalid::new("steps", "a pipeline needs at least one step"));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in pipeline.steps.iter().enumerate() {
        check_step_name(i, &step.name)?;
        if let Some(first) = index.insert(&step.name, i) {
            return Err(Invalid::new(
                format!("steps[{i}].name"),
                format!("'{}' is already the name of steps[{first}]", step.name),
            ));
        }
        if step.command.is_empty() {
            return Err(Invalid::new(
                format!("steps[{i}].command"),
                format!("step '{}' has no command", step.name),
            ));
        }
        if step.parallelism > MAX_PARALLELISM {
            return Err(Invalid::new(
                format!("steps[{i}].parallelism"),
                format!(
                    "{} shards of step '{}' are more than the limit of {MAX_PARALLELISM}",
                    step.parallelism, step.name
                ),
            ));
        }
    }
    for (i, step) in pipeline.steps.iter().enumerate() {
        for (j, dependency) in step.depends_on.iter().enumerate() {
            if !index.contains_key(dependency.as_str()) {
                return Err(Invalid::new(
                    format!("steps[{i}].depends_on[{j}]"),
                    format!("'{dependency}' is not a step of this pipeline"),
                ));
            }
            if step.depends_on[..j].contains(dependency) {
                return Err(Invalid::new(
                    format!("steps[{i}].depends_on[{j}]"),
                    format!("'{dependency}' is listed twice"),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&pipeline.steps, &index) {
        return Err(Invalid::new(
            "steps",
            format!("cycle {}", cycle.join(" -> ")),
        ));
    }
    if pipeline.mode == Mode::Streaming as i32 {
        check_streaming(&pipeline.steps)?;
    }
    Ok(())
}

fn check_step_name(i: usize, name: &str) -> Result<(), Invalid> {
    let bytes = name.as_bytes();
    let label = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if !label {
        return Err(Invalid::new(
            format!("steps[{i}].name"),
            format!(
                "'{name}' is not a DNS label: use lowercase letters, digits and '-', starting and \
                 ending with a letter or digit"
            ),
        ));
    }
    if name.len() > MAX_STEP_NAME {
        return Err(Invalid::new(
            format!("steps[{i}].name"),
            format!(
                "'{name}' is {} characters long, over the limit of {MAX_STEP_NAME} (its slices \
                 are named '<pipeline>.{name}-<attempt>')",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// The first cycle found by a depth-first search in step order, as step names from one step
/// back to itself (`a -> b -> a`). Dependencies must already be known names.
fn find_cycle<'a>(steps: &'a [Step], index: &HashMap<&str, usize>) -> Option<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; steps.len()];
    for start in 0..steps.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // An explicit stack of (step, next dependency to look at), so deep chains cannot
        // overflow the call stack.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some((step, next)) = path.last_mut() {
            let step = *step;
            let Some(dependency) = steps[step].depends_on.get(*next) else {
                marks[step] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            let target = index[dependency.as_str()];
            match marks[target] {
                Mark::Done => {}
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::OnPath => {
                    // The path runs from `target` down its dependencies to `step`, which depends
                    // on `target` again. Printed in the direction of the dependencies.
                    let from = path.iter().position(|(s, _)| *s == target).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..]
                        .iter()
                        .map(|(s, _)| steps[*s].name.as_str())
                        .collect();
                    cycle.push(&steps[target].name);
                    return Some(cycle);
                }
            }
        }
    }
    None
}

/// STREAMING wires each step's stdout to the stdin of the step that depends on it, through
/// one FIFO each: so a step can read from one step and feed one step, runs as one slice (the
/// FIFO has one reader and one writer, so shards could not share it), and no step may be
/// skipped (its neighbours would wait on its pipes forever).
fn check_streaming(steps: &[Step]) -> Result<(), Invalid> {
    let mut fed_by: HashMap<&str, &str> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if step.depends_on.len() > 1 {
            return Err(Invalid::new(
                format!("steps[{i}].depends_on"),
                format!(
                    "streaming step '{}' reads from {} steps; it has one stdin, so at most one",
                    step.name,
                    step.depends_on.len()
                ),
            ));
        }
        if let Some(source) = step.depends_on.first()
            && let Some(other) = fed_by.insert(source, &step.name)
        {
            return Err(Invalid::new(
                format!("steps[{i}].depends_on[0]"),
                format!(
                    "streaming step '{source}' already feeds '{other}'; it has one stdout, \
                     so it can feed one step"
                ),
            ));
        }
        if step.parallelism > 1 {
            return Err(Invalid::new(
                format!("steps[{i}].parallelism"),
                format!(
                    "streaming step '{}' cannot run as {} shards: it reads and writes one pipe \
                     each, which has one reader and one writer; use 0 or 1, or BATCH",
                    step.name, step.parallelism
                ),
            ));
        }
        if step.skip {
            return Err(Invalid::new(
                format!("steps[{i}].skip"),
                format!(
                    "streaming step '{}' cannot be skipped: its neighbours would wait on its pipes",
                    step.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, depends_on: &[&str]) -> Step {
        Step {
            name: name.into(),
            command: "/bin/true".into(),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn batch(steps: Vec<Step>) -> Pipeline {
        Pipeline {
            mode: Mode::Batch as i32,
            steps,
            ..Default::default()
        }
    }

    fn streaming(steps: Vec<Step>) -> Pipeline {
        Pipeline {
            mode: Mode::Streaming as i32,
            steps,
            ..Default::default()
        }
    }

    fn refusal(pipeline: &Pipeline) -> String {
        validate(pipeline)
            .expect_err("the pipeline should be refused")
            .to_string()
    }

    #[test]
    fn a_diamond_and_a_chain_pass() {
        let diamond = batch(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
        ]);
        assert_eq!(validate(&diamond), Ok(()));
        let chain = streaming(vec![
            step("src", &[]),
            step("map", &["src"]),
            step("sink", &["map"]),
        ]);
        assert_eq!(validate(&chain), Ok(()));
    }

    #[test]
    fn no_steps() {
        assert_eq!(
            refusal(&batch(vec![])),
            "steps: a pipeline needs at least one step"
        );
    }

    #[test]
    fn duplicate_step_name() {
        let p = batch(vec![step("a", &[]), step("b", &[]), step("a", &[])]);
        assert_eq!(
            refusal(&p),
            "steps[2].name: 'a' is already the name of steps[0]"
        );
    }

    #[test]
    fn step_names_are_dns_labels() {
        for name in ["Fetch", "", "-a", "a-", "a.b", "a_b"] {
            let p = batch(vec![step(name, &[])]);
            assert_eq!(
                refusal(&p),
                format!(
                    "steps[0].name: '{name}' is not a DNS label: use lowercase letters, digits \
                     and '-', starting and ending with a letter or digit"
                ),
                "name {name:?}"
            );
        }
        let long = "a".repeat(MAX_STEP_NAME + 1);
        assert_eq!(
            refusal(&batch(vec![step(&long, &[])])),
            format!(
                "steps[0].name: '{long}' is 53 characters long, over the limit of 52 (its slices \
                 are named '<pipeline>.{long}-<attempt>')"
            )
        );
        assert_eq!(
            validate(&batch(vec![step(&"a".repeat(MAX_STEP_NAME), &[])])),
            Ok(())
        );
    }

    #[test]
    fn empty_command() {
        let mut s = step("fetch", &[]);
        s.command.clear();
        assert_eq!(
            refusal(&batch(vec![s])),
            "steps[0].command: step 'fetch' has no command"
        );
    }

    #[test]
    fn unknown_dependency() {
        let p = batch(vec![step("a", &[]), step("b", &["a", "x"])]);
        assert_eq!(
            refusal(&p),
            "steps[1].depends_on[1]: 'x' is not a step of this pipeline"
        );
    }

    #[test]
    fn repeated_dependency() {
        let p = batch(vec![step("a", &[]), step("b", &["a", "a"])]);
        assert_eq!(refusal(&p), "steps[1].depends_on[1]: 'a' is listed twice");
    }

    #[test]
    fn cycles_name_their_steps() {
        let two = batch(vec![step("a", &["b"]), step("b", &["a"])]);
        assert_eq!(refusal(&two), "steps: cycle a -> b -> a");
        let itself = batch(vec![step("a", &["a"])]);
        assert_eq!(refusal(&itself), "steps: cycle a -> a");
        // The cycle is reported without the steps that merely lead into it.
        let behind = batch(vec![
            step("start", &["x"]),
            step("x", &["y"]),
            step("y", &["z"]),
            step("z", &["x"]),
        ]);
        assert_eq!(refusal(&behind), "steps: cycle x -> y -> z -> x");
    }

    #[test]
    fn a_shared_dependency_is_not_a_cycle() {
        // d is reached twice (through b and c): done, not on the path.
        let p = batch(vec![
            step("a", &["b", "c"]),
            step("b", &["d"]),
            step("c", &["d"]),
            step("d", &[]),
        ]);
        assert_eq!(validate(&p), Ok(()));
    }

    #[test]
    fn batch_steps_run_in_parallel_up_to_the_limit() {
        let mut s = step("a", &[]);
        s.parallelism = 3;
        assert_eq!(validate(&batch(vec![s.clone(), step("b", &["a"])])), Ok(()));
        s.parallelism = MAX_PARALLELISM;
        assert_eq!(validate(&batch(vec![s.clone()])), Ok(()));
        s.parallelism = MAX_PARALLELISM + 1;
        assert_eq!(
            refusal(&batch(vec![s])),
            "steps[0].parallelism: 1001 shards of step 'a' are more than the limit of 1000"
        );
    }

    #[test]
    fn streaming_steps_run_once() {
        let mut b = step("b", &["a"]);
        b.parallelism = 2;
        assert_eq!(
            refusal(&streaming(vec![step("a", &[]), b.clone()])),
            "steps[1].parallelism: streaming step 'b' cannot run as 2 shards: it reads and \
             writes one pipe each, which has one reader and one writer; use 0 or 1, or BATCH"
        );
        b.parallelism = 1;
        assert_eq!(validate(&streaming(vec![step("a", &[]), b])), Ok(()));
    }

    #[test]
    fn streaming_step_reads_from_one_step() {
        let p = streaming(vec![step("a", &[]), step("b", &[]), step("c", &["a", "b"])]);
        assert_eq!(
            refusal(&p),
            "steps[2].depends_on: streaming step 'c' reads from 2 steps; it has one stdin, so at most one"
        );
        // The same shape is fine in batch.
        assert_eq!(
            validate(&batch(vec![
                step("a", &[]),
                step("b", &[]),
                step("c", &["a", "b"])
            ])),
            Ok(())
        );
    }

    #[test]
    fn streaming_step_feeds_one_step() {
        let p = streaming(vec![step("a", &[]), step("b", &["a"]), step("c", &["a"])]);
        assert_eq!(
            refusal(&p),
            "steps[2].depends_on[0]: streaming step 'a' already feeds 'b'; it has one stdout, so it can feed one step"
        );
    }

    #[test]
    fn streaming_steps_cannot_be_skipped() {
        let mut b = step("b", &["a"]);
        b.skip = true;
        assert_eq!(
            refusal(&streaming(vec![step("a", &[]), b])),
            "steps[1].skip: streaming step 'b' cannot be skipped: its neighbours would wait on its pipes"
        );
    }

    #[test]
    fn the_example_pipeline_passes() {
        let registry = crate::Registry::builtin();
        let text = include_str!("../../../examples/analytics/wordcount.textproto");
        let objects = crate::text::parse_objects(&registry, text).unwrap();
        let spec = objects[0].spec.as_ref().unwrap();
        assert_eq!(super::super::spec("wordcount", spec), Ok(()));
    }
}
