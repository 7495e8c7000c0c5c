//! The executor against a REAL systemd: a private user manager in a mount and PID namespace
//! (`systemd_units::user_manager`), driven through `systemctl --user`. Needs root, util-linux
//! and systemd; where they are missing the tests say so loudly and return, unless
//! `RUBE_REQUIRE_SYSTEMD` is set, where that is a failure.

mod common;

use apiserver::testing::TestServer;
use prost::Name;
use rubeapi::api::systemd::{Unit, UnitStatus};
use rubeapi::object::ObjectExt;
use systemd_units::user_manager::UserManager;
use systemd_units::{Systemd, UnitController};

use common::{converge, key, labelled, put, shape, simple};

async fn user_manager() -> Option<UserManager> {
    if let Some(why) = UserManager::unavailable() {
        assert!(std::env::var_os("RUBE_REQUIRE_SYSTEMD").is_none(), "{why}");
        rubeapi::testing::skip("real_systemd", &format!("no real systemd here: {why}"));
        return None;
    }
    Some(UserManager::start().await.expect("a private user manager"))
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
async fn a_real_unit_is_started_restarted_and_removed_by_a_real_user_manager() {
    let Some(manager) = user_manager().await else {
        return;
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let state = tempfile::tempdir().unwrap();
    let unit_dir = manager.unit_dir();
    let controller = UnitController::new(
        "n1",
        &unit_dir,
        state.path(),
        client.clone(),
        manager.systemctl(),
    );
    let info = controller.check_systemd().await.unwrap();
    assert!(!info.version.is_empty(), "{info:?}");
    let k = key("system", "web");

    // No [Install] target of its own: wanted by the user manager's default.target.
    let mut unit = simple("/bin/sleep 1000", true, "unused.target");
    unit.install = None;
    let object = put(&client, labelled("system", "web", "n1", &unit)).await;
    let rounds = converge(&controller, &k, Some(&object)).await;
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "enable", "start"], vec!["status"]]
    );
    let s = status(&client, "web").await;
    assert_eq!(
        (
            s.load_state.as_str(),
            s.active_state.as_str(),
            s.sub_state.as_str(),
            s.unit_file_state.as_str(),
            s.observed_generation,
        ),
        ("loaded", "active", "running", "enabled", 1)
    );
    assert!(s.main_pid > 0);
    assert!(s.last_transition.is_some());
    let wants = unit_dir.join("default.target.wants/web.service");
    assert!(wants.is_symlink(), "{} is missing", wants.display());
    let shown = manager.systemctl().show("web.service").await.unwrap();
    assert_eq!(shown.main_pid, s.main_pid);
    eprintln!("real systemd: web.service active, MainPID {}", s.main_pid);

    // New content: restarted, with a new main process running the new command.
    let object = put(
        &client,
        labelled(
            "system",
            "web",
            "n1",
            &Unit {
                description: "changed".into(),
                ..unit.clone()
            },
        ),
    )
    .await;
    let rounds = converge(&controller, &k, Some(&object)).await;
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "restart"], vec!["status"]]
    );
    let after = status(&client, "web").await;
    assert_eq!(after.active_state, "active");
    assert_eq!(after.observed_generation, 2);
    assert!(after.main_pid > 0);
    assert_ne!(
        after.main_pid, s.main_pid,
        "restart must start a new process"
    );

    // Deleted: stopped, disabled, removed; the manager no longer knows it.
    let rounds = converge(&controller, &k, None).await;
    assert_eq!(
        shape(&rounds),
        [vec!["stop", "disable", "remove", "reload", "forget"]]
    );
    assert!(!unit_dir.join("web.service").exists());
    assert!(!wants.exists() && !wants.is_symlink());
    let gone = manager.systemctl().show("web.service").await.unwrap();
    assert_eq!(
        (
            gone.load_state.as_str(),
            gone.active_state.as_str(),
            gone.main_pid
        ),
        ("not-found", "inactive", 0)
    );
}

#[tokio::test]
async fn the_seed_example_runs_through_a_real_user_manager() {
    let Some(manager) = user_manager().await else {
        return;
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let state = tempfile::tempdir().unwrap();
    let controller = UnitController::new(
        "n1",
        manager.unit_dir(),
        state.path(),
        client.clone(),
        manager.systemctl(),
    );
    let text = include_str!("../../../examples/system/indexer.textproto");
    let mut object = rubeapi::text::parse_object(&rubeapi::Registry::builtin(), text).unwrap();
    object
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("node".into(), "n1".into());
    let object = put(&client, object).await;
    let k = key("system", "indexer");
    let rounds = converge(&controller, &k, Some(&object)).await;
    // enabled: false, so no enable; the start runs and its job fails (echo writes no
    // /blablabla/pid), which is the unit's state, reported, not a controller error.
    assert_eq!(
        shape(&rounds),
        [vec!["write", "reload", "start"], vec!["status"]]
    );
    let s = status(&client, "indexer").await;
    eprintln!("real systemd: the seed's indexer.service is {s:?}");
    assert_eq!(s.load_state, "loaded");
    assert_eq!(s.unit_file_state, "disabled");
    // Its Restart=on-failure with RestartSec=60: systemd waits to try again.
    assert_eq!(
        (s.active_state.as_str(), s.sub_state.as_str()),
        ("activating", "auto-restart"),
        "{s:?}"
    );
    let rounds = converge(&controller, &k, None).await;
    assert_eq!(
        shape(&rounds).first().map(|r| r.contains(&"remove")),
        Some(true)
    );
    assert!(!manager.unit_dir().join("indexer.service").exists());
}
