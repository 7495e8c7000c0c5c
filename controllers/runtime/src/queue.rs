//! The [`WorkQueue`]: which keys need a reconcile, and when.
//!
//! - A key is in at most one of: ready (waiting for a worker), backing off (waiting for a
//!   time), running. A trigger of a ready key is coalesced into the pending run.
//! - A key is never handed out twice at once. A key triggered while it runs is run once more
//!   after it finishes, however many triggers came.
//! - A failure retries the key after [`Backoff::delay`] of its failures in a row (per key, so one
//!   broken object does not slow the others); a success resets the count.
//! - While a key backs off, only a new spec (a create, a delete, a new generation) brings the
//!   retry forward. Status and metadata changes, often the controller's own writes, and resyncs
//!   wait for the retry: otherwise unrelated churn makes a failing key retry early and ratchets
//!   its backoff to the cap without ever having waited (kubernetes#132805).
//! - [`WorkQueue::close`] stops handing out work; running jobs may still finish.
//!
//! The queue runs nothing and knows nothing about controllers; [`crate::workers`] drains it.
//! Time is tokio's, so tests run it on a paused clock.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Backoff, Key};

/// Why a key needs a reconcile. The queue uses it to decide when; the controller never sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// A periodic check of every key, or the controller's inventory at start.
    Resync,
    /// The object changed without a new spec: status, labels, annotations.
    ObjectChanged,
    /// The object was created, deleted, re-created or got a new generation.
    SpecChanged,
}

/// A cheap-to-clone handle on one queue.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<QueueState>,
    changed: Notify,
    backoff: Backoff,
    gauges: QueueGauges,
}

/// Gauges the queue keeps up to date, both under its lock.
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    /// Keys ready or backing off.
    pub depth: Gauge,
    /// Keys handed out and not finished.
    pub running: Gauge,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<Key>,
    /// The keys in `ready`, to coalesce triggers.
    queued: HashSet<Key>,
    /// Keys backing off, by due time.
    due: BTreeSet<(Instant, Key)>,
    backing_off: HashMap<Key, Instant>,
    running: HashSet<Key>,
    /// Keys triggered while running: the strongest trigger that came.
    rerun: HashMap<Key, Trigger>,
    /// Failures in a row, per key.
    failures: HashMap<Key, u32>,
    closed: bool,
}

impl QueueState {
    fn push_ready(&mut self, key: Key) {
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn back_off(&mut self, key: Key, until: Instant) {
        self.due.insert((until, key.clone()));
        self.backing_off.insert(key, until);
    }

    fn cancel_backoff(&mut self, key: &Key) -> bool {
        match self.backing_off.remove(key) {
            Some(until) => {
                self.due.remove(&(until, key.clone()));
                true
            }
            None => false,
        }
    }

    /// Moves keys whose backoff has passed to the back of the ready queue.
    fn promote_due(&mut self, now: Instant) {
        while let Some((until, _)) = self.due.first() {
            if *until > now {
                break;
            }
            let Some((_, key)) = self.due.pop_first() else {
                break;
            };
            self.backing_off.remove(&key);
            self.push_ready(key);
        }
    }

    fn depth(&self) -> usize {
        self.ready.len() + self.due.len()
    }
}

/// One key handed to a worker. Finish it with [`Job::succeeded`] or [`Job::failed`]; a job
/// dropped unfinished (a panic, an aborted task) counts as a failure.
#[derive(Debug)]
pub struct Job {
    key: Key,
    shared: Arc<Shared>,
    finished: bool,
}

impl Job {
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Resets the key's backoff; runs it again if it was triggered while running.
    pub fn succeeded(mut self) {
        self.finished = true;
        self.shared.finish(&self.key, true);
    }

    /// Retries the key after its backoff; returns that delay.
    pub fn failed(mut self) -> Duration {
        self.finished = true;
        self.shared.finish(&self.key, false)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.finish(&self.key, false);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves the state consistent (every method restores
        // its invariants before anything can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &QueueState) {
        self.gauges.depth.set(state.depth() as i64);
        self.gauges.running.set(state.running.len() as i64);
        self.changed.notify_waiters();
    }

    fn finish(&self, key: &Key, ok: bool) -> Duration {
        let mut state = self.lock();
        state.running.remove(key);
        let rerun = state.rerun.remove(key);
        let delay = if ok {
            state.failures.remove(key);
            Duration::ZERO
        } else {
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            self.backoff.delay(*failures)
        };
        if !state.closed {
            match (ok, rerun) {
                (true, Some(_)) | (false, Some(Trigger::SpecChanged)) => {
                    state.push_ready(key.clone());
                }
                (true, None) => {}
                // The retry reads the newest object anyway, so other triggers wait for it.
                (false, _) => state.back_off(key.clone(), Instant::now() + delay),
            }
        }
        self.publish(&state);
        delay
    }
}

impl WorkQueue {
    /// A queue that retries failed keys after `backoff` and keeps `gauges` up to date.
    pub fn new(backoff: Backoff, gauges: QueueGauges) -> WorkQueue {
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(QueueState::default()),
                changed: Notify::new(),
                backoff,
                gauges,
            }),
        }
    }

    /// Asks for a reconcile of `key`. Ignored after [`WorkQueue::close`].
    pub fn trigger(&self, key: Key, trigger: Trigger) {
        let mut state = self.shared.lock();
        if state.closed || state.queued.contains(&key) {
            return;
        }
        if state.running.contains(&key) {
            if trigger != Trigger::Resync {
                let rerun = state.rerun.entry(key).or_insert(trigger);
                *rerun = (*rerun).max(trigger);
            }
            return;
        }
        if state.backing_off.contains_key(&key) {
            if trigger == Trigger::SpecChanged {
                state.cancel_backoff(&key);
                state.push_ready(key);
                self.shared.publish(&state);
            }
            return;
        }
        state.push_ready(key);
        self.shared.publish(&state);
    }

    /// The next key to reconcile: waits until one is ready and not running. `None` once the
    /// queue is closed, even if keys are still waiting.
    pub async fn next(&self) -> Option<Job> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            // Registers for `notify_waiters` before looking, so no change is missed between
            // looking and waiting.
            changed.as_mut().enable();
            let wake_at = {
                let mut state = self.shared.lock();
                if state.closed {
                    return None;
                }
                state.promote_due(Instant::now());
                if let Some(key) = state.ready.pop_front() {
                    state.queued.remove(&key);
                    state.running.insert(key.clone());
                    self.shared.publish(&state);
                    return Some(Job {
                        key,
                        shared: self.shared.clone(),
                        finished: false,
                    });
                }
                state.due.first().map(|(until, _)| *until)
            };
            match wake_at {
                Some(until) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Stops handing out work and drops every waiting key. Running jobs may still finish.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.ready.clear();
        state.queued.clear();
        state.due.clear();
        state.backing_off.clear();
        self.shared.publish(&state);
    }

    /// Keys ready or backing off.
    pub fn depth(&self) -> usize {
        self.shared.lock().depth()
    }

    /// Keys handed out and not finished.
    pub fn running(&self) -> usize {
        self.shared.lock().running.len()
    }

    /// `key`'s failures in a row.
    pub fn failures(&self, key: &Key) -> u32 {
        self.shared.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// When `key`'s backoff ends, if it is backing off.
    pub fn retry_at(&self, key: &Key) -> Option<Instant> {
        self.shared.lock().backing_off.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::typed::<rubeapi::runink::Slice>("ns", name)
    }

    fn queue() -> WorkQueue {
        WorkQueue::new(Backoff::default(), QueueGauges::default())
    }

    /// The next job, or `None` if nothing is handed out within `within` (paused clock).
    async fn next_within(queue: &WorkQueue, within: Duration) -> Option<Job> {
        tokio::time::timeout(within, queue.next()).await.ok()?
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_triggers_coalesces_into_one_run() {
        let queue = queue();
        for _ in 0..5 {
            queue.trigger(key("a"), Trigger::ObjectChanged);
            queue.trigger(key("b"), Trigger::SpecChanged);
        }
        queue.trigger(key("a"), Trigger::Resync);
        assert_eq!(queue.depth(), 2);
        let first = queue.next().await.unwrap();
        let second = queue.next().await.unwrap();
        assert_eq!(
            (first.key(), second.key()),
            (&key("a"), &key("b")),
            "first triggered, first served"
        );
        first.succeeded();
        second.succeeded();
        assert!(next_within(&queue, Duration::from_secs(60)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_again_and_reruns_once_after() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        let job = queue.next().await.unwrap();
        for _ in 0..3 {
            queue.trigger(key("a"), Trigger::ObjectChanged);
        }
        assert_eq!(queue.depth(), 0, "a running key is not queued");
        assert!(
            next_within(&queue, Duration::from_secs(60)).await.is_none(),
            "a running key must not be handed out twice"
        );
        job.succeeded();
        let again = queue.next().await.unwrap();
        assert_eq!(again.key(), &key("a"));
        again.succeeded();
        assert!(
            next_within(&queue, Duration::from_secs(60)).await.is_none(),
            "three triggers while running make one rerun"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_while_running_does_not_rerun() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::ObjectChanged);
        let job = queue.next().await.unwrap();
        queue.trigger(key("a"), Trigger::Resync);
        job.succeeded();
        assert!(next_within(&queue, Duration::from_secs(60)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_key_doubling_to_the_cap_and_success_resets() {
        let queue = WorkQueue::new(
            Backoff::new(Duration::from_millis(100), Duration::from_millis(1000)),
            QueueGauges::default(),
        );
        queue.trigger(key("a"), Trigger::SpecChanged);
        let mut job = queue.next().await.unwrap();
        let expected = [100, 200, 400, 800, 1000, 1000];
        for (failures, ms) in expected.into_iter().enumerate() {
            let delay = Duration::from_millis(ms);
            let failed_at = Instant::now();
            assert_eq!(job.failed(), delay);
            assert_eq!(queue.failures(&key("a")), failures as u32 + 1);
            assert_eq!(queue.retry_at(&key("a")), Some(failed_at + delay));
            // Another key is not held back by a's failures.
            queue.trigger(key("b"), Trigger::ObjectChanged);
            let other = next_within(&queue, MS).await.expect("b runs at once");
            assert_eq!(other.key(), &key("b"));
            other.succeeded();

            assert!(
                next_within(&queue, delay - MS).await.is_none(),
                "retried before its backoff of {delay:?}"
            );
            job = queue.next().await.unwrap();
            assert_eq!(job.key(), &key("a"));
            assert_eq!(failed_at.elapsed(), delay);
        }
        job.succeeded();
        assert_eq!(queue.failures(&key("a")), 0);

        queue.trigger(key("a"), Trigger::ObjectChanged);
        let job = queue.next().await.unwrap();
        assert_eq!(job.failed(), Duration::from_millis(100), "success resets");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_ignores_status_changes_and_resyncs_regression_kubernetes_132805() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        let job = queue.next().await.unwrap();
        // The controller's own status write arrives while it runs, then it fails.
        queue.trigger(key("a"), Trigger::ObjectChanged);
        let failed_at = Instant::now();
        let delay = job.failed();
        for _ in 0..10 {
            queue.trigger(key("a"), Trigger::ObjectChanged);
            queue.trigger(key("a"), Trigger::Resync);
        }
        assert_eq!(queue.depth(), 1);
        assert!(next_within(&queue, delay - MS).await.is_none());
        let job = queue.next().await.unwrap();
        assert_eq!(failed_at.elapsed(), delay);
        assert_eq!(
            job.failed(),
            delay * 2,
            "the count went up by one, not eleven"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_spec_cuts_a_backoff_short_and_keeps_the_count() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        let job = queue.next().await.unwrap();
        job.failed();
        job_fails_again(&queue).await;
        assert_eq!(queue.failures(&key("a")), 2);

        queue.trigger(key("a"), Trigger::SpecChanged);
        let job = next_within(&queue, MS)
            .await
            .expect("a new spec runs at once");
        assert_eq!(job.failed(), Duration::from_millis(400));
    }

    async fn job_fails_again(queue: &WorkQueue) {
        queue.next().await.unwrap().failed();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_spec_while_a_failing_run_runs_retries_at_once() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::ObjectChanged);
        let job = queue.next().await.unwrap();
        queue.trigger(key("a"), Trigger::SpecChanged);
        job.failed();
        assert!(next_within(&queue, MS).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_job_counts_as_a_failure() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        drop(queue.next().await.unwrap());
        assert_eq!(queue.running(), 0);
        assert_eq!(queue.failures(&key("a")), 1);
        assert!(queue.retry_at(&key("a")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn close_stops_handing_out_work_but_running_jobs_finish() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        let running = queue.next().await.unwrap();
        let idle = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.map(|job| job.key().clone()) }
        });
        tokio::task::yield_now().await;
        queue.trigger(key("a"), Trigger::SpecChanged);
        queue.close();
        assert_eq!(idle.await.unwrap(), None, "an idle worker is let go");

        queue.trigger(key("b"), Trigger::SpecChanged);
        assert_eq!(queue.depth(), 0, "triggers after close are ignored");
        assert!(queue.next().await.is_none());
        assert_eq!(queue.running(), 1);
        running.succeeded();
        assert_eq!(queue.running(), 0);
        assert_eq!(queue.depth(), 0, "a rerun after close is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn close_drops_waiting_and_backing_off_keys() {
        let queue = queue();
        queue.trigger(key("a"), Trigger::SpecChanged);
        queue.next().await.unwrap().failed();
        queue.trigger(key("b"), Trigger::SpecChanged);
        assert_eq!(queue.depth(), 2);
        queue.close();
        assert_eq!(queue.depth(), 0);
        assert!(queue.next().await.is_none());
    }
}
