//! Audit: every call that changes something leaves one structured line (JSON with
//! `--log-format json`) naming who, the method, the objects, the revision and the outcome, and
//! never a spec's content.

use apiserver::testing::ServerProcess;
use rubeapi::Client;
use rubeapi::runink::Slice;

/// The audit lines in `log`, parsed.
fn audit_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "rube::audit")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_refusals_leave_audit_lines_with_who_what_and_how() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("apiserver.log");
    let data = dir.path().join("data");
    let server = ServerProcess::start_logging(
        env!("CARGO_BIN_EXE_rube-apiserver"),
        &[
            "--metrics-listen",
            "off",
            "--log-format",
            "json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Some(&log),
    );
    let admin = server.client().await.unwrap();
    let secret_command = "echo do-not-log-me";
    let slice = rubeapi::testing::slice("herd", "s")
        .command(secret_command)
        .build();
    let written = admin.put(slice, None).await.unwrap();
    let revision = written.object.unwrap().metadata.unwrap().revision;
    admin
        .get(&<Slice as prost::Name>::full_name(), "herd", "s")
        .await
        .unwrap();

    // A user of the same CA without any binding.
    let pki = apiserver::pki::Pki::open(&data.join("tls")).unwrap();
    let (cert_pem, key_pem) = pki
        .issue_client("mallory", None, std::time::Duration::from_secs(3600))
        .unwrap();
    let mallory = Client::connect(&rubeapi::rube::ClientConfig {
        cert_pem,
        key_pem,
        ..server.config()
    })
    .await
    .unwrap();
    mallory
        .delete(&<Slice as prost::Name>::full_name(), "herd", "s", None)
        .await
        .unwrap_err();

    // The lines are written as the calls end; give the process a moment to flush.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = audit_lines(&log);
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let fields = |v: &serde_json::Value| v["fields"].clone();
    assert_eq!(
        lines.len(),
        2,
        "one line per write, none for the get: {lines:#?}"
    );
    let put = fields(&lines[0]);
    assert_eq!(put["user"], "admin");
    assert_eq!(put["groups"], "rube:admins");
    assert_eq!(put["method"], "Put");
    assert_eq!(put["objects"], "runink.Slice herd/s");
    assert_eq!(put["revision"], revision);
    assert_eq!(put["code"], "Ok");
    let refused = fields(&lines[1]);
    assert_eq!(refused["user"], "mallory");
    assert_eq!(refused["method"], "Delete");
    assert_eq!(refused["code"], "PermissionDenied");
    let whole = std::fs::read_to_string(&log).unwrap();
    assert!(!whole.contains("do-not-log-me"), "a spec reached the log");
}
