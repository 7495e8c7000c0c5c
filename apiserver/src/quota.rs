//! Herd quotas at admission: a `runink.Slice` that would take its Herd over `quota.max_slices`,
//! `cpu_millis`, `memory_bytes` or `pids` is refused, naming the limit, what is in use and what
//! the slice asks for. The Herd's cgroup makes the kernel enforce the same limits on the node.
//!
//! What counts: every slice of the Herd that has not finished (a slice whose status phase is
//! SUCCEEDED or FAILED no longer holds anything), with the slice being put counted at its new
//! size instead of its old one. A slice that declares no size for a resource counts as zero
//! for it (only `max_slices` still counts it); what it really uses is bounded by the Herd's
//! cgroup on its node, whose limits are the quota's.
//!
//! [`check`] is pure. The service serializes the check and the write of Herds with quotas
//! within one apiserver; several apiservers over one etcd can race past a quota between them
//! (see docs/architecture.md).

use std::collections::HashMap;

use rubeapi::object::{Key, ObjectExt};
use rubeapi::rube::Object;
use rubeapi::runink::{Quota, Resources, Slice};

use crate::Error;

pub const SLICE: &str = "runink.Slice";
pub const HERD: &str = "runink.Herd";

/// Whether `quota` limits anything.
pub fn limits_anything(quota: &Quota) -> bool {
    quota.max_slices > 0 || quota.cpu_millis > 0 || quota.memory_bytes > 0 || quota.pids > 0
}

/// Refuses `incoming` slices (all of Herd `herd`) when, together with the Herd's other
/// slices in `stored`, they exceed `quota`.
pub fn check(
    herd: &str,
    quota: &Quota,
    stored: &[Object],
    incoming: &[(Key, Slice)],
) -> Result<(), Error> {
    let mut counted: HashMap<Key, Resources> = stored
        .iter()
        .filter(|o| !rubeapi::object::slice_finished(o))
        .filter_map(|o| {
            let spec: Slice = o.spec_as().ok()?;
            Some((Key::of(o), spec.resources.unwrap_or_default()))
        })
        .collect();
    for (key, slice) in incoming {
        counted.insert(key.clone(), slice.resources.unwrap_or_default());
    }
    let slices = counted.len() as u64;
    let sum = |f: fn(&Resources) -> u64| counted.values().map(f).sum::<u64>();
    let usage = [
        ("max_slices", u64::from(quota.max_slices), slices),
        ("cpu_millis", quota.cpu_millis, sum(|r| r.cpu_millis)),
        ("memory_bytes", quota.memory_bytes, sum(|r| r.memory_bytes)),
        ("pids", quota.pids, sum(|r| r.pids)),
    ];
    for (name, limit, total) in usage {
        if limit > 0 && total > limit {
            let names: Vec<String> = incoming
                .iter()
                .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
                .collect();
            return Err(Error::QuotaExceeded(format!(
                "slice {} would exceed herd {herd}'s quota: {name} {total} > {limit}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::object;
    use rubeapi::runink::SliceStatus;
    use rubeapi::runink::slice_status::Phase;

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

    fn incoming(name: &str, cpu: u64, memory: u64) -> (Key, Slice) {
        let o = slice(name, cpu, memory, None);
        (Key::of(&o), o.spec_as().unwrap())
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
        assert!(check("h", &quota(), &stored, &[incoming("c", 200, 0)]).is_ok());
        let error = check("h", &quota(), &stored, &[incoming("c", 300, 0)]).unwrap_err();
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
        assert!(
            check(
                "h",
                &quota(),
                &stored,
                &[incoming("c", 500, 0), incoming("d", 500, 0)]
            )
            .is_ok()
        );
        assert!(check("h", &quota(), &stored, &[incoming("d", 200, 0)]).is_err());
    }

    #[test]
    fn the_slice_count_counts_unsized_slices_too() {
        let stored = [
            slice("a", 0, 0, None),
            slice("b", 0, 0, None),
            slice("c", 1, 0, None),
        ];
        let error = check("h", &quota(), &stored, &[incoming("d", 0, 0)]).unwrap_err();
        assert!(error.to_string().ends_with("max_slices 4 > 3"), "{error}");
        assert!(check("h", &quota(), &stored[..2], &[incoming("d", 0, 0)]).is_ok());
    }
}
