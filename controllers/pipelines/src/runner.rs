//! [`run`]: the pipeline controller with the watches it needs beyond its own kind.
//!
//! `controllers::run` wakes a key when its object changes; a pipeline must also wake when one
//! of its slices changes (a step finished) and when a node changes in a way that matters to
//! placement (NOT_READY, labels, allocatable, schedulable). This is the same runtime, built
//! from the framework's public parts (reflector, work queue, workers, `converge`), with two
//! more reflectors whose changes trigger pipeline keys. What never lives here: decisions
//! about pipelines (they are `reconcile`'s).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use controllers::queue::QueueGauges;
use controllers::{Cache, Controller, Key, Options, Reflector, Trigger, WorkQueue, workers};
use rubeapi::Client;
use rubeapi::rube::Selector;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controller::{LABEL_PIPELINE, NODE, PIPELINE, PipelineController, SLICE, node_view};
use crate::schedule::NodeView;

/// Runs `controller` until `shutdown` resolves, like `controllers::run` (same options,
/// guarantees and metrics), and also reconciles a pipeline when one of its slices changes
/// and every pipeline when a node's readiness, schedulability, labels or allocatable change.
///
/// # Errors
/// `controllers::Error::ShutdownDeadline` when reconciles were still running at the deadline.
pub async fn run(
    controller: PipelineController,
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), controllers::Error> {
    let controller = Arc::new(controller);
    let name = controller.name().to_owned();
    let metrics = options.metrics.controller(&name);
    let queue = WorkQueue::new(
        options.retry,
        QueueGauges {
            depth: metrics.queue_depth.clone(),
            running: metrics.in_flight.clone(),
        },
    );
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();

    let (mut reflector, pipelines) =
        Reflector::new(client.clone(), controller.selector(), options.reconnect);
    if let Some(mirror) = options.mirror.clone() {
        reflector = reflector.with_mirror(mirror);
    }
    let mut tasks = vec![tokio::spawn({
        let queue = queue.clone();
        reflector.with_metrics(metrics.clone()).run(
            move |key, trigger| queue.trigger(key, trigger),
            cancel.clone(),
        )
    })];

    // Slices: wake the pipeline named in the label, remembered for when the slice is gone.
    let (reflector, slices) = Reflector::new(
        client.clone(),
        Selector {
            r#type: SLICE.into(),
            labels: LABEL_PIPELINE.into(),
            ..Default::default()
        },
        options.reconnect,
    );
    tasks.push(tokio::spawn({
        let queue = queue.clone();
        let slices = slices.clone();
        let mut owners: HashMap<Key, Key> = HashMap::new();
        reflector.run(
            move |key, _| {
                let owner = slices.get(&key).and_then(|s| {
                    let pipeline = s.metadata.as_ref()?.labels.get(LABEL_PIPELINE)?;
                    Some(Key::new(PIPELINE, &key.namespace, pipeline))
                });
                let owner = match owner {
                    Some(owner) => {
                        owners.insert(key, owner.clone());
                        owner
                    }
                    None => match owners.remove(&key) {
                        Some(owner) => owner,
                        None => return,
                    },
                };
                queue.trigger(owner, Trigger::ObjectChanged);
            },
            cancel.clone(),
        )
    }));

    // Nodes: wake every pipeline when what placement reads of a node changes (heartbeats
    // alone do not).
    let (reflector, nodes) = Reflector::new(
        client,
        Selector {
            r#type: NODE.into(),
            ..Default::default()
        },
        options.reconnect,
    );
    let seen: Arc<Mutex<HashMap<Key, NodeView>>> = Arc::default();
    tasks.push(tokio::spawn({
        let queue = queue.clone();
        let nodes = nodes.clone();
        let pipelines = pipelines.clone();
        reflector.run(
            move |key, _| {
                let now = nodes.get(&key).map(|n| node_view(&n));
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                let before = match &now {
                    Some(view) => seen.insert(key, view.clone()),
                    None => seen.remove(&key),
                };
                if before != now {
                    for pipeline in pipelines.keys() {
                        queue.trigger(pipeline, Trigger::ObjectChanged);
                    }
                }
            },
            cancel.clone(),
        )
    }));

    tokio::pin!(shutdown);
    let caches = [&pipelines, &slices, &nodes];
    let listed = tokio::select! {
        () = &mut shutdown => false,
        listed = all_ready(&caches) => listed,
    };
    if !listed {
        cancel.cancel();
        for task in tasks {
            let _ = task.await;
        }
        return Ok(());
    }
    tracing::info!(controller = %name, pipelines = pipelines.len(), "controller started");

    let workers = workers::spawn(options.concurrency, queue.clone(), {
        let controller = controller.clone();
        let pipelines = pipelines.clone();
        let max_steps = options.max_steps;
        move |key: Key| {
            let controller = controller.clone();
            let pipelines = pipelines.clone();
            let metrics = metrics.clone();
            async move {
                let started = Instant::now();
                let result = controllers::runtime::converge(
                    &*controller,
                    &pipelines,
                    &key,
                    max_steps,
                    &metrics.effects,
                )
                .await;
                metrics.reconciles.inc();
                metrics.observe_duration(started.elapsed());
                if result.is_err() {
                    metrics.errors.inc();
                }
                result.map(|_| ())
            }
        }
    });

    let resyncs = async {
        trigger_inventory(&controller, &queue).await;
        let Some(every) = options.resync else {
            return std::future::pending().await;
        };
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            interval.tick().await;
            for key in pipelines.keys() {
                queue.trigger(key, Trigger::Resync);
            }
            trigger_inventory(&controller, &queue).await;
        }
    };
    tokio::select! {
        () = &mut shutdown => {}
        () = resyncs => {}
    }
    tracing::info!(controller = %name, "controller stopping");
    cancel.cancel();
    for task in tasks {
        let _ = task.await;
    }
    workers.shutdown(options.shutdown_deadline).await
}

/// True once every cache has listed; false if a reflector stopped first.
async fn all_ready(caches: &[&Cache]) -> bool {
    for cache in caches {
        if !cache.ready().await {
            return false;
        }
    }
    true
}

async fn trigger_inventory(controller: &PipelineController, queue: &WorkQueue) {
    match controller.inventory().await {
        Ok(keys) => {
            for key in keys {
                queue.trigger(key, Trigger::Resync);
            }
        }
        Err(error) => tracing::warn!(%error, "resync goes on with the cached pipelines"),
    }
}
