//! The shim for real: real processes, namespaces and cgroups. Needs root; says so and passes
//! otherwise.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgroups::CgroupPath;
use common::{SHIM, log, node, run_sh, wait_exit};
use slices::{Error, ShimState};

#[test]
fn exit_codes_and_signals_are_recorded_and_the_cgroup_removed() {
    let Some(node) = node("exit_codes") else {
        return;
    };
    let (outcome, _) = run_sh(&node, "three", "exit 3", |_| {});
    assert_eq!((outcome.exit_code, outcome.signal), (Some(3), None));
    assert!(!outcome.succeeded());
    assert_eq!(outcome.cgroup, "herd/three");
    assert!(outcome.finished_ms >= outcome.started_ms && outcome.pid > 0);
    assert!(!node.cgroup_exists("herd/three"));

    let (outcome, _) = run_sh(&node, "killed", "kill -USR1 $$", |_| {});
    assert_eq!(
        (outcome.exit_code, outcome.signal),
        (None, Some(libc::SIGUSR1))
    );

    let (outcome, log) = run_sh(&node, "ok", "echo out; echo err >&2", |_| {});
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(log, "out\nerr\n");
}

#[test]
fn exec_errors_are_reported_like_std_process_and_recorded() {
    let Some(node) = node("exec_errors") else {
        return;
    };
    let dir = node.slice_dir("missing");
    let mut spec = node.spec("/no/such/binary", &[]);
    spec.cgroup = "herd/missing".into();
    let err = slices::launch(Path::new(SHIM), &dir, &spec).unwrap_err();
    match &err {
        Error::Exec { message, .. } => assert_eq!(message, "exec: No such file or directory"),
        other => panic!("{other:?}"),
    }
    let ShimState::Exited(outcome) = slices::read(&dir).unwrap() else {
        panic!("no outcome")
    };
    assert_eq!(outcome.exit_code, Some(127));
    assert_eq!(outcome.message, "exec: No such file or directory");
    assert!(!node.cgroup_exists("herd/missing"));

    // PATH lookup uses the slice's PATH.
    let mut spec = node.spec("sh", &["-c", "exit 0"]);
    spec.cgroup = "herd/nopath".into();
    spec.env.insert("PATH".into(), "/nonexistent".into());
    let err = slices::launch(Path::new(SHIM), &node.slice_dir("nopath"), &spec).unwrap_err();
    assert!(matches!(err, Error::Exec { .. }), "{err:?}");
}

#[test]
fn a_slice_over_its_memory_limit_is_oom_killed() {
    let Some(node) = node("oom") else { return };
    // `tail` keeps the current line in memory, and /dev/zero has no newline.
    let (outcome, _) = run_sh(&node, "hog", "exec tail /dev/zero", |s| {
        s.limits.memory_bytes = Some(32 << 20);
    });
    assert!(outcome.oom_killed, "{outcome:?}");
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
}

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    let Some(node) = node("fork_bomb") else {
        return;
    };
    let dir = node.slice_dir("bomb");
    let mut spec = node.spec("sh", &["-c", "f() { f | f & }; f; sleep 3"]);
    spec.cgroup = "herd/bomb".into();
    spec.limits.pids = Some(16);
    spec.timeout_seconds = Some(3);
    slices::launch(Path::new(SHIM), &dir, &spec).unwrap();
    let path = CgroupPath::new("herd/bomb").unwrap();
    let mut most = 0;
    while let ShimState::Running(_) = slices::read(&dir).unwrap() {
        if let Ok(stats) = node.hierarchy.stats(&path) {
            most = most.max(stats.pids_current);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let outcome = wait_exit(&dir);
    assert!(most > 1 && most <= 16, "pids.current went to {most}");
    assert!(
        log(&dir).to_lowercase().contains("fork"),
        "no fork failure in the log"
    );
    assert!(outcome.message.contains("deadline"), "{outcome:?}");
    assert!(!node.hierarchy.exists(&path));
}

#[test]
fn a_cpu_hog_gets_no_more_than_its_share() {
    let Some(node) = node("cpu") else { return };
    let dir = node.slice_dir("hog");
    let mut spec = node.spec("sh", &["-c", "while :; do :; done"]);
    spec.cgroup = "herd/hog".into();
    spec.limits.cpu_millis = Some(200);
    spec.timeout_seconds = Some(30);
    slices::launch(Path::new(SHIM), &dir, &spec).unwrap();
    let path = CgroupPath::new("herd/hog").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (t0, u0) = (
        Instant::now(),
        node.hierarchy.stats(&path).unwrap().cpu_usage_usec,
    );
    std::thread::sleep(Duration::from_millis(2000));
    let (t1, u1) = (
        Instant::now(),
        node.hierarchy.stats(&path).unwrap().cpu_usage_usec,
    );
    slices::stop(&dir, Duration::from_millis(100)).unwrap();
    let cores = (u1 - u0) as f64 / (t1 - t0).as_micros() as f64;
    assert!(cores > 0.05 && cores < 0.35, "used {cores:.3} cores");
    let outcome = wait_exit(&dir);
    assert_eq!(outcome.message, "stopped");
    assert!(!node.hierarchy.exists(&path));
}

#[test]
fn namespaces_hide_the_host() {
    let Some(node) = node("namespaces") else {
        return;
    };
    let (outcome, log) = run_sh(
        &node,
        "isolated",
        "echo pid=$$; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; \
         echo host=$(cat /proc/sys/kernel/hostname); \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        |s| {
            s.isolation.pid = true;
            s.isolation.net = true;
            s.isolation.ipc = true;
            s.isolation.hostname = Some("slice-host".into());
        },
    );
    assert!(outcome.succeeded(), "{outcome:?} {log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "pid=1", "{log}");
    // Only the workload and its own children: no host pid is visible.
    let pids: Vec<u32> = lines[1]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|p| *p < 20),
        "{pids:?}"
    );
    assert_eq!(lines[2], "host=slice-host");
    assert_eq!(&lines[3..], ["lo"], "{log}");
}

#[test]
fn loopback_is_up_in_a_new_net_namespace() {
    let Some(node) = node("loopback") else { return };
    // /sys/class/net shows the devices of the net namespace that mounted sysfs: mount it
    // again inside the slice's own mount namespace. flags: IFF_UP is bit 0.
    let (outcome, log) = run_sh(
        &node,
        "lo",
        "mount -t sysfs sysfs /sys && ls /sys/class/net && cat /sys/class/net/lo/flags",
        |s| {
            s.isolation.net = true;
            s.isolation.mount = true;
        },
    );
    assert!(outcome.succeeded(), "{outcome:?} {log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "lo", "only lo: {log}");
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo is down: {log}"
    );
}

#[test]
fn identity_working_dir_and_a_clean_environment() {
    let Some(node) = node("identity") else { return };
    let (outcome, log) = run_sh(&node, "who", "id -u; id -g; pwd; env | sort", |s| {
        s.isolation.uid = Some(65534);
        s.isolation.gid = Some(65534);
        s.working_dir = "/tmp".into();
        s.env.insert("FOO".into(), "bar".into());
    });
    assert!(outcome.succeeded(), "{outcome:?} {log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(&lines[..3], ["65534", "65534", "/tmp"]);
    let env: Vec<&str> = lines[3..]
        .iter()
        .copied()
        .filter(|l| !l.starts_with("PWD="))
        .collect();
    assert_eq!(
        env,
        ["FOO=bar", &format!("PATH={}", slices::spec::DEFAULT_PATH)],
        "nothing of the shim's environment leaks"
    );
}

#[test]
fn the_deadline_kills() {
    let Some(node) = node("deadline") else { return };
    let (outcome, _) = run_sh(&node, "slow", "exec sleep 100", |s| {
        s.timeout_seconds = Some(1);
    });
    assert_eq!(outcome.signal, Some(libc::SIGTERM), "{outcome:?}");
    assert!(outcome.message.contains("deadline"), "{outcome:?}");
    assert!(outcome.finished_ms - outcome.started_ms < 30_000);
    // PID 1 of a pid namespace ignores SIGTERM: SIGKILL follows after the grace.
    let (outcome, _) = run_sh(&node, "init", "exec sleep 100", |s| {
        s.timeout_seconds = Some(1);
        s.isolation.pid = true;
    });
    assert_eq!(outcome.signal, Some(libc::SIGKILL), "{outcome:?}");
    assert!(!node.cgroup_exists("herd/slow") && !node.cgroup_exists("herd/init"));
}

#[test]
fn logs_rotate_at_the_cap() {
    let Some(node) = node("rotation") else { return };
    let dir = node.slice_dir("chatty");
    let (outcome, _) = run_sh(
        &node,
        "chatty",
        "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done",
        |s| {
            s.log_file_bytes = 1000;
            s.log_files = 3;
        },
    );
    assert!(outcome.succeeded());
    let segments = slices::logs::segments(&dir).unwrap();
    assert_eq!(segments.len(), 3);
    for (_, path) in &segments {
        assert!(std::fs::metadata(path).unwrap().len() <= 1000);
    }
    let chunk = slices::logs::read(&dir, 0, 1 << 20).unwrap();
    let total: usize = (0..1000).map(|i| format!("line-{i}\n").len()).sum();
    assert_eq!(chunk.next(), total as u64);
    assert!(
        String::from_utf8(chunk.data)
            .unwrap()
            .ends_with("line-998\nline-999\n")
    );
}

#[test]
fn fifos_connect_a_producer_and_a_consumer() {
    let Some(node) = node("fifos") else { return };
    let fifo = node.dir.path().join("pipes/herd/numbers");
    let mut consumer = node.spec("wc", &["-c"]);
    consumer.cgroup = "herd/consumer".into();
    consumer.stdin_pipe = Some(fifo.clone());
    let mut producer = node.spec("head", &["-c", "1000000", "/dev/zero"]);
    producer.cgroup = "herd/producer".into();
    producer.stdout_pipe = Some(fifo);
    // The consumer first: it waits for a writer without holding up `launch`.
    slices::launch(Path::new(SHIM), &node.slice_dir("consumer"), &consumer).unwrap();
    slices::launch(Path::new(SHIM), &node.slice_dir("producer"), &producer).unwrap();
    assert!(wait_exit(&node.slice_dir("producer")).succeeded());
    assert!(wait_exit(&node.slice_dir("consumer")).succeeded());
    assert_eq!(log(&node.slice_dir("consumer")).trim(), "1000000");
}

#[test]
fn a_fifo_gets_the_pipe_buffer_the_spec_asks_for() {
    use std::io::Read;
    let Some(node) = node("pipe_size") else {
        return;
    };
    let fifo = node.dir.path().join("pipes/herd/big");
    let mut producer = node.spec("sh", &["-c", "printf x; sleep 5"]);
    producer.cgroup = "herd/producer".into();
    producer.stdout_pipe = Some(fifo.clone());
    producer.pipe_buffer_bytes = Some(1 << 20);
    // The workload runs as nobody: the resize happens before it drops privileges.
    producer.isolation.uid = Some(65534);
    slices::launch(Path::new(SHIM), &node.slice_dir("producer"), &producer).unwrap();
    // This test is the reader. The byte arrives after the workload exec'd, so after the
    // producer resized the pipe.
    let mut reader = std::fs::File::open(&fifo).unwrap();
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    let size = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    assert_eq!(size, 1 << 20);
    drop(reader);
    wait_exit(&node.slice_dir("producer"));
    assert!(!log(&node.slice_dir("producer")).contains("could not resize"));

    // Without the setting the kernel's default stays.
    let mut plain = node.spec("sh", &["-c", "printf x; sleep 5"]);
    plain.cgroup = "herd/plain".into();
    plain.stdout_pipe = Some(fifo.clone());
    slices::launch(Path::new(SHIM), &node.slice_dir("plain"), &plain).unwrap();
    let mut reader = std::fs::File::open(&fifo).unwrap();
    reader.read_exact(&mut byte).unwrap();
    let size = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    assert_eq!(size, 64 << 10);
    drop(reader);
    wait_exit(&node.slice_dir("plain"));
}

#[test]
fn a_pipe_path_that_is_not_a_fifo_is_refused() {
    let Some(node) = node("not_a_fifo") else {
        return;
    };
    let secret = node.dir.path().join("pipes/herd/secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "root only\n").unwrap();
    let mut spec = node.spec("cat", &[]);
    spec.cgroup = "herd/reader".into();
    spec.stdin_pipe = Some(secret.clone());
    let err = slices::launch(Path::new(SHIM), &node.slice_dir("reader"), &spec).unwrap_err();
    assert!(
        err.to_string().contains("exists and is not a FIFO"),
        "{err}"
    );
    assert!(!node.cgroup_exists("herd/reader"));
}

#[test]
fn the_workload_survives_the_death_of_its_launcher() {
    let Some(node) = node("launcher_death") else {
        return;
    };
    let dir = node.slice_dir("survivor");
    let mut spec = node.spec("sh", &["-c", "sleep 1; echo done"]);
    spec.cgroup = "herd/survivor".into();
    std::fs::create_dir_all(&dir).unwrap();
    slices::spec::write_json(&dir.join("spec.json"), &spec).unwrap();
    // The "rubelet": starts the shim, reads its report, and is killed with its whole group.
    let mut rubelet = Command::new("sh")
        .args(["-c", "\"$0\" shim --dir \"$1\" | head -1; sleep 100"])
        .arg(SHIM)
        .arg(&dir)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut report = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(rubelet.stdout.as_mut().unwrap()),
        &mut report,
    )
    .unwrap();
    assert!(
        matches!(
            report.trim_end().parse(),
            Ok(slices::shim::Report::Started { .. })
        ),
        "{report}"
    );
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(rubelet.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    rubelet.wait().unwrap();
    assert!(matches!(slices::read(&dir).unwrap(), ShimState::Running(_)));
    let outcome = wait_exit(&dir);
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(log(&dir), "done\n");
}

#[test]
fn stop_kills_and_leaves_no_cgroup() {
    let Some(node) = node("stop") else { return };
    let dir = node.slice_dir("sleeper");
    let mut spec = node.spec("sleep", &["100"]);
    spec.cgroup = "herd/sleeper".into();
    spec.isolation.pid = true;
    let launched = slices::launch(Path::new(SHIM), &dir, &spec).unwrap();
    let ShimState::Running(record) = slices::read(&dir).unwrap() else {
        panic!("not running")
    };
    assert_eq!(
        (record.pid, record.shim_pid),
        (launched.pid, launched.shim_pid)
    );
    assert!(node.cgroup_exists("herd/sleeper"));
    // A second launch into a live dir is refused.
    assert!(slices::launch(Path::new(SHIM), &dir, &spec).is_err());
    assert!(slices::stop(&dir, Duration::from_millis(100)).unwrap());
    let outcome = wait_exit(&dir);
    assert_eq!(
        (outcome.message.as_str(), outcome.signal),
        ("stopped", Some(libc::SIGKILL))
    );
    assert!(!node.cgroup_exists("herd/sleeper"));
    assert!(!slices::stop(&dir, Duration::from_millis(100)).unwrap());
}

#[test]
fn a_shim_killed_without_recording_is_lost_not_running() {
    let Some(node) = node("lost") else { return };
    let dir = node.slice_dir("orphan");
    let mut spec = node.spec("sleep", &["100"]);
    spec.cgroup = "herd/orphan".into();
    let launched = slices::launch(Path::new(SHIM), &dir, &spec).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launched.shim_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut state = slices::read(&dir).unwrap();
    for _ in 0..500 {
        if !matches!(state, ShimState::Running(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        state = slices::read(&dir).unwrap();
    }
    assert!(matches!(state, ShimState::Lost(_)), "{state:?}");
    // The workload still runs in its cgroup: removing the cgroup ends it.
    node.hierarchy
        .remove(
            &CgroupPath::new("herd/orphan").unwrap(),
            Duration::from_millis(100),
        )
        .unwrap();
}
