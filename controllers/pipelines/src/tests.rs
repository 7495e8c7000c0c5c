//! Pure tests of the core, the scheduler and `reconcile`: a small simulated cluster where the
//! test plays the rubelets by setting slice phases, and `simulate` plays the apiserver.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use rubeapi::object::{self, ObjectExt};
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, PipelineStatus, Quota, Resources, Step};

use crate::controller::{Effect, FINALIZER, Observed, Occupant, reconcile, simulate};
use crate::dag::{SlicePhase, SliceView};
use crate::schedule::{Amount, Cluster, Demand, NodeView, Unplaceable};

const UID: &str = "uid-1";

fn step(name: &str, depends_on: &[&str]) -> Step {
    Step {
        name: name.into(),
        command: "/bin/true".into(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

fn node(name: &str, ready: bool) -> NodeView {
    NodeView {
        name: name.into(),
        labels: BTreeMap::from([("zone".to_owned(), name.to_owned())]),
        ready,
        schedulable: true,
        allocatable: Amount {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pids: 0,
            slices: 0,
        },
    }
}

fn pipeline_object(spec: &Pipeline) -> rubeapi::rube::Object {
    let mut o = object::new("herd", "p", spec);
    let m = o.metadata.as_mut().unwrap();
    m.uid = UID.into();
    m.generation = 1;
    m.revision = 10;
    o
}

fn world(spec: Pipeline, nodes: Vec<NodeView>) -> Observed {
    Observed {
        pipeline: Some(pipeline_object(&spec)),
        nodes,
        ..Default::default()
    }
}

/// Reconciles and simulates until nothing is left to do; panics after 5 rounds.
fn settle(world: &mut Observed) {
    rubeapi::testing::fixpoint(world, 5, reconcile, simulate);
}

fn status(world: &Observed) -> PipelineStatus {
    world
        .pipeline
        .as_ref()
        .expect("the pipeline exists")
        .status_as()
        .unwrap()
        .expect("a status was written")
}

/// `name=STATE` for every step, and the phase: what a user reads.
fn summary(world: &Observed) -> String {
    let status = status(world);
    let steps: Vec<String> = status
        .steps
        .iter()
        .map(|s| {
            let state = State::try_from(s.state).unwrap().as_str_name();
            format!("{}={state}", s.name)
        })
        .collect();
    format!(
        "{} {}",
        Phase::try_from(status.phase).unwrap().as_str_name(),
        steps.join(" ")
    )
}

/// Names of the slices that are live and not finished.
fn active(world: &Observed) -> Vec<String> {
    let mut names: Vec<String> = world
        .slices
        .iter()
        .filter(|s| !s.deleting && s.phase.is_active())
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

fn finish(world: &mut Observed, slice: &str, phase: SlicePhase, exit_code: i32) {
    let names = format!("{:?}", active_names(&world.slices));
    let found = world
        .slices
        .iter_mut()
        .find(|s| s.name == slice)
        .unwrap_or_else(|| panic!("no slice {slice} among {names}"));
    found.phase = phase;
    found.exit_code = Some(exit_code);
}

fn active_names(slices: &[SliceView]) -> Vec<&str> {
    slices.iter().map(|s| s.name.as_str()).collect()
}

fn edit(world: &mut Observed, change: impl FnOnce(&mut Pipeline)) {
    let object = world.pipeline.as_mut().unwrap();
    let mut spec: Pipeline = object.spec_as().unwrap();
    change(&mut spec);
    object.spec = Some(object::pack(&spec));
    object.metadata.as_mut().unwrap().generation += 1;
}

fn diamond() -> Pipeline {
    Pipeline {
        mode: Mode::Batch as i32,
        steps: vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
        ],
        ..Default::default()
    }
}

#[test]
fn the_diamond_runs_in_dependency_order() {
    let mut w = world(diamond(), vec![node("n1", true), node("n2", true)]);
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-1"]);
    assert_eq!(
        summary(&w),
        "RUNNING a=RUNNING b=PENDING c=PENDING d=PENDING"
    );
    assert!(
        w.pipeline
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .finalizers
            == [FINALIZER],
        "the finalizer is put before any slice"
    );
    finish(&mut w, "p.a-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.b-1", "p.c-1"]);
    // Spread: b and c on different nodes.
    let nodes: Vec<&str> = w
        .slices
        .iter()
        .filter(|s| s.step != "a")
        .map(|s| s.node.as_str())
        .collect();
    assert_eq!(nodes, ["n1", "n2"], "b and c are spread over both nodes");
    finish(&mut w, "p.b-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.c-1"], "d waits for c");
    assert_eq!(status(&w).steps[3].message, "waiting for 'c'");
    finish(&mut w, "p.c-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.d-1"]);
    finish(&mut w, "p.d-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "SUCCEEDED a=SUCCESS b=SUCCESS c=SUCCESS d=SUCCESS"
    );
    assert_eq!(status(&w).observed_generation, 1);
}

#[test]
fn a_failing_step_without_retries_fails_the_pipeline_and_blocks_dependents() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Failed, 3);
    settle(&mut w);
    assert_eq!(summary(&w), "FAILED a=FAILED b=PENDING c=PENDING d=PENDING");
    let s = status(&w);
    assert_eq!((s.steps[0].exit_code, s.steps[0].attempts), (Some(3), 1));
    assert_eq!(s.steps[0].message, "exit code 3");
    assert_eq!(s.steps[1].message, "blocked: 'a' failed");
    assert!(active(&w).is_empty());
}

#[test]
fn a_failing_step_with_retries_gets_new_attempts_until_the_budget_is_spent() {
    let mut spec = diamond();
    spec.steps[0].retries = 1;
    let mut w = world(spec, vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Failed, 1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-2"], "one retry");
    assert_eq!(
        summary(&w),
        "RUNNING a=RUNNING b=PENDING c=PENDING d=PENDING"
    );
    assert_eq!(status(&w).steps[0].attempts, 2);
    finish(&mut w, "p.a-2", SlicePhase::Failed, 1);
    settle(&mut w);
    assert_eq!(summary(&w), "FAILED a=FAILED b=PENDING c=PENDING d=PENDING");
    // The failed slices stay, as history.
    assert_eq!(w.slices.len(), 2);
}

#[test]
fn a_user_retry_buys_one_more_attempt() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Failed, 1);
    settle(&mut w);
    assert_eq!(summary(&w), "FAILED a=FAILED b=PENDING c=PENDING d=PENDING");
    edit(&mut w, |p| p.steps[0].retry_requests = 1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-2"]);
    assert_eq!(status(&w).observed_generation, 2);
    finish(&mut w, "p.a-2", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.b-1", "p.c-1"]);
}

#[test]
fn skipping_a_failed_step_lets_dependents_proceed() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Failed, 1);
    settle(&mut w);
    edit(&mut w, |p| p.steps[0].skip = true);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING a=SKIPPED b=RUNNING c=RUNNING d=PENDING"
    );
}

#[test]
fn skipping_a_running_step_stops_its_slice() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    edit(&mut w, |p| p.steps[1].skip = true);
    settle(&mut w);
    assert_eq!(active(&w), ["p.c-1"], "b's slice was deleted");
    assert_eq!(
        summary(&w),
        "RUNNING a=SUCCESS b=SKIPPED c=RUNNING d=PENDING"
    );
    finish(&mut w, "p.c-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(
        active(&w),
        ["p.d-1"],
        "d runs after a skipped and a succeeded step"
    );
}

#[test]
fn a_paused_pipeline_starts_nothing_and_resumes() {
    let mut spec = diamond();
    spec.paused = true;
    let mut w = world(spec, vec![node("n1", true)]);
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert_eq!(
        summary(&w),
        "PAUSED a=ACTION_PENDING b=PENDING c=PENDING d=PENDING"
    );
    edit(&mut w, |p| p.paused = false);
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-1"]);
    // Pausing keeps what runs running.
    edit(&mut w, |p| p.paused = true);
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-1"]);
    finish(&mut w, "p.a-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert_eq!(
        summary(&w),
        "PAUSED a=SUCCESS b=ACTION_PENDING c=ACTION_PENDING d=PENDING"
    );
}

#[test]
fn a_slice_on_a_not_ready_node_is_placed_elsewhere_as_a_new_attempt() {
    let mut w = world(diamond(), vec![node("n1", true), node("n2", true)]);
    settle(&mut w);
    assert_eq!(w.slices[0].node, "n1");
    w.nodes[0].ready = false;
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.a-1".into())),
        "the lost slice is deleted: {effects:?}"
    );
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-2"]);
    let s = status(&w);
    assert_eq!((s.steps[0].node.as_str(), s.steps[0].attempts), ("n2", 2));
    // With no retries: the restart did not spend a retry.
    finish(&mut w, "p.a-2", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.b-1", "p.c-1"]);
}

#[test]
fn a_success_stands_when_its_slice_is_removed() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    w.slices.retain(|s| s.name != "p.a-1");
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING a=SUCCESS b=RUNNING c=RUNNING d=PENDING"
    );
    assert_eq!(active(&w), ["p.b-1", "p.c-1"]);
}

#[test]
fn streaming_places_every_step_on_one_node_and_wires_pipes() {
    let mut spec = Pipeline {
        mode: Mode::Streaming as i32,
        steps: vec![
            step("src", &[]),
            step("map", &["src"]),
            step("sink", &["map"]),
        ],
        ..Default::default()
    };
    // n1 sorts first but cannot hold all three (3 x 1.5 CPUs > 4).
    for s in &mut spec.steps {
        s.resources = Some(Resources {
            cpu_millis: 1500,
            ..Default::default()
        });
    }
    let mut small = node("n1", true);
    small.allocatable.cpu_millis = 4000;
    let mut big = node("n2", true);
    big.allocatable.cpu_millis = 8000;
    let mut w = world(spec, vec![small, big]);
    settle(&mut w);
    assert_eq!(active(&w), ["p.map-1", "p.sink-1", "p.src-1"]);
    assert!(w.slices.iter().all(|s| s.node == "n2"), "{:?}", w.slices);
    let created: HashMap<String, (String, String)> = reconcile_creates(&world(
        w.pipeline.as_ref().unwrap().spec_as().unwrap(),
        w.nodes.clone(),
    ));
    assert_eq!(created["p.src-1"], (String::new(), "p_src-1".into()));
    assert_eq!(created["p.map-1"], ("p_src-1".into(), "p_map-1".into()));
    assert_eq!(created["p.sink-1"], ("p_map-1".into(), String::new()));
}

fn chain() -> Pipeline {
    Pipeline {
        mode: Mode::Streaming as i32,
        steps: vec![
            step("gen", &[]),
            step("filter", &["gen"]),
            step("count", &["filter"]),
        ],
        ..Default::default()
    }
}

/// The stdin and stdout pipes of the slices `effects` create, by slice name.
fn pipes_of(effects: &[Effect]) -> HashMap<String, (String, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateSlice(o) => {
                let s: rubeapi::runink::Slice = o.spec_as().unwrap();
                Some((o.name().to_owned(), (s.stdin_pipe, s.stdout_pipe)))
            }
            _ => None,
        })
        .collect()
}

/// `name=attempts` for every step.
fn attempts(world: &Observed) -> String {
    let status = status(world);
    let steps: Vec<String> = status
        .steps
        .iter()
        .map(|s| format!("{}={}", s.name, s.attempts))
        .collect();
    steps.join(" ")
}

#[test]
fn a_streaming_producer_that_dies_mid_stream_restarts_the_whole_pipeline() {
    let mut spec = chain();
    spec.steps[0].retries = 1;
    let mut w = world(spec, vec![node("n1", true), node("n2", true)]);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-1", "p.filter-1", "p.gen-1"]);
    // The producer dies; downstream sees end-of-file and "succeeds" on part of the data.
    finish(&mut w, "p.count-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING gen=RUNNING filter=RUNNING count=SUCCESS",
        "a step's success waits for the rest of its attempt"
    );
    finish(&mut w, "p.gen-1", SlicePhase::Failed, 3);
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.filter-1".into())),
        "what still runs of the broken attempt is stopped: {effects:?}"
    );
    let pipes = pipes_of(&effects);
    assert_eq!(
        pipes,
        HashMap::from([
            ("p.gen-2".to_owned(), (String::new(), "p_gen-2".to_owned())),
            (
                "p.filter-2".to_owned(),
                ("p_gen-2".to_owned(), "p_filter-2".to_owned())
            ),
            (
                "p.count-2".to_owned(),
                ("p_filter-2".to_owned(), String::new())
            ),
        ]),
        "every step starts again, wired the same way on the attempt's own pipes"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-2", "p.filter-2", "p.gen-2"]);
    assert_eq!(
        summary(&w),
        "RUNNING gen=RUNNING filter=RUNNING count=RUNNING",
        "count's success of attempt 1 does not count"
    );
    assert_eq!(attempts(&w), "gen=2 filter=2 count=2");
    let node = &w.slices.iter().find(|s| s.name == "p.gen-2").unwrap().node;
    assert!(
        w.slices
            .iter()
            .filter(|s| s.attempt == 2)
            .all(|s| &s.node == node),
        "attempt 2 is on one node: {:?}",
        w.slices
    );
    for name in ["p.gen-2", "p.filter-2", "p.count-2"] {
        finish(&mut w, name, SlicePhase::Succeeded, 0);
    }
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "SUCCEEDED gen=SUCCESS filter=SUCCESS count=SUCCESS"
    );
    assert_eq!(status(&w).steps[2].slice, "p.count-2");
}

#[test]
fn a_streaming_consumer_that_dies_is_charged_not_the_producers_it_broke() {
    // Only the consumer may be retried: its producers die of SIGPIPE when it stops reading,
    // and that must not spend a budget they do not have.
    let mut spec = chain();
    spec.steps[2].retries = 1;
    let mut w = world(spec, vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.count-1", SlicePhase::Failed, 1);
    finish(&mut w, "p.filter-1", SlicePhase::Failed, 141);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-2", "p.filter-2", "p.gen-2"]);
    assert_eq!(attempts(&w), "gen=2 filter=2 count=2");
    // The second time it dies, the budget is spent: everything of the attempt stops.
    finish(&mut w, "p.count-2", SlicePhase::Failed, 1);
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.gen-2".into()))
            && effects.contains(&Effect::DeleteSlice("p.filter-2".into())),
        "{effects:?}"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert_eq!(
        summary(&w),
        "FAILED gen=PENDING filter=PENDING count=FAILED"
    );
    let s = status(&w);
    assert_eq!(s.steps[2].message, "exit code 1");
    assert_eq!(s.steps[0].message, "blocked: 'count' failed");
    // A user's retry of the charged step buys one more attempt of the whole pipeline.
    edit(&mut w, |p| p.steps[2].retry_requests = 1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-3", "p.filter-3", "p.gen-3"]);
}

#[test]
fn a_streaming_pipeline_without_retries_fails_and_stops_all_of_its_attempt() {
    let mut w = world(chain(), vec![node("n1", true)]);
    settle(&mut w);
    // The middle step dies; its producer is killed by the broken pipe, its consumer is
    // still draining.
    finish(&mut w, "p.filter-1", SlicePhase::Failed, 2);
    finish(&mut w, "p.gen-1", SlicePhase::Failed, 141);
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.count-1".into())),
        "{effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::CreateSlice(_))),
        "{effects:?}"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert_eq!(summary(&w), "FAILED gen=FAILED filter=FAILED count=PENDING");
    let s = status(&w);
    assert_eq!(s.steps[1].message, "exit code 2");
    assert_eq!(
        s.steps[0].message,
        "exit code 141; 'filter' downstream failed"
    );
    assert_eq!(s.steps[2].message, "blocked: 'filter' failed");
    // The failed slices stay, as history; the fixpoint holds.
    assert_eq!(w.slices.len(), 2);
    assert_eq!(reconcile(&w), vec![]);
}

#[test]
fn a_streaming_pipeline_on_a_lost_node_is_placed_again_whole_as_a_new_attempt() {
    let mut w = world(chain(), vec![node("n1", true), node("n2", true)]);
    settle(&mut w);
    assert!(w.slices.iter().all(|s| s.node == "n1"));
    // count had finished before the node went: its output is lost with the rest.
    finish(&mut w, "p.count-1", SlicePhase::Succeeded, 0);
    w.nodes[0].ready = false;
    let effects = reconcile(&w);
    for lost in ["p.gen-1", "p.filter-1"] {
        assert!(
            effects.contains(&Effect::DeleteSlice(lost.into())),
            "{lost}: {effects:?}"
        );
    }
    w = simulate(&w, &effects);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-2", "p.filter-2", "p.gen-2"]);
    assert!(
        w.slices
            .iter()
            .filter(|s| s.attempt == 2)
            .all(|s| s.node == "n2"),
        "{:?}",
        w.slices
    );
    // No retries: the lost attempt counts as an attempt, not as a failure.
    assert_eq!(attempts(&w), "gen=2 filter=2 count=2");
    for name in ["p.gen-2", "p.filter-2", "p.count-2"] {
        finish(&mut w, name, SlicePhase::Succeeded, 0);
    }
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "SUCCEEDED gen=SUCCESS filter=SUCCESS count=SUCCESS"
    );
}

#[test]
fn a_streaming_slice_that_disappears_breaks_its_attempt() {
    let mut w = world(chain(), vec![node("n1", true)]);
    settle(&mut w);
    w.slices.retain(|s| s.name != "p.filter-1");
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-2", "p.filter-2", "p.gen-2"]);
}

#[test]
fn a_paused_streaming_pipeline_stops_a_broken_attempt_and_starts_none() {
    let mut spec = chain();
    spec.steps[0].retries = 1;
    let mut w = world(spec, vec![node("n1", true)]);
    settle(&mut w);
    edit(&mut w, |p| p.paused = true);
    settle(&mut w);
    assert_eq!(
        active(&w),
        ["p.count-1", "p.filter-1", "p.gen-1"],
        "pausing keeps a healthy attempt running"
    );
    finish(&mut w, "p.gen-1", SlicePhase::Failed, 3);
    settle(&mut w);
    assert!(active(&w).is_empty(), "{:?}", active(&w));
    assert_eq!(
        summary(&w),
        "PAUSED gen=ACTION_PENDING filter=ACTION_PENDING count=ACTION_PENDING"
    );
    edit(&mut w, |p| p.paused = false);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-2", "p.filter-2", "p.gen-2"]);
}

#[test]
fn a_success_of_a_streaming_step_stands_when_its_slice_is_removed() {
    let mut w = world(chain(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.gen-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    w.slices.retain(|s| s.name != "p.gen-1");
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-1", "p.filter-1"]);
    assert_eq!(
        summary(&w),
        "RUNNING gen=SUCCESS filter=RUNNING count=RUNNING"
    );
}

#[test]
fn skip_of_a_streaming_step_is_ignored() {
    // Admission refuses it; a spec stored before the rule must not leave neighbours blocked.
    let mut w = world(chain(), vec![node("n1", true)]);
    settle(&mut w);
    edit(&mut w, |p| p.steps[1].skip = true);
    settle(&mut w);
    assert_eq!(active(&w), ["p.count-1", "p.filter-1", "p.gen-1"]);
    assert_eq!(
        summary(&w),
        "RUNNING gen=RUNNING filter=RUNNING count=RUNNING"
    );
}

// Parallel BATCH steps: shards, like an indexed job.

/// `split` with `shards` shards between `fetch` and `merge`; `fetch` already succeeded.
fn sharded(shards: u32, retries: u32) -> Observed {
    let mut split = step("split", &["fetch"]);
    split.parallelism = shards;
    split.retries = retries;
    let spec = Pipeline {
        mode: Mode::Batch as i32,
        steps: vec![step("fetch", &[]), split, step("merge", &["split"])],
        ..Default::default()
    };
    let mut w = world(spec, vec![node("n1", true), node("n2", true)]);
    settle(&mut w);
    finish(&mut w, "p.fetch-1", SlicePhase::Succeeded, 0);
    w
}

fn shards_of(world: &Observed, step: usize) -> (u32, u32, u32) {
    let s = &status(world).steps[step];
    (s.shards_succeeded, s.shards, s.attempts)
}

#[test]
fn a_parallel_step_runs_one_slice_per_shard_spread_over_the_nodes() {
    let mut w = sharded(3, 0);
    edit(&mut w, |p| {
        p.steps[1].env = HashMap::from([
            ("RUBE_SHARDS".to_owned(), "99".to_owned()),
            ("MINE".to_owned(), "kept".to_owned()),
        ]);
    });
    let effects = reconcile(&w);
    let envs: BTreeMap<String, BTreeMap<String, String>> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateSlice(o) => {
                let s: rubeapi::runink::Slice = o.spec_as().unwrap();
                Some((o.name().to_owned(), s.env.into_iter().collect()))
            }
            _ => None,
        })
        .collect();
    let env = |index: &str| {
        BTreeMap::from([
            ("MINE".to_owned(), "kept".to_owned()),
            ("RUBE_SHARDS".to_owned(), "3".to_owned()),
            ("RUBE_SHARD_INDEX".to_owned(), index.to_owned()),
        ])
    };
    assert_eq!(
        envs,
        BTreeMap::from([
            ("p.split-1.0".to_owned(), env("0")),
            ("p.split-1.1".to_owned(), env("1")),
            ("p.split-1.2".to_owned(), env("2")),
        ]),
        "each shard is told its index and the count; ours win over the step's env"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    let nodes: Vec<&str> = w
        .slices
        .iter()
        .filter(|s| s.step == "split")
        .map(|s| s.node.as_str())
        .collect();
    assert_eq!(
        nodes,
        ["n1", "n2", "n1"],
        "shards are placed one by one, spread"
    );
    assert_eq!(
        summary(&w),
        "RUNNING fetch=SUCCESS split=RUNNING merge=PENDING"
    );
    assert_eq!(shards_of(&w, 1), (0, 3, 3));
    finish(&mut w, "p.split-1.0", SlicePhase::Succeeded, 0);
    finish(&mut w, "p.split-1.2", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(shards_of(&w, 1), (2, 3, 3));
    assert_eq!(active(&w), ["p.split-1.1"], "merge waits for every shard");
    assert_eq!(status(&w).steps[2].message, "waiting for 'split'");
    finish(&mut w, "p.split-1.1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(shards_of(&w, 1), (3, 3, 3));
    assert_eq!(active(&w), ["p.merge-1"]);
    assert_eq!(
        (
            status(&w).steps[2].shards,
            status(&w).steps[2].shards_succeeded
        ),
        (0, 0),
        "a step that is not sharded says nothing of shards"
    );
}

#[test]
fn a_failed_shard_is_retried_alone_until_the_step_budget_is_spent() {
    let mut w = sharded(3, 1);
    settle(&mut w);
    finish(&mut w, "p.split-1.0", SlicePhase::Failed, 3);
    settle(&mut w);
    assert_eq!(
        active(&w),
        ["p.split-1.1", "p.split-1.2", "p.split-4.0"],
        "only the failed shard gets a new slice, named after the count of slices before it"
    );
    assert_eq!(shards_of(&w, 1), (0, 3, 4));
    assert_eq!(status(&w).steps[1].slice, "p.split-4.0", "the latest slice");
    // A second failure, in another shard, spends the budget (one retry for the step): the
    // shards still running are stopped.
    finish(&mut w, "p.split-1.2", SlicePhase::Succeeded, 0);
    finish(&mut w, "p.split-1.1", SlicePhase::Failed, 4);
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.split-4.0".into())),
        "{effects:?}"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert_eq!(
        summary(&w),
        "FAILED fetch=SUCCESS split=FAILED merge=PENDING"
    );
    let split = &status(&w).steps[1];
    assert_eq!(split.message, "shard 1: exit code 4");
    assert_eq!(
        (split.slice.as_str(), split.exit_code),
        ("p.split-1.1", Some(4))
    );
    assert_eq!(shards_of(&w, 1), (1, 3, 4));
    // A user's retry buys one more failure: the shards that have not succeeded start again.
    edit(&mut w, |p| p.steps[1].retry_requests = 1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-5.0", "p.split-5.1"]);
    finish(&mut w, "p.split-5.0", SlicePhase::Succeeded, 0);
    finish(&mut w, "p.split-5.1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING fetch=SUCCESS split=SUCCESS merge=RUNNING"
    );
    assert_eq!(shards_of(&w, 1), (3, 3, 6));
}

#[test]
fn a_shard_lost_with_its_node_is_placed_again_as_an_attempt_not_a_failure() {
    let mut w = sharded(2, 0);
    settle(&mut w);
    let on_n1: Vec<String> = w
        .slices
        .iter()
        .filter(|s| s.step == "split" && s.node == "n1")
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(on_n1, ["p.split-1.0"]);
    w.nodes[0].ready = false;
    let effects = reconcile(&w);
    assert!(
        effects.contains(&Effect::DeleteSlice("p.split-1.0".into())),
        "{effects:?}"
    );
    w = simulate(&w, &effects);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.1", "p.split-3.0"]);
    assert!(w.slices.iter().all(|s| s.step != "split" || s.node == "n2"));
    assert_eq!(shards_of(&w, 1), (0, 2, 3));
    // No retries, and yet it may still succeed: the loss was no failure.
    finish(&mut w, "p.split-1.1", SlicePhase::Succeeded, 0);
    finish(&mut w, "p.split-3.0", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING fetch=SUCCESS split=SUCCESS merge=RUNNING"
    );
}

#[test]
fn shard_names_are_never_used_twice() {
    // Both shards are lost and cannot be placed at once: the record still knows their names.
    let mut w = sharded(2, 0);
    w.nodes.truncate(1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.0", "p.split-1.1"]);
    w.nodes[0].ready = false;
    settle(&mut w);
    assert!(active(&w).is_empty());
    assert!(w.slices.iter().all(|s| s.step != "split"));
    assert_eq!(shards_of(&w, 1), (0, 2, 2));
    w.nodes[0].ready = true;
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-3.0", "p.split-3.1"]);
    assert_eq!(shards_of(&w, 1), (0, 2, 4));
}

#[test]
fn skipping_a_parallel_step_stops_every_shard() {
    let mut w = sharded(3, 0);
    settle(&mut w);
    finish(&mut w, "p.split-1.1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    edit(&mut w, |p| p.steps[1].skip = true);
    let effects = reconcile(&w);
    for name in ["p.split-1.0", "p.split-1.2"] {
        assert!(
            effects.contains(&Effect::DeleteSlice(name.into())),
            "{name}: {effects:?}"
        );
    }
    w = simulate(&w, &effects);
    settle(&mut w);
    assert_eq!(
        summary(&w),
        "RUNNING fetch=SUCCESS split=SKIPPED merge=RUNNING"
    );
    assert_eq!(active(&w), ["p.merge-1"]);
}

#[test]
fn a_paused_parallel_step_keeps_its_shards_running_and_starts_none() {
    let mut w = sharded(2, 1);
    settle(&mut w);
    edit(&mut w, |p| p.paused = true);
    finish(&mut w, "p.split-1.0", SlicePhase::Failed, 1);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.1"]);
    assert_eq!(
        summary(&w),
        "PAUSED fetch=SUCCESS split=RUNNING merge=PENDING"
    );
    assert_eq!(
        status(&w).steps[1].message,
        "paused: resume the pipeline to start shards 0"
    );
    edit(&mut w, |p| p.paused = false);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.1", "p.split-3.0"]);
}

#[test]
fn a_parallel_step_waits_for_room_shard_by_shard() {
    let mut w = sharded(3, 0);
    w.quota = Some(Quota {
        max_slices: 2,
        ..Default::default()
    });
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.0", "p.split-1.1"]);
    assert_eq!(
        status(&w).steps[1].message,
        "waiting for quota: herd 'herd' has no room for more slices"
    );
    assert_eq!(
        summary(&w),
        "RUNNING fetch=SUCCESS split=RUNNING merge=PENDING"
    );
    finish(&mut w, "p.split-1.0", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(active(&w), ["p.split-1.1", "p.split-3.2"]);
}

#[test]
fn slice_names_parse_back() {
    use crate::plan::{parse_slice_name, shard_name, slice_name};
    assert_eq!(slice_name("p", "a-1", 2), "p.a-1-2");
    assert_eq!(shard_name("p", "a-1", 2, 7), "p.a-1-2.7");
    assert_eq!(parse_slice_name("p.a-1-2", "p", "a-1"), Some((2, None)));
    assert_eq!(
        parse_slice_name("p.a-1-2.7", "p", "a-1"),
        Some((2, Some(7)))
    );
    assert_eq!(parse_slice_name("p.a-1-2", "p", "a"), None);
    assert_eq!(parse_slice_name("p.a-+2", "p", "a"), None);
    assert_eq!(parse_slice_name("p.a-2.", "p", "a"), None);
    // Pipeline names may hold dots.
    assert_eq!(
        parse_slice_name("my.p.a-3.1", "my.p", "a"),
        Some((3, Some(1)))
    );
}

/// The stdin and stdout pipes of every slice the first reconcile creates.
fn reconcile_creates(w: &Observed) -> HashMap<String, (String, String)> {
    reconcile(w)
        .into_iter()
        .filter_map(|e| match e {
            Effect::CreateSlice(o) => {
                let s: rubeapi::runink::Slice = o.spec_as().unwrap();
                Some((o.name().to_owned(), (s.stdin_pipe, s.stdout_pipe)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn created_slices_are_labelled_and_owned() {
    let w = world(diamond(), vec![node("n1", true)]);
    let created: Vec<rubeapi::rube::Object> = reconcile(&w)
        .into_iter()
        .filter_map(|e| match e {
            Effect::CreateSlice(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1);
    let m = created[0].metadata.as_ref().unwrap();
    assert_eq!((m.namespace.as_str(), m.name.as_str()), ("herd", "p.a-1"));
    let labels: BTreeMap<&str, &str> = m
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        BTreeMap::from([("node", "n1"), ("pipeline", "p"), ("step", "a")])
    );
    assert_eq!(m.owner_references.len(), 1);
    let owner = &m.owner_references[0];
    assert_eq!(
        (
            owner.r#type.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("runink.Pipeline", "p", UID, true)
    );
}

#[test]
fn deleting_the_pipeline_removes_its_slices_then_the_finalizer() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    finish(&mut w, "p.a-1", SlicePhase::Succeeded, 0);
    settle(&mut w);
    assert_eq!(w.slices.len(), 3);
    w.pipeline
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .deletion_timestamp = Some(Default::default());
    let first = reconcile(&w);
    assert_eq!(
        first,
        vec![
            Effect::DeleteSlice("p.a-1".into()),
            Effect::DeleteSlice("p.b-1".into()),
            Effect::DeleteSlice("p.c-1".into()),
        ],
        "slices go first, the finalizer stays"
    );
    w = simulate(&w, &first);
    let second = reconcile(&w);
    assert!(
        matches!(&second[..], [Effect::PutPipeline(p)] if p.metadata.as_ref().unwrap().finalizers.is_empty()),
        "{second:?}"
    );
    w = simulate(&w, &second);
    assert!(w.pipeline.is_none());
    assert_eq!(reconcile(&w), vec![]);
}

#[test]
fn slices_of_an_earlier_pipeline_of_the_same_name_are_removed() {
    let mut w = world(diamond(), vec![node("n1", true)]);
    settle(&mut w);
    let mut orphan = w.slices[0].clone();
    orphan.name = "p.x-1".into();
    orphan.owner_uid = "uid-0".into();
    w.slices.push(orphan);
    assert_eq!(reconcile(&w), vec![Effect::DeleteSlice("p.x-1".into())]);
}

// The scheduler on its own.

fn demand(cpu: u64, selector: &HashMap<String, String>) -> Demand<'_> {
    Demand {
        request: Amount {
            cpu_millis: cpu,
            slices: 1,
            ..Default::default()
        },
        node_selector: selector,
    }
}

#[test]
fn the_scheduler_spreads_fits_and_breaks_ties_by_name() {
    let none = HashMap::new();
    let mut cluster = Cluster::new(vec![node("n2", true), node("n1", true)], "herd", None);
    let placed: Vec<String> = (0..4)
        .map(|_| cluster.place(&demand(1000, &none)).unwrap())
        .collect();
    assert_eq!(placed, ["n1", "n2", "n1", "n2"]);
    // Each node has 4 CPUs, 2 used: a 3-CPU slice fits nowhere.
    assert_eq!(
        cluster.place(&demand(3000, &none)).unwrap_err().to_string(),
        "waiting for a node: 2 nodes, 2 without enough cpu_millis"
    );
    // Load counts: a node already busy with someone else's slice gets the next one last.
    let mut cluster = Cluster::new(vec![node("n1", true), node("n2", true)], "herd", None);
    cluster.occupy(
        "n1",
        &Amount {
            cpu_millis: 2000,
            slices: 1,
            ..Default::default()
        },
        false,
    );
    assert_eq!(cluster.place(&demand(500, &none)).unwrap(), "n2");
}

#[test]
fn the_scheduler_honours_readiness_selectors_and_schedulability() {
    let mut off = node("n3", true);
    off.schedulable = false;
    let mut cluster = Cluster::new(vec![node("n1", false), node("n2", true), off], "herd", None);
    let zone1 = HashMap::from([("zone".to_owned(), "n1".to_owned())]);
    assert_eq!(
        cluster.place(&demand(0, &zone1)).unwrap_err().to_string(),
        "waiting for a node: 3 nodes, 1 not matching the node selector, 1 not ready, 1 unschedulable"
    );
    let zone2 = HashMap::from([("zone".to_owned(), "n2".to_owned())]);
    assert_eq!(cluster.place(&demand(0, &zone2)).unwrap(), "n2");
    let empty = Cluster::new(vec![], "herd", None).place(&demand(0, &HashMap::new()));
    assert_eq!(
        empty.unwrap_err().to_string(),
        "waiting for a node: there are none"
    );
}

#[test]
fn the_herd_quota_bounds_what_runs_at_once() {
    let quota = Quota {
        max_slices: 2,
        cpu_millis: 1500,
        ..Default::default()
    };
    let none = HashMap::new();
    let mut cluster = Cluster::new(vec![node("n1", true)], "herd", Some(&quota));
    cluster.place(&demand(1000, &none)).unwrap();
    assert_eq!(
        cluster.place(&demand(1000, &none)),
        Err(Unplaceable::Quota {
            herd: "herd".into(),
            field: "cpu_millis"
        })
    );
    cluster.place(&demand(500, &none)).unwrap();
    assert_eq!(
        cluster.place(&demand(0, &none)).unwrap_err().to_string(),
        "waiting for quota: herd 'herd' has no room for more slices"
    );
}

#[test]
fn steps_wait_for_quota_in_the_status_and_start_when_room_frees() {
    let mut spec = Pipeline {
        mode: Mode::Batch as i32,
        steps: vec![step("a", &[]), step("b", &[])],
        ..Default::default()
    };
    spec.steps[1].resources = Some(Resources::default());
    let mut w = world(spec, vec![node("n1", true)]);
    w.quota = Some(Quota {
        max_slices: 2,
        ..Default::default()
    });
    w.others.push(Occupant {
        node: "n1".into(),
        request: Amount::of_slice(None),
        in_herd: true,
    });
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-1"]);
    assert_eq!(
        status(&w).steps[1].message,
        "waiting for quota: herd 'herd' has no room for more slices"
    );
    w.others.clear();
    settle(&mut w);
    assert_eq!(active(&w), ["p.a-1", "p.b-1"]);
}

// The fixpoint property over arbitrary worlds.

fn arb_world() -> impl Strategy<Value = Observed> {
    let steps = 1usize..5;
    steps
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec((any::<u8>(), any::<bool>(), 0u32..3, 0u32..3, 0u32..4), n),
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(
                    (
                        0..n,
                        1u32..5,
                        0u8..4,
                        0usize..3,
                        any::<bool>(),
                        any::<bool>(),
                        prop::option::of(0u32..4),
                    ),
                    0..8,
                ),
                prop::collection::vec(any::<bool>(), 3),
                (any::<bool>(), any::<bool>(), any::<bool>()),
                prop::collection::vec((0..n, 0u8..6, 0u32..4), 0..4),
            )
        })
        .prop_map(
            |(
                n,
                steps,
                streaming,
                paused,
                slices,
                ready,
                (deleting, finalized, tight),
                recorded,
            )| {
                let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
                let spec = Pipeline {
                    mode: if streaming {
                        Mode::Streaming
                    } else {
                        Mode::Batch
                    } as i32,
                    paused,
                    steps: steps
                        .iter()
                        .enumerate()
                        .map(
                            |(i, (deps, skip, retries, retry_requests, parallelism))| Step {
                                name: names[i].clone(),
                                command: "/bin/true".into(),
                                depends_on: if streaming {
                                    if i > 0 {
                                        vec![names[i - 1].clone()]
                                    } else {
                                        vec![]
                                    }
                                } else {
                                    (0..i)
                                        .filter(|j| deps & (1 << j) != 0)
                                        .map(|j| names[j].clone())
                                        .collect()
                                },
                                skip: *skip && !streaming,
                                parallelism: if streaming { 0 } else { *parallelism },
                                retries: *retries,
                                retry_requests: *retry_requests,
                                resources: Some(Resources {
                                    cpu_millis: 1000,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        )
                        .collect(),
                    ..Default::default()
                };
                let nodes: Vec<NodeView> = ready
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut v = node(&format!("n{i}"), *r);
                        if tight {
                            v.allocatable.cpu_millis = 1000 * (i as u64 + 1);
                        }
                        v
                    })
                    .collect();
                let mut object = pipeline_object(&spec);
                let m = object.metadata.as_mut().unwrap();
                if finalized {
                    m.finalizers.push(FINALIZER.into());
                }
                if deleting {
                    m.deletion_timestamp = Some(Default::default());
                }
                if !recorded.is_empty() {
                    let steps = recorded
                        .iter()
                        .map(|(i, state, attempts)| rubeapi::runink::StepStatus {
                            name: names[*i].clone(),
                            state: i32::from(*state) + 1,
                            attempts: *attempts,
                            slice: format!("p.{}-{attempts}", names[*i]),
                            ..Default::default()
                        })
                        .collect();
                    object.status = Some(object::pack(&PipelineStatus {
                        steps,
                        ..Default::default()
                    }));
                }
                // The controller never splits a streaming pipeline: start from worlds it made.
                let streaming_node = slices.first().map_or(0, |s| s.3);
                let mut seen = std::collections::HashSet::new();
                let slices = slices
                    .into_iter()
                    .filter(|(step, attempt, .., shard)| seen.insert((*step, *attempt, *shard)))
                    .map(
                        |(step, attempt, phase, node, slice_deleting, orphan, shard)| SliceView {
                            name: match shard {
                                Some(k) => format!("p.{}-{attempt}.{k}", names[step]),
                                None => format!("p.{}-{attempt}", names[step]),
                            },
                            step: names[step].clone(),
                            attempt,
                            shard,
                            node: format!("n{}", if streaming { streaming_node } else { node }),
                            request: Amount {
                                cpu_millis: 1000,
                                slices: 1,
                                ..Default::default()
                            },
                            phase: [
                                SlicePhase::Pending,
                                SlicePhase::Running,
                                SlicePhase::Succeeded,
                                SlicePhase::Failed,
                            ][phase as usize],
                            exit_code: None,
                            message: String::new(),
                            deleting: slice_deleting,
                            owner_uid: if orphan { "uid-0".into() } else { UID.into() },
                        },
                    )
                    .collect();
                Observed {
                    pipeline: Some(object),
                    slices,
                    others: vec![],
                    nodes,
                    quota: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// One round of effects reaches a fixpoint, except for a deleted pipeline, which needs a
    /// second (the slices must be seen gone before the finalizer comes off).
    #[test]
    fn reconcile_reaches_a_fixpoint(start in arb_world()) {
        let deleting = start.pipeline.as_ref().unwrap().metadata.as_ref().unwrap().deletion_timestamp.is_some();
        let mut w = start.clone();
        let rounds = if deleting { 2 } else { 1 };
        for _ in 0..rounds {
            let effects = reconcile(&w);
            w = simulate(&w, &effects);
        }
        prop_assert_eq!(reconcile(&w), vec![], "from {:?}", start);

        // And the fixpoint is a sound world, not just some world.
        if let Some(p) = &w.pipeline {
            let spec: Pipeline = p.spec_as().unwrap();
            let live: Vec<&SliceView> = w.slices.iter()
                .filter(|s| !s.deleting && s.phase.is_active() && s.owner_uid == UID)
                .collect();
            for s in &live {
                prop_assert!(
                    w.nodes.iter().any(|n| n.name == s.node && n.ready),
                    "{} runs on a node that is not ready", s.name
                );
                prop_assert_eq!(
                    live.iter().filter(|o| o.step == s.step && o.shard == s.shard).count(), 1,
                    "step {} has one active slice per shard", &s.step);
                let step = spec.steps.iter().find(|t| t.name == s.step).unwrap();
                let sharded = spec.mode == Mode::Batch as i32 && step.parallelism > 1;
                prop_assert!(
                    match s.shard {
                        Some(k) => sharded && k < step.parallelism,
                        None => !sharded,
                    },
                    "{} is a slice of step {} as it is now", s.name, &s.step);
            }
            if spec.mode == Mode::Streaming as i32 && !live.is_empty() {
                prop_assert!(live.iter().all(|s| s.node == live[0].node),
                    "a streaming pipeline runs on one node: {:?}", live);
                prop_assert!(live.iter().all(|s| s.attempt == live[0].attempt),
                    "a streaming pipeline runs one attempt: {:?}", live);
            }
            if deleting {
                prop_assert!(live.is_empty());
            }
        } else {
            prop_assert!(w.slices.iter().all(|s| s.owner_uid != UID || s.deleting));
        }
    }
}
