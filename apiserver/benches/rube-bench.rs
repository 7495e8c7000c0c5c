//! rube-bench: one workload, three systems, one run.
//!
//! Measures, one system after another (never two at once):
//! - Rube's apiserver on its sqlite store (in-process, real gRPC on port 0, driven through
//!   `rubeapi::Client`);
//! - Rube's apiserver on its etcd store, over the same etcd process as the next column
//!   (in-process, real gRPC on port 0, driven through `rubeapi::Client`);
//! - etcd itself (`/usr/bin/etcd`, a child process on loopback ports, driven through
//!   `etcd-client`).
//!
//! The workload:
//! - durable puts per second with 1 and with 64 concurrent clients (one connection each), every
//!   put a real change carrying a fresh 256-byte payload, and the put latency percentiles;
//! - put→watch delivery latency with 100 watchers (one connection each) on one type/prefix while
//!   one writer puts objects one at a time, spaced, so it measures latency rather than queueing.
//!
//! Every store syncs every commit to disk: sqlite runs WAL with `synchronous=FULL`, etcd fsyncs its
//! WAL on every commit by default. All keep their data in a temp dir (under `$TMPDIR`, else /tmp).
//!
//! Run it with `cargo bench -p apiserver --bench rube-bench`. It prints a markdown table with the
//! three figures and both Rube/etcd ratios; `docs/benchmarks.md` records a run. When etcd is
//! missing, both etcd columns read n/a and the run says so loudly. Knobs, for quick runs:
//! `RUBE_BENCH_PUT_SECS` (measured seconds per put row, default 8), `RUBE_BENCH_WATCH_EVENTS`
//! (puts the watchers wait for, default 600), `ETCD_BIN` (default `/usr/bin/etcd`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use apiserver::admission::Limits;
use apiserver::metrics::Metrics;
use apiserver::store::etcd::{EtcdOptions, EtcdStore};
use apiserver::store::sqlite::SqliteOptions;
use apiserver::testing::TestServer;
use futures::{Stream, StreamExt};
use hdrhistogram::Histogram;
use rubeapi::rube::{Outcome, Selector, watch_event};
use rubeapi::runink::Slice;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEFAULT_ETCD: &str = "/usr/bin/etcd";
/// Bytes of changing payload in every put: the etcd value, the `PAYLOAD` env var of the Slice.
const PAYLOAD_BYTES: usize = 256;
/// Each put client cycles over this many keys, so the data set stays small and puts overwrite.
const KEYS_PER_CLIENT: u64 = 1000;
/// Time each put row runs before it starts counting: connections warm, caches filled.
const WARMUP: Duration = Duration::from_secs(1);
const WATCHERS: usize = 100;
/// The writer in the watch test starts a put at most this often.
const WATCH_SPACING: Duration = Duration::from_millis(10);
/// How long a watcher waits for the rest of its events once the writer is done.
const WATCH_GRACE: Duration = Duration::from_secs(15);
/// The Slice type the Rube side writes and watches.
const SLICE: &str = "runink.Slice";
/// Where Rube's etcd store keeps its keys; etcd's own workload writes under `/bench/`.
const RUBE_ETCD_PREFIX: &str = "/rube-bench";
/// The systems, in the table's column order.
const SYSTEMS: usize = 3;

fn main() -> Result<()> {
    let config = Config::from_env()?;
    let etcd_bin =
        PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| DEFAULT_ETCD.to_owned()));
    let rube_dir = tempfile::Builder::new()
        .prefix("rube-bench-")
        .tempdir()
        .context("create Rube's data dir")?;

    // etcd is spawned outside the runtime and its guard lives on main's stack, so a panic
    // anywhere below (it propagates out of block_on) still kills it while unwinding.
    let mut etcd = match etcd_version(&etcd_bin) {
        Some(version) => Some(EtcdProcess::spawn_with_retries(&etcd_bin, version)?),
        None => {
            loud_warning(&format!(
                "{} is not there (or does not run), so the etcd peer was SKIPPED: only Rube on \
                 sqlite is measured and both etcd columns read n/a. Install it with \
                 `apt-get install etcd-server` or point ETCD_BIN at an etcd binary.",
                etcd_bin.display()
            ));
            None
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    let report = runtime.block_on(run(&config, rube_dir.path(), etcd.as_mut()));
    drop(runtime);
    if let (Err(_), Some(etcd)) = (&report, etcd.as_mut()) {
        // Its data dir, log included, goes with it: say what became of it first.
        eprintln!("{}", etcd.diagnosis());
    }
    drop(etcd);
    let report = report?;
    print!("{report}");
    Ok(())
}

/// The run's knobs.
struct Config {
    put_window: Duration,
    watch_events: usize,
}

impl Config {
    fn from_env() -> Result<Config> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(value) => value
                    .parse()
                    .with_context(|| format!("{name}={value} is not a number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Config {
            put_window: Duration::from_secs(number("RUBE_BENCH_PUT_SECS", 8)?.max(1)),
            watch_events: number("RUBE_BENCH_WATCH_EVENTS", 600)?.max(1) as usize,
        })
    }
}

async fn run(config: &Config, rube_dir: &Path, etcd: Option<&mut EtcdProcess>) -> Result<String> {
    let server = TestServer::start_in(rube_dir, SqliteOptions::default(), Limits::default()).await;
    let rube_sqlite = Target::Rube {
        config: server.config().clone(),
        store: "sqlite",
        etcd_pid: None,
    };
    let etcd = match etcd {
        Some(process) => {
            process.wait_ready().await?;
            let pid = process.child.id();
            let rube_server = RubeOnEtcd::start(&process.endpoint, &server).await?;
            Some((
                Target::Rube {
                    config: rube_server.config.clone(),
                    store: "etcd",
                    etcd_pid: Some(pid),
                },
                Target::Etcd {
                    endpoint: process.endpoint.clone(),
                    pid,
                },
                process.version.clone(),
                rube_server,
            ))
        }
        None => None,
    };
    // The table's columns: Rube on sqlite, Rube on etcd, etcd.
    let systems: [Option<&Target>; SYSTEMS] = [
        Some(&rube_sqlite),
        etcd.as_ref().map(|(rube, ..)| rube),
        etcd.as_ref().map(|(_, etcd, ..)| etcd),
    ];

    let mut header = String::new();
    writeln!(header, "## rube-bench")?;
    writeln!(header)?;
    writeln!(
        header,
        "- machine: {} cores (available parallelism), tokio runtime with {0} workers; Rube in-process, etcd a child process",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        header,
        "- Rube (sqlite): WAL, synchronous=FULL, in {} on {}",
        rube_dir.display(),
        filesystem_of(rube_dir)
    )?;
    match &etcd {
        Some((_, Target::Etcd { endpoint, .. }, version, _)) => {
            writeln!(
                header,
                "- Rube (etcd): the etcd store under key prefix {RUBE_ETCD_PREFIX}, on the etcd below"
            )?;
            writeln!(
                header,
                "- etcd: {version} at {endpoint}, default fsync on every commit, data in {}",
                filesystem_of(&std::env::temp_dir())
            )?;
        }
        _ => writeln!(
            header,
            "- Rube (etcd) and etcd: SKIPPED (etcd binary missing), their columns read n/a"
        )?,
    }
    writeln!(
        header,
        "- puts: {} B payload, every put a change, {}s measured after {}s warm-up, one connection per client",
        PAYLOAD_BYTES,
        config.put_window.as_secs(),
        WARMUP.as_secs()
    )?;
    writeln!(
        header,
        "- watch: {WATCHERS} watchers (one connection each), {} puts one at a time, at most one per {} ms",
        config.watch_events,
        WATCH_SPACING.as_millis()
    )?;
    eprint!("{header}");

    let mut rows = Vec::new();
    // CPU use of every measured window, to show how much of the machine others took.
    let mut windows: Vec<(String, CpuUse)> = Vec::new();
    for clients in [1, 64] {
        let plural = if clients == 1 { "" } else { "s" };
        let mut figures: [Option<PutFigures>; SYSTEMS] = [None, None, None];
        for (slot, system) in figures.iter_mut().zip(systems) {
            if let Some(target) = system {
                let measured = measure_puts(target, clients, config).await?;
                windows.push((
                    format!("{} puts, {clients} client{plural}", target.name()),
                    measured.cpu,
                ));
                *slot = Some(measured);
            }
        }
        rows.push(Row::new(
            format!("durable puts/s, {clients} client{plural}"),
            0,
            &figures,
            |f| f.per_second,
        ));
        for (label, quantile) in [("p50", 0.5), ("p99", 0.99)] {
            rows.push(Row::new(
                format!("put latency {label}, {clients} client{plural} (ms)"),
                2,
                &figures,
                |f| f.latency_ms(quantile),
            ));
        }
        rows.push(Row::new(
            format!("CPU per put, {clients} client{plural} (µs, servers + clients)"),
            0,
            &figures,
            |f| f.cpu_per_op_us,
        ));
    }

    let mut watches: [Option<WatchFigures>; SYSTEMS] = [None, None, None];
    for (slot, system) in watches.iter_mut().zip(systems) {
        if let Some(target) = system {
            let measured = measure_watch(target, config).await?;
            windows.push((format!("{} watch", target.name()), measured.cpu));
            *slot = Some(measured);
        }
    }
    for (label, quantile) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        rows.push(Row::new(
            format!("put→watch latency {label}, {WATCHERS} watchers (ms)"),
            2,
            &watches,
            |w| w.delivery_ms(quantile),
        ));
    }
    rows.push(Row::new(
        format!("writer's put latency p50 while {WATCHERS} watch (ms)"),
        2,
        &watches,
        |w| w.put_ms(0.5),
    ));
    rows.push(Row::new(
        format!("CPU per put delivered to {WATCHERS} watchers (µs, servers + writer + watchers)"),
        0,
        &watches,
        |w| w.cpu_per_op_us,
    ));
    let mut report = String::new();
    writeln!(report)?;
    report.push_str(&header);
    writeln!(report)?;
    report.push_str(&table(&rows));
    writeln!(report)?;
    let received: Vec<String> = watches
        .iter()
        .zip(systems)
        .filter_map(|(watch, system)| {
            let (watch, target) = (watch.as_ref()?, system?);
            Some(format!(
                "{} {}/{}",
                target.name(),
                watch.received,
                watch.expected
            ))
        })
        .collect();
    writeln!(
        report,
        "Watch deliveries received: {}.",
        received.join(", ")
    )?;
    writeln!(report)?;
    report.push_str(&contention(&windows));
    if etcd.is_none() {
        writeln!(report)?;
        writeln!(
            report,
            "**etcd was skipped: no etcd binary. Rube (etcd), etcd and both ratios are n/a.**"
        )?;
    }
    server.stop().await;
    if let Some((.., rube_server)) = etcd {
        rube_server.stop().await?;
    }
    Ok(report)
}

/// Rube's apiserver on the etcd store, in-process on 127.0.0.1 port 0, with the sqlite
/// server's CAs (so the same admin credential works on both).
struct RubeOnEtcd {
    config: rubeapi::rube::ClientConfig,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
}

impl RubeOnEtcd {
    async fn start(endpoint: &str, sqlite: &TestServer) -> Result<RubeOnEtcd> {
        let store = EtcdStore::connect(
            EtcdOptions {
                endpoints: vec![format!("http://{endpoint}")],
                prefix: RUBE_ETCD_PREFIX.into(),
            },
            rubeapi::Registry::builtin(),
        )
        .await
        .context("connect Rube's etcd store")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind port 0 for Rube on etcd")?;
        let config = rubeapi::rube::ClientConfig {
            server: listener.local_addr()?.to_string(),
            ..sqlite.config().clone()
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(apiserver::serve(
            listener,
            sqlite.pki.serving(&[])?,
            Arc::new(store),
            rubeapi::Registry::builtin(),
            Limits::default(),
            Arc::new(Metrics::new()),
            stop.clone().cancelled_owned(),
        ));
        let task = tokio::spawn(async move {
            task.await
                .context("Rube on etcd: the server task")?
                .context("Rube on etcd: the server")
        });
        Ok(RubeOnEtcd {
            config,
            stop,
            task: Some(task),
        })
    }

    /// Stops the server gracefully and waits for it.
    async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RubeOnEtcd {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A system under test.
#[derive(Clone)]
enum Target {
    /// Rube's apiserver (the admin's configuration for it) on the named store; on etcd, the
    /// etcd process's pid.
    Rube {
        config: rubeapi::rube::ClientConfig,
        store: &'static str,
        etcd_pid: Option<u32>,
    },
    /// etcd's client endpoint, `host:port`, and its process.
    Etcd { endpoint: String, pid: u32 },
}

/// One client connection to a target.
enum Connection {
    Rube(rubeapi::Client),
    /// Boxed: etcd's client is some kilobytes.
    Etcd(Box<etcd_client::Client>),
}

/// Names of the objects a watch delivered, one batch per message.
type Names = Pin<Box<dyn Stream<Item = Result<Vec<String>>> + Send>>;

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Rube { store, .. } => format!("Rube ({store})"),
            Target::Etcd { .. } => "etcd".to_owned(),
        }
    }

    /// A process whose CPU counts as the target's besides this one's: the etcd server, whether
    /// the bench drives it directly or through Rube.
    fn server_pid(&self) -> Option<u32> {
        match self {
            Target::Rube { etcd_pid, .. } => *etcd_pid,
            Target::Etcd { pid, .. } => Some(*pid),
        }
    }

    async fn connect(&self) -> Result<Connection> {
        Ok(match self {
            Target::Rube { config, .. } => {
                Connection::Rube(rubeapi::Client::connect(config).await?)
            }
            Target::Etcd { endpoint, .. } => Connection::Etcd(Box::new(
                etcd_client::Client::connect([endpoint], None).await?,
            )),
        })
    }

    async fn connect_many(&self, count: usize) -> Result<Vec<Connection>> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            connections.push(self.connect().await?);
        }
        Ok(connections)
    }
}

impl Connection {
    /// Writes `payload` as object `name` of `group`: a Slice in namespace `group` for Rube, the
    /// key `/bench/<group>/<name>` for etcd. Fails when the put changed nothing.
    async fn put(&mut self, group: &str, name: &str, payload: String) -> Result<()> {
        match self {
            Connection::Rube(client) => {
                let spec = Slice {
                    command: "/usr/bin/bench-step".to_owned(),
                    env: HashMap::from([("PAYLOAD".to_owned(), payload)]),
                    ..Default::default()
                };
                let response = client
                    .put(rubeapi::object::new(group, name, &spec), None)
                    .await?;
                ensure!(
                    response.outcome() != Outcome::Unchanged,
                    "the put of {group}/{name} changed nothing"
                );
            }
            Connection::Etcd(client) => {
                client
                    .put(format!("/bench/{group}/{name}"), payload, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Watches every object of `group` from now on. Returns once the watch is established: every
    /// put sent after this returns is delivered.
    async fn watch(&mut self, group: &str) -> Result<Names> {
        match self {
            Connection::Rube(client) => {
                let selector = Selector {
                    r#type: SLICE.to_owned(),
                    namespace: group.to_owned(),
                    ..Default::default()
                };
                let mut events = Box::pin(client.watch(selector, None).await?);
                // A watch from "now" opens with a bookmark naming now.
                match events.next().await {
                    Some(Ok(event))
                        if matches!(event.event, Some(watch_event::Event::Bookmark(_))) => {}
                    other => bail!("a Rube watch did not open with a bookmark: {other:?}"),
                }
                Ok(Box::pin(events.map(|event| {
                    Ok(match event?.event {
                        Some(watch_event::Event::Update(object)) => {
                            vec![object.metadata.map(|m| m.name).unwrap_or_default()]
                        }
                        _ => Vec::new(),
                    })
                })))
            }
            Connection::Etcd(client) => {
                let prefix = format!("/bench/{group}/");
                let options = etcd_client::WatchOptions::new().with_prefix();
                let mut stream = client.watch(prefix.clone(), Some(options)).await?;
                let created = stream
                    .message()
                    .await?
                    .ok_or_else(|| anyhow!("an etcd watch ended before it was created"))?;
                ensure!(
                    created.created() && !created.canceled(),
                    "an etcd watch was not created: {}",
                    created.cancel_reason()
                );
                Ok(Box::pin(stream.map(move |response| {
                    let response = response?;
                    ensure!(
                        !response.canceled(),
                        "etcd cancelled a watch: {}",
                        response.cancel_reason()
                    );
                    Ok(response
                        .events()
                        .iter()
                        .filter_map(|event| event.kv())
                        .map(|kv| {
                            String::from_utf8_lossy(kv.key())
                                .trim_start_matches(&prefix)
                                .to_owned()
                        })
                        .collect())
                })))
            }
        }
    }
}

/// Latencies in microseconds, up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if quantile >= 1.0 {
        histogram.max() as f64 / 1000.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// A fresh, changing payload: `PAYLOAD_BYTES` letters and digits from a seeded xorshift.
fn payload(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..PAYLOAD_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

struct PutFigures {
    per_second: f64,
    latency: Histogram<u64>,
    /// CPU time of server and clients per put, in microseconds.
    cpu_per_op_us: f64,
    cpu: CpuUse,
}

impl PutFigures {
    fn latency_ms(&self, quantile: f64) -> f64 {
        quantile_ms(&self.latency, quantile)
    }
}

/// `clients` connections put as fast as they can, one put in flight each, for the warm-up and
/// then the measured window; puts started inside the window count.
async fn measure_puts(target: &Target, clients: usize, config: &Config) -> Result<PutFigures> {
    let name = target.name();
    eprintln!("measuring {name}: durable puts, {clients} concurrent client(s) ...");
    let group = format!("puts-{clients}");
    let connections = target.connect_many(clients).await?;
    let measure_from = Instant::now() + WARMUP;
    let deadline = measure_from + config.put_window;
    let mut tasks = Vec::with_capacity(clients);
    for (client, mut connection) in connections.into_iter().enumerate() {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut counted = 0u64;
            for seq in 0u64.. {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                let key = format!("c{client}-k{}", seq % KEYS_PER_CLIENT);
                connection
                    .put(&group, &key, payload(((client as u64) << 40) | seq))
                    .await?;
                if started >= measure_from {
                    latency.record(micros(started.elapsed()))?;
                    counted += 1;
                }
            }
            anyhow::Ok((counted, latency))
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = CpuSample::take(target.server_pid());
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = CpuSample::take(target.server_pid()).since(&before);
    let mut total = 0;
    let mut latency = histogram();
    for task in tasks {
        let (counted, histogram) = task.await??;
        total += counted;
        latency.add(histogram)?;
    }
    Ok(PutFigures {
        per_second: total as f64 / config.put_window.as_secs_f64(),
        latency,
        cpu_per_op_us: cpu.ours * 1e6 / total.max(1) as f64,
        cpu,
    })
}

struct WatchFigures {
    delivery: Histogram<u64>,
    put: Histogram<u64>,
    received: u64,
    expected: u64,
    /// CPU time of server, writer and watchers per put, in microseconds.
    cpu_per_op_us: f64,
    cpu: CpuUse,
}

impl WatchFigures {
    fn delivery_ms(&self, quantile: f64) -> f64 {
        quantile_ms(&self.delivery, quantile)
    }

    fn put_ms(&self, quantile: f64) -> f64 {
        quantile_ms(&self.put, quantile)
    }
}

/// `WATCHERS` watches on one group; one writer puts `watch_events` new objects one at a time,
/// noting when each put was sent; each watcher measures from there to the event's arrival.
async fn measure_watch(target: &Target, config: &Config) -> Result<WatchFigures> {
    let name = target.name();
    eprintln!("measuring {name}: put→watch latency, {WATCHERS} watchers ...");
    let group = "watch";
    let events = config.watch_events;
    let epoch = Instant::now();
    // When put i was sent, in nanoseconds since `epoch`; stored before the put is sent, so a
    // watcher that sees the event always finds it.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let writer_done = CancellationToken::new();

    let mut watchers = Vec::with_capacity(WATCHERS);
    for mut connection in target.connect_many(WATCHERS).await? {
        let mut names = connection.watch(group).await?;
        let sent = sent.clone();
        let writer_done = writer_done.clone();
        watchers.push(tokio::spawn(async move {
            // Keeps the connection open for as long as the stream is read.
            let _connection = connection;
            let mut delivery = histogram();
            let mut received = 0u64;
            let grace = async {
                writer_done.cancelled().await;
                tokio::time::sleep(WATCH_GRACE).await;
            };
            tokio::pin!(grace);
            while received < events as u64 {
                let batch = tokio::select! {
                    batch = names.next() => batch,
                    () = &mut grace => break,
                };
                let arrived = epoch.elapsed();
                let Some(batch) = batch else { break };
                for name in batch? {
                    let index: usize = name
                        .strip_prefix("w-")
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| anyhow!("unexpected object {name} in the watch"))?;
                    let sent_at = Duration::from_nanos(sent[index].load(Ordering::Acquire));
                    delivery.record(micros(arrived.saturating_sub(sent_at)))?;
                    received += 1;
                }
            }
            anyhow::Ok((received, delivery))
        }));
    }

    let mut writer = target.connect().await?;
    let before = CpuSample::take(target.server_pid());
    let mut put = histogram();
    let mut ticker = tokio::time::interval(WATCH_SPACING);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (index, slot) in sent.iter().enumerate() {
        ticker.tick().await;
        let started = Instant::now();
        slot.store(
            u64::try_from(started.duration_since(epoch).as_nanos())?,
            Ordering::Release,
        );
        writer
            .put(group, &format!("w-{index}"), payload(index as u64))
            .await?;
        put.record(micros(started.elapsed()))?;
    }
    writer_done.cancel();

    let mut delivery = histogram();
    let mut received = 0;
    for watcher in watchers {
        let (count, histogram) = watcher.await??;
        received += count;
        delivery.add(histogram)?;
    }
    let cpu = CpuSample::take(target.server_pid()).since(&before);
    Ok(WatchFigures {
        delivery,
        put,
        received,
        expected: (events * WATCHERS) as u64,
        cpu_per_op_us: cpu.ours * 1e6 / events as f64,
        cpu,
    })
}

struct Row {
    what: String,
    /// Rube (sqlite), Rube (etcd), etcd: `None` for a system that was skipped.
    values: [Option<f64>; SYSTEMS],
    decimals: usize,
}

impl Row {
    fn new<T>(
        what: String,
        decimals: usize,
        figures: &[Option<T>; SYSTEMS],
        value: impl Fn(&T) -> f64,
    ) -> Row {
        Row {
            what,
            values: figures.each_ref().map(|f| f.as_ref().map(&value)),
            decimals,
        }
    }
}

/// The markdown table: the three systems' figures, then Rube (sqlite)/etcd and Rube (etcd)/etcd.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| measurement | Rube (sqlite) | Rube (etcd) | etcd | Rube sqlite/etcd | Rube etcd/etcd |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let figure = |value: Option<f64>| match value {
            Some(value) => format!("{:.*}", row.decimals, value),
            None => "n/a".to_owned(),
        };
        let ratio = |value: Option<f64>| match (value, row.values[2]) {
            (Some(value), Some(etcd)) if etcd > 0.0 => format!("{:.2}", value / etcd),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.what,
            figure(row.values[0]),
            figure(row.values[1]),
            figure(row.values[2]),
            ratio(row.values[0]),
            ratio(row.values[1]),
        );
    }
    out
}

/// How much CPU others took during the measured windows; a loud warning when it is enough to
/// distort the figures (another build or test run on the same machine, say).
fn contention(windows: &[(String, CpuUse)]) -> String {
    // The window where `part` took the largest share of the machine, and that share in percent.
    let worst = |part: fn(&CpuUse) -> f64| {
        windows
            .iter()
            .map(|(name, use_)| {
                (
                    name.as_str(),
                    100.0 * part(use_) / use_.machine.max(f64::EPSILON),
                )
            })
            .fold(
                ("none", 0.0),
                |worst, this| if this.1 > worst.1 { this } else { worst },
            )
    };
    let (others_in, others) = worst(|use_| use_.others);
    let (steal_in, steal) = worst(|use_| use_.steal);
    let mut out = format!(
        "Machine CPU taken during the measured windows by other processes: at most {others:.1}% \
         ({others_in}); by the hypervisor (steal): at most {steal:.1}% ({steal_in}).\n"
    );
    // Steal of up to about 25% shows up in the fsync-bound 1-client windows on the 2-core VM the
    // figures in docs/benchmarks.md come from, run after run, so only more than that counts as
    // disturbed.
    if others > 10.0 || steal > 30.0 {
        let warning = format!(
            "too much of the machine's CPU went elsewhere during a measured window (other processes \
             {others:.1}% in \"{others_in}\", hypervisor steal {steal:.1}% in \"{steal_in}\"): the \
             figures are disturbed, run again on a quiet machine"
        );
        loud_warning(&warning);
        out.push_str(&format!("\n**WARNING: {warning}.**\n"));
    }
    out
}

/// CPU counters from /proc, in clock ticks (USER_HZ: 100 a second on Linux).
struct CpuSample {
    /// Busy ticks of the whole machine, steal excluded.
    busy: u64,
    steal: u64,
    /// All ticks of the whole machine (elapsed time × cores).
    total: u64,
    /// This process's ticks plus the target server's, when it is another process.
    ours: u64,
}

/// CPU seconds used between two samples.
#[derive(Clone, Copy)]
struct CpuUse {
    /// This process and the target server.
    ours: f64,
    /// Everything else on the machine.
    others: f64,
    steal: f64,
    /// What the machine had: elapsed seconds × cores.
    machine: f64,
}

const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    fn take(server: Option<u32>) -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        let process = |path: &str| -> u64 {
            // utime and stime are fields 14 and 15; the command name before them may hold spaces.
            let stat = std::fs::read_to_string(path).unwrap_or_default();
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ticks(11) + ticks(12)
        };
        let ours = process("/proc/self/stat")
            + server.map_or(0, |pid| process(&format!("/proc/{pid}/stat")));
        CpuSample {
            busy: field(0) + field(1) + field(2) + field(5) + field(6),
            steal: field(7),
            total: (0..8).map(field).sum(),
            ours,
        }
    }

    fn since(&self, earlier: &CpuSample) -> CpuUse {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let ours = self.ours.saturating_sub(earlier.ours);
        CpuUse {
            ours: seconds(ours),
            others: seconds(self.busy.saturating_sub(earlier.busy).saturating_sub(ours)),
            steal: seconds(self.steal.saturating_sub(earlier.steal)),
            machine: seconds(self.total.saturating_sub(earlier.total)),
        }
    }
}

/// The file system `path` is on, as `/dev/vda (ext4)`, from /proc/self/mounts; a warning when
/// it is memory-backed, since then fsync costs nothing and the figures are not disk figures.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount)
                .then_some((mount.len(), device, kind))
        })
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, device, kind)) if matches!(kind, "tmpfs" | "ramfs") => {
            loud_warning(&format!(
                "{} is on {kind}: fsync is free there, so these are not durable-write figures",
                path.display()
            ));
            format!("{device} ({kind}, NOT A DISK)")
        }
        Some((_, device, kind)) => format!("{device} ({kind})"),
        None => "an unknown file system".to_owned(),
    }
}

/// Prints a warning that nobody can miss, on stderr and stdout.
fn loud_warning(message: &str) {
    let line = "!".repeat(78);
    let text = format!("\n{line}\n!! WARNING: {message}\n{line}\n");
    eprintln!("{text}");
    println!("{text}");
}

/// `etcd --version`'s first line, or `None` when the binary is missing or does not run.
fn etcd_version(bin: &Path) -> Option<String> {
    let output = Command::new(bin).arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next().unwrap_or("etcd").trim().to_owned())
}

/// A single-member etcd on loopback ports and a temp data dir, killed when dropped.
struct EtcdProcess {
    child: Child,
    endpoint: String,
    version: String,
    log: PathBuf,
    /// Removed after the child is gone (fields drop after `Drop::drop`).
    _data: tempfile::TempDir,
}

impl EtcdProcess {
    /// Starts etcd, trying fresh ports a few times: another process may take a port between
    /// our probe and etcd's bind.
    fn spawn_with_retries(bin: &Path, version: String) -> Result<EtcdProcess> {
        let mut last = None;
        for _ in 0..3 {
            match EtcdProcess::spawn(bin, version.clone()) {
                Ok(mut process) => match process.check_running() {
                    Ok(()) => return Ok(process),
                    Err(error) => last = Some(error),
                },
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("etcd did not start")))
    }

    fn spawn(bin: &Path, version: String) -> Result<EtcdProcess> {
        let data = tempfile::Builder::new()
            .prefix("etcd-bench-")
            .tempdir()
            .context("create etcd's data dir")?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = data.path().join("etcd.log");
        let log_file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", data.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        eprintln!(
            "started etcd (pid {}) on {client_url}, log {}",
            child.id(),
            log.display()
        );
        Ok(EtcdProcess {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            version,
            log,
            _data: data,
        })
    }

    /// Fails, with the log's tail, when etcd already exited (a port clash shows up at once).
    fn check_running(&mut self) -> Result<()> {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "etcd exited with {status}; its log ends:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits until etcd answers a read, for up to 20 s.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "etcd exited with {status}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            let attempt = async {
                let mut client = etcd_client::Client::connect([&self.endpoint], None).await?;
                client.get("/bench/ready", None).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(error)) => bail!(
                    "etcd is not ready after 20 s: {error}; its log ends:\n{}",
                    self.log_tail()
                ),
                Err(_) => bail!(
                    "etcd is not ready after 20 s; its log ends:\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    /// Whether etcd still runs, and its log's tail.
    fn diagnosis(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("etcd (pid {}) had exited with {status}", self.child.id()),
            Ok(None) => format!("etcd (pid {}) was still running", self.child.id()),
            Err(error) => format!(
                "etcd (pid {}) is in an unknown state: {error}",
                self.child.id()
            ),
        };
        format!("{state}; its log ends:\n{}", self.log_tail())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // Only this child, by its pid; then reap it so no zombie is left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped etcd (pid {})", self.child.id());
    }
}

/// A loopback port that was free a moment ago: bound to port 0, then released.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a probe port")?;
    Ok(listener.local_addr()?.port())
}
