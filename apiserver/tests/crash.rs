//! Durability: SIGKILL the real `rube-apiserver` binary while clients put, restart it on the same
//! data dir, and check that every acknowledged put is there and revisions never go backwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::testing::{ServerProcess, assert_acknowledged_writes, numbered_write};
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::Selector;

fn start(dir: &std::path::Path) -> ServerProcess {
    let dir = dir.to_str().expect("utf-8 temp dir");
    ServerProcess::start(
        env!("CARGO_BIN_EXE_rube-apiserver"),
        &["--metrics-listen", "off", "--data-dir", dir],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_sigkill_and_revisions_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    // name -> (revision, n) of the last acknowledged put.
    let acked: Arc<Mutex<HashMap<String, (u64, u64)>>> = Arc::default();
    let mut highest_seen = 0;
    for round in 0..3 {
        let mut server = start(dir.path());
        let client = Client::connect(&server.config()).await.unwrap();
        let listing = client.list(Selector::default()).await.unwrap();
        assert!(
            listing.revision >= highest_seen,
            "round {round}: revision went back from {highest_seen} to {}",
            listing.revision
        );
        let snapshot = acked.lock().unwrap().clone();
        assert_acknowledged_writes(&client, "crash", &snapshot).await;

        let mut writers = Vec::new();
        for w in 0..8 {
            let client = client.clone();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let name = format!("w{w}");
                for n in (round * 1_000_000)..u64::MAX {
                    match client.put(numbered_write("crash", &name, n), None).await {
                        Ok(r) => {
                            let revision = r.object.unwrap().revision();
                            acked.lock().unwrap().insert(name.clone(), (revision, n));
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 200 * round)).await;
        server.kill();
        for writer in writers {
            writer.await.unwrap();
        }
        highest_seen = acked
            .lock()
            .unwrap()
            .values()
            .map(|(r, _)| *r)
            .max()
            .unwrap();
        assert!(highest_seen > 0, "no put was acknowledged in round {round}");
    }
    // A last restart: everything acknowledged is there, and the next put continues above it.
    let server = start(dir.path());
    let client = Client::connect(&server.config()).await.unwrap();
    let snapshot = acked.lock().unwrap().clone();
    for (name, (revision, _)) in &snapshot {
        assert!(
            client
                .get("runink.Slice", "crash", name)
                .await
                .unwrap()
                .revision()
                >= *revision
        );
    }
    let next = client
        .put(numbered_write("crash", "after", 0), None)
        .await
        .unwrap()
        .object
        .unwrap();
    assert!(next.revision() > highest_seen);
}
