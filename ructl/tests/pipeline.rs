//! `ructl pipeline` end to end: the real binary against a real apiserver.

use std::process::Command;

use apiserver::testing::TestServer;
use rubeapi::object::{self, ObjectExt};
use rubeapi::runink::Pipeline;

const WORDCOUNT: &str = include_str!("../../examples/analytics/wordcount.textproto");

fn ructl(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ructl"))
        .arg("--config")
        .arg(server.config_path())
        .args(args)
        .output()
        .expect("run ructl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn spec(server: &TestServer) -> Pipeline {
    let client = server.client().await;
    client
        .get("runink.Pipeline", "analytics", "wordcount")
        .await
        .unwrap()
        .spec_as()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_retry_pause_and_resume_edit_the_spec_and_status_shows_the_dag() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let registry = client.registry().await.unwrap();
    for o in rubeapi::text::parse_objects(&registry, WORDCOUNT).unwrap() {
        client.put(o, None).await.unwrap();
    }
    let (code, out, err) = ructl(
        &server,
        &["pipeline", "skip", "-n", "analytics", "wordcount", "stats"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("pipeline analytics/wordcount: step 'stats' will be skipped"),
        "{out}"
    );
    let (code, _, err) = ructl(
        &server,
        &[
            "pipeline",
            "retry",
            "-n",
            "analytics",
            "wordcount",
            "report",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ructl(
        &server,
        &["pipeline", "pause", "-n", "analytics", "wordcount"],
    );
    assert_eq!(code, 0, "{err}");
    let s = spec(&server).await;
    assert!(s.steps[2].skip && s.paused);
    assert_eq!(s.steps[3].retry_requests, 1);
    let (code, _, err) = ructl(
        &server,
        &["pipeline", "resume", "-n", "analytics", "wordcount"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!spec(&server).await.paused);

    let (code, _, err) = ructl(
        &server,
        &["pipeline", "skip", "-n", "analytics", "wordcount", "nope"],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: no step 'nope' in this pipeline (steps: fetch, split, stats, report)"
    );

    let (code, out, err) = ructl(
        &server,
        &["pipeline", "status", "-n", "analytics", "wordcount"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "pipeline analytics/wordcount BATCH - (generation 5, observed 0)"
    );
    assert_eq!(
        lines[4], "stats   - (skip)  0         -     -      fetch",
        "{out}"
    );
    let (code, out, err) = ructl(
        &server,
        &[
            "pipeline",
            "status",
            "-n",
            "analytics",
            "wordcount",
            "-o",
            "dot",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"split\" -> \"report\";"), "{out}");
    // The spec is otherwise untouched: the object still round-trips through admission.
    let o = client
        .get("runink.Pipeline", "analytics", "wordcount")
        .await
        .unwrap();
    client
        .put(
            object::new("analytics", "copy", &o.spec_as::<Pipeline>().unwrap()),
            None,
        )
        .await
        .unwrap();
}
