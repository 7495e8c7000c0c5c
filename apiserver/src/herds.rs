//! [`Accounting`]: each Herd's usage kept exact in its status, and its quota enforced, across
//! any number of apiservers over one store.
//!
//! Every change that can alter what a Herd's slices hold (a slice created, resized, finished
//! for good or deleted; a Herd created or changed) goes to the store as one transaction that
//! also guards what it read and rewrites the Herd's status:
//!
//! ```text
//! Check(slice at the revision read) ... Check(herd at the revision read),
//! the caller's ops ...,
//! Status(herd: usage before - what the ops release + what they take)
//! ```
//!
//! The Herd's revision is the quota's compare-and-swap: two apiservers that both read the Herd
//! at revision R and both admit the last slice that fits cannot both commit, because the first
//! commit moves the Herd past R and the second one's `Check` fails; that one plans again from
//! what is stored now and is refused. Within one apiserver a lock per Herd keeps such retries
//! rare (only for Herds that exist: changes in a namespace without a Herd do not rewrite one,
//! so they need not queue). A Herd's usage is thus always the sum over its unfinished slices, and quota admission
//! compares against it instead of listing the Herd's slices on every put.
//!
//! Known gap: a slice admitted in a namespace while its Herd does not exist yet is guarded by a
//! `Check` that the Herd is absent; a Herd created at that moment counts what its listing saw,
//! and may miss that slice until the Herd is put again (every put of a Herd recounts).
//!
//! What never lives here: the rules of one change (`store::core`) and the figures' arithmetic
//! (`quota`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use prost::Name;
use prost_types::Timestamp;
use rubeapi::Registry;
use rubeapi::object::{self, ObjectExt};
use rubeapi::rube::Object;
use rubeapi::runink::{Herd, HerdStatus, Slice};
use rubeapi::selector::Filter;

use crate::Error;
use crate::quota::{self, Usage};
use crate::store::core::{self, Plan, Stamp};
use crate::store::{Expect, Key, Op, Store, Written};

/// How often a transaction is planned again after another writer changed what it read.
const MAX_ATTEMPTS: usize = 32;

/// Keeps Herd usage and quotas; one per apiserver.
#[derive(Debug, Default)]
pub struct Accounting {
    /// One lock per Herd name, held from reading a Herd to committing its new usage.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Accounting {
    /// Performs `ops` atomically, as [`Store::transact`], together with the Herd usage they
    /// change; refuses them when they would take a Herd over its quota.
    ///
    /// # Errors
    /// `QuotaExceeded` naming the limit, the total and the slices; the store's errors for the
    /// caller's ops, numbered as the caller numbered them; `Unavailable` when other writers
    /// kept changing the same Herd for [`MAX_ATTEMPTS`] plans.
    pub async fn transact<S: Store>(
        &self,
        store: &S,
        registry: &Registry,
        ops: Vec<Op>,
    ) -> Result<Vec<Written>, Error> {
        let herds = herds_touched(&ops);
        if herds.is_empty() {
            return store.transact(ops).await;
        }
        // Only a Herd that exists is rewritten by every change, so only then do concurrent
        // writers contend; for an absent one each change merely checks that it is still absent
        // (the guard keeps that exact), and writers of its namespace need not queue.
        let mut locks = Vec::with_capacity(herds.len());
        for herd in &herds {
            if read(store, &Key::new(&Herd::full_name(), "", herd))
                .await?
                .is_some()
                || ops_put_herd(&ops, herd)
            {
                locks.push(self.lock_of(herd));
            }
        }
        let mut _held = Vec::with_capacity(locks.len());
        for lock in &locks {
            // In name order (a BTreeSet), so two batches never wait on each other.
            _held.push(lock.lock().await);
        }
        for _ in 0..MAX_ATTEMPTS {
            let planned = plan(store, registry, &ops, &herds).await?;
            let first = planned.first;
            match store.transact(planned.ops).await {
                Ok(written) => return Ok(written[first..first + ops.len()].to_vec()),
                Err(error) => {
                    if let Some(error) = caller_error(error, first, ops.len()) {
                        return Err(error);
                    }
                }
            }
        }
        Err(Error::Unavailable(format!(
            "gave up after {MAX_ATTEMPTS} attempts: other writers kept changing herd {}",
            herds.into_iter().collect::<Vec<_>>().join(", ")
        )))
    }

    fn lock_of(&self, herd: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(herd.to_owned()).or_default().clone()
    }
}

/// The Herds whose usage `ops` may change: the namespaces of slices, and Herds that are put.
fn herds_touched(ops: &[Op]) -> BTreeSet<String> {
    let (slice, herd) = (Slice::full_name(), Herd::full_name());
    ops.iter()
        .filter_map(|op| {
            let key = op.key();
            if key.type_name == slice {
                Some(key.namespace)
            } else if key.type_name == herd && matches!(op, Op::Put(_)) {
                Some(key.name)
            } else {
                None
            }
        })
        .collect()
}

/// The transaction to send: `ops` at `first..first + ops.len()`, guards before, Herd statuses
/// after.
struct Planned {
    ops: Vec<Op>,
    first: usize,
}

/// What a Herd's slices release and take in one transaction.
#[derive(Default)]
struct Delta {
    released: Usage,
    taken: Usage,
    slices: Vec<String>,
}

async fn plan<S: Store>(
    store: &S,
    registry: &Registry,
    ops: &[Op],
    herds: &BTreeSet<String>,
) -> Result<Planned, Error> {
    // Planning with the store's own rules tells what each op will leave; the revision and uid
    // of the stamp do not matter to usage.
    let stamp = Stamp {
        revision: 0,
        now: Timestamp::default(),
        uid: String::new(),
    };
    let slice_kind = Slice::full_name();
    let mut guards = Vec::new();
    let mut current: HashMap<Key, Option<Object>> = HashMap::new();
    let mut deltas: BTreeMap<String, Delta> = BTreeMap::new();
    let mut herd_puts: BTreeMap<String, Object> = BTreeMap::new();
    for op in ops {
        let key = op.key();
        if key.type_name != slice_kind {
            if let Op::Put(put) = op
                && herds.contains(&key.name)
                && key.type_name == Herd::full_name()
            {
                herd_puts.insert(key.name.clone(), put.object.clone());
            }
            continue;
        }
        if !current.contains_key(&key) {
            let stored = read(store, &key).await?;
            guards.push(guard(&key, stored.as_ref()));
            current.insert(key.clone(), stored);
        }
        let before = current[&key].clone();
        let after = match core::plan_op(registry, before.as_ref(), op, &stamp) {
            Ok(Some(Plan::Write { object, .. })) => Some(object),
            Ok(Some(Plan::Remove { .. })) => None,
            // Unchanged, or an op that fails: the store reports the failure itself.
            Ok(Some(Plan::Unchanged { .. }) | None) | Err(_) => before.clone(),
        };
        let delta = deltas.entry(key.namespace.clone()).or_default();
        delta.released = delta.released + Usage::of_slice(before.as_ref());
        delta.taken = delta.taken + Usage::of_slice(after.as_ref());
        delta.slices.push(format!("{}/{}", key.namespace, key.name));
        current.insert(key, after);
    }

    let mut statuses = Vec::new();
    for herd in herds {
        let herd_key = Key::new(&Herd::full_name(), "", herd);
        let stored = read(store, &herd_key).await?;
        guards.push(guard(&herd_key, stored.as_ref()));
        let delta = deltas.remove(herd).unwrap_or_default();
        // The Herd as it will be: put in this batch, or as stored.
        let herd_object = match (herd_puts.get(herd), &stored) {
            (Some(incoming), _) => {
                let put = crate::store::PutOp {
                    object: incoming.clone(),
                    expect: None,
                };
                match core::plan_put(registry, stored.as_ref(), &put, &stamp) {
                    Ok(Plan::Write { object, .. } | Plan::Unchanged { object, .. }) => object,
                    // Removal (a marked Herd losing its finalizers) or a failing put: nothing
                    // to account.
                    Ok(Plan::Remove { .. }) | Err(_) => continue,
                }
            }
            (None, Some(stored)) => stored.clone(),
            // No Herd: nothing to account; the guard fails the batch if one appears meanwhile.
            (None, None) => continue,
        };
        let status = herd_object.status_as::<HerdStatus>().ok().flatten();
        let base = match &status {
            Some(status) if !herd_puts.contains_key(herd) => Usage::from_status(status),
            // A Herd put (or one that never had a status) is recounted from its slices as
            // stored; slices of this batch are then added by the delta.
            _ => recount(store, herd).await?,
        };
        let after = base - delta.released + delta.taken;
        let spec: Herd = herd_object
            .spec_as()
            .map_err(|e| Error::Internal(format!("herd {herd}: {e}")))?;
        let quota = spec.quota.unwrap_or_default();
        if quota::limits_anything(&quota) && !delta.slices.is_empty() {
            quota::check(herd, &quota, base, after, &delta.slices)?;
        }
        if status.is_none() && after == Usage::default() {
            // A Herd without a status holds nothing yet (and is recounted when it first
            // does), so creating a Herd takes one revision, not two.
            continue;
        }
        let generation = herd_object.metadata.as_ref().map_or(0, |m| m.generation);
        statuses.push(Op::Status {
            key: herd_key,
            status: object::pack(&after.to_status(generation)),
            expect: None,
        });
    }

    let first = guards.len();
    let mut all = guards;
    all.extend(ops.iter().cloned());
    all.extend(statuses);
    Ok(Planned { ops: all, first })
}

/// What a Herd's stored slices hold, counted from a listing.
async fn recount<S: Store>(store: &S, herd: &str) -> Result<Usage, Error> {
    let listing = store
        .list(Filter {
            type_name: Slice::full_name(),
            namespace: herd.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(Usage::of_slices(&listing.objects))
}

async fn read<S: Store>(store: &S, key: &Key) -> Result<Option<Object>, Error> {
    match store.get(key.clone()).await {
        Ok(object) => Ok(Some(object)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether `ops` put the Herd `herd` itself.
fn ops_put_herd(ops: &[Op], herd: &str) -> bool {
    ops.iter().any(|op| match op {
        Op::Put(put) => {
            let key = Key::of(&put.object);
            key.type_name == Herd::full_name() && key.name == herd
        }
        _ => false,
    })
}

/// A check that `key` is still as read: at its revision, or absent.
fn guard(key: &Key, stored: Option<&Object>) -> Op {
    let expect = match stored.and_then(|o| o.metadata.as_ref()) {
        Some(metadata) => Expect::Revision(metadata.revision),
        None => Expect::Absent,
    };
    Op::Check {
        key: key.clone(),
        expect,
    }
}

/// The error to give the caller for a failed transaction, numbered as the caller's batch of
/// `count` ops; `None` when a guard found that another writer got there first (plan again).
fn caller_error(error: Error, first: usize, count: usize) -> Option<Error> {
    let Error::InBatch {
        index, source, key, ..
    } = error
    else {
        return Some(error);
    };
    if (first..first + count).contains(&index) {
        return Some(if count == 1 {
            *source
        } else {
            Error::InBatch {
                index: index - first,
                count,
                key,
                source,
            }
        });
    }
    match *source {
        Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. } => None,
        other => Some(Error::Internal(format!(
            "keeping the usage of a herd ({key}): {other}"
        ))),
    }
}
