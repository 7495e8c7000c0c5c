//! Property test: random operation sequences give the same answers and the same watch history
//! on sqlite as on the in-memory reference model.

use apiserver::store::conformance::model::{self, Op};
use apiserver::store::etcd::{EtcdOptions, EtcdStore};
use apiserver::store::hub::WatchOptions;
use apiserver::store::mem::MemStore;
use apiserver::store::sqlite::{SqliteOptions, SqliteStore};
use apiserver::testing::Etcd;
use proptest::prelude::*;
use rubeapi::Registry;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_agrees_with_the_model(ops in proptest::collection::vec(model::op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (expected, actual) = runtime.block_on(async {
            let mem = MemStore::new(Registry::builtin(), WatchOptions::default());
            let expected = model::run(&mem, &ops).await;
            let dir = tempfile::tempdir().unwrap();
            let sqlite = SqliteStore::open(dir.path(), Registry::builtin(), SqliteOptions::default()).unwrap();
            let actual = model::run(&sqlite, &ops).await;
            (expected, actual)
        });
        prop_assert_eq!(expected, actual);
    }
}

/// etcd commits an Apply as one transaction, so its changes share one revision; sequences
/// here leave out batches of several objects, whose revisions differ on purpose elsewhere. One
/// etcd serves every case, each under its own key prefix.
#[test]
fn etcd_agrees_with_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = runtime.block_on(Etcd::start());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&proptest::collection::vec(model::op(), 1..40), |ops| {
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| !matches!(op, Op::Batch { .. }))
            .collect();
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (expected, actual) = runtime.block_on(async {
            let mem = MemStore::new(Registry::builtin(), WatchOptions::default());
            let expected = model::run(&mem, &ops).await;
            let options = EtcdOptions {
                endpoints: etcd.endpoints(),
                prefix: format!("/model-{case}"),
            };
            let store = EtcdStore::connect(options, Registry::builtin())
                .await
                .unwrap();
            let actual = model::run(&store, &ops).await;
            (expected, actual)
        });
        prop_assert_eq!(expected, actual);
        Ok(())
    });
    drop(etcd);
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The generator is not trivial: a fixed sequence exercises conflicts, batches and compaction.
#[test]
fn the_model_run_reports_what_happened() {
    use model::Pre;
    let ops = vec![
        Op::Put {
            at: 0,
            command: 0,
            label: 0,
            pre: Pre::Absent,
        },
        Op::Put {
            at: 0,
            command: 1,
            label: 0,
            pre: Pre::Stale,
        },
        Op::Batch {
            first: 1,
            second: 0,
            command: 0,
        },
        Op::Status {
            at: 0,
            pid: 2,
            pre: Pre::Current,
        },
        Op::Compact { back: 0 },
        Op::Delete {
            at: 0,
            pre: Pre::None,
        },
        Op::Get { at: 0 },
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let out = runtime.block_on(async {
        let mem = MemStore::new(Registry::builtin(), WatchOptions::default());
        model::run(&mem, &ops).await
    });
    assert!(out[0].starts_with("Created a/x"), "{out:?}");
    assert!(
        out[1].starts_with("conflict on runink.Slice a/x, found Some(1)"),
        "{out:?}"
    );
    assert!(
        out[2].starts_with("batch[1]: runink.Slice a/x exists at #1"),
        "{out:?}"
    );
    assert!(
        out[3].starts_with("Updated a/x spec=Some(\"run 0\") status=Some(2)"),
        "{out:?}"
    );
    assert_eq!(out[4], "compacted to #2");
    assert!(out[5].starts_with("Deleted a/x"), "{out:?}");
    assert_eq!(out[6], "runink.Slice a/x not found");
    assert_eq!(out[7], "event delete x #3");
    assert_eq!(out[8], "3 changes");
}
