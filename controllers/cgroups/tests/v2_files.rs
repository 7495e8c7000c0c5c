//! cgroup v2 against a temp dir laid out as cgroupfs shows it: which files get which values,
//! `cgroup.subtree_control` enabling, stats parsing, and errors naming path and value.
//!
//! A temp dir is not cgroupfs: the kernel fills a new cgroup with interface files and lets
//! `rmdir` remove it with them, a plain directory does neither. So [`FakeFs`] lays out each
//! cgroup with the files the kernel would show *before* the code under test runs (the
//! `mkdir` in `create` then finds them, as it is idempotent), and removal is tested here only
//! for the error it gives; a successful removal is tested on the real kernel (`v1_kernel.rs`,
//! `v2_kernel.rs`).

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups::{CgroupPath, Error, Hierarchy, Limits, Stats, Subsystem, Version};

struct FakeFs {
    _tmp: tempfile::TempDir,
    own: PathBuf,
}

impl FakeFs {
    /// An own cgroup offering `controllers`, with an empty node subtree `rube` below it.
    fn new(controllers: &str) -> FakeFs {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own");
        let fake = FakeFs { own, _tmp: tmp };
        fake.cgroup(&fake.own, controllers);
        fake
    }

    fn hierarchy(&self) -> Hierarchy {
        Hierarchy::v2_at(self.own.join("rube"))
    }

    /// A cgroup as the kernel shows it when its parent enabled `controllers` for it.
    fn cgroup(&self, dir: &Path, controllers: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let mut files = vec![
            ("cgroup.controllers", controllers.to_string()),
            ("cgroup.type", "domain\n".into()),
            ("cgroup.subtree_control", String::new()),
            ("cgroup.procs", String::new()),
            ("cgroup.events", "populated 0\nfrozen 0\n".into()),
            ("cgroup.freeze", "0\n".into()),
            ("cgroup.kill", String::new()),
            (
                "cpu.stat",
                "usage_usec 0\nuser_usec 0\nsystem_usec 0\n".into(),
            ),
        ];
        for c in controllers.split_whitespace() {
            match c {
                "cpu" => files.push(("cpu.max", "max 100000\n".into())),
                "memory" => files.extend([
                    ("memory.max", "max\n".into()),
                    ("memory.swap.max", "max\n".into()),
                    ("memory.current", "0\n".into()),
                    (
                        "memory.events",
                        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n".into(),
                    ),
                ]),
                "pids" => {
                    files.extend([("pids.max", "max\n".into()), ("pids.current", "0\n".into())])
                }
                _ => {}
            }
        }
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
    }

    /// `rube`, `rube/<herd>` and `rube/<herd>/<slice>`, as the kernel would make them.
    fn layout(&self, controllers: &str, paths: &[&str]) {
        self.cgroup(&self.own.join("rube"), controllers);
        for p in paths {
            self.cgroup(&self.own.join("rube").join(p), controllers);
        }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.own.join(rel)).unwrap()
    }

    fn write(&self, rel: &str, contents: &str) {
        std::fs::write(self.own.join(rel), contents).unwrap();
    }
}

fn p(s: &str) -> CgroupPath {
    CgroupPath::new(s).unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn create_enables_controllers_down_to_the_slices_parent_and_writes_limits() {
    let fs = FakeFs::new("cpuset cpu io memory hugetlb pids rdma");
    fs.layout("cpuset cpu io memory pids", &["herd", "herd/slice"]);
    let h = fs.hierarchy();
    assert_eq!(h.version(), Version::V2);
    h.create(
        &p("herd"),
        &Limits {
            cpu_millis: Some(4000),
            memory_bytes: Some(MIB),
            pids: None,
        },
    )
    .unwrap();
    h.create(
        &p("herd/slice"),
        &Limits {
            cpu_millis: Some(250),
            memory_bytes: Some(64 * MIB),
            pids: Some(20),
        },
    )
    .unwrap();

    // The own cgroup, the subtree and the Herd enable exactly cpu, memory and pids, in one
    // write each; the slice is a leaf and enables nothing.
    for dir in [".", "rube", "rube/herd"] {
        assert_eq!(
            fs.read(&format!("{dir}/cgroup.subtree_control")),
            "+cpu +memory +pids",
            "{dir}"
        );
    }
    assert_eq!(fs.read("rube/herd/slice/cgroup.subtree_control"), "");

    assert_eq!(fs.read("rube/herd/cpu.max"), "400000 100000");
    assert_eq!(fs.read("rube/herd/memory.max"), "1048576");
    assert_eq!(fs.read("rube/herd/memory.swap.max"), "0");
    assert_eq!(fs.read("rube/herd/pids.max"), "max");
    assert_eq!(fs.read("rube/herd/slice/cpu.max"), "25000 100000");
    assert_eq!(fs.read("rube/herd/slice/memory.max"), "67108864");
    assert_eq!(fs.read("rube/herd/slice/memory.swap.max"), "0");
    assert_eq!(fs.read("rube/herd/slice/pids.max"), "20");

    // Below the kernel's minimum quota of 1 ms per period, the minimum is written.
    h.set_limits(
        &p("herd/slice"),
        &Limits {
            cpu_millis: Some(1),
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(fs.read("rube/herd/slice/cpu.max"), "1000 100000");

    h.set_limits(&p("herd/slice"), &Limits::default()).unwrap();
    assert_eq!(fs.read("rube/herd/slice/cpu.max"), "max 100000");
    assert_eq!(fs.read("rube/herd/slice/memory.max"), "max");
    assert_eq!(fs.read("rube/herd/slice/memory.swap.max"), "max");
    assert_eq!(fs.read("rube/herd/slice/pids.max"), "max");

    assert_eq!(
        h.dirs(&p("herd/slice")),
        vec![fs.own.join("rube/herd/slice")]
    );
    assert_eq!(
        h.dir(&p("herd/slice"), Subsystem::Memory),
        Some(fs.own.join("rube/herd/slice"))
    );
    assert_eq!(h.children(&CgroupPath::root()).unwrap(), vec!["herd"]);
    assert_eq!(h.children(&p("herd")).unwrap(), vec!["slice"]);
    assert!(h.children(&p("nope")).unwrap().is_empty());
    assert!(h.exists(&p("herd/slice")) && !h.exists(&p("herd/other")));
}

#[test]
fn controllers_already_enabled_are_not_written_again() {
    let fs = FakeFs::new("cpu memory pids");
    fs.layout("cpu memory pids", &["herd"]);
    // How the kernel shows enabled controllers: bare names.
    for dir in [".", "rube"] {
        fs.write(
            &format!("{dir}/cgroup.subtree_control"),
            "cpu memory pids\n",
        );
    }
    fs.hierarchy()
        .create(&p("herd"), &Limits::default())
        .unwrap();
    assert_eq!(fs.read("cgroup.subtree_control"), "cpu memory pids\n");
    assert_eq!(fs.read("rube/cgroup.subtree_control"), "cpu memory pids\n");
}

#[test]
fn a_missing_controller_is_not_enabled_and_its_limit_is_refused_with_the_file() {
    let fs = FakeFs::new("cpu pids");
    fs.layout("cpu pids", &["herd"]);
    let h = fs.hierarchy();
    // Unlimited memory needs no memory controller.
    h.create(
        &p("herd"),
        &Limits {
            cpu_millis: Some(100),
            memory_bytes: None,
            pids: Some(3),
        },
    )
    .unwrap();
    assert_eq!(fs.read("cgroup.subtree_control"), "+cpu +pids");
    let err = h
        .create(
            &p("herd"),
            &Limits {
                memory_bytes: Some(MIB),
                ..Limits::default()
            },
        )
        .unwrap_err();
    let Error::Unsupported { path, what } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &fs.own.join("rube/herd/memory.max"));
    assert_eq!(what, "memory.max=1048576");
    assert!(err.to_string().contains("rube/herd/memory.max"), "{err}");
}

#[test]
fn a_refused_write_names_the_file_and_the_value() {
    let fs = FakeFs::new("cpu memory pids");
    fs.layout("cpu memory pids", &["herd"]);
    // A directory where the file should be: open for writing fails with EISDIR.
    let memory_max = fs.own.join("rube/herd/memory.max");
    std::fs::remove_file(&memory_max).unwrap();
    std::fs::create_dir(&memory_max).unwrap();
    let err = fs
        .hierarchy()
        .set_limits(
            &p("herd"),
            &Limits {
                memory_bytes: Some(5 * MIB),
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
    assert_eq!(path, &memory_max);
    assert_eq!(value, "5242880");
    assert_eq!(
        source.raw_os_error(),
        Some(nix::errno::Errno::EISDIR as i32)
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("write \"5242880\" to ") && msg.contains("herd/memory.max"),
        "{msg}"
    );
}

#[test]
fn create_outside_a_cgroup_names_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Hierarchy::v2_at(tmp.path().join("rube"))
        .create(&p("herd"), &Limits::default())
        .unwrap_err();
    let Error::Io { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &tmp.path().join("cgroup.controllers"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn stats_parse_the_kernels_files() {
    let fs = FakeFs::new("cpu memory pids");
    fs.layout("cpu memory pids", &["herd", "herd/slice"]);
    fs.write("rube/herd/slice/memory.current", "1234567\n");
    fs.write("rube/herd/slice/memory.peak", "2345678\n");
    fs.write(
        "rube/herd/slice/memory.events",
        "low 0\nhigh 0\nmax 17\noom 3\noom_kill 2\noom_group_kill 0\n",
    );
    fs.write(
        "rube/herd/slice/cpu.stat",
        "usage_usec 98765\nuser_usec 90000\nsystem_usec 8765\nnr_periods 40\nnr_throttled 12\n\
         throttled_usec 34567\nnr_bursts 0\nburst_usec 0\n",
    );
    fs.write("rube/herd/slice/pids.current", "3\n");
    let h = fs.hierarchy();
    assert_eq!(
        h.stats(&p("herd/slice")).unwrap(),
        Stats {
            memory_current: 1_234_567,
            memory_peak: Some(2_345_678),
            oom_kills: 2,
            cpu_usage_usec: 98_765,
            cpu_throttled_periods: 12,
            cpu_throttled_usec: 34_567,
            pids_current: 3,
        }
    );
    // No memory.peak before 5.19; a cgroup without controllers has only cpu.stat.
    assert_eq!(h.stats(&p("herd")).unwrap(), Stats::default());

    fs.write("rube/herd/memory.current", "lots\n");
    let err = h.stats(&p("herd")).unwrap_err();
    let Error::Parse { path, value, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &fs.own.join("rube/herd/memory.current"));
    assert_eq!(value, "lots");

    let err = h.stats(&p("gone")).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("rube/gone")),
        "{err:?}"
    );
}

#[test]
fn procs_are_recursive_and_sigkill_goes_through_cgroup_kill() {
    let fs = FakeFs::new("cpu memory pids");
    fs.layout("cpu memory pids", &["herd", "herd/a", "herd/b"]);
    let mut sleeper = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    fs.write("rube/herd/a/cgroup.procs", &format!("{pid}\n"));
    fs.write("rube/herd/b/cgroup.procs", "4000000\n4000001\n");
    let h = fs.hierarchy();
    assert_eq!(
        h.procs(&p("herd")).unwrap(),
        vec![pid, 4_000_000, 4_000_001]
    );
    assert_eq!(h.procs(&p("herd/a")).unwrap(), vec![pid]);
    assert!(h.procs(&p("absent")).unwrap().is_empty());

    // SIGKILL is the kernel's job through cgroup.kill: the file is written, no pid signalled.
    assert_eq!(
        h.kill(&p("herd/a"), nix::sys::signal::Signal::SIGKILL)
            .unwrap(),
        1
    );
    assert_eq!(fs.read("rube/herd/a/cgroup.kill"), "1");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "not signalled directly"
    );

    // Other signals go to each pid; pids that do not exist are skipped.
    std::fs::remove_file(fs.own.join("rube/herd/b/cgroup.procs")).unwrap();
    assert_eq!(
        h.kill(&p("herd"), nix::sys::signal::Signal::SIGTERM)
            .unwrap(),
        1
    );
    assert_eq!(sleeper.wait().unwrap().signal(), Some(15));
    fs.write("rube/herd/b/cgroup.procs", "4000000\n");
    assert_eq!(
        h.kill(&p("herd/b"), nix::sys::signal::Signal::SIGTERM)
            .unwrap(),
        0
    );
}

#[test]
fn remove_of_an_absent_cgroup_is_ok_and_a_failed_rmdir_names_the_directory() {
    let fs = FakeFs::new("cpu memory pids");
    fs.layout("cpu memory pids", &["herd", "herd/slice"]);
    let h = fs.hierarchy();
    h.remove(&p("herd/other"), Duration::ZERO).unwrap();
    // A plain directory with files in it cannot be removed (cgroupfs's can): the error names
    // the deepest directory, the first one tried.
    let err = h.remove(&p("herd"), Duration::ZERO).unwrap_err();
    let Error::Io { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &fs.own.join("rube/herd/slice"));
    assert_eq!(source.kind(), std::io::ErrorKind::DirectoryNotEmpty);
}

#[test]
fn enter_leaf_makes_the_leaf_and_moves_the_own_processes() {
    let fs = FakeFs::new("cpu memory pids");
    fs.write("cgroup.procs", "4000000\n");
    // The leaf as the kernel makes it on mkdir.
    fs.cgroup(&fs.own.join("rubelet"), "");
    let h = fs.hierarchy();
    let leaf = h.enter_leaf("rubelet").unwrap().unwrap();
    assert_eq!(leaf, fs.own.join("rubelet"));
    assert_eq!(fs.read("rubelet/cgroup.procs"), "4000000");
    assert!(matches!(h.enter_leaf("rube"), Err(Error::InvalidPath(_))));
    assert!(matches!(h.enter_leaf("../x"), Err(Error::InvalidPath(_))));
    // The root cgroup (no cgroup.type) is exempt: its processes stay.
    std::fs::remove_file(fs.own.join("cgroup.type")).unwrap();
    fs.write("rubelet/cgroup.procs", "");
    assert_eq!(h.enter_leaf("rubelet").unwrap(), None);
    assert_eq!(fs.read("rubelet/cgroup.procs"), "");
    // v1 has no "no internal processes" rule.
    let tmp = tempfile::tempdir().unwrap();
    let v1 = Hierarchy::v1_at(vec![(Subsystem::Memory, tmp.path().join("rube"))]);
    assert_eq!(v1.enter_leaf("rubelet").unwrap(), None);
}
