//! `MemStore`: the reference model. Everything in memory under one lock, using the same change
//! rules (`core`) and watch machinery (`hub`) as the real backends. Property tests check that
//! every backend agrees with it; it keeps nothing across restarts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use prost_types::{Any, Timestamp};
use rubeapi::Registry;
use rubeapi::rube::{Object, Outcome};
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use super::core::{self, Plan, Stamp};
use super::hub::{self, History, Hub, Page, WatchOptions};
use super::{
    Compaction, Event, EventKind, Expect, Key, Listing, Op, Revision, Store, WatchStream, Written,
};
use crate::Error;

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    objects: BTreeMap<Key, Object>,
    /// Events after `compacted`, in revision order.
    events: VecDeque<Arc<Event>>,
}

struct Log {
    state: Mutex<State>,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("mem store lock")
    }
}

/// The in-memory reference store.
pub struct MemStore {
    log: Arc<Log>,
    hub: Arc<Hub>,
    registry: Registry,
    watch: WatchOptions,
    cancel: CancellationToken,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

impl MemStore {
    /// An empty store. Must be called inside a tokio runtime.
    pub fn new(registry: Registry, watch: WatchOptions) -> MemStore {
        let hub = Arc::new(Hub::new(0, watch.buffer));
        let cancel = CancellationToken::new();
        hub::spawn_progress_ticker(hub.clone(), watch, cancel.clone());
        MemStore {
            log: Arc::new(Log {
                state: Mutex::new(State::default()),
            }),
            hub,
            registry,
            watch,
            cancel,
        }
    }

    /// Plans and applies changes under the lock, then publishes their events. `changes` returns
    /// `Err` to abandon everything it planned.
    fn change<T>(
        &self,
        changes: impl FnOnce(&mut Staging<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut state = self.log.lock();
        let mut staging = Staging {
            registry: &self.registry,
            state: &state,
            revision: state.revision,
            writes: Vec::new(),
        };
        let result = changes(&mut staging)?;
        let Staging {
            revision, writes, ..
        } = staging;
        let mut events = Vec::with_capacity(writes.len());
        for (key, event) in writes {
            if event.kind == EventKind::Put && core::supersedes_history(&key.type_name) {
                state
                    .events
                    .retain(|e| e.kind != EventKind::Put || Key::of(&e.object) != key);
            }
            match event.kind {
                EventKind::Put => state.objects.insert(key, event.object.clone()),
                EventKind::Delete => state.objects.remove(&key),
            };
            let event = Arc::new(event);
            state.events.push_back(event.clone());
            events.push(event);
        }
        state.revision = revision;
        // Publishing under the store lock keeps the hub in revision order.
        self.hub.publish(&events, revision);
        Ok(result)
    }
}

impl Drop for MemStore {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Changes planned but not yet applied: later plans in one batch see earlier ones.
struct Staging<'a> {
    registry: &'a Registry,
    state: &'a State,
    revision: Revision,
    writes: Vec<(Key, Event)>,
}

impl Staging<'_> {
    fn current(&self, key: &Key) -> Option<Object> {
        match self.writes.iter().rev().find(|(k, _)| k == key) {
            Some((_, event)) if event.kind == EventKind::Delete => None,
            Some((_, event)) => Some(event.object.clone()),
            None => self.state.objects.get(key).cloned(),
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            revision: self.revision + 1,
            now: Timestamp::from(SystemTime::now()),
            uid: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn perform(&mut self, key: Key, plan: Plan) -> Written {
        let (object, outcome, kind, prev_labels) = match plan {
            Plan::Unchanged { object, outcome } => return Written { object, outcome },
            Plan::Write {
                object,
                outcome,
                prev_labels,
            } => (object, outcome, EventKind::Put, prev_labels),
            Plan::Remove { object } => (object, Outcome::Deleted, EventKind::Delete, None),
        };
        self.revision += 1;
        self.writes.push((
            key,
            Event {
                revision: self.revision,
                kind,
                object: object.clone(),
                prev_labels,
            },
        ));
        Written { object, outcome }
    }
}

impl Store for MemStore {
    async fn transact(&self, ops: Vec<Op>) -> Result<Vec<Written>, Error> {
        self.change(|staging| {
            let count = ops.len();
            let mut written = Vec::with_capacity(count);
            for (index, op) in ops.iter().enumerate() {
                let key = op.key();
                let existing = staging.current(&key);
                let plan = core::plan_op(staging.registry, existing.as_ref(), op, &staging.stamp())
                    .map_err(|e| e.in_batch(index, count, &key))?;
                written.push(match plan {
                    Some(plan) => staging.perform(key, plan),
                    None => core::checked(existing.as_ref()),
                });
            }
            Ok(written)
        })
    }

    async fn get(&self, key: Key) -> Result<Object, Error> {
        self.log
            .lock()
            .objects
            .get(&key)
            .cloned()
            .ok_or(Error::NotFound { key })
    }

    async fn list(&self, filter: Filter) -> Result<Listing, Error> {
        let state = self.log.lock();
        let objects = state
            .objects
            .values()
            .filter(|o| filter.matches(o))
            .cloned()
            .collect();
        Ok(Listing {
            objects,
            revision: state.revision,
        })
    }

    async fn delete(&self, key: Key, expect: Option<Expect>) -> Result<Written, Error> {
        self.change(|staging| {
            let existing = staging.current(&key);
            let plan = core::plan_delete(existing.as_ref(), &key, expect, &staging.stamp())?;
            Ok(staging.perform(key, plan))
        })
    }

    async fn update_status(
        &self,
        key: Key,
        status: Any,
        expect: Option<Expect>,
    ) -> Result<Written, Error> {
        self.change(|staging| {
            let existing = staging.current(&key);
            let plan = core::plan_update_status(
                staging.registry,
                existing.as_ref(),
                &key,
                &status,
                expect,
                &staging.stamp(),
            )?;
            Ok(staging.perform(key, plan))
        })
    }

    async fn watch(
        &self,
        filter: Filter,
        from: Option<Revision>,
        cancel: CancellationToken,
    ) -> Result<WatchStream, Error> {
        core::check_resume(from, self.log.lock().compacted)?;
        Ok(hub::watch(
            self.log.clone(),
            self.hub.clone(),
            self.watch,
            filter,
            from,
            cancel,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<Compaction, Error> {
        let mut state = self.log.lock();
        core::check_compaction(revision, state.revision)?;
        state.compacted = state.compacted.max(revision);
        let compacted = state.compacted;
        while state
            .events
            .front()
            .is_some_and(|e| e.revision <= compacted)
        {
            state.events.pop_front();
        }
        Ok(Compaction {
            compacted,
            revision: state.revision,
        })
    }

    async fn revision(&self) -> Result<Compaction, Error> {
        let state = self.log.lock();
        Ok(Compaction {
            compacted: state.compacted,
            revision: state.revision,
        })
    }
}

impl History for Log {
    async fn read(&self, filter: &Filter, after: Revision, limit: usize) -> Result<Page, Error> {
        let state = self.lock();
        if after < state.compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted: state.compacted,
            });
        }
        let start = state.events.partition_point(|e| e.revision <= after);
        let events: Vec<Arc<Event>> = state
            .events
            .range(start..)
            .filter(|e| e.matches_key(filter))
            .take(limit)
            .cloned()
            .collect();
        let complete_to = if events.len() == limit {
            events.last().map_or(after, |e| e.revision)
        } else {
            state.revision
        };
        Ok(Page {
            events,
            complete_to,
        })
    }
}
