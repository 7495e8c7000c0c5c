//! Shared by the integration tests: root and cgroup checks, a throwaway node subtree, specs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cgroups::{CgroupPath, Hierarchy};
use slices::spec::{HierarchySpec, LaunchSpec};
use slices::{Outcome, ShimState};

pub const SHIM: &str = env!("CARGO_BIN_EXE_rube-shim");

/// A node subtree of its own, removed (with anything left in it) on drop.
pub struct Node {
    pub hierarchy: Hierarchy,
    pub dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let root = CgroupPath::root();
        if let Ok(herds) = self.hierarchy.children(&root) {
            for herd in herds {
                let _ = self
                    .hierarchy
                    .remove(&root.join(&herd).unwrap(), Duration::from_millis(100));
            }
        }
        for dir in self.hierarchy.dirs(&root) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A fresh node subtree, or `None` (said loudly) when this is not root or cgroups are missing.
pub fn node(test: &str) -> Option<Node> {
    if !rubeapi::testing::root_or_skip(test) {
        return None;
    }
    static N: AtomicUsize = AtomicUsize::new(0);
    let subtree = format!(
        "rube-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    match Hierarchy::detect(&subtree) {
        Ok(hierarchy) => Some(Node {
            hierarchy,
            dir: tempfile::tempdir().unwrap(),
        }),
        Err(e) => {
            rubeapi::testing::skip(test, &format!("no cgroups: {e}"));
            None
        }
    }
}

impl Node {
    pub fn spec(&self, command: &str, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            hierarchy: Some(HierarchySpec::of(&self.hierarchy)),
            cgroup: "herd/slice".into(),
            log_file_bytes: 1 << 20,
            log_files: 3,
            kill_grace_ms: 300,
            ..Default::default()
        }
    }

    pub fn slice_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cgroup_exists(&self, path: &str) -> bool {
        self.hierarchy.exists(&CgroupPath::new(path).unwrap())
    }
}

/// Polls the slice dir until the shim recorded an outcome (at most 60 s, then panics).
pub fn wait_exit(dir: &Path) -> Outcome {
    for _ in 0..3000 {
        match slices::read(dir).unwrap() {
            ShimState::Exited(outcome) => return outcome,
            ShimState::Lost(r) => panic!("shim lost: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no outcome in {}", dir.display());
}

/// The whole log of a slice dir, as text.
pub fn log(dir: &Path) -> String {
    let chunk = slices::logs::read(dir, 0, 64 << 20).unwrap();
    String::from_utf8_lossy(&chunk.data).into_owned()
}

/// Launches `sh -c script` and waits for its outcome and log.
pub fn run_sh(
    node: &Node,
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut LaunchSpec),
) -> (Outcome, String) {
    let mut spec = node.spec("sh", &["-c", script]);
    spec.cgroup = format!("herd/{name}");
    edit(&mut spec);
    let dir = node.slice_dir(name);
    slices::launch(Path::new(SHIM), &dir, &spec).unwrap();
    let outcome = wait_exit(&dir);
    (outcome, log(&dir))
}
