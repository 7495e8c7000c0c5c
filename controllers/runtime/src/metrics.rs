//! Prometheus metrics of controllers, labelled by controller name, so one [`Metrics`] serves
//! every controller in a process. Serving them over HTTP is the binary's job, not this crate's.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every controller metric. Clones share the same families.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    duration: HistogramFamily,
    effects: Family<ControllerLabels, Counter>,
    queue_depth: Family<ControllerLabels, Gauge>,
    in_flight: Family<ControllerLabels, Gauge>,
    lists: Family<ControllerLabels, Counter>,
    watches: Family<ControllerLabels, Counter>,
    revision: Family<ControllerLabels, Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: HistogramFamily::new_with_constructor(duration_histogram),
            effects: Family::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            lists: Family::default(),
            watches: Family::default(),
            revision: Family::default(),
        }
    }
}

/// The metrics of one controller, resolved once so that updates take no lock on the family.
#[derive(Debug, Clone, Default)]
pub struct ControllerMetrics {
    pub reconciles: Counter,
    pub errors: Counter,
    pub duration: Option<Histogram>,
    pub effects: Counter,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub lists: Counter,
    pub watches: Counter,
    pub revision: Gauge,
}

impl ControllerMetrics {
    pub fn observe_duration(&self, duration: Duration) {
        if let Some(histogram) = &self.duration {
            histogram.observe(duration.as_secs_f64());
        }
    }
}

/// One controller's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Reconciles run to completion or failure (each a whole observe–reconcile–execute loop).
    pub reconciles: u64,
    pub errors: u64,
    /// Effects executed.
    pub effects: u64,
    /// Keys ready or backing off.
    pub queue_depth: i64,
    /// Keys being reconciled now.
    pub in_flight: i64,
    /// Successful lists (the first one, then one per relist).
    pub lists: u64,
    /// Watch streams opened.
    pub watches: u64,
    /// The revision the controller's cache is consistent at.
    pub revision: i64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Registers every family in `registry` under `rube_controller_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rube_controller_reconciles",
            "reconciles run (observe, reconcile and execute until nothing is left to do)",
            self.reconciles.clone(),
        );
        registry.register(
            "rube_controller_reconcile_errors",
            "reconciles that failed and were retried with backoff",
            self.errors.clone(),
        );
        registry.register(
            "rube_controller_reconcile_duration_seconds",
            "time from taking a key off the queue to finishing it",
            self.duration.clone(),
        );
        registry.register(
            "rube_controller_effects",
            "effects executed",
            self.effects.clone(),
        );
        registry.register(
            "rube_controller_queue_depth",
            "keys waiting for a worker or backing off",
            self.queue_depth.clone(),
        );
        registry.register(
            "rube_controller_reconciles_in_flight",
            "reconciles running now",
            self.in_flight.clone(),
        );
        registry.register(
            "rube_controller_lists",
            "successful lists: the first one, then one per relist",
            self.lists.clone(),
        );
        registry.register(
            "rube_controller_watches",
            "watch streams opened",
            self.watches.clone(),
        );
        registry.register(
            "rube_controller_revision",
            "the revision the controller's cache is consistent at",
            self.revision.clone(),
        );
    }

    /// The metrics labelled `controller=<name>`.
    pub fn controller(&self, name: &str) -> ControllerMetrics {
        let labels = ControllerLabels {
            controller: name.to_owned(),
        };
        ControllerMetrics {
            reconciles: self.reconciles.get_or_create_owned(&labels),
            errors: self.errors.get_or_create_owned(&labels),
            duration: Some(self.duration.get_or_create_owned(&labels)),
            effects: self.effects.get_or_create_owned(&labels),
            queue_depth: self.queue_depth.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            lists: self.lists.get_or_create_owned(&labels),
            watches: self.watches.get_or_create_owned(&labels),
            revision: self.revision.get_or_create_owned(&labels),
        }
    }

    /// The figures of the controller called `name` now.
    pub fn snapshot(&self, name: &str) -> Snapshot {
        let metrics = self.controller(name);
        Snapshot {
            reconciles: metrics.reconciles.get(),
            errors: metrics.errors.get(),
            effects: metrics.effects.get(),
            queue_depth: metrics.queue_depth.get(),
            in_flight: metrics.in_flight.get(),
            lists: metrics.lists.get(),
            watches: metrics.watches.get(),
            revision: metrics.revision.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_labelled_by_controller_and_encoded() {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let files = metrics.controller("files");
        files.reconciles.inc();
        files.errors.inc();
        files.queue_depth.set(3);
        files.observe_duration(Duration::from_millis(5));
        metrics.controller("other").reconciles.inc_by(5);

        assert_eq!(metrics.snapshot("files").reconciles, 1);
        assert_eq!(metrics.snapshot("other").reconciles, 5);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"rube_controller_reconciles_total{controller="files"} 1"#,
            r#"rube_controller_reconciles_total{controller="other"} 5"#,
            r#"rube_controller_reconcile_errors_total{controller="files"} 1"#,
            r#"rube_controller_queue_depth{controller="files"} 3"#,
            r#"rube_controller_reconcile_duration_seconds_count{controller="files"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
