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
//! - [`pki`]: the CAs, serving certificate and admin credential made at first start.
//! - [`auth`]: the caller's identity from its verified client certificate.
//! - [`join`]: join tokens and the `Bootstrap` service that gives joining nodes their
//!   certificates.
//! - [`rbac`]: who may do what (Roles, ClusterRoles and their bindings), checked on every call.
//! - [`metrics`]: Prometheus metrics, served by [`serve_metrics`].
//! - [`serve`]: runs the gRPC server on a bound listener until a shutdown future resolves.
//! - `testing` (feature `testing`): a real server on a temp dir and port 0, for tests.
//!
//! Only [`service`] and [`serve`] know about gRPC; the store never sees a request.

pub mod admission;
pub mod auth;
pub mod herds;
pub mod join;
pub mod metrics;
pub mod nodes;
pub mod pki;
pub mod quota;
pub mod rbac;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

mod error;
mod follow;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rubeapi::Registry;
use rubeapi::rube::api_server_server::ApiServerServer;
use rubeapi::rube::authorization_server::AuthorizationServer;
use rubeapi::rube::bootstrap_server::BootstrapServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use error::Error;

use crate::admission::Limits;
use crate::metrics::Metrics;
use crate::pki::ServerTls;
use crate::service::ApiService;
use crate::store::Store;

/// The largest request accepted: an Apply of many objects. Single objects are limited by
/// admission.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How long a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API over TLS on `listener` until `shutdown` resolves; then open watches end and
/// in-flight requests finish. Every call must come with a client certificate from `tls`'s client
/// CA ([`auth::authenticate`]); a connection without TLS, or with a certificate of another CA,
/// fails its handshake.
pub async fn serve<S: Store>(
    listener: TcpListener,
    tls: ServerTls,
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
    // Who may do what: the policy as the store holds it, kept current by a watch. Until it is
    // loaded, nothing is allowed.
    let authorizer = Arc::new(rbac::Authorizer::default());
    if let Err(error) = rbac::refresh(&*store, &authorizer).await {
        tracing::warn!(%error, "cannot load the RBAC policy");
    }
    let rbac_sync = rbac::spawn_sync(store.clone(), authorizer.clone(), cancel.clone());
    let bootstrap = join::BootstrapService::new(store.clone(), tls.issuer.clone());
    let service = Arc::new(ApiService::new(
        store,
        registry,
        limits,
        metrics,
        authorizer,
        cancel.clone(),
    ));
    let authorization = InterceptedService::new(
        AuthorizationServer::from_arc(service.clone()),
        auth::authenticate,
    );
    let server = ApiServerServer::from_arc(service)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(rubeapi::client::MAX_MESSAGE_BYTES);
    let server = InterceptedService::new(server, auth::authenticate);
    // A certificate is optional in the handshake so that a call without one gets a gRPC
    // UNAUTHENTICATED that names what is missing, not a bare TLS alert; one from another CA
    // still fails the handshake.
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem))
        .client_auth_optional(true)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
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
    let served = match tonic::transport::Server::builder().tls_config(tls) {
        Ok(builder) => builder,
        Err(error) => {
            cancel.cancel();
            let _ = sync.await;
            let _ = rbac_sync.await;
            return Err(error);
        }
    };
    let served = served
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(server)
        .add_service(authorization)
        // Not behind the interceptor: a joining node has no certificate yet.
        .add_service(BootstrapServer::new(bootstrap))
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    // The store must be free to reopen once this returns.
    cancel.cancel();
    let _ = sync.await;
    let _ = rbac_sync.await;
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
