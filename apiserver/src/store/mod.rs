//! Storage: the `Store` trait every backend implements, and the pieces backends share.
//!
//! - [`core`]: the pure rules of a change (preconditions, generation, finalizers). No I/O.
//! - [`hub`]: watch fan-out and the catch-up-then-live watcher, for backends that keep their own
//!   event log.
//! - [`sqlite`]: the embedded default backend.
//! - `etcd` (feature `etcd`): several apiservers over one etcd cluster.
//! - [`mem`]: the in-memory reference model that property tests hold every backend to.
//! - `conformance` (feature `testing`): the one suite every backend runs.

#[cfg(feature = "testing")]
pub mod conformance;
pub mod core;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod hub;
pub mod mem;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures::Stream;
use prost_types::Any;
use rubeapi::object::ObjectExt;
use rubeapi::rube::precondition::Condition;
use rubeapi::rube::{Object, Outcome, Precondition, WatchEvent, watch_event};
use rubeapi::selector::Filter;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A position in the store's history. One global counter, strictly increasing, starting at 1
/// with the first change; 0 means "before anything".
pub type Revision = u64;

/// Labels of an object.
pub type Labels = HashMap<String, String>;

/// Names one object; shared with every other crate.
pub use rubeapi::object::Key;

/// A compare-and-swap condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist.
    Absent,
    /// The object must exist at exactly this revision.
    Revision(Revision),
}

impl Expect {
    pub fn from_proto(precondition: Option<&Precondition>) -> Option<Expect> {
        match precondition?.condition? {
            Condition::Revision(revision) => Some(Expect::Revision(revision)),
            Condition::MustNotExist(true) => Some(Expect::Absent),
            Condition::MustNotExist(false) => None,
        }
    }
}

/// One put: an admitted object and its precondition.
#[derive(Debug, Clone)]
pub struct PutOp {
    pub object: Object,
    pub expect: Option<Expect>,
}

/// One operation of an atomic [`Store::transact`]. Short-lived and moved, not stored, so the
/// size difference between a put and the others does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Op {
    /// Create or update an admitted object ([`Store::apply`]'s rules).
    Put(PutOp),
    /// Delete an object or mark it for deletion ([`Store::delete`]'s rules).
    Delete { key: Key, expect: Option<Expect> },
    /// Replace an object's status ([`Store::update_status`]'s rules).
    Status {
        key: Key,
        status: Any,
        expect: Option<Expect>,
    },
    /// Write nothing, but fail the whole transaction unless `expect` holds for `key` when it
    /// commits (etcd's compare without a write).
    Check { key: Key, expect: Expect },
}

impl Op {
    /// The object this operation is about.
    pub fn key(&self) -> Key {
        match self {
            Op::Put(op) => Key::of(&op.object),
            Op::Delete { key, .. } | Op::Status { key, .. } | Op::Check { key, .. } => key.clone(),
        }
    }
}

/// What a change did, and the object as it is now (or was, when deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub object: Object,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One entry of the store's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    /// The object after a put, or as it was at deletion (with the deletion's revision).
    pub object: Object,
    /// The labels before a put that changed them; `None` when unchanged or newly created.
    pub prev_labels: Option<Labels>,
}

/// How a watcher sees an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Update,
    Delete,
}

impl Event {
    /// Whether and how a watcher with `filter` sees this event. A put that makes an object stop
    /// matching the label selector is seen as a delete, as in Kubernetes.
    pub fn seen_by(&self, filter: &Filter) -> Option<Seen> {
        let object = &self.object;
        if !self.matches_key(filter) {
            return None;
        }
        let labels = object.metadata.as_ref().map(|m| &m.labels);
        let matches_now = labels.is_none_or(|l| filter.labels.matches(l));
        match (self.kind, matches_now) {
            (EventKind::Put, true) => Some(Seen::Update),
            (EventKind::Delete, true) => Some(Seen::Delete),
            (EventKind::Put, false) => match &self.prev_labels {
                Some(prev) if filter.labels.matches(prev) => Some(Seen::Delete),
                _ => None,
            },
            (EventKind::Delete, false) => None,
        }
    }

    /// Whether the filter's type, namespace and name match (labels are not looked at).
    pub fn matches_key(&self, filter: &Filter) -> bool {
        let object = &self.object;
        filter.matches_key(object.type_name(), object.namespace(), object.name())
    }

    /// The event as a watcher with `filter` receives it, if at all.
    pub fn for_filter(&self, filter: &Filter) -> Option<WatchEvent> {
        let event = match self.seen_by(filter)? {
            Seen::Update => watch_event::Event::Update(self.object.clone()),
            Seen::Delete => watch_event::Event::Delete(self.object.clone()),
        };
        Some(WatchEvent { event: Some(event) })
    }
}

/// A list and the revision it is consistent at.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub objects: Vec<Object>,
    pub revision: Revision,
}

/// The store's history bounds after a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// History up to and including this revision is gone.
    pub compacted: Revision,
    pub revision: Revision,
}

/// A stream of watch events; it ends with an error item when the watch cannot go on.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Error>> + Send>>;

/// Storage of objects with revisions and watchable history.
///
/// Every change (a put that changes something, a delete, a status update) takes the next
/// revision; the object's `metadata.revision` is that revision. A put that changes nothing takes
/// no revision and returns `Outcome::Unchanged`.
pub trait Store: Send + Sync + 'static {
    /// Applies puts atomically: all of them, or none when one fails.
    ///
    /// Creation sets uid, `create_revision` and generation 1; an update keeps them, bumps the
    /// generation only when the spec changed, and never touches the status. An update that
    /// empties the finalizers of an object marked for deletion removes it.
    ///
    /// # Errors
    /// `Conflict` or `AlreadyExists` when a precondition fails, wrapped in `InBatch` when there
    /// are several puts; `Unavailable` when the store cannot write.
    fn apply(&self, ops: Vec<PutOp>) -> impl Future<Output = Result<Vec<Written>, Error>> + Send {
        self.transact(ops.into_iter().map(Op::Put).collect())
    }

    /// Performs `ops` atomically and in order, each seeing the ones before it: all of them, or
    /// none when one fails. Each op follows the rules of its single-op method; a `Check` writes
    /// nothing. Returns one `Written` per op (a `Check`'s is the object as it is, `Unchanged`,
    /// or an empty object when absent). On the etcd backend every change of one transaction
    /// shares one revision, as with [`Store::apply`].
    ///
    /// # Errors
    /// The first failing op's error (`NotFound`, `Conflict`, `AlreadyExists`, ...), wrapped in
    /// `InBatch` when there are several ops; `Unavailable` when the store cannot write.
    fn transact(&self, ops: Vec<Op>) -> impl Future<Output = Result<Vec<Written>, Error>> + Send;

    /// # Errors
    /// `NotFound`.
    fn get(&self, key: Key) -> impl Future<Output = Result<Object, Error>> + Send;

    /// Every object matching `filter`, sorted by type, namespace and name, with the revision the
    /// list is consistent at: watching from it misses nothing.
    fn list(&self, filter: Filter) -> impl Future<Output = Result<Listing, Error>> + Send;

    /// Deletes an object, or marks it for deletion while it has finalizers
    /// (`Outcome::DeletionPending`; the mark is an update event).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the precondition fails.
    fn delete(
        &self,
        key: Key,
        expect: Option<Expect>,
    ) -> impl Future<Output = Result<Written, Error>> + Send;

    /// Replaces the status. Never changes spec or generation; an equal status is `Unchanged`.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the precondition fails.
    fn update_status(
        &self,
        key: Key,
        status: Any,
        expect: Option<Expect>,
    ) -> impl Future<Output = Result<Written, Error>> + Send;

    /// Streams every matching change with a revision greater than `from` (or than the current
    /// revision, when `None`) exactly once and in order, then live changes, with periodic
    /// bookmarks while quiet. The stream ends when `cancel` fires or the receiver is dropped.
    ///
    /// # Errors
    /// `Compacted` (also as the stream's last item) when history after `from` is gone.
    fn watch(
        &self,
        filter: Filter,
        from: Option<Revision>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<WatchStream, Error>> + Send;

    /// Forgets history up to and including `revision`; watches from before it then fail with
    /// `Compacted`. Compacting to a revision at or below the current compaction is a no-op.
    ///
    /// # Errors
    /// `Invalid` when `revision` is in the future.
    fn compact(&self, revision: Revision)
    -> impl Future<Output = Result<Compaction, Error>> + Send;

    /// The current revision and compaction point.
    fn revision(&self) -> impl Future<Output = Result<Compaction, Error>> + Send;
}
