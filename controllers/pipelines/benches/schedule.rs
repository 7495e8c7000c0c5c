//! Scheduling throughput for a pipeline of 1,000 trivial steps.
//!
//! - `plan`: the pure core. `reconcile` of a pipeline whose 1,000 independent steps are all
//!   ready, on 10 nodes: every slice placed in one call.
//! - `chain`: the pure core driven to completion: a 1,000-step chain, each step finished as
//!   soon as its slice exists (1,000 rounds of reconcile, apply, finish).
//! - `controller`: `pipelines::run` against a real apiserver (sqlite on a temp dir): from the
//!   put of the pipeline until all 1,000 slices exist and the status says RUNNING for each.
//!
//! `cargo bench -p pipelines --bench schedule`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use pipelines::controller::{Effect, Observed, reconcile, simulate};
use pipelines::dag::SlicePhase;
use pipelines::schedule::{Amount, NodeView};
use prost::Name;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Node, NodeStatus, Resources, Selector};
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::{Pipeline, PipelineStatus, Slice, Step};

const STEPS: usize = 1000;
const NODES: usize = 10;

fn pipeline(chain: bool) -> Pipeline {
    Pipeline {
        mode: Mode::Batch as i32,
        steps: (0..STEPS)
            .map(|i| Step {
                name: format!("s{i}"),
                command: "/bin/true".into(),
                depends_on: if chain && i > 0 {
                    vec![format!("s{}", i - 1)]
                } else {
                    vec![]
                },
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn nodes() -> Vec<NodeView> {
    (0..NODES)
        .map(|i| NodeView {
            name: format!("n{i}"),
            labels: BTreeMap::new(),
            ready: true,
            schedulable: true,
            allocatable: Amount {
                cpu_millis: 64_000,
                memory_bytes: 256 << 30,
                pids: 0,
                slices: 0,
            },
        })
        .collect()
}

fn world(spec: &Pipeline) -> Observed {
    let mut o = object::new("bench", "p", spec);
    let m = o.metadata.as_mut().unwrap();
    m.uid = "uid".into();
    m.generation = 1;
    m.finalizers.push(pipelines::controller::FINALIZER.into());
    Observed {
        pipeline: Some(o),
        nodes: nodes(),
        ..Default::default()
    }
}

fn bench_plan() {
    let w = world(&pipeline(false));
    let rounds = 20;
    let started = Instant::now();
    let mut created = 0;
    for _ in 0..rounds {
        created = reconcile(&w)
            .iter()
            .filter(|e| matches!(e, Effect::CreateSlice(_)))
            .count();
    }
    let per = started.elapsed() / rounds;
    assert_eq!(created, STEPS);
    println!(
        "plan:       {STEPS} independent steps on {NODES} nodes: {:.2} ms per plan, {:.0} slices/s",
        per.as_secs_f64() * 1e3,
        STEPS as f64 / per.as_secs_f64()
    );
}

fn bench_chain() {
    let mut w = world(&pipeline(true));
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        let effects = reconcile(&w);
        if effects.is_empty() {
            let active = w.slices.iter().filter(|s| s.phase.is_active()).count();
            if active == 0 {
                break;
            }
            for s in &mut w.slices {
                s.phase = SlicePhase::Succeeded;
            }
            continue;
        }
        w = simulate(&w, &effects);
        rounds += 1;
    }
    let elapsed = started.elapsed();
    let status: PipelineStatus = w.pipeline.as_ref().unwrap().status_as().unwrap().unwrap();
    assert_eq!(status.phase, Phase::Succeeded as i32);
    println!(
        "chain:      {STEPS}-step chain to SUCCEEDED in {rounds} rounds: {:.0} ms, {:.0} steps/s",
        elapsed.as_secs_f64() * 1e3,
        STEPS as f64 / elapsed.as_secs_f64()
    );
}

async fn bench_controller() {
    let server = TestServer::start().await;
    let client = server.client().await;
    for i in 0..NODES {
        let name = format!("n{i}");
        client
            .put(object::new("", &name, &Node::default()), None)
            .await
            .unwrap();
        let status = NodeStatus {
            condition: Condition::Ready as i32,
            allocatable: Some(Resources {
                cpus: 64,
                memory_bytes: 256 << 30,
                pids: 0,
            }),
            ..Default::default()
        };
        client
            .update_status("rube.Node", "", &name, object::pack(&status), None)
            .await
            .unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(pipelines::run(
        client.clone(),
        controllers::Options::default(),
        async {
            let _ = stopped.await;
        },
    ));
    // Let the controller list before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    client
        .put(object::new("bench", "p", &pipeline(false)), None)
        .await
        .unwrap();
    let deadline = started + Duration::from_secs(120);
    loop {
        let status: Option<PipelineStatus> = client
            .get(&Pipeline::full_name(), "bench", "p")
            .await
            .unwrap()
            .status_as()
            .unwrap();
        if status.is_some_and(|s| {
            s.phase == Phase::Running as i32 && s.steps.iter().all(|s| !s.slice.is_empty())
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not plan within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let slices = client
        .list(Selector {
            r#type: Slice::full_name(),
            ..Default::default()
        })
        .await
        .unwrap()
        .objects
        .len();
    assert_eq!(slices, STEPS);
    println!(
        "controller: {STEPS} slices created through a real apiserver (sqlite): {:.0} ms, {:.0} slices/s",
        elapsed.as_secs_f64() * 1e3,
        STEPS as f64 / elapsed.as_secs_f64()
    );
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}

fn main() {
    bench_plan();
    bench_chain();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench_controller());
}
