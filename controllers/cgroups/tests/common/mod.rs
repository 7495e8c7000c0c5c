//! The harness the real-kernel tests share: a uniquely named node subtree removed on drop, and
//! children that start only once they are in their cgroup.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cgroups::{CgroupPath, Hierarchy, Version};

pub use rubeapi::testing::{root_or_skip, skip};

/// A node subtree `rube-test-<random>` under the process's own cgroups, and the children
/// started in it. Dropping it kills the children and removes the subtree in every hierarchy,
/// also when the test failed.
pub struct Subtree {
    pub h: Hierarchy,
    pub name: String,
    children: Vec<Child>,
}

impl Subtree {
    pub fn detect() -> Subtree {
        let name = unique_name();
        let h = Hierarchy::detect(&name).unwrap();
        Subtree::at(h, name)
    }

    /// A subtree already placed (`h` rooted at a directory named `name`).
    pub fn at(h: Hierarchy, name: String) -> Subtree {
        Subtree {
            h,
            name,
            children: Vec::new(),
        }
    }

    pub fn version(&self) -> Version {
        self.h.version()
    }

    /// Starts `sh -c script` waiting on stdin, moves it into `path`, then lets it go: whatever
    /// the script does happens inside the cgroup. Returns the index for [`Subtree::child`].
    pub fn spawn_in(&mut self, path: &CgroupPath, script: &str) -> usize {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ready; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        self.h.add_process(path, pid).unwrap();
        let child = self.children.last_mut().unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        self.children.len() - 1
    }

    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    /// Waits for child `i` and returns its status and stdout.
    pub fn wait_output(&mut self, i: usize) -> (std::process::ExitStatus, String) {
        use std::io::Read as _;
        let child = &mut self.children[i];
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (child.wait().unwrap(), out)
    }

    /// Every directory of the subtree is gone in every hierarchy.
    pub fn assert_gone(&self) {
        for d in self.h.dirs(&CgroupPath::root()) {
            assert!(!d.exists(), "{} is left behind", d.display());
        }
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.h.remove(&CgroupPath::root(), Duration::ZERO) {
            eprintln!("cleanup of {} failed: {e}", self.name);
        }
    }
}

/// `rube-test-<pid>-<nanos>`: unique across concurrent tests and test runs.
pub fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("rube-test-{}-{nanos}", std::process::id())
}

pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}
