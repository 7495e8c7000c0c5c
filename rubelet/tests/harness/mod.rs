//! The rubelet's test harness: a real `rube-apiserver` process on a fixed loopback port with a
//! data dir that outlives it (so it can be killed and restarted at the same address), and real
//! `rubelet` processes, each with its own name, state dir and cgroup subtree. Everything is
//! killed, and every cgroup removed, when dropped.

#![allow(dead_code)]

use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::SliceStatus;

pub const SLICE: &str = "runink.Slice";
pub const HERD: &str = "analytics";

/// Whether this process may make cgroups and namespaces; tests that need it say loudly why
/// they skip otherwise. CI runs as root.
pub fn root_or_skip(test: &str) -> bool {
    rubeapi::testing::root_or_skip(test)
}

fn target_dir() -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// The `rube-apiserver` binary cargo built next to this test.
pub fn apiserver_bin() -> PathBuf {
    let bin = target_dir().join("rube-apiserver");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or build it: cargo build -p apiserver)",
        bin.display()
    );
    bin
}

/// The `ructl` binary cargo built next to this test.
pub fn ructl_bin() -> PathBuf {
    let bin = target_dir().join("ructl");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or build it: cargo build -p ructl)",
        bin.display()
    );
    bin
}

/// Runs `ructl --config CONFIG ARGS...`; returns (success, stdout, stderr).
pub fn ructl(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(ructl_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ructl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Reads the child's first stdout line, `listening on ADDR`; `log` explains a failure.
fn listening(child: &mut Child, what: &str, log: impl Fn() -> String) -> String {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{what} did not start: {line:?}\n{}", log()))
        .to_owned()
}

/// A real apiserver that can be killed and started again at the same address.
pub struct Apiserver {
    pub addr: String,
    data: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl Apiserver {
    pub fn start(args: &[&str]) -> Apiserver {
        let mut server = Apiserver {
            addr: format!("127.0.0.1:{}", free_port()),
            data: tempfile::tempdir().expect("temp dir"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts it (again) on the same address and data dir.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = Command::new(apiserver_bin())
            .args([
                "--listen",
                &self.addr,
                "--metrics-listen",
                "off",
                "--data-dir",
            ])
            .arg(self.data.path())
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rube-apiserver");
        listening(&mut child, "rube-apiserver", String::new);
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The admin's client configuration the apiserver wrote in its data dir.
    pub fn config_path(&self) -> PathBuf {
        self.data.path().join(rubeapi::config::ADMIN_FILE)
    }

    pub async fn client(&self) -> Client {
        let config = rubeapi::config::load(&self.config_path()).expect("the admin configuration");
        Client::connect(&config)
            .await
            .expect("connect to the apiserver")
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a rubelet joins the apiserver whose admin configuration is `admin_config`, as a real
/// node does: the server's address, the join token of its data dir, and the cluster
/// controllers' credential (for the pipeline controller's election).
pub fn join_args(admin_config: &Path) -> Vec<String> {
    let data = admin_config.parent().expect("the apiserver's data dir");
    let config = rubeapi::config::load(admin_config).expect("the admin configuration");
    let token = std::fs::read_to_string(data.join(rubeapi::config::TOKEN_FILE))
        .expect("the apiserver's join token");
    vec![
        "--server".into(),
        config.server,
        "--token".into(),
        token.trim().to_owned(),
        "--controller-config".into(),
        data.join(rubeapi::config::CONTROLLERS_FILE)
            .display()
            .to_string(),
    ]
}

/// A real rubelet process.
pub struct Rubelet {
    pub name: String,
    pub state: tempfile::TempDir,
    pub subtree: String,
    config: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Rubelet {
    /// Starts `rubelet --name NAME --config CONFIG` with fast renewals and a short kill grace.
    pub fn start(name: &str, config: &Path, args: &[&str]) -> Rubelet {
        // Unique per rubelet: tests of one binary run in parallel with the same process id and
        // often the same node names, and a rubelet sweeps its subtree of what it does not know.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subtree = format!("rube-test-{name}-{}-{n}", std::process::id());
        Rubelet::start_in(&subtree, name, config, args)
    }

    /// As [`Rubelet::start`], in the cgroup subtree `subtree`. Tests of one binary run in
    /// parallel, and two rubelets of the same name must not share a subtree: each sweeps and
    /// finally removes everything in its own.
    pub fn start_in(subtree: &str, name: &str, config: &Path, args: &[&str]) -> Rubelet {
        let state = tempfile::tempdir().expect("temp dir");
        let log = state.path().join("rubelet.log");
        let mut rubelet = Rubelet {
            name: name.to_owned(),
            subtree: subtree.to_owned(),
            state,
            config: config.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            log,
        };
        rubelet.restart();
        rubelet
    }

    /// Starts it (again) with the same name, state dir and cgroup subtree.
    pub fn restart(&mut self) {
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("rubelet log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rubelet"))
            .args(["--name", &self.name])
            .args(join_args(&self.config))
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--listen", "127.0.0.1:0", "--renew-interval", "200ms"])
            .args(["--cgroup-subtree", &self.subtree, "--kill-grace", "1s"])
            .args(&self.args)
            .env("RUST_LOG", "info,controllers=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start rubelet");
        let path = self.log.clone();
        listening(&mut child, "rubelet", move || {
            std::fs::read_to_string(&path).unwrap_or_default()
        });
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up; shims and workloads are not its children to lose.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the rubelet logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rubelet {
    fn drop(&mut self) {
        self.kill9();
        // Workloads outlive the rubelet by design; the test's must not outlive the test.
        // A shim may still be finishing (removing its leaf) while this runs, so a removal can
        // race it: try again until the subtree is gone, for a few seconds.
        if let Ok(hierarchy) = cgroups::Hierarchy::detect(&self.subtree) {
            let root = cgroups::CgroupPath::root();
            for _ in 0..50 {
                let _ = hierarchy.remove(&root, Duration::from_millis(500));
                if !hierarchy.exists(&root) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("cgroup subtree {} could not be removed", self.subtree);
        }
    }
}

/// A slice for `node` running `sh -c SCRIPT`.
pub fn slice(name: &str, node: &str, script: &str) -> Object {
    rubeapi::testing::slice(HERD, name)
        .script(script)
        .node(node)
        .build()
}

pub async fn status(client: &Client, name: &str) -> Option<SliceStatus> {
    let object = client.get(SLICE, HERD, name).await.ok()?;
    object.status_as::<SliceStatus>().ok().flatten()
}

/// Polls `check` every 50 ms until it holds; fails after `within`, with `context` (say, the
/// rubelet's log).
pub async fn eventually<F, Fut>(
    what: &str,
    within: Duration,
    context: impl Fn() -> String,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n--- context ---\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to 30 s until slice `name`'s status satisfies `check`; fails with `what` and the
/// rubelet's log.
pub async fn until_status(
    client: &Client,
    rubelet: &Rubelet,
    what: &str,
    name: &str,
    check: impl Fn(&SliceStatus) -> bool,
) {
    eventually(
        what,
        Duration::from_secs(30),
        || rubelet.log(),
        || async { status(client, name).await.is_some_and(|s| check(&s)) },
    )
    .await;
}
