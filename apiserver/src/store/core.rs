//! The rules of a change, as pure functions every backend shares: given the stored object (if
//! any), the request and the revision the change would take, decide what to write.
//! Nothing here does I/O or reads a clock; the caller passes a `Stamp`.

use prost_reflect::DynamicMessage;
use prost_types::{Any, Timestamp};
use rubeapi::Registry;
use rubeapi::rube::{Lease, Metadata, Object, Outcome};

use super::{Expect, Key, Labels, Op, PutOp, Revision, Written};
use crate::Error;

/// Kinds whose history keeps only the latest put of each object (log compaction by key).
///
/// A lease is renewed every few seconds by every node; each renewal is worthless once a newer
/// one exists, and keeping them all would fill the history that watchers of everything else
/// resume from (and that retention compaction trims by count). A watcher that resumes from
/// before a superseded put receives the newer put instead: it may skip intermediate states of
/// such an object, never its current one. Deletes are always kept.
///
/// The one such kind is `rube.Lease`; the sqlite backend's partial index is built for it.
pub fn supersedes_history(type_name: &str) -> bool {
    rubeapi::object::is_kind::<Lease>(type_name)
}

/// What the caller provides for a change: its revision, the time, and a fresh uid for creation.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub revision: Revision,
    pub now: Timestamp,
    pub uid: String,
}

/// What to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing changes; no revision is taken.
    Unchanged { object: Object, outcome: Outcome },
    /// Store `object` (which carries the new revision) and log a put event.
    Write {
        object: Object,
        outcome: Outcome,
        prev_labels: Option<Labels>,
    },
    /// Remove the object and log a delete event carrying `object` at the new revision.
    Remove { object: Object },
}

impl Plan {
    /// True when the plan takes a revision.
    pub fn is_change(&self) -> bool {
        !matches!(self, Plan::Unchanged { .. })
    }
}

/// Checks a precondition against the stored object.
pub fn check(expect: Option<Expect>, existing: Option<&Object>, key: &Key) -> Result<(), Error> {
    let actual = existing.map(revision_of);
    match (expect, actual) {
        (None, _) | (Some(Expect::Absent), None) => Ok(()),
        (Some(Expect::Absent), Some(revision)) => Err(Error::AlreadyExists {
            key: key.clone(),
            revision,
        }),
        (Some(Expect::Revision(expected)), actual) if actual != Some(expected) => {
            Err(Error::Conflict {
                key: key.clone(),
                expected,
                actual,
            })
        }
        (Some(Expect::Revision(_)), _) => Ok(()),
    }
}

/// Plans one op of a transaction; `None` for a `Check` that holds (it writes nothing).
///
/// # Errors
/// As the op's own planning function; `Check` as [`check`].
pub fn plan_op(
    registry: &Registry,
    existing: Option<&Object>,
    op: &Op,
    stamp: &Stamp,
) -> Result<Option<Plan>, Error> {
    match op {
        Op::Put(put) => plan_put(registry, existing, put, stamp).map(Some),
        Op::Delete { key, expect } => plan_delete(existing, key, *expect, stamp).map(Some),
        Op::Status {
            key,
            status,
            expect,
        } => plan_update_status(registry, existing, key, status, *expect, stamp).map(Some),
        Op::Check { key, expect } => check(Some(*expect), existing, key).map(|()| None),
    }
}

/// What a `Check` answers: the object as it is, unchanged (an empty object when absent).
pub fn checked(existing: Option<&Object>) -> Written {
    Written {
        object: existing.cloned().unwrap_or_default(),
        outcome: Outcome::Unchanged,
    }
}

/// Plans a put of an admitted object.
pub fn plan_put(
    registry: &Registry,
    existing: Option<&Object>,
    op: &PutOp,
    stamp: &Stamp,
) -> Result<Plan, Error> {
    let key = Key::of(&op.object);
    check(op.expect, existing, &key)?;
    let incoming = op.object.metadata.clone().unwrap_or_default();
    let Some(old) = existing else {
        let metadata = Metadata {
            namespace: incoming.namespace,
            name: incoming.name,
            uid: stamp.uid.clone(),
            labels: incoming.labels,
            annotations: incoming.annotations,
            revision: stamp.revision,
            create_revision: stamp.revision,
            generation: 1,
            owner_references: incoming.owner_references,
            finalizers: incoming.finalizers,
            creation_timestamp: Some(stamp.now),
            deletion_timestamp: None,
        };
        return Ok(Plan::Write {
            object: Object {
                metadata: Some(metadata),
                spec: op.object.spec.clone(),
                status: None,
            },
            outcome: Outcome::Created,
            prev_labels: None,
        });
    };
    let old_metadata = old.metadata.clone().unwrap_or_default();
    let spec_changed = !same_any(registry, old.spec.as_ref(), op.object.spec.as_ref());
    let metadata_changed = old_metadata.labels != incoming.labels
        || old_metadata.annotations != incoming.annotations
        || old_metadata.owner_references != incoming.owner_references
        || old_metadata.finalizers != incoming.finalizers;
    if !spec_changed && !metadata_changed {
        return Ok(Plan::Unchanged {
            object: old.clone(),
            outcome: Outcome::Unchanged,
        });
    }
    let prev_labels = (old_metadata.labels != incoming.labels).then(|| old_metadata.labels.clone());
    let metadata = Metadata {
        labels: incoming.labels,
        annotations: incoming.annotations,
        owner_references: incoming.owner_references,
        finalizers: incoming.finalizers,
        revision: stamp.revision,
        generation: old_metadata.generation + u64::from(spec_changed),
        ..old_metadata
    };
    let object = Object {
        metadata: Some(metadata),
        spec: op.object.spec.clone(),
        status: old.status.clone(),
    };
    let marked = object
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some());
    let unfinalized = object
        .metadata
        .as_ref()
        .is_some_and(|m| m.finalizers.is_empty());
    if marked && unfinalized {
        return Ok(Plan::Remove { object });
    }
    Ok(Plan::Write {
        object,
        outcome: Outcome::Updated,
        prev_labels,
    })
}

/// Plans a delete: removal, or a deletion mark while finalizers remain.
pub fn plan_delete(
    existing: Option<&Object>,
    key: &Key,
    expect: Option<Expect>,
    stamp: &Stamp,
) -> Result<Plan, Error> {
    let Some(old) = existing else {
        return Err(Error::NotFound { key: key.clone() });
    };
    check(expect, existing, key)?;
    let mut object = old.clone();
    let metadata = object.metadata.get_or_insert_with(Default::default);
    if metadata.finalizers.is_empty() {
        metadata.revision = stamp.revision;
        return Ok(Plan::Remove { object });
    }
    if metadata.deletion_timestamp.is_some() {
        return Ok(Plan::Unchanged {
            object,
            outcome: Outcome::DeletionPending,
        });
    }
    metadata.deletion_timestamp = Some(stamp.now);
    metadata.revision = stamp.revision;
    Ok(Plan::Write {
        object,
        outcome: Outcome::DeletionPending,
        prev_labels: None,
    })
}

/// Plans a status update of an admitted status.
pub fn plan_update_status(
    registry: &Registry,
    existing: Option<&Object>,
    key: &Key,
    status: &Any,
    expect: Option<Expect>,
    stamp: &Stamp,
) -> Result<Plan, Error> {
    let Some(old) = existing else {
        return Err(Error::NotFound { key: key.clone() });
    };
    check(expect, existing, key)?;
    if same_any(registry, old.status.as_ref(), Some(status)) {
        return Ok(Plan::Unchanged {
            object: old.clone(),
            outcome: Outcome::Unchanged,
        });
    }
    let mut object = old.clone();
    object.status = Some(status.clone());
    object
        .metadata
        .get_or_insert_with(Default::default)
        .revision = stamp.revision;
    Ok(Plan::Write {
        object,
        outcome: Outcome::Updated,
        prev_labels: None,
    })
}

/// A compaction may not reach past the current revision.
pub fn check_compaction(revision: Revision, current: Revision) -> Result<(), Error> {
    if revision > current {
        return Err(Error::Invalid(format!(
            "cannot compact to revision {revision}: the current revision is {current}"
        )));
    }
    Ok(())
}

/// A watch may resume only from the compaction point or later.
pub fn check_resume(from: Option<Revision>, compacted: Revision) -> Result<(), Error> {
    match from {
        Some(from) if from < compacted => Err(Error::Compacted {
            requested: from,
            compacted,
        }),
        _ => Ok(()),
    }
}

fn revision_of(object: &Object) -> Revision {
    object.metadata.as_ref().map_or(0, |m| m.revision)
}

/// Compares two Any values by content: equal bytes, or equal after decoding (map entries may be
/// encoded in any order, so equal messages can have different bytes).
fn same_any(registry: &Registry, a: Option<&Any>, b: Option<&Any>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) if a.type_url != b.type_url => false,
        (Some(a), Some(b)) if a.value == b.value => true,
        (Some(a), Some(b)) => {
            let Ok(descriptor) = registry.message(rubeapi::type_name_of_url(&a.type_url)) else {
                return false;
            };
            let decode = |v: &[u8]| DynamicMessage::decode(descriptor.clone(), v).ok();
            matches!((decode(&a.value), decode(&b.value)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rubeapi::object::{self, ObjectExt};
    use rubeapi::runink::{Herd, Quota, Slice};

    fn stamp(revision: Revision) -> Stamp {
        Stamp {
            revision,
            now: Timestamp {
                seconds: revision as i64,
                nanos: 0,
            },
            uid: format!("uid-{revision}"),
        }
    }

    fn slice(command: &str) -> Object {
        rubeapi::testing::slice("herd", "s")
            .command(command)
            .build()
    }

    fn put(object: Object, expect: Option<Expect>) -> PutOp {
        PutOp { object, expect }
    }

    fn written(plan: Plan) -> Object {
        match plan {
            Plan::Write { object, .. }
            | Plan::Remove { object }
            | Plan::Unchanged { object, .. } => object,
        }
    }

    #[test]
    fn creation_sets_server_fields() {
        let registry = Registry::builtin();
        let plan = plan_put(&registry, None, &put(slice("a"), None), &stamp(7)).unwrap();
        let Plan::Write {
            object,
            outcome,
            prev_labels,
        } = plan
        else {
            panic!("expected a write")
        };
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(prev_labels, None);
        let m = object.metadata.unwrap();
        assert_eq!(
            (m.revision, m.create_revision, m.generation, m.uid.as_str()),
            (7, 7, 1, "uid-7")
        );
    }

    #[test]
    fn generation_bumps_on_spec_change_only() {
        let registry = Registry::builtin();
        let v1 = written(plan_put(&registry, None, &put(slice("a"), None), &stamp(1)).unwrap());

        let mut relabelled = slice("a");
        relabelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("node".into(), "w1".into());
        let v2 = plan_put(&registry, Some(&v1), &put(relabelled, None), &stamp(2)).unwrap();
        let Plan::Write {
            object: v2,
            prev_labels,
            ..
        } = v2
        else {
            panic!()
        };
        assert_eq!(v2.metadata.as_ref().unwrap().generation, 1);
        assert_eq!(prev_labels, Some(Labels::new()));

        let mut changed = slice("b");
        changed.metadata = v2.metadata.clone();
        let v3 = written(plan_put(&registry, Some(&v2), &put(changed, None), &stamp(3)).unwrap());
        let m = v3.metadata.unwrap();
        assert_eq!(
            (m.generation, m.revision, m.create_revision, m.uid.as_str()),
            (2, 3, 1, "uid-1")
        );
    }

    #[test]
    fn an_identical_put_is_unchanged_even_with_reordered_maps() {
        let registry = Registry::builtin();
        let mut spec = Slice::default();
        for i in 0..20 {
            spec.env.insert(format!("K{i}"), format!("v{i}"));
        }
        let v1 = written(
            plan_put(
                &registry,
                None,
                &put(object::new("h", "s", &spec), None),
                &stamp(1),
            )
            .unwrap(),
        );
        // A fresh encoding of the same map may order entries differently.
        let again = object::new("h", "s", &spec.clone());
        let plan = plan_put(&registry, Some(&v1), &put(again, None), &stamp(2)).unwrap();
        assert!(!plan.is_change(), "{plan:?}");
    }

    #[test]
    fn preconditions_are_compare_and_swap() {
        let registry = Registry::builtin();
        let v1 = written(plan_put(&registry, None, &put(slice("a"), None), &stamp(5)).unwrap());
        let key = Key::of(&v1);
        let stale = plan_put(
            &registry,
            Some(&v1),
            &put(slice("b"), Some(Expect::Revision(4))),
            &stamp(6),
        );
        assert_eq!(
            stale,
            Err(Error::Conflict {
                key: key.clone(),
                expected: 4,
                actual: Some(5)
            })
        );
        assert_eq!(
            stale.unwrap_err().to_string(),
            "conflict on runink.Slice herd/s: expected revision 4, found 5"
        );
        let exists = plan_put(
            &registry,
            Some(&v1),
            &put(slice("b"), Some(Expect::Absent)),
            &stamp(6),
        );
        assert_eq!(
            exists,
            Err(Error::AlreadyExists {
                key: key.clone(),
                revision: 5
            })
        );
        let missing = plan_put(
            &registry,
            None,
            &put(slice("b"), Some(Expect::Revision(5))),
            &stamp(6),
        );
        assert_eq!(
            missing,
            Err(Error::Conflict {
                key,
                expected: 5,
                actual: None
            })
        );
        assert!(
            plan_put(
                &registry,
                Some(&v1),
                &put(slice("b"), Some(Expect::Revision(5))),
                &stamp(6)
            )
            .is_ok()
        );
    }

    #[test]
    fn finalizers_turn_delete_into_a_mark_and_the_last_removal_deletes() {
        let registry = Registry::builtin();
        let mut o = slice("a");
        o.metadata
            .as_mut()
            .unwrap()
            .finalizers
            .push("rube/cleanup".into());
        let v1 = written(plan_put(&registry, None, &put(o.clone(), None), &stamp(1)).unwrap());
        let key = Key::of(&v1);

        let marked = plan_delete(Some(&v1), &key, None, &stamp(2)).unwrap();
        let Plan::Write {
            object: v2,
            outcome: Outcome::DeletionPending,
            ..
        } = marked
        else {
            panic!("{marked:?}")
        };
        assert!(v2.metadata.as_ref().unwrap().deletion_timestamp.is_some());
        // Deleting again changes nothing.
        assert!(
            !plan_delete(Some(&v2), &key, None, &stamp(3))
                .unwrap()
                .is_change()
        );

        let mut unfinalized = o;
        unfinalized.metadata.as_mut().unwrap().finalizers.clear();
        let removed = plan_put(&registry, Some(&v2), &put(unfinalized, None), &stamp(3)).unwrap();
        let Plan::Remove { object } = removed else {
            panic!("{removed:?}")
        };
        assert_eq!(object.revision(), 3);
    }

    #[test]
    fn status_updates_keep_spec_and_generation() {
        let registry = Registry::builtin();
        let spec = Herd {
            description: "x".into(),
            quota: Some(Quota::default()),
        };
        let v1 = written(
            plan_put(
                &registry,
                None,
                &put(object::new("", "h", &spec), None),
                &stamp(1),
            )
            .unwrap(),
        );
        let key = Key::of(&v1);
        let status = object::pack(&rubeapi::runink::HerdStatus {
            slices: 3,
            ..Default::default()
        });
        let v2 = written(
            plan_update_status(&registry, Some(&v1), &key, &status, None, &stamp(2)).unwrap(),
        );
        assert_eq!(v2.metadata.as_ref().unwrap().generation, 1);
        assert_eq!(v2.revision(), 2);
        assert_eq!(v2.spec, v1.spec);
        assert!(
            !plan_update_status(&registry, Some(&v2), &key, &status, None, &stamp(3))
                .unwrap()
                .is_change()
        );
        // A later spec put keeps the status.
        let spec2 = Herd {
            description: "y".into(),
            quota: None,
        };
        let v3 = written(
            plan_put(
                &registry,
                Some(&v2),
                &put(object::new("", "h", &spec2), None),
                &stamp(3),
            )
            .unwrap(),
        );
        assert_eq!(v3.status, Some(status));
        assert_eq!(
            plan_update_status(&registry, None, &key, &Any::default(), None, &stamp(4)),
            Err(Error::NotFound { key })
        );
    }
}
