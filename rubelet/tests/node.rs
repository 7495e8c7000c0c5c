//! The rubelet as a process against a real apiserver process: slices bound to its node are run
//! and their status written, other nodes' are not touched; restarts of the apiserver or the
//! rubelet neither lose nor repeat work; a silent node goes NOT_READY.

mod harness;

use std::time::Duration;

use harness::{
    Apiserver, HERD, Rubelet, SLICE, eventually, root_or_skip, slice, status, until_status,
};
use rubeapi::object::ObjectExt;
use rubeapi::rube::NodeStatus;
use rubeapi::rube::node_status::Condition;
use rubeapi::runink::slice_status::Phase;

const WAIT: Duration = Duration::from_secs(30);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_for_this_node_runs_and_reports_and_another_nodes_is_not_touched() {
    if !root_or_skip("a_slice_for_this_node_runs_and_reports_and_another_nodes_is_not_touched") {
        return;
    }
    let server = Apiserver::start(&[]);
    let client = server.client().await;
    let out = tempfile::tempdir().unwrap();
    let mine = out.path().join("mine");
    let theirs = out.path().join("theirs");
    client
        .put(
            slice(
                "mine",
                "w1",
                &format!("echo ran >> {}; exit 3", mine.display()),
            ),
            None,
        )
        .await
        .unwrap();
    client
        .put(
            slice("theirs", "w2", &format!("echo ran >> {}", theirs.display())),
            None,
        )
        .await
        .unwrap();
    let rubelet = Rubelet::start("w1", &server.config_path(), &[]);

    until_status(
        &client,
        &rubelet,
        "mine to fail with exit code 3",
        "mine",
        |s| s.phase == Phase::Failed as i32 && s.exit_code == Some(3),
    )
    .await;
    let done = status(&client, "mine").await.unwrap();
    assert_eq!(done.node, "w1");
    assert_eq!(done.observed_generation, 1);
    assert!(done.finish_time.is_some() && done.start_time.is_some());
    assert_eq!(lines(&mine), ["ran"]);

    // The node registered itself with its size and label, and reports Ready.
    let node = client.get("rube.Node", "", "w1").await.unwrap();
    assert_eq!(node.metadata.as_ref().unwrap().labels["node"], "w1");
    let node_status: NodeStatus = node.status_as().unwrap().unwrap();
    assert_eq!(node_status.condition, Condition::Ready as i32);
    assert!(node_status.capacity.unwrap().cpus >= 1);

    assert_eq!(
        status(&client, "theirs").await,
        None,
        "another node's slice"
    );
    assert!(!theirs.exists(), "another node's slice never ran here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_is_ridden_out_without_running_anything_twice() {
    if !root_or_skip("an_apiserver_restart_is_ridden_out_without_running_anything_twice") {
        return;
    }
    let mut server = Apiserver::start(&[]);
    let client = server.client().await;
    let out = tempfile::tempdir().unwrap();
    let once = out.path().join("once");
    client
        .put(
            slice("once", "w1", &format!("echo ran >> {}", once.display())),
            None,
        )
        .await
        .unwrap();
    let rubelet = Rubelet::start("w1", &server.config_path(), &[]);
    until_status(&client, &rubelet, "once to succeed", "once", |s| {
        s.phase == Phase::Succeeded as i32
    })
    .await;

    server.kill();
    // The rubelet goes on alone for a while, then the apiserver comes back unchanged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    let client = server.client().await;
    let after = out.path().join("after");
    client
        .put(
            slice("after", "w1", &format!("echo ran >> {}", after.display())),
            None,
        )
        .await
        .unwrap();
    until_status(
        &client,
        &rubelet,
        "a slice put after the restart to succeed",
        "after",
        |s| s.phase == Phase::Succeeded as i32,
    )
    .await;
    assert_eq!(lines(&once), ["ran"], "the first slice ran once");
    assert_eq!(lines(&after), ["ran"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rubelet_leaves_workloads_running_and_converges_when_it_returns() {
    if !root_or_skip("a_killed_rubelet_leaves_workloads_running_and_converges_when_it_returns") {
        return;
    }
    let server = Apiserver::start(&[]);
    let client = server.client().await;
    let out = tempfile::tempdir().unwrap();
    let gate = out.path().join("gate");
    let path = |name: &str| out.path().join(name);
    // `finishing` waits for the gate, so it is still running when the rubelet dies.
    let wait_for_gate = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo done >> {}",
        gate.display(),
        path("finishing").display()
    );
    client
        .put(slice("finishing", "w1", &wait_for_gate), None)
        .await
        .unwrap();
    client
        .put(slice("changed", "w1", "sleep 600"), None)
        .await
        .unwrap();
    client
        .put(slice("deleted", "w1", "sleep 600"), None)
        .await
        .unwrap();
    let mut rubelet = Rubelet::start("w1", &server.config_path(), &[]);
    for name in ["finishing", "changed", "deleted"] {
        eventually(
            &format!("{name} to run"),
            WAIT,
            || rubelet.log(),
            || async {
                status(&client, name)
                    .await
                    .is_some_and(|s| s.phase == Phase::Running as i32)
            },
        )
        .await;
    }
    let deleted_pid = status(&client, "deleted").await.unwrap().pid;

    rubelet.kill9();
    std::fs::write(&gate, "").unwrap();
    // The workload finishes without its rubelet.
    eventually(
        "finishing to finish without the rubelet",
        WAIT,
        String::new,
        || async { path("finishing").exists() },
    )
    .await;
    let changed = client
        .put(
            slice(
                "changed",
                "w1",
                &format!("echo v2 >> {}", path("changed").display()),
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.object.unwrap().metadata.unwrap().generation, 2);
    client.delete(SLICE, HERD, "deleted", None).await.unwrap();
    client
        .put(
            slice(
                "created",
                "w1",
                &format!("echo new >> {}", path("created").display()),
            ),
            None,
        )
        .await
        .unwrap();

    rubelet.restart();
    until_status(
        &client,
        &rubelet,
        "finishing's exit to be reported",
        "finishing",
        |s| s.phase == Phase::Succeeded as i32 && s.exit_code == Some(0),
    )
    .await;
    until_status(
        &client,
        &rubelet,
        "changed to run its new spec",
        "changed",
        |s| s.phase == Phase::Succeeded as i32 && s.observed_generation == 2,
    )
    .await;
    until_status(&client, &rubelet, "created to run", "created", |s| {
        s.phase == Phase::Succeeded as i32
    })
    .await;
    eventually(
        "the deleted slice's process to be gone",
        WAIT,
        || rubelet.log(),
        || async { !std::path::Path::new(&format!("/proc/{deleted_pid}")).exists() },
    )
    .await;
    assert_eq!(lines(&path("finishing")), ["done"]);
    assert_eq!(lines(&path("changed")), ["v2"]);
    assert_eq!(lines(&path("created")), ["new"]);
    // No cgroup is left of the deleted slice, nor of those that finished.
    let hierarchy = cgroups::Hierarchy::detect(&rubelet.subtree).unwrap();
    for name in ["deleted", "finishing", "changed", "created"] {
        let leaf = cgroups::CgroupPath::new(&format!("{HERD}/{name}")).unwrap();
        eventually(
            &format!("{name}'s cgroup to be gone"),
            WAIT,
            || rubelet.log(),
            || async { !hierarchy.exists(&leaf) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rubelet_restarts_a_workload_while_the_apiserver_is_down() {
    if !root_or_skip("the_rubelet_restarts_a_workload_while_the_apiserver_is_down") {
        return;
    }
    let mut server = Apiserver::start(&[]);
    let client = server.client().await;
    let out = tempfile::tempdir().unwrap();
    let starts = out.path().join("starts");
    let mut always = slice(
        "always",
        "w1",
        &format!("echo start >> {}; exec sleep 600", starts.display()),
    );
    let mut spec: rubeapi::runink::Slice = always.spec_as().unwrap();
    spec.restart_policy = rubeapi::runink::RestartPolicy::Always as i32;
    always.spec = Some(rubeapi::object::pack(&spec));
    client.put(always, None).await.unwrap();
    let mut rubelet = Rubelet::start("w1", &server.config_path(), &[]);
    until_status(&client, &rubelet, "always to run", "always", |s| {
        s.phase == Phase::Running as i32
    })
    .await;
    let pid = status(&client, "always").await.unwrap().pid;

    // Both go away; the workload dies meanwhile. Only the rubelet's local copy of the slice
    // can tell it to start the workload again.
    rubelet.kill9();
    server.kill();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    rubelet.restart();
    eventually(
        "a restart without the apiserver",
        WAIT,
        || rubelet.log(),
        || async { lines(&starts).len() == 2 },
    )
    .await;

    server.restart();
    let client = server.client().await;
    eventually(
        "the restart to be reported",
        WAIT,
        || rubelet.log(),
        || async {
            status(&client, "always").await.is_some_and(|s| {
                s.phase == Phase::Running as i32 && s.restarts >= 1 && s.pid != pid
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_rubelet_stops_goes_not_ready_and_comes_back_ready() {
    if !root_or_skip("a_node_whose_rubelet_stops_goes_not_ready_and_comes_back_ready") {
        return;
    }
    let server = Apiserver::start(&["--node-grace", "2s"]);
    let client = server.client().await;
    let mut rubelet = Rubelet::start("w1", &server.config_path(), &[]);
    let condition = |client: rubeapi::Client| async move {
        let node = client.get("rube.Node", "", "w1").await.ok()?;
        let status: NodeStatus = node.status_as().ok()??;
        Some((status.condition, status.message))
    };
    eventually(
        "w1 to be ready",
        WAIT,
        || rubelet.log(),
        || async {
            condition(client.clone())
                .await
                .is_some_and(|(c, _)| c == Condition::Ready as i32)
        },
    )
    .await;
    // Renewals every 200 ms keep it ready well past the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        condition(client.clone()).await.unwrap().0,
        Condition::Ready as i32
    );

    rubelet.kill9();
    eventually("w1 to go not ready", WAIT, String::new, || async {
        condition(client.clone())
            .await
            .is_some_and(|(c, _)| c == Condition::NotReady as i32)
    })
    .await;
    let (_, message) = condition(client.clone()).await.unwrap();
    assert!(message.contains("lease node-w1 not renewed"), "{message}");

    rubelet.restart();
    eventually(
        "w1 to be ready again",
        WAIT,
        || rubelet.log(),
        || async {
            condition(client.clone())
                .await
                .is_some_and(|(c, _)| c == Condition::Ready as i32)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ructl_logs_reads_a_slices_output_from_its_rubelet() {
    if !root_or_skip("ructl_logs_reads_a_slices_output_from_its_rubelet") {
        return;
    }
    let server = Apiserver::start(&[]);
    let client = server.client().await;
    let rubelet = Rubelet::start("w1", &server.config_path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let gate = out.path().join("gate");
    client
        .put(
            slice(
                "talker",
                "w1",
                &format!(
                    "echo first; echo to-stderr >&2; while [ ! -e {} ]; do sleep 0.05; done; echo last",
                    gate.display()
                ),
            ),
            None,
        )
        .await
        .unwrap();
    until_status(&client, &rubelet, "talker to run", "talker", |s| {
        s.phase == Phase::Running as i32
    })
    .await;

    // Following: prints what is there, waits for more, ends when the slice exits.
    let follower = std::thread::spawn({
        let config = server.config_path();
        move || harness::ructl(&config, &["logs", "-n", HERD, "talker", "-f"])
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gate, "").unwrap();
    let (ok, followed, stderr) = follower.join().unwrap();
    assert!(ok, "ructl logs -f failed: {stderr}");
    assert_eq!(followed, "first\nto-stderr\nlast\n");

    let (ok, stdout, stderr) =
        harness::ructl(&server.config_path(), &["logs", "-n", HERD, "talker"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "first\nto-stderr\nlast\n");

    let (ok, _, stderr) = harness::ructl(&server.config_path(), &["logs", "-n", HERD, "nosuch"]);
    assert!(!ok);
    assert!(stderr.contains("slice analytics/nosuch"), "{stderr}");
}
