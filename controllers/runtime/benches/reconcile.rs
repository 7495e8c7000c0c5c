//! Reconcile throughput of the controller framework: objects per second through the reflector,
//! the work queue and the workers, with a controller whose executor does nothing but record
//! (each object is reconciled to its fixpoint exactly once), against a real apiserver in this
//! process (sqlite on a temp dir, gRPC on 127.0.0.1 port 0).
//!
//! Two workloads, each at concurrency 1, 4 and 16:
//! - **list**: N objects exist before the controller starts; from `run` until every one of them
//!   is reconciled. The peer is one plain `Client::list` of the same objects. Both are the median
//!   of a few runs.
//! - **burst**: the controller is running (its list came back empty) when N puts arrive from 16
//!   writers; from the first put until every object is reconciled. The peer is the same N puts
//!   through plain `rubeapi::Client`s, with no controller running.
//!
//! Prints a markdown table.
//!
//! `cargo bench -p controllers --bench reconcile [-- N]` (N defaults to 10,000)

use prost::Name;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use controllers::{Controller, Key, Metrics, Options};
use nix::sys::resource::{UsageWho, getrusage};
use rubeapi::Client;
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::Slice;
use tokio::sync::oneshot;

const CONTROLLER: &str = "noop";
/// Writers of a burst, each on its own connection with one put in flight.
const WRITERS: usize = 16;
const CONCURRENCY: [usize; 3] = [1, 4, 16];
/// Runs of each list measurement; the median is reported.
const LIST_RUNS: usize = 5;
/// A run that has not finished by then has lost objects: the bench fails rather than wait.
const PATIENCE: Duration = Duration::from_secs(300);

/// What the executor has done: for each key, the generation it last recorded.
#[derive(Default)]
struct Tally {
    recorded: Mutex<HashMap<Key, u64>>,
    /// Keys that reached their fixpoint at a generation not recorded before.
    fixpoints: AtomicUsize,
}

/// A controller with nothing to do but bookkeeping: one effect per key and generation.
struct Noop {
    namespace: String,
    tally: Arc<Tally>,
}

impl Controller for Noop {
    /// The generation recorded for the key (0: none).
    type Observed = u64;
    /// Record this generation.
    type Effect = u64;
    type Error = Infallible;

    fn name(&self) -> &str {
        CONTROLLER
    }

    fn selector(&self) -> Selector {
        selector(&self.namespace)
    }

    fn observe(
        &self,
        key: &Key,
        _desired: Option<&Object>,
    ) -> impl Future<Output = Result<u64, Infallible>> + Send {
        let recorded = self.tally.recorded.lock().unwrap().get(key).copied();
        async move { Ok(recorded.unwrap_or(0)) }
    }

    fn reconcile(&self, desired: Option<&Object>, observed: &u64) -> Vec<u64> {
        let generation = desired
            .and_then(|o| o.metadata.as_ref())
            .map_or(0, |m| m.generation);
        if generation == 0 || generation == *observed {
            vec![]
        } else {
            vec![generation]
        }
    }

    fn execute(
        &self,
        key: &Key,
        effects: Vec<u64>,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        let mut recorded = self.tally.recorded.lock().unwrap();
        for generation in effects {
            if recorded.insert(key.clone(), generation) != Some(generation) {
                self.tally.fixpoints.fetch_add(1, Ordering::Relaxed);
            }
        }
        async { Ok(()) }
    }
}

fn selector(namespace: &str) -> Selector {
    Selector {
        r#type: Slice::full_name(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

fn slice(namespace: &str, i: usize) -> Object {
    rubeapi::testing::slice(namespace, &format!("s{i:05}")).build()
}

/// CPU time this process has used (server, clients and controller alike).
fn cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    time(usage.user_time()) + time(usage.system_time())
}

/// Puts `n` slices into `namespace` from [`WRITERS`] clients, one put in flight each.
async fn put_all(config: &rubeapi::rube::ClientConfig, namespace: &str, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let client = Client::connect(config).await.expect("connect");
        let next = next.clone();
        let namespace = namespace.to_owned();
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                client.put(slice(&namespace, i), None).await.expect("put");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
}

/// A running controller and the means to stop it.
struct Running {
    tally: Arc<Tally>,
    metrics: Metrics,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), controllers::Error>>,
}

impl Running {
    fn start(client: &Client, namespace: &str, concurrency: usize) -> Running {
        let tally = Arc::new(Tally::default());
        let metrics = Metrics::new();
        let options = Options {
            concurrency,
            resync: None,
            metrics: metrics.clone(),
            ..Options::default()
        };
        let controller = Noop {
            namespace: namespace.to_owned(),
            tally: tally.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controllers::run(
            controller,
            client.clone(),
            options,
            async {
                let _ = stopped.await;
            },
        ));
        Running {
            tally,
            metrics,
            stop,
            task,
        }
    }

    /// Waits until `n` keys have reached their fixpoint.
    async fn until_reconciled(&self, n: usize, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.tally.fixpoints.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} objects reconciled after {PATIENCE:?}: {:?}",
                self.tally.fixpoints.load(Ordering::Relaxed),
                self.metrics.snapshot(CONTROLLER)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the controller, checking that it did exactly one effect per object and no more.
    async fn stop(self, n: usize, what: &str) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("a graceful shutdown");
        let snapshot = self.metrics.snapshot(CONTROLLER);
        assert_eq!(snapshot.errors, 0, "{what}: {snapshot:?}");
        assert_eq!(snapshot.effects, n as u64, "{what}: {snapshot:?}");
        assert_eq!(
            self.tally.fixpoints.load(Ordering::Relaxed),
            n,
            "{what}: {snapshot:?}"
        );
    }
}

/// One measured interval: wall time and this process's CPU time.
struct Measured {
    wall: Duration,
    cpu: Duration,
}

impl Measured {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us_per(&self, n: usize) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / n as f64
    }
}

/// The run with the median wall time.
fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by_key(|m| m.wall);
    runs.swap_remove(runs.len() / 2)
}

async fn measure<F: Future<Output = ()>>(work: F) -> Measured {
    let (wall, cpu_before) = (Instant::now(), cpu());
    work.await;
    Measured {
        wall: wall.elapsed(),
        cpu: cpu().saturating_sub(cpu_before),
    }
}

struct Row {
    workload: &'static str,
    concurrency: usize,
    framework: Measured,
    peer: Measured,
    /// Burst only: from the last put returning to the last object reconciled.
    lag: Option<Duration>,
}

async fn bench(n: usize) -> Vec<Row> {
    let server = TestServer::start().await;
    let config = server.config().clone();
    let client = server.client().await;

    put_all(&config, "listed", n).await;
    // One list before anything is measured, so no row pays for a cold page cache.
    let listed = client.list(selector("listed")).await.expect("list");
    assert_eq!(listed.objects.len(), n);

    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        // A list takes a few tens of milliseconds: the median of a few runs of each.
        let mut peers = Vec::new();
        let mut frameworks = Vec::new();
        for _ in 0..LIST_RUNS {
            peers.push(
                measure(async {
                    let listed = client.list(selector("listed")).await.expect("list");
                    assert_eq!(listed.objects.len(), n);
                })
                .await,
            );
            let what = format!("list, concurrency {concurrency}");
            let mut running = None;
            frameworks.push(
                measure(async {
                    let r = Running::start(&client, "listed", concurrency);
                    r.until_reconciled(n, &what).await;
                    running = Some(r);
                })
                .await,
            );
            running.unwrap().stop(n, &what).await;
        }
        rows.push(Row {
            workload: "list: N objects present at start",
            concurrency,
            framework: median(frameworks),
            peer: median(peers),
            lag: None,
        });

        let peer = measure(put_all(&config, &format!("raw-{concurrency}"), n)).await;
        let namespace = format!("burst-{concurrency}");
        let what = format!("burst, concurrency {concurrency}");
        let running = Running::start(&client, &namespace, concurrency);
        // The burst starts once the (empty) list is in: from then on only the watch delivers.
        while running.metrics.snapshot(CONTROLLER).lists == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut put_done = None;
        let framework = measure(async {
            put_all(&config, &namespace, n).await;
            put_done = Some(Instant::now());
            running.until_reconciled(n, &what).await;
        })
        .await;
        let lag = put_done.unwrap().elapsed();
        running.stop(n, &what).await;
        rows.push(Row {
            workload: "burst: N puts while running",
            concurrency,
            framework,
            peer,
            lag: Some(lag),
        });
    }
    server.stop().await;
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; the first number is N.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (started, machine, own) = (Instant::now(), apiserver::testing::machine_ticks(), cpu());
    let rows = runtime.block_on(bench(n));
    let (wall, own) = (started.elapsed(), cpu() - own);
    eprintln!(
        "reconcile: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "| workload (N = {n}) | concurrency | framework objects/s | peer objects/s | \
         framework/peer | framework CPU µs/object | peer CPU µs/object | last put → last reconcile (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let framework = row.framework.rate(n);
        let peer = row.peer.rate(n);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} |",
            row.workload,
            row.concurrency,
            framework,
            peer,
            framework / peer,
            row.framework.cpu_us_per(n),
            row.peer.cpu_us_per(n),
            row.lag.map_or("n/a".to_owned(), |l| format!(
                "{:.2}",
                l.as_secs_f64() * 1e3
            )),
        );
    }
    println!();
    println!(
        "Peers: a plain `Client::list` of the same N objects (list rows, median of {LIST_RUNS} \
         runs, as the framework's); the same N puts from \
         {WRITERS} plain clients with no controller running (burst rows). CPU is this whole \
         process: apiserver, clients and controller share it."
    );
    println!(
        "Load: {}; this bench's own process used {:.0}% of all cores.",
        apiserver::testing::machine_load(machine),
        own.as_secs_f64() * 100.0
            / (wall.as_secs_f64()
                * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
    );
}
