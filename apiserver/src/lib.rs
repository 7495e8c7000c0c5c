//! Rube's apiserver: admission, storage with revisions and watchable history, and the gRPC
//! service that exposes them.
//!
//! # Layout
//! - [`store`]: the `Store` trait, the pure change rules ([`store::core`]), the watch hub, and the
//!   sqlite backend.
//! - [`admission`]: checks every object, key and status against the type registry before the
//!   store sees it.
//! - [`service`]: the tonic `ApiServer` implementation; thin.
//! - [`types`]: types registered at run time (`rube.Type`), kept in the shared registry.
//! - [`quota`]: Herd usage and quota figures, pure; [`herds`]: keeps each Herd's usage in its
//!   status and enforces its quota, in the same transaction as the change (exact across
//!   apiservers).
//! - [`nodes`]: marks nodes NOT_READY when their leases expire.
//! - [`metrics`]: Prometheus metrics, served by [`serve_metrics`].
//! - [`serve`]: runs the gRPC server on a bound listener until a shutdown future resolves.
//! - `testing` (feature `testing`): a real server on a temp dir and port 0, for tests.
//!
//! Only [`service`] and [`serve`] know about gRPC; the store never sees a request.

pub mod admission;
pub mod herds;
pub mod metrics;
pub mod nodes;
pub mod quota;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

mod error;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rubeapi::Registry;
use rubeapi::rube::api_server_server::ApiServerServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

pub use error::Error;

use crate::admission::Limits;
use crate::metrics::Metrics;
use crate::service::ApiService;
use crate::store::Store;

/// The largest request accepted: an Apply of many objects. Single objects are limited by
/// admission.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Serves the API on `listener` until `shutdown` resolves; then open watches end and in-flight
/// requests finish.
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: Arc<S>,
    registry: Registry,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let cancel = CancellationToken::new();
    // Objects of registered types must validate from the first request on.
    if let Err(error) = types::refresh(&*store, &registry).await {
        tracing::warn!(%error, "cannot load registered types");
    }
    let sync = types::spawn_sync(store.clone(), registry.clone(), cancel.clone());
    let service = ApiService::new(store, registry, limits, metrics, cancel.clone());
    let server = ApiServerServer::new(service)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(rubeapi::client::MAX_MESSAGE_BYTES);
    // Small responses must not wait for Nagle's algorithm.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    });
    let signal = {
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            cancel.cancel();
        }
    };
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    // The store must be free to reopen once this returns.
    cancel.cancel();
    let _ = sync.await;
    served
}

/// Serves `/metrics` (Prometheus text) and `/healthz` on `listener` until `shutdown` resolves.
pub async fn serve_metrics<S: Store>(
    listener: TcpListener,
    store: Arc<S>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let scrape = {
        let store = store.clone();
        move || async move {
            let bounds = store.revision().await.ok();
            (
                [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                metrics.encode(bounds),
            )
        }
    };
    let health = move || async move {
        match store.revision().await {
            Ok(_) => (axum::http::StatusCode::OK, "ok\n".to_owned()),
            Err(e) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}\n"),
            ),
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Compacts history older than `retention` revisions every `interval`, until `cancel` fires.
pub fn spawn_compactor<S: Store>(
    store: Arc<S>,
    retention: u64,
    interval: Duration,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let bounds = match store.revision().await {
                Ok(bounds) => bounds,
                Err(error) => {
                    tracing::warn!(%error, "compaction skipped");
                    continue;
                }
            };
            let target = bounds.revision.saturating_sub(retention);
            if target > bounds.compacted {
                match store.compact(target).await {
                    Ok(done) => tracing::info!(
                        compacted = done.compacted,
                        revision = done.revision,
                        "compacted history"
                    ),
                    Err(error) => tracing::warn!(%error, "compaction failed"),
                }
            }
        }
    });
}
