//! The rubelet's readiness as systemd sees it (`Type=notify`): READY=1 only once its Node is
//! registered, not while the apiserver cannot be reached.

mod harness;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{apiserver_bin, root_or_skip};
use rubeapi::Client;

/// Every notification the rubelet sent within `wait`, joined; sooner once one holds `until`.
fn notifications(socket: &UnixDatagram, wait: Duration, until: &str) -> String {
    let deadline = Instant::now() + wait;
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buffer) {
            Ok(n) => {
                seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                seen.push('\n');
                if seen.contains(until) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    seen
}

/// Regression: the rubelet sent READY=1 before it had registered its Node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_the_node_is_registered_not_before() {
    if !root_or_skip("ready_is_sent_once_the_node_is_registered_not_before") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // The apiserver's CAs and the admin's configuration exist before it runs (as they do once
    // it has run once); the apiserver started below keeps them.
    let apiserver_dir = dir.path().join("apiserver");
    let (pki, _, config) =
        apiserver::pki::Pki::start(&apiserver_dir, &[], addr.parse().unwrap()).unwrap();
    // A node credential the operator issued (a joining rubelet would wait for the apiserver
    // before it could say anything).
    let (cert_pem, key_pem) = pki
        .issue_client(
            "rube:node:ready-1",
            Some("rube:nodes"),
            apiserver::pki::LEAF_VALIDITY,
        )
        .unwrap();
    let config_path = dir.path().join("node.conf");
    rubeapi::config::save(
        &config_path,
        &rubeapi::rube::ClientConfig {
            cert_pem,
            key_pem,
            ..config.clone()
        },
    )
    .unwrap();
    let subtree = format!("rube-test-ready-{}", std::process::id());
    let mut rubelet = Command::new(env!("CARGO_BIN_EXE_rubelet"))
        .args(["--name", "ready-1", "--config"])
        .arg(&config_path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--renew-interval", "200ms"])
        .args(["--cgroup-subtree", &subtree])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // No apiserver yet: the rubelet runs, says what it waits for, and is not ready.
    let before = notifications(&socket, Duration::from_secs(3), "READY=1");
    assert!(
        before.contains("STATUS=registering node ready-1"),
        "{before:?}"
    );
    assert!(
        !before.contains("READY=1"),
        "ready before registering: {before:?}"
    );

    let mut apiserver = Command::new(apiserver_bin())
        .args(["--listen", &addr, "--metrics-listen", "off", "--data-dir"])
        .arg(&apiserver_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let after = notifications(&socket, Duration::from_secs(20), "READY=1");
    let client = Client::connect(&config).await.unwrap();
    let node = client.get("rube.Node", "", "ready-1").await;
    let _ = rubelet.kill();
    let _ = rubelet.wait();
    let _ = apiserver.kill();
    let _ = apiserver.wait();
    if let Ok(hierarchy) = cgroups::Hierarchy::detect(&subtree) {
        let _ = hierarchy.remove(&cgroups::CgroupPath::root(), Duration::from_secs(1));
    }
    assert!(after.contains("READY=1"), "{after:?}");
    assert!(
        node.is_ok(),
        "READY=1 came before the Node existed: {node:?}"
    );
}
