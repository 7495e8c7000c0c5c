//! Put to status, end to end with real processes: the `rube-apiserver` binary (sqlite on a temp
//! dir) and the `rubelet` binary (slice controller only), then n slices of `/bin/true` (restart
//! policy NEVER), one at a time. For each: the time from `client.put` returning until a watcher
//! sees (a) the first status written for generation 1 (phase RUNNING, or SUCCEEDED when the
//! workload was already done) and (b) phase SUCCEEDED.
//!
//! The peer, in the same run: `sh -c` making a cgroup by hand under the rubelet's subtree in the
//! v1 memory hierarchy, joining it, running `unshare --fork --pid --mount-proc /bin/true`,
//! leaving it and removing it (the shape of `slices/benches/slice-start.rs`'s baseline).
//!
//! Needs root (cgroups, namespaces); without it, it says so and exits 0. Builds
//! `rube-apiserver` next to the `rubelet` binary first (cargo does not build other packages'
//! binaries for a bench). Cleans up every process and cgroup it made, also on panic. Prints a
//! markdown table. The rubelet logs at its default level (info) unless `RUST_LOG` says otherwise;
//! `RUBE_BENCH_RUBELET_LOG=FILE` keeps its log.
//!
//! `cargo bench -p rubelet --bench put-to-status [-- N]` (N defaults to 200)

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgroups::{CgroupPath, Hierarchy};
use futures::StreamExt;
use rubeapi::Client;
use rubeapi::object::ObjectExt;
use rubeapi::rube::watch_event::Event;
use rubeapi::rube::{Object, Selector};
use rubeapi::runink::slice_status::Phase;
use rubeapi::runink::{RestartPolicy, SliceStatus};

const SLICE: &str = "runink.Slice";
const NAMESPACE: &str = "bench";
/// Slices run before the measured ones, so that no sample pays for a cold start.
const WARMUP: usize = 5;
/// Longest wait for one status before the bench fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The directory cargo put this bench's `rubelet` in: `target/<profile>`.
fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rubelet"))
        .parent()
        .expect("target/<profile>")
        .to_owned()
}

/// Builds `rube-apiserver` with the same profile into the same target dir (a no-op when it is
/// up to date), so the bench never measures a stale binary.
fn build_apiserver() -> PathBuf {
    let dir = profile_dir();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let target = dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "apiserver",
            "--bin",
            "rube-apiserver",
        ])
        .arg("--target-dir")
        .arg(target);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    eprintln!("put-to-status: building rube-apiserver ({profile}) with {cargo}");
    let status = command.status().expect("run cargo");
    assert!(
        status.success(),
        "`cargo build -p apiserver --bin rube-apiserver` failed; build it by hand into {}",
        dir.display()
    );
    let bin = dir.join("rube-apiserver");
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Reads the child's first stdout line, `listening on ADDR`.
fn listening(child: &mut Child, what: &str, log: &Path) {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    assert!(
        line.starts_with("listening on "),
        "{what} did not start: {line:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The apiserver and the rubelet. Dropping it kills the rubelet, removes its cgroup subtree
/// (and whatever is left in it), then kills the apiserver: on success and on panic alike.
struct Node {
    name: String,
    addr: String,
    subtree: String,
    dir: tempfile::TempDir,
    apiserver: Option<Child>,
    rubelet: Option<Child>,
}

impl Node {
    /// The admin's client configuration the apiserver wrote in its data dir.
    fn config_path(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("data")
            .join(rubeapi::config::ADMIN_FILE)
    }

    fn start(apiserver_bin: &Path) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = Node {
            name: format!("bench-{}", std::process::id()),
            addr: format!("127.0.0.1:{}", free_port()),
            subtree: format!("rube-bench-{}", std::process::id()),
            dir,
            apiserver: None,
            rubelet: None,
        };
        let data = node.dir.path().join("data");
        let state = node.dir.path().join("state");
        let apiserver_log = node.dir.path().join("apiserver.log");
        let mut apiserver = Command::new(apiserver_bin)
            .args([
                "--listen",
                &node.addr,
                "--metrics-listen",
                "off",
                "--data-dir",
            ])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&apiserver_log).expect("apiserver log"))
            .spawn()
            .expect("start rube-apiserver");
        listening(&mut apiserver, "rube-apiserver", &apiserver_log);
        node.apiserver = Some(apiserver);

        let mut rubelet = Command::new(env!("CARGO_BIN_EXE_rubelet"))
            .args(["--name", &node.name, "--server", &node.addr, "--token"])
            .arg(
                std::fs::read_to_string(data.join(rubeapi::config::TOKEN_FILE))
                    .expect("the join token")
                    .trim(),
            )
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--cgroup-subtree", &node.subtree])
            .args(["--controllers", "slices"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(node.rubelet_log()).expect("rubelet log"))
            .spawn()
            .expect("start rubelet");
        listening(&mut rubelet, "rubelet", &node.rubelet_log());
        node.rubelet = Some(rubelet);
        node
    }

    fn rubelet_log(&self) -> PathBuf {
        self.dir.path().join("rubelet.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.rubelet_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(keep) = std::env::var("RUBE_BENCH_RUBELET_LOG") {
            let _ = std::fs::copy(self.rubelet_log(), keep);
        }
        if let Some(mut rubelet) = self.rubelet.take() {
            let _ = rubelet.kill();
            let _ = rubelet.wait();
        }
        // Shims and workloads outlive the rubelet by design; the bench's must not outlive it.
        match Hierarchy::detect(&self.subtree) {
            Ok(hierarchy) => {
                if let Err(error) =
                    hierarchy.remove(&CgroupPath::root(), Duration::from_millis(500))
                {
                    eprintln!(
                        "put-to-status: could not remove cgroup subtree {}: {error}",
                        self.subtree
                    );
                }
            }
            Err(error) => eprintln!("put-to-status: no cgroups to clean up: {error}"),
        }
        if let Some(mut apiserver) = self.apiserver.take() {
            let _ = apiserver.kill();
            let _ = apiserver.wait();
        }
    }
}

fn slice(name: &str, node: &str) -> Object {
    rubeapi::testing::slice(NAMESPACE, name)
        .restart(RestartPolicy::Never)
        .node(node)
        .build()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn ts_ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// One slice, from the put returning to SUCCEEDED.
struct Sample {
    first_status: Duration,
    succeeded: Duration,
    /// The first status written was already SUCCEEDED (RUNNING was never written).
    first_was_final: bool,
    /// From the put returning to the workload's start, as the shim recorded it (wall-clock ms).
    to_start_ms: i64,
    /// From the workload's finish, as recorded, to the watcher seeing SUCCEEDED (wall-clock ms).
    finish_to_seen_ms: i64,
}

type Events = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<rubeapi::rube::WatchEvent, rubeapi::Error>> + Send>,
>;

/// Puts slice `name` and follows it on `events` until it succeeded.
async fn run_one(client: &Client, events: &mut Events, node: &Node, name: &str) -> Sample {
    client
        .put(slice(name, &node.name), None)
        .await
        .expect("put");
    let (put, put_wall) = (Instant::now(), SystemTime::now());
    let mut first: Option<(Duration, bool)> = None;
    loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no status for {name} within {PATIENCE:?}\n--- rubelet log ---\n{}",
                    node.log_tail()
                )
            })
            .expect("the watch ended")
            .expect("watch");
        let Some(Event::Update(object)) = event.event else {
            continue;
        };
        if object.name() != name {
            continue;
        }
        let Some(status) = object.status_as::<SliceStatus>().expect("a slice status") else {
            continue;
        };
        let seen = put.elapsed();
        let phase = status.phase();
        assert!(
            matches!(phase, Phase::Running | Phase::Succeeded),
            "{name}: unexpected status {status:?}\n--- rubelet log ---\n{}",
            node.log_tail()
        );
        if status.observed_generation == 1 && first.is_none() {
            first = Some((seen, phase == Phase::Succeeded));
        }
        if phase == Phase::Succeeded {
            let (first_status, first_was_final) = first.expect("a first status");
            let started = ts_ms(status.start_time.as_ref()).expect("a start time");
            let finished = ts_ms(status.finish_time.as_ref()).expect("a finish time");
            return Sample {
                first_status,
                succeeded: seen,
                first_was_final,
                to_start_ms: started - unix_ms(put_wall),
                finish_to_seen_ms: unix_ms(SystemTime::now()) - finished,
            };
        }
    }
}

/// The own cgroup in the v1 memory hierarchy, from /proc/self/cgroup (`N:memory:/path`).
fn own_memory_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("cgroup.procs").is_file().then_some(dir)
}

/// The peer: a shell makes a leaf under the rubelet's subtree in the memory hierarchy, joins it,
/// runs `/bin/true` in new pid and mount namespaces, leaves and removes the leaf. Wall time from
/// spawning `sh` to its exit.
fn peer(own: &Path, subtree: &str, i: usize) -> Duration {
    let leaf = own.join(subtree).join(format!("peer-{i}"));
    let script = format!(
        "set -e; mkdir -p {leaf}; echo $$ > {leaf}/cgroup.procs; \
         unshare --fork --pid --mount-proc /bin/true; \
         echo $$ > {own}/cgroup.procs; rmdir {leaf}",
        leaf = leaf.display(),
        own = own.display(),
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("sh");
    let elapsed = started.elapsed();
    assert!(status.success(), "the peer failed: {script}");
    elapsed
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn percentile_ms(values: &mut [i64], p: usize) -> i64 {
    values.sort_unstable();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn bench(node: &Node, n: usize) -> (Vec<Sample>, Option<Vec<Duration>>) {
    let config = rubeapi::config::load(&node.config_path()).expect("the admin configuration");
    let client = Client::connect(&config).await.expect("connect");
    let selector = Selector {
        r#type: SLICE.into(),
        namespace: NAMESPACE.into(),
        labels: format!("node={}", node.name),
        ..Default::default()
    };
    let mut events: Events = Box::pin(client.watch(selector, None).await.expect("watch"));
    // The opening bookmark says the watch is established.
    loop {
        let event = events.next().await.expect("a bookmark").expect("watch");
        if matches!(event.event, Some(Event::Bookmark(_))) {
            break;
        }
    }
    for i in 0..WARMUP {
        run_one(&client, &mut events, node, &format!("warmup-{i}")).await;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        samples.push(run_one(&client, &mut events, node, &format!("s{i:04}")).await);
    }

    let peer = match own_memory_cgroup() {
        Some(own) => {
            for i in 0..WARMUP {
                peer(&own, &node.subtree, i);
            }
            Some((0..n).map(|i| peer(&own, &node.subtree, i)).collect())
        }
        None => {
            eprintln!(
                "\n*** put-to-status: NO PEER: there is no cgroup v1 memory hierarchy under \
                 /sys/fs/cgroup/memory for this process ***\n"
            );
            None
        }
    };
    (samples, peer)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "\n*** put-to-status: SKIPPED. The rubelet needs root to make cgroups and \
             namespaces for slices; run `cargo bench -p rubelet --bench put-to-status` as root. ***\n"
        );
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let apiserver_bin = build_apiserver();
    let node = Node::start(&apiserver_bin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (started, machine) = (Instant::now(), apiserver::testing::machine_ticks());
    let (samples, peer) = runtime.block_on(bench(&node, n));
    let load = apiserver::testing::machine_load(machine);
    drop(node);
    eprintln!(
        "put-to-status: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut first: Vec<Duration> = samples.iter().map(|s| s.first_status).collect();
    let mut succeeded: Vec<Duration> = samples.iter().map(|s| s.succeeded).collect();
    first.sort();
    succeeded.sort();
    let peer = peer.map(|mut p| {
        p.sort();
        p
    });
    let peer_at = |p: usize| peer.as_ref().map(|v| percentile(v, p));
    let cell = |d: Option<Duration>| d.map_or("n/a".to_owned(), |d| format!("{:.2}", ms(d)));
    let ratio = |d: Duration, p: Option<Duration>| {
        p.map_or("n/a".to_owned(), |p| format!("{:.1}", ms(d) / ms(p)))
    };

    println!(
        "| n = {n} slices of `/bin/true`, one at a time | p50 ms | p99 ms | p50 / peer p50 | p99 / peer p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, sorted) in [
        (
            "(a) put returned → watcher sees the first status of generation 1",
            &first,
        ),
        ("(b) put returned → watcher sees SUCCEEDED", &succeeded),
    ] {
        let (p50, p99) = (percentile(sorted, 50), percentile(sorted, 99));
        println!(
            "| {label} | {:.2} | {:.2} | {} | {} |",
            ms(p50),
            ms(p99),
            ratio(p50, peer_at(50)),
            ratio(p99, peer_at(99)),
        );
    }
    println!(
        "| peer: `sh` + `mkdir`/`cgroup.procs` (memory) + `unshare --fork --pid --mount-proc /bin/true` + `rmdir` | {} | {} | | |",
        cell(peer_at(50)),
        cell(peer_at(99)),
    );
    println!();
    let final_first = samples.iter().filter(|s| s.first_was_final).count();
    // The slice controller notices a shim's exit by polling every 100 ms when its converge loop
    // did not already see it: those samples wait for the poll.
    let polled = samples.iter().filter(|s| s.finish_to_seen_ms > 50).count();
    let mut to_start: Vec<i64> = samples.iter().map(|s| s.to_start_ms).collect();
    let mut finish_to_seen: Vec<i64> = samples.iter().map(|s| s.finish_to_seen_ms).collect();
    println!(
        "First status already SUCCEEDED (RUNNING never written): {final_first} of {n}. \
         From the statuses' wall-clock timestamps (ms resolution): put returned → workload \
         started p50 {} ms, p99 {} ms; workload finished → watcher saw SUCCEEDED p50 {} ms, \
         p99 {} ms.",
        percentile_ms(&mut to_start, 50),
        percentile_ms(&mut to_start, 99),
        percentile_ms(&mut finish_to_seen, 50),
        percentile_ms(&mut finish_to_seen, 99),
    );
    println!(
        "SUCCEEDED seen more than 50 ms after the workload finished (the 100 ms shim-exit \
         poll, or a busy machine): {polled} of {n}."
    );
    println!();
    println!("Load: {load} (the bench, the apiserver, the rubelet and the peer included).");
}
