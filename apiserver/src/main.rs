//! `rube-apiserver`: stores typed objects with revisions and serves list and watch over gRPC.
//! With no flags it keeps its sqlite store under the user's data dir and listens on
//! 127.0.0.1:7400.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apiserver::admission::Limits;
use apiserver::metrics::Metrics;
use apiserver::store::Store;
use apiserver::store::etcd::{EtcdOptions, EtcdStore};
use apiserver::store::hub::WatchOptions;
use apiserver::store::sqlite::{SqliteOptions, SqliteStore};
use clap::Parser;
use rubeapi::Registry;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "rube-apiserver",
    version,
    about = "Rube's apiserver: typed objects with revisions, list and watch over gRPC"
)]
struct Args {
    /// Where objects are stored: the embedded sqlite database, or an etcd cluster
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,

    /// Where the sqlite store lives [default: <user data dir>/rube]
    #[arg(long, env = "RUBE_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// etcd client URLs, comma-separated (with --store etcd)
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,

    /// The key prefix in etcd; apiservers sharing a cluster must use the same one
    #[arg(long, default_value = "/rube")]
    etcd_prefix: String,

    /// The gRPC address; port 0 picks a free port (the chosen address is printed)
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,

    /// Where /metrics (Prometheus) and /healthz are served; "off" serves nothing
    #[arg(long, default_value = "127.0.0.1:7401")]
    metrics_listen: String,

    /// The largest object accepted, in bytes
    #[arg(long, default_value_t = 1024 * 1024)]
    max_object_bytes: usize,

    /// Revisions of history kept for watches to resume from; 0 keeps everything
    #[arg(long, default_value_t = 100_000)]
    history_revisions: u64,

    /// How often old history is compacted
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    compaction_interval: Duration,

    /// How often a quiet watch gets a bookmark (sqlite; etcd watches get none, see docs/api.md)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,

    /// Events buffered per watcher before a slow one falls back to reading history
    #[arg(long, default_value_t = 1024)]
    watch_buffer: usize,

    /// A node whose lease is not renewed for this long is marked NOT_READY
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_grace: Duration,

    /// Log format
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreKind {
    Sqlite,
    Etcd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn default_data_dir() -> Result<PathBuf> {
    let base = dirs::data_dir().context("cannot tell the user's data dir; pass --data-dir")?;
    Ok(base.join("rube"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let registry = Registry::builtin();
    match args.store {
        StoreKind::Sqlite => {
            let data_dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir()?,
            };
            let options = SqliteOptions {
                watch: WatchOptions {
                    buffer: args.watch_buffer,
                    bookmark_interval: args.bookmark_interval,
                },
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(&data_dir, registry.clone(), options)?;
            let place = store.path().display().to_string();
            run(args, registry, Arc::new(store), place).await
        }
        StoreKind::Etcd => {
            let options = EtcdOptions {
                endpoints: args.etcd_endpoints.clone(),
                prefix: args.etcd_prefix.clone(),
            };
            let place = format!(
                "etcd {} under {}",
                options.endpoints.join(","),
                options.prefix
            );
            let store = EtcdStore::connect(options, registry.clone())
                .await
                .with_context(|| format!("cannot reach {place}"))?;
            run(args, registry, Arc::new(store), place).await
        }
    }
}

async fn run<S: Store>(args: Args, registry: Registry, store: Arc<S>, place: String) -> Result<()> {
    let bounds = store.revision().await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let cancel = CancellationToken::new();

    let metrics_task = if args.metrics_listen == "off" {
        None
    } else {
        let metrics_addr: SocketAddr = args.metrics_listen.parse().with_context(|| {
            format!(
                "--metrics-listen: '{}' is not an address or 'off'",
                args.metrics_listen
            )
        })?;
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "serving /metrics and /healthz");
        let cancel = cancel.clone();
        Some(tokio::spawn(apiserver::serve_metrics(
            metrics_listener,
            store.clone(),
            metrics.clone(),
            async move { cancel.cancelled().await },
        )))
    };
    if args.history_revisions > 0 {
        apiserver::spawn_compactor(
            store.clone(),
            args.history_revisions,
            args.compaction_interval,
            cancel.clone(),
        );
    }

    let period = (args.node_grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(5));
    apiserver::nodes::spawn_node_monitor(
        store.clone(),
        apiserver::nodes::NodeMonitorOptions {
            grace: args.node_grace,
            period,
        },
        cancel.clone(),
    );

    tracing::info!(
        %addr,
        store = %place,
        revision = bounds.revision,
        compacted = bounds.compacted,
        "rube-apiserver started"
    );
    // A plain line on stdout that scripts and tests wait for.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    // Type=notify units start their dependents only now; without NOTIFY_SOCKET this is a no-op.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let shutdown = {
        let cancel = cancel.clone();
        async move {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            cancel.cancel();
        }
    };
    let limits = Limits {
        max_object_bytes: args.max_object_bytes,
    };
    apiserver::serve(listener, store.clone(), registry, limits, metrics, shutdown).await?;
    if let Some(task) = metrics_task {
        task.await??;
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
