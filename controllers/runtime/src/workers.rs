//! A fixed number of workers that take keys off a [`WorkQueue`] and run a reconcile for each:
//! that number bounds the concurrency across keys (the queue already rules out two runs of one
//! key). [`Workers::shutdown`] closes the queue, lets running reconciles finish and gives up
//! after a deadline.
//!
//! Workers know nothing about controllers or the apiserver: they run a closure per key and
//! report its outcome to the queue.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;

use crate::{Error, Key, WorkQueue};

/// Running workers.
#[derive(Debug)]
pub struct Workers {
    queue: WorkQueue,
    tasks: JoinSet<()>,
}

/// Starts `count` workers that run `work` for each key `queue` hands out. An error or a panic
/// retries the key with its backoff.
pub fn spawn<F, Fut>(count: usize, queue: WorkQueue, work: F) -> Workers
where
    F: Fn(Key) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let work = Arc::new(work);
    let mut tasks = JoinSet::new();
    for _ in 0..count.max(1) {
        let queue = queue.clone();
        let work = work.clone();
        tasks.spawn(async move {
            while let Some(job) = queue.next().await {
                let key = job.key().clone();
                let outcome = AssertUnwindSafe(work(key.clone())).catch_unwind().await;
                match outcome {
                    Ok(Ok(())) => job.succeeded(),
                    Ok(Err(error)) => {
                        let retry_in = job.failed();
                        tracing::warn!(%key, %error, ?retry_in, "reconcile failed");
                    }
                    Err(_) => {
                        let retry_in = job.failed();
                        tracing::error!(%key, ?retry_in, "reconcile panicked");
                    }
                }
            }
        });
    }
    Workers { queue, tasks }
}

impl Workers {
    /// Closes the queue and waits for running reconciles to finish, at most `deadline`; then
    /// aborts them.
    ///
    /// # Errors
    /// [`Error::ShutdownDeadline`] when reconciles were still running at the deadline.
    pub async fn shutdown(mut self, deadline: Duration) -> Result<(), Error> {
        self.queue.close();
        let drained = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return Ok(());
        }
        let running = self.queue.running();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        Err(Error::ShutdownDeadline { deadline, running })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::queue::QueueGauges;
    use crate::{Backoff, Trigger};

    fn key(name: &str) -> Key {
        Key::typed::<rubeapi::runink::Slice>("ns", name)
    }

    fn queue() -> WorkQueue {
        WorkQueue::new(Backoff::default(), QueueGauges::default())
    }

    /// How many runs are going on now, in all and per key, and the most seen.
    #[derive(Default)]
    struct Overlap {
        now: Mutex<(usize, HashMap<Key, usize>)>,
        most: Mutex<(usize, usize)>,
    }

    impl Overlap {
        fn enter(&self, key: &Key) {
            let mut now = self.now.lock().unwrap();
            now.0 += 1;
            *now.1.entry(key.clone()).or_default() += 1;
            let mut most = self.most.lock().unwrap();
            most.0 = most.0.max(now.0);
            most.1 = most.1.max(now.1[key]);
        }

        fn leave(&self, key: &Key) {
            let mut now = self.now.lock().unwrap();
            now.0 -= 1;
            *now.1.get_mut(key).unwrap() -= 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_count_keys_run_at_once_and_never_one_key_twice() {
        let queue = queue();
        let overlap = Arc::new(Overlap::default());
        let (done, mut finished) = mpsc::unbounded_channel();
        let (started, mut running) = mpsc::unbounded_channel();
        let workers = spawn(3, queue.clone(), {
            let overlap = overlap.clone();
            move |key: Key| {
                let overlap = overlap.clone();
                let done = done.clone();
                let started = started.clone();
                async move {
                    overlap.enter(&key);
                    started.send(key.clone()).unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    overlap.leave(&key);
                    done.send(key).unwrap();
                    Ok(())
                }
            }
        });
        for i in 0..10 {
            queue.trigger(key(&format!("k{i}")), Trigger::SpecChanged);
        }
        while running.recv().await.unwrap() != key("k0") {}
        // k0 is running now; these make exactly one more run of it.
        for _ in 0..5 {
            queue.trigger(key("k0"), Trigger::ObjectChanged);
        }
        let mut runs: HashMap<Key, usize> = HashMap::new();
        for _ in 0..11 {
            *runs.entry(finished.recv().await.unwrap()).or_default() += 1;
        }
        workers.shutdown(Duration::from_secs(1)).await.unwrap();
        assert_eq!(*overlap.most.lock().unwrap(), (3, 1));
        assert_eq!(runs[&key("k0")], 2);
        assert!(finished.try_recv().is_err(), "no run beyond the eleven");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_running_reconciles_finish() {
        let queue = queue();
        let finished = Arc::new(AtomicBool::new(false));
        let (started, mut running) = mpsc::unbounded_channel();
        let workers = spawn(2, queue.clone(), {
            let finished = finished.clone();
            move |_key| {
                let finished = finished.clone();
                let started = started.clone();
                async move {
                    started.send(()).unwrap();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok(())
                }
            }
        });
        queue.trigger(key("a"), Trigger::SpecChanged);
        running.recv().await.unwrap();
        queue.trigger(key("b"), Trigger::SpecChanged);
        let begun = Instant::now();
        // b may or may not have started; either way shutdown waits for what runs.
        workers.shutdown(Duration::from_secs(5)).await.unwrap();
        assert!(finished.load(Ordering::SeqCst));
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
        assert_eq!(queue.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_deadline() {
        let queue = queue();
        let (started, mut running) = mpsc::unbounded_channel();
        let workers = spawn(1, queue.clone(), move |_key| {
            let started = started.clone();
            async move {
                started.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        });
        queue.trigger(key("a"), Trigger::SpecChanged);
        running.recv().await.unwrap();
        let begun = Instant::now();
        let error = workers.shutdown(Duration::from_secs(1)).await.unwrap_err();
        assert!(
            matches!(error, Error::ShutdownDeadline { running: 1, .. }),
            "{error:?}"
        );
        assert_eq!(begun.elapsed(), Duration::from_secs(1));
        assert_eq!(queue.running(), 0, "the aborted job was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_backs_off_and_the_worker_survives() {
        let queue = queue();
        let (done, mut finished) = mpsc::unbounded_channel();
        let workers = spawn(1, queue.clone(), move |key: Key| {
            let done = done.clone();
            async move {
                if key.name == "bad" {
                    panic!("reconcile bug");
                }
                done.send(key).unwrap();
                Ok(())
            }
        });
        queue.trigger(key("bad"), Trigger::SpecChanged);
        queue.trigger(key("good"), Trigger::SpecChanged);
        assert_eq!(finished.recv().await.unwrap(), key("good"));
        assert_eq!(queue.failures(&key("bad")), 1);
        assert!(queue.retry_at(&key("bad")).is_some());
        workers.shutdown(Duration::from_secs(1)).await.unwrap();
    }
}
