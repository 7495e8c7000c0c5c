//! [`run`] and its builder [`Runtime`]: one controller against one apiserver, until a shutdown
//! future resolves. It wires a [`Reflector`] for the controller's selector, and one for each
//! secondary [`Watch`], into a [`WorkQueue`], starts [`workers`] that bring each key to its
//! fixpoint ([`converge`]), resyncs periodically, and shuts down gracefully.
//!
//! The runtime holds no decisions of its own about objects: those are the controller's
//! `reconcile`; when to run is the queue's; what to list and watch is the reflector's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use rubeapi::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::ControllerMetrics;
use crate::queue::QueueGauges;
use crate::{
    Backoff, Cache, Controller, Error, Key, Metrics, Mirror, Reflector, Trigger, Watch, WorkQueue,
    workers,
};

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconciles running at once, across keys (one key never runs twice at once).
    pub concurrency: usize,
    /// Rounds of execute-then-observe one reconcile may take before it fails with
    /// [`Error::NoFixpoint`].
    pub max_steps: usize,
    /// Per-key retry delays after failed reconciles.
    pub retry: Backoff,
    /// Delays between attempts to reach the apiserver (jittered).
    pub reconnect: Backoff,
    /// How often every key (cached and in the inventory) is reconciled even without a change,
    /// to repair drift in the world. `None`: never.
    pub resync: Option<Duration>,
    /// How long shutdown waits for running reconciles.
    pub shutdown_deadline: Duration,
    pub metrics: Metrics,
    /// A durable copy of the cache: with one, reconciling starts from it at once (before the
    /// apiserver answers) and the watch resumes from its revision.
    pub mirror: Option<Arc<dyn Mirror>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            concurrency: 4,
            max_steps: 8,
            retry: Backoff::default(),
            reconnect: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            resync: Some(Duration::from_secs(300)),
            shutdown_deadline: Duration::from_secs(30),
            metrics: Metrics::default(),
            mirror: None,
        }
    }
}

/// Runs `controller` until `shutdown` resolves.
///
/// Nothing is reconciled before the first list succeeds (until then every object would look
/// deleted), unless `options.mirror` holds a copy from an earlier run: then reconciling starts
/// from the copy at once. Then every listed key and every key of the controller's inventory is reconciled,
/// and after that each key whose object changes, each key at every resync, and each failed key
/// after its backoff. On shutdown the reflector stops, no new reconcile starts, and running ones
/// get `options.shutdown_deadline` to finish.
///
/// This is [`Runtime::new`]`(..).run(shutdown)`; the builder adds secondary watches and
/// wakeups.
///
/// # Errors
/// [`Error::ShutdownDeadline`] when reconciles were still running at the deadline. Failures of
/// single reconciles are logged, counted and retried, never returned.
pub async fn run<C: Controller>(
    controller: C,
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    Runtime::new(controller, client, options)
        .run(shutdown)
        .await
}

/// [`run`], plus keys the controller asks to have reconciled for reasons the apiserver cannot
/// see: a process it started exited, a back-off it chose ended. Each key from `wakeups` is
/// queued like a resync (it does not cut a failure back-off short). The controller still
/// decides from `desired` and `observed` alone; a wakeup only says "look again".
///
/// # Errors
/// As [`run`].
pub async fn run_with_wakeups<C: Controller>(
    controller: C,
    client: Client,
    options: Options,
    wakeups: impl Stream<Item = Key> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    Runtime::new(controller, client, options)
        .wakeups(wakeups)
        .run(shutdown)
        .await
}

/// One controller, what it watches and what wakes it: the builder behind [`run`].
///
/// ```no_run
/// # async fn example<C: controllers::Controller>(controller: C, client: rubeapi::Client,
/// #     watch: controllers::Watch) -> Result<(), controllers::Error> {
/// controllers::Runtime::new(controller, client, controllers::Options::default())
///     .watch(watch)
///     .run(std::future::pending())
///     .await
/// # }
/// ```
pub struct Runtime<C> {
    controller: C,
    client: Client,
    options: Options,
    watches: Vec<Watch>,
    wakeups: BoxStream<'static, Key>,
}

impl<C: Controller> Runtime<C> {
    pub fn new(controller: C, client: Client, options: Options) -> Runtime<C> {
        Runtime {
            controller,
            client,
            options,
            watches: Vec::new(),
            wakeups: futures::stream::pending().boxed(),
        }
    }

    /// Also lists and watches `watch`'s objects into its cache, and reconciles the keys its
    /// mapper names when they change. The first reconcile waits for its first list too.
    pub fn watch(mut self, watch: Watch) -> Runtime<C> {
        self.watches.push(watch);
        self
    }

    /// Also reconciles every key `wakeups` yields, as [`run_with_wakeups`] says.
    pub fn wakeups(mut self, wakeups: impl Stream<Item = Key> + Send + 'static) -> Runtime<C> {
        self.wakeups = wakeups.boxed();
        self
    }

    /// Runs until `shutdown` resolves, as [`run`] says.
    ///
    /// # Errors
    /// As [`run`].
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Runtime {
            controller,
            client,
            options,
            watches,
            wakeups,
        } = self;
        let controller = Arc::new(controller);
        let name = controller.name().to_owned();
        let metrics = options.metrics.controller(&name);
        let gauges = QueueGauges {
            depth: metrics.queue_depth.clone(),
            running: metrics.in_flight.clone(),
        };
        let queue = WorkQueue::new(options.retry, gauges);
        let (mut reflector, cache) =
            Reflector::new(client.clone(), controller.selector(), options.reconnect);
        if let Some(mirror) = options.mirror.clone() {
            reflector = reflector.with_mirror(mirror);
        }
        let cancel = CancellationToken::new();
        // Stops the reflectors however `run` ends, even when its future is dropped.
        let _stop_reflectors = cancel.clone().drop_guard();
        let mut reflecting = vec![tokio::spawn({
            let queue = queue.clone();
            let reflector = reflector.with_metrics(metrics.clone());
            reflector.run(
                move |changed| queue.trigger(changed.key, changed.trigger),
                cancel.clone(),
            )
        })];
        let mut caches = vec![cache.clone()];
        for Watch {
            selector,
            writer,
            mut mapper,
        } in watches
        {
            caches.push(writer.cache());
            let reflector = Reflector::filling(client.clone(), selector, writer, options.reconnect);
            let queue = queue.clone();
            let own = cache.clone();
            reflecting.push(tokio::spawn(reflector.run(
                move |changed| {
                    Watch::wake(&mut mapper, &changed, &own, |key, trigger| {
                        queue.trigger(key, trigger);
                    });
                },
                cancel.clone(),
            )));
        }
        tokio::spawn({
            let queue = queue.clone();
            let cancel = cancel.clone();
            let mut wakeups = wakeups;
            async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        key = wakeups.next() => match key {
                            Some(key) => queue.trigger(key, Trigger::Resync),
                            None => return,
                        },
                    }
                }
            }
        });

        tokio::pin!(shutdown);
        let listed = tokio::select! {
            () = &mut shutdown => false,
            listed = all_ready(&caches) => listed,
        };
        if !listed {
            cancel.cancel();
            for task in reflecting {
                let _ = task.await;
            }
            return Ok(());
        }
        tracing::info!(controller = %name, objects = cache.len(), "controller started");

        let workers = workers::spawn(options.concurrency, queue.clone(), {
            let controller = controller.clone();
            let cache = cache.clone();
            let metrics = metrics.clone();
            let max_steps = options.max_steps;
            move |key: Key| {
                let controller = controller.clone();
                let cache = cache.clone();
                let metrics = metrics.clone();
                async move { reconcile_counted(&*controller, &cache, &key, max_steps, &metrics).await }
            }
        });

        // The list already triggered every cached key; what only the world knows comes next.
        let inventory = trigger_all(&*controller, &cache, &queue, false);
        let resyncs = async {
            inventory.await;
            let Some(every) = options.resync else {
                return std::future::pending().await;
            };
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                interval.tick().await;
                trigger_all(&*controller, &cache, &queue, true).await;
            }
        };
        tokio::select! {
            () = &mut shutdown => {}
            () = resyncs => {}
        }

        tracing::info!(controller = %name, "controller stopping");
        cancel.cancel();
        for task in reflecting {
            let _ = task.await;
        }
        workers.shutdown(options.shutdown_deadline).await
    }
}

/// True once every cache has listed; false if a reflector stopped first.
async fn all_ready(caches: &[Cache]) -> bool {
    for cache in caches {
        if !cache.ready().await {
            return false;
        }
    }
    true
}

/// Triggers every key of the inventory, and every cached key when `cached`.
async fn trigger_all<C: Controller>(
    controller: &C,
    cache: &Cache,
    queue: &WorkQueue,
    cached: bool,
) {
    if cached {
        for key in cache.keys() {
            queue.trigger(key, Trigger::Resync);
        }
    }
    match controller.inventory().await {
        Ok(keys) => {
            for key in keys {
                queue.trigger(key, Trigger::Resync);
            }
        }
        Err(source) => {
            let error = Error::Inventory {
                source: Box::new(source),
            };
            tracing::warn!(%error, "resync goes on with the cached keys");
        }
    }
}

async fn reconcile_counted<C: Controller>(
    controller: &C,
    cache: &Cache,
    key: &Key,
    max_steps: usize,
    metrics: &ControllerMetrics,
) -> Result<(), Error> {
    let started = Instant::now();
    let result = converge(controller, cache, key, max_steps, &metrics.effects).await;
    metrics.reconciles.inc();
    metrics.observe_duration(started.elapsed());
    match result {
        Ok(steps) => {
            tracing::debug!(%key, steps, "reconciled");
            Ok(())
        }
        Err(error) => {
            metrics.errors.inc();
            Err(error)
        }
    }
}

/// Brings one key to its fixpoint: observe, reconcile, execute, and again, until reconcile
/// returns no effects. Returns how many times effects were executed. `effects` counts them.
///
/// The desired object is read from `cache` afresh in every round, so a change that arrives
/// meanwhile is taken into account.
///
/// # Errors
/// [`Error::Observe`] and [`Error::Execute`] with the controller's error;
/// [`Error::NoFixpoint`] when effects remain after `max_steps` executions.
pub async fn converge<C: Controller>(
    controller: &C,
    cache: &Cache,
    key: &Key,
    max_steps: usize,
    effects: &Counter,
) -> Result<usize, Error> {
    let mut steps = 0;
    loop {
        let desired = cache.get(key);
        let observed = controller
            .observe(key, desired.as_deref())
            .await
            .map_err(|source| Error::Observe {
                key: key.clone(),
                source: Box::new(source),
            })?;
        let planned = controller.reconcile(desired.as_deref(), &observed);
        drop(observed);
        if planned.is_empty() {
            return Ok(steps);
        }
        if steps == max_steps {
            tracing::warn!(%key, effects = ?planned, "no fixpoint");
            return Err(Error::NoFixpoint {
                key: key.clone(),
                steps,
            });
        }
        tracing::debug!(%key, effects = ?planned, "executing");
        effects.inc_by(planned.len() as u64);
        controller
            .execute(key, planned)
            .await
            .map_err(|source| Error::Execute {
                key: key.clone(),
                source: Box::new(source),
            })?;
        steps += 1;
    }
}
