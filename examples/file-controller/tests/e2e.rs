//! The example controller as a user runs it: its own binary against a real apiserver. It
//! registers its type, writes the files of objects bound to its node (and only those), reports
//! status, follows changes and removes files of deleted objects, also ones deleted while it was
//! not running.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apiserver::testing::TestServer;
use file_controller::files::{File, FileStatus};
use prost::Name;
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: &TestServer, node: &str, root: &Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_file-controller"))
            .arg("--config")
            .arg(server.config_path())
            .args(["--node", node, "--root"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start file-controller"),
    )
}

fn file(name: &str, node: &str, path: &str, content: &str) -> rubeapi::rube::Object {
    let spec = File {
        path: path.into(),
        content: content.into(),
        mode: 0o640,
    };
    let mut o = object::new("system", name, &spec);
    o.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("node".into(), node.into());
    o
}

/// Polls `check` for up to 10 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn status(client: &Client, name: &str) -> Option<FileStatus> {
    client
        .get(&File::full_name(), "system", name)
        .await
        .ok()?
        .status_as::<FileStatus>()
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_controller_keeps_its_nodes_files() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let running = start(&server, "n1", root.path());

    // It registers its own type.
    eventually("the type", async || {
        client
            .registry()
            .await
            .ok()?
            .kind(&File::full_name())
            .ok()
            .map(|_| ())
    })
    .await;

    client
        .put(file("motd", "n1", "/etc/motd", "hello\n"), None)
        .await
        .unwrap();
    client
        .put(file("other", "n2", "/etc/other", "not mine\n"), None)
        .await
        .unwrap();
    let written = root.path().join("etc/motd");
    let status1 = eventually("the status", async || {
        status(&client, "motd").await.filter(|s| s.written)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "hello\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(status1.observed_generation, 1);
    assert_eq!(status1.sha256.len(), 64);
    assert!(
        !root.path().join("etc/other").exists(),
        "another node's object was acted on"
    );

    // A change of content is followed.
    client
        .put(file("motd", "n1", "/etc/motd", "changed\n"), None)
        .await
        .unwrap();
    eventually("generation 2 in status", async || {
        status(&client, "motd")
            .await
            .filter(|s| s.observed_generation == 2)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "changed\n");

    // A delete removes the file.
    client
        .delete(&File::full_name(), "system", "motd", None)
        .await
        .unwrap();
    eventually("the file removed", async || {
        (!written.exists()).then_some(())
    })
    .await;

    // Deleted while the controller is down: cleaned up at its next start.
    client
        .put(file("later", "n1", "/etc/later", "x\n"), None)
        .await
        .unwrap();
    let later = root.path().join("etc/later");
    eventually("the second file", async || later.exists().then_some(())).await;
    drop(running);
    client
        .delete(&File::full_name(), "system", "later", None)
        .await
        .unwrap();
    let _running = start(&server, "n1", root.path());
    eventually(
        "the file of an object deleted while down removed",
        async || (!later.exists()).then_some(()),
    )
    .await;
}
