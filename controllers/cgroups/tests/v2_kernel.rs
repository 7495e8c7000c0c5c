//! cgroup v2 against the real kernel, wherever cgroup2 is mounted: on a hybrid machine (this
//! project's: v1 controllers, cgroup2 at /sys/fs/cgroup/unified with only hugetlb) the unified
//! tree still has membership, `cgroup.kill`, `cgroup.freeze` and `rmdir`, so those run for real
//! here; limits and OOM need the cpu, memory and pids controllers and run only where the
//! kernel offers them. Each skip says why on stderr.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cgroups::{CgroupPath, Error, Hierarchy, Limits};
use common::{Subtree, read, root_or_skip, skip, unique_name};

/// The process's own cgroup in the unified tree, from /proc/self/mountinfo and
/// /proc/self/cgroup (found here independently of the crate's detection, which prefers v1 on
/// a hybrid machine).
fn own_unified() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).unwrap().to_string())
    })?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(mount).join(own.trim_start_matches('/')))
}

fn unified_subtree(test: &str) -> Option<Subtree> {
    if !root_or_skip(test) {
        return None;
    }
    let Some(own) = own_unified() else {
        skip(test, "no cgroup2 mount in /proc/self/mountinfo");
        return None;
    };
    let name = unique_name();
    let t = Subtree::at(Hierarchy::v2_at(own.join(&name)), name);
    // Controllers can be enabled below the own cgroup only when it holds no processes (the root
    // is exempt). Moving the test runner out (enter_leaf) would move cargo with it, so the test
    // refuses rather than rearrange the machine.
    match t.h.create(&CgroupPath::root(), &Limits::default()) {
        Ok(()) => Some(t),
        Err(Error::InternalProcesses { path, pids }) => {
            skip(
                test,
                &format!(
                    "{} holds processes {pids:?} and offers controllers, so the \
                 \"no internal processes\" rule forbids enabling them; run the tests from a leaf \
                 cgroup (what the rubelet does with Hierarchy::enter_leaf)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn has_controllers(t: &Subtree, test: &str) -> bool {
    let own = t.h.dirs(&CgroupPath::root())[0]
        .parent()
        .unwrap()
        .to_path_buf();
    let available = read(&own.join("cgroup.controllers"));
    let missing: Vec<_> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "the own cgroup2 {} offers {available:?}, not {missing:?} (a hybrid \
         machine keeps them in v1)",
            own.display()
        ),
    );
    false
}

#[test]
fn membership_cgroup_kill_and_rmdir_on_the_unified_tree() {
    let Some(mut t) = unified_subtree("membership_cgroup_kill_and_rmdir_on_the_unified_tree")
    else {
        return;
    };
    let slice = CgroupPath::new("herd/slice").unwrap();
    t.h.create(&slice, &Limits::default()).unwrap();
    t.h.create(&slice, &Limits::default()).unwrap();
    let i = t.spawn_in(&slice, "trap '' TERM; sleep 1000 & wait");
    let pid = t.child(i).id();
    std::thread::sleep(Duration::from_millis(100));
    let procs = t.h.procs(&CgroupPath::new("herd").unwrap()).unwrap();
    assert!(procs.contains(&pid) && procs.len() == 2, "{procs:?}");
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let needle = format!("0::/{}/herd/slice", t.name);
    assert!(membership.lines().any(|l| l == needle), "{membership}");
    assert_eq!(t.h.stats(&slice).unwrap().oom_kills, 0);

    // SIGTERM is ignored, so removal goes on to cgroup.kill, then rmdir on the real cgroupfs.
    let grace = Duration::from_millis(200);
    let start = Instant::now();
    t.h.remove(&CgroupPath::root(), grace).unwrap();
    assert!(start.elapsed() >= grace);
    assert_eq!(t.child(i).wait().unwrap().signal(), Some(9));
    t.assert_gone();
}

#[test]
fn limits_and_oom_kill_with_v2_controllers() {
    let test = "limits_and_oom_kill_with_v2_controllers";
    let Some(mut t) = unified_subtree(test) else {
        return;
    };
    if !has_controllers(&t, test) {
        return;
    }
    const MIB: u64 = 1 << 20;
    let slice = CgroupPath::new("herd/hog").unwrap();
    t.h.create(
        &slice,
        &Limits {
            cpu_millis: Some(500),
            memory_bytes: Some(32 * MIB),
            pids: Some(20),
        },
    )
    .unwrap();
    let dir = t.h.dirs(&slice).remove(0);
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("memory.max")), (32 * MIB).to_string());
    assert_eq!(read(&dir.join("pids.max")), "20");
    if dir.join("memory.swap.max").exists() {
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
    }
    let i = t.spawn_in(
        &slice,
        r#"x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived"#,
    );
    let (status, out) = t.wait_output(i);
    assert_eq!(status.signal(), Some(9), "{status:?} {out}");
    let s = t.h.stats(&slice).unwrap();
    assert!(s.oom_kills >= 1, "{s:?}");
    t.h.remove(&CgroupPath::root(), Duration::ZERO).unwrap();
    t.assert_gone();
}
