//! [`Mirror`]: a durable copy of what a reflector has seen. With one, a controller that
//! restarts reconciles from the copy at once — before the apiserver answers, or while it is
//! down — and resumes its watch from the copy's revision instead of listing everything again.
//!
//! The copy is a cache, never a source of truth: it may lag behind the reflector (a crash
//! between applying a change and saving it), and then the resumed watch replays the changes
//! after the saved revision, which the cache applies again without harm. When the history after
//! the saved revision is compacted, the reflector relists and the copy is replaced.
//!
//! This module only defines the contract; the rubelet keeps its mirrors in its sqlite state
//! store, and [`MemoryMirror`] serves tests.

use std::sync::{Mutex, PoisonError};

use rubeapi::rube::Object;

use crate::BoxError;
use crate::watcher::Change;

/// Where a reflector keeps its durable copy.
pub trait Mirror: std::fmt::Debug + Send + Sync + 'static {
    /// The objects saved last and the revision they are consistent at; `None` when nothing was
    /// ever saved (the reflector then lists).
    ///
    /// # Errors
    /// Any; the reflector then lists as if nothing was saved.
    fn load(&self) -> Result<Option<(Vec<Object>, u64)>, BoxError>;

    /// Saves `change`, which the cache has just applied, together with the revision it moves
    /// the cache to: both or neither.
    ///
    /// # Errors
    /// Any; the reflector logs it and goes on (the copy lags, which a later save or relist
    /// repairs).
    fn save(&self, change: &Change) -> Result<(), BoxError>;
}

/// A mirror in memory: survives a reflector, not a process. For tests.
#[derive(Debug, Default)]
pub struct MemoryMirror {
    saved: Mutex<Option<(Vec<Object>, u64)>>,
}

impl Mirror for MemoryMirror {
    fn load(&self) -> Result<Option<(Vec<Object>, u64)>, BoxError> {
        Ok(self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save(&self, change: &Change) -> Result<(), BoxError> {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let (objects, revision) = saved.get_or_insert_with(|| (Vec::new(), 0));
        let key = |o: &Object| crate::Key::of(o);
        match change {
            Change::Replace {
                objects: listed,
                revision: at,
            } => {
                *objects = listed.clone();
                *revision = *at;
            }
            Change::Put(object) => {
                let k = key(object);
                objects.retain(|o| key(o) != k);
                objects.push(object.clone());
                *revision = (*revision).max(revision_of(object));
            }
            Change::Delete(object) => {
                let k = key(object);
                objects.retain(|o| key(o) != k);
                *revision = (*revision).max(revision_of(object));
            }
            Change::Bookmark(at) => *revision = (*revision).max(*at),
        }
        Ok(())
    }
}

/// The revision a change moves the cache to, at least.
pub fn revision_of(object: &Object) -> u64 {
    object.metadata.as_ref().map_or(0, |m| m.revision)
}
