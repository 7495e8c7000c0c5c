//! The pipeline controller against a real apiserver (sqlite in a temp dir, port 0), run by
//! `pipelines::run`. Two Node objects are put by the test, which also plays their rubelets:
//! it writes the SliceStatus of the slices the controller creates.

use std::time::Duration;

use apiserver::testing::TestServer;
use pipelines::controller::FINALIZER;
use prost::Name;
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::node_status::Condition;
use rubeapi::rube::{Node, NodeStatus, Outcome, Resources, Selector};
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::slice_status::Phase as SlicePhase;
use rubeapi::runink::{Pipeline, PipelineStatus, Slice, SliceStatus, Step};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "herd";

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), controllers::Error>>,
}

impl Running {
    async fn start(client: &Client) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let options = controllers::Options {
            retry: controllers::Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            reconnect: controllers::Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(200),
            ),
            ..Default::default()
        };
        let task = tokio::spawn(pipelines::run(client.clone(), options, async {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .await
            .unwrap()
            .expect("the controller stops cleanly");
    }
}

async fn put_node(client: &Client, name: &str) {
    client
        .put(object::new("", name, &Node::default()), None)
        .await
        .unwrap();
    let status = NodeStatus {
        condition: Condition::Ready as i32,
        allocatable: Some(Resources {
            cpus: 4,
            memory_bytes: 8 << 30,
            pids: 4096,
        }),
        ..Default::default()
    };
    client
        .update_status("rube.Node", "", name, object::pack(&status), None)
        .await
        .unwrap();
}

fn step(name: &str, depends_on: &[&str]) -> Step {
    Step {
        name: name.into(),
        command: "/bin/true".into(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
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

/// Names of the pipeline's slices that have not finished, with their nodes.
async fn unfinished(client: &Client) -> Vec<(String, String)> {
    let listed = client
        .list(Selector {
            r#type: Slice::full_name(),
            namespace: NS.into(),
            labels: "pipeline=wc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = listed
        .objects
        .iter()
        .filter(|o| {
            let status: Option<SliceStatus> = o.status_as().unwrap();
            status.is_none_or(|s| {
                s.phase == SlicePhase::Pending as i32 || s.phase == SlicePhase::Running as i32
            })
        })
        .map(|o| {
            let node = o.metadata.as_ref().unwrap().labels["node"].clone();
            (o.name().to_owned(), node)
        })
        .collect();
    out.sort();
    out
}

/// Waits until the unfinished slices are exactly `names`, and returns them with their nodes.
async fn wait_for_slices(client: &Client, names: &[&str]) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = unfinished(client).await;
        if now.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>() == names {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 10 s for slices {names:?}; there are {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Plays the rubelet of the slice's node: the slice ran and exited with `code`.
async fn exit(client: &Client, slice: &str, code: i32) {
    let status = SliceStatus {
        phase: if code == 0 {
            SlicePhase::Succeeded
        } else {
            SlicePhase::Failed
        } as i32,
        exit_code: Some(code),
        ..Default::default()
    };
    client
        .update_status(&Slice::full_name(), NS, slice, object::pack(&status), None)
        .await
        .unwrap();
}

async fn pipeline_status(client: &Client) -> Option<PipelineStatus> {
    client
        .get(&Pipeline::full_name(), NS, "wc")
        .await
        .unwrap()
        .status_as()
        .unwrap()
}

async fn wait_for_phase(client: &Client, phase: Phase) -> PipelineStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = pipeline_status(client).await;
        if let Some(s) = &status
            && s.phase == phase as i32
        {
            return s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 10 s for phase {phase:?}; the status is {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diamond_completes_in_dependency_order() {
    let server = TestServer::start().await;
    let client = server.client().await;
    put_node(&client, "n1").await;
    put_node(&client, "n2").await;
    let controller = Running::start(&client).await;
    client
        .put(object::new(NS, "wc", &diamond()), None)
        .await
        .unwrap();

    wait_for_slices(&client, &["wc.a-1"]).await;
    exit(&client, "wc.a-1", 0).await;
    let bc = wait_for_slices(&client, &["wc.b-1", "wc.c-1"]).await;
    assert_ne!(
        bc[0].1, bc[1].1,
        "b and c are spread over both nodes: {bc:?}"
    );
    exit(&client, "wc.b-1", 0).await;
    // d waits for c: give the controller time to (wrongly) start it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_slices(&client, &["wc.c-1"]).await;
    exit(&client, "wc.c-1", 0).await;
    wait_for_slices(&client, &["wc.d-1"]).await;
    exit(&client, "wc.d-1", 0).await;
    let status = wait_for_phase(&client, Phase::Succeeded).await;
    let attempts: Vec<(String, u32)> = status
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.attempts))
        .collect();
    assert_eq!(
        attempts,
        [("a", 1), ("b", 1), ("c", 1), ("d", 1)].map(|(n, a)| (n.to_owned(), a))
    );
    assert_eq!(status.observed_generation, 1);
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pipeline_removes_its_slices_then_the_pipeline() {
    let server = TestServer::start().await;
    let client = server.client().await;
    put_node(&client, "n1").await;
    put_node(&client, "n2").await;
    let controller = Running::start(&client).await;
    client
        .put(object::new(NS, "wc", &diamond()), None)
        .await
        .unwrap();
    wait_for_slices(&client, &["wc.a-1"]).await;
    exit(&client, "wc.a-1", 0).await;
    wait_for_slices(&client, &["wc.b-1", "wc.c-1"]).await;
    let held = client.get(&Pipeline::full_name(), NS, "wc").await.unwrap();
    assert_eq!(held.metadata.as_ref().unwrap().finalizers, [FINALIZER]);

    let deleted = client
        .delete(&Pipeline::full_name(), NS, "wc", None)
        .await
        .unwrap();
    assert_eq!(deleted.outcome, Outcome::DeletionPending as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let slices = client
            .list(Selector {
                r#type: Slice::full_name(),
                namespace: NS.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .objects;
        let gone = match client.get(&Pipeline::full_name(), NS, "wc").await {
            Err(rubeapi::Error::NotFound(_)) => true,
            Ok(_) => false,
            Err(e) => panic!("get the pipeline: {e}"),
        };
        if gone {
            assert!(
                slices.is_empty(),
                "the pipeline went before its slices: {slices:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 10 s for the pipeline and its slices to go; slices left: {:?}",
            slices
                .iter()
                .map(|s| s.name().to_owned())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_on_a_node_that_goes_not_ready_is_placed_on_the_other() {
    let server = TestServer::start().await;
    let client = server.client().await;
    put_node(&client, "n1").await;
    put_node(&client, "n2").await;
    let controller = Running::start(&client).await;
    client
        .put(object::new(NS, "wc", &diamond()), None)
        .await
        .unwrap();
    let first = wait_for_slices(&client, &["wc.a-1"]).await;
    let (lost, other) = if first[0].1 == "n1" {
        ("n1", "n2")
    } else {
        ("n2", "n1")
    };
    // What the apiserver does when the node's lease expires.
    let status = NodeStatus {
        condition: Condition::NotReady as i32,
        ..Default::default()
    };
    client
        .update_status("rube.Node", "", lost, object::pack(&status), None)
        .await
        .unwrap();
    let second = wait_for_slices(&client, &["wc.a-2"]).await;
    assert_eq!(second[0].1, other);
    controller.stop().await;
}
