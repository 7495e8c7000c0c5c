//! Herd quotas and usage: what a Herd's unfinished slices hold, and the refusal of a change
//! that would take a Herd over `quota.max_slices`, `cpu_millis`, `memory_bytes` or `pids`,
//! naming the limit, the total and the slices. Pure; the service keeps the usage in the Herd's
//! status (see `service.rs`).
//!
//! What counts: every slice of the Herd that has not finished for good
//! ([`rubeapi::object::slice_finished`]: a slice that will restart still holds its share). A
//! slice that declares no size for a resource counts as zero for it (only `max_slices` still
//! counts it).
//!
//! What the kernel enforces is less than this: each node's Herd cgroup carries the whole quota
//! as its limits, so the kernel bounds what the Herd's slices use *on that node*; the cluster-wide
//! figures are enforced here, at admission, from what slices declare (docs/api.md).

use std::ops::{Add, Sub};

use rubeapi::object::ObjectExt;
use rubeapi::rube::Object;
use rubeapi::runink::{HerdStatus, Quota, Slice};

use crate::Error;

/// Whether `quota` limits anything.
pub fn limits_anything(quota: &Quota) -> bool {
    quota.max_slices > 0 || quota.cpu_millis > 0 || quota.memory_bytes > 0 || quota.pids > 0
}

/// What slices hold of a Herd's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub slices: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

impl Usage {
    /// What one stored slice holds: nothing when absent or finished for good.
    pub fn of_slice(slice: Option<&Object>) -> Usage {
        let Some(slice) = slice else {
            return Usage::default();
        };
        if rubeapi::object::slice_finished(slice) {
            return Usage::default();
        }
        let resources = slice
            .spec_as::<Slice>()
            .ok()
            .and_then(|s| s.resources)
            .unwrap_or_default();
        Usage {
            slices: 1,
            cpu_millis: resources.cpu_millis,
            memory_bytes: resources.memory_bytes,
            pids: resources.pids,
        }
    }

    /// What a Herd's stored slices hold together.
    pub fn of_slices(slices: &[Object]) -> Usage {
        slices
            .iter()
            .fold(Usage::default(), |sum, s| sum + Usage::of_slice(Some(s)))
    }

    pub fn from_status(status: &HerdStatus) -> Usage {
        Usage {
            slices: u64::from(status.slices),
            cpu_millis: status.cpu_millis,
            memory_bytes: status.memory_bytes,
            pids: status.pids,
        }
    }

    /// The Herd status that shows this usage, for a Herd at `generation`.
    pub fn to_status(self, generation: u64) -> HerdStatus {
        HerdStatus {
            slices: u32::try_from(self.slices).unwrap_or(u32::MAX),
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            pids: self.pids,
            observed_generation: generation,
        }
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            slices: self.slices.saturating_add(other.slices),
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pids: self.pids.saturating_add(other.pids),
        }
    }
}

impl Sub for Usage {
    type Output = Usage;
    fn sub(self, other: Usage) -> Usage {
        Usage {
            slices: self.slices.saturating_sub(other.slices),
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pids: self.pids.saturating_sub(other.pids),
        }
    }
}

/// Refuses a change of Herd `herd`'s usage from `before` to `after` when a figure it raises goes
/// over `quota` (a change that only lowers figures is never refused, even over a quota that was
/// lowered meanwhile). `slices` names the slices the change is about, for the message.
pub fn check(
    herd: &str,
    quota: &Quota,
    before: Usage,
    after: Usage,
    slices: &[String],
) -> Result<(), Error> {
    let figures = [
        (
            "max_slices",
            u64::from(quota.max_slices),
            before.slices,
            after.slices,
        ),
        (
            "cpu_millis",
            quota.cpu_millis,
            before.cpu_millis,
            after.cpu_millis,
        ),
        (
            "memory_bytes",
            quota.memory_bytes,
            before.memory_bytes,
            after.memory_bytes,
        ),
        ("pids", quota.pids, before.pids, after.pids),
    ];
    for (name, limit, was, total) in figures {
        if limit > 0 && total > was && total > limit {
            return Err(Error::QuotaExceeded(format!(
                "slice {} would exceed herd {herd}'s quota: {name} {total} > {limit}",
                slices.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::object;
    use rubeapi::runink::slice_status::Phase;
    use rubeapi::runink::{Resources, SliceStatus};

    fn slice(name: &str, cpu: u64, memory: u64, phase: Option<Phase>) -> Object {
        let mut o = object::new(
            "h",
            name,
            &Slice {
                command: "/bin/true".into(),
                resources: Some(Resources {
                    cpu_millis: cpu,
                    memory_bytes: memory,
                    pids: 0,
                }),
                ..Default::default()
            },
        );
        o.status = phase.map(|p| {
            object::pack(&SliceStatus {
                phase: p as i32,
                ..Default::default()
            })
        });
        o
    }

    /// Checks putting `incoming` (new or replacing stored slices of the same name) into a
    /// Herd that holds `stored`, as the service does: the usage before and after the change.
    fn check_puts(stored: &[Object], incoming: &[(&str, u64, u64)]) -> Result<(), Error> {
        let before = Usage::of_slices(stored);
        let mut after = before;
        let mut names = Vec::new();
        for (name, cpu, memory) in incoming {
            let replaced = stored.iter().find(|o| o.name() == *name);
            after = after - Usage::of_slice(replaced)
                + Usage::of_slice(Some(&slice(name, *cpu, *memory, None)));
            names.push(format!("h/{name}"));
        }
        check("h", &quota(), before, after, &names)
    }

    fn quota() -> Quota {
        Quota {
            max_slices: 3,
            cpu_millis: 1000,
            memory_bytes: 0,
            pids: 0,
        }
    }

    #[test]
    fn a_slice_over_the_cpu_quota_is_refused_with_the_numbers() {
        let stored = [
            slice("a", 400, 0, Some(Phase::Running)),
            slice("b", 400, 0, None),
        ];
        assert!(check_puts(&stored, &[("c", 200, 0)]).is_ok());
        let error = check_puts(&stored, &[("c", 300, 0)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "slice h/c would exceed herd h's quota: cpu_millis 1100 > 1000"
        );
    }

    #[test]
    fn finished_slices_hold_nothing_and_an_update_replaces_the_old_size() {
        let stored = [
            slice("a", 900, 0, Some(Phase::Succeeded)),
            slice("b", 900, 0, Some(Phase::Failed)),
            slice("c", 900, 0, Some(Phase::Running)),
        ];
        // c shrinks from 900 to 500; d takes the other 500.
        assert!(check_puts(&stored, &[("c", 500, 0), ("d", 500, 0)]).is_ok());
        assert!(check_puts(&stored, &[("d", 200, 0)]).is_err());
    }

    #[test]
    fn the_slice_count_counts_unsized_slices_too() {
        let stored = [
            slice("a", 0, 0, None),
            slice("b", 0, 0, None),
            slice("c", 1, 0, None),
        ];
        let error = check_puts(&stored, &[("d", 0, 0)]).unwrap_err();
        assert!(error.to_string().ends_with("max_slices 4 > 3"), "{error}");
        assert!(check_puts(&stored[..2], &[("d", 0, 0)]).is_ok());
    }

    #[test]
    fn a_change_that_only_lowers_usage_passes_an_exceeded_quota() {
        let big = Usage {
            slices: 5,
            cpu_millis: 5000,
            ..Default::default()
        };
        let smaller = Usage {
            slices: 5,
            cpu_millis: 4000,
            ..Default::default()
        };
        assert!(check("h", &quota(), big, smaller, &["h/x".into()]).is_ok());
        assert!(check("h", &quota(), smaller, big, &["h/x".into()]).is_err());
    }
}
