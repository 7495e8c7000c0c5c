//! Slice start latency: `slices::launch` until the workload has exec'd inside its cgroup (and
//! namespaces), against a shell doing the same by hand (`mkdir` the cgroup, join it, `unshare
//! --fork --pid --mount-proc`). Needs root. Prints a markdown table.
//!
//! `cargo bench -p slices --bench slice-start [-- N]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cgroups::{CgroupPath, Hierarchy};
use slices::ShimState;
use slices::spec::{HierarchySpec, LaunchSpec};

const SHIM: &str = env!("CARGO_BIN_EXE_rube-shim");

fn wait_exit(dir: &Path) {
    while !matches!(slices::read(dir), Ok(ShimState::Exited(_))) {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let n = v.len();
    (v[n / 2], v[(n * 99 / 100).min(n - 1)])
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !rubeapi::testing::root_or_skip("slice-start") {
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let subtree = format!("rube-bench-{}", std::process::id());
    let hierarchy = Hierarchy::detect(&subtree).expect("cgroups");
    let tmp = tempfile::tempdir().unwrap();
    let base = LaunchSpec {
        command: "/bin/true".into(),
        hierarchy: Some(HierarchySpec::of(&hierarchy)),
        log_file_bytes: 1 << 20,
        log_files: 2,
        kill_grace_ms: 100,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for (label, isolated) in [
        ("`slices::launch`, cgroup only", false),
        (
            "`slices::launch`, cgroup + pid/mount/net/uts/ipc namespaces",
            true,
        ),
    ] {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let mut spec = base.clone();
            spec.cgroup = format!("bench/s{i}");
            spec.isolation.pid = isolated;
            spec.isolation.net = isolated;
            spec.isolation.uts = isolated;
            spec.isolation.ipc = isolated;
            let dir = tmp.path().join(format!("{isolated}-{i}"));
            let started = Instant::now();
            slices::launch(Path::new(SHIM), &dir, &spec).expect("launch");
            times.push(started.elapsed());
            wait_exit(&dir);
        }
        rows.push((label.to_owned(), percentiles(times)));
    }

    // The baseline: a shell makes the cgroup, joins it and unshares, then runs the same binary.
    let leaf = CgroupPath::new("bench/baseline").unwrap();
    let dirs: Vec<String> = hierarchy
        .dirs(&leaf)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let script = format!(
        "for d in {0}; do mkdir -p $d && echo $$ > $d/cgroup.procs; done; \
         exec unshare --fork --pid --mount-proc /bin/true",
        dirs.join(" ")
    );
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        times.push(started.elapsed());
        assert!(status.success(), "baseline failed");
    }
    rows.push((
        "baseline: `sh` + `mkdir`/`cgroup.procs` + `unshare --fork --pid --mount-proc` (to exit)"
            .to_owned(),
        percentiles(times),
    ));
    let _ = hierarchy.remove(&leaf, Duration::from_millis(100));
    let _ = hierarchy.remove(
        &CgroupPath::new("bench").unwrap(),
        Duration::from_millis(100),
    );
    for dir in hierarchy.dirs(&CgroupPath::root()) {
        let _ = std::fs::remove_dir(dir);
    }

    println!("| start of `/bin/true` (n = {n}) | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: |");
    for (label, (p50, p99)) in rows {
        println!("| {label} | {} | {} |", ms(p50), ms(p99));
    }
}
