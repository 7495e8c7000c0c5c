//! The sqlite store through the real gRPC server on port 0, with real files in a temp dir:
//! watch ordering and resumption, compaction, compare-and-swap, atomic batches, label-selector
//! watches, slow watchers, bookmarks and restarts.

use std::time::Duration;

use apiserver::admission::Limits;
use apiserver::store::hub::WatchOptions;
use apiserver::store::sqlite::SqliteOptions;
use apiserver::testing::TestServer;
use futures::{Stream, StreamExt};
use rubeapi::client::{at_revision, must_not_exist};
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Object, Outcome, PutRequest, Selector, WatchEvent, watch_event};
use rubeapi::runink::{Slice, SliceStatus};
use rubeapi::{Client, Error, testing};
use tonic::Code;

fn slice(name: &str, command: &str) -> Object {
    testing::slice("herd", name).command(command).build()
}

fn labelled(name: &str, command: &str, node: &str) -> Object {
    testing::slice("herd", name)
        .command(command)
        .node(node)
        .build()
}

fn slices() -> Selector {
    Selector {
        r#type: "runink.Slice".into(),
        ..Default::default()
    }
}

async fn put(client: &Client, object: Object) -> Object {
    client.put(object, None).await.unwrap().object.unwrap()
}

async fn revision(client: &Client) -> u64 {
    client.list(slices()).await.unwrap().revision
}

/// (kind, name, revision) of a change event; bookmarks are skipped.
type Seen = (&'static str, String, u64);

async fn next_change(stream: &mut (impl Stream<Item = Result<WatchEvent, Error>> + Unpin)) -> Seen {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("no error");
        match event.event.unwrap() {
            watch_event::Event::Update(o) => return ("update", o.name().to_owned(), o.revision()),
            watch_event::Event::Delete(o) => return ("delete", o.name().to_owned(), o.revision()),
            watch_event::Event::Bookmark(_) => continue,
        }
    }
}

async fn changes(
    stream: &mut (impl Stream<Item = Result<WatchEvent, Error>> + Unpin),
    n: usize,
) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(next_change(stream).await);
    }
    seen
}

#[tokio::test]
async fn a_resumed_watch_gets_exactly_the_events_after_its_revision_in_order() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let o = put(&client, slice(&format!("s{}", i % 7), &format!("cmd {i}"))).await;
        expected.push(("update", o.name().to_owned(), o.revision()));
    }
    let deleted = client
        .delete("runink.Slice", "herd", "s3", None)
        .await
        .unwrap();
    expected.push((
        "delete",
        "s3".to_owned(),
        deleted.object.unwrap().revision(),
    ));
    assert_eq!(
        expected.iter().map(|e| e.2).collect::<Vec<_>>(),
        (1..=31).collect::<Vec<_>>()
    );

    for from in [0u64, 1, 12, 30, 31] {
        let stream = client.watch(slices(), Some(from)).await.unwrap();
        futures::pin_mut!(stream);
        let want: Vec<Seen> = expected.iter().filter(|e| e.2 > from).cloned().collect();
        assert_eq!(
            changes(&mut stream, want.len()).await,
            want,
            "from revision {from}"
        );
        // Then live: the next change and nothing before it.
        let live = put(&client, slice("live", &format!("after {from}"))).await;
        assert_eq!(
            next_change(&mut stream).await,
            ("update", "live".to_owned(), live.revision())
        );
        client
            .delete("runink.Slice", "herd", "live", None)
            .await
            .unwrap();
        next_change(&mut stream).await;
        expected.push(("update", "live".to_owned(), live.revision()));
        expected.push(("delete", "live".to_owned(), live.revision() + 1));
    }
}

#[tokio::test]
async fn a_watch_from_before_the_compaction_point_gets_compacted() {
    let server = TestServer::start().await;
    let client = server.client().await;
    for i in 0..10 {
        put(&client, slice("s", &format!("v{i}"))).await;
    }
    let done = client.compact(6).await.unwrap();
    assert_eq!((done.compacted_revision, done.revision), (6, 10));

    match client.watch(slices(), Some(5)).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (5, 6)),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    // From the compaction point itself, history is complete.
    let stream = client.watch(slices(), Some(6)).await.unwrap();
    futures::pin_mut!(stream);
    let seen: Vec<u64> = changes(&mut stream, 4)
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(seen, [7, 8, 9, 10]);

    // Compacting into the future is refused and changes nothing.
    let err = client.compact(11).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot compact to revision 11: the current revision is 10"),
        "{err}"
    );
    // The compaction survives a restart.
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(dir.path(), SqliteOptions::default(), Limits::default()).await;
    let c = server.client().await;
    put(&c, slice("a", "1")).await;
    put(&c, slice("a", "2")).await;
    c.compact(1).await.unwrap();
    server.stop().await;
    let server =
        TestServer::start_in(dir.path(), SqliteOptions::default(), Limits::default()).await;
    let c = server.client().await;
    assert!(matches!(
        c.watch(slices(), Some(0)).await,
        Err(Error::Compacted {
            requested: 0,
            compacted: 1
        })
    ));
}

#[tokio::test]
async fn compare_and_swap_with_a_stale_revision_conflicts_and_changes_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let v1 = put(&client, slice("s", "one")).await;
    let v2 = client
        .put(slice("s", "two"), Some(at_revision(v1.revision())))
        .await
        .unwrap();
    assert_eq!(v2.outcome(), Outcome::Updated);
    let v2 = v2.object.unwrap();

    let err = client
        .put(slice("s", "three"), Some(at_revision(v1.revision())))
        .await
        .unwrap_err();
    let Error::Conflict(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(
        status.message(),
        "conflict on runink.Slice herd/s: expected revision 1, found 2"
    );
    let err = client
        .put(slice("s", "three"), Some(must_not_exist()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(s) if s.code() == Code::AlreadyExists),
        "{err}"
    );
    let err = client
        .delete("runink.Slice", "herd", "s", Some(at_revision(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(s) if s.code() == Code::Aborted),
        "{err}"
    );

    assert_eq!(client.get("runink.Slice", "herd", "s").await.unwrap(), v2);
    assert_eq!(revision(&client).await, v2.revision());
}

#[tokio::test]
async fn an_atomic_batch_with_one_bad_put_applies_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let existing = put(&client, slice("taken", "x")).await;
    let before = revision(&client).await;
    let puts = vec![
        PutRequest {
            object: Some(slice("new-1", "a")),
            precondition: None,
        },
        PutRequest {
            object: Some(slice("taken", "b")),
            precondition: Some(must_not_exist()),
        },
        PutRequest {
            object: Some(slice("new-2", "c")),
            precondition: None,
        },
    ];
    let err = client.apply(puts).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "object 2 of 3 (runink.Slice herd/taken): runink.Slice herd/taken already exists (revision {}); nothing was applied",
            existing.revision()
        )
    );
    assert_eq!(revision(&client).await, before);
    assert!(matches!(
        client.get("runink.Slice", "herd", "new-1").await,
        Err(Error::NotFound(_))
    ));

    let ok = client
        .apply(vec![
            PutRequest {
                object: Some(slice("new-1", "a")),
                precondition: None,
            },
            PutRequest {
                object: Some(slice("new-2", "c")),
                precondition: None,
            },
        ])
        .await
        .unwrap();
    let revisions: Vec<u64> = ok
        .iter()
        .map(|r| r.object.as_ref().unwrap().revision())
        .collect();
    assert_eq!(revisions, [before + 1, before + 2]);
}

#[tokio::test]
async fn generation_moves_with_the_spec_and_status_never_bumps_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let v1 = put(&client, slice("s", "one")).await;
    let same = client.put(slice("s", "one"), None).await.unwrap();
    assert_eq!(same.outcome(), Outcome::Unchanged);
    assert_eq!(same.object.unwrap().revision(), v1.revision());

    let status = object::pack(&SliceStatus {
        pid: 42,
        ..Default::default()
    });
    let with_status = client
        .update_status("runink.Slice", "herd", "s", status.clone(), None)
        .await
        .unwrap();
    assert_eq!(with_status.metadata.as_ref().unwrap().generation, 1);
    assert_eq!(with_status.revision(), v1.revision() + 1);

    let v2 = put(&client, slice("s", "two")).await;
    let m = v2.metadata.as_ref().unwrap();
    assert_eq!(
        (m.generation, m.create_revision, m.uid.as_str()),
        (2, v1.revision(), v1.metadata.as_ref().unwrap().uid.as_str())
    );
    assert_eq!(v2.status, Some(status), "a spec put keeps the status");

    // A status of the wrong type is refused.
    let wrong = object::pack(&Slice::default());
    let err = client
        .update_status("runink.Slice", "herd", "s", wrong, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the status of a runink.Slice must be a runink.SliceStatus, not 'runink.Slice'"
    );
}

#[tokio::test]
async fn label_selector_watches_see_objects_leave_as_deletes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let selector = Selector {
        labels: "node=w1".into(),
        ..slices()
    };
    let stream = client.watch(selector.clone(), None).await.unwrap();
    futures::pin_mut!(stream);
    put(&client, labelled("a", "1", "w1")).await;
    put(&client, labelled("b", "1", "w2")).await;
    let moved = put(&client, labelled("a", "1", "w2")).await;
    put(&client, labelled("b", "2", "w1")).await;
    let seen = changes(&mut stream, 3).await;
    assert_eq!(
        seen,
        [
            ("update", "a".to_owned(), 1),
            ("delete", "a".to_owned(), moved.revision()),
            ("update", "b".to_owned(), 4),
        ]
    );
    // History replays the same way.
    let replay = client.watch(selector.clone(), Some(0)).await.unwrap();
    futures::pin_mut!(replay);
    assert_eq!(changes(&mut replay, 3).await, seen);
    // And list agrees.
    let listed: Vec<String> = client
        .list(selector)
        .await
        .unwrap()
        .objects
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(listed, ["b"]);
}

#[tokio::test]
async fn a_slow_watcher_is_served_from_history_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        watch: WatchOptions {
            buffer: 4,
            bookmark_interval: Duration::from_secs(60),
        },
        ..Default::default()
    };
    let server = TestServer::start_in(dir.path(), options, Limits::default()).await;
    let client = server.client().await;
    let stream = client.watch(slices(), None).await.unwrap();
    futures::pin_mut!(stream);
    // The watcher reads nothing while 2,000 changes happen: far more than its buffer of 4 and the
    // stream's own buffers.
    let writer = client.clone();
    let mut last = 0;
    for chunk in 0..20 {
        let puts = (0..100)
            .map(|i| PutRequest {
                object: Some(slice(&format!("s{i}"), &format!("v{chunk}"))),
                precondition: None,
            })
            .collect();
        last = writer
            .apply(puts)
            .await
            .unwrap()
            .last()
            .unwrap()
            .object
            .as_ref()
            .unwrap()
            .revision();
    }
    assert_eq!(last, 2000);
    let seen = changes(&mut stream, 2000).await;
    let revisions: Vec<u64> = seen.iter().map(|e| e.2).collect();
    assert_eq!(revisions, (1..=2000).collect::<Vec<_>>());
    // Still live afterwards.
    let o = put(&client, slice("after", "x")).await;
    assert_eq!(next_change(&mut stream).await.2, o.revision());
    assert!(
        server.store.demoted_watchers() > 0,
        "the watcher should have fallen behind its buffer"
    );
}

#[tokio::test]
async fn quiet_watches_get_bookmarks_and_a_new_watch_starts_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        watch: WatchOptions {
            buffer: 64,
            bookmark_interval: Duration::from_millis(200),
        },
        ..Default::default()
    };
    let server = TestServer::start_in(dir.path(), options, Limits::default()).await;
    let client = server.client().await;
    put(&client, slice("a", "1")).await;
    let other_type = object::new("", "n1", &rubeapi::rube::Node::default());
    let stream = client.watch(slices(), None).await.unwrap();
    futures::pin_mut!(stream);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(
        first.event,
        Some(watch_event::Event::Bookmark(rubeapi::rube::Bookmark {
            revision: 1
        }))
    );
    // A change of another type moves the store, and the next bookmark says so.
    put(&client, other_type).await;
    let bookmark = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(watch_event::Event::Bookmark(b)) =
                stream.next().await.unwrap().unwrap().event
                && b.revision == 2
            {
                return b;
            }
        }
    })
    .await
    .expect("a bookmark at revision 2 within 5 s");
    assert_eq!(bookmark.revision, 2);
}

#[tokio::test]
async fn everything_survives_a_restart_and_revisions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(dir.path(), SqliteOptions::default(), Limits::default()).await;
    let client = server.client().await;
    for i in 0..5 {
        put(&client, slice(&format!("s{i}"), "x")).await;
    }
    let before = client.list(slices()).await.unwrap();
    server.stop().await;

    let server =
        TestServer::start_in(dir.path(), SqliteOptions::default(), Limits::default()).await;
    let client = server.client().await;
    let after = client.list(slices()).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(put(&client, slice("s9", "x")).await.revision(), 6);
    // History from before the restart is still there for watches.
    let stream = client.watch(slices(), Some(3)).await.unwrap();
    futures::pin_mut!(stream);
    let revisions: Vec<u64> = changes(&mut stream, 3)
        .await
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(revisions, [4, 5, 6]);
}

#[tokio::test]
async fn a_data_dir_is_held_by_one_server_at_a_time() {
    let server = TestServer::start().await;
    let err = apiserver::store::sqlite::SqliteStore::open(
        server.data_dir(),
        rubeapi::Registry::builtin(),
        SqliteOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut o = slice("s", "x");
    o.metadata
        .as_mut()
        .unwrap()
        .finalizers
        .push("rube.dev/cleanup".into());
    put(&client, o.clone()).await;
    let stream = client.watch(slices(), None).await.unwrap();
    futures::pin_mut!(stream);
    let marked = client
        .delete("runink.Slice", "herd", "s", None)
        .await
        .unwrap();
    assert_eq!(marked.outcome(), Outcome::DeletionPending);
    assert!(
        client
            .get("runink.Slice", "herd", "s")
            .await
            .unwrap()
            .metadata
            .unwrap()
            .deletion_timestamp
            .is_some()
    );
    o.metadata.as_mut().unwrap().finalizers.clear();
    let removed = client.put(o, None).await.unwrap();
    assert_eq!(removed.outcome(), Outcome::Deleted);
    assert_eq!(
        changes(&mut stream, 2).await,
        [("update", "s".to_owned(), 2), ("delete", "s".to_owned(), 3)]
    );
    assert!(client.get("runink.Slice", "herd", "s").await.is_err());
}

fn lease(name: &str, holder: &str) -> Object {
    let spec = rubeapi::rube::Lease {
        holder: holder.into(),
        duration_seconds: 40,
        ..Default::default()
    };
    object::new("", name, &spec)
}

#[tokio::test]
async fn lease_renewals_supersede_their_history_and_everything_else_keeps_it() {
    let data = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(data.path(), SqliteOptions::default(), Limits::default()).await;
    let client = server.client().await;
    let mut renewals = Vec::new();
    for i in 0..20 {
        renewals.push(
            put(&client, lease("node-a", &format!("a{i}")))
                .await
                .revision(),
        );
        put(&client, slice("s", &format!("cmd {i}"))).await;
    }
    let last_b = put(&client, lease("node-b", "b")).await.revision();
    let deleted = client
        .delete("rube.Lease", "", "node-b", None)
        .await
        .unwrap();
    let deleted = deleted.object.unwrap().revision();
    let last_a = *renewals.last().unwrap();

    // From the start: only the latest renewal of each lease is left, plus the delete.
    let check = |client: Client| async move {
        let leases = Selector {
            r#type: "rube.Lease".into(),
            ..Default::default()
        };
        let stream = client.watch(leases, Some(0)).await.unwrap();
        futures::pin_mut!(stream);
        assert_eq!(
            changes(&mut stream, 3).await,
            vec![
                ("update", "node-a".to_owned(), last_a),
                ("update", "node-b".to_owned(), last_b),
                ("delete", "node-b".to_owned(), deleted),
            ]
        );
        // Slices keep every change.
        let stream = client.watch(slices(), Some(0)).await.unwrap();
        futures::pin_mut!(stream);
        assert_eq!(changes(&mut stream, 20).await.len(), 20);
    };
    check(client).await;
    server.stop().await;
    let server =
        TestServer::start_in(data.path(), SqliteOptions::default(), Limits::default()).await;
    check(server.client().await).await;
    // A watcher that resumes between two renewals gets the newer one.
    let stream = server
        .client()
        .await
        .watch(
            Selector {
                r#type: "rube.Lease".into(),
                ..Default::default()
            },
            Some(renewals[3]),
        )
        .await
        .unwrap();
    futures::pin_mut!(stream);
    assert_eq!(
        next_change(&mut stream).await,
        ("update", "node-a".to_owned(), last_a)
    );
}

fn sized(herd: &str, name: &str, cpu_millis: u64) -> Object {
    testing::slice(herd, name).cpu_millis(cpu_millis).build()
}

#[tokio::test]
async fn slices_over_their_herds_quota_are_refused_and_nothing_is_written() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let herd = rubeapi::runink::Herd {
        quota: Some(rubeapi::runink::Quota {
            max_slices: 3,
            cpu_millis: 1000,
            ..Default::default()
        }),
        ..Default::default()
    };
    put(&client, object::new("", "team", &herd)).await;
    put(&client, sized("team", "a", 400)).await;
    put(&client, sized("team", "b", 400)).await;

    let refused = client.put(sized("team", "c", 300), None).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::ResourceExhausted));
    assert_eq!(
        refused.to_string(),
        "slice team/c would exceed herd team's quota: cpu_millis 1100 > 1000"
    );
    // A batch that fits only in part is refused whole.
    let batch = client
        .apply(vec![
            PutRequest {
                object: Some(sized("team", "c", 100)),
                precondition: None,
            },
            PutRequest {
                object: Some(sized("team", "d", 100)),
                precondition: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(batch.to_string().contains("max_slices 4 > 3"), "{batch}");
    let names: Vec<String> = client
        .list(slices())
        .await
        .unwrap()
        .objects
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"], "nothing of the refused puts was stored");

    // A finished slice frees its share; other herds are not limited.
    client
        .update_status(
            "runink.Slice",
            "team",
            "a",
            object::pack(&SliceStatus {
                phase: rubeapi::runink::slice_status::Phase::Succeeded as i32,
                ..Default::default()
            }),
            None,
        )
        .await
        .unwrap();
    put(&client, sized("team", "c", 600)).await;
    put(&client, sized("other", "big", 100_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_cannot_race_past_a_quota() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let herd = rubeapi::runink::Herd {
        quota: Some(rubeapi::runink::Quota {
            max_slices: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    put(&client, object::new("", "team", &herd)).await;
    let puts = (0..20).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.put(sized("team", &format!("s{i}"), 1), None).await })
    });
    let results = futures::future::join_all(puts).await;
    let accepted = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(accepted, 3);
    assert_eq!(client.list(slices()).await.unwrap().objects.len(), 3);
}

fn herd_status(object: &Object) -> rubeapi::runink::HerdStatus {
    object
        .status_as::<rubeapi::runink::HerdStatus>()
        .unwrap()
        .unwrap_or_default()
}

/// Regression: a Herd's status was never written, so nothing showed how much of its quota a
/// tenant used. It is kept in the same transaction as each change that alters it.
#[tokio::test]
async fn a_herds_status_shows_what_its_unfinished_slices_hold() {
    let server = TestServer::start().await;
    let client = server.client().await;
    put(
        &client,
        object::new("", "team", &rubeapi::runink::Herd::default()),
    )
    .await;
    let usage = |client: Client| async move {
        let herd = client.get("runink.Herd", "", "team").await.unwrap();
        let s = herd_status(&herd);
        (s.slices, s.cpu_millis)
    };
    put(&client, sized("team", "a", 400)).await;
    put(&client, sized("team", "b", 300)).await;
    assert_eq!(usage(client.clone()).await, (2, 700));
    // Resized: the new size replaces the old one.
    put(&client, sized("team", "b", 100)).await;
    assert_eq!(usage(client.clone()).await, (2, 500));
    // Finished for good: released. A restart policy that will run it again keeps it counted.
    let finished = |phase| {
        object::pack(&SliceStatus {
            phase: phase as i32,
            ..Default::default()
        })
    };
    client
        .update_status(
            "runink.Slice",
            "team",
            "a",
            finished(rubeapi::runink::slice_status::Phase::Succeeded),
            None,
        )
        .await
        .unwrap();
    assert_eq!(usage(client.clone()).await, (1, 100));
    let mut restarting = sized("team", "r", 50);
    let mut spec: Slice = restarting.spec_as().unwrap();
    spec.set_restart_policy(rubeapi::runink::RestartPolicy::OnFailure);
    restarting.spec = Some(object::pack(&spec));
    put(&client, restarting).await;
    client
        .update_status(
            "runink.Slice",
            "team",
            "r",
            finished(rubeapi::runink::slice_status::Phase::Failed),
            None,
        )
        .await
        .unwrap();
    assert_eq!(usage(client.clone()).await, (2, 150));
    // Deleted: released.
    client
        .delete("runink.Slice", "team", "b", None)
        .await
        .unwrap();
    assert_eq!(usage(client.clone()).await, (1, 50));
    // Nobody else writes it.
    let refused = client
        .update_status(
            "runink.Herd",
            "",
            "team",
            object::pack(&rubeapi::runink::HerdStatus::default()),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument), "{refused}");
    assert_eq!(usage(client.clone()).await, (1, 50));
}
