//! The slice controller against a real apiserver, with real shims and cgroups.

mod common;

use std::path::Path;
use std::time::Duration;

use apiserver::testing::TestServer;
use prost::Name;
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Slice, SliceStatus};
use slices::controller::slice_dir;
use slices::{Config, SliceController};

fn slice(name: &str, node: &str, script: &str) -> Object {
    rubeapi::testing::slice("herd", name)
        .script(script)
        .node(node)
        .build()
}

async fn status(client: &Client, name: &str) -> Option<SliceStatus> {
    client
        .get(&Slice::full_name(), "herd", name)
        .await
        .ok()?
        .status_as()
        .ok()?
}

/// Polls `check` for up to 30 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_of_this_node_run_to_completion_and_are_cleaned_up() {
    let Some(node) = common::node("controller") else {
        return;
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let state = node.dir.path().to_owned();
    let mut config = Config::new(
        "n1",
        &state,
        Path::new(common::SHIM),
        node.hierarchy.clone(),
        client.clone(),
    );
    config.kill_grace = Duration::from_millis(200);
    let controller = SliceController::new(config);
    // The runtime has no way in for the controller's wakeups yet: a short resync stands in.
    let options = controllers::Options {
        resync: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    client
        .put(slice("ok", "n1", "echo hi"), None)
        .await
        .unwrap();
    client
        .put(slice("three", "n1", "exit 3"), None)
        .await
        .unwrap();
    client
        .put(slice("elsewhere", "n2", "exit 0"), None)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controllers::run(
        controller,
        client.clone(),
        options,
        async {
            let _ = stopped.await;
        },
    ));

    let ok = eventually("ok succeeded", async || {
        status(&client, "ok")
            .await
            .filter(|s| s.phase == Phase::Succeeded as i32)
    })
    .await;
    assert_eq!(
        (ok.exit_code, ok.node.as_str(), ok.observed_generation),
        (Some(0), "n1", 1)
    );
    assert!(ok.start_time.is_some() && ok.finish_time.is_some() && ok.pid > 0);
    assert_eq!(ok.cgroup, "herd/ok");
    assert_eq!(
        slices::logs::read(&slice_dir(&state, "herd", "ok"), 0, 100)
            .unwrap()
            .data,
        b"hi\n"
    );
    let three = eventually("three failed", async || {
        status(&client, "three")
            .await
            .filter(|s| s.phase == Phase::Failed as i32)
    })
    .await;
    assert_eq!(three.exit_code, Some(3));
    assert!(!node.cgroup_exists("herd/ok") && !node.cgroup_exists("herd/three"));

    // Another node's slice: no status, nothing on disk.
    assert_eq!(status(&client, "elsewhere").await, None);
    assert!(!slice_dir(&state, "herd", "elsewhere").exists());

    // Deleted: its dir goes.
    client
        .delete(&Slice::full_name(), "herd", "ok", None)
        .await
        .unwrap();
    eventually("ok removed", async || {
        (!slice_dir(&state, "herd", "ok").exists()).then_some(())
    })
    .await;

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_spec_restarts_and_deletion_stops_a_running_slice() {
    let Some(node) = common::node("controller_restart") else {
        return;
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let state = node.dir.path().to_owned();
    let mut config = Config::new(
        "n1",
        &state,
        Path::new(common::SHIM),
        node.hierarchy.clone(),
        client.clone(),
    );
    config.kill_grace = Duration::from_millis(200);
    let options = controllers::Options {
        resync: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    client
        .put(slice("long", "n1", "exec sleep 100"), None)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controllers::run(
        SliceController::new(config),
        client.clone(),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let first = eventually("running", async || {
        status(&client, "long")
            .await
            .filter(|s| s.phase == Phase::Running as i32)
    })
    .await;
    assert!(node.cgroup_exists("herd/long"));

    client
        .put(slice("long", "n1", "exec sleep 200"), None)
        .await
        .unwrap();
    let second = eventually("running generation 2", async || {
        status(&client, "long")
            .await
            .filter(|s| s.phase == Phase::Running as i32 && s.observed_generation == 2)
    })
    .await;
    assert_ne!(first.pid, second.pid);

    client
        .delete(&Slice::full_name(), "herd", "long", None)
        .await
        .unwrap();
    eventually("stopped and removed", async || {
        (!slice_dir(&state, "herd", "long").exists() && !node.cgroup_exists("herd/long"))
            .then_some(())
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
