//! Rube's controller framework: a controller is a pure, synchronous
//! `reconcile(desired, observed) -> effects` plus an executor that performs the effects; this
//! crate runs it against the apiserver.
//!
//! # Layout
//! - [`controller`]: the [`Controller`] trait a user implements: a selector, `observe` (reads the
//!   world), `reconcile` (pure) and `execute` (the only I/O that changes things).
//! - [`inventory`]: inventories read from a directory per object.
//! - [`key`]: [`Key`], which names one object (type, namespace, name).
//! - [`watcher`]: the reflector's state machine (`Listing`, `Watching`, `Backoff`) as a pure
//!   `step`. No I/O.
//! - [`cache`]: the objects the reflector has seen: one [`CacheWriter`], many cheap [`Cache`]
//!   read handles; applying a change says which keys changed and how.
//! - [`reflector`]: drives the state machine with a [`rubeapi::Client`] (list, watch, relist on
//!   `Compacted`, resume from the last revision after a disconnect, with backoff).
//! - [`mirror`]: the [`Mirror`] contract: a durable copy of a reflector's cache, so a restarted
//!   controller reconciles before the apiserver answers and resumes its watch.
//! - [`queue`]: the [`WorkQueue`] keyed by object: coalescing, no two runs of one key at once,
//!   per-key exponential backoff, graceful close.
//! - [`backoff`]: the [`Backoff`] policy (initial delay doubling up to a cap), pure.
//! - [`workers`]: a fixed number of workers draining the queue, and their shutdown deadline.
//! - [`metrics`]: Prometheus metrics labelled by controller name.
//! - [`watches`]: [`Watch`], objects of another kind the controller reads from a cache and
//!   whose changes wake its keys (kube-rs `watches` / `owns`).
//! - [`runtime`]: [`run`] and the [`Runtime`] builder, which tie the pieces together until a
//!   shutdown future resolves.
//!
//! This crate never talks to storage directly (only through [`rubeapi::Client`]), never reads the
//! clock inside `reconcile`, and never tells a controller why it runs.

pub mod backoff;
pub mod cache;
pub mod controller;
pub mod inventory;
pub mod key;
pub mod metrics;
pub mod mirror;
pub mod queue;
pub mod reflector;
pub mod runtime;
pub mod watcher;
pub mod watches;
pub mod workers;

mod error;

pub use backoff::Backoff;
pub use cache::{Cache, CacheWriter, Changed};
pub use controller::Controller;
pub use error::{BoxError, Error};
pub use key::Key;
pub use metrics::Metrics;
pub use mirror::{MemoryMirror, Mirror};
pub use queue::{Trigger, WorkQueue};
pub use reflector::Reflector;
pub use runtime::{Options, Runtime, run, run_with_wakeups};
pub use watches::{Wake, Watch};
