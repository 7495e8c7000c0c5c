//! Pipelines end to end (issue #5): a real apiserver and several real rubelets on this machine,
//! each with its own name, state dir and cgroup subtree; the pipeline controller runs on
//! whichever rubelet wins the `controller-pipelines` lease. Steps are `/bin/sh -c` scripts
//! that leave their traces in a temp dir all rubelets see.
//!
//! - a diamond DAG runs in order across two nodes, with the right output;
//! - a failing step fails the pipeline, retries heal a flaky one, `ructl pipeline` skips,
//!   retries, pauses and resumes;
//! - a parallel step runs its shards across both nodes, each knowing its index, and retries a
//!   failed one alone;
//! - a STREAMING pipeline counts exactly, also when its producer dies mid-stream on the first
//!   attempt (the whole pipeline starts again), and a slow consumer holds back a fast producer
//!   with bounded memory;
//! - the controller survives the death of its rubelet, and batch steps survive the death of
//!   theirs;
//! - deleting a running pipeline leaves no slice, process or cgroup behind.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use harness::{Apiserver, HERD, Rubelet, SLICE, eventually, root_or_skip, ructl};
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Lease, NodeStatus, Selector};
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::slice_status::Phase as SlicePhase;
use rubeapi::runink::step_status::State;
use rubeapi::runink::{Pipeline, PipelineStatus, SliceStatus, Step, StepStatus};

const PIPELINE: &str = "runink.Pipeline";
const WAIT: Duration = Duration::from_secs(60);
/// Rubelets that run workloads; steps select them with `role=worker`.
const WORKER: &[&str] = &["--controllers", "slices", "--label", "role=worker"];
/// Rubelets that only compete for the pipeline controller's lease.
const CONTROLLER: &[&str] = &["--controllers", "pipelines", "--election-lease", "3s"];
/// Rubelets that do both.
const BOTH: &[&str] = &[
    "--controllers",
    "slices,pipelines",
    "--election-lease",
    "3s",
    "--label",
    "role=worker",
];

/// An apiserver (nodes go NOT_READY 3 s after their last renewal) and rubelets.
struct Cluster {
    server: Apiserver,
    client: Client,
    rubelets: Vec<Rubelet>,
}

impl Cluster {
    /// `nodes`: (name, rubelet flags). `test` keeps the cgroup subtrees apart from those of
    /// tests running at the same time.
    async fn start(test: &str, nodes: &[(&str, &[&str])]) -> Cluster {
        let server = Apiserver::start(&["--node-grace", "3s"]);
        let client = server.client().await;
        let rubelets = nodes
            .iter()
            .map(|(name, args)| {
                let subtree = format!("rube-test-{test}-{name}-{}", std::process::id());
                Rubelet::start_in(&subtree, name, &server.config_path(), args)
            })
            .collect();
        let cluster = Cluster {
            server,
            client,
            rubelets,
        };
        for (name, _) in nodes {
            cluster.wait_node(name, Condition::Ready).await;
        }
        cluster
    }

    fn rubelet(&self, name: &str) -> &Rubelet {
        self.rubelets
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rubelet {name}"))
    }

    fn rubelet_mut(&mut self, name: &str) -> &mut Rubelet {
        self.rubelets
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rubelet {name}"))
    }

    /// Every rubelet's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for r in &self.rubelets {
            out.push_str(&format!("===== rubelet {} =====\n{}\n", r.name, r.log()));
        }
        out
    }

    fn ructl(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = ructl(&self.server.config_path(), args);
        assert!(ok, "ructl {args:?} failed: {stderr}");
        stdout
    }

    async fn put(&self, name: &str, spec: &Pipeline) {
        self.client
            .put(object::new(HERD, name, spec), None)
            .await
            .unwrap_or_else(|e| panic!("put pipeline {name}: {e}"));
    }

    async fn status(&self, name: &str) -> Option<PipelineStatus> {
        let object = self.client.get(PIPELINE, HERD, name).await.ok()?;
        object.status_as::<PipelineStatus>().ok().flatten()
    }

    /// Waits until pipeline `name`'s status satisfies `check`, and returns it.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PipelineStatus) -> bool,
    ) -> PipelineStatus {
        let what = format!("pipeline {name}: {what}");
        eventually(
            &what,
            WAIT,
            || format!("status: {:#?}\n{}", self.last_status(name), self.logs()),
            || async { self.status(name).await.is_some_and(|s| check(&s)) },
        )
        .await;
        self.status(name).await.expect("a status")
    }

    /// The status as it is now, for failure messages (the runtime is already in a task).
    fn last_status(&self, name: &str) -> Option<PipelineStatus> {
        let client = self.client.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?
                .block_on(async {
                    let object = client.get(PIPELINE, HERD, &name).await.ok()?;
                    object.status_as::<PipelineStatus>().ok().flatten()
                })
        })
        .join()
        .ok()
        .flatten()
    }

    async fn slice_status(&self, slice: &str) -> Option<SliceStatus> {
        harness::status(&self.client, slice).await
    }

    /// Waits for the slice to run, and returns its status.
    async fn wait_slice_running(&self, slice: &str) -> SliceStatus {
        eventually(
            &format!("slice {slice} to run"),
            WAIT,
            || self.logs(),
            || async {
                self.slice_status(slice)
                    .await
                    .is_some_and(|s| s.phase == SlicePhase::Running as i32)
            },
        )
        .await;
        self.slice_status(slice).await.unwrap()
    }

    async fn node_condition(&self, node: &str) -> Option<i32> {
        let object = self.client.get("rube.Node", "", node).await.ok()?;
        let status: NodeStatus = object.status_as().ok()??;
        Some(status.condition)
    }

    async fn wait_node(&self, node: &str, condition: Condition) {
        eventually(
            &format!("node {node} to be {}", condition.as_str_name()),
            WAIT,
            || self.logs(),
            || async { self.node_condition(node).await == Some(condition as i32) },
        )
        .await;
    }

    async fn lease_holder(&self) -> Option<String> {
        let lease = self
            .client
            .get("rube.Lease", "", "controller-pipelines")
            .await
            .ok()?;
        Some(lease.spec_as::<Lease>().ok()?.holder)
    }

    /// The names of the slices of pipeline `name`.
    async fn slices_of(&self, name: &str) -> Vec<String> {
        let listed = self
            .client
            .list(Selector {
                r#type: SLICE.into(),
                namespace: HERD.into(),
                labels: format!("pipeline={name}"),
                ..Default::default()
            })
            .await
            .expect("list slices");
        listed.objects.iter().map(|o| o.name().to_owned()).collect()
    }
}

fn step(name: &str, script: &str, depends_on: &[&str]) -> Step {
    Step {
        name: name.into(),
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        node_selector: [("role".to_owned(), "worker".to_owned())].into(),
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

fn step_status<'a>(status: &'a PipelineStatus, name: &str) -> &'a StepStatus {
    status
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {status:#?}"))
}

fn state_of(status: &PipelineStatus, name: &str) -> i32 {
    status
        .steps
        .iter()
        .find(|s| s.name == name)
        .map_or(State::Unspecified as i32, |s| s.state)
}

fn succeeded(status: &PipelineStatus) -> bool {
    status.phase == Phase::Succeeded as i32
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The cgroup subtree of `rubelet` as this process sees it (it shares the rubelet's cgroup).
fn hierarchy(rubelet: &Rubelet) -> cgroups::Hierarchy {
    cgroups::Hierarchy::detect(&rubelet.subtree).expect("the rubelet's cgroup hierarchy")
}

fn cgroup(status: &SliceStatus) -> cgroups::CgroupPath {
    cgroups::CgroupPath::new(&status.cgroup).expect("a slice's cgroup path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_in_order_across_two_nodes_with_the_right_output() {
    if !root_or_skip("a_diamond_runs_in_order_across_two_nodes_with_the_right_output") {
        return;
    }
    let cluster = Cluster::start("diamond", &[("w1", BOTH), ("w2", BOTH)]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Each step writes `start X` and `end X` to one journal (appends of a line are atomic),
    // and computes something from what the steps before it wrote.
    let traced = |name: &str, work: &str| {
        format!(
            "echo \"start {name} $(date +%s%N)\" >> {d}/journal; {work}; \
             echo \"end {name} $(date +%s%N)\" >> {d}/journal"
        )
    };
    let spec = batch(vec![
        step("a", &traced("a", &format!("seq 1 100 > {d}/a.out")), &[]),
        step(
            "b",
            &traced(
                "b",
                &format!(
                    "s=0; while read n; do s=$((s+n)); done < {d}/a.out; echo $s > {d}/b.out; \
                     sleep 0.3"
                ),
            ),
            &["a"],
        ),
        step(
            "c",
            &traced("c", &format!("wc -l < {d}/a.out > {d}/c.out; sleep 0.3")),
            &["a"],
        ),
        step(
            "d",
            &traced(
                "d",
                &format!("echo \"$(cat {d}/b.out) $(cat {d}/c.out)\" > {d}/d.out"),
            ),
            &["b", "c"],
        ),
    ]);
    cluster.put("diamond", &spec).await;
    let status = cluster.wait("diamond", "SUCCEEDED", succeeded).await;

    assert_eq!(read(&dir.path().join("d.out")).trim(), "5050 100");
    let journal = read(&dir.path().join("journal"));
    let at = |event: &str| {
        let found: Vec<usize> = journal
            .lines()
            .enumerate()
            .filter(|(_, l)| l.split(' ').take(2).collect::<Vec<_>>().join(" ") == event)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "{event:?} once in the journal:\n{journal}");
        found[0]
    };
    for (before, after) in [
        ("end a", "start b"),
        ("end a", "start c"),
        ("end b", "start d"),
        ("end c", "start d"),
    ] {
        assert!(
            at(before) < at(after),
            "{before:?} must come before {after:?}:\n{journal}"
        );
    }

    let mut nodes = BTreeSet::new();
    for name in ["a", "b", "c", "d"] {
        let s = step_status(&status, name);
        assert_eq!(s.state, State::Success as i32, "{s:?}");
        assert_eq!(s.attempts, 1, "{s:?}");
        assert_eq!(s.slice, format!("diamond.{name}-1"));
        let slice = cluster.slice_status(&s.slice).await.expect("the slice");
        assert_eq!(slice.node, s.node, "the slice ran where it was placed");
        assert_eq!(slice.phase, SlicePhase::Succeeded as i32);
        nodes.insert(s.node.clone());
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["w1".to_owned(), "w2".to_owned()]),
        "the steps were spread over both nodes: {status:#?}"
    );

    let table = cluster.ructl(&["pipeline", "status", "-n", HERD, "diamond"]);
    assert!(
        table.starts_with("pipeline analytics/diamond BATCH SUCCEEDED"),
        "{table}"
    );
    for name in ["a", "b", "c", "d"] {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert_eq!(
            row.split_whitespace().nth(1),
            Some("SUCCESS"),
            "step {name}:\n{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_step_runs_its_shards_across_two_nodes_and_retries_one_alone() {
    if !root_or_skip("a_parallel_step_runs_its_shards_across_two_nodes_and_retries_one_alone") {
        return;
    }
    let cluster = Cluster::start("shards", &[("w1", BOTH), ("w2", BOTH)]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Each shard writes its index and the count to a file of its own; shard 1 fails the first
    // time. The next step checks that all three are there.
    let mut shard = step(
        "shard",
        &format!(
            "echo $RUBE_SHARD_INDEX >> {d}/runs; \
             if [ $RUBE_SHARD_INDEX = 1 ] && [ ! -e {d}/marker ]; then touch {d}/marker; exit 5; fi; \
             echo \"$RUBE_SHARD_INDEX of $RUBE_SHARDS\" > {d}/shard.$RUBE_SHARD_INDEX"
        ),
        &[],
    );
    shard.parallelism = 3;
    shard.retries = 1;
    let check = step(
        "check",
        &format!(
            "for i in 0 1 2; do [ \"$(cat {d}/shard.$i)\" = \"$i of 3\" ] || exit 1; done; \
             echo ok > {d}/check.out"
        ),
        &["shard"],
    );
    cluster.put("shards", &batch(vec![shard, check])).await;
    let status = cluster.wait("shards", "SUCCEEDED", succeeded).await;

    assert_eq!(read(&dir.path().join("check.out")), "ok\n");
    let mut runs: Vec<String> = read(&dir.path().join("runs"))
        .lines()
        .map(str::to_owned)
        .collect();
    runs.sort();
    assert_eq!(runs, ["0", "1", "1", "2"], "only shard 1 ran twice");
    let s = step_status(&status, "shard");
    assert_eq!(s.state, State::Success as i32, "{s:?}");
    assert_eq!((s.shards, s.shards_succeeded), (3, 3), "{s:?}");
    assert_eq!(s.attempts, 4, "three shards and one retry: {s:?}");
    assert_eq!(
        s.slice, "shards.shard-4.1",
        "the retry is the latest slice: {s:?}"
    );
    // The first three were placed together, spread; the retry went wherever was freest then.
    let mut nodes = BTreeSet::new();
    for (slice, phase) in [
        ("shards.shard-1.0", SlicePhase::Succeeded),
        ("shards.shard-1.1", SlicePhase::Failed),
        ("shards.shard-1.2", SlicePhase::Succeeded),
        ("shards.shard-4.1", SlicePhase::Succeeded),
    ] {
        let status = cluster.slice_status(slice).await.expect("the slice");
        assert_eq!(status.phase, phase as i32, "{slice}: {status:?}");
        if slice.contains("-1.") {
            nodes.insert(status.node);
        }
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["w1".to_owned(), "w2".to_owned()]),
        "the shards were spread over both nodes"
    );

    let table = cluster.ructl(&["pipeline", "status", "-n", HERD, "shards"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("shard "))
        .unwrap_or_else(|| panic!("no row for shard:\n{table}"));
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["shard", "SUCCESS", "3/3"],
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fail_retries_heal_and_ructl_skips_retries_and_pauses() {
    if !root_or_skip("failures_fail_retries_heal_and_ructl_skips_retries_and_pauses") {
        return;
    }
    let cluster = Cluster::start("control", &[("w1", BOTH), ("w2", BOTH)]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    // A step that fails (no retries) fails the pipeline; what depends on it never starts.
    // It fails while `fixed` is missing; `ructl pipeline retry` then gets it one more attempt.
    let spec = batch(vec![
        step(
            "bad",
            &format!("echo run >> {d}/bad.runs; [ -e {d}/fixed ] || exit 3"),
            &[],
        ),
        step("after", &format!("echo ran > {d}/after.out"), &["bad"]),
    ]);
    // Retries: 1 heals a step that fails once.
    let mut flaky = step(
        "flaky",
        &format!(
            "echo run >> {d}/flaky.runs; [ -e {d}/flaky.once ] && exit 0; touch {d}/flaky.once; exit 1"
        ),
        &[],
    );
    flaky.retries = 1;
    // A step that would run forever, skipped, and a step gated behind it.
    let stuck = batch(vec![
        step("stuck", "exec sleep 600", &[]),
        step("next", &format!("echo ran > {d}/next.out"), &["stuck"]),
    ]);
    // A step that waits for a gate, and one behind it that must not start while paused.
    let gated = batch(vec![
        step(
            "first",
            &format!("while [ ! -e {d}/gate ]; do sleep 0.05; done"),
            &[],
        ),
        step("second", &format!("echo ran > {d}/second.out"), &["first"]),
    ]);
    cluster.put("fails", &spec).await;
    cluster.put("flaky", &batch(vec![flaky])).await;
    cluster.put("stuck", &stuck).await;
    cluster.put("gated", &gated).await;

    let failed = cluster
        .wait("fails", "FAILED", |s| s.phase == Phase::Failed as i32)
        .await;
    let bad = step_status(&failed, "bad");
    assert_eq!(bad.state, State::Failed as i32, "{failed:#?}");
    assert_eq!((bad.attempts, bad.exit_code), (1, Some(3)), "{bad:?}");
    let after = step_status(&failed, "after");
    assert_eq!(after.state, State::Pending as i32, "{after:?}");
    assert!(after.message.contains("'bad' failed"), "{after:?}");
    assert!(!dir.path().join("after.out").exists());
    assert_eq!(read(&dir.path().join("bad.runs")), "run\n", "no retries");
    assert_eq!(cluster.slices_of("fails").await, ["fails.bad-1"]);

    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let said = cluster.ructl(&["pipeline", "retry", "-n", HERD, "fails", "bad"]);
    assert!(said.contains("one more attempt"), "{said}");
    let healed = cluster
        .wait("fails", "SUCCEEDED after a retry", succeeded)
        .await;
    assert_eq!(step_status(&healed, "bad").attempts, 2);
    assert_eq!(step_status(&healed, "bad").slice, "fails.bad-2");
    assert_eq!(read(&dir.path().join("after.out")), "ran\n");

    let flaky = cluster.wait("flaky", "SUCCEEDED", succeeded).await;
    let s = step_status(&flaky, "flaky");
    assert_eq!((s.state, s.attempts), (State::Success as i32, 2), "{s:?}");
    assert_eq!(read(&dir.path().join("flaky.runs")), "run\nrun\n");

    // Skip: the running step is stopped, SKIPPED, and what depends on it runs.
    cluster
        .wait("stuck", "stuck RUNNING", |s| {
            state_of(s, "stuck") == State::Running as i32
        })
        .await;
    let stuck_pid = cluster.wait_slice_running("stuck.stuck-1").await.pid;
    cluster.ructl(&["pipeline", "skip", "-n", HERD, "stuck", "stuck"]);
    let skipped = cluster
        .wait("stuck", "SUCCEEDED after a skip", succeeded)
        .await;
    assert_eq!(state_of(&skipped, "stuck"), State::Skipped as i32);
    assert_eq!(state_of(&skipped, "next"), State::Success as i32);
    assert_eq!(read(&dir.path().join("next.out")), "ran\n");
    eventually(
        "the skipped step's process to be gone",
        WAIT,
        || cluster.logs(),
        || async { !Path::new(&format!("/proc/{stuck_pid}")).exists() },
    )
    .await;

    // Pause: the running step finishes, the next one waits as ACTION_PENDING with no slice,
    // until resumed.
    cluster
        .wait("gated", "first RUNNING", |s| {
            state_of(s, "first") == State::Running as i32
        })
        .await;
    cluster.ructl(&["pipeline", "pause", "-n", HERD, "gated"]);
    cluster
        .wait("gated", "PAUSED", |s| s.phase == Phase::Paused as i32)
        .await;
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let paused = cluster
        .wait("gated", "first SUCCESS, second ACTION_PENDING", |s| {
            state_of(s, "first") == State::Success as i32
                && state_of(s, "second") == State::ActionPending as i32
        })
        .await;
    assert_eq!(paused.phase, Phase::Paused as i32, "{paused:#?}");
    assert_eq!(step_status(&paused, "second").attempts, 0);
    assert_eq!(cluster.slices_of("gated").await, ["gated.first-1"]);
    let table = cluster.ructl(&["pipeline", "status", "-n", HERD, "gated"]);
    assert!(table.contains("(paused)"), "{table}");
    assert!(!dir.path().join("second.out").exists());

    cluster.ructl(&["pipeline", "resume", "-n", HERD, "gated"]);
    cluster
        .wait("gated", "SUCCEEDED after resume", succeeded)
        .await;
    assert_eq!(read(&dir.path().join("second.out")), "ran\n");
}

fn streaming(steps: Vec<Step>) -> Pipeline {
    Pipeline {
        mode: Mode::Streaming as i32,
        steps,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_pipeline_counts_exactly_what_a_shell_pipeline_counts() {
    if !root_or_skip("a_streaming_pipeline_counts_exactly_what_a_shell_pipeline_counts") {
        return;
    }
    let cluster = Cluster::start("count", &[("w1", BOTH), ("w2", BOTH)]).await;
    let spec = streaming(vec![
        step("gen", "seq 1 200000", &[]),
        step("filter", "grep 7", &["gen"]),
        step("count", "wc -l", &["filter"]),
    ]);
    cluster.put("count", &spec).await;
    let status = cluster.wait("count", "SUCCEEDED", succeeded).await;
    let node = &step_status(&status, "gen").node;
    for name in ["gen", "filter", "count"] {
        let s = step_status(&status, name);
        assert_eq!(s.state, State::Success as i32, "{s:?}");
        assert_eq!(&s.node, node, "a STREAMING pipeline runs on one node");
    }

    let shell = std::process::Command::new("/bin/sh")
        .args(["-c", "seq 1 200000 | grep 7 | wc -l"])
        .output()
        .expect("the shell pipeline");
    let expected = String::from_utf8_lossy(&shell.stdout).trim().to_owned();
    assert!(expected.parse::<u64>().unwrap() > 0);
    let counted = cluster.ructl(&["logs", "-n", HERD, "count.count-1"]);
    assert_eq!(counted.trim(), expected, "the count step's output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_producer_that_dies_mid_stream_restarts_the_pipeline_and_counts_exactly() {
    if !root_or_skip(
        "a_streaming_producer_that_dies_mid_stream_restarts_the_pipeline_and_counts_exactly",
    ) {
        return;
    }
    let cluster = Cluster::start("restream", &[("w1", BOTH)]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The first attempt's producer writes half of the data, then fails; its consumer sees
    // end-of-file and exits 0 with half the count. The second attempt writes it all.
    let mut producer = step(
        "gen",
        &format!(
            "echo run >> {d}/gen.runs; seq 1 100000; \
             if [ ! -e {d}/marker ]; then touch {d}/marker; exit 3; fi; seq 100001 200000"
        ),
        &[],
    );
    producer.retries = 1;
    let spec = streaming(vec![
        producer,
        step("filter", "grep 7", &["gen"]),
        step("count", "wc -l", &["filter"]),
    ]);
    cluster.put("restream", &spec).await;
    let status = cluster.wait("restream", "SUCCEEDED", succeeded).await;
    for name in ["gen", "filter", "count"] {
        let s = step_status(&status, name);
        assert_eq!(s.state, State::Success as i32, "{s:?}");
        assert_eq!(s.attempts, 2, "the whole pipeline ran twice: {s:?}");
        assert_eq!(s.slice, format!("restream.{name}-2"), "{s:?}");
    }
    assert_eq!(read(&dir.path().join("gen.runs")), "run\nrun\n");

    let shell = std::process::Command::new("/bin/sh")
        .args(["-c", "seq 1 200000 | grep 7 | wc -l"])
        .output()
        .expect("the shell pipeline");
    let expected = String::from_utf8_lossy(&shell.stdout).trim().to_owned();
    let counted = cluster.ructl(&["logs", "-n", HERD, "restream.count-2"]);
    assert_eq!(counted.trim(), expected, "the second attempt's count");
    // The first attempt's consumer saw part of the data, if it finished before the controller
    // stopped it (then it is still there, as history); either way it did not count.
    let (kept, partial, _) = ructl(
        &cluster.server.config_path(),
        &["logs", "-n", HERD, "restream.count-1"],
    );
    if kept {
        assert_ne!(
            partial.trim(),
            expected,
            "attempt 1 saw only part of the data"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_back_a_fast_producer_in_bounded_memory() {
    if !root_or_skip("a_slow_consumer_holds_back_a_fast_producer_in_bounded_memory") {
        return;
    }
    const BYTES: u64 = 200_000_000;
    const LIMIT: u64 = 32 << 20;
    let cluster = Cluster::start("flood", &[("w1", BOTH)]).await;
    // The consumer takes 1 MiB, then rests 20 ms: some 40 MB/s, where the producer alone
    // writes GB/s. It says how much it read.
    let spec = streaming(vec![
        step("producer", &format!("head -c {BYTES} /dev/zero"), &[]),
        step(
            "consumer",
            "n=0; while c=$(head -c 1048576 | wc -c); [ \"$c\" -gt 0 ]; do n=$((n+c)); sleep 0.02; done; echo $n",
            &["producer"],
        ),
    ]);
    cluster.put("flood", &spec).await;
    let producer = cluster.wait_slice_running("flood.producer-1").await;
    let consumer = cluster.wait_slice_running("flood.consumer-1").await;
    let cgroups = hierarchy(cluster.rubelet("w1"));

    // Sample the producer's and the consumer's memory high-water marks while data flows.
    let (mut producer_peak, mut consumer_peak, mut samples) = (0u64, 0u64, 0usize);
    loop {
        let running = cluster
            .slice_status("flood.producer-1")
            .await
            .is_some_and(|s| s.phase == SlicePhase::Running as i32);
        if let Ok(stats) = cgroups.stats(&cgroup(&producer)) {
            producer_peak = producer_peak.max(stats.memory_peak.unwrap_or(stats.memory_current));
            samples += 1;
        }
        if let Ok(stats) = cgroups.stats(&cgroup(&consumer)) {
            consumer_peak = consumer_peak.max(stats.memory_peak.unwrap_or(stats.memory_current));
        }
        if !running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = cluster.wait("flood", "SUCCEEDED", succeeded).await;

    let read_back = cluster.ructl(&["logs", "-n", HERD, "flood.consumer-1"]);
    assert_eq!(read_back.trim(), BYTES.to_string(), "all the data passed");
    assert!(
        samples >= 5,
        "the producer ran long enough to be sampled ({samples} samples): {status:#?}"
    );
    assert!(
        producer_peak < LIMIT && consumer_peak < LIMIT,
        "memory stays bounded while {BYTES} bytes pass: producer peak {producer_peak}, \
         consumer peak {consumer_peak} (limit {LIMIT})"
    );
    // Held back: the producer could only finish as fast as the consumer read.
    let elapsed = |name: &str| {
        let name = name.to_owned();
        let cluster = &cluster;
        async move {
            let s = cluster.slice_status(&name).await.expect("slice status");
            let ms = |t: Option<prost_types::Timestamp>| {
                let t = t.expect("a time");
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
            };
            ms(s.finish_time) - ms(s.start_time)
        }
    };
    let (produced_ms, consumed_ms) = (
        elapsed("flood.producer-1").await,
        elapsed("flood.consumer-1").await,
    );
    assert!(
        consumed_ms >= 2000 && produced_ms * 2 >= consumed_ms,
        "the producer ran {produced_ms} ms, the consumer {consumed_ms} ms: the producer \
         must be held back to the consumer's pace"
    );
    eprintln!(
        "{BYTES} bytes in {consumed_ms} ms; peaks: producer {producer_peak} B, consumer \
         {consumer_peak} B ({samples} samples)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_moves_to_another_rubelet_when_its_rubelet_is_killed() {
    if !root_or_skip("the_controller_moves_to_another_rubelet_when_its_rubelet_is_killed") {
        return;
    }
    let mut cluster = Cluster::start(
        "takeover",
        &[("c1", CONTROLLER), ("c2", CONTROLLER), ("w1", WORKER)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let spec = batch(vec![
        step(
            "a",
            &format!("echo run >> {d}/a.runs; while [ ! -e {d}/gate ]; do sleep 0.05; done"),
            &[],
        ),
        step("b", &format!("echo run >> {d}/b.runs"), &["a"]),
    ]);
    cluster.put("takeover", &spec).await;
    cluster
        .wait("takeover", "a RUNNING", |s| {
            state_of(s, "a") == State::Running as i32
        })
        .await;
    let leader = cluster.lease_holder().await.expect("a leader");
    assert!(leader == "c1" || leader == "c2", "leader {leader}");
    let other = if leader == "c1" { "c2" } else { "c1" };

    cluster.rubelet_mut(&leader).kill9();
    eventually(
        &format!("{other} to take the lease from {leader}"),
        WAIT,
        || cluster.logs(),
        || async { cluster.lease_holder().await.as_deref() == Some(other) },
    )
    .await;
    // Only a running controller can start b once a is done.
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let status = cluster
        .wait("takeover", "SUCCEEDED under the new leader", succeeded)
        .await;
    assert_eq!(step_status(&status, "a").attempts, 1, "a ran once");
    assert_eq!(step_status(&status, "b").attempts, 1);
    assert_eq!(read(&dir.path().join("a.runs")), "run\n");
    assert_eq!(read(&dir.path().join("b.runs")), "run\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_step_of_a_dead_node_is_rescheduled_and_counted_as_a_restart() {
    if !root_or_skip("a_batch_step_of_a_dead_node_is_rescheduled_and_counted_as_a_restart") {
        return;
    }
    let mut cluster = Cluster::start(
        "resched",
        &[("c1", CONTROLLER), ("w1", WORKER), ("w2", WORKER)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The first attempt sleeps (it outlives its rubelet, by design); a second one finishes.
    let spec = batch(vec![
        step(
            "long",
            &format!(
                "echo run >> {d}/long.runs; [ -e {d}/marker ] && exit 0; touch {d}/marker; exec sleep 600"
            ),
            &[],
        ),
        step("after", &format!("echo ran > {d}/after.out"), &["long"]),
    ]);
    cluster.put("resched", &spec).await;
    let running = cluster
        .wait("resched", "long RUNNING", |s| {
            state_of(s, "long") == State::Running as i32
        })
        .await;
    let first = step_status(&running, "long").clone();
    assert_eq!(first.slice, "resched.long-1");
    cluster.wait_slice_running(&first.slice).await;
    let other = if first.node == "w1" { "w2" } else { "w1" };

    cluster.rubelet_mut(&first.node).kill9();
    cluster.wait_node(&first.node, Condition::NotReady).await;
    let status = cluster
        .wait("resched", "SUCCEEDED on the other node", succeeded)
        .await;
    let long = step_status(&status, "long");
    assert_eq!(long.attempts, 2, "the lost attempt counts: {long:?}");
    assert_eq!(long.slice, "resched.long-2");
    assert_eq!(long.node, other, "{long:?}");
    assert_eq!(read(&dir.path().join("long.runs")), "run\nrun\n");
    assert_eq!(read(&dir.path().join("after.out")), "ran\n");
    assert!(
        !cluster.slices_of("resched").await.contains(&first.slice),
        "the lost slice was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_pipeline_leaves_no_slice_process_or_cgroup() {
    if !root_or_skip("deleting_a_running_pipeline_leaves_no_slice_process_or_cgroup") {
        return;
    }
    let cluster = Cluster::start("delete", &[("w1", BOTH), ("w2", BOTH)]).await;
    // Two batch steps spread over both nodes, and a streaming pipeline blocked on its pipe.
    cluster
        .put(
            "doomed",
            &batch(vec![
                step("x", "sleep 600 & sleep 600; wait", &[]),
                step("y", "sleep 600 & sleep 600; wait", &[]),
                step("z", "true", &["x", "y"]),
            ]),
        )
        .await;
    cluster
        .put(
            "doomedstream",
            &streaming(vec![
                step("source", "yes", &[]),
                step("sink", "exec sleep 600", &["source"]),
            ]),
        )
        .await;
    let slices = [
        "doomed.x-1",
        "doomed.y-1",
        "doomedstream.source-1",
        "doomedstream.sink-1",
    ];
    let mut pids = Vec::new();
    let mut nodes = BTreeSet::new();
    for slice in slices {
        let status = cluster.wait_slice_running(slice).await;
        let cgroups = hierarchy(cluster.rubelet(&status.node));
        let procs = cgroups
            .procs(&cgroup(&status))
            .expect("the slice's processes");
        assert!(procs.contains(&status.pid), "{slice}: {procs:?}");
        pids.extend(procs);
        nodes.insert(status.node);
    }
    assert_eq!(nodes.len(), 2, "slices on both nodes");

    for name in ["doomed", "doomedstream"] {
        cluster.ructl(&["delete", "-t", PIPELINE, "-n", HERD, name]);
    }
    for name in ["doomed", "doomedstream"] {
        eventually(
            &format!("pipeline {name} and its slices to be gone"),
            WAIT,
            || cluster.logs(),
            || async {
                cluster.client.get(PIPELINE, HERD, name).await.is_err()
                    && cluster.slices_of(name).await.is_empty()
            },
        )
        .await;
    }
    eventually(
        "every process of the slices to be gone",
        WAIT,
        || format!("pids {pids:?}\n{}", cluster.logs()),
        || async {
            pids.iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        },
    )
    .await;
    for rubelet in &cluster.rubelets {
        let cgroups = hierarchy(rubelet);
        let herd = cgroups::CgroupPath::new(HERD).unwrap();
        eventually(
            &format!("no slice cgroup left on {}", rubelet.name),
            WAIT,
            || cluster.logs(),
            || async { cgroups.children(&herd).is_ok_and(|c| c.is_empty()) },
        )
        .await;
        // The Herd's own cgroup (it carries the Herd's quota) stays, empty.
        let left = cgroups.children(&cgroups::CgroupPath::root()).unwrap();
        assert!(
            left.iter().all(|c| c == HERD),
            "only the Herd's cgroup may stay on {}: {left:?}",
            rubelet.name
        );
        if cgroups.exists(&herd) {
            assert_eq!(cgroups.procs(&herd).unwrap(), Vec::<u32>::new());
        }
        // Nor the streaming pipeline's FIFOs.
        let pipes = rubelet.state.path().join("pipes").join(HERD);
        let left: Vec<_> = std::fs::read_dir(&pipes)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            left,
            Vec::<std::ffi::OsString>::new(),
            "FIFOs left on {}",
            rubelet.name
        );
    }
}
