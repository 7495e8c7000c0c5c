//! The test kit every crate's tests share (feature `testing`): object builders, so a test says
//! only what matters to it, and the one way a test that needs root or a kernel feature says
//! loudly why it skips.
//!
//! Nothing here is used outside tests.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use crate::object;
use crate::rube::Object;
use crate::runink::{Resources, RestartPolicy, Slice};

/// A `runink.Slice` object under construction; see [`slice`].
#[derive(Debug, Clone)]
pub struct SliceObject {
    namespace: String,
    name: String,
    spec: Slice,
    labels: HashMap<String, String>,
    revision: u64,
    generation: u64,
}

/// A slice `namespace/name` running `/bin/true` until told otherwise:
/// `testing::slice("herd", "a").script("echo hi").node("worker-1").build()`.
pub fn slice(namespace: &str, name: &str) -> SliceObject {
    SliceObject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        spec: Slice {
            command: "/bin/true".into(),
            ..Default::default()
        },
        labels: HashMap::new(),
        revision: 0,
        generation: 0,
    }
}

impl SliceObject {
    /// Runs `command` with no arguments.
    pub fn command(mut self, command: &str) -> SliceObject {
        self.spec.command = command.to_owned();
        self.spec.args.clear();
        self
    }

    /// Runs `/bin/sh -c script`.
    pub fn script(mut self, script: &str) -> SliceObject {
        self.spec.command = "/bin/sh".into();
        self.spec.args = vec!["-c".into(), script.into()];
        self
    }

    /// Binds it to node `node` (label `node=<node>`).
    pub fn node(self, node: &str) -> SliceObject {
        self.label("node", node)
    }

    pub fn label(mut self, key: &str, value: &str) -> SliceObject {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn restart(mut self, policy: RestartPolicy) -> SliceObject {
        self.spec.set_restart_policy(policy);
        self
    }

    pub fn cpu_millis(mut self, cpu_millis: u64) -> SliceObject {
        self.spec
            .resources
            .get_or_insert_with(Resources::default)
            .cpu_millis = cpu_millis;
        self
    }

    /// As if read from a store at `revision`.
    pub fn revision(mut self, revision: u64) -> SliceObject {
        self.revision = revision;
        self
    }

    /// As if the apiserver had stamped spec generation `generation`.
    pub fn generation(mut self, generation: u64) -> SliceObject {
        self.generation = generation;
        self
    }

    /// Changes anything else of the spec.
    pub fn spec(mut self, change: impl FnOnce(&mut Slice)) -> SliceObject {
        change(&mut self.spec);
        self
    }

    pub fn build(self) -> Object {
        let mut object = object::new(&self.namespace, &self.name, &self.spec);
        if let Some(metadata) = object.metadata.as_mut() {
            metadata.labels = self.labels;
            metadata.revision = self.revision;
            metadata.generation = self.generation;
        }
        object
    }
}

/// Drives a pure controller model to its fixpoint: `reconcile` the world, `simulate` the
/// effects on it, again, until `reconcile` asks for nothing. Returns the effects of every round
/// (the last world is left in `world`).
///
/// # Panics
/// After `max` rounds that still asked for effects, naming the ones still asked for.
pub fn fixpoint<W: std::fmt::Debug, E: std::fmt::Debug>(
    world: &mut W,
    max: usize,
    mut reconcile: impl FnMut(&W) -> Vec<E>,
    mut simulate: impl FnMut(&W, &[E]) -> W,
) -> Vec<Vec<E>> {
    let mut rounds = Vec::new();
    for _ in 0..max {
        let effects = reconcile(world);
        if effects.is_empty() {
            return rounds;
        }
        *world = simulate(world, &effects);
        rounds.push(effects);
    }
    panic!(
        "no fixpoint after {max} rounds: still {:?} in {world:?}",
        reconcile(world)
    );
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Says loudly on stderr that `test` skips and why. CI runs as root with every package
/// installed, so nothing that can run there skips.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// True when running as root; otherwise says why `test` skips and returns false.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(
        test,
        "needs root for cgroups and namespaces (CI runs as root)",
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectExt;

    #[test]
    fn fixpoint_stops_when_nothing_is_asked_and_panics_when_it_never_stops() {
        // A counter that wants to reach 3, one step per round.
        let mut world = 0u32;
        let rounds = fixpoint(
            &mut world,
            5,
            |w| if *w < 3 { vec![1u32] } else { vec![] },
            |w, e| w + e.iter().sum::<u32>(),
        );
        assert_eq!((world, rounds.len()), (3, 3));
        let endless = std::panic::catch_unwind(|| {
            fixpoint(&mut 0u32, 4, |_| vec![1u32], |w, _| w + 1);
        });
        assert!(endless.is_err());
    }

    #[test]
    fn a_built_slice_carries_what_was_said_and_defaults_for_the_rest() {
        let object = slice("herd", "a")
            .script("echo hi")
            .node("worker-1")
            .restart(RestartPolicy::OnFailure)
            .cpu_millis(200)
            .revision(7)
            .build();
        assert_eq!(object.type_name(), "runink.Slice");
        assert_eq!((object.namespace(), object.name()), ("herd", "a"));
        assert_eq!(object.revision(), 7);
        let spec: Slice = object.spec_as().unwrap();
        assert_eq!(spec.args, ["-c", "echo hi"]);
        assert_eq!(spec.restart_policy(), RestartPolicy::OnFailure);
        assert_eq!(spec.resources.unwrap().cpu_millis, 200);
        let labels = &object.metadata.unwrap().labels;
        assert_eq!(labels.get("node").map(String::as_str), Some("worker-1"));
        assert_eq!(
            slice("h", "b").build().spec_as::<Slice>().unwrap().command,
            "/bin/true"
        );
    }
}
