//! Several apiservers over one etcd cluster: what one writes, a watcher on the other sees in
//! order; and with an etcd member and an apiserver SIGKILLed during concurrent puts, every
//! acknowledged put stays readable and a watcher that resumes from its last revision misses
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::testing::{Etcd, ServerProcess, assert_acknowledged_writes, numbered_write};
use futures::StreamExt;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Selector, watch_event};
use rubeapi::{Client, Error};

/// The tests here each run an etcd cluster and several apiservers; on a 2-core machine they
/// run one at a time, so a slow failover is not mistaken for a lost event.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn apiserver(endpoints: &[String], prefix: &str) -> ServerProcess {
    let endpoints = endpoints.join(",");
    let args = [
        "--store",
        "etcd",
        "--etcd-prefix",
        prefix,
        "--etcd-endpoints",
        &endpoints,
    ];
    let more = ["--metrics-listen", "off", "--bookmark-interval", "1s"];
    ServerProcess::start(
        env!("CARGO_BIN_EXE_rube-apiserver"),
        &[&args[..], &more[..]].concat(),
    )
}

fn slices() -> Selector {
    Selector {
        r#type: "runink.Slice".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_apiserver_sees_puts_through_the_other_in_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let etcd = Etcd::start().await;
    let a = apiserver(&etcd.endpoints(), "/two");
    let b = apiserver(&etcd.endpoints(), "/two");
    let through_a = Client::connect(&a.config()).await.unwrap();
    let through_b = Client::connect(&b.config()).await.unwrap();
    let stream = through_b.watch(slices(), None).await.unwrap();
    futures::pin_mut!(stream);
    let mut written = Vec::new();
    for i in 0..20 {
        let o = through_a
            .put(numbered_write("ha", &format!("s{}", i % 5), i), None)
            .await
            .unwrap()
            .object
            .unwrap();
        written.push((o.name().to_owned(), o.revision()));
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(watch_event::Event::Update(o)) = event.event {
            seen.push((o.name().to_owned(), o.revision()));
        }
    }
    assert_eq!(seen, written);
    assert_eq!(
        through_b
            .get("runink.Slice", "ha", "s4")
            .await
            .unwrap()
            .revision(),
        written[19].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_losing_an_etcd_member_and_an_apiserver() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut etcd = Etcd::start_cluster(3).await;
    let endpoints = etcd.endpoints();
    let mut a = apiserver(&endpoints, "/ha");
    let b = apiserver(&endpoints, "/ha");
    let start = Client::connect(&b.config())
        .await
        .unwrap()
        .list(slices())
        .await
        .unwrap()
        .revision;

    // The watcher starts on a, which will be killed, and resumes from its last revision on
    // whichever apiserver answers.
    let events: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let resumes = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (events, resumes) = (events.clone(), resumes.clone());
        let configs = [a.config(), b.config()];
        tokio::spawn(async move {
            let mut from = start;
            let mut attempt = 0;
            // Runs until aborted: it must see every event, however late, after the writers stop.
            loop {
                let config = &configs[attempt.min(1)];
                attempt += 1;
                let Ok(client) = Client::connect(config).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(stream) = client.watch(slices(), Some(from)).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                futures::pin_mut!(stream);
                loop {
                    let next =
                        tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
                    match next {
                        Err(_) => continue,
                        Ok(Some(Ok(event))) => match event.event {
                            Some(watch_event::Event::Update(o) | watch_event::Event::Delete(o)) => {
                                assert!(
                                    o.revision() > from,
                                    "revision {} after {from}",
                                    o.revision()
                                );
                                from = o.revision();
                                events
                                    .lock()
                                    .unwrap()
                                    .push((o.name().to_owned(), o.revision()));
                            }
                            Some(watch_event::Event::Bookmark(b)) => from = from.max(b.revision),
                            None => {}
                        },
                        Ok(Some(Err(Error::Compacted { .. }))) => {
                            panic!("history was compacted under the watcher")
                        }
                        Ok(Some(Err(_)) | None) => break,
                    }
                }
                *resumes.lock().unwrap() += 1;
            }
        })
    };

    // Writers on both apiservers; each keeps the last put it got an answer for.
    let acked: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..6 {
        let config = if w % 2 == 0 { a.config() } else { b.config() };
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let Ok(client) = Client::connect(&config).await else {
                return;
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match client.put(numbered_write("ha", &name, n), None).await {
                    Ok(r) => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(name.clone(), (r.object.unwrap().revision(), n));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    etcd.kill_member(0);
    a.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3, "too few writers got answers: {acked:?}");

    // Every acknowledged put is readable through the surviving apiserver.
    let client = Client::connect(&b.config()).await.unwrap();
    assert_acknowledged_writes(&client, "ha", &acked).await;

    // The watcher saw every acknowledged put, each revision once, in order.
    let last = acked.values().map(|(r, _)| *r).max().unwrap();
    // Generous: failing over to the surviving apiserver and etcd members can take a while
    // when the machine is busy; a lost event never catches up at all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while events.lock().unwrap().last().is_none_or(|(_, r)| *r < last) {
        let seen = events.lock().unwrap().last().map(|(_, r)| *r);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not catch up to {last} (last seen {seen:?}, resumed {} times)",
            resumes.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    let events = events.lock().unwrap().clone();
    let revisions: Vec<u64> = events.iter().map(|(_, r)| *r).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated: {revisions:?}"
    );
    let seen: BTreeSet<(String, u64)> = events.into_iter().collect();
    for (name, (revision, _)) in &acked {
        assert!(
            seen.contains(&(name.clone(), *revision)),
            "the watcher missed {name} at {revision}"
        );
    }
    assert!(
        *resumes.lock().unwrap() >= 1,
        "the watcher's apiserver was killed, so it must have resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_registered_through_one_apiserver_is_known_to_the_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let etcd = Etcd::start().await;
    let a = apiserver(&etcd.endpoints(), "/types");
    let b = apiserver(&etcd.endpoints(), "/types");
    let through_a = Client::connect(&a.config()).await.unwrap();
    let through_b = Client::connect(&b.config()).await.unwrap();

    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/custom");
    let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let mut compiler = protox::Compiler::new([examples, protos]).unwrap();
    compiler.include_imports(false);
    compiler.open_file("files.proto").unwrap();
    let spec = rubeapi::rube::Type {
        file_descriptor_set: compiler.encode_file_descriptor_set(),
    };
    through_a
        .put(object::new("", "example.files", &spec), None)
        .await
        .unwrap();

    // b learns the type from its watch on rube.Type objects, without a restart.
    let registry = rubeapi::Registry::builtin();
    registry
        .set_extra(&[("example.files", spec.file_descriptor_set.as_slice())])
        .unwrap();
    let motd = rubeapi::text::parse_object(
        &registry,
        include_str!("../../examples/custom/motd.textproto"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match through_b.put(motd.clone(), None).await {
            Ok(r) => {
                assert_eq!(r.object.unwrap().type_name(), "example.files.File");
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("example.files.File"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("b never learned the type: {e}"),
        }
    }
    assert!(
        through_b
            .registry()
            .await
            .unwrap()
            .kind("example.files.File")
            .is_ok()
    );
}

/// Regression: the quota check was exact only within one apiserver (a lock per process), so
/// two apiservers over one etcd could each admit the last slice that fits. The Herd's usage is
/// now compare-and-swapped in the same transaction as the admitted slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apiservers_racing_over_one_etcd_cannot_take_a_herd_past_its_quota() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let etcd = Etcd::start().await;
    let a = apiserver(&etcd.endpoints(), "/quota");
    let b = apiserver(&etcd.endpoints(), "/quota");
    let clients = [
        Client::connect(&a.config()).await.unwrap(),
        Client::connect(&b.config()).await.unwrap(),
    ];
    let herd = rubeapi::runink::Herd {
        quota: Some(rubeapi::runink::Quota {
            max_slices: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    clients[0]
        .put(object::new("", "team", &herd), None)
        .await
        .unwrap();
    // Rounds of 10 puts each, half through each apiserver at once, until the quota is full;
    // then every further put is refused.
    let puts = (0..40).map(|i| {
        let client = clients[i % 2].clone();
        tokio::spawn(async move {
            let slice = rubeapi::runink::Slice {
                command: "/bin/true".into(),
                ..Default::default()
            };
            client
                .put(object::new("team", &format!("s{i}"), &slice), None)
                .await
        })
    });
    let results = futures::future::join_all(puts).await;
    let mut accepted = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => accepted += 1,
            Err(error) => assert_eq!(
                error.code(),
                Some(tonic::Code::ResourceExhausted),
                "only the quota refuses: {error}"
            ),
        }
    }
    assert_eq!(accepted, 5);
    let stored = clients[1]
        .list(Selector {
            r#type: "runink.Slice".into(),
            namespace: "team".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.objects.len(), 5);
    let usage = clients[1].get("runink.Herd", "", "team").await.unwrap();
    let usage: rubeapi::runink::HerdStatus = usage.status_as().unwrap().unwrap();
    assert_eq!(usage.slices, 5);
}
