//! Secondary watches against a real apiserver (sqlite on a temp dir, port 0): a controller of
//! pipelines that reads slices and nodes from the caches of two [`Watch`]es and records, per
//! pipeline, how many slices name it and how many nodes there are. Nothing about a pipeline
//! changes in these tests, and resync is off: every record after the first comes from a wake
//! of a secondary watch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::testing::TestServer;
use controllers::{Backoff, Cache, Controller, Key, Options, Runtime, Wake, Watch};
use prost::Name;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::{Node, Object, Selector};
use rubeapi::runink::{Pipeline, Slice, Step};
use tokio::sync::oneshot;

/// What the controller recorded for one pipeline: (slices naming it, nodes), every time.
type Records = Arc<Mutex<HashMap<Key, Vec<(usize, usize)>>>>;

struct Counter {
    slices: Cache,
    nodes: Cache,
    records: Records,
}

#[derive(Debug)]
struct Record(usize, usize);

impl Controller for Counter {
    type Observed = (Option<(usize, usize)>, (usize, usize));
    type Effect = Record;
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "counter"
    }

    fn selector(&self) -> Selector {
        Selector::of::<Pipeline>()
    }

    async fn observe(
        &self,
        key: &Key,
        _desired: Option<&Object>,
    ) -> Result<Self::Observed, Self::Error> {
        let owned = self
            .slices
            .objects()
            .iter()
            .filter(|s| {
                s.namespace() == key.namespace
                    && s.metadata
                        .as_ref()
                        .and_then(|m| m.labels.get("pipeline"))
                        .is_some_and(|p| *p == key.name)
            })
            .count();
        let recorded = self
            .records
            .lock()
            .unwrap()
            .get(key)
            .and_then(|r| r.last().copied());
        Ok((recorded, (owned, self.nodes.len())))
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &Self::Observed) -> Vec<Record> {
        let (recorded, (slices, nodes)) = *observed;
        if desired.is_none() || recorded == Some((slices, nodes)) {
            return Vec::new();
        }
        vec![Record(slices, nodes)]
    }

    async fn execute(&self, key: &Key, effects: Vec<Record>) -> Result<(), Self::Error> {
        let mut records = self.records.lock().unwrap();
        for Record(slices, nodes) in effects {
            records
                .entry(key.clone())
                .or_default()
                .push((slices, nodes));
        }
        Ok(())
    }
}

fn owned_slice(name: &str, pipeline: &str) -> Object {
    let mut slice = object::new("ns", name, &Slice::default());
    if let Some(m) = slice.metadata.as_mut() {
        m.labels.insert("pipeline".into(), pipeline.into());
    }
    slice
}

fn pipeline_key(name: &str) -> Key {
    Key::new(&Pipeline::full_name(), "ns", name)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn last(records: &Records, name: &str) -> Option<(usize, usize)> {
    records
        .lock()
        .unwrap()
        .get(&pipeline_key(name))
        .and_then(|r| r.last().copied())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_watched_objects_wake_the_keys_their_mapper_names() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // Before the controller starts: its first reconcile must already see this slice.
    client.put(owned_slice("s1", "a"), None).await.unwrap();
    for name in ["a", "b"] {
        let spec = Pipeline {
            steps: vec![Step {
                name: "only".into(),
                command: "true".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let pipeline = object::new("ns", name, &spec);
        client.put(pipeline, None).await.unwrap();
    }

    let (slice_watch, slices) =
        Watch::owned_by_label(Selector::of::<Slice>(), "pipeline", &Pipeline::full_name());
    let (node_watch, nodes) = Watch::new(Selector::of::<Node>(), |_| Wake::All);
    let records = Records::default();
    let controller = Counter {
        slices,
        nodes,
        records: records.clone(),
    };
    let options = Options {
        concurrency: 1,
        resync: None,
        retry: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        reconnect: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        shutdown_deadline: Duration::from_secs(5),
        ..Options::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(
        Runtime::new(controller, client.clone(), options)
            .watch(slice_watch)
            .watch(node_watch)
            .run(async {
                let _ = stopped.await;
            }),
    );

    eventually("both pipelines reconciled", || async {
        last(&records, "a").is_some() && last(&records, "b").is_some()
    })
    .await;
    assert_eq!(
        records.lock().unwrap()[&pipeline_key("a")],
        vec![(1, 0)],
        "the first reconcile waited for the slice watch's first list"
    );
    assert_eq!(last(&records, "b"), Some((0, 0)));

    // A new slice wakes only the pipeline it names.
    client.put(owned_slice("s2", "b"), None).await.unwrap();
    eventually("b woken by its new slice", || async {
        last(&records, "b") == Some((1, 0))
    })
    .await;

    // A deleted slice still names its owner (the cache's copy from before).
    client
        .delete(&Slice::full_name(), "ns", "s1", None)
        .await
        .unwrap();
    eventually("a woken by its deleted slice", || async {
        last(&records, "a") == Some((0, 0))
    })
    .await;

    // A node wakes every pipeline.
    let node = object::new("", "n1", &Node::default());
    client.put(node, None).await.unwrap();
    eventually("every pipeline woken by a node", || async {
        last(&records, "a") == Some((0, 1)) && last(&records, "b") == Some((1, 1))
    })
    .await;

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
