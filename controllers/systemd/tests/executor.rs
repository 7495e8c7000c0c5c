//! The controller's executor against a temp unit dir, the recording systemd fake and a real
//! apiserver (port 0): files, calls, records and statuses, in order.

mod common;

use prost::Name;
use std::os::unix::fs::PermissionsExt;

use apiserver::testing::TestServer;
use controllers::Controller;
use rubeapi::api::systemd::{Unit, UnitStatus};
use rubeapi::object::ObjectExt;
use systemd_units::systemd::Call;
use systemd_units::{RecordingSystemd, UnitController};

use common::{converge, key, labelled, put, shape, simple};

struct Node {
    _dirs: tempfile::TempDir,
    controller: UnitController<RecordingSystemd>,
    fake: RecordingSystemd,
    unit_dir: std::path::PathBuf,
    state_dir: std::path::PathBuf,
}

async fn node(server: &TestServer) -> Node {
    let dirs = tempfile::tempdir().unwrap();
    let unit_dir = dirs.path().join("units");
    let state_dir = dirs.path().join("state");
    let fake = RecordingSystemd::new(&unit_dir);
    let controller = UnitController::new(
        "n1",
        &unit_dir,
        &state_dir,
        server.client().await,
        fake.clone(),
    );
    Node {
        _dirs: dirs,
        controller,
        fake,
        unit_dir,
        state_dir,
    }
}

fn web(n: u32) -> rubeapi::api::systemd::Unit {
    simple(&format!("/bin/sleep {n}"), true, "multi-user.target")
}

async fn status(client: &rubeapi::Client, name: &str) -> UnitStatus {
    client
        .get(&Unit::full_name(), "system", name)
        .await
        .unwrap()
        .status_as()
        .unwrap()
        .expect("a status")
}

#[tokio::test]
async fn a_unit_is_installed_started_restarted_on_change_and_removed_on_delete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let n = node(&server).await;
    let k = key("system", "web");

    // Created: written, reloaded, enabled, started; then the status, alone.
    let object = put(&client, labelled("system", "web", "n1", &web(100))).await;
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "enable", "start"], vec!["status"]]
    );
    assert_eq!(
        n.fake.calls(),
        [
            Call::DaemonReload,
            Call::Enable("web.service".into()),
            Call::Start("web.service".into())
        ]
    );
    let path = n.unit_dir.join("web.service");
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(content.starts_with("# Managed by Rube (api.systemd.Unit system/web)"));
    assert!(content.contains("\nExecStart=/bin/sleep 100\n"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // No temp file left beside it.
    let names: Vec<_> = std::fs::read_dir(&n.unit_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["web.service"]);
    let s = status(&client, "web").await;
    assert_eq!(
        (
            s.load_state.as_str(),
            s.active_state.as_str(),
            s.sub_state.as_str(),
            s.unit_file_state.as_str(),
            s.node.as_str(),
            s.observed_generation
        ),
        ("loaded", "active", "running", "enabled", "n1", 1)
    );
    let first_pid = s.main_pid;
    assert!(first_pid > 0);

    // Nothing changed: nothing to do, and no call.
    n.fake.clear_calls();
    assert!(converge(&n.controller, &k, Some(&object)).await.is_empty());
    assert_eq!(n.fake.calls(), []);

    // Changed content: rewritten, reloaded, restarted (not started), and reported.
    let object = put(&client, labelled("system", "web", "n1", &web(200))).await;
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "restart"], vec!["status"]]
    );
    assert_eq!(
        n.fake.calls(),
        [Call::DaemonReload, Call::Restart("web.service".into())]
    );
    let s = status(&client, "web").await;
    assert_eq!(s.observed_generation, 2);
    assert_ne!(s.main_pid, first_pid);

    // Disabled: only the symlinks change; the file and the process stay.
    n.fake.clear_calls();
    let mut off = web(200);
    off.enabled = false;
    let object = put(&client, labelled("system", "web", "n1", &off)).await;
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(shape(&rounds), [vec!["disable"], vec!["status"]]);
    assert_eq!(n.fake.calls(), [Call::Disable("web.service".into())]);

    // Deleted: stopped, removed, reloaded, records forgotten; the inventory is empty after.
    n.fake.clear_calls();
    assert_eq!(
        n.controller.inventory().await.unwrap(),
        std::slice::from_ref(&k)
    );
    let rounds = converge(&n.controller, &k, None).await;
    assert_eq!(shape(&rounds), [vec!["stop", "remove", "reload", "forget"]]);
    assert_eq!(
        n.fake.calls(),
        [Call::Stop("web.service".into()), Call::DaemonReload]
    );
    assert!(!path.exists());
    assert_eq!(n.controller.inventory().await.unwrap(), []);
    assert!(
        std::fs::read_dir(n.state_dir.join("system"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn without_the_apiserver_the_node_still_converges_and_only_the_status_waits() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let n = node(&server).await;
    let k = key("system", "web");
    let object = put(&client, labelled("system", "web", "n1", &web(100))).await;
    converge(&n.controller, &k, Some(&object)).await;

    // The cache already holds a newer spec when the apiserver goes away.
    let newer = put(&client, labelled("system", "web", "n1", &web(200))).await;
    server.stop().await;

    // observe reads only local state: with the apiserver gone it still sees the old spec's
    // unit converged.
    let observed = n.controller.observe(&k, Some(&object)).await.unwrap();
    assert_eq!(n.controller.reconcile(Some(&object), &observed), []);

    // Someone edits the file by hand: it is put back and reloaded; the process was started
    // from the right content, so it is not restarted, and nothing is left to report.
    let path = n.unit_dir.join("web.service");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("/bin/sleep 100", "/bin/sleep 1")).unwrap();
    n.fake.clear_calls();
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(shape(&rounds), [vec!["write", "reload"]]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(n.fake.calls(), [Call::DaemonReload]);

    // The newer spec is applied in full; only the status write, last and alone, fails.
    n.fake.clear_calls();
    let observed = n.controller.observe(&k, Some(&newer)).await.unwrap();
    let effects = n.controller.reconcile(Some(&newer), &observed);
    assert_eq!(
        shape(std::slice::from_ref(&effects)),
        [vec!["write", "reload", "restart"]]
    );
    n.controller.execute(&k, effects).await.unwrap();
    let observed = n.controller.observe(&k, Some(&newer)).await.unwrap();
    let effects = n.controller.reconcile(Some(&newer), &observed);
    assert_eq!(shape(std::slice::from_ref(&effects)), [vec!["status"]]);
    let err = n.controller.execute(&k, effects).await.unwrap_err();
    assert!(matches!(err, systemd_units::Error::Api(_)), "{err}");
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("/bin/sleep 200")
    );
    assert_eq!(
        n.fake.calls(),
        [Call::DaemonReload, Call::Restart("web.service".into())]
    );
    // The status record still holds what the apiserver last accepted, so it is retried.
    let observed = n.controller.observe(&k, Some(&newer)).await.unwrap();
    assert_eq!(observed.status.unwrap().observed_generation, 1);
}

#[tokio::test]
async fn files_the_controller_did_not_write_are_never_touched() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let n = node(&server).await;
    std::fs::create_dir_all(&n.unit_dir).unwrap();
    let path = n.unit_dir.join("web.service");
    let theirs = "[Service]\nExecStart=/bin/sleep 5\n";
    std::fs::write(&path, theirs).unwrap();
    let k = key("system", "web");

    let object = put(&client, labelled("system", "web", "n1", &web(100))).await;
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(shape(&rounds), [vec!["status"]]);
    assert_eq!(
        status(&client, "web").await.message,
        "web.service already exists and was not written by Rube; it is left alone"
    );
    assert!(converge(&n.controller, &k, None).await.len() <= 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), theirs);
    assert_eq!(n.fake.calls(), []);
    assert_eq!(n.controller.inventory().await.unwrap(), []);

    // The same name in another namespace is someone else's too.
    std::fs::remove_file(&path).unwrap();
    let object = put(&client, labelled("system", "web", "n1", &web(100))).await;
    converge(&n.controller, &k, Some(&object)).await;
    let other = put(&client, labelled("apps", "web", "n1", &web(300))).await;
    let rounds = converge(&n.controller, &key("apps", "web"), Some(&other)).await;
    assert_eq!(shape(&rounds), [vec!["status"]]);
    let message = client
        .get(&Unit::full_name(), "apps", "web")
        .await
        .unwrap()
        .status_as::<UnitStatus>()
        .unwrap()
        .unwrap()
        .message;
    assert_eq!(
        message,
        "web.service already exists and was written by Rube for system/web; it is left alone"
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("/bin/sleep 100")
    );
}

#[tokio::test]
async fn a_unit_that_fails_to_start_is_reported_and_not_started_again() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let n = node(&server).await;
    n.fake.fail_starts("web.service");
    let k = key("system", "web");
    let object = put(&client, labelled("system", "web", "n1", &web(100))).await;
    let rounds = converge(&n.controller, &k, Some(&object)).await;
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "enable", "start"], vec!["status"]]
    );
    let s = status(&client, "web").await;
    assert_eq!((s.active_state.as_str(), s.exec_main_status), ("failed", 1));
    // Converged: the failure is systemd's Restart= policy's business, not a retry loop.
    n.fake.clear_calls();
    assert!(converge(&n.controller, &k, Some(&object)).await.is_empty());
    assert_eq!(n.fake.calls(), []);
}

#[tokio::test]
async fn units_deleted_while_the_controller_was_down_are_found_and_removed() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let n = node(&server).await;
    for name in ["a", "b"] {
        let object = put(&client, labelled("system", name, "n1", &web(100))).await;
        converge(&n.controller, &key("system", name), Some(&object)).await;
    }
    // A new controller (a restarted rubelet) on the same dirs finds both from disk alone.
    let again = UnitController::new(
        "n1",
        &n.unit_dir,
        &n.state_dir,
        client.clone(),
        n.fake.clone(),
    );
    assert_eq!(
        again.inventory().await.unwrap(),
        [key("system", "a"), key("system", "b")]
    );
    // "b" was deleted meanwhile: the runtime reconciles it with no desired object.
    let rounds = converge(&again, &key("system", "b"), None).await;
    assert_eq!(
        shape(&rounds),
        [vec!["stop", "disable", "remove", "reload", "forget"]]
    );
    assert_eq!(again.inventory().await.unwrap(), [key("system", "a")]);
}

#[tokio::test]
async fn an_unreachable_manager_is_an_error_that_names_it() {
    let server = TestServer::start().await;
    let n = node(&server).await;
    n.fake.set_unreachable(true);
    let err = n.controller.check_systemd().await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot reach the systemd manager"),
        "{err}"
    );
    assert!(
        n.controller
            .observe(&key("system", "web"), None)
            .await
            .is_err()
    );
}
