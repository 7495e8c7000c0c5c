//! The rubelet as a library: what `rubelet` runs, in pieces tests can reach.
//!
//! # Layout
//! - [`node`]: the node's registration, status and lease renewals (pure decisions + one loop).
//! - [`state`]: the local sqlite state store with each controller's mirrored cache.
//! - [`election`]: lease-based leader election for cluster controllers.
//! - [`server`]: the rubelet's HTTP endpoint: `/healthz`, `/metrics`, slice logs.
//! - [`run`]: ties them together with the controllers until SIGTERM.
//!
//! The rubelet never writes an object's spec (only status, through UpdateStatus), and never
//! needs the apiserver to keep what runs running.

pub mod election;
pub mod node;
pub mod server;
pub mod state;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use controllers::{Metrics, Options};
use rubeapi::Client;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::NodeConfig;
use crate::state::StateStore;

#[derive(Debug, clap::Parser)]
#[command(
    name = "rubelet",
    version,
    about = "Rube's node agent: registers the node and runs its controllers"
)]
pub struct Args {
    /// This node's name; objects labelled node=NAME are this node's [default: the hostname]
    #[arg(long, env = "RUBELET_NAME")]
    pub name: Option<String>,

    /// The apiserver
    #[arg(long, env = "RUBE_SERVER", default_value = rubeapi::client::DEFAULT_SERVER)]
    pub server: String,

    /// Where the rubelet keeps its state: rubelet.db, slices, logs, pipes
    #[arg(long, env = "RUBELET_STATE_DIR", default_value = "/var/lib/rubelet")]
    pub state_dir: PathBuf,

    /// A label of this node, KEY=VALUE; repeatable
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Where /healthz, /metrics and slice logs are served; port 0 picks one (printed)
    #[arg(long, default_value = "127.0.0.1:7402")]
    pub listen: SocketAddr,

    /// The address others reach this rubelet at [default: the listen address]
    #[arg(long)]
    pub advertise: Option<String>,

    /// How often the node's lease is renewed
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_interval: Duration,

    /// The node lease's duration as written in the lease (the apiserver's --node-grace decides)
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// Controllers to run: slices, units, pipelines
    #[arg(long, value_delimiter = ',', default_value = "slices,pipelines")]
    pub controllers: Vec<ControllerName>,

    /// How long a cluster controller's lease lasts before another rubelet takes over
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub election_lease: Duration,

    /// How often every object is reconciled even without a change
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,

    /// Log format
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerName {
    Slices,
    Units,
    Pipelines,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

fn parse_label(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{input}' is not KEY=VALUE")),
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hostname() -> Result<String> {
    let name = nix::unistd::gethostname().context("cannot read the hostname; pass --name")?;
    name.into_string()
        .map_err(|_| anyhow::anyhow!("the hostname is not UTF-8; pass --name"))
}

/// Runs the rubelet until SIGTERM or Ctrl-C.
///
/// # Errors
/// When the state dir or the listen address cannot be used. The apiserver being unreachable is
/// not an error: the rubelet runs from its local state and keeps trying.
pub async fn run(args: Args) -> Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => hostname()?,
    };
    if name.is_empty() {
        bail!("--name is empty");
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state dir {}", args.state_dir.display()))?;
    let state = StateStore::open(&args.state_dir)?;
    let client =
        Client::connect_lazy(&args.server).with_context(|| format!("--server {}", args.server))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let metrics = Metrics::new();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let mut labels: HashMap<String, String> = args.labels.iter().cloned().collect();
    labels.insert("node".to_owned(), name.clone());
    let config = NodeConfig {
        name: name.clone(),
        labels,
        address: args.advertise.clone().unwrap_or_else(|| addr.to_string()),
        capacity: node::machine(),
        renew_every: args.renew_interval,
        lease_duration: args.lease_duration,
    };
    tasks.spawn(node::run(client.clone(), config, cancel.clone()));

    let shared = Shared {
        name: name.clone(),
        client: client.clone(),
        state: state.clone(),
        state_dir: args.state_dir.clone(),
        metrics: metrics.clone(),
        resync: args.resync,
        election_lease: args.election_lease,
        cancel: cancel.clone(),
    };
    for controller in &args.controllers {
        shared.start(*controller, &mut tasks)?;
    }

    let served = server::Served {
        metrics: metrics.clone(),
        state_dir: args.state_dir.clone(),
    };
    tasks.spawn({
        let cancel = cancel.clone();
        async move {
            if let Err(error) = server::serve(listener, served, cancel.cancelled_owned()).await {
                tracing::error!(%error, "the rubelet's http server stopped");
            }
        }
    });

    tracing::info!(node = %name, %addr, server = %args.server, state_dir = %args.state_dir.display(), "rubelet started");
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; workloads keep running");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What every controller the rubelet starts shares.
#[derive(Clone)]
struct Shared {
    name: String,
    client: Client,
    state: StateStore,
    state_dir: PathBuf,
    metrics: Metrics,
    resync: Duration,
    election_lease: Duration,
    cancel: CancellationToken,
}

impl Shared {
    fn options(&self, controller: &str) -> Options {
        Options {
            metrics: self.metrics.clone(),
            resync: Some(self.resync),
            mirror: Some(self.state.mirror(controller)),
            ..Options::default()
        }
    }

    /// Runs `controller` until shutdown.
    fn spawn<C: controllers::Controller>(&self, controller: C, tasks: &mut JoinSet<()>) {
        let options = self.options(controller.name());
        let client = self.client.clone();
        let cancel = self.cancel.clone();
        tasks.spawn(async move {
            let name = controller.name().to_owned();
            if let Err(error) =
                controllers::run(controller, client, options, cancel.cancelled_owned()).await
            {
                tracing::error!(controller = %name, %error, "controller stopped");
            }
        });
    }

    fn start(&self, which: ControllerName, tasks: &mut JoinSet<()>) -> Result<()> {
        match which {
            ControllerName::Slices => {
                let _ = (&self.name, &self.state_dir, &self.election_lease);
                bail!("the slice controller is not built into this rubelet yet")
            }
            ControllerName::Units => {
                bail!("the unit controller is not built into this rubelet yet")
            }
            ControllerName::Pipelines => {
                bail!("the pipeline controller is not built into this rubelet yet")
            }
        }
        #[allow(unreachable_code)]
        {
            let _ = tasks;
            Ok(())
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn assert_send_sync(_: Arc<StateStore>) {}
