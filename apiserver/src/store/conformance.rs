//! The conformance suite: what every `Store` backend must do, checked through the trait alone.
//!
//! Each check takes a fresh, empty store. Revisions are only assumed to increase, not to be
//! dense, so backends whose revisions are shared with others (etcd) pass too. Use
//! [`conformance_tests!`](crate::conformance_tests) to get one `#[tokio::test]` per check.

use std::time::Duration;

use futures::StreamExt;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Outcome, WatchEvent, watch_event};
use rubeapi::runink::{Slice, SliceStatus};
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use super::{Expect, Key, Op, PutOp, Revision, Store, WatchStream};
use crate::Error;

/// A slice `name` in namespace `ns` whose spec carries `command`.
pub fn slice(ns: &str, name: &str, command: &str) -> Object {
    rubeapi::testing::slice(ns, name).command(command).build()
}

fn with_labels(mut object: Object, labels: &[(&str, &str)]) -> Object {
    let metadata = object.metadata.as_mut().expect("metadata");
    for (k, v) in labels {
        metadata.labels.insert((*k).into(), (*v).into());
    }
    object
}

fn op(object: Object) -> PutOp {
    PutOp {
        object,
        expect: None,
    }
}

async fn put<S: Store>(store: &S, object: Object) -> Object {
    let mut written = store.apply(vec![op(object)]).await.expect("put");
    written.remove(0).object
}

fn slices() -> Filter {
    Filter {
        type_name: "runink.Slice".into(),
        ..Default::default()
    }
}

fn key(ns: &str, name: &str) -> Key {
    Key::new("runink.Slice", ns, name)
}

/// (kind, name, revision) of a change; bookmarks are left out.
pub type Change = (&'static str, String, Revision);

async fn next_change(stream: &mut WatchStream) -> Change {
    loop {
        let event: WatchEvent = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("no error");
        match event.event.expect("an event") {
            watch_event::Event::Update(o) => return ("update", o.name().to_owned(), o.revision()),
            watch_event::Event::Delete(o) => return ("delete", o.name().to_owned(), o.revision()),
            watch_event::Event::Bookmark(_) => {}
        }
    }
}

async fn changes(stream: &mut WatchStream, n: usize) -> Vec<Change> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(next_change(stream).await);
    }
    seen
}

pub async fn put_get_list_delete<S: Store>(store: &S) {
    let a = put(store, slice("a", "one", "x")).await;
    put(store, slice("a", "two", "y")).await;
    put(store, slice("b", "one", "z")).await;
    assert_eq!(store.get(key("a", "one")).await.unwrap(), a);
    let names = |objects: Vec<Object>| objects.iter().map(|o| o.display_name()).collect::<Vec<_>>();
    let all = store.list(slices()).await.unwrap();
    assert_eq!(names(all.objects), ["a/one", "a/two", "b/one"]);
    let in_a = Filter {
        namespace: "a".into(),
        ..slices()
    };
    assert_eq!(
        names(store.list(in_a).await.unwrap().objects),
        ["a/one", "a/two"]
    );
    let named = Filter {
        name: "one".into(),
        ..slices()
    };
    assert_eq!(
        names(store.list(named).await.unwrap().objects),
        ["a/one", "b/one"]
    );
    let other_type = Filter {
        type_name: "runink.Herd".into(),
        ..Default::default()
    };
    assert!(store.list(other_type).await.unwrap().objects.is_empty());

    let deleted = store.delete(key("a", "one"), None).await.unwrap();
    assert_eq!(deleted.outcome, Outcome::Deleted);
    assert!(deleted.object.revision() > all.revision);
    assert_eq!(
        store.get(key("a", "one")).await,
        Err(Error::NotFound {
            key: key("a", "one")
        })
    );
    assert_eq!(
        store.delete(key("a", "one"), None).await,
        Err(Error::NotFound {
            key: key("a", "one")
        })
    );
    assert_eq!(
        store.list(slices()).await.unwrap().revision,
        deleted.object.revision()
    );
}

pub async fn revisions_and_generation<S: Store>(store: &S) {
    let v1 = put(store, slice("a", "s", "one")).await;
    let m1 = v1.metadata.clone().unwrap();
    assert_eq!((m1.create_revision, m1.generation), (m1.revision, 1));
    assert!(!m1.uid.is_empty());

    let v2 = put(store, slice("a", "s", "two")).await;
    let m2 = v2.metadata.clone().unwrap();
    assert!(m2.revision > m1.revision);
    assert_eq!(
        (m2.create_revision, m2.generation, &m2.uid),
        (m1.revision, 2, &m1.uid)
    );

    let v3 = put(
        store,
        with_labels(slice("a", "s", "two"), &[("tier", "web")]),
    )
    .await;
    let m3 = v3.metadata.clone().unwrap();
    assert!(m3.revision > m2.revision);
    assert_eq!(m3.generation, 2, "labels are not the spec");

    let same = store
        .apply(vec![op(with_labels(
            slice("a", "s", "two"),
            &[("tier", "web")],
        ))])
        .await
        .unwrap();
    assert_eq!(same[0].outcome, Outcome::Unchanged);
    assert_eq!(same[0].object, v3);
    assert_eq!(store.revision().await.unwrap().revision, m3.revision);

    store.delete(key("a", "s"), None).await.unwrap();
    let again = put(store, slice("a", "s", "one")).await.metadata.unwrap();
    assert_eq!(again.generation, 1);
    assert_ne!(again.uid, m1.uid, "a re-created object is a new object");
    assert_eq!(again.create_revision, again.revision);
}

pub async fn preconditions_are_compare_and_swap<S: Store>(store: &S) {
    let v1 = put(store, slice("a", "s", "one")).await;
    let r1 = v1.revision();
    let exists = store
        .apply(vec![PutOp {
            object: slice("a", "s", "two"),
            expect: Some(Expect::Absent),
        }])
        .await;
    assert_eq!(
        exists,
        Err(Error::AlreadyExists {
            key: key("a", "s"),
            revision: r1
        })
    );
    let stale = store
        .apply(vec![PutOp {
            object: slice("a", "s", "two"),
            expect: Some(Expect::Revision(r1 + 1000)),
        }])
        .await;
    assert_eq!(
        stale,
        Err(Error::Conflict {
            key: key("a", "s"),
            expected: r1 + 1000,
            actual: Some(r1)
        })
    );
    let missing = store
        .apply(vec![PutOp {
            object: slice("a", "t", "x"),
            expect: Some(Expect::Revision(r1)),
        }])
        .await;
    assert_eq!(
        missing,
        Err(Error::Conflict {
            key: key("a", "t"),
            expected: r1,
            actual: None
        })
    );
    assert_eq!(
        store
            .delete(key("a", "s"), Some(Expect::Revision(r1 + 1000)))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Aborted
    );
    // Nothing changed.
    assert_eq!(store.get(key("a", "s")).await.unwrap(), v1);
    assert_eq!(store.revision().await.unwrap().revision, r1);

    let v2 = store
        .apply(vec![PutOp {
            object: slice("a", "s", "two"),
            expect: Some(Expect::Revision(r1)),
        }])
        .await
        .unwrap();
    assert_eq!(v2[0].outcome, Outcome::Updated);
    let created = store
        .apply(vec![PutOp {
            object: slice("a", "t", "x"),
            expect: Some(Expect::Absent),
        }])
        .await
        .unwrap();
    assert_eq!(created[0].outcome, Outcome::Created);
    let r2 = v2[0].object.revision();
    assert_eq!(
        store
            .delete(key("a", "s"), Some(Expect::Revision(r2)))
            .await
            .unwrap()
            .outcome,
        Outcome::Deleted
    );
}

pub async fn status_is_separate_from_spec<S: Store>(store: &S) {
    let status = object::pack(&SliceStatus {
        pid: 7,
        ..Default::default()
    });
    assert_eq!(
        store
            .update_status(key("a", "s"), status.clone(), None)
            .await,
        Err(Error::NotFound { key: key("a", "s") })
    );
    let v1 = put(store, slice("a", "s", "one")).await;
    let v2 = store
        .update_status(key("a", "s"), status.clone(), None)
        .await
        .unwrap();
    assert_eq!(v2.outcome, Outcome::Updated);
    assert!(v2.object.revision() > v1.revision());
    assert_eq!(v2.object.metadata.as_ref().unwrap().generation, 1);
    assert_eq!(v2.object.spec, v1.spec);
    let same = store
        .update_status(key("a", "s"), status.clone(), None)
        .await
        .unwrap();
    assert_eq!(same.outcome, Outcome::Unchanged);
    assert_eq!(same.object.revision(), v2.object.revision());
    let stale = store
        .update_status(
            key("a", "s"),
            status.clone(),
            Some(Expect::Revision(v1.revision())),
        )
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    let v3 = put(store, slice("a", "s", "two")).await;
    assert_eq!(v3.status, Some(status), "a spec put keeps the status");
}

pub async fn apply_is_all_or_nothing<S: Store>(store: &S) {
    put(store, slice("a", "taken", "x")).await;
    let before = store.revision().await.unwrap().revision;
    let result = store
        .apply(vec![
            op(slice("a", "new-1", "a")),
            PutOp {
                object: slice("a", "taken", "b"),
                expect: Some(Expect::Absent),
            },
            op(slice("a", "new-2", "c")),
        ])
        .await;
    match result {
        Err(Error::InBatch {
            index,
            count,
            source,
            ..
        }) => {
            assert_eq!((index, count), (1, 3));
            assert!(matches!(*source, Error::AlreadyExists { .. }), "{source}");
        }
        other => panic!("expected InBatch, got {other:?}"),
    }
    assert_eq!(store.revision().await.unwrap().revision, before);
    assert!(store.get(key("a", "new-1")).await.is_err());

    let written = store
        .apply(vec![
            op(slice("a", "new-1", "a")),
            op(slice("a", "new-2", "c")),
            op(slice("a", "new-1", "b")),
        ])
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = written.iter().map(|w| w.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Created, Outcome::Created, Outcome::Updated]
    );
    let stored = store.get(key("a", "new-1")).await.unwrap();
    assert_eq!(
        stored.spec_as::<Slice>().unwrap().command,
        "b",
        "later puts in a batch see earlier ones"
    );
    assert_eq!(stored.metadata.unwrap().generation, 2);
}

pub async fn transact_mixes_ops_all_or_nothing_and_checks_guard<S: Store>(store: &S) {
    let a = put(store, slice("t", "a", "x")).await;
    put(store, slice("t", "b", "x")).await;
    let status = object::pack(&SliceStatus {
        message: "seen".into(),
        ..Default::default()
    });
    // A check that no longer holds fails the whole transaction.
    let before = store.revision().await.unwrap().revision;
    let stale = store
        .transact(vec![
            Op::Check {
                key: key("t", "a"),
                expect: Expect::Revision(a.revision() + 100),
            },
            Op::Put(op(slice("t", "c", "y"))),
            Op::Delete {
                key: key("t", "b"),
                expect: None,
            },
        ])
        .await;
    assert!(
        matches!(&stale, Err(Error::InBatch { index: 0, count: 3, source, .. }) if matches!(**source, Error::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(store.revision().await.unwrap().revision, before);
    assert!(
        store.get(key("t", "b")).await.is_ok(),
        "nothing was applied"
    );

    let written = store
        .transact(vec![
            Op::Check {
                key: key("t", "a"),
                expect: Expect::Revision(a.revision()),
            },
            Op::Check {
                key: key("t", "nobody"),
                expect: Expect::Absent,
            },
            Op::Put(op(slice("t", "c", "y"))),
            Op::Status {
                key: key("t", "c"),
                status: status.clone(),
                expect: None,
            },
            Op::Delete {
                key: key("t", "b"),
                expect: None,
            },
        ])
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = written.iter().map(|w| w.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Unchanged,
            Outcome::Unchanged,
            Outcome::Created,
            Outcome::Updated,
            Outcome::Deleted
        ]
    );
    let c = store.get(key("t", "c")).await.unwrap();
    assert_eq!(c.status, Some(status), "later ops see earlier ones");
    assert!(store.get(key("t", "b")).await.is_err());
    assert_eq!(
        store.get(key("t", "a")).await.unwrap().revision(),
        a.revision()
    );
}

/// Records a mixed history and returns its changes in order.
async fn history<S: Store>(store: &S) -> Vec<Change> {
    let mut seen = Vec::new();
    for i in 0..12 {
        let o = put(store, slice("a", &format!("s{}", i % 4), &format!("v{i}"))).await;
        seen.push(("update", o.name().to_owned(), o.revision()));
        if i % 5 == 4 {
            let d = store
                .delete(key("a", &format!("s{}", i % 4)), None)
                .await
                .unwrap();
            seen.push(("delete", d.object.name().to_owned(), d.object.revision()));
        }
    }
    let status = object::pack(&SliceStatus {
        pid: 1,
        ..Default::default()
    });
    let s = store
        .update_status(key("a", "s3"), status, None)
        .await
        .unwrap();
    seen.push(("update", "s3".into(), s.object.revision()));
    seen
}

pub async fn watch_replays_every_change_after_a_revision_exactly_once_in_order<S: Store>(
    store: &S,
) {
    let start = store.revision().await.unwrap().revision;
    let mut seen = history(store).await;
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "revisions increase: {seen:?}"
    );
    let mut froms: Vec<Revision> = seen.iter().map(|c| c.2).collect();
    froms.insert(0, start);
    for from in froms {
        let mut stream = store
            .watch(slices(), Some(from), CancellationToken::new())
            .await
            .unwrap();
        let want: Vec<Change> = seen.iter().filter(|c| c.2 > from).cloned().collect();
        assert_eq!(
            changes(&mut stream, want.len()).await,
            want,
            "from revision {from}"
        );
        // Then live, and nothing replayed twice.
        let live = put(store, slice("a", "live", &format!("after {from}"))).await;
        assert_eq!(
            next_change(&mut stream).await,
            ("update", "live".into(), live.revision())
        );
        let gone = store
            .delete(key("a", "live"), None)
            .await
            .unwrap()
            .object
            .revision();
        assert_eq!(
            next_change(&mut stream).await,
            ("delete", "live".into(), gone)
        );
        seen.push(("update", "live".into(), live.revision()));
        seen.push(("delete", "live".into(), gone));
    }
}

pub async fn watch_from_now_starts_with_a_bookmark_then_goes_live<S: Store>(store: &S) {
    put(store, slice("a", "before", "x")).await;
    let now = store.revision().await.unwrap().revision;
    let mut stream = store
        .watch(slices(), None, CancellationToken::new())
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    match first.event {
        Some(watch_event::Event::Bookmark(b)) => assert_eq!(b.revision, now),
        other => panic!("expected a bookmark first, got {other:?}"),
    }
    let after = put(store, slice("a", "after", "x")).await;
    assert_eq!(
        next_change(&mut stream).await,
        ("update", "after".into(), after.revision())
    );
}

pub async fn watch_selects_by_namespace_name_and_labels<S: Store>(store: &S) {
    let start = store.revision().await.unwrap().revision;
    let on_w1 = Filter {
        labels: "node=w1".parse().unwrap(),
        ..slices()
    };
    let mut live = store
        .watch(on_w1.clone(), None, CancellationToken::new())
        .await
        .unwrap();
    let mut by_name = store
        .watch(
            Filter {
                namespace: "b".into(),
                name: "x".into(),
                ..slices()
            },
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let a = put(store, with_labels(slice("a", "x", "1"), &[("node", "w1")])).await;
    put(store, with_labels(slice("a", "y", "1"), &[("node", "w2")])).await;
    let moved = put(store, with_labels(slice("a", "x", "1"), &[("node", "w2")])).await;
    let y = put(store, with_labels(slice("a", "y", "2"), &[("node", "w1")])).await;
    let bx = put(store, slice("b", "x", "1")).await;
    let want = vec![
        ("update", "x".to_owned(), a.revision()),
        ("delete", "x".to_owned(), moved.revision()),
        ("update", "y".to_owned(), y.revision()),
    ];
    assert_eq!(changes(&mut live, 3).await, want);
    let mut replay = store
        .watch(on_w1.clone(), Some(start), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        changes(&mut replay, 3).await,
        want,
        "history replays the same"
    );
    assert_eq!(
        next_change(&mut by_name).await,
        ("update", "x".into(), bx.revision())
    );
    let listed: Vec<String> = store
        .list(on_w1)
        .await
        .unwrap()
        .objects
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(listed, ["y"]);
}

pub async fn compaction_makes_old_resume_points_fail<S: Store>(store: &S) {
    let seen = history(store).await;
    let middle = seen[seen.len() / 2].2;
    let done = store.compact(middle).await.unwrap();
    assert_eq!(done.compacted, middle);
    match store
        .watch(slices(), Some(middle - 1), CancellationToken::new())
        .await
    {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (middle - 1, middle)),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(mut stream) => match stream.next().await {
            Some(Err(Error::Compacted {
                requested,
                compacted,
            })) => assert_eq!((requested, compacted), (middle - 1, middle)),
            other => panic!("expected Compacted, got {other:?}"),
        },
    }
    let mut stream = store
        .watch(slices(), Some(middle), CancellationToken::new())
        .await
        .unwrap();
    let want: Vec<Change> = seen.iter().filter(|c| c.2 > middle).cloned().collect();
    assert_eq!(changes(&mut stream, want.len()).await, want);
    let current = store.revision().await.unwrap();
    assert_eq!(current.compacted, middle);
    assert!(
        store.compact(current.revision + 100).await.is_err(),
        "compacting into the future"
    );
    assert_eq!(
        store.compact(1).await.unwrap().compacted,
        middle,
        "compaction never goes back"
    );
}

pub async fn finalizers_hold_deletion<S: Store>(store: &S) {
    let mut o = slice("a", "s", "x");
    o.metadata
        .as_mut()
        .unwrap()
        .finalizers
        .push("rube.dev/cleanup".into());
    put(store, o.clone()).await;
    let marked = store.delete(key("a", "s"), None).await.unwrap();
    assert_eq!(marked.outcome, Outcome::DeletionPending);
    assert!(
        marked
            .object
            .metadata
            .as_ref()
            .unwrap()
            .deletion_timestamp
            .is_some()
    );
    let again = store.delete(key("a", "s"), None).await.unwrap();
    assert_eq!(
        (again.outcome, again.object.revision()),
        (Outcome::DeletionPending, marked.object.revision())
    );
    o.metadata.as_mut().unwrap().finalizers.clear();
    let removed = store.apply(vec![op(o)]).await.unwrap();
    assert_eq!(removed[0].outcome, Outcome::Deleted);
    assert!(store.get(key("a", "s")).await.is_err());
}

/// One `#[tokio::test]` per conformance check for a backend: `conformance_tests!(sqlite, make())`
/// where `make()` is an async expression giving a fresh store (kept alive for the test).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::conformance as c;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn put_get_list_delete() {
                let store = $make.await;
                c::put_get_list_delete(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revisions_and_generation() {
                let store = $make.await;
                c::revisions_and_generation(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn preconditions_are_compare_and_swap() {
                let store = $make.await;
                c::preconditions_are_compare_and_swap(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn status_is_separate_from_spec() {
                let store = $make.await;
                c::status_is_separate_from_spec(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apply_is_all_or_nothing() {
                let store = $make.await;
                c::apply_is_all_or_nothing(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transact_mixes_ops_all_or_nothing_and_checks_guard() {
                let store = $make.await;
                c::transact_mixes_ops_all_or_nothing_and_checks_guard(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_replays_every_change_after_a_revision_exactly_once_in_order() {
                let store = $make.await;
                c::watch_replays_every_change_after_a_revision_exactly_once_in_order(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_from_now_starts_with_a_bookmark_then_goes_live() {
                let store = $make.await;
                c::watch_from_now_starts_with_a_bookmark_then_goes_live(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_selects_by_namespace_name_and_labels() {
                let store = $make.await;
                c::watch_selects_by_namespace_name_and_labels(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compaction_makes_old_resume_points_fail() {
                let store = $make.await;
                c::compaction_makes_old_resume_points_fail(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn finalizers_hold_deletion() {
                let store = $make.await;
                c::finalizers_hold_deletion(&*store).await;
            }
        }
    };
}

/// Random operation sequences that every backend must answer exactly as [`MemStore`] does.
///
/// [`MemStore`]: super::mem::MemStore
pub mod model {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use rubeapi::object::ObjectExt;
    use rubeapi::rube::Object;
    use rubeapi::runink::{Slice, SliceStatus};
    use rubeapi::selector::Filter;
    use tokio_util::sync::CancellationToken;

    use super::{Change, changes, key, slice, with_labels};
    use crate::Error;
    use crate::store::{Expect, PutOp, Revision, Store};

    const NAMESPACES: [&str; 2] = ["a", "b"];
    const NAMES: [&str; 2] = ["x", "y"];

    #[derive(Debug, Clone, Copy)]
    pub enum Pre {
        None,
        Absent,
        Current,
        Stale,
    }

    #[derive(Debug, Clone)]
    pub enum Op {
        Put {
            at: usize,
            command: u8,
            label: u8,
            pre: Pre,
        },
        Batch {
            first: usize,
            second: usize,
            command: u8,
        },
        Delete {
            at: usize,
            pre: Pre,
        },
        Status {
            at: usize,
            pid: u8,
            pre: Pre,
        },
        Get {
            at: usize,
        },
        List {
            namespace: Option<usize>,
            label: Option<u8>,
        },
        Compact {
            back: u8,
        },
    }

    fn pre() -> impl Strategy<Value = Pre> {
        prop_oneof![
            Just(Pre::None),
            Just(Pre::Absent),
            Just(Pre::Current),
            Just(Pre::Stale)
        ]
    }

    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 0..3u8, 0..2u8, pre()).prop_map(|(at, command, label, pre)| Op::Put { at, command, label, pre }),
            1 => (0..4usize, 0..4usize, 0..3u8).prop_map(|(first, second, command)| Op::Batch { first, second, command }),
            2 => (0..4usize, pre()).prop_map(|(at, pre)| Op::Delete { at, pre }),
            2 => (0..4usize, 0..3u8, pre()).prop_map(|(at, pid, pre)| Op::Status { at, pid, pre }),
            1 => (0..4usize).prop_map(|at| Op::Get { at }),
            1 => (proptest::option::of(0..2usize), proptest::option::of(0..2u8)).prop_map(|(namespace, label)| Op::List { namespace, label }),
            1 => (0..6u8).prop_map(|back| Op::Compact { back }),
        ]
    }

    fn object_at(at: usize, command: u8, label: u8) -> Object {
        let o = slice(NAMESPACES[at / 2], NAMES[at % 2], &format!("run {command}"));
        with_labels(o, &[("tier", if label == 0 { "web" } else { "db" })])
    }

    /// Revisions as positions in the run's own sequence of changes, so stores whose revisions
    /// differ in value (etcd) compare equal when they agree in order.
    #[derive(Default)]
    struct Ordinals(HashMap<Revision, usize>);

    impl Ordinals {
        fn of(&mut self, revision: Revision) -> usize {
            let next = self.0.len() + 1;
            *self.0.entry(revision).or_insert(next)
        }
    }

    fn normal_object(ordinals: &mut Ordinals, o: &Object) -> String {
        let m = o.metadata.clone().unwrap_or_default();
        let mut labels: Vec<_> = m.labels.into_iter().collect();
        labels.sort();
        format!(
            "{} spec={:?} status={:?} labels={labels:?} gen={} rev=#{} created=#{} finalizers={:?} deleting={}",
            o.display_name(),
            o.spec_as::<Slice>().map(|s| s.command).ok(),
            o.status_as::<SliceStatus>().ok().flatten().map(|s| s.pid),
            m.generation,
            ordinals.of(m.revision),
            ordinals.of(m.create_revision),
            m.finalizers,
            m.deletion_timestamp.is_some(),
        )
    }

    fn normal_error(ordinals: &mut Ordinals, e: &Error) -> String {
        match e {
            Error::Conflict { key, actual, .. } => {
                format!(
                    "conflict on {key}, found {:?}",
                    actual.map(|a| ordinals.of(a))
                )
            }
            Error::AlreadyExists { key, revision } => {
                format!("{key} exists at #{}", ordinals.of(*revision))
            }
            Error::InBatch { index, source, .. } => {
                format!("batch[{index}]: {}", normal_error(ordinals, source))
            }
            Error::Compacted { .. } => "compacted".into(),
            other => other.to_string(),
        }
    }

    async fn expect_for<S: Store>(store: &S, at: usize, pre: Pre) -> Option<Expect> {
        let current = store
            .get(key(NAMESPACES[at / 2], NAMES[at % 2]))
            .await
            .ok()
            .map(|o| o.revision());
        match pre {
            Pre::None => None,
            Pre::Absent => Some(Expect::Absent),
            Pre::Current => Some(Expect::Revision(current.unwrap_or(1 << 40))),
            Pre::Stale => Some(Expect::Revision(current.map_or(1 << 40, |r| r + (1 << 40)))),
        }
    }

    /// Runs `ops` and returns every answer, normalized, then the whole watch history.
    pub async fn run<S: Store>(store: &S, ops: &[Op]) -> Vec<String> {
        let mut ordinals = Ordinals::default();
        let start = store.revision().await.expect("revision").revision;
        let mut out = Vec::new();
        let mut changed = 0usize;
        let mut compacted_at = start;
        let mut change_revisions: Vec<Revision> = Vec::new();
        for op in ops {
            let answer = match op {
                Op::Put {
                    at,
                    command,
                    label,
                    pre,
                } => {
                    let expect = expect_for(store, *at, *pre).await;
                    store
                        .apply(vec![PutOp {
                            object: object_at(*at, *command, *label),
                            expect,
                        }])
                        .await
                }
                Op::Batch {
                    first,
                    second,
                    command,
                } => {
                    let ops = vec![
                        PutOp {
                            object: object_at(*first, *command, 0),
                            expect: None,
                        },
                        PutOp {
                            object: object_at(*second, command + 1, 1),
                            expect: Some(Expect::Absent),
                        },
                    ];
                    store.apply(ops).await
                }
                Op::Delete { at, pre } => {
                    let expect = expect_for(store, *at, *pre).await;
                    store
                        .delete(key(NAMESPACES[at / 2], NAMES[at % 2]), expect)
                        .await
                        .map(|w| vec![w])
                }
                Op::Status { at, pid, pre } => {
                    let expect = expect_for(store, *at, *pre).await;
                    let status = rubeapi::object::pack(&SliceStatus {
                        pid: u32::from(*pid),
                        ..Default::default()
                    });
                    store
                        .update_status(key(NAMESPACES[at / 2], NAMES[at % 2]), status, expect)
                        .await
                        .map(|w| vec![w])
                }
                Op::Get { at } => {
                    let got = store.get(key(NAMESPACES[at / 2], NAMES[at % 2])).await;
                    out.push(match got {
                        Ok(o) => normal_object(&mut ordinals, &o),
                        Err(e) => normal_error(&mut ordinals, &e),
                    });
                    continue;
                }
                Op::List { namespace, label } => {
                    let filter = Filter {
                        type_name: "runink.Slice".into(),
                        namespace: namespace
                            .map(|n| NAMESPACES[n].to_owned())
                            .unwrap_or_default(),
                        labels: label
                            .map(|l| format!("tier={}", if l == 0 { "web" } else { "db" }))
                            .unwrap_or_default()
                            .parse()
                            .expect("selector"),
                        ..Default::default()
                    };
                    let listing = store.list(filter).await.expect("list");
                    let objects: Vec<String> = listing
                        .objects
                        .iter()
                        .map(|o| normal_object(&mut ordinals, o))
                        .collect();
                    out.push(format!("list {objects:?}"));
                    continue;
                }
                Op::Compact { back } => {
                    // Compact to a recent change, never further back than before.
                    let target = change_revisions
                        .iter()
                        .rev()
                        .nth(usize::from(*back))
                        .copied();
                    if let Some(target) = target.filter(|t| *t > compacted_at) {
                        let done = store.compact(target).await.expect("compact");
                        compacted_at = done.compacted;
                        out.push(format!("compacted to #{}", ordinals.of(done.compacted)));
                    }
                    continue;
                }
            };
            out.push(match answer {
                Ok(written) => {
                    let mut line = Vec::new();
                    for w in written {
                        if w.outcome != rubeapi::rube::Outcome::Unchanged
                            && w.outcome != rubeapi::rube::Outcome::DeletionPending
                        {
                            changed += 1;
                            change_revisions.push(w.object.revision());
                        }
                        line.push(format!(
                            "{:?} {}",
                            w.outcome,
                            normal_object(&mut ordinals, &w.object)
                        ));
                    }
                    line.join("; ")
                }
                Err(e) => normal_error(&mut ordinals, &e),
            });
        }
        // The history a watcher from the compaction point sees.
        let remaining = change_revisions
            .iter()
            .filter(|r| **r > compacted_at)
            .count();
        let mut stream = store
            .watch(
                Filter {
                    type_name: "runink.Slice".into(),
                    ..Default::default()
                },
                Some(compacted_at),
                CancellationToken::new(),
            )
            .await
            .expect("watch");
        let history: Vec<Change> = changes(&mut stream, remaining).await;
        for (kind, name, revision) in history {
            out.push(format!("event {kind} {name} #{}", ordinals.of(revision)));
        }
        out.push(format!("{changed} changes"));
        out
    }
}
