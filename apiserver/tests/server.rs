//! The server as an operator sees it: /metrics and /healthz, and a graceful stop on SIGTERM
//! with watches open.

use std::sync::Arc;
use std::time::Duration;

use apiserver::metrics::Metrics;
use apiserver::testing::{ServerProcess, TestServer};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rubeapi::Client;
use rubeapi::object;
use rubeapi::rube::Selector;
use rubeapi::runink::Herd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_code_and_show_the_revision() {
    let server = TestServer::start().await;
    let metrics = Arc::new(Metrics::new());
    // A second service over the same store, with metrics we can read.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(apiserver::serve(
        listener,
        server.pki.serving(&[]).unwrap(),
        server.store.clone(),
        rubeapi::Registry::builtin(),
        Default::default(),
        metrics.clone(),
        std::future::pending(),
    ));
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(apiserver::serve_metrics(
        http,
        server.store.clone(),
        metrics.clone(),
        std::future::pending(),
    ));

    let config = rubeapi::rube::ClientConfig {
        server: addr.to_string(),
        ..server.config().clone()
    };
    let client = Client::connect(&config).await.unwrap();
    client
        .put(object::new("", "a", &Herd::default()), None)
        .await
        .unwrap();
    // The last write's revision: the store's (the built-in RBAC objects took the first ones).
    let last = client
        .put(object::new("", "b", &Herd::default()), None)
        .await
        .unwrap()
        .object
        .unwrap()
        .metadata
        .unwrap()
        .revision;
    client.get("runink.Herd", "", "missing").await.unwrap_err();
    let watch = client.watch(Selector::default(), None).await.unwrap();
    futures::pin_mut!(watch);
    watch.next().await.unwrap().unwrap();

    let response = http_get(http_addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    for line in [
        "rube_apiserver_requests_total{method=\"Put\",code=\"Ok\"} 2",
        "rube_apiserver_requests_total{method=\"Get\",code=\"NotFound\"} 1",
        "rube_apiserver_request_duration_seconds_count{method=\"Put\"} 2",
        "rube_apiserver_watches 1",
        format!("rube_store_revision {last}").as_str(),
        "rube_store_compacted_revision 0",
    ] {
        assert!(
            response.lines().any(|l| l == line),
            "missing `{line}` in:\n{response}"
        );
    }
    let health = http_get(http_addr, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.0 200 OK") && health.ends_with("ok\n"),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_promptly_even_with_watches_open() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut server = ServerProcess::start(
        env!("CARGO_BIN_EXE_rube-apiserver"),
        &["--metrics-listen", "127.0.0.1:0", "--data-dir", data_dir],
    );
    let client = Client::connect(&server.config()).await.unwrap();
    let watch = client.watch(Selector::default(), None).await.unwrap();
    futures::pin_mut!(watch);
    watch.next().await.unwrap().unwrap();

    kill(Pid::from_raw(server.pid() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    let status = status.expect("rube-apiserver stops within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
    // The watch ended rather than hanging.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .is_ok()
    );
}
