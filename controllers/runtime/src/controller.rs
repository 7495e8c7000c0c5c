//! The [`Controller`] trait: what a user writes. The runtime ([`crate::run`]) calls it; nothing
//! here runs anything.

use std::fmt;
use std::future::Future;

use rubeapi::rube::{Object, Selector};

use crate::Key;

/// A control loop for the objects one [`Selector`] chooses.
///
/// For each key that needs attention the runtime runs, until a fixpoint:
///
/// ```text
/// loop {
///     desired  = the cached object (None when it was deleted or never existed)
///     observed = observe(key, desired).await?
///     effects  = reconcile(desired, observed)      // pure
///     if effects.is_empty() { done }
///     execute(key, effects).await?
/// }
/// ```
///
/// and gives up with [`crate::Error::NoFixpoint`] after `Options::max_steps` rounds. An error
/// from `observe` or `execute` retries the key with per-key exponential backoff.
///
/// The controller is never told why it runs (a change, a resync, a retry, a restart), so
/// `reconcile` must decide from `desired` and `observed` alone, and `execute` must be idempotent
/// enough that doing effects again after a crash is harmless.
pub trait Controller: Send + Sync + 'static {
    /// What `observe` reads from the world for one key: files, processes, the status the
    /// controller last wrote.
    type Observed: Send;
    /// One change to the world, as data.
    type Effect: fmt::Debug + Send;
    type Error: std::error::Error + Send + Sync + 'static;

    /// The controller's name in metrics and logs.
    fn name(&self) -> &str;

    /// The objects this controller handles. The runtime lists and watches exactly these.
    fn selector(&self) -> Selector;

    /// Reads the part of the world that belongs to `key`.
    ///
    /// `desired` is the cached object, which may lag behind the apiserver and behind this
    /// controller's own writes: what the controller already did (a file it wrote, a status it
    /// set) must come from the world, not from `desired`.
    ///
    /// # Errors
    /// Any; the key is retried with backoff.
    fn observe(
        &self,
        key: &Key,
        desired: Option<&Object>,
    ) -> impl Future<Output = Result<Self::Observed, Self::Error>> + Send;

    /// What to change so that the world matches `desired`. Pure and synchronous: no I/O, no
    /// clock, no randomness. `None` means the object does not exist (any more): clean up.
    ///
    /// Must reach a fixpoint: after the effects are applied, reconciling again returns none.
    fn reconcile(&self, desired: Option<&Object>, observed: &Self::Observed) -> Vec<Self::Effect>;

    /// Performs `effects` in order; the only place where the controller changes anything.
    /// Writing status goes through `rubeapi::Client::update_status`.
    ///
    /// # Errors
    /// Any; effects after the failing one may not have been performed. The key is retried with
    /// backoff, and the next round observes what did happen.
    fn execute(
        &self,
        key: &Key,
        effects: Vec<Self::Effect>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Keys of what exists in the world (files, processes, units) whether or not the apiserver
    /// still has their objects. The runtime reconciles them at start and at every resync along
    /// with the cached keys, so that what was made for an object deleted while the controller
    /// was not running gets cleaned up. The default finds nothing.
    ///
    /// # Errors
    /// Any; the cached keys are still reconciled.
    fn inventory(&self) -> impl Future<Output = Result<Vec<Key>, Self::Error>> + Send {
        async { Ok(Vec::new()) }
    }
}
