//! cgroup v1 against the real kernel: limits read back from the kernel's files, real processes
//! joined, throttled, OOM-killed, stopped by pids.max, and removed. Runs where detection finds
//! v1 (this project's machines are hybrid: v1 controllers, cgroup2 with only hugetlb) and as
//! root; elsewhere each test says loudly why it is skipped.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cgroups::{CgroupPath, Error, Hierarchy, Limits, Subsystem, Version};
use common::{Subtree, read, root_or_skip, skip};

const MIB: u64 = 1 << 20;

fn v1_subtree(test: &str) -> Option<Subtree> {
    if !root_or_skip(test) {
        return None;
    }
    let t = Subtree::detect();
    if t.version() != Version::V1 {
        skip(test, "this machine's cgroups are v2, not v1");
        return None;
    }
    Some(t)
}

fn dir(h: &Hierarchy, p: &CgroupPath, c: Subsystem) -> PathBuf {
    h.dir(p, c)
        .unwrap_or_else(|| panic!("no {} hierarchy", c.name()))
}

/// The kernel's "unlimited" for memory.limit_in_bytes: LONG_MAX rounded down to a page.
const V1_MEMORY_UNLIMITED: &str = "9223372036854771712";

#[test]
fn detect_roots_memory_at_the_own_cgroup_not_the_hierarchy_root() {
    let Some(t) = v1_subtree("detect_roots_memory_at_the_own_cgroup") else {
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_memory = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    let memory = dir(&t.h, &CgroupPath::root(), Subsystem::Memory);
    let mount = PathBuf::from("/sys/fs/cgroup/memory");
    let expected = mount.join(own_memory.trim_start_matches('/')).join(&t.name);
    assert_eq!(memory, expected);
    assert!(memory.parent().unwrap().join("cgroup.procs").exists());
}

#[test]
fn limits_are_written_read_back_and_reset() {
    let Some(t) = v1_subtree("limits_are_written_read_back_and_reset") else {
        return;
    };
    let h = &t.h;
    let herd = CgroupPath::new("herd").unwrap();
    let slice = herd.join("slice").unwrap();
    h.create(
        &herd,
        &Limits {
            cpu_millis: Some(2000),
            memory_bytes: Some(256 * MIB),
            pids: Some(100),
        },
    )
    .unwrap();
    h.create(
        &slice,
        &Limits {
            cpu_millis: Some(500),
            memory_bytes: Some(64 * MIB),
            pids: Some(20),
        },
    )
    .unwrap();
    for d in h.dirs(&slice) {
        assert!(d.is_dir(), "{} missing", d.display());
    }
    let mem = dir(h, &slice, Subsystem::Memory);
    let cpu = dir(h, &slice, Subsystem::Cpu);
    let pids = dir(h, &slice, Subsystem::Pids);
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&pids.join("pids.max")), "20");
    assert_eq!(
        read(&dir(h, &herd, Subsystem::Cpu).join("cpu.cfs_quota_us")),
        "200000"
    );
    assert_eq!(
        read(&dir(h, &herd, Subsystem::Memory).join("memory.limit_in_bytes")),
        (256 * MIB).to_string()
    );
    let memsw = mem.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(read(&memsw), (64 * MIB).to_string());
    }

    // Raising then lowering needs memsw and limit written in opposite orders; the kernel
    // refuses either order the wrong way round.
    h.create(
        &slice,
        &Limits {
            memory_bytes: Some(128 * MIB),
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    h.set_limits(
        &slice,
        &Limits {
            memory_bytes: Some(32 * MIB),
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (32 * MIB).to_string()
    );
    if memsw.exists() {
        assert_eq!(read(&memsw), (32 * MIB).to_string());
    }

    h.set_limits(&slice, &Limits::default()).unwrap();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        V1_MEMORY_UNLIMITED
    );
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&pids.join("pids.max")), "max");

    assert_eq!(h.children(&CgroupPath::root()).unwrap(), vec!["herd"]);
    assert_eq!(h.children(&herd).unwrap(), vec!["slice"]);
    assert!(h.children(&slice).unwrap().is_empty());

    h.remove(&CgroupPath::root(), Duration::from_millis(100))
        .unwrap();
    t.assert_gone();
    // Removing what is gone is fine.
    h.remove(&slice, Duration::ZERO).unwrap();
}

#[test]
fn v1_refuses_a_slice_quota_above_its_herds_with_path_and_value() {
    let Some(t) = v1_subtree("v1_refuses_a_slice_quota_above_its_herds") else {
        return;
    };
    let herd = CgroupPath::new("herd").unwrap();
    let slice = herd.join("slice").unwrap();
    t.h.create(
        &herd,
        &Limits {
            cpu_millis: Some(1000),
            ..Limits::default()
        },
    )
    .unwrap();
    let err =
        t.h.create(
            &slice,
            &Limits {
                cpu_millis: Some(4000),
                ..Limits::default()
            },
        )
        .unwrap_err();
    let Error::Write {
        path,
        value,
        source,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        path,
        &dir(&t.h, &slice, Subsystem::Cpu).join("cpu.cfs_quota_us")
    );
    assert_eq!(value, "400000");
    assert_eq!(
        source.raw_os_error(),
        Some(nix::errno::Errno::EINVAL as i32)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cpu.cfs_quota_us") && msg.contains("\"400000\""),
        "{msg}"
    );

    let err = t.h.add_process(&slice, 999_999_999).unwrap_err();
    assert!(
        matches!(&err, Error::Write { value, .. } if value == "999999999"),
        "{err:?}"
    );
}

#[test]
fn a_process_joins_every_hierarchy_is_throttled_and_survives_sigterm_until_sigkill() {
    let Some(mut t) = v1_subtree("a_process_joins_every_hierarchy") else {
        return;
    };
    let slice = CgroupPath::new("herd/slice").unwrap();
    t.h.create(
        &slice,
        &Limits {
            cpu_millis: Some(20),
            memory_bytes: Some(64 * MIB),
            pids: Some(10),
        },
    )
    .unwrap();
    // Ignores SIGTERM (and so does the busy subshell, which inherits the ignored disposition),
    // so remove must escalate to SIGKILL.
    let i = t.spawn_in(&slice, "trap '' TERM; (while :; do :; done) & wait");
    let pid = t.child(i).id();
    std::thread::sleep(Duration::from_millis(1000));

    let procs = t.h.procs(&slice).unwrap();
    assert!(procs.contains(&pid), "{procs:?} lacks {pid}");
    assert_eq!(procs.len(), 2, "sh and its busy subshell: {procs:?}");
    // Recursive: the Herd sees its slice's processes.
    assert_eq!(t.h.procs(&CgroupPath::new("herd").unwrap()).unwrap(), procs);
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for c in [
        Subsystem::Memory,
        Subsystem::Pids,
        Subsystem::Cpu,
        Subsystem::Freezer,
    ] {
        let needle = format!("/{}/herd/slice", t.name);
        let line = membership.lines().find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|cs| cs.split(',').any(|x| x == c.name()))
        });
        if let Some(line) = line {
            assert!(
                line.ends_with(&needle),
                "{} not in the slice: {line}",
                c.name()
            );
        }
    }

    let s = t.h.stats(&slice).unwrap();
    assert_eq!(s.pids_current, 2, "{s:?}");
    assert!(s.cpu_usage_usec > 5_000, "the loop ran: {s:?}");
    // 2% of a core (2 ms per 100 ms period) for about a second: some 20 ms, with slack.
    assert!(s.cpu_usage_usec < 200_000, "the quota holds: {s:?}");
    assert!(
        s.cpu_throttled_periods > 0 && s.cpu_throttled_usec > 0,
        "{s:?}"
    );
    assert!(s.memory_current > 0, "{s:?}");
    assert!(s.memory_peak.unwrap() >= s.memory_current, "{s:?}");
    assert_eq!(s.oom_kills, 0);

    let grace = Duration::from_millis(300);
    let start = Instant::now();
    t.h.remove(&CgroupPath::root(), grace).unwrap();
    assert!(
        start.elapsed() >= grace,
        "SIGTERM is ignored, so remove waited out the grace"
    );
    let status = t.child(i).wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    t.assert_gone();
}

#[test]
fn sigterm_is_enough_for_a_process_that_heeds_it() {
    let Some(mut t) = v1_subtree("sigterm_is_enough") else {
        return;
    };
    let slice = CgroupPath::new("herd/slice").unwrap();
    t.h.create(&slice, &Limits::default()).unwrap();
    let i = t.spawn_in(&slice, "exec sleep 1000");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        t.h.kill(&slice, nix::sys::signal::Signal::SIGTERM).unwrap(),
        1
    );
    let status = t.child(i).wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    let start = Instant::now();
    t.h.remove(&slice, Duration::from_secs(5)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "nothing left to wait for"
    );
    assert!(!t.h.exists(&slice));
    assert!(
        t.h.exists(&CgroupPath::new("herd").unwrap()),
        "only the slice is removed"
    );
}

#[test]
fn a_memory_hog_is_oom_killed_and_counted() {
    let Some(mut t) = v1_subtree("a_memory_hog_is_oom_killed_and_counted") else {
        return;
    };
    let slice = CgroupPath::new("herd/hog").unwrap();
    t.h.create(
        &slice,
        &Limits {
            memory_bytes: Some(32 * MIB),
            ..Limits::default()
        },
    )
    .unwrap();
    let i = t.spawn_in(
        &slice,
        r#"x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived"#,
    );
    let (status, out) = t.wait_output(i);
    assert_eq!(status.signal(), Some(9), "{status:?} {out}");
    assert!(!out.contains("survived"));
    let s = t.h.stats(&slice).unwrap();
    assert!(s.oom_kills >= 1, "{s:?}");
    assert!(s.memory_peak.unwrap() <= 32 * MIB, "{s:?}");
    t.h.remove(&CgroupPath::root(), Duration::ZERO).unwrap();
    t.assert_gone();
}

#[test]
fn pids_max_stops_a_fork_loop() {
    let Some(mut t) = v1_subtree("pids_max_stops_a_fork_loop") else {
        return;
    };
    let slice = CgroupPath::new("herd/forks").unwrap();
    t.h.create(
        &slice,
        &Limits {
            pids: Some(5),
            ..Limits::default()
        },
    )
    .unwrap();
    // dash gives up at the first fork it is refused, bash carries on: either way at most five
    // processes ever exist and the kernel counts the refusals.
    let i = t.spawn_in(
        &slice,
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; exec sleep 1000",
    );
    let events =
        t.h.dir(&slice, Subsystem::Pids)
            .unwrap()
            .join("pids.events");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&events) == "max 0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_ne!(read(&events), "max 0", "the kernel refused forks");
    let procs = t.h.procs(&slice).unwrap();
    assert!(
        (4..=5).contains(&procs.len()),
        "the limit, reached: {procs:?}"
    );
    // pids.current also counts a zombie (dash, exited, not yet reaped by us), cgroup.procs not.
    let current = t.h.stats(&slice).unwrap().pids_current;
    assert!(
        current <= 5 && current >= procs.len() as u64,
        "{current} {procs:?}"
    );
    t.h.remove(&CgroupPath::root(), Duration::from_millis(200))
        .unwrap();
    t.child(i).wait().unwrap();
    t.assert_gone();
}
