//! Prometheus metrics of the apiserver, served as text on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Compaction;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50µs to about 1.6s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    watches: Gauge,
    revision: Gauge,
    compacted: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let watches = Gauge::default();
        let revision = Gauge::default();
        let compacted = Gauge::default();
        registry.register(
            "rube_apiserver_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "rube_apiserver_request_duration_seconds",
            "gRPC request latency by method (for Watch: until the stream is set up)",
            latency.clone(),
        );
        registry.register(
            "rube_apiserver_watches",
            "open watch streams",
            watches.clone(),
        );
        registry.register(
            "rube_store_revision",
            "the store's current revision",
            revision.clone(),
        );
        registry.register(
            "rube_store_compacted_revision",
            "history up to this revision is compacted",
            compacted.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watches,
            revision,
            compacted,
        }
    }

    pub fn observe(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open watch until the guard is dropped.
    pub fn watch_opened(self: &Arc<Self>) -> WatchGuard {
        self.watches.inc();
        WatchGuard(self.clone())
    }

    /// The text exposition, with the store's revisions as of now.
    pub fn encode(&self, bounds: Option<Compaction>) -> String {
        if let Some(bounds) = bounds {
            self.revision.set(bounds.revision as i64);
            self.compacted.set(bounds.compacted as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a string cannot fail");
        out
    }
}

pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.dec();
    }
}
