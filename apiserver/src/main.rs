//! `rube-apiserver`: stores typed objects with revisions and serves list and watch over gRPC.
//! With no flags it keeps its sqlite store under the user's data dir and listens on
//! 127.0.0.1:7400, over TLS: at first start it makes its CAs, its serving certificate and the
//! admin's client configuration (`<data dir>/admin.conf`, which ructl finds by itself).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apiserver::admission::Limits;
use apiserver::metrics::Metrics;
use apiserver::pki::{Pki, ServerTls};
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

    /// Where the sqlite store, the certificates (tls/) and the admin's client configuration
    /// (admin.conf) live [default: <user data dir>/rube]
    #[arg(long, env = "RUBE_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// More names (DNS or IP) the serving certificate must cover, besides the hostname,
    /// localhost, 127.0.0.1 and ::1; repeatable or comma-separated
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,

    /// Serve this certificate (PEM chain) instead of the one made in the data dir; needs
    /// --tls-key-file and --client-ca-file, and then no admin configuration is written
    #[arg(long, requires_all = ["tls_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,

    /// The key of --tls-cert-file
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,

    /// Accept client certificates of this CA (PEM), with --tls-cert-file
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,

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

/// The same place clients look for the admin's configuration (`rubeapi::config`).
fn default_data_dir() -> Result<PathBuf> {
    rubeapi::config::default_data_dir().context("cannot tell the user's data dir; pass --data-dir")
}

fn init_logging(format: LogFormat) {
    // Refused TLS handshakes (no TLS, a certificate of another CA, an expired one) are logged
    // by tonic at debug: they are worth seeing by default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,tonic::transport::server::io_stream=debug")
    });
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
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    match args.store {
        StoreKind::Sqlite => {
            let options = SqliteOptions {
                watch: WatchOptions {
                    buffer: args.watch_buffer,
                    bookmark_interval: args.bookmark_interval,
                },
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(&data_dir, registry.clone(), options)?;
            let place = store.path().display().to_string();
            run(args, data_dir, registry, Arc::new(store), place).await
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
            run(args, data_dir, registry, Arc::new(store), place).await
        }
    }
}

/// The serving certificate and client CA: the operator's, or those of the data dir (made at
/// first start, with the admin's client configuration for `addr`).
fn tls(args: &Args, data_dir: &std::path::Path, addr: SocketAddr) -> Result<ServerTls> {
    if let (Some(cert), Some(key), Some(client_ca)) = (
        &args.tls_cert_file,
        &args.tls_key_file,
        &args.client_ca_file,
    ) {
        return Ok(ServerTls::from_files(cert, key, client_ca)?);
    }
    let (_, serving, _) = Pki::start(data_dir, &args.tls_san, addr)?;
    let admin = data_dir.join(rubeapi::config::ADMIN_FILE);
    tracing::info!(path = %admin.display(), "the admin's client configuration");
    Ok(serving)
}

async fn run<S: Store>(
    args: Args,
    data_dir: PathBuf,
    registry: Registry,
    store: Arc<S>,
    place: String,
) -> Result<()> {
    let bounds = store.revision().await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = tls(&args, &data_dir, addr).context("cannot set up TLS")?;
    if let Some(pki) = &tls.issuer {
        apiserver::join::first_token(&*store, &data_dir, pki.server_ca_pem())
            .await
            .context("cannot make the join token")?;
        let token = data_dir.join(rubeapi::config::TOKEN_FILE);
        tracing::info!(path = %token.display(), "nodes join with the token in this file (rubelet --server ADDR --token TOKEN)");
    }
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
    apiserver::serve(
        listener,
        tls,
        store.clone(),
        registry,
        limits,
        metrics,
        shutdown,
    )
    .await?;
    if let Some(task) = metrics_task {
        task.await??;
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}
