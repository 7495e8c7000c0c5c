//! Pipelines: `runink.Pipeline` DAGs turned into slices across nodes.
//!
//! # Layout
//! - [`dag`]: the DAG core. Step states (rnr's PENDING, RUNNING, SUCCESS, FAILED, SKIPPED,
//!   ACTION_PENDING) from the spec, the slices and the recorded status; retries, a user's
//!   retry, skip, pause, slices lost with their node; which steps may start; the phase. BATCH
//!   steps one by one (a parallel step shard by shard, like an indexed job), a STREAMING
//!   pipeline as one gang with one attempt number. Pure.
//! - [`schedule`]: the scheduler. Which node a slice goes to: ready, schedulable, labels
//!   matching the node selector, free capacity, the Herd quota, spreading with a
//!   deterministic tie-break; a STREAMING pipeline all on one node. Pure.
//! - [`plan`]: the two together for one pipeline: slices to create (named
//!   `<pipeline>.<step>-<attempt>`, shards `<pipeline>.<step>-<attempt>.<index>` with their
//!   index in the environment, pipes `<pipeline>_<step>-<attempt>` wired) and delete, and the
//!   status. Pure.
//! - [`controller`]: [`PipelineController`], the `controllers::Controller` for every
//!   `runink.Pipeline`, and the secondary watches of slices and nodes it reads from (a slice
//!   that finishes or a node that goes NOT_READY wakes the pipelines concerned at once):
//!   observe, the pure `reconcile` and its model `simulate`, execute (puts, deletes, status),
//!   the finalizer that holds a deleted pipeline until its slices are gone.
//! - [`run`]: the controller on `controllers::Runtime` with its watches.
//!
//! Nothing but `controller` does I/O; nothing reads a clock.

pub mod controller;
pub mod dag;
pub mod plan;
pub mod schedule;

mod error;

pub use controller::{Effect, Observed, PipelineController};
pub use error::Error;

/// Runs the pipeline controller with its watches until `shutdown` resolves (see
/// `controllers::run` for the options, guarantees and metrics).
///
/// # Errors
/// `controllers::Error::ShutdownDeadline` when reconciles were still running at the deadline.
pub async fn run(
    client: rubeapi::Client,
    options: controllers::Options,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), controllers::Error> {
    let (controller, watches) = PipelineController::new(client.clone());
    let mut runtime = controllers::Runtime::new(controller, client, options);
    for watch in watches {
        runtime = runtime.watch(watch);
    }
    runtime.run(shutdown).await
}

#[cfg(test)]
mod tests;
