//! STREAMING throughput: `head -c N /dev/zero` | `cat` | `wc -c` as a three-step STREAMING
//! pipeline through a real `rubelet` process (slice and pipeline controllers, its own cgroup
//! subtree) and an apiserver (in this process: sqlite on a temp dir; it is only the control
//! plane here), against the same commands as a plain `sh -c` pipeline and as the same
//! pipeline with each command in a cgroup of its own (the slices' layout, no Rube), alternated
//! in one run.
//!
//! What is timed is the data phase, the same way on both sides: the first step prints a
//! nanosecond timestamp (`date +%s%N`, to its log) just before `head` starts writing, and the
//! last prints one after `wc -c` has read everything. Rube's FIFOs are open before a step's
//! command execs, so its first timestamp is taken once the pipe to `cat` is connected. The wall
//! time from the put of the pipeline until its status says SUCCEEDED (scheduling, three
//! shims, status writes included) is reported as well.
//!
//! Needs root (cgroups); without it, it says so and exits 0. Removes the rubelet's cgroup
//! subtree when done.
//!
//! `cargo bench -p rubelet --bench streaming [-- MB RUNS]` (defaults: 1000 MB, 5 runs)

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use apiserver::testing::TestServer;
use futures::StreamExt;
use harness::Rubelet;
use rubeapi::Client;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::Selector;
use rubeapi::rube::watch_event::Event;
use rubeapi::runink::pipeline::Mode;
use rubeapi::runink::pipeline_status::Phase;
use rubeapi::runink::{Pipeline, PipelineStatus, Step};

const NAMESPACE: &str = "bench";
const PIPELINE: &str = "runink.Pipeline";

fn step(name: &str, script: &str, depends_on: &[&str]) -> Step {
    Step {
        name: name.into(),
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    }
}

/// Nanosecond timestamps in `text`, one per line, and the other lines.
fn split_output(text: &str) -> (Vec<u128>, Vec<String>) {
    let mut stamps = Vec::new();
    let mut rest = Vec::new();
    for line in text.lines() {
        match line.trim().strip_prefix("t=").and_then(|t| t.parse().ok()) {
            Some(t) => stamps.push(t),
            None => rest.push(line.trim().to_owned()),
        }
    }
    (stamps, rest)
}

/// One shell run: (data phase, bytes counted). With `cgroups` (three lists of directories),
/// each command of the pipeline first moves itself into its own cgroup.
fn shell(bytes: u64, cgroups: Option<&[Vec<PathBuf>; 3]>) -> (Duration, u64) {
    let commands = [
        format!("head -c {bytes} /dev/zero"),
        "cat".to_owned(),
        "wc -c".to_owned(),
    ];
    let stages: Vec<String> = match cgroups {
        None => commands.to_vec(),
        Some(dirs) => commands
            .iter()
            .zip(dirs)
            .map(|(command, dirs)| {
                let mut join = String::new();
                for dir in dirs {
                    join.push_str(&format!("echo $$ > {}/cgroup.procs; ", dir.display()));
                }
                format!("sh -c '{join}exec {command}'")
            })
            .collect(),
    };
    let script = format!(
        "echo t=$(date +%s%N); {}; echo t=$(date +%s%N)",
        stages.join(" | ")
    );
    let output = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let (stamps, rest) = split_output(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(stamps.len(), 2, "{output:?}");
    let counted = rest[0].parse().expect("wc -c's count");
    (
        Duration::from_nanos((stamps[1] - stamps[0]) as u64),
        counted,
    )
}

/// The same commands connected by anonymous pipes of `pipe_bytes` each (`F_SETPIPE_SZ`), no
/// shell, no cgroups: what Rube's pipe buffer alone does. Timed from the spawn of the first to
/// the exit of the last (three process starts included, about 1 ms).
fn pipes_of(bytes: u64, pipe_bytes: i32) -> (Duration, u64) {
    use nix::fcntl::{FcntlArg, fcntl};
    use std::process::Stdio;
    let sized = || {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        fcntl(&r, FcntlArg::F_SETPIPE_SZ(pipe_bytes)).expect("F_SETPIPE_SZ");
        (r, w)
    };
    let ((r1, w1), (r2, w2)) = (sized(), sized());
    let started = Instant::now();
    let mut head = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::from(w1))
        .spawn()
        .expect("head");
    let mut pass = Command::new("cat")
        .stdin(Stdio::from(r1))
        .stdout(Stdio::from(w2))
        .spawn()
        .expect("cat");
    let count = Command::new("wc")
        .arg("-c")
        .stdin(Stdio::from(r2))
        .output()
        .expect("wc");
    let elapsed = started.elapsed();
    head.wait().expect("head");
    pass.wait().expect("cat");
    let counted = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .expect("wc -c's count");
    (elapsed, counted)
}

/// The whole output of slice `name` on `rubelet` (its log segments in the state dir).
fn slice_log(rubelet: &Rubelet, name: &str) -> String {
    let dir = rubelet
        .state
        .path()
        .join("slices")
        .join(NAMESPACE)
        .join(name);
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("output.") && n.ends_with(".log"))
        })
        .collect();
    segments.sort();
    segments
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

/// One Rube run: (data phase, put to SUCCEEDED, bytes counted).
async fn rube(
    client: &Client,
    rubelet: &Rubelet,
    name: &str,
    bytes: u64,
) -> (Duration, Duration, u64) {
    let spec = Pipeline {
        mode: Mode::Streaming as i32,
        steps: vec![
            step(
                "gen",
                &format!("echo t=$(date +%s%N) >&2; exec head -c {bytes} /dev/zero"),
                &[],
            ),
            step("pass", "exec cat", &["gen"]),
            step("count", "wc -c; echo t=$(date +%s%N)", &["pass"]),
        ],
        ..Default::default()
    };
    let started = Instant::now();
    let put = client
        .put(object::new(NAMESPACE, name, &spec), None)
        .await
        .expect("put the pipeline");
    // A watch, not polling: the bench must not take CPU from the pipeline while data flows.
    let selector = Selector {
        r#type: PIPELINE.into(),
        namespace: NAMESPACE.into(),
        name: name.into(),
        ..Default::default()
    };
    let from = put.object.as_ref().map_or(0, |o| o.revision());
    let events = client
        .watch(selector, Some(from))
        .await
        .expect("watch the pipeline");
    futures::pin_mut!(events);
    let finished = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(event) = events.next().await {
            let Some(Event::Update(object)) = event.expect("the watch").event else {
                continue;
            };
            let status: Option<PipelineStatus> = object.status_as().ok().flatten();
            match status.map(|s| s.phase) {
                Some(p) if p == Phase::Succeeded as i32 => return,
                Some(p) if p == Phase::Failed as i32 => {
                    panic!("{name} failed: {object:?}\n{}", rubelet.log())
                }
                _ => {}
            }
        }
        panic!("the watch of {name} ended");
    })
    .await;
    assert!(finished.is_ok(), "{name} did not finish\n{}", rubelet.log());
    let wall = started.elapsed();
    let (first, _) = split_output(&slice_log(rubelet, &format!("{name}.gen-1")));
    let (last, rest) = split_output(&slice_log(rubelet, &format!("{name}.count-1")));
    assert_eq!((first.len(), last.len()), (1, 1), "timestamps of {name}");
    let counted = rest[0].parse().expect("wc -c's count");
    client
        .delete(PIPELINE, NAMESPACE, name, None)
        .await
        .expect("delete the pipeline");
    (
        Duration::from_nanos((last[0] - first[0]) as u64),
        wall,
        counted,
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !harness::root_or_skip("the streaming benchmark") {
        return;
    }
    // `cargo bench` passes `--bench`; the numbers are ours.
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let megabytes = numbers.first().copied().unwrap_or(1000);
    let runs = numbers.get(1).copied().unwrap_or(5) as usize;
    let bytes = megabytes * 1_000_000;

    let server = TestServer::start().await;
    // The rubelet joins with it (the harness reads <data dir>/token).
    server.token().await;
    let client = server.client().await;
    let subtree = format!("rube-bench-streaming-{}", std::process::id());
    let rubelet = Rubelet::start_in(
        &subtree,
        "bench1",
        &server.config_path(),
        &[
            "--controllers",
            "slices,pipelines",
            "--election-lease",
            "3s",
        ],
    );
    // The second peer: the same shell pipeline with each command in a cgroup of its own,
    // laid out as the rubelet lays out slices (`<subtree>/<herd>/<slice>`, every v1
    // hierarchy): what running each step in its own cgroup costs, Rube or not.
    let peer_tree = cgroups::Hierarchy::detect(&format!("rube-bench-peer-{}", std::process::id()))
        .expect("the cgroup hierarchy");
    let peer_dirs: [Vec<PathBuf>; 3] = ["gen", "pass", "count"].map(|stage| {
        let path = cgroups::CgroupPath::new(&format!("{NAMESPACE}/{stage}")).unwrap();
        peer_tree
            .create(&path, &cgroups::Limits::default())
            .expect("a peer cgroup");
        peer_tree.dirs(&path)
    });
    // A warm-up of each, unmeasured: page in the binaries, elect the controller.
    let _ = shell(1_000_000, None);
    let _ = shell(1_000_000, Some(&peer_dirs));
    let _ = rube(&client, &rubelet, "warmup", 1_000_000).await;

    println!("streaming {megabytes} MB through head -c | cat | wc -c, {runs} runs each\n");
    println!(
        "| run | shell MB/s | shell, a cgroup per command MB/s | 1 MiB pipes, no cgroups MB/s | Rube MB/s (data phase) | Rube put→SUCCEEDED s |"
    );
    println!(
        "|----:|-----------:|-----------------------:|-----------------------:|-----------------------:|---------------------:|"
    );
    let (mut shell_rates, mut peer_rates, mut big_rates, mut rube_rates, mut walls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (shell_time, shell_count) = shell(bytes, None);
        assert_eq!(shell_count, bytes, "the shell counted every byte");
        let (peer_time, peer_count) = shell(bytes, Some(&peer_dirs));
        assert_eq!(
            peer_count, bytes,
            "the shell with cgroups counted every byte"
        );
        let (big_time, big_count) = pipes_of(bytes, 1 << 20);
        assert_eq!(big_count, bytes, "the 1 MiB pipes counted every byte");
        let (data, wall, counted) = rube(&client, &rubelet, &format!("stream{run}"), bytes).await;
        assert_eq!(counted, bytes, "the pipeline counted every byte");
        let (s, p, r) = (
            mb_per_s(bytes, shell_time),
            mb_per_s(bytes, peer_time),
            mb_per_s(bytes, data),
        );
        let b = mb_per_s(bytes, big_time);
        println!(
            "| {run} | {s:.0} | {p:.0} | {b:.0} | {r:.0} | {:.2} |",
            wall.as_secs_f64()
        );
        big_rates.push(b);
        shell_rates.push(s);
        peer_rates.push(p);
        rube_rates.push(r);
        walls.push(wall.as_secs_f64());
    }
    let (s, p, b, r) = (
        median(shell_rates),
        median(peer_rates),
        median(big_rates),
        median(rube_rates),
    );
    println!(
        "\nmedian: shell {s:.0} MB/s, shell with a cgroup per command {p:.0} MB/s, 1 MiB pipes \
         {b:.0} MB/s, Rube {r:.0} MB/s (data phase); Rube/shell {:.2}, Rube/shell with cgroups \
         {:.2}, Rube/1 MiB pipes {:.2}; Rube put→SUCCEEDED median {:.2} s = {:.0} MB/s end to end",
        r / s,
        r / p,
        r / b,
        median(walls.clone()),
        mb_per_s(bytes, Duration::from_secs_f64(median(walls)))
    );
    let _ = peer_tree.remove(&cgroups::CgroupPath::root(), Duration::from_secs(1));
    drop(rubelet);
    server.stop().await;
}
