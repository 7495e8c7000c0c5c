//! The runtime against a real apiserver (sqlite on a temp dir, port 0), with the example
//! controller writing command files into a temp dir and statuses through UpdateStatus.
//!
//! A small TCP proxy stands between the controller and the apiserver, so tests can cut the
//! controller's connections, keep it away while they change things, and point it at a
//! restarted apiserver on a new port.

mod slice_files;

use prost::Name;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::admission::Limits;
use apiserver::store::sqlite::SqliteOptions;
use apiserver::testing::TestServer;
use controllers::metrics::Snapshot;
use controllers::{Backoff, Key, MemoryMirror, Metrics, Options};
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{Slice, SliceStatus};
use slice_files::{Effect, Journal, SliceFiles};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NODE: &str = "n1";
const CONTROLLER: &str = "slice-files";

fn slice(name: &str, node: &str, command: &str) -> Object {
    rubeapi::testing::slice("ns", name)
        .command(command)
        .node(node)
        .build()
}

fn key(name: &str) -> Key {
    Key::typed::<Slice>("ns", name)
}

fn test_options(metrics: &Metrics) -> Options {
    Options {
        // One worker: keys run in the order they were triggered, which the tests rely on to
        // know that nothing else is pending when their last check passes.
        concurrency: 1,
        retry: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
        reconnect: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
        resync: None,
        shutdown_deadline: Duration::from_secs(5),
        metrics: metrics.clone(),
        ..Options::default()
    }
}

/// Polls `check` until it holds; fails the test after 20 s.
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

async fn status(client: &Client, name: &str) -> Option<SliceStatus> {
    let object = client.get(&Slice::full_name(), "ns", name).await.ok()?;
    object.status_as::<SliceStatus>().unwrap()
}

fn file(root: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(slice_files::path(root, &key(name))).ok()
}

/// Waits until `name` has a file with `command` and a status for `generation`.
async fn reconciled(client: &Client, root: &Path, name: &str, command: &str, generation: u64) {
    let line = format!("{command}\n");
    eventually(&format!("{name} at generation {generation}"), || async {
        let status = status(client, name).await;
        file(root, name).as_deref() == Some(line.as_str())
            && status.is_some_and(|s| {
                s.observed_generation == generation
                    && s.phase == Phase::Pending as i32
                    && s.node == NODE
            })
    })
    .await;
}

/// Waits until the controller has seen every change to its objects up to now and has nothing
/// left to do.
async fn settled(client: &Client, metrics: &Metrics) -> Snapshot {
    let selector = Selector {
        r#type: Slice::full_name(),
        labels: format!("node={NODE}"),
        ..Default::default()
    };
    let latest = client
        .list(selector)
        .await
        .unwrap()
        .objects
        .iter()
        .map(|o| o.revision())
        .max()
        .unwrap_or(0);
    // Queue depth and reconciles in flight are two gauges, read one after the other: a key
    // moving between them could read as neither once, but not on two polls in a row.
    let mut idle_polls = 0;
    let mut snapshot = Snapshot::default();
    eventually("the controller to settle", || {
        snapshot = metrics.snapshot(CONTROLLER);
        let idle = snapshot.revision >= latest as i64
            && snapshot.queue_depth == 0
            && snapshot.in_flight == 0;
        idle_polls = if idle { idle_polls + 1 } else { 0 };
        let settled = idle_polls >= 2;
        async move { settled }
    })
    .await;
    snapshot
}

/// A running controller and the means to stop it.
struct Running {
    journal: Journal,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), controllers::Error>>,
}

impl Running {
    fn start(root: &Path, client: Client, options: Options) -> Running {
        let journal = Journal::default();
        let controller = SliceFiles {
            root: root.to_owned(),
            node: NODE.to_owned(),
            client: client.clone(),
            journal: journal.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controllers::run(controller, client, options, async {
            let _ = stopped.await;
        }));
        Running {
            journal,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .unwrap()
            .expect("a graceful shutdown within the deadline");
    }
}

/// A TCP proxy to whichever apiserver is current.
struct Proxy {
    /// The admin's configuration, pointed at the proxy.
    config: rubeapi::rube::ClientConfig,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    connections: Arc<Mutex<CancellationToken>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `server`; a server restarted on the same data dir keeps its CAs and the
    /// admin's credential, so the proxy's configuration stays good.
    async fn start(server: &TestServer) -> Proxy {
        let backend = server.addr;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = rubeapi::rube::ClientConfig {
            server: addr.to_string(),
            ..server.config().clone()
        };
        let backend = Arc::new(Mutex::new(Some(backend)));
        let connections = Arc::new(Mutex::new(CancellationToken::new()));
        let task = tokio::spawn({
            let backend = backend.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let backend = *backend.lock().unwrap();
                    let cut = connections.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let Some(backend) = backend else { return };
                        let Ok(mut outbound) = TcpStream::connect(backend).await else {
                            return;
                        };
                        tokio::select! {
                            () = cut.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    });
                }
            }
        });
        Proxy {
            config,
            backend,
            connections,
            task,
        }
    }

    /// A client that connects on its first call, as a rubelet's does: the proxy may be cut
    /// when it is made (a TLS connection is not made until the handshake is through).
    async fn client(&self) -> Client {
        Client::connect_lazy(&self.config).unwrap()
    }

    /// Closes every open connection and refuses new ones until [`Proxy::point_to`].
    fn disconnect(&self) {
        *self.backend.lock().unwrap() = None;
        self.cut();
    }

    fn point_to(&self, backend: SocketAddr) {
        *self.backend.lock().unwrap() = Some(backend);
    }

    /// Closes every open connection.
    fn cut(&self) {
        let mut connections = self.connections.lock().unwrap();
        connections.cancel();
        *connections = CancellationToken::new();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.connections.lock().unwrap().cancel();
    }
}

fn effects_for(journal: &Journal, name: &str) -> Vec<Effect> {
    journal
        .executed()
        .into_iter()
        .filter(|(k, _)| k == &key(name))
        .map(|(_, effect)| effect)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_reconciled_updates_followed_and_deletes_cleaned_up() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    let running = Running::start(root.path(), client.clone(), test_options(&metrics));
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    client
        .put(slice("other", "n2", "/bin/x"), None)
        .await
        .unwrap();

    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;

    client.put(slice("a", NODE, "/bin/a2"), None).await.unwrap();
    reconciled(&client, root.path(), "a", "/bin/a2", 2).await;

    client
        .delete(&Slice::full_name(), "ns", "b", None)
        .await
        .unwrap();
    eventually("b's file to go", || async {
        file(root.path(), "b").is_none()
    })
    .await;

    settled(&client, &metrics).await;
    assert_eq!(file(root.path(), "other"), None, "another node's slice");
    assert_eq!(status(&client, "other").await, None);
    assert_eq!(running.journal.observed(&key("other")), 0);
    assert_eq!(
        effects_for(&running.journal, "b").last(),
        Some(&Effect::RemoveFile)
    );
    let snapshot = metrics.snapshot(CONTROLLER);
    assert_eq!(snapshot.errors, 0);
    assert_eq!(snapshot.lists, 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_forces_a_relist_that_sees_every_change() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let proxy = Proxy::start(&server).await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    let running = Running::start(root.path(), proxy.client().await, test_options(&metrics));
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;
    let before = settled(&client, &metrics).await;
    assert_eq!(before.lists, 1);

    proxy.disconnect();
    client
        .delete(&Slice::full_name(), "ns", "a", None)
        .await
        .unwrap();
    client.put(slice("b", NODE, "/bin/b2"), None).await.unwrap();
    client.put(slice("c", NODE, "/bin/c"), None).await.unwrap();
    let now = client.put(slice("d", "n2", "/bin/d"), None).await.unwrap();
    client
        .compact(now.object.unwrap().revision())
        .await
        .unwrap();
    proxy.point_to(server.addr);

    // The delete of a is only in the compacted history: only a relist can reveal it.
    eventually("a's file to go", || async {
        file(root.path(), "a").is_none()
    })
    .await;
    reconciled(&client, root.path(), "b", "/bin/b2", 2).await;
    reconciled(&client, root.path(), "c", "/bin/c", 1).await;
    let after = settled(&client, &metrics).await;
    assert_eq!(after.lists, 2, "exactly one relist");
    assert_eq!(file(root.path(), "d"), None);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_resumes_the_watch_from_the_last_revision_without_relisting() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let proxy = Proxy::start(&server).await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    let running = Running::start(root.path(), proxy.client().await, test_options(&metrics));
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    let before = settled(&client, &metrics).await;

    // b is put while the controller cannot connect: only a watch resumed from the last
    // revision it saw (not from "now") delivers it without a relist.
    proxy.disconnect();
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    proxy.point_to(server.addr);
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;
    let after = settled(&client, &metrics).await;
    assert_eq!(after.lists, 1, "resumed, not relisted");
    assert!(after.watches > before.watches, "a new watch was opened");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_apiserver_is_resumed_from_the_last_revision_without_redoing_work() {
    let data = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(data.path(), SqliteOptions::default(), Limits::default()).await;
    let client = server.client().await;
    let proxy = Proxy::start(&server).await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    let running = Running::start(root.path(), proxy.client().await, test_options(&metrics));
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;
    let before = settled(&client, &metrics).await;
    let observed_a = running.journal.observed(&key("a"));
    let observed_b = running.journal.observed(&key("b"));
    let executed = running.journal.executed().len();

    proxy.disconnect();
    server.stop().await;
    let server =
        TestServer::start_in(data.path(), SqliteOptions::default(), Limits::default()).await;
    proxy.point_to(server.addr);
    let client = server.client().await;

    // A change after the restart shows the watch is live again.
    client.put(slice("c", NODE, "/bin/c"), None).await.unwrap();
    reconciled(&client, root.path(), "c", "/bin/c", 1).await;
    let after = settled(&client, &metrics).await;

    assert_eq!(after.lists, before.lists, "resumed from the last revision");
    assert!(after.watches > before.watches);
    assert_eq!(running.journal.observed(&key("a")), observed_a);
    assert_eq!(running.journal.observed(&key("b")), observed_b);
    let redone: Vec<_> = running.journal.executed()[executed..]
        .iter()
        .filter(|(k, _)| k != &key("c"))
        .cloned()
        .collect();
    assert_eq!(redone, vec![], "work redone after the restart");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_deleted_while_the_controller_was_down_is_cleaned_up_at_start() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    let running = Running::start(root.path(), client.clone(), test_options(&metrics));
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;
    settled(&client, &metrics).await;
    running.stop().await;

    client
        .delete(&Slice::full_name(), "ns", "a", None)
        .await
        .unwrap();
    client.put(slice("b", NODE, "/bin/b2"), None).await.unwrap();

    // A fresh controller has never seen a; only its inventory of files knows about it.
    let metrics = Metrics::new();
    let running = Running::start(root.path(), client.clone(), test_options(&metrics));
    eventually("a's file to go", || async {
        file(root.path(), "a").is_none()
    })
    .await;
    reconciled(&client, root.path(), "b", "/bin/b2", 2).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_repairs_drift_in_the_world() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let options = Options {
        resync: Some(Duration::from_millis(100)),
        ..test_options(&metrics)
    };

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    let running = Running::start(root.path(), client.clone(), options);
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    let path = slice_files::path(root.path(), &key("a"));
    std::fs::write(&path, "tampered\n").unwrap();
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    std::fs::remove_file(&path).unwrap();
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_executor_backs_off_and_recovers() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    // A file where the namespace's directory should be: every write fails.
    let blocker = root.path().join("ns");
    std::fs::write(&blocker, "in the way").unwrap();

    let running = Running::start(root.path(), client.clone(), test_options(&metrics));
    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    eventually("a few failures", || {
        let errors = metrics.snapshot(CONTROLLER).errors;
        async move { errors >= 3 }
    })
    .await;
    assert_eq!(status(&client, "a").await, None, "no status without a file");

    std::fs::remove_file(&blocker).unwrap();
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_mirror_a_restarted_controller_reconciles_before_the_apiserver_answers() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let proxy = Proxy::start(&server).await;
    let root = tempfile::tempdir().unwrap();
    let mirror = Arc::new(MemoryMirror::default());
    let metrics = Metrics::new();
    let options = |metrics: &Metrics| Options {
        mirror: Some(mirror.clone()),
        ..test_options(metrics)
    };

    client.put(slice("a", NODE, "/bin/a"), None).await.unwrap();
    client.put(slice("b", NODE, "/bin/b"), None).await.unwrap();
    let running = Running::start(root.path(), proxy.client().await, options(&metrics));
    reconciled(&client, root.path(), "a", "/bin/a", 1).await;
    reconciled(&client, root.path(), "b", "/bin/b", 1).await;
    settled(&client, &metrics).await;
    running.stop().await;

    // The controller comes back while the apiserver is unreachable, and its world has drifted:
    // only the mirror can tell it that b should have a file.
    proxy.disconnect();
    std::fs::remove_file(slice_files::path(root.path(), &key("b"))).unwrap();
    client.put(slice("c", NODE, "/bin/c"), None).await.unwrap();
    let metrics = Metrics::new();
    let running = Running::start(root.path(), proxy.client().await, options(&metrics));
    eventually("b's file back while the apiserver is away", || async {
        file(root.path(), "b").as_deref() == Some("/bin/b\n")
    })
    .await;
    assert_eq!(metrics.snapshot(CONTROLLER).lists, 0, "nothing listed yet");

    // Once it answers, the watch resumes from the mirror's revision: no list, and c arrives.
    proxy.point_to(server.addr);
    reconciled(&client, root.path(), "c", "/bin/c", 1).await;
    let after = settled(&client, &metrics).await;
    assert_eq!(after.lists, 0, "resumed from the mirror, not relisted");
    assert!(after.watches >= 1);
    running.stop().await;
}
