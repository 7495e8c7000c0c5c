//! The rubelet's HTTP endpoint (like the kubelet's): `/healthz`, `/metrics` (Prometheus text,
//! the controllers' metrics), and slice logs at `/logs/<namespace>/<name>?offset=N&follow=true`
//! for `ructl logs`, which finds the node's address in its `Node` status.
//!
//! Logs go from the node to the reader directly, not through the apiserver: log bytes never
//! load the apiserver, and a node's logs stay readable while the apiserver is down.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use controllers::Metrics;
use futures::StreamExt;
use tokio::net::TcpListener;

/// What the endpoint serves from.
#[derive(Debug, Clone)]
pub struct Served {
    pub metrics: Metrics,
    pub state_dir: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub follow: bool,
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/logs/{namespace}/{name}", get(logs))
        .with_state(served);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(served): State<Served>) -> Response {
    let mut registry = prometheus_client::registry::Registry::default();
    served.metrics.register(&mut registry);
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn logs(
    State(served): State<Served>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    // Names come from the URL: refuse anything that could leave the state dir.
    let valid = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if !valid(&namespace) || !valid(&name) {
        return (StatusCode::BAD_REQUEST, "invalid namespace or name\n").into_response();
    }
    let dir = slices::controller::slice_dir(&served.state_dir, &namespace, &name);
    if !dir.is_dir() {
        return (
            StatusCode::NOT_FOUND,
            format!("no slice {namespace}/{name} on this node\n"),
        )
            .into_response();
    }
    let chunks = slices::logs::follow(dir.clone(), query.offset, Duration::from_millis(200));
    if query.follow {
        let body = chunks.map(|chunk| chunk.map(|c| Bytes::from(c.data)));
        return axum::body::Body::from_stream(body).into_response();
    }
    match tokio::task::spawn_blocking(move || slices::logs::read(&dir, query.offset, MAX_READ))
        .await
    {
        Ok(Ok(chunk)) => chunk.data.into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// The most a plain (not followed) read returns; the log files are capped smaller.
const MAX_READ: usize = 256 << 20;
